//! The Python extension module `spatialzarr._spatialzarr`: a thin layer that converts
//! Python values (numpy arrays, Arrow data, plain lists) into the core's types and the
//! core's errors into the exceptions of `spatialzarr._errors`. Every call that reads,
//! writes, encodes or waits for a lock releases the GIL. The pythonic API (context
//! managers, pickling, pandas, xarray, dask) lives in the pure-Python package.

#![forbid(unsafe_code)]

mod blocks;
mod dataset;
mod errors;
mod lock;
mod pixels;
mod tables;
mod transaction;
mod vectors;

use pyo3::prelude::*;

#[pymodule]
fn _spatialzarr(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<dataset::Dataset>()?;
    m.add_class::<lock::LockGuard>()?;
    m.add_class::<transaction::Transaction>()?;
    m.add_class::<blocks::RasterWriter>()?;

    m.add_function(wrap_pyfunction!(lock::lock_path, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
