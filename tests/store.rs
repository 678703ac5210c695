//! The storage test suite: what every `Store` engine must do, checked through
//! the trait alone. Each check runs against every engine in [`ENGINES`]; a
//! new backend (etcd, PostgreSQL) joins by adding a line there.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kvs::domain::{
    Digest, ImportedDigest, Key, Prefix, ProjectId, ProjectSettings, Role, StorageMode, Timestamp,
    TokenId, TokenRecord, TokenSecret, TokenSource,
};
use kvs::store::redb_engine::RedbStore;
use kvs::store::{
    CatalogWrite, ChangeKind, ChangeSets, HistoryLimits, KvOp, KvWrite, ListRequest, OpResult,
    Precondition, ProjectChange, Store, StoreError,
};

type Open = fn(&Path, HistoryLimits) -> Arc<dyn Store>;

/// Every engine, by name, with a function that opens it on a directory.
const ENGINES: &[(&str, Open)] = &[("redb", |dir, limits| {
    Arc::new(RedbStore::open_with(dir, limits).unwrap())
})];

/// Runs `check` against a fresh store of every engine.
fn for_each_engine<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Store>, std::path::PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    for (name, open) in ENGINES {
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
        created_at: Timestamp::now(),
        created_revision: 0,
    };
    store
        .write_catalog(CatalogWrite::CreateProject {
            settings,
            token: None,
        })
        .await
        .unwrap();
}

/// Applies a change to a project's settings.
async fn update(store: &dyn Store, project: &str, change: ProjectChange) {
    let id = id(project);
    store
        .write_catalog(CatalogWrite::UpdateProject { id, change })
        .await
        .unwrap();
}

/// Moves a project's keys to `storage`.
async fn move_to(store: &dyn Store, project: &str, storage: StorageMode) {
    let change = ProjectChange {
        storage: Some(storage),
        ..ProjectChange::default()
    };
    update(store, project, change).await;
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

async fn write(
    store: &dyn Store,
    project: &str,
    ops: Vec<KvOp>,
) -> Result<kvs::store::KvCommit, StoreError> {
    store
        .write_kv(KvWrite {
            project: id(project),
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

#[test]
fn every_write_takes_the_next_revision_and_versions_follow_it() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        let first = write(store.as_ref(), "p", vec![put("a", "1")])
            .await
            .unwrap()
            .revision;
        let second = write(store.as_ref(), "p", vec![put("b", "2")])
            .await
            .unwrap()
            .revision;
        assert_eq!(second, first + 1);
        assert_eq!(store.revision(), second);
        let read = store.get(&id("p"), &key("a"), false).await.unwrap();
        assert_eq!(read.value.unwrap().meta.version, first);
        assert!(
            read.revision >= second,
            "a read reflects at least what was acknowledged"
        );
    });
}

#[test]
fn a_write_with_several_ops_applies_all_or_nothing() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        let before = store.revision();
        let missing = KvOp::Delete {
            key: key("missing"),
            precondition: None,
            must_exist: true,
        };
        let error = write(store.as_ref(), "p", vec![put("a", "1"), missing])
            .await
            .unwrap_err()
            .into_op_error();
        assert_eq!(error.into_op_error(), StoreError::KeyNotFound);
        assert_eq!(
            value(store.as_ref(), "p", "a").await,
            None,
            "the first op was applied"
        );
        assert_eq!(store.revision(), before, "a refused write took a revision");

        let commit = write(
            store.as_ref(),
            "p",
            vec![put("a", "1"), put("a", "2"), put("b", "3")],
        )
        .await
        .unwrap();
        assert_eq!(commit.results.len(), 3);
        assert_eq!(
            value(store.as_ref(), "p", "a").await.as_deref(),
            Some("2"),
            "later ops see earlier ones"
        );
        let project = store.catalog().unwrap().project(&id("p")).unwrap().clone();
        assert_eq!(
            (project.stats.keys(), project.stats.revision()),
            (2, commit.revision)
        );
    });
}

