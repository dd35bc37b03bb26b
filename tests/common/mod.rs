//! Helpers shared by the integration tests: spawning this test binary as a worker
//! process, and reading what workers report.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Environment variable carrying a worker's role.
pub const ROLE_ENV: &str = "SPATIALZARR_TEST_ROLE";
/// Environment variable carrying a worker's arguments, separated by `\x1f`.
pub const ARGS_ENV: &str = "SPATIALZARR_TEST_ARGS";
/// Prefix of the lines a worker reports on stdout.
pub const REPORT: &str = "@@ ";

/// A command that runs this test binary's ignored `child_role` test as `role`.
/// Each test file defines `#[test] #[ignore] fn child_role()` calling its dispatcher.
pub fn worker(role: &str, args: &[String]) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args([
            "child_role",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(ARGS_ENV, args.join("\x1f"))
        .stdin(Stdio::null());
    command
}

/// The role and arguments of this process, when it is a worker.
pub fn role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let args = std::env::var(ARGS_ENV).unwrap_or_default();
    let args = if args.is_empty() {
        Vec::new()
    } else {
        args.split('\x1f').map(str::to_owned).collect()
    };
    Some((role, args))
}

/// Prints one report line for the parent.
pub fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{REPORT}{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// The report lines in a worker's captured stdout.
pub fn reports(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once(REPORT).map(|(_, r)| r.to_owned()))
        .collect()
}

/// Runs workers to completion, asserting each succeeded; returns their reports.
pub fn run_all(commands: Vec<Command>) -> Vec<Vec<String>> {
    let children: Vec<Child> = commands
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("wait worker");
            assert!(
                out.status.success(),
                "worker failed ({}): stdout: {} stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            reports(&out.stdout)
        })
        .collect()
}

/// A spawned worker whose report lines can be awaited one by one.
pub struct LiveWorker {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl LiveWorker {
    /// Spawns `command` with stdout piped and read on a background thread.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, report)) = line.split_once(REPORT)
                    && tx.send(report.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits up to `timeout` for the next report line.
    pub fn next(&self, timeout: std::time::Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for a report equal to `expected`, panicking after 30 s.
    pub fn expect(&self, expected: &str) {
        let line = self.next(std::time::Duration::from_secs(30));
        assert_eq!(line.as_deref(), Some(expected), "worker report");
    }
}

impl Drop for LiveWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// The path of the `spatialzarr` binary built for these tests.
pub fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_spatialzarr"))
}

/// Reads a decimal counter file (0 when missing).
pub fn read_counter(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
