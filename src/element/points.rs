//! Points elements: `points/<name>/zarr.json` plus a folder of parquet parts
//! (`points.parquet/part.N.parquet`) that spatialdata (through dask) reads together.
//!
//! Parts are written the way dask writes them for spatialdata 0.8: float64 `x`, `y`
//! (and `z`), the feature key as a dictionary (pandas categorical) column, the other
//! columns as given, and a running `__null_dask_index__` index column described by
//! pandas metadata, so that the rows of all parts have distinct index values.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use serde_json::{Value, json};

use super::transform::Transformations;
use crate::error::{Error, Result, io_err};
use crate::storage::Publisher;
use columnar::{PandasIndex, corrupt, invalid};

/// The folder of parquet parts inside a points element.
pub const PARTS_FOLDER: &str = "points.parquet";
/// The index column dask writes for a frame without a named index.
pub const DASK_INDEX: &str = "__null_dask_index__";
/// `spatialdata_attrs.version` of points in container format 0.2.
pub const POINTS_VERSION: &str = "0.2";

/// What `info` reports about a points element.
#[derive(Debug, Clone, PartialEq)]
pub struct PointsInfo {
    /// Number of points, over all parts.
    pub n: u64,
    /// Column names (index columns excluded), as spatialdata lists them.
    pub columns: Vec<String>,
    /// The Arrow type each of `columns` is stored as (in the first part).
    pub column_types: Vec<DataType>,
    /// The feature key column, when recorded.
    pub feature_key: Option<String>,
    /// The instance key column (which instance, e.g. which cell, each point belongs
    /// to), when recorded.
    pub instance_key: Option<String>,
    /// Number of parquet parts.
    pub parts: usize,
    /// Coordinate axes (`x`, `y`, and maybe `z`).
    pub axes: Vec<String>,
    /// Transformations to coordinate systems.
    pub transformations: Transformations,
}

/// The columns of `batch` as they are stored: coordinates as float64, the feature key
/// as a dictionary, the others checked (the key columns must be among them and be no
/// coordinates). Returns the fields, arrays and the axes.
fn prepare(
    batch: &RecordBatch,
    feature_key: Option<&str>,
    instance_key: Option<&str>,
) -> Result<(Vec<Field>, Vec<ArrayRef>, Vec<String>)> {
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    columnar::check_names(&names, &[DASK_INDEX])?;
    for required in ["x", "y"] {
        if !names.contains(&required) {
            return Err(invalid(format!(
                "points need a numeric column named {required:?}; the columns are {names:?}"
            )));
        }
    }
    for (what, key) in [("feature", feature_key), ("instance", instance_key)] {
        let Some(key) = key else { continue };
        if ["x", "y", "z"].contains(&key) {
            return Err(invalid(format!(
                "the {what} key {key:?} cannot be a coordinate column"
            )));
        }
        if !names.contains(&key) {
            return Err(invalid(format!(
                "the {what} key column {key:?} is not among the columns {names:?}"
            )));
        }
    }
    let axes: Vec<String> = ["x", "y", "z"]
        .iter()
        .filter(|a| names.contains(a))
        .map(|a| a.to_string())
        .collect();
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        let array = if axes.iter().any(|a| a == name) {
            coordinate(name, array.as_ref())?
        } else if Some(name) == feature_key {
            let values = columnar::category_values(array.as_ref()).ok_or_else(|| {
                invalid(format!(
                    "the feature key column {name:?} must hold strings or integers, not {}",
                    array.data_type()
                ))
            })?;
            columnar::dictionary(values.iter().map(|v| v.as_deref()))
        } else {
            columnar::normalize(name, array).map_err(invalid)?
        };
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    Ok((fields, arrays, axes))
}

/// A coordinate column as float64, refusing non-numeric, missing and infinite values.
fn coordinate(name: &str, array: &dyn Array) -> Result<ArrayRef> {
    let values = columnar::to_f64(array).ok_or_else(|| {
        invalid(format!(
            "points column {name:?} must be numeric, not {}",
            array.data_type()
        ))
    })?;
    let mut out = Vec::with_capacity(values.len());
    for (row, v) in values.into_iter().enumerate() {
        match v {
            Some(v) if v.is_finite() => out.push(v),
            Some(v) => {
                return Err(invalid(format!(
                    "points column {name:?} has the value {v} in row {row}; coordinates must be finite"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "points column {name:?} has a missing value in row {row}"
                )));
            }
        }
    }
    Ok(Arc::new(Float64Array::from(out)))
}

