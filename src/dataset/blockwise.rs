//! Rasters written block by block: for arrays that do not fit in memory (a dask
//! array, a slide read tile by tile). The element is staged like any other; its
//! level-0 chunks are written region by region, from any number of threads at once;
//! [`RasterBlockWriter::finish`] then builds the pyramid levels from what was written,
//! one output chunk at a time, and hands back the staged element for a commit. A
//! pyramid that already exists (a spatialdata multiscale element) is written as given
//! instead: [`Dataset::stage_raster_levels`] stages every level, each filled block by
//! block, and nothing is rebuilt.

use std::sync::{Arc, Mutex};

use ndarray::ArrayViewD;
use zarrs::array::{Array, ArraySubset};

use super::{Dataset, StagedElement};
use crate::element::raster::{RasterPlan, downsample, plan_raster, plan_raster_levels, zarr_error};
use crate::element::{DType, ElementKind, ElementName, Pixel, RasterOptions};
use crate::error::{Error, Result};
use crate::storage::{AtomicStore, Publisher};

/// A raster element being written block by block into its staging folder.
#[derive(Debug)]
pub struct RasterBlockWriter {
    staged: StagedElement,
    publisher: Arc<Publisher>,
    store: Arc<AtomicStore>,
    /// The arrays blocks are written into: level 0 only when the pyramid is built by
    /// [`RasterBlockWriter::finish`], every level when the levels were given.
    arrays: Vec<Array<AtomicStore>>,
    plan: RasterPlan,
    dtype: DType,
    options: RasterOptions,
    /// Which chunks of each of `arrays` were written, in C order over its chunk grid.
    written: Mutex<Vec<Vec<bool>>>,
}

impl Dataset {
    /// Stages an empty image or labels element of `shape` pixels of `dtype`, WITHOUT
    /// the dataset lock, to be filled by [`RasterBlockWriter::write_block`]. Every
    /// check of [`Dataset::stage_raster`] is made now, before anything is written, and
    /// the name is checked against the committed elements (`overwrite`: one of the same
    /// kind may be replaced); the commit checks it again.
    pub fn stage_raster_blocks(
        &self,
        kind: ElementKind,
        name: &str,
        shape: &[u64],
        dtype: DType,
        options: &RasterOptions,
        overwrite: bool,
    ) -> Result<RasterBlockWriter> {
        let plan = plan_raster(kind, dtype, shape, options)?;
        self.stage_planned(kind, name, plan, 1, dtype, options, overwrite)
    }

    /// Stages an empty image or labels element whose pyramid levels are given, not
    /// built: level `k` of shape `level_shapes[k]` (over the axes of the data as given;
    /// every axis but `y` and `x` as level 0's, `y` and `x` at most those of the level
    /// before). Each level is filled by [`RasterBlockWriter::write_level_block`];
    /// [`RasterBlockWriter::finish`] then writes the metadata and rebuilds nothing.
    /// The same checks as [`Dataset::stage_raster_blocks`] are made now.
    pub fn stage_raster_levels(
        &self,
        kind: ElementKind,
        name: &str,
        level_shapes: &[Vec<u64>],
        dtype: DType,
        options: &RasterOptions,
        overwrite: bool,
    ) -> Result<RasterBlockWriter> {
        let plan = plan_raster_levels(kind, dtype, level_shapes, options)?;
        let count = plan.levels.len();
        self.stage_planned(kind, name, plan, count, dtype, options, overwrite)
    }

