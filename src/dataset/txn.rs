//! Write transactions and the commit protocol (`spec/commit-protocol.md`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use ndarray::ArrayViewD;
use serde_json::{Value, json};

use super::ElementSet;
use super::layout::{element_path, unique_id};
use super::staging::{self, StagedElement};
use super::stamps::UnchangedGroups;
use super::{ConsolidatedMetadata, Dataset, consolidated};
use crate::commit::journal::JOURNAL_FILE;
use crate::commit::manifest::MANIFEST_FILE;
use crate::commit::{FoundJournal, Journal, Manifest, Step};
use crate::element::raster::read_json;
use crate::element::{ElementKind, ElementName, Pixel, RasterOptions};
use crate::error::{Error, Result};
use crate::lock::WriteGuard;
use crate::storage::Publisher;
use crate::storage::publish::remove_tree;
use crate::table::append::{ArrayWrite, TablePatch};
use crate::table::{self, AppendOutcome, KeyRecord, RowBatch, TableSpec};

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
    /// The cumulative pending changes of a committed table (only the last one of a
    /// table in a transaction is applied).
    TableAppend {
        name: ElementName,
        patch: Box<TablePatch>,
        /// The rows' array writes, stored at commit once every check has passed.
        writes: Vec<ArrayWrite>,
    },
    /// An element's group document rewritten (new transformations).
    WriteGroup {
        name: ElementName,
        kind: ElementKind,
        doc: Value,
    },
    /// A small file in the hidden folder (idempotency records).
    WriteHidden {
        path: String,
        text: String,
    },
    /// A node of an element replaced by a staged one (wider categorical codes).
    ReplaceNode {
        staged: StagedElement,
        /// The node, relative to the dataset root.
        target: String,
    },
    /// The committed element set made what a listing of every group folder finds
    /// (elements other tools wrote or removed become committed or are forgotten).
    Adopt,
    /// A commit even without other changes: it writes the element index of a
    /// version-1 dataset (every commit does).
    Upgrade,
    /// A staged file moved into an existing element (a new points part).
    AddFile {
        staged: StagedElement,
        /// The staged file, inside the staging folder.
        from: PathBuf,
        /// Its place, relative to the dataset root.
        to: String,
        /// Rows it holds.
        rows: u64,
    },
}

/// (process id, device, inode of the dataset's lock file).
type TxnKey = (u32, u64, u64);

/// Names of the marker files that staged folders carry through a swap (§6 of
/// spec/commit-protocol.md).
pub(crate) const SWAP_MARKER_PREFIX: &str = ".sz-swap-";

/// The changes of one (possibly nested) transaction.
type Frame = Rc<RefCell<Vec<Op>>>;

thread_local! {
    /// Open transactions of this thread, per dataset lock file, innermost last.
    static OPEN: RefCell<HashMap<TxnKey, Vec<Frame>>> = RefCell::new(HashMap::new());
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The generation the dataset has after the commit (unchanged for an empty or a
    /// nested commit).
    pub generation: u64,
    /// Whether this commit wrote to disk (false when nested or empty).
    pub durable: bool,
    /// When this commit removed zarr-python's consolidated metadata from the root
    /// `zarr.json` because it outgrew [`super::CONSOLIDATED_LIMIT_BYTES`]: the number
    /// of nodes it held (readers now list folders).
    pub dropped_consolidated: Option<usize>,
}

/// What a recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// The generation of the interrupted commit that was finished, if any.
    pub finished_commit: Option<u64>,
    /// An interrupted commit that was never decided and was withdrawn (the dataset
    /// is in its state before that commit), described.
    pub withdrawn_commit: Option<String>,
    /// Staging folders of dead writers that were removed.
    pub removed_staging: Vec<PathBuf>,
    /// Trash folders that were removed.
    pub removed_trash: Vec<PathBuf>,
    /// Temporary files of interrupted atomic writes that were removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Tables whose element document disagreed with their node documents (another
    /// program changed them) and was rebuilt from them (whole-dataset recovery only).
    pub rebuilt_table_documents: Vec<String>,
}

/// A write transaction: holds the write lock; its changes reach the disk together,
/// or not at all, when it commits. Dropping it without committing discards them.
#[derive(Debug)]
pub struct WriteTxn<'a> {
    /// Metadata files read while the transaction holds the write lock are read once
    /// (crate::storage::doc_cache); inert in a nested transaction. The first field:
    /// it ends before the lock is released.
    _reads: crate::storage::doc_cache::Scope,
    dataset: &'a Dataset,
    guard: WriteGuard,
    key: TxnKey,
    frame: Frame,
    nested: bool,
    /// The committed manifest, read once when the transaction began.
    manifest: Option<Manifest>,
    /// The groups unchanged since the last commit, looked at once when the
    /// transaction began (super::stamps).
    unchanged: super::stamps::UnchangedGroups,
    /// The folders of the dataset found not to be links while the transaction holds
    /// the write lock: its appends' plans and its commit share them.
    links: Arc<crate::util::LinkCheck>,
    /// The element set [`Self::simulated`] last computed, and the shape (frame, number
    /// of changes) of the open frames it includes.
    simulated: RefCell<Option<SimulatedSet>>,
}

/// An element set and the frames (identity, changes applied) it was computed from.
type SimulatedSet = (ElementSet, Vec<(*const RefCell<Vec<Op>>, usize)>);

/// Identifies the dataset's lock file within this process: a child forked while its
/// parent's thread had a transaction open must not join that copy of it.
fn lock_key(dataset: &Dataset) -> Result<TxnKey> {
    let (dev, ino) = dataset
        .lock()
        .lock_file_id()
        .map_err(crate::error::io_err("stat", &dataset.layout().hidden))?;
    Ok((std::process::id(), dev, ino))
}

impl<'a> WriteTxn<'a> {
    pub(super) fn begin(dataset: &'a Dataset) -> Result<Self> {
        let guard = dataset.lock().write(dataset.options().lock_timeout)?;
        let key = lock_key(dataset)?;
        let nested = OPEN.with(|open| open.borrow().get(&key).is_some_and(|s| !s.is_empty()));
        // Recovery's link checks serve the transaction too (same write lock).
        let links: Arc<crate::util::LinkCheck> = Arc::default();
        let (manifest, unchanged) = if nested {
            let manifest = Manifest::load(&dataset.layout().hidden)?;
            let unchanged = super::stamps::unchanged_groups(dataset.layout(), manifest.as_ref());
            (manifest, unchanged)
        } else {
            let (manifest, unchanged, _) = recover_reading_manifest(dataset, &guard, &links)?;
            (manifest, unchanged)
        };
        // Begun after recovery, whose replay may rewrite what it would cache.
        let reads = crate::storage::doc_cache::scope(dataset.root());
        let frame: Frame = Rc::default();
        OPEN.with(|open| {
            open.borrow_mut()
                .entry(key)
                .or_default()
                .push(frame.clone())
        });
        Ok(Self {
            _reads: reads,
            dataset,
            guard,
            key,
            frame,
            nested,
            manifest,
            unchanged,
            links,
            simulated: RefCell::new(None),
        })
    }

    /// The write lock this transaction holds.
    pub fn guard(&self) -> &WriteGuard {
        &self.guard
    }

    /// A savepoint: the number of changes of this transaction's own frame.
    pub(super) fn mark(&self) -> usize {
        self.frame.borrow().len()
    }

    /// Discards the changes made since `mark` (their staged files with them).
    pub(super) fn rollback_to(&self, mark: usize) {
        let dropped: Vec<Op> = {
            let mut frame = self.frame.borrow_mut();
            let at = mark.min(frame.len());
            frame.split_off(at)
        };
        drop(dropped);
        *self.simulated.borrow_mut() = None;
    }

