//! `many_elements`: single commits, `ls`, `info` and appends in a dataset of 10^5
//! labels (built through the library in batched transactions) beside the same in a
//! dataset of 10; `check` timed. `many_writers`: 256 processes each adding a labels
//! element and making 4 keyed appends of 200 rows, beside 8 processes doing the same
//! total work; nothing lost or duplicated, `check` clean.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, ensure};
use ndarray::{ArrayD, IxDyn};
use serde_json::json;
use spatialzarr::table::TableSpec;
use spatialzarr::{Dataset, DatasetOptions, ElementKind, RasterOptions};

use super::{Measure, arg, median, run_workers};

/// Labels added per transaction while building.
const BATCH: usize = 2_000;
/// The table of both scenarios.
const TABLE: &str = "cells";

/// (elements of the large dataset, rows of its table, single commits per side).
fn elements_size(quick: bool) -> (usize, usize, usize) {
    if quick {
        (2_000, 100_000, 10)
    } else {
        (100_000, 1_000_000, 50)
    }
}

fn tiny_labels(value: u32, width: usize) -> ArrayD<u32> {
    ArrayD::from_elem(IxDyn(&[width, width]), value)
}

/// A dataset of `n` 4x4 labels and a table of `rows` rows.
fn build(path: &Path, n: usize, rows: usize) -> anyhow::Result<Dataset> {
    let ds = Dataset::create(path, DatasetOptions::default())?;
    let mut next = 0;
    while next < n {
        let mut txn = ds.write()?;
        for i in next..(next + BATCH).min(n) {
            txn.add_raster(
                ElementKind::Labels,
                &format!("tile{i:06}"),
                tiny_labels(i as u32 + 1, 4).view(),
                &RasterOptions::default(),
                false,
            )?;
        }
        txn.commit()?;
        next += BATCH;
    }
    let mut done = 0;
    while done < rows {
        let k = (rows - done).min(500_000);
        ds.append_rows(
            TABLE,
            &super::rows::scaling_rows(done, k),
            Some(&TableSpec::default()),
            None,
        )?;
        done += k;
    }
    Ok(ds)
}

