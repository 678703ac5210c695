//! The writer: one thread that applies every write, in arrival order.
//!
//! It takes all the requests waiting in its queue (up to [`MAX_BATCH`]),
//! applies them in one redb write transaction per database, commits the disk
//! database once (one fsync for the whole batch: group commit), then
//! publishes the new catalog, figures and revision, and only then answers.
//! So an answer is sent only for a durable write, and a reader never sees a
//! write that is not committed.
//!
//! Each request is validated against the state left by the requests before
//! it before it changes anything, so a refused request leaves the batch as
//! it was. A storage failure while changing or committing fails the batch.
//!
//! Revisions: the writer alone issues them. A disk commit records the last
//! one. Memory projects change nothing on disk, so for them the writer
//! reserves revisions ahead (`reserved`, [`RESERVE_STEP`] at a time) in a disk
//! commit before it hands them out; after a restart the counter resumes past
//! the reservation, and no revision is ever issued twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableError, WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::codec::{
    self, HistoryRecord, INLINE_LIMIT, KeyRecord, KeyTables, StatsRecord, decode_entry,
    decode_set_head, encode, encode_changes, encode_entry, expiry_key, parse_expiry_key,
    storage_error,
};
use crate::domain::{Key, ProjectId, ProjectSettings, StorageMode, Timestamp, TokenRecord};
use crate::store::{
    Catalog, CatalogWrite, Change, ChangeKind, ChangeSet, Entry, Expect, HistoryLimits, KeyMeta,
    KvCommit, KvOp, KvWrite, OpResult, Precondition, Project, ProjectChange, ProjectStats,
    StoreError, TokenScope,
};

/// The most requests folded into one commit.
const MAX_BATCH: usize = 1024;
/// How many revisions one reservation for memory projects covers.
const RESERVE_STEP: u64 = 1000;

pub enum Request {
    Kv(KvWrite),
    Catalog(CatalogWrite),
    /// Remove the keys whose expiry has come; each project with such keys
    /// takes one revision.
    Expire,
    /// Finish what is queued before this, then stop.
    Close,
    /// Finish what is queued before this, then take a snapshot of both
    /// databases at the revision of that moment (for a backup).
    Snapshot,
}

pub enum Reply {
    Kv(Result<KvCommit, StoreError>),
    Catalog(Result<(), StoreError>),
    Snapshot(Result<Box<super::backup::RedbSnapshot>, StoreError>),
}

pub struct Command {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

pub struct Writer {
    shared: Arc<Shared>,
    /// The last revision issued.
    revision: u64,
    /// The highest revision reserved on disk for memory projects.
    reserved: u64,
    /// Each project's change-log figures, as committed.
    history: HashMap<ProjectId, HistoryRecord>,
    limits: HistoryLimits,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        revision: u64,
        reserved: u64,
        history: HashMap<ProjectId, HistoryRecord>,
        limits: HistoryLimits,
    ) -> Writer {
        Writer {
            shared,
            revision,
            reserved,
            history,
            limits,
        }
    }

    pub fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = vec![first];
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

    /// Applies a batch; true when a `Close` was among it. A change of a
    /// project's storage runs on its own, between the batches around it.
    fn process(&mut self, batch: Vec<Command>) -> bool {
        let mut pending = Vec::new();
        for command in batch {
            match &command.request {
                Request::Close => {
                    self.commit(std::mem::take(&mut pending));
                    let _ = command.reply.send(Reply::Catalog(Ok(())));
                    return true;
                }
                // Between two commits, so that both databases hold exactly
                // the writes up to `self.revision`.
                Request::Snapshot => {
                    self.commit(std::mem::take(&mut pending));
                    let snapshot = super::backup::take(&self.shared, self.revision).map(Box::new);
                    let _ = command.reply.send(Reply::Snapshot(snapshot));
                }
                Request::Catalog(CatalogWrite::UpdateProject { id, change })
                    if self.is_move(id, change) =>
                {
                    self.commit(std::mem::take(&mut pending));
                    let result = self.move_project(id, change);
                    let _ = command.reply.send(Reply::Catalog(result));
                }
                // The timer's sweep, when nothing is due: answered at once,
                // without a write transaction (and without dropping the
                // readers' shared snapshot).
                Request::Expire if !self.expiry_due() && !self.history_due() => {
                    let _ = command.reply.send(Reply::Catalog(Ok(())));
                }
                _ => pending.push(command),
            }
        }
        self.commit(pending);
        false
    }

    /// Whether the first entry of either expiry index has come due (true
    /// when that cannot be read: the sweep itself will then report why).
    fn expiry_due(&self) -> bool {
        let now = Timestamp::now().millis().max(0) as u64;
        [StorageMode::Disk, StorageMode::Memory]
            .into_iter()
            .any(|storage| {
                let first = || -> Result<Option<u64>, StoreError> {
                    let txn = self
                        .shared
                        .database(storage)?
                        .begin_read()
                        .map_err(storage_error)?;
                    let index = match txn.open_table(codec::EXPIRY) {
                        Ok(index) => index,
                        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                        Err(error) => return Err(storage_error(error)),
                    };
                    let first = index.first().map_err(storage_error)?;
                    Ok(first.and_then(|(key, _)| {
                        key.value()
                            .first_chunk::<8>()
                            .map(|time| u64::from_be_bytes(*time))
                    }))
                };
                first().map_or(true, |at| at.is_some_and(|at| at <= now))
            })
    }

    /// Whether some project keeps changes older than the history's age.
    fn history_due(&self) -> bool {
        let cutoff = history_cutoff(&self.limits);
        self.history
            .values()
            .any(|record| record.oldest.is_some_and(|at| at < cutoff))
    }

    fn is_move(&self, id: &ProjectId, change: &ProjectChange) -> bool {
        let catalog = self.shared.catalog.load();
        match (catalog.project(id), change.storage) {
            (Some(project), Some(storage)) => project.settings.storage != storage,
            _ => false,
        }
    }

