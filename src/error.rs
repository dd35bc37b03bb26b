//! The library's error type.

use std::path::PathBuf;

use crate::lock::LockError;

/// Everything that can go wrong in the store. Messages say what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dataset lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),

    /// A file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done ("write", "rename", "fsync", ...).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// An element name breaks spatialdata's naming rules.
    #[error("invalid element name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The name is already used by an element (compared case-insensitively).
    #[error(
        "an element named {existing:?} ({kind}) already exists; names are unique case-insensitively across all element types: choose another name, or ask for overwrite to replace an element of the same type and name"
    )]
    NameTaken {
        /// The existing element's name.
        existing: String,
        /// Its type.
        kind: String,
    },

    /// No element of that name.
    #[error("dataset {dataset} has no element named {name:?}; `spatialzarr ls` lists them")]
    NoSuchElement {
        /// The dataset.
        dataset: PathBuf,
        /// The name asked for.
        name: String,
    },

    /// The path is not a dataset this store can open.
    #[error("{path} is not a SpatialData dataset: {reason}")]
    NotADataset {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A dataset that already exists where a new one was to be created.
    #[error("{0} already exists; open it instead, or choose a new path")]
    AlreadyExists(PathBuf),

    /// The on-disk format is newer or other than this version understands.
    #[error("{path}: {what}; upgrade spatialzarr to open it")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// What was found.
        what: String,
    },

    /// Metadata or data on disk is malformed.
    #[error("{path} is malformed: {reason}")]
    Corrupt {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The caller's input is unusable.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The element exists but is of another type than the operation needs.
    #[error("element {name:?} is {actual}, not {expected}")]
    WrongElementType {
        /// The element.
        name: String,
        /// Its actual type.
        actual: String,
        /// The type the operation needs.
        expected: String,
    },

    /// A commit failed after it was decided (its journal is durable): it is not
    /// lost, the next holder of the write lock finishes it.
    #[error(
        "the commit is decided but could not be finished here ({0}); the next writer or `spatialzarr recover` finishes it"
    )]
    CommitPending(Box<Error>),

    /// A queued operation was taken into another writer's commit, which did not
    /// finish while this caller waited: it may or may not be committed.
    #[error(
        "the operation was taken into the commit of another writer of dataset {dataset}, which did not finish within {waited:?}: it may or may not be committed. Look with `spatialzarr ls` or `spatialzarr info`; a keyed append may be retried with the same key (a committed key is never applied twice)"
    )]
    OutcomeUnknown {
        /// The dataset.
        dataset: PathBuf,
        /// How long the caller waited.
        waited: std::time::Duration,
    },

    /// An idempotency key sent again with rows other than those it committed.
    #[error(
        "idempotency key {key:?} was already committed to {element} with other rows (rows {start}..{end}); a retry must send the same rows: give new rows a new key"
    )]
    KeyReused {
        /// The table or points element.
        element: String,
        /// The key.
        key: String,
        /// First row of the append that committed the key.
        start: u64,
        /// One past its last row.
        end: u64,
    },

    /// The Zarr layer failed.
    #[error("zarr error at {path}: {message}")]
    Zarr {
        /// The array or group.
        path: String,
        /// zarrs' message.
        message: String,
    },
}

impl Error {
    /// Whether this is an I/O error saying the file is not there (and nothing else:
    /// ESTALE, EIO or EACCES are never taken for "missing").
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds the closure that maps an io error on `path` during `op` into [`Error::Io`].
pub(crate) fn io_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}
