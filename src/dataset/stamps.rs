//! Group stamps: what the five group folders looked like right after the last commit
//! of this store (`.spatialzarr/groups.json`).
//!
//! A commit records, after it has applied its changes, the generation it made and a
//! stamp of each group folder (`images`, `labels`, `points`, `shapes`, `tables`):
//! inode, link count, modification and change times. While a group's stamp is
//! unchanged and the generation is the manifest's, nobody else added, removed or
//! renamed an entry of that folder, so the manifest's names of that kind are its
//! elements and the folder need not be listed nor its elements looked at. A group
//! whose stamp differs (another tool wrote an element there) is listed, as every
//! group is when the file is missing, unreadable or of another generation.
//!
//! The file is a cache, not part of the committed state: it is written without fsync
//! after the commit (a crash leaves an older generation or no file, and the next call
//! lists the groups), errors writing it are ignored, and it is not announced to the
//! storage observer (the crash suites' replayed states lack it, which is one of the
//! states it may be in).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::layout::Layout;
use crate::commit::Manifest;
use crate::element::ElementKind;

/// The stamp file's name inside the hidden folder.
pub const STAMPS_FILE: &str = "groups.json";
/// The largest stamp file read (it holds five stamps).
const MAX_STAMPS_BYTES: u64 = 64 << 10;

/// What `stat` said of one group folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    ino: u64,
    nlink: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// The stamps recorded after one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStamps {
    /// The generation the commit made.
    pub generation: u64,
    /// Each group folder's stamp (`None`: it did not exist, or was not a real folder).
    pub groups: BTreeMap<ElementKind, Option<Stamp>>,
}

/// The stamp of the group folder of `kind` now (one `lstat`); `None` when it is
/// missing or not a real folder.
pub fn current(root: &Path, kind: ElementKind) -> Option<Stamp> {
    let meta = crate::storage::trace::lstat(&root.join(kind.group())).ok()?;
    meta.is_dir().then(|| Stamp {
        ino: meta.ino(),
        nlink: meta.nlink(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
    })
}

/// The recorded stamps, if they are readable and were taken at `generation`.
pub fn load(layout: &Layout, generation: u64) -> Option<GroupStamps> {
    let path = layout.hidden.join(STAMPS_FILE);
    let bytes = crate::util::read_limited(&path, MAX_STAMPS_BYTES).ok()?;
    let stamps: GroupStamps = serde_json::from_slice(&bytes).ok()?;
    (stamps.generation == generation).then_some(stamps)
}

/// The groups whose folder is as the last commit that recorded stamps left it, each
/// with its stamp (read once, under the lock the caller holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnchangedGroups(BTreeMap<ElementKind, Option<Stamp>>);

impl UnchangedGroups {
    /// Whether the group of `kind` is unchanged.
    pub fn contains(&self, kind: &ElementKind) -> bool {
        self.0.contains_key(kind)
    }

    /// Whether every group is unchanged.
    pub fn covers_all(&self) -> bool {
        self.0.len() == ElementKind::ALL.len()
    }

    /// Every group taken as unchanged without looking at any, for a read that trusts
    /// the element index alone (a pre-check the commit repeats). Holds no stamps:
    /// never pass it to [`record`].
    pub fn assumed_all() -> Self {
        Self(ElementKind::ALL.into_iter().map(|k| (k, None)).collect())
    }
}

/// The kinds whose group folder is as the last commit that recorded stamps (the
/// manifest's [`Manifest::stamps_generation`]) left it: nobody else added, removed or
/// renamed an entry there since. Empty when there is no manifest or no stamp of that
/// generation.
pub fn unchanged_groups(layout: &Layout, manifest: Option<&Manifest>) -> UnchangedGroups {
    let Some(stamps) = manifest.and_then(|m| load(layout, m.stamps_generation())) else {
        return UnchangedGroups::default();
    };
    UnchangedGroups(
        ElementKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let now = current(&layout.root, kind);
                (stamps.groups.get(&kind) == Some(&now)).then_some((kind, now))
            })
            .collect(),
    )
}

