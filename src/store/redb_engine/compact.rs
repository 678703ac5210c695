//! `kvs compact`: makes a store's databases take no more room than their
//! contents need, as etcd's `defrag` does.
//!
//! Random writes leave a B-tree's leaves about two thirds full, and the
//! pages freed by later writes stay in the file. So every table of the
//! disk database is copied, in key order (its leaves come out full), into
//! a new file beside it, `kvs.redb.compacting`; the copy is synced and
//! checked whole with the walk of `kvs verify`, and only then renamed over
//! `kvs.redb`: the one moment the compaction happens. Until then the store
//! is untouched, and a compaction cut short leaves only the new file, which
//! the next run removes. The copy holds everything: the same keys,
//! versions, revisions, change log and figures, and the write-ahead log's
//! records apply on top of it as before (they are found by revision).
//! Offline ([`compact_dir`]) that is all; on a running server
//! ([`compact_live`]) the memory database is then copied into a new one.
//!
//! (redb's own `Database::compact` was tried first, after rewriting the
//! tables in place: it stops at the first page it cannot move lower, and
//! the change log's multi-page entries often are such pages, so the file
//! shrank by anything from nothing to 35%, and once grew.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{
    Database, MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableError, TableHandle,
};

use super::Shared;
use super::backup::{remove_if_present, sync_dir};
use super::codec::{self, KeyTables, decode_entry, expiry_key, storage_error};
use super::stopped::{StoppedError, close_stopped, open_stopped};
use super::verify::{walk_catalog, walk_keys};
use crate::domain::StorageMode;
use crate::files;
use crate::store::{Compacted, Report, StoreError};

/// Rows copied per commit. Each commit is synced: redb holds the pages of
/// commits without a sync in memory until the next synced one, so this
/// bounds the memory a copy takes.
const ROWS_PER_COMMIT: usize = 20_000;

/// redb's page cache for each of the two files: a copy in key order reads
/// and writes each page about once, so a large cache would only hold
/// memory (redb's default is 1 GiB each).
const CACHE_BYTES: usize = 64 << 20;

/// The copy, until it replaces `kvs.redb`.
const COPY: &str = "kvs.redb.compacting";

/// Why a compaction did not happen; the store is as it was.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Stopped(#[from] StoppedError),
    #[error(
        "table {0} is not one this kvs knows how to copy (a store from a newer or older \
         release: start `kvs serve` on it once, then compact it)"
    )]
    UnknownTable(String),
    #[error("the copy does not match the store, which is left as it was: {0}")]
    Mismatch(String),
    #[error(
        "a page of the store could not be read (damaged?); the store is left as it was: \
         run `kvs verify`"
    )]
    Damaged,
    #[error("{0}")]
    Failed(#[from] StoreError),
}

/// Compacts the stopped store in `dir` (its `kvs.redb`). It needs room
/// for the compacted copy beside the file while it runs.
pub fn compact_dir(dir: &Path) -> Result<Compacted, CompactError> {
    let live = dir.join("kvs.redb");
    // Held open (and so locked) until the copy is in place: no server
    // starts on the old file meanwhile.
    let database = open_stopped(
        dir,
        CACHE_BYTES,
        "compact it while it runs with `kvs compact --token …` (an admin token, no --data-dir)",
    )?;
    let before = file_size(&live)?;
    let source = database.begin_read().map_err(storage_error)?;
    // A damaged log is for the operator to decide on first (a backup, or
    // moving it aside): the copy would keep the revision it must match.
    super::wal::inspect(dir, super::snapshot::server_revision(&source)?)?;
    let copied = copy_over(&source, &live);
    drop(source);
    if matches!(copied, Err(CompactError::Damaged)) {
        // redb panicked on a page of it: it may hold poisoned locks, and
        // its close would write into the damaged file.
        std::mem::forget(database);
    } else if let Err(panicked) = close_stopped(database) {
        // Its close writes the allocator state back. After the rename the
        // file it writes is no longer the store's; before, the store is
        // damaged and no copy was made.
        if copied.is_ok() {
            tracing::warn!(%panicked, "the old kvs.redb could not be closed cleanly");
        } else {
            return Err(CompactError::Damaged);
        }
    }
    let (tables, rows) = copied?;
    sync_dir(dir)?;
    Ok(Compacted {
        before,
        after: file_size(&live)?,
        tables,
        rows,
    })
}

