//! A project's move between the disk and the memory database, run by the
//! writer on its own, between the batches around it.

use redb::{ReadableDatabase, ReadableTable, TableError, WriteTransaction};

use super::super::codec::{self, KeyTables, StatsRecord, storage_error};
use super::Writer;
use super::tables::{drop_key_tables, put_record};
use crate::domain::{ProjectId, StorageMode, Timestamp};
use crate::store::publish::Publication;
use crate::store::{Authority, CatalogWrite, Project, ProjectChange, StoreError, plan};

impl Writer {
    pub(super) fn is_move(&self, id: &ProjectId, change: &ProjectChange) -> bool {
        let catalog = self.shared.view.catalog();
        match (catalog.project(id), change.storage) {
            (Some(project), Some(storage)) => project.settings.storage != storage,
            _ => false,
        }
    }

    /// Moves a project's keys to the other database: copy and commit at the
    /// destination (with the new settings), publish, then remove them from
    /// the source. Readers find the keys in one place or the other
    /// throughout; a crash before the removal leaves disk tables of a memory
    /// project, which the next start removes.
    pub(super) fn move_project(
        &mut self,
        id: &ProjectId,
        change: &ProjectChange,
        by: &Authority,
    ) -> Result<(), StoreError> {
        let catalog = self.shared.view.catalog();
        // Judged as any catalog write is: by the catalog it is made on.
        let write = CatalogWrite::UpdateProject {
            id: id.clone(),
            change: change.clone(),
        };
        plan::authorize(&catalog, &write, by, Timestamp::now())?;
        let project = catalog.project(id).ok_or(StoreError::ProjectNotFound)?;
        let from = project.settings.storage;
        let settings = change.apply_to(&project.settings);
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
            let target = self.shared.begin_write(settings.storage)?;
            // What an earlier move left there when its last commit failed
            // (the copy is committed before the disk's catalog) is stale.
            drop_key_tables(&target, &tables, id)?;
            copy_key_tables(&source, &target, &tables)?;
            let expiring = copy_expiry_entries(&source, &target, id)?;
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
                let disk = self.shared.begin_write(StorageMode::Disk)?;
                put_record(&disk, codec::PROJECTS, id.as_str(), &settings)?;
                disk.commit().map_err(storage_error)?;
                self.shared.disk_reads.invalidate();
            }
            Ok(expiring)
        })();
        let expiring = match result {
            Ok(expiring) => expiring,
            Err(error) => {
                self.recover(&error, false);
                return Err(error);
            }
        };
        let mut next = (*catalog).clone();
        next.insert_project(Project {
            settings,
            stats: project.stats.clone(),
            incarnation: project.incarnation,
        });
        self.shared.view.publish(Publication {
            catalog: Some(next),
            revision: self.revision,
            ..Publication::default()
        });
        let cleanup = (|| {
            let source = self.shared.begin_write(from)?;
            drop_key_tables(&source, &tables, id)?;
            remove_expiry_entries(&source, &expiring)?;
            source.commit().map_err(storage_error)?;
            self.shared.reads(from).invalidate();
            Ok::<(), StoreError>(())
        })();
        if let Err(error) = cleanup {
            tracing::warn!(%error, project = %id, "keys left behind after a storage move");
            // redb refuses every later write after an I/O error (the
            // memory database's backend has none to report).
            if from == StorageMode::Disk {
                self.recover(&error, false);
            }
        }
        Ok(())
    }
}

/// Copies a project's keys, values and change log from a snapshot into a
/// write transaction.
fn copy_key_tables(
    source: &redb::ReadTransaction,
    target: &WriteTransaction,
    tables: &KeyTables,
) -> Result<(), StoreError> {
    copy_table(source, target, tables.keys())?;
    copy_table(source, target, tables.values())?;
    copy_table(source, target, tables.changes())
}

