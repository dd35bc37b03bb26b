//! Re-entrant readers-writer lock on a dataset, shared by threads, processes and nodes.
//!
//! Layers, from the outside in:
//! - a per-thread table of what the thread holds (re-entrancy, upgrade refusal);
//! - a per-process registry with one [`os::OsLock`] per lock file, keyed by the file's
//!   (device, inode), whose state decides between the threads of the process and
//!   calls flock only when the process goes from no holder to a holder and back;
//! - flock on `.spatialzarr/lock`, with `.spatialzarr/gate` against writer starvation.
//!
//! `spec/locking.md` states the protocol and its guarantees.

mod error;
mod hidden_node;
pub mod inherit;
pub mod mounts;
pub mod os;

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

pub use error::LockError;
use os::OsLock;

/// Environment variable that allows write locks on mounts whose locks are node-local.
pub const ALLOW_NODE_LOCAL_ENV: &str = "SPATIALZARR_ALLOW_NODE_LOCAL_LOCKS";

/// The two modes of the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Shared: any number of readers together.
    Read,
    /// Exclusive: one writer, no readers.
    Write,
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Read => "read",
            LockMode::Write => "write",
        })
    }
}

/// How a [`DatasetLock`] behaves.
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// Take write locks even on mounts whose locks are node-local (NFS `nolock`,
    /// Lustre `localflock`). Only safe when a single node writes the dataset.
    pub allow_node_local_locks: bool,
}

/// Who holds the lock inside this process.
#[derive(Debug, Default)]
struct ProcessState {
    /// Threads holding the read lock.
    readers: usize,
    /// The thread holding the write lock.
    writer: Option<ThreadId>,
    /// Threads of this process waiting for the write lock (they block new readers).
    waiting_writers: usize,
    /// A thread is taking or dropping the OS lock right now.
    transitioning: bool,
}

/// One dataset's lock within one process.
#[derive(Debug)]
struct SharedLock {
    serial: u64,
    pid: u32,
    dataset: PathBuf,
    os: OsLock,
    /// Set when an ancestor process holds the lock for us (see [`inherit`]).
    inherited: Option<LockMode>,
    /// Our descriptor on the ancestor's locked open file description, when we have
    /// one: what [`hand_down`] passes on.
    inherited_descriptor: Option<Arc<std::os::fd::OwnedFd>>,
    /// `(fstype, option)` when the mount's locks are node-local.
    node_local: Option<(String, String)>,
    state: Mutex<ProcessState>,
    changed: Condvar,
}

/// What one thread holds of one [`SharedLock`].
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The mode under which the thread is registered in [`ProcessState`].
    mode: LockMode,
    depth: usize,
}

thread_local! {
    static HELD: RefCell<HashMap<u64, Held>> = RefCell::new(HashMap::new());
}