#[test]
fn preconditions_are_checked_against_the_current_version() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Memory).await;
        let conditional = |k: &str, precondition| KvOp::Put {
            key: key(k),
            value: Bytes::from_static(b"x"),
            content_type: "text/plain".to_owned(),
            ttl: None,
            precondition: Some(precondition),
        };
        let v = write(
            store.as_ref(),
            "p",
            vec![conditional("k", Precondition::Absent)],
        )
        .await
        .unwrap()
        .revision;
        let error = write(
            store.as_ref(),
            "p",
            vec![conditional("k", Precondition::Absent)],
        )
        .await
        .unwrap_err()
        .into_op_error();
        assert_eq!(error, StoreError::PreconditionFailed { current: Some(v) });
        let error = write(
            store.as_ref(),
            "p",
            vec![conditional("k", Precondition::VersionIn(vec![v + 7]))],
        )
        .await
        .unwrap_err()
        .into_op_error();
        assert_eq!(error, StoreError::PreconditionFailed { current: Some(v) });
        write(
            store.as_ref(),
            "p",
            vec![conditional("k", Precondition::VersionIn(vec![v]))],
        )
        .await
        .unwrap();
        let error = write(
            store.as_ref(),
            "p",
            vec![conditional("new", Precondition::Exists)],
        )
        .await
        .unwrap_err()
        .into_op_error();
        assert_eq!(error, StoreError::PreconditionFailed { current: None });
    });
}

#[test]
fn listings_are_in_byte_order_and_delete_by_prefix_is_one_revision() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        let ops = ["b", "a/2", "a/1", "ab", "é", "A"]
            .iter()
            .map(|k| put(k, "v"))
            .collect();
        write(store.as_ref(), "p", ops).await.unwrap();
        assert_eq!(
            keys(store.as_ref(), "p", "").await,
            ["A", "a/1", "a/2", "ab", "b", "é"]
        );
        assert_eq!(keys(store.as_ref(), "p", "a/").await, ["a/1", "a/2"]);
        let commit = delete_prefix(store.as_ref(), "p", "a").await;
        assert!(matches!(
            commit.results[0],
            OpResult::DeletePrefix { deleted: 3 }
        ));
        assert_eq!(keys(store.as_ref(), "p", "").await, ["A", "b", "é"]);
        let nothing = delete_prefix(store.as_ref(), "p", "zz").await;
        assert_eq!(
            nothing.revision, commit.revision,
            "a delete that matched nothing took a revision"
        );
    });
}

#[test]
fn disk_keys_and_the_catalog_survive_reopening_and_memory_keys_do_not() {
    for (_, open) in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let last = runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            create(store.as_ref(), "disk", StorageMode::Disk).await;
            create(store.as_ref(), "mem", StorageMode::Memory).await;
            write(store.as_ref(), "disk", vec![put("k", "kept")])
                .await
                .unwrap();
            let last = write(store.as_ref(), "mem", vec![put("k", "lost")])
                .await
                .unwrap()
                .revision;
            store.close().await;
            last
        });
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            assert_eq!(
                value(store.as_ref(), "disk", "k").await.as_deref(),
                Some("kept")
            );
            assert_eq!(value(store.as_ref(), "mem", "k").await, None);
            assert!(
                store.catalog().unwrap().project(&id("mem")).is_some(),
                "a memory project itself is kept"
            );
            assert!(
                store.revision() >= last,
                "the revision went back after reopening"
            );
            let mem = store
                .catalog()
                .unwrap()
                .project(&id("mem"))
                .unwrap()
                .clone();
            assert!(
                mem.stats.revision() >= last,
                "a memory project's revision went back"
            );
            let next = write(store.as_ref(), "mem", vec![put("k", "new")])
                .await
                .unwrap()
                .revision;
            assert!(
                next > last,
                "revision {next} reused after reopening (had {last})"
            );
            store.close().await;
        });
    }
}

