//! Appending rows: [`plan`] checks and converts everything and computes the new
//! metadata documents (collected in a [`TablePatch`] for the commit to publish)
//! without writing anything; [`write`] then stores the new rows' chunks. A refused
//! append therefore changes no file.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{Value, json};

use super::arrays::{Arrays, TypedValues, string_array_attrs};
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
    /// Arrays replaced by the commit with a staged copy (wider categorical codes):
    /// by array path, the copy's path. Rows for them are written into the copy.
    pub redirects: BTreeMap<String, String>,
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
            redirects: BTreeMap::new(),
        }
    }
}

/// One array write of an append: `values` become rows `start..` of the array at
/// `path` (rows of `row_len` values for a 2-d array).
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayWrite {
    /// The array, relative to the root of the [`Arrays`] it is written through.
    pub path: String,
    /// The first row written.
    pub start: u64,
    /// The values, converted to the array's element type.
    pub values: TypedValues,
    /// Values per row (1 for a 1-d array).
    pub row_len: u64,
}

impl ArrayWrite {
    fn rows(path: String, start: u64, values: TypedValues) -> Self {
        Self {
            path,
            start,
            values,
            row_len: 1,
        }
    }

    /// The array's length once written.
    fn end(&self) -> u64 {
        self.start + self.values.len() as u64 / self.row_len.max(1)
    }
}

