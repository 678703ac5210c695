//! Storage: the one place that knows where keys, projects and tokens live.
//!
//! Everything above this module talks to a [`Store`]: an async, transactional
//! interface whose writes all go through two entry points, [`Store::write_kv`]
//! (a list of key operations applied at one revision, or not at all) and
//! [`Store::write_catalog`] (projects, settings and tokens). The store issues
//! revisions, keeps per-key metadata, and publishes the [`Catalog`] that the
//! HTTP layer reads on every request to authenticate without touching disk.
//!
//! The product's rules live here, above any engine: [`kv`] judges key/value
//! writes (preconditions, expiry, quotas, value limits, `incr`), [`plan`]
//! judges catalog writes (ids taken once, token scopes, the last admin
//! token), and [`publish`] is the one step that makes a commit visible. An
//! engine stores what they decided, issues revisions and serves reads;
//! [`redb_engine`] is the embedded one. `tests/store/` holds the suite every
//! engine must pass.

mod catalog;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd_engine;
mod feed;
pub mod kv;
pub mod plan;
pub mod publish;
pub mod redb_engine;
mod verify;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use catalog::{Catalog, Project, ProjectStats};
pub use error::StoreError;
pub use feed::{Change, ChangeKind, ChangeSet, ChangeSets, Feed};
pub use kv::Figures;
pub use plan::CatalogDelta;
pub use verify::{Damage, Report, UNFOUND, UNINDEXED};

/// What a compaction did (`kvs compact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The size of the database file before and after, in bytes.
    pub before: u64,
    pub after: u64,
    /// Tables of the disk database copied, and the rows copied (in both
    /// databases, online).
    pub tables: usize,
    pub rows: u64,
}

use crate::domain::{
    ImportedDigest, Key, Prefix, ProjectId, ProjectSettings, Public, Role, StorageMode, Timestamp,
    TokenId, TokenRecord,
};

/// A stored key's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    pub key: Key,
    /// The revision that last wrote this key.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub size: u64,
    pub content_type: String,
}

/// A key with its value.
#[derive(Clone, Debug)]
pub struct Entry {
    pub meta: KeyMeta,
    pub value: Bytes,
}

/// An answer read from the store and the server revision it reflects (at
/// least the newest version it shows).
#[derive(Debug)]
pub struct Read<T> {
    pub revision: u64,
    pub value: T,
}

/// What a conditional write requires of the key's current version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// `If-None-Match: *`: the key must be absent.
    Absent,
    /// `If-Match: *`: the key must exist.
    Exists,
    /// `If-Match: "<v>", …`: the key's version must be one of these.
    VersionIn(Vec<u64>),
}

/// One operation of a key/value write.
#[derive(Clone, Debug)]
pub enum KvOp {
    Put {
        key: Key,
        value: Bytes,
        content_type: String,
        /// Seconds until the key expires; `None` removes any expiry.
        ttl: Option<u64>,
        precondition: Option<Precondition>,
    },
    /// Deletes a key. With `must_exist`, a missing key fails the write
    /// (a DELETE request); without, it is reported as not deleted (a
    /// transaction's delete).
    Delete {
        key: Key,
        precondition: Option<Precondition>,
        must_exist: bool,
    },
    DeletePrefix {
        prefix: Prefix,
    },
    /// Writes a key exactly as given, times included: how an export is
    /// imported again.
    Restore {
        key: Key,
        value: Bytes,
        content_type: String,
        created_at: Timestamp,
        updated_at: Timestamp,
        expires_at: Option<Timestamp>,
    },
    /// Reads a key as the ops before it left it.
    Get {
        key: Key,
    },
    /// Adds `by` to a key holding a decimal 64-bit integer (a missing key
    /// counts from 0) and stores the result as decimal text.
    Incr {
        key: Key,
        by: i64,
    },
}

/// What a transaction's check requires of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key exists at exactly this version.
    Version(u64),
    /// The key exists (true) or does not (false).
    Exists(bool),
}

/// A check of a transaction, evaluated before any op.
#[derive(Clone, Debug)]
pub struct Check {
    pub key: Key,
    pub expect: Expect,
}

