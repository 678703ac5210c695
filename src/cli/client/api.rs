//! The HTTP side of the client: one blocking `ureq` agent, the server's base
//! URL and the caller's token. Every request goes through [`Api::send`], which
//! hands back a 2xx answer to be read and turns anything else into a
//! [`ClientError`]: a refusal read from the contract's error body, or a
//! server that cannot be reached. Paths are built here too, because the server
//! percent-decodes a key exactly once and so the client must encode it exactly
//! once.

use std::io;
use std::time::Duration;

use anyhow::anyhow;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rustls::CertificateError;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use ureq::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG};
use ureq::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};

use super::Secret;
use super::trust::{CaCerts, is_ca_used_as_end_entity};

/// How long to wait for a connection before calling the server unreachable
/// (less if the idle limit is shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a JSON answer may hold: a `get --meta` of a value at the server's
/// 64 MiB ceiling, base64-encoded, with room to spare.
const MAX_JSON_ANSWER: u64 = 256 << 20;

/// Everything outside RFC 3986's unreserved characters, for a path segment
/// or a query value (where `+` would otherwise read as a space).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The same with `/` kept: a key's slashes are part of it, and the server
/// takes everything after `/kv/` as the key.
const KEY: &AsciiSet = &SEGMENT.remove(b'/');

/// Why a command failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer at all: the server is not running, the URL is wrong, or the
    /// connection broke.
    #[error("cannot connect to {url} ({reason}); is `kvs serve` running there?")]
    Unreachable { url: String, reason: String },
    /// A connection on which the server sent nothing for the idle limit:
    /// no answer, or an answer that stopped coming.
    #[error(
        "no answer from the server at {url} for {} s: given up{}",
        .waited.as_secs_f64(),
        if *.settable { " (--timeout or KVS_TIMEOUT sets how long to wait; 0 for no limit)" } else { "" }
    )]
    Silent {
        url: String,
        waited: Duration,
        /// Whether `--timeout` sets the limit, and so the message names it.
        settable: bool,
    },
    /// A request that changes something was sent whole, and no answer came
    /// for the idle limit: it may have been applied.
    #[error(
        "no answer from the server at {url} for {} s after the request was sent: it may or may \
         not have been applied; read before trying again (an incr retried blindly may count \
         twice)",
        .waited.as_secs_f64()
    )]
    Unanswered { url: String, waited: Duration },
    /// The server answered with an error; `summary` is `code: message`, and
    /// `body` the error body, whose top-level fields (`failed_op`,
    /// `failed_checks`) a command may describe further.
    #[error("{summary}")]
    Refused {
        status: StatusCode,
        summary: String,
        body: Option<Value>,
    },
    /// `kvs verify` checked the store and found `items` damaged (printed
    /// above): not a failure to check, which is another kind.
    #[error("the store is damaged ({items} items): each is named above, on a line `damaged: …`")]
    Damaged { items: usize },
    /// Writing to stdout failed (a closed pipe is told apart by the caller).
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    /// Anything else: a file that cannot be read, an answer that makes no sense.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { status, .. } if *status == StatusCode::NOT_FOUND => 3,
            ClientError::Unreachable { .. } | ClientError::Silent { .. } => 4,
            ClientError::Damaged { .. } => 5,
            _ => 1,
        }
    }

    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ClientError::Output(error) if error.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// A `project_not_found` that names the project (from the request's path)
/// and the ways out: another project, or creating this one.
fn project_hint(code: &str, message: &str, path: &str) -> String {
    let project = path
        .strip_prefix("/v1/projects/")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(rest))
        .map(|id| percent_decode_str(id).decode_utf8_lossy().into_owned());
    match project {
        Some(project) => format!(
            "{code}: {message}: {project:?} does not exist, or this token has no rights on it. \
             Choose the project with -p/--project or KVS_PROJECT (without either, it is \
             \"default\"); `kvs project list` shows the projects the token sees; an admin \
             creates this one with `kvs project create {project}` (import and restore into \
             a project need it created first)"
        ),
        None => format!("{code}: {message}"),
    }
}