    /// Queues the write of a small file of the hidden folder (`path` relative to the
    /// dataset root) as a step of this transaction's journal.
    pub(super) fn write_hidden(&self, path: String, text: String) {
        self.frame.borrow_mut().push(Op::WriteHidden { path, text });
    }

    /// The element set as this transaction would leave it: committed state plus the
    /// changes of every open transaction of this thread on this dataset, in order.
    /// The committed state is read once per transaction (nobody else commits while it
    /// holds the write lock); later calls apply only the changes added since.
    fn simulated(&self) -> Result<std::cell::Ref<'_, ElementSet>> {
        let frames = OPEN.with(|open| open.borrow().get(&self.key).cloned().unwrap_or_default());
        let shape: Vec<(*const RefCell<Vec<Op>>, usize)> = frames
            .iter()
            .map(|f| (Rc::as_ptr(f), f.borrow().len()))
            .collect();
        let mut cache = self.simulated.borrow_mut();
        // Valid while only the innermost frame has grown since it was built.
        let valid = cache.as_ref().is_some_and(|(_, built)| {
            built.len() == shape.len()
                && built.iter().zip(&shape).enumerate().all(|(i, (b, s))| {
                    b.0 == s.0 && (b.1 == s.1 || (i + 1 == shape.len() && b.1 <= s.1))
                })
        });
        if !valid {
            let set = ElementSet::load_given(
                self.dataset.layout(),
                self.manifest.as_ref(),
                &self.unchanged,
            )?;
            *cache = Some((set, Vec::new()));
        }
        let (set, built) = cache.as_mut().expect("just built");
        let applied = |frame: usize| built.get(frame).map_or(0, |b| b.1);
        let mut result = Ok(());
        for (i, frame) in frames.iter().enumerate() {
            for op in frame.borrow().iter().skip(applied(i)) {
                result = result.and_then(|()| apply_to_set(set, op));
            }
        }
        if let Err(e) = result {
            *cache = None;
            return Err(e);
        }
        *built = shape;
        drop(cache);
        Ok(std::cell::Ref::map(self.simulated.borrow(), |c| {
            &c.as_ref().expect("just built").0
        }))
    }

    /// The kind of the element `name` as this transaction would leave the dataset
    /// (the committed state plus the pending changes), or `None` when there is none.
    pub fn kind_of(&self, name: &str) -> Result<Option<ElementKind>> {
        self.simulated()?.kind_of(name)
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
        check_op(&*self.simulated()?, &op)?;
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
        check_op(&*self.simulated()?, &op).map_err(|e| match e {
            Error::NoSuchElement { name, .. } => Error::NoSuchElement {
                dataset: self.dataset.root().to_path_buf(),
                name,
            },
            other => other,
        })?;
        self.frame.borrow_mut().push(op);
        Ok(())
    }

    /// Replaces the coordinate transformations of the image, labels, points or
    /// shapes element `name` (a metadata-only change: its group `zarr.json` is
    /// rewritten when the transaction commits). Vectors run over the element's spatial
    /// axes (see [`Transform`](crate::Transform)). An element added or removed earlier
    /// in the open transactions is refused: set its transformations when staging it,
    /// or in a later transaction.
    pub fn set_transformations(
        &mut self,
        name: &str,
        transformations: &crate::Transformations,
    ) -> Result<()> {
        let name = ElementName::new(name)?;
        if self.adds_or_removes(name.as_str()) {
            return Err(Error::InvalidInput(format!(
                "element {name} is added or removed in this transaction: set its transformations when staging it, or in a later transaction"
            )));
        }
        let root = self.dataset.root();
        let kind =
            self.simulated()?
                .kind_of(name.as_str())?
                .ok_or_else(|| Error::NoSuchElement {
                    dataset: root.to_path_buf(),
                    name: name.to_string(),
                })?;
        if kind == ElementKind::Tables {
            return Err(Error::InvalidInput(format!(
                "{name} is a table: tables have no coordinate transformations"
            )));
        }
        let path = root
            .join(element_path(kind, name.as_str()))
            .join("zarr.json");
        let doc = crate::element::transform::replaced_in_group(&read_json(&path)?, transformations)
            .map_err(|reason| Error::InvalidInput(format!("element {name}: {reason}")))?;
        self.frame
            .borrow_mut()
            .push(Op::WriteGroup { name, kind, doc });
        Ok(())
    }

    /// Whether the open transactions add or remove an element named `name` (ignoring
    /// ASCII case).
    pub(super) fn adds_or_removes(&self, name: &str) -> bool {
        self.find_pending(|op| match op {
            Op::Add { staged, .. } if staged.name.as_str().eq_ignore_ascii_case(name) => Some(()),
            Op::Remove { name: n } if n.as_str().eq_ignore_ascii_case(name) => Some(()),
            _ => None,
        })
        .is_some()
    }

    /// Passes the pending ops of this thread's open transactions on this dataset to
    /// `f`, newest first, and returns the first `Some` it gives: what `f` finds in
    /// the newest op where it finds anything. (A batch of appends to one table thus
    /// clones only the table's latest patch, not every earlier one.)
    fn find_pending<R>(&self, mut f: impl FnMut(&Op) -> Option<R>) -> Option<R> {
        let frames = OPEN.with(|open| open.borrow().get(&self.key).cloned().unwrap_or_default());
        frames
            .iter()
            .rev()
            .find_map(|frame| frame.borrow().iter().rev().find_map(&mut f))
    }

    /// The record of an idempotency key, pending in this transaction or committed.
    fn known_key(&self, root: &Path, rel: Option<&str>) -> Result<Option<KeyRecord>> {
        let Some(rel) = rel else {
            return Ok(None);
        };
        let pending = self.find_pending(|op| match op {
            Op::WriteHidden { path, text } if path == rel => Some(text.clone()),
            _ => None,
        });
        if let Some(text) = pending {
            let doc: Value = serde_json::from_str(&text).expect("records are written by us");
            return Ok(Some(
                KeyRecord::parse(&doc).expect("records are written by us"),
            ));
        }
        table::read_key_record(root, rel)
    }

    /// The outcome of an append whose `key` is already recorded: the first append's
    /// range when `digest` matches its record, else [`Error::KeyReused`].
    fn repeated_append(
        &self,
        element: &ElementName,
        key: Option<&str>,
        key_rel: Option<&str>,
        digest: &str,
    ) -> Result<Option<AppendOutcome>> {
        let (Some(key), Some(record)) = (key, self.known_key(self.dataset.root(), key_rel)?) else {
            return Ok(None);
        };
        record.check_same(element.as_str(), key, digest)?;
        Ok(Some(AppendOutcome {
            table: element.to_string(),
            start: record.start,
            end: record.end,
            key: Some(key.to_owned()),
            applied: false,
        }))
    }

    /// Queues the idempotency record of an append.
    fn record_key(
        &self,
        key_rel: Option<String>,
        key: Option<&str>,
        range: std::ops::Range<u64>,
        digest: String,
    ) {
        if let (Some(path), Some(key)) = (key_rel, key) {
            let record = KeyRecord {
                start: range.start,
                end: range.end,
                digest: Some(digest),
            };
            self.frame.borrow_mut().push(Op::WriteHidden {
                path,
                text: record.to_text(key),
            });
        }
    }

    /// Appends rows to the table `name`, creating it from `create` when it does not
    /// exist. With an idempotency `key` already committed (or pending in this
    /// transaction) with the same rows, nothing is appended and the first append's
    /// range is returned (`applied` false); with other rows, [`Error::KeyReused`].
    /// Zero rows into an existing table record the key and append nothing. Everything
    /// is checked now; the rows' chunks are written when the transaction commits, and
    /// the table grows with that commit.
    pub fn append_rows(
        &mut self,
        name: &str,
        rows: &RowBatch,
        create: Option<&TableSpec>,
        key: Option<&str>,
    ) -> Result<AppendOutcome> {
        let name = ElementName::new(name)?;
        let root = self.dataset.root().to_path_buf();
        let key_rel = key
            .map(|k| table::key_record_path(name.as_str(), k))
            .transpose()?;
        let outcome = |start: u64, end: u64, applied: bool| AppendOutcome {
            table: name.to_string(),
            start,
            end,
            key: key.map(str::to_owned),
            applied,
        };
        let digest = table::digest::rows_digest(&rows.obs, rows.x.as_ref());
        if let Some(repeated) = self.repeated_append(&name, key, key_rel.as_deref(), &digest)? {
            return Ok(repeated);
        }
        let publisher = Arc::new(self.dataset.publisher());
        let staged_dir = self.find_pending(|op| match op {
            Op::Add { staged, .. } if staged.kind == ElementKind::Tables && staged.name == name => {
                Some(staged.element_dir())
            }
            _ => None,
        });
        let committed_kind = self.simulated()?.kind_of(name.as_str())?;
        let range = match committed_kind {
            None => {
                let spec = create.ok_or_else(|| Error::NoSuchElement {
                    dataset: root.clone(),
                    name: format!("{name} (give a table spec to create it)"),
                })?;
                self.simulated()?
                    .check_add(ElementKind::Tables, &name, false)?;
                let staged = StagedElement::create(
                    self.dataset.layout(),
                    &publisher,
                    ElementKind::Tables,
                    name.clone(),
                )?;
                let range = table::build_in(&staged.element_dir(), &publisher, spec, rows)?;
                self.frame.borrow_mut().push(Op::Add {
                    staged,
                    overwrite: false,
                });
                range
            }
            Some(ElementKind::Tables) => match staged_dir {
                Some(dir) => table::append_in_place(&dir, &publisher, rows)?,
                None => {
                    let rel = element_path(ElementKind::Tables, name.as_str());
                    let arrays =
                        table::arrays_at(&root, &publisher)?.sharing_links(self.links.clone());
                    let latest = self.find_pending(|op| match op {
                        Op::TableAppend { name: n, patch, .. } if *n == name => Some(patch.clone()),
                        _ => None,
                    });
                    let (mut patch, widened) = match latest {
                        Some(patch) => (*patch, Vec::new()),
                        None => {
                            let state = table::TableState::load(&root.join(&rel), &arrays)?;
                            let (index, index_kind) = &state.index;
                            table::element_doc::check_length(
                                &root.join(&rel),
                                name.as_str(),
                                &table::state::string_values_path(index, index_kind),
                                state.n_obs,
                            )?;
                            let (state, widened) = self.widen_codes(&rel, state, rows)?;
                            let mut patch = TablePatch::new(rel.clone(), state);
                            for op in &widened {
                                if let Op::ReplaceNode { staged, target } = op {
                                    let copy = relative(&root, &staged.element_dir());
                                    patch.redirects.insert(target.clone(), copy);
                                }
                            }
                            (patch, widened)
                        }
                    };
                    let planned = table::append::plan(&arrays, &mut patch, rows)?;
                    if !planned.writes.is_empty() {
                        // The wider codes are swapped in before the table grows.
                        self.frame.borrow_mut().extend(widened);
                        self.frame.borrow_mut().push(Op::TableAppend {
                            name: name.clone(),
                            patch: Box::new(patch),
                            writes: planned.writes,
                        });
                    }
                    planned.range
                }
            },
            Some(other) => {
                return Err(Error::WrongElementType {
                    name: name.to_string(),
                    actual: other.to_string(),
                    expected: "a table".into(),
                });
            }
        };
        self.record_key(key_rel, key, range.clone(), digest);
        Ok(outcome(range.start, range.end, true))
    }

    /// Stages a wider copy of every categorical codes array of the table at `rel`
    /// that is too narrow for the categories `rows` bring (a table written by
    /// spatialdata stores `int8` codes): same values, wider type. Returns the table's
    /// state with those columns' codes wide, and the operations that swap the copies
    /// in when the transaction commits (the rows' codes are written into the copies).
    fn widen_codes(
        &self,
        rel: &str,
        mut state: table::TableState,
        rows: &RowBatch,
    ) -> Result<(table::TableState, Vec<Op>)> {
        let columns = table::append::codes_to_widen(&state, rows)?;
        if columns.is_empty() {
            return Ok((state, Vec::new()));
        }
        let root = self.dataset.root();
        let table_name = ElementName::new(rel.rsplit('/').next().unwrap_or(rel))?;
        let mut ops = Vec::new();
        for (column, prim) in columns.iter().cloned() {
            let target = format!("{rel}/obs/{column}/codes");
            let old = read_json(&root.join(&target).join("zarr.json"))?;
            let old_prim = old
                .get("data_type")
                .and_then(Value::as_str)
                .and_then(table::Prim::parse)
                .ok_or_else(|| Error::Corrupt {
                    path: root.join(&target),
                    reason: "codes of an unsupported type".into(),
                })?;
            let arrays = table::arrays_at(root, &Arc::new(Publisher::new()))?;
            let n_obs = state.n_obs;
            let codes: Vec<i64> = table::append::with_prim!(old_prim, T => {
                let values: Vec<T> = arrays.read(&target, 0..n_obs)?;
                #[allow(clippy::unnecessary_cast)]
                values.into_iter().map(|v| v as i64).collect()
            });
            let publisher = Arc::new(self.dataset.publisher());
            let staged = StagedElement::create(
                self.dataset.layout(),
                &publisher,
                ElementKind::Tables,
                table_name.clone(),
            )?;
            let staged_arrays = table::arrays_at(&staged.element_dir(), &publisher)?;
            let attrs = old.get("attributes").cloned().unwrap_or_else(|| json!({}));
            let chunks = vec![table::arrays::ROW_CHUNK];
            match prim {
                table::Prim::I32 => staged_arrays.create::<i32>(
                    "",
                    "int32",
                    vec![n_obs],
                    chunks,
                    attrs,
                    codes.iter().map(|&c| c as i32).collect(),
                )?,
                _ => staged_arrays.create::<i64>("", "int64", vec![n_obs], chunks, attrs, codes)?,
            }
            publisher.sync()?;
            ops.push(Op::ReplaceNode { staged, target });
        }
        for (name, kind) in &mut state.columns {
            if let (Some((_, prim)), table::ColumnKind::Categorical { codes, .. }) =
                (columns.iter().find(|(c, _)| c == name), kind)
            {
                *codes = *prim;
            }
        }
        Ok((state, ops))
    }

    /// Appends `batch` to the points element `name` as one new part file (spatialdata
    /// reads every part). With an idempotency `key` already committed or pending with
    /// the same points, nothing is appended and the first append's row range is
    /// returned; with other points, [`Error::KeyReused`]. Zero points record the key
    /// and add no part.
    pub fn append_points(
        &mut self,
        name: &str,
        batch: &arrow_array::RecordBatch,
        key: Option<&str>,
    ) -> Result<AppendOutcome> {
        use crate::element::points;
        let name = ElementName::new(name)?;
        let root = self.dataset.root().to_path_buf();
        let key_rel = key
            .map(|k| table::key_record_path(name.as_str(), k))
            .transpose()?;
        let outcome = |start: u64, end: u64, applied: bool| AppendOutcome {
            table: name.to_string(),
            start,
            end,
            key: key.map(str::to_owned),
            applied,
        };
        let digest = table::digest::points_digest(batch);
        if let Some(repeated) = self.repeated_append(&name, key, key_rel.as_deref(), &digest)? {
            return Ok(repeated);
        }
        let committed_kind = self.simulated()?.kind_of(name.as_str())?;
        match committed_kind {
            Some(ElementKind::Points) => {}
            Some(other) => {
                return Err(Error::WrongElementType {
                    name: name.to_string(),
                    actual: other.to_string(),
                    expected: "points".into(),
                });
            }
            None => {
                return Err(Error::NoSuchElement {
                    dataset: root,
                    name: name.to_string(),
                });
            }
        }
        let element_dir = root.join(element_path(ElementKind::Points, name.as_str()));
        if self
            .find_pending(|op| match op {
                Op::Add { staged, .. } if staged.name == name => Some(()),
                _ => None,
            })
            .is_some()
        {
            return Err(Error::InvalidInput(format!(
                "points {name} are added in this same transaction: commit first, then append"
            )));
        }
        // Part names and row offsets continue after the committed and pending parts.
        let committed = points::points_info(&element_dir)?;
        let mut next: u64 = points::next_part_name(&element_dir)?
            .trim_start_matches("part.")
            .trim_end_matches(".parquet")
            .parse()
            .unwrap_or(0);
        let mut start = committed.n;
        self.find_pending(|op| {
            if let Op::AddFile {
                staged, to, rows, ..
            } = op
                && staged.name == name
            {
                let n: u64 = to
                    .rsplit('/')
                    .next()
                    .and_then(|f| {
                        f.trim_start_matches("part.")
                            .trim_end_matches(".parquet")
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0);
                next = next.max(n + 1);
                start += rows;
            }
            None::<()>
        });
        let rows = batch.num_rows() as u64;
        if rows == 0 {
            // Nothing to add: only the key is recorded (a part without rows would be
            // a file for nothing). The columns must still be the element's.
            points::encode_points_part(batch, &element_dir)?;
            self.record_key(key_rel, key, start..start, digest);
            return Ok(outcome(start, start, true));
        }
        let publisher = Arc::new(self.dataset.publisher());
        let staged = StagedElement::create(
            self.dataset.layout(),
            &publisher,
            ElementKind::Points,
            name.clone(),
        )?;
        let from = staged.element_dir().join("part.parquet");
        points::write_points_part(&from, &publisher, batch, &element_dir)?;
        publisher.sync()?;
        let to = format!(
            "{}/points.parquet/part.{next}.parquet",
            element_path(ElementKind::Points, name.as_str())
        );
        self.frame.borrow_mut().push(Op::AddFile {
            staged,
            from,
            to,
            rows,
        });
        self.record_key(key_rel, key, start..start + rows, digest);
        Ok(outcome(start, start + rows, true))
    }

    /// Commits: all changes become visible together, or none (on error). A nested
    /// transaction hands its changes to the enclosing one instead.
    pub fn commit(self) -> Result<CommitInfo> {
        if self.nested {
            let ops: Vec<Op> = std::mem::take(&mut *self.frame.borrow_mut());
            if let Some(parent) = self.pop_frame() {
                parent.borrow_mut().extend(ops);
            }
            return Ok(CommitInfo {
                generation: 0,
                durable: false,
                dropped_consolidated: None,
            });
        }
        // The outermost commit also takes the requests other callers queued while
        // this transaction held the lock (group commit, spec/commit-protocol.md §12).
        if super::group::enabled() {
            super::group::commit_with_queue(self)
        } else {
            self.commit_own()
        }
    }

    /// Commits this (outermost) transaction's own changes, and nothing queued.
    pub(super) fn commit_own(self) -> Result<CommitInfo> {
        let ops: Vec<Op> = std::mem::take(&mut *self.frame.borrow_mut());
        self.pop_frame();
        commit_ops(
            self.dataset,
            &self.guard,
            self.manifest.as_ref(),
            &self.unchanged,
            &self.links,
            ops,
        )
    }

    /// Makes this transaction commit even if nothing else changes, so that a
    /// version-1 dataset gets its element index ([`Dataset::upgrade`]). Nothing
    /// happens to a version-2 dataset.
    pub fn upgrade_format(&mut self) {
        if !self.manifest.as_ref().is_some_and(Manifest::is_indexed) {
            self.frame.borrow_mut().push(Op::Upgrade);
        }
    }

    /// The dataset this transaction writes.
    pub(super) fn dataset(&self) -> &'a Dataset {
        self.dataset
    }

    /// Makes the committed element set what a listing of every group folder finds,
    /// when it differs from the manifest's (elements written or removed by other
    /// tools). Otherwise only records the groups' stamps, so that the next calls need
    /// not list them. Returns whether the commit will change the element set.
    pub fn adopt_foreign(&mut self) -> Result<bool> {
        let layout = self.dataset.layout();
        let listed = ElementSet::load(layout, self.manifest.as_ref())?;
        let indexed = self.manifest.as_ref().is_some_and(Manifest::is_indexed);
        if !listed.differs_from_record() && indexed {
            if !self.nested && self.frame.borrow().is_empty() {
                let generation = self
                    .manifest
                    .as_ref()
                    .map_or(0, Manifest::stamps_generation);
                let fresh = UnchangedGroups::only_sweep(self.unchanged.swept);
                super::stamps::record(layout, generation, &fresh, &[]);
            }
            return Ok(false);
        }
        self.frame.borrow_mut().push(Op::Adopt);
        Ok(true)
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
    check_op(set, op)?;
    match op {
        Op::Add { staged, .. } => set.insert(staged.kind, staged.name.as_str()),
        Op::Remove { name } => set.remove(name.as_str()),
        _ => Ok(()),
    }
}

