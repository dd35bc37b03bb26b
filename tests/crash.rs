//! Crash consistency, measured on recordings of every file operation the store makes:
//!
//! - crash-prefix replay: for every prefix of a workload's operations, the directory a
//!   crash there would leave (everything applied; only what was fsynced; each
//!   not-yet-fsynced operation dropped alone) opens, passes `check`, and equals the
//!   state before or after the commit that was in flight;
//! - ordering audit: no rename of a file before its data was fsynced; no commit
//!   returned before the folders of its renames were fsynced;
//! - injected I/O errors: EIO and ENOSPC at the 1st, 2nd, ... Nth operation of each
//!   kind of commit, once and for ever after: a clear error with the dataset
//!   unchanged, or success; `check` passes after.
//!
//! The default run (CI) uses the commits of a smaller workload and replays every
//! unsynced operation dropped alone at every tenth prefix only. The long form replays every state of the full
//! workload and injects both errors at every operation:
//! `SPATIALZARR_CRASH_FULL=1 cargo test --release --test crash -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use ndarray::{ArrayD, IxDyn};
use spatialzarr::commit::{FoundJournal, Journal, Step};
use spatialzarr::storage::trace::{FsObserver, FsOp, set_observer};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions, ElementKind, FolderSync, RasterOptions};

/// The observer is process-wide: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// Records every operation performed. With `no_swap`, refuses atomic folder swaps the
/// way a filesystem without `RENAME_EXCHANGE` does (EINVAL), so that the store takes
/// its two-rename path; operations it refuses are not recorded (they did nothing).
/// Calls the filesystem then fails (a `mkdir` of a folder that exists, a file created
/// in a folder not made yet) are recorded, and fail the same way in [`replay`].
#[derive(Default)]
struct Recorder(Mutex<Vec<FsOp>>, bool);

impl Recorder {
    fn without_swaps() -> Self {
        Recorder(Mutex::default(), true)
    }
}

impl FsObserver for Recorder {
    fn before(&self, op: &FsOp) -> std::io::Result<()> {
        if self.1 && matches!(op, FsOp::Exchange(..)) {
            return Err(std::io::Error::from_raw_os_error(22));
        }
        self.0.lock().unwrap().push(op.clone());
        Ok(())
    }
}

struct Faulty {
    seen: AtomicUsize,
    at: usize,
    forever: bool,
    errno: i32,
}

impl FsObserver for Faulty {
    fn before(&self, _op: &FsOp) -> std::io::Result<()> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.at || (self.forever && n > self.at) {
            return Err(std::io::Error::from_raw_os_error(self.errno));
        }
        Ok(())
    }
}

/// Options that fsync every folder a commit changes, whatever the filesystem the
/// test runs on: the crash model of most tests here assumes no ordering of
/// namespace operations (a rename is durable once its folder is fsynced).
fn strict() -> DatasetOptions {
    DatasetOptions {
        folder_sync: Some(FolderSync::Strict),
        ..DatasetOptions::default()
    }
}

/// Options that fsync no folder (`FolderSync::Ordered`), for the ordered crash model.
fn ordered() -> DatasetOptions {
    DatasetOptions {
        folder_sync: Some(FolderSync::Ordered),
        ..DatasetOptions::default()
    }
}

/// What a dataset holds, logically.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    generation: u64,
    /// The store format version (1: names in the manifest; 2: in the index).
    version: u64,
    elements: String,
    tables: BTreeMap<String, u64>,
    points: BTreeMap<String, u64>,
}

fn snapshot(path: &Path) -> Snapshot {
    let ds = Dataset::open(path, strict()).expect("open");
    let list = ds.list().expect("list");
    let tables = list
        .tables
        .iter()
        .map(|t| (t.clone(), ds.table_info(t).expect("table").n_obs))
        .collect();
    let points = list
        .points
        .iter()
        .map(|p| {
            (
                p.clone(),
                ds.read_points(p).expect("points").num_rows() as u64,
            )
        })
        .collect();
    Snapshot {
        generation: ds.generation().expect("generation"),
        version: common::store_version(path),
        elements: format!("{list:?}"),
        tables,
        points,
    }
}

fn rows(region: &str, n: i64) -> RowBatch {
    common::region_rows(region, n)
}

fn points(n: usize) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "x",
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))) as ArrayRef,
        ),
        (
            "y",
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| i as f64 * 2.0),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

type Commit = Box<dyn Fn(&Dataset) -> spatialzarr::Result<()>>;

fn full() -> bool {
    std::env::var_os("SPATIALZARR_CRASH_FULL").is_some()
}

/// The workload: one commit of each kind the store makes (the default run skips
/// the kinds that repeat another's steps).
fn workload() -> Vec<(&'static str, Commit)> {
    let mut all = full_workload();
    if !full() {
        all.retain(|(name, _)| {
            matches!(
                *name,
                "add labels" | "create table" | "overwrite labels" | "remove"
            )
        });
    }
    all
}

