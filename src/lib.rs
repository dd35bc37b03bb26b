//! spatialzarr: a concurrency-safe SpatialData dataset store over a Zarr hierarchy.
//!
//! Many processes, on one machine or on cluster nodes sharing a filesystem, add
//! elements to one dataset and append rows to its tables at the same time. They
//! coordinate through a re-entrant readers-writer file lock ([`lock`]); every file is
//! published atomically ([`storage`]); multi-file commits go through a redo journal
//! ([`commit`]); the dataset handle ([`Dataset`]) reads the committed state from disk
//! on every call.
//!
//! ```no_run
//! use spatialzarr::{Dataset, DatasetOptions, RasterOptions};
//! let ds = Dataset::open_or_create("cells.zarr".as_ref(), DatasetOptions::default())?;
//! let labels = ndarray::ArrayD::<u32>::zeros(ndarray::IxDyn(&[512, 512]));
//! ds.add_labels("tile_0_labels", labels.view(), &RasterOptions::default())?;
//! println!("{:?}", ds.list()?.labels);
//! # Ok::<(), spatialzarr::Error>(())
//! ```
//!
//! The on-disk format and the protocols are specified in the `spec/` folder.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod commit;
pub mod dataset;
pub mod element;
mod error;
pub mod lock;
pub mod storage;
pub mod table;
mod util;

pub use dataset::{
    CONSOLIDATED_LIMIT_BYTES, CheckReport, CommitInfo, ConsolidatedMetadata, Container, Dataset,
    DatasetOptions, ElementInfo, ElementList, LabelsList, RasterBlockWriter, RecoveryReport,
    StagedElement, WriteTxn,
};
pub use element::{
    DType, ElementKind, ElementName, Pixel, RasterInfo, RasterOptions, Transform, Transformations,
};
pub use error::{Error, Result};
pub use storage::{Durability, FolderSync};
