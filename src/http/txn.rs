//! `POST …/txn` and `POST …/incr/{key}`: several checks and ops applied at
//! one revision or not at all, and a counter.
//!
//! A transaction is judged in three steps, as the contract orders them: the
//! whole request is validated here (shape, keys, scope, sizes: the first
//! failing op answers with its own status and `failed_op`); then the store
//! evaluates every check (`failed_checks`); then it applies the ops, any of
//! which may still fail (`failed_op`). Nothing is applied unless all succeed.

use std::borrow::Cow;
use std::marker::PhantomData;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::request::{Query, json_bytes};
use super::views::{
    CounterView, DeleteOp, Duration, GetOp, IncrOp, PutOp, TxnAnswer, counter, txn_result,
};
use super::{Ctx, json};
use crate::domain::{Key, Role, parse_counter, parse_duration_json};
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
        (status = 200, description = "Applied", body = TxnAnswer, headers(("Kvs-Revision" = u64, description = "The revision in the body"))),
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
    let bytes = json_bytes(
        &parts.headers,
        body,
        ctx.app.settings.max_txn_bytes,
        super::error::RAISE_TXN,
    )
    .await?;
    // Most bodies are well formed: each op is read once, straight into its
    // fields. Any other body is read again the careful way, which finds
    // the same mistake the same way whatever it is.
    let careful: TxnRequest;
    let (raw_checks, ops): (Vec<&RawValue>, Vec<PendingOp>) =
        match serde_json::from_slice::<TxnBody>(&bytes)
            .ok()
            .and_then(TxnBody::shaped)
        {
            Some(shaped) => shaped,
            None => {
                careful = parse_json(&bytes, TXN_SHAPE)?;
                (
                    careful.checks.iter().map(|check| &**check).collect(),
                    careful
                        .ops
                        .iter()
                        .map(|op| PendingOp::Raw(op, op_name(op)))
                        .collect(),
                )
            }
        };
    if raw_checks.len() + ops.len() > MAX_TXN_ITEMS {
        return Err(ApiError::bad_request(format!(
            "a transaction holds at most {MAX_TXN_ITEMS} checks and ops together"
        )));
    }
    let needed = if ops.iter().any(|op| !op.is_get()) {
        Role::Write
    } else {
        Role::Read
    };
    ctx.caller.require_role(needed)?;
    let checks = raw_checks
        .into_iter()
        .map(|check| parse_check(ctx, check))
        .collect::<Result<Vec<_>, _>>()?;
    let ops = ops
        .into_iter()
        .enumerate()
        .map(|(index, op)| {
            op.parse(ctx, &project)
                .map_err(|error| error.failed_op(index))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let write = KvWrite::to(&project, ctx.caller.grant_for(needed), checks, ops);
    let commit = ctx.app.store.write_kv(write).await?;
    let answer = TxnAnswer {
        revision: commit.revision,
        results: commit.results.iter().map(txn_result).collect(),
    };
    // As every answer to a read: a transaction of gets is one.
    let mut response = json(StatusCode::OK, answer);
    response.headers_mut().insert(
        super::kv::KVS_REVISION.clone(),
        HeaderValue::from(commit.revision),
    );
    Ok(response)
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
    headers: &HeaderMap,
    query: &Query,
) -> Result<Response, ApiError> {
    let project = ctx.caller.project(&ctx.catalog, raw_project)?;
    ctx.caller.require_role(Role::Write)?;
    let key = Key::parse_bytes(raw_key)?;
    ctx.caller.require_scope(key.as_str())?;
    // Refused, not ignored: a conditional or expiring counter that came
    // out unconditional or lasting would be a silent surprise.
    if let Some(name) = [header::IF_MATCH, header::IF_NONE_MATCH]
        .iter()
        .find(|name| headers.contains_key(*name))
    {
        return Err(ApiError::bad_request(format!(
            "incr takes no {name}; for a conditional increment, send a transaction \
             with a check and an incr op"
        )));
    }
    if query.get("ttl")?.is_some() {
        return Err(ApiError::bad_request(
            "incr takes no ttl: a counter keeps its key's expiry; PUT the key with ?ttl= to set one",
        ));
    }
    let by = match query.get("by")? {
        None => 1,
        Some(text) => parse_counter(text.as_bytes()).ok_or_else(|| {
            ApiError::bad_request(
                "by must be a 64-bit integer in decimal (digits, an optional leading -, \
                 no + and no leading zero)",
            )
        })?,
    };
    let (_, result) = super::kv::write_one(ctx, &project, KvOp::Incr { key, by }).await?;
    let OpResult::Incr { meta, value } = result else {
        return Err(ApiError::internal());
    };
    Ok(json(StatusCode::OK, counter(&meta, value)))
}

// =========================================================== request

// The careful reading, for a body that `TxnBody` does not take. (Its doc
// comment below is the schema's description in the OpenAPI document.)
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
#[allow(dead_code)] // the schema of the ops; shape_op reads each variant
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
    #[serde(default, deserialize_with = "present")]
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

/// A field given (even as `null`) is `Some`, not absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// What a transaction body that is not [`TxnBody`] must look like.
const TXN_SHAPE: &str = "a transaction is a JSON object with \"ops\" (and \"checks\")";

/// A transaction body read in one pass: each op straight into [`AnyOp`].
/// Only for bodies whose every op has the fields its `op` allows; any other
/// is read again as a [`TxnRequest`], whose errors are the ones answered.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody<'a> {
    #[serde(default, borrow)]
    checks: Vec<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "at_most_items")]
    ops: Vec<OpObject<'a>>,
}

