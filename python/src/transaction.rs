//! An open write transaction as a Python object. Library calls made by the same
//! thread on the same dataset while it is open join it.

use pyo3::prelude::*;
use send_wrapper::SendWrapper;
use spatialzarr::WriteTxn;

use crate::dataset::Dataset;
use crate::errors::OrRaise;

/// `None` once committed or discarded.
type OpenTxn<'a> = Option<WriteTxn<'a>>;

self_cell::self_cell!(
    /// A dataset handle and the transaction that borrows it.
    struct TxnCell {
        owner: spatialzarr::Dataset,
        #[covariant]
        dependent: OpenTxn,
    }
);

/// A write transaction: holds the write lock; `commit()` makes its changes visible
/// together, `discard()` (or dropping it) throws them away.
#[pyclass(module = "spatialzarr._spatialzarr", unsendable)]
pub struct Transaction {
    cell: TxnCell,
}

impl Transaction {
    /// Runs `f` on the open transaction without the GIL; `None` when it is closed.
    fn finish<R: Send>(
        &mut self,
        py: Python<'_>,
        f: impl FnOnce(WriteTxn<'_>) -> R + Send,
    ) -> Option<R> {
        // The cell never leaves this thread: detach runs the closure right here.
        let cell = SendWrapper::new(&mut self.cell);
        py.detach(move || {
            let cell = cell.take();
            cell.with_dependent_mut(|_, txn| txn.take().map(f))
        })
    }
}

#[pymethods]
impl Transaction {
    /// Commits; returns the generation (0 for a transaction nested in another, whose
    /// changes reach the disk with the outermost one).
    fn commit(&mut self, py: Python<'_>) -> PyResult<u64> {
        match self.finish(py, |txn| txn.commit()) {
            Some(result) => Ok(result.or_raise()?.generation),
            None => Err(crate::errors::invalid("the transaction is already closed")),
        }
    }

    /// Throws the changes away and releases the lock.
    fn discard(&mut self, py: Python<'_>) {
        self.finish(py, |txn| drop(txn));
    }

    /// Whether the transaction is still open.
    #[getter]
    fn open(&self) -> bool {
        self.cell.borrow_dependent().is_some()
    }
}

#[pymethods]
impl Dataset {
    /// Begins a write transaction (waits for the write lock without the GIL).
    fn begin(&self, py: Python<'_>) -> PyResult<Transaction> {
        let dataset = self.inner.clone();
        let cell = py
            .detach(move || SendWrapper::new(TxnCell::try_new(dataset, |ds| ds.write().map(Some))))
            .take()
            .or_raise()?;
        Ok(Transaction { cell })
    }
}
