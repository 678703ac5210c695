//! Deletes by large prefixes, in chunks, so that no other project's write
//! waits behind one.
//!
//! A delete by prefix that covers more than [`CHUNK`] keys is not judged and
//! applied in one transaction (half a million keys took seconds, and every
//! write of every project waited). It becomes a [`Sweep`] that the writer
//! moves on by one chunk in each batch, beside the batch's other writes:
//!
//! 1. **Judging**: the keys under the prefix are read a chunk at a time
//!    ([`crate::store::kv::PrefixDelete`] applies the delete's rule). Then,
//!    in one batch, the delete takes its revision: the project's figures,
//!    its change set (one delete per key, as any delete by prefix) and a
//!    [`SweepRecord`] are committed, and the client is answered.
//! 2. **Removing**: the keys are removed a chunk at a time; the last chunk
//!    removes the record. Readers treat the keys that the record covers as
//!    gone (see `snapshot.rs`), so the delete is atomic for them from its
//!    commit on; a restart resumes the removal from the record.
//!
//! Throughout, the project's own writes (and the deletion or move of the
//! project) wait, in order, until the sweep is over, and the expiry sweep
//! leaves its keys alone: what the sweep reads does not change under it.

use redb::ReadableTable;

use super::super::codec::{self, KeyTables, SweepRecord, decode_entry, expiry_key, storage_error};
use super::batch::Batch;
use super::tables::{open_txn, put_record, remove_record};
use super::{Answer, Reply};
use crate::domain::{Key, Prefix, ProjectId, StorageMode, Timestamp};
use crate::store::kv::PrefixDelete;
use crate::store::{Figures, KvCommit, KvOp, KvWrite, Project, StoreError};

/// Keys read or removed per batch: a few milliseconds of the writer's time.
pub(super) const CHUNK: usize = 4096;

/// A delete by a large prefix in progress.
pub(in crate::store::redb_engine) struct Sweep {
    pub project: ProjectId,
    incarnation: u64,
    pub storage: StorageMode,
    prefix: Prefix,
    /// The last key read, in either phase.
    after: Option<String>,
    phase: Phase,
}

enum Phase {
    /// Reading the keys the delete takes, before it commits.
    Judging {
        reply: Option<Reply<KvCommit>>,
        judge: PrefixDelete,
    },
    /// Committed: removing the keys that `record` covers.
    Removing { record: SweepRecord },
    /// Nothing left to do.
    Over,
}

/// A removing sweep's state before a batch.
pub(super) struct Checkpoint(SweepRecord, Option<String>);

/// What one step of a sweep did in a batch.
pub(super) enum Step {
    /// More to do in later batches.
    Going,
    /// The delete is answered with this batch (its answer is sent after
    /// the commit); the sweep goes on if its phase is not over.
    Answered(Answer),
    /// Over with this batch.
    Done,
}

impl Sweep {
    /// A sweep left by a process that stopped while removing, from its
    /// record.
    pub(in crate::store::redb_engine) fn resume(
        project: ProjectId,
        incarnation: u64,
        storage: StorageMode,
        record: SweepRecord,
    ) -> Sweep {
        Sweep {
            project,
            incarnation,
            storage,
            prefix: Prefix::from_stored(&record.prefix),
            after: None,
            phase: Phase::Removing { record },
        }
    }

    /// Whether nothing is left to do.
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Over)
    }

    /// Ends a sweep that cannot go on (a record that cannot be read): a
    /// judging one answers its client with the error; a removing one leaves
    /// its record, so that readers still treat its keys as gone.
    pub(super) fn fail(&mut self, error: StoreError) -> Option<Answer> {
        match std::mem::replace(&mut self.phase, Phase::Over) {
            Phase::Judging {
                reply: Some(reply), ..
            } => Some(Answer::Kv(reply, Err(error))),
            _ => None,
        }
    }

    /// Where a removal stood, to return to if the batch fails (a judging
    /// sweep only reads: what it read stays true).
    pub(super) fn checkpoint(&self) -> Option<Checkpoint> {
        match &self.phase {
            Phase::Removing { record } => Some(Checkpoint(record.clone(), self.after.clone())),
            _ => None,
        }
    }

    pub(super) fn restore(&mut self, checkpoint: Option<Checkpoint>) {
        if let Some(Checkpoint(record, after)) = checkpoint {
            self.phase = Phase::Removing { record };
            self.after = after;
        }
    }
}

