//! The dataset commands (`init`, `add-image`, `add-labels`, `rm`, `ls`, `info`,
//! `check`) through the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_fails, cli, new_dataset, s, sz, sz_ok};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::write_npy;
use spatialzarr::{Dataset, DatasetOptions};

/// A `height` x `width` labels array whose values encode `seed`.
fn labels(seed: u32, height: usize, width: usize) -> ArrayD<u32> {
    ArrayD::from_shape_fn(IxDyn(&[height, width]), |i| {
        seed * 100_000 + (i[0] * width + i[1]) as u32
    })
}

/// Writes `array` to `dir/file` and returns the path.
fn npy_file<T: ndarray_npy::WritableElement>(dir: &Path, file: &str, array: &ArrayD<T>) -> PathBuf {
    let path = dir.join(file);
    write_npy(&path, array).expect("write npy");
    path
}

fn open(ds: &Path) -> Dataset {
    Dataset::open(ds, DatasetOptions::default()).expect("open dataset")
}

#[test]
fn init_add_ls_info_check_rm() {
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let empty = r#"{"images":[],"labels":[],"points":[],"shapes":[],"tables":[]}"#;
    assert_eq!(sz_ok(&["ls", s(&ds), "--json"]).trim_end(), empty);
    assert_eq!(sz_ok(&["ls", s(&ds)]), "");

    let cells = labels(7, 5, 6);
    let file = npy_file(dir.path(), "cells.npy", &cells);
    assert_eq!(
        sz_ok(&["add-labels", s(&ds), "cells", "--npy", s(&file)]),
        format!(
            "added labels cells: 5 x 6 uint32 (generation {})\n",
            open(&ds).generation().unwrap()
        )
    );
    assert_eq!(
        sz_ok(&["ls", s(&ds), "--json"]).trim_end(),
        r#"{"images":[],"labels":["cells"],"points":[],"shapes":[],"tables":[]}"#
    );
    assert_eq!(sz_ok(&["ls", s(&ds)]), "labels\tcells\n");
    assert_eq!(
        sz_ok(&["info", s(&ds), "cells", "--json"]).trim_end(),
        r#"{"type":"labels","shape":[5,6],"dtype":"uint32","dims":["y","x"],"levels":1,"channels":null,"coordinate_systems":["global"]}"#
    );
    let text = sz_ok(&["info", s(&ds), "cells"]);
    for line in ["type: labels", "dtype: uint32", "dims: y,x", "levels: 1"] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }
    assert_eq!(open(&ds).read_raster::<u32>("cells", 0).unwrap(), cells);

    // An image with explicit dims, under the --lock-timeout option.
    let rgb =
        ArrayD::<u8>::from_shape_fn(IxDyn(&[3, 4, 5]), |i| (i[0] * 20 + i[1] * 5 + i[2]) as u8);
    let file = npy_file(dir.path(), "rgb.npy", &rgb);
    sz_ok(&[
        "add-image",
        s(&ds),
        "rgb",
        "--lock-timeout",
        "30",
        "--npy",
        s(&file),
        "--dims",
        "c,y,x",
    ]);
    assert_eq!(
        sz_ok(&["info", s(&ds), "rgb", "--json"]).trim_end(),
        r#"{"type":"image","shape":[3,4,5],"dtype":"uint8","dims":["c","y","x"],"levels":1,"channels":null,"coordinate_systems":["global"]}"#
    );
    assert_eq!(sz_ok(&["ls", s(&ds)]), "image\trgb\nlabels\tcells\n");
    assert_eq!(open(&ds).read_raster::<u8>("rgb", 0).unwrap(), rgb);

    assert_eq!(sz_ok(&["check", s(&ds)]), "");
    let report: serde_json::Value =
        serde_json::from_str(&sz_ok(&["check", s(&ds), "--json"])).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["elements_checked"], 2);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["generation"], open(&ds).generation().unwrap());

    let removed = sz_ok(&["rm", s(&ds), "cells"]);
    assert_eq!(
        removed,
        format!(
            "removed labels cells (generation {})\n",
            open(&ds).generation().unwrap()
        )
    );
    let removed: serde_json::Value =
        serde_json::from_str(&sz_ok(&["rm", s(&ds), "rgb", "--json"])).unwrap();
    assert_eq!(
        removed,
        serde_json::json!({"removed": "rgb", "type": "image",
            "generation": open(&ds).generation().unwrap()})
    );
    assert_eq!(sz_ok(&["ls", s(&ds), "--json"]).trim_end(), empty);
    assert_eq!(sz_ok(&["ls", s(&ds)]), "");
    sz_ok(&["check", s(&ds)]);
}

