//! Two nodes, one dataset: the store on a real multi-client filesystem.
//!
//! A GlusterFS volume mounted twice by independent FUSE clients (`tests/common/
//! cluster.rs`, `scripts/multinode.sh`) behaves like two cluster nodes sharing a
//! network filesystem: each mount is its own lock owner and its own client, flock is
//! emulated by POSIX locks as on NFS, and killing a mount's client is a node dying.
//! Every test runs real processes (this test binary as a library worker, and the
//! CLI), some on node A's mount and some on node B's, on one dataset.
//!
//! Where the cluster cannot start, each test prints `SKIP name: reason` and returns;
//! under CI (`CI=true`) it fails instead. `SPATIALZARR_MULTINODE_LONG=1` runs the
//! bigger forms (more writers' work, the kill -9 suite with more kills).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use cluster::Node;
use common::{LiveWorker, s};
use ndarray::{ArrayD, IxDyn};
use spatialzarr::lock::{DatasetLock, LockOptions};
use spatialzarr::storage::trace::{FsObserver, FsOp, set_observer};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions, RasterOptions};

/// How long a report may take before the test calls it a hang (GlusterFS makes every
/// metadata operation a round trip; a 2-core machine runs other tests beside).
const REPORT_WAIT: Duration = Duration::from_secs(120);

fn long_form() -> bool {
    std::env::var("SPATIALZARR_MULTINODE_LONG").is_ok_and(|v| v == "1")
}

/// Two nodes, a fresh folder for the test on the volume, and the test's turn.
struct Setup {
    _turn: std::sync::MutexGuard<'static, ()>,
    a: Node,
    b: Node,
    /// The test's folder, relative to the volume's root.
    folder: PathBuf,
    /// Local scratch (not on the volume) for go-files and inputs.
    local: tempfile::TempDir,
}

impl Setup {
    fn new(test: &str) -> Option<Self> {
        let cluster = cluster::cluster(test)?;
        let turn = cluster::serial();
        let a = cluster.node("a");
        let b = cluster.node("b");
        let folder = PathBuf::from(test);
        std::fs::create_dir_all(a.path(&folder)).expect("make the test's folder");
        Some(Self {
            _turn: turn,
            a,
            b,
            folder,
            local: common::tempdir(),
        })
    }

    /// The dataset `ds.zarr` of this test as seen from node A and from node B.
    fn paths(&self) -> (PathBuf, PathBuf) {
        let relative = self.folder.join("ds.zarr");
        (self.a.path(&relative), self.b.path(&relative))
    }

    /// Creates the dataset through node A; returns its paths on A and B.
    fn dataset(&self) -> (PathBuf, PathBuf) {
        let (a, b) = self.paths();
        common::sz_ok(&["init", s(&a)]);
        (a, b)
    }

    /// A local file that a worker waits for before going on.
    fn go_file(&self, name: &str) -> PathBuf {
        self.local.path().join(name)
    }
}

fn release(file: &Path) {
    std::fs::write(file, b"go").expect("write go-file");
}

