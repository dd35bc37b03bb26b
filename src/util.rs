//! Small helpers shared by the layers.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Reads a whole file, refusing one larger than `max` bytes without reading it. An
/// open, stat or read failing with ESTALE is tried again from the open (see
/// [`retry_stale`]).
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let mut failed = "open";
    let read = retry_stale(|| {
        failed = "open";
        crate::storage::trace::note_open(path);
        let file = std::fs::File::open(path)?;
        failed = "stat";
        let len = file.metadata()?.len();
        if len > max {
            return Ok(Err(len));
        }
        failed = "read";
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(max + 1).read_to_end(&mut bytes)?;
        Ok(Ok(bytes))
    })
    .map_err(|source| Error::Io {
        op: failed,
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = read.map_err(|len| Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{len} bytes is larger than the {max} bytes allowed for this file"),
    })?;
    if bytes.len() as u64 > max {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("grew past the {max} bytes allowed while being read"),
        });
    }
    Ok(bytes)
}

/// Checks that `relative` is a plain relative path (no root, no `..`, no `.`), so that
/// joining it to the dataset root can never leave the dataset.
pub fn safe_relative(relative: &str) -> Option<PathBuf> {
    let path = Path::new(relative);
    let plain = !relative.is_empty()
        && !relative.contains('\0')
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then(|| path.to_path_buf())
}

/// Checks that no component of `path` below `root` is a symbolic link (components
/// that do not exist are fine). The store never follows a link inside a dataset: one
/// could lead out of it, and a write, rename or removal through it would change files
/// elsewhere.
pub fn no_links_below(root: &Path, path: &Path) -> Result<()> {
    LinkCheck::default().check(root, path)
}

/// [`no_links_below`] for many paths of one commit: remembers every component found
/// not to be a link, so that a folder shared by several paths (or a path checked
/// before the commit is decided and again when it is applied) is looked at once.
/// A component found missing is remembered too, with the rest of the path below it:
/// whatever appears there later under the same lock was made by this writer.
/// Valid while the caller holds the write lock: no writer of ours makes links, and
/// nothing it renames into place is one (staged trees are checked when staged).
#[derive(Debug, Default)]
pub struct LinkCheck {
    seen: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// The root of the last resolution made at once, opened (`O_PATH`) for it; `None`
    /// beside it when it could not be opened.
    root_dir: std::sync::Mutex<Option<(PathBuf, Option<std::os::fd::OwnedFd>)>>,
}

/// A path with at least this many components not yet looked at is resolved in one
/// `openat2` that refuses every link on the way (`RESOLVE_NO_SYMLINKS`), rather than
/// with one `lstat` per component.
const RESOLVE_AT_ONCE_FROM: usize = 2;

/// Set once `openat2` is found missing (kernels before 5.6) or forbidden (some
/// container sandboxes): every check then looks at each component.
static NO_OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What one resolution of a path found.
enum Resolved {
    /// Every component exists and none is a link.
    Whole,
    /// A component is missing; none before it is a link.
    Missing,
}

impl LinkCheck {
    /// Remembers `path` as not a link: an `lstat` the caller made under the same
    /// write lock found a real folder there, or nothing ("not found"). The folders
    /// above it are still checked by [`Self::check`], each on its own.
    pub fn note_not_link(&self, root: &Path, path: &Path) {
        if path.starts_with(root) {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.insert(path.to_path_buf());
        }
    }

    /// Checks `path` below `root` as [`no_links_below`] does.
    pub fn check(&self, root: &Path, path: &Path) -> Result<()> {
        let Ok(relative) = path.strip_prefix(root) else {
            return Ok(());
        };
        if self.unseen(root, relative) >= RESOLVE_AT_ONCE_FROM {
            match self.resolve(root, relative) {
                Some(Resolved::Whole) => {
                    self.note_resolved(root, relative);
                    return Ok(());
                }
                Some(Resolved::Missing) => {
                    // Most often only the last component is missing (a folder this
                    // commit makes): the folder above is resolved once; otherwise the
                    // walk finds where the path stops.
                    let parent = relative.parent().filter(|p| !p.as_os_str().is_empty());
                    if let Some(parent) = parent
                        && self.unseen(root, parent) >= RESOLVE_AT_ONCE_FROM
                        && matches!(self.resolve(root, parent), Some(Resolved::Whole))
                    {
                        self.note_resolved(root, parent);
                        self.note_not_link(root, path);
                        return Ok(());
                    }
                }
                // A link on the way (the walk below names it), or no answer.
                None => {}
            }
        }
        self.walk(root, relative)
    }

