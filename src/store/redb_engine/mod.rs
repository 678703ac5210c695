//! The embedded engine: two redb databases behind the [`Store`] trait.
//!
//! `kvs.redb` in the data directory holds the catalog (projects, token
//! digests, server counters) and the keys of `disk` projects; a second redb
//! database on redb's in-memory backend holds the keys of `memory` projects,
//! so both kinds of project share one code path. Reads open a redb read
//! transaction (a snapshot, no lock shared with writers). Every write goes to
//! one writer thread ([`writer`]), which folds the requests waiting for it
//! into one redb transaction per database and one fsync: group commit.
//!
//! Why redb and not fjall is recorded in `docs/ARCHITECTURE.md`: the short
//! answer is that a redb commit is durable and visible in the same step, so
//! no reader can see a write that a crash could still take back.

mod backup;
pub(crate) mod codec;
mod compact;
mod contain;
mod deferred_sync;
mod held;
mod memory_backend;
mod slice;
mod snapshot;
mod stopped;
mod verify;
mod wal;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{
    ImportedDigest, Key, Prefix, ProjectId, ProjectSettings, StorageMode, Timestamp, TokenId,
    TokenRecord,
};
use crate::files;
use crate::store::publish::View;
use crate::store::{
    Authority, Capabilities, Catalog, CatalogWrite, ChangeSets, Compacted, Entry, HistoryLimits,
    KvCommit, KvWrite, ListPage, ListRequest, Project, ProjectStats, Read, Report, Store,
    StoreError, StoreSnapshot, Subscription,
};
pub use backup::{RESTORE_REVISION_BUMP, RESTORED_MEMORY, Restorer};
use codec::{
    HistoryRecord, KeyRecord, KeyTables, StatsRecord, decode, decode_entry, storage_error,
};
pub use compact::{CompactError, compact_dir};
use snapshot::{ReadCache, Snapshot};
pub use stopped::StoppedError;
pub use verify::verify_dir;
use writer::{Command, Sweep, Writer};

/// redb's page cache for the disk database unless the server sets it:
/// redb's own default.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

/// redb's page cache for the memory database, whose backend is memory.
const MEMORY_CACHE_BYTES: usize = 4 << 20;

/// How many times a listing reads again when the held writes were
/// committed while it read (see [`RedbStore::read_held_page`]).
const HELD_READ_TRIES: usize = 16;

/// How many requests may wait for the writer before senders wait too.
const QUEUE_DEPTH: usize = 8192;

/// How often the writer is asked to remove expired keys. Reads never see a
/// key after its expiry anyway; this bounds how late the removal (and its
/// revision) comes.
const EXPIRY_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// State shared by the request side and the writer thread.
struct Shared {
    /// The disk database; empty for the moment the writer reopens it after
    /// a failed commit (redb refuses all writes after an I/O error until it
    /// is reopened).
    disk: ArcSwapOption<Database>,
    /// The memory database; replaced whole by a compaction.
    memory: ArcSwap<Database>,
    /// The shared read snapshot of each database.
    disk_reads: ReadCache,
    memory_reads: ReadCache,
    /// The keys of the writes held in the disk database's open write
    /// transaction, which its snapshots do not show yet.
    held: held::Held,
    /// The catalog, figures and revision as last published.
    view: View,
    /// False once a commit failed for lack of space or an I/O error.
    writable: AtomicBool,
    /// The room left on the database's filesystem after a commit failed
    /// for lack of it: until there is more, writes that need the disk are
    /// refused without a try, and `/readyz` says the store is not writable
    /// (see [`Shared::still_full`]).
    full: std::sync::Mutex<Option<writer::Room>>,
    /// True while the writer stores again, in a reopened disk database,
    /// the writes that only the log holds: until then the database lacks
    /// acknowledged writes, and readers answer 503 as while it is closed.
    replaying: AtomicBool,
    path: PathBuf,
    /// The disk database's page cache, each time it is opened.
    cache_bytes: usize,
}

