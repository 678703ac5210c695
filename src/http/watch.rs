//! Change notification: `GET …/watch` (server-sent events) and blocking
//! reads (`GET …/kv/{key}?wait=&after=`).
//!
//! Both read the project's change feed (`store::Feed`): a notifier that
//! carries the newest revision, and change sets shared by every reader. A
//! watch is one task that sleeps until the notifier wakes it, reads what is
//! new after its own cursor, and writes it to its connection; a set's
//! rendering is made once and shared by every watcher that takes all of it.
//! A watcher that cannot keep up is told so (`slow_consumer`) and closed, so
//! it never holds the others back. A token revoked, a project deleted or a
//! server stopping ends every watch and blocking read within a second.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Ctx;
use super::auth::Caller;
use super::error::ApiError;
use super::kv::listed_prefix;
use super::limits::Place;
use super::request::Query;
use super::views::Encoded;
use crate::domain::{Key, Prefix, ProjectId, Role, Timestamp};
use crate::store::{ChangeKind, ChangeSet, Store, StoreError, Subscription};

/// How long a client waits before it reconnects, sent first on every watch.
const RETRY_MS: &str = "2000";
/// A comment goes out this often on an idle stream (the contract: at least
/// every 15 s), so proxies and clients know the stream is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A watcher more than this many changes behind the feed is cut off...
const SLOW_CHANGES: u64 = 10_000;
/// ...and so is one that has not taken a change for this long.
const SLOW_SECONDS: i64 = 30;
/// How often a blocked watcher checks whether it is too slow.
const SLOW_CHECK: Duration = Duration::from_millis(250);
/// Frames waiting for the connection, per watcher.
const QUEUED_FRAMES: usize = 16;
/// Changes read from the feed or the log at a time.
const READ_CHANGES: usize = 1024;
/// The longest blocking read.
pub const MAX_WAIT_SECONDS: u64 = 300;

// ======================================================= lifetime of a request

/// Why a long request ends before its time.
enum Ended {
    /// The token was revoked or expired, or its project deleted, or its
    /// rights no longer allow the request.
    Revoked,
    /// The project was deleted (for a token that outlives it: an admin's).
    ProjectGone,
    /// The server is stopping.
    Stopping,
    /// The store cannot vouch for its catalog (a cluster node cut off).
    Unavailable,
}

/// What keeps a long request alive: its token (or its project's `public`
/// setting, for an anonymous caller), its project, and the server.
struct Lifeline {
    store: Arc<dyn Store>,
    caller: Caller,
    project: ProjectId,
    /// The project's feed, and which incarnation of the project it is.
    subscription: Subscription,
    /// Whether the request lists keys (a watch), which `keys_discoverable`
    /// may forbid to read and write tokens.
    lists: bool,
    catalog: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    expires: Option<Instant>,
    /// Its place among its token's open watches and blocking reads.
    _slot: Place<crate::domain::TokenId>,
}

impl Lifeline {
    /// The lifeline of a long request, if its token may open one more.
    fn new(
        ctx: &Ctx<'_>,
        subscription: Subscription,
        project: ProjectId,
        lists: bool,
    ) -> Result<Lifeline, ApiError> {
        let slot = ctx.app.limiter.open_watch(ctx.caller.id())?;
        let expires = ctx.caller.token().and_then(|t| t.expires_at).map(|at| {
            let left = at.millis().saturating_sub(Timestamp::now().millis()).max(0);
            Instant::now() + Duration::from_millis(left as u64)
        });
        Ok(Lifeline {
            store: ctx.app.store.clone(),
            caller: ctx.caller.clone(),
            project,
            subscription,
            lists,
            catalog: ctx.app.store.catalog_changes(),
            stopping: ctx.app.stopping.clone(),
            expires,
            _slot: slot,
        })
    }

    /// Why the token may no longer make this request on this project, if
    /// it may not.
    fn refused(&self) -> Option<Ended> {
        let Ok(catalog) = self.store.catalog() else {
            return Some(Ended::Unavailable);
        };
        if !self.caller.still_held(&catalog) {
            return Some(Ended::Revoked);
        }
        match catalog.project(&self.project) {
            Some(p) if p.incarnation == self.subscription.incarnation => {
                let open = match &self.caller {
                    Caller::Anonymous {
                        project: Some(_), ..
                    } => p.settings.public.role().is_some(),
                    _ => true,
                };
                let lists = !self.lists
                    || p.settings.keys_discoverable
                    || self.caller.role() >= Role::Manage;
                (!open || !lists).then_some(Ended::Revoked)
            }
            _ => Some(Ended::ProjectGone),
        }
    }

