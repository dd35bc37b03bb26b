//! Reading CSV input files of the commands (`append-rows`, `add-points`,
//! `append-points`, `add-shapes`): one header row naming the columns, then the rows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Seek;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};

use super::csv_types;
use arrow_array::RecordBatch;
use arrow_csv::ReaderBuilder;
use arrow_csv::reader::Format;
use arrow_schema::{DataType, Field, Schema};

/// How a CSV column must be read, whatever its values look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Forced {
    /// Always as this type (the strings of string and categorical columns).
    Always(DataType),
    /// As this type when the CSV column is empty (all missing), which would
    /// otherwise be read as strings; else as inferred (the library converts numbers).
    IfEmpty(DataType),
}

/// The type a new column is read as: int64, float64, bool, or else string.
fn simple_type(inferred: &DataType) -> DataType {
    match inferred {
        DataType::Int64 | DataType::Float64 | DataType::Boolean => inferred.clone(),
        _ => DataType::Utf8,
    }
}

/// Reads the whole CSV file at `path` (header row first) as one batch; columns named
/// in `types` are read as they say, the others as their inferred type. A file with a
/// header row only is refused (a new element needs rows).
pub(super) fn read_csv(
    path: &Path,
    types: &BTreeMap<String, Forced>,
) -> anyhow::Result<RecordBatch> {
    let batch = read_csv_rows(path, types)?;
    if batch.num_rows() == 0 {
        bail!("{} has no rows (only a header row)", path.display());
    }
    Ok(batch)
}

/// [`read_csv`], also accepting a file with a header row only (an append of no rows,
/// which records its idempotency key): its columns then have the types `types` give,
/// as if they were empty.
pub(super) fn read_csv_rows(
    path: &Path,
    types: &BTreeMap<String, Forced>,
) -> anyhow::Result<RecordBatch> {
    let shown = path.display();
    let mut file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let format = Format::default().with_header(true);
    // The header row alone first (no field is classified: nothing compiles
    // arrow-csv's patterns).
    let (header, _) = format
        .infer_schema(&mut file, Some(0))
        .map_err(|e| anyhow!("cannot read {shown}: {e}"))?;
    let names: Vec<&String> = header.fields().iter().map(|f| f.name()).collect();
    if names.is_empty() || names.iter().all(|n| n.is_empty()) {
        bail!("{shown} is empty: it needs a header row naming the columns, then the rows");
    }
    if let Some(at) = names.iter().position(|n| n.trim().is_empty()) {
        bail!("{shown}: column {} of the header row has no name", at + 1);
    }
    let mut seen = BTreeSet::new();
    if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
        bail!("{shown}: the header row names column {twice:?} twice");
    }
    let (inferred, n_rows) = match csv_types::infer_types(path, &format, &names) {
        Some(found) => found,
        None => {
            file.rewind()
                .with_context(|| format!("cannot read {shown}"))?;
            let (schema, n_rows) = format
                .infer_schema(&mut file, None)
                .map_err(|e| anyhow!("cannot read {shown}: {e}"))?;
            let types = schema.fields().iter().map(|f| f.data_type().clone());
            (types.collect(), n_rows)
        }
    };
    let fields: Vec<Field> = names
        .iter()
        .zip(&inferred)
        .map(|(name, inferred)| {
            let arrow = match (types.get(name.as_str()), inferred) {
                (Some(Forced::Always(t)), _) | (Some(Forced::IfEmpty(t)), DataType::Null) => {
                    t.clone()
                }
                (Some(Forced::IfEmpty(t)), _) if n_rows == 0 => t.clone(),
                (_, inferred) => simple_type(inferred),
            };
            Field::new(name.as_str(), arrow, true)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    if n_rows == 0 {
        return Ok(RecordBatch::new_empty(schema));
    }
    file.rewind()
        .with_context(|| format!("cannot read {shown}"))?;
    let reader = ReaderBuilder::new(schema)
        .with_format(format)
        .with_batch_size(n_rows)
        .build(file)
        .map_err(|e| anyhow!("cannot read {shown}: {e}"))?;
    let mut batches = reader
        .collect::<Result<Vec<RecordBatch>, _>>()
        .map_err(|e| anyhow!("cannot read {shown}: {e}"))?;
    if batches.len() != 1 || batches[0].num_rows() != n_rows {
        bail!("{shown} changed while it was being read");
    }
    Ok(batches.remove(0))
}

/// How to read a CSV column that must end up stored as `stored`: strings (and
/// categoricals) always as strings, numbers and booleans as inferred unless the
/// column is empty. `None` for types a CSV cannot hold.
pub(super) fn forced_for(stored: &DataType) -> Option<Forced> {
    Some(match stored {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Dictionary(_, _) => {
            Forced::Always(DataType::Utf8)
        }
        DataType::Boolean => Forced::IfEmpty(DataType::Boolean),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            Forced::IfEmpty(DataType::Float64)
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            Forced::IfEmpty(DataType::Int64)
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            Forced::IfEmpty(DataType::UInt64)
        }
        _ => return None,
    })
}
