//! `spatialzarr demo` through the real binary: worker processes segmenting images
//! into one dataset, the result as the library and spatialdata read it, and resuming
//! after the whole process group is killed with SIGKILL at several moments.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use ndarray::ArrayD;
use serde_json::Value;
use spatialzarr::{Dataset, DatasetOptions};

use common::{cli, spatialdata_reads, strings};

/// The demo arguments of every test (besides the dataset).
const ARGS: [&str; 6] = ["--workers", "4", "--images", "16", "--size", "128"];
const IMAGES: usize = 16;

/// A `spatialzarr demo DATASET ARGS... EXTRA...` command.
fn demo<S: AsRef<OsStr>>(dataset: &Path, extra: &[S]) -> Command {
    let mut command = Command::new(cli());
    command
        .arg("demo")
        .arg(dataset)
        .args(ARGS)
        .args(extra)
        .stdin(Stdio::null());
    command
}

/// Runs the demo to completion with `--json`, asserting it succeeded; returns the
/// summary.
fn demo_json(dataset: &Path) -> Value {
    let out = demo(dataset, &["--json"]).output().expect("run demo");
    assert!(
        out.status.success(),
        "demo failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(&stdout).expect("summary JSON")
}

/// One row of the `cells` table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    region: String,
    instance_id: i64,
    area: i64,
    centroid_x: f64,
    centroid_y: f64,
    mean_intensity: f64,
}

/// Everything the demo wrote: images, labels, and the `cells` rows sorted by
/// (region, instance_id).
struct Contents {
    images: BTreeMap<String, ArrayD<u16>>,
    labels: BTreeMap<String, ArrayD<u32>>,
    rows: Vec<Row>,
}

fn contents(path: &Path) -> Contents {
    let ds = Dataset::open(path, DatasetOptions::default()).expect("open dataset");
    let list = ds.list().expect("list");
    let images = list
        .images
        .iter()
        .map(|n| (n.clone(), ds.read_raster::<u16>(n, 0).expect("read image")))
        .collect();
    let labels = list
        .labels
        .iter()
        .map(|n| (n.clone(), ds.read_raster::<u32>(n, 0).expect("read labels")))
        .collect();
    let mut rows = Vec::new();
    if list.tables.iter().any(|t| t == "cells") {
        let n = ds.table_info("cells").expect("table info").n_obs;
        let batch = ds.read_rows("cells", 0..n).expect("read rows");
        let column = |name: &str| batch.column_by_name(name).expect(name).clone();
        let regions = strings(&column("region"));
        let ids = column("instance_id");
        let areas = column("area");
        let (cx, cy, mean) = (
            column("centroid_x"),
            column("centroid_y"),
            column("mean_intensity"),
        );
        for (i, region) in regions.into_iter().enumerate() {
            rows.push(Row {
                region,
                instance_id: ids.as_primitive::<Int64Type>().value(i),
                area: areas.as_primitive::<Int64Type>().value(i),
                centroid_x: cx.as_primitive::<Float64Type>().value(i),
                centroid_y: cy.as_primitive::<Float64Type>().value(i),
                mean_intensity: mean.as_primitive::<Float64Type>().value(i),
            });
        }
    }
    rows.sort_by(|a, b| (&a.region, a.instance_id).cmp(&(&b.region, b.instance_id)));
    Contents {
        images,
        labels,
        rows,
    }
}

/// Asserts that the rows are exactly one per label value 1..=max of every labels
/// element, each with that label's pixel count as its area, and no row of anything
/// else. Returns the number of rows.
fn assert_rows_match_labels(c: &Contents) -> usize {
    let mut expected = Vec::new();
    for (name, labels) in &c.labels {
        let max = labels.iter().copied().max().unwrap_or(0);
        let mut counts = vec![0i64; max as usize + 1];
        for &v in labels {
            counts[v as usize] += 1;
        }
        for (value, &count) in counts.iter().enumerate().skip(1) {
            assert!(count > 0, "{name}: label {value} of 1..={max} is empty");
            expected.push((name.clone(), value as i64, count));
        }
    }
    let actual: Vec<(String, i64, i64)> = c
        .rows
        .iter()
        .map(|r| (r.region.clone(), r.instance_id, r.area))
        .collect();
    assert_eq!(actual, expected, "cells rows vs labels");
    actual.len()
}

