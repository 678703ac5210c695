//! `kvs verify`: a walk over every table of a database that checks every
//! record, every value, that each large value is present and matches its
//! key's record, and that nothing is orphaned. It runs offline on a stopped
//! store ([`verify_dir`]) or online over a read snapshot of a running one
//! (`RedbStore::verify`), the same walk either way.
//!
//! redb checks no page when it reads and may panic on a damaged page: each
//! table is walked contained (`contain`), and a panic is reported as damage
//! there. A walk goes from leaf to leaf, but a lookup descends through the
//! index pages, whose damaged separators can send it to a leaf that does
//! not hold the key (a `GET` would answer 404): so every record the walk
//! finds is also looked up by its key ([`found`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use std::borrow::Borrow;

use redb::{Key, ReadTransaction, ReadableTable, TableError, TableHandle, Value};

use super::codec::{
    self, HISTORY, HistoryRecord, IMPORTED, KeyTables, PROJECTS, STATS, StatsRecord, TOKENS,
    check_value, decode, decode_changes, decode_entry, expiry_key, parse_expiry_key,
};
use super::contain::contain;
use super::snapshot::read_sweeps;
use super::stopped::{StoppedError, close_stopped_to_read, open_stopped_to_read};
use crate::domain::{ImportedDigest, ProjectSettings, StorageMode, TokenRecord};
use crate::store::{Report, StoreError, UNFOUND, UNINDEXED};

/// redb's page cache for an offline walk. The walk reads each table in key
/// order, and its lookups (of each record, of each large value) follow the
/// same order, so the pages they need were just read: at 1,000,000 keys the
/// walk took the same time with this as with redb's 1 GiB (0.5 s), and the
/// process peaked at 41 MB resident instead of 297 MB; over 96 MiB of 1 MiB
/// values, 36 MiB instead of 460 (`tests/memory.rs`).
const WALK_CACHE_BYTES: usize = 16 << 20;

/// Checks the stopped store in `dir` (its `kvs.redb`). A file whose
/// structure redb cannot even open is reported as damage, as is a panic
/// when it closes (it then writes its allocator state back).
pub fn verify_dir(dir: &Path) -> Result<Report, StoppedError> {
    let mut report = Report::default();
    let database = match open_stopped_to_read(
        dir,
        WALK_CACHE_BYTES,
        "check it with `kvs verify --token …` (an admin token, no --data-dir)",
    ) {
        Ok(database) => database,
        Err(StoppedError::Damaged { reason, .. }) => {
            report.damaged(
                "kvs.redb",
                format!("its structure cannot be read ({reason})"),
            );
            return Ok(report);
        }
        Err(error) => return Err(error),
    };
    let txn = database
        .begin_read()
        .map_err(|error| StoppedError::unreadable(&dir.join("kvs.redb"), error))?;
    let projects = walk_catalog(&txn, &mut report);
    walk_keys(&txn, &projects, StorageMode::Disk, &mut report);
    let durable = super::snapshot::server_revision(&txn)
        .map_err(|error| StoppedError::unreadable(&dir.join("kvs.redb"), error))?;
    drop(txn);
    if let Err(panicked) = close_stopped_to_read(database) {
        report.damaged(
            "kvs.redb",
            format!("its lists of free pages cannot be read ({panicked})"),
        );
    }
    // The log holds the writes the database lacks after a crash: a damaged
    // record there loses them at the next start as surely as a damaged
    // page here. Read once the database is closed, so that its page cache
    // and the log's records are not held at once.
    match super::wal::inspect(dir, durable) {
        Ok(_) => {}
        Err(StoreError::DataCorrupted(problem)) => report.damaged("kvs.wal", problem),
        Err(error) => return Err(StoppedError::unreadable(&dir.join("kvs.wal"), error)),
    }
    Ok(report)
}

/// Runs `walk` on one table, reporting a panic (a damaged page) as damage.
fn guarded(report: &mut Report, place: &str, walk: impl FnOnce(&mut Report)) {
    if contain(|| walk(report)).is_err() {
        report.damaged(place, "the table cannot be read (a damaged page)");
    }
}

