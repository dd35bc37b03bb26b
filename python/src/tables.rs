//! Table rows in and out: obs as Arrow record batches, X as numpy arrays.

use arrow_array::{Array, RecordBatch};
use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use spatialzarr::table::{AppendOutcome, Prim, RowBatch, TableSpec, XRows, XSpec, XValues};

use crate::dataset::Dataset;
use crate::errors::{OrRaise, invalid};

/// A record batch from anything Arrow-exportable (`__arrow_c_array__`, a pyarrow
/// RecordBatch).
pub fn batch_of(value: &Bound<'_, PyAny>) -> PyResult<RecordBatch> {
    RecordBatch::from_pyarrow_bound(value)
        .map_err(|e| invalid(format!("expected Arrow record batch data: {e}")))
}

/// The X element type named in Python.
fn prim_of(dtype: &str) -> PyResult<Prim> {
    match dtype {
        "float32" => Ok(Prim::F32),
        "float64" => Ok(Prim::F64),
        other => Err(invalid(format!(
            "X must be float32 or float64, got {other}"
        ))),
    }
}

/// The rows of X given from Python, with what a new table's X looks like.
fn x_of(
    dense: Option<PyReadonlyArray2<'_, f64>>,
    csr: Option<(
        PyReadonlyArray1<'_, i64>,
        PyReadonlyArray1<'_, i64>,
        PyReadonlyArray1<'_, f64>,
    )>,
    dtype: &str,
    var_names: Vec<String>,
) -> PyResult<(Option<XRows>, XSpec)> {
    match (dense, csr) {
        (Some(_), Some(_)) => Err(invalid("give X dense or sparse, not both")),
        (None, None) => Ok((None, XSpec::None)),
        (Some(dense), None) => {
            let view = dense.as_array();
            if view.ncols() != var_names.len() {
                return Err(invalid(format!(
                    "X has {} columns but {} variable names were given",
                    view.ncols(),
                    var_names.len()
                )));
            }
            let values: Vec<f64> = view.iter().copied().collect();
            let spec = XSpec::Dense {
                dtype: prim_of(dtype)?,
                var_names,
            };
            Ok((Some(XRows::Dense(values)), spec))
        }
        (None, Some((indptr, indices, data))) => {
            let rows = XRows::Csr {
                indptr: indptr.as_slice()?.to_vec(),
                indices: indices.as_slice()?.to_vec(),
                data: data.as_slice()?.to_vec(),
            };
            let spec = XSpec::Csr {
                dtype: prim_of(dtype)?,
                var_names,
            };
            Ok((Some(rows), spec))
        }
    }
}

/// An append's outcome as `(start, stop, applied)`.
pub fn outcome_tuple(o: &AppendOutcome) -> (u64, u64, bool) {
    (o.start, o.end, o.applied)
}

#[pymethods]
impl Dataset {
    /// Appends rows (an Arrow record batch of obs, optional X) to a table, creating it
    /// on the first append; returns `(start, stop, applied)`.
    #[pyo3(signature = (table, obs, x_dense=None, x_csr=None, x_dtype="float64", var_names=Vec::new(), key=None, region_key="region", instance_key="instance_id"))]
    #[allow(clippy::too_many_arguments)]
    fn append_rows(
        &self,
        py: Python<'_>,
        table: &str,
        obs: &Bound<'_, PyAny>,
        x_dense: Option<PyReadonlyArray2<'_, f64>>,
        x_csr: Option<(
            PyReadonlyArray1<'_, i64>,
            PyReadonlyArray1<'_, i64>,
            PyReadonlyArray1<'_, f64>,
        )>,
        x_dtype: &str,
        var_names: Vec<String>,
        key: Option<&str>,
        region_key: &str,
        instance_key: &str,
    ) -> PyResult<(u64, u64, bool)> {
        let obs = batch_of(obs)?;
        let (x, x_spec) = x_of(x_dense, x_csr, x_dtype, var_names)?;
        let spec = TableSpec {
            region_key: region_key.to_owned(),
            instance_key: instance_key.to_owned(),
            x: x_spec,
        };
        let rows = RowBatch { obs, x };
        let outcome = py
            .detach(|| self.inner.append_rows(table, &rows, Some(&spec), key))
            .or_raise()?;
        Ok(outcome_tuple(&outcome))
    }

    /// Reads every obs row of a table as a pyarrow RecordBatch.
    fn read_obs<'py>(&self, py: Python<'py>, table: &str) -> PyResult<Bound<'py, PyAny>> {
        let batch = py
            .detach(|| {
                let n = self.inner.table_info(table)?.n_obs;
                self.inner.read_rows(table, 0..n)
            })
            .or_raise()?;
        batch.to_pyarrow(py)
    }

    /// Reads X of a table in its stored element type: None, `("dense", values,
    /// n_obs, n_vars)` with the row-major values as a pyarrow Array, or `("csr",
    /// indptr, indices, data, n_vars)` with `data` as a pyarrow Array.
    fn read_x<'py>(&self, py: Python<'py>, table: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let (info, x) = py
            .detach(|| {
                let info = self.inner.table_info(table)?;
                let x = self.inner.read_x_values(table, 0..info.n_obs)?;
                Ok::<_, spatialzarr::Error>((info, x))
            })
            .or_raise()?;
        let n_vars = info.n_vars;
        Ok(match x {
            None => None,
            Some(XValues::Dense(values)) => Some(
                (
                    "dense",
                    values.to_data().to_pyarrow(py)?,
                    info.n_obs,
                    n_vars,
                )
                    .into_pyobject(py)?
                    .into_any(),
            ),
            Some(XValues::Csr {
                indptr,
                indices,
                data,
            }) => Some(
                (
                    "csr",
                    PyArray1::from_vec(py, indptr),
                    PyArray1::from_vec(py, indices),
                    data.to_data().to_pyarrow(py)?,
                    n_vars,
                )
                    .into_pyobject(py)?
                    .into_any(),
            ),
        })
    }
}