#[test]
fn check_reports_problems_and_exits_1() {
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let file = npy_file(dir.path(), "a.npy", &labels(1, 4, 4));
    sz_ok(&["add-labels", s(&ds), "broken", "--npy", s(&file)]);
    std::fs::remove_file(ds.join("labels/broken/s0/zarr.json")).unwrap();

    let out = sz(&["check", s(&ds)]);
    // The report goes to stdout, the verdict to stderr as one line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("spatialzarr: ")
            && stderr.contains("inconsistent")
            && stderr.contains("1 problem"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("broken"), "{stdout}");

    let out = sz(&["check", s(&ds), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["elements_checked"], 1);
    assert_eq!(report["problems"].as_array().unwrap().len(), 1);
}

/// The acceptance test: 16 processes add 8 labels each, concurrently, through the CLI.
#[test]
fn sixteen_concurrent_cli_writers_lose_nothing() {
    const WORKERS: u32 = 16;
    const EACH: u32 = 8;
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let name = |w: u32, i: u32| format!("w{w:02}_{i}");
    let array = |w: u32, i: u32| labels(w * EACH + i + 1, 64, 64);
    for w in 0..WORKERS {
        for i in 0..EACH {
            npy_file(dir.path(), &format!("{}.npy", name(w, i)), &array(w, i));
        }
    }
    // Each worker is one shell running its 8 commands one after the other; the 16
    // shells run at the same time.
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let script: Vec<String> = (0..EACH)
                .map(|i| {
                    format!(
                        "'{}' add-labels --lock-timeout 120 '{}' {} --npy '{}'",
                        s(&cli()),
                        s(&ds),
                        name(w, i),
                        s(&dir.path().join(format!("{}.npy", name(w, i))))
                    )
                })
                .collect();
            Command::new("sh")
                .args(["-c", &script.join(" && ")])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sh")
        })
        .collect();
    for (w, child) in workers.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker {w} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut expected: Vec<String> = (0..WORKERS)
        .flat_map(|w| (0..EACH).map(move |i| name(w, i)))
        .collect();
    expected.sort();
    let listed: serde_json::Value =
        serde_json::from_str(&sz_ok(&["ls", s(&ds), "--json"])).unwrap();
    assert_eq!(listed["labels"], serde_json::json!(expected));
    for kind in ["images", "points", "shapes", "tables"] {
        assert_eq!(listed[kind], serde_json::json!([]), "{kind}");
    }
    sz_ok(&["check", s(&ds)]);
    let dataset = open(&ds);
    for w in 0..WORKERS {
        for i in 0..EACH {
            let read = dataset.read_raster::<u32>(&name(w, i), 0).unwrap();
            assert_eq!(read, array(w, i), "pixels of {}", name(w, i));
        }
    }
}

