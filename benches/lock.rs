//! Lock benchmarks, each beside raw flock measured in the same run: uncontended
//! acquire+release, re-entrant nesting, and the cross-process handoff (a holder
//! releases, a process blocked in its acquire gets the lock), with its p50 and p99.
//!
//! Run: `cargo bench --bench lock`. (`spatialzarr bench --only lock_handoff` measures
//! the same handoff without cargo.)

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use spatialzarr::lock::{DatasetLock, LockOptions};

fn open_raw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open raw lock file")
}

fn uncontended(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let lock = DatasetLock::open(dir.path(), LockOptions::default()).unwrap();
    let raw = open_raw(&dir.path().join("raw"));
    let mut group = c.benchmark_group("uncontended");
    group.bench_function("raw_flock_exclusive", |b| {
        b.iter(|| {
            raw.lock().unwrap();
            raw.unlock().unwrap();
        })
    });
    group.bench_function("write", |b| b.iter(|| drop(lock.write(None).unwrap())));
    group.bench_function("raw_flock_shared", |b| {
        b.iter(|| {
            raw.lock_shared().unwrap();
            raw.unlock().unwrap();
        })
    });
    group.bench_function("read", |b| b.iter(|| drop(lock.read(None).unwrap())));
    let _outer = lock.write(None).unwrap();
    group.bench_function("nested_write_under_write", |b| {
        b.iter(|| drop(lock.write(None).unwrap()))
    });
    group.bench_function("nested_read_under_write", |b| {
        b.iter(|| drop(lock.read(None).unwrap()))
    });
    group.finish();
}

/// One handoff run: two `spatialzarr bench-worker handoff` processes pass the lock
/// back and forth `rounds` times each; returns every handoff latency seen (µs).
fn handoff_pair(dir: &Path, mode: &str, rounds: u64) -> Vec<f64> {
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_spatialzarr"))
            .args(["bench-worker", "handoff"])
            .arg(dir)
            .args([mode, &rounds.to_string()])
            // Worker modes run only under the process that started them (they die
            // with it); this bench is that process.
            .env(
                "SPATIALZARR_WORKER_PARENT_PID",
                std::process::id().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a handoff worker")
    };
    let (first, second) = (spawn(), spawn());
    let mut samples = Vec::new();
    for worker in [first, second] {
        let out = worker.wait_with_output().expect("handoff worker");
        assert!(
            out.status.success(),
            "handoff worker failed: {}",
            out.status
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            samples.push(line.parse::<f64>().expect("a latency in µs"));
        }
    }
    samples
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    sorted
        .get((p * last as f64).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn handoff(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("handoff");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    let mut p50 = Vec::new();
    for (name, mode) in [("raw_flock", "raw"), ("ours", "ours")] {
        let seen = RefCell::new(Vec::new());
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let samples = handoff_pair(dir.path(), mode, iters.max(2));
                let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
                seen.borrow_mut().extend(samples);
                Duration::from_secs_f64(mean * 1e-6 * iters as f64)
            })
        });
        let mut all = seen.into_inner();
        all.sort_by(f64::total_cmp);
        println!(
            "handoff/{name}: {} handoffs, p50 {:.1} µs, p99 {:.1} µs",
            all.len(),
            percentile(&all, 0.5),
            percentile(&all, 0.99)
        );
        p50.push(percentile(&all, 0.5));
    }
    println!("handoff p50 ours / raw flock = {:.2}", p50[1] / p50[0]);
    group.finish();
}

criterion_group!(benches, uncontended, handoff);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
