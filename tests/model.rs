//! The concurrency model: random programs of operations (add labels, remove, append
//! rows with and without idempotency keys, the same key with the same rows or with
//! other rows, read) run by several real processes at
//! once against one dataset; then the store's own commit order (each commit's
//! generation) replays them in a model, which must agree with everything the
//! processes saw and with the final dataset.
//!
//! Failing cases shrink (proptest); their seeds are kept in
//! `tests/model.proptest-regressions` and rerun first. CI runs 12 cases; run more with
//! `SPATIALZARR_MODEL_CASES=500 cargo test --release --test model`.
//! `SPATIALZARR_MODEL_DIR` puts the datasets in another folder; `tests/multinode.rs`
//! puts them on a shared mount, with `SPATIALZARR_NODE_ROOTS` so that the processes
//! alternate between two nodes' mounts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde::{Deserialize, Serialize};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions, Error, RasterOptions};

/// Element names the programs draw from (few, so that they collide).
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// Idempotency keys the programs draw from.
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const TABLE: &str = "cells";

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    Add(usize),
    Remove(usize),
    Append { rows: usize, key: Option<usize> },
    Read,
}

/// What one operation did, as its process saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Seen {
    /// A commit, with the generation it produced.
    Added {
        name: usize,
        generation: u64,
    },
    Removed {
        name: usize,
        generation: u64,
    },
    /// Refused because of the state (the name was taken, or absent).
    Refused,
    /// Rows `start..end`; `generation` is `None` when nothing was committed (a key
    /// seen before).
    Appended {
        start: u64,
        end: u64,
        key: Option<usize>,
        generation: Option<u64>,
        first_id: i64,
    },
    /// Refused: the key was committed with other rows, as `start..end`.
    KeyReused {
        start: u64,
        end: u64,
        key: usize,
        rows: u64,
        first_id: i64,
    },
    /// A consistent snapshot: generation, labels, table rows.
    Read {
        generation: u64,
        labels: Vec<String>,
        rows: u64,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NAMES.len()).prop_map(Op::Add),
        1 => (0..NAMES.len()).prop_map(Op::Remove),
        3 => (1..4usize, proptest::option::of(0..KEYS.len()))
            .prop_map(|(rows, key)| Op::Append { rows, key }),
        2 => Just(Op::Read),
    ]
}

fn programs() -> impl Strategy<Value = Vec<Vec<Op>>> {
    proptest::collection::vec(proptest::collection::vec(op_strategy(), 1..7), 2..4)
}

/// The pixel value written by process `p`'s operation `i` (all 4x4 pixels).
fn pixel(p: usize, i: usize) -> u32 {
    (p * 100 + i + 1) as u32
}

/// The instance ids of an append by process `p`'s operation `i`: `id..id+rows`. An
/// append with key `k` always starts at the same id, so that two appends with one
/// key bring the same rows exactly when they bring as many.
fn first_id(p: usize, i: usize, key: Option<usize>) -> i64 {
    match key {
        Some(k) => 1_000_000 + (k * 1000) as i64,
        None => ((p * 100 + i) * 10) as i64,
    }
}

fn rows(first: i64, n: usize) -> RowBatch {
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from(vec!["r"; n])) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(first..first + n as i64)),
        ),
    ])
    .unwrap();
    RowBatch { obs, x: None }
}

