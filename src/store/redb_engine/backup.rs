//! Backups and restores at the engine's level: a consistent snapshot of both
//! databases for a backup, and the offline writer of a new data directory
//! from one.
//!
//! A snapshot must hold one revision across two databases (the disk one and
//! the in-memory one of `memory` projects), and each redb read transaction
//! sees one database only. So the writer thread takes it: between two
//! batches, when nothing is half-committed in either database, it begins a
//! read transaction on each and notes the revision and the catalog. That
//! costs two transaction begins on the writer's thread and blocks no write;
//! the snapshot then pins the pages it sees (the disk file may grow while a
//! long backup runs) until it is dropped.
//!
//! A restore writes a new data directory offline, into files beside the
//! final ones, and makes them live with one rename once the whole backup
//! has been read and verified. The keys of memory projects cannot go into a
//! database that exists only while a server runs, so they go to
//! `restored-memory.redb` (the in-memory database's layout), which the next
//! start copies into its in-memory database and then removes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};

use super::codec::{
    self, HistoryRecord, INLINE_LIMIT, KeyRecord, KeyTables, StatsRecord, decode_entry,
    encode_entry, expiry_key, storage_error,
};
use super::writer::{copy_table, put_record};
use super::{Shared, StorageMode};
use crate::domain::{ImportedDigest, Key, ProjectId, TokenRecord};
use crate::files;
use crate::store::{Catalog, Entry, ProjectDump, StoreError, StoreSnapshot, TokenDump};

/// The file a restore leaves for the next start: memory projects' keys.
pub const RESTORED_MEMORY: &str = "restored-memory.redb";

/// Memory projects whose keys a [`RESTORED_MEMORY`] file holds.
const RESTORED_PROJECTS: TableDefinition<&str, ()> = TableDefinition::new("restored/projects");

/// Both databases, the catalog and every project's figures at one revision.
pub struct RedbSnapshot {
    revision: u64,
    catalog: Arc<Catalog>,
    projects: Vec<ProjectDump>,
    disk: ReadTransaction,
    memory: ReadTransaction,
    /// The databases read: a transaction fails once its database is
    /// closed, and a compaction puts new ones in their place meanwhile.
    /// (Declared after the transactions, so dropped after them.)
    _databases: [Arc<Database>; 2],
    /// To see whether the writer took the disk database out of service.
    shared: Arc<Shared>,
}

/// Keys read between two looks at whether the snapshot is withdrawn.
const KEYS_PER_LOOK: usize = 1024;

impl RedbSnapshot {
    /// The read transactions of the disk and the memory database.
    pub(super) fn transactions(&self) -> (&ReadTransaction, &ReadTransaction) {
        (&self.disk, &self.memory)
    }
}

/// Called by the writer between batches: nothing is half-committed, and the
/// catalog, the figures and the revision are those of the last commit.
pub(super) fn take(shared: &Arc<Shared>, revision: u64) -> Result<RedbSnapshot, StoreError> {
    let disk = shared.database(StorageMode::Disk)?;
    let memory = shared.memory.load_full();
    let catalog = shared.view.catalog();
    let projects = catalog
        .projects()
        .map(|project| ProjectDump {
            settings: project.settings.clone(),
            revision: project.stats.revision(),
            keys: project.stats.keys(),
            bytes: project.stats.bytes(),
        })
        .collect();
    Ok(RedbSnapshot {
        revision,
        catalog,
        projects,
        disk: disk.begin_read().map_err(storage_error)?,
        memory: memory.begin_read().map_err(storage_error)?,
        _databases: [disk, memory],
        shared: Arc::clone(shared),
    })
}

impl StoreSnapshot for RedbSnapshot {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn projects(&self) -> Vec<ProjectDump> {
        self.projects.clone()
    }

    fn tokens(&self) -> Vec<TokenDump> {
        self.catalog
            .tokens()
            .into_iter()
            .map(|record| TokenDump {
                record: (**record).clone(),
                imported: self.catalog.imported_digest(&record.id).cloned(),
            })
            .collect()
    }

