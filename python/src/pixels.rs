//! numpy arrays in and out of raster elements, dispatched on the pixel type.

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use spatialzarr::DType;

use crate::errors::invalid;

/// Runs `$body` with `$t` bound to the Rust type of the pixel type `$dtype`.
macro_rules! with_pixel {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            spatialzarr::DType::U8 => {
                type $t = u8;
                $body
            }
            spatialzarr::DType::U16 => {
                type $t = u16;
                $body
            }
            spatialzarr::DType::U32 => {
                type $t = u32;
                $body
            }
            spatialzarr::DType::U64 => {
                type $t = u64;
                $body
            }
            spatialzarr::DType::I8 => {
                type $t = i8;
                $body
            }
            spatialzarr::DType::I16 => {
                type $t = i16;
                $body
            }
            spatialzarr::DType::I32 => {
                type $t = i32;
                $body
            }
            spatialzarr::DType::I64 => {
                type $t = i64;
                $body
            }
            spatialzarr::DType::F32 => {
                type $t = f32;
                $body
            }
            spatialzarr::DType::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}
pub(crate) use with_pixel;

/// The pixel type of a numpy array, or an `InvalidInputError` naming what it is.
pub fn dtype_of(array: &Bound<'_, PyAny>) -> PyResult<DType> {
    let untyped = array.cast::<PyUntypedArray>().map_err(|_| {
        invalid(format!(
            "expected a numpy array, got {}",
            array
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let text: String = untyped.dtype().getattr("str")?.extract()?;
    DType::parse(&text).ok_or_else(|| {
        let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
        invalid(format!(
            "pixel type {text} is not supported: use one of {} (native byte order)",
            names.join(", ")
        ))
    })
}

/// The typed numpy array behind `array` (whose pixel type is `T`).
pub fn typed<'a, 'py, T: numpy::Element>(
    array: &'a Bound<'py, PyAny>,
) -> PyResult<&'a Bound<'py, PyArrayDyn<T>>> {
    array
        .cast::<PyArrayDyn<T>>()
        .map_err(|e| invalid(format!("unexpected array type: {e}")))
}

/// Keeps the array's read-only borrow alive while its view is used without the GIL.
pub fn readonly<'py, T: numpy::Element>(
    array: &Bound<'py, PyArrayDyn<T>>,
) -> PyResult<numpy::PyReadonlyArrayDyn<'py, T>> {
    array
        .try_readonly()
        .map_err(|e| invalid(format!("the array cannot be read: {e}")))
}
