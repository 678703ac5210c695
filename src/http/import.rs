//! `POST /v1/projects/{p}/import`: keys written exactly as given, with their
//! content types and times, all or none. It is how `kvs import` restores
//! what `kvs export` wrote, and how other stores' data (Simple-PyKV's) comes
//! in with its own timestamps.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::openapi::{ErrorBody, ImportRequest, Imported};
use super::txn::json_object;
use super::{Ctx, json};
use crate::domain::{Key, Role, Timestamp};
use crate::store::{KvOp, KvWrite};

/// The fields an imported key may have (`version` is what an export
/// records; the import takes a new revision, as every write does).
const FIELDS: &[&str] = &[
    "key",
    "value",
    "value_base64",
    "content_type",
    "created_at",
    "updated_at",
    "expires_at",
    "version",
    "size",
];

#[utoipa::path(
    post,
    path = "/v1/projects/{project}/import",
    tag = "txn",
    description = "Manage or admin: keys written exactly as given, all or none",
    params(("project" = String, Path, description = "The project id")),
    request_body = ImportRequest,
    responses(
        (status = 200, description = "Imported", body = Imported),
        (status = 400, description = "Malformed (with `failed_key`)", body = ErrorBody),
        (status = 413, description = "The body or a value is too large", body = ErrorBody),
        (status = 415, description = "Not a JSON body", body = ErrorBody),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ),
)]
pub async fn import(
    ctx: &Ctx<'_>,
    raw_project: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_project)?;
    ctx.caller.require_role(Role::Manage)?;
    let (parts, body) = request.into_parts();
    let mut body = json_object(
        &parts.headers,
        body,
        body_limit(&ctx.app.settings),
        super::error::RAISE_IMPORT,
    )
    .await?;
    let Some(Value::Array(keys)) = body.remove("keys") else {
        return Err(ApiError::bad_request(
            "an import is {\"keys\": [{\"key\", \"value\" or \"value_base64\", \"content_type\", \
             \"created_at\", \"updated_at\", \"expires_at\"}, …]}",
        ));
    };
    if let Some(other) = body.keys().next() {
        return Err(ApiError::bad_request(format!("unknown field {other:?}")));
    }
    let now = Timestamp::now();
    let ops = keys
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            restore(ctx, entry, now).map_err(|e| e.with_field("failed_key", json!(index)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let imported = ops.len();
    let write = KvWrite {
        project: project.settings.id.clone(),
        checks: Vec::new(),
        ops,
    };
    let commit = ctx.app.store.write_kv(write).await?;
    Ok(json(
        StatusCode::OK,
        json!({"imported": imported, "revision": commit.revision}),
    ))
}

/// The largest import body: a transaction's, or room for one key at the
/// server's largest value, base64-encoded, whichever is larger.
pub fn body_limit(settings: &crate::config::Settings) -> u64 {
    let one_value = settings.max_value_bytes.saturating_mul(4) / 3 + (1 << 20);
    settings.max_txn_bytes.max(one_value)
}

/// One imported key as a `Restore` op.
fn restore(ctx: &Ctx<'_>, entry: Value, now: Timestamp) -> Result<KvOp, ApiError> {
    let Value::Object(entry) = entry else {
        return Err(ApiError::bad_request("each imported key is a JSON object"));
    };
    if let Some(other) = entry.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field {other:?}")));
    }
    let key = match entry.get("key") {
        Some(Value::String(key)) => Key::parse(key.as_str())?,
        _ => return Err(ApiError::bad_request("\"key\" must be a string")),
    };
    ctx.caller.require_scope(key.as_str())?;
    let (value, default_type) = match (entry.get("value"), entry.get("value_base64")) {
        (Some(Value::String(text)), None) => {
            (Bytes::from(text.clone()), "text/plain; charset=utf-8")
        }
        (None, Some(Value::String(encoded))) => {
            let bytes = BASE64
                .decode(encoded)
                .map_err(|_| ApiError::bad_request("value_base64 is not valid base64"))?;
            (Bytes::from(bytes), "application/octet-stream")
        }
        _ => {
            return Err(ApiError::bad_request(
                "each key has either \"value\" (text) or \"value_base64\"",
            ));
        }
    };
    let content_type = match entry.get("content_type") {
        None | Some(Value::Null) => default_type.to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(_) => return Err(ApiError::bad_request("\"content_type\" must be a string")),
    };
    let created_at = time(&entry, "created_at")?.unwrap_or(now);
    let updated_at = time(&entry, "updated_at")?.unwrap_or(created_at);
    Ok(KvOp::Restore {
        key,
        value,
        content_type,
        created_at,
        updated_at,
        expires_at: time(&entry, "expires_at")?,
    })
}

/// An RFC 3339 time field, if present and not null.
fn time(entry: &Map<String, Value>, name: &str) -> Result<Option<Timestamp>, ApiError> {
    match entry.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Timestamp::parse_rfc3339(text).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be an RFC 3339 time, not {text:?}"))
        }),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be an RFC 3339 time"
        ))),
    }
}
