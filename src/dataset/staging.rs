//! Private staging folders: where an element is written before it is committed.
//!
//! `.spatialzarr/staging/<id>/` holds `owner` (flocked exclusively by the writing
//! process for as long as the staged element lives) and `element/` (the element's
//! tree, renamed into place by the commit). A later writer removes a staging folder
//! only when it can lock `owner` itself: the owner is then provably gone.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::layout::{Layout, unique_id};
use crate::element::{ElementKind, ElementName};
use crate::error::{Error, Result, io_err};
use crate::storage::Publisher;
use crate::storage::publish::remove_tree;
use crate::storage::trace::{FsOp, observe};

/// Prefix of a staging folder still being set up.
const BUILDING_PREFIX: &str = ".new-";

/// An element written to a staging folder, waiting to be committed. Dropping it
/// without committing deletes the staged files.
#[derive(Debug)]
pub struct StagedElement {
    pub(crate) kind: ElementKind,
    pub(crate) name: ElementName,
    /// `.spatialzarr/staging/<id>`.
    pub(crate) dir: PathBuf,
    /// Held locked while the staged element lives (`None` when borrowed).
    _owner: Option<File>,
    /// Set once the element folder has been renamed into the dataset.
    pub(crate) consumed: bool,
    /// Staged by another caller, whose request a group commit takes: its folder is
    /// never removed here (its owner removes it once it read the outcome).
    pub(crate) borrowed: bool,
}

impl StagedElement {
    /// Creates a staging folder and returns it with the folder the element goes in.
    pub(crate) fn create(
        layout: &Layout,
        publisher: &Arc<Publisher>,
        kind: ElementKind,
        name: ElementName,
    ) -> Result<Self> {
        Self::create_with(layout, publisher, kind, name, true)
    }

    /// A staging folder for a queued request that stages no element (an append's
    /// rows, new transformations, spec/commit-protocol.md §12.1): no `element/`
    /// folder in it. Its kind is never looked at.
    pub(crate) fn request_folder(
        layout: &Layout,
        publisher: &Arc<Publisher>,
        name: ElementName,
    ) -> Result<Self> {
        Self::create_with(layout, publisher, ElementKind::Tables, name, false)
    }

    fn create_with(
        layout: &Layout,
        publisher: &Arc<Publisher>,
        kind: ElementKind,
        name: ElementName,
        element: bool,
    ) -> Result<Self> {
        let staging = layout.staging();
        // Never stage through a link: the element's files would land elsewhere.
        crate::util::no_links_below(&layout.root, &staging)?;
        // Built under a name cleanup skips while young, then renamed into place once
        // `owner` is locked: a cleaner never sees an unlocked owner of a live writer.
        let id = unique_id();
        let building = staging.join(format!("{BUILDING_PREFIX}{id}"));
        let dir = staging.join(&id);
        let make = || {
            observe(|| FsOp::Mkdir(building.clone())).and_then(|()| std::fs::create_dir(&building))
        };
        match make() {
            // `H/staging` is made with the dataset; one of an older version gets it now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                publisher.create_dir_all(&staging)?;
                make().map_err(io_err("create folder", &building))?;
            }
            made => made.map_err(io_err("create folder", &building))?,
        }
        let owner_path = building.join("owner");
        observe(|| FsOp::CreateFile(owner_path.clone())).map_err(io_err("create", &owner_path))?;
        let owner = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&owner_path)
            .map_err(io_err("create", &owner_path))?;
        owner.lock().map_err(io_err("lock", &owner_path))?;
        if element {
            observe(|| FsOp::Mkdir(building.join("element")))
                .map_err(io_err("create folder", &building.join("element")))?;
            std::fs::create_dir(building.join("element"))
                .map_err(io_err("create folder", &building.join("element")))?;
        }
        publisher.rename(&building, &dir)?;
        // Its entries (owner, element) must be durable before the commit renames the
        // element out of it: the folder is fsynced with the staged element's files
        // and folders, in the same round (its parent is, for the rename).
        publisher.touched(&dir.join("owner"));
        Ok(Self {
            kind,
            name,
            dir,
            _owner: Some(owner),
            consumed: false,
            borrowed: false,
        })
    }

    /// The element another live caller staged in `dir`, as a group commit's combiner
    /// takes it (spec/commit-protocol.md §12): committed like any staged element, its
    /// folder never deleted by this handle.
    pub(crate) fn borrowed(dir: PathBuf, kind: ElementKind, name: ElementName) -> Self {
        Self {
            kind,
            name,
            dir,
            _owner: None,
            consumed: false,
            borrowed: true,
        }
    }

    /// Lets go of the staging folder without removing it (a decided commit may still
    /// need its files): the owner lock is released, and a later writer's recovery,
    /// which finishes every journal first, removes the folder.
    pub(crate) fn leave(mut self) {
        self.consumed = true;
    }

    /// The folder holding the element's tree.
    pub(crate) fn element_dir(&self) -> PathBuf {
        self.dir.join("element")
    }

    /// The element's kind.
    pub fn kind(&self) -> ElementKind {
        self.kind
    }

    /// The element's name.
    pub fn name(&self) -> &ElementName {
        &self.name
    }
}

