//! `/v1/projects/{p}/kv/{key}` and `/v1/projects/{p}/kv`: reading, writing,
//! deleting and listing keys. Every answer about a key carries
//! `Cache-Control: private, no-cache` and `X-Content-Type-Options: nosniff`;
//! a raw value also `Content-Security-Policy: sandbox`, so a stored page can
//! never run as the server's own.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut, BytesMut};

use super::error::{ApiError, ErrorBody};
use super::projects::set_location;
use super::request::{Query, read_body};
use super::views::{Deleted, KeyMetaView, Listing};
use super::{Ctx, json, json_sized, views, watch};
use crate::domain::{Key, Prefix, Role, parse_duration};
use crate::store::{
    Entry, KvOp, KvWrite, ListRequest, OpResult, Precondition, Project, StoreError,
};

/// The most keys one listing page holds.
pub const MAX_LIST_LIMIT: usize = 1000;
const DEFAULT_LIST_LIMIT: usize = 100;
/// A page with values ends at the key that brings its raw bytes to this.
const VALUES_PAGE_BYTES: u64 = 4 << 20;

pub(super) static KVS_REVISION: HeaderName = HeaderName::from_static("kvs-revision");
static KVS_VERSION: HeaderName = HeaderName::from_static("kvs-version");
static KVS_CREATED_AT: HeaderName = HeaderName::from_static("kvs-created-at");
static KVS_KEY: HeaderName = HeaderName::from_static("kvs-key");
static KVS_EXPIRES_AT: HeaderName = HeaderName::from_static("kvs-expires-at");
static SANDBOX: HeaderValue = HeaderValue::from_static("sandbox");
static PRIVATE_NO_CACHE: HeaderValue = HeaderValue::from_static("private, no-cache");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// `GET`, `HEAD`, `PUT` and `DELETE` of one key.
pub async fn key(
    ctx: &Ctx<'_>,
    raw_project: &str,
    raw_key: Vec<u8>,
    request: Request,
    query: &Query,
) -> Response {
    about_keys(key_inner(ctx, raw_project, raw_key, request, query).await)
}

async fn key_inner(
    ctx: &Ctx<'_>,
    raw_project: &str,
    raw_key: Vec<u8>,
    request: Request,
    query: &Query,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let project = ctx.caller.project(&ctx.catalog, raw_project)?;
    let reading = matches!(parts.method, Method::GET | Method::HEAD);
    ctx.caller
        .require_role(if reading { Role::Read } else { Role::Write })?;
    let key = Key::parse_bytes(raw_key)?;
    ctx.caller.require_scope(key.as_str())?;
    match parts.method {
        Method::GET | Method::HEAD => {
            read(ctx, &project, key, &parts.method, &parts.headers, query).await
        }
        Method::PUT => {
            put(
                ctx,
                &project,
                key,
                &parts.headers,
                query,
                parts.uri.path(),
                body,
            )
            .await
        }
        _ => delete(ctx, &project, key, &parts.headers).await,
    }
}

async fn read(
    ctx: &Ctx<'_>,
    project: &Project,
    key: Key,
    method: &Method,
    headers: &HeaderMap,
    query: &Query,
) -> Result<Response, ApiError> {
    let meta_view = query.flag("meta")?;
    let with_value = meta_view || *method == Method::GET;
    // A blocking read answers a state at least as new as the change that
    // woke it (published to watchers a moment before its revision is).
    let mut seen = 0;
    if let Some((wait, after)) = watch::blocking(query)? {
        // Boxed, so that plain GETs do not carry this future's size.
        let id = &project.settings.id;
        seen = Box::pin(watch::wait_for_change(ctx, id, &key, wait, after)).await?;
    }
    let mut read = ctx
        .app
        .store
        .get(&project.settings.id, &key, with_value)
        .await?;
    read.revision = read.revision.max(seen);
    let Some(entry) = read.value else {
        return Err(
            ApiError::key_not_found().with_header(KVS_REVISION.clone(), read.revision.to_string())
        );
    };
    // Numbers become header values without a `String` in between, and an
    // owned string is moved into its value rather than copied.
    let revision = HeaderValue::from(read.revision);
    let meta = entry.meta;
    if let Some(condition) = list_header(headers, &header::IF_NONE_MATCH)
        && matches_weakly(condition, meta.version)
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        let h = response.headers_mut();
        insert_some(h, header::ETAG, etag(meta.version));
        h.insert(KVS_VERSION.clone(), HeaderValue::from(meta.version));
        h.insert(KVS_REVISION.clone(), revision);
        return Ok(response);
    }
    if meta_view {
        let mut response = json(StatusCode::OK, views::key_with_value(&meta, &entry.value));
        let h = response.headers_mut();
        insert_some(h, header::ETAG, etag(meta.version));
        h.insert(KVS_REVISION.clone(), revision);
        return Ok(response);
    }
    let entry = Entry {
        meta,
        value: entry.value,
    };
    Ok(raw_answer(entry, revision, *method == Method::HEAD))
}