/// The group attributes of a points element, as spatialdata 0.8 writes them.
fn attributes(
    axes: &[String],
    feature_key: Option<&str>,
    instance_key: Option<&str>,
    transformations: &Transformations,
) -> Value {
    let mut attrs = json!({});
    if let Some(key) = instance_key {
        attrs["instance_key"] = json!(key);
    }
    if let Some(key) = feature_key {
        attrs["feature_key"] = json!(key);
    }
    attrs["version"] = json!(POINTS_VERSION);
    json!({
        "attributes": {
            "encoding-type": "ngff:points",
            "axes": axes,
            "coordinateTransformations": transformations.to_ngff(axes),
            "spatialdata_attrs": attrs,
        },
        "zarr_format": 3,
        "node_type": "group",
    })
}

/// Encodes one part: `fields`/`arrays` plus the index columns `index` (in order).
fn encode_part(
    mut fields: Vec<Field>,
    mut arrays: Vec<ArrayRef>,
    index: Vec<(String, ArrayRef)>,
) -> Result<Vec<u8>> {
    let index_names: Vec<String> = index.iter().map(|(n, _)| n.clone()).collect();
    for (name, array) in index {
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    let schema = Schema::new(fields);
    let pandas = columnar::pandas_metadata(&schema, &arrays, PandasIndex::Columns(&index_names));
    columnar::encode_parquet(schema, arrays, vec![("pandas".into(), pandas)])
}

/// Writes a whole points element into the folder `dir` (empty, private to the caller;
/// it becomes `points/<name>`): `zarr.json` and `points.parquet/part.0.parquet`.
/// `batch` needs numeric `x` and `y` columns (and optionally `z`), stored as float64;
/// the `feature_key` column is stored as a categorical; the `instance_key` column (as
/// spatialdata's `PointsModel` names it: which instance each point belongs to) is
/// stored as given and recorded in the attributes. Everything is checked before
/// anything is written.
pub fn write_points_element(
    dir: &Path,
    publisher: &Publisher,
    batch: &RecordBatch,
    feature_key: Option<&str>,
    instance_key: Option<&str>,
    transformations: &Transformations,
) -> Result<()> {
    if batch.num_rows() == 0 {
        return Err(invalid("the points table has no rows".into()));
    }
    let (fields, arrays, axes) = prepare(batch, feature_key, instance_key)?;
    columnar::check_transformations(transformations, &axes)?;
    let n = batch.num_rows() as i64;
    let index: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n));
    let bytes = encode_part(fields, arrays, vec![(DASK_INDEX.into(), index)])?;
    let parts = dir.join(PARTS_FOLDER);
    publisher.create_dir_all(&parts)?;
    publisher.write_deferred(&parts.join("part.0.parquet"), &bytes)?;
    let doc = attributes(&axes, feature_key, instance_key, transformations);
    publisher.write_deferred(
        &dir.join("zarr.json"),
        &serde_json::to_vec_pretty(&doc).expect("json"),
    )?;
    // Both files in place together (their folders are fsynced by the caller's sync).
    publisher.flush()
}

/// Writes `batch` as one more part, at `path` (normally
/// `<element_dir>/points.parquet/<next_part_name>`), of the existing points element in
/// `element_dir`. The batch must have the same columns as the element's parts (in any
/// order; stored in theirs) with compatible types (integers are accepted for float
/// columns; the feature key may hold other categories). The dask index continues after
/// the rows of the existing parts. An existing file at `path` is never replaced.
pub fn write_points_part(
    path: &Path,
    publisher: &Publisher,
    batch: &RecordBatch,
    element_dir: &Path,
) -> Result<()> {
    if path.exists() {
        return Err(Error::AlreadyExists(path.to_path_buf()));
    }
    let bytes = encode_points_part(batch, element_dir)?;
    publisher.write(path, &bytes)
}

