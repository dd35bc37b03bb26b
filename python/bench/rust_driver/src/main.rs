//! One writer process of `python/bench/bench_writers.py`, through the Rust library:
//! `spatialzarr-bench-driver WORKER` prepares its data, then reads rounds from its
//! standard input, one a line: `labels|rows DATASET ROUND COUNT START_AT`. For each it
//! opens the dataset, waits until the wall-clock time START_AT (seconds since the
//! epoch), does the work, and prints the wall-clock time it finished and the CPU
//! seconds the work took.

#![forbid(unsafe_code)]

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions, RasterOptions};

/// User + system CPU time of this process, all threads (`/proc/self/stat`, in clock
/// ticks of 1/100 s, the value Linux uses everywhere).
fn cpu_seconds() -> Result<f64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat
        .rsplit_once(')')
        .ok_or("no command name in /proc/self/stat")?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Pseudo-random values, the same kind of data the Python side writes.
fn noise(seed: u64, n: usize) -> impl Iterator<Item = u64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n).map(move |_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [worker] = args.as_slice() else {
        return Err("usage: spatialzarr-bench-driver WORKER (rounds on stdin)".into());
    };
    let worker: u64 = worker.parse()?;
    let labels = ndarray::ArrayD::from_shape_vec(
        ndarray::IxDyn(&[1024, 1024]),
        noise(worker, 1024 * 1024)
            .map(|v| (v % 5000) as u32)
            .collect(),
    )?;
    let name = format!("w{worker}");
    let region: DictionaryArray<Int32Type> = std::iter::repeat_n(name.as_str(), 1000).collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("region", Arc::new(region)),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(0..1000)),
        ),
        (
            "area",
            Arc::new(Float64Array::from_iter_values(
                noise(worker, 1000).map(|v| v as f64 / 2f64.powi(31)),
            )),
        ),
    ];
    let rows = RowBatch {
        obs: RecordBatch::try_from_iter(columns)?,
        x: None,
    };
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [scenario, path, round, count, start_at] = fields.as_slice() else {
            return Err(format!(
                "a round is `labels|rows DATASET ROUND COUNT START_AT`, not {line:?}"
            )
            .into());
        };
        let count: usize = count.parse()?;
        let ds = Dataset::open(path.as_ref(), DatasetOptions::default())?;
        let wait = start_at.parse::<f64>()? - now();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        let cpu = cpu_seconds()?;
        for i in 0..count {
            if *scenario == "labels" {
                ds.add_labels(
                    &format!("w{worker}_r{round}_l{i}"),
                    labels.view(),
                    &RasterOptions::default(),
                )?;
            } else {
                ds.append_rows(
                    "cells",
                    &rows,
                    Some(&TableSpec::default()),
                    Some(&format!("w{worker}_r{round}_{i}")),
                )?;
            }
        }
        println!("{} {}", now(), cpu_seconds()? - cpu);
    }
    Ok(())
}
