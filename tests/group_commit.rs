//! Group commit (spec/commit-protocol.md §12), with real processes: writers that find
//! the write lock busy queue their request, and the holder's commit takes them all in
//! one journal; each caller gets its own outcome or its own error.
//!
//! The lock is held by `spatialzarr lock DS -- sh -c '... wait for a file ...'`, so
//! that every writer started meanwhile queues; the test waits until the queue holds
//! them all (a count, never a time), then lets the holder go.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use ndarray::{Array2, ArrayD};
use serde_json::Value;
use spatialzarr::storage::trace::{FsObserver, FsOp, set_observer};
use spatialzarr::table::{RowBatch, TableSpec, XRows, XSpec};
use spatialzarr::{Dataset, DatasetOptions};

use common::{cli, sz, sz_ok, tempdir};

/// Rows of each queued append.
const ROWS: usize = 20;
/// Columns of X.
const VARS: usize = 3;

/// A dataset with the table `cells` (one row, key `init`, a dense X).
fn dataset(dir: &Path) -> PathBuf {
    let ds = dir.join("ds");
    sz_ok(&[cli_arg("init"), ds.clone().into_os_string()]);
    let (csv, x) = rows_files(dir, "init", 0, 1);
    sz_ok(&append_args(&ds, &csv, &x, "init"));
    ds
}

/// The arguments of `spatialzarr append-rows DS cells` of the rows in `csv` and `x`
/// with key `key`.
fn append_args<'a>(ds: &'a Path, csv: &'a Path, x: &'a Path, key: &'a str) -> Vec<&'a OsStr> {
    vec![
        "append-rows".as_ref(),
        ds.as_os_str(),
        "cells".as_ref(),
        "--csv".as_ref(),
        csv.as_os_str(),
        "--x-npy".as_ref(),
        x.as_os_str(),
        "--key".as_ref(),
        key.as_ref(),
    ]
}

fn cli_arg(s: &str) -> std::ffi::OsString {
    s.into()
}

/// The area of row `j` of the append numbered `n`: tells every row apart.
fn area(n: usize, j: usize) -> f64 {
    (n * 1000 + j) as f64 + 0.5
}

/// A CSV of `rows` rows of append `n` and its X (`X[j][v] = area + v`).
fn rows_files(dir: &Path, name: &str, n: usize, rows: usize) -> (PathBuf, PathBuf) {
    let csv = dir.join(format!("{name}.csv"));
    let mut text = String::from("instance_id,region,area\n");
    for j in 0..rows {
        text.push_str(&format!("{},r{n},{}\n", n * 1000 + j, area(n, j)));
    }
    std::fs::write(&csv, text).unwrap();
    let x = dir.join(format!("{name}.npy"));
    let values = Array2::from_shape_fn((rows, VARS), |(j, v)| area(n, j) + v as f64);
    ndarray_npy::write_npy(&x, &values).unwrap();
    (csv, x)
}

/// A 16x16 labels `.npy`.
fn labels_file(dir: &Path, name: &str, value: u16) -> PathBuf {
    let path = dir.join(format!("{name}.npy"));
    let pixels = ArrayD::from_elem(vec![16, 16], value);
    ndarray_npy::write_npy(&path, &pixels).unwrap();
    path
}

/// Holds the write lock of `ds` until `release` exists.
struct Holder {
    child: Child,
    release: PathBuf,
}

impl Holder {
    fn start(ds: &Path, dir: &Path) -> Self {
        let held = dir.join("held");
        let release = dir.join("release");
        let script = format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done",
            held.display(),
            release.display()
        );
        let child = Command::new(cli())
            .arg("lock")
            .arg(ds)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the holder to take the lock", || held.exists());
        Self { child, release }
    }

    fn release(mut self) {
        std::fs::write(&self.release, "").unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // A failed test must not leave the lock held by an orphan.
        let _ = std::fs::write(&self.release, "");
        let _ = self.child.wait();
    }
}

/// Polls `done` until it holds; panics after two minutes (a hang, not a timing).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Entries of the queue waiting (not claimed).
fn queued(ds: &Path) -> usize {
    std::fs::read_dir(ds.join(".spatialzarr/queue"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with("claimed-"))
                .count()
        })
        .unwrap_or(0)
}

