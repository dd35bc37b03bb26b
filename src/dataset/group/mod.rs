//! Group commit on the journal (spec/commit-protocol.md §12).
//!
//! A single-operation call (`Dataset::append_rows`, `Dataset::add_raster` and the
//! calls built on them) first tries the write lock without waiting. Getting it, the
//! caller is the **combiner**: it applies its own operation, then takes every request
//! queued by other callers into the same transaction, and commits them all with ONE
//! journal (one set of fsync rounds). Finding the lock busy, the caller is a
//! **waiter**: it writes its request into its staging folder, queues it
//! (`H/queue/<id>`), and waits for the lock; holding it, it reads the outcome the
//! combiner wrote as a step of its journal, or, when none was written, commits itself.

mod wire;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Dataset;
use super::staging::{self, StagedElement};
use super::txn::{CommitInfo, WriteTxn};
use crate::commit::Manifest;
use crate::commit::queue::{Entry, Queue};
use crate::element::ElementName;
use crate::element::Transformations;
use crate::error::{Error, Result};
use crate::lock::LockError;
use crate::table::{AppendOutcome, RowBatch, TableSpec};
use wire::{ErrorDoc, OutcomeDoc, ReadRequest};

/// At most this many queued requests join one commit; the rest stay queued.
pub const BATCH_REQUESTS: usize = 256;
/// At most this many bytes of queued rows join one commit (one request always does).
pub const BATCH_ROW_BYTES: u64 = 64 << 20;
/// The environment variable that turns group commit off (`off`): every call then
/// waits for the lock and commits alone.
pub const GROUP_COMMIT_ENV: &str = "SPATIALZARR_GROUP_COMMIT";
/// How long a waiter whose timeout passed after its request was claimed still waits
/// for the outcome, at least.
const CLAIMED_GRACE: Duration = Duration::from_secs(60);
/// A waiter's first pause when the holder is gone but neither its outcome nor the
/// write lock is there (other waiters read); each pause doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_micros(100);
/// A waiter's longest such pause.
const MAX_POLL: Duration = Duration::from_millis(1);
/// How long a waiter goes on letting processes waiting at the gate take the lock
/// first while it keeps finding the lock free (a stopped process, or an NFS client
/// slow to see a release, can hold the gate meanwhile): then it tries as any writer.
const MAX_YIELD: Duration = Duration::from_millis(20);
/// A wait for the read lock at least this long met a holder: the lock changed hands.
const MET_A_HOLDER: Duration = Duration::from_millis(1);

/// One single-operation call.
pub(super) enum Request {
    /// `append_rows`.
    Rows {
        table: String,
        rows: RowBatch,
        create: Option<TableSpec>,
        key: Option<String>,
    },
    /// `add_staged` of an element staged by this caller (or, in a combiner, borrowed
    /// from a waiter).
    Add {
        staged: StagedElement,
        overwrite: bool,
    },
    /// `set_transformations` of element `name`.
    Transform {
        name: String,
        transformations: Transformations,
    },
}

impl Request {
    /// Whether the request can travel through the queue: transformations holding a
    /// value JSON cannot carry (NaN, infinity) cannot, and are refused by the checks
    /// of the caller's own transaction instead.
    fn queueable(&self) -> bool {
        match self {
            Self::Transform {
                transformations, ..
            } => wire::representable(transformations),
            Self::Rows { .. } | Self::Add { .. } => true,
        }
    }
}

/// What a request did, before its commit's generation is known.
enum Applied {
    Rows(AppendOutcome),
    /// An element added, or its transformations replaced.
    Changed,
}

/// A request's result.
pub(super) enum Done {
    /// An append: its outcome and the commit.
    Rows(AppendOutcome, CommitInfo),
    /// An element added, or its transformations replaced: the commit.
    Changed(CommitInfo),
}

impl Done {
    /// The commit.
    pub(super) fn commit(&self) -> CommitInfo {
        match self {
            Self::Rows(_, info) | Self::Changed(info) => *info,
        }
    }
}

/// A request of this caller, queued.
struct Waiting {
    queue: Queue,
    /// Its id: the name of its staging folder and of its queue entry.
    id: String,
    /// Its staging folder.
    dir: PathBuf,
    /// The staging folder of an append's rows (an element's is in its request).
    holder: Option<StagedElement>,
}