type Registry = Mutex<HashMap<(u64, u64), Weak<SharedLock>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn next_serial() -> u64 {
    static SERIAL: AtomicU64 = AtomicU64::new(1);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// A handle on one dataset's lock. Cheap to clone; every handle of one process on one
/// dataset shares the same open lock file.
#[derive(Debug, Clone)]
pub struct DatasetLock {
    shared: Arc<SharedLock>,
    options: LockOptions,
}

impl DatasetLock {
    /// Opens the lock of the dataset directory `dataset`, creating its hidden folder
    /// and lock files when missing.
    pub fn open(dataset: &Path, options: LockOptions) -> Result<Self, LockError> {
        Self::open_with_mounts(dataset, options, mounts::node_local_locks)
    }

    /// [`Self::open`], with the mount check given (tests give a mount table of their own).
    fn open_with_mounts(
        dataset: &Path,
        options: LockOptions,
        node_local_locks: impl FnOnce(&Path) -> Option<(String, String)>,
    ) -> Result<Self, LockError> {
        let meta = std::fs::metadata(dataset)
            .ok()
            .filter(|m| m.is_dir())
            .ok_or_else(|| LockError::NoDataset(dataset.to_path_buf()))?;
        let dataset_mode = meta.mode();
        let hidden = dataset.join(os::HIDDEN_DIR);
        os::ensure_private_dir(&hidden, dataset_mode)
            .and_then(|()| hidden_node::ensure(dataset, &hidden, dataset_mode))
            .map_err(|source| LockError::Open {
                path: hidden.clone(),
                source,
            })?;
        let lock_path = hidden.join(os::LOCK_FILE);
        let gate_path = hidden.join(os::GATE_FILE);

        // Opened before taking the registry, so that slow opens (network filesystems)
        // of different datasets do not wait for each other; a descriptor not needed
        // because the process has one already is closed, which releases nothing
        // (flock belongs to the open file description that took it).
        let lock = os::open_lock_file(&lock_path, dataset_mode)?;
        let meta = lock.metadata().map_err(|source| LockError::Open {
            path: lock_path.clone(),
            source,
        })?;
        let key = (meta.dev(), meta.ino());
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        if let Some(shared) = map.get(&key).and_then(Weak::upgrade) {
            // After fork() the child finds its parent's entry: never reuse it, because
            // its descriptor shares the parent's flock.
            if shared.pid == pid {
                return Ok(Self { shared, options });
            }
        }
        let gate = os::open_lock_file(&gate_path, dataset_mode)?;
        let inherited = inherit::inherited(key.0, key.1, dataset)?;
        let shared = Arc::new(SharedLock {
            serial: next_serial(),
            pid,
            dataset: dataset.to_path_buf(),
            inherited: inherited.as_ref().map(|i| i.mode),
            inherited_descriptor: inherited.and_then(|i| i.descriptor),
            node_local: node_local_locks(dataset),
            os: OsLock {
                lock,
                gate,
                lock_path,
                gate_path,
            },
            state: Mutex::new(ProcessState::default()),
            changed: Condvar::new(),
        });
        map.retain(|_, weak| weak.strong_count() > 0);
        map.insert(key, Arc::downgrade(&shared));
        Ok(Self { shared, options })
    }

    /// The dataset directory this lock protects.
    pub fn dataset(&self) -> &Path {
        &self.shared.dataset
    }

    /// The (device, inode) of the lock file, as the kernel sees it.
    pub fn lock_file_id(&self) -> std::io::Result<(u64, u64)> {
        let meta = self.shared.os.lock.metadata()?;
        Ok((meta.dev(), meta.ino()))
    }

    /// The mode in which this thread holds the lock, if it does.
    pub fn held_by_this_thread(&self) -> Option<LockMode> {
        let lock = self.this_process().ok()?;
        HELD.with(|held| held.borrow().get(&lock.shared.serial).map(|h| h.mode))
    }

    /// This handle, or, in a child forked from the process that made it, the child's
    /// own handle on the same lock file. A forked child inherits its parent's open
    /// lock file, which shares the parent's flock, and a copy of the parent's
    /// bookkeeping; acting through either would let the child believe it holds a lock
    /// that its parent holds. The child opens a lock file of its own instead.
    fn this_process(&self) -> Result<std::borrow::Cow<'_, DatasetLock>, LockError> {
        if self.shared.pid == std::process::id() {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        DatasetLock::open(&self.shared.dataset, self.options.clone()).map(std::borrow::Cow::Owned)
    }

    /// Takes the read lock, waiting at most `timeout` (forever when `None`).
    /// Re-entrant: a thread holding the read or the write lock gets a new guard at once.
    pub fn read(&self, timeout: Option<Duration>) -> Result<ReadGuard, LockError> {
        let lock = self.this_process()?;
        lock.acquire(LockMode::Read, timeout, Yield::Never)?;
        Ok(ReadGuard {
            inner: GuardInner::new(lock.shared.clone()),
        })
    }

    /// Takes the write lock, waiting at most `timeout` (forever when `None`).
    /// Re-entrant for a thread holding the write lock; a thread holding only the read
    /// lock gets [`LockError::Upgrade`] at once.
    pub fn write(&self, timeout: Option<Duration>) -> Result<WriteGuard, LockError> {
        let lock = self.this_process()?;
        lock.write_in_this_process(timeout, Yield::Never)
    }

    /// Takes the write lock only if that needs no wait and no other process waits
    /// for the lock at the gate (a reader blocked behind the holder, or a queued
    /// writer: spec/locking.md §4); `Err(LockError::Timeout)` otherwise, as
    /// `write(Some(Duration::ZERO))` gives. Group commit's callers try the lock so:
    /// a caller that could always take the lock the instant it is released would keep
    /// out the waiters woken by that release, whose requests are committed already.
    pub fn write_behind_waiters(&self) -> Result<WriteGuard, LockError> {
        let lock = self.this_process()?;
        lock.write_in_this_process(Some(Duration::ZERO), Yield::ToWaiters)
    }

    fn write_in_this_process(
        &self,
        timeout: Option<Duration>,
        politeness: Yield,
    ) -> Result<WriteGuard, LockError> {
        if let Some((fstype, option)) = &self.shared.node_local {
            let allowed = self.options.allow_node_local_locks
                || std::env::var(ALLOW_NODE_LOCAL_ENV).is_ok_and(|v| v == "1");
            if !allowed {
                return Err(LockError::NodeLocalLocks {
                    dataset: self.shared.dataset.clone(),
                    fstype: fstype.clone(),
                    option: option.clone(),
                });
            }
        }
        self.acquire(LockMode::Write, timeout, politeness)?;
        Ok(WriteGuard {
            inner: GuardInner::new(self.shared.clone()),
        })
    }

    fn acquire(
        &self,
        mode: LockMode,
        timeout: Option<Duration>,
        politeness: Yield,
    ) -> Result<(), LockError> {
        let shared = &self.shared;
        let serial = shared.serial;
        // Re-entry: the thread already holds the lock.
        let reentered = HELD.with(|held| {
            let mut held = held.borrow_mut();
            match held.get_mut(&serial) {
                Some(h) if h.mode == LockMode::Write || mode == LockMode::Read => {
                    h.depth += 1;
                    Ok(true)
                }
                Some(_) => Err(LockError::Upgrade(shared.dataset.clone())),
                None => Ok(false),
            }
        })?;
        if reentered {
            return Ok(());
        }
        if mode == LockMode::Write && shared.inherited == Some(LockMode::Read) {
            return Err(LockError::InheritedShared(shared.dataset.clone()));
        }
        let started = Instant::now();
        // A timeout too long to be represented as an instant is waited out forever.
        let deadline = timeout.and_then(|t| started.checked_add(t));
        shared
            .acquire_in_process(mode, deadline, politeness)
            .map_err(|e| match e {
                AcquireFailure::TimedOut => LockError::Timeout {
                    dataset: shared.dataset.clone(),
                    mode,
                    waited: started.elapsed(),
                },
                AcquireFailure::Os(e) => e,
            })?;
        HELD.with(|held| held.borrow_mut().insert(serial, Held { mode, depth: 1 }));
        Ok(())
    }
}

/// Whether an acquisition that needs no wait still lets processes waiting at the
/// gate go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Yield {
    /// Take the lock whenever it is free (waiting as the timeout allows).
    Never,
    /// Take it only when it is free at once and nobody waits at the gate.
    ToWaiters,
}

