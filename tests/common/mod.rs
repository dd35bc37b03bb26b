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

/// The project's folder.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A dataset written by spatialdata 0.8.0, committed under `tests/fixtures/`
/// (`v3`: container format 0.2 on Zarr v3; `v2`: format 0.1 on Zarr v2).
pub fn fixture(version: &str) -> PathBuf {
    repo().join(format!("tests/fixtures/spatialdata-0.8.0-{version}.zarr"))
}

/// Runs `spatialzarr ARGS...` to completion.
pub fn sz<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new(cli())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run spatialzarr")
}

/// Runs `spatialzarr ARGS...`, asserting it succeeded; returns its stdout.
pub fn sz_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = sz(args);
    assert!(
        out.status.success(),
        "{:?} failed ({}): {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Asserts `out` failed with `code` and, for status 1, exactly one stderr line
/// `spatialzarr: ...` and nothing on stdout; the stderr holds every one of `words`.
pub fn assert_fails(out: &std::process::Output, code: i32, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    // Every error, usage errors (2) included, is one line on stderr.
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("spatialzarr: "), "{stderr}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    for word in words {
        assert!(stderr.contains(word), "{word:?} not in: {stderr}");
    }
}

/// The python of the interop virtualenv (made by `tests/interop/setup_venv.sh`
/// unless `SPATIALZARR_INTEROP_PYTHON` names one).
pub fn python() -> &'static Path {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(p) = std::env::var_os("SPATIALZARR_INTEROP_PYTHON") {
            return PathBuf::from(p);
        }
        let out = Command::new("bash")
            .arg(repo().join("tests/interop/setup_venv.sh"))
            .output()
            .expect("run setup_venv.sh");
        assert!(
            out.status.success(),
            "setup_venv.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
        PathBuf::from(stdout.lines().last().expect("python path").trim())
    })
}

/// What spatialdata (Python) sees in the dataset at `path`, as
/// `tests/interop/read_dataset.py` summarizes it.
pub fn spatialdata_reads(path: &Path) -> serde_json::Value {
    spatialdata_reads_with(path, &[])
}

/// [`spatialdata_reads`] with more options of `read_dataset.py` (`--zarr-arrays`).
pub fn spatialdata_reads_with(path: &Path, options: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(repo().join("tests/interop/read_dataset.py"))
        .arg(path)
        .args(options)
        .output()
        .expect("run read_dataset.py");
    assert!(
        out.status.success(),
        "spatialdata failed to read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader JSON")
}

/// Copies the folder `from` to `to` (made), files and sub-folders; the copies are
/// writable whatever the originals' permissions (fixtures may be read-only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("make folder");
    for entry in std::fs::read_dir(from).expect("list folder").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::write(&target, std::fs::read(entry.path()).expect("read file"))
                .expect("write file");
        }
    }
}

/// Every file under `root` (hidden ones too) with its bytes, by relative path; a
/// folder appears as an empty entry ending in `/`.
pub fn tree_files(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("list folder").flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).expect("under root").to_path_buf();
            if entry.file_type().expect("file type").is_dir() {
                out.insert(relative.join(""), Vec::new());
                walk(root, &path, out);
            } else {
                out.insert(relative, std::fs::read(&path).expect("read file"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A path as a `&str` (temporary paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// `dir/ds.zarr`, created with `spatialzarr init`.
pub fn new_dataset(dir: &Path) -> PathBuf {
    let ds = dir.join("ds.zarr");
    sz_ok(&["init", s(&ds)]);
    ds
}

/// Writes `text` to `dir/file` and returns the path.
pub fn write_file(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write file");
    path
}

/// The element called `name` in a list that `spatialdata_reads` returned.
pub fn find<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .expect("a list of elements")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("spatialdata does not see {name}: {list}"))
}

/// The values of a string column (plain or dictionary-encoded, no missing values).
pub fn strings(column: &arrow_array::ArrayRef) -> Vec<String> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    if let Some(dict) = column.as_any_dictionary_opt() {
        let values = dict.values().as_string::<i32>();
        dict.normalized_keys()
            .into_iter()
            .map(|k| values.value(k).to_owned())
            .collect()
    } else {
        let values = column.as_string::<i32>();
        (0..values.len())
            .map(|i| values.value(i).to_owned())
            .collect()
    }
}

/// One entry of a folder tree as [`TreeSnapshot`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A folder and its inode (its size is left out: it grows when entries come and
    /// go, even if they leave again).
    Dir { inode: u64 },
    /// A file: inode, length and SHA-256 of the content (files over 64 MiB, such as
    /// sparse hostile files, by length only).
    File {
        inode: u64,
        len: u64,
        sha256: Vec<u8>,
    },
    /// A symbolic link and its target (never followed).
    Link { inode: u64, target: PathBuf },
    /// Anything else (fifo, socket, device).
    Other { inode: u64 },
}