impl Waiting {
    /// Returns without removing the request's files: a combiner's journal may still
    /// need them. Its queue entry and folders are removed by a later writer once this
    /// process is gone (spec/commit-protocol.md §12.3 step 8).
    fn leave(self, request: Request) {
        if let Some(holder) = self.holder {
            holder.leave();
        }
        if let Request::Add { staged, .. } = request {
            staged.leave();
        }
    }
}

/// A queued request taken by the combiner.
struct Claim {
    id: String,
    request: Request,
}

/// Whether group commit is on (the default; `SPATIALZARR_GROUP_COMMIT=off` turns it
/// off).
pub(super) fn enabled() -> bool {
    std::env::var(GROUP_COMMIT_ENV).map_or(true, |v| !v.trim().eq_ignore_ascii_case("off"))
}

/// The committed generation, read under the lock.
fn generation(dataset: &Dataset) -> Result<u64> {
    Ok(Manifest::load(&dataset.layout().hidden)?.map_or(0, |m| m.generation))
}

impl Dataset {
    fn queue(&self) -> Queue {
        Queue::new(&self.layout().hidden)
    }

    /// Commits one request: alone inside an open transaction of this thread (or with
    /// group commit off), as the combiner when the lock is free, else queued.
    pub(super) fn commit_request(&self, request: Request) -> Result<Done> {
        self.ensure_writable()?;
        if self.lock().held_by_this_thread().is_some() || !enabled() || !request.queueable() {
            return self.commit_alone(request);
        }
        match self.lock().write_behind_waiters() {
            Ok(_guard) => self.combine(Some(request)).map(|d| d.expect("own request")),
            Err(LockError::Timeout { .. }) => self.wait_queued(request),
            Err(e) => Err(e.into()),
        }
    }

    /// Today's path: one transaction, one commit.
    fn commit_alone(&self, request: Request) -> Result<Done> {
        let mut txn = self.write()?;
        let applied = apply(&mut txn, request)?;
        let info = txn.commit()?;
        Ok(done(applied, info))
    }

    /// As the holder of the write lock: applies `own` (if any), then commits it
    /// with every queued request. Returns the own request's result.
    fn combine(&self, own: Option<Request>) -> Result<Option<Done>> {
        let mut txn = WriteTxn::begin(self)?;
        let own = own.map(|request| apply(&mut txn, request));
        let info = commit_with_queue(txn)?;
        own.map(|own| own.map(|applied| done(applied, info)))
            .transpose()
    }

    /// Returns every claimed entry of this process's batch to the queue, ignoring
    /// errors (a claim left behind is retaken by the next combiner, §12.3).
    fn unclaim(&self, queue: &Queue, ids: &[String]) {
        for id in ids {
            let _ = queue.unclaim(id);
        }
    }

    fn unclaim_all(&self, queue: &Queue) {
        if let Ok(entries) = queue.list() {
            for entry in entries.iter().filter(|e| e.claimed) {
                if wire::read_outcome(&self.layout().staging().join(&entry.id))
                    .is_ok_and(|o| o.is_none())
                {
                    let _ = queue.unclaim(&entry.id);
                }
            }
        }
    }

    /// Claims the queued requests of live callers, oldest first, within the batch
    /// limits. A request whose caller is gone is dropped (its entry removed).
    fn claim_batch(&self, queue: &Queue) -> Result<Vec<Claim>> {
        let mut claims = Vec::new();
        let mut row_bytes = 0;
        for Entry { id, claimed } in queue.list()? {
            if claims.len() >= BATCH_REQUESTS || row_bytes >= BATCH_ROW_BYTES {
                break;
            }
            let dir = self.layout().staging().join(&id);
            if claimed {
                // Left by an earlier holder: with an outcome, its caller collects it;
                // without one, that holder did not decide (recovery ran): take it.
                if wire::read_outcome(&dir)?.is_some() {
                    if !staging::owner_alive(&dir) {
                        queue.forget(&id)?;
                    }
                    continue;
                }
            } else if !queue.claim(&id)? {
                continue;
            }
            if !staging::owner_alive(&dir) {
                queue.forget(&id)?;
                continue;
            }
            let (request, bytes) = match wire::read_request(&dir) {
                Ok(read) => read,
                Err(error) => match ErrorDoc::of(&error) {
                    Some(doc) => {
                        write_plain(&dir.join(wire::OUTCOME_FILE), &OutcomeDoc::err(doc))?;
                        continue;
                    }
                    None => return Err(error),
                },
            };
            row_bytes += bytes;
            claims.push(Claim {
                id: id.clone(),
                request: self.materialize(&dir, request)?,
            });
        }
        Ok(claims)
    }

