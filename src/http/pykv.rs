//! Simple-PyKV's routes (`/status`, `/api/v1/projects…`), answered in its
//! envelope `{"System", "data", "message", "status_code"}` on kvs's own
//! storage, projects and tokens.
//!
//! This is an adapter, not a second implementation: callers are the v1
//! [`Caller`]s, writes go through the same [`Store`](crate::store::Store)
//! calls as v1's handlers (and reuse their helpers: `write_one`, `mint`,
//! `encode_value`), so a value written here is the
//! same value v1 reads, and the reverse. What differs is the shape of every
//! answer, errors included, and a few of Simple-PyKV's rules:
//!
//! - a token that is not valid for the project named in the path (unknown,
//!   missing, another project's) gets 401, not v1's 404; so does a non-admin
//!   token on an admin-only route (`/status`, listing, creating, deleting
//!   projects, regenerating a key). A token of the project whose role is too
//!   low (a read token writing) or whose prefix does not cover the key gets
//!   403, as in v1;
//! - project settings go by Simple-PyKV's names: `on_disk` is kvs's
//!   `storage` (`disk`/`memory`), `keys_and_values_discoverable` is
//!   `keys_discoverable` (when false, the store's listing is refused to
//!   every project token, manage included, not only to read and write
//!   tokens as in v1); `project_discoverable` is accepted and ignored,
//!   since kvs decides that server-wide (`projects_discoverable`, which is
//!   what a project shows under that name);
//! - a PUT of a value stores a body that parses as JSON as
//!   `application/json`, any other UTF-8 text as `text/plain;
//!   charset=utf-8`, and other bytes as `application/octet-stream` (shown as
//!   base64, with `"encoding": "base64"`); it answers 200 whether it created
//!   the key or replaced it;
//! - `new_api_key` is a new `manage` token of source `simple-pykv`;
//!   regenerating revokes the project's earlier `simple-pykv` tokens, in the
//!   same commit, and leaves every other token alone;
//! - times are epoch seconds, sizes `size_bytes`.

use std::sync::Arc;

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::endpoint::PykvRoute;
use super::error::ApiError;
use super::kv::{MAX_LIST_LIMIT, about_keys, raw_answer, write_one};
use super::projects::{DEFAULT_MAX_VALUE_BYTES, new_project_id, set_location, update};
use super::request::{json_of_any_type, read_body};
use super::views::{self, Encoded};
use super::{App, Ctx, mint};
use crate::domain::{
    Key, ProjectId, ProjectSettings, Public, Role, StorageMode, Timestamp, TokenRecord,
    TokenSecret, TokenSource,
};
use crate::store::{
    CatalogWrite, KeyMeta, KvOp, ListRequest, OpResult, Project, ProjectChange, StoreError,
};

/// A listing reads values in pages that end at about this many bytes.
const PAGE_VALUE_BYTES: u64 = 4 << 20;

/// A new project: its id and, optionally, Simple-PyKV's settings, nested as
/// its routes.md shows them (`storage.on_disk`,
/// `security.keys_and_values_discoverable`, `authentication.enabled`) or
/// flat, as earlier kvs releases took them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    id: String,
    on_disk: Option<bool>,
    keys_and_values_discoverable: Option<bool>,
    /// Accepted and ignored: kvs lists projects by a server-wide setting.
    #[allow(dead_code)]
    project_discoverable: Option<bool>,
    storage: Option<StorageSection>,
    security: Option<SecuritySection>,
    authentication: Option<Authentication>,
}