/// An append checked and converted in full, ready to be written.
#[derive(Debug, Clone, Default)]
pub struct PlannedAppend {
    /// The rows it appends.
    pub range: Range<u64>,
    /// What it writes, in order.
    pub writes: Vec<ArrayWrite>,
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

/// Converts numbers to the stored type `prim`; returns them with their mask (true =
/// missing).
fn numbers(name: &str, prim: Prim, values: &Values) -> Result<(TypedValues, Vec<bool>)> {
    with_prim!(prim, T => {
        let (converted, mask) = convert_numbers::<T>(name, values, missing_value::<T>(prim))?;
        Ok((TypedValues::from(converted), mask))
    })
}

/// Checks and converts every column of `rows` against `state`, extending categories
/// and regions in `state`; returns the writes of the obs columns (rows from
/// `state.n_obs`, category lists from 0). Writes nothing.
/// The writes of a string column's rows at `start`: its values, and for a nullable
/// one its mask (true where missing).
fn push_strings(
    writes: &mut Vec<ArrayWrite>,
    base: &str,
    name: &str,
    kind: &ColumnKind,
    start: u64,
    strings: Vec<String>,
    mask: Vec<bool>,
) {
    writes.push(ArrayWrite::rows(
        format!("{base}/{}", string_values_path(name, kind)),
        start,
        TypedValues::Str(strings),
    ));
    if *kind == ColumnKind::NullableStr {
        writes.push(ArrayWrite::rows(
            format!("{base}/obs/{name}/mask"),
            start,
            TypedValues::Bool(mask),
        ));
    }
}

fn prepare(state: &mut TableState, base: &str, rows: &RowBatch) -> Result<Vec<ArrayWrite>> {
    let batch = &rows.obs;
    let k = batch.num_rows();
    let start = state.n_obs;
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
    let mut writes = Vec::new();
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
        match kind {
            ColumnKind::Plain(prim) => {
                if values.has_nulls() && !matches!(prim, Prim::F32 | Prim::F64) {
                    return Err(input(format!(
                        "column {name:?} ({}) cannot hold missing values; the table created it without a mask",
                        prim.name()
                    )));
                }
                let (converted, _) = numbers(&name, prim, &values)?;
                writes.push(ArrayWrite::rows(column, start, converted));
            }
            ColumnKind::Nullable(prim) => {
                let (converted, mask) = numbers(&name, prim, &values)?;
                writes.push(ArrayWrite::rows(
                    format!("{column}/values"),
                    start,
                    converted,
                ));
                writes.push(ArrayWrite::rows(
                    format!("{column}/mask"),
                    start,
                    TypedValues::Bool(mask),
                ));
            }
            ColumnKind::Str | ColumnKind::NullableStr => {
                let strings = values.into_strings(&name)?;
                let mask: Vec<bool> = strings.iter().map(Option::is_none).collect();
                if kind == ColumnKind::Str && mask.iter().any(|m| *m) {
                    return Err(input(format!(
                        "column {name:?} cannot hold missing strings"
                    )));
                }
                let strings: Vec<String> =
                    strings.into_iter().map(Option::unwrap_or_default).collect();
                push_strings(&mut writes, base, &name, &kind, start, strings, mask);
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
                let codes: Vec<Option<i64>> = strings
                    .iter()
                    .map(|s| match s {
                        None => Some(-1),
                        Some(s) => Some(*index.entry(s.clone()).or_insert_with(|| {
                            categories.push(s.clone());
                            categories.len() as i64 - 1
                        })),
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
                let all = categories.clone();
                let (converted, _) = numbers(&name, prim, &Values::Int(codes))?;
                writes.push(ArrayWrite::rows(
                    format!("{column}/codes"),
                    start,
                    converted,
                ));
                if grew {
                    writes.push(ArrayWrite::rows(
                        format!("{column}/categories"),
                        0,
                        TypedValues::Str(all),
                    ));
                }
            }
        }
    }
    if k == 0 {
        return Ok(writes);
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
    Ok(writes)
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

/// Plans the append of `rows` to the table of `patch`: checks and converts every
/// value, and records the new metadata documents in `patch`, reading through
/// `arrays` (rooted at the dataset or at a staging folder) but writing nothing. On
/// error `patch` is unchanged. The returned writes are stored by [`write`], before
/// the commit publishes the documents; rows written beyond the committed shapes stay
/// invisible until then. Zero rows plan no write and leave `patch` as it is.
pub fn plan(arrays: &Arrays, patch: &mut TablePatch, rows: &RowBatch) -> Result<PlannedAppend> {
    let mut state = patch.state.clone();
    let base = patch.rel.clone();
    let k = rows.obs.num_rows() as u64;
    let start = state.n_obs;
    // Zero rows need no X rows (there is nothing to bring), but bring none of a
    // table without X.
    if k > 0 || rows.x.is_some() {
        check_x(&state, rows)?;
    }
    let mut writes = prepare(&mut state, &base, rows)?;
    if k == 0 {
        return Ok(PlannedAppend {
            range: start..start,
            writes: Vec::new(),
        });
    }
    let end = start.checked_add(k).ok_or_else(|| Error::Corrupt {
        path: std::path::PathBuf::from(&base),
        reason: format!("the table claims {start} rows; {k} more do not fit in 64 bits"),
    })?;
    // The obs index: row numbers as strings.
    let (index_name, index_kind) = state.index.clone();
    let names: Vec<String> = (start..end).map(|i| i.to_string()).collect();
    let present = vec![false; names.len()];
    push_strings(
        &mut writes,
        &base,
        &index_name,
        &index_kind,
        start,
        names,
        present,
    );
    let x_group = prepare_x(&mut state, &base, rows, start, &mut writes)?;
    let mut docs = patch.docs.clone();
    let group_doc = |docs: &BTreeMap<String, Value>, path: &str| -> Result<Value> {
        docs.get(path)
            .cloned()
            .map_or_else(|| arrays.metadata(path), Ok)
    };
    if let Some(shape) = x_group {
        let group_path = format!("{base}/X");
        let mut group = group_doc(&docs, &group_path)?;
        group["attributes"]["shape"] = json!(shape);
        docs.insert(group_path, group);
    }
    // Regions: the declared list and the table's attribute follow obs.
    let mut region_becomes_list = patch.region_becomes_list;
    if state.regions != patch.state.regions {
        let group_path = base.clone();
        let mut group = group_doc(&docs, &group_path)?;
        group["attributes"]["region"] = json!(state.regions);
        docs.insert(group_path, group);
        if !state.region_is_scalar {
            writes.push(ArrayWrite::rows(
                format!("{base}/uns/spatialdata_attrs/region"),
                0,
                TypedValues::Str(state.regions.clone()),
            ));
        } else {
            region_becomes_list = true;
        }
    }
    for write in &mut writes {
        let end = write.end();
        let node = write.path.clone();
        if let Some(copy) = patch.redirects.get(&node) {
            write.path = copy.clone();
        }
        // The document of the node as the commit leaves it (the copy's, once swapped in).
        docs.insert(node, arrays.grown(&write.path, end)?);
    }
    state.n_obs = end;
    patch.state = state;
    patch.docs = docs;
    patch.region_becomes_list = region_becomes_list;
    Ok(PlannedAppend {
        range: start..end,
        writes,
    })
}

/// Merges the writes of several appends so that each array is written once per
/// run of adjoining rows: a write whose rows start where the last write to the same
/// array ended joins it, and a write that starts at the same row and reaches at
/// least as far replaces it (the declared regions, rewritten whole). Writes to one
/// array keep their order; each array's partly filled chunk is then encoded and
/// stored once per commit instead of once per append.
pub fn coalesce(writes: impl IntoIterator<Item = ArrayWrite>) -> Vec<ArrayWrite> {
    let mut merged: Vec<ArrayWrite> = Vec::new();
    // The position in `merged` of the last write to each array.
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for mut write in writes {
        if let Some(previous) = last.get(&write.path).map(|&at| &mut merged[at])
            && previous.row_len == write.row_len
        {
            if write.start == previous.start && write.end() >= previous.end() {
                *previous = write;
                continue;
            }
            if write.start == previous.end() {
                // Values of another type come back, to be written on their own.
                match previous.values.extend_with(write.values) {
                    Ok(()) => continue,
                    Err(values) => write.values = values,
                }
            }
        }
        last.insert(write.path.clone(), merged.len());
        merged.push(write);
    }
    merged
}

/// Stores the planned writes of an append through `arrays`, in order.
pub fn write(arrays: &Arrays, writes: Vec<ArrayWrite>) -> Result<()> {
    for w in writes {
        arrays.write_rows(&w.path, w.start, w.values, w.row_len)?;
    }
    Ok(())
}

/// Converts the X rows and adds their writes; for CSR, returns the new `shape`
/// attribute of the X group.
fn prepare_x(
    state: &mut TableState,
    base: &str,
    rows: &RowBatch,
    start: u64,
    writes: &mut Vec<ArrayWrite>,
) -> Result<Option<[u64; 2]>> {
    match (&mut state.x, &rows.x) {
        (XState::Dense { dtype, n_vars }, Some(XRows::Dense(values))) => {
            let as_values = Values::Float(values.iter().map(|v| Some(*v)).collect());
            let converted = with_prim!(*dtype, T => {
                TypedValues::from(convert_numbers::<T>("X", &as_values, T::default())?.0)
            });
            writes.push(ArrayWrite {
                path: format!("{base}/X"),
                start,
                values: converted,
                row_len: *n_vars,
            });
            Ok(None)
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
            let converted = with_prim!(*data, T => {
                TypedValues::from(convert_numbers::<T>("X data", &as_values, T::default())?.0)
            });
            writes.push(ArrayWrite::rows(format!("{base}/X/data"), *nnz, converted));
            let index_values = Values::Int(indices.iter().map(|v| Some(*v)).collect());
            let converted = with_prim!(*index_type, T => {
                TypedValues::from(convert_numbers::<T>("X indices", &index_values, T::default())?.0)
            });
            writes.push(ArrayWrite::rows(
                format!("{base}/X/indices"),
                *nnz,
                converted,
            ));
            let offsets = Values::Int(indptr[1..].iter().map(|p| Some(*nnz as i64 + *p)).collect());
            let converted = with_prim!(*indptr_type, T => {
                TypedValues::from(convert_numbers::<T>("X indptr", &offsets, T::default())
                    .map_err(|_| input(format!("X indptr of this table is {} and cannot count past {} stored values", indptr_type.name(), nnz)))?.0)
            });
            writes.push(ArrayWrite::rows(
                format!("{base}/X/indptr"),
                start + 1,
                converted,
            ));
            *nnz += values.len() as u64;
            Ok(Some([start + k, *n_vars]))
        }
        _ => Ok(None),
    }
}

/// The metadata of a 1-d string array holding the regions (replacing a 0-d scalar).
pub fn region_list_attrs() -> Value {
    string_array_attrs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(path: &str, start: u64, values: TypedValues) -> ArrayWrite {
        ArrayWrite::rows(path.into(), start, values)
    }

    #[test]
    fn adjoining_rows_of_one_array_become_one_write() {
        let merged = coalesce([
            w("t/obs/a", 10, vec![1i64, 2].into()),
            w("t/obs/b", 10, vec![0.5f64, 0.25].into()),
            w("t/obs/a", 12, vec![3i64].into()),
            w("t/obs/b", 12, vec![0.125f64].into()),
        ]);
        assert_eq!(
            merged,
            vec![
                w("t/obs/a", 10, vec![1i64, 2, 3].into()),
                w("t/obs/b", 10, vec![0.5f64, 0.25, 0.125].into()),
            ]
        );
    }

    #[test]
    fn a_whole_rewrite_replaces_the_earlier_one() {
        let region =
            |names: &[&str]| TypedValues::Str(names.iter().map(|s| s.to_string()).collect());
        let merged = coalesce([
            w("t/region", 0, region(&["a", "b"])),
            w("t/region", 0, region(&["a", "b", "c"])),
        ]);
        assert_eq!(merged, vec![w("t/region", 0, region(&["a", "b", "c"]))]);
    }

    #[test]
    fn gaps_other_types_and_row_lengths_stay_separate_in_order() {
        let dense = |start, values: Vec<f32>| ArrayWrite {
            row_len: 2,
            ..w("t/X", start, values.into())
        };
        let input = vec![
            w("t/obs/a", 0, vec![1i64].into()),
            w("t/obs/a", 5, vec![2i64].into()),
            w("t/obs/a", 6, vec![3i32].into()),
            dense(0, vec![1.0, 2.0]),
            w("t/X", 1, vec![3.0f32].into()),
        ];
        assert_eq!(coalesce(input.clone()), input);
        // Dense rows of the same width do join.
        let merged = coalesce([dense(0, vec![1.0, 2.0]), dense(1, vec![3.0, 4.0])]);
        assert_eq!(merged, vec![dense(0, vec![1.0, 2.0, 3.0, 4.0])]);
    }
}
