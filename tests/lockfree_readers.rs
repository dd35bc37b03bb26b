//! Readers that take no lock (spatialdata 0.8, zarr-python 3) never see a torn
//! dataset while writer processes commit (spec/commit-protocol.md §10).
//!
//! Writer processes (this test binary as children) append keyed rows with a dense X
//! and add labels and images; reader processes (`tests/interop/lockfree_reader.py`
//! in the interop python) loop on `spatialdata.read_zarr` or on
//! `zarr.open_group(tables/T)` without any lock and validate every read. The reading
//! lasts `SPATIALZARR_READERS_SECS` seconds (default 20).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;
use spatialzarr::table::{Prim, RowBatch, TableSpec, XRows, XSpec};
use spatialzarr::{Dataset, DatasetOptions, ElementKind, RasterOptions};

const TABLE: &str = "cells";
const ROWS: usize = 100;
const X_WIDTH: usize = 5;
const SIDE: usize = 16;

fn reading_seconds() -> u64 {
    std::env::var("SPATIALZARR_READERS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn open(path: &Path) -> Dataset {
    Dataset::open(path, DatasetOptions::default()).expect("open dataset")
}

/// Area of row `row` of batch `batch` of writer `writer` (as the reader script expects).
fn area(writer: usize, batch: usize, row: usize) -> f64 {
    (writer * 1_000_000 + batch * 1_000 + row) as f64 + 0.5
}

/// One keyed batch of writer `writer`: the columns the reader script validates, and
/// X rows of width 5. Regions are new for the first batches (the region list grows).
fn batch_rows(writer: usize, batch: usize) -> RowBatch {
    let ints = |f: &dyn Fn(usize) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values((0..ROWS).map(f)))
    };
    let obs = RecordBatch::try_from_iter(vec![
        ("writer", ints(&|_| writer as i64)),
        ("batch", ints(&|_| batch as i64)),
        ("row", ints(&|r| r as i64)),
        (
            "area",
            Arc::new(Float64Array::from_iter_values(
                (0..ROWS).map(|r| area(writer, batch, r)),
            )) as ArrayRef,
        ),
        ("instance_id", ints(&|r| (batch * ROWS + r) as i64)),
        (
            "region",
            Arc::new(StringArray::from_iter_values(
                (0..ROWS).map(|_| format!("region{writer}_{}", batch.min(3))),
            )) as ArrayRef,
        ),
    ])
    .expect("batch");
    let x = (0..ROWS)
        .flat_map(|r| (0..X_WIDTH).map(move |c| area(writer, batch, r) * 10.0 + c as f64))
        .collect();
    RowBatch {
        obs,
        x: Some(XRows::Dense(x)),
    }
}

fn spec() -> TableSpec {
    TableSpec {
        x: XSpec::Dense {
            dtype: Prim::F64,
            var_names: (0..X_WIDTH).map(|v| format!("gene{v}")).collect(),
        },
        ..TableSpec::default()
    }
}

/// Labels `lab_W_I` at version `version` (as the reader script expects).
fn label_pixels(writer: usize, index: usize, version: usize) -> ArrayD<u32> {
    ArrayD::from_shape_fn(IxDyn(&[SIDE, SIDE]), |ix| {
        (writer * 1_000_000 + index * 1_000 + version * 10 + (ix[0] + ix[1]) % 10) as u32
    })
}

/// Image `img_W_I` (as the reader script expects).
fn image_pixels(writer: usize, index: usize) -> ArrayD<u8> {
    ArrayD::from_shape_fn(IxDyn(&[1, SIDE, SIDE]), |ix| {
        ((writer * 31 + index * 7 + ix[1] + ix[2] + ix[0]) % 251) as u8
    })
}

fn small_chunks() -> RasterOptions {
    // Several chunks per element, so that a reader can straddle a replacement.
    RasterOptions {
        chunk_shape: Some(vec![8, 8]),
        ..RasterOptions::default()
    }
}

