//! Polygons from GeoJSON: a FeatureCollection, a Feature, a bare Polygon or
//! MultiPolygon geometry, or a JSON array of those (as QuPath exports).

use serde_json::Value;

use super::shapes::{Polygon, Ring, Shape, Shapes};
use crate::error::{Error, Result};

fn invalid(message: String) -> Error {
    Error::InvalidInput(format!("GeoJSON: {message}"))
}

fn position(v: &Value, at: &str) -> Result<[f64; 2]> {
    match v.as_array().map(Vec::as_slice) {
        Some([x, y]) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => Ok([x, y]),
            _ => Err(invalid(format!(
                "{at}: a position holds something other than numbers"
            ))),
        },
        Some(p) if p.len() > 2 => Err(invalid(format!(
            "{at}: positions with {} coordinates are not supported, only x,y",
            p.len()
        ))),
        _ => Err(invalid(format!("{at}: a position must be an [x, y] array"))),
    }
}

fn polygon(v: &Value, at: &str) -> Result<Polygon> {
    let rings = v.as_array().ok_or_else(|| {
        invalid(format!(
            "{at}: polygon coordinates must be an array of rings"
        ))
    })?;
    rings
        .iter()
        .map(|ring| {
            ring.as_array()
                .ok_or_else(|| invalid(format!("{at}: a ring must be an array of positions")))?
                .iter()
                .map(|p| position(p, at))
                .collect::<Result<Ring>>()
        })
        .collect()
}

/// The shape of one geometry object.
fn geometry(g: &Value, at: &str) -> Result<Shape> {
    let kind = g.get("type").and_then(Value::as_str);
    let coordinates = || {
        g.get("coordinates")
            .ok_or_else(|| invalid(format!("{at}: the geometry has no coordinates")))
    };
    match kind {
        Some("Polygon") => Ok(Shape::Polygon(polygon(coordinates()?, at)?)),
        Some("MultiPolygon") => {
            let polygons = coordinates()?.as_array().ok_or_else(|| {
                invalid(format!("{at}: multipolygon coordinates must be an array"))
            })?;
            Ok(Shape::MultiPolygon(
                polygons
                    .iter()
                    .map(|p| polygon(p, at))
                    .collect::<Result<_>>()?,
            ))
        }
        Some(other) => Err(invalid(format!(
            "{at}: geometry type {other:?} is not supported; only Polygon and MultiPolygon (make circles from x, y, radius columns)"
        ))),
        None => Err(invalid(format!("{at}: the geometry has no type"))),
    }
}

/// The shapes of one top-level object (pushed onto `out`).
fn collect(v: &Value, at: &str, out: &mut Vec<Shape>) -> Result<()> {
    match v.get("type").and_then(Value::as_str) {
        Some("FeatureCollection") => {
            let features = v
                .get("features")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("the FeatureCollection has no features array".into()))?;
            for f in features {
                collect(f, &format!("feature {}", out.len()), out)?;
            }
            Ok(())
        }
        Some("Feature") => match v.get("geometry") {
            Some(g) if !g.is_null() => {
                out.push(geometry(g, at)?);
                Ok(())
            }
            _ => Err(invalid(format!("{at}: the feature has no geometry"))),
        },
        _ => {
            out.push(geometry(v, at)?);
            Ok(())
        }
    }
}

/// Parses GeoJSON holding Polygon and MultiPolygon features (properties are ignored)
/// into [`Shapes::Polygons`], one shape per feature, checked with [`Shapes::validate`].
pub fn parse_geojson(text: &str) -> Result<Shapes> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let mut shapes = Vec::new();
    match &value {
        Value::Array(items) => {
            for item in items {
                collect(item, &format!("feature {}", shapes.len()), &mut shapes)?;
            }
        }
        Value::Object(_) => collect(&value, "feature 0", &mut shapes)?,
        _ => return Err(invalid("expected a GeoJSON object or array".into())),
    }
    let shapes = Shapes::Polygons(shapes);
    shapes.validate().map_err(invalid)?;
    Ok(shapes)
}