/// Seconds `f` took.
fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs the CLI and times it.
fn cli(args: &[String]) -> anyhow::Result<f64> {
    let exe = std::env::current_exe().context("cannot find the spatialzarr executable")?;
    timed(|| {
        let out = Command::new(&exe).args(args).output()?;
        ensure!(
            out.status.success(),
            "spatialzarr {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
}

/// The `many_elements` scenario.
pub fn many_elements(
    scratch: &Path,
    quick: bool,
    elements: Option<usize>,
) -> anyhow::Result<Vec<Measure>> {
    let (default_n, rows, commits) = elements_size(quick);
    let n = elements.unwrap_or(default_n).max(10);
    let large_path = scratch.join("large.zarr");
    let small_path = scratch.join("small.zarr");
    let build_seconds = timed(|| build(&large_path, n, rows).map(drop))?;
    build(&small_path, 10, rows)?;
    let large = Dataset::open(&large_path, DatasetOptions::default())?;
    let small = Dataset::open(&small_path, DatasetOptions::default())?;
    let npy = scratch.join("l32.npy");
    ndarray_npy::write_npy(&npy, &tiny_labels(7, 32))?;

    // Single add_labels commits, alternating the two datasets.
    let (mut lib, mut cli_times) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for i in 0..commits {
        for (side, ds) in [&large, &small].into_iter().enumerate() {
            let name = format!("single{i:03}");
            lib[side].push(timed(|| {
                ds.add_labels(&name, tiny_labels(3, 32).view(), &RasterOptions::default())?;
                Ok(())
            })?);
            let path = if side == 0 { &large_path } else { &small_path };
            cli_times[side].push(cli(&[
                "add-labels".into(),
                "--npy".into(),
                arg(&npy),
                arg(path),
                format!("cli{i:03}"),
            ])?);
        }
    }
    let ms = |v: &[f64]| median(v) * 1e3;
    let mut measures = vec![
        Measure::new(
            &format!("many_elements add_labels lib @{n}"),
            (ms(&lib[0]), ms(&lib[1])),
            "the same at 10 elements",
            "ms",
            Some(1.5),
            json!({"commits": commits, "build_seconds": build_seconds}),
        ),
        Measure::new(
            &format!("many_elements add_labels CLI @{n}"),
            (ms(&cli_times[0]), ms(&cli_times[1])),
            "the same at 10 elements",
            "ms",
            Some(1.5),
            json!({"commits": commits}),
        ),
    ];

    // ls and info NAME, through the CLI (what a user runs) and the library.
    let mut reads = |what: &str,
                     args: Vec<String>,
                     lib_call: &dyn Fn(&Dataset) -> anyhow::Result<()>|
     -> anyhow::Result<()> {
        let mut cli_large = Vec::new();
        let mut cli_small = Vec::new();
        let mut lib_large = Vec::new();
        for _ in 0..5 {
            let mut large_args = args.clone();
            large_args.insert(1, arg(&large_path));
            cli_large.push(cli(&large_args)?);
            let mut small_args = args.clone();
            small_args.insert(1, arg(&small_path));
            cli_small.push(cli(&small_args)?);
            lib_large.push(timed(|| lib_call(&large))?);
        }
        measures.push(Measure::new(
            &format!("many_elements {what} CLI @{n}"),
            (ms(&cli_large), ms(&cli_small)),
            "the same at 10 elements",
            "ms",
            None,
            json!({"library_ms": ms(&lib_large)}),
        ));
        Ok(())
    };
    reads("ls", vec!["ls".into()], &|ds| {
        ds.list().map(drop).map_err(Into::into)
    })?;
    reads("info", vec!["info".into(), "tile000007".into()], &|ds| {
        ds.info("tile000007").map(drop).map_err(Into::into)
    })?;

    // 1,000-row appends into the tables of `rows` rows.
    let mut appends = [Vec::new(), Vec::new()];
    for i in 0..commits.min(20) {
        for (side, ds) in [&large, &small].into_iter().enumerate() {
            let start = rows + i * 1000;
            appends[side].push(timed(|| {
                ds.append_rows(TABLE, &super::rows::scaling_rows(start, 1000), None, None)?;
                Ok(())
            })?);
        }
    }
    measures.push(Measure::new(
        &format!("many_elements append 1000 rows @{n}"),
        (ms(&appends[0]), ms(&appends[1])),
        &format!("the same into a {rows}-row table in an otherwise empty dataset"),
        "ms",
        Some(1.5),
        json!({"appends": appends[0].len()}),
    ));

    let mut problems = 0;
    let check_seconds = timed(|| {
        problems = large.check(false)?.problems.len();
        Ok(())
    })?;
    let small_check = timed(|| small.check(false).map(drop).map_err(Into::into))?;
    ensure!(
        problems == 0,
        "many_elements: check found {problems} problems"
    );
    measures.push(Measure::new(
        &format!("many_elements check @{n}"),
        (check_seconds, small_check),
        "check at 10 elements",
        "s",
        None,
        json!({"problems": problems}),
    ));
    Ok(measures)
}

/// (processes of the wide run, of the narrow run).
fn writers_size(quick: bool) -> (usize, usize) {
    if quick { (32, 4) } else { (256, 8) }
}

/// Appends of each unit of work.
const APPENDS: usize = 4;
/// Rows of each append.
const APPEND_ROWS: usize = 200;

/// One worker of `many_writers`: units `first..first+count`, each one labels
/// element and [`APPENDS`] keyed appends of [`APPEND_ROWS`] rows.
pub fn writer(dataset: &Path, first: usize, count: usize) -> anyhow::Result<()> {
    super::ready_and_wait()?;
    let ds = Dataset::open(dataset, DatasetOptions::default())?;
    for unit in first..first + count {
        ds.add_labels(
            &format!("unit{unit:05}"),
            tiny_labels(unit as u32 + 1, 32).view(),
            &RasterOptions::default(),
        )?;
        for a in 0..APPENDS {
            let start = (unit * APPENDS + a) * APPEND_ROWS;
            ds.append_rows(
                TABLE,
                &super::rows::scaling_rows(start, APPEND_ROWS),
                None,
                Some(&format!("unit{unit}-{a}")),
            )?;
        }
    }
    Ok(())
}

/// One run of `many_writers` with `processes` sharing `units` units of work: the
/// operations per second, after checking that nothing was lost or duplicated.
fn writers_run(path: &Path, processes: usize, units: usize) -> anyhow::Result<f64> {
    let ds = Dataset::create(path, DatasetOptions::default())?;
    // The table is made with one row beyond every worker's rows.
    let seed = units * APPENDS * APPEND_ROWS;
    ds.append_rows(
        TABLE,
        &super::rows::scaling_rows(seed, 1),
        Some(&TableSpec::default()),
        None,
    )?;
    let per = units / processes;
    let lists: Vec<Vec<String>> = (0..processes)
        .map(|p| {
            vec![
                "writers".into(),
                arg(path),
                (p * per).to_string(),
                per.to_string(),
            ]
        })
        .collect();
    let (elapsed, _) = run_workers(&lists)?;
    let labels = ds.list()?.labels.len();
    ensure!(
        labels == units,
        "many_writers: {labels} labels, not {units}"
    );
    let n_obs = ds.table_info(TABLE)?.n_obs as usize;
    ensure!(
        n_obs == seed + 1,
        "many_writers: {n_obs} rows, not {}",
        seed + 1
    );
    let obs = ds.read_rows(TABLE, 0..n_obs as u64)?;
    let mut ids: Vec<f64> = obs
        .column_by_name("area")
        .context("area column")?
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .context("area is f64")?
        .values()
        .to_vec();
    ids.sort_by(f64::total_cmp);
    ids.dedup();
    ensure!(ids.len() == n_obs, "many_writers: duplicated rows");
    let problems = ds.check(false)?.problems;
    ensure!(problems.is_empty(), "many_writers: check: {problems:?}");
    Ok((units * (1 + APPENDS)) as f64 / elapsed.as_secs_f64())
}

/// The `many_writers` scenario.
pub fn many_writers(scratch: &Path, quick: bool) -> anyhow::Result<Vec<Measure>> {
    let (wide, narrow) = writers_size(quick);
    let wide_ops = writers_run(&scratch.join("wide.zarr"), wide, wide)?;
    let narrow_ops = writers_run(&scratch.join("narrow.zarr"), narrow, wide)?;
    Ok(vec![Measure::new(
        &format!("many_writers {wide} processes"),
        (1.0 / wide_ops, 1.0 / narrow_ops),
        &format!("{narrow} processes, same work"),
        "s/op",
        Some(1.0 / 0.7),
        json!({"ops_per_second": wide_ops, "baseline_ops_per_second": narrow_ops,
               "operations": wide * (1 + APPENDS)}),
    )])
}