    /// Applies the commands in one transaction per database and answers them.
    fn commit(&mut self, commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        self.reopen();
        // A shared snapshot keeps redb from reusing the pages that the last
        // commit freed; dropped now, it pins nothing while this batch
        // commits (readers that come meanwhile take a new one, as any
        // short-lived read would).
        self.shared.disk_reads.invalidate();
        self.shared.memory_reads.invalidate();
        let begun = Batch::begin(
            &self.shared,
            self.revision,
            self.reserved,
            &self.history,
            self.limits,
        );
        let mut batch = match begun {
            Ok(batch) => batch,
            Err(error) => return fail_all(commands, &error),
        };
        let size = commands.len();
        let mut answers = Vec::with_capacity(size);
        for command in commands {
            let reply = match command.request {
                Request::Kv(write) => Reply::Kv(batch.apply_kv(write)),
                Request::Catalog(write) => Reply::Catalog(batch.apply_catalog(write)),
                Request::Expire => Reply::Catalog(batch.apply_expiry()),
                Request::Close => Reply::Catalog(Ok(())),
                Request::Snapshot => {
                    Reply::Snapshot(Err(StoreError::internal("a snapshot inside a batch")))
                }
            };
            answers.push((command.reply, reply));
        }
        let fatal = answers.iter().find_map(|(_, reply)| match reply {
            Reply::Kv(Err(e)) | Reply::Catalog(Err(e)) if is_fatal(e) => Some(e.clone()),
            _ => None,
        });
        let outcome = match fatal {
            Some(error) => {
                drop(batch);
                Err(error)
            }
            None => batch.commit(),
        };
        match outcome {
            Ok(published) => {
                metrics::counter!("kvs_commits_total").increment(1);
                metrics::histogram!("kvs_commit_batch_size").record(size as f64);
                self.revision = published.revision;
                self.reserved = published.reserved;
                for (id, record) in published.history {
                    match record {
                        Some(record) => self.history.insert(id, record),
                        None => self.history.remove(&id),
                    };
                }
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                metrics::counter!("kvs_commit_failures_total").increment(1);
                self.recover(&error);
                for (reply, answer) in answers {
                    let _ = reply.send(failed(answer, &error));
                }
            }
        }
    }

    /// After a failed commit: nothing of the batch was applied, but redb
    /// refuses every later write until the database is reopened. The writer
    /// takes the database out of service (readers answer 503 meanwhile),
    /// waits for readers to let go of it, and opens it again.
    fn recover(&self, error: &StoreError) {
        tracing::error!(%error, "a commit failed; its writes were not applied");
        if !is_fatal(error) {
            return;
        }
        self.shared.writable.store(false, Ordering::Release);
        // The shared snapshot holds the old database open too.
        self.shared.disk_reads.invalidate();
        if let Some(old) = self.shared.disk.swap(None) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(old);
        }
        self.reopen();
    }

    /// Opens the disk database if it is out of service.
    fn reopen(&self) {
        if self.shared.disk.load().is_some() {
            return;
        }
        // A reader that still had the old database may have left a snapshot
        // of it, which would keep its file locked.
        self.shared.disk_reads.invalidate();
        match Database::create(&self.shared.path) {
            Ok(db) => {
                self.shared.disk.store(Some(Arc::new(db)));
                self.shared.writable.store(true, Ordering::Release);
                tracing::warn!("reopened the database after a failed commit");
            }
            Err(error) => tracing::error!(%error, "cannot reopen the database; will retry"),
        }
    }

    /// Moves a project's keys to the other database: copy and commit at the
    /// destination (with the new settings), publish, then remove them from
    /// the source. Readers find the keys in one place or the other
    /// throughout; a crash before the removal leaves disk tables of a memory
    /// project, which the next start removes.
    fn move_project(&mut self, id: &ProjectId, change: &ProjectChange) -> Result<(), StoreError> {
        let catalog = self.shared.catalog.load_full();
        let project = catalog.project(id).ok_or(StoreError::ProjectNotFound)?;
        let from = project.settings.storage;
        let settings = changed(&project.settings, change);
        let tables = KeyTables::of(id.as_str());
        let figures = StatsRecord {
            keys: project.stats.keys(),
            bytes: project.stats.bytes(),
            revision: project.stats.revision(),
        };
        let result = (|| {
            let source = self
                .shared
                .database(from)?
                .begin_read()
                .map_err(storage_error)?;
            let target = self
                .shared
                .database(settings.storage)?
                .begin_write()
                .map_err(storage_error)?;
            copy_table(&source, &target, tables.keys())?;
            copy_table(&source, &target, tables.values())?;
            copy_table(&source, &target, tables.changes())?;
            put_record(&target, codec::STATS, id.as_str(), &figures)?;
            let history = self.history.get(id).copied().unwrap_or_default();
            put_record(&target, codec::HISTORY, id.as_str(), &history)?;
            if settings.storage == StorageMode::Disk {
                put_record(&target, codec::PROJECTS, id.as_str(), &settings)?;
                target.commit().map_err(storage_error)?;
                self.shared.disk_reads.invalidate();
            } else {
                target.commit().map_err(storage_error)?;
                self.shared.memory_reads.invalidate();
                let disk = self
                    .shared
                    .database(StorageMode::Disk)?
                    .begin_write()
                    .map_err(storage_error)?;
                put_record(&disk, codec::PROJECTS, id.as_str(), &settings)?;
                disk.commit().map_err(storage_error)?;
                self.shared.disk_reads.invalidate();
            }
            Ok(())
        })();
        if let Err(error) = result {
            self.recover(&error);
            return Err(error);
        }
        let mut next = (*catalog).clone();
        next.insert_project(Project {
            settings,
            stats: project.stats.clone(),
        });
        self.shared.catalog.store(Arc::new(next));
        self.shared.catalog_changed();
        let cleanup = (|| {
            let source = self
                .shared
                .database(from)?
                .begin_write()
                .map_err(storage_error)?;
            drop_key_tables(&source, &tables, id)?;
            source.commit().map_err(storage_error)?;
            self.shared.reads(from).invalidate();
            Ok::<(), StoreError>(())
        })();
        if let Err(error) = cleanup {
            tracing::warn!(%error, project = %id, "keys left behind after a storage move");
        }
        Ok(())
    }
}

