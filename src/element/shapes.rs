//! Shapes elements: `shapes/<name>/zarr.json` plus one GeoParquet 1.1.0 file,
//! `shapes.parquet`, with a WKB `geometry` column. Circles are points plus a `radius`
//! column; polygons and multipolygons are stored as they are.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BinaryArray, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use serde_json::{Value, json};

use super::points::columnar::{self, PandasIndex, corrupt, invalid};
use super::transform::Transformations;
use super::wkb::{self, Geometry};
use crate::error::{Error, Result};
use crate::storage::Publisher;

pub use super::geojson::parse_geojson;

/// The parquet file inside a shapes element.
pub const SHAPES_FILE: &str = "shapes.parquet";
/// `spatialdata_attrs.version` of shapes in container format 0.2.
pub const SHAPES_VERSION: &str = "0.3";
/// The most points in one ring, and rings or polygons in one shape.
pub const MAX_PARTS: usize = 1 << 30;

/// A closed ring of `[x, y]` points: at least 4, the last equal to the first.
pub type Ring = Vec<[f64; 2]>;
/// A polygon: its exterior ring, then its holes.
pub type Polygon = Vec<Ring>;

/// One polygonal shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// One polygon.
    Polygon(Polygon),
    /// Several polygons forming one shape.
    MultiPolygon(Vec<Polygon>),
}

/// The geometries of a shapes element: all circles, or all (multi)polygons.
#[derive(Debug, Clone, PartialEq)]
pub enum Shapes {
    /// Circles by centre and radius (three columns of equal length).
    Circles {
        /// Centre x.
        x: Vec<f64>,
        /// Centre y.
        y: Vec<f64>,
        /// Radius, positive.
        radius: Vec<f64>,
    },
    /// Polygons and multipolygons.
    Polygons(Vec<Shape>),
}

/// What `info` reports about a shapes element.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapesInfo {
    /// Number of shapes.
    pub n: u64,
    /// `"circle"`, `"polygon"`, `"multipolygon"` or `"mixed"` (polygons and
    /// multipolygons).
    pub geometry: String,
    /// Column names as spatialdata lists them (`geometry` first, then `radius`, ...).
    pub columns: Vec<String>,
    /// Transformations to coordinate systems.
    pub transformations: Transformations,
}

fn check_ring(ring: &Ring, at: &str) -> Result<(), String> {
    if ring.len() < 4 {
        return Err(format!(
            "{at} has {} points; a ring needs at least 4, the last repeating the first",
            ring.len()
        ));
    }
    if ring.len() > MAX_PARTS {
        return Err(format!("{at} has more than {MAX_PARTS} points"));
    }
    if let Some(p) = ring.iter().find(|p| !p[0].is_finite() || !p[1].is_finite()) {
        return Err(format!("{at} has a point that is not finite: {p:?}"));
    }
    let (first, last) = (ring[0], ring[ring.len() - 1]);
    if first != last {
        return Err(format!(
            "{at} is not closed: it starts at {first:?} but ends at {last:?}; repeat the first point at the end"
        ));
    }
    Ok(())
}

fn check_polygon(polygon: &Polygon, at: &str) -> Result<(), String> {
    if polygon.is_empty() {
        return Err(format!("{at} has no rings"));
    }
    if polygon.len() > MAX_PARTS {
        return Err(format!("{at} has more than {MAX_PARTS} rings"));
    }
    for (i, ring) in polygon.iter().enumerate() {
        let what = if i == 0 {
            "exterior ring".to_owned()
        } else {
            format!("hole {i}")
        };
        check_ring(ring, &format!("{at}, {what},"))?;
    }
    Ok(())
}

impl Shapes {
    /// The number of shapes.
    pub fn len(&self) -> usize {
        match self {
            Shapes::Circles { x, .. } => x.len(),
            Shapes::Polygons(shapes) => shapes.len(),
        }
    }

