//! The state of a table as stored: columns, lengths, X, regions, categories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::arrays::Arrays;
use super::columns::{ColumnKind, Prim};
use crate::element::raster::read_json;
use crate::error::{Error, Result};

/// How X is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XState {
    /// No X.
    None,
    /// A dense `n_obs x n_vars` array.
    Dense {
        /// Element type.
        dtype: Prim,
        /// Number of variables.
        n_vars: u64,
    },
    /// A CSR matrix group.
    Csr {
        /// Type of `data`.
        data: Prim,
        /// Type of `indices`.
        indices: Prim,
        /// Type of `indptr`.
        indptr: Prim,
        /// Number of variables.
        n_vars: u64,
        /// Stored non-zeros (length of `data`).
        nnz: u64,
    },
}

/// Everything an append or a read needs to know about a table.
#[derive(Debug, Clone)]
pub struct TableState {
    /// The table folder.
    pub dir: PathBuf,
    /// The region key column.
    pub region_key: String,
    /// The instance key column.
    pub instance_key: String,
    /// obs columns in order, with their encodings.
    pub columns: Vec<(String, ColumnKind)>,
    /// The obs index column's name and encoding.
    pub index: (String, ColumnKind),
    /// X.
    pub x: XState,
    /// Number of rows.
    pub n_obs: u64,
    /// Number of variables (`var` rows).
    pub n_vars: u64,
    /// The regions declared in `uns/spatialdata_attrs/region`.
    pub regions: Vec<String>,
    /// Whether that node is a 0-d scalar (one region, as spatialdata writes it).
    pub region_is_scalar: bool,
    /// Categories of every categorical column.
    pub categories: BTreeMap<String, Vec<String>>,
}

fn prim_at(dir: &Path) -> Result<Prim> {
    prim_of(dir, &read_json(&dir.join("zarr.json"))?)
}

/// The data type of the array at `dir`, from its metadata document `doc`.
pub(crate) fn prim_of(dir: &Path, doc: &Value) -> Result<Prim> {
    let name = doc.get("data_type").and_then(Value::as_str).unwrap_or("?");
    Prim::parse(name).ok_or_else(|| Error::Corrupt {
        path: dir.to_path_buf(),
        reason: format!("unsupported data type {name}"),
    })
}

/// The length along axis 0 of the array at `dir` (1 for a 0-d array).
pub fn length_at(dir: &Path) -> Result<u64> {
    length_of(dir, &read_json(&dir.join("zarr.json"))?)
}

/// The length along axis 0 of the array at `dir`, from its metadata document `doc`.
fn length_of(dir: &Path, doc: &Value) -> Result<u64> {
    match doc.get("shape").and_then(Value::as_array) {
        Some(s) if s.is_empty() => Ok(1),
        Some(s) => s[0].as_u64().ok_or_else(|| Error::Corrupt {
            path: dir.to_path_buf(),
            reason: "bad shape".into(),
        }),
        None => Err(Error::Corrupt {
            path: dir.to_path_buf(),
            reason: "no shape".into(),
        }),
    }
}

/// The values array of a string column (`values` inside a nullable one).
pub fn string_values_path(name: &str, kind: &ColumnKind) -> String {
    match kind {
        ColumnKind::NullableStr => format!("obs/{name}/values"),
        _ => format!("obs/{name}"),
    }
}

