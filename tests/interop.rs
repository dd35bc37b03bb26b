//! spatialdata 0.8 (Python) and zarr-python 3 read what the store writes, and the
//! store opens and extends what spatialdata writes. Runs `tests/interop/read_dataset.py`
//! in the virtual environment made by `tests/interop/setup_venv.sh` (the interpreter
//! is taken from SPATIALZARR_INTEROP_PYTHON, or the script is run to make it).

mod common;

use common::{copy_tree, find};

/// What spatialdata (and zarr-python) see in the dataset at `path`.
fn spatialdata_reads(path: &Path) -> Value {
    common::spatialdata_reads_with(path, &["--zarr-arrays"])
}

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use spatialzarr::{
    Dataset, DatasetOptions, ElementInfo, Pixel, RasterOptions, Transform, Transformations,
};

fn sha256_le<T: Pixel>(data: &ArrayD<T>, to_bytes: impl Fn(T) -> Vec<u8>) -> String {
    let mut hasher = Sha256::new();
    for v in data.as_standard_layout().iter() {
        hasher.update(to_bytes(*v));
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn spatialdata_reads_every_raster_we_write() {
    let dir = common::tempdir();
    let path = dir.path().join("ours.zarr");
    let ds = Dataset::create(&path, DatasetOptions::default()).unwrap();

    let image = ArrayD::from_shape_fn(IxDyn(&[2, 40, 30]), |ix| (ix[0] * 50 + ix[1] + ix[2]) as u8);
    let image_options = RasterOptions {
        channel_names: Some(vec!["DAPI".into(), "CD45".into()]),
        scale_levels: 1,
        chunk_shape: Some(vec![1, 16, 16]),
        transformations: Transformations(
            [
                ("global".to_owned(), Transform::Scale(vec![0.5, 0.25])),
                (
                    "aligned".to_owned(),
                    Transform::Translation(vec![10.0, -3.0]),
                ),
            ]
            .into(),
        ),
        ..RasterOptions::default()
    };
    ds.add_image("img", image.view(), &image_options).unwrap();
    let gray = ArrayD::from_shape_fn(IxDyn(&[20, 20]), |ix| (ix[0] * 1000 + ix[1]) as u16);
    ds.add_image("gray", gray.view(), &RasterOptions::default())
        .unwrap();
    let floats = ArrayD::from_shape_fn(IxDyn(&[1, 8, 8]), |ix| ix[1] as f32 * 0.5 - ix[2] as f32);
    ds.add_image("floats", floats.view(), &RasterOptions::default())
        .unwrap();
    let labels = ArrayD::from_shape_fn(IxDyn(&[32, 32]), |ix| ((ix[0] / 8) * 4 + ix[1] / 8) as u32);
    let labels_options = RasterOptions {
        scale_levels: 2,
        ..RasterOptions::default()
    };
    ds.add_labels("cells", labels.view(), &labels_options)
        .unwrap();
    let volume = ArrayD::from_shape_fn(IxDyn(&[3, 10, 12]), |ix| (ix[0] * 7 + ix[2]) as i32);
    ds.add_labels("nuclei3d", volume.view(), &RasterOptions::default())
        .unwrap();
    // Volumes: a z,y,x image (stored with a channel axis) and a c,z,y,x stack with its
    // own chunks and zstd level.
    let vol = ArrayD::from_shape_fn(IxDyn(&[4, 12, 10]), |ix| {
        (ix[0] * 300 + ix[1] * 10 + ix[2]) as u16
    });
    let vol_options = RasterOptions {
        dims: Some(vec!["z".into(), "y".into(), "x".into()]),
        ..RasterOptions::default()
    };
    ds.add_image("vol", vol.view(), &vol_options).unwrap();
    let stack = ArrayD::from_shape_fn(IxDyn(&[2, 3, 8, 8]), |ix| {
        (ix[0] * 100 + ix[1] * 10 + ix[3]) as u8
    });
    let stack_options = RasterOptions {
        channel_names: Some(vec!["a".into(), "b".into()]),
        chunk_shape: Some(vec![1, 1, 4, 8]),
        zstd_level: 19,
        ..RasterOptions::default()
    };
    ds.add_image("stack", stack.view(), &stack_options).unwrap();
    // An overwritten element: spatialdata reads the new pixels, and no marker of the
    // swap is left in its folder.
    let floats_before = floats.mapv(|v| v + 100.0);
    ds.add_raster(
        spatialzarr::ElementKind::Images,
        "floats",
        floats_before.view(),
        &RasterOptions::default(),
        true,
    )
    .unwrap();
    let floats_folder: Vec<String> = std::fs::read_dir(path.join("images/floats"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        floats_folder.iter().all(|n| n == "zarr.json" || n == "s0"),
        "{floats_folder:?}"
    );
    // Transformations set after the fact (a metadata-only commit).
    let later = Transformations(BTreeMap::from([
        ("global".to_owned(), Transform::Scale(vec![2.0, 0.5, 0.5])),
        (
            "stage".to_owned(),
            Transform::Translation(vec![0.0, 100.0, 200.0]),
        ),
    ]));
    ds.set_transformations("nuclei3d", &later).unwrap();
    assert!(ds.check(true).unwrap().is_ok());

    let seen = spatialdata_reads(&path);
    assert_eq!(seen["zarr_consolidated_stale"], json!([]));
    let img = find(&seen["images"], "img");
    assert_eq!(img["dims"], json!(["c", "y", "x"]));
    assert_eq!(img["shape"], json!([2, 40, 30]));
    assert_eq!(img["dtype"], "uint8");
    assert_eq!(img["levels"], 2);
    assert_eq!(img["channels"], json!(["DAPI", "CD45"]));
    assert_eq!(img["sha256"], sha256_le(&image, |v| vec![v]));
    assert_eq!(
        img["transformations"]["global"],
        json!({"type": "scale", "scale": [1.0, 0.5, 0.25], "axes": ["c", "y", "x"]})
    );
    assert_eq!(
        img["transformations"]["aligned"],
        json!({"type": "translation", "translation": [0.0, 10.0, -3.0], "axes": ["c", "y", "x"]})
    );
    let gray_seen = find(&seen["images"], "gray");
    assert_eq!(
        gray_seen["shape"],
        json!([1, 20, 20]),
        "a y,x image gains a channel axis"
    );
    assert_eq!(gray_seen["dtype"], "uint16");
    assert_eq!(
        gray_seen["sha256"],
        sha256_le(&gray, |v| v.to_le_bytes().to_vec())
    );
    let floats_seen = find(&seen["images"], "floats");
    assert_eq!(floats_seen["dtype"], "float32");
    assert_eq!(
        floats_seen["sha256"],
        sha256_le(&floats_before, |v| v.to_le_bytes().to_vec())
    );
    let vol_seen = find(&seen["images"], "vol");
    assert_eq!(vol_seen["dims"], json!(["c", "z", "y", "x"]));
    assert_eq!(vol_seen["shape"], json!([1, 4, 12, 10]));
    assert_eq!(
        vol_seen["sha256"],
        sha256_le(&vol, |v| v.to_le_bytes().to_vec())
    );
    let stack_seen = find(&seen["images"], "stack");
    assert_eq!(stack_seen["dims"], json!(["c", "z", "y", "x"]));
    assert_eq!(stack_seen["channels"], json!(["a", "b"]));
    assert_eq!(stack_seen["sha256"], sha256_le(&stack, |v| vec![v]));
    let stack_meta: Value =
        serde_json::from_slice(&std::fs::read(path.join("images/stack/s0/zarr.json")).unwrap())
            .unwrap();
    assert_eq!(
        stack_meta["chunk_grid"]["configuration"]["chunk_shape"],
        json!([1, 1, 4, 8])
    );
    let codecs = stack_meta["codecs"].to_string();
    assert!(
        codecs.contains("\"zstd\"") && codecs.contains("\"level\":19"),
        "{codecs}"
    );
    let cells = find(&seen["labels"], "cells");
    assert_eq!(cells["dims"], json!(["y", "x"]));
    assert_eq!(cells["dtype"], "uint32");
    assert_eq!(cells["levels"], 3);
    assert_eq!(
        cells["sum"],
        json!(labels.iter().map(|&v| u64::from(v)).sum::<u64>())
    );
    assert_eq!(
        cells["sha256"],
        sha256_le(&labels, |v| v.to_le_bytes().to_vec())
    );
    assert_eq!(
        cells["transformations"]["global"],
        json!({"type": "identity"})
    );
    let nuclei = find(&seen["labels"], "nuclei3d");
    assert_eq!(nuclei["dims"], json!(["z", "y", "x"]));
    assert_eq!(
        nuclei["transformations"],
        json!({
            "global": {"type": "scale", "scale": [2.0, 0.5, 0.5], "axes": ["z", "y", "x"]},
            "stage": {"type": "translation", "translation": [0.0, 100.0, 200.0], "axes": ["z", "y", "x"]},
        })
    );
    assert_eq!(
        nuclei["sha256"],
        sha256_le(&volume, |v| v.to_le_bytes().to_vec())
    );
    // zarr-python opens every array we wrote.
    let arrays = seen["zarr_arrays"].as_object().unwrap();
    for key in [
        "images/img/s0",
        "images/img/s1",
        "images/gray/s0",
        "labels/cells/s0",
        "labels/cells/s2",
        "labels/nuclei3d/s0",
        "images/vol/s0",
        "images/stack/s0",
        "images/floats/s0",
    ] {
        assert!(
            arrays.contains_key(key),
            "zarr-python misses {key}: {arrays:?}"
        );
    }
    assert_eq!(arrays["labels/cells/s2"]["shape"], json!([8, 8]));
}

#[test]
fn store_extends_the_spatialdata_fixture_and_keeps_consolidated_metadata_current() {
    let dir = common::tempdir();
    let path = dir.path().join("fixture.zarr");
    copy_tree(&common::fixture("v3"), &path);
    let ds = Dataset::open(&path, DatasetOptions::default()).unwrap();
    let list = ds.list().unwrap();
    assert_eq!(list.images, vec!["img"]);
    assert_eq!(list.labels, vec!["cells_labels"]);
    assert_eq!(list.points, vec!["pts"]);
    assert_eq!(list.shapes, vec!["circles"]);
    assert_eq!(list.tables, vec!["table"]);
    let ElementInfo::Raster(info) = ds.info("img").unwrap() else {
        panic!("img is a raster")
    };
    assert_eq!(info.shape, vec![2, 64, 64]);
    assert_eq!(info.channel_names, Some(vec!["DAPI".into(), "CD45".into()]));
    let fixture_labels = ds.read_raster::<i32>("cells_labels", 0).unwrap();
    assert_eq!(
        fixture_labels.iter().map(|&v| i64::from(v)).sum::<i64>(),
        225
    );
    assert!(
        ds.check(true).unwrap().is_ok(),
        "{:?}",
        ds.check(true).unwrap()
    );

    let new_labels = ArrayD::from_shape_fn(IxDyn(&[64, 64]), |ix| (ix[0] / 16 + 1) as u32);
    ds.add_labels("new_labels", new_labels.view(), &RasterOptions::default())
        .unwrap();
    let new_image = ArrayD::from_elem(IxDyn(&[1, 16, 16]), 7u8);
    ds.add_image("new_image", new_image.view(), &RasterOptions::default())
        .unwrap();
    ds.remove("img").unwrap();
    let column = |values: Vec<f64>| -> arrow_array::ArrayRef {
        std::sync::Arc::new(arrow_array::Float64Array::from(values))
    };
    let pts = arrow_array::RecordBatch::try_from_iter(vec![
        ("x", column(vec![1.0, 2.0, 3.5])),
        ("y", column(vec![4.0, 5.0, 6.0])),
    ])
    .unwrap();
    ds.add_points("new_points", &pts, None, false).unwrap();
    let more = arrow_array::RecordBatch::try_from_iter(vec![
        ("x", column(vec![0.5, 0.25])),
        ("y", column(vec![1.0, 2.0])),
        (
            "gene",
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["a", "c"]))
                as arrow_array::ArrayRef,
        ),
    ])
    .unwrap();
    ds.append_points("pts", &more, Some("more")).unwrap();
    let square = spatialzarr::element::shapes::parse_geojson(
        r#"{"type":"Polygon","coordinates":[[[0,0],[3,0],[3,3],[0,3],[0,0]]]}"#,
    )
    .unwrap();
    ds.add_shapes("square", &square, None, false).unwrap();
    assert!(
        ds.check(false).unwrap().is_ok(),
        "{:?}",
        ds.check(false).unwrap()
    );

    let seen = spatialdata_reads(&path);
    assert_eq!(seen["zarr_consolidated_stale"], json!([]));
    let names = |kind: &str| -> Vec<String> {
        seen[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("images"), vec!["new_image"]);
    assert_eq!(names("labels"), vec!["cells_labels", "new_labels"]);
    assert_eq!(names("points"), vec!["new_points", "pts"]);
    assert_eq!(names("shapes"), vec!["circles", "square"]);
    assert_eq!(find(&seen["points"], "new_points")["sum_x"], 6.5);
    assert_eq!(find(&seen["points"], "pts")["n"], 12);
    assert_eq!(
        find(&seen["shapes"], "square")["geometry_types"],
        json!(["Polygon"])
    );
    assert_eq!(names("tables"), vec!["table"]);
    let seen_labels = find(&seen["labels"], "new_labels");
    assert_eq!(
        seen_labels["sha256"],
        sha256_le(&new_labels, |v| v.to_le_bytes().to_vec())
    );
    assert_eq!(find(&seen["labels"], "cells_labels")["sum"], 225);
}

#[test]
fn store_reads_the_container_0_1_fixture_but_refuses_to_write_it() {
    let dir = common::tempdir();
    let path = dir.path().join("v2.zarr");
    copy_tree(&common::fixture("v2"), &path);
    let ds = Dataset::open(&path, DatasetOptions::default()).unwrap();
    assert_eq!(ds.list().unwrap().labels, vec!["cells_labels"]);
    let img = ds.read_raster::<u8>("img", 0).unwrap();
    assert_eq!(img.shape(), &[2, 64, 64]);
    let labels = ArrayD::<u32>::zeros(IxDyn(&[4, 4]));
    let err = ds
        .add_labels("x", labels.view(), &RasterOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("container format 0.1"), "{err}");
}

mod tables {
    use super::*;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use spatialzarr::table::{Prim, RowBatch, TableSpec, XRows, XSpec};
    use std::sync::Arc;

    fn rows(region: &str, n: usize, seed: usize) -> RowBatch {
        let obs = RecordBatch::try_from_iter(vec![
            (
                "region",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|_| region.to_owned()),
                )) as ArrayRef,
            ),
            (
                "instance_id",
                Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
            ),
            (
                "area",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| (seed * 1000 + i) as f64 / 4.0),
                )) as ArrayRef,
            ),
            (
                "note",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
                )) as ArrayRef,
            ),
        ])
        .unwrap();
        let x = (0..n * 4)
            .map(|i| (seed * 10_000 + i) as f64 / 8.0)
            .collect();
        RowBatch {
            obs,
            x: Some(XRows::Dense(x)),
        }
    }

    #[test]
    fn spatialdata_reads_tables_we_append_to() {
        let dir = common::tempdir();
        let path = dir.path().join("tables.zarr");
        let ds = Dataset::create(&path, DatasetOptions::default()).unwrap();
        let spec = TableSpec {
            x: XSpec::Dense {
                dtype: Prim::F32,
                var_names: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            },
            ..TableSpec::default()
        };
        for w in 0..11 {
            ds.append_rows(
                "cells",
                &rows(&format!("region{w}"), 25, w),
                Some(&spec),
                None,
            )
            .unwrap();
        }
        let seen = spatialdata_reads(&path);
        let t = find(&seen["tables"], "cells");
        assert_eq!(t["n_obs"], 275);
        assert_eq!(t["n_vars"], 4);
        let mut regions: Vec<String> = (0..11).map(|w| format!("region{w}")).collect();
        regions.sort();
        assert_eq!(t["region"], json!(regions));
        assert_eq!(t["regions_present"], json!(regions));
        assert_eq!(t["region_key"], "region");
        assert_eq!(t["instance_key"], "instance_id");
        assert_eq!(t["var_names"], json!(["a", "b", "c", "d"]));
        assert_eq!(t["obs_dtypes"]["region"], "category");
        let area: Vec<f64> = (0..11)
            .flat_map(|w| (0..25).map(move |i| (w * 1000 + i) as f64 / 4.0))
            .collect();
        assert_eq!(t["obs"]["area"], json!(area));
        let note: Vec<Value> = (0..11)
            .flat_map(|_| {
                (0..25).map(|i| {
                    if i % 3 != 0 {
                        json!(format!("n{i}"))
                    } else {
                        Value::Null
                    }
                })
            })
            .collect();
        assert_eq!(t["obs"]["note"], json!(note));
        let x_sum: f64 = (0..11)
            .flat_map(|w| (0..100).map(move |i| ((w * 10_000 + i) as f64 / 8.0) as f32 as f64))
            .sum();
        assert!(
            (t["X_sum"].as_f64().unwrap() - x_sum).abs() < 1e-3 * x_sum.abs().max(1.0),
            "{} vs {x_sum}",
            t["X_sum"]
        );
        assert_eq!(seen["zarr_consolidated_stale"], json!([]));
    }

    #[test]
    fn spatialdata_reads_the_fixture_table_after_appends() {
        let dir = common::tempdir();
        let path = dir.path().join("fixture.zarr");
        copy_tree(&common::fixture("v3"), &path);
        let ds = Dataset::open(&path, DatasetOptions::default()).unwrap();
        let info = ds.table_info("table").unwrap();
        assert_eq!((info.n_obs, info.n_vars), (2, 3));
        assert_eq!(info.regions, vec!["cells_labels"]);
        let batch =
            |region: &str, ids: [i64; 2], label: [Option<&str>; 2], celltype: [&str; 2]| RowBatch {
                obs: RecordBatch::try_from_iter(vec![
                    (
                        "region",
                        Arc::new(StringArray::from(vec![region, region])) as ArrayRef,
                    ),
                    (
                        "instance_id",
                        Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
                    ),
                    (
                        "label_str",
                        Arc::new(StringArray::from(label.to_vec())) as ArrayRef,
                    ),
                    (
                        "celltype",
                        Arc::new(StringArray::from(celltype.to_vec())) as ArrayRef,
                    ),
                ])
                .unwrap(),
                x: Some(XRows::Csr {
                    indptr: vec![0, 2, 3],
                    indices: vec![0, 2, 1],
                    data: vec![4.0, 5.0, 6.0],
                }),
            };
        ds.append_rows(
            "table",
            &batch("cells_labels", [3, 4], [Some("c"), None], ["T", "NK"]),
            None,
            Some("k1"),
        )
        .unwrap();
        // A new region turns the fixture's scalar region into a list.
        let new_labels = ArrayD::from_elem(IxDyn(&[8, 8]), 1u32);
        ds.add_labels("more_labels", new_labels.view(), &RasterOptions::default())
            .unwrap();
        ds.append_rows(
            "table",
            &batch("more_labels", [1, 2], [Some("d"), Some("e")], ["B", "T"]),
            None,
            Some("k2"),
        )
        .unwrap();
        assert!(
            ds.check(true).unwrap().is_ok(),
            "{:?}",
            ds.check(true).unwrap()
        );
        let seen = spatialdata_reads(&path);
        let t = find(&seen["tables"], "table");
        assert_eq!(t["n_obs"], 6);
        assert_eq!(t["region"], json!(["cells_labels", "more_labels"]));
        assert_eq!(t["regions_present"], json!(["cells_labels", "more_labels"]));
        assert_eq!(t["obs"]["instance_id"], json!([1, 2, 3, 4, 1, 2]));
        assert_eq!(
            t["obs"]["label_str"],
            json!(["a", "b", "c", null, "d", "e"])
        );
        assert_eq!(t["obs"]["celltype"], json!(["T", "B", "T", "NK", "B", "T"]));
        assert_eq!(t["X_shape"], json!([6, 3]));
        assert_eq!(t["X_sum"], json!(6.0 + 2.0 * 15.0));
        assert_eq!(seen["zarr_consolidated_stale"], json!([]));
    }
}