fn full_workload() -> Vec<(&'static str, Commit)> {
    let labels = |v: u16| ArrayD::from_elem(IxDyn(&[4, 4]), v);
    vec![
        (
            "add labels",
            Box::new(move |ds: &Dataset| {
                ds.add_labels("a", labels(1).view(), &RasterOptions::default())
                    .map(drop)
            }),
        ),
        (
            "create table",
            Box::new(|ds: &Dataset| {
                ds.append_rows(
                    "cells",
                    &rows("a", 3),
                    Some(&TableSpec::default()),
                    Some("k1"),
                )
                .map(drop)
            }),
        ),
        (
            "add image",
            Box::new(move |ds: &Dataset| {
                ds.add_image("img", labels(2).view(), &RasterOptions::default())
                    .map(drop)
            }),
        ),
        (
            "append rows",
            Box::new(|ds: &Dataset| {
                ds.append_rows("cells", &rows("img", 2), None, Some("k2"))
                    .map(drop)
            }),
        ),
        (
            "overwrite labels",
            Box::new(move |ds: &Dataset| {
                ds.add_raster(
                    ElementKind::Labels,
                    "a",
                    labels(3).view(),
                    &RasterOptions::default(),
                    true,
                )
                .map(drop)
            }),
        ),
        (
            "add points",
            Box::new(|ds: &Dataset| ds.add_points("pts", &points(3), None, false).map(drop)),
        ),
        (
            "append points",
            Box::new(|ds: &Dataset| ds.append_points("pts", &points(2), Some("p1")).map(drop)),
        ),
        ("remove", Box::new(|ds: &Dataset| ds.remove("a").map(drop))),
    ]
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A base dataset plus the recorded operations of the workload, the operation index
/// at which each commit started and ended, and the snapshot after each commit.
struct Recording {
    base: PathBuf,
    root: PathBuf,
    ops: Vec<FsOp>,
    bounds: Vec<(usize, usize)>,
    snaps: Vec<Snapshot>,
}

fn record(dir: &Path) -> Recording {
    record_with(dir, Recorder::default())
}

fn record_with(dir: &Path, recorder: Recorder) -> Recording {
    record_workload(dir, recorder, workload())
}

fn record_workload(
    dir: &Path,
    recorder: Recorder,
    workload: Vec<(&'static str, Commit)>,
) -> Recording {
    record_workload_from(dir, recorder, workload, &|_| {})
}

/// [`record_workload`] on a new dataset that `setup` prepares first (unrecorded).
fn record_workload_from(
    dir: &Path,
    recorder: Recorder,
    workload: Vec<(&'static str, Commit)>,
    setup: &dyn Fn(&Dataset),
) -> Recording {
    record_workload_with(dir, recorder, workload, setup, strict())
}

/// [`record_workload_from`], committing with `options`.
fn record_workload_with(
    dir: &Path,
    recorder: Recorder,
    workload: Vec<(&'static str, Commit)>,
    setup: &dyn Fn(&Dataset),
    options: DatasetOptions,
) -> Recording {
    let root = dir.join("live.zarr");
    let ds = Dataset::create(&root, options).unwrap();
    setup(&ds);
    let base = dir.join("base.zarr");
    copy_tree(&root, &base);
    let mut snaps = vec![snapshot(&root)];
    let recorder = Arc::new(recorder);
    let mut bounds = Vec::new();
    for (name, commit) in workload {
        let start = recorder.0.lock().unwrap().len();
        set_observer(Some(recorder.clone()));
        let result = commit(&ds);
        set_observer(None);
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
        bounds.push((start, recorder.0.lock().unwrap().len()));
        snaps.push(snapshot(&root));
    }
    let ops = recorder.0.lock().unwrap().clone();
    Recording {
        base,
        root,
        ops,
        bounds,
        snaps,
    }
}

fn parent(p: &Path) -> PathBuf {
    p.parent().unwrap().to_path_buf()
}

/// Whether the file or folder at `path` is fsynced by one of `later` (a folder's
/// fsync is an `FsyncDir`): under that name or under any name a later rename or
/// exchange gives it, since an fsync acts on the inode, whatever its name.
fn synced_later(later: &[FsOp], path: &Path, folder: bool) -> bool {
    let mut name = path.to_path_buf();
    for op in later {
        match op {
            FsOp::FsyncDir(x) if folder && *x == name => return true,
            FsOp::Fsync(x) if !folder && *x == name => return true,
            FsOp::Rename(a, b) if name.starts_with(a) => {
                name = b.join(name.strip_prefix(a).unwrap());
            }
            FsOp::Exchange(a, b) if name.starts_with(a) => {
                name = b.join(name.strip_prefix(a).unwrap());
            }
            FsOp::Exchange(a, b) if name.starts_with(b) => {
                name = a.join(name.strip_prefix(b).unwrap());
            }
            _ => {}
        }
    }
    false
}

/// Whether op `j` is durable in the prefix `ops[..end]`.
fn durable(ops: &[FsOp], j: usize, end: usize) -> bool {
    let later = &ops[j + 1..end];
    match &ops[j] {
        FsOp::Write(p, _) => synced_later(later, p, false),
        FsOp::CreateFile(p) | FsOp::Mkdir(p) | FsOp::Unlink(p) | FsOp::RemoveTree(p) => {
            synced_later(later, &parent(p), true)
        }
        FsOp::Rename(a, b) | FsOp::Exchange(a, b) => {
            synced_later(later, &parent(a), true) && synced_later(later, &parent(b), true)
        }
        FsOp::Fsync(_) | FsOp::FsyncDir(_) | FsOp::FsyncRound(_) => true,
    }
}

/// Rebuilds `out` from the base and `ops[..end]`; op `j` is applied only if
/// `keep(j)` (a write not kept leaves its file empty).
fn replay(rec: &Recording, end: usize, keep: &dyn Fn(usize) -> bool, out: &Path) {
    let _ = std::fs::remove_dir_all(out);
    copy_tree(&rec.base, out);
    let map = |p: &Path| out.join(p.strip_prefix(&rec.root).expect("op inside the dataset"));
    for (j, op) in rec.ops[..end].iter().enumerate() {
        let kept = keep(j);
        // Failures are expected: an earlier dropped operation can make a later one
        // impossible, exactly as after a real crash.
        match op {
            FsOp::CreateFile(p) if kept => {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(map(p));
            }
            FsOp::Write(p, bytes) if kept && map(p).is_file() => {
                let _ = std::fs::write(map(p), bytes);
            }
            FsOp::Rename(a, b) if kept => {
                let _ = std::fs::rename(map(a), map(b));
            }
            FsOp::Exchange(a, b) if kept => {
                let _ = rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    map(a),
                    rustix::fs::CWD,
                    map(b),
                    rustix::fs::RenameFlags::EXCHANGE,
                );
            }
            FsOp::Mkdir(p) if kept => {
                let _ = std::fs::create_dir(map(p));
            }
            FsOp::Unlink(p) if kept => {
                let _ = std::fs::remove_file(map(p));
            }
            FsOp::RemoveTree(p) if kept => {
                let _ = std::fs::remove_dir_all(map(p));
            }
            _ => {}
        }
    }
}

/// The deep check of a crashed dataset as its next writer finds it. The check alone
/// finishes nothing: before recovery it may find problems only beside the warning of
/// an interrupted commit (the ones that commit mends); after `recover`, none at all.
fn recovered_check(ds: &Dataset, what: &str) -> spatialzarr::CheckReport {
    let before = ds
        .check(true)
        .unwrap_or_else(|e| panic!("{what}: check failed to run: {e}"));
    let interrupted = before
        .warnings
        .iter()
        .any(|w| w.contains("interrupted commit"));
    assert!(
        before.is_ok() || interrupted,
        "{what}: check found {:?} with no interrupted commit to mend them",
        before.problems
    );
    ds.recover()
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    ds.check(true)
        .unwrap_or_else(|e| panic!("{what}: check failed to run: {e}"))
}

/// The snapshots a crash at operation index `end` may legally leave.
fn allowed(rec: &Recording, end: usize) -> Vec<&Snapshot> {
    for (c, (start, stop)) in rec.bounds.iter().enumerate() {
        if end <= *start {
            return vec![&rec.snaps[c]];
        }
        if end < *stop {
            return vec![&rec.snaps[c], &rec.snaps[c + 1]];
        }
    }
    vec![rec.snaps.last().unwrap()]
}

fn verify(rec: &Recording, end: usize, out: &Path, what: &str) {
    let ds = Dataset::open(out, strict())
        .unwrap_or_else(|e| panic!("{what}: the crashed state does not open: {e}"));
    let report = recovered_check(&ds, what);
    assert!(report.is_ok(), "{what}: check found {:?}", report.problems);
    let got = snapshot(out);
    let legal = allowed(rec, end);
    assert!(
        legal.contains(&&got),
        "{what}: state {got:?} is neither of {legal:?}"
    );
}

#[test]
fn every_crash_prefix_recovers_to_the_state_before_or_after() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let rec = record(dir.path());
    assert!(
        rec.ops.iter().any(|op| matches!(op, FsOp::Exchange(..))),
        "the overwrite swapped nothing"
    );
    every_crash_prefix(&rec, dir.path());
}

/// The same on a filesystem that cannot swap folders atomically (NFS): overwrites
/// take two renames.
#[test]
fn every_crash_prefix_recovers_without_atomic_swaps() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let rec = record_with(dir.path(), Recorder::without_swaps());
    assert!(
        !rec.ops.iter().any(|op| matches!(op, FsOp::Exchange(..))),
        "a swap was recorded"
    );
    every_crash_prefix(&rec, dir.path());
}

/// Algorithm U (spec/format.md §4): a dataset of store format 1 upgraded by
/// `Dataset::upgrade` and then by an ordinary first write: a crash at every step
/// leaves version 1 with its elements, or version 2 with the same elements.
#[test]
fn every_crash_prefix_of_an_upgrade_leaves_version_1_or_2() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let labels = |v: u16| ArrayD::from_elem(IxDyn(&[4, 4]), v);
    let version_1 = move |ds: &Dataset| {
        for name in ["a", "b", "c"] {
            ds.add_labels(name, labels(1).view(), &RasterOptions::default())
                .unwrap();
        }
        ds.append_rows("cells", &rows("a", 3), Some(&TableSpec::default()), None)
            .unwrap();
        common::to_version_1(ds.root());
        // A leftover of an upgrade attempt never decided: not committed state.
        let stale = ds.root().join(".spatialzarr/index");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("000"), "labels\tgone\n").unwrap();
    };
    let upgrade: Vec<(&'static str, Commit)> = vec![
        ("upgrade", Box::new(|ds: &Dataset| ds.upgrade().map(drop))),
        (
            "remove after the upgrade",
            Box::new(|ds: &Dataset| ds.remove("b").map(drop)),
        ),
    ];
    let rec = record_workload_from(dir.path(), Recorder::default(), upgrade, &version_1);
    assert_eq!(rec.snaps[0].version, 1);
    assert_eq!(rec.snaps[1].version, 2);
    assert_eq!(rec.snaps[0].elements, rec.snaps[1].elements);
    every_crash_prefix(&rec, dir.path());

    // The same through a first ordinary write, which upgrades in its own commit.
    let dir = common::tempdir();
    let write: Vec<(&'static str, Commit)> = vec![(
        "first write",
        Box::new(move |ds: &Dataset| {
            ds.add_labels("d", labels(2).view(), &RasterOptions::default())
                .map(drop)
        }),
    )];
    let rec = record_workload_from(dir.path(), Recorder::default(), write, &version_1);
    assert_eq!((rec.snaps[0].version, rec.snaps[1].version), (1, 2));
    every_crash_prefix(&rec, dir.path());
}

