//! Command-line parsing and dispatch. Errors print as one line on stderr; exit status
//! 2 for usage errors (clap's), 1 for every other failure.

mod lock_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Concurrency-safe SpatialData datasets on Zarr.
#[derive(Debug, Parser)]
#[command(name = "spatialzarr", version, about)]
struct Cli {
    /// Give up waiting for a dataset lock after this many seconds (default: wait forever).
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_seconds)]
    lock_timeout: Option<std::time::Duration>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND while holding DIR's lock, like flock(1).
    Lock(lock_cmd::LockArgs),
}

/// Parses a number of seconds from the command line, refusing negative, infinite
/// and NaN values (a usage error, exit status 2).
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(value)
        .map_err(|_| format!("`{text}` must be a finite number of seconds >= 0"))
}

/// Parses the command line, runs the command and returns its exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lock(args) => lock_cmd::run(args, cli.lock_timeout),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("spatialzarr: {error:#}");
            ExitCode::from(1)
        }
    }
}
