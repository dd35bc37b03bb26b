//! `spatialzarr apply` through the real binary: several operations in one commit,
//! refused plans changing no byte, concurrent `apply` processes, and processes
//! killed (SIGKILL) in the middle of an `apply`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{TreeSnapshot, assert_fails, cli, new_dataset, s, sz, sz_ok, write_file};
use ndarray::{Array2, Array3};
use ndarray_npy::write_npy;
use serde_json::{Value, json};
use spatialzarr::{Dataset, DatasetOptions, ElementInfo, Transform};

fn open(ds: &Path) -> Dataset {
    Dataset::open(ds, DatasetOptions::default()).expect("open dataset")
}

/// Writes the files of tile `tile` into `dir`: labels `{tile}.npy` (`side` x `side`,
/// u32), an image `{tile}_image.npy` (2 x side x side, u16), `{tile}.csv` with
/// `rows` rows for region `{tile}_labels` and `{tile}.x.npy` (rows x 2); and a plan
/// `{tile}.json` adding (or replacing: a retried plan replaces them with the same
/// pixels) the labels and the image and appending the rows under key `{tile}`.
fn tile_files(dir: &Path, tile: &str, side: usize, rows: usize) -> PathBuf {
    let labels = Array2::<u32>::from_shape_fn((side, side), |(y, x)| ((y / 4 + x / 4) % 7) as u32);
    write_npy(dir.join(format!("{tile}.npy")), &labels).unwrap();
    let image = Array3::<u16>::from_shape_fn((2, side, side), |(c, y, x)| (c + y + x) as u16);
    write_npy(dir.join(format!("{tile}_image.npy")), &image).unwrap();
    let mut csv = String::from("region,instance_id,area\n");
    for i in 0..rows {
        csv.push_str(&format!("{tile}_labels,{i},{}.5\n", i * 3));
    }
    write_file(dir, &format!("{tile}.csv"), &csv);
    let x = Array2::<f64>::from_shape_fn((rows, 2), |(r, c)| (r * 2 + c) as f64);
    write_npy(dir.join(format!("{tile}.x.npy")), &x).unwrap();
    let plan = json!({"ops": [
        {"op": "add-labels", "name": format!("{tile}_labels"), "npy": format!("{tile}.npy"), "dims": "y,x", "overwrite": true},
        {"op": "add-image", "name": tile, "npy": format!("{tile}_image.npy"), "dims": ["c", "y", "x"], "overwrite": true},
        {"op": "append-rows", "table": "cells", "csv": format!("{tile}.csv"), "x-npy": format!("{tile}.x.npy"), "key": tile},
    ]});
    write_file(dir, &format!("{tile}.json"), &plan.to_string())
}

/// How many rows of table `cells` belong to `region` (0 without the table).
fn rows_of(ds: &Dataset, region: &str) -> usize {
    let Ok(info) = ds.table_info("cells") else {
        return 0;
    };
    let batch = ds.read_rows("cells", 0..info.n_obs).unwrap();
    common::strings(batch.column_by_name("region").unwrap())
        .iter()
        .filter(|r| *r == region)
        .count()
}

/// Which parts of tile `tile` the dataset holds: (labels, image, rows).
fn tile_state(ds: &Dataset, tile: &str) -> (bool, bool, usize) {
    let list = ds.list().unwrap();
    (
        list.labels.contains(&format!("{tile}_labels")),
        list.images.contains(&tile.to_owned()),
        rows_of(ds, &format!("{tile}_labels")),
    )
}

