//! `POST …/txn` and `POST …/incr/{key}`: several checks and ops applied at
//! one revision or not at all, and a counter.
//!
//! A transaction is judged in three steps, as the contract orders them: the
//! whole request is validated here (shape, keys, scope, sizes: the first
//! failing op answers with its own status and `failed_op`); then the store
//! evaluates every check (`failed_checks`); then it applies the ops, any of
//! which may still fail (`failed_op`). Nothing is applied unless all succeed.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::request::{Query, read_body};
use super::views::{
    CounterView, DeleteOp, Duration, GetOp, IncrOp, PutOp, TxnAnswer, counter, is_json_type,
    txn_result,
};
use super::{Ctx, json};
use crate::domain::{Key, Role, parse_duration_json};
use crate::store::{Check, Expect, KvOp, KvWrite, OpResult, Project};

/// The most checks and ops one transaction may hold together.
pub const MAX_TXN_ITEMS: usize = 128;

/// `POST /v1/projects/{p}/txn`.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/txn",
    summary = "Run a transaction",
    tag = "txn",
    description = "Write (read when every op is a `get`): all checks hold and every op applies, at one revision, or nothing does",
    params(("project" = String, Path, description = "The project id")),
    request_body = TxnRequest,
    responses(
        (status = 200, description = "Applied", body = TxnAnswer),
        (status = 400, description = "Malformed (with `failed_op` for an op)", body = ErrorBody),
        (status = 409, description = "An op cannot apply (`failed_op`)", body = ErrorBody),
        (status = 412, description = "Checks failed (`failed_checks`)", body = ErrorBody),
        (status = 413, description = "The body or a value is too large", body = ErrorBody),
        (status = 415, description = "Not a JSON body", body = ErrorBody),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ),
)]
pub async fn txn(ctx: &Ctx<'_>, raw_project: &str, request: Request) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_project)?;
    ctx.caller.require_role(Role::Read)?;
    let (parts, body) = request.into_parts();
    let body: TxnRequest = json_body_of(
        &parts.headers,
        body,
        ctx.app.settings.max_txn_bytes,
        super::error::RAISE_TXN,
        "a transaction is a JSON object with \"ops\" (and \"checks\")",
    )
    .await?;
    if body.checks.len() + body.ops.len() > MAX_TXN_ITEMS {
        return Err(ApiError::bad_request(format!(
            "a transaction holds at most {MAX_TXN_ITEMS} checks and ops together"
        )));
    }
    // Each op's name, read once: it decides the role needed and the shape.
    let names: Vec<Option<String>> = body.ops.iter().map(|op| op_name(op)).collect();
    let writes = names.iter().any(|name| name.as_deref() != Some("get"));
    if writes {
        ctx.caller.require_role(Role::Write)?;
    }
    let checks = body
        .checks
        .iter()
        .map(|check| parse_check(ctx, check))
        .collect::<Result<Vec<_>, _>>()?;
    let ops = body
        .ops
        .iter()
        .zip(&names)
        .enumerate()
        .map(|(index, (op, name))| {
            parse_op(ctx, &project, op, name.as_deref()).map_err(|error| error.failed_op(index))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let write = KvWrite {
        project: project.settings.id.clone(),
        checks,
        ops,
    };
    let commit = ctx.app.store.write_kv(write).await?;
    let answer = TxnAnswer {
        revision: commit.revision,
        results: commit.results.iter().map(txn_result).collect(),
    };
    Ok(json(StatusCode::OK, answer))
}

/// `POST /v1/projects/{p}/incr/{key}?by=<int>`.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/incr/{key}",
    summary = "Add to a counter",
    tag = "keys",
    description = "Write: adds `by` to a decimal counter (a missing key counts from 0)",
    params(
        ("project" = String, Path, description = "The project id"),
        ("key" = String, Path, description = "The key: everything after `/incr/`, percent-decoded once"),
        ("by" = Option<i64>, Query, description = "Default 1; may be negative"),
    ),
    responses(
        (status = 200, description = "The counter", body = CounterView),
        (status = 409, description = "Not a 64-bit integer, or the result overflows", body = ErrorBody),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ),
)]
pub async fn incr(
    ctx: &Ctx<'_>,
    raw_project: &str,
    raw_key: Vec<u8>,
    request: Request,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_project)?;
    ctx.caller.require_role(Role::Write)?;
    let key = Key::parse_bytes(raw_key)?;
    ctx.caller.require_scope(key.as_str())?;
    let query = Query::parse(request.uri().query())?;
    let by = match query.get("by") {
        None => 1,
        Some(text) => text.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("by must be a 64-bit integer, not {text:?}"))
        })?,
    };
    let (_, result) = super::kv::write_one(ctx, &project, KvOp::Incr { key, by }).await?;
    let OpResult::Incr { meta, value } = result else {
        return Err(ApiError::internal());
    };
    Ok(json(StatusCode::OK, counter(&meta, value)))
}

