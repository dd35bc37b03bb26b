//! Tables: the table cases of the SpatialData concurrency request (threads,
//! processes, sequential; a shared handle and a dataset opened from disk), plus
//! atomicity, idempotency and input checking.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use spatialzarr::table::{Prim, RowBatch, TableSpec, XRows, XSpec};
use spatialzarr::{Dataset, DatasetOptions, Error};

const N_OBS: usize = 100;
const N_VARS: usize = 10;

fn open(path: &Path) -> Dataset {
    Dataset::open(path, DatasetOptions::default()).expect("open dataset")
}

/// A deterministic value for cell `row` of column `col` of worker `worker`.
fn value(worker: usize, row: usize, col: usize) -> f64 {
    (worker * 1_000_000 + row * 100 + col) as f64 / 7.0
}

/// The seed's table rows for `region{worker}`: columns a, b, c, instance_id, region,
/// and X of width 10.
fn seed_rows(worker: usize) -> RowBatch {
    let float_col = |col: usize| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(
            (0..N_OBS).map(|r| value(worker, r, col)),
        ))
    };
    let obs = RecordBatch::try_from_iter(vec![
        ("a", float_col(0)),
        ("b", float_col(1)),
        ("c", float_col(2)),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(0..N_OBS as i64)) as ArrayRef,
        ),
        (
            "region",
            Arc::new(StringArray::from_iter_values(
                (0..N_OBS).map(|_| format!("region{worker}")),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    let x = (0..N_OBS)
        .flat_map(|r| (0..N_VARS).map(move |v| value(worker, r, 10 + v)))
        .collect();
    RowBatch {
        obs,
        x: Some(XRows::Dense(x)),
    }
}

fn seed_spec() -> TableSpec {
    TableSpec {
        x: XSpec::Dense {
            dtype: Prim::F64,
            var_names: (0..N_VARS).map(|v| format!("gene{v}")).collect(),
        },
        ..TableSpec::default()
    }
}

fn append_seed(ds: &Dataset, worker: usize) {
    let out = ds
        .append_rows(
            "table",
            &seed_rows(worker),
            Some(&seed_spec()),
            Some(&format!("worker-{worker}")),
        )
        .expect("append rows");
    assert_eq!(out.end - out.start, N_OBS as u64);
    assert!(out.applied);
}

/// Checks n_obs, regions, and that every worker's rows are exact and contiguous.
fn assert_seed_table(ds: &Dataset, workers: usize) {
    let info = ds.table_info("table").unwrap();
    assert_eq!(info.n_obs as usize, N_OBS * (workers + 1));
    let mut expected: Vec<String> = (0..=workers).map(|w| format!("region{w}")).collect();
    expected.sort();
    assert_eq!(info.regions, expected);
    let rows = ds.read_rows("table", 0..info.n_obs).unwrap();
    let x = match ds.read_x_rows("table", 0..info.n_obs).unwrap() {
        Some(XRows::Dense(x)) => x,
        other => panic!("expected dense X, got {other:?}"),
    };
    let region = rows
        .column_by_name("region")
        .unwrap()
        .as_dictionary::<Int32Type>();
    let names = region.values().as_string::<i32>();
    let a = rows
        .column_by_name("a")
        .unwrap()
        .as_primitive::<Float64Type>();
    let c = rows
        .column_by_name("c")
        .unwrap()
        .as_primitive::<Float64Type>();
    let instance = rows
        .column_by_name("instance_id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let mut seen = vec![false; workers + 1];
    for block in 0..=workers {
        let first = block * N_OBS;
        let worker: usize = names.value(region.keys().value(first) as usize)["region".len()..]
            .parse()
            .unwrap();
        assert!(!seen[worker], "region{worker} appears twice");
        seen[worker] = true;
        for r in 0..N_OBS {
            let row = first + r;
            let key = region.keys().value(row) as usize;
            assert_eq!(
                names.value(key),
                format!("region{worker}"),
                "row {row} is not contiguous"
            );
            assert_eq!(a.value(row), value(worker, r, 0));
            assert_eq!(c.value(row), value(worker, r, 2));
            assert_eq!(instance.value(row), r as i64);
            for v in 0..N_VARS {
                assert_eq!(x[row * N_VARS + v], value(worker, r, 10 + v));
            }
        }
    }
    assert!(seen.iter().all(|s| *s));
    assert!(
        ds.check(true).unwrap().is_ok(),
        "{:?}",
        ds.check(true).unwrap()
    );
}

fn seeded_dataset(path: &Path) -> Dataset {
    let ds = Dataset::create(path, DatasetOptions::default()).unwrap();
    append_seed(&ds, 0);
    ds
}

#[test]
#[ignore = "worker process entry point, run by the other tests"]
fn child_role() {
    let Some((role, args)) = common::role() else {
        return;
    };
    let ds = open(Path::new(&args[0]));
    match role.as_str() {
        "append-seed" => append_seed(&ds, args[1].parse().unwrap()),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn seed_table_sequential_shared_handle() {
    let dir = common::tempdir();
    let ds = seeded_dataset(&dir.path().join("sd.zarr"));
    for w in 1..=10 {
        append_seed(&ds, w);
    }
    assert_seed_table(&ds, 10);
}

#[test]
fn seed_table_threads_shared_handle() {
    let dir = common::tempdir();
    let ds = seeded_dataset(&dir.path().join("sd.zarr"));
    std::thread::scope(|scope| {
        for w in 1..=10 {
            let ds = ds.clone();
            scope.spawn(move || append_seed(&ds, w));
        }
    });
    assert_seed_table(&ds, 10);
}

#[test]
fn seed_table_threads_opened_from_disk() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    seeded_dataset(&path);
    std::thread::scope(|scope| {
        for w in 1..=10 {
            let path = path.clone();
            scope.spawn(move || append_seed(&open(&path), w));
        }
    });
    assert_seed_table(&open(&path), 10);
}

#[test]
fn seed_table_processes_opened_from_disk() {
    let dir = common::tempdir();
    let path = dir.path().join("sd.zarr");
    let ds = seeded_dataset(&path);
    let workers = (1..=10)
        .map(|w| common::worker("append-seed", &[path.display().to_string(), w.to_string()]))
        .collect();
    common::run_all(workers);
    assert_seed_table(&ds, 10);
}

#[test]
fn repeated_keys_append_once() {
    let dir = common::tempdir();
    let ds = seeded_dataset(&dir.path().join("sd.zarr"));
    let first = ds
        .append_rows("table", &seed_rows(1), None, Some("tile-0001"))
        .unwrap();
    for _ in 0..3 {
        let again = ds
            .append_rows("table", &seed_rows(1), None, Some("tile-0001"))
            .unwrap();
        assert!(!again.applied);
        assert_eq!((again.start, again.end), (first.start, first.end));
    }
    // The creating append's key is recorded too.
    let again = ds
        .append_rows("table", &seed_rows(0), Some(&seed_spec()), Some("worker-0"))
        .unwrap();
    assert!(!again.applied);
    assert_eq!((again.start, again.end), (0, 100));
    assert_eq!(ds.table_info("table").unwrap().n_obs, 200);
}

#[test]
fn wrong_rows_are_refused_and_the_table_is_unchanged() {
    let dir = common::tempdir();
    let ds = seeded_dataset(&dir.path().join("sd.zarr"));
    let generation = ds.generation().unwrap();
    let tree = common::TreeSnapshot::take(ds.root());
    let good = seed_rows(1);
    let mut cases: Vec<(&str, RowBatch)> = Vec::new();
    cases.push((
        "missing column",
        RowBatch {
            obs: good.obs.project(&[0, 1, 3, 4]).unwrap(),
            x: good.x.clone(),
        },
    ));
    let extra = RecordBatch::try_from_iter(
        good.obs
            .schema()
            .fields()
            .iter()
            .map(|f| {
                (
                    f.name().clone(),
                    good.obs.column_by_name(f.name()).unwrap().clone(),
                )
            })
            .chain([("d".to_owned(), good.obs.column(0).clone())]),
    )
    .unwrap();
    cases.push((
        "extra column",
        RowBatch {
            obs: extra,
            x: good.x.clone(),
        },
    ));
    let wrong_type = RecordBatch::try_from_iter(good.obs.schema().fields().iter().map(|f| {
        let col = good.obs.column_by_name(f.name()).unwrap().clone();
        let col: ArrayRef = if f.name() == "a" {
            Arc::new(StringArray::from_iter_values(
                (0..N_OBS).map(|i| i.to_string()),
            ))
        } else {
            col
        };
        (f.name().clone(), col)
    }))
    .unwrap();
    cases.push((
        "wrong type",
        RowBatch {
            obs: wrong_type,
            x: good.x.clone(),
        },
    ));
    cases.push((
        "short X",
        RowBatch {
            obs: good.obs.clone(),
            x: Some(XRows::Dense(vec![0.0; N_OBS * N_VARS - 1])),
        },
    ));
    cases.push((
        "no X",
        RowBatch {
            obs: good.obs.clone(),
            x: None,
        },
    ));
    cases.push((
        "sparse X for a dense table",
        RowBatch {
            obs: good.obs.clone(),
            x: Some(XRows::Csr {
                indptr: vec![0; N_OBS + 1],
                indices: vec![],
                data: vec![],
            }),
        },
    ));
    for (what, rows) in cases {
        let err = ds.append_rows("table", &rows, None, None).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{what}: {err}");
        // Refused before anything was written: no file changed, not even a chunk.
        tree.assert_unchanged(what);
    }
    assert_eq!(ds.generation().unwrap(), generation);
    assert_eq!(ds.table_info("table").unwrap().n_obs, 100);
    // A later good append lands right after the committed rows.
    let out = ds.append_rows("table", &good, None, None).unwrap();
    assert_eq!((out.start, out.end), (100, 200));
    assert_seed_table(&ds, 1);
}

#[test]
fn appends_in_one_transaction_commit_together() {
    let dir = common::tempdir();
    let ds = seeded_dataset(&dir.path().join("sd.zarr"));
    let tree = common::TreeSnapshot::take(ds.root());
    {
        let mut txn = ds.write().unwrap();
        let a = txn
            .append_rows("table", &seed_rows(1), None, Some("k1"))
            .unwrap();
        let b = txn
            .append_rows("table", &seed_rows(2), None, Some("k2"))
            .unwrap();
        assert_eq!((a.start, b.start, b.end), (100, 200, 300));
        let again = txn
            .append_rows("table", &seed_rows(2), None, Some("k2"))
            .unwrap();
        assert!(!again.applied);
        assert_eq!(
            ds.table_info("table").unwrap().n_obs,
            100,
            "invisible before commit"
        );
        // Dropped: rolled back.
    }
    assert_eq!(ds.table_info("table").unwrap().n_obs, 100);
    tree.assert_unchanged("a dropped transaction of appends");
    let mut txn = ds.write().unwrap();
    txn.append_rows("table", &seed_rows(1), None, Some("k1"))
        .unwrap();
    txn.append_rows("table", &seed_rows(2), None, Some("k2"))
        .unwrap();
    txn.commit().unwrap();
    assert_seed_table(&ds, 2);
}

#[test]
fn csr_tables_and_nullable_columns_round_trip() {
    let dir = common::tempdir();
    let ds = Dataset::create(&dir.path().join("sd.zarr"), DatasetOptions::default()).unwrap();
    let spec = TableSpec {
        x: XSpec::Csr {
            dtype: Prim::F32,
            var_names: vec!["g0".into(), "g1".into(), "g2".into()],
        },
        ..TableSpec::default()
    };
    let rows = |region: &str, base: i64| RowBatch {
        obs: RecordBatch::try_from_iter(vec![
            (
                "region",
                Arc::new(StringArray::from(vec![region, region])) as ArrayRef,
            ),
            (
                "instance_id",
                Arc::new(Int64Array::from(vec![base, base + 1])) as ArrayRef,
            ),
            (
                "label",
                Arc::new(StringArray::from(vec![Some("x"), None])) as ArrayRef,
            ),
            (
                "count",
                Arc::new(Int64Array::from(vec![None, Some(7)])) as ArrayRef,
            ),
        ])
        .unwrap(),
        x: Some(XRows::Csr {
            indptr: vec![0, 1, 3],
            indices: vec![2, 0, 1],
            data: vec![1.5, 2.0, 3.0],
        }),
    };
    ds.append_rows("cells", &rows("a", 1), Some(&spec), None)
        .unwrap();
    ds.append_rows("cells", &rows("b", 1), None, None).unwrap();
    let info = ds.table_info("cells").unwrap();
    assert_eq!((info.n_obs, info.n_vars), (4, 3));
    assert_eq!(info.regions, vec!["a", "b"]);
    let back = ds.read_rows("cells", 0..4).unwrap();
    let label = back.column_by_name("label").unwrap().as_string::<i32>();
    assert_eq!(
        label.iter().collect::<Vec<_>>(),
        vec![Some("x"), None, Some("x"), None]
    );
    let count = back
        .column_by_name("count")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(
        count.iter().collect::<Vec<_>>(),
        vec![None, Some(7), None, Some(7)]
    );
    match ds.read_x_rows("cells", 1..4).unwrap() {
        Some(XRows::Csr {
            indptr,
            indices,
            data,
        }) => {
            assert_eq!(indptr, vec![0, 2, 3, 5]);
            assert_eq!(indices, vec![0, 1, 2, 0, 1]);
            assert_eq!(data, vec![2.0, 3.0, 1.5, 2.0, 3.0]);
        }
        other => panic!("{other:?}"),
    }
    // Missing values in a key column are refused.
    let mut bad = rows("c", 1);
    bad.obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from(vec![Some("c"), None])) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        ),
        (
            "label",
            Arc::new(StringArray::from(vec![Some("x"), None])) as ArrayRef,
        ),
        (
            "count",
            Arc::new(Int64Array::from(vec![None, Some(7)])) as ArrayRef,
        ),
    ])
    .unwrap();
    assert!(ds.append_rows("cells", &bad, None, None).is_err());
    assert!(ds.check(true).unwrap().is_ok());
}

