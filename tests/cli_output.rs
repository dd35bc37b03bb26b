//! What the commands print: one line (or one JSON object with `--json`) for every
//! command that changes the dataset, `info`'s text and JSON holding the same facts
//! for every kind of element, options offered only where they mean something, and
//! negative numbers refused with a clear usage error.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{assert_fails, generation, new_dataset, s, sz, sz_ok, write_file};
use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};
use spatialzarr::{Dataset, DatasetOptions, RasterOptions, Transform, Transformations};

/// Runs a changing command: it must print exactly one line ending in the
/// dataset's generation; returns the line.
fn one_line(ds: &Path, args: &[&str]) -> String {
    let out = sz_ok(args);
    assert_eq!(out.lines().count(), 1, "{args:?} printed {out:?}");
    let suffix = format!(" (generation {})\n", generation(ds));
    assert!(out.ends_with(&suffix), "{args:?}: {out:?} lacks {suffix:?}");
    out
}

/// Runs a changing command with `--json`: exactly one JSON object whose
/// `generation` is the dataset's; returns it.
fn one_object(ds: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = sz_ok(&args);
    assert_eq!(out.lines().count(), 1, "{args:?} printed {out:?}");
    let value: Value = serde_json::from_str(&out).expect("one JSON object");
    assert!(value.is_object(), "{value}");
    assert_eq!(value["generation"], generation(ds), "{args:?}: {value}");
    value
}

fn npy(dir: &Path, file: &str, array: &ArrayD<u16>) -> String {
    let path = dir.join(file);
    ndarray_npy::write_npy(&path, array).unwrap();
    path.to_str().unwrap().to_owned()
}

const POLYGONS: &str = r#"{"type":"FeatureCollection","features":[
  {"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[4,0],[4,4],[0,0]]]}}]}"#;

#[test]
fn every_changing_command_prints_one_line_or_one_json_object() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = d.join("text.zarr");
    let jds = d.join("json.zarr");
    let image = npy(d, "img.npy", &ArrayD::from_elem(IxDyn(&[1, 4, 4]), 7));
    let labels = npy(d, "lab.npy", &ArrayD::from_elem(IxDyn(&[4, 4]), 1));
    let rows = s(&write_file(
        d,
        "rows.csv",
        "region,instance_id,area\nlab,1,3\n",
    ))
    .to_owned();
    let points = s(&write_file(d, "pts.csv", "x,y,gene\n1,2,a\n3,4,b\n")).to_owned();
    let more = s(&write_file(d, "more.csv", "x,y,gene\n5,6,a\n")).to_owned();
    let circles = s(&write_file(d, "circles.csv", "x,y,radius\n1,1,2\n")).to_owned();
    let polygons = s(&write_file(d, "polys.geojson", POLYGONS)).to_owned();

    // The same commands on two datasets, text and JSON.
    let lines = [
        (vec!["init"], "created dataset"),
        (
            vec!["add-image", "img", "--npy", &image, "--dims", "c,y,x"],
            "added image img: 1 x 4 x 4 uint16",
        ),
        (
            vec!["add-labels", "lab", "--npy", &labels],
            "added labels lab: 4 x 4 uint16",
        ),
        (
            vec!["append-rows", "cells", "--csv", &rows, "--key", "k"],
            "appended rows 0..1 to cells",
        ),
        (
            vec!["append-rows", "cells", "--csv", &rows, "--key", "k"],
            "key k already appended as rows 0..1 to cells; nothing changed",
        ),
        (
            vec![
                "add-points",
                "pts",
                "--csv",
                &points,
                "--feature-key",
                "gene",
            ],
            "added points pts: 2 points",
        ),
        (
            vec!["append-points", "pts", "--csv", &more, "--key", "p"],
            "appended points 2..3 to pts",
        ),
        (
            vec!["add-shapes", "circ", "--csv", &circles],
            "added shapes circ: 1 circle",
        ),
        (
            vec!["add-shapes", "poly", "--geojson", &polygons],
            "added shapes poly: 1 polygon",
        ),
        (vec!["rm", "img"], "removed image img"),
        (vec!["recover"], "recovered: no interrupted commit"),
    ];
    for (args, start) in &lines {
        let mut text = vec![args[0], s(&ds)];
        text.extend(&args[1..]);
        let line = one_line(&ds, &text);
        assert!(
            line.starts_with(start),
            "{line:?} does not start with {start:?}"
        );
    }

    let mut objects = Vec::new();
    for (args, _) in &lines {
        let mut with_json = vec![args[0], s(&jds)];
        with_json.extend(&args[1..]);
        objects.push(one_object(&jds, &with_json));
    }
    let without_generation = |mut v: Value| {
        v.as_object_mut().unwrap().remove("generation");
        v
    };
    let expected = [
        json!({"created": s(&jds)}),
        json!({"added": "img", "type": "image", "shape": [1, 4, 4], "dtype": "uint16"}),
        json!({"added": "lab", "type": "labels", "shape": [4, 4], "dtype": "uint16"}),
        json!({"table": "cells", "start": 0, "stop": 1, "key": "k", "applied": true}),
        json!({"table": "cells", "start": 0, "stop": 1, "key": "k", "applied": false}),
        json!({"added": "pts", "type": "points", "n": 2}),
        json!({"table": "pts", "start": 2, "stop": 3, "key": "p", "applied": true}),
        json!({"added": "circ", "type": "shapes", "n": 1, "geometry": "circle"}),
        json!({"added": "poly", "type": "shapes", "n": 1, "geometry": "polygon"}),
        json!({"removed": "img", "type": "image"}),
    ];
    for (object, expected) in objects.iter().zip(&expected) {
        assert_eq!(&without_generation(object.clone()), expected);
    }
    let recovered = &objects[10];
    assert_eq!(recovered["finished_commit"], Value::Null, "{recovered}");
    assert_eq!(recovered["removed_staging"], json!([]), "{recovered}");

    // The generations: every commit counted, the no-op append not.
    assert_eq!(objects[3]["generation"], objects[4]["generation"]);
    assert!(objects[9]["generation"].as_u64() > objects[8]["generation"].as_u64());

    // demo: one line, or one JSON object, naming the generation.
    let demo = d.join("demo.zarr");
    let args = [
        "demo",
        s(&demo),
        "--workers",
        "1",
        "--images",
        "2",
        "--size",
        "32",
    ];
    let line = one_line(&demo, &args);
    assert!(line.starts_with("segmented 2 images in "), "{line}");
    let summary = one_object(&demo, &args);
    assert_eq!(summary["segmented"], 0, "{summary}");
    assert_eq!(summary["labels"], 2, "{summary}");
}

