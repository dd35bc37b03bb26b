//! Tables: AnnData groups in the SpatialData layout, with atomic, exactly-once row
//! appends (`spec/format.md` §8, `spec/commit-protocol.md` §9).

pub mod append;
pub mod arrays;
mod check;
pub mod columns;
mod create;
pub mod digest;
pub mod element_doc;
mod read;
pub mod state;

use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;

pub use append::TablePatch;
pub use columns::{ColumnKind, Prim};
pub use state::{TableState, XState};

use crate::error::{Error, Result};
use crate::storage::{AtomicStore, Publisher};

/// How a table is created by its first append.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// The categorical column naming each row's region (an element name).
    pub region_key: String,
    /// The column naming each row's instance within its region (e.g. a label value).
    pub instance_key: String,
    /// The X matrix, if any.
    pub x: XSpec,
}

impl Default for TableSpec {
    fn default() -> Self {
        Self {
            region_key: "region".into(),
            instance_key: "instance_id".into(),
            x: XSpec::None,
        }
    }
}

/// The X matrix of a new table.
#[derive(Debug, Clone, PartialEq)]
pub enum XSpec {
    /// No X.
    None,
    /// Dense, `float32` or `float64`.
    Dense {
        /// Element type ([`Prim::F32`] or [`Prim::F64`]).
        dtype: Prim,
        /// The variables' names (the number of columns).
        var_names: Vec<String>,
    },
    /// Sparse CSR (`int64` indices and indptr).
    Csr {
        /// Element type of `data` ([`Prim::F32`] or [`Prim::F64`]).
        dtype: Prim,
        /// The variables' names (the number of columns).
        var_names: Vec<String>,
    },
}

/// X rows to append.
#[derive(Debug, Clone, PartialEq)]
pub enum XRows {
    /// Row-major values, `rows x n_vars`.
    Dense(Vec<f64>),
    /// CSR rows: `indptr` has `rows + 1` entries starting at 0.
    Csr {
        /// Row offsets into `indices` and `data`.
        indptr: Vec<i64>,
        /// Column of each stored value.
        indices: Vec<i64>,
        /// The stored values.
        data: Vec<f64>,
    },
}

/// Rows to append: obs columns and the matching X rows.
#[derive(Debug, Clone)]
pub struct RowBatch {
    /// One Arrow column per obs column (dictionary strings become categoricals).
    pub obs: RecordBatch,
    /// The rows of X, when the table has X.
    pub x: Option<XRows>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppendOutcome {
    /// The table.
    pub table: String,
    /// First row of the append.
    pub start: u64,
    /// One past its last row (serialised as `stop`, the name the command line's JSON
    /// uses).
    #[serde(rename = "stop")]
    pub end: u64,
    /// Its idempotency key.
    pub key: Option<String>,
    /// False when the key was already committed with the same rows: nothing was
    /// appended, and `start..end` is the range of the first append with that key.
    pub applied: bool,
}

/// What `info` reports about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Rows.
    pub n_obs: u64,
    /// Variables.
    pub n_vars: u64,
    /// Declared regions, sorted.
    pub regions: Vec<String>,
    /// The region key column.
    pub region_key: String,
    /// The instance key column.
    pub instance_key: String,
    /// obs columns in order.
    pub columns: Vec<String>,
    /// Their encodings, in the same order.
    pub column_kinds: Vec<String>,
}

impl TableInfo {
    pub(crate) fn from_state(state: &TableState) -> Self {
        let mut regions = state.regions.clone();
        regions.sort();
        Self {
            n_obs: state.n_obs,
            n_vars: state.n_vars,
            regions,
            region_key: state.region_key.clone(),
            instance_key: state.instance_key.clone(),
            columns: state.columns.iter().map(|(n, _)| n.clone()).collect(),
            column_kinds: state.columns.iter().map(|(_, k)| k.describe()).collect(),
        }
    }
}

/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// The file recording idempotency key `key` of `table`, relative to the dataset root.
pub fn key_record_path(table: &str, key: &str) -> Result<String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidInput(format!(
            "an idempotency key must have 1 to {MAX_KEY_LEN} bytes, got {}",
            key.len()
        )));
    }
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    // Long keys are split into folder levels so no file name passes 255 bytes.
    let parts: Vec<&str> = hex
        .as_bytes()
        .chunks(200)
        .map(|c| std::str::from_utf8(c).expect("hex is ASCII"))
        .collect();
    Ok(format!(
        ".spatialzarr/appends/{table}/{}.json",
        parts.join("/")
    ))
}

