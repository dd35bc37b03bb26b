//! Images and labels: multiscale rasters in the NGFF 0.5-dev-spatialdata layout.

use std::path::Path;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, IxDyn, Slice};
use serde_json::{Value, json};
use zarrs::array::codec::ZstdCodec;
use zarrs::array::{Array, ArrayBuilder, FillValue};

use super::pixel::{DType, Pixel};
use super::transform::{Transformations, axis_json};
use super::{ElementKind, ElementName};
use crate::error::{Error, Result};
use crate::storage::{AtomicStore, Publisher};

/// The largest element metadata document accepted.
pub const MAX_METADATA_BYTES: u64 = 16 << 20;

/// How a raster element is written. `Default` gives spatialdata's defaults.
#[derive(Debug, Clone)]
pub struct RasterOptions {
    /// Dimension names, e.g. `["c","y","x"]`. Default: from the number of dimensions
    /// (images `y,x` / `c,y,x` / `c,z,y,x`; labels `y,x` / `z,y,x`). An image given as
    /// `y,x` or `z,y,x` is stored with a leading channel axis of length 1.
    pub dims: Option<Vec<String>>,
    /// Channel names of an image (one per channel).
    pub channel_names: Option<Vec<String>>,
    /// Extra pyramid levels `s1, s2, ...`, each halving `y` and `x` (images: mean of
    /// each 2x2 block; labels: the top-left pixel, so no new label values appear).
    pub scale_levels: usize,
    /// Chunk shape of level 0 (default: up to 1024 along `y`/`x`, 1 along `z`, all
    /// channels up to 16). For an image given without a channel axis it may leave
    /// that axis out too.
    pub chunk_shape: Option<Vec<u64>>,
    /// zstd compression level (default 3).
    pub zstd_level: i32,
    /// Transformations to coordinate systems (default: identity to `global`).
    pub transformations: Transformations,
}

impl Default for RasterOptions {
    fn default() -> Self {
        Self {
            dims: None,
            channel_names: None,
            scale_levels: 0,
            chunk_shape: None,
            zstd_level: 3,
            transformations: Transformations::default(),
        }
    }
}

/// What `info` reports about a raster element.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterInfo {
    /// Images or labels.
    pub kind: ElementKind,
    /// Shape of level 0.
    pub shape: Vec<u64>,
    /// Pixel type.
    pub dtype: DType,
    /// Dimension names.
    pub dims: Vec<String>,
    /// Number of pyramid levels, including level 0.
    pub levels: usize,
    /// Paths of the levels inside the element (`s0`, `s1`, ...).
    pub level_paths: Vec<String>,
    /// Channel names of an image, when recorded.
    pub channel_names: Option<Vec<String>>,
    /// Transformations to coordinate systems.
    pub transformations: Transformations,
}

fn input_error(message: String) -> Error {
    Error::InvalidInput(message)
}

/// Works out and checks the dimension names for `ndim` dimensions.
fn resolve_dims(kind: ElementKind, ndim: usize, dims: Option<&[String]>) -> Result<Vec<String>> {
    let default: &[&str] = match (kind, ndim) {
        (ElementKind::Images, 2) | (ElementKind::Labels, 2) => &["y", "x"],
        (ElementKind::Images, 3) => &["c", "y", "x"],
        (ElementKind::Images, 4) => &["c", "z", "y", "x"],
        (ElementKind::Labels, 3) => &["z", "y", "x"],
        _ => &[],
    };
    let dims: Vec<String> = match dims {
        Some(d) => d.to_vec(),
        None if !default.is_empty() => default.iter().map(|s| s.to_string()).collect(),
        None => {
            return Err(input_error(format!(
                "{} need 2 or 3 dimensions{}, got {ndim}",
                kind.group(),
                if kind == ElementKind::Images {
                    " (or 4 with z)"
                } else {
                    ""
                }
            )));
        }
    };
    if dims.len() != ndim {
        return Err(input_error(format!(
            "dims {dims:?} name {} dimensions but the array has {ndim}",
            dims.len()
        )));
    }
    let allowed: &[&[&str]] = match kind {
        ElementKind::Images => &[
            &["y", "x"],
            &["c", "y", "x"],
            &["z", "y", "x"],
            &["c", "z", "y", "x"],
        ],
        _ => &[&["y", "x"], &["z", "y", "x"]],
    };
    if !allowed.iter().any(|a| a.iter().eq(dims.iter())) {
        return Err(input_error(format!(
            "dims {dims:?} are not allowed for {}: use one of {allowed:?}",
            kind.group()
        )));
    }
    Ok(dims)
}

