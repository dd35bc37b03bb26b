//! The commit layer: the manifest, the element index and the journal (redo log).

pub mod index;
pub mod journal;
pub mod manifest;

pub use journal::{Journal, Step};
pub use manifest::Manifest;