/// The answer that carries a raw value: its bytes (none for HEAD) and the
/// headers that describe it.
pub(super) fn raw_answer(entry: Entry, revision: HeaderValue, head: bool) -> Response {
    let meta = entry.meta;
    let etag = etag(meta.version);
    let mut response = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(entry.value))
    };
    let h = response.headers_mut();
    // Room for every header of this answer (up to nine here, two from
    // key_headers, perhaps Connection), so the map is allocated once
    // instead of growing twice.
    h.reserve(12);
    insert_some(h, header::CONTENT_TYPE, owned_value(meta.content_type));
    // hyper writes a body's length itself; a HEAD answer has none to go by.
    if head {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    }
    insert_some(h, header::ETAG, etag);
    insert_some(
        h,
        header::LAST_MODIFIED,
        owned_value(meta.updated_at.http_date()),
    );
    h.insert(KVS_VERSION.clone(), HeaderValue::from(meta.version));
    insert_some(
        h,
        KVS_CREATED_AT.clone(),
        owned_value(meta.created_at.rfc3339()),
    );
    if let Some(expires) = meta.expires_at {
        insert_some(h, KVS_EXPIRES_AT.clone(), owned_value(expires.rfc3339()));
    }
    h.insert(KVS_REVISION.clone(), revision);
    h.insert(header::CONTENT_SECURITY_POLICY, SANDBOX.clone());
    response
}

// The operations of `key` and `listing`, one method each, for the OpenAPI
// document (`openapi.rs`); `key` and `listing` serve them.

/// A key's raw value (or, with `meta=true`, KeyWithValue as JSON).
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/kv/{key}",
    summary = "Read a value",
    tag = "keys",
    description = "Read. `meta=true` answers KeyWithValue (JSON) instead of the raw bytes. \
                   `wait` (and `after`) make it a blocking read: it answers once the key \
                   changes above `after`, or when `wait` runs out.",
    params(
        ("project" = String, Path, description = "The project id"),
        ("key" = String, Path, description = "The key: everything after `/kv/`, percent-decoded once (`/` kept)"),
        ("meta" = Option<bool>, Query, description = "Answer KeyWithValue as JSON"),
        ("wait" = Option<String>, Query, description = "Blocking read: how long to wait (a duration, at most 5 minutes)"),
        ("after" = Option<u64>, Query, description = "Blocking read: answer once the key changes above this revision"),
        ("If-None-Match" = Option<String>, Header, description = "`*` or a list of entity tags, compared weakly: 304 if one matches"),
    ),
    responses(
        (status = 200, description = "The value's bytes as stored, with its content type (declared as binary, which generated clients read as bytes); with `meta=true`, KeyWithValue as application/json",
            content(
                (Vec<u8> = "application/octet-stream"),
                (Vec<u8> = "*/*"),
            ), headers(
            ("ETag" = String, description = "`\"<version>\"`"),
            ("Last-Modified" = String, description = "HTTP-date of `updated_at`"),
            ("Kvs-Version" = u64, description = "The key's version"),
            ("Kvs-Created-At" = String, description = "RFC 3339"),
            ("Kvs-Expires-At" = String, description = "RFC 3339, when the key has an expiry"),
            ("Kvs-Revision" = u64, description = "The server revision the answer reflects"),
        )),
        (status = 304, description = "`If-None-Match` matched", headers(
            ("ETag" = String), ("Kvs-Version" = u64), ("Kvs-Revision" = u64),
        )),
    ),
)]
#[allow(dead_code)]
fn get_key() {}

