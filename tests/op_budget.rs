//! The metadata operations of one commit do not grow with the number of committed
//! elements: one `add_labels` and one `append_rows` are counted through the storage
//! observer in a dataset of 10 elements and in one of 10^4 (built in batched
//! transactions), and the counts may differ by a small constant only. The size of
//! the large dataset can be changed with `SPATIALZARR_OP_BUDGET_ELEMENTS`. The element
//! index is read and written in one bucket only, and never listed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use ndarray::{ArrayD, IxDyn};
use spatialzarr::storage::trace::{FsObserver, FsOp, ReadOp, set_observer};
use spatialzarr::table::{Prim, RowBatch, TableSpec, XRows, XSpec};
use spatialzarr::{Dataset, DatasetOptions, ElementKind, FolderSync, RasterOptions};

/// Elements added per transaction while building a dataset.
const BATCH: usize = 500;
/// The most the counts at 10^4 elements may exceed those at 10.
const MAX_GROWTH: usize = 4;
/// The most operations one `add_labels` (32x32) and one `append_rows` (1,000 rows)
/// may make, and the most sequential fsync rounds of either call, staging included
/// (spec/commit-protocol.md §8), by folder-sync mode: (mode, add_labels,
/// append_rows, rounds).
const CEILINGS: [(FolderSync, usize, usize, usize); 2] = [
    // Every changed folder fsynced (network filesystems, btrfs, tmpfs).
    (FolderSync::Strict, 60, 121, 3),
    // No folder fsynced: the filesystem orders namespace changes (ext4, xfs).
    (FolderSync::Ordered, 49, 100, 2),
];

/// Counts the operations on paths inside one dataset.
struct Counter {
    root: PathBuf,
    ops: Mutex<Vec<(String, PathBuf)>>,
}

impl Counter {
    fn note(&self, kind: &str, path: &Path) {
        if path.starts_with(&self.root) {
            let relative = path.strip_prefix(&self.root).unwrap().to_path_buf();
            self.ops.lock().unwrap().push((kind.to_owned(), relative));
        }
    }
}

impl FsObserver for Counter {
    fn before(&self, op: &FsOp) -> std::io::Result<()> {
        match op {
            FsOp::CreateFile(p) => self.note("create", p),
            FsOp::Write(..) | FsOp::FsyncRound(_) => {}
            FsOp::Fsync(p) => self.note("fsync", p),
            FsOp::FsyncDir(p) => self.note("fsyncdir", p),
            FsOp::Rename(a, _) | FsOp::Exchange(a, _) => self.note("rename", a),
            FsOp::Mkdir(p) => self.note("mkdir", p),
            FsOp::Unlink(p) | FsOp::RemoveTree(p) => self.note("unlink", p),
        }
        Ok(())
    }

    fn read(&self, op: &ReadOp) {
        match op {
            ReadOp::Stat(p) => self.note("stat", p),
            ReadOp::Open(p) => self.note("open", p),
            ReadOp::ReadDir(p) => self.note("readdir", p),
        }
    }
}

/// The operations of one call, by kind, plus the sequential fsync rounds (maximal
/// runs of fsyncs without a namespace change between them).
#[derive(Debug)]
struct Counts {
    by_kind: BTreeMap<String, usize>,
    total: usize,
    fsyncs: usize,
    rounds: usize,
    paths: Vec<PathBuf>,
    /// The files created (temporaries included).
    created: Vec<PathBuf>,
    /// The operations on the element index (`.spatialzarr/index`), by kind.
    index_ops: Vec<(String, PathBuf)>,
    /// Whether any folder was fsynced.
    synced_folder: bool,
}

/// The observer is process-wide: the tests of this file count one at a time.
static OBSERVING: Mutex<()> = Mutex::new(());

fn count(root: &Path, call: impl FnOnce()) -> Counts {
    let _alone = OBSERVING.lock().unwrap_or_else(|e| e.into_inner());
    let counter = Arc::new(Counter {
        root: root.to_path_buf(),
        ops: Mutex::default(),
    });
    set_observer(Some(counter.clone()));
    call();
    set_observer(None);
    let ops = std::mem::take(&mut *counter.ops.lock().unwrap());
    // `SPATIALZARR_OP_BUDGET_TRACE=1` prints every operation, in order.
    if std::env::var_os("SPATIALZARR_OP_BUDGET_TRACE").is_some() {
        for (kind, path) in &ops {
            println!("  {kind:8} {}", path.display());
        }
    }
    let mut by_kind = BTreeMap::new();
    let (mut fsyncs, mut rounds, mut in_round) = (0, 0, false);
    for (kind, _) in &ops {
        *by_kind.entry(kind.clone()).or_insert(0) += 1;
        match kind.as_str() {
            "fsync" | "fsyncdir" => {
                fsyncs += 1;
                if !in_round {
                    rounds += 1;
                    in_round = true;
                }
            }
            "rename" | "mkdir" | "unlink" | "create" => in_round = false,
            _ => {}
        }
    }
    let index_ops = ops
        .iter()
        .filter(|(_, p)| p.starts_with(".spatialzarr/index"))
        .cloned()
        .collect();
    let created = ops
        .iter()
        .filter(|(kind, _)| kind == "create")
        .map(|(_, p)| p.clone())
        .collect();
    Counts {
        synced_folder: by_kind.contains_key("fsyncdir"),
        created,
        index_ops,
        total: ops.len(),
        by_kind,
        fsyncs,
        rounds,
        paths: ops.into_iter().map(|(_, p)| p).collect(),
    }
}

