//! Reading table rows back as Arrow.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::types::*;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};

use super::XRows;
use super::append::with_prim;
use super::arrays::Arrays;
use super::columns::{
    ColumnKind, Prim, to_arrow_bools, to_arrow_categorical, to_arrow_numbers, to_arrow_strings,
};
use super::state::{TableState, XState};
use crate::error::{Error, Result};

fn numbers(
    arrays: &Arrays,
    path: &str,
    prim: Prim,
    range: Range<u64>,
    mask: Option<Vec<bool>>,
) -> Result<ArrayRef> {
    Ok(match prim {
        Prim::Bool => to_arrow_bools(arrays.read::<bool>(path, range)?, mask),
        Prim::I8 => to_arrow_numbers::<Int8Type>(arrays.read(path, range)?, mask),
        Prim::I16 => to_arrow_numbers::<Int16Type>(arrays.read(path, range)?, mask),
        Prim::I32 => to_arrow_numbers::<Int32Type>(arrays.read(path, range)?, mask),
        Prim::I64 => to_arrow_numbers::<Int64Type>(arrays.read(path, range)?, mask),
        Prim::U8 => to_arrow_numbers::<UInt8Type>(arrays.read(path, range)?, mask),
        Prim::U16 => to_arrow_numbers::<UInt16Type>(arrays.read(path, range)?, mask),
        Prim::U32 => to_arrow_numbers::<UInt32Type>(arrays.read(path, range)?, mask),
        Prim::U64 => to_arrow_numbers::<UInt64Type>(arrays.read(path, range)?, mask),
        Prim::F32 => to_arrow_numbers::<Float32Type>(arrays.read(path, range)?, mask),
        Prim::F64 => to_arrow_numbers::<Float64Type>(arrays.read(path, range)?, mask),
    })
}

fn codes_as_i64(arrays: &Arrays, path: &str, prim: Prim, range: Range<u64>) -> Result<Vec<i64>> {
    with_prim!(prim, T => {
        let values: Vec<T> = arrays.read(path, range)?;
        #[allow(clippy::unnecessary_cast)]
        Ok(values.into_iter().map(|v| v as i64).collect())
    })
}

fn check_range(state: &TableState, range: &Range<u64>) -> Result<()> {
    if range.start > range.end || range.end > state.n_obs {
        return Err(Error::InvalidInput(format!(
            "rows {range:?} are outside the table's {} rows",
            state.n_obs
        )));
    }
    Ok(())
}

/// Reads obs rows `range` of the table `state` (whose arrays live under `base`).
pub fn read_rows(
    arrays: &Arrays,
    base: &str,
    state: &TableState,
    range: Range<u64>,
) -> Result<RecordBatch> {
    check_range(state, &range)?;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (name, kind) in &state.columns {
        let path = format!("{base}/obs/{name}");
        let column = match kind {
            ColumnKind::Plain(prim) => numbers(arrays, &path, *prim, range.clone(), None)?,
            ColumnKind::Nullable(prim) => {
                let mask = arrays.read::<bool>(&format!("{path}/mask"), range.clone())?;
                numbers(
                    arrays,
                    &format!("{path}/values"),
                    *prim,
                    range.clone(),
                    Some(mask),
                )?
            }
            ColumnKind::Str => to_arrow_strings(arrays.read(&path, range.clone())?, None),
            ColumnKind::NullableStr => {
                let mask = arrays.read::<bool>(&format!("{path}/mask"), range.clone())?;
                to_arrow_strings(
                    arrays.read(&format!("{path}/values"), range.clone())?,
                    Some(mask),
                )
            }
            ColumnKind::Categorical { codes, .. } => {
                let codes = codes_as_i64(arrays, &format!("{path}/codes"), *codes, range.clone())?;
                let categories = state.categories.get(name).cloned().unwrap_or_default();
                to_arrow_categorical(codes, categories)?
            }
        };
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::Corrupt {
        path: state.dir.clone(),
        reason: e.to_string(),
    })
}

