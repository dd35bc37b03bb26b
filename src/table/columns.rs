//! obs columns: their AnnData encodings, and conversion from and to Arrow.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array as _, ArrayRef, BooleanArray, DictionaryArray, PrimitiveArray, StringArray,
};
use arrow_schema::DataType as ArrowType;
use serde_json::Value;

use crate::error::{Error, Result};

/// A primitive element type of a column array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    /// `bool`
    Bool,
    /// `int8`
    I8,
    /// `int16`
    I16,
    /// `int32`
    I32,
    /// `int64`
    I64,
    /// `uint8`
    U8,
    /// `uint16`
    U16,
    /// `uint32`
    U32,
    /// `uint64`
    U64,
    /// `float32`
    F32,
    /// `float64`
    F64,
}

impl Prim {
    /// The Zarr v3 data type name.
    pub fn name(self) -> &'static str {
        match self {
            Prim::Bool => "bool",
            Prim::I8 => "int8",
            Prim::I16 => "int16",
            Prim::I32 => "int32",
            Prim::I64 => "int64",
            Prim::U8 => "uint8",
            Prim::U16 => "uint16",
            Prim::U32 => "uint32",
            Prim::U64 => "uint64",
            Prim::F32 => "float32",
            Prim::F64 => "float64",
        }
    }

    /// Parses a Zarr v3 data type name.
    pub fn parse(name: &str) -> Option<Prim> {
        [
            Prim::Bool,
            Prim::I8,
            Prim::I16,
            Prim::I32,
            Prim::I64,
            Prim::U8,
            Prim::U16,
            Prim::U32,
            Prim::U64,
            Prim::F32,
            Prim::F64,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }

    fn is_float(self) -> bool {
        matches!(self, Prim::F32 | Prim::F64)
    }
}

/// How an obs column is encoded (AnnData's `encoding-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// `array`: a plain numeric or boolean array (floats hold missing values as NaN).
    Plain(Prim),
    /// `nullable-integer` / `nullable-boolean`: `values` + `mask`.
    Nullable(Prim),
    /// `string-array`: strings without missing values.
    Str,
    /// `nullable-string-array`: `values` + `mask`.
    NullableStr,
    /// `categorical`: `codes` (-1 = missing) + `categories`.
    Categorical {
        /// Type of the codes.
        codes: Prim,
        /// Whether the categories are ordered.
        ordered: bool,
    },
}

impl ColumnKind {
    /// A short name for messages and `info` output.
    pub fn describe(&self) -> String {
        match self {
            ColumnKind::Plain(p) => p.name().to_owned(),
            ColumnKind::Nullable(p) => format!("nullable {}", p.name()),
            ColumnKind::Str => "string".into(),
            ColumnKind::NullableStr => "nullable string".into(),
            ColumnKind::Categorical { .. } => "categorical".into(),
        }
    }

