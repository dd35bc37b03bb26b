//! spatialzarr: a concurrency-safe SpatialData dataset store over a Zarr hierarchy.
//!
//! Many processes, on one machine or on cluster nodes sharing a filesystem, add
//! elements to one dataset and append rows to its tables at the same time. They
//! coordinate through a re-entrant readers-writer file lock ([`lock`]).
//!
//! The on-disk format and the protocols are specified in the `spec/` folder.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod lock;