    /// Completes when the request must end. Cancel-safe: every branch
    /// waits on a cancel-safe future.
    async fn ended(&mut self) -> Ended {
        loop {
            if *self.stopping.borrow_and_update() {
                return Ended::Stopping;
            }
            let expiry = async {
                match self.expires {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.catalog.changed() => {
                    if changed.is_err() {
                        return Ended::Stopping;
                    }
                    if let Some(ended) = self.refused() {
                        return ended;
                    }
                }
                changed = self.stopping.changed() => {
                    if changed.is_err() {
                        return Ended::Stopping;
                    }
                }
                () = expiry => return Ended::Revoked,
            }
        }
    }
}

// ======================================================= blocking reads

/// The `wait` and `after` of a blocking read, if the request has them.
pub fn blocking(query: &Query) -> Result<Option<(Duration, Option<u64>)>, ApiError> {
    let Some(wait) = query.get("wait")? else {
        return Ok(None);
    };
    let seconds = crate::domain::parse_duration_at_most(wait, MAX_WAIT_SECONDS)
        .map_err(|error| ApiError::bad_request(format!("wait: {error}")))?;
    let after = query
        .get("after")?
        .map(|text| parse_revision("after", text))
        .transpose()?;
    Ok(Some((Duration::from_secs(seconds), after)))
}

/// Waits until `key` is written or deleted at a revision above `after`
/// (at once if that already happened, as far as the change log reaches),
/// or until `wait` runs out; the caller then answers the key's current
/// state. Without `after`, waits for the next change from now. Returns the
/// revision of the change that woke it (0 for none): the answer must
/// reflect at least that.
pub async fn wait_for_change(
    ctx: &Ctx<'_>,
    project: &ProjectId,
    key: &Key,
    wait: Duration,
    after: Option<u64>,
) -> Result<u64, ApiError> {
    let deadline = Instant::now() + wait;
    let store = &ctx.app.store;
    // Subscribed before anything is read: no change can slip in between.
    let subscription = store.subscribe(project)?;
    let mut newest = subscription.feed.subscribe();
    let mut cursor = store.revision().max(*newest.borrow());
    if let Some(after) = after.filter(|&after| after > cursor) {
        resumable(store.as_ref(), "after", after).await?;
    }
    let after = after.unwrap_or(cursor);
    let current = store.get(project, key, false).await?;
    match current.value {
        Some(entry) if entry.meta.version > after => return Ok(0),
        // Its last write is at or below `after`: nothing newer happened.
        Some(_) => {}
        // Absent: was it deleted above `after`? The log tells, as far as it
        // reaches.
        None => {
            let from = after.max(subscription.feed.compacted());
            if from < cursor && touches(store.as_ref(), project, key, from, cursor).await? {
                return Ok(0);
            }
        }
    }
    cursor = cursor.max(after);
    let mut lifeline = Lifeline::new(ctx, subscription, project.clone(), false)?;
    loop {
        tokio::select! {
            changed = newest.changed() => {
                if changed.is_err() {
                    return Ok(0);
                }
                let upto = *newest.borrow_and_update();
                if upto > cursor {
                    if touches(store.as_ref(), project, key, cursor, upto).await? {
                        return Ok(upto);
                    }
                    cursor = upto;
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(0),
            ended = lifeline.ended() => {
                return match ended {
                    Ended::Revoked => Err(ApiError::unauthorized()),
                    Ended::ProjectGone => Err(ApiError::project_not_found()),
                    Ended::Stopping => Ok(0),
                    Ended::Unavailable => Err(StoreError::Unavailable.into()),
                };
            }
        }
    }
}

/// Whether a change set after `from`, up to `upto`, changed `key`. Changes
/// no longer kept count as a change: the caller answers the current state.
async fn touches(
    store: &dyn Store,
    project: &ProjectId,
    key: &Key,
    mut from: u64,
    upto: u64,
) -> Result<bool, ApiError> {
    while from < upto {
        let sets = match store.changes(project, from, READ_CHANGES).await {
            Ok(sets) => sets,
            Err(StoreError::HistoryCompacted { .. }) => return Ok(true),
            Err(error) => return Err(error.into()),
        };
        let Some(last) = sets.last() else {
            return Ok(false);
        };
        from = last.revision;
        let changed = sets
            .iter()
            .filter(|set| set.revision <= upto)
            .any(|set| set.changes.iter().any(|change| change.key == *key));
        if changed {
            return Ok(true);
        }
    }
    Ok(false)
}

// ======================================================= watch

/// `GET /v1/projects/{p}/watch?prefix=&since=&values=`.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/watch",
    summary = "Watch changes (server-sent events)",
    tag = "watch",
    description = "Read: server-sent events (`put`, `delete`, `sync`, `error`); see docs/API.md",
    params(
        ("project" = String, Path, description = "The project id"),
        ("prefix" = Option<String>, Query, description = "Only keys that start with it"),
        ("since" = Option<u64>, Query, description = "Replay the retained changes after this revision"),
        ("values" = Option<bool>, Query, description = "Add `value` and `encoding` to put events"),
        ("Last-Event-ID" = Option<String>, Header, description = "A revision, as `since` (and wins over it)"),
    ),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "`revision_in_future`: `since` or `Last-Event-ID` is beyond the current revision",
            body = super::error::ErrorBody),
        (status = 410, description = "`since` is older than the retained history (`compact_revision`)",
            body = super::error::ErrorBody),
    ),
)]
pub async fn watch(
    ctx: &Ctx<'_>,
    raw_project: &str,
    request: Request,
    query: &Query,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_project)?;
    let prefix = listed_prefix(ctx, &project, query)?;
    let values = query.flag("values")?;
    let since = since(query, request.headers())?;
    let id = project.settings.id.clone();
    let subscription = ctx.app.store.subscribe(&id)?;

    // Subscribed before the revision is read: every change after it is
    // announced, and every change up to it is in the feed or the log.
    let newest = subscription.feed.subscribe();
    // A change is published to the feed a moment before the store
    // acknowledges its revision: either says the revision was reached.
    let current = ctx.app.store.revision().max(*newest.borrow());
    if let Some((name, since)) = since.filter(|&(_, since)| since > current) {
        // On a cluster node, a revision the cluster answered at, past this
        // node's view (a read after a write outside kvs's prefix): the
        // watch starts after it, and changes at or below it that this node
        // has yet to publish are not the client's to be sent.
        resumable(ctx.app.store.as_ref(), name, since).await?;
    }
    let since = since.map(|(_, since)| since);
    if let Some(since) = since {
        // The history of this project reaches back to its creation at
        // most: a revision before it (but 0, "from the start") may come
        // from a project of the same id deleted since, whose end this
        // history does not hold.
        let born = if since > 0 {
            project.settings.created_revision
        } else {
            0
        };
        let compacted = subscription.feed.compacted().max(born);
        if since < compacted {
            return Err(StoreError::HistoryCompacted {
                compact_revision: compacted,
            }
            .into());
        }
        // Older than the feed's memory: the store reads the history from
        // its log (or etcd's), whose compaction the feed may not know of
        // (etcd compacts on its own). Asked now, a compacted one is a 410
        // like the others, not a 200 whose stream ends in an error event.
        if since < current && subscription.feed.after(since, 1).is_none() {
            let first = ctx.app.store.changes(&id, since, 1).await;
            if let Err(error @ StoreError::HistoryCompacted { .. }) = first {
                return Err(error.into());
            }
        }
    }
    let sync = current.max(since.unwrap_or(0));

    let (frames, queue) = mpsc::channel(QUEUED_FRAMES);
    let (last_frame, last) = oneshot::channel();
    let watcher = Watcher {
        lifeline: Lifeline::new(ctx, subscription, id, true)?,
        newest,
        prefix,
        values,
        cursor: since.unwrap_or(sync),
        delivered: 0,
        frames,
        retry_sent: false,
    };
    tokio::spawn(watcher.run(sync, last_frame));
    crate::telemetry::watcher_opened();

    let mut response = Response::new(Body::new(EventBody {
        queue,
        last: Some(last),
    }));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Tells nginx and the like not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The revision to resume after: `Last-Event-ID`, else `since`. A browser's
