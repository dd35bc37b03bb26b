//! The table half of the dataset handle.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;

use super::group::{Done, Request};
use super::layout::element_path;
use super::{CommitInfo, Dataset};
use crate::element::{ElementKind, ElementName};
use crate::error::{Error, Result};
use crate::storage::Publisher;
use crate::table::{
    self, AppendOutcome, RowBatch, TableInfo, TableSpec, TableState, XRows, XValues,
};

impl Dataset {
    /// Appends rows to table `name` in one commit, creating the table from `create`
    /// when it does not exist. With an idempotency `key` that is already committed
    /// with the same rows, nothing changes and the first append's row range is
    /// returned (`applied` false); with other rows the append is refused
    /// ([`Error::KeyReused`]). A refused append changes no file.
    /// Joins the thread's open transaction on this dataset, if any.
    pub fn append_rows(
        &self,
        name: &str,
        rows: &RowBatch,
        create: Option<&TableSpec>,
        key: Option<&str>,
    ) -> Result<AppendOutcome> {
        self.append_rows_committed(name, rows, create, key)
            .map(|(outcome, _)| outcome)
    }

    /// [`Self::append_rows`], also returning the commit that took the rows. A call
    /// that finds the write lock busy queues its rows for the holder's commit (group
    /// commit, spec/commit-protocol.md §12): the returned generation is that commit's.
    pub fn append_rows_committed(
        &self,
        name: &str,
        rows: &RowBatch,
        create: Option<&TableSpec>,
        key: Option<&str>,
    ) -> Result<(AppendOutcome, CommitInfo)> {
        ElementName::new(name)?;
        let request = Request::Rows {
            table: name.to_owned(),
            rows: rows.clone(),
            create: create.cloned(),
            key: key.map(str::to_owned),
        };
        match self.commit_request(request)? {
            Done::Rows(outcome, info) => Ok((outcome, info)),
            Done::Changed(_) => unreachable!("an append request has an append outcome"),
        }
    }

    /// The committed state of table `name`, read under the lock the caller holds.
    pub(super) fn table_state(
        &self,
        name: &str,
    ) -> Result<(TableState, table::arrays::Arrays, String)> {
        let (name, kind, dir) = self.find(name)?;
        if kind != ElementKind::Tables {
            return Err(Error::WrongElementType {
                name: name.to_string(),
                actual: kind.to_string(),
                expected: "a table".into(),
            });
        }
        let arrays = table::arrays_at(self.root(), &Arc::new(Publisher::new()))?;
        let state = TableState::load(&dir, &arrays)?;
        Ok((state, arrays, element_path(kind, name.as_str())))
    }

    /// Describes table `name`.
    pub fn table_info(&self, name: &str) -> Result<TableInfo> {
        let _guard = self.read_guard()?;
        Ok(TableInfo::from_state(&self.table_state(name)?.0))
    }

    /// Describes table `name` without waiting: under the read lock when it is free at
    /// once, else read from its documents as a writer may be changing them (each is
    /// replaced atomically; an append never changes a column's type). For checking
    /// rows before an append, which the commit checks again under the lock.
    pub fn table_info_now(&self, name: &str) -> Result<TableInfo> {
        let _guard = self.read_guard_now()?;
        Ok(TableInfo::from_state(&self.table_state(name)?.0))
    }

    /// Reads obs rows `range` of table `name`; categorical columns come back as
    /// dictionary arrays, masked values as nulls.
    pub fn read_rows(&self, name: &str, range: Range<u64>) -> Result<RecordBatch> {
        let _guard = self.read_guard()?;
        let (state, arrays, base) = self.table_state(name)?;
        table::read_rows(&arrays, &base, &state, range)
    }

    /// Reads X rows `range` of table `name` (`None` when it has no X).
    pub fn read_x_rows(&self, name: &str, range: Range<u64>) -> Result<Option<XRows>> {
        let _guard = self.read_guard()?;
        let (state, arrays, base) = self.table_state(name)?;
        table::read_x_rows(&arrays, &base, &state, range)
    }

    /// Reads X rows `range` of table `name` in the element type X is stored in
    /// (`None` when it has no X).
    pub fn read_x_values(&self, name: &str, range: Range<u64>) -> Result<Option<XValues>> {
        let _guard = self.read_guard()?;
        let (state, arrays, base) = self.table_state(name)?;
        table::read_x_values(&arrays, &base, &state, range)
    }
}
