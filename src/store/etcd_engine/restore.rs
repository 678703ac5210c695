//! `kvs restore --etcd-endpoints`: a backup written into an etcd cluster
//! under the key prefix, in the layout a node reads ([`layout`]), so that
//! nodes started on it serve it. The nodes are stopped meanwhile: nothing
//! here makes a running node notice a project it did not create.
//!
//! Records are put in batches, each one etcd transaction within the
//! cluster's limits (128 ops, `--max-request-bytes`). Projects go first, in
//! transactions of their own: a project's incarnation is the revision that
//! created its record, and a key written before it would not count.
//! Versions cannot be kept (a key's version is the etcd revision that wrote
//! it): every key gets a new one. A key whose expiry has passed when the
//! restore starts is skipped (the sweep would only remove it); a key with
//! an expiry gets its expiry index entry, so that it expires on time.
//!
//! Unlike the embedded restore, records are live as they are written: the
//! caller checks the whole backup first ([`SizeCheck`]), and a restore that
//! fails midway removes what it wrote ([`EtcdRestorer::abandon`]).

use std::collections::HashSet;

use etcd_client::{DeleteOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::layout::{self, Layout, range_end};
use super::write::TXN_OVERHEAD;
use super::{EtcdSettings, members, send_on};
use crate::domain::{ImportedDigest, ProjectId, Timestamp, TokenRecord};
use crate::store::{Entry, ProjectDump, Restore, StoreError};

/// The most ops in one transaction: etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// What one op adds to a transaction beside its name and value.
const OP_OVERHEAD: u64 = 32;

/// Writes a backup into etcd under the prefix (see the module's text).
pub struct EtcdRestorer {
    runtime: tokio::runtime::Runtime,
    kv: KvClient,
    layout: Layout,
    max_request_bytes: u64,
    /// When the restore started: keys expired by then are skipped.
    now: Timestamp,
    /// The ops of the next transaction, and their size.
    ops: Vec<TxnOp>,
    bytes: u64,
    /// Whether `ops` holds a project's record (its keys wait until it is
    /// written).
    holds_projects: bool,
    /// The projects restored so far.
    projects: HashSet<ProjectId>,
    /// The cluster's revision as last answered: a restored project's
    /// `created_revision`, as a node's own creation would set it.
    revision: i64,
    /// Keys skipped because their expiry had passed.
    expired: u64,
    /// Whether anything was written that [`EtcdRestorer::abandon`] should
    /// remove.
    wrote: bool,
}

impl EtcdRestorer {
    /// Connects to the cluster (blocking: the restorer runs its own runtime).
    pub fn connect(settings: &EtcdSettings) -> Result<EtcdRestorer, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kvs-restore")
            .enable_all()
            .build()
            .map_err(StoreError::internal)?;
        let options = super::connect_options(settings)?;
        let members = runtime.block_on(members::Members::connect(&settings.endpoints, options))?;
        Ok(EtcdRestorer {
            kv: members.current().kv.clone(),
            runtime,
            layout: Layout::new(&settings.prefix),
            max_request_bytes: settings.max_request_bytes,
            now: Timestamp::now(),
            ops: Vec::new(),
            bytes: TXN_OVERHEAD,
            holds_projects: false,
            projects: HashSet::new(),
            revision: 0,
            expired: 0,
            wrote: false,
        })
    }

    /// How many etcd keys the prefix holds now.
    pub fn occupied(&mut self) -> Result<u64, StoreError> {
        let prefix = self.layout.all();
        let options = GetOptions::new()
            .with_range(range_end(&prefix))
            .with_count_only();
        let response = self
            .transact(Txn::new().and_then([TxnOp::get(prefix, Some(options))]))
            .map_err(|error| StoreError::internal(format!("etcd did not answer: {error}")))?;
        match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => Ok(get.count().max(0) as u64),
            _ => Err(StoreError::internal("etcd answered another read")),
        }
    }

    /// Deletes everything under the prefix (`--force`, and a failed restore).
    pub fn clear(&mut self) -> Result<(), StoreError> {
        let prefix = self.layout.all();
        let options = DeleteOptions::new().with_range(range_end(&prefix));
        self.transact(Txn::new().and_then([TxnOp::delete(prefix, Some(options))]))
            .map_err(write_error)?;
        self.ops.clear();
        self.bytes = TXN_OVERHEAD;
        self.holds_projects = false;
        self.wrote = false;
        Ok(())
    }

    /// Sends `txn` and waits for its answer, keeping the revision it read.
    fn transact(&mut self, txn: Txn) -> Result<TxnResponse, etcd_client::Error> {
        let response = self.runtime.block_on(send_on(&self.kv, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        }))?;
        self.revision = response.header().map_or(self.revision, |h| h.revision());
        Ok(response)
    }

    /// After a failure: removes what this restore wrote. `Ok(true)` when
    /// the prefix is empty again, `Ok(false)` when nothing had been written.
    pub fn abandon(&mut self) -> Result<bool, StoreError> {
        if !self.wrote {
            return Ok(false);
        }
        self.clear().map(|()| true)
    }

    /// Sends what is left: the backup is written whole (the revision of the
    /// backup is not carried over: etcd issues its own).
    pub fn complete(&mut self) -> Result<(), StoreError> {
        self.send()?;
        // Nothing to remove on drop.
        self.wrote = false;
        Ok(())
    }

    /// Keys skipped because their expiry had passed when the restore began.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// The checks a first pass over the backup makes, so that a key too
    /// large for the cluster is refused before anything is written.
    pub fn size_check(&self) -> SizeCheck {
        SizeCheck {
            layout: self.layout.clone(),
            max_request_bytes: self.max_request_bytes,
            now: self.now,
        }
    }

    /// Adds `ops` (each with the bytes of its name and value) to the batch,
    /// all in one transaction: the batch is sent first if they would take it
    /// over etcd's limits.
    fn push(&mut self, ops: Vec<(TxnOp, u64)>) -> Result<(), StoreError> {
        let size: u64 = ops.iter().map(|(_, size)| size + OP_OVERHEAD).sum();
        if self.ops.len() + ops.len() > MAX_TXN_OPS || self.bytes + size > self.max_request_bytes {
            self.send()?;
        }
        self.bytes += size;
        self.ops.extend(ops.into_iter().map(|(op, _)| op));
        Ok(())
    }

    /// Sends the batch as one transaction.
    fn send(&mut self) -> Result<(), StoreError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let txn = Txn::new().and_then(std::mem::take(&mut self.ops));
        self.bytes = TXN_OVERHEAD;
        self.holds_projects = false;
        // From here on, a failure may have left records behind.
        self.wrote = true;
        self.transact(txn).map_err(write_error)?;
        Ok(())
    }
}

