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
    /// When the leftovers of dead writers were last swept (absent in files written
    /// before sweeps were scheduled: a sweep is then due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swept: Option<SweepMark>,
}

/// When a writer last swept the leftovers of dead writers (staging folders whose
/// owner is gone, trash entries, temporary files in the root and the hidden folder:
/// spec/commit-protocol.md §5 steps 2–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepMark {
    /// The committed generation the sweep found.
    pub generation: u64,
    /// The wall-clock time of the sweep, in seconds since the Unix epoch.
    pub unix_secs: u64,
}

/// A sweep is due once this many commits were made since the last one...
pub const SWEEP_EVERY_COMMITS: u64 = 64;
/// ...or this many seconds have passed since it (or the clock went back).
pub const SWEEP_EVERY_SECS: u64 = 60;

impl SweepMark {
    /// A sweep made now, finding `generation` committed.
    pub fn now(generation: u64) -> Self {
        Self {
            generation,
            unix_secs: unix_secs_now(),
        }
    }

    /// Whether a writer finding `generation` committed must sweep again.
    pub fn due(&self, generation: u64) -> bool {
        let now = unix_secs_now();
        generation < self.generation
            || generation - self.generation >= SWEEP_EVERY_COMMITS
            || now < self.unix_secs
            || now - self.unix_secs >= SWEEP_EVERY_SECS
    }
}

/// Seconds since the Unix epoch (0 for a clock set before it).
fn unix_secs_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
/// with its stamp (read once, under the lock the caller holds), and the last sweep
/// those stamps carry forward.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnchangedGroups {
    groups: BTreeMap<ElementKind, Option<Stamp>>,
    /// The last sweep, as recorded (or as made by this writer's recovery).
    pub swept: Option<SweepMark>,
    /// Whether this writer's recovery made that sweep: its commit records the mark
    /// (a transaction that commits nothing leaves the stamp file as it was).
    pub swept_now: bool,
}

impl UnchangedGroups {
    /// No group taken as unchanged; only the last sweep carried forward (for a
    /// record that stamps every group anew).
    pub fn only_sweep(swept: Option<SweepMark>) -> Self {
        Self {
            groups: BTreeMap::new(),
            swept,
            swept_now: false,
        }
    }

    /// Whether a writer finding `generation` committed must sweep (no sweep
    /// recorded, or [`SweepMark::due`]).
    pub fn sweep_due(&self, generation: u64) -> bool {
        self.swept.is_none_or(|mark| mark.due(generation))
    }

    /// The groups whose folder was found a real folder (not a link) when the stamps
    /// were compared: the `lstat` that stamped it showed so.
    pub fn real_folders(&self) -> impl Iterator<Item = ElementKind> + '_ {
        self.groups
            .iter()
            .filter(|(_, stamp)| stamp.is_some())
            .map(|(kind, _)| *kind)
    }

    /// Whether the group of `kind` is unchanged.
    pub fn contains(&self, kind: &ElementKind) -> bool {
        self.groups.contains_key(kind)
    }

    /// Whether every group is unchanged.
    pub fn covers_all(&self) -> bool {
        self.groups.len() == ElementKind::ALL.len()
    }

    /// Every group taken as unchanged without looking at any, for a read that trusts
    /// the element index alone (a pre-check the commit repeats). Holds no stamps:
    /// never pass it to [`record`].
    pub fn assumed_all() -> Self {
        Self {
            groups: ElementKind::ALL.into_iter().map(|k| (k, None)).collect(),
            swept: None,
            swept_now: false,
        }
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
    UnchangedGroups {
        groups: ElementKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let now = current(&layout.root, kind);
                (stamps.groups.get(&kind) == Some(&now)).then_some((kind, now))
            })
            .collect(),
        swept: stamps.swept,
        swept_now: false,
    }
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
            .map(|&kind| match unchanged.groups.get(&kind) {
                Some(&seen) if !touched.contains(&kind) => (kind, seen),
                _ => (kind, current(&layout.root, kind)),
            })
            .collect(),
        swept: unchanged.swept,
    };
    write(layout, &stamps);
}

/// Records `mark` in the stamps of `generation`, if there are such: a sweep made
/// outside [`record`] (by a commit that rewrites no stamps, or by
/// `Dataset::recover`). Best effort, as [`record`].
pub fn note_sweep(layout: &Layout, generation: u64, mark: SweepMark) {
    if let Some(mut stamps) = load(layout, generation) {
        stamps.swept = Some(mark);
        write(layout, &stamps);
    }
}

/// Replaces the stamp file with `stamps` (a temporary file renamed over it; no fsync).
fn write(layout: &Layout, stamps: &GroupStamps) {
    let Ok(text) = serde_json::to_vec(stamps) else {
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
