//! zarr-python's inline consolidated metadata in the root `zarr.json`.
//!
//! When present, spatialdata lists elements AND reads their attributes from it, so a
//! commit that changes any node's metadata MUST change its copy here in the same
//! commit. The store either keeps it current or, if asked, drops it.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::Result;

/// Whether the root document carries consolidated metadata.
pub fn present(root_doc: &Value) -> bool {
    root_doc
        .pointer("/consolidated_metadata/metadata")
        .is_some_and(Value::is_object)
}

/// The number of nodes the consolidated metadata holds.
pub fn node_count(root_doc: &Value) -> usize {
    root_doc
        .pointer("/consolidated_metadata/metadata")
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

fn entries(root_doc: &mut Value) -> Option<&mut Map<String, Value>> {
    root_doc
        .pointer_mut("/consolidated_metadata/metadata")
        .and_then(Value::as_object_mut)
}

/// The form a node takes inside the consolidated document: groups carry an empty
/// consolidated block of their own, as zarr-python writes them (also a table's
/// element document, whose own block is not stored twice).
fn entry_form(mut node: Value) -> Value {
    if node.get("node_type").and_then(Value::as_str) == Some("group")
        && let Some(object) = node.as_object_mut()
    {
        object.insert(
            "consolidated_metadata".into(),
            crate::table::element_doc::empty_block(),
        );
    }
    node
}

/// Removes the node `prefix` and everything below it.
pub fn remove_tree(root_doc: &mut Value, prefix: &str) {
    if let Some(map) = entries(root_doc) {
        let below = format!("{prefix}/");
        map.retain(|key, _| key != prefix && !key.starts_with(&below));
    }
}

/// Sets the node at `key` to `node`.
pub fn set_node(root_doc: &mut Value, key: &str, node: Value) {
    if let Some(map) = entries(root_doc) {
        map.insert(key.to_owned(), entry_form(node));
    }
}

/// Adds every node found in the folder tree `dir` under the key `prefix`.
pub fn insert_tree(root_doc: &mut Value, prefix: &str, dir: &Path) -> Result<()> {
    let mut nodes = Vec::new();
    collect_nodes(dir, prefix, &mut nodes)?;
    for (key, node) in nodes {
        set_node(root_doc, &key, node);
    }
    Ok(())
}

fn collect_nodes(dir: &Path, key: &str, out: &mut Vec<(String, Value)>) -> Result<()> {
    let meta = dir.join("zarr.json");
    if !crate::storage::trace::is_file(&meta) {
        return Ok(());
    }
    out.push((key.to_owned(), crate::element::raster::read_json(&meta)?));
    let entries =
        crate::storage::trace::read_dir(dir).map_err(crate::error::io_err("list", dir))?;
    let mut children: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    children.sort();
    for child in children {
        collect_nodes(&dir.join(&child), &format!("{key}/{child}"), out)?;
    }
    Ok(())
}

/// Removes the consolidated block altogether.
pub fn drop_all(root_doc: &mut Value) {
    if let Some(object) = root_doc.as_object_mut() {
        object.remove("consolidated_metadata");
    }
}
