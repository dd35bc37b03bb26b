//! Write transactions and the commit protocol (`spec/commit-protocol.md`).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ndarray::ArrayViewD;
use serde_json::{Value, json};

use super::layout::{ElementSet, element_path, unique_id};
use super::staging::{self, StagedElement};
use super::{ConsolidatedMetadata, Dataset, consolidated};
use crate::commit::journal::JOURNAL_FILE;
use crate::commit::manifest::MANIFEST_FILE;
use crate::commit::{Journal, Manifest, Step};
use crate::element::raster::read_json;
use crate::element::{ElementKind, ElementName, Pixel, RasterOptions};
use crate::error::{Error, Result};
use crate::lock::WriteGuard;
use crate::storage::Publisher;
use crate::storage::publish::{remove_tree, sync_dir};

/// One change waiting in a transaction.
#[derive(Debug)]
enum Op {
    Add {
        staged: StagedElement,
        overwrite: bool,
    },
    Remove {
        name: ElementName,
    },
}

/// The changes of one (possibly nested) transaction.
type Frame = Rc<RefCell<Vec<Op>>>;

thread_local! {
    /// Open transactions of this thread, per dataset lock file, innermost last.
    static OPEN: RefCell<HashMap<(u64, u64), Vec<Frame>>> = RefCell::new(HashMap::new());
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The generation the dataset has after the commit (unchanged for an empty or a
    /// nested commit).
    pub generation: u64,
    /// Whether this commit wrote to disk (false when nested or empty).
    pub durable: bool,
}

/// What a recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// The generation of the interrupted commit that was finished, if any.
    pub finished_commit: Option<u64>,
    /// Staging folders of dead writers that were removed.
    pub removed_staging: Vec<PathBuf>,
    /// Trash folders that were removed.
    pub removed_trash: Vec<PathBuf>,
}

/// A write transaction: holds the write lock; its changes reach the disk together,
/// or not at all, when it commits. Dropping it without committing discards them.
#[derive(Debug)]
pub struct WriteTxn<'a> {
    dataset: &'a Dataset,
    guard: WriteGuard,
    key: (u64, u64),
    frame: Frame,
    nested: bool,
}

fn lock_key(dataset: &Dataset) -> Result<(u64, u64)> {
    dataset
        .lock()
        .lock_file_id()
        .map_err(crate::error::io_err("stat", &dataset.layout().hidden))
}

impl<'a> WriteTxn<'a> {
    pub(super) fn begin(dataset: &'a Dataset) -> Result<Self> {
        let guard = dataset.lock().write(dataset.options().lock_timeout)?;
        let key = lock_key(dataset)?;
        let nested = OPEN.with(|open| open.borrow().get(&key).is_some_and(|s| !s.is_empty()));
        if !nested {
            recover(dataset, &guard)?;
        }
        let frame: Frame = Rc::default();
        OPEN.with(|open| {
            open.borrow_mut()
                .entry(key)
                .or_default()
                .push(frame.clone())
        });
        Ok(Self {
            dataset,
            guard,
            key,
            frame,
            nested,
        })
    }

    /// The write lock this transaction holds.
    pub fn guard(&self) -> &WriteGuard {
        &self.guard
    }

    /// The element set as this transaction would leave it: committed state plus the
    /// changes of every open transaction of this thread on this dataset, in order.
    fn simulated(&self) -> Result<ElementSet> {
        let mut set = self.dataset.elements_locked()?;
        let frames = OPEN.with(|open| open.borrow().get(&self.key).cloned().unwrap_or_default());
        for frame in frames {
            for op in frame.borrow().iter() {
                apply_to_set(&mut set, op)?;
            }
        }
        Ok(set)
    }

    /// Adds an element staged by [`Dataset::stage_raster`]. The name is checked now
    /// against the committed state and the pending changes, and again at commit.
    pub fn add_staged(&mut self, staged: StagedElement, overwrite: bool) -> Result<()> {
        if staged.dir.parent() != Some(self.dataset.layout().staging().as_path()) {
            return Err(Error::InvalidInput(format!(
                "element {} was staged for another dataset",
                staged.name
            )));
        }
        let op = Op::Add { staged, overwrite };
        apply_to_set(&mut self.simulated()?, &op)?;
        self.frame.borrow_mut().push(op);
        Ok(())
    }

    /// Stages and adds a raster element (written while this transaction holds the
    /// lock; stage it first with [`Dataset::stage_raster`] to write it without).
    pub fn add_raster<T: Pixel>(
        &mut self,
        kind: ElementKind,
        name: &str,
        data: ArrayViewD<'_, T>,
        options: &RasterOptions,
        overwrite: bool,
    ) -> Result<()> {
        let checked = ElementName::new(name)?;
        self.simulated()?.check_add(kind, &checked, overwrite)?;
        let staged = self.dataset.stage_raster(kind, name, data, options)?;
        self.add_staged(staged, overwrite)
    }

