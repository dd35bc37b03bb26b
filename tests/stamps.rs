//! Group stamps: calls look at a group folder only when something other than the
//! store changed it, and elements written or removed by other tools are still found
//! (at once by listing the changed group; committed by `spatialzarr lock`'s release).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, IxDyn};
use spatialzarr::storage::trace::{FsObserver, FsOp, ReadOp, set_observer};
use spatialzarr::{Dataset, DatasetOptions, RasterOptions};

/// Records the folders listed inside one dataset.
struct Listings {
    root: std::path::PathBuf,
    listed: Mutex<Vec<String>>,
}

impl FsObserver for Listings {
    fn before(&self, _op: &FsOp) -> std::io::Result<()> {
        Ok(())
    }

    fn read(&self, op: &ReadOp) {
        if let ReadOp::ReadDir(path) = op
            && let Ok(relative) = path.strip_prefix(&self.root)
        {
            let relative = relative.to_string_lossy().into_owned();
            self.listed.lock().unwrap().push(relative);
        }
    }
}

/// The folders `call` lists inside `root`.
fn listed_by(root: &Path, call: impl FnOnce()) -> Vec<String> {
    let observer = Arc::new(Listings {
        root: root.to_path_buf(),
        listed: Mutex::default(),
    });
    set_observer(Some(observer.clone()));
    call();
    set_observer(None);
    observer.listed.lock().unwrap().clone()
}

fn labels() -> ArrayD<u32> {
    ArrayD::from_elem(IxDyn(&[8, 8]), 3)
}

/// The labels the committed index records (`.spatialzarr/index`).
fn manifest_labels(ds: &Dataset) -> Vec<String> {
    let hidden = ds.root().join(".spatialzarr");
    spatialzarr::commit::index::read_all(&hidden)
        .unwrap()
        .into_iter()
        .filter(|(_, kind)| *kind == spatialzarr::ElementKind::Labels)
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn unchanged_groups_are_not_listed_and_changed_ones_are() {
    let dir = common::tempdir();
    let root = dir.path().join("ds.zarr");
    let ds = Dataset::create(&root, DatasetOptions::default()).unwrap();
    ds.add_labels("a", labels().view(), &RasterOptions::default())
        .unwrap();

    // As the last commit left it: no group folder is listed.
    let mut list = None;
    let listed = listed_by(&root, || list = Some(ds.list().unwrap()));
    assert_eq!(list.take().unwrap().labels, ["a"]);
    assert!(!listed.iter().any(|p| p == "labels"), "listed {listed:?}");

    // Another tool adds an element: the labels group is listed, and the element found.
    common::copy_tree(&root.join("labels/a"), &root.join("labels/b"));
    let listed = listed_by(&root, || list = Some(ds.list().unwrap()));
    assert_eq!(list.take().unwrap().labels, ["a", "b"]);
    assert!(listed.iter().any(|p| p == "labels"), "listed {listed:?}");

    // The next commit records it, and the stamps again.
    ds.add_labels("c", labels().view(), &RasterOptions::default())
        .unwrap();
    assert_eq!(manifest_labels(&ds), ["a", "b", "c"]);
    let listed = listed_by(&root, || list = Some(ds.list().unwrap()));
    assert!(!listed.iter().any(|p| p == "labels"), "listed {listed:?}");

    // Another tool removes one: it is gone at once.
    std::fs::remove_dir_all(root.join("labels/b")).unwrap();
    assert_eq!(ds.list().unwrap().labels, ["a", "c"]);
    assert!(ds.info("b").is_err());

    // A commit that changes no entry of a group folder (new transformations of a
    // labels element) records no stamps: it keeps the generation of the last ones,
    // which stay true, so nothing is listed; what another tool adds afterwards is
    // still found.
    ds.add_labels("e", labels().view(), &RasterOptions::default())
        .unwrap();
    let stamped = ds.generation().unwrap();
    let stamps_file = root.join(".spatialzarr/groups.json");
    let recorded = std::fs::read(&stamps_file).unwrap();
    let scale = spatialzarr::Transformations(
        [(
            "global".to_owned(),
            spatialzarr::Transform::Scale(vec![2.0, 2.0]),
        )]
        .into(),
    );
    ds.set_transformations("a", &scale).unwrap();
    let manifest = ds.manifest().unwrap().unwrap();
    assert_eq!(manifest.generation, stamped + 1);
    assert_eq!(manifest.stamps_of, Some(stamped));
    assert_eq!(std::fs::read(&stamps_file).unwrap(), recorded);
    let listed = listed_by(&root, || list = Some(ds.list().unwrap()));
    assert_eq!(list.take().unwrap().labels, ["a", "c", "e"]);
    assert!(!listed.iter().any(|p| p == "labels"), "listed {listed:?}");
    common::copy_tree(&root.join("labels/a"), &root.join("labels/d"));
    let listed = listed_by(&root, || list = Some(ds.list().unwrap()));
    assert_eq!(list.take().unwrap().labels, ["a", "c", "d", "e"]);
    assert!(listed.iter().any(|p| p == "labels"), "listed {listed:?}");
    // The next commit that adds an element records stamps of its own generation.
    ds.add_labels("f", labels().view(), &RasterOptions::default())
        .unwrap();
    assert_eq!(ds.manifest().unwrap().unwrap().stamps_of, None);
    assert_eq!(manifest_labels(&ds), ["a", "c", "d", "e", "f"]);
}

/// Runs `spatialzarr lock ROOT -- COMMAND...`, which must succeed.
fn locked(root: &Path, command: &[std::ffi::OsString]) {
    let status = Command::new(env!("CARGO_BIN_EXE_spatialzarr"))
        .arg("lock")
        .arg(root)
        .arg("--")
        .args(command)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_release_of_the_lock_commits_what_the_command_wrote() {
    let dir = common::tempdir();
    let root = dir.path().join("ds.zarr");
    let ds = Dataset::create(&root, DatasetOptions::default()).unwrap();
    ds.add_labels("a", labels().view(), &RasterOptions::default())
        .unwrap();
    let before = ds.generation().unwrap();
    let copy = [
        "cp".into(),
        "-r".into(),
        root.join("labels/a").into_os_string(),
        root.join("labels/written_by_cp").into_os_string(),
    ];
    locked(&root, &copy);
    assert_eq!(ds.generation().unwrap(), before + 1);
    assert_eq!(manifest_labels(&ds), ["a", "written_by_cp"]);
    let listed = listed_by(&root, || {
        assert_eq!(ds.list().unwrap().labels, ["a", "written_by_cp"]);
    });
    assert!(!listed.iter().any(|p| p == "labels"), "listed {listed:?}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("labels/zarr.json")).unwrap()).unwrap();
    assert_eq!(
        doc.pointer("/attributes/ome/labels").unwrap(),
        &serde_json::json!(["a", "written_by_cp"])
    );

    // A command that changes nothing commits nothing.
    locked(&root, &["true".into()]);
    assert_eq!(ds.generation().unwrap(), before + 1);
}
