//! Rasters written block by block (dask arrays): the Python face of
//! `spatialzarr::RasterBlockWriter`.

use std::sync::RwLock;

use pyo3::prelude::*;
use spatialzarr::{DType, RasterBlockWriter};

use crate::dataset::{Dataset, raster_kind, raster_options};
use crate::errors::{OrRaise, invalid};
use crate::pixels::{dtype_of, readonly, typed, with_pixel};

/// A staged raster element being filled block by block, from any number of threads.
/// `commit()` builds its pyramid and commits it; dropping it discards it.
#[pyclass(module = "spatialzarr._spatialzarr", frozen)]
pub struct RasterWriter {
    /// `None` once committed or discarded. Blocks are written under the read side.
    writer: RwLock<Option<RasterBlockWriter>>,
    dataset: spatialzarr::Dataset,
}

fn closed() -> PyErr {
    invalid("the raster writer is already committed or discarded")
}

#[pymethods]
impl RasterWriter {
    /// The level-0 chunk shape blocks must follow.
    #[getter]
    fn chunk_shape(&self) -> PyResult<Vec<u64>> {
        let writer = self.writer.read().unwrap_or_else(|p| p.into_inner());
        writer
            .as_ref()
            .map(RasterBlockWriter::chunk_shape)
            .ok_or_else(closed)
    }

    /// The chunk shape of pyramid level `level` (blocks of that level follow it).
    fn level_chunk_shape(&self, level: usize) -> PyResult<Vec<u64>> {
        let writer = self.writer.read().unwrap_or_else(|p| p.into_inner());
        let writer = writer.as_ref().ok_or_else(closed)?;
        writer
            .level_chunk_shape(level)
            .ok_or_else(|| invalid(format!("the element has no level {level}")))
    }

    /// The number of levels written block by block: 1 when the pyramid is built at
    /// commit, every level when the levels were given.
    #[getter]
    fn writable_levels(&self) -> PyResult<usize> {
        let writer = self.writer.read().unwrap_or_else(|p| p.into_inner());
        writer
            .as_ref()
            .map(RasterBlockWriter::writable_levels)
            .ok_or_else(closed)
    }

    /// Writes one block (a numpy array) of pyramid level `level` at `offset`; it must
    /// cover whole chunks.
    #[pyo3(signature = (offset, block, level=0))]
    fn write_block(
        &self,
        py: Python<'_>,
        offset: Vec<u64>,
        block: &Bound<'_, PyAny>,
        level: usize,
    ) -> PyResult<()> {
        with_pixel!(dtype_of(block)?, T => {
            let array = readonly(typed::<T>(block)?)?;
            let view = array.as_array();
            py.detach(|| {
                let writer = self.writer.read().unwrap_or_else(|p| p.into_inner());
                writer.as_ref().map(|w| w.write_level_block(level, &offset, view))
            })
            .ok_or_else(closed)?
            .or_raise()
        })
    }

    /// Builds the pyramid levels and commits the element; returns the generation.
    #[pyo3(signature = (overwrite=false))]
    fn commit(&self, py: Python<'_>, overwrite: bool) -> PyResult<u64> {
        let writer = self
            .writer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(closed)?;
        py.detach(|| {
            let staged = writer.finish()?;
            let mut txn = self.dataset.write()?;
            txn.add_staged(staged, overwrite)?;
            txn.commit()
        })
        .map(|info| info.generation)
        .or_raise()
    }

    /// Throws the staged element away.
    fn discard(&self, py: Python<'_>) {
        let writer = self
            .writer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        py.detach(|| drop(writer));
    }
}

#[pymethods]
impl Dataset {
    /// Stages an empty raster element of `shape` and `dtype`, to be written block by
    /// block (checks the name and every option now). With `level_shapes` (level 0
    /// first, `shape` among them), every pyramid level is given and written block by
    /// block; none is built.
    #[pyo3(signature = (kind, name, shape, dtype, dims=None, channel_names=None, scale_levels=0, chunks=None, transformations=None, overwrite=false, level_shapes=None))]
    #[allow(clippy::too_many_arguments)]
    fn stage_raster_blocks(
        &self,
        py: Python<'_>,
        kind: &str,
        name: &str,
        shape: Vec<u64>,
        dtype: &str,
        dims: Option<Vec<String>>,
        channel_names: Option<Vec<String>>,
        scale_levels: usize,
        chunks: Option<Vec<u64>>,
        transformations: Option<&str>,
        overwrite: bool,
        level_shapes: Option<Vec<Vec<u64>>>,
    ) -> PyResult<RasterWriter> {
        let kind = raster_kind(kind)?;
        let dtype = DType::parse(dtype)
            .ok_or_else(|| invalid(format!("pixel type {dtype} is not supported")))?;
        let options = raster_options(dims, channel_names, scale_levels, chunks, transformations)?;
        let writer = py
            .detach(|| match &level_shapes {
                Some(levels) if levels.first() != Some(&shape) => {
                    Err(spatialzarr::Error::InvalidInput(format!(
                        "level 0 of the levels given has shape {:?}, not the element's {shape:?}",
                        levels.first()
                    )))
                }
                Some(levels) => self
                    .inner
                    .stage_raster_levels(kind, name, levels, dtype, &options, overwrite),
                None => self
                    .inner
                    .stage_raster_blocks(kind, name, &shape, dtype, &options, overwrite),
            })
            .or_raise()?;
        Ok(RasterWriter {
            writer: RwLock::new(Some(writer)),
            dataset: self.inner.clone(),
        })
    }
}
