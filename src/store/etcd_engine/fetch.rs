//! What a key/value write reads before it is judged: every key it names,
//! every prefix it deletes, at one etcd revision, in bounded memory.
//!
//! A key's etcd value is its record and its value under one CRC, so even
//! its metadata costs the whole value. One read transaction fixes the
//! revision and reads what fits in [`PAGE_BYTES`] whole (each record at
//! most `max_request_bytes`, the most that etcd took in one write): the
//! first keys the write names, then the first page of its first prefix.
//! The other keys are read there without their values (their existence
//! and `mod_revision`), and their records later at that same revision, a
//! page at a time, only when the judge asks for them: a transaction's gets
//! stop at `TXN_READ_BYTES`, so the keys after that are never read. A
//! prefix is read a page at a time, each record's metadata kept and its
//! value dropped. A write small enough for the first transaction (most
//! are) costs that one round trip, as before.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use etcd_client::{GetOptions, GetResponse, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::layout::{self, range_end};
use super::{Inner, PAGE_BYTES, RPC_TIMEOUT, page_limit, send};
use crate::domain::{Prefix, ProjectId, Timestamp};
use crate::store::kv::{KeySource, is_live};
use crate::store::{Check, KeyMeta, KvOp, KvWrite, StoreError};

/// The least a record is counted at when a prefix's page is sized.
const SMALLEST_COUNTED: usize = 64 << 10;

/// A named key as the write read it.
pub(super) enum Record {
    /// No such key at the revision read.
    Absent,
    /// Its metadata, and its value when an op reads it and it is live
    /// (empty otherwise: the judge never looks at it).
    Read(KeyMeta, Bytes),
    /// Present (its `mod_revision` is in what the first read answers);
    /// its record is read when the judge asks for it.
    Later,
}

/// The keys one write touches, read at one revision.
#[derive(Default)]
pub(super) struct Fetched {
    /// Each named key.
    pub keys: HashMap<String, Record>,
    /// Each scanned prefix: its keys in order.
    pub scans: Vec<(Prefix, Vec<KeyMeta>)>,
    /// Keys of the project that had expired when they were read, by their
    /// entries in the expiry index (read for a write at `max_keys` only).
    pub due: Vec<String>,
}

impl Fetched {
    /// A named key's record; for one still to be read, the judgement stops
    /// with [`StoreError::ReadLater`], and is made again once it is read.
    fn record(&self, key: &str) -> Result<Option<(KeyMeta, Bytes)>, StoreError> {
        match self.keys.get(key) {
            Some(Record::Absent) => Ok(None),
            Some(Record::Read(meta, value)) => Ok(Some((meta.clone(), value.clone()))),
            Some(Record::Later) => Err(StoreError::ReadLater(key.to_owned())),
            None => Err(StoreError::internal(format!("{key} was not read first"))),
        }
    }
}

impl KeySource for Fetched {
    fn meta(&mut self, key: &str) -> Result<Option<KeyMeta>, StoreError> {
        self.record(key).map(|entry| entry.map(|(meta, _)| meta))
    }

    fn entry(&mut self, key: &str) -> Result<Option<(KeyMeta, Bytes)>, StoreError> {
        self.record(key)
    }

    fn scan(
        &mut self,
        prefix: &Prefix,
        each: &mut dyn FnMut(KeyMeta) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some((_, metas)) = self.scans.iter().find(|(p, _)| p == prefix) else {
            return Err(StoreError::internal("a prefix was not read first"));
        };
        for meta in metas {
            each(meta.clone())?;
        }
        Ok(())
    }

    fn expired(&mut self, now: Timestamp, each: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        // Due at the time the write is judged at.
        let _ = now;
        for key in &self.due {
            each(key);
        }
        Ok(())
    }
}

/// What a write reads: its keys in the order the judge first asks for
/// them, which of them an op reads the value of, and its prefixes.
pub(super) struct Plan {
    pub names: Vec<String>,
    valued: HashSet<String>,
    pub prefixes: Vec<Prefix>,
    /// How many records fit in one read of [`PAGE_BYTES`].
    per_page: usize,
    /// The most one record may hold: what etcd takes in one write.
    record_bound: usize,
}

