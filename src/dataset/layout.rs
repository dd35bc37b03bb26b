//! Where things live in a dataset, and the set of its elements.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::commit::Manifest;
use crate::element::{ElementKind, ElementName};
use crate::error::{Error, Result};

/// Folder of staged elements inside the hidden folder.
pub const STAGING_DIR: &str = "staging";
/// Folder of replaced and removed elements awaiting deletion.
pub const TRASH_DIR: &str = "trash";

/// The relative path of an element's folder (`labels/cells`).
pub fn element_path(kind: ElementKind, name: &str) -> String {
    format!("{}/{name}", kind.group())
}

/// Whether `dir` holds Zarr group metadata (v3 or v2).
pub fn is_zarr_node(dir: &Path) -> bool {
    use crate::storage::trace::is_file;
    is_file(&dir.join("zarr.json"))
        || is_file(&dir.join(".zgroup"))
        || is_file(&dir.join(".zattrs"))
}

/// The elements of a dataset: name to kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementSet {
    by_name: BTreeMap<String, ElementKind>,
}

impl ElementSet {
    /// Reads the committed elements: those the manifest names whose folder holds
    /// metadata (a fresh lookup of a known path), plus those a listing of the group
    /// folders finds (elements written by other tools). Looks at every element: this
    /// is the full load of `check` and of groups changed by someone else.
    pub fn load(root: &Path, manifest: Option<&Manifest>) -> Result<Self> {
        Self::load_trusting(root, manifest, |_| false)
    }

    /// Reads the committed elements as [`Self::load`] does, except that the groups
    /// whose stamp the last commit recorded are unchanged are not looked at: their
    /// elements are the manifest's names (5 `lstat`s and a small read instead of two
    /// lookups per element and five listings).
    pub(crate) fn load_current(layout: &Layout, manifest: Option<&Manifest>) -> Result<Self> {
        let stamps = manifest.and_then(|m| super::stamps::load(layout, m.generation));
        let root = &layout.root;
        Self::load_trusting(root, manifest, |kind| {
            stamps.as_ref().is_some_and(|s| s.unchanged(root, kind))
        })
    }

    /// The element set, looking only at the groups for which `trusted` is false.
    fn load_trusting(
        root: &Path,
        manifest: Option<&Manifest>,
        trusted: impl Fn(ElementKind) -> bool,
    ) -> Result<Self> {
        let trusted: BTreeMap<ElementKind, bool> =
            ElementKind::ALL.iter().map(|&k| (k, trusted(k))).collect();
        let mut set = Self::default();
        if let Some(manifest) = manifest {
            for (kind, names) in &manifest.elements {
                let trust = trusted.get(kind).copied().unwrap_or(false);
                for name in names {
                    // A name that is not a valid element name (`../x`) or whose
                    // folder is reached through a link is not an element of ours.
                    if ElementName::new(name).is_err() {
                        continue;
                    }
                    let path = root.join(element_path(*kind, name));
                    if trust || (crate::util::linkless(root, &path) && is_zarr_node(&path)) {
                        set.by_name.insert(name.clone(), *kind);
                    }
                }
            }
        }
        for kind in ElementKind::ALL {
            if trusted[&kind] {
                continue;
            }
            let group = root.join(kind.group());
            if !crate::util::linkless(root, &group) {
                // A group folder that is a link: nothing behind it is listed.
                continue;
            }
            let entries = match crate::storage::trace::read_dir(&group) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::error::io_err("list", &group)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(crate::error::io_err("list", &group))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if set.by_name.contains_key(&name) {
                    continue;
                }
                // Only real folders: a symlink planted here is never followed.
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && ElementName::new(&name).is_ok() && is_zarr_node(&entry.path()) {
                    set.by_name.insert(name, kind);
                }
            }
        }
        Ok(set)
    }

    /// The kind of element `name`, if present (exact name).
    pub fn kind_of(&self, name: &str) -> Option<ElementKind> {
        self.by_name.get(name).copied()
    }

    /// The existing name equal to `name` ignoring ASCII case, if any.
    pub fn case_insensitive_match(&self, name: &str) -> Option<(&str, ElementKind)> {
        self.by_name
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, k)| (n.as_str(), *k))
    }

    /// Checks that `name` may be added as `kind`. `Ok(true)` when it replaces an
    /// element of the same name and kind (allowed only with `overwrite`).
    pub fn check_add(
        &self,
        kind: ElementKind,
        name: &ElementName,
        overwrite: bool,
    ) -> Result<bool> {
        match self.case_insensitive_match(name.as_str()) {
            None => Ok(false),
            Some((existing, existing_kind))
                if overwrite && existing == name.as_str() && existing_kind == kind =>
            {
                Ok(true)
            }
            Some((existing, existing_kind)) => Err(Error::NameTaken {
                existing: existing.to_owned(),
                kind: existing_kind.to_string(),
            }),
        }
    }

    /// Records `name` as an element of `kind`.
    pub fn insert(&mut self, kind: ElementKind, name: &str) {
        self.by_name.insert(name.to_owned(), kind);
    }

    /// Forgets `name`.
    pub fn remove(&mut self, name: &str) {
        self.by_name.remove(name);
    }

    /// Names of one kind, sorted.
    pub fn names(&self, kind: ElementKind) -> Vec<String> {
        self.by_name
            .iter()
            .filter(|(_, k)| **k == kind)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every (name, kind), sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, ElementKind)> {
        self.by_name.iter().map(|(n, k)| (n.as_str(), *k))
    }

    /// The set as a manifest element map.
    pub fn to_manifest_map(&self) -> BTreeMap<ElementKind, Vec<String>> {
        let mut map: BTreeMap<ElementKind, Vec<String>> = BTreeMap::new();
        for (name, kind) in &self.by_name {
            map.entry(*kind).or_default().push(name.clone());
        }
        map
    }
}

/// A unique name for a staging or trash entry: pid, time and a counter.
pub fn unique_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Paths of one dataset.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The dataset root.
    pub root: PathBuf,
    /// `.spatialzarr/`.
    pub hidden: PathBuf,
}

impl Layout {
    /// The layout of the dataset at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            hidden: root.join(crate::lock::os::HIDDEN_DIR),
        }
    }

    /// `.spatialzarr/staging`.
    pub fn staging(&self) -> PathBuf {
        self.hidden.join(STAGING_DIR)
    }

    /// `.spatialzarr/trash`.
    pub fn trash(&self) -> PathBuf {
        self.hidden.join(TRASH_DIR)
    }

    /// The relative path (from the root) of a path inside the hidden folder.
    pub fn hidden_relative(&self, parts: &[&str]) -> String {
        let mut path = crate::lock::os::HIDDEN_DIR.to_owned();
        for part in parts {
            path.push('/');
            path.push_str(part);
        }
        path
    }
}
