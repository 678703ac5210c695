//! Catalog writes: [`crate::store::plan`] judges the write, and this stores
//! the delta it decided in the catalog tables (and drops a deleted
//! project's key tables), then applies it to the batch's catalog.

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::codec::{self, HistoryRecord, KeyTables, storage_error};
use super::batch::Batch;
use super::tables::{drop_key_tables, put_record, remove_record};
use crate::domain::{StorageMode, Timestamp};
use crate::store::plan::{self, CatalogDelta};
use crate::store::{Authority, CatalogWrite, StoreError};

/// Incarnations of the projects this process has loaded or created: each
/// takes the next number, so that a project deleted and created again under
/// the same id is told apart from the one before.
static INCARNATIONS: AtomicU64 = AtomicU64::new(1);

/// A new project's incarnation.
pub(in crate::store::redb_engine) fn next_incarnation() -> u64 {
    INCARNATIONS.fetch_add(1, Ordering::Relaxed)
}

impl Batch<'_> {
    pub fn apply_catalog(&mut self, write: CatalogWrite, by: &Authority) -> Result<(), StoreError> {
        if let CatalogWrite::UpdateProject { id, change } = &write {
            let moves = self
                .catalog()
                .project(id)
                .is_some_and(|p| change.storage.is_some_and(|s| s != p.settings.storage));
            if moves {
                return Err(StoreError::internal("a storage move inside a batch"));
            }
        }
        let delta = plan::plan(self.catalog(), write, by, self.revision, Timestamp::now())?;
        if delta.is_empty() {
            return Ok(());
        }
        self.store_delta(&delta)?;
        if delta.removed.is_some() {
            // A project's deletion takes a revision of its own (it writes
            // no change set): a project created again under the same id
            // starts after it, so a watcher of the old one, which saw
            // nothing later, cannot resume into the new one's history.
            self.next_revision(StorageMode::Disk)?;
        }
        if let Some(id) = &delta.created {
            self.history
                .insert(id.clone(), Some(HistoryRecord::default()));
        }
        self.catalog_mut().apply(&delta, next_incarnation());
        Ok(())
    }

    /// Writes a judged catalog change to the catalog tables.
    fn store_delta(&mut self, delta: &CatalogDelta) -> Result<(), StoreError> {
        if let Some(id) = &delta.removed {
            let storage = self
                .catalog()
                .project(id)
                .map(|p| p.settings.storage)
                .ok_or(StoreError::ProjectNotFound)?;
            remove_record(&self.disk, codec::PROJECTS, id.as_str())?;
            drop_key_tables(self.txn(storage)?, &KeyTables::of(id.as_str()), id)?;
            if storage == StorageMode::Memory {
                self.memory_dirty = true;
            }
            self.stats.remove(id);
            self.history.insert(id.clone(), None);
        }
        for settings in &delta.projects {
            put_record(&self.disk, codec::PROJECTS, settings.id.as_str(), settings)?;
        }
        {
            let mut tokens = self.disk.open_table(codec::TOKENS).map_err(storage_error)?;
            let mut imported = self
                .disk
                .open_table(codec::IMPORTED)
                .map_err(storage_error)?;
            for id in &delta.revoked {
                tokens.remove(id.as_str()).map_err(storage_error)?;
                imported.remove(id.as_str()).map_err(storage_error)?;
            }
            for (id, _) in &delta.verified {
                imported.remove(id.as_str()).map_err(storage_error)?;
            }
            for (id, digest) in &delta.imported {
                imported
                    .insert(id.as_str(), digest.as_str())
                    .map_err(storage_error)?;
            }
        }
        for token in &delta.tokens {
            put_record(&self.disk, codec::TOKENS, token.id.as_str(), token)?;
        }
        self.disk_dirty = true;
        Ok(())
    }
}