    /// Remembers `root/relative` and every folder above it (below `root`) as found
    /// by one resolution that met no link.
    fn note_resolved(&self, root: &Path, relative: &Path) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut current = root.to_path_buf();
        for component in relative.components() {
            current.push(component);
            seen.insert(current.clone());
        }
    }

    /// How many of the folders `root/relative` and those above it (below `root`) were
    /// not looked at yet.
    fn unseen(&self, root: &Path, relative: &Path) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut current = root.to_path_buf();
        relative
            .components()
            .filter(|component| {
                current.push(component);
                !seen.contains(&current)
            })
            .count()
    }

    /// Resolves `relative` below `root` in one `openat2` (`O_PATH`, no link followed,
    /// nothing outside `root`); `None` when a link is on the way, or the call fails
    /// otherwise or is not offered.
    fn resolve(&self, root: &Path, relative: &Path) -> Option<Resolved> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        use std::sync::atomic::Ordering;
        if NO_OPENAT2.load(Ordering::Relaxed) {
            return None;
        }
        let mut dir = self.root_dir.lock().unwrap_or_else(|p| p.into_inner());
        if dir.as_ref().is_none_or(|(opened, _)| opened != root) {
            crate::storage::trace::note_open(root);
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            *dir = Some((
                root.to_path_buf(),
                rustix::fs::open(root, flags, Mode::empty()).ok(),
            ));
        }
        let root_fd = dir.as_ref()?.1.as_ref()?;
        crate::storage::trace::note_open(&root.join(relative));
        let found = rustix::fs::openat2(
            root_fd,
            relative,
            // Without `O_NOFOLLOW`: a link as the last component fails too (with it,
            // `O_PATH` would open the link itself).
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
        );
        match found {
            Ok(_) => Some(Resolved::Whole),
            Err(rustix::io::Errno::NOENT) => Some(Resolved::Missing),
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
                None
            }
            Err(_) => None,
        }
    }

    /// Looks at each component of `relative` below `root` not looked at yet, with one
    /// `lstat` each.
    fn walk(&self, root: &Path, relative: &Path) -> Result<()> {
        let mut current = root.to_path_buf();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut missing = false;
        for component in relative.components() {
            current.push(component);
            if missing {
                seen.insert(current.clone());
                continue;
            }
            if seen.contains(&current) {
                continue;
            }
            match crate::storage::trace::lstat(&current) {
                Ok(meta) if meta.file_type().is_symlink() => return Err(link_error(current)),
                Ok(_) => {
                    seen.insert(current.clone());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    seen.insert(current.clone());
                    missing = true;
                }
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }
}

/// The error for a link found at `path`.
fn link_error(path: PathBuf) -> Error {
    Error::Corrupt {
        path,
        reason: "is a symbolic link; spatialzarr never follows links inside a dataset (they can lead out of it): replace it with the real folder or file".into(),
    }
}

/// Whether `path` below `root` is reached without following a symbolic link.
pub fn linkless(root: &Path, path: &Path) -> bool {
    no_links_below(root, path).is_ok()
}

/// The most bytes one read may allocate: this machine's memory (from
/// `/proc/meminfo`; 64 GiB where it cannot be read). A larger read could only end in
/// the process being aborted.
pub fn memory_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                kib.checked_mul(1024)
            })
            .unwrap_or(64 << 30)
    })
}

/// Attempts of an operation failing with ESTALE before the error is reported.
const STALE_ATTEMPTS: u32 = 12;
/// The longest pause between two attempts.
const STALE_PAUSE_MAX_MS: u64 = 500;