/// Runs process `p`'s program against the dataset and returns what it saw.
fn run_program(path: &Path, p: usize, program: &[Op]) -> Vec<Seen> {
    let ds = Dataset::open(path, DatasetOptions::default()).unwrap();
    let mut seen = Vec::new();
    for (i, op) in program.iter().enumerate() {
        let outcome = match op {
            Op::Add(name) => {
                let labels = ArrayD::from_elem(IxDyn(&[4, 4]), pixel(p, i));
                match ds.add_labels(NAMES[*name], labels.view(), &RasterOptions::default()) {
                    Ok(c) => Seen::Added {
                        name: *name,
                        generation: c.generation,
                    },
                    Err(Error::NameTaken { .. }) => Seen::Refused,
                    Err(e) => panic!("add {}: {e}", NAMES[*name]),
                }
            }
            Op::Remove(name) => match ds.remove(NAMES[*name]) {
                Ok(c) => Seen::Removed {
                    name: *name,
                    generation: c.generation,
                },
                Err(Error::NoSuchElement { .. }) => Seen::Refused,
                Err(e) => panic!("remove {}: {e}", NAMES[*name]),
            },
            Op::Append { rows: n, key } => {
                let first = first_id(p, i, *key);
                let mut txn = ds.write().unwrap();
                match txn.append_rows(
                    TABLE,
                    &rows(first, *n),
                    Some(&TableSpec::default()),
                    key.map(|k| KEYS[k]),
                ) {
                    Ok(outcome) => {
                        let commit = txn.commit().unwrap();
                        Seen::Appended {
                            start: outcome.start,
                            end: outcome.end,
                            key: *key,
                            generation: outcome.applied.then_some(commit.generation),
                            first_id: first,
                        }
                    }
                    Err(Error::KeyReused { start, end, .. }) => Seen::KeyReused {
                        start,
                        end,
                        key: key.expect("only keyed appends are refused so"),
                        rows: *n as u64,
                        first_id: first,
                    },
                    Err(e) => panic!("append: {e}"),
                }
            }
            Op::Read => {
                let _snapshot = ds.lock().read(None).unwrap();
                let rows = match ds.table_info(TABLE) {
                    Ok(info) => info.n_obs,
                    Err(Error::NoSuchElement { .. }) => 0,
                    Err(e) => panic!("table_info: {e}"),
                };
                Seen::Read {
                    generation: ds.generation().unwrap(),
                    labels: ds.list().unwrap().labels,
                    rows,
                }
            }
        };
        seen.push(outcome);
    }
    seen
}

/// The model: what the dataset holds after each generation.
#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    /// Present labels and the pixel value of each.
    labels: BTreeMap<String, u32>,
    /// Instance ids of the table's rows, in order.
    ids: Vec<i64>,
    /// Committed keys: their row ranges and the first instance id of their rows.
    keys: BTreeMap<usize, (u64, u64, i64)>,
}

/// One committed operation, for the replay.
enum Commit {
    Add(String, u32),
    Remove(String),
    Append {
        start: u64,
        end: u64,
        key: Option<usize>,
        first_id: i64,
    },
}