/// A change of settings; `id` may be sent back, but not changed, and
/// `authentication` is changed only by regenerating the key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    id: Option<String>,
    on_disk: Option<bool>,
    keys_and_values_discoverable: Option<bool>,
    /// Accepted and ignored, as on creation.
    #[allow(dead_code)]
    project_discoverable: Option<bool>,
    storage: Option<StorageSection>,
    security: Option<SecuritySection>,
    authentication: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageSection {
    on_disk: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecuritySection {
    keys_and_values_discoverable: Option<bool>,
    /// Accepted and ignored, as the flat one.
    #[allow(dead_code)]
    project_discoverable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authentication {
    enabled: Option<bool>,
    /// Accepted and ignored: kvs never keeps a key in plain text; a new key
    /// is shown once, in `new_api_key`.
    #[allow(dead_code)]
    save_api_key_to_config: Option<bool>,
}

/// `on_disk` and `keys_and_values_discoverable`, flat or nested; the same
/// setting given twice with different values is a 400.
fn resolve(
    on_disk: Option<bool>,
    discoverable: Option<bool>,
    storage: &Option<StorageSection>,
    security: &Option<SecuritySection>,
) -> Result<(Option<bool>, Option<bool>), ApiError> {
    let one = |name: &str, flat: Option<bool>, nested: Option<bool>| match (flat, nested) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad_request(format!(
            "{name} is given twice, with different values"
        ))),
        (a, b) => Ok(a.or(b)),
    };
    let on_disk = one("on_disk", on_disk, storage.as_ref().and_then(|s| s.on_disk))?;
    let discoverable = one(
        "keys_and_values_discoverable",
        discoverable,
        security
            .as_ref()
            .and_then(|s| s.keys_and_values_discoverable),
    )?;
    Ok((on_disk, discoverable))
}

/// Answers one request of the Simple-PyKV surface.
pub async fn handle(app: &App, route: PykvRoute, request: Request, peer: IpAddr) -> Response {
    if route == PykvRoute::Unknown {
        return refused(ApiError::not_found());
    }
    let allowed = allowed(&route);
    if !allowed.contains(&request.method().as_str()) {
        return refused(ApiError::method_not_allowed(allowed));
    }
    let (caller, catalog) = match super::imported::authenticate(
        app,
        request.headers(),
        route.project(),
        route.open(),
        peer,
    )
    .await
    {
        Ok(found) => found,
        Err(error) => return refused(error),
    };
    let ctx = Ctx {
        app,
        catalog,
        caller,
    };
    // HEAD is answered as GET (hyper leaves out the body).
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let about_keys_route = matches!(
        route,
        PykvRoute::Store(_) | PykvRoute::StoreKey(..) | PykvRoute::StoreValue(..)
    );
    let result = match route {
        PykvRoute::Status => status(&ctx),
        PykvRoute::Projects if reading => list_projects(&ctx),
        PykvRoute::Projects => Box::pin(create_project(&ctx, request)).await,
        PykvRoute::Project(id) if reading => project_details(&ctx, &id),
        PykvRoute::Project(id) if request.method() == Method::PUT => {
            Box::pin(update_project(&ctx, &id, request)).await
        }
        PykvRoute::Project(id) => delete_project(&ctx, &id).await,
        PykvRoute::RegenerateKey(id) => regenerate_key(&ctx, &id).await,
        PykvRoute::Store(id) if reading => Box::pin(list_store(&ctx, &id)).await,
        PykvRoute::Store(id) => clear_store(&ctx, &id).await,
        PykvRoute::StoreKey(id, key) if reading => get_key(&ctx, &id, key).await,
        PykvRoute::StoreKey(id, key) if request.method() == Method::PUT => {
            Box::pin(put_key(&ctx, &id, key, request)).await
        }
        PykvRoute::StoreKey(id, key) => delete_key(&ctx, &id, key).await,
        PykvRoute::StoreValue(id, key) => raw_value(&ctx, &id, key).await,
        PykvRoute::Unknown => Err(ApiError::not_found()),
    };
    let response = result.unwrap_or_else(refused);
    if about_keys_route {
        about_keys(Ok(response))
    } else {
        response
    }
}

/// Simple-PyKV's envelope.
pub fn envelope(status: StatusCode, data: Value, message: &str) -> Response {
    envelope_of(status, &data, message)
}

/// The envelope around any serialisable `data`, written straight to bytes
/// (no `Value` tree in between: the GET of a key is on the hot path).
fn envelope_of<T: Serialize>(status: StatusCode, data: &T, message: &str) -> Response {
    envelope_with(status, None::<&()>, data, message)
}

