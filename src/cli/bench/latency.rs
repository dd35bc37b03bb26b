//! `commit_latency` (a small metadata-only commit beside one atomic publish of a
//! small file) and `lock_handoff` (release-to-acquire across processes beside raw
//! flock).

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use ndarray::{ArrayD, IxDyn};
use serde_json::json;
use spatialzarr::lock::{DatasetLock, LockOptions};
use spatialzarr::storage::Publisher;
use spatialzarr::{
    Dataset, DatasetOptions, Durability, FolderSync, RasterOptions, Transform, Transformations,
};

use super::{Measure, arg, numbers, percentile, run_workers};

/// The element whose transformations the commits change.
const ELEMENT: &str = "img";

/// The `k`-th transformations: a scale that differs from the previous one.
fn transformations(k: usize) -> Transformations {
    let s = 1.0 + (k % 2) as f64;
    Transformations(
        [("global".to_owned(), Transform::Scale(vec![s, s]))]
            .into_iter()
            .collect(),
    )
}

/// Times `count` metadata-only commits, in microseconds.
fn commits(ds: &Dataset, count: usize, first: usize) -> anyhow::Result<Vec<f64>> {
    (0..count)
        .map(|k| {
            let t = transformations(first + k);
            let started = Instant::now();
            ds.set_transformations(ELEMENT, &t)?;
            Ok(started.elapsed().as_secs_f64() * 1e6)
        })
        .collect()
}

/// Times `count` atomic publishes of a small file (temp, fsync, rename, folder
/// fsync), in microseconds.
fn publishes(folder: &Path, count: usize, durability: Durability) -> anyhow::Result<Vec<f64>> {
    let path = folder.join("small.json");
    (0..count)
        .map(|k| {
            let text = format!("{{\"k\": {k}}}");
            let started = Instant::now();
            let publisher = Publisher::with_durability(durability);
            publisher.write(&path, text.as_bytes())?;
            publisher.sync()?;
            Ok(started.elapsed().as_secs_f64() * 1e6)
        })
        .collect()
}

/// One writer process of the 8-writer run: `count` timed commits, printed in µs.
pub fn commit_worker(dataset: &Path, w: usize, count: usize) -> anyhow::Result<()> {
    let ds = Dataset::open(dataset, DatasetOptions::default())?;
    super::ready_and_wait()?;
    for sample in commits(&ds, count, w)? {
        println!("{sample}");
    }
    Ok(())
}

