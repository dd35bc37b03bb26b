//! fork() without exec: a child never shares, nor acts through, its parent's lock.
//!
//! This test has its own `main` (no test harness): fork() is only sound in a process
//! with a single thread, and the harness runs tests on threads of its own. Each case
//! forks a child that checks what it can take and reports through its exit status.

use std::path::Path;
use std::time::{Duration, Instant};

use spatialzarr::lock::{DatasetLock, LockError, LockOptions};
use spatialzarr::{Dataset, DatasetOptions, Error, RasterOptions};

const SHORT: Option<Duration> = Some(Duration::from_millis(200));

/// Starts `child` in a forked copy of this process; the child exits with 0 when
/// `child` returns `Ok`, 1 otherwise. Returns the child's pid.
fn fork_child(child: impl FnOnce() -> Result<(), String>) -> Result<rustix::process::Pid, String> {
    // SAFETY: this process has a single thread (no harness, no thread started), so
    // the child starts from a consistent copy of every lock and of the allocator.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork failed: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // A panic must not unwind into the parent's code (the copy of `main`).
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
        let code = match outcome {
            Ok(Ok(())) => 0,
            Ok(Err(message)) => {
                eprintln!("child: {message}");
                1
            }
            Err(_) => 2,
        };
        // Leave without running the destructors of values copied from the parent.
        std::process::exit(code);
    }
    rustix::process::Pid::from_raw(pid).ok_or_else(|| "fork returned pid 0".to_string())
}

/// Waits for a forked child; `Ok` when it exited with status 0.
fn wait_child(pid: rustix::process::Pid) -> Result<(), String> {
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .map_err(|e| format!("waitpid: {e}"))?
        .ok_or("waitpid returned no status")?;
    match status.exit_status() {
        Some(0) => Ok(()),
        other => Err(format!("child failed (exit status {other:?})")),
    }
}

/// Runs `child` in a forked copy of this process and waits for it.
fn in_forked_child(child: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    wait_child(fork_child(child)?)
}

/// The child must time out, having waited the whole timeout.
fn expect_timeout<T>(what: &str, result: Result<T, LockError>) -> Result<(), String> {
    match result {
        Err(LockError::Timeout { waited, .. }) if waited >= SHORT.unwrap() => Ok(()),
        Err(other) => Err(format!("{what}: expected a timeout, got {other}")),
        Ok(_) => Err(format!("{what}: got a lock that another process holds")),
    }
}

fn open(dir: &Path) -> Result<DatasetLock, String> {
    DatasetLock::open(dir, LockOptions::default()).map_err(|e| e.to_string())
}

/// The parent holds the write lock across fork(): neither the parent's handle nor a
/// new one gives the child the lock, in either mode, and the thread's bookkeeping
/// copied from the parent does not make the child re-enter it.
fn child_cannot_share_a_held_write_lock(dir: &Path) -> Result<(), String> {
    let lock = open(dir)?;
    let _guard = lock.write(None).map_err(|e| e.to_string())?;
    in_forked_child(|| {
        if lock.held_by_this_thread().is_some() {
            return Err("the child believes it holds its parent's lock".into());
        }
        expect_timeout("write through the parent's handle", lock.write(SHORT))?;
        expect_timeout("read through the parent's handle", lock.read(SHORT))?;
        expect_timeout("write through a new handle", open(dir)?.write(SHORT))?;
        Ok(())
    })
}

/// The parent holds the read lock across fork(): the child may read alongside it
/// but not write; no upgrade error either, since the child holds nothing.
fn child_reads_beside_a_parent_reader_but_cannot_write(dir: &Path) -> Result<(), String> {
    let lock = open(dir)?;
    let _guard = lock.read(None).map_err(|e| e.to_string())?;
    in_forked_child(|| {
        let read = lock.read(SHORT).map_err(|e| format!("shared read: {e}"))?;
        drop(read);
        expect_timeout("write beside the parent's reader", lock.write(SHORT))
    })
}

