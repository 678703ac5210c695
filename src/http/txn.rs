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
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::openapi::{ErrorBody, TxnAnswer, TxnRequest};
use super::request::{Query, read_body};
use super::views::CounterView;
use super::views::{counter, is_json_type, key_meta, key_with_value};
use super::{Ctx, json};
use crate::domain::{Key, Role, parse_duration_json};
use crate::store::{Check, Expect, KvOp, KvWrite, OpResult, Project};

/// The most checks and ops one transaction may hold together.
pub const MAX_TXN_ITEMS: usize = 128;

/// `POST /v1/projects/{p}/txn`.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/txn",
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
    let body = json_object(
        &parts.headers,
        body,
        ctx.app.settings.max_txn_bytes,
        super::error::RAISE_TXN,
    )
    .await?;
    let (checks, ops) = split_body(body)?;
    if checks.len() + ops.len() > MAX_TXN_ITEMS {
        return Err(ApiError::bad_request(format!(
            "a transaction holds at most {MAX_TXN_ITEMS} checks and ops together"
        )));
    }
    let writes = ops
        .iter()
        .any(|op| op.get("op").and_then(Value::as_str) != Some("get"));
    if writes {
        ctx.caller.require_role(Role::Write)?;
    }
    let checks = checks
        .into_iter()
        .map(|check| parse_check(ctx, check))
        .collect::<Result<Vec<_>, _>>()?;
    let ops = ops
        .into_iter()
        .enumerate()
        .map(|(index, op)| {
            parse_op(ctx, &project, op).map_err(|error| error.with_field("failed_op", json!(index)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let write = KvWrite {
        project: project.settings.id.clone(),
        checks,
        ops,
    };
    let commit = ctx.app.store.write_kv(write).await?;
    let results: Vec<Value> = commit.results.iter().map(result_view).collect();
    Ok(json(
        StatusCode::OK,
        json!({"revision": commit.revision, "results": results}),
    ))
}

/// `POST /v1/projects/{p}/incr/{key}?by=<int>`.
#[utoipa::path(
    post,
    path = "/v1/projects/{project}/incr/{key}",
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
    let view = result_view(&result);
    Ok(json(StatusCode::OK, view))
}

/// The JSON object of a body, under the transaction size limit.
pub(super) async fn json_object(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    raise: &str,
) -> Result<Map<String, Value>, ApiError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE)
        && !is_json_type(content_type.to_str().unwrap_or(""))
    {
        return Err(ApiError::unsupported_media_type());
    }
    let bytes = read_body(headers, body, limit, raise).await?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::bad_request(
            "a transaction is a JSON object with \"ops\"",
        )),
        Err(error) => Err(ApiError::bad_request(format!(
            "the JSON body is not valid: {error}"
        ))),
    }
}

fn split_body(mut body: Map<String, Value>) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let list = |value: Option<Value>, name: &str| match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be an array"))),
    };
    let checks = list(body.remove("checks"), "checks")?;
    let ops = list(body.remove("ops"), "ops")?;
    if let Some(name) = body.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown field {name:?} (a transaction has checks and ops)"
        )));
    }
    Ok((checks, ops))
}

/// The fields of a check or op object, refusing any not in `allowed`.
fn fields(value: Value, what: &str, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(format!(
            "each {what} is a JSON object"
        )));
    };
    if let Some(name) = object.keys().find(|name| !allowed.contains(&name.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field {name:?} in a {what}"
        )));
    }
    Ok(object)
}

/// The `key` of a check or op, valid and inside the caller's scope.
fn key_of(ctx: &Ctx<'_>, object: &Map<String, Value>) -> Result<Key, ApiError> {
    let text = object
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("\"key\" must be a string"))?;
    let key = Key::parse(text)?;
    ctx.caller.require_scope(key.as_str())?;
    Ok(key)
}

fn parse_check(ctx: &Ctx<'_>, value: Value) -> Result<Check, ApiError> {
    let object = fields(value, "check", &["key", "version", "exists"])?;
    let key = key_of(ctx, &object)?;
    let expect = match (object.get("version"), object.get("exists")) {
        (Some(version), None) => Expect::Version(
            version
                .as_u64()
                .ok_or_else(|| ApiError::bad_request("a check's version is a positive integer"))?,
        ),
        (None, Some(exists)) => Expect::Exists(
            exists
                .as_bool()
                .ok_or_else(|| ApiError::bad_request("a check's exists is true or false"))?,
        ),
        _ => {
            return Err(ApiError::bad_request(
                "a check has either \"version\" or \"exists\"",
            ));
        }
    };
    Ok(Check { key, expect })
}

fn parse_op(ctx: &Ctx<'_>, project: &Project, value: Value) -> Result<KvOp, ApiError> {
    let kind = value
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match kind.as_str() {
        "put" => {
            let object = fields(
                value,
                "put",
                &["op", "key", "value", "value_base64", "content_type", "ttl"],
            )?;
            let key = key_of(ctx, &object)?;
            let ttl = object
                .get("ttl")
                .map(|ttl| {
                    parse_duration_json(ttl).map_err(|e| ApiError::bad_request(format!("ttl: {e}")))
                })
                .transpose()?;
            let content_type = match object.get("content_type") {
                None => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(_) => return Err(ApiError::bad_request("content_type must be a string")),
            };
            let (value, default_type) =
                match (object.get("value"), object.get("value_base64")) {
                    (Some(Value::String(text)), None) => {
                        (Bytes::from(text.clone()), "text/plain; charset=utf-8")
                    }
                    (Some(value), None) => (Bytes::from(value.to_string()), "application/json"),
                    (None, Some(Value::String(encoded))) => (
                        Bytes::from(STANDARD.decode(encoded).map_err(|_| {
                            ApiError::bad_request("value_base64 is not valid base64")
                        })?),
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
                content_type: content_type.unwrap_or_else(|| default_type.to_owned()),
                ttl,
                precondition: None,
            })
        }
        "delete" => {
            let object = fields(value, "delete", &["op", "key"])?;
            Ok(KvOp::Delete {
                key: key_of(ctx, &object)?,
                precondition: None,
                must_exist: false,
            })
        }
        "get" => {
            let object = fields(value, "get", &["op", "key"])?;
            Ok(KvOp::Get {
                key: key_of(ctx, &object)?,
            })
        }
        "incr" => {
            let object = fields(value, "incr", &["op", "key", "by"])?;
            let key = key_of(ctx, &object)?;
            let by = match object.get("by") {
                None => 1,
                Some(by) => by
                    .as_i64()
                    .ok_or_else(|| ApiError::bad_request("by must be a 64-bit integer"))?,
            };
            Ok(KvOp::Incr { key, by })
        }
        other => Err(ApiError::bad_request(format!(
            "unknown op {other:?} (put, delete, get or incr)"
        ))),
    }
}

fn result_view(result: &OpResult) -> Value {
    match result {
        OpResult::Put { meta, .. } => key_meta(meta),
        OpResult::Delete { deleted } => json!({"deleted": deleted}),
        OpResult::DeletePrefix { deleted } => json!({"deleted": deleted}),
        OpResult::Get(None) => Value::Null,
        OpResult::Get(Some(entry)) => key_with_value(&entry.meta, &entry.value),
        OpResult::Incr { meta, value } => counter(meta, *value),
    }
}
