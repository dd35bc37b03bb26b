//! The consistency check of a table.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::append::with_prim;
use super::arrays::Arrays;
use super::columns::{ColumnKind, Prim};
use super::state::{TableState, XState, length_at, string_values_path};
use crate::storage::Publisher;

fn read_i64(arrays: &Arrays, path: &str, prim: Prim, len: u64) -> Result<Vec<i64>, String> {
    with_prim!(prim, T => {
        let values: Vec<T> = arrays.read(path, 0..len).map_err(|e| e.to_string())?;
        #[allow(clippy::unnecessary_cast)]
        Ok(values.into_iter().map(|v| v as i64).collect())
    })
}

/// Checks the table in `dir`: every obs column (and mask) and X have `n_obs` rows,
/// categorical codes are in range, the declared regions equal the regions present,
/// and a CSR X is well formed. With `deep`, also decodes every obs column.
pub fn check_table(dir: &Path, deep: bool) -> Result<(), String> {
    let arrays = super::arrays_at(dir, &Arc::new(Publisher::new())).map_err(|e| e.to_string())?;
    let state = TableState::load(dir, &arrays).map_err(|e| e.to_string())?;
    let n = state.n_obs;
    let length = |rel: &str| length_at(&dir.join(rel)).map_err(|e| e.to_string());
    let expect = |rel: &str, want: u64| -> Result<(), String> {
        let got = length(rel)?;
        if got != want {
            return Err(format!("{rel} has {got} rows, but the table has {want}"));
        }
        Ok(())
    };
    for (name, kind) in &state.columns {
        let base = format!("obs/{name}");
        match kind {
            ColumnKind::Plain(_) | ColumnKind::Str => expect(&base, n)?,
            ColumnKind::Nullable(_) | ColumnKind::NullableStr => {
                expect(&format!("{base}/values"), n)?;
                expect(&format!("{base}/mask"), n)?;
            }
            ColumnKind::Categorical { codes, .. } => {
                let path = format!("{base}/codes");
                expect(&path, n)?;
                let categories = state.categories.get(name).map_or(0, Vec::len) as i64;
                let values = read_i64(&arrays, &path, *codes, n)?;
                if let Some(bad) = values.iter().find(|&&c| c < -1 || c >= categories) {
                    return Err(format!(
                        "column {name:?} has code {bad}, outside -1..{categories}"
                    ));
                }
                if *name == state.region_key {
                    let cats = &state.categories[name];
                    let present: BTreeSet<&str> = values
                        .iter()
                        .filter(|&&c| c >= 0)
                        .map(|&c| cats[c as usize].as_str())
                        .collect();
                    let declared: BTreeSet<&str> =
                        state.regions.iter().map(String::as_str).collect();
                    if present != declared {
                        return Err(format!(
                            "regions declared {declared:?} differ from regions present {present:?}"
                        ));
                    }
                }
            }
        }
    }
    let (index, index_kind) = &state.index;
    expect(&string_values_path(index, index_kind), n)?;
    match &state.x {
        XState::None => {}
        XState::Dense { .. } => expect("X", n)?,
        XState::Csr {
            indices,
            indptr,
            n_vars,
            nnz,
            ..
        } => {
            expect("X/indptr", n + 1)?;
            expect("X/indices", *nnz)?;
            let ptr = read_i64(&arrays, "X/indptr", *indptr, n + 1)?;
            if ptr.first() != Some(&0) || ptr.windows(2).any(|w| w[1] < w[0]) {
                return Err("X/indptr does not start at 0 or decreases".into());
            }
            if ptr.last().copied() != Some(*nnz as i64) {
                return Err(format!(
                    "X/indptr ends at {:?}, but X/data holds {nnz} values",
                    ptr.last()
                ));
            }
            let idx = read_i64(&arrays, "X/indices", *indices, *nnz)?;
            if let Some(bad) = idx.iter().find(|&&i| i < 0 || i as u64 >= *n_vars) {
                return Err(format!("X/indices holds {bad}, outside 0..{n_vars}"));
            }
        }
    }
    super::element_doc::verify(dir)?;
    if deep {
        super::read_rows(&arrays, "", &state, 0..n).map_err(|e| e.to_string())?;
        super::read_x_rows(&arrays, "", &state, 0..n).map_err(|e| e.to_string())?;
    }
    Ok(())
}