/// `info`'s text as `label: value` pairs.
fn text_facts(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| {
            let (label, value) = line.split_once(": ").expect("label: value");
            (label.replace(' ', "_"), value.to_owned())
        })
        .collect()
}

/// A JSON value as `info` prints it in the text: list items joined by `separator`.
fn as_text(value: &Value, separator: &str) -> String {
    let item = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match value {
        Value::Array(items) => items.iter().map(item).collect::<Vec<_>>().join(separator),
        other => item(other),
    }
}

#[test]
fn info_json_carries_every_fact_of_the_text_for_every_kind() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    let dataset = Dataset::open(&ds, DatasetOptions::default()).unwrap();
    let mut systems = Transformations::default();
    systems
        .0
        .insert("aligned".into(), Transform::Scale(vec![2.0, 2.0]));
    let image = ArrayD::<u16>::zeros(IxDyn(&[2, 8, 8]));
    let options = RasterOptions {
        channel_names: Some(vec!["DAPI".into(), "GFP".into()]),
        transformations: systems,
        ..RasterOptions::default()
    };
    dataset.add_image("img", image.view(), &options).unwrap();
    let labels = ArrayD::<u32>::zeros(IxDyn(&[8, 8]));
    dataset
        .add_labels("lab", labels.view(), &RasterOptions::default())
        .unwrap();
    let points = write_file(d, "pts.csv", "x,y,gene,score\n1,2,a,0.5\n");
    let more = write_file(d, "more.csv", "x,y,gene,score\n3,4,b,1.5\n");
    let circles = write_file(d, "c.csv", "x,y,radius,kind\n1,1,2,big\n");
    let polygons = write_file(d, "p.geojson", POLYGONS);
    let rows = write_file(d, "rows.csv", "region,instance_id,area\nlab,1,3\n");
    sz_ok(&[
        "add-points",
        s(&ds),
        "pts",
        "--csv",
        s(&points),
        "--feature-key",
        "gene",
        "--instance-key",
        "score",
    ]);
    sz_ok(&["append-points", s(&ds), "pts", "--csv", s(&more)]);
    sz_ok(&["add-shapes", s(&ds), "circ", "--csv", s(&circles)]);
    sz_ok(&["add-shapes", s(&ds), "poly", "--geojson", s(&polygons)]);
    sz_ok(&["append-rows", s(&ds), "cells", "--csv", s(&rows)]);

    for name in ["img", "lab", "pts", "circ", "poly", "cells"] {
        let text = text_facts(&sz_ok(&["info", s(&ds), name]));
        let json: Value = serde_json::from_str(&sz_ok(&["info", s(&ds), name, "--json"])).unwrap();
        let json = json.as_object().unwrap();
        // Every line of the text is in the JSON, with the same value.
        for (label, value) in &text {
            let fact = json
                .get(label)
                .unwrap_or_else(|| panic!("{name}: {label:?} is not in the JSON {json:?}"));
            let separator = match label.as_str() {
                "shape" => " x ",
                "dims" => ",",
                _ => ", ",
            };
            assert_eq!(&as_text(fact, separator), value, "{name}: {label}");
        }
        // And the JSON says nothing the text leaves out, but absent values.
        for (key, value) in json {
            assert!(
                text.contains_key(key) || value.is_null(),
                "{name}: {key} = {value} is not in the text {text:?}"
            );
        }
        assert!(text.contains_key("type"), "{name}: {text:?}");
    }
    // The facts the text showed and the JSON used to drop.
    let info = |name| -> Value {
        serde_json::from_str(&sz_ok(&["info", s(&ds), name, "--json"])).unwrap()
    };
    assert_eq!(
        info("img")["coordinate_systems"],
        json!(["aligned", "global"])
    );
    assert_eq!(info("img")["channels"], json!(["DAPI", "GFP"]));
    assert_eq!(info("lab")["coordinate_systems"], json!(["global"]));
    assert_eq!(info("pts")["parts"], 2);
    assert_eq!(info("pts")["feature_key"], "gene");
    assert_eq!(info("pts")["instance_key"], "score");
    assert_eq!(
        info("circ")["columns"],
        json!(["geometry", "radius", "kind"])
    );
    assert_eq!(
        info("cells")["column_kinds"],
        json!(["categorical", "int64", "int64"])
    );
}