    fn keys(
        &self,
        project: &ProjectId,
        each: &mut dyn FnMut(Entry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(dump) = self.projects.iter().find(|p| &p.settings.id == project) else {
            return Err(StoreError::ProjectNotFound);
        };
        let txn = match dump.settings.storage {
            StorageMode::Disk => &self.disk,
            StorageMode::Memory => &self.memory,
        };
        let tables = KeyTables::of(project.as_str());
        let keys = match txn.open_table(tables.keys()) {
            Ok(keys) => keys,
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(error) => return Err(storage_error(error)),
        };
        let values = match txn.open_table(tables.values()) {
            Ok(values) => Some(values),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(storage_error(error)),
        };
        for (read, item) in keys.iter().map_err(storage_error)?.enumerate() {
            if read % KEYS_PER_LOOK == KEYS_PER_LOOK - 1 && self.withdrawn() {
                return Err(StoreError::Unavailable);
            }
            let (key, entry) = item.map_err(storage_error)?;
            let key = key.value();
            let (record, inline) = decode_entry(tables.project, key, entry.value())?;
            let value = if record.inline {
                Bytes::copy_from_slice(inline)
            } else {
                let missing = || codec::corrupted(&["values/", tables.project], key.as_bytes());
                let stored = values.as_ref().ok_or_else(missing)?;
                let stored = stored
                    .get(key)
                    .map_err(storage_error)?
                    .ok_or_else(missing)?;
                codec::check_value(tables.project, key, &record, stored.value())?;
                Bytes::copy_from_slice(stored.value())
            };
            each(Entry {
                meta: record.into_meta(Key::from_stored(key)),
                value,
            })?;
        }
        Ok(())
    }

    /// While the writer reopens the disk database after a failed commit,
    /// it has taken it out of service (`Shared::disk` is empty) and waits
    /// for its readers to let go. A compaction's swap does not count: the
    /// old database stays readable to the end.
    fn withdrawn(&self) -> bool {
        self.shared.disk.load().is_none()
    }
}

/// Writes a new data directory from a backup, record by record. Nothing is
/// live until [`Restorer::finish`]; dropped before, it removes what it wrote.
pub struct Restorer {
    dir: PathBuf,
    disk: Option<(Database, WriteTransaction)>,
    memory: Option<(Database, WriteTransaction)>,
    /// Every project so far, with its figures.
    projects: HashMap<ProjectId, (StorageMode, StatsRecord)>,
    /// Keys written since the last intermediate commit.
    pending: usize,
}

/// Keys per intermediate commit: bounds the memory a restore takes. The
/// files are not live yet, so these commits need not be durable.
const KEYS_PER_COMMIT: usize = 20_000;

const DISK_TMP: &str = "kvs.redb.restoring";
const MEMORY_TMP: &str = "restored-memory.redb.restoring";

fn begin(path: &Path) -> Result<(Database, WriteTransaction), StoreError> {
    files::create_private_file(path).map_err(storage_error)?;
    let db = Database::create(path).map_err(storage_error)?;
    let mut txn = db.begin_write().map_err(storage_error)?;
    txn.set_durability(redb::Durability::None)
        .map_err(storage_error)?;
    Ok((db, txn))
}

/// How far past a backup's revision a restored server resumes.
pub const RESTORE_REVISION_BUMP: u64 = 1_000_000_000;

impl Restorer {
    /// Starts a restore into `dir` (created if missing). The caller has
    /// checked that `dir` holds no store, or wants it replaced.
    pub fn create(dir: &Path) -> Result<Restorer, StoreError> {
        files::create_private_dir(dir).map_err(StoreError::internal)?;
        // A server still running on the store would go on writing to the
        // file that the restore renames away, and lose every write it
        // acknowledges from then on. redb's file lock tells.
        let live = dir.join("kvs.redb");
        if live.exists() {
            match Database::open(&live) {
                Ok(db) => drop(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::internal(format!(
                        "a server is running on {}: stop it first",
                        dir.display()
                    )));
                }
                // A damaged store is what --force replaces.
                Err(_) => {}
            }
        }
        for name in [DISK_TMP, MEMORY_TMP] {
            remove_if_present(&dir.join(name))?;
        }
        Ok(Restorer {
            dir: dir.to_owned(),
            disk: Some(begin(&dir.join(DISK_TMP))?),
            memory: None,
            projects: HashMap::new(),
            pending: 0,
        })
    }

