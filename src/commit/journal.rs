//! `.spatialzarr/journal.json`: the redo log that makes a multi-file commit atomic.
//!
//! A commit writes its journal in place, ending in a checksum, and fsyncs it in the
//! same round as every file the journal relies on. The commit is decided when the
//! journal is complete (its checksum holds) and every file it requires holds the
//! content it names; from then on whoever holds the write lock next replays the
//! journal to the end. Every step is idempotent when replayed in order, so a crash
//! during a replay is replayed again. A journal that is not decided (torn by a power
//! loss, or naming a file that did not survive) was never acted on and is withdrawn.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Publisher;
use crate::util::{LinkCheck, safe_relative};

/// The journal's file name inside the hidden folder.
pub const JOURNAL_FILE: &str = "journal.json";
/// The largest journal accepted: it carries metadata documents, never chunk data.
const MAX_JOURNAL_BYTES: u64 = 256 << 20;

/// The journal format this version writes: 2 added the `exchange` and `unlink` steps,
/// 3 the checksum trailer and `requires` (a reader of an older version refuses it
/// instead of misreading it).
pub const JOURNAL_VERSION: u32 = 3;

/// What a version-3 journal begins with (serde writes the fields in order).
const V3_START: &[u8] = b"{\"version\":3,";
/// What precedes the checksum in a version-3 journal's last line.
const TRAILER_START: &[u8] = b"\ncrc32c:";
/// The length of the trailer: `\ncrc32c:` + 8 hex digits + `\n`.
const TRAILER_LEN: usize = TRAILER_START.len() + 9;

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

/// A file that a commit stored at its final path before it was decided (the chunks
/// of appended rows, which lie beyond every committed shape), with the content the
/// journal expects there. A journal whose required file is missing or differs was
/// never decided: the crash came before the file was durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Required {
    /// The file, relative to the dataset root.
    pub path: String,
    /// Its length in bytes.
    pub len: u64,
    /// The CRC-32C of its bytes.
    pub crc32c: u32,
}

impl Required {
    /// Describes `bytes` stored at `path`.
    pub fn of(path: String, bytes: &[u8]) -> Self {
        Self {
            path,
            len: bytes.len() as u64,
            crc32c: crc32c::crc32c(bytes),
        }
    }

    /// Whether `bytes` are the content this requirement names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() as u64 == self.len && crc32c::crc32c(bytes) == self.crc32c
    }
}

/// The journal found in the hidden folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundJournal {
    /// A decided commit: replaying it finishes the commit.
    Decided(Journal),
    /// A commit that was never decided (a crash or power loss while its journal or a
    /// file it requires was being made durable): nothing it describes was done to
    /// committed files, and withdrawing it leaves the state before it.
    Undecided {
        /// The journal, when it is itself complete (a file it requires is not).
        journal: Option<Journal>,
        /// Why it is not decided.
        reason: String,
    },
}

