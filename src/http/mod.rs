//! The HTTP API. A request is routed to an [`endpoint::Endpoint`] from its raw
//! path, authenticated against the in-memory catalog, and handed to the
//! handler of its resource. Only this module knows HTTP and JSON; it never
//! names a storage engine, only the [`Store`] trait.

mod auth;
mod backup;
mod endpoint;
mod error;
mod form;
mod import;
mod imported;
mod kv;
mod limits;
mod openapi;
mod projects;
#[cfg(test)]
mod proptests;
mod pykv;
mod request;
mod system;
mod tokens;
mod txn;
mod ui;
mod views;
mod watch;

use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use error::ApiError;
pub use imported::ImportedKeys;
pub use limits::{Limiter, Place};
pub use projects::DEFAULT_MAX_VALUE_BYTES;
pub use tokens::mint;

use crate::config::Settings;
use crate::store::{Catalog, CatalogWrite, Store, StoreError};
use auth::Caller;
use endpoint::Endpoint;

/// What every request can reach.
pub struct App {
    pub store: Arc<dyn Store>,
    pub settings: Settings,
    pub started: Instant,
    /// True once the server stops: open watches and blocking reads end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The rationing of checks of imported (Simple-PyKV) keys.
    pub imported: ImportedKeys,
    /// Request rates and open watches per token and per address.
    pub limiter: Limiter,
}

/// One authenticated request's view of the server.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub catalog: Arc<Catalog>,
    pub caller: Caller,
}

impl Ctx<'_> {
    /// Makes a catalog write for the caller: judged again with the caller's
    /// right and the incarnation of the project it names, as this request
    /// found them, against the catalog it is committed on.
    pub async fn write_catalog(&self, write: CatalogWrite) -> Result<(), StoreError> {
        let project = write.project().and_then(|id| self.catalog.project(id));
        let by = self.caller.authority(project.map(|p| &**p));
        self.app.store.write_catalog(write, by).await
    }
}

/// Answers one request from `peer`: the whole API, for every path. The
/// server calls it from hyper's connection driver for each request it reads.
pub async fn dispatch(app: &App, request: Request, peer: IpAddr) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // Whether the request's body is read to its end, for requests that have
    // one: hyper cannot reuse a connection whose request body was left unread.
    let unread = declares_body(request.headers()).then(|| Arc::new(AtomicBool::new(true)));
    let awaits_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let request = match &unread {
        Some(flag) => request.map(|body| {
            Body::new(Tracked {
                body,
                unread: flag.clone(),
                deadline: tokio::time::Instant::now() + app.settings.limits.body_timeout,
                timer: None,
                awaits_continue,
            })
        }),
        None => request,
    };
    let (route, mut response) = match app
        .limiter
        .admit_address(peer)
        .and_then(|()| Endpoint::parse(request.uri().path()))
    {
        Ok(endpoint) => {
            let route = endpoint.name();
            (route, handle(app, endpoint, request, peer).await)
        }
        Err(error) => ("unknown", error.into_response()),
    };
    // A refusal that came before the body was read ends the connection;
    // saying so keeps clients from sending on a connection about to close.
    if unread.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    crate::telemetry::record_request(&method, route, response.status(), started.elapsed());
    response
}

/// A request body that notes when it has been read to its end, and fails
/// with [`BodyTimeout`] when it is not in by its deadline (a client that
/// sends a byte now and then would otherwise hold its request open forever).
struct Tracked {
    body: Body,
    unread: Arc<AtomicBool>,
    deadline: tokio::time::Instant,
    /// Armed only when the body is not all there at once: most bodies
    /// arrive with their headers, and a timer per request would be pure cost.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The client sent `Expect: 100-continue` and waits for hyper's `100`,
    /// which the first read of the body sends: a body refused before that
    /// is not drained (the client is told not to send it at all).
    awaits_continue: bool,
}

/// The client took longer than `body_timeout` to send its request's body.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.awaits_continue = false;
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match frame {
            Poll::Ready(None) => self.unread.store(false, Ordering::Relaxed),
            Poll::Pending => {
                let deadline = self.deadline;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
                }
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How much of a body left unread (refused with 413, 401, …) the server
/// still reads and discards, and for how long, before it closes the
/// connection. Closing while the client is still sending resets the
/// connection, and most clients (curl, `requests`, Node's `fetch`, kvs's
/// own) then report the reset, not the answer that was already sent.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.awaits_continue || !self.unread.load(Ordering::Relaxed) {
            return;
        }
        let body = std::mem::replace(&mut self.body, Body::empty());
        let until = self.deadline.min(tokio::time::Instant::now() + DRAIN_TIME);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body, until));
        }
    }
}

/// Reads and discards `body` until its end, [`DRAIN_BYTES`] or `until`;
/// hyper closes the connection once the body is dropped unfinished.
async fn drain(mut body: Body, until: tokio::time::Instant) {
    use http_body_util::BodyExt as _;
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout_at(until, async {
        while let Some(Ok(frame)) = body.frame().await {
            let size = frame.data_ref().map_or(0, |data| data.len() as u64);
            if size >= left {
                return;
            }
            left -= size;
        }
    })
    .await;
}

fn declares_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    length || headers.contains_key(header::TRANSFER_ENCODING)
}

