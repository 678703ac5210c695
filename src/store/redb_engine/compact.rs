//! `kvs compact`: makes a stopped store's disk database take no more room
//! than its contents need, as etcd's offline `defrag` does.
//!
//! Random writes leave a B-tree's leaves about two thirds full, and the
//! pages freed by later writes stay in the file. So every table is copied,
//! in key order (its leaves come out full), into a new file beside it,
//! `kvs.redb.compacting`; the copy is synced and checked whole with the
//! walk of `kvs verify`, and only then renamed over `kvs.redb`: the one
//! moment the compaction happens. Until then the store is untouched, and
//! a compaction cut short leaves only the new file, which the next run
//! removes. The copy holds everything: the same keys, versions, revisions,
//! change log and figures, and the write-ahead log's records apply on top
//! of it as before (they are found by revision).
//!
//! (redb's own `Database::compact` was tried first, after rewriting the
//! tables in place: it stops at the first page it cannot move lower, and
//! the change log's multi-page entries often are such pages, so the file
//! shrank by anything from nothing to 35%, and once grew.)

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle,
};

use super::Shared;
use super::backup::{remove_if_present, sync_dir};
use super::codec::{self, storage_error};
use super::stopped::{StoppedError, open_stopped};
use super::verify::{walk_catalog, walk_keys};
use crate::domain::StorageMode;
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
    #[error("{0}")]
    Failed(#[from] StoreError),
}

/// Compacts the stopped store in `dir` (its `kvs.redb`). It needs room
/// for the compacted copy beside the file while it runs.
pub fn compact_dir(dir: &Path) -> Result<Compacted, CompactError> {
    let live = dir.join("kvs.redb");
    let copy_path = dir.join(COPY);
    let database = open_stopped(dir, CACHE_BYTES)?;
    let before = file_size(&live)?;
    remove_if_present(&copy_path)?;
    let source = database.begin_read().map_err(storage_error)?;
    let copied = copy_all(&source, &copy_path);
    let (tables, rows) = match copied {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&copy_path);
            return Err(error);
        }
    };
    drop(source);
    drop(database);
    std::fs::rename(&copy_path, &live).map_err(StoreError::internal)?;
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
/// the same. The copy is renamed over `kvs.redb` and opened in its place;
/// readers still on the old one finish on it (its file is gone from the
/// directory but open until they let go). Should the copy not open, the
/// database is out of service and the writer opens it again as after a
/// failed commit.
pub(super) fn compact_live(shared: &Shared) -> Result<Compacted, StoreError> {
    let database = shared.disk.load_full().ok_or(StoreError::Unavailable)?;
    let live = shared.path.as_path();
    let dir = live
        .parent()
        .ok_or_else(|| StoreError::internal("the database has no directory"))?;
    let copy_path = dir.join(COPY);
    let before = file_size(live)?;
    remove_if_present(&copy_path)?;
    let copied = database
        .begin_read()
        .map_err(storage_error)
        .and_then(|source| copy_all(&source, &copy_path).map_err(store_error));
    let (tables, rows) = match copied {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&copy_path);
            return Err(error);
        }
    };
    if let Err(error) = std::fs::rename(&copy_path, live) {
        let _ = std::fs::remove_file(&copy_path);
        return Err(StoreError::internal(error));
    }
    sync_dir(dir)?;
    match Database::create(live) {
        Ok(copy) => {
            shared.disk.store(Some(Arc::new(copy)));
            shared.disk_reads.invalidate();
        }
        Err(error) => {
            shared.disk.store(None);
            shared.disk_reads.invalidate();
            return Err(storage_error(error));
        }
    }
    Ok(Compacted {
        before,
        after: file_size(live)?,
        tables,
        rows,
    })
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
    let mut copy = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(storage_error)?;
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
        rows += copy_table_named(source, &copy, name)?;
    }
    // The server's durable commits record redb's allocator state (quick
    // repair), so that a start after a crash need not walk every page: so
    // does the copy's last.
    let mut txn = copy.begin_write().map_err(storage_error)?;
    txn.set_quick_repair(true);
    txn.commit().map_err(storage_error)?;
    // A fresh file has nothing to move: this gives back what it grew by
    // beyond its last page.
    copy.compact().map_err(storage_error)?;
    check(source, &copy)?;
    Ok((names.len(), rows))
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

/// The copy holds as many rows in each table as the store, and `kvs
/// verify`'s walk finds nothing wrong in it.
fn check(source: &ReadTransaction, copy: &Database) -> Result<(), CompactError> {
    let txn = copy.begin_read().map_err(storage_error)?;
    for table in source.list_tables().map_err(storage_error)? {
        let name = table.name();
        let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
        let count = |txn: &ReadTransaction| -> Result<u64, StoreError> {
            txn.open_untyped_table(definition)
                .and_then(|table| Ok(table.len()?))
                .map_err(storage_error)
        };
        let (was, is) = (count(source)?, count(&txn)?);
        if was != is {
            return Err(CompactError::Mismatch(format!(
                "table {name} holds {was} rows, its copy {is}"
            )));
        }
    }
    let mut report = Report::default();
    let projects = walk_catalog(&txn, &mut report);
    walk_keys(&txn, &projects, StorageMode::Disk, &mut report);
    if let Some(damage) = report.damage.first() {
        return Err(CompactError::Mismatch(format!(
            "{} items damaged in the copy, the first: {}: {}",
            report.damage.len(),
            damage.place,
            damage.problem
        )));
    }
    Ok(())
}

fn file_size(path: &Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|meta| meta.len())
        .map_err(StoreError::internal)
}
