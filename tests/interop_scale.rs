//! spatialdata 0.8 opens a dataset of 10^3 labels elements the store built in batched
//! transactions, with the labels list and group stamps as they are at that size, and
//! sees every element. The size can be changed with `SPATIALZARR_INTEROP_ELEMENTS`
//! (the time spatialdata took is reported, never asserted).

mod common;

use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use spatialzarr::{Dataset, DatasetOptions, ElementKind, RasterOptions};

/// Elements added per transaction.
const BATCH: usize = 250;

const READ_ALL: &str = r#"
import json, sys, time
import spatialdata
start = time.perf_counter()
sdata = spatialdata.read_zarr(sys.argv[1])
seconds = time.perf_counter() - start
names = sorted(sdata.labels.keys())
first = sdata.labels[names[0]]
print(json.dumps({"labels": names, "seconds": seconds, "shape": list(first.shape),
                  "max": int(first.values.max())}))
"#;

#[test]
fn spatialdata_opens_a_thousand_elements() {
    let n: usize = std::env::var("SPATIALZARR_INTEROP_ELEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = common::tempdir();
    let root = dir.path().join("many.zarr");
    let ds = Dataset::create(&root, DatasetOptions::default()).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("tile{i:06}")).collect();
    for chunk in names.chunks(BATCH) {
        let mut txn = ds.write().unwrap();
        for name in chunk {
            let pixels = ArrayD::<u32>::from_elem(IxDyn(&[8, 8]), 5);
            txn.add_raster(
                ElementKind::Labels,
                name,
                pixels.view(),
                &RasterOptions::default(),
                false,
            )
            .unwrap();
        }
        txn.commit().unwrap();
    }
    // One more through the ordinary path, after the stamps of the batches.
    let pixels = ArrayD::<u32>::from_elem(IxDyn(&[8, 8]), 5);
    ds.add_labels("zlast", pixels.view(), &RasterOptions::default())
        .unwrap();
    let out = Command::new(common::python())
        .args(["-c", READ_ALL])
        .arg(&root)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "spatialdata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected = names.clone();
    expected.push("zlast".into());
    assert_eq!(read["labels"], serde_json::json!(expected));
    assert_eq!(read["shape"], serde_json::json!([8, 8]));
    assert_eq!(read["max"], 5);
    println!(
        "spatialdata.read_zarr of {} labels elements: {:.1} s",
        n + 1,
        read["seconds"].as_f64().unwrap()
    );
}
