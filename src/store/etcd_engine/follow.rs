//! The node's view of the cluster: loaded once at start, then kept by one
//! etcd watch on the whole prefix (with previous values, for the figures),
//! published through [`View::publish`] one revision at a time; and the
//! probe that vouches for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, KeyValue, KvClient, WatchOptions};

use super::layout::{self, Layout, Name};
use super::{
    FRESH_FOR, Inner, Mirror, PROBE_EVERY, cluster_revision, page_limit, read_error, send_on,
};
use crate::domain::{ProjectId, Timestamp, TokenId};
use crate::store::publish::{ProjectFigures, Publication};
use crate::store::{
    Catalog, Change, ChangeKind, ChangeSet, Feed, Figures, Project, ProjectStats, StoreError,
};

/// What start-up read.
pub struct Loaded {
    pub catalog: Catalog,
    pub revision: u64,
    pub generation: i64,
    pub projects: HashMap<ProjectId, i64>,
}

/// Every record under `prefix` at `revision` (0: now), page by page; the
/// revision read.
pub async fn range_all(
    client: &KvClient,
    prefix: &str,
    revision: i64,
) -> Result<(Vec<KeyValue>, i64), StoreError> {
    let end = layout::range_end(prefix.as_bytes());
    let mut start = prefix.as_bytes().to_vec();
    let mut revision = revision;
    let mut all = Vec::new();
    let mut largest = None;
    loop {
        let limit = page_limit(largest, 1000);
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut response = send_on(client, |mut kv| {
            let (start, options) = (start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await
        .map_err(read_error)?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        let more = response.more();
        let kvs = response.take_kvs();
        let page_largest = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).max();
        largest = largest.max(page_largest);
        if let Some(last) = kvs.last() {
            start = last.key().to_vec();
            start.push(0);
        }
        all.extend(kvs);
        if !more {
            return Ok((all, revision));
        }
    }
}

/// Reads the catalog and every project's figures at one revision.
pub async fn load(client: &KvClient, layout: &Layout) -> Result<Loaded, StoreError> {
    let (records, revision) = range_all(client, &layout.catalog(), 0).await?;
    let mut catalog = Catalog::default();
    let mut generation = 0;
    let mut projects = HashMap::new();
    let mut imported = Vec::new();
    for kv in &records {
        match layout.parse(kv.key()) {
            Name::Project(id) => {
                let settings = layout::decode_project(id, kv.value())?;
                projects.insert(settings.id.clone(), kv.mod_revision());
                let (keys, _) = range_all(client, &layout.keys(id), revision).await?;
                let mut figures = Figures::default();
                // The revision that created the project, not the last change
                // of its settings: a settings change writes in no project, and
                // the watch leaves the figures alone on one.
                let mut last = settings.created_revision.max(kv.create_revision() as u64);
                for key in &keys {
                    if let Name::Key { project, key: name } = layout.parse(key.key()) {
                        let (meta, _) =
                            layout::decode_key(project, name, key.value(), key.mod_revision())?;
                        figures.keys += 1;
                        figures.bytes += meta.size;
                        last = last.max(meta.version);
                    }
                }
                catalog.insert_project(Project {
                    settings,
                    stats: Arc::new(stats(figures, last, revision as u64)),
                    incarnation: kv.create_revision() as u64,
                });
            }
            Name::Token(id) => catalog.insert_token(layout::decode_token(id, kv.value())?),
            Name::Imported(id) => imported.push((
                TokenId::from_path(id),
                layout::decode_imported(id, kv.value())?,
            )),
            Name::Generation => generation = kv.mod_revision(),
            _ => {}
        }
    }
    for (id, digest) in imported {
        catalog.insert_imported(id, digest);
    }
    Ok(Loaded {
        catalog,
        revision: revision as u64,
        generation,
        projects,
    })
}

/// A project's figures, with a feed whose memory starts at `start` (older
/// changes come from etcd's history).
fn stats(figures: Figures, revision: u64, start: u64) -> ProjectStats {
    let stats = ProjectStats::new(figures.keys, figures.bytes, revision);
    ProjectStats {
        feed: Arc::new(Feed::new(start, 0)),
        ..stats
    }
}

/// Follows the cluster from revision `from` for as long as the store lives:
/// a broken watch is opened again where it stopped.
pub async fn follow(inner: Arc<Inner>, mut from: i64) {
    while !inner.closed.load(Ordering::Acquire) {
        match follow_once(&inner, &mut from).await {
            Ok(()) => {}
            Err(error) => tracing::warn!(%error, from, "the etcd watch stopped; opening it again"),
        }
        if inner.lost.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn follow_once(inner: &Inner, from: &mut i64) -> Result<(), StoreError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*from)
        .with_prev_key()
        .with_progress_notify();
    let mut moves = inner.members.moves();
    moves.borrow_and_update();
    let stream = inner
        .watcher()
        .watch(inner.layout.all(), Some(options))
        .await
        .map_err(StoreError::internal)?;
    let (sender, mut responses) = stream.split();
    *inner.progress.lock().await = Some(sender);
    loop {
        let response = tokio::select! {
            response = responses.message() => response.map_err(StoreError::internal)?,
            // The node moved to another member: watch there.
            _ = moves.changed() => return Err(StoreError::internal("moved to another etcd member")),
        };
        let Some(response) = response else { break };
        if response.canceled() {
            if response.compact_revision() > 0 {
                tracing::error!(
                    compacted = response.compact_revision(),
                    from = *from,
                    "the etcd watch fell behind a compaction: this node can no longer vouch \
                     for its view and answers 503 until it is restarted"
                );
                inner.lost.store(true, Ordering::Release);
                inner.ticks.send_modify(|tick| *tick += 1);
            }
            return Err(StoreError::internal(format!(
                "the watch was cancelled: {}",
                response.cancel_reason()
            )));
        }
        let events = response.events();
        if events.is_empty() {
            // A progress notification: every event up to its revision has
            // been delivered. (The creation answer is not one: history may
            // still follow it.)
            if !response.created()
                && let Some(header) = response.header()
            {
                inner.known.send_if_modified(|known| {
                    let newer = header.revision() > *known;
                    *known = (*known).max(header.revision());
                    newer
                });
            }
            continue;
        }
        // Events come in revision order, each revision whole.
        let mut start = 0;
        while start < events.len() {
            let revision = events[start].kv().map_or(0, |kv| kv.mod_revision());
            let mut end = start + 1;
            while end < events.len()
                && events[end].kv().map_or(0, |kv| kv.mod_revision()) == revision
            {
                end += 1;
            }
            apply(inner, revision, &events[start..end])?;
            *from = revision + 1;
            start = end;
        }
    }
    Err(StoreError::internal("the watch stream ended"))
}

/// A project's changes in one revision, as they are gathered.
#[derive(Default)]
struct Gathered {
    incarnation: u64,
    changes: BTreeMap<String, Change>,
    figures: Option<Figures>,
    at: Option<Timestamp>,
}

/// Publishes one revision's events.
fn apply(inner: &Inner, revision: i64, events: &[etcd_client::Event]) -> Result<(), StoreError> {
    let layout = &inner.layout;
    let mirror = inner.mirror.load_full();
    let mut catalog: Option<Catalog> = None;
    let mut generation = mirror.generation;
    let mut records = mirror.projects.clone();
    let expiry = events.iter().any(|event| {
        event.event_type() == EventType::Put
            && event
                .kv()
                .is_some_and(|kv| layout.parse(kv.key()) == Name::Sweep)
    });
    // The catalog first, so that keys of a project created in this revision
    // find it.
    for event in events {
        let Some(kv) = event.kv() else { continue };
        let put = event.event_type() == EventType::Put;
        let name = layout.parse(kv.key());
        let edit = || (*mirror.catalog).clone();
        match name {
            Name::Project(id) => {
                let catalog = catalog.get_or_insert_with(edit);
                let Some(project_id) = ProjectId::parse(id) else {
                    continue;
                };
                if put {
                    let settings = layout::decode_project(id, kv.value())?;
                    let incarnation = kv.create_revision() as u64;
                    let stats = match catalog.project(&project_id) {
                        Some(old) if old.incarnation == incarnation => old.stats.clone(),
                        _ => Arc::new(stats(Figures::default(), revision as u64, revision as u64)),
                    };
                    records.insert(project_id, kv.mod_revision());
                    catalog.insert_project(Project {
                        settings,
                        stats,
                        incarnation,
                    });
                } else {
                    records.remove(&project_id);
                    catalog.remove_project(&project_id);
                }
            }
            Name::Token(id) => {
                let catalog = catalog.get_or_insert_with(edit);
                let token_id = TokenId::from_path(id);
                let imported = catalog.imported_digest(&token_id).cloned();
                catalog.remove_token(&token_id);
                if put {
                    catalog.insert_token(layout::decode_token(id, kv.value())?);
                    // A token record rewritten with its imported digest
                    // still waiting keeps it (the digest's own key says
                    // when it goes).
                    if let Some(digest) = imported {
                        catalog.insert_imported(token_id, digest);
                    }
                }
            }
            Name::Imported(id) => {
                let catalog = catalog.get_or_insert_with(edit);
                let token_id = TokenId::from_path(id);
                if put {
                    catalog.insert_imported(token_id, layout::decode_imported(id, kv.value())?);
                } else if let Some(token) = catalog.token_by_id(&token_id).cloned() {
                    // The key was presented: the token is an ordinary one.
                    catalog.remove_token(&token_id);
                    catalog.insert_token((*token).clone());
                }
            }
            Name::Generation => generation = kv.mod_revision(),
            _ => {}
        }
    }
    let now_catalog = catalog.as_ref().unwrap_or(&mirror.catalog);
    // Then the keys, per project.
    let mut gathered: BTreeMap<ProjectId, Gathered> = BTreeMap::new();
    for event in events {
        let Some(kv) = event.kv() else { continue };
        let Name::Key { project, key } = layout.parse(kv.key()) else {
            continue;
        };
        let Some(id) = ProjectId::parse(project) else {
            continue;
        };
        let Some(current) = now_catalog.project(&id) else {
            continue;
        };
        let entry = gathered.entry(id).or_default();
        entry.incarnation = current.incarnation;
        let figures = entry.figures.get_or_insert_with(|| Figures {
            keys: current.stats.keys(),
            bytes: current.stats.bytes(),
        });
        // What the key held before (absent when it is new, or when the
        // previous record was compacted away).
        let previous = event
            .prev_kv()
            .and_then(|prev| {
                layout::decode_key(project, key, prev.value(), prev.mod_revision()).ok()
            })
            .map(|(meta, _)| meta);
        if let Some(previous) = &previous {
            figures.remove(previous);
        }
        let change = if event.event_type() == EventType::Put {
            let (meta, value) = layout::decode_key(project, key, kv.value(), kv.mod_revision())?;
            figures.keys += 1;
            figures.bytes += meta.size;
            entry.at = Some(meta.updated_at);
            Change {
                kind: ChangeKind::Put,
                key: meta.key,
                content_type: meta.content_type,
                value,
            }
        } else {
            Change {
                kind: if expiry {
                    ChangeKind::Expired
                } else {
                    ChangeKind::Delete
                },
                key: crate::domain::Key::from_stored(key),
                content_type: String::new(),
                value: bytes::Bytes::new(),
            }
        };
        entry.changes.insert(key.to_owned(), change);
    }
    let mut publication = Publication {
        catalog,
        revision: revision as u64,
        ..Publication::default()
    };
    for (id, entry) in gathered {
        let incarnation = entry.incarnation;
        if let Some(figures) = entry.figures {
            publication.figures.push((
                id.clone(),
                incarnation,
                ProjectFigures {
                    figures,
                    revision: revision as u64,
                },
            ));
        }
        let at = entry.at.unwrap_or_else(Timestamp::now);
        let changes = entry.changes.into_values().collect();
        publication.sets.push((
            id,
            incarnation,
            ChangeSet::new(revision as u64, at, changes),
        ));
    }
    let catalog_changed = publication.catalog.is_some();
    inner.view.publish(publication);
    inner.mirror.store(Arc::new(Mirror {
        catalog: inner.view.catalog(),
        generation,
        projects: records,
    }));
    inner.known.send_if_modified(|known| {
        let newer = revision > *known;
        *known = (*known).max(revision);
        newer
    });
    inner.reached.send_if_modified(|reached| {
        let newer = revision as u64 > *reached;
        *reached = (*reached).max(revision as u64);
        newer
    });
    if catalog_changed {
        inner.ticks.send_modify(|tick| *tick += 1);
    }
    Ok(())
}

/// Vouches for the view: a linearizable read of the cluster's revision,
/// then a progress request on the watch; once the watch has reached that
/// revision, the view is fresh as of the moment the read was sent.
pub async fn probe(inner: Arc<Inner>) {
    while !inner.closed.load(Ordering::Acquire) {
        tokio::time::sleep(PROBE_EVERY).await;
        let sent = Instant::now();
        let confirmed = tokio::time::timeout(Duration::from_secs(1), async {
            let revision = cluster_revision(&inner).await.ok()?;
            if let Some(sender) = inner.progress.lock().await.as_mut() {
                sender.request_progress().await.ok()?;
            }
            let mut known = inner.known.subscribe();
            known.wait_for(|known| *known >= revision).await.ok()?;
            Some(())
        })
        .await;
        if matches!(confirmed, Ok(Some(()))) {
            if let Ok(mut at) = inner.fresh_at.lock() {
                *at = (*at).max(sent);
            }
        } else {
            // The member in use did not confirm: another may.
            inner.members.move_on(&inner.layout.generation()).await;
        }
    }
}

/// Tells open watches and blocking reads (by a tick) the moment the view
/// stops being fresh, and when it is confirmed again: they end, or go on.
/// It wakes when the last confirmation runs out, not at the probe's pace,
/// so a watch ends within the freshness bound.
pub async fn freshness(inner: Arc<Inner>) {
    let mut was_fresh = true;
    while !inner.closed.load(Ordering::Acquire) {
        let runs_out = inner
            .fresh_at
            .lock()
            .map(|at| *at + FRESH_FOR + Duration::from_millis(1))
            .unwrap_or_else(|_| Instant::now());
        let now = Instant::now();
        // While fresh: at the moment the confirmation runs out (at once if
        // it just did), or sooner; while not: at the probe's pace.
        let wake = if was_fresh {
            runs_out.clamp(now, now + PROBE_EVERY)
        } else {
            now + PROBE_EVERY
        };
        tokio::time::sleep_until(wake.into()).await;
        let fresh = inner.is_fresh();
        if fresh != was_fresh {
            if fresh {
                tracing::info!("the view of the etcd cluster is confirmed again");
            } else {
                tracing::warn!("cannot confirm the view of the etcd cluster: answering 503");
            }
            inner.ticks.send_modify(|tick| *tick += 1);
            was_fresh = fresh;
        }
    }
}
