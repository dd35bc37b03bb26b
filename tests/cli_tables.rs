//! `spatialzarr append-rows` through the real binary: table creation and appends
//! from CSV (+ .npy X), idempotency keys, 16 concurrent appending processes, bad
//! inputs, and spatialdata (Python) reading the result.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use common::{
    assert_fails, cli, generation, new_dataset, s, spatialdata_reads, sz, sz_ok, write_file,
};
use ndarray::Array2;
use ndarray_npy::write_npy;
use serde_json::{Value, json};
use spatialzarr::table::XRows;
use spatialzarr::{Dataset, DatasetOptions};

fn open(ds: &Path) -> Dataset {
    Dataset::open(ds, DatasetOptions::default()).expect("open dataset")
}

fn npy_file<T: ndarray_npy::WritableElement>(dir: &Path, file: &str, array: &Array2<T>) -> PathBuf {
    let path = dir.join(file);
    write_npy(&path, array).expect("write npy");
    path
}

/// A column of strings (plain or dictionary-encoded), missing values as `None`.
fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch.column_by_name(name).expect("column");
    match column.data_type() {
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect(),
        DataType::Dictionary(_, _) => {
            let dict = column.as_dictionary::<Int32Type>();
            let values = dict.values().as_string::<i32>();
            dict.keys()
                .iter()
                .map(|k| k.map(|k| values.value(k as usize).to_owned()))
                .collect()
        }
        other => panic!("column {name} is {other}, not strings"),
    }
}

fn floats(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let column = batch.column_by_name(name).expect("column");
    column.as_primitive::<Float64Type>().iter().collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let column = batch.column_by_name(name).expect("column");
    column.as_primitive::<Int64Type>().iter().collect()
}

fn bools(batch: &RecordBatch, name: &str) -> Vec<Option<bool>> {
    let column = batch.column_by_name(name).expect("column");
    column.as_boolean().iter().collect()
}

fn dense_x(dataset: &Dataset, table: &str, range: std::ops::Range<u64>) -> Vec<f64> {
    match dataset.read_x_rows(table, range).unwrap() {
        Some(XRows::Dense(values)) => values,
        other => panic!("not dense X: {other:?}"),
    }
}