fn wait_go(file: &Path) {
    let parent = std::os::unix::process::parent_id();
    while !file.exists() {
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn live(role: &str, args: &[&str]) -> LiveWorker {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    LiveWorker::spawn(common::worker(role, &args))
}

/// A `hold` worker on `dataset` in `mode` (`read`/`write`) that keeps the lock until
/// the file `go` appears, returned once it reports the lock held.
fn holding(dataset: &Path, mode: &str, go: &Path) -> LiveWorker {
    let worker = live("hold", &[s(dataset), mode, s(go)]);
    expect_report(&worker, "waiting");
    expect_report(&worker, "held");
    worker
}

fn expect_report(worker: &LiveWorker, expected: &str) {
    let line = worker.next(REPORT_WAIT);
    assert_eq!(line.as_deref(), Some(expected), "worker report");
}

fn next_report(worker: &LiveWorker) -> String {
    worker
        .next(REPORT_WAIT)
        .unwrap_or_else(|| panic!("no report from the worker within {REPORT_WAIT:?}"))
}

fn mode_of(word: &str) -> bool {
    match word {
        "write" => true,
        "read" => false,
        other => panic!("unknown lock mode {other}"),
    }
}

fn labels(seed: u32, rows: usize, cols: usize) -> ArrayD<u32> {
    ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |ix| {
        seed.wrapping_mul(1000) + (ix[0] * cols + ix[1]) as u32
    })
}

fn npy(dir: &Path, name: &str, array: &ArrayD<u32>) -> PathBuf {
    let path = dir.join(name);
    ndarray_npy::write_npy(&path, array).expect("write npy");
    path
}

fn lock_secs(seconds: f64) -> Option<Duration> {
    (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

// ---------------------------------------------------------------------------------
// Workers.

#[test]
#[ignore = "worker process entry point, run by the other tests"]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match role.as_str() {
        "hold" => hold(Path::new(a[0]), mode_of(a[1]), Path::new(a[2])),
        "try" => try_lock(
            Path::new(a[0]),
            mode_of(a[1]),
            a[2].parse().expect("seconds"),
        ),
        "reentrant" => reentrant(Path::new(a[0]), Path::new(a[1]), Path::new(a[2])),
        "writer" => writer(
            Path::new(a[0]),
            a[1].parse().expect("worker"),
            a[2].parse().expect("ops"),
        ),
        "pause-commit" => pause_commit(Path::new(a[0]), a[1], Path::new(a[2])),
        "overwriter" => overwriter(Path::new(a[0]), a[1].parse().expect("versions")),
        "locked-reader" => locked_reader(Path::new(a[0]), Path::new(a[1])),
        other => panic!("unknown role {other}"),
    }
}

/// Takes the lock (waiting as long as it takes), reports `held`, keeps it until
/// `go` exists, then reports `released`.
fn hold(path: &Path, write: bool, go: &Path) {
    let lock = DatasetLock::open(path, LockOptions::default()).expect("open the lock");
    common::report("waiting");
    if write {
        let _guard = lock.write(None).expect("write lock");
        common::report("held");
        wait_go(go);
    } else {
        let _guard = lock.read(None).expect("read lock");
        common::report("held");
        wait_go(go);
    }
    common::report("released");
}

/// Tries the lock for `seconds`: reports `got` or `timeout: <message>`.
fn try_lock(path: &Path, write: bool, seconds: f64) {
    let lock = DatasetLock::open(path, LockOptions::default()).expect("open the lock");
    let timeout = lock_secs(seconds);
    let outcome = if write {
        lock.write(timeout).map(drop)
    } else {
        lock.read(timeout).map(drop)
    };
    match outcome {
        Ok(()) => common::report("got"),
        Err(e) => common::report(&format!("timeout: {e}")),
    }
}

/// Re-entrancy on the mount: a transaction, a nested add that joins it, a second
/// handle on the same dataset through another path (write and read again, then
/// dropped), and the lock still held afterwards; commits once `go` exists.
fn reentrant(path: &Path, other_path: &Path, go: &Path) {
    let ds = Dataset::open(path, DatasetOptions::default()).expect("open");
    let mut txn = ds.write().expect("write transaction");
    txn.add_raster(
        spatialzarr::ElementKind::Labels,
        "outer",
        labels(1, 4, 4).view(),
        &RasterOptions::default(),
        false,
    )
    .expect("add in the transaction");
    // A plain add on this thread joins the open transaction instead of deadlocking.
    ds.add_labels("nested", labels(2, 4, 4).view(), &RasterOptions::default())
        .expect("nested add");
    {
        let other = Dataset::open(other_path, DatasetOptions::default()).expect("open again");
        let lock = other.lock();
        let write = lock
            .write(Some(Duration::from_secs(1)))
            .expect("re-enter write");
        let read = lock
            .read(Some(Duration::from_secs(1)))
            .expect("re-enter read");
        drop(read);
        drop(write);
    }
    common::report("held");
    wait_go(go);
    let info = txn.commit().expect("commit");
    common::report(&format!("committed {}", info.generation));
}

fn rows(w: i64, op: i64, k: usize) -> RowBatch {
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from_iter_values(
                (0..k).map(|_| format!("w{w}_l0")),
            )) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(
                (0..k as i64).map(|s| op * 1000 + s),
            )),
        ),
        (
            "worker",
            Arc::new(Int64Array::from_iter_values((0..k).map(|_| w))),
        ),
        (
            "op",
            Arc::new(Int64Array::from_iter_values((0..k).map(|_| op))),
        ),
        ("seq", Arc::new(Int64Array::from_iter_values(0..k as i64))),
    ])
    .expect("rows batch");
    RowBatch { obs, x: None }
}

fn points(w: i64, op: i64, k: usize) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "x",
            Arc::new(Float64Array::from_iter_values((0..k).map(|s| s as f64))) as ArrayRef,
        ),
        (
            "y",
            Arc::new(Float64Array::from_iter_values((0..k).map(|_| w as f64))),
        ),
        (
            "worker",
            Arc::new(Int64Array::from_iter_values((0..k).map(|_| w))),
        ),
        (
            "op",
            Arc::new(Int64Array::from_iter_values((0..k).map(|_| op))),
        ),
    ])
    .expect("points batch")
}

/// Rows per keyed append and points per part, in the writers' test.
const ROWS_PER_APPEND: usize = 20;
const POINTS_PER_PART: usize = 5;

/// Writer `w`: for each op `i`, adds labels `w{w}_l{i}`, appends rows with the key
/// `w{w}-r{i}` (and once more with the same key, which must append nothing) and a
/// points part with the key `w{w}-p{i}`.
fn writer(path: &Path, w: i64, ops: i64) {
    let ds = Dataset::open(path, DatasetOptions::default()).expect("open");
    let spec = TableSpec::default();
    for i in 0..ops {
        let name = format!("w{w}_l{i}");
        ds.add_labels(
            &name,
            labels(w as u32 * 100 + i as u32, 6, 5).view(),
            &RasterOptions::default(),
        )
        .unwrap_or_else(|e| panic!("writer {w}: add {name}: {e}"));
        let key = format!("w{w}-r{i}");
        let batch = rows(w, i, ROWS_PER_APPEND);
        let first = ds
            .append_rows("cells", &batch, Some(&spec), Some(&key))
            .unwrap_or_else(|e| panic!("writer {w}: append {key}: {e}"));
        let again = ds
            .append_rows("cells", &batch, Some(&spec), Some(&key))
            .unwrap_or_else(|e| panic!("writer {w}: append {key} again: {e}"));
        assert!(
            first.applied && !again.applied,
            "writer {w}: key {key}: {first:?} then {again:?}"
        );
        assert_eq!((first.start, first.end), (again.start, again.end));
        let key = format!("w{w}-p{i}");
        let part = ds
            .append_points("pts", &points(w, i, POINTS_PER_PART), Some(&key))
            .unwrap_or_else(|e| panic!("writer {w}: append points {key}: {e}"));
        assert!(part.applied, "writer {w}: points key {key} was new");
        common::report(&format!("ack {i} {} {}", first.start, first.end));
    }
    common::report("done");
}

