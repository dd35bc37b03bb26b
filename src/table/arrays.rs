//! Zarr arrays of a table: create, append rows, read ranges.
//!
//! Appends write the new rows' chunks (and the one partially filled chunk) through the
//! atomic store, but never the array's `zarr.json`: the new shape is returned as a
//! document for the commit to publish. Until then readers see the old shape, and the
//! rows beyond it are invisible.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use zarrs::array::codec::ZstdCodec;
use zarrs::array::{
    Array, ArrayBuilder, ArrayBytes, ArrayError, ArraySubset, CodecTraits, DataType, Element,
    ElementOwned, FillValue, FromArrayBytes,
};
use zarrs::metadata::ArrayMetadata;
use zarrs::metadata::v3::ArrayMetadataV3;

use crate::element::raster::read_json;
use crate::error::{Error, Result};
use crate::storage::AtomicStore;

/// Rows per chunk of the 1-d arrays the store creates for tables.
pub const ROW_CHUNK: u64 = 8192;
/// Elements per chunk of the CSR `data` and `indices` arrays.
pub const NNZ_CHUNK: u64 = 65536;
/// Values per chunk of a table's short string lists: a categorical column's
/// categories and the declared regions. Every read of the table's state decodes the
/// first chunk of each, so it stays small.
pub const LIST_CHUNK: u64 = 1024;