/// Whether a lookup of `key`, which a walk over `table` found, finds it
/// too.
fn found<'k, K: Key + 'static, V: Value + 'static>(
    table: &impl ReadableTable<K, V>,
    key: impl Borrow<K::SelfType<'k>>,
) -> bool {
    matches!(table.get(key), Ok(Some(_)))
}

const VALUE_MISSING: &str = "value: missing";
const ORPHAN_VALUE: &str = "an orphan large value (no record points at it)";

/// What the walk of a database's keys and large values found that a
/// lookup by key misses, and the damage it reported that may follow from
/// such a miss alone, for [`index_consequences`].
#[derive(Default)]
struct Misses {
    /// (project, key) of the records that a lookup in the keys table misses.
    records: BTreeSet<(String, String)>,
    /// (project, key) of the large values that a lookup in the values table
    /// misses.
    values: BTreeSet<(String, String)>,
    /// [`VALUE_MISSING`] as reported: its index in the report's damage, with
    /// its project and key.
    missing_values: Vec<(usize, String, String)>,
    /// [`ORPHAN_VALUE`] as reported, the same way.
    orphans: Vec<(usize, String, String)>,
}

impl Misses {
    /// Reports `problem` for `key` of `project` at `place`, remembered in
    /// `list` when it may follow from a lookup's miss.
    fn report(
        list: &mut Vec<(usize, String, String)>,
        report: &mut Report,
        place: String,
        problem: &str,
        (project, key): (&str, &str),
    ) {
        list.push((report.damage.len(), project.to_owned(), key.to_owned()));
        report.damaged(place, problem);
    }
}

/// Reports as what it is the damage that follows from a lookup's miss
/// alone: a large value "missing" that the walk over the values table found
/// (a lookup by its key did not), and an "orphan" large value whose key's
/// record the walk found (a lookup did not). So a store whose only damage
/// is to index pages says so, and `kvs compact` is its remedy.
fn index_consequences(report: &mut Report, misses: &Misses) {
    let follows = |list: &[(usize, String, String)], missed: &BTreeSet<(String, String)>| {
        list.iter()
            .filter(|(_, project, key)| missed.contains(&(project.clone(), key.clone())))
            .map(|(index, _, _)| *index)
            .collect::<Vec<usize>>()
    };
    let mut relabelled = follows(&misses.missing_values, &misses.values);
    relabelled.extend(follows(&misses.orphans, &misses.records));
    for index in relabelled {
        if let Some(damage) = report.damage.get_mut(index) {
            damage.problem = UNFOUND.to_owned();
        }
    }
    let mut seen = BTreeSet::new();
    report
        .damage
        .retain(|d| seen.insert((d.place.clone(), d.problem.clone())));
}

fn problem(error: &StoreError) -> String {
    match error {
        StoreError::DataCorrupted(_) => "failed its checksum or cannot be read".to_owned(),
        other => other.to_string(),
    }
}

/// Reads a `&str → &[u8]` table if it exists, calling `each` per row; a
/// failed read of the table itself is damage.
fn each_row(
    txn: &ReadTransaction,
    table: redb::TableDefinition<&str, &[u8]>,
    report: &mut Report,
    mut each: impl FnMut(&str, &[u8], &mut Report),
) {
    let name = table.name().to_owned();
    guarded(report, &name.clone(), |report| {
        let table = match txn.open_table(table) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return,
            Err(error) => return report.damaged(&name, error),
        };
        let rows = match table.iter() {
            Ok(rows) => rows,
            Err(error) => return report.damaged(&name, error),
        };
        for row in rows {
            match row {
                Ok((key, value)) => {
                    if !found(&table, key.value()) {
                        report.damaged(format!("{name} {:?}", key.value()), UNFOUND);
                    }
                    each(key.value(), value.value(), report)
                }
                Err(error) => return report.damaged(&name, error),
            }
        }
    });
}

