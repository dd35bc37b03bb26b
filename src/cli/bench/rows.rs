//! `append_rows` (processes appending to one table, beside one process appending the
//! same batches with plain zarrs) and `append_scaling` (one append into tables of
//! growing size, beside the rewrite workaround).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use serde_json::json;
use spatialzarr::table::{Prim, RowBatch, TableSpec, XRows, XSpec};
use spatialzarr::{Dataset, DatasetOptions};
use zarrs::array::codec::ZstdCodec;
use zarrs::array::{Array as ZarrArray, ArrayBuilder, ArraySubset, Element, FillValue};

use super::{Measure, arg, median, run_workers};

/// Processes appending at once.
const WORKERS: usize = 8;
/// Rows per append.
const ROWS: usize = 1000;
/// Width of X.
const X_WIDTH: usize = 50;
/// Float columns besides the instance id (10 numeric columns in all).
const FLOATS: usize = 9;
/// The table every scenario appends to.
const TABLE: &str = "cells";

/// Appends per worker, and rounds of each side.
fn append_size(quick: bool) -> (usize, usize) {
    if quick { (5, 1) } else { (50, 3) }
}

/// The `i`-th batch of worker `w`: a region per worker, 10 numeric columns and X.
pub fn batch(w: usize, i: usize) -> RowBatch {
    let base = (w * 100_000 + i * ROWS) as f64;
    let mut columns: Vec<(String, ArrayRef)> = vec![
        (
            "region".into(),
            Arc::new(StringArray::from(vec![format!("tile_w{w}_labels"); ROWS])),
        ),
        (
            "instance_id".into(),
            Arc::new(Int64Array::from_iter_values(
                (0..ROWS as i64).map(|r| (i * ROWS) as i64 + r + 1),
            )),
        ),
    ];
    for c in 0..FLOATS {
        columns.push((
            format!("feature_{c}"),
            Arc::new(Float64Array::from_iter_values(
                (0..ROWS).map(|r| base + r as f64 * 0.25 + c as f64),
            )),
        ));
    }
    let obs = RecordBatch::try_from_iter(columns).expect("columns of equal length");
    let x = (0..ROWS * X_WIDTH)
        .map(|k| ((k * 7 + w * 13 + i) % 101) as f64 * 0.5)
        .collect();
    RowBatch {
        obs,
        x: Some(XRows::Dense(x)),
    }
}

/// The table the `append_rows` scenario makes.
fn spec() -> TableSpec {
    TableSpec {
        x: XSpec::Dense {
            dtype: Prim::F32,
            var_names: (0..X_WIDTH).map(|v| format!("gene_{v}")).collect(),
        },
        ..TableSpec::default()
    }
}

/// Our side, in one worker: `appends` appends to the dataset's table.
pub fn ours(
    dataset: &Path,
    w: usize,
    appends: usize,
    durability: spatialzarr::Durability,
) -> anyhow::Result<()> {
    let batches: Vec<RowBatch> = (0..appends).map(|i| batch(w, i)).collect();
    super::ready_and_wait()?;
    let options = DatasetOptions {
        durability: Some(durability),
        ..DatasetOptions::default()
    };
    let ds = Dataset::open(dataset, options)?;
    let spec = spec();
    for rows in &batches {
        ds.append_rows(TABLE, rows, Some(&spec), None)?;
    }
    Ok(())
}

/// A table as plain zarrs arrays: one 1-d array per column (the region as int32
/// codes) and a 2-d X, chunked and compressed as ours; appended to by resizing each
/// array and writing the new rows in place.
struct PlainTable {
    store: Arc<super::plain_store::PlainStore>,
    folder: std::path::PathBuf,
}

impl PlainTable {
    fn create(folder: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(folder)?;
        let store = Arc::new(super::plain_store::PlainStore::new(folder)?);
        let table = Self {
            store,
            folder: folder.to_path_buf(),
        };
        let chunk = spatialzarr::table::arrays::ROW_CHUNK;
        table.make("/obs/region", spatialzarr::DType::I32, vec![0], vec![chunk])?;
        table.make(
            "/obs/instance_id",
            spatialzarr::DType::I64,
            vec![0],
            vec![chunk],
        )?;
        for c in 0..FLOATS {
            let path = format!("/obs/feature_{c}");
            table.make(&path, spatialzarr::DType::F64, vec![0], vec![chunk])?;
        }
        // About 1 MiB per X chunk, as ours.
        let x_rows = ((1u64 << 20) / (X_WIDTH as u64 * 4)).clamp(16, chunk);
        table.make(
            "/X",
            spatialzarr::DType::F32,
            vec![0, X_WIDTH as u64],
            vec![x_rows, X_WIDTH as u64],
        )?;
        Ok(table)
    }

