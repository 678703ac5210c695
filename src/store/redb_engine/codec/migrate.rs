//! The migration at open: every record still in an older format is
//! rewritten in the current one, in the caller's write transaction (so a
//! crash leaves either the old file or the migrated one), and the `meta`
//! table records each table kind's format version.
//!
//! Records are told apart by their tag, not by `meta` alone: a file written
//! by `kvs restore` (current records, no `meta` yet) needs no rewrite, and a
//! migration that a crash interrupted is simply done again.

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::{
    HISTORY, KeyTables, META, PROJECTS, Record, STATS, TOKENS, decode_v1_changes, decode_v1_entry,
    encode, encode_changes, encode_entry, storage_error, v1,
};
use crate::domain::{ProjectSettings, TokenRecord};
use crate::store::StoreError;

use super::{HistoryRecord, StatsRecord};

/// The current version of each kind of table. `projects` 3: a project's
/// record may be `ProjectBody::V2` (with `public`); `history` 3: a history
/// record may be `HistoryBody::V2` (with its byte count); `keys` 3: a key's
/// entry may be `KeyBody::V2` (smaller); `changes` 3: an entry of the change
/// log may be `SetBody::V2` (a batch's sets, keyed by the last revision).
/// Older bodies are read as they are, so going to 3 rewrites nothing; a
/// release that knows only 2 refuses the file instead of failing on its
/// newer entries one by one.
pub const VERSIONS: [(&str, u64); 6] = [
    ("projects", 3),
    ("tokens", 2),
    ("stats", 2),
    ("history", 3),
    ("keys", 3),
    ("changes", 3),
];

/// How many records a migration rewrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub records: u64,
    pub keys: u64,
    pub change_sets: u64,
}

/// Brings every table of the database to the current format; `database`
/// names it in the log.
pub fn migrate(txn: &WriteTransaction, database: &str) -> Result<Migrated, StoreError> {
    {
        let mut meta = txn.open_table(META).map_err(storage_error)?;
        let mut current = true;
        let mut past_v1 = true;
        for (kind, version) in VERSIONS {
            let stored = meta.get(kind).map_err(storage_error)?.map(|v| v.value());
            if let Some(stored) = stored.filter(|stored| *stored > version) {
                return Err(StoreError::Internal(format!(
                    "{database}: its {kind} are in format {stored}, written by a newer release of \
                     kvs; this release reads up to format {version}: run the newer release"
                )));
            }
            current &= stored == Some(version);
            past_v1 &= stored.is_some_and(|stored| stored >= 2);
        }
        if current {
            return Ok(Migrated::default());
        }
        // Every kind at format 2 or later: the v1 records were rewritten
        // in the commit that recorded that, and the formats since read
        // their older bodies as they are. Only the versions change, and
        // nothing is read (a scan of every key, 0.7 s at 1,000,000 keys).
        if past_v1 {
            for (kind, version) in VERSIONS {
                meta.insert(kind, version).map_err(storage_error)?;
            }
            return Ok(Migrated::default());
        }
    }
    let mut done = Migrated::default();
    done.records += records::<ProjectSettings>(txn, PROJECTS)?;
    done.records += records::<TokenRecord>(txn, TOKENS)?;
    done.records += records::<StatsRecord>(txn, STATS)?;
    done.records += records::<HistoryRecord>(txn, HISTORY)?;
    let names: Vec<String> = txn
        .list_tables()
        .map_err(storage_error)?
        .map(|table| table.name().to_owned())
        .collect();
    for name in &names {
        if let Some(project) = name.strip_prefix("keys/") {
            done.keys += keys(txn, project)?;
        } else if let Some(project) = name.strip_prefix("changes/") {
            done.change_sets += changes(txn, project)?;
        }
    }
    let mut meta = txn.open_table(META).map_err(storage_error)?;
    for (kind, version) in VERSIONS {
        meta.insert(kind, version).map_err(storage_error)?;
    }
    if done != Migrated::default() {
        tracing::info!(
            database,
            records = done.records,
            keys = done.keys,
            change_sets = done.change_sets,
            "migrated the store from the v1 format"
        );
    }
    Ok(done)
}