/// The catalog (disk database) and every figures record; answers the
/// projects and where each keeps its keys.
pub fn walk_catalog(txn: &ReadTransaction, report: &mut Report) -> BTreeMap<String, StorageMode> {
    let mut projects = BTreeMap::new();
    each_row(txn, PROJECTS, report, |id, bytes, report| {
        report.records += 1;
        match decode::<ProjectSettings>(PROJECTS.name(), id, bytes) {
            Ok(settings) if settings.id.as_str() == id => {
                projects.insert(id.to_owned(), settings.storage);
            }
            Ok(_) => report.damaged(format!("project {id}"), "its record names another project"),
            Err(error) => report.damaged(format!("project {id}"), problem(&error)),
        }
    });
    let mut tokens = BTreeSet::new();
    each_row(txn, TOKENS, report, |id, bytes, report| {
        report.records += 1;
        match decode::<TokenRecord>(TOKENS.name(), id, bytes) {
            Ok(token) => {
                let orphan = token
                    .project
                    .as_ref()
                    .is_some_and(|p| !projects.contains_key(p.as_str()));
                if orphan {
                    report.damaged(format!("token {id}"), "its project does not exist");
                }
                tokens.insert(id.to_owned());
            }
            Err(error) => report.damaged(format!("token {id}"), problem(&error)),
        }
    });
    guarded(report, IMPORTED.name(), |report| {
        let Ok(table) = txn.open_table(IMPORTED) else {
            return;
        };
        let Ok(rows) = table.iter() else {
            return report.damaged(IMPORTED.name(), "the table cannot be read");
        };
        for row in rows {
            let Ok((id, digest)) = row else {
                return report.damaged(IMPORTED.name(), "the table cannot be read");
            };
            report.records += 1;
            let id = id.value();
            if !found(&table, id) {
                report.damaged(format!("imported digest of token {id}"), UNFOUND);
            }
            if ImportedDigest::parse(digest.value()).is_err() {
                report.damaged(
                    format!("imported digest of token {id}"),
                    "it cannot be read",
                );
            } else if !tokens.contains(id) {
                report.damaged(format!("imported digest of token {id}"), "no such token");
            }
        }
    });
    projects
}

/// The stats and history records of one database.
fn walk_figures(
    txn: &ReadTransaction,
    projects: &BTreeMap<String, StorageMode>,
    storage: StorageMode,
    report: &mut Report,
) -> (
    BTreeMap<String, StatsRecord>,
    BTreeMap<String, HistoryRecord>,
) {
    let mut figures = BTreeMap::new();
    let mut histories = BTreeMap::new();
    for table in [STATS, HISTORY] {
        let name = table.name().to_owned();
        each_row(txn, table, report, |id, bytes, report| {
            report.records += 1;
            let read = if name == STATS.name() {
                decode::<StatsRecord>(&name, id, bytes).map(|stats| {
                    figures.insert(id.to_owned(), stats);
                })
            } else {
                decode::<HistoryRecord>(&name, id, bytes).map(|history| {
                    histories.insert(id.to_owned(), history);
                })
            };
            if let Err(error) = read {
                report.damaged(format!("{name} of project {id}"), problem(&error));
            } else if projects.get(id) != Some(&storage) {
                report.damaged(format!("{name} of project {id}"), "no such project here");
            }
        });
    }
    (figures, histories)
}

