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
    dir.join("zarr.json").is_file()
        || dir.join(".zgroup").is_file()
        || dir.join(".zattrs").is_file()
}

/// The elements of a dataset: name to kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementSet {
    by_name: BTreeMap<String, ElementKind>,
}

impl ElementSet {
    /// Reads the committed elements: those the manifest names whose folder holds
    /// metadata (a fresh lookup of a known path), plus those a listing of the group
    /// folders finds (elements written by other tools).
    pub fn load(root: &Path, manifest: Option<&Manifest>) -> Result<Self> {
        let mut set = Self::default();
        if let Some(manifest) = manifest {
            for (kind, names) in &manifest.elements {
                for name in names {
                    // A name that is not a valid element name (`../x`) or whose
                    // folder is reached through a link is not an element of ours.
                    let path = root.join(element_path(*kind, name));
                    if ElementName::new(name).is_ok()
                        && crate::util::linkless(root, &path)
                        && is_zarr_node(&path)
                    {
                        set.by_name.insert(name.clone(), *kind);
                    }
                }
            }
        }
        for kind in ElementKind::ALL {
            let group = root.join(kind.group());
            if !crate::util::linkless(root, &group) {
                // A group folder that is a link: nothing behind it is listed.
                continue;
            }
            let entries = match std::fs::read_dir(&group) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::error::io_err("list", &group)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(crate::error::io_err("list", &group))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // Only real folders: a symlink planted here is never followed.
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && ElementName::new(&name).is_ok() && is_zarr_node(&entry.path()) {
                    set.by_name.entry(name).or_insert(kind);
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