impl TreeEntry {
    /// A short description for messages: kind, inode, length, start of the hash.
    fn describe(&self) -> String {
        match self {
            TreeEntry::Dir { inode } => format!("folder (inode {inode})"),
            TreeEntry::File { inode, len, sha256 } => {
                let hex: String = sha256.iter().take(6).map(|b| format!("{b:02x}")).collect();
                format!("file (inode {inode}, {len} bytes, sha256 {hex}...)")
            }
            TreeEntry::Link { inode, target } => {
                format!("link (inode {inode}) to {}", target.display())
            }
            TreeEntry::Other { inode } => format!("special file (inode {inode})"),
        }
    }
}

/// Every entry under a folder with its inode, length and content hash: a refused
/// call must leave each one as it was, the same bytes in the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSnapshot {
    root: PathBuf,
    skip: Vec<PathBuf>,
    /// The entries by path relative to the root.
    pub entries: std::collections::BTreeMap<PathBuf, TreeEntry>,
}

impl TreeSnapshot {
    /// Records every entry under `root`.
    pub fn take(root: &Path) -> Self {
        Self::take_skipping(root, &[])
    }

    /// Records every entry under `root`, leaving out the subtrees in `skip`.
    pub fn take_skipping(root: &Path, skip: &[PathBuf]) -> Self {
        use sha2::Digest;
        use std::os::unix::fs::MetadataExt;
        let mut entries = std::collections::BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(listing) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in listing.flatten() {
                let path = entry.path();
                if skip.contains(&path) {
                    continue;
                }
                // An entry removed between the listing and the look is not recorded.
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                let inode = meta.ino();
                let node = if meta.file_type().is_symlink() {
                    TreeEntry::Link {
                        inode,
                        target: std::fs::read_link(&path).unwrap_or_default(),
                    }
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    TreeEntry::Dir { inode }
                } else if meta.is_file() {
                    let sha256 = if meta.len() > 64 << 20 {
                        Vec::new()
                    } else {
                        std::fs::read(&path)
                            .map(|bytes| sha2::Sha256::digest(&bytes).to_vec())
                            .unwrap_or_default()
                    };
                    TreeEntry::File {
                        inode,
                        len: meta.len(),
                        sha256,
                    }
                } else {
                    TreeEntry::Other { inode }
                };
                let relative = path.strip_prefix(root).expect("under root").to_path_buf();
                entries.insert(relative, node);
            }
        }
        Self {
            root: root.to_path_buf(),
            skip: skip.to_vec(),
            entries,
        }
    }

    /// How `other` differs from this snapshot, one line per entry.
    pub fn diff(&self, other: &TreeSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (path, entry) in &self.entries {
            match other.entries.get(path) {
                None => out.push(format!("deleted {}", path.display())),
                Some(now) if now != entry => out.push(format!(
                    "changed {}: {} -> {}",
                    path.display(),
                    entry.describe(),
                    now.describe()
                )),
                _ => {}
            }
        }
        for path in other.entries.keys() {
            if !self.entries.contains_key(path) {
                out.push(format!("created {}", path.display()));
            }
        }
        out
    }

    /// How the tree differs now from this snapshot.
    pub fn changes(&self) -> Vec<String> {
        self.diff(&Self::take_skipping(&self.root, &self.skip))
    }

    /// Panics, naming `what` and every difference, unless the tree is as recorded.
    pub fn assert_unchanged(&self, what: &str) {
        let changes = self.changes();
        assert!(
            changes.is_empty(),
            "{what} changed {}: {changes:#?}",
            self.root.display()
        );
    }
}

/// The generation of the dataset at `path`.
pub fn generation(path: &Path) -> u64 {
    spatialzarr::Dataset::open(path, spatialzarr::DatasetOptions::default())
        .expect("open dataset")
        .generation()
        .expect("read the generation")
}

