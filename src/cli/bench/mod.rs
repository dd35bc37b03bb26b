//! `spatialzarr bench [--json] [--quick]`: each scenario measured beside its baseline
//! in the same run, alternating the two to cancel drift.
//!
//! Scenarios (`--quick` shrinks each):
//! 1. `add_labels`: 8 processes add 64 labels of 1024x1024 uint32; baseline: the same
//!    processes write the same arrays with plain zarrs, no locks, no atomic publish,
//!    every file written and each folder holding one fsynced (not the parents of new
//!    folders); `add_labels_strict`: ours fsyncing every folder
//!    it changes too (`FolderSync::Strict`) beside the same baseline;
//!    `add_labels_process`: ours without fsync (`Durability::Process`) beside the
//!    baseline without fsync.
//! 2. `append_rows`: 8 processes make 400 appends of 1,000 rows (10 numeric columns,
//!    a categorical region, dense X of width 50); baseline: one process appends the
//!    same batches with plain zarrs, fsyncing each append's files and folders;
//!    `append_rows_process`: both without fsync.
//! 3. `append_scaling`: one 1,000-row append into tables of 10^3, 10^5 and 10^7
//!    rows; `append_vs_rewrite`: the same at 10^5 rows beside the rewrite workaround
//!    (read the whole table, concatenate, write it anew).
//! 4. `commit_latency`: a small metadata-only commit (new transformations), 1 and 8
//!    writers; baseline: one atomic publish of a small file (fsynced); also 1 writer
//!    fsyncing every folder it changes (`FolderSync::Strict`), and 1 writer without
//!    fsync beside a publish without fsync.
//! 5. `lock_handoff`: release-to-acquire across two processes; baseline: raw flock.
//! 6. `many_elements`: 50 single `add_labels` (library and CLI), `ls`, `info`, 1,000-row
//!    appends into a 10^6-row table and `check` in a dataset of 10^5 labels; baseline:
//!    the same at 10 elements.
//! 7. `many_writers`: 256 processes, each one labels element and 4 keyed appends of 200
//!    rows; baseline: 8 processes doing the same total work.
//!
//! Multi-process scenarios start their workers (`spatialzarr bench-worker`, hidden),
//! let each prepare its data, then release them together and time until the last
//! one exits. Between two sides of `add_labels` and `append_rows` the scratch
//! filesystem is synced (untimed), so that no side pays for the writeback of the
//! one before. SIGINT, SIGTERM or SIGHUP stop the workers before the bench exits, and
//! a worker whose bench dies is killed with it (see `cli::workers`).

mod labels;
mod latency;
mod plain_store;
mod rows;
mod scale;
mod worker;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

pub use worker::{WorkerArgs, run as worker};

use super::workers::Running;

/// The names of the scenarios, in the order they run.
const SCENARIOS: [&str; 7] = [
    "add_labels",
    "append_rows",
    "append_scaling",
    "commit_latency",
    "lock_handoff",
    "many_elements",
    "many_writers",
];

/// Arguments of `spatialzarr bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object `{"scenarios":[...]}` instead of a table.
    #[arg(long)]
    json: bool,
    /// Shrink every scenario so that the whole run takes under a minute.
    #[arg(long)]
    quick: bool,
    /// The number of labels elements of `many_elements`' large dataset (default 10^5;
    /// 2,000 with --quick).
    #[arg(long, value_name = "N")]
    elements: Option<usize>,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
    /// Folder for the scratch datasets (default: a new temporary folder, removed at
    /// the end). Put it on the filesystem you want to measure.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The folder given to --dir as another node sees it (another mount of the same
    /// shared filesystem): the `lock_handoff` helper and every second writer of
    /// `commit_latency` work through it, so the lock is handed from node to node.
    #[arg(long, value_name = "DIR", requires = "dir")]
    peer_dir: Option<PathBuf>,
    /// Keep each scenario's scratch datasets under --dir (for a look afterwards)
    /// instead of removing them.
    #[arg(long, requires = "dir")]
    keep: bool,
}

/// `(dir, peer_dir)` of this run, when --peer-dir is given.
static PEER: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();

/// `path` (under --dir) as the other node reaches it when `peer` and --peer-dir is
/// given; else `path` itself.
fn through_peer(path: &Path, peer: bool) -> PathBuf {
    match PEER.get() {
        Some((dir, peer_dir)) if peer => match path.strip_prefix(dir) {
            Ok(relative) => peer_dir.join(relative),
            Err(_) => path.to_path_buf(),
        },
        _ => path.to_path_buf(),
    }
}