fn check(path: &Path, programs: &[Vec<Op>], seen: &[Vec<Seen>], base: u64) {
    // 1. A process's commits are in its order. Several commits may share a generation:
    //    a writer that finds the lock busy queues its request, and the holder's commit
    //    takes it (group commit, spec/commit-protocol.md §12).
    let mut commits: BTreeMap<u64, Vec<Commit>> = BTreeMap::new();
    for (p, (program, outcomes)) in programs.iter().zip(seen).enumerate() {
        let mut last = base;
        for (i, (op, outcome)) in program.iter().zip(outcomes).enumerate() {
            let (generation, commit) = match (op, outcome) {
                (_, Seen::Added { name, generation }) => (
                    *generation,
                    Commit::Add(NAMES[*name].to_owned(), pixel(p, i)),
                ),
                (_, Seen::Removed { name, generation }) => {
                    (*generation, Commit::Remove(NAMES[*name].to_owned()))
                }
                (
                    _,
                    Seen::Appended {
                        start,
                        end,
                        key,
                        generation: Some(generation),
                        first_id,
                    },
                ) => (
                    *generation,
                    Commit::Append {
                        start: *start,
                        end: *end,
                        key: *key,
                        first_id: *first_id,
                    },
                ),
                (_, Seen::Read { generation, .. }) => {
                    assert!(*generation >= last, "process {p} read an older state");
                    last = *generation;
                    continue;
                }
                _ => continue,
            };
            assert!(
                generation > last,
                "process {p}: op {i} committed out of order"
            );
            last = generation;
            commits.entry(generation).or_default().push(commit);
        }
    }
    // 2. The generations have no holes: every commit is accounted for.
    let expected: Vec<u64> = (base + 1..=base + commits.len() as u64).collect();
    assert_eq!(commits.keys().copied().collect::<Vec<_>>(), expected);

    // 3. Replay in commit order; each commit must be legal in the model's state.
    let mut states = BTreeMap::from([(base, State::default())]);
    let mut state = State::default();
    for (generation, batch) in &mut commits {
        // Within a batch the holder's own operation comes first, then the queued
        // requests; only additions of labels queue here (appends run in explicit
        // transactions, removals do not queue), so additions go last.
        batch.sort_by_key(|c| matches!(c, Commit::Add(..)));
        assert!(
            batch
                .iter()
                .filter(|c| !matches!(c, Commit::Add(..)))
                .count()
                <= 1,
            "generation {generation} holds two operations that do not queue"
        );
        for commit in batch.iter() {
            match commit {
                Commit::Add(name, value) => {
                    assert!(
                        state.labels.insert(name.clone(), *value).is_none(),
                        "generation {generation} added {name}, which existed"
                    );
                }
                Commit::Remove(name) => {
                    assert!(
                        state.labels.remove(name).is_some(),
                        "generation {generation} removed {name}, which did not exist"
                    );
                }
                Commit::Append {
                    start,
                    end,
                    key,
                    first_id,
                } => {
                    let n = state.ids.len() as u64;
                    assert_eq!(
                        (*start, *end - *start > 0),
                        (n, true),
                        "generation {generation}"
                    );
                    state
                        .ids
                        .extend(*first_id..*first_id + (*end - *start) as i64);
                    if let Some(k) = key {
                        assert!(state.keys.insert(*k, (*start, *end, *first_id)).is_none());
                    }
                }
            }
        }
        states.insert(*generation, state.clone());
    }

    // 4. Every read saw exactly the state of its generation; every repeated key with
    //    the same rows got the first append's range, and with other rows was refused
    //    naming that range.
    for outcomes in seen {
        for outcome in outcomes {
            match outcome {
                Seen::Read {
                    generation,
                    labels,
                    rows,
                } => {
                    let at = &states[generation];
                    assert_eq!(labels, &at.labels.keys().cloned().collect::<Vec<_>>());
                    assert_eq!(*rows, at.ids.len() as u64, "rows at {generation}");
                }
                Seen::Appended {
                    start,
                    end,
                    key: Some(k),
                    generation: None,
                    first_id,
                } => {
                    assert_eq!(
                        state.keys.get(k),
                        Some(&(*start, *end, *first_id)),
                        "key {} repeated with the same rows",
                        KEYS[*k]
                    );
                }
                Seen::KeyReused {
                    start,
                    end,
                    key,
                    rows,
                    first_id,
                } => {
                    let (s, e, first) = state.keys[key];
                    assert_eq!((*start, *end), (s, e), "key {} refused", KEYS[*key]);
                    assert!(
                        (e - s, first) != (*rows, *first_id),
                        "key {} refused with the same rows",
                        KEYS[*key]
                    );
                }
                _ => {}
            }
        }
    }

    // 5. The dataset equals the model's final state.
    let ds = Dataset::open(path, DatasetOptions::default()).unwrap();
    assert_eq!(ds.generation().unwrap(), base + commits.len() as u64);
    let labels: BTreeSet<String> = ds.list().unwrap().labels.into_iter().collect();
    assert_eq!(labels, state.labels.keys().cloned().collect());
    for (name, value) in &state.labels {
        let pixels = ds.read_raster::<u32>(name, 0).unwrap();
        assert!(pixels.iter().all(|v| v == value), "labels {name}");
    }
    if !state.ids.is_empty() {
        let batch = ds.read_rows(TABLE, 0..state.ids.len() as u64).unwrap();
        let ids = batch
            .column_by_name("instance_id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        assert_eq!(ids, state.ids);
    }
    assert!(ds.check(true).unwrap().is_ok());
}

fn cases() -> u32 {
    std::env::var("SPATIALZARR_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/model.proptest-regressions"),
        ))),
        ..Config::default()
    })]

    #[test]
    fn processes_agree_with_the_model_in_commit_order(programs in programs()) {
        let dir = match std::env::var_os("SPATIALZARR_MODEL_DIR") {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => common::tempdir(),
        };
        let path = dir.path().join("model.zarr");
        let ds = Dataset::create(&path, DatasetOptions::default()).unwrap();
        let base = ds.generation().unwrap();
        let commands = programs
            .iter()
            .enumerate()
            .map(|(p, program)| {
                common::worker(
                    "program",
                    &[
                        common::node_path(&path, p).display().to_string(),
                        p.to_string(),
                        serde_json::to_string(program).unwrap(),
                    ],
                )
            })
            .collect();
        let seen: Vec<Vec<Seen>> = common::run_all(commands)
            .into_iter()
            .map(|reports| serde_json::from_str(&reports[0]).expect("a report"))
            .collect();
        check(&path, &programs, &seen, base);
    }
}

#[test]
#[ignore = "worker process entry point, run by the other tests"]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    assert_eq!(role, "program");
    let program: Vec<Op> = serde_json::from_str(&args[2]).unwrap();
    let seen = run_program(Path::new(&args[0]), args[1].parse().unwrap(), &program);
    common::report(&serde_json::to_string(&seen).unwrap());
}
