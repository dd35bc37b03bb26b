//! `spatialzarr bench-worker ROLE ARGS...` (hidden): one process of a multi-process
//! scenario of `spatialzarr bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use spatialzarr::DatasetOptions;

use super::{labels, latency, rows, scale};

/// Arguments of `spatialzarr bench-worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// What to do: `labels-ours`, `labels-plain`, `rows-ours`, `rows-plain` (each
    /// `ours` also as `...-process`, without fsync; each `plain` also as `...-fsync`,
    /// fsyncing what it writes; `labels-ours-strict` fsyncing every folder it
    /// changes), `writers`, `commit` or `handoff`.
    role: String,
    /// The role's arguments: a folder, then numbers.
    args: Vec<String>,
}

/// Runs one bench worker.
pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // Killed with the bench, whatever ends it.
    crate::cli::workers::die_with_parent()?;
    let folder = |i: usize| -> anyhow::Result<PathBuf> {
        args.args
            .get(i)
            .map(PathBuf::from)
            .with_context(|| format!("bench-worker {}: argument {i} is missing", args.role))
    };
    let number = |i: usize| -> anyhow::Result<usize> {
        let text = args
            .args
            .get(i)
            .with_context(|| format!("bench-worker {}: argument {i} is missing", args.role))?;
        text.parse()
            .with_context(|| format!("bench-worker {}: {text:?} is not a number", args.role))
    };
    match args.role.as_str() {
        "labels-ours" | "labels-ours-process" | "labels-ours-strict" => labels::ours(
            &folder(0)?,
            number(1)?,
            number(2)?,
            number(3)?,
            DatasetOptions {
                durability: Some(super::role_durability(&args.role)),
                folder_sync: super::role_folder_sync(&args.role),
                ..DatasetOptions::default()
            },
        )?,
        "labels-plain" | "labels-plain-fsync" => labels::plain(
            &folder(0)?,
            number(1)?,
            number(2)?,
            number(3)?,
            args.role.ends_with("-fsync"),
        )?,
        "rows-ours" | "rows-ours-process" => rows::ours(
            &folder(0)?,
            number(1)?,
            number(2)?,
            super::role_durability(&args.role),
        )?,
        "rows-plain" | "rows-plain-fsync" => rows::plain(
            &folder(0)?,
            number(1)?,
            number(2)?,
            args.role.ends_with("-fsync"),
        )?,
        "writers" => scale::writer(&folder(0)?, number(1)?, number(2)?)?,
        "commit" => latency::commit_worker(&folder(0)?, number(1)?, number(2)?)?,
        "handoff" => {
            let raw = match args.args.get(1).map(String::as_str) {
                Some("raw") => true,
                Some("ours") => false,
                other => bail!("bench-worker handoff: expected raw or ours, not {other:?}"),
            };
            for sample in latency::dance(&folder(0)?, raw, number(2)?)? {
                println!("{sample}");
            }
        }
        other => bail!("unknown bench-worker role {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
