//! The store: images and labels added, listed, read and removed, concurrently.
//! Includes the element cases of the SpatialData concurrency request (threads,
//! processes, sequential; a shared handle and a dataset opened from disk).

mod common;

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use spatialzarr::{
    Dataset, DatasetOptions, ElementInfo, ElementKind, Error, RasterOptions, Transform,
    Transformations,
};

fn open(path: &Path) -> Dataset {
    Dataset::open(path, DatasetOptions::default()).expect("open dataset")
}

fn create(path: &Path) -> Dataset {
    Dataset::create(path, DatasetOptions::default()).expect("create dataset")
}

/// The seed's image: shape (1, width, width), every pixel equal to `n`.
fn seed_image(n: u16, width: usize) -> ArrayD<u16> {
    ArrayD::from_elem(IxDyn(&[1, width, width]), n)
}

fn add_seed_image(ds: &Dataset, n: u16) {
    ds.add_image(
        &format!("image{n}"),
        seed_image(n, 10).view(),
        &RasterOptions::default(),
    )
    .expect("add image");
}

fn assert_seed_images(ds: &Dataset, count: u16) {
    let list = ds.list().unwrap();
    let expected: Vec<String> = {
        let mut v: Vec<String> = (1..=count).map(|n| format!("image{n}")).collect();
        v.sort();
        v
    };
    assert_eq!(list.images, expected);
    for n in 1..=count {
        let pixels = ds.read_raster::<u16>(&format!("image{n}"), 0).unwrap();
        assert_eq!(pixels, seed_image(n, 10), "pixels of image{n}");
    }
}

#[test]
#[ignore = "worker process entry point, run by the other tests"]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    let ds = open(Path::new(&args[0]));
    match role.as_str() {
        "add-image" => add_seed_image(&ds, args[1].parse().unwrap()),
        "add-labels-many" => {
            let worker: u32 = args[1].parse().unwrap();
            let count: u32 = args[2].parse().unwrap();
            for i in 0..count {
                let value = worker * 1000 + i;
                let labels = ArrayD::from_shape_fn(IxDyn(&[16, 24]), |ix| {
                    value + (ix[0] * 24 + ix[1]) as u32
                });
                ds.add_labels(
                    &format!("w{worker}_l{i}"),
                    labels.view(),
                    &RasterOptions::default(),
                )
                .unwrap();
                common::report(&format!("added w{worker}_l{i}"));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn seed_add_element_sequential_shared_handle() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    for n in 1..=10 {
        add_seed_image(&ds, n);
    }
    assert_seed_images(&ds, 10);
}

#[test]
fn seed_add_element_sequential_opened_from_disk() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    create(&path);
    for n in 1..=10 {
        add_seed_image(&open(&path), n);
    }
    assert_seed_images(&open(&path), 10);
}

#[test]
fn seed_add_element_threads_shared_handle() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    std::thread::scope(|scope| {
        for n in 1..=10 {
            let ds = ds.clone();
            scope.spawn(move || add_seed_image(&ds, n));
        }
    });
    assert_seed_images(&ds, 10);
}

#[test]
fn seed_add_element_threads_opened_from_disk() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    create(&path);
    std::thread::scope(|scope| {
        for n in 1..=10 {
            let path = path.clone();
            scope.spawn(move || add_seed_image(&open(&path), n));
        }
    });
    assert_seed_images(&open(&path), 10);
}

#[test]
fn seed_add_element_processes_opened_from_disk() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = create(&path);
    let workers = (1..=10)
        .map(|n| common::worker("add-image", &[path.display().to_string(), n.to_string()]))
        .collect();
    common::run_all(workers);
    // The handle opened before the workers ran sees their elements.
    assert_seed_images(&ds, 10);
}

#[test]
fn many_processes_add_labels_and_a_stale_handle_sees_them() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = create(&path);
    assert!(ds.list().unwrap().is_empty());
    let workers = (0..6)
        .map(|w| {
            common::worker(
                "add-labels-many",
                &[path.display().to_string(), w.to_string(), "5".into()],
            )
        })
        .collect();
    common::run_all(workers);
    let labels = ds.list().unwrap().labels;
    assert_eq!(labels.len(), 30);
    for w in 0..6u32 {
        for i in 0..5u32 {
            let got = ds.read_raster::<u32>(&format!("w{w}_l{i}"), 0).unwrap();
            let value = w * 1000 + i;
            assert_eq!(got[[0, 0]], value);
            assert_eq!(got[[15, 23]], value + 15 * 24 + 23);
        }
    }
    // One generation step per commit; a commit may take several queued additions
    // (group commit, spec/commit-protocol.md §12), so at most one step per addition.
    let generation = ds.generation().unwrap();
    assert!((1..=30).contains(&generation), "generation {generation}");
}