/// A guard copied into the child and dropped there does not release the parent's lock.
fn dropping_a_copied_guard_does_not_unlock_the_parent(dir: &Path) -> Result<(), String> {
    let lock = open(dir)?;
    // The closure borrows the slot: only the child's copy of the guard is dropped.
    let mut slot = Some(lock.write(None).map_err(|e| e.to_string())?);
    in_forked_child(|| {
        drop(slot.take());
        expect_timeout(
            "write after dropping the copied guard",
            open(dir)?.write(SHORT),
        )
    })?;
    // The parent still holds its lock: a second child still cannot take it.
    in_forked_child(|| expect_timeout("write in a second child", open(dir)?.write(SHORT)))
}

/// A lock the child takes through its parent's handle is a real lock: while the child
/// holds it, the parent waits.
fn a_lock_taken_in_the_child_excludes_the_parent(dir: &Path) -> Result<(), String> {
    let lock = open(dir)?;
    let held = dir.join("child-holds");
    let release = dir.join("child-may-release");
    let child = fork_child(|| {
        let _guard = lock
            .write(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        std::fs::write(&held, "").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !release.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !held.exists() {
        if Instant::now() > deadline {
            return Err("the child never took the lock".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let outcome = expect_timeout("parent write while the child holds", lock.write(SHORT));
    std::fs::write(&release, "").map_err(|e| e.to_string())?;
    let exited = wait_child(child);
    outcome?;
    exited?;
    // Released by the child: the parent gets it now.
    lock.write(Some(Duration::from_secs(10)))
        .map(drop)
        .map_err(|e| format!("parent after the child released: {e}"))
}

/// A transaction open in the parent's thread at fork() is not joined by the child's
/// writes: the child waits for the lock like any other process.
fn child_does_not_join_the_parents_open_transaction(dir: &Path) -> Result<(), String> {
    let path = dir.join("ds.zarr");
    let options = DatasetOptions {
        lock_timeout: SHORT,
        ..DatasetOptions::default()
    };
    let ds = Dataset::create(&path, options).map_err(|e| e.to_string())?;
    let pixels = ndarray::ArrayD::<u32>::from_elem(vec![4, 4], 7);
    let txn = ds.write().map_err(|e| e.to_string())?;
    in_forked_child(|| {
        match ds.add_labels("from_child", pixels.view(), &RasterOptions::default()) {
            Err(Error::Lock(LockError::Timeout { .. })) => Ok(()),
            Err(other) => Err(format!("expected a lock timeout, got {other}")),
            Ok(_) => Err("the child's add joined its parent's transaction".into()),
        }
    })?;
    txn.commit().map_err(|e| e.to_string())?;
    let labels = ds.list().map_err(|e| e.to_string())?.labels;
    if !labels.is_empty() {
        return Err(format!(
            "unexpected labels after the child's attempt: {labels:?}"
        ));
    }
    Ok(())
}

/// One case: given a fresh folder, `Ok` when it holds.
type Case = fn(&Path) -> Result<(), String>;

fn main() {
    let cases: [(&str, Case); 5] = [
        (
            "child_cannot_share_a_held_write_lock",
            child_cannot_share_a_held_write_lock,
        ),
        (
            "child_reads_beside_a_parent_reader_but_cannot_write",
            child_reads_beside_a_parent_reader_but_cannot_write,
        ),
        (
            "dropping_a_copied_guard_does_not_unlock_the_parent",
            dropping_a_copied_guard_does_not_unlock_the_parent,
        ),
        (
            "a_lock_taken_in_the_child_excludes_the_parent",
            a_lock_taken_in_the_child_excludes_the_parent,
        ),
        (
            "child_does_not_join_the_parents_open_transaction",
            child_does_not_join_the_parents_open_transaction,
        ),
    ];
    let mut failed = 0;
    for (name, case) in cases {
        let dir = tempfile::tempdir().expect("temporary folder");
        match case(dir.path()) {
            Ok(()) => println!("test {name} ... ok"),
            Err(message) => {
                failed += 1;
                println!("test {name} ... FAILED: {message}");
            }
        }
    }
    println!("fork: {} passed, {failed} failed", cases.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