    fn txn(&mut self, storage: StorageMode) -> Result<&WriteTransaction, StoreError> {
        let slot = match storage {
            StorageMode::Disk => &mut self.disk,
            StorageMode::Memory => &mut self.memory,
        };
        if slot.is_none() {
            *slot = Some(begin(&self.dir.join(MEMORY_TMP))?);
        }
        slot.as_ref()
            .map(|(_, txn)| txn)
            .ok_or_else(|| StoreError::internal("the restore is finished"))
    }

    /// A project's settings; its keys follow with [`Restorer::key`].
    pub fn project(&mut self, dump: &ProjectDump) -> Result<(), StoreError> {
        let id = dump.settings.id.clone();
        let disk = self.txn(StorageMode::Disk)?;
        put_record(disk, codec::PROJECTS, id.as_str(), &dump.settings)?;
        let storage = dump.settings.storage;
        if storage == StorageMode::Memory {
            let memory = self.txn(StorageMode::Memory)?;
            let mut restored = memory
                .open_table(RESTORED_PROJECTS)
                .map_err(storage_error)?;
            restored.insert(id.as_str(), ()).map_err(storage_error)?;
        }
        let figures = StatsRecord {
            keys: 0,
            bytes: 0,
            revision: dump.revision,
        };
        if self.projects.insert(id, (storage, figures)).is_some() {
            return Err(StoreError::ProjectExists);
        }
        Ok(())
    }

    /// A token, with the imported digest it still waits on, if any.
    pub fn token(
        &mut self,
        record: &TokenRecord,
        imported: Option<&ImportedDigest>,
    ) -> Result<(), StoreError> {
        let disk = self.txn(StorageMode::Disk)?;
        put_record(disk, codec::TOKENS, record.id.as_str(), record)?;
        if let Some(digest) = imported {
            let mut table = disk.open_table(codec::IMPORTED).map_err(storage_error)?;
            table
                .insert(record.id.as_str(), digest.as_str())
                .map_err(storage_error)?;
        }
        Ok(())
    }

    /// A key of a project given before, with its exact version and times.
    pub fn key(&mut self, project: &ProjectId, entry: &Entry) -> Result<(), StoreError> {
        let Some(&(storage, _)) = self.projects.get(project) else {
            return Err(StoreError::internal(format!(
                "a key of {project} comes before its project"
            )));
        };
        let tables = KeyTables::of(project.as_str());
        let meta = &entry.meta;
        let record = KeyRecord {
            version: meta.version,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            expires_at: meta.expires_at,
            size: entry.value.len() as u64,
            content_type: meta.content_type.clone(),
            inline: entry.value.len() <= INLINE_LIMIT,
            value_crc: 0,
        };
        let key = meta.key.as_str();
        let txn = self.txn(storage)?;
        {
            let mut keys = txn.open_table(tables.keys()).map_err(storage_error)?;
            let stored = encode_entry(tables.project, key, &record, &entry.value)?;
            keys.insert(key, stored.as_slice()).map_err(storage_error)?;
        }
        if !record.inline {
            let mut values = txn.open_table(tables.values()).map_err(storage_error)?;
            values
                .insert(key, entry.value.as_ref())
                .map_err(storage_error)?;
        }
        if let Some(at) = record.expires_at {
            let mut expiry = txn.open_table(codec::EXPIRY).map_err(storage_error)?;
            expiry
                .insert(expiry_key(at, project.as_str(), key).as_slice(), ())
                .map_err(storage_error)?;
        }
        if let Some((_, figures)) = self.projects.get_mut(project) {
            figures.keys += 1;
            figures.bytes += record.size;
        }
        self.pending += 1;
        if self.pending >= KEYS_PER_COMMIT {
            self.pending = 0;
            self.flush()?;
        }
        Ok(())
    }