#[test]
fn moving_a_project_between_storages_keeps_every_key() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        write(store.as_ref(), "p", vec![put("a", "1"), put("b/c", "2")])
            .await
            .unwrap();
        for storage in [StorageMode::Memory, StorageMode::Disk, StorageMode::Memory] {
            move_to(store.as_ref(), "p", storage).await;
            assert_eq!(
                store
                    .catalog()
                    .unwrap()
                    .project(&id("p"))
                    .unwrap()
                    .settings
                    .storage,
                storage
            );
            assert_eq!(
                keys(store.as_ref(), "p", "").await,
                ["a", "b/c"],
                "after moving to {storage:?}"
            );
            assert_eq!(
                value(store.as_ref(), "p", "b/c").await.as_deref(),
                Some("2")
            );
        }
    });
}

#[test]
fn deleting_a_project_removes_its_keys_for_a_project_of_the_same_name() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        write(store.as_ref(), "p", vec![put("k", "old")])
            .await
            .unwrap();
        store
            .write_catalog(CatalogWrite::DeleteProject { id: id("p") })
            .await
            .unwrap();
        assert_eq!(
            write(store.as_ref(), "p", vec![put("k", "x")])
                .await
                .unwrap_err(),
            StoreError::ProjectNotFound
        );
        create(store.as_ref(), "p", StorageMode::Disk).await;
        assert_eq!(value(store.as_ref(), "p", "k").await, None);
        let error = store
            .write_catalog(CatalogWrite::CreateProject {
                settings: store
                    .catalog()
                    .unwrap()
                    .project(&id("p"))
                    .unwrap()
                    .settings
                    .clone(),
                token: None,
            })
            .await
            .unwrap_err()
            .into_op_error();
        assert_eq!(error, StoreError::ProjectExists);
    });
}

#[test]
fn quotas_and_value_limits_refuse_without_changing_anything() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        let change = ProjectChange {
            max_keys: Some(Some(1)),
            max_value_bytes: Some(3),
            ..ProjectChange::default()
        };
        update(store.as_ref(), "p", change).await;
        write(store.as_ref(), "p", vec![put("a", "1")])
            .await
            .unwrap();
        let error = write(store.as_ref(), "p", vec![put("b", "2")])
            .await
            .unwrap_err()
            .into_op_error();
        assert_eq!(error, StoreError::QuotaExceeded { max_keys: 1 });
        let error = write(store.as_ref(), "p", vec![put("a", "four")])
            .await
            .unwrap_err()
            .into_op_error();
        assert_eq!(error, StoreError::ValueTooLarge { max: 3 });
        write(store.as_ref(), "p", vec![put("a", "new")])
            .await
            .unwrap();
        assert_eq!(
            value(store.as_ref(), "p", "a").await.as_deref(),
            Some("new")
        );
    });
}

#[test]
fn concurrent_writers_are_all_applied_and_share_commits() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in 0..20 {
                        let k = format!("w{i}/{n}");
                        write(store.as_ref(), "p", vec![put(&k, &k)]).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let project = store.catalog().unwrap().project(&id("p")).unwrap().clone();
        assert_eq!(project.stats.keys(), 64 * 20);
        assert_eq!(
            value(store.as_ref(), "p", "w63/19").await.as_deref(),
            Some("w63/19")
        );
    });
}

