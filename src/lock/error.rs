//! Errors raised by the dataset lock.

use std::path::PathBuf;
use std::time::Duration;

use super::LockMode;

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The dataset directory does not exist or is not a directory.
    #[error("dataset directory {0} does not exist or is not a directory: create it first")]
    NoDataset(PathBuf),

    /// The lock file or its folder could not be created or opened.
    #[error(
        "cannot open or create {path}: {source}; the dataset's lock needs write access to the dataset directory and its hidden folder (ask for membership of the dataset's group)"
    )]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The operating system refused the lock call itself.
    #[error(
        "flock on {path} failed: {source}; the filesystem may not support locks (NFS mounted with `nolock`, Lustre with `noflock`)"
    )]
    Os {
        /// The lock file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The lock was not granted before the timeout.
    #[error(
        "timed out after {waited:?} waiting for the {mode} lock on dataset {dataset}: another process (or another thread of this one) holds it; retry later or raise the timeout"
    )]
    Timeout {
        /// The dataset directory.
        dataset: PathBuf,
        /// The mode that was asked for.
        mode: LockMode,
        /// How long the caller waited.
        waited: Duration,
    },

    /// A thread holding the read lock asked for the write lock.
    #[error(
        "this thread holds the read lock on dataset {0} and asked for the write lock: upgrading would deadlock; drop the read guard first, or take the write lock from the start"
    )]
    Upgrade(PathBuf),

    /// A parent `spatialzarr lock --shared` holds the lock for this process in shared mode.
    #[error(
        "dataset {0} is locked for this process by a parent `spatialzarr lock --shared`; writing needs the exclusive lock, so run the parent without --shared"
    )]
    InheritedShared(PathBuf),

    /// The filesystem's locks are node-local or absent.
    #[error(
        "dataset {dataset} is on a {fstype} mount where `{option}` keeps file locks on this node: they do not reach other nodes, so concurrent writers could corrupt it; remount without that option (or move the dataset to a filesystem with cluster-wide locks, see spec/locking.md), or set SPATIALZARR_ALLOW_NODE_LOCAL_LOCKS=1 (or LockOptions::allow_node_local_locks) if only this node writes"
    )]
    NodeLocalLocks {
        /// The dataset directory.
        dataset: PathBuf,
        /// The filesystem type (nfs, nfs4, lustre).
        fstype: String,
        /// The offending mount option (the filesystem type, for one whose locks are
        /// always node-local).
        option: String,
    },

    /// An ancestor holds the lock for this process, but the descriptor it handed down
    /// was closed on the way and no duplicate of it could be taken.
    #[error(
        "dataset {dataset} is locked for this process by its ancestor `spatialzarr lock` (pid {pid}), but descriptor {fd} that carries that lock was closed on the way down (Python's subprocess closes it unless given close_fds=False or pass_fds=[{fd}]), and it could not be duplicated from pid {pid} ({reason}); waiting would deadlock, so pass the descriptor down"
    )]
    AncestorDescriptorClosed {
        /// The dataset directory.
        dataset: PathBuf,
        /// The ancestor that holds the lock.
        pid: u32,
        /// Its descriptor number.
        fd: i32,
        /// Why no duplicate could be taken (the system's error).
        reason: String,
    },
}
