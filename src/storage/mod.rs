//! Atomic file storage: the publish helper and the zarrs store built on it.

pub(crate) mod doc_cache;
pub mod durability;
pub mod ordering;
pub mod publish;
pub mod trace;
pub mod zarr_store;

pub use durability::{Durability, FolderSync};
pub use publish::Publisher;
pub use zarr_store::AtomicStore;
