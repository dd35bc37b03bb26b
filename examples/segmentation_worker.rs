//! A segmentation worker, the pattern for pipeline authors: any number of these may
//! run at once, on one machine or on many sharing the dataset's filesystem, and any
//! of them may be killed and retried at any moment.
//!
//! 1. open the dataset; 2. compute (here: a threshold and 4-connected components of
//!    a `uint16` image); 3. stage the labels WITHOUT the lock (the slow write, in
//!    parallel with every other worker); 4. in ONE transaction, add the labels and
//!    append the cells' rows under an idempotency key: both appear, or neither.
//!
//! ```sh
//! cargo run --release -- demo demo.zarr            # a dataset with image_000 ...
//! cargo run --example segmentation_worker -- demo.zarr image_000 image_000_simple simple_cells
//! ```
//!
//! Usage: `segmentation_worker DATASET IMAGE [LABELS] [TABLE]` (defaults
//! `<IMAGE>_labels` and `cells`). Running it twice changes nothing the second time.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use ndarray::{Array2, Axis, Ix2};
use spatialzarr::table::{RowBatch, TableSpec};
use spatialzarr::{Dataset, DatasetOptions, ElementKind, Error, RasterOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dataset, image, rest @ ..] = args.as_slice() else {
        return Err("usage: segmentation_worker DATASET IMAGE [LABELS] [TABLE]".into());
    };
    let labels_name = rest.first().cloned().unwrap_or(format!("{image}_labels"));
    let table = rest.get(1).map_or("cells", String::as_str);

    let ds = Dataset::open(dataset.as_ref(), DatasetOptions::default())?;
    if ds.list()?.labels.contains(&labels_name) {
        println!("{labels_name} already exists: nothing to do"); // cheap early exit
        return Ok(());
    }
    let pixels = ds.read_raster::<u16>(image, 0)?; // (c, y, x): segment channel 0
    let plane = pixels.index_axis(Axis(0), 0).into_dimensionality::<Ix2>()?;

    // Threshold at mean + 2 standard deviations, then 4-connected components.
    let n = plane.len() as f64;
    let mean = plane.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = plane
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let threshold = mean + 2.0 * var.sqrt();
    let (h, w) = plane.dim();
    let mut labels = Array2::<u32>::zeros((h, w));
    let (mut area, mut cx, mut cy) = (Vec::new(), Vec::new(), Vec::new());
    for (y0, x0) in (0..h).flat_map(|y| (0..w).map(move |x| (y, x))) {
        if labels[(y0, x0)] != 0 || f64::from(plane[(y0, x0)]) <= threshold {
            continue;
        }
        let label = area.len() as u32 + 1;
        let (mut count, mut sx, mut sy, mut stack) = (0i64, 0.0, 0.0, vec![(y0, x0)]);
        labels[(y0, x0)] = label;
        while let Some((y, x)) = stack.pop() {
            (count, sx, sy) = (count + 1, sx + x as f64, sy + y as f64);
            for (ny, nx) in [
                (y.wrapping_sub(1), x),
                (y + 1, x),
                (y, x.wrapping_sub(1)),
                (y, x + 1),
            ] {
                if ny < h
                    && nx < w
                    && labels[(ny, nx)] == 0
                    && f64::from(plane[(ny, nx)]) > threshold
                {
                    labels[(ny, nx)] = label;
                    stack.push((ny, nx));
                }
            }
        }
        area.push(count);
        cx.push(sx / count as f64);
        cy.push(sy / count as f64);
    }

    // Stage outside the lock: nothing is visible until the commit below.
    let staged = ds.stage_raster(
        ElementKind::Labels,
        &labels_name,
        labels.view().into_dyn(),
        &RasterOptions::default(),
    )?;
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from(vec![labels_name.as_str(); area.len()])) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(1..=area.len() as i64)),
        ),
        ("area", Arc::new(Int64Array::from(area.clone()))),
        ("centroid_x", Arc::new(Float64Array::from(cx))),
        ("centroid_y", Arc::new(Float64Array::from(cy))),
    ])?;
    let mut txn = ds.write()?; // the write lock, held until commit or drop
    match txn.add_staged(staged, false) {
        Ok(()) => {}
        Err(Error::NameTaken { .. }) => {
            println!("{labels_name} already exists: nothing to do");
            return Ok(()); // dropping the transaction discards the staged copy
        }
        Err(e) => return Err(e.into()),
    }
    if !area.is_empty() {
        let rows = RowBatch { obs, x: None };
        // The key makes a retried append a no-op, even if the labels were removed.
        txn.append_rows(
            table,
            &rows,
            Some(&TableSpec::default()),
            Some(&labels_name),
        )?;
    }
    let info = txn.commit()?;
    println!(
        "{labels_name}: {} cells, generation {}",
        area.len(),
        info.generation
    );
    Ok(())
}
