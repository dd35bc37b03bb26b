//! The points and shapes commands:
//!
//! ```text
//! spatialzarr add-points    DATASET NAME --csv FILE [--feature-key gene] [--overwrite]
//! spatialzarr append-points DATASET NAME --csv FILE [--key IDEMPOTENCY_KEY] [--json]
//! spatialzarr add-shapes    DATASET NAME (--csv FILE | --geojson FILE) [--overwrite]
//! ```
//!
//! Every input is read and checked in full before anything is written; a refused
//! input leaves the dataset as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use arrow_schema::DataType;
use spatialzarr::element::shapes::{Shapes, parse_geojson};
use spatialzarr::{Dataset, ElementInfo, ElementName, Error};

use super::Globals;
use super::csv_input::{Forced, forced_for, read_csv, read_csv_rows};

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
    /// Replace an element of the same name.
    #[arg(long)]
    overwrite: bool,
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
    /// `{"table":NAME,"start":S,"end":E,"key":K|null,"applied":true|false}`.
    #[arg(long)]
    json: bool,
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
}

/// Opens the existing dataset at `path`, with a hint when there is none.
fn open_existing(path: &Path, globals: &Globals) -> anyhow::Result<Dataset> {
    if !path.exists() {
        bail!(
            "dataset {} does not exist; create it first with `spatialzarr init {}`",
            path.display(),
            path.display()
        );
    }
    Ok(Dataset::open(path, globals.dataset_options())?)
}

/// `add-points`: adds (or replaces) a points element from a CSV file.
pub fn add_points(args: AddPointsArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = open_existing(&args.dataset, globals)?;
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
    let commit = dataset
        .add_points(
            &args.name,
            &batch,
            args.feature_key.as_deref(),
            args.overwrite,
        )
        .with_context(|| {
            format!(
                "cannot add points {} from {}",
                args.name,
                args.csv.display()
            )
        })?;
    println!(
        "added points {} ({} points, generation {})",
        args.name,
        batch.num_rows(),
        commit.generation
    );
    Ok(ExitCode::SUCCESS)
}

/// `append-points`: appends the CSV's points to an existing points element as one
/// new part, in one commit.
pub fn append_points(args: AppendPointsArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = open_existing(&args.dataset, globals)?;
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
    let batch = read_csv_rows(&args.csv, &types)?;
    let outcome = dataset
        .append_points(&args.name, &batch, args.key.as_deref())
        .with_context(|| {
            format!(
                "cannot append the points of {} to {}",
                args.csv.display(),
                args.name
            )
        })?;
    super::print_append_outcome(&outcome, "points", args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `add-shapes`: adds (or replaces) a shapes element of circles from a CSV file or
/// of polygons from a GeoJSON file.
pub fn add_shapes(args: AddShapesArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = open_existing(&args.dataset, globals)?;
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
    let commit = dataset
        .add_shapes(&args.name, &shapes, columns.as_ref(), args.overwrite)
        .with_context(|| format!("cannot add shapes {} from {}", args.name, source.display()))?;
    println!(
        "added shapes {} ({} {}s, generation {})",
        args.name,
        shapes.len(),
        shapes.geometry(),
        commit.generation
    );
    Ok(ExitCode::SUCCESS)
}