fn every_crash_prefix(rec: &Recording, dir: &Path) {
    // The default run drops each unsynced operation alone at every tenth prefix.
    let sample: usize = if full() { 1 } else { 10 };
    let out = dir.join("crashed.zarr");
    let mut states = 0;
    for end in 0..=rec.ops.len() {
        replay(rec, end, &|_| true, &out);
        verify(rec, end, &out, &format!("prefix {end}, everything applied"));
        replay(rec, end, &|j| durable(&rec.ops, j, end), &out);
        verify(rec, end, &out, &format!("prefix {end}, unsynced dropped"));
        states += 2;
        let unsynced: Vec<usize> = (0..end).filter(|&j| !durable(&rec.ops, j, end)).collect();
        if end % sample != 0 {
            continue;
        }
        for &k in &unsynced {
            replay(rec, end, &|j| j != k, &out);
            verify(
                rec,
                end,
                &out,
                &format!("prefix {end}, op {k} ({:?}) dropped", rec.ops[k]),
            );
            states += 1;
        }
    }
    eprintln!(
        "crash replay: {} operations, {states} crash states verified",
        rec.ops.len()
    );
    assert!(states > rec.ops.len() * 2);
}

/// For each prefix length `end`, the last operation index up to which every
/// namespace operation (create, mkdir, rename, exchange, unlink) is durable on a
/// filesystem that orders them (`FolderSync::Ordered`, spec/commit-protocol.md
/// §11.1): an fsync of a file makes durable every namespace operation made before
/// the file's last change (its creation or last write), a folder's fsync every one
/// made before it. `None` where nothing is durable yet.
fn ordered_barriers(ops: &[FsOp]) -> Vec<Option<usize>> {
    let mut barriers = vec![None];
    let mut barrier: Option<usize> = None;
    for (i, op) in ops.iter().enumerate() {
        let covered = match op {
            FsOp::Fsync(p) => ops[..i]
                .iter()
                .rposition(|o| matches!(o, FsOp::CreateFile(q) | FsOp::Write(q, _) if q == p)),
            FsOp::FsyncDir(_) => i.checked_sub(1),
            _ => None,
        };
        barrier = barrier.max(covered);
        barriers.push(barrier);
    }
    barriers
}