/// The batch's transaction of a database, once begun. A free function over
/// the two fields, so that callers can keep using the batch's other fields
/// while they hold it.
fn open_txn<'a>(
    disk: &'a WriteTransaction,
    memory: &'a Option<WriteTransaction>,
    storage: StorageMode,
) -> Result<&'a WriteTransaction, StoreError> {
    match storage {
        StorageMode::Disk => Ok(disk),
        StorageMode::Memory => memory
            .as_ref()
            .ok_or_else(|| StoreError::internal("no memory transaction")),
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

/// The answer to a request whose batch failed: refusals stand, successes
/// become the batch's failure.
fn failed(answer: Reply, error: &StoreError) -> Reply {
    match answer {
        Reply::Kv(Ok(_)) => Reply::Kv(Err(error.clone())),
        Reply::Catalog(Ok(())) => Reply::Catalog(Err(error.clone())),
        Reply::Kv(Err(e)) if is_fatal(&e) => Reply::Kv(Err(error.clone())),
        Reply::Catalog(Err(e)) if is_fatal(&e) => Reply::Catalog(Err(error.clone())),
        refused => refused,
    }
}

fn fail_all(commands: Vec<Command>, error: &StoreError) {
    for command in commands {
        let reply = match command.request {
            Request::Kv(_) => Reply::Kv(Err(error.clone())),
            Request::Snapshot => Reply::Snapshot(Err(error.clone())),
            Request::Catalog(_) | Request::Expire | Request::Close => {
                Reply::Catalog(Err(error.clone()))
            }
        };
        let _ = command.reply.send(reply);
    }
}

/// What a committed batch leaves for the next one.
struct Published {
    revision: u64,
    reserved: u64,
    /// Change-log figures the batch changed (`None`: the project is gone).
    history: HashMap<ProjectId, Option<HistoryRecord>>,
}

/// One batch: the open transactions and the changes not yet published.
struct Batch<'a> {
    shared: &'a Shared,
    disk: WriteTransaction,
    memory: Option<WriteTransaction>,
    base: Arc<Catalog>,
    /// The catalog as this batch changed it, if it did.
    catalog: Option<Catalog>,
    /// Figures of the projects this batch wrote in.
    stats: HashMap<ProjectId, (Arc<ProjectStats>, StatsRecord, StorageMode)>,
    revision: u64,
    reserved: u64,
    disk_dirty: bool,
    memory_dirty: bool,
    /// Change-log figures as committed, and as this batch changed them.
    base_history: &'a HashMap<ProjectId, HistoryRecord>,
    history: HashMap<ProjectId, Option<HistoryRecord>>,
    limits: HistoryLimits,
    /// Change sets to publish after the commit, in revision order.
    sets: Vec<(ProjectId, Arc<ProjectStats>, ChangeSet)>,
    /// Keys this batch removed by their expiry, counted once it is published.
    expired: u64,
}