/// The processes whose parent is `parent` and whose command line holds the argument
/// `mode` (`demo-worker`, `bench-worker`): (pid, start time), read from `/proc`.
pub fn workers_of(parent: u32, mode: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("list /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(stat) = proc_stat(pid) else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_worker = cmdline.split(|b| *b == 0).any(|arg| arg == mode.as_bytes());
        if is_worker && stat.get(1).map(String::as_str) == Some(parent.to_string().as_str()) {
            found.push((pid, stat[19].clone()));
        }
    }
    found
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid, ...), or
/// `None` when there is no such process.
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = text.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// Whether the process `pid` that started at `start` still runs (a zombie, killed
/// and waiting for its new parent to reap it, does not).
pub fn still_running(pid: u32, start: &str) -> bool {
    proc_stat(pid).is_some_and(|stat| stat[19] == start && stat[0] != "Z")
}

/// Environment variable listing the mount roots of several nodes that see one shared
/// filesystem, separated by `:` (set by `tests/multinode.rs`).
pub const NODE_ROOTS_ENV: &str = "SPATIALZARR_NODE_ROOTS";

/// `path` as worker `worker` reaches it: through node `worker % n`'s mount when
/// [`NODE_ROOTS_ENV`] lists `n` mount roots and `path` is under one of them, so that
/// workers alternate between the nodes; else `path` itself.
pub fn node_path(path: &Path, worker: usize) -> PathBuf {
    let Ok(roots) = std::env::var(NODE_ROOTS_ENV) else {
        return path.to_path_buf();
    };
    let roots: Vec<&Path> = roots.split(':').map(Path::new).collect();
    roots
        .iter()
        .find_map(|root| path.strip_prefix(root).ok())
        .map(|relative| roots[worker % roots.len()].join(relative))
        .unwrap_or_else(|| path.to_path_buf())
}

/// `n` rows of `region`, `instance_id` 0..n and `area` 0.0..n, without X.
pub fn region_rows(region: &str, n: i64) -> spatialzarr::table::RowBatch {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from_iter_values((0..n).map(|_| region))) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        ),
        (
            "area",
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))) as ArrayRef,
        ),
    ])
    .unwrap();
    spatialzarr::table::RowBatch { obs, x: None }
}

/// `n` rows for the table of the spatialdata fixtures (`tables/table`: `region`,
/// `instance_id` from 3, `label_str`, `celltype`, a CSR X of width 3 with no stored
/// values) whose `celltype` brings `n` new categories `type0..`, enough from 127 on
/// to outgrow the fixture's `int8` codes. Returns the rows and the categories.
pub fn fixture_rows_with_new_celltypes(n: usize) -> (spatialzarr::table::RowBatch, Vec<String>) {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let celltypes: Vec<String> = (0..n).map(|i| format!("type{i}")).collect();
    let obs = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| "cells_labels"),
            )) as ArrayRef,
        ),
        (
            "instance_id",
            Arc::new(Int64Array::from_iter_values(3..3 + n as i64)) as ArrayRef,
        ),
        (
            "label_str",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("s{i}")),
            )) as ArrayRef,
        ),
        (
            "celltype",
            Arc::new(StringArray::from(celltypes.clone())) as ArrayRef,
        ),
    ])
    .unwrap();
    let x = spatialzarr::table::XRows::Csr {
        indptr: vec![0; n + 1],
        indices: vec![],
        data: vec![],
    };
    (spatialzarr::table::RowBatch { obs, x: Some(x) }, celltypes)
}

/// Turns the store-format-2 dataset at `root` into the store format 1 an earlier
/// version wrote: the index's names go into the manifest's `elements`, and the index
/// folder is removed (generation and everything else kept).
pub fn to_version_1(root: &Path) {
    let hidden = root.join(".spatialzarr");
    let mut elements: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, kind) in spatialzarr::commit::index::read_all(&hidden).expect("index") {
        elements
            .entry(kind.group().to_owned())
            .or_default()
            .push(name);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hidden.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    let v1 = serde_json::json!({
        "format": "spatialzarr",
        "version": 1,
        "generation": manifest["generation"],
        "elements": elements,
    });
    std::fs::write(
        hidden.join("manifest.json"),
        serde_json::to_vec_pretty(&v1).unwrap(),
    )
    .expect("write manifest");
    std::fs::remove_dir_all(hidden.join("index")).expect("remove index");
}

/// The store format version in the manifest of the dataset at `root`.
pub fn store_version(root: &Path) -> u64 {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(".spatialzarr/manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    manifest["version"].as_u64().expect("version")
}
