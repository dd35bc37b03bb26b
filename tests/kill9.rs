//! The kill -9 suite: writer processes killed at random instants, the dataset checked.
//!
//! Eight writer processes (workers of this test binary, using the library) loop
//! forever over a deterministic, per-worker sequence of operations: add a labels
//! element `w{w}_e{i}` with known pixels, append rows with the idempotency key
//! `w{w}-a{i}` to the table `cells` (created by the first append), append a part with
//! the key `w{w}-p{i}` to the points element `pts`, and now and then remove one of
//! its own elements. After each operation returns `Ok`, a worker reports
//! `ack {i} ...`. The driver (the test) keeps eight workers running and, after a
//! random 0–80 ms, SIGKILLs a random one and restarts it; the restarted worker
//! continues at the first operation not acknowledged and retries it with the same
//! name or key (exactly once: an add that finds its name taken, a remove that finds
//! its element gone, an append whose key is recorded, all count as done, but only for
//! that one retried operation).
//!
//! Every round (a fixed number of kills) the driver kills every worker, then checks:
//! a fresh writer gets the write lock within 1 s; `Dataset::check(true)` passes;
//! every acknowledged element exists with its exact pixels and every acknowledged
//! removal is gone; every acknowledged append's rows (table and points) are present
//! exactly once, contiguous, in each worker's order, at the range its acknowledgement
//! reported; the one unacknowledged operation per worker is wholly present or wholly
//! absent; nothing else is present; the table's regions equal the regions of its rows.
//!
//! The writers' `add_labels` and `append_rows` are single-operation calls: a writer
//! that finds the lock busy queues its request and the holder's commit takes it (group
//! commit, spec/commit-protocol.md §12), so the kills also hit combiners in the middle
//! of a batch and waiters at every step of 12.3; the checks above then hold for every
//! caller of a batch. The driver reports how many acknowledged operations there were
//! per generation step.
//!
//! The suite runs at both durability levels: `Durability::Full` (300 kills by default)
//! and `Durability::Process`, which never fsyncs (150 kills by default; the workers get
//! the level through `SPATIALZARR_DURABILITY`). The default run (about 20-30 s per
//! level in a debug build on 2 cores) fits the ordinary test run. The long form (reliability bar: at least 1,000 kills):
//!
//! ```text
//! SPATIALZARR_KILLS=1000 cargo test --release --test kill9 -- --nocapture
//! ```
//!
//! `SPATIALZARR_KILL_SEED=N` replays another operation sequence and kill schedule.
//! The dataset lives in `/dev/shm` when it exists (see [`scratch_dir`]);
//! `SPATIALZARR_KILL_DIR=/some/folder` puts it elsewhere (e.g. on a disk);
//! `SPATIALZARR_KILL_KEEP=/some/new/folder` keeps a copy of a dataset that failed
//! its verification there;
//! `tests/multinode.rs` puts it on a shared mount and sets `SPATIALZARR_NODE_ROOTS` so
//! that the workers alternate between two nodes' mounts.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use ndarray::{ArrayD, IxDyn};
use spatialzarr::commit::FoundJournal;
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions, Durability, Error, RasterOptions};

/// Concurrent writer processes.
const WORKERS: usize = 8;
/// Random kills of the default run.
const DEFAULT_KILLS: u64 = 300;
/// The default seed of the operation sequences and the kill schedule.
const DEFAULT_SEED: u64 = 0x5EED_0000_C0DE_0009;
/// Longest random pause between two kills (`SPATIALZARR_KILL_PAUSE_MS` changes it:
/// on a network filesystem an operation takes longer).
const MAX_PAUSE_MS: u64 = 80;
/// How long the workers may go without any acknowledgement before the test calls it a hang.
const STALL: Duration = Duration::from_secs(60);
/// The worker number of the points part the driver writes at creation.
const SEED_WORKER: i64 = 99;

// ---------------------------------------------------------------------------------
// The deterministic operation sequences.

