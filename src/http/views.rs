//! How resources look in JSON answers, and the OpenAPI schemas of them.
//! Every JSON answer a v1 handler sends is one of the types here (or the
//! error body in `error.rs`), derived with `ToSchema`, so the document
//! (`openapi.rs`) describes what is sent and cannot drift from it. Only this
//! module decides field names, so the shapes match the contract in one place.
//!
//! A stored JSON value is inlined as its stored text ([`Encoded::Json`]
//! holds a [`RawValue`]), never through `serde_json::Value`: numbers keep
//! their digits and objects their key order.

use std::borrow::Cow;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{KnownFormat, RefOr, Schema, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{RFC3339_LEN, Timestamp, TokenRecord, TokenSecret};
use crate::store::{KeyMeta, OpResult, Project};

// ======================================================= value types

/// Where a project keeps its keys.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // the schema of the `storage` strings views send
pub enum Storage {
    Disk,
    Memory,
}

/// What requests without any credential may do with a project's keys:
/// nothing, read them (as a `read` token), or read and write them (as a
/// `write` token). Set by an admin only.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Public {
    None,
    Read,
    Write,
}

/// A token's role.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // the schema of the `role` strings views send
pub enum Role {
    Read,
    Write,
    Manage,
    Admin,
}

/// How a token came to be.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)] // the schema of the `source` strings views send
pub enum TokenSource {
    V1,
    SimplePykv,
    Import,
    Env,
    Bootstrap,
}

/// How a value is written in a JSON answer.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // the schema of the `encoding` strings views send
pub enum Encoding {
    Json,
    Utf8,
    Base64,
}

/// An RFC 3339 UTC time with milliseconds, `2026-11-21T10:00:00.123Z`.
pub struct Time;

impl PartialSchema for Time {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

impl ToSchema for Time {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Time")
    }
}

/// A [`Time`] as it is sent: written into a buffer on the stack when it is
/// serialized, not built as a `String` first (KeyMeta has two or three, and
/// a transaction's answer holds one KeyMeta per op).
#[derive(Clone, Copy)]
pub struct TimeText(Timestamp);

impl Serialize for TimeText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = [0; RFC3339_LEN];
        match self.0.write_rfc3339(&mut text) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.serialize_str(&self.0.rfc3339()),
        }
    }
}

/// A duration: whole seconds, or a number with a unit `s`, `m`, `h`, `d`.
pub struct Duration;

impl PartialSchema for Duration {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+[smhd]?$")),
            )
            .description(Some(
                "Whole seconds, or a number with a unit s, m, h, d: 90, \"90s\", \"10m\", \"30d\"; \
                 at most 3650 days",
            ))
            .into()
    }
}

impl ToSchema for Duration {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Duration")
    }
}

// ============================================================ system

/// `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// `/v1/status`: the server's figures and limits.
#[derive(Serialize, ToSchema)]
pub struct ServerStatus<'a> {
    pub version: &'static str,
    pub uptime_seconds: f64,
    pub revision: u64,
    pub projects: u64,
    pub keys: u64,
    pub storage_bytes: u64,
    pub memory_bytes: u64,
    /// Projects open to requests without any credential: id → `read` or
    /// `write`.
    #[schema(value_type = std::collections::BTreeMap<String, Public>)]
    pub public_projects: std::collections::BTreeMap<&'a str, &'static str>,
    /// Whether Simple-PyKV's admin routes answer requests without any
    /// credential (`simple_pykv_open_admin`).
    pub simple_pykv_open_admin: bool,
    pub limits: Limits,
}

/// The limits in force (`kvs serve --help` names their settings).
#[derive(Serialize, ToSchema)]
pub struct Limits {
    pub max_value_bytes: u64,
    pub max_txn_bytes: u64,
    pub max_json_body_bytes: u64,
    pub max_key_bytes: u64,
    pub max_list_limit: u64,
    /// Requests per second and token; 0: no limit.
    pub rate_limit_per_token: u64,
    /// Requests per second and address; 0: no limit.
    pub rate_limit_per_ip: u64,
    pub auth_failures_per_minute: u64,
    pub max_connections: u64,
    pub max_connections_per_ip: u64,
    pub max_watchers_per_token: u64,
    pub header_timeout_seconds: u64,
    pub body_timeout_seconds: u64,
    /// A write to a client that makes no progress for this long ends its
    /// connection (`write_timeout`).
    pub write_timeout_seconds: u64,
    pub max_header_bytes: u64,
}

