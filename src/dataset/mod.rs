//! The dataset handle: open or create a dataset, read it, and write it through
//! transactions.
//!
//! Every call reads the committed state from disk under the lock; nothing about the
//! dataset is cached in the handle, so a handle opened before another process
//! committed sees that commit on its next call.

pub mod blockwise;
mod check;
mod consolidated;
mod elements;
mod group;
pub mod layout;
mod policies;
mod staging;
mod stamps;
mod tables;
mod txn;
mod vectors;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ndarray::{ArrayD, ArrayViewD};
use serde_json::{Value, json};

pub use blockwise::RasterBlockWriter;
pub use check::CheckReport;
pub use elements::ElementSet;
pub use policies::UnknownPolicy;
pub use staging::StagedElement;
pub use txn::{CommitInfo, RecoveryReport, WriteTxn};

use crate::commit::{FoundJournal, Journal, Manifest};
use crate::element::raster::{self, read_json};
use crate::element::{ElementKind, ElementName, Pixel, RasterInfo, RasterOptions};
use crate::error::{Error, Result};
use crate::lock::{DatasetLock, LockOptions, ReadGuard};
use crate::storage::{Durability, FolderSync, Publisher};
use layout::{Layout, element_path};

/// What to do with zarr-python's consolidated metadata in the root `zarr.json` (the
/// store never adds it; spec/format.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsolidatedMetadata {
    /// Keep it current in every commit when the dataset has it, while the root
    /// document stays at most [`CONSOLIDATED_LIMIT_BYTES`]; the commit that would make
    /// it larger drops it instead (and says so in [`CommitInfo::dropped_consolidated`]).
    /// The default.
    #[default]
    KeepCurrent,
    /// Keep it current whatever its size (every commit rewrites the whole
    /// hierarchy's metadata, and every reader opening the root parses it).
    KeepUnbounded,
    /// Remove it at the next commit; readers then list the hierarchy itself.
    Drop,
}

/// The largest root `zarr.json` (with its consolidated metadata) that
/// [`ConsolidatedMetadata::KeepCurrent`] keeps: 1 MiB, about 700 single-level labels.
pub const CONSOLIDATED_LIMIT_BYTES: usize = 1 << 20;

/// The smallest in-memory raster whose name is checked against the committed state
/// before it is staged (spec/commit-protocol.md §12.3 step 1). Below it, staging
/// costs about what the check does (a few metadata operations), and the commit
/// checks the name anyway.
const PRECHECK_MIN_BYTES: usize = 1 << 20;

/// When a commit that changes the labels set writes the NGFF `ome.labels` list of
/// `labels/zarr.json` (no reader of the SpatialData layout needs it, and it holds
/// every labels name; spec/format.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelsList {
    /// The exact list while there are at most this many labels; above, the key is
    /// removed (never left stale). The default, with 10,000.
    Bounded(usize),
    /// The exact list at any size.
    Always,
    /// Never: the key is removed by the next commit that changes the labels set.
    Never,
}

impl Default for LabelsList {
    fn default() -> Self {
        Self::Bounded(10_000)
    }
}

impl LabelsList {
    /// Whether the list is written for `count` labels.
    pub fn writes(self, count: usize) -> bool {
        match self {
            Self::Bounded(limit) => count <= limit,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// How a [`Dataset`] handle behaves.
#[derive(Debug, Clone, Default)]
pub struct DatasetOptions {
    /// How long to wait for the dataset lock (`None`: forever).
    pub lock_timeout: Option<Duration>,
    /// Options of the lock itself.
    pub lock: LockOptions,
    /// Consolidated metadata policy.
    pub consolidated: ConsolidatedMetadata,
    /// What an acknowledged commit survives (`None`: the level the environment
    /// variable `SPATIALZARR_DURABILITY` names, else [`Durability::Full`]).
    pub durability: Option<Durability>,
    /// Whether commits at [`Durability::Full`] fsync the folders they change, or rely
    /// on the filesystem's ordering (`None`: the mode the environment variable
    /// `SPATIALZARR_FOLDER_SYNC` names, else [`FolderSync::Auto`]: ordered on local
    /// xfs and journaled ext3/ext4, strict elsewhere).
    pub folder_sync: Option<FolderSync>,

    /// The `ome.labels` list policy.
    pub labels_list: LabelsList,
}

/// The SpatialData container format of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// Container format 0.2: Zarr v3 (what spatialdata 0.8 writes by default). Writable.
    V02,
    /// Container format 0.1: Zarr v2. Readable only.
    V01,
}

/// The elements of a dataset by kind, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ElementList {
    /// Image names.
    pub images: Vec<String>,
    /// Labels names.
    pub labels: Vec<String>,
    /// Points names.
    pub points: Vec<String>,
    /// Shapes names.
    pub shapes: Vec<String>,
    /// Table names.
    pub tables: Vec<String>,
}

impl ElementList {
    /// The names of one kind.
    pub fn of(&self, kind: ElementKind) -> &[String] {
        match kind {
            ElementKind::Images => &self.images,
            ElementKind::Labels => &self.labels,
            ElementKind::Points => &self.points,
            ElementKind::Shapes => &self.shapes,
            ElementKind::Tables => &self.tables,
        }
    }

