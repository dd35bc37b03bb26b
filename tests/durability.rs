//! Durability levels, counted through the storage observer: `Durability::Process`
//! performs exactly the operations of `Durability::Full` except every fsync; `Full`
//! issues its fsyncs in few parallel rounds (spec/commit-protocol.md §11). And the
//! level's choice: option, `--durability`, `SPATIALZARR_DURABILITY`. And what a commit
//! interrupted while applying its decided journal leaves to `check` and `recover`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, IxDyn};
use spatialzarr::storage::trace::{FsObserver, FsOp, set_observer};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions, Durability, FolderSync, RasterOptions};

/// The observer is process-wide: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Default)]
struct Recorder(Mutex<Vec<FsOp>>);

impl FsObserver for Recorder {
    fn before(&self, op: &FsOp) -> std::io::Result<()> {
        self.0.lock().unwrap().push(op.clone());
        Ok(())
    }
}

fn rows(n: i64) -> RowBatch {
    common::region_rows("tile", n)
}

/// The options of `durability`, fsyncing every folder a commit changes whatever the
/// filesystem (the counts below do not depend on where the test runs).
fn options(durability: Durability) -> DatasetOptions {
    DatasetOptions {
        durability: Some(durability),
        folder_sync: Some(FolderSync::Strict),
        ..DatasetOptions::default()
    }
}

/// A dataset with a table of 1,000 rows (chunks partly filled), at `durability`.
fn prepared(dir: &Path, durability: Durability) -> Dataset {
    prepared_with(dir, options(durability))
}

/// [`prepared`] with any options.
fn prepared_with(dir: &Path, options: DatasetOptions) -> Dataset {
    let name = format!(
        "{}-{}.zarr",
        options.durability.unwrap_or_default(),
        options.folder_sync.unwrap_or_default()
    );
    let ds = Dataset::create(&dir.join(name), options).unwrap();
    ds.append_rows("cells", &rows(1000), Some(&TableSpec::default()), None)
        .unwrap();
    ds
}

/// The operations of one call, recorded.
fn record(call: impl FnOnce()) -> Vec<FsOp> {
    let recorder = Arc::new(Recorder::default());
    set_observer(Some(recorder.clone()));
    call();
    set_observer(None);
    recorder.0.lock().unwrap().clone()
}

fn add_labels(ds: &Dataset) {
    let labels = ArrayD::from_elem(IxDyn(&[32, 32]), 7u32);
    ds.add_labels("tile", labels.view(), &RasterOptions::default())
        .unwrap();
}

fn append_rows(ds: &Dataset) {
    ds.append_rows("cells", &rows(1000), None, Some("run1/fov1"))
        .unwrap();
}

fn is_fsync(op: &FsOp) -> bool {
    matches!(op, FsOp::Fsync(_) | FsOp::FsyncDir(_) | FsOp::FsyncRound(_))
}

