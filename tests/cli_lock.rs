//! `spatialzarr lock`: the flock(1)-like command, through the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli;

fn lock_cmd(dir: &std::path::Path, extra: &[&str], command: &[&str]) -> Command {
    let mut c = Command::new(cli());
    c.arg("lock").arg(dir).args(extra).arg("--").args(command);
    c.stdin(Stdio::null());
    c
}

/// Exit status of `spatialzarr lock --timeout 0.3 DIR -- true`: 0 when the lock is free.
fn probe(dir: &std::path::Path) -> i32 {
    lock_cmd(dir, &["--timeout", "0.3"], &["true"])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap()
}

/// Creates its file when dropped: the signal the test's looping commands wait for.
struct ReleaseOnDrop(std::path::PathBuf);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

fn wait_for(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exit_status_of_the_command_is_returned() {
    let dir = common::tempdir();
    let status = lock_cmd(dir.path(), &[], &["sh", "-c", "exit 3"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    let status = lock_cmd(dir.path(), &["--shared"], &["true"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(dir.path().join(".spatialzarr/lock").exists());
}

#[test]
fn timeout_exits_1_without_running_the_command() {
    let dir = common::tempdir();
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    let script = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.02; done",
        started.display(),
        release.display()
    );
    let mut holder = lock_cmd(dir.path(), &[], &["sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_for(&started);
    let ran = dir.path().join("ran");
    let begun = Instant::now();
    let out = lock_cmd(
        dir.path(),
        &["--timeout", "0.2"],
        &["touch", ran.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(begun.elapsed() >= Duration::from_millis(200));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timed out") && stderr.contains("write lock"),
        "{stderr}"
    );
    assert!(!ran.exists(), "the command ran without the lock");
    std::fs::write(&release, "").unwrap();
    assert!(holder.wait().unwrap().success());
    assert_eq!(probe(dir.path()), 0);
}

#[test]
fn nested_spatialzarr_joins_the_held_lock() {
    let dir = common::tempdir();
    let inner = format!(
        "{} lock {} --timeout 5 -- {} lock {} --shared --timeout 5 -- true",
        cli().display(),
        dir.path().display(),
        cli().display(),
        dir.path().display()
    );
    let status = lock_cmd(dir.path(), &[], &["sh", "-c", &inner])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "nested lock deadlocked or failed");
}

#[test]
fn nested_write_under_a_shared_parent_is_refused() {
    let dir = common::tempdir();
    let out = lock_cmd(
        dir.path(),
        &["--shared"],
        &[
            cli().to_str().unwrap(),
            "lock",
            dir.path().to_str().unwrap(),
            "--",
            "true",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shared"));
}

#[test]
fn killing_the_lock_command_leaves_the_lock_with_the_child() {
    let dir = common::tempdir();
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    let script = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.02; done",
        started.display(),
        release.display()
    );
    let mut parent = lock_cmd(dir.path(), &[], &["sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_for(&started);
    parent.kill().unwrap();
    parent.wait().unwrap();
    // The command goes on, still protected: nobody else gets the lock.
    assert_eq!(probe(dir.path()), 1);
    std::fs::write(&release, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe(dir.path()) != 0 {
        assert!(
            Instant::now() < deadline,
            "lock never freed after the child ended"
        );
    }
}

#[test]
fn errors_are_one_clear_line() {
    let dir = common::tempdir();
    let out = lock_cmd(&dir.path().join("absent"), &[], &["true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let tree = common::TreeSnapshot::take(dir.path());
    let out = Command::new(cli())
        .args(["lock", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing COMMAND is a usage error"
    );
    for bad in ["--timeout=-1", "--timeout=nan", "--timeout=soon"] {
        let out = lock_cmd(dir.path(), &[bad], &["true"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("seconds"),
            "{bad}"
        );
    }
    tree.assert_unchanged("refused lock command lines");
}

/// A timeout too long to represent (about 300 billion years) waits like no timeout:
/// the command runs, and a `spatialzarr` command given one under `--lock-timeout`
/// works too; nothing overflows.
#[test]
fn huge_timeouts_mean_waiting_without_limit() {
    let dir = common::tempdir();
    for timeout in ["1e19", "18446744073709551615"] {
        let ran = dir.path().join(format!("ran-{timeout}"));
        let out = lock_cmd(
            dir.path(),
            &["--timeout", timeout],
            &["touch", ran.to_str().unwrap()],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success() && ran.exists(),
            "--timeout {timeout}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dataset = dir.path().join("ds.zarr");
    common::sz_ok(&["init", "--lock-timeout", "1e19", dataset.to_str().unwrap()]);
}

/// Python's `subprocess` closes inherited descriptors by default, so a `spatialzarr`
/// started from a Python COMMAND no longer has the descriptor that carries the lock.
/// It takes its own duplicate from the ancestor that holds the lock (no deadlock),
/// and that duplicate keeps the lock held even when every process above it is killed.
#[test]
fn spatialzarr_under_python_subprocess_joins_and_keeps_the_lock() {
    let dir = common::tempdir();
    let d = dir.path();
    let (started, release, python_pid) = (d.join("started"), d.join("release"), d.join("py"));
    // The plain case first: the Python command's `spatialzarr` runs and exits 0. Where
    // the system forbids pidfd_getfd (another user's process, Yama ptrace_scope >= 1,
    // seccomp), it must instead fail at once with the error naming the descriptor.
    let python = format!(
        "import subprocess, sys\n\
         sys.exit(subprocess.run([{sz:?}, 'lock', {d:?}, '--timeout', '5', '--', 'true']).returncode)\n",
        sz = cli().display().to_string(),
        d = d.display().to_string(),
    );
    let out = lock_cmd(d, &[], &["python3", "-c", &python])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("could not be duplicated") {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("pass_fds") && stderr.lines().count() == 1,
            "{stderr}"
        );
        eprintln!("pidfd_getfd is not permitted here; the rest is skipped: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // The inner command notes its parent: the nested `spatialzarr lock`.
    let inner_pid = d.join("inner");
    let inner_script = format!(
        "echo $PPID > {}; touch {}; while [ ! -e {} ]; do sleep 0.02; done",
        inner_pid.display(),
        started.display(),
        release.display()
    );
    // Default close_fds=True: the lock's descriptor does not reach the inner command.
    let python = format!(
        "import os, subprocess, sys\n\
         open({pid:?}, 'w').write(str(os.getpid()))\n\
         sys.exit(subprocess.run([{sz:?}, 'lock', {d:?}, '--timeout', '5', '--', 'sh', '-c', {script:?}]).returncode)\n",
        pid = python_pid.display().to_string(),
        sz = cli().display().to_string(),
        d = d.display().to_string(),
        script = inner_script,
    );
    // Whatever happens, the inner command is told to end (a failed assertion must not
    // leave it looping with the test's output pipe open).
    let _release = ReleaseOnDrop(release.clone());
    let mut outer = lock_cmd(d, &[], &["python3", "-c", &python])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started);
    // Kill every process above the inner command: the holder, the Python process and
    // the nested `spatialzarr lock`. The inner command keeps the lock through the
    // descriptor handed down to it, which must be on the holder's open file.
    let pid_in = |file: &std::path::Path| -> rustix::process::Pid {
        let pid: i32 = std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        rustix::process::Pid::from_raw(pid).unwrap()
    };
    outer.kill().unwrap();
    for pid in [pid_in(&python_pid), pid_in(&inner_pid)] {
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }
    outer.wait().unwrap();
    assert_eq!(probe(d), 1, "the inner command lost the lock");
    std::fs::write(&release, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe(d) != 0 {
        assert!(
            Instant::now() < deadline,
            "lock never freed after the inner command ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
