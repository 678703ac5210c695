//! How resources look in JSON answers. Only this module (with the handlers'
//! small bodies) decides field names, so the shapes match the contract in
//! one place.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::openapi;
use crate::domain::{TokenRecord, TokenSecret};
use crate::store::{KeyMeta, Project};

/// A Project as answers show it.
#[derive(Serialize, ToSchema)]
#[schema(as = Project)]
pub struct ProjectView<'a> {
    id: &'a str,
    #[schema(value_type = openapi::Storage)]
    storage: &'a str,
    keys_discoverable: bool,
    max_value_bytes: u64,
    /// `null`: no limit.
    #[schema(required = true)]
    max_keys: Option<u64>,
    /// What requests without any credential may do with its keys.
    #[schema(value_type = openapi::Public)]
    public: &'a str,
    #[schema(value_type = openapi::Time)]
    created_at: String,
    /// The last revision that wrote in the project.
    revision: u64,
    keys: u64,
    bytes: u64,
}

pub fn project(project: &Project) -> Value {
    let settings = &project.settings;
    json!(ProjectView {
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
    })
}

/// A Token: never the secret.
#[derive(Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenView<'a> {
    id: &'a str,
    #[schema(value_type = openapi::Role)]
    role: &'a str,
    /// `null` for an admin token.
    #[schema(required = true)]
    project: Option<&'a str>,
    #[schema(required = true)]
    prefix: Option<&'a str>,
    #[schema(required = true)]
    name: Option<&'a str>,
    #[schema(value_type = openapi::Time)]
    created_at: String,
    #[schema(value_type = Option<openapi::Time>, required = true)]
    expires_at: Option<String>,
    #[schema(value_type = openapi::TokenSource)]
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

fn token_view(token: &TokenRecord) -> TokenView<'_> {
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

pub fn token(token: &TokenRecord) -> Value {
    json!(token_view(token))
}

pub fn new_token(record: &TokenRecord, secret: &TokenSecret) -> Value {
    json!(NewTokenView {
        token: token_view(record),
        secret: secret.expose(),
    })
}

/// KeyMeta: what is known of a key besides its value.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyMeta)]
pub struct KeyMetaView<'a> {
    key: &'a str,
    /// The revision that last wrote the key (its ETag is `"<version>"`).
    version: u64,
    #[schema(value_type = openapi::Time)]
    created_at: String,
    #[schema(value_type = openapi::Time)]
    updated_at: String,
    #[schema(value_type = Option<openapi::Time>, required = true)]
    expires_at: Option<String>,
    /// The value's length in bytes.
    size: u64,
    content_type: &'a str,
}

fn meta_view(meta: &KeyMeta) -> KeyMetaView<'_> {
    KeyMetaView {
        key: meta.key.as_str(),
        version: meta.version,
        created_at: meta.created_at.rfc3339(),
        updated_at: meta.updated_at.rfc3339(),
        expires_at: meta.expires_at.map(|t| t.rfc3339()),
        size: meta.size,
        content_type: &meta.content_type,
    }
}

pub fn key_meta(meta: &KeyMeta) -> Value {
    json!(meta_view(meta))
}

/// KeyMeta plus the value, encoded as `encoding` says.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyWithValue)]
pub struct KeyWithValueView<'a> {
    #[serde(flatten)]
    meta: KeyMetaView<'a>,
    /// The value inline for `json`, a string for `utf8` and `base64`.
    value: Value,
    #[schema(value_type = openapi::Encoding)]
    encoding: &'static str,
}

pub fn key_with_value(meta: &KeyMeta, value: &[u8]) -> Value {
    let (value, encoding) = encode_value(value, &meta.content_type);
    json!(KeyWithValueView {
        meta: meta_view(meta),
        value,
        encoding,
    })
}

/// KeyMeta plus a counter's value (incr's answer).
#[derive(Serialize, ToSchema)]
#[schema(as = Counter)]
pub struct CounterView<'a> {
    #[serde(flatten)]
    meta: KeyMetaView<'a>,
    value: i64,
}

pub fn counter(meta: &KeyMeta, value: i64) -> Value {
    json!(CounterView {
        meta: meta_view(meta),
        value,
    })
}

/// `json` when the content type is JSON and the bytes are strict JSON,
/// else `utf8` for valid UTF-8, else `base64`.
pub fn encode_value(bytes: &[u8], content_type: &str) -> (Value, &'static str) {
    let encoded = Encoded::of(bytes, content_type);
    let name = encoded.name();
    let value = match encoded {
        Encoded::Json(value) => value,
        Encoded::Text(text) => Value::String(text.to_owned()),
        Encoded::Base64(text) => Value::String(text),
    };
    (value, name)
}

/// A value as JSON answers carry it, borrowing the stored text when it can
/// (for answers serialised straight from a struct).
#[derive(Serialize)]
#[serde(untagged)]
pub enum Encoded<'a> {
    Json(Value),
    Text(&'a str),
    Base64(String),
}

impl Encoded<'_> {
    pub fn of<'a>(bytes: &'a [u8], content_type: &str) -> Encoded<'a> {
        if is_json_type(content_type)
            && let Ok(value) = serde_json::from_slice::<Value>(bytes)
        {
            return Encoded::Json(value);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Encoded::Text(text),
            Err(_) => Encoded::Base64(STANDARD.encode(bytes)),
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

/// `application/json` or any `…+json`, parameters ignored.
pub fn is_json_type(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or("").trim();
    base.eq_ignore_ascii_case("application/json") || base.to_ascii_lowercase().ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_by_content_type_and_bytes() {
        assert_eq!(
            encode_value(b"[1]", "application/json"),
            (json!([1]), "json")
        );
        assert_eq!(
            encode_value(b"{}", "application/vnd.x+json; v=2"),
            (json!({}), "json")
        );
        assert_eq!(encode_value(b"[1]", "text/plain").1, "utf8");
        assert_eq!(encode_value(b"{\"x\": NaN}", "application/json").1, "utf8");
        assert_eq!(encode_value(b"[Infinity]", "application/json").1, "utf8");
        assert_eq!(
            encode_value(b"\xff{}", "application/json"),
            (json!("/3t9"), "base64")
        );
    }
}