// =========================================================== request

/// A transaction: checks that must all hold, and ops applied together.
/// Checks and ops are kept as their JSON text until the count and the
/// caller's role are judged, then parsed one by one (an op's error names
/// its index); a put's `value` stays the text the client sent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    #[serde(default)]
    #[schema(value_type = Vec<TxnCheck>, default = json!([]))]
    checks: Vec<Box<RawValue>>,
    #[serde(default)]
    #[schema(value_type = Vec<TxnOp>)]
    ops: Vec<Box<RawValue>>,
}

/// A check: the key's current `version` is this one, or the key `exists`
/// (or not). Exactly one of the two.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnCheck {
    key: String,
    version: Option<u64>,
    exists: Option<bool>,
}

/// One op, told apart by `op`.
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "op", mapping(
    ("put" = "#/components/schemas/TxnPut"),
    ("delete" = "#/components/schemas/TxnDelete"),
    ("get" = "#/components/schemas/TxnGet"),
    ("incr" = "#/components/schemas/TxnIncr"),
)))]
#[allow(dead_code)] // the schema of the ops; parse_op reads each variant
pub enum TxnOp {
    Put(TxnPut),
    Delete(TxnDelete),
    Get(TxnGet),
    Incr(TxnIncr),
}

/// Writes a key: `value` (a JSON string is stored as text, any other JSON
/// as its JSON text, exactly as sent) or `value_base64`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnPut {
    #[allow(dead_code)] // checked as it is read: it names the variant
    op: PutOp,
    key: String,
    /// Any JSON: a string is stored as text (`text/plain; charset=utf-8`),
    /// anything else as the JSON text sent (`application/json`).
    #[serde(default, deserialize_with = "present_raw")]
    #[schema(value_type = Value, required = false)]
    value: Option<Box<RawValue>>,
    /// Bytes, base64-encoded (`application/octet-stream` by default).
    value_base64: Option<String>,
    /// The content type to store, instead of the default.
    content_type: Option<String>,
    #[schema(value_type = Option<Duration>)]
    ttl: Option<Value>,
}

/// Deletes a key (absent or not).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnDelete {
    #[allow(dead_code)] // checked as it is read: it names the variant
    op: DeleteOp,
    key: String,
}

/// Reads a key as the ops before it leave it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnGet {
    #[allow(dead_code)] // checked as it is read: it names the variant
    op: GetOp,
    key: String,
}

/// Adds `by` (default 1) to a decimal counter.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnIncr {
    #[allow(dead_code)] // checked as it is read: it names the variant
    op: IncrOp,
    key: String,
    /// Default 1; may be negative.
    by: Option<i64>,
}

/// A field given as `null` is `Some` (the JSON text `null`), not absent.
fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// An op's `op`, if it is an object with a string there.
fn op_name(op: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        op: Option<String>,
    }
    serde_json::from_str::<Peek>(op.get()).ok()?.op
}

/// `T` from a check's or op's JSON text; a mismatch is a 400 naming `what`.
fn parse_as<T: DeserializeOwned>(raw: &RawValue, what: &str) -> Result<T, ApiError> {
    serde_json::from_str(raw.get())
        .map_err(|error| ApiError::bad_request(format!("{what}: {error}")))
}

