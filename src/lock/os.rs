//! The inter-process half of the lock: two flock'ed files in the dataset's hidden folder.
//!
//! `lock` carries the readers-writer lock itself. `gate` keeps writers from starving:
//! every acquisition passes the gate (readers shared, writers exclusive) before it
//! waits on `lock`, and leaves the gate once it holds `lock`. A waiting writer holds
//! the gate exclusively, so readers that arrive after it queue behind it.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{LockError, LockMode};

/// Name of the hidden folder inside a dataset.
pub const HIDDEN_DIR: &str = ".spatialzarr";
/// Name of the lock file inside the hidden folder.
pub const LOCK_FILE: &str = "lock";
/// Name of the writer-preference gate file inside the hidden folder.
pub const GATE_FILE: &str = "gate";

/// Longest pause between two tries of a lock wait that has a deadline.
const MAX_POLL: Duration = Duration::from_millis(5);

/// Permission bits for files we create in `dataset`: owner read-write, the group's
/// read/write bits copied from the dataset directory, others read at most, never
/// world-writable.
pub fn file_mode_for(dataset_mode: u32) -> u32 {
    0o600 | (dataset_mode & 0o060) | (dataset_mode & 0o004)
}

/// Permission bits for folders we create in `dataset` (keeps setgid so group
/// ownership is inherited; never world-writable).
pub fn dir_mode_for(dataset_mode: u32) -> u32 {
    0o700 | (dataset_mode & 0o2070) | (dataset_mode & 0o005)
}

/// Creates `dir` (one level) with modes derived from the dataset; an existing one is kept.
pub fn ensure_private_dir(dir: &Path, dataset_mode: u32) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode(dir_mode_for(dataset_mode)),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens (creating if needed) a lock file read-write and close-on-exec. A newly created
/// file gets its mode set explicitly so that the umask cannot hide it from the group.
pub fn open_lock_file(path: &Path, dataset_mode: u32) -> Result<File, LockError> {
    let open_error = |source| LockError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mode = file_mode_for(dataset_mode);
    // std opens every file with O_CLOEXEC, so children never inherit it by accident.
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(open_error)?;
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open_error),
        Err(e) => Err(open_error(e)),
    }
}

/// The two open files of one dataset's lock, shared by every thread of the process.
#[derive(Debug)]
pub struct OsLock {
    pub(super) lock: File,
    pub(super) gate: File,
    pub(super) lock_path: PathBuf,
    pub(super) gate_path: PathBuf,
}

/// Outcome of one non-blocking try.
enum Try {
    Got,
    Busy,
}

fn try_once(file: &File, mode: LockMode, path: &Path) -> Result<Try, LockError> {
    let result = match mode {
        LockMode::Read => file.try_lock_shared(),
        LockMode::Write => file.try_lock(),
    };
    match result {
        Ok(()) => Ok(Try::Got),
        Err(TryLockError::WouldBlock) => Ok(Try::Busy),
        Err(TryLockError::Error(source)) => Err(LockError::Os {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Takes `mode` on `file`, waiting until `deadline` (forever when `None`).
/// Returns `Ok(false)` when the deadline passed first.
fn flock_until(
    file: &File,
    mode: LockMode,
    path: &Path,
    deadline: Option<Instant>,
) -> Result<bool, LockError> {
    let Some(deadline) = deadline else {
        let result = match mode {
            LockMode::Read => file.lock_shared(),
            LockMode::Write => file.lock(),
        };
        return result.map(|()| true).map_err(|source| LockError::Os {
            path: path.to_path_buf(),
            source,
        });
    };
    let mut pause = Duration::from_micros(50);
    loop {
        if let Try::Got = try_once(file, mode, path)? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_POLL);
    }
}

impl OsLock {
    /// Takes the inter-process lock in `mode`, passing through the gate first.
    /// Returns `Ok(false)` on timeout, with nothing held.
    pub fn acquire(&self, mode: LockMode, deadline: Option<Instant>) -> Result<bool, LockError> {
        // Fast path: no writer is queued and the lock is free for us.
        if let Try::Got = try_once(&self.lock, mode, &self.lock_path)? {
            // A reader must still respect a writer queued at the gate.
            if mode == LockMode::Read {
                match try_once(&self.gate, LockMode::Read, &self.gate_path)? {
                    Try::Got => {
                        self.unlock_gate();
                        return Ok(true);
                    }
                    Try::Busy => self.release(),
                }
            } else {
                return Ok(true);
            }
        }
        if !flock_until(&self.gate, mode, &self.gate_path, deadline)? {
            return Ok(false);
        }
        let got = flock_until(&self.lock, mode, &self.lock_path, deadline);
        self.unlock_gate();
        got
    }

    /// Drops the inter-process lock.
    pub fn release(&self) {
        // Unlocking a lock we hold cannot fail on Linux; closing the file would
        // release it anyway, so an error here is not worth surfacing.
        let _ = self.lock.unlock();
    }

    /// Whether no writer of another process is queued at the gate.
    pub fn gate_open(&self) -> Result<bool, LockError> {
        match try_once(&self.gate, LockMode::Read, &self.gate_path)? {
            Try::Got => {
                self.unlock_gate();
                Ok(true)
            }
            Try::Busy => Ok(false),
        }
    }

    fn unlock_gate(&self) {
        let _ = self.gate.unlock();
    }
}