// ========================================================= projects

/// A Project as answers show it.
#[derive(Serialize, ToSchema)]
#[schema(as = Project)]
pub struct ProjectView<'a> {
    id: &'a str,
    #[schema(value_type = Storage)]
    storage: &'a str,
    keys_discoverable: bool,
    max_value_bytes: u64,
    /// `null`: no limit.
    #[schema(required = true)]
    max_keys: Option<u64>,
    /// What requests without any credential may do with its keys.
    #[schema(value_type = Public)]
    public: &'a str,
    #[schema(value_type = Time)]
    created_at: String,
    /// The last revision that wrote in the project.
    revision: u64,
    keys: u64,
    bytes: u64,
}

pub fn project_view(project: &Project) -> ProjectView<'_> {
    let settings = &project.settings;
    ProjectView {
        id: settings.id.as_str(),
        storage: settings.storage.as_str(),
        keys_discoverable: settings.keys_discoverable,
        max_value_bytes: settings.max_value_bytes,
        max_keys: settings.max_keys,
        public: settings.public.as_str(),
        created_at: settings.created_at.rfc3339(),
        revision: project.stats.revision(),
        keys: project.stats.keys(),
        bytes: project.stats.bytes(),
    }
}

/// A project as a JSON value, for the compatibility routes that reshape it.
pub fn project(project: &Project) -> Value {
    serde_json::to_value(project_view(project)).unwrap_or(Value::Null)
}

/// `GET /v1/projects`.
#[derive(Serialize, ToSchema)]
pub struct ProjectList<'a> {
    pub projects: Vec<ProjectView<'a>>,
}

/// A new project and its first token (`manage`, without prefix, shown once).
#[derive(Serialize, ToSchema)]
pub struct CreatedProject<'a> {
    pub project: ProjectView<'a>,
    pub token: NewTokenView<'a>,
}

// =========================================================== tokens

/// A Token: never the secret.
#[derive(Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenView<'a> {
    id: &'a str,
    #[schema(value_type = Role)]
    role: &'a str,
    /// `null` for an admin token.
    #[schema(required = true)]
    project: Option<&'a str>,
    #[schema(required = true)]
    prefix: Option<&'a str>,
    #[schema(required = true)]
    name: Option<&'a str>,
    #[schema(value_type = Time)]
    created_at: String,
    #[schema(value_type = Option<Time>, required = true)]
    expires_at: Option<String>,
    #[schema(value_type = TokenSource)]
    source: &'a str,
}

/// A NewToken: the Token plus its secret, shown this once.
#[derive(Serialize, ToSchema)]
#[schema(as = NewToken)]
pub struct NewTokenView<'a> {
    #[serde(flatten)]
    token: TokenView<'a>,
    /// `kvs_` and 43 base64url characters.
    secret: &'a str,
}

/// A minted token: a NewToken; for an imported one (`imported_digest`),
/// the Token without `secret`.
#[derive(Serialize, ToSchema)]
pub struct MintedToken<'a> {
    #[serde(flatten)]
    token: TokenView<'a>,
    /// `kvs_` and 43 base64url characters, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
}

/// `GET …/tokens`.
#[derive(Serialize, ToSchema)]
pub struct TokenList<'a> {
    pub tokens: Vec<TokenView<'a>>,
}

pub fn token(token: &TokenRecord) -> TokenView<'_> {
    TokenView {
        id: token.id.as_str(),
        role: token.role.as_str(),
        project: token.project.as_ref().map(|p| p.as_str()),
        prefix: token.prefix.as_deref(),
        name: token.name.as_deref(),
        created_at: token.created_at.rfc3339(),
        expires_at: token.expires_at.map(|t| t.rfc3339()),
        source: token.source.as_str(),
    }
}

pub fn new_token<'a>(record: &'a TokenRecord, secret: &'a TokenSecret) -> NewTokenView<'a> {
    NewTokenView {
        token: token(record),
        secret: secret.expose(),
    }
}

pub fn minted<'a>(record: &'a TokenRecord, secret: Option<&'a TokenSecret>) -> MintedToken<'a> {
    MintedToken {
        token: token(record),
        secret: secret.map(TokenSecret::expose),
    }
}

