//! The set of a dataset's elements: read from the committed index (or a version-1
//! manifest) and the group folders, changed by a commit's plan, and turned back into
//! the index buckets that commit writes.
//!
//! A set is either **complete** (every committed name is in memory: `ls`, `check`,
//! a group changed by another tool, a version-1 dataset) or **partial**: only the
//! index buckets asked about so far are read, each on first use of a name it holds
//! (one file per name a commit or `info` touches, spec/format.md §4).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::layout::{Layout, element_path, is_zarr_node};
use crate::commit::Manifest;
use crate::commit::index::{self, BucketId};
use crate::element::{ElementKind, ElementName};
use crate::error::{Error, Result};

/// The elements of a dataset: name to kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementSet {
    state: RefCell<State>,
}

/// A name's kind as recorded by the last commit, and as the set has it now.
type Change = (Option<ElementKind>, Option<ElementKind>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    by_name: BTreeMap<String, ElementKind>,
    /// Lower-case name to name (the case-insensitive uniqueness rule), built when
    /// first needed.
    by_lower: Option<BTreeMap<String, String>>,
    /// `Some((hidden folder, buckets read))`: the set is partial.
    partial: Option<(PathBuf, BTreeSet<BucketId>)>,
    /// Names whose kind differs from what the committed record says.
    changes: BTreeMap<String, Change>,
    /// Whether the committed record is the index (false: a version-1 manifest, or
    /// none; the next commit writes every bucket).
    indexed: bool,
}

impl State {
    fn put(&mut self, name: &str, kind: ElementKind) {
        if let Some(by_lower) = &mut self.by_lower {
            by_lower.insert(name.to_ascii_lowercase(), name.to_owned());
        }
        self.by_name.insert(name.to_owned(), kind);
    }

    /// The existing name equal to `name` ignoring ASCII case (its bucket covered).
    fn same_but_case(&mut self, name: &str) -> Option<(String, ElementKind)> {
        let by_name = &self.by_name;
        let by_lower = self.by_lower.get_or_insert_with(|| {
            by_name
                .keys()
                .map(|n| (n.to_ascii_lowercase(), n.clone()))
                .collect()
        });
        by_lower
            .get(&name.to_ascii_lowercase())
            .map(|n| (n.clone(), by_name[n]))
    }

    /// Records that `name` is now `now`, noting the change against the record.
    fn change(&mut self, name: &str, now: Option<ElementKind>) {
        let before = self.by_name.get(name).copied();
        let recorded = self.changes.get(name).map_or(before, |c| c.0);
        match now {
            Some(kind) => self.put(name, kind),
            None => {
                self.by_name.remove(name);
                if let Some(by_lower) = &mut self.by_lower {
                    by_lower.remove(&name.to_ascii_lowercase());
                }
            }
        }
        if recorded == now {
            self.changes.remove(name);
        } else {
            self.changes.insert(name.to_owned(), (recorded, now));
        }
    }

    /// Reads the bucket of `name` if the set is partial and has not read it yet.
    fn cover(&mut self, name: &str) -> Result<()> {
        let Some((hidden, read)) = &mut self.partial else {
            return Ok(());
        };
        let id = index::bucket_of(name);
        if read.insert(id) {
            let bucket = index::read_bucket(hidden, id)?;
            for (name, kind) in bucket {
                if ElementName::new(&name).is_ok() {
                    self.put(&name, kind);
                }
            }
        }
        Ok(())
    }

    /// Reads every bucket not read yet: the set becomes complete.
    fn complete(&mut self) -> Result<()> {
        let Some((hidden, read)) = self.partial.take() else {
            return Ok(());
        };
        for (name, kind) in index::read_all_except(&hidden, &read, index::Verify::Full)? {
            if ElementName::new(&name).is_ok() {
                self.put(&name, kind);
            }
        }
        Ok(())
    }
}

impl ElementSet {
    /// Reads the committed elements: those the index (or a version-1 manifest) names
    /// whose folder holds metadata (a fresh lookup of a known path), plus those a
    /// listing of the group folders finds (elements written by other tools). Looks
    /// at every element: this is the full load of `check` and of groups changed by
    /// someone else.
    pub fn load(layout: &Layout, manifest: Option<&Manifest>) -> Result<Self> {
        Self::load_trusting(layout, manifest, |_| false)
    }

    /// Reads the committed elements as [`Self::load`] does, except that the groups
    /// whose stamp the last commit recorded are unchanged are not looked at: their
    /// elements are the recorded names. When every group is unchanged and the
    /// dataset has an index, nothing is read now: each name's bucket is read when
    /// the name is first asked about.
    pub(crate) fn load_current(layout: &Layout, manifest: Option<&Manifest>) -> Result<Self> {
        Self::load_given(
            layout,
            manifest,
            &super::stamps::unchanged_groups(layout, manifest),
        )
    }