#[test]
fn append_rows_creates_then_appends_once_per_key() {
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);

    // First append: creates the table, with a float32 X and named variables.
    let first = write_file(
        d,
        "first.csv",
        "region,instance_id,area,code,flag,note\n\
         cells,1,1.5,a1,true,hello\n\
         cells,2,2.25,a2,false,\n\
         cells,3,3.5,a3,true,\"with, comma\"\n",
    );
    let x_first = npy_file(
        d,
        "first.npy",
        &Array2::from_shape_fn((3, 2), |(r, c)| (r * 2 + c) as f32 + 0.5),
    );
    assert_eq!(
        sz_ok(&[
            "append-rows",
            s(&ds),
            "obs",
            "--csv",
            s(&first),
            "--x-npy",
            s(&x_first),
            "--var-names",
            "g1,g2",
        ]),
        format!(
            "appended rows 0..3 to obs (generation {})\n",
            generation(&ds)
        )
    );

    // Second append: the float column holds integers, the string column holds
    // numbers, and the region looks numeric: all keep the table's types.
    let second = write_file(
        d,
        "second.csv",
        "region,instance_id,area,code,flag,note\n\
         42,4,4,17,false,x\n\
         42,5,5,18,true,y\n",
    );
    let x_second = npy_file(
        d,
        "second.npy",
        &Array2::from_shape_fn((2, 2), |(r, c)| (10 + r * 2 + c) as f64),
    );
    let appended = |csv: &Path, npy: &Path, extra: &[&str]| -> String {
        let mut args = vec![
            "append-rows",
            "--lock-timeout",
            "60",
            s(&ds),
            "obs",
            "--csv",
            s(csv),
            "--x-npy",
            s(npy),
        ];
        args.extend_from_slice(extra);
        sz_ok(&args)
    };
    assert_eq!(
        appended(&second, &x_second, &["--json"]),
        format!(
            "{{\"table\":\"obs\",\"start\":3,\"stop\":5,\"key\":null,\"applied\":true,\"generation\":{}}}\n",
            generation(&ds)
        )
    );

    assert_eq!(
        sz_ok(&["info", s(&ds), "obs", "--json"]),
        "{\"type\":\"table\",\"n_obs\":5,\"n_vars\":2,\"regions\":[\"42\",\"cells\"],\
         \"region_key\":\"region\",\"instance_key\":\"instance_id\",\
         \"columns\":[\"region\",\"instance_id\",\"area\",\"code\",\"flag\",\"note\"],\
         \"column_kinds\":[\"categorical\",\"int64\",\"float64\",\"nullable string\",\"bool\",\"nullable string\"]}\n"
    );
    let text = sz_ok(&["info", s(&ds), "obs"]);
    for line in [
        "columns: region, instance_id, area, code, flag, note",
        "column kinds: categorical, int64, float64, nullable string, bool, nullable string",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in {text}");
    }

    // Keyed appends: each repeated three times, counted once.
    let third = write_file(
        d,
        "third.csv",
        "region,instance_id,area,code,flag,note\ncells,6,6.5,b,true,z\ncells,7,7.5,c,false,w\n",
    );
    let x_third = npy_file(d, "third.npy", &Array2::from_elem((2, 2), 0.25f32));
    for attempt in 0..3 {
        let out = appended(&third, &x_third, &["--json", "--key", "k1"]);
        let expected = json!({"table": "obs", "start": 5, "stop": 7, "key": "k1",
            "applied": attempt == 0, "generation": generation(&ds)});
        assert_eq!(out.lines().count(), 1, "{out}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), expected);
        // Key order is fixed: other tools parse it by position too.
        assert!(
            out.starts_with(
                "{\"table\":\"obs\",\"start\":5,\"stop\":7,\"key\":\"k1\",\"applied\":"
            )
        );
    }
    for attempt in 0..3 {
        let out = appended(&third, &x_third, &["--key", "k2"]);
        if attempt == 0 {
            assert_eq!(
                out,
                format!(
                    "appended rows 7..9 to obs (generation {})\n",
                    generation(&ds)
                )
            );
        } else {
            assert_eq!(
                out,
                format!(
                    "key k2 already appended as rows 7..9 to obs; nothing changed (generation {})\n",
                    generation(&ds)
                )
            );
        }
    }
    // A key sent again with other rows is refused, naming the key and the range
    // it committed, and changes no byte.
    let before = common::TreeSnapshot::take(&ds);
    let mut args = vec![
        "append-rows",
        s(&ds),
        "obs",
        "--csv",
        s(&second),
        "--x-npy",
        s(&x_second),
    ];
    args.extend(["--json", "--key", "k1"]);
    assert_fails(&sz(&args), 1, &["\"k1\"", "5..7", "other rows"]);
    before.assert_unchanged("a key reused with other rows");

    let dataset = open(&ds);
    let info = dataset.table_info("obs").unwrap();
    assert_eq!((info.n_obs, info.n_vars), (9, 2));
    let rows = dataset.read_rows("obs", 0..9).unwrap();
    let some = |v: &[&str]| -> Vec<Option<String>> {
        v.iter()
            .map(|s| (!s.is_empty()).then(|| (*s).to_owned()))
            .collect()
    };
    assert_eq!(
        strings(&rows, "region"),
        some(&[
            "cells", "cells", "cells", "42", "42", "cells", "cells", "cells", "cells"
        ])
    );
    assert_eq!(
        ints(&rows, "instance_id"),
        [1, 2, 3, 4, 5, 6, 7, 6, 7].map(Some)
    );
    assert_eq!(
        floats(&rows, "area"),
        [1.5, 2.25, 3.5, 4.0, 5.0, 6.5, 7.5, 6.5, 7.5].map(Some)
    );
    assert_eq!(
        strings(&rows, "code"),
        some(&["a1", "a2", "a3", "17", "18", "b", "c", "b", "c"])
    );
    assert_eq!(
        bools(&rows, "flag"),
        [true, false, true, false, true, true, false, true, false].map(Some)
    );
    assert_eq!(
        strings(&rows, "note"),
        some(&["hello", "", "with, comma", "x", "y", "z", "w", "z", "w"])
    );
    assert_eq!(
        dense_x(&dataset, "obs", 0..9),
        [
            0.5, 1.5, 2.5, 3.5, 4.5, 5.5, // first (float32)
            10.0, 11.0, 12.0, 13.0, // second (float64 into the float32 X)
            0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, // third, twice
        ]
    );
    sz_ok(&["check", s(&ds)]);

    // A table without X, with other key columns, from a CSV whose numbers are ints.
    let plain = write_file(d, "plain.csv", "roi,cell,count\nimg,10,3\nimg,11,\n");
    sz_ok(&[
        "append-rows",
        s(&ds),
        "counts",
        "--csv",
        s(&plain),
        "--region-key",
        "roi",
        "--instance-key",
        "cell",
    ]);
    // Later appends need not repeat the keys (and may repeat them).
    sz_ok(&["append-rows", s(&ds), "counts", "--csv", s(&plain)]);
    sz_ok(&[
        "append-rows",
        s(&ds),
        "counts",
        "--csv",
        s(&plain),
        "--region-key",
        "roi",
    ]);
    assert_eq!(
        sz_ok(&["info", s(&ds), "counts", "--json"]),
        "{\"type\":\"table\",\"n_obs\":6,\"n_vars\":0,\"regions\":[\"img\"],\
         \"region_key\":\"roi\",\"instance_key\":\"cell\",\"columns\":[\"roi\",\"cell\",\"count\"],\
         \"column_kinds\":[\"categorical\",\"int64\",\"nullable int64\"]}\n"
    );
    let rows = open(&ds).read_rows("counts", 0..6).unwrap();
    assert_eq!(
        ints(&rows, "count"),
        [Some(3), None, Some(3), None, Some(3), None]
    );
    assert_eq!(
        sz_ok(&["ls", s(&ds), "--json"]).trim_end(),
        r#"{"images":[],"labels":[],"points":[],"shapes":[],"tables":["counts","obs"]}"#
    );
    sz_ok(&["check", s(&ds)]);
}

