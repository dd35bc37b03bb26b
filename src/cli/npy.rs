//! Reading `.npy` files whose pixel type is known only from the file itself.
//!
//! The header is parsed here, minimally, to find the data type and to check that
//! the file holds exactly the data its header describes; `ndarray-npy` then reads
//! the array as that type.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use anyhow::{Context, bail};
use ndarray::{ArrayD, ArrayViewD};
use ndarray_npy::{ReadNpyExt, ReadableElement};
use spatialzarr::{CommitInfo, DType, Dataset, ElementKind, Pixel, RasterOptions, StagedElement};

/// The magic bytes every `.npy` file starts with.
const MAGIC: &[u8] = b"\x93NUMPY";

/// The longest header accepted, in bytes (numpy's own are a few hundred).
const MAX_HEADER_LEN: usize = 1 << 20;

/// The pixel types accepted, as numpy names them in a little-endian file.
const ACCEPTED: &str = "uint8, uint16, uint32, uint64, int8, int16, int32, int64, float32, float64";

/// What a `.npy` header says about the array that follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The numpy type descriptor, e.g. `<u4`.
    pub descr: String,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<u64>,
    /// Where the data starts in the file.
    pub data_offset: u64,
}

/// A whole array read from a `.npy` file, in its own pixel type.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyArray {
    /// `uint8` pixels.
    U8(ArrayD<u8>),
    /// `uint16` pixels.
    U16(ArrayD<u16>),
    /// `uint32` pixels.
    U32(ArrayD<u32>),
    /// `uint64` pixels.
    U64(ArrayD<u64>),
    /// `int8` pixels.
    I8(ArrayD<i8>),
    /// `int16` pixels.
    I16(ArrayD<i16>),
    /// `int32` pixels.
    I32(ArrayD<i32>),
    /// `int64` pixels.
    I64(ArrayD<i64>),
    /// `float32` pixels.
    F32(ArrayD<f32>),
    /// `float64` pixels.
    F64(ArrayD<f64>),
}

/// Evaluates `$body` with `$a` bound to the typed array inside `$array`.
macro_rules! with_array {
    ($array:expr, $a:ident => $body:expr) => {
        match $array {
            NpyArray::U8($a) => $body,
            NpyArray::U16($a) => $body,
            NpyArray::U32($a) => $body,
            NpyArray::U64($a) => $body,
            NpyArray::I8($a) => $body,
            NpyArray::I16($a) => $body,
            NpyArray::I32($a) => $body,
            NpyArray::I64($a) => $body,
            NpyArray::F32($a) => $body,
            NpyArray::F64($a) => $body,
        }
    };
}

impl NpyArray {
    /// The pixel type.
    pub fn dtype(&self) -> DType {
        fn of<T: Pixel>(_: &ArrayD<T>) -> DType {
            T::DTYPE
        }
        with_array!(self, a => of(a))
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        with_array!(self, a => a.shape())
    }

    /// Adds the array to `dataset` as an image or labels element named `name`.
    pub fn add_to(
        &self,
        dataset: &Dataset,
        kind: ElementKind,
        name: &str,
        options: &RasterOptions,
        overwrite: bool,
    ) -> spatialzarr::Result<CommitInfo> {
        fn add<T: Pixel>(
            dataset: &Dataset,
            kind: ElementKind,
            name: &str,
            data: ArrayViewD<'_, T>,
            options: &RasterOptions,
            overwrite: bool,
        ) -> spatialzarr::Result<CommitInfo> {
            dataset.add_raster(kind, name, data, options, overwrite)
        }
        with_array!(self, a => add(dataset, kind, name, a.view(), options, overwrite))
    }
}

impl NpyArray {
    /// Writes the array as an image or labels element named `name` to a staging
    /// folder of `dataset`, without the lock, for a transaction to add.
    pub fn stage(
        &self,
        dataset: &Dataset,
        kind: ElementKind,
        name: &str,
        options: &RasterOptions,
    ) -> spatialzarr::Result<StagedElement> {
        with_array!(self, a => dataset.stage_raster(kind, name, a.view(), options))
    }
}