    /// Removes the element `name`.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        let op = Op::Remove {
            name: ElementName::new(name)?,
        };
        apply_to_set(&mut self.simulated()?, &op).map_err(|e| match e {
            Error::NoSuchElement { name, .. } => Error::NoSuchElement {
                dataset: self.dataset.root().to_path_buf(),
                name,
            },
            other => other,
        })?;
        self.frame.borrow_mut().push(op);
        Ok(())
    }

    /// Commits: all changes become visible together, or none (on error). A nested
    /// transaction hands its changes to the enclosing one instead.
    pub fn commit(self) -> Result<CommitInfo> {
        let ops: Vec<Op> = std::mem::take(&mut *self.frame.borrow_mut());
        let parent = self.pop_frame();
        if self.nested {
            if let Some(parent) = parent {
                parent.borrow_mut().extend(ops);
            }
            return Ok(CommitInfo {
                generation: 0,
                durable: false,
            });
        }
        commit_ops(self.dataset, &self.guard, ops)
    }

    /// Removes this transaction's frame from the thread's stack; returns the frame
    /// below it, if any.
    fn pop_frame(&self) -> Option<Frame> {
        OPEN.with(|open| {
            let mut open = open.borrow_mut();
            let stack = open.get_mut(&self.key)?;
            stack.retain(|f| !Rc::ptr_eq(f, &self.frame));
            let below = stack.last().cloned();
            if stack.is_empty() {
                open.remove(&self.key);
            }
            below
        })
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        // After commit() the frame is already gone; otherwise this is an abort: the
        // staged elements in the frame are dropped, which deletes their files.
        self.pop_frame();
    }
}

