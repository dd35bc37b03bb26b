//! `add-points`, `append-points` and `add-shapes` through the real binary: reading
//! back through the library and spatialdata (Python), 8 concurrent appending
//! processes, and malformed inputs that leave the dataset unchanged.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use common::{
    assert_fails, cli, find, new_dataset, s, spatialdata_reads, strings, sz, sz_ok, write_file,
};
use serde_json::{Value, json};
use spatialzarr::element::shapes::{Shape, Shapes};
use spatialzarr::{Dataset, DatasetOptions};

fn open(ds: &Path) -> Dataset {
    Dataset::open(ds, DatasetOptions::default()).expect("open dataset")
}

fn floats(batch: &RecordBatch, name: &str) -> Vec<f64> {
    let column = batch.column_by_name(name).expect("column");
    column.as_primitive::<Float64Type>().values().to_vec()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let column = batch.column_by_name(name).expect("column");
    column.as_primitive::<Int64Type>().values().to_vec()
}

#[test]
fn points_and_shapes_from_csv_and_geojson_read_back_everywhere() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);

    // Points with a feature key whose values look like numbers: stored as strings.
    let first = write_file(
        d,
        "first.csv",
        "x,y,gene,count\n1.5,2.5,7,1\n3,4,ACTB,2\n5.25,-6,7,3\n",
    );
    let out = sz_ok(&[
        "add-points",
        s(&ds),
        "transcripts",
        "--csv",
        s(&first),
        "--feature-key",
        "gene",
    ]);
    assert!(
        out.starts_with("added points transcripts: 3 points (generation "),
        "{out}"
    );
    // An existing name needs --overwrite.
    let tree = common::TreeSnapshot::take(&ds);
    assert_fails(
        &sz(&["add-points", s(&ds), "transcripts", "--csv", s(&first)]),
        1,
        &["transcripts", "exists"],
    );
    tree.assert_unchanged("adding points under a taken name");

    // Appends: columns in another order, keyed and repeated, and unkeyed.
    let second = write_file(d, "second.csv", "gene,count,y,x\n8,4,1,2\nGAPDH,5,3,4\n");
    for attempt in 0..3 {
        let out = sz_ok(&[
            "append-points",
            s(&ds),
            "transcripts",
            "--csv",
            s(&second),
            "--key",
            "tile-1",
            "--json",
        ]);
        let mut outcome = serde_json::from_str::<Value>(&out).unwrap();
        assert!(outcome["generation"].is_u64(), "{outcome}");
        outcome.as_object_mut().unwrap().remove("generation");
        let expected = json!({"table": "transcripts", "start": 3, "stop": 5, "key": "tile-1",
            "applied": attempt == 0});
        assert_eq!(outcome, expected);
    }
    assert_eq!(
        sz_ok(&["append-points", s(&ds), "transcripts", "--csv", s(&second)]),
        format!(
            "appended points 5..7 to transcripts (generation {})\n",
            common::generation(&ds)
        )
    );
    let info: Value =
        serde_json::from_str(&sz_ok(&["info", s(&ds), "transcripts", "--json"])).unwrap();
    assert_eq!(info["type"], "points");
    assert_eq!(info["n"], 7);
    assert_eq!(info["columns"], json!(["x", "y", "gene", "count"]));

    let points = open(&ds).read_points("transcripts").unwrap();
    assert_eq!(floats(&points, "x"), [1.5, 3.0, 5.25, 2.0, 4.0, 2.0, 4.0]);
    assert_eq!(floats(&points, "y"), [2.5, 4.0, -6.0, 1.0, 3.0, 1.0, 3.0]);
    assert_eq!(
        strings(points.column_by_name("gene").expect("gene column")),
        ["7", "ACTB", "7", "8", "GAPDH", "8", "GAPDH"]
    );
    assert_eq!(ints(&points, "count"), [1, 2, 3, 4, 5, 4, 5]);

    // Circles from CSV (with an extra column) and polygons from GeoJSON.
    let circles = write_file(
        d,
        "circles.csv",
        "x,y,radius,kind\n10,20,1.5,a\n30,40,2,b\n",
    );
    let out = sz_ok(&["add-shapes", s(&ds), "spots", "--csv", s(&circles)]);
    assert!(
        out.starts_with("added shapes spots: 2 circles (generation "),
        "{out}"
    );
    let geojson = write_file(
        d,
        "cells.geojson",
        r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","properties":{},"geometry":{"type":"Polygon",
              "coordinates":[[[0,0],[4,0],[4,4],[0,4],[0,0]]]}},
            {"type":"Feature","properties":{},"geometry":{"type":"MultiPolygon",
              "coordinates":[[[[10,10],[12,10],[12,12],[10,10]]],
                             [[[20,20],[22,20],[22,22],[20,20]]]]}}]}"#,
    );
    sz_ok(&["add-shapes", s(&ds), "cells", "--geojson", s(&geojson)]);
    assert_eq!(
        sz_ok(&["info", s(&ds), "spots", "--json"]).trim_end(),
        r#"{"type":"shapes","n":2,"geometry":"circle","columns":["geometry","radius","kind"],"coordinate_systems":["global"]}"#
    );
    assert_eq!(
        sz_ok(&["info", s(&ds), "cells", "--json"]).trim_end(),
        r#"{"type":"shapes","n":2,"geometry":"mixed","columns":["geometry"],"coordinate_systems":["global"]}"#
    );
    // Replacing needs --overwrite, and then replaces.
    let tree = common::TreeSnapshot::take(&ds);
    assert_fails(
        &sz(&["add-shapes", s(&ds), "spots", "--geojson", s(&geojson)]),
        1,
        &["spots", "exists"],
    );
    tree.assert_unchanged("adding shapes under a taken name");
    sz_ok(&[
        "add-shapes",
        s(&ds),
        "spots",
        "--geojson",
        s(&geojson),
        "--overwrite",
    ]);
    sz_ok(&[
        "add-shapes",
        s(&ds),
        "spots",
        "--csv",
        s(&circles),
        "--overwrite",
    ]);

    let dataset = open(&ds);
    match dataset.read_shapes("spots").unwrap() {
        Shapes::Circles { x, y, radius } => {
            assert_eq!(
                (x, y, radius),
                (vec![10.0, 30.0], vec![20.0, 40.0], vec![1.5, 2.0])
            );
        }
        other => panic!("not circles: {other:?}"),
    }
    match dataset.read_shapes("cells").unwrap() {
        Shapes::Polygons(shapes) => {
            assert!(
                matches!(&shapes[0], Shape::Polygon(rings) if rings.len() == 1 && rings[0].len() == 5)
            );
            assert!(matches!(&shapes[1], Shape::MultiPolygon(ps) if ps.len() == 2));
        }
        other => panic!("not polygons: {other:?}"),
    }
    assert_eq!(
        sz_ok(&["ls", s(&ds), "--json"]).trim_end(),
        r#"{"images":[],"labels":[],"points":["transcripts"],"shapes":["cells","spots"],"tables":[]}"#
    );
    sz_ok(&["check", s(&ds), "--deep"]);

    // spatialdata sees the same elements and values.
    let seen = spatialdata_reads(&ds);
    let points = find(&seen["points"], "transcripts");
    assert_eq!(points["n"], 7, "{points}");
    assert_eq!(points["sum_x"], 1.5 + 3.0 + 5.25 + 2.0 + 4.0 + 2.0 + 4.0);
    assert_eq!(points["sum_y"], 2.5 + 4.0 - 6.0 + 1.0 + 3.0 + 1.0 + 3.0);
    let spots = find(&seen["shapes"], "spots");
    assert_eq!(spots["n"], 2, "{spots}");
    assert_eq!(spots["geometry_types"], json!(["Point"]));
    assert!(
        spots["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "radius"),
        "{spots}"
    );
    let cells = find(&seen["shapes"], "cells");
    assert_eq!(cells["geometry_types"], json!(["MultiPolygon", "Polygon"]));
}