#[test]
fn a_plan_commits_all_its_operations_together() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    let plans = d.join("plans");
    std::fs::create_dir(&plans).unwrap();
    let plan = tile_files(&plans, "t7", 16, 5);
    let out: Value = serde_json::from_str(&sz_ok(&["apply", s(&ds), s(&plan), "--json"])).unwrap();
    assert_eq!(
        out,
        json!({"generation": 1, "ops": [
            {"op": "add-labels", "name": "t7_labels", "kind": "labels", "outcome": "added"},
            {"op": "add-image", "name": "t7", "kind": "image", "outcome": "added"},
            {"op": "append-rows", "table": "cells", "start": 0, "stop": 5, "key": "t7", "applied": true},
        ]})
    );
    let dataset = open(&ds);
    assert_eq!(tile_state(&dataset, "t7"), (true, true, 5));
    assert_eq!(
        dataset.generation().unwrap(),
        1,
        "one commit for three operations"
    );

    // A second plan: replace, append again under the same key (a no-op), add
    // points and shapes, set transformations, remove. Relative paths are the plan
    // folder's, whatever the working directory.
    write_file(&plans, "spots.csv", "x,y,gene\n1.0,2.0,a\n3.0,4.0,b\n");
    write_file(&plans, "circles.csv", "x,y,radius\n1.0,1.0,0.5\n");
    write_file(
        &plans,
        "scale.json",
        r#"{"global": {"type": "scale", "scale": [0.5, 0.25]}}"#,
    );
    let second = write_file(
        &plans,
        "second.json",
        &json!({"ops": [
            {"op": "add-labels", "name": "t7_labels", "npy": "t7.npy", "overwrite": true},
            {"op": "append-rows", "table": "cells", "csv": "t7.csv", "x-npy": "t7.x.npy", "key": "t7"},
            {"op": "add-points", "name": "spots", "csv": "spots.csv", "feature-key": "gene"},
            {"op": "add-shapes", "name": "circles", "csv": "circles.csv"},
            {"op": "set-transformations", "name": "t7", "transformations": "scale.json"},
            {"op": "rm", "name": "t7_labels"},
            {"op": "add-labels", "name": "t7_labels", "npy": "t7.npy", "dims": "y,x", "overwrite": false},
        ]})
        .to_string(),
    );
    let out = Command::new(cli())
        .args(["apply", s(&ds), s(&second)])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    // What changed, then the generation, as every changing command prints it.
    assert_eq!(
        text,
        "applied 7 operations: replaced labels t7_labels; key t7 already appended as rows 0..5 to cells; nothing changed; added points spots; added shapes circles; set the transformations of t7; removed labels t7_labels; added labels t7_labels (generation 2)\n"
    );
    let dataset = open(&ds);
    assert_eq!(dataset.generation().unwrap(), 2);
    assert_eq!(tile_state(&dataset, "t7"), (true, true, 5));
    assert_eq!(dataset.read_points("spots").unwrap().num_rows(), 2);
    assert_eq!(dataset.read_shapes("circles").unwrap().len(), 1);
    let ElementInfo::Raster(image) = dataset.info("t7").unwrap() else {
        panic!("t7 is not a raster");
    };
    assert_eq!(
        image.transformations.0.get("global"),
        Some(&Transform::Scale(vec![0.5, 0.25]))
    );
    sz_ok(&["check", s(&ds), "--deep"]);
    // spatialdata reads what the plans committed.
    let seen = common::spatialdata_reads(&ds);
    common::find(&seen["labels"], "t7_labels");
    common::find(&seen["images"], "t7");
    common::find(&seen["points"], "spots");
    common::find(&seen["shapes"], "circles");
    assert_eq!(common::find(&seen["tables"], "cells")["n_obs"], 5);
}

