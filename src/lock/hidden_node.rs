//! The Zarr metadata document that makes the hidden folder a zero-size array node.
//!
//! zarr-python 3 lists every entry of a group's folder and warns about each one that
//! holds no Zarr metadata, so a bare `.spatialzarr/` made every `zarr.open_group` and
//! `spatialdata.read_zarr` of a dataset warn. Declared an ARRAY of shape `[0]`, the
//! folder is a valid node that Zarr readers never look into: an array's children are
//! never listed and `consolidate_metadata` does not descend into arrays, so the lock,
//! the journal and the staged elements inside stay invisible (spec/format.md, section
//! 5). The array has no chunks: reading it yields nothing, and nothing in the folder
//! can be taken for one of its chunks.

use std::io::Write;
use std::path::Path;

/// The document of a Zarr v3 dataset: `.spatialzarr/zarr.json`.
const V3_NAME: &str = "zarr.json";
const V3_DOCUMENT: &str = concat!(
    r#"{"zarr_format":3,"node_type":"array","shape":[0],"data_type":"uint8","#,
    r#""chunk_grid":{"name":"regular","configuration":{"chunk_shape":[1]}},"#,
    r#""chunk_key_encoding":{"name":"default","configuration":{"separator":"/"}},"#,
    r#""fill_value":0,"codecs":[{"name":"bytes"}],"#,
    r#""attributes":{"spatialzarr":"private folder of the spatialzarr store (locks, manifest, journal, staging): not data"}}"#,
    "\n"
);

/// The document of a Zarr v2 dataset (root `.zgroup`): `.spatialzarr/.zarray`.
const V2_NAME: &str = ".zarray";
const V2_DOCUMENT: &str = concat!(
    r#"{"zarr_format":2,"shape":[0],"chunks":[1],"dtype":"|u1","compressor":null,"#,
    r#""fill_value":0,"filters":null,"order":"C"}"#,
    "\n"
);

/// Gives the hidden folder `hidden` of `dataset` its node document when it has none
/// (a folder made by an older version, or just made). The document appears whole:
/// written under a unique temporary name, then linked to its name, which never
/// replaces a document already there. Without the right to write there (a reader of
/// a read-only dataset), the folder stays as it is: readers then only warn.
pub fn ensure(dataset: &Path, hidden: &Path, dataset_mode: u32) -> std::io::Result<()> {
    let (name, document) = if dataset.join(".zgroup").exists() {
        (V2_NAME, V2_DOCUMENT)
    } else {
        (V3_NAME, V3_DOCUMENT)
    };
    let path = hidden.join(name);
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    let temp = super::os::sibling_temp(&path);
    let written = super::os::create_with_mode(&temp, super::os::file_mode_for(dataset_mode))
        .and_then(|mut file| {
            file.write_all(document.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| match std::fs::hard_link(&temp, &path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // No hard links here (some FUSE and SMB mounts): a rename replaces at
            // worst the same bytes.
            Err(e)
                if crate::util::errno_is(
                    &e,
                    &[
                        rustix::io::Errno::PERM,
                        rustix::io::Errno::OPNOTSUPP,
                        rustix::io::Errno::MLINK,
                    ],
                ) =>
            {
                std::fs::rename(&temp, &path)
            }
            other => other,
        });
    let _ = std::fs::remove_file(&temp);
    match written {
        Err(e)
            if crate::util::errno_is(&e, &[rustix::io::Errno::ACCESS, rustix::io::Errno::ROFS]) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_are_json_arrays_of_size_zero() {
        let v3: serde_json::Value = serde_json::from_str(V3_DOCUMENT).unwrap();
        assert_eq!(
            (v3["node_type"].as_str(), &v3["shape"]),
            (Some("array"), &serde_json::json!([0]))
        );
        let v2: serde_json::Value = serde_json::from_str(V2_DOCUMENT).unwrap();
        assert_eq!(v2["shape"], serde_json::json!([0]));
    }

    #[test]
    fn an_existing_document_is_kept_and_a_missing_one_made() {
        let dir = tempfile::tempdir().unwrap();
        let hidden = dir.path().join(".spatialzarr");
        std::fs::create_dir(&hidden).unwrap();
        ensure(dir.path(), &hidden, 0o755).unwrap();
        assert_eq!(
            std::fs::read_to_string(hidden.join(V3_NAME)).unwrap(),
            V3_DOCUMENT
        );
        std::fs::write(hidden.join(V3_NAME), "kept").unwrap();
        ensure(dir.path(), &hidden, 0o755).unwrap();
        assert_eq!(
            std::fs::read_to_string(hidden.join(V3_NAME)).unwrap(),
            "kept"
        );
        let names: Vec<_> = std::fs::read_dir(&hidden)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    }
}
