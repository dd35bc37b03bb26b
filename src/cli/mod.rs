//! Command-line parsing and dispatch. A command that changes the dataset prints one
//! line on success (what changed, then the generation), or with `--json` one JSON
//! object holding `"generation"`. Errors print as one line on stderr; exit status
//! 2 for usage errors (clap's), 1 for every other failure.

mod apply_cmd;
mod bench;
mod csv_input;
mod csv_types;
mod demo;
mod inspect_cmds;
mod lock_cmd;
mod npy;
mod plan;
mod store_cmds;
mod table_cmds;
mod transform_input;
mod vector_cmds;
mod workers;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spatialzarr::{ConsolidatedMetadata, DatasetOptions, ElementKind};

/// Concurrency-safe SpatialData datasets on Zarr.
#[derive(Debug, Parser)]
#[command(name = "spatialzarr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The options of every command that reads a dataset.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadOptions {
    /// Give up waiting for a dataset lock after this many seconds (default: wait forever).
    ///
    /// A writing command (add-labels, add-image, append-rows into an existing table)
    /// that finds the write lock taken queues its change for the holder's commit
    /// (group commit). When the timeout passes first, it withdraws the change and
    /// nothing is committed; if the holder had already taken it, it waits at least 60 s
    /// more for the result, and failing that says the change may or may not be
    /// committed (retry a keyed append with the same key: it is never applied twice).
    /// SPATIALZARR_GROUP_COMMIT=off makes every command wait and commit alone.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
    lock_timeout: Option<std::time::Duration>,
}

impl ReadOptions {
    /// The options of the dataset handles a reading command opens.
    fn dataset_options(&self) -> DatasetOptions {
        DatasetOptions {
            lock_timeout: self.lock_timeout,
            ..Default::default()
        }
    }
}

/// The help of `--durability`: what each level survives, with the power-loss risk of
/// `process` in the words of the documentation.
fn durability_help() -> String {
    format!(
        "What an acknowledged commit survives [default: the SPATIALZARR_DURABILITY environment variable, else full].\n\
         full: every file a commit depends on is fsynced before it returns; the commit survives a power loss or a kernel crash.\n\
         process: no fsync. {}",
        spatialzarr::storage::durability::PROCESS_GUARANTEE
    )
}

/// The durability option of every command that changes a dataset.
#[derive(Debug, Clone, clap::Args)]
pub struct DurabilityOption {
    #[arg(long, value_name = "full|process", value_parser = parse_durability, long_help = durability_help(),
        help = "What an acknowledged commit survives: full (fsync, survives power loss) or process (no fsync, survives only process crashes; see --help)")]
    durability: Option<spatialzarr::Durability>,
}

impl DurabilityOption {
    /// The level asked for (`None`: the environment's, else full).
    fn level(&self) -> Option<spatialzarr::Durability> {
        self.durability
    }

    /// This option as command-line arguments, for a worker process.
    fn to_args(&self) -> Vec<String> {
        match self.durability {
            Some(level) => vec!["--durability".to_string(), level.to_string()],
            None => Vec::new(),
        }
    }
}

fn parse_durability(value: &str) -> Result<spatialzarr::Durability, String> {
    value.parse().map_err(|e| format!("{e}"))
}

/// The options of every command that changes a dataset.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteOptions {
    #[command(flatten)]
    read: ReadOptions,

    #[command(flatten)]
    durability: DurabilityOption,

    /// Remove zarr-python's consolidated metadata from the root `zarr.json` at this
    /// commit instead of keeping it current (readers then list the hierarchy).
    #[arg(long)]
    drop_consolidated_metadata: bool,

    /// Consolidated metadata in the root `zarr.json`, when the dataset has it: `keep`
    /// it current while the document is at most 1 MiB, then drop it (the default);
    /// `keep-unbounded` at any size; `drop` it at this commit.
    #[arg(long, value_name = "POLICY", value_parser = str::parse::<ConsolidatedMetadata>)]
    consolidated: Option<ConsolidatedMetadata>,

    /// Whether `full` commits fsync the folders they change: `auto` (not on a local
    /// xfs, or ext3/ext4 with a journal, whose journal makes those changes durable in
    /// order; yes elsewhere, ext4 without a journal included), `strict` (always) or `ordered` (never: only for a filesystem that
    /// keeps that order) [default: the SPATIALZARR_FOLDER_SYNC environment variable,
    /// else auto].
    #[arg(long, value_name = "auto|strict|ordered", value_parser = str::parse::<spatialzarr::FolderSync>)]
    folder_sync: Option<spatialzarr::FolderSync>,

    /// The `ome.labels` list of `labels/zarr.json`: `N` (written while there are at
    /// most N labels, removed above; default 10000), `always` or `never`.
    #[arg(long, value_name = "N|always|never", value_parser = str::parse::<spatialzarr::LabelsList>)]
    labels_list: Option<spatialzarr::LabelsList>,
}

