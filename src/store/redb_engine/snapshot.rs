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
//! A snapshot also remembers what reading a key found ([`Memo`]): the
//! snapshot never changes, so the same read again is a hash lookup instead
//! of a B-tree walk, a decode, a CRC check and a copy. Under a steady read
//! load the snapshot lives on, and so does what it remembers; every commit
//! to the database starts both afresh.
//!
//! A snapshot pins the pages it can see, and redb does not reuse the pages
//! freed by the commit it was taken at while it lives. So the writer drops it
//! when it starts a batch in a new transaction, too: while a commit runs,
//! only the readers of that moment hold a snapshot, as with short-lived read
//! transactions. (A batch that goes on in the disk database's open
//! transaction keeps it: see [`super::held`].)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableError,
};

use super::codec::{
    KeyRecord, KeyTables, SWEEPS, SweepRecord, decode, decode_changes, storage_error,
};
use crate::domain::Timestamp;
use crate::store::{ChangeSet, Entry, StoreError};

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
    memo: Mutex<Memo>,
    /// The database read: a transaction fails once its database is closed,
    /// and a compaction puts a new one in its place while readers may
    /// still hold this snapshot. (The last field, so dropped after the
    /// transaction and its tables.)
    database: Arc<Database>,
}

type TableMap = HashMap<String, Option<Arc<KvTable>>>;

/// Reads remembered by a snapshot: by project, by key, what the read found.
#[derive(Default)]
struct Memo {
    projects: HashMap<String, HashMap<String, Option<Entry>>>,
    /// What the entries take, about: their bytes and [`MEMO_ENTRY_COST`] each.
    bytes: usize,
}

/// The most a snapshot's memo holds. It is freed with the snapshot (by the
/// writer, at its next batch, when no reader holds it), so it stays small
/// enough to free in about a millisecond.
const MEMO_BYTES: usize = 8 << 20;
/// Larger values are read from the tables each time: the memo is for the
/// small values read most.
const MEMO_MAX_VALUE: usize = 4 << 10;
/// What an entry costs beyond its bytes: the maps' slots and the strings'
/// and entry's own sizes, about.
const MEMO_ENTRY_COST: usize = 160;

impl ReadCache {
    /// Called by the writer after a commit, before the commit is published.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.snapshot.store(None);
    }

    /// A snapshot at least as new as every commit published so far.
    pub fn snapshot(&self, db: &Arc<Database>) -> Result<Arc<Snapshot>, StoreError> {
        // The generation is read before the transaction begins: the
        // snapshot then holds every commit that led to it.
        let generation = self.generation.load(Ordering::SeqCst);
        // Reused only for the database it was taken of: a reader that took
        // the database before a compaction replaced it may leave a snapshot
        // of the old one under a later generation, and the new database may
        // hold writes since.
        if let Some(snapshot) = self.snapshot.load_full()
            && snapshot.generation == generation
            && Arc::ptr_eq(&snapshot.database, db)
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
            memo: Mutex::default(),
            database: db.clone(),
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

    /// What a read of the key found at this snapshot, if one was
    /// remembered: `Some(None)` for a key it does not hold (or no longer:
    /// expired, or swept), `Some(Some(entry))` with the value when
    /// `with_value`, without it otherwise.
    pub fn remembered(
        &self,
        project: &str,
        key: &str,
        with_value: bool,
        now: Timestamp,
    ) -> Option<Option<Entry>> {
        let memo = self.memo.lock().ok()?;
        let found = memo.projects.get(project)?.get(key)?;
        Some(found.as_ref().and_then(|entry| {
            if entry.meta.expires_at.is_some_and(|at| at <= now) {
                return None;
            }
            Some(Entry {
                meta: entry.meta.clone(),
                value: if with_value {
                    entry.value.clone()
                } else {
                    bytes::Bytes::new()
                },
            })
        }))
    }

    /// Remembers what a read of the key found, while the memo has room.
    /// Only a read with its value can stand for both kinds of read later.
    pub fn remember(&self, project: &str, key: &str, found: Option<&Entry>, with_value: bool) {
        if found.is_some() && !with_value {
            return;
        }
        let cost = MEMO_ENTRY_COST
            + key.len()
            + found.map_or(0, |entry| {
                entry.value.len() + entry.meta.content_type.len() + entry.meta.key.as_str().len()
            });
        if found.is_some_and(|entry| entry.value.len() > MEMO_MAX_VALUE) {
            return;
        }
        let Ok(mut memo) = self.memo.lock() else {
            return;
        };
        if memo.bytes + cost > MEMO_BYTES {
            return;
        }
        let keys = match memo.projects.get_mut(project) {
            Some(keys) => keys,
            None => memo.projects.entry(project.to_owned()).or_default(),
        };
        // Two readers of one key may both get here: the first one counts.
        if keys.contains_key(key) {
            return;
        }
        keys.insert(key.to_owned(), found.cloned());
        memo.bytes += cost;
    }

    /// The project's values table; `None` when it was never created.
    pub fn values(&self, tables: &KeyTables) -> Result<Option<Arc<KvTable>>, StoreError> {
        open_shared(&self.txn, &self.values, tables.project, tables.values())
    }
}

