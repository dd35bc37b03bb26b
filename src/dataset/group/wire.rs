//! The files of a queued request (spec/commit-protocol.md §12.1): `request.json`, the
//! rows of an append (Arrow IPC), and `outcome.json`, which the combiner writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::element::{ElementKind, Transform, Transformations};
use crate::error::{Error, Result, io_err};
use crate::table::{AppendOutcome, Prim, RowBatch, TableSpec, XRows, XSpec};

/// The request, in the request's staging folder.
pub(super) const REQUEST_FILE: &str = "request.json";
/// The outcome, written by the combiner into the request's staging folder.
pub(super) const OUTCOME_FILE: &str = "outcome.json";
/// The obs rows of an append.
const ROWS_FILE: &str = "rows.arrow";
/// The version of the request and outcome documents.
const VERSION: u32 = 1;

/// `request.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum RequestDoc {
    /// Append the rows of `rows.arrow` (and `x-*.arrow`) to `table`.
    AppendRows {
        /// Document version.
        version: u32,
        /// The table.
        table: String,
        /// The idempotency key.
        key: Option<String>,
        /// How to create the table when it does not exist.
        create: Option<SpecDoc>,
        /// Which X files there are: `"dense"`, `"csr"` or none.
        x: Option<String>,
    },
    /// Add the element staged in `element/`.
    Add {
        /// Document version.
        version: u32,
        /// Its kind (group name: `images`, `labels`, ...).
        kind: String,
        /// Its name.
        name: String,
        /// Whether it may replace an element of the same kind and name.
        overwrite: bool,
    },
    /// Replace the coordinate transformations of element `name`.
    SetTransformations {
        /// Document version.
        version: u32,
        /// The element.
        name: String,
        /// Its new transformations, by coordinate system.
        transformations: BTreeMap<String, TransformDoc>,
    },
}

/// One [`Transform`] as JSON (finite values only: JSON has no NaN).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum TransformDoc {
    /// [`Transform::Identity`].
    Identity,
    /// [`Transform::Scale`].
    Scale { scale: Vec<f64> },
    /// [`Transform::Translation`].
    Translation { translation: Vec<f64> },
    /// [`Transform::Other`]: the NGFF object as given.
    Other { ngff: serde_json::Value },
}

impl TransformDoc {
    fn of(transform: &Transform) -> Self {
        match transform {
            Transform::Identity => Self::Identity,
            Transform::Scale(v) => Self::Scale { scale: v.clone() },
            Transform::Translation(v) => Self::Translation {
                translation: v.clone(),
            },
            Transform::Other(v) => Self::Other { ngff: v.clone() },
        }
    }

    fn transform(self) -> Transform {
        match self {
            Self::Identity => Transform::Identity,
            Self::Scale { scale } => Transform::Scale(scale),
            Self::Translation { translation } => Transform::Translation(translation),
            Self::Other { ngff } => Transform::Other(ngff),
        }
    }
}

/// Whether `transformations` can travel as a request: JSON holds only finite numbers.
pub(super) fn representable(transformations: &Transformations) -> bool {
    transformations.0.values().all(|t| match t {
        Transform::Scale(v) | Transform::Translation(v) => v.iter().all(|x| x.is_finite()),
        Transform::Identity | Transform::Other(_) => true,
    })
}

/// A [`TableSpec`] as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SpecDoc {
    region_key: String,
    instance_key: String,
    /// `"none"`, `"dense"` or `"csr"`.
    x: String,
    dtype: Option<String>,
    var_names: Vec<String>,
}

impl SpecDoc {
    fn of(spec: &TableSpec) -> Self {
        let (x, dtype, var_names) = match &spec.x {
            XSpec::None => ("none", None, Vec::new()),
            XSpec::Dense { dtype, var_names } => ("dense", Some(dtype), var_names.clone()),
            XSpec::Csr { dtype, var_names } => ("csr", Some(dtype), var_names.clone()),
        };
        Self {
            region_key: spec.region_key.clone(),
            instance_key: spec.instance_key.clone(),
            x: x.into(),
            dtype: dtype.map(|d| d.name().to_owned()),
            var_names,
        }
    }

    fn spec(self) -> Result<TableSpec> {
        let dtype = || {
            self.dtype
                .as_deref()
                .and_then(Prim::parse)
                .ok_or_else(|| malformed("the table spec has no valid X dtype"))
        };
        let x = match self.x.as_str() {
            "none" => XSpec::None,
            "dense" => XSpec::Dense {
                dtype: dtype()?,
                var_names: self.var_names.clone(),
            },
            "csr" => XSpec::Csr {
                dtype: dtype()?,
                var_names: self.var_names.clone(),
            },
            other => return Err(malformed(&format!("unknown X kind {other:?}"))),
        };
        Ok(TableSpec {
            region_key: self.region_key,
            instance_key: self.instance_key,
            x,
        })
    }
}

