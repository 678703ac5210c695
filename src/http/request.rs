//! Reading what a request carries: its query, and a JSON body under the
//! contract's rules (JSON or no content type, else 415; a size limit, else
//! 413; malformed or unknown fields, 400).

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::views::is_json_type;

/// The most a JSON body of the management routes may hold.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// Query parameters, decoded, in order.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// The parameters of a query string; 400 `bad_request` when one does
    /// not percent-decode to UTF-8 (as a key in a path gets `invalid_key`).
    pub fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        decode_pairs(query.unwrap_or("").as_bytes(), "query parameter").map(Query)
    }

    /// Every parameter, in order (names may repeat).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of a parameter that takes one. Given twice with different
    /// values it is 400, not the first or the last: `?prefix=a&prefix=b`
    /// on a delete must not guess which keys to remove.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next();
        if let Some(first) = first
            && values.any(|other| other != first)
        {
            return Err(ApiError::bad_request(format!(
                "{name} is given more than once, with different values"
            )));
        }
        Ok(first.map(String::as_str))
    }

    /// A boolean flag: `true`/`1` or `false`/`0`; absent is false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name)? {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(_) => Err(ApiError::bad_request(format!(
                "{name} must be true or false (or 1 or 0)"
            ))),
        }
    }
}

/// What [`decode_pairs`] calls the pairs of a form body.
pub const FORM_FIELD: &str = "form field";

/// The pairs of `application/x-www-form-urlencoded` text (a query string
/// or a form body), decoded strictly: `+` is a space, and a name or value
/// whose percent-decoded bytes are not UTF-8 is refused with 400
/// `bad_request` (never decoded with replacement characters, which would
/// turn different bytes into the same key). `what` names the pairs in the
/// message ("query parameter", "form field"). The message names the pair
/// by its place, or by its name for a form field (a form's names are keys),
/// and never repeats a value: a value may be a secret (`auth=`), and so
/// may a query parameter's name, pasted in the wrong place.
pub fn decode_pairs(text: &[u8], what: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |part: &[u8]| -> Option<String> {
        let spaced: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        String::from_utf8(bytes).ok()
    };
    text.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .enumerate()
        .map(|(index, pair)| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            let name = decode(name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the name of {what} {} does not percent-decode to UTF-8",
                    index + 1
                ))
            })?;
            let value = decode(value).ok_or_else(|| {
                ApiError::bad_request(if what == FORM_FIELD {
                    format!("the value of {what} {name:?} does not percent-decode to UTF-8")
                } else {
                    format!(
                        "the value of {what} {} does not percent-decode to UTF-8",
                        index + 1
                    )
                })
            })?;
            Ok((name, value))
        })
        .collect()
}

/// The body, refused with 413 beyond `limit` bytes (early, from
/// `Content-Length`, when the client sent one).
/// `raise` says how to raise the limit (an `error::RAISE_*` text).
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    raise: &str,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::payload_too_large(limit, raise));
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, cap).await.map_err(|error| {
        if caused_by::<http_body_util::LengthLimitError>(&error) {
            ApiError::payload_too_large(limit, raise)
        } else if caused_by::<super::BodyTimeout>(&error) {
            ApiError::request_timeout()
        } else {
            ApiError::bad_request("the request body could not be read")
        }
    })
}

/// Whether `error` is, or was caused by, an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<E>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// 415 unless the request's `Content-Type`, if it has one, is JSON's.
fn require_json_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        Some(content_type) if !is_json_type(content_type.to_str().unwrap_or("")) => {
            Err(ApiError::unsupported_media_type())
        }
        _ => Ok(()),
    }
}

/// A JSON body of type `T`. An empty body is `{}`.
pub async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    require_json_type(headers)?;
    read_json(headers, body, true).await
}

/// The bytes of a body of JSON type (or without a `Content-Type`) under
/// `limit`, for a handler that reads them its own way (`raise` names the
/// setting that raises the limit, as [`read_body`] says).
pub async fn json_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    raise: &str,
) -> Result<Bytes, ApiError> {
    require_json_type(headers)?;
    read_body(headers, body, limit, raise).await
}

/// A JSON body whatever its `Content-Type` says, or without one: how
/// Simple-PyKV's routes read theirs (curl's `-d` sends
/// `application/x-www-form-urlencoded`). An empty body is not JSON: 400, as
/// routes.md answers it.
pub async fn json_of_any_type<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    read_json(headers, body, false).await
}

/// A JSON body; an empty one (or one of only whitespace) is `{}` if
/// `empty_is_object`.
async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    empty_is_object: bool,
) -> Result<T, ApiError> {
    let bytes = read_body(
        headers,
        body,
        MAX_JSON_BODY as u64,
        super::error::RAISE_NONE,
    )
    .await?;
    let bytes = if empty_is_object && bytes.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_json("the JSON body is not valid", &error))
}