/// Whether op `j` survives a power loss at prefix `end` on a filesystem that orders
/// namespace operations, when those after the barrier are kept up to (not
/// including) `cut`: file data only where fsynced later, namespace operations up
/// to the barrier, then a prefix of the rest.
fn ordered_keeps(ops: &[FsOp], barrier: Option<usize>, cut: usize, j: usize, end: usize) -> bool {
    match &ops[j] {
        FsOp::Write(p, _) => synced_later(&ops[j + 1..end], p, false),
        FsOp::Fsync(_) | FsOp::FsyncDir(_) | FsOp::FsyncRound(_) => true,
        _ => barrier.is_some_and(|b| j <= b) || j < cut,
    }
}

/// Every crash prefix of a recording made with `FolderSync::Ordered`: a process
/// crash (everything applied), and power losses that keep what the ordered model
/// guarantees and, at every `sample`-th prefix, each longer prefix of the namespace
/// operations after it (each without the file data no fsync made durable).
fn every_ordered_crash_prefix(rec: &Recording, dir: &Path, sample: usize) {
    let out = dir.join("crashed.zarr");
    let mut states = 0;
    for (end, &barrier) in ordered_barriers(&rec.ops).iter().enumerate() {
        replay(rec, end, &|_| true, &out);
        verify(rec, end, &out, &format!("prefix {end}, everything applied"));
        let first_cut = barrier.map_or(0, |b| b + 1);
        let cuts: Vec<usize> = if end % sample == 0 {
            (first_cut..=end).collect()
        } else {
            vec![first_cut]
        };
        for cut in cuts {
            replay(
                rec,
                end,
                &|j| ordered_keeps(&rec.ops, barrier, cut, j, end),
                &out,
            );
            verify(
                rec,
                end,
                &out,
                &format!("prefix {end}, power loss keeping namespace operations before {cut}"),
            );
            states += 1;
        }
        states += 1;
    }
    eprintln!(
        "ordered crash replay: {} operations, {states} crash states verified",
        rec.ops.len()
    );
    assert!(states > rec.ops.len() * 2);
}