    /// Commits what is written so far (not durably: nothing is live yet)
    /// and begins new transactions.
    fn flush(&mut self) -> Result<(), StoreError> {
        for slot in [&mut self.disk, &mut self.memory] {
            if let Some((db, txn)) = slot.take() {
                txn.commit().map_err(storage_error)?;
                let mut txn = db.begin_write().map_err(storage_error)?;
                txn.set_durability(redb::Durability::None)
                    .map_err(storage_error)?;
                *slot = Some((db, txn));
            }
        }
        Ok(())
    }

    /// Every project's figures, counted from its keys. The change log is
    /// not in the backup: it starts empty, compacted up to the project's
    /// last revision, so a watch from before that is told (410), never
    /// shown a gap.
    fn write_figures(&mut self, compacted: u64) -> Result<(), StoreError> {
        for (id, (storage, figures)) in std::mem::take(&mut self.projects) {
            let txn = self.txn(storage)?;
            put_record(txn, codec::STATS, id.as_str(), &figures)?;
            let history = HistoryRecord {
                compacted,
                ..HistoryRecord::default()
            };
            put_record(txn, codec::HISTORY, id.as_str(), &history)?;
        }
        Ok(())
    }

    /// Records the server revision, commits durably and makes the data
    /// directory live: the memory file first, then `kvs.redb` with one
    /// rename, which is the moment the restore happens.
    ///
    /// The server revision resumes [`RESTORE_REVISION_BUMP`] past the
    /// backup's (as etcd's `--bump-revision`): the backed-up server may
    /// have handed out revisions after its backup, and none may be handed
    /// out again with another meaning (an ETag matching another value, a
    /// watch resuming past changes it never saw). Each project's history is
    /// compacted up to there, so a watch from before the restore gets 410.
    pub fn finish(mut self, revision: u64) -> Result<(), StoreError> {
        // Saturated, the bump would hand out the same revisions again.
        let resumed = revision.checked_add(RESTORE_REVISION_BUMP).ok_or_else(|| {
            StoreError::internal(format!(
                "the backup's revision {revision} leaves no room for the restore's bump"
            ))
        })?;
        self.write_figures(resumed)?;
        {
            let disk = self.txn(StorageMode::Disk)?;
            let mut server = disk.open_table(codec::SERVER).map_err(storage_error)?;
            server
                .insert(codec::REVISION, resumed)
                .map_err(storage_error)?;
            server
                .insert(codec::RESERVED, resumed)
                .map_err(storage_error)?;
        }
        for slot in [&mut self.memory, &mut self.disk] {
            if let Some((db, mut txn)) = slot.take() {
                txn.set_durability(redb::Durability::Immediate)
                    .map_err(storage_error)?;
                txn.commit().map_err(storage_error)?;
                drop(db);
            }
        }
        let memory = self.dir.join(MEMORY_TMP);
        let live_memory = self.dir.join(RESTORED_MEMORY);
        remove_if_present(&live_memory)?;
        if memory.exists() {
            std::fs::rename(&memory, &live_memory).map_err(StoreError::internal)?;
        }
        // The write-ahead log of a store this one replaces holds writes of
        // that store: none may be replayed onto this one.
        remove_if_present(&self.dir.join("kvs.wal"))?;
        std::fs::rename(self.dir.join(DISK_TMP), self.dir.join("kvs.redb"))
            .map_err(StoreError::internal)?;
        sync_dir(&self.dir)
    }
}

impl crate::store::Restore for Restorer {
    fn project(&mut self, dump: &ProjectDump) -> Result<(), StoreError> {
        Restorer::project(self, dump)
    }