/// Whether a transport error is the connection breaking under a request
/// that was being sent (not a connection that could not be made).
fn breaks_while_sending(error: &ureq::Error) -> bool {
    matches!(error, ureq::Error::Io(io) if matches!(
        io.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    ))
}

/// The refusal of a server's certificate in a failed request, if that is
/// what failed: from ureq's TLS (inside an I/O error) or from `--ca-cert`'s.
fn refused_certificate(error: &ureq::Error) -> Option<&CertificateError> {
    let tls = match error {
        ureq::Error::Rustls(tls) => tls,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    match tls {
        rustls::Error::InvalidCertificate(refusal) => Some(refusal),
        _ => None,
    }
}

/// A request body and its content type.
pub struct Payload<'a> {
    pub bytes: &'a [u8],
    pub content_type: &'a str,
}

/// How long a connection may stay silent (no answer, or no bytes of its
/// body) before it is given up, if at all.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    limit: Option<Duration>,
    /// Whether `--timeout` sets it (a watch's is its own).
    settable: bool,
}

impl Idle {
    /// The limit of `--timeout` (or its default).
    pub fn settable(limit: Option<Duration>) -> Idle {
        Idle {
            limit,
            settable: true,
        }
    }

    /// A limit of the command's own.
    pub fn fixed(limit: Duration) -> Idle {
        Idle {
            limit: Some(limit),
            settable: false,
        }
    }
}

/// A client of one server, as one caller.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    token: Option<Secret>,
    idle: Idle,
    /// The `--ca-cert` file, if any, to name when a certificate is refused.
    ca_cert: Option<String>,
}

impl Api {
    /// A client of `base`. A connection that stays silent for `idle` (no
    /// answer, or no bytes of its body; also while a request's body is
    /// being sent and the server takes none) is given up; there is no
    /// limit on an answer's whole duration, so a long download or a watch
    /// goes on while bytes come. With `roots`, an `https://` server's certificate must
    /// be one of them (a self-signed certificate) or chain to one (a
    /// private CA); without, to the public CAs (webpki-roots).
    pub fn new(base: &str, token: Option<Secret>, idle: Idle, roots: Option<&CaCerts>) -> Api {
        let config = ureq::Agent::config_builder()
            // Error answers carry the contract's body, which we want to read.
            .http_status_as_error(false)
            .timeout_connect(Some(
                idle.limit
                    .map_or(CONNECT_TIMEOUT, |limit| limit.min(CONNECT_TIMEOUT)),
            ))
            .timeout_recv_response(idle.limit)
            .timeout_per_read(idle.limit)
            .timeout_per_write(idle.limit)
            .user_agent(concat!("kvs/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = match roots {
            Some(roots) => ureq::Agent::with_parts(
                config,
                roots.connector(),
                ureq::unversioned::resolver::DefaultResolver::default(),
            ),
            None => config.into(),
        };
        Api {
            agent,
            base: base.to_owned(),
            // `KVS_TOKEN=` (set but empty) means no token, not an empty one.
            token: token.filter(|secret| !secret.expose().is_empty()),
            idle,
            ca_cert: roots.map(|roots| roots.path().to_owned()),
        }
    }

    /// Sends a request to `path` (already encoded, with its query); answers a
    /// 2xx response whose body is still to be read.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        payload: Option<Payload<'_>>,
    ) -> Result<Response<ureq::Body>, ClientError> {
        self.send_with(method, path, payload, &[])
    }