/// Checks that one change can be applied to an element set.
fn check_op(set: &ElementSet, op: &Op) -> Result<()> {
    match op {
        Op::Add { staged, overwrite } => {
            set.check_add(staged.kind, &staged.name, *overwrite)?;
        }
        Op::Remove { name } => {
            if set.kind_of(name.as_str())?.is_none() {
                return Err(Error::NoSuchElement {
                    dataset: PathBuf::new(),
                    name: name.to_string(),
                });
            }
        }
        Op::TableAppend { name, .. } => match set.kind_of(name.as_str())? {
            Some(ElementKind::Tables) => {}
            _ => {
                return Err(Error::NoSuchElement {
                    dataset: PathBuf::new(),
                    name: name.to_string(),
                });
            }
        },
        Op::WriteGroup { name, kind, .. } => {
            if set.kind_of(name.as_str())? != Some(*kind) {
                return Err(Error::NoSuchElement {
                    dataset: PathBuf::new(),
                    name: name.to_string(),
                });
            }
        }
        Op::WriteHidden { .. } | Op::Adopt | Op::Upgrade => {}
        Op::ReplaceNode { .. } => {}
        Op::AddFile { staged, .. } => {
            if set.kind_of(staged.name.as_str())? != Some(staged.kind) {
                return Err(Error::NoSuchElement {
                    dataset: PathBuf::new(),
                    name: staged.name.to_string(),
                });
            }
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

/// The path of `node` relative to the table at `table` (`""` for the table itself),
/// when it lies in that table.
fn node_in_table<'p>(table: &str, node: &'p str) -> Option<&'p str> {
    match node.strip_prefix(table)? {
        "" => Some(""),
        rest => rest.strip_prefix('/'),
    }
}

/// Writes the element document of the (staged or repaired) table in `dir` in place
/// through `publisher`, durably at its level, its node documents as they are with
/// `changed` in their place.
pub(crate) fn publish_element_document(
    dir: &Path,
    changed: &BTreeMap<String, Value>,
    publisher: &Publisher,
) -> Result<()> {
    let doc = table::element_doc::element_document(dir, changed)?;
    publisher.write(&dir.join("zarr.json"), to_text(&doc).as_bytes())?;
    publisher.sync()
}

fn empty_group() -> Value {
    json!({"attributes": {}, "zarr_format": 3, "node_type": "group"})
}

fn to_text(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).expect("json")
}