/// Ops, no more than a transaction may hold: a longer list is left to the
/// careful reading (which refuses it), not read in full here.
fn at_most_items<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<OpObject<'a>>, D::Error> {
    struct Ops<'a>(PhantomData<OpObject<'a>>);
    impl<'de: 'a, 'a> Visitor<'de> for Ops<'a> {
        type Value = Vec<OpObject<'a>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {MAX_TXN_ITEMS} ops")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut ops = Vec::with_capacity(8);
            while let Some(op) = seq.next_element()? {
                if ops.len() == MAX_TXN_ITEMS {
                    return Err(A::Error::invalid_length(ops.len() + 1, &self));
                }
                ops.push(op);
            }
            Ok(ops)
        }
    }
    deserializer.deserialize_seq(Ops(PhantomData))
}

impl<'a> TxnBody<'a> {
    /// The checks and ops, if every op is shaped as its `op` says.
    fn shaped(self) -> Option<(Vec<&'a RawValue>, Vec<PendingOp<'a>>)> {
        let ops = self
            .ops
            .into_iter()
            .map(|OpObject(op)| op.shaped().map(PendingOp::Shaped))
            .collect::<Option<Vec<_>>>()?;
        Some((self.checks, ops))
    }
}

/// An [`AnyOp`] given as a JSON object. (A derived struct is also read
/// from an array, by position; the careful reading never takes an op given
/// so, and neither may this one.)
struct OpObject<'a>(AnyOp<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for OpObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(PhantomData<AnyOp<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = AnyOp<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an op object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AnyOp<'a>, A::Error> {
                AnyOp::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Fields(PhantomData))
            .map(OpObject)
    }
}

/// Every field any op may have; a field given as `null` is `Some(None)`,
/// so that a field an op does not allow is refused even when `null`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnyOp<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    key: String,
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    value_base64: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    content_type: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    ttl: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    by: Option<Option<i64>>,
}

impl<'a> AnyOp<'a> {
    /// The op, if it has only the fields its `op` allows (as [`TxnPut`],
    /// [`TxnDelete`], [`TxnGet`] and [`TxnIncr`] would read it).
    fn shaped(self) -> Option<ShapedOp<'a>> {
        let AnyOp {
            op,
            key,
            value,
            value_base64,
            content_type,
            ttl,
            by,
        } = self;
        if op == "put" {
            return by.is_none().then(|| ShapedOp::Put {
                key,
                value: value.map(Cow::Borrowed),
                value_base64: value_base64.flatten(),
                content_type: content_type.flatten(),
                ttl: ttl.flatten(),
            });
        }
        if value.is_some() || value_base64.is_some() || content_type.is_some() || ttl.is_some() {
            return None;
        }
        match (&*op, by) {
            ("delete", None) => Some(ShapedOp::Delete { key }),
            ("get", None) => Some(ShapedOp::Get { key }),
            ("incr", by) => Some(ShapedOp::Incr {
                key,
                by: by.flatten(),
            }),
            _ => None,
        }
    }
}

/// An op whose fields fit its `op`, before its key and values are judged.
#[cfg_attr(test, derive(Debug))]
enum ShapedOp<'a> {
    Put {
        key: String,
        value: Option<Cow<'a, RawValue>>,
        value_base64: Option<String>,
        content_type: Option<String>,
        ttl: Option<Value>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
    Incr {
        key: String,
        by: Option<i64>,
    },
}

