//! Coordinate transformations of elements, as NGFF 0.5-dev-spatialdata writes them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A transformation from an element's intrinsic coordinates to a coordinate system.
/// Vectors run over the element's SPATIAL axes in the element's order (for a `c,y,x`
/// image: `[y, x]`); the channel axis is implicit (scale 1, translation 0).
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// No change.
    Identity,
    /// Multiply each spatial axis.
    Scale(Vec<f64>),
    /// Add to each spatial axis.
    Translation(Vec<f64>),
    /// A transformation this library does not interpret (an affine, a sequence...,
    /// as other tools write them), kept as its NGFF JSON object so that rewriting an
    /// element's metadata never loses it.
    Other(Value),
}

/// The transformations of one element, by coordinate system name.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformations(pub BTreeMap<String, Transform>);

impl Default for Transformations {
    /// Identity to the `global` coordinate system, as spatialdata defaults.
    fn default() -> Self {
        Self(BTreeMap::from([("global".to_owned(), Transform::Identity)]))
    }
}

/// One NGFF axis object for dimension `name` (`c` is a channel axis, the rest space).
pub fn axis_json(name: &str, with_unit: bool) -> Value {
    match (name, with_unit) {
        ("c", _) => json!({"name": "c", "type": "channel"}),
        (n, true) => json!({"name": n, "type": "space", "unit": "unit"}),
        (n, false) => json!({"name": n, "type": "space"}),
    }
}

/// Expands spatial values to every dimension, putting `channel_value` at `c`.
fn expand(dims: &[String], spatial: &[f64], channel_value: f64) -> Option<Vec<f64>> {
    let spatial_count = dims.iter().filter(|d| *d != "c").count();
    if spatial.len() != spatial_count {
        return None;
    }
    let mut values = spatial.iter();
    Some(
        dims.iter()
            .map(|d| {
                if d == "c" {
                    channel_value
                } else {
                    *values.next().expect("counted above")
                }
            })
            .collect(),
    )
}

impl Transformations {
    /// Checks every vector's length against the element's dimensions.
    pub fn validate(&self, dims: &[String]) -> Result<(), String> {
        for (system, t) in &self.0 {
            let spatial = dims.iter().filter(|d| *d != "c").count();
            match t {
                Transform::Identity => {}
                Transform::Other(v) => {
                    let well_formed = v.get("type").is_some_and(Value::is_string)
                        && v.get("output").is_none_or(Value::is_object);
                    if !v.is_object() || !well_formed {
                        return Err(format!(
                            "the transformation to {system:?} is not an NGFF transformation object with a \"type\""
                        ));
                    }
                }
                Transform::Scale(v) | Transform::Translation(v) => {
                    if v.len() != spatial {
                        return Err(format!(
                            "the transformation to {system:?} has {} values, but the element has {spatial} spatial axes",
                            v.len()
                        ));
                    }
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(format!(
                            "the transformation to {system:?} has a value that is not finite"
                        ));
                    }
                }
            }
            if system.is_empty() {
                return Err("a coordinate system name is empty".into());
            }
        }
        Ok(())
    }

    /// The multiscale-level `coordinateTransformations` list for an element with `dims`.
    pub fn to_ngff(&self, dims: &[String]) -> Vec<Value> {
        let input_name: String = dims.concat();
        let axes: Vec<Value> = dims.iter().map(|d| axis_json(d, true)).collect();
        self.0
            .iter()
            .map(|(system, t)| {
                let mut value = match t {
                    Transform::Identity => json!({"type": "identity"}),
                    // Kept as read, with its own input and output axes.
                    Transform::Other(v) => {
                        let mut v = v.clone();
                        if let Some(object) = v.as_object_mut() {
                            let output = object.entry("output").or_insert_with(|| json!({}));
                            if let Some(output) = output.as_object_mut() {
                                output.insert("name".into(), json!(system));
                            }
                        }
                        return v;
                    }
                    Transform::Scale(v) => {
                        json!({"type": "scale", "scale": expand(dims, v, 1.0).unwrap_or_default()})
                    }
                    Transform::Translation(v) => json!({
                        "type": "translation",
                        "translation": expand(dims, v, 0.0).unwrap_or_default()
                    }),
                };
                value["input"] = json!({"name": input_name, "axes": axes});
                value["output"] = json!({"name": system, "axes": axes});
                value
            })
            .collect()
    }

    /// Reads the multiscale-level `coordinateTransformations` of an element with `dims`.
    /// Kinds this library does not interpret are kept as [`Transform::Other`].
    pub fn from_ngff(list: &[Value], dims: &[String]) -> Self {
        let spatial = |values: &Value| -> Option<Vec<f64>> {
            let values: Vec<f64> = values
                .as_array()?
                .iter()
                .map(Value::as_f64)
                .collect::<Option<_>>()?;
            if values.len() == dims.len() {
                Some(
                    values
                        .iter()
                        .zip(dims)
                        .filter(|(_, d)| *d != "c")
                        .map(|(v, _)| *v)
                        .collect(),
                )
            } else {
                Some(values)
            }
        };
        let mut out = BTreeMap::new();
        for t in list {
            let Some(system) = t.pointer("/output/name").and_then(Value::as_str) else {
                continue;
            };
            let parsed = match t.get("type").and_then(Value::as_str) {
                Some("identity") => Some(Transform::Identity),
                Some("scale") => t.get("scale").and_then(spatial).map(Transform::Scale),
                Some("translation") => t
                    .get("translation")
                    .and_then(spatial)
                    .map(Transform::Translation),
                _ => None,
            };
            out.insert(
                system.to_owned(),
                parsed.unwrap_or_else(|| Transform::Other(t.clone())),
            );
        }
        Self(out)
    }
}