impl WriteOptions {
    /// The options of the dataset handles a changing command opens.
    fn dataset_options(&self) -> DatasetOptions {
        DatasetOptions {
            consolidated: if self.drop_consolidated_metadata {
                ConsolidatedMetadata::Drop
            } else {
                self.consolidated.unwrap_or_default()
            },
            durability: self.durability.level(),
            folder_sync: self.folder_sync,

            labels_list: self.labels_list.unwrap_or_default(),
            ..self.read.dataset_options()
        }
    }

    /// These options as command-line arguments, for a worker process.
    fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(timeout) = self.read.lock_timeout {
            args.extend([
                "--lock-timeout".to_string(),
                timeout.as_secs_f64().to_string(),
            ]);
        }
        if self.drop_consolidated_metadata {
            args.push("--drop-consolidated-metadata".to_string());
        }
        args.extend(self.durability.to_args());

        if let Some(policy) = self.consolidated {
            args.extend(["--consolidated".to_string(), policy.to_string()]);
        }
        if let Some(list) = self.labels_list {
            args.extend(["--labels-list".to_string(), list.to_string()]);
        }
        args
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND while holding DIR's lock, like flock(1).
    Lock(lock_cmd::LockArgs),
    /// Create an empty dataset.
    Init(store_cmds::InitArgs),
    /// Add an image from a .npy file.
    AddImage(store_cmds::AddArgs),
    /// Add a labels element from a .npy file of integers.
    AddLabels(store_cmds::AddArgs),
    /// Remove an element.
    Rm(store_cmds::RmArgs),
    /// Replace the coordinate transformations of an image, labels, points or shapes
    /// element.
    SetTransformations(store_cmds::SetTransformationsArgs),
    /// Apply the operations of a JSON plan (adds, appends, removals,
    /// transformations) in one commit: all of them, or none.
    Apply(apply_cmd::ApplyArgs),
    /// List the elements, one `KIND<TAB>NAME` line each.
    Ls(inspect_cmds::LsArgs),
    /// Describe an element.
    Info(inspect_cmds::InfoArgs),
    /// Check the dataset's consistency (exit status 1 when something is wrong).
    Check(inspect_cmds::CheckArgs),
    /// Finish an interrupted commit and remove what dead writers left behind.
    Recover(store_cmds::RecoverArgs),
    /// Upgrade a dataset of store format version 1 (names listed in the manifest) to
    /// version 2 (the bucketed element index), in one commit. Any write upgrades too.
    Upgrade(store_cmds::RecoverArgs),
    /// Append the rows of a CSV file (and X rows from a .npy file) to a table,
    /// creating the table on the first append.
    AppendRows(table_cmds::AppendRowsArgs),
    /// Add a points element from a CSV file (numeric x, y and optionally z columns).
    AddPoints(vector_cmds::AddPointsArgs),
    /// Append the points of a CSV file to a points element, as one new part.
    AppendPoints(vector_cmds::AppendPointsArgs),
    /// Add a shapes element: circles from a CSV file (x, y, radius) or polygons from
    /// a GeoJSON file.
    AddShapes(vector_cmds::AddShapesArgs),
    /// Add synthetic images and segment them with worker processes writing the
    /// dataset at once (labels and a `cells` table); resumes where it stopped.
    Demo(demo::DemoArgs),
    /// Measure each scenario beside its baseline (a table, or JSON with --json).
    Bench(bench::BenchArgs),
    /// One worker process of `bench` (internal).
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
    /// One worker process of `demo` (internal).
    #[command(hide = true)]
    DemoWorker(demo::WorkerArgs),
}