/// Points worker `w`'s `i`-th append: 10 points whose x encodes (w, i, row).
fn batch_csv(w: usize, i: usize) -> String {
    let mut text = String::from("x,y,gene\n");
    for r in 0..10 {
        let serial = (w * 10 + i) * 10 + r;
        text.push_str(&format!("{serial},{},g{}\n", w as f64 + 0.5, r % 3));
    }
    text
}

/// The acceptance test: 8 processes x 10 `append-points` each (with keys, each
/// repeated once) into one points element.
#[test]
fn eight_concurrent_cli_point_appenders_lose_nothing() {
    const WORKERS: usize = 8;
    const APPENDS: usize = 10;
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    let seed = write_file(d, "seed.csv", "x,y,gene\n-1,-1,g0\n");
    sz_ok(&[
        "add-points",
        s(&ds),
        "pts",
        "--csv",
        s(&seed),
        "--feature-key",
        "gene",
    ]);
    for w in 0..WORKERS {
        for i in 0..APPENDS {
            write_file(d, &format!("w{w}_{i}.csv"), &batch_csv(w, i));
        }
    }
    // Each worker is a shell loop of CLI calls: its appends in order, each twice
    // (the second a retry that must change nothing).
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let script = format!(
                "for i in $(seq 0 {last}); do for attempt in 1 2; do \
                   \"$SZ\" append-points --lock-timeout 120 \"$DS\" pts \
                     --csv \"$DIR/w{w}_$i.csv\" --key \"w{w}-$i\" --json || exit 1; \
                 done; done",
                last = APPENDS - 1
            );
            Command::new("sh")
                .args(["-c", &script])
                .env("SZ", cli())
                .env("DS", &ds)
                .env("DIR", d)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    let mut ranges = Vec::new();
    for (w, child) in workers.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait worker");
        assert!(
            out.status.success(),
            "worker {w} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 2 * APPENDS);
        for pair in lines.chunks(2) {
            assert_eq!(pair[0]["applied"], true, "{pair:?}");
            assert_eq!(pair[1]["applied"], false, "{pair:?}");
            assert_eq!(
                (&pair[0]["start"], &pair[0]["stop"]),
                (&pair[1]["start"], &pair[1]["stop"])
            );
            let start = pair[0]["start"].as_u64().unwrap();
            assert_eq!(pair[0]["stop"].as_u64().unwrap(), start + 10);
            ranges.push((start, w, pair[0]["key"].as_str().unwrap().to_owned()));
        }
    }

    let total = 1 + WORKERS * APPENDS * 10;
    let info = open(&ds).info("pts").unwrap();
    let spatialzarr::ElementInfo::Points(info) = info else {
        panic!("not points: {info:?}")
    };
    assert_eq!(info.n, total as u64);
    assert_eq!(
        info.parts,
        1 + WORKERS * APPENDS,
        "one part per applied append"
    );

    // Every point exactly once, each append's points contiguous at its reported rows.
    let points = open(&ds).read_points("pts").unwrap();
    let x = floats(&points, "x");
    assert_eq!(x.len(), total);
    let distinct: BTreeSet<i64> = x.iter().map(|&v| v as i64).collect();
    assert_eq!(distinct.len(), total, "duplicate or lost points");
    ranges.sort();
    for (start, w, key) in &ranges {
        let i: usize = key.rsplit('-').next().unwrap().parse().unwrap();
        let expected: Vec<f64> = (0..10).map(|r| ((w * 10 + i) * 10 + r) as f64).collect();
        let start = *start as usize;
        assert_eq!(&x[start..start + 10], expected.as_slice(), "append {key}");
    }
    // One worker's appends keep their order.
    for w in 0..WORKERS {
        let mine: Vec<&(u64, usize, String)> = ranges.iter().filter(|r| r.1 == w).collect();
        let order: Vec<String> = mine.iter().map(|r| r.2.clone()).collect();
        let expected: Vec<String> = (0..APPENDS).map(|i| format!("w{w}-{i}")).collect();
        assert_eq!(order, expected);
    }
    sz_ok(&["check", s(&ds), "--deep"]);
    let seen = spatialdata_reads(&ds);
    assert_eq!(find(&seen["points"], "pts")["n"], total);
}

