//! The expiry sweep: removes the keys whose expiry has come, found through
//! each database's expiry index, and logs them as `expired` deletes. Each
//! project with such keys takes one revision. Reads never see an expired
//! key anyway ([`crate::store::kv::is_live`]); this bounds how late the
//! removal (and its event) comes.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableError};

use super::super::codec::{self, KeyTables, parse_expiry_key, storage_error};
use super::Writer;
use super::batch::Batch;
use super::kv::stored;
use super::tables::open_txn;
use crate::domain::{Key, ProjectId, StorageMode, Timestamp};
use crate::store::StoreError;
use crate::store::kv::{self, Figures};

impl Writer {
    /// Whether the first entry of either expiry index has come due (true
    /// when that cannot be read: the sweep itself will then report why).
    pub(super) fn expiry_due(&self) -> bool {
        let now = Timestamp::now().millis().max(0) as u64;
        [StorageMode::Disk, StorageMode::Memory]
            .into_iter()
            .any(|storage| {
                let first = || -> Result<Option<u64>, StoreError> {
                    let txn = self
                        .shared
                        .database(storage)?
                        .begin_read()
                        .map_err(storage_error)?;
                    let index = match txn.open_table(codec::EXPIRY) {
                        Ok(index) => index,
                        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                        Err(error) => return Err(storage_error(error)),
                    };
                    let first = index.first().map_err(storage_error)?;
                    Ok(first.and_then(|(key, _)| {
                        key.value()
                            .first_chunk::<8>()
                            .map(|time| u64::from_be_bytes(*time))
                    }))
                };
                first().map_or(true, |at| at.is_some_and(|at| at <= now))
            })
    }
}

impl Batch<'_> {
    /// Removes every key whose expiry has come, with its index entry; index
    /// entries that no longer match a key (it was rewritten, or its project
    /// deleted or moved) are dropped.
    pub fn apply_expiry(&mut self) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let upper = (now.millis().max(0) as u64 + 1).to_be_bytes();
        let mut expired = Vec::new();
        let mut touched = Vec::new();
        for storage in [StorageMode::Disk, StorageMode::Memory] {
            self.txn(storage)?;
            let txn = open_txn(&self.disk, &self.memory, storage)?;
            let mut index = txn.open_table(codec::EXPIRY).map_err(storage_error)?;
            let mut due: BTreeMap<String, Vec<(Timestamp, String, Vec<u8>)>> = BTreeMap::new();
            for item in index.range(..upper.as_slice()).map_err(storage_error)? {
                let (entry, _) = item.map_err(storage_error)?;
                let entry = entry.value().to_vec();
                let (at, project, key) = parse_expiry_key(&entry)
                    .map(|(at, p, k)| (at, p.to_owned(), k.to_owned()))
                    .unwrap_or((now, String::new(), String::new()));
                due.entry(project).or_default().push((at, key, entry));
            }
            if due.is_empty() {
                continue;
            }
            touched.push(storage);
            for (project_id, items) in due {
                // Left in the index for after the project's sweep.
                if self.paused.iter().any(|p| p.as_str() == project_id) {
                    continue;
                }
                for (_, _, entry) in &items {
                    index.remove(entry.as_slice()).map_err(storage_error)?;
                }
                let project = ProjectId::parse(&project_id)
                    .and_then(|id| self.catalog().project(&id).cloned())
                    .filter(|p| p.settings.storage == storage);
                let Some(project) = project else { continue };
                let tables = KeyTables::of(&project_id);
                let record = self.figures(&project);
                let mut figures = Figures {
                    keys: record.keys,
                    bytes: record.bytes,
                };
                let mut keys = txn.open_table(tables.keys()).map_err(storage_error)?;
                let mut values = None;
                let mut removed = Vec::new();
                for (at, key, _) in items {
                    let Some(record) = stored(&tables, &keys, &key)? else {
                        continue;
                    };
                    if record.expires_at != Some(at) {
                        continue;
                    }
                    keys.remove(key.as_str()).map_err(storage_error)?;
                    if !record.inline {
                        if values.is_none() {
                            values = Some(txn.open_table(tables.values()).map_err(storage_error)?);
                        }
                        if let Some(values) = values.as_mut() {
                            values.remove(key.as_str()).map_err(storage_error)?;
                        }
                    }
                    let meta = record.into_meta(Key::from_stored(&key));
                    removed.push(kv::expire(&mut figures, &meta));
                }
                drop((keys, values));
                if !removed.is_empty() {
                    removed.sort_by(|a, b| a.key.cmp(&b.key));
                    removed.dedup_by(|a, b| a.key == b.key);
                    expired.push((project, figures, removed));
                }
            }
        }
        for storage in touched {
            self.dirty(storage);
        }
        for (project, figures, removed) in expired {
            let revision = self.next_revision(project.settings.storage)?;
            self.set_figures(&project, figures, revision);
            self.expired += removed.len() as u64;
            self.log(&project, revision, now, removed);
        }
        self.trim_aged()
    }
}