// ============================================================= keys

/// KeyMeta: what is known of a key besides its value.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyMeta)]
pub struct KeyMetaView<'a> {
    key: &'a str,
    /// The revision that last wrote the key (its ETag is `"<version>"`).
    version: u64,
    #[schema(value_type = Time)]
    created_at: TimeText,
    #[schema(value_type = Time)]
    updated_at: TimeText,
    #[schema(value_type = Option<Time>, required = true)]
    expires_at: Option<TimeText>,
    /// The value's length in bytes.
    size: u64,
    content_type: &'a str,
}

pub fn key_meta(meta: &KeyMeta) -> KeyMetaView<'_> {
    KeyMetaView {
        key: meta.key.as_str(),
        version: meta.version,
        created_at: TimeText(meta.created_at),
        updated_at: TimeText(meta.updated_at),
        expires_at: meta.expires_at.map(TimeText),
        size: meta.size,
        content_type: &meta.content_type,
    }
}

/// KeyMeta plus the value, encoded as `encoding` says.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyWithValue)]
pub struct KeyWithValueView<'a> {
    #[serde(flatten)]
    meta: KeyMetaView<'a>,
    /// The value inline for `json` (its stored text), a string for `utf8`
    /// and `base64`.
    #[schema(value_type = Value)]
    value: Encoded<'a>,
    #[schema(value_type = Encoding)]
    encoding: &'static str,
}

pub fn key_with_value<'a>(meta: &'a KeyMeta, value: &'a [u8]) -> KeyWithValueView<'a> {
    let value = Encoded::of(value, &meta.content_type);
    KeyWithValueView {
        meta: key_meta(meta),
        encoding: value.name(),
        value,
    }
}

/// A key in a listing: KeyMeta, plus `value` and `encoding` with
/// `values=true`.
#[derive(Serialize, ToSchema)]
#[schema(as = ListedKey)]
pub struct ListedKeyView<'a> {
    #[serde(flatten)]
    meta: KeyMetaView<'a>,
    /// With `values=true`: as in KeyWithValue.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value, required = false)]
    value: Option<Encoded<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Encoding, required = false)]
    encoding: Option<&'static str>,
}

pub fn listed_key<'a>(meta: &'a KeyMeta, value: Option<&'a [u8]>) -> ListedKeyView<'a> {
    let value = value.map(|bytes| Encoded::of(bytes, &meta.content_type));
    ListedKeyView {
        meta: key_meta(meta),
        encoding: value.as_ref().map(Encoded::name),
        value,
    }
}

/// A listing page: KeyMeta, with `value` and `encoding` with `values=true`.
#[derive(Serialize, ToSchema)]
pub struct Listing<'a> {
    pub keys: Vec<ListedKeyView<'a>>,
    /// Pass to `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub cursor: Option<String>,
    pub revision: u64,
}

/// What a delete by prefix removed, at which revision.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: u64,
    pub revision: u64,
}

/// KeyMeta plus a counter's value (incr's answer).
#[derive(Serialize, ToSchema)]
#[schema(as = Counter)]
pub struct CounterView<'a> {
    #[serde(flatten)]
    meta: KeyMetaView<'a>,
    value: i64,
}

pub fn counter(meta: &KeyMeta, value: i64) -> CounterView<'_> {
    CounterView {
        meta: key_meta(meta),
        value,
    }
}

// ============================================================== txn

/// The `op` of a put (and of its result).
#[derive(Serialize, serde::Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum PutOp {
    Put,
}

/// The `op` of a delete (and of its result).
#[derive(Serialize, serde::Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum DeleteOp {
    Delete,
}

/// The `op` of a get (and of its result).
#[derive(Serialize, serde::Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum GetOp {
    Get,
}

/// The `op` of an incr (and of its result).
#[derive(Serialize, serde::Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum IncrOp {
    Incr,
}

/// A transaction's answer: one result per op, in order.
#[derive(Serialize, ToSchema)]
pub struct TxnAnswer<'a> {
    pub revision: u64,
    /// `null` for a `get` of an absent key.
    pub results: Vec<Option<TxnResult<'a>>>,
}