    /// Every name, of every kind.
    pub fn len(&self) -> usize {
        ElementKind::ALL.iter().map(|k| self.of(*k).len()).sum()
    }

    /// Whether the dataset has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A description of one element.
#[derive(Debug, Clone, PartialEq)]
pub enum ElementInfo {
    /// An image or labels element.
    Raster(RasterInfo),
    /// A table.
    Table(crate::table::TableInfo),
    /// A points element.
    Points(crate::element::points::PointsInfo),
    /// A shapes element.
    Shapes(crate::element::shapes::ShapesInfo),
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    lock: DatasetLock,
    options: DatasetOptions,
    container: Container,
    durability: Durability,
    /// Commits fsync no folder: the filesystem orders them (FolderSync).
    ordered: bool,
}

/// A handle on one dataset. Cheap to clone and to share between threads.
#[derive(Debug, Clone)]
pub struct Dataset {
    inner: Arc<Inner>,
}

fn configure_zarrs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        zarrs::config::global_config_mut().set_include_zarrs_metadata(false);
    });
}

/// The root group document of a new container-0.2 dataset.
fn new_root_document() -> Value {
    json!({
        "attributes": {
            "spatialdata_attrs": {
                "version": "0.2",
                "spatialdata_software_version": concat!("spatialzarr ", env!("CARGO_PKG_VERSION")),
            }
        },
        "zarr_format": 3,
        "node_type": "group",
    })
}

/// Reads a root document and tells its container format.
fn container_of(root: &Path) -> Result<Container> {
    let not_dataset = |reason: String| Error::NotADataset {
        path: root.to_path_buf(),
        reason,
    };
    // Only "not found" means absent: any other failure (a dead network mount answers
    // ENOTCONN) is reported as itself, never as "no dataset here".
    let is_file = |path: &Path| match crate::storage::trace::stat(path) {
        Ok(meta) => Ok(meta.is_file()),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(false),
        Err(source) => Err(Error::Io {
            op: "stat",
            path: path.to_path_buf(),
            source,
        }),
    };
    let v3 = root.join("zarr.json");
    if is_file(&v3)? {
        let doc = read_json(&v3)?;
        if doc.get("node_type").and_then(Value::as_str) != Some("group") {
            return Err(not_dataset("its root zarr.json is not a group".into()));
        }
        let version = doc
            .pointer("/attributes/spatialdata_attrs/version")
            .and_then(Value::as_str);
        return match version {
            Some("0.2") => Ok(Container::V02),
            Some("0.1") | None => Ok(Container::V01),
            Some(other) => Err(Error::UnsupportedFormat {
                path: v3,
                what: format!(
                    "SpatialData container format {other} (this version knows 0.1 and 0.2)"
                ),
            }),
        };
    }
    if is_file(&root.join(".zgroup"))? {
        return Ok(Container::V01);
    }
    if !crate::storage::trace::is_dir(root) {
        return Err(not_dataset("it does not exist or is not a folder".into()));
    }
    Err(not_dataset(
        "it has no root zarr.json; create one with `spatialzarr init`".into(),
    ))
}

