//! The commands that read a dataset:
//!
//! ```text
//! spatialzarr ls    DATASET [--json]
//! spatialzarr info  DATASET NAME [--json]
//! spatialzarr check DATASET [--json] [--deep]
//! ```
//!
//! `info` prints one `label: value` line per fact, or with `--json` one object holding
//! the same facts (both rendered from one list, [`Facts`]). `check` prints a
//! `warning: ...` line for each leftover `recover` removes and one line per problem.
//! These commands write several lines, and stop quietly when the reader goes away.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use serde::Serialize;
use serde_json::Value;
use spatialzarr::{CheckReport, Dataset, ElementInfo, ElementKind};

use super::{ReadOptions, print_lines};

/// Arguments of `spatialzarr ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Print `{"images":[...],"labels":[...],"points":[...],"shapes":[...],"tables":[...]}`
    /// instead of one `KIND<TAB>NAME` line per element.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: ReadOptions,
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
    #[command(flatten)]
    options: ReadOptions,
}

/// Arguments of `spatialzarr check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Print the report as one JSON object instead of one line per warning
    /// (`warning: ...`, what `recover` finishes or removes) and per problem.
    #[arg(long)]
    json: bool,
    /// Also decode every chunk of every raster (slower).
    #[arg(long)]
    deep: bool,
    #[command(flatten)]
    options: ReadOptions,
}

/// `ls`: lists the elements, sorted by kind then name.
pub fn ls(args: LsArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let list = dataset.list()?;
    let json = if args.json {
        Some(serde_json::to_string(&list)?)
    } else {
        None
    };
    print_lines(|out| {
        if let Some(json) = &json {
            return writeln!(out, "{json}");
        }
        for kind in ElementKind::ALL {
            for name in list.of(kind) {
                writeln!(out, "{}\t{name}", kind.singular())?;
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One fact `info` prints: a `label: value` line, or a `"key": value` member with
/// `--json`. Both come from this one value, so the two outputs hold the same facts.
struct Fact {
    /// The text output's name.
    label: &'static str,
    /// The JSON output's name.
    key: &'static str,
    /// The value (null: left out of the text, `null` in the JSON).
    value: Value,
    /// What separates the items of a list in the text.
    separator: &'static str,
}

/// A fact named `key` in both outputs, whose list items are separated by `", "` in
/// the text.
fn fact(key: &'static str, value: impl Serialize) -> Fact {
    Fact {
        label: key,
        key,
        value: serde_json::to_value(value).unwrap_or(Value::Null),
        separator: ", ",
    }
}

/// The facts of an element, in the order they print.
struct Facts(Vec<Fact>);

impl Serialize for Facts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for fact in &self.0 {
            map.serialize_entry(fact.key, &fact.value)?;
        }
        map.end()
    }
}

impl Facts {
    /// The text output: one `label: value` line per fact that has a value.
    fn text(&self) -> String {
        fn item(value: &Value) -> String {
            match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        }
        let mut out = String::new();
        for fact in &self.0 {
            let value = match &fact.value {
                Value::Null => continue,
                Value::Array(items) => items
                    .iter()
                    .map(item)
                    .collect::<Vec<_>>()
                    .join(fact.separator),
                other => item(other),
            };
            out.push_str(&format!(
                "{}: {}\n",
                fact.label,
                value.replace(['\n', '\r'], " ")
            ));
        }
        out
    }
}

/// The names of the coordinate systems of `transformations`.
fn coordinate_systems(transformations: &spatialzarr::Transformations) -> Fact {
    let names: Vec<&str> = transformations.0.keys().map(String::as_str).collect();
    Fact {
        label: "coordinate systems",
        ..fact("coordinate_systems", names)
    }
}

/// What `info` says about an element.
fn facts(info: &ElementInfo) -> Facts {
    Facts(match info {
        ElementInfo::Raster(r) => vec![
            fact("type", r.kind.singular()),
            Fact {
                separator: " x ",
                ..fact("shape", &r.shape)
            },
            fact("dtype", r.dtype.name()),
            Fact {
                separator: ",",
                ..fact("dims", &r.dims)
            },
            fact("levels", r.levels),
            fact("channels", &r.channel_names),
            coordinate_systems(&r.transformations),
        ],
        ElementInfo::Points(p) => vec![
            fact("type", "points"),
            fact("n", p.n),
            fact("columns", &p.columns),
            fact("axes", &p.axes),
            fact("parts", p.parts),
            fact("feature_key", &p.feature_key),
            fact("instance_key", &p.instance_key),
            coordinate_systems(&p.transformations),
        ],
        ElementInfo::Shapes(sh) => vec![
            fact("type", "shapes"),
            fact("n", sh.n),
            fact("geometry", &sh.geometry),
            fact("columns", &sh.columns),
            coordinate_systems(&sh.transformations),
        ],
        ElementInfo::Table(t) => vec![
            fact("type", "table"),
            fact("n_obs", t.n_obs),
            fact("n_vars", t.n_vars),
            fact("regions", &t.regions),
            fact("region_key", &t.region_key),
            fact("instance_key", &t.instance_key),
            fact("columns", &t.columns),
            Fact {
                label: "column kinds",
                ..fact("column_kinds", &t.column_kinds)
            },
        ],
    })
}

/// `info`: describes one element.
pub fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let facts = facts(&dataset.info(&args.name)?);
    if args.json {
        let json = serde_json::to_string(&facts)?;
        print_lines(|out| writeln!(out, "{json}"))?;
    } else {
        print_lines(|out| out.write_all(facts.text().as_bytes()))?;
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
pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset, args.options.dataset_options())?;
    let bar = super::progress_bar("{bar:40} {pos}/{len} elements checked, {elapsed}");
    let report = dataset.check_with_progress(args.deep, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if args.json {
        let json = CheckJson {
            ok: report.is_ok(),
            report: &report,
        };
        let json = serde_json::to_string(&json)?;
        print_lines(|out| writeln!(out, "{json}"))?;
    } else {
        // One line per warning and per problem, whatever the message holds.
        print_lines(|out| {
            for warning in &report.warnings {
                writeln!(out, "warning: {}", warning.replace(['\n', '\r'], " "))?;
            }
            for problem in &report.problems {
                writeln!(out, "{}", problem.replace(['\n', '\r'], " "))?;
            }
            Ok(())
        })?;
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