/// Runs `op` again while it fails with ESTALE: at most [`STALE_ATTEMPTS`] times in
/// all, pausing 2, 4, 8 ... ms (at most [`STALE_PAUSE_MAX_MS`]) between tries, about
/// 2 s in all. Network filesystems answer ESTALE when this node's cache still maps a
/// path to a file another node has since replaced by a rename (every commit replaces
/// the manifest that way) until the cache expires (GlusterFS's default caches: about
/// 1 s); opening the path again then finds the new file. Under the dataset lock
/// nothing is being replaced, so a retry finds the committed file; a persistent ESTALE
/// is reported as itself, never as "not found" or as corruption.
pub fn retry_stale<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut attempt = 1;
    loop {
        match op() {
            Err(e) if attempt < STALE_ATTEMPTS && is_stale(&e) => {
                let pause = (1u64 << attempt).min(STALE_PAUSE_MAX_MS);
                std::thread::sleep(std::time::Duration::from_millis(pause));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Whether `error` is ESTALE (a stale network file handle).
pub fn is_stale(error: &std::io::Error) -> bool {
    errno_is(error, &[rustix::io::Errno::STALE])
}

/// Whether the operating system's error `error` is one of `errnos`.
pub fn errno_is(error: &std::io::Error, errnos: &[rustix::io::Errno]) -> bool {
    errnos
        .iter()
        .any(|errno| error.raw_os_error() == Some(errno.raw_os_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_below_the_root_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("a/link")).unwrap();
        assert!(no_links_below(&root, &root.join("a/b/missing/x")).is_ok());
        let err = no_links_below(&root, &root.join("a/link/x")).unwrap_err();
        assert!(err.to_string().contains("a/link"), "{err}");
        assert!(!linkless(&root, &root.join("a/link")));
        // The root itself may be reached through links.
        std::os::unix::fs::symlink(&root, dir.path().join("alias")).unwrap();
        assert!(linkless(
            &dir.path().join("alias"),
            &dir.path().join("alias/a/b")
        ));
    }

    /// Deep paths are resolved at once (one `openat2`), shallow ones component by
    /// component; both name the link they meet, take missing parts as fine, and
    /// remember what they looked at.
    #[test]
    fn deep_paths_are_checked_at_once_and_links_on_them_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        std::fs::create_dir_all(root.join("t/c/obs/a/c")).unwrap();
        std::fs::create_dir_all(root.join("t/d/e")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("t/d/e/link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("t/c/obs/final")).unwrap();
        let links = LinkCheck::default();
        links.check(&root, &root.join("t/c/obs/a/c")).unwrap();
        // A missing part, deep or right below an existing folder.
        links.check(&root, &root.join("t/c/obs/b/c/0")).unwrap();
        links.check(&root, &root.join("t/c/obs/a/c/new")).unwrap();
        for (path, link) in [
            ("t/d/e/link/x/y", "t/d/e/link"),
            ("t/c/obs/final", "t/c/obs/final"),
            ("t/c/obs/final/x/y/z", "t/c/obs/final"),
        ] {
            let err = LinkCheck::default()
                .check(&root, &root.join(path))
                .unwrap_err();
            assert!(err.to_string().contains(link), "{path}: {err}");
            // The same handle as above, which saw the folders on the way already.
            let err = links.check(&root, &root.join(path)).unwrap_err();
            assert!(err.to_string().contains(link), "{path}: {err}");
        }
        // What was looked at is remembered.
        assert_eq!(links.unseen(&root, Path::new("t/c/obs/a/c")), 0);
        assert_eq!(links.unseen(&root, Path::new("t/c/obs/b/c/0")), 0);
    }

    /// A deep path is looked at with one `openat2` (and one open of the root), not one
    /// `lstat` per component, where the kernel offers it.
    #[test]
    fn a_deep_path_costs_one_resolution() {
        use crate::storage::trace::{FsObserver, FsOp, ReadOp, set_observer};
        use std::sync::{Arc, Mutex};
        struct Reads(PathBuf, Mutex<Vec<ReadOp>>);
        impl FsObserver for Reads {
            fn before(&self, _op: &FsOp) -> std::io::Result<()> {
                Ok(())
            }
            fn read(&self, op: &ReadOp) {
                let (ReadOp::Stat(p) | ReadOp::Open(p) | ReadOp::ReadDir(p)) = op;
                if p.starts_with(&self.0) {
                    self.1.lock().unwrap().push(op.clone());
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        std::fs::create_dir_all(root.join("t/c/obs/a/c")).unwrap();
        let reads = Arc::new(Reads(root.clone(), Mutex::default()));
        set_observer(Some(reads.clone()));
        let checked = LinkCheck::default().check(&root, &root.join("t/c/obs/a/c"));
        set_observer(None);
        checked.unwrap();
        let seen = std::mem::take(&mut *reads.1.lock().unwrap());
        if NO_OPENAT2.load(std::sync::atomic::Ordering::Relaxed) {
            // An old kernel or a sandbox: the walk, one look per component.
            assert_eq!(seen.len(), 5, "{seen:?}");
        } else {
            assert_eq!(
                seen,
                vec![
                    ReadOp::Open(root.clone()),
                    ReadOp::Open(root.join("t/c/obs/a/c"))
                ]
            );
        }
    }

    #[test]
    fn safe_relative_paths() {
        assert!(safe_relative("images/a/zarr.json").is_some());
        for bad in ["", "/etc", "../x", "a/../b", "./a", "a\0b"] {
            assert!(safe_relative(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn read_limited_refuses_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert_eq!(read_limited(&path, 100).unwrap().len(), 100);
        assert!(read_limited(&path, 99).is_err());
    }
}