impl<'a> Batch<'a> {
    fn begin(
        shared: &'a Shared,
        revision: u64,
        reserved: u64,
        base_history: &'a HashMap<ProjectId, HistoryRecord>,
        limits: HistoryLimits,
    ) -> Result<Batch<'a>, StoreError> {
        Ok(Batch {
            base_history,
            history: HashMap::new(),
            limits,
            sets: Vec::new(),
            expired: 0,
            shared,
            disk: shared
                .database(StorageMode::Disk)?
                .begin_write()
                .map_err(storage_error)?,
            memory: None,
            base: shared.catalog.load_full(),
            catalog: None,
            stats: HashMap::new(),
            revision,
            reserved,
            disk_dirty: false,
            memory_dirty: false,
        })
    }

    fn catalog(&self) -> &Catalog {
        self.catalog.as_ref().unwrap_or(&self.base)
    }

    fn catalog_mut(&mut self) -> &mut Catalog {
        self.disk_dirty = true;
        self.catalog.get_or_insert_with(|| (*self.base).clone())
    }

    /// The batch's transaction of a database, begun when first needed.
    fn txn(&mut self, storage: StorageMode) -> Result<&WriteTransaction, StoreError> {
        if storage == StorageMode::Memory && self.memory.is_none() {
            self.memory = Some(self.shared.memory.begin_write().map_err(storage_error)?);
        }
        open_txn(&self.disk, &self.memory, storage)
    }

    /// The project's figures as this batch has left them.
    fn figures(&self, project: &Project) -> StatsRecord {
        match self.stats.get(&project.settings.id) {
            Some((_, record, _)) => *record,
            None => StatsRecord {
                keys: project.stats.keys(),
                bytes: project.stats.bytes(),
                revision: project.stats.revision(),
            },
        }
    }

    /// The project's change-log figures as this batch has left them.
    fn history(&self, id: &ProjectId) -> HistoryRecord {
        match self.history.get(id) {
            Some(record) => record.unwrap_or_default(),
            None => self.base_history.get(id).copied().unwrap_or_default(),
        }
    }

    /// Appends a revision's changes to the project's change log (in the
    /// transaction that holds its keys), drops what the history limits no
    /// longer keep, and queues the set for the feed.
    fn log(
        &mut self,
        project: &Project,
        revision: u64,
        at: Timestamp,
        changes: Vec<Change>,
    ) -> Result<(), StoreError> {
        let id = &project.settings.id;
        let mut record = self.history(id);
        record.changes += changes.len() as u64;
        record.oldest.get_or_insert(at);
        self.history.insert(id.clone(), Some(record));
        self.sets.push((
            id.clone(),
            project.stats.clone(),
            ChangeSet::new(revision, at, changes),
        ));
        Ok(())
    }

    /// Writes the batch's change sets to their projects' logs: each log's
    /// table is opened once per batch (an open costs more than an insert),
    /// then trimmed to the history limits. Sets of a project deleted later in
    /// the batch are left out, as its tables are gone.
    fn write_logs(&mut self) -> Result<(), StoreError> {
        let mut projects: Vec<(Arc<Project>, Vec<usize>)> = Vec::new();
        for (index, (id, stats, _)) in self.sets.iter().enumerate() {
            let Some(project) = self
                .catalog()
                .project(id)
                .filter(|p| Arc::ptr_eq(&p.stats, stats))
            else {
                continue;
            };
            match projects.iter_mut().find(|(p, _)| &p.settings.id == id) {
                Some((_, indices)) => indices.push(index),
                None => projects.push((project.clone(), vec![index])),
            }
        }
        let limits = self.limits;
        for (project, indices) in projects {
            let id = project.settings.id.clone();
            let Some(mut record) = self.history.get(&id).copied().flatten() else {
                continue;
            };
            let tables = KeyTables::of(id.as_str());
            let (storage, stats) = (project.settings.storage, &project.stats);
            self.txn(storage)?;
            let txn = open_txn(&self.disk, &self.memory, storage)?;
            {
                let mut log = txn.open_table(tables.changes()).map_err(storage_error)?;
                for index in indices {
                    let set = &self.sets[index].2;
                    log.insert(
                        set.revision,
                        encode_changes(id.as_str(), set.revision, set.at, &set.changes)?.as_slice(),
                    )
                    .map_err(storage_error)?;
                }
            }
            trim(txn, &tables, &mut record, &limits, stats)?;
            put_record(txn, codec::HISTORY, id.as_str(), &record)?;
            self.history.insert(id, Some(record));
        }
        Ok(())
    }

    fn apply_kv(&mut self, write: KvWrite) -> Result<KvCommit, StoreError> {
        let project = self
            .catalog()
            .project(&write.project)
            .cloned()
            .ok_or(StoreError::ProjectNotFound)?;
        let storage = project.settings.storage;
        let tables = KeyTables::of(write.project.as_str());
        let mut figures = self.figures(&project);
        let revision = self.revision + 1;
        let now = Timestamp::now();
        self.txn(storage)?;
        let txn = open_txn(&self.disk, &self.memory, storage)?;
        let mut keys = txn.open_table(tables.keys()).map_err(storage_error)?;
        let mut values = None;

        // Every check, against the state before the write.
        let mut failed = Vec::new();
        for (index, check) in write.checks.iter().enumerate() {
            let version = stored(&tables, &keys, check.key.as_str())?
                .filter(|r| !r.is_expired(now))
                .map(|r| r.version);
            let holds = match check.expect {
                Expect::Version(wanted) => version == Some(wanted),
                Expect::Exists(wanted) => version.is_some() == wanted,
            };
            if !holds {
                failed.push(index);
            }
        }
        if !failed.is_empty() {
            return Err(StoreError::ChecksFailed(failed));
        }

        // Then every op, against the state the ops before it left; nothing
        // is changed until all of them hold.
        let mut state = Ops {
            txn,
            tables: &tables,
            settings: &project.settings,
            figures: &mut figures,
            changes: BTreeMap::new(),
            revision,
            now,
        };
        let mut results = Vec::with_capacity(write.ops.len());
        for (index, op) in write.ops.into_iter().enumerate() {
            let result =
                state
                    .apply(&mut keys, &mut values, op)
                    .map_err(|error| StoreError::FailedOp {
                        index,
                        error: Box::new(error),
                    })?;
            results.push(result);
        }
        let changes = state.changes;
        if changes.is_empty() {
            return Ok(KvCommit {
                revision: self.revision,
                results,
            });
        }

        // Apply. Large values live in the values table; a key whose value
        // was there and is no longer (replaced inline, or deleted) is removed
        // from it.
        let external = changes
            .values()
            .any(|c| c.was_external || c.new.as_ref().is_some_and(|(r, _)| !r.inline));
        if external && values.is_none() {
            values = Some(txn.open_table(tables.values()).map_err(storage_error)?);
        }
        for (key, change) in &changes {
            match &change.new {
                Some((record, value)) => {
                    let entry = encode_entry(tables.project, key.as_str(), record, value)?;
                    keys.insert(key.as_str(), entry.as_slice())
                        .map_err(storage_error)?;
                }
                None => {
                    keys.remove(key.as_str()).map_err(storage_error)?;
                }
            }
            if let (true, Some(values)) = (external, values.as_mut()) {
                match &change.new {
                    Some((record, value)) if !record.inline => {
                        values
                            .insert(key.as_str(), value.as_ref())
                            .map_err(storage_error)?;
                    }
                    _ if change.was_external => {
                        values.remove(key.as_str()).map_err(storage_error)?;
                    }
                    _ => {}
                }
            }
        }
        drop((keys, values));
        let expiring = changes.values().any(|c| {
            c.old_expires.is_some() || c.new.as_ref().is_some_and(|(r, _)| r.expires_at.is_some())
        });
        if expiring {
            let mut index = txn.open_table(codec::EXPIRY).map_err(storage_error)?;
            let project = write.project.as_str();
            for (key, change) in &changes {
                if let Some(at) = change.old_expires {
                    index
                        .remove(expiry_key(at, project, key).as_slice())
                        .map_err(storage_error)?;
                }
                if let Some(at) = change.new.as_ref().and_then(|(r, _)| r.expires_at) {
                    index
                        .insert(expiry_key(at, project, key).as_slice(), ())
                        .map_err(storage_error)?;
                }
            }
        }
        self.revision = revision;
        figures.revision = revision;
        if storage == StorageMode::Memory && revision > self.reserved {
            self.reserved = revision + RESERVE_STEP;
            self.disk_dirty = true;
        }
        match storage {
            StorageMode::Disk => self.disk_dirty = true,
            StorageMode::Memory => self.memory_dirty = true,
        }
        self.stats
            .insert(write.project, (project.stats.clone(), figures, storage));
        let logged = changes
            .into_iter()
            .filter_map(|(key, change)| {
                let key = Key::from_stored(&key);
                match change.new {
                    Some((record, value)) => Some(Change {
                        kind: ChangeKind::Put,
                        key,
                        content_type: record.content_type,
                        value,
                    }),
                    None if change.existed => Some(Change {
                        kind: ChangeKind::Delete,
                        key,
                        content_type: String::new(),
                        value: Bytes::new(),
                    }),
                    None => None,
                }
            })
            .collect();
        self.log(&project, revision, now, logged)?;
        Ok(KvCommit { revision, results })
    }

    /// Removes every key whose expiry has come, with its index entry; index
    /// entries that no longer match a key (it was rewritten, or its project
    /// deleted or moved) are dropped.
    fn apply_expiry(&mut self) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let upper = (now.millis().max(0) as u64 + 1).to_be_bytes();
        let mut expired = Vec::new();
        for storage in [StorageMode::Disk, StorageMode::Memory] {
            self.txn(storage)?;
            let txn = open_txn(&self.disk, &self.memory, storage)?;
            let mut index = txn.open_table(codec::EXPIRY).map_err(storage_error)?;
            let mut due: BTreeMap<String, Vec<(Timestamp, String, Vec<u8>)>> = BTreeMap::new();
            for item in index.range(..upper.as_slice()).map_err(storage_error)? {
                let (entry, _) = item.map_err(storage_error)?;
                let entry = entry.value().to_vec();
                let (at, project, key) = parse_expiry_key(&entry)
                    .map(|(at, p, k)| (at, p.to_owned(), k.to_owned()))
                    .unwrap_or((now, String::new(), String::new()));
                due.entry(project).or_default().push((at, key, entry));
            }
            if due.is_empty() {
                continue;
            }
            for (project_id, items) in due {
                for (_, _, entry) in &items {
                    index.remove(entry.as_slice()).map_err(storage_error)?;
                }
                let project = ProjectId::parse(&project_id)
                    .and_then(|id| self.catalog().project(&id).cloned())
                    .filter(|p| p.settings.storage == storage);
                let Some(project) = project else { continue };
                let tables = KeyTables::of(&project_id);
                let mut figures = self.figures(&project);
                let mut keys = txn.open_table(tables.keys()).map_err(storage_error)?;
                let mut values = None;
                let mut removed = Vec::new();
                for (at, key, _) in items {
                    let Some(record) = stored(&tables, &keys, &key)? else {
                        continue;
                    };
                    if record.expires_at != Some(at) {
                        continue;
                    }
                    keys.remove(key.as_str()).map_err(storage_error)?;
                    if !record.inline {
                        if values.is_none() {
                            values = Some(txn.open_table(tables.values()).map_err(storage_error)?);
                        }
                        if let Some(values) = values.as_mut() {
                            values.remove(key.as_str()).map_err(storage_error)?;
                        }
                    }
                    figures.keys = figures.keys.saturating_sub(1);
                    figures.bytes = figures.bytes.saturating_sub(record.size);
                    removed.push(Change {
                        kind: ChangeKind::Expired,
                        key: Key::from_stored(&key),
                        content_type: String::new(),
                        value: Bytes::new(),
                    });
                }
                drop((keys, values));
                if !removed.is_empty() {
                    self.revision += 1;
                    figures.revision = self.revision;
                    if storage == StorageMode::Memory && self.revision > self.reserved {
                        self.reserved = self.revision + RESERVE_STEP;
                        self.disk_dirty = true;
                    }
                    self.stats.insert(
                        project.settings.id.clone(),
                        (project.stats.clone(), figures, storage),
                    );
                    removed.sort_by(|a, b| a.key.cmp(&b.key));
                    removed.dedup_by(|a, b| a.key == b.key);
                    self.expired += removed.len() as u64;
                    expired.push((project, self.revision, removed));
                }
            }
            match storage {
                StorageMode::Disk => self.disk_dirty = true,
                StorageMode::Memory => self.memory_dirty = true,
            }
        }
        for (project, revision, removed) in expired {
            self.log(&project, revision, now, removed)?;
        }
        self.trim_aged()
    }

    /// Drops, from every project's change log, the changes older than the
    /// history keeps (a project nobody writes to is trimmed here; the others
    /// are trimmed as they are written).
    fn trim_aged(&mut self) -> Result<(), StoreError> {
        let cutoff = history_cutoff(&self.limits);
        let due: std::collections::BTreeSet<ProjectId> = self
            .base_history
            .keys()
            .chain(self.history.keys())
            .filter(|id| self.history(id).oldest.is_some_and(|at| at < cutoff))
            .cloned()
            .collect();
        for id in due {
            let Some(project) = self.catalog().project(&id).cloned() else {
                continue;
            };
            let mut record = self.history(&id);
            let storage = project.settings.storage;
            let limits = self.limits;
            let txn = self.txn(storage)?;
            trim(
                txn,
                &KeyTables::of(id.as_str()),
                &mut record,
                &limits,
                &project.stats,
            )?;
            put_record(txn, codec::HISTORY, id.as_str(), &record)?;
            self.history.insert(id, Some(record));
            match storage {
                StorageMode::Disk => self.disk_dirty = true,
                StorageMode::Memory => self.memory_dirty = true,
            }
        }
        Ok(())
    }

    fn apply_catalog(&mut self, write: CatalogWrite) -> Result<(), StoreError> {
        let now = Timestamp::now();
        match write {
            CatalogWrite::CreateProject {
                mut settings,
                token,
            } => {
                if self.catalog().project(&settings.id).is_some() {
                    return Err(StoreError::ProjectExists);
                }
                settings.created_revision = self.revision;
                put_record(&self.disk, codec::PROJECTS, settings.id.as_str(), &settings)?;
                if let Some(token) = &token {
                    put_record(&self.disk, codec::TOKENS, token.id.as_str(), token)?;
                }
                let stats = Arc::new(ProjectStats::new(0, 0, self.revision));
                self.history
                    .insert(settings.id.clone(), Some(HistoryRecord::default()));
                let catalog = self.catalog_mut();
                catalog.insert_project(Project { settings, stats });
                if let Some(token) = token {
                    catalog.insert_token(token);
                }
            }
            CatalogWrite::UpdateProject { id, change } => {
                let project = self
                    .catalog()
                    .project(&id)
                    .cloned()
                    .ok_or(StoreError::ProjectNotFound)?;
                let settings = changed(&project.settings, &change);
                if settings.storage != project.settings.storage {
                    return Err(StoreError::internal("a storage move inside a batch"));
                }
                put_record(&self.disk, codec::PROJECTS, id.as_str(), &settings)?;
                self.catalog_mut().insert_project(Project {
                    settings,
                    stats: project.stats.clone(),
                });
            }
            CatalogWrite::DeleteProject { id } => {
                let project = self
                    .catalog()
                    .project(&id)
                    .cloned()
                    .ok_or(StoreError::ProjectNotFound)?;
                let doomed: Vec<_> = self
                    .catalog()
                    .tokens()
                    .into_iter()
                    .filter(|t| t.project.as_ref() == Some(&id))
                    .map(|t| t.id.clone())
                    .collect();
                {
                    let mut tokens = self.disk.open_table(codec::TOKENS).map_err(storage_error)?;
                    let mut imported = self
                        .disk
                        .open_table(codec::IMPORTED)
                        .map_err(storage_error)?;
                    for token in &doomed {
                        tokens.remove(token.as_str()).map_err(storage_error)?;
                        imported.remove(token.as_str()).map_err(storage_error)?;
                    }
                    let mut projects = self
                        .disk
                        .open_table(codec::PROJECTS)
                        .map_err(storage_error)?;
                    projects.remove(id.as_str()).map_err(storage_error)?;
                }
                let storage = project.settings.storage;
                drop_key_tables(self.txn(storage)?, &KeyTables::of(id.as_str()), &id)?;
                if storage == StorageMode::Memory {
                    self.memory_dirty = true;
                }
                self.stats.remove(&id);
                self.history.insert(id.clone(), None);
                self.catalog_mut().remove_project(&id);
            }
            CatalogWrite::CreateToken(token) => {
                if let Some(project) = &token.project
                    && self.catalog().project(project).is_none()
                {
                    return Err(StoreError::ProjectNotFound);
                }
                put_record(&self.disk, codec::TOKENS, token.id.as_str(), &token)?;
                self.catalog_mut().insert_token(token);
            }
            CatalogWrite::ImportToken { token, digest } => {
                if let Some(project) = &token.project
                    && self.catalog().project(project).is_none()
                {
                    return Err(StoreError::ProjectNotFound);
                }
                put_record(&self.disk, codec::TOKENS, token.id.as_str(), &token)?;
                {
                    let mut imported = self
                        .disk
                        .open_table(codec::IMPORTED)
                        .map_err(storage_error)?;
                    imported
                        .insert(token.id.as_str(), digest.as_str())
                        .map_err(storage_error)?;
                }
                let catalog = self.catalog_mut();
                catalog.insert_imported(token.id.clone(), digest);
                catalog.insert_token(token);
            }
            CatalogWrite::VerifyImportedToken { id, digest } => {
                let token = self
                    .catalog()
                    .token_by_id(&id)
                    .cloned()
                    .ok_or(StoreError::TokenNotFound)?;
                if !self.catalog().is_imported(&id) {
                    // Verified meanwhile by another request with the same key.
                    return if token.digest == digest {
                        Ok(())
                    } else {
                        Err(StoreError::TokenNotFound)
                    };
                }
                let record = TokenRecord {
                    digest,
                    ..(*token).clone()
                };
                put_record(&self.disk, codec::TOKENS, id.as_str(), &record)?;
                remove_imported(&self.disk, id.as_str())?;
                self.catalog_mut().verify_imported(&id, digest);
            }
            CatalogWrite::DeleteToken { id, scope } => {
                let token = self
                    .catalog()
                    .token_by_id(&id)
                    .cloned()
                    .ok_or(StoreError::TokenNotFound)?;
                let in_scope = match &scope {
                    TokenScope::Admin => token.project.is_none(),
                    TokenScope::Project(project) => token.project.as_ref() == Some(project),
                };
                if !in_scope {
                    return Err(StoreError::TokenNotFound);
                }
                if token.project.is_none()
                    && !token.is_expired(now)
                    && self.catalog().live_admin_tokens(now) <= 1
                {
                    return Err(StoreError::LastAdminToken);
                }
                remove_record(&self.disk, codec::TOKENS, id.as_str())?;
                remove_imported(&self.disk, id.as_str())?;
                self.catalog_mut().remove_token(&id);
            }
            CatalogWrite::ReplaceNamedTokens {
                source,
                name,
                token,
            } => {
                let old: Vec<_> = self
                    .catalog()
                    .tokens()
                    .into_iter()
                    .filter(|t| t.source == source && t.name.as_deref() == Some(name.as_str()))
                    .map(|t| (*t).clone())
                    .collect();
                let keep = token
                    .as_ref()
                    .is_some_and(|new| old.iter().any(|o| o.digest == new.digest));
                if keep {
                    return Ok(());
                }
                for record in &old {
                    remove_record(&self.disk, codec::TOKENS, record.id.as_str())?;
                    remove_imported(&self.disk, record.id.as_str())?;
                    self.catalog_mut().remove_token(&record.id);
                }
                if let Some(token) = token {
                    put_record(&self.disk, codec::TOKENS, token.id.as_str(), &token)?;
                    self.catalog_mut().insert_token(token);
                }
            }
            CatalogWrite::ReplaceProjectTokens {
                project,
                source,
                token,
            } => {
                if self.catalog().project(&project).is_none() {
                    return Err(StoreError::ProjectNotFound);
                }
                if token.project.as_ref() != Some(&project) {
                    return Err(StoreError::internal(
                        "a replacement token of another project",
                    ));
                }
                let old: Vec<_> = self
                    .catalog()
                    .tokens()
                    .into_iter()
                    .filter(|t| t.source == source && t.project.as_ref() == Some(&project))
                    .map(|t| t.id.clone())
                    .collect();
                for id in &old {
                    remove_record(&self.disk, codec::TOKENS, id.as_str())?;
                    remove_imported(&self.disk, id.as_str())?;
                    self.catalog_mut().remove_token(id);
                }
                put_record(&self.disk, codec::TOKENS, token.id.as_str(), &token)?;
                self.catalog_mut().insert_token(token);
            }
        }
        self.disk_dirty = true;
        Ok(())
    }

    /// Writes the figures, commits both databases (disk first: it holds the
    /// revision reservation that memory writes rely on) and publishes.
    fn commit(mut self) -> Result<Published, StoreError> {
        self.write_logs()?;
        let live: Vec<_> = self
            .stats
            .iter()
            .filter(|(id, (stats, _, _))| {
                self.catalog()
                    .project(id)
                    .is_some_and(|p| Arc::ptr_eq(&p.stats, stats))
            })
            .map(|(id, (stats, record, storage))| (id.clone(), stats.clone(), *record, *storage))
            .collect();
        for (id, _, record, storage) in &live {
            put_record(self.txn(*storage)?, codec::STATS, id.as_str(), record)?;
        }
        if self.disk_dirty {
            let mut server = self.disk.open_table(codec::SERVER).map_err(storage_error)?;
            server
                .insert(codec::REVISION, self.revision)
                .map_err(storage_error)?;
            server
                .insert(codec::RESERVED, self.reserved)
                .map_err(storage_error)?;
        }
        // Readers switch to a new snapshot before the revision is published.
        if self.disk_dirty {
            // The disk commit is where the fsync happens: its duration is
            // what a durable write waits for.
            let started = Instant::now();
            self.disk.commit().map_err(storage_error)?;
            metrics::histogram!("kvs_fsync_seconds").record(started.elapsed().as_secs_f64());
            self.shared.disk_reads.invalidate();
        } else {
            self.disk.abort().map_err(storage_error)?;
        }
        if let Some(memory) = self.memory {
            memory.commit().map_err(storage_error)?;
            self.shared.memory_reads.invalidate();
        }
        let catalog_changed = self.catalog.is_some();
        if let Some(catalog) = self.catalog {
            self.shared.catalog.store(Arc::new(catalog));
        }
        for (_, stats, record, _) in live {
            stats.keys.store(record.keys, Ordering::Release);
            stats.bytes.store(record.bytes, Ordering::Release);
            stats.revision.store(record.revision, Ordering::Release);
        }
        // Watchers learn of a change before its writer does: a client that
        // writes and then watches from the revision it was given finds the
        // change in the feed or the log.
        let catalog = self.shared.catalog.load();
        for (id, stats, set) in self.sets {
            let live = catalog
                .project(&id)
                .is_some_and(|p| Arc::ptr_eq(&p.stats, &stats));
            if live {
                stats.feed.publish(set);
            }
        }
        self.shared.revision.store(self.revision, Ordering::Release);
        if catalog_changed {
            self.shared.catalog_changed();
        }
        if self.expired > 0 {
            metrics::counter!("kvs_expired_keys_total").increment(self.expired);
        }
        Ok(Published {
            revision: self.revision,
            reserved: self.reserved,
            history: self.history,
        })
    }
}