/// Every key table, value table and change log of one database, and its
/// expiry index.
pub fn walk_keys(
    txn: &ReadTransaction,
    projects: &BTreeMap<String, StorageMode>,
    storage: StorageMode,
    report: &mut Report,
) {
    let (figures, histories) = walk_figures(txn, projects, storage, report);
    let names: Vec<String> = match contain(|| {
        txn.list_tables()
            .map(|tables| tables.map(|t| t.name().to_owned()).collect())
    }) {
        Ok(Ok(names)) => names,
        _ => {
            report.damaged("the table directory", "it cannot be read");
            return;
        }
    };
    let mut misses = Misses::default();
    for name in &names {
        if let Some(project) = name.strip_prefix("keys/") {
            guarded(report, name, |report| {
                let (count, bytes) = keys(txn, project, report, &mut misses);
                // The figures are kept in the same commits as the keys: a
                // difference means keys lost or found (a damaged page).
                if let Some(stats) = figures.get(project)
                    && (stats.keys, stats.bytes) != (count, bytes)
                {
                    report.damaged(
                        format!("project {project}"),
                        format!(
                            "its figures say {} keys of {} bytes, its table holds {count} of {bytes}",
                            stats.keys, stats.bytes
                        ),
                    );
                }
            });
        } else if let Some(project) = name.strip_prefix("values/") {
            guarded(report, name, |report| {
                orphan_values(txn, project, report, &mut misses)
            });
        } else if let Some(project) = name.strip_prefix("changes/") {
            guarded(report, name, |report| {
                // A log that could not be read whole is reported as such.
                let Some(count) = changes(txn, project, report) else {
                    return;
                };
                // The history figures are kept in the same commits as the
                // log, and decide when it is trimmed: a difference trims
                // too early or too late. (Not their bytes: the v1 format's
                // entries were shorter, and its migration left the figure.)
                if let Some(history) = histories.get(project)
                    && history.changes != count
                {
                    report.damaged(
                        format!("project {project}"),
                        format!(
                            "its history figures say {} changes, its change log holds {count}",
                            history.changes
                        ),
                    );
                }
            });
        } else {
            continue;
        }
        let project = name.split_once('/').map_or("", |(_, p)| p);
        if projects.get(project) != Some(&storage) {
            report.damaged(name.as_str(), "a table of no project kept here");
        }
    }
    index_consequences(report, &misses);
    guarded(report, codec::EXPIRY.name(), |report| {
        let Ok(index) = txn.open_table(codec::EXPIRY) else {
            return;
        };
        let Ok(rows) = index.iter() else {
            return report.damaged(codec::EXPIRY.name(), "the table cannot be read");
        };
        for row in rows {
            match row {
                Ok((key, _)) if parse_expiry_key(key.value()).is_some() => {
                    if !found(&index, key.value()) {
                        report.damaged(codec::EXPIRY.name(), UNFOUND);
                    }
                }
                _ => report.damaged(codec::EXPIRY.name(), "an index entry cannot be read"),
            }
        }
    });
}

/// Answers how many keys the table holds and the sum of their sizes.
fn keys(
    txn: &ReadTransaction,
    project: &str,
    report: &mut Report,
    misses: &mut Misses,
) -> (u64, u64) {
    let tables = KeyTables::of(project);
    let place = |key: &str| format!("project {project} key {key:?}");
    // A delete by prefix still being swept: its figures no longer count the
    // keys it covers.
    let sweep = read_sweeps(txn)
        .ok()
        .and_then(|mut sweeps| sweeps.remove(project));
    let values = txn.open_table(tables.values()).ok();
    // The expiry sweep finds a key only through its entry here.
    let index = txn.open_table(codec::EXPIRY).ok();
    let (mut count, mut bytes) = (0, 0);
    let keys = match txn.open_table(tables.keys()) {
        Ok(keys) => keys,
        Err(error) => {
            report.damaged(format!("keys/{project}"), error);
            return (count, bytes);
        }
    };
    let rows = match keys.iter() {
        Ok(rows) => rows,
        Err(error) => {
            report.damaged(format!("keys/{project}"), error);
            return (count, bytes);
        }
    };
    for row in rows {
        let (key, entry) = match row {
            Ok(row) => row,
            Err(error) => {
                report.damaged(format!("keys/{project}"), error);
                return (count, bytes);
            }
        };
        let key = key.value();
        report.keys += 1;
        count += 1;
        if !found(&keys, key) {
            report.damaged(place(key), UNFOUND);
            misses.records.insert((project.to_owned(), key.to_owned()));
        }
        let record = match decode_entry(project, key, entry.value()) {
            Ok((record, _)) => record,
            Err(error) => {
                report.damaged(place(key), format!("record: {}", problem(&error)));
                continue;
            }
        };
        if sweep
            .as_ref()
            .is_some_and(|sweep| sweep.covers(key, &record))
        {
            count -= 1;
            continue;
        }
        if let Some(at) = record.expires_at {
            let entry = expiry_key(at, project, key);
            if !index
                .as_ref()
                .is_some_and(|index| found(index, entry.as_slice()))
            {
                report.damaged(place(key), UNINDEXED);
            }
        }
        bytes += record.size;
        if record.inline {
            continue;
        }
        report.values += 1;
        let stored = values.as_ref().map(|v| v.get(key));
        match stored {
            Some(Ok(Some(value))) => {
                if check_value(project, key, &record, value.value()).is_err() {
                    report.damaged(place(key), "value: failed its checksum");
                }
            }
            Some(Err(error)) => report.damaged(place(key), format!("value: {error}")),
            _ => Misses::report(
                &mut misses.missing_values,
                report,
                place(key),
                VALUE_MISSING,
                (project, key),
            ),
        }
    }
    (count, bytes)
}

