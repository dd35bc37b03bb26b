//! The one path by which the store changes files: atomic publishing.
//!
//! Every file is written to a unique temporary file in its target's folder (created
//! exclusively), fsynced, and renamed over the target. Folders whose entries changed
//! are remembered and fsynced by [`Publisher::sync`], once each, before anything that
//! depends on them is reported durable. An fsync error aborts: it is returned, never
//! retried.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::trace::{FsOp, observe};
use crate::error::{Error, Result, io_err};

/// Creates a new, uniquely named temporary file in `dir`, exclusively.
fn create_temp(dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    loop {
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}",
            crate::dataset::layout::unique_id()
        ));
        observe(|| FsOp::CreateFile(temp.clone()))
            .map_err(io_err("create a temporary file in", dir))?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create a temporary file in", dir)(e)),
        }
    }
}

/// Prefix of every temporary file the store creates.
pub const TEMP_PREFIX: &str = ".sz-tmp-";

/// Publishes files atomically and batches the fsync of their folders.
#[derive(Debug, Default)]
pub struct Publisher {
    dirty: Mutex<BTreeSet<PathBuf>>,
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// fsyncs a folder, so that the entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    observe(|| FsOp::FsyncDir(dir.to_path_buf())).map_err(io_err("fsync folder", dir))?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync folder", dir))
}

impl Publisher {
    /// A publisher with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    fn mark(&self, dir: PathBuf) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir);
    }

    /// Replaces (or creates) `path` with `bytes`, atomically: readers see the old
    /// content or the new, never a mix. The folder must exist.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = parent_of(path);
        let (temp, mut file) = create_temp(&dir)?;
        let written = (|| {
            observe(|| FsOp::Write(temp.clone(), bytes.to_vec()))
                .map_err(io_err("write", &temp))?;
            file.write_all(bytes).map_err(io_err("write", &temp))?;
            observe(|| FsOp::Fsync(temp.clone())).map_err(io_err("fsync", &temp))?;
            // An fsync error is final: the page cache may have dropped the data.
            file.sync_all().map_err(io_err("fsync", &temp))?;
            drop(file);
            observe(|| FsOp::Rename(temp.clone(), path.to_path_buf()))
                .map_err(io_err("rename into place", path))?;
            std::fs::rename(&temp, path).map_err(io_err("rename into place", path))
        })();
        if let Err(e) = written {
            let _ = observe(|| FsOp::Unlink(temp.clone()));
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        self.mark(dir);
        Ok(())
    }

    /// Creates `dir` and any missing parents, remembering each new entry's folder.
    pub fn create_dir_all(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = parent_of(dir);
        if parent != dir {
            self.create_dir_all(&parent)?;
        }
        observe(|| FsOp::Mkdir(dir.to_path_buf())).map_err(io_err("create folder", dir))?;
        match std::fs::create_dir(dir) {
            Ok(()) => {
                self.mark(parent);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(e) => Err(io_err("create folder", dir)(e)),
        }
    }

    /// Renames `from` to `to` (a file, or a folder onto a missing or empty one).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        observe(|| FsOp::Rename(from.to_path_buf(), to.to_path_buf()))
            .and_then(|()| std::fs::rename(from, to))
            .map_err(|source| Error::Io {
                op: "rename",
                path: from.to_path_buf(),
                source: std::io::Error::new(
                    source.kind(),
                    format!("to {}: {source}", to.display()),
                ),
            })?;
        self.mark(parent_of(from));
        self.mark(parent_of(to));
        Ok(())
    }

    /// Removes the file `path`; a missing file is not an error.
    pub fn remove_file(&self, path: &Path) -> Result<()> {
        observe(|| FsOp::Unlink(path.to_path_buf())).map_err(io_err("remove", path))?;
        match std::fs::remove_file(path) {
            Ok(()) => {
                self.mark(parent_of(path));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", path)(e)),
        }
    }

    /// fsyncs every folder changed since the last call.
    pub fn sync(&self) -> Result<()> {
        let dirs = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        for dir in dirs {
            // A folder that was itself renamed away since is synced under its new name.
            if dir.exists() {
                sync_dir(&dir)?;
            }
        }
        Ok(())
    }
}

/// Removes a folder tree that is no longer referenced (trash, abandoned staging).
/// Never follows symbolic links out of it.
pub fn remove_tree(dir: &Path) -> Result<()> {
    observe(|| FsOp::RemoveTree(dir.to_path_buf())).map_err(io_err("remove folder", dir))?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove folder", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::new();
        let target = dir.path().join("a/b/zarr.json");
        p.create_dir_all(target.parent().unwrap()).unwrap();
        p.write(&target, b"one").unwrap();
        p.write(&target, b"two").unwrap();
        p.sync().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("zarr.json")]);
    }

    #[test]
    fn write_into_missing_folder_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Publisher::new()
            .write(&dir.path().join("missing/x"), b"")
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
