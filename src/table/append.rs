//! Appending rows: validate everything, then write the new rows' chunks; the new
//! metadata documents are collected in a [`TablePatch`] for the commit to publish.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{Value, json};

use super::arrays::{Arrays, string_array_attrs};
use super::columns::{ColumnKind, NumCast, Prim, Values, convert_numbers};
use super::state::{TableState, XState, string_values_path};
use super::{RowBatch, XRows};
use crate::error::{Error, Result};

/// The pending changes of one table inside a transaction: cumulative over every
/// append made to it so far.
#[derive(Debug, Clone)]
pub struct TablePatch {
    /// The table's relative path (`tables/<name>`).
    pub rel: String,
    /// The state after the appends.
    pub state: TableState,
    /// New metadata documents, by node path relative to the dataset root.
    pub docs: BTreeMap<String, Value>,
    /// Idempotency keys of the appends, with their row ranges.
    pub keys: BTreeMap<String, (u64, u64)>,
    /// Whether the region node must be replaced by a 1-d list (it was a 0-d scalar).
    pub region_becomes_list: bool,
}

impl TablePatch {
    /// A patch with no change yet over `state`.
    pub fn new(rel: String, state: TableState) -> Self {
        Self {
            rel,
            state,
            docs: BTreeMap::new(),
            keys: BTreeMap::new(),
            region_becomes_list: false,
        }
    }
}

/// A column's values converted for writing.
enum Prepared {
    Numbers {
        path: String,
        prim: Prim,
        values: Values,
        mask_path: Option<String>,
    },
    Strings {
        path: String,
        values: Vec<String>,
        mask_path: Option<String>,
        mask: Vec<bool>,
    },
    Codes {
        path: String,
        prim: Prim,
        codes: Vec<i64>,
        categories: Option<(String, Vec<String>)>,
    },
}

fn input(message: String) -> Error {
    Error::InvalidInput(message)
}