fn generation(ds: &Path) -> u64 {
    let text = std::fs::read(ds.join(".spatialzarr/manifest.json")).unwrap();
    let doc: Value = serde_json::from_slice(&text).unwrap();
    doc["generation"].as_u64().unwrap()
}

/// Starts `spatialzarr append-rows DS cells` of append `n` with key `key`.
fn start_append(ds: &Path, dir: &Path, n: usize, key: &str, extra: &[&str]) -> Child {
    let (csv, x) = rows_files(dir, &format!("a{n}"), n, ROWS);
    let mut args = append_args(ds, &csv, &x, key);
    args.extend(extra.iter().map(OsStr::new));
    start_cli(&args)
}

/// Starts the CLI with `args` and `--json`, its output piped.
fn start_cli(args: &[&OsStr]) -> Child {
    Command::new(cli())
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn start_add_labels(ds: &Path, dir: &Path, name: &str, value: u16) -> Child {
    let npy = labels_file(dir, name, value);
    start_cli(&[
        "add-labels".as_ref(),
        ds.as_os_str(),
        name.as_ref(),
        "--npy".as_ref(),
        npy.as_os_str(),
    ])
}

/// Exit code, the JSON object on stdout (if any) and stderr.
fn finish(child: Child) -> (Option<i32>, Option<Value>, String) {
    let out = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout).ok();
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that rows `start..stop` of `cells` are exactly append `n`'s, in order.
fn assert_rows_of(ds: &Dataset, n: usize, start: u64, stop: u64) {
    assert_eq!(stop - start, ROWS as u64, "append {n} is not {ROWS} rows");
    let batch = ds.read_rows("cells", start..stop).unwrap();
    let areas = batch
        .column_by_name("area")
        .unwrap()
        .as_primitive::<Float64Type>();
    let expected: Vec<f64> = (0..ROWS).map(|j| area(n, j)).collect();
    assert_eq!(areas.values().to_vec(), expected, "rows of append {n}");
    let Some(XRows::Dense(x)) = ds.read_x_rows("cells", start..stop).unwrap() else {
        panic!("cells has a dense X");
    };
    let expected_x: Vec<f64> = (0..ROWS)
        .flat_map(|j| (0..VARS).map(move |v| area(n, j) + v as f64))
        .collect();
    assert_eq!(x, expected_x, "X rows of append {n}");
}

#[test]
fn ten_queued_requests_commit_in_one_generation_and_a_bad_one_fails_alone() {
    let dir = tempdir();
    let ds_path = dataset(dir.path());
    let holder = Holder::start(&ds_path, dir.path());
    let before = generation(&ds_path);
    // Seven good appends, one whose key is already committed with other rows, and two
    // labels.
    let mut appends: Vec<(usize, Child)> = (1..=7)
        .map(|n| {
            (
                n,
                start_append(&ds_path, dir.path(), n, &format!("k{n}"), &[]),
            )
        })
        .collect();
    let conflict = start_append(&ds_path, dir.path(), 8, "init", &[]);
    let labels: Vec<Child> = (0..2)
        .map(|i| start_add_labels(&ds_path, dir.path(), &format!("tile{i}"), i + 1))
        .collect();
    wait_for("10 queued requests", || queued(&ds_path) == 10);
    holder.release();

    let mut ranges = Vec::new();
    for (n, child) in appends.drain(..) {
        let (code, json, stderr) = finish(child);
        assert_eq!(code, Some(0), "append {n}: {stderr}");
        let json = json.expect("one JSON object");
        assert_eq!(json["generation"], before + 1, "append {n}: {json}");
        assert_eq!(json["applied"], true);
        ranges.push((
            n,
            json["start"].as_u64().unwrap(),
            json["stop"].as_u64().unwrap(),
        ));
    }
    let (code, json, stderr) = finish(conflict);
    assert_eq!(code, Some(1), "the conflicting append must fail: {json:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("idempotency key \"init\"") && stderr.contains("rows 0..1"),
        "{stderr}"
    );
    for (i, child) in labels.into_iter().enumerate() {
        let (code, json, stderr) = finish(child);
        assert_eq!(code, Some(0), "labels {i}: {stderr}");
        assert_eq!(json.unwrap()["generation"], before + 1);
    }
    // ONE generation step for all nine committed requests.
    assert_eq!(generation(&ds_path), before + 1);
    let ds = Dataset::open(&ds_path, DatasetOptions::default()).unwrap();
    let info = ds.table_info("cells").unwrap();
    assert_eq!(info.n_obs, 1 + 7 * ROWS as u64, "every row exactly once");
    ranges.sort_by_key(|r| r.1);
    let mut next = 1;
    for (n, start, stop) in ranges {
        assert_eq!(start, next, "appends are contiguous and disjoint");
        assert_rows_of(&ds, n, start, stop);
        next = stop;
    }
    assert_eq!(ds.list().unwrap().labels, ["tile0", "tile1"]);
    let pixels = ds.read_raster::<u16>("tile1", 0).unwrap();
    assert!(pixels.iter().all(|&p| p == 2));
    assert!(ds.check(true).unwrap().is_ok());
    assert_eq!(queued(&ds_path), 0);
    assert_no_leftovers(&ds_path);
}