/// Values whose key has no record that points at them.
fn orphan_values(txn: &ReadTransaction, project: &str, report: &mut Report, misses: &mut Misses) {
    let tables = KeyTables::of(project);
    let Ok(values) = txn.open_table(tables.values()) else {
        return report.damaged(format!("values/{project}"), "the table cannot be read");
    };
    let keys = txn.open_table(tables.keys()).ok();
    let Ok(rows) = values.iter() else {
        return report.damaged(format!("values/{project}"), "the table cannot be read");
    };
    for row in rows {
        let Ok((key, _)) = row else {
            return report.damaged(format!("values/{project}"), "the table cannot be read");
        };
        let key = key.value();
        if !found(&values, key) {
            report.damaged(format!("project {project} large value {key:?}"), UNFOUND);
            misses.values.insert((project.to_owned(), key.to_owned()));
        }
        let entry = keys.as_ref().and_then(|k| k.get(key).ok().flatten());
        let points_here = entry.is_some_and(|e| {
            decode_entry(project, key, e.value()).is_ok_and(|(record, _)| !record.inline)
        });
        if !points_here {
            Misses::report(
                &mut misses.orphans,
                report,
                format!("project {project} key {key:?}"),
                ORPHAN_VALUE,
                (project, key),
            );
        }
    }
}

