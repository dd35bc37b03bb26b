//! The element document of a table: its group `zarr.json`, carrying zarr-python's
//! inline consolidated metadata of every node below it (spec/format.md §8, "Element
//! documents of tables"). A reader that opens the table group (spatialdata, anndata,
//! `zarr.open_group`) takes every node document from this one file, so a commit that
//! rewrites it last gives such readers one atomic step per table
//! (spec/commit-protocol.md §10).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::element::raster::read_json;
use crate::error::{Error, Result};

/// The key of the consolidated block in a group document.
const BLOCK: &str = "consolidated_metadata";

/// An empty block, as zarr-python writes it for a group nested in a consolidated one.
pub(crate) fn empty_block() -> Value {
    json!({"kind": "inline", "must_understand": false, "metadata": {}})
}

/// Every node document below the table folder `dir` (not the group itself), by path
/// relative to `dir`. Folders without `zarr.json`, hidden names and links are no nodes.
pub fn node_documents(dir: &Path) -> Result<BTreeMap<String, Value>> {
    let mut nodes = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let folder = if rel.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&rel)
        };
        let entries = crate::storage::trace::read_dir(&folder)
            .map_err(crate::error::io_err("list", &folder))?;
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let doc_path = dir.join(&child).join("zarr.json");
            if !crate::storage::trace::is_file(&doc_path) {
                continue;
            }
            let doc = read_json(&doc_path)?;
            if doc.get("node_type").and_then(Value::as_str) == Some("group") {
                stack.push(child.clone());
            }
            nodes.insert(child, doc);
        }
    }
    Ok(nodes)
}

/// The form a node takes inside the block: groups carry an empty block of their own.
fn entry(mut node: Value) -> Value {
    if node.get("node_type").and_then(Value::as_str) == Some("group")
        && let Some(object) = node.as_object_mut()
    {
        object.insert(BLOCK.into(), empty_block());
    }
    node
}

/// `group` (the table's group document) carrying the block of `nodes`.
pub fn with_block(mut group: Value, nodes: &BTreeMap<String, Value>) -> Value {
    let metadata: Map<String, Value> = nodes
        .iter()
        .map(|(key, node)| (key.clone(), entry(node.clone())))
        .collect();
    if let Some(object) = group.as_object_mut() {
        object.insert(
            BLOCK.into(),
            json!({"kind": "inline", "must_understand": false, "metadata": metadata}),
        );
    }
    group
}

/// The element document of the table in `dir` as a commit leaves it: the node
/// documents on disk, with `changed` (by path relative to the table; `""` is the
/// group document) in their place. A block found in the group document is rebuilt,
/// never trusted: for new tables and for `recover`.
pub fn element_document(dir: &Path, changed: &BTreeMap<String, Value>) -> Result<Value> {
    let group = match changed.get("") {
        Some(doc) => doc.clone(),
        None => read_json(&dir.join("zarr.json"))?,
    };
    Ok(overlaid(group, node_documents(dir)?, changed))
}

/// The element document of the table in `dir` after a commit that changes the node
/// documents `changed` (by path relative to the table; `""` is the group document):
/// the block the group document holds, with `changed` in place. Only the group
/// document is read; the nodes the commit leaves alone keep the entries the block
/// gives them (kept equal to their documents by every commit of ours; `check`
/// compares them, `recover` rebuilds a block that differs). A table without a block
/// gets one built from every node document, as [`element_document`] builds it.
pub fn element_document_after(dir: &Path, changed: &BTreeMap<String, Value>) -> Result<Value> {
    let on_disk = read_json(&dir.join("zarr.json"))?;
    let Some(found) = block(&on_disk) else {
        return element_document(dir, changed);
    };
    let nodes = found
        .iter()
        .map(|(key, entry)| (key.clone(), without_block(entry)))
        .collect();
    let group = changed.get("").cloned().unwrap_or(on_disk);
    Ok(overlaid(group, nodes, changed))
}

/// `group` carrying the block of `nodes` with the node documents of `changed` (other
/// than the group's own, `""`) in place.
fn overlaid(
    mut group: Value,
    mut nodes: BTreeMap<String, Value>,
    changed: &BTreeMap<String, Value>,
) -> Value {
    for (key, doc) in changed {
        if !key.is_empty() {
            nodes.insert(key.clone(), doc.clone());
        }
    }
    if let Some(object) = group.as_object_mut() {
        object.remove(BLOCK);
    }
    with_block(group, &nodes)
}

/// The block of a group document, when it has one.
pub fn block(doc: &Value) -> Option<&Map<String, Value>> {
    doc.get(BLOCK)?.get("metadata")?.as_object()
}