/// Parses a number of seconds from the command line, refusing negative, infinite
/// and NaN values (a usage error, exit status 2). A finite number too large for a
/// duration means "wait without limit".
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{text}` must be a finite number of seconds >= 0"));
    }
    Ok(std::time::Duration::try_from_secs_f64(value).unwrap_or(std::time::Duration::MAX))
}

/// Parses a whole number >= 0 from the command line (a usage error otherwise).
fn parse_whole_number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| {
        if text.starts_with('-') {
            format!("`{text}` is negative: give a whole number >= 0")
        } else {
            format!("`{text}` is not a whole number >= 0 (at most {})", u64::MAX)
        }
    })
}

/// Parses the command line, runs the command and returns its exit status.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    let result = match cli.command {
        Command::Lock(args) => lock_cmd::run(args),
        Command::Init(args) => store_cmds::init(args),
        Command::AddImage(args) => store_cmds::add(ElementKind::Images, args),
        Command::AddLabels(args) => store_cmds::add(ElementKind::Labels, args),
        Command::Rm(args) => store_cmds::rm(args),
        Command::SetTransformations(args) => store_cmds::set_transformations(args),
        Command::Apply(args) => apply_cmd::apply(args),
        Command::Ls(args) => inspect_cmds::ls(args),
        Command::Info(args) => inspect_cmds::info(args),
        Command::Check(args) => inspect_cmds::check(args),
        Command::Recover(args) => store_cmds::recover(args),
        Command::Upgrade(args) => store_cmds::upgrade(args),
        Command::AppendRows(args) => table_cmds::append_rows(args),
        Command::AddPoints(args) => vector_cmds::add_points(args),
        Command::AppendPoints(args) => vector_cmds::append_points(args),
        Command::AddShapes(args) => vector_cmds::add_shapes(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchWorker(args) => bench::worker(args),
        Command::Demo(args) => demo::run(args),
        Command::DemoWorker(args) => demo::worker(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("spatialzarr: {}", one_line(&error));
            ExitCode::from(1)
        }
    }
}

/// Reports a command line that cannot be parsed as one line on stderr, exit status 2
/// (help and version requests print as usual, exit status 0).
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        // Printing to a closed stdout is not worth an error of its own.
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    // The subcommand named on the command line, for the help to point at.
    let command = <Cli as clap::CommandFactory>::command();
    let subcommand = std::env::args_os().skip(1).find_map(|arg| {
        let arg = arg.to_str()?.to_owned();
        command
            .get_subcommands()
            .any(|sub| sub.get_name() == arg)
            .then_some(arg)
    });
    let help = match subcommand {
        Some(sub) => format!("spatialzarr {sub} --help"),
        None => "spatialzarr --help".to_string(),
    };
    let line = if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        "no command given".to_string()
    } else {
        usage_line(&error.render().to_string())
    };
    eprintln!("spatialzarr: {line}; see `{help}`");
    ExitCode::from(2)
}

/// clap's error text (message, the arguments concerned, tips, then usage) as one
/// line: everything before the usage, whitespace collapsed.
fn usage_line(rendered: &str) -> String {
    let message = rendered
        .split("\nUsage:")
        .next()
        .unwrap_or(rendered)
        .split("For more information")
        .next()
        .unwrap_or(rendered);
    let paragraphs: Vec<String> = message
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let text = paragraphs.join("; ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    if text.is_empty() {
        "the command line is incomplete".to_string()
    } else {
        text.to_string()
    }
}

/// Writes lines to stdout; a reader that went away before the end
/// (`spatialzarr ls DS | head -1`) is not an error.
pub fn print_lines(
    write: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'_>>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    // Block-buffered: `ls` of 10^5 elements makes one write call per 64 KiB, not one
    // per line.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `n` and the noun, plural unless `n` is 1.
fn counted(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A progress bar on stderr, drawn only when stderr is a terminal (hidden otherwise).
fn progress_bar(template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
    bar
}

/// Prints on stderr what a commit says the user should know (once, when it happened).
fn print_notices(commit: &spatialzarr::CommitInfo) {
    if let Some(nodes) = commit.dropped_consolidated {
        eprintln!(
            "notice: dropped zarr-python's consolidated metadata from zarr.json ({nodes} nodes, over {} bytes); readers now list folders (`--consolidated keep-unbounded` keeps it at any size)",
            spatialzarr::CONSOLIDATED_LIMIT_BYTES
        );
    }
}

/// Prints the one line of a command that changed the dataset: `line` then the
/// dataset's generation, or with `json` the object `fields` (a struct or a JSON
/// object, its members in their order) followed by `"generation"`.
fn print_change(
    json: bool,
    line: &str,
    generation: u64,
    fields: &impl serde::Serialize,
) -> anyhow::Result<()> {
    /// The outcome's members, then the generation.
    #[derive(serde::Serialize)]
    struct WithGeneration<'a, T: serde::Serialize> {
        #[serde(flatten)]
        fields: &'a T,
        generation: u64,
    }
    if json {
        let object = WithGeneration { fields, generation };
        let json = serde_json::to_string(&object)?;
        print_lines(|out| writeln!(out, "{json}"))
    } else {
        print_lines(|out| writeln!(out, "{line} (generation {generation})"))
    }
}

/// What an append prints with `--json`, before the generation.
#[derive(serde::Serialize)]
struct AppendJson<'a> {
    /// The table or points element.
    table: &'a str,
    /// First row (or point) of the append.
    start: u64,
    /// One past its last row.
    stop: u64,
    /// Its idempotency key.
    key: Option<&'a str>,
    /// False when the key was already committed and nothing changed.
    applied: bool,
}

/// Prints what an append did: one line naming the `noun` ("rows", "points") appended
/// or already appended under the key, or with `json` the object
/// `{"table","start","stop","key","applied","generation"}`.
fn print_append_outcome(
    outcome: &spatialzarr::table::AppendOutcome,
    noun: &str,
    generation: u64,
    json: bool,
) -> anyhow::Result<()> {
    let fields = AppendJson {
        table: &outcome.table,
        start: outcome.start,
        stop: outcome.end,
        key: outcome.key.as_deref(),
        applied: outcome.applied,
    };
    print_change(json, &append_phrase(outcome, noun), generation, &fields)
}

/// What an append did, in words: `appended rows 0..12 to cells`, or `key K already
/// appended as rows 0..12 to cells; nothing changed`.
fn append_phrase(outcome: &spatialzarr::table::AppendOutcome, noun: &str) -> String {
    if outcome.applied {
        format!(
            "appended {noun} {}..{} to {}",
            outcome.start, outcome.end, outcome.table
        )
    } else {
        format!(
            "key {} already appended as {noun} {}..{} to {}; nothing changed",
            outcome.key.as_deref().unwrap_or_default(),
            outcome.start,
            outcome.end,
            outcome.table
        )
    }
}

/// The error and its causes as one line: `error: cause: cause`, leaving out a cause
/// whose text the line already holds (many errors repeat their source's message).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_print_as_one_line() {
        let rendered = "error: unexpected argument '--jsn' found\n\n  tip: a similar argument exists: '--json'\n\nUsage: spatialzarr ls --json <DATASET>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(rendered),
            "unexpected argument '--jsn' found; tip: a similar argument exists: '--json'"
        );
        let missing = "error: the following required arguments were not provided:\n  --npy <FILE>\n  <NAME>\n\nUsage: x\n";
        assert_eq!(
            usage_line(missing),
            "the following required arguments were not provided: --npy <FILE> <NAME>"
        );
        assert_eq!(usage_line("\nUsage: x"), "the command line is incomplete");
    }

    #[test]
    fn errors_print_as_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone (os error 2)");
        let error = anyhow::Error::new(io).context("cannot open x: gone (os error 2)");
        assert_eq!(one_line(&error), "cannot open x: gone (os error 2)");
        let error = anyhow::anyhow!("inner\nproblem").context("outer");
        assert_eq!(one_line(&error), "outer: inner problem");
    }
}
