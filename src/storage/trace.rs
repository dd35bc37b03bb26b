//! An observer of every file operation that changes a dataset.
//!
//! Every mutation the store makes (publishing, folder creation, renames, removals,
//! fsyncs) is announced here first. With no observer installed this costs one read of
//! an atomic flag. Tests install one to record operations (crash-prefix replay and the
//! fsync ordering audit) or to inject I/O errors at the Nth operation.
//!
//! Read-side operations (a `stat`, an `open` for reading, a folder listing) are
//! announced separately through [`FsObserver::read`], so that the operations of one
//! call can be counted (`tests/op_budget.rs`) without changing the numbering of the
//! mutations that fault injection relies on. The store's own reads go through the
//! helpers below ([`stat`], [`lstat`], [`read_dir`], [`note_open`]).

use std::path::{Path, PathBuf};
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

    /// Called before a read-side operation; the default ignores it.
    fn read(&self, _op: &ReadOp) {}
}

/// One read-side metadata operation, as the store is about to perform it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    /// A `stat` or `lstat` of a path.
    Stat(PathBuf),
    /// An `open` of a file for reading.
    Open(PathBuf),
    /// A listing of one folder (however many entries it returns).
    ReadDir(PathBuf),
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

/// Announces a read-side operation to the observer, if any.
pub(crate) fn observe_read(op: impl FnOnce() -> ReadOp) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let observer = OBSERVER.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(observer) = observer {
        observer.read(&op());
    }
}

/// Announces the opening of `path` for reading (the caller opens it).
pub(crate) fn note_open(path: &Path) {
    observe_read(|| ReadOp::Open(path.to_path_buf()));
}

/// `std::fs::metadata`, announced (follows a final link).
pub(crate) fn stat(path: &Path) -> std::io::Result<std::fs::Metadata> {
    observe_read(|| ReadOp::Stat(path.to_path_buf()));
    std::fs::metadata(path)
}

/// `std::fs::symlink_metadata`, announced (does not follow a final link).
pub(crate) fn lstat(path: &Path) -> std::io::Result<std::fs::Metadata> {
    observe_read(|| ReadOp::Stat(path.to_path_buf()));
    std::fs::symlink_metadata(path)
}

/// Whether `path` is a file (following links), announced as one `stat`.
pub(crate) fn is_file(path: &Path) -> bool {
    stat(path).is_ok_and(|m| m.is_file())
}

/// Whether `path` is a folder (following links), announced as one `stat`.
pub(crate) fn is_dir(path: &Path) -> bool {
    stat(path).is_ok_and(|m| m.is_dir())
}

/// Whether something exists at `path` (following links), announced as one `stat`.
pub(crate) fn exists(path: &Path) -> bool {
    stat(path).is_ok()
}

/// `std::fs::read_dir`, announced as one listing.
pub(crate) fn read_dir(path: &Path) -> std::io::Result<std::fs::ReadDir> {
    observe_read(|| ReadOp::ReadDir(path.to_path_buf()));
    std::fs::read_dir(path)
}
