//! `spatialzarr apply DATASET PLAN.json [--json]`: several operations in one commit.
//!
//! Every operation's input is read and checked, and every new element staged,
//! before the write lock is taken; then the operations are queued in one
//! transaction, in order, and committed together. Any refusal leaves the dataset as
//! it was.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use arrow_array::RecordBatch;
use serde_json::{Value, json};
use spatialzarr::table::AppendOutcome;
use spatialzarr::{Dataset, ElementKind, StagedElement, Transformations, WriteTxn};

use super::plan::{self, PlannedOp};
use super::{
    Command, WriteOptions, print_change, print_lines, store_cmds, table_cmds, vector_cmds,
};

/// The plan format, shown by `spatialzarr apply --help`.
const PLAN_HELP: &str = "\
PLAN is a JSON object {\"ops\": [OP, ...]}. Each OP is an object whose \"op\" names a
subcommand (add-image, add-labels, add-points, add-shapes, append-rows,
append-points, rm, set-transformations); \"name\" (\"table\" for append-rows) is the
element it works on; every other key is one of that subcommand's long options
without the dashes (see `spatialzarr SUBCOMMAND --help`), with a string value (a
comma-separated option may also take a list of strings), or true/false for a flag.
File paths are relative to the plan's folder. --lock-timeout and
--drop-consolidated-metadata are options of apply, for the whole plan, not of
its operations. Example:

  {\"ops\": [
    {\"op\": \"add-labels\", \"name\": \"t7_labels\", \"npy\": \"t7.npy\", \"dims\": \"y,x\"},
    {\"op\": \"append-rows\", \"table\": \"cells\", \"csv\": \"t7.csv\", \"x-npy\": \"t7.x.npy\", \"key\": \"t7\"},
    {\"op\": \"rm\", \"name\": \"t7_draft\"}
  ]}

All operations commit together, or none: an unknown op or key, a value of the
wrong type, a missing file or any refused operation (named by its index, ops[N])
changes nothing. With --json the outcome is one object {\"generation\": N, \"ops\":
[...]}, one entry per operation.";

/// Arguments of `spatialzarr apply`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = PLAN_HELP)]
pub struct ApplyArgs {
    /// The dataset (it must exist; create it with `spatialzarr init`).
    dataset: PathBuf,
    /// The plan: a JSON file of operations (see below).
    plan: PathBuf,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
}

/// One operation of a plan, its input read (and its element staged), waiting for
/// the transaction.
pub(super) enum PendingOp {
    /// Add (or replace) a staged element.
    Add {
        /// The element's kind.
        kind: ElementKind,
        /// Its name.
        name: String,
        /// Its files, written without the lock.
        staged: StagedElement,
        /// Whether it may replace an element of the same kind and name.
        overwrite: bool,
    },
    /// Remove an element.
    Remove {
        /// The element.
        name: String,
    },
    /// Replace an element's transformations.
    SetTransformations {
        /// The element.
        name: String,
        /// Its new transformations.
        transformations: Transformations,
    },
    /// Append table rows.
    AppendRows {
        /// The operation's arguments.
        args: table_cmds::AppendRowsArgs,
        /// The rows, read and checked.
        input: Box<table_cmds::RowsInput>,
    },
    /// Append points.
    AppendPoints {
        /// The operation's arguments.
        args: vector_cmds::AppendPointsArgs,
        /// The points, read with the element's column types.
        batch: RecordBatch,
    },
}

/// What one operation did: its JSON entry and its phrase in the one-line summary.
struct Done {
    json: Value,
    text: String,
}

/// `apply`: reads the plan, prepares every operation, then commits them together.
pub fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let dataset = vector_cmds::open_existing(&args.dataset, &args.options)?;
    let planned = plan::read(&args.plan, &args.dataset)?;
    let mut pending = Vec::with_capacity(planned.len());
    for PlannedOp { label, command } in planned {
        let op = prepare(command, &dataset).with_context(|| label.clone())?;
        pending.push((label, op));
    }
    let mut txn = dataset.write()?;
    let mut done = Vec::with_capacity(pending.len());
    for (label, op) in pending {
        done.push(queue(&mut txn, &dataset, op).with_context(|| label)?);
    }
    let commit = txn.commit()?;
    if args.json {
        let ops: Vec<&Value> = done.iter().map(|d| &d.json).collect();
        super::print_notices(&commit);
        let object = json!({"generation": commit.generation, "ops": ops});
        print_lines(|out| writeln!(out, "{object}"))?;
    } else {
        let phrases: Vec<&str> = done.iter().map(|d| d.text.as_str()).collect();
        let line = format!(
            "applied {}: {}",
            super::counted(done.len(), "operation"),
            phrases.join("; ")
        );
        super::print_notices(&commit);
        print_change(false, &line, commit.generation, &())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the input of one operation (without the lock).
fn prepare(command: Command, dataset: &Dataset) -> anyhow::Result<PendingOp> {
    match command {
        Command::AddImage(a) => store_cmds::prepare_add(ElementKind::Images, a, dataset),
        Command::AddLabels(a) => store_cmds::prepare_add(ElementKind::Labels, a, dataset),
        Command::Rm(a) => store_cmds::prepare_rm(a),
        Command::SetTransformations(a) => store_cmds::prepare_set_transformations(a),
        Command::AddPoints(a) => vector_cmds::prepare_add_points(a, dataset),
        Command::AddShapes(a) => vector_cmds::prepare_add_shapes(a, dataset),
        Command::AppendPoints(a) => vector_cmds::prepare_append_points(a, dataset),
        Command::AppendRows(a) => table_cmds::prepare_append_rows(a, dataset),
        other => bail!("{other:?} cannot be part of a plan"),
    }
}

/// Queues one operation in the transaction (under the lock), checking it against
/// the committed state and the operations before it.
fn queue(txn: &mut WriteTxn<'_>, dataset: &Dataset, op: PendingOp) -> anyhow::Result<Done> {
    Ok(match op {
        PendingOp::Add {
            kind,
            name,
            staged,
            overwrite,
        } => {
            let replaces = txn.kind_of(&name)? == Some(kind);
            txn.add_staged(staged, overwrite)?;
            let outcome = if replaces { "replaced" } else { "added" };
            let noun = kind.to_string();
            Done {
                text: format!("{outcome} {noun} {name}"),
                json: json!({"op": format!("add-{}", op_noun(kind)), "name": name, "kind": noun, "outcome": outcome}),
            }
        }
        PendingOp::Remove { name } => {
            let kind = txn.kind_of(&name)?;
            txn.remove(&name)?;
            let noun = kind.map(|k| k.to_string()).unwrap_or_default();
            Done {
                text: format!("removed {noun} {name}"),
                json: json!({"op": "rm", "name": name, "kind": noun, "outcome": "removed"}),
            }
        }
        PendingOp::SetTransformations {
            name,
            transformations,
        } => {
            txn.set_transformations(&name, &transformations)?;
            let systems: Vec<&String> = transformations.0.keys().collect();
            Done {
                text: format!("set the transformations of {name}"),
                json: json!({"op": "set-transformations", "name": name, "coordinate_systems": systems, "outcome": "updated"}),
            }
        }
        PendingOp::AppendRows { args, input } => {
            let outcome = table_cmds::append_in(txn, dataset, &args, *input)?;
            appended("append-rows", "table", "rows", &outcome)
        }
        PendingOp::AppendPoints { args, batch } => {
            let (name, key) = vector_cmds::name_and_key(&args);
            let outcome = txn
                .append_points(name, &batch, key)
                .with_context(|| vector_cmds::append_context(&args))?;
            appended("append-points", "name", "points", &outcome)
        }
    })
}

/// The noun of an add subcommand for an element kind (`add-image`, `add-labels`).
fn op_noun(kind: ElementKind) -> &'static str {
    match kind {
        ElementKind::Images => "image",
        ElementKind::Labels => "labels",
        ElementKind::Points => "points",
        ElementKind::Shapes => "shapes",
        ElementKind::Tables => "table",
    }
}

/// What an append did: its range, key and whether it was applied.
fn appended(op: &str, target_key: &str, noun: &str, outcome: &AppendOutcome) -> Done {
    let key = outcome.key.as_deref();
    let text = super::append_phrase(outcome, noun);
    let mut json = json!({
        "op": op,
        "start": outcome.start,
        "stop": outcome.end,
        "key": key,
        "applied": outcome.applied,
    });
    json[target_key] = json!(outcome.table);
    Done { json, text }
}
