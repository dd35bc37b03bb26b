//! An observer of every file operation that changes a dataset.
//!
//! Every mutation the store makes (publishing, folder creation, renames, removals,
//! fsyncs) is announced here first. With no observer installed this costs one read of
//! an atomic flag. Tests install one to record operations (crash-prefix replay and the
//! fsync ordering audit) or to inject I/O errors at the Nth operation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// One file operation, as the store is about to perform it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsOp {
    /// Create an empty file exclusively (a temporary file, a staging owner file).
    CreateFile(PathBuf),
    /// Write the whole content of a file just created.
    Write(PathBuf, Vec<u8>),
    /// fsync a file.
    Fsync(PathBuf),
    /// Rename a file or folder.
    Rename(PathBuf, PathBuf),
    /// Swap two folders (or files) atomically: each takes the other's name.
    Exchange(PathBuf, PathBuf),
    /// Create a folder.
    Mkdir(PathBuf),
    /// Remove a file.
    Unlink(PathBuf),
    /// Remove a folder tree.
    RemoveTree(PathBuf),
    /// fsync a folder.
    FsyncDir(PathBuf),
    /// The next N `Fsync`/`FsyncDir` announced are issued together (in parallel), and
    /// the caller waits for all of them: one fsync round.
    FsyncRound(usize),
}

/// Sees every [`FsOp`] before it happens; an error returned is what the operation
/// then fails with (fault injection).
pub trait FsObserver: Send + Sync {
    /// Called before `op` is performed.
    fn before(&self, op: &FsOp) -> std::io::Result<()>;
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static OBSERVER: RwLock<Option<Arc<dyn FsObserver>>> = RwLock::new(None);

/// Installs (or with `None` removes) the process-wide observer.
pub fn set_observer(observer: Option<Arc<dyn FsObserver>>) {
    let mut slot = OBSERVER.write().unwrap_or_else(|p| p.into_inner());
    ACTIVE.store(observer.is_some(), Ordering::SeqCst);
    *slot = observer;
}

/// Announces `op`; returns the observer's verdict.
pub(crate) fn observe(op: impl FnOnce() -> FsOp) -> std::io::Result<()> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let observer = OBSERVER.read().unwrap_or_else(|p| p.into_inner()).clone();
    match observer {
        Some(observer) => observer.before(&op()),
        None => Ok(()),
    }
}