/// Where in a commit [`Pause`] stops.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PausePoint {
    /// Before the journal is created: the commit is not decided.
    BeforeDecision,
    /// Right after the round that makes the journal durable (with its folder):
    /// decided, nothing applied.
    Decided,
    /// Before the new manifest is renamed into place: the element is in, metadata not all.
    Applying,
    /// Before the journal is removed: everything applied.
    BeforeJournalRemoval,
}

impl PausePoint {
    fn parse(word: &str) -> Self {
        match word {
            "before-decision" => Self::BeforeDecision,
            "decided" => Self::Decided,
            "applying" => Self::Applying,
            "before-journal-removal" => Self::BeforeJournalRemoval,
            other => panic!("unknown pause point {other}"),
        }
    }
}

/// An observer that stops the commit at one point until a go-file exists.
struct Pause {
    at: PausePoint,
    go: PathBuf,
    /// 0: journal not written yet; 1: written; 2: its fsync round announced (the
    /// round's fsyncs are announced before they run); 3: decided (the round ran).
    journal: std::sync::Mutex<u8>,
    paused: std::sync::atomic::AtomicBool,
}

fn is_journal(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "journal.json")
}

impl FsObserver for Pause {
    fn before(&self, op: &FsOp) -> std::io::Result<()> {
        let mut journal = self.journal.lock().unwrap();
        let announced = matches!(op, FsOp::Fsync(_) | FsOp::FsyncDir(_));
        if *journal == 2 && !announced {
            *journal = 3;
        }
        let stop = match (self.at, op, *journal) {
            (PausePoint::BeforeDecision, FsOp::CreateFile(p), 0) => is_journal(p),
            (PausePoint::Decided, _, 3) => true,
            (PausePoint::Applying, FsOp::Rename(_, to), 3) => {
                to.file_name().is_some_and(|n| n == "manifest.json")
            }
            (PausePoint::BeforeJournalRemoval, FsOp::Unlink(p), 3) => is_journal(p),
            _ => false,
        };
        match op {
            FsOp::Write(p, _) if *journal == 0 && is_journal(p) => *journal = 1,
            FsOp::FsyncRound(_) if *journal == 1 => *journal = 2,
            _ => {}
        }
        if stop && !self.paused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            drop(journal);
            common::report("paused");
            wait_go(&self.go);
        }
        Ok(())
    }
}

/// Adds labels `late` on `path`, stopping inside the commit at `at` until `go`
/// exists; reports `ok <generation>` or `error: <message>`.
fn pause_commit(path: &Path, at: &str, go: &Path) {
    let ds = Dataset::open(path, DatasetOptions::default()).expect("open");
    // Staged before the observer is installed: only the commit is observed.
    let staged = ds
        .stage_raster(
            spatialzarr::ElementKind::Labels,
            "late",
            labels(7, 8, 8).view(),
            &RasterOptions::default(),
        )
        .expect("stage");
    set_observer(Some(Arc::new(Pause {
        at: PausePoint::parse(at),
        go: go.to_path_buf(),
        journal: std::sync::Mutex::new(0),
        paused: std::sync::atomic::AtomicBool::new(false),
    })));
    let result = ds.write().and_then(|mut txn| {
        txn.add_staged(staged, false)?;
        txn.commit()
    });
    match result {
        Ok(info) => common::report(&format!("ok {}", info.generation)),
        Err(e) => common::report(&format!("error: {e}")),
    }
}

/// The pixels of version `v` of the element `e` that [`overwriter`] writes.
fn version(v: u32) -> ArrayD<u32> {
    labels(v, 16, 16)
}

/// Overwrites the labels `e` with versions `1..=versions`, one commit each.
fn overwriter(path: &Path, versions: u32) {
    let ds = Dataset::open(path, DatasetOptions::default()).expect("open");
    for v in 1..=versions {
        let mut txn = ds.write().expect("write");
        txn.add_raster(
            spatialzarr::ElementKind::Labels,
            "e",
            version(v).view(),
            &RasterOptions::default(),
            true,
        )
        .expect("overwrite");
        txn.commit().expect("commit");
    }
    common::report("done");
}

/// Reads `e` through the library (under the read lock) until `stop` exists; every
/// read must be one whole version. Reports `reads N versions M`.
fn locked_reader(path: &Path, stop: &Path) {
    let ds = Dataset::open(path, DatasetOptions::default()).expect("open");
    let mut reads = 0;
    let mut seen = std::collections::BTreeSet::new();
    while !stop.exists() {
        let pixels: ArrayD<u32> = ds
            .read_raster("e", 0)
            .unwrap_or_else(|e| panic!("read {reads} under the read lock failed: {e}"));
        let v = pixels[[0, 0]] / 1000;
        assert_eq!(pixels, version(v), "read {reads} is not one whole version");
        seen.insert(v);
        reads += 1;
    }
    common::report(&format!("reads {reads} versions {}", seen.len()));
}

// ---------------------------------------------------------------------------------
// The lock across nodes.

