//! SpatialData elements: names, kinds, and the raster encoding.

mod name;
pub mod pixel;
pub mod raster;
pub mod transform;

pub use name::{ElementKind, ElementName, MAX_NAME_LEN};
pub use pixel::{DType, Pixel};
pub use raster::{RasterInfo, RasterOptions};
pub use transform::{Transform, Transformations};