#[test]
fn a_refused_plan_changes_nothing() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    let good = tile_files(d, "t1", 8, 3);
    sz_ok(&["apply", s(&ds), s(&good)]);
    tile_files(d, "t2", 8, 4);
    write_file(
        d,
        "bad_rows.csv",
        "region,instance_id,area\nt2_labels,1,big\n",
    );
    write_file(
        d,
        "other_rows.csv",
        "region,instance_id,area\nt1_labels,9,9.5\n",
    );
    write_file(d, "one_x.npy.txt", "");
    write_npy(d.join("one.x.npy"), &Array2::<f64>::zeros((1, 2))).unwrap();
    write_file(
        d,
        "bad_scale.json",
        r#"{"global": {"type": "scale", "scale": [1, 2, 3]}}"#,
    );
    // The first three operations of every plan below are good; the last is not.
    let good_ops = || {
        vec![
            json!({"op": "add-labels", "name": "t2_labels", "npy": "t2.npy"}),
            json!({"op": "add-image", "name": "t2", "npy": "t2_image.npy", "dims": "c,y,x"}),
            json!({"op": "append-rows", "table": "cells", "csv": "t2.csv", "x-npy": "t2.x.npy", "key": "t2"}),
        ]
    };
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"op": "rm", "name": "nothere"}),
            vec!["ops[3]", "nothere"],
        ),
        (
            json!({"op": "frobnicate", "name": "x"}),
            vec!["ops[3]", "frobnicate"],
        ),
        (
            json!({"op": "rm", "name": "t1", "force": true}),
            vec!["ops[3]", "\"force\""],
        ),
        (
            json!({"op": "add-labels", "name": "t3", "npy": "t2.npy", "overwrite": "yes"}),
            vec!["ops[3]", "\"overwrite\"", "true or false"],
        ),
        (
            json!({"op": "add-labels", "name": "t3", "npy": ["t2.npy"]}),
            vec!["ops[3]", "\"npy\"", "string"],
        ),
        (
            json!({"op": "add-labels", "name": "t3", "npy": "missing.npy"}),
            vec!["ops[3]", "\"npy\"", "missing.npy", "does not exist"],
        ),
        (
            json!({"op": "add-labels", "name": "t3"}),
            vec!["ops[3]", "--npy"],
        ),
        (
            json!({"op": "add-labels", "npy": "t2.npy"}),
            vec!["ops[3]", "\"name\""],
        ),
        (
            json!({"op": "add-labels", "name": "t1_labels", "npy": "t2.npy"}),
            vec!["ops[3]", "already exists"],
        ),
        (
            json!({"op": "add-labels", "name": "../up", "npy": "t2.npy"}),
            vec!["ops[3]", "invalid element name"],
        ),
        (
            json!({"op": "append-rows", "table": "cells", "csv": "bad_rows.csv", "x-npy": "one.x.npy"}),
            vec!["ops[3]", "\"area\""],
        ),
        (
            json!({"op": "append-rows", "table": "cells", "csv": "other_rows.csv", "x-npy": "one.x.npy", "key": "t1"}),
            vec!["ops[3]", "\"t1\"", "0..3"],
        ),
        (
            json!({"op": "set-transformations", "name": "t1", "transformations": "bad_scale.json"}),
            vec!["ops[3]", "3 values"],
        ),
        (
            json!({"op": "set-transformations", "name": "t2", "transformations": "bad_scale.json"}),
            vec!["ops[3]", "t2"],
        ),
        // The lock and the commit are the whole plan's: options of `apply`.
        (
            json!({"op": "rm", "name": "t1", "lock-timeout": "5"}),
            vec!["ops[3]", "\"lock-timeout\"", "spatialzarr apply"],
        ),
        (
            json!({"op": "add-labels", "name": "t3", "npy": "t2.npy", "drop-consolidated-metadata": true}),
            vec![
                "ops[3]",
                "\"drop-consolidated-metadata\"",
                "spatialzarr apply",
            ],
        ),
    ];
    let tree = TreeSnapshot::take(&ds);
    for (i, (last, words)) in cases.into_iter().enumerate() {
        let mut ops = good_ops();
        ops.push(last.clone());
        let plan = write_file(
            d,
            &format!("plan{i}.json"),
            &json!({ "ops": ops }).to_string(),
        );
        let out = sz(&["apply", s(&ds), s(&plan), "--json"]);
        let mut words = words;
        let name = format!("plan{i}.json");
        words.push(&name);
        assert_fails(&out, 1, &words);
        tree.assert_unchanged(&format!("the plan ending with {last}"));
    }
    // Malformed plans.
    for (text, word) in [
        ("not json", "not valid JSON"),
        ("[1, 2]", "{\"ops\""),
        ("{\"ops\": []}", "empty"),
        ("{\"ops\": [], \"more\": 1}", "\"more\""),
        ("{\"ops\": [3]}", "ops[0]"),
    ] {
        let plan = write_file(d, "malformed.json", text);
        assert_fails(&sz(&["apply", s(&ds), s(&plan)]), 1, &[word]);
        tree.assert_unchanged(&format!("the plan {text:?}"));
    }
    assert_fails(
        &sz(&["apply", s(&ds), s(&d.join("no_plan.json"))]),
        1,
        &["no_plan.json"],
    );
    tree.assert_unchanged("a missing plan");
    let dataset = open(&ds);
    assert_eq!(tile_state(&dataset, "t2"), (false, false, 0));
    assert_eq!(dataset.generation().unwrap(), 1);
    // The same plan without its bad operation goes through, with `apply`'s own
    // options (a negative timeout is a usage error that changes nothing).
    let plan = write_file(d, "good2.json", &json!({ "ops": good_ops() }).to_string());
    assert_fails(
        &sz(&["apply", s(&ds), s(&plan), "--lock-timeout", "-1"]),
        2,
        &["'-1'", "--lock-timeout", ">= 0"],
    );
    tree.assert_unchanged("apply with a negative lock timeout");
    sz_ok(&["apply", s(&ds), s(&plan), "--lock-timeout", "30"]);
    assert_eq!(tile_state(&open(&ds), "t2"), (true, true, 4));
}

