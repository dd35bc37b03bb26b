//! The `Dataset` class: a handle on one dataset.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use numpy::PyArray;
use pyo3::prelude::*;
use serde_json::{Value, json};
use spatialzarr::dataset::ElementInfo;
use spatialzarr::lock::LockOptions;
use spatialzarr::{
    ConsolidatedMetadata, DatasetOptions, ElementKind, LabelsList, RasterOptions, Transform,
    Transformations,
};

use crate::errors::{OrRaise, invalid};
use crate::pixels::{dtype_of, readonly, typed, with_pixel};

/// Seconds (None: forever) as the core's timeout, refusing negative or absurd values.
pub fn timeout_of(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                invalid(format!(
                    "a lock timeout must be a non-negative number of seconds, got {s}"
                ))
            })
        })
        .transpose()
}

/// Transformations given as the JSON text of a list of NGFF transformation objects,
/// each naming its coordinate system in `output.name`, with vectors over the spatial
/// axes (None: identity to `global`).
pub fn transformations_of(text: Option<&str>) -> PyResult<Transformations> {
    let Some(text) = text else {
        return Ok(Transformations::default());
    };
    let list: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| invalid(format!("transformations are not a JSON list: {e}")))?;
    if list.is_empty() {
        return Err(invalid("an element needs at least one transformation"));
    }
    if let Some(t) = list
        .iter()
        .find(|t| t.pointer("/output/name").and_then(Value::as_str).is_none())
    {
        return Err(invalid(format!(
            "transformation {t} names no coordinate system"
        )));
    }
    Ok(Transformations::from_ngff(&list, &[]))
}

/// Transformations as JSON: by coordinate system, `{"type": ..., values}`.
pub fn transformations_json(t: &Transformations) -> Value {
    let entries: serde_json::Map<String, Value> =
        t.0.iter()
            .map(|(system, t)| {
                let value = match t {
                    Transform::Identity => json!({"type": "identity"}),
                    Transform::Scale(v) => json!({"type": "scale", "scale": v}),
                    Transform::Translation(v) => json!({"type": "translation", "translation": v}),
                    Transform::Other(v) => v.clone(),
                };
                (system.clone(), value)
            })
            .collect();
    Value::Object(entries)
}

/// The element kind of a raster named in Python (`"images"` or `"labels"`).
pub fn raster_kind(kind: &str) -> PyResult<ElementKind> {
    match kind {
        "images" => Ok(ElementKind::Images),
        "labels" => Ok(ElementKind::Labels),
        other => Err(invalid(format!("{other:?} is not a raster kind"))),
    }
}

/// The options of a raster element, from the arguments of `add_image`/`add_labels`.
pub fn raster_options(
    dims: Option<Vec<String>>,
    channel_names: Option<Vec<String>>,
    scale_levels: usize,
    chunks: Option<Vec<u64>>,
    transformations: Option<&str>,
) -> PyResult<RasterOptions> {
    Ok(RasterOptions {
        dims,
        channel_names,
        scale_levels,
        chunk_shape: chunks,
        transformations: transformations_of(transformations)?,
        ..RasterOptions::default()
    })
}

/// `text` parsed as an option named `what` (None: not given).
fn parsed<T: std::str::FromStr>(what: &str, text: Option<&str>) -> PyResult<Option<T>>
where
    T::Err: std::fmt::Display,
{
    text.map(|t| t.parse::<T>().map_err(|e| invalid(format!("{what}: {e}"))))
        .transpose()
}

/// The consolidated metadata policy from `consolidated` (`keep`, `keep-unbounded`,
/// `drop`) and the older flag `drop_consolidated_metadata`, which must agree.
fn consolidated_of(
    consolidated: Option<&str>,
    drop_consolidated_metadata: bool,
) -> PyResult<ConsolidatedMetadata> {
    match parsed::<ConsolidatedMetadata>("consolidated", consolidated)? {
        Some(policy) if drop_consolidated_metadata && policy != ConsolidatedMetadata::Drop => {
            Err(invalid(format!(
                "consolidated={policy:?} contradicts drop_consolidated_metadata=True; give one of them"
            )))
        }
        Some(policy) => Ok(policy),
        None if drop_consolidated_metadata => Ok(ConsolidatedMetadata::Drop),
        None => Ok(ConsolidatedMetadata::default()),
    }
}