impl FoundJournal {
    /// The generation the commit was making, when known.
    pub fn generation(&self) -> Option<u64> {
        match self {
            FoundJournal::Decided(journal) => Some(journal.generation),
            FoundJournal::Undecided { journal, .. } => journal.as_ref().map(|j| j.generation),
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
    /// Files stored before the commit was decided, which must hold the content named
    /// for the journal to count as decided (version 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Required>,
}

/// Whether the file at `path` holds what `required` names. Only "not found" means
/// missing: any other error reading it is returned.
fn holds(path: &Path, required: &Required) -> Result<bool> {
    match crate::util::read_limited(path, required.len) {
        Ok(bytes) => Ok(required.matches(&bytes)),
        Err(e) if e.is_not_found() => Ok(false),
        // Longer than the journal says.
        Err(Error::Corrupt { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Splits a version-3 journal into its body and checks its trailer; `None` when the
/// bytes do not end in a checksum that holds.
fn v3_body(bytes: &[u8]) -> Option<&[u8]> {
    let at = bytes.len().checked_sub(TRAILER_LEN)?;
    let (body, trailer) = bytes.split_at(at);
    let hex = trailer.strip_prefix(TRAILER_START)?.strip_suffix(b"\n")?;
    let sum = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    (crc32c::crc32c(body) == sum).then_some(body)
}

/// Whether `bytes` begin a version-3 journal (or are so short that they may be the
/// start of one: a write torn after a few bytes).
fn looks_like_v3(bytes: &[u8]) -> bool {
    let n = bytes.len().min(V3_START.len());
    bytes[..n] == V3_START[..n]
}

/// The step path `relative` under `root`; an error naming the journal when it is not a
/// plain relative path inside the dataset.
fn resolved(root: &Path, relative: &str, journal: &Path) -> Result<PathBuf> {
    safe_relative(relative)
        .map(|p| root.join(p))
        .ok_or_else(|| Error::Corrupt {
            path: journal.to_path_buf(),
            reason: format!("path {relative:?} is not a plain relative path inside the dataset"),
        })
}

/// [`resolved`], reached without a link: a step never writes, renames or creates
/// through one (it could lead out of the dataset).
fn checked(root: &Path, relative: &str, journal: &Path, links: &LinkCheck) -> Result<PathBuf> {
    let path = resolved(root, relative, journal)?;
    links.check(root, &path)?;
    Ok(path)
}

/// [`checked`] for the target of a `Write`, which is published by renaming a new file
/// over it: a link there would be replaced, never followed, so only the folders on
/// the way are checked.
fn checked_target(
    root: &Path,
    relative: &str,
    journal: &Path,
    links: &LinkCheck,
) -> Result<PathBuf> {
    let path = resolved(root, relative, journal)?;
    if let Some(folder) = path.parent() {
        links.check(root, folder)?;
    }
    Ok(path)
}

impl Journal {
    /// Reads a journal file's bytes: a version-3 journal whose checksum fails (or
    /// that is empty) is [`FoundJournal::Undecided`]; otherwise the journal is
    /// parsed and validated, and its required files are not looked at yet
    /// ([`Journal::requirements_met`]). `path` names it in errors.
    pub fn read_bytes(bytes: &[u8], path: &Path) -> Result<FoundJournal> {
        if let Some(body) = v3_body(bytes) {
            let journal = Self::parse(body, path)?;
            if journal.version < 3 {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("a journal of version {} with a checksum", journal.version),
                });
            }
            return Ok(FoundJournal::Decided(journal));
        }
        if looks_like_v3(bytes) {
            return Ok(FoundJournal::Undecided {
                journal: None,
                reason: "its journal is incomplete (it was being written when the writer stopped)"
                    .into(),
            });
        }
        let journal = Self::parse(bytes, path)?;
        if journal.version >= 3 {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "a journal of version {} without its checksum",
                    journal.version
                ),
            });
        }
        Ok(FoundJournal::Decided(journal))
    }

    /// Whether every file the journal requires holds the content it names; the
    /// first that does not is described. Only "not found" means missing: any other
    /// error reading a file is returned.
    pub fn requirements_met(&self, root: &Path) -> Result<std::result::Result<(), String>> {
        for required in &self.requires {
            let places = self.places_of(&required.path);
            if let Some(place) = places.iter().find(|p| safe_relative(p).is_none()) {
                return Ok(Err(format!("{place:?} is not a plain relative path")));
            }
            let mut held = false;
            for place in places.iter().filter_map(|p| safe_relative(p)) {
                if holds(&root.join(place), required)? {
                    held = true;
                    break;
                }
            }
            if !held {
                return Ok(Err(format!(
                    "{} is missing or differs from what the commit stored",
                    required.path
                )));
            }
        }
        Ok(Ok(()))
    }

    /// Every path where the file stored at `path` before the commit can be once a
    /// prefix of the steps has run: a `Rename` or `Exchange` moves what lies in its
    /// folder (rows written into a staged copy of a node that an exchange swaps in).
    fn places_of(&self, path: &str) -> Vec<String> {
        let mut places = vec![path.to_owned()];
        let moved = |at: &str, from: &str, to: &str| {
            Path::new(at)
                .strip_prefix(from)
                .ok()
                .map(|rest| Path::new(to).join(rest).to_string_lossy().into_owned())
        };
        for step in &self.steps {
            let last = places.last().cloned().unwrap_or_default();
            let next = match step {
                Step::Rename { from, to } => moved(&last, from, to),
                Step::Exchange { from, to, .. } => moved(&last, from, to),
                _ => None,
            };
            places.extend(next);
        }
        places
    }

    /// Parses and validates a journal's JSON; `path` names it in errors.
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
        for p in journal
            .cleanup
            .iter()
            .chain(journal.requires.iter().map(|r| &r.path))
        {
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

    /// Reads the journal of the dataset whose hidden folder is `hidden`, if there is
    /// one, and decides whether it is decided: complete, and every file it requires
    /// as it names (spec/commit-protocol.md §5.1).
    pub fn load(hidden: &Path) -> Result<Option<FoundJournal>> {
        let path = hidden.join(JOURNAL_FILE);
        let bytes = match crate::util::read_limited(&path, MAX_JOURNAL_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let found = Self::read_bytes(&bytes, &path)?;
        let FoundJournal::Decided(journal) = found else {
            return Ok(Some(found));
        };
        let root = hidden.parent().unwrap_or(hidden);
        Ok(Some(match journal.requirements_met(root)? {
            Ok(()) => FoundJournal::Decided(journal),
            Err(reason) => FoundJournal::Undecided {
                journal: Some(journal),
                reason,
            },
        }))
    }

    /// The journal's bytes: its JSON, then (version 3) the checksum line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("a journal always serializes");
        if self.version >= 3 {
            let sum = crc32c::crc32c(&bytes);
            bytes.extend_from_slice(TRAILER_START);
            bytes.extend_from_slice(format!("{sum:08x}\n").as_bytes());
        }
        bytes
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
        for step in &self.steps {
            if let Step::Write { path, .. } = step {
                checked_target(root, path, &journal, links)?;
                continue;
            }
            for path in step.paths() {
                checked(root, &path, &journal, links)?;
            }
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

    /// Applies every step under `root`, in order. Safe to run again after a crash
    /// (`replay`: each step first looks whether a crashed run did it; otherwise the
    /// steps run as the plan made them, right after the commit was decided, and a
    /// step that fails leaves the rest to the next writer's replay).
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
        replay: bool,
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
                        &checked_target(root, path, journal_path, links)?,
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
                    if replay {
                        exchange(publisher, &from_path, &to_path, &trash_path, marker)?;
                    } else {
                        swap(publisher, &from_path, &to_path, &trash_path)?;
                    }
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
                    if !replay {
                        match publisher.rename(&from_path, &to_path) {
                            Ok(()) => {}
                            // An overwrite's two-rename fallback (no swap on this
                            // filesystem) already moved the old element to `to`.
                            Err(e) if e.is_not_found() && exists(&to_path)? => {}
                            Err(e) => return Err(e),
                        }
                        continue;
                    }
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

/// Applies an [`Step::Exchange`] the first time: `from` takes the place of `to`
/// (one swap, else two renames), the old `to` going to `trash`.
fn swap(publisher: &Publisher, from: &Path, to: &Path, trash: &Path) -> Result<()> {
    if publisher.exchange(from, to)? {
        return Ok(());
    }
    publisher.rename(to, trash)?;
    publisher.rename(from, to)
}

/// Replays an [`Step::Exchange`].
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
    swap(publisher, from, to, trash)
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
            requires: vec![],
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
        j.apply(root, &p, &jp, &LinkCheck::default(), true).unwrap();
        p.sync().unwrap();
        j.apply(root, &p, &jp, &LinkCheck::default(), true).unwrap();
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
        j.apply(root, &p, &jp, &LinkCheck::default(), true).unwrap();
        std::fs::remove_dir_all(root.join("trash/x")).unwrap();
        // Neither side exists: done, because the target was a cleanup folder.
        j.apply(root, &p, &jp, &LinkCheck::default(), true).unwrap();
        // Elsewhere, neither side existing is still an error.
        j.cleanup.clear();
        let err = j
            .apply(root, &p, &jp, &LinkCheck::default(), true)
            .unwrap_err();
        assert!(err.to_string().contains("neither exists"), "{err}");
    }

    #[test]
    fn every_torn_copy_of_a_journal_is_undecided_and_the_whole_one_decided() {
        let mut j = journal(vec![Step::Write {
            path: "zarr.json".into(),
            text: "{}".into(),
        }]);
        j.requires = vec![Required::of("t/c/0".into(), b"rows")];
        let bytes = j.to_bytes();
        let path = Path::new("journal.json");
        assert_eq!(
            Journal::read_bytes(&bytes, path).unwrap(),
            FoundJournal::Decided(j.clone())
        );
        for len in 0..bytes.len() {
            let found = Journal::read_bytes(&bytes[..len], path).unwrap();
            assert!(
                matches!(found, FoundJournal::Undecided { journal: None, .. }),
                "{len} bytes: {found:?}"
            );
        }
        // One flipped bit in the body: the checksum fails, so it is torn.
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            Journal::read_bytes(&flipped, path).unwrap(),
            FoundJournal::Undecided { .. }
        ));
        // A version-2 journal (no checksum) reads as before.
        let mut old = j.clone();
        old.version = 2;
        old.requires.clear();
        let FoundJournal::Decided(read) = Journal::read_bytes(&old.to_bytes(), path).unwrap()
        else {
            panic!("a version-2 journal is decided");
        };
        assert_eq!(read.version, 2);
    }

    #[test]
    fn a_journal_is_decided_only_when_its_required_files_hold_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("stage/c")).unwrap();
        std::fs::create_dir_all(root.join("node/c")).unwrap();
        let mut j = journal(vec![Step::Exchange {
            from: "stage".into(),
            to: "node".into(),
            trash: "trash".into(),
            marker: "m".into(),
        }]);
        j.requires = vec![Required::of("stage/c/0".into(), b"new rows")];
        assert!(
            j.requirements_met(root)
                .unwrap()
                .unwrap_err()
                .contains("stage/c/0")
        );
        std::fs::write(root.join("stage/c/0"), b"old rows").unwrap();
        assert!(j.requirements_met(root).unwrap().is_err(), "other content");
        std::fs::write(root.join("stage/c/0"), b"new rows and more").unwrap();
        assert!(j.requirements_met(root).unwrap().is_err(), "longer");
        std::fs::write(root.join("stage/c/0"), b"new rows").unwrap();
        assert!(j.requirements_met(root).unwrap().is_ok());
        // Once the exchange ran, the file is found where it moved.
        std::fs::rename(root.join("stage"), root.join("tmp")).unwrap();
        std::fs::rename(root.join("node"), root.join("stage")).unwrap();
        std::fs::rename(root.join("tmp"), root.join("node")).unwrap();
        assert!(j.requirements_met(root).unwrap().is_ok());

        let hidden = root.join(".spatialzarr");
        std::fs::create_dir(&hidden).unwrap();
        std::fs::write(hidden.join(JOURNAL_FILE), j.to_bytes()).unwrap();
        assert!(matches!(
            Journal::load(&hidden).unwrap(),
            Some(FoundJournal::Decided(_))
        ));
        std::fs::remove_file(root.join("node/c/0")).unwrap();
        let Some(FoundJournal::Undecided { journal, reason }) = Journal::load(&hidden).unwrap()
        else {
            panic!("a journal missing its rows is not decided");
        };
        assert_eq!(journal.map(|j| j.generation), Some(2));
        assert!(reason.contains("stage/c/0"), "{reason}");
    }

    #[test]
    fn escaping_paths_are_refused() {
        let j = journal(vec![Step::Write {
            path: "../evil".into(),
            text: String::new(),
        }]);
        let err = Journal::read_bytes(&j.to_bytes(), Path::new("j")).unwrap_err();
        assert!(err.to_string().contains("../evil"), "{err}");
        assert!(Journal::parse(b"{\"version\":1,\"gen", Path::new("j")).is_err());
    }
}
