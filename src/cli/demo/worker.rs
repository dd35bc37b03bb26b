//! One demo worker process (`spatialzarr demo-worker`, hidden): segments images that
//! have no labels yet, committing each image's labels and its rows of the `cells`
//! table in one transaction, until every image is done.
//!
//! Uses only the library's public API. Safe against every other worker and against
//! being killed at any moment: labels are staged outside the lock (a killed worker's
//! staging folder is invisible and removed later), the labels and rows reach the
//! dataset together or not at all, and an image whose labels exist is never appended
//! again (its labels name is taken, and its rows carry the image's idempotency key).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use ndarray::{Axis, Ix2};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, ElementKind, Error, RasterOptions};

use super::CELLS_TABLE;
use super::segment::{Cell, segment};
use super::synth::{image_name, labels_name};
use crate::cli::WriteOptions;

/// Arguments of the hidden `spatialzarr demo-worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The dataset (made by `spatialzarr demo`).
    dataset: PathBuf,
    /// This worker's index, 0..workers.
    #[arg(long)]
    index: usize,
    /// How many workers share the images.
    #[arg(long)]
    workers: usize,
    /// The images are `image_000` .. `image_<images-1>`.
    #[arg(long)]
    images: usize,
    #[command(flatten)]
    options: WriteOptions,
}

/// The order in which worker `index` of `workers` tries the images: its own share
/// (every `workers`-th image) first, then the others' from the end, where their
/// owners, working from the start, are least likely to be busy.
fn preference(index: usize, workers: usize, images: usize) -> Vec<usize> {
    let mine = (0..images).filter(|i| i % workers == index);
    let others = (0..images).rev().filter(|i| i % workers != index);
    mine.chain(others).collect()
}

/// `demo-worker`: segments images until none is left without labels.
pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    crate::cli::workers::die_with_parent()?;
    if args.workers == 0 || args.index >= args.workers {
        bail!(
            "worker index {} is not below the worker count {}",
            args.index,
            args.workers
        );
    }
    let ds = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let order = preference(args.index, args.workers, args.images);
    let mut tried = BTreeSet::new();
    loop {
        let list = ds.list()?;
        let done: BTreeSet<&str> = list.labels.iter().map(String::as_str).collect();
        let next = order
            .iter()
            .copied()
            .find(|i| !tried.contains(i) && !done.contains(labels_name(&image_name(*i)).as_str()));
        let Some(index) = next else {
            return Ok(ExitCode::SUCCESS);
        };
        tried.insert(index);
        let image = image_name(index);
        segment_one(&ds, &image).with_context(|| format!("cannot segment {image}"))?;
    }
}

/// Segments `image` and commits its labels and cells; returns false when another
/// worker committed them first.
fn segment_one(ds: &Dataset, image: &str) -> anyhow::Result<bool> {
    let pixels = ds.read_raster::<u16>(image, 0)?;
    if pixels.ndim() != 3 || pixels.shape()[0] != 1 {
        bail!(
            "expected a (1, y, x) image, found shape {:?}",
            pixels.shape()
        );
    }
    let plane = pixels.index_axis(Axis(0), 0).into_dimensionality::<Ix2>()?;
    let (labels, cells) = segment(plane);
    let labels_name = labels_name(image);

    // The expensive write happens here, outside the lock; nothing is visible yet.
    let staged = ds.stage_raster(
        ElementKind::Labels,
        &labels_name,
        labels.view().into_dyn(),
        &RasterOptions::default(),
    )?;
    let mut txn = ds.write()?;
    match txn.add_staged(staged, false) {
        Ok(()) => {}
        // Another worker committed this image first: dropping the transaction
        // discards our staged copy.
        Err(Error::NameTaken { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    if !cells.is_empty() {
        let rows = cell_rows(&labels_name, &cells)?;
        txn.append_rows(CELLS_TABLE, &rows, Some(&TableSpec::default()), Some(image))?;
    }
    txn.commit()?;
    Ok(true)
}

/// The rows of the `cells` table for the cells of labels `region`.
fn cell_rows(region: &str, cells: &[Cell]) -> anyhow::Result<RowBatch> {
    let float = |f: fn(&Cell) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(cells.iter().map(f)))
    };
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from_iter_values(cells.iter().map(|_| region))) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(
                cells.iter().map(|c| i64::from(c.label)),
            )),
        ),
        (
            "area",
            Arc::new(Int64Array::from_iter_values(cells.iter().map(|c| c.area))),
        ),
        ("centroid_x", float(|c| c.centroid_x)),
        ("centroid_y", float(|c| c.centroid_y)),
        ("mean_intensity", float(|c| c.mean_intensity)),
    ])?;
    Ok(RowBatch { obs, x: None })
}

#[cfg(test)]
mod tests {
    use super::preference;

    #[test]
    fn each_worker_starts_with_its_own_share_and_covers_every_image() {
        assert_eq!(preference(1, 3, 8), vec![1, 4, 7, 6, 5, 3, 2, 0]);
        for index in 0..3 {
            let mut all = preference(index, 3, 8);
            all.sort();
            assert_eq!(all, (0..8).collect::<Vec<_>>());
        }
    }
}
