//! The key/value rules, apart from any engine: how a [`KvWrite`] is judged
//! against the keys as they stand and what it changes.
//!
//! An engine reads its committed keys through [`KeySource`] and hands the
//! write to [`evaluate`], which checks the transaction's checks, then each
//! op against the state the ops before it left (preconditions, expiry,
//! quotas, value limits, `incr`'s arithmetic), and answers with the
//! [`Staged`] change of every key it touched, the results and the project's
//! new figures. Nothing is written until every check and op has held, so a
//! refused write changes nothing. The engine then persists what was decided
//! (its tables, its indexes, its change log); it decides nothing itself.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{
    Change, ChangeKind, Check, Entry, Expect, KeyMeta, KvOp, OpResult, Precondition, StoreError,
};
use crate::domain::{Key, Prefix, ProjectSettings, Timestamp, parse_counter};

/// The content type a counter is stored with.
pub const COUNTER_TYPE: &str = "text/plain; charset=utf-8";

/// The keys of one project as committed before the write being judged.
/// Expired keys are returned too: whether a key is live is decided here.
pub trait KeySource {
    /// The key's metadata, if it has a record.
    fn meta(&mut self, key: &str) -> Result<Option<KeyMeta>, StoreError>;

    /// The key's metadata and value, if it has a record (one lookup: an
    /// `incr` or a transaction's `get` needs both).
    fn entry(&mut self, key: &str) -> Result<Option<(KeyMeta, Bytes)>, StoreError>;

    /// Calls `each` with every key that starts with `prefix`, in key order.
    fn scan(
        &mut self,
        prefix: &Prefix,
        each: &mut dyn FnMut(KeyMeta) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Calls `each` with the stored keys of the project that have expired
    /// by `now` and that the sweep has yet to remove, as far as the source
    /// can tell cheaply (none, by default). Asked only when a write would
    /// otherwise leave more keys than `max_keys`: such keys are gone for
    /// every reader, so they must not hold the quota either.
    fn expired(&mut self, now: Timestamp, each: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        let _ = (now, each);
        Ok(())
    }
}

/// A project's live figures: its keys and the bytes of their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub keys: u64,
    pub bytes: u64,
}

impl Figures {
    /// Takes a stored key out of the figures (an expired one too: figures
    /// count what is stored until the sweep removes it).
    pub fn remove(&mut self, meta: &KeyMeta) {
        self.keys = self.keys.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(meta.size);
    }
}

/// Whether a key is there for readers and ops at `now`: an expired key is
/// absent for everyone before the sweep removes it.
pub fn is_live(meta: &KeyMeta, now: Timestamp) -> bool {
    meta.expires_at.is_none_or(|at| at > now)
}

/// What a write does to one key.
#[derive(Clone, Debug)]
pub struct KeyChange {
    /// The key's stored record before the write (expired or not): what the
    /// engine replaces or removes.
    pub old: Option<KeyMeta>,
    /// Its state after the write; `None` when the write removes it.
    pub new: Option<(KeyMeta, Bytes)>,
}

/// A judged write: what it changes, what it answers, the figures after it.
#[derive(Debug, Default)]
pub struct Staged {
    /// Every key the write touched, in key order.
    pub changes: BTreeMap<String, KeyChange>,
    pub results: Vec<OpResult>,
    pub figures: Figures,
}

impl Staged {
    /// The write's changes as watchers see them: puts, and deletes of keys
    /// that were stored (a delete of a missing key is no change).
    pub fn log(&self) -> Vec<Change> {
        self.changes
            .iter()
            .filter_map(|(key, change)| {
                let key = Key::from_stored(key);
                match &change.new {
                    Some((meta, value)) => Some(Change {
                        kind: ChangeKind::Put,
                        key,
                        content_type: meta.content_type.clone(),
                        value: value.clone(),
                    }),
                    None if change.old.is_some() => Some(Change {
                        kind: ChangeKind::Delete,
                        key,
                        content_type: String::new(),
                        value: Bytes::new(),
                    }),
                    None => None,
                }
            })
            .collect()
    }
}

/// A delete by prefix judged a part at a time, for an engine that reads a
/// large prefix in chunks: the rule of [`KvOp::DeletePrefix`] in
/// [`evaluate`] (every live key under the prefix goes; an expired one is
/// left to the expiry sweep), for a write that is that one op alone.
#[derive(Debug)]
pub struct PrefixDelete {
    now: Timestamp,
    figures: Figures,
    /// The deletes so far, in key order.
    changes: Vec<Change>,
}