/// One measured line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// The scenario (and variant).
    pub name: String,
    /// Our figure.
    pub ours: f64,
    /// The baseline's figure, measured in the same run.
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// Unit of `ours` and `baseline`.
    pub unit: &'static str,
    /// `ours / baseline` (lower is better).
    pub ratio: f64,
    /// The ratio aimed at, when there is one.
    pub goal: Option<f64>,
    /// Further figures (sizes, counts, percentiles).
    pub details: Value,
}

impl Measure {
    fn new(
        name: &str,
        (ours, baseline): (f64, f64),
        baseline_name: &str,
        unit: &'static str,
        goal: Option<f64>,
        details: Value,
    ) -> Self {
        Self {
            name: name.to_owned(),
            ours,
            baseline,
            baseline_name: baseline_name.to_owned(),
            unit,
            ratio: ours / baseline,
            goal,
            details,
        }
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
struct Report {
    scenarios: Vec<Measure>,
    quick: bool,
    cores: usize,
    seconds: f64,
}

/// `bench`: runs the scenarios and prints the report.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    super::workers::stop_running_on_signal("bench")?;
    for name in &args.only {
        if !SCENARIOS.contains(&name.as_str()) {
            bail!(
                "unknown scenario {name:?}; the scenarios are {}",
                SCENARIOS.join(", ")
            );
        }
    }
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
            if let Some(peer_dir) = &args.peer_dir {
                if !peer_dir.is_dir() {
                    bail!(
                        "--peer-dir {} is not a folder: give the --dir folder as another mount sees it",
                        peer_dir.display()
                    );
                }
                let _ = PEER.set((dir.clone(), peer_dir.clone()));
            }
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().context("cannot make a temporary folder")?;
            temp.path().to_path_buf()
        }
    };
    let started = Instant::now();
    let mut scenarios = Vec::new();
    for name in SCENARIOS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let scratch = dir.join(name);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot make {}", scratch.display()))?;
        if !args.json {
            eprintln!("bench: {name} ...");
        }
        // Each scenario starts on a disk that is not still writing back the
        // gigabytes an earlier one wrote (or removed): that writeback slowed the
        // next scenario's fsyncs, and even its commits without fsync, several times.
        rustix::fs::sync();
        let measures = match name {
            "add_labels" => labels::add_labels(&scratch, args.quick)?,
            "append_rows" => rows::append_rows(&scratch, args.quick)?,
            "append_scaling" => rows::append_scaling(&scratch, args.quick)?,
            "commit_latency" => latency::commit_latency(&scratch, args.quick)?,
            "many_elements" => scale::many_elements(&scratch, args.quick, args.elements)?,
            "many_writers" => scale::many_writers(&scratch, args.quick)?,
            _ => latency::lock_handoff(&scratch, args.quick)?,
        };
        if !args.keep {
            std::fs::remove_dir_all(&scratch)
                .with_context(|| format!("cannot remove {}", scratch.display()))?;
        }
        scenarios.extend(measures);
    }
    let report = Report {
        scenarios,
        quick: args.quick,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(report: &Report) {
    println!(
        "{:<28} {:>12} {:>12} {:<6} {:>7} {:>6}  baseline",
        "scenario", "ours", "baseline", "unit", "ratio", "goal"
    );
    for m in &report.scenarios {
        let goal = m.goal.map_or_else(|| "-".to_owned(), |g| format!("{g:.2}"));
        println!(
            "{:<28} {:>12.3} {:>12.3} {:<6} {:>7.2} {:>6}  {}",
            m.name, m.ours, m.baseline, m.unit, m.ratio, goal, m.baseline_name
        );
    }
    println!(
        "({} cores, {:.0} s{})",
        report.cores,
        report.seconds,
        if report.quick { ", --quick" } else { "" }
    );
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The `p`-quantile of `values` (nearest rank; 0 when empty).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A started worker that has said it is ready.
struct Ready {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// Registered for a stop signal until the worker was waited for.
    _running: Running,
}

/// Starts `spatialzarr bench-worker ARGS...` for each argument list, waits until
/// every worker has prepared (printed `ready`), releases them together, and waits
/// for all. Returns the time from the release to the last exit, and the lines each
/// worker printed after `ready`.
pub fn run_workers(arg_lists: &[Vec<String>]) -> anyhow::Result<(Duration, Vec<Vec<String>>)> {
    let mut ready = Vec::new();
    for args in arg_lists {
        let mut command = super::workers::command("bench-worker")?;
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let (mut child, running) =
            Running::spawn(&mut command).context("cannot start a bench worker")?;
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        ready.push(Ready {
            child,
            stdout,
            _running: running,
        });
    }
    // Every worker prepares its data at once; wait for all of them.
    for (worker, args) in ready.iter_mut().zip(arg_lists) {
        let mut line = String::new();
        worker
            .stdout
            .read_line(&mut line)
            .context("cannot read a bench worker")?;
        if line.trim() != "ready" {
            let status = worker.child.wait()?;
            bail!("bench worker {args:?} failed before starting ({status})");
        }
    }
    let started = Instant::now();
    for worker in &mut ready {
        let mut stdin = worker.child.stdin.take().expect("piped");
        stdin
            .write_all(b"go\n")
            .context("cannot release a bench worker")?;
    }
    let mut outputs = Vec::new();
    let mut failed = None;
    for (worker, args) in ready.iter_mut().zip(arg_lists) {
        let lines: Vec<String> = (&mut worker.stdout).lines().map_while(Result::ok).collect();
        let status = worker.child.wait()?;
        if !status.success() && failed.is_none() {
            failed = Some(format!("bench worker {args:?} failed ({status})"));
        }
        outputs.push(lines);
    }
    let elapsed = started.elapsed();
    if let Some(message) = failed {
        bail!(message);
    }
    Ok((elapsed, outputs))
}

/// The worker's side of [`run_workers`]: says it is ready and waits to be released.
pub fn ready_and_wait() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        bail!("the bench run was abandoned before this worker started");
    }
    Ok(())
}

