//! The commands that change a dataset:
//!
//! ```text
//! spatialzarr init DATASET [--json]
//! spatialzarr add-image  DATASET NAME --npy FILE [--dims c,y,x] [--overwrite] [--json]
//! spatialzarr add-labels DATASET NAME --npy FILE [--dims y,x] [--overwrite] [--json]
//! spatialzarr rm DATASET NAME [--json]
//! spatialzarr recover DATASET [--json]
//! ```
//!
//! Each prints one line on success (what changed and the generation), or with
//! `--json` one object: `{"created":PATH,"generation":G}`,
//! `{"added":NAME,"type":"image"|"labels","shape":[..],"dtype":D,"generation":G}`,
//! `{"removed":NAME,"type":T,"generation":G}`, or recovery's report.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use spatialzarr::{Dataset, ElementKind, ElementName, RasterOptions};

use super::{ReadOptions, WriteOptions, npy, print_change};

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
    // Refuse a bad name before reading a possibly large file.
    ElementName::new(&args.name)?;
    let array = npy::read(&args.npy)?;
    let options = RasterOptions {
        dims: args
            .dims
            .map(|dims| dims.iter().map(|d| d.trim().to_owned()).collect()),
        ..RasterOptions::default()
    };
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
    print_change(args.json, &line, commit.generation, &fields)?;
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
    #[command(flatten)]
    options: ReadOptions,
}

/// `recover`: under the write lock, finishes an interrupted commit and removes what
/// dead writers left behind (staging folders, trash, temporary files).
pub fn recover(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let report = dataset.recover()?;
    let finished = match report.finished_commit {
        Some(generation) => format!("finished the interrupted commit of generation {generation}"),
        None => "no interrupted commit".to_string(),
    };
    let line = format!(
        "recovered: {finished}; removed {} abandoned staging folders, {} trash folders, {} temporary files",
        report.removed_staging.len(),
        report.removed_trash.len(),
        report.removed_temp_files.len()
    );
    print_change(args.json, &line, dataset.generation()?, &report)?;
    Ok(ExitCode::SUCCESS)
}