/// The ops of one write as they are validated: what they changed so far.
struct Ops<'a, 't> {
    txn: &'t WriteTransaction,
    tables: &'a KeyTables<'a>,
    settings: &'a ProjectSettings,
    figures: &'a mut StatsRecord,
    changes: BTreeMap<String, KeyChange>,
    revision: u64,
    now: Timestamp,
}

type KeysTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;

impl<'t> Ops<'_, 't> {
    fn apply(
        &mut self,
        keys: &mut KeysTable<'t>,
        values: &mut Option<KeysTable<'t>>,
        op: KvOp,
    ) -> Result<OpResult, StoreError> {
        match op {
            KvOp::Put {
                key,
                value,
                content_type,
                ttl,
                precondition,
            } => {
                let old = current(self.tables, keys, &self.changes, key.as_str())?;
                let live = old.as_ref().filter(|r| !r.is_expired(self.now));
                check(&precondition, live.map(|r| r.version))?;
                let expires_at = ttl.map(|seconds| self.now.plus_seconds(seconds));
                let meta = self.put(&key, old, value, content_type, expires_at, None)?;
                Ok(OpResult::Put {
                    created: meta.1,
                    meta: meta.0,
                })
            }
            KvOp::Delete {
                key,
                precondition,
                must_exist,
            } => {
                let old = current(self.tables, keys, &self.changes, key.as_str())?;
                let Some(old) = old.filter(|r| !r.is_expired(self.now)) else {
                    return if must_exist {
                        Err(StoreError::KeyNotFound)
                    } else {
                        Ok(OpResult::Delete { deleted: false })
                    };
                };
                check(&precondition, Some(old.version))?;
                self.figures.keys = self.figures.keys.saturating_sub(1);
                self.figures.bytes = self.figures.bytes.saturating_sub(old.size);
                change(&mut self.changes, key.as_str(), Some(&old), None);
                Ok(OpResult::Delete { deleted: true })
            }
            KvOp::DeletePrefix { prefix } => {
                let mut doomed = Vec::new();
                for item in keys.range(prefix.as_str()..).map_err(storage_error)? {
                    let (key, entry) = item.map_err(storage_error)?;
                    let key = key.value();
                    if !prefix.covers(key) {
                        break;
                    }
                    let record = decode_entry(self.tables.project, key, entry.value())?.0;
                    // An expired key is already gone for readers; the sweep
                    // takes it out.
                    if !self.changes.contains_key(key) && !record.is_expired(self.now) {
                        doomed.push((key.to_owned(), record));
                    }
                }
                for (key, change) in &self.changes {
                    if let (true, Some((record, _))) = (prefix.covers(key), &change.new) {
                        doomed.push((key.clone(), record.clone()));
                    }
                }
                for (key, record) in &doomed {
                    self.figures.keys = self.figures.keys.saturating_sub(1);
                    self.figures.bytes = self.figures.bytes.saturating_sub(record.size);
                    change(&mut self.changes, key, Some(record), None);
                }
                Ok(OpResult::DeletePrefix {
                    deleted: doomed.len() as u64,
                })
            }
            KvOp::Restore {
                key,
                value,
                content_type,
                created_at,
                updated_at,
                expires_at,
            } => {
                let old = current(self.tables, keys, &self.changes, key.as_str())?;
                let times = Some((created_at, updated_at));
                let (meta, created) =
                    self.put(&key, old, value, content_type, expires_at, times)?;
                Ok(OpResult::Put { meta, created })
            }
            KvOp::Get { key } => {
                let entry = self
                    .value(keys, values, key.as_str())?
                    .filter(|(record, _)| !record.is_expired(self.now))
                    .map(|(record, value)| Entry {
                        meta: record.into_meta(key),
                        value,
                    });
                Ok(OpResult::Get(entry))
            }
            KvOp::Incr { key, by } => {
                let old = self.value(keys, values, key.as_str())?;
                let live = old
                    .as_ref()
                    .filter(|(record, _)| !record.is_expired(self.now));
                let count = match live {
                    None => 0,
                    Some((_, value)) => std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse::<i64>().ok())
                        .ok_or_else(|| {
                            StoreError::Conflict(format!(
                                "{key} does not hold a 64-bit integer in decimal"
                            ))
                        })?,
                };
                let value = count.checked_add(by).ok_or_else(|| {
                    StoreError::Conflict(format!("{count} + {by} overflows a 64-bit integer"))
                })?;
                let text = Bytes::from(value.to_string());
                let old = old.map(|(record, _)| record);
                let (meta, _) = self.put(&key, old, text, COUNTER_TYPE.to_owned(), None, None)?;
                Ok(OpResult::Incr { meta, value })
            }
        }
    }

    /// Records a put of `value` over `old`; the new key meta, and whether
    /// the key is new. `times` (created, updated) are the write's own unless
    /// given.
    fn put(
        &mut self,
        key: &Key,
        old: Option<KeyRecord>,
        value: Bytes,
        content_type: String,
        expires_at: Option<Timestamp>,
        times: Option<(Timestamp, Timestamp)>,
    ) -> Result<(KeyMeta, bool), StoreError> {
        let size = value.len() as u64;
        if size > self.settings.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                max: self.settings.max_value_bytes,
            });
        }
        match &old {
            Some(old) => self.figures.bytes = self.figures.bytes.saturating_sub(old.size),
            None => {
                if let Some(max_keys) = self.settings.max_keys
                    && self.figures.keys >= max_keys
                {
                    return Err(StoreError::QuotaExceeded { max_keys });
                }
                self.figures.keys += 1;
            }
        }
        self.figures.bytes += size;
        let live = old.as_ref().filter(|o| !o.is_expired(self.now));
        let created = live.is_none();
        let (created_at, updated_at) =
            times.unwrap_or_else(|| (live.map_or(self.now, |o| o.created_at), self.now));
        let record = KeyRecord {
            version: self.revision,
            created_at,
            updated_at,
            expires_at,
            size,
            content_type,
            inline: value.len() <= INLINE_LIMIT,
            value_crc: 0,
        };
        let meta = record.clone().into_meta(key.clone());
        change(
            &mut self.changes,
            key.as_str(),
            old.as_ref(),
            Some((record, value)),
        );
        Ok((meta, created))
    }

    /// A key's record and value as the ops so far left them.
    fn value(
        &self,
        keys: &KeysTable<'t>,
        values: &mut Option<KeysTable<'t>>,
        key: &str,
    ) -> Result<Option<(KeyRecord, Bytes)>, StoreError> {
        if let Some(change) = self.changes.get(key) {
            return Ok(change.new.clone());
        }
        let Some(entry) = keys.get(key).map_err(storage_error)? else {
            return Ok(None);
        };
        let (record, inline) = decode_entry(self.tables.project, key, entry.value())?;
        if record.inline {
            return Ok(Some((record, Bytes::copy_from_slice(inline))));
        }
        if values.is_none() {
            *values = Some(
                self.txn
                    .open_table(self.tables.values())
                    .map_err(storage_error)?,
            );
        }
        let stored = match values.as_ref() {
            Some(table) => table.get(key).map_err(storage_error)?,
            None => None,
        };
        let value = stored
            .map(|v| Bytes::copy_from_slice(v.value()))
            .ok_or_else(|| codec::corrupted(&["values/", self.tables.project], key.as_bytes()))?;
        codec::check_value(self.tables.project, key, &record, &value)?;
        Ok(Some((record, value)))
    }
}

