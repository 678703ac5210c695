//! The writer: one thread that applies every write, in arrival order.
//!
//! It takes all the requests waiting in its queue (up to [`MAX_BATCH`]),
//! applies them in one redb write transaction per database, makes the disk
//! part durable once (one fsync for the whole batch: group commit; of the
//! write-ahead log's record, or of a durable commit, see [`super::wal`]),
//! then publishes the commit (catalog, figures, change sets, revision: see
//! [`crate::store::publish`]), and only then answers. So an answer is sent
//! only for a durable write, and a reader never sees a write that is not
//! durable.
//!
//! The rules that decide what a write does are not here: key/value writes
//! are judged by [`crate::store::kv`] and catalog writes by
//! [`crate::store::plan`]; the writer stores what they decided. Each
//! request is judged against the state left by the requests before it, so
//! a refused request leaves the batch as it was. A storage failure while
//! changing or committing fails the batch.
//!
//! The seams: this file is the thread loop and the replies; [`batch`] one
//! batch's transactions and its commit; [`kv`] key/value writes; [`catalog`]
//! catalog writes; [`expiry`] the sweep; [`history`] the change log;
//! [`moves`] a project's move between databases; [`tables`] the table
//! helpers they share.
//!
//! A delete by a large prefix runs in chunks, one per batch, beside the
//! other writes ([`sweep`]); the project's own writes wait for it.
//!
//! Revisions: the writer alone issues them. A disk commit records the last
//! one. Memory projects change nothing on disk, so for them the writer
//! reserves revisions ahead (`reserved`, [`RESERVE_STEP`] at a time) in a disk
//! commit before it hands them out; after a restart the counter resumes past
//! the reservation, and no revision is ever issued twice.

mod batch;
mod catalog;
mod expiry;
mod history;
mod kv;
mod moves;
mod sweep;
mod tables;
#[cfg(test)]
pub(super) mod testing;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::codec::HistoryRecord;
pub(super) use super::wal::{Logged, Wal};
use crate::domain::{ProjectId, StorageMode};
use crate::store::{Authority, CatalogWrite, HistoryLimits, KvCommit, KvWrite, StoreError};
use batch::Batch;
pub(super) use catalog::next_incarnation;
pub(super) use moves::copy_table;
use sweep::Step;
pub(super) use sweep::Sweep;
pub(super) use tables::put_record;

/// The most requests folded into one commit.
const MAX_BATCH: usize = 1024;
/// How long a sweep waits after a failed commit before it tries again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How many revisions one reservation for memory projects covers.
const RESERVE_STEP: u64 = 1000;

/// Where the answer to a request goes.
pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer, with its typed reply.
pub enum Command {
    Kv(KvWrite, Reply<KvCommit>),
    /// A catalog write and who asks for it.
    Catalog(CatalogWrite, Authority, Reply<()>),
    /// Remove the keys whose expiry has come; each project with such keys
    /// takes one revision.
    Expire(Reply<()>),
    /// Finish what is queued before this, then stop.
    Close(Reply<()>),
    /// Finish what is queued before this, then take a snapshot of both
    /// databases at the revision of that moment (for a backup).
    Snapshot(Reply<Box<super::backup::RedbSnapshot>>),
    /// Finish what is queued before this and every sweep, checkpoint, then
    /// copy the disk database into a compacted file and put it in place.
    Compact(Reply<crate::store::Compacted>),
}

/// A request's outcome in a batch, held until the batch has committed.
enum Answer {
    Kv(Reply<KvCommit>, Result<KvCommit, StoreError>),
    Unit(Reply<()>, Result<(), StoreError>),
}

impl Answer {
    /// The storage failure this outcome reports, if it is one.
    fn fatal(&self) -> Option<&StoreError> {
        match self {
            Answer::Kv(_, Err(error)) | Answer::Unit(_, Err(error)) => {
                is_fatal(error).then_some(error)
            }
            _ => None,
        }
    }

