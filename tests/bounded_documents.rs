//! The two documents the SpatialData layout makes O(number of elements) stay bounded:
//! the `ome.labels` list of `labels/zarr.json` (LabelsList) and zarr-python's
//! consolidated metadata in the root `zarr.json` (ConsolidatedMetadata).

mod common;

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};
use spatialzarr::{
    CONSOLIDATED_LIMIT_BYTES, ConsolidatedMetadata, Dataset, DatasetOptions, LabelsList,
    RasterOptions,
};

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn listed(root: &Path) -> Option<Value> {
    read(&root.join("labels/zarr.json"))
        .pointer("/attributes/ome/labels")
        .cloned()
}

fn add(ds: &Dataset, name: &str) -> spatialzarr::CommitInfo {
    let pixels = ArrayD::<u32>::from_elem(IxDyn(&[4, 4]), 1);
    ds.add_labels(name, pixels.view(), &RasterOptions::default())
        .unwrap()
}

fn dataset(root: &Path, options: DatasetOptions) -> Dataset {
    Dataset::create(root, options).unwrap()
}

fn with_labels_list(root: &Path, labels_list: LabelsList) -> Dataset {
    let options = DatasetOptions {
        labels_list,
        ..DatasetOptions::default()
    };
    Dataset::open(root, options).unwrap()
}

#[test]
fn the_labels_list_is_exact_up_to_its_bound_and_absent_above() {
    let dir = common::tempdir();
    let root = dir.path().join("ds.zarr");
    let options = DatasetOptions {
        labels_list: LabelsList::Bounded(2),
        ..DatasetOptions::default()
    };
    let ds = dataset(&root, options);
    add(&ds, "a");
    add(&ds, "b");
    assert_eq!(listed(&root), Some(json!(["a", "b"])));
    add(&ds, "c");
    assert_eq!(listed(&root), None, "above the bound the list is removed");
    add(&ds, "d");
    assert_eq!(listed(&root), None);
    ds.remove("d").unwrap();
    ds.remove("c").unwrap();
    assert_eq!(
        listed(&root),
        Some(json!(["a", "b"])),
        "back within the bound"
    );
    assert!(ds.check(false).unwrap().problems.is_empty());

    let never = with_labels_list(&root, LabelsList::Never);
    add(&never, "e");
    assert_eq!(listed(&root), None);
    let always = with_labels_list(&root, LabelsList::Always);
    add(&always, "f");
    assert_eq!(listed(&root), Some(json!(["a", "b", "e", "f"])));
    assert_eq!(LabelsList::default(), LabelsList::Bounded(10_000));
}

/// Gives the root `zarr.json` a consolidated block whose one extra entry makes the
/// document about `bytes` long.
fn consolidate(root: &Path, bytes: usize) {
    let path = root.join("zarr.json");
    let mut doc = read(&path);
    doc["consolidated_metadata"] = json!({
        "kind": "inline",
        "must_understand": false,
        "metadata": {
            "padding": {"zarr_format": 3, "node_type": "group",
                        "attributes": {"note": "x".repeat(bytes)}}
        }
    });
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
}

#[test]
fn a_consolidated_block_over_the_limit_is_dropped_with_a_notice() {
    let dir = common::tempdir();
    let root = dir.path().join("ds.zarr");
    let ds = dataset(&root, DatasetOptions::default());
    consolidate(&root, 1000);
    let commit = add(&ds, "small");
    assert_eq!(commit.dropped_consolidated, None);
    let doc = read(&root.join("zarr.json"));
    assert!(
        doc.pointer("/consolidated_metadata/metadata/labels~1small")
            .is_some(),
        "kept current below the limit: {doc}"
    );

    consolidate(&root, CONSOLIDATED_LIMIT_BYTES);
    let commit = add(&ds, "large");
    // The padding, the labels group, and the two labels elements with their nodes.
    assert!(
        commit.dropped_consolidated.is_some_and(|nodes| nodes > 3),
        "{commit:?}"
    );
    assert!(
        read(&root.join("zarr.json"))
            .get("consolidated_metadata")
            .is_none_or(Value::is_null)
    );
    assert!(ds.check(false).unwrap().problems.is_empty());

    let unbounded = Dataset::open(
        &root,
        DatasetOptions {
            consolidated: ConsolidatedMetadata::KeepUnbounded,
            ..DatasetOptions::default()
        },
    )
    .unwrap();
    consolidate(&root, CONSOLIDATED_LIMIT_BYTES);
    let commit = add(&unbounded, "kept");
    assert_eq!(commit.dropped_consolidated, None);
    assert!(
        read(&root.join("zarr.json"))
            .pointer("/consolidated_metadata/metadata/labels~1kept")
            .is_some()
    );
}