    /// Whether there are no shapes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `"circle"`, `"polygon"`, `"multipolygon"` or `"mixed"`.
    pub fn geometry(&self) -> &'static str {
        let Shapes::Polygons(shapes) = self else {
            return "circle";
        };
        let multi = shapes
            .iter()
            .filter(|s| matches!(s, Shape::MultiPolygon(_)))
            .count();
        match multi {
            0 => "polygon",
            m if m == shapes.len() => "multipolygon",
            _ => "mixed",
        }
    }

    /// Checks the shapes: at least one; finite coordinates; positive radii; rings
    /// closed with at least 4 points; every polygon with an exterior ring.
    pub fn validate(&self) -> Result<(), String> {
        if self.is_empty() {
            return Err("there are no shapes".into());
        }
        match self {
            Shapes::Circles { x, y, radius } => {
                if x.len() != y.len() || x.len() != radius.len() {
                    return Err(format!(
                        "circles need as many x ({}), y ({}) and radius ({}) values",
                        x.len(),
                        y.len(),
                        radius.len()
                    ));
                }
                for i in 0..x.len() {
                    if !x[i].is_finite() || !y[i].is_finite() {
                        return Err(format!("circle {i} has a centre that is not finite"));
                    }
                    if !(radius[i].is_finite() && radius[i] > 0.0) {
                        return Err(format!(
                            "circle {i} has radius {}; radii must be positive and finite",
                            radius[i]
                        ));
                    }
                }
            }
            Shapes::Polygons(shapes) => {
                for (i, shape) in shapes.iter().enumerate() {
                    match shape {
                        Shape::Polygon(p) => check_polygon(p, &format!("shape {i} (polygon)"))?,
                        Shape::MultiPolygon(ps) => {
                            if ps.is_empty() {
                                return Err(format!("shape {i} (multipolygon) has no polygons"));
                            }
                            if ps.len() > MAX_PARTS {
                                return Err(format!(
                                    "shape {i} (multipolygon) has more than {MAX_PARTS} polygons"
                                ));
                            }
                            for (j, p) in ps.iter().enumerate() {
                                check_polygon(
                                    p,
                                    &format!("shape {i} (multipolygon), polygon {j}"),
                                )?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Circles from a table's numeric `x`, `y` and `radius` columns; the other columns
    /// are returned to be stored next to them (`None` when there are none).
    pub fn circles_from_batch(batch: &RecordBatch) -> Result<(Shapes, Option<RecordBatch>)> {
        let schema = batch.schema();
        let get = |name: &str| -> Result<Vec<f64>> {
            let array = batch.column_by_name(name).ok_or_else(|| {
                invalid(format!(
                    "circles need a numeric column named {name:?}; the columns are {:?}",
                    schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                ))
            })?;
            let values = columnar::to_f64(array.as_ref()).ok_or_else(|| {
                invalid(format!(
                    "circle column {name:?} must be numeric, not {}",
                    array.data_type()
                ))
            })?;
            values
                .into_iter()
                .enumerate()
                .map(|(row, v)| {
                    v.ok_or_else(|| {
                        invalid(format!(
                            "circle column {name:?} has a missing value in row {row}"
                        ))
                    })
                })
                .collect()
        };
        let shapes = Shapes::Circles {
            x: get("x")?,
            y: get("y")?,
            radius: get("radius")?,
        };
        shapes.validate().map_err(invalid)?;
        let rest: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| !["x", "y", "radius"].contains(&schema.field(i).name().as_str()))
            .collect();
        let rest = if rest.is_empty() {
            None
        } else {
            Some(batch.project(&rest).map_err(|e| invalid(e.to_string()))?)
        };
        Ok((shapes, rest))
    }
}

/// The geometry column, WKB-encoded, and the GeoParquet types and bounding box.
fn encode_geometry(shapes: &Shapes) -> (ArrayRef, Vec<&'static str>, [f64; 4]) {
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    let mut extend = |[x, y]: [f64; 2]| {
        bbox = [
            bbox[0].min(x),
            bbox[1].min(y),
            bbox[2].max(x),
            bbox[3].max(y),
        ];
    };
    let mut types = BTreeSet::new();
    let wkbs: Vec<Vec<u8>> = match shapes {
        Shapes::Circles { x, y, .. } => {
            types.insert("Point");
            x.iter()
                .zip(y)
                .map(|(&x, &y)| {
                    extend([x, y]);
                    wkb::point(x, y)
                })
                .collect()
        }
        Shapes::Polygons(list) => list
            .iter()
            .map(|shape| match shape {
                Shape::Polygon(p) => {
                    types.insert("Polygon");
                    p.iter().flatten().for_each(|&pt| extend(pt));
                    wkb::polygon(p)
                }
                Shape::MultiPolygon(ps) => {
                    types.insert("MultiPolygon");
                    ps.iter().flatten().flatten().for_each(|&pt| extend(pt));
                    wkb::multi_polygon(ps)
                }
            })
            .collect(),
    };
    let array = BinaryArray::from_iter_values(wkbs);
    (Arc::new(array), types.into_iter().collect(), bbox)
}

/// Writes a whole shapes element into the folder `dir` (empty, private to the caller;
/// it becomes `shapes/<name>`): `zarr.json` and `shapes.parquet`. `columns`, when
/// given, holds one row per shape of extra columns (numbers, booleans, strings or
/// categoricals). Everything is checked before anything is written.
pub fn write_shapes_element(
    dir: &Path,
    publisher: &Publisher,
    shapes: &Shapes,
    columns: Option<&RecordBatch>,
    transformations: &Transformations,
) -> Result<()> {
    shapes.validate().map_err(invalid)?;
    let axes = vec!["x".to_owned(), "y".to_owned()];
    columnar::check_transformations(transformations, &axes)?;
    let (geometry, types, bbox) = encode_geometry(shapes);
    let wkb_metadata = [
        ("ARROW:extension:name", "geoarrow.wkb"),
        ("ARROW:extension:metadata", "{}"),
    ];
    let mut fields =
        vec![Field::new("geometry", DataType::Binary, true).with_metadata(wkb_metadata)];
    let mut arrays = vec![geometry];
    if let Shapes::Circles { radius, .. } = shapes {
        fields.push(Field::new("radius", DataType::Float64, true));
        arrays.push(Arc::new(Float64Array::from(radius.clone())));
    }
    if let Some(extra) = columns {
        if extra.num_rows() != shapes.len() {
            return Err(invalid(format!(
                "the extra columns have {} rows for {} shapes",
                extra.num_rows(),
                shapes.len()
            )));
        }
        let schema = extra.schema();
        let mut names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        names.extend(schema.fields().iter().map(|f| f.name().as_str()));
        columnar::check_names(&names, &["__index_level_0__"])?;
        for (field, array) in schema.fields().iter().zip(extra.columns()) {
            let array = columnar::normalize(field.name(), array).map_err(invalid)?;
            fields.push(Field::new(field.name(), array.data_type().clone(), true));
            arrays.push(array);
        }
    }
    let schema = Schema::new(fields);
    let geo = json!({
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "crs": null, "geometry_types": types, "bbox": bbox}},
        "version": "1.1.0",
        "creator": {"library": "spatialzarr", "version": env!("CARGO_PKG_VERSION")},
    });
    let pandas = columnar::pandas_metadata(&schema, &arrays, PandasIndex::Range(shapes.len()));
    let bytes = columnar::encode_parquet(
        schema,
        arrays,
        vec![("geo".into(), geo.to_string()), ("pandas".into(), pandas)],
    )?;
    let doc = json!({
        "attributes": {
            "encoding-type": "ngff:shapes",
            "axes": axes,
            "coordinateTransformations": transformations.to_ngff(&axes),
            "spatialdata_attrs": {"version": SHAPES_VERSION},
        },
        "zarr_format": 3,
        "node_type": "group",
    });
    publisher.write_deferred(&dir.join(SHAPES_FILE), &bytes)?;
    publisher.write_deferred(
        &dir.join("zarr.json"),
        &serde_json::to_vec_pretty(&doc).expect("json"),
    )?;
    // Both files in place together (their folders are fsynced by the caller's sync).
    publisher.flush()
}

/// The `geo` metadata's primary column and its geometry types.
fn geo_metadata(path: &Path, schema: &Schema) -> Result<(String, Vec<String>)> {
    let geo: Value = schema
        .metadata()
        .get("geo")
        .and_then(|g| serde_json::from_str(g).ok())
        .ok_or_else(|| corrupt(path, "no valid GeoParquet `geo` metadata".into()))?;
    let primary = geo
        .get("primary_column")
        .and_then(Value::as_str)
        .unwrap_or("geometry")
        .to_owned();
    let column = geo.pointer(&format!(
        "/columns/{}",
        primary.replace('~', "~0").replace('/', "~1")
    ));
    let encoding = column
        .and_then(|c| c.get("encoding"))
        .and_then(Value::as_str);
    if encoding != Some("WKB") {
        return Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            what: format!("geometry encoding {encoding:?} (only WKB is read)"),
        });
    }
    if schema.field_with_name(&primary).is_err() {
        return Err(corrupt(path, format!("no geometry column {primary:?}")));
    }
    let types = column
        .and_then(|c| c.get("geometry_types"))
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((primary, types))
}

/// Decodes every geometry of the table's geometry column `column`.
fn decode_column(path: &Path, batch: &RecordBatch, column: &str) -> Result<Vec<Geometry>> {
    let array = batch
        .column_by_name(column)
        .expect("checked by geo_metadata");
    let values: Vec<Option<&[u8]>> = match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => array.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => array.as_binary_view().iter().collect(),
        other => {
            return Err(corrupt(
                path,
                format!("the geometry column is {other}, not binary"),
            ));
        }
    };
    values
        .into_iter()
        .enumerate()
        .map(|(row, v)| {
            let bytes = v.ok_or_else(|| corrupt(path, format!("row {row} has no geometry")))?;
            wkb::decode(bytes).map_err(|e| corrupt(path, format!("row {row}: {e}")))
        })
        .collect()
}