fn try_from(path: &Path, mode: &str, seconds: &str) -> String {
    let worker = live("try", &[s(path), mode, seconds]);
    next_report(&worker)
}

#[test]
fn exclusive_lock_on_one_node_excludes_the_other_both_ways() {
    let Some(t) = Setup::new("exclusive_lock") else {
        return;
    };
    let (a, b) = t.dataset();
    for (holder, other, name) in [(&a, &b, "a"), (&b, &a, "b")] {
        let go = t.go_file(name);
        let hold = holding(holder, "write", &go);
        for mode in ["write", "read"] {
            let seen = try_from(other, mode, "0.5");
            assert!(
                seen.starts_with("timeout: ") && seen.contains(s(other)),
                "{mode} lock from the other node while node {name} holds the write lock: {seen}"
            );
        }
        // The CLI sees the same.
        let out = common::sz(&["lock", s(other), "--timeout", "0.5", "--", "true"]);
        common::assert_fails(&out, 1, &["timed out", s(other)]);
        release(&go);
        expect_report(&hold, "released");
        assert_eq!(try_from(other, "write", "10"), "got");
    }
}

#[test]
fn shared_holders_on_both_nodes_overlap() {
    let Some(t) = Setup::new("shared_overlap") else {
        return;
    };
    let (a, b) = t.dataset();
    let go = t.go_file("go");
    let on_a = holding(&a, "read", &go);
    // A reader on B gets in while A's reader holds; a writer on either node does not.
    let on_b = holding(&b, "read", &go);
    for path in [&a, &b] {
        let seen = try_from(path, "write", "0.5");
        assert!(
            seen.starts_with("timeout: "),
            "writer while both read: {seen}"
        );
    }
    release(&go);
    expect_report(&on_a, "released");
    expect_report(&on_b, "released");
    assert_eq!(try_from(&b, "write", "10"), "got");
}

/// Whether the gate file of the dataset is held exclusively (by a queued writer),
/// tried through `path` without blocking.
fn gate_taken(dataset: &Path) -> bool {
    use rustix::fs::{FlockOperation, flock};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dataset.join(".spatialzarr/gate"))
        .expect("open the gate");
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            flock(&file, FlockOperation::Unlock).expect("unlock the gate");
            false
        }
        Err(rustix::io::Errno::WOULDBLOCK) => true,
        Err(e) => panic!("flock on the gate: {e}"),
    }
}