/// `apply --drop-consolidated-metadata` drops zarr-python's consolidated metadata at
/// the plan's commit; without it the metadata stays.
#[test]
fn apply_drops_consolidated_metadata_when_asked() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = d.join("fixture.zarr");
    common::copy_tree(&common::fixture("v3"), &ds);
    let root_doc = || -> Value {
        serde_json::from_slice(&std::fs::read(ds.join("zarr.json")).unwrap()).unwrap()
    };
    assert!(root_doc().get("consolidated_metadata").is_some());
    tile_files(d, "t1", 8, 3);
    for (name, drop) in [("kept", false), ("after_drop", true)] {
        let op = json!({"op": "add-labels", "name": name, "npy": "t1.npy"});
        let plan = write_file(
            d,
            &format!("{name}.json"),
            &json!({ "ops": [op] }).to_string(),
        );
        let mut args = vec!["apply", s(&ds), s(&plan)];
        if drop {
            args.push("--drop-consolidated-metadata");
        }
        sz_ok(&args);
        assert_eq!(
            root_doc().get("consolidated_metadata").is_some(),
            !drop,
            "{}",
            root_doc()
        );
    }
    sz_ok(&["check", s(&ds)]);
}

#[test]
fn concurrent_apply_processes_lose_nothing() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    const TILES: usize = 8;
    let plans: Vec<PathBuf> = (0..TILES)
        .map(|t| tile_files(d, &format!("tile{t}"), 32, 10 + t))
        .collect();
    // Every plan twice at once (a retried job racing its first attempt), 16
    // processes appending to one table: the second attempt of a tile replaces its
    // labels and image with the same pixels and appends no row.
    let children: Vec<_> = plans
        .iter()
        .chain(&plans)
        .map(|plan| {
            Command::new(cli())
                .args(["apply", s(&ds), s(plan), "--json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = vec![0; TILES];
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ops = outcome["ops"].as_array().unwrap();
        let append = &ops[2];
        let tile: usize = append["key"].as_str().unwrap()["tile".len()..]
            .parse()
            .unwrap();
        if append["applied"] == json!(true) {
            applied[tile] += 1;
        }
    }
    assert_eq!(applied, vec![1; TILES], "each tile's rows appended once");
    let dataset = open(&ds);
    for t in 0..TILES {
        assert_eq!(
            tile_state(&dataset, &format!("tile{t}")),
            (true, true, 10 + t),
            "tile{t}"
        );
    }
    let n: usize = (0..TILES).map(|t| 10 + t).sum();
    assert_eq!(dataset.table_info("cells").unwrap().n_obs, n as u64);
    sz_ok(&["check", s(&ds), "--deep"]);
}

#[test]
fn apply_killed_at_any_moment_leaves_the_old_state_or_the_new() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    // The table exists, so the kills land in appends to it, not only in its creation.
    sz_ok(&["apply", s(&ds), s(&tile_files(d, "base", 16, 3))]);
    let kills: usize = std::env::var("SPATIALZARR_APPLY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let plans: Vec<PathBuf> = (0..kills)
        .map(|k| tile_files(d, &format!("k{k}"), 192, 1500))
        .collect();
    // One uninterrupted run of a plan like these, to spread the kills over its length.
    let started = std::time::Instant::now();
    sz_ok(&["apply", s(&ds), s(&tile_files(d, "timing", 192, 1500))]);
    let full = started.elapsed();
    let mut outcomes = [0usize; 2];
    for (k, plan) in plans.iter().enumerate() {
        let mut child = Command::new(cli())
            .args(["apply", s(&ds), s(plan)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Past the end too: the commit comes last, and some runs are slower.
        let delay = full.mul_f64(1.4 * (k as f64 + 0.5) / kills as f64);
        std::thread::sleep(delay);
        // SIGKILL; a child that already finished is not an error.
        let _ = child.kill();
        child.wait().unwrap();
        // The next reader finishes an interrupted commit (its journal) first.
        let dataset = open(&ds);
        let state = tile_state(&dataset, &format!("k{k}"));
        match state {
            (false, false, 0) => outcomes[0] += 1,
            (true, true, 1500) => outcomes[1] += 1,
            other => panic!("killed after {delay:?}: tile k{k} is half there: {other:?}"),
        }
        assert_eq!(tile_state(&dataset, "base"), (true, true, 3));
    }
    eprintln!(
        "{kills} apply processes killed: {} left the old state, {} the new",
        outcomes[0], outcomes[1]
    );
    sz_ok(&["recover", s(&ds)]);
    sz_ok(&["check", s(&ds), "--deep"]);
    // Every plan run again to its end: each tile once, whatever its first run did.
    for (k, plan) in plans.iter().enumerate() {
        sz_ok(&["apply", s(&ds), s(plan)]);
        assert_eq!(tile_state(&open(&ds), &format!("k{k}")), (true, true, 1500));
    }
    let n = 3 + 1500 * (kills + 1);
    assert_eq!(open(&ds).table_info("cells").unwrap().n_obs, n as u64);
    sz_ok(&["check", s(&ds), "--deep"]);
}

#[test]
fn set_transformations_alone_replaces_them_or_changes_nothing() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    sz_ok(&["apply", s(&ds), s(&tile_files(d, "t1", 8, 2))]);
    let file = write_file(
        d,
        "t.json",
        r#"{"global": {"type": "translation", "translation": [10, 20]}, "aligned": {"type": "identity"}}"#,
    );
    let out: Value = serde_json::from_str(&sz_ok(&[
        "set-transformations",
        s(&ds),
        "t1_labels",
        "--transformations",
        s(&file),
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        out,
        json!({"name": "t1_labels", "coordinate_systems": ["aligned", "global"], "generation": 2})
    );
    let ElementInfo::Raster(info) = open(&ds).info("t1_labels").unwrap() else {
        panic!("not a raster");
    };
    assert_eq!(
        info.transformations.0.get("global"),
        Some(&Transform::Translation(vec![10.0, 20.0]))
    );
    assert_eq!(
        info.transformations.0.get("aligned"),
        Some(&Transform::Identity)
    );

    let tree = TreeSnapshot::take(&ds);
    let bad = [
        ("[1]", "JSON object"),
        ("{}", "no coordinate system"),
        (r#"{"global": {"type": "scale"}}"#, "\"scale\""),
        (r#"{"global": {"type": "scale", "scale": [1]}}"#, "1 values"),
        (r#"{"global": 3}"#, "\"type\""),
    ];
    for (text, word) in bad {
        let file = write_file(d, "bad.json", text);
        let args = [
            "set-transformations",
            s(&ds),
            "t1_labels",
            "--transformations",
            s(&file),
        ];
        assert_fails(&sz(&args), 1, &[word]);
        tree.assert_unchanged(text);
    }
    let args = [
        "set-transformations",
        s(&ds),
        "cells",
        "--transformations",
        s(&file),
    ];
    assert_fails(&sz(&args), 1, &["cells", "table"]);
    let args = [
        "set-transformations",
        s(&ds),
        "nothere",
        "--transformations",
        s(&file),
    ];
    assert_fails(&sz(&args), 1, &["nothere"]);
    tree.assert_unchanged("set-transformations of a table or a missing element");
}