    /// Adds (or with `overwrite` replaces) an image or labels element whose pyramid
    /// levels are given (`levels[0]` full resolution), writing each level's pixels as
    /// they are; see [`Dataset::stage_raster_levels`] for the shapes accepted.
    pub fn add_raster_levels<T: Pixel>(
        &self,
        kind: ElementKind,
        name: &str,
        levels: &[ArrayViewD<'_, T>],
        options: &RasterOptions,
        overwrite: bool,
    ) -> Result<super::CommitInfo> {
        let shapes: Vec<Vec<u64>> = levels
            .iter()
            .map(|l| l.shape().iter().map(|&n| n as u64).collect())
            .collect();
        let writer = self.stage_raster_levels(kind, name, &shapes, T::DTYPE, options, overwrite)?;
        for (level, data) in levels.iter().enumerate() {
            let origin = vec![0; data.ndim()];
            writer.write_level_block(level, &origin, data.view())?;
        }
        let staged = writer.finish()?;
        let mut txn = self.write()?;
        txn.add_staged(staged, overwrite)?;
        txn.commit()
    }

    /// Stages the element `plan` describes, with the arrays of its first `arrays`
    /// levels created empty.
    #[allow(clippy::too_many_arguments)]
    fn stage_planned(
        &self,
        kind: ElementKind,
        name: &str,
        plan: RasterPlan,
        arrays: usize,
        dtype: DType,
        options: &RasterOptions,
        overwrite: bool,
    ) -> Result<RasterBlockWriter> {
        let name = self.raster_name(kind, name)?;
        self.precheck_add(kind, name.as_str(), overwrite)?;
        // Nobody reads the staging folder before its sync: files go in place.
        let publisher = Arc::new(
            Publisher::in_place(self.durability()).trusting_order(self.trusts_folder_order()),
        );
        let staged = StagedElement::create(self.layout(), &publisher, kind, name)?;
        let store = Arc::new(AtomicStore::new(&staged.element_dir(), publisher.clone())?);
        let mut created = Vec::with_capacity(arrays);
        let mut written = Vec::with_capacity(arrays);
        for level in 0..arrays {
            created.push(plan.create_level(&store, level, dtype, options.zstd_level)?);
            let chunk_count: u64 = plan.levels[level]
                .iter()
                .zip(&plan.level_chunks(level))
                .map(|(n, c)| n.div_ceil(*c))
                .product();
            written.push(vec![false; chunk_count as usize]);
        }
        Ok(RasterBlockWriter {
            staged,
            publisher,
            store,
            arrays: created,
            plan,
            dtype,
            options: options.clone(),
            written: Mutex::new(written),
        })
    }
}

impl Dataset {
    /// Checks that the dataset is writable, `kind` a raster kind and `name` valid.
    pub(super) fn raster_name(&self, kind: ElementKind, name: &str) -> Result<ElementName> {
        self.ensure_writable()?;
        if !matches!(kind, ElementKind::Images | ElementKind::Labels) {
            return Err(Error::InvalidInput(format!(
                "{} elements are not rasters",
                kind.group()
            )));
        }
        ElementName::new(name)
    }
}

impl RasterBlockWriter {
    /// The level-0 chunk shape, over the axes of the data as given (without the
    /// channel axis an image given as `y,x` gains). Blocks must follow this grid.
    pub fn chunk_shape(&self) -> Vec<u64> {
        self.level_chunk_shape(0).expect("every raster has level 0")
    }

    /// The chunk shape of pyramid level `level` (level 0's, clipped to the level),
    /// over the axes of the data as given; `None` past the last level.
    pub fn level_chunk_shape(&self, level: usize) -> Option<Vec<u64>> {
        let skip = usize::from(self.plan.channel_added);
        (level < self.plan.levels.len()).then(|| self.plan.level_chunks(level)[skip..].to_vec())
    }

    /// The number of levels blocks are written into: 1 when the pyramid is built by
    /// [`RasterBlockWriter::finish`], every level when the levels were given.
    pub fn writable_levels(&self) -> usize {
        self.arrays.len()
    }

    /// Writes one block of level 0 at `offset` (over the axes of the data as given).
    /// The block must cover whole chunks: its offset a multiple of the chunk shape, its
    /// extent a multiple of it too, or reaching the end of the array. Safe to call
    /// from many threads at once for distinct blocks.
    pub fn write_block<T: Pixel>(&self, offset: &[u64], data: ArrayViewD<'_, T>) -> Result<()> {
        self.write_level_block(0, offset, data)
    }

