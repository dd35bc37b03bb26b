//! Cluster nodes on one machine for the tests: one GlusterFS volume mounted several
//! times by independent FUSE clients (`scripts/multinode.sh`). A process working
//! through one mount plays one node; killing a mount's client is that node dying.
//!
//! The volume is started once per test process, the first time a test asks for it,
//! by a keeper process that tears it down by pid when this process ends, however it
//! ends (a failed test, Ctrl-C, SIGKILL). Each test makes its own mounts ([`Node`]),
//! unmounted when dropped.
//!
//! Where the cluster cannot start (no `/dev/fuse`, packages missing and not root),
//! [`cluster`] prints why on stderr and returns `None` (the test skips); under CI
//! (`CI=true`) it panics with that message instead, so a CI run never passes without
//! running these tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// A running GlusterFS volume (glusterd, one brick) with its scratch folder.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
}

/// Whether this runs under CI, where skipping is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/multinode.sh")
}

fn run_script(args: &[&str]) -> Result<(), String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script().display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim_start_matches("multinode: ")
            .to_owned();
        Err(format!(
            "multinode.sh {} failed ({}): {why}",
            args[0], out.status
        ))
    }
}

fn start() -> Result<Cluster, String> {
    run_script(&["available"])?;
    let dir = tempfile::Builder::new()
        .prefix("spatialzarr-cluster.")
        .tempdir()
        .map_err(|e| format!("cannot make a scratch folder: {e}"))?
        .keep();
    let owner = std::process::id().to_string();
    run_script(&[
        "up",
        dir.to_str().expect("utf-8 temp path"),
        "0",
        "--owner",
        &owner,
    ])?;
    Ok(Cluster { dir })
}

/// The cluster of this test process, started on first use; `None` when it cannot run
/// here (the reason printed, as `SKIP test: reason`). Panics under CI instead.
pub fn cluster(test: &str) -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => Some(cluster),
        Err(why) if under_ci() => {
            panic!("{test}: the GlusterFS cluster is required under CI: {why}")
        }
        Err(why) => {
            // Straight to the process's stderr: the test harness captures only the
            // print macros, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
            None
        }
    }
}

/// Tests of one process take turns on the cluster: two cores, and timing-sensitive
/// waits (a lock handed over after a node dies) are clearer without a neighbour.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// Mounts the volume once more: a new node. `label` names it in paths. Its
    /// client caches are off (the setup `docs/cluster.md` asks for).
    pub fn node(&'static self, label: &str) -> Node {
        self.new_node(label, false)
    }

    /// A node of the second volume, which keeps GlusterFS's default client caches
    /// and the kernel's default FUSE timeouts.
    pub fn cached_node(&'static self, label: &str) -> Node {
        self.new_node(label, true)
    }

    fn new_node(&'static self, label: &str, cached: bool) -> Node {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{label}{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        let node = Node {
            cluster: self,
            name,
            cached,
        };
        node.mount();
        node
    }
}

/// One mount of the volume (one node), unmounted when dropped.
#[derive(Debug)]
pub struct Node {
    cluster: &'static Cluster,
    name: String,
    cached: bool,
}

impl Node {
    /// Where this node sees the volume's root.
    pub fn root(&self) -> PathBuf {
        self.cluster.dir.join("mnt").join(&self.name)
    }

    /// `relative` as seen from this node.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root().join(relative)
    }

    fn dir(&self) -> &str {
        self.cluster.dir.to_str().expect("utf-8 temp path")
    }

    fn mount(&self) {
        let kind = if self.cached { "cached" } else { "" };
        run_script(&["mount", self.dir(), &self.name, kind]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The pid of this node's FUSE client.
    pub fn client_pid(&self) -> i32 {
        let file = self
            .cluster
            .dir
            .join("run")
            .join(format!("{}.pid", self.name));
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no client pid in {}", file.display()))
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.client_pid()).expect("a positive pid");
        rustix::process::kill_process(pid, signal).expect("signal the FUSE client");
    }

    /// The node dies: SIGKILL of its FUSE client. The mount then answers ENOTCONN.
    pub fn kill_client(&self) {
        self.signal(rustix::process::Signal::KILL);
    }

    /// The node hangs: SIGSTOP of its FUSE client (its locks stay held).
    pub fn stop_client(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// The hung node goes on: SIGCONT of its FUSE client.
    pub fn continue_client(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// Unmounts (lazily, as a dead mount needs) and mounts again at the same place.
    pub fn remount(&self) {
        run_script(&["unmount", self.dir(), &self.name]).unwrap_or_else(|e| panic!("{e}"));
        self.mount();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped client would not end on SIGTERM.
        if let Ok(pid) = std::fs::read_to_string(
            self.cluster
                .dir
                .join("run")
                .join(format!("{}.pid", self.name)),
        ) && let Some(pid) = pid
            .trim()
            .parse()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
        }
        let _ = run_script(&["unmount", self.dir(), &self.name]);
    }
}