    /// [`Api::send`] with extra request headers (such as `If-Match`).
    pub fn send_with(
        &self,
        method: Method,
        path: &str,
        payload: Option<Payload<'_>>,
        headers: &[(HeaderName, String)],
    ) -> Result<Response<ureq::Body>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(token) = &self.token {
            let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| anyhow!("the token holds characters that no header can carry"))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let bytes = match payload {
            Some(payload) => {
                request = request.header(CONTENT_TYPE, payload.content_type);
                payload.bytes
            }
            None => &[],
        };
        let request = request
            .body(bytes)
            .map_err(|error| anyhow!("cannot make a request to {url}: {error}"))?;
        let sent = bytes.len();
        let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
        let mut response = self.agent.run(request).map_err(|error| {
            if sent > 0 && breaks_while_sending(&error) {
                // The server took the connection, then closed it before it
                // had read the whole body: a refusal whose answer could not
                // be read (the server reads and discards up to 64 MiB of a
                // refused body, so this takes a body far over a limit).
                return anyhow!(
                    "the server at {} closed the connection while the {sent}-byte body \
                     was being sent ({error}); it refuses a body over a limit this way \
                     (a project's max_value_bytes: see `kvs project show`)",
                    self.base
                )
                .into();
            }
            self.failed(error, changes)
        })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.refusal(&mut response, path))
        }
    }

    /// Sends a request with an optional JSON body; answers the JSON of the
    /// answer, or `null` for an answer without a body (204).
    pub fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Json, ClientError> {
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(anyhow::Error::from)?;
        self.json_text(method, path, bytes.as_deref())
    }

    /// The same with a body of JSON text sent as it is (numbers, key order
    /// and all), such as a transaction a user wrote.
    pub fn json_text(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Json, ClientError> {
        let payload = body.map(|bytes| Payload {
            bytes,
            content_type: "application/json",
        });
        let mut response = self.send(method, path, payload)?;
        read_json(&mut response)
    }

    /// A transport failure: no connection (exit 4) or a request that could not
    /// be made at all. A request that `changes` something, sent whole and
    /// then not answered, may have been applied: that is not exit 4, which
    /// a script may take as "nothing happened, try again".
    fn failed(&self, error: ureq::Error, changes: bool) -> ClientError {
        if let Some(refusal) = refused_certificate(&error) {
            return self.certificate_refused(refusal);
        }
        match error {
            ureq::Error::Timeout(
                ureq::Timeout::RecvResponse
                | ureq::Timeout::RecvBody
                | ureq::Timeout::Global
                | ureq::Timeout::PerCall,
            ) if changes => ClientError::Unanswered {
                url: self.base.clone(),
                waited: self.idle.limit.unwrap_or_default(),
            },
            // The connection was made: the server then kept silent.
            ureq::Error::Timeout(timeout)
                if !matches!(timeout, ureq::Timeout::Resolve | ureq::Timeout::Connect) =>
            {
                ClientError::Silent {
                    url: self.base.clone(),
                    waited: self.idle.limit.unwrap_or_default(),
                    settable: self.idle.settable,
                }
            }
            ureq::Error::Io(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(_) => ClientError::Unreachable {
                url: self.base.clone(),
                reason: error.to_string(),
            },
            // ureq is built without a TLS stack (Cargo.toml), so https cannot work.
            ureq::Error::TlsRequired => anyhow!(
                "cannot connect to {}: this kvs speaks plain http only",
                self.base
            )
            .into(),
            other => anyhow!("request to {} failed: {other}", self.base).into(),
        }
    }

    /// The server's certificate was refused: what was wrong with it, and
    /// what the client trusts.
    fn certificate_refused(&self, error: &CertificateError) -> ClientError {
        let reason = if *error == CertificateError::UnknownIssuer || is_ca_used_as_end_entity(error)
        {
            "it is not one of the trusted certificates, nor issued by one".to_owned()
        } else {
            error.to_string()
        };
        let trusted = match &self.ca_cert {
            Some(path) => format!(
                "--ca-cert trusts the certificates in {path}: the server's own, or the CA that \
                 issued it"
            ),
            None => "without --ca-cert (or KVS_CA_CERT) only the public CAs are trusted: for a \
                 private CA or a self-signed certificate, give that certificate with --ca-cert FILE"
                .to_owned(),
        };
        anyhow!(
            "the server's certificate was refused ({}): {reason}; {trusted}",
            self.base
        )
        .into()
    }

    /// An error answer: `code: message` from the contract's body, or the
    /// status when something else (a proxy, another server) answered. A 412
    /// that carries the key's current `ETag` names that version too.
    fn refusal(&self, response: &mut Response<ureq::Body>, path: &str) -> ClientError {
        let status = response.status();
        let current = response
            .headers()
            .get(ETAG)
            .and_then(|etag| etag.to_str().ok())
            .map(|etag| etag.trim_start_matches("W/").trim_matches('"').to_owned());
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .unwrap_or_default();
        let error = serde_json::from_slice::<Value>(&body).ok();
        let error = error.as_ref().map(|body| &body["error"]);
        let mut summary = match error
            .and_then(|e| Some((e["code"].as_str()?, e["message"].as_str()?)))
        {
            Some((code, message)) if status == StatusCode::UNAUTHORIZED && self.token.is_none() => {
                format!("{code}: {message}; no token was given: pass --token or set KVS_TOKEN")
            }
            Some((code, message)) if code == "project_not_found" => {
                project_hint(code, message, path)
            }
            Some((code, message)) => format!("{code}: {message}"),
            None => format!("the server at {} answered {status}", self.base),
        };
        if status == StatusCode::PRECONDITION_FAILED
            && let Some(current) = current
        {
            summary.push_str(&format!("; the current version is {current}"));
        }
        ClientError::Refused {
            status,
            summary,
            body: serde_json::from_slice(&body).ok(),
        }
    }
}

/// A JSON answer, kept twice: as the text the server sent, which is what
/// `--json` prints (a `serde_json::Value` would round numbers beyond 64 bits
/// through `f64` and sort object keys), and parsed, which is what the other
/// outputs read (through `Deref`, as a `Value`).
#[derive(Debug)]
pub struct Json {
    text: Box<RawValue>,
    value: Value,
}

impl Json {
    /// The answer's text, without the whitespace around it.
    pub fn text(&self) -> &RawValue {
        &self.text
    }

    /// The parsed answer, for a caller that keeps it.
    pub fn into_value(self) -> Value {
        self.value
    }
}

impl std::ops::Deref for Json {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// Serialised as the text the server sent.
impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

/// The JSON of a 2xx answer; `null` when it has no body.
pub fn read_json(response: &mut Response<ureq::Body>) -> Result<Json, ClientError> {
    let body = if response.status() == StatusCode::NO_CONTENT {
        b"null".to_vec()
    } else {
        response
            .body_mut()
            .with_config()
            .limit(MAX_JSON_ANSWER)
            .read_to_vec()
            .map_err(|error| anyhow!("cannot read the answer: {error}"))?
    };
    let not_json = |error: serde_json::Error| {
        anyhow!("the answer is not JSON ({error}); is the URL a kvs server?")
    };
    let text: Box<RawValue> = serde_json::from_slice(&body).map_err(not_json)?;
    let value = serde_json::from_str(text.get()).map_err(not_json)?;
    Ok(Json { text, value })
}

/// A path segment (a project or token id), encoded.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// `/v1/projects/{p}/kv/{key}`, with the key encoded once, slashes kept.
pub fn kv_path(project: &str, key: &str) -> String {
    key_path(project, "kv", key)
}

/// `/v1/projects/{p}/{route}/{key}` (`kv`, `incr`), the key encoded as in
/// [`kv_path`].
pub fn key_path(project: &str, route: &str, key: &str) -> String {
    format!(
        "/v1/projects/{}/{route}/{}",
        segment(project),
        utf8_percent_encode(key, KEY)
    )
}

/// A key from a `Kvs-Key` header, which carries it percent-encoded.
pub fn header_key(value: &str) -> String {
    percent_decode_str(value).decode_utf8_lossy().into_owned()
}

/// `?name=value&…` for the pairs given, each value encoded; empty for none.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", segment(value)))
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_once_with_their_slashes_kept() {
        assert_eq!(kv_path("p", "a/b c"), "/v1/projects/p/kv/a/b%20c");
        assert_eq!(kv_path("p", "/x//y/"), "/v1/projects/p/kv//x//y/");
        assert_eq!(
            kv_path("p", "50%+?#é"),
            "/v1/projects/p/kv/50%25%2B%3F%23%C3%A9"
        );
        assert_eq!(kv_path("p", "a-b.c_d~e"), "/v1/projects/p/kv/a-b.c_d~e");
    }

    #[test]
    fn query_values_keep_a_plus_sign_a_plus_sign() {
        assert_eq!(query(&[]), "");
        assert_eq!(
            query(&[("prefix", "a+b c/"), ("limit", "10")]),
            "?prefix=a%2Bb%20c%2F&limit=10"
        );
    }
}