/// An op as the body gave it: already shaped, or its JSON text and its
/// `op` (if a string), to be read as the variant that `op` names.
enum PendingOp<'a> {
    Shaped(ShapedOp<'a>),
    Raw(&'a RawValue, Option<String>),
}

impl PendingOp<'_> {
    /// Whether a read token may run it.
    fn is_get(&self) -> bool {
        match self {
            PendingOp::Shaped(op) => matches!(op, ShapedOp::Get { .. }),
            PendingOp::Raw(_, name) => name.as_deref() == Some("get"),
        }
    }

    fn parse(self, ctx: &Ctx<'_>, project: &Project) -> Result<KvOp, ApiError> {
        match self {
            PendingOp::Shaped(op) => kv_op(ctx, project, op),
            PendingOp::Raw(raw, name) => kv_op(ctx, project, shape_op(raw, name.as_deref())?),
        }
    }
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
    // serde would read an array by position, and say so in its own terms
    // ("expected struct TxnCheck with 3 elements").
    if !raw.get().starts_with('{') {
        return Err(ApiError::bad_request(format!("{what} is a JSON object")));
    }
    serde_json::from_str(raw.get()).map_err(|error| ApiError::bad_json(what, &error))
}

/// A JSON body as `T` (`shape` says what it should look like when it does
/// not parse).
fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            ApiError::bad_json("the JSON body is not valid", &error)
        } else {
            ApiError::bad_json(shape, &error)
        }
    })
}

/// A key, valid and inside the caller's scope.
fn scoped_key(ctx: &Ctx<'_>, text: String) -> Result<Key, ApiError> {
    let key = Key::parse(text)?;
    ctx.caller.require_scope(key.as_str())?;
    Ok(key)
}

