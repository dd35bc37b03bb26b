//! The behaviours of spatialdata 0.8 and zarr-python 3 that the publication order
//! for readers without the lock relies on (spec/commit-protocol.md §10), checked
//! against the real readers (`tests/interop/reader_behaviours.py` in the interop
//! python), and the element document of a table (P6): its form is zarr-python's,
//! `check` compares it with the node documents, an append refuses a stale one and
//! `recover` rebuilds it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{copy_tree, s, sz, sz_ok};
use serde_json::{Value, json};

fn probe(case: &str, args: &[&str]) -> Value {
    let out = Command::new(common::python())
        .arg(common::repo().join("tests/interop/reader_behaviours.py"))
        .arg(case)
        .args(args)
        .output()
        .expect("run reader_behaviours.py");
    assert!(
        out.status.success(),
        "{case} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe JSON")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

fn write_json(path: &Path, doc: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(doc).unwrap()).expect("write");
}

/// A dataset with table `cells` of `n` rows (two appends), `area` = 0.5, 1.5, ...
fn dataset_with_table(dir: &Path, n: usize) -> std::path::PathBuf {
    let ds = common::new_dataset(dir);
    for (part, range) in [(0, 0..n / 2), (1, n / 2..n)] {
        let mut csv = String::from("region,instance_id,area\n");
        for i in range {
            csv.push_str(&format!("tile,{i},{}.5\n", i));
        }
        let file = common::write_file(dir, &format!("rows{part}.csv"), &csv);
        sz_ok(&["append-rows", "--csv", s(&file), s(&ds), "cells"]);
    }
    ds
}

fn block(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["consolidated_metadata"]["metadata"]
        .as_object()
        .expect("a consolidated block")
}

