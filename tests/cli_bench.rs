//! `spatialzarr bench` through the real binary: the JSON report of two quick
//! scenarios, and a clear error for an unknown scenario.

mod common;

use common::{assert_fails, sz, sz_ok};
use serde_json::Value;

#[test]
fn quick_scenarios_report_ours_beside_the_baseline() {
    let dir = common::tempdir();
    let out = sz_ok(&[
        "bench",
        "--quick",
        "--json",
        "--only",
        "commit_latency,lock_handoff",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&out).expect("one JSON object");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "commit_latency_p50_1_writer_process",
            "commit_latency_p50_1_writer",
            "commit_latency_p50_1_writer_strict",
            "commit_latency_p99_1_writer",
            "commit_latency_p50_8_writers",
            "commit_latency_p99_8_writers",
            "lock_handoff_p50"
        ]
    );
    for s in scenarios {
        let (ours, baseline) = (s["ours"].as_f64().unwrap(), s["baseline"].as_f64().unwrap());
        assert!(ours > 0.0 && baseline > 0.0, "{s}");
        let ratio = s["ratio"].as_f64().unwrap();
        assert!((ratio - ours / baseline).abs() <= 1e-9 * ratio.abs(), "{s}");
        assert_eq!(s["unit"], "us");
        assert!(!s["baseline_name"].as_str().unwrap().is_empty());
    }
    // The strict side fsyncs every folder, whatever the filesystem of `--dir`.
    let strict = scenarios
        .iter()
        .find(|s| s["name"] == "commit_latency_p50_1_writer_strict")
        .unwrap();
    assert_eq!(strict["details"]["folder_sync"], "strict", "{strict}");
    assert_eq!(report["quick"], true);
    // The scratch folders are removed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_unknown_scenario_is_named() {
    assert_fails(
        &sz(&["bench", "--only", "append_rowz"]),
        1,
        &["append_rowz", "add_labels", "lock_handoff"],
    );
}

/// SIGINT or SIGTERM to the bench stop its worker processes before it exits (status
/// 128 + the signal's number), and none goes on writing.
#[test]
fn an_interrupted_bench_stops_its_workers_before_it_exits() {
    use std::process::{Command, Stdio};
    use std::time::Duration;
    for (signal, name, number) in [
        (rustix::process::Signal::INT, "SIGINT", 2),
        (rustix::process::Signal::TERM, "SIGTERM", 15),
    ] {
        let dir = common::tempdir();
        let mut bench = Command::new(common::cli())
            .args([
                "bench",
                "--only",
                "add_labels",
                "--dir",
                dir.path().to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bench");
        let workers = loop {
            assert!(bench.try_wait().unwrap().is_none(), "the bench ended first");
            let workers = common::workers_of(bench.id(), "bench-worker");
            if workers.len() >= 2 {
                break workers;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let pid = rustix::process::Pid::from_raw(bench.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let out = bench.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + number), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("bench stopped by {name} (")),
            "{stderr}"
        );
        for (worker, start) in &workers {
            assert!(
                !common::still_running(*worker, start),
                "{name}: bench worker {worker} outlived the bench"
            );
        }
    }
}
