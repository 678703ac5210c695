//! Writes: key/value writes judged by [`kv::evaluate`] over the keys read
//! from etcd, catalog writes judged by [`plan::plan`] over the mirror, each
//! committed as one etcd transaction that compares what it read, and the
//! expiry sweep.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tokio::sync::oneshot;

use super::fetch::{Fetched, Plan, Record};
use super::layout::{self, range_end};
use super::{Inner, RPC_TIMEOUT, SWEEP_EVERY, send};
use crate::domain::{Key, ProjectId, Timestamp};
use crate::store::kv;
use crate::store::{
    Authority, CatalogWrite, Entry, Figures, Grant, KvCommit, KvOp, KvWrite, OpResult, StoreError,
    plan,
};

/// How many times a write whose compares lost is judged again.
const ATTEMPTS: u32 = 64;

/// The version staged keys carry until the commit's revision is known.
const UNCOMMITTED: u64 = u64::MAX;

/// Room for a transaction's framing beside its keys and values.
pub(super) const TXN_OVERHEAD: u64 = 64 << 10;

/// At most how many entries of the expiry index a write at `max_keys`
/// reads to find the project's expired keys that the sweep has yet to
/// remove (the sweep runs every 250 ms, so there are few). Those past it
/// keep holding their slots until the sweep: the quota errs on the side of
/// refusing. Also the most keys then read in one transaction: etcd's
/// default `--max-txn-ops` is 128.
const DUE_READ: i64 = 128;

/// Sends a transaction that changes something. An error after it may have
/// reached the cluster makes its outcome unknown.
async fn commit(inner: &Inner, txn: Txn) -> Result<TxnResponse, StoreError> {
    let sent = send(inner, |mut kv| {
        let txn = txn.clone();
        async move { kv.txn(txn).await }
    });
    match tokio::time::timeout(RPC_TIMEOUT, sent).await {
        Err(_) => Err(StoreError::OutcomeUnknown),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(write_error(inner, error)),
    }
}

fn write_error(inner: &Inner, error: etcd_client::Error) -> StoreError {
    let text = error.to_string();
    if text.contains("request is too large") || text.contains("message larger than max") {
        return StoreError::ClusterLimit {
            limit: inner.max_request_bytes,
        };
    }
    match &error {
        // Refused before it was applied: nothing changed.
        // gRPC codes: 3 invalid argument, 7 permission denied, 8 resource
        // exhausted, 9 failed precondition, 16 unauthenticated.
        etcd_client::Error::GRpcStatus(status)
            if matches!(status.code() as i32, 3 | 7 | 8 | 9 | 16) =>
        {
            tracing::warn!(%error, "etcd refused a write");
            StoreError::Unavailable
        }
        _ => {
            tracing::warn!(%error, "a write to etcd failed in flight");
            StoreError::OutcomeUnknown
        }
    }
}

fn revision_of(response: &TxnResponse) -> u64 {
    response.header().map_or(0, |h| h.revision().max(0) as u64)
}