/// Applies one change to an element set, checking it.
fn apply_to_set(set: &mut ElementSet, op: &Op) -> Result<()> {
    match op {
        Op::Add { staged, overwrite } => {
            set.check_add(staged.kind, &staged.name, *overwrite)?;
            set.insert(staged.kind, staged.name.as_str());
        }
        Op::Remove { name } => {
            if set.kind_of(name.as_str()).is_none() {
                return Err(Error::NoSuchElement {
                    dataset: PathBuf::new(),
                    name: name.to_string(),
                });
            }
            set.remove(name.as_str());
        }
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn empty_group() -> Value {
    json!({"attributes": {}, "zarr_format": 3, "node_type": "group"})
}

fn to_text(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).expect("json")
}

/// Plans and performs one durable commit of `ops`.
fn commit_ops(dataset: &Dataset, _proof: &WriteGuard, mut ops: Vec<Op>) -> Result<CommitInfo> {
    let layout = dataset.layout();
    let root = &layout.root;
    let manifest = Manifest::load(&layout.hidden)?.unwrap_or_default();
    if ops.is_empty() {
        return Ok(CommitInfo {
            generation: manifest.generation,
            durable: false,
        });
    }
    let mut elements = ElementSet::load(root, Some(&manifest))?;
    let root_path = root.join("zarr.json");
    let mut root_doc = read_json(&root_path)?;
    let had_consolidated = consolidated::present(&root_doc);
    let keep =
        had_consolidated && dataset.options().consolidated == ConsolidatedMetadata::KeepCurrent;

    let mut steps = Vec::new();
    let mut cleanup = Vec::new();
    let mut new_groups = BTreeSet::new();
    let mut labels_changed = false;
    let trash_dir = layout.hidden_relative(&[super::layout::TRASH_DIR]);
    let move_to_trash = |steps: &mut Vec<Step>, cleanup: &mut Vec<String>, target: &str| {
        let trash = format!("{trash_dir}/{}", unique_id());
        steps.push(Step::Mkdir {
            path: trash_dir.clone(),
        });
        steps.push(Step::Rename {
            from: target.to_owned(),
            to: trash.clone(),
        });
        cleanup.push(trash);
    };

    for op in &ops {
        match op {
            Op::Add { staged, overwrite } => {
                let replaces = elements.check_add(staged.kind, &staged.name, *overwrite)?;
                let group = staged.kind.group();
                if !root.join(group).join("zarr.json").exists() && new_groups.insert(staged.kind) {
                    steps.push(Step::Mkdir { path: group.into() });
                    if staged.kind != ElementKind::Labels {
                        steps.push(Step::Write {
                            path: format!("{group}/zarr.json"),
                            text: to_text(&empty_group()),
                        });
                        consolidated::set_node(&mut root_doc, group, empty_group());
                    }
                }
                let target = element_path(staged.kind, staged.name.as_str());
                if replaces {
                    move_to_trash(&mut steps, &mut cleanup, &target);
                    consolidated::remove_tree(&mut root_doc, &target);
                }
                steps.push(Step::Rename {
                    from: relative(root, &staged.element_dir()),
                    to: target.clone(),
                });
                if keep {
                    consolidated::insert_tree(&mut root_doc, &target, &staged.element_dir())?;
                }
                elements.insert(staged.kind, staged.name.as_str());
                labels_changed |= staged.kind == ElementKind::Labels;
            }
            Op::Remove { name } => {
                let kind = elements
                    .kind_of(name.as_str())
                    .ok_or_else(|| Error::NoSuchElement {
                        dataset: root.clone(),
                        name: name.to_string(),
                    })?;
                let target = element_path(kind, name.as_str());
                move_to_trash(&mut steps, &mut cleanup, &target);
                consolidated::remove_tree(&mut root_doc, &target);
                elements.remove(name.as_str());
                labels_changed |= kind == ElementKind::Labels;
            }
        }
    }
    if labels_changed {
        // The NGFF list of labels in `labels/zarr.json` follows the committed set.
        let path = root.join("labels/zarr.json");
        let mut doc = if path.exists() {
            read_json(&path)?
        } else {
            empty_group()
        };
        doc["attributes"]["ome"]["labels"] = json!(elements.names(ElementKind::Labels));
        steps.push(Step::Write {
            path: "labels/zarr.json".into(),
            text: to_text(&doc),
        });
        consolidated::set_node(&mut root_doc, "labels", doc);
    }
    if had_consolidated {
        if !keep {
            consolidated::drop_all(&mut root_doc);
        }
        steps.push(Step::Write {
            path: "zarr.json".into(),
            text: to_text(&root_doc),
        });
    }
    let new_manifest = Manifest {
        generation: manifest.generation + 1,
        elements: elements.to_manifest_map(),
        ..Manifest::default()
    };
    steps.push(Step::Write {
        path: layout.hidden_relative(&[MANIFEST_FILE]),
        text: String::from_utf8(new_manifest.to_bytes()).expect("utf-8"),
    });
    let journal = Journal {
        version: 1,
        generation: new_manifest.generation,
        steps,
        cleanup,
    };

    // The commit point: once the journal is durable, the commit will happen.
    let publisher = Publisher::new();
    publisher.write(&layout.hidden.join(JOURNAL_FILE), &journal.to_bytes())?;
    publisher.sync()?;
    let staging_dirs: Vec<PathBuf> = ops
        .iter_mut()
        .filter_map(|op| match op {
            Op::Add { staged, .. } => {
                staged.consumed = true;
                Some(staged.dir.clone())
            }
            Op::Remove { .. } => None,
        })
        .collect();
    finish(dataset, &journal, &publisher)?;
    drop(ops);
    for dir in staging_dirs {
        let _ = remove_tree(&dir);
    }
    Ok(CommitInfo {
        generation: journal.generation,
        durable: true,
    })
}

/// Applies a decided journal to the end: steps, folder fsyncs, journal removal, then
/// the (harmless if interrupted) cleanup.
fn finish(dataset: &Dataset, journal: &Journal, publisher: &Publisher) -> Result<()> {
    let layout = dataset.layout();
    let journal_path = layout.hidden.join(JOURNAL_FILE);
    journal.apply(&layout.root, publisher, &journal_path)?;
    publisher.sync()?;
    publisher.remove_file(&journal_path)?;
    publisher.sync()?;
    sync_dir(&layout.hidden)?;
    for path in &journal.cleanup {
        if let Some(rel) = crate::util::safe_relative(path) {
            let _ = remove_tree(&layout.root.join(rel));
        }
    }
    Ok(())
}

/// Under the write lock: finishes an interrupted commit, then removes staging
/// folders of dead writers and leftover trash.
pub(crate) fn recover(dataset: &Dataset, _proof: &WriteGuard) -> Result<RecoveryReport> {
    let layout = dataset.layout();
    let mut report = RecoveryReport::default();
    if let Some(journal) = Journal::load(&layout.hidden)? {
        let publisher = Publisher::new();
        finish(dataset, &journal, &publisher)?;
        report.finished_commit = Some(journal.generation);
    }
    report.removed_staging = staging::remove_abandoned(layout)?;
    let trash = layout.trash();
    if let Ok(entries) = std::fs::read_dir(&trash) {
        for entry in entries.flatten() {
            remove_tree(&entry.path())?;
            report.removed_trash.push(entry.path());
        }
    }
    Ok(report)
}