impl Plan {
    pub fn of(write: &KvWrite, max_request_bytes: u64) -> Plan {
        let mut names = Vec::new();
        let mut named = HashSet::new();
        let mut valued = HashSet::new();
        let mut prefixes = Vec::new();
        let mut name = |key: &str| {
            if named.insert(key.to_owned()) {
                names.push(key.to_owned());
            }
        };
        for check in &write.checks {
            let check: &Check = check;
            name(check.key.as_str());
        }
        for op in &write.ops {
            match op {
                KvOp::Put { key, .. } | KvOp::Delete { key, .. } | KvOp::Restore { key, .. } => {
                    name(key.as_str())
                }
                KvOp::Get { key } | KvOp::Incr { key, .. } => {
                    name(key.as_str());
                    valued.insert(key.as_str().to_owned());
                }
                KvOp::DeletePrefix { prefix } => prefixes.push(prefix.clone()),
            }
        }
        let record_bound = usize::try_from(max_request_bytes.max(1)).unwrap_or(usize::MAX);
        Plan {
            names,
            valued,
            prefixes,
            per_page: (PAGE_BYTES / record_bound).max(1),
            record_bound,
        }
    }

    /// The reads of the first transaction: the first names whole, the
    /// others without values; then with what room is left, the first page
    /// of the first prefix, and each other prefix counted only (an empty
    /// one costs nothing more).
    pub fn first_reads(&self, layout: &layout::Layout, id: &ProjectId) -> Vec<TxnOp> {
        let mut room = self.per_page;
        let mut reads = Vec::new();
        for name in &self.names {
            let mut options = GetOptions::new();
            if room > 0 {
                room -= 1;
            } else {
                options = options.with_keys_only();
            }
            reads.push(TxnOp::get(layout.key(id.as_str(), name), Some(options)));
        }
        for prefix in &self.prefixes {
            let start = layout.key(id.as_str(), prefix.as_str());
            let mut options = GetOptions::new().with_range(range_end(start.as_bytes()));
            if room > 0 {
                options = options.with_limit(room as i64);
                room = 0;
            } else {
                options = options.with_count_only();
            }
            reads.push(TxnOp::get(start, Some(options)));
        }
        reads
    }