impl Dataset {
    /// Creates a new, empty dataset (container format 0.2) at `path`. The folder must
    /// not exist, or be empty.
    pub fn create(path: &Path, options: DatasetOptions) -> Result<Self> {
        configure_zarrs();
        let durability = Durability::resolve(options.durability)?;
        let folder_sync = FolderSync::resolve(options.folder_sync)?;
        let publisher = Publisher::with_durability(durability);
        crate::storage::trace::observe(|| crate::storage::trace::FsOp::Mkdir(path.to_path_buf()))
            .map_err(crate::error::io_err("create folder", path))?;
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let empty = std::fs::read_dir(path)
                    .map(|mut entries| entries.next().is_none())
                    .unwrap_or(false);
                if !empty {
                    return Err(Error::AlreadyExists(path.to_path_buf()));
                }
            }
            Err(e) => return Err(crate::error::io_err("create folder", path)(e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            publisher.sync_dir(parent)?;
        }
        let lock = DatasetLock::open(path, options.lock.clone())?;
        let guard = lock.write(options.lock_timeout)?;
        let layout = Layout::new(path);
        if crate::storage::trace::exists(&path.join("zarr.json")) {
            return Err(Error::AlreadyExists(path.to_path_buf()));
        }
        publisher.create_dir_all(&crate::commit::index::index_dir(&layout.hidden))?;
        // The queue of group commit exists from the start, so that a waiter that
        // withdraws (its lock timeout passed) leaves the dataset's files as they were.
        publisher.create_dir_all(&layout.hidden.join(crate::commit::queue::QUEUE_DIR))?;
        publisher.write(
            &layout.hidden.join(crate::commit::manifest::MANIFEST_FILE),
            &Manifest::default().to_bytes(),
        )?;
        publisher.write(
            &path.join("zarr.json"),
            &serde_json::to_vec_pretty(&new_root_document()).expect("json"),
        )?;
        publisher.sync()?;
        publisher.sync_dir(&layout.hidden)?;
        drop(guard);
        Ok(Self {
            inner: Arc::new(Inner {
                layout,
                lock,
                options,
                container: Container::V02,
                durability,
                ordered: folder_sync.orders_at(path),
            }),
        })
    }

    /// Opens the dataset at `path`: one of ours, or one written by spatialdata.
    pub fn open(path: &Path, options: DatasetOptions) -> Result<Self> {
        configure_zarrs();
        let durability = Durability::resolve(options.durability)?;
        let folder_sync = FolderSync::resolve(options.folder_sync)?;
        let container = container_of(path)?;
        let lock = DatasetLock::open(path, options.lock.clone())?;
        // Refuse a store format from the future before anything else.
        Manifest::load(&Layout::new(path).hidden)?;
        Ok(Self {
            inner: Arc::new(Inner {
                layout: Layout::new(path),
                lock,
                options,
                container,
                durability,
                ordered: folder_sync.orders_at(path),
            }),
        })
    }

    /// Opens the dataset at `path`, creating an empty one if nothing is there.
    pub fn open_or_create(path: &Path, options: DatasetOptions) -> Result<Self> {
        if crate::storage::trace::exists(&path.join("zarr.json"))
            || crate::storage::trace::exists(&path.join(".zgroup"))
        {
            return Self::open(path, options);
        }
        match Self::create(path, options.clone()) {
            Err(Error::AlreadyExists(_)) => Self::open(path, options),
            other => other,
        }
    }

    /// The dataset's root folder.
    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    /// The dataset's container format.
    pub fn container(&self) -> Container {
        self.inner.container
    }

