//! Reading the plan of `spatialzarr apply`: a JSON file of operations, each turned
//! into the command line of its subcommand and parsed by that subcommand's own
//! parser, so that a plan's operation takes exactly the options (and checks) the
//! command does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser};
use serde_json::{Map, Value};

use super::{Cli, Command};

/// The subcommands a plan may use, in the order the help lists them.
pub(super) const PLAN_OPS: [&str; 8] = [
    "add-image",
    "add-labels",
    "add-points",
    "add-shapes",
    "append-rows",
    "append-points",
    "rm",
    "set-transformations",
];

/// Options of the subcommands that mean nothing inside a plan: the plan's command
/// prints the outcome, and the dataset is the plan's.
const NOT_IN_PLANS: [&str; 3] = ["json", "help", "version"];

/// Options of the subcommands that `apply` takes for the whole plan: the plan opens
/// the dataset once, under one lock, and commits once.
const PLAN_WIDE: [&str; 3] = ["lock-timeout", "drop-consolidated-metadata", "durability"];

/// One operation of a plan, parsed.
pub(super) struct PlannedOp {
    /// Where it is in the plan, for messages: `PLAN: ops[3] (append-rows cells)`.
    pub label: String,
    /// The subcommand with its arguments.
    pub command: Command,
}

/// Reads the plan at `path` for `dataset`; file paths in it are relative to the
/// plan's folder. Every operation is parsed before anything is done.
pub(super) fn read(path: &Path, dataset: &Path) -> anyhow::Result<Vec<PlannedOp>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{shown} is not valid JSON"))?;
    let Some(top) = doc.as_object() else {
        bail!("{shown} must hold a JSON object {{\"ops\": [...]}}");
    };
    if let Some(other) = top.keys().find(|k| *k != "ops") {
        bail!("{shown}: unknown key {other:?} (a plan is {{\"ops\": [...]}})");
    }
    let Some(ops) = top.get("ops").and_then(Value::as_array) else {
        bail!("{shown} has no \"ops\" list (a plan is {{\"ops\": [...]}})");
    };
    if ops.is_empty() {
        bail!("{shown}: the plan's \"ops\" list is empty");
    }
    let base = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    ops.iter()
        .enumerate()
        .map(|(index, op)| parse_op(&format!("{shown}: ops[{index}]"), op, dataset, &base))
        .collect()
}

/// Turns the operation `op` (`at` names it in messages: `PLAN: ops[N]`) into its
/// subcommand's command line and parses it.
fn parse_op(at: &str, op: &Value, dataset: &Path, base: &Path) -> anyhow::Result<PlannedOp> {
    let Some(fields) = op.as_object() else {
        bail!("{at} must be a JSON object with an \"op\" key");
    };
    let Some(name) = fields.get("op").and_then(Value::as_str) else {
        bail!("{at} has no \"op\" string (one of {})", PLAN_OPS.join(", "));
    };
    if !PLAN_OPS.contains(&name) {
        bail!(
            "{at}: unknown op {name:?}; a plan's ops are {}",
            PLAN_OPS.join(", ")
        );
    }
    let root = Cli::command();
    let sub = root
        .find_subcommand(name)
        .expect("every plan op is a subcommand");
    let argv = command_line(at, name, sub, fields, dataset, base)?;
    let target = argv.last().map(|a| a.to_string_lossy().into_owned());
    let label = format!("{at} ({name} {})", target.unwrap_or_default());
    let cli = Cli::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("{label}: {}", super::usage_line(&e.render().to_string())))?;
    Ok(PlannedOp {
        label,
        command: cli.command,
    })
}

/// `spatialzarr NAME --option=value ... -- DATASET TARGET` for the fields of an op.
fn command_line(
    at: &str,
    name: &str,
    sub: &clap::Command,
    fields: &Map<String, Value>,
    dataset: &Path,
    base: &Path,
) -> anyhow::Result<Vec<OsString>> {
    // The positional argument besides the dataset: `name`, or `table`.
    let target_key = sub
        .get_positionals()
        .map(|a| a.get_id().as_str())
        .find(|id| *id != "dataset")
        .expect("every plan op names its element");
    let options: Vec<&clap::Arg> = sub
        .get_arguments()
        .filter(|a| {
            a.get_long()
                .is_some_and(|l| !NOT_IN_PLANS.contains(&l) && !PLAN_WIDE.contains(&l))
        })
        .collect();
    let known = || {
        std::iter::once(target_key.to_owned())
            .chain(
                options
                    .iter()
                    .filter_map(|a| a.get_long().map(str::to_owned)),
            )
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut argv: Vec<OsString> = vec!["spatialzarr".into(), name.into()];
    let mut target = None;
    for (key, value) in fields {
        if key == "op" {
            continue;
        }
        if key == target_key {
            let Some(text) = value.as_str() else {
                bail!("{at} ({name}): {key:?} must be a string, not {value}");
            };
            target = Some(text.to_owned());
            continue;
        }
        if PLAN_WIDE.contains(&key.as_str()) {
            bail!(
                "{at} ({name}): {key:?} is an option of the whole plan, not of one operation: give `--{key}` to `spatialzarr apply`"
            );
        }
        let Some(arg) = options.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            bail!(
                "{at} ({name}): unknown key {key:?}; {name} takes {}",
                known()
            );
        };
        if !arg.get_action().takes_values() {
            match value {
                Value::Bool(true) => argv.push(format!("--{key}").into()),
                Value::Bool(false) => {}
                other => bail!("{at} ({name}): {key:?} is a flag: give true or false, not {other}"),
            }
            continue;
        }
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) if arg.get_value_delimiter().is_some() => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("{at} ({name}): {key:?} must be a list of strings"))?
                .join(","),
            other => bail!("{at} ({name}): {key:?} takes a string, not {other}"),
        };
        let is_file = arg
            .get_value_names()
            .is_some_and(|names| names.iter().any(|n| n.as_str() == "FILE"));
        let mut option = OsString::from(format!("--{key}="));
        if is_file {
            let path = base.join(&text);
            if !path.exists() {
                bail!(
                    "{at} ({name}): {key:?} names {}, which does not exist (paths are relative to the plan's folder)",
                    path.display()
                );
            }
            option.push(path);
        } else {
            option.push(&text);
        }
        argv.push(option);
    }
    let Some(target) = target else {
        bail!("{at} ({name}) has no {target_key:?}: the element it works on");
    };
    argv.extend(["--".into(), dataset.as_os_str().to_owned(), target.into()]);
    Ok(argv)
}