/// What one append of the acceptance test writes: 500 rows of worker `w`'s `i`-th
/// append.
struct Chunk {
    w: usize,
    i: usize,
}

const ROWS: usize = 500;
const X_WIDTH: usize = 5;

impl Chunk {
    fn region(&self) -> String {
        format!("labels_w{}", self.w)
    }
    fn serial(&self, r: usize) -> usize {
        (self.w * 20 + self.i) * ROWS + r
    }
    fn instance(&self, r: usize) -> i64 {
        (self.i * ROWS + r) as i64
    }
    fn area(&self, r: usize) -> f64 {
        self.serial(r) as f64 / 4.0
    }
    fn score(&self, r: usize) -> Option<i64> {
        (!r.is_multiple_of(7)).then(|| self.serial(r) as i64 * 3 - 1000)
    }
    fn flag(&self, r: usize) -> bool {
        (self.w + self.i + r).is_multiple_of(3)
    }
    fn name(&self, r: usize) -> String {
        format!("w{}i{}r{r}", self.w, self.i)
    }
    fn note(&self, r: usize) -> Option<String> {
        (!r.is_multiple_of(5)).then(|| format!("n{}", r % 13))
    }
    fn x(&self) -> Array2<f32> {
        Array2::from_shape_fn((ROWS, X_WIDTH), |(r, c)| {
            (self.serial(r) * X_WIDTH + c) as f32
        })
    }
    fn csv(&self) -> String {
        let mut text = String::from("region,instance_id,area,score,flag,name,note\n");
        for r in 0..ROWS {
            // `{:?}` keeps a `.0` on whole floats, so `area` is read as float64.
            text.push_str(&format!(
                "{},{},{:?},{},{},{},{}\n",
                self.region(),
                self.instance(r),
                self.area(r),
                self.score(r).map_or(String::new(), |v| v.to_string()),
                self.flag(r),
                self.name(r),
                self.note(r).unwrap_or_default()
            ));
        }
        text
    }
    /// Asserts that rows `batch` (and X values `x`) are this chunk's.
    fn assert_rows(&self, batch: &RecordBatch, x: &[f64]) {
        let what = format!("append w{}-{}", self.w, self.i);
        assert_eq!(batch.num_rows(), ROWS, "{what}");
        let all = 0..ROWS;
        assert_eq!(
            strings(batch, "region"),
            all.clone().map(|_| Some(self.region())).collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(
            ints(batch, "instance_id"),
            all.clone()
                .map(|r| Some(self.instance(r)))
                .collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(
            floats(batch, "area"),
            all.clone().map(|r| Some(self.area(r))).collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(
            ints(batch, "score"),
            all.clone().map(|r| self.score(r)).collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(
            bools(batch, "flag"),
            all.clone().map(|r| Some(self.flag(r))).collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(
            strings(batch, "name"),
            all.clone().map(|r| Some(self.name(r))).collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(
            strings(batch, "note"),
            all.map(|r| self.note(r)).collect::<Vec<_>>(),
            "{what}"
        );
        let expected: Vec<f64> = self.x().iter().map(|&v| f64::from(v)).collect();
        assert_eq!(x, expected.as_slice(), "{what}: X");
    }
}

/// The acceptance test: 16 processes each append 20 CSVs of 500 rows (with X)
/// through the CLI, concurrently.
#[test]
fn sixteen_concurrent_cli_appenders_lose_nothing() {
    const WORKERS: usize = 16;
    const EACH: usize = 20;
    let started = Instant::now();
    let dir = common::tempdir();
    let d = dir.path();
    let ds = new_dataset(d);
    let file = |w: usize, i: usize, ext: &str| d.join(format!("w{w}-{i}.{ext}"));
    for w in 0..WORKERS {
        for i in 0..EACH {
            let chunk = Chunk { w, i };
            std::fs::write(file(w, i, "csv"), chunk.csv()).unwrap();
            write_npy(file(w, i, "npy"), &chunk.x()).unwrap();
        }
    }
    let written = started.elapsed();

    // Each worker is one shell running its 20 appends one after the other; the 16
    // shells run at the same time, and all of them race to create the table.
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let script: Vec<String> = (0..EACH)
                .map(|i| {
                    format!(
                        "'{}' append-rows --lock-timeout 300 '{}' cells --csv '{}' --x-npy '{}' --json --key w{w}-{i}",
                        s(&cli()),
                        s(&ds),
                        s(&file(w, i, "csv")),
                        s(&file(w, i, "npy")),
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
    // (worker, index) -> (start, end), from each call's --json outcome.
    let mut ranges: BTreeMap<(usize, usize), (u64, u64)> = BTreeMap::new();
    for (w, child) in workers.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker {w} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), EACH, "worker {w}: {stdout}");
        let mut previous_end = 0;
        for (i, line) in lines.iter().enumerate() {
            let outcome: Value = serde_json::from_str(line).unwrap();
            assert_eq!(outcome["table"], "cells", "{line}");
            assert_eq!(outcome["key"], format!("w{w}-{i}"), "{line}");
            assert_eq!(outcome["applied"], true, "{line}");
            let start = outcome["start"].as_u64().unwrap();
            let end = outcome["stop"].as_u64().unwrap();
            assert_eq!(end - start, ROWS as u64, "{line}");
            assert!(
                i == 0 || start >= previous_end,
                "worker {w}'s appends out of order: {line}"
            );
            previous_end = end;
            ranges.insert((w, i), (start, end));
        }
    }
    let appended = started.elapsed();

    // The appends tile 0..160000: sorted by start, each begins where the last ended.
    let total = (WORKERS * EACH * ROWS) as u64;
    let mut by_start: Vec<(u64, u64)> = ranges.values().copied().collect();
    by_start.sort();
    assert_eq!(by_start.len(), WORKERS * EACH);
    for (k, (start, end)) in by_start.iter().enumerate() {
        assert_eq!(
            *start,
            (k * ROWS) as u64,
            "ranges not contiguous: {by_start:?}"
        );
        assert_eq!(*end, start + ROWS as u64);
    }
    assert_eq!(by_start.last().unwrap().1, total);

    let mut regions: Vec<String> = (0..WORKERS).map(|w| format!("labels_w{w}")).collect();
    regions.sort();
    let info: Value = serde_json::from_str(&sz_ok(&["info", s(&ds), "cells", "--json"])).unwrap();
    assert_eq!(
        info,
        json!({
            "type": "table", "n_obs": total, "n_vars": X_WIDTH, "regions": regions,
            "region_key": "region", "instance_key": "instance_id",
            "columns": ["region", "instance_id", "area", "score", "flag", "name", "note"],
            "column_kinds": ["categorical", "int64", "float64", "nullable int64", "bool",
                "nullable string", "nullable string"],
        })
    );
    sz_ok(&["check", s(&ds)]);

    // Every append's rows hold exactly its CSV's values (and its X rows).
    let dataset = open(&ds);
    assert_eq!(dataset.table_info("cells").unwrap().n_obs, total);
    let all = dataset.read_rows("cells", 0..total).unwrap();
    let x = dense_x(&dataset, "cells", 0..total);
    for (&(w, i), &(start, end)) in &ranges {
        let rows = all.slice(start as usize, ROWS);
        let x_rows = &x[start as usize * X_WIDTH..end as usize * X_WIDTH];
        Chunk { w, i }.assert_rows(&rows, x_rows);
    }
    let checked = started.elapsed();

    // spatialdata reads the table.
    let seen = spatialdata_reads(&ds);
    let tables = seen["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{:?}", seen["tables"]);
    let t = &tables[0];
    assert_eq!(t["name"], "cells");
    assert_eq!(t["n_obs"], total);
    assert_eq!(t["n_vars"], X_WIDTH);
    assert_eq!(t["region"], json!(regions));
    assert_eq!(t["regions_present"], json!(regions));
    assert_eq!(t["region_key"], "region");
    assert_eq!(t["instance_key"], "instance_id");
    assert_eq!(t["obs_dtypes"]["region"], "category");
    assert_eq!(t["X_shape"], json!([total, X_WIDTH]));
    let mut area = vec![0.0; total as usize];
    let mut score = vec![Value::Null; total as usize];
    let mut name = vec![String::new(); total as usize];
    for (&(w, i), &(start, _)) in &ranges {
        let chunk = Chunk { w, i };
        for r in 0..ROWS {
            area[start as usize + r] = chunk.area(r);
            score[start as usize + r] = json!(chunk.score(r));
            name[start as usize + r] = chunk.name(r);
        }
    }
    assert_eq!(t["obs"]["area"], json!(area));
    assert_eq!(t["obs"]["score"], json!(score));
    assert_eq!(t["obs"]["name"], json!(name));
    let x_sum: f64 = x.iter().sum();
    assert_eq!(t["X_sum"].as_f64().unwrap(), x_sum);
    eprintln!(
        "timings: files {:.1}s, appends {:.1}s, library checks {:.1}s, spatialdata {:.1}s",
        written.as_secs_f64(),
        (appended - written).as_secs_f64(),
        (checked - appended).as_secs_f64(),
        (started.elapsed() - checked).as_secs_f64()
    );
}

/// A dataset `d/ds.zarr` with table `t` made of the two CSV rows `rows` (under
/// `header`, in `d/good.csv`) and a dense X of 2 x 3 zeros (`d/x2.npy`); returns the
/// three paths.
fn table_of_two_rows(d: &Path, header: &str, rows: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ds = new_dataset(d);
    let good = write_file(d, "good.csv", &format!("{header}{rows}"));
    let x2 = npy_file(d, "x2.npy", &Array2::<f64>::zeros((2, 3)));
    sz_ok(&[
        "append-rows",
        s(&ds),
        "t",
        "--csv",
        s(&good),
        "--x-npy",
        s(&x2),
    ]);
    (ds, good, x2)
}

#[test]
fn bad_inputs_change_nothing() {
    let dir = common::tempdir();
    let d = dir.path();
    let header = "region,instance_id,area,flag,note\n";
    let (ds, good, x2) = table_of_two_rows(d, header, "cells,1,1.5,true,a\ncells,2,2.5,false,b\n");
    let dataset = open(&ds);
    let generation = dataset.generation().unwrap();
    let rows_before = dataset.read_rows("t", 0..2).unwrap();
    let listing = sz_ok(&["ls", s(&ds), "--json"]);

    let missing = d.join("missing.csv");
    let ragged = write_file(
        d,
        "ragged.csv",
        &format!("{header}cells,3,3.5,true,c\ncells,4,4.5,true\n"),
    );
    let no_region = write_file(
        d,
        "noregion.csv",
        "instance_id,area,flag,note\n3,3.5,true,c\n",
    );
    let no_rows = write_file(d, "norows.csv", header);
    let empty = write_file(d, "empty.csv", "");
    let wrong_type = write_file(
        d,
        "wrongtype.csv",
        &format!("{header}cells,3,big,true,c\ncells,4,4.5,false,d\n"),
    );
    let int_into_bool = write_file(
        d,
        "intbool.csv",
        &format!("{header}cells,3,3.5,1,c\ncells,4,4.5,0,d\n"),
    );
    let extra_column = write_file(
        d,
        "extra.csv",
        "region,instance_id,area,flag,note,more\ncells,3,3.5,true,c,1\ncells,4,4.5,true,d,2\n",
    );
    let one_row = write_file(d, "onerow.csv", &format!("{header}cells,3,3.5,true,c\n"));
    let x3 = npy_file(d, "x3rows.npy", &Array2::<f32>::zeros((3, 3)));
    let x_wide = npy_file(d, "xwide.npy", &Array2::<f32>::zeros((2, 4)));
    let x_1d = d.join("x1d.npy");
    write_npy(&x_1d, &ndarray::Array1::<f64>::zeros(2)).unwrap();
    let not_npy = write_file(d, "junk.npy", "not a numpy file");
    let no_dataset = d.join("no_dataset.zarr");

    // Every refused command must leave every file as it was (same bytes, same inode).
    let tree = common::TreeSnapshot::take(&ds);
    let sz = |args: &[&str]| -> Output {
        let out = sz(args);
        tree.assert_unchanged(&format!("{args:?}"));
        out
    };
    let append = |csv: &Path, npy: Option<&Path>, extra: &[&str]| -> Output {
        let mut args = vec!["append-rows", s(&ds), "t", "--csv", s(csv)];
        if let Some(npy) = npy {
            args.extend(["--x-npy", s(npy)]);
        }
        args.extend_from_slice(extra);
        sz(&args)
    };
    let cases: Vec<(Output, Vec<&str>)> = vec![
        (
            append(&missing, Some(&x2), &[]),
            vec!["missing.csv", "No such file"],
        ),
        (
            append(&ragged, Some(&x2), &[]),
            vec!["ragged.csv", "line 3"],
        ),
        (
            append(&no_region, Some(&x2), &[]),
            vec!["noregion.csv", "\"region\""],
        ),
        (
            append(&no_rows, Some(&x2), &[]),
            vec!["x2.npy", "2 rows", "norows.csv", "0 rows"],
        ),
        (append(&empty, Some(&x2), &[]), vec!["empty.csv", "header"]),
        (
            append(&good, Some(&x3), &[]),
            vec!["x3rows.npy", "3 rows", "good.csv", "2 rows"],
        ),
        (
            append(&good, Some(&x_wide), &[]),
            vec!["xwide.npy", "4 columns", "3 variables"],
        ),
        (append(&good, Some(&x_1d), &[]), vec!["x1d.npy", "2-d"]),
        (
            append(&good, Some(&not_npy), &[]),
            vec!["junk.npy", "not a valid .npy"],
        ),
        (append(&good, None, &[]), vec!["good.csv", "X"]),
        (
            append(&wrong_type, Some(&x2), &[]),
            vec!["wrongtype.csv", "\"area\"", "float64"],
        ),
        (
            append(&int_into_bool, Some(&x2), &[]),
            vec!["intbool.csv", "\"flag\""],
        ),
        (
            append(&extra_column, Some(&x2), &[]),
            vec!["extra.csv", "more"],
        ),
        (
            append(&good, Some(&x2), &["--region-key", "roi"]),
            vec!["--region-key", "\"region\"", "\"roi\""],
        ),
        (
            append(&good, Some(&x2), &["--instance-key", "cell"]),
            vec!["--instance-key", "\"instance_id\"", "\"cell\""],
        ),
        (
            append(&good, Some(&x2), &["--key", ""]),
            vec!["idempotency key"],
        ),
        (
            append(&good, None, &["--var-names", "a,b,c"]),
            vec!["--var-names", "--x-npy"],
        ),
        (
            sz(&[
                "append-rows",
                s(&ds),
                "new",
                "--csv",
                s(&good),
                "--x-npy",
                s(&x2),
                "--var-names",
                "a,b",
            ]),
            vec!["--var-names", "2 names", "3 columns"],
        ),
        (
            sz(&[
                "append-rows",
                s(&ds),
                "new",
                "--csv",
                s(&one_row),
                "--region-key",
                "roi",
            ]),
            vec!["onerow.csv", "\"roi\""],
        ),
        (
            sz(&["append-rows", s(&ds), "../new", "--csv", s(&good)]),
            vec!["invalid element name"],
        ),
        (
            sz(&["append-rows", s(&no_dataset), "t", "--csv", s(&good)]),
            vec!["no_dataset.zarr", "does not exist", "spatialzarr init"],
        ),
    ];
    for (out, words) in &cases {
        assert_fails(out, 1, words);
    }
    // Usage errors: exit status 2.
    assert_fails(&sz(&["append-rows", s(&ds), "t"]), 2, &["--csv"]);
    assert_fails(&sz(&["append-rows", s(&ds)]), 2, &[]);

    assert!(!no_dataset.exists(), "a missing dataset was created");
    assert_eq!(
        sz_ok(&["ls", s(&ds), "--json"]),
        listing,
        "a table was created"
    );
    let dataset = open(&ds);
    assert_eq!(dataset.generation().unwrap(), generation);
    let info = dataset.table_info("t").unwrap();
    assert_eq!((info.n_obs, info.n_vars), (2, 3));
    assert_eq!(dataset.read_rows("t", 0..2).unwrap(), rows_before);
    sz_ok(&["check", s(&ds)]);

    // The table still takes good rows.
    assert_eq!(
        sz_ok(&[
            "append-rows",
            s(&ds),
            "t",
            "--csv",
            s(&good),
            "--x-npy",
            s(&x2)
        ]),
        format!(
            "appended rows 2..4 to t (generation {})\n",
            common::generation(&ds)
        )
    );
}

/// The row range of an append's `--json` outcome.
fn json_range(outcome: &Value) -> (u64, u64) {
    (
        outcome["start"].as_u64().expect("start"),
        outcome["stop"].as_u64().expect("stop"),
    )
}

#[test]
fn empty_appends_record_their_key_and_append_nothing() {
    let dir = common::tempdir();
    let d = dir.path();
    let header = "region,instance_id,area\n";
    let (ds, good, x2) = table_of_two_rows(d, header, "cells,1,1.5\ncells,2,2.5\n");
    let no_rows = write_file(d, "norows.csv", header);
    let x0 = npy_file(d, "x0.npy", &Array2::<f64>::zeros((0, 3)));

    // Into an existing table: the key is recorded, nothing is appended, with or
    // without the (empty) X rows.
    for (key, x) in [("tile-empty", None), ("tile-empty-x", Some(&x0))] {
        let mut args = vec!["append-rows", s(&ds), "t", "--csv", s(&no_rows)];
        if let Some(x) = x {
            args.extend(["--x-npy", s(x)]);
        }
        args.extend(["--key", key, "--json"]);
        for attempt in 0..2 {
            let out: Value = serde_json::from_str(&sz_ok(&args)).unwrap();
            assert_eq!(json_range(&out), (2, 2), "{out}");
            assert_eq!(out["applied"], json!(attempt == 0), "{out}");
            assert_eq!(out["key"], json!(key));
        }
    }
    let dataset = open(&ds);
    let info = dataset.table_info("t").unwrap();
    assert_eq!((info.n_obs, info.n_vars), (2, 3));
    // The empty append's key now stands for no rows: other rows under it are refused.
    let before = common::TreeSnapshot::take(&ds);
    assert_fails(
        &sz(&[
            "append-rows",
            s(&ds),
            "t",
            "--csv",
            s(&good),
            "--x-npy",
            s(&x2),
            "--key",
            "tile-empty",
        ]),
        1,
        &["\"tile-empty\"", "2..2"],
    );
    before.assert_unchanged("rows under the key of an empty append");

    // Into a missing table: its columns are unknown.
    assert_fails(
        &sz(&[
            "append-rows",
            s(&ds),
            "fresh",
            "--csv",
            s(&no_rows),
            "--key",
            "k",
        ]),
        1,
        &["norows.csv", "fresh", "columns are unknown"],
    );
    before.assert_unchanged("an empty append to a missing table");
    assert!(open(&ds).table_info("fresh").is_err());
    sz_ok(&["check", s(&ds)]);

    // Points alike: a header-only CSV records its key and adds no part.
    let spots = write_file(d, "spots.csv", "x,y,gene\n1.0,2.0,a\n3.0,4.0,b\n");
    sz_ok(&["add-points", s(&ds), "spots", "--csv", s(&spots)]);
    let parts = || {
        std::fs::read_dir(ds.join("points/spots/points.parquet"))
            .unwrap()
            .count()
    };
    let parts_before = parts();
    let no_spots = write_file(d, "nospots.csv", "x,y,gene\n");
    let args = [
        "append-points",
        s(&ds),
        "spots",
        "--csv",
        s(&no_spots),
        "--key",
        "p",
        "--json",
    ];
    for attempt in 0..2 {
        let out: Value = serde_json::from_str(&sz_ok(&args)).unwrap();
        assert_eq!(json_range(&out), (2, 2), "{out}");
        assert_eq!(out["applied"], json!(attempt == 0), "{out}");
    }
    assert_eq!(parts(), parts_before, "an empty append added a part");
    assert_eq!(open(&ds).read_points("spots").unwrap().num_rows(), 2);
    let before = common::TreeSnapshot::take(&ds);
    assert_fails(
        &sz(&[
            "append-points",
            s(&ds),
            "spots",
            "--csv",
            s(&spots),
            "--key",
            "p",
        ]),
        1,
        &["\"p\"", "2..2"],
    );
    before.assert_unchanged("points under the key of an empty append");
    sz_ok(&["check", s(&ds), "--deep"]);
}