fn zarr_error(path: &str, e: impl std::fmt::Display) -> Error {
    Error::Zarr {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// A store rooted at the dataset root (or a staging folder) plus a key prefix.
#[derive(Clone)]
pub struct Arrays {
    pub(crate) store: Arc<AtomicStore>,
    /// The folder the store is rooted at.
    pub(crate) root: std::path::PathBuf,
    /// The folders already found not to be links (shared by the handles of one
    /// transaction, under the write lock: nothing of ours makes links meanwhile).
    links: Arc<crate::util::LinkCheck>,
}

/// The `fill_value` and codec of a new array of `data_type`.
fn fill_for(data_type: &str) -> FillValue {
    match data_type {
        "bool" | "int8" | "uint8" => FillValue::new(vec![0]),
        "int16" | "uint16" => FillValue::new(vec![0; 2]),
        "int32" | "uint32" | "float32" => FillValue::new(vec![0; 4]),
        "string" => FillValue::from(""),
        _ => FillValue::new(vec![0; 8]),
    }
}

/// The zarrs data type for a Zarr v3 data type name.
pub fn data_type(name: &str) -> Option<DataType> {
    use zarrs::array::data_type as dt;
    Some(match name {
        "bool" => dt::bool(),
        "int8" => dt::int8(),
        "int16" => dt::int16(),
        "int32" => dt::int32(),
        "int64" => dt::int64(),
        "uint8" => dt::uint8(),
        "uint16" => dt::uint16(),
        "uint32" => dt::uint32(),
        "uint64" => dt::uint64(),
        "float32" => dt::float32(),
        "float64" => dt::float64(),
        "string" => dt::string(),
        _ => return None,
    })
}

impl Arrays {
    /// Arrays under the folder `root`, written through `store`.
    pub fn new(root: &Path, store: Arc<AtomicStore>) -> Self {
        Self {
            store,
            root: root.to_path_buf(),
            links: Arc::default(),
        }
    }

    /// This handle, taking the folders `links` found not to be links as checked (and
    /// adding those it checks): for one transaction's plans and writes, under the
    /// write lock.
    pub(crate) fn sharing_links(mut self, links: Arc<crate::util::LinkCheck>) -> Self {
        self.links = links;
        self
    }

    /// Refuses to write the array at `path` when it, its chunk folder, or a folder
    /// above it (below the root) is a symbolic link.
    fn refuse_links(&self, path: &str) -> Result<()> {
        let dir = self.root.join(path.trim_start_matches('/'));
        self.links.check(&self.root, &dir.join("c"))
    }

    /// The array at `path` (key `key`) opened from its metadata document `doc`, as
    /// read already (zarrs' `Array::open` would read the document again).
    fn open_with(&self, key: &str, doc: &Value) -> Result<Array<AtomicStore>> {
        let metadata: ArrayMetadataV3 =
            serde_json::from_value(doc.clone()).map_err(|e| zarr_error(key, e))?;
        Array::new_with_metadata(self.store.clone(), key, ArrayMetadata::V3(metadata))
            .map_err(|e| zarr_error(key, e))
    }

    /// The metadata document of the array at `path` (relative, no leading `/`),
    /// including this handle's own writes.
    pub fn metadata(&self, path: &str) -> Result<Value> {
        let doc = self
            .root
            .join(path.trim_start_matches('/'))
            .join("zarr.json");
        // Only a write of this very document must be published first: other
        // writes (chunks of other arrays) wait, to be fsynced together.
        self.store.flush_if_pending(&doc)?;
        read_json(&doc)
    }

    /// Creates an array with `shape` and `chunks`, writes `attributes` and `values`
    /// (row-major), and publishes its metadata. For new nodes in a staging folder.
    pub fn create<T: Element>(
        &self,
        path: &str,
        data_type_name: &str,
        shape: Vec<u64>,
        chunks: Vec<u64>,
        attributes: Value,
        values: Vec<T>,
    ) -> Result<()> {
        self.refuse_links(path)?;
        let key = format!("/{}", path.trim_start_matches('/'));
        let dt = data_type(data_type_name).ok_or_else(|| {
            Error::InvalidInput(format!("unsupported data type {data_type_name}"))
        })?;
        let chunks: Vec<u64> = chunks.into_iter().map(|c| c.max(1)).collect();
        let mut builder = ArrayBuilder::new(shape.clone(), chunks, dt, fill_for(data_type_name));
        builder.bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(3, false))]);
        if let Value::Object(map) = attributes {
            builder.attributes(map);
        }
        let array = builder
            .build(self.store.clone(), &key)
            .map_err(|e| zarr_error(&key, e))?;
        array.store_metadata().map_err(|e| zarr_error(&key, e))?;
        if shape.iter().product::<u64>() > 0 {
            array
                .store_array_subset(&array.subset_all(), values)
                .map_err(|e| zarr_error(&key, e))?;
        }
        Ok(())
    }

    /// Writes `values` as rows `start..` of the array at `path` (rows of `row_len`
    /// elements for a 2-d array), and returns the metadata document with the array
    /// grown to `start + rows`. The document is NOT published.
    pub fn append<T: Element>(
        &self,
        path: &str,
        start: u64,
        values: Vec<T>,
        row_len: u64,
    ) -> Result<Value> {
        self.refuse_links(path)?;
        let key = format!("/{}", path.trim_start_matches('/'));
        let rows = values.len() as u64 / row_len.max(1);
        let mut doc = self.metadata(path)?;
        let mut array = self.open_with(&key, &doc)?;
        let mut shape = array.shape().to_vec();
        let end = start
            .checked_add(rows)
            .ok_or_else(|| Error::InvalidInput("table length overflows".into()))?;
        shape[0] = end;
        array
            .set_shape(shape.clone())
            .map_err(|e| zarr_error(&key, e))?;
        if rows > 0 {
            let ranges: Vec<Range<u64>> = std::iter::once(start..end)
                .chain(shape[1..].iter().map(|&n| 0..n))
                .collect();
            array
                .store_array_subset(&ArraySubset::new_with_ranges(&ranges), values)
                .map_err(|e| zarr_error(&key, e))?;
        }
        doc["shape"] = json!(shape);
        Ok(doc)
    }

    /// The metadata document of the array at `path` grown to `end` rows, checking
    /// that the array opens (its metadata is valid) and that no link lies on its path.
    /// Reads only: the plan of an append, before anything is written.
    pub fn grown(&self, path: &str, end: u64) -> Result<Value> {
        self.refuse_links(path)?;
        let key = format!("/{}", path.trim_start_matches('/'));
        let mut doc = self.metadata(path)?;
        let array = self.open_with(&key, &doc)?;
        let mut shape = array.shape().to_vec();
        let Some(rows) = shape.first_mut() else {
            return Err(Error::Corrupt {
                path: self.root.join(path.trim_start_matches('/')),
                reason: "a 0-d array where rows are appended".into(),
            });
        };
        *rows = end;
        doc["shape"] = json!(shape);
        Ok(doc)
    }

    /// Writes `values` as rows `start..` of the array at `path` (rows of `row_len`
    /// elements for a 2-d array), leaving its `zarr.json` as it is.
    pub fn write_rows(
        &self,
        path: &str,
        start: u64,
        values: TypedValues,
        row_len: u64,
    ) -> Result<()> {
        macro_rules! write {
            ($($variant:ident),*) => {
                match values {
                    $(TypedValues::$variant(v) => self.append(path, start, v, row_len).map(drop),)*
                }
            };
        }
        write!(Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64, Str)
    }

    /// Reads rows `range` of the array at `path` (all columns of a 2-d array).
    pub fn read<T: ElementOwned>(&self, path: &str, range: Range<u64>) -> Result<Vec<T>> {
        let doc = self.metadata(path)?;
        self.read_from(path, &doc, range)
    }

    /// [`Self::read`] of the array whose metadata document `doc` the caller has read.
    pub fn read_from<T: ElementOwned>(
        &self,
        path: &str,
        doc: &Value,
        range: Range<u64>,
    ) -> Result<Vec<T>> {
        let key = format!("/{}", path.trim_start_matches('/'));
        let array = self.open_with(&key, doc)?;
        let shape = array.shape().to_vec();
        // Refuse what could only end in an aborted allocation (or an overflow inside
        // zarrs): the values asked for must fit in this machine's memory.
        let row_len = shape
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &n| acc.checked_mul(n));
        let bytes = row_len
            .and_then(|r| r.checked_mul(range.end.saturating_sub(range.start)))
            .and_then(|n| n.checked_mul(std::mem::size_of::<T>() as u64));
        let whole = shape.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n));
        if whole.is_none() || bytes.is_none_or(|b| b > crate::util::memory_limit()) {
            return Err(Error::Corrupt {
                path: self.root.join(path.trim_start_matches('/')),
                reason: format!(
                    "reading rows {range:?} of an array of shape {shape:?} would not fit in this machine's memory"
                ),
            });
        }
        if shape.is_empty() {
            return array
                .retrieve_array_subset::<Vec<T>>(&array.subset_all())
                .map_err(|e| zarr_error(&key, e));
        }
        if range.end > shape[0] || range.start > range.end {
            return Err(Error::InvalidInput(format!(
                "rows {range:?} are outside {path} of length {}",
                shape[0]
            )));
        }
        let ranges: Vec<Range<u64>> = std::iter::once(range)
            .chain(shape[1..].iter().map(|&n| 0..n))
            .collect();
        let subset = ArraySubset::new_with_ranges(&ranges);
        if let Some(values) =
            read_within_one_chunk(&array, &subset).map_err(|e| zarr_error(&key, e))?
        {
            return Ok(values);
        }
        array
            .retrieve_array_subset::<Vec<T>>(&subset)
            .map_err(|e| zarr_error(&key, e))
    }
}