    /// Reads the encoding of the obs column node whose folder is `dir`.
    pub fn detect(dir: &std::path::Path) -> Result<Self> {
        let doc = crate::element::raster::read_json(&dir.join("zarr.json"))?;
        let corrupt = |reason: String| Error::Corrupt {
            path: dir.to_path_buf(),
            reason,
        };
        let encoding = doc
            .pointer("/attributes/encoding-type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let prim_of = |path: &std::path::Path| -> Result<Prim> {
            let doc = crate::element::raster::read_json(&path.join("zarr.json"))?;
            let name = doc.get("data_type").and_then(Value::as_str).unwrap_or("?");
            Prim::parse(name).ok_or_else(|| corrupt(format!("unsupported data type {name}")))
        };
        Ok(match encoding {
            // The array's own document, read above.
            "array" => ColumnKind::Plain(super::state::prim_of(dir, &doc)?),
            "string-array" => ColumnKind::Str,
            "nullable-string-array" => ColumnKind::NullableStr,
            "nullable-integer" | "nullable-boolean" => {
                ColumnKind::Nullable(prim_of(&dir.join("values"))?)
            }
            "categorical" => ColumnKind::Categorical {
                codes: prim_of(&dir.join("codes"))?,
                ordered: doc
                    .pointer("/attributes/ordered")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            other => return Err(corrupt(format!("unsupported column encoding {other:?}"))),
        })
    }

    /// The encoding for a new column holding `array`.
    pub fn for_new_column(name: &str, array: &ArrayRef, categorical: bool) -> Result<Self> {
        let nulls = array.null_count() > 0;
        let prim = match array.data_type() {
            ArrowType::Boolean => Some(Prim::Bool),
            ArrowType::Int8 => Some(Prim::I8),
            ArrowType::Int16 => Some(Prim::I16),
            ArrowType::Int32 => Some(Prim::I32),
            ArrowType::Int64 => Some(Prim::I64),
            ArrowType::UInt8 => Some(Prim::U8),
            ArrowType::UInt16 => Some(Prim::U16),
            ArrowType::UInt32 => Some(Prim::U32),
            ArrowType::UInt64 => Some(Prim::U64),
            ArrowType::Float32 => Some(Prim::F32),
            ArrowType::Float64 => Some(Prim::F64),
            _ => None,
        };
        Ok(match (prim, array.data_type()) {
            (Some(p), _) if categorical => {
                return Err(Error::InvalidInput(format!(
                    "column {name:?} must be categorical (strings), but holds {}",
                    p.name()
                )));
            }
            (Some(p), _) if p.is_float() || !nulls => ColumnKind::Plain(p),
            (Some(p), _) => ColumnKind::Nullable(p),
            (None, ArrowType::Utf8 | ArrowType::LargeUtf8) if categorical => {
                ColumnKind::Categorical {
                    codes: Prim::I32,
                    ordered: false,
                }
            }
            (None, ArrowType::Utf8 | ArrowType::LargeUtf8) => ColumnKind::NullableStr,
            (None, ArrowType::Dictionary(_, _)) => ColumnKind::Categorical {
                codes: Prim::I32,
                ordered: false,
            },
            (None, other) => {
                return Err(Error::InvalidInput(format!(
                    "column {name:?} has Arrow type {other}, which tables cannot hold (use integers, floats, booleans, strings or dictionary strings)"
                )));
            }
        })
    }
}

/// A column's values taken out of Arrow, in a form every encoding can consume.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Booleans.
    Bool(Vec<Option<bool>>),
    /// Signed integers.
    Int(Vec<Option<i64>>),
    /// Unsigned integers.
    UInt(Vec<Option<u64>>),
    /// Floats.
    Float(Vec<Option<f64>>),
    /// Strings (also dictionary-encoded ones, decoded).
    Str(Vec<Option<String>>),
}

fn prim_values<T: ArrowPrimitiveType>(array: &ArrayRef) -> Vec<Option<T::Native>> {
    array.as_primitive::<T>().iter().collect()
}

fn widen<A: Copy, B>(values: Vec<Option<A>>, f: impl Fn(A) -> B) -> Vec<Option<B>> {
    values.into_iter().map(|v| v.map(&f)).collect()
}

