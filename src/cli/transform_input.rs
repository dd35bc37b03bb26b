//! Reading the transformations file of `set-transformations`: a JSON object mapping
//! each coordinate system to one transformation over the element's spatial axes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;
use spatialzarr::{Transform, Transformations};

/// Reads the transformations file at `path`: `{"SYSTEM": {"type": "identity"} |
/// {"type": "scale", "scale": [..]} | {"type": "translation", "translation": [..]} |
/// any other NGFF transformation object, ...}`.
pub(super) fn read(path: &Path) -> anyhow::Result<Transformations> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{shown} is not valid JSON"))?;
    let Some(systems) = doc.as_object() else {
        bail!(
            "{shown} must hold a JSON object mapping each coordinate system to a transformation, e.g. {{\"global\": {{\"type\": \"identity\"}}}}"
        );
    };
    if systems.is_empty() {
        bail!("{shown} names no coordinate system: an element needs at least one");
    }
    let mut out = BTreeMap::new();
    for (system, t) in systems {
        let kind = t.get("type").and_then(Value::as_str).with_context(|| {
            format!("{shown}: the transformation to {system:?} is not an object with a \"type\"")
        })?;
        let vector = |field: &str| -> anyhow::Result<Vec<f64>> {
            t.get(field)
                .and_then(Value::as_array)
                .and_then(|v| v.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                .with_context(|| {
                    format!(
                        "{shown}: the {kind} to {system:?} needs \"{field}\": a list of numbers, one per spatial axis"
                    )
                })
        };
        let transform = match kind {
            "identity" => Transform::Identity,
            "scale" => Transform::Scale(vector("scale")?),
            "translation" => Transform::Translation(vector("translation")?),
            _ => Transform::Other(t.clone()),
        };
        out.insert(system.clone(), transform);
    }
    Ok(Transformations(out))
}
