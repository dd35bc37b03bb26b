//! The demo: many processes writing one dataset at once.
//!
//! ```text
//! spatialzarr demo DATASET [--workers N] [--images M] [--size PX] [--seed S] [--json]
//! ```
//!
//! Adds M synthetic fluorescence images `image_000`, `image_001`, ... (reproducible
//! from the seed) to the dataset, creating it if needed, then starts N worker
//! processes (this binary, `spatialzarr demo-worker`, hidden) that segment them in
//! parallel: each image's labels `<image>_labels` and its rows of the `cells` table
//! are committed in one transaction. Finally checks the dataset and prints a summary
//! (one line, or with `--json` one object
//! `{"images":M,"labels":L,"cells":C,"segmented":K,"seconds":T,"images_per_second":R,"check_ok":true,"generation":G}`
//! where K counts the images segmented by this run, and R is K per second).
//!
//! SIGINT, SIGTERM or SIGHUP stop the workers before the demo exits (status 128 +
//! the signal's number); a worker whose parent dies, even by SIGKILL, is killed by
//! the kernel (see `workers`). Interrupting the demo at any moment, even with
//! SIGKILL to every process, loses nothing: running the same command again adds only the missing images, segments
//! only the images without labels, and never appends an image's rows twice.

mod segment;
mod synth;
mod worker;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use spatialzarr::{Dataset, Error, RasterOptions};

use super::WriteOptions;
use super::workers::{self, StopSignals};
use synth::{image_name, labels_name};
pub use worker::{WorkerArgs, run as worker};

/// The table the workers append their cells to.
const CELLS_TABLE: &str = "cells";

/// How often the parent looks at the dataset and at its workers.
const POLL: Duration = Duration::from_millis(100);

/// Arguments of `spatialzarr demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The dataset (created if it does not exist).
    dataset: PathBuf,
    /// Worker processes segmenting the images in parallel.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Synthetic images to segment (`image_000` ...).
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    images: u32,
    /// Width and height of each image, in pixels.
    #[arg(long, value_name = "PX", default_value_t = 256, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(16..=16_384))]
    size: u32,
    /// Seed of the synthetic images (same seed, same pixels).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = super::parse_whole_number)]
    seed: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: WriteOptions,
}

/// What the demo prints at the end.
#[derive(Debug, Serialize)]
struct Summary {
    /// Demo images in the dataset.
    images: usize,
    /// Demo images with labels.
    labels: usize,
    /// Rows of the `cells` table.
    cells: u64,
    /// Images segmented by this run.
    segmented: usize,
    /// Wall time of this run.
    seconds: f64,
    /// `segmented / seconds`.
    images_per_second: f64,
    /// Whether the dataset check found nothing wrong.
    check_ok: bool,
    /// The dataset's generation at the end.
    generation: u64,
}

/// `demo`: adds the images, runs the workers, checks, and prints the summary.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let images = args.images as usize;
    let workers = usize::from(args.workers);
    let ds = Dataset::open_or_create(&args.dataset, args.options.dataset_options())?;
    add_missing_images(&ds, &args)?;

    let done_before = labels_done(&ds, images)?;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(images as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images segmented, {elapsed} ({per_sec})",
        )
        .expect("valid template"),
    );
    progress.set_position(done_before as u64);

    // From here on a stop signal stops the workers before the demo exits.
    let signals = StopSignals::catch()?;
    let mut children = Vec::with_capacity(workers);
    for index in 0..workers {
        match spawn_worker(&args, index) {
            Ok(child) => children.push(child),
            Err(e) => {
                workers::stop_all(&mut children);
                return Err(e);
            }
        }
    }
    let failures = match watch(&ds, images, children, &progress, &signals)? {
        Watched::Exited(failures) => failures,
        Watched::Stopped { signal, workers } => {
            progress.finish_and_clear();
            eprintln!(
                "spatialzarr: demo stopped by {} ({workers} workers stopped); every image committed so far is kept: run the same command again to resume",
                signal.1
            );
            return Ok(ExitCode::from(128 + signal.0 as u8));
        }
    };
    progress.finish_and_clear();
    if let Some((index, status, stderr)) = failures.into_iter().next() {
        let stderr = stderr.trim().replace(['\n', '\r'], " ");
        let stderr = stderr.strip_prefix("spatialzarr: ").unwrap_or(&stderr);
        bail!("demo worker {index} failed ({status}): {stderr}");
    }

    let report = ds.check(false)?;
    let list = ds.list()?;
    let present: std::collections::BTreeSet<&str> =
        list.images.iter().map(String::as_str).collect();
    let labels = labels_done(&ds, images)?;
    let cells = match ds.table_info(CELLS_TABLE) {
        Ok(info) => info.n_obs,
        Err(Error::NoSuchElement { .. }) => 0,
        Err(e) => return Err(e.into()),
    };
    let seconds = start.elapsed().as_secs_f64();
    let segmented = labels.saturating_sub(done_before);
    let summary = Summary {
        images: (0..images)
            .filter(|i| present.contains(image_name(*i).as_str()))
            .count(),
        labels,
        cells,
        segmented,
        seconds,
        images_per_second: segmented as f64 / seconds.max(1e-9),
        check_ok: report.is_ok(),
        generation: ds.generation()?,
    };
    let line = if args.json {
        serde_json::to_string(&summary)?
    } else {
        format!(
            "segmented {} images in {:.2} s ({:.2} images/s); the dataset has {} images, {} labels, {} cells; check {} (generation {})",
            summary.segmented,
            summary.seconds,
            summary.images_per_second,
            summary.images,
            summary.labels,
            summary.cells,
            if summary.check_ok { "ok" } else { "FAILED" },
            summary.generation
        )
    };
    super::print_lines(|out| writeln!(out, "{line}"))?;
    if !report.is_ok() {
        bail!(
            "the dataset check found {} problem(s), the first: {}",
            report.problems.len(),
            report.problems[0]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds the demo images that are not in the dataset yet, `--workers` at a time.
fn add_missing_images(ds: &Dataset, args: &DemoArgs) -> anyhow::Result<()> {
    let present = ds.list()?.images;
    let missing: Vec<usize> = (0..args.images as usize)
        .filter(|i| !present.contains(&image_name(*i)))
        .collect();
    let options = RasterOptions {
        dims: Some(vec!["c".into(), "y".into(), "x".into()]),
        channel_names: Some(vec!["DAPI".into()]),
        ..RasterOptions::default()
    };
    let next = AtomicUsize::new(0);
    let threads = usize::from(args.workers).min(missing.len()).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    while let Some(&index) = missing.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let name = image_name(index);
                        let pixels = synth::image(args.seed, index, args.size as usize);
                        match ds.add_image(&name, pixels.view().into_dyn(), &options) {
                            // Another demo run added it meanwhile.
                            Ok(_) | Err(Error::NameTaken { .. }) => {}
                            Err(e) => return Err(e).context(format!("cannot add {name}")),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("image thread panicked"))
    })
}

