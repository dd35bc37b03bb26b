//! Points and shapes through the dataset handle: add, append parts concurrently from
//! processes, exactly once, info, check, remove.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use spatialzarr::element::shapes::Shapes;
use spatialzarr::{Dataset, DatasetOptions, ElementInfo, Error};

fn points(worker: usize, part: usize, n: usize) -> RecordBatch {
    let base = (worker * 1000 + part * 10) as f64;
    RecordBatch::try_from_iter(vec![
        (
            "x",
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| base + i as f64),
            )) as ArrayRef,
        ),
        (
            "y",
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| base * 2.0 + i as f64),
            )) as ArrayRef,
        ),
        (
            "gene",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("g{}", (worker + i) % 4)),
            )) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn open(path: &Path) -> Dataset {
    Dataset::open(path, DatasetOptions::default()).unwrap()
}

#[test]
#[ignore = "worker process entry point, run by the other tests"]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    let ds = open(Path::new(&args[0]));
    match role.as_str() {
        "append-points" => {
            let worker: usize = args[1].parse().unwrap();
            for part in 0..10 {
                let key = format!("w{worker}-p{part}");
                ds.append_points("pts", &points(worker, part, 5), Some(&key))
                    .unwrap();
                // A retried task appends nothing twice.
                let again = ds
                    .append_points("pts", &points(worker, part, 5), Some(&key))
                    .unwrap();
                assert!(!again.applied);
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn eight_processes_append_points_parts() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = Dataset::create(&path, DatasetOptions::default()).unwrap();
    ds.add_points("pts", &points(99, 0, 3), Some("gene"), false)
        .unwrap();
    let workers = (0..8)
        .map(|w| {
            common::worker(
                "append-points",
                &[path.display().to_string(), w.to_string()],
            )
        })
        .collect();
    common::run_all(workers);
    let ElementInfo::Points(info) = ds.info("pts").unwrap() else {
        panic!("pts are points")
    };
    assert_eq!(info.parts, 81);
    assert_eq!(info.n, 3 + 8 * 10 * 5);
    assert_eq!(info.feature_key.as_deref(), Some("gene"));
    let all = ds.read_points("pts").unwrap();
    let x = all
        .column_by_name("x")
        .unwrap()
        .as_primitive::<Float64Type>();
    let mut xs: Vec<i64> = x.values().iter().map(|v| *v as i64).collect();
    xs.sort();
    let mut expected: Vec<i64> = (0..3).map(|i| 99_000 + i).collect();
    for w in 0..8 {
        for p in 0..10 {
            expected.extend((0..5).map(|i| (w * 1000 + p * 10 + i) as i64));
        }
    }
    expected.sort();
    assert_eq!(xs, expected, "every point exactly once");
    assert!(
        ds.check(true).unwrap().is_ok(),
        "{:?}",
        ds.check(true).unwrap()
    );
}

#[test]
fn shapes_add_info_and_overwrite() {
    let dir = common::tempdir();
    let ds = Dataset::create(&dir.path().join("sd.zarr"), DatasetOptions::default()).unwrap();
    let circles = Shapes::Circles {
        x: vec![1.0, 10.0],
        y: vec![1.0, 10.0],
        radius: vec![1.0, 2.0],
    };
    ds.add_shapes("cells", &circles, None, false).unwrap();
    let ElementInfo::Shapes(info) = ds.info("cells").unwrap() else {
        panic!("cells are shapes")
    };
    assert_eq!((info.n, info.geometry.as_str()), (2, "circle"));
    let geojson = r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[4,0],[4,4],[0,4],[0,0]]]}}]}"#;
    let polygons = spatialzarr::element::shapes::parse_geojson(geojson).unwrap();
    assert!(matches!(
        ds.add_shapes("cells", &polygons, None, false),
        Err(Error::NameTaken { .. })
    ));
    ds.add_shapes("cells", &polygons, None, true).unwrap();
    let ElementInfo::Shapes(info) = ds.info("cells").unwrap() else {
        panic!("cells are shapes")
    };
    assert_eq!((info.n, info.geometry.as_str()), (1, "polygon"));
    assert_eq!(ds.read_shapes("cells").unwrap(), polygons);
    let unclosed = r#"{"type":"Polygon","coordinates":[[[0,0],[4,0],[4,4],[0,4]]]}"#;
    assert!(spatialzarr::element::shapes::parse_geojson(unclosed).is_err());
    assert!(ds.check(true).unwrap().is_ok());
    ds.remove("cells").unwrap();
    assert!(ds.list().unwrap().is_empty());
}

#[test]
fn bad_points_change_nothing() {
    let dir = common::tempdir();
    let ds = Dataset::create(&dir.path().join("sd.zarr"), DatasetOptions::default()).unwrap();
    ds.add_points("pts", &points(0, 0, 4), Some("gene"), false)
        .unwrap();
    let generation = ds.generation().unwrap();
    let no_y = points(0, 1, 4).project(&[0, 2]).unwrap();
    assert!(ds.append_points("pts", &no_y, None).is_err());
    assert!(ds.add_points("other", &no_y, None, false).is_err());
    assert!(matches!(
        ds.append_points("absent", &points(0, 1, 4), None),
        Err(Error::NoSuchElement { .. })
    ));
    assert_eq!(ds.generation().unwrap(), generation);
    assert_eq!(ds.list().unwrap().points, vec!["pts"]);
    let staging = dir.path().join("sd.zarr/.spatialzarr/staging");
    assert_eq!(
        std::fs::read_dir(staging).map(|d| d.count()).unwrap_or(0),
        0
    );
}