/// Checks every entry of the project's change log; answers how many
/// changes it holds, when every entry could be read.
fn changes(txn: &ReadTransaction, project: &str, report: &mut Report) -> Option<u64> {
    let tables = KeyTables::of(project);
    let mut held = Some(0);
    let unreadable = |report: &mut Report| {
        report.damaged(format!("changes/{project}"), "the table cannot be read");
    };
    let Ok(log) = txn.open_table(tables.changes()) else {
        unreadable(report);
        return None;
    };
    let Ok(rows) = log.iter() else {
        unreadable(report);
        return None;
    };
    for row in rows {
        let Ok((revision, bytes)) = row else {
            unreadable(report);
            return None;
        };
        let revision = revision.value();
        if !found(&log, revision) {
            report.damaged(
                format!("project {project} change-log entry {revision}"),
                UNFOUND,
            );
        }
        match decode_changes(project, revision, bytes.value()) {
            Ok(sets) => {
                report.change_sets += sets.len() as u64;
                held = held.map(|held| {
                    held + sets.iter().map(|set| set.changes.len() as u64).sum::<u64>()
                });
            }
            // An entry holds one or more sets (a batch's): damaged, it is
            // named by its key and counted once.
            Err(error) => {
                held = None;
                report.change_sets += 1;
                report.damaged(
                    format!("project {project} change-log entry {revision}"),
                    problem(&error),
                );
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::super::writer::testing::{move_to, store_with_project, write};
    use super::*;
    use crate::domain::{Key, ProjectId, Timestamp};
    use crate::store::{KvOp, Store};
    use redb::ReadableDatabase;

    /// A put of `key` that expires in an hour.
    fn put_expiring(key: &str) -> KvOp {
        KvOp::Put {
            key: Key::parse(key).unwrap(),
            value: bytes::Bytes::from_static(b"v"),
            content_type: "text/plain".to_owned(),
            ttl: Some(3600),
            precondition: None,
        }
    }

    async fn expires_at(store: &impl Store, id: &ProjectId, key: &str) -> Timestamp {
        let read = store
            .get(id, &Key::parse(key).unwrap(), false)
            .await
            .unwrap();
        read.value.unwrap().meta.expires_at.unwrap()
    }

    /// Removes `key`'s entry from the expiry index of `txn`'s database, as
    /// a storage move once did, and commits.
    fn drop_expiry_entry(txn: redb::WriteTransaction, at: Timestamp, id: &ProjectId, key: &str) {
        {
            let mut index = txn.open_table(codec::EXPIRY).unwrap();
            let entry = codec::expiry_key(at, id.as_str(), key);
            assert!(index.remove(entry.as_slice()).unwrap().is_some());
        }
        txn.commit().unwrap();
    }

    /// The damage a key with an expiry but no entry in the expiry index
    /// is reported as, if any.
    fn unswept(report: &Report, key: &str) -> Vec<String> {
        report
            .damage
            .iter()
            .filter(|d| d.place == format!("project p key {key:?}"))
            .map(|d| d.problem.clone())
            .collect()
    }

    /// A key whose expiry has no entry in the expiry index is never swept
    /// (a storage move dropped the entries once): online and offline,
    /// verify reports it with its remedy, and `kvs compact` mends it.
    #[tokio::test]
    async fn a_key_whose_expiry_the_index_lacks_is_damage_that_compact_mends() {
        // Online, in the memory database, after a move.
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        let ops = vec![put_expiring("lost"), put_expiring("kept")];
        store.write_kv(write(&id, ops)).await.unwrap();
        move_to(&store, &id, StorageMode::Memory).await;
        let at = expires_at(&store, &id, "lost").await;
        let txn = store.shared.begin_write(StorageMode::Memory).unwrap();
        drop_expiry_entry(txn, at, &id, "lost");
        let report = store.verify().await.unwrap();
        let problems = unswept(&report, "lost");
        assert_eq!(problems.len(), 1, "{:?}", report.damage);
        assert!(problems[0].contains("expiry index"), "{problems:?}");
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        let lines = report.lines();
        assert!(lines.last().unwrap().contains("kvs compact"), "{lines:?}");
        store.compact().await.unwrap();
        let report = store.verify().await.unwrap();
        assert!(report.damage.is_empty(), "{:?}", report.damage);
        store.close().await;
        drop(store);

        // Offline, in the disk database.
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        store
            .write_kv(write(&id, vec![put_expiring("lost")]))
            .await
            .unwrap();
        let at = expires_at(&store, &id, "lost").await;
        store.close().await;
        drop(store);
        let database = redb::Database::open(dir.path().join("kvs.redb")).unwrap();
        drop_expiry_entry(database.begin_write().unwrap(), at, &id, "lost");
        drop(database);
        let report = verify_dir(dir.path()).unwrap();
        assert_eq!(unswept(&report, "lost").len(), 1, "{:?}", report.damage);
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        super::super::compact_dir(dir.path()).unwrap();
        let report = verify_dir(dir.path()).unwrap();
        assert!(report.damage.is_empty(), "{:?}", report.damage);
        let database = redb::Database::open(dir.path().join("kvs.redb")).unwrap();
        let txn = database.begin_read().unwrap();
        let index = txn.open_table(codec::EXPIRY).unwrap();
        let entry = codec::expiry_key(at, id.as_str(), "lost");
        assert!(index.get(entry.as_slice()).unwrap().is_some());
    }

    /// A large value that a lookup misses but the walk finds is not
    /// "missing", and an "orphan" whose record a lookup misses is not one:
    /// both are the index's damage, told once; real ones stay as they are.
    #[test]
    fn what_follows_from_a_lookups_miss_is_told_as_index_damage() {
        let mut report = Report::default();
        let mut misses = Misses::default();
        let place = |key: &str| format!("project p key {key:?}");
        for key in ["a", "b"] {
            let list = &mut misses.missing_values;
            Misses::report(list, &mut report, place(key), VALUE_MISSING, ("p", key));
        }
        report.damaged(place("c"), UNFOUND);
        misses.records.insert(("p".to_owned(), "c".to_owned()));
        report.damaged(r#"project p large value "a""#, UNFOUND);
        misses.values.insert(("p".to_owned(), "a".to_owned()));
        for key in ["c", "d"] {
            let list = &mut misses.orphans;
            Misses::report(list, &mut report, place(key), ORPHAN_VALUE, ("p", key));
        }
        index_consequences(&mut report, &misses);
        let told: Vec<(&str, &str)> = report
            .damage
            .iter()
            .map(|d| (d.place.as_str(), d.problem.as_str()))
            .collect();
        assert_eq!(
            told,
            [
                (r#"project p key "a""#, UNFOUND),
                (r#"project p key "b""#, VALUE_MISSING),
                (r#"project p key "c""#, UNFOUND),
                (r#"project p large value "a""#, UNFOUND),
                (r#"project p key "d""#, ORPHAN_VALUE),
            ]
        );
    }
}