/// X rows as stored, each value of the element type the table stores (what
/// [`read_x_values`] returns).
#[derive(Debug, Clone)]
pub enum XValues {
    /// Row-major values, `rows x n_vars`, as one Arrow array of the stored type.
    Dense(ArrayRef),
    /// CSR rows: `indptr` has `rows + 1` entries starting at 0.
    Csr {
        /// Row offsets into `indices` and `data`.
        indptr: Vec<i64>,
        /// Column of each stored value.
        indices: Vec<i64>,
        /// The stored values, as one Arrow array of the stored type.
        data: ArrayRef,
    },
}

/// X rows of either layout, with the values read by the caller's reader.
enum XParts<V> {
    Dense(V),
    Csr {
        indptr: Vec<i64>,
        indices: Vec<i64>,
        data: V,
    },
}

/// Reads X rows `range` of the table `state`, its values through `values` (given
/// the array's path, stored type and element range); `None` when it has no X. CSR
/// `indptr` is rebased to 0.
fn read_x_parts<V>(
    arrays: &Arrays,
    base: &str,
    state: &TableState,
    range: Range<u64>,
    values: impl Fn(&str, Prim, Range<u64>) -> Result<V>,
) -> Result<Option<XParts<V>>> {
    check_range(state, &range)?;
    Ok(match &state.x {
        XState::None => None,
        XState::Dense { dtype, .. } => {
            Some(XParts::Dense(values(&format!("{base}/X"), *dtype, range)?))
        }
        XState::Csr {
            data,
            indices,
            indptr,
            ..
        } => {
            let ptr = codes_as_i64(
                arrays,
                &format!("{base}/X/indptr"),
                *indptr,
                range.start..range.end + 1,
            )?;
            let (lo, hi) = (ptr[0] as u64, *ptr.last().expect("non-empty") as u64);
            Some(XParts::Csr {
                indptr: ptr.iter().map(|p| p - ptr[0]).collect(),
                indices: codes_as_i64(arrays, &format!("{base}/X/indices"), *indices, lo..hi)?,
                data: values(&format!("{base}/X/data"), *data, lo..hi)?,
            })
        }
    })
}

/// Reads X rows `range` of the table `state` as `f64`; `None` when it has no X.
pub fn read_x_rows(
    arrays: &Arrays,
    base: &str,
    state: &TableState,
    range: Range<u64>,
) -> Result<Option<XRows>> {
    let as_f64 = |path: &str, prim: Prim, r: Range<u64>| -> Result<Vec<f64>> {
        with_prim!(prim, T => {
            let values: Vec<T> = arrays.read(path, r)?;
            Ok(values.into_iter().map(to_f64).collect())
        })
    };
    Ok(
        read_x_parts(arrays, base, state, range, as_f64)?.map(|x| match x {
            XParts::Dense(values) => XRows::Dense(values),
            XParts::Csr {
                indptr,
                indices,
                data,
            } => XRows::Csr {
                indptr,
                indices,
                data,
            },
        }),
    )
}

/// Reads X rows `range` of the table `state` in the element type it is stored in;
/// `None` when it has no X.
pub fn read_x_values(
    arrays: &Arrays,
    base: &str,
    state: &TableState,
    range: Range<u64>,
) -> Result<Option<XValues>> {
    let typed = |path: &str, prim: Prim, r: Range<u64>| numbers(arrays, path, prim, r, None);
    Ok(
        read_x_parts(arrays, base, state, range, typed)?.map(|x| match x {
            XParts::Dense(values) => XValues::Dense(values),
            XParts::Csr {
                indptr,
                indices,
                data,
            } => XValues::Csr {
                indptr,
                indices,
                data,
            },
        }),
    )
}

/// A stored element as `f64` (booleans as 0 or 1).
pub(crate) fn to_f64<T: ToF64>(v: T) -> f64 {
    v.to_f64()
}

/// Conversion of stored elements to `f64`.
pub(crate) trait ToF64 {
    fn to_f64(self) -> f64;
}

macro_rules! to_f64_as {
    ($($t:ty),*) => {$(impl ToF64 for $t { fn to_f64(self) -> f64 { self as f64 } })*};
}
to_f64_as!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

impl ToF64 for bool {
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
}