enum AcquireFailure {
    TimedOut,
    Os(LockError),
}

impl SharedLock {
    fn lock_state(&self) -> MutexGuard<'_, ProcessState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits on the condition variable until notified or `deadline`.
    fn wait<'a>(
        &'a self,
        state: MutexGuard<'a, ProcessState>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, ProcessState> {
        let Some(deadline) = deadline else {
            return self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return state;
        }
        self.changed
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Whether the process must call flock (it does not when an ancestor holds the lock).
    fn needs_os_lock(&self) -> bool {
        self.inherited.is_none()
    }

    fn acquire_in_process(
        &self,
        mode: LockMode,
        deadline: Option<Instant>,
        politeness: Yield,
    ) -> Result<(), AcquireFailure> {
        let me = std::thread::current().id();
        let mut state = self.lock_state();
        if mode == LockMode::Write {
            state.waiting_writers += 1;
        }
        loop {
            let mut gate_closed = false;
            let free = !state.transitioning
                && match mode {
                    LockMode::Read => {
                        // Joining readers already holding the OS lock must still let a
                        // writer of another process, queued at the gate, go first.
                        gate_closed = state.readers > 0
                            && self.needs_os_lock()
                            && !self.os.gate_open().map_err(AcquireFailure::Os)?;
                        state.writer.is_none() && state.waiting_writers == 0 && !gate_closed
                    }
                    LockMode::Write => state.writer.is_none() && state.readers == 0,
                };
            if free {
                let first = state.readers == 0 && state.writer.is_none();
                if first && self.needs_os_lock() {
                    state.transitioning = true;
                    drop(state);
                    let got = match politeness {
                        Yield::Never => self.os.acquire(mode, deadline),
                        Yield::ToWaiters => self.os.try_behind_waiters(mode),
                    };
                    state = self.lock_state();
                    state.transitioning = false;
                    let outcome = match got {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(AcquireFailure::TimedOut),
                        Err(e) => Err(AcquireFailure::Os(e)),
                    };
                    if let Err(failure) = outcome {
                        if mode == LockMode::Write {
                            state.waiting_writers -= 1;
                        }
                        self.changed.notify_all();
                        return Err(failure);
                    }
                }
                match mode {
                    LockMode::Read => state.readers += 1,
                    LockMode::Write => {
                        state.waiting_writers -= 1;
                        state.writer = Some(me);
                    }
                }
                self.changed.notify_all();
                return Ok(());
            }
            // Nobody in this process is told when another process opens the gate: poll.
            let wake = if gate_closed {
                let poll = Instant::now() + Duration::from_millis(1);
                Some(deadline.map_or(poll, |d| d.min(poll)))
            } else {
                deadline
            };
            state = self.wait(state, wake);
            let in_time = deadline.is_none_or(|d| Instant::now() < d);
            if !in_time {
                if mode == LockMode::Write {
                    state.waiting_writers -= 1;
                    self.changed.notify_all();
                }
                return Err(AcquireFailure::TimedOut);
            }
        }
    }