/// splitmix64: tiny, fast and good enough to drive a schedule.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> Self {
        let mut rng = Self(seed);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One operation of a worker's sequence.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// Add labels `w{w}_e{i}` of `rows x cols` pixels.
    Add { rows: usize, cols: usize },
    /// Append `k` rows to `cells` with the key `w{w}-a{i}`.
    Rows { k: usize },
    /// Append a part of `k` points to `pts` with the key `w{w}-p{i}`.
    Points { k: usize },
    /// Remove the worker's own labels `w{w}_e{target}`.
    Remove { target: u64 },
}

/// Operation `i` of worker `w`, given the worker's elements alive before it.
fn plan(seed: u64, w: usize, i: u64, live: &[u64]) -> Op {
    let mut rng = SplitMix::new(
        seed ^ (w as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)
            ^ i.wrapping_mul(0x9FB2_1C65_1E98_DF25),
    );
    let roll = rng.below(100);
    if roll < 10 && !live.is_empty() {
        return Op::Remove {
            target: live[rng.below(live.len() as u64) as usize],
        };
    }
    if roll < 45 {
        Op::Add {
            rows: 2 + rng.below(15) as usize,
            cols: 2 + rng.below(15) as usize,
        }
    } else if roll < 80 {
        // Now and then a long append, which spans chunks and takes long enough to be
        // killed in the middle.
        let k = if rng.below(10) == 0 {
            500 + rng.below(2500)
        } else {
            1 + rng.below(40)
        };
        Op::Rows { k: k as usize }
    } else {
        Op::Points {
            k: 1 + rng.below(20) as usize,
        }
    }
}

/// The elements of worker `w` alive after its first `n` operations.
fn live_after(seed: u64, w: usize, n: u64) -> Vec<u64> {
    let mut live = Vec::new();
    for i in 0..n {
        let op = plan(seed, w, i, &live);
        apply(&mut live, i, &op);
    }
    live
}

fn apply(live: &mut Vec<u64>, i: u64, op: &Op) {
    match op {
        Op::Add { .. } => live.push(i),
        Op::Remove { target } => live.retain(|t| t != target),
        Op::Rows { .. } | Op::Points { .. } => {}
    }
}

fn element_name(w: usize, i: u64) -> String {
    format!("w{w}_e{i}")
}

/// `w{w}_e{i}` back to `(w, i)`.
fn parse_element(name: &str) -> Option<(usize, u64)> {
    let (w, i) = name.strip_prefix('w')?.split_once("_e")?;
    Some((w.parse().ok()?, i.parse().ok()?))
}

fn pixels(w: usize, i: u64, rows: usize, cols: usize) -> ArrayD<u32> {
    ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |ix| {
        ((w as u32) << 28) | ((i as u32 & 0xFFFF) << 12) | ((ix[0] * cols + ix[1]) as u32 & 0xFFF)
    })
}

fn region(w: i64) -> String {
    format!("r{w}")
}

fn instance(i: u64, seq: usize) -> i64 {
    (i * 10_000 + seq as u64) as i64
}

fn value(w: i64, i: u64, seq: usize) -> f64 {
    w as f64 * 1e9 + i as f64 * 1e4 + seq as f64 + 0.25
}

fn rows_batch(w: usize, i: u64, k: usize) -> RowBatch {
    let w = w as i64;
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from_iter_values((0..k).map(|_| region(w)))) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values((0..k).map(|s| instance(i, s)))),
        ),
        (
            "worker",
            Arc::new(Int64Array::from_iter_values((0..k).map(|_| w))),
        ),
        (
            "op",
            Arc::new(Int64Array::from_iter_values((0..k).map(|_| i as i64))),
        ),
        (
            "seq",
            Arc::new(Int64Array::from_iter_values((0..k).map(|s| s as i64))),
        ),
        (
            "val",
            Arc::new(Float64Array::from_iter_values(
                (0..k).map(|s| value(w, i, s)),
            )),
        ),
    ])
    .expect("rows batch");
    RowBatch { obs, x: None }
}

fn points_batch(w: i64, i: u64, k: usize) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "x",
            Arc::new(Float64Array::from_iter_values(
                (0..k).map(|s| value(w, i, s)),
            )) as ArrayRef,
        ),
        (
            "y",
            Arc::new(Float64Array::from_iter_values((0..k).map(|s| s as f64))),
        ),
        (
            "worker",
            Arc::new(Int64Array::from_iter_values((0..k).map(|_| w))),
        ),
        (
            "op",
            Arc::new(Int64Array::from_iter_values((0..k).map(|_| i as i64))),
        ),
        (
            "seq",
            Arc::new(Int64Array::from_iter_values((0..k).map(|s| s as i64))),
        ),
    ])
    .expect("points batch")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------
