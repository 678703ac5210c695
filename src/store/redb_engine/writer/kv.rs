//! Key/value writes: the project's keys table seen through
//! [`KeySource`] while [`crate::store::kv::evaluate`] judges the write, then
//! what it decided stored in the keys and values tables and the expiry
//! index.

use std::collections::BTreeMap;

use bytes::Bytes;
use redb::{ReadableTable, WriteTransaction};

use super::super::codec::{
    self, INLINE_LIMIT, KeyRecord, KeyTables, decode_entry, encode_entry, expiry_key, storage_error,
};
use super::super::wal::Logged;
use super::batch::{Batch, HOLD_WRITES};
use super::tables::open_txn;
use super::{Answer, Reply, is_fatal};
use crate::domain::{Key, Prefix, ProjectId, ProjectSettings, StorageMode, Timestamp};
use crate::store::kv::{self, KeyChange, KeySource, Staged};
use crate::store::{Entry, Figures, KeyMeta, KvCommit, KvWrite, Project, StoreError};

pub type KeysTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// Each changed key's entry as the keys table has it after a write (`None`:
/// removed), in the order of the write's changes.
type Entries = Vec<Option<Vec<u8>>>;

/// A project's committed keys, as the write transaction has them.
struct TableSource<'a, 't> {
    txn: &'t WriteTransaction,
    tables: &'a KeyTables<'a>,
    keys: &'a KeysTable<'t>,
    /// The values table, opened when a large value is first read.
    values: Option<KeysTable<'t>>,
}

impl KeySource for TableSource<'_, '_> {
    fn meta(&mut self, key: &str) -> Result<Option<KeyMeta>, StoreError> {
        let record = stored(self.tables, self.keys, key)?;
        Ok(record.map(|record| record.into_meta(Key::from_stored(key))))
    }

    fn entry(&mut self, key: &str) -> Result<Option<(KeyMeta, Bytes)>, StoreError> {
        let project = self.tables.project;
        let Some(entry) = self.keys.get(key).map_err(storage_error)? else {
            return Ok(None);
        };
        let (record, inline) = decode_entry(project, key, entry.value())?;
        if record.inline {
            let value = Bytes::copy_from_slice(inline);
            return Ok(Some((record.into_meta(Key::from_stored(key)), value)));
        }
        if self.values.is_none() {
            self.values = Some(
                self.txn
                    .open_table(self.tables.values())
                    .map_err(storage_error)?,
            );
        }
        let stored = match self.values.as_ref() {
            Some(table) => table.get(key).map_err(storage_error)?,
            None => None,
        };
        let value = stored
            .map(|v| Bytes::copy_from_slice(v.value()))
            .ok_or_else(|| codec::corrupted(&["values/", project], key.as_bytes()))?;
        codec::check_value(project, key, &record, &value)?;
        Ok(Some((record.into_meta(Key::from_stored(key)), value)))
    }

    fn expired(&mut self, now: Timestamp, each: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        // The expiry index of the whole database, by time: what is due
        // is what the sweep has yet to remove, a handful in practice.
        let index = self.txn.open_table(codec::EXPIRY).map_err(storage_error)?;
        let upper = (now.millis().max(0) as u64 + 1).to_be_bytes();
        let project = self.tables.project;
        for item in index.range(..upper.as_slice()).map_err(storage_error)? {
            let (entry, _) = item.map_err(storage_error)?;
            let Some((at, owner, key)) = codec::parse_expiry_key(entry.value()) else {
                continue;
            };
            // An entry left by a key written again since is stale.
            if owner == project
                && stored(self.tables, self.keys, key)?.is_some_and(|r| r.expires_at == Some(at))
            {
                each(key);
            }
        }
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: &Prefix,
        each: &mut dyn FnMut(KeyMeta) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for item in self.keys.range(prefix.as_str()..).map_err(storage_error)? {
            let (key, entry) = item.map_err(storage_error)?;
            let key = key.value();
            if !prefix.covers(key) {
                break;
            }
            let record = decode_entry(self.tables.project, key, entry.value())?.0;
            each(record.into_meta(Key::from_stored(key)))?;
        }
        Ok(())
    }
}

/// A key's record as committed before this write.
pub fn stored(
    tables: &KeyTables,
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    match keys.get(key).map_err(storage_error)? {
        Some(entry) => Ok(Some(decode_entry(tables.project, key, entry.value())?.0)),
        None => Ok(None),
    }
}

