//! `POST /v1/projects/{p}/import`: keys written exactly as given, with their
//! content types and times, all or none. It is how `kvs import` restores
//! what `kvs export` wrote, and how other stores' data (Simple-PyKV's) comes
//! in with its own timestamps.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::request::json_bytes;
use super::views::{Imported, Time};
use super::{Ctx, json};
use crate::domain::{Key, MAX_DURATION_SECS, Role, Timestamp};
use crate::store::{KvOp, KvWrite};

/// The most keys one import request takes. Each key held for the one
/// commit costs about 1.4 KB beside its value (its op, the staged change,
/// the change set for watches, the log record, the entry readers find): a
/// request of 1,000,000 empty keys, 26 MB of body, raised the server's peak
/// memory by 1.4 GB and held other projects' writes for seconds. `kvs
/// import` sends 1,000 keys a request.
pub const MAX_IMPORT_KEYS: usize = 10_000;

/// Keys to write exactly as given (what `kvs export` wrote). The body's
/// schema: it is read as a stream by [`parse`], each key an [`ImportedKey`]
/// turned into its op as soon as it is read, never as a whole.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImportRequest {
    keys: Vec<ImportedKey>,
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
        (status = 403, description = "Not a manage token, or a key past `max_keys` (`quota_exceeded`, with `failed_key`)", body = ErrorBody),
        (status = 413, description = "The body or a value is too large (a value: with `failed_key`), or more than 10,000 keys (`failed_key` 10000)", body = ErrorBody),
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
    let bytes = json_bytes(
        &parts.headers,
        body,
        body_limit(&ctx.app.settings),
        super::error::RAISE_IMPORT,
    )
    .await?;
    let ops = parse(ctx, &bytes, Timestamp::now())?;
    let imported = distinct_keys(&ops);
    let write = KvWrite::to(&project, ctx.caller.grant(), Vec::new(), ops);
    let commit = ctx
        .app
        .store
        .write_kv(write)
        .await
        .map_err(|error| ApiError::from(error).op_as_key())?;
    Ok(json(
        StatusCode::OK,
        Imported {
            imported,
            revision: commit.revision,
        },
    ))
}

