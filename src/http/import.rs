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
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::txn::json_body_of;
use super::views::{Imported, Time};
use super::{Ctx, json};
use crate::domain::{Key, Role, Timestamp};
use crate::store::{KvOp, KvWrite};

/// Keys to write exactly as given (what `kvs export` wrote). Each key is
/// kept as its JSON text until it is read, so that a refusal names its
/// index (`failed_key`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    #[schema(value_type = Vec<ImportedKey>)]
    keys: Vec<Box<RawValue>>,
}

/// One imported key: `value` (text) or `value_base64`. `version` is what
/// an export records; the import takes a new revision, as every write does.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedKey {
    key: String,
    /// Text, stored as its UTF-8 bytes.
    value: Option<String>,
    value_base64: Option<String>,
    /// Default `text/plain; charset=utf-8` for `value`,
    /// `application/octet-stream` for `value_base64`.
    content_type: Option<String>,
    #[schema(value_type = Option<Time>)]
    created_at: Option<String>,
    #[schema(value_type = Option<Time>)]
    updated_at: Option<String>,
    #[schema(value_type = Option<Time>)]
    expires_at: Option<String>,
    /// Accepted and ignored.
    #[schema(value_type = Option<u64>)]
    #[allow(dead_code)]
    version: Option<IgnoredAny>,
    /// Accepted and ignored.
    #[schema(value_type = Option<u64>)]
    #[allow(dead_code)]
    size: Option<IgnoredAny>,
}

#[utoipa::path(
    post,
    path = "/v1/projects/{project}/import",
    summary = "Import keys",
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
    let body: ImportRequest = json_body_of(
        &parts.headers,
        body,
        body_limit(&ctx.app.settings),
        super::error::RAISE_IMPORT,
        "an import is {\"keys\": [{\"key\", \"value\" or \"value_base64\", \"content_type\", \
         \"created_at\", \"updated_at\", \"expires_at\"}, …]}",
    )
    .await?;
    let now = Timestamp::now();
    let ops = body
        .keys
        .iter()
        .enumerate()
        .map(|(index, entry)| restore(ctx, entry, now).map_err(|e| e.failed_key(index)))
        .collect::<Result<Vec<_>, _>>()?;
    let imported = ops.len() as u64;
    let write = KvWrite {
        project: project.settings.id.clone(),
        checks: Vec::new(),
        ops,
    };
    let commit = ctx.app.store.write_kv(write).await?;
    Ok(json(
        StatusCode::OK,
        Imported {
            imported,
            revision: commit.revision,
        },
    ))
}

/// The largest import body: a transaction's, or room for one key at the
/// server's largest value, base64-encoded, whichever is larger.
pub fn body_limit(settings: &crate::config::Settings) -> u64 {
    let one_value = settings.max_value_bytes.saturating_mul(4) / 3 + (1 << 20);
    settings.max_txn_bytes.max(one_value)
}

/// One imported key as a `Restore` op.
fn restore(ctx: &Ctx<'_>, entry: &RawValue, now: Timestamp) -> Result<KvOp, ApiError> {
    let entry: ImportedKey = serde_json::from_str(entry.get())
        .map_err(|error| ApiError::bad_request(format!("an imported key: {error}")))?;
    let key = Key::parse(entry.key.as_str())?;
    ctx.caller.require_scope(key.as_str())?;
    let (value, default_type) = match (entry.value, entry.value_base64) {
        (Some(text), None) => (Bytes::from(text), "text/plain; charset=utf-8"),
        (None, Some(encoded)) => {
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
    let content_type = entry
        .content_type
        .unwrap_or_else(|| default_type.to_owned());
    let created_at = time(entry.created_at, "created_at")?.unwrap_or(now);
    let updated_at = time(entry.updated_at, "updated_at")?.unwrap_or(created_at);
    Ok(KvOp::Restore {
        key,
        value,
        content_type,
        created_at,
        updated_at,
        expires_at: time(entry.expires_at, "expires_at")?,
    })
}

/// An RFC 3339 time field, if present and not null.
fn time(text: Option<String>, name: &str) -> Result<Option<Timestamp>, ApiError> {
    text.map(|text| {
        Timestamp::parse_rfc3339(&text).ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be an RFC 3339 time, not {text:?}"))
        })
    })
    .transpose()
}