impl Snapshot {
    /// The server revision of the commit this snapshot is of (0 in a
    /// database without the server's counters, as the memory one).
    pub fn revision(&self) -> Result<u64, StoreError> {
        server_revision(&self.txn)
    }

    /// The project's change sets after `after`, oldest first, whole log
    /// entries up to about `max_changes` changes. The change log is read on
    /// this slow path only (a watch far behind the feed), so its table is
    /// not kept.
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
            // An entry holds a batch's sets: the first may be at or below
            // `after`. Whole entries are taken, so a page may pass the limit
            // by one entry's worth.
            for set in decode_changes(tables.project, revision.value(), entry.value())? {
                if set.revision > after {
                    taken += set.changes.len();
                    sets.push(set);
                }
            }
        }
        Ok(sets)
    }
}

/// The server revision that a read transaction's commit recorded (0 when
/// the database has none).
pub fn server_revision(txn: &ReadTransaction) -> Result<u64, StoreError> {
    match txn.open_table(super::codec::SERVER) {
        Ok(server) => Ok(server
            .get(super::codec::REVISION)
            .map_err(storage_error)?
            .map_or(0, |v| v.value())),
        Err(TableError::TableDoesNotExist(_)) => Ok(0),
        Err(error) => Err(storage_error(error)),
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use redb::backends::InMemoryBackend;

    use super::*;
    use crate::domain::Key;
    use crate::store::KeyMeta;

    fn entry(key: &str, value: &'static [u8], expires_at: Option<Timestamp>) -> Entry {
        let at = Timestamp::from_millis(1_000);
        Entry {
            meta: KeyMeta {
                key: Key::from_stored(key),
                version: 7,
                created_at: at,
                updated_at: at,
                expires_at,
                size: value.len() as u64,
                content_type: "text/plain".to_owned(),
            },
            value: Bytes::from_static(value),
        }
    }

    fn snapshot() -> Arc<Snapshot> {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        ReadCache::default().snapshot(&Arc::new(db)).unwrap()
    }

    /// What a snapshot remembers answers a read again as the tables would:
    /// an entry that has expired since is gone, a read without the value
    /// is answered without it, and a read that found an entry without its
    /// value is not remembered (a read with the value would get none).
    #[test]
    fn remembered_reads_answer_as_the_tables_would() {
        let snapshot = snapshot();
        let now = Timestamp::from_millis(5_000);
        let later = Timestamp::from_millis(9_000);
        let expiring = entry("a", b"A", Some(Timestamp::from_millis(8_000)));
        snapshot.remember("p", "a", Some(&expiring), true);

        let found = snapshot.remembered("p", "a", true, now).unwrap().unwrap();
        assert_eq!(found.value, Bytes::from_static(b"A"));
        assert_eq!(found.meta.version, 7);
        let headless = snapshot.remembered("p", "a", false, now).unwrap().unwrap();
        assert!(headless.value.is_empty());
        assert_eq!(headless.meta.size, 1);
        assert!(
            snapshot
                .remembered("p", "a", true, later)
                .unwrap()
                .is_none()
        );

        snapshot.remember("p", "b", Some(&entry("b", b"", None)), false);
        assert!(snapshot.remembered("p", "b", true, now).is_none());

        snapshot.remember("p", "gone", None, false);
        assert!(
            snapshot
                .remembered("p", "gone", true, now)
                .unwrap()
                .is_none()
        );
        assert!(snapshot.remembered("q", "a", true, now).is_none());
    }

    /// The memo stops taking entries at its bound, and never takes a large
    /// value.
    #[test]
    fn the_memo_is_bounded() {
        let snapshot = snapshot();
        let now = Timestamp::from_millis(5_000);
        static LARGE: [u8; MEMO_MAX_VALUE + 1] = [b'x'; MEMO_MAX_VALUE + 1];
        snapshot.remember("p", "large", Some(&entry("large", &LARGE, None)), true);
        assert!(snapshot.remembered("p", "large", true, now).is_none());

        static SMALL: [u8; 3000] = [b'y'; 3000];
        let fits = MEMO_BYTES / (MEMO_ENTRY_COST + 3000 + 10 + 10 + 10);
        for n in 0..fits + 100 {
            let key = format!("k{n:08}");
            snapshot.remember("p", &key, Some(&entry(&key, &SMALL, None)), true);
        }
        let memo = snapshot.memo.lock().unwrap();
        assert!(memo.bytes <= MEMO_BYTES);
        let kept = memo.projects["p"].len();
        assert!(kept + 100 >= fits && kept < fits + 100, "{kept} of {fits}");
    }
}