fn labels(width: usize, value: u32) -> ArrayD<u32> {
    ArrayD::from_elem(IxDyn(&[width, width]), value)
}

fn rows(n: usize, region: &str) -> RowBatch {
    let obs = RecordBatch::try_from_iter(vec![
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        (
            "area",
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))) as ArrayRef,
        ),
        (
            "region",
            Arc::new(StringArray::from_iter_values((0..n).map(|_| region))) as ArrayRef,
        ),
    ])
    .unwrap();
    RowBatch {
        obs,
        x: Some(XRows::Dense((0..n * 5).map(|i| i as f64).collect())),
    }
}

fn spec() -> TableSpec {
    TableSpec {
        x: XSpec::Dense {
            dtype: Prim::F64,
            var_names: (0..5).map(|v| format!("gene{v}")).collect(),
        },
        ..TableSpec::default()
    }
}

/// A dataset of `n` labels elements (built `BATCH` per transaction) and a table,
/// committing in the folder-sync `mode`.
fn build(root: &Path, n: usize, mode: FolderSync) -> Dataset {
    let options = DatasetOptions {
        folder_sync: Some(mode),
        ..DatasetOptions::default()
    };
    let ds = Dataset::create(root, options).unwrap();
    let mut next = 0;
    while next < n {
        let mut txn = ds.write().unwrap();
        for i in next..(next + BATCH).min(n) {
            txn.add_raster(
                ElementKind::Labels,
                &format!("tile{i:06}"),
                labels(4, i as u32).view(),
                &RasterOptions::default(),
                false,
            )
            .unwrap();
        }
        txn.commit().unwrap();
        next += BATCH;
    }
    ds.append_rows(
        "cells",
        &rows(10, "tile000000"),
        Some(&spec()),
        Some("seed"),
    )
    .unwrap();
    ds
}

/// One `add_labels` and one `append_rows` in a dataset of `n` elements.
fn measure(base: &Path, n: usize, mode: FolderSync) -> (Counts, Counts) {
    let root = base.join(format!("n{n}-{mode}.zarr"));
    let ds = build(&root, n, mode);
    // The leftovers of dead writers are swept once every 64 commits or 60 s
    // (spec/commit-protocol.md §5): the counts are of commits that find no sweep due,
    // whatever the time building took.
    ds.recover().unwrap();
    let add = count(&root, || {
        ds.add_labels("probe", labels(32, 7).view(), &RasterOptions::default())
            .unwrap();
    });
    let append = count(&root, || {
        ds.append_rows("cells", &rows(1000, "tile000001"), None, Some("probe"))
            .unwrap();
    });
    assert_eq!(ds.list().unwrap().labels.len(), n + 1);
    println!("n = {n}, {mode}: add_labels {add:?}");
    println!("n = {n}, {mode}: append_rows {append:?}");
    (add, append)
}

/// Paths below `labels/` and `tables/` that name an element other than `touched`.
fn untouched(counts: &Counts, touched: &str) -> Vec<PathBuf> {
    counts
        .paths
        .iter()
        .filter(|p| {
            let mut parts = p.components();
            let group = parts
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            let element = parts
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            matches!(group.as_deref(), Some("labels" | "tables" | "images"))
                && element.is_some_and(|e| e != touched && e != "zarr.json" && !e.starts_with('.'))
        })
        .cloned()
        .collect()
}