/// P6: the block the store writes is the one `zarr.consolidate_metadata(table)`
/// writes for the same nodes (same keys, each node's document; groups with an empty
/// block of their own).
#[test]
fn the_element_document_is_what_zarr_python_consolidates() {
    let dir = common::tempdir();
    let ds = dataset_with_table(dir.path(), 10);
    let ours = read_json(&ds.join("tables/cells/zarr.json"));
    let copy = dir.path().join("copy.zarr");
    copy_tree(&ds, &copy);
    let table = copy.join("tables/cells");
    let out = Command::new(common::python())
        .args([
            "-W",
            "ignore",
            "-c",
            "import sys, zarr; zarr.consolidate_metadata(sys.argv[1])",
            s(&table),
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = read_json(&table.join("zarr.json"));
    let (ours, theirs) = (block(&ours), block(&theirs));
    // The same keys (zarr-python orders them by depth; order means nothing in JSON).
    let keys = |m: &serde_json::Map<String, Value>| {
        m.keys().cloned().collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(keys(ours), keys(theirs));
    for (key, node) in ours {
        let other = &theirs[key];
        for field in [
            "node_type",
            "shape",
            "data_type",
            "attributes",
            "consolidated_metadata",
        ] {
            assert_eq!(node.get(field), other.get(field), "{key}: {field}");
        }
    }
    assert_eq!(ours["obs/_index"]["shape"], json!([10]));
    let checked = sz(&["check", s(&ds)]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// B4 and B10: zarr-python serves the documents of a table's nodes from the table's
/// block (not from the nodes' own files), and spatialdata reads the table's length
/// from it, however stale. P6: `check` reports such a block, an append refuses it
/// naming the table, and `recover` rebuilds it.
#[test]
fn readers_take_the_table_from_its_element_document_and_the_store_refuses_a_stale_one() {
    let dir = common::tempdir();
    let ds = dataset_with_table(dir.path(), 10);
    let element = ds.join("tables/cells/zarr.json");
    let mut doc = read_json(&element);
    // B4: an attribute only the block has is what zarr-python reports.
    doc["consolidated_metadata"]["metadata"]["obs/area"]["attributes"]["only_in_block"] = json!(1);
    write_json(&element, &doc);
    let seen = probe("b4", &[s(&ds), "cells", "obs/area"]);
    assert_eq!(seen["attributes"]["only_in_block"], 1, "{seen}");
    // B10: a block that says 8 rows for every array of 10 makes spatialdata read 8.
    let mut doc = read_json(&ds.join("tables/cells/zarr.json"));
    for node in doc["consolidated_metadata"]["metadata"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        if node.get("shape") == Some(&json!([10])) {
            node["shape"] = json!([8]);
        }
        if let Some(attributes) = node["attributes"].as_object_mut() {
            attributes.remove("only_in_block");
        }
    }
    write_json(&element, &doc);
    assert_eq!(probe("b10", &[s(&ds), "cells"])["n_obs"], 8);
    // The store never trusts it: check reports it, an append refuses it, recover
    // rebuilds it from the node documents.
    let checked = sz(&["check", s(&ds)]);
    assert_eq!(checked.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("consolidated metadata"),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    let rows = common::write_file(
        dir.path(),
        "more.csv",
        "region,instance_id,area\ntile,10,10.5\n",
    );
    let refused = sz(&["append-rows", "--csv", s(&rows), s(&ds), "cells"]);
    common::assert_fails(&refused, 1, &["table cells", "spatialzarr check", "8 rows"]);
    let recovered = sz_ok(&["recover", s(&ds)]);
    assert!(
        recovered.contains("rebuilt the consolidated metadata of 1 tables"),
        "{recovered}"
    );
    assert_eq!(probe("b10", &[s(&ds), "cells"])["n_obs"], 10);
    sz_ok(&["append-rows", "--csv", s(&rows), s(&ds), "cells"]);
    assert_eq!(probe("b10", &[s(&ds), "cells"])["n_obs"], 11);
    sz_ok(&["check", s(&ds)]);
}

/// B5: a zarr-python Array opened before an append keeps its shape and reads exactly
/// the committed rows after it; a handle opened after sees the new length.
#[test]
fn an_array_handle_opened_before_an_append_reads_the_old_rows() {
    let dir = common::tempdir();
    let ds = dataset_with_table(dir.path(), 6);
    let rows = common::write_file(
        dir.path(),
        "more.csv",
        "region,instance_id,area\ntile,6,6.5\ntile,7,7.5\ntile,8,8.5\n",
    );
    let cli = common::cli();
    let seen = probe(
        "b5",
        &[
            s(&ds),
            "cells",
            s(&cli),
            "append-rows",
            "--csv",
            s(&rows),
            s(&ds),
            "cells",
        ],
    );
    assert_eq!(seen["before"], json!([6]), "{seen}");
    assert_eq!(seen["old_handle_shape"], json!([6]), "{seen}");
    assert_eq!(
        seen["values"],
        json!([0.5, 1.5, 2.5, 3.5, 4.5, 5.5]),
        "{seen}"
    );
    assert_eq!(seen["new_handle_shape"], json!([9]), "{seen}");
}

/// B1: with a consolidated block in the root `zarr.json` (spatialdata writes one),
/// spatialdata lists the elements from it: a folder it does not name is not listed.
/// The store keeps the block current, so what it commits is listed.
#[test]
fn spatialdata_lists_elements_from_the_root_block() {
    let dir = common::tempdir();
    let path = dir.path().join("fixture.zarr");
    copy_tree(&common::fixture("v3"), &path);
    copy_tree(
        &path.join("labels/cells_labels"),
        &path.join("labels/not_in_block"),
    );
    let listed = probe("b1", &[s(&path)]);
    assert_eq!(listed["labels"], json!(["cells_labels"]), "{listed}");
    std::fs::remove_dir_all(path.join("labels/not_in_block")).unwrap();
    let ds = spatialzarr::Dataset::open(&path, spatialzarr::DatasetOptions::default()).unwrap();
    let pixels = ndarray::ArrayD::<u8>::zeros(ndarray::IxDyn(&[4, 4]));
    ds.add_labels("committed", pixels.view(), &Default::default())
        .unwrap();
    let listed = probe("b1", &[s(&path)]);
    assert_eq!(
        listed["labels"],
        json!(["cells_labels", "committed"]),
        "{listed}"
    );
}