#[test]
fn removing_a_table_forgets_its_keys() {
    let dir = common::tempdir();
    let ds = seeded_dataset(&dir.path().join("sd.zarr"));
    ds.remove("table").unwrap();
    let out = ds
        .append_rows("table", &seed_rows(0), Some(&seed_spec()), Some("worker-0"))
        .unwrap();
    assert!(
        out.applied,
        "a new table must not inherit the old table's keys"
    );
}

#[test]
fn keys_reused_with_other_rows_are_refused() {
    let dir = common::tempdir();
    let ds = seeded_dataset(&dir.path().join("sd.zarr"));
    let first = ds
        .append_rows("table", &seed_rows(1), None, Some("tile-1"))
        .unwrap();
    let tree = common::TreeSnapshot::take(ds.root());
    let err = ds
        .append_rows("table", &seed_rows(2), None, Some("tile-1"))
        .unwrap_err();
    match &err {
        Error::KeyReused {
            element,
            key,
            start,
            end,
        } => assert_eq!(
            (element.as_str(), key.as_str(), *start, *end),
            ("table", "tile-1", first.start, first.end)
        ),
        other => panic!("expected KeyReused, got {other}"),
    }
    assert!(err.to_string().contains("100..200"), "{err}");
    tree.assert_unchanged("a key reused with other rows");
    // Other X under the same key is other rows too.
    let mut other_x = seed_rows(1);
    other_x.x = Some(XRows::Dense(vec![0.5; N_OBS * N_VARS]));
    assert!(matches!(
        ds.append_rows("table", &other_x, None, Some("tile-1")),
        Err(Error::KeyReused { .. })
    ));
    // The same rows again: a no-op.
    let again = ds
        .append_rows("table", &seed_rows(1), None, Some("tile-1"))
        .unwrap();
    assert!(!again.applied);
    tree.assert_unchanged("a retry with the same rows");

    // Pending in one transaction: the same check.
    {
        let mut txn = ds.write().unwrap();
        txn.append_rows("table", &seed_rows(2), None, Some("tile-2"))
            .unwrap();
        assert!(matches!(
            txn.append_rows("table", &seed_rows(3), None, Some("tile-2")),
            Err(Error::KeyReused { .. })
        ));
        let again = txn
            .append_rows("table", &seed_rows(2), None, Some("tile-2"))
            .unwrap();
        assert!(!again.applied);
        txn.commit().unwrap();
    }

    // A record written before digests were kept matches any rows.
    let record = ds
        .root()
        .join(spatialzarr::table::key_record_path("table", "tile-1").unwrap());
    std::fs::write(&record, r#"{"key":"tile-1","start":100,"end":200}"#).unwrap();
    let legacy = ds
        .append_rows("table", &seed_rows(7), None, Some("tile-1"))
        .unwrap();
    assert!(!legacy.applied);
    assert_eq!((legacy.start, legacy.end), (100, 200));
    assert_eq!(ds.table_info("table").unwrap().n_obs, 300);
}

/// Rows of `n` regions `r{first}`..: one row each, instance ids from 0.
fn region_rows(first: usize, n: usize) -> RowBatch {
    let obs = RecordBatch::try_from_iter(vec![
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        (
            "region",
            Arc::new(StringArray::from_iter_values(
                (first..first + n).map(|r| format!("r{r}")),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    RowBatch { obs, x: None }
}

#[test]
fn categories_and_regions_past_one_chunk_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ds.zarr");
    let ds = Dataset::create(&path, DatasetOptions::default()).unwrap();
    let list_chunk = spatialzarr::table::arrays::LIST_CHUNK as usize;
    // A table's short lists are chunked small; more values than one chunk holds
    // span several chunks, grown over two appends.
    let first = list_chunk + 10;
    ds.append_rows(
        "t",
        &region_rows(0, first),
        Some(&TableSpec::default()),
        None,
    )
    .unwrap();
    ds.append_rows("t", &region_rows(first - 5, 20), None, None)
        .unwrap();
    let total = first + 15;
    let table = path.join("tables/t");
    for list in ["obs/region/categories", "uns/spatialdata_attrs/region"] {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(table.join(list).join("zarr.json")).unwrap())
                .unwrap();
        assert_eq!(
            doc["chunk_grid"]["configuration"]["chunk_shape"],
            serde_json::json!([list_chunk]),
            "{list}"
        );
        assert_eq!(doc["shape"], serde_json::json!([total]), "{list}");
    }
    let ds = open(&path);
    let info = ds.table_info("t").unwrap();
    let mut expected: Vec<String> = (0..total).map(|r| format!("r{r}")).collect();
    expected.sort();
    assert_eq!(info.regions, expected);
    let rows = ds.read_rows("t", 0..info.n_obs).unwrap();
    let region = rows
        .column_by_name("region")
        .unwrap()
        .as_dictionary::<Int32Type>();
    let names = region.values().as_string::<i32>();
    let read: Vec<String> = (0..rows.num_rows())
        .map(|row| names.value(region.keys().value(row) as usize).to_owned())
        .collect();
    let written: Vec<String> = (0..first)
        .chain(first - 5..first + 15)
        .map(|r| format!("r{r}"))
        .collect();
    assert_eq!(read, written);
    let report = ds.check(true).unwrap();
    assert!(report.is_ok(), "{report:?}");
}