/// An op's result, told apart by `op`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "op", mapping(
    ("put" = "#/components/schemas/TxnPutResult"),
    ("delete" = "#/components/schemas/TxnDeleteResult"),
    ("get" = "#/components/schemas/TxnGetResult"),
    ("incr" = "#/components/schemas/TxnIncrResult"),
)))]
pub enum TxnResult<'a> {
    Put(TxnPutResult<'a>),
    Delete(TxnDeleteResult),
    Get(TxnGetResult<'a>),
    Incr(TxnIncrResult<'a>),
}

/// A put's result: KeyMeta.
#[derive(Serialize, ToSchema)]
pub struct TxnPutResult<'a> {
    op: PutOp,
    #[serde(flatten)]
    meta: KeyMetaView<'a>,
}

/// A delete's result: whether the key was there.
#[derive(Serialize, ToSchema)]
pub struct TxnDeleteResult {
    op: DeleteOp,
    deleted: bool,
}

/// A get's result (of a key that exists): KeyWithValue.
#[derive(Serialize, ToSchema)]
pub struct TxnGetResult<'a> {
    op: GetOp,
    #[serde(flatten)]
    key: KeyWithValueView<'a>,
}

/// An incr's result: Counter.
#[derive(Serialize, ToSchema)]
pub struct TxnIncrResult<'a> {
    op: IncrOp,
    #[serde(flatten)]
    counter: CounterView<'a>,
}

/// An op's result as a transaction answers it (`None`: a get of an absent
/// key, `null`).
pub fn txn_result(result: &OpResult) -> Option<TxnResult<'_>> {
    Some(match result {
        OpResult::Put { meta, .. } => TxnResult::Put(TxnPutResult {
            op: PutOp::Put,
            meta: key_meta(meta),
        }),
        OpResult::Delete { deleted } => TxnResult::Delete(TxnDeleteResult {
            op: DeleteOp::Delete,
            deleted: *deleted,
        }),
        OpResult::DeletePrefix { deleted } => TxnResult::Delete(TxnDeleteResult {
            op: DeleteOp::Delete,
            deleted: *deleted > 0,
        }),
        OpResult::Get(None) => return None,
        OpResult::Get(Some(entry)) => TxnResult::Get(TxnGetResult {
            op: GetOp::Get,
            key: key_with_value(&entry.meta, &entry.value),
        }),
        OpResult::Incr { meta, value } => TxnResult::Incr(TxnIncrResult {
            op: IncrOp::Incr,
            counter: counter(meta, *value),
        }),
    })
}

/// An import's answer.
#[derive(Serialize, ToSchema)]
pub struct Imported {
    pub imported: u64,
    pub revision: u64,
}

// ========================================================= encoding

/// A value as JSON answers carry it, borrowing the stored bytes: a JSON
/// value as its stored text (checked to be strict JSON, written as it is),
/// text as a string, anything else as base64, written straight into the
/// answer (a listing page of binary values holds no second, base64 copy).
pub enum Encoded<'a> {
    Json(&'a RawValue),
    Text(&'a str),
    Base64(&'a [u8]),
}

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Encoded::Json(raw) => raw.serialize(serializer),
            Encoded::Text(text) => serializer.serialize_str(text),
            Encoded::Base64(bytes) => serializer.collect_str(&Base64Display::new(bytes, &STANDARD)),
        }
    }
}

impl Encoded<'_> {
    /// `json` when the content type is JSON and the bytes are strict JSON,
    /// else `utf8` for valid UTF-8, else `base64`.
    pub fn of<'a>(bytes: &'a [u8], content_type: &str) -> Encoded<'a> {
        if is_json_type(content_type)
            && let Some(raw) = strict_json(bytes)
        {
            return Encoded::Json(raw);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Encoded::Text(text),
            Err(_) => Encoded::Base64(bytes),
        }
    }

    /// The name of the encoding: `json`, `utf8` or `base64`.
    pub fn name(&self) -> &'static str {
        match self {
            Encoded::Json(_) => "json",
            Encoded::Text(_) => "utf8",
            Encoded::Base64(_) => "base64",
        }
    }
}