/// An operation's kind and its path(s) below `root`, with the unique parts of
/// temporary and staging names left out.
fn shape(op: &FsOp, root: &Path) -> String {
    let rel = |p: &PathBuf| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .components()
            .map(|c| {
                let c = c.as_os_str().to_string_lossy();
                match c.find("sz-tmp-").or_else(|| c.find("sz-swap-")) {
                    Some(at) => format!("{}*", &c[..at + 7]),
                    None if c.len() >= 20 && c.chars().any(|ch| ch.is_ascii_digit()) => {
                        "<id>".to_string()
                    }
                    None => c.into_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    match op {
        FsOp::CreateFile(p) => format!("create {}", rel(p)),
        FsOp::Write(p, bytes) => format!("write {} ({} bytes)", rel(p), bytes.len()),
        FsOp::Fsync(p) => format!("fsync {}", rel(p)),
        FsOp::Rename(a, b) => format!("rename {} {}", rel(a), rel(b)),
        FsOp::Exchange(a, b) => format!("exchange {} {}", rel(a), rel(b)),
        FsOp::Mkdir(p) => format!("mkdir {}", rel(p)),
        FsOp::Unlink(p) => format!("unlink {}", rel(p)),
        FsOp::RemoveTree(p) => format!("remove {}", rel(p)),
        FsOp::FsyncDir(p) => format!("fsync folder {}", rel(p)),
        FsOp::FsyncRound(n) => format!("round of {n}"),
        // Kinds the observer learns later are shown as they print.
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// The fsync rounds of `ops`: how many fsyncs each round issued together.
pub fn rounds(ops: &[FsOp]) -> Vec<usize> {
    let mut rounds = Vec::new();
    let mut owed = 0;
    for op in ops {
        match op {
            FsOp::FsyncRound(n) => {
                assert_eq!(owed, 0, "a round began before the last one's fsyncs");
                assert!(*n > 0, "an empty round");
                rounds.push(*n);
                owed = *n;
            }
            FsOp::Fsync(_) | FsOp::FsyncDir(_) => {
                assert!(owed > 0, "an fsync outside a round: {op:?}");
                owed -= 1;
            }
            _ => {}
        }
    }
    assert_eq!(owed, 0, "a round's fsyncs are missing");
    rounds
}

#[test]
fn process_level_makes_no_fsync_and_otherwise_the_same_operations_as_full() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let full = prepared(dir.path(), Durability::Full);
    let process = prepared(dir.path(), Durability::Process);
    type Call = fn(&Dataset);
    for (what, call) in [
        ("add_labels", add_labels as Call),
        ("append_rows", append_rows as Call),
    ] {
        let with_fsync = record(|| call(&full));
        let without = record(|| call(&process));
        let fsyncs = with_fsync.iter().filter(|op| is_fsync(op)).count();
        assert!(fsyncs > 0, "{what}: Full made no fsync");
        let round_sizes = rounds(&with_fsync);
        eprintln!(
            "{what}: Full made {} operations, {} fsyncs in {} rounds {round_sizes:?}",
            with_fsync.len(),
            fsyncs - round_sizes.len(),
            round_sizes.len(),
        );
        assert!(
            !without.iter().any(is_fsync),
            "{what}: Process made an fsync: {:?}",
            without.iter().find(|op| is_fsync(op))
        );
        let full_rest: Vec<String> = with_fsync
            .iter()
            .filter(|op| !is_fsync(op))
            .map(|op| shape(op, full.root()))
            .collect();
        let process_all: Vec<String> = without.iter().map(|op| shape(op, process.root())).collect();
        assert_eq!(
            full_rest, process_all,
            "{what}: Process did not perform Full's operations without the fsyncs"
        );
    }
    // Both levels left the same committed state.
    for ds in [&full, &process] {
        assert_eq!(ds.table_info("cells").unwrap().n_obs, 2000);
        assert!(ds.check(true).unwrap().is_ok());
    }
}

#[test]
fn the_option_wins_over_the_environment_and_a_bad_level_is_refused() {
    let dir = common::tempdir();
    let path = dir.path().join("env.zarr");
    let p = path.to_str().unwrap();
    let run = |env: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(common::cli());
        command.args(args).stdin(std::process::Stdio::null());
        match env {
            Some(value) => command.env("SPATIALZARR_DURABILITY", value),
            None => command.env_remove("SPATIALZARR_DURABILITY"),
        };
        command.output().unwrap()
    };
    let out = run(Some("fast"), &["init", p]);
    common::assert_fails(&out, 1, &["SPATIALZARR_DURABILITY=fast", "full or process"]);
    assert!(!path.exists(), "a refused init created the dataset");
    let out = run(Some("fast"), &["init", p, "--durability", "process"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(None, &["rm", p, "nothing", "--durability", "sometimes"]);
    common::assert_fails(&out, 2, &["sometimes", "full or process"]);
    let help = run(None, &["append-rows", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains(spatialzarr::storage::durability::PROCESS_GUARANTEE),
        "the help of --durability does not state what process risks: {help}"
    );
    // The library: explicit option, then environment (as the CLI child saw it), then
    // Full.
    let ds = Dataset::open(&path, options(Durability::Process)).unwrap();
    assert_eq!(ds.durability(), Durability::Process);
}

/// The fsync rounds of `ops` that belong to the commit: those from the first
/// operation outside the staging folders on (staging comes before it, without the
/// lock, and touches nothing else).
fn commit_rounds(ops: &[FsOp]) -> (Vec<usize>, Vec<usize>) {
    let staging = |p: &std::path::Path| {
        p.components()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0].as_os_str() == ".spatialzarr" && w[1].as_os_str() == "staging")
    };
    let split = ops
        .iter()
        .position(|op| match op {
            FsOp::CreateFile(p)
            | FsOp::Write(p, _)
            | FsOp::Fsync(p)
            | FsOp::Mkdir(p)
            | FsOp::Unlink(p)
            | FsOp::RemoveTree(p)
            | FsOp::FsyncDir(p)
            | FsOp::Rename(p, _)
            | FsOp::Exchange(p, _) => !staging(p),
            FsOp::FsyncRound(_) => false,
        })
        .expect("the commit changed nothing outside staging");
    // The round announcement just before the split belongs to the commit.
    let split = if split > 0 && matches!(ops[split - 1], FsOp::FsyncRound(_)) {
        split - 1
    } else {
        split
    };
    assert!(
        ops[split..]
            .iter()
            .any(|op| matches!(op, FsOp::Write(p, _) if p.ends_with(".spatialzarr/journal.json"))),
        "the commit wrote no journal"
    );
    (rounds(&ops[..split]), rounds(&ops[split..]))
}

/// Sequential fsync rounds of one uncontended `add_labels` and one keyed
/// `append_rows` (1,000 rows) into a dataset that has labels and keyed appends
/// already, counted through the observer: staging 1 round (before the lock: the
/// files, written in place, and their folders); under the lock 2 for the labels, 3
/// for the rows (spec/commit-protocol.md §3.3, §4).
#[test]
fn fsync_rounds_per_commit() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let ds = prepared(dir.path(), Durability::Full);
    let labels = ArrayD::from_elem(IxDyn(&[32, 32]), 3u32);
    ds.add_labels("first", labels.view(), &RasterOptions::default())
        .unwrap();
    ds.append_rows("cells", &rows(10), None, Some("run0/fov0"))
        .unwrap();
    let (staging, commit) = commit_rounds(&record(|| add_labels(&ds)));
    eprintln!("add_labels: staging rounds {staging:?}, commit rounds {commit:?}");
    assert_eq!(staging.len(), 1, "staging: {staging:?}");
    assert_eq!(commit.len(), 2, "add_labels commit: {commit:?}");
    let (before, commit) = commit_rounds(&record(|| append_rows(&ds)));
    eprintln!("append_rows: commit rounds {commit:?}");
    assert!(before.is_empty(), "an append stages nothing: {before:?}");
    assert_eq!(commit.len(), 3, "append_rows commit: {commit:?}");
    // The first round carries every row chunk; the second, the journal, the
    // documents and the rows' folders.
    assert!(
        commit[0] >= 3 && commit[1] >= 5,
        "append_rows rounds: {commit:?}"
    );
    assert_eq!(ds.table_info("cells").unwrap().n_obs, 2010);
}

/// With `FolderSync::Ordered` (ext4, xfs) no folder is fsynced and each call saves
/// its last round: staging 1, then 1 under the lock for the labels (the journal and
/// the documents written ahead), 2 for the rows (row chunks; journal and documents).
/// Every file fsynced in strict mode is fsynced here too.
#[test]
fn ordered_folder_sync_fsyncs_every_file_and_no_folder() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let files = |ops: &[FsOp]| ops.iter().filter(|op| matches!(op, FsOp::Fsync(_))).count();
    let mut by_mode = Vec::new();
    for mode in [FolderSync::Strict, FolderSync::Ordered] {
        let ds = prepared_with(
            dir.path(),
            DatasetOptions {
                folder_sync: Some(mode),
                ..options(Durability::Full)
            },
        );
        assert_eq!(ds.trusts_folder_order(), mode == FolderSync::Ordered);
        let labels = ArrayD::from_elem(IxDyn(&[32, 32]), 3u32);
        ds.add_labels("first", labels.view(), &RasterOptions::default())
            .unwrap();
        ds.append_rows("cells", &rows(10), None, Some("run0/fov0"))
            .unwrap();
        let add = record(|| add_labels(&ds));
        let append = record(|| append_rows(&ds));
        assert_eq!(ds.table_info("cells").unwrap().n_obs, 2010);
        by_mode.push((mode, add, append));
    }
    let (_, strict_add, strict_append) = &by_mode[0];
    let (_, add, append) = &by_mode[1];
    for (what, ops) in [("add_labels", add), ("append_rows", append)] {
        let folders: Vec<_> = ops
            .iter()
            .filter(|op| matches!(op, FsOp::FsyncDir(_)))
            .collect();
        assert!(folders.is_empty(), "{what} fsynced folders: {folders:?}");
    }
    assert_eq!(files(add), files(strict_add), "add_labels files fsynced");
    assert_eq!(
        files(append),
        files(strict_append),
        "append_rows files fsynced"
    );
    let (staging, commit) = commit_rounds(add);
    eprintln!("ordered add_labels: staging rounds {staging:?}, commit rounds {commit:?}");
    assert_eq!(staging.len(), 1, "staging: {staging:?}");
    assert_eq!(commit.len(), 1, "add_labels commit: {commit:?}");
    let (before, commit) = commit_rounds(append);
    eprintln!("ordered append_rows: commit rounds {commit:?}");
    assert!(before.is_empty(), "an append stages nothing: {before:?}");
    assert_eq!(commit.len(), 2, "append_rows commit: {commit:?}");
}

/// Fails the publication of `labels/zarr.json`: the commit's journal is decided, its
/// element folder is in place, its listing document is not.
struct FailListing;

impl FsObserver for FailListing {
    fn before(&self, op: &FsOp) -> std::io::Result<()> {
        match op {
            FsOp::Rename(_, to) if to.ends_with("labels/zarr.json") => {
                Err(std::io::Error::other("injected: the writer dies here"))
            }
            _ => Ok(()),
        }
    }
}

/// A dataset at `Full` in `dir` holding the 8x8 labels `first`, and those labels.
fn with_first_labels(dir: &Path) -> (Dataset, ArrayD<u32>) {
    let ds = prepared(dir, Durability::Full);
    let labels = ArrayD::from_elem(IxDyn(&[8, 8]), 3u32);
    ds.add_labels("first", labels.view(), &RasterOptions::default())
        .unwrap();
    (ds, labels)
}

/// A commit interrupted while applying its decided journal: `check` names the
/// interrupted commit (and finds the half-applied state: a labels folder that
/// `labels/zarr.json` does not list yet); `recover` finishes it; then the check is
/// clean and the element is there, listed.
#[test]
fn a_commit_interrupted_while_applying_is_reported_then_finished_by_recover() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let (ds, labels) = with_first_labels(dir.path());
    let before = ds.generation().unwrap();
    set_observer(Some(Arc::new(FailListing)));
    let failed = ds.add_labels("second", labels.view(), &RasterOptions::default());
    set_observer(None);
    let error = failed.expect_err("the listing's publication failed");
    assert!(
        matches!(error, spatialzarr::Error::CommitPending(_)),
        "{error}"
    );
    assert!(dir.path().join("full-strict.zarr/labels/second").is_dir());

    let report = ds.check(false).unwrap();
    let pending = format!("generation {}", before + 1);
    assert!(
        report.warnings.iter().any(|w| w.contains(&pending)),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("labels/zarr.json lists")),
        "the half-applied state: {:?}",
        report.problems
    );

    let recovered = ds.recover().unwrap();
    assert_eq!(recovered.finished_commit, Some(before + 1));
    let report = ds.check(true).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report:?}");
    assert_eq!(ds.list().unwrap().labels, ["first", "second"]);
}