/// Checks `batch` against the points element in `element_dir` as
/// [`write_points_part`] does, and encodes it as the bytes of one more part file.
pub fn encode_points_part(batch: &RecordBatch, element_dir: &Path) -> Result<Vec<u8>> {
    let info = points_info(element_dir)?;
    let (fields, arrays, axes) = prepare(batch, info.feature_key.as_deref(), None)?;
    if axes != info.axes {
        return Err(invalid(format!(
            "the points element has axes {:?} but the new rows have {axes:?}",
            info.axes
        )));
    }
    let first = list_parts(element_dir)?.remove(0);
    let schema = columnar::open_parquet(&first)?.schema().clone();
    let index_names = columnar::index_columns(&schema);
    let given: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    if let Some(extra) = given.iter().find(|g| !info.columns.iter().any(|c| c == *g)) {
        return Err(invalid(format!(
            "column {extra:?} is not in the points element, whose columns are {:?}",
            info.columns
        )));
    }
    let mut out_fields = Vec::new();
    let mut out_arrays = Vec::new();
    let mut index = Vec::new();
    for field in schema.fields() {
        let name = field.name();
        let array = if let Some(i) = given.iter().position(|g| g == name) {
            columnar::conform(&arrays[i], field.data_type()).ok_or_else(|| {
                invalid(format!(
                    "column {name:?} holds {} but the element's parts store {}",
                    arrays[i].data_type(),
                    field.data_type()
                ))
            })?
        } else if name == DASK_INDEX {
            let start = info.n as i64;
            let array: ArrayRef = Arc::new(Int64Array::from_iter_values(
                start..start + batch.num_rows() as i64,
            ));
            columnar::conform(&array, field.data_type()).ok_or_else(|| {
                corrupt(
                    &first,
                    format!("the index column has type {}", field.data_type()),
                )
            })?
        } else if index_names.contains(name) {
            return Err(invalid(format!(
                "the points element has the index column {name:?}; give it as a column"
            )));
        } else {
            return Err(invalid(format!(
                "column {name:?} of the points element is missing from the new rows"
            )));
        };
        if index_names.contains(name) {
            index.push((name.clone(), array));
        } else {
            out_fields.push(Field::new(name, array.data_type().clone(), true));
            out_arrays.push(array);
        }
    }
    // The index columns go last, as dask writes them.
    encode_part(out_fields, out_arrays, index)
}

/// The number `N` of a part file named `part.N.parquet`.
fn part_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("part.")?.strip_suffix(".parquet")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The part files of a points element, in the order dask reads them: `part.N.parquet`
/// by `N`, then any other `*.parquet` file by name. Hidden (`.`) and `_` files
/// (temporary files, `_metadata`) are skipped, as dask skips them.
pub fn list_parts(element_dir: &Path) -> Result<Vec<PathBuf>> {
    let folder = element_dir.join(PARTS_FOLDER);
    // Never read parts through a link: it could lead out of the dataset.
    crate::util::no_links_below(element_dir, &folder)?;
    if !folder.is_dir() {
        return Err(corrupt(element_dir, format!("no {PARTS_FOLDER} folder")));
    }
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(&folder).map_err(io_err("list", &folder))? {
        let entry = entry.map_err(io_err("list", &folder))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') || !name.ends_with(".parquet") {
            continue;
        }
        parts.push((part_number(&name).unwrap_or(u64::MAX), name));
    }
    if parts.is_empty() {
        return Err(corrupt(&folder, "holds no parquet part".into()));
    }
    parts.sort();
    Ok(parts.into_iter().map(|(_, n)| folder.join(n)).collect())
}

/// The name of the next part of the points element in `element_dir`:
/// `part.N.parquet` with `N` one more than the largest existing `N` (0 when none).
pub fn next_part_name(element_dir: &Path) -> Result<String> {
    let folder = element_dir.join(PARTS_FOLDER);
    let mut next = 0;
    for entry in std::fs::read_dir(&folder).map_err(io_err("list", &folder))? {
        let entry = entry.map_err(io_err("list", &folder))?;
        if let Some(n) = part_number(&entry.file_name().to_string_lossy()) {
            next = next.max(n + 1);
        }
    }
    Ok(format!("part.{next}.parquet"))
}