    /// Takes the answers of [`Plan::first_reads`] (in that order) into
    /// `fetched`, then reads the prefixes whole, a page at a time, at
    /// revision `at`. Answers each named key's `mod_revision` (0: absent),
    /// or `None` when etcd no longer holds revision `at`.
    pub async fn take_first(
        &self,
        inner: &Inner,
        id: &ProjectId,
        answers: &mut impl Iterator<Item = TxnOpResponse>,
        at: i64,
        now: Timestamp,
        fetched: &mut Fetched,
    ) -> Result<Option<Vec<(String, i64)>>, StoreError> {
        let mut seen = Vec::with_capacity(self.names.len());
        for (index, name) in self.names.iter().enumerate() {
            let Some(TxnOpResponse::Get(get)) = answers.next() else {
                return Err(StoreError::internal("etcd answered another read"));
            };
            let record = match get.kvs().first() {
                None => Record::Absent,
                // Read without its value (see `first_reads`).
                Some(_) if index >= self.per_page => Record::Later,
                Some(kv) => self.read(id, name, kv, now)?,
            };
            seen.push((
                name.clone(),
                get.kvs().first().map_or(0, |kv| kv.mod_revision()),
            ));
            fetched.keys.insert(name.clone(), record);
        }
        for prefix in &self.prefixes {
            let Some(TxnOpResponse::Get(get)) = answers.next() else {
                return Err(StoreError::internal("etcd answered another read"));
            };
            let start = inner.layout.key(id.as_str(), prefix.as_str());
            let end = range_end(start.as_bytes());
            let mut metas = Vec::new();
            // What the delete of the keys held would send (each key's name
            // twice: its delete and the compare that it is as read), against
            // etcd's request limit: past it the write cannot be sent (etcd
            // refused it, 413), so the scan stops there instead of keeping
            // the metadata of every key under the prefix. Every key held is
            // counted, from the first page on, expired ones too (the sweep
            // removes those within a second, so few are left): the bound
            // is on what this holds.
            let base = inner.layout.key(id.as_str(), "").len();
            let names_of = |metas: &[KeyMeta]| {
                metas
                    .iter()
                    .map(|meta| 2 * (base + meta.key.as_str().len()))
                    .sum::<usize>()
            };
            let too_large = || StoreError::ClusterLimit {
                limit: self.record_bound as u64,
            };
            let mut largest = take_page(&inner.layout, id, &get, &mut metas)?;
            let mut names = super::write::TXN_OVERHEAD as usize + names_of(&metas);
            if names > self.record_bound {
                return Err(too_large());
            }
            // Where to go on from: after the last key of the first page,
            // or the whole range when it was only counted.
            let mut from = match (get.kvs().last(), get.more(), get.count()) {
                (Some(last), true, _) => Some(after(last.key())),
                (None, _, count) if count > 0 => Some(start.into_bytes()),
                _ => None,
            };
            while let Some(start) = from.take() {
                // Sized by the largest record seen so far, but counted at
                // 64 KiB at least: after small records, large ones may
                // follow, and a page of 128 of them (192 MiB at the
                // default request limit) is the most this holds at once.
                let seen = largest.unwrap_or(self.record_bound).max(SMALLEST_COUNTED);
                let limit = page_limit(Some(seen), 1000);
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(limit)
                    .with_revision(at);
                let Some(page) = get_at(inner, start, options).await? else {
                    return Ok(None);
                };
                let before = metas.len();
                largest = largest.max(take_page(&inner.layout, id, &page, &mut metas)?);
                names += names_of(&metas[before..]);
                if names > self.record_bound {
                    return Err(too_large());
                }
                if page.more()
                    && let Some(last) = page.kvs().last()
                {
                    from = Some(after(last.key()));
                }
            }
            fetched.scans.push((prefix.clone(), metas));
        }
        Ok(Some(seen))
    }

    /// Reads the records of the key `wanted` (that the judge asked for)
    /// and of the keys it asks for after it, a page of them, at revision
    /// `at`. `false` when etcd no longer holds revision `at`.
    pub async fn read_wanted(
        &self,
        inner: &Inner,
        id: &ProjectId,
        wanted: &str,
        at: i64,
        now: Timestamp,
        fetched: &mut Fetched,
    ) -> Result<bool, StoreError> {
        let Some(first) = self.names.iter().position(|name| name == wanted) else {
            return Err(StoreError::internal(format!("{wanted} was not read first")));
        };
        let page: Vec<&String> = self.names[first..]
            .iter()
            .filter(|name| matches!(fetched.keys.get(*name), Some(Record::Later)))
            .take(self.per_page)
            .collect();
        if page.first().is_none_or(|name| *name != wanted) {
            // Read already: the judge would stop on it again, for ever.
            return Err(StoreError::internal(format!("{wanted} was read twice")));
        }
        let options = GetOptions::new().with_revision(at);
        let reads = page
            .iter()
            .map(|name| TxnOp::get(inner.layout.key(id.as_str(), name), Some(options.clone())))
            .collect();
        let Some(response) = txn_at(inner, reads).await? else {
            return Ok(false);
        };
        for (name, answer) in page.into_iter().zip(response.op_responses()) {
            let TxnOpResponse::Get(get) = answer else {
                return Err(StoreError::internal("etcd answered another read"));
            };
            let record = match get.kvs().first() {
                Some(kv) => self.read(id, name, kv, now)?,
                None => Record::Absent,
            };
            fetched.keys.insert(name.clone(), record);
        }
        Ok(true)
    }

    /// A named key's record, with its value only when an op reads it and
    /// it is live (the judge reads no other).
    fn read(
        &self,
        id: &ProjectId,
        name: &str,
        kv: &KeyValue,
        now: Timestamp,
    ) -> Result<Record, StoreError> {
        let (meta, value) = layout::decode_key(id.as_str(), name, kv.value(), kv.mod_revision())?;
        let value = if self.valued.contains(name) && is_live(&meta, now) {
            value
        } else {
            Bytes::new()
        };
        Ok(Record::Read(meta, value))
    }
}