/// What an idempotency record says about the append that carried its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// First row of that append.
    pub start: u64,
    /// One past its last row.
    pub end: u64,
    /// The digest of its rows ([`digest`]); `None` in records written before digests
    /// were kept, which match any rows.
    pub digest: Option<String>,
}

impl KeyRecord {
    /// The record's JSON text for `key`.
    pub fn to_text(&self, key: &str) -> String {
        let mut doc = serde_json::json!({"key": key, "start": self.start, "end": self.end});
        if let Some(digest) = &self.digest {
            doc["digest"] = serde_json::json!(digest);
        }
        doc.to_string()
    }

    /// Parses a record's JSON text; `None` when it lacks its row range.
    pub fn parse(doc: &serde_json::Value) -> Option<Self> {
        let start = doc.get("start")?.as_u64()?;
        let end = doc.get("end")?.as_u64()?;
        let digest = doc
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Some(Self { start, end, digest })
    }

    /// Checks that rows of digest `digest` sent again under `key` to `element` are
    /// those this record committed (a record without a digest matches any rows).
    pub fn check_same(&self, element: &str, key: &str, digest: &str) -> Result<()> {
        match &self.digest {
            Some(recorded) if recorded != digest => Err(Error::KeyReused {
                element: element.to_owned(),
                key: key.to_owned(),
                start: self.start,
                end: self.end,
            }),
            _ => Ok(()),
        }
    }
}

/// Reads a committed key record.
pub fn read_key_record(root: &std::path::Path, rel: &str) -> Result<Option<KeyRecord>> {
    let path = root.join(rel);
    if !crate::storage::trace::is_file(&path) {
        return Ok(None);
    }
    let doc = crate::element::raster::read_json(&path)?;
    KeyRecord::parse(&doc)
        .map(Some)
        .ok_or_else(|| Error::Corrupt {
            path,
            reason: "an idempotency record without start and end".into(),
        })
}

/// Arrays rooted at `root`, written through `publisher`.
pub(crate) fn arrays_at(
    root: &std::path::Path,
    publisher: &Arc<Publisher>,
) -> Result<arrays::Arrays> {
    Ok(arrays::Arrays::new(
        root,
        Arc::new(AtomicStore::new(root, publisher.clone())?),
    ))
}

/// Builds a new table, with its first rows, in the staging folder `dir`.
pub(crate) fn build_in(
    dir: &std::path::Path,
    publisher: &Arc<Publisher>,
    spec: &TableSpec,
    rows: &RowBatch,
) -> Result<Range<u64>> {
    if rows.obs.num_rows() == 0 {
        return Err(Error::InvalidInput(
            "the table does not exist and an append of no rows cannot create it: the table's columns are unknown until rows bring them; append at least one row first".into(),
        ));
    }
    let arrays = arrays_at(dir, publisher)?;
    create::create_empty(&arrays, publisher, spec, rows)?;
    append_in_place(dir, publisher, rows)
}

/// Appends rows to a table that lives in a private (staging) folder, publishing its
/// metadata at once.
pub(crate) fn append_in_place(
    dir: &std::path::Path,
    publisher: &Arc<Publisher>,
    rows: &RowBatch,
) -> Result<Range<u64>> {
    // The table's structure is read from the folder: publish what is queued first.
    publisher.flush()?;
    let arrays = arrays_at(dir, publisher)?;
    let state = TableState::load(dir, &arrays)?;
    let mut patch = TablePatch::new(String::new(), state);
    let planned = append::plan(&arrays, &mut patch, rows)?;
    append::write(&arrays, planned.writes)?;
    let range = planned.range;
    for (path, doc) in &patch.docs {
        let file = dir.join(path.trim_start_matches('/')).join("zarr.json");
        publisher.write_deferred(&file, &serde_json::to_vec_pretty(doc).expect("json"))?;
    }
    publisher.sync()?;
    Ok(range)
}

pub use check::check_table;
pub use read::{XValues, read_rows, read_x_rows, read_x_values};

#[cfg(test)]
mod tests {
    use super::AppendOutcome;

    #[test]
    fn an_append_outcome_serialises_its_range_as_start_and_stop() {
        let outcome = AppendOutcome {
            table: "cells".into(),
            start: 3,
            end: 7,
            key: Some("k".into()),
            applied: true,
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"table": "cells", "start": 3, "stop": 7, "key": "k", "applied": true})
        );
    }
}