/// Starts `spatialzarr set-transformations DS NAME` with the JSON `transformations`.
fn start_set_transformations(dir: &Path, ds: &Path, name: &str, transformations: &str) -> Child {
    let file = dir.join(format!("t-{name}-{}.json", transformations.len()));
    std::fs::write(&file, transformations).unwrap();
    start_cli(&[
        "set-transformations".as_ref(),
        ds.as_os_str(),
        name.as_ref(),
        "--transformations".as_ref(),
        file.as_os_str(),
    ])
}

/// The transformation to `global` of raster `name`, as stored.
fn global_scale(ds: &Dataset, name: &str) -> Option<Vec<f64>> {
    let spatialzarr::ElementInfo::Raster(info) = ds.info(name).unwrap() else {
        panic!("{name} is not a raster");
    };
    match info.transformations.0.get("global") {
        Some(spatialzarr::Transform::Scale(v)) => Some(v.clone()),
        _ => None,
    }
}

#[test]
fn queued_transformations_commit_together_and_bad_ones_fail_alone() {
    let dir = tempdir();
    let ds_path = dataset(dir.path());
    for (i, name) in ["tile0", "tile1"].into_iter().enumerate() {
        let npy = labels_file(dir.path(), name, i as u16 + 1);
        sz_ok(&[
            "add-labels".as_ref(),
            ds_path.as_os_str(),
            name.as_ref(),
            "--npy".as_ref(),
            npy.as_os_str(),
        ]);
    }
    let holder = Holder::start(&ds_path, dir.path());
    let before = generation(&ds_path);
    let scale = |s: f64| format!(r#"{{"global": {{"type": "scale", "scale": [{s}, {s}]}}}}"#);
    let good: Vec<(&str, Child)> = [("tile0", 0.5), ("tile1", 0.25)]
        .into_iter()
        .map(|(name, s)| {
            (
                name,
                start_set_transformations(dir.path(), &ds_path, name, &scale(s)),
            )
        })
        .collect();
    let missing = start_set_transformations(dir.path(), &ds_path, "tile9", &scale(2.0));
    let wrong_length = start_set_transformations(
        dir.path(),
        &ds_path,
        "tile0",
        r#"{"global": {"type": "scale", "scale": [1, 2, 3]}}"#,
    );
    let table = start_set_transformations(dir.path(), &ds_path, "cells", &scale(2.0));
    wait_for("5 queued requests", || queued(&ds_path) == 5);
    holder.release();

    for (name, child) in good {
        let (code, json, stderr) = finish(child);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        assert_eq!(json.unwrap()["generation"], before + 1, "{name}");
    }
    for (what, child, says) in [
        ("missing", missing, "tile9"),
        ("wrong length", wrong_length, "spatial axes"),
        ("table", table, "is a table"),
    ] {
        let (code, _, stderr) = finish(child);
        assert_eq!(code, Some(1), "{what} must fail: {stderr}");
        assert!(stderr.contains(says), "{what}: {stderr}");
    }
    // ONE generation step for both changes; each element has its own.
    assert_eq!(generation(&ds_path), before + 1);
    let ds = Dataset::open(&ds_path, DatasetOptions::default()).unwrap();
    assert_eq!(global_scale(&ds, "tile0"), Some(vec![0.5, 0.5]));
    assert_eq!(global_scale(&ds, "tile1"), Some(vec![0.25, 0.25]));
    assert!(ds.check(true).unwrap().is_ok());
    assert_eq!(queued(&ds_path), 0);
    assert_no_leftovers(&ds_path);
}

/// Nothing is left in the queue or the staging folder.
fn assert_no_leftovers(ds: &Path) {
    for folder in ["queue", "staging"] {
        let left: Vec<_> = std::fs::read_dir(ds.join(".spatialzarr").join(folder))
            .map(|e| e.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{folder} holds {left:?}");
    }
}

#[test]
fn a_waiter_that_times_out_withdraws_and_changes_nothing() {
    let dir = tempdir();
    let ds_path = dataset(dir.path());
    let holder = Holder::start(&ds_path, dir.path());
    let before = generation(&ds_path);
    let child = start_append(&ds_path, dir.path(), 1, "k1", &["--lock-timeout", "0.3"]);
    let (code, _, stderr) = finish(child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    assert_eq!(queued(&ds_path), 0, "the request was withdrawn");
    holder.release();
    assert_eq!(generation(&ds_path), before);
    let ds = Dataset::open(&ds_path, DatasetOptions::default()).unwrap();
    assert_eq!(ds.table_info("cells").unwrap().n_obs, 1);
    // The key is free: nothing of the withdrawn append was committed.
    let out = sz(&[
        "append-rows".as_ref(),
        ds_path.as_os_str(),
        "cells".as_ref(),
        "--csv".as_ref(),
        dir.path().join("a1.csv").as_os_str(),
        "--x-npy".as_ref(),
        dir.path().join("a1.npy").as_os_str(),
        "--key".as_ref(),
        "k1".as_ref(),
        "--json".as_ref(),
    ]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["applied"], true);
    assert_eq!(json["start"], 1);
    assert_no_leftovers(&ds_path);
}

#[test]
fn a_waiter_killed_while_queued_is_dropped_never_half_committed() {
    let dir = tempdir();
    let ds_path = dataset(dir.path());
    let holder = Holder::start(&ds_path, dir.path());
    let mut victim = start_append(&ds_path, dir.path(), 1, "k1", &[]);
    let survivor = start_append(&ds_path, dir.path(), 2, "k2", &[]);
    wait_for("2 queued requests", || queued(&ds_path) == 2);
    victim.kill().unwrap();
    victim.wait().unwrap();
    holder.release();
    let (code, json, stderr) = finish(survivor);
    assert_eq!(code, Some(0), "{stderr}");
    let json = json.unwrap();
    let ds = Dataset::open(&ds_path, DatasetOptions::default()).unwrap();
    let n_obs = ds.table_info("cells").unwrap().n_obs;
    // The victim's key: committed whole (its 20 rows) or not at all.
    let (victim_csv, victim_x) = (dir.path().join("a1.csv"), dir.path().join("a1.npy"));
    let retry: Value = serde_json::from_str(&sz_ok(&[
        "append-rows".as_ref(),
        ds_path.as_os_str(),
        "cells".as_ref(),
        "--csv".as_ref(),
        victim_csv.as_os_str(),
        "--x-npy".as_ref(),
        victim_x.as_os_str(),
        "--key".as_ref(),
        "k1".as_ref(),
        "--json".as_ref(),
    ]))
    .unwrap();
    let victim_committed = retry["applied"] == false;
    let expected = 1 + ROWS as u64 * if victim_committed { 2 } else { 1 };
    assert_eq!(n_obs, expected, "survivor {json}, victim retry {retry}");
    let (start, stop) = (
        json["start"].as_u64().unwrap(),
        json["stop"].as_u64().unwrap(),
    );
    assert_rows_of(&ds, 2, start, stop);
    let (start, stop) = (
        retry["start"].as_u64().unwrap(),
        retry["stop"].as_u64().unwrap(),
    );
    assert_rows_of(&ds, 1, start, stop);
    assert!(ds.check(true).unwrap().is_ok());
}

/// Blocks (forever) the first operation after the fsync round that follows the
/// journal's writing (the round that decides the commit): the combiner's commit is
/// then decided and nothing of it applied.
struct StopWhenDecided {
    /// 0: journal not written; 1: written; 2: its round announced.
    stage: std::sync::atomic::AtomicU8,
}

impl FsObserver for StopWhenDecided {
    fn before(&self, op: &FsOp) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let stage = self.stage.load(Ordering::SeqCst);
        match op {
            FsOp::Write(p, _) if stage == 0 && p.ends_with(".spatialzarr/journal.json") => {
                self.stage.store(1, Ordering::SeqCst);
            }
            FsOp::FsyncRound(_) if stage == 1 => self.stage.store(2, Ordering::SeqCst),
            // The round's fsyncs are announced before they run.
            FsOp::Fsync(_) | FsOp::FsyncDir(_) => {}
            _ if stage == 2 => {
                common::report("decided");
                loop {
                    std::thread::sleep(Duration::from_secs(60));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[test]
#[ignore]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    assert_eq!(role, "combiner");
    // Holds the write lock (an open transaction), waits for `go`, then commits one
    // append with whatever is queued, and stops once that commit is decided.
    let ds = Dataset::open(Path::new(&args[0]), DatasetOptions::default()).unwrap();
    let mut txn = ds.write().unwrap();
    common::report("holding");
    wait_for("go", || Path::new(&args[1]).exists());
    let obs = ds.read_rows("cells", 0..1).unwrap();
    let rows = RowBatch {
        obs,
        x: Some(XRows::Dense(vec![0.0, 1.0, 2.0])),
    };
    let spec = TableSpec {
        x: XSpec::None,
        ..TableSpec::default()
    };
    txn.append_rows("cells", &rows, Some(&spec), Some("combiner"))
        .unwrap();
    set_observer(Some(Arc::new(StopWhenDecided { stage: 0.into() })));
    let _ = txn.commit();
    unreachable!("the observer stops the commit");
}

#[test]
fn a_combiner_killed_after_deciding_leaves_the_batch_to_the_next_writer() {
    let dir = tempdir();
    let ds_path = dataset(dir.path());
    let before = generation(&ds_path);
    let go = dir.path().join("go");
    let combiner = common::LiveWorker::spawn(common::worker(
        "combiner",
        &[ds_path.display().to_string(), go.display().to_string()],
    ));
    combiner.expect("holding");
    let waiters: Vec<(usize, Child)> = (1..=3)
        .map(|n| {
            (
                n,
                start_append(&ds_path, dir.path(), n, &format!("k{n}"), &[]),
            )
        })
        .collect();
    wait_for("3 queued requests", || queued(&ds_path) == 3);
    std::fs::write(&go, "").unwrap();
    combiner.expect("decided");
    assert!(ds_path.join(".spatialzarr/journal.json").exists());
    drop(combiner); // SIGKILL: the journal stays, nothing of it applied
    // The waiters take the lock in turn: the first one's recovery finishes the batch,
    // and each reads its outcome from it.
    let mut ranges = Vec::new();
    for (n, child) in waiters {
        let (code, json, stderr) = finish(child);
        assert_eq!(code, Some(0), "waiter {n}: {stderr}");
        let json = json.unwrap();
        assert_eq!(json["generation"], before + 1, "waiter {n}: {json}");
        ranges.push((
            n,
            json["start"].as_u64().unwrap(),
            json["stop"].as_u64().unwrap(),
        ));
    }
    assert_eq!(generation(&ds_path), before + 1);
    let ds = Dataset::open(&ds_path, DatasetOptions::default()).unwrap();
    // The combiner's own row (1) and the three appends.
    assert_eq!(
        ds.table_info("cells").unwrap().n_obs,
        1 + 1 + 3 * ROWS as u64
    );
    for (n, start, stop) in ranges {
        assert_rows_of(&ds, n, start, stop);
    }
    assert!(ds.check(true).unwrap().is_ok());
}