/// How many of the first `images` demo images have labels.
fn labels_done(ds: &Dataset, images: usize) -> anyhow::Result<usize> {
    let labels = ds.list()?.labels;
    Ok((0..images)
        .filter(|i| labels.contains(&labels_name(&image_name(*i))))
        .count())
}

/// Starts worker `index`: this binary in its hidden `demo-worker` mode.
fn spawn_worker(args: &DemoArgs, index: usize) -> anyhow::Result<Child> {
    let mut command = workers::command("demo-worker")?;
    command
        .arg(&args.dataset)
        .args(["--index", &index.to_string()])
        .args(["--workers", &args.workers.to_string()])
        .args(["--images", &args.images.to_string()]);
    command.args(args.options.to_args());
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start demo worker {index}"))
}

/// How the workers ended.
enum Watched {
    /// All exited by themselves; the failed ones: index, exit status and what they
    /// printed on stderr.
    Exited(Vec<(usize, ExitStatus, String)>),
    /// A stop signal came first: every worker was stopped.
    Stopped {
        /// The signal's number and name.
        signal: (i32, &'static str),
        /// How many workers were still running.
        workers: usize,
    },
}

/// Waits for every worker, moving the progress bar as labels appear, or stops them
/// all when a stop signal arrives.
fn watch(
    ds: &Dataset,
    images: usize,
    mut children: Vec<Child>,
    progress: &indicatif::ProgressBar,
    signals: &StopSignals,
) -> anyhow::Result<Watched> {
    // Drain each worker's stderr on its own thread, so a chatty worker never blocks.
    let readers: Vec<_> = children
        .iter_mut()
        .map(|child| {
            let mut pipe = child.stderr.take().expect("piped stderr");
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        })
        .collect();
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        if let Some(signal) = signals.received() {
            let running = statuses.iter().filter(|s| s.is_none()).count();
            workers::stop_all(&mut children);
            return Ok(Watched::Stopped {
                signal,
                workers: running,
            });
        }
        for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                match child.try_wait() {
                    Ok(exited) => *status = exited,
                    Err(e) => {
                        workers::stop_all(&mut children);
                        return Err(e).context("cannot wait for a demo worker");
                    }
                }
            }
        }
        if !progress.is_hidden() {
            match labels_done(ds, images) {
                Ok(done) => progress.set_position(done as u64),
                Err(e) => {
                    workers::stop_all(&mut children);
                    return Err(e);
                }
            }
        }
        if statuses.iter().any(Option::is_none) {
            std::thread::sleep(POLL);
        }
    }
    let mut failures = Vec::new();
    for (index, (status, reader)) in statuses.into_iter().zip(readers).enumerate() {
        let status = status.expect("every worker exited");
        let stderr = reader.join().unwrap_or_default();
        if !status.success() {
            failures.push((index, status, stderr));
        }
    }
    Ok(Watched::Exited(failures))
}
