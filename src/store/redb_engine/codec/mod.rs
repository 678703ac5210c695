//! How the redb engine lays data out: table names and the records stored in
//! them.
//!
//! Every record (a key's entry, a change set, a project's settings, a
//! token, a project's figures and history) is framed: a format tag `2`, a
//! CRC-32 (little-endian), then the body. The CRC covers the table's name,
//! the record's key and the body, so a record damaged in place, or found
//! under another key or table (a damaged B-tree page), fails its check. A
//! large value in `values/{p}` is raw bytes; its CRC (over project, key and
//! value) is kept in its key's record. Every read checks before it uses:
//! a mismatch is [`StoreError::DataCorrupted`], logged with the table and
//! key, counted in `kvs_data_corrupted_total`, and never served.
//!
//! A body is postcard of an enum whose variant is the record's version
//! (`ProjectBody::V1`, …): a later release adds a variant with its new
//! fields and decodes the old ones into it, so no data directory is
//! stranded. The layouts of released variants never change.
//!
//! The v1 format (tag `1`, no CRC, domain structs as they were) is read
//! only by [`migrate`], at open; see [`v1`].

pub mod migrate;
pub mod v1;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::domain::{Key, ProjectSettings, Public, Timestamp, TokenRecord};
use crate::store::{Change, ChangeKind, ChangeSet, KeyMeta, StoreError};
use bytes::Bytes;

/// Project settings, by project id (disk database only).
pub const PROJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("catalog/projects");
/// Token records, by token id (disk database only).
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("catalog/tokens");
/// Imported tokens whose key has not been presented yet: token id → the
/// digest another server kept of the key (`pbkdf2_sha256$…`), as text
/// (disk database only).
pub const IMPORTED: TableDefinition<&str, &str> = TableDefinition::new("catalog/imported");
/// Each project's keys, bytes and last revision, in the database that holds
/// its keys.
pub const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats");
/// Server counters (disk database only): `revision`, the last revision a
/// disk commit took, and `reserved`, the highest revision that may have been
/// handed out to memory projects.
pub const SERVER: TableDefinition<&str, u64> = TableDefinition::new("server");

/// The expiry index of a database: a key per expiring key, ordered by time
/// (see [`expiry_key`]), so that the sweep reads only what is due.
pub const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry");

/// Each project's change-log figures ([`HistoryRecord`]), in the database
/// that holds its keys.
pub const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("history");

/// Deletes by prefix whose keys are still being removed (a large prefix is
/// removed in chunks after its delete commits): project id →
/// [`SweepRecord`], in the database that holds its keys. Readers treat the
/// keys it covers as gone.
pub const SWEEPS: TableDefinition<&str, &[u8]> = TableDefinition::new("sweeps");

pub const REVISION: &str = "revision";
pub const RESERVED: &str = "reserved";

/// The format version of each kind of table, in each database: `projects`,
/// `tokens`, `stats`, `history`, `keys`, `changes` → version. A database
/// without it is in the v1 format.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The tag of the current, checksummed format.
pub const FORMAT: u8 = 2;

/// Tag, CRC.
const FRAME: usize = 5;

/// Values up to this size are stored inline, after their key's record: one
/// table and one lookup for a read or a write. Larger ones go to the values
/// table, so that listings never read them.
pub const INLINE_LIMIT: usize = 2048;

/// The names of a project's two key tables: `keys` (key → record, with the
/// value inline when small) and `values` (key → large raw value). Each name
/// is made only when it is needed: reads through a shared snapshot find
/// their tables by project and usually need neither.
pub struct KeyTables<'a> {
    pub project: &'a str,
    keys: std::cell::OnceCell<String>,
    values: std::cell::OnceCell<String>,
    changes: std::cell::OnceCell<String>,
}

impl<'a> KeyTables<'a> {
    pub fn of(project: &'a str) -> KeyTables<'a> {
        KeyTables {
            project,
            keys: std::cell::OnceCell::new(),
            values: std::cell::OnceCell::new(),
            changes: std::cell::OnceCell::new(),
        }
    }

    /// The project's change log: revision → the change sets of a batch up
    /// to that revision ([`encode_changes`]).
    pub fn changes(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        let name = self
            .changes
            .get_or_init(|| format!("changes/{}", self.project));
        TableDefinition::new(name)
    }

    pub fn keys(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        let name = self.keys.get_or_init(|| format!("keys/{}", self.project));
        TableDefinition::new(name)
    }

    pub fn values(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        let name = self
            .values
            .get_or_init(|| format!("values/{}", self.project));
        TableDefinition::new(name)
    }
}

/// A key's metadata as read and written (stored as [`KeyBody`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub size: u64,
    pub content_type: String,
    /// Whether the value follows the record in the same entry.
    pub inline: bool,
    /// The CRC of a value kept in the values table (over project, key and
    /// value): set by [`encode_entry`] from the value it is given, checked
    /// by [`check_value`]; 0 for an inline value, covered by its entry's.
    pub value_crc: u32,
}

impl KeyRecord {
    /// Whether the key's expiry has come: an expired key is absent for every
    /// reader and op, before the sweep removes it.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The record of a key with this metadata, its value inline or not
    /// (the CRC of a value kept apart is set by [`encode_entry`]).
    pub fn from_meta(meta: &KeyMeta, inline: bool) -> KeyRecord {
        KeyRecord {
            version: meta.version,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            expires_at: meta.expires_at,
            size: meta.size,
            content_type: meta.content_type.clone(),
            inline,
            value_crc: 0,
        }
    }

    pub fn into_meta(self, key: Key) -> KeyMeta {
        KeyMeta {
            key,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            size: self.size,
            content_type: self.content_type,
        }
    }
}

/// A project's live figures as stored (the body of version 1: frozen; a
/// new field means a new struct and a new [`StatsBody`] variant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRecord {
    pub keys: u64,
    pub bytes: u64,
    pub revision: u64,
}