/// Whether something is at `relative` below `root` (one `lstat`); where nothing is,
/// `links` remembers it (the steps that create it check it again).
fn occupied(links: &crate::util::LinkCheck, root: &Path, relative: &str) -> bool {
    let path = root.join(relative);
    match crate::storage::trace::lstat(&path) {
        Ok(_) => true,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::NotFound {
                links.note_not_link(root, &path);
            }
            false
        }
    }
}

/// Plans and performs one durable commit of `ops`.
fn commit_ops(
    dataset: &Dataset,
    _proof: &WriteGuard,
    recorded: Option<&Manifest>,
    unchanged: &super::stamps::UnchangedGroups,
    links: &Arc<crate::util::LinkCheck>,
    mut ops: Vec<Op>,
) -> Result<CommitInfo> {
    let layout = dataset.layout();
    let root = &layout.root;
    let base_generation = recorded.map_or(0, |m| m.generation);
    if ops.is_empty() {
        return Ok(CommitInfo {
            generation: base_generation,
            durable: false,
            dropped_consolidated: None,
        });
    }
    let adopt = ops.iter().any(|op| matches!(op, Op::Adopt));
    let elements = if adopt {
        ElementSet::load(layout, recorded)?
    } else {
        ElementSet::load_given(layout, recorded, unchanged)?
    };
    let indexed = recorded.is_some_and(Manifest::is_indexed);
    let root_path = root.join("zarr.json");
    let mut root_doc = read_json(&root_path)?;
    let had_consolidated = consolidated::present(&root_doc);
    let keep = had_consolidated && dataset.options().consolidated != ConsolidatedMetadata::Drop;

    let mut steps = Vec::new();
    let mut cleanup = Vec::new();
    let mut new_groups = BTreeSet::new();
    // The labels list is rewritten when the labels found (another tool's) differ
    // from the recorded ones.
    let mut labels_changed = adopt && elements.changed_kinds().contains(&ElementKind::Labels);
    let trash_dir = layout.hidden_relative(&[super::layout::TRASH_DIR]);
    // A new entry of the trash folder (made by the commit, deleted after it).
    let new_trash = |steps: &mut Vec<Step>, cleanup: &mut Vec<String>| -> String {
        let trash = format!("{trash_dir}/{}", unique_id());
        steps.push(Step::Mkdir {
            path: trash_dir.clone(),
        });
        cleanup.push(trash.clone());
        trash
    };
    let move_to_trash = |steps: &mut Vec<Step>, cleanup: &mut Vec<String>, target: &str| {
        let trash = new_trash(steps, cleanup);
        steps.push(Step::Rename {
            from: target.to_owned(),
            to: trash,
        });
    };
    // Puts the staged folder `staged` in the place of the existing `target` in one swap
    // (readers without the lock never find `target` missing); the old one goes to trash.
    let swap_in = |steps: &mut Vec<Step>,
                   cleanup: &mut Vec<String>,
                   staged: &Path,
                   target: &str|
     -> Result<()> {
        // The marker tells a replay on which side of the swap the staged folder is.
        let marker = format!("{SWAP_MARKER_PREFIX}{}", unique_id());
        let publisher = dataset.publisher();
        publisher.write(&staged.join(&marker), b"")?;
        publisher.sync()?;
        let from = relative(root, staged);
        let trash = new_trash(steps, cleanup);
        steps.push(Step::Exchange {
            from: from.clone(),
            to: target.to_owned(),
            trash: trash.clone(),
            marker: marker.clone(),
        });
        steps.push(Step::Rename { from, to: trash });
        steps.push(Step::Unlink {
            path: format!("{target}/{marker}"),
        });
        Ok(())
    };

    // Only the last (cumulative) patch of each table is applied, and only the last
    // group document of each element (each one replaces the whole document).
    let mut last_patch: std::collections::HashMap<String, usize> = Default::default();
    let mut last_group: std::collections::HashMap<String, usize> = Default::default();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::TableAppend { name, .. } => {
                last_patch.insert(name.to_string(), i);
            }
            Op::WriteGroup { name, .. } => {
                last_group.insert(name.to_string(), i);
            }
            _ => {}
        }
    }
    let mut extra_staged: Vec<StagedElement> = Vec::new();
    // Element folders this plan moves to the trash before later steps reuse them.
    let mut vacated: BTreeSet<String> = BTreeSet::new();
    // Publication order for readers without the lock (§10 of spec/commit-protocol.md):
    // node documents and element folders first, then each changed table's element
    // document (`changed_tables`: by table, its changed node documents), then the
    // listing documents, removals last (`removals`: by element folder, its steps).
    let mut changed_tables: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut removals: Vec<(String, Vec<Step>)> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::TableAppend { name, patch, .. } => {
                if last_patch.get(name.as_str()) != Some(&index) {
                    continue;
                }
                if elements.kind_of(name.as_str())? != Some(ElementKind::Tables) {
                    return Err(Error::NoSuchElement {
                        dataset: root.clone(),
                        name: name.to_string(),
                    });
                }
                let changed = changed_tables.entry(patch.rel.clone()).or_default();
                for (path, doc) in &patch.docs {
                    let path = path.trim_start_matches('/');
                    let node = node_in_table(&patch.rel, path).unwrap_or(path);
                    changed.insert(node.to_owned(), doc.clone());
                    if !node.is_empty() {
                        steps.push(Step::Write {
                            path: format!("{path}/zarr.json"),
                            text: to_text(doc),
                        });
                    }
                    consolidated::set_node(
                        &mut root_doc,
                        path.trim_start_matches('/'),
                        doc.clone(),
                    );
                }
                if patch.region_becomes_list {
                    let stage_publisher = Arc::new(dataset.publisher());
                    let staged = StagedElement::create(
                        layout,
                        &stage_publisher,
                        ElementKind::Tables,
                        name.clone(),
                    )?;
                    let arrays = table::arrays_at(&staged.element_dir(), &stage_publisher)?;
                    let regions = patch.state.regions.clone();
                    let n = regions.len() as u64;
                    arrays.create::<String>(
                        "",
                        "string",
                        vec![n],
                        vec![n.max(1)],
                        table::arrays::string_array_attrs(),
                        regions,
                    )?;
                    stage_publisher.sync()?;
                    let region_rel = format!("{}/uns/spatialdata_attrs/region", patch.rel);
                    swap_in(&mut steps, &mut cleanup, &staged.element_dir(), &region_rel)?;
                    let region_doc = read_json(&staged.element_dir().join("zarr.json"))?;
                    changed.insert("uns/spatialdata_attrs/region".into(), region_doc.clone());
                    consolidated::set_node(&mut root_doc, &region_rel, region_doc);
                    extra_staged.push(staged);
                }
            }
            Op::ReplaceNode { staged, target } => {
                swap_in(&mut steps, &mut cleanup, &staged.element_dir(), target)?;
                let doc = read_json(&staged.element_dir().join("zarr.json"))?;
                let table = element_path(ElementKind::Tables, staged.name.as_str());
                if let Some(node) = node_in_table(&table, target) {
                    let changed = changed_tables.entry(table).or_default();
                    changed.insert(node.to_owned(), doc.clone());
                }
                consolidated::set_node(&mut root_doc, target, doc);
            }
            Op::AddFile {
                staged, from, to, ..
            } => {
                if elements.kind_of(staged.name.as_str())? != Some(staged.kind) {
                    return Err(Error::NoSuchElement {
                        dataset: root.clone(),
                        name: staged.name.to_string(),
                    });
                }
                if crate::storage::trace::lstat(&root.join(to)).is_ok() {
                    return Err(Error::Corrupt {
                        path: root.join(to),
                        reason: "a part of that name appeared; retry the append".into(),
                    });
                }
                steps.push(Step::Rename {
                    from: relative(root, from),
                    to: to.clone(),
                });
            }
            Op::WriteGroup { name, kind, doc } => {
                if last_group.get(name.as_str()) != Some(&index) {
                    continue;
                }
                if elements.kind_of(name.as_str())? != Some(*kind) {
                    return Err(Error::NoSuchElement {
                        dataset: root.clone(),
                        name: name.to_string(),
                    });
                }
                let target = element_path(*kind, name.as_str());
                steps.push(Step::Write {
                    path: format!("{target}/zarr.json"),
                    text: to_text(doc),
                });
                consolidated::set_node(&mut root_doc, &target, doc.clone());
            }
            Op::Adopt | Op::Upgrade => {}
            Op::WriteHidden { path, text } => {
                if let Some(parent) = Path::new(path).parent() {
                    steps.push(Step::Mkdir {
                        path: parent.to_string_lossy().into_owned(),
                    });
                }
                steps.push(Step::Write {
                    path: path.clone(),
                    text: text.clone(),
                });
            }
            Op::Add { staged, overwrite } => {
                let replaces = elements.check_add(staged.kind, &staged.name, *overwrite)?;
                let group = staged.kind.group();
                if !crate::element::raster::document_exists(&root.join(group).join("zarr.json"))
                    && new_groups.insert(staged.kind)
                {
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
                if staged.kind == ElementKind::Tables {
                    // The staged table is complete: its element document, written now
                    // in staging, moves in with it.
                    publish_element_document(
                        &staged.element_dir(),
                        &BTreeMap::new(),
                        &dataset.publisher(),
                    )?;
                    changed_tables.remove(&target);
                }
                // A removal of this same folder earlier in the plan must come first.
                for (_, removal) in removals.extract_if(.., |(folder, _)| *folder == target) {
                    steps.extend(removal);
                }
                if !replaces && !vacated.contains(&target) && occupied(links, root, &target) {
                    return Err(Error::Corrupt {
                        path: root.join(&target),
                        reason: "it is in the way of the new element but is not a valid element itself; move it away".into(),
                    });
                }
                if replaces {
                    swap_in(&mut steps, &mut cleanup, &staged.element_dir(), &target)?;
                    consolidated::remove_tree(&mut root_doc, &target);
                } else {
                    steps.push(Step::Rename {
                        from: relative(root, &staged.element_dir()),
                        to: target.clone(),
                    });
                }
                if keep {
                    consolidated::insert_tree(&mut root_doc, &target, &staged.element_dir())?;
                }
                elements.insert(staged.kind, staged.name.as_str())?;
                labels_changed |= staged.kind == ElementKind::Labels;
            }
            Op::Remove { name } => {
                let kind =
                    elements
                        .kind_of(name.as_str())?
                        .ok_or_else(|| Error::NoSuchElement {
                            dataset: root.clone(),
                            name: name.to_string(),
                        })?;
                let target = element_path(kind, name.as_str());
                let mut removal = Vec::new();
                move_to_trash(&mut removal, &mut cleanup, &target);
                vacated.insert(target.clone());
                changed_tables.remove(&target);
                consolidated::remove_tree(&mut root_doc, &target);
                let records = layout.hidden_relative(&["appends", name.as_str()]);
                if kind == ElementKind::Tables
                    && crate::storage::trace::exists(&root.join(&records))
                {
                    move_to_trash(&mut removal, &mut cleanup, &records);
                }
                removals.push((target, removal));
                elements.remove(name.as_str())?;
                labels_changed |= kind == ElementKind::Labels;
            }
        }
    }
    for (table, changed) in &changed_tables {
        // Last write of each table: readers of the table group switch here (P6).
        let doc = table::element_doc::element_document_after(&root.join(table), changed)?;
        steps.push(Step::Write {
            path: format!("{table}/zarr.json"),
            text: to_text(&doc),
        });
        consolidated::set_node(&mut root_doc, table, doc);
    }
    let no_counts = BTreeMap::new();
    let counts = elements.counts(recorded.map_or(&no_counts, |m| &m.counts));
    if labels_changed {
        // The NGFF list of labels in `labels/zarr.json` follows the committed set, or
        // is absent (LabelsList): never stale.
        let path = root.join("labels/zarr.json");
        let existed = crate::element::raster::document_exists(&path);
        let mut doc = if existed {
            read_json(&path)?
        } else {
            empty_group()
        };
        let listed = doc.pointer("/attributes/ome/labels").is_some();
        let count = counts.get(&ElementKind::Labels).copied().unwrap_or(0);
        if dataset.options().labels_list.writes(count as usize) {
            let names = elements.labels_after(doc.pointer("/attributes/ome/labels"))?;
            doc["attributes"]["ome"]["labels"] = json!(names);
        } else if let Some(ome) = doc
            .pointer_mut("/attributes/ome")
            .and_then(Value::as_object_mut)
        {
            ome.remove("labels");
        }
        if !existed || listed || doc.pointer("/attributes/ome/labels").is_some() {
            steps.push(Step::Write {
                path: "labels/zarr.json".into(),
                text: to_text(&doc),
            });
            consolidated::set_node(&mut root_doc, "labels", doc);
        }
    }
    let mut dropped_consolidated = None;
    if had_consolidated {
        let mut text = to_text(&root_doc);
        let too_large = dataset.options().consolidated == ConsolidatedMetadata::KeepCurrent
            && text.len() > super::CONSOLIDATED_LIMIT_BYTES;
        if !keep || too_large {
            if too_large {
                dropped_consolidated = Some(consolidated::node_count(&root_doc));
            }
            consolidated::drop_all(&mut root_doc);
            text = to_text(&root_doc);
        }
        steps.push(Step::Write {
            path: "zarr.json".into(),
            text,
        });
    }
    for (_, removal) in removals {
        steps.extend(removal);
    }
    let generation = base_generation
        .checked_add(1)
        .ok_or_else(|| Error::Corrupt {
            path: layout.hidden.join(MANIFEST_FILE),
            reason: format!(
                "generation {base_generation} cannot grow: the manifest was not written by spatialzarr"
            ),
        })?;
    // A commit that changes no entry of a group folder leaves the group stamps true:
    // it keeps their generation and records none (spec/commit-protocol.md §3 step 7).
    let stamps_of = recorded
        .filter(|_| !adopt && unchanged.covers_all() && !super::stamps::touched_by(&steps))
        .map(Manifest::stamps_generation);
    let records_stamps = stamps_of.is_none();
    let new_manifest = Manifest {
        generation,
        counts,
        stamps_of,
        ..Manifest::default()
    };
    // The index buckets of the changed names (every bucket at the first index),
    // then the manifest.
    let index_dir = layout.hidden_relative(&[crate::commit::index::INDEX_DIR]);
    if !indexed {
        steps.push(Step::Mkdir {
            path: index_dir.clone(),
        });
    }
    for (bucket, text) in elements.bucket_writes() {
        let path = format!("{index_dir}/{}", crate::commit::index::bucket_file(bucket));
        steps.push(if text.is_empty() {
            Step::Unlink { path }
        } else {
            Step::Write { path, text }
        });
    }
    steps.push(Step::Write {
        path: layout.hidden_relative(&[MANIFEST_FILE]),
        text: String::from_utf8(new_manifest.to_bytes()).expect("utf-8"),
    });
    let mut journal = Journal {
        version: crate::commit::journal::JOURNAL_VERSION,
        generation: new_manifest.generation,
        steps,
        cleanup,
        requires: Vec::new(),
    };
    // Checked before the commit is decided, so that a link planted in the dataset
    // fails the commit cleanly instead of leaving a journal nobody can apply.
    journal.check_paths_with(root, links)?;
    if !indexed {
        // This commit writes the first index (Algorithm U): whatever an interrupted
        // earlier attempt left in its folder is not part of the committed state.
        // Removed only now that every check has passed, and durably before the
        // journal can be: a replay of the journal only adds buckets, so a stale
        // bucket a power loss brought back would stay (one more round, at the
        // upgrade only).
        let leftover = crate::commit::index::index_dir(&layout.hidden);
        if crate::storage::trace::lstat(&leftover).is_ok() {
            crate::util::no_links_below(root, &leftover)?;
            remove_tree(&leftover)?;
            dataset.publisher().sync_dir(&layout.hidden)?;
        }
    }
    // The appended rows are stored only now that every check has passed: a refused
    // commit changes no committed file. They lie beyond the committed shapes, where
    // readers do not look, until the journal's documents grow the arrays.
    let row_publisher = Arc::new(
        Publisher::recording(dataset.durability()).trusting_order(dataset.trusts_folder_order()),
    );
    // The folders the journal's paths went through are not looked at again.
    let arrays = table::arrays_at(root, &row_publisher)?.sharing_links(links.clone());
    // Every append of the commit at once: a batch of appends to one table stores
    // each array's partly filled chunk once, not once per append.
    let writes = ops.iter_mut().flat_map(|op| match op {
        Op::TableAppend { writes, .. } => std::mem::take(writes),
        _ => Vec::new(),
    });
    table::append::write(&arrays, table::append::coalesce(writes))?;
    // The files the journal's `Write` steps publish (in folders that exist) are
    // written ahead to temporary files, so that the round that decides the commit
    // also makes them durable (spec/commit-protocol.md §3.3).
    let publisher = dataset.publisher();
    // Folders that a step of the journal moves or removes: a file written ahead into
    // one of them would move away with it (a node replaced by a wider one, then its
    // new document written), so such writes wait for their own step.
    let moved: Vec<PathBuf> = journal
        .steps
        .iter()
        .flat_map(|step| match step {
            Step::Rename { from, to } => vec![root.join(from), root.join(to)],
            Step::Exchange { from, to, .. } => vec![root.join(from), root.join(to)],
            Step::Unlink { path } => vec![root.join(path)],
            _ => Vec::new(),
        })
        .collect();
    for step in &journal.steps {
        if let Step::Write { path, text } = step {
            let target = root.join(path);
            if moved.iter().any(|m| target.starts_with(m)) {
                continue;
            }
            let Some(folder) = target.parent() else {
                continue;
            };
            // Written now where its folder exists (else by the journal's steps, which
            // make the folder first). A missing folder of the hidden one (the first
            // idempotency record of a table) is made now: nothing reads it before the
            // commit names it.
            match publisher.prepare(&target, text.as_bytes()) {
                Err(e) if e.is_not_found() && folder.starts_with(&layout.hidden) => {
                    publisher.create_dir_all(folder)?;
                    publisher.prepare(&target, text.as_bytes())?;
                }
                Err(e) if e.is_not_found() => {}
                other => other?,
            }
        }
    }
    // The rows' chunks reach their final paths (their data fsynced first: one of
    // them holds committed rows); the journal requires each as stored.
    row_publisher.flush()?;
    journal.requires = row_publisher
        .take_recorded()
        .into_iter()
        .map(|(path, len, crc32c)| crate::commit::Required {
            path: relative(root, &path),
            len,
            crc32c,
        })
        .collect();
    let journal_path = layout.hidden.join(JOURNAL_FILE);
    publisher.write_in_place(&journal_path, &journal.to_bytes())?;

    // From here on the staged folders belong to the journal: never delete them on
    // error, a decided journal needs them (orphans are removed by a later recovery).
    let mut staging_dirs: Vec<PathBuf> = ops
        .iter_mut()
        .filter_map(|op| match op {
            Op::Add { staged, .. }
            | Op::AddFile { staged, .. }
            | Op::ReplaceNode { staged, .. } => {
                staged.consumed = true;
                // A borrowed folder holds its caller's outcome: the caller removes it.
                (!staged.borrowed).then(|| staged.dir.clone())
            }
            _ => None,
        })
        .collect();
    for staged in &mut extra_staged {
        staged.consumed = true;
        staging_dirs.push(staged.dir.clone());
    }
    // The commit point: ONE round makes the journal, its folder, the rows' folders
    // and the files written ahead durable; the commit is decided once the journal
    // and every file it requires are (spec/commit-protocol.md §3.3).
    if let Err(error) = Publisher::sync_round(&[&row_publisher, &publisher]) {
        // Undecided: withdraw the journal if it reached its place. If even that
        // fails, the commit stays decided and the next writer finishes it. The
        // caller is told nothing was committed, so the removal must be durable
        // before it returns: no later journal covers it, and the folder is fsynced
        // whatever the folder-sync mode (spec/commit-protocol.md §11.1).
        let withdraw = Publisher::with_durability(dataset.durability());
        return match withdraw
            .remove_file(&journal_path)
            .and_then(|()| withdraw.sync_dir(&layout.hidden))
        {
            Ok(()) => Err(error),
            Err(_) => Err(decided_error(error)),
        };
    }
    finish(dataset, &journal, &publisher, links, false).map_err(decided_error)?;
    if records_stamps {
        super::stamps::record(layout, journal.generation, unchanged, &journal.steps);
    } else if let (true, Some(mark), Some(stamps_generation)) =
        (unchanged.swept_now, unchanged.swept, stamps_of)
    {
        // The stamps stay those of an earlier commit: the sweep is noted in them.
        super::stamps::note_sweep(layout, stamps_generation, mark);
    }
    drop(ops);
    drop(extra_staged);
    for dir in staging_dirs {
        let _ = remove_tree(&dir);
    }
    Ok(CommitInfo {
        generation: journal.generation,
        durable: true,
        dropped_consolidated,
    })
}