impl GroupStamps {
    /// Whether the group of `kind` is as the last commit left it.
    pub fn unchanged(&self, root: &Path, kind: ElementKind) -> bool {
        self.groups
            .get(&kind)
            .is_some_and(|recorded| *recorded == current(root, kind))
    }
}

/// Whether a commit of `steps` adds, removes or renames an entry of a group folder
/// (or makes one), which changes that folder's stamp: a step path of one or two
/// components below a group (`labels`, `labels/x`, `labels/zarr.json`). Paths deeper
/// inside an element change the element's folder, not the group's.
pub fn touched_by(steps: &[crate::commit::journal::Step]) -> bool {
    !touched_groups(steps).is_empty()
}

/// The groups whose folder a commit of `steps` changes (see [`touched_by`]).
pub fn touched_groups(steps: &[crate::commit::journal::Step]) -> BTreeSet<ElementKind> {
    steps
        .iter()
        .flat_map(|step| step.paths())
        .filter_map(|path| {
            let mut parts = std::path::Path::new(&path).components();
            let first = parts
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())?;
            let depth = 1 + parts.count();
            let kind = ElementKind::ALL.into_iter().find(|k| k.group() == first)?;
            (depth <= 2).then_some(kind)
        })
        .collect()
}

/// Records the stamps of every group at `generation`, right after a commit of
/// `steps` made it (under the write lock). A group in `unchanged` (as the commit
/// began) that the steps do not change keeps the stamp seen then, unread: should a
/// program that ignores the lock have changed that folder meanwhile, the next
/// commit sees the difference and lists it. Best effort: see the module
/// documentation.
pub fn record(
    layout: &Layout,
    generation: u64,
    unchanged: &UnchangedGroups,
    steps: &[crate::commit::journal::Step],
) {
    let touched = touched_groups(steps);
    let stamps = GroupStamps {
        generation,
        groups: ElementKind::ALL
            .iter()
            .map(|&kind| match unchanged.0.get(&kind) {
                Some(&seen) if !touched.contains(&kind) => (kind, seen),
                _ => (kind, current(&layout.root, kind)),
            })
            .collect(),
    };
    let Ok(text) = serde_json::to_vec(&stamps) else {
        return;
    };
    let path = layout.hidden.join(STAMPS_FILE);
    let temp = layout.hidden.join(format!(
        "{}groups-{}",
        crate::storage::publish::TEMP_PREFIX,
        super::layout::unique_id()
    ));
    if std::fs::write(&temp, text).is_err() || std::fs::rename(&temp, &path).is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

#[cfg(test)]
mod tests {
    use super::touched_by;
    use crate::commit::journal::Step;

    fn write(path: &str) -> Step {
        Step::Write {
            path: path.into(),
            text: String::new(),
        }
    }

    /// Entries of a group folder, or the folder itself, change its stamp; files deeper
    /// inside an element do not.
    #[test]
    fn only_steps_on_a_group_folders_entries_touch_it() {
        assert!(touched_by(&[write("labels/zarr.json")]));
        assert!(touched_by(&[Step::Mkdir {
            path: "tables".into()
        }]));
        assert!(touched_by(&[Step::Rename {
            from: ".spatialzarr/staging/1-2-3/element".into(),
            to: "labels/tile".into(),
        }]));
        assert!(!touched_by(&[
            write("images/img/zarr.json"),
            write("tables/cells/obs/area/zarr.json"),
            write(".spatialzarr/manifest.json"),
            write("zarr.json"),
        ]));
        assert!(!touched_by(&[Step::Rename {
            from: ".spatialzarr/staging/1-2-3/element".into(),
            to: "tables/cells/obs/area/c/0".into(),
        }]));
    }
}
