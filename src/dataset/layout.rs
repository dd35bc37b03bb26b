//! Where things live in a dataset.

use std::path::{Path, PathBuf};

use crate::element::ElementKind;

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