/// `POST /v1/compact`: the same copy of a running store's disk database,
/// made by the writer between two batches after a checkpoint (so the
/// database holds every write, and the write-ahead log none): writes wait
/// meanwhile, and reads go on from the database being copied, which holds
/// the same. The copy, in place of `kvs.redb`, is opened instead of the
/// old database; readers still on the old one finish on it (its file is
/// gone from the directory but open until they let go). From the rename
/// on, the server uses no database but the one at the path: should the
/// directory not sync or the copy not open, the database is out of service
/// and the writer opens it again as after a failed commit. Then the memory
/// database is copied the same way, into a new memory database
/// ([`compact_memory`]).
pub(super) fn compact_live(shared: &Shared) -> Result<Compacted, StoreError> {
    let database = shared.disk.load_full().ok_or(StoreError::Unavailable)?;
    let live = shared.path.as_path();
    let before = file_size(live)?;
    let source = database.begin_read().map_err(storage_error)?;
    let (tables, rows) = copy_over(&source, live).map_err(store_error)?;
    drop((source, database));
    // Until the rename is durable, a crash may find the old file, which
    // holds what the copy holds but none of the writes made to the copy
    // after it: the write-ahead log must keep those, and it starts again
    // at the next waited checkpoint. So the copy is opened, like any
    // database, only once its directory is synced (`deferred_sync::create`);
    // if that fails, the database is out of service, and the writer's
    // reopen tries again.
    match super::deferred_sync::create(live, shared.cache_bytes) {
        Ok(copy) => {
            shared.disk.store(Some(Arc::new(copy)));
            shared.disk_reads.invalidate();
        }
        Err(error) => {
            shared.writable.store(false, Ordering::Release);
            shared.disk.store(None);
            shared.disk_reads.invalidate();
            return Err(StoreError::internal(format!(
                "the compacted copy is in place but not in use (its directory could not be \
                 synced, or it did not open: {error}); the server opens it again as after a \
                 failed commit"
            )));
        }
    }
    let memory_rows = compact_memory(shared).map_err(|error| {
        StoreError::internal(format!(
            "the disk database was compacted, the memory database was not (it is as it \
             was): {error}"
        ))
    })?;
    Ok(Compacted {
        before,
        after: file_size(live)?,
        tables,
        rows: rows + memory_rows,
    })
}

/// A leftover partial copy, removed by the server at start.
pub(super) fn remove_partial_copy(dir: &Path) -> Result<(), StoreError> {
    remove_if_present(&dir.join(COPY))
}

/// Copies the database `source` reads into `kvs.redb.compacting` beside
/// `live`, checks it and renames it over `live` (the caller syncs the
/// directory); the partial copy is removed when anything fails, a panic of
/// redb's on a damaged page included. Answers the tables and rows copied.
fn copy_over(source: &ReadTransaction, live: &Path) -> Result<(usize, u64), CompactError> {
    let copy = files::dir_of(live).join(COPY);
    remove_if_present(&copy)?;
    let copied = super::contain::contain(|| copy_all(source, &copy))
        .unwrap_or(Err(CompactError::Damaged))
        .and_then(|done| {
            std::fs::rename(&copy, live).map_err(StoreError::internal)?;
            Ok(done)
        });
    if copied.is_err() {
        let _ = std::fs::remove_file(&copy);
    }
    copied
}

/// A failed copy as the server reports it: a storage failure as itself
/// (`507` for lack of room), anything else as an internal error.
fn store_error(error: CompactError) -> StoreError {
    match error {
        CompactError::Failed(error) => error,
        other => StoreError::internal(other.to_string()),
    }
}

