//! Element names and kinds.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest name accepted, in bytes (a folder name on common filesystems).
pub const MAX_NAME_LEN: usize = 255;

/// A validated element name: `[A-Za-z0-9_.-]+`, not starting with `__` (reserved by
/// spatialdata) nor with `.` (hidden entries are ignored by Zarr readers), at most
/// [`MAX_NAME_LEN`] bytes. Such a name is always a single, plain path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ElementName(String);

impl ElementName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("it is longer than 255 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(invalid(
                "only ASCII letters, digits, `_`, `.` and `-` are allowed",
            ));
        }
        if name.starts_with("__") {
            return Err(invalid(
                "names starting with `__` are reserved by spatialdata",
            ));
        }
        if name.eq_ignore_ascii_case("zarr.json") {
            return Err(invalid(
                "`zarr.json` (in any case) is the name of every group's metadata file and cannot name an element",
            ));
        }
        if name.starts_with('.') {
            return Err(invalid(
                "names starting with `.` are hidden from Zarr and spatialdata readers",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ElementName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ElementName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The five kinds of SpatialData elements; each lives in its own top-level group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementKind {
    /// `images/<name>`: multiscale rasters.
    Images,
    /// `labels/<name>`: integer segmentation rasters.
    Labels,
    /// `points/<name>`: parquet point clouds.
    Points,
    /// `shapes/<name>`: GeoParquet shapes.
    Shapes,
    /// `tables/<name>`: AnnData tables.
    Tables,
}

impl ElementKind {
    /// Every kind, in listing order.
    pub const ALL: [ElementKind; 5] = [
        ElementKind::Images,
        ElementKind::Labels,
        ElementKind::Points,
        ElementKind::Shapes,
        ElementKind::Tables,
    ];

    /// The top-level group's folder name.
    pub fn group(self) -> &'static str {
        match self {
            ElementKind::Images => "images",
            ElementKind::Labels => "labels",
            ElementKind::Points => "points",
            ElementKind::Shapes => "shapes",
            ElementKind::Tables => "tables",
        }
    }

    /// The singular word used in messages and `info` output ("image", "labels", ...).
    pub fn singular(self) -> &'static str {
        match self {
            ElementKind::Images => "image",
            ElementKind::Labels => "labels",
            ElementKind::Points => "points",
            ElementKind::Shapes => "shapes",
            ElementKind::Tables => "table",
        }
    }
}

impl std::fmt::Display for ElementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.singular())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in ["a", "image1", "cells_labels", "A.b-c_9", "_x", "x__"] {
            assert_eq!(ElementName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn invalid_names_say_why() {
        let long = "a".repeat(256);
        for (name, why) in [
            ("", "empty"),
            ("..", "`.`"),
            (".", "`.`"),
            (".hidden", "`.`"),
            ("__x", "`__`"),
            ("a/b", "allowed"),
            ("a\\b", "allowed"),
            ("/etc", "allowed"),
            ("a\0", "allowed"),
            ("caf\u{e9}", "allowed"),
            ("a b", "allowed"),
            ("zarr.json", "metadata file"),
            ("ZARR.Json", "metadata file"),
            (long.as_str(), "255"),
        ] {
            let err = ElementName::new(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
    }
}