#[test]
#[ignore]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    let path = PathBuf::from(&args[0]);
    let writer: usize = args[1].parse().expect("writer number");
    let deadline = Instant::now() + Duration::from_secs_f64(args[2].parse().expect("seconds"));
    let ds = open(&path);
    match role.as_str() {
        "appender" => {
            let mut batch = 0;
            while Instant::now() < deadline {
                let key = format!("w{writer}-b{batch}");
                let out = ds
                    .append_rows(TABLE, &batch_rows(writer, batch), Some(&spec()), Some(&key))
                    .expect("append");
                assert!(out.applied, "{key} applied once");
                batch += 1;
                // Leave the lock to the other writers now and then (flock is not fair).
                std::thread::sleep(Duration::from_millis(20));
            }
            common::report(&format!("batches {batch}"));
        }
        "rasters" => {
            let churn = args[3] == "churn";
            let mut index = 0;
            // At least three rounds, so that churn overwrites and removes something.
            while Instant::now() < deadline || index < 3 {
                let labels = format!("lab_{writer}_{index}");
                ds.add_labels(
                    &labels,
                    label_pixels(writer, index, 0).view(),
                    &small_chunks(),
                )
                .expect("add labels");
                let image = format!("img_{writer}_{index}");
                let image_options = RasterOptions {
                    chunk_shape: Some(vec![1, 8, 8]),
                    ..RasterOptions::default()
                };
                ds.add_image(&image, image_pixels(writer, index).view(), &image_options)
                    .expect("add image");
                if churn && index >= 1 {
                    // Overwrite the previous labels (version 1), remove the ones before.
                    let previous = format!("lab_{writer}_{}", index - 1);
                    let start = now();
                    ds.add_raster(
                        ElementKind::Labels,
                        &previous,
                        label_pixels(writer, index - 1, 1).view(),
                        &small_chunks(),
                        true,
                    )
                    .expect("overwrite labels");
                    common::report(&format!("event labels/{previous} {start} {}", now()));
                    if index >= 2 {
                        for (kind, name) in [
                            ("labels", format!("lab_{writer}_{}", index - 2)),
                            ("images", format!("img_{writer}_{}", index - 2)),
                        ] {
                            let start = now();
                            ds.remove(&name).expect("remove");
                            common::report(&format!("event {kind}/{name} {start} {}", now()));
                        }
                    }
                }
                index += 1;
            }
            common::report(&format!("rasters {index}"));
        }
        other => panic!("unknown role {other}"),
    }
}

/// What one reader process saw.
#[derive(Debug)]
struct ReaderResult {
    mode: String,
    reads: u64,
    failures: Vec<Value>,
}

fn reader(path: &Path, seconds: u64, mode: &str) -> Child {
    Command::new(common::python())
        .arg(common::repo().join("tests/interop/lockfree_reader.py"))
        .arg(path)
        .arg(seconds.to_string())
        .arg(mode)
        .arg(TABLE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the reader")
}

/// An operation a writer made on an element, with the wall-clock interval of its call.
#[derive(Debug)]
struct Event {
    element: String,
    start: f64,
    end: f64,
}

/// Runs the writers and readers for `seconds`; returns the readers' results and the
/// writers' overwrite and removal events.
fn run(path: &Path, churn: bool, seconds: u64) -> (Vec<ReaderResult>, Vec<Event>) {
    // One scenario at a time: each loads the machine fully.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The table and one labels element exist before the readers start.
    let ds = open(path);
    ds.append_rows(TABLE, &batch_rows(99, 0), Some(&spec()), Some("seed"))
        .expect("seed the table");
    ds.add_labels("lab_99_0", label_pixels(99, 0, 0).view(), &small_chunks())
        .expect("seed labels");
    let secs = seconds.to_string();
    let mut writers = Vec::new();
    for w in 0..4 {
        writers.push(common::worker(
            "appender",
            &[common::s(path).into(), w.to_string(), secs.clone()],
        ));
    }
    for w in 4..6 {
        let mode = if churn { "churn" } else { "plain" };
        writers.push(common::worker(
            "rasters",
            &[
                common::s(path).into(),
                w.to_string(),
                secs.clone(),
                mode.into(),
            ],
        ));
    }
    let modes = ["spatialdata", "spatialdata", "zarr"];
    let readers: Vec<(String, Child)> = modes
        .iter()
        .map(|m| (m.to_string(), reader(path, seconds, m)))
        .collect();
    let reports = common::run_all(writers);
    let mut results = Vec::new();
    for (mode, child) in readers {
        let out = child.wait_with_output().expect("wait for the reader");
        assert!(
            out.status.success(),
            "reader {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).expect("reader JSON");
        results.push(ReaderResult {
            mode,
            reads: summary["reads"].as_u64().expect("reads"),
            failures: summary["failures"].as_array().expect("failures").clone(),
        });
    }
    let mut events = Vec::new();
    let mut done: BTreeMap<&str, u64> = BTreeMap::new();
    for line in reports.iter().flatten() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["event", element, start, end] => events.push(Event {
                element: (*element).to_owned(),
                start: start.parse().expect("start"),
                end: end.parse().expect("end"),
            }),
            [what, count] => *done.entry(what).or_default() += count.parse::<u64>().expect("count"),
            _ => panic!("unexpected report {line}"),
        }
    }
    println!(
        "writers committed: {done:?}; overwrites and removals: {}",
        events.len()
    );
    assert!(done.get("batches").copied().unwrap_or(0) >= 4, "{done:?}");
    assert!(done.get("rasters").copied().unwrap_or(0) >= 2, "{done:?}");
    let report = open(path).check(true).expect("check");
    assert!(report.is_ok(), "{report:?}");
    (results, events)
}