fn default_chunks(dims: &[String], shape: &[u64]) -> Vec<u64> {
    dims.iter()
        .zip(shape)
        .map(|(d, &len)| {
            match d.as_str() {
                "c" => len.min(16),
                "z" => 1,
                _ => len.min(1024),
            }
            .max(1)
        })
        .collect()
}

/// Halves `y` and `x` of `data` (axes `yx`): labels keep the top-left pixel of each
/// 2x2 block, images take its mean.
pub(crate) fn downsample<T: Pixel>(
    data: ArrayViewD<'_, T>,
    yx: [usize; 2],
    nearest: bool,
) -> ArrayD<T> {
    if nearest {
        return data
            .slice_each_axis(|ax| {
                if yx.contains(&ax.axis.index()) {
                    Slice::new(0, Some((ax.len / 2 * 2) as isize), 2)
                } else {
                    Slice::from(..)
                }
            })
            .to_owned();
    }
    let mut shape = data.shape().to_vec();
    for a in yx {
        shape[a] /= 2;
    }
    ArrayD::from_shape_fn(IxDyn(&shape), |index| {
        let mut at: Vec<usize> = (0..data.ndim()).map(|i| index[i]).collect();
        let mut block = [T::default(); 4];
        for (i, value) in block.iter_mut().enumerate() {
            at[yx[0]] = index[yx[0]] * 2 + i / 2;
            at[yx[1]] = index[yx[1]] * 2 + i % 2;
            *value = data[IxDyn(&at)];
        }
        T::mean4(block)
    })
}