/// Reads the whole `.npy` file at `path`, in the pixel type its header names.
/// Refuses, naming the file and what was found: a file that is not `.npy`, a data
/// type other than the ten pixel types (or big-endian), and a file holding less or
/// more data than its header describes.
pub fn read(path: &Path) -> anyhow::Result<NpyArray> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("cannot read {shown}"))?
        .len();
    let mut reader = BufReader::new(file);
    let header =
        read_header(&mut reader).with_context(|| format!("{shown} is not a valid .npy file"))?;
    let dtype = dtype_of(&header.descr).map_err(|why| anyhow::anyhow!("{shown} {why}"))?;
    check_length(&header, dtype, file_len).map_err(|why| anyhow::anyhow!("{shown} {why}"))?;
    reader
        .rewind()
        .with_context(|| format!("cannot read {shown}"))?;
    let array = match dtype {
        DType::U8 => NpyArray::U8(read_as(reader, path)?),
        DType::U16 => NpyArray::U16(read_as(reader, path)?),
        DType::U32 => NpyArray::U32(read_as(reader, path)?),
        DType::U64 => NpyArray::U64(read_as(reader, path)?),
        DType::I8 => NpyArray::I8(read_as(reader, path)?),
        DType::I16 => NpyArray::I16(read_as(reader, path)?),
        DType::I32 => NpyArray::I32(read_as(reader, path)?),
        DType::I64 => NpyArray::I64(read_as(reader, path)?),
        DType::F32 => NpyArray::F32(read_as(reader, path)?),
        DType::F64 => NpyArray::F64(read_as(reader, path)?),
    };
    Ok(array)
}

/// Reads the array (header included) from `reader` as pixels of type `T`.
fn read_as<T: ReadableElement, R: Read>(reader: R, path: &Path) -> anyhow::Result<ArrayD<T>> {
    ArrayD::<T>::read_npy(reader).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads and parses the header at the start of `reader`.
pub fn read_header(reader: &mut impl Read) -> anyhow::Result<NpyHeader> {
    let mut start = [0u8; 8];
    reader
        .read_exact(&mut start)
        .context("it is shorter than a .npy header")?;
    if &start[..6] != MAGIC {
        bail!("it does not start with the .npy magic bytes \\x93NUMPY");
    }
    let (major, minor) = (start[6], start[7]);
    let len_bytes = match major {
        1 => 2,
        2 | 3 => 4,
        _ => bail!("its .npy format version {major}.{minor} is not supported (1.0 to 3.0 are)"),
    };
    let mut len = [0u8; 4];
    reader
        .read_exact(&mut len[..len_bytes])
        .context("its header is truncated")?;
    let header_len = u32::from_le_bytes(len) as usize;
    if header_len > MAX_HEADER_LEN {
        bail!("its header claims {header_len} bytes, more than the {MAX_HEADER_LEN} accepted");
    }
    let mut text = vec![0u8; header_len];
    reader
        .read_exact(&mut text)
        .context("its header is truncated")?;
    let text = std::str::from_utf8(&text).context("its header is not text")?;
    let mut header = parse_header_text(text)?;
    header.data_offset = (8 + len_bytes + header_len) as u64;
    Ok(header)
}

/// Parses the header's Python dictionary literal, e.g.
/// `{'descr': '<u4', 'fortran_order': False, 'shape': (64, 64), }`.
fn parse_header_text(text: &str) -> anyhow::Result<NpyHeader> {
    let dict = text.trim();
    if !dict.starts_with('{') || !dict.ends_with('}') {
        bail!("its header is not a dictionary");
    }
    let descr = match field(dict, "descr")? {
        rest if rest.starts_with(['\'', '"']) => {
            let quote = rest.chars().next().expect("not empty");
            let body = &rest[1..];
            let end = body
                .find(quote)
                .context("its header's descr is unterminated")?;
            body[..end].to_owned()
        }
        rest if rest.starts_with('[') => "structured (record) data type".to_owned(),
        _ => bail!("its header's descr is not a string"),
    };
    let fortran_order = match field(dict, "fortran_order")? {
        rest if rest.starts_with("True") => true,
        rest if rest.starts_with("False") => false,
        _ => bail!("its header's fortran_order is not True or False"),
    };
    let shape_text = field(dict, "shape")?
        .strip_prefix('(')
        .and_then(|rest| rest.split_once(')'))
        .map(|(inside, _)| inside)
        .context("its header's shape is not a tuple")?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("its header's shape ({shape_text}) is not a tuple of sizes"))?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
        data_offset: 0,
    })
}