fn malformed(reason: &str) -> Error {
    Error::InvalidInput(format!("the queued request could not be read: {reason}"))
}

fn to_json<T: Serialize>(doc: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(doc).expect("json")
}

/// Writes `bytes` to `path` (inside the caller's own staging folder; no fsync: a
/// request is durable only through the commit that takes it).
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::storage::Publisher::with_durability(crate::storage::Durability::Process)
        .write(path, bytes)
}

/// Writes an append's request into its staging folder `dir`.
pub(super) fn write_rows_request(
    dir: &Path,
    table: &str,
    rows: &RowBatch,
    create: Option<&TableSpec>,
    key: Option<&str>,
) -> Result<()> {
    write_batch(&dir.join(ROWS_FILE), &rows.obs)?;
    let x = match &rows.x {
        None => None,
        Some(XRows::Dense(values)) => {
            write_column(
                dir,
                "x-values",
                Arc::new(Float64Array::from(values.clone())),
            )?;
            Some("dense".to_owned())
        }
        Some(XRows::Csr {
            indptr,
            indices,
            data,
        }) => {
            write_column(dir, "x-indptr", Arc::new(Int64Array::from(indptr.clone())))?;
            write_column(
                dir,
                "x-indices",
                Arc::new(Int64Array::from(indices.clone())),
            )?;
            write_column(dir, "x-data", Arc::new(Float64Array::from(data.clone())))?;
            Some("csr".to_owned())
        }
    };
    let doc = RequestDoc::AppendRows {
        version: VERSION,
        table: table.to_owned(),
        key: key.map(str::to_owned),
        create: create.map(SpecDoc::of),
        x,
    };
    write_file(&dir.join(REQUEST_FILE), &to_json(&doc))
}

/// Writes the request of an element staged in `dir`.
pub(super) fn write_add_request(
    dir: &Path,
    kind: ElementKind,
    name: &str,
    overwrite: bool,
) -> Result<()> {
    let doc = RequestDoc::Add {
        version: VERSION,
        kind: kind.group().to_owned(),
        name: name.to_owned(),
        overwrite,
    };
    write_file(&dir.join(REQUEST_FILE), &to_json(&doc))
}

/// Writes a `set_transformations` request into its staging folder `dir`.
pub(super) fn write_transform_request(
    dir: &Path,
    name: &str,
    transformations: &Transformations,
) -> Result<()> {
    let doc = RequestDoc::SetTransformations {
        version: VERSION,
        name: name.to_owned(),
        transformations: transformations
            .0
            .iter()
            .map(|(system, t)| (system.clone(), TransformDoc::of(t)))
            .collect(),
    };
    write_file(&dir.join(REQUEST_FILE), &to_json(&doc))
}

/// A request as read back by the combiner.
pub(super) enum ReadRequest {
    /// An append.
    Rows {
        table: String,
        rows: Box<RowBatch>,
        create: Option<TableSpec>,
        key: Option<String>,
    },
    /// An element staged in the folder.
    Add {
        kind: ElementKind,
        name: String,
        overwrite: bool,
    },
    /// New transformations of an element.
    Transform {
        name: String,
        transformations: Transformations,
    },
}

/// Reads the request in the staging folder `dir`, with the size of its rows files.
pub(super) fn read_request(dir: &Path) -> Result<(ReadRequest, u64)> {
    let path = dir.join(REQUEST_FILE);
    let text = std::fs::read(&path).map_err(io_err("read", &path))?;
    let doc: RequestDoc = serde_json::from_slice(&text)
        .map_err(|e| malformed(&format!("{}: {e}", path.display())))?;
    match doc {
        RequestDoc::AppendRows {
            version,
            table,
            key,
            create,
            x,
        } => {
            check_version(version)?;
            let obs = read_batch(&dir.join(ROWS_FILE))?;
            let mut bytes = file_size(&dir.join(ROWS_FILE));
            let x = match x.as_deref() {
                None => None,
                Some("dense") => Some(XRows::Dense(read_f64(dir, "x-values", &mut bytes)?)),
                Some("csr") => Some(XRows::Csr {
                    indptr: read_i64(dir, "x-indptr", &mut bytes)?,
                    indices: read_i64(dir, "x-indices", &mut bytes)?,
                    data: read_f64(dir, "x-data", &mut bytes)?,
                }),
                Some(other) => return Err(malformed(&format!("unknown X kind {other:?}"))),
            };
            Ok((
                ReadRequest::Rows {
                    table,
                    rows: Box::new(RowBatch { obs, x }),
                    create: create.map(SpecDoc::spec).transpose()?,
                    key,
                },
                bytes,
            ))
        }
        RequestDoc::Add {
            version,
            kind,
            name,
            overwrite,
        } => {
            check_version(version)?;
            let kind = ElementKind::ALL
                .into_iter()
                .find(|k| k.group() == kind)
                .ok_or_else(|| malformed(&format!("unknown element kind {kind:?}")))?;
            Ok((
                ReadRequest::Add {
                    kind,
                    name,
                    overwrite,
                },
                0,
            ))
        }
        RequestDoc::SetTransformations {
            version,
            name,
            transformations,
        } => {
            check_version(version)?;
            let transformations = Transformations(
                transformations
                    .into_iter()
                    .map(|(system, t)| (system, t.transform()))
                    .collect(),
            );
            Ok((
                ReadRequest::Transform {
                    name,
                    transformations,
                },
                0,
            ))
        }
    }
}

