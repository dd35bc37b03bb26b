//! The dataset lock as a Python object: held until `release()`.

use std::path::PathBuf;

use pyo3::prelude::*;
use send_wrapper::SendWrapper;
use spatialzarr::lock::{DatasetLock, LockError, LockOptions, ReadGuard, WriteGuard};

use crate::dataset::{Dataset, timeout_of};
use crate::errors::OrRaise;

/// A held read or write guard.
enum Held {
    Read(#[allow(dead_code)] ReadGuard),
    Write(#[allow(dead_code)] WriteGuard),
}

/// The dataset's readers-writer lock, held by the thread that took it until
/// `release()`. Library calls of that thread on the same dataset join it.
#[pyclass(module = "spatialzarr._spatialzarr", unsendable)]
pub struct LockGuard {
    held: Option<Held>,
    shared: bool,
}

/// Takes `lock` in the asked mode, without the GIL while waiting.
fn acquire(
    py: Python<'_>,
    lock: &DatasetLock,
    shared: bool,
    timeout: Option<f64>,
) -> PyResult<LockGuard> {
    let timeout = timeout_of(timeout)?;
    // The guard belongs to this thread: it only crosses into the closure and back,
    // on the same thread (detach does not move threads).
    let held = py
        .detach(|| {
            let held: Result<Held, LockError> = if shared {
                lock.read(timeout).map(Held::Read)
            } else {
                lock.write(timeout).map(Held::Write)
            };
            SendWrapper::new(held)
        })
        .take()
        .map_err(spatialzarr::Error::from)
        .or_raise()?;
    Ok(LockGuard {
        held: Some(held),
        shared,
    })
}

#[pymethods]
impl LockGuard {
    /// Releases the lock (once; later calls do nothing).
    fn release(&mut self) {
        self.held = None;
    }

    /// Whether the lock is still held.
    #[getter]
    fn held(&self) -> bool {
        self.held.is_some()
    }

    /// Whether it is the shared (read) lock.
    #[getter]
    fn shared(&self) -> bool {
        self.shared
    }
}

#[pymethods]
impl Dataset {
    /// Takes the dataset's lock: shared (read) or exclusive (write).
    #[pyo3(signature = (shared=false, timeout=None))]
    fn lock(&self, py: Python<'_>, shared: bool, timeout: Option<f64>) -> PyResult<LockGuard> {
        acquire(py, self.inner.lock(), shared, timeout)
    }
}

/// Takes the lock of the dataset folder `path` (which must exist).
#[pyfunction]
#[pyo3(signature = (path, shared=false, timeout=None, allow_node_local_locks=false))]
pub fn lock_path(
    py: Python<'_>,
    path: PathBuf,
    shared: bool,
    timeout: Option<f64>,
    allow_node_local_locks: bool,
) -> PyResult<LockGuard> {
    let options = LockOptions {
        allow_node_local_locks,
    };
    let lock = py
        .detach(|| DatasetLock::open(&path, options))
        .map_err(spatialzarr::Error::from)
        .or_raise()?;
    acquire(py, &lock, shared, timeout)
}