    /// Writes one block of pyramid level `level` at `offset`, as
    /// [`RasterBlockWriter::write_block`] does for level 0. Only the levels of an
    /// element staged with [`Dataset::stage_raster_levels`] are written this way.
    pub fn write_level_block<T: Pixel>(
        &self,
        level: usize,
        offset: &[u64],
        data: ArrayViewD<'_, T>,
    ) -> Result<()> {
        if T::DTYPE != self.dtype {
            return Err(Error::InvalidInput(format!(
                "a block of {} pixels for an element of {} pixels",
                T::DTYPE,
                self.dtype
            )));
        }
        let Some(array) = self.arrays.get(level) else {
            return Err(Error::InvalidInput(format!(
                "level {level} of {} {} is not written block by block ({} such levels)",
                self.staged.kind,
                self.staged.name,
                self.arrays.len()
            )));
        };
        let mut offset = offset.to_vec();
        let mut data = data;
        if self.plan.channel_added {
            offset.insert(0, 0);
            data = data.insert_axis(ndarray::Axis(0));
        }
        let shape: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
        let (plan, ndim) = (&self.plan, self.plan.shape.len());
        let (level_shape, chunks) = (&plan.levels[level], plan.level_chunks(level));
        if offset.len() != ndim || shape.len() != ndim {
            return Err(Error::InvalidInput(format!(
                "a block of {} dimensions at an offset of {} for an array of {} dimensions",
                shape.len() - usize::from(plan.channel_added),
                offset.len() - usize::from(plan.channel_added),
                ndim - usize::from(plan.channel_added)
            )));
        }
        for axis in 0..ndim {
            let (start, len, chunk, total) =
                (offset[axis], shape[axis], chunks[axis], level_shape[axis]);
            let end = start.checked_add(len).filter(|&e| e <= total);
            let aligned = start % chunk == 0 && (len % chunk == 0 || end == Some(total));
            if end.is_none() || !aligned || len == 0 {
                return Err(Error::InvalidInput(format!(
                    "block {shape:?} at {offset:?} does not cover whole chunks of {chunks:?} inside level {level} of shape {level_shape:?} (axis {}: {start}..{})",
                    plan.dims[axis],
                    start.saturating_add(len)
                )));
            }
        }
        let subset = subset_of(&offset, &shape);
        // Borrowed as it is when in C order (a numpy block usually is): no copy.
        array
            .store_array_subset(&subset, &data)
            .map_err(|e| zarr_error(&format!("/s{level}"))(&e))?;
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        for_each_chunk(level_shape, &chunks, &offset, &shape, |index| {
            written[level][index] = true;
        });
        Ok(())
    }

    /// Builds the pyramid levels from level 0, one output chunk at a time, writes the
    /// element's metadata and makes it durable: the staged element is ready for
    /// [`WriteTxn::add_staged`](super::WriteTxn::add_staged). Refuses an element with
    /// level-0 chunks never written.
    pub fn finish(self) -> Result<StagedElement> {
        let missing: usize = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|level| level.iter().filter(|w| !**w).count())
            .sum();
        if missing > 0 {
            return Err(Error::InvalidInput(format!(
                "{missing} chunks of {} {} were never written",
                self.staged.kind, self.staged.name
            )));
        }
        if self.arrays.len() < self.plan.levels.len() {
            match self.dtype {
                DType::U8 => self.build_levels::<u8>(),
                DType::U16 => self.build_levels::<u16>(),
                DType::U32 => self.build_levels::<u32>(),
                DType::U64 => self.build_levels::<u64>(),
                DType::I8 => self.build_levels::<i8>(),
                DType::I16 => self.build_levels::<i16>(),
                DType::I32 => self.build_levels::<i32>(),
                DType::I64 => self.build_levels::<i64>(),
                DType::F32 => self.build_levels::<f32>(),
                DType::F64 => self.build_levels::<f64>(),
            }?;
        }
        self.plan.write_group(
            &self.staged.element_dir(),
            &self.publisher,
            self.staged.kind,
            &self.staged.name,
            &self.options,
        )?;
        self.publisher.sync()?;
        Ok(self.staged)
    }