/// The `commit_latency` scenario.
pub fn commit_latency(scratch: &Path, quick: bool) -> anyhow::Result<Vec<Measure>> {
    let (blocks, per_block, per_writer) = if quick { (6, 10, 10) } else { (30, 10, 60) };
    let path = scratch.join("commits.zarr");
    let ds = Dataset::create(&path, DatasetOptions::default())?;
    let pixels = ArrayD::<u8>::zeros(IxDyn(&[1, 8, 8]));
    ds.add_image(ELEMENT, pixels.view(), &RasterOptions::default())?;
    let publish_dir = scratch.join("publish");
    std::fs::create_dir_all(&publish_dir)?;

    // One writer, in blocks alternating with the baseline; at each durability level.
    let without_fsync = Dataset::open(
        &path,
        DatasetOptions {
            durability: Some(Durability::Process),
            ..DatasetOptions::default()
        },
    )?;
    // Every folder fsynced, whatever the filesystem (the default where it does not
    // order namespace changes).
    let strict = Dataset::open(
        &path,
        DatasetOptions {
            folder_sync: Some(FolderSync::Strict),
            ..DatasetOptions::default()
        },
    )?;
    let (mut ours, mut baseline) = (Vec::new(), Vec::new());
    let (mut ours_process, mut baseline_process) = (Vec::new(), Vec::new());
    let mut ours_strict = Vec::new();
    for block in 0..blocks {
        ours.extend(commits(&ds, per_block, block * per_block)?);
        baseline.extend(publishes(&publish_dir, per_block, Durability::Full)?);
        ours_strict.extend(commits(&strict, per_block, block * per_block)?);
        ours_process.extend(commits(&without_fsync, per_block, block * per_block)?);
        baseline_process.extend(publishes(&publish_dir, per_block, Durability::Process)?);
    }
    // Eight writer processes at once.
    let lists: Vec<Vec<String>> = (0..8)
        .map(|w| {
            vec![
                "commit".into(),
                arg(&super::through_peer(&path, w % 2 == 1)),
                w.to_string(),
                per_writer.to_string(),
            ]
        })
        .collect();
    let (_, outputs) = run_workers(&lists)?;
    let mut eight = Vec::new();
    for lines in &outputs {
        eight.extend(numbers(lines)?);
    }
    baseline.extend(publishes(&publish_dir, per_block, Durability::Full)?);

    let name = "one atomic publish of a small file (temp, fsync, rename, folder fsync)";
    let folder_sync = ds.folder_sync().as_str();
    let details_in = |samples: &[f64], writers: usize, folder_sync: &str| json!({"writers": writers, "commits": samples.len(), "baseline_publishes": baseline.len(), "folder_sync": folder_sync});
    let details = |samples: &[f64], writers: usize| details_in(samples, writers, folder_sync);
    Ok(vec![
        Measure::new(
            "commit_latency_p50_1_writer_process",
            (
                percentile(&ours_process, 0.5),
                percentile(&baseline_process, 0.5),
            ),
            "one atomic publish of a small file without fsync (temp, rename)",
            "us",
            None,
            details(&ours_process, 1),
        ),
        Measure::new(
            "commit_latency_p50_1_writer",
            (percentile(&ours, 0.5), percentile(&baseline, 0.5)),
            name,
            "us",
            Some(3.0),
            details(&ours, 1),
        ),
        Measure::new(
            "commit_latency_p50_1_writer_strict",
            (percentile(&ours_strict, 0.5), percentile(&baseline, 0.5)),
            name,
            "us",
            None,
            details_in(&ours_strict, 1, "strict"),
        ),
        Measure::new(
            "commit_latency_p99_1_writer",
            (percentile(&ours, 0.99), percentile(&baseline, 0.99)),
            name,
            "us",
            None,
            details(&ours, 1),
        ),
        Measure::new(
            "commit_latency_p50_8_writers",
            (percentile(&eight, 0.5), percentile(&baseline, 0.5)),
            name,
            "us",
            None,
            details(&eight, 8),
        ),
        Measure::new(
            "commit_latency_p99_8_writers",
            (percentile(&eight, 0.99), percentile(&baseline, 0.99)),
            name,
            "us",
            None,
            details(&eight, 8),
        ),
    ])
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn open_raw(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// How long each side holds the lock in the handoff dance.
const HANDOFF_HOLD: Duration = Duration::from_micros(1500);
/// How long each side waits after releasing before it asks again: shorter than the
/// other side's hold, so that it is blocked in its acquire when the other releases.
const HANDOFF_PAUSE: Duration = Duration::from_micros(400);

/// One side of the handoff: `rounds` times ask for the lock, and once granted note how
/// long ago the OTHER process released it, hold it a while, stamp our own release
/// time, release, pause. A latency counts only when we were already waiting when the
/// other side released, so it measures a blocked waiter's wake-up and never idle
/// time. Returns the handoff latencies seen, in microseconds.
pub fn dance(dir: &Path, raw: bool, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let stamp = dir.join(if raw { "stamp-raw" } else { "stamp-ours" });
    let me = std::process::id();
    let mut samples = Vec::with_capacity(rounds);
    let mut body = |asked: u128| -> anyhow::Result<()> {
        let got = now_nanos();
        let text = std::fs::read_to_string(&stamp).unwrap_or_default();
        if let Some((pid, released)) = text.split_once(' ')
            && let Ok(released) = released.parse::<u128>()
            && pid.parse::<u32>().ok() != Some(me)
            && asked < released
            && released <= got
        {
            samples.push((got - released) as f64 / 1e3);
        }
        std::thread::sleep(HANDOFF_HOLD);
        std::fs::write(&stamp, format!("{me} {}", now_nanos()))?;
        Ok(())
    };
    if raw {
        let file = open_raw(&dir.join("raw-lock"))?;
        for _ in 0..rounds {
            let asked = now_nanos();
            file.lock()?;
            let result = body(asked);
            file.unlock()?;
            result?;
            std::thread::sleep(HANDOFF_PAUSE);
        }
    } else {
        let lock = DatasetLock::open(dir, LockOptions::default())?;
        for _ in 0..rounds {
            let asked = now_nanos();
            let guard = lock.write(None)?;
            let result = body(asked);
            drop(guard);
            result?;
            std::thread::sleep(HANDOFF_PAUSE);
        }
    }
    Ok(samples)
}

/// The handoff latencies (µs) of one run of the dance in this process and a helper.
fn handoff_run(dir: &Path, raw: bool, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let mut command = crate::cli::workers::command("bench-worker")?;
    command
        .args(["handoff", &arg(&super::through_peer(dir, true))])
        .arg(if raw { "raw" } else { "ours" })
        .arg(rounds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let (helper, running) = crate::cli::workers::Running::spawn(&mut command)
        .context("cannot start the handoff helper")?;
    let mut samples = dance(dir, raw, rounds)?;
    let out = helper.wait_with_output()?;
    drop(running);
    if !out.status.success() {
        bail!("the handoff helper failed ({})", out.status);
    }
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    samples.extend(numbers(&lines)?);
    Ok(samples)
}

/// The `lock_handoff` scenario.
pub fn lock_handoff(scratch: &Path, quick: bool) -> anyhow::Result<Vec<Measure>> {
    let (runs, rounds) = if quick { (2, 100) } else { (4, 250) };
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        raw.extend(handoff_run(scratch, true, rounds)?);
        ours.extend(handoff_run(scratch, false, rounds)?);
    }
    let details = json!({"handoffs_ours": ours.len(), "handoffs_raw": raw.len(),
        "p99_ours_us": percentile(&ours, 0.99), "p99_raw_us": percentile(&raw, 0.99)});
    Ok(vec![Measure::new(
        "lock_handoff_p50",
        (percentile(&ours, 0.5), percentile(&raw, 0.5)),
        "raw flock on a file, same dance",
        "us",
        Some(2.0),
        details,
    )])
}