fn parse_check(ctx: &Ctx<'_>, raw: &RawValue) -> Result<Check, ApiError> {
    let check: TxnCheck = parse_as(raw, "a check")?;
    let key = scoped_key(ctx, check.key)?;
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

/// The op `raw`, whose `"op"` is `name`, read as the variant `name` says.
fn shape_op<'a>(raw: &RawValue, name: Option<&str>) -> Result<ShapedOp<'a>, ApiError> {
    Ok(match name {
        Some("put") => {
            let put: TxnPut = parse_as(raw, "a put")?;
            ShapedOp::Put {
                key: put.key,
                value: put.value.map(Cow::Owned),
                value_base64: put.value_base64,
                content_type: put.content_type,
                ttl: put.ttl,
            }
        }
        Some("delete") => ShapedOp::Delete {
            key: parse_as::<TxnDelete>(raw, "a delete")?.key,
        },
        Some("get") => ShapedOp::Get {
            key: parse_as::<TxnGet>(raw, "a get")?.key,
        },
        Some("incr") => {
            let op: TxnIncr = parse_as(raw, "an incr")?;
            ShapedOp::Incr {
                key: op.key,
                by: op.by,
            }
        }
        // What `op` held is not repeated: it may be any text.
        _ => {
            return Err(ApiError::bad_request(
                "unknown op (each op is an object whose \"op\" is put, delete, get or incr)",
            ));
        }
    })
}

/// The write or read a shaped op asks for: its key valid and in scope, its
/// ttl and value judged.
fn kv_op(ctx: &Ctx<'_>, project: &Project, op: ShapedOp<'_>) -> Result<KvOp, ApiError> {
    Ok(match op {
        ShapedOp::Put {
            key,
            value,
            value_base64,
            content_type,
            ttl,
        } => {
            let key = scoped_key(ctx, key)?;
            let ttl = ttl
                .as_ref()
                .map(|ttl| {
                    parse_duration_json(ttl).map_err(|e| ApiError::bad_request(format!("ttl: {e}")))
                })
                .transpose()?;
            let (value, default_type) = put_value(value.as_deref(), value_base64)?;
            let limit = project
                .settings
                .max_value_bytes
                .min(ctx.app.settings.max_value_bytes);
            if value.len() as u64 > limit {
                return Err(ApiError::value_too_large(limit));
            }
            KvOp::Put {
                key,
                value,
                content_type: match content_type {
                    Some(text) => super::kv::content_type(&text, "content_type")?,
                    None => default_type.to_owned(),
                },
                ttl,
                precondition: None,
            }
        }
        ShapedOp::Delete { key } => KvOp::Delete {
            key: scoped_key(ctx, key)?,
            precondition: None,
            must_exist: false,
        },
        ShapedOp::Get { key } => KvOp::Get {
            key: scoped_key(ctx, key)?,
        },
        ShapedOp::Incr { key, by } => KvOp::Incr {
            key: scoped_key(ctx, key)?,
            by: by.unwrap_or(1),
        },
    })
}

/// A put's bytes and their default content type: a JSON string `value` as
/// its text, any other JSON as the text sent, `value_base64` decoded.
fn put_value(
    value: Option<&RawValue>,
    value_base64: Option<String>,
) -> Result<(Bytes, &'static str), ApiError> {
    Ok(match (value, value_base64) {
        (Some(raw), None) => {
            let text = raw.get();
            match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                // A JSON string without escapes is its text between quotes.
                Some(inner) if !inner.contains('\\') => (
                    Bytes::copy_from_slice(inner.as_bytes()),
                    "text/plain; charset=utf-8",
                ),
                _ => match serde_json::from_str::<String>(text) {
                    // A JSON string is stored as its text.
                    Ok(text) => (Bytes::from(text), "text/plain; charset=utf-8"),
                    // A string that is not Unicode text (a lone surrogate
                    // escape) has no text to store.
                    Err(_) if text.starts_with('"') => {
                        return Err(ApiError::bad_request(
                            "value: a JSON string must be Unicode text (a lone surrogate \
                             escape such as \\ud800 is not)",
                        ));
                    }
                    // Any other JSON as the text the client sent.
                    Err(_) => (Bytes::copy_from_slice(text.as_bytes()), "application/json"),
                },
            }
        }
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
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The op read in one pass, if that reading takes it.
    fn in_one_pass(text: &str) -> Option<String> {
        let OpObject(op) = serde_json::from_str(text).ok()?;
        let op = op.shaped()?;
        Some(format!("{op:?}"))
    }

    /// The op read the careful way: its name, then the variant it names.
    fn carefully(text: &str) -> Option<String> {
        let raw: Box<RawValue> = serde_json::from_str(text).ok()?;
        let op = shape_op(&raw, op_name(&raw).as_deref()).ok()?;
        Some(format!("{op:?}"))
    }

    /// Fields an op may or may not allow, each with values of the right
    /// type and of wrong ones, in [`AnyOp`]'s order.
    const FIELDS: [(&str, &[&str]); 8] = [
        (
            "op",
            &[
                "\"put\"",
                "\"get\"",
                "\"delete\"",
                "\"incr\"",
                "\"swap\"",
                "\"p\\u0075t\"",
                "5",
                "null",
            ],
        ),
        ("key", &["\"a\"", "\"a\\\"b\"", "3", "null"]),
        (
            "value",
            &[
                "\"x\"",
                "\"a\\\"b\\u00e9\"",
                "null",
                "{\"n\": 1}",
                "[1,2]",
                "-0",
            ],
        ),
        ("value_base64", &["\"AAEC\"", "\"%%\"", "null", "1"]),
        ("content_type", &["\"text/x\"", "null", "2"]),
        ("ttl", &["60", "\"10m\"", "null", "{}"]),
        ("by", &["2", "-1", "null", "\"3\"", "1.5"]),
        ("version", &["1", "null"]),
    ];

    /// One of [`FIELDS`] with one of its values.
    fn field() -> impl Strategy<Value = (&'static str, &'static str)> {
        (0..FIELDS.len(), any::<prop::sample::Index>()).prop_map(|(field, value)| {
            let (name, values) = FIELDS[field];
            (name, *value.get(values))
        })
    }

    /// An op given as an array, which serde reads as a struct's fields by
    /// position: at each position a value of the field there or of another.
    fn op_array() -> impl Strategy<Value = String> {
        prop::collection::vec((any::<bool>(), any::<prop::sample::Index>(), field()), 0..9)
            .prop_map(|items| {
                let values: Vec<&str> = items
                    .iter()
                    .enumerate()
                    .map(
                        |(position, (own, value, (_, other)))| match FIELDS.get(position) {
                            Some((_, values)) if *own => *value.get(values),
                            _ => *other,
                        },
                    )
                    .collect();
                format!("[{}]", values.join(", "))
            })
    }

    /// An op's JSON text: a name and a key, and any of those fields, in any
    /// order, some twice.
    fn op_text() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["\"put\"", "\"get\"", "\"delete\"", "\"incr\""]);
        (name, prop::collection::vec(field(), 0..5))
            .prop_flat_map(|(name, mut fields)| {
                fields.push(("op", name));
                fields.push(("key", "\"a\""));
                Just(fields).prop_shuffle()
            })
            .prop_map(|fields| {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("\"{name}\": {value}"))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn an_op_read_in_one_pass_is_read_the_same_carefully(text in op_text()) {
            if let Some(quick) = in_one_pass(&text) {
                prop_assert_eq!(Some(quick), carefully(&text), "{}", text);
            }
        }

        #[test]
        fn an_op_given_as_an_array_is_read_in_one_pass_as_carefully(text in op_array()) {
            if let Some(quick) = in_one_pass(&text) {
                prop_assert_eq!(Some(quick), carefully(&text), "{}", text);
            }
        }
    }

    #[test]
    fn well_formed_ops_are_read_in_one_pass_in_any_field_order() {
        for text in [
            r#"{"op": "put", "key": "a", "value": "x"}"#,
            r#"{"key": "a", "value": {"n": 1}, "ttl": "10m", "op": "put"}"#,
            r#"{"value_base64": "AAEC", "content_type": "image/png", "key": "a", "op": "put"}"#,
            r#"{"op": "put", "key": "a", "value": null, "content_type": null, "ttl": null}"#,
            r#"{"key": "a", "op": "delete"}"#,
            r#"{"key": "a", "op": "get"}"#,
            r#"{"by": -2, "key": "n", "op": "incr"}"#,
            r#"{"op": "incr", "key": "n", "by": null}"#,
        ] {
            let quick = in_one_pass(text);
            assert!(quick.is_some(), "{text}");
            assert_eq!(quick, carefully(text), "{text}");
        }
    }

    #[test]
    fn ops_with_a_field_their_op_does_not_allow_are_read_carefully() {
        for text in [
            r#"{"op": "put", "key": "a", "value": "x", "by": null}"#,
            r#"{"op": "get", "key": "a", "value": null}"#,
            r#"{"op": "delete", "key": "a", "ttl": 60}"#,
            r#"{"op": "incr", "key": "a", "content_type": null}"#,
            r#"{"op": "get", "key": "a", "by": 1}"#,
            r#"{"op": "put", "key": "a", "key": "b", "value": "x"}"#,
            r#"{"op": "put", "op": "put", "key": "a", "value": "x"}"#,
            r#"{"op": "put", "key": "a", "value": "x", "version": 1}"#,
            r#"["put", "a", "x"]"#,
            r#"["get", "a"]"#,
        ] {
            assert_eq!(in_one_pass(text), None, "{text}");
        }
    }

    #[test]
    fn a_body_of_more_ops_than_a_transaction_holds_is_read_carefully() {
        let body = |ops: usize| {
            let op = r#"{"op": "get", "key": "a"}"#;
            format!(r#"{{"ops": [{}]}}"#, vec![op; ops].join(", "))
        };
        let ops = |text: &str| {
            let body: TxnBody = serde_json::from_str(text).ok()?;
            Some(body.shaped()?.1.len())
        };
        assert_eq!(ops(&body(MAX_TXN_ITEMS)), Some(MAX_TXN_ITEMS));
        assert_eq!(ops(&body(MAX_TXN_ITEMS + 1)), None);
        assert_eq!(ops(&body(0)), Some(0));
        assert_eq!(ops("{}"), Some(0));
    }

    #[test]
    fn a_put_value_is_its_string_text_or_the_json_text_sent() {
        let value = |text: &str| {
            let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
            let (bytes, content_type) = put_value(Some(&raw), None).unwrap();
            (String::from_utf8(bytes.to_vec()).unwrap(), content_type)
        };
        let text = "text/plain; charset=utf-8";
        assert_eq!(value(r#""plain""#), ("plain".to_owned(), text));
        assert_eq!(value(r#""""#), (String::new(), text));
        assert_eq!(value(r#""a\"b\u00e9""#), ("a\"bé".to_owned(), text));
        assert_eq!(value(r#""\\""#), ("\\".to_owned(), text));
        let json = "application/json";
        assert_eq!(value("null"), ("null".to_owned(), json));
        assert_eq!(
            value(r#"{"a": "\"x\""}"#),
            (r#"{"a": "\"x\""}"#.to_owned(), json)
        );
        assert_eq!(value("-0"), ("-0".to_owned(), json));
        // A string with no text (a lone surrogate) is refused, not stored
        // as JSON.
        for lone in [r#""\ud800""#, r#""a\udc00""#] {
            let raw: Box<RawValue> = serde_json::from_str(lone).unwrap();
            assert!(put_value(Some(&raw), None).is_err(), "{lone}");
        }
        assert_eq!(value(r#""\ud83d\ude00""#), ("😀".to_owned(), text));
    }
}