/// The content type a counter is stored with.
const COUNTER_TYPE: &str = "text/plain; charset=utf-8";

/// A key's record as committed before this write.
fn stored(
    tables: &KeyTables,
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    match keys.get(key).map_err(storage_error)? {
        Some(entry) => Ok(Some(decode_entry(tables.project, key, entry.value())?.0)),
        None => Ok(None),
    }
}

/// What one write does to a key: its new state, and whether the value it
/// had before the write lived in the values table.
struct KeyChange {
    new: Option<(KeyRecord, Bytes)>,
    /// Whether the key had a record before the write.
    existed: bool,
    was_external: bool,
    /// The stored expiry, whose index entry the write removes.
    old_expires: Option<Timestamp>,
}

/// A key's record as the write has left it so far.
fn current(
    tables: &KeyTables,
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    changes: &BTreeMap<String, KeyChange>,
    key: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    if let Some(change) = changes.get(key) {
        return Ok(change.new.as_ref().map(|(record, _)| record.clone()));
    }
    stored(tables, keys, key)
}

/// Records a key's new state. `old` is the key's record as the caller read
/// it: for a key this write has not touched yet, the stored one, which tells
/// where its value lived.
fn change(
    changes: &mut BTreeMap<String, KeyChange>,
    key: &str,
    old: Option<&KeyRecord>,
    new: Option<(KeyRecord, Bytes)>,
) {
    match changes.get_mut(key) {
        Some(change) => change.new = new,
        None => {
            let was_external = old.is_some_and(|r| !r.inline);
            let old_expires = old.and_then(|r| r.expires_at);
            changes.insert(
                key.to_owned(),
                KeyChange {
                    new,
                    existed: old.is_some(),
                    was_external,
                    old_expires,
                },
            );
        }
    }
}