/// `EventSource` reconnects to the URL it was opened with (`?since=` and
/// all) and adds `Last-Event-ID`, which is then the newer of the two.
/// Named, for the error that refuses one beyond the current revision.
fn since(query: &Query, headers: &HeaderMap) -> Result<Option<(&'static str, u64)>, ApiError> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Last-Event-ID must be a revision"))?;
        return parse_revision("Last-Event-ID", text.trim())
            .map(|since| Some(("Last-Event-ID", since)));
    }
    query
        .get("since")?
        .map(|text| parse_revision("since", text).map(|since| ("since", since)))
        .transpose()
}

/// Refuses a `since` or `after` (called `name`) beyond every revision the
/// store can resume from: `400 revision_in_future`.
async fn resumable(store: &dyn Store, name: &str, asked: u64) -> Result<(), ApiError> {
    let reached = store.resumable_revision(asked).await?;
    if asked > reached {
        return Err(ApiError::revision_in_future(name, asked, reached));
    }
    Ok(())
}

fn parse_revision(name: &str, text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("{name} must be a revision (a whole number)")))
}

/// Why a watch stream ends.
enum Stop {
    /// Quietly: the client left, the token was revoked, the server stops.
    Quiet,
    /// With a last `event: error`.
    Error(&'static str),
}

/// One open watch: its cursor in the project's history and its connection.
struct Watcher {
    /// The token, project and store this watch reads as and from.
    lifeline: Lifeline,
    newest: watch::Receiver<u64>,
    prefix: Prefix,
    values: bool,
    /// The last revision whose changes this watcher has handled.
    cursor: u64,
    /// The feed's count of changes up to the last set handed to the
    /// connection (0 while replaying from the log).
    delivered: u64,
    frames: mpsc::Sender<Bytes>,
    /// Whether the first frame, which carries `retry:`, has been sent.
    retry_sent: bool,
}

impl Watcher {
    async fn run(mut self, sync: u64, last_frame: oneshot::Sender<Bytes>) {
        if let Err(Stop::Error(code)) = self.stream(sync).await {
            let data = json!({"code": code, "message": error_message(code)});
            let _ = last_frame.send(Bytes::from(format!("event: error\ndata: {data}\n\n")));
        }
        crate::telemetry::watcher_closed();
        // Dropping the sender ends the body after the last frame.
    }