/// Whether a value of `size` bytes is kept inline, after its key's record.
fn is_inline(size: u64) -> bool {
    size <= INLINE_LIMIT as u64
}

/// A write judged and stored while its project's keys table is open: what
/// the batch still records of it once the table is closed.
struct Stored {
    /// Its place in the run.
    index: usize,
    revision: u64,
    at: Timestamp,
    staged: Staged,
    entries: Entries,
}

impl Batch<'_> {
    /// Applies consecutive writes to one project (taken from `run`), in
    /// order, with its keys table opened once for them all (an open costs
    /// about as much as judging a write). Each write is judged against the
    /// state the ones before it left; a refused write changes nothing.
    pub fn apply_run(&mut self, run: &mut Vec<(KvWrite, Reply<KvCommit>)>) -> Vec<Answer> {
        let Some(id) = run.first().map(|(write, _)| write.project.clone()) else {
            return Vec::new();
        };
        let (writes, replies): (Vec<KvWrite>, Vec<Reply<KvCommit>>) = run.drain(..).unzip();
        let count = writes.len();
        let results = match self.catalog().project(&id).cloned() {
            Some(project) => self.apply_writes(&project, writes),
            None => {
                let (catalog, now) = (self.catalog(), Timestamp::now());
                Ok(writes
                    .iter()
                    .map(|write| Err(write.refused_without_project(catalog, now)))
                    .collect())
            }
        }
        .unwrap_or_else(|error| (0..count).map(|_| Err(error.clone())).collect());
        replies
            .into_iter()
            .zip(results)
            .map(|(reply, result)| Answer::Kv(reply, result))
            .collect()
    }

    /// [`Batch::apply_run`]'s work: each write judged and stored while the
    /// table is open; then, once it is closed, the batch's records of the
    /// ones that changed something (revision, figures, log, change set), in
    /// their order. An error of its own when the table cannot be opened.
    fn apply_writes(
        &mut self,
        project: &Project,
        writes: Vec<KvWrite>,
    ) -> Result<Vec<Result<KvCommit, StoreError>>, StoreError> {
        let storage = project.settings.storage;
        let tables = KeyTables::of(project.settings.id.as_str());
        let record = self.figures(project);
        let mut figures = Figures {
            keys: record.keys,
            bytes: record.bytes,
        };
        let count = writes.len();
        let mut results = Vec::with_capacity(count);
        let mut stored = Vec::new();
        // Each write's grant and incarnation, judged by the catalog this
        // batch commits (with the catalog writes before it in the batch):
        // a write whose caller lost its right meanwhile is refused.
        let now = Timestamp::now();
        let judged: Vec<_> = writes
            .iter()
            .map(|write| write.judge(self.catalog(), project, now))
            .collect();
        // The revision the writes so far have reached.
        let mut revision = self.revision;
        self.txn(storage)?;
        let txn = open_txn(&self.disk, &self.memory, storage)?;
        let mut open = OpenKeys {
            txn,
            tables: &tables,
            keys: txn.open_table(tables.keys()).map_err(storage_error)?,
        };
        for (index, write) in writes.into_iter().enumerate() {
            if let Some(Err(error)) = judged.get(index) {
                results.push(Err(error.clone()));
                continue;
            }
            let at = Timestamp::now();
            // The writes after this one would need later revisions still.
            let next = match super::batch::next(revision) {
                Ok(next) => next,
                Err(error) => {
                    while results.len() < count {
                        results.push(Err(error.clone()));
                    }
                    break;
                }
            };
            match open.stage(&project.settings, figures, write, next, at) {
                Ok((mut staged, None)) => results.push(Ok(KvCommit {
                    revision,
                    results: std::mem::take(&mut staged.results),
                })),
                Ok((mut staged, Some(entries))) => {
                    revision += 1;
                    figures = staged.figures;
                    results.push(Ok(KvCommit {
                        revision,
                        results: std::mem::take(&mut staged.results),
                    }));
                    stored.push(Stored {
                        index,
                        revision,
                        at,
                        staged,
                        entries,
                    });
                }
                Err(error) if !is_fatal(&error) => results.push(Err(error)),
                // The batch fails: the writes after this one are not tried.
                Err(error) => {
                    while results.len() < count {
                        results.push(Err(error.clone()));
                    }
                    break;
                }
            }
        }
        drop(open);
        for write in stored {
            let revision = match storage {
                StorageMode::Disk => self.next_logged_revision()?,
                StorageMode::Memory => self.next_revision(storage)?,
            };
            debug_assert_eq!(revision, write.revision);
            self.set_figures(project, write.staged.figures, revision);
            if storage == StorageMode::Disk {
                self.keep_for_readers(project, &write.staged);
                match logged(project, revision, write.at, &write.staged, write.entries) {
                    Ok(logged) => self.wal.push(logged),
                    Err(error) => results[write.index] = Err(error),
                }
            }
            self.log(project, revision, write.at, write.staged.log());
        }
        Ok(results)
    }

    /// Stores again a write that the write-ahead log kept, at its revision
    /// and time, in the state the writes before it left; false when it is
    /// not stored (its project was deleted or moved after it, durably).
    pub fn replay(&mut self, write: Logged) -> Result<bool, StoreError> {
        let Some(project) = ProjectId::parse(&write.project)
            .and_then(|id| self.catalog().project(&id).cloned())
            .filter(|p| p.settings.storage == StorageMode::Disk)
        else {
            return Ok(false);
        };
        let tables = KeyTables::of(project.settings.id.as_str());
        let mut changes = BTreeMap::new();
        {
            let txn = open_txn(&self.disk, &self.memory, StorageMode::Disk)?;
            let mut keys = txn.open_table(tables.keys()).map_err(storage_error)?;
            for (key, entry) in write.changes {
                let old = stored(&tables, &keys, &key)?
                    .map(|record| record.into_meta(Key::from_stored(&key)));
                let new = match entry {
                    Some(entry) => {
                        let (record, value) = decode_entry(tables.project, &key, &entry)?;
                        let value = Bytes::copy_from_slice(value);
                        Some((record.into_meta(Key::from_stored(&key)), value))
                    }
                    None => None,
                };
                changes.insert(key, KeyChange { old, new });
            }
            store_changes(txn, &tables, &mut keys, None, &changes)?;
        }
        self.revision = write.revision - 1;
        let revision = self.next_logged_revision()?;
        let figures = Figures {
            keys: write.keys,
            bytes: write.bytes,
        };
        self.set_figures(&project, figures, revision);
        let staged = Staged {
            changes,
            results: Vec::new(),
            figures,
        };
        self.log(&project, revision, write.at, staged.log());
        Ok(true)
    }

    /// What readers see of a write to a disk project if the batch is held
    /// (see [`super::super::held`]): each changed key's new entry.
    /// A batch with more writes than [`HOLD_WRITES`] is never held, so
    /// nothing is kept for it (the writes before this one are logged).
    fn keep_for_readers(&mut self, project: &Project, staged: &Staged) {
        if self.wal.len() >= HOLD_WRITES {
            self.held_keys = Vec::new();
            return;
        }
        let id = project.settings.id.as_str();
        for (key, change) in &staged.changes {
            let entry = change.new.as_ref().map(|(meta, value)| Entry {
                meta: meta.clone(),
                value: value.clone(),
            });
            self.held_keys.push((id.to_owned(), key.clone(), entry));
        }
    }
}