/// A short pause before a write is judged again, longer each time.
async fn back_off(attempt: u32) {
    let millis = u64::from(attempt.min(20)) * 2 + (Timestamp::now().millis() as u64 % 5);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// Applies a key/value write. A lone `incr` (one op, no checks) joins the
/// increments of its key waiting on this node: see [`incr`].
pub async fn kv(inner: &Arc<Inner>, write: KvWrite) -> Result<KvCommit, StoreError> {
    if let (true, [KvOp::Incr { key, by }]) = (write.checks.is_empty(), write.ops.as_slice()) {
        let slot = (write.project.clone(), write.incarnation, key.clone());
        return incr(inner, slot, write.grant.clone(), *by).await;
    }
    judged(inner, &write).await
}

/// The most increments one etcd transaction combines.
const MAX_COMBINED: usize = 512;

/// One increment waiting for its key's next combined transaction.
pub(super) struct Waiter {
    by: i64,
    /// The right it was made under: a combined write is judged under one.
    grant: Grant,
    reply: oneshot::Sender<Result<KvCommit, StoreError>>,
}

/// The increments waiting on this node, by key: present while a task
/// drains that key's queue.
pub(super) type Waiting = Mutex<HashMap<Slot, Vec<Waiter>>>;

/// A key's queue of increments: its project, the incarnation they were
/// meant for, and the key. Callers of every grant share it, so that one
/// task commits them one write after another instead of their writes
/// losing compares to each other.
pub(super) type Slot = (ProjectId, Option<u64>, Key);

/// Increments of one hot key, combined: read-modify-write rounds against
/// etcd would lose their compares to one another and retry (a few hundred
/// a second on one key). Instead the first increment of a key starts a
/// task that commits whatever increments are waiting as one transaction of
/// several `incr` ops (judged in order: each answers the value after its
/// own), and again while more arrived meanwhile. A transaction whose
/// outcome is unknown answers every one of its increments so, and none is
/// sent again: an increment is never applied twice.
async fn incr(
    inner: &Arc<Inner>,
    slot: Slot,
    grant: Grant,
    by: i64,
) -> Result<KvCommit, StoreError> {
    let (reply, answer) = oneshot::channel();
    let first = {
        let mut waiting = inner
            .incrs
            .lock()
            .map_err(|_| StoreError::internal("the increment queue is poisoned"))?;
        match waiting.get_mut(&slot) {
            // A task drains this key's queue: it takes this one too.
            Some(queue) => {
                queue.push(Waiter { by, grant, reply });
                false
            }
            None => {
                waiting.insert(slot.clone(), vec![Waiter { by, grant, reply }]);
                true
            }
        }
    };
    if first {
        tokio::spawn(drain(inner.clone(), slot));
    }
    // The task ended without an answer only if the engine stopped.
    answer.await.unwrap_or(Err(StoreError::OutcomeUnknown))
}

/// Commits the increments waiting for `slot` until none is left.
async fn drain(inner: Arc<Inner>, slot: Slot) {
    loop {
        let batch = {
            let Ok(mut waiting) = inner.incrs.lock() else {
                return;
            };
            match waiting.get_mut(&slot) {
                Some(queue) if !queue.is_empty() => {
                    let take = queue.len().min(MAX_COMBINED);
                    queue.drain(..take).collect::<Vec<_>>()
                }
                _ => {
                    waiting.remove(&slot);
                    return;
                }
            }
        };
        // One write per grant among them, in the order of their first
        // increment: a write is judged under one caller's right.
        let mut rest = batch;
        while let Some(first) = rest.first() {
            let grant = first.grant.clone();
            let (same, others) = rest.into_iter().partition(|waiter| waiter.grant == grant);
            rest = others;
            combined(&inner, &slot, &grant, same).await;
        }
    }
}

/// Commits `batch` as one write and answers each increment; one that fails
/// on its own (an overflow) is answered and the rest judged again.
async fn combined(inner: &Inner, slot: &Slot, grant: &Grant, mut batch: Vec<Waiter>) {
    while !batch.is_empty() {
        let write = KvWrite {
            project: slot.0.clone(),
            incarnation: slot.1,
            grant: grant.clone(),
            checks: Vec::new(),
            ops: batch
                .iter()
                .map(|waiter| KvOp::Incr {
                    key: slot.2.clone(),
                    by: waiter.by,
                })
                .collect(),
        };
        match judged(inner, &write).await {
            Ok(commit) => {
                for (waiter, result) in batch.drain(..).zip(commit.results) {
                    let _ = waiter.reply.send(Ok(KvCommit {
                        revision: commit.revision,
                        results: vec![result],
                    }));
                }
            }
            Err(StoreError::FailedOp { index, error }) if index < batch.len() => {
                let waiter = batch.remove(index);
                let _ = waiter
                    .reply
                    .send(Err(StoreError::FailedOp { index: 0, error }));
            }
            Err(error) => {
                for waiter in batch.drain(..) {
                    let _ = waiter.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Applies a key/value write, judged again while its compares lose.
async fn judged(inner: &Inner, write: &KvWrite) -> Result<KvCommit, StoreError> {
    for attempt in 0..ATTEMPTS {
        if let Some(commit) = try_kv(inner, write).await? {
            return Ok(commit);
        }
        back_off(attempt).await;
    }
    tracing::warn!(project = %write.project, "a write lost its compares {ATTEMPTS} times");
    Err(StoreError::Unavailable)
}

/// One attempt: `None` when a compare lost (judge again).
async fn try_kv(inner: &Inner, write: &KvWrite) -> Result<Option<KvCommit>, StoreError> {
    let layout = &inner.layout;
    let mirror = inner.mirror()?;
    let id = &write.project;
    let now = Timestamp::now();
    // The caller's right, judged by the catalog the write is judged by; the
    // compares below (the project's record, the token's) hold it to the
    // commit.
    let project = match mirror.catalog.project(id) {
        Some(project) => {
            write.judge(&mirror.catalog, project, now)?;
            project.clone()
        }
        None => return Err(write.refused_without_project(&mirror.catalog, now)),
    };
    let record_revision = mirror.projects.get(id).copied().unwrap_or(0);
    let settings = &project.settings;
    // What the write touches: one read transaction fixes the revision and
    // reads what fits in a page whole; the rest is read at that revision
    // (see `fetch`).
    let plan = Plan::of(write, inner.max_request_bytes);
    let mut reads = plan.first_reads(layout, id);
    let counted = settings.max_keys.is_some();
    if counted {
        let start = layout.keys(id.as_str());
        let options = GetOptions::new()
            .with_range(range_end(start.as_bytes()))
            .with_count_only();
        reads.push(TxnOp::get(start, Some(options)));
        // The expiry index entries due now: expired keys the count holds.
        let options = GetOptions::new()
            .with_range(layout.due(now))
            .with_limit(DUE_READ);
        reads.push(TxnOp::get(layout.expiries(), Some(options)));
    }
    let response = read_txn(inner, reads).await?;
    let read_at = revision_of(&response);
    let mut fetched = Fetched::default();
    let mut answers = response.op_responses().into_iter();
    let Some(seen) = plan
        .take_first(inner, id, &mut answers, read_at as i64, now, &mut fetched)
        .await?
    else {
        // etcd compacted the revision read meanwhile: judge again.
        return Ok(None);
    };
    let prefixes = &plan.prefixes;
    let mut figures = Figures {
        keys: project.stats.keys(),
        bytes: project.stats.bytes(),
    };
    if counted {
        let Some(TxnOpResponse::Get(get)) = answers.next() else {
            return Err(StoreError::internal("etcd answered another read"));
        };
        figures.keys = get.count().max(0) as u64;
        let Some(TxnOpResponse::Get(due)) = answers.next() else {
            return Err(StoreError::internal("etcd answered another read"));
        };
        fetched.due = due_keys(inner, id, due.kvs(), &fetched).await?;
    }
    // Judged again each time it stops at a key still to be read, once that
    // key (and a page of those after it) is read: the judge is not async,
    // and reads only what it needs, so the gets after `TXN_READ_BYTES` are
    // never read.
    let staged = loop {
        let judged = kv::evaluate(
            &mut fetched,
            settings,
            figures,
            &write.checks,
            write.ops.clone(),
            UNCOMMITTED,
            now,
        );
        let error = match judged {
            Ok(staged) => break staged,
            Err(error) => error,
        };
        let Some(wanted) = error.read_later() else {
            return Err(error);
        };
        let wanted = wanted.to_owned();
        if !plan
            .read_wanted(inner, id, &wanted, read_at as i64, now, &mut fetched)
            .await?
        {
            return Ok(None);
        }
    };
    let changes: Vec<_> = staged
        .changes
        .iter()
        .filter(|(_, change)| change.new.is_some() || change.old.is_some())
        .collect();
    if changes.is_empty() {
        // Nothing to write (reads, a delete that matched nothing): answered
        // at the revision read, once the newest write the reads show is
        // published here (not the revision itself: a write outside the
        // prefix may have taken it, and no event of the watch reaches it).
        inner.answered_at(read_at);
        let newest = staged
            .results
            .iter()
            .filter_map(|result| match result {
                OpResult::Get(Some(entry)) => Some(entry.meta.version),
                _ => None,
            })
            .max();
        if let Some(newest) = newest {
            inner.reach(newest, RPC_TIMEOUT).await;
        }
        return Ok(Some(KvCommit {
            revision: read_at.max(inner.view.revision()),
            results: staged.results,
        }));
    }
    // The compares: the project as judged, every key as read, no key
    // created or changed under a scanned prefix (or, with a key quota, in
    // the project) since the read.
    let mut compares = vec![Compare::mod_revision(
        layout.project(id.as_str()),
        CompareOp::Equal,
        record_revision,
    )];
    if let Grant::Token(token) = &write.grant {
        // The token revoked (or deleted with its project) since the mirror
        // showed it: judged again, and refused.
        compares.push(Compare::version(
            layout.token(token.id.as_str()),
            CompareOp::Greater,
            0,
        ));
    }
    for (name, revision) in &seen {
        compares.push(Compare::mod_revision(
            layout.key(id.as_str(), name),
            CompareOp::Equal,
            *revision,
        ));
    }
    let newer_than_read = read_at as i64 + 1;
    for prefix in prefixes {
        let start = layout.key(id.as_str(), prefix.as_str());
        let end = range_end(start.as_bytes());
        compares
            .push(Compare::mod_revision(start, CompareOp::Less, newer_than_read).with_range(end));
    }
    if counted {
        let start = layout.keys(id.as_str());
        let end = range_end(start.as_bytes());
        compares
            .push(Compare::mod_revision(start, CompareOp::Less, newer_than_read).with_range(end));
    }
    let compared: HashSet<&String> = seen.iter().map(|(name, _)| name).collect();
    let mut ops = Vec::new();
    let mut size = TXN_OVERHEAD;
    for (name, change) in &changes {
        let stored = layout.key(id.as_str(), name);
        if !compared.contains(name)
            && let Some(old) = &change.old
        {
            // A key found by a scan: it must be as the scan saw it.
            compares.push(Compare::mod_revision(
                stored.clone(),
                CompareOp::Equal,
                old.version as i64,
            ));
        }
        let old_expiry = change.old.as_ref().and_then(|meta| meta.expires_at);
        let new_expiry = change.new.as_ref().and_then(|(meta, _)| meta.expires_at);
        match &change.new {
            Some((meta, value)) => {
                let bytes = layout::encode_key(id.as_str(), meta, value)?;
                size += (stored.len() + bytes.len()) as u64;
                ops.push(TxnOp::put(stored, bytes, None));
            }
            None => {
                size += stored.len() as u64;
                ops.push(TxnOp::delete(stored, None));
            }
        }
        if old_expiry != new_expiry {
            if let Some(at) = old_expiry {
                ops.push(TxnOp::delete(layout.expiry(at, id.as_str(), name), None));
            }
            if let Some(at) = new_expiry {
                ops.push(TxnOp::put(layout.expiry(at, id.as_str(), name), "", None));
            }
        }
    }
    if size > inner.max_request_bytes {
        return Err(StoreError::ClusterLimit {
            limit: inner.max_request_bytes,
        });
    }
    let txn = Txn::new()
        .when(compares)
        .and_then(ops)
        .or_else(vec![TxnOp::get(layout.generation(), None)]);
    let response = commit(inner, txn).await?;
    if !response.succeeded() {
        // Someone wrote first: judge again. The keys are read again then;
        // the project comes from the mirror, which must first see a catalog
        // write that came in between, if one did.
        see_generation(inner, &response, mirror.generation).await;
        return Ok(None);
    }
    let revision = revision_of(&response);
    inner.reach(revision, RPC_TIMEOUT).await;
    let mut results = staged.results;
    for result in &mut results {
        let meta = match result {
            OpResult::Put { meta, .. } | OpResult::Incr { meta, .. } => Some(meta),
            OpResult::Get(Some(Entry { meta, .. })) => Some(meta),
            _ => None,
        };
        if let Some(meta) = meta
            && meta.version == UNCOMMITTED
        {
            meta.version = revision;
        }
    }
    Ok(Some(KvCommit { revision, results }))
}

/// Reads `reads` in one etcd transaction (one revision).
async fn read_txn(inner: &Inner, reads: Vec<TxnOp>) -> Result<TxnResponse, StoreError> {
    let read = Txn::new().and_then(reads);
    let read = send(inner, |mut kv| {
        let read = read.clone();
        async move { kv.txn(read).await }
    });
    tokio::time::timeout(RPC_TIMEOUT, read)
        .await
        .map_err(|_| StoreError::Unavailable)?
        .map_err(super::read_error)
}

/// The project's keys that expiry index entries `due` show expired: a
/// key whose stored record carries that entry's expiry. An entry may
/// outlive its key's expiry (a project deleted and created again), and a
/// key may have two, so each is checked: for a key the write read, by its
/// record; for another, read now without its value, by its `mod_revision`,
/// which is the entry's when one transaction wrote both. A key rewritten
/// since with the same expiry fails that test and keeps its slot until the
/// sweep.
async fn due_keys(
    inner: &Inner,
    id: &ProjectId,
    due: &[KeyValue],
    fetched: &Fetched,
) -> Result<Vec<String>, StoreError> {
    let layout = &inner.layout;
    let mut keys = Vec::new();
    let mut unread = Vec::new();
    for entry in due {
        let Some((millis, project, key)) = layout.parse_expiry(entry.key()) else {
            continue;
        };
        if project != id.as_str() {
            continue;
        }
        match fetched.keys.get(key) {
            Some(Record::Read(meta, _)) => {
                if meta.expires_at.is_some_and(|at| at.millis() == millis) {
                    keys.push(key.to_owned());
                }
            }
            Some(Record::Absent) => {}
            Some(Record::Later) | None => unread.push((key.to_owned(), entry.mod_revision())),
        }
    }
    if !unread.is_empty() {
        let reads = unread
            .iter()
            .map(|(key, _)| {
                let options = GetOptions::new().with_keys_only();
                TxnOp::get(layout.key(id.as_str(), key), Some(options))
            })
            .collect();
        let response = read_txn(inner, reads).await?;
        for ((key, written), answer) in unread.into_iter().zip(response.op_responses()) {
            if let TxnOpResponse::Get(get) = answer
                && get
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.mod_revision() == written)
            {
                keys.push(key);
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Applies a catalog write.
pub async fn catalog(inner: &Inner, write: CatalogWrite, by: &Authority) -> Result<(), StoreError> {
    for attempt in 0..ATTEMPTS {
        if try_catalog(inner, write.clone(), by).await? {
            return Ok(());
        }
        back_off(attempt).await;
    }
    Err(StoreError::Unavailable)
}

/// One attempt: false when the catalog changed meanwhile (judge again).
async fn try_catalog(
    inner: &Inner,
    write: CatalogWrite,
    by: &Authority,
) -> Result<bool, StoreError> {
    let layout = &inner.layout;
    let mirror = inner.mirror()?;
    let delta = plan::plan(
        &mirror.catalog,
        write,
        by,
        inner.view.revision(),
        Timestamp::now(),
    )?;
    if delta.is_empty() {
        return Ok(true);
    }
    let compares = vec![Compare::mod_revision(
        layout.generation(),
        CompareOp::Equal,
        mirror.generation,
    )];
    let mut ops = vec![TxnOp::put(layout.generation(), "", None)];
    let mut named = HashSet::new();
    let mut push = |name: String, op: TxnOp| {
        if named.insert(name) {
            ops.push(op);
        }
    };
    if let Some(id) = &delta.removed {
        let keys = layout.keys(id.as_str());
        let end = range_end(keys.as_bytes());
        push(
            keys.clone(),
            TxnOp::delete(keys, Some(DeleteOptions::new().with_range(end))),
        );
        let name = layout.project(id.as_str());
        push(name.clone(), TxnOp::delete(name, None));
    }
    for settings in &delta.projects {
        let name = layout.project(settings.id.as_str());
        push(
            name.clone(),
            TxnOp::put(name, layout::encode_project(settings)?, None),
        );
    }
    for id in &delta.revoked {
        let name = layout.token(id.as_str());
        push(name.clone(), TxnOp::delete(name, None));
        let name = layout.imported(id.as_str());
        push(name.clone(), TxnOp::delete(name, None));
    }
    for token in &delta.tokens {
        let name = layout.token(token.id.as_str());
        push(
            name.clone(),
            TxnOp::put(name, layout::encode_token(token)?, None),
        );
    }
    for (id, digest) in &delta.imported {
        let name = layout.imported(id.as_str());
        push(name.clone(), TxnOp::put(name, digest.as_str(), None));
    }
    for (id, _) in &delta.verified {
        let name = layout.imported(id.as_str());
        push(name.clone(), TxnOp::delete(name, None));
    }
    let txn = Txn::new()
        .when(compares)
        .and_then(ops)
        .or_else(vec![TxnOp::get(layout.generation(), None)]);
    let response = commit(inner, txn).await?;
    if response.succeeded() {
        inner.reach(revision_of(&response), RPC_TIMEOUT).await;
    } else {
        see_generation(inner, &response, mirror.generation).await;
    }
    Ok(response.succeeded())
}

/// After a transaction whose compares lost, and which read the catalog's
/// generation key instead: waits until the mirror holds the catalog write
/// that key names, when it is newer than `known`. Not for the answer's
/// revision: that may be a write outside the prefix, which no event of the
/// watch ever reaches (every attempt then waited [`RPC_TIMEOUT`]).
async fn see_generation(inner: &Inner, response: &TxnResponse, known: i64) {
    let generation = match response.op_responses().first() {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map_or(0, |kv| kv.mod_revision()),
        _ => 0,
    };
    if generation > known {
        inner.reach(generation as u64, RPC_TIMEOUT).await;
    }
}

/// Removes expired keys, in one transaction per round, for as long as the
/// store lives. Every node sweeps; the compares make all but one lose.
pub async fn sweep(inner: Arc<Inner>) {
    while !inner.closed.load(Ordering::Acquire) {
        tokio::time::sleep(SWEEP_EVERY).await;
        if !inner.is_fresh() {
            continue;
        }
        if let Err(error) = sweep_once(&inner).await {
            tracing::debug!(%error, "an expiry sweep failed; the next one tries again");
        }
    }
}

async fn sweep_once(inner: &Inner) -> Result<(), StoreError> {
    let layout = &inner.layout;
    let now = Timestamp::now();
    let options = GetOptions::new().with_range(layout.due(now)).with_limit(64);
    let due = send(inner, |mut kv| {
        let options = options.clone();
        async move { kv.get(layout.expiries(), Some(options)).await }
    })
    .await
    .map_err(super::read_error)?;
    if due.kvs().is_empty() {
        return Ok(());
    }
    let mut entries = Vec::new();
    for kv in due.kvs() {
        if let Some((millis, project, key)) = layout.parse_expiry(kv.key()) {
            entries.push((kv.key().to_vec(), kv.mod_revision(), millis, project, key));
        }
    }
    let reads: Vec<TxnOp> = entries
        .iter()
        .map(|(_, _, _, project, key)| TxnOp::get(layout.key(project, key), None))
        .collect();
    let read = Txn::new().and_then(reads);
    let response = send(inner, |mut kv| {
        let read = read.clone();
        async move { kv.txn(read).await }
    })
    .await
    .map_err(super::read_error)?;
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    let mut expired = false;
    let mut named = HashSet::new();
    for ((index, index_revision, millis, project, key), answer) in
        entries.iter().zip(response.op_responses())
    {
        let TxnOpResponse::Get(get) = answer else {
            continue;
        };
        compares.push(Compare::mod_revision(
            index.clone(),
            CompareOp::Equal,
            *index_revision,
        ));
        ops.push(TxnOp::delete(index.clone(), None));
        let stored = layout.key(project, key);
        let Some(kv) = get.kvs().first() else {
            continue;
        };
        let Ok((meta, _)) = layout::decode_key(project, key, kv.value(), kv.mod_revision()) else {
            continue;
        };
        let due = meta
            .expires_at
            .is_some_and(|at| at.millis() == *millis && at <= now);
        if due && named.insert(stored.clone()) {
            compares.push(Compare::mod_revision(
                stored.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            ));
            ops.push(TxnOp::delete(stored, None));
            expired = true;
        }
    }
    if expired {
        ops.push(TxnOp::put(layout.sweep(), now.millis().to_string(), None));
    }
    let sweep = Txn::new().when(compares).and_then(ops);
    let response = send(inner, |mut kv| {
        let sweep = sweep.clone();
        async move { kv.txn(sweep).await }
    })
    .await
    .map_err(super::read_error)?;
    if response.succeeded() {
        inner.reach(revision_of(&response), RPC_TIMEOUT).await;
    }
    Ok(())
}