    async fn stream(&mut self, sync: u64) -> Result<(), Stop> {
        self.catch_up(Some(sync)).await?;
        self.cursor = self.cursor.max(sync);
        let frame = format!("event: sync\nid: {sync}\ndata: {{\"revision\":{sync}}}\n\n");
        self.send(Bytes::from(frame), None).await?;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.catch_up(None).await?;
            tokio::select! {
                changed = self.newest.changed() => {
                    if changed.is_err() {
                        return Err(Stop::Quiet);
                    }
                }
                _ = heartbeat.tick() => {
                    self.send(Bytes::from_static(b": keep-alive\n\n"), None).await?;
                }
                _ = self.lifeline.ended() => return Err(Stop::Quiet),
                () = self.frames.closed() => return Err(Stop::Quiet),
            }
        }
    }

    /// Sends every change after the cursor (up to `upto`, when given).
    async fn catch_up(&mut self, upto: Option<u64>) -> Result<(), Stop> {
        loop {
            if upto.is_some_and(|upto| self.cursor >= upto) {
                return Ok(());
            }
            let lifeline = &self.lifeline;
            let read = lifeline
                .store
                .changes(&lifeline.project, self.cursor, READ_CHANGES);
            let sets = match read.await {
                Ok(sets) => sets,
                Err(StoreError::HistoryCompacted { .. }) => {
                    return Err(Stop::Error("history_compacted"));
                }
                Err(StoreError::ProjectNotFound) => return Err(Stop::Quiet),
                Err(error) => {
                    tracing::error!(%error, "a watch cannot read the change log");
                    return Err(Stop::Error("internal"));
                }
            };
            if sets.is_empty() {
                return Ok(());
            }
            for set in sets {
                if upto.is_some_and(|upto| set.revision > upto) {
                    return Ok(());
                }
                if let Some(frame) = self.render(&set) {
                    self.send(frame, Some(&set)).await?;
                }
                self.cursor = set.revision;
                if set.serial != 0 {
                    self.delivered = set.serial;
                }
            }
        }
    }

    /// The events of a set that this watcher takes, or `None` for none.
    fn render(&self, set: &ChangeSet) -> Option<Bytes> {
        let taken = set
            .changes
            .iter()
            .filter(|c| self.prefix.covers(c.key.as_str()))
            .count();
        if taken == 0 {
            return None;
        }
        if taken == set.changes.len() {
            let shared = &set.rendered[usize::from(self.values)];
            return Some(
                shared
                    .get_or_init(|| render(set, &self.prefix, self.values))
                    .clone(),
            );
        }
        Some(render(set, &self.prefix, self.values))
    }