    /// Sends the outcome; after a failed commit, a success (or a storage
    /// failure of its own) becomes the batch's failure, and refusals stand.
    fn send(self, failure: Option<&StoreError>) {
        fn outcome<T>(
            result: Result<T, StoreError>,
            failure: Option<&StoreError>,
        ) -> Result<T, StoreError> {
            match (failure, result) {
                (Some(failure), Ok(_)) => Err(failure.clone()),
                (Some(failure), Err(error)) if is_fatal(&error) => Err(failure.clone()),
                (_, result) => result,
            }
        }
        match self {
            Answer::Kv(reply, result) => {
                let _ = reply.send(outcome(result, failure));
            }
            Answer::Unit(reply, result) => {
                let _ = reply.send(outcome(result, failure));
            }
        }
    }
}

pub struct Writer {
    shared: Arc<Shared>,
    /// The disk database's write-ahead log.
    wal: Wal,
    /// The last revision issued.
    revision: u64,
    /// The highest revision reserved on disk for memory projects.
    reserved: u64,
    /// Each project's change-log figures, as committed.
    history: HashMap<ProjectId, HistoryRecord>,
    limits: HistoryLimits,
    /// Deletes by large prefixes in progress, at most one per project.
    sweeps: Vec<Sweep>,
    /// Requests for a project being swept, in arrival order, held until its
    /// sweep is over.
    held: Vec<Command>,
    /// Held requests whose sweep is over: the head of the next batch.
    released: VecDeque<Command>,
    /// The disk database's transaction, left open by the batches that only
    /// the log made durable (see [`super::held`]).
    open: Option<batch::Open>,
    /// Why the last commit failed, if it did.
    failure: Option<StoreError>,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        wal: Wal,
        revision: u64,
        reserved: u64,
        history: HashMap<ProjectId, HistoryRecord>,
        limits: HistoryLimits,
        sweeps: Vec<Sweep>,
    ) -> Writer {
        Writer {
            shared,
            wal,
            revision,
            reserved,
            history,
            limits,
            sweeps,
            held: Vec::new(),
            released: VecDeque::new(),
            open: None,
            failure: None,
        }
    }

    pub fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        loop {
            // With a sweep going on, the writer does not wait for requests:
            // each turn of the loop moves the sweep on by a chunk.
            let idle = self.sweeps.is_empty() && self.released.is_empty();
            if !idle && self.failure.is_some() {
                // A sweep does not retry a failing commit (a full disk) in
                // a busy loop.
                std::thread::sleep(RETRY_PAUSE);
            }
            let first = if idle {
                match receiver.blocking_recv() {
                    Some(command) => Some(command),
                    None => break,
                }
            } else {
                match receiver.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            };
            let mut batch: Vec<Command> = self.released.drain(..).collect();
            batch.extend(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            if self.process(batch) {
                break;
            }
        }
    }

    /// Whether a request must wait for a sweep of its project.
    fn waits(&self, command: &Command) -> bool {
        subject(command).is_some_and(|project| self.swept(project))
    }

    /// Whether a sweep of the project is under way.
    fn swept(&self, project: &ProjectId) -> bool {
        self.sweeps.iter().any(|sweep| &sweep.project == project)
    }

    /// Finishes every sweep, and the requests they held; stops at the
    /// first commit that fails.
    fn settle(&mut self) -> Result<(), StoreError> {
        while !self.sweeps.is_empty() || !self.released.is_empty() {
            let released: Vec<Command> = self.released.drain(..).collect();
            if released.is_empty() {
                self.commit(Vec::new());
            } else {
                self.process(released);
            }
            if let Some(failure) = &self.failure {
                return Err(failure.clone());
            }
        }
        Ok(())
    }

    /// Applies a batch; true when a `Close` was among it. A change of a
    /// project's storage runs on its own, between the batches around it.
    fn process(&mut self, batch: Vec<Command>) -> bool {
        let mut pending = Vec::new();
        for command in batch {
            if self.waits(&command) {
                self.held.push(command);
                continue;
            }
            match command {
                Command::Close(reply) => {
                    self.commit(std::mem::take(&mut pending));
                    // The next start has nothing to replay.
                    let _ = reply.send(self.checkpoint());
                    return true;
                }
                // Between two commits, so that both databases hold exactly
                // the writes up to `self.revision`.
                Command::Snapshot(reply) => {
                    self.commit(std::mem::take(&mut pending));
                    // A backup holds no half-removed prefix.
                    let snapshot = self.settle().and_then(|()| {
                        self.release()?;
                        super::backup::take(&self.shared, self.revision).map(Box::new)
                    });
                    let _ = reply.send(snapshot);
                }
                Command::Compact(reply) => {
                    self.commit(std::mem::take(&mut pending));
                    let _ = reply.send(self.compact());
                }
                Command::Catalog(CatalogWrite::UpdateProject { id, change }, by, reply)
                    if self.is_move(&id, &change) =>
                {
                    self.commit(std::mem::take(&mut pending));
                    // A delete by prefix in the batch before it may have
                    // begun a sweep of the project: the move waits for it.
                    if self.swept(&id) {
                        let update = CatalogWrite::UpdateProject { id, change };
                        self.held.push(Command::Catalog(update, by, reply));
                        continue;
                    }
                    if self.still_full() {
                        let _ = reply.send(Err(StoreError::StorageFull));
                        continue;
                    }
                    let moved = self
                        .release()
                        .and_then(|()| self.move_project(&id, &change, &by));
                    // The move's commits were durable (when it moved
                    // anything): every commit before them is too.
                    if moved.is_ok() {
                        self.wal.checkpointed();
                    }
                    let _ = reply.send(moved);
                }
                // The timer's sweep, when nothing is due: answered at once,
                // without a write transaction (and without dropping the
                // readers' shared snapshot), but for a checkpoint once
                // writes have stopped.
                Command::Expire(reply) if !self.expiry_due() && !self.history_due() => {
                    // Writes have stopped: a waited checkpoint starts the
                    // log again, so that the next start has nothing to
                    // replay. (Its failure is logged and handled there.)
                    if pending.is_empty() && self.wal.quiet() {
                        let _ = self.guarded_checkpoint();
                    }
                    let _ = reply.send(Ok(()));
                }
                command => pending.push(command),
            }
        }
        self.commit(pending);
        false
    }

    /// Applies the commands in one transaction per database and answers them.
    fn commit(&mut self, commands: Vec<Command>) {
        if commands.is_empty() && self.sweeps.is_empty() {
            return;
        }
        let full = self.still_full();
        let (commands, memory_goes_on) = if full {
            self.refuse_disk_writes(commands)
        } else {
            (commands, true)
        };
        // While the disk is full, a sweep on it waits, and so do the others
        // once the revisions reserved for memory projects would run out.
        let runs =
            |sweep: &Sweep| !full || (sweep.storage == StorageMode::Memory && memory_goes_on);
        if full {
            // What waits for a sweep that waits is refused, not kept
            // waiting for room.
            let waiting: Vec<ProjectId> = self
                .sweeps
                .iter()
                .filter(|sweep| !runs(sweep))
                .map(|sweep| sweep.project.clone())
                .collect();
            let (refused, held) = std::mem::take(&mut self.held)
                .into_iter()
                .partition(|command| subject(command).is_some_and(|p| waiting.contains(p)));
            self.held = held;
            fail_all(refused, &StoreError::StorageFull);
        }
        let sweeping = self.sweeps.iter().any(runs);
        if commands.is_empty() && !sweeping {
            if full {
                // The run loop pauses before it tries a waiting sweep
                // again, and `settle` stops.
                self.failure = Some(StoreError::StorageFull);
            }
            return;
        }
        if !full {
            self.reopen();
        }
        // A shared snapshot keeps redb from reusing the pages that the last
        // commit freed; dropped now, it pins nothing while this batch
        // commits (readers that come meanwhile take a new one, as any
        // short-lived read would).
        // (While the disk's transaction is open, its snapshot stays: the
        // batches held since it was taken free no page it can see.)
        if self.open.is_none() {
            self.shared.disk_reads.invalidate();
        }
        self.shared.memory_reads.invalidate();
        let begun = Batch::begin(
            &self.shared,
            self.open.take(),
            self.revision,
            self.reserved,
            &self.history,
            self.limits,
        );
        let mut batch = match begun {
            Ok(batch) => batch,
            Err(error) => {
                self.failure = Some(error.clone());
                return fail_all(commands, &error);
            }
        };
        batch.paused = self.sweeps.iter().map(|s| s.project.clone()).collect();
        batch.disk_full = full;
        let size = commands.len();
        let mut answers = Vec::with_capacity(size);
        // Consecutive writes to one project (none a delete by prefix, which
        // may begin a sweep) are applied together: see `Batch::apply_run`.
        let mut run: Vec<(KvWrite, Reply<KvCommit>)> = Vec::new();
        for command in commands {
            // A request after a sweep of its project began in this batch.
            if subject(&command).is_some_and(|p| batch.paused.contains(p)) {
                self.held.push(command);
                continue;
            }
            let command = match command {
                Command::Kv(write, reply) if sweep::prefix_delete(&write).is_none() => {
                    if run.first().is_some_and(|(w, _)| w.project != write.project) {
                        answers.extend(batch.apply_run(&mut run));
                    }
                    run.push((write, reply));
                    continue;
                }
                command => command,
            };
            answers.extend(batch.apply_run(&mut run));
            answers.push(match command {
                Command::Kv(write, reply) => match batch.sweep_for(write, reply) {
                    Ok(sweep) => {
                        batch.paused.push(sweep.project.clone());
                        self.sweeps.push(sweep);
                        continue;
                    }
                    // Not a large one: applied like any write.
                    Err((write, reply)) => {
                        run.push((write, reply));
                        continue;
                    }
                },
                Command::Catalog(write, by, reply) => {
                    Answer::Unit(reply, batch.apply_catalog(write, &by))
                }
                Command::Expire(reply) => Answer::Unit(reply, batch.apply_expiry()),
                Command::Close(reply) => Answer::Unit(reply, Ok(())),
                Command::Snapshot(reply) => {
                    let _ = reply.send(Err(StoreError::internal("a snapshot inside a batch")));
                    continue;
                }
                Command::Compact(reply) => {
                    let _ = reply.send(Err(StoreError::internal("a compaction inside a batch")));
                    continue;
                }
            });
        }
        answers.extend(batch.apply_run(&mut run));
        // Each sweep's chunk, in the same commit.
        let mut checkpoints = Vec::with_capacity(self.sweeps.len());
        let mut answered = Vec::new();
        let mut failure = None;
        for (index, sweep) in self.sweeps.iter_mut().enumerate() {
            checkpoints.push(sweep.checkpoint());
            if !runs(sweep) {
                continue;
            }
            match batch.sweep_step(sweep) {
                Ok(Step::Going | Step::Done) => {}
                Ok(Step::Answered(answer)) => {
                    answered.push(index);
                    answers.push(answer);
                }
                // A storage failure fails the batch; the sweep tries again.
                Err(error) if is_fatal(&error) => failure = Some(error),
                Err(error) => {
                    tracing::error!(%error, project = %sweep.project, "a delete by prefix stopped");
                    answers.extend(sweep.fail(error));
                }
            }
        }
        let fatal = failure.or_else(|| answers.iter().find_map(|answer| answer.fatal().cloned()));
        let continued = batch.is_continued();
        let outcome = match fatal {
            Some(error) => {
                drop(batch);
                Err(error)
            }
            None => batch.commit(&mut self.wal),
        };
        match outcome {
            Ok(committed) => {
                self.failure = None;
                metrics::counter!("kvs_commits_total").increment(1);
                metrics::histogram!("kvs_commit_batch_size").record(size as f64);
                self.absorb(committed);
                for answer in answers {
                    answer.send(None);
                }
                self.end_sweeps(|sweep, _| sweep.is_over());
            }
            Err(error) => {
                metrics::counter!("kvs_commit_failures_total").increment(1);
                self.failure = Some(error.clone());
                // The writes held in the transaction went with it.
                self.recover(&error, continued);
                for answer in answers {
                    answer.send(Some(&error));
                }
                // A sweep whose delete was answered with the failure is
                // over; the others go back to where they stood.
                for (sweep, checkpoint) in self.sweeps.iter_mut().zip(checkpoints) {
                    sweep.restore(checkpoint);
                }
                self.end_sweeps(|sweep, index| sweep.is_over() || answered.contains(&index));
            }
        }
    }

    /// [`Shared::still_full`](super::Shared::still_full).
    fn still_full(&mut self) -> bool {
        self.shared.still_full()
    }

    /// On a full disk: answers the requests that would write to it with
    /// that failure, and gives back the others (memory projects' writes),
    /// with whether memory projects' writes and sweeps may go on: while the
    /// revisions reserved for them last (each write or sweep takes one at
    /// most).
    fn refuse_disk_writes(&mut self, commands: Vec<Command>) -> (Vec<Command>, bool) {
        let catalog = self.shared.view.catalog();
        let on_disk = |write: &KvWrite| {
            catalog
                .project(&write.project)
                .is_some_and(|project| project.settings.storage == StorageMode::Disk)
        };
        let (refused, kept): (Vec<Command>, Vec<Command>) =
            commands.into_iter().partition(|command| match command {
                Command::Kv(write, _) => on_disk(write),
                _ => true,
            });
        fail_all(refused, &StoreError::StorageFull);
        // Past the revisions reserved on disk, a memory project's write
        // needs a disk commit too.
        let sweeps = self
            .sweeps
            .iter()
            .filter(|sweep| sweep.storage == StorageMode::Memory)
            .count();
        let wanted = (kept.len() + sweeps) as u64;
        if self.revision.saturating_add(wanted) > self.reserved {
            fail_all(kept, &StoreError::StorageFull);
            return (Vec::new(), false);
        }
        (kept, true)
    }

    /// Drops the sweeps that `over` says are over and releases the requests
    /// they held, in their order.
    fn end_sweeps(&mut self, over: impl Fn(&Sweep, usize) -> bool) {
        let mut index = 0;
        let mut ended = Vec::new();
        self.sweeps.retain(|sweep| {
            let keep = !over(sweep, index);
            index += 1;
            if !keep {
                ended.push(sweep.project.clone());
            }
            keep
        });
        if ended.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        for command in held {
            if self.waits(&command) {
                self.held.push(command);
            } else {
                self.released.push_back(command);
            }
        }
    }

    /// After a failed commit: nothing of the batch was applied, but redb
    /// refuses every later write until the database is reopened. The writer
    /// takes the database out of service (readers answer 503 meanwhile),
    /// waits for readers to let go of it, and opens it again. So it does
    /// too after any failure that took writes held in an open transaction
    /// (`lost_held`): the reopened database gets them from the log.
    fn recover(&mut self, error: &StoreError, lost_held: bool) {
        tracing::error!(%error, "a commit failed; its writes were not applied");
        self.open = None;
        if !is_fatal(error) && !lost_held {
            return;
        }
        self.shared.writable.store(false, Ordering::Release);
        // The shared snapshot holds the old database open too.
        self.shared.disk_reads.invalidate();
        if let Some(old) = self.shared.disk.swap(None) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                // A reader that took the database before it was withdrawn
                // may have left a snapshot of it (which holds it) since.
                self.shared.disk_reads.invalidate();
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(old);
        }
        self.reopen();
        // (A reopen that failed for lack of room noted it itself.)
        if self.shared.disk.load().is_some() {
            self.note_if_full(error);
        }
    }

    /// Stores again the writes that only the write-ahead log holds (at
    /// start, or after the database was reopened, which drops the commits
    /// that were not durable), in one commit without a sync: the log keeps
    /// them until the next checkpoint. After a reopen (`published`), the
    /// view has published them already: their change sets go to the change
    /// log, not to the feeds again.
    pub(super) fn replay(
        &mut self,
        writes: Vec<Logged>,
        published: bool,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let count = writes.len();
        let (first, last) = (writes[0].revision, writes[count - 1].revision);
        let mut batch = Batch::begin(
            &self.shared,
            None,
            self.revision,
            self.reserved,
            &self.history,
            self.limits,
        )?;
        let mut stored = 0;
        for write in writes {
            stored += usize::from(batch.replay(write)?);
        }
        batch.revision = batch.revision.max(self.revision);
        batch.replay = true;
        batch.quiet = published;
        let committed = batch.commit(&mut self.wal)?;
        self.absorb(committed);
        // Only what was stored is counted as stored: a write whose project
        // is gone is left out, and said so.
        tracing::info!(
            writes = stored,
            skipped = count - stored,
            first,
            last,
            "stored again the writes that the write-ahead log held ({stored} of {count}; the \
             others are of projects deleted or moved since)"
        );
        Ok(())
    }

    /// Takes over what a committed batch left: the revision counters and
    /// the change-log figures.
    fn absorb(&mut self, committed: batch::Committed) {
        self.open = committed.open;
        self.revision = committed.revision;
        self.reserved = committed.reserved;
        for (id, record) in committed.history {
            match record {
                Some(record) => self.history.insert(id, record),
                None => self.history.remove(&id),
            };
        }
    }

    /// A durable commit of the disk database, when the log holds writes
    /// that only it has made durable.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.release()?;
        if !self.wal.holds_writes() {
            return Ok(());
        }
        let txn = self.shared.begin_write(crate::domain::StorageMode::Disk)?;
        txn.commit().map_err(super::codec::storage_error)?;
        self.wal.checkpointed();
        Ok(())
    }

    /// Commits the writes held in the disk database's open transaction, if
    /// any (not durably: the log has them), before anything that begins
    /// another or reads the database as committed (a move, a snapshot, a
    /// checkpoint). A failure reopens the database, as a failed commit.
    fn release(&mut self) -> Result<(), StoreError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let mut txn = open.txn;
        let released = txn
            .set_durability(redb::Durability::None)
            .map_err(super::codec::storage_error)
            .and_then(|()| {
                txn.set_quick_repair(false);
                batch::release(&self.shared, || txn.commit())
            });
        if let Err(error) = &released {
            self.failure = Some(error.clone());
            self.recover(error, true);
        }
        released
    }

    /// [`Writer::checkpoint`] refused without a try while the disk is known
    /// to be full (it would fail, and reopen the database, the same way);
    /// a failure is a failed commit (the database is reopened).
    fn guarded_checkpoint(&mut self) -> Result<(), StoreError> {
        if self.still_full() {
            return Err(StoreError::StorageFull);
        }
        // (A failed release has reopened the database itself.)
        self.release()?;
        let checkpointed = self.checkpoint();
        if let Err(error) = &checkpointed {
            self.recover(error, false);
        }
        checkpointed
    }

    /// `POST /v1/compact`: after every sweep and a guarded checkpoint, the
    /// copy (`compact::compact_live`). A failed copy leaves the databases
    /// as they were.
    fn compact(&mut self) -> Result<crate::store::Compacted, StoreError> {
        self.settle()?;
        self.guarded_checkpoint()?;
        let compacted = super::compact::compact_live(&self.shared);
        if let Err(error) = &compacted {
            tracing::error!(%error, "a compaction failed");
        }
        compacted
    }

    /// Opens the disk database if it is out of service.
    fn reopen(&mut self) {
        if self.shared.disk.load().is_some() {
            return;
        }
        // A reader that still had the old database may have left a snapshot
        // of it, which would keep its file locked.
        self.shared.disk_reads.invalidate();
        match super::deferred_sync::create(&self.shared.path, self.shared.cache_bytes) {
            Ok(db) => {
                // The commits that were not durable are gone from it (as far
                // as closing the old one did not make them durable): the log
                // has them. Their changes are counted again as they are
                // stored again, so the change-log figures start from the
                // ones of the commit the database holds, not from the ones
                // that already counted them.
                let durable = super::durable_revision(&db).and_then(|durable| {
                    let histories = super::disk_histories(&db, &self.shared.view.catalog())?;
                    Ok((durable, histories))
                });
                self.wal.reopened();
                // Readers wait (503) until the log's writes are in it.
                self.shared.replaying.store(true, Ordering::SeqCst);
                self.shared.disk.store(Some(Arc::new(db)));
                let replayed = durable
                    .and_then(|(durable, histories)| {
                        self.history.extend(histories);
                        // A commit answered as failed may be in it all the
                        // same (its last sync was done before the failure
                        // was seen): its revisions are not handed out again.
                        self.revision = self.revision.max(durable);
                        self.wal.read_since(durable)
                    })
                    .and_then(|writes| self.replay(writes, true));
                if let Err(error) = replayed {
                    tracing::error!(%error, "cannot store again the writes of the write-ahead log; will retry");
                    // The flag stays up: a reader that took the database
                    // before it is withdrawn must not read it.
                    self.shared.disk.store(None);
                    self.note_if_full(&error);
                    return;
                }
                self.shared.replaying.store(false, Ordering::SeqCst);
                self.shared.writable.store(true, Ordering::Release);
                tracing::warn!("reopened the database after a failed commit");
            }
            Err(error) => {
                tracing::error!(%error, "cannot reopen the database; will retry");
                self.note_if_full(&super::codec::storage_error(error));
            }
        }
    }

    /// After a failed commit or reopen: when it was for lack of room, the
    /// next try waits until there is more.
    fn note_if_full(&mut self, error: &StoreError) {
        if matches!(error, StoreError::StorageFull) {
            *self
                .shared
                .full
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Room::of(&self.shared.path);
        }
    }
}

