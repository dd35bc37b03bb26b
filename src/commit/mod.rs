//! The commit layer: the manifest, the journal (redo log) and the queue of group
//! commit.

pub mod journal;
pub mod manifest;
pub mod queue;

pub use journal::{Journal, Step};
pub use manifest::Manifest;