#[test]
fn info_describes_rasters() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    let data = ArrayD::from_shape_fn(IxDyn(&[2, 32, 48]), |ix| (ix[1] + ix[2]) as u8);
    let options = RasterOptions {
        channel_names: Some(vec!["DAPI".into(), "CD45".into()]),
        scale_levels: 2,
        transformations: Transformations(
            [("global".to_owned(), Transform::Scale(vec![0.5, 0.25]))].into(),
        ),
        ..RasterOptions::default()
    };
    ds.add_image("img", data.view(), &options).unwrap();
    let ElementInfo::Raster(info) = ds.info("img").unwrap() else {
        panic!("not a raster")
    };
    assert_eq!(info.kind, ElementKind::Images);
    assert_eq!(info.shape, vec![2, 32, 48]);
    assert_eq!(info.dims, vec!["c", "y", "x"]);
    assert_eq!(info.levels, 3);
    assert_eq!(info.channel_names, Some(vec!["DAPI".into(), "CD45".into()]));
    assert_eq!(info.transformations, options.transformations);
    assert_eq!(ds.read_raster::<u8>("img", 0).unwrap(), data);
    let s2 = ds.read_raster::<u8>("img", 2).unwrap();
    assert_eq!(s2.shape(), &[2, 8, 12]);
    // Mean of a 4x4 block of (y + x): block (0,0) holds 0..=6, mean 3.
    assert_eq!(s2[[0, 0, 0]], 3);
}

#[test]
fn labels_pyramid_keeps_label_values() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    let data = ArrayD::from_shape_fn(IxDyn(&[8, 8]), |ix| (ix[0] / 2 * 4 + ix[1] / 2) as u32);
    let options = RasterOptions {
        scale_levels: 1,
        ..RasterOptions::default()
    };
    ds.add_labels("seg", data.view(), &options).unwrap();
    let s1 = ds.read_raster::<u32>("seg", 1).unwrap();
    assert_eq!(s1.shape(), &[4, 4]);
    let mut values: Vec<u32> = s1.iter().copied().collect();
    values.sort();
    assert_eq!(values, (0..16).collect::<Vec<_>>());
}

#[test]
fn names_are_validated_and_unique_ignoring_case() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = create(&path);
    let data = ArrayD::<u8>::zeros(IxDyn(&[4, 4]));
    ds.add_labels("Cells", data.view(), &RasterOptions::default())
        .unwrap();
    let generation = ds.generation().unwrap();
    for bad in ["", "..", "a/b", "__x", ".hidden", "../../escape", "/abs"] {
        let err = ds
            .add_labels(bad, data.view(), &RasterOptions::default())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
    }
    for taken in ["Cells", "cells", "CELLS"] {
        let err = ds
            .add_image(taken, data.view(), &RasterOptions::default())
            .unwrap_err();
        assert!(matches!(err, Error::NameTaken { .. }), "{taken}: {err}");
        let err = ds
            .add_labels(taken, data.view(), &RasterOptions::default())
            .unwrap_err();
        assert!(matches!(err, Error::NameTaken { .. }), "{taken}: {err}");
    }
    assert_eq!(
        ds.generation().unwrap(),
        generation,
        "a refused add changed the dataset"
    );
    assert_eq!(ds.list().unwrap().labels, vec!["Cells"]);
    assert!(!dir.path().join("escape").exists());
    // Nothing staged is left behind.
    let staging = path.join(".spatialzarr/staging");
    let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);
}

