//! The one path by which the store changes files: atomic publishing.
//!
//! Every file is written to a unique temporary file in its target's folder (created
//! exclusively), fsynced, and renamed over the target. Folders whose entries changed
//! are remembered and fsynced by [`Publisher::sync`], once each, before anything that
//! depends on them is reported durable. An fsync error aborts: it is returned, never
//! retried.
//!
//! [`Publisher::write`] does all of it at once. [`Publisher::write_deferred`] writes
//! the temporary file and queues the rest: [`Publisher::flush`] (and `sync`) fsyncs
//! every queued file at once, from several threads (a journaling filesystem folds
//! concurrent fsyncs into one commit), then renames each over its target in the
//! order written. Either way no target is replaced before its new data is durable.
//! fsyncs go through the files' open descriptors, and the fsyncs issued together
//! (one round) are announced as one [`FsOp::FsyncRound`]. At
//! [`Durability::Process`] nothing is fsynced; every other step is the same.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::durability::Durability;
use super::trace::{FsOp, observe};
use crate::error::{Error, Result, io_err};

/// Creates a new, uniquely named temporary file in `dir`, exclusively. A create that
/// fails with ESTALE is tried again (`util::retry_stale`), each time under a new
/// name: network filesystems answer it now and then while a folder on the path was
/// just renamed (GlusterFS: about 1 open in 600 during rename races).
fn create_temp(dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    loop {
        let mut temp = PathBuf::new();
        let created = crate::util::retry_stale(|| {
            temp = dir.join(format!(
                "{TEMP_PREFIX}{}",
                crate::dataset::layout::unique_id()
            ));
            observe(|| FsOp::CreateFile(temp.clone()))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
        });
        match created {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create a temporary file in", dir)(e)),
        }
    }
}

/// `Ok` when `dir` is a folder after `error` of its `mkdir` (one announced `stat`):
/// besides "exists", an NFS server may answer a `mkdir` of a folder that exists with a
/// permission or read-only error, as it checks those first. The error otherwise.
fn already_a_folder(dir: &Path, error: std::io::Error) -> Result<()> {
    if crate::storage::trace::is_dir(dir) {
        Ok(())
    } else {
        Err(io_err("create folder", dir)(error))
    }
}

/// Prefix of every temporary file the store creates.
pub const TEMP_PREFIX: &str = ".sz-tmp-";

/// Queued deferred writes beyond which [`Publisher::write_deferred`] flushes.
const MAX_PENDING: usize = 256;

/// Most threads issuing fsyncs at once.
const FSYNC_THREADS: usize = 16;

/// A file written to its temporary name, waiting to be fsynced and renamed. The file
/// stays open so that its fsync needs no second `open`.
#[derive(Debug)]
struct PendingWrite {
    temp: PathBuf,
    target: PathBuf,
    file: std::fs::File,
    /// Already fsynced (in a round of [`Publisher::sync_round`]).
    synced: bool,
}

/// A file written ahead to its temporary name ([`Publisher::prepare`]), waiting for
/// the [`Publisher::write_deferred`] of the same bytes to the same target.
#[derive(Debug)]
struct PreparedWrite {
    write: PendingWrite,
    bytes: Vec<u8>,
}

/// Publishes files atomically and batches the fsync of their folders. At
/// [`Durability::Process`] it makes no fsync at all; everything else is the same.
#[derive(Debug, Default)]
pub struct Publisher {
    dirty: Mutex<BTreeSet<PathBuf>>,
    pending: Mutex<Vec<PendingWrite>>,
    prepared: Mutex<Vec<PreparedWrite>>,
    /// Files written in place ([`Publisher::write_in_place`]), open until the next
    /// [`Publisher::sync_round`] fsyncs them.
    placed: Mutex<Vec<(PathBuf, std::fs::File)>>,
    /// With [`Publisher::recording`]: the target, length and CRC-32C of every
    /// deferred write, the last one per target.
    recorded: Option<Mutex<Vec<(PathBuf, u64, u32)>>>,
    /// With [`Publisher::in_place`]: every write goes straight to its target.
    in_place: bool,
    durability: Durability,
    /// Whether folders whose entries changed are left unsynced
    /// ([`Publisher::trusting_order`]); `false`, the default, fsyncs them.
    trusts_order: bool,
}