    /// A request read from its folder, as the combiner applies it.
    fn materialize(&self, dir: &std::path::Path, read: ReadRequest) -> Result<Request> {
        Ok(match read {
            ReadRequest::Rows {
                table,
                rows,
                create,
                key,
            } => Request::Rows {
                table,
                rows: *rows,
                create,
                key,
            },
            ReadRequest::Add {
                kind,
                name,
                overwrite,
            } => Request::Add {
                staged: StagedElement::borrowed(dir.to_path_buf(), kind, ElementName::new(&name)?),
                overwrite,
            },
            ReadRequest::Transform {
                name,
                transformations,
            } => Request::Transform {
                name,
                transformations,
            },
        })
    }

    /// A new staging folder (§4 step 1) to hold a request about `name` that stages
    /// no element: an append's rows, new transformations. Its element kind is never
    /// looked at.
    fn request_folder(&self, name: &str) -> Result<StagedElement> {
        let publisher = std::sync::Arc::new(self.publisher());
        StagedElement::request_folder(self.layout(), &publisher, ElementName::new(name)?)
    }

    /// The waiter: queues the request, waits for the lock, and returns the outcome the
    /// combiner wrote, or commits the request itself.
    fn wait_queued(&self, request: Request) -> Result<Done> {
        let (holder, request) = match request {
            Request::Rows {
                table,
                rows,
                create,
                key,
            } => {
                let holder = self.request_folder(&table)?;
                wire::write_rows_request(
                    &holder.dir,
                    &table,
                    &rows,
                    create.as_ref(),
                    key.as_deref(),
                )?;
                let request = Request::Rows {
                    table,
                    rows,
                    create,
                    key,
                };
                (Some(holder), request)
            }
            Request::Add { staged, overwrite } => {
                wire::write_add_request(&staged.dir, staged.kind, staged.name.as_str(), overwrite)?;
                (None, Request::Add { staged, overwrite })
            }
            Request::Transform {
                name,
                transformations,
            } => {
                let holder = self.request_folder(&name)?;
                wire::write_transform_request(&holder.dir, &name, &transformations)?;
                let request = Request::Transform {
                    name,
                    transformations,
                };
                (Some(holder), request)
            }
        };
        let dir: PathBuf = match (&holder, &request) {
            (Some(holder), _) => holder.dir.clone(),
            (None, Request::Add { staged, .. }) => staged.dir.clone(),
            (None, Request::Rows { .. } | Request::Transform { .. }) => {
                unreachable!("rows and transformations always have a holder")
            }
        };
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .expect("a staging folder has a name");
        let waiting = Waiting {
            queue: self.queue(),
            id,
            dir,
            holder,
        };
        waiting.queue.enqueue(&waiting.id)?;
        self.await_outcome(waiting, request)
    }

