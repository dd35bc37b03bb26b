//! `spatialzarr lock DIR [--shared] [--timeout SECONDS] -- COMMAND [ARGS...]`

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use spatialzarr::lock::{DatasetLock, LockOptions, inherit::HELD_LOCK_ENV};
use spatialzarr::{Dataset, DatasetOptions};

/// Arguments of `spatialzarr lock`.
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The dataset directory whose lock to hold (it must exist).
    dir: PathBuf,
    /// Take the lock shared (for readers) instead of exclusive.
    #[arg(long)]
    shared: bool,
    /// Give up after this many seconds without running COMMAND (exit status 1).
    #[arg(long, value_name = "SECONDS", value_parser = super::parse_seconds, allow_negative_numbers = true)]
    timeout: Option<std::time::Duration>,
    /// The command to run, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Runs the command under the lock and returns its exit status (128 + signal number
/// when a signal ended it).
pub fn run(args: LockArgs) -> anyhow::Result<ExitCode> {
    let timeout = args.timeout;
    let lock = DatasetLock::open(&args.dir, LockOptions::default())?;
    let mut command = std::process::Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    // The child inherits a descriptor that shares our flock: if we are killed, the
    // child still holds the lock, so it never goes on writing unprotected.
    let status = if args.shared {
        let guard = lock.read(timeout)?;
        let handed = guard
            .hand_down()
            .context("cannot share the lock with the command")?;
        command.env(HELD_LOCK_ENV, handed.env_value());
        command.status()
    } else {
        // Elements the command writes (spatialdata's `write_element`) are adopted
        // before the lock is released, through the same lock handle.
        let dataset = Dataset::open(&args.dir, DatasetOptions::default()).ok();
        let guard = match &dataset {
            Some(dataset) => dataset.lock().write(timeout)?,
            None => lock.write(timeout)?,
        };
        let handed = guard
            .hand_down()
            .context("cannot share the lock with the command")?;
        command.env(HELD_LOCK_ENV, handed.env_value());
        let status = command.status();
        if let Some(dataset) = &dataset {
            match dataset.reconcile() {
                Ok(_) | Err(spatialzarr::Error::UnsupportedFormat { .. }) => {}
                Err(e) => eprintln!(
                    "warning: the elements the command wrote are not yet recorded ({e}); the next commit records them"
                ),
            }
        }
        drop(guard);
        status
    }
    .with_context(|| format!("cannot run {:?}", args.command[0]))?;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
