//! The baselines' zarr store: files written in place, never fsynced.
//!
//! zarrs' own `FilesystemStore` (zarrs_filesystem 0.3) fsyncs every file it writes,
//! one after the other. A floor "without fsync" must not, and a floor "with fsync"
//! fsyncs what it wrote itself, in one round (`fsync_files`). So the baselines read
//! through `FilesystemStore` and write here: `create_dir_all` of the folder, then the
//! whole file, truncated and written in place, as zarrs would without the fsync.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, WritableStorageTraits,
};

/// A zarr store rooted at a folder, writing files in place without fsync.
#[derive(Debug)]
pub struct PlainStore {
    root: PathBuf,
    reader: FilesystemStore,
}

impl PlainStore {
    /// The store rooted at the existing folder `root`.
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            root: root.to_path_buf(),
            reader: FilesystemStore::new(root)?,
        })
    }
}

fn io(error: std::io::Error) -> StorageError {
    StorageError::IOError(Arc::new(error))
}

/// `result`, with "not found" taken as done.
fn unless_missing(result: std::io::Result<()>) -> Result<(), StorageError> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
        _ => Ok(()),
    }
}

impl ReadableStorageTraits for PlainStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.reader.get_partial_many(key, byte_ranges)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.reader.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        self.reader.supports_get_partial()
    }
}

impl ListableStorageTraits for PlainStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.reader.list()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.reader.list_prefix(prefix)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.reader.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.reader.size_prefix(prefix)
    }
}

impl WritableStorageTraits for PlainStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let path = self.root.join(key.as_str());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&path, &value).map_err(io)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        _offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        Err(StorageError::Unsupported(format!(
            "partial writes to {key}: the baselines write whole files"
        )))
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        unless_missing(std::fs::remove_file(self.root.join(key.as_str())))
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        unless_missing(std::fs::remove_dir_all(self.root.join(prefix.as_str())))
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}