/// The envelope with a `System` block (`null` when `None`).
fn envelope_with<S: Serialize, T: Serialize>(
    status: StatusCode,
    system: Option<&S>,
    data: &T,
    message: &str,
) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a, S, T> {
        #[serde(rename = "System")]
        system: Option<&'a S>,
        data: &'a T,
        message: &'a str,
        status_code: u16,
    }
    let envelope = Envelope {
        system,
        data,
        message,
        status_code: status.as_u16(),
    };
    match serde_json::to_vec(&envelope) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => ApiError::internal().into_response(),
    }
}

/// An error in the envelope, with the headers it must carry (`Allow`,
/// `WWW-Authenticate`, `Retry-After`).
pub fn refused(error: ApiError) -> Response {
    let mut response = envelope(error.status(), Value::Null, error.message());
    for (name, value) in error.headers() {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    response
}

fn allowed(route: &PykvRoute) -> &'static [&'static str] {
    match route {
        PykvRoute::Status | PykvRoute::StoreValue(..) => &["GET", "HEAD"],
        PykvRoute::Projects => &["GET", "HEAD", "POST"],
        PykvRoute::Project(_) | PykvRoute::StoreKey(..) => &["GET", "HEAD", "PUT", "DELETE"],
        PykvRoute::RegenerateKey(_) => &["POST"],
        PykvRoute::Store(_) => &["GET", "HEAD", "DELETE"],
        PykvRoute::Unknown => &[],
    }
}

/// 401 for a token that is not the admin's: Simple-PyKV's answer for every
/// admin-only route. Its body is the one an unknown token gets, so the
/// answer does not tell the holder of a project token that it is valid.
fn require_admin(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    if ctx.caller.is_admin() {
        return Ok(());
    }
    Err(ApiError::unauthorized())
}

/// The project named in the path, for the admin (404 when absent) or a token
/// of that project; any other token gets 401, whether or not it exists, with
/// the body an unknown token gets (nothing tells a token of another project
/// from no token).
fn project(ctx: &Ctx<'_>, raw_id: &str) -> Result<Arc<Project>, ApiError> {
    match ctx.caller.project(&ctx.catalog, raw_id) {
        Ok(project) => Ok(project),
        Err(error) if ctx.caller.is_admin() => Err(error),
        Err(_) => Err(ApiError::unauthorized()),
    }
}

fn storage_of(on_disk: bool) -> StorageMode {
    if on_disk {
        StorageMode::Disk
    } else {
        StorageMode::Memory
    }
}

/// A project as v1 shows it, with Simple-PyKV's names beside and times in
/// epoch seconds.
fn project_view(ctx: &Ctx<'_>, project: &Project) -> Value {
    let settings = &project.settings;
    let mut view = views::project(project);
    view["created_at"] = json!(settings.created_at.unix_seconds());
    view["on_disk"] = json!(settings.storage == StorageMode::Disk);
    view["keys_and_values_discoverable"] = json!(settings.keys_discoverable);
    view["project_discoverable"] = json!(ctx.app.settings.projects_discoverable);
    view["size_bytes"] = json!(project.stats.bytes());
    view["storage"] = json!({"on_disk": settings.storage == StorageMode::Disk});
    view["security"] = json!({"keys_and_values_discoverable": settings.keys_discoverable});
    // Disabled, in Simple-PyKV's sense, when anyone may read and write.
    let enabled = settings.public != Public::Write;
    view["authentication"] = json!({"enabled": enabled, "save_api_key_to_config": false});
    view
}

/// A key's entry as Simple-PyKV shows it.
#[derive(Serialize)]
struct Entry<'a> {
    key: &'a str,
    content_type: &'a str,
    size_bytes: u64,
    created_at: i64,
    updated_at: i64,
    expires_at: Option<i64>,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Encoded<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
}

impl<'a> Entry<'a> {
    fn of(meta: &'a KeyMeta, value: Option<&'a [u8]>) -> Entry<'a> {
        let value = value.map(|bytes| Encoded::of(bytes, &meta.content_type));
        Entry {
            key: meta.key.as_str(),
            content_type: &meta.content_type,
            size_bytes: meta.size,
            created_at: meta.created_at.unix_seconds(),
            updated_at: meta.updated_at.unix_seconds(),
            expires_at: meta.expires_at.map(Timestamp::unix_seconds),
            version: meta.version,
            encoding: value.as_ref().map(Encoded::name),
            value,
        }
    }
}

