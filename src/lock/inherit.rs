//! Locks handed down from a parent `spatialzarr lock` to the command it runs.
//!
//! The parent passes the child an open descriptor of the lock file (the same open
//! file description, so the same flock) and names it in [`HELD_LOCK_ENV`] as
//! `dev:ino:mode:fd`, several entries separated by `;`. A spatialzarr process that
//! finds its dataset's lock named there, and the descriptor really open on that
//! file, treats the lock as already held in that mode: it never calls flock on it, so
//! it can neither deadlock against its parent nor release the parent's lock.

use super::LockMode;

/// Environment variable naming locks held for this process by an ancestor.
pub const HELD_LOCK_ENV: &str = "SPATIALZARR_HELD_LOCK";

/// Formats one entry of [`HELD_LOCK_ENV`].
pub fn format_entry(dev: u64, ino: u64, mode: LockMode, fd: i32) -> String {
    let mode = match mode {
        LockMode::Read => "r",
        LockMode::Write => "w",
    };
    format!("{dev}:{ino}:{mode}:{fd}")
}

/// Parses the variable's value into `(dev, ino, mode, fd)` entries, skipping bad ones.
pub fn parse(value: &str) -> Vec<(u64, u64, LockMode, i32)> {
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
            parts.next().is_none().then_some((dev, ino, mode, fd))
        })
        .collect()
}

/// The mode in which an ancestor holds the lock file `(dev, ino)` for us, if it does
/// and the descriptor it named is open here on that very file.
pub fn inherited_mode(dev: u64, ino: u64) -> Option<LockMode> {
    use std::os::unix::fs::MetadataExt;
    let value = std::env::var(HELD_LOCK_ENV).ok()?;
    parse(&value)
        .into_iter()
        .find(|&(d, i, _, fd)| {
            d == dev
                && i == ino
                && std::fs::metadata(format!("/proc/self/fd/{fd}"))
                    .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
        })
        .map(|(_, _, mode, _)| mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let value = format!(
            "{};{}",
            format_entry(1, 2, LockMode::Write, 5),
            format_entry(3, 4, LockMode::Read, 7)
        );
        assert_eq!(
            parse(&value),
            vec![(1, 2, LockMode::Write, 5), (3, 4, LockMode::Read, 7)]
        );
    }

    #[test]
    fn garbage_is_ignored() {
        assert!(parse("").is_empty());
        assert!(parse("1:2:x:3;a:b:c:d;1:2:w:3:9").is_empty());
    }
}
