//! How resources look in JSON answers. Only this module (with the handlers'
//! small bodies) decides field names, so the shapes match the contract in
//! one place.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::{TokenRecord, TokenSecret};
use crate::store::{KeyMeta, Project};

pub fn project(project: &Project) -> Value {
    let settings = &project.settings;
    json!({
        "id": settings.id.as_str(),
        "storage": settings.storage.as_str(),
        "keys_discoverable": settings.keys_discoverable,
        "max_value_bytes": settings.max_value_bytes,
        "max_keys": settings.max_keys,
        "created_at": settings.created_at.rfc3339(),
        "revision": project.stats.revision(),
        "keys": project.stats.keys(),
        "bytes": project.stats.bytes(),
    })
}

/// A Token: never the secret.
pub fn token(token: &TokenRecord) -> Value {
    json!({
        "id": token.id.as_str(),
        "role": token.role.as_str(),
        "project": token.project.as_ref().map(|p| p.as_str()),
        "prefix": token.prefix,
        "name": token.name,
        "created_at": token.created_at.rfc3339(),
        "expires_at": token.expires_at.map(|t| t.rfc3339()),
        "source": token.source.as_str(),
    })
}

/// A NewToken: the Token plus its secret, shown this once.
pub fn new_token(record: &TokenRecord, secret: &TokenSecret) -> Value {
    let mut view = token(record);
    view["secret"] = Value::String(secret.expose().to_owned());
    view
}

pub fn key_meta(meta: &KeyMeta) -> Value {
    json!({
        "key": meta.key.as_str(),
        "version": meta.version,
        "created_at": meta.created_at.rfc3339(),
        "updated_at": meta.updated_at.rfc3339(),
        "expires_at": meta.expires_at.map(|t| t.rfc3339()),
        "size": meta.size,
        "content_type": meta.content_type,
    })
}

/// KeyMeta plus `value` and `encoding`.
pub fn key_with_value(meta: &KeyMeta, value: &[u8]) -> Value {
    let mut view = key_meta(meta);
    let (value, encoding) = encode_value(value, &meta.content_type);
    view["value"] = value;
    view["encoding"] = Value::String(encoding.to_owned());
    view
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
