//! The v1 storage format, written by releases before checksummed records
//! (kept so that [`super::migrate`] can read a data directory they left;
//! `tests/fixtures/v1` is one). Every record was a one-byte tag `1` and
//! postcard of the domain struct of its time, field by field, with nothing
//! to check it; large values were raw bytes.
//!
//! These layouts must never change: they describe files that exist.

use serde::Deserialize;

use crate::domain::{
    Digest, ProjectId, ProjectSettings, Public, Role, StorageMode, Timestamp, TokenId, TokenRecord,
    TokenSource,
};
use crate::store::StoreError;

pub const TAG: u8 = 1;

/// `ProjectSettings` as v1 wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Project {
    pub id: String,
    /// 0 disk, 1 memory.
    pub storage: u8,
    pub keys_discoverable: bool,
    pub max_value_bytes: u64,
    pub max_keys: Option<u64>,
    pub created_at: i64,
    pub created_revision: u64,
}

/// `TokenRecord` as v1 wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Token {
    pub id: String,
    pub digest: [u8; 32],
    /// 0 read, 1 write, 2 manage, 3 admin.
    pub role: u8,
    pub project: Option<String>,
    pub prefix: Option<String>,
    pub name: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// 0 v1, 1 simple-pykv, 2 import, 3 env, 4 bootstrap.
    pub source: u8,
}

/// A key's record as v1 wrote it (the inline value follows it).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Key {
    pub version: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    pub size: u64,
    pub content_type: String,
    pub inline: bool,
}

fn malformed(what: &str) -> StoreError {
    StoreError::DataCorrupted(format!("a v1 {what} record cannot be read"))
}

/// The postcard body of a v1 record, after its tag.
pub fn body<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], StoreError> {
    match bytes.split_first() {
        Some((&TAG, rest)) => Ok(rest),
        _ => Err(malformed(what)),
    }
}

/// A whole v1 record of type `T`.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(body(bytes, what)?).map_err(|_| malformed(what))
}

/// A v1 record followed by raw bytes (a key's entry, a change set's head).
pub fn take<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<(T, &'a [u8]), StoreError> {
    postcard::take_from_bytes(body(bytes, what)?).map_err(|_| malformed(what))
}

impl Project {
    pub fn from_settings(settings: &ProjectSettings) -> Project {
        Project {
            id: settings.id.as_str().to_owned(),
            storage: match settings.storage {
                StorageMode::Disk => 0,
                StorageMode::Memory => 1,
            },
            keys_discoverable: settings.keys_discoverable,
            max_value_bytes: settings.max_value_bytes,
            max_keys: settings.max_keys,
            created_at: settings.created_at.millis(),
            created_revision: settings.created_revision,
        }
    }

    pub fn into_settings(self) -> Result<ProjectSettings, StoreError> {
        Ok(ProjectSettings {
            id: ProjectId::parse(&self.id).ok_or_else(|| malformed("project"))?,
            storage: match self.storage {
                0 => StorageMode::Disk,
                1 => StorageMode::Memory,
                _ => return Err(malformed("project")),
            },
            keys_discoverable: self.keys_discoverable,
            max_value_bytes: self.max_value_bytes,
            max_keys: self.max_keys,
            public: Public::None,
            created_at: Timestamp::from_millis(self.created_at),
            created_revision: self.created_revision,
        })
    }
}

impl Token {
    pub fn from_record(record: &TokenRecord) -> Token {
        Token {
            id: record.id.as_str().to_owned(),
            digest: record.digest.0,
            role: match record.role {
                Role::Read => 0,
                Role::Write => 1,
                Role::Manage => 2,
                Role::Admin => 3,
            },
            project: record.project.as_ref().map(|p| p.as_str().to_owned()),
            prefix: record.prefix.clone(),
            name: record.name.clone(),
            created_at: record.created_at.millis(),
            expires_at: record.expires_at.map(Timestamp::millis),
            source: match record.source {
                TokenSource::V1 => 0,
                TokenSource::SimplePykv => 1,
                TokenSource::Import => 2,
                TokenSource::Env => 3,
                TokenSource::Bootstrap => 4,
            },
        }
    }

    pub fn into_record(self) -> Result<TokenRecord, StoreError> {
        let project = match self.project {
            Some(id) => Some(ProjectId::parse(&id).ok_or_else(|| malformed("token"))?),
            None => None,
        };
        Ok(TokenRecord {
            id: TokenId::from_path(&self.id),
            digest: Digest(self.digest),
            role: match self.role {
                0 => Role::Read,
                1 => Role::Write,
                2 => Role::Manage,
                3 => Role::Admin,
                _ => return Err(malformed("token")),
            },
            project,
            prefix: self.prefix,
            name: self.name,
            created_at: Timestamp::from_millis(self.created_at),
            expires_at: self.expires_at.map(Timestamp::from_millis),
            source: match self.source {
                0 => TokenSource::V1,
                1 => TokenSource::SimplePykv,
                2 => TokenSource::Import,
                3 => TokenSource::Env,
                4 => TokenSource::Bootstrap,
                _ => return Err(malformed("token")),
            },
        })
    }
}