#[test]
fn overwrite_replaces_and_remove_deletes() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    let a = ArrayD::from_elem(IxDyn(&[4, 4]), 1u32);
    let b = ArrayD::from_elem(IxDyn(&[6, 6]), 2u32);
    ds.add_labels("seg", a.view(), &RasterOptions::default())
        .unwrap();
    ds.add_raster(
        ElementKind::Labels,
        "seg",
        b.view(),
        &RasterOptions::default(),
        true,
    )
    .unwrap();
    assert_eq!(ds.read_raster::<u32>("seg", 0).unwrap(), b);
    assert_eq!(ds.list().unwrap().labels, vec!["seg"]);
    // Overwrite never changes the kind.
    let err = ds
        .add_raster(
            ElementKind::Images,
            "seg",
            b.view(),
            &RasterOptions::default(),
            true,
        )
        .unwrap_err();
    assert!(matches!(err, Error::NameTaken { .. }), "{err}");
    ds.remove("seg").unwrap();
    assert!(ds.list().unwrap().is_empty());
    assert!(matches!(ds.remove("seg"), Err(Error::NoSuchElement { .. })));
    assert!(matches!(ds.info("seg"), Err(Error::NoSuchElement { .. })));
    let trash = dir.path().join("sd.zarr/.spatialzarr/trash");
    assert_eq!(std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0), 0);
}

#[test]
fn wrong_input_is_refused_without_change() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    let floats = ArrayD::<f32>::zeros(IxDyn(&[4, 4]));
    let err = ds
        .add_labels("seg", floats.view(), &RasterOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("integer"), "{err}");
    let four_d = ArrayD::<u8>::zeros(IxDyn(&[1, 1, 4, 4]));
    assert!(
        ds.add_labels("seg", four_d.view(), &RasterOptions::default())
            .is_err()
    );
    let empty = ArrayD::<u8>::zeros(IxDyn(&[0, 4]));
    assert!(
        ds.add_labels("seg", empty.view(), &RasterOptions::default())
            .is_err()
    );
    let data = ArrayD::<u8>::zeros(IxDyn(&[4, 4]));
    let bad_dims = RasterOptions {
        dims: Some(vec!["x".into(), "y".into()]),
        ..RasterOptions::default()
    };
    assert!(ds.add_labels("seg", data.view(), &bad_dims).is_err());
    let too_many_levels = RasterOptions {
        scale_levels: 3,
        ..RasterOptions::default()
    };
    assert!(ds.add_labels("seg", data.view(), &too_many_levels).is_err());
    assert!(ds.list().unwrap().is_empty());
    assert_eq!(ds.generation().unwrap(), 0);
    let u8s = ArrayD::<u8>::zeros(IxDyn(&[4, 4]));
    ds.add_labels("seg", u8s.view(), &RasterOptions::default())
        .unwrap();
    assert!(
        ds.read_raster::<u32>("seg", 0).is_err(),
        "dtype mismatch must be refused"
    );
}

#[test]
fn transactions_commit_all_or_nothing_and_nest() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    let data = ArrayD::<u8>::zeros(IxDyn(&[4, 4]));
    {
        let mut txn = ds.write().unwrap();
        txn.add_raster(
            ElementKind::Labels,
            "a",
            data.view(),
            &RasterOptions::default(),
            false,
        )
        .unwrap();
        // The plain API called inside joins the open transaction instead of deadlocking.
        ds.add_labels("b", data.view(), &RasterOptions::default())
            .unwrap();
        assert!(
            ds.list().unwrap().is_empty(),
            "nothing is visible before the commit"
        );
        txn.commit().unwrap();
    }
    assert_eq!(ds.list().unwrap().labels, vec!["a", "b"]);
    assert_eq!(
        ds.generation().unwrap(),
        1,
        "one commit for the whole transaction"
    );
    {
        let mut txn = ds.write().unwrap();
        txn.add_raster(
            ElementKind::Labels,
            "c",
            data.view(),
            &RasterOptions::default(),
            false,
        )
        .unwrap();
        txn.remove("a").unwrap();
        // Dropped without commit: nothing happens.
    }
    assert_eq!(ds.list().unwrap().labels, vec!["a", "b"]);
    assert_eq!(ds.generation().unwrap(), 1);
    let staging = dir.path().join("sd.zarr/.spatialzarr/staging");
    assert_eq!(
        std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0),
        0
    );
}

