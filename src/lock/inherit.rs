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

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
    /// The process that handed the lock down.
    pub pid: u32,
}

/// Formats one entry of [`HELD_LOCK_ENV`].
pub fn format_entry(entry: &HeldEntry) -> String {
    let mode = match entry.mode {
        LockMode::Read => "r",
        LockMode::Write => "w",
    };
    let HeldEntry {
        dev, ino, fd, pid, ..
    } = entry;
    format!("{dev}:{ino}:{mode}:{fd}:{pid}")
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
            let pid = parts.next()?.parse().ok()?;
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
#[derive(Debug)]
pub(super) struct Inherited {
    /// The mode the ancestor holds.
    pub mode: LockMode,
    /// Our own duplicate of the ancestor's descriptor, when ours had been closed.
    pub _duplicate: Option<OwnedFd>,
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

/// Takes a duplicate of descriptor `entry.fd` of the ancestor `entry.pid`, if that
/// process is still our ancestor and the descriptor is open on the lock file.
fn duplicate_from_ancestor(entry: &HeldEntry) -> Option<OwnedFd> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let pid = Pid::from_raw(i32::try_from(entry.pid).ok()?)?;
    // Check ancestry after pinning the process with a pidfd, so that a pid reused by
    // an unrelated process between the check and the open cannot be mistaken for it.
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    if !is_ancestor(entry.pid) {
        return None;
    }
    let duplicate = pidfd_getfd(&pidfd, entry.fd, PidfdGetfdFlags::empty()).ok()?;
    is_on_file(&duplicate, entry.dev, entry.ino).then_some(duplicate)
}

/// The lock an ancestor holds for us on the lock file `(dev, ino)`, if any.
pub(super) fn inherited(
    dev: u64,
    ino: u64,
    dataset: &Path,
) -> Result<Option<Inherited>, LockError> {
    let Ok(value) = std::env::var(HELD_LOCK_ENV) else {
        return Ok(None);
    };
    let entries: Vec<HeldEntry> = parse(&value)
        .into_iter()
        .filter(|e| e.dev == dev && e.ino == ino)
        .collect();
    for entry in &entries {
        let open_here = std::fs::metadata(format!("/proc/self/fd/{}", entry.fd))
            .is_ok_and(|m| m.dev() == dev && m.ino() == ino);
        if open_here {
            return Ok(Some(Inherited {
                mode: entry.mode,
                _duplicate: None,
            }));
        }
    }
    for entry in &entries {
        if let Some(duplicate) = duplicate_from_ancestor(entry) {
            return Ok(Some(Inherited {
                mode: entry.mode,
                _duplicate: Some(duplicate),
            }));
        }
    }
    // Named for us, descriptor gone, and an ancestor that we could not reach: waiting
    // for the lock would wait for that ancestor, which may be waiting for us.
    match entries.iter().find(|e| is_ancestor(e.pid)) {
        Some(entry) => Err(LockError::AncestorDescriptorClosed {
            dataset: dataset.to_path_buf(),
            pid: entry.pid,
            fd: entry.fd,
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
                pid: 77,
            },
            HeldEntry {
                dev: 3,
                ino: 4,
                mode: LockMode::Read,
                fd: 7,
                pid: 78,
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
        assert!(parse("1:2:x:3:4;a:b:c:d:e;1:2:w:3;1:2:w:3:9:9").is_empty());
    }

    #[test]
    fn our_parent_is_an_ancestor_and_we_are_not() {
        let parent = parent_of(std::process::id()).expect("parent from /proc");
        assert!(is_ancestor(parent));
        assert!(!is_ancestor(std::process::id()));
    }
}