/// Copies every table of `source` into a new database at `path`, syncs it
/// and checks it; answers the tables and rows copied.
fn copy_all(source: &ReadTransaction, path: &Path) -> Result<(usize, u64), CompactError> {
    files::create_private_file(path).map_err(storage_error)?;
    let mut copy = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(storage_error)?;
    let copied = copy_into(source, &copy)?;
    // A fresh file has nothing to move: this gives back what it grew by
    // beyond its last page.
    copy.compact().map_err(storage_error)?;
    check(source, &copy, None, StorageMode::Disk, &copied)?;
    Ok((copied.tables, copied.rows))
}

/// What [`copy_into`] made.
struct Copied {
    tables: usize,
    /// The rows copied.
    rows: u64,
    /// The expiry index entries added for keys whose expiry the source's
    /// index lacked ([`index_expiries`]).
    indexed: u64,
}

/// Copies every table of `source` into the empty database `copy`, and
/// adds the expiry index entries it lacks.
fn copy_into(source: &ReadTransaction, copy: &Database) -> Result<Copied, CompactError> {
    let names: Vec<String> = source
        .list_tables()
        .map_err(storage_error)?
        .map(|table| table.name().to_owned())
        .collect();
    if let Some(table) = source.list_multimap_tables().map_err(storage_error)?.next() {
        return Err(CompactError::UnknownTable(table.name().to_owned()));
    }
    let mut rows = 0;
    for name in &names {
        rows += copy_table_named(source, copy, name)?;
    }
    let indexed = index_expiries(source, copy, &names)?;
    if indexed > 0 {
        tracing::warn!(
            entries = indexed,
            "the expiry index lacked the entries of keys that expire; the compacted copy has them"
        );
    }
    Ok(Copied {
        tables: names.len(),
        rows,
        indexed,
    })
}

/// Adds to the copy's expiry index an entry for every key of `source`
/// whose record has an expiry that the index lacks: the sweep finds keys
/// only there, so it never removed them (a storage move of an older
/// release dropped a project's entries; `kvs verify` reports such keys).
/// A record that cannot be read is left to the check of the copy. Answers
/// how many entries it added.
fn index_expiries(
    source: &ReadTransaction,
    copy: &Database,
    names: &[String],
) -> Result<u64, StoreError> {
    let index = match source.open_table(codec::EXPIRY) {
        Ok(index) => Some(index),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(storage_error(error)),
    };
    let mut added = 0u64;
    let mut missing = Vec::new();
    for project in names.iter().filter_map(|name| name.strip_prefix("keys/")) {
        let keys = source
            .open_table(KeyTables::of(project).keys())
            .map_err(storage_error)?;
        for row in keys.iter().map_err(storage_error)? {
            let (key, entry) = row.map_err(storage_error)?;
            let key = key.value();
            let Some(at) = decode_entry(project, key, entry.value())
                .ok()
                .and_then(|(record, _)| record.expires_at)
            else {
                continue;
            };
            let entry = expiry_key(at, project, key);
            let indexed = match &index {
                Some(index) => index
                    .get(entry.as_slice())
                    .map_err(storage_error)?
                    .is_some(),
                None => false,
            };
            if !indexed {
                missing.push(entry);
            }
            if missing.len() == ROWS_PER_COMMIT {
                added += add_to_index(copy, &mut missing)?;
            }
        }
    }
    added += add_to_index(copy, &mut missing)?;
    Ok(added)
}

/// Inserts `entries` into the expiry index of `copy` in one commit, and
/// empties the list; answers how many the index did not hold yet (a lookup
/// in a source whose index pages are damaged misses entries that its walk,
/// and so the copy, has).
fn add_to_index(copy: &Database, entries: &mut Vec<Vec<u8>>) -> Result<u64, StoreError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let mut added = 0;
    let txn = copy.begin_write().map_err(storage_error)?;
    {
        let mut index = txn.open_table(codec::EXPIRY).map_err(storage_error)?;
        for entry in entries.drain(..) {
            if index
                .insert(entry.as_slice(), ())
                .map_err(storage_error)?
                .is_none()
            {
                added += 1;
            }
        }
    }
    txn.commit().map_err(storage_error)?;
    Ok(added)
}