#[test]
fn values_of_every_size_survive_replacement_listing_moves_and_deletes() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        let sizes = [0usize, 1, 2047, 2048, 2049, 70_000, 5];
        let put_bytes = |k: &str, size: usize| KvOp::Put {
            key: key(k),
            value: Bytes::from(vec![(size % 251) as u8; size]),
            content_type: "application/octet-stream".to_owned(),
            ttl: None,
            precondition: None,
        };
        // One key goes through every size, small to large and back.
        for size in sizes {
            write(store.as_ref(), "p", vec![put_bytes("k", size)])
                .await
                .unwrap();
            let read = store
                .get(&id("p"), &key("k"), true)
                .await
                .unwrap()
                .value
                .unwrap();
            assert_eq!(read.value.len(), size);
            assert!(read.value.iter().all(|b| *b == (size % 251) as u8));
            assert_eq!(read.meta.size, size as u64);
        }
        let ops = sizes
            .iter()
            .map(|s| put_bytes(&format!("all/{s:06}"), *s))
            .collect();
        write(store.as_ref(), "p", ops).await.unwrap();
        for storage in [StorageMode::Memory, StorageMode::Disk] {
            move_to(store.as_ref(), "p", storage).await;
            let request = ListRequest {
                prefix: Prefix::parse("all/").unwrap(),
                after: None,
                limit: 100,
                with_values: true,
                value_budget: u64::MAX,
            };
            let page = store.list(&id("p"), request).await.unwrap().value;
            let mut expected: Vec<usize> = sizes.to_vec();
            expected.sort();
            let listed: Vec<usize> = page
                .entries
                .iter()
                .map(|(_, v)| v.as_ref().unwrap().len())
                .collect();
            assert_eq!(
                listed, expected,
                "values listed after moving to {storage:?}"
            );
        }
        let commit = delete_prefix(store.as_ref(), "p", "all/").await;
        assert!(matches!(
            commit.results[0],
            OpResult::DeletePrefix { deleted: 7 }
        ));
        write(store.as_ref(), "p", vec![put_bytes("k", 70_000)])
            .await
            .unwrap();
        write(
            store.as_ref(),
            "p",
            vec![KvOp::Delete {
                key: key("k"),
                precondition: None,
                must_exist: true,
            }],
        )
        .await
        .unwrap();
        assert_eq!(value(store.as_ref(), "p", "k").await, None);
        let project = store.catalog().unwrap().project(&id("p")).unwrap().clone();
        assert_eq!((project.stats.keys(), project.stats.bytes()), (0, 0));
    });
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

#[test]
fn an_expired_key_is_gone_at_once_and_its_removal_takes_a_revision() {
    for_each_engine(|store, _| async move {
        for storage in [StorageMode::Disk, StorageMode::Memory] {
            let project = format!("p-{}", storage.as_str());
            create(store.as_ref(), &project, storage).await;
            let version = write(
                store.as_ref(),
                &project,
                vec![put_ttl("short", "v", Some(1)), put_ttl("long", "v", None)],
            )
            .await
            .unwrap()
            .revision;
            let read = store
                .get(&id(&project), &key("short"), false)
                .await
                .unwrap();
            assert!(read.value.unwrap().meta.expires_at.is_some());
            let stats = store
                .catalog()
                .unwrap()
                .project(&id(&project))
                .unwrap()
                .stats
                .clone();
            assert!(
                eventually(|| stats.keys() == 1).await,
                "the sweep did not remove the expired key ({storage:?})"
            );
            assert_eq!(value(store.as_ref(), &project, "short").await, None);
            assert_eq!(keys(store.as_ref(), &project, "").await, ["long"]);
            assert!(stats.revision() > version, "the expiry took no revision");
        }
    });
}

#[test]
fn a_put_without_ttl_removes_the_expiry_and_a_new_put_revives_an_expired_key() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "p", StorageMode::Disk).await;
        write(store.as_ref(), "p", vec![put_ttl("k", "v", Some(3600))])
            .await
            .unwrap();
        write(store.as_ref(), "p", vec![put_ttl("k", "kept", None)])
            .await
            .unwrap();
        let read = store
            .get(&id("p"), &key("k"), false)
            .await
            .unwrap()
            .value
            .unwrap();
        assert_eq!(read.meta.expires_at, None);
        write(store.as_ref(), "p", vec![put_ttl("gone", "v", Some(1))])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        // Expired, perhaps not swept yet: a put creates it anew.
        let commit = write(store.as_ref(), "p", vec![put_ttl("gone", "again", None)])
            .await
            .unwrap();
        assert!(matches!(
            commit.results[0],
            OpResult::Put { created: true, .. }
        ));
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(
            value(store.as_ref(), "p", "gone").await.as_deref(),
            Some("again")
        );
        let stats = store
            .catalog()
            .unwrap()
            .project(&id("p"))
            .unwrap()
            .stats
            .clone();
        assert_eq!(stats.keys(), 2);
    });
}

