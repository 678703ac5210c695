//! One batch: the write transaction of each database, begun when first
//! needed, what the batch's requests changed so far, and its commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use redb::WriteTransaction;

use super::super::Shared;
use super::super::codec::{self, HistoryRecord, StatsRecord, storage_error};
use super::super::deferred_sync;
use super::super::wal::{Appended, Logged, Wal};
use super::tables::{open_txn, put_record};
use crate::domain::{ProjectId, StorageMode};
use crate::store::publish::{ProjectFigures, Publication};
use crate::store::{Catalog, ChangeSet, Figures, HistoryLimits, Project, StoreError};

/// What a committed batch leaves for the next one.
pub(super) struct Committed {
    pub revision: u64,
    pub reserved: u64,
    /// Change-log figures the batch changed (`None`: the project is gone).
    pub history: HashMap<ProjectId, Option<HistoryRecord>>,
    /// The disk database's transaction, left open with the writes held in
    /// it (see [`super::super::held`]); `None` once committed.
    pub open: Option<Open>,
}

/// The disk database's write transaction while it holds writes that the
/// log made durable and redb has not committed, and how much the feeds
/// hold of them.
pub(super) struct Open {
    pub txn: WriteTransaction,
    pub sets: usize,
    pub bytes: usize,
}

/// The most change sets, and their bytes, that the writes held in the open
/// transaction may carry: well within what a project's feed keeps in memory
/// (`feed::TAIL_SETS`, `feed::TAIL_BYTES`), so that a watch behind the feed
/// reads the change log up to the held writes and the feed from there.
const HOLD_SETS: usize = 256;
const HOLD_BYTES: usize = 128 << 10;

/// The most writes a batch may carry to be held. A commit costs about the
/// same whatever a batch writes, so one per batch matters when batches are
/// small (one client writing after another); a larger batch commits, and
/// with it what the transaction held. Holding every batch gave no more PUTs
/// at 64 connections, 7% fewer transactions and a longer p99: each commit
/// of many held batches holds up the batches behind it for longer
/// (bench/README.md, "Held writes").
pub(super) const HOLD_WRITES: usize = 8;

/// A project's figures as the batch has left them, with the incarnation
/// they belong to and the database that holds them.
#[derive(Clone, Copy)]
pub(super) struct Written {
    pub incarnation: u64,
    pub record: StatsRecord,
    pub storage: StorageMode,
}

pub(super) struct Batch<'a> {
    pub shared: &'a Shared,
    pub disk: WriteTransaction,
    /// Whether `disk` holds writes of batches before this one.
    continued: Option<(usize, usize)>,
    pub memory: Option<WriteTransaction>,
    base: Arc<Catalog>,
    /// The catalog as this batch changed it, if it did.
    catalog: Option<Catalog>,
    /// Figures of the projects this batch wrote in.
    pub stats: HashMap<ProjectId, Written>,
    pub revision: u64,
    pub reserved: u64,
    pub disk_dirty: bool,
    pub memory_dirty: bool,
    /// Change-log figures as committed, and as this batch changed them.
    pub base_history: &'a HashMap<ProjectId, HistoryRecord>,
    pub history: HashMap<ProjectId, Option<HistoryRecord>>,
    pub limits: HistoryLimits,
    /// Change sets to publish after the commit, in revision order, with the
    /// incarnation of the project they were written in.
    pub sets: Vec<(ProjectId, u64, ChangeSet)>,
    /// Keys this batch removed by their expiry, counted once it is published.
    pub expired: u64,
    /// Projects being swept (see [`super::sweep`]): the expiry sweep leaves
    /// their keys alone.
    pub paused: Vec<ProjectId>,
    /// The key/value writes to disk projects, as the write-ahead log keeps
    /// them.
    pub wal: Vec<Logged>,
    /// Whether the batch changed the disk database in a way the log does
    /// not carry (the catalog, a reservation, an expiry, a sweep, a trim):
    /// then it commits durably and waits for the sync, as a checkpoint
    /// after which the log starts again.
    pub unlogged: bool,
    /// A replay of the log: committed without a sync and not logged again
    /// (the log holds it until the next checkpoint).
    pub replay: bool,
    /// Its change sets go to the change log only: the feeds have them.
    pub quiet: bool,
    /// The disk is full (see `Writer::still_full`): the server-wide trim
    /// of the change logs leaves disk projects' alone.
    pub disk_full: bool,
    /// Each key the batch wrote in a disk project, with its new entry: for
    /// readers, if the batch is held (see [`super::super::held`]).
    pub held_keys: Vec<(String, String, Option<crate::store::Entry>)>,
}

