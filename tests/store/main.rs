//! The storage test suite, through the `Store` trait alone.
//!
//! `semantics.rs` holds the rules every engine must keep (revisions, atomic
//! writes, preconditions, listings, quotas, TTLs, the change log and its
//! compaction, the catalog's rules, incarnations, capabilities); each check
//! runs against every engine in [`ENGINES`], and a new backend (etcd,
//! PostgreSQL) joins by adding a line there. `embedded.rs` holds what only the
//! embedded engine does: memory projects lost at restart, moves between its
//! two databases, expiries while closed, snapshots across both databases.

#[cfg(feature = "etcd")]
mod auth;
#[cfg(feature = "etcd")]
mod cluster;
mod embedded;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
#[path = "../common/port.rs"]
mod port;
mod semantics;
#[cfg(feature = "etcd")]
mod tls;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kvs::domain::{
    Digest, ImportedDigest, Key, Prefix, ProjectId, ProjectSettings, Role, StorageMode, Timestamp,
    TokenId, TokenRecord, TokenSecret, TokenSource,
};
#[cfg(feature = "etcd")]
use kvs::store::etcd_engine::{EtcdSettings, EtcdStore};
use kvs::store::redb_engine::RedbStore;
use kvs::store::{
    Authority, CatalogWrite, ChangeKind, ChangeSets, Grant, HistoryLimits, KvOp, KvWrite,
    ListRequest, OpResult, Precondition, ProjectChange, Store, StoreError, TokenScope,
};

type Open = fn(&Path, HistoryLimits) -> Arc<dyn Store>;

/// Every engine, by name, with a function that opens it on a directory.
/// (etcd only in a build with `--features etcd`.)
const ENGINES: &[(&str, Open)] = &[
    ("redb", open_redb),
    #[cfg(feature = "etcd")]
    ("etcd", open_etcd),
];

fn open_redb(dir: &Path, limits: HistoryLimits) -> Arc<dyn Store> {
    Arc::new(RedbStore::open_with(dir, limits).unwrap())
}

/// A cluster node over a one-member etcd of its own, with its data in `dir`
/// (opened again on the same `dir`, the same etcd data).
#[cfg(feature = "etcd")]
fn open_etcd(dir: &Path, _: HistoryLimits) -> Arc<dyn Store> {
    let etcd = etcd::start(dir);
    let settings = EtcdSettings::new(vec![etcd.endpoint.clone()]);
    let store = EtcdStore::open_blocking(settings).unwrap();
    store.keep(Box::new(etcd));
    Arc::new(store)
}

/// The embedded engine alone, for `embedded.rs`.
const EMBEDDED: &[(&str, Open)] = &[("redb", open_redb)];

/// Runs `check` against a fresh store of every engine.
fn for_each_engine<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Store>, std::path::PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    run_on(ENGINES, check)
}

/// Runs `check` against a fresh store of the embedded engine.
fn for_embedded<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Store>, std::path::PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    run_on(EMBEDDED, check)
}

fn run_on<F, Fut>(engines: &[(&str, Open)], check: F)
where
    F: Fn(Arc<dyn Store>, std::path::PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    for (name, open) in engines {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        eprintln!("engine {name}");
        let store = open(dir.path(), HistoryLimits::default());
        runtime.block_on(check(store, dir.path().to_owned()));
    }
}

fn id(text: &str) -> ProjectId {
    ProjectId::parse(text).unwrap()
}

fn key(text: &str) -> Key {
    Key::parse(text).unwrap()
}

async fn create(store: &dyn Store, project: &str, storage: StorageMode) {
    let settings = ProjectSettings {
        id: id(project),
        storage,
        keys_discoverable: true,
        max_value_bytes: 1 << 20,
        max_keys: None,
        public: kvs::domain::Public::None,
        created_at: Timestamp::now(),
        created_revision: 0,
    };
    store
        .write_catalog(
            CatalogWrite::CreateProject {
                settings,
                token: None,
            },
            Authority::server(),
        )
        .await
        .unwrap();
}

/// Applies a change to a project's settings.
async fn update(store: &dyn Store, project: &str, change: ProjectChange) {
    let id = id(project);
    store
        .write_catalog(
            CatalogWrite::UpdateProject { id, change },
            Authority::server(),
        )
        .await
        .unwrap();
}

/// Creates the disk project `project` with a `max_keys` of `max`.
async fn create_with_max_keys(store: &dyn Store, project: &str, max: u64) {
    create(store, project, StorageMode::Disk).await;
    let change = ProjectChange {
        max_keys: Some(Some(max)),
        ..ProjectChange::default()
    };
    update(store, project, change).await;
}

/// Moves a project's keys to `storage`.
async fn move_to(store: &dyn Store, project: &str, storage: StorageMode) {
    let change = ProjectChange {
        storage: Some(storage),
        ..ProjectChange::default()
    };
    update(store, project, change).await;
}

/// Creates project `p` in `store`, writes `k` = `text`, reads it back, and
/// closes the store: a node that reached its etcd can use it.
#[cfg(feature = "etcd")]
fn writes_and_reads_back(store: Arc<dyn Store>, text: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        write(store.as_ref(), "p", vec![put("k", text)])
            .await
            .unwrap();
        assert_eq!(value(store.as_ref(), "p", "k").await.as_deref(), Some(text));
        store.close().await;
    });
}