#[test]
fn malformed_inputs_are_refused_and_write_nothing() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    let good = write_file(d, "good.csv", "x,y,gene\n1,2,a\n3,4,b\n");
    sz_ok(&[
        "add-points",
        s(&ds),
        "pts",
        "--csv",
        s(&good),
        "--feature-key",
        "gene",
    ]);
    let before = common::TreeSnapshot::take(&ds);

    let no_x = write_file(d, "nox.csv", "y,gene\n2,a\n");
    let text_x = write_file(d, "textx.csv", "x,y\none,2\n");
    let gap_x = write_file(d, "gapx.csv", "x,y\n1,2\n,3\n");
    let ragged = write_file(d, "ragged.csv", "x,y\n1,2\n3\n");
    let header_only = write_file(d, "header.csv", "x,y\n");
    let empty = write_file(d, "empty.csv", "");
    let extra = write_file(d, "extra.csv", "x,y,gene,more\n1,2,a,3\n");
    let text_radius = write_file(d, "textradius.csv", "x,y,radius\n1,2,wide\n");
    let negative_radius = write_file(d, "negradius.csv", "x,y,radius\n1,2,-1\n");
    let no_radius = write_file(d, "noradius.csv", "x,y\n1,2\n");
    let unclosed = write_file(
        d,
        "unclosed.geojson",
        r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}"#,
    );
    let point_geometry = write_file(
        d,
        "point.geojson",
        r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]}}"#,
    );
    let broken_json = write_file(d, "broken.geojson", r#"{"type":"Polygon","#);
    let missing = d.join("missing.csv");
    let p = s(&ds);

    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            vec!["add-points", p, "new", "--csv", s(&no_x)],
            1,
            vec!["\"x\""],
        ),
        (
            vec!["add-points", p, "new", "--csv", s(&text_x)],
            1,
            vec!["\"x\"", "numeric"],
        ),
        (
            vec!["add-points", p, "new", "--csv", s(&gap_x)],
            1,
            vec!["\"x\"", "missing value in row 1"],
        ),
        (
            vec!["add-points", p, "new", "--csv", s(&ragged)],
            1,
            vec!["ragged.csv"],
        ),
        (
            vec!["add-points", p, "new", "--csv", s(&header_only)],
            1,
            vec!["no rows"],
        ),
        (
            vec!["add-points", p, "new", "--csv", s(&empty)],
            1,
            vec!["empty"],
        ),
        (
            vec!["add-points", p, "new", "--csv", s(&missing)],
            1,
            vec!["missing.csv"],
        ),
        (
            vec![
                "add-points",
                p,
                "new",
                "--csv",
                s(&good),
                "--feature-key",
                "cell",
            ],
            1,
            vec!["\"cell\"", "--feature-key"],
        ),
        (
            vec!["add-points", p, "../out", "--csv", s(&good)],
            1,
            vec!["../out"],
        ),
        (
            vec!["add-points", p, "pts", "--csv", s(&good)],
            1,
            vec!["pts", "overwrite"],
        ),
        (
            vec!["append-points", p, "pts", "--csv", s(&no_x)],
            1,
            vec!["\"x\""],
        ),
        (
            vec!["append-points", p, "pts", "--csv", s(&extra)],
            1,
            vec!["\"more\""],
        ),
        (
            vec!["append-points", p, "pts", "--csv", s(&text_x)],
            1,
            vec!["\"x\""],
        ),
        (
            vec!["append-points", p, "nope", "--csv", s(&good)],
            1,
            vec!["nope", "add-points"],
        ),
        (
            vec!["add-shapes", p, "c", "--csv", s(&text_radius)],
            1,
            vec!["\"radius\"", "numeric"],
        ),
        (
            vec!["add-shapes", p, "c", "--csv", s(&negative_radius)],
            1,
            vec!["radius"],
        ),
        (
            vec!["add-shapes", p, "c", "--csv", s(&no_radius)],
            1,
            vec!["\"radius\""],
        ),
        (
            vec!["add-shapes", p, "c", "--geojson", s(&unclosed)],
            1,
            vec!["unclosed.geojson", "closed"],
        ),
        (
            vec!["add-shapes", p, "c", "--geojson", s(&point_geometry)],
            1,
            vec!["Point"],
        ),
        (
            vec!["add-shapes", p, "c", "--geojson", s(&broken_json)],
            1,
            vec!["JSON"],
        ),
        (
            vec![
                "add-shapes",
                p,
                "c",
                "--csv",
                s(&good),
                "--geojson",
                s(&unclosed),
            ],
            2,
            vec!["--geojson"],
        ),
        (vec!["add-shapes", p, "c"], 2, vec!["--csv"]),
        (vec!["add-points", p, "new"], 2, vec!["--csv"]),
    ];
    for (args, code, words) in &cases {
        let out = sz(args);
        assert_fails(&out, *code, words);
        before.assert_unchanged(&format!("{args:?}"));
    }
    assert!(!d.join("out").exists());
    sz_ok(&["check", p]);
}