#[test]
fn a_writer_queued_on_one_node_keeps_new_readers_of_the_other_out() {
    let Some(t) = Setup::new("writer_gate") else {
        return;
    };
    let (a, b) = t.dataset();
    let go_reader = t.go_file("reader");
    let go_writer = t.go_file("writer");
    let reader = holding(&a, "read", &go_reader);
    let writer = live("hold", &[s(&b), "write", s(&go_writer)]);
    expect_report(&writer, "waiting");
    // The writer queues at the gate (held exclusively while it waits for the lock).
    let began = Instant::now();
    while !gate_taken(&a) {
        assert!(
            began.elapsed() < REPORT_WAIT,
            "the writer on B never queued at the gate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new reader on A does not overtake it, though the lock is only read-held.
    let seen = try_from(&a, "read", "1");
    assert!(
        seen.starts_with("timeout: "),
        "a new reader overtook the queued writer: {seen}"
    );
    release(&go_reader);
    expect_report(&reader, "released");
    expect_report(&writer, "held");
    release(&go_writer);
    expect_report(&writer, "released");
    assert_eq!(try_from(&a, "read", "10"), "got");
}

#[test]
fn reentrancy_and_inherited_locks_hold_on_the_mount() {
    let Some(t) = Setup::new("reentrancy") else {
        return;
    };
    let (a, b) = t.dataset();
    // The dataset reached through another path on the same node.
    let other = a.parent().unwrap().join(".").join("ds.zarr");
    let go = t.go_file("go");
    let worker = live("reentrant", &[s(&a), s(&other), s(&go)]);
    expect_report(&worker, "held");
    // Dropping the second handle released nothing: node B is still kept out.
    let seen = try_from(&b, "read", "0.5");
    assert!(
        seen.starts_with("timeout: "),
        "the lock was lost by the inner handle: {seen}"
    );
    release(&go);
    let committed = next_report(&worker);
    assert!(committed.starts_with("committed "), "{committed}");
    let listed = common::sz_ok(&["ls", s(&b)]);
    assert!(
        listed.contains("outer") && listed.contains("nested"),
        "{listed}"
    );

    // `spatialzarr lock` on A: the command's own spatialzarr joins the held lock,
    // while node B waits.
    let array = npy(t.local.path(), "x.npy", &labels(3, 4, 4));
    let script = format!(
        "{sz} add-labels {ds} inherited --npy {npy} && {sz} lock {b} --timeout 0.5 -- true; echo \"b=$?\"",
        sz = s(&common::cli()),
        ds = s(&a),
        npy = s(&array),
        b = s(&b),
    );
    let out = Command::new(common::cli())
        .args(["lock", s(&a), "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run spatialzarr lock");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("b=1"),
        "node B got the lock held on A: {stdout}"
    );
    assert!(common::sz_ok(&["ls", s(&b)]).contains("inherited"));
}

#[test]
fn killing_a_holder_on_one_node_lets_a_waiter_on_the_other_in() {
    let Some(t) = Setup::new("holder_killed") else {
        return;
    };
    let (a, b) = t.dataset();
    let go = t.go_file("never");
    let mut holder = holding(&a, "write", &go);
    let waiter = live("hold", &[s(&b), "write", s(&t.go_file("waiter"))]);
    expect_report(&waiter, "waiting");
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    holder.child.kill().expect("SIGKILL the holder");
    holder.child.wait().expect("reap the holder");
    let line = waiter.next(Duration::from_secs(30));
    let waited = killed.elapsed();
    assert_eq!(
        line.as_deref(),
        Some("held"),
        "the waiter on B never got the lock"
    );
    eprintln!("holder_killed: the waiter on node B got the lock {waited:?} after the SIGKILL");
    release(&t.go_file("waiter"));
    expect_report(&waiter, "released");
}

// ---------------------------------------------------------------------------------
// Writers on both nodes.

#[test]
fn writers_on_both_nodes_lose_and_duplicate_nothing() {
    let Some(t) = Setup::new("writers") else {
        return;
    };
    let (a, b) = t.dataset();
    let ops: i64 = if long_form() { 6 } else { 2 };
    let workers: i64 = 8;
    Dataset::open(&a, DatasetOptions::default())
        .expect("open")
        .add_points("pts", &points(99, 0, 3), None, false)
        .expect("seed points");
    let began = Instant::now();
    let commands = (0..workers)
        .map(|w| {
            let path = if w % 2 == 0 { &a } else { &b };
            common::worker(
                "writer",
                &[s(path).to_owned(), w.to_string(), ops.to_string()],
            )
        })
        .collect();
    let reports = common::run_all(commands);
    eprintln!(
        "writers: {workers} writers on two nodes, {ops} rounds each, in {:.1?}",
        began.elapsed()
    );
    // Every acknowledged append has its own rows, at the range reported.
    let ds = Dataset::open(&b, DatasetOptions::default()).expect("open on B");
    let total = (workers * ops) as u64 * ROWS_PER_APPEND as u64;
    let info = ds.table_info("cells").expect("table info");
    assert_eq!(info.n_obs, total, "rows in cells");
    let batch = ds.read_rows("cells", 0..total).expect("read rows");
    let worker_col = batch
        .column_by_name("worker")
        .unwrap()
        .as_primitive::<Int64Type>();
    let op_col = batch
        .column_by_name("op")
        .unwrap()
        .as_primitive::<Int64Type>();
    let seq_col = batch
        .column_by_name("seq")
        .unwrap()
        .as_primitive::<Int64Type>();
    for (w, lines) in reports.iter().enumerate() {
        assert_eq!(lines.last().map(String::as_str), Some("done"), "worker {w}");
        for line in lines.iter().filter(|l| l.starts_with("ack ")) {
            let f: Vec<u64> = line
                .split(' ')
                .skip(1)
                .map(|x| x.parse().unwrap())
                .collect();
            let (op, start, end) = (f[0] as i64, f[1], f[2]);
            assert_eq!(end - start, ROWS_PER_APPEND as u64);
            for (seq, row) in (start..end).enumerate() {
                let row = row as usize;
                assert_eq!(
                    (worker_col.value(row), op_col.value(row), seq_col.value(row)),
                    (w as i64, op, seq as i64),
                    "row {row}"
                );
            }
        }
    }
    let list = ds.list().expect("list");
    assert_eq!(list.labels.len() as i64, workers * ops, "{:?}", list.labels);
    for w in 0..workers {
        for i in 0..ops {
            let pixels: ArrayD<u32> = ds
                .read_raster(&format!("w{w}_l{i}"), 0)
                .expect("read labels");
            assert_eq!(pixels, labels(w as u32 * 100 + i as u32, 6, 5));
        }
    }
    let pts = ds.read_points("pts").expect("read points");
    assert_eq!(
        pts.num_rows() as i64,
        3 + workers * ops * POINTS_PER_PART as i64
    );
    let pts_worker = pts
        .column_by_name("worker")
        .unwrap()
        .as_primitive::<Int64Type>();
    let pts_op = pts
        .column_by_name("op")
        .unwrap()
        .as_primitive::<Int64Type>();
    let mut parts = std::collections::BTreeMap::new();
    for r in 0..pts.num_rows() {
        *parts
            .entry((pts_worker.value(r), pts_op.value(r)))
            .or_insert(0) += 1;
    }
    for w in 0..workers {
        for i in 0..ops {
            assert_eq!(
                parts.get(&(w, i)),
                Some(&POINTS_PER_PART),
                "points of w{w} op {i}"
            );
        }
    }
    for path in [&a, &b] {
        common::sz_ok(&["check", "--deep", s(path)]);
    }
    // spatialdata 0.8 reads everything through node B.
    let seen = common::spatialdata_reads(&b);
    for w in 0..workers {
        for i in 0..ops {
            common::find(&seen["labels"], &format!("w{w}_l{i}"));
        }
    }
    let table = common::find(&seen["tables"], "cells");
    assert_eq!(table["n_obs"], total, "{table}");
    let read_pts = common::find(&seen["points"], "pts");
    assert_eq!(
        read_pts["n"],
        3 + workers * ops * POINTS_PER_PART as i64,
        "{read_pts}"
    );
}

// ---------------------------------------------------------------------------------
// Node failures.

/// Node A's writer stops inside a commit at `at`; A's FUSE client is killed there.
/// Returns whether the element `late` is in the dataset after node B's next writer.
fn node_dies_inside_a_commit(t: &Setup, at: &str) -> bool {
    let (a, b) = t.paths();
    let go = t.go_file(&format!("go-{at}"));
    let writer = live("pause-commit", &[s(&a), at, s(&go)]);
    expect_report(&writer, "paused");
    t.a.kill_client();
    // Node B's next writer gets the lock once the dead client's locks are freed,
    // finishes (or discards) the interrupted commit, and commits its own.
    let array = npy(t.local.path(), &format!("{at}.npy"), &labels(9, 4, 4));
    let name = format!("after_{}", at.replace('-', "_"));
    let out = common::sz(&[
        "add-labels",
        s(&b),
        &name,
        "--npy",
        s(&array),
        "--lock-timeout",
        "60",
    ]);
    assert!(
        out.status.success(),
        "node B's writer after node A died at {at}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Node A's writer goes on into a dead mount: a clear error, no panic.
    release(&go);
    let outcome = next_report(&writer);
    assert!(
        outcome.starts_with("error: ") && outcome.contains("not connected"),
        "node A's writer on its dead mount: {outcome}"
    );
    // The dead mount answers ENOTCONN.
    let err = std::fs::read_dir(&a).expect_err("a dead mount lists nothing");
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::NOTCONN.raw_os_error()),
        "{err}"
    );
    let out = common::sz(&["ls", s(&a)]);
    common::assert_fails(&out, 1, &["not connected"]);
    common::sz_ok(&["check", "--deep", s(&b)]);
    t.a.remount();
    common::sz_ok(&["check", "--deep", s(&a)]);
    let listed = common::sz_ok(&["ls", s(&a)]);
    assert!(listed.contains(&name), "{listed}");
    let pixels: ArrayD<u32> = Dataset::open(&b, DatasetOptions::default())
        .expect("open")
        .read_raster(&name, 0)
        .expect("read");
    assert_eq!(pixels, labels(9, 4, 4));
    let present = listed.lines().any(|l| l.ends_with("\tlate"));
    if present {
        let pixels: ArrayD<u32> = Dataset::open(&b, DatasetOptions::default())
            .expect("open")
            .read_raster("late", 0)
            .expect("read late");
        assert_eq!(
            pixels,
            labels(7, 8, 8),
            "the interrupted commit's element is whole"
        );
    }
    present
}

#[test]
fn a_node_dying_inside_a_commit_leaves_the_old_or_the_new_state() {
    let Some(t) = Setup::new("node_death") else {
        return;
    };
    t.dataset();
    for (at, new) in [
        ("before-decision", false),
        ("decided", true),
        ("applying", true),
        ("before-journal-removal", true),
    ] {
        let present = node_dies_inside_a_commit(&t, at);
        assert_eq!(
            present, new,
            "node A died at {at}: the element `late` present: {present}"
        );
        if present {
            common::sz_ok(&["rm", s(&t.paths().1), "late"]);
        }
    }
}

#[test]
fn a_hung_node_holding_the_lock_times_out_writers_elsewhere_then_completes() {
    let Some(t) = Setup::new("hung_node") else {
        return;
    };
    let (a, b) = t.dataset();
    let go = t.go_file("go");
    let array = npy(t.local.path(), "x.npy", &labels(4, 4, 4));
    // Node A holds the lock through `spatialzarr lock`, waiting for the go-file, then
    // commits under it.
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; {sz} add-labels {a} from_a --npy {npy}",
        go = s(&go),
        sz = s(&common::cli()),
        a = s(&a),
        npy = s(&array),
    );
    let mut holder = Command::new(common::cli())
        .args(["lock", s(&a), "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn spatialzarr lock");
    let began = Instant::now();
    while try_from(&b, "write", "0.2") == "got" {
        assert!(
            began.elapsed() < REPORT_WAIT,
            "the holder on A never took the lock"
        );
    }
    t.a.stop_client();
    let out = common::sz(&[
        "add-labels",
        s(&b),
        "from_b",
        "--npy",
        s(&array),
        "--lock-timeout",
        "2",
    ]);
    common::assert_fails(&out, 1, &["timed out", s(&b)]);
    t.a.continue_client();
    release(&go);
    let status = holder.wait().expect("wait for the holder");
    let mut stderr = String::new();
    std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "node A's holder after SIGCONT: {stderr}");
    common::sz_ok(&[
        "add-labels",
        s(&b),
        "from_b",
        "--npy",
        s(&array),
        "--lock-timeout",
        "60",
    ]);
    let listed = common::sz_ok(&["ls", s(&a)]);
    assert!(
        listed.contains("from_a") && listed.contains("from_b"),
        "{listed}"
    );
    common::sz_ok(&["check", s(&a)]);
}

