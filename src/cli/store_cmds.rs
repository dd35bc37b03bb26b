//! The commands that change a dataset:
//!
//! ```text
//! spatialzarr init DATASET
//! spatialzarr add-image  DATASET NAME --npy FILE [--dims c,y,x] [--overwrite]
//! spatialzarr add-labels DATASET NAME --npy FILE [--dims y,x] [--overwrite]
//! spatialzarr rm DATASET NAME
//! spatialzarr set-transformations DATASET NAME --transformations FILE [--json]
//! ```
//!
//! `init`, `add-*` and `rm` print nothing on success; `set-transformations` prints
//! one line, or with `--json` one object.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use spatialzarr::{Dataset, ElementKind, ElementName, RasterOptions, Transformations};

use super::apply_cmd::PendingOp;
use super::{Globals, npy, transform_input};

/// Arguments of `spatialzarr init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The folder of the new dataset (it must not exist, or be empty).
    dataset: PathBuf,
}

/// Arguments of `spatialzarr add-image` and `spatialzarr add-labels`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The dataset (it must exist; create it with `spatialzarr init`).
    dataset: PathBuf,
    /// The new element's name: ASCII letters, digits, `_`, `.` and `-`.
    name: String,
    /// The .npy file holding the pixels (uint8/16/32/64, int8/16/32/64, float32/64).
    #[arg(long, value_name = "FILE")]
    npy: PathBuf,
    /// Dimension names, comma-separated (default from the number of dimensions:
    /// images y,x / c,y,x / c,z,y,x; labels y,x / z,y,x).
    #[arg(long, value_name = "DIMS", value_delimiter = ',')]
    dims: Option<Vec<String>>,
    /// Replace an element of the same type and name.
    #[arg(long)]
    overwrite: bool,
}

/// Arguments of `spatialzarr set-transformations`.
#[derive(Debug, clap::Args)]
pub struct SetTransformationsArgs {
    /// The dataset.
    dataset: PathBuf,
    /// The image, labels, points or shapes element.
    name: String,
    /// The element's new transformations: a JSON object mapping each coordinate
    /// system to a transformation over the element's spatial axes, in the element's
    /// order: `{"global": {"type": "scale", "scale": [0.5, 0.5]}, "aligned":
    /// {"type": "translation", "translation": [10, 20]}, "raw": {"type":
    /// "identity"}}` (other NGFF transformation objects are stored as given).
    #[arg(long, value_name = "FILE")]
    transformations: PathBuf,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `spatialzarr rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The dataset.
    dataset: PathBuf,
    /// The element to remove.
    name: String,
}

/// `init`: creates an empty dataset; fails if one is already there.
pub fn init(args: InitArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    Dataset::create(&args.dataset, globals.dataset_options())?;
    Ok(ExitCode::SUCCESS)
}

/// `add-image` / `add-labels`: adds the array of a `.npy` file as an element of
/// `kind`. Nothing changes in the dataset unless the whole element is committed.
pub fn add(kind: ElementKind, args: AddArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, globals.dataset_options())?;
    let (array, options) = read_raster(&args)?;
    array.add_to(&dataset, kind, &args.name, &options, args.overwrite)?;
    Ok(ExitCode::SUCCESS)
}

/// The pixels and options of `add-image` / `add-labels`, the name checked first.
fn read_raster(args: &AddArgs) -> anyhow::Result<(npy::NpyArray, RasterOptions)> {
    // Refuse a bad name before reading a possibly large file.
    ElementName::new(&args.name)?;
    let array = npy::read(&args.npy)?;
    let options = RasterOptions {
        dims: args
            .dims
            .as_ref()
            .map(|dims| dims.iter().map(|d| d.trim().to_owned()).collect()),
        ..RasterOptions::default()
    };
    Ok((array, options))
}

/// `add-image` / `add-labels` as an operation of a plan: the element is staged now,
/// without the lock.
pub(super) fn prepare_add(
    kind: ElementKind,
    args: AddArgs,
    dataset: &Dataset,
) -> anyhow::Result<PendingOp> {
    let (array, options) = read_raster(&args)?;
    let staged = array.stage(dataset, kind, &args.name, &options)?;
    Ok(PendingOp::Add {
        kind,
        name: args.name,
        staged,
        overwrite: args.overwrite,
    })
}

/// `rm` as an operation of a plan.
pub(super) fn prepare_rm(args: RmArgs) -> anyhow::Result<PendingOp> {
    ElementName::new(&args.name)?;
    Ok(PendingOp::Remove { name: args.name })
}

/// `set-transformations` as an operation of a plan: the file is read now.
pub(super) fn prepare_set_transformations(
    args: SetTransformationsArgs,
) -> anyhow::Result<PendingOp> {
    let transformations = read_transformations(&args)?;
    Ok(PendingOp::SetTransformations {
        name: args.name,
        transformations,
    })
}

/// The transformations of `set-transformations`, the name checked first.
fn read_transformations(args: &SetTransformationsArgs) -> anyhow::Result<Transformations> {
    ElementName::new(&args.name)?;
    transform_input::read(&args.transformations)
}

/// `set-transformations`: replaces an element's coordinate transformations in one
/// commit.
pub fn set_transformations(
    args: SetTransformationsArgs,
    globals: &Globals,
) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, globals.dataset_options())?;
    let transformations = read_transformations(&args)?;
    let (name, json) = (args.name, args.json);
    let commit = dataset
        .set_transformations(&name, &transformations)
        .with_context(|| format!("cannot set the transformations of {name}"))?;
    if json {
        let systems: Vec<&String> = transformations.0.keys().collect();
        println!(
            "{}",
            serde_json::json!({"name": name, "coordinate_systems": systems, "generation": commit.generation})
        );
    } else {
        println!(
            "set the transformations of {name} (generation {})",
            commit.generation
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `rm`: removes an element.
pub fn rm(args: RmArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, globals.dataset_options())?;
    dataset.remove(&args.name)?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Print what was done as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `recover`: under the write lock, finishes an interrupted commit and removes what
/// dead writers left behind (staging folders, trash, temporary files).
pub fn recover(args: RecoverArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, globals.dataset_options())?;
    let report = dataset.recover()?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        match report.finished_commit {
            Some(generation) => {
                println!("finished the interrupted commit of generation {generation}")
            }
            None => println!("no interrupted commit"),
        }
        println!(
            "removed {} abandoned staging folders, {} trash folders, {} temporary files",
            report.removed_staging.len(),
            report.removed_trash.len(),
            report.removed_temp_files.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