    /// [`Self::load_current`], given which groups are unchanged since the last commit
    /// (looked at once by the caller, under the lock it holds).
    pub(crate) fn load_given(
        layout: &Layout,
        manifest: Option<&Manifest>,
        unchanged: &super::stamps::UnchangedGroups,
    ) -> Result<Self> {
        let trusted = |kind| unchanged.contains(&kind);
        if manifest.is_some_and(Manifest::is_indexed) && ElementKind::ALL.into_iter().all(trusted) {
            let state = State {
                partial: Some((layout.hidden.clone(), BTreeSet::new())),
                indexed: true,
                ..State::default()
            };
            return Ok(Self {
                state: RefCell::new(state),
            });
        }
        Self::load_trusting(layout, manifest, trusted)
    }

    /// The complete element set, looking only at the groups for which `trusted` is
    /// false.
    fn load_trusting(
        layout: &Layout,
        manifest: Option<&Manifest>,
        trusted: impl Fn(ElementKind) -> bool,
    ) -> Result<Self> {
        let root = &layout.root;
        let trusted: BTreeMap<ElementKind, bool> =
            ElementKind::ALL.iter().map(|&k| (k, trusted(k))).collect();
        let indexed = manifest.is_some_and(Manifest::is_indexed);
        let recorded: BTreeMap<String, ElementKind> = match manifest {
            Some(_) if indexed => index::read_all(&layout.hidden)?,
            Some(m) => m
                .elements
                .iter()
                .flat_map(|(kind, names)| names.iter().map(|n| (n.clone(), *kind)))
                .collect(),
            None => BTreeMap::new(),
        };
        let mut state = State {
            indexed,
            ..State::default()
        };
        for (name, kind) in &recorded {
            // A name that is not a valid element name (`../x`) or whose folder is
            // reached through a link is not an element of ours.
            if ElementName::new(name).is_err() {
                continue;
            }
            let path = root.join(element_path(*kind, name));
            if trusted[kind] || (crate::util::linkless(root, &path) && is_zarr_node(&path)) {
                state.put(name, *kind);
            }
        }
        for kind in ElementKind::ALL {
            if !trusted[&kind] {
                list_group(layout, kind, &mut state)?;
            }
        }
        for name in recorded.keys().chain(state.by_name.keys()) {
            let (was, now) = (recorded.get(name), state.by_name.get(name));
            if was != now {
                state
                    .changes
                    .insert(name.clone(), (was.copied(), now.copied()));
            }
        }
        Ok(Self {
            state: RefCell::new(state),
        })
    }

    /// The kind of element `name`, if present (exact name).
    pub fn kind_of(&self, name: &str) -> Result<Option<ElementKind>> {
        let mut state = self.state.borrow_mut();
        state.cover(name)?;
        Ok(state.by_name.get(name).copied())
    }

    /// The existing name equal to `name` ignoring ASCII case, if any, with its kind.
    pub fn case_insensitive_match(&self, name: &str) -> Result<Option<(String, ElementKind)>> {
        let mut state = self.state.borrow_mut();
        state.cover(name)?;
        Ok(state.same_but_case(name))
    }

    /// Checks that `name` may be added as `kind`. `Ok(true)` when it replaces an
    /// element of the same name and kind (allowed only with `overwrite`).
    pub fn check_add(
        &self,
        kind: ElementKind,
        name: &ElementName,
        overwrite: bool,
    ) -> Result<bool> {
        match self.case_insensitive_match(name.as_str())? {
            None => Ok(false),
            Some((existing, existing_kind))
                if overwrite && existing == name.as_str() && existing_kind == kind =>
            {
                Ok(true)
            }
            Some((existing, existing_kind)) => Err(Error::NameTaken {
                existing,
                kind: existing_kind.to_string(),
            }),
        }
    }

    /// Records `name` as an element of `kind`.
    pub fn insert(&self, kind: ElementKind, name: &str) -> Result<()> {
        let mut state = self.state.borrow_mut();
        state.cover(name)?;
        state.change(name, Some(kind));
        Ok(())
    }