async fn handle(app: &App, endpoint: Endpoint, request: Request, peer: IpAddr) -> Response {
    // Simple-PyKV's routes check their methods themselves, so that a wrong
    // one is answered in their envelope, with their own `Allow`.
    if !matches!(endpoint, Endpoint::Pykv(_))
        && let Err(error) = endpoint.check_method(request.method())
    {
        return error.into_response();
    }
    // Every route refuses a query that does not decode, whether it reads
    // one or not: the same bytes mean the same thing everywhere. The routes
    // that read one are handed this parse.
    let query = match request::Query::parse(request.uri().query()) {
        Ok(query) => query,
        Err(error) => {
            return match endpoint {
                Endpoint::Pykv(_) => pykv::refused(error),
                _ => error.into_response(),
            };
        }
    };
    match endpoint {
        // The compatibility surfaces take their tokens their own way.
        Endpoint::Index => return Box::pin(form::handle(app, request, query, peer)).await,
        Endpoint::Pykv(route) => return Box::pin(pykv::handle(app, route, request, peer)).await,
        Endpoint::Ui(asset) => return ui::handle(&asset, request.method(), request.headers()),
        Endpoint::Healthz => return system::healthz(),
        Endpoint::Readyz => return system::readyz(app),
        Endpoint::Metrics => return respond(system::metrics(app, request.headers(), peer).await),
        Endpoint::OpenApi => return openapi::openapi_json(),
        _ => {}
    }
    let (caller, catalog) = match imported::authenticate(
        app,
        request.headers(),
        endpoint.project(),
        endpoint.open(),
        peer,
    )
    .await
    {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let ctx = Ctx {
        app,
        catalog,
        caller,
    };
    let method = request.method().clone();
    let result = match (endpoint, method) {
        (Endpoint::Kv(project, key), _) => {
            return kv::key(&ctx, &project, key, request, &query).await;
        }
        (Endpoint::KvList(project), _) => {
            return kv::listing(&ctx, &project, request, &query).await;
        }
        // Boxed: these futures are large, and kept inline they would make
        // every request's future (GETs included) as large as theirs.
        (Endpoint::Latest(project), _) => {
            return Box::pin(kv::latest(&ctx, &project, request, &query)).await;
        }
        (Endpoint::Txn(project), _) => {
            return kv::about_keys(Box::pin(txn::txn(&ctx, &project, request)).await);
        }
        (Endpoint::Watch(project), _) => {
            Box::pin(watch::watch(&ctx, &project, request, &query)).await
        }
        (Endpoint::Import(project), _) => Box::pin(import::import(&ctx, &project, request)).await,
        (Endpoint::Incr(project, key), _) => {
            return kv::about_keys(
                Box::pin(txn::incr(&ctx, &project, key, request.headers(), &query)).await,
            );
        }
        (Endpoint::Status, _) => system::status(&ctx),
        (Endpoint::Backup, _) => backup::backup(&ctx).await,
        (Endpoint::Verify, _) => backup::verify(&ctx).await,
        (Endpoint::Compact, _) => backup::compact(&ctx).await,
        (Endpoint::Whoami, _) => system::whoami(&ctx),
        (Endpoint::Projects, Method::POST) => {
            let (parts, body) = request.into_parts();
            projects::create(&ctx, &parts.headers, body).await
        }
        (Endpoint::Projects, _) => projects::list(&ctx),
        (Endpoint::Project(id), Method::PATCH) => {
            let (parts, body) = request.into_parts();
            projects::patch(&ctx, &id, &parts.headers, body).await
        }
        (Endpoint::Project(id), Method::DELETE) => projects::delete(&ctx, &id).await,
        (Endpoint::Project(id), _) => projects::get(&ctx, &id),
        (Endpoint::ProjectTokens(id), Method::POST) => {
            let (parts, body) = request.into_parts();
            tokens::create_for_project(&ctx, &id, &parts.headers, body).await
        }
        (Endpoint::ProjectTokens(id), _) => tokens::list_for_project(&ctx, &id),
        (Endpoint::ProjectToken(id, token), _) => {
            tokens::delete_for_project(&ctx, &id, &token).await
        }
        (Endpoint::AdminTokens, Method::POST) => {
            let (parts, body) = request.into_parts();
            tokens::create_admin(&ctx, &parts.headers, body).await
        }
        (Endpoint::AdminTokens, _) => tokens::list_admin(&ctx),
        (Endpoint::AdminToken(token), _) => tokens::delete_admin(&ctx, &token).await,
        (
            Endpoint::Healthz
            | Endpoint::Readyz
            | Endpoint::Metrics
            | Endpoint::OpenApi
            | Endpoint::Index
            | Endpoint::Ui(_)
            | Endpoint::Pykv(_),
            _,
        ) => Err(ApiError::not_found()),
    };
    respond(result)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A JSON answer, ending with a newline (so that `curl` output and the next
/// prompt or command output do not run together).
/// The body is serialised as it is (not through a `serde_json::Value`), so
/// stored JSON that a view carries as raw text is written byte for byte.
pub fn json(status: StatusCode, body: impl serde::Serialize) -> Response {
    json_sized(status, body, 128)
}

/// [`json`] into a buffer of `capacity` bytes first: a large answer whose
/// size is about known is not copied as its buffer grows.
pub fn json_sized(status: StatusCode, body: impl serde::Serialize, capacity: usize) -> Response {
    let mut bytes = Vec::with_capacity(capacity);
    // Views are plain structs of strings and numbers (and raw JSON already
    // checked): serialising them cannot fail.
    if serde_json::to_writer(&mut bytes, &body).is_err() {
        bytes.clear();
    }
    bytes.push(b'\n');
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}