/// A project's change log as stored: how far it has been compacted, how
/// many changes and bytes it keeps, and the time of its oldest change set
/// (the body of version 2: frozen, as [`StatsRecord`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The newest revision whose changes were dropped.
    pub compacted: u64,
    /// Changes kept.
    pub changes: u64,
    /// When the oldest kept change set was written.
    pub oldest: Option<Timestamp>,
    /// The stored size of the change sets kept (their encoded entries).
    pub bytes: u64,
}

/// A committed delete by prefix whose keys are not all removed yet (the
/// body of version 1: frozen). Every key under `prefix` with a version up
/// to `revision` that was live at `at` is deleted; the expired ones are
/// left to the expiry sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub prefix: String,
    pub revision: u64,
    pub at: Timestamp,
}

impl SweepRecord {
    /// Whether the delete took the key with this record.
    pub fn covers(&self, key: &str, record: &KeyRecord) -> bool {
        key.as_bytes().starts_with(self.prefix.as_bytes())
            && record.version <= self.revision
            && record.expires_at.is_none_or(|at| at > self.at)
    }
}

/// Version 1 of [`HistoryRecord`], without `bytes` (frozen). A log read
/// through it counts 0 bytes for the sets written before the upgrade, until
/// they are trimmed by count or age.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HistoryV1 {
    compacted: u64,
    changes: u64,
    oldest: Option<Timestamp>,
}

impl From<HistoryV1> for HistoryRecord {
    fn from(v1: HistoryV1) -> HistoryRecord {
        HistoryRecord {
            compacted: v1.compacted,
            changes: v1.changes,
            oldest: v1.oldest,
            bytes: 0,
        }
    }
}

/// The head of a change set's entry; each change follows as a
/// [`ChangeHead`] and then its value's raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHead {
    pub at: Timestamp,
    pub count: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChangeHead<'a> {
    /// 0 put, 1 delete, 2 expired.
    kind: u8,
    key: &'a str,
    content_type: &'a str,
    size: u64,
}

/// The CRC of a record: its table's name (given in parts, so that a read
/// need not build it), its key and its body. `0xff` never occurs in UTF-8,
/// so no two inputs run together.
fn checksum(table: &[&str], key: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in table {
        hasher.update(part.as_bytes());
    }
    hasher.update(&[0xff]);
    hasher.update(key);
    hasher.update(&[0xff]);
    hasher.update(body);
    hasher.finalize()
}

/// A new record's bytes: room for the tag and the CRC, which [`seal`] fills.
fn frame() -> Vec<u8> {
    vec![FORMAT, 0, 0, 0, 0]
}

fn seal(table: &[&str], key: &[u8], mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = checksum(table, key, &bytes[FRAME..]);
    bytes[1..FRAME].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The body of a record, once its tag and CRC hold.
fn open<'a>(table: &[&str], key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    match bytes {
        [FORMAT, a, b, c, d, body @ ..]
            if u32::from_le_bytes([*a, *b, *c, *d]) == checksum(table, key, body) =>
        {
            Ok(body)
        }
        _ => Err(corrupted(table, key)),
    }
}

/// A damaged record: logged with its table (and project) and key, counted,
/// and answered `DataCorrupted`, whose text names no internals.
pub fn corrupted(table: &[&str], key: &[u8]) -> StoreError {
    let table = table.concat();
    let key = String::from_utf8_lossy(key);
    let (kind, project) = match table.split_once('/') {
        Some((kind @ ("keys" | "values" | "changes"), project)) => (kind, project),
        _ => (table.as_str(), "-"),
    };
    tracing::error!(
        table = kind,
        project,
        key = %key,
        "a stored record failed its checksum; it is not served"
    );
    metrics::counter!(CORRUPTED_METRIC).increment(1);
    StoreError::DataCorrupted(format!("{table} {key:?}"))
}

/// The counter of records found damaged.
pub const CORRUPTED_METRIC: &str = "kvs_data_corrupted_total";

/// A record whose CRC held but whose version this release does not know:
/// written by a newer release (or a bug), not damage.
fn unknown_version(what: &str) -> StoreError {
    StoreError::Internal(format!(
        "a {what} record has a version this release cannot read (written by a newer release?)"
    ))
}

/// A record type kept in a `&str → &[u8]` table, with its versioned body.
pub trait Record: Sized {
    const WHAT: &'static str;
    /// Appends the current version's body.
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), StoreError>;
    /// Any known version's body.
    fn read_body(body: &[u8]) -> Result<Self, StoreError>;
    /// The record as v1 wrote it (tag included), for the migration.
    fn read_v1(bytes: &[u8]) -> Result<Self, StoreError>;
}

fn write_postcard<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), StoreError> {
    // Most records fit in a buffer on the stack, written byte by byte
    // without a call per field, then copied at once; a larger one goes
    // through `io::Write`.
    let mut buffer = [0u8; 256];
    match postcard::to_slice(value, &mut buffer) {
        Ok(bytes) => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        Err(_) => postcard::to_io(value, out)
            .map(|_| ())
            .map_err(StoreError::internal),
    }
}

fn read_postcard<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(body).map_err(|_| unknown_version(what))
}

/// The versions of a project's settings.
#[derive(Serialize, Deserialize)]
enum ProjectBody {
    /// Read as `public: none`.
    V1(v1::Project),
    V2(ProjectV2),
}

/// A project's settings, second version: the first's fields and `public`.
#[derive(Serialize, Deserialize)]
struct ProjectV2 {
    settings: v1::Project,
    /// 0 none, 1 read, 2 write.
    public: u8,
}

/// The versions of a token.
#[derive(Serialize, Deserialize)]
enum TokenBody {
    V1(v1::Token),
}

