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
