//! `.spatialzarr/manifest.json`: the store's format version, the commit generation and
//! the parameters of the element index (version 2), or the elements committed
//! through the store (version 1, read and upgraded at the first write).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::index::IndexParams;
use crate::element::ElementKind;
use crate::error::{Error, Result};

/// The manifest's file name inside the hidden folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The store format version this build writes (it reads it and version 1).
pub const FORMAT_VERSION: u32 = 2;
/// The first version whose names are in the bucketed index, not in the manifest.
pub const INDEXED_VERSION: u32 = 2;
/// The largest manifest accepted (a version-1 manifest holds every name).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The committed state's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `"spatialzarr"`.
    pub format: String,
    /// The store format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Incremented by every commit.
    pub generation: u64,
    /// Version 1 only: element names by kind, as committed through the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub elements: BTreeMap<ElementKind, Vec<String>>,
    /// Version 2: where and how the element index is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexParams>,
    /// Version 2: how many elements of each kind the index holds (kinds without
    /// elements are left out).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<ElementKind, u64>,
    /// The generation whose group stamps (`H/groups.json`) still describe the group
    /// folders: a commit that adds, removes or renames no entry of any group folder
    /// keeps the one before it (and records no stamps). `None`: this generation's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamps_of: Option<u64>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: "spatialzarr".into(),
            version: FORMAT_VERSION,
            generation: 0,
            elements: BTreeMap::new(),
            index: Some(IndexParams::default()),
            counts: BTreeMap::new(),
            stamps_of: None,
        }
    }
}

impl Manifest {
    /// The generation the group stamps of this state must carry to be trusted.
    pub fn stamps_generation(&self) -> u64 {
        self.stamps_of.unwrap_or(self.generation)
    }

    /// Parses and validates a manifest's bytes; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        if value.get("format").and_then(serde_json::Value::as_str) != Some("spatialzarr") {
            return Err(corrupt("\"format\" is not \"spatialzarr\"".into()));
        }
        match version {
            Some(v) if v > u64::from(FORMAT_VERSION) => {
                return Err(Error::UnsupportedFormat {
                    path: path.to_path_buf(),
                    what: format!(
                        "store format version {v} is newer than the supported {FORMAT_VERSION}"
                    ),
                });
            }
            Some(0) => return Err(corrupt("\"version\" is 0".into())),
            Some(_) => {}
            None => return Err(corrupt("\"version\" is missing".into())),
        }
        let manifest: Self = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        if manifest.is_indexed() && manifest.index != Some(IndexParams::default()) {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                what: format!(
                    "the element index is kept as {:?}, which this version does not know",
                    manifest.index
                ),
            });
        }
        Ok(manifest)
    }

    /// Whether the names are in the bucketed index (version 2), not in the manifest.
    pub fn is_indexed(&self) -> bool {
        self.version >= INDEXED_VERSION
    }

    /// Reads the manifest of the dataset whose hidden folder is `hidden`; `None` when
    /// there is none yet (a dataset written by another tool).
    pub fn load(hidden: &Path) -> Result<Option<Self>> {
        let path = hidden.join(MANIFEST_FILE);
        let bytes = match crate::util::read_limited(&path, MAX_MANIFEST_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Self::parse(&bytes, &path).map(Some)
    }

    /// The manifest's JSON text.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut m = Manifest::default();
        m.counts.insert(ElementKind::Labels, 2);
        m.generation = 3;
        let back = Manifest::parse(&m.to_bytes(), Path::new("m")).unwrap();
        assert_eq!(back, m);
        assert!(back.is_indexed());
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(!text.contains("elements"), "{text}");
    }

    #[test]
    fn version_1_lists_names() {
        let text = br#"{"format":"spatialzarr","version":1,"generation":4,
            "elements":{"labels":["a","b"]}}"#;
        let m = Manifest::parse(text, Path::new("m")).unwrap();
        assert!(!m.is_indexed());
        assert_eq!(m.elements[&ElementKind::Labels], vec!["a", "b"]);
    }

    #[test]
    fn newer_version_is_refused_naming_the_upgrade() {
        let text = br#"{"format":"spatialzarr","version":3,"generation":1}"#;
        let err = Manifest::parse(text, Path::new("m")).unwrap_err();
        assert!(matches!(err, Error::UnsupportedFormat { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("store format version 3 is newer than the supported 2")
                && message.contains("upgrade spatialzarr"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_index_layout_is_refused() {
        let text = br#"{"format":"spatialzarr","version":2,"generation":1,
            "index":{"folder":"index","hash":"sha256-ascii-lowercase","digits":4}}"#;
        let err = Manifest::parse(text, Path::new("m")).unwrap_err();
        assert!(matches!(err, Error::UnsupportedFormat { .. }), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        for text in [
            &b"{"[..],
            b"[]",
            b"{\"format\":\"x\",\"version\":1}",
            b"\xff",
        ] {
            assert!(Manifest::parse(text, Path::new("m")).is_err());
        }
    }
}
