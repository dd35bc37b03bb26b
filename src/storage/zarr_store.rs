//! A zarrs store whose every write goes through the [`Publisher`].
//!
//! zarrs' own `FilesystemStore` truncates and rewrites files in place, so a reader in
//! another process can see a torn `zarr.json` or chunk. [`AtomicStore`] reads through
//! `FilesystemStore` and routes `set`, `erase` and `erase_prefix` to the publisher.
//! Partial writes are refused (zarrs falls back to whole-chunk writes).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, WritableStorageTraits,
};

use super::publish::{Publisher, remove_tree};

/// Zarr storage rooted at a folder, with atomic, fsynced writes.
#[derive(Debug)]
pub struct AtomicStore {
    root: PathBuf,
    reader: FilesystemStore,
    /// `None` for a read-only store.
    publisher: Option<Arc<Publisher>>,
}

/// A storage error as an io error, so that [`crate::util::retry_stale`] can see an
/// ESTALE inside it; other errors pass through unchanged.
fn storage_to_io(error: StorageError) -> std::io::Error {
    match error {
        StorageError::IOError(e) => match e.raw_os_error() {
            Some(errno) => std::io::Error::from_raw_os_error(errno),
            None => std::io::Error::other(StorageError::IOError(e)),
        },
        other => std::io::Error::other(other),
    }
}

/// Undoes [`storage_to_io`].
fn io_to_storage(error: std::io::Error) -> StorageError {
    if error.raw_os_error().is_some() {
        return StorageError::IOError(Arc::new(error));
    }
    match error
        .into_inner()
        .map(|inner| inner.downcast::<StorageError>())
    {
        Some(Ok(storage)) => *storage,
        Some(Err(other)) => StorageError::Other(other.to_string()),
        None => StorageError::Other("an unknown I/O error".into()),
    }
}

fn storage_error(error: crate::Error) -> StorageError {
    StorageError::Other(error.to_string())
}

impl AtomicStore {
    /// A store rooted at the existing folder `root`, publishing through `publisher`.
    pub fn new(root: &Path, publisher: Arc<Publisher>) -> crate::Result<Self> {
        let reader = FilesystemStore::new(root).map_err(|e| crate::Error::Zarr {
            path: root.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            reader,
            publisher: Some(publisher),
        })
    }

    /// A store rooted at `root` for reading only: writes through it are refused.
    pub fn read_only(root: &Path) -> crate::Result<Self> {
        let mut store = Self::new(root, Arc::new(Publisher::new()))?;
        store.publisher = None;
        Ok(store)
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn publisher(&self) -> Result<&Publisher, StorageError> {
        self.publisher.as_deref().ok_or(StorageError::ReadOnly)
    }

    /// Publishes this store's deferred writes, so that reads from the filesystem
    /// (not through this store) see them.
    pub fn flush(&self) -> crate::Result<()> {
        match self.publisher.as_deref() {
            Some(publisher) => publisher.flush(),
            None => Ok(()),
        }
    }

    /// Publishes this store's deferred writes when one of them is the file `path`.
    pub fn flush_if_pending(&self, path: &Path) -> crate::Result<()> {
        match self.publisher.as_deref() {
            Some(publisher) if publisher.is_pending(path) => publisher.flush(),
            _ => Ok(()),
        }
    }

    /// Publishes the deferred writes when one of them is `key` (or, with `None`, when
    /// there are any), so that reads see this store's own writes.
    fn read_own_writes(&self, key: Option<&str>) -> Result<(), StorageError> {
        let Some(publisher) = self.publisher.as_deref() else {
            return Ok(());
        };
        let waiting = match key {
            Some(key) => publisher.is_pending(&self.path_of(key)),
            None => publisher.has_pending(),
        };
        if waiting {
            publisher.flush().map_err(storage_error)?;
        }
        Ok(())
    }
}

impl ReadableStorageTraits for AtomicStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.read_own_writes(Some(key.as_str()))?;
        // Read eagerly, so that an ESTALE anywhere (open or read) reads again from the
        // open (`util::retry_stale`).
        let ranges: Vec<_> = byte_ranges.collect();
        let read = crate::util::retry_stale(|| {
            super::trace::note_open(&self.path_of(key.as_str()));
            let parts = match self
                .reader
                .get_partial_many(key, Box::new(ranges.iter().copied()))
            {
                Ok(Some(parts)) => parts,
                Ok(None) => return Ok(None),
                Err(e) => return Err(storage_to_io(e)),
            };
            parts
                .map(|part| part.map_err(storage_to_io))
                .collect::<std::io::Result<Vec<Bytes>>>()
                .map(Some)
        });
        match read {
            Ok(Some(parts)) => Ok(Some(Box::new(parts.into_iter().map(Ok)))),
            Ok(None) => Ok(None),
            Err(e) => Err(io_to_storage(e)),
        }
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.read_own_writes(Some(key.as_str()))?;
        // Only "not found" means absent (zarrs' own store takes every error for it).
        match crate::util::retry_stale(|| super::trace::stat(&self.path_of(key.as_str()))) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::IOError(Arc::new(e))),
        }
    }

    fn supports_get_partial(&self) -> bool {
        self.reader.supports_get_partial()
    }
}

impl ListableStorageTraits for AtomicStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.read_own_writes(None)?;
        self.reader.list()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.read_own_writes(None)?;
        super::trace::observe_read(|| super::trace::ReadOp::ReadDir(self.path_of(prefix.as_str())));
        self.reader.list_prefix(prefix)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.read_own_writes(None)?;
        super::trace::observe_read(|| super::trace::ReadOp::ReadDir(self.path_of(prefix.as_str())));
        self.reader.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.read_own_writes(None)?;
        self.reader.size_prefix(prefix)
    }
}

impl WritableStorageTraits for AtomicStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let path = self.path_of(key.as_str());
        // Published (fsynced and renamed, many files at once) by the publisher's next
        // flush or sync; reads through this store flush first when they need it. The
        // folder is made when the file cannot be created for want of it (most are
        // there already).
        self.publisher()?
            .write_deferred_making_folder(&path, &value)
            .map_err(storage_error)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        _offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        Err(StorageError::Unsupported(format!(
            "partial writes to {key} are not atomic and are refused"
        )))
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.publisher()?
            .remove_file(&self.path_of(key.as_str()))
            .map_err(storage_error)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.publisher()?.flush().map_err(storage_error)?;
        remove_tree(&self.path_of(prefix.as_str())).map_err(storage_error)
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}