/// With `FolderSync::Ordered` (no folder fsynced, ext4 and xfs) every crash prefix
/// recovers to the state before or after the commit in flight, under the ordered
/// model of a power loss; at each commit's end, the state after it (an acknowledged
/// commit survives).
#[test]
fn every_crash_prefix_recovers_with_ordered_folder_sync() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let rec = record_workload_with(
        dir.path(),
        Recorder::default(),
        workload(),
        &|_| {},
        ordered(),
    );
    let folders: Vec<_> = rec
        .ops
        .iter()
        .filter(|op| matches!(op, FsOp::FsyncDir(_)))
        .collect();
    assert!(folders.is_empty(), "folders fsynced: {folders:?}");
    every_ordered_crash_prefix(&rec, dir.path(), if full() { 1 } else { 10 });
}

/// `op` with its paths moved from under `from` to under `to`.
fn rebase(op: &FsOp, from: &Path, to: &Path) -> FsOp {
    let m = |p: &PathBuf| to.join(p.strip_prefix(from).expect("op inside the dataset"));
    match op {
        FsOp::CreateFile(p) => FsOp::CreateFile(m(p)),
        FsOp::Write(p, bytes) => FsOp::Write(m(p), bytes.clone()),
        FsOp::Fsync(p) => FsOp::Fsync(m(p)),
        FsOp::Rename(a, b) => FsOp::Rename(m(a), m(b)),
        FsOp::Exchange(a, b) => FsOp::Exchange(m(a), m(b)),
        FsOp::Mkdir(p) => FsOp::Mkdir(m(p)),
        FsOp::Unlink(p) => FsOp::Unlink(m(p)),
        FsOp::RemoveTree(p) => FsOp::RemoveTree(m(p)),
        FsOp::FsyncDir(p) => FsOp::FsyncDir(m(p)),
        FsOp::FsyncRound(n) => FsOp::FsyncRound(*n),
    }
}

/// A process crash at every prefix (nothing lost: the OS kept every operation), then
/// the next writer's recovery, recorded, then a power loss: every operation of the
/// crashed process and of the recovery that no later fsync made durable is dropped.
/// Recovery must make durable what it finishes, including the steps it finds already
/// done, before it removes the journal.
#[test]
fn recovery_makes_the_finished_commit_durable_before_a_power_loss() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let rec = record(dir.path());
    recover_then_lose_power(&rec, dir.path(), if full() { 1 } else { 3 });
}

/// The same where overwrites take two renames (no atomic swap).
#[test]
fn recovery_without_atomic_swaps_is_durable_before_a_power_loss() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let rec = record_with(dir.path(), Recorder::without_swaps());
    recover_then_lose_power(&rec, dir.path(), if full() { 1 } else { 5 });
}

fn recover_then_lose_power(rec: &Recording, dir: &Path, sample: usize) {
    let crashed = dir.join("crashed.zarr");
    let out = dir.join("after-power-loss.zarr");
    let mut states = 0;
    for end in (0..=rec.ops.len()).filter(|end| end % sample == 0) {
        replay(rec, end, &|_| true, &crashed);
        let recorder = Arc::new(Recorder::default());
        set_observer(Some(recorder.clone()));
        // The recovery every writer runs when it takes the lock.
        let recovered = Dataset::open(&crashed, strict()).and_then(|ds| ds.write().map(drop));
        set_observer(None);
        recovered.unwrap_or_else(|e| panic!("prefix {end}: recovery failed: {e}"));
        // Temporary files of the crashed process are gone, except those it wrote
        // before its commit was decided into a table's arrays, beside the
        // idempotency records and among the index buckets (invisible; removed by
        // `spatialzarr recover`).
        let left: Vec<_> = common::tree_files(&crashed)
            .into_keys()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".sz-tmp-"))
                    && !p.starts_with("tables")
                    && !p.starts_with(".spatialzarr/appends")
                    && !p.starts_with(".spatialzarr/index")
            })
            .collect();
        assert!(
            left.is_empty(),
            "prefix {end}: temporary files left: {left:?}"
        );
        // The crashed process's operations, seen in the crashed copy, then recovery's.
        let mut ops: Vec<FsOp> = rec.ops[..end]
            .iter()
            .map(|op| rebase(op, &rec.root, &crashed))
            .collect();
        ops.extend(recorder.0.lock().unwrap().iter().cloned());
        let both = Recording {
            base: rec.base.clone(),
            root: crashed.clone(),
            ops,
            bounds: Vec::new(),
            snaps: Vec::new(),
        };
        let len = both.ops.len();
        replay(&both, len, &|j| durable(&both.ops, j, len), &out);
        verify(
            rec,
            end,
            &out,
            &format!("prefix {end}, recovered, then power loss"),
        );
        states += 1;
    }
    eprintln!("crash, recovery, power loss: {states} states verified");
    assert!(states * sample >= rec.ops.len());
}

