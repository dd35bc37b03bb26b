//! The digest an idempotency record keeps of the rows its append committed, so that a
//! key sent again with other rows is refused instead of silently ignored
//! (`spec/commit-protocol.md` §9).
//!
//! The digest is the SHA-256 of a canonical encoding that does not depend on how the
//! rows were read: columns are taken in name order, and a number is encoded by its
//! value, whatever its Arrow type (`1`, `1u8` and `1.0` are the same value), so that a
//! retry reading the same file with the table's column types gives the same digest.

use arrow_array::{Array, RecordBatch};
use sha2::{Digest, Sha256};

use super::XRows;
use super::columns::Values;

/// Prefix of a digest as the records store it.
pub const DIGEST_PREFIX: &str = "sha256:";

/// The digest of table rows: obs columns and X rows.
pub fn rows_digest(obs: &RecordBatch, x: Option<&XRows>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"spatialzarr rows v1\0");
    hash_batch(&mut hasher, obs);
    match x {
        None => hasher.update([0u8]),
        Some(XRows::Dense(values)) => {
            hasher.update([1u8]);
            hash_floats(&mut hasher, values);
        }
        Some(XRows::Csr {
            indptr,
            indices,
            data,
        }) => {
            hasher.update([2u8]);
            for ints in [indptr, indices] {
                hasher.update((ints.len() as u64).to_le_bytes());
                for v in ints {
                    hash_integer(&mut hasher, i128::from(*v));
                }
            }
            hash_floats(&mut hasher, data);
        }
    }
    finish(hasher)
}

/// The digest of points (every column of the batch).
pub fn points_digest(batch: &RecordBatch) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"spatialzarr points v1\0");
    hash_batch(&mut hasher, batch);
    finish(hasher)
}

fn finish(hasher: Sha256) -> String {
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{DIGEST_PREFIX}{hex}")
}

/// The rows, then every column in name order: its name and its values.
fn hash_batch(hasher: &mut Sha256, batch: &RecordBatch) {
    hasher.update((batch.num_rows() as u64).to_le_bytes());
    let schema = batch.schema();
    let mut order: Vec<usize> = (0..batch.num_columns()).collect();
    order.sort_by(|a, b| schema.field(*a).name().cmp(schema.field(*b).name()));
    for i in order {
        hash_bytes(hasher, schema.field(i).name().as_bytes());
        let column = batch.column(i);
        match Values::from_arrow(schema.field(i).name(), column) {
            Ok(values) => hash_values(hasher, &values),
            // Types tables never hold (points may): Arrow's own rendering of the data.
            Err(_) => {
                hasher.update([9u8]);
                hash_bytes(hasher, format!("{:?}", column.to_data()).as_bytes());
            }
        }
    }
}

fn hash_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// An integer value (also a float holding one).
fn hash_integer(hasher: &mut Sha256, v: i128) {
    hasher.update([1u8]);
    hasher.update(v.to_le_bytes());
}

/// A float: as an integer when it holds one, else its bits (one NaN for all).
fn hash_float(hasher: &mut Sha256, v: f64) {
    // Every float in this range with no fraction converts to i128 exactly.
    if v.fract() == 0.0 && v.abs() < 1e38 {
        hash_integer(hasher, v as i128);
    } else {
        let bits = if v.is_nan() {
            f64::NAN.to_bits()
        } else {
            v.to_bits()
        };
        hasher.update([2u8]);
        hasher.update(bits.to_le_bytes());
    }
}

fn hash_floats(hasher: &mut Sha256, values: &[f64]) {
    hasher.update((values.len() as u64).to_le_bytes());
    for v in values {
        hash_float(hasher, *v);
    }
}

fn hash_values(hasher: &mut Sha256, values: &Values) {
    fn each<T>(hasher: &mut Sha256, values: &[Option<T>], f: impl Fn(&mut Sha256, &T)) {
        for value in values {
            match value {
                None => hasher.update([0u8]),
                Some(v) => f(hasher, v),
            }
        }
    }
    match values {
        Values::Int(v) => each(hasher, v, |h, x| hash_integer(h, i128::from(*x))),
        Values::UInt(v) => each(hasher, v, |h, x| hash_integer(h, i128::from(*x))),
        Values::Float(v) => each(hasher, v, |h, x| hash_float(h, *x)),
        Values::Bool(v) => each(hasher, v, |h, x| {
            h.update([3u8, u8::from(*x)]);
        }),
        Values::Str(v) => each(hasher, v, |h, x| {
            h.update([4u8]);
            hash_bytes(h, x.as_bytes());
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray, UInt8Array};

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn the_digest_follows_values_not_their_types_or_column_order() {
        let a = batch(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["a", "b"]))),
        ]);
        let b = batch(vec![
            (
                "name",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
            ("id", Arc::new(UInt8Array::from(vec![1, 2]))),
        ]);
        let c = batch(vec![
            (
                "id",
                Arc::new(Float64Array::from(vec![1.0, 2.0])) as ArrayRef,
            ),
            ("name", Arc::new(StringArray::from(vec!["a", "b"]))),
        ]);
        assert_eq!(rows_digest(&a, None), rows_digest(&b, None));
        assert_eq!(rows_digest(&a, None), rows_digest(&c, None));
        let other = batch(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 3])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["a", "b"]))),
        ]);
        assert_ne!(rows_digest(&a, None), rows_digest(&other, None));
        let renamed = batch(vec![
            ("ids", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["a", "b"]))),
        ]);
        assert_ne!(rows_digest(&a, None), rows_digest(&renamed, None));
        assert_ne!(
            rows_digest(&a, None),
            rows_digest(&a, Some(&XRows::Dense(vec![0.5, 1.5])))
        );
        assert_ne!(rows_digest(&a, None), points_digest(&a));
        assert!(rows_digest(&a, None).starts_with(DIGEST_PREFIX));
    }

    #[test]
    fn missing_values_and_nan_are_told_apart_from_values() {
        let with_null = batch(vec![(
            "v",
            Arc::new(Float64Array::from(vec![Some(0.0), None])) as ArrayRef,
        )]);
        let with_zero = batch(vec![(
            "v",
            Arc::new(Float64Array::from(vec![0.0, 0.0])) as ArrayRef,
        )]);
        let with_nan = batch(vec![(
            "v",
            Arc::new(Float64Array::from(vec![0.0, f64::NAN])) as ArrayRef,
        )]);
        let digests = [
            rows_digest(&with_null, None),
            rows_digest(&with_zero, None),
            rows_digest(&with_nan, None),
        ];
        assert_ne!(digests[0], digests[1]);
        assert_ne!(digests[0], digests[2]);
        assert_ne!(digests[1], digests[2]);
    }
}
