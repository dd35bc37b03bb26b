//! The points and shapes commands:
//!
//! ```text
//! spatialzarr add-points    DATASET NAME --csv FILE [--feature-key gene] [--instance-key cell_id] [--overwrite] [--json]
//! spatialzarr append-points DATASET NAME --csv FILE [--key IDEMPOTENCY_KEY] [--json]
//! spatialzarr add-shapes    DATASET NAME (--csv FILE | --geojson FILE) [--overwrite] [--json]
//! ```
//!
//! Each prints one line with the generation, or with `--json` one object:
//! `{"added":NAME,"type":"points","n":N,"generation":G}`,
//! `{"added":NAME,"type":"shapes","n":N,"geometry":"circle"|..,"generation":G}`, or
//! `{"table":NAME,"start":S,"stop":E,"key":K|null,"applied":B,"generation":G}`.
//!
//! Every input is read and checked in full before anything is written; a refused
//! input leaves the dataset as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use arrow_array::RecordBatch;
use arrow_schema::DataType;
use spatialzarr::element::shapes::{Shapes, parse_geojson};
use spatialzarr::{Dataset, ElementInfo, ElementKind, ElementName, Error, Transformations};

use serde_json::json;

use super::apply_cmd::PendingOp;
use super::csv_input::{Forced, forced_for, read_csv, read_csv_rows};
use super::{WriteOptions, counted, print_change};

/// Arguments of `spatialzarr add-points`.
#[derive(Debug, clap::Args)]
pub struct AddPointsArgs {
    /// The dataset (it must exist; create it with `spatialzarr init`).
    dataset: PathBuf,
    /// The new points element.
    name: String,
    /// The points: a CSV file with a header row and numeric `x` and `y` columns
    /// (and optionally `z`); other columns are kept (int64, float64, bool, else
    /// string).
    #[arg(long, value_name = "FILE")]
    csv: PathBuf,
    /// A column stored as a categorical and recorded as the element's feature key
    /// (for example the gene of each transcript).
    #[arg(long, value_name = "COLUMN")]
    feature_key: Option<String>,
    /// A column recorded as the element's instance key: which instance (for example
    /// which cell) each point belongs to.
    #[arg(long, value_name = "COLUMN")]
    instance_key: Option<String>,
    /// Replace an element of the same name.
    #[arg(long)]
    overwrite: bool,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
}

/// Arguments of `spatialzarr append-points`.
#[derive(Debug, clap::Args)]
pub struct AppendPointsArgs {
    /// The dataset.
    dataset: PathBuf,
    /// The existing points element.
    name: String,
    /// The new points: a CSV file with a header row and exactly the element's
    /// columns (in any order).
    #[arg(long, value_name = "FILE")]
    csv: PathBuf,
    /// Idempotency key: an append carrying a key already committed to this element
    /// with the same points changes nothing and reports the first append's points;
    /// with other points it is refused (exit status 1). A CSV of a header row only
    /// records the key and appends nothing.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Print the outcome as one JSON object
    /// `{"table":NAME,"start":S,"stop":E,"key":K|null,"applied":true|false,"generation":G}`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
}

/// Arguments of `spatialzarr add-shapes`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["csv", "geojson"]))]
pub struct AddShapesArgs {
    /// The dataset (it must exist; create it with `spatialzarr init`).
    dataset: PathBuf,
    /// The new shapes element.
    name: String,
    /// Circles: a CSV file with a header row and numeric `x`, `y` and `radius`
    /// columns; other columns are kept.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Polygons: a GeoJSON FeatureCollection (or Feature, or array of features) of
    /// Polygon and MultiPolygon geometries.
    #[arg(long, value_name = "FILE")]
    geojson: Option<PathBuf>,
    /// Replace an element of the same name.
    #[arg(long)]
    overwrite: bool,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
}