    fn make(
        &self,
        path: &str,
        dtype: spatialzarr::DType,
        shape: Vec<u64>,
        chunks: Vec<u64>,
    ) -> anyhow::Result<()> {
        let array = ArrayBuilder::new(
            shape,
            chunks,
            dtype.zarr(),
            FillValue::new(vec![0; dtype.size()]),
        )
        .bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(3, false))])
        .build(self.store.clone(), path)?;
        array.store_metadata()?;
        Ok(())
    }

    /// Appends `values` to the array at `path`; returns the files it wrote (the
    /// array's `zarr.json` and the chunks holding the new rows).
    fn append<T: Element>(
        &self,
        path: &str,
        values: Vec<T>,
        row_len: u64,
    ) -> anyhow::Result<Vec<std::path::PathBuf>> {
        let mut array = ZarrArray::open(self.store.clone(), path)?;
        let mut shape = array.shape().to_vec();
        let start = shape[0];
        let rows = values.len() as u64 / row_len;
        shape[0] += rows;
        array.set_shape(shape.clone())?;
        array.store_metadata()?;
        let ranges: Vec<Range<u64>> = std::iter::once(start..start + rows)
            .chain(shape[1..].iter().map(|&n| 0..n))
            .collect();
        array.store_array_subset(&ArraySubset::new_with_ranges(&ranges), values)?;
        let node = self.folder.join(path.trim_start_matches('/'));
        let mut written = vec![node.join("zarr.json")];
        let chunk_rows = array.chunk_shape(&vec![0; shape.len()])?[0].get();
        for chunk in start / chunk_rows..(start + rows).div_ceil(chunk_rows) {
            let mut file = node.join("c").join(chunk.to_string());
            for _ in 1..shape.len() {
                file = file.join("0");
            }
            written.push(file);
        }
        Ok(written)
    }

    /// Appends one batch to every array; returns the files written.
    fn append_batch(&self, w: usize, rows: &RowBatch) -> anyhow::Result<Vec<std::path::PathBuf>> {
        let n = rows.obs.num_rows();
        let mut written = self.append("/obs/region", vec![w as i32; n], 1)?;
        let ids = rows
            .obs
            .column(1)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        written.extend(self.append("/obs/instance_id", ids, 1)?);
        for c in 0..FLOATS {
            let values = rows.obs.column(2 + c).as_primitive::<Float64Type>();
            written.extend(self.append(
                &format!("/obs/feature_{c}"),
                values.values().to_vec(),
                1,
            )?);
        }
        let Some(XRows::Dense(x)) = &rows.x else {
            anyhow::bail!("the batch has no dense X");
        };
        let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        written.extend(self.append("/X", x, X_WIDTH as u64)?);
        Ok(written)
    }
}

/// The baseline, in one process: every worker's batches appended with plain zarrs;
/// with `fsync`, after each append the files it wrote and their folders are fsynced
/// (in one round).
pub fn plain(folder: &Path, workers: usize, appends: usize, fsync: bool) -> anyhow::Result<()> {
    let batches: Vec<(usize, RowBatch)> = (0..appends)
        .flat_map(|i| (0..workers).map(move |w| (w, batch(w, i))))
        .collect();
    super::ready_and_wait()?;
    let table = PlainTable::create(folder)?;
    for (w, rows) in &batches {
        let written = table.append_batch(*w, rows)?;
        if fsync {
            super::fsync_files(&written)?;
        }
    }
    Ok(())
}

