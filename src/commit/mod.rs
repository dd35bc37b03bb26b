//! The commit layer: the manifest, the element index, the journal (redo log) and
//! the queue of group commit.

pub mod index;
pub mod journal;
pub mod manifest;
pub mod queue;

pub use journal::{FoundJournal, Journal, Required, Step};
pub use manifest::Manifest;