// ---------------------------------------------------------------------------------
// Readers on node B while node A overwrites.

/// What a reader without the lock met reading one file.
#[derive(Debug, Default)]
struct Tally {
    whole: u64,
    missing: u64,
    stale: u64,
}

fn read_whole_json(path: &Path, tally: &mut Tally) {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{} read torn ({e}): {:?}",
                    path.display(),
                    String::from_utf8_lossy(&bytes)
                )
            });
            tally.whole += 1;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => tally.missing += 1,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::STALE.raw_os_error()) => {
            tally.stale += 1
        }
        Err(e) => panic!("reading {} without the lock: {e}", path.display()),
    }
}

#[test]
fn readers_on_one_node_see_whole_versions_while_the_other_overwrites() {
    let Some(t) = Setup::new("readers") else {
        return;
    };
    let (a, b) = t.dataset();
    let versions = if long_form() { 60 } else { 15 };
    Dataset::open(&a, DatasetOptions::default())
        .expect("open")
        .add_labels("e", version(0).view(), &RasterOptions::default())
        .expect("first version");
    let stop = t.go_file("stop");
    let locked = live("locked-reader", &[s(&b), s(&stop)]);
    let writer = live("overwriter", &[s(&a), &versions.to_string()]);
    // Meanwhile this process reads node B's files without any lock, as spatialdata does.
    let (root, manifest, element) = (
        b.join("zarr.json"),
        b.join(".spatialzarr/manifest.json"),
        b.join("labels/e/zarr.json"),
    );
    let (mut root_tally, mut manifest_tally, mut element_tally) =
        (Tally::default(), Tally::default(), Tally::default());
    let done = loop {
        read_whole_json(&root, &mut root_tally);
        read_whole_json(&manifest, &mut manifest_tally);
        read_whole_json(&element, &mut element_tally);
        if let Some(line) = writer.next(Duration::from_millis(1)) {
            break line;
        }
    };
    assert_eq!(done, "done");
    release(&stop);
    let locked_reads = next_report(&locked);
    eprintln!(
        "readers: {versions} overwrites on A; without the lock on B: root zarr.json {root_tally:?}, \
         manifest {manifest_tally:?}, labels/e/zarr.json {element_tally:?}; under the read lock: {locked_reads}"
    );
    // Files replaced by one rename are never missing to a reader without the lock.
    assert_eq!((root_tally.missing, manifest_tally.missing), (0, 0));
    assert!(locked_reads.starts_with("reads "), "{locked_reads}");
    let read_after: ArrayD<u32> = Dataset::open(&b, DatasetOptions::default())
        .expect("open")
        .read_raster("e", 0)
        .expect("read");
    assert_eq!(read_after, version(versions));
}