fn ok(data: Value, message: &str) -> Result<Response, ApiError> {
    Ok(envelope(StatusCode::OK, data, message))
}

/// `/status`: Simple-PyKV's `System` block, with `data: null`.
fn status(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    require_admin(ctx)?;
    let system = System {
        memory_usage_bytes: crate::telemetry::resident_memory_bytes(),
        number_of_projects: ctx.catalog.projects().count(),
        storage_usage_bytes: ctx.app.store.storage_bytes(),
        uptime: ctx.app.started.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
    };
    Ok(envelope_with(
        StatusCode::OK,
        Some(&system),
        &Value::Null,
        "kvs is fully operational.",
    ))
}

/// The server figures Simple-PyKV's `/status` answers in `System`.
#[derive(Serialize)]
struct System {
    memory_usage_bytes: u64,
    number_of_projects: usize,
    storage_usage_bytes: u64,
    uptime: u64,
    version: &'static str,
}

fn list_projects(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    require_admin(ctx)?;
    if !ctx.app.settings.projects_discoverable {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "listing_disabled",
            "this server does not list its projects (projects_discoverable = false)",
        ));
    }
    let projects: Map<String, Value> = ctx
        .catalog
        .projects()
        .map(|p| (p.settings.id.as_str().to_owned(), project_view(ctx, p)))
        .collect();
    ok(
        Value::Object(projects),
        "Project listing fetched successfully",
    )
}

async fn create_project(ctx: &Ctx<'_>, request: Request) -> Result<Response, ApiError> {
    require_admin(ctx)?;
    let (parts, body) = request.into_parts();
    let request: NewProject = json_of_any_type(&parts.headers, body).await?;
    let id = new_project_id(&request.id)?;
    let (on_disk, discoverable) = resolve(
        request.on_disk,
        request.keys_and_values_discoverable,
        &request.storage,
        &request.security,
    )?;
    // Authentication disabled, as Simple-PyKV has it: anyone may read and
    // write the project's keys without a key, and none is made.
    let open = request
        .authentication
        .as_ref()
        .is_some_and(|a| a.enabled == Some(false));
    let settings = ProjectSettings {
        id: id.clone(),
        storage: super::projects::supported(ctx, storage_of(on_disk.unwrap_or(true)))?,
        keys_discoverable: discoverable.unwrap_or(true),
        max_value_bytes: DEFAULT_MAX_VALUE_BYTES.min(ctx.app.settings.max_value_bytes),
        max_keys: None,
        public: if open { Public::Write } else { Public::None },
        created_at: Timestamp::now(),
        created_revision: 0,
    };
    let key = if open { None } else { Some(new_api_key(&id)?) };
    let write = CatalogWrite::CreateProject {
        settings,
        token: key.as_ref().map(|(token, _)| token.clone()),
    };
    ctx.write_catalog(write)
        .await
        .map_err(|error| match error {
            // Simple-PyKV answers a duplicate id with 400.
            StoreError::ProjectExists => {
                ApiError::bad_request(format!("a project with the id {id} already exists"))
            }
            other => other.into(),
        })?;
    let mut response = match key {
        Some((token, secret)) => {
            let catalog = ctx.app.store.catalog()?;
            let project = catalog.project(&id).ok_or_else(ApiError::internal)?;
            let mut data = project_view(ctx, project);
            data["new_api_key"] = json!(secret.expose());
            data["api_key_id"] = json!(token.id.as_str());
            envelope(
                StatusCode::CREATED,
                data,
                "Project created successfully. Store the returned API key securely as it may \
                 not be shown again.",
            )
        }
        None => envelope(
            StatusCode::CREATED,
            Value::Null,
            "Project created successfully. No API key generated (authentication for this \
             project may be disabled).",
        ),
    };
    set_location(&mut response, &format!("/api/v1/projects/{id}"));
    Ok(response)
}

fn project_details(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    let project = project(ctx, raw_id)?;
    let message = format!(
        "Project '{}' details fetched successfully",
        project.settings.id
    );
    ok(project_view(ctx, &project), &message)
}

