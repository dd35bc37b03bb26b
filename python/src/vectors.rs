//! Points and shapes from Arrow data and coordinate lists.

use arrow_pyarrow::ToPyArrow;
use pyo3::prelude::*;
use spatialzarr::element::shapes::{Polygon, Shape, Shapes};

use crate::dataset::{Dataset, transformations_of};
use crate::errors::{OrRaise, invalid};
use crate::tables::{batch_of, outcome_tuple};

/// One shape as Python gives it: `("Polygon", rings)` or `("MultiPolygon", polygons)`.
type PyShape = (String, Vec<Polygon>);

fn shape_of((kind, polygons): PyShape) -> PyResult<Shape> {
    match kind.as_str() {
        "Polygon" => match <[Polygon; 1]>::try_from(polygons) {
            Ok([rings]) => Ok(Shape::Polygon(rings)),
            Err(_) => Err(invalid("a Polygon is given as one list of rings")),
        },
        "MultiPolygon" => Ok(Shape::MultiPolygon(polygons)),
        other => Err(invalid(format!(
            "shapes are Polygons, MultiPolygons or circles (Points with a radius), not {other}"
        ))),
    }
}

impl Dataset {
    /// Commits one staged element, replacing one of the same kind with `overwrite`.
    fn commit_staged(
        &self,
        staged: spatialzarr::Result<spatialzarr::StagedElement>,
        overwrite: bool,
    ) -> spatialzarr::Result<u64> {
        let staged = staged?;
        let mut txn = self.inner.write()?;
        txn.add_staged(staged, overwrite)?;
        Ok(txn.commit()?.generation)
    }
}

#[pymethods]
impl Dataset {
    /// Adds a points element from an Arrow record batch with `x`, `y` (and `z`).
    #[pyo3(signature = (name, batch, feature_key=None, instance_key=None, transformations=None, overwrite=false))]
    #[allow(clippy::too_many_arguments)]
    fn add_points(
        &self,
        py: Python<'_>,
        name: &str,
        batch: &Bound<'_, PyAny>,
        feature_key: Option<&str>,
        instance_key: Option<&str>,
        transformations: Option<&str>,
        overwrite: bool,
    ) -> PyResult<u64> {
        let batch = batch_of(batch)?;
        let t = transformations_of(transformations)?;
        py.detach(|| {
            let staged = self
                .inner
                .stage_points(name, &batch, feature_key, instance_key, &t);
            self.commit_staged(staged, overwrite)
        })
        .or_raise()
    }

    /// Appends points as one new part; returns `(start, stop, applied)`.
    #[pyo3(signature = (name, batch, key=None))]
    fn append_points(
        &self,
        py: Python<'_>,
        name: &str,
        batch: &Bound<'_, PyAny>,
        key: Option<&str>,
    ) -> PyResult<(u64, u64, bool)> {
        let batch = batch_of(batch)?;
        let outcome = py
            .detach(|| self.inner.append_points(name, &batch, key))
            .or_raise()?;
        Ok(outcome_tuple(&outcome))
    }

    /// Reads every point as a pyarrow RecordBatch.
    fn read_points<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let batch = py.detach(|| self.inner.read_points(name)).or_raise()?;
        batch.to_pyarrow(py)
    }

    /// Adds circles (centres and radii) with optional extra columns.
    #[pyo3(signature = (name, x, y, radius, columns=None, transformations=None, overwrite=false))]
    #[allow(clippy::too_many_arguments)]
    fn add_circles(
        &self,
        py: Python<'_>,
        name: &str,
        x: Vec<f64>,
        y: Vec<f64>,
        radius: Vec<f64>,
        columns: Option<&Bound<'_, PyAny>>,
        transformations: Option<&str>,
        overwrite: bool,
    ) -> PyResult<u64> {
        let shapes = Shapes::Circles { x, y, radius };
        self.add_shapes_of(py, name, shapes, columns, transformations, overwrite)
    }

    /// Adds polygons and multipolygons with optional extra columns.
    #[pyo3(signature = (name, shapes, columns=None, transformations=None, overwrite=false))]
    fn add_polygons(
        &self,
        py: Python<'_>,
        name: &str,
        shapes: Vec<PyShape>,
        columns: Option<&Bound<'_, PyAny>>,
        transformations: Option<&str>,
        overwrite: bool,
    ) -> PyResult<u64> {
        let shapes = Shapes::Polygons(shapes.into_iter().map(shape_of).collect::<PyResult<_>>()?);
        self.add_shapes_of(py, name, shapes, columns, transformations, overwrite)
    }
}

impl Dataset {
    fn add_shapes_of(
        &self,
        py: Python<'_>,
        name: &str,
        shapes: Shapes,
        columns: Option<&Bound<'_, PyAny>>,
        transformations: Option<&str>,
        overwrite: bool,
    ) -> PyResult<u64> {
        let columns = columns.map(batch_of).transpose()?;
        let t = transformations_of(transformations)?;
        py.detach(|| {
            let staged = self.inner.stage_shapes(name, &shapes, columns.as_ref(), &t);
            self.commit_staged(staged, overwrite)
        })
        .or_raise()
    }
}