/// Says that a commit failed after it was decided: the next holder of the write lock
/// finishes it.
fn decided_error(error: Error) -> Error {
    Error::CommitPending(Box::new(error))
}

/// Applies a decided journal to the end: steps, folder fsyncs, journal removal, then
/// the (harmless if interrupted) cleanup. `replay`: the journal was found by
/// recovery (a crashed run may have applied some steps), not just decided here.
/// `links` holds the paths the same commit checked before it was decided.
fn finish(
    dataset: &Dataset,
    journal: &Journal,
    publisher: &Publisher,
    links: &crate::util::LinkCheck,
    replay: bool,
) -> Result<()> {
    let layout = dataset.layout();
    let journal_path = layout.hidden.join(JOURNAL_FILE);
    journal.apply(&layout.root, publisher, &journal_path, links, replay)?;
    publisher.sync()?;
    // The removal is not fsynced: should a power loss bring the journal back, its
    // replay finds every step done (§6 of spec/commit-protocol.md: a rename into a
    // cleanup folder that is gone is done too), and the next commit's fsync of the
    // hidden folder makes the removal durable before that commit is decided.
    publisher.remove_file(&journal_path)?;
    for path in &journal.cleanup {
        if let Some(rel) = crate::util::safe_relative(path) {
            let path = layout.root.join(rel);
            if crate::util::linkless(&layout.root, &path) {
                let _ = remove_tree(&path);
            }
        }
    }
    Ok(())
}

