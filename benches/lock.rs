//! Lock benchmarks: uncontended acquire+release, re-entrant nesting, and the
//! cross-process handoff, each beside raw flock measured in the same run.
//!
//! Run: `cargo bench --bench lock`. The handoff percentiles print on stderr.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group};
use spatialzarr::lock::{DatasetLock, LockOptions};

const HELPER_ENV: &str = "SPATIALZARR_BENCH_HANDOFF";

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

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One side of the handoff dance: take the lock, note how long ago the OTHER process
/// released it, stamp our own release time, release, and go again. The pause while
/// holding lets the other side block in its acquire, so every handoff is a real wait.
fn dance(
    dir: &Path,
    use_raw: bool,
    rounds: usize,
    acquire_release: &mut dyn FnMut(&mut dyn FnMut()),
) -> Vec<u64> {
    let stamp = dir.join(if use_raw { "stamp-raw" } else { "stamp-ours" });
    let me = std::process::id();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        acquire_release(&mut || {
            let got = now_nanos();
            let text = std::fs::read_to_string(&stamp).unwrap_or_default();
            if let Some((pid, released)) = text.split_once(' ')
                && let Ok(released) = released.parse::<u128>()
                && pid.parse::<u32>().ok() != Some(me)
                && released <= got
            {
                samples.push((got - released) as u64);
            }
            std::thread::sleep(Duration::from_micros(300));
            std::fs::write(&stamp, format!("{me} {}", now_nanos())).unwrap();
        });
        // Give the other side, blocked in its acquire, the next turn.
        std::thread::sleep(Duration::from_micros(700));
    }
    samples
}

fn run_dance(dir: &Path, use_raw: bool, rounds: usize) -> Vec<u64> {
    if use_raw {
        let raw = open_raw(&dir.join("raw"));
        dance(dir, true, rounds, &mut |body| {
            raw.lock().unwrap();
            body();
            raw.unlock().unwrap();
        })
    } else {
        let lock = DatasetLock::open(dir, LockOptions::default()).unwrap();
        dance(dir, false, rounds, &mut |body| {
            let _guard = lock.write(None).unwrap();
            body();
        })
    }
}

/// Runs the dance in this process and a helper process at once; returns the handoff
/// latencies (nanoseconds) seen by both.
fn handoff_samples(dir: &Path, use_raw: bool, rounds: usize) -> Vec<u64> {
    let helper = Command::new(std::env::current_exe().unwrap())
        .env(HELPER_ENV, format!("{}|{use_raw}|{rounds}", dir.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut samples = run_dance(dir, use_raw, rounds);
    let out = helper.wait_with_output().unwrap();
    assert!(out.status.success());
    samples.extend(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|s| s.parse::<u64>().ok()),
    );
    samples
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(sorted.get(index).copied().unwrap_or(0))
}

fn handoff(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // Percentiles, alternating raw and ours to cancel drift.
    let mut all: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..4 {
        for (slot, use_raw) in [(0, true), (1, false)] {
            all[slot].extend(handoff_samples(dir.path(), use_raw, 250));
        }
    }
    for (name, samples) in ["raw_flock", "ours"].into_iter().zip(all.iter_mut()) {
        samples.sort_unstable();
        eprintln!(
            "handoff {name}: n={} p50={:?} p99={:?}",
            samples.len(),
            percentile(samples, 0.5),
            percentile(samples, 0.99)
        );
    }
    let p50 = |s: &[u64]| percentile(s, 0.5).as_secs_f64();
    eprintln!(
        "handoff p50 ratio ours/raw = {:.2}",
        p50(&all[1]) / p50(&all[0])
    );

    let mut group = c.benchmark_group("handoff");
    group.sample_size(10);
    for (name, use_raw) in [("raw_flock", true), ("ours", false)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let samples = handoff_samples(dir.path(), use_raw, iters as usize + 4);
                let total: u64 = samples.iter().take(iters as usize).sum();
                let mean = total / samples.len().max(1) as u64;
                Duration::from_nanos(total + mean * (iters.saturating_sub(samples.len() as u64)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, uncontended, handoff);

fn main() {
    if let Ok(spec) = std::env::var(HELPER_ENV) {
        let mut parts = spec.split('|');
        let dir = PathBuf::from(parts.next().unwrap());
        let use_raw: bool = parts.next().unwrap().parse().unwrap();
        let rounds: usize = parts.next().unwrap().parse().unwrap();
        for sample in run_dance(&dir, use_raw, rounds) {
            println!("{sample}");
        }
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