/// The values of `subset` when it lies inside one chunk of `array` whose codecs read
/// the whole chunk anyway (no partial reads, e.g. zstd): the chunk is decoded once and
/// the subset taken from it. zarrs would instead decode it through a partial decoder
/// that first copies every element of the chunk one by one (for a string array of
/// 65536-element chunks holding one category, nearly all of the read). `None` when the
/// subset spans chunks or the codecs can read part of a chunk (sharding): zarrs'
/// own path is then the right one.
fn read_within_one_chunk<T: ElementOwned>(
    array: &Array<AtomicStore>,
    subset: &ArraySubset,
) -> std::result::Result<Option<Vec<T>>, ArrayError> {
    if array.codecs().partial_decoder_capability().partial_read {
        return Ok(None);
    }
    let Some(chunks) = array.chunks_in_array_subset(subset)? else {
        return Ok(None);
    };
    if chunks.num_elements() != 1 {
        return Ok(None);
    }
    let chunk_indices = chunks.start().to_vec();
    let chunk_shape: Vec<u64> = array
        .chunk_shape(&chunk_indices)?
        .iter()
        .map(|n| n.get())
        .collect();
    let chunk_subset = subset.relative_to(&array.chunk_origin(&chunk_indices)?)?;
    let chunk: ArrayBytes<'static> = array.retrieve_chunk(&chunk_indices)?;
    let bytes = chunk
        .extract_array_subset(&chunk_subset, &chunk_shape, array.data_type())?
        .into_owned();
    bytes.validate(chunk_subset.num_elements(), array.data_type())?;
    Vec::<T>::from_array_bytes(bytes, chunk_subset.shape(), array.data_type()).map(Some)
}

/// Values converted to the element type of a stored array, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValues {
    /// `bool`
    Bool(Vec<bool>),
    /// `int8`
    I8(Vec<i8>),
    /// `int16`
    I16(Vec<i16>),
    /// `int32`
    I32(Vec<i32>),
    /// `int64`
    I64(Vec<i64>),
    /// `uint8`
    U8(Vec<u8>),
    /// `uint16`
    U16(Vec<u16>),
    /// `uint32`
    U32(Vec<u32>),
    /// `uint64`
    U64(Vec<u64>),
    /// `float32`
    F32(Vec<f32>),
    /// `float64`
    F64(Vec<f64>),
    /// `string`
    Str(Vec<String>),
}