#[test]
fn fixture_int8_codes_are_widened_when_categories_outgrow_them() {
    let dir = common::tempdir();
    let path = dir.path().join("fixture.zarr");
    copy_tree(&common::fixture("v3"), &path);
    let ds = Dataset::open(&path, DatasetOptions::default()).unwrap();
    let (rows, celltypes) = common::fixture_rows_with_new_celltypes(200);
    // Widening belongs to the append's own commit: a transaction dropped after the
    // append changes no file, and the append that commits makes one generation. (The
    // dataset written by spatialdata has no staging folder yet: the first staging
    // makes the empty folder, which holds nothing committed.)
    let tree = common::TreeSnapshot::take_skipping(&path, &[path.join(".spatialzarr/staging")]);
    let generation = ds.generation().unwrap();
    {
        let mut txn = ds.write().unwrap();
        txn.append_rows("table", &rows, None, Some("many-types"))
            .unwrap();
    }
    tree.assert_unchanged("a dropped append that widens codes");
    ds.append_rows("table", &rows, None, Some("many-types"))
        .unwrap();
    assert_eq!(ds.generation().unwrap(), generation + 1);
    let codes = read_json_file(&path.join("tables/table/obs/celltype/codes/zarr.json"));
    assert_eq!(codes["data_type"], "int32");
    // The table written by spatialdata got its element document at this first commit
    // (`check` compares it with every node), with the widened codes in it; in the
    // root's block its entry carries an empty block, as zarr-python nests groups.
    let element = read_json_file(&path.join("tables/table/zarr.json"));
    let block = &element["consolidated_metadata"]["metadata"];
    assert_eq!(block["obs/celltype/codes"], codes);
    assert_eq!(block["obs/celltype/codes"]["shape"], json!([202]));
    let root = read_json_file(&path.join("zarr.json"));
    assert_eq!(
        root["consolidated_metadata"]["metadata"]["tables/table"]["consolidated_metadata"],
        json!({"kind": "inline", "must_understand": false, "metadata": {}})
    );
    assert!(
        ds.check(true).unwrap().is_ok(),
        "{:?}",
        ds.check(true).unwrap()
    );
    let seen = spatialdata_reads(&path);
    let t = find(&seen["tables"], "table");
    assert_eq!(t["n_obs"], 202);
    let mut expected = vec![json!("T"), json!("B")];
    expected.extend(celltypes.iter().map(|c| json!(c)));
    assert_eq!(t["obs"]["celltype"], json!(expected));
    assert_eq!(seen["zarr_consolidated_stale"], json!([]));
}