    fn release_in_process(&self, mode: LockMode) {
        let mut state = self.lock_state();
        match mode {
            LockMode::Read => state.readers -= 1,
            LockMode::Write => state.writer = None,
        }
        if state.readers == 0 && state.writer.is_none() && self.needs_os_lock() {
            self.os.release();
        }
        self.changed.notify_all();
    }
}

/// The part common to both guards: releases at the outermost drop of the thread.
#[derive(Debug)]
struct GuardInner {
    shared: Arc<SharedLock>,
    /// Guards are tied to the thread whose bookkeeping they update.
    _not_send: PhantomData<*const ()>,
}

impl GuardInner {
    fn new(shared: Arc<SharedLock>) -> Self {
        Self {
            shared,
            _not_send: PhantomData,
        }
    }
}

impl Drop for GuardInner {
    fn drop(&mut self) {
        let serial = self.shared.serial;
        let released = HELD.with(|held| {
            let mut held = held.borrow_mut();
            let entry = held.get_mut(&serial)?;
            entry.depth -= 1;
            if entry.depth > 0 {
                return None;
            }
            held.remove(&serial).map(|h| h.mode)
        });
        // A guard copied into a forked child belongs to the parent: the child neither
        // touches the parent's bookkeeping nor unlocks the parent's flock.
        if let Some(mode) = released.filter(|_| self.shared.pid == std::process::id()) {
            self.shared.release_in_process(mode);
        }
    }
}

/// Proof that the current thread holds the dataset's lock at least for reading.
/// It offers no way to write.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct ReadGuard {
    inner: GuardInner,
}

/// Proof that the current thread holds the dataset's lock for writing.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct WriteGuard {
    inner: GuardInner,
}

impl ReadGuard {
    /// The dataset directory the guard locks.
    pub fn dataset(&self) -> &Path {
        &self.inner.shared.dataset
    }
}