fn shapes_attributes(element_dir: &Path) -> Result<Value> {
    columnar::element_attributes(element_dir, "ngff:shapes")
}

/// Describes the shapes element in `element_dir`. The geometry kind comes from the
/// GeoParquet metadata (the geometries are decoded only when it does not say).
pub fn shapes_info(element_dir: &Path) -> Result<ShapesInfo> {
    let attrs = shapes_attributes(element_dir)?;
    let path = element_dir.join(SHAPES_FILE);
    let reader = columnar::open_parquet(&path)?;
    let schema = reader.schema().clone();
    let n = reader.metadata().file_metadata().num_rows().max(0) as u64;
    let (primary, types) = geo_metadata(&path, &schema)?;
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let geometry = match types.as_slice() {
        ["Point"] => "circle".to_owned(),
        ["Polygon"] => "polygon".to_owned(),
        ["MultiPolygon"] => "multipolygon".to_owned(),
        ["MultiPolygon", "Polygon"] => "mixed".to_owned(),
        _ => {
            let batch = columnar::read_parquet(&path)?;
            to_shapes(&path, &batch, &primary)?.geometry().to_owned()
        }
    };
    Ok(ShapesInfo {
        n,
        geometry,
        columns: columnar::data_columns(&schema),
        transformations: columnar::transformations_of(&attrs, &columnar::axes_of(&attrs)),
    })
}