pub(crate) fn zarr_error(path: &str) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Zarr {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The checked layout of a raster element about to be written.
#[derive(Debug, Clone)]
pub(crate) struct RasterPlan {
    /// Dimension names as stored (an image given without `c` gains it first).
    pub dims: Vec<String>,
    /// Level-0 shape as stored.
    pub shape: Vec<u64>,
    /// Level-0 chunk shape as stored.
    pub chunks: Vec<u64>,
    /// Whether a channel axis of length 1 was put in front of the data's axes.
    pub channel_added: bool,
    /// The positions of `y` and `x`.
    pub yx: [usize; 2],
    /// The shape of every pyramid level as stored, level 0 first.
    pub levels: Vec<Vec<u64>>,
}

/// Checks everything about a raster element of `data_shape` pixels of `dtype` before
/// anything is written, and works out its stored dimensions, shape and chunks.
pub(crate) fn plan_raster(
    kind: ElementKind,
    dtype: DType,
    data_shape: &[u64],
    options: &RasterOptions,
) -> Result<RasterPlan> {
    if kind == ElementKind::Labels && !dtype.is_integer() {
        return Err(input_error(format!(
            "labels must have an integer type, got {dtype}"
        )));
    }
    let mut dims = resolve_dims(kind, data_shape.len(), options.dims.as_deref())?;
    let mut shape = data_shape.to_vec();
    let mut chunk_shape = options.chunk_shape.clone();
    let channel_added = kind == ElementKind::Images && dims[0] != "c";
    if channel_added {
        shape.insert(0, 1);
        dims.insert(0, "c".into());
        // A chunk shape given for the array as passed gains the channel axis too.
        if let Some(c) = chunk_shape.as_mut().filter(|c| c.len() + 1 == dims.len()) {
            c.insert(0, 1);
        }
    }
    if shape.contains(&0) {
        return Err(input_error(format!(
            "the array has an empty dimension: shape {shape:?}"
        )));
    }
    options
        .transformations
        .validate(&dims)
        .map_err(input_error)?;
    let channels = if dims[0] == "c" { Some(shape[0]) } else { None };
    if let Some(names) = &options.channel_names {
        if kind != ElementKind::Images {
            return Err(input_error("only images have channel names".into()));
        }
        if Some(names.len() as u64) != channels {
            return Err(input_error(format!(
                "{} channel names for {} channels",
                names.len(),
                channels.unwrap_or(0)
            )));
        }
    }
    let chunks = match &chunk_shape {
        Some(c) if c.len() != shape.len() || c.contains(&0) => {
            return Err(input_error(format!(
                "chunk shape {c:?} must have {} positive entries",
                shape.len()
            )));
        }
        Some(c) => c.clone(),
        None => default_chunks(&dims, &shape),
    };
    let yx = [dims.len() - 2, dims.len() - 1];
    let smallest = shape[yx[0]].min(shape[yx[1]]);
    if options.scale_levels > 0 && (smallest >> options.scale_levels) == 0 {
        return Err(input_error(format!(
            "cannot make {} pyramid levels from y,x size {}x{}: each level halves them",
            options.scale_levels, shape[yx[0]], shape[yx[1]]
        )));
    }
    let levels = (0..=options.scale_levels)
        .map(|level| {
            let mut level_shape = shape.clone();
            for a in yx {
                level_shape[a] >>= level;
            }
            level_shape
        })
        .collect();
    Ok(RasterPlan {
        dims,
        shape,
        chunks,
        channel_added,
        yx,
        levels,
    })
}

/// Plans a raster element whose pyramid levels are given rather than built: level
/// `k` has the shape `level_shapes[k]` (over the axes of the data as given). Every
/// level has level 0's dimensions, the same size along every axis but `y` and `x`,
/// and along `y` and `x` at most the size of the level before it. `options.scale_levels`
/// must be 0 or the number of levels after level 0.
pub(crate) fn plan_raster_levels(
    kind: ElementKind,
    dtype: DType,
    level_shapes: &[Vec<u64>],
    options: &RasterOptions,
) -> Result<RasterPlan> {
    let Some(first) = level_shapes.first() else {
        return Err(input_error("a raster needs at least one level".into()));
    };
    let extra = level_shapes.len() - 1;
    if options.scale_levels != 0 && options.scale_levels != extra {
        return Err(input_error(format!(
            "{} levels were given but {} scale levels were asked for",
            level_shapes.len(),
            options.scale_levels
        )));
    }
    let base = RasterOptions {
        scale_levels: 0,
        ..options.clone()
    };
    let mut plan = plan_raster(kind, dtype, first, &base)?;
    let mut levels = vec![plan.shape.clone()];
    for (k, given) in level_shapes.iter().enumerate().skip(1) {
        let mut level_shape = given.clone();
        if plan.channel_added {
            level_shape.insert(0, 1);
        }
        let previous = &levels[k - 1];
        let fits = level_shape.len() == plan.shape.len()
            && (0..level_shape.len()).all(|a| {
                if plan.yx.contains(&a) {
                    level_shape[a] > 0 && level_shape[a] <= previous[a]
                } else {
                    level_shape[a] == plan.shape[a]
                }
            });
        if !fits {
            return Err(input_error(format!(
                "level {k} has shape {given:?}, which does not fit level 0 of shape {first:?}: \
                 a level keeps every axis but y and x, and along y and x is at most the level before it ({:?})",
                &previous[usize::from(plan.channel_added)..]
            )));
        }
        levels.push(level_shape);
    }
    plan.levels = levels;
    Ok(plan)
}

impl RasterPlan {
    /// The shape of pyramid level `level` as stored.
    pub(crate) fn level_shape(&self, level: usize) -> Vec<u64> {
        self.levels[level].clone()
    }

    /// The chunk shape of pyramid level `level`: level 0's, clipped to the level.
    pub(crate) fn level_chunks(&self, level: usize) -> Vec<u64> {
        self.chunks
            .iter()
            .zip(&self.levels[level])
            .map(|(&c, &n)| c.min(n).max(1))
            .collect()
    }

    /// Creates the (empty) array of pyramid level `level` in `store`, metadata written.
    pub(crate) fn create_level(
        &self,
        store: &Arc<AtomicStore>,
        level: usize,
        dtype: DType,
        zstd_level: i32,
    ) -> Result<Array<AtomicStore>> {
        let level_shape = self.level_shape(level);
        let level_chunks = self.level_chunks(level);
        let path = format!("/s{level}");
        let err = zarr_error(&path);
        let array = ArrayBuilder::new(
            level_shape,
            level_chunks,
            dtype.zarr(),
            FillValue::new(vec![0; dtype.size()]),
        )
        .bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(zstd_level, false))])
        .dimension_names(Some(self.dims.clone()))
        .build(store.clone(), &path)
        .map_err(|e| err(&e))?;
        array.store_metadata().map_err(|e| err(&e))?;
        Ok(array)
    }

    /// Writes the element's group document (`zarr.json`, deferred through
    /// `publisher`) naming every pyramid level of the plan.
    pub(crate) fn write_group(
        &self,
        dir: &Path,
        publisher: &Publisher,
        kind: ElementKind,
        name: &ElementName,
        options: &RasterOptions,
    ) -> Result<()> {
        let dims = &self.dims;
        let levels = self.levels.len();
        let datasets: Vec<Value> = (0..levels)
            .map(|level| {
                let level_shape = self.level_shape(level);
                let factor: Vec<f64> = (0..dims.len())
                    .map(|i| self.shape[i] as f64 / level_shape[i] as f64)
                    .collect();
                let translation: Vec<f64> = factor.iter().map(|f| (f - 1.0) / 2.0).collect();
                json!({
                    "path": format!("s{level}"),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": factor},
                        {"type": "translation", "translation": translation}
                    ]
                })
            })
            .collect();
        let mut ome = json!({
            "version": "0.5-dev-spatialdata",
            "multiscales": [{
                "axes": dims.iter().map(|d| axis_json(d, false)).collect::<Vec<_>>(),
                "datasets": datasets,
                "name": name.as_str(),
                "coordinateTransformations": options.transformations.to_ngff(dims),
            }],
        });
        match kind {
            ElementKind::Labels => ome["image-label"] = json!({"version": "0.5"}),
            _ => {
                if let Some(names) = &options.channel_names {
                    ome["omero"] = json!({
                        "channels": names.iter().map(|n| json!({"label": n})).collect::<Vec<_>>()
                    });
                } else if levels > 1 {
                    // spatialdata 0.8 reads a multiscale image only with channel
                    // labels; it numbers unnamed channels 0, 1, ... itself.
                    ome["omero"] = json!({
                        "channels": (0..self.shape[0]).map(|i| json!({"label": i})).collect::<Vec<_>>()
                    });
                }
            }
        }
        let group = json!({
            "attributes": {"ome": ome, "spatialdata_attrs": {"version": "0.3"}},
            "zarr_format": 3,
            "node_type": "group",
        });
        publisher.write_deferred(
            &dir.join("zarr.json"),
            &serde_json::to_vec_pretty(&group).expect("json"),
        )
    }
}