#[test]
fn expiries_that_fall_due_while_the_store_is_closed_happen_after_it_opens() {
    for (_, open) in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            create(store.as_ref(), "p", StorageMode::Disk).await;
            write(
                store.as_ref(),
                "p",
                vec![put_ttl("k", "v", Some(1)), put_ttl("stays", "v", None)],
            )
            .await
            .unwrap();
            store.close().await;
        });
        std::thread::sleep(std::time::Duration::from_millis(1200));
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            assert_eq!(
                value(store.as_ref(), "p", "k").await,
                None,
                "an expired key was read"
            );
            let stats = store
                .catalog()
                .unwrap()
                .project(&id("p"))
                .unwrap()
                .stats
                .clone();
            assert!(
                eventually(|| stats.keys() == 1).await,
                "the expiry was not swept after opening"
            );
            store.close().await;
        });
    }
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

#[test]
fn the_change_log_holds_every_write_in_order_and_survives_reopening() {
    use ChangeKind::{Delete, Put};
    for (_, open) in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let expected = runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            let store = store.as_ref();
            create(store, "p", StorageMode::Disk).await;
            let start = store.revision();
            let r1 = write(store, "p", vec![put("a", "1")])
                .await
                .unwrap()
                .revision;
            // Several ops on one key fold into one change; a key put and
            // deleted in one write that did not exist before is no change.
            let r2 = write(
                store,
                "p",
                vec![
                    put("c", "x"),
                    put("b", "2"),
                    put("c", "3"),
                    KvOp::Delete {
                        key: key("a"),
                        precondition: None,
                        must_exist: true,
                    },
                    put("tmp", "t"),
                    KvOp::Delete {
                        key: key("tmp"),
                        precondition: None,
                        must_exist: true,
                    },
                ],
            )
            .await
            .unwrap()
            .revision;
            let r3 = delete_prefix(store, "p", "").await.revision;
            let r4 = write(
                store,
                "p",
                vec![KvOp::Incr {
                    key: key("n"),
                    by: 2,
                }],
            )
            .await
            .unwrap()
            .revision;
            let expected = vec![
                (r1, changes(&[(Put, "a")])),
                (r2, changes(&[(Delete, "a"), (Put, "b"), (Put, "c")])),
                (r3, changes(&[(Delete, "b"), (Delete, "c")])),
                (r4, changes(&[(Put, "n")])),
            ];
            assert_eq!(history(store, "p", start).await.unwrap(), expected);
            assert_eq!(history(store, "p", r2).await.unwrap(), expected[2..]);
            assert!(history(store, "p", r4).await.unwrap().is_empty());
            let sets = store.changes(&id("p"), r1, 10).await.unwrap();
            assert_eq!(sets[0].changes[2].value.as_ref(), b"3", "the folded value");
            store.close().await;
            (start, expected)
        });
        runtime.block_on(async {
            // Reopened, the feed starts empty: the same history comes from
            // the durable log, values included.
            let store = open(dir.path(), HistoryLimits::default());
            let (start, expected) = expected;
            assert_eq!(history(store.as_ref(), "p", start).await.unwrap(), expected);
            let sets = store
                .changes(&id("p"), expected[3].0 - 1, 10)
                .await
                .unwrap();
            assert_eq!(sets[0].changes[0].value.as_ref(), b"2");
            assert_eq!(sets[0].changes[0].content_type, "text/plain; charset=utf-8");
            store.close().await;
        });
    }
}

#[test]
fn expiries_are_logged_as_expired_deletes_at_their_own_revision() {
    for_each_engine(|store, _| async move {
        for storage in [StorageMode::Disk, StorageMode::Memory] {
            let project = format!("p-{}", storage.as_str());
            create(store.as_ref(), &project, storage).await;
            let put_at = write(store.as_ref(), &project, vec![put_ttl("k", "v", Some(1))])
                .await
                .unwrap()
                .revision;
            let mut newest = store.subscribe(&id(&project)).unwrap().feed.subscribe();
            tokio::time::timeout(std::time::Duration::from_secs(5), newest.changed())
                .await
                .expect("no expiry was published within 5 s")
                .unwrap();
            let logged = history(store.as_ref(), &project, put_at).await.unwrap();
            assert_eq!(logged.len(), 1, "{logged:?}");
            assert!(logged[0].0 > put_at);
            assert_eq!(logged[0].1, changes(&[(ChangeKind::Expired, "k")]));
        }
    });
}