/// `path` as a command-line argument.
fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Parses the numbers a worker printed, one per line.
fn numbers(lines: &[String]) -> anyhow::Result<Vec<f64>> {
    lines
        .iter()
        .map(|l| {
            l.trim()
                .parse::<f64>()
                .with_context(|| format!("bench worker printed {l:?}, not a number"))
        })
        .collect()
}

/// fsyncs every file of `files` and every folder holding one, all at once (from up
/// to 16 threads), and waits: what making plain writes durable costs at least.
pub fn fsync_files(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut all: Vec<PathBuf> = files.to_vec();
    let mut folders: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    folders.sort();
    folders.dedup();
    all.extend(folders);
    let per_thread = all.len().div_ceil(16).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = all
            .chunks(per_thread)
            .map(|group| {
                scope.spawn(move || {
                    group.iter().try_for_each(|p| {
                        match std::fs::File::open(p).and_then(|f| f.sync_all()) {
                            // A chunk of fill values only is not stored.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                            other => other.with_context(|| format!("cannot fsync {}", p.display())),
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("an fsync thread panicked"))
    })
}

/// Writes back, untimed, everything the last side left dirty on the filesystem that
/// holds `scratch` (its files, and the removal of its folder), so that the next side
/// starts from a clean page cache: a side without fsync would otherwise hand its
/// writeback to the side timed after it.
pub fn settle(scratch: &Path) -> anyhow::Result<()> {
    let dir = std::fs::File::open(scratch)
        .with_context(|| format!("cannot open {}", scratch.display()))?;
    rustix::fs::syncfs(&dir).with_context(|| format!("syncfs of {}", scratch.display()))?;
    Ok(())
}

/// [`fsync_files`] of every file below `dir`.
pub fn fsync_tree(dir: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    fsync_files(&files)
}

/// The folder-sync mode a worker role names: `ROLE-strict` fsyncs every folder a
/// commit changes whatever the filesystem; any other role takes the default (the
/// environment's, else `auto`).
pub fn role_folder_sync(role: &str) -> Option<spatialzarr::FolderSync> {
    role.ends_with("-strict")
        .then_some(spatialzarr::FolderSync::Strict)
}

/// The durability level a worker role names: `ROLE-process` commits without fsync.
pub fn role_durability(role: &str) -> spatialzarr::Durability {
    if role.ends_with("-process") {
        spatialzarr::Durability::Process
    } else {
        spatialzarr::Durability::Full
    }
}