/// Under the write lock: finishes an interrupted commit, then, when a sweep is due
/// (or a commit was interrupted), removes staging folders of dead writers, leftover
/// trash and temporary files.
pub(crate) fn recover(dataset: &Dataset, proof: &WriteGuard) -> Result<RecoveryReport> {
    recover_reading_manifest(dataset, proof, &crate::util::LinkCheck::default())
        .map(|(_, _, report)| report)
}

/// [`recover`], returning the manifest of the committed state it leaves (read once
/// when nothing was interrupted).
/// Also returns the groups unchanged since that state's commit (none after a
/// finished interrupted commit: its stamps were never recorded).
/// `links` gathers the folders found not to be links, for the transaction to keep.
/// Also returns what recovery did.
fn recover_reading_manifest(
    dataset: &Dataset,
    proof: &WriteGuard,
    links: &crate::util::LinkCheck,
) -> Result<(Option<Manifest>, UnchangedGroups, RecoveryReport)> {
    let layout = dataset.layout();
    let manifest = Manifest::load(&layout.hidden)?;
    let mut unchanged = super::stamps::unchanged_groups(layout, manifest.as_ref());
    // The stamps' `lstat` found these group folders real folders, not links.
    for kind in unchanged.real_folders() {
        links.note_not_link(&layout.root, &layout.root.join(kind.group()));
    }
    let generation = manifest.as_ref().map_or(0, |m| m.generation);
    let sweep = Sweep {
        everywhere: false,
        leftovers: unchanged.sweep_due(generation),
        unchanged: &unchanged,
        links,
    };
    let (report, swept) = recover_sweeping(dataset, proof, sweep, &mut |_| {})?;
    if report.finished_commit.is_some() {
        let manifest = Manifest::load(&layout.hidden)?;
        let generation = manifest.as_ref().map_or(0, |m| m.generation);
        let mut fresh =
            UnchangedGroups::only_sweep(Some(super::stamps::SweepMark::now(generation)));
        fresh.swept_now = true;
        return Ok((manifest, fresh, report));
    }
    if swept {
        // Recorded by this transaction's commit, if it makes one.
        unchanged.swept = Some(super::stamps::SweepMark::now(generation));
        unchanged.swept_now = true;
    }
    Ok((manifest, unchanged, report))
}