#[test]
fn open_refuses_what_is_not_a_dataset() {
    let dir = common::tempdir();
    let err = Dataset::open(&dir.path().join("absent"), DatasetOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotADataset { .. }), "{err}");
    let err = Dataset::open(dir.path(), DatasetOptions::default()).unwrap_err();
    assert!(err.to_string().contains("spatialzarr init"), "{err}");
    let path = dir.path().join("sd.zarr");
    create(&path);
    assert!(matches!(
        Dataset::create(&path, DatasetOptions::default()),
        Err(Error::AlreadyExists(_))
    ));
    std::fs::write(
        path.join(".spatialzarr/manifest.json"),
        r#"{"format":"spatialzarr","version":999,"generation":1}"#,
    )
    .unwrap();
    let err = Dataset::open(&path, DatasetOptions::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFormat { .. }), "{err}");
}

#[test]
fn a_stray_folder_in_the_way_is_refused_before_the_commit_is_decided() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = create(&path);
    std::fs::create_dir_all(path.join("labels/seg/junk")).unwrap();
    let data = ArrayD::<u8>::zeros(IxDyn(&[4, 4]));
    let err = ds
        .add_labels("seg", data.view(), &RasterOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("labels/seg"), "{err}");
    assert!(
        ds.pending_journal().unwrap().is_none(),
        "no journal may be left to wedge writers"
    );
    ds.add_labels("other", data.view(), &RasterOptions::default())
        .unwrap();
    assert_eq!(ds.list().unwrap().labels, vec!["other"]);
}

#[test]
fn remove_then_add_the_same_name_in_one_transaction() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    let a = ArrayD::from_elem(IxDyn(&[4, 4]), 1u16);
    let b = ArrayD::from_elem(IxDyn(&[5, 5]), 2u16);
    ds.add_labels("seg", a.view(), &RasterOptions::default())
        .unwrap();
    let mut txn = ds.write().unwrap();
    txn.remove("seg").unwrap();
    txn.add_raster(
        ElementKind::Labels,
        "seg",
        b.view(),
        &RasterOptions::default(),
        false,
    )
    .unwrap();
    txn.commit().unwrap();
    assert_eq!(ds.read_raster::<u16>("seg", 0).unwrap(), b);
    assert!(ds.check(false).unwrap().is_ok());
}

/// Writers sweep the leftovers of dead writers on a schedule, not at every commit:
/// the first commit of a dataset sweeps, the next ones do not, and the commit that
/// finds 64 generations made since the last sweep sweeps again.
#[test]
fn writers_sweep_leftovers_every_64_commits() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = create(&path);
    let data = ArrayD::<u8>::zeros(IxDyn(&[2, 2]));
    ds.add_labels("first", data.view(), &RasterOptions::default())
        .unwrap();
    let swept_at = ds.generation().unwrap() - 1;
    let temp = path.join(".sz-tmp-root");
    let hidden_temp = path.join(".spatialzarr/.sz-tmp-hidden");
    let dead_stage = path.join(".spatialzarr/staging/12345-1-1");
    let trash = path.join(".spatialzarr/trash/12345-2-2");
    let plant = || {
        std::fs::write(&temp, b"x").unwrap();
        std::fs::write(&hidden_temp, b"x").unwrap();
        std::fs::create_dir_all(dead_stage.join("element")).unwrap();
        std::fs::write(dead_stage.join("owner"), b"").unwrap();
        std::fs::create_dir_all(trash.join("s0")).unwrap();
    };
    let left = || [&temp, &hidden_temp, &dead_stage, &trash].map(|p| p.exists());
    plant();
    let mut i = 0;
    while ds.generation().unwrap() < swept_at + 64 {
        assert_eq!(
            left(),
            [true; 4],
            "swept at generation {}",
            ds.generation().unwrap()
        );
        ds.add_labels(&format!("l{i}"), data.view(), &RasterOptions::default())
            .unwrap();
        i += 1;
    }
    // The next commit finds generation `swept_at + 64`: it sweeps first.
    ds.add_labels("due", data.view(), &RasterOptions::default())
        .unwrap();
    assert_eq!(
        left(),
        [false; 4],
        "not swept 64 commits after the last sweep"
    );
    assert!(ds.check(false).unwrap().is_ok());
    // `recover` sweeps at once, and counts as the last sweep.
    plant();
    let report = ds.recover().unwrap();
    assert_eq!(report.removed_staging, vec![dead_stage.clone()]);
    assert_eq!(report.removed_trash.len(), 1, "{report:?}");
    assert_eq!(left(), [false; 4]);
    plant();
    ds.add_labels("after", data.view(), &RasterOptions::default())
        .unwrap();
    assert_eq!(left(), [true; 4], "swept right after a recovery");
    assert_eq!(ds.list().unwrap().labels.len(), i + 3);
}

