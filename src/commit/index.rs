//! `.spatialzarr/index/<bbb>`: the committed element names, in 4096 bucket files
//! (spec/format.md §4). A name's bucket is the first three hex digits of SHA-256 of
//! the name in ASCII lower case, so names that differ only in case share a bucket and
//! the case-insensitive uniqueness rule is checked by reading one file. A bucket file
//! holds sorted lines `<kind>\t<name>\n`; an absent file is an empty bucket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::element::ElementKind;
use crate::error::{Error, Result};

/// The index folder's name inside the hidden folder.
pub const INDEX_DIR: &str = "index";
/// Hex digits of the hash that name a bucket (3: 4096 buckets).
pub const BUCKET_DIGITS: u32 = 3;
/// The largest bucket file read (about 25 bytes a name: 10^6 names put about 6 KB in
/// each bucket).
const MAX_BUCKET_BYTES: u64 = 16 << 20;

/// One bucket, by number (`0..4096`).
pub type BucketId = u16;

/// The index parameters recorded in a version-2 manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexParams {
    /// The folder of the buckets, inside the hidden folder.
    pub folder: String,
    /// How a name is hashed: `"sha256-ascii-lowercase"`.
    pub hash: String,
    /// Hex digits of the hash naming a bucket.
    pub digits: u32,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            folder: INDEX_DIR.into(),
            hash: "sha256-ascii-lowercase".into(),
            digits: BUCKET_DIGITS,
        }
    }
}

/// The bucket of `name`.
pub fn bucket_of(name: &str) -> BucketId {
    let digest = Sha256::digest(name.to_ascii_lowercase().as_bytes());
    let first = u16::from_be_bytes([digest[0], digest[1]]);
    first >> (16 - 4 * BUCKET_DIGITS)
}

/// The file name of bucket `id` (`"0a3"`).
pub fn bucket_file(id: BucketId) -> String {
    format!("{id:03x}")
}

/// The bucket a file name denotes, if it is one.
fn parse_bucket_file(name: &str) -> Option<BucketId> {
    let valid = name.len() == BUCKET_DIGITS as usize
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid
        .then(|| BucketId::from_str_radix(name, 16).ok())
        .flatten()
}

/// The index folder of the dataset whose hidden folder is `hidden`.
pub fn index_dir(hidden: &Path) -> PathBuf {
    hidden.join(INDEX_DIR)
}

/// The text of a bucket holding `entries` (name to kind; all of that bucket).
pub fn bucket_text<'a>(entries: impl IntoIterator<Item = (&'a str, ElementKind)>) -> String {
    let mut lines: Vec<(&str, &str)> = entries
        .into_iter()
        .map(|(name, kind)| (kind.group(), name))
        .collect();
    lines.sort();
    lines
        .iter()
        .map(|(kind, name)| format!("{kind}\t{name}\n"))
        .collect()
}

/// How much of a bucket file is checked when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Every line's form, and that each name belongs in the bucket and appears once
    /// (what a commit and `check` rely on).
    Full,
    /// Every line's form only: for listings, where a misplaced or repeated name
    /// (which `check` reports) changes nothing but the listing itself.
    Form,
}

/// Parses a bucket file's bytes; `path` names it in errors, `id` is its bucket.
fn parse_bucket(
    bytes: &[u8],
    path: &Path,
    id: BucketId,
    verify: Verify,
) -> Result<Vec<(String, ElementKind)>> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{reason}; `spatialzarr check` tells what else is wrong"),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8".into()))?;
    let mut entries: Vec<(String, ElementKind)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let (kind, name) = line
            .split_once('\t')
            .ok_or_else(|| corrupt(format!("line {} is not `kind<TAB>name`", number + 1)))?;
        let kind = ElementKind::ALL
            .into_iter()
            .find(|k| k.group() == kind)
            .ok_or_else(|| corrupt(format!("line {}: unknown kind {kind:?}", number + 1)))?;
        if verify == Verify::Form {
            entries.push((name.to_owned(), kind));
            continue;
        }
        if bucket_of(name) != id {
            return Err(corrupt(format!(
                "line {}: {name:?} does not belong in this bucket",
                number + 1
            )));
        }
        if !seen.insert(name) {
            return Err(corrupt(format!("line {}: {name:?} twice", number + 1)));
        }
        entries.push((name.to_owned(), kind));
    }
    Ok(entries)
}

/// Reads bucket `id`: its (name, kind) entries, empty when its file is absent.
pub fn read_bucket(hidden: &Path, id: BucketId) -> Result<Vec<(String, ElementKind)>> {
    read_bucket_checked(hidden, id, Verify::Full)
}