/// A journal that was never decided (torn while being written, or naming a row chunk
/// that is not there as it says): `check` warns that it was never decided, the next
/// reader withdraws it, and the dataset is as before, unchanged.
#[test]
fn a_journal_never_decided_is_withdrawn_and_changes_nothing() {
    use spatialzarr::commit::{FoundJournal, Journal, Required, Step};
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let (ds, labels) = with_first_labels(dir.path());
    let generation = ds.generation().unwrap();
    let before = ds.list().unwrap();
    let journal = Journal {
        version: spatialzarr::commit::journal::JOURNAL_VERSION,
        generation: generation + 1,
        steps: vec![Step::Write {
            path: "labels/first/zarr.json".into(),
            text: "{}".into(),
        }],
        cleanup: vec![],
        requires: vec![Required::of("tables/cells/obs/area/c/9".into(), b"rows")],
    };
    let whole = journal.to_bytes();
    let path = ds.root().join(".spatialzarr/journal.json");
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("torn", whole[..whole.len() - 3].to_vec()),
        ("missing a required chunk", whole.clone()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let found = ds.pending_journal().unwrap();
        assert!(
            matches!(found, Some(FoundJournal::Undecided { .. })),
            "{what}: {found:?}"
        );
        let report = ds.check(true).unwrap();
        assert!(
            report.warnings.iter().any(|w| w.contains("never decided")),
            "{what}: {:?}",
            report.warnings
        );
        // A reader finds it, takes the write lock and withdraws it.
        assert_eq!(ds.list().unwrap(), before, "{what}");
        assert!(!path.exists(), "{what}: the journal is still there");
        assert_eq!(ds.generation().unwrap(), generation, "{what}");
        assert!(ds.check(true).unwrap().is_ok(), "{what}");
        let pixels: ArrayD<u32> = ds.read_raster("first", 0).unwrap();
        assert_eq!(pixels, labels, "{what}");
    }
}

