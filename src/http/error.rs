//! The one error type that handlers return. Each has an HTTP status and a
//! stable snake_case `code`, and answers with the contract's error body
//! `{"error": {"code", "message"}}`. A 500 never shows internals: the detail
//! goes to the log, the client gets a fixed text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::KeyError;
use crate::store::StoreError;

#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Extra headers the answer must carry (`Allow`, `ETag`, …).
    headers: Vec<(header::HeaderName, String)>,
    /// Top-level fields beside `error` (`failed_op`, `failed_checks`, …).
    /// Boxed: errors travel in every `Result`, and these fields are rare.
    extra: Box<ErrorExtra>,
}

/// The error body of every error: this is what [`ApiError`] answers.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
    #[serde(flatten)]
    extra: &'a ErrorExtra,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// A stable snake_case code: `bad_request`, `invalid_key`, `unauthorized`, …
    code: &'a str,
    /// Text for people; it never shows internals.
    message: &'a str,
}

/// The fields an error may carry beside `error`.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ErrorExtra {
    /// A transaction's op that failed (its index).
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_op: Option<usize>,
    /// Every failing check of a transaction (412).
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_checks: Option<Vec<usize>>,
    /// The index of the key an import refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_key: Option<usize>,
    /// With `history_compacted` (410): the oldest revision still kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    compact_revision: Option<u64>,
}

/// How to raise a value's limit (a project's `max_value_bytes`).
pub const RAISE_VALUE: &str = "a project's limit is its max_value_bytes (an admin token raises it: \
     PATCH /v1/projects/{id} {\"max_value_bytes\": N}), \
     up to the server's max_value_bytes (kvs serve --max-value-bytes, default 64 MiB)";
/// How to raise the limit of a transaction or form body.
pub const RAISE_TXN: &str =
    "the server's max_txn_bytes raises it (kvs serve --max-txn-bytes, default 4 MiB)";
/// The management routes' JSON bodies have a fixed limit.
pub const RAISE_NONE: &str = "this route's bodies have a fixed limit";
/// How to raise the limit of an import body.
pub const RAISE_IMPORT: &str = "the server's max_txn_bytes and max_value_bytes raise it \
     (kvs import sends a large export in several requests)";