/// The right a write was let in under. The engine judges it again against
/// the catalog it commits the write on, so a token revoked (or expired, or
/// gone with its project) or a project closed to anonymous callers while
/// the request's body was still arriving writes nothing: the check made when
/// the headers arrived is not the last word.
#[derive(Clone, Debug)]
pub enum Grant {
    /// The server's own write (start-up, an imported key's verification,
    /// Simple-PyKV's admin routes opened by the server's settings): there is
    /// no caller's right to lose.
    Server,
    /// A token's: it must still be in the catalog, unexpired.
    Token(Arc<TokenRecord>),
    /// An anonymous caller's: the project's `public` must still grant this
    /// role to anyone.
    Public(Role),
}

impl Grant {
    /// Whether the grant still holds in `catalog` at `now` for a write to
    /// `project`: `Unauthorized` as a new request with the same credential
    /// (or none) would be refused, `Forbidden` for an anonymous caller whose
    /// project is now open only to reading.
    pub fn holds(
        &self,
        catalog: &Catalog,
        project: Option<&Project>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        match self {
            Grant::Server => Ok(()),
            Grant::Token(token) => match catalog.token(&token.digest, now) {
                Some(held) if held.id == token.id => Ok(()),
                _ => Err(StoreError::Unauthorized),
            },
            Grant::Public(role) => match project.and_then(|p| p.settings.public.role()) {
                Some(open) if open >= *role => Ok(()),
                Some(_) => Err(StoreError::Forbidden(format!(
                    "this needs a {} token; without one, this project's keys may only be read",
                    role.as_str()
                ))),
                None => Err(StoreError::Unauthorized),
            },
        }
    }
}

