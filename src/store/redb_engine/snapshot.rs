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
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, TableDefinition, TableError,
    TableHandle,
};

use super::codec::storage_error;
use crate::store::StoreError;

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
    /// Tables opened so far; `None` for one that does not exist.
    tables: ArcSwap<HashMap<String, Option<Arc<KvTable>>>>,
}

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
        let snapshot = Arc::new(Snapshot {
            generation,
            txn: db.begin_read().map_err(storage_error)?,
            tables: ArcSwap::default(),
        });
        self.snapshot.store(Some(snapshot.clone()));
        Ok(snapshot)
    }
}

impl Snapshot {
    /// A table of the snapshot, opened once and shared; `None` when it was
    /// never created.
    pub fn table(
        &self,
        definition: TableDefinition<&'static str, &'static [u8]>,
    ) -> Result<Option<Arc<KvTable>>, StoreError> {
        let name = definition.name();
        if let Some(table) = self.tables.load().get(name) {
            return Ok(table.clone());
        }
        let table = match self.txn.open_table(definition) {
            Ok(table) => Some(Arc::new(table)),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(storage_error(error)),
        };
        self.tables.rcu(|tables| {
            let mut tables = HashMap::clone(tables);
            tables.insert(name.to_owned(), table.clone());
            tables
        });
        Ok(table)
    }
}
