//! The change log: each revision's changes, written to the project's
//! `changes/{id}` table in the commit that makes them (a batch's sets in a
//! project as one entry, keyed by the last revision), and trimmed by whole
//! entries to the history limits: count, bytes and age per project, and
//! bytes server-wide.

use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::super::codec::{
    self, HistoryRecord, KeyTables, decode_set_head, encode_changes, storage_error,
};
use super::Writer;
use super::batch::Batch;
use super::tables::{open_txn, put_record};
use crate::domain::{ProjectId, StorageMode, Timestamp};
use crate::store::{Change, ChangeSet, Feed, HistoryLimits, Project, StoreError};

impl Writer {
    /// Whether some project keeps changes older than the history's age.
    pub(super) fn history_due(&self) -> bool {
        let cutoff = history_cutoff(&self.limits);
        self.history
            .values()
            .any(|record| record.oldest.is_some_and(|at| at < cutoff))
    }
}

impl Batch<'_> {
    /// The project's change-log figures as this batch has left them.
    pub fn history_of(&self, id: &ProjectId) -> HistoryRecord {
        match self.history.get(id) {
            Some(record) => record.unwrap_or_default(),
            None => self.base_history.get(id).copied().unwrap_or_default(),
        }
    }

    /// Queues a revision's changes for the project's change log (written
    /// at commit, see [`Batch::write_logs`]) and for its feed.
    pub fn log(&mut self, project: &Project, revision: u64, at: Timestamp, changes: Vec<Change>) {
        let id = &project.settings.id;
        let mut record = self.history_of(id);
        record.changes += changes.len() as u64;
        record.oldest.get_or_insert(at);
        self.history.insert(id.clone(), Some(record));
        self.sets.push((
            id.clone(),
            project.incarnation,
            ChangeSet::new(revision, at, changes),
        ));
    }

    /// Writes the batch's change sets to their projects' logs: each log's
    /// table is opened once per batch (an open costs more than an insert),
    /// then trimmed to the history limits. Sets of a project deleted later in
    /// the batch are left out, as its tables are gone.
    pub fn write_logs(&mut self) -> Result<(), StoreError> {
        let mut projects: Vec<(Arc<Project>, Vec<usize>)> = Vec::new();
        for (index, (id, incarnation, _)) in self.sets.iter().enumerate() {
            let Some(project) = self
                .catalog()
                .project(id)
                .filter(|p| p.incarnation == *incarnation)
            else {
                continue;
            };
            match projects.iter_mut().find(|(p, _)| &p.settings.id == id) {
                Some((_, indices)) => indices.push(index),
                None => projects.push((project.clone(), vec![index])),
            }
        }
        let limits = self.limits;
        for (project, indices) in projects {
            let id = project.settings.id.clone();
            let Some(mut record) = self.history.get(&id).copied().flatten() else {
                continue;
            };
            let tables = KeyTables::of(id.as_str());
            let storage = project.settings.storage;
            self.txn(storage)?;
            let txn = open_txn(&self.disk, &self.memory, storage)?;
            {
                let mut log = txn.open_table(tables.changes()).map_err(storage_error)?;
                let sets: Vec<&ChangeSet> = indices.iter().map(|&i| &self.sets[i].2).collect();
                for chunk in entries(&sets) {
                    let Some(last) = chunk.last() else { continue };
                    let entry = encode_changes(id.as_str(), chunk)?;
                    record.bytes += entry.len() as u64;
                    log.insert(last.revision, entry.as_slice())
                        .map_err(storage_error)?;
                }
            }
            trim(txn, &tables, &mut record, &limits, &project.stats.feed)?;
            put_record(txn, codec::HISTORY, id.as_str(), &record)?;
            self.history.insert(id, Some(record));
        }
        self.trim_server_wide()
    }

    /// Once all projects' logs together hold more than `max_total_bytes`,
    /// drops the oldest sets of the largest logs until they hold 1/16 less
    /// (each log keeps its newest entry). Called after every batch that
    /// logged changes, so the sum never stays above the limit.
    fn trim_server_wide(&mut self) -> Result<(), StoreError> {
        let limit = self.limits.max_total_bytes;
        let mut logs: Vec<(u64, ProjectId)> = self
            .base_history
            .keys()
            .chain(self.history.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|id| (self.history_of(id).bytes, id.clone()))
            .collect();
        let mut total: u64 = logs.iter().map(|(bytes, _)| bytes).sum();
        if total <= limit {
            return Ok(());
        }
        let floor = limit - limit / 16;
        logs.sort_unstable_by(|a, b| b.cmp(a));
        for (bytes, id) in logs {
            if total <= floor {
                break;
            }
            let on_disk = |p: &Arc<Project>| p.settings.storage == StorageMode::Disk;
            if self.disk_full && self.catalog().project(&id).is_some_and(on_disk) {
                continue;
            }
            let mut limits = self.limits;
            limits.max_bytes = bytes.saturating_sub(total - floor);
            if let Some(record) = self.trim_project(id, &limits)? {
                total = total - bytes + record.bytes;
            }
        }
        Ok(())
    }

    /// Trims one project's change log to `limits` and keeps its figures;
    /// the project's history record after, or `None` for a project gone.
    fn trim_project(
        &mut self,
        id: ProjectId,
        limits: &HistoryLimits,
    ) -> Result<Option<HistoryRecord>, StoreError> {
        let Some(project) = self.catalog().project(&id).cloned() else {
            return Ok(None);
        };
        let mut record = self.history_of(&id);
        let storage = project.settings.storage;
        let txn = self.txn(storage)?;
        trim(
            txn,
            &KeyTables::of(id.as_str()),
            &mut record,
            limits,
            &project.stats.feed,
        )?;
        put_record(txn, codec::HISTORY, id.as_str(), &record)?;
        self.history.insert(id, Some(record));
        self.dirty(storage);
        Ok(Some(record))
    }

    /// Drops, from every project's change log, the changes older than the
    /// history keeps (a project nobody writes to is trimmed here; the others
    /// are trimmed as they are written).
    pub fn trim_aged(&mut self) -> Result<(), StoreError> {
        let cutoff = history_cutoff(&self.limits);
        let due: std::collections::BTreeSet<ProjectId> = self
            .base_history
            .keys()
            .chain(self.history.keys())
            .filter(|id| self.history_of(id).oldest.is_some_and(|at| at < cutoff))
            .cloned()
            .collect();
        let limits = self.limits;
        for id in due {
            self.trim_project(id, &limits)?;
        }
        Ok(())
    }
}