    fn build_levels<T: Pixel>(&self) -> Result<()> {
        let nearest = self.staged.kind == ElementKind::Labels;
        let yx = self.plan.yx;
        for level in 1..self.plan.levels.len() {
            self.store.flush()?;
            let source = Array::open(self.store.clone(), &format!("/s{}", level - 1))
                .map_err(|e| zarr_error(&format!("/s{}", level - 1))(&e))?;
            let target =
                self.plan
                    .create_level(&self.store, level, self.dtype, self.options.zstd_level)?;
            let level_path = format!("/s{level}");
            let err = zarr_error(&level_path);
            let shape = target.shape().to_vec();
            let chunks = self.plan.level_chunks(level);
            let mut result = Ok(());
            for_each_chunk_region(&shape, &chunks, |start, extent| {
                if result.is_err() {
                    return;
                }
                result = (|| {
                    let mut from = start.to_vec();
                    let mut size = extent.to_vec();
                    for a in yx {
                        from[a] *= 2;
                        size[a] *= 2;
                    }
                    let read = subset_of(&from, &size);
                    let block: ndarray::ArrayD<T> =
                        source.retrieve_array_subset(&read).map_err(|e| err(&e))?;
                    let smaller = downsample(block.view(), yx, nearest);
                    let write = subset_of(start, extent);
                    target
                        .store_array_subset(&write, smaller)
                        .map_err(|e| err(&e))
                })();
            });
            result?;
        }
        self.publisher.flush()
    }

    /// The element's kind.
    pub fn kind(&self) -> ElementKind {
        self.staged.kind
    }
}

/// The region of `extent` at `start`.
fn subset_of(start: &[u64], extent: &[u64]) -> ArraySubset {
    let ranges: Vec<std::ops::Range<u64>> =
        start.iter().zip(extent).map(|(s, e)| *s..s + e).collect();
    ArraySubset::new_with_ranges(&ranges)
}

/// Calls `f` with the C-order index of every chunk of the grid (`shape`, `chunks`)
/// that the block at `offset` of `extent` covers.
fn for_each_chunk(
    shape: &[u64],
    chunks: &[u64],
    offset: &[u64],
    extent: &[u64],
    mut f: impl FnMut(usize),
) {
    let grid: Vec<u64> = shape
        .iter()
        .zip(chunks)
        .map(|(n, c)| n.div_ceil(*c))
        .collect();
    let first: Vec<u64> = offset.iter().zip(chunks).map(|(o, c)| o / c).collect();
    let last: Vec<u64> = offset
        .iter()
        .zip(extent)
        .zip(chunks)
        .map(|((o, e), c)| (o + e).div_ceil(*c))
        .collect();
    let mut at = first.clone();
    loop {
        let index = at.iter().zip(&grid).fold(0u64, |acc, (i, g)| acc * g + i);
        f(index as usize);
        let mut axis = at.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            at[axis] += 1;
            if at[axis] < last[axis] {
                break;
            }
            at[axis] = first[axis];
        }
    }
}

