//! SpatialData elements: names, kinds, and the raster encoding.

mod geojson;
mod name;
pub mod pixel;
pub mod points;
pub mod raster;
pub mod shapes;
pub mod transform;
mod wkb;

pub use name::{ElementKind, ElementName, MAX_NAME_LEN};
pub use pixel::{DType, Pixel};
pub use raster::{RasterInfo, RasterOptions};
pub use transform::{Transform, Transformations};