/// A key's headers, as a GET answers them.
#[utoipa::path(
    head,
    path = "/v1/projects/{project}/kv/{key}",
    summary = "Read a value's headers",
    tag = "keys",
    description = "Read: the headers of a GET (`Last-Modified`, `Kvs-Created-At`, … too), no body",
    params(
        ("project" = String, Path, description = "The project id"),
        ("key" = String, Path, description = "The key: everything after `/kv/`, percent-decoded once (`/` kept)"),
        ("If-None-Match" = Option<String>, Header, description = "`*` or a list of entity tags, compared weakly"),
    ),
    responses(
        (status = 200, description = "The key exists", headers(
            ("ETag" = String, description = "`\"<version>\"`"),
            ("Kvs-Version" = u64, description = "The key's version"),
            ("Kvs-Revision" = u64, description = "The server revision the answer reflects"),
        )),
        (status = 304, description = "`If-None-Match` matched"),
    ),
)]
#[allow(dead_code)]
fn head_key() {}

/// Writes a key.
#[utoipa::path(
    put,
    path = "/v1/projects/{project}/kv/{key}",
    summary = "Write a value",
    tag = "keys",
    description = "Write. The body is the value; its `Content-Type` is stored (default `application/octet-stream`), or the `content_type` query parameter when given.",
    params(
        ("project" = String, Path, description = "The project id"),
        ("key" = String, Path, description = "The key: everything after `/kv/`, percent-decoded once (`/` kept)"),
        ("ttl" = Option<String>, Query, description = "Expiry: a duration (`90`, `10m`, `30d`); without it any expiry is removed"),
        ("content_type" = Option<String>, Query, description = "The content type to store (wins over the `Content-Type` header): for clients that cannot choose the header, such as generated ones"),
        ("If-Match" = Option<String>, Header, description = "`*` or a list of strong entity tags: write only over one of those versions"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: write only if absent"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value"),
    responses(
        (status = 200, description = "Replaced", body = KeyMetaView, headers(("ETag" = String))),
        (status = 201, description = "Created", body = KeyMetaView, headers(("ETag" = String), ("Location" = String))),
        (status = 412, description = "A precondition failed (with the current `ETag`)", body = ErrorBody),
        (status = 413, description = "The value is over the project's limit", body = ErrorBody),
        (status = 415, description = "The body has a `Content-Encoding`: a value is stored as sent", body = ErrorBody),
        (status = 507, description = "The disk is full; nothing was written", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn put_key() {}

/// Deletes a key.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/kv/{key}",
    summary = "Delete a key",
    tag = "keys",
    description = "Write",
    params(
        ("project" = String, Path, description = "The project id"),
        ("key" = String, Path, description = "The key: everything after `/kv/`, percent-decoded once (`/` kept)"),
        ("If-Match" = Option<String>, Header, description = "`*` or a list of strong entity tags"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 412, description = "A precondition failed", body = ErrorBody),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn delete_key() {}

/// A page of keys in byte order.
#[utoipa::path(
    get,
    path = "/v1/projects/{project}/kv",
    summary = "List keys",
    tag = "keys",
    description = "Read; 403 `listing_disabled` for read and write tokens when the project has `keys_discoverable = false`",
    params(
        ("project" = String, Path, description = "The project id"),
        ("prefix" = Option<String>, Query, description = "Only keys that start with it (default: the token's prefix)"),
        ("limit" = Option<u64>, Query, minimum = 1, description = "Keys per page: default 100, clamped to 1000"),
        ("cursor" = Option<String>, Query, description = "The `cursor` of the previous page"),
        ("values" = Option<bool>, Query, description = "Add `value` and `encoding` (pages end near 4 MiB)"),
    ),
    responses((status = 200, description = "A page", body = Listing,
        headers(("Kvs-Revision" = u64)))),
)]
#[allow(dead_code)]
fn list_keys() {}

/// Deletes every key under a prefix, atomically.
#[utoipa::path(
    delete,
    path = "/v1/projects/{project}/kv",
    summary = "Delete keys by prefix",
    tag = "keys",
    description = "Write; `prefix=` (empty) clears the project",
    params(
        ("project" = String, Path, description = "The project id"),
        ("prefix" = String, Query, description = "Required: the keys to delete start with it"),
    ),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ),
)]
#[allow(dead_code)]
fn delete_prefix() {}