/// The redb-backed [`Store`].
pub struct RedbStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Command>,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir` with the default history
    /// limits and starts its writer.
    pub fn open(data_dir: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(data_dir, HistoryLimits::default())
    }

    /// Opens (or creates) the store in `data_dir`, keeping as much change
    /// history as `limits` says, and starts its writer.
    pub fn open_with(data_dir: &Path, limits: HistoryLimits) -> Result<RedbStore, StoreError> {
        RedbStore::open_with_cache(data_dir, limits, DEFAULT_CACHE_BYTES)
    }

    /// [`RedbStore::open_with`], with a page cache of `cache_bytes` for the
    /// disk database (redb's; the memory database has its own, small).
    pub fn open_with_cache(
        data_dir: &Path,
        limits: HistoryLimits,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        files::create_private_dir(data_dir).map_err(StoreError::internal)?;
        // Files an older release made readable by others (0644) are
        // narrowed: they hold every value and the tokens' digests.
        for name in ["kvs.redb", "kvs.wal"] {
            let file = data_dir.join(name);
            match files::narrow_to_owner(&file) {
                Ok(false) => {}
                Ok(true) => tracing::warn!(
                    file = %file.display(),
                    "the file was readable by other users; it is now readable by its owner only (0600)"
                ),
                Err(error) => tracing::warn!(
                    %error,
                    file = %file.display(),
                    "the file may be readable by other users, and its mode cannot be narrowed"
                ),
            }
        }
        let path = data_dir.join("kvs.redb");
        // Before anything is made: a new store beside a log that holds
        // writes would drop them all and reuse their versions, and a new
        // one beside a restore that did not finish would pass for it.
        if let Some(refusal) = wal::lost_store(data_dir)? {
            return Err(StoreError::Internal(refusal));
        }
        backup::unfinished_restore(data_dir)?;
        // redb has no page checksums and may panic on a damaged page, here
        // (the allocator state) as in the load below: the start then
        // refuses with a clear message rather than a panic.
        let shown = path.display().to_string();
        let damaged = move |panicked: contain::Panicked| {
            StoreError::DataCorrupted(format!(
                "{shown} is damaged: its structure cannot be read ({panicked}); check it with \
                 `kvs verify --data-dir`, and restore a backup (`kvs restore`)"
            ))
        };
        let disk = contain::contain(|| deferred_sync::create(&path, cache_bytes))
            .map_err(&damaged)?
            .map_err(storage_error)?;
        // Held by this server now: what a compaction cut short left beside
        // it is of no use (the store is whole without it).
        compact::remove_partial_copy(data_dir)?;
        let memory = new_memory_database()?;
        backup::adopt_restored_memory(data_dir, &memory)?;
        {
            let txn = memory.begin_write().map_err(storage_error)?;
            codec::migrate::migrate(&txn, "memory")?;
            txn.commit().map_err(storage_error)?;
        }
        let loaded = contain::contain(|| {
            let (catalog, revision, reserved, history) = load(&disk, &memory)?;
            let sweeps = resume_sweeps(&disk, &catalog)?;
            let durable = durable_revision(&disk)?;
            Ok::<_, StoreError>((catalog, revision, reserved, history, sweeps, durable))
        });
        let (catalog, revision, reserved, history, sweeps, durable) = match loaded {
            Ok(loaded) => loaded?,
            Err(panicked) => {
                // It may hold poisoned locks (its drop would panic), and its
                // close would write into the damaged file.
                std::mem::forget(disk);
                return Err(damaged(panicked));
            }
        };
        let (wal, logged) = wal::Wal::open(data_dir, durable)?;
        let shared = Arc::new(Shared {
            disk: ArcSwapOption::new(Some(Arc::new(disk))),
            memory: ArcSwap::from_pointee(memory),
            disk_reads: ReadCache::default(),
            memory_reads: ReadCache::default(),
            held: held::Held::default(),
            view: View::new(catalog, revision),
            writable: AtomicBool::new(true),
            full: std::sync::Mutex::new(None),
            replaying: AtomicBool::new(false),
            path,
            cache_bytes,
        });
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let mut writer = Writer::new(
            shared.clone(),
            wal,
            revision,
            reserved,
            history,
            limits,
            sweeps,
        );
        // Before anything is read: the writes only the log holds.
        match contain::contain(|| writer.replay(logged, false)) {
            Ok(replayed) => replayed?,
            Err(panicked) => {
                // As above: neither dropped nor closed.
                std::mem::forget(writer);
                std::mem::forget(shared);
                return Err(damaged(panicked));
            }
        }
        let watched = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kvs-writer".to_owned())
            .spawn(move || {
                deferred_sync::bound_this_thread();
                slice::ask_short_slice();
                // A panic (a damaged page, in redb) must not end the writer
                // unseen: every write then fails, /readyz answers 503, and
                // the log says why.
                let run = std::panic::AssertUnwindSafe(|| writer.run(receiver));
                if std::panic::catch_unwind(run).is_err() {
                    watched.writable.store(false, Ordering::Release);
                    tracing::error!(
                        "the writer stopped after a panic (a damaged page?); no write is \
                         accepted until a restart; run `kvs verify`"
                    );
                }
            })
            .map_err(StoreError::internal)?;
        // The sweep is a write like any other, sent on a timer; the thread
        // ends when the writer has stopped and its queue is gone.
        let ticker = sender.clone();
        std::thread::Builder::new()
            .name("kvs-expiry".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(EXPIRY_TICK);
                    let (reply, _) = oneshot::channel();
                    if ticker.blocking_send(Command::Expire(reply)).is_err() {
                        break;
                    }
                }
            })
            .map_err(StoreError::internal)?;
        Ok(RedbStore {
            shared,
            writer: sender,
            writer_thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Sends a command made with a reply channel and waits for its answer.
    async fn send<T>(
        &self,
        command: impl FnOnce(writer::Reply<T>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(command(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The project as the current catalog has it.
    fn project(&self, id: &ProjectId) -> Result<Arc<Project>, StoreError> {
        self.shared
            .view
            .catalog()
            .project(id)
            .cloned()
            .ok_or(StoreError::ProjectNotFound)
    }

    /// Runs `read` against the database that holds the project's keys. A
    /// project that moved between databases while the read ran is read again
    /// from its new place, so a move never shows a key as missing.
    fn read_project<T>(
        &self,
        id: &ProjectId,
        read: impl Fn(&Snapshot, &KeyTables) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tables = KeyTables::of(id.as_str());
        let storage = self.project(id)?.settings.storage;
        let answer = self
            .shared
            .with_snapshot(storage, |snapshot| read(snapshot, &tables))?;
        let now = self.project(id)?.settings.storage;
        if now == storage {
            Ok(answer)
        } else {
            self.shared
                .with_snapshot(now, |snapshot| read(snapshot, &tables))
        }
    }

    /// The key as a held write left it (see [`held`]), if one did: looked
    /// up before any snapshot is taken.
    fn held_entry(
        &self,
        id: &ProjectId,
        key: &Key,
        with_value: bool,
    ) -> Result<Option<Option<Entry>>, StoreError> {
        let Some(found) = self.shared.held.get(id.as_str(), key.as_str()) else {
            return Ok(None);
        };
        self.project(id)?;
        // Held writes are a disk project's: not read while its database is
        // out of service, as any other read of it.
        if !self.shared.disk_in_service() {
            return Err(StoreError::Unavailable);
        }
        let now = Timestamp::now();
        let entry = found
            .filter(|entry| entry.meta.expires_at.is_none_or(|at| at > now))
            .map(|mut entry| {
                if !with_value {
                    entry.value = Bytes::new();
                }
                entry
            });
        Ok(Some(entry))
    }

    /// A page of a listing: the held keys of its range over the snapshot's,
    /// both taken at one epoch of [`held::Held`] (a commit of the held
    /// writes between the two would show a newer snapshot under an older
    /// copy).
    fn read_held_page(
        &self,
        id: &ProjectId,
        request: &ListRequest,
    ) -> Result<ListPage, StoreError> {
        let start = page_start(request);
        for _ in 0..HELD_READ_TRIES {
            let (epoch, held) = self
                .shared
                .held
                .range(id.as_str(), start, request.prefix.as_str());
            let page = self.read_project(id, |snapshot, tables| {
                read_page(snapshot, tables, request, &held)
            })?;
            if self.shared.held.epoch() == epoch {
                return Ok(page);
            }
        }
        // Commits come at most every few milliseconds under any load; a
        // listing that meets one at each try is refused, not looped on.
        Err(StoreError::Unavailable)
    }
}

#[async_trait]
impl Store for RedbStore {
    fn catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        Ok(self.shared.view.catalog())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            storage_modes: &[StorageMode::Disk, StorageMode::Memory],
        }
    }

    fn subscribe(&self, project: &ProjectId) -> Result<Subscription, StoreError> {
        let project = self.project(project)?;
        Ok(Subscription {
            incarnation: project.incarnation,
            feed: project.stats.feed.clone(),
        })
    }

    fn revision(&self) -> u64 {
        self.shared.view.revision()
    }

    fn storage_bytes(&self) -> u64 {
        std::fs::metadata(&self.shared.path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn is_writable(&self) -> bool {
        self.shared.writable.load(Ordering::Acquire)
            && !self.writer.is_closed()
            && !self.shared.still_full()
    }

    async fn write_kv(&self, write: KvWrite) -> Result<KvCommit, StoreError> {
        self.send(|reply| Command::Kv(write, reply)).await
    }

    async fn write_catalog(&self, write: CatalogWrite, by: Authority) -> Result<(), StoreError> {
        self.send(|reply| Command::Catalog(write, by, reply)).await
    }

    async fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
        Ok(self.send(Command::Snapshot).await?)
    }

    async fn get(
        &self,
        project: &ProjectId,
        key: &Key,
        with_value: bool,
    ) -> Result<Read<Option<Entry>>, StoreError> {
        // Read the published revision first: the snapshot below is at least
        // that new, so the revision never claims more than the answer shows.
        let published = self.revision();
        let entry = match self.held_entry(project, key, with_value)? {
            Some(found) => found,
            None => self.read_project(project, |db, tables| {
                read_entry(db, tables, key, with_value)
            })?,
        };
        let revision = entry
            .as_ref()
            .map_or(published, |e| e.meta.version.max(published));
        Ok(Read {
            revision,
            value: entry,
        })
    }

    async fn list(
        &self,
        project: &ProjectId,
        request: ListRequest,
    ) -> Result<Read<ListPage>, StoreError> {
        let published = self.revision();
        let page = self.read_held_page(project, &request)?;
        let newest = page.entries.iter().map(|(m, _)| m.version).max();
        Ok(Read {
            revision: newest.map_or(published, |v| v.max(published)),
            value: page,
        })
    }

    async fn changes(
        &self,
        project: &ProjectId,
        after: u64,
        max_changes: usize,
    ) -> Result<ChangeSets, StoreError> {
        let feed = self.project(project)?;
        let feed = &feed.stats.feed;
        if let Some(sets) = feed.after(after, max_changes) {
            return Ok(sets);
        }
        // Behind the feed's memory: the durable log. The compaction point is
        // read after the log, and raised before a compaction commits, so
        // changes missing from this read are always reported.
        let tables = KeyTables::of(project.as_str());
        let storage = self.project(project)?.settings.storage;
        let mut sets = Vec::new();
        for _ in 0..HELD_READ_TRIES {
            let (read, committed) = self.shared.with_snapshot(storage, |snapshot| {
                let sets = snapshot.changes(&tables, after, max_changes)?;
                Ok((sets, snapshot.revision()?))
            })?;
            sets = read.into_iter().map(Arc::new).collect::<ChangeSets>();
            let taken: usize = sets.iter().map(|set| set.changes.len()).sum();
            // A memory project's log is committed with every batch.
            if taken >= max_changes || storage == StorageMode::Memory {
                break;
            }
            // The log at the snapshot has every set of the project up to the
            // revision of the snapshot's commit (`committed`), and none of
            // the writes held in the disk database's open transaction (see
            // [`held`]): the feed has those, and every set after that
            // revision (the held ones are fewer than a feed keeps). If the
            // feed has moved past it meanwhile, a newer snapshot has more of
            // the log.
            let reached = sets.last().map_or(after, |set| set.revision);
            if let Some(newer) = feed.after(reached.max(committed), max_changes - taken) {
                sets.extend(newer);
                break;
            }
        }
        let compacted = feed.compacted();
        if after < compacted {
            return Err(StoreError::HistoryCompacted {
                compact_revision: compacted,
            });
        }
        Ok(sets)
    }

    async fn verify(&self) -> Result<Report, StoreError> {
        // Both databases at one revision, as a backup takes them.
        let snapshot = self.send(Command::Snapshot).await?;
        tokio::task::spawn_blocking(move || {
            let (disk, memory) = snapshot.transactions();
            let mut report = Report::default();
            let projects = verify::walk_catalog(disk, &mut report);
            verify::walk_keys(disk, &projects, StorageMode::Disk, &mut report);
            verify::walk_keys(memory, &projects, StorageMode::Memory, &mut report);
            report
        })
        .await
        .map_err(StoreError::internal)
    }

    async fn compact(&self) -> Result<Compacted, StoreError> {
        self.send(Command::Compact).await
    }

    fn catalog_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.view.catalog_changes()
    }

    async fn close(&self) {
        let _ = self.send(Command::Close).await;
        let thread = self
            .writer_thread
            .lock()
            .ok()
            .and_then(|mut guard| guard.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Shared {
    /// Whether the disk is still as full as when a commit failed for lack
    /// of room: then writes that need it are refused without a try, since
    /// trying would fail the same way, and each failed commit costs a
    /// reopen of the database and a replay of the log, during which readers
    /// get 503. Any growth of the room ends this (a file removed, the
    /// filesystem grown), whether a write or `/readyz` sees it first.
    fn still_full(&self) -> bool {
        let mut full = self.full.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(then) = *full else {
            return false;
        };
        match writer::Room::of(&self.path) {
            Some(now) if !now.grew_from(then) => true,
            _ => {
                *full = None;
                false
            }
        }
    }

    /// Runs `f` on the shared read snapshot of a storage mode's database;
    /// 503 while the disk database is being reopened (and until the log's
    /// writes are stored in it again).
    fn with_snapshot<T>(
        &self,
        storage: StorageMode,
        f: impl FnOnce(&Snapshot) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let snapshot = match storage {
            StorageMode::Disk => match self.disk.load().as_ref() {
                // The flag is read after the database: a reopened one is
                // stored after the flag is set.
                Some(db) if !self.replaying.load(Ordering::SeqCst) => {
                    self.disk_reads.snapshot(db)?
                }
                _ => return Err(StoreError::Unavailable),
            },
            StorageMode::Memory => self.memory_reads.snapshot(&self.memory.load())?,
        };
        // redb may panic on a damaged page: that read fails, not the server.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&snapshot))).unwrap_or_else(
            |_| {
                tracing::error!(
                    storage = storage.as_str(),
                    "a read panicked (a damaged page?)"
                );
                metrics::counter!(codec::CORRUPTED_METRIC).increment(1);
                Err(StoreError::DataCorrupted("a damaged page".to_owned()))
            },
        )
    }

    /// Whether the disk database can be read: not while it is reopened,
    /// nor until the log's writes are stored in it again.
    fn disk_in_service(&self) -> bool {
        self.disk.load().is_some() && !self.replaying.load(Ordering::SeqCst)
    }

    /// The read cache of a storage mode's database.
    pub(super) fn reads(&self, storage: StorageMode) -> &ReadCache {
        match storage {
            StorageMode::Disk => &self.disk_reads,
            StorageMode::Memory => &self.memory_reads,
        }
    }

    /// The database of a storage mode, for the writer.
    fn database(&self, storage: StorageMode) -> Result<Arc<Database>, StoreError> {
        match storage {
            StorageMode::Disk => self.disk.load_full().ok_or(StoreError::Unavailable),
            StorageMode::Memory => Ok(self.memory.load_full()),
        }
    }

    /// A write transaction of the database of a storage mode, for the
    /// writer; on disk with quick repair (see [`begin_disk_write`]).
    fn begin_write(&self, storage: StorageMode) -> Result<WriteTransaction, StoreError> {
        let db = self.database(storage)?;
        match storage {
            StorageMode::Disk => begin_disk_write(&db),
            StorageMode::Memory => db.begin_write().map_err(storage_error),
        }
    }
}

/// An empty memory database. The memory backend already holds every page
/// in memory: redb's page cache on top of it (1 GiB by default) would hold
/// them twice.
fn new_memory_database() -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(MEMORY_CACHE_BYTES)
        .create_with_backend(memory_backend::ChunkedMemory::default())
        .map_err(storage_error)
}

/// A write transaction of the disk database whose durable commit records
/// redb's allocator state (quick repair), so that opening the database
/// after a crash does not walk every page to rebuild it: at 10,000,000 keys
/// that walk made a start after SIGKILL take 6.6 s. It costs a durable
/// commit a second sync (a two-phase commit) and the state's pages; with
/// the write-ahead log, durable commits are the checkpoints, at most one
/// every 100 ms under writes. A commit without a sync (a logged batch)
/// turns it off: only a durable commit's state is found after a crash.
fn begin_disk_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write().map_err(storage_error)?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// A key's entry at the snapshot (with its value when `with_value`), as the
/// snapshot remembers it or else from its tables.
fn read_entry(
    snapshot: &Snapshot,
    tables: &KeyTables,
    key: &Key,
    with_value: bool,
) -> Result<Option<Entry>, StoreError> {
    let now = Timestamp::now();
    if let Some(found) = snapshot.remembered(tables.project, key.as_str(), with_value, now) {
        return Ok(found);
    }
    let found = read_stored_entry(snapshot, tables, key, with_value, now)?;
    snapshot.remember(tables.project, key.as_str(), found.as_ref(), with_value);
    Ok(found)
}

/// [`read_entry`] from the snapshot's tables.
fn read_stored_entry(
    snapshot: &Snapshot,
    tables: &KeyTables,
    key: &Key,
    with_value: bool,
    now: Timestamp,
) -> Result<Option<Entry>, StoreError> {
    let Some(keys) = snapshot.keys(tables)? else {
        return Ok(None);
    };
    let Some(entry) = keys.get(key.as_str()).map_err(storage_error)? else {
        return Ok(None);
    };
    let (record, inline) = decode_entry(tables.project, key.as_str(), entry.value())?;
    if record.is_expired(now) || snapshot.swept(tables.project, key.as_str(), &record) {
        return Ok(None);
    }
    let value = match (with_value, record.inline) {
        (false, _) => Bytes::new(),
        (true, true) => Bytes::copy_from_slice(inline),
        (true, false) => external_value(snapshot, tables, key.as_str(), &record)?,
    };
    Ok(Some(Entry {
        meta: record.into_meta(key.clone()),
        value,
    }))
}

/// A value kept in the values table (too large to be inline), checked
/// against its key's record.
fn external_value(
    snapshot: &Snapshot,
    tables: &KeyTables,
    key: &str,
    record: &KeyRecord,
) -> Result<Bytes, StoreError> {
    let missing = || codec::corrupted(&["values/", tables.project], key.as_bytes());
    let values = snapshot.values(tables)?.ok_or_else(missing)?;
    let guard = values
        .get(key)
        .map_err(storage_error)?
        .ok_or_else(missing)?;
    codec::check_value(tables.project, key, record, guard.value())?;
    Ok(Bytes::copy_from_slice(guard.value()))
}

/// A page of a listing at the snapshot, with the held keys of its range
/// (`held`, see [`held`]) in place of the snapshot's.
fn read_page(
    snapshot: &Snapshot,
    tables: &KeyTables,
    request: &ListRequest,
    held: &held::HeldKeys,
) -> Result<ListPage, StoreError> {
    let prefix = request.prefix.as_str();
    let start = page_start(request);
    let now = Timestamp::now();
    let mut page = Page::new(request);
    let mut held = held
        .iter()
        .filter(|(key, _)| request.after.as_deref() != Some(key.as_str()))
        .peekable();
    let Some(keys) = snapshot.keys(tables)? else {
        page.take_held(&mut held, None, now);
        return Ok(page.done());
    };
    // A delete by prefix still being swept: its keys are skipped over by a
    // seek past them, not read one by one.
    let sweep = snapshot.sweep(tables.project);
    let skip_to = sweep.map(|sweep| (sweep, Prefix::from_stored(&sweep.prefix).upper_bound()));
    let mut range = keys.range(start..).map_err(storage_error)?;
    while let Some(item) = range.next() {
        let (key, entry) = item.map_err(storage_error)?;
        let key = key.value();
        if !key.as_bytes().starts_with(prefix.as_bytes()) {
            break;
        }
        if request.after.as_deref() == Some(key) {
            continue;
        }
        if !page.take_held(&mut held, Some(key), now) {
            return Ok(page.done());
        }
        // A held write of this key stands for the snapshot's entry.
        if let Some((_, entry)) = held.next_if(|(held, _)| held.as_str() == key) {
            if !page.add_held(entry.as_ref(), now) {
                return Ok(page.done());
            }
            continue;
        }
        let (record, inline) = decode_entry(tables.project, key, entry.value())?;
        if record.is_expired(now) {
            continue;
        }
        if let Some((sweep, upper)) = &skip_to
            && sweep.covers(key, &record)
        {
            match upper {
                Some(upper) if upper.as_str() > key => {
                    range = keys.range(upper.as_str()..).map_err(storage_error)?;
                }
                Some(_) => {}
                None => break,
            }
            continue;
        }
        if page.is_full() {
            page.more = true;
            return Ok(page.done());
        }
        let value = match (request.with_values, record.inline) {
            (false, _) => None,
            (true, true) => Some(Bytes::copy_from_slice(inline)),
            (true, false) => Some(external_value(snapshot, tables, key, &record)?),
        };
        page.push(record.into_meta(Key::from_stored(key)), value);
    }
    page.take_held(&mut held, None, now);
    Ok(page.done())
}

/// Where a listing starts: after `after` when it is under the prefix.
fn page_start(request: &ListRequest) -> &str {
    let prefix = request.prefix.as_str();
    match &request.after {
        Some(after) if after.as_str() >= prefix => after.as_str(),
        _ => prefix,
    }
}

/// A listing's page as [`read_page`] fills it.
struct Page<'r> {
    request: &'r ListRequest,
    entries: Vec<(crate::store::KeyMeta, Option<Bytes>)>,
    budget_used: u64,
    more: bool,
}

impl<'r> Page<'r> {
    fn new(request: &'r ListRequest) -> Page<'r> {
        Page {
            request,
            entries: Vec::new(),
            budget_used: 0,
            more: false,
        }
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= self.request.limit
            || (self.request.with_values && self.budget_used >= self.request.value_budget)
    }

    fn push(&mut self, meta: crate::store::KeyMeta, value: Option<Bytes>) {
        self.budget_used += value.as_ref().map_or(0, |v| v.len() as u64);
        self.entries.push((meta, value));
    }

    /// Adds a held key's entry (none for a held delete); false when the
    /// page was full.
    fn add_held(&mut self, entry: Option<&Entry>, now: Timestamp) -> bool {
        let Some(entry) = entry else {
            return true;
        };
        if entry.meta.expires_at.is_some_and(|at| at <= now) {
            return true;
        }
        if self.is_full() {
            self.more = true;
            return false;
        }
        let value = self.request.with_values.then(|| entry.value.clone());
        self.push(entry.meta.clone(), value);
        true
    }

    /// Adds the held keys before `before` (all of them without it); false
    /// when the page was full.
    fn take_held<'h>(
        &mut self,
        held: &mut std::iter::Peekable<impl Iterator<Item = (&'h String, &'h Option<Entry>)>>,
        before: Option<&str>,
        now: Timestamp,
    ) -> bool {
        while let Some((_, entry)) =
            held.next_if(|(key, _)| before.is_none_or(|before| key.as_str() < before))
        {
            if !self.add_held(entry.as_ref(), now) {
                return false;
            }
        }
        true
    }

    fn done(self) -> ListPage {
        ListPage {
            entries: self.entries,
            more: self.more,
        }
    }
}

/// The deletes by prefix that a stopped process left half removed: the
/// writer finishes them (only disk projects keep keys across a restart).
fn resume_sweeps(disk: &Database, catalog: &Catalog) -> Result<Vec<Sweep>, StoreError> {
    let txn = disk.begin_read().map_err(storage_error)?;
    let mut sweeps = Vec::new();
    for (id, record) in snapshot::read_sweeps(&txn)? {
        let project = ProjectId::parse(&id).and_then(|id| catalog.project(&id).cloned());
        if let Some(project) = project {
            tracing::info!(project = %id, prefix = record.prefix, "resuming a delete by prefix");
            let storage = project.settings.storage;
            let sweep = Sweep::resume(
                project.settings.id.clone(),
                project.incarnation,
                storage,
                record,
            );
            sweeps.push(sweep);
        }
    }
    Ok(sweeps)
}

/// Reads the catalog and the server counters at start. Keys of memory
/// projects are gone (their database is new), so their figures start empty,
/// unless a restore has just put them back (`memory` then has their figures).
type Loaded = (Catalog, u64, u64, HashMap<ProjectId, HistoryRecord>);

/// The server revision of the disk database's last durable commit (what it
/// holds when opened).
fn durable_revision(disk: &Database) -> Result<u64, StoreError> {
    let txn = disk.begin_read().map_err(storage_error)?;
    snapshot::server_revision(&txn)
}

/// The change-log figures of the disk projects in `catalog` as `disk`'s
/// last commit recorded them, read as the start reads them.
fn disk_histories(
    disk: &Database,
    catalog: &Catalog,
) -> Result<HashMap<ProjectId, HistoryRecord>, StoreError> {
    let txn = disk.begin_read().map_err(storage_error)?;
    let table = match txn.open_table(codec::HISTORY) {
        Ok(table) => Some(table),
        // No project wrote before that commit: none has figures.
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(storage_error(error)),
    };
    catalog
        .projects()
        .filter(|project| project.settings.storage == StorageMode::Disk)
        .map(|project| {
            let id = &project.settings.id;
            let record = match &table {
                Some(table) => stored_history(table, id)?,
                None => HistoryRecord::default(),
            };
            Ok((id.clone(), record))
        })
        .collect()
}

/// A disk project's change-log figures in the `history` table (none when
/// it has no record: it never wrote).
fn stored_history(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &ProjectId,
) -> Result<HistoryRecord, StoreError> {
    match table.get(id.as_str()).map_err(storage_error)? {
        Some(record) => decode(HISTORY_NAME, id.as_str(), record.value()),
        None => Ok(HistoryRecord::default()),
    }
}

const PROJECTS_NAME: &str = "catalog/projects";
const TOKENS_NAME: &str = "catalog/tokens";
const STATS_NAME: &str = "stats";
const HISTORY_NAME: &str = "history";

fn load(disk: &Database, memory: &Database) -> Result<Loaded, StoreError> {
    let restored = memory.begin_read().map_err(storage_error)?;
    let restored_record = |table: redb::TableDefinition<&str, &[u8]>,
                           id: &ProjectId|
     -> Result<Option<Vec<u8>>, StoreError> {
        match restored.open_table(table) {
            Ok(table) => Ok(table
                .get(id.as_str())
                .map_err(storage_error)?
                .map(|record| record.value().to_vec())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(error) => Err(storage_error(error)),
        }
    };
    let txn = begin_disk_write(disk)?;
    codec::migrate::migrate(&txn, "disk")?;
    let mut catalog = Catalog::default();
    let mut histories = HashMap::new();
    let (mut revision, reserved);
    {
        let server = txn.open_table(codec::SERVER).map_err(storage_error)?;
        let counter = |name| -> Result<u64, StoreError> {
            Ok(server
                .get(name)
                .map_err(storage_error)?
                .map_or(0, |v| v.value()))
        };
        revision = counter(codec::REVISION)?;
        reserved = counter(codec::RESERVED)?;
        let projects = txn.open_table(codec::PROJECTS).map_err(storage_error)?;
        let stats = txn.open_table(codec::STATS).map_err(storage_error)?;
        let history = txn.open_table(codec::HISTORY).map_err(storage_error)?;
        // Every project's figures record its last revision too; the newest
        // of all is a floor for the counter, whatever a crash left.
        for item in stats.iter().map_err(storage_error)? {
            let (id, record) = item.map_err(storage_error)?;
            let record: StatsRecord = decode(STATS_NAME, id.value(), record.value())?;
            revision = revision.max(record.revision);
        }
        let mut orphans = Vec::new();
        for item in projects.iter().map_err(storage_error)? {
            let (id, record) = item.map_err(storage_error)?;
            let settings: ProjectSettings = decode(PROJECTS_NAME, id.value(), record.value())?;
            if settings.id.as_str() != id.value() {
                return Err(codec::corrupted(&[PROJECTS_NAME], id.value().as_bytes()));
            }
            let figures = match settings.storage {
                StorageMode::Disk => {
                    match stats.get(settings.id.as_str()).map_err(storage_error)? {
                        Some(record) => decode(STATS_NAME, settings.id.as_str(), record.value())?,
                        None => StatsRecord::default(),
                    }
                }
                // A restart drops a memory project's keys: its revision is
                // that moment's, past every version it ever handed out.
                StorageMode::Memory => {
                    orphans.push(settings.id.clone());
                    match restored_record(codec::STATS, &settings.id)? {
                        Some(record) => decode(STATS_NAME, settings.id.as_str(), &record)?,
                        None => StatsRecord {
                            revision: revision.max(reserved),
                            ..StatsRecord::default()
                        },
                    }
                }
            };
            let revision = figures.revision.max(settings.created_revision);
            let stats = ProjectStats::new(figures.keys, figures.bytes, revision);
            // A memory project's change log went with its keys: a watch may
            // resume only from this moment on.
            let record = match settings.storage {
                StorageMode::Disk => stored_history(&history, &settings.id)?,
                StorageMode::Memory => match restored_record(codec::HISTORY, &settings.id)? {
                    Some(record) => decode(HISTORY_NAME, settings.id.as_str(), &record)?,
                    None => HistoryRecord {
                        compacted: revision,
                        ..HistoryRecord::default()
                    },
                },
            };
            stats.feed.raise_compacted(record.compacted);
            histories.insert(settings.id.clone(), record);
            catalog.insert_project(Project {
                settings,
                stats: Arc::new(stats),
                incarnation: writer::next_incarnation(),
            });
        }
        drop((stats, history));
        // A memory project keeps no key on disk. Tables left there by a move
        // that a crash interrupted are removed.
        for id in orphans {
            let tables = KeyTables::of(id.as_str());
            txn.delete_table(tables.keys()).map_err(storage_error)?;
            txn.delete_table(tables.values()).map_err(storage_error)?;
            txn.delete_table(tables.changes()).map_err(storage_error)?;
            for table in [codec::STATS, codec::HISTORY] {
                let mut table = txn.open_table(table).map_err(storage_error)?;
                table.remove(id.as_str()).map_err(storage_error)?;
            }
        }
        let tokens = txn.open_table(codec::TOKENS).map_err(storage_error)?;
        for item in tokens.iter().map_err(storage_error)? {
            let (id, record) = item.map_err(storage_error)?;
            let token: TokenRecord = decode(TOKENS_NAME, id.value(), record.value())?;
            catalog.insert_token(token);
        }
        let imported = txn.open_table(codec::IMPORTED).map_err(storage_error)?;
        for item in imported.iter().map_err(storage_error)? {
            let (id, digest) = item.map_err(storage_error)?;
            let id = TokenId::from_path(id.value());
            let digest = ImportedDigest::parse(digest.value()).map_err(StoreError::internal)?;
            if catalog.token_by_id(&id).is_some() {
                catalog.insert_imported(id, digest);
            }
        }
    }
    txn.commit().map_err(storage_error)?;
    Ok((catalog, revision.max(reserved), reserved, histories))
}

#[cfg(test)]
mod tests {
    use redb::backends::InMemoryBackend;

    use super::writer::testing::{put, store_with_project, write};
    use super::*;
    use crate::store::{KeyMeta, KvOp};

    fn meta(key: &str, version: u64, expires_at: Option<Timestamp>) -> KeyMeta {
        let at = Timestamp::from_millis(1_000);
        KeyMeta {
            key: Key::from_stored(key),
            version,
            created_at: at,
            updated_at: at,
            expires_at,
            size: 1,
            content_type: "text/plain".to_owned(),
        }
    }

    fn held_entry(key: &str, value: &'static str, expires_at: Option<Timestamp>) -> Option<Entry> {
        Some(Entry {
            meta: meta(key, 9, expires_at),
            value: Bytes::from_static(value.as_bytes()),
        })
    }

    fn request(prefix: &str, after: Option<&str>, limit: usize) -> ListRequest {
        ListRequest {
            prefix: Prefix::parse(prefix).unwrap(),
            after: after.map(str::to_owned),
            limit,
            with_values: true,
            value_budget: u64::MAX,
        }
    }

    /// What a page shows: each key and its value.
    fn shown(page: &ListPage) -> Vec<(String, String)> {
        page.entries
            .iter()
            .map(|(meta, value)| {
                let value = value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                (meta.key.as_str().to_owned(), value.unwrap_or_default())
            })
            .collect()
    }

    /// A listing merges the held keys of its range into the snapshot's in
    /// key order: a held write stands for the snapshot's entry of its key,
    /// a held delete hides it, an expired held entry is not shown, and
    /// pages (`limit`, `after`, a prefix) cut the merged order.
    #[test]
    fn a_listing_shows_the_held_keys_over_the_snapshots() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let tables = KeyTables::of("p");
        {
            let txn = db.begin_write().unwrap();
            let mut keys = txn.open_table(tables.keys()).unwrap();
            for key in ["a", "c", "e", "g"] {
                let value = key.to_uppercase();
                let record = KeyRecord::from_meta(&meta(key, 1, None), true);
                let entry = codec::encode_entry("p", key, &record, value.as_bytes()).unwrap();
                keys.insert(key, entry.as_slice()).unwrap();
            }
            drop(keys);
            txn.commit().unwrap();
        }
        let snapshot = ReadCache::default().snapshot(&Arc::new(db)).unwrap();
        let past = Some(Timestamp::from_millis(2_000));
        let held = held::Held::default();
        held.add(
            [
                ("b", held_entry("b", "B", None)),
                ("c", None),
                ("d", held_entry("d", "D", past)),
                ("e", held_entry("e", "E2", None)),
                ("h", held_entry("h", "H", None)),
            ]
            .into_iter()
            .map(|(key, entry)| ("p".to_owned(), key.to_owned(), entry))
            .collect(),
        );
        let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let page = |prefix: &str, after: Option<&str>, limit: usize| {
            let request = request(prefix, after, limit);
            // The held keys as `RedbStore::read_held_page` takes them.
            let (_, held) = held.range("p", page_start(&request), prefix);
            read_page(&snapshot, &tables, &request, &held).unwrap()
        };

        let all = page("", None, 100);
        let expected = [("a", "A"), ("b", "B"), ("e", "E2"), ("g", "G"), ("h", "H")];
        assert_eq!(shown(&all), pairs(&expected));
        assert!(!all.more);

        let first = page("", None, 2);
        assert_eq!(shown(&first), pairs(&[("a", "A"), ("b", "B")]));
        assert!(first.more);
        let second = page("", Some("b"), 2);
        assert_eq!(shown(&second), pairs(&[("e", "E2"), ("g", "G")]));
        assert!(second.more);
        let last = page("", Some("g"), 2);
        assert_eq!(shown(&last), pairs(&[("h", "H")]));
        assert!(!last.more);

        assert_eq!(shown(&page("e", None, 10)), pairs(&[("e", "E2")]));
        assert!(shown(&page("c", None, 10)).is_empty());

        // A project whose keys table does not exist yet: its held keys only.
        let other = KeyTables::of("q");
        let request = request("", None, 10);
        let (_, all) = held.range("p", "", "");
        let only = read_page(&snapshot, &other, &request, &all).unwrap();
        assert_eq!(shown(&only), pairs(&[("b", "B"), ("e", "E2"), ("h", "H")]));
    }

    async fn get(store: &RedbStore, id: &ProjectId, key: &str) -> Option<Entry> {
        let key = Key::parse(key).unwrap();
        store.get(id, &key, true).await.unwrap().value
    }

    async fn list(store: &RedbStore, id: &ProjectId) -> Vec<String> {
        let page = store.list(id, request("", None, 1000)).await.unwrap().value;
        page.entries
            .into_iter()
            .map(|(meta, _)| meta.key.as_str().to_owned())
            .collect()
    }

    /// A watch from revision 0 of a project made after other writes (its
    /// feed starts at its creation, so revision 0 is behind it) gets the
    /// writes held in the open transaction too: the change log at the
    /// snapshot has none of them, the feed has them all.
    #[tokio::test]
    async fn changes_from_before_a_new_projects_feed_include_its_held_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, other) = store_with_project(dir.path()).await;
        for n in 0..10 {
            let key = format!("k{n}");
            store
                .write_kv(write(&other, vec![put(&key)]))
                .await
                .unwrap();
        }
        let mut seen_held = false;
        for round in 0..20 {
            let id = ProjectId::parse(&format!("new{round}")).unwrap();
            let mut settings = store.project(&other).unwrap().settings.clone();
            settings.id = id.clone();
            let create = CatalogWrite::CreateProject {
                settings,
                token: None,
            };
            store
                .write_catalog(create, Authority::server())
                .await
                .unwrap();
            let mut revisions = Vec::new();
            for key in ["a", "b", "c"] {
                let commit = store.write_kv(write(&id, vec![put(key)])).await.unwrap();
                revisions.push(commit.revision);
            }
            let held = !store.shared.held.is_empty();
            let sets = store.changes(&id, 0, 100).await.unwrap();
            let seen: Vec<u64> = sets.iter().map(|set| set.revision).collect();
            assert_eq!(seen, revisions, "round {round}, held: {held}");
            if held {
                seen_held = true;
                break;
            }
        }
        assert!(seen_held, "no write was ever held");
        store.close().await;
    }

    /// Writes that only the log made durable are held in the disk
    /// database's open transaction: they are read and listed all the same,
    /// a delete among them hides the committed key, and they are all there
    /// after a clean stop. (After a SIGKILL: `tests/held_writes.rs` and
    /// `tests/crash.rs`.)
    #[tokio::test]
    async fn held_writes_are_read_listed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        // The held writes are committed within 100 ms to 1 s (at the log's
        // next checkpoint): a slow round may find none held, and tries again.
        let mut seen_held = false;
        let mut written = Vec::new();
        for round in 0..20 {
            let gone = format!("gone{round:02}");
            store.write_kv(write(&id, vec![put(&gone)])).await.unwrap();
            // A catalog write commits durably: a new window of 100 ms or more.
            let change = crate::store::ProjectChange {
                keys_discoverable: Some(round % 2 == 1),
                ..Default::default()
            };
            let update = CatalogWrite::UpdateProject {
                id: id.clone(),
                change,
            };
            store
                .write_catalog(update, Authority::server())
                .await
                .unwrap();
            let keys: Vec<String> = (0..5).map(|n| format!("r{round:02}k{n}")).collect();
            for key in &keys {
                store.write_kv(write(&id, vec![put(key)])).await.unwrap();
            }
            let delete = KvOp::Delete {
                key: Key::parse(&gone).unwrap(),
                precondition: None,
                must_exist: true,
            };
            store.write_kv(write(&id, vec![delete])).await.unwrap();
            written.extend(keys.clone());
            if store.shared.held.is_empty() {
                continue;
            }
            seen_held = true;
            for key in &keys {
                let entry = get(&store, &id, key).await.expect("a held write is read");
                assert_eq!(entry.value, Bytes::from_static(b"v"));
            }
            assert!(get(&store, &id, &gone).await.is_none());
            assert_eq!(list(&store, &id).await, written);
            break;
        }
        assert!(seen_held, "no write was ever held");
        store.close().await;
        drop(store);

        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(list(&store, &id).await, written);
        store.close().await;
    }
}