/// The shapes of a decoded table.
fn to_shapes(path: &Path, batch: &RecordBatch, primary: &str) -> Result<Shapes> {
    let geometries = decode_column(path, batch, primary)?;
    if geometries.iter().all(|g| matches!(g, Geometry::Point(_))) && !geometries.is_empty() {
        let radius = batch
            .column_by_name("radius")
            .and_then(|r| columnar::to_f64(r.as_ref()))
            .ok_or_else(|| corrupt(path, "circles need a numeric `radius` column".into()))?;
        let (x, y) = geometries
            .iter()
            .map(|g| match g {
                Geometry::Point([x, y]) => (*x, *y),
                _ => unreachable!("all points"),
            })
            .unzip();
        let radius = radius.into_iter().map(|r| r.unwrap_or(f64::NAN)).collect();
        return Ok(Shapes::Circles { x, y, radius });
    }
    let mut shapes = Vec::with_capacity(geometries.len());
    for (row, g) in geometries.into_iter().enumerate() {
        shapes.push(match g {
            Geometry::Polygon(p) => Shape::Polygon(p),
            Geometry::MultiPolygon(ps) => Shape::MultiPolygon(ps),
            Geometry::Point(_) => {
                return Err(corrupt(
                    path,
                    format!("row {row} is a point among polygons"),
                ));
            }
        });
    }
    Ok(Shapes::Polygons(shapes))
}

/// Reads the geometries of the shapes element in `element_dir`.
pub fn read_shapes(element_dir: &Path) -> Result<Shapes> {
    shapes_attributes(element_dir)?;
    let path = element_dir.join(SHAPES_FILE);
    let batch = columnar::read_parquet(&path)?;
    let (primary, _) = geo_metadata(&path, &batch.schema())?;
    to_shapes(&path, &batch, &primary)
}

/// Reads the other columns of the shapes element in `element_dir` (all but the
/// geometry, a circle's `radius`, and stored index columns).
pub fn read_shape_columns(element_dir: &Path) -> Result<RecordBatch> {
    shapes_attributes(element_dir)?;
    let path = element_dir.join(SHAPES_FILE);
    let batch = columnar::read_parquet(&path)?;
    let schema = batch.schema();
    let (primary, _) = geo_metadata(&path, &schema)?;
    let circles = matches!(to_shapes(&path, &batch, &primary)?, Shapes::Circles { .. });
    let keep: Vec<usize> = columnar::data_columns(&schema)
        .iter()
        .filter(|c| **c != primary && !(circles && *c == "radius"))
        .map(|c| schema.index_of(c).expect("listed"))
        .collect();
    let projected = batch
        .project(&keep)
        .map_err(|e| corrupt(&path, e.to_string()))?;
    columnar::concat_batches(&[projected]).map_err(|e| corrupt(&path, e))
}

/// Checks the shapes element in `element_dir`: metadata and GeoParquet footer are
/// readable; with `deep`, every geometry decodes and passes [`Shapes::validate`].
pub fn check_shapes(element_dir: &Path, deep: bool) -> Result<(), String> {
    let info = shapes_info(element_dir).map_err(|e| e.to_string())?;
    if info.geometry == "circle" && !info.columns.iter().any(|c| c == "radius") {
        return Err("circles have no radius column".into());
    }
    if deep {
        let shapes = read_shapes(element_dir).map_err(|e| e.to_string())?;
        if shapes.len() as u64 != info.n {
            return Err(format!(
                "{} shapes decoded, {} recorded",
                shapes.len(),
                info.n
            ));
        }
        shapes.validate()?;
    }
    Ok(())
}