fn check(precondition: &Option<Precondition>, current: Option<u64>) -> Result<(), StoreError> {
    let holds = match precondition {
        None => true,
        Some(Precondition::Absent) => current.is_none(),
        Some(Precondition::Exists) => current.is_some(),
        Some(Precondition::VersionIn(versions)) => current.is_some_and(|v| versions.contains(&v)),
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::PreconditionFailed { current })
    }
}

fn changed(settings: &ProjectSettings, change: &ProjectChange) -> ProjectSettings {
    let mut next = settings.clone();
    if let Some(storage) = change.storage {
        next.storage = storage;
    }
    if let Some(discoverable) = change.keys_discoverable {
        next.keys_discoverable = discoverable;
    }
    if let Some(max) = change.max_value_bytes {
        next.max_value_bytes = max;
    }
    if let Some(max) = change.max_keys {
        next.max_keys = max;
    }
    next
}

pub(super) fn put_record<T: codec::Record>(
    txn: &WriteTransaction,
    table: redb::TableDefinition<&str, &[u8]>,
    key: &str,
    record: &T,
) -> Result<(), StoreError> {
    let bytes = encode(redb::TableHandle::name(&table), key, record)?;
    let mut table = txn.open_table(table).map_err(storage_error)?;
    table.insert(key, bytes.as_slice()).map_err(storage_error)?;
    Ok(())
}