/// Grants are told apart by whom they stand for (the token's id, the
/// anonymous role): the etcd engine combines the increments of one key and
/// one grant into one write.
impl PartialEq for Grant {
    fn eq(&self, other: &Grant) -> bool {
        match (self, other) {
            (Grant::Server, Grant::Server) => true,
            (Grant::Token(a), Grant::Token(b)) => a.id == b.id && a.digest == b.digest,
            (Grant::Public(a), Grant::Public(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Grant {}

impl std::hash::Hash for Grant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Grant::Server => 0u8.hash(state),
            Grant::Token(token) => {
                1u8.hash(state);
                token.id.as_str().hash(state);
            }
            Grant::Public(role) => {
                2u8.hash(state);
                role.hash(state);
            }
        }
    }
}

/// Who asks for a catalog write: the right the request was let in under
/// and the incarnation of the project the write names as the request found
/// it. Both are judged again with the write ([`plan::authorize`]).
#[derive(Clone, Debug)]
pub struct Authority {
    pub grant: Grant,
    /// `None`: the write names no project, or the server's own write.
    pub incarnation: Option<u64>,
}

impl Authority {
    /// The server's own catalog write.
    pub fn server() -> Authority {
        Authority {
            grant: Grant::Server,
            incarnation: None,
        }
    }
}

/// Operations on one project, applied in order at one new revision, or not
/// at all, after every check holds. A single PUT is the one-op case.
#[derive(Clone, Debug)]
pub struct KvWrite {
    pub project: ProjectId,
    /// The incarnation of the project the request was authorized on, when
    /// known. A write that finds another one (the project was deleted and
    /// created again under its id meanwhile) is refused as
    /// `ProjectNotFound`: it is not applied to a project its token never
    /// belonged to.
    pub incarnation: Option<u64>,
    /// The right the write was let in under: an engine applies the write
    /// only if it still holds in the catalog it commits on
    /// ([`KvWrite::judge`]).
    pub grant: Grant,
    pub checks: Vec<Check>,
    pub ops: Vec<KvOp>,
}

impl KvWrite {
    /// A write of `checks` and `ops` to `project` as the request found it,
    /// under `grant`.
    pub fn to(project: &Project, grant: Grant, checks: Vec<Check>, ops: Vec<KvOp>) -> KvWrite {
        KvWrite {
            project: project.settings.id.clone(),
            incarnation: Some(project.incarnation),
            grant,
            checks,
            ops,
        }
    }

    /// Whether the write was meant for this incarnation of its project.
    pub fn meant_for(&self, project: &Project) -> bool {
        self.incarnation
            .is_none_or(|incarnation| incarnation == project.incarnation)
    }

    /// Whether the write may be applied to `project` as `catalog` holds it
    /// at `now`: its grant still holds (401 or 403 otherwise), and it was
    /// meant for this incarnation (`ProjectNotFound` otherwise).
    pub fn judge(
        &self,
        catalog: &Catalog,
        project: &Project,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.grant.holds(catalog, Some(project), now)?;
        if self.meant_for(project) {
            Ok(())
        } else {
            Err(StoreError::ProjectNotFound)
        }
    }

    /// Why the write is refused when its project is no longer in `catalog`:
    /// a token that went with it is 401, as a new request with it would
    /// be, before the project's 404.
    pub fn refused_without_project(&self, catalog: &Catalog, now: Timestamp) -> StoreError {
        match self.grant.holds(catalog, None, now) {
            Err(error) => error,
            Ok(()) => StoreError::ProjectNotFound,
        }
    }
}

/// The result of one [`KvOp`].
#[derive(Clone, Debug)]
pub enum OpResult {
    Put {
        meta: KeyMeta,
        created: bool,
    },
    Delete {
        deleted: bool,
    },
    DeletePrefix {
        deleted: u64,
    },
    /// The key as the ops before it left it, or `None` when absent.
    Get(Option<Entry>),
    Incr {
        meta: KeyMeta,
        value: i64,
    },
}

/// A committed key/value write.
#[derive(Clone, Debug)]
pub struct KvCommit {
    /// The revision the write took, or the server revision when it changed
    /// nothing (a delete by prefix that matched no key).
    pub revision: u64,
    pub results: Vec<OpResult>,
}

/// A change to a project's settings; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default)]
pub struct ProjectChange {
    pub storage: Option<StorageMode>,
    pub keys_discoverable: Option<bool>,
    pub max_value_bytes: Option<u64>,
    pub max_keys: Option<Option<u64>>,
    pub public: Option<Public>,
}

/// Which tokens a revocation may address.
#[derive(Clone, Debug)]
pub enum TokenScope {
    /// Admin tokens only; the last one cannot go.
    Admin,
    /// Tokens of this project only.
    Project(ProjectId),
}

/// A change to projects or tokens.
#[derive(Clone, Debug)]
pub enum CatalogWrite {
    /// A new project and its first token, if any. The store sets
    /// `created_revision`.
    CreateProject {
        settings: crate::domain::ProjectSettings,
        token: Option<TokenRecord>,
    },
    UpdateProject {
        id: ProjectId,
        change: ProjectChange,
    },
    /// The project, its keys and its tokens.
    DeleteProject {
        id: ProjectId,
    },
    CreateToken(TokenRecord),
    /// The first admin token, made at start when there is none: refused
    /// with `Conflict` once any live admin token exists, so cluster nodes
    /// started at once on an empty cluster make one between them.
    CreateFirstAdmin(TokenRecord),
    /// Adds the token unless one with its digest exists (then nothing
    /// changes), and removes none: how a cluster node records its
    /// `KVS_ADMIN_TOKEN` beside the other nodes' own.
    AddTokenOnce(TokenRecord),
    /// A token brought from another server: its record (with a random
    /// digest that matches no secret) and the digest that server kept of
    /// its key, until the key is first presented.
    ImportToken {
        token: TokenRecord,
        digest: crate::domain::ImportedDigest,
    },
    /// An imported token's key was presented and verified: the token takes
    /// that key's SHA-256 `digest` and forgets the imported one, in one
    /// commit. From then on it is a token like any other.
    VerifyImportedToken {
        id: TokenId,
        digest: crate::domain::Digest,
    },
    DeleteToken {
        id: TokenId,
        scope: TokenScope,
    },
    /// Removes the tokens past their expiry when the write is judged, at
    /// most [`plan::EXPIRED_PER_WRITE`] of them, in one commit (the server's
    /// sweep; none is an empty write).
    RemoveExpiredTokens,
    /// Replaces every token named `name` of the record's source with the
    /// record (or removes them, with `None` and the given source): how the
    /// `KVS_ADMIN_TOKEN` token follows the environment at each start.
    ReplaceNamedTokens {
        source: crate::domain::TokenSource,
        name: String,
        token: Option<TokenRecord>,
    },
    /// Revokes every token of `project` that came from `source` and adds
    /// `token` (a token of that project), in one commit: how Simple-PyKV's
    /// `regenerate-api-key` replaces the keys it issued and no others.
    ReplaceProjectTokens {
        project: ProjectId,
        source: crate::domain::TokenSource,
        token: TokenRecord,
    },
}

/// How much change history each project keeps for watches to resume from:
/// the changes of the last `max_age_seconds`, at most `max_changes` of them
/// (the newest write is always kept, however large).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_age_seconds: u64,
    /// Changes kept per project.
    pub max_changes: u64,
    /// Stored bytes of change sets (keys, values, heads) kept per project.
    pub max_bytes: u64,
    /// Stored bytes of change sets kept by all projects together; beyond
    /// it, the largest logs lose their oldest sets first.
    pub max_total_bytes: u64,
}

impl Default for HistoryLimits {
    fn default() -> HistoryLimits {
        HistoryLimits {
            max_age_seconds: 3600,
            max_changes: 100_000,
            max_bytes: 256 << 20,
            max_total_bytes: 1 << 30,
        }
    }
}

/// A listing request, already scoped by the HTTP layer.
#[derive(Clone, Debug)]
pub struct ListRequest {
    pub prefix: Prefix,
    /// List keys strictly after this one.
    pub after: Option<String>,
    pub limit: usize,
    /// Also return values; a page then ends at the key that brings the raw
    /// value bytes to `value_budget` or more.
    pub with_values: bool,
    pub value_budget: u64,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    pub entries: Vec<(KeyMeta, Option<Bytes>)>,
    /// True when keys under the prefix remain after the last one returned.
    pub more: bool,
}

/// A project as a [`StoreSnapshot`] saw it: its settings and live figures.
#[derive(Clone, Debug)]
pub struct ProjectDump {
    pub settings: ProjectSettings,
    /// The last revision that wrote in the project.
    pub revision: u64,
    pub keys: u64,
    pub bytes: u64,
}

/// A token as a [`StoreSnapshot`] saw it: its record (with its SHA-256
/// digest, never a secret) and, for an imported token whose key has not
/// been presented yet, the digest the other server kept.
#[derive(Clone, Debug)]
pub struct TokenDump {
    pub record: TokenRecord,
    pub imported: Option<ImportedDigest>,
}

/// The whole store at one revision, for a backup: taken while writes go on,
/// without holding them up. Its reads block (call them off the async
/// runtime); dropping it lets go of what it pins.
pub trait StoreSnapshot: Send + Sync {
    /// The server revision the snapshot holds: every write up to it, none
    /// after.
    fn revision(&self) -> u64;