    fn token(
        &mut self,
        record: &TokenRecord,
        imported: Option<&ImportedDigest>,
    ) -> Result<(), StoreError> {
        Restorer::token(self, record, imported)
    }

    fn key(&mut self, project: &ProjectId, entry: &Entry) -> Result<(), StoreError> {
        Restorer::key(self, project, entry)
    }

    fn finish(self: Box<Self>, revision: u64) -> Result<(), StoreError> {
        Restorer::finish(*self, revision)
    }
}

impl Drop for Restorer {
    /// A restore that did not finish leaves no store behind.
    fn drop(&mut self) {
        self.disk = None;
        self.memory = None;
        for name in [DISK_TMP, MEMORY_TMP] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

pub(super) fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    files::remove_if_present(path)
        .map_err(|error| StoreError::internal(format!("cannot remove {}: {error}", path.display())))
}

/// At start, before the store is opened: what a `kvs restore` stopped
/// before its end (killed, so that its drop did not run) left in `dir`.
/// With no store beside it (a restore into a new directory), the start is
/// refused: an empty store made there would read as a restore that worked.
/// Beside a store (a `--force` restore), that store is still the live one:
/// the files are removed, with a warning. A restore still writing them
/// holds their lock: the start is refused then too.
pub fn unfinished_restore(dir: &Path) -> Result<(), StoreError> {
    let left: Vec<PathBuf> = [DISK_TMP, MEMORY_TMP]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.exists())
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    for path in &left {
        // Its repair is not wanted, only whether another process holds it.
        let opened = super::contain::contain(|| {
            redb::Builder::new()
                .set_repair_callback(|session| session.abort())
                .open(path)
        });
        if let Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) = opened {
            return Err(StoreError::internal(format!(
                "a kvs restore is writing {} now: start the server once it has finished",
                path.display()
            )));
        }
    }
    let live = std::fs::metadata(dir.join("kvs.redb")).is_ok_and(|meta| meta.len() > 0);
    let names = left
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    if !live {
        return Err(StoreError::internal(format!(
            "{dir} holds {names}, left by a kvs restore that did not finish, and no kvs.redb: \
             nothing was restored. Run the restore again (`kvs restore --force`, which starts \
             over), or remove {names} to start a new, empty store here",
            dir = dir.display(),
        )));
    }
    for path in &left {
        remove_if_present(path)?;
    }
    tracing::warn!(
        files = %names,
        "a kvs restore into this data directory did not finish: the store it was to replace \
         is still the live one, and what the restore had written is removed; run it again to \
         replace the store"
    );
    Ok(())
}

/// Makes renames in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    files::sync_dir(dir).map_err(StoreError::internal)
}

