//! Worker processes (this binary in a hidden mode) that never outlive the command
//! that started them.
//!
//! - Each worker asks the kernel to kill it when its parent dies
//!   (`PR_SET_PDEATHSIG` on Linux, `PROC_PDEATHSIG_CTL` on FreeBSD), whatever kills
//!   the parent, even SIGKILL; a parent that died before the request took effect is
//!   noticed by comparing the parent process id with the one the parent passed down.
//! - A parent that runs workers catches SIGINT, SIGTERM and SIGHUP while they run
//!   and stops them (SIGKILL, then waits for each) before it exits: polled by a
//!   parent that watches its workers anyway ([`StopSignals`], the demo), or by a
//!   thread that stops the [`Running`] workers and ends the process (the bench,
//!   whose parent blocks on its workers' output).
//!
//! A worker killed at any moment leaves the dataset as a crash does: every commit is
//! there or not at all, and what it was staging is removed by `spatialzarr recover`.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};

/// The environment variable through which a parent gives its workers its process id.
const PARENT_PID_ENV: &str = "SPATIALZARR_WORKER_PARENT_PID";

/// The signals that stop a command running workers.
const STOP_SIGNALS: [(i32, &str); 3] = [
    (signal_hook::consts::SIGINT, "SIGINT"),
    (signal_hook::consts::SIGTERM, "SIGTERM"),
    (signal_hook::consts::SIGHUP, "SIGHUP"),
];

/// This program, started as `spatialzarr MODE`, told who its parent is.
pub fn command(mode: &str) -> anyhow::Result<Command> {
    let exe: PathBuf = std::env::current_exe().context("cannot find this program's path")?;
    let mut command = Command::new(exe);
    command
        .arg(mode)
        .env(PARENT_PID_ENV, std::process::id().to_string());
    Ok(command)
}

/// Called first by every worker: asks the kernel to kill this process when its
/// parent dies, and fails when the parent that started it is already gone.
pub fn die_with_parent() -> anyhow::Result<()> {
    let Some(expected) = std::env::var_os(PARENT_PID_ENV) else {
        bail!("this mode is started by spatialzarr itself ({PARENT_PID_ENV} is not set)");
    };
    let expected: i32 = expected
        .to_str()
        .and_then(|text| text.parse().ok())
        .with_context(|| format!("{PARENT_PID_ENV} is not a process id: {expected:?}"))?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("cannot ask to be stopped with the parent process")?;
    // The request covers deaths from now on: a parent that died before it has left
    // this process to another parent.
    let parent = rustix::process::Pid::as_raw(rustix::process::getppid());
    if parent != expected {
        bail!("the process that started this worker ({expected}) has exited");
    }
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP caught from [`StopSignals::catch`] on: instead of
/// ending the process at once, each is recorded for the command to stop its workers.
/// (The handlers stay for the rest of the process, which ends soon after.)
pub struct StopSignals {
    /// The last signal received, 0 for none.
    received: Arc<AtomicUsize>,
}

impl StopSignals {
    /// Starts catching the stop signals.
    pub fn catch() -> anyhow::Result<Self> {
        let received = Arc::new(AtomicUsize::new(0));
        for (signal, name) in STOP_SIGNALS {
            signal_hook::flag::register_usize(signal, Arc::clone(&received), signal as usize)
                .with_context(|| format!("cannot catch {name}"))?;
        }
        Ok(Self { received })
    }

    /// The signal received so far, if any: its number and name.
    pub fn received(&self) -> Option<(i32, &'static str)> {
        let number = self.received.load(Ordering::SeqCst);
        STOP_SIGNALS
            .into_iter()
            .find(|(signal, _)| *signal as usize == number)
    }
}

/// Kills every worker still running and waits for each, so that none is left when
/// this returns.
pub fn stop_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        // Fails only for a worker that was already waited for.
        let _ = child.kill();
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}

/// The workers a stop signal kills, by process id: registered when started, taken
/// out once waited for (so that a signal never hits a reused process id).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A started worker, registered for [`stop_running_on_signal`] until dropped (drop
/// it after waiting for the child).
pub struct Running {
    pid: u32,
}

impl Running {
    /// Starts `command` and registers the child.
    pub fn spawn(command: &mut Command) -> std::io::Result<(Child, Self)> {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        let child = command.spawn()?;
        let pid = child.id();
        running.push(pid);
        Ok((child, Self { pid }))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|pid| *pid != self.pid);
    }
}

/// From now on, SIGINT, SIGTERM or SIGHUP kill every registered worker, wait for
/// each, say so on stderr (naming `what` was stopped) and end this process with
/// status 128 + the signal's number.
pub fn stop_running_on_signal(what: &'static str) -> anyhow::Result<()> {
    let numbers: Vec<i32> = STOP_SIGNALS.iter().map(|(signal, _)| *signal).collect();
    let mut signals =
        signal_hook::iterator::Signals::new(&numbers).context("cannot catch the stop signals")?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
            let pids: Vec<rustix::process::Pid> = running
                .iter()
                .filter_map(|pid| rustix::process::Pid::from_raw(i32::try_from(*pid).ok()?))
                .collect();
            for pid in &pids {
                let _ = rustix::process::kill_process(*pid, rustix::process::Signal::KILL);
            }
            for pid in &pids {
                // Fails only for a worker the main thread reaped meanwhile.
                let _ = rustix::process::waitpid(Some(*pid), rustix::process::WaitOptions::empty());
            }
            let name = STOP_SIGNALS
                .iter()
                .find(|(number, _)| *number == signal)
                .map_or("a signal", |(_, name)| name);
            eprintln!(
                "spatialzarr: {what} stopped by {name} ({} workers stopped)",
                pids.len()
            );
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}