#[derive(Serialize, Deserialize)]
enum StatsBody {
    V1(StatsRecord),
}

#[derive(Serialize, Deserialize)]
enum SweepBody {
    V1(SweepRecord),
}

#[derive(Serialize, Deserialize)]
enum HistoryBody {
    V1(HistoryV1),
    V2(HistoryRecord),
}

impl Record for ProjectSettings {
    const WHAT: &'static str = "project";
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let public = match self.public {
            Public::None => 0,
            Public::Read => 1,
            Public::Write => 2,
        };
        let body = ProjectV2 {
            settings: v1::Project::from_settings(self),
            public,
        };
        write_postcard(&ProjectBody::V2(body), out)
    }
    fn read_body(body: &[u8]) -> Result<Self, StoreError> {
        match read_postcard(body, Self::WHAT)? {
            ProjectBody::V1(project) => project.into_settings(),
            ProjectBody::V2(ProjectV2 { settings, public }) => Ok(ProjectSettings {
                public: match public {
                    0 => Public::None,
                    1 => Public::Read,
                    2 => Public::Write,
                    _ => return Err(unknown_version(Self::WHAT)),
                },
                ..settings.into_settings()?
            }),
        }
    }
    fn read_v1(bytes: &[u8]) -> Result<Self, StoreError> {
        v1::decode::<v1::Project>(bytes, Self::WHAT)?.into_settings()
    }
}

impl Record for TokenRecord {
    const WHAT: &'static str = "token";
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        write_postcard(&TokenBody::V1(v1::Token::from_record(self)), out)
    }
    fn read_body(body: &[u8]) -> Result<Self, StoreError> {
        match read_postcard(body, Self::WHAT)? {
            TokenBody::V1(token) => token.into_record(),
        }
    }
    fn read_v1(bytes: &[u8]) -> Result<Self, StoreError> {
        v1::decode::<v1::Token>(bytes, Self::WHAT)?.into_record()
    }
}

impl Record for StatsRecord {
    const WHAT: &'static str = "stats";
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        write_postcard(&StatsBody::V1(*self), out)
    }
    fn read_body(body: &[u8]) -> Result<Self, StoreError> {
        match read_postcard(body, Self::WHAT)? {
            StatsBody::V1(stats) => Ok(stats),
        }
    }
    fn read_v1(bytes: &[u8]) -> Result<Self, StoreError> {
        v1::decode(bytes, Self::WHAT)
    }
}

impl Record for HistoryRecord {
    const WHAT: &'static str = "history";
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        write_postcard(&HistoryBody::V2(*self), out)
    }
    fn read_body(body: &[u8]) -> Result<Self, StoreError> {
        match read_postcard(body, Self::WHAT)? {
            HistoryBody::V1(history) => Ok(history.into()),
            HistoryBody::V2(history) => Ok(history),
        }
    }
    fn read_v1(bytes: &[u8]) -> Result<Self, StoreError> {
        v1::decode::<HistoryV1>(bytes, Self::WHAT).map(HistoryRecord::from)
    }
}

impl Record for SweepRecord {
    const WHAT: &'static str = "sweep";
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        write_postcard(&SweepBody::V1(self.clone()), out)
    }
    fn read_body(body: &[u8]) -> Result<Self, StoreError> {
        match read_postcard(body, Self::WHAT)? {
            SweepBody::V1(sweep) => Ok(sweep),
        }
    }
    /// The v1 format had no such record.
    fn read_v1(_: &[u8]) -> Result<Self, StoreError> {
        Err(unknown_version(Self::WHAT))
    }
}

/// A record as stored under `key` in `table`.
pub fn encode<T: Record>(table: &str, key: &str, record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = frame();
    record.write_body(&mut bytes)?;
    Ok(seal(&[table], key.as_bytes(), bytes))
}

/// A record read from under `key` in `table`, checked.
pub fn decode<T: Record>(table: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    T::read_body(open(&[table], key.as_bytes(), bytes)?)
}

/// The versions of a change-log entry's head. `V1`: one change set, whose
/// revision is the entry's key. `V2`: the change sets of one batch in one
/// project, in revision order, keyed by the last one's revision; each set
/// starts with its [`SetInChunk`] head.
#[derive(Serialize, Deserialize)]
enum SetBody {
    V1(SetHead),
    /// The first set's time and the changes of all the sets.
    V2 {
        head: SetHead,
        sets: u32,
    },
}

/// A set's head inside a `V2` entry: its revision, then its time and
/// count as [`SetHead`] (postcard writes the fields in a row); its changes
/// follow.
#[derive(Serialize, Deserialize)]
struct SetInChunk {
    revision: u64,
    head: SetHead,
}

/// One entry of the change log holding `sets` (a batch's sets in one
/// project, in revision order, at least one): the head, then each set's
/// head and each of its changes as a [`ChangeHead`] and its value's raw
/// bytes, all under one CRC. Its key is the last set's revision (in
/// decimal, for the CRC): the entries after a revision are then a range.
pub fn encode_changes(project: &str, sets: &[&ChangeSet]) -> Result<Vec<u8>, StoreError> {
    let (Some(first), Some(last)) = (sets.first(), sets.last()) else {
        return Err(StoreError::internal("an empty change-log entry"));
    };
    let count = sets.iter().map(|set| set.changes.len()).sum::<usize>();
    let head = SetHead {
        at: first.at,
        count: u32::try_from(count).map_err(StoreError::internal)?,
    };
    let mut bytes = frame();
    let sets_count = u32::try_from(sets.len()).map_err(StoreError::internal)?;
    write_postcard(
        &SetBody::V2 {
            head,
            sets: sets_count,
        },
        &mut bytes,
    )?;
    for set in sets {
        let set_head = SetInChunk {
            revision: set.revision,
            head: SetHead {
                at: set.at,
                count: u32::try_from(set.changes.len()).map_err(StoreError::internal)?,
            },
        };
        write_postcard(&set_head, &mut bytes)?;
        write_changes(&set.changes, &mut bytes)?;
    }
    let key = last.revision.to_string();
    Ok(seal(&["changes/", project], key.as_bytes(), bytes))
}