/// [`read_bucket`], checking as `verify` says.
fn read_bucket_checked(
    hidden: &Path,
    id: BucketId,
    verify: Verify,
) -> Result<Vec<(String, ElementKind)>> {
    let path = index_dir(hidden).join(bucket_file(id));
    match crate::storage::doc_cache::read(&path, MAX_BUCKET_BYTES) {
        Ok(bytes) => parse_bucket(&bytes, &path, id, verify),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Reads every bucket: the whole committed index (one listing, one read per bucket
/// file). Files of the folder that are not buckets (temporaries) are skipped.
pub fn read_all(hidden: &Path) -> Result<BTreeMap<String, ElementKind>> {
    Ok(
        read_all_except(hidden, &std::collections::BTreeSet::new(), Verify::Full)?
            .into_iter()
            .collect(),
    )
}

/// [`read_all`] as a list in no particular order, leaving out the buckets in `skip`
/// (read before), checking each as `verify` says. The bucket files are read by a few threads at once: on a network
/// filesystem each read is a round trip, and a listing of 10^5 names reads 4096 files.
pub fn read_all_except(
    hidden: &Path,
    skip: &std::collections::BTreeSet<BucketId>,
    verify: Verify,
) -> Result<Vec<(String, ElementKind)>> {
    let dir = index_dir(hidden);
    let entries = match crate::storage::trace::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Corrupt {
                path: dir,
                reason: "the element index is missing (the manifest says version 2)".into(),
            });
        }
        Err(e) => return Err(crate::error::io_err("list", &dir)(e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(crate::error::io_err("list", &dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_bucket_file)
            && !skip.contains(&id)
        {
            ids.push(id);
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, READ_THREADS);
    let per_thread = ids.len().div_ceil(threads).max(1);
    if ids.len() <= per_thread {
        return read_buckets(hidden, &ids, verify);
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = ids
            .chunks(per_thread)
            .map(|part| scope.spawn(move || read_buckets(hidden, part, verify)))
            .collect();
        let mut all = Vec::new();
        for part in parts {
            all.extend(
                part.join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))?,
            );
        }
        Ok(all)
    })
}

/// The most threads [`read_all_except`] reads with.
const READ_THREADS: usize = 8;

/// The entries of the buckets `ids`, one after the other.
fn read_buckets(
    hidden: &Path,
    ids: &[BucketId],
    verify: Verify,
) -> Result<Vec<(String, ElementKind)>> {
    let mut all = Vec::new();
    for &id in ids {
        all.extend(read_bucket_checked(hidden, id, verify)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_in_case_share_a_bucket() {
        assert_eq!(bucket_of("Tile7"), bucket_of("tile7"));
        assert!(bucket_of("tile7") < 4096);
        let spread: std::collections::BTreeSet<_> =
            (0..1000).map(|i| bucket_of(&format!("t{i}"))).collect();
        assert!(
            spread.len() > 700,
            "{} buckets for 1000 names",
            spread.len()
        );
    }

    #[test]
    fn bucket_text_round_trips() {
        let name = "cells";
        let id = bucket_of(name);
        let text = bucket_text([(name, ElementKind::Tables)]);
        assert_eq!(text, "tables\tcells\n");
        let back = parse_bucket(text.as_bytes(), Path::new("b"), id, Verify::Full).unwrap();
        assert_eq!(back, [(name.to_owned(), ElementKind::Tables)]);
        assert_eq!(parse_bucket_file(&bucket_file(id)), Some(id));
        assert_eq!(parse_bucket_file("xyz"), None);
    }

    #[test]
    fn bad_buckets_are_refused() {
        let id = bucket_of("cells");
        for text in [
            "tables cells\n",
            "nope\tcells\n",
            "tables\tcells\ntables\tcells\n",
        ] {
            assert!(parse_bucket(text.as_bytes(), Path::new("b"), id, Verify::Full).is_err());
        }
        let other = (0..100)
            .map(|i| format!("n{i}"))
            .find(|n| bucket_of(n) != id)
            .unwrap();
        let text = format!("labels\t{other}\n");
        assert!(parse_bucket(text.as_bytes(), Path::new("b"), id, Verify::Full).is_err());
        // A listing checks the form only: the misplaced name is listed, a bad line
        // is still refused.
        let listed = parse_bucket(text.as_bytes(), Path::new("b"), id, Verify::Form).unwrap();
        assert_eq!(listed, [(other.clone(), ElementKind::Labels)]);
        assert!(parse_bucket(b"nope\tcells\n", Path::new("b"), id, Verify::Form).is_err());
    }
}
