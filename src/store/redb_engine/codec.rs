//! How the redb engine lays data out: table names and the records stored in
//! them. Records are postcard behind a one-byte format tag, so that a later
//! layout can be told apart from this one.

use redb::TableDefinition;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::domain::{Key, Timestamp};
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

pub const REVISION: &str = "revision";
pub const RESERVED: &str = "reserved";

const FORMAT: u8 = 1;

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

    /// The project's change log: revision → the changes of that revision
    /// ([`encode_changes`]).
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

/// A key's metadata as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub size: u64,
    pub content_type: String,
    /// Whether the value follows the record in the same entry.
    pub inline: bool,
}

impl KeyRecord {
    /// Whether the key's expiry has come: an expired key is absent for every
    /// reader and op, before the sweep removes it.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The record of a key with this metadata, its value inline or not.
    pub fn from_meta(meta: &KeyMeta, inline: bool) -> KeyRecord {
        KeyRecord {
            version: meta.version,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            expires_at: meta.expires_at,
            size: meta.size,
            content_type: meta.content_type.clone(),
            inline,
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

/// A project's live figures as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRecord {
    pub keys: u64,
    pub bytes: u64,
    pub revision: u64,
}

/// A project's change log as stored: how far it has been compacted, how
/// many changes it keeps, and the time of its oldest change set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The newest revision whose changes were dropped.
    pub compacted: u64,
    /// Changes kept.
    pub changes: u64,
    /// When the oldest kept change set was written.
    pub oldest: Option<Timestamp>,
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

/// A change set's entry in the change log.
pub fn encode_changes(at: Timestamp, changes: &[Change]) -> Result<Vec<u8>, StoreError> {
    let head = SetHead {
        at,
        count: changes.len() as u32,
    };
    let mut bytes = encode(&head)?;
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
        postcard::to_io(&head, &mut bytes).map_err(StoreError::internal)?;
        bytes.extend_from_slice(&change.value);
    }
    Ok(bytes)
}

/// The head of a change set's entry alone (for compaction).
pub fn decode_set_head(bytes: &[u8]) -> Result<SetHead, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => Ok(postcard::take_from_bytes(rest)
            .map_err(StoreError::internal)?
            .0),
        _ => Err(StoreError::Internal(
            "a change set has an unknown format".to_owned(),
        )),
    }
}

/// A change set read back from the change log.
pub fn decode_changes(revision: u64, bytes: &[u8]) -> Result<ChangeSet, StoreError> {
    let Some((&FORMAT, rest)) = bytes.split_first() else {
        return Err(StoreError::Internal(
            "a change set has an unknown format".to_owned(),
        ));
    };
    let (head, mut rest): (SetHead, _) =
        postcard::take_from_bytes(rest).map_err(StoreError::internal)?;
    let mut changes = Vec::with_capacity(head.count as usize);
    for _ in 0..head.count {
        let (change, after): (ChangeHead, _) =
            postcard::take_from_bytes(rest).map_err(StoreError::internal)?;
        let size = usize::try_from(change.size).map_err(StoreError::internal)?;
        if after.len() < size {
            return Err(StoreError::Internal("a change set is truncated".to_owned()));
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
    Ok(ChangeSet::new(revision, head.at, changes))
}

pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT];
    postcard::to_io(record, &mut bytes).map_err(StoreError::internal)?;
    Ok(bytes)
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

/// A key's entry: the record, then the value itself when it is inline.
pub fn encode_entry(record: &KeyRecord, value: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut bytes = encode(record)?;
    if record.inline {
        bytes.extend_from_slice(value);
    }
    Ok(bytes)
}

/// The record of an entry and the bytes after it (the inline value, if any).
pub fn decode_entry(bytes: &[u8]) -> Result<(KeyRecord, &[u8]), StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::take_from_bytes(rest).map_err(StoreError::internal),
        _ => Err(StoreError::Internal(
            "a record has an unknown format".to_owned(),
        )),
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(StoreError::internal),
        _ => Err(StoreError::Internal(
            "a record has an unknown format".to_owned(),
        )),
    }
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

    #[test]
    fn records_round_trip_and_unknown_formats_are_refused() {
        let record = KeyRecord {
            version: 7,
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(2),
            expires_at: None,
            size: 3,
            content_type: "text/plain".to_owned(),
            inline: true,
        };
        let bytes = encode_entry(&record, b"abc").unwrap();
        assert_eq!(decode_entry(&bytes).unwrap(), (record.clone(), &b"abc"[..]));
        let at = Timestamp::from_millis(1_795_255_200_123);
        let index = expiry_key(at, "p", "a/b c");
        assert_eq!(parse_expiry_key(&index), Some((at, "p", "a/b c")));
        assert!(expiry_key(at, "z", "z") < expiry_key(at.plus_seconds(1), "a", "a"));
        let external = KeyRecord {
            inline: false,
            ..record
        };
        let bytes = encode_entry(&external, b"abc").unwrap();
        assert_eq!(decode_entry(&bytes).unwrap(), (external, &b""[..]));
        assert!(decode::<KeyRecord>(&[9, 1, 2]).is_err());
        assert!(decode::<KeyRecord>(&[]).is_err());
    }
}