/// Each change of a set as a [`ChangeHead`] and its value's raw bytes (the
/// same layout in every format).
fn write_changes(changes: &[Change], bytes: &mut Vec<u8>) -> Result<(), StoreError> {
    for change in changes {
        let kind = match change.kind {
            ChangeKind::Put => 0,
            ChangeKind::Delete => 1,
            ChangeKind::Expired => 2,
        };
        let head = ChangeHead {
            kind,
            key: change.key.as_str(),
            content_type: &change.content_type,
            size: change.value.len() as u64,
        };
        write_postcard(&head, bytes)?;
        bytes.extend_from_slice(&change.value);
    }
    Ok(())
}

/// The head of a change-log entry alone (for compaction), checked: the
/// first set's time and the changes of all its sets.
pub fn decode_set_head(project: &str, revision: u64, bytes: &[u8]) -> Result<SetHead, StoreError> {
    let key = revision.to_string();
    let body = open(&["changes/", project], key.as_bytes(), bytes)?;
    match postcard::take_from_bytes(body) {
        Ok((SetBody::V1(head) | SetBody::V2 { head, .. }, _)) => Ok(head),
        Err(_) => Err(unknown_version("change set")),
    }
}

/// The change sets of a change-log entry whose key is `revision`, in
/// revision order, checked: each set's revision is above the one before,
/// and the last is the key.
pub fn decode_changes(
    project: &str,
    revision: u64,
    bytes: &[u8],
) -> Result<Vec<ChangeSet>, StoreError> {
    let key = revision.to_string();
    let body = open(&["changes/", project], key.as_bytes(), bytes)?;
    let damaged = || unknown_version("change set");
    let (set_body, mut rest) = postcard::take_from_bytes(body).map_err(|_| damaged())?;
    let (head, count) = match set_body {
        SetBody::V1(head) => {
            let (set, _) = read_changes(revision, head, rest).ok_or_else(damaged)?;
            return Ok(vec![set]);
        }
        SetBody::V2 { head, sets } => (head, sets),
    };
    let mut sets = Vec::with_capacity((count as usize).min(rest.len()));
    let mut changes = 0u64;
    for _ in 0..count {
        let (inner, after): (SetInChunk, _) =
            postcard::take_from_bytes(rest).map_err(|_| damaged())?;
        if sets
            .last()
            .is_some_and(|before: &ChangeSet| before.revision >= inner.revision)
        {
            return Err(damaged());
        }
        let (set, after) = read_changes(inner.revision, inner.head, after).ok_or_else(damaged)?;
        changes += u64::from(inner.head.count);
        sets.push(set);
        rest = after;
    }
    let last = sets.last().map(|set| set.revision);
    if last != Some(revision) || changes != u64::from(head.count) || !rest.is_empty() {
        return Err(damaged());
    }
    Ok(sets)
}

/// The changes after a set's head (the same layout in every format), and
/// the bytes after them.
fn read_changes(revision: u64, head: SetHead, mut rest: &[u8]) -> Option<(ChangeSet, &[u8])> {
    let mut changes = Vec::with_capacity((head.count as usize).min(rest.len()));
    for _ in 0..head.count {
        let (change, after): (ChangeHead, _) = postcard::take_from_bytes(rest).ok()?;
        let size = usize::try_from(change.size).ok()?;
        if after.len() < size {
            return None;
        }
        let kind = match change.kind {
            0 => ChangeKind::Put,
            1 => ChangeKind::Delete,
            _ => ChangeKind::Expired,
        };
        changes.push(Change {
            kind,
            key: Key::from_stored(change.key),
            content_type: change.content_type.to_owned(),
            value: Bytes::copy_from_slice(&after[..size]),
        });
        rest = &after[size..];
    }
    Some((ChangeSet::new(revision, head.at, changes), rest))
}

/// A change set as v1 wrote it (for the migration).
pub fn decode_v1_changes(revision: u64, bytes: &[u8]) -> Result<ChangeSet, StoreError> {
    let (head, rest): (SetHead, _) = v1::take(bytes, "change set")?;
    read_changes(revision, head, rest)
        .map(|(set, _)| set)
        .ok_or_else(|| StoreError::DataCorrupted("a v1 change set cannot be read".to_owned()))
}

/// An expiry index key: the time (milliseconds, big-endian, so that keys
/// sort by time), the project id, a zero byte, the key. Neither a project id
/// nor a key holds a zero byte.
pub fn expiry_key(at: Timestamp, project: &str, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + project.len() + 1 + key.len());
    bytes.extend_from_slice(&(at.millis().max(0) as u64).to_be_bytes());
    bytes.extend_from_slice(project.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

/// The time, project and key of an expiry index key.
pub fn parse_expiry_key(bytes: &[u8]) -> Option<(Timestamp, &str, &str)> {
    let (time, rest) = bytes.split_first_chunk::<8>()?;
    let zero = rest.iter().position(|b| *b == 0)?;
    let project = std::str::from_utf8(&rest[..zero]).ok()?;
    let key = std::str::from_utf8(&rest[zero + 1..]).ok()?;
    Some((
        Timestamp::from_millis(u64::from_be_bytes(*time) as i64),
        project,
        key,
    ))
}

/// A key's record as stored, version 1 (frozen).
#[derive(Serialize, Deserialize)]
struct KeyV1 {
    version: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
    expires_at: Option<Timestamp>,
    size: u64,
    content_type: String,
    inline: bool,
    value_crc: u32,
}

/// A key's record as stored, version 2: what version 1 holds, in fewer
/// bytes. A common content type is a number ([`KNOWN_TYPES`]) instead of its
/// text, and the creation time is told by how long before the update it was
/// (0, one byte, for a key written once). With 100-byte values these save
/// about 28 of a key's 175 bytes on disk and in memory.
#[derive(Serialize, Deserialize)]
struct KeyV2<'a> {
    version: u64,
    updated_at: Timestamp,
    /// `updated_at - created_at` in milliseconds (wrapping: any pair of
    /// times comes back as it was).
    created_before: i64,
    expires_at: Option<Timestamp>,
    size: u64,
    #[serde(borrow)]
    content_type: StoredType<'a>,
    inline: bool,
    value_crc: u32,
}

