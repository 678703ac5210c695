//! `GET /v1/backup` (admin): the whole server at one revision, streamed in
//! the backup format ([`crate::backup`]) as it is read, so that a large
//! store is never held in memory. Writes go on meanwhile.
//!
//! The status and `Kvs-Revision` are sent before the body, so a failure
//! while streaming cannot become an error answer: the stream then breaks off
//! without its trailer, which every reader of the format refuses.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::Ctx;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::store::{Store, StoreSnapshot};

/// Chunks of about this size go to the connection.
const CHUNK: usize = 256 << 10;
/// Chunks queued ahead of a slow client.
const QUEUED: usize = 8;

#[utoipa::path(
    get,
    path = "/v1/backup",
    summary = "Back up the whole server",
    tag = "system",
    description = "Admin only. The whole server (projects, token digests, keys with their \
        metadata) at one revision, as JSON Lines: a header line, one line per project, token \
        and key, and a trailer with counts and a SHA-256 of everything before it. A stream \
        that breaks off lacks its trailer. See docs/API.md for the format.",
    responses((
        status = 200,
        description = "The backup, streamed as application/jsonl (declared as binary too, which generated clients read as bytes)",
        content(
            (Vec<u8> = "application/jsonl"),
            (Vec<u8> = "application/octet-stream"),
        ),
        headers(("Kvs-Revision" = u64, description = "The revision the backup holds")),
    )),
)]
pub async fn backup(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let snapshot: Arc<dyn StoreSnapshot> = Arc::from(ctx.app.store.snapshot().await?);
    let revision = snapshot.revision();
    let (sender, queue) = mpsc::channel(QUEUED);
    let (store, caller) = (ctx.app.store.clone(), ctx.caller.clone());
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks {
            sender,
            buffer: Vec::with_capacity(CHUNK),
            snapshot: Arc::clone(&snapshot),
            store,
            caller,
        };
        let written = crate::backup::write(snapshot.as_ref(), &mut out).and_then(|_| out.send());
        if let Err(error) = written {
            // A client that went away is not worth a warning, nor is a
            // token revoked under it.
            match error.kind() {
                io::ErrorKind::BrokenPipe => {}
                io::ErrorKind::PermissionDenied => tracing::info!(%error, "a backup stream ended"),
                _ => tracing::error!(%error, "a backup stream failed"),
            }
            // Let go of the snapshot before waiting for a slow client.
            let Chunks {
                sender,
                snapshot: kept,
                ..
            } = out;
            drop((kept, snapshot));
            let _ = sender.blocking_send(Err(error));
        }
    });
    let mut response = Response::new(Body::new(Stream { queue }));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jsonl"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("kvs-revision", HeaderValue::from(revision));
    let name = crate::backup::backup_file_name(revision, crate::domain::Timestamp::now());
    if let Ok(value) = HeaderValue::try_from(format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The writer's side: bytes gathered into chunks for the body.
struct Chunks {
    sender: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
    /// The snapshot being written, to stop when the store withdraws it.
    snapshot: Arc<dyn StoreSnapshot>,
    /// The store and the caller, whose token is looked at as the backup
    /// goes: a backup holds every value and token digest, so it stops, as
    /// a watch does, when the token is revoked or expires (or the store
    /// cannot vouch for its catalog).
    store: Arc<dyn Store>,
    caller: Caller,
}

/// How often a backup that waits for a slow client looks whether its
/// snapshot was withdrawn.
const LOOK_EVERY: Duration = Duration::from_millis(100);

impl Chunks {
    /// Queues the chunk gathered. While the client reads slowly, the store
    /// may need the snapshot back (the redb engine's disk database after a
    /// failed commit, which it reopens only once no reader holds it): the
    /// backup then breaks off instead of holding up every write until the
    /// client has read it all.
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        let runtime = Handle::try_current().map_err(io::Error::other)?;
        loop {
            if self.snapshot.withdrawn() {
                return Err(io::Error::other(
                    "the backup stopped: the store's database is reopened after a failed write",
                ));
            }
            if !self
                .store
                .catalog()
                .is_ok_and(|c| self.caller.still_held(&c))
            {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the backup stopped: its token was revoked or expired",
                ));
            }
            match runtime.block_on(tokio::time::timeout(LOOK_EVERY, self.sender.reserve())) {
                Ok(Ok(permit)) => {
                    permit.send(Ok(chunk));
                    return Ok(());
                }
                Ok(Err(_)) => return Err(io::Error::from(io::ErrorKind::BrokenPipe)),
                Err(_) => continue,
            }
        }
    }
}