/// One fsync of a round: a file already open, or a folder to open.
enum SyncTarget<'a> {
    File(&'a std::fs::File, &'a Path),
    Dir(&'a Path),
    /// A folder changed since the last sync: found gone when opened, it was renamed
    /// away since (the rename marked its new parent) and is left out.
    ChangedDir(&'a Path),
}

impl SyncTarget<'_> {
    fn path(&self) -> &Path {
        match self {
            SyncTarget::File(_, path) | SyncTarget::Dir(path) | SyncTarget::ChangedDir(path) => {
                path
            }
        }
    }

    fn announce(&self) -> std::io::Result<()> {
        match self {
            SyncTarget::File(_, path) => observe(|| FsOp::Fsync(path.to_path_buf())),
            SyncTarget::Dir(path) | SyncTarget::ChangedDir(path) => {
                observe(|| FsOp::FsyncDir(path.to_path_buf()))
            }
        }
    }

    fn sync(&self) -> Result<()> {
        match self {
            SyncTarget::File(file, path) => file.sync_all().map_err(io_err("fsync", path)),
            SyncTarget::Dir(path) => std::fs::File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync folder", path)),
            SyncTarget::ChangedDir(path) => match std::fs::File::open(path) {
                Ok(folder) => folder.sync_all().map_err(io_err("fsync folder", path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("fsync folder", path)(e)),
            },
        }
    }
}

/// One fsync round: every target fsynced at once, from up to [`FSYNC_THREADS`]
/// threads (the calling thread among them), and waited for. The round, then each fsync, is announced first, in
/// order, from the calling thread.
fn fsync_round(targets: &[SyncTarget<'_>]) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    observe(|| FsOp::FsyncRound(targets.len())).map_err(io_err("fsync", targets[0].path()))?;
    for target in targets {
        target.announce().map_err(io_err("fsync", target.path()))?;
    }
    if targets.len() == 1 {
        return targets[0].sync();
    }
    let per_thread = targets.len().div_ceil(FSYNC_THREADS);
    let (first, rest) = targets.split_at(per_thread);
    std::thread::scope(|scope| {
        // The calling thread fsyncs the first group itself: one thread fewer to start.
        let handles: Vec<_> = rest
            .chunks(per_thread)
            .map(|group| scope.spawn(move || group.iter().try_for_each(SyncTarget::sync)))
            .collect();
        let own = first.iter().try_for_each(SyncTarget::sync);
        let others = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<()>>>();
        own.and(others.map(drop))
    })
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Publisher {
    /// A publisher with nothing pending, at [`Durability::Full`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A publisher with nothing pending, fsyncing as `durability` says.
    pub fn with_durability(durability: Durability) -> Self {
        Self {
            dirty: Mutex::default(),
            pending: Mutex::default(),
            prepared: Mutex::default(),
            placed: Mutex::default(),
            recorded: None,
            in_place: false,
            durability,
            trusts_order: false,
        }
    }

    /// This publisher, fsyncing no folder when `ordered`: for the commits of a
    /// filesystem that makes creates, renames and removals durable in the order they
    /// were made, each with the next fsync of a new file (spec/commit-protocol.md
    /// §11.1, [`FolderSync`](super::FolderSync)). Files are fsynced as before.
    pub fn trusting_order(mut self, ordered: bool) -> Self {
        self.trusts_order = ordered;
        self
    }

    /// [`Publisher::with_durability`], also remembering what each deferred write
    /// stores ([`Publisher::take_recorded`]): a commit names the row chunks it stores
    /// before it is decided in its journal (spec/commit-protocol.md §3.3).
    pub fn recording(durability: Durability) -> Self {
        let mut publisher = Self::with_durability(durability);
        publisher.recorded = Some(Mutex::default());
        publisher
    }

    /// A publisher for a folder nobody else reads until this publisher's
    /// [`Publisher::sync`] returned (a staging folder, spec/commit-protocol.md §4):
    /// every write goes straight to its target, truncating it (no temporary file,
    /// no rename), and `sync` fsyncs the files and their folders in ONE round.
    pub fn in_place(durability: Durability) -> Self {
        let mut publisher = Self::with_durability(durability);
        publisher.in_place = true;
        publisher
    }

    /// Writes `bytes` to `path` itself, created exclusively (`exclusive`: the
    /// journal; on an error the file is removed) or created or truncated (every write
    /// of a [`Publisher::in_place`] publisher), and keeps it open for the
    /// next [`Publisher::sync_round`]. Beyond [`MAX_PENDING`] open files, they are
    /// fsynced and closed at once.
    fn place(&self, path: &Path, bytes: &[u8], exclusive: bool) -> Result<()> {
        super::doc_cache::forget_file(path);
        observe(|| FsOp::CreateFile(path.to_path_buf())).map_err(io_err("create", path))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        if exclusive {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        let mut file = options.open(path).map_err(io_err("create", path))?;
        let written = observe(|| FsOp::Write(path.to_path_buf(), bytes.to_vec()))
            .and_then(|()| file.write_all(bytes))
            .map_err(io_err("write", path));
        if let Err(e) = written {
            if exclusive {
                drop(file);
                let _ = observe(|| FsOp::Unlink(path.to_path_buf()));
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        self.mark(parent_of(path));
        let full = {
            let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
            placed.push((path.to_path_buf(), file));
            placed.len() >= MAX_PENDING
        };
        if full {
            let placed =
                std::mem::take(&mut *self.placed.lock().unwrap_or_else(|p| p.into_inner()));
            if self.durability.syncs() {
                let targets: Vec<SyncTarget<'_>> = placed
                    .iter()
                    .map(|(path, file)| SyncTarget::File(file, path))
                    .collect();
                fsync_round(&targets)?;
            }
        }
        Ok(())
    }

    /// The target, length and CRC-32C of every deferred write since the last call
    /// (the last write per target), with [`Publisher::recording`]; empty otherwise.
    pub fn take_recorded(&self) -> Vec<(PathBuf, u64, u32)> {
        self.recorded
            .as_ref()
            .map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
    }

    /// Creates the new file `path` (which must not exist) with `bytes`, in place: no
    /// temporary file, no rename. For a file whose readers can tell a torn copy (a
    /// journal that ends in its checksum). The next [`Publisher::sync_round`]
    /// fsyncs it and its folder. On an error the file is removed.
    pub fn write_in_place(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.place(path, bytes, true)
    }

    /// ONE fsync round for the publishers of `all`: every temporary file written
    /// (queued or prepared) and not fsynced yet, every file written in place, and
    /// every folder changed since their last sync. Renames nothing: their later
    /// flushes only rename. Nothing is fsynced at [`Durability::Process`].
    pub fn sync_round(all: &[&Publisher]) -> Result<()> {
        let placed: Vec<_> = all
            .iter()
            .map(|p| std::mem::take(&mut *p.placed.lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        let dirs: Vec<_> = all
            .iter()
            .map(|p| std::mem::take(&mut *p.dirty.lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        let mut pending: Vec<_> = all
            .iter()
            .map(|p| p.pending.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let mut prepared: Vec<_> = all
            .iter()
            .map(|p| p.prepared.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        {
            let mut targets = Vec::new();
            for (i, publisher) in all.iter().enumerate() {
                if !publisher.durability.syncs() {
                    continue;
                }
                let writes = pending[i]
                    .iter()
                    .chain(prepared[i].iter().map(|p| &p.write));
                targets.extend(
                    writes
                        .filter(|w| !w.synced)
                        .map(|w| SyncTarget::File(&w.file, &w.temp)),
                );
                targets.extend(
                    placed[i]
                        .iter()
                        .map(|(path, file)| SyncTarget::File(file, path)),
                );
                if !publisher.trusts_order {
                    targets.extend(dirs[i].iter().map(|d| SyncTarget::ChangedDir(d)));
                }
            }
            // Two publishers may have changed the same folder: fsynced once.
            let mut seen = BTreeSet::new();
            targets.retain(|t| {
                !matches!(t, SyncTarget::Dir(d) | SyncTarget::ChangedDir(d) if !seen.insert(d.to_path_buf()))
            });
            fsync_round(&targets)?;
        }
        for (queued, ahead) in pending.iter_mut().zip(prepared.iter_mut()) {
            let writes = queued
                .iter_mut()
                .chain(ahead.iter_mut().map(|p| &mut p.write));
            writes.for_each(|w| w.synced = true);
        }
        Ok(())
    }

    /// The durability level this publisher writes at.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// fsyncs the folder `dir` now (nothing at [`Durability::Process`], nor for a
    /// publisher [`trusting_order`](Self::trusting_order)), so that the entries
    /// created, renamed or removed in it are durable.
    pub fn sync_dir(&self, dir: &Path) -> Result<()> {
        if !self.durability.syncs() || self.trusts_order {
            return Ok(());
        }
        fsync_round(&[SyncTarget::Dir(dir)])
    }

    fn mark(&self, dir: PathBuf) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir);
    }

    /// Records that the entry `path` may have been created, renamed or removed by an
    /// earlier run that crashed before making it durable: its folder is fsynced at the
    /// next [`Self::sync`]. (A replayed step that finds its work done calls this.)
    pub fn touched(&self, path: &Path) {
        self.mark(parent_of(path));
    }

    /// Replaces (or creates) `path` with `bytes`, atomically: readers see the old
    /// content or the new, never a mix. The folder must exist.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        if self.in_place {
            return self.place(path, bytes, false);
        }
        let dir = parent_of(path);
        let (temp, mut file) = create_temp(&dir)?;
        let written = (|| {
            observe(|| FsOp::Write(temp.clone(), bytes.to_vec()))
                .map_err(io_err("write", &temp))?;
            file.write_all(bytes).map_err(io_err("write", &temp))?;
            if self.durability.syncs() {
                // An fsync error is final: the page cache may have dropped the data.
                fsync_round(&[SyncTarget::File(&file, &temp)])?;
            }
            drop(file);
            super::doc_cache::forget_file(path);
            observe(|| FsOp::Rename(temp.clone(), path.to_path_buf()))
                .map_err(io_err("rename into place", path))?;
            std::fs::rename(&temp, path).map_err(io_err("rename into place", path))
        })();
        if let Err(e) = written {
            let _ = observe(|| FsOp::Unlink(temp.clone()));
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        self.mark(dir);
        Ok(())
    }

    /// Writes `bytes` to a new temporary file beside `path` and queues its fsync and
    /// rename over `path` for the next [`flush`](Self::flush) or
    /// [`sync`](Self::sync). Until then `path` keeps its old content (see
    /// [`is_pending`](Self::is_pending)). The folder must exist.
    pub fn write_deferred(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.write_deferred_with(path, bytes, false)
    }

    /// [`Self::write_deferred`], making the folder (and its missing parents) when the
    /// file cannot be created for want of it, rather than looking for it first.
    pub fn write_deferred_making_folder(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.write_deferred_with(path, bytes, true)
    }

    fn write_deferred_with(&self, path: &Path, bytes: &[u8], make_folder: bool) -> Result<()> {
        // Only a failure to create the file itself is taken for a missing folder.
        let retry = |e: &Error| make_folder && e.is_not_found();
        if self.in_place {
            return match self.place(path, bytes, false) {
                Err(e) if retry(&e) => {
                    self.create_dir_all(&parent_of(path))?;
                    self.place(path, bytes, false)
                }
                placed => placed,
            };
        }
        let ahead = {
            let mut prepared = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            prepared
                .iter()
                .position(|p| p.write.target == path && p.bytes == bytes)
                .map(|at| prepared.remove(at).write)
        };
        if let Some(write) = ahead {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(write);
            return Ok(());
        }
        let dir = parent_of(path);
        let (temp, mut file) = match create_temp(&dir) {
            Err(e) if retry(&e) => {
                self.create_dir_all(&dir)?;
                create_temp(&dir)?
            }
            created => created?,
        };
        let written = observe(|| FsOp::Write(temp.clone(), bytes.to_vec()))
            .and_then(|()| file.write_all(bytes))
            .map_err(io_err("write", &temp));
        if let Err(e) = written {
            drop(file);
            let _ = observe(|| FsOp::Unlink(temp.clone()));
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        if let Some(recorded) = &self.recorded {
            let mut recorded = recorded.lock().unwrap_or_else(|p| p.into_inner());
            recorded.retain(|(target, ..)| target != path);
            recorded.push((
                path.to_path_buf(),
                bytes.len() as u64,
                crc32c::crc32c(bytes),
            ));
        }
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(PendingWrite {
                temp,
                target: path.to_path_buf(),
                file,
                synced: false,
            });
            pending.len() >= MAX_PENDING
        };
        if full { self.flush() } else { Ok(()) }
    }

    /// Whether a deferred write to `path` waits for a flush.
    pub fn is_pending(&self, path: &Path) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|w| w.target == path)
    }

    /// Whether any deferred write waits for a flush.
    pub fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Publishes every deferred write: fsyncs the temporary files (at once), then
    /// renames each over its target, in the order they were written. On an error the
    /// temporary files not yet renamed are removed.
    pub fn flush(&self) -> Result<()> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        let mut renamed = 0;
        let result = (|| {
            if self.durability.syncs() {
                let temps: Vec<SyncTarget<'_>> = batch
                    .iter()
                    .filter(|w| !w.synced)
                    .map(|w| SyncTarget::File(&w.file, &w.temp))
                    .collect();
                fsync_round(&temps)?;
            }
            for write in &batch {
                super::doc_cache::forget_file(&write.target);
                observe(|| FsOp::Rename(write.temp.clone(), write.target.clone()))
                    .and_then(|()| std::fs::rename(&write.temp, &write.target))
                    .map_err(io_err("rename into place", &write.target))?;
                renamed += 1;
                self.mark(parent_of(&write.target));
            }
            Ok(())
        })();
        if result.is_err() {
            discard(&batch[renamed..]);
        }
        result
    }

    /// Writes `bytes` ahead to a new temporary file beside `path` (the folder must
    /// exist), without queueing it: a later [`write_deferred`](Self::write_deferred)
    /// of the same bytes to `path` takes this file instead of writing another, so
    /// that its fsync can join an earlier round ([`sync_round`](Self::sync_round)).
    /// Unclaimed, it is removed when the publisher is dropped.
    pub fn prepare(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = parent_of(path);
        let (temp, mut file) = create_temp(&dir)?;
        let written = observe(|| FsOp::Write(temp.clone(), bytes.to_vec()))
            .and_then(|()| file.write_all(bytes))
            .map_err(io_err("write", &temp));
        let write = PendingWrite {
            temp,
            target: path.to_path_buf(),
            file,
            synced: false,
        };
        if let Err(e) = written {
            discard(std::slice::from_ref(&write));
            return Err(e);
        }
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PreparedWrite {
                write,
                bytes: bytes.to_vec(),
            });
        Ok(())
    }

    /// Creates `dir` and any missing parents, remembering each new entry's folder.
    /// Tries the `mkdir` first (one call when only `dir` is missing); a folder found
    /// there already costs one `stat` more.
    pub fn create_dir_all(&self, dir: &Path) -> Result<()> {
        let parent = parent_of(dir);
        match self.mkdir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && parent != dir => {
                self.create_dir_all(&parent)?;
                self.mkdir(dir).or_else(|e| already_a_folder(dir, e))?;
            }
            Err(e) => already_a_folder(dir, e)?,
        }
        Ok(())
    }

    /// One announced `mkdir` of `dir`; its folder is remembered when it made it.
    fn mkdir(&self, dir: &Path) -> std::io::Result<()> {
        observe(|| FsOp::Mkdir(dir.to_path_buf()))?;
        std::fs::create_dir(dir)?;
        self.mark(parent_of(dir));
        Ok(())
    }

    /// Renames `from` to `to` (a file, or a folder onto a missing or empty one), after
    /// publishing the deferred writes (they may lie inside `from`).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.flush()?;
        super::doc_cache::forget_tree(from);
        super::doc_cache::forget_tree(to);
        observe(|| FsOp::Rename(from.to_path_buf(), to.to_path_buf()))
            .and_then(|()| std::fs::rename(from, to))
            .map_err(|source| Error::Io {
                op: "rename",
                path: from.to_path_buf(),
                source: std::io::Error::new(
                    source.kind(),
                    format!("to {}: {source}", to.display()),
                ),
            })?;
        self.mark(parent_of(from));
        self.mark(parent_of(to));
        Ok(())
    }

    /// Swaps `a` and `b` atomically (`renameat2` with `RENAME_EXCHANGE`), after
    /// publishing the deferred writes: at every instant each name holds one of the two.
    /// Returns `Ok(false)`, changing nothing, when the filesystem cannot swap.
    pub fn exchange(&self, a: &Path, b: &Path) -> Result<bool> {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        self.flush()?;
        super::doc_cache::forget_tree(a);
        super::doc_cache::forget_tree(b);
        let swapped = observe(|| FsOp::Exchange(a.to_path_buf(), b.to_path_buf())).and_then(|()| {
            renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
        });
        match swapped {
            Ok(()) => {
                self.mark(parent_of(a));
                self.mark(parent_of(b));
                Ok(true)
            }
            // Not offered by this filesystem or kernel (NFS, older kernels).
            Err(e) if is_unsupported(&e) => Ok(false),
            Err(source) => Err(Error::Io {
                op: "exchange",
                path: a.to_path_buf(),
                source: std::io::Error::new(
                    source.kind(),
                    format!("with {}: {source}", b.display()),
                ),
            }),
        }
    }

    /// Removes the file `path`, after publishing the deferred writes; a missing file
    /// is not an error.
    pub fn remove_file(&self, path: &Path) -> Result<()> {
        self.flush()?;
        super::doc_cache::forget_tree(path);
        observe(|| FsOp::Unlink(path.to_path_buf())).map_err(io_err("remove", path))?;
        match std::fs::remove_file(path) {
            Ok(()) => {
                self.mark(parent_of(path));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", path)(e)),
        }
    }

    /// Publishes the deferred writes, then fsyncs every file written in place and
    /// every folder changed since the last call (at once).
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        Self::sync_round(&[self])
    }
}

impl Drop for Publisher {
    /// Deferred writes never flushed are abandoned: their temporary files are removed.
    fn drop(&mut self) {
        let batch = std::mem::take(self.pending.get_mut().unwrap_or_else(|p| p.into_inner()));
        discard(&batch);
        let ahead = std::mem::take(self.prepared.get_mut().unwrap_or_else(|p| p.into_inner()));
        for prepared in &ahead {
            discard(std::slice::from_ref(&prepared.write));
        }
    }
}

/// Whether a failed `renameat2(RENAME_EXCHANGE)` means the swap is not available here.
fn is_unsupported(error: &std::io::Error) -> bool {
    use rustix::io::Errno;
    crate::util::errno_is(error, &[Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP])
}

/// Removes the temporary files of deferred writes that will not be published.
fn discard(writes: &[PendingWrite]) {
    for write in writes {
        let _ = observe(|| FsOp::Unlink(write.temp.clone()));
        let _ = std::fs::remove_file(&write.temp);
    }
}

/// Removes a folder tree that is no longer referenced (trash, abandoned staging).
/// Never follows symbolic links out of it.
pub fn remove_tree(dir: &Path) -> Result<()> {
    super::doc_cache::forget_tree(dir);
    observe(|| FsOp::RemoveTree(dir.to_path_buf())).map_err(io_err("remove folder", dir))?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove folder", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::new();
        let target = dir.path().join("a/b/zarr.json");
        p.create_dir_all(target.parent().unwrap()).unwrap();
        p.write(&target, b"one").unwrap();
        p.write(&target, b"two").unwrap();
        p.sync().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("zarr.json")]);
    }

    #[test]
    fn deferred_writes_appear_at_flush_in_order_and_vanish_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("chunk");
        let other = dir.path().join("other");
        let p = Publisher::new();
        p.write_deferred(&target, b"one").unwrap();
        p.write_deferred(&other, b"x").unwrap();
        p.write_deferred(&target, b"two").unwrap();
        assert!(p.is_pending(&target) && p.has_pending());
        assert!(!target.exists(), "published before the flush");
        p.sync().unwrap();
        assert!(!p.has_pending());
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(std::fs::read(&other).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        let abandoned = Publisher::new();
        abandoned.write_deferred(&target, b"three").unwrap();
        drop(abandoned);
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "temp left"
        );
    }

    #[test]
    fn a_queue_that_fills_up_flushes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::new();
        for i in 0..MAX_PENDING {
            p.write_deferred(&dir.path().join(i.to_string()), b"v")
                .unwrap();
        }
        assert!(!p.has_pending());
        assert!(dir.path().join("0").exists());
    }

    #[test]
    fn write_into_missing_folder_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Publisher::new()
            .write(&dir.path().join("missing/x"), b"")
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
