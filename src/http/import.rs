//! `POST /v1/projects/{p}/import`: keys written exactly as given, with their
//! content types and times, all or none. It is how `kvs import` restores
//! what `kvs export` wrote, and how other stores' data (Simple-PyKV's) comes
//! in with its own timestamps.

use std::cell::RefCell;
use std::fmt;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::openapi::{ErrorBody, ImportRequest, Imported};
use super::request::read_body;
use super::views::is_json_type;
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
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE)
        && !is_json_type(content_type.to_str().unwrap_or(""))
    {
        return Err(ApiError::unsupported_media_type());
    }
    let bytes = read_body(
        &parts.headers,
        body,
        body_limit(&ctx.app.settings),
        super::error::RAISE_IMPORT,
    )
    .await?;
    let ops = parse(ctx, &bytes, Timestamp::now())?;
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
        (Err(error), None) => Err(ApiError::bad_request(format!(
            "the JSON body is not valid: {error}"
        ))),
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
                    ApiError::bad_request(format!("unknown field {field:?}"))
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
        while let Some(entry) = seq.next_element::<Value>()? {
            match restore(self.ctx, entry, self.now) {
                Ok(op) => ops.push(op),
                Err(error) => {
                    let error = error.with_field("failed_key", json!(ops.len()));
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