#[test]
fn options_are_offered_only_where_they_mean_something() {
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let drop = "--drop-consolidated-metadata";
    for args in [
        vec!["ls", s(&ds), drop],
        vec!["info", s(&ds), "x", drop],
        vec!["check", s(&ds), drop],
        // Recovery replays what a commit planned: the option would change nothing.
        vec!["recover", s(&ds), drop],
        vec!["lock", s(&ds), drop, "--", "true"],
        vec!["lock", s(&ds), "--lock-timeout", "1", "--", "true"],
        vec!["bench", "--lock-timeout", "1"],
        vec!["bench", drop],
    ] {
        assert_fails(&sz(&args), 2, &["unexpected argument"]);
    }
    for command in ["ls", "info", "check", "recover", "lock", "bench"] {
        let help = sz_ok(&[command, "--help"]);
        assert!(!help.contains(drop), "{command} --help offers {drop}");
    }
    let help = sz_ok(&["recover", "--help"]);
    assert!(
        help.contains("--lock-timeout") && help.contains("--json"),
        "{help}"
    );
    for command in [
        "init",
        "add-image",
        "add-labels",
        "rm",
        "append-rows",
        "add-points",
        "append-points",
        "add-shapes",
        "set-transformations",
        "apply",
        "demo",
    ] {
        let help = sz_ok(&[command, "--help"]);
        for option in [drop, "--lock-timeout", "--json"] {
            assert!(help.contains(option), "{command} --help lacks {option}");
        }
    }
}

#[test]
fn negative_numbers_are_clear_usage_errors() {
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let before = generation(&ds);
    for (args, words) in [
        (
            vec!["ls", s(&ds), "--lock-timeout", "-1"],
            vec!["'-1'", "--lock-timeout", ">= 0"],
        ),
        (
            vec!["rm", s(&ds), "x", "--lock-timeout", "-0.5"],
            vec!["'-0.5'", "--lock-timeout", ">= 0"],
        ),
        (
            vec!["lock", s(&ds), "--timeout", "-3", "--", "true"],
            vec!["'-3'", "--timeout", ">= 0"],
        ),
        (
            vec!["demo", s(&ds), "--workers", "-2"],
            vec!["'-2'", "--workers", "1..=256"],
        ),
        (
            vec!["demo", s(&ds), "--images", "-5"],
            vec!["'-5'", "--images", "1..=100000"],
        ),
        (
            vec!["demo", s(&ds), "--size", "-64"],
            vec!["'-64'", "--size", "16..=16384"],
        ),
        (
            vec!["demo", s(&ds), "--seed", "-1"],
            vec!["'-1'", "--seed", "negative"],
        ),
    ] {
        let out = sz(&args);
        assert_fails(&out, 2, &words);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("unexpected argument"), "{stderr}");
    }
    assert_eq!(generation(&ds), before);
}

/// A reader that goes away (`spatialzarr ls DS | head -1`) is no failure: no panic,
/// no message, exit status 0.
#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::process::{Command, Stdio};
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    for args in [
        vec!["ls", s(&ds), "--json"],
        vec!["check", s(&ds), "--json"],
        vec!["rm", s(&ds), "x"],
    ] {
        let mut child = Command::new(common::cli())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the command writes (it opens the dataset first).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if args[0] == "rm" {
            // A failure still says why, on stderr.
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        } else {
            assert!(out.status.success(), "{args:?}: {stderr}");
            assert!(stderr.is_empty(), "{args:?}: {stderr}");
        }
    }
}