/// The memory database copied in key order into a new one (memory projects'
/// keys, large values and change logs, their figures and expiries), checked
/// and put in place of the old one, whose pages are freed once the readers
/// still on it let go. Answers the rows copied.
fn compact_memory(shared: &Shared) -> Result<u64, StoreError> {
    let memory = shared.memory.load_full();
    let source = memory.begin_read().map_err(storage_error)?;
    let copy = super::new_memory_database()?;
    let copied = copy_into(&source, &copy).map_err(store_error)?;
    // The memory database holds no catalog: the disk database's is used.
    let disk = shared.disk.load_full().ok_or(StoreError::Unavailable)?;
    let catalog = disk.begin_read().map_err(storage_error)?;
    check(&source, &copy, Some(&catalog), StorageMode::Memory, &copied).map_err(store_error)?;
    drop((source, catalog));
    shared.memory.store(Arc::new(copy));
    shared.memory_reads.invalidate();
    Ok(copied.rows)
}

/// Copies one table, by the types its name says it holds.
fn copy_table_named(
    source: &ReadTransaction,
    copy: &Database,
    name: &str,
) -> Result<u64, CompactError> {
    let records = [
        codec::PROJECTS.name(),
        codec::TOKENS.name(),
        codec::STATS.name(),
        codec::HISTORY.name(),
        codec::SWEEPS.name(),
    ];
    let copied =
        if records.contains(&name) || name.starts_with("keys/") || name.starts_with("values/") {
            copy_table::<&str, &[u8]>(source, copy, name)
        } else if name.starts_with("changes/") {
            copy_table::<u64, &[u8]>(source, copy, name)
        } else if name == codec::SERVER.name() || name == codec::META.name() {
            copy_table::<&str, u64>(source, copy, name)
        } else if name == codec::IMPORTED.name() {
            copy_table::<&str, &str>(source, copy, name)
        } else if name == codec::EXPIRY.name() {
            copy_table::<&[u8], ()>(source, copy, name)
        } else {
            return Err(CompactError::UnknownTable(name.to_owned()));
        };
    Ok(copied?)
}

/// Copies table `name` in key order, committing every [`ROWS_PER_COMMIT`]
/// rows; answers the rows copied.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    source: &ReadTransaction,
    copy: &Database,
    name: &str,
) -> Result<u64, StoreError> {
    let table: TableDefinition<K, V> = TableDefinition::new(name);
    let rows = source.open_table(table).map_err(storage_error)?;
    let mut iter = rows.iter().map_err(storage_error)?;
    let mut copied = 0u64;
    let mut finished = false;
    while !finished {
        let txn = copy.begin_write().map_err(storage_error)?;
        {
            // Opened even when empty: the copy has every table.
            let mut target = txn.open_table(table).map_err(storage_error)?;
            for _ in 0..ROWS_PER_COMMIT {
                let Some(item) = iter.next() else {
                    finished = true;
                    break;
                };
                let (key, value) = item.map_err(storage_error)?;
                target
                    .insert(key.value(), value.value())
                    .map_err(storage_error)?;
                copied += 1;
            }
        }
        txn.commit().map_err(storage_error)?;
    }
    Ok(copied)
}

/// The copy holds as many rows in each table as the store (and the
/// expiry index the entries `copied` added), and `kvs verify`'s walk finds
/// nothing wrong in it, with the projects of `catalog` (the copy's own when
/// `None`).
fn check(
    source: &ReadTransaction,
    copy: &Database,
    catalog: Option<&ReadTransaction>,
    storage: StorageMode,
    copied: &Copied,
) -> Result<(), CompactError> {
    check_rows(source, copy, copied.indexed)?;
    let txn = copy.begin_read().map_err(storage_error)?;
    let mut report = Report::default();
    let projects = walk_catalog(catalog.unwrap_or(&txn), &mut report);
    walk_keys(&txn, &projects, storage, &mut report);
    match report.damage.first() {
        Some(first) => Err(CompactError::Mismatch(format!(
            "{} items damaged in the copy, the first: {}: {}",
            report.damage.len(),
            first.place,
            first.problem
        ))),
        None => Ok(()),
    }
}

