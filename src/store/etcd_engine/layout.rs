//! Where everything lives under the key prefix (default `kvs/`), and how
//! records are encoded. All names are the prefix and then:
//!
//! - `c/p/{project}`: a project's settings (the codec's versioned record);
//!   its etcd `create_revision` is the project's incarnation.
//! - `c/t/{token id}`: a token record (its SHA-256 digest, never a secret).
//! - `c/i/{token id}`: the digest another server kept of an imported
//!   token's key, until the key is first presented.
//! - `c/gen`: written by every catalog write, which compares its
//!   `mod_revision`: catalog writes are judged one after the other.
//! - `k/{project}/{key}`: a key's record and value (the codec's entry: times,
//!   expiry, content type, size and the value under one CRC). Its version is
//!   the etcd `mod_revision` of that write.
//! - `x/{expiry ms, 20 digits}/{project}/{key}`: the expiry index the sweep
//!   reads in time order.
//! - `m/sweep`: put by each sweep in the transaction that deletes expired
//!   keys, so that every node reads those deletes as expiries.
//!
//! Project ids hold no `/`, so `k/{project}/` is exactly one project's keys,
//! and etcd's byte order is the contract's key order.

use bytes::Bytes;

use crate::domain::{ImportedDigest, Key, ProjectSettings, Timestamp, TokenRecord};
use crate::store::redb_engine::codec::{self, KeyRecord};
use crate::store::{KeyMeta, StoreError};

const PROJECTS: &str = "etcd/projects";
const TOKENS: &str = "etcd/tokens";

/// A stored name, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Name<'a> {
    Project(&'a str),
    Token(&'a str),
    Imported(&'a str),
    Generation,
    Key { project: &'a str, key: &'a str },
    Expiry,
    Sweep,
    Other,
}

/// The names of one deployment (one key prefix).
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_owned(),
        }
    }

    /// Everything kvs keeps: the prefix itself.
    pub fn all(&self) -> Vec<u8> {
        self.prefix.as_bytes().to_vec()
    }

    pub fn catalog(&self) -> String {
        format!("{}c/", self.prefix)
    }

    pub fn project(&self, id: &str) -> String {
        format!("{}c/p/{id}", self.prefix)
    }

    pub fn token(&self, id: &str) -> String {
        format!("{}c/t/{id}", self.prefix)
    }

    pub fn imported(&self, id: &str) -> String {
        format!("{}c/i/{id}", self.prefix)
    }

    pub fn generation(&self) -> String {
        format!("{}c/gen", self.prefix)
    }

    /// The range of one project's keys.
    pub fn keys(&self, project: &str) -> String {
        format!("{}k/{project}/", self.prefix)
    }

    pub fn key(&self, project: &str, key: &str) -> String {
        format!("{}k/{project}/{key}", self.prefix)
    }

    pub fn expiries(&self) -> String {
        format!("{}x/", self.prefix)
    }

    /// The expiry index entries due at or before `at`: `[expiries, due)`.
    pub fn due(&self, at: Timestamp) -> String {
        format!("{}x/{:020}/", self.prefix, at.millis().max(0) + 1)
    }

    pub fn expiry(&self, at: Timestamp, project: &str, key: &str) -> String {
        format!(
            "{}x/{:020}/{project}/{key}",
            self.prefix,
            at.millis().max(0)
        )
    }

    pub fn sweep(&self) -> String {
        format!("{}m/sweep", self.prefix)
    }

    /// What a stored name is.
    pub fn parse<'a>(&self, raw: &'a [u8]) -> Name<'a> {
        let Some(rest) = raw.strip_prefix(self.prefix.as_bytes()) else {
            return Name::Other;
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            return Name::Other;
        };
        if let Some(id) = rest.strip_prefix("c/p/") {
            Name::Project(id)
        } else if let Some(id) = rest.strip_prefix("c/t/") {
            Name::Token(id)
        } else if let Some(id) = rest.strip_prefix("c/i/") {
            Name::Imported(id)
        } else if rest == "c/gen" {
            Name::Generation
        } else if let Some(name) = rest.strip_prefix("k/") {
            match name.split_once('/') {
                Some((project, key)) => Name::Key { project, key },
                None => Name::Other,
            }
        } else if rest.starts_with("x/") {
            Name::Expiry
        } else if rest == "m/sweep" {
            Name::Sweep
        } else {
            Name::Other
        }
    }

    /// The project and key of an expiry index entry.
    pub fn parse_expiry<'a>(&self, raw: &'a [u8]) -> Option<(i64, &'a str, &'a str)> {
        let rest = raw.strip_prefix(self.expiries().as_bytes())?;
        let rest = std::str::from_utf8(rest).ok()?;
        let (millis, rest) = rest.split_once('/')?;
        let (project, key) = rest.split_once('/')?;
        Some((millis.parse().ok()?, project, key))
    }
}

