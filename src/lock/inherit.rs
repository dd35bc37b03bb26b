//! Locks handed down from a parent `spatialzarr lock` to the command it runs.
//!
//! The parent passes the child an open descriptor of the lock file (the same open
//! file description, so the same flock) and names it in [`HELD_LOCK_ENV`] as
//! `dev:ino:mode:fd:pid` (`pid` is the process that handed it down), several entries
//! separated by `;`. A spatialzarr process that finds its dataset's lock named there
//! treats the lock as already held in that mode, and never calls flock on it, so it
//! can neither deadlock against its ancestor nor release the ancestor's lock, when:
//! - the descriptor is open here on that very file (it was inherited), or
//! - it was closed on the way down (Python's `subprocess` closes inherited
//!   descriptors by default), `pid` is still an ancestor of this process, and this
//!   process can take its own duplicate of the ancestor's descriptor with
//!   `pidfd_getfd(2)`; that duplicate is kept open for the life of the process, so the
//!   lock stays held for it even if the ancestor dies.
//!
//! If the descriptor was closed and no duplicate can be taken while the ancestor is
//! alive, opening the lock fails with [`LockError::AncestorDescriptorClosed`]: waiting
//! would deadlock against the ancestor.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use super::{LockError, LockMode};

/// Environment variable naming locks held for this process by an ancestor.
pub const HELD_LOCK_ENV: &str = "SPATIALZARR_HELD_LOCK";

/// One lock named in [`HELD_LOCK_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldEntry {
    /// Device of the lock file.
    pub dev: u64,
    /// Inode of the lock file.
    pub ino: u64,
    /// The mode the ancestor holds.
    pub mode: LockMode,
    /// The descriptor number the ancestor left open for its children.
    pub fd: i32,
    /// The process that handed the lock down (`None` in the 4-field entries of
    /// earlier versions, which name no process).
    pub pid: Option<u32>,
}

/// Formats one entry of [`HELD_LOCK_ENV`].
pub fn format_entry(entry: &HeldEntry) -> String {
    let mode = match entry.mode {
        LockMode::Read => "r",
        LockMode::Write => "w",
    };
    let HeldEntry { dev, ino, fd, .. } = entry;
    match entry.pid {
        Some(pid) => format!("{dev}:{ino}:{mode}:{fd}:{pid}"),
        None => format!("{dev}:{ino}:{mode}:{fd}"),
    }
}

/// Parses the variable's value into entries, skipping malformed ones.
pub fn parse(value: &str) -> Vec<HeldEntry> {
    value
        .split(';')
        .filter_map(|entry| {
            let mut parts = entry.split(':');
            let dev = parts.next()?.parse().ok()?;
            let ino = parts.next()?.parse().ok()?;
            let mode = match parts.next()? {
                "r" => LockMode::Read,
                "w" => LockMode::Write,
                _ => return None,
            };
            let fd = parts.next()?.parse().ok()?;
            let pid = match parts.next() {
                Some(pid) => Some(pid.parse().ok()?),
                None => None,
            };
            parts.next().is_none().then_some(HeldEntry {
                dev,
                ino,
                mode,
                fd,
                pid,
            })
        })
        .collect()
}

/// A lock an ancestor holds for this process.
#[derive(Debug, Clone)]
pub(super) struct Inherited {
    /// The mode the ancestor holds.
    pub mode: LockMode,
    /// A descriptor of this process on the ancestor's open file description (so on
    /// its flock), when one could be taken: what this process hands down in turn.
    pub descriptor: Option<Arc<OwnedFd>>,
}

/// Duplicates of ancestors' lock descriptors, by lock file: kept for the life of the
/// process, so that the lock stays held for it even if every process above it dies.
fn kept() -> &'static Mutex<HashMap<(u64, u64), Inherited>> {
    static KEPT: OnceLock<Mutex<HashMap<(u64, u64), Inherited>>> = OnceLock::new();
    KEPT.get_or_init(Default::default)
}

/// `O_CLOEXEC` as `/proc/PID/fdinfo` shows it in `flags:` (octal).
const O_CLOEXEC_FLAG: u32 = 0o2_000_000;

/// Whether descriptor `fd` of this process was inherited open on the file
/// `(dev, ino)`: it is open on that file and NOT close-on-exec (every descriptor this
/// library opens is close-on-exec, so one of our own lock files, which may have taken
/// a number an ancestor's closed descriptor had, never passes).
fn inherited_here(fd: i32, dev: u64, ino: u64) -> bool {
    let on_file = std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino);
    let flags = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        });
    on_file && flags.is_some_and(|f| f & O_CLOEXEC_FLAG == 0)
}

/// Whether `fd` is open on the file `(dev, ino)`.
fn is_on_file(fd: impl AsFd, dev: u64, ino: u64) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// The parent of `pid`, from `/proc/PID/stat` (after the parenthesised command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is an ancestor of this process.
fn is_ancestor(pid: u32) -> bool {
    let mut current = std::process::id();
    // A chain longer than this is a loop in a racing /proc read.
    for _ in 0..4096 {
        match parent_of(current) {
            Some(parent) if parent == pid => return true,
            Some(parent) if parent > 0 && parent != current => current = parent,
            _ => return false,
        }
    }
    false
}