#[utoipa::path(
    get,
    path = "/v1/projects/{project}/latest",
    summary = "Read the latest written of some keys",
    tag = "keys",
    description = "Read: the raw value of whichever listed key was written last, with a GET's headers",
    params(
        ("project" = String, Path, description = "The project id"),
        ("keys" = Option<String>, Query, description = "Keys, comma-separated"),
        ("key" = Option<Vec<String>>, Query, explode = true, description = "A key (repeatable; for keys holding commas)"),
    ),
    responses((status = 200, description = "The value's bytes as stored, with its content type, as a GET answers them, and which key",
        content(
            (Vec<u8> = "application/octet-stream"),
            (Vec<u8> = "*/*"),
        ), headers(
            ("Kvs-Key" = String, description = "The key, percent-encoded"),
            ("Kvs-Revision" = u64, description = "The server revision the answer reflects"),
        ))),
)]
/// `GET /v1/projects/{p}/latest?keys=a,b` (or repeated `key=`): the raw
/// value of whichever listed key was written last, with `Kvs-Key`. Keys
/// written by one transaction tie; the first listed wins.
pub async fn latest(ctx: &Ctx<'_>, raw_project: &str, request: Request, query: &Query) -> Response {
    let head = request.method() == Method::HEAD;
    drop(request);
    about_keys(latest_answer(ctx, raw_project, query, head, false).await)
}

