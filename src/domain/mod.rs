//! Domain types shared by every layer: keys, project ids, tokens, times,
//! durations and counters' integers. Each is parsed once at the edge
//! (`parse`/`TryFrom`) and carried as a typed value afterwards, so handlers
//! never pass raw strings around.

mod counter;
mod duration;
mod key;
mod project;
mod time;
mod token;

pub use counter::parse_counter;
pub use duration::{
    MAX_DURATION_SECS, parse_duration, parse_duration_at_most, parse_duration_json,
};
pub use key::{
    DEFAULT_CONTENT_TYPE, Key, KeyError, MAX_CONTENT_TYPE_BYTES, Prefix, is_content_type,
};
pub use project::{ProjectId, ProjectSettings, Public, StorageMode};
pub use time::{RFC3339_LEN, Timestamp};
pub use token::{
    Digest, ImportedDigest, ImportedDigestError, Role, TokenId, TokenRecord, TokenSecret,
    TokenSource,
};