/// Opens the existing dataset at `path`, with a hint when there is none.
pub(super) fn open_existing(path: &Path, options: &WriteOptions) -> anyhow::Result<Dataset> {
    if !path.exists() {
        bail!(
            "dataset {} does not exist; create it first with `spatialzarr init {}`",
            path.display(),
            path.display()
        );
    }
    Ok(Dataset::open(path, options.dataset_options())?)
}

/// `add-points`: adds (or replaces) a points element from a CSV file.
pub fn add_points(args: AddPointsArgs) -> anyhow::Result<ExitCode> {
    let dataset = open_existing(&args.dataset, &args.options)?;
    let batch = read_points(&args)?;
    let commit = (|| {
        let staged = dataset.stage_points(
            &args.name,
            &batch,
            args.feature_key.as_deref(),
            args.instance_key.as_deref(),
            &Transformations::default(),
        )?;
        let mut txn = dataset.write()?;
        txn.add_staged(staged, args.overwrite)?;
        txn.commit()
    })()
    .with_context(|| add_points_context(&args))?;
    let line = format!(
        "added points {}: {}",
        args.name,
        counted(batch.num_rows(), "point")
    );
    let fields = json!({"added": args.name, "type": "points", "n": batch.num_rows()});
    super::print_notices(&commit);
    print_change(args.json, &line, commit.generation, &fields)?;
    Ok(ExitCode::SUCCESS)
}

/// What an error of `add-points` is about.
fn add_points_context(args: &AddPointsArgs) -> String {
    format!(
        "cannot add points {} from {}",
        args.name,
        args.csv.display()
    )
}

/// The points of `add-points`, the name checked first.
fn read_points(args: &AddPointsArgs) -> anyhow::Result<RecordBatch> {
    ElementName::new(&args.name)?;
    let types = match &args.feature_key {
        Some(key) => BTreeMap::from([(key.clone(), Forced::Always(DataType::Utf8))]),
        None => BTreeMap::new(),
    };
    let batch = read_csv(&args.csv, &types)?;
    if let Some(key) = &args.feature_key
        && batch.schema().field_with_name(key).is_err()
    {
        bail!(
            "{} has no column {key:?} (given as --feature-key)",
            args.csv.display()
        );
    }
    Ok(batch)
}

/// `add-points` as an operation of a plan: the element is staged now, without the
/// lock.
pub(super) fn prepare_add_points(
    args: AddPointsArgs,
    dataset: &Dataset,
) -> anyhow::Result<PendingOp> {
    let batch = read_points(&args)?;
    let staged = dataset
        .stage_points(
            &args.name,
            &batch,
            args.feature_key.as_deref(),
            args.instance_key.as_deref(),
            &Transformations::default(),
        )
        .with_context(|| add_points_context(&args))?;
    Ok(PendingOp::Add {
        kind: ElementKind::Points,
        name: args.name,
        staged,
        overwrite: args.overwrite,
    })
}