    /// Every project, by id.
    fn projects(&self) -> Vec<ProjectDump>;

    /// Every token, by creation time.
    fn tokens(&self) -> Vec<TokenDump>;

    /// Calls `each` with every stored key of the project in key order, with
    /// its value and all its metadata (a key whose expiry has come but that
    /// the sweep has not removed yet too: it is part of the state).
    fn keys(
        &self,
        project: &ProjectId,
        each: &mut dyn FnMut(Entry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Whether the store needs back what the snapshot holds: a reader that
    /// takes long (a backup) stops and drops it. The redb engine's disk
    /// database is reopened after a failed commit, which it cannot do while
    /// a snapshot holds the old one open.
    fn withdrawn(&self) -> bool {
        false
    }
}

/// A project's change feed, for a watch or a blocking read: subscribe to
/// its notifier before reading the state, so that no change slips in
/// between.
#[derive(Clone)]
pub struct Subscription {
    /// The incarnation of the project subscribed to: the watch ends when the
    /// catalog no longer holds it ([`Catalog::is_current`]).
    pub incarnation: u64,
    pub feed: Arc<Feed>,
}

/// What an engine can do; the API refuses the rest with a 4xx.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// The storage modes a project may have on this engine.
    pub storage_modes: &'static [StorageMode],
}

impl Capabilities {
    pub fn supports(&self, storage: StorageMode) -> bool {
        self.storage_modes.contains(&storage)
    }
}

/// Writes a new store from a backup, record by record, offline (`kvs
/// restore`). Dropped before [`Restore::finish`], it removes what it wrote.
/// In a data directory nothing is live until `finish`; in etcd
/// (`etcd_engine::EtcdRestorer`) records are there as they are written,
/// for nodes started after the restore.
pub trait Restore {
    /// A project's settings; its keys follow with [`Restore::key`].
    fn project(&mut self, dump: &ProjectDump) -> Result<(), StoreError>;

    /// A token, with the imported digest it still waits on, if any.
    fn token(
        &mut self,
        record: &TokenRecord,
        imported: Option<&ImportedDigest>,
    ) -> Result<(), StoreError>;

