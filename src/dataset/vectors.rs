//! Points and shapes in the dataset handle.

use std::sync::Arc;

use arrow_array::RecordBatch;

use super::{CommitInfo, Dataset, StagedElement};
use crate::element::shapes::Shapes;
use crate::element::{ElementKind, ElementName, Transformations, points, shapes};
use crate::error::Result;
use crate::table::AppendOutcome;

impl Dataset {
    /// Writes a points element to a private staging folder without the lock. `batch`
    /// holds `x`, `y` (and `z`) and any other columns; `feature_key` names a column
    /// stored as a categorical, `instance_key` the column saying which instance (cell)
    /// each point belongs to (both recorded as spatialdata's `PointsModel` does).
    pub fn stage_points(
        &self,
        name: &str,
        batch: &RecordBatch,
        feature_key: Option<&str>,
        instance_key: Option<&str>,
        transformations: &Transformations,
    ) -> Result<StagedElement> {
        self.ensure_writable()?;
        let name = ElementName::new(name)?;
        let publisher = Arc::new(self.publisher());
        let staged = StagedElement::create(self.layout(), &publisher, ElementKind::Points, name)?;
        points::write_points_element(
            &staged.element_dir(),
            &publisher,
            batch,
            feature_key,
            instance_key,
            transformations,
        )?;
        publisher.sync()?;
        Ok(staged)
    }

    /// Writes a shapes element (circles or polygons, with optional extra columns) to a
    /// private staging folder without the lock.
    pub fn stage_shapes(
        &self,
        name: &str,
        shapes: &Shapes,
        columns: Option<&RecordBatch>,
        transformations: &Transformations,
    ) -> Result<StagedElement> {
        self.ensure_writable()?;
        let name = ElementName::new(name)?;
        let publisher = Arc::new(self.publisher());
        let staged = StagedElement::create(self.layout(), &publisher, ElementKind::Shapes, name)?;
        shapes::write_shapes_element(
            &staged.element_dir(),
            &publisher,
            shapes,
            columns,
            transformations,
        )?;
        publisher.sync()?;
        Ok(staged)
    }

    /// Adds (or with `overwrite` replaces) a points element.
    pub fn add_points(
        &self,
        name: &str,
        batch: &RecordBatch,
        feature_key: Option<&str>,
        overwrite: bool,
    ) -> Result<CommitInfo> {
        self.precheck_add(ElementKind::Points, name, overwrite)?;
        let staged =
            self.stage_points(name, batch, feature_key, None, &Transformations::default())?;
        let mut txn = self.write()?;
        txn.add_staged(staged, overwrite)?;
        txn.commit()
    }

    /// Adds (or with `overwrite` replaces) a shapes element.
    pub fn add_shapes(
        &self,
        name: &str,
        shapes: &Shapes,
        columns: Option<&RecordBatch>,
        overwrite: bool,
    ) -> Result<CommitInfo> {
        self.precheck_add(ElementKind::Shapes, name, overwrite)?;
        let staged = self.stage_shapes(name, shapes, columns, &Transformations::default())?;
        let mut txn = self.write()?;
        txn.add_staged(staged, overwrite)?;
        txn.commit()
    }

    /// Appends points as one new part file, in one commit; exactly once per `key`.
    pub fn append_points(
        &self,
        name: &str,
        batch: &RecordBatch,
        key: Option<&str>,
    ) -> Result<AppendOutcome> {
        let mut txn = self.write()?;
        let outcome = txn.append_points(name, batch, key)?;
        txn.commit()?;
        Ok(outcome)
    }

    /// Reads every point of a points element (all parts, in order).
    pub fn read_points(&self, name: &str) -> Result<RecordBatch> {
        let _guard = self.read_guard()?;
        let (_, kind, dir) = self.find(name)?;
        self.expect_kind(name, kind, ElementKind::Points)?;
        points::read_points(&dir)
    }

    /// Reads the geometries of a shapes element.
    pub fn read_shapes(&self, name: &str) -> Result<Shapes> {
        let _guard = self.read_guard()?;
        let (_, kind, dir) = self.find(name)?;
        self.expect_kind(name, kind, ElementKind::Shapes)?;
        shapes::read_shapes(&dir)
    }

    fn expect_kind(&self, name: &str, actual: ElementKind, expected: ElementKind) -> Result<()> {
        if actual == expected {
            return Ok(());
        }
        Err(crate::Error::WrongElementType {
            name: name.to_owned(),
            actual: actual.to_string(),
            expected: expected.to_string(),
        })
    }
}