/// A body of JSON type, under `limit`, as `T` (`shape` says what it should
/// look like when it does not parse).
pub(super) async fn json_body_of<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    raise: &str,
    shape: &str,
) -> Result<T, ApiError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE)
        && !is_json_type(content_type.to_str().unwrap_or(""))
    {
        return Err(ApiError::unsupported_media_type());
    }
    let bytes = read_body(headers, body, limit, raise).await?;
    serde_json::from_slice(&bytes).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            ApiError::bad_request(format!("the JSON body is not valid: {error}"))
        } else {
            ApiError::bad_request(format!("{shape}: {error}"))
        }
    })
}

/// A key, valid and inside the caller's scope.
fn scoped_key(ctx: &Ctx<'_>, text: &str) -> Result<Key, ApiError> {
    let key = Key::parse(text)?;
    ctx.caller.require_scope(key.as_str())?;
    Ok(key)
}

fn parse_check(ctx: &Ctx<'_>, raw: &RawValue) -> Result<Check, ApiError> {
    let check: TxnCheck = parse_as(raw, "a check")?;
    let key = scoped_key(ctx, &check.key)?;
    let expect = match (check.version, check.exists) {
        (Some(version), None) => Expect::Version(version),
        (None, Some(exists)) => Expect::Exists(exists),
        _ => {
            return Err(ApiError::bad_request(
                "a check has either \"version\" or \"exists\"",
            ));
        }
    };
    Ok(Check { key, expect })
}

/// The op `raw`, whose `"op"` is `name`.
fn parse_op(
    ctx: &Ctx<'_>,
    project: &Project,
    raw: &RawValue,
    name: Option<&str>,
) -> Result<KvOp, ApiError> {
    match name {
        Some("put") => parse_put(ctx, project, parse_as(raw, "a put")?),
        Some("delete") => {
            let op: TxnDelete = parse_as(raw, "a delete")?;
            Ok(KvOp::Delete {
                key: scoped_key(ctx, &op.key)?,
                precondition: None,
                must_exist: false,
            })
        }
        Some("get") => {
            let op: TxnGet = parse_as(raw, "a get")?;
            Ok(KvOp::Get {
                key: scoped_key(ctx, &op.key)?,
            })
        }
        Some("incr") => {
            let op: TxnIncr = parse_as(raw, "an incr")?;
            Ok(KvOp::Incr {
                key: scoped_key(ctx, &op.key)?,
                by: op.by.unwrap_or(1),
            })
        }
        other => Err(ApiError::bad_request(format!(
            "unknown op {:?} (each op is an object whose \"op\" is put, delete, get or incr)",
            other.unwrap_or("")
        ))),
    }
}

fn parse_put(ctx: &Ctx<'_>, project: &Project, put: TxnPut) -> Result<KvOp, ApiError> {
    let key = scoped_key(ctx, &put.key)?;
    let ttl = put
        .ttl
        .as_ref()
        .map(|ttl| parse_duration_json(ttl).map_err(|e| ApiError::bad_request(format!("ttl: {e}"))))
        .transpose()?;
    let (value, default_type) = match (put.value, put.value_base64) {
        (Some(raw), None) => match serde_json::from_str::<String>(raw.get()) {
            // A JSON string is stored as its text.
            Ok(text) => (Bytes::from(text), "text/plain; charset=utf-8"),
            // Any other JSON as the text the client sent.
            Err(_) => (
                Bytes::from(String::from(Box::<str>::from(raw))),
                "application/json",
            ),
        },
        (None, Some(encoded)) => (
            Bytes::from(
                STANDARD
                    .decode(encoded)
                    .map_err(|_| ApiError::bad_request("value_base64 is not valid base64"))?,
            ),
            "application/octet-stream",
        ),
        _ => {
            return Err(ApiError::bad_request(
                "a put has either \"value\" (any JSON) or \"value_base64\" (a string)",
            ));
        }
    };
    let limit = project
        .settings
        .max_value_bytes
        .min(ctx.app.settings.max_value_bytes);
    if value.len() as u64 > limit {
        return Err(ApiError::payload_too_large(
            limit,
            super::error::RAISE_VALUE,
        ));
    }
    Ok(KvOp::Put {
        key,
        value,
        content_type: put.content_type.unwrap_or_else(|| default_type.to_owned()),
        ttl,
        precondition: None,
    })
}