// ---------------------------------------------------------------------------------
// The kill -9 suite and the model test, on the mount.

/// The newest executable of the test target `name` beside this test binary (cargo
/// builds every test target of `cargo test --all-targets` before running any).
fn sibling_test_binary(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|hash| hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .filter_map(|e| Some((e.metadata().ok()?, e.path())))
        .filter(|(meta, _)| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .max_by_key(|(meta, _)| meta.modified().ok())
        .map(|(_, path)| path)
}

/// Runs test `test` of the target `target` with its dataset folder on node A's mount
/// and its workers alternating between A's and B's.
fn run_suite_on_the_mount(t: &Setup, target: &str, test: &str, env: &[(&str, String)]) {
    let Some(binary) = sibling_test_binary(target) else {
        let why =
            format!("the `{target}` test binary is not built (run `cargo test --all-targets`)");
        assert!(!cluster::under_ci(), "{why}");
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIP {target} on the mount: {why}\n").as_bytes(),
        );
        return;
    };
    let began = Instant::now();
    let out = Command::new(&binary)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            common::NODE_ROOTS_ENV,
            format!("{}:{}", s(&t.a.root()), s(&t.b.root())),
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run the suite");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{target} on the mount failed: {}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 passed"),
        "{target} ran no test: {stdout}"
    );
    let summary = stderr
        .lines()
        .filter(|l| l.starts_with(target))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "{target} on two nodes in {:.1?}: {summary}",
        began.elapsed()
    );
}

#[test]
fn the_kill9_suite_and_the_model_pass_on_two_nodes() {
    let Some(t) = Setup::new("suites") else {
        return;
    };
    let folder = t.a.path(&t.folder);
    let kills = if long_form() { "200" } else { "25" };
    run_suite_on_the_mount(
        &t,
        "kill9",
        "kill9_writers_lose_and_duplicate_nothing",
        &[
            ("SPATIALZARR_KILL_DIR", s(&folder).to_owned()),
            ("SPATIALZARR_KILLS", kills.to_owned()),
            ("SPATIALZARR_KILL_PAUSE_MS", "1500".to_owned()),
        ],
    );
    let cases = if long_form() { "12" } else { "2" };
    run_suite_on_the_mount(
        &t,
        "model",
        "processes_agree_with_the_model_in_commit_order",
        &[
            ("SPATIALZARR_MODEL_DIR", s(&folder).to_owned()),
            ("SPATIALZARR_MODEL_CASES", cases.to_owned()),
        ],
    );
}

// ---------------------------------------------------------------------------------
// ESTALE.