/// A content type as a key's record keeps it.
#[derive(Serialize, Deserialize)]
enum StoredType<'a> {
    /// The type at this index of [`KNOWN_TYPES`].
    Known(u8),
    Text(&'a str),
}

/// Content types stored as their index. Frozen: a release may only add to
/// the end. A type is known only as exactly this text; any other spelling
/// is stored as text.
const KNOWN_TYPES: [&str; 8] = [
    "application/octet-stream",
    "text/plain; charset=utf-8",
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "text/html; charset=utf-8",
    "application/json; charset=utf-8",
    "text/csv",
];

impl<'a> StoredType<'a> {
    fn of(content_type: &'a str) -> StoredType<'a> {
        match KNOWN_TYPES.iter().position(|known| *known == content_type) {
            Some(index) => StoredType::Known(index as u8),
            None => StoredType::Text(content_type),
        }
    }

    /// The type's text; `None` for an index this release does not know.
    fn text(&self) -> Option<&'a str> {
        match *self {
            StoredType::Known(index) => KNOWN_TYPES.get(index as usize).copied(),
            StoredType::Text(text) => Some(text),
        }
    }
}

/// The versions of a key's record.
#[derive(Serialize, Deserialize)]
enum KeyBody<'a> {
    V1(KeyV1),
    #[serde(borrow)]
    V2(KeyV2<'a>),
}

/// The CRC of a value kept in the values table.
fn value_checksum(project: &str, key: &str, value: &[u8]) -> u32 {
    checksum(&["values/", project], key.as_bytes(), value)
}

/// A key's entry: the record, then the value itself when it is inline, under
/// one CRC. A value kept in the values table has its CRC in the record.
pub fn encode_entry(
    project: &str,
    key: &str,
    record: &KeyRecord,
    value: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let body = KeyBody::V2(KeyV2 {
        version: record.version,
        updated_at: record.updated_at,
        created_before: record
            .updated_at
            .millis()
            .wrapping_sub(record.created_at.millis()),
        expires_at: record.expires_at,
        size: record.size,
        content_type: StoredType::of(&record.content_type),
        inline: record.inline,
        value_crc: if record.inline {
            0
        } else {
            value_checksum(project, key, value)
        },
    });
    let mut bytes = frame();
    write_postcard(&body, &mut bytes)?;
    if record.inline {
        bytes.extend_from_slice(value);
    }
    Ok(seal(&["keys/", project], key.as_bytes(), bytes))
}

/// The record of an entry and the bytes after it (the inline value, if
/// any), once the entry's CRC holds.
pub fn decode_entry<'a>(
    project: &str,
    key: &str,
    bytes: &'a [u8],
) -> Result<(KeyRecord, &'a [u8]), StoreError> {
    let body = open(&["keys/", project], key.as_bytes(), bytes)?;
    let (stored, inline) = postcard::take_from_bytes(body).map_err(|_| unknown_version("key"))?;
    let record = match stored {
        KeyBody::V1(stored) => KeyRecord {
            version: stored.version,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
            expires_at: stored.expires_at,
            size: stored.size,
            content_type: stored.content_type,
            inline: stored.inline,
            value_crc: stored.value_crc,
        },
        KeyBody::V2(stored) => KeyRecord {
            version: stored.version,
            created_at: Timestamp::from_millis(
                stored
                    .updated_at
                    .millis()
                    .wrapping_sub(stored.created_before),
            ),
            updated_at: stored.updated_at,
            expires_at: stored.expires_at,
            size: stored.size,
            content_type: stored
                .content_type
                .text()
                .ok_or_else(|| unknown_version("key"))?
                .to_owned(),
            inline: stored.inline,
            value_crc: stored.value_crc,
        },
    };
    if record.inline && inline.len() as u64 != record.size {
        return Err(corrupted(&["keys/", project], key.as_bytes()));
    }
    Ok((record, inline))
}

/// Checks a value read from the values table against its key's record.
pub fn check_value(
    project: &str,
    key: &str,
    record: &KeyRecord,
    value: &[u8],
) -> Result<(), StoreError> {
    if value.len() as u64 == record.size && value_checksum(project, key, value) == record.value_crc
    {
        Ok(())
    } else {
        Err(corrupted(&["values/", project], key.as_bytes()))
    }
}

/// An entry as v1 wrote it (for the migration): the record, and the inline
/// value.
pub fn decode_v1_entry(bytes: &[u8]) -> Result<(KeyRecord, &[u8]), StoreError> {
    let (old, inline): (v1::Key, _) = v1::take(bytes, "key")?;
    let record = KeyRecord {
        version: old.version,
        created_at: Timestamp::from_millis(old.created_at),
        updated_at: Timestamp::from_millis(old.updated_at),
        expires_at: old.expires_at.map(Timestamp::from_millis),
        size: old.size,
        content_type: old.content_type,
        inline: old.inline,
        value_crc: 0,
    };
    Ok((record, inline))
}