/// The answer of `latest` (also the form interface's reads, which also take
/// the original kvs's own `k=a,b,c`: `original`).
pub(super) async fn latest_answer(
    ctx: &Ctx<'_>,
    raw_project: &str,
    query: &Query,
    head: bool,
    original: bool,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_project)?;
    ctx.caller.require_role(Role::Read)?;
    let mut keys = Vec::new();
    for (name, value) in query.pairs() {
        match name {
            "keys" => keys.extend(value.split(',').map(str::to_owned)),
            "k" if original => keys.extend(value.split(',').map(str::to_owned)),
            "key" => keys.push(value.to_owned()),
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err(ApiError::bad_request(
            "name the keys: ?keys=a,b,c or ?key=a&key=b",
        ));
    }
    let keys = keys
        .into_iter()
        .map(|key| {
            let key = Key::parse(key)?;
            ctx.caller.require_scope(key.as_str())?;
            Ok(key)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut newest: Option<(Key, Entry)> = None;
    let mut revision = 0;
    for key in keys {
        let read = ctx.app.store.get(&project.settings.id, &key, false).await?;
        revision = revision.max(read.revision);
        if let Some(entry) = read.value
            && newest
                .as_ref()
                .is_none_or(|(_, n)| entry.meta.version > n.meta.version)
        {
            newest = Some((key, entry));
        }
    }
    let Some((key, _)) = newest else {
        return Err(
            ApiError::key_not_found().with_header(KVS_REVISION.clone(), revision.to_string())
        );
    };
    // Read the winner again with its value: it is what a GET would answer.
    let read = ctx.app.store.get(&project.settings.id, &key, true).await?;
    let Some(entry) = read.value else {
        return Err(
            ApiError::key_not_found().with_header(KVS_REVISION.clone(), read.revision.to_string())
        );
    };
    let mut response = raw_answer(entry, HeaderValue::from(read.revision.max(revision)), head);
    let encoded = percent_encoding::utf8_percent_encode(key.as_str(), KEY_HEADER_SET).to_string();
    insert_some(
        response.headers_mut(),
        KVS_KEY.clone(),
        owned_value(encoded),
    );
    Ok(response)
}

/// What `Kvs-Key` percent-encodes: everything but unreserved characters and `/`.
const KEY_HEADER_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

#[allow(clippy::too_many_arguments)]
async fn put(
    ctx: &Ctx<'_>,
    project: &Project,
    key: Key,
    headers: &HeaderMap,
    query: &Query,
    path: &str,
    body: Body,
) -> Result<Response, ApiError> {
    no_content_coding(headers)?;
    let ttl = query
        .get("ttl")?
        .map(|text| parse_duration(text).map_err(|e| ApiError::bad_request(format!("ttl: {e}"))))
        .transpose()?;
    let limit = project
        .settings
        .max_value_bytes
        .min(ctx.app.settings.max_value_bytes);
    let value = read_body(headers, body, limit, super::error::RAISE_VALUE).await?;
    // `?content_type=` wins over the header: a client whose generator fixes
    // the request's Content-Type to the declared one still chooses it.
    let content_type = match (
        query.get("content_type")?,
        headers.get(header::CONTENT_TYPE),
    ) {
        (Some(text), _) => content_type(text, "content_type")?,
        (None, None) => crate::domain::DEFAULT_CONTENT_TYPE.to_owned(),
        (None, Some(value)) => content_type(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("Content-Type must be visible ASCII"))?,
            "Content-Type",
        )?,
    };
    let op = KvOp::Put {
        key,
        value,
        content_type,
        ttl,
        precondition: write_precondition(headers)?,
    };
    let OpResult::Put { meta, created } = write_one(ctx, project, op).await?.1 else {
        return Err(ApiError::internal());
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json(status, views::key_meta(&meta));
    insert_some(response.headers_mut(), header::ETAG, etag(meta.version));
    if created {
        set_location(&mut response, path);
    }
    Ok(response)
}

async fn delete(
    ctx: &Ctx<'_>,
    project: &Project,
    key: Key,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let op = KvOp::Delete {
        key,
        precondition: write_precondition(headers)?,
        must_exist: true,
    };
    write_one(ctx, project, op).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Writes one op (a PUT, a DELETE, a delete by prefix, an incr), the
/// one-op case of a transaction, answering with the op's own error rather
/// than a transaction's `failed_op`. Returns the write's revision and the
/// op's result.
pub(super) async fn write_one(
    ctx: &Ctx<'_>,
    project: &Project,
    op: KvOp,
) -> Result<(u64, OpResult), ApiError> {
    let write = KvWrite::to(project, ctx.caller.grant(), Vec::new(), vec![op]);
    let commit = ctx
        .app
        .store
        .write_kv(write)
        .await
        .map_err(StoreError::into_op_error)?;
    let result = commit
        .results
        .into_iter()
        .next()
        .ok_or_else(ApiError::internal)?;
    Ok((commit.revision, result))
}

/// For a request that lists keys (a listing, a watch): refuses read and
/// write tokens when the project does not list its keys, and answers the
/// `prefix` asked for, inside the token's (no prefix: the token's).
pub fn listed_prefix(ctx: &Ctx<'_>, project: &Project, query: &Query) -> Result<Prefix, ApiError> {
    ctx.caller.require_role(Role::Read)?;
    if !project.settings.keys_discoverable && ctx.caller.role() < Role::Manage {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "listing_disabled",
            "this project does not list its keys to read and write tokens",
        ));
    }
    match query.get("prefix")? {
        None | Some("") => Ok(ctx.caller.prefix()),
        Some(prefix) => {
            ctx.caller.require_scope(prefix)?;
            Ok(Prefix::parse(prefix)?)
        }
    }
}

/// `GET` (list) and `DELETE` (by prefix) of `/kv`.
pub async fn listing(
    ctx: &Ctx<'_>,
    raw_project: &str,
    request: Request,
    query: &Query,
) -> Response {
    about_keys(listing_inner(ctx, raw_project, request, query).await)
}

async fn listing_inner(
    ctx: &Ctx<'_>,
    raw_project: &str,
    request: Request,
    query: &Query,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_project)?;
    if request.method() == Method::DELETE {
        ctx.caller.require_role(Role::Write)?;
        let prefix = query.get("prefix")?.ok_or_else(|| {
            ApiError::bad_request(
                "a delete by prefix needs ?prefix= (prefix= alone clears the project)",
            )
        })?;
        ctx.caller.require_scope(prefix)?;
        let prefix = Prefix::parse(prefix)?;
        let (revision, result) = write_one(ctx, &project, KvOp::DeletePrefix { prefix }).await?;
        let OpResult::DeletePrefix { deleted } = result else {
            return Err(ApiError::internal());
        };
        return Ok(json(StatusCode::OK, Deleted { deleted, revision }));
    }

    let prefix = listed_prefix(ctx, &project, query)?;
    let limit = match query.get("limit")? {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => parse_limit(text)?,
    };

    let id = project.settings.id.as_str();
    let after = query
        .get("cursor")?
        .map(|cursor| open_cursor(cursor, id, prefix.as_str()))
        .transpose()?;
    let with_values = query.flag("values")?;
    let request = ListRequest {
        prefix: prefix.clone(),
        after,
        limit,
        with_values,
        value_budget: VALUES_PAGE_BYTES,
    };
    let read = ctx.app.store.list(&project.settings.id, request).await?;
    let page = read.value;
    let cursor = match (page.more, page.entries.last()) {
        (true, Some((last, _))) => Some(make_cursor(id, prefix.as_str(), last.key.as_str())),
        _ => None,
    };
    let keys: Vec<_> = page
        .entries
        .iter()
        .map(|(meta, value)| views::listed_key(meta, value.as_deref()))
        .collect();
    // About the answer's size: a value's bytes in base64 (the largest of its
    // encodings unless text needs escapes), the key twice, 300 for the rest.
    let size: usize = (page.entries.iter())
        .map(|(meta, value)| {
            value.as_ref().map_or(0, |v| v.len() / 3 * 4 + 4) + 2 * meta.key.as_str().len() + 300
        })
        .sum();
    let listing = Listing {
        keys,
        cursor,
        revision: read.revision,
    };
    let mut response = json_sized(StatusCode::OK, listing, size + 64);
    response
        .headers_mut()
        .insert(KVS_REVISION.clone(), HeaderValue::from(read.revision));
    Ok(response)
}