// The worker.

#[test]
#[ignore = "worker process entry point, run by the other tests"]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    match role.as_str() {
        "writer" => writer(&args),
        other => panic!("unknown role {other}"),
    }
}

/// Runs worker `args[1]`'s sequence from operation `args[2]` on dataset `args[0]`,
/// forever (until killed, or until its parent is gone).
fn writer(args: &[String]) {
    let path = PathBuf::from(&args[0]);
    let w: usize = args[1].parse().expect("worker number");
    let start: u64 = args[2].parse().expect("first operation");
    let seed: u64 = args[3].parse().expect("seed");
    let parent = std::os::unix::process::parent_id();
    let ds = Dataset::open(&path, DatasetOptions::default()).expect("worker opens the dataset");
    let mut live = live_after(seed, w, start);
    let table_spec = TableSpec::default();
    common::report("ready");
    let mut i = start;
    loop {
        if std::os::unix::process::parent_id() != parent {
            // The driver is gone: never write on unsupervised.
            return;
        }
        // Only the first operation may have been done by an earlier incarnation.
        let retry = i == start;
        let op = plan(seed, w, i, &live);
        let ack = match &op {
            Op::Add { rows, cols } => {
                let name = element_name(w, i);
                let data = pixels(w, i, *rows, *cols);
                match ds.add_labels(&name, data.view(), &RasterOptions::default()) {
                    Ok(_) => format!("ack {i} add {name} new"),
                    Err(Error::NameTaken { existing, .. }) if retry && existing == name => {
                        format!("ack {i} add {name} taken")
                    }
                    Err(e) => panic!("worker {w} op {i}: add {name} (retry: {retry}): {e}"),
                }
            }
            Op::Rows { k } => {
                let key = format!("w{w}-a{i}");
                let out = ds
                    .append_rows(
                        "cells",
                        &rows_batch(w, i, *k),
                        Some(&table_spec),
                        Some(&key),
                    )
                    .unwrap_or_else(|e| panic!("worker {w} op {i}: append rows {key}: {e}"));
                assert!(
                    out.applied || retry,
                    "worker {w} op {i}: the new key {key} was reported as already applied"
                );
                format!(
                    "ack {i} rows {key} {} {} {}",
                    out.start, out.end, out.applied
                )
            }
            Op::Points { k } => {
                let key = format!("w{w}-p{i}");
                let out = ds
                    .append_points("pts", &points_batch(w as i64, i, *k), Some(&key))
                    .unwrap_or_else(|e| panic!("worker {w} op {i}: append points {key}: {e}"));
                assert!(
                    out.applied || retry,
                    "worker {w} op {i}: the new key {key} was reported as already applied"
                );
                format!(
                    "ack {i} pts {key} {} {} {}",
                    out.start, out.end, out.applied
                )
            }
            Op::Remove { target } => {
                let name = element_name(w, *target);
                match ds.remove(&name) {
                    Ok(_) => format!("ack {i} rm {name} removed"),
                    Err(Error::NoSuchElement { .. }) if retry => format!("ack {i} rm {name} gone"),
                    Err(e) => panic!("worker {w} op {i}: remove {name} (retry: {retry}): {e}"),
                }
            }
        };
        common::report(&ack);
        apply(&mut live, i, &op);
        i += 1;
    }
}

// ---------------------------------------------------------------------------------
// The driver.

/// One running worker process.
struct Running {
    child: Child,
    reader: Option<JoinHandle<()>>,
}

