//! The core's errors as the exceptions of `spatialzarr._errors`.

use pyo3::prelude::*;
use spatialzarr::Error;
use spatialzarr::lock::LockError;

/// The name of the exception class of `spatialzarr._errors` that stands for `error`.
fn class_of(error: &Error) -> &'static str {
    #[allow(unreachable_patterns)]
    match error {
        Error::Lock(LockError::Timeout { .. }) => "LockTimeoutError",
        Error::Lock(LockError::Upgrade(_) | LockError::InheritedShared(_)) => "LockUpgradeError",
        Error::Lock(_) => "LockError",
        Error::Io { .. } => "StorageError",
        Error::InvalidName { .. } | Error::InvalidInput(_) => "InvalidInputError",
        Error::WrongElementType { .. } => "WrongElementTypeError",
        Error::NameTaken { .. } => "ElementExistsError",
        Error::KeyReused { .. } => "KeyReusedError",
        Error::NoSuchElement { .. } => "ElementNotFoundError",
        Error::NotADataset { .. } => "NotADatasetError",
        Error::AlreadyExists(_) => "DatasetExistsError",
        Error::UnsupportedFormat { .. } => "UnsupportedFormatError",
        Error::Corrupt { .. } => "CorruptDatasetError",
        Error::CommitPending(_) => "CommitPendingError",
        Error::Zarr { .. } => "SpatialZarrError",
        // A kind of error this module does not know yet: the base class.
        _ => "SpatialZarrError",
    }
}

/// Builds an instance of the exception class `class` of `spatialzarr._errors`.
fn raise(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let built = py
            .import("spatialzarr._errors")
            .and_then(|module| module.getattr(class))
            .and_then(|class| class.call1((message,)));
        match built {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        }
    })
}

/// The Python exception for a core error, carrying its message.
pub fn to_py(error: Error) -> PyErr {
    raise(class_of(&error), error.to_string())
}

/// An `InvalidInputError` for a Python value the core cannot take.
pub fn invalid(message: impl Into<String>) -> PyErr {
    raise(
        "InvalidInputError",
        format!("invalid input: {}", message.into()),
    )
}

/// Converts a core result, raising its error as a Python exception.
pub trait OrRaise<T> {
    /// The value, or the matching Python exception.
    fn or_raise(self) -> PyResult<T>;
}

impl<T> OrRaise<T> for spatialzarr::Result<T> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