/// The `ome.labels` list policy from a number of labels, `"always"` or `"never"`
/// (None: the default bound).
fn labels_list_of(value: Option<&Bound<'_, PyAny>>) -> PyResult<LabelsList> {
    let Some(value) = value else {
        return Ok(LabelsList::default());
    };
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(invalid(
            "labels_list is a number of labels, \"always\" or \"never\", not a bool",
        ));
    }
    if let Ok(n) = value.extract::<i64>() {
        return usize::try_from(n)
            .map(LabelsList::Bounded)
            .map_err(|_| invalid(format!("labels_list: {n} is not a number of labels")));
    }
    let text: String = value
        .extract()
        .map_err(|_| invalid("labels_list is a number of labels, \"always\" or \"never\""))?;
    Ok(parsed::<LabelsList>("labels_list", Some(&text))?.expect("given"))
}

/// A handle on one dataset. Every call reads the committed state from disk.
#[pyclass(module = "spatialzarr._spatialzarr", frozen)]
pub struct Dataset {
    pub(crate) inner: spatialzarr::Dataset,
}

#[pymethods]
impl Dataset {
    /// Opens (or with `create`, opens or creates) the dataset at `path`.
    #[new]
    #[pyo3(signature = (path, create, lock_timeout=None, allow_node_local_locks=false, drop_consolidated_metadata=false, durability=None, consolidated=None, labels_list=None, folder_sync=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        lock_timeout: Option<f64>,
        allow_node_local_locks: bool,
        drop_consolidated_metadata: bool,
        durability: Option<&str>,
        consolidated: Option<&str>,
        labels_list: Option<&Bound<'_, PyAny>>,
        folder_sync: Option<&str>,
    ) -> PyResult<Self> {
        let options = DatasetOptions {
            lock_timeout: timeout_of(lock_timeout)?,
            lock: LockOptions {
                allow_node_local_locks,
            },
            consolidated: consolidated_of(consolidated, drop_consolidated_metadata)?,
            durability: parsed("durability", durability)?,
            labels_list: labels_list_of(labels_list)?,
            folder_sync: parsed("folder_sync", folder_sync)?,
        };
        let inner = py
            .detach(|| {
                if create {
                    spatialzarr::Dataset::open_or_create(&path, options)
                } else {
                    spatialzarr::Dataset::open(&path, options)
                }
            })
            .or_raise()?;
        Ok(Self { inner })
    }

    /// The durability level this handle commits at: "full" or "process".
    #[getter]
    fn durability(&self) -> &'static str {
        self.inner.durability().as_str()
    }

    /// How this handle's commits make folder changes durable: "ordered" (left to the
    /// filesystem's ordering: xfs, journaled ext3/ext4) or "strict" (every folder
    /// fsynced).
    #[getter]
    fn folder_sync(&self) -> &'static str {
        self.inner.folder_sync().as_str()
    }

    /// The dataset's root folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// The commit generation (0 before the first commit).
    fn generation(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.inner.generation()).or_raise()
    }

    /// The committed elements by kind.
    fn list(&self, py: Python<'_>) -> PyResult<BTreeMap<&'static str, Vec<String>>> {
        let list = py.detach(|| self.inner.list()).or_raise()?;
        Ok(ElementKind::ALL
            .iter()
            .map(|k| (k.group(), list.of(*k).to_vec()))
            .collect())
    }

    /// Describes one element, as JSON text.
    fn info_json(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        let info = py.detach(|| self.inner.info(name)).or_raise()?;
        let doc = match info {
            ElementInfo::Raster(r) => json!({
                "kind": r.kind.group(),
                "shape": r.shape,
                "dtype": r.dtype.name(),
                "dims": r.dims,
                "levels": r.levels,
                "level_paths": r.level_paths,
                "channel_names": r.channel_names,
                "transformations": transformations_json(&r.transformations),
            }),
            ElementInfo::Table(t) => json!({
                "kind": "tables",
                "n_obs": t.n_obs,
                "n_vars": t.n_vars,
                "regions": t.regions,
                "region_key": t.region_key,
                "instance_key": t.instance_key,
                "columns": t.columns,
                "column_kinds": t.column_kinds,
            }),
            ElementInfo::Points(p) => json!({
                "kind": "points",
                "n": p.n,
                "columns": p.columns,
                "column_types": p.column_types.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "feature_key": p.feature_key,
                "instance_key": p.instance_key,
                "parts": p.parts,
                "axes": p.axes,
                "transformations": transformations_json(&p.transformations),
            }),
            ElementInfo::Shapes(s) => json!({
                "kind": "shapes",
                "n": s.n,
                "geometry": s.geometry,
                "columns": s.columns,
                "transformations": transformations_json(&s.transformations),
            }),
        };
        Ok(doc.to_string())
    }

    /// Adds an image or labels element from a numpy array; returns the generation.
    #[pyo3(signature = (kind, name, data, dims=None, channel_names=None, scale_levels=0, chunks=None, transformations=None, overwrite=false))]
    #[allow(clippy::too_many_arguments)]
    fn add_raster(
        &self,
        py: Python<'_>,
        kind: &str,
        name: &str,
        data: &Bound<'_, PyAny>,
        dims: Option<Vec<String>>,
        channel_names: Option<Vec<String>>,
        scale_levels: usize,
        chunks: Option<Vec<u64>>,
        transformations: Option<&str>,
        overwrite: bool,
    ) -> PyResult<u64> {
        let kind = raster_kind(kind)?;
        let options = raster_options(dims, channel_names, scale_levels, chunks, transformations)?;
        let info = with_pixel!(dtype_of(data)?, T => {
            let array = readonly(typed::<T>(data)?)?;
            let view = array.as_array();
            py.detach(|| self.inner.add_raster(kind, name, view, &options, overwrite))
        })
        .or_raise()?;
        Ok(info.generation)
    }

    /// Reads one pyramid level of an image or labels element as a numpy array.
    #[pyo3(signature = (name, level=0))]
    fn read_raster<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        level: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let info = py.detach(|| self.inner.info(name)).or_raise()?;
        let ElementInfo::Raster(info) = info else {
            return Err(crate::errors::to_py(spatialzarr::Error::WrongElementType {
                name: name.to_owned(),
                actual: "not a raster".into(),
                expected: "an image or labels".into(),
            }));
        };
        with_pixel!(info.dtype, T => {
            let array = py.detach(|| self.inner.read_raster::<T>(name, level)).or_raise()?;
            Ok(PyArray::from_owned_array(py, array).into_any())
        })
    }

    /// Replaces the transformations of an element; returns the generation.
    fn set_transformations(
        &self,
        py: Python<'_>,
        name: &str,
        transformations: &str,
    ) -> PyResult<u64> {
        let t = transformations_of(Some(transformations))?;
        let info = py
            .detach(|| self.inner.set_transformations(name, &t))
            .or_raise()?;
        Ok(info.generation)
    }

    /// Removes an element; returns the generation.
    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<u64> {
        Ok(py.detach(|| self.inner.remove(name)).or_raise()?.generation)
    }

    /// Checks the dataset: `(generation, elements_checked, problems)`.
    #[pyo3(signature = (deep=false))]
    fn check(&self, py: Python<'_>, deep: bool) -> PyResult<(u64, usize, Vec<String>)> {
        let report = py.detach(|| self.inner.check(deep)).or_raise()?;
        Ok((report.generation, report.elements_checked, report.problems))
    }

    /// Finishes an interrupted commit and cleans up; returns what it did as JSON text.
    fn recover(&self, py: Python<'_>) -> PyResult<String> {
        let report = py.detach(|| self.inner.recover()).or_raise()?;
        Ok(serde_json::to_string(&report).expect("a report serialises"))
    }
}