/// Records every operation and fails the first fsync of a file written ahead of the
/// journal once the journal is written: the round that decides the commit fails.
#[derive(Default)]
struct FailDecision {
    ops: Mutex<Vec<FsOp>>,
}

impl FsObserver for FailDecision {
    fn before(&self, op: &FsOp) -> std::io::Result<()> {
        let mut ops = self.ops.lock().unwrap();
        let journal_written = ops
            .iter()
            .any(|o| matches!(o, FsOp::Write(p, _) if p.ends_with(".spatialzarr/journal.json")));
        let failed_before = ops.iter().any(|o| matches!(o, FsOp::FsyncRound(0)));
        ops.push(op.clone());
        match op {
            FsOp::Fsync(p)
                if journal_written
                    && !failed_before
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".sz-tmp")) =>
            {
                // Marks the failure (a round of 0 fsyncs is never announced).
                ops.push(FsOp::FsyncRound(0));
                Err(std::io::Error::from_raw_os_error(5))
            }
            _ => Ok(()),
        }
    }
}

/// With `FolderSync::Ordered`, a commit whose deciding round fails still withdraws its
/// journal durably: its caller is told nothing was committed, and no later journal
/// would make the removal durable, so the hidden folder is fsynced after it (without
/// that, a power loss could bring back a complete journal that recovery replays).
#[test]
fn a_failed_decision_is_withdrawn_durably_in_ordered_mode() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let ds = prepared_with(
        dir.path(),
        DatasetOptions {
            folder_sync: Some(FolderSync::Ordered),
            ..options(Durability::Full)
        },
    );
    let observer = Arc::new(FailDecision::default());
    set_observer(Some(observer.clone()));
    let result = ds.append_rows("cells", &rows(10), None, Some("refused"));
    set_observer(None);
    let err = result.expect_err("the round deciding the commit failed");
    assert!(
        !matches!(err, spatialzarr::Error::CommitPending(_)),
        "reported as pending: {err}"
    );
    let ops = observer.ops.lock().unwrap().clone();
    let removed = ops
        .iter()
        .rposition(|op| matches!(op, FsOp::Unlink(p) if p.ends_with(".spatialzarr/journal.json")))
        .expect("the journal was withdrawn");
    assert!(
        ops[removed..]
            .iter()
            .any(|op| matches!(op, FsOp::FsyncDir(p) if p.ends_with(".spatialzarr"))),
        "the withdrawal was not made durable: {:?}",
        &ops[removed..]
    );
    assert_eq!(ds.table_info("cells").unwrap().n_obs, 1000);
    assert!(ds.check(true).unwrap().is_ok());
}