/// The end of the range of every name that starts with `prefix` (etcd's
/// `range_end` for a prefix).
pub fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn encode_project(settings: &ProjectSettings) -> Result<Vec<u8>, StoreError> {
    codec::encode(PROJECTS, settings.id.as_str(), settings)
}

pub fn decode_project(id: &str, bytes: &[u8]) -> Result<ProjectSettings, StoreError> {
    codec::decode(PROJECTS, id, bytes)
}

pub fn encode_token(token: &TokenRecord) -> Result<Vec<u8>, StoreError> {
    codec::encode(TOKENS, token.id.as_str(), token)
}

pub fn decode_token(id: &str, bytes: &[u8]) -> Result<TokenRecord, StoreError> {
    codec::decode(TOKENS, id, bytes)
}

pub fn decode_imported(id: &str, bytes: &[u8]) -> Result<ImportedDigest, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| ImportedDigest::parse(text).ok())
        .ok_or_else(|| StoreError::DataCorrupted(format!("imported digest of token {id}")))
}

/// A key's stored entry: its metadata (the version is not stored: it is
/// the etcd `mod_revision`) and its value, under one CRC.
pub fn encode_key(project: &str, meta: &KeyMeta, value: &[u8]) -> Result<Vec<u8>, StoreError> {
    let record = KeyRecord::from_meta(meta, true);
    codec::encode_entry(project, meta.key.as_str(), &record, value)
}

/// A key's metadata and value from its stored entry, written at `revision`.
pub fn decode_key(
    project: &str,
    key: &str,
    bytes: &[u8],
    revision: i64,
) -> Result<(KeyMeta, Bytes), StoreError> {
    let (record, inline) = codec::decode_entry(project, key, bytes)?;
    let value = Bytes::copy_from_slice(inline);
    let mut meta = record.into_meta(Key::from_stored(key));
    meta.version = revision.max(0) as u64;
    Ok((meta, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_prefix_ranges_end_after_them() {
        let layout = Layout::new("kvs/");
        assert_eq!(
            layout.parse(layout.key("p", "a/b").as_bytes()),
            Name::Key {
                project: "p",
                key: "a/b"
            }
        );
        assert_eq!(
            layout.parse(layout.project("p").as_bytes()),
            Name::Project("p")
        );
        assert_eq!(
            layout.parse(layout.generation().as_bytes()),
            Name::Generation
        );
        assert_eq!(layout.parse(b"other/k/p/a"), Name::Other);
        let at = Timestamp::from_millis(1234);
        let entry = layout.expiry(at, "p", "k/1");
        assert_eq!(
            layout.parse_expiry(entry.as_bytes()),
            Some((1234, "p", "k/1"))
        );
        assert!(entry < layout.due(at));
        assert!(layout.expiry(Timestamp::from_millis(1235), "p", "k") >= layout.due(at));
        assert_eq!(range_end(b"kvs/"), b"kvs0");
        assert_eq!(range_end(b"a\xff"), b"b");
    }
}