/// A project's keys table, open in a batch's transaction for a run of
/// writes.
struct OpenKeys<'a, 't> {
    txn: &'t WriteTransaction,
    tables: &'a KeyTables<'a>,
    keys: KeysTable<'t>,
}

impl OpenKeys<'_, '_> {
    /// Judges one write against the table as the writes before it left it
    /// (`revision`: the one it takes if it changes anything) and stores
    /// what it decided; with the entries stored, or `None` when it changes
    /// nothing.
    fn stage(
        &mut self,
        settings: &ProjectSettings,
        figures: Figures,
        write: KvWrite,
        revision: u64,
        at: Timestamp,
    ) -> Result<(Staged, Option<Entries>), StoreError> {
        let mut source = TableSource {
            txn: self.txn,
            tables: self.tables,
            keys: &self.keys,
            values: None,
        };
        let staged = kv::evaluate(
            &mut source,
            settings,
            figures,
            &write.checks,
            write.ops,
            revision,
            at,
        )?;
        let values = source.values.take();
        if staged.changes.is_empty() {
            return Ok((staged, None));
        }
        let entries = store_changes(
            self.txn,
            self.tables,
            &mut self.keys,
            values,
            &staged.changes,
        )?;
        Ok((staged, Some(entries)))
    }
}

/// The write as the write-ahead log keeps it. `entries` are what
/// [`store_changes`] stored in the keys table: an inline value's entry is
/// the log's byte for byte, so it is not encoded again; a large value's
/// holds no value, and the log's must.
fn logged(
    project: &Project,
    revision: u64,
    at: Timestamp,
    staged: &Staged,
    entries: Entries,
) -> Result<Logged, StoreError> {
    let id = project.settings.id.as_str();
    let changes = staged
        .changes
        .iter()
        .zip(entries)
        .map(|((key, change), entry)| {
            let entry = match &change.new {
                Some((meta, value)) if !is_inline(meta.size) => Some(encode_entry(
                    id,
                    key,
                    &KeyRecord::from_meta(meta, true),
                    value,
                )?),
                _ => entry,
            };
            Ok((key.clone(), entry))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Logged {
        project: id.to_owned(),
        revision,
        at,
        keys: staged.figures.keys,
        bytes: staged.figures.bytes,
        changes,
    })
}

/// Stores what a write decided: the keys table (`keys`, open), large values
/// in the values table (`values`, if already open), and the expiry index.
/// A key whose value was in the values table and is no longer (replaced
/// inline, or deleted) is removed from it. Answers each key's entry as the
/// keys table has it (`None` when removed), in the order of `changes`.
fn store_changes<'t>(
    txn: &'t WriteTransaction,
    tables: &KeyTables,
    keys: &mut KeysTable<'t>,
    mut values: Option<KeysTable<'t>>,
    changes: &BTreeMap<String, KeyChange>,
) -> Result<Entries, StoreError> {
    // Store. Large values live in the values table; a key whose value
    // was there and is no longer (replaced inline, or deleted) is removed
    // from it.
    let was_external = |old: &Option<KeyMeta>| old.as_ref().is_some_and(|m| !is_inline(m.size));
    let external = changes
        .values()
        .any(|c| was_external(&c.old) || c.new.as_ref().is_some_and(|(m, _)| !is_inline(m.size)));
    if external && values.is_none() {
        values = Some(txn.open_table(tables.values()).map_err(storage_error)?);
    }
    let mut entries = Vec::with_capacity(changes.len());
    for (key, change) in changes {
        match &change.new {
            Some((meta, value)) => {
                let record = KeyRecord::from_meta(meta, is_inline(meta.size));
                let entry = encode_entry(tables.project, key.as_str(), &record, value)?;
                keys.insert(key.as_str(), entry.as_slice())
                    .map_err(storage_error)?;
                entries.push(Some(entry));
            }
            None => {
                keys.remove(key.as_str()).map_err(storage_error)?;
                entries.push(None);
            }
        }
        if let (true, Some(values)) = (external, values.as_mut()) {
            match &change.new {
                Some((meta, value)) if !is_inline(meta.size) => {
                    values
                        .insert(key.as_str(), value.as_ref())
                        .map_err(storage_error)?;
                }
                _ if was_external(&change.old) => {
                    values.remove(key.as_str()).map_err(storage_error)?;
                }
                _ => {}
            }
        }
    }
    drop(values);
    let old_expiry = |old: &Option<KeyMeta>| old.as_ref().and_then(|m| m.expires_at);
    let expiring = changes.values().any(|c| {
        old_expiry(&c.old).is_some() || c.new.as_ref().is_some_and(|(m, _)| m.expires_at.is_some())
    });
    if expiring {
        let mut index = txn.open_table(codec::EXPIRY).map_err(storage_error)?;
        let id = tables.project;
        for (key, change) in changes {
            if let Some(at) = old_expiry(&change.old) {
                index
                    .remove(expiry_key(at, id, key).as_slice())
                    .map_err(storage_error)?;
            }
            if let Some(at) = change.new.as_ref().and_then(|(m, _)| m.expires_at) {
                index
                    .insert(expiry_key(at, id, key).as_slice(), ())
                    .map_err(storage_error)?;
            }
        }
    }
    Ok(entries)
}
