//! `.spatialzarr/journal.json`: the redo log that makes a multi-file commit atomic.
//!
//! A commit writes its journal atomically; from then on it is decided, and whoever
//! holds the write lock next replays the journal to the end. Every step is idempotent
//! when replayed in order, so a crash during a replay is replayed again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Publisher;
use crate::util::{LinkCheck, safe_relative};

/// The journal's file name inside the hidden folder.
pub const JOURNAL_FILE: &str = "journal.json";
/// The largest journal accepted: it carries metadata documents, never chunk data.
const MAX_JOURNAL_BYTES: u64 = 256 << 20;

/// The journal format this version writes: 2 added the `exchange` and `unlink` steps
/// (a version-1 reader refuses it instead of misreading it).
pub const JOURNAL_VERSION: u32 = 2;

/// Whether `path` exists (without following a final link). Only "not found" means
/// absent: any other error (EIO, ESTALE, EACCES) is returned, never taken as an
/// answer, because replay decisions rest on it.
fn exists(path: &Path) -> Result<bool> {
    match crate::storage::trace::lstat(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(crate::error::io_err("stat", path)(e)),
    }
}

/// One change of a commit. Paths are relative to the dataset root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Create a folder (and its parents) if missing.
    Mkdir {
        /// The folder.
        path: String,
    },
    /// Rename a file or folder. Replay: done when `to` exists (the plan makes sure it
    /// does not when the step first runs).
    Rename {
        /// Source.
        from: String,
        /// Destination, which must not exist when the step first runs.
        to: String,
    },
    /// Put the staged folder `from` in the place of the existing `to` in one atomic
    /// swap, so that readers without the lock find `to` at every instant; the old
    /// `to` is left at `from` (a `Rename` step to `trash` follows). Where the
    /// filesystem cannot swap, `to` is renamed to `trash` and `from` to `to`.
    /// The staged folder carries the empty file `marker`, which tells on replay where
    /// it is: still at `from` means not done; at `to`, or gone (a later `Unlink` step
    /// removed it), means done.
    Exchange {
        /// The staged folder.
        from: String,
        /// The element (or node) it replaces.
        to: String,
        /// Where the old `to` goes when the swap is not available.
        trash: String,
        /// The name of the marker file inside the staged folder.
        marker: String,
    },
    /// Remove a file; replay: nothing to do when it is gone.
    Unlink {
        /// The file.
        path: String,
    },
    /// Replace a file's content atomically.
    Write {
        /// The file.
        path: String,
        /// Its new content (UTF-8 metadata text).
        text: String,
    },
}

impl Step {
    /// Every path the step names, relative to the dataset root.
    pub fn paths(&self) -> Vec<String> {
        match self {
            Step::Mkdir { path } | Step::Write { path, .. } | Step::Unlink { path } => {
                vec![path.clone()]
            }
            Step::Rename { from, to } => vec![from.clone(), to.clone()],
            Step::Exchange {
                from,
                to,
                trash,
                marker,
            } => vec![
                from.clone(),
                to.clone(),
                trash.clone(),
                format!("{from}/{marker}"),
                format!("{to}/{marker}"),
            ],
        }
    }
}

/// A decided commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The journal format version.
    pub version: u32,
    /// The generation the manifest takes when the commit is done.
    pub generation: u64,
    /// The changes, in order.
    pub steps: Vec<Step>,
    /// Folders (trash) to delete once the commit is done; failures here are harmless.
    #[serde(default)]
    pub cleanup: Vec<String>,
}

fn checked(root: &Path, relative: &str, journal: &Path, links: &LinkCheck) -> Result<PathBuf> {
    let path = safe_relative(relative)
        .map(|p| root.join(p))
        .ok_or_else(|| Error::Corrupt {
            path: journal.to_path_buf(),
            reason: format!("path {relative:?} is not a plain relative path inside the dataset"),
        })?;
    // A step never writes, renames or creates through a link (it could lead out).
    links.check(root, &path)?;
    Ok(path)
}