    /// A key of a project given before.
    fn key(&mut self, project: &ProjectId, entry: &Entry) -> Result<(), StoreError>;

    /// Makes the restored store live, resuming past `revision`.
    fn finish(self: Box<Self>, revision: u64) -> Result<(), StoreError>;
}

/// A restore into the embedded engine's data directory `dir`.
pub fn restore_into(dir: &std::path::Path) -> Result<Box<dyn Restore>, StoreError> {
    Ok(Box::new(redb_engine::Restorer::create(dir)?))
}

/// The storage interface. Implementations issue revisions, apply each write
/// atomically, make a write to a `disk` project durable before they return,
/// and publish every commit through [`publish::View::publish`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Projects and tokens as last committed. `Unavailable` when the engine
    /// cannot vouch that its view is fresh (a cluster node cut off from its
    /// cluster): the caller answers 503, never a stale yes. An engine that
    /// loses its view also ticks [`Store::catalog_changes`], so that open
    /// watches and blocking reads look again and end.
    fn catalog(&self) -> Result<Arc<Catalog>, StoreError>;

    /// What this engine supports.
    fn capabilities(&self) -> Capabilities;

    /// The change feed of a project, for watches and blocking reads.
    fn subscribe(&self, project: &ProjectId) -> Result<Subscription, StoreError>;

    /// The newest revision whose write has been acknowledged.
    fn revision(&self) -> u64;

    /// Bytes the store occupies on disk.
    fn storage_bytes(&self) -> u64;

    /// Whether the store can take writes now.
    fn is_writable(&self) -> bool;

    /// The newest revision a watch's `since` or a blocking read's `after`
    /// may name, when `asked` is beyond [`Store::revision`]: a single
    /// server's revision, or on a cluster node any revision the cluster has
    /// answered this node at (asked of it once when `asked` is newer still).
    /// Such a revision may be ahead of the node's view: writes outside
    /// kvs's prefix take revisions too, and a read answers at them.
    async fn resumable_revision(&self, asked: u64) -> Result<u64, StoreError> {
        let _ = asked;
        Ok(self.revision())
    }

    async fn write_kv(&self, write: KvWrite) -> Result<KvCommit, StoreError>;

    /// Applies a catalog write, judged with who asks for it: refused, and
    /// nothing changed, when `by` no longer holds in the catalog it would
    /// be committed on.
    async fn write_catalog(&self, write: CatalogWrite, by: Authority) -> Result<(), StoreError>;

    /// A key's metadata, and its value when `with_value`.
    async fn get(
        &self,
        project: &ProjectId,
        key: &Key,
        with_value: bool,
    ) -> Result<Read<Option<Entry>>, StoreError>;

    async fn list(
        &self,
        project: &ProjectId,
        request: ListRequest,
    ) -> Result<Read<ListPage>, StoreError>;

    /// The project's change sets after revision `after`, oldest first, whole
    /// sets up to about `max_changes` changes (the embedded engine's log may
    /// give one stored entry more, up to about 64 KiB; empty when there is
    /// nothing newer). `HistoryCompacted` when changes after `after` are no longer
    /// kept. Live changes are announced through [`Store::subscribe`].
    async fn changes(
        &self,
        project: &ProjectId,
        after: u64,
        max_changes: usize,
    ) -> Result<ChangeSets, StoreError>;

    /// A receiver told of every change to the catalog (projects, settings,
    /// tokens): open watches and blocking reads check their token again.
    fn catalog_changes(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Waits until [`Store::catalog`] holds every catalog write acknowledged
    /// anywhere before the call: a token just made through another cluster
    /// node is known here afterwards. A single server's catalog always is.
    async fn catch_up(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A consistent snapshot of everything the store holds, at one revision
    /// (see [`StoreSnapshot`]).
    async fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError>;

    /// Checks every stored record and value over a read snapshot, off the
    /// async runtime, and reports what is damaged (`kvs verify`).
    async fn verify(&self) -> Result<Report, StoreError>;

    /// Gives the store's free room back (`kvs compact`): the embedded
    /// engine copies its disk database in key order into a new file, and
    /// its memory database into a new one, and puts them in place, while
    /// writes wait.
    async fn compact(&self) -> Result<Compacted, StoreError>;

    /// Finishes the writes in flight and closes the store.
    async fn close(&self);
}