impl TableState {
    /// Reads the state of the table stored in `dir`.
    pub fn load(dir: &Path, arrays: &Arrays) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            path: dir.to_path_buf(),
            reason,
        };
        let attrs = read_json(&dir.join("zarr.json"))?
            .get("attributes")
            .cloned()
            .unwrap_or(Value::Null);
        let text = |key: &str| -> Result<String> {
            attrs
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    corrupt(format!(
                        "the table has no {key:?} attribute: it is not a SpatialData table"
                    ))
                })
        };
        let region_key = text("region_key")?;
        let instance_key = text("instance_key")?;
        let obs_attrs = read_json(&dir.join("obs/zarr.json"))?
            .get("attributes")
            .cloned()
            .unwrap_or(Value::Null);
        let index_name = obs_attrs
            .get("_index")
            .and_then(Value::as_str)
            .unwrap_or("_index")
            .to_owned();
        let order: Vec<String> = obs_attrs
            .get("column-order")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut columns = Vec::new();
        let mut categories = BTreeMap::new();
        let rel = |p: String| -> String {
            let base = dir.strip_prefix(&arrays.root).unwrap_or(dir);
            format!("{}/{p}", base.display())
                .trim_start_matches('/')
                .to_owned()
        };
        for name in &order {
            if crate::util::safe_relative(name).is_none() || name.contains('/') {
                return Err(corrupt(format!("column name {name:?} is not a plain name")));
            }
            let kind = ColumnKind::detect(&dir.join("obs").join(name))?;
            if let ColumnKind::Categorical { .. } = kind {
                let path = rel(format!("obs/{name}/categories"));
                let doc = arrays.metadata(&path)?;
                let len = length_of(&dir.join("obs").join(name).join("categories"), &doc)?;
                let cats: Vec<String> = arrays.read_from(&path, &doc, 0..len)?;
                categories.insert(name.clone(), cats);
            }
            columns.push((name.clone(), kind));
        }
        let index_kind = ColumnKind::detect(&dir.join("obs").join(&index_name))?;
        let n_obs = length_at(&dir.join(string_values_path(&index_name, &index_kind)))?;
        // Read, not looked for first: a missing X is one failed open.
        let x_doc = match read_json(&dir.join("X/zarr.json")) {
            Ok(doc) => Some(doc),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let x = if let Some(doc) = x_doc {
            if doc.get("node_type").and_then(Value::as_str) == Some("array") {
                let shape = doc
                    .get("shape")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                XState::Dense {
                    dtype: prim_of(&dir.join("X"), &doc)?,
                    n_vars: shape.get(1).and_then(Value::as_u64).unwrap_or(0),
                }
            } else {
                let encoding = doc
                    .pointer("/attributes/encoding-type")
                    .and_then(Value::as_str);
                if encoding != Some("csr_matrix") {
                    return Err(corrupt(format!(
                        "X is encoded as {encoding:?}; only dense and csr_matrix are supported"
                    )));
                }
                XState::Csr {
                    data: prim_at(&dir.join("X/data"))?,
                    indices: prim_at(&dir.join("X/indices"))?,
                    indptr: prim_at(&dir.join("X/indptr"))?,
                    n_vars: doc
                        .pointer("/attributes/shape/1")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                    nnz: length_at(&dir.join("X/data"))?,
                }
            }
        } else {
            XState::None
        };
        let var_attrs = read_json(&dir.join("var/zarr.json"))
            .ok()
            .and_then(|d| d.get("attributes").cloned())
            .unwrap_or(Value::Null);
        let var_index = var_attrs
            .get("_index")
            .and_then(Value::as_str)
            .unwrap_or("_index");
        let n_vars = match &x {
            XState::Dense { n_vars, .. } | XState::Csr { n_vars, .. } => *n_vars,
            XState::None => {
                let vdir = dir.join("var").join(var_index);
                if crate::storage::trace::is_dir(&vdir.join("values")) {
                    length_at(&vdir.join("values")).unwrap_or(0)
                } else {
                    length_at(&vdir).unwrap_or(0)
                }
            }
        };
        let region_rel = rel("uns/spatialdata_attrs/region".into());
        let region_doc = arrays.metadata(&region_rel)?;
        let region_is_scalar = region_doc
            .get("shape")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty);
        let region_len = length_of(&dir.join("uns/spatialdata_attrs/region"), &region_doc)?;
        let regions: Vec<String> = if region_is_scalar {
            arrays.read_from(&region_rel, &region_doc, 0..1)?
        } else {
            arrays.read_from(&region_rel, &region_doc, 0..region_len)?
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            region_key,
            instance_key,
            columns,
            index: (index_name, index_kind),
            x,
            n_obs,
            n_vars,
            regions,
            region_is_scalar,
            categories,
        })
    }
}
