//! The consistency check of a dataset.

use std::collections::BTreeMap;

use serde_json::Value;

use super::layout::{Layout, element_path, is_zarr_node};
use super::{Dataset, ElementSet, consolidated};
use crate::commit::{FoundJournal, Manifest};
use crate::element::ElementKind;
use crate::element::raster::{self, read_json};
use crate::error::Result;

/// What [`Dataset::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// The commit generation checked (0 when no commit of ours touched the dataset).
    pub generation: u64,
    /// How many elements were checked.
    pub elements_checked: usize,
    /// Every inconsistency, one sentence each. Empty when the dataset is consistent.
    pub problems: Vec<String>,
    /// What is not wrong with the committed state but left by interrupted writers (an
    /// interrupted commit, abandoned staging folders), one sentence each naming
    /// `spatialzarr recover` ([`Dataset::recover`]), which finishes or removes them.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Whether the dataset is consistent.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Dataset {
    /// Checks the committed state under the read lock: every element's metadata and
    /// arrays are readable and agree with each other, the manifest names only
    /// elements that exist, and consolidated metadata (when present) matches every
    /// node. With `deep`, also decodes every level of every raster.
    ///
    /// Unlike other reads, the check does not finish an interrupted commit first: it
    /// reports it, and the staging folders of writers that are gone, as warnings
    /// (problems found beside an interrupted commit may be the ones it would mend).
    pub fn check(&self, deep: bool) -> Result<CheckReport> {
        self.check_with_progress(deep, &mut |_, _| {})
    }

    /// [`Self::check`], calling `progress(checked, total)` after each element.
    pub fn check_with_progress(
        &self,
        deep: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CheckReport> {
        let _guard = self.inner.lock.read(self.inner.options.lock_timeout)?;
        let root = self.root();
        let mut report = CheckReport::default();
        leftovers(self, &mut report)?;
        let manifest = match Manifest::load(&self.layout().hidden) {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(e.to_string());
                None
            }
        };
        report.generation = manifest.as_ref().map_or(0, |m| m.generation);
        let elements = match ElementSet::load(self.layout(), manifest.as_ref()) {
            Ok(elements) => elements,
            Err(e) => {
                report.problems.push(e.to_string());
                ElementSet::load(self.layout(), None)?
            }
        };
        let all = elements.all()?;
        if let Some(manifest) = &manifest {
            check_record(self.layout(), manifest, &all, &mut report);
        }
        let total = all.len() as u64;
        for (name, kind) in &all {
            let (name, kind) = (name.as_str(), *kind);
            report.elements_checked += 1;
            progress(report.elements_checked as u64, total);
            let dir = root.join(element_path(kind, name));
            if let Err(problem) = check_element(&dir, kind, deep) {
                report
                    .problems
                    .push(format!("{} {name:?}: {problem}", kind.singular()));
            }
        }
        match read_json(&root.join("zarr.json")) {
            Ok(root_doc) if consolidated::present(&root_doc) => {
                check_consolidated(&root_doc, root, &all, &mut report.problems);
            }
            Ok(_) => {}
            Err(e) => report.problems.push(format!("the root zarr.json: {e}")),
        }
        for kind in ElementKind::ALL {
            // Every group document a commit may rewrite must be readable.
            let group = root.join(kind.group()).join("zarr.json");
            if !crate::storage::trace::exists(&group) {
                continue;
            }
            match read_json(&group) {
                Err(e) => report
                    .problems
                    .push(format!("{}/zarr.json: {e}", kind.group())),
                Ok(doc) if kind == ElementKind::Labels => {
                    if let Some(listed) = doc
                        .pointer("/attributes/ome/labels")
                        .and_then(Value::as_array)
                    {
                        let mut listed: Vec<String> = listed
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect();
                        listed.sort();
                        let labels = elements.names(ElementKind::Labels)?;
                        if listed != labels {
                            report.problems.push(format!(
                                "labels/zarr.json lists labels {listed:?}, but the dataset has {labels:?}"
                            ));
                        }
                    }
                }
                Ok(_) => {}
            }
        }
        Ok(report)
    }
}