#[test]
fn bad_inputs_change_nothing() {
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let good = npy_file(dir.path(), "good.npy", &labels(1, 8, 8));
    sz_ok(&["add-labels", s(&ds), "taken", "--npy", s(&good)]);
    let listing = sz_ok(&["ls", s(&ds), "--json"]);
    let generation = open(&ds).generation().unwrap();

    let junk = dir.path().join("junk.npy");
    std::fs::write(&junk, b"this is not a numpy file at all").unwrap();
    let truncated = dir.path().join("truncated.npy");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let boolean = npy_file(
        dir.path(),
        "bool.npy",
        &ArrayD::<bool>::from_elem(IxDyn(&[4, 4]), true),
    );
    let big_endian = dir.path().join("big.npy");
    let mut swapped = bytes.clone();
    let at = swapped.windows(3).position(|w| w == b"<u4").unwrap();
    swapped[at] = b'>';
    std::fs::write(&big_endian, swapped).unwrap();
    let float = npy_file(
        dir.path(),
        "float.npy",
        &ArrayD::<f32>::zeros(IxDyn(&[4, 4])),
    );
    let missing = dir.path().join("missing.npy");
    let no_dataset = dir.path().join("no_dataset.zarr");

    // Every refused command must leave every file as it was (same bytes, same inode).
    let tree = common::TreeSnapshot::take(&ds);
    let sz = |args: &[&str]| -> Output {
        let out = sz(args);
        tree.assert_unchanged(&format!("{args:?}"));
        out
    };
    let add = |name: &str, file: &Path| sz(&["add-labels", s(&ds), name, "--npy", s(file)]);
    let cases: Vec<(Output, Vec<&str>)> = vec![
        (add("a", &junk), vec!["junk.npy", "not a valid .npy"]),
        (add("a", &truncated), vec!["truncated.npy", "truncated"]),
        (add("a", &boolean), vec!["bool.npy", "bool"]),
        (add("a", &big_endian), vec!["big.npy", "big-endian"]),
        (add("a", &missing), vec!["missing.npy", "No such file"]),
        (add("a", &float), vec!["integer type", "float32"]),
        (add("../x", &good), vec!["invalid element name", "../x"]),
        (add("__x", &good), vec!["invalid element name", "__"]),
        (add("taken", &good), vec!["\"taken\"", "already exists"]),
        (add("TAKEN", &good), vec!["\"taken\"", "already exists"]),
        (
            sz(&["add-image", s(&ds), "a", "--npy", s(&good), "--dims", "x,y"]),
            vec!["dims", "not allowed"],
        ),
        (
            sz(&["add-labels", s(&no_dataset), "a", "--npy", s(&good)]),
            vec!["no_dataset.zarr", "not a SpatialData dataset"],
        ),
        (sz(&["rm", s(&ds), "absent"]), vec!["\"absent\""]),
        (sz(&["info", s(&ds), "absent"]), vec!["\"absent\""]),
        (sz(&["init", s(&ds)]), vec!["already exists"]),
        (sz(&["ls", s(&no_dataset)]), vec!["no_dataset.zarr"]),
    ];
    for (out, words) in &cases {
        assert_fails(out, 1, words);
    }
    assert!(!no_dataset.exists(), "a missing dataset was created");
    assert_eq!(sz_ok(&["ls", s(&ds), "--json"]), listing);
    assert_eq!(open(&ds).generation().unwrap(), generation);
    sz_ok(&["check", s(&ds)]);

    // Usage errors: exit status 2, one line naming what was wrong and where the
    // command's help is.
    for (args, words) in [
        (
            vec!["add-labels", s(&ds), "a"],
            vec!["--npy", "add-labels --help"],
        ),
        (
            vec!["add-labels", s(&ds)],
            vec!["<NAME>", "add-labels --help"],
        ),
        (vec!["add-image", s(&ds), "a", "--npy"], vec!["--npy"]),
        (vec!["ls"], vec!["<DATASET>", "ls --help"]),
        (vec!["ls", s(&ds), "--jsn"], vec!["--jsn", "--json"]),
        (vec!["ls", s(&ds), "--lock-timeout", "soon"], vec!["soon"]),
        (vec!["info", s(&ds), "a", "b"], vec!["'b'"]),
        (vec!["frobnicate"], vec!["frobnicate", "spatialzarr --help"]),
        (vec![], vec!["no command", "spatialzarr --help"]),
    ] {
        assert_fails(&sz(&args), 2, &words);
    }
    assert_eq!(open(&ds).generation().unwrap(), generation);
}

/// A dataset spatialdata wrote: a refused `add-labels` or `add-image` (pixels of a
/// type or shape the element cannot hold) leaves every file as it was, the hidden
/// folder included (opening it once made only its lock files).
#[test]
fn bad_pixels_change_nothing_in_a_spatialdata_dataset() {
    let dir = common::tempdir();
    let ds = dir.path().join("sd.zarr");
    common::copy_tree(&common::fixture("v3"), &ds);
    sz_ok(&["ls", s(&ds)]);
    let float = npy_file(
        dir.path(),
        "float.npy",
        &ArrayD::<f32>::zeros(IxDyn(&[4, 4])),
    );
    let flat = npy_file(dir.path(), "flat.npy", &ArrayD::<u8>::zeros(IxDyn(&[16])));
    let tree = common::TreeSnapshot::take(&ds);
    for (args, words) in [
        (
            vec!["add-labels", s(&ds), "x", "--npy", s(&float)],
            vec!["integer type", "float32"],
        ),
        (
            vec!["add-image", s(&ds), "x", "--npy", s(&flat)],
            vec!["dimension"],
        ),
    ] {
        assert_fails(&sz(&args), 1, &words);
        tree.assert_unchanged(&format!("{args:?}"));
    }
    assert!(!ds.join(".spatialzarr/staging").exists());
}