    /// Forgets `name`.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut state = self.state.borrow_mut();
        state.cover(name)?;
        state.change(name, None);
        Ok(())
    }

    /// Names of one kind, sorted (reads the whole index of a partial set).
    pub fn names(&self, kind: ElementKind) -> Result<Vec<String>> {
        let mut state = self.state.borrow_mut();
        state.complete()?;
        Ok(state
            .by_name
            .iter()
            .filter(|(_, k)| **k == kind)
            .map(|(n, _)| n.clone())
            .collect())
    }

    /// Every (name, kind), sorted by name (reads the whole index of a partial set).
    pub fn all(&self) -> Result<Vec<(String, ElementKind)>> {
        let mut state = self.state.borrow_mut();
        state.complete()?;
        Ok(state.by_name.iter().map(|(n, k)| (n.clone(), *k)).collect())
    }

    /// Every (name, kind), sorted by name, consuming the set (reads the whole index
    /// of a partial set).
    pub fn into_all(self) -> Result<Vec<(String, ElementKind)>> {
        let state = self.state.into_inner();
        let mut all: Vec<(String, ElementKind)> = state.by_name.into_iter().collect();
        if let Some((hidden, read)) = state.partial {
            // Sorted once at the end: cheaper than a map insert per name.
            let rest = index::read_all_except(&hidden, &read, index::Verify::Form)?;
            all.extend(
                rest.into_iter()
                    .filter(|(n, _)| ElementName::new(n).is_ok()),
            );
            all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(all)
    }

    /// Whether the set differs from what the last commit recorded.
    pub fn differs_from_record(&self) -> bool {
        !self.state.borrow().changes.is_empty()
    }

    /// The kinds of the names that differ from the record (before or after).
    pub(crate) fn changed_kinds(&self) -> BTreeSet<ElementKind> {
        let state = self.state.borrow();
        state
            .changes
            .values()
            .flat_map(|(was, now)| [*was, *now])
            .flatten()
            .collect()
    }

    /// The labels added and removed against the record: (added, removed).
    fn labels_delta(&self) -> (Vec<String>, Vec<String>) {
        let state = self.state.borrow();
        let labels = Some(ElementKind::Labels);
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (name, (was, now)) in &state.changes {
            if *now == labels {
                added.push(name.clone());
            } else if *was == labels {
                removed.push(name.clone());
            }
        }
        (added, removed)
    }

    /// The labels names after the changes, sorted: from the set when it is complete;
    /// for a partial one, `listed` (the exact list the last commit wrote in
    /// `labels/zarr.json`) with the changes applied, else the whole index (read once,
    /// when the list comes back below its limit).
    pub(crate) fn labels_after(&self, listed: Option<&serde_json::Value>) -> Result<Vec<String>> {
        let listed = listed.and_then(serde_json::Value::as_array);
        if let (Some(listed), false) = (listed, self.state.borrow().partial.is_none()) {
            let (added, removed) = self.labels_delta();
            let mut names: BTreeSet<String> = listed
                .iter()
                .filter_map(serde_json::Value::as_str)
                .map(str::to_owned)
                .collect();
            for name in removed {
                names.remove(&name);
            }
            names.extend(added);
            return Ok(names.into_iter().collect());
        }
        self.names(ElementKind::Labels)
    }

    /// The count of each kind: exact for a complete set; for a partial one, `base`
    /// (the counts the manifest records) moved by the changes.
    pub(crate) fn counts(&self, base: &BTreeMap<ElementKind, u64>) -> BTreeMap<ElementKind, u64> {
        let state = self.state.borrow();
        let mut counts = BTreeMap::new();
        if state.partial.is_none() {
            for kind in state.by_name.values() {
                *counts.entry(*kind).or_insert(0) += 1;
            }
            return counts;
        }
        counts.clone_from(base);
        for (was, now) in state.changes.values() {
            if let Some(was) = was {
                let count = counts.entry(*was).or_insert(0);
                *count = count.saturating_sub(1);
            }
            if let Some(now) = now {
                *counts.entry(*now).or_insert(0) += 1;
            }
        }
        counts.retain(|_, n| *n > 0);
        counts
    }

    /// The bucket files a commit of this set writes: every bucket holding a changed
    /// name, or every non-empty bucket when the record is not an index yet. Each
    /// with its new text (empty: the bucket is empty now).
    pub(crate) fn bucket_writes(&self) -> Vec<(BucketId, String)> {
        let state = self.state.borrow();
        let dirty: BTreeSet<BucketId> = if state.indexed {
            state.changes.keys().map(|n| index::bucket_of(n)).collect()
        } else {
            state.by_name.keys().map(|n| index::bucket_of(n)).collect()
        };
        if dirty.is_empty() {
            return Vec::new();
        }
        let mut entries: BTreeMap<BucketId, Vec<(&str, ElementKind)>> =
            dirty.iter().map(|id| (*id, Vec::new())).collect();
        for (name, kind) in &state.by_name {
            if let Some(bucket) = entries.get_mut(&index::bucket_of(name)) {
                bucket.push((name.as_str(), *kind));
            }
        }
        entries
            .into_iter()
            .map(|(id, names)| (id, index::bucket_text(names)))
            .collect()
    }
}

/// Adds to `state` the elements a listing of the group folder of `kind` finds that
/// it lacks: real folders (no links) with a valid name holding Zarr metadata.
fn list_group(layout: &Layout, kind: ElementKind, state: &mut State) -> Result<()> {
    let root = &layout.root;
    let group = root.join(kind.group());
    if !crate::util::linkless(root, &group) {
        // A group folder that is a link: nothing behind it is listed.
        return Ok(());
    }
    let entries = match crate::storage::trace::read_dir(&group) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::error::io_err("list", &group)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(crate::error::io_err("list", &group))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if state.by_name.contains_key(&name) {
            continue;
        }
        // Only real folders: a symlink planted here is never followed.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && ElementName::new(&name).is_ok() && is_zarr_node(&entry.path()) {
            state.put(&name, kind);
        }
    }
    Ok(())
}
