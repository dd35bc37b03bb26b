//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (libFuzzer,
//! through cargo-fuzz) and by `tests/fuzz_corpus.rs`, which replays every corpus
//! file in an ordinary `cargo test`. Each body takes arbitrary bytes; refusing them
//! with an error is fine, a panic (or abort) is a bug.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use spatialzarr::commit::{FoundJournal, Journal, Manifest};
use spatialzarr::element::shapes::{Shapes, parse_geojson};
use spatialzarr::{Dataset, DatasetOptions, ElementKind, ElementName, RasterOptions};

#[allow(dead_code)]
#[path = "../src/cli/npy.rs"]
mod npy;

#[allow(dead_code)]
#[path = "../src/cli/csv_input.rs"]
mod csv_input;

#[path = "../src/cli/csv_types.rs"]
mod csv_types;

/// Every target, by name (the folder names under `fuzz/corpus/`).
#[allow(dead_code)]
pub const TARGETS: [&str; 7] = [
    "names",
    "journal",
    "manifest",
    "geojson",
    "npy_header",
    "csv_input",
    "element_metadata",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "names" => names(data),
        "journal" => journal(data),
        "manifest" => manifest(data),
        "geojson" => geojson(data),
        "npy_header" => npy_header(data),
        "csv_input" => csv(data),
        "element_metadata" => element_metadata(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Element names: an accepted name can never leave its group folder.
pub fn names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = ElementName::new(text) {
        let s = name.as_str();
        assert!(!s.is_empty() && s != "." && s != "..", "accepted {s:?}");
        assert!(!s.contains(['/', '\\', '\0']), "accepted {s:?}");
        assert!(!s.eq_ignore_ascii_case("zarr.json"), "accepted {s:?}");
    }
}

/// Journals: a journal read as decided only names plain paths inside the dataset,
/// and survives its own serialization (a version-3 journal with its checksum).
pub fn journal(data: &[u8]) {
    let path = Path::new("journal.json");
    if let Ok(FoundJournal::Decided(journal)) = Journal::read_bytes(data, path) {
        let again =
            Journal::read_bytes(&journal.to_bytes(), path).expect("a decided journal reads again");
        assert_eq!(again, FoundJournal::Decided(journal.clone()));
        let root = Path::new("/nonexistent-root-of-the-journal-fuzzer");
        journal
            .check_paths(root)
            .expect("a decided journal's paths are plain");
    }
}

/// Manifests.
pub fn manifest(data: &[u8]) {
    if let Ok(manifest) = Manifest::parse(data, Path::new("manifest.json")) {
        Manifest::parse(&manifest.to_bytes(), Path::new("manifest.json"))
            .expect("a parsed manifest parses again");
    }
}

/// GeoJSON: accepted shapes are valid and non-empty.
pub fn geojson(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(shapes) = parse_geojson(text) {
        assert!(!shapes.is_empty());
        shapes.validate().expect("accepted shapes are valid");
    }
}

/// `.npy` headers: an accepted header names a pixel type or is refused with a
/// message.
pub fn npy_header(data: &[u8]) {
    if let Ok(header) = npy::read_header(&mut &data[..]) {
        let _ = npy::dtype_of(&header.descr);
    }
}

/// Removes the scratch folder of this process (call once, when done).
#[allow(dead_code)]
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}

/// A scratch folder for the targets that need files (one per process).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("spatialzarr-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

/// A dataset with labels `x`, made once per process.
fn dataset() -> &'static Dataset {
    static DS: OnceLock<Dataset> = OnceLock::new();
    DS.get_or_init(|| {
        let path = scratch().join("ds.zarr");
        let _ = std::fs::remove_dir_all(&path);
        let ds = Dataset::create(&path, DatasetOptions::default()).expect("dataset");
        let pixels = ndarray::ArrayD::<u8>::zeros(ndarray::IxDyn(&[4, 4]));
        ds.add_raster(
            ElementKind::Labels,
            "x",
            pixels.view(),
            &RasterOptions::default(),
            false,
        )
        .expect("labels");
        ds
    })
}

/// CSV input: read as the commands read it, then offered to the circles and points
/// validation (a points element is staged, then dropped).
pub fn csv(data: &[u8]) {
    let path = scratch().join("input.csv");
    std::fs::write(&path, data).expect("write the input");
    let Ok(batch) = csv_input::read_csv(&path, &BTreeMap::new()) else {
        return;
    };
    let _ = Shapes::circles_from_batch(&batch);
    let fields = batch.schema().fields().clone();
    let key = fields.last().map(|f| f.name().as_str());
    let instance = fields.first().map(|f| f.name().as_str());
    let _ = dataset().stage_points("p", &batch, key, instance, &Default::default());
}

/// Element metadata: the first byte picks the document (the labels group's or the
/// level's `zarr.json`), the rest is its content; describing and checking the
/// element must not panic. The document is restored afterwards.
pub fn element_metadata(data: &[u8]) {
    let Some((&which, content)) = data.split_first() else {
        return;
    };
    let ds = dataset();
    let file = if which % 2 == 0 {
        ds.root().join("labels/x/zarr.json")
    } else {
        ds.root().join("labels/x/s0/zarr.json")
    };
    let original = std::fs::read(&file).expect("read the document");
    std::fs::write(&file, content).expect("write the document");
    let _ = ds.info("x");
    let _ = ds.check(false);
    std::fs::write(&file, original).expect("restore the document");
}
