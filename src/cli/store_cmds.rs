//! The commands that change a dataset:
//!
//! ```text
//! spatialzarr init DATASET [--json]
//! spatialzarr add-image  DATASET NAME --npy FILE [--dims c,y,x] [--overwrite] [--json]
//! spatialzarr add-labels DATASET NAME --npy FILE [--dims y,x] [--overwrite] [--json]
//! spatialzarr rm DATASET NAME [--json]
//! spatialzarr set-transformations DATASET NAME --transformations FILE [--json]
//! spatialzarr recover DATASET [--json]
//! ```
//!
//! Each prints one line on success (what changed and the generation), or with
//! `--json` one object: `{"created":PATH,"generation":G}`,
//! `{"added":NAME,"type":"image"|"labels","shape":[..],"dtype":D,"generation":G}`,
//! `{"removed":NAME,"type":T,"generation":G}`,
//! `{"name":NAME,"coordinate_systems":[..],"generation":G}`, or recovery's report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use spatialzarr::{Dataset, ElementKind, ElementName, RasterOptions, Transformations};

use super::apply_cmd::PendingOp;
use super::{ReadOptions, WriteOptions, npy, print_change, transform_input};

/// Arguments of `spatialzarr init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The folder of the new dataset (it must not exist, or be empty).
    dataset: PathBuf,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
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
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
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
    #[command(flatten)]
    options: WriteOptions,
}

/// Arguments of `spatialzarr rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The dataset.
    dataset: PathBuf,
    /// The element to remove.
    name: String,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
}

/// `init`: creates an empty dataset; fails if one is already there.
pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::create(&args.dataset, args.options.dataset_options())?;
    let shown = args.dataset.display().to_string();
    print_change(
        args.json,
        &format!("created dataset {shown}"),
        dataset.generation()?,
        &json!({ "created": shown }),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `add-image` / `add-labels`: adds the array of a `.npy` file as an element of
/// `kind`. Nothing changes in the dataset unless the whole element is committed.
pub fn add(kind: ElementKind, args: AddArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let (array, options) = read_raster(&args)?;
    let commit = array.add_to(&dataset, kind, &args.name, &options, args.overwrite)?;
    let shape: Vec<String> = array.shape().iter().map(usize::to_string).collect();
    let line = format!(
        "added {} {}: {} {}",
        kind.singular(),
        args.name,
        shape.join(" x "),
        array.dtype().name()
    );
    let fields = json!({
        "added": args.name,
        "type": kind.singular(),
        "shape": array.shape(),
        "dtype": array.dtype().name(),
    });
    super::print_notices(&commit);
    print_change(args.json, &line, commit.generation, &fields)?;
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
pub fn set_transformations(args: SetTransformationsArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let transformations = read_transformations(&args)?;
    let name = &args.name;
    let commit = dataset
        .set_transformations(name, &transformations)
        .with_context(|| format!("cannot set the transformations of {name}"))?;
    let systems: Vec<&String> = transformations.0.keys().collect();
    let line = format!("set the transformations of {name}");
    let fields = json!({ "name": name, "coordinate_systems": systems });
    super::print_notices(&commit);
    print_change(args.json, &line, commit.generation, &fields)?;
    Ok(ExitCode::SUCCESS)
}

/// `rm`: removes an element.
pub fn rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let mut txn = dataset.write()?;
    // Under the write lock: the kind of the element removed, from the listing (not
    // the element's metadata, so that a broken element can be removed too).
    let list = dataset.list()?;
    let kind = ElementKind::ALL
        .into_iter()
        .find(|kind| list.of(*kind).contains(&args.name))
        .map_or("element", ElementKind::singular);
    txn.remove(&args.name)?;
    let commit = txn.commit()?;
    let line = format!("removed {kind} {}", args.name);
    let fields = json!({ "removed": args.name, "type": kind });
    super::print_notices(&commit);
    print_change(args.json, &line, commit.generation, &fields)?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `recover` and `upgrade`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Print what was done as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: ReadOptions,
    #[command(flatten)]
    durability: super::DurabilityOption,
}

/// `recover`: under the write lock, finishes an interrupted commit and removes what
/// dead writers left behind (staging folders, trash, temporary files).
pub fn recover(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let dataset = open_for_maintenance(&args)?;
    let bar = super::progress_bar("{spinner} {pos} folders swept, {elapsed}");
    let report = dataset.recover_with_progress(&mut |swept| bar.set_position(swept))?;
    bar.finish_and_clear();
    let finished = match (&report.finished_commit, &report.withdrawn_commit) {
        (Some(generation), _) => {
            format!("finished the interrupted commit of generation {generation}")
        }
        (None, Some(what)) => format!(
            "withdrew an interrupted commit that was never decided ({what}); the dataset is as before it"
        ),
        (None, None) => "no interrupted commit".to_string(),
    };
    let line = format!(
        "recovered: {finished}; removed {} abandoned staging folders, {} trash folders, {} temporary files; rebuilt the consolidated metadata of {} tables",
        report.removed_staging.len(),
        report.removed_trash.len(),
        report.removed_temp_files.len(),
        report.rebuilt_table_documents.len()
    );
    print_change(args.json, &line, dataset.generation()?, &report)?;
    Ok(ExitCode::SUCCESS)
}

/// `upgrade`: writes the element index of a dataset of store format version 1, in
/// one commit (any write does it too).
pub fn upgrade(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let dataset = open_for_maintenance(&args)?;
    let before = dataset.manifest()?.map(|m| m.version);
    let info = dataset.upgrade()?;
    let version = spatialzarr::commit::manifest::FORMAT_VERSION;
    let line = match (info.durable, before) {
        (true, Some(old)) => format!("upgraded the store format from version {old} to {version}"),
        (true, None) => format!("recorded the elements in the store format version {version}"),
        (false, _) => format!("the store format is version {version} already"),
    };
    #[derive(serde::Serialize)]
    struct Outcome {
        upgraded: bool,
        version: u32,
    }
    let outcome = Outcome {
        upgraded: info.durable,
        version,
    };
    super::print_change(args.json, &line, dataset.generation()?, &outcome)?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the dataset of `recover` or `upgrade` with their options.
fn open_for_maintenance(args: &RecoverArgs) -> anyhow::Result<Dataset> {
    let options = spatialzarr::DatasetOptions {
        durability: args.durability.level(),
        ..args.options.dataset_options()
    };
    Ok(Dataset::open(&args.dataset, options)?)
}