impl WriteGuard {
    /// The dataset directory the guard locks.
    pub fn dataset(&self) -> &Path {
        &self.inner.shared.dataset
    }
}

/// A lock held by this process, prepared for a child process to share.
///
/// Holds a descriptor of the lock file that is NOT close-on-exec, so a child started
/// while it lives inherits it, and with it the flock: the lock then stays held until
/// both this process and the child have exited or released it. [`Self::env_value`]
/// names it for [`inherit::HELD_LOCK_ENV`].
#[derive(Debug)]
pub struct HandedDownLock {
    _descriptor: Option<std::os::fd::OwnedFd>,
    env_value: String,
}

impl HandedDownLock {
    /// The value to give [`inherit::HELD_LOCK_ENV`] in the child's environment
    /// (entries already inherited by this process are kept).
    pub fn env_value(&self) -> &str {
        &self.env_value
    }
}

/// Hands down the descriptor that carries the lock: our own lock file's, or, when an
/// ancestor holds the lock for us, our descriptor on the ancestor's (our own lock file
/// holds no lock then). An inherited lock without such a descriptor is passed on by
/// the inherited descriptor itself, which children inherit, and its entry.
fn hand_down(shared: &SharedLock, mode: LockMode) -> std::io::Result<HandedDownLock> {
    use std::os::fd::AsRawFd;
    let previous = std::env::var(inherit::HELD_LOCK_ENV).unwrap_or_default();
    let source = match (&shared.inherited, &shared.inherited_descriptor) {
        (None, _) => Some(rustix::io::dup(&shared.os.lock)?),
        (Some(_), Some(ancestors)) => Some(rustix::io::dup(ancestors.as_ref())?),
        (Some(_), None) => None,
    };
    let Some(descriptor) = source else {
        return Ok(HandedDownLock {
            _descriptor: None,
            env_value: previous,
        });
    };
    let meta = shared.os.lock.metadata()?;
    let own = inherit::format_entry(&inherit::HeldEntry {
        dev: meta.dev(),
        ino: meta.ino(),
        mode,
        fd: descriptor.as_raw_fd(),
        pid: Some(std::process::id()),
    });
    let env_value = if previous.is_empty() {
        own
    } else {
        format!("{previous};{own}")
    };
    Ok(HandedDownLock {
        _descriptor: Some(descriptor),
        env_value,
    })
}

impl ReadGuard {
    /// Prepares the held read lock to be shared with a child process.
    pub fn hand_down(&self) -> std::io::Result<HandedDownLock> {
        hand_down(&self.inner.shared, LockMode::Read)
    }
}

impl WriteGuard {
    /// Prepares the held write lock to be shared with a child process.
    pub fn hand_down(&self) -> std::io::Result<HandedDownLock> {
        hand_down(&self.inner.shared, LockMode::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset on an NFS mount without cross-node locks: write locks are refused with
    /// an error naming the option, unless the caller opts in; read locks are granted.
    #[test]
    fn write_locks_are_refused_on_node_local_mounts_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().canonicalize().unwrap();
        let mountinfo = format!(
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
             41 22 0:51 / {} rw,relatime - nfs server:/scratch rw,vers=3,nolock\n",
            mount_point.display()
        );
        let fake = |path: &Path| mounts::node_local_locks_in(&mountinfo, path);
        let lock = DatasetLock::open_with_mounts(dir.path(), LockOptions::default(), fake).unwrap();
        let err = lock.write(None).unwrap_err();
        assert!(
            matches!(&err, LockError::NodeLocalLocks { fstype, option, .. } if fstype == "nfs" && option == "nolock"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("nolock") && message.contains("SPATIALZARR_ALLOW_NODE_LOCAL_LOCKS"),
            "{message}"
        );
        drop(lock.read(None).expect("read locks are granted"));
        let allowed = DatasetLock {
            shared: lock.shared.clone(),
            options: LockOptions {
                allow_node_local_locks: true,
            },
        };
        drop(allowed.write(None).expect("the caller opted in"));
    }
}