/// The eight workers, their acknowledgements, and what was learned from them.
struct Driver {
    path: PathBuf,
    seed: u64,
    /// The durability level of the workers (`SPATIALZARR_DURABILITY`).
    durability: Durability,
    running: Vec<Option<Running>>,
    tx: Sender<(usize, String)>,
    rx: Receiver<(usize, String)>,
    /// Per worker: how many operations are acknowledged (the next one to do).
    acked: Vec<u64>,
    /// Per worker: the acknowledged operations, and the elements alive after them.
    ops: Vec<Vec<Op>>,
    live: Vec<Vec<u64>>,
    /// Reported row ranges of acknowledged appends: (worker, op) -> (start, end).
    row_ranges: HashMap<(usize, u64), (u64, u64)>,
    point_ranges: HashMap<(usize, u64), (u64, u64)>,
    last_ack: Instant,
    /// When each worker was spawned, until it reports ready.
    spawned: Vec<Option<Instant>>,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    kills: u64,
    round_kills: u64,
    rounds: u64,
    restarts: u64,
    acks: u64,
    retried_acks: u64,
    verified_ops: u64,
    inflight_present: u64,
    inflight_absent: u64,
    journals_pending: u64,
    started: u64,
    startup: Duration,
}

impl Driver {
    fn new(path: &Path, seed: u64, durability: Durability) -> Self {
        let (tx, rx) = channel();
        Self {
            path: path.to_path_buf(),
            seed,
            durability,
            running: (0..WORKERS).map(|_| None).collect(),
            tx,
            rx,
            acked: vec![0; WORKERS],
            ops: vec![Vec::new(); WORKERS],
            live: vec![Vec::new(); WORKERS],
            row_ranges: HashMap::new(),
            point_ranges: HashMap::new(),
            last_ack: Instant::now(),
            spawned: vec![None; WORKERS],
            stats: Stats::default(),
        }
    }