/// What interrupted writers left: a pending journal and abandoned staging folders
/// become warnings; a journal that cannot be replayed is a problem (every later
/// commit and read refuses until it is mended).
fn leftovers(dataset: &Dataset, report: &mut CheckReport) -> Result<()> {
    const RECOVER: &str = "`spatialzarr recover` (Dataset::recover)";
    match dataset.pending_journal() {
        Ok(Some(FoundJournal::Decided(journal))) => report.warnings.push(format!(
            "an interrupted commit (generation {}) is waiting in .spatialzarr/journal.json: {RECOVER} finishes it; \
             a problem reported beside it may be its half-applied state, so run recover and check again",
            journal.generation
        )),
        Ok(Some(FoundJournal::Undecided { journal, reason })) => {
            let which = journal
                .map(|j| format!(" (generation {})", j.generation))
                .unwrap_or_default();
            report.warnings.push(format!(
                "an interrupted commit{which} was never decided and lies in .spatialzarr/journal.json ({reason}): \
                 nothing of it was committed; {RECOVER} withdraws it"
            ));
        }
        Ok(None) => {}
        Err(e) => report.problems.push(format!(
            "the journal of an interrupted commit cannot be replayed: {e}"
        )),
    }
    let layout = dataset.layout();
    for dir in super::staging::abandoned(layout)? {
        let shown = dir.strip_prefix(&layout.root).unwrap_or(&dir);
        report.warnings.push(format!(
            "abandoned staging folder {} (its writer is gone): {RECOVER} removes it",
            shown.display()
        ));
    }
    Ok(())
}

