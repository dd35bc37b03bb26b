//! Creating a table: an AnnData group in the SpatialData layout, built in a staging
//! folder with its first rows, then committed like any element.

use serde_json::{Value, json};

use super::arrays::{
    Arrays, LIST_CHUNK, NNZ_CHUNK, ROW_CHUNK, array_attrs, group_doc, string_array_attrs,
};
use super::columns::{ColumnKind, Prim};
use super::{RowBatch, TableSpec, XSpec};
use crate::error::{Error, Result};
use crate::storage::Publisher;

fn dict_group() -> Value {
    group_doc(json!({"encoding-type": "dict", "encoding-version": "0.1.0"}))
}

fn write_doc(publisher: &Publisher, arrays: &Arrays, path: &str, doc: &Value) -> Result<()> {
    let dir = arrays.root.join(path);
    publisher.create_dir_all(&dir)?;
    publisher.write_deferred(
        &dir.join("zarr.json"),
        &serde_json::to_vec_pretty(doc).expect("json"),
    )
}

/// Rows per chunk of a dense X with `n_vars` columns (about 1 MiB per chunk).
fn x_rows_per_chunk(n_vars: u64, item: u64) -> u64 {
    ((1 << 20) / (n_vars.max(1) * item)).clamp(16, ROW_CHUNK)
}