    fn start(&mut self, w: usize) {
        assert!(self.running[w].is_none());
        let args = [
            common::node_path(&self.path, w).display().to_string(),
            w.to_string(),
            self.acked[w].to_string(),
            self.seed.to_string(),
        ];
        let mut child = common::worker("writer", &args)
            .env("SPATIALZARR_DURABILITY", self.durability.as_str())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = self.tx.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, report)) = line.split_once(common::REPORT)
                    && tx.send((w, report.to_owned())).is_err()
                {
                    break;
                }
            }
        });
        self.spawned[w] = Some(Instant::now());
        self.running[w] = Some(Running {
            child,
            reader: Some(reader),
        });
    }

    /// SIGKILLs worker `w` and takes in every report it made before dying.
    fn kill(&mut self, w: usize) {
        let mut running = self.running[w].take().expect("worker running");
        if let Some(status) = running.child.try_wait().expect("try_wait") {
            panic!(
                "worker {w} exited by itself ({status}) before it was killed; see its stderr above"
            );
        }
        running.child.kill().expect("SIGKILL");
        running.child.wait().expect("wait worker");
        running
            .reader
            .take()
            .expect("reader")
            .join()
            .expect("reader thread");
        self.drain();
    }

    /// Takes in the reports available now.
    fn drain(&mut self) {
        while let Ok((w, line)) = self.rx.try_recv() {
            self.take_report(w, &line);
        }
    }

    fn take_report(&mut self, w: usize, line: &str) {
        if line == "ready" {
            if let Some(at) = self.spawned[w].take() {
                self.stats.startup += at.elapsed();
                self.stats.started += 1;
            }
            return;
        }
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            words.first(),
            Some(&"ack"),
            "worker {w}: unexpected report {line:?}"
        );
        let i: u64 = words[1].parse().expect("op index");
        assert_eq!(
            i, self.acked[w],
            "worker {w} acknowledged op {i} out of order: {line:?}"
        );
        let op = plan(self.seed, w, i, &self.live[w]);
        let retried = match (&op, words[2]) {
            (Op::Add { .. }, "add") => {
                assert_eq!(words[3], element_name(w, i), "{line}");
                words[4] == "taken"
            }
            (Op::Remove { target }, "rm") => {
                assert_eq!(words[3], element_name(w, *target), "{line}");
                words[4] == "gone"
            }
            (Op::Rows { k }, "rows") | (Op::Points { k }, "pts") => {
                let start: u64 = words[4].parse().unwrap();
                let end: u64 = words[5].parse().unwrap();
                assert_eq!(end - start, *k as u64, "worker {w}: {line}");
                let ranges = if words[2] == "rows" {
                    &mut self.row_ranges
                } else {
                    &mut self.point_ranges
                };
                ranges.insert((w, i), (start, end));
                words[6] == "false"
            }
            _ => panic!("worker {w} op {i} is {op:?}, but it acknowledged {line:?}"),
        };
        apply(&mut self.live[w], i, &op);
        self.ops[w].push(op);
        self.acked[w] = i + 1;
        self.stats.acks += 1;
        self.stats.retried_acks += u64::from(retried);
        self.last_ack = Instant::now();
    }

    fn kill_all(&mut self) {
        for w in 0..WORKERS {
            self.kill(w);
            self.stats.round_kills += 1;
        }
    }

    fn start_all(&mut self) {
        for w in 0..WORKERS {
            self.start(w);
        }
    }

    /// Checks the dataset against the acknowledgements (every worker is dead).
    fn verify(&mut self) {
        let ds = Dataset::open(&self.path, DatasetOptions::default()).expect("open");
        let began = Instant::now();
        let guard = ds
            .lock()
            .write(Some(Duration::from_secs(1)))
            .expect("a fresh writer gets the write lock within 1 s after the kills");
        assert!(began.elapsed() < Duration::from_secs(1));
        drop(guard);
        let report = ds.check(true).expect("check runs");
        if let Some(journal) = ds.pending_journal().expect("read journal") {
            // A kill in the middle of applying a decided journal: the check reports
            // the interrupted commit (and may find the half-applied state, say an
            // element folder not yet listed); recovery finishes it, after which the
            // dataset is consistent. A kill while the journal was being written
            // leaves one that was never decided: reported, and withdrawn.
            self.stats.journals_pending += 1;
            let pending = match (&journal, journal.generation()) {
                (FoundJournal::Decided(_), Some(g)) => format!("generation {g}"),
                _ => "never decided".to_owned(),
            };
            assert!(
                report.warnings.iter().any(|w| w.contains(&pending)),
                "check names the interrupted commit: {:?}",
                report.warnings
            );
            ds.recover().expect("recover after kills");
            assert!(ds.pending_journal().expect("read journal").is_none());
            let report = ds.check(true).expect("check runs");
            assert!(
                report.is_ok(),
                "check after kills and recovery: {:?}",
                report.problems
            );
        } else {
            assert!(report.is_ok(), "check after kills: {:?}", report.problems);
        }

        let mut expected_present: BTreeSet<String> = BTreeSet::new();
        let mut maybe_present: BTreeSet<String> = BTreeSet::new();
        let mut shapes: HashMap<(usize, u64), (usize, usize)> = HashMap::new();
        let mut all_ops: Vec<Vec<Op>> = Vec::new();
        let mut inflight: Vec<Op> = Vec::new();
        for w in 0..WORKERS {
            let (ops, live) = (self.ops[w].clone(), &self.live[w]);
            for (i, op) in ops.iter().enumerate() {
                if let Op::Add { rows, cols } = op {
                    shapes.insert((w, i as u64), (*rows, *cols));
                }
            }
            let next = plan(self.seed, w, self.acked[w], live);
            for &i in live {
                expected_present.insert(element_name(w, i));
            }
            match &next {
                Op::Add { rows, cols } => {
                    maybe_present.insert(element_name(w, self.acked[w]));
                    shapes.insert((w, self.acked[w]), (*rows, *cols));
                }
                Op::Remove { target } => {
                    let name = element_name(w, *target);
                    expected_present.remove(&name);
                    maybe_present.insert(name);
                }
                _ => {}
            }
            all_ops.push(ops);
            inflight.push(next);
        }
        self.stats.verified_ops += self.acked.iter().sum::<u64>();

        // Elements.
        let list = ds.list().expect("list");
        let labels: BTreeSet<String> = list.labels.iter().cloned().collect();
        assert_eq!(
            labels.len(),
            list.labels.len(),
            "a labels name listed twice"
        );
        for name in &expected_present {
            assert!(
                labels.contains(name),
                "acknowledged element {name} is missing"
            );
        }
        for name in &labels {
            assert!(
                expected_present.contains(name) || maybe_present.contains(name),
                "element {name} is present but was never acknowledged, or its removal was"
            );
            let (w, i) = parse_element(name).expect("our name");
            if let Some(&(rows, cols)) = shapes.get(&(w, i)) {
                let got = ds.read_raster::<u32>(name, 0).expect("read labels");
                assert_eq!(got, pixels(w, i, rows, cols), "pixels of {name}");
            }
        }
        for (w, next) in inflight.iter().enumerate() {
            match next {
                Op::Add { .. } => {
                    let present = labels.contains(&element_name(w, self.acked[w]));
                    self.count_inflight(present);
                }
                Op::Remove { target } => {
                    let present = labels.contains(&element_name(w, *target));
                    self.count_inflight(!present);
                }
                _ => {}
            }
        }
        assert_eq!(list.points, vec!["pts".to_string()]);

        // Table rows.
        let any_rows = (0..WORKERS).any(|w| {
            all_ops[w].iter().any(|op| matches!(op, Op::Rows { .. }))
                || matches!(inflight[w], Op::Rows { .. })
        });
        let acked_rows =
            (0..WORKERS).any(|w| all_ops[w].iter().any(|op| matches!(op, Op::Rows { .. })));
        if list.tables.is_empty() {
            assert!(!acked_rows, "rows were acknowledged but there is no table");
        } else {
            assert!(any_rows, "a table appeared without any append");
            assert_eq!(list.tables, vec!["cells".to_string()]);
            let info = ds.table_info("cells").expect("table info");
            let rows = ds.read_rows("cells", 0..info.n_obs).expect("read rows");
            let regions = rows
                .column_by_name("region")
                .expect("region")
                .as_dictionary::<Int32Type>();
            let names = regions.values().as_string::<i32>();
            let region_of: Vec<String> = (0..rows.num_rows())
                .map(|r| names.value(regions.keys().value(r) as usize).to_owned())
                .collect();
            let mut present_regions: Vec<String> = region_of.clone();
            present_regions.sort();
            present_regions.dedup();
            assert_eq!(
                info.regions, present_regions,
                "the table's regions differ from the regions of its rows"
            );
            let instances = int_column(&rows, "instance_id");
            let workers = int_column(&rows, "worker");
            let op_ids = int_column(&rows, "op");
            let seqs = int_column(&rows, "seq");
            let vals = rows
                .column_by_name("val")
                .expect("val")
                .as_primitive::<Float64Type>();
            for r in 0..rows.num_rows() {
                let (w, i, s) = (workers[r], op_ids[r] as u64, seqs[r]);
                assert_eq!(region_of[r], region(w), "row {r}: region");
                assert_eq!(instances[r], instance(i, s as usize), "row {r}: instance");
                assert_eq!(vals.value(r), value(w, i, s as usize), "row {r}: val");
            }
            let inflight_seen = self.check_runs("cells", &rows, &all_ops, &inflight, false);
            self.count_runs(&inflight, &inflight_seen, false);
        }

        // Points parts.
        let points = ds.read_points("pts").expect("read points");
        let inflight_seen = self.check_runs("pts", &points, &all_ops, &inflight, true);
        self.count_runs(&inflight, &inflight_seen, true);
    }

    fn count_inflight(&mut self, done: bool) {
        if done {
            self.stats.inflight_present += 1;
        } else {
            self.stats.inflight_absent += 1;
        }
    }

    fn count_runs(&mut self, inflight: &[Op], seen: &BTreeSet<usize>, points: bool) {
        for (w, op) in inflight.iter().enumerate() {
            let matches = if points {
                matches!(op, Op::Points { .. })
            } else {
                matches!(op, Op::Rows { .. })
            };
            if matches {
                self.count_inflight(seen.contains(&w));
            }
        }
    }

    /// Splits `batch` into runs of one append each and checks them against the
    /// acknowledgements: every acknowledged append exactly once, whole, contiguous, in
    /// each worker's order, at its reported range; the in-flight append whole or
    /// absent; nothing else. Returns the workers whose in-flight append is present.
    fn check_runs(
        &self,
        what: &str,
        batch: &RecordBatch,
        all_ops: &[Vec<Op>],
        inflight: &[Op],
        points: bool,
    ) -> BTreeSet<usize> {
        let workers = int_column(batch, "worker");
        let ops = int_column(batch, "op");
        let seqs = int_column(batch, "seq");
        let ranges = if points {
            &self.point_ranges
        } else {
            &self.row_ranges
        };
        let expected_len = |op: &Op| match (op, points) {
            (Op::Points { k }, true) | (Op::Rows { k }, false) => Some(*k),
            _ => None,
        };
        let mut runs: Vec<(i64, u64, usize, usize)> = Vec::new(); // worker, op, start, len
        for r in 0..batch.num_rows() {
            let (w, i, s) = (workers[r], ops[r] as u64, seqs[r]);
            match runs.last_mut() {
                Some(last) if last.0 == w && last.1 == i && s != 0 => {
                    assert_eq!(
                        s as usize, last.3,
                        "{what} row {r}: append w{w}/{i} is not contiguous or is partial (seq {s} after {} rows)",
                        last.3
                    );
                    last.3 += 1;
                }
                _ => {
                    assert_eq!(
                        s, 0,
                        "{what} row {r}: append w{w}/{i} starts in the middle (seq {s}): partial"
                    );
                    runs.push((w, i, r, 1));
                }
            }
        }
        let mut seen: BTreeMap<(i64, u64), usize> = BTreeMap::new();
        let mut last_op: HashMap<i64, u64> = HashMap::new();
        let mut inflight_seen = BTreeSet::new();
        for &(w, i, start, len) in &runs {
            if w == SEED_WORKER && points {
                assert_eq!((i, start, len), (0, 0, 3), "{what}: the seed part");
                continue;
            }
            if let Some(prev) = seen.insert((w, i), start) {
                panic!(
                    "{what}: append w{w}/{i} is present twice (rows {prev} and {start}): duplicated"
                );
            }
            let wu = w as usize;
            assert!(wu < WORKERS, "{what}: unknown worker {w}");
            if let Some(prev) = last_op.insert(w, i) {
                assert!(
                    prev < i,
                    "{what}: worker {w}'s appends {prev} and {i} are out of order"
                );
            }
            let expected = if i < self.acked[wu] {
                expected_len(&all_ops[wu][i as usize])
            } else if i == self.acked[wu] {
                inflight_seen.insert(wu);
                expected_len(&inflight[wu])
            } else {
                None
            };
            let Some(k) = expected else {
                panic!(
                    "{what}: rows of w{w}/{i}, which is no acknowledged or in-flight append of this kind"
                );
            };
            assert_eq!(
                len, k,
                "{what}: append w{w}/{i} has {len} rows instead of {k}: partial"
            );
            if i < self.acked[wu] {
                assert_eq!(
                    ranges.get(&(wu, i)),
                    Some(&(start as u64, (start + len) as u64)),
                    "{what}: append w{w}/{i} is not at the range its acknowledgement reported"
                );
            }
        }
        for (w, ops) in all_ops.iter().enumerate() {
            for (i, op) in ops.iter().enumerate() {
                if expected_len(op).is_some() {
                    assert!(
                        seen.contains_key(&(w as i64, i as u64)),
                        "{what}: acknowledged append w{w}/{i} ({op:?}) is missing"
                    );
                }
            }
        }
        inflight_seen
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for running in self.running.iter_mut().flatten() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

/// An integer column as `i64` values, whatever integer or float type it came back as.
fn int_column(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    if let Some(a) = column.as_primitive_opt::<Int64Type>() {
        assert_eq!(a.null_count(), 0, "{name} has missing values");
        return a.values().to_vec();
    }
    if let Some(a) = column.as_primitive_opt::<Float64Type>() {
        return a.values().iter().map(|v| *v as i64).collect();
    }
    panic!("column {name} has type {}", column.data_type())
}

/// The folder of the test dataset: `SPATIALZARR_KILL_DIR`, else `/dev/shm` when it is
/// there (a SIGKILL loses no page cache, so what a kill can break is the same on tmpfs,
/// and its cheap fsyncs let the workers get through many more operations), else the
/// usual temporary folder.
fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("SPATIALZARR_KILL_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()));
    match base {
        Some(base) => tempfile::tempdir_in(&base)
            .or_else(|_| tempfile::tempdir())
            .expect("temp dir"),
        None => common::tempdir(),
    }
}

/// Copies a dataset that failed its verification to `SPATIALZARR_KILL_KEEP` (when
/// set), so that its state can be looked at after the temporary folder is gone.
fn keep_for_inspection(path: &Path) {
    let Some(keep) = std::env::var_os("SPATIALZARR_KILL_KEEP") else {
        return;
    };
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(path)
        .arg(&keep)
        .status();
    eprintln!("kill9: the failed dataset copied to {keep:?}: {copied:?}");
}

/// The two tests take turns: each runs eight writers on two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writers that fsync everything (`Durability::Full`).
#[test]
fn kill9_writers_lose_and_duplicate_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    kill9_writers(Durability::Full, DEFAULT_KILLS);
}