#[test]
fn demo_segments_every_image_and_spatialdata_reads_the_result() {
    let dir = common::tempdir();
    let path = dir.path().join("demo.zarr");
    let summary = demo_json(&path);
    assert_eq!(summary["images"], IMAGES, "{summary}");
    assert_eq!(summary["labels"], IMAGES, "{summary}");
    assert_eq!(summary["segmented"], IMAGES, "{summary}");
    assert_eq!(summary["check_ok"], true, "{summary}");
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    assert!(summary["images_per_second"].as_f64().unwrap() > 0.0);

    let c = contents(&path);
    let names: Vec<String> = (0..IMAGES).map(|i| format!("image_{i:03}")).collect();
    assert_eq!(c.images.keys().cloned().collect::<Vec<_>>(), names);
    let labels_names: Vec<String> = names.iter().map(|n| format!("{n}_labels")).collect();
    assert_eq!(c.labels.keys().cloned().collect::<Vec<_>>(), labels_names);
    for (name, labels) in &c.labels {
        assert_eq!(labels.shape(), &[128, 128], "{name}");
        assert!(labels.iter().any(|&v| v > 0), "{name} found no cells");
    }
    let cells = assert_rows_match_labels(&c);
    assert_eq!(summary["cells"], cells, "{summary}");

    // A second run finds nothing to do and changes nothing.
    let again = demo_json(&path);
    assert_eq!(again["segmented"], 0, "{again}");
    assert_eq!(again["cells"], cells, "{again}");
    assert_eq!(contents(&path).rows, c.rows);

    let seen = spatialdata_reads(&path);
    let seen_names = |kind: &str| -> Vec<String> {
        seen[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(seen_names("images"), names);
    assert_eq!(seen_names("labels"), labels_names);
    for labels in seen["labels"].as_array().unwrap() {
        assert_eq!(labels["dtype"], "uint32");
        assert_eq!(labels["dims"], serde_json::json!(["y", "x"]));
    }
    let tables = seen["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1);
    let table = &tables[0];
    assert_eq!(table["name"], "cells");
    assert_eq!(table["n_obs"], cells);
    assert_eq!(table["region"], serde_json::json!(labels_names));
    assert_eq!(table["region"], table["regions_present"]);
    assert_eq!(table["region_key"], "region");
    assert_eq!(table["instance_key"], "instance_id");
}

/// Counts the labels of the dataset at `path` (0 while it does not exist yet).
fn count(path: &Path, labels: bool) -> usize {
    Dataset::open(path, DatasetOptions::default())
        .and_then(|ds| ds.list())
        .map_or(0, |l| {
            if labels {
                l.labels.len()
            } else {
                l.images.len()
            }
        })
}

#[test]
fn a_demo_killed_at_any_moment_resumes_to_the_same_result() {
    let dir = common::tempdir();
    let killed = dir.path().join("killed.zarr");
    let started = Instant::now();
    // (count labels?, threshold): kill while the images are being added, then after
    // 2, 7 and 12 labels appeared.
    let moments = [(false, 5), (true, 2), (true, 7), (true, 12)];
    let mut kills = 0;
    for (labels, threshold) in moments {
        let mut child = demo(&killed, &[] as &[&str])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start demo");
        let pgid = i32::try_from(child.id()).expect("pid fits i32");
        loop {
            if let Some(status) = child.try_wait().expect("wait demo") {
                assert!(status.success(), "demo failed: {status}");
                break;
            }
            if count(&killed, labels) >= threshold {
                // kill(2) on the process group the demo leads (never the external
                // `kill` command: one version signalled every process for `-PGID`).
                let leader = rustix::process::Pid::from_raw(pgid).expect("positive pid");
                rustix::process::kill_process_group(leader, rustix::process::Signal::KILL)
                    .expect("SIGKILL the demo's process group");
                child.wait().expect("wait demo");
                kills += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Whatever the moment, what is visible is consistent: every labels element
        // has all its rows, and no row lacks its labels.
        assert_rows_match_labels(&contents(&killed));
    }
    assert!(
        kills >= 2,
        "only {kills} of the runs were still going when killed"
    );
    let resumed = demo_json(&killed);
    assert_eq!(resumed["labels"], IMAGES, "{resumed}");
    assert_eq!(resumed["check_ok"], true, "{resumed}");
    let killed_secs = started.elapsed();

    let clean = dir.path().join("clean.zarr");
    let summary = demo_json(&clean);
    assert_eq!(summary["cells"], resumed["cells"]);

    let (a, b) = (contents(&killed), contents(&clean));
    assert_eq!(a.images, b.images, "images differ");
    assert_eq!(
        a.labels.keys().collect::<Vec<_>>(),
        b.labels.keys().collect::<Vec<_>>()
    );
    assert_eq!(a.labels, b.labels, "labels pixels differ");
    assert_eq!(a.rows.len(), b.rows.len(), "row counts differ");
    assert_eq!(a.rows, b.rows, "rows differ");
    let keys: BTreeSet<(&str, i64)> = a
        .rows
        .iter()
        .map(|r| (r.region.as_str(), r.instance_id))
        .collect();
    assert_eq!(keys.len(), a.rows.len(), "duplicate rows");
    assert_rows_match_labels(&a);
    eprintln!(
        "{kills} kills; killed+resumed runs {killed_secs:?}, total {:?}",
        started.elapsed()
    );
}

#[test]
fn a_failing_worker_is_reported_in_one_line_with_exit_status_1() {
    let dir = common::tempdir();
    let path = dir.path().join("bad.zarr");
    // An `image_000` of the wrong pixel type: the demo keeps it (it resumes), and the
    // worker that segments it fails.
    let ds = Dataset::create(&path, DatasetOptions::default()).unwrap();
    let wrong = ArrayD::<u8>::zeros(ndarray::IxDyn(&[1, 32, 32]));
    ds.add_image("image_000", wrong.view(), &Default::default())
        .unwrap();
    let out = Command::new(cli())
        .args([
            "demo",
            path.to_str().unwrap(),
            "--images",
            "2",
            "--size",
            "32",
        ])
        .args(["--workers", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(
        stderr.starts_with(
            "spatialzarr: demo worker 0 failed (exit status: 1): cannot segment image_000"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let usage = Command::new(cli())
        .args(["demo", path.to_str().unwrap(), "--workers", "0"])
        .output()
        .expect("run demo");
    assert_eq!(usage.status.code(), Some(2));
}

/// Starts a demo long enough to be interrupted, waits until its workers run and
/// have committed at least one image; returns it and its workers.
fn demo_at_work(path: &Path) -> (std::process::Child, Vec<(u32, String)>) {
    let mut child = Command::new(cli())
        .arg("demo")
        .arg(path)
        .args(["--workers", "2", "--images", "64", "--size", "128"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start demo");
    loop {
        if let Some(status) = child.try_wait().expect("wait demo") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            panic!("the demo ended ({status}) before it could be interrupted: {stderr}");
        }
        let workers = common::workers_of(child.id(), "demo-worker");
        if workers.len() == 2 && count(path, true) >= 1 {
            return (child, workers);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// After an interruption: `recover` cleans what the killed workers left, the check
/// is clean, every labels element has its rows, and the demo resumes to the end.
fn assert_recovers_and_resumes(path: &Path) {
    let ds = Dataset::open(path, DatasetOptions::default()).expect("open dataset");
    ds.recover().expect("recover");
    let report = ds.check(true).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_rows_match_labels(&contents(path));
    let out = Command::new(cli())
        .arg("demo")
        .arg(path)
        .args([
            "--workers",
            "2",
            "--images",
            "64",
            "--size",
            "128",
            "--json",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(summary["labels"], 64, "{summary}");
    assert_eq!(summary["check_ok"], true, "{summary}");
}

#[test]
fn sigint_or_sigterm_stops_the_workers_before_the_demo_exits() {
    let dir = common::tempdir();
    for (signal, name, number) in [
        (rustix::process::Signal::INT, "SIGINT", 2),
        (rustix::process::Signal::TERM, "SIGTERM", 15),
    ] {
        let path = dir.path().join(format!("{name}.zarr"));
        let (mut child, workers) = demo_at_work(&path);
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("positive pid");
        // The demo alone, as `kill -INT PID` does, not its process group.
        rustix::process::kill_process(pid, signal).expect("signal the demo");
        let status = child.wait().expect("wait demo");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(
            status.code(),
            Some(128 + number),
            "{name}: {status}, {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("demo stopped by {name} (2 workers stopped)")),
            "{stderr}"
        );
        // Stopped and reaped before the demo exited.
        for (worker, start) in &workers {
            assert!(
                !common::still_running(*worker, start),
                "{name}: worker {worker} outlived the demo"
            );
        }
        assert_recovers_and_resumes(&path);
    }
}

#[test]
fn workers_die_with_a_demo_killed_by_sigkill() {
    let dir = common::tempdir();
    let path = dir.path().join("orphans.zarr");
    let (mut child, workers) = demo_at_work(&path);
    child.kill().expect("SIGKILL the demo alone");
    child.wait().expect("wait demo");
    // The kernel kills them as their parent dies; give it a moment to deliver.
    let deadline = Instant::now() + Duration::from_secs(60);
    while workers
        .iter()
        .any(|(pid, start)| common::still_running(*pid, start))
    {
        assert!(
            Instant::now() < deadline,
            "a worker outlived the killed demo"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let labels_now = count(&path, true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&path, true), labels_now, "something still writes");
    assert_recovers_and_resumes(&path);
}

#[test]
fn a_worker_started_by_hand_refuses_to_run() {
    let dir = common::tempdir();
    let path = dir.path().join("hand.zarr");
    Dataset::create(&path, DatasetOptions::default()).unwrap();
    let out = Command::new(cli())
        .args(["demo-worker", path.to_str().unwrap()])
        .args(["--index", "0", "--workers", "1", "--images", "1"])
        .env_remove("SPATIALZARR_WORKER_PARENT_PID")
        .output()
        .expect("run demo-worker");
    common::assert_fails(&out, 1, &["started by spatialzarr itself"]);
    let out = Command::new(cli())
        .args(["demo-worker", path.to_str().unwrap()])
        .args(["--index", "0", "--workers", "1", "--images", "1"])
        .env("SPATIALZARR_WORKER_PARENT_PID", "1")
        .output()
        .expect("run demo-worker");
    common::assert_fails(&out, 1, &["has exited"]);
}
