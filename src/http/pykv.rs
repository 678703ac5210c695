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
use super::request::{json_body, read_body};
use super::views::{self, Encoded};
use super::{App, Ctx, mint};
use crate::domain::{
    Key, ProjectId, ProjectSettings, Role, StorageMode, Timestamp, TokenRecord, TokenSecret,
    TokenSource,
};
use crate::store::{
    CatalogWrite, KeyMeta, KvOp, ListRequest, OpResult, Project, ProjectChange, StoreError,
};

/// A listing reads values in pages that end at about this many bytes.
const PAGE_VALUE_BYTES: u64 = 4 << 20;

/// A new project: its id and, optionally, Simple-PyKV's settings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    id: String,
    on_disk: Option<bool>,
    keys_and_values_discoverable: Option<bool>,
    /// Accepted and ignored: kvs lists projects by a server-wide setting.
    #[allow(dead_code)]
    project_discoverable: Option<bool>,
}

/// A change of settings; `id` may be sent back, but not changed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    id: Option<String>,
    on_disk: Option<bool>,
    keys_and_values_discoverable: Option<bool>,
    /// Accepted and ignored, as on creation.
    #[allow(dead_code)]
    project_discoverable: Option<bool>,
}

/// Answers one request of the Simple-PyKV surface.
pub async fn handle(app: &App, route: PykvRoute, request: Request, peer: IpAddr) -> Response {
    let allowed = allowed(&route);
    if !allowed.contains(&request.method().as_str()) {
        return refused(ApiError::method_not_allowed(allowed));
    }
    let (caller, catalog) =
        match super::imported::authenticate(app, request.headers(), route.project(), peer).await {
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
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        #[serde(rename = "System")]
        system: Option<()>,
        data: &'a T,
        message: &'a str,
        status_code: u16,
    }
    let envelope = Envelope {
        system: None,
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
fn refused(error: ApiError) -> Response {
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
    }
}

/// 401 for a token that is not the admin's: Simple-PyKV's answer for every
/// admin-only route.
fn require_admin(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    if ctx.caller.is_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this route needs an admin token",
    )
    .with_header(header::WWW_AUTHENTICATE, "Bearer"))
}

/// The project named in the path, for the admin (404 when absent) or a token
/// of that project; any other token gets 401, whether or not it exists.
fn project(ctx: &Ctx<'_>, raw_id: &str) -> Result<Arc<Project>, ApiError> {
    match ctx.caller.project(&ctx.catalog, raw_id) {
        Ok(project) => Ok(project),
        Err(error) if ctx.caller.is_admin() => Err(error),
        Err(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this token is not valid for this project",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer")),
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
    view
}

/// A key's entry: its value (JSON inline when stored as JSON, else a string)
/// and metadata, times in epoch seconds.
fn entry_view(meta: &KeyMeta, value: Option<&[u8]>) -> Value {
    serde_json::to_value(Entry::of(meta, value)).unwrap_or(Value::Null)
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

fn status(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    require_admin(ctx)?;
    let keys: u64 = ctx.catalog.projects().map(|p| p.stats.keys()).sum();
    let data = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": ctx.app.started.elapsed().as_secs(),
        "revision": ctx.app.store.revision(),
        "projects": ctx.catalog.projects().count(),
        "keys": keys,
    });
    ok(data, "the server is running")
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
    ok(Value::Object(projects), "projects")
}

async fn create_project(ctx: &Ctx<'_>, request: Request) -> Result<Response, ApiError> {
    require_admin(ctx)?;
    let (parts, body) = request.into_parts();
    let request: NewProject = json_body(&parts.headers, body).await?;
    let id = new_project_id(&request.id)?;
    let settings = ProjectSettings {
        id: id.clone(),
        storage: storage_of(request.on_disk.unwrap_or(true)),
        keys_discoverable: request.keys_and_values_discoverable.unwrap_or(true),
        max_value_bytes: DEFAULT_MAX_VALUE_BYTES.min(ctx.app.settings.max_value_bytes),
        max_keys: None,
        created_at: Timestamp::now(),
        created_revision: 0,
    };
    let (token, secret) = new_api_key(&id)?;
    let token_id = token.id.clone();
    let write = CatalogWrite::CreateProject {
        settings,
        token: Some(token),
    };
    ctx.app
        .store
        .write_catalog(write)
        .await
        .map_err(|error| match error {
            // Simple-PyKV answers a duplicate id with 400.
            StoreError::ProjectExists => {
                ApiError::bad_request(format!("a project with the id {id} already exists"))
            }
            other => other.into(),
        })?;
    let catalog = ctx.app.store.catalog();
    let project = catalog.project(&id).ok_or_else(ApiError::internal)?;
    let mut data = project_view(ctx, project);
    data["new_api_key"] = json!(secret.expose());
    data["api_key_id"] = json!(token_id.as_str());
    let mut response = envelope(StatusCode::CREATED, data, "project created");
    set_location(&mut response, &format!("/api/v1/projects/{id}"));
    Ok(response)
}