    /// Hands a frame to the connection. While the connection does not take
    /// it, checks every [`SLOW_CHECK`] whether this watcher has fallen too
    /// far behind, and whether its token still holds.
    async fn send(&mut self, frame: Bytes, set: Option<&ChangeSet>) -> Result<(), Stop> {
        // `retry:` travels in the first event's block: a block of its own
        // is an empty message to some SSE libraries (httpx-sse).
        let frame = if self.retry_sent {
            frame
        } else {
            self.retry_sent = true;
            let mut first = BytesMut::with_capacity(frame.len() + 16);
            first.put_slice(b"retry: ");
            first.put_slice(RETRY_MS.as_bytes());
            first.put_slice(b"\n");
            first.put_slice(&frame);
            first.freeze()
        };
        let frame = match self.frames.try_send(frame) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Quiet),
            Err(mpsc::error::TrySendError::Full(frame)) => frame,
        };
        let waiting_since = Timestamp::now();
        let behind_since = set
            .filter(|set| set.serial != 0)
            .map_or(waiting_since, |set| set.at);
        loop {
            tokio::select! {
                permit = self.frames.reserve() => {
                    return match permit {
                        Ok(permit) => {
                            permit.send(frame);
                            Ok(())
                        }
                        Err(_) => Err(Stop::Quiet),
                    };
                }
                () = tokio::time::sleep(SLOW_CHECK) => {
                    let lag = self.lifeline.subscription.feed.published().saturating_sub(self.delivered);
                    let too_many = self.delivered != 0 && lag > SLOW_CHANGES;
                    let too_late =
                        Timestamp::now().millis() - behind_since.millis() > SLOW_SECONDS * 1000;
                    if too_many || too_late {
                        return Err(Stop::Error("slow_consumer"));
                    }
                }
                _ = self.lifeline.ended() => return Err(Stop::Quiet),
            }
        }
    }
}

fn error_message(code: &str) -> &'static str {
    match code {
        "slow_consumer" => {
            "this watch fell too far behind and was closed; resume with Last-Event-ID"
        }
        "history_compacted" => {
            "the changes this watch needs are no longer kept; read the current state and watch again"
        }
        _ => "the watch failed; resume with Last-Event-ID",
    }
}

/// A put or delete event's data. A value is inlined as `Encoded` writes it
/// (stored JSON as its stored text).
#[derive(serde::Serialize)]
struct EventData<'a> {
    key: &'a str,
    version: u64,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Encoded<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
}

/// A set's events under `prefix`, in key order; only the last carries
/// `id: <revision>`.
fn render(set: &ChangeSet, prefix: &Prefix, values: bool) -> Bytes {
    let changes: Vec<_> = set
        .changes
        .iter()
        .filter(|c| prefix.covers(c.key.as_str()))
        .collect();
    let mut out = BytesMut::with_capacity(changes.len() * 96);
    for (index, change) in changes.iter().enumerate() {
        let (event, reason) = match change.kind {
            ChangeKind::Put => ("put", None),
            ChangeKind::Delete => ("delete", None),
            ChangeKind::Expired => ("delete", Some("expired")),
        };
        let value = (values && change.kind == ChangeKind::Put)
            .then(|| Encoded::of(&change.value, &change.content_type));
        let data = EventData {
            key: change.key.as_str(),
            version: set.revision,
            revision: set.revision,
            reason,
            encoding: value.as_ref().map(Encoded::name),
            value,
        };
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_slice(b"\n");
        if index + 1 == changes.len() {
            out.put_slice(format!("id: {}\n", set.revision).as_bytes());
        }
        // A JSON object of strings, numbers and checked JSON text:
        // serialising cannot fail. Strings have their newlines escaped, but
        // a stored JSON value's text may hold line breaks between tokens:
        // each line goes in a `data:` line of its own, which SSE clients
        // join with `\n`, so the data is the same JSON.
        let mut text = Vec::with_capacity(96);
        let _ = serde_json::to_writer(&mut text, &data);
        data_lines(&mut out, &text);
        out.put_slice(b"\n");
    }
    out.freeze()
}

/// `text` as `data:` lines, each ended by `\n`: split at every line break
/// SSE knows (`\r\n`, `\r`, `\n`).
fn data_lines(out: &mut BytesMut, text: &[u8]) {
    let mut rest = text;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest[..end]);
        out.put_slice(b"\n");
        if end == rest.len() {
            return;
        }
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

/// The response body of a watch: the frames its watcher queues, then, if
/// the watcher ended with an error, that last event.
struct EventBody {
    queue: mpsc::Receiver<Bytes>,
    last: Option<oneshot::Receiver<Bytes>>,
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.queue.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes)))),
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                let Some(last) = this.last.as_mut() else {
                    return Poll::Ready(None);
                };
                match Pin::new(last).poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(result) => {
                        this.last = None;
                        Poll::Ready(result.ok().map(|bytes| Ok(hyper::body::Frame::data(bytes))))
                    }
                }
            }
        }
    }
}