/// `limit`: a positive integer, clamped to [`MAX_LIST_LIMIT`] however large.
fn parse_limit(text: &str) -> Result<usize, ApiError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.bytes().all(|b| b == b'0') {
        return Err(ApiError::bad_request("limit must be a positive integer"));
    }
    Ok(text
        .parse::<usize>()
        .map_or(MAX_LIST_LIMIT, |n| n.min(MAX_LIST_LIMIT)))
}

/// A cursor names the project, the prefix and the last key returned, so that
/// it marks a key rather than an offset and cannot be used elsewhere.
fn make_cursor(project: &str, prefix: &str, last: &str) -> String {
    let bytes = serde_json::to_vec(&(project, prefix, last)).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn open_cursor(cursor: &str, project: &str, prefix: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::bad_request("the cursor is not one this listing gave");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let (p, x, last): (String, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if p != project || x != prefix {
        return Err(ApiError::bad_request(
            "this cursor belongs to a listing of another project or prefix",
        ));
    }
    Ok(last)
}

/// A value is stored as sent: a body in a content coding kvs would not undo
/// (gzip) would be stored as the compressed bytes and served without its
/// coding, so it is refused (415); `identity` is no coding.
pub(super) fn no_content_coding(headers: &HeaderMap) -> Result<(), ApiError> {
    for coding in headers.get_all(header::CONTENT_ENCODING) {
        let identity = coding.to_str().is_ok_and(|text| {
            text.split(',').all(|c| {
                let c = c.trim();
                c.is_empty() || c.eq_ignore_ascii_case("identity")
            })
        });
        if !identity {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a value is stored as sent: send it without a Content-Encoding",
            ));
        }
    }
    Ok(())
}