/// A key stored already expired at `at`, as an import of an old export
/// stores it: in the expiry index, for the sweep's next turn.
fn restored_expired(k: &str, at: Timestamp) -> KvOp {
    KvOp::Restore {
        key: key(k),
        value: Bytes::from_static(b"old"),
        content_type: "text/plain".to_owned(),
        created_at: at,
        updated_at: at,
        expires_at: Some(at),
    }
}

fn put(k: &str, value: &str) -> KvOp {
    KvOp::Put {
        key: key(k),
        value: Bytes::copy_from_slice(value.as_bytes()),
        content_type: "text/plain".to_owned(),
        ttl: None,
        precondition: None,
    }
}

/// A delete of a key that must exist.
fn delete(k: &str) -> KvOp {
    KvOp::Delete {
        key: key(k),
        precondition: None,
        must_exist: true,
    }
}

/// A put that holds only if `precondition` does.
fn conditional(k: &str, value: &str, precondition: Precondition) -> KvOp {
    KvOp::Put {
        key: key(k),
        value: Bytes::copy_from_slice(value.as_bytes()),
        content_type: "text/plain".to_owned(),
        ttl: None,
        precondition: Some(precondition),
    }
}

async fn write(
    store: &dyn Store,
    project: &str,
    ops: Vec<KvOp>,
) -> Result<kvs::store::KvCommit, StoreError> {
    store
        .write_kv(KvWrite {
            project: id(project),
            incarnation: None,
            grant: Grant::Server,
            checks: Vec::new(),
            ops,
        })
        .await
}

async fn delete_prefix(store: &dyn Store, project: &str, prefix: &str) -> kvs::store::KvCommit {
    let prefix = Prefix::parse(prefix).unwrap();
    write(store, project, vec![KvOp::DeletePrefix { prefix }])
        .await
        .unwrap()
}

async fn value(store: &dyn Store, project: &str, k: &str) -> Option<String> {
    let read = store.get(&id(project), &key(k), true).await.unwrap();
    read.value
        .map(|e| String::from_utf8(e.value.to_vec()).unwrap())
}

async fn keys(store: &dyn Store, project: &str, prefix: &str) -> Vec<String> {
    let request = ListRequest {
        prefix: Prefix::parse(prefix).unwrap(),
        after: None,
        limit: 1000,
        with_values: false,
        value_budget: u64::MAX,
    };
    let page = store.list(&id(project), request).await.unwrap().value;
    page.entries
        .into_iter()
        .map(|(m, _)| m.key.as_str().to_owned())
        .collect()
}

fn put_ttl(k: &str, value: &str, ttl: Option<u64>) -> KvOp {
    KvOp::Put {
        key: key(k),
        value: Bytes::copy_from_slice(value.as_bytes()),
        content_type: "text/plain".to_owned(),
        ttl,
        precondition: None,
    }
}

/// Waits (at most 5 s) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    done()
}

// ======================================================= the change log

/// A project's change sets after `after`, as (revision, [(kind, key)]).
async fn history(
    store: &dyn Store,
    project: &str,
    after: u64,
) -> Result<Vec<(u64, Vec<(ChangeKind, String)>)>, StoreError> {
    let sets: ChangeSets = store.changes(&id(project), after, 100_000).await?;
    Ok(sets
        .iter()
        .map(|set| {
            let changes = set
                .changes
                .iter()
                .map(|c| (c.kind, c.key.as_str().to_owned()))
                .collect();
            (set.revision, changes)
        })
        .collect())
}

fn changes(list: &[(ChangeKind, &str)]) -> Vec<(ChangeKind, String)> {
    list.iter()
        .map(|(k, key)| (*k, (*key).to_owned()))
        .collect()
}

/// A new token record with a fresh secret.
fn token(
    role: Role,
    project: Option<&str>,
    name: Option<&str>,
    source: TokenSource,
) -> TokenRecord {
    TokenRecord {
        id: TokenId::generate().unwrap(),
        digest: TokenSecret::generate().unwrap().digest(),
        role,
        project: project.map(id),
        prefix: None,
        name: name.map(str::to_owned),
        created_at: Timestamp::now(),
        expires_at: None,
        source,
    }
}

/// An imported token as the HTTP layer makes it: a random digest, and the
/// other server's digest of its key (here of "password", one round).
fn imported_token(project: &str) -> (TokenRecord, ImportedDigest) {
    let record = TokenRecord {
        id: TokenId::generate().unwrap(),
        digest: Digest::random().unwrap(),
        role: Role::Manage,
        project: Some(id(project)),
        prefix: None,
        name: None,
        created_at: Timestamp::now(),
        expires_at: None,
        source: TokenSource::Import,
    };
    let digest =
        ImportedDigest::parse("pbkdf2_sha256$1$c2FsdA$Eg-2z_z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs")
            .unwrap();
    (record, digest)
}

/// Every key of a project as a snapshot holds it: (key, version, value).
fn snapshot_keys(
    snapshot: &dyn kvs::store::StoreSnapshot,
    project: &str,
) -> Vec<(String, u64, String)> {
    let mut keys = Vec::new();
    snapshot
        .keys(&id(project), &mut |entry| {
            keys.push((
                entry.meta.key.as_str().to_owned(),
                entry.meta.version,
                String::from_utf8(entry.value.to_vec()).unwrap(),
            ));
            Ok(())
        })
        .unwrap();
    keys
}