    /// Step 5 of Algorithm W: looks for the outcome the combiner writes and tries the
    /// write lock without waiting (so that a request no combiner takes is committed
    /// by its own caller); between two looks, waits for the read lock, which every
    /// waiter gets at once when the holder releases.
    fn await_outcome(&self, waiting: Waiting, request: Request) -> Result<Done> {
        let started = Instant::now();
        let timeout = self.options().lock_timeout;
        // Set once the timeout passed while a combiner held the request.
        let mut claimed_until: Option<Instant> = None;
        let mut pause = FIRST_POLL;
        // Whether the last wait got the read lock (rather than timing out).
        let mut granted = false;
        // Since when the lock has been found free at every look while this waiter
        // let others go first.
        let mut yielding_since: Option<Instant> = None;
        loop {
            let outcome = match wire::read_outcome(&waiting.dir) {
                Ok(outcome) => outcome,
                Err(error) => {
                    waiting.leave(request);
                    return Err(error);
                }
            };
            if let Some(outcome) = outcome {
                // The combiner's journal is decided; the read lock (with recovery
                // when that combiner died) waits until it is applied, so the caller's
                // next read sees its operation and the folder may go.
                match self.read_guard() {
                    Ok(_applied) => {
                        let forgotten = waiting.queue.forget(&waiting.id);
                        drop(request);
                        drop(waiting);
                        forgotten?;
                    }
                    // Decided all the same: the result stands, the files stay.
                    Err(_) => waiting.leave(request),
                }
                return outcome_result(outcome);
            }
            let tried = if yielding_since.is_none_or(|since| since.elapsed() < MAX_YIELD) {
                self.lock().write_behind_waiters()
            } else {
                self.lock().write(Some(Duration::ZERO))
            };
            match tried {
                Ok(guard) => {
                    super::txn::recover(self, &guard)?;
                    return self.collect(&waiting, request);
                }
                Err(LockError::Timeout { .. }) => {}
                Err(error) => return Err(self.give_up(waiting, request, error.into())),
            }
            let now = Instant::now();
            match claimed_until {
                Some(until) if now >= until => {
                    let error = Error::OutcomeUnknown {
                        dataset: self.root().to_path_buf(),
                        waited: started.elapsed(),
                    };
                    waiting.leave(request);
                    return Err(error);
                }
                Some(_) => {}
                None if timeout.is_some_and(|t| now.duration_since(started) >= t) => {
                    let error = LockError::Timeout {
                        dataset: self.root().to_path_buf(),
                        mode: crate::lock::LockMode::Write,
                        waited: started.elapsed(),
                    };
                    if waiting.queue.withdraw(&waiting.id)? {
                        return Err(error.into());
                    }
                    claimed_until =
                        Some(now + timeout.map_or(CLAIMED_GRACE, |t| t.max(CLAIMED_GRACE)));
                }
                None => {}
            }
            if granted {
                // The holder is gone but other waiters still read: let them finish.
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_POLL);
            }
            // Sleep in the kernel until the holder releases: the read lock is granted
            // to every waiter at once.
            let deadline = claimed_until.or_else(|| timeout.and_then(|t| started.checked_add(t)));
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let before = Instant::now();
            granted = match self.lock().read(wait) {
                Ok(_holder_gone) => true,
                Err(LockError::Timeout { .. }) => false,
                Err(error) => return Err(self.give_up(waiting, request, error.into())),
            };
            if before.elapsed() >= MET_A_HOLDER {
                yielding_since = None;
            } else {
                yielding_since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// Ends a wait on `error`: withdraws the request, and when a combiner claimed it
    /// first, leaves its files to that combiner's journal.
    fn give_up(&self, waiting: Waiting, request: Request, error: Error) -> Error {
        if !waiting.queue.withdraw(&waiting.id).unwrap_or(false) {
            waiting.leave(request);
        }
        error
    }

    /// Holding the write lock (recovery done): the outcome of the queued request
    /// `id`, or, when no combiner took it, its own commit as the combiner.
    fn collect(&self, waiting: &Waiting, request: Request) -> Result<Done> {
        let Waiting { queue, id, dir, .. } = waiting;
        let outcome = wire::read_outcome(dir)?;
        queue.forget(id)?;
        let Some(outcome) = outcome else {
            return self.combine(Some(request)).map(|d| d.expect("own request"));
        };
        let result = outcome_result(outcome);
        drop(request);
        // Queued work never waits for a new holder: combine it before releasing.
        if queue
            .list()
            .is_ok_and(|entries| entries.iter().any(|e| !e.claimed))
        {
            let _ = self.combine(None);
        }
        result
    }
}

/// Commits the outermost transaction `txn` together with every request queued by
/// other callers (up to the batch limits), in one journal, and writes each queued
/// request's outcome: a success as a step of that journal, a refusal directly.
pub(super) fn commit_with_queue(mut txn: WriteTxn<'_>) -> Result<CommitInfo> {
    let dataset = txn.dataset();
    let queue = dataset.queue();
    let claims = match dataset.claim_batch(&queue) {
        Ok(claims) => claims,
        Err(error) => {
            // Only the claims taken before the error exist; return them all.
            dataset.unclaim_all(&queue);
            return Err(error);
        }
    };
    if claims.is_empty() {
        return txn.commit_own();
    }
    let claimed: Vec<String> = claims.iter().map(|c| c.id.clone()).collect();
    let mut accepted: Vec<(String, Option<AppendOutcome>)> = Vec::new();
    let mut refused: Vec<(String, ErrorDoc)> = Vec::new();
    // New transformations of an element this batch adds or removes wait for the next
    // commit: they apply to the element as that commit finds it.
    let mut deferred: Vec<String> = Vec::new();
    for claim in claims {
        if let Request::Transform { name, .. } = &claim.request
            && txn.adds_or_removes(name)
        {
            deferred.push(claim.id);
            continue;
        }
        match apply(&mut txn, claim.request) {
            Ok(Applied::Rows(outcome)) => accepted.push((claim.id, Some(outcome))),
            Ok(Applied::Changed) => accepted.push((claim.id, None)),
            Err(error) => match ErrorDoc::of(&error) {
                Some(doc) => refused.push((claim.id, doc)),
                None => {
                    // Not the request's own (I/O, the store): nobody's commit.
                    drop(txn);
                    dataset.unclaim(&queue, &claimed);
                    return Err(error);
                }
            },
        }
    }
    let current = generation(dataset)?;
    if txn.mark() == 0 {
        // Nothing changes (repeated keys only): no generation step; each outcome names
        // the committed state, as a direct call's would.
        for (id, append) in &accepted {
            let path = dataset.layout().staging().join(id).join(wire::OUTCOME_FILE);
            let _ = write_plain(&path, &OutcomeDoc::ok(current, append.as_ref()));
        }
    } else {
        for (id, append) in &accepted {
            txn.write_hidden(
                outcome_path(dataset, id),
                OutcomeDoc::ok(current + 1, append.as_ref()).to_text(),
            );
        }
    }
    dataset.unclaim(&queue, &deferred);
    let committed = txn.commit_own();
    if let Err(error) = &committed
        && !matches!(error, Error::CommitPending(_))
    {
        // Undecided: nothing of the batch is committed; the claims wait again.
        dataset.unclaim(&queue, &claimed);
        return committed;
    }
    for (id, doc) in refused {
        // A refusal does not depend on the commit: written directly.
        let path = dataset
            .layout()
            .staging()
            .join(&id)
            .join(wire::OUTCOME_FILE);
        let _ = write_plain(&path, &OutcomeDoc::err(doc));
    }
    committed
}

/// The outcome file of request `id`, relative to the dataset root.
fn outcome_path(dataset: &Dataset, id: &str) -> String {
    dataset
        .layout()
        .hidden_relative(&[super::layout::STAGING_DIR, id, wire::OUTCOME_FILE])
}

/// Writes an outcome that no commit carries (a refusal), without fsync: it is
/// read only by its caller, which lives no longer than the page cache.
fn write_plain(path: &std::path::Path, doc: &OutcomeDoc) -> Result<()> {
    crate::storage::Publisher::with_durability(crate::storage::Durability::Process)
        .write(path, doc.to_text().as_bytes())
}

/// The caller's result from its outcome document.
fn outcome_result(outcome: OutcomeDoc) -> Result<Done> {
    outcome.into_result().map(|(generation, append)| {
        let info = CommitInfo {
            generation,
            durable: true,
            dropped_consolidated: None,
        };
        match append {
            Some(append) => Done::Rows(append, info),
            None => Done::Changed(info),
        }
    })
}

/// Applies one request to the transaction; on error the transaction is as before.
fn apply(txn: &mut WriteTxn<'_>, request: Request) -> Result<Applied> {
    let mark = txn.mark();
    let applied = match request {
        Request::Rows {
            table,
            rows,
            create,
            key,
        } => txn
            .append_rows(&table, &rows, create.as_ref(), key.as_deref())
            .map(Applied::Rows),
        Request::Add { staged, overwrite } => {
            txn.add_staged(staged, overwrite).map(|()| Applied::Changed)
        }
        Request::Transform {
            name,
            transformations,
        } => txn
            .set_transformations(&name, &transformations)
            .map(|()| Applied::Changed),
    };
    if applied.is_err() {
        txn.rollback_to(mark);
    }
    applied
}

fn done(applied: Applied, info: CommitInfo) -> Done {
    match applied {
        Applied::Rows(outcome) => Done::Rows(outcome, info),
        Applied::Changed => Done::Changed(info),
    }
}