macro_rules! with_prim {
    ($prim:expr, $t:ident => $body:expr) => {
        match $prim {
            $crate::table::columns::Prim::Bool => {
                type $t = bool;
                $body
            }
            $crate::table::columns::Prim::I8 => {
                type $t = i8;
                $body
            }
            $crate::table::columns::Prim::I16 => {
                type $t = i16;
                $body
            }
            $crate::table::columns::Prim::I32 => {
                type $t = i32;
                $body
            }
            $crate::table::columns::Prim::I64 => {
                type $t = i64;
                $body
            }
            $crate::table::columns::Prim::U8 => {
                type $t = u8;
                $body
            }
            $crate::table::columns::Prim::U16 => {
                type $t = u16;
                $body
            }
            $crate::table::columns::Prim::U32 => {
                type $t = u32;
                $body
            }
            $crate::table::columns::Prim::U64 => {
                type $t = u64;
                $body
            }
            $crate::table::columns::Prim::F32 => {
                type $t = f32;
                $body
            }
            $crate::table::columns::Prim::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}
pub(crate) use with_prim;

fn missing_value<T: NumCast + Default>(prim: Prim) -> T {
    if matches!(prim, Prim::F32 | Prim::F64) {
        T::from_f64(f64::NAN).unwrap_or_default()
    } else {
        T::default()
    }
}

/// Writes numbers (and their mask) as rows `start..` of `path`.
#[allow(clippy::too_many_arguments)]
fn write_numbers(
    arrays: &Arrays,
    docs: &mut BTreeMap<String, Value>,
    name: &str,
    path: &str,
    prim: Prim,
    values: &Values,
    mask_path: Option<&str>,
    start: u64,
) -> Result<()> {
    let mask = with_prim!(prim, T => {
        let (converted, mask) = convert_numbers::<T>(name, values, missing_value::<T>(prim))?;
        docs.insert(path.to_owned(), arrays.append(path, start, converted, 1)?);
        mask
    });
    if let Some(mask_path) = mask_path {
        docs.insert(
            mask_path.to_owned(),
            arrays.append(mask_path, start, mask, 1)?,
        );
    }
    Ok(())
}

/// Checks and converts every column of `rows` against `state`, extending categories
/// and regions in `state`. Writes nothing.
fn prepare(state: &mut TableState, base: &str, rows: &RowBatch) -> Result<Vec<(String, Prepared)>> {
    let batch = &rows.obs;
    let k = batch.num_rows();
    let given: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let stored: Vec<&String> = state.columns.iter().map(|(n, _)| n).collect();
    let missing: Vec<&&String> = stored.iter().filter(|n| !given.contains(n)).collect();
    let extra: Vec<&String> = given.iter().filter(|n| !stored.contains(n)).collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(input(format!(
            "the rows' columns do not match the table: missing {missing:?}, unknown {extra:?} (the table has {stored:?})"
        )));
    }
    let mut prepared = Vec::new();
    for (name, kind) in state.columns.clone() {
        let array = batch.column_by_name(&name).expect("checked above");
        let values = Values::from_arrow(&name, array)?;
        let is_key = name == state.region_key || name == state.instance_key;
        if is_key && values.has_nulls() {
            return Err(input(format!(
                "column {name:?} is a key of the table and cannot hold missing values"
            )));
        }
        let column = format!("{base}/obs/{name}");
        let item = match kind {
            ColumnKind::Plain(prim) => {
                if values.has_nulls() && !matches!(prim, Prim::F32 | Prim::F64) {
                    return Err(input(format!(
                        "column {name:?} ({}) cannot hold missing values; the table created it without a mask",
                        prim.name()
                    )));
                }
                Prepared::Numbers {
                    path: column,
                    prim,
                    values,
                    mask_path: None,
                }
            }
            ColumnKind::Nullable(prim) => Prepared::Numbers {
                path: format!("{column}/values"),
                prim,
                values,
                mask_path: Some(format!("{column}/mask")),
            },
            ColumnKind::Str | ColumnKind::NullableStr => {
                let strings = values.into_strings(&name)?;
                let mask: Vec<bool> = strings.iter().map(Option::is_none).collect();
                if kind == ColumnKind::Str && mask.iter().any(|m| *m) {
                    return Err(input(format!(
                        "column {name:?} cannot hold missing strings"
                    )));
                }
                Prepared::Strings {
                    path: format!("{base}/{}", string_values_path(&name, &kind)),
                    values: strings.into_iter().map(Option::unwrap_or_default).collect(),
                    mask_path: (kind == ColumnKind::NullableStr).then(|| format!("{column}/mask")),
                    mask,
                }
            }
            ColumnKind::Categorical { codes: prim, .. } => {
                let strings = values.into_strings(&name)?;
                let categories = state.categories.entry(name.clone()).or_default();
                let before = categories.len();
                let mut index: BTreeMap<String, i64> = categories
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), i as i64))
                    .collect();
                let codes: Vec<i64> = strings
                    .iter()
                    .map(|s| match s {
                        None => -1,
                        Some(s) => *index.entry(s.clone()).or_insert_with(|| {
                            categories.push(s.clone());
                            categories.len() as i64 - 1
                        }),
                    })
                    .collect();
                let max_code = categories.len() as i64 - 1;
                let fits = with_prim!(prim, T => <T as NumCast>::from_i64(max_code).is_some());
                if !fits {
                    return Err(input(format!(
                        "categorical column {name:?} stores {} codes, which cannot number {} categories; widening stored codes is not supported",
                        prim.name(),
                        categories.len()
                    )));
                }
                let grew = categories.len() > before;
                Prepared::Codes {
                    path: format!("{column}/codes"),
                    prim,
                    codes,
                    categories: grew.then(|| (format!("{column}/categories"), categories.clone())),
                }
            }
        };
        prepared.push((name, item));
    }
    if k == 0 {
        return Ok(prepared);
    }
    // New regions extend the declared list, in order of first appearance.
    let new_regions: Vec<String> = state
        .categories
        .get(&state.region_key)
        .map(|cats| {
            cats.iter()
                .filter(|c| !state.regions.contains(c))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    state.regions.extend(new_regions);
    Ok(prepared)
}

/// Categorical columns whose stored codes cannot number the categories these rows
/// would bring, with the code type they need.
pub fn codes_to_widen(state: &TableState, rows: &RowBatch) -> Result<Vec<(String, Prim)>> {
    let mut out = Vec::new();
    for (name, kind) in &state.columns {
        let ColumnKind::Categorical { codes, .. } = kind else {
            continue;
        };
        let Some(array) = rows.obs.column_by_name(name) else {
            continue;
        };
        let strings = Values::from_arrow(name, array)?.into_strings(name)?;
        let known = state.categories.get(name).cloned().unwrap_or_default();
        let mut new: std::collections::BTreeSet<&str> = Default::default();
        for s in strings.iter().flatten() {
            if !known.iter().any(|k| k == s) {
                new.insert(s);
            }
        }
        let max_code = (known.len() + new.len()) as i64 - 1;
        let fits = with_prim!(*codes, T => <T as NumCast>::from_i64(max_code).is_some());
        if !fits {
            let wider = if max_code <= i64::from(i32::MAX) {
                Prim::I32
            } else {
                Prim::I64
            };
            out.push((name.clone(), wider));
        }
    }
    Ok(out)
}

fn check_x(state: &TableState, rows: &RowBatch) -> Result<()> {
    let k = rows.obs.num_rows() as u64;
    match (&state.x, &rows.x) {
        (XState::None, None) => Ok(()),
        (XState::None, Some(_)) => Err(input("the table has no X, but the rows bring X".into())),
        (_, None) => Err(input(
            "the table has X: the rows must bring their X rows".into(),
        )),
        (XState::Dense { n_vars, .. }, Some(XRows::Dense(values))) => {
            if values.len() as u64 != k * n_vars {
                return Err(input(format!(
                    "X has {} values, but {k} rows of {n_vars} variables need {}",
                    values.len(),
                    k * n_vars
                )));
            }
            Ok(())
        }
        (
            XState::Csr { n_vars, .. },
            Some(XRows::Csr {
                indptr,
                indices,
                data,
            }),
        ) => {
            if indptr.len() as u64 != k + 1 || indptr.first() != Some(&0) {
                return Err(input(format!(
                    "X indptr must have {} entries starting at 0",
                    k + 1
                )));
            }
            if indptr.windows(2).any(|w| w[1] < w[0]) {
                return Err(input("X indptr must not decrease".into()));
            }
            let nnz = *indptr.last().expect("k + 1 >= 1 entries") as usize;
            if indices.len() != nnz || data.len() != nnz {
                return Err(input(format!(
                    "X indptr ends at {nnz}, but there are {} indices and {} values",
                    indices.len(),
                    data.len()
                )));
            }
            if let Some(bad) = indices.iter().find(|&&i| i < 0 || i as u64 >= *n_vars) {
                return Err(input(format!(
                    "X column index {bad} is outside 0..{n_vars}"
                )));
            }
            Ok(())
        }
        (XState::Dense { .. }, Some(XRows::Csr { .. })) => {
            Err(input("X is dense in the table; give dense rows".into()))
        }
        (XState::Csr { .. }, Some(XRows::Dense(_))) => Err(input(
            "X is sparse (CSR) in the table; give CSR rows".into(),
        )),
    }
}

/// Appends `rows` to the table of `patch`: validates everything first, then writes the
/// rows' chunks through `arrays` (rooted at the dataset or at a staging folder) and
/// records the new metadata in `patch`. On error `patch` is unchanged; chunks written
/// beyond the committed shapes are invisible and overwritten by the next append.
pub fn append(arrays: &Arrays, patch: &mut TablePatch, rows: &RowBatch) -> Result<Range<u64>> {
    let mut state = patch.state.clone();
    let base = patch.rel.clone();
    check_x(&state, rows)?;
    let prepared = prepare(&mut state, &base, rows)?;
    let k = rows.obs.num_rows() as u64;
    let start = state.n_obs;
    let end = start.checked_add(k).ok_or_else(|| Error::Corrupt {
        path: std::path::PathBuf::from(&base),
        reason: format!("the table claims {start} rows; {k} more do not fit in 64 bits"),
    })?;
    let mut docs = patch.docs.clone();
    for (name, item) in &prepared {
        match item {
            Prepared::Numbers {
                path,
                prim,
                values,
                mask_path,
            } => {
                write_numbers(
                    arrays,
                    &mut docs,
                    name,
                    path,
                    *prim,
                    values,
                    mask_path.as_deref(),
                    start,
                )?;
            }
            Prepared::Strings {
                path,
                values,
                mask_path,
                mask,
            } => {
                docs.insert(path.clone(), arrays.append(path, start, values.clone(), 1)?);
                if let Some(mask_path) = mask_path {
                    docs.insert(
                        mask_path.clone(),
                        arrays.append(mask_path, start, mask.clone(), 1)?,
                    );
                }
            }
            Prepared::Codes {
                path,
                prim,
                codes,
                categories,
            } => {
                let values = Values::Int(codes.iter().map(|c| Some(*c)).collect());
                write_numbers(arrays, &mut docs, name, path, *prim, &values, None, start)?;
                if let Some((cat_path, all)) = categories {
                    docs.insert(
                        cat_path.clone(),
                        arrays.append(cat_path, 0, all.clone(), 1)?,
                    );
                }
            }
        }
    }
    // The obs index: row numbers as strings.
    let (index_name, index_kind) = state.index.clone();
    let index_path = format!("{base}/{}", string_values_path(&index_name, &index_kind));
    let names: Vec<String> = (start..end).map(|i| i.to_string()).collect();
    docs.insert(
        index_path.clone(),
        arrays.append(&index_path, start, names, 1)?,
    );
    if index_kind == ColumnKind::NullableStr {
        let mask_path = format!("{base}/obs/{index_name}/mask");
        docs.insert(
            mask_path.clone(),
            arrays.append(&mask_path, start, vec![false; k as usize], 1)?,
        );
    }
    write_x(arrays, &mut state, &base, &mut docs, rows, start)?;
    // Regions: the declared list and the table's attribute follow obs.
    if state.regions != patch.state.regions {
        let group_path = base.clone();
        let mut group = docs
            .get(&group_path)
            .cloned()
            .map_or_else(|| arrays.metadata(&group_path), Ok)?;
        group["attributes"]["region"] = json!(state.regions);
        docs.insert(group_path, group);
        if !state.region_is_scalar {
            let region_path = format!("{base}/uns/spatialdata_attrs/region");
            docs.insert(
                region_path.clone(),
                arrays.append(&region_path, 0, state.regions.clone(), 1)?,
            );
        } else {
            patch.region_becomes_list = true;
        }
    }
    state.n_obs = end;
    patch.state = state;
    patch.docs = docs;
    Ok(start..end)
}

fn write_x(
    arrays: &Arrays,
    state: &mut TableState,
    base: &str,
    docs: &mut BTreeMap<String, Value>,
    rows: &RowBatch,
    start: u64,
) -> Result<()> {
    match (&mut state.x, &rows.x) {
        (XState::Dense { dtype, n_vars }, Some(XRows::Dense(values))) => {
            let path = format!("{base}/X");
            let as_values = Values::Float(values.iter().map(|v| Some(*v)).collect());
            with_prim!(*dtype, T => {
                let (converted, _) = convert_numbers::<T>("X", &as_values, T::default())?;
                docs.insert(path.clone(), arrays.append(&path, start, converted, *n_vars)?);
            });
        }
        (
            XState::Csr {
                data,
                indices: index_type,
                indptr: indptr_type,
                n_vars,
                nnz,
            },
            Some(XRows::Csr {
                indptr,
                indices,
                data: values,
            }),
        ) => {
            let k = indptr.len() as u64 - 1;
            let as_values = Values::Float(values.iter().map(|v| Some(*v)).collect());
            let data_path = format!("{base}/X/data");
            with_prim!(*data, T => {
                let (converted, _) = convert_numbers::<T>("X data", &as_values, T::default())?;
                docs.insert(data_path.clone(), arrays.append(&data_path, *nnz, converted, 1)?);
            });
            let index_values = Values::Int(indices.iter().map(|v| Some(*v)).collect());
            let indices_path = format!("{base}/X/indices");
            with_prim!(*index_type, T => {
                let (converted, _) = convert_numbers::<T>("X indices", &index_values, T::default())?;
                docs.insert(indices_path.clone(), arrays.append(&indices_path, *nnz, converted, 1)?);
            });
            let offsets = Values::Int(indptr[1..].iter().map(|p| Some(*nnz as i64 + *p)).collect());
            let indptr_path = format!("{base}/X/indptr");
            with_prim!(*indptr_type, T => {
                let (converted, _) = convert_numbers::<T>("X indptr", &offsets, T::default())
                    .map_err(|_| input(format!("X indptr of this table is {} and cannot count past {} stored values", indptr_type.name(), nnz)))?;
                docs.insert(indptr_path.clone(), arrays.append(&indptr_path, start + 1, converted, 1)?);
            });
            *nnz += values.len() as u64;
            let group_path = format!("{base}/X");
            let mut group = docs
                .get(&group_path)
                .cloned()
                .map_or_else(|| arrays.metadata(&group_path), Ok)?;
            group["attributes"]["shape"] = json!([start + k, *n_vars]);
            docs.insert(group_path, group);
        }
        _ => {}
    }
    Ok(())
}

/// The metadata of a 1-d string array holding the regions (replacing a 0-d scalar).
pub fn region_list_attrs() -> Value {
    string_array_attrs()
}