/// The project whose keys or existence a request changes, if any.
fn subject(command: &Command) -> Option<&ProjectId> {
    match command {
        Command::Kv(write, _) => Some(&write.project),
        Command::Catalog(
            CatalogWrite::DeleteProject { id } | CatalogWrite::UpdateProject { id, .. },
            _,
            _,
        ) => Some(id),
        _ => None,
    }
}

/// The room on a filesystem: the blocks free for anyone, and those free
/// at all (which root may use too).
#[derive(Clone, Copy)]
pub(super) struct Room {
    available: u64,
    free: u64,
}

impl Room {
    /// The room of the filesystem holding `path`; `None` when it cannot say.
    pub(super) fn of(path: &std::path::Path) -> Option<Room> {
        let stats = rustix::fs::statvfs(path).ok()?;
        Some(Room {
            available: stats.f_bavail.saturating_mul(stats.f_frsize),
            free: stats.f_bfree.saturating_mul(stats.f_frsize),
        })
    }

    pub(super) fn grew_from(self, then: Room) -> bool {
        self.available > then.available || self.free > then.free
    }
}

/// A storage failure, as opposed to a refusal that changed nothing.
fn is_fatal(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::StorageFull
            | StoreError::Internal(_)
            | StoreError::Closed
            | StoreError::Unavailable
    )
}

fn fail_all(commands: Vec<Command>, error: &StoreError) {
    for command in commands {
        match command {
            Command::Kv(_, reply) => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Compact(reply) => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Catalog(_, _, reply) | Command::Expire(reply) | Command::Close(reply) => {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