impl PrefixDelete {
    /// A delete judged at `now`, on a project with these figures.
    pub fn new(figures: Figures, now: Timestamp) -> PrefixDelete {
        // Room for every key of the project (up to a bound), so that the
        // list is not copied whole as it grows: the copy of a large one
        // stalled the writer for as long as a chunk takes tenfold.
        let room = figures.keys.min(1 << 20) as usize;
        PrefixDelete {
            now,
            figures,
            changes: Vec::with_capacity(room),
        }
    }

    /// The time liveness is judged at.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Takes the next stored key under the prefix, in key order: whether
    /// the delete removes it.
    pub fn take(&mut self, meta: KeyMeta) -> bool {
        let doomed = is_live(&meta, self.now);
        if doomed {
            self.figures.remove(&meta);
            self.changes.push(Change {
                kind: ChangeKind::Delete,
                key: meta.key,
                content_type: String::new(),
                value: Bytes::new(),
            });
        }
        doomed
    }

    /// The write's result, its changes as watchers see them (in key order)
    /// and the figures after it.
    pub fn finish(self) -> (OpResult, Vec<Change>, Figures) {
        let result = OpResult::DeletePrefix {
            deleted: self.changes.len() as u64,
        };
        (result, self.changes, self.figures)
    }
}

/// Judges a write of `checks` and `ops` on a project whose settings and
/// figures are given, at `revision` (the revision it takes if it changes
/// anything) and `now`.
pub fn evaluate(
    source: &mut dyn KeySource,
    settings: &ProjectSettings,
    figures: Figures,
    checks: &[Check],
    ops: Vec<KvOp>,
    revision: u64,
    now: Timestamp,
) -> Result<Staged, StoreError> {
    // Every check, against the state before the write.
    let mut failed = Vec::new();
    for (index, check) in checks.iter().enumerate() {
        let version = source
            .meta(check.key.as_str())?
            .filter(|meta| is_live(meta, now))
            .map(|meta| meta.version);
        let holds = match check.expect {
            Expect::Version(wanted) => version == Some(wanted),
            Expect::Exists(wanted) => version.is_some() == wanted,
        };
        if !holds {
            failed.push(index);
        }
    }
    if !failed.is_empty() {
        return Err(StoreError::ChecksFailed(failed));
    }
    let mut judge = Judge {
        source,
        settings,
        revision,
        now,
        read: 0,
        stored_before: figures.keys,
        added: 0,
        added_after: Vec::with_capacity(ops.len()),
        staged: Staged {
            figures,
            results: Vec::with_capacity(ops.len()),
            ..Staged::default()
        },
    };
    for (index, op) in ops.into_iter().enumerate() {
        let result = judge.apply(op).map_err(|error| StoreError::FailedOp {
            index,
            error: Box::new(error),
        })?;
        judge.staged.results.push(result);
        judge.added_after.push(judge.added);
    }
    judge.check_quota()?;
    Ok(judge.staged)
}

/// The ops of one write as they are judged, with what they changed so far.
struct Judge<'a> {
    source: &'a mut dyn KeySource,
    settings: &'a ProjectSettings,
    revision: u64,
    now: Timestamp,
    /// The value bytes the gets so far read.
    read: u64,
    /// The keys stored before the write, expired ones too (the figures').
    stored_before: u64,
    /// The keys live for readers that the ops so far added, less those
    /// they removed: what `max_keys` is judged on.
    added: i64,
    /// `added` after each op, to name the op a refusal is due to.
    added_after: Vec<i64>,
    staged: Staged,
}

/// What a transaction's gets may read: a get is refused once the gets
/// before it read this much, so an answer holds at most this plus one value
/// (as a `values=true` listing's page ends at 4 MiB or more). Without it 128
/// gets of one 1 MiB key made an answer of 179 MB from a 4 KB request.
pub const TXN_READ_BYTES: u64 = 4 << 20;