#[test]
fn a_commit_costs_what_it_changes() {
    let large: usize = std::env::var("SPATIALZARR_OP_BUDGET_ELEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // The counts do not depend on the filesystem; a memory one builds the large
    // dataset faster.
    let dir = match tempfile::tempdir_in("/dev/shm") {
        Ok(dir) => dir,
        Err(_) => common::tempdir(),
    };
    for (mode, add_ceiling, append_ceiling, rounds_ceiling) in CEILINGS {
        let (small_add, small_append) = measure(dir.path(), 10, mode);
        let (large_add, large_append) = measure(dir.path(), large, mode);
        check_counts(
            mode,
            rounds_ceiling,
            [
                ("add_labels", &small_add, &large_add, "probe", add_ceiling),
                (
                    "append_rows",
                    &small_append,
                    &large_append,
                    "cells",
                    append_ceiling,
                ),
            ],
        );
        if mode == FolderSync::Ordered {
            // Only folder fsyncs are left out: every file is fsynced as before.
            assert!(
                !small_add.synced_folder && !small_append.synced_folder,
                "{mode}: a folder was fsynced"
            );
        }
    }
}

/// The checks of [`a_commit_costs_what_it_changes`] on the counts of one mode:
/// (call, counts at 10 elements, counts at scale, element touched, ceiling).
fn check_counts(
    mode: FolderSync,
    rounds_ceiling: usize,
    calls: [(&str, &Counts, &Counts, &str, usize); 2],
) {
    for (what, small, large, touched, ceiling) in calls {
        assert!(
            small.total <= ceiling,
            "{mode} {what}: {} operations, more than {ceiling}: {:?}",
            small.total,
            small.by_kind
        );
        assert!(
            large.total <= small.total + MAX_GROWTH,
            "{what}: {} operations at {} elements against {} at 10 ({:?} against {:?})",
            large.total,
            large.paths.len(),
            small.total,
            large.by_kind,
            small.by_kind,
        );
        assert!(
            small.rounds <= rounds_ceiling,
            "{mode} {what}: {} sequential fsync rounds, more than {rounds_ceiling}",
            small.rounds
        );
        assert!(large.fsyncs <= small.fsyncs, "{what}: more fsyncs at scale");
        assert!(
            large.rounds <= small.rounds,
            "{what}: more fsync rounds at scale"
        );
        // The index is neither listed nor read beyond the bucket of the one name.
        let buckets: std::collections::BTreeSet<_> = large
            .index_ops
            .iter()
            .filter_map(|(_, p)| p.file_name())
            .filter(|f| f.len() == 3)
            .collect();
        assert!(
            buckets.len() <= 1 && !large.index_ops.iter().any(|(k, _)| k == "readdir"),
            "{what}: index operations {:?}",
            large.index_ops
        );
        let foreign = untouched(large, touched);
        assert!(
            foreign.is_empty(),
            "{what} touched other elements: {:?}",
            &foreign[..foreign.len().min(10)]
        );
    }
}

#[test]
fn appends_batched_in_one_commit_store_each_chunk_once() {
    let dir = common::tempdir();
    let root = dir.path().join("batched.zarr");
    let ds = build(&root, 2, FolderSync::Auto);
    // The region is declared before counting, so that no append below grows it.
    ds.append_rows("cells", &rows(10, "tile000001"), None, Some("region"))
        .unwrap();
    let single = count(&root, || {
        ds.append_rows("cells", &rows(100, "tile000001"), None, Some("one"))
            .unwrap();
    });
    let batched = count(&root, || {
        let mut txn = ds.write().unwrap();
        for i in 0..8 {
            txn.append_rows(
                "cells",
                &rows(100, "tile000001"),
                None,
                Some(&format!("b{i}")),
            )
            .unwrap();
        }
        txn.commit().unwrap();
    });
    let chunk_files = |counts: &Counts| {
        counts
            .created
            .iter()
            .filter(|p| p.starts_with("tables/cells") && !p.to_string_lossy().contains("zarr.json"))
            .count()
    };
    let (one, eight) = (chunk_files(&single), chunk_files(&batched));
    assert!(
        one > 0,
        "the single append created no chunk file: {single:?}"
    );
    assert_eq!(
        eight, one,
        "8 appends in one commit created {eight} chunk files, one append {one}: {batched:?}"
    );
    // The merged writes left exactly the rows the appends one by one would.
    assert_eq!(ds.table_info("cells").unwrap().n_obs, 20 + 100 + 800);
    let stored = ds.read_rows("cells", 120..920).unwrap();
    let area = stored
        .column_by_name("area")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    let expected: Vec<f64> = (0..8).flat_map(|_| (0..100).map(|i| i as f64)).collect();
    assert_eq!(area.values().to_vec(), expected);
    let Some(XRows::Dense(x)) = ds.read_x_rows("cells", 120..920).unwrap() else {
        panic!("the table lost its dense X");
    };
    let expected: Vec<f64> = (0..8).flat_map(|_| (0..500).map(|i| i as f64)).collect();
    assert_eq!(x, expected);
}
