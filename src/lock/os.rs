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

/// A unique name for something being created next to `path`.
pub(super) fn sibling_temp(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.new-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Creates `dir` (one level) with modes derived from the dataset; an existing one is
/// kept. The folder appears with its final mode (built under a temporary name, its
/// mode set, then renamed without replacing), so that the umask never shuts the group
/// out, not even for a moment; where that rename is not offered, it is created in
/// place and its mode set right after.
pub fn ensure_private_dir(dir: &Path, dataset_mode: u32) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    if dir.symlink_metadata().is_ok() {
        return Ok(());
    }
    let mode = std::fs::Permissions::from_mode(dir_mode_for(dataset_mode));
    let temp = sibling_temp(dir);
    std::fs::create_dir(&temp)?;
    let placed = std::fs::set_permissions(&temp, mode.clone()).and_then(|()| {
        renameat_with(CWD, &temp, CWD, dir, RenameFlags::NOREPLACE).map_err(std::io::Error::from)
    });
    match placed {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_dir(&temp);
            use rustix::io::Errno;
            match e {
                // Another process made it first.
                e if crate::util::errno_is(&e, &[Errno::EXIST]) => Ok(()),
                // No RENAME_NOREPLACE here (some network filesystems, old kernels,
                // seccomp filters): mkdir, chmod.
                e if crate::util::errno_is(&e, &[Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP]) => {
                    match std::fs::create_dir(dir) {
                        Ok(()) => std::fs::set_permissions(dir, mode),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                _ => Err(e),
            }
        }
    }
}

/// Opens (creating if needed) a lock file read-write and close-on-exec. A new file
/// appears with its final mode: it is created under a temporary name, its mode set
/// (the umask cannot hide it from the group), then hard-linked to its name, which
/// never replaces an existing file, so the lock file is never swapped for another.
pub fn open_lock_file(path: &Path, dataset_mode: u32) -> Result<File, LockError> {
    let open_error = |source| LockError::Open {
        path: path.to_path_buf(),
        source,
    };
    // std opens every file with O_CLOEXEC, so children never inherit it by accident.
    let open_existing = || OpenOptions::new().read(true).write(true).open(path);
    match open_existing() {
        Ok(file) => return Ok(file),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(open_error(e)),
        Err(_) => {}
    }
    let mode = file_mode_for(dataset_mode);
    let temp = sibling_temp(path);
    let created = create_with_mode(&temp, mode).and_then(|_| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match created {
        // Linked, or another process linked its own first: either way, open the name.
        Ok(()) => open_existing().map_err(open_error),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            open_existing().map_err(open_error)
        }
        // No hard links here (some FUSE and SMB mounts): create in place, chmod.
        Err(e)
            if crate::util::errno_is(
                &e,
                &[
                    rustix::io::Errno::PERM,
                    rustix::io::Errno::OPNOTSUPP,
                    rustix::io::Errno::NOSYS,
                ],
            ) =>
        {
            create_in_place(path, mode).map_err(open_error)
        }
        Err(e) => Err(open_error(e)),
    }
}

/// Creates the new file `path` (exclusively, read-write) and sets `mode` on it, which
/// the umask may have reduced.
pub(super) fn create_with_mode(path: &Path, mode: u32) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Creates the lock file `path` directly (umask applies until its mode is set), or
/// opens it when it exists.
fn create_in_place(path: &Path, mode: u32) -> std::io::Result<File> {
    match create_with_mode(path, mode) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            OpenOptions::new().read(true).write(true).open(path)
        }
        other => other,
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

    /// Takes the inter-process lock in `mode` only when it is free at once and no
    /// process waits at the gate (holding it shared while blocked behind the lock
    /// holder, or exclusively as a queued writer). Returns `Ok(false)`, with nothing
    /// held, otherwise.
    pub fn try_behind_waiters(&self, mode: LockMode) -> Result<bool, LockError> {
        if let Try::Busy = try_once(&self.gate, LockMode::Write, &self.gate_path)? {
            return Ok(false);
        }
        let got = try_once(&self.lock, mode, &self.lock_path);
        self.unlock_gate();
        Ok(matches!(got?, Try::Got))
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
