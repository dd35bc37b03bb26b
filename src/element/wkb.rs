//! Well-known binary (WKB) for the 2-D geometries spatialdata stores: points (circle
//! centres), polygons and multipolygons. Written little-endian, as shapely writes;
//! read in either byte order.

use super::shapes::{Polygon, Ring};

/// WKB type code of a point.
const POINT: u32 = 1;
/// WKB type code of a polygon.
const POLYGON: u32 = 3;
/// WKB type code of a multipolygon.
const MULTI_POLYGON: u32 = 6;
/// EWKB flag: an SRID follows the type.
const EWKB_SRID: u32 = 0x2000_0000;

/// One decoded geometry.
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    /// A point `[x, y]`.
    Point([f64; 2]),
    /// A polygon: exterior ring, then holes.
    Polygon(Polygon),
    /// A multipolygon.
    MultiPolygon(Vec<Polygon>),
}

fn header(out: &mut Vec<u8>, kind: u32) {
    out.push(1);
    out.extend_from_slice(&kind.to_le_bytes());
}

fn count(out: &mut Vec<u8>, n: usize) {
    // Shapes::validate keeps every count far below u32::MAX.
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn polygon_body(out: &mut Vec<u8>, polygon: &[Ring]) {
    count(out, polygon.len());
    for ring in polygon {
        count(out, ring.len());
        for [x, y] in ring {
            out.extend_from_slice(&x.to_le_bytes());
            out.extend_from_slice(&y.to_le_bytes());
        }
    }
}

/// Little-endian WKB of a point.
pub fn point(x: f64, y: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(21);
    header(&mut out, POINT);
    out.extend_from_slice(&x.to_le_bytes());
    out.extend_from_slice(&y.to_le_bytes());
    out
}

/// Little-endian WKB of a polygon.
pub fn polygon(polygon: &[Ring]) -> Vec<u8> {
    let mut out = Vec::new();
    header(&mut out, POLYGON);
    polygon_body(&mut out, polygon);
    out
}

/// Little-endian WKB of a multipolygon.
pub fn multi_polygon(polygons: &[Polygon]) -> Vec<u8> {
    let mut out = Vec::new();
    header(&mut out, MULTI_POLYGON);
    count(&mut out, polygons.len());
    for p in polygons {
        header(&mut out, POLYGON);
        polygon_body(&mut out, p);
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    little: bool,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.pos + N;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or("the geometry ends early")?;
        self.pos = end;
        Ok(slice.try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take::<4>()?;
        Ok(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn f64(&mut self) -> Result<f64, String> {
        let b = self.take::<8>()?;
        Ok(if self.little {
            f64::from_le_bytes(b)
        } else {
            f64::from_be_bytes(b)
        })
    }

    /// A count of items of at least `item_bytes` each, bounded by the bytes left.
    fn count(&mut self, item_bytes: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_bytes) > self.bytes.len() - self.pos {
            return Err(format!("a count of {n} is larger than the geometry"));
        }
        Ok(n)
    }

    /// Byte order and type of the next geometry (an SRID is skipped).
    fn header(&mut self) -> Result<u32, String> {
        self.little = match self.take::<1>()?[0] {
            0 => false,
            1 => true,
            b => return Err(format!("byte order {b} is neither 0 nor 1")),
        };
        let kind = self.u32()?;
        if kind & EWKB_SRID != 0 {
            self.u32()?;
        }
        match kind & !EWKB_SRID {
            k @ (POINT | POLYGON | MULTI_POLYGON) => Ok(k),
            k => Err(format!(
                "geometry type {k} is not supported (only 2-D points, polygons and multipolygons)"
            )),
        }
    }

    fn polygon(&mut self) -> Result<Polygon, String> {
        let rings = self.count(4)?;
        (0..rings)
            .map(|_| {
                let n = self.count(16)?;
                (0..n).map(|_| Ok([self.f64()?, self.f64()?])).collect()
            })
            .collect()
    }
}

/// Decodes one WKB geometry.
pub fn decode(bytes: &[u8]) -> Result<Geometry, String> {
    let mut r = Reader {
        bytes,
        pos: 0,
        little: true,
    };
    let geometry = match r.header()? {
        POINT => Geometry::Point([r.f64()?, r.f64()?]),
        POLYGON => Geometry::Polygon(r.polygon()?),
        _ => {
            let n = r.count(9)?;
            let mut polygons = Vec::with_capacity(n);
            for _ in 0..n {
                if r.header()? != POLYGON {
                    return Err("a multipolygon holds something else than polygons".into());
                }
                polygons.push(r.polygon()?);
            }
            Geometry::MultiPolygon(polygons)
        }
    };
    if r.pos != bytes.len() {
        return Err(format!("{} bytes follow the geometry", bytes.len() - r.pos));
    }
    Ok(geometry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_shapely_bytes() {
        // shapely.to_wkb(Point(1, 2)).hex()
        assert_eq!(
            point(1.0, 2.0),
            [
                1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 240, 63, 0, 0, 0, 0, 0, 0, 0, 64
            ]
        );
        let square: Ring = vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]];
        let p = vec![square.clone()];
        assert_eq!(decode(&polygon(&p)).unwrap(), Geometry::Polygon(p.clone()));
        let m = vec![p.clone(), vec![square.clone(), square]];
        assert_eq!(
            decode(&multi_polygon(&m)).unwrap(),
            Geometry::MultiPolygon(m)
        );
    }

    #[test]
    fn malformed_input_is_refused() {
        assert!(decode(&[]).is_err());
        assert!(decode(&point(1.0, 2.0)[..20]).is_err());
        let mut huge = vec![1, 3, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).unwrap_err().contains("larger"));
        let line = [1u8, 2, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode(&line).unwrap_err().contains("not supported"));
    }
}
