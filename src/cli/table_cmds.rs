//! The table command:
//!
//! ```text
//! spatialzarr append-rows DATASET TABLE --csv FILE [--x-npy FILE] [--var-names a,b,...]
//!     [--region-key region] [--instance-key instance_id] [--key IDEMPOTENCY_KEY] [--json]
//! ```
//!
//! Appends the rows of a CSV file (with a header row) to a table in one commit,
//! creating the table on the first append. Prints one line, or with `--json`
//! `{"table":T,"start":S,"stop":E,"key":K|null,"applied":true|false,"generation":G}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use arrow_array::RecordBatch;
use arrow_schema::DataType;
use ndarray::ArrayD;
use spatialzarr::table::{AppendOutcome, Prim, RowBatch, TableInfo, TableSpec, XRows, XSpec};
use spatialzarr::{Dataset, ElementName, Error, WriteTxn};

use super::apply_cmd::PendingOp;
use super::csv_input::{Forced, read_csv_rows};
use super::npy::{self, NpyArray};
use super::{WriteOptions, counted};

/// The region key of a new table when `--region-key` is not given.
const DEFAULT_REGION_KEY: &str = "region";
/// The instance key of a new table when `--instance-key` is not given.
const DEFAULT_INSTANCE_KEY: &str = "instance_id";

/// Arguments of `spatialzarr append-rows`.
#[derive(Debug, clap::Args)]
pub struct AppendRowsArgs {
    /// The dataset (it must exist; create it with `spatialzarr init`).
    dataset: PathBuf,
    /// The table; created by the first append.
    table: String,
    /// The rows: a CSV file with a header row. Column types are inferred (int64,
    /// float64, bool, else string); empty fields are missing values. When the table
    /// exists, its columns' types are used instead.
    #[arg(long, value_name = "FILE")]
    csv: PathBuf,
    /// The X rows: a 2-d .npy file (float32/float64, or integers) with one row per
    /// CSV row. A new table gets a dense X of the file's float type (float64 for
    /// integers); without it, a new table has no X.
    #[arg(long = "x-npy", value_name = "FILE")]
    x_npy: Option<PathBuf>,
    /// Names of X's variables, comma-separated, when the table is created
    /// (default 0,1,...,n-1).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    var_names: Option<Vec<String>>,
    /// The column naming each row's region, stored as a categorical (only used
    /// when the table is created; default `region`).
    #[arg(long, value_name = "COLUMN")]
    region_key: Option<String>,
    /// The column naming each row's instance (only used when the table is
    /// created; default `instance_id`).
    #[arg(long, value_name = "COLUMN")]
    instance_key: Option<String>,
    /// Idempotency key: an append carrying a key already committed to this table
    /// with the same rows changes nothing and reports the first append's rows; with
    /// other rows it is refused (exit status 1). A CSV of a header row only records
    /// the key and appends nothing.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
}

/// A dense X read from a `.npy` file.
struct XMatrix {
    rows: usize,
    cols: usize,
    /// Row-major values.
    values: Vec<f64>,
    /// The element type of a new table's X.
    dtype: Prim,
}

