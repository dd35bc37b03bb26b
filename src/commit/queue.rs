//! The queue of group commit (spec/commit-protocol.md §12): one empty file
//! `H/queue/<id>` per request waiting for the write lock, `<id>` naming the request's
//! staging folder `H/staging/<id>/`.
//!
//! The holder of the write lock claims an entry by renaming it to `claimed-<id>`; a
//! waiter whose timeout passes withdraws it by removing `<id>`. The kernel lets
//! exactly one of the two succeed, so a request is either taken or withdrawn.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Result, io_err};
use crate::storage::trace::{FsOp, observe};

/// The queue folder, inside the hidden folder.
pub const QUEUE_DIR: &str = "queue";

/// Prefix of a claimed entry.
const CLAIMED_PREFIX: &str = "claimed-";

/// One entry of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The request's id (its staging folder's name).
    pub id: String,
    /// Whether a lock holder claimed it.
    pub claimed: bool,
}

/// The queue folder of one dataset.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

/// Whether an I/O error says the path is not there.
fn is_missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound)
}

impl Queue {
    /// The queue of the dataset whose hidden folder is `hidden`.
    pub fn new(hidden: &Path) -> Self {
        Self {
            dir: hidden.join(QUEUE_DIR),
        }
    }

    fn waiting(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn claimed(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{CLAIMED_PREFIX}{id}"))
    }

    /// Queues request `id` (an exclusive create: an id is queued once).
    pub fn enqueue(&self, id: &str) -> Result<()> {
        observe(|| FsOp::Mkdir(self.dir.clone())).map_err(io_err("create folder", &self.dir))?;
        std::fs::create_dir_all(&self.dir).map_err(io_err("create folder", &self.dir))?;
        let path = self.waiting(id);
        observe(|| FsOp::CreateFile(path.clone())).map_err(io_err("create", &path))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok(())
    }

    /// Withdraws request `id`: true when it was still waiting (now it is gone), false
    /// when a lock holder had claimed it (or it was never queued).
    pub fn withdraw(&self, id: &str) -> Result<bool> {
        self.unlink(&self.waiting(id))
    }

    /// Claims request `id` for the caller's commit: true when it was waiting, false
    /// when its waiter withdrew it first.
    pub fn claim(&self, id: &str) -> Result<bool> {
        let (from, to) = (self.waiting(id), self.claimed(id));
        observe(|| FsOp::Rename(from.clone(), to.clone())).map_err(io_err("rename", &from))?;
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(io_err("rename", &from)(e)),
        }
    }

    /// Puts a claimed request back in the queue (its commit was not decided).
    pub fn unclaim(&self, id: &str) -> Result<()> {
        let (from, to) = (self.claimed(id), self.waiting(id));
        observe(|| FsOp::Rename(from.clone(), to.clone())).map_err(io_err("rename", &from))?;
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(io_err("rename", &from)(e)),
        }
    }

    /// Removes every entry of request `id`, waiting or claimed.
    pub fn forget(&self, id: &str) -> Result<()> {
        self.unlink(&self.waiting(id))?;
        self.unlink(&self.claimed(id))?;
        Ok(())
    }

    fn unlink(&self, path: &Path) -> Result<bool> {
        observe(|| FsOp::Unlink(path.to_path_buf())).map_err(io_err("remove", path))?;
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(io_err("remove", path)(e)),
        }
    }

    /// Every entry, oldest request first (ids start with the process id and the
    /// time; entries are ordered by that time). An absent queue folder is empty.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let entries = match crate::storage::trace::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &self.dir)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            found.push(match name.strip_prefix(CLAIMED_PREFIX) {
                Some(id) => Entry {
                    id: id.to_owned(),
                    claimed: true,
                },
                None => Entry {
                    id: name,
                    claimed: false,
                },
            });
        }
        found.sort_by_key(|e| (arrival(&e.id), e.id.clone()));
        Ok(found)
    }
}

/// The time part of an id `<pid>-<nanoseconds>-<counter>` (0 when it has none).
fn arrival(id: &str) -> u128 {
    id.split('-')
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_and_a_withdrawal_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::new(dir.path());
        queue.enqueue("1-20-0").unwrap();
        queue.enqueue("1-10-1").unwrap();
        let ids: Vec<String> = queue.list().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["1-10-1", "1-20-0"]);
        assert!(queue.claim("1-10-1").unwrap());
        assert!(!queue.withdraw("1-10-1").unwrap());
        assert!(queue.withdraw("1-20-0").unwrap());
        assert!(!queue.claim("1-20-0").unwrap());
        assert!(
            queue.enqueue("1-10-1").is_ok(),
            "the claimed name is another file"
        );
        let entries = queue.list().unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().any(|e| e.claimed));
        queue.forget("1-10-1").unwrap();
        assert!(queue.list().unwrap().is_empty());
    }
}
