//! `add_labels`: processes adding labels elements to one dataset, beside the same
//! processes writing the same arrays with plain zarrs into separate folders.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ndarray::{ArrayD, IxDyn};
use serde_json::json;
use spatialzarr::{Dataset, DatasetOptions, RasterOptions};
use zarrs::array::ArrayBuilder;
use zarrs::array::codec::ZstdCodec;

use super::{Measure, arg, median, run_workers};

/// Worker processes.
const WORKERS: usize = 8;

/// (elements in all, width of each, rounds of each side).
fn size(quick: bool) -> (usize, usize, usize) {
    if quick { (16, 512, 1) } else { (64, 1024, 9) }
}

/// The labels of worker `w`'s `j`-th element: square cells of 16 pixels, numbered.
pub fn labels(w: usize, j: usize, width: usize) -> ArrayD<u32> {
    let cells_per_row = width.div_ceil(16);
    let offset = ((w * 1000 + j) * cells_per_row * cells_per_row) as u32;
    ArrayD::from_shape_fn(IxDyn(&[width, width]), |ix| {
        offset + ((ix[0] / 16) * cells_per_row + ix[1] / 16) as u32 + 1
    })
}

/// The name of worker `w`'s `j`-th element.
pub fn element_name(w: usize, j: usize) -> String {
    format!("w{w}_tile{j}_labels")
}

/// Our side, in one worker: adds `count` labels elements to the dataset, opened with
/// `options`.
pub fn ours(
    dataset: &Path,
    w: usize,
    count: usize,
    width: usize,
    options: DatasetOptions,
) -> anyhow::Result<()> {
    let arrays: Vec<ArrayD<u32>> = (0..count).map(|j| labels(w, j, width)).collect();
    super::ready_and_wait()?;
    let ds = Dataset::open(dataset, options)?;
    for (j, array) in arrays.iter().enumerate() {
        ds.add_labels(&element_name(w, j), array.view(), &RasterOptions::default())?;
    }
    Ok(())
}

/// The baseline, in one worker: the same arrays (same chunks, codec and level) with
/// plain zarrs: files written in place (no fsync: see `plain_store`), no lock, no
/// journal, no staging; with `fsync`, every element's files and folders are then
/// fsynced (in one round).
pub fn plain(
    folder: &Path,
    w: usize,
    count: usize,
    width: usize,
    fsync: bool,
) -> anyhow::Result<()> {
    let arrays: Vec<ArrayD<u32>> = (0..count).map(|j| labels(w, j, width)).collect();
    super::ready_and_wait()?;
    let defaults = RasterOptions::default();
    // By reference, as `ours`: the pixels are freed when the process ends, on both sides.
    for (j, array) in arrays.iter().enumerate() {
        let dir = folder.join(element_name(w, j));
        std::fs::create_dir_all(&dir)?;
        let store = Arc::new(super::plain_store::PlainStore::new(&dir)?);
        let shape = vec![width as u64, width as u64];
        let chunk = (width as u64).min(1024);
        let zarr_array = ArrayBuilder::new(
            shape,
            vec![chunk, chunk],
            spatialzarr::DType::U32.zarr(),
            zarrs::array::FillValue::new(vec![0; 4]),
        )
        .bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(defaults.zstd_level, false))])
        .dimension_names(Some(vec!["y".to_owned(), "x".to_owned()]))
        .build(store, "/s0")?;
        zarr_array.store_metadata()?;
        zarr_array.store_array_subset(&zarr_array.subset_all(), &array.view())?;
        if fsync {
            super::fsync_tree(&dir)?;
        }
    }
    Ok(())
}

/// The sides of the scenario: ours at each durability level, the baseline without
/// and with fsync, and ours fsyncing every folder it changes (the default where the
/// filesystem does not order namespace changes).
const SIDES: [&str; 5] = [
    "labels-ours",
    "labels-plain-fsync",
    "labels-ours-process",
    "labels-plain",
    "labels-ours-strict",
];

/// The scenario: alternating rounds of each side, each round in fresh folders; the
/// medians of the wall times. `add_labels` compares `Durability::Full` with the
/// baseline that fsyncs every file it writes, `add_labels_strict` the same with every
/// folder fsynced too (`FolderSync::Strict`); `add_labels_process` compares
/// `Durability::Process` with the baseline without fsync.
pub fn add_labels(scratch: &Path, quick: bool) -> anyhow::Result<Vec<Measure>> {
    let (elements, width, rounds) = size(quick);
    let per_worker = elements / WORKERS;
    let mut times: [Vec<f64>; 5] = Default::default();
    for round in 0..rounds {
        for (side, role) in SIDES.into_iter().enumerate() {
            let target = scratch.join(format!("{role}-{round}"));
            let ours = role.starts_with("labels-ours");
            if ours {
                Dataset::create(&target, DatasetOptions::default())
                    .with_context(|| format!("cannot create {}", target.display()))?;
            } else {
                std::fs::create_dir_all(&target)?;
            }
            let lists: Vec<Vec<String>> = (0..WORKERS)
                .map(|w| {
                    vec![
                        role.to_owned(),
                        arg(&target),
                        w.to_string(),
                        per_worker.to_string(),
                        width.to_string(),
                    ]
                })
                .collect();
            let (elapsed, _) = run_workers(&lists)?;
            if ours {
                let list = Dataset::open(&target, DatasetOptions::default())?.list()?;
                anyhow::ensure!(
                    list.labels.len() == elements,
                    "add_labels: {} labels elements, expected {elements}",
                    list.labels.len()
                );
            }
            times[side].push(elapsed.as_secs_f64());
            std::fs::remove_dir_all(&target)?;
            super::settle(scratch)?;
        }
    }
    let details = |ours: usize, baseline: usize| {
        json!({"processes": WORKERS, "elements": elements, "width": width, "dtype": "uint32",
               "rounds": rounds, "ours_runs": times[ours], "baseline_runs": times[baseline],
               "ratio_to_floor_without_fsync": median(&times[ours]) / median(&times[3])})
    };
    let folder_sync = spatialzarr::FolderSync::resolve(None)?.at(scratch);
    let floor = "plain zarrs, same processes, separate folders, no locks, every file written and each folder holding one fsynced";
    let mut full = details(0, 1);
    full["folder_sync"] = json!(folder_sync.as_str());
    Ok(vec![
        Measure::new(
            "add_labels",
            (median(&times[0]), median(&times[1])),
            floor,
            "s",
            Some(1.15),
            full,
        ),
        Measure::new(
            "add_labels_strict",
            (median(&times[4]), median(&times[1])),
            floor,
            "s",
            None,
            details(4, 1),
        ),
        Measure::new(
            "add_labels_process",
            (median(&times[2]), median(&times[3])),
            "plain zarrs, same processes, separate folders, no locks, no fsync",
            "s",
            Some(1.10),
            details(2, 3),
        ),
    ])
}