impl Values {
    /// Takes the values of an Arrow array; `name` names the column in errors.
    pub fn from_arrow(name: &str, array: &ArrayRef) -> Result<Self> {
        Ok(match array.data_type() {
            ArrowType::Boolean => Values::Bool(array.as_boolean().iter().collect()),
            ArrowType::Int8 => Values::Int(widen(prim_values::<Int8Type>(array), i64::from)),
            ArrowType::Int16 => Values::Int(widen(prim_values::<Int16Type>(array), i64::from)),
            ArrowType::Int32 => Values::Int(widen(prim_values::<Int32Type>(array), i64::from)),
            ArrowType::Int64 => Values::Int(prim_values::<Int64Type>(array)),
            ArrowType::UInt8 => Values::UInt(widen(prim_values::<UInt8Type>(array), u64::from)),
            ArrowType::UInt16 => Values::UInt(widen(prim_values::<UInt16Type>(array), u64::from)),
            ArrowType::UInt32 => Values::UInt(widen(prim_values::<UInt32Type>(array), u64::from)),
            ArrowType::UInt64 => Values::UInt(prim_values::<UInt64Type>(array)),
            ArrowType::Float32 => {
                Values::Float(widen(prim_values::<Float32Type>(array), f64::from))
            }
            ArrowType::Float64 => Values::Float(prim_values::<Float64Type>(array)),
            ArrowType::Utf8 => Values::Str(
                array
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::to_owned))
                    .collect(),
            ),
            ArrowType::LargeUtf8 => Values::Str(
                array
                    .as_string::<i64>()
                    .iter()
                    .map(|s| s.map(str::to_owned))
                    .collect(),
            ),
            ArrowType::Dictionary(key, value)
                if matches!(value.as_ref(), ArrowType::Utf8 | ArrowType::LargeUtf8) =>
            {
                let decoded = arrow_dictionary_strings(array, key).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "column {name:?}: unsupported dictionary key type {key}"
                    ))
                })?;
                Values::Str(decoded)
            }
            other => {
                return Err(Error::InvalidInput(format!(
                    "column {name:?} has Arrow type {other}, which tables cannot hold"
                )));
            }
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Bool(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::UInt(v) => v.len(),
            Values::Float(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any value is missing.
    pub fn has_nulls(&self) -> bool {
        match self {
            Values::Bool(v) => v.iter().any(Option::is_none),
            Values::Int(v) => v.iter().any(Option::is_none),
            Values::UInt(v) => v.iter().any(Option::is_none),
            Values::Float(v) => v.iter().any(Option::is_none),
            Values::Str(v) => v.iter().any(Option::is_none),
        }
    }

    /// The values as strings (for categorical and string columns).
    pub fn into_strings(self, name: &str) -> Result<Vec<Option<String>>> {
        match self {
            Values::Str(v) => Ok(v),
            _ => Err(Error::InvalidInput(format!(
                "column {name:?} holds strings, but the rows give numbers or booleans"
            ))),
        }
    }
}

fn arrow_dictionary_strings(array: &ArrayRef, key: &ArrowType) -> Option<Vec<Option<String>>> {
    fn decode<K: ArrowDictionaryKeyType>(array: &ArrayRef) -> Vec<Option<String>> {
        let dict: &DictionaryArray<K> = array.as_dictionary::<K>();
        let values = dict.values();
        let strings: Vec<Option<String>> = match values.data_type() {
            ArrowType::LargeUtf8 => values
                .as_string::<i64>()
                .iter()
                .map(|s| s.map(str::to_owned))
                .collect(),
            _ => values
                .as_string::<i32>()
                .iter()
                .map(|s| s.map(str::to_owned))
                .collect(),
        };
        dict.keys()
            .iter()
            .map(|k| {
                k.and_then(|k| {
                    strings
                        .get(arrow_buffer::ArrowNativeType::as_usize(k))
                        .cloned()
                        .flatten()
                })
            })
            .collect()
    }
    Some(match key {
        ArrowType::Int8 => decode::<Int8Type>(array),
        ArrowType::Int16 => decode::<Int16Type>(array),
        ArrowType::Int32 => decode::<Int32Type>(array),
        ArrowType::Int64 => decode::<Int64Type>(array),
        ArrowType::UInt8 => decode::<UInt8Type>(array),
        ArrowType::UInt16 => decode::<UInt16Type>(array),
        ArrowType::UInt32 => decode::<UInt32Type>(array),
        _ => return None,
    })
}

/// Converts numeric or boolean values to the element type of a stored array, refusing
/// values that do not fit; missing values become `missing` (0, false or NaN) and are
/// reported in the returned mask.
pub fn convert_numbers<T: Copy + NumCast>(
    name: &str,
    values: &Values,
    missing: T,
) -> Result<(Vec<T>, Vec<bool>)> {
    let mut out = Vec::with_capacity(values.len());
    let mut mask = Vec::with_capacity(values.len());
    let fail = |v: String| {
        Error::InvalidInput(format!(
            "column {name:?}: value {v} does not fit the column's type {}",
            T::NAME
        ))
    };
    macro_rules! run {
        ($v:expr, $conv:expr) => {
            for value in $v {
                match value {
                    Some(x) => {
                        out.push($conv(*x).ok_or_else(|| fail(x.to_string()))?);
                        mask.push(false);
                    }
                    None => {
                        out.push(missing);
                        mask.push(true);
                    }
                }
            }
        };
    }
    match values {
        Values::Int(v) => run!(v, T::from_i64),
        Values::UInt(v) => run!(v, T::from_u64),
        Values::Float(v) => run!(v, T::from_f64),
        Values::Bool(v) => run!(v, T::from_bool),
        Values::Str(_) => {
            return Err(Error::InvalidInput(format!(
                "column {name:?} holds {}, but the rows give strings",
                T::NAME
            )));
        }
    }
    Ok((out, mask))
}

/// Lossless conversion into a stored element type.
pub trait NumCast: Sized {
    /// The Zarr name of the type.
    const NAME: &'static str;
    /// From a signed integer.
    fn from_i64(v: i64) -> Option<Self>;
    /// From an unsigned integer.
    fn from_u64(v: u64) -> Option<Self>;
    /// From a float (integers only take integral values).
    fn from_f64(v: f64) -> Option<Self>;
    /// From a boolean.
    fn from_bool(v: bool) -> Option<Self>;
}

macro_rules! num_cast_int {
    ($t:ty, $n:expr) => {
        impl NumCast for $t {
            const NAME: &'static str = $n;
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_f64(v: f64) -> Option<Self> {
                (v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64)
                    .then(|| v as $t)
            }
            fn from_bool(_: bool) -> Option<Self> {
                None
            }
        }
    };
}
num_cast_int!(i8, "int8");
num_cast_int!(i16, "int16");
num_cast_int!(i32, "int32");
num_cast_int!(i64, "int64");
num_cast_int!(u8, "uint8");
num_cast_int!(u16, "uint16");
num_cast_int!(u32, "uint32");
num_cast_int!(u64, "uint64");

macro_rules! num_cast_float {
    ($t:ty, $n:expr) => {
        impl NumCast for $t {
            const NAME: &'static str = $n;
            fn from_i64(v: i64) -> Option<Self> {
                Some(v as $t)
            }
            fn from_u64(v: u64) -> Option<Self> {
                Some(v as $t)
            }
            fn from_f64(v: f64) -> Option<Self> {
                Some(v as $t)
            }
            fn from_bool(_: bool) -> Option<Self> {
                None
            }
        }
    };
}
num_cast_float!(f32, "float32");
num_cast_float!(f64, "float64");

impl NumCast for bool {
    const NAME: &'static str = "bool";
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// Builds an Arrow array from stored values and an optional mask (true = missing).
pub fn to_arrow_numbers<T: ArrowPrimitiveType>(
    values: Vec<T::Native>,
    mask: Option<Vec<bool>>,
) -> ArrayRef {
    match mask {
        None => Arc::new(PrimitiveArray::<T>::from_iter_values(values)),
        Some(mask) => Arc::new(PrimitiveArray::<T>::from_iter(
            values.into_iter().zip(mask).map(|(v, m)| (!m).then_some(v)),
        )),
    }
}

/// Builds an Arrow boolean array.
pub fn to_arrow_bools(values: Vec<bool>, mask: Option<Vec<bool>>) -> ArrayRef {
    let mask = mask.unwrap_or_else(|| vec![false; values.len()]);
    Arc::new(BooleanArray::from_iter(
        values.into_iter().zip(mask).map(|(v, m)| (!m).then_some(v)),
    ))
}

/// Builds an Arrow string array.
pub fn to_arrow_strings(values: Vec<String>, mask: Option<Vec<bool>>) -> ArrayRef {
    let mask = mask.unwrap_or_else(|| vec![false; values.len()]);
    Arc::new(StringArray::from_iter(
        values.into_iter().zip(mask).map(|(v, m)| (!m).then_some(v)),
    ))
}

/// Builds an Arrow dictionary (categorical) array from codes (-1 = missing).
pub fn to_arrow_categorical(codes: Vec<i64>, categories: Vec<String>) -> Result<ArrayRef> {
    let n = categories.len() as i64;
    let keys = arrow_array::Int32Array::from_iter(
        codes
            .into_iter()
            .map(|c| (c >= 0 && c < n).then_some(c as i32)),
    );
    let values = Arc::new(StringArray::from(categories));
    DictionaryArray::<Int32Type>::try_new(keys, values)
        .map(|d| Arc::new(d) as ArrayRef)
        .map_err(|e| Error::InvalidInput(e.to_string()))
}