/// On a volume with GlusterFS's default client caches, a node's cache still maps
/// `manifest.json` to the file another node's commit replaced, and the next open or
/// stat there answers ESTALE for up to about a second. The store opens again (bounded,
/// `util::retry_stale`) instead of failing, and never reports it as "not found" or as
/// corruption. (Appends are not safe with these caches: docs/cluster.md.)
#[test]
fn stale_handles_after_another_nodes_commit_are_retried_not_reported() {
    let Some(cluster) = cluster::cluster("stale_handles") else {
        return;
    };
    let _turn = cluster::serial();
    let a = cluster.cached_node("ca");
    let b = cluster.cached_node("cb");
    let local = common::tempdir();
    let array = npy(local.path(), "x.npy", &labels(5, 4, 4));
    let (on_a, on_b) = (a.path("stale.zarr"), b.path("stale.zarr"));
    common::sz_ok(&["init", s(&on_a)]);
    let rounds = if long_form() { 40 } else { 12 };
    // Each node commits right after the other, so every commit opens files the other
    // node has just replaced.
    for i in 0..rounds {
        let (path, node) = if i % 2 == 0 {
            (&on_a, "a")
        } else {
            (&on_b, "b")
        };
        let out = common::sz(&["add-labels", s(path), &format!("l{i}"), "--npy", s(&array)]);
        assert!(
            out.status.success(),
            "commit {i} on node {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for path in [&on_a, &on_b] {
        let listed = common::sz_ok(&["ls", s(path)]);
        assert_eq!(listed.lines().count(), rounds, "{listed}");
        common::sz_ok(&["check", "--deep", s(path)]);
    }
}

// ---------------------------------------------------------------------------------
// The SLURM job-array example (examples/slurm/), without SLURM.

/// Image `i` of the job: `i % 3 + 1` bright 4x4 squares on a dim background.
fn job_image(i: usize) -> (ndarray::Array3<u16>, usize) {
    let blobs = i % 3 + 1;
    let mut image = ndarray::Array3::<u16>::from_elem((1, 48, 48), 100);
    for b in 0..blobs {
        let (y, x) = (4 + 12 * b, 6 + 9 * b);
        image
            .slice_mut(ndarray::s![0, y..y + 4, x..x + 4])
            .fill(5000);
    }
    (image, blobs)
}

/// Runs array task `task` of `examples/slurm/segment_array.sbatch` on `dataset`.
fn array_task(dataset: &Path, task: usize, worker: &Path) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(common::repo().join("examples/slurm/segment_array.sbatch"))
        .arg(dataset)
        .env("SLURM_ARRAY_TASK_ID", task.to_string())
        .env("SEGMENTATION_WORKER", worker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

#[test]
fn the_slurm_array_resubmitted_after_failures_segments_every_image_once() {
    let Some(t) = Setup::new("slurm") else { return };
    let worker = std::env::current_exe()
        .expect("test binary")
        .parent()
        .and_then(Path::parent)
        .expect("target folder")
        .join("examples/segmentation_worker");
    if !worker.is_file() {
        let why = format!(
            "{} is not built (run `cargo build --examples`)",
            worker.display()
        );
        assert!(!cluster::under_ci(), "{why}");
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIP slurm: {why}\n").as_bytes(),
        );
        return;
    }
    let (a, b) = t.paths();
    let raw = t.local.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let tasks = if long_form() { 12 } else { 4 };
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..tasks {
        let (image, blobs) = job_image(i);
        ndarray_npy::write_npy(raw.join(format!("{i:02}.npy")), &image).expect("write npy");
        expected.insert(format!("image_{i:03}_labels"), blobs);
    }
    let out = Command::new("bash")
        .arg(common::repo().join("examples/slurm/prepare.sh"))
        .args([&a, &raw])
        .env("SPATIALZARR", common::cli())
        .stdin(Stdio::null())
        .output()
        .expect("run prepare.sh");
    assert!(
        out.status.success(),
        "prepare.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first submission: every task at once, on both nodes; two of them are killed
    // (SIGKILL of the task's process group) at once or a moment later.
    let mut first: Vec<_> = (0..tasks)
        .map(|i| {
            let mut command = array_task(if i % 2 == 0 { &a } else { &b }, i, &worker);
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            command.spawn().expect("start a task")
        })
        .collect();
    for (task, delay_ms) in [(1, 0), (3, 400)] {
        std::thread::sleep(Duration::from_millis(delay_ms));
        let group = rustix::process::Pid::from_raw(first[task].id() as i32).unwrap();
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    for child in &mut first {
        child.wait().expect("wait for a task");
    }
    // The resubmission: every task again, each must succeed.
    let second: Vec<_> = (0..tasks)
        .map(|i| {
            array_task(if i % 2 == 0 { &b } else { &a }, i, &worker)
                .spawn()
                .expect("start a task")
        })
        .collect();
    for (i, child) in second.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait for a task");
        assert!(
            out.status.success(),
            "resubmitted task {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ds = Dataset::open(&b, DatasetOptions::default()).expect("open");
    let list = ds.list().expect("list");
    let labels: Vec<&String> = expected.keys().collect();
    assert_eq!(list.labels.iter().collect::<Vec<_>>(), labels);
    let total: usize = expected.values().sum();
    let info = ds.table_info("cells").expect("cells");
    assert_eq!(
        info.n_obs, total as u64,
        "cells rows (no image counted twice)"
    );
    let rows = ds.read_rows("cells", 0..info.n_obs).expect("read cells");
    let regions = common::strings(rows.column_by_name("region").unwrap());
    let ids = rows
        .column_by_name("instance_id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let mut seen = std::collections::BTreeSet::new();
    for (r, region) in regions.iter().enumerate() {
        assert!(
            seen.insert((region.clone(), ids.value(r))),
            "row {r} duplicated: {region} {}",
            ids.value(r)
        );
    }
    for (region, blobs) in &expected {
        for id in 1..=*blobs as i64 {
            assert!(
                seen.contains(&(region.clone(), id)),
                "{region} cell {id} missing"
            );
        }
    }
    for path in [&a, &b] {
        common::sz_ok(&["check", "--deep", s(path)]);
    }
}