/// Writers that never fsync (`Durability::Process`): a kill loses nothing either,
/// since the page cache outlives the process. The default run makes half the kills.
#[test]
fn kill9_writers_without_fsync_lose_and_duplicate_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    kill9_writers(Durability::Process, DEFAULT_KILLS / 2);
}

fn kill9_writers(durability: Durability, default_kills: u64) {
    let total_kills = env_u64("SPATIALZARR_KILLS").unwrap_or(default_kills);
    let seed = env_u64("SPATIALZARR_KILL_SEED").unwrap_or(DEFAULT_SEED);
    let per_round = if total_kills >= 500 { 100 } else { 50 };
    let max_pause = env_u64("SPATIALZARR_KILL_PAUSE_MS").unwrap_or(MAX_PAUSE_MS);
    let began = Instant::now();
    let dir = scratch_dir();
    let path = dir.path().join("sd.zarr");
    let ds = Dataset::create(&path, DatasetOptions::default()).expect("create");
    ds.add_points("pts", &points_batch(SEED_WORKER, 0, 3), None, false)
        .expect("seed points");
    let mut rng = SplitMix::new(seed ^ 0xD1CE);
    let mut driver = Driver::new(&path, seed, durability);
    driver.start_all();
    while driver.stats.kills < total_kills {
        std::thread::sleep(Duration::from_millis(rng.below(max_pause + 1)));
        driver.drain();
        assert!(
            driver.last_ack.elapsed() < STALL,
            "no worker acknowledged anything for {STALL:?}: a hang (acked: {:?})",
            driver.acked
        );
        let w = rng.below(WORKERS as u64) as usize;
        driver.kill(w);
        driver.stats.kills += 1;
        driver.start(w);
        driver.stats.restarts += 1;
        if driver.stats.kills.is_multiple_of(per_round) || driver.stats.kills == total_kills {
            driver.kill_all();
            let verified =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.verify()));
            if let Err(panic) = verified {
                keep_for_inspection(&driver.path);
                std::panic::resume_unwind(panic);
            }
            driver.stats.rounds += 1;
            if driver.stats.kills < total_kills {
                driver.start_all();
            }
        }
    }
    let acked: u64 = driver.acked.iter().sum();
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for ops in &driver.ops {
        for op in ops {
            let kind = match op {
                Op::Add { .. } => "add",
                Op::Rows { .. } => "rows",
                Op::Points { .. } => "points",
                Op::Remove { .. } => "remove",
            };
            *by_kind.entry(kind).or_default() += 1;
        }
    }
    let s = &driver.stats;
    let generation = Dataset::open(&driver.path, DatasetOptions::default())
        .and_then(|ds| ds.generation())
        .expect("generation");
    eprintln!(
        "kill9 ({durability}): {} acknowledgements over {generation} generation steps (group commit)",
        s.acks
    );
    eprintln!(
        "kill9 ({durability}): {} random kills + {} kills at {} round ends ({} restarts) in {:.1?}; \
         {acked} acknowledged ops verified at the end ({by_kind:?}), {} acknowledgements \
         taken ({} of them for a retried op already done), {} op verifications over all \
         rounds; interrupted ops found done {} / not done {}; rounds with a journal to \
         finish: {}; {} workers got ready, after {:.0?} on average",
        s.kills,
        s.round_kills,
        s.rounds,
        s.restarts,
        began.elapsed(),
        s.acks,
        s.retried_acks,
        s.verified_ops,
        s.inflight_present,
        s.inflight_absent,
        s.journals_pending,
        s.started,
        s.startup / s.started.max(1) as u32,
    );
    assert!(acked > 0, "no operation was ever acknowledged");
}