/// `append-points`: appends the CSV's points to an existing points element as one
/// new part, in one commit.
pub fn append_points(args: AppendPointsArgs) -> anyhow::Result<ExitCode> {
    let dataset = open_existing(&args.dataset, &args.options)?;
    let batch = read_new_points(&args, &dataset)?;
    let mut txn = dataset.write()?;
    let outcome = txn
        .append_points(&args.name, &batch, args.key.as_deref())
        .with_context(|| append_context(&args))?;
    let commit = txn.commit()?;
    super::print_notices(&commit);
    super::print_append_outcome(&outcome, "points", commit.generation, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// What an error of `append-points` is about.
pub(super) fn append_context(args: &AppendPointsArgs) -> String {
    format!(
        "cannot append the points of {} to {}",
        args.csv.display(),
        args.name
    )
}

/// `append-points` as an operation of a plan: the CSV is read now.
pub(super) fn prepare_append_points(
    args: AppendPointsArgs,
    dataset: &Dataset,
) -> anyhow::Result<PendingOp> {
    let batch = read_new_points(&args, dataset)?;
    Ok(PendingOp::AppendPoints { args, batch })
}

/// The element and the idempotency key of `append-points`.
pub(super) fn name_and_key(args: &AppendPointsArgs) -> (&str, Option<&str>) {
    (&args.name, args.key.as_deref())
}

/// The new points of `append-points`, read with the element's column types.
fn read_new_points(args: &AppendPointsArgs, dataset: &Dataset) -> anyhow::Result<RecordBatch> {
    ElementName::new(&args.name)?;
    let info = match dataset.info(&args.name) {
        Ok(ElementInfo::Points(info)) => info,
        Ok(_) => bail!(
            "{} is not a points element: append-points appends to points (add a new one with `spatialzarr add-points`)",
            args.name
        ),
        Err(Error::NoSuchElement { .. }) => bail!(
            "there is no points element {} in {}; create it with `spatialzarr add-points`",
            args.name,
            args.dataset.display()
        ),
        Err(e) => return Err(e.into()),
    };
    // Read the CSV's columns as the element stores them (a string column whose
    // values look like numbers stays strings).
    let types: BTreeMap<String, Forced> = info
        .columns
        .iter()
        .zip(&info.column_types)
        .filter_map(|(name, stored)| Some((name.clone(), forced_for(stored)?)))
        .collect();
    read_csv_rows(&args.csv, &types)
}

/// `add-shapes`: adds (or replaces) a shapes element of circles from a CSV file or
/// of polygons from a GeoJSON file.
pub fn add_shapes(args: AddShapesArgs) -> anyhow::Result<ExitCode> {
    let dataset = open_existing(&args.dataset, &args.options)?;
    let (source, shapes, columns) = read_shapes(&args)?;
    let commit = dataset
        .add_shapes(&args.name, &shapes, columns.as_ref(), args.overwrite)
        .with_context(|| format!("cannot add shapes {} from {}", args.name, source.display()))?;
    let line = format!(
        "added shapes {}: {}",
        args.name,
        counted(shapes.len(), shapes.geometry())
    );
    let fields = json!({
        "added": args.name,
        "type": "shapes",
        "n": shapes.len(),
        "geometry": shapes.geometry().to_string(),
    });
    super::print_notices(&commit);
    print_change(args.json, &line, commit.generation, &fields)?;
    Ok(ExitCode::SUCCESS)
}

/// `add-shapes` as an operation of a plan: the element is staged now, without the
/// lock.
pub(super) fn prepare_add_shapes(
    args: AddShapesArgs,
    dataset: &Dataset,
) -> anyhow::Result<PendingOp> {
    let (source, shapes, columns) = read_shapes(&args)?;
    let staged = dataset
        .stage_shapes(
            &args.name,
            &shapes,
            columns.as_ref(),
            &Transformations::default(),
        )
        .with_context(|| format!("cannot add shapes {} from {}", args.name, source.display()))?;
    Ok(PendingOp::Add {
        kind: ElementKind::Shapes,
        name: args.name,
        staged,
        overwrite: args.overwrite,
    })
}

/// The shapes of `add-shapes` (with the file they come from and their extra
/// columns), the name checked first.
fn read_shapes(args: &AddShapesArgs) -> anyhow::Result<(PathBuf, Shapes, Option<RecordBatch>)> {
    ElementName::new(&args.name)?;
    let (source, shapes, columns) = match (&args.csv, &args.geojson) {
        (Some(csv), None) => {
            let batch = read_csv(csv, &BTreeMap::new())?;
            let (shapes, columns) = Shapes::circles_from_batch(&batch)
                .with_context(|| format!("cannot read circles from {}", csv.display()))?;
            (csv, shapes, columns)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let shapes = parse_geojson(&text)
                .with_context(|| format!("cannot read polygons from {}", path.display()))?;
            (path, shapes, None)
        }
        // clap's argument group admits exactly one of the two.
        _ => bail!("give exactly one of --csv and --geojson"),
    };
    Ok((source.clone(), shapes, columns))
}