fn project_details(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    let project = project(ctx, raw_id)?;
    ok(project_view(ctx, &project), "project")
}

/// PUT of a project: kvs's PATCH under Simple-PyKV's names, with v1's rules
/// (admin, or a manage token without a prefix; moving storage: admin only).
async fn update_project(
    ctx: &Ctx<'_>,
    raw_id: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let project = project(ctx, raw_id)?;
    ctx.caller.require_role(Role::Manage)?;
    let (parts, body) = request.into_parts();
    let change: SettingsChange = json_body(&parts.headers, body).await?;
    let current = &project.settings;
    if change.id.is_some_and(|id| id != current.id.as_str()) {
        return Err(ApiError::bad_request("a project's id cannot change"));
    }
    // Sending a setting back unchanged is not a change (clients often PUT
    // the whole object they read).
    let storage = change
        .on_disk
        .map(storage_of)
        .filter(|storage| *storage != current.storage);
    if !ctx.caller.is_admin() {
        if ctx.caller.token.prefix.is_some() {
            return Err(ApiError::forbidden(
                "only a manage token without a prefix may change a project's settings",
            ));
        }
        if storage.is_some() {
            return Err(ApiError::forbidden(
                "moving a project between disk and memory needs an admin token",
            ));
        }
    }
    let change = ProjectChange {
        storage,
        keys_discoverable: change.keys_and_values_discoverable,
        ..ProjectChange::default()
    };
    let project = update(ctx, current.id.clone(), change).await?;
    ok(project_view(ctx, &project), "project updated")
}

async fn delete_project(ctx: &Ctx<'_>, raw_id: &str) -> Result<Response, ApiError> {
    require_admin(ctx)?;
    let project = project(ctx, raw_id)?;
    let id = project.settings.id.clone();
    ctx.app
        .store
        .write_catalog(CatalogWrite::DeleteProject { id: id.clone() })
        .await?;
    ok(json!({"id": id.as_str()}), "project deleted")
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
    ctx.app
        .store
        .write_catalog(CatalogWrite::ReplaceProjectTokens {
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
    let mut data = Map::new();
    let mut after = None;
    loop {
        let request = ListRequest {
            prefix: prefix.clone(),
            after: after.take(),
            limit: MAX_LIST_LIMIT,
            with_values: true,
            value_budget: PAGE_VALUE_BYTES,
        };
        let page = ctx
            .app
            .store
            .list(&project.settings.id, request)
            .await?
            .value;
        for (meta, value) in &page.entries {
            let view = entry_view(meta, Some(value.as_deref().unwrap_or_default()));
            data.insert(meta.key.as_str().to_owned(), view);
        }
        match (page.more, page.entries.last()) {
            (true, Some((last, _))) => after = Some(last.key.as_str().to_owned()),
            _ => break,
        }
    }
    ok(Value::Object(data), "keys and values")
}

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
    ok(json!({"deleted": deleted}), "store cleared")
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
    Ok(envelope_of(StatusCode::OK, &view, "key found"))
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
    let limit = project
        .settings
        .max_value_bytes
        .min(ctx.app.settings.max_value_bytes);
    let value = read_body(&parts.headers, body, limit, super::error::RAISE_VALUE).await?;
    let content_type = if serde_json::from_slice::<IgnoredAny>(&value).is_ok() {
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
    let OpResult::Put { meta, created } = write_one(ctx, &project, op).await?.1 else {
        return Err(ApiError::internal());
    };
    let mut data = entry_view(&meta, None);
    data["created"] = json!(created);
    ok(
        data,
        if created {
            "key created"
        } else {
            "key updated"
        },
    )
}

async fn delete_key(ctx: &Ctx<'_>, raw_id: &str, raw_key: Vec<u8>) -> Result<Response, ApiError> {
    let (project, key) = key_of(ctx, raw_id, raw_key, Role::Write)?;
    let data = json!({"key": key.as_str(), "deleted": true});
    let op = KvOp::Delete {
        key,
        precondition: None,
        must_exist: true,
    };
    write_one(ctx, &project, op).await?;
    ok(data, "key deleted")
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