impl<'a> Batch<'a> {
    /// A batch in `open`, the disk database's transaction left open by the
    /// batches before, or in a new one.
    pub fn begin(
        shared: &'a Shared,
        open: Option<Open>,
        revision: u64,
        reserved: u64,
        base_history: &'a HashMap<ProjectId, HistoryRecord>,
        limits: HistoryLimits,
    ) -> Result<Batch<'a>, StoreError> {
        let (disk, continued) = match open {
            Some(open) => (open.txn, Some((open.sets, open.bytes))),
            None => (shared.begin_write(StorageMode::Disk)?, None),
        };
        Ok(Batch {
            base_history,
            history: HashMap::new(),
            limits,
            sets: Vec::new(),
            expired: 0,
            paused: Vec::new(),
            wal: Vec::new(),
            unlogged: false,
            replay: false,
            quiet: false,
            disk_full: false,
            held_keys: Vec::new(),
            shared,
            disk,
            continued,
            memory: None,
            base: shared.view.catalog(),
            catalog: None,
            stats: HashMap::new(),
            revision,
            reserved,
            disk_dirty: false,
            memory_dirty: false,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        self.catalog.as_ref().unwrap_or(&self.base)
    }

    pub fn catalog_mut(&mut self) -> &mut Catalog {
        self.dirty(StorageMode::Disk);
        self.catalog.get_or_insert_with(|| (*self.base).clone())
    }

    /// The batch's transaction of a database, begun when first needed.
    pub fn txn(&mut self, storage: StorageMode) -> Result<&WriteTransaction, StoreError> {
        if storage == StorageMode::Memory && self.memory.is_none() {
            self.memory = Some(self.shared.begin_write(StorageMode::Memory)?);
        }
        open_txn(&self.disk, &self.memory, storage)
    }

    /// Marks a database as changed by this batch (on disk, in a way that
    /// the write-ahead log does not carry).
    pub fn dirty(&mut self, storage: StorageMode) {
        match storage {
            StorageMode::Disk => {
                self.disk_dirty = true;
                self.unlogged = true;
            }
            StorageMode::Memory => self.memory_dirty = true,
        }
    }

    /// Takes the next revision for a key/value write to a disk project
    /// that the write-ahead log carries ([`Batch::wal`]).
    pub fn next_logged_revision(&mut self) -> Result<u64, StoreError> {
        self.revision = next(self.revision)?;
        self.disk_dirty = true;
        Ok(self.revision)
    }

    /// Takes the next revision for a write in a project of `storage`; a
    /// memory project's revision is reserved on disk first.
    pub fn next_revision(&mut self, storage: StorageMode) -> Result<u64, StoreError> {
        self.revision = next(self.revision)?;
        if storage == StorageMode::Memory && self.revision > self.reserved {
            self.reserved = self.revision.saturating_add(super::RESERVE_STEP);
            self.dirty(StorageMode::Disk);
        }
        self.dirty(storage);
        Ok(self.revision)
    }

    /// The project's figures as this batch has left them.
    pub fn figures(&self, project: &Project) -> StatsRecord {
        match self.stats.get(&project.settings.id) {
            Some(written) if written.incarnation == project.incarnation => written.record,
            _ => StatsRecord {
                keys: project.stats.keys(),
                bytes: project.stats.bytes(),
                revision: project.stats.revision(),
            },
        }
    }

    /// Records the project's figures after a write.
    pub fn set_figures(&mut self, project: &Project, figures: Figures, revision: u64) {
        let record = StatsRecord {
            keys: figures.keys,
            bytes: figures.bytes,
            revision,
        };
        let written = Written {
            incarnation: project.incarnation,
            record,
            storage: project.settings.storage,
        };
        self.stats.insert(project.settings.id.clone(), written);
    }

    /// Whether the disk transaction holds writes of batches before this one:
    /// if this batch fails, they are gone from redb (the log has them).
    pub fn is_continued(&self) -> bool {
        self.continued.is_some()
    }

    /// Writes the figures, commits both databases (disk first: it holds the
    /// revision reservation that memory writes rely on) and publishes. A
    /// batch that only the log made durable leaves the disk transaction
    /// open, its writes held (see [`super::super::held`]), while what the
    /// open transaction holds stays within [`HOLD_SETS`] and [`HOLD_BYTES`].
    pub fn commit(mut self, wal: &mut Wal) -> Result<Committed, StoreError> {
        self.write_logs()?;
        let live: Vec<(ProjectId, Written)> = self
            .stats
            .iter()
            .filter(|(id, written)| self.catalog().is_current(id, written.incarnation))
            .map(|(id, written)| (id.clone(), *written))
            .collect();
        for (id, written) in &live {
            put_record(
                self.txn(written.storage)?,
                codec::STATS,
                id.as_str(),
                &written.record,
            )?;
        }
        if self.disk_dirty {
            let mut server = self.disk.open_table(codec::SERVER).map_err(storage_error)?;
            server
                .insert(codec::REVISION, self.revision)
                .map_err(storage_error)?;
            server
                .insert(codec::RESERVED, self.reserved)
                .map_err(storage_error)?;
        }
        // Readers switch to a new snapshot before the revision is published.
        let mut checkpoint = false;
        let mut open = None;
        let (held_sets, held_bytes) = self.continued.unwrap_or((0, 0));
        let sets = held_sets + self.sets.len();
        let bytes = held_bytes
            + self
                .sets
                .iter()
                .map(|(_, _, set)| set.weight())
                .sum::<usize>();
        if self.disk_dirty {
            // The log's sync, or the durable commit, is where the fsync
            // happens: its duration is what a durable write waits for. The
            // log is written first, so that no reader sees a write before
            // it is durable.
            let started = Instant::now();
            let appended = if self.replay {
                Appended::Logged
            } else if self.unlogged {
                Appended::Not
            } else {
                wal.append(&self.wal)?
            };
            let holds = appended == Appended::Logged
                && !self.replay
                && self.wal.len() <= HOLD_WRITES
                && sets <= HOLD_SETS
                && bytes <= HOLD_BYTES;
            if holds {
                self.shared.held.add(std::mem::take(&mut self.held_keys));
                open = Some(Open {
                    txn: self.disk,
                    sets,
                    bytes,
                });
            } else {
                if appended == Appended::Logged {
                    self.disk
                        .set_durability(redb::Durability::None)
                        .map_err(storage_error)?;
                    self.disk.set_quick_repair(false);
                }
                // A due checkpoint: the log has the batch, so the durable
                // commit's sync need not be waited for. Once it is done, the
                // log may go back to the half it left.
                let disk = self.disk;
                let mut deferred = None;
                let committed = release(self.shared, || {
                    if appended == Appended::Checkpoint {
                        deferred_sync::deferring_tracked(|| disk.commit())
                            .map(|((), syncs)| deferred = syncs)
                    } else {
                        disk.commit()
                    }
                });
                if let Err(error) = committed {
                    if appended != Appended::Not && !self.replay {
                        wal.retract()?;
                    }
                    return Err(error);
                }
                if let Some(syncs) = deferred {
                    let written = syncs.written();
                    wal.deferred(Box::new(move || syncs.synced()), written);
                }
                checkpoint = appended == Appended::Not;
            }
            metrics::histogram!("kvs_fsync_seconds").record(started.elapsed().as_secs_f64());
        } else if let Some((sets, bytes)) = self.continued {
            // Nothing new on disk: the held writes stay held.
            open = Some(Open {
                txn: self.disk,
                sets,
                bytes,
            });
        } else {
            self.disk.abort().map_err(storage_error)?;
        }
        if let Some(memory) = self.memory {
            memory.commit().map_err(storage_error)?;
            self.shared.memory_reads.invalidate();
        }
        let figures = live
            .into_iter()
            .map(|(id, written)| {
                let figures = ProjectFigures {
                    figures: Figures {
                        keys: written.record.keys,
                        bytes: written.record.bytes,
                    },
                    revision: written.record.revision,
                };
                (id, written.incarnation, figures)
            })
            .collect();
        self.shared.view.publish(Publication {
            catalog: self.catalog,
            figures,
            sets: if self.quiet { Vec::new() } else { self.sets },
            revision: self.revision,
        });
        if self.expired > 0 {
            metrics::counter!("kvs_expired_keys_total").increment(self.expired);
        }
        if checkpoint {
            wal.checkpointed();
        }
        Ok(Committed {
            revision: self.revision,
            reserved: self.reserved,
            history: self.history,
            open,
        })
    }
}

/// Commits the disk database's transaction with `commit` and lets readers
/// see it: the epoch of the held writes moves first, the read snapshot is
/// invalidated after, and only then are the held writes let go (see
/// [`super::super::held`]).
pub(super) fn release(
    shared: &Shared,
    commit: impl FnOnce() -> Result<(), redb::CommitError>,
) -> Result<(), StoreError> {
    let held = !shared.held.is_empty();
    if held {
        shared.held.committing();
    }
    commit().map_err(storage_error)?;
    shared.disk_reads.invalidate();
    if held {
        shared.held.clear();
    }
    Ok(())
}

/// The revision after `revision`. Past the last a u64 holds it would wrap
/// to 0 and hand out versions again: the write is refused instead.
pub fn next(revision: u64) -> Result<u64, StoreError> {
    revision.checked_add(1).ok_or_else(|| {
        StoreError::internal(format!(
            "the server's revision is {revision}, the largest it can hold: no write can take \
             a new one (a version is never handed out twice)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::super::RedbStore;
    use super::super::testing::{put, store_with_project, write};
    use super::*;
    use crate::store::Store;

    /// A checkpoint due after 100 ms is deferred: the log goes on after it
    /// (what it held is still read back), and only a checkpoint that waits
    /// for its sync, as at a clean stop, starts it again.
    #[tokio::test]
    async fn a_deferred_checkpoint_leaves_the_log_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        let put = |key: &str| write(&id, vec![put(key)]);
        let logged = |dir: &std::path::Path| {
            let (_, writes) = Wal::open(dir, 0).unwrap();
            let keys: Vec<String> = writes
                .iter()
                .flat_map(|w| w.changes.iter().map(|(key, _)| key.clone()))
                .collect();
            keys
        };
        store.write_kv(put("a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        store.write_kv(put("b")).await.unwrap();
        store.write_kv(put("c")).await.unwrap();
        assert_eq!(logged(dir.path()), ["a", "b", "c"]);
        store.close().await;
        drop(store);
        // A clean stop is a waited checkpoint: the next write goes at the
        // log's beginning, over what it held.
        let store = RedbStore::open(dir.path()).unwrap();
        store.write_kv(put("d")).await.unwrap();
        assert_eq!(logged(dir.path()), ["d"]);
        store.close().await;
    }

    /// A store whose revision has reached the largest a u64 holds (no
    /// restore makes one now, but an older release's may have): the write
    /// that takes the last revision is stored, and the next one is refused
    /// with a message, never given revision 0 (a version handed out
    /// before).
    #[tokio::test]
    async fn the_revision_never_wraps_a_write_past_the_last_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_project(dir.path()).await;
        store.close().await;
        drop(store);
        {
            let database = redb::Database::open(dir.path().join("kvs.redb")).unwrap();
            let txn = database.begin_write().unwrap();
            {
                let mut server = txn.open_table(codec::SERVER).unwrap();
                server.insert(codec::REVISION, u64::MAX - 1).unwrap();
                server.insert(codec::RESERVED, u64::MAX - 1).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let last = store.write_kv(write(&id, vec![put("a")])).await.unwrap();
        assert_eq!(last.revision, u64::MAX);
        let refused = store.write_kv(write(&id, vec![put("b")])).await;
        match refused {
            Err(StoreError::Internal(message)) => {
                assert!(message.contains("revision"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // The write stored before is still there, at its revision.
        let key = crate::domain::Key::parse("a").unwrap();
        let read = store.get(&id, &key, false).await.unwrap();
        assert_eq!(read.value.map(|e| e.meta.version), Some(u64::MAX));
        store.close().await;
    }
}