#[test]
fn fsync_ordering_audit() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let rec = record(dir.path());
    let ops = &rec.ops;
    let mut renames = 0;
    for (j, op) in ops.iter().enumerate() {
        if let FsOp::Rename(from, _) = op
            && let Some(w) = ops[..j]
                .iter()
                .rposition(|o| matches!(o, FsOp::Write(p, _) if p == from))
        {
            renames += 1;
            assert!(
                ops[w..j]
                    .iter()
                    .any(|o| matches!(o, FsOp::Fsync(p) if p == from)),
                "op {j}: {from:?} renamed into place before its data was fsynced"
            );
        }
    }
    for (c, (start, stop)) in rec.bounds.iter().enumerate() {
        for j in *start..*stop {
            if let FsOp::Rename(_, to) | FsOp::Exchange(_, to) = &ops[j] {
                assert!(
                    ops[j + 1..*stop]
                        .iter()
                        .any(|o| matches!(o, FsOp::FsyncDir(d) if *d == parent(to))),
                    "commit {c}: returned before the folder of {to:?} was fsynced"
                );
            }
        }
    }
    assert!(renames > 20, "the audit saw only {renames} published files");
}

#[test]
fn injected_io_errors_leave_the_dataset_before_or_after() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let rec = record(dir.path());
    // Datasets just before each commit, made by replaying everything before it.
    let mut runs = 0;
    let mut failures = 0;
    for (c, (name, commit)) in workload().into_iter().enumerate() {
        let (start, stop) = rec.bounds[c];
        let before_path = dir.path().join(format!("before-{c}.zarr"));
        replay(&rec, start, &|_| true, &before_path);
        for at in 1..=(stop - start) {
            for forever in [false, true] {
                let errnos: &[i32] = if full() || at % 4 == 0 {
                    &[5, 28]
                } else {
                    &[5]
                };
                if !full() && at % 2 == 0 && at % 4 != 0 {
                    continue;
                }
                for &errno in errnos {
                    let path = dir.path().join("faulty.zarr");
                    let _ = std::fs::remove_dir_all(&path);
                    copy_tree(&before_path, &path);
                    let ds = Dataset::open(&path, strict()).unwrap();
                    set_observer(Some(Arc::new(Faulty {
                        seen: AtomicUsize::new(0),
                        at,
                        forever,
                        errno,
                    })));
                    let result = commit(&ds);
                    set_observer(None);
                    drop(ds);
                    runs += 1;
                    let what = format!(
                        "{name}: error {errno} at op {at}{}",
                        if forever { " and after" } else { "" }
                    );
                    if let Err(e) = &result {
                        failures += 1;
                        assert!(!e.to_string().is_empty(), "{what}: empty error");
                    }
                    let ds = Dataset::open(&path, strict()).unwrap();
                    let report = recovered_check(&ds, &what);
                    assert!(report.is_ok(), "{what}: {:?}", report.problems);
                    let got = snapshot(&path);
                    match result {
                        Ok(()) => assert_eq!(
                            got,
                            rec.snaps[c + 1],
                            "{what}: succeeded but the state differs"
                        ),
                        Err(_) => assert!(
                            got == rec.snaps[c] || got == rec.snaps[c + 1],
                            "{what}: {got:?} is neither before nor after"
                        ),
                    }
                }
            }
        }
    }
    eprintln!("fault injection: {runs} runs, {failures} ended in an error");
    assert!(failures > 0);
}

