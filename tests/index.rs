//! The element index (spec/format.md §4): `info` reads one bucket and `ls` all of
//! them; `check` finds an index that disagrees with the element folders; datasets of
//! store format 1 (an earlier version's) and of other tools are read without being
//! changed and upgraded by the first write or `spatialzarr upgrade`; a manifest from
//! a later version is refused with an error naming the upgrade.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, IxDyn};
use spatialzarr::storage::trace::{FsObserver, FsOp, ReadOp, set_observer};
use spatialzarr::{Dataset, DatasetOptions, ElementKind, Error, RasterOptions};

/// The observer is process-wide: the tests of this file that count take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// Records the files opened inside one folder.
struct Opens {
    folder: PathBuf,
    opened: Mutex<Vec<PathBuf>>,
}

impl FsObserver for Opens {
    fn before(&self, _op: &FsOp) -> std::io::Result<()> {
        Ok(())
    }

    fn read(&self, op: &ReadOp) {
        if let ReadOp::Open(path) = op
            && path.starts_with(&self.folder)
        {
            self.opened.lock().unwrap().push(path.clone());
        }
    }
}

/// The files of `folder` that `call` opens.
fn opened_in(folder: &Path, call: impl FnOnce()) -> Vec<PathBuf> {
    let observer = Arc::new(Opens {
        folder: folder.to_path_buf(),
        opened: Mutex::default(),
    });
    set_observer(Some(observer.clone()));
    call();
    set_observer(None);
    observer.opened.lock().unwrap().clone()
}

fn labels(value: u32) -> ArrayD<u32> {
    ArrayD::from_elem(IxDyn(&[4, 4]), value)
}

/// A dataset with `n` labels `t0000`, `t0001`, ... added in one transaction.
fn dataset(dir: &Path, n: usize) -> Dataset {
    let ds = Dataset::create(&dir.join("ds.zarr"), DatasetOptions::default()).unwrap();
    let mut txn = ds.write().unwrap();
    for i in 0..n {
        txn.add_raster(
            ElementKind::Labels,
            &format!("t{i:04}"),
            labels(i as u32).view(),
            &RasterOptions::default(),
            false,
        )
        .unwrap();
    }
    txn.commit().unwrap();
    ds
}

fn index_dir(ds: &Dataset) -> PathBuf {
    ds.root().join(".spatialzarr/index")
}

#[test]
fn info_reads_one_bucket_ls_every_bucket_and_a_commit_writes_one() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::tempdir();
    let ds = dataset(dir.path(), 300);
    let buckets = std::fs::read_dir(index_dir(&ds)).unwrap().count();
    assert!(buckets > 250, "{buckets} buckets for 300 names");

    let opened = opened_in(&index_dir(&ds), || {
        ds.info("t0123").unwrap();
    });
    assert_eq!(opened.len(), 1, "{opened:?}");
    let opened = opened_in(&index_dir(&ds), || {
        assert_eq!(ds.list().unwrap().labels.len(), 300);
    });
    assert_eq!(opened.len(), buckets, "ls opened {} buckets", opened.len());

    let before = common::tree_files(&index_dir(&ds));
    ds.add_labels("new", labels(7).view(), &RasterOptions::default())
        .unwrap();
    let after = common::tree_files(&index_dir(&ds));
    let changed: Vec<_> = after
        .iter()
        .filter(|(path, bytes)| before.get(*path) != Some(bytes))
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    let text = String::from_utf8(after[&changed[0]].clone()).unwrap();
    assert!(text.lines().any(|l| l == "labels\tnew"), "{text}");
    let manifest = std::fs::read_to_string(ds.root().join(".spatialzarr/manifest.json")).unwrap();
    assert!(!manifest.contains("t0123"), "{manifest}");
    assert!(manifest.contains("\"labels\": 301"), "{manifest}");
}

#[test]
fn names_differing_only_in_case_are_refused() {
    let dir = common::tempdir();
    let ds = dataset(dir.path(), 3);
    let err = ds
        .add_labels("T0001", labels(1).view(), &RasterOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::NameTaken { existing, .. } if existing == "t0001"),
        "{err}"
    );
    let err = ds
        .add_image("T0002", labels(1).view(), &RasterOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::NameTaken { .. }), "{err}");
    assert_eq!(ds.list().unwrap().len(), 3);
}

/// The bucket file holding `name`, and its lines.
fn bucket_of(ds: &Dataset, name: &str) -> (PathBuf, Vec<String>) {
    let file = spatialzarr::commit::index::bucket_file(spatialzarr::commit::index::bucket_of(name));
    let path = index_dir(ds).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    (path, text.lines().map(str::to_owned).collect())
}