/// The project and prefix of a write that is one delete by prefix alone.
pub(super) fn prefix_delete(write: &KvWrite) -> Option<&Prefix> {
    match (write.checks.is_empty(), write.ops.as_slice()) {
        (true, [KvOp::DeletePrefix { prefix }]) => Some(prefix),
        _ => None,
    }
}

impl Batch<'_> {
    /// A sweep for `write` when it is a delete by prefix of more than
    /// [`CHUNK`] keys; otherwise the write and its reply come back, to be
    /// applied at once.
    pub fn sweep_for(
        &mut self,
        write: KvWrite,
        reply: Reply<KvCommit>,
    ) -> Result<Sweep, (KvWrite, Reply<KvCommit>)> {
        let Some(prefix) = prefix_delete(&write).cloned() else {
            return Err((write, reply));
        };
        // Meant for another incarnation, or by a caller whose right is
        // gone: applied as a plain write, which refuses it.
        let now = Timestamp::now();
        let Some(project) = self
            .catalog()
            .project(&write.project)
            .filter(|project| write.judge(self.catalog(), project, now).is_ok())
            .cloned()
        else {
            return Err((write, reply));
        };
        let storage = project.settings.storage;
        let large = self.count_over(storage, &KeyTables::of(write.project.as_str()), &prefix);
        if !matches!(large, Ok(true)) {
            return Err((write, reply));
        }
        let record = self.figures(&project);
        let figures = Figures {
            keys: record.keys,
            bytes: record.bytes,
        };
        tracing::info!(
            project = %write.project,
            prefix = prefix.as_str(),
            "a delete by prefix of more than {CHUNK} keys runs in chunks"
        );
        Ok(Sweep {
            project: write.project,
            incarnation: project.incarnation,
            storage,
            prefix,
            after: None,
            phase: Phase::Judging {
                reply: Some(reply),
                judge: PrefixDelete::new(figures, Timestamp::now()),
            },
        })
    }

    /// Whether more than [`CHUNK`] keys lie under the prefix.
    fn count_over(
        &mut self,
        storage: StorageMode,
        tables: &KeyTables,
        prefix: &Prefix,
    ) -> Result<bool, StoreError> {
        self.txn(storage)?;
        let txn = open_txn(&self.disk, &self.memory, storage)?;
        let keys = match txn.open_table(tables.keys()) {
            Ok(keys) => keys,
            Err(error) => return Err(storage_error(error)),
        };
        let mut count = 0;
        for item in keys.range(prefix.as_str()..).map_err(storage_error)? {
            let (key, _) = item.map_err(storage_error)?;
            if !prefix.covers(key.value()) {
                break;
            }
            count += 1;
            if count > CHUNK {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves a sweep on by one chunk.
    pub fn sweep_step(&mut self, sweep: &mut Sweep) -> Result<Step, StoreError> {
        let project = self
            .catalog()
            .project(&sweep.project)
            .filter(|p| p.incarnation == sweep.incarnation)
            .cloned();
        let Some(project) = project else {
            // The project is gone: so are its tables.
            return Ok(match std::mem::replace(&mut sweep.phase, Phase::Over) {
                Phase::Judging {
                    reply: Some(reply), ..
                } => Step::Answered(Answer::Kv(reply, Err(StoreError::ProjectNotFound))),
                _ => Step::Done,
            });
        };
        let tables = KeyTables::of(sweep.project.as_str());
        self.txn(sweep.storage)?;
        let txn = open_txn(&self.disk, &self.memory, sweep.storage)?;
        let mut keys = txn.open_table(tables.keys()).map_err(storage_error)?;
        let start = sweep.after.as_deref().unwrap_or(sweep.prefix.as_str());
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut exhausted = true;
        for item in keys.range(start..).map_err(storage_error)? {
            let (key, entry) = item.map_err(storage_error)?;
            let key = key.value();
            if !sweep.prefix.covers(key) {
                break;
            }
            if sweep.after.as_deref() == Some(key) {
                continue;
            }
            if chunk.len() == CHUNK {
                exhausted = false;
                break;
            }
            let record = decode_entry(tables.project, key, entry.value())?.0;
            chunk.push((key.to_owned(), record));
        }
        if let Some((last, _)) = chunk.last() {
            sweep.after = Some(last.clone());
        }
        match &mut sweep.phase {
            Phase::Judging { judge, .. } => {
                for (key, record) in chunk {
                    judge.take(record.into_meta(Key::from_stored(&key)));
                }
                drop(keys);
                if exhausted {
                    self.commit_delete(sweep, &project)
                } else {
                    Ok(Step::Going)
                }
            }
            Phase::Removing { record } => {
                let mut values = None;
                let mut index = None;
                for (key, stored) in &chunk {
                    if !record.covers(key, stored) {
                        continue;
                    }
                    keys.remove(key.as_str()).map_err(storage_error)?;
                    if !stored.inline {
                        if values.is_none() {
                            values = Some(txn.open_table(tables.values()).map_err(storage_error)?);
                        }
                        if let Some(values) = values.as_mut() {
                            values.remove(key.as_str()).map_err(storage_error)?;
                        }
                    }
                    if let Some(at) = stored.expires_at {
                        if index.is_none() {
                            index = Some(txn.open_table(codec::EXPIRY).map_err(storage_error)?);
                        }
                        if let Some(index) = index.as_mut() {
                            let entry = expiry_key(at, tables.project, key);
                            index.remove(entry.as_slice()).map_err(storage_error)?;
                        }
                    }
                }
                drop((keys, values, index));
                if exhausted {
                    remove_record(txn, codec::SWEEPS, sweep.project.as_str())?;
                    sweep.phase = Phase::Over;
                }
                self.dirty(sweep.storage);
                Ok(if exhausted { Step::Done } else { Step::Going })
            }
            Phase::Over => Ok(Step::Done),
        }
    }

    /// The delete takes its revision, once every key under the prefix has
    /// been read: figures, change set and the sweep's record, in this batch.
    fn commit_delete(&mut self, sweep: &mut Sweep, project: &Project) -> Result<Step, StoreError> {
        let Phase::Judging {
            reply: Some(reply),
            judge,
        } = std::mem::replace(&mut sweep.phase, Phase::Over)
        else {
            return Err(StoreError::internal("a sweep committed twice"));
        };
        let at = judge.now();
        let (result, changes, figures) = judge.finish();
        let answer = |revision| KvCommit {
            revision,
            results: vec![result],
        };
        if changes.is_empty() {
            return Ok(Step::Answered(Answer::Kv(reply, Ok(answer(self.revision)))));
        }
        let revision = self.next_revision(sweep.storage)?;
        let record = SweepRecord {
            prefix: sweep.prefix.as_str().to_owned(),
            revision,
            at,
        };
        put_record(
            open_txn(&self.disk, &self.memory, sweep.storage)?,
            codec::SWEEPS,
            sweep.project.as_str(),
            &record,
        )?;
        self.set_figures(project, figures, revision);
        self.log(project, revision, Timestamp::now(), changes);
        sweep.phase = Phase::Removing { record };
        sweep.after = None;
        Ok(Step::Answered(Answer::Kv(reply, Ok(answer(revision)))))
    }
}