/// The keys an import writes: a key given twice is written once, as its
/// last entry says (a write's ops on one key fold into one write, as a
/// transaction's do), so `imported` counts keys, not entries.
fn distinct_keys(ops: &[KvOp]) -> u64 {
    let keys: HashSet<&str> = ops
        .iter()
        .filter_map(|op| match op {
            KvOp::Restore { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    keys.len() as u64
}

/// The largest import body: a transaction's, or room for one key at the
/// server's largest value, base64-encoded, whichever is larger.
pub fn body_limit(settings: &crate::config::Settings) -> u64 {
    let one_value = settings.max_value_bytes.saturating_mul(4) / 3 + (1 << 20);
    settings.max_txn_bytes.max(one_value)
}

/// What an import body that is no import is told.
const SHAPE: &str = "an import is {\"keys\": [{\"key\", \"value\" or \"value_base64\", \
                     \"content_type\", \"created_at\", \"updated_at\", \"expires_at\"}, …]}";

/// The body's keys as `Restore` ops, read straight from the bytes: each
/// key becomes its op as soon as it is read, and the first that cannot
/// (`{"keys": [0, …]}`) ends the parse. No tree of the whole body is built,
/// so an import takes about the body's bytes and its values' bytes, never
/// a multiple of the body for its JSON nodes.
fn parse(ctx: &Ctx<'_>, bytes: &[u8], now: Timestamp) -> Result<Vec<KvOp>, ApiError> {
    let failure = RefCell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let parsed = (Body {
        ctx,
        now,
        failure: &failure,
    })
    .deserialize(&mut reader)
    .and_then(|ops| reader.end().map(|()| ops));
    match (parsed, failure.into_inner()) {
        (_, Some(error)) => Err(error),
        (Ok(Some(ops)), None) => Ok(ops),
        (Ok(None), None) => Err(ApiError::bad_request(SHAPE)),
        (Err(error), None) => Err(ApiError::bad_json("the JSON body is not valid", &error)),
    }
}

/// The body object; `None` without `keys`. A refusal of ours is left in
/// `failure` (serde's error then only stops the parse).
struct Body<'a, 'c> {
    ctx: &'a Ctx<'c>,
    now: Timestamp,
    failure: &'a RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Body<'_, '_> {
    type Value = Option<Vec<KvOp>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Body<'_, '_> {
    type Value = Option<Vec<KvOp>>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object with \"keys\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut ops = None;
        while let Some(field) = map.next_key::<String>()? {
            if field != "keys" || ops.is_some() {
                let error = if field == "keys" {
                    ApiError::bad_request("\"keys\" is given twice")
                } else {
                    ApiError::bad_request("unknown field (the body's one field is \"keys\")")
                };
                *self.failure.borrow_mut() = Some(error);
                return Err(de::Error::custom("refused"));
            }
            ops = Some(map.next_value_seed(Keys {
                ctx: self.ctx,
                now: self.now,
                failure: self.failure,
            })?);
        }
        Ok(ops)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        *self.failure.borrow_mut() = Some(ApiError::bad_request(SHAPE));
        Err(de::Error::custom("refused"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The `keys` array: each element read as one small JSON value and turned
/// into its op at once.
struct Keys<'a, 'c> {
    ctx: &'a Ctx<'c>,
    now: Timestamp,
    failure: &'a RefCell<Option<ApiError>>,
}

impl<'de> DeserializeSeed<'de> for Keys<'_, '_> {
    type Value = Vec<KvOp>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keys<'_, '_> {
    type Value = Vec<KvOp>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of keys")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ops = Vec::new();
        while let Some(entry) = seq.next_element::<&RawValue>()? {
            if ops.len() == MAX_IMPORT_KEYS {
                let error = ApiError::too_large(format!(
                    "an import takes at most {MAX_IMPORT_KEYS} keys a request; \
                     send the rest in further requests (kvs import sends 1,000 a request)"
                ));
                *self.failure.borrow_mut() = Some(error.failed_key(ops.len()));
                return Err(de::Error::custom("refused"));
            }
            match restore(self.ctx, entry, self.now) {
                Ok(op) => ops.push(op),
                Err(error) => {
                    let error = error.failed_key(ops.len());
                    *self.failure.borrow_mut() = Some(error);
                    return Err(de::Error::custom("refused"));
                }
            }
        }
        Ok(ops)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.refuse()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.refuse()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.refuse()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.refuse()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.refuse()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        self.refuse()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.refuse()
    }
}

impl Keys<'_, '_> {
    /// `keys` that is no array.
    fn refuse<T, E: de::Error>(&self) -> Result<T, E> {
        *self.failure.borrow_mut() = Some(ApiError::bad_request(SHAPE));
        Err(E::custom("refused"))
    }
}

/// One imported key as a `Restore` op.
fn restore(ctx: &Ctx<'_>, entry: &RawValue, now: Timestamp) -> Result<KvOp, ApiError> {
    let entry: ImportedKey = serde_json::from_str(entry.get())
        .map_err(|error| ApiError::bad_json("an imported key", &error))?;
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
    let content_type = match entry.content_type {
        Some(text) => super::kv::content_type(&text, "content_type")?,
        None => default_type.to_owned(),
    };
    let created_at = time(entry.created_at, "created_at")?.unwrap_or(now);
    let updated_at = time(entry.updated_at, "updated_at")?.unwrap_or(created_at);
    let expires_at = time(entry.expires_at, "expires_at")?;
    // As far as the longest `ttl` reaches and no farther: an expiry a PUT
    // could not set is refused as that PUT's `ttl` is.
    if expires_at.is_some_and(|at| at > now.plus_seconds(MAX_DURATION_SECS)) {
        return Err(ApiError::bad_request(
            "expires_at may be at most 3650 days from now (the longest ttl)",
        ));
    }
    Ok(KvOp::Restore {
        key,
        value,
        content_type,
        created_at,
        updated_at,
        expires_at,
    })
}

/// An RFC 3339 time field, if present and not null.
fn time(text: Option<String>, name: &str) -> Result<Option<Timestamp>, ApiError> {
    text.map(|text| {
        Timestamp::parse_rfc3339(&text)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be an RFC 3339 time")))
    })
    .transpose()
}