/// Writes a whole raster element (group metadata and every level) into the folder
/// `dir`, which must exist and be private to the caller, as `plan` (the
/// [`plan_raster`] of `data`) lays it out. Every file is published atomically
/// through `publisher`.
pub(crate) fn write_raster<T: Pixel>(
    dir: &Path,
    publisher: &Arc<Publisher>,
    kind: ElementKind,
    name: &ElementName,
    data: ArrayViewD<'_, T>,
    plan: RasterPlan,
    options: &RasterOptions,
) -> Result<()> {
    let full = if plan.channel_added {
        data.insert_axis(ndarray::Axis(0))
    } else {
        data
    };
    // Level 0 is written from the caller's pixels (no copy when they are in C
    // order); each level after it is made from the one before.
    let mut smaller: Option<ArrayD<T>> = None;
    let store = Arc::new(AtomicStore::new(dir, publisher.clone())?);
    for level in 0..=options.scale_levels {
        if level > 0 {
            let previous = smaller.as_ref().map_or_else(|| full.view(), |a| a.view());
            smaller = Some(downsample(previous, plan.yx, kind == ElementKind::Labels));
        }
        let level_data = smaller.as_ref().map_or_else(|| full.view(), |a| a.view());
        let array = plan.create_level(&store, level, T::DTYPE, options.zstd_level)?;
        array
            .store_array_subset(&array.subset_all(), &level_data)
            .map_err(|e| zarr_error(&format!("/s{level}"))(&e))?;
    }
    plan.write_group(dir, publisher, kind, name, options)?;
    // Every chunk and document in place together (their folders are fsynced by the
    // caller's sync).
    publisher.flush()
}