#[test]
fn history_beyond_its_limits_is_compacted_and_reported() {
    for (_, open) in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let by_count = HistoryLimits {
            max_age_seconds: 3600,
            max_changes: 5,
        };
        let revisions = runtime.block_on(async {
            let store = open(dir.path(), by_count);
            create(store.as_ref(), "p", StorageMode::Disk).await;
            let mut revisions = Vec::new();
            for i in 0..10 {
                let commit = write(store.as_ref(), "p", vec![put(&format!("k{i}"), "v")]);
                revisions.push(commit.await.unwrap().revision);
            }
            // A write larger than the limit is kept whole.
            let ops = (0..8).map(|i| put(&format!("big{i}"), "v")).collect();
            revisions.push(write(store.as_ref(), "p", ops).await.unwrap().revision);
            store.close().await;
            revisions
        });
        runtime.block_on(async {
            let store = open(dir.path(), by_count);
            let newest = *revisions.last().unwrap();
            let compact_revision = revisions[9];
            assert_eq!(
                history(store.as_ref(), "p", 0).await,
                Err(StoreError::HistoryCompacted { compact_revision })
            );
            let kept = history(store.as_ref(), "p", compact_revision)
                .await
                .unwrap();
            assert_eq!(kept.len(), 1);
            assert_eq!((kept[0].0, kept[0].1.len()), (newest, 8));
            store.close().await;
        });
        // By age: a store that keeps one second of history drops the rest
        // on its own, without another write.
        let by_age = HistoryLimits {
            max_age_seconds: 1,
            max_changes: 100,
        };
        runtime.block_on(async {
            let store = open(dir.path(), by_age);
            let last = write(store.as_ref(), "p", vec![put("late", "v")])
                .await
                .unwrap()
                .revision;
            let feed = store.subscribe(&id("p")).unwrap().feed;
            assert!(
                eventually(|| feed.compacted() == last).await,
                "the history was not compacted by age (compacted at {})",
                feed.compacted()
            );
            store.close().await;
        });
        runtime.block_on(async {
            let store = open(dir.path(), by_age);
            let last = store
                .catalog()
                .unwrap()
                .project(&id("p"))
                .unwrap()
                .stats
                .revision();
            assert!(matches!(
                history(store.as_ref(), "p", last - 1).await,
                Err(StoreError::HistoryCompacted { .. })
            ));
            assert!(history(store.as_ref(), "p", last).await.unwrap().is_empty());
            store.close().await;
        });
    }
}

#[test]
fn history_follows_its_project_through_moves_restarts_and_deletion() {
    for (_, open) in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (start, written) = runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            let store = store.as_ref();
            create(store, "moved", StorageMode::Memory).await;
            create(store, "mem", StorageMode::Memory).await;
            let start = store.revision();
            let mut written = Vec::new();
            for k in ["a", "b"] {
                written.push(
                    write(store, "moved", vec![put(k, "v")])
                        .await
                        .unwrap()
                        .revision,
                );
            }
            write(store, "mem", vec![put("k", "v")]).await.unwrap();
            move_to(store, "moved", StorageMode::Disk).await;
            store.close().await;
            (start, written)
        });
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            let store = store.as_ref();
            // Moved to disk: its log moved with it and survived the restart.
            let logged = history(store, "moved", start).await.unwrap();
            assert_eq!(logged.iter().map(|s| s.0).collect::<Vec<_>>(), written);
            // A memory project's log went with its keys: history starts now.
            let revision = store
                .catalog()
                .unwrap()
                .project(&id("mem"))
                .unwrap()
                .stats
                .revision();
            assert_eq!(
                history(store, "mem", 0).await,
                Err(StoreError::HistoryCompacted {
                    compact_revision: revision
                })
            );
            // A project deleted and created again has none of the old log.
            store
                .write_catalog(CatalogWrite::DeleteProject { id: id("moved") })
                .await
                .unwrap();
            create(store, "moved", StorageMode::Disk).await;
            assert!(history(store, "moved", 0).await.unwrap().is_empty());
            store.close().await;
        });
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            assert!(
                history(store.as_ref(), "moved", 0)
                    .await
                    .unwrap()
                    .is_empty()
            );
            store.close().await;
        });
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