/// The `append_rows` scenario: 8 writers at each durability level beside the one
/// process of the baseline, with fsync (for `Durability::Full`) and without (for
/// `Durability::Process`).
pub fn append_rows(scratch: &Path, quick: bool) -> anyhow::Result<Vec<Measure>> {
    let (appends, rounds) = append_size(quick);
    let mut times: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        for (side, role) in [
            "rows-ours",
            "rows-plain-fsync",
            "rows-ours-process",
            "rows-plain",
        ]
        .into_iter()
        .enumerate()
        {
            let target = scratch.join(format!("{role}-{round}"));
            let elapsed = if role.starts_with("rows-ours") {
                Dataset::create(&target, DatasetOptions::default())?;
                let lists: Vec<Vec<String>> = (0..WORKERS)
                    .map(|w| {
                        vec![
                            role.into(),
                            arg(&target),
                            w.to_string(),
                            appends.to_string(),
                        ]
                    })
                    .collect();
                let (elapsed, _) = run_workers(&lists)?;
                let info = Dataset::open(&target, DatasetOptions::default())?.table_info(TABLE)?;
                ensure!(
                    info.n_obs == (WORKERS * appends * ROWS) as u64,
                    "append_rows: the table has {} rows, expected {}",
                    info.n_obs,
                    WORKERS * appends * ROWS
                );
                elapsed
            } else {
                let list = vec![
                    role.into(),
                    arg(&target),
                    WORKERS.to_string(),
                    appends.to_string(),
                ];
                run_workers(&[list])?.0
            };
            times[side].push(elapsed.as_secs_f64());
            std::fs::remove_dir_all(&target)?;
            super::settle(scratch)?;
        }
    }
    let details = |ours: usize, baseline: usize| {
        json!({"processes": WORKERS, "appends": WORKERS * appends, "rows_per_append": ROWS,
               "numeric_columns": FLOATS + 1, "x_width": X_WIDTH, "rounds": rounds,
               "ours_runs": times[ours], "baseline_runs": times[baseline],
               "ratio_to_floor_without_fsync": median(&times[ours]) / median(&times[3])})
    };
    Ok(vec![
        Measure::new(
            "append_rows",
            (median(&times[0]), median(&times[1])),
            "plain zarrs, one process, no locks, each append's files and the folders holding them fsynced",
            "s",
            Some(1.25),
            details(0, 1),
        ),
        Measure::new(
            "append_rows_process",
            (median(&times[2]), median(&times[3])),
            "plain zarrs, one process, no locks, no fsync",
            "s",
            Some(1.25),
            details(2, 3),
        ),
    ])
}

/// `n` rows of the scaling table (a region per 100,000 rows, no X), from row `start`.
pub(super) fn scaling_rows(start: usize, n: usize) -> RowBatch {
    let float = |k: f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            (start..start + n).map(|i| i as f64 * k),
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
            )),
        ),
        ("area", float(0.5)),
        ("centroid_x", float(0.25)),
        ("centroid_y", float(0.125)),
    ])
    .expect("columns of equal length");
    RowBatch { obs, x: None }
}

/// A dataset at `path` whose table holds `n` rows.
fn build(path: &Path, n: usize) -> anyhow::Result<()> {
    let ds = Dataset::create(path, DatasetOptions::default())?;
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1_000_000);
        ds.append_rows(
            TABLE,
            &scaling_rows(done, k),
            Some(&TableSpec::default()),
            None,
        )?;
        done += k;
    }
    Ok(())
}

/// Copies the folder `from` to `to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The values of a string column, plain or dictionary-encoded.
fn strings(column: &ArrayRef) -> Vec<String> {
    if let Some(dict) = column.as_any_dictionary_opt() {
        let values = dict.values().as_string::<i32>();
        dict.normalized_keys()
            .into_iter()
            .map(|k| values.value(k).to_owned())
            .collect()
    } else {
        let values = column.as_string::<i32>();
        (0..values.len())
            .map(|i| values.value(i).to_owned())
            .collect()
    }
}