/// Keyed rows `start..start + n` of region `region`, each value distinct.
fn numbered_rows(region: &str, start: i64, n: i64) -> RowBatch {
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from_iter_values((0..n).map(|_| region))) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(start..start + n)) as ArrayRef,
        ),
        (
            "area",
            Arc::new(Float64Array::from_iter_values(
                (start..start + n).map(|i| i as f64 + 0.5),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    RowBatch { obs, x: None }
}

/// T-C2 (spec/commit-protocol.md §10): what a reader without the lock sees at every crash prefix, WITHOUT recovery
/// (the files as they are; a process crash keeps every operation, a power loss drops
/// what no fsync made durable): the table's element document is the one some
/// committed generation in flight wrote; zarr-python, reading the table through it,
/// finds every obs column at that generation's length with the committed rows (a
/// prefix of the final rows); every labels element `labels/zarr.json` lists exists.
#[test]
fn lock_free_readers_see_committed_tables_at_every_crash_prefix() {
    lock_free_reader_views(strict());
}

/// The same with `FolderSync::Ordered`, under the ordered model of a power loss
/// (every longer prefix of the namespace operations not yet durable, at every
/// fifth crash prefix).
#[test]
fn lock_free_readers_see_committed_tables_with_ordered_folder_sync() {
    lock_free_reader_views(ordered());
}

/// A crash model of the reader view: its name, which operations it keeps, and the
/// crash point whose committed states a reader may see.
type CrashModel<'a> = (String, Box<dyn Fn(usize) -> bool + 'a>, usize);

/// The checks of [`lock_free_readers_see_committed_tables_at_every_crash_prefix`],
/// committing with `options` (a power loss as the folder-sync mode's model says).
fn lock_free_reader_views(options: DatasetOptions) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ordered_model = options.folder_sync == Some(FolderSync::Ordered);
    let dir = common::tempdir();
    let labels = || ArrayD::from_elem(IxDyn(&[4, 4]), 5u16);
    let appends: Vec<(&'static str, Commit)> = vec![
        (
            "create table",
            Box::new(|ds: &Dataset| {
                ds.append_rows(
                    "cells",
                    &numbered_rows("a", 0, 3),
                    Some(&TableSpec::default()),
                    Some("k1"),
                )
                .map(drop)
            }),
        ),
        (
            "append rows with a new region",
            Box::new(|ds: &Dataset| {
                ds.append_rows("cells", &numbered_rows("b", 3, 2), None, Some("k2"))
                    .map(drop)
            }),
        ),
        (
            "add labels",
            Box::new(move |ds: &Dataset| {
                ds.add_labels("a", labels().view(), &RasterOptions::default())
                    .map(drop)
            }),
        ),
        (
            "append rows",
            Box::new(|ds: &Dataset| {
                ds.append_rows("cells", &numbered_rows("a", 5, 4), None, Some("k3"))
                    .map(drop)
            }),
        ),
        (
            "remove labels",
            Box::new(|ds: &Dataset| ds.remove("a").map(drop)),
        ),
    ];
    // The element document after each commit (None before the table exists).
    let rec = record_workload_with(dir.path(), Recorder::default(), appends, &|_| {}, options);
    let element_doc = |root: &Path| -> Option<String> {
        std::fs::read_to_string(root.join("tables/cells/zarr.json")).ok()
    };
    // The recording keeps no per-generation copy: rebuild each committed state.
    let states = dir.path().join("states");
    std::fs::create_dir_all(&states).unwrap();
    let mut committed_docs = Vec::new();
    for (c, (_, stop)) in std::iter::once(&(0, 0))
        .chain(rec.bounds.iter())
        .enumerate()
    {
        let out = states.join(format!("committed-{c}"));
        replay(&rec, *stop, &|_| true, &out);
        committed_docs.push(element_doc(&out).map(|t| parse(&t)));
    }
    let legal_docs = |end: usize| -> Vec<Option<serde_json::Value>> {
        let mut legal = Vec::new();
        for (c, (start, stop)) in rec.bounds.iter().enumerate() {
            if end <= *start {
                return vec![committed_docs[c].clone()];
            }
            if end < *stop {
                return vec![committed_docs[c].clone(), committed_docs[c + 1].clone()];
            }
            legal = vec![committed_docs[c + 1].clone()];
        }
        legal
    };
    let mut folders = Vec::new();
    // States whose table files are the same as an earlier state's are read once.
    let mut seen_tables = std::collections::BTreeSet::new();
    let mut checked = 0;
    let ops = &rec.ops;
    for (end, &barrier) in ordered_barriers(ops).iter().enumerate() {
        // Each model: its name, what it keeps, and the crash point whose committed
        // states are legal for a reader (an ordered power loss that kept the
        // namespace operations before `cut` shows the files as a crash at `cut`
        // left them: the last commit may show its old state until recovery).
        let mut models: Vec<CrashModel<'_>> =
            vec![("process crash".into(), Box::new(|_: usize| true), end)];
        if ordered_model {
            let first_cut = barrier.map_or(0, |b| b + 1);
            let last_cut = if end % 5 == 0 { end } else { first_cut };
            for cut in first_cut..=last_cut {
                models.push((
                    format!("power loss keeping namespace operations before {cut}"),
                    Box::new(move |j: usize| ordered_keeps(ops, barrier, cut, j, end)),
                    cut,
                ));
            }
        } else {
            models.push((
                "power loss".into(),
                Box::new(move |j: usize| durable(ops, j, end)),
                end,
            ));
        }
        for (model, keep, legal_at) in models {
            let out = states.join(format!("prefix-{end}-{}", folders.len()));
            replay(&rec, end, &keep, &out);
            let what = format!("prefix {end} ({model})");
            // Every labels element the listing names exists.
            if let Ok(text) = std::fs::read_to_string(out.join("labels/zarr.json")) {
                let listed = parse(&text)["attributes"]["ome"]["labels"].clone();
                for name in listed.as_array().into_iter().flatten() {
                    let name = name.as_str().unwrap();
                    assert!(
                        out.join("labels").join(name).join("zarr.json").is_file(),
                        "{what}: labels/zarr.json lists {name}, which is not there"
                    );
                }
            }
            let doc = element_doc(&out).map(|t| {
                serde_json::from_str::<serde_json::Value>(&t)
                    .unwrap_or_else(|e| panic!("{what}: the element document does not parse: {e}"))
            });
            assert!(
                legal_docs(legal_at).contains(&doc),
                "{what}: the element document is none of the committed ones: {doc:?}"
            );
            if doc.is_some() && seen_tables.insert(common::tree_files(&out.join("tables/cells"))) {
                folders.push((what, out));
            } else {
                let _ = std::fs::remove_dir_all(&out);
            }
            checked += 1;
        }
    }
    // zarr-python reads the table of every state, and of the final one.
    let listing: String = folders
        .iter()
        .map(|(_, f)| format!("{}\n", f.display()))
        .chain(std::iter::once(format!("{}\n", rec.root.display())))
        .collect();
    let listing_file = dir.path().join("states.txt");
    std::fs::write(&listing_file, listing).unwrap();
    let out = std::process::Command::new(common::python())
        .arg(common::repo().join("tests/interop/table_views.py"))
        .arg("cells")
        .arg(&listing_file)
        .output()
        .expect("run table_views.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let views: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let final_view = &views[rec.root.to_str().unwrap()];
    let lengths: Vec<u64> = rec
        .snaps
        .iter()
        .filter_map(|s| s.tables.get("cells").copied())
        .collect();
    let mut lengths_seen = std::collections::BTreeSet::new();
    for (what, folder) in &folders {
        let view = &views[folder.to_str().unwrap()];
        assert!(
            view.get("error").is_none(),
            "{what}: zarr-python failed: {view}"
        );
        let n = view["obs/_index"]["shape"][0].as_u64().unwrap();
        lengths_seen.insert(n);
        assert!(
            lengths.contains(&n),
            "{what}: {n} rows is no committed length {lengths:?}"
        );
        for (node, seen) in view.as_object().unwrap() {
            let shape = seen["shape"].as_array().unwrap();
            if node.starts_with("obs/") && !node.ends_with("categories") {
                assert_eq!(
                    shape[0].as_u64(),
                    Some(n),
                    "{what}: {node} has {shape:?}, obs {n}"
                );
            }
            let values = seen["values"].as_array().unwrap();
            let committed = final_view[node]["values"].as_array().unwrap();
            assert_eq!(
                values.as_slice(),
                &committed[..values.len()],
                "{what}: {node} holds rows that were never committed"
            );
        }
    }
    eprintln!(
        "lock-free reader view: {checked} crash states, {} with the table read by zarr-python",
        folders.len()
    );
    // Every committed length of the table was seen by some crash state.
    assert_eq!(lengths_seen, lengths.iter().copied().collect());
}

fn parse(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("json")
}

/// The outcome of the queued append of [`combined_commit`], as its caller got it.
static QUEUED_OUTCOME: Mutex<Option<(u64, u64)>> = Mutex::new(None);

/// One combined commit (spec/commit-protocol.md §12): a transaction holds the lock
/// while another thread's `append_rows` queues; the transaction's commit takes it.
fn combined_commit(ds: &Dataset) -> spatialzarr::Result<()> {
    let queue = ds.root().join(".spatialzarr/queue");
    let mut txn = ds.write()?;
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| ds.append_rows("cells", &rows("a", 4), None, Some("queued")));
        while std::fs::read_dir(&queue).map_or(0, |d| d.count()) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        txn.append_rows("cells", &rows("a", 2), None, Some("own"))?;
        txn.commit()?;
        let outcome = waiter.join().expect("waiter")?;
        *QUEUED_OUTCOME.lock().unwrap() = Some((outcome.start, outcome.end));
        Ok(())
    })
}