fn check_element(dir: &std::path::Path, kind: ElementKind, deep: bool) -> Result<(), String> {
    match kind {
        ElementKind::Images | ElementKind::Labels => {
            let info = raster::raster_info(dir, kind).map_err(|e| e.to_string())?;
            if kind == ElementKind::Labels && !info.dtype.is_integer() {
                return Err(format!("labels have non-integer type {}", info.dtype));
            }
            for (i, level) in info.level_paths.iter().enumerate() {
                if crate::util::safe_relative(level).is_none() {
                    return Err(format!("level path {level:?} leaves the element"));
                }
                let (shape, dtype) =
                    raster::array_shape_dtype(&dir.join(level)).map_err(|e| e.to_string())?;
                if shape.len() != info.dims.len() || dtype != info.dtype {
                    return Err(format!(
                        "level {i} ({level}) is {dtype} {shape:?}, unlike level 0 ({} with {} dimensions)",
                        info.dtype,
                        info.dims.len()
                    ));
                }
                if deep {
                    decode_level(dir, level, dtype).map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        ElementKind::Points => crate::element::points::check_points(dir, deep),
        ElementKind::Shapes => crate::element::shapes::check_shapes(dir, deep),
        ElementKind::Tables => crate::table::check_table(dir, deep),
    }
}

fn decode_level(dir: &std::path::Path, level: &str, dtype: crate::element::DType) -> Result<()> {
    use crate::element::DType;
    match dtype {
        DType::U8 => raster::read_level::<u8>(dir, level).map(drop),
        DType::U16 => raster::read_level::<u16>(dir, level).map(drop),
        DType::U32 => raster::read_level::<u32>(dir, level).map(drop),
        DType::U64 => raster::read_level::<u64>(dir, level).map(drop),
        DType::I8 => raster::read_level::<i8>(dir, level).map(drop),
        DType::I16 => raster::read_level::<i16>(dir, level).map(drop),
        DType::I32 => raster::read_level::<i32>(dir, level).map(drop),
        DType::I64 => raster::read_level::<i64>(dir, level).map(drop),
        DType::F32 => raster::read_level::<f32>(dir, level).map(drop),
        DType::F64 => raster::read_level::<f64>(dir, level).map(drop),
    }
}

/// Compares the committed record (the index of version 2, the manifest's names of
/// version 1) with the elements found: a recorded name without its element is a
/// problem; an element missing from the record is one when its group is as the last
/// commit left it (the store would not see it), else a warning (another tool wrote
/// it; the next commit records it). Version 2 also has its counts checked.
fn check_record(
    layout: &Layout,
    manifest: &Manifest,
    found: &[(String, ElementKind)],
    report: &mut CheckReport,
) {
    let recorded: BTreeMap<String, ElementKind> = if manifest.is_indexed() {
        match crate::commit::index::read_all(&layout.hidden) {
            Ok(recorded) => recorded,
            // Already reported by the load of the element set.
            Err(_) => return,
        }
    } else {
        manifest
            .elements
            .iter()
            .flat_map(|(kind, names)| names.iter().map(|n| (n.clone(), *kind)))
            .collect()
    };
    let record = if manifest.is_indexed() {
        "the index (.spatialzarr/index)"
    } else {
        "the manifest"
    };
    for (name, kind) in &recorded {
        if !is_zarr_node(&layout.root.join(element_path(*kind, name))) {
            report.problems.push(format!(
                "{record} lists {} {name:?}, but {}/{name} has no metadata",
                kind.singular(),
                kind.group()
            ));
        }
    }
    let stamps = super::stamps::load(layout, manifest.stamps_generation());
    for (name, kind) in found {
        if recorded.get(name) == Some(kind) {
            continue;
        }
        let sentence = format!(
            "{} {name:?} is in {}/ but not in {record}",
            kind.singular(),
            kind.group()
        );
        if stamps
            .as_ref()
            .is_some_and(|s| s.unchanged(&layout.root, *kind))
        {
            report.problems.push(format!(
                "{sentence}, and its group is as the last commit left it: `ls` and `info` do not see it; `spatialzarr lock DATASET -- true` records it"
            ));
        } else {
            report.warnings.push(format!(
                "{sentence} (written by another program): the next commit records it"
            ));
        }
    }
    if manifest.is_indexed() {
        let mut counts: BTreeMap<ElementKind, u64> = BTreeMap::new();
        for kind in recorded.values() {
            *counts.entry(*kind).or_insert(0) += 1;
        }
        if counts != manifest.counts {
            report.problems.push(format!(
                "the manifest counts {:?}, but the index holds {counts:?}",
                manifest.counts
            ));
        }
    }
}

/// Compares every consolidated entry of the elements with the node on disk.
fn check_consolidated(
    root_doc: &Value,
    root: &std::path::Path,
    elements: &[(String, ElementKind)],
    problems: &mut Vec<String>,
) {
    let Some(entries) = root_doc
        .pointer("/consolidated_metadata/metadata")
        .and_then(Value::as_object)
    else {
        return;
    };
    for (name, kind) in elements {
        let key = element_path(*kind, name);
        if !entries.contains_key(&key) {
            problems.push(format!(
                "consolidated metadata in zarr.json lacks {key}: spatialdata would not see it"
            ));
        }
    }
    for (key, entry) in entries {
        let Some(rel) = crate::util::safe_relative(key) else {
            problems.push(format!("consolidated metadata has a bad key {key:?}"));
            continue;
        };
        let path = root.join(rel).join("zarr.json");
        match read_json(&path) {
            Ok(on_disk) => {
                // zarr-python writes `"attributes": {}` where a document has none.
                let attributes = |doc: &Value| match doc.get("attributes") {
                    None | Some(Value::Null) => Value::Object(Default::default()),
                    Some(attributes) => attributes.clone(),
                };
                if attributes(&on_disk) != attributes(entry)
                    || on_disk.get("shape") != entry.get("shape")
                {
                    problems.push(format!(
                        "consolidated metadata of {key} differs from {key}/zarr.json"
                    ));
                }
            }
            Err(_) => problems.push(format!(
                "consolidated metadata lists {key}, which has no zarr.json"
            )),
        }
    }
}
