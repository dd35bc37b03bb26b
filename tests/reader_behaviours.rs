//! The behaviours of spatialdata 0.8 and zarr-python 3 that the publication order
//! for readers without the lock relies on (spec/commit-protocol.md §10; B1-B10 of
//! spec/commit-path-v3.md §3, one test each), checked
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

/// A copy of the spatialdata fixture whose root `zarr.json` is edited by `edit`.
fn fixture_with_root(dir: &Path, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let path = dir.join("fixture.zarr");
    copy_tree(&common::fixture("v3"), &path);
    let mut root = read_json(&path.join("zarr.json"));
    edit(&mut root);
    write_json(&path.join("zarr.json"), &root);
    path
}

/// B2: spatialdata reads each element by path. The root block's copies of the nodes
/// below an element are not used: a labels level whose entry in the root block says
/// another shape is read with the shape its own `zarr.json` gives.
#[test]
fn spatialdata_reads_each_element_by_path_not_from_the_root_block() {
    let dir = common::tempdir();
    let path = fixture_with_root(dir.path(), |root| {
        let level = &mut root["consolidated_metadata"]["metadata"]["labels/cells_labels/s0"];
        assert_eq!(level["shape"], json!([64, 64]), "the fixture changed");
        level["shape"] = json!([7, 5]);
    });
    let seen = probe("b2", &[s(&path)]);
    assert_eq!(
        seen["labels"]["cells_labels"],
        json!([[64, 64], [32, 32]]),
        "{seen}"
    );
}