/// The text after `'key':` in the header dictionary.
fn field<'a>(dict: &'a str, key: &str) -> anyhow::Result<&'a str> {
    let at = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|quoted| dict.find(quoted.as_str()).map(|i| i + quoted.len()))
        .with_context(|| format!("its header has no {key:?} entry"))?;
    dict[at..]
        .trim_start()
        .strip_prefix(':')
        .map(str::trim_start)
        .with_context(|| format!("its header's {key:?} entry has no value"))
}

/// The pixel type of numpy type descriptor `descr`, or why it is refused (a phrase
/// to follow the file name).
pub fn dtype_of(descr: &str) -> Result<DType, String> {
    let accepted = match descr {
        "|u1" | "u1" => Some(DType::U8),
        "|i1" | "i1" => Some(DType::I8),
        "<u2" => Some(DType::U16),
        "<u4" => Some(DType::U32),
        "<u8" => Some(DType::U64),
        "<i2" => Some(DType::I16),
        "<i4" => Some(DType::I32),
        "<i8" => Some(DType::I64),
        "<f4" => Some(DType::F32),
        "<f8" => Some(DType::F64),
        _ => None,
    };
    if let Some(dtype) = accepted {
        return Ok(dtype);
    }
    let code = descr.trim_start_matches(['<', '>', '|', '=']);
    if descr.starts_with('>')
        && let Some(dtype) = DType::parse(code)
    {
        return Err(format!(
            "holds big-endian {dtype} ('{descr}'), which is not supported: save it little-endian (numpy: arr.astype('<{code}'))"
        ));
    }
    let what = match code.chars().next() {
        Some('b') if code == "b1" => "bool",
        Some('?') => "bool",
        Some('f') => "a float type other than float32/float64",
        Some('c') => "complex numbers",
        Some('O') => "Python objects",
        Some('U' | 'S' | 'a') => "strings",
        Some('M' | 'm') => "dates or times",
        Some('V') => "raw bytes (void)",
        _ => "an unsupported data type",
    };
    Err(format!(
        "holds {what} ('{descr}'), which cannot be stored: use one of {ACCEPTED}"
    ))
}