/// A content type to store, as every way of giving one takes it (the
/// header, `?content_type=`, a transaction's or an import's field): some
/// text in visible ASCII, which a read can send back as its
/// `Content-Type`. `what` names the field in the message.
pub(super) fn content_type(text: &str, what: &str) -> Result<String, ApiError> {
    if !crate::domain::is_content_type(text) {
        return Err(ApiError::bad_request(format!(
            "{what} must be a media type in visible ASCII, of at most {} bytes",
            crate::domain::MAX_CONTENT_TYPE_BYTES
        )));
    }
    Ok(text.to_owned())
}

/// The items of a list header (`If-Match`, `If-None-Match`) over all its
/// field lines, which HTTP says mean the same as one line with commas
/// (RFC 9110, section 5.3), trimmed, empty ones left out; borrowed from
/// the request. `None` when the header is absent, `Err` when a line is not
/// visible ASCII.
pub(super) fn list_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Option<Result<impl Iterator<Item = &'a str> + 'a, ()>> {
    let lines = headers.get_all(name);
    lines.iter().next()?;
    if lines.iter().any(|line| line.to_str().is_err()) {
        return Some(Err(()));
    }
    let items = lines
        .into_iter()
        .flat_map(|line| line.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty());
    Some(Ok(items))
}

/// `If-None-Match` on a read: `*` or a list of entity tags, compared weakly.
fn matches_weakly<'a>(condition: Result<impl Iterator<Item = &'a str>, ()>, version: u64) -> bool {
    let Ok(mut tags) = condition else {
        return false;
    };
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version);
    tags.any(|tag| tag == "*" || opaque_tag(tag.strip_prefix("W/").unwrap_or(tag)) == Some(digits))
}

/// The text between an entity tag's quotes (`"12"` → `12`).
fn opaque_tag(tag: &str) -> Option<&str> {
    tag.strip_prefix('"')?.strip_suffix('"')
}

/// The precondition of a write: `If-None-Match: *`, or `If-Match` with `*`
/// or a list of strong entity tags (a weak one never matches).
fn write_precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    if let Some(value) = list_header(headers, &header::IF_NONE_MATCH) {
        // `*`, on one line or several; an empty list is not `*`.
        let star = value.is_ok_and(|tags| {
            let mut tags = tags.peekable();
            tags.peek().is_some() && tags.all(|tag| tag == "*")
        });
        return if star {
            Ok(Some(Precondition::Absent))
        } else {
            Err(ApiError::bad_request("a write takes If-None-Match: * only"))
        };
    }
    let Some(value) = list_header(headers, &header::IF_MATCH) else {
        return Ok(None);
    };
    let tags = value.map_err(|()| ApiError::bad_request("If-Match is not valid"))?;
    let both = || ApiError::bad_request("If-Match takes * or a list of entity tags, not both");
    let mut tags = tags.peekable();
    if tags.peek() == Some(&"*") {
        return if tags.all(|tag| tag == "*") {
            Ok(Some(Precondition::Exists))
        } else {
            Err(both())
        };
    }
    let mut versions = Vec::new();
    for tag in tags {
        if tag == "*" {
            return Err(both());
        }
        if tag.starts_with("W/") {
            continue; // weak tags never match a strong comparison
        }
        let version = opaque_tag(tag)
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("If-Match holds a tag that is not an entity tag like \"12\"")
            })?;
        versions.push(version);
    }
    Ok(Some(Precondition::VersionIn(versions)))
}

/// An answer about keys, success or error, with the headers every such
/// answer carries.
pub(super) fn about_keys(result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    key_headers(response.headers_mut());
    response
}

fn key_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, PRIVATE_NO_CACHE.clone());
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
}

