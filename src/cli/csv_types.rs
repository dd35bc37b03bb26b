//! The column types arrow-csv infers for a CSV file, found without compiling its
//! patterns.
//!
//! arrow-csv classifies every field with a set of Unicode-aware regular expressions
//! whose compilation costs milliseconds in each process, more than the rest of a
//! small append's parsing. On ASCII fields the same classification needs only three
//! ASCII patterns, compiled in microseconds. [`infer_types`] applies them and gives
//! the types arrow-csv would give; for a field that is not ASCII (or a file it cannot
//! read) it answers `None`, and the caller asks arrow-csv itself.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use arrow_array::cast::AsArray;
use arrow_csv::ReaderBuilder;
use arrow_csv::reader::Format;
use arrow_schema::{DataType, Field, Schema};
use regex::bytes::RegexSet;

/// arrow-csv's boolean, integer and decimal patterns, restricted to ASCII (on ASCII
/// input they match exactly what arrow-csv's match), in its order.
static PATTERNS: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"(?i-u)^(true|false)$",
        r"(?-u)^[+-]?[0-9]+$",
        r"(?-u)^[+-]?(([0-9]*\.[0-9]+|[0-9]+\.[0-9]*)([eE][-+]?[0-9]+)?|[0-9]+([eE][-+]?[0-9]+))$",
    ])
    .expect("valid patterns")
});

/// The kinds of values seen in a column, as bits: arrow-csv's packing for boolean,
/// integer and float; any other value (text, a date or a time) makes the column text.
const BOOL: u16 = 1;
const INT: u16 = 1 << 1;
const FLOAT: u16 = 1 << 2;
const TEXT: u16 = 1 << 8;

/// The kind of one non-empty ASCII field, as arrow-csv 60 decides it.
fn kind_of(value: &str) -> u16 {
    if value.starts_with('"') {
        return TEXT;
    }
    match PATTERNS.matches(value.as_bytes()).into_iter().next() {
        Some(0) => BOOL,
        // Integers that overflow 64 bits are text.
        Some(1) if value.len() >= 19 && value.parse::<i64>().is_err() => TEXT,
        Some(1) => INT,
        Some(_) => FLOAT,
        None if matches!(value, "NaN" | "nan" | "inf" | "-inf") => FLOAT,
        None => TEXT,
    }
}

/// The type of a column whose values are of the kinds `packed`: what arrow-csv infers,
/// except that dates and times (which callers read as text) are text.
fn type_of(packed: u16) -> DataType {
    match packed {
        0 => DataType::Null,
        BOOL => DataType::Boolean,
        INT => DataType::Int64,
        p if p == FLOAT || p == INT | FLOAT => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// The type of each column of the CSV file at `path` (header row first, names
/// `names`) and its number of rows, as arrow-csv's inference gives them (dates and
/// times as text). `None` when a field is not ASCII or the file cannot be read this
/// way: then only arrow-csv's own inference says what it infers.
pub(super) fn infer_types(
    path: &Path,
    format: &Format,
    names: &[&String],
) -> Option<(Vec<DataType>, usize)> {
    let fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(n.as_str(), DataType::Utf8, true))
        .collect();
    let reader = ReaderBuilder::new(Arc::new(Schema::new(fields)))
        .with_format(format.clone())
        .build(File::open(path).ok()?)
        .ok()?;
    let mut packed = vec![0u16; names.len()];
    let mut rows = 0;
    for batch in reader {
        let batch = batch.ok()?;
        rows += batch.num_rows();
        for (column, bits) in batch.columns().iter().zip(&mut packed) {
            for value in column.as_string::<i32>().iter().flatten() {
                if !value.is_ascii() {
                    return None;
                }
                *bits |= kind_of(value);
            }
        }
    }
    Some((packed.into_iter().map(type_of).collect(), rows))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use arrow_csv::reader::Format;

    use super::infer_types;

    /// The types arrow-csv infers for `csv`, dates and times read as text.
    fn arrow_types(path: &std::path::Path) -> (Vec<arrow_schema::DataType>, usize) {
        let (schema, rows) = Format::default()
            .with_header(true)
            .infer_schema(std::fs::File::open(path).unwrap(), None)
            .unwrap();
        let types = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                t @ (arrow_schema::DataType::Null
                | arrow_schema::DataType::Boolean
                | arrow_schema::DataType::Int64
                | arrow_schema::DataType::Float64) => t.clone(),
                _ => arrow_schema::DataType::Utf8,
            })
            .collect();
        (types, rows)
    }

    #[test]
    fn ascii_columns_get_the_types_arrow_csv_infers() {
        // One column per case; each row a value of it ("" = missing).
        let columns: Vec<(&str, Vec<&str>)> = vec![
            ("ints", vec!["1", "-2", "+3", "0004"]),
            ("floats", vec!["1.5", ".5", "5.", "1e5"]),
            ("mixed_numbers", vec!["1", "2.5", "-3E+2", "+2.5e-2"]),
            ("specials", vec!["NaN", "inf", "-inf", "nan"]),
            ("bools", vec!["true", "FALSE", "True", ""]),
            ("bool_and_int", vec!["true", "1", "", ""]),
            ("empty", vec!["", "", "", ""]),
            (
                "big_ints",
                vec!["9223372036854775807", "9223372036854775808", "", ""],
            ),
            ("dates", vec!["2020-01-01", "2020-01-02", "", ""]),
            (
                "times",
                vec!["2020-01-01T10:00:00", "2020-01-01 10:00:00.5", "", ""],
            ),
            ("text", vec!["a", "1", "", ""]),
            ("odd_numbers", vec!["Infinity", "1_000", "0x10", "+inf"]),
            ("quoted", vec!["\"\"\"1\"\"\"", "2", "", ""]),
            ("spaces", vec![" 1", "2 ", "", ""]),
            ("lone_e", vec!["e5", "1e", "", ""]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        let mut file = std::fs::File::create(&path).unwrap();
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        writeln!(file, "{}", names.join(",")).unwrap();
        for row in 0..4 {
            let values: Vec<&str> = columns.iter().map(|(_, v)| v[row]).collect();
            writeln!(file, "{}", values.join(",")).unwrap();
        }
        drop(file);
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let refs: Vec<&String> = names.iter().collect();
        let format = Format::default().with_header(true);
        let ours = infer_types(&path, &format, &refs).expect("ASCII file");
        let theirs = arrow_types(&path);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(ours.0[i], theirs.0[i], "column {name}");
        }
        assert_eq!(ours.1, theirs.1);
        // The cases cover every type the callers distinguish.
        for t in [
            arrow_schema::DataType::Null,
            arrow_schema::DataType::Boolean,
            arrow_schema::DataType::Int64,
            arrow_schema::DataType::Float64,
            arrow_schema::DataType::Utf8,
        ] {
            assert!(ours.0.contains(&t), "no column inferred as {t}");
        }
    }

    #[test]
    fn a_field_beyond_ascii_is_left_to_arrow_csv() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        // Arabic-Indic digits: arrow-csv's Unicode patterns call them an integer.
        std::fs::write(&path, "a,b\n1,\u{661}\u{662}\n").unwrap();
        let names = ["a".to_string(), "b".to_string()];
        let refs: Vec<&String> = names.iter().collect();
        let format = Format::default().with_header(true);
        assert_eq!(infer_types(&path, &format, &refs), None);
    }
}