/// The seed's workaround: under the write lock, read the whole table, concatenate
/// the new rows, and write the table anew.
fn rewrite_append(ds: &Dataset, rows: &RowBatch) -> anyhow::Result<()> {
    let mut txn = ds.write()?;
    let n = ds.table_info(TABLE)?.n_obs;
    let old = ds.read_rows(TABLE, 0..n)?;
    let mut columns: Vec<(String, ArrayRef)> = Vec::new();
    let mut regions = strings(old.column(0));
    regions.extend(strings(rows.obs.column(0)));
    columns.push(("region".into(), Arc::new(StringArray::from(regions))));
    let mut ids = old.column(1).as_primitive::<Int64Type>().values().to_vec();
    ids.extend(rows.obs.column(1).as_primitive::<Int64Type>().values());
    columns.push(("instance_id".into(), Arc::new(Int64Array::from(ids))));
    for c in 2..old.num_columns() {
        let mut values = old
            .column(c)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        values.extend(rows.obs.column(c).as_primitive::<Float64Type>().values());
        columns.push((
            old.schema().field(c).name().clone(),
            Arc::new(Float64Array::from(values)),
        ));
    }
    let all = RecordBatch::try_from_iter(columns)?;
    txn.remove(TABLE)?;
    txn.append_rows(
        TABLE,
        &RowBatch { obs: all, x: None },
        Some(&TableSpec::default()),
        None,
    )?;
    txn.commit()?;
    Ok(())
}

/// Times one append of 1,000 rows to a fresh copy of `template` (or, with
/// `in_place`, to `template` itself), in seconds.
fn time_append(
    template: &Path,
    scratch: &Path,
    in_place: bool,
    rewrite: bool,
) -> anyhow::Result<f64> {
    let path = if in_place {
        template
    } else {
        if scratch.exists() {
            std::fs::remove_dir_all(scratch)?;
        }
        copy_tree(template, scratch)?;
        // Write the copy out now, so that the timed append's fsyncs do not pay for it.
        let folder = std::fs::File::open(scratch)?;
        rustix::fs::syncfs(&folder)?;
        scratch
    };
    let ds = Dataset::open(path, DatasetOptions::default())?;
    let n = ds.table_info(TABLE)?.n_obs as usize;
    let rows = scaling_rows(n, ROWS);
    let started = Instant::now();
    if rewrite {
        rewrite_append(&ds, &rows)?;
    } else {
        ds.append_rows(TABLE, &rows, None, None)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(
        ds.table_info(TABLE)?.n_obs as usize == n + ROWS,
        "append_scaling: the append did not add {ROWS} rows"
    );
    Ok(elapsed)
}

/// The `append_scaling` scenario, and the workaround at 10^5 rows.
pub fn append_scaling(scratch: &Path, quick: bool) -> anyhow::Result<Vec<Measure>> {
    let (sizes, samples): (&[usize], usize) = if quick {
        (&[1_000, 10_000, 100_000], 5)
    } else {
        (&[1_000, 100_000, 10_000_000], 15)
    };
    let mut templates = Vec::new();
    for &n in sizes {
        let path = scratch.join(format!("table-{n}.zarr"));
        build(&path, n).with_context(|| format!("cannot build a table of {n} rows"))?;
        templates.push(path);
    }
    let copy = scratch.join("copy.zarr");
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut rewrite = Vec::new();
    let rewrite_index = sizes
        .iter()
        .position(|&n| n == 100_000)
        .expect("10^5 is measured");
    // Round-robin over the sizes and the workaround, to cancel drift. Tables above
    // 10^6 rows take the appends in place (they grow by well under 1%).
    for _ in 0..samples {
        for (i, (&n, template)) in sizes.iter().zip(&templates).enumerate() {
            times[i].push(time_append(template, &copy, n > 1_000_000, false)?);
        }
        rewrite.push(time_append(&templates[rewrite_index], &copy, false, true)?);
    }
    let ms = |v: &[f64]| median(v) * 1e3;
    let per_size: Vec<_> = sizes
        .iter()
        .zip(&times)
        .map(|(n, t)| json!({"rows": n, "median_ms": ms(t)}))
        .collect();
    let last = sizes.len() - 1;
    Ok(vec![
        Measure::new(
            "append_scaling",
            (ms(&times[last]), ms(&times[0])),
            &format!("ours, the same append into a table of {} rows", sizes[0]),
            "ms",
            Some(1.5),
            json!({"table_rows": sizes[last], "samples": samples, "sizes": per_size}),
        ),
        Measure::new(
            "append_vs_rewrite",
            (ms(&times[rewrite_index]), ms(&rewrite)),
            "read the whole table, concatenate, write it anew (under our lock)",
            "ms",
            None,
            json!({"table_rows": sizes[rewrite_index], "samples": samples}),
        ),
    ])
}