/// The JSON text of `bytes` (without the whitespace around it) if they are
/// one strict JSON value: no NaN or Infinity, valid UTF-8, nothing after it;
/// and one that common parsers read, kvs's own client among them: no number
/// beyond a double's range (`1e400` would be Infinity), no lone surrogate
/// escape, at most 128 levels deep. Other bytes are shown as text.
fn strict_json(bytes: &[u8]) -> Option<&RawValue> {
    let raw = serde_json::from_slice::<&RawValue>(bytes).ok()?;
    // (A parse checks what skipping over the text does not, and builds
    // nothing: a tree of a large value would cost many times its size.)
    serde_json::from_str::<Readable>(raw.get()).ok()?;
    Some(raw)
}

/// Whether `bytes` are JSON that [`Encoded::of`] shows as JSON (one pass:
/// no raw text is wanted here).
pub fn is_readable_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Readable>(bytes).is_ok()
}

/// A JSON value read through and kept nowhere: its numbers within a
/// double's range, its strings Unicode, its depth within serde_json's 128.
struct Readable;

impl<'de> serde::Deserialize<'de> for Readable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Readable, D::Error> {
        deserializer.deserialize_any(ReadableVisitor)
    }
}

struct ReadableVisitor;

impl<'de> serde::de::Visitor<'de> for ReadableVisitor {
    type Value = Readable;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_str<E>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_unit<E>(self) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Readable, A::Error> {
        while map.next_entry::<Readable, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

/// `application/json` or any `…+json`, parameters ignored.
pub fn is_json_type(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or("").trim();
    base.eq_ignore_ascii_case("application/json") || base.to_ascii_lowercase().ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a strict parser refuses is not shown as JSON: a value whose
    /// listing or export kvs's own client could not read.
    #[test]
    fn json_that_common_parsers_refuse_is_shown_as_text() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for refused in [
            "1e400",
            "-1e400",
            "\"\\ud800\"",
            "[\"a\\udc00b\"]",
            deep.as_str(),
        ] {
            assert_eq!(
                Encoded::of(refused.as_bytes(), "application/json").name(),
                "utf8",
                "{refused}"
            );
        }
        for kept in [
            "123456789012345678901234567890",
            "1e300",
            "\"\\ud83d\\ude00\"",
            "[[[1]]]",
        ] {
            assert_eq!(
                Encoded::of(kept.as_bytes(), "application/json").name(),
                "json",
                "{kept}"
            );
        }
    }

    fn encoded(bytes: &[u8], content_type: &str) -> (String, &'static str) {
        let encoded = Encoded::of(bytes, content_type);
        (serde_json::to_string(&encoded).unwrap(), encoded.name())
    }

    #[test]
    fn values_are_encoded_by_content_type_and_bytes() {
        assert_eq!(encoded(b"[1]", "application/json"), ("[1]".into(), "json"));
        assert_eq!(
            encoded(b"{}", "application/vnd.x+json; v=2"),
            ("{}".into(), "json")
        );
        assert_eq!(encoded(b"[1]", "text/plain").1, "utf8");
        assert_eq!(encoded(b"{\"x\": NaN}", "application/json").1, "utf8");
        assert_eq!(encoded(b"[Infinity]", "application/json").1, "utf8");
        assert_eq!(encoded(b"[1] [2]", "application/json").1, "utf8");
        assert_eq!(
            encoded(b"\xff{}", "application/json"),
            ("\"/3t9\"".into(), "base64")
        );
    }

    /// A time is sent as `Timestamp::rfc3339` writes it, in the years it
    /// writes on the stack and outside them (domain/time.rs checks the text
    /// itself over many times).
    #[test]
    fn times_are_written_as_timestamp_formats_them() {
        for millis in [
            0,
            951_782_400_000,     // 2000-02-29
            -62_167_219_200_001, // the millisecond before the year 0
            253_402_300_800_000, // 10000-01-01
            i64::MIN,
        ] {
            let time = Timestamp::from_millis(millis);
            assert_eq!(
                serde_json::to_string(&TimeText(time)).unwrap(),
                format!("\"{}\"", time.rfc3339()),
                "{millis}"
            );
        }
    }

    #[test]
    fn json_values_are_written_as_their_stored_text() {
        for text in [
            "{\"n\":123456789012345678901234567890}",
            "{\"b\":1,\"a\":2}",
            "-0",
            "1E2",
            "{\"a\": [1.50, 2e-3]}",
        ] {
            assert_eq!(encoded(text.as_bytes(), "application/json").0, text);
        }
        assert_eq!(encoded(b" \n[1]\n", "application/json").0, "[1]");
    }
}