/// At start, before the catalog is loaded: copies the memory projects' keys
/// that a restore left in [`RESTORED_MEMORY`] into the in-memory database,
/// then removes the file. A crash before the removal only means the next
/// start copies them again: no request has been served meanwhile.
pub(super) fn adopt_restored_memory(dir: &Path, memory: &Database) -> Result<(), StoreError> {
    let path = dir.join(RESTORED_MEMORY);
    if !path.exists() {
        return Ok(());
    }
    {
        let restored = Database::open(&path).map_err(storage_error)?;
        let source = restored.begin_read().map_err(storage_error)?;
        let target = memory.begin_write().map_err(storage_error)?;
        let projects = match source.open_table(RESTORED_PROJECTS) {
            Ok(table) => table
                .iter()
                .map_err(storage_error)?
                .map(|item| item.map(|(id, _)| id.value().to_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(storage_error)?,
            Err(TableError::TableDoesNotExist(_)) => Vec::new(),
            Err(error) => return Err(storage_error(error)),
        };
        for id in &projects {
            let tables = KeyTables::of(id);
            copy_table(&source, &target, tables.keys())?;
            copy_table(&source, &target, tables.values())?;
        }
        copy_table(&source, &target, codec::STATS)?;
        copy_table(&source, &target, codec::HISTORY)?;
        copy_expiry(&source, &target)?;
        target.commit().map_err(storage_error)?;
    }
    std::fs::remove_file(&path).map_err(StoreError::internal)?;
    sync_dir(dir)
}

/// The expiry index, whose values are `()` (so [`copy_table`] cannot).
fn copy_expiry(source: &ReadTransaction, target: &WriteTransaction) -> Result<(), StoreError> {
    let rows = match source.open_table(codec::EXPIRY) {
        Ok(rows) => rows,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(error) => return Err(storage_error(error)),
    };
    let mut copy = target.open_table(codec::EXPIRY).map_err(storage_error)?;
    for item in rows.iter().map_err(storage_error)? {
        let (key, _) = item.map_err(storage_error)?;
        copy.insert(key.value(), ()).map_err(storage_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::writer::testing::{put, store_with_project, write};
    use super::*;
    use crate::store::Store;

    /// A snapshot's reading of keys stops with `Unavailable` once the writer
    /// has taken the disk database out of service (to reopen it after a
    /// failed commit), so that a long backup lets go of it.
    #[tokio::test]
    async fn reading_keys_stops_once_the_disk_database_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        let count = 3 * KEYS_PER_LOOK;
        let ops = (0..count).map(|n| put(&format!("k{n:05}"))).collect();
        store.write_kv(write(&id, ops)).await.unwrap();
        let snapshot = store.snapshot().await.unwrap();
        let read = |snapshot: &dyn StoreSnapshot| {
            let mut seen = 0;
            let result = snapshot.keys(&id, &mut |_| {
                seen += 1;
                Ok(())
            });
            (result, seen)
        };
        let (result, seen) = read(snapshot.as_ref());
        assert!(result.is_ok() && seen == count, "{result:?}, {seen} keys");
        assert!(!snapshot.withdrawn());

        let database = store.shared.disk.swap(None);
        assert!(snapshot.withdrawn());
        let (result, seen) = read(snapshot.as_ref());
        assert!(
            matches!(result, Err(StoreError::Unavailable)) && seen < KEYS_PER_LOOK,
            "{result:?} after {seen} keys"
        );
        store.shared.disk.store(database);
    }

    /// A backup writes a value that is not UTF-8 as base64 and one that is
    /// as text, and reads both back as they were stored.
    #[tokio::test]
    async fn a_backup_writes_binary_values_as_base64_and_reads_them_back() {
        use crate::backup::{Reader, Record};
        use crate::store::KvOp;
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        let binary: &[u8] = &[0xff, 0x00, 0xfe, b'a', 0x80];
        let op = |key: &str, value: &'static [u8]| KvOp::Put {
            key: Key::parse(key).unwrap(),
            value: Bytes::from_static(value),
            content_type: "application/octet-stream".to_owned(),
            ttl: None,
            precondition: None,
        };
        let ops = vec![op("bin", binary), op("text", "héllo".as_bytes())];
        store.write_kv(write(&id, ops)).await.unwrap();
        let snapshot = store.snapshot().await.unwrap();
        let mut written = Vec::new();
        crate::backup::write(snapshot.as_ref(), &mut written).unwrap();
        let text = String::from_utf8(written.clone()).unwrap();
        assert!(
            text.contains(r#""key":"bin","value_base64":"/wD+YYA=","#),
            "{text}"
        );
        assert!(text.contains(r#""key":"text","value":"héllo","#), "{text}");

        let mut reader = Reader::default();
        let mut values = Vec::new();
        for line in written.split_inclusive(|&b| b == b'\n') {
            if let Some(Record::Key(_, entry)) = reader.line(line).unwrap() {
                values.push((entry.meta.key.as_str().to_owned(), entry.value));
            }
        }
        assert_eq!(
            values,
            [
                ("bin".to_owned(), Bytes::from_static(binary)),
                ("text".to_owned(), Bytes::from_static("héllo".as_bytes())),
            ]
        );
    }
}