/// [`recover`]; with `everywhere`, also walks the whole dataset for temporary files
/// left by interrupted atomic writes (otherwise only the root, the hidden folder and
/// the group folders, where commits write, are looked at).
pub(crate) fn recover_with(
    dataset: &Dataset,
    proof: &WriteGuard,
    everywhere: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<RecoveryReport> {
    let layout = dataset.layout();
    let manifest = Manifest::load(&layout.hidden).ok().flatten();
    let unchanged = super::stamps::unchanged_groups(layout, manifest.as_ref());
    let sweep = Sweep {
        everywhere,
        leftovers: true,
        unchanged: &unchanged,
        links: &crate::util::LinkCheck::default(),
    };
    let (report, _) = recover_sweeping(dataset, proof, sweep, progress)?;
    if report.finished_commit.is_none()
        && let Some(manifest) = &manifest
    {
        let mark = super::stamps::SweepMark::now(manifest.generation);
        super::stamps::note_sweep(layout, manifest.stamps_generation(), mark);
    }
    Ok(report)
}

/// What a recovery sweeps, and the link checks it shares.
struct Sweep<'s> {
    /// Walk the whole dataset for temporary files, not only the top folders.
    everywhere: bool,
    /// Sweep the leftovers of dead writers (staging folders, trash, temporary files
    /// in the root and the hidden folder; spec/commit-protocol.md §5 steps 2–4) even
    /// when no interrupted commit is found: a sweep is due.
    leftovers: bool,
    /// The groups unchanged since the last commit as they were before recovery (the
    /// others are swept; none when there is no manifest, it cannot be read, or it
    /// has no stamps).
    unchanged: &'s super::stamps::UnchangedGroups,
    /// The folders found not to be links under this write lock.
    links: &'s crate::util::LinkCheck,
}