/// Reads a JSON metadata document, bounded in size.
pub fn read_json(path: &Path) -> Result<Value> {
    let bytes = crate::storage::doc_cache::read(path, MAX_METADATA_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// Whether a metadata document is at `path` (anything there but nothing found
/// missing counts, as a `stat` would say). Under a write transaction the document
/// read to tell is kept for the next [`read_json`] of it
/// (crate::storage::doc_cache), so asking first costs nothing.
pub fn document_exists(path: &Path) -> bool {
    !crate::storage::doc_cache::read(path, MAX_METADATA_BYTES).is_err_and(|e| e.is_not_found())
}

/// The group attributes of an element folder (Zarr v3 `zarr.json` or v2 `.zattrs`).
pub fn group_attributes(dir: &Path) -> Result<Value> {
    let v3 = dir.join("zarr.json");
    if crate::storage::trace::exists(&v3) {
        let doc = read_json(&v3)?;
        return Ok(doc.get("attributes").cloned().unwrap_or_else(|| json!({})));
    }
    let v2 = dir.join(".zattrs");
    if crate::storage::trace::exists(&v2) {
        return read_json(&v2);
    }
    Err(Error::Corrupt {
        path: dir.to_path_buf(),
        reason: "no zarr.json (or .zattrs) found".into(),
    })
}

/// Reads a raster element's description from its folder.
pub fn raster_info(dir: &Path, kind: ElementKind) -> Result<RasterInfo> {
    let corrupt = |reason: String| Error::Corrupt {
        path: dir.to_path_buf(),
        reason,
    };
    let attrs = group_attributes(dir)?;
    let ome = attrs.get("ome").unwrap_or(&attrs);
    let multiscale = ome
        .pointer("/multiscales/0")
        .ok_or_else(|| corrupt("no ome multiscales".into()))?;
    let dims: Vec<String> = multiscale
        .get("axes")
        .and_then(Value::as_array)
        .ok_or_else(|| corrupt("multiscales[0] has no axes".into()))?
        .iter()
        .map(|a| a.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| corrupt("an axis has no name".into()))?;
    let level_paths: Vec<String> = multiscale
        .get("datasets")
        .and_then(Value::as_array)
        .ok_or_else(|| corrupt("multiscales[0] has no datasets".into()))?
        .iter()
        .map(|d| d.get("path").and_then(Value::as_str).map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| corrupt("a dataset has no path".into()))?;
    let first = level_paths
        .first()
        .ok_or_else(|| corrupt("multiscales[0] lists no datasets".into()))?;
    if crate::util::safe_relative(first).is_none() {
        return Err(corrupt(format!(
            "dataset path {first:?} leaves the element"
        )));
    }
    crate::util::no_links_below(dir, &dir.join(first))?;
    let (shape, dtype) = array_shape_dtype(&dir.join(first))?;
    if shape.len() != dims.len() {
        return Err(corrupt(format!(
            "level {first} has {} dimensions but the axes name {}",
            shape.len(),
            dims.len()
        )));
    }
    let transformations = Transformations::from_ngff(
        multiscale
            .get("coordinateTransformations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
        &dims,
    );
    let channel_names = ome
        .pointer("/omero/channels")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| match c.get("label") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                })
                .collect()
        });
    Ok(RasterInfo {
        kind,
        shape,
        dtype,
        dims,
        levels: level_paths.len(),
        level_paths,
        channel_names,
        transformations,
    })
}

/// Shape and data type of the array in folder `dir` (Zarr v3 or v2).
pub fn array_shape_dtype(dir: &Path) -> Result<(Vec<u64>, DType)> {
    let corrupt = |reason: String| Error::Corrupt {
        path: dir.to_path_buf(),
        reason,
    };
    let (doc, dtype_key) = if crate::storage::trace::exists(&dir.join(".zarray"))
        && !crate::storage::trace::exists(&dir.join("zarr.json"))
    {
        (read_json(&dir.join(".zarray"))?, "dtype")
    } else {
        (read_json(&dir.join("zarr.json"))?, "data_type")
    };
    let shape: Vec<u64> = doc
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| corrupt("no shape".into()))?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()
        .ok_or_else(|| {
            corrupt("the shape holds a value that is not a non-negative integer".into())
        })?;
    shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| {
            corrupt(format!(
                "the shape {shape:?} has more elements than fit in 64 bits"
            ))
        })?;
    let dtype_text = doc.get(dtype_key).and_then(Value::as_str).unwrap_or("?");
    let dtype = DType::parse(dtype_text)
        .ok_or_else(|| corrupt(format!("data type {dtype_text:?} is not supported")))?;
    Ok((shape, dtype))
}