fn remove_record(
    txn: &WriteTransaction,
    table: redb::TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(table).map_err(storage_error)?;
    table.remove(key).map_err(storage_error)?;
    Ok(())
}

/// Forgets an imported token's digest, if it has one.
fn remove_imported(txn: &WriteTransaction, id: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(codec::IMPORTED).map_err(storage_error)?;
    table.remove(id).map_err(storage_error)?;
    Ok(())
}

/// Removes a project's key tables and figures from one database.
fn drop_key_tables(
    txn: &WriteTransaction,
    tables: &KeyTables,
    id: &ProjectId,
) -> Result<(), StoreError> {
    txn.delete_table(tables.keys()).map_err(storage_error)?;
    txn.delete_table(tables.values()).map_err(storage_error)?;
    txn.delete_table(tables.changes()).map_err(storage_error)?;
    remove_record(txn, codec::HISTORY, id.as_str())?;
    remove_record(txn, codec::STATS, id.as_str())
}

/// The time before which the history keeps no change.
fn history_cutoff(limits: &HistoryLimits) -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_millis(now.millis().saturating_sub(
        (limits.max_age_seconds.min(i64::MAX as u64 / 1000) as i64).saturating_mul(1000),
    ))
}

/// Once a project's log holds more changes than the limit, drops its oldest
/// change sets down to 1/16 below the limit (always keeping the newest set);
/// and drops sets older than the history's age. The feed learns the new compaction point before the
/// commit, so that a reader never finds changes missing without a 410.
fn trim(
    txn: &WriteTransaction,
    tables: &KeyTables,
    record: &mut HistoryRecord,
    limits: &HistoryLimits,
    stats: &ProjectStats,
) -> Result<(), StoreError> {
    let cutoff = history_cutoff(limits);
    let due = |r: &HistoryRecord| {
        r.changes > limits.max_changes || r.oldest.is_some_and(|at| at < cutoff)
    };
    if !due(record) {
        return Ok(());
    }
    let mut log = txn.open_table(tables.changes()).map_err(storage_error)?;
    loop {
        let first = log.first().map_err(storage_error)?;
        let Some((revision, head)) = first
            .map(|(revision, entry)| {
                let revision = revision.value();
                Ok((
                    revision,
                    decode_set_head(tables.project, revision, entry.value())?,
                ))
            })
            .transpose()?
        else {
            record.changes = 0;
            record.oldest = None;
            return Ok(());
        };
        // Past the limit, trim to 1/16 below it: a log at its limit then
        // loses sets once in a while rather than on every write (which
        // dirtied its first pages in every commit).
        let floor = limits.max_changes - limits.max_changes / 16;
        let too_many = record.changes > floor && log.len().map_err(storage_error)? > 1;
        if !too_many && head.at >= cutoff {
            record.oldest = Some(head.at);
            return Ok(());
        }
        stats.feed.raise_compacted(revision);
        log.remove(revision).map_err(storage_error)?;
        record.changes = record.changes.saturating_sub(u64::from(head.count));
        record.compacted = revision;
    }
}

/// Copies every row of a table from a snapshot into a write transaction.
pub(super) fn copy_table<K: redb::Key + 'static>(
    source: &redb::ReadTransaction,
    target: &WriteTransaction,
    table: redb::TableDefinition<K, &[u8]>,
) -> Result<(), StoreError> {
    let rows = match source.open_table(table) {
        Ok(rows) => rows,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(error) => return Err(storage_error(error)),
    };
    let mut copy = target.open_table(table).map_err(storage_error)?;
    for item in rows.iter().map_err(storage_error)? {
        let (key, value) = item.map_err(storage_error)?;
        copy.insert(key.value(), value.value())
            .map_err(storage_error)?;
    }
    Ok(())
}