/// Calls `f(start, extent)` for every chunk of the grid (`shape`, `chunks`), in C
/// order, edge chunks clipped to the array.
fn for_each_chunk_region(shape: &[u64], chunks: &[u64], mut f: impl FnMut(&[u64], &[u64])) {
    let zero = vec![0; shape.len()];
    let grid: Vec<u64> = shape
        .iter()
        .zip(chunks)
        .map(|(n, c)| n.div_ceil(*c))
        .collect();
    let count: u64 = grid.iter().product();
    for index in 0..count {
        let mut rest = index;
        let mut start = zero.clone();
        for axis in (0..shape.len()).rev() {
            start[axis] = (rest % grid[axis]) * chunks[axis];
            rest /= grid[axis];
        }
        let extent: Vec<u64> = start
            .iter()
            .zip(shape)
            .zip(chunks)
            .map(|((s, n), c)| (*c).min(n - s))
            .collect();
        f(&start, &extent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DatasetOptions;
    use ndarray::{ArrayD, IxDyn};

    /// An element written in blocks, from several threads, reads back like the same
    /// element written whole: every level, pixel for pixel.
    #[test]
    fn blocks_give_the_same_element_as_a_whole_write() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::create(&dir.path().join("d.zarr"), DatasetOptions::default()).unwrap();
        let data = ArrayD::from_shape_fn(IxDyn(&[70, 45]), |i| (i[0] * 100 + i[1]) as u16);
        let options = RasterOptions {
            scale_levels: 2,
            chunk_shape: Some(vec![16, 16]),
            ..RasterOptions::default()
        };
        for kind in [ElementKind::Labels, ElementKind::Images] {
            let whole = format!("whole_{kind}");
            let blocks = format!("blocks_{kind}");
            ds.add_raster(kind, &whole, data.view(), &options, false)
                .unwrap();
            let writer = ds
                .stage_raster_blocks(kind, &blocks, &[70, 45], DType::U16, &options, false)
                .unwrap();
            assert_eq!(writer.chunk_shape(), vec![16, 16]);
            std::thread::scope(|scope| {
                for y in (0..70).step_by(32) {
                    let (writer, data) = (&writer, &data);
                    scope.spawn(move || {
                        let end = (y + 32).min(70);
                        let block = data.slice_axis(ndarray::Axis(0), ndarray::Slice::from(y..end));
                        writer.write_block(&[y as u64, 0], block).unwrap();
                    });
                }
            });
            let staged = writer.finish().unwrap();
            let mut txn = ds.write().unwrap();
            txn.add_staged(staged, false).unwrap();
            txn.commit().unwrap();
            for level in 0..=2 {
                assert_eq!(
                    ds.read_raster::<u16>(&whole, level).unwrap(),
                    ds.read_raster::<u16>(&blocks, level).unwrap(),
                    "{kind} level {level}"
                );
            }
        }
    }

    /// Levels given are written pixel for pixel as given (none rebuilt from level 0),
    /// in any shapes that shrink along y and x only; each level may come in blocks.
    #[test]
    fn given_levels_are_written_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::create(&dir.path().join("d.zarr"), DatasetOptions::default()).unwrap();
        let level = |shape: &[usize], seed: u32| {
            ArrayD::from_shape_fn(IxDyn(shape), |i| {
                (i[0] as u32 * 7919 + i[1] as u32 * 31 + i[2] as u32 + seed * 1000) % 5000
            })
        };
        let levels = [
            level(&[2, 70, 45], 1),
            level(&[2, 23, 15], 2),
            level(&[2, 7, 5], 3),
        ];
        let options = RasterOptions {
            chunk_shape: Some(vec![1, 16, 16]),
            ..RasterOptions::default()
        };
        let views: Vec<_> = levels.iter().map(|l| l.view()).collect();
        ds.add_raster_levels(ElementKind::Images, "given", &views, &options, false)
            .unwrap();
        for (k, want) in levels.iter().enumerate() {
            assert_eq!(
                &ds.read_raster::<u32>("given", k).unwrap(),
                want,
                "level {k}"
            );
        }
        let Ok(crate::dataset::ElementInfo::Raster(info)) = ds.info("given") else {
            panic!("a raster")
        };
        assert_eq!(info.levels, 3);

        // Block by block: level 1 in two blocks along y.
        let shapes: Vec<Vec<u64>> = vec![vec![2, 70, 45], vec![2, 23, 15], vec![2, 7, 5]];
        let writer = ds
            .stage_raster_levels(
                ElementKind::Images,
                "blocks",
                &shapes,
                DType::U32,
                &options,
                false,
            )
            .unwrap();
        assert_eq!(writer.writable_levels(), 3);
        assert_eq!(writer.level_chunk_shape(2), Some(vec![1, 7, 5]));
        writer
            .write_level_block(0, &[0, 0, 0], levels[0].view())
            .unwrap();
        writer
            .write_level_block(2, &[0, 0, 0], levels[2].view())
            .unwrap();
        let top = levels[1].slice_axis(ndarray::Axis(1), ndarray::Slice::from(0..16));
        writer.write_level_block(1, &[0, 0, 0], top).unwrap();
        let unfinished = ds
            .stage_raster_levels(
                ElementKind::Images,
                "never",
                &shapes,
                DType::U32,
                &options,
                false,
            )
            .unwrap();
        unfinished
            .write_level_block(0, &[0, 0, 0], levels[0].view())
            .unwrap();
        let missing = unfinished.finish().unwrap_err();
        assert!(missing.to_string().contains("chunks"), "{missing}");
        let bottom = levels[1].slice_axis(ndarray::Axis(1), ndarray::Slice::from(16..23));
        writer.write_level_block(1, &[0, 16, 0], bottom).unwrap();
        let past = writer
            .write_level_block(3, &[0, 0, 0], levels[2].view())
            .unwrap_err();
        assert!(past.to_string().contains("level 3"), "{past}");
        let staged = writer.finish().unwrap();
        let mut txn = ds.write().unwrap();
        txn.add_staged(staged, false).unwrap();
        txn.commit().unwrap();
        for (k, want) in levels.iter().enumerate() {
            assert_eq!(
                &ds.read_raster::<u32>("blocks", k).unwrap(),
                want,
                "level {k}"
            );
        }
        assert!(ds.check(true).unwrap().problems.is_empty());
    }

    /// Levels that grow, change another axis, or disagree with the scale levels asked
    /// for are refused before anything is staged.
    #[test]
    fn given_levels_that_do_not_fit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::create(&dir.path().join("d.zarr"), DatasetOptions::default()).unwrap();
        let options = RasterOptions::default();
        let cases: [(Vec<Vec<u64>>, &RasterOptions, &str); 4] = [
            (
                vec![vec![8, 8], vec![4, 9]],
                &options,
                "level 1 has shape [4, 9]",
            ),
            (
                vec![vec![8, 8], vec![4, 4], vec![5, 2]],
                &options,
                "level 2",
            ),
            (vec![vec![8, 8], vec![4]], &options, "level 1"),
            (vec![], &options, "at least one level"),
        ];
        for (shapes, options, expected) in cases {
            let e = ds
                .stage_raster_levels(ElementKind::Labels, "l", &shapes, DType::U8, options, false)
                .unwrap_err();
            assert!(
                e.to_string().contains(expected),
                "{e} should say {expected}"
            );
        }
        let asked = RasterOptions {
            scale_levels: 2,
            ..RasterOptions::default()
        };
        let e = ds
            .stage_raster_levels(
                ElementKind::Labels,
                "l",
                &[vec![8, 8], vec![4, 4]],
                DType::U8,
                &asked,
                false,
            )
            .unwrap_err();
        assert!(e.to_string().contains("2 scale levels"), "{e}");
        let e = ds
            .stage_raster_levels(
                ElementKind::Images,
                "i",
                &[vec![3, 8, 8], vec![2, 4, 4]],
                DType::U8,
                &options,
                false,
            )
            .unwrap_err();
        assert!(e.to_string().contains("level 1"), "{e}");
        assert!(ds.list().unwrap().labels.is_empty());
        assert!(ds.list().unwrap().images.is_empty());
    }

    /// Blocks off the chunk grid, of another pixel type, or missing are refused.
    #[test]
    fn misaligned_mistyped_and_missing_blocks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::create(&dir.path().join("d.zarr"), DatasetOptions::default()).unwrap();
        let options = RasterOptions {
            chunk_shape: Some(vec![8, 8]),
            ..RasterOptions::default()
        };
        let writer = ds
            .stage_raster_blocks(
                ElementKind::Labels,
                "l",
                &[20, 20],
                DType::U8,
                &options,
                false,
            )
            .unwrap();
        let block = ArrayD::<u8>::zeros(IxDyn(&[8, 8]));
        let off_grid = writer.write_block(&[4, 0], block.view()).unwrap_err();
        assert!(off_grid.to_string().contains("whole chunks"), "{off_grid}");
        let wrong_type = ArrayD::<u16>::zeros(IxDyn(&[8, 8]));
        assert!(writer.write_block(&[0, 0], wrong_type.view()).is_err());
        writer.write_block(&[0, 0], block.view()).unwrap();
        let missing = writer.finish().unwrap_err();
        assert!(missing.to_string().contains("8 chunks"), "{missing}");
        assert!(ds.list().unwrap().labels.is_empty());
    }
}