/// Reads the element's group attributes and checks they describe points.
fn points_attributes(element_dir: &Path) -> Result<Value> {
    columnar::element_attributes(element_dir, "ngff:points")
}

/// Describes the points element in `element_dir` from its metadata and the parts'
/// footers (no data is decoded).
pub fn points_info(element_dir: &Path) -> Result<PointsInfo> {
    let attrs = points_attributes(element_dir)?;
    let axes = columnar::axes_of(&attrs);
    let parts = list_parts(element_dir)?;
    let mut n = 0u64;
    let mut columns = Vec::new();
    let mut column_types = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let reader = columnar::open_parquet(part)?;
        n += reader.metadata().file_metadata().num_rows().max(0) as u64;
        if i == 0 {
            let schema = reader.schema();
            columns = columnar::data_columns(schema);
            column_types = columns
                .iter()
                .filter_map(|c| schema.field_with_name(c).ok())
                .map(|f| f.data_type().clone())
                .collect();
        }
    }
    Ok(PointsInfo {
        n,
        columns,
        column_types,
        feature_key: attrs
            .pointer("/spatialdata_attrs/feature_key")
            .and_then(Value::as_str)
            .map(str::to_owned),
        instance_key: attrs
            .pointer("/spatialdata_attrs/instance_key")
            .and_then(Value::as_str)
            .map(str::to_owned),
        parts: parts.len(),
        transformations: columnar::transformations_of(&attrs, &axes),
        axes,
    })
}

/// Reads every part of the points element in `element_dir`, in part order, into one
/// batch (index columns left out; dictionary columns as `Dictionary(Int32, Utf8)`).
pub fn read_points(element_dir: &Path) -> Result<RecordBatch> {
    points_attributes(element_dir)?;
    let parts = list_parts(element_dir)?;
    let mut batches = Vec::with_capacity(parts.len());
    for part in &parts {
        let batch = columnar::read_parquet(part)?;
        let keep = columnar::data_columns(&batch.schema());
        let indices: Vec<usize> = keep
            .iter()
            .map(|c| batch.schema().index_of(c).expect("listed"))
            .collect();
        batches.push(
            batch
                .project(&indices)
                .map_err(|e| corrupt(part, e.to_string()))?,
        );
    }
    columnar::concat_batches(&batches).map_err(|e| corrupt(&element_dir.join(PARTS_FOLDER), e))
}