/// PUT of a project: kvs's PATCH under Simple-PyKV's names (admin, or a
/// manage token without a prefix: the project's own key, which may move its
/// storage here, as in Simple-PyKV).
async fn update_project(
    ctx: &Ctx<'_>,
    raw_id: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let project = project(ctx, raw_id)?;
    ctx.caller.require_role(Role::Manage)?;
    let (parts, body) = request.into_parts();
    let change: SettingsChange = json_of_any_type(&parts.headers, body).await?;
    let current = &project.settings;
    if change.id.is_some_and(|id| id != current.id.as_str()) {
        return Err(ApiError::bad_request(
            "Updating project ID via this route is not allowed.",
        ));
    }
    if change.authentication.is_some() {
        return Err(ApiError::bad_request(
            "Updating authentication settings via this route is not allowed. \
             Use the regenerate API key route instead.",
        ));
    }
    let (on_disk, discoverable) = resolve(
        change.on_disk,
        change.keys_and_values_discoverable,
        &change.storage,
        &change.security,
    )?;
    // Sending a setting back unchanged is not a change (clients often PUT
    // the whole object they read).
    let storage = on_disk
        .map(storage_of)
        .filter(|storage| *storage != current.storage);
    // Simple-PyKV lets the project's own key change `on_disk`: a manage
    // token without a prefix may, here (v1's PATCH keeps moves for admins).
    if !ctx.caller.is_admin() && ctx.caller.has_prefix() {
        return Err(ApiError::forbidden(
            "only a manage token without a prefix may change a project's settings",
        ));
    }
    let change = ProjectChange {
        storage: storage
            .map(|s| super::projects::supported(ctx, s))
            .transpose()?,
        keys_discoverable: discoverable,
        ..ProjectChange::default()
    };
    let project = update(ctx, current.id.clone(), change).await?;
    // Simple-PyKV answers an update with `data: null`; the project as it
    // now stands is one GET away.
    let message = format!("Project '{}' updated successfully", project.settings.id);
    ok(Value::Null, &message)
}

async fn delete_project(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    require_admin(ctx)?;
    let project = project(ctx, raw_id)?;
    let id = project.settings.id.clone();
    ctx.write_catalog(CatalogWrite::DeleteProject { id: id.clone() })
        .await?;
    ok(Value::Null, &format!("Project '{id}' deleted successfully"))
}

/// A `new_api_key`: a manage token of the project, of source `simple-pykv`.
fn new_api_key(id: &ProjectId) -> Result<(TokenRecord, TokenSecret), ApiError> {
    mint(
        Role::Manage,
        Some(id.clone()),
        None,
        None,
        None,
        TokenSource::SimplePykv,
    )
}

/// A new `simple-pykv` manage token; the project's earlier ones are revoked
/// in the same commit, every other token stays.
async fn regenerate_key(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    require_admin(ctx)?;
    let project = project(ctx, raw_id)?;
    let id = project.settings.id.clone();
    let (token, secret) = new_api_key(&id)?;
    let token_id = token.id.clone();
    ctx.write_catalog(CatalogWrite::ReplaceProjectTokens {
        project: id.clone(),
        source: TokenSource::SimplePykv,
        token,
    })
    .await?;
    let data = json!({
        "id": id.as_str(),
        "new_api_key": secret.expose(),
        "api_key_id": token_id.as_str(),
    });
    ok(
        data,
        "a new API key was issued; the previous one no longer works",
    )
}

/// Every key the caller may list, with its value, as one object keyed by
/// key (following the store's pages).
/// Pages of a store listing rendered ahead of a client that reads slowly.
const STORE_QUEUED: usize = 2;