impl io::Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The body: chunks as the writer sends them; an error breaks the
/// connection off, so the client sees an incomplete answer, not an end.
/// (Simple-PyKV's store listing streams through it too.)
pub(super) struct Stream {
    pub queue: mpsc::Receiver<io::Result<Bytes>>,
}

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        self.get_mut()
            .queue
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(hyper::body::Frame::data)))
    }
}

/// What `POST /v1/verify` found: [`crate::store::Report`] as the answer
/// shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct VerifyReport<'a> {
    /// Catalog and figures records checked.
    records: u64,
    /// Keys checked (their records and inline values).
    keys: u64,
    /// Large values checked against their key's record.
    values: u64,
    change_sets: u64,
    /// One entry per damaged item; empty when nothing is.
    damage: Vec<DamageView<'a>>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DamageView<'a> {
    /// Table, project, key or record.
    place: &'a str,
    /// What is wrong with it.
    problem: &'a str,
}

impl<'a> VerifyReport<'a> {
    fn of(report: &'a crate::store::Report) -> VerifyReport<'a> {
        VerifyReport {
            records: report.records,
            keys: report.keys,
            values: report.values,
            change_sets: report.change_sets,
            damage: report
                .damage
                .iter()
                .map(|damage| DamageView {
                    place: &damage.place,
                    problem: &damage.problem,
                })
                .collect(),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/verify",
    summary = "Check every stored record",
    tag = "system",
    description = "Admin only. Checks every stored record and value (checksums, large values \
        present and matching, no orphans) over a read snapshot, while the server goes on, and \
        answers what is damaged. `kvs verify` without --data-dir calls it.",
    responses((status = 200, description = "The report", body = VerifyReport)),
)]
pub async fn verify(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let report = ctx.app.store.verify().await?;
    if !report.damage.is_empty() {
        tracing::error!(
            damaged = report.damage.len(),
            "verify found damaged records"
        );
    }
    Ok(super::json(
        axum::http::StatusCode::OK,
        VerifyReport::of(&report),
    ))
}

/// What `POST /v1/compact` did.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CompactReport {
    /// The size of the disk database's file (`kvs.redb`) before and after,
    /// in bytes.
    before: u64,
    after: u64,
    /// Tables of the disk database copied, and the rows copied in both
    /// databases.
    tables: usize,
    rows: u64,
    /// How long it took; writes waited meanwhile.
    seconds: f64,
}

#[utoipa::path(
    post,
    path = "/v1/compact",
    summary = "Give the store's free room back",
    tag = "system",
    description = "Admin only. Copies the disk database, table by table in key order, into a new \
        file, checks it and puts it in place of the old one, whose free pages are then given \
        back: as etcd's defrag. Nothing a client reads changes. Writes wait until it is done \
        (about 2.5 s per 1,000,000 small keys measured here); reads go on. The memory database \
        is copied the same way into a new one. `kvs compact` without --data-dir calls it. A cluster node answers 409: \
        etcd keeps its data.",
    responses(
        (status = 200, description = "Compacted", body = CompactReport),
        (status = 409, description = "A cluster node: nothing of its own to compact", body = ErrorBody),
        (status = 507, description = "No room for the copy; the store is as it was", body = ErrorBody),
    ),
)]
pub async fn compact(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let started = std::time::Instant::now();
    let done = ctx.app.store.compact().await?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        before = done.before,
        after = done.after,
        rows = done.rows,
        seconds,
        "compacted the disk database"
    );
    Ok(super::json(
        axum::http::StatusCode::OK,
        CompactReport {
            before: done.before,
            after: done.after,
            tables: done.tables,
            rows: done.rows,
            seconds,
        },
    ))
}
