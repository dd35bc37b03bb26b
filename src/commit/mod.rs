//! The commit layer: the manifest and the journal (redo log).

pub mod journal;
pub mod manifest;

pub use journal::{Journal, Step};
pub use manifest::Manifest;