fn check_version(version: u32) -> Result<()> {
    if version == VERSION {
        Ok(())
    } else {
        Err(malformed(&format!(
            "request version {version} (this spatialzarr writes {VERSION})"
        )))
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn write_batch(path: &Path, batch: &RecordBatch) -> Result<()> {
    let mut bytes = Vec::new();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(&mut bytes, &batch.schema())
        .map_err(|e| arrow_err(path, e))?;
    writer.write(batch).map_err(|e| arrow_err(path, e))?;
    writer.finish().map_err(|e| arrow_err(path, e))?;
    drop(writer);
    write_file(path, &bytes)
}

fn read_batch(path: &Path) -> Result<RecordBatch> {
    let file = std::fs::File::open(path).map_err(io_err("open", path))?;
    let reader =
        arrow_ipc::reader::FileReader::try_new(file, None).map_err(|e| arrow_err(path, e))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| arrow_err(path, e))?;
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(schema)),
        1 => Ok(batches.into_iter().next().expect("one")),
        _ => Err(malformed(&format!(
            "{} holds more than one batch",
            path.display()
        ))),
    }
}

fn column_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.arrow"))
}

fn write_column(dir: &Path, name: &str, values: ArrayRef) -> Result<()> {
    let schema = Schema::new(vec![Field::new(name, values.data_type().clone(), false)]);
    let path = column_path(dir, name);
    let batch =
        RecordBatch::try_new(Arc::new(schema), vec![values]).map_err(|e| arrow_err(&path, e))?;
    write_batch(&path, &batch)
}

fn read_column(dir: &Path, name: &str, bytes: &mut u64, expected: &DataType) -> Result<ArrayRef> {
    let path = column_path(dir, name);
    *bytes += file_size(&path);
    let batch = read_batch(&path)?;
    match batch.columns() {
        [column] if column.data_type() == expected => Ok(column.clone()),
        _ => Err(malformed(&format!(
            "{} is not one {expected} column",
            path.display()
        ))),
    }
}

fn read_f64(dir: &Path, name: &str, bytes: &mut u64) -> Result<Vec<f64>> {
    let column = read_column(dir, name, bytes, &DataType::Float64)?;
    let values = column
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("checked type");
    Ok(values.values().to_vec())
}

fn read_i64(dir: &Path, name: &str, bytes: &mut u64) -> Result<Vec<i64>> {
    let column = read_column(dir, name, bytes, &DataType::Int64)?;
    let values = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("checked type");
    Ok(values.values().to_vec())
}

fn arrow_err(path: &Path, e: arrow_schema::ArrowError) -> Error {
    Error::Io {
        op: "encode or decode Arrow IPC",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// `outcome.json`: what a queued request's caller returns.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(super) enum OutcomeDoc {
    /// Committed (or, for a repeated key, recognised) in `generation`.
    Ok {
        /// Document version.
        version: u32,
        /// The generation of the commit that took the request.
        generation: u64,
        /// An append's outcome.
        append: Option<AppendDoc>,
    },
    /// Refused: the error a direct call would have returned.
    Err {
        /// Document version.
        version: u32,
        /// The error.
        error: ErrorDoc,
    },
}

/// An [`AppendOutcome`] as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AppendDoc {
    table: String,
    start: u64,
    end: u64,
    key: Option<String>,
    applied: bool,
}