/// `GET /api/v1/projects/{p}/store`: every key with its value, in the
/// envelope, streamed a page (at most 1000 keys or about 4 MiB of values)
/// at a time, so that the answer is never whole in memory.
async fn list_store(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    let project = project(ctx, raw_id)?;
    // Unlike v1, which lets manage tokens list anyway, Simple-PyKV's
    // `keys_and_values_discoverable = false` hides the listing from every
    // project key (its `new_api_key` is a manage token); only the admin
    // still lists.
    if !project.settings.keys_discoverable && !ctx.caller.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "listing_disabled",
            "this project does not list its keys (keys_and_values_discoverable = false)",
        ));
    }
    let prefix = ctx.caller.prefix();
    let page = move |after: Option<String>| ListRequest {
        prefix: prefix.clone(),
        after,
        limit: MAX_LIST_LIMIT,
        with_values: true,
        value_budget: PAGE_VALUE_BYTES,
    };
    // The first page is read before the answer starts, so that its
    // failure is still an error answer; the others follow as the client
    // takes the body (a failure then breaks the body off).
    let store = ctx.app.store.clone();
    let id = project.settings.id.clone();
    // Like a backup download, the listing goes on only while its caller
    // still may read the project (its token held, the project the one it
    // found, still public to an anonymous caller): looked at before each
    // page and while a page waits for a slow client.
    let (grant, incarnation) = (ctx.caller.grant(), project.incarnation);
    let held = {
        let (store, id) = (store.clone(), id.clone());
        move || {
            store.catalog().is_ok_and(|catalog| {
                let project = catalog
                    .project(&id)
                    .filter(|p| p.incarnation == incarnation);
                project.is_some()
                    && grant
                        .holds(&catalog, project.map(|p| &**p), Timestamp::now())
                        .is_ok()
            })
        }
    };
    let first = store.list(&id, page(None)).await?.value;
    let (sender, queue) = tokio::sync::mpsc::channel(STORE_QUEUED);
    tokio::spawn(async move {
        let mut chunk = b"{\"System\":null,\"data\":{".to_vec();
        let mut listed = first;
        let mut comma = false;
        loop {
            for (meta, value) in &listed.entries {
                if comma {
                    chunk.push(b',');
                }
                comma = true;
                // Written straight from the stored bytes: a JSON value's text
                // as stored, never through a `Value` (and `f64`).
                let view = Entry::of(meta, Some(value.as_deref().unwrap_or_default()));
                let written = serde_json::to_writer(&mut chunk, meta.key.as_str()).and_then(|()| {
                    chunk.push(b':');
                    serde_json::to_writer(&mut chunk, &view)
                });
                if written.is_err() {
                    let _ = sender
                        .send(Err(std::io::Error::other("a key did not render")))
                        .await;
                    return;
                }
            }
            let after = match (listed.more, listed.entries.last()) {
                (true, Some((last, _))) => last.key.as_str().to_owned(),
                _ => break,
            };
            let full = bytes::Bytes::from(std::mem::take(&mut chunk));
            if !send_while(&sender, full, &held).await {
                return;
            }
            listed = match store.list(&id, page(Some(after))).await {
                Ok(listed) => listed.value,
                Err(error) => {
                    tracing::error!(%error, "a store listing stopped half-way");
                    let _ = sender
                        .send(Err(std::io::Error::other("the listing failed")))
                        .await;
                    return;
                }
            };
        }
        chunk.extend_from_slice(b"},\"message\":\"\",\"status_code\":200}");
        // The last page too waits for the client only while the caller
        // still may read.
        send_while(&sender, bytes::Bytes::from(chunk), &held).await;
    });
    let mut response = Response::new(Body::new(super::backup::Stream { queue }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Queues `chunk` for the client while `held()` holds, looking again every
/// [`LOOK_EVERY`] while the queue is full; breaks the body off (an error in
/// the queue) once it does not. False when the listing is to stop.
async fn send_while(
    sender: &tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    held: &impl Fn() -> bool,
) -> bool {
    loop {
        if !held() {
            let _ = sender
                .send(Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the listing stopped: its token was revoked or expired",
                )))
                .await;
            return false;
        }
        match tokio::time::timeout(LOOK_EVERY, sender.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(Ok(chunk));
                return true;
            }
            Ok(Err(_)) => return false,
            Err(_) => continue,
        }
    }
}

