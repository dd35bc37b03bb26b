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
    /// Unknown kinds are skipped (reported as `None`).
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
            if let Some(parsed) = parsed {
                out.insert(system.to_owned(), parsed);
            }
        }
        Self(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn wrong_lengths_are_refused() {
        let dims: Vec<String> = ["y", "x"].map(String::from).to_vec();
        let t = Transformations(BTreeMap::from([(
            "global".to_owned(),
            Transform::Scale(vec![1.0]),
        )]));
        assert!(t.validate(&dims).is_err());
    }
}