impl OutcomeDoc {
    /// A success of `generation`.
    pub(super) fn ok(generation: u64, append: Option<&AppendOutcome>) -> Self {
        Self::Ok {
            version: VERSION,
            generation,
            append: append.map(|a| AppendDoc {
                table: a.table.clone(),
                start: a.start,
                end: a.end,
                key: a.key.clone(),
                applied: a.applied,
            }),
        }
    }

    /// A refusal.
    pub(super) fn err(error: ErrorDoc) -> Self {
        Self::Err {
            version: VERSION,
            error,
        }
    }

    /// The document's text.
    pub(super) fn to_text(&self) -> String {
        String::from_utf8(to_json(self)).expect("utf-8")
    }

    /// The caller's result: the generation and the append outcome, or the error.
    pub(super) fn into_result(self) -> Result<(u64, Option<AppendOutcome>)> {
        match self {
            Self::Ok {
                generation, append, ..
            } => Ok((
                generation,
                append.map(|a| AppendOutcome {
                    table: a.table,
                    start: a.start,
                    end: a.end,
                    key: a.key,
                    applied: a.applied,
                }),
            )),
            Self::Err { error, .. } => Err(error.into_error()),
        }
    }
}

/// Reads `outcome.json` in the staging folder `dir`, if the combiner wrote it.
pub(super) fn read_outcome(dir: &Path) -> Result<Option<OutcomeDoc>> {
    let path = dir.join(OUTCOME_FILE);
    match std::fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path,
                reason: format!("the outcome of a queued request does not parse: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

/// An error that is a request's own (its input, or what it asks of the state), as
/// JSON; rebuilt on the caller's side into the same [`Error`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub(super) enum ErrorDoc {
    /// [`Error::NameTaken`].
    NameTaken { existing: String, kind: String },
    /// [`Error::NoSuchElement`].
    NoSuchElement { dataset: PathBuf, name: String },
    /// [`Error::Corrupt`].
    Corrupt { path: PathBuf, reason: String },
    /// [`Error::InvalidInput`].
    InvalidInput { message: String },
    /// [`Error::WrongElementType`].
    WrongElementType {
        name: String,
        actual: String,
        expected: String,
    },
    /// [`Error::KeyReused`].
    KeyReused {
        element: String,
        key: String,
        start: u64,
        end: u64,
    },
    /// [`Error::UnsupportedFormat`].
    UnsupportedFormat { path: PathBuf, what: String },
    /// [`Error::Zarr`].
    Zarr { path: String, message: String },
}

impl ErrorDoc {
    /// The error as JSON when it is the request's own; `None` for errors of the
    /// machine or the store (I/O, locks), which fail the batch instead.
    pub(super) fn of(error: &Error) -> Option<Self> {
        let s = |v: &str| v.to_owned();
        Some(match error {
            Error::NameTaken { existing, kind } => Self::NameTaken {
                existing: s(existing),
                kind: s(kind),
            },
            Error::NoSuchElement { dataset, name } => Self::NoSuchElement {
                dataset: dataset.clone(),
                name: s(name),
            },
            Error::Corrupt { path, reason } => Self::Corrupt {
                path: path.clone(),
                reason: s(reason),
            },
            Error::InvalidInput(message) => Self::InvalidInput {
                message: s(message),
            },
            Error::WrongElementType {
                name,
                actual,
                expected,
            } => Self::WrongElementType {
                name: s(name),
                actual: s(actual),
                expected: s(expected),
            },
            Error::KeyReused {
                element,
                key,
                start,
                end,
            } => Self::KeyReused {
                element: s(element),
                key: s(key),
                start: *start,
                end: *end,
            },
            Error::UnsupportedFormat { path, what } => Self::UnsupportedFormat {
                path: path.clone(),
                what: s(what),
            },
            Error::Zarr { path, message } => Self::Zarr {
                path: s(path),
                message: s(message),
            },
            _ => return None,
        })
    }

    fn into_error(self) -> Error {
        match self {
            Self::NameTaken { existing, kind } => Error::NameTaken { existing, kind },
            Self::NoSuchElement { dataset, name } => Error::NoSuchElement { dataset, name },
            Self::Corrupt { path, reason } => Error::Corrupt { path, reason },
            Self::InvalidInput { message } => Error::InvalidInput(message),
            Self::WrongElementType {
                name,
                actual,
                expected,
            } => Error::WrongElementType {
                name,
                actual,
                expected,
            },
            Self::KeyReused {
                element,
                key,
                start,
                end,
            } => Error::KeyReused {
                element,
                key,
                start,
                end,
            },
            Self::UnsupportedFormat { path, what } => Error::UnsupportedFormat { path, what },
            Self::Zarr { path, message } => Error::Zarr { path, message },
        }
    }
}
