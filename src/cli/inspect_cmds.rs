//! The commands that read a dataset:
//!
//! ```text
//! spatialzarr ls    DATASET [--json]
//! spatialzarr info  DATASET NAME [--json]
//! spatialzarr check DATASET [--json] [--deep]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use serde::Serialize;
use spatialzarr::{CheckReport, Dataset, ElementInfo, ElementKind};

use super::Globals;

/// Arguments of `spatialzarr ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Print `{"images":[...],"labels":[...],"points":[...],"shapes":[...],"tables":[...]}`
    /// instead of one `KIND<TAB>NAME` line per element.
    #[arg(long)]
    json: bool,
}

/// Arguments of `spatialzarr info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The dataset.
    dataset: PathBuf,
    /// The element to describe.
    name: String,
    /// Print one JSON object instead of `key: value` lines.
    #[arg(long)]
    json: bool,
}

/// Arguments of `spatialzarr check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Print the report as one JSON object instead of one line per problem.
    #[arg(long)]
    json: bool,
    /// Also decode every chunk of every raster (slower).
    #[arg(long)]
    deep: bool,
}

/// `ls`: lists the elements, sorted by kind then name.
pub fn ls(args: LsArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, globals.dataset_options())?;
    let list = dataset.list()?;
    if args.json {
        println!("{}", serde_json::to_string(&list)?);
    } else {
        for kind in ElementKind::ALL {
            for name in list.of(kind) {
                println!("{}\t{name}", kind.singular());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `info --json` prints about an image or labels element.
#[derive(Debug, Serialize)]
struct RasterJson<'a> {
    /// "image" or "labels".
    #[serde(rename = "type")]
    kind: &'static str,
    /// Shape of the full-resolution level.
    shape: &'a [u64],
    /// Pixel type, numpy's name.
    dtype: &'static str,
    /// Dimension names.
    dims: &'a [String],
    /// Number of pyramid levels.
    levels: usize,
}

/// `info`: describes one element.
pub fn info(args: InfoArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, globals.dataset_options())?;
    let info = dataset.info(&args.name)?;
    match (&info, args.json) {
        (ElementInfo::Raster(r), true) => {
            let json = RasterJson {
                kind: r.kind.singular(),
                shape: &r.shape,
                dtype: r.dtype.name(),
                dims: &r.dims,
                levels: r.levels,
            };
            println!("{}", serde_json::to_string(&json)?);
        }
        (ElementInfo::Raster(r), false) => {
            let shape: Vec<String> = r.shape.iter().map(u64::to_string).collect();
            println!("type: {}", r.kind.singular());
            println!("shape: {}", shape.join(" x "));
            println!("dtype: {}", r.dtype);
            println!("dims: {}", r.dims.join(","));
            println!("levels: {}", r.levels);
            if let Some(channels) = &r.channel_names {
                println!("channels: {}", channels.join(", "));
            }
            let systems: Vec<&str> = r.transformations.0.keys().map(String::as_str).collect();
            println!("coordinate systems: {}", systems.join(", "));
        }
        (ElementInfo::Points(p), true) => {
            let json = serde_json::json!({"type": "points", "n": p.n, "columns": p.columns});
            println!("{json}");
        }
        (ElementInfo::Points(p), false) => {
            println!("type: points");
            println!("n: {}", p.n);
            println!("columns: {}", p.columns.join(", "));
            println!("parts: {}", p.parts);
            if let Some(key) = &p.feature_key {
                println!("feature_key: {key}");
            }
        }
        (ElementInfo::Shapes(sh), true) => {
            let json = serde_json::json!({"type": "shapes", "n": sh.n, "geometry": sh.geometry});
            println!("{json}");
        }
        (ElementInfo::Shapes(sh), false) => {
            println!("type: shapes");
            println!("n: {}", sh.n);
            println!("geometry: {}", sh.geometry);
            println!("columns: {}", sh.columns.join(", "));
        }
        (ElementInfo::Table(t), true) => {
            let json = serde_json::json!({
                "type": "table",
                "n_obs": t.n_obs,
                "n_vars": t.n_vars,
                "regions": t.regions,
                "region_key": t.region_key,
                "instance_key": t.instance_key,
                "columns": t.columns,
            });
            println!("{json}");
        }
        (ElementInfo::Table(t), false) => {
            println!("type: table");
            println!("n_obs: {}", t.n_obs);
            println!("n_vars: {}", t.n_vars);
            println!("regions: {}", t.regions.join(", "));
            println!("region_key: {}", t.region_key);
            println!("instance_key: {}", t.instance_key);
            let columns: Vec<String> = t
                .columns
                .iter()
                .zip(&t.column_kinds)
                .map(|(c, k)| format!("{c} ({k})"))
                .collect();
            println!("columns: {}", columns.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `check --json` prints.
#[derive(Debug, Serialize)]
struct CheckJson<'a> {
    /// Whether the dataset is consistent.
    ok: bool,
    /// The library's report.
    #[serde(flatten)]
    report: &'a CheckReport,
}

/// `check`: exit status 0 when the dataset is consistent; otherwise prints each
/// problem (one line each, or the JSON report) and fails with exit status 1.
pub fn check(args: CheckArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, globals.dataset_options())?;
    let report = dataset.check(args.deep)?;
    if args.json {
        let json = CheckJson {
            ok: report.is_ok(),
            report: &report,
        };
        println!("{}", serde_json::to_string(&json)?);
    } else {
        for problem in &report.problems {
            // One line per problem, whatever the message holds.
            println!("{}", problem.replace(['\n', '\r'], " "));
        }
    }
    if report.is_ok() {
        return Ok(ExitCode::SUCCESS);
    }
    let count = report.problems.len();
    Err(anyhow!(
        "{} is inconsistent: {count} problem{} found",
        args.dataset.display(),
        if count == 1 { "" } else { "s" }
    ))
}