impl Journal {
    /// Parses and validates a journal; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let journal: Journal = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not a valid journal ({e}); move it aside only if you know the commit it describes never mattered"),
        })?;
        if !(1..=JOURNAL_VERSION).contains(&journal.version) {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                what: format!(
                    "journal version {} (this spatialzarr reads versions 1 to {JOURNAL_VERSION}): a newer spatialzarr decided this commit; finish it with that version, and do not remove the journal",
                    journal.version
                ),
            });
        }
        // Only the form of the paths here; `check_paths` and `apply` look at them
        // under the dataset.
        let form = |p: &str| {
            safe_relative(p).map(drop).ok_or_else(|| Error::Corrupt {
                path: path.to_path_buf(),
                reason: format!("path {p:?} is not a plain relative path inside the dataset"),
            })
        };
        for p in journal.steps.iter().flat_map(Step::paths) {
            form(&p)?;
        }
        for p in &journal.cleanup {
            form(p)?;
        }
        Ok(journal)
    }

    /// Whether a journal lies in `hidden` (an interrupted or unfinished commit).
    /// Only "not found" means none: any other error of the look (ESTALE, EIO,
    /// EACCES on a network filesystem) is returned, never taken as an answer.
    pub fn present(hidden: &Path) -> Result<bool> {
        exists(&hidden.join(JOURNAL_FILE))
    }

    /// Reads the journal in `hidden`, if there is one.
    pub fn load(hidden: &Path) -> Result<Option<Self>> {
        let path = hidden.join(JOURNAL_FILE);
        match crate::util::read_limited(&path, MAX_JOURNAL_BYTES) {
            Ok(bytes) => Self::parse(&bytes, &path).map(Some),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The journal's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a journal always serializes")
    }

    /// Checks every path of every step under `root`: plain relative paths, reached
    /// without following a symbolic link.
    pub fn check_paths(&self, root: &Path) -> Result<()> {
        self.check_paths_with(root, &LinkCheck::default())
    }

    /// [`Journal::check_paths`]; `links` remembers what was looked at, for the
    /// [`Journal::apply`] of the same commit.
    pub(crate) fn check_paths_with(&self, root: &Path, links: &LinkCheck) -> Result<()> {
        let journal = root.join(JOURNAL_FILE);
        for path in self.steps.iter().flat_map(Step::paths) {
            checked(root, &path, &journal, links)?;
        }
        Ok(())
    }

    /// Whether `path` lies in one of the folders the journal deletes once done.
    fn is_cleanup(&self, path: &str) -> bool {
        self.cleanup
            .iter()
            .any(|c| Path::new(path).starts_with(Path::new(c)))
    }

    /// The folders (under `root`) of the files the journal's `Write` steps publish.
    pub fn written_folders(&self, root: &Path) -> Vec<PathBuf> {
        self.steps
            .iter()
            .filter_map(|step| match step {
                Step::Write { path, .. } => Path::new(path).parent().map(|p| root.join(p)),
                _ => None,
            })
            .collect()
    }

    /// Applies every step under `root`, in order. Safe to run again after a crash.
    /// Writes are published together (fsynced at once, then renamed in order) before
    /// the next rename step; the caller's `sync` publishes the last ones.
    /// `links` holds what [`Journal::check_paths_with`] of the same commit looked at
    /// (a new one for a replay).
    pub(crate) fn apply(
        &self,
        root: &Path,
        publisher: &Publisher,
        journal_path: &Path,
        links: &LinkCheck,
    ) -> Result<()> {
        for step in &self.steps {
            match step {
                Step::Mkdir { path } => {
                    let path = checked(root, path, journal_path, links)?;
                    publisher.create_dir_all(&path)?;
                    // Made by a crashed run (with any missing parents), maybe not yet
                    // durable.
                    let mut made = path.as_path();
                    while made != root && made.starts_with(root) {
                        publisher.touched(made);
                        made = made.parent().unwrap_or(root);
                    }
                }
                Step::Write { path, text } => {
                    publisher.write_deferred(
                        &checked(root, path, journal_path, links)?,
                        text.as_bytes(),
                    )?;
                }
                Step::Exchange {
                    from,
                    to,
                    trash,
                    marker,
                } => {
                    let from_path = checked(root, from, journal_path, links)?;
                    let to_path = checked(root, to, journal_path, links)?;
                    let trash_path = checked(root, trash, journal_path, links)?;
                    exchange(publisher, &from_path, &to_path, &trash_path, marker)?;
                }
                Step::Unlink { path } => {
                    let path = checked(root, path, journal_path, links)?;
                    publisher.remove_file(&path)?;
                    // Removed by a crashed run, maybe not yet durable.
                    publisher.touched(&path);
                }
                Step::Rename { from, to } => {
                    publisher.flush()?;
                    let from_path = checked(root, from, journal_path, links)?;
                    let to_path = checked(root, to, journal_path, links)?;
                    // The plan guarantees `to` is absent when the step first runs, and
                    // steps run in order: so an existing `to` means the step is done.
                    let to_exists = exists(&to_path)?;
                    let from_exists = exists(&from_path)?;
                    match (from_exists, to_exists) {
                        // Done by a crashed run, maybe not yet durable: both folders
                        // are fsynced before the journal goes.
                        (_, true) => {
                            publisher.touched(&from_path);
                            publisher.touched(&to_path);
                        }
                        (true, false) => publisher.rename(&from_path, &to_path)?,
                        // A move into a cleanup folder that is gone: the commit was
                        // finished and cleaned up, and a power loss brought back its
                        // journal, whose removal is not fsynced.
                        (false, false) if self.is_cleanup(to) => {}
                        (false, false) => {
                            return Err(Error::Corrupt {
                                path: journal_path.to_path_buf(),
                                reason: format!(
                                    "cannot rename {from} to {to}: neither exists; run `spatialzarr check`"
                                ),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Applies (or replays) an [`Step::Exchange`].
fn exchange(
    publisher: &Publisher,
    from: &Path,
    to: &Path,
    trash: &Path,
    marker: &str,
) -> Result<()> {
    if !exists(&from.join(marker))? {
        // Done by a crashed run (the marker is at `to`, or already removed), maybe
        // not yet durable.
        publisher.touched(from);
        publisher.touched(to);
        publisher.touched(trash);
        return Ok(());
    }
    if !exists(to)? {
        // A crashed run without the swap moved the old element to the trash already;
        // anything else removed what the commit replaces, and guessing would lose data.
        if !exists(trash)? {
            return Err(Error::Corrupt {
                path: to.to_path_buf(),
                reason: format!(
                    "an interrupted commit was replacing it, but it is gone and is not in {}; run `spatialzarr check`",
                    trash.display()
                ),
            });
        }
        publisher.touched(trash);
        return publisher.rename(from, to);
    }
    if publisher.exchange(from, to)? {
        return Ok(());
    }
    publisher.rename(to, trash)?;
    publisher.rename(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(steps: Vec<Step>) -> Journal {
        Journal {
            version: JOURNAL_VERSION,
            generation: 2,
            steps,
            cleanup: vec![],
        }
    }

    #[test]
    fn replay_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("old")).unwrap();
        std::fs::create_dir_all(root.join("stage")).unwrap();
        let j = journal(vec![
            Step::Mkdir {
                path: "trash".into(),
            },
            Step::Rename {
                from: "old".into(),
                to: "trash/x".into(),
            },
            Step::Rename {
                from: "stage".into(),
                to: "old".into(),
            },
            Step::Write {
                path: "zarr.json".into(),
                text: "{}".into(),
            },
        ]);
        let p = Publisher::new();
        let jp = root.join("journal.json");
        j.apply(root, &p, &jp, &LinkCheck::default()).unwrap();
        p.sync().unwrap();
        j.apply(root, &p, &jp, &LinkCheck::default()).unwrap();
        p.sync().unwrap();
        assert!(root.join("old").is_dir() && root.join("trash/x").is_dir());
        assert!(!root.join("stage").exists());
    }

    #[test]
    fn a_journal_back_after_its_cleanup_replays_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("old")).unwrap();
        let mut j = journal(vec![
            Step::Mkdir {
                path: "trash".into(),
            },
            Step::Rename {
                from: "old".into(),
                to: "trash/x".into(),
            },
        ]);
        j.cleanup = vec!["trash/x".into()];
        let p = Publisher::new();
        let jp = root.join("journal.json");
        j.apply(root, &p, &jp, &LinkCheck::default()).unwrap();
        std::fs::remove_dir_all(root.join("trash/x")).unwrap();
        // Neither side exists: done, because the target was a cleanup folder.
        j.apply(root, &p, &jp, &LinkCheck::default()).unwrap();
        // Elsewhere, neither side existing is still an error.
        j.cleanup.clear();
        let err = j.apply(root, &p, &jp, &LinkCheck::default()).unwrap_err();
        assert!(err.to_string().contains("neither exists"), "{err}");
    }

    #[test]
    fn escaping_paths_are_refused() {
        let j = journal(vec![Step::Write {
            path: "../evil".into(),
            text: String::new(),
        }]);
        let err = Journal::parse(&j.to_bytes(), Path::new("j")).unwrap_err();
        assert!(err.to_string().contains("../evil"), "{err}");
        assert!(Journal::parse(b"{\"version\":1,\"gen", Path::new("j")).is_err());
    }
}