/// Checks that the file is exactly as long as the header says it must be.
fn check_length(header: &NpyHeader, dtype: DType, file_len: u64) -> Result<(), String> {
    let data_len = header
        .shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| format!("has an impossibly large shape {:?}", header.shape))?;
    let actual = file_len.saturating_sub(header.data_offset);
    if actual < data_len {
        return Err(format!(
            "is truncated: its header describes a {dtype} array of shape {:?} ({data_len} bytes of data), but the file holds only {actual} bytes of data",
            header.shape
        ));
    }
    if actual > data_len {
        return Err(format!(
            "has {} extra bytes after the {dtype} array of shape {:?} its header describes",
            actual - data_len,
            header.shape
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, IxDyn};
    use ndarray_npy::write_npy;

    fn error_of(path: &Path) -> String {
        format!("{:#}", read(path).unwrap_err())
    }

    #[test]
    fn every_pixel_type_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        macro_rules! round_trip {
            ($t:ty, $variant:ident) => {
                let a = ArrayD::<$t>::from_shape_fn(IxDyn(&[3, 5]), |i| (i[0] * 5 + i[1]) as $t);
                write_npy(&path, &a).unwrap();
                assert_eq!(read(&path).unwrap(), NpyArray::$variant(a.clone()));
                assert_eq!(read(&path).unwrap().dtype(), <$t as Pixel>::DTYPE);
            };
        }
        round_trip!(u8, U8);
        round_trip!(u16, U16);
        round_trip!(u32, U32);
        round_trip!(u64, U64);
        round_trip!(i8, I8);
        round_trip!(i16, I16);
        round_trip!(i32, I32);
        round_trip!(i64, I64);
        round_trip!(f32, F32);
        round_trip!(f64, F64);
    }

    #[test]
    fn fortran_order_is_read_in_logical_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        let a = Array2::<u32>::from_shape_fn((3, 4), |(y, x)| (y * 4 + x) as u32);
        write_npy(&path, &a.t()).unwrap();
        let header = read_header(&mut File::open(&path).unwrap()).unwrap();
        assert!(header.fortran_order);
        assert_eq!(header.shape, [4, 3]);
        let NpyArray::U32(read_back) = read(&path).unwrap() else {
            panic!("not u32")
        };
        assert_eq!(read_back, a.t().into_dyn());
    }

    #[test]
    fn header_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.npy");
        write_npy(&path, &ArrayD::<i64>::zeros(IxDyn(&[2, 3, 4]))).unwrap();
        let header = read_header(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(header.descr, "<i8");
        assert!(!header.fortran_order);
        assert_eq!(header.shape, [2, 3, 4]);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            header.data_offset + 2 * 3 * 4 * 8
        );
        let text = "{\"descr\": \"|u1\", \"fortran_order\": False, \"shape\": (7,), }";
        let parsed = parse_header_text(text).unwrap();
        assert_eq!((parsed.descr.as_str(), parsed.shape), ("|u1", vec![7]));
        assert_eq!(
            parse_header_text("{'descr': '<f8', 'fortran_order': True, 'shape': ()}")
                .unwrap()
                .shape,
            Vec::<u64>::new()
        );
        assert!(parse_header_text("{'descr': '<f8', 'shape': ()}").is_err());
        assert!(parse_header_text("{'descr': '<f8', 'fortran_order': 1, 'shape': ()}").is_err());
        assert!(
            parse_header_text("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,)}").is_err()
        );
    }

    #[test]
    fn unsupported_types_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.npy");
        write_npy(&path, &ArrayD::<bool>::from_elem(IxDyn(&[2, 2]), true)).unwrap();
        let error = error_of(&path);
        assert!(error.contains("b.npy") && error.contains("bool"), "{error}");
        for (descr, word) in [
            (">u4", "big-endian uint32"),
            ("<c8", "complex"),
            ("|O", "objects"),
            ("<f2", "float"),
            ("<U5", "strings"),
            ("structured (record) data type", "unsupported"),
        ] {
            let why = dtype_of(descr).unwrap_err();
            assert!(why.contains(word) && why.contains(descr), "{descr}: {why}");
        }
    }

    #[test]
    fn big_endian_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("be.npy");
        write_npy(&path, &ArrayD::<u32>::zeros(IxDyn(&[2, 2]))).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(3).position(|w| w == b"<u4").unwrap();
        bytes[at] = b'>';
        std::fs::write(&path, bytes).unwrap();
        let error = error_of(&path);
        assert!(
            error.contains("be.npy") && error.contains("big-endian"),
            "{error}"
        );
    }

    #[test]
    fn broken_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.npy");
        assert!(error_of(&missing).contains("cannot open"));
        let junk = dir.path().join("junk.npy");
        std::fs::write(&junk, b"hello, this is not an array").unwrap();
        assert!(error_of(&junk).contains("magic"), "{}", error_of(&junk));
        std::fs::write(&junk, b"\x93NUM").unwrap();
        assert!(error_of(&junk).contains("shorter"), "{}", error_of(&junk));
        let path = dir.path().join("t.npy");
        write_npy(&path, &ArrayD::<u16>::zeros(IxDyn(&[4, 4]))).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let error = error_of(&path);
        assert!(
            error.contains("t.npy") && error.contains("truncated"),
            "{error}"
        );
        bytes.extend_from_slice(&[0; 5]);
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            error_of(&path).contains("2 extra bytes"),
            "{}",
            error_of(&path)
        );
        bytes.truncate(20);
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            error_of(&path).contains("header is truncated"),
            "{}",
            error_of(&path)
        );
        let mut huge = b"\x93NUMPY\x01\x00".to_vec();
        let dict =
            "{'descr': '<u8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n";
        huge.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        huge.extend_from_slice(dict.as_bytes());
        std::fs::write(&path, &huge).unwrap();
        assert!(error_of(&path).contains("large"), "{}", error_of(&path));
    }

    #[test]
    fn shape_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npy");
        write_npy(&path, &ArrayD::<f32>::zeros(IxDyn(&[2, 3, 5]))).unwrap();
        assert_eq!(read(&path).unwrap().shape(), &[2, 3, 5]);
    }
}