impl Drop for EtcdRestorer {
    /// A restore dropped before its end (a panic) removes what it wrote, as
    /// the embedded one does.
    fn drop(&mut self) {
        if self.wrote {
            let _ = self.clear();
        }
    }
}

/// An etcd error on a write of the restore.
fn write_error(error: etcd_client::Error) -> StoreError {
    StoreError::internal(format!("etcd refused or failed a write: {error}"))
}

impl Restore for EtcdRestorer {
    fn project(&mut self, dump: &ProjectDump) -> Result<(), StoreError> {
        let mut settings = dump.settings.clone();
        // The revisions of the backed-up server mean nothing here.
        settings.created_revision = self.revision.max(0) as u64;
        let name = self.layout.project(settings.id.as_str());
        let bytes = layout::encode_project(&settings)?;
        let mut ops = Vec::new();
        if self.projects.is_empty() {
            // As every catalog write does (a node compares it).
            let generation = self.layout.generation();
            ops.push((
                TxnOp::put(generation.clone(), "", None),
                generation.len() as u64,
            ));
        }
        let size = (name.len() + bytes.len()) as u64;
        ops.push((TxnOp::put(name, bytes, None), size));
        self.push(ops)?;
        self.holds_projects = true;
        self.projects.insert(settings.id);
        Ok(())
    }

    fn token(
        &mut self,
        record: &TokenRecord,
        imported: Option<&ImportedDigest>,
    ) -> Result<(), StoreError> {
        let name = self.layout.token(record.id.as_str());
        let bytes = layout::encode_token(record)?;
        let size = (name.len() + bytes.len()) as u64;
        let mut ops = vec![(TxnOp::put(name, bytes, None), size)];
        if let Some(digest) = imported {
            let name = self.layout.imported(record.id.as_str());
            let size = (name.len() + digest.as_str().len()) as u64;
            ops.push((TxnOp::put(name, digest.as_str(), None), size));
        }
        self.push(ops)
    }

    fn key(&mut self, project: &ProjectId, entry: &Entry) -> Result<(), StoreError> {
        if !self.projects.contains(project) {
            return Err(StoreError::internal(format!(
                "a key of project {project}, which the backup does not hold"
            )));
        }
        let meta = &entry.meta;
        if meta.expires_at.is_some_and(|at| at <= self.now) {
            self.expired += 1;
            return Ok(());
        }
        if self.holds_projects {
            self.send()?;
        }
        let (name, bytes) = key_record(&self.layout, self.max_request_bytes, project, entry)?;
        let size = (name.len() + bytes.len()) as u64;
        let mut ops = vec![(TxnOp::put(name, bytes, None), size)];
        if let Some(at) = meta.expires_at {
            let index = self.layout.expiry(at, project.as_str(), meta.key.as_str());
            ops.push((TxnOp::put(index.clone(), "", None), index.len() as u64));
        }
        self.push(ops)
    }

    fn finish(mut self: Box<Self>, _revision: u64) -> Result<(), StoreError> {
        self.complete()
    }
}

/// A key's etcd name and record; `ClusterLimit` when it cannot be written
/// in one request (the same sum the write path refuses with 413).
fn key_record(
    layout: &Layout,
    max_request_bytes: u64,
    project: &ProjectId,
    entry: &Entry,
) -> Result<(String, Vec<u8>), StoreError> {
    let meta = &entry.meta;
    let name = layout.key(project.as_str(), meta.key.as_str());
    let bytes = layout::encode_key(project.as_str(), meta, &entry.value)?;
    if TXN_OVERHEAD + (name.len() + bytes.len()) as u64 > max_request_bytes {
        return Err(StoreError::ClusterLimit {
            limit: max_request_bytes,
        });
    }
    Ok((name, bytes))
}

/// The first pass of a restore into etcd: every key must fit in one etcd
/// request. Writes nothing.
pub struct SizeCheck {
    layout: Layout,
    max_request_bytes: u64,
    /// Keys expired by then are skipped, as the restore skips them.
    now: Timestamp,
}

impl Restore for SizeCheck {
    fn project(&mut self, _: &ProjectDump) -> Result<(), StoreError> {
        Ok(())
    }

    fn token(&mut self, _: &TokenRecord, _: Option<&ImportedDigest>) -> Result<(), StoreError> {
        Ok(())
    }

    fn key(&mut self, project: &ProjectId, entry: &Entry) -> Result<(), StoreError> {
        if entry.meta.expires_at.is_some_and(|at| at <= self.now) {
            return Ok(());
        }
        key_record(&self.layout, self.max_request_bytes, project, entry).map(|_| ())
    }

    fn finish(self: Box<Self>, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
}
