//! Appending 1,000 rows to tables of 10^3, 10^5 and 10^7 rows, beside the seed's
//! workaround (lock, read the whole table, concatenate, rewrite) at 10^5 rows.
//!
//! Run: `cargo bench --bench append`. Small tables are restored from a template copy
//! before every timed append, so each measures an append to a table of exactly that
//! size; the 10^7 table grows by at most a few 10^4 rows over the run (under 1%).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use criterion::{Criterion, criterion_group, criterion_main};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions};

fn rows(start: usize, n: usize) -> RowBatch {
    let float = |k: usize| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            (start..start + n).map(|i| (i * k) as f64 * 0.5),
        ))
    };
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from_iter_values(
                (start..start + n).map(|i| format!("tile{}", i / 100_000)),
            )) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(
                (start..start + n).map(|i| i as i64),
            )) as ArrayRef,
        ),
        ("area", float(1)),
        ("x", float(2)),
        ("y", float(3)),
    ])
    .unwrap();
    RowBatch { obs, x: None }
}

/// A dataset holding a table of `n` rows.
fn build(path: &Path, n: usize) -> Dataset {
    let ds = Dataset::create(path, DatasetOptions::default()).unwrap();
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1_000_000);
        ds.append_rows("cells", &rows(done, k), Some(&TableSpec::default()), None)
            .unwrap();
        done += k;
    }
    ds
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Times one append of 1,000 rows to a fresh copy of `template` per iteration.
fn fresh_append(template: &Path, scratch: &Path, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let _ = std::fs::remove_dir_all(scratch);
        copy_tree(template, scratch);
        let ds = Dataset::open(scratch, DatasetOptions::default()).unwrap();
        let n = ds.table_info("cells").unwrap().n_obs as usize;
        let batch = rows(n, 1000);
        let started = Instant::now();
        ds.append_rows("cells", &batch, None, None).unwrap();
        total += started.elapsed();
    }
    total
}

/// The seed's workaround: under the lock, read the whole table, concatenate the new
/// rows, and write the table anew.
fn rewrite_append(ds: &Dataset, batch: &RowBatch) {
    let mut txn = ds.write().unwrap();
    let n = ds.table_info("cells").unwrap().n_obs;
    let old = ds.read_rows("cells", 0..n).unwrap();
    let all = arrow_select_concat(&old, &batch.obs);
    txn.remove("cells").unwrap();
    txn.append_rows(
        "cells",
        &RowBatch { obs: all, x: None },
        Some(&TableSpec::default()),
        None,
    )
    .unwrap();
    txn.commit().unwrap();
}

/// Concatenates two batches of the same columns (the read-back region column is a
/// dictionary; it is decoded to strings first).
fn arrow_select_concat(a: &RecordBatch, b: &RecordBatch) -> RecordBatch {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};
    let region = a
        .column_by_name("region")
        .unwrap()
        .as_dictionary::<Int32Type>();
    let names = region.values().as_string::<i32>();
    let mut regions: Vec<String> = region
        .keys()
        .iter()
        .map(|k| names.value(k.unwrap() as usize).to_owned())
        .collect();
    regions.extend(
        b.column_by_name("region")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap().to_owned()),
    );
    let ints = |name: &str| -> ArrayRef {
        let mut v: Vec<i64> = a
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        v.extend(
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .iter(),
        );
        Arc::new(Int64Array::from(v))
    };
    let floats = |name: &str| -> ArrayRef {
        let mut v: Vec<f64> = a
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        v.extend(
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .iter(),
        );
        Arc::new(Float64Array::from(v))
    };
    RecordBatch::try_from_iter(vec![
        ("region", Arc::new(StringArray::from(regions)) as ArrayRef),
        ("instance_id", ints("instance_id")),
        ("area", floats("area")),
        ("x", floats("x")),
        ("y", floats("y")),
    ])
    .unwrap()
}

fn scaling(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // `cargo test` runs benches once as a smoke test: keep that small.
    let measuring = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var_os("SPATIALZARR_BENCH_QUICK").is_some() || !measuring;
    let sizes: &[usize] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 10_000_000]
    };
    let templates: Vec<(usize, PathBuf)> = sizes
        .iter()
        .map(|&n| {
            let path = dir.path().join(format!("t{n}.zarr"));
            build(&path, n);
            (n, path)
        })
        .collect();
    let mut group = c.benchmark_group("append_1000_rows");
    group.sample_size(10);
    for (n, template) in &templates {
        let label = format!("table_{n}");
        if *n >= 10_000_000 {
            let ds = Dataset::open(template, DatasetOptions::default()).unwrap();
            group.bench_function(&label, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let n = ds.table_info("cells").unwrap().n_obs as usize;
                        let batch = rows(n, 1000);
                        let started = Instant::now();
                        ds.append_rows("cells", &batch, None, None).unwrap();
                        total += started.elapsed();
                    }
                    total
                })
            });
        } else {
            let scratch = dir.path().join(format!("scratch{n}.zarr"));
            group.bench_function(&label, |b| {
                b.iter_custom(|iters| fresh_append(template, &scratch, iters))
            });
        }
    }
    // The workaround at 10^5 rows, on fresh copies.
    let (_, template) = templates.iter().find(|(n, _)| *n == 100_000).unwrap();
    let scratch = dir.path().join("scratch-rewrite.zarr");
    group.bench_function("rewrite_workaround_table_100000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_dir_all(&scratch);
                copy_tree(template, &scratch);
                let ds = Dataset::open(&scratch, DatasetOptions::default()).unwrap();
                let batch = rows(100_000, 1000);
                let started = Instant::now();
                rewrite_append(&ds, &batch);
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, scaling);
criterion_main!(benches);