/// [`recover_with`], sweeping as `sweep` says; also says whether the leftovers of
/// dead writers were swept (as due, or after an interrupted commit).
fn recover_sweeping(
    dataset: &Dataset,
    _proof: &WriteGuard,
    sweep: Sweep<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<(RecoveryReport, bool)> {
    let Sweep {
        everywhere,
        mut leftovers,
        unchanged,
        links,
    } = sweep;
    let layout = dataset.layout();
    let mut report = RecoveryReport::default();
    // Folders swept for temporary files: the top ones, and those an interrupted commit
    // was writing into (its replay has just rewritten their files).
    // A group folder as the last commit left it (its stamp, super::stamps) holds no
    // temporary file: creating one would have changed the stamp. The index folder,
    // where a commit that was never decided may have left the temporaries of its
    // buckets (harmless: they are not buckets), is swept by whole-dataset recovery.
    let mut dirs = Vec::new();
    dirs.extend(
        ElementKind::ALL
            .iter()
            .filter(|&k| everywhere || !unchanged.contains(k))
            .map(|k| layout.root.join(k.group())),
    );
    match Journal::load(&layout.hidden)? {
        Some(FoundJournal::Decided(journal)) => {
            let publisher = dataset.publisher();
            finish(dataset, &journal, &publisher, links, true)?;
            report.finished_commit = Some(journal.generation);
            dirs.extend(journal.written_folders(&layout.root));
            leftovers = true;
        }
        Some(FoundJournal::Undecided { journal, reason }) => {
            // Nothing it describes reached a committed file (the steps run only once
            // it is decided): withdrawn, durably (its folder fsynced in every
            // folder-sync mode), so that no power loss brings back a journal that a
            // later commit's files could seem to satisfy.
            let publisher = Publisher::with_durability(dataset.durability());
            publisher.remove_file(&layout.hidden.join(JOURNAL_FILE))?;
            publisher.sync()?;
            let generation = journal.as_ref().map(|j| j.generation);
            report.withdrawn_commit = Some(match generation {
                Some(g) => format!("generation {g}: {reason}"),
                None => reason,
            });
            if let Some(journal) = journal {
                dirs.extend(journal.written_folders(&layout.root));
            }
            leftovers = true;
        }
        None => {}
    }
    // Dead writers' leftovers are invisible to readers and in nobody's way: they are
    // swept on a schedule (super::stamps::SweepMark), not at every commit.
    if leftovers {
        dirs.push(layout.root.clone());
        dirs.push(layout.hidden.clone());
        report.removed_staging = staging::remove_abandoned(layout, links)?;
        let trash = layout.trash();
        // Never empty a trash reached through a link: it could be any folder elsewhere.
        links.check(&layout.root, &trash)?;
        if let Ok(entries) = crate::storage::trace::read_dir(&trash) {
            for entry in entries.flatten() {
                remove_tree(&entry.path())?;
                report.removed_trash.push(entry.path());
            }
        }
    }
    // Under the write lock no atomic write is in flight outside staging folders, so
    // every temporary file there belongs to a dead writer.
    if everywhere {
        // Idempotency records and index buckets are published through temporary
        // files written before their commit is decided.
        dirs.push(layout.hidden.join("appends"));
        dirs.push(crate::commit::index::index_dir(&layout.hidden));
    }
    dirs.sort();
    dirs.dedup();
    let mut stack = dirs;
    let mut swept = 0;
    while let Some(dir) = stack.pop() {
        swept += 1;
        progress(swept);
        if links.check(&layout.root, &dir).is_err() {
            continue;
        }
        let Ok(entries) = crate::storage::trace::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_file() && name.starts_with(crate::storage::publish::TEMP_PREFIX) {
                dataset.publisher().remove_file(&path)?;
                report.removed_temp_files.push(path);
            } else if everywhere
                && kind.is_dir()
                && path != layout.staging()
                && path != layout.hidden
            {
                stack.push(path);
            }
        }
    }
    if everywhere {
        report.rebuilt_table_documents = rebuild_stale_table_documents(dataset)?;
    }
    Ok((report, leftovers))
}

/// Rebuilds the element document of every table whose consolidated metadata differs
/// from its node documents; returns those tables.
fn rebuild_stale_table_documents(dataset: &Dataset) -> Result<Vec<String>> {
    let root = dataset.root();
    let mut rebuilt = Vec::new();
    for (name, kind) in dataset.elements_locked()?.all()? {
        let dir = root.join(element_path(kind, &name));
        if kind == ElementKind::Tables && table::element_doc::verify(&dir).is_err() {
            // No journal covers this repair: its folder is fsynced in every mode.
            let publisher = Publisher::with_durability(dataset.durability());
            publish_element_document(&dir, &BTreeMap::new(), &publisher)?;
            rebuilt.push(name);
        }
    }
    Ok(rebuilt)
}