/// The expiry index entries of a project's keys, as the index stores them.
/// The index is ordered by time first, so this reads all of it: it holds
/// only keys that expire.
fn expiry_entries(
    index: &impl ReadableTable<&'static [u8], ()>,
    id: &ProjectId,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut entries = Vec::new();
    for item in index.iter().map_err(storage_error)? {
        let (entry, _) = item.map_err(storage_error)?;
        let entry = entry.value();
        if codec::parse_expiry_key(entry).is_some_and(|(_, project, _)| project == id.as_str()) {
            entries.push(entry.to_vec());
        }
    }
    Ok(entries)
}

/// Copies the expiry index entries of a project's keys: the sweep of the
/// destination finds its keys' expiries only there. Answers the entries,
/// for their removal from the source once the keys have left it (the
/// writer runs the move alone, so nothing changes them in between).
fn copy_expiry_entries(
    source: &redb::ReadTransaction,
    target: &WriteTransaction,
    id: &ProjectId,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let index = match source.open_table(codec::EXPIRY) {
        Ok(index) => index,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(storage_error(error)),
    };
    let entries = expiry_entries(&index, id)?;
    if !entries.is_empty() {
        let mut copy = target.open_table(codec::EXPIRY).map_err(storage_error)?;
        for entry in &entries {
            copy.insert(entry.as_slice(), ()).map_err(storage_error)?;
        }
    }
    Ok(entries)
}

/// Removes the expiry index entries of a project whose keys left.
fn remove_expiry_entries(txn: &WriteTransaction, entries: &[Vec<u8>]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut index = txn.open_table(codec::EXPIRY).map_err(storage_error)?;
    for entry in entries {
        index.remove(entry.as_slice()).map_err(storage_error)?;
    }
    Ok(())
}

/// Copies every row of a table from a snapshot into a write transaction.
pub(in crate::store::redb_engine) fn copy_table<K: redb::Key + 'static>(
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

#[cfg(test)]
mod tests {
    use super::super::testing::{move_to, put, store_with_project, write};
    use super::*;
    use crate::domain::{Key, Prefix};
    use crate::store::redb_engine::RedbStore;
    use crate::store::{KvOp, ListRequest, Store};

    async fn keys(store: &RedbStore, id: &ProjectId) -> Vec<String> {
        let request = ListRequest {
            prefix: Prefix::parse("").unwrap(),
            after: None,
            limit: 100,
            with_values: false,
            value_budget: u64::MAX,
        };
        let page = store.list(id, request).await.unwrap().value;
        page.entries
            .into_iter()
            .map(|(meta, _)| meta.key.as_str().to_owned())
            .collect()
    }

    /// A move to memory whose disk commit failed leaves the project on disk
    /// and a copy of its tables in the memory database. A later move must
    /// not bring back what that copy holds and the disk no longer does.
    #[tokio::test]
    async fn a_move_does_not_take_rows_left_at_its_destination_by_a_failed_move() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        let write = |ops| write(&id, ops);
        store
            .write_kv(write(vec![put("gone"), put("kept")]))
            .await
            .unwrap();

        // What a move's copy leaves when the disk commit after it fails.
        let tables = KeyTables::of(id.as_str());
        let source = store.shared.database(StorageMode::Disk).unwrap();
        let source = source.begin_read().unwrap();
        let target = store.shared.begin_write(StorageMode::Memory).unwrap();
        copy_key_tables(&source, &target, &tables).unwrap();
        target.commit().unwrap();
        drop(source);

        let delete = KvOp::Delete {
            key: Key::parse("gone").unwrap(),
            precondition: None,
            must_exist: true,
        };
        store.write_kv(write(vec![delete])).await.unwrap();
        move_to(&store, &id, StorageMode::Memory).await;
        let project = store.catalog().unwrap().project(&id).unwrap().clone();
        assert_eq!(project.settings.storage, StorageMode::Memory);
        assert_eq!(keys(&store, &id).await, ["kept"]);
        let gone = Key::parse("gone").unwrap();
        assert!(store.get(&id, &gone, true).await.unwrap().value.is_none());
        let report = store.verify().await.unwrap();
        assert!(report.damage.is_empty(), "{:?}", report.damage);
        store.close().await;
    }
}