fn print_results(results: &[ReaderResult]) {
    for r in results {
        println!(
            "reader {}: {} reads, {} failed",
            r.mode,
            r.reads,
            r.failures.len()
        );
        for f in r.failures.iter().take(5) {
            println!("  {}", f["error"]);
        }
    }
}

/// T-L1: appends, labels and images committed by 6 writer processes; 2 spatialdata
/// readers and 1 zarr-python reader without a lock: every read valid.
#[test]
fn lock_free_readers_see_committed_states_while_writers_append() {
    let dir = common::tempdir();
    let path = common::new_dataset(dir.path());
    let (results, _) = run(&path, false, reading_seconds());
    print_results(&results);
    for r in &results {
        assert!(r.reads > 0, "reader {} read nothing", r.mode);
        assert!(
            r.failures.is_empty(),
            "reader {}: {} of {} reads failed or were inconsistent: {:?}",
            r.mode,
            r.failures.len(),
            r.reads,
            r.failures.iter().take(3).collect::<Vec<_>>()
        );
    }
}

/// The element (`labels/lab_W_I` or `images/img_W_I`) a failed read names, if any
/// (spatialdata names it by path or by its bare name).
fn named_element(error: &str) -> Option<String> {
    for (prefix, kind) in [("lab_", "labels"), ("img_", "images")] {
        for (i, _) in error.match_indices(prefix) {
            let name: String = error[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let numbered = name[prefix.len()..]
                .split('_')
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()));
            if numbered {
                return Some(format!("{kind}/{name}"));
            }
        }
    }
    None
}

/// T-L2: as T-L1 with labels overwritten and labels and images removed meanwhile. A
/// failed read is allowed only when it names an element that a writer replaced or
/// removed while that read ran (spec/commit-protocol.md §10.3); never a table.
#[test]
fn lock_free_readers_fail_only_on_elements_replaced_or_removed_during_the_read() {
    let dir = common::tempdir();
    let path = common::new_dataset(dir.path());
    let (results, events) = run(&path, true, reading_seconds());
    print_results(&results);
    assert!(
        !events.is_empty(),
        "the writers overwrote and removed nothing"
    );
    let mut explained = 0;
    for r in &results {
        assert!(r.reads > 0, "reader {} read nothing", r.mode);
        for failure in &r.failures {
            let error = failure["error"].as_str().expect("error text");
            let start = failure["start"].as_f64().expect("start");
            let end = failure["end"].as_f64().expect("end");
            let element = named_element(error).unwrap_or_else(|| {
                panic!(
                    "reader {}: a failure that names no replaced element: {error}",
                    r.mode
                )
            });
            let during = events
                .iter()
                .any(|e| e.element == element && e.start <= end && e.end >= start);
            assert!(
                during,
                "reader {}: {element} failed ({error}) but no writer replaced or removed it during that read",
                r.mode
            );
            explained += 1;
        }
    }
    println!("failures explained by a replacement or removal during the read: {explained}");
}