#[test]
fn overwrite_replaces_the_pixels() {
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let first = labels(1, 6, 6);
    let second = labels(2, 3, 9);
    let first_file = npy_file(dir.path(), "first.npy", &first);
    let second_file = npy_file(dir.path(), "second.npy", &second);
    sz_ok(&["add-labels", s(&ds), "seg", "--npy", s(&first_file)]);
    let tree = common::TreeSnapshot::take(&ds);
    assert_fails(
        &sz(&["add-labels", s(&ds), "seg", "--npy", s(&second_file)]),
        1,
        &["already exists"],
    );
    tree.assert_unchanged("adding a taken name");
    assert_eq!(open(&ds).read_raster::<u32>("seg", 0).unwrap(), first);

    sz_ok(&[
        "add-labels",
        s(&ds),
        "seg",
        "--npy",
        s(&second_file),
        "--overwrite",
    ]);
    assert_eq!(open(&ds).read_raster::<u32>("seg", 0).unwrap(), second);
    assert_eq!(
        sz_ok(&["info", s(&ds), "seg", "--json"]).trim_end(),
        r#"{"type":"labels","shape":[3,9],"dtype":"uint32","dims":["y","x"],"levels":1,"channels":null,"coordinate_systems":["global"]}"#
    );
    // Overwriting with another pixel type works too.
    let small = ArrayD::<u16>::from_shape_fn(IxDyn(&[2, 2]), |i| (i[0] * 2 + i[1]) as u16);
    let small_file = npy_file(dir.path(), "small.npy", &small);
    sz_ok(&[
        "add-labels",
        s(&ds),
        "seg",
        "--npy",
        s(&small_file),
        "--overwrite",
    ]);
    assert_eq!(open(&ds).read_raster::<u16>("seg", 0).unwrap(), small);
    // --overwrite does not turn labels into an image.
    let tree = common::TreeSnapshot::take(&ds);
    assert_fails(
        &sz(&[
            "add-image",
            s(&ds),
            "seg",
            "--npy",
            s(&small_file),
            "--overwrite",
        ]),
        1,
        &["already exists"],
    );
    tree.assert_unchanged("overwriting labels with an image");
    assert_eq!(sz_ok(&["ls", s(&ds)]), "labels\tseg\n");
    sz_ok(&["check", s(&ds)]);
}

#[test]
fn recover_reports_and_removes_leftovers() {
    let dir = common::tempdir();
    let ds = dir.path().join("r.zarr");
    let init = Command::new(cli()).arg("init").arg(&ds).output().unwrap();
    assert!(init.status.success());
    std::fs::write(ds.join(".sz-tmp-left-by-a-crash"), b"x").unwrap();
    let out = Command::new(cli())
        .arg("recover")
        .arg(&ds)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["removed_temp_files"].as_array().unwrap().len(), 1);
    assert_eq!(report["finished_commit"], serde_json::Value::Null);
    assert!(!ds.join(".sz-tmp-left-by-a-crash").exists());
}

/// `check` warns about what interrupted writers left (an interrupted commit, the
/// staging folder of a writer that is gone), naming `recover`, and still exits 0;
/// after `recover`, no warning is left.
#[test]
fn check_warns_about_leftovers_that_recover_removes() {
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let file = npy_file(dir.path(), "cells.npy", &labels(1, 4, 4));
    sz_ok(&["add-labels", s(&ds), "cells", "--npy", s(&file)]);
    assert_eq!(sz_ok(&["check", s(&ds)]), "");

    // A writer killed while staging: its folder, its owner file unlocked.
    let staged = ds.join(".spatialzarr/staging/4242-1-1");
    std::fs::create_dir_all(staged.join("element")).unwrap();
    std::fs::write(staged.join("owner"), "").unwrap();
    // A commit interrupted after its journal was written (nothing applied yet).
    let next = open(&ds).generation().unwrap() + 1;
    let journal = format!(r#"{{"version":2,"generation":{next},"steps":[],"cleanup":[]}}"#);
    std::fs::write(ds.join(".spatialzarr/journal.json"), journal).unwrap();

    let text = sz_ok(&["check", s(&ds)]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!(
            "warning: an interrupted commit (generation {next})"
        )) && lines[0].contains("spatialzarr recover"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("warning: abandoned staging folder .spatialzarr/staging/4242-1-1")
            && lines[1].contains("spatialzarr recover"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&sz_ok(&["check", s(&ds), "--json"])).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["warnings"].as_array().unwrap().len(), 2, "{report}");
    // The check itself changed nothing.
    assert!(staged.exists() && ds.join(".spatialzarr/journal.json").exists());

    let recovered: serde_json::Value =
        serde_json::from_str(&sz_ok(&["recover", s(&ds), "--json"])).unwrap();
    assert_eq!(recovered["finished_commit"], next, "{recovered}");
    assert_eq!(recovered["removed_staging"].as_array().unwrap().len(), 1);
    assert_eq!(sz_ok(&["check", s(&ds)]), "");
    let report: serde_json::Value =
        serde_json::from_str(&sz_ok(&["check", s(&ds), "--json"])).unwrap();
    assert_eq!(report["warnings"], serde_json::json!([]));
}

/// `rm` removes an element whose metadata is broken, and says what it removed.
#[test]
fn rm_removes_a_broken_element() {
    let dir = common::tempdir();
    let ds = new_dataset(dir.path());
    let file = npy_file(dir.path(), "cells.npy", &labels(1, 4, 4));
    sz_ok(&["add-labels", s(&ds), "cells", "--npy", s(&file)]);
    std::fs::write(ds.join("labels/cells/zarr.json"), "{ not json").unwrap();
    assert_eq!(
        sz_ok(&["rm", s(&ds), "cells"]),
        format!(
            "removed labels cells (generation {})\n",
            open(&ds).generation().unwrap()
        )
    );
    assert!(open(&ds).list().unwrap().labels.is_empty());
}
