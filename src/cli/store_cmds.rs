//! The commands that change a dataset:
//!
//! ```text
//! spatialzarr init DATASET
//! spatialzarr add-image  DATASET NAME --npy FILE [--dims c,y,x] [--overwrite]
//! spatialzarr add-labels DATASET NAME --npy FILE [--dims y,x] [--overwrite]
//! spatialzarr rm DATASET NAME
//! ```
//!
//! Each prints nothing on success.

use std::path::PathBuf;
use std::process::ExitCode;

use spatialzarr::{Dataset, ElementKind, ElementName, RasterOptions};

use super::{Globals, npy};

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
    // Refuse a bad name before reading a possibly large file.
    ElementName::new(&args.name)?;
    let array = npy::read(&args.npy)?;
    let options = RasterOptions {
        dims: args
            .dims
            .map(|dims| dims.iter().map(|d| d.trim().to_owned()).collect()),
        ..RasterOptions::default()
    };
    array.add_to(&dataset, kind, &args.name, &options, args.overwrite)?;
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