/// Checks the points element in `element_dir`: its metadata is readable and every
/// part's columns agree with the first's; with `deep`, every part is also decoded.
pub fn check_points(element_dir: &Path, deep: bool) -> Result<(), String> {
    let info = points_info(element_dir).map_err(|e| e.to_string())?;
    for axis in &info.axes {
        if !info.columns.contains(axis) {
            return Err(format!("the parts have no {axis:?} column"));
        }
    }
    if let Some(key) = &info.feature_key
        && !info.columns.contains(key)
    {
        return Err(format!("the feature key column {key:?} is missing"));
    }
    let parts = list_parts(element_dir).map_err(|e| e.to_string())?;
    let mut first: Option<Vec<(String, DataType)>> = None;
    for part in &parts {
        let schema = columnar::open_parquet(part)
            .map_err(|e| e.to_string())?
            .schema()
            .clone();
        let columns: Vec<(String, DataType)> = columnar::data_columns(&schema)
            .into_iter()
            .map(|c| {
                let t = schema
                    .field_with_name(&c)
                    .expect("listed")
                    .data_type()
                    .clone();
                (c, t)
            })
            .collect();
        match &first {
            None => first = Some(columns),
            Some(expected) => {
                let same = expected.len() == columns.len()
                    && expected
                        .iter()
                        .zip(&columns)
                        .all(|((n1, t1), (n2, t2))| n1 == n2 && columnar::compatible(t1, t2));
                if !same {
                    return Err(format!(
                        "{} has columns {columns:?}, unlike the first part's {expected:?}",
                        part.display()
                    ));
                }
            }
        }
        if deep {
            columnar::read_parquet(part).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Arrow and parquet helpers shared by points and shapes.
pub(crate) mod columnar {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
        UInt32Type, UInt64Type,
    };
    use arrow_array::{
        Array, ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array,
        LargeStringArray, PrimitiveArray, RecordBatch, RecordBatchOptions, StringArray,
    };
    use arrow_schema::{DataType, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::Compression;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    use serde_json::{Value, json};

    use super::super::raster::group_attributes;
    use super::super::transform::Transformations;
    use crate::error::{Error, Result, io_err};

    /// An [`Error::InvalidInput`].
    pub(crate) fn invalid(message: String) -> Error {
        Error::InvalidInput(message)
    }

    /// An [`Error::Corrupt`] about `path`.
    pub(crate) fn corrupt(path: &Path, reason: String) -> Error {
        Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        }
    }

    /// Refuses empty, duplicate and `reserved` column names.
    pub(crate) fn check_names(names: &[&str], reserved: &[&str]) -> Result<()> {
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(invalid(format!("column {i} has an empty name")));
            }
            if reserved.contains(name) {
                return Err(invalid(format!("the column name {name:?} is reserved")));
            }
            if names[..i].contains(name) {
                return Err(invalid(format!("the column name {name:?} appears twice")));
            }
        }
        Ok(())
    }

    /// Checks transformations for an element with `axes`.
    pub(crate) fn check_transformations(t: &Transformations, axes: &[String]) -> Result<()> {
        if t.0.is_empty() {
            return Err(invalid(
                "an element needs at least one coordinate transformation".into(),
            ));
        }
        t.validate(axes).map_err(invalid)
    }

    /// Numbers as f64 (`None` for nulls); `None` when the array is not numeric.
    pub(crate) fn to_f64(array: &dyn Array) -> Option<Vec<Option<f64>>> {
        macro_rules! conv {
            ($t:ty) => {
                array
                    .as_primitive::<$t>()
                    .iter()
                    .map(|v| v.map(|v| v as f64))
                    .collect()
            };
        }
        Some(match array.data_type() {
            DataType::Float64 => array.as_primitive::<Float64Type>().iter().collect(),
            DataType::Float32 => conv!(Float32Type),
            DataType::Int8 => conv!(Int8Type),
            DataType::Int16 => conv!(Int16Type),
            DataType::Int32 => conv!(Int32Type),
            DataType::Int64 => conv!(Int64Type),
            DataType::UInt8 => conv!(UInt8Type),
            DataType::UInt16 => conv!(UInt16Type),
            DataType::UInt32 => conv!(UInt32Type),
            DataType::UInt64 => conv!(UInt64Type),
            _ => return None,
        })
    }

    /// The strings of a string or string-dictionary array; `None` for other types.
    pub(crate) fn strings(array: &dyn Array) -> Option<Vec<Option<&str>>> {
        Some(match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().iter().collect(),
            DataType::LargeUtf8 => array.as_string::<i64>().iter().collect(),
            DataType::Utf8View => array.as_string_view().iter().collect(),
            DataType::Dictionary(_, _) => {
                let dict = array.as_any_dictionary();
                let values = strings(dict.values().as_ref())?;
                if values.is_empty() {
                    return Some(vec![None; dict.len()]);
                }
                dict.normalized_keys()
                    .into_iter()
                    .enumerate()
                    .map(|(i, k)| if dict.is_null(i) { None } else { values[k] })
                    .collect()
            }
            _ => return None,
        })
    }

    /// Category labels: strings as they are, integers in decimal.
    pub(crate) fn category_values(array: &dyn Array) -> Option<Vec<Option<String>>> {
        if let Some(s) = strings(array) {
            return Some(s.into_iter().map(|v| v.map(str::to_owned)).collect());
        }
        if matches!(array.data_type(), DataType::Float32 | DataType::Float64) {
            return None;
        }
        let numbers = to_f64(array)?;
        // Exact for every integer type: format through i128 from the original values.
        Some(
            (0..array.len())
                .map(|i| {
                    numbers[i]?;
                    Some(integer_text(array, i))
                })
                .collect(),
        )
    }

    fn integer_text(array: &dyn Array, i: usize) -> String {
        macro_rules! text {
            ($t:ty) => {
                array.as_primitive::<$t>().value(i).to_string()
            };
        }
        match array.data_type() {
            DataType::Int8 => text!(Int8Type),
            DataType::Int16 => text!(Int16Type),
            DataType::Int32 => text!(Int32Type),
            DataType::Int64 => text!(Int64Type),
            DataType::UInt8 => text!(UInt8Type),
            DataType::UInt16 => text!(UInt16Type),
            DataType::UInt32 => text!(UInt32Type),
            _ => text!(UInt64Type),
        }
    }

    /// A `Dictionary(Int32, Utf8)` array of `values` (categories in order of appearance).
    pub(crate) fn dictionary<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
        Arc::new(values.collect::<DictionaryArray<Int32Type>>())
    }

    /// A user column as it is stored: numbers, booleans and strings as they are,
    /// string dictionaries as `Dictionary(Int32, Utf8)`; other types are refused.
    pub(crate) fn normalize(name: &str, array: &ArrayRef) -> Result<ArrayRef, String> {
        match array.data_type() {
            DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8 => Ok(array.clone()),
            DataType::Utf8View => Ok(Arc::new(
                strings(array.as_ref())
                    .expect("string")
                    .into_iter()
                    .collect::<StringArray>(),
            )),
            DataType::Dictionary(_, _) if strings(array.as_ref()).is_some() => Ok(dictionary(
                strings(array.as_ref()).expect("checked").into_iter(),
            )),
            other => Err(format!(
                "column {name:?} has type {other}, which cannot be stored; use numbers, booleans or strings"
            )),
        }
    }

    /// Whether two stored column types can be read together by dask.
    pub(crate) fn compatible(a: &DataType, b: &DataType) -> bool {
        let string = |t: &DataType| match t {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(false),
            DataType::Dictionary(_, v) => {
                matches!(**v, DataType::Utf8 | DataType::LargeUtf8).then_some(true)
            }
            _ => None,
        };
        a == b || (string(a).is_some() && string(a) == string(b))
    }

    /// `array` converted to the stored type `target`, when that loses nothing: equal
    /// types, any string dictionary for a dictionary, strings of either width, and
    /// integers for floats.
    pub(crate) fn conform(array: &ArrayRef, target: &DataType) -> Option<ArrayRef> {
        let source = array.data_type();
        if source == target {
            return Some(array.clone());
        }
        match target {
            DataType::Dictionary(_, _) if compatible(source, target) => {
                Some(dictionary(strings(array.as_ref())?.into_iter()))
            }
            DataType::Utf8 | DataType::LargeUtf8 if compatible(source, target) => {
                let s = strings(array.as_ref())?;
                Some(if *target == DataType::Utf8 {
                    Arc::new(s.into_iter().collect::<StringArray>())
                } else {
                    Arc::new(s.into_iter().collect::<LargeStringArray>())
                })
            }
            DataType::Float64 if !matches!(source, DataType::Float32) => {
                Some(Arc::new(Float64Array::from(to_f64(array.as_ref())?)))
            }
            DataType::Float32 if !matches!(source, DataType::Float64) => {
                let values = to_f64(array.as_ref())?;
                Some(Arc::new(
                    values
                        .into_iter()
                        .map(|v| v.map(|v| v as f32))
                        .collect::<Float32Array>(),
                ))
            }
            DataType::Int64
                if matches!(source, DataType::Int32 | DataType::Int16 | DataType::Int8) =>
            {
                Some(Arc::new(
                    to_f64(array.as_ref())?
                        .into_iter()
                        .map(|v| v.map(|v| v as i64))
                        .collect::<PrimitiveArray<Int64Type>>(),
                ))
            }
            _ => None,
        }
    }

    /// Concatenates arrays of one type (string dictionaries of any key type become
    /// `Dictionary(Int32, Utf8)`). Other types than those [`normalize`] keeps are
    /// refused when there is more than one array.
    pub(crate) fn concat(arrays: &[ArrayRef]) -> Result<ArrayRef, String> {
        let first = arrays.first().ok_or("nothing to concatenate")?;
        let dt = first.data_type();
        if let Some(other) = arrays.iter().find(|a| !compatible(a.data_type(), dt)) {
            return Err(format!(
                "a column is {dt} in one part and {} in another",
                other.data_type()
            ));
        }
        if matches!(dt, DataType::Dictionary(_, _)) && strings(first.as_ref()).is_some() {
            let all = arrays
                .iter()
                .flat_map(|a| strings(a.as_ref()).unwrap_or_default());
            return Ok(dictionary(all));
        }
        if arrays.len() == 1 {
            return Ok(first.clone());
        }
        macro_rules! prim {
            ($t:ty) => {
                Arc::new(
                    arrays
                        .iter()
                        .flat_map(|a| a.as_primitive::<$t>().iter())
                        .collect::<PrimitiveArray<$t>>(),
                )
            };
        }
        let out: ArrayRef = match dt {
            DataType::Boolean => Arc::new(
                arrays
                    .iter()
                    .flat_map(|a| a.as_boolean().iter())
                    .collect::<BooleanArray>(),
            ),
            DataType::Int8 => prim!(Int8Type),
            DataType::Int16 => prim!(Int16Type),
            DataType::Int32 => prim!(Int32Type),
            DataType::Int64 => prim!(Int64Type),
            DataType::UInt8 => prim!(UInt8Type),
            DataType::UInt16 => prim!(UInt16Type),
            DataType::UInt32 => prim!(UInt32Type),
            DataType::UInt64 => prim!(UInt64Type),
            DataType::Float32 => prim!(Float32Type),
            DataType::Float64 => prim!(Float64Type),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let all = arrays
                    .iter()
                    .flat_map(|a| strings(a.as_ref()).unwrap_or_default());
                if *dt == DataType::LargeUtf8 {
                    Arc::new(all.collect::<LargeStringArray>())
                } else {
                    Arc::new(all.collect::<StringArray>())
                }
            }
            other => return Err(format!("columns of type {other} cannot be concatenated")),
        };
        Ok(out)
    }

    /// Concatenates batches with the same column names (in order).
    pub(crate) fn concat_batches(batches: &[RecordBatch]) -> Result<RecordBatch, String> {
        let first = batches.first().ok_or("no batches")?;
        let schema = first.schema();
        for b in batches {
            let names = |s: &Schema| {
                s.fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
            };
            if names(&b.schema()) != names(&schema) {
                return Err(format!(
                    "the parts have different columns: {:?} and {:?}",
                    names(&schema),
                    names(&b.schema())
                ));
            }
        }
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let parts: Vec<ArrayRef> = batches.iter().map(|b| b.column(i).clone()).collect();
            let column = concat(&parts)?;
            fields.push(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(column.data_type().clone()),
            );
            columns.push(column);
        }
        let schema = Schema::new(fields).with_metadata(schema.metadata().clone());
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::new(schema), columns, &options)
            .map_err(|e| e.to_string())
    }

    /// How pandas metadata describes the frame's index.
    pub(crate) enum PandasIndex<'a> {
        /// Stored columns (dask's `__null_dask_index__`).
        Columns(&'a [String]),
        /// A `RangeIndex(0, n)`, not stored (what geopandas writes by default).
        Range(usize),
    }

    /// The `pandas` key-value metadata pyarrow writes, for a frame with `schema`.
    pub(crate) fn pandas_metadata(
        schema: &Schema,
        arrays: &[ArrayRef],
        index: PandasIndex<'_>,
    ) -> String {
        let columns: Vec<Value> = schema
            .fields()
            .iter()
            .zip(arrays)
            .map(|(f, array)| {
                let (pandas, numpy, metadata) = match f.data_type() {
                    DataType::Dictionary(k, _) => (
                        "categorical".to_owned(),
                        k.to_string().to_lowercase(),
                        json!({"num_categories": array.as_any_dictionary().values().len(),
                               "ordered": false}),
                    ),
                    DataType::Boolean => ("bool".into(), "bool".into(), Value::Null),
                    DataType::Utf8 | DataType::LargeUtf8 => {
                        ("unicode".into(), "object".into(), Value::Null)
                    }
                    DataType::Binary | DataType::LargeBinary => {
                        ("bytes".into(), "object".into(), Value::Null)
                    }
                    t => {
                        let name = t.to_string().to_lowercase();
                        (name.clone(), name, Value::Null)
                    }
                };
                json!({"name": f.name(), "field_name": f.name(), "pandas_type": pandas,
                       "numpy_type": numpy, "metadata": metadata})
            })
            .collect();
        let index_columns = match index {
            PandasIndex::Columns(names) => json!(names),
            PandasIndex::Range(n) => {
                json!([{"kind": "range", "name": null, "start": 0, "stop": n, "step": 1}])
            }
        };
        json!({
            "index_columns": index_columns,
            "column_indexes": [{"name": null, "field_name": null, "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
            "columns": columns,
            "attributes": {},
            "creator": {"library": "spatialzarr", "version": env!("CARGO_PKG_VERSION")},
        })
        .to_string()
    }

    /// Encodes one parquet file (snappy, as pyarrow writes by default) holding
    /// `arrays` under `schema`, with `metadata` as key-value metadata (also kept in the
    /// embedded Arrow schema, as pyarrow does).
    pub(crate) fn encode_parquet(
        schema: Schema,
        arrays: Vec<ArrayRef>,
        metadata: Vec<(String, String)>,
    ) -> Result<Vec<u8>> {
        let schema = Arc::new(
            schema.with_metadata(metadata.iter().cloned().collect::<arrow_schema::Metadata>()),
        );
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| invalid(format!("the columns do not form a table: {e}")))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(
                metadata
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect(),
            ))
            .build();
        let failed =
            |e: parquet::errors::ParquetError| invalid(format!("cannot encode parquet: {e}"));
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(failed)?;
        writer.write(&batch).map_err(failed)?;
        writer.into_inner().map_err(failed)
    }

    /// Opens a parquet file and reads its footer.
    pub(crate) fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
        let file = File::open(path).map_err(io_err("open", path))?;
        ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| corrupt(path, format!("not a readable parquet file: {e}")))
    }

    /// Reads a whole parquet file into one batch.
    pub(crate) fn read_parquet(path: &Path) -> Result<RecordBatch> {
        let builder = open_parquet(path)?;
        let schema = builder.schema().clone();
        let rows = builder.metadata().file_metadata().num_rows().max(1);
        let reader = builder
            .with_batch_size(usize::try_from(rows).unwrap_or(usize::MAX))
            .build()
            .map_err(|e| corrupt(path, e.to_string()))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(path, format!("cannot decode: {e}")))?;
        let batch = match batches.len() {
            0 => return Ok(RecordBatch::new_empty(schema)),
            1 => batches.into_iter().next().expect("one"),
            _ => concat_batches(&batches).map_err(|e| corrupt(path, e))?,
        };
        // The decoded batches lack the file's key-value metadata (pandas, geo).
        RecordBatch::try_new(schema, batch.columns().to_vec())
            .map_err(|e| corrupt(path, e.to_string()))
    }

    /// The index columns named by a schema's pandas metadata.
    pub(crate) fn index_columns(schema: &Schema) -> Vec<String> {
        schema
            .metadata()
            .get("pandas")
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
            .and_then(|m| m.get("index_columns").cloned())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// The columns pandas shows (stored index columns left out).
    pub(crate) fn data_columns(schema: &Schema) -> Vec<String> {
        let index = index_columns(schema);
        schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !index.contains(n))
            .collect()
    }

    /// The group attributes of an element, checked to have `encoding` and a version.
    pub(crate) fn element_attributes(dir: &Path, encoding: &str) -> Result<Value> {
        let attrs = group_attributes(dir)?;
        let found = attrs.get("encoding-type").and_then(Value::as_str);
        if found != Some(encoding) {
            return Err(corrupt(
                dir,
                format!("encoding-type is {found:?}, expected {encoding:?}"),
            ));
        }
        if attrs.pointer("/spatialdata_attrs/version").is_none() {
            return Err(corrupt(dir, "spatialdata_attrs.version is missing".into()));
        }
        Ok(attrs)
    }

    /// The element's axes (default `x`, `y`).
    pub(crate) fn axes_of(attrs: &Value) -> Vec<String> {
        attrs
            .get("axes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .filter(|a: &Vec<String>| !a.is_empty())
            .unwrap_or_else(|| vec!["x".into(), "y".into()])
    }

    /// The element's transformations.
    pub(crate) fn transformations_of(attrs: &Value, axes: &[String]) -> Transformations {
        let list = attrs
            .get("coordinateTransformations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        Transformations::from_ngff(list, axes)
    }
}