/// A copy of `group`, an element's group document (`zarr.json`), whose
/// transformations are `transformations` instead: for images and labels in
/// `attributes.ome.multiscales[0]` (or `attributes.multiscales[0]`), for points and
/// shapes in `attributes`. Refuses documents without axes and vectors that do not
/// fit them.
pub fn replaced_in_group(
    group: &Value,
    transformations: &Transformations,
) -> Result<Value, String> {
    let mut doc = group.clone();
    let attrs = doc
        .get_mut("attributes")
        .ok_or("the element's zarr.json has no attributes")?;
    let holder = if attrs.pointer("/ome/multiscales/0").is_some() {
        attrs.pointer_mut("/ome/multiscales/0")
    } else if attrs.pointer("/multiscales/0").is_some() {
        attrs.pointer_mut("/multiscales/0")
    } else {
        Some(attrs)
    }
    .expect("checked above");
    let dims: Vec<String> = match holder.get("axes").and_then(Value::as_array) {
        Some(axes) => axes
            .iter()
            .map(|a| {
                a.as_str()
                    .or_else(|| a.get("name").and_then(Value::as_str))
                    .map(str::to_owned)
            })
            .collect::<Option<_>>()
            .ok_or("an axis of the element has no name")?,
        None => return Err("the element's zarr.json lists no axes".into()),
    };
    transformations.validate(&dims)?;
    holder["coordinateTransformations"] = Value::Array(transformations.to_ngff(&dims));
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Affine and sequence transformations written by other tools are kept, named by
    /// their coordinate system, and written back unchanged.
    #[test]
    fn uninterpreted_kinds_are_kept() {
        let dims: Vec<String> = ["y", "x"].iter().map(|d| d.to_string()).collect();
        let affine = json!({
            "type": "affine",
            "affine": [[2.0, 0.0, 1.0], [0.0, 2.0, 3.0], [0.0, 0.0, 1.0]],
            "input": {"name": "yx", "axes": []},
            "output": {"name": "aligned", "axes": []},
        });
        let sequence = json!({
            "type": "sequence",
            "transformations": [{"type": "identity"}],
            "input": {"name": "yx", "axes": []},
            "output": {"name": "other", "axes": []},
        });
        let read = Transformations::from_ngff(&[affine.clone(), sequence.clone()], &dims);
        assert_eq!(read.0["aligned"], Transform::Other(affine.clone()));
        assert_eq!(read.0["other"], Transform::Other(sequence.clone()));
        assert!(read.validate(&dims).is_ok());
        assert_eq!(read.to_ngff(&dims), vec![affine, sequence]);
        // Built by a caller: anything but an object with a type is refused, and
        // writing one never panics.
        for bad in [
            json!("affine"),
            json!({"affine": []}),
            json!({"type": "affine", "output": "x"}),
        ] {
            let t = Transformations([("s".to_owned(), Transform::Other(bad.clone()))].into());
            assert!(t.validate(&dims).is_err(), "{bad}");
            let _ = t.to_ngff(&dims);
        }
    }

    #[test]
    fn ngff_round_trip_skips_the_channel_axis() {
        let dims: Vec<String> = ["c", "y", "x"].map(String::from).to_vec();
        let t = Transformations(BTreeMap::from([
            ("global".to_owned(), Transform::Scale(vec![0.5, 0.25])),
            ("aligned".to_owned(), Transform::Translation(vec![3.0, 4.0])),
        ]));
        let ngff = t.to_ngff(&dims);
        assert_eq!(ngff[1]["scale"], json!([1.0, 0.5, 0.25]));
        assert_eq!(ngff[1]["input"]["name"], "cyx");
        assert_eq!(Transformations::from_ngff(&ngff, &dims), t);
    }

    #[test]
    fn replacing_keeps_everything_else() {
        let t = Transformations(BTreeMap::from([(
            "aligned".to_owned(),
            Transform::Scale(vec![2.0, 3.0]),
        )]));
        let raster = json!({"attributes": {"ome": {"multiscales": [{
            "axes": [{"name": "c"}, {"name": "y"}, {"name": "x"}],
            "datasets": [{"path": "s0"}],
            "coordinateTransformations": []}], "omero": {}}}, "zarr_format": 3});
        let out = replaced_in_group(&raster, &t).unwrap();
        let m = &out["attributes"]["ome"]["multiscales"][0];
        assert_eq!(
            m["coordinateTransformations"][0]["scale"],
            json!([1.0, 2.0, 3.0])
        );
        assert_eq!(
            m["datasets"],
            raster["attributes"]["ome"]["multiscales"][0]["datasets"]
        );
        assert_eq!(out["attributes"]["ome"]["omero"], json!({}));

        let points = json!({"attributes": {"axes": ["x", "y"], "encoding-type": "ngff:points"}});
        let out = replaced_in_group(&points, &t).unwrap();
        assert_eq!(
            out["attributes"]["coordinateTransformations"][0]["output"]["name"],
            "aligned"
        );
        assert_eq!(out["attributes"]["encoding-type"], "ngff:points");

        let three = Transformations(BTreeMap::from([(
            "g".to_owned(),
            Transform::Scale(vec![1.0, 2.0, 3.0]),
        )]));
        assert!(replaced_in_group(&points, &three).is_err());
        assert!(replaced_in_group(&json!({"attributes": {}}), &t).is_err());
        assert!(replaced_in_group(&json!({}), &t).is_err());
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let dims: Vec<String> = ["y", "x"].map(String::from).to_vec();
        let t = Transformations(BTreeMap::from([(
            "global".to_owned(),
            Transform::Scale(vec![1.0]),
        )]));
        assert!(t.validate(&dims).is_err());
    }
}