impl Judge<'_> {
    fn apply(&mut self, op: KvOp) -> Result<OpResult, StoreError> {
        match op {
            KvOp::Put {
                key,
                value,
                content_type,
                ttl,
                precondition,
            } => {
                let old = self.current(key.as_str())?;
                check(&precondition, self.live_version(&old))?;
                let expires_at = ttl.map(|seconds| self.now.plus_seconds(seconds));
                let (meta, created) = self.put(&key, old, value, content_type, expires_at, None)?;
                Ok(OpResult::Put { meta, created })
            }
            KvOp::Delete {
                key,
                precondition,
                must_exist,
            } => {
                let old = self.current(key.as_str())?;
                let Some(old) = old.filter(|meta| is_live(meta, self.now)) else {
                    return if must_exist {
                        Err(StoreError::KeyNotFound)
                    } else {
                        Ok(OpResult::Delete { deleted: false })
                    };
                };
                check(&precondition, Some(old.version))?;
                self.staged.figures.remove(&old);
                self.stage(key.as_str(), Some(&old), None)?;
                Ok(OpResult::Delete { deleted: true })
            }
            KvOp::DeletePrefix { prefix } => {
                let mut doomed = Vec::new();
                let (changes, now) = (&self.staged.changes, self.now);
                // An expired key is already gone for readers; the sweep
                // takes it out.
                self.source.scan(&prefix, &mut |meta| {
                    if !changes.contains_key(meta.key.as_str()) && is_live(&meta, now) {
                        doomed.push(meta);
                    }
                    Ok(())
                })?;
                for (key, change) in &self.staged.changes {
                    if let (true, Some((meta, _))) = (prefix.covers(key), &change.new) {
                        doomed.push(meta.clone());
                    }
                }
                for meta in &doomed {
                    self.staged.figures.remove(meta);
                    self.stage(meta.key.as_str(), Some(meta), None)?;
                }
                Ok(OpResult::DeletePrefix {
                    deleted: doomed.len() as u64,
                })
            }
            KvOp::Restore {
                key,
                value,
                content_type,
                created_at,
                updated_at,
                expires_at,
            } => {
                let old = self.current(key.as_str())?;
                let times = Some((created_at, updated_at));
                let (meta, created) =
                    self.put(&key, old, value, content_type, expires_at, times)?;
                Ok(OpResult::Put { meta, created })
            }
            KvOp::Get { key } => {
                if self.read >= TXN_READ_BYTES {
                    return Err(StoreError::AnswerTooLarge {
                        limit: TXN_READ_BYTES,
                    });
                }
                let entry = self
                    .current_value(key.as_str())?
                    .filter(|(meta, _)| is_live(meta, self.now))
                    .map(|(meta, value)| Entry { meta, value });
                self.read += entry.as_ref().map_or(0, |entry| entry.value.len() as u64);
                Ok(OpResult::Get(entry))
            }
            KvOp::Incr { key, by } => {
                let old = self.current_value(key.as_str())?;
                let count = match old.as_ref().filter(|(meta, _)| is_live(meta, self.now)) {
                    None => 0,
                    Some((_, value)) => parse_counter(value).ok_or_else(|| {
                        StoreError::Conflict(format!(
                            "{key} does not hold a 64-bit integer in decimal (digits, \
                             an optional leading -, no + and no leading zero)"
                        ))
                    })?,
                };
                let value = count.checked_add(by).ok_or_else(|| {
                    StoreError::Conflict(format!("{count} + {by} overflows a 64-bit integer"))
                })?;
                let text = Bytes::from(value.to_string());
                let old = old.map(|(meta, _)| meta);
                // A live counter keeps its expiry, as Redis's INCR keeps a
                // key's TTL; a new one (or one past its expiry) has none.
                let expires_at = old
                    .as_ref()
                    .filter(|meta| is_live(meta, self.now))
                    .and_then(|meta| meta.expires_at);
                let (meta, _) =
                    self.put(&key, old, text, COUNTER_TYPE.to_owned(), expires_at, None)?;
                Ok(OpResult::Incr { meta, value })
            }
        }
    }

    fn live_version(&self, meta: &Option<KeyMeta>) -> Option<u64> {
        meta.as_ref()
            .filter(|meta| is_live(meta, self.now))
            .map(|meta| meta.version)
    }

    /// A key's metadata as the ops so far left it (expired or not).
    fn current(&mut self, key: &str) -> Result<Option<KeyMeta>, StoreError> {
        match self.staged.changes.get(key) {
            Some(change) => Ok(change.new.as_ref().map(|(meta, _)| meta.clone())),
            None => self.source.meta(key),
        }
    }

    /// A key's metadata and value as the ops so far left them.
    fn current_value(&mut self, key: &str) -> Result<Option<(KeyMeta, Bytes)>, StoreError> {
        if let Some(change) = self.staged.changes.get(key) {
            return Ok(change.new.clone());
        }
        self.source.entry(key)
    }

    /// Records a put of `value` over `old`: the new metadata, and whether
    /// the key is new for readers. `times` (created, updated) are the
    /// write's own unless given.
    fn put(
        &mut self,
        key: &Key,
        old: Option<KeyMeta>,
        value: Bytes,
        content_type: String,
        expires_at: Option<Timestamp>,
        times: Option<(Timestamp, Timestamp)>,
    ) -> Result<(KeyMeta, bool), StoreError> {
        let size = value.len() as u64;
        if size > self.settings.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                max: self.settings.max_value_bytes,
            });
        }
        let figures = &mut self.staged.figures;
        match &old {
            Some(old) => figures.bytes = figures.bytes.saturating_sub(old.size),
            None => figures.keys += 1,
        }
        figures.bytes += size;
        let live = old.as_ref().filter(|old| is_live(old, self.now));
        let created = live.is_none();
        let (created_at, updated_at) =
            times.unwrap_or_else(|| (live.map_or(self.now, |old| old.created_at), self.now));
        let meta = KeyMeta {
            key: key.clone(),
            version: self.revision,
            created_at,
            updated_at,
            expires_at,
            size,
            content_type,
        };
        self.stage(key.as_str(), old.as_ref(), Some((meta.clone(), value)))?;
        Ok((meta, created))
    }

    /// `max_keys`, judged on what the whole write leaves, since its ops on
    /// one key fold into one write: a write may add keys live for readers
    /// (new ones, or expired ones written again) only while the project
    /// then holds at most `max_keys`, so a key put and deleted again takes
    /// no slot. The figures count every stored key, so the expired keys
    /// awaiting the sweep are taken out first, asked of the source only
    /// when the write would otherwise pass the limit: they are gone for
    /// readers, and hold no slot. A refusal names the op from which the
    /// project stays past the limit to the end of the write.
    fn check_quota(&mut self) -> Result<(), StoreError> {
        let Some(max_keys) = self.settings.max_keys else {
            return Ok(());
        };
        if self.added <= 0 {
            return Ok(());
        }
        let added = self.added as u64;
        let now = self.now;
        // The keys this write touched whose stored record had expired.
        let touched_expired = self
            .staged
            .changes
            .values()
            .filter(|change| change.old.as_ref().is_some_and(|old| !is_live(old, now)))
            .count() as u64;
        let mut live_before = self.stored_before.saturating_sub(touched_expired);
        if live_before.saturating_add(added) <= max_keys {
            return Ok(());
        }
        let changes = &self.staged.changes;
        let mut untouched_expired = 0u64;
        self.source.expired(now, &mut |key| {
            if !changes.contains_key(key) {
                untouched_expired += 1;
            }
        })?;
        live_before = live_before.saturating_sub(untouched_expired);
        if live_before.saturating_add(added) <= max_keys {
            return Ok(());
        }
        // The write leaves more keys than it found, and more than the
        // limit: past `limit`, which the project may have been past
        // already (a limit lowered under its keys).
        let limit = max_keys.max(live_before);
        let past = |added: i64| live_before as i64 + added > limit as i64;
        let index = self
            .added_after
            .iter()
            .rposition(|added| !past(*added))
            .map_or(0, |last_within| last_within + 1);
        Err(StoreError::FailedOp {
            index,
            error: Box::new(StoreError::QuotaExceeded { max_keys }),
        })
    }

    /// Records a key's new state. `old` is the key's metadata as the caller
    /// read it: for a key this write has not touched yet, the stored one.
    fn stage(
        &mut self,
        key: &str,
        old: Option<&KeyMeta>,
        new: Option<(KeyMeta, Bytes)>,
    ) -> Result<(), StoreError> {
        let now = self.now;
        let live = |meta: Option<&KeyMeta>| i64::from(meta.is_some_and(|meta| is_live(meta, now)));
        let after = live(new.as_ref().map(|(meta, _)| meta));
        match self.staged.changes.get_mut(key) {
            Some(change) => {
                self.added += after - live(change.new.as_ref().map(|(meta, _)| meta));
                change.new = new;
            }
            None => {
                self.added += after - live(old);
                self.staged.changes.insert(
                    key.to_owned(),
                    KeyChange {
                        old: old.cloned(),
                        new,
                    },
                );
            }
        }
        Ok(())
    }
}