#[test]
fn check_finds_a_missing_and_an_extra_index_entry() {
    let dir = common::tempdir();
    let ds = dataset(dir.path(), 20);
    assert!(ds.check(false).unwrap().is_ok());

    // An element whose line is gone: invisible to `ls`, which check says.
    let (path, lines) = bucket_of(&ds, "t0007");
    let kept: Vec<_> = lines.iter().filter(|l| *l != "labels\tt0007").collect();
    let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let report = ds.check(false).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("\"t0007\" is in labels/ but not in the index")),
        "{:?}",
        report.problems
    );
    assert!(!ds.list().unwrap().labels.contains(&"t0007".to_owned()));
    std::fs::write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    assert!(ds.check(false).unwrap().is_ok());

    // A line naming an element that is not there.
    let (path, mut lines) = bucket_of(&ds, "ghost");
    lines.push("labels\tghost".into());
    lines.sort();
    std::fs::write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let report = ds.check(false).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("lists labels \"ghost\", but labels/ghost has no metadata")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.contains("counts")),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_version_1_dataset_is_read_as_is_and_upgraded_by_the_command() {
    let dir = common::tempdir();
    let ds = dataset(dir.path(), 5);
    ds.append_rows(
        "cells",
        &common::region_rows("t0000", 3),
        Some(&Default::default()),
        None,
    )
    .unwrap();
    let generation = ds.generation().unwrap();
    common::to_version_1(ds.root());
    let before = common::tree_files(ds.root());

    let root = ds.root().to_path_buf();
    let listed = common::sz_ok(&["ls".as_ref(), root.as_os_str()]);
    assert_eq!(listed.lines().count(), 6, "{listed}");
    let info = common::sz_ok(&["info".as_ref(), root.as_os_str(), "t0003".as_ref()]);
    assert!(info.contains("type: labels"), "{info}");
    assert!(ds.check(false).unwrap().is_ok());
    assert_eq!(
        common::tree_files(ds.root()),
        before,
        "a read changed the dataset"
    );

    let out = common::sz_ok(&["upgrade".as_ref(), root.as_os_str()]);
    assert_eq!(
        out.trim(),
        format!(
            "upgraded the store format from version 1 to 2 (generation {})",
            generation + 1
        )
    );
    assert_eq!(common::store_version(&root), 2);
    let recorded = spatialzarr::commit::index::read_all(&root.join(".spatialzarr")).unwrap();
    assert_eq!(recorded.len(), 6);
    assert_eq!(recorded["cells"], ElementKind::Tables);
    assert!(ds.check(false).unwrap().is_ok());
    let again = common::sz_ok(&["upgrade".as_ref(), root.as_os_str(), "--json".as_ref()]);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["upgraded"], false);
    assert_eq!(again["generation"], generation + 1);
}

#[test]
fn a_dataset_of_spatialdata_gets_its_index_at_the_first_write() {
    let dir = common::tempdir();
    let root = dir.path().join("sd.zarr");
    common::copy_tree(&common::fixture("v3"), &root);
    let ds = Dataset::open(&root, DatasetOptions::default()).unwrap();
    let listed = ds.list().unwrap();
    assert_eq!(listed.len(), 5);
    assert!(!root.join(".spatialzarr/manifest.json").exists());
    ds.add_labels("mine", labels(3).view(), &RasterOptions::default())
        .unwrap();
    assert_eq!(common::store_version(&root), 2);
    let recorded = spatialzarr::commit::index::read_all(&root.join(".spatialzarr")).unwrap();
    let mut expected: Vec<String> = ElementKind::ALL
        .iter()
        .flat_map(|k| listed.of(*k).to_vec())
        .collect();
    expected.push("mine".into());
    expected.sort();
    assert_eq!(recorded.keys().cloned().collect::<Vec<_>>(), expected);
    let report = ds.check(true).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn a_manifest_of_a_later_version_is_refused_naming_the_upgrade() {
    let dir = common::tempdir();
    let ds = dataset(dir.path(), 1);
    let path = ds.root().join(".spatialzarr/manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"version\": 2", "\"version\": 3");
    std::fs::write(&path, text).unwrap();
    let out = common::sz(&["ls".as_ref(), ds.root().as_os_str()]);
    common::assert_fails(
        &out,
        1,
        &[
            "store format version 3 is newer than the supported 2",
            "upgrade spatialzarr",
        ],
    );
}
