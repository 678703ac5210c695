//! Reads: keys and listings straight from etcd (linearizable), the change
//! log from etcd's history, and snapshots of the whole prefix at one
//! revision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{EventType, GetOptions, WatchOptions};

use super::follow::range_all;
use super::layout::{self, Name, range_end};
use super::{Inner, RPC_TIMEOUT, page_limit, read_error, send};
use crate::domain::{Key, ProjectId, Timestamp, TokenId};
use crate::store::kv::is_live;
use crate::store::{
    Change, ChangeKind, ChangeSet, ChangeSets, Entry, ListPage, ListRequest, Project, ProjectDump,
    Read, StoreError, StoreSnapshot, TokenDump,
};

/// How long a read waits for this node's view to publish the newest write
/// it shows, so that a watch opened here after it starts past that write.
/// The read does not wait for the view to reach the revision it was
/// answered at: writes outside the prefix take revisions that no event of
/// the watch reaches. That revision is still one a `since` or `after` may
/// name ([`super::EtcdStore`]'s `resumable_revision`).
const CATCH_UP: Duration = Duration::from_secs(1);

/// How long a read of etcd's history waits for more events before it takes
/// the history as complete, when the revision it reads up to may have no
/// event of kvs's: only the revision the node read at start. Any later
/// revision of the node's view is one its watch saw an event at, so a read
/// up to it waits for that event (within [`RPC_TIMEOUT`]), however long
/// etcd takes to send the history before it (with a 400 ms pause taken as
/// the end for every read, a watch from revision 0 once replayed nothing
/// on a loaded machine).
const HISTORY_IDLE: Duration = Duration::from_secs(2);

pub async fn get(
    inner: &Inner,
    id: &ProjectId,
    key: &Key,
    with_value: bool,
) -> Result<Read<Option<Entry>>, StoreError> {
    inner.project(id)?;
    let name = inner.layout.key(id.as_str(), key.as_str());
    let get = send(inner, |mut kv| {
        let name = name.clone();
        async move { kv.get(name, None).await }
    });
    let response = tokio::time::timeout(RPC_TIMEOUT, get)
        .await
        .map_err(|_| StoreError::Unavailable)?
        .map_err(read_error)?;
    let revision = response.header().map_or(0, |h| h.revision().max(0) as u64);
    let now = Timestamp::now();
    let entry = match response.kvs().first() {
        Some(kv) => {
            let (meta, value) =
                layout::decode_key(id.as_str(), key.as_str(), kv.value(), kv.mod_revision())?;
            is_live(&meta, now).then(|| Entry {
                meta,
                value: if with_value { value } else { Bytes::new() },
            })
        }
        None => None,
    };
    inner.answered_at(revision);
    if let Some(entry) = &entry {
        inner.reach(entry.meta.version, CATCH_UP).await;
    }
    Ok(Read {
        revision,
        value: entry,
    })
}

