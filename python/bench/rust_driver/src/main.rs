//! One writer process of `python/bench/bench_writers.py`, through the Rust library:
//! `spatialzarr-bench-driver labels|rows DATASET WORKER COUNT START_AT`. Waits until
//! the wall-clock time START_AT (seconds since the epoch), does the work, prints the
//! wall-clock time it finished.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions, RasterOptions};

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
    let [scenario, path, worker, count, start_at] = args.as_slice() else {
        return Err(
            "usage: spatialzarr-bench-driver labels|rows DATASET WORKER COUNT START_AT".into(),
        );
    };
    let (worker, count): (u64, usize) = (worker.parse()?, count.parse()?);
    let ds = Dataset::open(path.as_ref(), DatasetOptions::default())?;
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
    let wait = start_at.parse::<f64>()? - now();
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
    for i in 0..count {
        match scenario.as_str() {
            "labels" => {
                ds.add_labels(
                    &format!("w{worker}_l{i}"),
                    labels.view(),
                    &RasterOptions::default(),
                )?;
            }
            _ => {
                ds.append_rows(
                    "cells",
                    &rows,
                    Some(&TableSpec::default()),
                    Some(&format!("w{worker}_{i}")),
                )?;
            }
        }
    }
    println!("{}", now());
    Ok(())
}
