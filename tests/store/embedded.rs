//! What only the embedded redb engine does: memory projects, moves between
//! its two databases, restarts, snapshots across both databases.

use super::*;

#[test]
fn disk_keys_and_the_catalog_survive_reopening_and_memory_keys_do_not() {
    for (_, open) in EMBEDDED {
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
    for_embedded(|store, _| async move {
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
fn values_of_every_size_survive_replacement_listing_moves_and_deletes() {
    for_embedded(|store, _| async move {
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
        write(store.as_ref(), "p", vec![delete("k")]).await.unwrap();
        assert_eq!(value(store.as_ref(), "p", "k").await, None);
        let project = store.catalog().unwrap().project(&id("p")).unwrap().clone();
        assert_eq!((project.stats.keys(), project.stats.bytes()), (0, 0));
    });
}

#[test]
fn expiries_that_fall_due_while_the_store_is_closed_happen_after_it_opens() {
    for (_, open) in EMBEDDED {
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

#[test]
fn history_follows_its_project_through_moves_restarts_and_deletion() {
    for (_, open) in EMBEDDED {
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
                .write_catalog(
                    CatalogWrite::DeleteProject { id: id("moved") },
                    Authority::server(),
                )
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

#[test]
fn a_snapshot_holds_both_databases_at_one_revision_while_writes_go_on() {
    for_embedded(|store, _| async move {
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

/// Puts `count` keys `m/00000`… of project `project`, 1,000 a transaction.
async fn fill(store: &dyn Store, project: &str, count: usize) {
    for start in (0..count).step_by(1000) {
        let ops = (start..count.min(start + 1000))
            .map(|i| put(&format!("m/{i:05}"), "v"))
            .collect();
        write(store, project, ops).await.unwrap();
    }
}

/// How many keys a listing of `prefix` shows, in one read.
async fn shown(store: &dyn Store, project: &str, prefix: &str) -> usize {
    let request = ListRequest {
        prefix: Prefix::parse(prefix).unwrap(),
        after: None,
        limit: 100_000,
        with_values: false,
        value_budget: u64::MAX,
    };
    let page = store.list(&id(project), request).await.unwrap().value;
    page.entries.len()
}

fn project_keys(store: &dyn Store, project: &str) -> u64 {
    store
        .catalog()
        .unwrap()
        .project(&id(project))
        .unwrap()
        .stats
        .keys()
}

// A delete of more keys than the writer takes in one batch (4,096) runs in
// chunks beside other writes: readers see all of the keys or none, the
// project's own writes sent after it apply after it, and the figures, the
// change log and `verify` agree at the end. (The embedded writer's chunks:
// the etcd engine deletes a prefix in one etcd transaction, within etcd's
// request limits, as docs/API.md says.)
#[test]
fn a_delete_by_a_large_prefix_is_all_or_nothing_for_readers_and_keeps_the_order_of_writes() {
    let each = EMBEDDED
        .iter()
        .flat_map(|(_, open)| [(open, StorageMode::Disk), (open, StorageMode::Memory)]);
    for (open, storage) in each {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            let store = store.as_ref();
            create(store, "p", storage).await;
            create(store, "other", StorageMode::Disk).await;
            fill(store, "p", 20_000).await;
            write(store, "p", vec![put("a", "v"), put("z", "v")])
                .await
                .unwrap();
            let done = std::sync::atomic::AtomicBool::new(false);
            let reader = async {
                let mut seen = std::collections::BTreeSet::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.insert(shown(store, "p", "m/").await);
                    tokio::task::yield_now().await;
                }
                seen
            };
            let writes = async {
                // Sent after the delete, in this order.
                let delete = delete_prefix(store, "p", "m/");
                let (deleted, put_after, other) = tokio::join!(
                    delete,
                    write(store, "p", vec![put("m/new", "after")]),
                    write(store, "other", vec![put("k", "v")]),
                );
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                (deleted, put_after.unwrap(), other.unwrap())
            };
            let (seen, (deleted, put_after, other)) = tokio::join!(reader, writes);
            // 1: `m/new`, after the delete.
            assert!(
                seen.iter().all(|n| [20_000, 0, 1].contains(n)),
                "a reader saw part of the delete: {seen:?}"
            );
            assert!(matches!(
                deleted.results.as_slice(),
                [kvs::store::OpResult::DeletePrefix { deleted: 20_000 }]
            ));
            assert!(
                put_after.revision > deleted.revision,
                "a write sent after the delete applied before it"
            );
            assert!(other.revision > 0);
            assert_eq!(keys(store, "p", "m/").await, vec!["m/new"]);
            assert_eq!(value(store, "p", "a").await.as_deref(), Some("v"));
            assert_eq!(project_keys(store, "p"), 3);
            let logged = history(store, "p", deleted.revision - 1).await.unwrap();
            let (revision, set) = &logged[0];
            assert_eq!(*revision, deleted.revision);
            assert_eq!(set.len(), 20_000);
            assert!(
                set.iter()
                    .all(|(kind, k)| *kind == ChangeKind::Delete && k.starts_with("m/"))
            );
            let report = store.verify().await.unwrap();
            assert!(report.damage.is_empty(), "{:?}", report.damage);
            assert_eq!(report.keys, 3 + 1);
            store.close().await;
        });
    }
}

// A delete that a stop cuts off while its keys are being removed is
// finished by the next start; meanwhile no reader sees its keys, and
// `kvs verify` on the stopped store finds nothing wrong.
#[test]
fn a_delete_by_a_large_prefix_cut_off_by_a_stop_is_finished_after_the_next_start() {
    for (_, open) in EMBEDDED {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            create(store.as_ref(), "p", StorageMode::Disk).await;
            fill(store.as_ref(), "p", 100_000).await;
            write(store.as_ref(), "p", vec![put("keep", "v")])
                .await
                .unwrap();
            delete_prefix(store.as_ref(), "p", "m/").await;
            store.close().await;
        });
        let stopped = kvs::store::redb_engine::verify_dir(dir.path()).unwrap();
        assert!(stopped.damage.is_empty(), "{:?}", stopped.damage);
        // The stop came a chunk or two into the removal (of 25).
        assert!(stopped.keys > 1, "the removal was not cut off");
        runtime.block_on(async {
            let store = open(dir.path(), HistoryLimits::default());
            let store = store.as_ref();
            assert_eq!(value(store, "p", "m/00000").await, None);
            assert_eq!(value(store, "p", "m/99999").await, None);
            assert_eq!(shown(store, "p", "").await, 1);
            assert_eq!(project_keys(store, "p"), 1);
            // A write of the project waits for the removal, then applies.
            write(store, "p", vec![put("m/00001", "new")])
                .await
                .unwrap();
            assert_eq!(keys(store, "p", "").await, vec!["keep", "m/00001"]);
            let report = store.verify().await.unwrap();
            assert!(report.damage.is_empty(), "{:?}", report.damage);
            assert_eq!(report.keys, 2);
            store.close().await;
        });
    }
}

// A move sent right behind a delete by a large prefix, in the same batch,
// waits for the delete's sweep: the keys it removes do not come back at
// the destination. (Both requests are sent in one poll, so they usually
// share a batch; each direction is tried five times.)
#[test]
fn a_move_sent_behind_a_delete_by_a_large_prefix_waits_for_it() {
    for (_, open) in EMBEDDED {
        let directions = [
            (StorageMode::Disk, StorageMode::Memory),
            (StorageMode::Memory, StorageMode::Disk),
        ];
        for (from, to) in directions.into_iter().cycle().take(10) {
            let dir = tempfile::tempdir().unwrap();
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let store = open(dir.path(), HistoryLimits::default());
                let store = store.as_ref();
                create(store, "p", from).await;
                fill(store, "p", 6_000).await;
                write(store, "p", vec![put("a", "v")]).await.unwrap();
                let (deleted, ()) =
                    tokio::join!(delete_prefix(store, "p", "m/"), move_to(store, "p", to));
                assert!(matches!(
                    deleted.results.as_slice(),
                    [kvs::store::OpResult::DeletePrefix { deleted: 6_000 }]
                ));
                let project = store.catalog().unwrap().project(&id("p")).unwrap().clone();
                assert_eq!(project.settings.storage, to);
                assert_eq!(keys(store, "p", "").await, ["a"], "{from:?} to {to:?}");
                assert_eq!(project_keys(store, "p"), 1);
                let report = store.verify().await.unwrap();
                assert!(report.damage.is_empty(), "{:?}", report.damage);
                store.close().await;
            });
        }
    }
}

/// Writes sent together reach the writer in one batch, where consecutive
/// writes to one project are applied with its keys table opened once: each
/// is still judged against what the ones before it left (a refused one
/// changes nothing), takes the next revision, and counts in its project's
/// figures; a write to another project after them has its own; and the
/// whole survives a restart (on disk, through the write-ahead log).
#[test]
fn writes_sent_together_are_judged_one_after_another() {
    for (_, open) in EMBEDDED {
        for storage in [StorageMode::Disk, StorageMode::Memory] {
            let dir = tempfile::tempdir().unwrap();
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let opened = open(dir.path(), HistoryLimits::default());
                let store = opened.as_ref();
                create(store, "p", storage).await;
                create(store, "q", storage).await;
                create(store, "r", storage).await;
                // The writer takes the first write alone, most likely, and
                // the others queue up behind its commit.
                let large = "L".repeat(1 << 20);
                let (filler, first, refused, third, last, other) = tokio::join!(
                    write(store, "r", vec![put("large", &large)]),
                    write(
                        store,
                        "p",
                        vec![conditional("a", "1", Precondition::Absent)]
                    ),
                    write(
                        store,
                        "p",
                        vec![conditional("a", "2", Precondition::Absent)]
                    ),
                    write(
                        store,
                        "p",
                        vec![conditional("a", "3", Precondition::Exists)]
                    ),
                    write(store, "p", vec![put("c", "1"), put("d", "1")]),
                    write(store, "q", vec![put("b", "1")]),
                );
                filler.unwrap();
                let first = first.unwrap().revision;
                let error = refused.unwrap_err().into_op_error();
                assert_eq!(
                    error,
                    StoreError::PreconditionFailed {
                        current: Some(first)
                    }
                );
                let revisions = [
                    first,
                    third.unwrap().revision,
                    last.unwrap().revision,
                    other.unwrap().revision,
                ];
                assert!(
                    revisions.windows(2).all(|w| w[1] == w[0] + 1),
                    "{storage:?}: {revisions:?}"
                );
                let check = |store: &dyn Store| {
                    let catalog = store.catalog().unwrap();
                    let p = catalog.project(&id("p")).unwrap();
                    let q = catalog.project(&id("q")).unwrap();
                    assert_eq!(
                        (p.stats.keys(), p.stats.bytes(), p.stats.revision()),
                        (3, 3, revisions[2]),
                        "{storage:?}"
                    );
                    assert_eq!((q.stats.keys(), q.stats.revision()), (1, revisions[3]));
                };
                check(store);
                assert_eq!(value(store, "p", "a").await.as_deref(), Some("3"));
                assert_eq!(keys(store, "p", "").await, ["a", "c", "d"]);
                let report = store.verify().await.unwrap();
                assert!(report.damage.is_empty(), "{:?}", report.damage);
                store.close().await;
                drop(opened);
                if storage == StorageMode::Disk {
                    let store = open(dir.path(), HistoryLimits::default());
                    check(store.as_ref());
                    assert_eq!(value(store.as_ref(), "p", "a").await.as_deref(), Some("3"));
                    store.close().await;
                }
            });
        }
    }
}