/// A node document without its own block (groups nested in a block carry an empty one).
fn without_block(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(object) = doc.as_object_mut() {
        object.remove(BLOCK);
    }
    doc
}

/// Compares the block of the table in `dir` with its node documents; `Ok` when the
/// table has no block. The error says what differs.
pub fn verify(dir: &Path) -> std::result::Result<(), String> {
    let doc = read_json(&dir.join("zarr.json")).map_err(|e| e.to_string())?;
    let Some(block) = block(&doc) else {
        return Ok(());
    };
    let nodes = node_documents(dir).map_err(|e| e.to_string())?;
    for (key, node) in &nodes {
        match block.get(key) {
            None => return Err(format!("its consolidated metadata lacks the node {key}")),
            Some(entry) if without_block(entry) != without_block(node) => {
                return Err(format!(
                    "its consolidated metadata of {key} differs from {key}/zarr.json"
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = block.keys().find(|k| !nodes.contains_key(*k)) {
        return Err(format!(
            "its consolidated metadata lists {extra}, which has no zarr.json"
        ));
    }
    Ok(())
}

/// Before an append: when the table's block disagrees with `obs` index's own document
/// about the number of rows, another program changed the table (or an older store
/// wrote it); refuses with an error naming the table.
pub fn check_length(dir: &Path, table: &str, index_node: &str, n_obs: u64) -> Result<()> {
    let doc = read_json(&dir.join("zarr.json"))?;
    let Some(block) = block(&doc) else {
        return Ok(());
    };
    let in_block = block
        .get(index_node)
        .and_then(|node| node.get("shape"))
        .and_then(Value::as_array)
        .and_then(|shape| shape.first())
        .and_then(Value::as_u64);
    if in_block == Some(n_obs) {
        return Ok(());
    }
    Err(Error::Corrupt {
        path: dir.join("zarr.json"),
        reason: format!(
            "table {table}: its consolidated metadata says {} rows but {index_node} holds {n_obs}: \
             another program changed the table; run `spatialzarr check`, then `spatialzarr recover` \
             to rebuild it from the node documents",
            in_block.map_or_else(|| "no number of".to_owned(), |n| n.to_string())
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, doc: &Value) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(doc).unwrap()).unwrap();
    }

    fn array(shape: u64, note: &str) -> Value {
        json!({"node_type": "array", "zarr_format": 3, "shape": [shape], "attributes": {"note": note}})
    }

    /// A commit replaces the entries of what it changes and keeps the others as the
    /// block has them; a rebuild takes every node document from disk.
    #[test]
    fn a_commit_patches_the_block_and_a_rebuild_reads_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path();
        let group = json!({"node_type": "group", "zarr_format": 3, "attributes": {}});
        let obs = json!({"node_type": "group", "zarr_format": 3, "attributes": {}});
        write(&table.join("obs/zarr.json"), &obs);
        write(&table.join("obs/area/zarr.json"), &array(10, "area"));
        write(&table.join("var/zarr.json"), &obs);
        write(&table.join("var/_index/zarr.json"), &array(3, "genes"));
        write(&table.join("zarr.json"), &group);
        let built = element_document(table, &BTreeMap::new()).unwrap();
        write(&table.join("zarr.json"), &built);
        assert_eq!(block(&built).unwrap().len(), 4);
        // Another program changes a node document the block does not follow.
        write(&table.join("var/_index/zarr.json"), &array(3, "edited"));
        let changed = BTreeMap::from([("obs/area".to_owned(), array(12, "area"))]);
        let after = element_document_after(table, &changed).unwrap();
        let entries = block(&after).unwrap();
        assert_eq!(entries["obs/area"], array(12, "area"));
        assert_eq!(entries["var/_index"], array(3, "genes"));
        assert_eq!(entries["obs"]["consolidated_metadata"], empty_block());
        assert_eq!(after["attributes"], group["attributes"]);
        let rebuilt = element_document(table, &changed).unwrap();
        assert_eq!(block(&rebuilt).unwrap()["var/_index"], array(3, "edited"));
        assert!(verify(table).is_err(), "the stale entry is reported");
    }

    /// A table without a block gets one from every node document.
    #[test]
    fn a_table_without_a_block_gets_one_from_its_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path();
        write(
            &table.join("zarr.json"),
            &json!({"node_type": "group", "zarr_format": 3, "attributes": {"a": 1}}),
        );
        write(&table.join("X/zarr.json"), &array(5, "x"));
        let after = element_document_after(table, &BTreeMap::new()).unwrap();
        assert_eq!(block(&after).unwrap()["X"], array(5, "x"));
        assert_eq!(after["attributes"]["a"], 1);
    }
}