/// Maps any redb error to a store error: a full disk is `StorageFull`
/// (answered 507), the rest `Internal`.
pub fn storage_error(error: impl Into<redb::Error>) -> StoreError {
    let error = error.into();
    let full = match &error {
        redb::Error::Io(io) => io.raw_os_error() == Some(28),
        _ => error.to_string().contains("No space left on device"),
    };
    if full {
        StoreError::StorageFull
    } else {
        StoreError::internal(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Digest, ProjectId, Role, StorageMode, TokenId, TokenSource};

    fn record(inline: bool) -> KeyRecord {
        KeyRecord {
            version: 7,
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(2),
            expires_at: Some(Timestamp::from_millis(3)),
            size: 3,
            content_type: "text/plain".to_owned(),
            inline,
            value_crc: 0,
        }
    }

    fn settings() -> ProjectSettings {
        ProjectSettings {
            id: ProjectId::parse("p").unwrap(),
            storage: StorageMode::Memory,
            keys_discoverable: false,
            max_value_bytes: 4096,
            max_keys: Some(9),
            public: Public::Read,
            created_at: Timestamp::from_millis(5),
            created_revision: 11,
        }
    }

    fn token() -> TokenRecord {
        TokenRecord {
            id: TokenId::from_path("tok_1"),
            digest: Digest([7; 32]),
            role: Role::Manage,
            project: ProjectId::parse("p"),
            prefix: Some("a/".to_owned()),
            name: None,
            created_at: Timestamp::from_millis(5),
            expires_at: Some(Timestamp::from_millis(6)),
            source: TokenSource::Import,
        }
    }

    fn change_set() -> Vec<Change> {
        vec![
            Change {
                kind: ChangeKind::Put,
                key: Key::from_stored("a"),
                content_type: "text/plain".to_owned(),
                value: Bytes::from_static(b"abc"),
            },
            Change {
                kind: ChangeKind::Delete,
                key: Key::from_stored("b"),
                content_type: String::new(),
                value: Bytes::new(),
            },
        ]
    }

    #[test]
    fn every_record_round_trips_and_is_checked_against_its_table_and_key() {
        let bytes = encode_entry("p", "k", &record(true), b"abc").unwrap();
        assert_eq!(
            decode_entry("p", "k", &bytes).unwrap(),
            (record(true), &b"abc"[..])
        );
        assert!(decode_entry("p", "other", &bytes).is_err());
        assert!(decode_entry("q", "k", &bytes).is_err());

        let external = encode_entry("p", "k", &record(false), b"abc").unwrap();
        let (stored, inline) = decode_entry("p", "k", &external).unwrap();
        assert!(inline.is_empty());
        assert!(check_value("p", "k", &stored, b"abc").is_ok());
        assert!(check_value("p", "k", &stored, b"abd").is_err());
        assert!(check_value("p", "j", &stored, b"abc").is_err());

        let project = encode("catalog/projects", "p", &settings()).unwrap();
        assert_eq!(
            decode::<ProjectSettings>("catalog/projects", "p", &project).unwrap(),
            settings()
        );
        assert!(decode::<ProjectSettings>("catalog/tokens", "p", &project).is_err());
        let stored = encode("catalog/tokens", "tok_1", &token()).unwrap();
        assert_eq!(
            decode::<TokenRecord>("catalog/tokens", "tok_1", &stored).unwrap(),
            token()
        );
        let stats = StatsRecord {
            keys: 1,
            bytes: 2,
            revision: 3,
        };
        let stored = encode("stats", "p", &stats).unwrap();
        assert_eq!(decode::<StatsRecord>("stats", "p", &stored).unwrap(), stats);
        assert!(decode::<StatsRecord>("stats", "q", &stored).is_err());
        let history = HistoryRecord {
            compacted: 4,
            changes: 5,
            oldest: Some(Timestamp::from_millis(6)),
            bytes: 7,
        };
        let stored = encode("history", "p", &history).unwrap();
        assert_eq!(
            decode::<HistoryRecord>("history", "p", &stored).unwrap(),
            history
        );
        // A version 1 body (before the byte count) still reads, with 0 bytes.
        let mut old = frame();
        let v1 = HistoryV1 {
            compacted: 4,
            changes: 5,
            oldest: Some(Timestamp::from_millis(6)),
        };
        write_postcard(&HistoryBody::V1(v1), &mut old).unwrap();
        let old = seal(&["history"], b"p", old);
        assert_eq!(
            decode::<HistoryRecord>("history", "p", &old).unwrap(),
            HistoryRecord {
                bytes: 0,
                ..history
            }
        );

        let at = Timestamp::from_millis(9);
        let one = ChangeSet::new(12, at, change_set());
        let set = encode_changes("p", &[&one]).unwrap();
        let read = decode_changes("p", 12, &set).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].revision, read[0].at), (12, at));
        assert_eq!(read[0].changes.len(), 2);
        assert_eq!(read[0].changes[0].value, Bytes::from_static(b"abc"));
        assert_eq!(decode_set_head("p", 12, &set).unwrap().count, 2);
        assert!(decode_changes("p", 13, &set).is_err());

        let index = expiry_key(at, "p", "a/b c");
        assert_eq!(parse_expiry_key(&index), Some((at, "p", "a/b c")));
        assert!(expiry_key(at, "z", "z") < expiry_key(at.plus_seconds(1), "a", "a"));
    }

    /// A key's entry is written as version 2: a known content type as its
    /// index, any other as text, and the creation time back as it was
    /// (after the update too, as a clock set back can leave it). An entry
    /// written as version 1 (before) still reads.
    #[test]
    fn key_entries_are_written_small_and_version_1_still_reads() {
        let at = |millis| Timestamp::from_millis(millis);
        let with = |content_type: &str, created_at, updated_at| KeyRecord {
            content_type: content_type.to_owned(),
            created_at,
            updated_at,
            ..record(true)
        };
        let cases = [
            with(
                "application/octet-stream",
                at(1_764_000_000_000),
                at(1_764_000_000_000),
            ),
            with(
                "text/plain; charset=utf-8",
                at(1_700_000_000_000),
                at(1_764_000_000_000),
            ),
            with("text/csv", at(1_764_000_000_001), at(1_764_000_000_000)),
            with("Application/JSON", at(i64::MIN), at(i64::MAX)),
            with("", at(i64::MAX), at(i64::MIN)),
        ];
        // A record too long for write_postcard's buffer on the stack.
        let long = with(&"x".repeat(300), at(1), at(2));
        for case in cases.iter().chain([&long]) {
            let bytes = encode_entry("p", "k", case, b"abc").unwrap();
            assert_eq!(
                decode_entry("p", "k", &bytes).unwrap(),
                (case.clone(), &b"abc"[..])
            );
        }
        // A key written once with a known type: the type takes two bytes and
        // the creation time one, 28 fewer than version 1's 49.
        let v2 = encode_entry("p", "k", &cases[0], b"").unwrap();
        let mut v1 = frame();
        let old = KeyV1 {
            version: cases[0].version,
            created_at: cases[0].created_at,
            updated_at: cases[0].updated_at,
            expires_at: cases[0].expires_at,
            size: cases[0].size,
            content_type: cases[0].content_type.clone(),
            inline: true,
            value_crc: 0,
        };
        write_postcard(&KeyBody::V1(old), &mut v1).unwrap();
        v1.extend_from_slice(b"abc");
        let v1 = seal(&["keys/", "p"], b"k", v1);
        assert_eq!(v1.len() - 3 - v2.len(), 28);
        assert_eq!(
            decode_entry("p", "k", &v1).unwrap(),
            (cases[0].clone(), &b"abc"[..])
        );
        // An index past the known types (a newer release's) is refused.
        let mut newer = frame();
        write_postcard(
            &KeyBody::V2(KeyV2 {
                version: 1,
                updated_at: at(0),
                created_before: 0,
                expires_at: None,
                size: 0,
                content_type: StoredType::Known(KNOWN_TYPES.len() as u8),
                inline: true,
                value_crc: 0,
            }),
            &mut newer,
        )
        .unwrap();
        let newer = seal(&["keys/", "p"], b"k", newer);
        assert!(matches!(
            decode_entry("p", "k", &newer),
            Err(StoreError::Internal(_))
        ));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_record_is_caught() {
        let entry = encode_entry("p", "k", &record(true), b"abc").unwrap();
        let project = encode("catalog/projects", "p", &settings()).unwrap();
        let first = ChangeSet::new(1, Timestamp::from_millis(1), change_set());
        let second = ChangeSet::new(3, Timestamp::from_millis(2), change_set());
        let set = encode_changes("p", &[&first, &second]).unwrap();
        for bit in 0..entry.len() * 8 {
            let mut damaged = entry.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_entry("p", "k", &damaged).is_err(), "bit {bit}");
        }
        for bit in 0..project.len() * 8 {
            let mut damaged = project.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode::<ProjectSettings>("catalog/projects", "p", &damaged).is_err(),
                "bit {bit}"
            );
        }
        for bit in 0..set.len() * 8 {
            let mut damaged = set.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_changes("p", 3, &damaged).is_err(), "bit {bit}");
        }
        // A damaged error names table and key, for the log and `kvs verify`.
        let error = decode_entry("p", "k", &entry[..entry.len() - 1]).unwrap_err();
        assert!(matches!(error, StoreError::DataCorrupted(ref text) if text.contains("keys/p")));
    }

    /// A batch's sets in one project are one entry, keyed by the last
    /// revision: read back whole and in order, with the first set's time and
    /// every change counted in its head for compaction.
    #[test]
    fn an_entry_of_the_change_log_holds_a_batchs_sets_in_order() {
        let sets: Vec<ChangeSet> = [4, 7, 9]
            .iter()
            .map(|&revision| {
                ChangeSet::new(
                    revision,
                    Timestamp::from_millis(revision as i64),
                    change_set(),
                )
            })
            .collect();
        let refs: Vec<&ChangeSet> = sets.iter().collect();
        let entry = encode_changes("p", &refs).unwrap();
        let read = decode_changes("p", 9, &entry).unwrap();
        let revisions: Vec<u64> = read.iter().map(|set| set.revision).collect();
        assert_eq!(revisions, [4, 7, 9]);
        for (read, written) in read.iter().zip(&sets) {
            assert_eq!(read.at, written.at);
            assert_eq!(read.changes.len(), 2);
            assert_eq!(read.changes[0].key.as_str(), "a");
            assert_eq!(read.changes[0].value, Bytes::from_static(b"abc"));
            assert_eq!(read.changes[1].kind, ChangeKind::Delete);
        }
        let head = decode_set_head("p", 9, &entry).unwrap();
        assert_eq!((head.at, head.count), (Timestamp::from_millis(4), 6));
        // The key is the last revision, and it is under the CRC.
        assert!(decode_changes("p", 7, &entry).is_err());
        assert!(encode_changes("p", &[]).is_err());
    }

    /// An entry written before entries held several sets (`SetBody::V1`,
    /// one set keyed by its revision) reads as an entry of one set.
    #[test]
    fn a_change_log_entry_of_one_set_as_format_2_wrote_it_still_reads() {
        let at = Timestamp::from_millis(5);
        let mut bytes = frame();
        write_postcard(&SetBody::V1(SetHead { at, count: 2 }), &mut bytes).unwrap();
        write_changes(&change_set(), &mut bytes).unwrap();
        let old = seal(&["changes/", "p"], b"12", bytes);
        let read = decode_changes("p", 12, &old).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].revision, read[0].at), (12, at));
        assert_eq!(read[0].changes[0].value, Bytes::from_static(b"abc"));
        assert_eq!(
            decode_set_head("p", 12, &old).unwrap(),
            SetHead { at, count: 2 }
        );
    }

    /// Sets out of order, or a head whose count is not the sets', are
    /// refused although the CRC holds (a writer's bug, not a torn page).
    #[test]
    fn a_change_log_entry_that_contradicts_itself_is_refused() {
        let write = |sets: &[(u64, u32)], total: u32, key: &[u8]| {
            let mut bytes = frame();
            let head = SetHead {
                at: Timestamp::from_millis(1),
                count: total,
            };
            let body = SetBody::V2 {
                head,
                sets: sets.len() as u32,
            };
            write_postcard(&body, &mut bytes).unwrap();
            for &(revision, count) in sets {
                let inner = SetInChunk {
                    revision,
                    head: SetHead {
                        at: Timestamp::from_millis(1),
                        count,
                    },
                };
                write_postcard(&inner, &mut bytes).unwrap();
                for _ in 0..count {
                    let change = ChangeHead {
                        kind: 0,
                        key: "k",
                        content_type: "",
                        size: 1,
                    };
                    write_postcard(&change, &mut bytes).unwrap();
                    bytes.push(b'x');
                }
            }
            seal(&["changes/", "p"], key, bytes)
        };
        assert!(decode_changes("p", 5, &write(&[(3, 1), (5, 1)], 2, b"5")).is_ok());
        assert!(decode_changes("p", 5, &write(&[(5, 1), (3, 1)], 2, b"5")).is_err());
        assert!(decode_changes("p", 5, &write(&[(3, 1), (3, 1)], 2, b"5")).is_err());
        assert!(decode_changes("p", 5, &write(&[(3, 1), (5, 1)], 3, b"5")).is_err());
        assert!(decode_changes("p", 6, &write(&[(3, 1), (5, 1)], 2, b"6")).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the inputs look like records of each format.
            if round % 2 == 0 && !bytes.is_empty() {
                bytes[0] = if round % 4 == 0 { v1::TAG } else { FORMAT };
            }
            decode_every_way(&bytes);
        }
    }

    /// `bytes` read as every record type, of every format, and as the body
    /// of a record whose CRC holds; each read may only refuse.
    fn decode_every_way(bytes: &[u8]) {
        let _ = decode_entry("p", "k", bytes);
        let _ = decode::<ProjectSettings>("catalog/projects", "p", bytes);
        let _ = decode::<TokenRecord>("catalog/tokens", "t", bytes);
        let _ = decode::<StatsRecord>("stats", "p", bytes);
        let _ = decode::<HistoryRecord>("history", "p", bytes);
        let _ = decode_changes("p", 1, bytes);
        let _ = decode_set_head("p", 1, bytes);
        let _ = decode_v1_entry(bytes);
        let _ = decode_v1_changes(1, bytes);
        let _ = ProjectSettings::read_v1(bytes);
        let _ = TokenRecord::read_v1(bytes);
        let _ = StatsRecord::read_v1(bytes);
        let _ = HistoryRecord::read_v1(bytes);
        let body = [frame(), bytes.to_vec()].concat();
        let sealed = seal(&["keys/", "p"], b"k", body.clone());
        let _ = decode_entry("p", "k", &sealed);
        let sealed = seal(&["changes/", "p"], b"1", body.clone());
        let _ = decode_changes("p", 1, &sealed);
        let sealed = seal(&["history"], b"p", body);
        let _ = decode::<HistoryRecord>("history", "p", &sealed);
    }

    /// v1 records as the release before checksums wrote them: tag 1 and
    /// postcard of the domain struct (bytes made by that release).
    #[test]
    fn v1_records_decode() {
        let mut project = vec![v1::TAG];
        project.extend(postcard::to_allocvec(&v1::Project::from_settings(&settings())).unwrap());
        // The v1 format had no `public`: such a project is not public.
        let private = ProjectSettings {
            public: Public::None,
            ..settings()
        };
        assert_eq!(ProjectSettings::read_v1(&project).unwrap(), private);
        // Nor is one whose body is still the first version.
        let mut body = Vec::new();
        write_postcard(
            &ProjectBody::V1(v1::Project::from_settings(&settings())),
            &mut body,
        )
        .unwrap();
        assert_eq!(ProjectSettings::read_body(&body).unwrap(), private);
        let mut stored = vec![v1::TAG];
        stored.extend(postcard::to_allocvec(&v1::Token::from_record(&token())).unwrap());
        assert_eq!(TokenRecord::read_v1(&stored).unwrap(), token());
        // `KeyRecord` of the v1 release: version 7, created 1, updated 2,
        // expires 3, size 3, "text/plain", inline; then the value.
        let mut entry = vec![1, 7, 2, 4, 1, 6, 3, 10];
        entry.extend_from_slice(b"text/plain");
        entry.push(1);
        entry.extend_from_slice(b"abc");
        let (read, inline) = decode_v1_entry(&entry).unwrap();
        assert_eq!((read, inline), (record(true), &b"abc"[..]));
        // `StatsRecord` {1, 2, 3} and a change set of one put of "a".
        assert_eq!(
            StatsRecord::read_v1(&[1, 1, 2, 3]).unwrap(),
            StatsRecord {
                keys: 1,
                bytes: 2,
                revision: 3
            }
        );
        let set = [1, 18, 1, 0, 1, b'a', 1, b't', 2, b'h', b'i'];
        let read = decode_v1_changes(5, &set).unwrap();
        assert_eq!(read.changes[0].key.as_str(), "a");
        assert_eq!(read.changes[0].value, Bytes::from_static(b"hi"));
        assert!(decode_v1_entry(&[2, 0]).is_err());
    }

    proptest::proptest! {
        /// Arbitrary bytes under every record type: read or refused with a
        /// typed error, never a panic.
        #[test]
        fn records_of_arbitrary_bytes_are_refused_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            decode_every_way(&bytes);
        }
    }
}