macro_rules! typed_from {
    ($($t:ty => $variant:ident),*) => {
        $(impl From<Vec<$t>> for TypedValues {
            fn from(values: Vec<$t>) -> Self {
                TypedValues::$variant(values)
            }
        })*
    };
}
typed_from!(bool => Bool, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16,
    u32 => U32, u64 => U64, f32 => F32, f64 => F64, String => Str);

impl TypedValues {
    /// Number of values.
    pub fn len(&self) -> usize {
        macro_rules! len {
            ($($variant:ident),*) => {
                match self {
                    $(TypedValues::$variant(v) => v.len(),)*
                }
            };
        }
        len!(Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64, Str)
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `more` to these values when both have the same element type;
    /// otherwise gives `more` back unchanged.
    pub fn extend_with(&mut self, more: TypedValues) -> std::result::Result<(), TypedValues> {
        macro_rules! extend {
            ($($variant:ident),*) => {
                match (self, more) {
                    $((TypedValues::$variant(v), TypedValues::$variant(m)) => {
                        v.extend(m);
                        Ok(())
                    })*
                    (_, more) => Err(more),
                }
            };
        }
        extend!(Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64, Str)
    }
}

/// Attributes of an AnnData array node.
pub fn array_attrs() -> Value {
    json!({"encoding-type": "array", "encoding-version": "0.2.0"})
}

/// Attributes of an AnnData string array node.
pub fn string_array_attrs() -> Value {
    json!({"encoding-type": "string-array", "encoding-version": "0.2.0"})
}

/// A group node's metadata document.
pub fn group_doc(attributes: Value) -> Value {
    json!({"attributes": attributes, "zarr_format": 3, "node_type": "group"})
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zarrs::array::{Array, ArraySubset};

    use super::Arrays;
    use crate::storage::Publisher;

    fn arrays_in(dir: &std::path::Path) -> Arrays {
        super::super::arrays_at(dir, &Arc::new(Publisher::new())).unwrap()
    }

    /// What zarrs' own subset read returns, for comparison.
    fn zarrs_read<T: zarrs::array::ElementOwned>(
        arrays: &Arrays,
        path: &str,
        ranges: &[std::ops::Range<u64>],
    ) -> Vec<T> {
        let array = Array::open(arrays.store.clone(), &format!("/{path}")).unwrap();
        array
            .retrieve_array_subset::<Vec<T>>(&ArraySubset::new_with_ranges(ranges))
            .unwrap()
    }

    #[test]
    fn rows_inside_one_chunk_read_as_zarrs_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let arrays = arrays_in(dir.path());
        let words: Vec<String> = ["a", "", "ccc", "d\u{e9}", "e"].map(String::from).to_vec();
        // Few values in a large chunk, as the categories of a table.
        arrays
            .create(
                "words",
                "string",
                vec![5],
                vec![65536],
                serde_json::json!({}),
                words.clone(),
            )
            .unwrap();
        // A 2-d array of several chunks along rows.
        let grid: Vec<f64> = (0..30).map(|v| f64::from(v) * 0.5).collect();
        arrays
            .create(
                "grid",
                "float64",
                vec![10, 3],
                vec![4, 3],
                serde_json::json!({}),
                grid,
            )
            .unwrap();
        for (start, end) in [(0, 5), (0, 1), (2, 4), (4, 5), (3, 3)] {
            let got: Vec<String> = arrays.read("words", start..end).unwrap();
            assert_eq!(got, words[start as usize..end as usize]);
            assert_eq!(
                got,
                zarrs_read::<String>(&arrays, "words", std::slice::from_ref(&(start..end)))
            );
        }
        for (start, end) in [
            (0, 4),
            (1, 3),
            (4, 8),
            (5, 6),
            (8, 10),
            (9, 10),
            (2, 9),
            (0, 10),
        ] {
            let got: Vec<f64> = arrays.read("grid", start..end).unwrap();
            let expected: Vec<f64> = (start * 3..end * 3).map(|v| v as f64 * 0.5).collect();
            assert_eq!(got, expected, "rows {start}..{end}");
            assert_eq!(got, zarrs_read::<f64>(&arrays, "grid", &[start..end, 0..3]));
        }
    }
}