impl Drop for StagedElement {
    fn drop(&mut self) {
        // A consumed element belongs to a decided commit: its journal may still need
        // the staged files, and the committer removes the folder once done.
        if !self.consumed && !self.borrowed {
            // Best effort: a leftover is removed by a later writer once we are gone.
            let _ = remove_tree(&self.dir);
        }
    }
}

/// Removes staging folders whose owner process is gone. Returns the folders removed.
///
/// A folder that stays "not empty" through a few tries is left for a later writer:
/// on a network filesystem, a file its killed owner was creating can still arrive
/// after the owner's lock was released (seen on GlusterFS), and a leftover must not
/// fail the operation of the writer that came across it.
/// `links` holds the folders already found not to be links under the write lock.
pub(crate) fn remove_abandoned(
    layout: &Layout,
    links: &crate::util::LinkCheck,
) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for dir in abandoned_checked(layout, links)? {
        if remove_settled(&dir)? {
            removed.push(dir);
        }
    }
    Ok(removed)
}

/// Removes the tree `dir`, trying again while it is found not empty; false when it
/// still was after the last try.
fn remove_settled(dir: &Path) -> Result<bool> {
    const TRIES: u32 = 4;
    for attempt in 1..=TRIES {
        match remove_tree(dir) {
            Ok(()) => return Ok(true),
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::DirectoryNotEmpty =>
            {
                if attempt < TRIES {
                    std::thread::sleep(std::time::Duration::from_millis(20 * u64::from(attempt)));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The staging folders whose owner process is gone (what [`remove_abandoned`]
/// removes), sorted.
pub(crate) fn abandoned(layout: &Layout) -> Result<Vec<PathBuf>> {
    abandoned_checked(layout, &crate::util::LinkCheck::default())
}

/// [`abandoned`], taking the folders `links` found not to be links as checked.
fn abandoned_checked(layout: &Layout, links: &crate::util::LinkCheck) -> Result<Vec<PathBuf>> {
    let staging = layout.staging();
    // Never clean up a staging folder reached through a link: it could be any folder.
    links.check(&layout.root, &staging)?;
    let entries = match crate::storage::trace::read_dir(&staging) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", &staging)(e)),
    };
    let mut gone: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| owner_is_gone(dir))
        .collect();
    gone.sort();
    Ok(gone)
}

/// What the `owner` file of a staging folder says about its writer.
enum Owner {
    /// Locked: the writer is alive.
    Alive,
    /// Lockable: nobody holds it.
    Unlocked,
    /// No owner file (or it cannot be opened).
    Missing,
}

fn owner_of(dir: &Path) -> Owner {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("owner"))
    {
        Ok(owner) => match owner.try_lock() {
            Ok(()) => Owner::Unlocked,
            Err(TryLockError::WouldBlock | TryLockError::Error(_)) => Owner::Alive,
        },
        Err(_) => Owner::Missing,
    }
}

/// Whether the process that staged `dir` holds its `owner` lock (it lives).
pub(crate) fn owner_alive(dir: &Path) -> bool {
    matches!(owner_of(dir), Owner::Alive)
}

/// Whether the process that staged `dir` is gone: its `owner` file can be locked; or,
/// for a folder still being set up (its owner created but maybe not yet locked), it
/// is not locked and the folder is old.
fn owner_is_gone(dir: &Path) -> bool {
    let building = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(BUILDING_PREFIX));
    match owner_of(dir) {
        Owner::Alive => false,
        Owner::Unlocked if !building => true,
        // Between creating `owner` and locking it a live writer's owner is unlocked;
        // a folder without one is not a folder this version made. Leave young ones.
        Owner::Unlocked | Owner::Missing => is_old(dir),
    }
}

/// Whether `dir` was last changed more than a minute ago.
fn is_old(dir: &Path) -> bool {
    crate::storage::trace::lstat(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(60))
}