/// `append-rows`: appends the CSV's rows (and X rows) to the table in one commit.
pub fn append_rows(args: AppendRowsArgs) -> anyhow::Result<ExitCode> {
    if !args.dataset.exists() {
        bail!(
            "dataset {} does not exist: append-rows adds to an existing dataset; create it first with `spatialzarr init {}`",
            args.dataset.display(),
            args.dataset.display()
        );
    }
    let dataset = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let input = read_rows(&args, &dataset)?;
    let (outcome, commit) = if input.existing.is_some() {
        // Into an existing table: one request, which joins the commit of whoever
        // holds the write lock (group commit) when it is busy.
        let rows = RowBatch {
            obs: input.obs,
            x: input.x.map(|x| XRows::Dense(x.values)),
        };
        dataset
            .append_rows_committed(&args.table, &rows, Some(&input.spec), args.key.as_deref())
            .with_context(|| append_context(&args))?
    } else {
        // A new table's column types are decided under the lock (another process
        // may create the table meanwhile).
        let mut txn = dataset.write()?;
        let outcome = append_in(&mut txn, &dataset, &args, input)?;
        (outcome, txn.commit()?)
    };

    super::print_notices(&commit);
    super::print_append_outcome(&outcome, "rows", commit.generation, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The rows of an append, read and checked before the write lock is taken.
pub(super) struct RowsInput {
    obs: RecordBatch,
    x: Option<XMatrix>,
    spec: TableSpec,
    /// The table as it was when the CSV was read (`None`: it did not exist).
    existing: Option<TableInfo>,
    /// The column types the CSV was read with.
    types: BTreeMap<String, Forced>,
}

/// `append-rows` as an operation of a plan: the CSV and X are read now.
pub(super) fn prepare_append_rows(
    args: AppendRowsArgs,
    dataset: &Dataset,
) -> anyhow::Result<PendingOp> {
    let input = read_rows(&args, dataset)?;
    Ok(PendingOp::AppendRows {
        args,
        input: Box::new(input),
    })
}

/// Reads and checks the rows of `append-rows`, with the column types of the table as
/// it is now, without the write lock.
fn read_rows(args: &AppendRowsArgs, dataset: &Dataset) -> anyhow::Result<RowsInput> {
    ElementName::new(&args.table)?;
    if args.var_names.is_some() && args.x_npy.is_none() {
        bail!("--var-names names the columns of X: it needs --x-npy");
    }
    let x = args.x_npy.as_deref().map(read_x).transpose()?;
    let var_names = match (&x, &args.var_names) {
        (None, _) => Vec::new(),
        (Some(x), None) => (0..x.cols).map(|i| i.to_string()).collect(),
        (Some(x), Some(names)) => {
            let names: Vec<String> = names.iter().map(|n| n.trim().to_owned()).collect();
            if names.len() != x.cols {
                bail!(
                    "--var-names gives {} names, but {} has {} columns",
                    names.len(),
                    shown(args.x_npy.as_deref()),
                    x.cols
                );
            }
            names
        }
    };
    let spec = TableSpec {
        region_key: args
            .region_key
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION_KEY.into()),
        instance_key: args
            .instance_key
            .clone()
            .unwrap_or_else(|| DEFAULT_INSTANCE_KEY.into()),
        x: match &x {
            None => XSpec::None,
            Some(x) => XSpec::Dense {
                dtype: x.dtype,
                var_names,
            },
        },
    };

    // Read the CSV before taking the write lock, with the column types of the table
    // as it is now. A table that did not exist may have been created meanwhile by
    // another process: look again under the lock, and read the CSV again if the
    // table's types differ. (An existing table's types do not change; should it be
    // replaced meanwhile, the library refuses rows that do not fit it.)
    let existing = table_info(dataset, &args.table)?;
    let types = column_types(existing.as_ref(), &spec);
    let obs = read_csv_rows(&args.csv, &types)?;
    check_rows(args, &obs, x.as_ref(), existing.as_ref(), &spec)?;
    Ok(RowsInput {
        obs,
        x,
        spec,
        existing,
        types,
    })
}

/// Under the write lock of `txn`: appends the rows read by [`read_rows`]. A table
/// that did not exist may have been created meanwhile by another process: it is
/// looked at again, and the CSV read again if the table's types differ. (An existing
/// table's types do not change; should it be replaced meanwhile, the library refuses
/// rows that do not fit it.)
pub(super) fn append_in(
    txn: &mut WriteTxn<'_>,
    dataset: &Dataset,
    args: &AppendRowsArgs,
    input: RowsInput,
) -> anyhow::Result<AppendOutcome> {
    let RowsInput {
        mut obs,
        x,
        spec,
        existing,
        types,
    } = input;
    if existing.is_none()
        && let Some(created) = table_info(dataset, &args.table)?
    {
        let types_now = column_types(Some(&created), &spec);
        if types_now != types {
            obs = read_csv_rows(&args.csv, &types_now)?;
        }
        check_rows(args, &obs, x.as_ref(), Some(&created), &spec)?;
    }
    let rows = RowBatch {
        obs,
        x: x.map(|x| XRows::Dense(x.values)),
    };
    txn.append_rows(&args.table, &rows, Some(&spec), args.key.as_deref())
        .with_context(|| append_context(args))
}

/// What a failed append says first.
fn append_context(args: &AppendRowsArgs) -> String {
    format!(
        "cannot append the rows of {} to table {}",
        args.csv.display(),
        args.table
    )
}

fn shown(path: Option<&Path>) -> String {
    path.map_or_else(String::new, |p| p.display().to_string())
}

/// The table's description, or `None` when there is no element of that name.
fn table_info(dataset: &Dataset, table: &str) -> anyhow::Result<Option<TableInfo>> {
    match dataset.table_info_now(table) {
        Ok(info) => Ok(Some(info)),
        Err(Error::NoSuchElement { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How the CSV columns must be read so that every append brings the types the
/// table stores: for an existing table, its string and categorical columns as
/// strings (even when the values look like numbers), and its empty columns as their
/// stored type; for a new table, the region key column as strings.
fn column_types(existing: Option<&TableInfo>, spec: &TableSpec) -> BTreeMap<String, Forced> {
    let Some(info) = existing else {
        return BTreeMap::from([(spec.region_key.clone(), Forced::Always(DataType::Utf8))]);
    };
    info.columns
        .iter()
        .zip(&info.column_kinds)
        .filter_map(|(name, kind)| {
            let base = kind.strip_prefix("nullable ").unwrap_or(kind);
            let forced = match base {
                "string" | "categorical" => Forced::Always(DataType::Utf8),
                "bool" => Forced::IfEmpty(DataType::Boolean),
                "float32" | "float64" => Forced::IfEmpty(DataType::Float64),
                "int8" | "int16" | "int32" | "int64" => Forced::IfEmpty(DataType::Int64),
                "uint8" | "uint16" | "uint32" | "uint64" => Forced::IfEmpty(DataType::UInt64),
                _ => return None,
            };
            Some((name.clone(), forced))
        })
        .collect()
}

/// Checks what the library would refuse less clearly: the key columns are in the
/// CSV, the keys given match the table's, and X has one row per CSV row and the
/// table's width.
fn check_rows(
    args: &AppendRowsArgs,
    obs: &RecordBatch,
    x: Option<&XMatrix>,
    existing: Option<&TableInfo>,
    spec: &TableSpec,
) -> anyhow::Result<()> {
    let csv = args.csv.display();
    let (region_key, instance_key) = match existing {
        None => (spec.region_key.as_str(), spec.instance_key.as_str()),
        Some(info) => {
            for (option, given, actual) in [
                ("--region-key", &args.region_key, &info.region_key),
                ("--instance-key", &args.instance_key, &info.instance_key),
            ] {
                if let Some(given) = given
                    && given != actual
                {
                    bail!(
                        "table {} exists with {option} {actual:?}, not {given:?} (the keys are chosen when the table is created)",
                        args.table
                    );
                }
            }
            (info.region_key.as_str(), info.instance_key.as_str())
        }
    };
    let schema = obs.schema();
    for (what, column) in [("region", region_key), ("instance", instance_key)] {
        if schema.field_with_name(column).is_err() {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            bail!(
                "{csv} has no column {column:?}, the table's {what} key (its columns: {})",
                names.join(", ")
            );
        }
    }
    if let Some(x) = x {
        let npy_file = shown(args.x_npy.as_deref());
        if x.rows != obs.num_rows() {
            bail!(
                "{npy_file} has {}, but {csv} has {}: X needs one row per CSV row",
                counted(x.rows, "row"),
                counted(obs.num_rows(), "row")
            );
        }
        if let Some(info) = existing
            && info.n_vars > 0
            && x.cols as u64 != info.n_vars
        {
            bail!(
                "{npy_file} has {}, but table {} has {}",
                counted(x.cols, "column"),
                args.table,
                counted(info.n_vars as usize, "variable")
            );
        }
    }
    Ok(())
}

/// Reads a 2-d `.npy` file as dense X rows.
fn read_x(path: &Path) -> anyhow::Result<XMatrix> {
    fn flat<T: Copy>(a: &ArrayD<T>, f: impl Fn(T) -> f64) -> (Vec<usize>, Vec<f64>) {
        // Logical (row-major) order, whatever the file's memory order.
        (a.shape().to_vec(), a.iter().map(|&v| f(v)).collect())
    }
    let array = npy::read(path)?;
    let dtype = if matches!(array, NpyArray::F32(_)) {
        Prim::F32
    } else {
        Prim::F64
    };
    let (shape, values) = match &array {
        NpyArray::U8(a) => flat(a, f64::from),
        NpyArray::U16(a) => flat(a, f64::from),
        NpyArray::U32(a) => flat(a, f64::from),
        NpyArray::U64(a) => flat(a, |v| v as f64),
        NpyArray::I8(a) => flat(a, f64::from),
        NpyArray::I16(a) => flat(a, f64::from),
        NpyArray::I32(a) => flat(a, f64::from),
        NpyArray::I64(a) => flat(a, |v| v as f64),
        NpyArray::F32(a) => flat(a, f64::from),
        NpyArray::F64(a) => flat(a, |v| v),
    };
    let &[rows, cols] = shape.as_slice() else {
        bail!(
            "{} holds a {}-d array of shape {shape:?}: X must be 2-d (one row per CSV row, one column per variable)",
            path.display(),
            shape.len()
        );
    };
    if cols == 0 {
        bail!(
            "{} has no columns: X needs at least one variable",
            path.display()
        );
    }
    Ok(XMatrix {
        rows,
        cols,
        values,
        dtype,
    })
}
