//! Points and shapes elements: round trips through our writer and reader, the
//! spatialdata 0.8 fixture read back exactly, bad input refused before anything is
//! written, and spatialdata 0.8 (Python) reading what we write.

mod common;

use common::{copy_tree, find, spatialdata_reads};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use serde_json::{Value, json};
use spatialzarr::element::points::{
    check_points, next_part_name, points_info, read_points, write_points_element, write_points_part,
};
use spatialzarr::element::shapes::{
    Shape, Shapes, check_shapes, parse_geojson, read_shape_columns, read_shapes, shapes_info,
    write_shapes_element,
};
use spatialzarr::storage::Publisher;
use spatialzarr::{Dataset, Error, Transform, Transformations};

fn fixture() -> PathBuf {
    common::fixture("v3")
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn f64s(values: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(values.to_vec()))
}

fn strs(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn column_f64(batch: &RecordBatch, name: &str) -> Vec<f64> {
    let c = batch.column_by_name(name).unwrap();
    c.as_primitive::<Float64Type>().values().to_vec()
}

/// The labels of a `Dictionary(Int32, Utf8)` column.
fn categories(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = batch.column_by_name(name).unwrap();
    assert_eq!(
        c.data_type(),
        &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
    );
    let dict = c.as_dictionary::<Int32Type>();
    let values = dict.values().as_string::<i32>();
    dict.keys()
        .iter()
        .map(|k| k.map(|k| values.value(k as usize).to_owned()))
        .collect()
}

fn names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn zarr_attributes(dir: &Path) -> Value {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.join("zarr.json")).unwrap()).unwrap();
    assert_eq!(doc["zarr_format"], 3);
    assert_eq!(doc["node_type"], "group");
    doc["attributes"].clone()
}

fn transforms() -> Transformations {
    Transformations(BTreeMap::from([
        ("global".to_owned(), Transform::Scale(vec![2.0, 0.5])),
        ("aligned".to_owned(), Transform::Translation(vec![1.0, 2.0])),
    ]))
}