#[test]
fn an_imported_token_keeps_its_digest_until_verified_and_goes_with_its_project() {
    for (_, open) in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let reopen = |check: &dyn Fn(&dyn Store)| {
            runtime.block_on(async {
                let store = open(dir.path(), HistoryLimits::default());
                check(store.as_ref());
                store.close().await;
            })
        };
        let (first, digest) = imported_token("p");
        let (second, other) = imported_token("q");
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            create(store.as_ref(), "p", StorageMode::Disk).await;
            create(store.as_ref(), "q", StorageMode::Memory).await;
            for (token, digest) in [(first.clone(), digest), (second.clone(), other)] {
                store
                    .write_catalog(CatalogWrite::ImportToken { token, digest })
                    .await
                    .unwrap();
            }
            store.close().await;
        });
        let now = Timestamp::now();
        reopen(&|store| {
            let catalog = store.catalog().unwrap();
            let waiting = catalog.imported(Some(&id("p")), now);
            assert_eq!(waiting.len(), 1);
            assert_eq!(waiting[0].0.id, first.id);
            assert!(waiting[0].1.verify("password"));
            assert!(catalog.imported(None, now).is_empty());
        });
        let presented = TokenSecret::presented("password").digest();
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            let verify = CatalogWrite::VerifyImportedToken {
                id: first.id.clone(),
                digest: presented,
            };
            store.write_catalog(verify.clone()).await.unwrap();
            // A second verification with the same key (a request that raced
            // the first) is no error.
            store.write_catalog(verify).await.unwrap();
            store
                .write_catalog(CatalogWrite::DeleteProject { id: id("q") })
                .await
                .unwrap();
            store.close().await;
        });
        reopen(&|store| {
            let catalog = store.catalog().unwrap();
            assert!(catalog.imported(Some(&id("p")), now).is_empty());
            assert!(catalog.imported(Some(&id("q")), now).is_empty());
            let token = catalog.token(&presented, now).expect("the verified token");
            assert_eq!(token.id, first.id);
            assert!(catalog.token_by_id(&second.id).is_none());
        });
    }
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

#[test]
fn a_snapshot_holds_both_databases_at_one_revision_while_writes_go_on() {
    for_each_engine(|store, _| async move {
        create(store.as_ref(), "d", StorageMode::Disk).await;
        create(store.as_ref(), "m", StorageMode::Memory).await;
        write(store.as_ref(), "d", vec![put("a", "1")])
            .await
            .unwrap();
        let large = "L".repeat(5000);
        write(store.as_ref(), "m", vec![put("b", &large)])
            .await
            .unwrap();
        let snapshot = store.snapshot().await.unwrap();
        let revision = snapshot.revision();
        assert_eq!(revision, store.revision());

        // Later writes, a new project and a deletion are not in it.
        write(store.as_ref(), "d", vec![put("a", "2"), put("c", "3")])
            .await
            .unwrap();
        write(store.as_ref(), "m", vec![put("b", "short")])
            .await
            .unwrap();
        create(store.as_ref(), "later", StorageMode::Disk).await;
        delete_prefix(store.as_ref(), "m", "").await;

        let projects: Vec<_> = snapshot
            .projects()
            .into_iter()
            .map(|p| (p.settings.id.as_str().to_owned(), p.keys, p.revision))
            .collect();
        assert_eq!(
            projects,
            [
                ("d".to_owned(), 1, revision - 1),
                ("m".to_owned(), 1, revision)
            ]
        );
        assert_eq!(
            snapshot_keys(snapshot.as_ref(), "d"),
            [("a".to_owned(), revision - 1, "1".to_owned())]
        );
        assert_eq!(
            snapshot_keys(snapshot.as_ref(), "m"),
            [("b".to_owned(), revision, large)]
        );
        assert!(store.revision() > revision);
    });
}