/// The most one entry of the change log holds, about, by the sets'
/// [`ChangeSet::weight`]: a batch's sets in one project go into one entry
/// up to this (a set larger than it has an entry of its own), so that
/// reading an entry back stays small while a batch of small writes costs
/// one insert, not one per set.
const ENTRY_BYTES: usize = 64 << 10;

/// A batch's sets in one project, in revision order, cut into the runs
/// that each make one entry of the change log.
fn entries<'s, 'c>(sets: &'s [&'c ChangeSet]) -> impl Iterator<Item = &'s [&'c ChangeSet]> {
    let mut rest = sets;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut taken = 0;
        for set in rest {
            let size = set.weight();
            if taken > 0 && bytes + size > ENTRY_BYTES {
                break;
            }
            bytes += size;
            taken += 1;
        }
        let (entry, after) = rest.split_at(taken);
        rest = after;
        Some(entry)
    })
}

/// The time before which the history keeps no change.
pub fn history_cutoff(limits: &HistoryLimits) -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_millis(now.millis().saturating_sub(
        (limits.max_age_seconds.min(i64::MAX as u64 / 1000) as i64).saturating_mul(1000),
    ))
}

/// Once a project's log holds more changes or bytes than the limits, drops
/// its oldest entries down to 1/16 below them (always keeping the newest
/// entry); and drops entries whose first set is older than the history's
/// age. The feed learns the new compaction point (the last dropped entry's
/// key) before the commit, so that a reader never finds changes missing
/// without a 410.
fn trim(
    txn: &WriteTransaction,
    tables: &KeyTables,
    record: &mut HistoryRecord,
    limits: &HistoryLimits,
    feed: &Feed,
) -> Result<(), StoreError> {
    let cutoff = history_cutoff(limits);
    let due = |r: &HistoryRecord| {
        r.changes > limits.max_changes
            || r.bytes > limits.max_bytes
            || r.oldest.is_some_and(|at| at < cutoff)
    };
    if !due(record) {
        return Ok(());
    }
    let mut log = txn.open_table(tables.changes()).map_err(storage_error)?;
    loop {
        let first = log.first().map_err(storage_error)?;
        let Some((revision, head, size)) = first
            .map(|(revision, entry)| {
                let revision = revision.value();
                Ok((
                    revision,
                    decode_set_head(tables.project, revision, entry.value())?,
                    entry.value().len() as u64,
                ))
            })
            .transpose()?
        else {
            record.changes = 0;
            record.bytes = 0;
            record.oldest = None;
            return Ok(());
        };
        let last = log.len().map_err(storage_error)? == 1;
        if last {
            // The figures of a log of one entry are that entry's. Figures
            // that said more (a release that counted a replay's changes
            // twice after a failed commit) trimmed every other entry away;
            // they are right again from here on.
            record.changes = u64::from(head.count);
            record.bytes = size;
        }
        // Past the limit, trim to 1/16 below it: a log at its limit then
        // loses sets once in a while rather than on every write (which
        // dirtied its first pages in every commit).
        let floor = limits.max_changes - limits.max_changes / 16;
        let byte_floor = limits.max_bytes - limits.max_bytes / 16;
        let too_many = (record.changes > floor || record.bytes > byte_floor) && !last;
        if !too_many && head.at >= cutoff {
            record.oldest = Some(head.at);
            return Ok(());
        }
        feed.raise_compacted(revision);
        log.remove(revision).map_err(storage_error)?;
        record.changes = record.changes.saturating_sub(u64::from(head.count));
        record.bytes = record.bytes.saturating_sub(size);
        record.compacted = revision;
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, backends::InMemoryBackend};

    use super::*;
    use crate::domain::{Key, Timestamp};
    use crate::store::ChangeKind;

    fn set(revision: u64, keys: usize) -> ChangeSet {
        let changes = (0..keys)
            .map(|i| Change {
                kind: ChangeKind::Put,
                key: Key::parse(format!("k{revision}-{i}")).unwrap(),
                content_type: "text/plain".to_owned(),
                value: bytes::Bytes::from_static(b"value"),
            })
            .collect();
        ChangeSet::new(revision, Timestamp::now(), changes)
    }

    /// Writes three entries to the project's log: sets 1 and 2 of two
    /// changes each, then sets 3 and 4 (two and three changes) as one entry
    /// keyed 4. Answers each entry's stored size.
    fn three_entries(txn: &redb::WriteTransaction, project: &str) -> Vec<u64> {
        let mut log = txn.open_table(KeyTables::of(project).changes()).unwrap();
        let entries = [
            encode_changes(project, &[&set(1, 2)]).unwrap(),
            encode_changes(project, &[&set(2, 2)]).unwrap(),
            encode_changes(project, &[&set(3, 2), &set(4, 3)]).unwrap(),
        ];
        [1, 2, 4]
            .into_iter()
            .zip(&entries)
            .map(|(revision, entry)| {
                log.insert(revision, entry.as_slice()).unwrap();
                entry.len() as u64
            })
            .collect()
    }

    fn kept(txn: &redb::WriteTransaction, project: &str) -> Vec<u64> {
        let log = txn.open_table(KeyTables::of(project).changes()).unwrap();
        log.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    /// Figures that count more changes than the log holds trim it down to
    /// its newest entry, as the limits say, and are then that entry's (of
    /// two sets); exact figures due by their bytes are trimmed to the floor
    /// and stay exact.
    #[test]
    fn figures_that_count_too_many_changes_are_set_right_by_a_trim() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();

        // Nine changes in three entries, counted as 300.
        let sizes = three_entries(&txn, "p");
        let mut record = HistoryRecord {
            changes: 300,
            bytes: sizes.iter().sum(),
            ..HistoryRecord::default()
        };
        let limits = HistoryLimits {
            max_changes: 100,
            ..HistoryLimits::default()
        };
        let feed = Feed::default();
        trim(&txn, &KeyTables::of("p"), &mut record, &limits, &feed).unwrap();
        assert_eq!(kept(&txn, "p"), vec![4]);
        assert_eq!((record.changes, record.bytes), (5, sizes[2]));
        assert_eq!((record.compacted, feed.compacted()), (2, 2));

        // Exact figures over the byte limit, with a floor that the last two
        // entries fit under: only the first entry goes.
        let sizes = three_entries(&txn, "q");
        let mut record = HistoryRecord {
            changes: 9,
            bytes: sizes.iter().sum(),
            oldest: Some(Timestamp::now()),
            ..HistoryRecord::default()
        };
        let kept_bytes = sizes[1] + sizes[2];
        let limits = HistoryLimits {
            max_bytes: kept_bytes * 17 / 16 + 16,
            ..HistoryLimits::default()
        };
        assert!(record.bytes > limits.max_bytes, "the trim is due");
        trim(
            &txn,
            &KeyTables::of("q"),
            &mut record,
            &limits,
            &Feed::default(),
        )
        .unwrap();
        assert_eq!(kept(&txn, "q"), vec![2, 4]);
        assert_eq!((record.changes, record.bytes), (7, kept_bytes));
        assert_eq!(record.compacted, 1);
    }
}
