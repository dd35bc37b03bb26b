//! The dataset lock across threads and real processes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{LiveWorker, read_counter, report, run_all, worker};
use spatialzarr::lock::{DatasetLock, LockError, LockMode, LockOptions};

fn open(dir: &Path) -> DatasetLock {
    DatasetLock::open(dir, LockOptions::default()).expect("open lock")
}

/// Read-modify-write of a counter file under the write lock, with a pause between the
/// read and the write so that an unprotected update would be lost.
fn increment(lock: &DatasetLock, counter: &Path) {
    let _guard = lock.write(None).expect("write lock");
    let value = read_counter(counter);
    std::thread::sleep(Duration::from_micros(500));
    std::fs::write(counter, format!("{}", value + 1)).expect("write counter");
}

fn increment_threads(dir: &Path, threads: usize, rounds: usize) {
    let lock = open(dir);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let lock = lock.clone();
            scope.spawn(move || {
                for _ in 0..rounds {
                    increment(&lock, &dir.join("counter"));
                }
            });
        }
    });
}

/// Entry point of the worker processes; does nothing unless spawned as one.
#[test]
#[ignore = "worker process entry point, run by the other tests"]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    let dir = Path::new(&args[0]);
    match role.as_str() {
        "increment" => {
            let threads: usize = args[1].parse().unwrap();
            let rounds: usize = args[2].parse().unwrap();
            increment_threads(dir, threads, rounds);
        }
        "overlapping-reader" => {
            let me: usize = args[1].parse().unwrap();
            let total: usize = args[2].parse().unwrap();
            let lock = open(dir);
            let _guard = lock.read(None).unwrap();
            std::fs::write(dir.join(format!("reader-{me}")), "").unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            // Every reader waits, lock held, until all readers hold the lock.
            while (0..total).any(|i| !dir.join(format!("reader-{i}")).exists()) {
                assert!(Instant::now() < deadline, "readers did not overlap");
                std::thread::sleep(Duration::from_millis(5));
            }
            report("overlapped");
        }
        "hold" => {
            let mode = if args[1] == "read" {
                LockMode::Read
            } else {
                LockMode::Write
            };
            let lock = open(dir);
            let _guard_read;
            let _guard_write;
            if mode == LockMode::Read {
                _guard_read = lock.read(None).unwrap();
            } else {
                _guard_write = lock.write(None).unwrap();
            }
            report("held");
            // Hold until killed.
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "wait-write" => {
            let lock = open(dir);
            report("waiting");
            let _guard = lock.write(None).unwrap();
            report("acquired");
        }
        "try-write" => {
            let lock = open(dir);
            match lock.write(Some(Duration::ZERO)) {
                Ok(_) => report("free"),
                Err(LockError::Timeout { .. }) => report("busy"),
                Err(e) => panic!("{e}"),
            }
        }
        "read-once" => {
            // Blocks behind the holder, then marks (holding the lock) that it got in.
            let lock = open(dir);
            report("waiting");
            let guard = lock.read(None).unwrap();
            std::fs::write(dir.join("reader-got-in"), "").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(guard);
            report("done");
        }
        "try-behind-waiters" => {
            // Tries the write lock behind waiters as fast as it can, until it gets it;
            // says whether the blocked reader was in first.
            let lock = open(dir);
            report("trying");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match lock.write_behind_waiters() {
                    Ok(_guard) => {
                        let first = dir.join("reader-got-in").exists();
                        report(if first {
                            "after-reader"
                        } else {
                            "ahead-of-reader"
                        });
                        break;
                    }
                    Err(LockError::Timeout { .. }) => {
                        assert!(Instant::now() < deadline, "never got the lock");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        "reader-loop" => {
            // Keeps read locks overlapping: hold, pause, take the next before releasing
            // is impossible on one thread, so two threads alternate.
            let lock = open(dir);
            let stop = dir.join("stop");
            std::thread::scope(|scope| {
                for offset in 0..2u64 {
                    let lock = lock.clone();
                    let stop = stop.clone();
                    scope.spawn(move || {
                        std::thread::sleep(Duration::from_millis(3 * offset));
                        while !stop.exists() {
                            let _guard = lock.read(None).unwrap();
                            std::thread::sleep(Duration::from_millis(6));
                        }
                    });
                }
            });
        }
        other => panic!("unknown role {other}"),
    }
}

fn args(dir: &Path, rest: &[&str]) -> Vec<String> {
    std::iter::once(dir.display().to_string())
        .chain(rest.iter().map(|s| s.to_string()))
        .collect()
}

#[test]
fn eight_processes_increment_exactly() {
    let dir = common::tempdir();
    let workers = (0..8)
        .map(|_| worker("increment", &args(dir.path(), &["1", "50"])))
        .collect();
    run_all(workers);
    assert_eq!(read_counter(&dir.path().join("counter")), 400);
}

#[test]
fn eight_threads_increment_exactly() {
    let dir = common::tempdir();
    increment_threads(dir.path(), 8, 50);
    assert_eq!(read_counter(&dir.path().join("counter")), 400);
}

#[test]
fn four_processes_of_four_threads_increment_exactly() {
    let dir = common::tempdir();
    let workers = (0..4)
        .map(|_| worker("increment", &args(dir.path(), &["4", "25"])))
        .collect();
    run_all(workers);
    assert_eq!(read_counter(&dir.path().join("counter")), 400);
}

#[test]
fn four_reader_processes_overlap() {
    let dir = common::tempdir();
    let workers = (0..4)
        .map(|i| {
            worker(
                "overlapping-reader",
                &args(dir.path(), &[&i.to_string(), "4"]),
            )
        })
        .collect();
    let reports = run_all(workers);
    assert!(reports.iter().all(|r| r == &["overlapped"]), "{reports:?}");
}

fn nested_read(lock: &DatasetLock) -> Result<(), LockError> {
    let _read = lock.read(None)?;
    assert_eq!(lock.held_by_this_thread(), Some(LockMode::Write));
    Ok(())
}

fn nested_write_then_read(lock: &DatasetLock) -> Result<(), LockError> {
    let _write = lock.write(None)?;
    nested_read(lock)
}

fn other_process_sees(dir: &Path) -> String {
    let reports = run_all(vec![worker("try-write", &args(dir, &[]))]);
    reports[0][0].clone()
}

#[test]
fn reentrant_nesting_releases_at_outermost_drop() {
    let dir = common::tempdir();
    let lock = open(dir.path());
    let outer = lock.write(None).unwrap();
    nested_write_then_read(&lock).unwrap();
    // The inner guards are gone; the outer one still holds the lock.
    assert_eq!(lock.held_by_this_thread(), Some(LockMode::Write));
    assert_eq!(other_process_sees(dir.path()), "busy");
    drop(outer);
    assert_eq!(lock.held_by_this_thread(), None);
    assert_eq!(other_process_sees(dir.path()), "free");
}

#[test]
fn read_to_write_upgrade_is_refused() {
    let dir = common::tempdir();
    let lock = open(dir.path());
    let read = lock.read(None).unwrap();
    let started = Instant::now();
    let err = lock.write(None).unwrap_err();
    assert!(matches!(err, LockError::Upgrade(_)), "{err}");
    assert!(err.to_string().contains("drop the read guard"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The refused upgrade did not drop the read lock: a writer elsewhere is blocked.
    assert_eq!(lock.held_by_this_thread(), Some(LockMode::Read));
    assert_eq!(other_process_sees(dir.path()), "busy");
    drop(read);
    assert_eq!(other_process_sees(dir.path()), "free");
}

#[test]
fn read_reenters_while_a_writer_waits() {
    // A thread holding read takes read again even though a writer of the same
    // process is queued: refusing would deadlock.
    let dir = common::tempdir();
    let lock = open(dir.path());
    let outer = lock.read(None).unwrap();
    let writer = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.write(Some(Duration::from_secs(30))).map(drop))
    };
    std::thread::sleep(Duration::from_millis(50));
    let inner = lock.read(Some(Duration::from_millis(100))).unwrap();
    drop(inner);
    drop(outer);
    writer.join().unwrap().unwrap();
}

#[test]
fn timeout_names_dataset_mode_and_wait() {
    let dir = common::tempdir();
    let holder = LiveWorker::spawn(worker("hold", &args(dir.path(), &["write"])));
    holder.expect("held");
    let lock = open(dir.path());
    let started = Instant::now();
    let err = lock.write(Some(Duration::from_millis(200))).unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    match &err {
        LockError::Timeout {
            dataset,
            mode,
            waited,
        } => {
            assert_eq!(dataset, dir.path());
            assert_eq!(*mode, LockMode::Write);
            assert!(*waited >= Duration::from_millis(200));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("write lock") && message.contains(&dir.path().display().to_string()));
    // Reads time out the same way while a writer holds the lock.
    assert!(matches!(
        lock.read(Some(Duration::from_millis(50))),
        Err(LockError::Timeout {
            mode: LockMode::Read,
            ..
        })
    ));
}

#[test]
fn killed_holder_releases_within_a_second() {
    let dir = common::tempdir();
    let mut holder = LiveWorker::spawn(worker("hold", &args(dir.path(), &["write"])));
    holder.expect("held");
    let waiter = LiveWorker::spawn(worker("wait-write", &args(dir.path(), &[])));
    waiter.expect("waiting");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        waiter.next(Duration::from_millis(10)),
        None,
        "waiter got a held lock"
    );
    let killed = Instant::now();
    holder.child.kill().unwrap(); // SIGKILL
    holder.child.wait().unwrap();
    assert_eq!(
        waiter.next(Duration::from_secs(5)).as_deref(),
        Some("acquired")
    );
    let handoff = killed.elapsed();
    assert!(handoff < Duration::from_secs(1), "handoff took {handoff:?}");
}

/// A process that tries the write lock behind waiters (as group commit's callers do)
/// never takes it ahead of a reader blocked behind the holder, however fast it tries
/// again: the reader holds the gate shared while it waits (spec/locking.md §4).
#[test]
fn a_try_behind_waiters_lets_a_blocked_reader_in_first() {
    for run in 0..5 {
        let dir = common::tempdir();
        let lock = open(dir.path());
        let held = lock.write(None).unwrap();
        let reader = LiveWorker::spawn(worker("read-once", &args(dir.path(), &[])));
        reader.expect("waiting");
        // The reader waits at the gate once it holds it shared.
        let gate = std::fs::File::open(dir.path().join(".spatialzarr/gate")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while gate.try_lock().is_ok() {
            gate.unlock().unwrap();
            assert!(
                Instant::now() < deadline,
                "the reader never waited at the gate"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let trier = LiveWorker::spawn(worker("try-behind-waiters", &args(dir.path(), &[])));
        trier.expect("trying");
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        trier.expect("after-reader");
        reader.expect("done");
        assert!(
            lock.write(Some(Duration::from_secs(10))).is_ok(),
            "run {run}"
        );
    }
}

#[test]
fn writer_is_not_starved_by_overlapping_readers() {
    let dir = common::tempdir();
    let readers: Vec<LiveWorker> = (0..4)
        .map(|_| LiveWorker::spawn(worker("reader-loop", &args(dir.path(), &[]))))
        .collect();
    let lock = open(dir.path());
    // Make sure the readers are running before measuring.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock.write(Some(Duration::ZERO)).is_ok() {
        assert!(Instant::now() < deadline, "readers never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    for run in 0..20 {
        // Odd runs wait without a timeout (blocking flock on the gate, then the lock),
        // watched from here; even runs poll until their deadline.
        let waited = if run % 2 == 1 {
            let (sender, receiver) = std::sync::mpsc::channel();
            let writer = lock.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let guard = writer.write(None);
                let waited = started.elapsed();
                let _ = sender.send(guard.map(drop).map(|()| waited));
            });
            receiver
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("run {run}: a writer without timeout starved for 10 s"))
                .unwrap_or_else(|e| panic!("run {run}: {e}"))
        } else {
            let started = Instant::now();
            let guard = lock
                .write(Some(Duration::from_secs(2)))
                .unwrap_or_else(|e| panic!("run {run}: {e}"));
            drop(guard);
            started.elapsed()
        };
        assert!(
            waited < Duration::from_secs(2),
            "run {run}: waited {waited:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(dir.path().join("stop"), "").unwrap();
    for mut reader in readers {
        assert!(reader.child.wait().unwrap().success());
    }
}

#[test]
fn lock_file_inode_survives_ten_thousand_cycles() {
    use std::os::unix::fs::MetadataExt;
    let dir = common::tempdir();
    let lock = open(dir.path());
    let path = dir.path().join(".spatialzarr/lock");
    let before = std::fs::metadata(&path).unwrap().ino();
    for i in 0..10_000 {
        if i % 2 == 0 {
            drop(lock.write(None).unwrap());
        } else {
            drop(lock.read(None).unwrap());
        }
        if i % 1000 == 0 {
            // A fresh handle in the same process shares the open lock file.
            drop(open(dir.path()).write(None).unwrap());
        }
    }
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), before);
    assert_eq!(lock.lock_file_id().unwrap().1, before);
}

#[test]
fn two_handles_in_one_process_share_one_lock() {
    // Two opens of the same dataset must not conflict with each other (flock is per
    // open file, so a second open file would deadlock against the first).
    let dir = common::tempdir();
    let a = open(dir.path());
    let b = open(dir.path());
    let _outer = a.write(None).unwrap();
    let _inner = b.write(Some(Duration::from_millis(100))).unwrap();
    let other = Arc::new(open(dir.path()));
    let handle = std::thread::spawn(move || other.read(Some(Duration::from_millis(100))).is_err());
    assert!(
        handle.join().unwrap(),
        "another thread read while this thread wrote"
    );
}

#[test]
fn missing_dataset_is_a_clear_error() {
    let dir = common::tempdir();
    let err = DatasetLock::open(&dir.path().join("absent"), LockOptions::default()).unwrap_err();
    assert!(matches!(err, LockError::NoDataset(_)));
    assert!(err.to_string().contains("absent"));
}

#[test]
fn lock_files_follow_group_permissions_and_are_never_world_writable() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = common::tempdir();
    let dataset = dir.path().join("shared");
    std::fs::create_dir(&dataset).unwrap();
    std::fs::set_permissions(&dataset, std::fs::Permissions::from_mode(0o2777)).unwrap();
    open(&dataset);
    let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
    let mode = |p: &str| mode_of(&dataset.join(p));
    assert_eq!(mode(".spatialzarr/lock") & 0o777, 0o664);
    assert_eq!(mode(".spatialzarr/gate") & 0o777, 0o664);
    assert_eq!(mode(".spatialzarr") & 0o7777, 0o2775);
    // Nothing but the lock files is left in the hidden folder or the dataset
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // (and the document declaring the folder a zero-size Zarr array, spec/format.md).
    assert_eq!(mode(".spatialzarr/zarr.json") & 0o777, 0o664);
    assert_eq!(
        names(&dataset.join(".spatialzarr")),
        vec!["gate", "lock", "zarr.json"]
    );
    assert_eq!(names(&dataset), vec![".spatialzarr"]);
    // A creator whose umask shuts out group and others still leaves the group in.
    let strict = dir.path().join("strict");
    std::fs::create_dir(&strict).unwrap();
    std::fs::set_permissions(&strict, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let script = format!(
        "umask 077; exec {} lock {} -- true",
        common::cli().display(),
        strict.display()
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    let strict_mode = |p: &str| mode_of(&strict.join(p));
    assert_eq!(strict_mode(".spatialzarr") & 0o7777, 0o2770);
    assert_eq!(strict_mode(".spatialzarr/lock") & 0o777, 0o660);
    assert_eq!(strict_mode(".spatialzarr/zarr.json") & 0o777, 0o660);
    assert_eq!(
        names(&strict.join(".spatialzarr")),
        vec!["gate", "lock", "zarr.json"]
    );

    // A group-only dataset (setgid, group `users`), used by another member of that
    // group: the lock files belong to the group, and the other user takes the lock.
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: the part with a second user is skipped");
        return;
    }
    const USERS: u32 = 100;
    const NOBODY: u32 = 65534;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let team = dir.path().join("team");
    std::fs::create_dir(&team).unwrap();
    std::os::unix::fs::chown(&team, None, Some(USERS)).unwrap();
    std::fs::set_permissions(&team, std::fs::Permissions::from_mode(0o2770)).unwrap();
    open(&team);
    for entry in [".spatialzarr", ".spatialzarr/lock", ".spatialzarr/gate"] {
        let meta = std::fs::metadata(team.join(entry)).unwrap();
        assert_eq!(meta.gid(), USERS, "{entry} is not the group's");
        assert_eq!(meta.mode() & 0o007, 0, "{entry} is open to others");
    }
    // `spatialzarr lock` run as `nobody` whose group is `gid`.
    let as_nobody = |gid: u32| {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(common::cli())
            .args([
                "lock",
                team.to_str().unwrap(),
                "--timeout",
                "5",
                "--",
                "true",
            ])
            .uid(NOBODY)
            .gid(gid)
            .output()
            .unwrap()
    };
    let out = as_nobody(USERS);
    assert!(
        out.status.success(),
        "the other group member could not take the lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Someone outside the group cannot.
    let out = as_nobody(NOBODY);
    assert_eq!(out.status.code(), Some(1), "an outsider took the lock");
}

#[test]
fn timeout_beyond_any_instant_waits_without_limit() {
    let dir = tempfile::tempdir().unwrap();
    let lock = open(dir.path());
    let guard = lock
        .write(Some(Duration::MAX))
        .expect("write with Duration::MAX");
    drop(guard);
    let guard = lock
        .read(Some(Duration::MAX))
        .expect("read with Duration::MAX");
    drop(guard);
}

/// Lock files are close-on-exec: a program started while the lock is held inherits no
/// descriptor of them (only `spatialzarr lock` hands one down, on purpose).
#[test]
fn programs_started_under_the_lock_inherit_no_lock_descriptor() {
    let dir = common::tempdir();
    let lock = open(dir.path());
    let write = lock.write(None).unwrap();
    // `ls -l` lists its own descriptors with their targets (`3 -> /path`).
    let out = std::process::Command::new("ls")
        .args(["-l", "/proc/self/fd/"])
        .output()
        .unwrap();
    let open_files = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && open_files.contains(" -> "),
        "{open_files}"
    );
    assert!(
        !open_files.contains(".spatialzarr"),
        "the child inherited: {open_files}"
    );
    drop(write);
    // The same listing sees the one descriptor `spatialzarr lock` hands down.
    let out = std::process::Command::new(common::cli())
        .arg("lock")
        .arg(dir.path())
        .args(["--", "ls", "-l", "/proc/self/fd/"])
        .output()
        .unwrap();
    let open_files = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        open_files.matches(".spatialzarr/lock").count(),
        1,
        "{open_files}"
    );
    assert!(!open_files.contains(".spatialzarr/gate"), "{open_files}");
}