/// How often a page waiting for a slow client looks whether its caller
/// still may read.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Deletes every key the caller may reach (all of them, for a token without
/// a prefix), in one write.
async fn clear_store(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    let project = project(ctx, raw_id)?;
    ctx.caller.require_role(Role::Write)?;
    let prefix = ctx.caller.prefix();
    let (_, result) = write_one(ctx, &project, KvOp::DeletePrefix { prefix }).await?;
    let OpResult::DeletePrefix { deleted } = result else {
        return Err(ApiError::internal());
    };
    let id = &project.settings.id;
    tracing::debug!(project = %id, deleted, "store cleared");
    ok(
        Value::Null,
        &format!("All key-value pairs deleted successfully from project '{id}' store"),
    )
}

/// The project, after checking the caller's role and the key's form and
/// scope (in v1's order).
fn key_of(
    ctx: &Ctx<'_>,
    raw_id: &str,
    raw_key: Vec<u8>,
    role: Role,
) -> Result<(Arc<Project>, Key), ApiError> {
    let project = project(ctx, raw_id)?;
    ctx.caller.require_role(role)?;
    let key = Key::parse_bytes(raw_key)?;
    ctx.caller.require_scope(key.as_str())?;
    Ok((project, key))
}

async fn get_key(ctx: &Ctx<'_>, raw_id: &str, raw_key: Vec<u8>) -> Result<Response, ApiError> {
    let (project, key) = key_of(ctx, raw_id, raw_key, Role::Read)?;
    let read = ctx.app.store.get(&project.settings.id, &key, true).await?;
    let entry = read.value.ok_or_else(ApiError::key_not_found)?;
    let view = Entry::of(&entry.meta, Some(&entry.value));
    let message = format!(
        "Key '{}' fetched successfully from project '{}' store",
        entry.meta.key, project.settings.id
    );
    Ok(envelope_of(StatusCode::OK, &view, &message))
}

/// PUT of a value: a body that parses as JSON is stored as JSON, other text
/// as text (other bytes as bytes); 200 whether created or replaced.
async fn put_key(
    ctx: &Ctx<'_>,
    raw_id: &str,
    raw_key: Vec<u8>,
    request: Request,
) -> Result<Response, ApiError> {
    let (project, key) = key_of(ctx, raw_id, raw_key, Role::Write)?;
    let (parts, body): (_, Body) = request.into_parts();
    super::kv::no_content_coding(&parts.headers)?;
    let limit = project
        .settings
        .max_value_bytes
        .min(ctx.app.settings.max_value_bytes);
    let value = read_body(&parts.headers, body, limit, super::error::RAISE_VALUE).await?;
    if value.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty: send the value to store (JSON or text)",
        ));
    }
    let content_type = if super::views::is_readable_json(&value) {
        "application/json"
    } else if std::str::from_utf8(&value).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let op = KvOp::Put {
        key,
        value,
        content_type: content_type.to_owned(),
        ttl: None,
        precondition: None,
    };
    let OpResult::Put { meta, .. } = write_one(ctx, &project, op).await?.1 else {
        return Err(ApiError::internal());
    };
    let message = format!(
        "Key '{}' set successfully in project '{}' store",
        meta.key, project.settings.id
    );
    ok(Value::Null, &message)
}

async fn delete_key(ctx: &Ctx<'_>, raw_id: &str, raw_key: Vec<u8>) -> Result<Response, ApiError> {
    let (project, key) = key_of(ctx, raw_id, raw_key, Role::Write)?;
    let message = format!(
        "Key '{key}' deleted successfully from project '{}' store",
        project.settings.id
    );
    let op = KvOp::Delete {
        key,
        precondition: None,
        must_exist: true,
    };
    write_one(ctx, &project, op).await?;
    ok(Value::Null, &message)
}

/// The raw value, with its stored content type and no envelope (errors keep
/// the envelope).
async fn raw_value(ctx: &Ctx<'_>, raw_id: &str, raw_key: Vec<u8>) -> Result<Response, ApiError> {
    let (project, key) = key_of(ctx, raw_id, raw_key, Role::Read)?;
    let read = ctx.app.store.get(&project.settings.id, &key, true).await?;
    let entry = read.value.ok_or_else(ApiError::key_not_found)?;
    // hyper leaves the body out of a HEAD answer itself.
    Ok(raw_answer(entry, HeaderValue::from(read.revision), false))
}