fn check(precondition: &Option<Precondition>, current: Option<u64>) -> Result<(), StoreError> {
    let holds = match precondition {
        None => true,
        Some(Precondition::Absent) => current.is_none(),
        Some(Precondition::Exists) => current.is_some(),
        Some(Precondition::VersionIn(versions)) => current.is_some_and(|v| versions.contains(&v)),
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::PreconditionFailed { current })
    }
}

/// The figures after the sweep removes an expired key, and the change
/// watchers see for it.
pub fn expire(figures: &mut Figures, meta: &KeyMeta) -> Change {
    figures.remove(meta);
    Change {
        kind: ChangeKind::Expired,
        key: meta.key.clone(),
        content_type: String::new(),
        value: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProjectId, StorageMode};
    use crate::store::{Check, Expect};

    /// Keys in memory: the smallest engine.
    #[derive(Default)]
    struct Keys(BTreeMap<String, (KeyMeta, Bytes)>);

    impl KeySource for Keys {
        fn meta(&mut self, key: &str) -> Result<Option<KeyMeta>, StoreError> {
            Ok(self.0.get(key).map(|(meta, _)| meta.clone()))
        }

        fn entry(&mut self, key: &str) -> Result<Option<(KeyMeta, Bytes)>, StoreError> {
            Ok(self.0.get(key).cloned())
        }

        fn scan(
            &mut self,
            prefix: &Prefix,
            each: &mut dyn FnMut(KeyMeta) -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            for (key, (meta, _)) in &self.0 {
                if prefix.covers(key) {
                    each(meta.clone())?;
                }
            }
            Ok(())
        }
    }

    fn settings(max_keys: Option<u64>) -> ProjectSettings {
        ProjectSettings {
            id: ProjectId::parse("p").unwrap(),
            storage: StorageMode::Disk,
            keys_discoverable: true,
            max_value_bytes: 8,
            max_keys,
            public: crate::domain::Public::None,
            created_at: Timestamp::from_millis(0),
            created_revision: 0,
        }
    }

    fn key(text: &str) -> Key {
        Key::parse(text).unwrap()
    }

    fn put(k: &str, v: &str) -> KvOp {
        KvOp::Put {
            key: key(k),
            value: Bytes::copy_from_slice(v.as_bytes()),
            content_type: "text/plain".to_owned(),
            ttl: None,
            precondition: None,
        }
    }

    fn commit(keys: &mut Keys, staged: &Staged) {
        for (k, change) in &staged.changes {
            match &change.new {
                Some(new) => keys.0.insert(k.clone(), new.clone()),
                None => keys.0.remove(k),
            };
        }
    }

    #[test]
    fn a_refused_op_stages_nothing_and_names_its_index() {
        let mut keys = Keys::default();
        let now = Timestamp::from_millis(1_000);
        let ops = vec![put("a", "1"), put("b", "far too long")];
        let error = evaluate(
            &mut keys,
            &settings(None),
            Figures::default(),
            &[],
            ops,
            1,
            now,
        )
        .unwrap_err();
        assert!(matches!(error, StoreError::FailedOp { index: 1, .. }));
    }

    #[test]
    fn ops_see_the_ops_before_them_and_figures_follow() {
        let mut keys = Keys::default();
        let now = Timestamp::from_millis(1_000);
        let ops = vec![
            put("a", "1"),
            KvOp::Incr {
                key: key("a"),
                by: 4,
            },
            KvOp::Get { key: key("a") },
        ];
        let staged = evaluate(
            &mut keys,
            &settings(None),
            Figures::default(),
            &[],
            ops,
            7,
            now,
        )
        .unwrap();
        assert_eq!(staged.figures, Figures { keys: 1, bytes: 1 });
        match &staged.results[2] {
            OpResult::Get(Some(entry)) => {
                assert_eq!(entry.value, "5");
                assert_eq!(entry.meta.version, 7);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(staged.log().len(), 1);
    }

    fn delete(k: &str) -> KvOp {
        KvOp::Delete {
            key: key(k),
            precondition: None,
            must_exist: true,
        }
    }

    /// A write of `ops` judged on a project that holds `stored` keys
    /// (`only0`, `only1`, …), with a `max_keys` of `max`.
    fn judge_quota(stored: u64, max: u64, ops: Vec<KvOp>) -> Result<Staged, StoreError> {
        let mut keys = Keys::default();
        let now = Timestamp::from_millis(1_000);
        let first = evaluate(
            &mut keys,
            &settings(None),
            Figures::default(),
            &[],
            (0..stored).map(|n| put(&format!("only{n}"), "x")).collect(),
            1,
            now,
        )
        .unwrap();
        commit(&mut keys, &first);
        evaluate(
            &mut keys,
            &settings(Some(max)),
            first.figures,
            &[],
            ops,
            2,
            now,
        )
    }

    /// The quota is judged on what the whole write leaves: a key put and
    /// deleted again in one transaction adds none (it got 403 at the
    /// limit, while a delete then a put was accepted).
    #[test]
    fn max_keys_is_judged_on_what_the_whole_write_leaves() {
        let staged = judge_quota(1, 1, vec![put("tmp", "1"), delete("tmp")]).unwrap();
        assert_eq!(staged.figures.keys, 1);
        assert!(staged.log().is_empty(), "{:?}", staged.log());
        judge_quota(
            1,
            1,
            vec![put("a", "1"), put("b", "1"), delete("a"), delete("b")],
        )
        .unwrap();
        judge_quota(1, 1, vec![put("a", "1"), delete("only0")]).unwrap();
        judge_quota(1, 2, vec![put("a", "1"), put("b", "1"), delete("a")]).unwrap();
        // A write that does leave more keys than the limit names the op
        // from which the project stays past it.
        let cases = [
            (vec![put("a", "1")], 0),
            (vec![put("a", "1"), delete("a"), put("b", "1")], 2),
            (vec![put("a", "1"), put("b", "1"), delete("b")], 0),
            (vec![put("a", "1"), KvOp::Get { key: key("a") }], 0),
        ];
        for (ops, failed) in cases {
            match judge_quota(1, 1, ops).unwrap_err() {
                StoreError::FailedOp { index, error } => {
                    assert_eq!(index, failed);
                    assert_eq!(*error, StoreError::QuotaExceeded { max_keys: 1 });
                }
                other => panic!("{other:?}"),
            }
        }
        // A delete first makes room for one new key, not two.
        match judge_quota(2, 2, vec![delete("only0"), put("a", "1"), put("b", "1")]) {
            Err(StoreError::FailedOp { index: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expired_keys_are_absent_for_checks_preconditions_and_quotas_count_them_stored() {
        let mut keys = Keys::default();
        let then = Timestamp::from_millis(1_000);
        let ttl = KvOp::Put {
            key: key("t"),
            value: Bytes::from_static(b"x"),
            content_type: String::new(),
            ttl: Some(1),
            precondition: None,
        };
        let staged = evaluate(
            &mut keys,
            &settings(Some(1)),
            Figures::default(),
            &[],
            vec![ttl],
            1,
            then,
        )
        .unwrap();
        commit(&mut keys, &staged);
        let later = then.plus_seconds(5);
        let check = Check {
            key: key("t"),
            expect: Expect::Exists(false),
        };
        let absent = KvOp::Put {
            key: key("t"),
            value: Bytes::from_static(b"y"),
            content_type: String::new(),
            ttl: None,
            precondition: Some(Precondition::Absent),
        };
        let staged = evaluate(
            &mut keys,
            &settings(Some(1)),
            staged.figures,
            &[check],
            vec![absent],
            2,
            later,
        )
        .unwrap();
        assert!(matches!(
            staged.results[0],
            OpResult::Put { created: true, .. }
        ));
        assert_eq!(staged.figures, Figures { keys: 1, bytes: 1 });
        // A new key beyond the quota is refused.
        let error = evaluate(
            &mut keys,
            &settings(Some(1)),
            staged.figures,
            &[],
            vec![put("u", "z")],
            3,
            later,
        )
        .unwrap_err();
        assert!(matches!(
            error.into_op_error(),
            StoreError::QuotaExceeded { max_keys: 1 }
        ));
    }
}