pub async fn list(
    inner: &Inner,
    id: &ProjectId,
    request: ListRequest,
) -> Result<Read<ListPage>, StoreError> {
    inner.project(id)?;
    let layout = &inner.layout;
    let prefix = request.prefix.as_str();
    let from = layout.key(id.as_str(), prefix);
    let end = range_end(from.as_bytes());
    let mut start = match &request.after {
        Some(after) if after.as_str() >= prefix => {
            let mut start = layout.key(id.as_str(), after).into_bytes();
            start.push(0);
            start
        }
        _ => from.into_bytes(),
    };
    let now = Timestamp::now();
    let mut page = ListPage::default();
    let mut used = 0u64;
    let mut revision = 0i64;
    let mut largest = None;
    'pages: loop {
        let limit = page_limit(largest, request.limit.clamp(1, 1000) + 1);
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let response = tokio::time::timeout(
            RPC_TIMEOUT,
            send(inner, |mut kv| {
                let (start, options) = (start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            }),
        )
        .await
        .map_err(|_| StoreError::Unavailable)?
        .map_err(read_error)?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        let page_largest = response
            .kvs()
            .iter()
            .map(|kv| kv.key().len() + kv.value().len())
            .max();
        largest = largest.max(page_largest);
        for kv in response.kvs() {
            let Name::Key { project, key } = layout.parse(kv.key()) else {
                continue;
            };
            let (meta, value) = layout::decode_key(project, key, kv.value(), kv.mod_revision())?;
            if !is_live(&meta, now) {
                continue;
            }
            let full = page.entries.len() >= request.limit
                || (request.with_values && used >= request.value_budget);
            if full {
                page.more = true;
                break 'pages;
            }
            let value = request.with_values.then_some(value);
            used += value.as_ref().map_or(0, |v| v.len() as u64);
            page.entries.push((meta, value));
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    let revision = revision.max(0) as u64;
    inner.answered_at(revision);
    if let Some(newest) = page.entries.iter().map(|(meta, _)| meta.version).max() {
        inner.reach(newest, CATCH_UP).await;
    }
    Ok(Read {
        revision,
        value: page,
    })
}

pub async fn changes(
    inner: &Inner,
    id: &ProjectId,
    after: u64,
    max_changes: usize,
) -> Result<ChangeSets, StoreError> {
    let project = inner.project(id)?;
    if let Some(sets) = project.stats.feed.after(after, max_changes) {
        return Ok(sets);
    }
    let target = inner.view.revision();
    if after >= target {
        return Ok(Vec::new());
    }
    tokio::time::timeout(
        RPC_TIMEOUT,
        history(inner, &project, after, target, max_changes),
    )
    .await
    .map_err(|_| StoreError::Unavailable)?
}

/// The project's change sets in `(after, target]`, from etcd's history.
async fn history(
    inner: &Inner,
    project: &Project,
    after: u64,
    target: u64,
    max_changes: usize,
) -> Result<ChangeSets, StoreError> {
    let layout = &inner.layout;
    let id = project.settings.id.as_str();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(after as i64 + 1);
    let mut stream = inner
        .watcher()
        .watch(layout.all(), Some(options))
        .await
        .map_err(read_error)?;
    let mut sets: ChangeSets = Vec::new();
    let mut taken = 0;
    // etcd 3.4 answers a progress request at once, before the history it
    // still has to send, so the end of the history is found by its
    // revisions: the event at `target`, or, when `target` is the revision
    // read at start (which may have no event of kvs's), no more events for
    // a while once etcd has had time to send them (it sends the history of
    // a new watch every 100 ms).
    // (The caller bounds the whole read by `RPC_TIMEOUT`.)
    let exact = target > inner.started;
    loop {
        let next = if exact {
            stream.message().await
        } else {
            match tokio::time::timeout(HISTORY_IDLE, stream.message()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        };
        let Some(response) = next.map_err(read_error)? else {
            break;
        };
        if response.canceled() {
            let compacted = response.compact_revision();
            if compacted > 0 {
                return Err(StoreError::HistoryCompacted {
                    compact_revision: (compacted - 1).max(0) as u64,
                });
            }
            return Err(StoreError::Unavailable);
        }
        let events = response.events();
        if events.is_empty() {
            continue;
        }
        let mut by_revision: BTreeMap<i64, Revision> = BTreeMap::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            let slot = by_revision.entry(revision).or_default();
            match layout.parse(kv.key()) {
                Name::Sweep if event.event_type() == EventType::Put => slot.0 = true,
                Name::Key { project: p, key } if p == id => {
                    if (revision as u64) < project.incarnation {
                        continue;
                    }
                    let change = if event.event_type() == EventType::Put {
                        let (meta, value) = layout::decode_key(p, key, kv.value(), revision)?;
                        slot.2 = Some(meta.updated_at);
                        Change {
                            kind: ChangeKind::Put,
                            key: meta.key,
                            content_type: meta.content_type,
                            value,
                        }
                    } else {
                        Change {
                            kind: ChangeKind::Delete,
                            key: Key::from_stored(key),
                            content_type: String::new(),
                            value: Bytes::new(),
                        }
                    };
                    slot.1.insert(key.to_owned(), change);
                }
                _ => {}
            }
        }
        let mut done = false;
        for (revision, (expiry, changes, at)) in by_revision {
            if revision as u64 > target || (taken >= max_changes && !sets.is_empty()) {
                done = true;
                break;
            }
            if changes.is_empty() {
                continue;
            }
            let changes: Vec<Change> = changes
                .into_values()
                .map(|mut change| {
                    if expiry && change.kind == ChangeKind::Delete {
                        change.kind = ChangeKind::Expired;
                    }
                    change
                })
                .collect();
            taken += changes.len();
            let at = at.unwrap_or_else(Timestamp::now);
            sets.push(Arc::new(ChangeSet::new(revision as u64, at, changes)));
        }
        if done
            || events
                .last()
                .and_then(|e| e.kv())
                .is_some_and(|kv| kv.mod_revision() as u64 >= target)
        {
            break;
        }
    }
    Ok(sets)
}

/// One revision's changes to a project read from the history: whether the
/// revision was a sweep (its deletes are expiries), the changes by key, and
/// when it was written (from a put's time, if it has one).
type Revision = (bool, BTreeMap<String, Change>, Option<Timestamp>);

/// The whole prefix at one revision, held in memory.
pub struct EtcdSnapshot {
    revision: u64,
    projects: Vec<ProjectDump>,
    tokens: Vec<TokenDump>,
    keys: HashMap<ProjectId, Vec<Entry>>,
}

pub async fn snapshot(inner: &Inner) -> Result<EtcdSnapshot, StoreError> {
    let layout = &inner.layout;
    let (records, revision) = range_all(&inner.kv(), &layout.catalog(), 0).await?;
    let mut projects = Vec::new();
    let mut tokens = Vec::new();
    let mut imported = HashMap::new();
    let mut keys = HashMap::new();
    for kv in &records {
        match layout.parse(kv.key()) {
            Name::Project(id) => {
                let settings = layout::decode_project(id, kv.value())?;
                let (stored, _) = range_all(&inner.kv(), &layout.keys(id), revision).await?;
                let mut entries = Vec::new();
                // As the view answers it (follow.rs): a project's revision
                // is at least the etcd revision that created it.
                let mut last = settings.created_revision.max(kv.create_revision() as u64);
                let mut bytes = 0;
                for stored in &stored {
                    if let Name::Key { project, key } = layout.parse(stored.key()) {
                        let (meta, value) = layout::decode_key(
                            project,
                            key,
                            stored.value(),
                            stored.mod_revision(),
                        )?;
                        last = last.max(meta.version);
                        bytes += meta.size;
                        entries.push(Entry { meta, value });
                    }
                }
                projects.push(ProjectDump {
                    revision: last,
                    keys: entries.len() as u64,
                    bytes,
                    settings: settings.clone(),
                });
                keys.insert(settings.id, entries);
            }
            Name::Token(id) => tokens.push(layout::decode_token(id, kv.value())?),
            Name::Imported(id) => {
                imported.insert(
                    TokenId::from_path(id),
                    layout::decode_imported(id, kv.value())?,
                );
            }
            _ => {}
        }
    }
    projects.sort_by(|a, b| a.settings.id.cmp(&b.settings.id));
    tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let tokens = tokens
        .into_iter()
        .map(|record| TokenDump {
            imported: imported.remove(&record.id),
            record,
        })
        .collect();
    Ok(EtcdSnapshot {
        revision: revision.max(0) as u64,
        projects,
        tokens,
        keys,
    })
}

impl StoreSnapshot for EtcdSnapshot {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn projects(&self) -> Vec<ProjectDump> {
        self.projects.clone()
    }

    fn tokens(&self) -> Vec<TokenDump> {
        self.tokens.clone()
    }

    fn keys(
        &self,
        project: &ProjectId,
        each: &mut dyn FnMut(Entry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for entry in self.keys.get(project).into_iter().flatten() {
            each(entry.clone())?;
        }
        Ok(())
    }
}