/// The entity tag of a version, `"12"`, formatted straight into the bytes
/// that the header value keeps (no `String`, no second copy).
fn etag(version: u64) -> Option<HeaderValue> {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version).as_bytes();
    let mut tag = BytesMut::with_capacity(digits.len() + 2);
    tag.put_u8(b'"');
    tag.put_slice(digits);
    tag.put_u8(b'"');
    HeaderValue::from_maybe_shared(tag.freeze()).ok()
}

/// A header value that takes over `text`'s buffer instead of copying it;
/// `None` if `text` cannot be a header value.
fn owned_value(text: String) -> Option<HeaderValue> {
    HeaderValue::try_from(text).ok()
}

/// Sets a header whose value could be built; leaves it out otherwise, as
/// the handlers always have (no value built here can fail in practice).
fn insert_some(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    if let Some(value) = value {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists() {
        let v = |s: &'static str| Ok::<_, ()>(s.split(',').map(str::trim));
        assert!(matches_weakly(v("*"), 7));
        assert!(matches_weakly(v("\"9\", \"7\""), 7));
        assert!(matches_weakly(v("W/\"7\""), 7));
        assert!(!matches_weakly(v("\"8\", W/\"9\""), 7));
        assert!(!matches_weakly(v("\"07\", 7, \"7"), 7));
    }

    /// A list sent as several field lines means what one line with commas
    /// means.
    #[test]
    fn a_list_header_on_several_lines_is_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(header::IF_MATCH, HeaderValue::from_static("\"999\""));
        headers.append(header::IF_MATCH, HeaderValue::from_static("\"1\""));
        headers.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"9\""));
        headers.append(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"7\""));
        let condition = list_header(&headers, &header::IF_NONE_MATCH).unwrap();
        assert!(matches_weakly(condition, 7));
        headers.remove(header::IF_NONE_MATCH);
        let Some(Precondition::VersionIn(versions)) = write_precondition(&headers).unwrap() else {
            panic!("If-Match was not read as a list of versions");
        };
        assert_eq!(versions, [999, 1]);
        assert!(list_header(&HeaderMap::new(), &header::IF_MATCH).is_none());
        let mut star = HeaderMap::new();
        star.append(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        star.append(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches!(
            write_precondition(&star),
            Ok(Some(Precondition::Absent))
        ));
        // An empty If-None-Match is not `*`; `*` does not mix with tags.
        let sent = |name: HeaderName, lines: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(name.clone(), HeaderValue::from_static(line));
            }
            write_precondition(&headers)
        };
        assert!(sent(header::IF_NONE_MATCH, &[""]).is_err());
        assert!(sent(header::IF_NONE_MATCH, &[" , "]).is_err());
        assert!(sent(header::IF_NONE_MATCH, &["*", "\"1\""]).is_err());
        for mixed in [
            &["\"5\", *"][..],
            &["*, \"5\""],
            &["*", "\"5\""],
            &["\"5\"", "*"],
        ] {
            assert!(sent(header::IF_MATCH, mixed).is_err(), "{mixed:?}");
        }
        assert!(matches!(
            sent(header::IF_MATCH, &["*", " * "]),
            Ok(Some(Precondition::Exists))
        ));
    }

    #[test]
    fn limits_are_positive_and_clamped_however_large() {
        assert_eq!(parse_limit("7").unwrap(), 7);
        assert_eq!(parse_limit("5000").unwrap(), MAX_LIST_LIMIT);
        assert_eq!(
            parse_limit("100000000000000000000000").unwrap(),
            MAX_LIST_LIMIT
        );
        for bad in ["0", "000", "-1", "ten", "", "1.5"] {
            assert!(parse_limit(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cursors_are_bound_to_project_and_prefix() {
        let cursor = make_cursor("p", "a/", "a/1");
        assert_eq!(open_cursor(&cursor, "p", "a/").unwrap(), "a/1");
        assert!(open_cursor(&cursor, "q", "a/").is_err());
        assert!(open_cursor(&cursor, "p", "").is_err());
        assert!(open_cursor("not-a-cursor", "p", "a/").is_err());
    }
}
