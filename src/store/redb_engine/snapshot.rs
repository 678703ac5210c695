//! Read snapshots shared between requests.
//!
//! Opening a redb read transaction and a table costs more than the lookup
//! itself (profiles of GET showed two thirds of the storage time there). So
//! each database keeps one read snapshot, with the tables opened in it, that
//! every reader uses until the writer's next commit to that database. The
//! writer invalidates the snapshot after each commit and before it publishes
//! the commit's revision or answers, so a reader never uses a snapshot older
//! than a write that has been acknowledged.
//!
//! A snapshot pins the pages it can see, and redb does not reuse the pages
//! freed by the commit it was taken at while it lives. So the writer drops it
//! when it starts a batch, too: while a commit runs, only the readers of that
//! moment hold a snapshot, as with short-lived read transactions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableError,
};

use super::codec::{
    KeyRecord, KeyTables, SWEEPS, SweepRecord, decode, decode_changes, storage_error,
};
use crate::store::{ChangeSet, StoreError};

const SWEEPS_NAME: &str = "sweeps";

/// A table of keys or values as a snapshot sees it.
pub type KvTable = ReadOnlyTable<&'static str, &'static [u8]>;

/// One database's shared snapshot.
#[derive(Default)]
pub struct ReadCache {
    /// Bumped after each commit of the database.
    generation: AtomicU64,
    snapshot: ArcSwapOption<Snapshot>,
}

pub struct Snapshot {
    /// The cache generation this snapshot was taken at (or after).
    generation: u64,
    txn: ReadTransaction,
    /// Tables opened so far, by project; `None` for one that does not exist.
    keys: ArcSwap<TableMap>,
    values: ArcSwap<TableMap>,
    /// Deletes by prefix whose keys are still being removed, by project:
    /// the keys they cover are gone for readers.
    sweeps: HashMap<String, SweepRecord>,
}

type TableMap = HashMap<String, Option<Arc<KvTable>>>;

impl ReadCache {
    /// Called by the writer after a commit, before the commit is published.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.snapshot.store(None);
    }

    /// A snapshot at least as new as every commit published so far.
    pub fn snapshot(&self, db: &Database) -> Result<Arc<Snapshot>, StoreError> {
        // The generation is read before the transaction begins: the
        // snapshot then holds every commit that led to it.
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(snapshot) = self.snapshot.load_full()
            && snapshot.generation == generation
        {
            return Ok(snapshot);
        }
        let txn = db.begin_read().map_err(storage_error)?;
        let sweeps = read_sweeps(&txn)?;
        let snapshot = Arc::new(Snapshot {
            generation,
            txn,
            keys: ArcSwap::default(),
            values: ArcSwap::default(),
            sweeps,
        });
        self.snapshot.store(Some(snapshot.clone()));
        Ok(snapshot)
    }
}

impl Snapshot {
    /// The project's keys table; `None` when it was never created.
    pub fn keys(&self, tables: &KeyTables) -> Result<Option<Arc<KvTable>>, StoreError> {
        open_shared(&self.txn, &self.keys, tables.project, tables.keys())
    }

    /// Whether a delete by prefix still being swept took this key.
    pub fn swept(&self, project: &str, key: &str, record: &KeyRecord) -> bool {
        self.sweeps
            .get(project)
            .is_some_and(|sweep| sweep.covers(key, record))
    }

    /// The prefix of the project's delete still being swept, if any.
    pub fn sweep(&self, project: &str) -> Option<&SweepRecord> {
        self.sweeps.get(project)
    }

    /// The project's values table; `None` when it was never created.
    pub fn values(&self, tables: &KeyTables) -> Result<Option<Arc<KvTable>>, StoreError> {
        open_shared(&self.txn, &self.values, tables.project, tables.values())
    }
}

impl Snapshot {
    /// The project's change sets after `after`, oldest first, whole sets up
    /// to about `max_changes` changes. The change log is read on this slow
    /// path only (a watch far behind the feed), so its table is not kept.
    pub fn changes(
        &self,
        tables: &KeyTables,
        after: u64,
        max_changes: usize,
    ) -> Result<Vec<ChangeSet>, StoreError> {
        let log = match self.txn.open_table(tables.changes()) {
            Ok(log) => log,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(storage_error(error)),
        };
        let mut sets = Vec::new();
        let mut taken = 0;
        for item in log
            .range(after.saturating_add(1)..)
            .map_err(storage_error)?
        {
            if taken >= max_changes && !sets.is_empty() {
                break;
            }
            let (revision, entry) = item.map_err(storage_error)?;
            let set = decode_changes(tables.project, revision.value(), entry.value())?;
            taken += set.changes.len();
            sets.push(set);
        }
        Ok(sets)
    }
}

/// The deletes by prefix a database is still sweeping, by project.
pub fn read_sweeps(txn: &ReadTransaction) -> Result<HashMap<String, SweepRecord>, StoreError> {
    let table = match txn.open_table(SWEEPS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
        Err(error) => return Err(storage_error(error)),
    };
    let mut sweeps = HashMap::new();
    for item in table.iter().map_err(storage_error)? {
        let (project, record) = item.map_err(storage_error)?;
        let sweep = decode(SWEEPS_NAME, project.value(), record.value())?;
        sweeps.insert(project.value().to_owned(), sweep);
    }
    Ok(sweeps)
}

/// A table of the snapshot, opened once and then shared.
fn open_shared(
    txn: &ReadTransaction,
    opened: &ArcSwap<TableMap>,
    project: &str,
    definition: TableDefinition<&'static str, &'static [u8]>,
) -> Result<Option<Arc<KvTable>>, StoreError> {
    if let Some(table) = opened.load().get(project) {
        return Ok(table.clone());
    }
    let table = match txn.open_table(definition) {
        Ok(table) => Some(Arc::new(table)),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(storage_error(error)),
    };
    opened.rcu(|tables| {
        let mut tables = HashMap::clone(tables);
        tables.insert(project.to_owned(), table.clone());
        tables
    });
    Ok(table)
}