/// Checks that the chunks of the array in `dir` (Zarr v3 regular grid, or v2) are
/// positive and each fits in memory, before zarrs computes with them.
fn check_chunks(dir: &Path, dtype: DType) -> Result<()> {
    let corrupt = |reason: String| Error::Corrupt {
        path: dir.to_path_buf(),
        reason,
    };
    let doc = if crate::storage::trace::exists(&dir.join(".zarray"))
        && !crate::storage::trace::exists(&dir.join("zarr.json"))
    {
        read_json(&dir.join(".zarray"))?
    } else {
        read_json(&dir.join("zarr.json"))?
    };
    let Some(chunks) = doc
        .pointer("/chunk_grid/configuration/chunk_shape")
        .or_else(|| doc.get("chunks"))
        .and_then(Value::as_array)
    else {
        // zarrs reports grids it cannot read.
        return Ok(());
    };
    let sizes: Option<Vec<u64>> = chunks.iter().map(Value::as_u64).collect();
    let Some(sizes) = sizes else {
        return Err(corrupt(format!(
            "chunk shape {chunks:?} is not a list of sizes"
        )));
    };
    let bytes = sizes
        .iter()
        .try_fold(dtype.size() as u64, |acc, &n| acc.checked_mul(n));
    match bytes {
        Some(b) if b <= crate::util::memory_limit() => Ok(()),
        _ => Err(corrupt(format!(
            "chunks of shape {sizes:?} would not fit in this machine's memory"
        ))),
    }
}

/// Reads a whole level of a raster element.
pub fn read_level<T: Pixel>(dir: &Path, level_path: &str) -> Result<ArrayD<T>> {
    let level = dir.join(level_path);
    // Never read through a link below the element: it could lead out of the dataset.
    crate::util::no_links_below(dir, &level.join("c"))?;
    let (shape, dtype) = array_shape_dtype(&level)?;
    if dtype != T::DTYPE {
        return Err(Error::InvalidInput(format!(
            "{} holds {dtype} pixels, not {}",
            level.display(),
            T::DTYPE
        )));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &n| acc.checked_mul(n));
    if !bytes.is_some_and(|b| b <= crate::util::memory_limit() && usize::try_from(b).is_ok()) {
        return Err(Error::Corrupt {
            path: level,
            reason: format!("a {shape:?} array of {dtype} would not fit in this machine's memory"),
        });
    }
    check_chunks(&level, dtype)?;
    let store = Arc::new(AtomicStore::read_only(dir)?);
    let path = format!("/{level_path}");
    let err = zarr_error(&path);
    let array = Array::open(store, &path).map_err(|e| err(&e))?;
    array
        .retrieve_array_subset::<ArrayD<T>>(&array.subset_all())
        .map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_downsample_by_nearest_and_images_by_mean() {
        let data = ArrayD::from_shape_vec(IxDyn(&[2, 4]), vec![1u8, 3, 5, 7, 3, 5, 7, 9]).unwrap();
        let near = downsample(data.view(), [0, 1], true);
        assert_eq!(near.shape(), &[1, 2]);
        assert_eq!(near.iter().copied().collect::<Vec<_>>(), vec![1, 5]);
        let mean = downsample(data.view(), [0, 1], false);
        assert_eq!(mean.iter().copied().collect::<Vec<_>>(), vec![3, 7]);
    }

    #[test]
    fn dims_are_checked() {
        assert!(resolve_dims(ElementKind::Labels, 3, None).unwrap() == ["z", "y", "x"]);
        let bad = vec!["x".to_string(), "y".to_string()];
        assert!(resolve_dims(ElementKind::Labels, 2, Some(&bad)).is_err());
        assert!(resolve_dims(ElementKind::Labels, 4, None).is_err());
    }
}