/// The copy holds as many rows in each table as the store, and `indexed`
/// more in the expiry index.
fn check_rows(source: &ReadTransaction, copy: &Database, indexed: u64) -> Result<(), CompactError> {
    let txn = copy.begin_read().map_err(storage_error)?;
    for table in source.list_tables().map_err(storage_error)? {
        let name = table.name();
        let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
        let count = |txn: &ReadTransaction| -> Result<u64, StoreError> {
            txn.open_untyped_table(definition)
                .and_then(|table| Ok(table.len()?))
                .map_err(storage_error)
        };
        let mut was = count(source)?;
        if name == codec::EXPIRY.name() {
            was += indexed;
        }
        let is = count(&txn)?;
        if was != is {
            return Err(CompactError::Mismatch(format!(
                "table {name} holds {was} rows, its copy {is}"
            )));
        }
    }
    Ok(())
}

fn file_size(path: &Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|meta| meta.len())
        .map_err(StoreError::internal)
}

#[cfg(test)]
mod tests {
    use super::super::writer::testing::{put, store_with_project, write};
    use crate::domain::Key;
    use crate::files::failing_dir_syncs;
    use crate::store::{KvOp, Store, StoreError};

    /// A compaction whose directory sync fails (the rename of the copy not
    /// durable) writes nothing to the copy until a sync of the directory
    /// works: until then writes and reads answer `Unavailable`, and a
    /// restart does not start; then the store serves again (reads alone
    /// bring it back), with every write.
    #[tokio::test]
    async fn after_a_compaction_whose_directory_sync_failed_nothing_is_written_until_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        store.write_kv(write(&id, vec![put("a")])).await.unwrap();
        failing_dir_syncs::set(dir.path(), true);

        let compacted = store.compact().await;
        assert!(
            matches!(&compacted, Err(StoreError::Internal(message)) if message.contains("synced")),
            "{compacted:?}"
        );
        for _ in 0..3 {
            let refused = store.write_kv(write(&id, vec![put("b")])).await;
            assert!(
                matches!(refused, Err(StoreError::Unavailable)),
                "{refused:?}"
            );
        }
        let get = |key: &str| KvOp::Get {
            key: Key::parse(key).unwrap(),
        };
        let read = store.write_kv(write(&id, vec![get("a")])).await;
        assert!(matches!(read, Err(StoreError::Unavailable)), "{read:?}");

        // Then, with reads alone, the expiry timer's turn opens it again
        // (with the database out of service, the timer's sweep counts as
        // due, and the batch it makes reopens the database first).
        failing_dir_syncs::set(dir.path(), false);
        let key = Key::parse("a").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match store.get(&id, &key, true).await {
                Ok(read) if read.value.is_some() => break,
                Err(StoreError::Unavailable) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => panic!("a read after the directory syncs again: {other:?}"),
            }
        }
        store.write_kv(write(&id, vec![put("b")])).await.unwrap();
        store.close().await;
        drop(store);

        // A start syncs the directory before it writes to the database (a
        // server stopped after the failure, or an offline compaction's).
        failing_dir_syncs::set(dir.path(), true);
        let opened = crate::store::redb_engine::RedbStore::open(dir.path());
        assert!(opened.is_err(), "a start while the directory does not sync");
        failing_dir_syncs::set(dir.path(), false);

        let store = crate::store::redb_engine::RedbStore::open(dir.path()).unwrap();
        let read = store
            .write_kv(write(&id, vec![get("a"), get("b")]))
            .await
            .unwrap();
        assert_eq!(read.results.len(), 2, "{:?}", read.results);
        for result in &read.results {
            assert!(
                matches!(result, crate::store::OpResult::Get(Some(_))),
                "{result:?}"
            );
        }
    }
}