    /// The dataset's lock.
    pub fn lock(&self) -> &DatasetLock {
        &self.inner.lock
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The durability level this handle commits at.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Whether this handle's commits fsync no folder, relying on the filesystem to
    /// make their namespace changes durable in order ([`FolderSync`]).
    pub fn trusts_folder_order(&self) -> bool {
        self.inner.ordered
    }

    /// The folder-sync mode this handle's commits use: [`FolderSync::Ordered`] or
    /// [`FolderSync::Strict`] ([`FolderSync::Auto`] resolved when it was opened).
    pub fn folder_sync(&self) -> FolderSync {
        if self.inner.ordered {
            FolderSync::Ordered
        } else {
            FolderSync::Strict
        }
    }

    /// A publisher for the commit path at this handle's durability level: every
    /// change it makes is covered by a journal fsynced after it, so on a filesystem
    /// that orders namespace changes it fsyncs no folder (spec/commit-protocol.md
    /// §11.1). Writes that no journal covers (creating a dataset) use their own.
    pub(crate) fn publisher(&self) -> Publisher {
        Publisher::with_durability(self.inner.durability).trusting_order(self.inner.ordered)
    }

    pub(crate) fn options(&self) -> &DatasetOptions {
        &self.inner.options
    }

    /// Takes the read lock, first finishing any interrupted commit (which needs the
    /// write lock for a moment).
    fn read_guard(&self) -> Result<ReadGuard> {
        let timeout = self.inner.options.lock_timeout;
        // A thread already holding the lock checked for a journal when it took it, and
        // no writer could have left one since.
        let held_before = self.inner.lock.held_by_this_thread().is_some();
        let hidden = &self.inner.layout.hidden;
        loop {
            let guard = self.inner.lock.read(timeout)?;
            if held_before || !crate::commit::Journal::present(hidden)? {
                return Ok(guard);
            }
            drop(guard);
            let write = self.inner.lock.write(timeout)?;
            txn::recover(self, &write)?;
        }
    }

    /// Reads the committed state's manifest (`None` for a dataset no commit of ours
    /// has touched).
    pub fn manifest(&self) -> Result<Option<Manifest>> {
        let _guard = self.read_guard()?;
        Manifest::load(&self.inner.layout.hidden)
    }

    /// The commit generation (0 before the first commit).
    pub fn generation(&self) -> Result<u64> {
        Ok(self.manifest()?.map_or(0, |m| m.generation))
    }

    fn elements_locked(&self) -> Result<ElementSet> {
        let manifest = Manifest::load(&self.inner.layout.hidden)?;
        ElementSet::load_current(&self.inner.layout, manifest.as_ref())
    }

    /// Lists the committed elements.
    pub fn list(&self) -> Result<ElementList> {
        let _guard = self.read_guard()?;
        let mut list = ElementList::default();
        for (name, kind) in self.elements_locked()?.into_all()? {
            match kind {
                ElementKind::Images => list.images.push(name),
                ElementKind::Labels => list.labels.push(name),
                ElementKind::Points => list.points.push(name),
                ElementKind::Shapes => list.shapes.push(name),
                ElementKind::Tables => list.tables.push(name),
            }
        }
        Ok(list)
    }

    fn find(&self, name: &str) -> Result<(ElementName, ElementKind, PathBuf)> {
        let name = ElementName::new(name)?;
        let kind = self
            .elements_locked()?
            .kind_of(name.as_str())?
            .ok_or_else(|| Error::NoSuchElement {
                dataset: self.root().to_path_buf(),
                name: name.to_string(),
            })?;
        let dir = self.root().join(element_path(kind, name.as_str()));
        Ok((name, kind, dir))
    }

    /// Describes the element `name`.
    pub fn info(&self, name: &str) -> Result<ElementInfo> {
        let _guard = self.read_guard()?;
        let (_, kind, dir) = self.find(name)?;
        match kind {
            ElementKind::Images | ElementKind::Labels => {
                raster::raster_info(&dir, kind).map(ElementInfo::Raster)
            }
            ElementKind::Tables => {
                let (name, ..) = self.find(name)?;
                Ok(ElementInfo::Table(crate::table::TableInfo::from_state(
                    &self.table_state(name.as_str())?.0,
                )))
            }
            ElementKind::Points => {
                crate::element::points::points_info(&dir).map(ElementInfo::Points)
            }
            ElementKind::Shapes => {
                crate::element::shapes::shapes_info(&dir).map(ElementInfo::Shapes)
            }
        }
    }

    /// Reads pyramid level `level` (0 = full resolution) of an image or labels element.
    pub fn read_raster<T: Pixel>(&self, name: &str, level: usize) -> Result<ArrayD<T>> {
        let _guard = self.read_guard()?;
        let (name, kind, dir) = self.find(name)?;
        if !matches!(kind, ElementKind::Images | ElementKind::Labels) {
            return Err(Error::WrongElementType {
                name: name.to_string(),
                actual: kind.to_string(),
                expected: "an image or labels".into(),
            });
        }
        let info = raster::raster_info(&dir, kind)?;
        let path = info.level_paths.get(level).ok_or_else(|| {
            Error::InvalidInput(format!(
                "{name} has {} levels; level {level} does not exist",
                info.levels
            ))
        })?;
        if crate::util::safe_relative(path).is_none() {
            return Err(Error::Corrupt {
                path: dir,
                reason: format!("level path {path:?} leaves the element"),
            });
        }
        raster::read_level(&dir, path)
    }

    /// Writes a raster element to a private staging folder, WITHOUT the dataset lock,
    /// ready to be committed by [`WriteTxn::add_staged`]. This is the expensive part of
    /// adding an element, and it runs in parallel across processes.
    pub fn stage_raster<T: Pixel>(
        &self,
        kind: ElementKind,
        name: &str,
        data: ArrayViewD<'_, T>,
        options: &RasterOptions,
    ) -> Result<StagedElement> {
        let name = self.raster_name(kind, name)?;
        // Pixels the element cannot hold (float labels, axes that do not fit) are
        // refused before anything is written, the staging folder included.
        let shape: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
        let plan = raster::plan_raster(kind, T::DTYPE, &shape, options)?;
        // Nobody reads the staging folder before its sync: files go in place.
        let publisher =
            Arc::new(Publisher::in_place(self.inner.durability).trusting_order(self.inner.ordered));
        let staged = StagedElement::create(&self.inner.layout, &publisher, kind, name)?;
        raster::write_raster(
            &staged.element_dir(),
            &publisher,
            kind,
            &staged.name,
            data,
            plan,
            options,
        )?;
        publisher.sync()?;
        Ok(staged)
    }

    /// Adds an image (staged without the lock, committed under it).
    pub fn add_image<T: Pixel>(
        &self,
        name: &str,
        data: ArrayViewD<'_, T>,
        options: &RasterOptions,
    ) -> Result<CommitInfo> {
        self.add_raster(ElementKind::Images, name, data, options, false)
    }

    /// Adds a labels element (staged without the lock, committed under it).
    pub fn add_labels<T: Pixel>(
        &self,
        name: &str,
        data: ArrayViewD<'_, T>,
        options: &RasterOptions,
    ) -> Result<CommitInfo> {
        self.add_raster(ElementKind::Labels, name, data, options, false)
    }

    /// Adds an image or labels element; with `overwrite`, atomically replaces an
    /// element of the same kind and name. Joins the thread's open transaction on this
    /// dataset, if there is one.
    pub fn add_raster<T: Pixel>(
        &self,
        kind: ElementKind,
        name: &str,
        data: ArrayViewD<'_, T>,
        options: &RasterOptions,
        overwrite: bool,
    ) -> Result<CommitInfo> {
        if data.len().saturating_mul(std::mem::size_of::<T>()) >= PRECHECK_MIN_BYTES {
            self.precheck_add(kind, name, overwrite)?;
        } else {
            ElementName::new(name)?;
        }
        let staged = self.stage_raster(kind, name, data, options)?;
        self.commit_request(group::Request::Add { staged, overwrite })
            .map(|done| done.commit())
    }

    /// Fails fast on a bad or taken name, before the expensive staging, when the read
    /// lock is free at once (the commit checks again under the write lock; a caller
    /// never waits here for a writer, so that it stages while others commit).
    fn precheck_add(&self, kind: ElementKind, name: &str, overwrite: bool) -> Result<()> {
        let checked = ElementName::new(name)?;
        if let Some(_guard) = self.read_guard_now()? {
            let layout = &self.inner.layout;
            let manifest = Manifest::load(&layout.hidden)?;
            // The element index alone, without a look at the group folders: a name
            // another tool wrote there is refused by the commit's own check.
            let set = if manifest.as_ref().is_some_and(Manifest::is_indexed) {
                let all = stamps::UnchangedGroups::assumed_all();
                ElementSet::load_given(layout, manifest.as_ref(), &all)?
            } else {
                ElementSet::load_current(layout, manifest.as_ref())?
            };
            set.check_add(kind, &checked, overwrite)?;
        }
        Ok(())
    }

    /// The read lock if it is free at once and no interrupted commit waits; `None`
    /// when a writer holds or awaits it, or this thread holds the write lock (it is
    /// inside a transaction, which checks at commit).
    pub(crate) fn read_guard_now(&self) -> Result<Option<ReadGuard>> {
        if self.inner.lock.held_by_this_thread() == Some(crate::lock::LockMode::Write) {
            return Ok(None);
        }
        let guard = match self.inner.lock.read(Some(Duration::ZERO)) {
            Ok(guard) => guard,
            Err(crate::lock::LockError::Timeout { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let pending = crate::commit::Journal::present(&self.inner.layout.hidden)?;
        Ok((!pending).then_some(guard))
    }

    /// Replaces the coordinate transformations of an image, labels, points or shapes
    /// element, in one commit (see [`WriteTxn::set_transformations`]). Joins the
    /// thread's open transaction, if any. When another writer holds the lock, the
    /// change is queued and committed with that writer's commit (group commit).
    pub fn set_transformations(
        &self,
        name: &str,
        transformations: &crate::Transformations,
    ) -> Result<CommitInfo> {
        let request = group::Request::Transform {
            name: name.to_owned(),
            transformations: transformations.clone(),
        };
        Ok(self.commit_request(request)?.commit())
    }

    /// Removes the element `name`. Joins the thread's open transaction, if any.
    pub fn remove(&self, name: &str) -> Result<CommitInfo> {
        let mut txn = self.write()?;
        txn.remove(name)?;
        txn.commit()
    }

    /// Begins a write transaction: takes the write lock (finishing any interrupted
    /// commit first). On a thread that already has a transaction open on this
    /// dataset, the new one is nested: its changes join the outer transaction when it
    /// commits, and reach the disk when the outermost commits.
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        self.ensure_writable()?;
        WriteTxn::begin(self)
    }

    /// Under the write lock: makes the committed element set what a listing of every
    /// group folder finds, committing a new generation when elements were written or
    /// removed by other tools (spatialdata's `write_element` under `spatialzarr
    /// lock`); otherwise records the groups' stamps only. Commits, `ls` and `info` look
    /// at a group folder only when its stamp changed (spec/format.md §3).
    pub fn reconcile(&self) -> Result<CommitInfo> {
        let mut txn = self.write()?;
        txn.adopt_foreign()?;
        txn.commit()
    }

    /// Under the write lock: upgrades a dataset of store format version 1 (names
    /// listed in the manifest) to version 2 (names in the bucketed index) in one
    /// commit, a new generation; nothing when it is at version 2 already. Any write
    /// upgrades too; reads never do (spec/format.md §4).
    pub fn upgrade(&self) -> Result<CommitInfo> {
        let mut txn = self.write()?;
        txn.upgrade_format();
        txn.commit()
    }

    /// Under the write lock: finishes an interrupted commit, removes staging folders of
    /// dead writers, leftover trash, and temporary files of interrupted writes anywhere
    /// in the dataset.
    pub fn recover(&self) -> Result<RecoveryReport> {
        self.recover_with_progress(&mut |_| {})
    }

    /// [`Self::recover`], calling `progress(folders)` with the number of folders
    /// swept so far.
    pub fn recover_with_progress(&self, progress: &mut dyn FnMut(u64)) -> Result<RecoveryReport> {
        self.ensure_writable()?;
        let guard = self.inner.lock.write(self.inner.options.lock_timeout)?;
        txn::recover_with(self, &guard, true, progress)
    }

    fn ensure_writable(&self) -> Result<()> {
        match self.inner.container {
            Container::V02 => Ok(()),
            Container::V01 => Err(Error::UnsupportedFormat {
                path: self.root().to_path_buf(),
                what: "the dataset uses SpatialData container format 0.1 (Zarr v2), which spatialzarr reads but does not write; convert it with spatialdata (`sdata.write(new_path)`)".into(),
            }),
        }
    }

    /// The journal of an interrupted commit, if one is waiting: decided (recovery
    /// finishes it) or not (recovery withdraws it).
    pub fn pending_journal(&self) -> Result<Option<FoundJournal>> {
        Journal::load(&self.inner.layout.hidden)
    }
}