#[test]
fn recover_removes_leftovers_of_dead_writers() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = create(&path);
    let data = ArrayD::<u8>::zeros(IxDyn(&[4, 4]));
    ds.add_labels("seg", data.view(), &RasterOptions::default())
        .unwrap();
    // What an interrupted atomic write and a dead stager leave behind.
    std::fs::write(path.join(".sz-tmp-root"), b"x").unwrap();
    std::fs::write(path.join("labels/seg/s0/.sz-tmp-deep"), b"x").unwrap();
    let dead_stage = path.join(".spatialzarr/staging/12345-1-1");
    std::fs::create_dir_all(dead_stage.join("element")).unwrap();
    std::fs::write(dead_stage.join("owner"), b"").unwrap();
    let report = ds.recover().unwrap();
    assert_eq!(report.removed_temp_files.len(), 2, "{report:?}");
    assert_eq!(report.removed_staging, vec![dead_stage.clone()]);
    assert!(!dead_stage.exists() && !path.join(".sz-tmp-root").exists());
    assert!(!path.join("labels/seg/s0/.sz-tmp-deep").exists());
    assert_eq!(ds.read_raster::<u8>("seg", 0).unwrap(), data);
    assert!(ds.recover().unwrap().removed_temp_files.is_empty());
}

#[test]
fn transformations_are_replaced_in_one_metadata_commit() {
    let dir = common::tempdir();
    let ds = create(&dir.path().join("t.zarr"));
    add_seed_image(&ds, 1);
    let before = ds.generation().unwrap();
    let t = Transformations(
        [
            ("global".to_owned(), Transform::Scale(vec![0.5, 0.25])),
            ("slide".to_owned(), Transform::Translation(vec![10.0, 20.0])),
        ]
        .into(),
    );
    let commit = ds.set_transformations("image1", &t).unwrap();
    assert_eq!(commit.generation, before + 1);
    let ElementInfo::Raster(info) = open(ds.root()).info("image1").unwrap() else {
        panic!("not a raster")
    };
    assert_eq!(info.transformations, t);
    assert_eq!(
        open(ds.root()).read_raster::<u16>("image1", 0).unwrap(),
        seed_image(1, 10)
    );
    assert!(ds.check(true).unwrap().is_ok());

    // Refused, and nothing changes: wrong length, no such element, a name added in
    // the same transaction.
    let generation = ds.generation().unwrap();
    let three = Transformations([("global".to_owned(), Transform::Scale(vec![1.0; 3]))].into());
    let err = ds.set_transformations("image1", &three).unwrap_err();
    assert!(err.to_string().contains("spatial axes"), "{err}");
    assert!(matches!(
        ds.set_transformations("image9", &t),
        Err(Error::NoSuchElement { .. })
    ));
    let mut txn = ds.write().unwrap();
    txn.add_raster(
        ElementKind::Images,
        "image2",
        seed_image(2, 4).view(),
        &RasterOptions::default(),
        false,
    )
    .unwrap();
    let err = txn.set_transformations("IMAGE2", &t).unwrap_err();
    assert!(err.to_string().contains("in this transaction"), "{err}");
    drop(txn);
    assert_eq!(ds.generation().unwrap(), generation);
    let ElementInfo::Raster(info) = ds.info("image1").unwrap() else {
        panic!("not a raster")
    };
    assert_eq!(info.transformations, t);
}