/// Creates the empty groups and arrays of a table whose columns are those of `rows`,
/// under the root of `arrays` (a staging folder).
pub fn create_empty(
    arrays: &Arrays,
    publisher: &Publisher,
    spec: &TableSpec,
    rows: &RowBatch,
) -> Result<()> {
    let schema = rows.obs.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    for key in [&spec.region_key, &spec.instance_key] {
        if !names.contains(key) {
            return Err(Error::InvalidInput(format!(
                "the rows have no column {key:?}, which the table uses as a key (columns: {names:?})"
            )));
        }
    }
    for name in &names {
        if name.is_empty()
            || name == "_index"
            || name.contains('/')
            || name.starts_with('.')
            || name.starts_with("__")
        {
            return Err(Error::InvalidInput(format!(
                "{name:?} cannot be a column name"
            )));
        }
    }
    write_doc(
        publisher,
        arrays,
        "",
        &group_doc(json!({
            "encoding-type": "anndata",
            "encoding-version": "0.1.0",
            "spatialdata-encoding-type": "ngff:regions_table",
            "region": [],
            "region_key": spec.region_key,
            "instance_key": spec.instance_key,
            "version": "0.2",
        })),
    )?;
    write_doc(
        publisher,
        arrays,
        "obs",
        &group_doc(json!({
            "_index": "_index",
            "column-order": names,
            "encoding-type": "dataframe",
            "encoding-version": "0.2.0",
        })),
    )?;
    let empty_1d = |path: &str, dtype: &str, attrs: Value, chunk: u64| -> Result<()> {
        match dtype {
            "string" => arrays.create::<String>(path, dtype, vec![0], vec![chunk], attrs, vec![]),
            _ => arrays.create::<u8>(path, dtype, vec![0], vec![chunk], attrs, vec![]),
        }
    };
    empty_1d("obs/_index", "string", string_array_attrs(), ROW_CHUNK)?;
    for (name, array) in names.iter().zip(rows.obs.columns()) {
        let kind = ColumnKind::for_new_column(name, array, *name == spec.region_key)?;
        if *name == spec.instance_key
            && !matches!(kind, ColumnKind::Plain(p) if p != Prim::Bool && p != Prim::F32 && p != Prim::F64)
            && kind != ColumnKind::NullableStr
        {
            return Err(Error::InvalidInput(format!(
                "the instance key column {name:?} must hold integers (or strings) without missing values, not {}",
                kind.describe()
            )));
        }
        let path = format!("obs/{name}");
        match kind {
            ColumnKind::Plain(prim) => empty_1d(&path, prim.name(), array_attrs(), ROW_CHUNK)?,
            ColumnKind::Nullable(prim) => {
                let encoding = if prim == Prim::Bool {
                    "nullable-boolean"
                } else {
                    "nullable-integer"
                };
                write_doc(
                    publisher,
                    arrays,
                    &path,
                    &group_doc(json!({"encoding-type": encoding, "encoding-version": "0.1.0"})),
                )?;
                empty_1d(
                    &format!("{path}/values"),
                    prim.name(),
                    array_attrs(),
                    ROW_CHUNK,
                )?;
                empty_1d(&format!("{path}/mask"), "bool", array_attrs(), ROW_CHUNK)?;
            }
            ColumnKind::Str | ColumnKind::NullableStr => {
                write_doc(
                    publisher,
                    arrays,
                    &path,
                    &group_doc(
                        json!({"encoding-type": "nullable-string-array", "encoding-version": "0.1.0", "na-value": "NaN"}),
                    ),
                )?;
                empty_1d(
                    &format!("{path}/values"),
                    "string",
                    string_array_attrs(),
                    ROW_CHUNK,
                )?;
                empty_1d(&format!("{path}/mask"), "bool", array_attrs(), ROW_CHUNK)?;
            }
            ColumnKind::Categorical { codes, ordered } => {
                write_doc(
                    publisher,
                    arrays,
                    &path,
                    &group_doc(
                        json!({"encoding-type": "categorical", "encoding-version": "0.2.0", "ordered": ordered}),
                    ),
                )?;
                empty_1d(
                    &format!("{path}/codes"),
                    codes.name(),
                    array_attrs(),
                    ROW_CHUNK,
                )?;
                empty_1d(
                    &format!("{path}/categories"),
                    "string",
                    string_array_attrs(),
                    LIST_CHUNK,
                )?;
            }
        }
    }
    let var_names: &[String] = match &spec.x {
        XSpec::None => &[],
        XSpec::Dense { var_names, .. } | XSpec::Csr { var_names, .. } => var_names,
    };
    let n_vars = var_names.len() as u64;
    match &spec.x {
        XSpec::None => {}
        XSpec::Dense { dtype, .. } => {
            let item = if *dtype == Prim::F32 { 4 } else { 8 };
            arrays.create::<u8>(
                "X",
                dtype.name(),
                vec![0, n_vars],
                vec![x_rows_per_chunk(n_vars, item), n_vars.max(1)],
                array_attrs(),
                vec![],
            )?;
        }
        XSpec::Csr { dtype, .. } => {
            write_doc(
                publisher,
                arrays,
                "X",
                &group_doc(
                    json!({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": [0, n_vars]}),
                ),
            )?;
            empty_1d("X/data", dtype.name(), json!({}), NNZ_CHUNK)?;
            empty_1d("X/indices", "int64", json!({}), NNZ_CHUNK)?;
            arrays.create::<i64>(
                "X/indptr",
                "int64",
                vec![1],
                vec![ROW_CHUNK],
                json!({}),
                vec![0],
            )?;
        }
    }
    if let XSpec::Dense { dtype, .. } | XSpec::Csr { dtype, .. } = &spec.x
        && !matches!(dtype, Prim::F32 | Prim::F64)
    {
        return Err(Error::InvalidInput(format!(
            "X must be float32 or float64, not {}",
            dtype.name()
        )));
    }
    write_doc(
        publisher,
        arrays,
        "var",
        &group_doc(
            json!({"_index": "_index", "column-order": [], "encoding-type": "dataframe", "encoding-version": "0.2.0"}),
        ),
    )?;
    arrays.create::<String>(
        "var/_index",
        "string",
        vec![n_vars],
        vec![n_vars.max(1)],
        string_array_attrs(),
        var_names.to_vec(),
    )?;
    for group in [
        "uns",
        "uns/spatialdata_attrs",
        "layers",
        "obsm",
        "obsp",
        "varm",
        "varp",
    ] {
        write_doc(publisher, arrays, group, &dict_group())?;
    }
    let scalar_attrs = json!({"encoding-type": "string", "encoding-version": "0.2.0"});
    arrays.create::<String>(
        "uns/spatialdata_attrs/region",
        "string",
        vec![0],
        vec![LIST_CHUNK],
        string_array_attrs(),
        vec![],
    )?;
    arrays.create::<String>(
        "uns/spatialdata_attrs/region_key",
        "string",
        vec![],
        vec![],
        scalar_attrs.clone(),
        vec![spec.region_key.clone()],
    )?;
    arrays.create::<String>(
        "uns/spatialdata_attrs/instance_key",
        "string",
        vec![],
        vec![],
        scalar_attrs,
        vec![spec.instance_key.clone()],
    )?;
    Ok(())
}