/// Whether the raw crashed state `out` (before any recovery) tells the queued caller
/// it was committed: its `ok` outcome is on disk, or a decided journal carries it
/// (an undecided one, torn or missing a file it requires, is withdrawn).
fn outcome_promised(out: &Path) -> Option<(u64, u64)> {
    let hidden = out.join(".spatialzarr");
    let from_doc = |doc: &serde_json::Value| {
        (doc["status"] == "ok").then(|| {
            let append = &doc["append"];
            (
                append["start"].as_u64().unwrap(),
                append["end"].as_u64().unwrap(),
            )
        })
    };
    if let Some(FoundJournal::Decided(journal)) = Journal::load(&hidden).expect("journal reads") {
        for step in &journal.steps {
            if let Step::Write { path, text } = step
                && path.ends_with("outcome.json")
            {
                return from_doc(&parse(text));
            }
        }
    }
    let staging = std::fs::read_dir(hidden.join("staging")).ok()?;
    for entry in staging.flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path().join("outcome.json")) {
            return from_doc(&parse(&text));
        }
    }
    None
}

#[test]
fn every_crash_prefix_of_a_combined_commit_is_old_or_new_with_consistent_outcomes() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let workload: Vec<(&'static str, Commit)> = vec![
        (
            "create table",
            Box::new(|ds: &Dataset| {
                ds.append_rows(
                    "cells",
                    &rows("a", 3),
                    Some(&TableSpec::default()),
                    Some("k1"),
                )
                .map(drop)
            }),
        ),
        ("combined", Box::new(combined_commit)),
    ];
    let rec = record_workload(dir.path(), Recorder::default(), workload);
    let told = QUEUED_OUTCOME
        .lock()
        .unwrap()
        .expect("the queued append returned");
    let new = rec.snaps.last().unwrap();
    assert_eq!(new.tables["cells"], 3 + 2 + 4);
    assert_eq!(
        new.generation,
        rec.snaps[1].generation + 1,
        "one generation step"
    );
    let out = dir.path().join("crashed.zarr");
    let (mut promised, mut old) = (0, 0);
    for end in rec.bounds[1].0..=rec.ops.len() {
        replay(&rec, end, &|_| true, &out);
        let promise = outcome_promised(&out);
        verify(&rec, end, &out, &format!("combined commit, prefix {end}"));
        let state = snapshot(&out);
        if let Some(range) = promise {
            assert_eq!(range, told, "prefix {end}: the outcome names other rows");
            assert_eq!(
                &state, new,
                "prefix {end}: an outcome promised a lost commit"
            );
            promised += 1;
        }
        if state == rec.snaps[1] {
            old += 1;
        }
    }
    assert!(promised > 0 && old > 0, "promised {promised}, old {old}");
}