/// Readers that take no lock (spatialdata, napari) find the element at every instant
/// of an overwrite: its folder is swapped with the staged one in one step, so the
/// name always holds the old element or the new one, never nothing.
#[test]
fn overwrite_never_leaves_the_name_empty_for_lock_free_readers() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = common::tempdir();
    let ds = create(&dir.path().join("sd.zarr"));
    let pixels = |v: u32| ArrayD::from_elem(IxDyn(&[8, 8]), v);
    ds.add_labels("seg", pixels(0).view(), &RasterOptions::default())
        .unwrap();
    // The guarantee needs the filesystem's atomic swap (not on NFS, for example).
    let (a, b) = (dir.path().join("swap-a"), dir.path().join("swap-b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    if rustix::fs::renameat_with(
        rustix::fs::CWD,
        &a,
        rustix::fs::CWD,
        &b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .is_err()
    {
        eprintln!("no RENAME_EXCHANGE in {}: skipped", dir.path().display());
        return;
    }
    let metadata = dir.path().join("sd.zarr/labels/seg/zarr.json");
    let (stop, looks, misses) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if !metadata.exists() {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
                looks.fetch_add(1, Ordering::Relaxed);
            }
        });
        for v in 1..=150 {
            ds.add_raster(
                ElementKind::Labels,
                "seg",
                pixels(v).view(),
                &RasterOptions::default(),
                true,
            )
            .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        looks.load(Ordering::Relaxed) > 1000,
        "the reader barely ran"
    );
    assert_eq!(
        misses.load(Ordering::Relaxed),
        0,
        "the element was missing {} times in {} looks",
        misses.load(Ordering::Relaxed),
        looks.load(Ordering::Relaxed)
    );
    assert_eq!(ds.read_raster::<u32>("seg", 0).unwrap(), pixels(150));
    assert!(ds.check(true).unwrap().is_ok());
}

/// A chunk shape may be given for the array as passed: a `y,x` image (stored as
/// `c,y,x`) takes a 2-entry chunk shape, which gains the channel axis; other lengths
/// are refused, naming the expected length.
#[test]
fn chunk_shape_follows_the_array_as_given() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = create(&path);
    let gray = ArrayD::from_shape_fn(IxDyn(&[10, 12]), |ix| (ix[0] * 12 + ix[1]) as u16);
    let options = |chunks: Vec<u64>| RasterOptions {
        chunk_shape: Some(chunks),
        ..RasterOptions::default()
    };
    ds.add_image("gray", gray.view(), &options(vec![4, 5]))
        .unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join("images/gray/s0/zarr.json")).unwrap())
            .unwrap();
    assert_eq!(
        meta["chunk_grid"]["configuration"]["chunk_shape"],
        serde_json::json!([1, 4, 5])
    );
    assert_eq!(
        ds.read_raster::<u16>("gray", 0).unwrap(),
        gray.clone().insert_axis(ndarray::Axis(0))
    );
    ds.add_image("gray3", gray.view(), &options(vec![1, 4, 5]))
        .unwrap();
    let err = ds
        .add_image("bad", gray.view(), &options(vec![4]))
        .unwrap_err();
    assert!(err.to_string().contains("chunk shape [4]"), "{err}");
    assert!(!ds.list().unwrap().images.contains(&"bad".to_string()));
}

/// A staging folder still being set up (`.new-*`) belongs to a live writer while its
/// `owner` file is locked, however old the folder is; once that writer is killed
/// (SIGKILL: the kernel drops its lock), the next recovery removes it.
#[test]
fn staging_of_a_live_writer_is_kept_and_removed_once_it_is_killed() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = create(&path);
    let building = path.join(".spatialzarr/staging/.new-4242-1-1");
    std::fs::create_dir_all(building.join("element")).unwrap();
    let owner = building.join("owner");
    std::fs::write(&owner, b"").unwrap();
    /// Kills the lock holder when the test ends, however it ends.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // The live writer: another process holding the owner's lock.
    let holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys, time\n\
             f = open(sys.argv[1], 'r+')\n\
             fcntl.flock(f, fcntl.LOCK_EX)\n\
             print('locked', flush=True)\n\
             time.sleep(600)\n",
        ])
        .arg(&owner)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = KillOnDrop(holder);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    // Old enough to be taken for abandoned if age alone decided.
    let aged = std::process::Command::new("touch")
        .args(["-d", "10 minutes ago"])
        .arg(&building)
        .status()
        .unwrap();
    assert!(aged.success());
    assert!(ds.recover().unwrap().removed_staging.is_empty());
    assert!(building.exists(), "a live writer's staging was removed");
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    assert_eq!(
        ds.recover().unwrap().removed_staging,
        vec![building.clone()]
    );
    assert!(!building.exists());
}