/// A duplicate of descriptor `fd` of process `pid`, which must be open on the lock
/// file `(dev, ino)` (and, unless it is this process, be one of our ancestors).
/// The error says why it could not be taken.
fn duplicate_of(pid: u32, fd: i32, dev: u64, ino: u64) -> Result<OwnedFd, String> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let raw = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
    let target = Pid::from_raw(raw).ok_or_else(|| format!("pid {pid} out of range"))?;
    // Check ancestry after pinning the process with a pidfd, so that a pid reused by
    // an unrelated process between the check and the open cannot be mistaken for it.
    let pidfd = pidfd_open(target, PidfdFlags::empty()).map_err(|e| format!("pidfd_open: {e}"))?;
    if pid != std::process::id() && !is_ancestor(pid) {
        return Err(format!("pid {pid} is no longer an ancestor"));
    }
    let duplicate = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty())
        .map_err(|e| format!("pidfd_getfd: {e}"))?;
    if !is_on_file(&duplicate, dev, ino) {
        return Err(format!("descriptor {fd} of pid {pid} is not the lock file"));
    }
    Ok(duplicate)
}

/// The lock an ancestor holds for us on the lock file `(dev, ino)`, if any.
pub(super) fn inherited(
    dev: u64,
    ino: u64,
    dataset: &Path,
) -> Result<Option<Inherited>, LockError> {
    let mut kept = kept().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(inherited) = kept.get(&(dev, ino)) {
        return Ok(Some(inherited.clone()));
    }
    let Ok(value) = std::env::var(HELD_LOCK_ENV) else {
        return Ok(None);
    };
    let entries: Vec<HeldEntry> = parse(&value)
        .into_iter()
        .filter(|e| e.dev == dev && e.ino == ino)
        .collect();
    let mut found = None;
    for entry in &entries {
        if inherited_here(entry.fd, dev, ino) {
            // A copy of our own, to hand down even if the inherited one gets closed.
            let own = duplicate_of(std::process::id(), entry.fd, dev, ino).ok();
            found = Some(Inherited {
                mode: entry.mode,
                descriptor: own.map(Arc::new),
            });
            break;
        }
    }
    let mut failure = None;
    if found.is_none() {
        for entry in &entries {
            let Some(pid) = entry.pid else { continue };
            match duplicate_of(pid, entry.fd, dev, ino) {
                Ok(duplicate) => {
                    found = Some(Inherited {
                        mode: entry.mode,
                        descriptor: Some(Arc::new(duplicate)),
                    });
                    break;
                }
                Err(reason) if is_ancestor(pid) => failure = Some((*entry, reason)),
                Err(_) => {}
            }
        }
    }
    if let Some(inherited) = found {
        kept.insert((dev, ino), inherited.clone());
        return Ok(Some(inherited));
    }
    // Named for us, descriptor gone, and an ancestor that we could not reach: waiting
    // for the lock would wait for that ancestor, which may be waiting for us.
    match failure {
        Some((entry, reason)) => Err(LockError::AncestorDescriptorClosed {
            dataset: dataset.to_path_buf(),
            pid: entry.pid.unwrap_or_default(),
            fd: entry.fd,
            reason,
        }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let entries = vec![
            HeldEntry {
                dev: 1,
                ino: 2,
                mode: LockMode::Write,
                fd: 5,
                pid: Some(77),
            },
            HeldEntry {
                dev: 3,
                ino: 4,
                mode: LockMode::Read,
                fd: 7,
                pid: None,
            },
        ];
        let value = format!(
            "{};{}",
            format_entry(&entries[0]),
            format_entry(&entries[1])
        );
        assert_eq!(parse(&value), entries);
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(parse("").is_empty());
        assert!(parse("1:2:x:3:4;a:b:c:d:e;1:2:w;1:2:w:3:9:9;1:2:w:3:x").is_empty());
    }

    /// Entries of earlier versions (no pid) are still read.
    #[test]
    fn four_field_entries_are_read() {
        assert_eq!(
            parse("1:2:w:3"),
            vec![HeldEntry {
                dev: 1,
                ino: 2,
                mode: LockMode::Write,
                fd: 3,
                pid: None
            }]
        );
    }

    /// A descriptor this library opened (close-on-exec) never passes for an
    /// inherited one, even on the right file.
    #[test]
    fn our_own_descriptors_are_not_inherited() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        assert!(!inherited_here(file.as_raw_fd(), meta.dev(), meta.ino()));
        // Its duplicate without close-on-exec (what a parent hands down) passes.
        let handed = rustix::io::dup(&file).unwrap();
        assert!(inherited_here(handed.as_raw_fd(), meta.dev(), meta.ino()));
    }

    #[test]
    fn our_parent_is_an_ancestor_and_we_are_not() {
        let parent = parent_of(std::process::id()).expect("parent from /proc");
        assert!(is_ancestor(parent));
        assert!(!is_ancestor(std::process::id()));
    }
}
