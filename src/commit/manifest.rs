//! `.spatialzarr/manifest.json`: the store's format version, the commit generation and
//! the elements committed through the store.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::element::ElementKind;
use crate::error::{Error, Result};

/// The manifest's file name inside the hidden folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The store format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest manifest accepted (it holds names only).
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
    /// Element names by kind, as committed through the store.
    #[serde(default)]
    pub elements: BTreeMap<ElementKind, Vec<String>>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: "spatialzarr".into(),
            version: FORMAT_VERSION,
            generation: 0,
            elements: BTreeMap::new(),
        }
    }
}

impl Manifest {
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
            Some(_) => {}
            None => return Err(corrupt("\"version\" is missing".into())),
        }
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    }

    /// Reads the manifest of the dataset whose hidden folder is `hidden`; `None` when
    /// there is none yet (a dataset written by another tool).
    pub fn load(hidden: &Path) -> Result<Option<Self>> {
        let path = hidden.join(MANIFEST_FILE);
        let bytes = match crate::util::read_limited(&path, MAX_MANIFEST_BYTES) {
            Ok(bytes) => bytes,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
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

    /// Records `name` as committed under `kind`.
    pub fn insert(&mut self, kind: ElementKind, name: &str) {
        let names = self.elements.entry(kind).or_default();
        if let Err(at) = names.binary_search_by(|n| n.as_str().cmp(name)) {
            names.insert(at, name.to_owned());
        }
    }

    /// Forgets `name`, whatever its kind.
    pub fn remove(&mut self, name: &str) {
        for names in self.elements.values_mut() {
            names.retain(|n| n != name);
        }
        self.elements.retain(|_, names| !names.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut m = Manifest::default();
        m.insert(ElementKind::Labels, "b");
        m.insert(ElementKind::Labels, "a");
        m.insert(ElementKind::Labels, "a");
        m.generation = 3;
        let back = Manifest::parse(&m.to_bytes(), Path::new("m")).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.elements[&ElementKind::Labels], vec!["a", "b"]);
    }

    #[test]
    fn newer_version_is_refused() {
        let text = br#"{"format":"spatialzarr","version":99,"generation":1}"#;
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