/// Rewrites the v1 records of one catalog or figures table.
fn records<T: Record>(
    txn: &WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<u64, StoreError> {
    let name = table.name().to_owned();
    let mut table = txn.open_table(table).map_err(storage_error)?;
    let mut rewritten = Vec::new();
    for item in table.iter().map_err(storage_error)? {
        let (key, bytes) = item.map_err(storage_error)?;
        if bytes.value().first() == Some(&v1::TAG) {
            let record =
                T::read_v1(bytes.value()).map_err(|error| v1_error(&name, key.value(), error))?;
            rewritten.push((key.value().to_owned(), encode(&name, key.value(), &record)?));
        }
    }
    for (key, bytes) in &rewritten {
        table
            .insert(key.as_str(), bytes.as_slice())
            .map_err(storage_error)?;
    }
    Ok(rewritten.len() as u64)
}

/// Rewrites a project's v1 key entries, with the CRC of each large value.
fn keys(txn: &WriteTransaction, project: &str) -> Result<u64, StoreError> {
    let tables = KeyTables::of(project);
    let mut keys = txn.open_table(tables.keys()).map_err(storage_error)?;
    let values = txn.open_table(tables.values()).map_err(storage_error)?;
    let mut rewritten = Vec::new();
    for item in keys.iter().map_err(storage_error)? {
        let (key, bytes) = item.map_err(storage_error)?;
        let (key, bytes) = (key.value(), bytes.value());
        if bytes.first() != Some(&v1::TAG) {
            continue;
        }
        let (record, inline) =
            decode_v1_entry(bytes).map_err(|error| v1_error(tables.keys().name(), key, error))?;
        let entry = if record.inline {
            encode_entry(project, key, &record, inline)?
        } else {
            let value = values.get(key).map_err(storage_error)?;
            let value = value.as_ref().map_or(&[][..], |v| v.value());
            encode_entry(project, key, &record, value)?
        };
        rewritten.push((key.to_owned(), entry));
    }
    for (key, entry) in &rewritten {
        keys.insert(key.as_str(), entry.as_slice())
            .map_err(storage_error)?;
    }
    // A large value missing stays so (its CRC is that of no bytes): reads
    // and `kvs verify` report it.
    Ok(rewritten.len() as u64)
}

/// Rewrites a project's v1 change sets.
fn changes(txn: &WriteTransaction, project: &str) -> Result<u64, StoreError> {
    let tables = KeyTables::of(project);
    let mut log = txn.open_table(tables.changes()).map_err(storage_error)?;
    let mut rewritten = Vec::new();
    for item in log.iter().map_err(storage_error)? {
        let (revision, bytes) = item.map_err(storage_error)?;
        let (revision, bytes) = (revision.value(), bytes.value());
        if bytes.first() != Some(&v1::TAG) {
            continue;
        }
        let set = decode_v1_changes(revision, bytes)
            .map_err(|error| v1_error(tables.changes().name(), &revision.to_string(), error))?;
        rewritten.push((revision, encode_changes(project, &[&set])?));
    }
    for (revision, bytes) in &rewritten {
        log.insert(*revision, bytes.as_slice())
            .map_err(storage_error)?;
    }
    Ok(rewritten.len() as u64)
}

/// A v1 record that cannot be read stops the migration (and the start),
/// naming it: nothing is rewritten half-way.
fn v1_error(table: &str, key: &str, error: StoreError) -> StoreError {
    StoreError::DataCorrupted(format!(
        "the v1 record {key:?} of {table} cannot be read ({error}); nothing was migrated"
    ))
}

#[cfg(test)]
mod tests {
    use redb::backends::InMemoryBackend;

    use super::*;

    fn database() -> redb::Database {
        redb::Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap()
    }

    #[test]
    fn a_database_is_brought_to_the_current_versions_and_one_from_a_newer_release_is_refused() {
        let db = database();
        let txn = db.begin_write().unwrap();
        migrate(&txn, "test").unwrap();
        {
            let meta = txn.open_table(META).unwrap();
            for (kind, version) in VERSIONS {
                assert_eq!(meta.get(kind).unwrap().map(|v| v.value()), Some(version));
            }
        }
        txn.open_table(META)
            .unwrap()
            .insert("projects", 99)
            .unwrap();
        let refused = migrate(&txn, "test").unwrap_err().to_string();
        assert!(refused.contains("newer release"), "{refused}");
        assert!(refused.contains("format 99"), "{refused}");
    }

    /// A store past v1 whose versions are older than this release's only
    /// has its versions raised: a v1 record left in it would be read as
    /// one (here, refused), not rewritten. A store without versions (from
    /// `kvs restore`, or from before them) is scanned, and its v1 records
    /// are rewritten.
    #[test]
    fn a_store_past_v1_is_not_scanned_again_and_one_without_versions_is() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let old_entry = [v1::TAG, 0xff, 0xff];
        txn.open_table(KeyTables::of("p").keys())
            .unwrap()
            .insert("k", old_entry.as_slice())
            .unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            for (kind, _) in VERSIONS {
                meta.insert(kind, 2).unwrap();
            }
        }
        assert_eq!(migrate(&txn, "test").unwrap(), Migrated::default());
        {
            let meta = txn.open_table(META).unwrap();
            for (kind, version) in VERSIONS {
                assert_eq!(meta.get(kind).unwrap().map(|v| v.value()), Some(version));
            }
        }
        let keys = txn.open_table(KeyTables::of("p").keys()).unwrap();
        assert_eq!(keys.get("k").unwrap().unwrap().value(), old_entry);
        drop(keys);

        txn.delete_table(META).unwrap();
        // Without versions the entry is read as v1: this one is damaged,
        // so the start stops and names it.
        let refused = migrate(&txn, "test").unwrap_err().to_string();
        assert!(refused.contains("keys/p"), "{refused}");
    }
}