/// B3: without an element document of its own, a table is read node by node: the
/// documents of the table group's members (`X` among them) are fetched before those
/// of the `obs` columns, so a commit between them tears the read. With the element
/// document the store writes (B4), no document below the table is fetched at all.
#[test]
fn a_table_without_its_block_is_read_node_by_node_and_with_it_from_one_file() {
    let fetched_under = |path: &Path, table: &str| -> Vec<String> {
        let seen = probe("b3", &[s(path)]);
        let prefix = format!("tables/{table}/");
        seen["fetched"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|key| key.as_str())
            .filter_map(|key| key.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect()
    };
    let dir = common::tempdir();
    let fixture = dir.path().join("fixture.zarr");
    copy_tree(&common::fixture("v3"), &fixture);
    let order = fetched_under(&fixture, "table");
    let first = |doc: &str| {
        order
            .iter()
            .position(|key| key == doc)
            .unwrap_or_else(|| panic!("{doc} not fetched: {order:?}"))
    };
    assert!(
        first("X/zarr.json") < first("obs/instance_id/zarr.json"),
        "{order:?}"
    );
    assert!(
        first("obs/zarr.json") < first("obs/_index/zarr.json"),
        "{order:?}"
    );
    let ours = dir.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    let ours = dataset_with_table(&ours, 10);
    let order = fetched_under(&ours, "cells");
    assert!(!order.is_empty(), "the table was not read");
    assert!(
        order.iter().all(|key| key == "zarr.json"),
        "documents below the table were fetched: {order:?}"
    );
}

/// B6: spatialdata does not read the `ome.labels` list of `labels/zarr.json`: with
/// the list emptied, every labels element is still listed and read.
#[test]
fn spatialdata_does_not_read_the_labels_list() {
    let dir = common::tempdir();
    let ds = common::new_dataset(dir.path());
    let dataset = spatialzarr::Dataset::open(&ds, spatialzarr::DatasetOptions::default()).unwrap();
    for name in ["a", "b", "c"] {
        let pixels = ndarray::ArrayD::<u8>::zeros(ndarray::IxDyn(&[4, 4]));
        dataset
            .add_labels(name, pixels.view(), &Default::default())
            .unwrap();
    }
    let list = ds.join("labels/zarr.json");
    let mut doc = read_json(&list);
    assert_eq!(doc["attributes"]["ome"]["labels"], json!(["a", "b", "c"]));
    doc["attributes"]["ome"]["labels"] = json!([]);
    write_json(&list, &doc);
    let listed = probe("b1", &[s(&ds)]);
    assert_eq!(listed["labels"], json!(["a", "b", "c"]), "{listed}");
}

/// B7: zarr-python parses the whole root block when it opens the root, so its cost
/// grows with every element it lists: an entry of an element nobody asks for, made
/// malformed, makes the open of the root fail. The block's size per labels element
/// is what bounds it (spec/format.md §3).
#[test]
fn the_root_block_is_parsed_whole_at_every_open() {
    let dir = common::tempdir();
    let path = fixture_with_root(dir.path(), |_| {});
    assert_eq!(probe("b7", &[s(&path)])["opened"], true);
    let before = std::fs::metadata(path.join("zarr.json")).unwrap().len();
    let ds = spatialzarr::Dataset::open(&path, spatialzarr::DatasetOptions::default()).unwrap();
    for i in 0..10 {
        let pixels = ndarray::ArrayD::<u8>::zeros(ndarray::IxDyn(&[4, 4]));
        ds.add_labels(&format!("extra{i}"), pixels.view(), &Default::default())
            .unwrap();
    }
    let per_element = (std::fs::metadata(path.join("zarr.json")).unwrap().len() - before) / 10;
    assert!(
        (300..5_000).contains(&per_element),
        "{per_element} bytes per element"
    );
    let mut root = read_json(&path.join("zarr.json"));
    root["consolidated_metadata"]["metadata"]["labels/extra7/s0"]["shape"] = json!("not a shape");
    write_json(&path.join("zarr.json"), &root);
    let seen = probe("b7", &[s(&path)]);
    assert_eq!(seen["opened"], false, "{seen}");
}

/// B8: spatialdata skips names starting with `.` in group folders, and zarr-python
/// does not take a folder without `zarr.json` for a node (a dataset without a root
/// block, so both list the folder).
#[test]
fn hidden_names_and_folders_without_metadata_are_not_elements() {
    let dir = common::tempdir();
    let ds = common::new_dataset(dir.path());
    let dataset = spatialzarr::Dataset::open(&ds, spatialzarr::DatasetOptions::default()).unwrap();
    let pixels = ndarray::ArrayD::<u8>::zeros(ndarray::IxDyn(&[4, 4]));
    dataset
        .add_labels("kept", pixels.view(), &Default::default())
        .unwrap();
    copy_tree(&ds.join("labels/kept"), &ds.join("labels/.hidden"));
    std::fs::create_dir_all(ds.join("labels/no_metadata/0")).unwrap();
    let seen = probe("b8", &[s(&ds)]);
    assert_eq!(seen["spatialdata"], json!(["kept"]), "{seen}");
    assert!(
        !seen["zarr"]
            .as_array()
            .unwrap()
            .contains(&json!("no_metadata")),
        "{seen}"
    );
}

/// B9: a zarr-python handle on the fixture's sharded `int8` codes, opened before an
/// append that widens them (the node is replaced with `int32` codes), fails when read
/// after it instead of returning values: a reader holding handles across commits can
/// get an error, never values of the other encoding read as its own.
#[test]
fn a_handle_on_codes_replaced_by_wider_ones_fails_instead_of_reading_garbage() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let dir = common::tempdir();
    let path = dir.path().join("fixture.zarr");
    copy_tree(&common::fixture("v3"), &path);
    let mut reader = Command::new(common::python())
        .arg(common::repo().join("tests/interop/reader_behaviours.py"))
        .args(["b9", s(&path), "table", "obs/celltype/codes"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run reader_behaviours.py");
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "opened");
    let ds = spatialzarr::Dataset::open(&path, spatialzarr::DatasetOptions::default()).unwrap();
    let (rows, _) = common::fixture_rows_with_new_celltypes(200);
    ds.append_rows("table", &rows, None, Some("wider")).unwrap();
    writeln!(reader.stdin.take().unwrap(), "committed").unwrap();
    let seen: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).expect("probe JSON");
    assert!(reader.wait().unwrap().success());
    assert_eq!(seen["dtype_before"], "int8", "{seen}");
    assert_eq!(seen["dtype_after"], "int32", "{seen}");
    let error = seen["error"].as_str().unwrap_or_default();
    assert!(error.contains("ValueError"), "{seen}");
}
