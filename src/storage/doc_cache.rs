//! A read cache of small metadata files (Zarr documents, index buckets) for the
//! thread that holds a write transaction (spec/commit-protocol.md §2, "Reads under
//! the write lock").
//!
//! Under the write lock the committed files change only through this process's
//! [`super::Publisher`], and every change it makes (a file created or truncated, a
//! rename, a swap, a removal) first tells this cache, which forgets the paths it
//! touches: a file, or a whole folder. So a file read twice in one transaction (a
//! table's array documents: once for its state, once for the plan, once for the
//! write) is opened once, and what the cache returns is what the disk holds.
//!
//! The cache is active only inside a [`Scope`], on the thread that made it, and only
//! for paths below the scope's dataset root. A change made through a path outside
//! that root (the same files named another way, such as a second handle opened
//! through a relative path) empties the whole cache.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The files read in one scope, by path.
struct Cache {
    root: PathBuf,
    /// The content read, or `None` for a file found missing.
    files: HashMap<PathBuf, Option<Arc<Vec<u8>>>>,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// While alive, reads of metadata files below a dataset root are cached on this
/// thread. Made when a write transaction begins (after recovery) and dropped when
/// it ends; a scope made inside another is inert.
#[derive(Debug)]
pub struct Scope {
    active: bool,
    /// Tied to the thread: the cache is thread-local.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Starts caching the reads of files below `root` on this thread, unless a scope is
/// active already.
pub fn scope(root: &Path) -> Scope {
    let active = CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.is_some() {
            return false;
        }
        *cache = Some(Cache {
            root: root.to_path_buf(),
            files: HashMap::new(),
        });
        true
    });
    Scope {
        active,
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.active {
            CACHE.with(|cache| cache.borrow_mut().take());
        }
    }
}

/// The content of the file `path` (at most `max` bytes, as
/// [`crate::util::read_limited`]), from the cache when an active scope read it
/// before and nothing changed it since. A file found missing is remembered as
/// missing: reading it again fails as the first read did (`NotFound`).
pub fn read(path: &Path, max: u64) -> Result<Arc<Vec<u8>>> {
    let cached = CACHE.with(|cache| {
        let cache = cache.borrow();
        cache.as_ref()?.files.get(path).cloned()
    });
    match cached {
        Some(Some(bytes)) if bytes.len() as u64 <= max => return Ok(bytes),
        Some(None) => {
            return Err(Error::Io {
                op: "open",
                path: path.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        _ => {}
    }
    let read = crate::util::read_limited(path, max).map(Arc::new);
    let entry = match &read {
        Ok(bytes) => Some(bytes.clone()),
        Err(e) if e.is_not_found() => None,
        Err(_) => return read,
    };
    CACHE.with(|cache| {
        if let Some(cache) = cache.borrow_mut().as_mut()
            && path.starts_with(&cache.root)
        {
            cache.files.insert(path.to_path_buf(), entry);
        }
    });
    read
}

/// Forgets what the cache holds of the file `path`: it is about to be created,
/// truncated or removed.
pub fn forget_file(path: &Path) {
    forget(path, false);
}

/// Forgets what the cache holds of `path` and of everything below it: a file or a
/// folder about to be renamed, swapped or removed.
pub fn forget_tree(path: &Path) {
    forget(path, true);
}

fn forget(path: &Path, below: bool) {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let Some(cache) = cache.as_mut() else {
            return;
        };
        if cache.files.is_empty() {
            return;
        }
        if !path.starts_with(&cache.root) {
            cache.files.clear();
        } else if below {
            cache.files.retain(|p, _| !p.starts_with(path));
        } else {
            cache.files.remove(path);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Publisher;

    #[test]
    fn a_scope_reads_a_file_once_until_the_publisher_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        std::fs::create_dir_all(root.join("t")).unwrap();
        let doc = root.join("t/zarr.json");
        // Changes made behind the publisher's back show what the cache returns.
        let behind = |bytes: &[u8]| std::fs::write(&doc, bytes).unwrap();
        behind(b"old");
        {
            let _scope = scope(&root);
            assert_eq!(*read(&doc, 10).unwrap(), b"old");
            behind(b"changed");
            assert_eq!(
                *read(&doc, 10).unwrap(),
                b"old",
                "the second read is cached"
            );
            // A nested scope changes nothing, and its end ends nothing.
            drop(scope(&root));
            behind(b"old");
            assert_eq!(*read(&doc, 10).unwrap(), b"old");
            // A write through the publisher is seen at once.
            Publisher::new().write(&doc, b"new").unwrap();
            assert_eq!(*read(&doc, 10).unwrap(), b"new");
            behind(b"not seen");
            assert_eq!(*read(&doc, 10).unwrap(), b"new");
            // So is a rename of a folder above it.
            Publisher::new()
                .rename(&root.join("t"), &root.join("u"))
                .unwrap();
            assert!(read(&doc, 10).is_err(), "the file moved away");
            std::fs::create_dir_all(root.join("t")).unwrap();
            Publisher::new().write(&doc, b"again").unwrap();
            assert_eq!(*read(&doc, 10).unwrap(), b"again");
            behind(b"hidden");
            assert_eq!(*read(&doc, 10).unwrap(), b"again");
            // A change through another spelling of the root empties the cache.
            std::os::unix::fs::symlink(&root, dir.path().join("link")).unwrap();
            let other = dir.path().join("link/u/zarr.json");
            Publisher::new().remove_file(&other).unwrap();
            assert_eq!(*read(&doc, 10).unwrap(), b"hidden");
        }
        // A missing file is remembered as missing until the publisher creates it.
        {
            let _scope = scope(&root);
            let absent = root.join("t/absent.json");
            assert!(read(&absent, 10).is_err());
            std::fs::write(&absent, b"behind").unwrap();
            let error = read(&absent, 10).unwrap_err();
            assert!(error.is_not_found(), "{error}");
            Publisher::new().write(&absent, b"made").unwrap();
            assert_eq!(*read(&absent, 10).unwrap(), b"made");
        }
        // Outside a scope every read opens the file.
        behind(b"one");
        assert_eq!(*read(&doc, 10).unwrap(), b"one");
        behind(b"two");
        assert_eq!(*read(&doc, 10).unwrap(), b"two");
    }
}