/// The name right after `key` in etcd's order.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Adds the metadata of a page's keys of project `id` to `metas` (their
/// values dropped); answers the largest record of the page.
fn take_page(
    layout: &layout::Layout,
    id: &ProjectId,
    page: &GetResponse,
    metas: &mut Vec<KeyMeta>,
) -> Result<Option<usize>, StoreError> {
    for kv in page.kvs() {
        if let layout::Name::Key { project, key } = layout.parse(kv.key())
            && project == id.as_str()
        {
            metas.push(layout::decode_key(project, key, kv.value(), kv.mod_revision())?.0);
        }
    }
    Ok(page
        .kvs()
        .iter()
        .map(|kv| kv.key().len() + kv.value().len())
        .max())
}

/// Whether etcd refused a read because its revision was compacted.
fn compacted(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.message().contains("compacted"))
}

/// A range read at a past revision: `None` when etcd compacted it.
async fn get_at(
    inner: &Inner,
    start: Vec<u8>,
    options: GetOptions,
) -> Result<Option<GetResponse>, StoreError> {
    let read = send(inner, |mut kv| {
        let (start, options) = (start.clone(), options.clone());
        async move { kv.get(start, Some(options)).await }
    });
    match tokio::time::timeout(RPC_TIMEOUT, read).await {
        Err(_) => Err(StoreError::Unavailable),
        Ok(Ok(page)) => Ok(Some(page)),
        Ok(Err(error)) if compacted(&error) => Ok(None),
        Ok(Err(error)) => Err(super::read_error(error)),
    }
}

/// Reads in one transaction at a past revision: `None` when etcd
/// compacted it.
async fn txn_at(inner: &Inner, reads: Vec<TxnOp>) -> Result<Option<TxnResponse>, StoreError> {
    let read = Txn::new().and_then(reads);
    let read = send(inner, |mut kv| {
        let read = read.clone();
        async move { kv.txn(read).await }
    });
    match tokio::time::timeout(RPC_TIMEOUT, read).await {
        Err(_) => Err(StoreError::Unavailable),
        Ok(Ok(response)) => Ok(Some(response)),
        Ok(Err(error)) if compacted(&error) => Ok(None),
        Ok(Err(error)) => Err(super::read_error(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Key, ProjectSettings, Public, StorageMode};
    use crate::store::kv::{Figures, evaluate};

    /// A key left to be read later stops the judgement with the typed
    /// signal, bare (a check) or as an op's error (a put), never an
    /// internal error: the engine reads the key and judges again.
    #[test]
    fn a_key_read_later_stops_the_judge_with_its_own_signal() {
        let mut fetched = Fetched::default();
        fetched.keys.insert("late".to_owned(), Record::Later);
        let settings = ProjectSettings {
            id: ProjectId::parse("p").unwrap(),
            storage: StorageMode::Disk,
            keys_discoverable: true,
            max_value_bytes: 8,
            max_keys: None,
            public: Public::None,
            created_at: Timestamp::from_millis(0),
            created_revision: 0,
        };
        let late = Key::parse("late").unwrap();
        let check = Check {
            key: late.clone(),
            expect: crate::store::Expect::Exists(true),
        };
        let put = KvOp::Put {
            key: late,
            value: Bytes::from_static(b"v"),
            content_type: String::new(),
            ttl: None,
            precondition: None,
        };
        let now = Timestamp::from_millis(1_000);
        let judge = |fetched: &mut Fetched, checks: &[Check]| {
            evaluate(
                fetched,
                &settings,
                Figures::default(),
                checks,
                vec![put.clone()],
                1,
                now,
            )
            .unwrap_err()
        };
        let bare = judge(&mut fetched, &[check]);
        assert_eq!(bare, StoreError::ReadLater("late".to_owned()));
        let in_op = judge(&mut fetched, &[]);
        assert!(
            matches!(in_op, StoreError::FailedOp { index: 0, .. }),
            "{in_op}"
        );
        assert_eq!(in_op.read_later(), Some("late"));
        assert_eq!(StoreError::internal("late").read_later(), None);
    }
}