/// `1048576` as `1 MiB`, for messages.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            extra: Box::default(),
        }
    }

    /// The index of a transaction's op that failed, in the body.
    pub fn failed_op(mut self, index: usize) -> ApiError {
        self.extra.failed_op = Some(index);
        self
    }

    fn failed_checks(mut self, indices: Vec<usize>) -> ApiError {
        self.extra.failed_checks = Some(indices);
        self
    }

    fn compact_revision(mut self, revision: u64) -> ApiError {
        self.extra.compact_revision = Some(revision);
        self
    }

    /// The index of an imported key that was refused, in the body.
    pub fn failed_key(mut self, index: usize) -> ApiError {
        self.extra.failed_key = Some(index);
        self
    }

    /// An import's error as an import names it: the failed op (its key's
    /// index, as the store numbers an import's ops) is its `failed_key`.
    pub fn op_as_key(mut self) -> ApiError {
        if let Some(index) = self.extra.failed_op.take() {
            self.extra.failed_key = Some(index);
        }
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable text (for surfaces that answer in another shape).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The extra headers the answer must carry, whatever its body.
    pub fn headers(&self) -> &[(header::HeaderName, String)] {
        &self.headers
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 400 for a JSON body (or a part of one, named by `what`) that serde
    /// could not read. The message says what is wrong and where, without the
    /// text of the request that serde quotes: a field name, an enum's
    /// value or a string may be a secret pasted in the wrong place.
    pub fn bad_json(what: &str, error: &serde_json::Error) -> ApiError {
        ApiError::bad_request(format!("{what}: {}", unquoted(&error.to_string())))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required (Authorization: Bearer, X-API-Key or Api-Key)",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer")
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn project_not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "project_not_found",
            "no such project",
        )
    }

    pub fn key_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "key_not_found", "no such key")
    }

    pub fn token_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "token_not_found", "no such token")
    }

    pub fn method_not_allowed(allowed: &[&str]) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route answers {}", allowed.join(", ")),
        )
        .with_header(header::ALLOW, allowed.join(", "))
    }

    /// `413 payload_too_large`, saying what is too large.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// A body or value over `limit` bytes; `raise` says which setting
    /// raises that limit (one of the `RAISE_*` texts).
    pub fn payload_too_large(limit: u64, raise: &str) -> ApiError {
        ApiError::too_large(format!(
            "the body is larger than the limit of {limit} bytes ({}); {raise}",
            human_bytes(limit)
        ))
    }

    /// A value in a body (a transaction's put) over its project's limit:
    /// the value is too large, not the body.
    pub fn value_too_large(limit: u64) -> ApiError {
        ApiError::too_large(format!(
            "the value is larger than the limit of {limit} bytes ({}); {RAISE_VALUE}",
            human_bytes(limit)
        ))
    }

    /// A `since`, `after` or `Last-Event-ID` beyond the revision the server
    /// has reached: a client from another server (or a restore) that would
    /// otherwise wait in silence for a revision that may never come.
    pub fn revision_in_future(name: &str, asked: u64, reached: u64) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "revision_in_future",
            format!(
                "{name} {asked} is beyond the server's current revision {reached}; \
                 resume from a revision this server gave, or read the current state and watch again"
            ),
        )
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "this route takes a JSON body (Content-Type: application/json; with curl, use --json)",
        )
    }

    /// The client did not send its request's body in time.
    pub fn request_timeout() -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time (body_timeout)",
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to answer; see its log",
        )
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::ProjectNotFound => ApiError::project_not_found(),
            StoreError::ProjectExists => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the project already exists",
            ),
            StoreError::KeyNotFound => ApiError::key_not_found(),
            StoreError::TokenNotFound => ApiError::token_not_found(),
            StoreError::Unauthorized => ApiError::unauthorized(),
            StoreError::Forbidden(message) => ApiError::forbidden(message),
            StoreError::LastAdminToken => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the last admin token without an expiry cannot be deleted; create another without one first",
            ),
            StoreError::PreconditionFailed { current } => {
                let error = ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition_failed",
                    "the key's current version does not satisfy the precondition",
                );
                match current {
                    Some(version) => error.with_header(header::ETAG, format!("\"{version}\"")),
                    None => error,
                }
            }
            StoreError::ChecksFailed(indices) => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "checks of the transaction do not hold; nothing was applied",
            )
            .failed_checks(indices),
            StoreError::FailedOp { index, error } => ApiError::from(*error).failed_op(index),
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            StoreError::QuotaExceeded { max_keys } => ApiError::new(
                StatusCode::FORBIDDEN,
                "quota_exceeded",
                format!("the project holds its maximum of {max_keys} keys"),
            ),
            StoreError::ValueTooLarge { max } => ApiError::value_too_large(max),
            StoreError::AnswerTooLarge { limit } => ApiError::too_large(format!(
                "the values this transaction reads come to more than {limit} bytes ({}), \
                 which one answer does not hold; read the larger keys with GET",
                human_bytes(limit)
            )),
            StoreError::HistoryCompacted { compact_revision } => ApiError::new(
                StatusCode::GONE,
                "history_compacted",
                format!(
                    "changes up to revision {compact_revision} are no longer kept; \
                     resume from {compact_revision} or later, or read the current state"
                ),
            )
            .compact_revision(compact_revision),
            StoreError::StorageFull => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the disk is full; nothing was written",
            ),
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down",
            ),
            StoreError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                // The embedded store reopens after a failed write; a
                // cluster node cannot vouch for its view of etcd.
                "storage is unavailable for a moment (recovering from a failed write, \
                 or out of touch with the etcd cluster); try again",
            )
            .with_header(header::RETRY_AFTER, "1"),
            StoreError::OutcomeUnknown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the write was sent to the cluster and its outcome could not be learned; \
                 it may or may not have been applied: read the key before trying again",
            )
            .with_header(header::RETRY_AFTER, "1"),
            StoreError::ClusterLimit { limit } => ApiError::too_large(format!(
                "the write is larger than the etcd cluster accepts in one request \
                     ({limit} bytes, {}: etcd's --max-request-bytes; kvs's \
                     etcd_max_request_bytes must agree with it)",
                human_bytes(limit)
            )),
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "storage failure");
                ApiError::internal()
            }
            // The engine's own signal (see `StoreError::ReadLater`): one
            // that got this far is a bug of the engine, logged as such.
            StoreError::ReadLater(key) => {
                tracing::error!(%key, "a key read later escaped the engine's judge");
                ApiError::internal()
            }
            // Logged (with project and key) and counted where it was found.
            StoreError::DataCorrupted(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "data_corrupted",
                "a stored record is damaged; it was not served",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
            extra: &self.extra,
        };
        let mut response = super::json(self.status, body);
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// How serde quotes the request's text in its messages, and what stands
/// in for it here.
#[derive(Clone, Copy)]
enum Quote {
    /// "unknown field `…`, expected …": the name runs to serde's own
    /// continuation, the last in the message.
    Name(&'static str),
    /// "integer `12`", "character `x`": one quoted scalar, at least one
    /// character long.
    Scalar(&'static str),
    /// `string "…"`, quoted the way `{:?}` quotes (escaped `"` and `\`).
    Debug,
}

const QUOTES: [(&str, Quote); 6] = [
    ("unknown field `", Quote::Name("unknown field")),
    ("unknown variant `", Quote::Name("unknown variant")),
    ("integer `", Quote::Scalar("an integer")),
    ("floating point `", Quote::Scalar("a number")),
    ("character `", Quote::Scalar("a character")),
    ("string \"", Quote::Debug),
];

/// `message`, a serde error's text, without the request's text that it
/// quotes: an unknown field's or variant's name, and the string, number or
/// character given where another type was expected. What serde says was
/// expected, and where, stays.
fn unquoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let first = QUOTES
            .iter()
            .filter_map(|(opening, quote)| Some((rest.find(opening)?, opening.len(), *quote)))
            .min_by_key(|(at, _, _)| *at);
        let Some((at, opening, quote)) = first else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let quoted = &rest[at + opening..];
        let end = match quote {
            Quote::Name(stand_in) => {
                out.push_str(stand_in);
                // (The list of what serde expected holds no such text.)
                ["`, expected ", "`, there are no "]
                    .iter()
                    .filter_map(|close| quoted.rfind(close))
                    .max()
            }
            Quote::Scalar(stand_in) => {
                out.push_str(stand_in);
                let skip = quoted.chars().next().map_or(0, char::len_utf8);
                quoted[skip..].find('`').map(|end| skip + end)
            }
            Quote::Debug => {
                out.push_str("a string");
                let mut escaped = false;
                quoted.char_indices().find_map(|(i, c)| match c {
                    _ if escaped => {
                        escaped = false;
                        None
                    }
                    '\\' => {
                        escaped = true;
                        None
                    }
                    '"' => Some(i),
                    _ => None,
                })
            }
        };
        match end {
            Some(end) => rest = &quoted[end + 1..],
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
        let error = serde_json::from_str::<T>(json).unwrap_err();
        ApiError::bad_json("the body", &error).message().to_owned()
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        id: Option<String>,
        count: Option<u64>,
        role: Option<Role>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Role {
        Read,
    }

    #[test]
    fn serde_messages_keep_what_was_expected_and_where_but_not_the_request_text() {
        let cases = [
            (
                r#"{"se`, expected cret": 1}"#,
                "the body: unknown field, expected one of `id`, `count`, `role` at line 1 column 21",
            ),
            (
                r#"{"role": "se\"cr`et"}"#,
                "the body: unknown variant, expected `read` at line 1 column 20",
            ),
            (
                r#"{"count": "se\"cr\\et"}"#,
                "the body: invalid type: a string, expected u64 at line 1 column 22",
            ),
            (
                r#"{"id": 4111111111111111}"#,
                "the body: invalid type: an integer, expected a string at line 1 column 23",
            ),
            (
                r#"{"id": -1.5e3}"#,
                "the body: invalid type: a number, expected a string at line 1 column 13",
            ),
            (
                r#"{"id": "#,
                "the body: EOF while parsing a value at line 1 column 7",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(refusal::<Shape>(json), expected, "{json}");
        }
    }

    #[test]
    fn a_message_that_ends_inside_a_quote_is_cut_there() {
        assert_eq!(unquoted("unknown field `abc"), "unknown field");
        assert_eq!(
            unquoted("invalid value: string \"abc"),
            "invalid value: a string"
        );
        assert_eq!(unquoted("nothing quoted"), "nothing quoted");
        assert_eq!(
            unquoted("invalid type: character `\u{e9}`, expected x"),
            "invalid type: a character, expected x"
        );
        assert_eq!(
            unquoted("invalid type: character ```, expected x"),
            "invalid type: a character, expected x"
        );
        assert_eq!(unquoted("integer `"), "an integer");
    }
}
