//! Pixel data types of raster elements.

use zarrs::array::{DataType, ElementOwned, data_type};

/// A raster's element data type, named as numpy and Zarr v3 name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `uint8`
    U8,
    /// `uint16`
    U16,
    /// `uint32`
    U32,
    /// `uint64`
    U64,
    /// `int8`
    I8,
    /// `int16`
    I16,
    /// `int32`
    I32,
    /// `int64`
    I64,
    /// `float32`
    F32,
    /// `float64`
    F64,
}

impl DType {
    /// Every supported type.
    pub const ALL: [DType; 10] = [
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F32,
        DType::F64,
    ];

    /// The Zarr v3 / numpy name (`"uint32"`).
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }

    /// Parses a Zarr v3 name, or a Zarr v2 / numpy type string such as `<u4` or `|u1`.
    pub fn parse(text: &str) -> Option<DType> {
        if let Some(d) = DType::ALL.into_iter().find(|d| d.name() == text) {
            return Some(d);
        }
        let code = text.strip_prefix(['<', '|', '=']).unwrap_or(text);
        Some(match code {
            "u1" => DType::U8,
            "u2" => DType::U16,
            "u4" => DType::U32,
            "u8" => DType::U64,
            "i1" => DType::I8,
            "i2" => DType::I16,
            "i4" => DType::I32,
            "i8" => DType::I64,
            "f4" => DType::F32,
            "f8" => DType::F64,
            _ => return None,
        })
    }

    /// Whether the type holds integers (labels need one).
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F32 | DType::F64)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// The zarrs data type.
    pub fn zarr(self) -> DataType {
        match self {
            DType::U8 => data_type::uint8(),
            DType::U16 => data_type::uint16(),
            DType::U32 => data_type::uint32(),
            DType::U64 => data_type::uint64(),
            DType::I8 => data_type::int8(),
            DType::I16 => data_type::int16(),
            DType::I32 => data_type::int32(),
            DType::I64 => data_type::int64(),
            DType::F32 => data_type::float32(),
            DType::F64 => data_type::float64(),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can be a raster's pixel.
pub trait Pixel: ElementOwned + Copy + Default + PartialEq + Send + Sync + 'static {
    /// The matching data type.
    const DTYPE: DType;
    /// The mean of four pixels (a 2x2 block of a pyramid level), exact for every
    /// integer type: rounded half away from zero.
    fn mean4(values: [Self; 4]) -> Self;
}

macro_rules! pixel {
    ($t:ty, $d:expr, int) => {
        impl Pixel for $t {
            const DTYPE: DType = $d;
            fn mean4(values: [Self; 4]) -> Self {
                // i128 holds the sum of four of any of these types exactly.
                let sum: i128 = values.iter().map(|&v| i128::from(v)).sum();
                let (quotient, remainder) = (sum / 4, sum % 4);
                let mean = if remainder.abs() >= 2 {
                    quotient + sum.signum()
                } else {
                    quotient
                };
                // The mean lies between the smallest and the largest value: it fits.
                Self::try_from(mean).unwrap_or_default()
            }
        }
    };
    ($t:ty, $d:expr, float) => {
        impl Pixel for $t {
            const DTYPE: DType = $d;
            fn mean4(values: [Self; 4]) -> Self {
                let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
                (sum / 4.0) as $t
            }
        }
    };
}

pixel!(u8, DType::U8, int);
pixel!(u16, DType::U16, int);
pixel!(u32, DType::U32, int);
pixel!(u64, DType::U64, int);
pixel!(i8, DType::I8, int);
pixel!(i16, DType::I16, int);
pixel!(i32, DType::I32, int);
pixel!(i64, DType::I64, int);
pixel!(f32, DType::F32, float);
pixel!(f64, DType::F64, float);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_of_four_are_exact_and_round_half_away_from_zero() {
        assert_eq!(u8::mean4([255, 255, 255, 254]), 255);
        assert_eq!(u8::mean4([0, 0, 1, 1]), 1);
        assert_eq!(u8::mean4([0, 0, 0, 1]), 0);
        assert_eq!(i8::mean4([-1, -1, 0, 0]), -1);
        assert_eq!(i8::mean4([-128, -128, -128, -128]), -128);
        // Beyond 2^53, where f64 would round the values themselves.
        let big = u64::MAX - 2;
        assert_eq!(u64::mean4([big, big, big, big + 2]), big + 1);
        assert_eq!(
            i64::mean4([i64::MIN, i64::MIN, i64::MIN, i64::MIN + 1]),
            i64::MIN
        );
        assert_eq!(f32::mean4([0.5, 1.5, 2.5, 3.5]), 2.0);
    }

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()), Some(d));
        }
        assert_eq!(DType::parse("<u4"), Some(DType::U32));
        assert_eq!(DType::parse("|u1"), Some(DType::U8));
        assert_eq!(DType::parse("complex64"), None);
    }
}