/// The NGFF list spatialdata writes for [`transforms`] on `x, y` elements.
fn transforms_ngff() -> Value {
    let axes = json!([
        {"name": "x", "type": "space", "unit": "unit"},
        {"name": "y", "type": "space", "unit": "unit"}
    ]);
    json!([
        {"type": "translation", "translation": [1.0, 2.0],
         "input": {"name": "xy", "axes": axes}, "output": {"name": "aligned", "axes": axes}},
        {"type": "scale", "scale": [2.0, 0.5],
         "input": {"name": "xy", "axes": axes}, "output": {"name": "global", "axes": axes}}
    ])
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

fn invalid_message(result: spatialzarr::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::InvalidInput(m)) => m,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn cells() -> RecordBatch {
    batch(vec![
        ("x", f64s(&[1.0, 2.5, 3.0])),
        ("y", f64s(&[4.0, 5.0, 6.5])),
        ("gene", strs(&["Actb", "Gapdh", "Actb"])),
        (
            "score",
            Arc::new(Int64Array::from(vec![Some(7), None, Some(9)])),
        ),
        ("ok", Arc::new(BooleanArray::from(vec![true, false, true]))),
        (
            "note",
            Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
        ),
    ])
}

#[test]
fn points_round_trip_with_feature_key_and_extra_columns() {
    let dir = common::tempdir();
    let p = Publisher::new();
    write_points_element(dir.path(), &p, &cells(), Some("gene"), None, &transforms()).unwrap();
    p.sync().unwrap();

    assert_eq!(
        zarr_attributes(dir.path()),
        json!({
            "encoding-type": "ngff:points",
            "axes": ["x", "y"],
            "coordinateTransformations": transforms_ngff(),
            "spatialdata_attrs": {"feature_key": "gene", "version": "0.2"}
        })
    );
    assert!(dir.path().join("points.parquet/part.0.parquet").is_file());
    let info = points_info(dir.path()).unwrap();
    assert_eq!(info.n, 3);
    assert_eq!(info.columns, ["x", "y", "gene", "score", "ok", "note"]);
    assert_eq!(info.feature_key.as_deref(), Some("gene"));
    assert_eq!(info.parts, 1);
    assert_eq!(info.transformations, transforms());

    let back = read_points(dir.path()).unwrap();
    assert_eq!(names(&back), info.columns);
    assert_eq!(column_f64(&back, "x"), [1.0, 2.5, 3.0]);
    assert_eq!(column_f64(&back, "y"), [4.0, 5.0, 6.5]);
    let genes = categories(&back, "gene");
    assert_eq!(
        genes,
        [
            Some("Actb".into()),
            Some("Gapdh".into()),
            Some("Actb".into())
        ]
    );
    let score: Vec<_> = back["score"].as_primitive::<Int64Type>().iter().collect();
    assert_eq!(score, [Some(7), None, Some(9)]);
    assert_eq!(
        back["ok"].as_boolean().iter().collect::<Vec<_>>(),
        [Some(true), Some(false), Some(true)]
    );
    let note: Vec<_> = back["note"].as_string::<i32>().iter().collect();
    assert_eq!(note, [Some("a"), None, Some("c")]);
    check_points(dir.path(), true).unwrap();
}

/// The instance key is recorded where spatialdata 0.8's PointsModel keeps it, read back
/// by `points_info`, and its column stays required in appended parts.
#[test]
fn points_record_their_instance_key() {
    let dir = common::tempdir();
    let p = Publisher::new();
    let t = Transformations::default();
    write_points_element(dir.path(), &p, &cells(), Some("gene"), Some("score"), &t).unwrap();
    p.sync().unwrap();
    assert_eq!(
        zarr_attributes(dir.path())["spatialdata_attrs"],
        json!({"instance_key": "score", "feature_key": "gene", "version": "0.2"})
    );
    let info = points_info(dir.path()).unwrap();
    assert_eq!(info.instance_key.as_deref(), Some("score"));
    assert_eq!(info.feature_key.as_deref(), Some("gene"));
    let without_score = batch(vec![
        ("x", f64s(&[1.0])),
        ("y", f64s(&[1.0])),
        ("gene", strs(&["Vim"])),
        ("ok", Arc::new(BooleanArray::from(vec![true]))),
        ("note", strs(&["n"])),
    ]);
    let part = dir.path().join("points.parquet/part.1.parquet");
    let m = invalid_message(write_points_part(&part, &p, &without_score, dir.path()));
    assert!(m.contains("\"score\""), "{m}");
    assert!(!part.exists());
}

#[test]
fn points_parts_append_in_order_and_refuse_mismatches() {
    let dir = common::tempdir();
    let p = Publisher::new();
    write_points_element(
        dir.path(),
        &p,
        &cells(),
        Some("gene"),
        None,
        &Transformations::default(),
    )
    .unwrap();
    assert_eq!(next_part_name(dir.path()).unwrap(), "part.1.parquet");

    // Columns in another order, integer coordinates, a new category.
    let more = batch(vec![
        ("note", strs(&["d", "e"])),
        ("gene", strs(&["Vim", "Actb"])),
        ("ok", Arc::new(BooleanArray::from(vec![false, false]))),
        ("x", Arc::new(Int64Array::from(vec![10, 11]))),
        ("y", f64s(&[12.0, 13.0])),
        ("score", Arc::new(Int64Array::from(vec![1, 2]))),
    ]);
    let part1 = dir
        .path()
        .join("points.parquet")
        .join(next_part_name(dir.path()).unwrap());
    write_points_part(&part1, &p, &more, dir.path()).unwrap();
    assert_eq!(next_part_name(dir.path()).unwrap(), "part.2.parquet");
    let part0 = dir.path().join("points.parquet/part.0.parquet");
    assert!(matches!(
        write_points_part(&part0, &p, &more, dir.path()),
        Err(Error::AlreadyExists(_))
    ));

    let before: Vec<_> = std::fs::read_dir(dir.path().join("points.parquet"))
        .unwrap()
        .collect();
    let missing = batch(vec![
        ("x", f64s(&[1.0])),
        ("y", f64s(&[1.0])),
        ("gene", strs(&["a"])),
    ]);
    let part2 = dir.path().join("points.parquet/part.2.parquet");
    assert!(
        invalid_message(write_points_part(&part2, &p, &missing, dir.path())).contains("\"score\"")
    );
    let with_score = |score: ArrayRef, extra: Option<(&'static str, ArrayRef)>| {
        let mut columns = vec![
            ("x", f64s(&[1.0, 2.0])),
            ("y", f64s(&[1.0, 2.0])),
            ("gene", strs(&["a", "b"])),
            ("score", score),
            (
                "ok",
                Arc::new(BooleanArray::from(vec![true, true])) as ArrayRef,
            ),
            ("note", strs(&["n", "m"])),
        ];
        columns.extend(extra);
        batch(columns)
    };
    let wrong = with_score(strs(&["high", "low"]), None);
    let m = invalid_message(write_points_part(&part2, &p, &wrong, dir.path()));
    assert!(m.contains("\"score\"") && m.contains("Int64"), "{m}");
    let ints = || Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef;
    let extra = with_score(ints(), Some(("other", f64s(&[1.0, 2.0]))));
    assert!(
        invalid_message(write_points_part(&part2, &p, &extra, dir.path())).contains("\"other\"")
    );
    let after: Vec<_> = std::fs::read_dir(dir.path().join("points.parquet"))
        .unwrap()
        .collect();
    assert_eq!(before.len(), after.len(), "a refused part wrote nothing");

    let info = points_info(dir.path()).unwrap();
    assert_eq!((info.n, info.parts), (5, 2));
    let back = read_points(dir.path()).unwrap();
    assert_eq!(names(&back), ["x", "y", "gene", "score", "ok", "note"]);
    assert_eq!(column_f64(&back, "x"), [1.0, 2.5, 3.0, 10.0, 11.0]);
    let genes: Vec<_> = categories(&back, "gene")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(genes, ["Actb", "Gapdh", "Actb", "Vim", "Actb"]);
    check_points(dir.path(), true).unwrap();
}

#[test]
fn points_in_3d_without_feature_key() {
    let dir = common::tempdir();
    let p = Publisher::new();
    let b = batch(vec![
        ("x", Arc::new(Int64Array::from(vec![1, 2]))),
        ("y", f64s(&[3.0, 4.0])),
        ("z", f64s(&[5.0, 6.0])),
    ]);
    write_points_element(dir.path(), &p, &b, None, None, &Transformations::default()).unwrap();
    let attrs = zarr_attributes(dir.path());
    assert_eq!(attrs["axes"], json!(["x", "y", "z"]));
    assert_eq!(
        attrs["coordinateTransformations"][0]["input"]["name"],
        "xyz"
    );
    assert_eq!(attrs["spatialdata_attrs"], json!({"version": "0.2"}));
    let info = points_info(dir.path()).unwrap();
    assert_eq!(info.feature_key, None);
    assert_eq!(info.axes, ["x", "y", "z"]);
    assert_eq!(
        column_f64(&read_points(dir.path()).unwrap(), "x"),
        [1.0, 2.0]
    );
}

/// A points element's feature key and instance key.
type Keys<'a> = (Option<&'a str>, Option<&'a str>);

#[test]
fn bad_points_are_refused_before_writing() {
    let dir = common::tempdir();
    let p = Publisher::new();
    let t = Transformations::default();
    let cases: Vec<(RecordBatch, Keys, &str)> = vec![
        (batch(vec![("y", f64s(&[1.0]))]), (None, None), "\"x\""),
        (
            batch(vec![("x", strs(&["1"])), ("y", f64s(&[1.0]))]),
            (None, None),
            "numeric",
        ),
        (
            batch(vec![
                ("x", f64s(&[1.0, 2.0])),
                ("y", Arc::new(Float64Array::from(vec![Some(1.0), None]))),
            ]),
            (None, None),
            "missing value in row 1",
        ),
        (
            batch(vec![("x", f64s(&[f64::NAN])), ("y", f64s(&[1.0]))]),
            (None, None),
            "finite",
        ),
        (
            batch(vec![("x", f64s(&[1.0])), ("y", f64s(&[1.0]))]),
            (Some("gene"), None),
            "\"gene\"",
        ),
        (
            batch(vec![("x", f64s(&[1.0])), ("y", f64s(&[1.0]))]),
            (None, Some("cell_id")),
            "instance key column \"cell_id\"",
        ),
        (
            batch(vec![("x", f64s(&[1.0])), ("y", f64s(&[1.0]))]),
            (None, Some("y")),
            "instance key \"y\" cannot be a coordinate",
        ),
        (
            batch(vec![("x", f64s(&[])), ("y", f64s(&[]))]),
            (None, None),
            "no rows",
        ),
        (
            batch(vec![
                ("x", f64s(&[1.0])),
                ("y", f64s(&[1.0])),
                ("__null_dask_index__", f64s(&[1.0])),
            ]),
            (None, None),
            "reserved",
        ),
    ];
    for (b, (feature_key, instance_key), expected) in cases {
        let m = invalid_message(write_points_element(
            dir.path(),
            &p,
            &b,
            feature_key,
            instance_key,
            &t,
        ));
        assert!(m.contains(expected), "{m:?} should mention {expected}");
        assert!(is_empty_dir(dir.path()), "nothing written for {expected}");
    }
    let bad_t = Transformations(BTreeMap::from([(
        "global".into(),
        Transform::Scale(vec![1.0]),
    )]));
    assert!(
        invalid_message(write_points_element(
            dir.path(),
            &p,
            &cells(),
            None,
            None,
            &bad_t
        ))
        .contains("spatial axes")
    );
    assert!(is_empty_dir(dir.path()));
}

#[test]
fn fixture_points_read_back_exactly() {
    let dir = fixture().join("points/pts");
    let info = points_info(&dir).unwrap();
    assert_eq!(info.n, 10);
    assert_eq!(info.columns, ["x", "y", "gene"]);
    assert_eq!(info.feature_key.as_deref(), Some("gene"));
    assert_eq!(info.parts, 1);
    assert_eq!(info.transformations, Transformations::default());
    let back = read_points(&dir).unwrap();
    // Values as pyarrow reads them from part.0.parquet.
    assert_eq!(
        column_f64(&back, "x"),
        [
            36.39958973242321,
            33.19587473574907,
            39.23997938906972,
            56.16918163759617,
            32.26911007645145,
            24.265451436791587,
            16.420652965147376,
            19.638185117115185,
            35.89165141497819,
            50.9038298346473
        ]
    );
    assert_eq!(
        column_f64(&back, "y"),
        [
            28.231745915650535,
            2.6087889477513215,
            12.041888239537293,
            5.801742939197361,
            21.33397849790581,
            43.80010611654033,
            37.805742841911666,
            42.376165757327406,
            29.094088378909383,
            7.025954364870849
        ]
    );
    let genes: Vec<_> = categories(&back, "gene")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(genes, ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"]);
    check_points(&dir, true).unwrap();
    // The Zarr v2 fixture holds the same points.
    let v2 = common::fixture("v2").join("points/pts");
    assert_eq!(points_info(&v2).unwrap().n, 10);
}

fn square(x0: f64, y0: f64, side: f64) -> Vec<[f64; 2]> {
    vec![
        [x0, y0],
        [x0 + side, y0],
        [x0 + side, y0 + side],
        [x0, y0 + side],
        [x0, y0],
    ]
}

fn polygons() -> Shapes {
    Shapes::Polygons(vec![
        Shape::Polygon(vec![
            square(0.0, 0.0, 10.0),
            square(2.0, 2.0, 3.0),
            square(6.0, 6.0, 1.0),
        ]),
        Shape::MultiPolygon(vec![
            vec![square(20.0, 0.0, 5.0)],
            vec![square(30.0, 0.0, 5.0), square(31.0, 1.0, 1.0)],
        ]),
        Shape::Polygon(vec![vec![
            [0.0, 20.0],
            [4.0, 20.0],
            [2.0, 23.5],
            [0.0, 20.0],
        ]]),
    ])
}

#[test]
fn shapes_circles_round_trip_with_extra_columns() {
    let dir = common::tempdir();
    let p = Publisher::new();
    let circles = Shapes::Circles {
        x: vec![1.0, 10.0, -3.5],
        y: vec![1.0, 10.0, 2.0],
        radius: vec![1.0, 2.0, 0.25],
    };
    let extra = batch(vec![
        ("cell_type", strs(&["T", "B", "T"])),
        ("area", f64s(&[3.1, 12.6, 0.2])),
    ]);
    write_shapes_element(dir.path(), &p, &circles, Some(&extra), &transforms()).unwrap();
    assert_eq!(
        zarr_attributes(dir.path()),
        json!({
            "encoding-type": "ngff:shapes",
            "axes": ["x", "y"],
            "coordinateTransformations": transforms_ngff(),
            "spatialdata_attrs": {"version": "0.3"}
        })
    );
    let info = shapes_info(dir.path()).unwrap();
    assert_eq!(info.n, 3);
    assert_eq!(info.geometry, "circle");
    assert_eq!(info.columns, ["geometry", "radius", "cell_type", "area"]);
    assert_eq!(info.transformations, transforms());
    assert_eq!(read_shapes(dir.path()).unwrap(), circles);
    let cols = read_shape_columns(dir.path()).unwrap();
    assert_eq!(names(&cols), ["cell_type", "area"]);
    assert_eq!(column_f64(&cols, "area"), [3.1, 12.6, 0.2]);
    check_shapes(dir.path(), true).unwrap();

    // Circles from a table, as the CLI builds them from CSV columns.
    let table = batch(vec![
        ("x", Arc::new(Int64Array::from(vec![1, 2]))),
        ("y", f64s(&[3.0, 4.0])),
        ("radius", f64s(&[0.5, 1.5])),
        ("label", strs(&["p", "q"])),
    ]);
    let (shapes, rest) = Shapes::circles_from_batch(&table).unwrap();
    assert_eq!(
        shapes,
        Shapes::Circles {
            x: vec![1.0, 2.0],
            y: vec![3.0, 4.0],
            radius: vec![0.5, 1.5]
        }
    );
    assert_eq!(names(&rest.unwrap()), ["label"]);
}

#[test]
fn shapes_polygons_with_holes_and_multipolygons_round_trip() {
    let p = Publisher::new();
    let cases = [
        (polygons(), "mixed"),
        (
            Shapes::Polygons(vec![Shape::Polygon(vec![
                square(0.0, 0.0, 1.0),
                square(0.25, 0.25, 0.5),
            ])]),
            "polygon",
        ),
        (
            Shapes::Polygons(vec![Shape::MultiPolygon(vec![
                vec![square(0.0, 0.0, 1.0)],
                vec![square(5.0, 5.0, 1.0)],
            ])]),
            "multipolygon",
        ),
    ];
    for (shapes, kind) in cases {
        let dir = common::tempdir();
        write_shapes_element(dir.path(), &p, &shapes, None, &Transformations::default()).unwrap();
        let info = shapes_info(dir.path()).unwrap();
        assert_eq!(
            (info.n as usize, info.geometry.as_str()),
            (shapes.len(), kind)
        );
        assert_eq!(info.columns, ["geometry"]);
        assert_eq!(read_shapes(dir.path()).unwrap(), shapes);
        assert_eq!(read_shape_columns(dir.path()).unwrap().num_columns(), 0);
        check_shapes(dir.path(), true).unwrap();
    }
}

#[test]
fn fixture_circles_read_back_exactly() {
    let dir = fixture().join("shapes/circles");
    let info = shapes_info(&dir).unwrap();
    assert_eq!((info.n, info.geometry.as_str()), (2, "circle"));
    assert_eq!(info.columns, ["geometry", "radius"]);
    assert_eq!(info.transformations, Transformations::default());
    assert_eq!(
        read_shapes(&dir).unwrap(),
        Shapes::Circles {
            x: vec![1.0, 10.0],
            y: vec![1.0, 10.0],
            radius: vec![1.0, 2.0]
        }
    );
    check_shapes(&dir, true).unwrap();
}

#[test]
fn bad_shapes_are_refused_before_writing() {
    let dir = common::tempdir();
    let p = Publisher::new();
    let t = Transformations::default();
    let mut open = square(0.0, 0.0, 1.0);
    open.pop();
    let cases = [
        (
            Shapes::Polygons(vec![Shape::Polygon(vec![open])]),
            "not closed",
        ),
        (
            Shapes::Polygons(vec![Shape::Polygon(vec![vec![
                [0.0, 0.0],
                [1.0, 0.0],
                [0.0, 0.0],
            ]])]),
            "at least 4",
        ),
        (Shapes::Polygons(vec![]), "no shapes"),
        (Shapes::Polygons(vec![Shape::Polygon(vec![])]), "no rings"),
        (
            Shapes::Polygons(vec![Shape::MultiPolygon(vec![])]),
            "no polygons",
        ),
        (
            Shapes::Polygons(vec![Shape::Polygon(vec![vec![
                [0.0, 0.0],
                [f64::INFINITY, 0.0],
                [1.0, 1.0],
                [0.0, 0.0],
            ]])]),
            "not finite",
        ),
        (
            Shapes::Circles {
                x: vec![1.0],
                y: vec![1.0],
                radius: vec![0.0],
            },
            "radius 0",
        ),
        (
            Shapes::Circles {
                x: vec![1.0],
                y: vec![1.0],
                radius: vec![f64::NAN],
            },
            "positive",
        ),
        (
            Shapes::Circles {
                x: vec![1.0, 2.0],
                y: vec![1.0],
                radius: vec![1.0],
            },
            "as many",
        ),
        (
            Shapes::Circles {
                x: vec![],
                y: vec![],
                radius: vec![],
            },
            "no shapes",
        ),
    ];
    for (shapes, expected) in cases {
        let m = invalid_message(write_shapes_element(dir.path(), &p, &shapes, None, &t));
        assert!(m.contains(expected), "{m:?} should mention {expected}");
        assert!(is_empty_dir(dir.path()));
    }
    let circles = Shapes::Circles {
        x: vec![1.0],
        y: vec![1.0],
        radius: vec![1.0],
    };
    let two_rows = batch(vec![("a", f64s(&[1.0, 2.0]))]);
    assert!(
        invalid_message(write_shapes_element(
            dir.path(),
            &p,
            &circles,
            Some(&two_rows),
            &t
        ))
        .contains("rows")
    );
    let clash = batch(vec![("radius", f64s(&[1.0]))]);
    assert!(
        invalid_message(write_shapes_element(
            dir.path(),
            &p,
            &circles,
            Some(&clash),
            &t
        ))
        .contains("twice")
    );
    assert!(is_empty_dir(dir.path()));

    // A non-numeric radius column, as it would come from a CSV.
    let table = batch(vec![
        ("x", f64s(&[1.0])),
        ("y", f64s(&[1.0])),
        ("radius", strs(&["big"])),
    ]);
    let m = invalid_message(Shapes::circles_from_batch(&table));
    assert!(m.contains("\"radius\"") && m.contains("numeric"), "{m}");
    let table = batch(vec![("x", f64s(&[1.0])), ("y", f64s(&[1.0]))]);
    assert!(invalid_message(Shapes::circles_from_batch(&table)).contains("\"radius\""));
}

#[test]
fn geojson_feature_collections_features_and_geometries() {
    let text = r#"{"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Polygon",
         "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]], [[2,2],[5,2],[5,5],[2,5],[2,2]]]}},
        {"type": "Feature", "properties": null, "geometry": {"type": "MultiPolygon",
         "coordinates": [[[[20,0],[25,0],[25,5],[20,5],[20,0]]], [[[30,0],[35,0],[35,5],[30,5],[30,0]]]]}}
    ]}"#;
    let shapes = parse_geojson(text).unwrap();
    assert_eq!(
        shapes,
        Shapes::Polygons(vec![
            Shape::Polygon(vec![square(0.0, 0.0, 10.0), square(2.0, 2.0, 3.0)]),
            Shape::MultiPolygon(vec![
                vec![square(20.0, 0.0, 5.0)],
                vec![square(30.0, 0.0, 5.0)]
            ]),
        ])
    );
    let feature = r#"{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}}"#;
    assert_eq!(parse_geojson(feature).unwrap().len(), 1);
    let geometry = r#"{"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}"#;
    assert_eq!(parse_geojson(geometry).unwrap().len(), 1);
    let array = format!("[{feature}, {feature}]");
    assert_eq!(parse_geojson(&array).unwrap().len(), 2);

    let bad = [
        (
            r#"{"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,1]]]}"#,
            "not closed",
        ),
        (r#"{"type": "Point", "coordinates": [0,0]}"#, "\"Point\""),
        (
            r#"{"type": "FeatureCollection", "features": []}"#,
            "no shapes",
        ),
        (
            r#"{"type": "Polygon", "coordinates": [[[0,0,1],[1,0,1],[1,1,1],[0,0,1]]]}"#,
            "3 coordinates",
        ),
        (r#"{"type": "Feature", "geometry": null}"#, "no geometry"),
        ("{not json", "not valid JSON"),
    ];
    for (text, expected) in bad {
        let m = invalid_message(parse_geojson(text));
        assert!(m.contains(expected), "{m:?} should mention {expected}");
    }
}

/// Makes `root/<group>/<name>` for an element, with the `<group>` Zarr group document.
fn element_dir(p: &Publisher, root: &Path, group: &str, name: &str) -> PathBuf {
    let group_dir = root.join(group);
    p.create_dir_all(&group_dir.join(name)).unwrap();
    if !group_dir.join("zarr.json").exists() {
        p.write(
            &group_dir.join("zarr.json"),
            br#"{"attributes":{},"zarr_format":3,"node_type":"group"}"#,
        )
        .unwrap();
    }
    group_dir.join(name)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

#[test]
fn spatialdata_reads_our_points_and_shapes() {
    let dir = common::tempdir();
    let path = dir.path().join("ours.zarr");
    drop(Dataset::create(&path, Default::default()).unwrap());
    let p = Publisher::new();

    let pts = element_dir(&p, &path, "points", "pts2");
    write_points_element(
        &pts,
        &p,
        &cells(),
        Some("gene"),
        Some("score"),
        &transforms(),
    )
    .unwrap();
    let more = batch(vec![
        ("x", f64s(&[10.0, 11.0])),
        ("y", f64s(&[12.0, 13.0])),
        ("gene", strs(&["Vim", "Actb"])),
        ("score", Arc::new(Int64Array::from(vec![1, 2]))),
        ("ok", Arc::new(BooleanArray::from(vec![false, true]))),
        ("note", strs(&["d", "e"])),
    ]);
    let part = pts
        .join("points.parquet")
        .join(next_part_name(&pts).unwrap());
    write_points_part(&part, &p, &more, &pts).unwrap();

    let poly = element_dir(&p, &path, "shapes", "poly");
    let extra = batch(vec![("kind", strs(&["big", "pair", "tri"]))]);
    write_shapes_element(
        &poly,
        &p,
        &polygons(),
        Some(&extra),
        &Transformations::default(),
    )
    .unwrap();
    let circ = element_dir(&p, &path, "shapes", "circ");
    let circles = Shapes::Circles {
        x: vec![1.0, 10.0],
        y: vec![1.0, 10.0],
        radius: vec![1.0, 2.0],
    };
    write_shapes_element(&circ, &p, &circles, None, &transforms()).unwrap();
    p.sync().unwrap();

    let seen = spatialdata_reads(&path);
    let points = find(&seen["points"], "pts2");
    let info = points_info(&pts).unwrap();
    let ours = read_points(&pts).unwrap();
    assert_eq!(points["n"], info.n);
    assert_eq!(points["columns"], json!(info.columns));
    assert_eq!(info.instance_key.as_deref(), Some("score"));
    assert_eq!(
        points["spatialdata_attrs"],
        json!({"feature_key": "gene", "instance_key": "score"})
    );
    assert!(close(
        points["sum_x"].as_f64().unwrap(),
        column_f64(&ours, "x").iter().sum()
    ));
    assert!(close(
        points["sum_y"].as_f64().unwrap(),
        column_f64(&ours, "y").iter().sum()
    ));
    assert_eq!(
        points["transformations"],
        json!({
            "aligned": {"type": "translation", "translation": [1.0, 2.0], "axes": ["x", "y"]},
            "global": {"type": "scale", "scale": [2.0, 0.5], "axes": ["x", "y"]}
        })
    );

    let shapes = find(&seen["shapes"], "poly");
    let info = shapes_info(&poly).unwrap();
    assert_eq!(shapes["n"], info.n);
    assert_eq!(shapes["columns"], json!(info.columns));
    assert_eq!(shapes["geometry_types"], json!(["MultiPolygon", "Polygon"]));
    assert_eq!(
        shapes["transformations"],
        json!({"global": {"type": "identity"}})
    );

    let shapes = find(&seen["shapes"], "circ");
    assert_eq!(shapes["n"], 2);
    assert_eq!(shapes["columns"], json!(["geometry", "radius"]));
    assert_eq!(shapes["geometry_types"], json!(["Point"]));
    assert_eq!(
        shapes["transformations"]["global"]["scale"],
        json!([2.0, 0.5])
    );
}

#[test]
fn spatialdata_reads_a_part_appended_to_its_own_points() {
    let dir = common::tempdir();
    let path = dir.path().join("fixture.zarr");
    copy_tree(&fixture(), &path);
    let pts = path.join("points/pts");
    let p = Publisher::new();
    let more = batch(vec![
        ("x", f64s(&[100.0, 200.0])),
        ("y", f64s(&[1.0, 2.0])),
        ("gene", strs(&["c", "a"])),
    ]);
    let part = pts
        .join("points.parquet")
        .join(next_part_name(&pts).unwrap());
    write_points_part(&part, &p, &more, &pts).unwrap();
    p.sync().unwrap();
    check_points(&pts, true).unwrap();
    let back = read_points(&pts).unwrap();
    assert_eq!(back.num_rows(), 12);

    let seen = spatialdata_reads(&path);
    let points = find(&seen["points"], "pts");
    assert_eq!(points["n"], 12);
    assert_eq!(points["columns"], json!(["x", "y", "gene"]));
    assert!(close(
        points["sum_x"].as_f64().unwrap(),
        344.39350633996924 + 300.0
    ));
    assert!(close(
        points["sum_y"].as_f64().unwrap(),
        230.12020199960196 + 3.0
    ));
}

#[test]
fn points_keys_are_strict_and_empty_appends_record_them() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = Dataset::create(&path, Default::default()).unwrap();
    ds.add_points("pts", &cells(), Some("gene"), false).unwrap();
    let more = batch(vec![
        ("x", f64s(&[10.0])),
        ("y", f64s(&[12.0])),
        ("gene", strs(&["Vim"])),
        ("score", Arc::new(Int64Array::from(vec![1]))),
        ("ok", Arc::new(BooleanArray::from(vec![false]))),
        ("note", strs(&["d"])),
    ]);
    let first = ds.append_points("pts", &more, Some("tile-1")).unwrap();
    assert_eq!((first.start, first.end, first.applied), (3, 4, true));
    let tree = common::TreeSnapshot::take(&path);
    // The same points again: nothing happens.
    let again = ds.append_points("pts", &more, Some("tile-1")).unwrap();
    assert_eq!((again.start, again.end, again.applied), (3, 4, false));
    // Other points under the key: refused, naming it and its range.
    let other = cells();
    match ds.append_points("pts", &other, Some("tile-1")) {
        Err(Error::KeyReused {
            element,
            key,
            start,
            end,
        }) => assert_eq!(
            (element.as_str(), key.as_str(), start, end),
            ("pts", "tile-1", 3, 4)
        ),
        other => panic!("expected KeyReused, got {other:?}"),
    }
    tree.assert_unchanged("points reused under a key");
    // No points: the key is recorded, no part is added; bad columns are still refused.
    let none = more.slice(0, 0);
    let empty = ds.append_points("pts", &none, Some("tile-2")).unwrap();
    assert_eq!((empty.start, empty.end, empty.applied), (4, 4, true));
    let parts = std::fs::read_dir(path.join("points/pts/points.parquet"))
        .unwrap()
        .count();
    assert_eq!(parts, 2, "an empty append added a part");
    assert!(matches!(
        ds.append_points("pts", &more, Some("tile-2")),
        Err(Error::KeyReused {
            start: 4,
            end: 4,
            ..
        })
    ));
    let wrong = batch(vec![("x", f64s(&[])), ("y", f64s(&[]))]);
    assert!(ds.append_points("pts", &wrong, Some("tile-3")).is_err());
    assert_eq!(ds.read_points("pts").unwrap().num_rows(), 4);
    assert!(ds.check(true).unwrap().is_ok());
}