fn read_json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `--drop-consolidated-metadata`: the next commit removes zarr-python's consolidated
/// metadata from the root `zarr.json`; spatialdata then lists the hierarchy itself and
/// reads every element, old and new. Without the option it stays (and stays current).
#[test]
fn consolidated_metadata_can_be_dropped() {
    let dir = common::tempdir();
    let path = dir.path().join("fixture.zarr");
    copy_tree(&common::fixture("v3"), &path);
    let root_doc = || -> Value {
        serde_json::from_slice(&std::fs::read(path.join("zarr.json")).unwrap()).unwrap()
    };
    assert!(root_doc().get("consolidated_metadata").is_some());
    let npy = dir.path().join("labels.npy");
    let labels = ArrayD::from_shape_fn(IxDyn(&[16, 16]), |ix| (ix[0] / 4) as u32);
    ndarray_npy::write_npy(&npy, &labels).unwrap();
    common::sz_ok(&[
        "add-labels",
        common::s(&path),
        "kept",
        "--npy",
        common::s(&npy),
    ]);
    assert!(root_doc().get("consolidated_metadata").is_some());
    common::sz_ok(&[
        "add-labels",
        "--drop-consolidated-metadata",
        common::s(&path),
        "after_drop",
        "--npy",
        common::s(&npy),
    ]);
    assert!(
        root_doc().get("consolidated_metadata").is_none(),
        "{}",
        root_doc()
    );
    common::sz_ok(&["check", common::s(&path)]);
    let seen = spatialdata_reads(&path);
    let names: Vec<&str> = seen["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["after_drop", "cells_labels", "kept"]);
    assert_eq!(find(&seen["images"], "img")["shape"], json!([2, 64, 64]));
    assert_eq!(
        find(&seen["labels"], "after_drop")["sum"],
        json!(labels.iter().map(|&v| u64::from(v)).sum::<u64>())
    );
}

/// Runs `tests/interop/quiet_readers.py PATH OPTIONS...` (zarr-python and spatialdata
/// reading with every UserWarning an error).
fn quiet_readers(path: &Path, options: &[&str]) -> std::process::Output {
    std::process::Command::new(common::python())
        .arg(common::repo().join("tests/interop/quiet_readers.py"))
        .arg(path)
        .args(options)
        .output()
        .expect("run quiet_readers.py")
}

/// [`quiet_readers`], asserting no warning and no failure; returns its summary.
fn quiet_summary(path: &Path, options: &[&str]) -> Value {
    let out = quiet_readers(path, options);
    assert!(
        out.status.success(),
        "a reader warned or failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("summary JSON")
}

/// Node paths of a summary's `key` (a map of members, or a list).
fn node_paths(summary: &Value, key: &str) -> Vec<String> {
    match &summary[key] {
        Value::Object(map) => map.keys().cloned().collect(),
        Value::Array(list) => list
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect(),
        other => panic!("{key} is {other}"),
    }
}

#[test]
fn zarr_and_spatialdata_read_without_a_warning_and_never_see_the_hidden_folder() {
    use common::{s, sz_ok, write_file};
    let dir = common::tempdir();
    let d = dir.path();
    let path = d.join("quiet.zarr");
    sz_ok(&["init", s(&path)]);
    let pixels = d.join("img.npy");
    ndarray_npy::write_npy(&pixels, &ArrayD::<u16>::zeros(IxDyn(&[1, 8, 8]))).unwrap();
    let labels = d.join("lab.npy");
    ndarray_npy::write_npy(&labels, &ArrayD::<u32>::ones(IxDyn(&[8, 8]))).unwrap();
    sz_ok(&["add-image", s(&path), "img", "--npy", s(&pixels)]);
    sz_ok(&["add-labels", s(&path), "lab", "--npy", s(&labels)]);
    let points = write_file(d, "pts.csv", "x,y,gene\n1,2,a\n3,4,b\n");
    sz_ok(&[
        "add-points",
        s(&path),
        "pts",
        "--csv",
        s(&points),
        "--feature-key",
        "gene",
    ]);
    let circles = write_file(d, "c.csv", "x,y,radius\n1,1,2\n");
    sz_ok(&["add-shapes", s(&path), "circ", "--csv", s(&circles)]);
    let rows = write_file(d, "rows.csv", "region,instance_id,area\nlab,1,64\n");
    sz_ok(&["append-rows", s(&path), "cells", "--csv", s(&rows)]);

    // What a writer killed mid-way leaves in the hidden folder: a staged element (a
    // complete labels element, documents and all) and a trashed one.
    let hidden = path.join(".spatialzarr");
    for left in ["staging/1-1-1/element", "trash/2-2-2"] {
        copy_tree(&path.join("labels/lab"), &hidden.join(left));
    }
    std::fs::write(hidden.join("staging/1-1-1/owner"), "").unwrap();

    let node = read_json_file(&hidden.join("zarr.json"));
    assert_eq!(
        (node["node_type"].as_str(), &node["shape"]),
        (Some("array"), &json!([0]))
    );
    let summary = quiet_summary(&path, &[]);
    let members = node_paths(&summary, "members");
    assert_eq!(summary["members"][".spatialzarr"], "array [0]", "{summary}");
    assert!(
        members.iter().all(|m| !m.starts_with(".spatialzarr/")),
        "a traversal entered the hidden folder: {members:?}"
    );
    assert_eq!(
        summary["elements"],
        json!([
            "images/img",
            "labels/lab",
            "points/pts",
            "shapes/circ",
            "tables/cells"
        ])
    );

    // A dataset made before the hidden folder was a node: readers warn (as errors
    // here, so the check above can fail), and the next open of the store mends it.
    std::fs::remove_file(hidden.join("zarr.json")).unwrap();
    let out = quiet_readers(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "no warning without the node document"
    );
    assert!(
        stderr.contains("Object at .spatialzarr is not recognized as a component"),
        "{stderr}"
    );
    sz_ok(&["ls", s(&path)]);
    assert_eq!(read_json_file(&hidden.join("zarr.json")), node);
    quiet_summary(&path, &[]);

    // spatialdata writing an element and consolidating, then zarr consolidating:
    // nothing of the hidden folder is consolidated, and the store's check agrees.
    let written = quiet_summary(&path, &["--write"]);
    let consolidated = node_paths(&written, "consolidated");
    assert!(
        consolidated.contains(&"labels/lab_copy".to_owned()),
        "{consolidated:?}"
    );
    assert!(
        consolidated.iter().all(|k| !k.starts_with(".spatialzarr/")),
        "consolidated from the hidden folder: {consolidated:?}"
    );
    let after = node_paths(&written, "members_after_write");
    assert!(
        after.iter().all(|m| !m.starts_with(".spatialzarr/")),
        "{after:?}"
    );
    sz_ok(&["check", s(&path)]);
    let list = Dataset::open(&path, DatasetOptions::default())
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(list.labels, vec!["lab", "lab_copy"]);
}

#[test]
fn a_zarr_v2_dataset_gets_a_v2_node_document() {
    let dir = common::tempdir();
    let path = dir.path().join("v2.zarr");
    copy_tree(&common::fixture("v2"), &path);
    Dataset::open(&path, DatasetOptions::default()).unwrap();
    let node = read_json_file(&path.join(".spatialzarr/.zarray"));
    assert_eq!(
        (node["zarr_format"].as_u64(), &node["shape"]),
        (Some(2), &json!([0]))
    );
    assert!(!path.join(".spatialzarr/zarr.json").exists());
}
