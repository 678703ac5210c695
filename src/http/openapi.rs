//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the v1 API, generated
//! by utoipa from the handlers' `#[utoipa::path]` annotations and the views'
//! `ToSchema` derives, built once and served as it is. The test at the end
//! holds the document and [`Endpoint`](super::endpoint::Endpoint) to each
//! other in both directions, so a route cannot be added to one alone. The
//! compatibility surfaces (Simple-PyKV's `/api/v1/…` and `/status`, the
//! form interface at `/`) are left out: they keep other programs' shapes.
//!
//! The schemas here describe bodies that handlers build with small `json!`
//! literals or parse by hand (transactions, imports); the views' own schemas
//! are derived on the structs they serialise (`views.rs`).

use std::borrow::Cow;
use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::views::{
    CounterView, KeyMetaView, KeyWithValueView, NewTokenView, ProjectView, TokenView,
};
use super::{backup, import, kv, projects, system, tokens, txn, watch};

/// The document, collected from every v1 handler.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kvs HTTP API",
        description = "The v1 API of kvs. The contract is shared/api-v1.md; docs/API.md has examples.",
    ),
    paths(
        system::healthz,
        system::readyz,
        system::metrics,
        system::status,
        system::whoami,
        openapi_json,
        projects::list,
        projects::create,
        projects::get,
        projects::patch,
        projects::delete,
        tokens::list_for_project,
        tokens::create_for_project,
        tokens::delete_for_project,
        tokens::list_admin,
        tokens::create_admin,
        tokens::delete_admin,
        kv::get_key,
        kv::head_key,
        kv::put_key,
        kv::delete_key,
        kv::list_keys,
        kv::delete_prefix,
        kv::latest,
        txn::txn,
        txn::incr,
        watch::watch,
        import::import,
        backup::backup,
        backup::verify,
    ),
    components(schemas(
        ErrorBody, Storage, Public, Role, TokenSource, Encoding, Time, Duration, KeyMetaView, KeyWithValueView,
        CounterView, DeletedOne, ListedKey, TxnResult,
    )),
    modifiers(&Security, &CommonErrors),
    security(("bearer" = []), ("x_api_key" = []), ("api_key" = [])),
    tags(
        (name = "system", description = "Health, readiness, metrics, status"),
        (name = "projects", description = "Projects and their settings"),
        (name = "tokens", description = "Project and admin tokens"),
        (name = "keys", description = "Keys and values, listings, counters"),
        (name = "txn", description = "Transactions and imports"),
        (name = "watch", description = "Server-sent events of changes"),
    ),
)]
pub struct ApiDoc;

/// The document as served: built on first use, then shared.
pub fn document() -> Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            // Serialising a document of plain maps and strings cannot fail;
            // if it ever did, an empty object still answers JSON.
            let mut document =
                serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
            finish(&mut document);
            Bytes::from(document.to_string())
        })
        .clone()
}

/// What generators need and the derives do not say: a `servers` entry (the
/// server itself), a summary on every operation (the first sentence of its
/// description), header parameters typed as strings (HTTP headers are
/// text), and raw bodies as `string`/`binary` rather than arrays of bytes.
fn finish(document: &mut Value) {
    if document.get("servers").is_none() {
        document["servers"] = json!([{"url": "/", "description": "This server"}]);
    }
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            let description = operation
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("");
            let summary = SUMMARIES
                .iter()
                .find(|(m, p, _)| m.eq_ignore_ascii_case(method) && p == path)
                .map_or_else(
                    || summary(method, path, description),
                    |(_, _, s)| (*s).to_owned(),
                );
            operation.insert("summary".into(), json!(summary));
            for parameter in operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if parameter["in"] == "header" {
                    parameter["schema"] = json!({"type": "string"});
                }
            }
            binary_bodies(operation.get_mut("requestBody"));
        }
    }
}

/// Operations' summaries (the doc comments' first lines name roles, or
/// wrap): what each does, in a few words.
const SUMMARIES: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "Liveness"),
    ("get", "/readyz", "Readiness"),
    ("get", "/metrics", "Prometheus metrics"),
    ("get", "/v1/backup", "Back up the whole server"),
    ("get", "/v1/openapi.json", "This OpenAPI document"),
    ("get", "/v1/projects", "List projects"),
    ("post", "/v1/projects", "Create a project"),
    ("get", "/v1/projects/{project}", "Show a project"),
    (
        "patch",
        "/v1/projects/{project}",
        "Change a project's settings",
    ),
    ("delete", "/v1/projects/{project}", "Delete a project"),
    ("post", "/v1/projects/{project}/import", "Import keys"),
    (
        "post",
        "/v1/projects/{project}/incr/{key}",
        "Add to a counter",
    ),
    ("get", "/v1/projects/{project}/kv", "List keys"),
    (
        "delete",
        "/v1/projects/{project}/kv",
        "Delete keys by prefix",
    ),
    ("get", "/v1/projects/{project}/kv/{key}", "Read a value"),
    (
        "head",
        "/v1/projects/{project}/kv/{key}",
        "Read a value's headers",
    ),
    ("put", "/v1/projects/{project}/kv/{key}", "Write a value"),
    ("delete", "/v1/projects/{project}/kv/{key}", "Delete a key"),
    (
        "get",
        "/v1/projects/{project}/latest",
        "Read the latest written of some keys",
    ),
    (
        "get",
        "/v1/projects/{project}/tokens",
        "List a project's tokens",
    ),
    (
        "post",
        "/v1/projects/{project}/tokens",
        "Create a project token",
    ),
    (
        "delete",
        "/v1/projects/{project}/tokens/{id}",
        "Revoke a project token",
    ),
    ("post", "/v1/projects/{project}/txn", "Run a transaction"),
    (
        "get",
        "/v1/projects/{project}/watch",
        "Watch changes (server-sent events)",
    ),
    ("get", "/v1/status", "Server status"),
    ("get", "/v1/tokens", "List admin tokens"),
    ("post", "/v1/tokens", "Create an admin token"),
    ("delete", "/v1/tokens/{id}", "Revoke an admin token"),
    ("get", "/v1/whoami", "The calling token"),
];

/// An operation's summary: its description's first sentence, short.
fn summary(method: &str, path: &str, description: &str) -> String {
    let first = description
        .split(['.', ':', ';'])
        .next()
        .unwrap_or("")
        .trim();
    if first.is_empty() {
        format!("{} {path}", method.to_ascii_uppercase())
    } else if first.chars().count() > 80 {
        first.chars().take(77).collect::<String>() + "…"
    } else {
        first.to_owned()
    }
}

/// `application/octet-stream` content as `string`/`binary`.
fn binary_bodies(body: Option<&mut Value>) {
    if let Some(media) = body
        .and_then(|body| body.get_mut("content"))
        .and_then(|content| content.get_mut("application/octet-stream"))
    {
        media["schema"] = json!({"type": "string", "format": "binary"});
    }
}

/// Serves the document. It describes the API, not data, so it needs no token.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "system",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)),
)]
pub fn openapi_json() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document(),
    )
        .into_response()
}

// ================================================================ schemas

/// The error body of every error.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)] // describes bodies that error.rs builds
pub struct ErrorBody {
    error: ErrorDetail,
    /// A transaction's op (or import's key) that failed.
    failed_op: Option<u64>,
    /// Every failing check of a transaction (412).
    failed_checks: Option<Vec<u64>>,
    /// The index of the key an import refused.
    failed_key: Option<u64>,
    /// With `history_compacted` (410): the oldest revision still kept.
    compact_revision: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// A stable snake_case code: `bad_request`, `invalid_key`, `unauthorized`, …
    code: String,
    /// Text for people; it never shows internals.
    message: String,
}

/// Where a project keeps its keys.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
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
#[allow(dead_code)]
pub enum Role {
    Read,
    Write,
    Manage,
    Admin,
}

/// How a token came to be.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
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
#[allow(dead_code)]
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
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .into()
    }
}

impl ToSchema for Time {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Time")
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

/// `/healthz` and `/readyz`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok` or `ready`.
    status: String,
}

/// `/v1/status`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ServerStatus {
    version: String,
    uptime_seconds: f64,
    revision: u64,
    projects: u64,
    keys: u64,
    storage_bytes: u64,
    memory_bytes: u64,
    /// Projects open to requests without credential: id → `read` or `write`.
    public_projects: std::collections::BTreeMap<String, Public>,
    /// Whether Simple-PyKV's admin routes answer requests without credential.
    simple_pykv_open_admin: bool,
    limits: Limits,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Limits {
    max_value_bytes: u64,
    max_txn_bytes: u64,
    max_json_body_bytes: u64,
    max_key_bytes: u64,
    max_list_limit: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProjectList<'a> {
    projects: Vec<ProjectView<'a>>,
}

/// A new project and its first token (`manage`, without prefix, shown once).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreatedProject<'a> {
    project: ProjectView<'a>,
    token: NewTokenView<'a>,
}

/// A minted token: a NewToken; for an imported one (`imported_digest`),
/// the Token without `secret`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MintedToken<'a> {
    #[serde(flatten)]
    token: TokenView<'a>,
    /// `kvs_` and 43 base64url characters, shown this once.
    secret: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenList<'a> {
    tokens: Vec<TokenView<'a>>,
}

/// A listing page: KeyMeta, or KeyWithValue with `values=true`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Listing {
    keys: Vec<ListedKey>,
    /// Pass to `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    cursor: Option<String>,
    revision: u64,
}

/// KeyWithValue (with `values=true`) or KeyMeta. Written by hand as
/// `anyOf`: every KeyWithValue is also a KeyMeta, so `oneOf` would refuse it.
pub struct ListedKey;

impl PartialSchema for ListedKey {
    fn schema() -> RefOr<Schema> {
        any_of(&["KeyWithValue", "KeyMeta"], false)
    }
}

impl ToSchema for ListedKey {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ListedKey")
    }
}

/// `anyOf` the named component schemas (and `null`, if `nullable`).
fn any_of(names: &[&str], nullable: bool) -> RefOr<Schema> {
    let mut any = AnyOfBuilder::new();
    for name in names {
        any = any.item(Ref::from_schema_name(*name));
    }
    if nullable {
        any = any.item(ObjectBuilder::new().schema_type(Type::Null));
    }
    any.into()
}

/// What a delete by prefix removed, at which revision.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Deleted {
    deleted: u64,
    revision: u64,
}

/// A transaction: checks that must all hold, and ops applied together.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TxnRequest {
    #[schema(default = json!([]))]
    checks: Option<Vec<TxnCheck>>,
    ops: Vec<TxnOp>,
}

/// `version` (the key's current version) or `exists`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TxnCheck {
    key: String,
    version: Option<u64>,
    exists: Option<bool>,
}

/// One op: `put` (with `value` or `value_base64`), `delete`, `get` or `incr`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TxnOp {
    op: TxnOpName,
    key: String,
    /// Any JSON: a string is stored as text, anything else as JSON.
    value: Option<Value>,
    value_base64: Option<String>,
    content_type: Option<String>,
    #[schema(value_type = Option<Duration>)]
    ttl: Option<Value>,
    /// For `incr`: default 1.
    by: Option<i64>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum TxnOpName {
    Put,
    Delete,
    Get,
    Incr,
}

/// One entry per op: KeyMeta (put), `{"deleted"}` (delete), KeyWithValue or
/// null (get), Counter (incr).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TxnAnswer {
    revision: u64,
    results: Vec<TxnResult>,
}

/// An op's result: Counter, KeyWithValue or KeyMeta (each a KeyMeta),
/// `{"deleted"}`, or null (a `get` of an absent key).
pub struct TxnResult;

impl PartialSchema for TxnResult {
    fn schema() -> RefOr<Schema> {
        any_of(&["Counter", "KeyWithValue", "KeyMeta", "DeletedOne"], true)
    }
}

impl ToSchema for TxnResult {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TxnResult")
    }
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeletedOne {
    deleted: bool,
}

/// Keys to write exactly as given (what `kvs export` wrote).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImportRequest {
    keys: Vec<ImportedKey>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImportedKey {
    key: String,
    /// Text, stored as its UTF-8 bytes.
    value: Option<String>,
    value_base64: Option<String>,
    content_type: Option<String>,
    #[schema(value_type = Option<Time>)]
    created_at: Option<String>,
    #[schema(value_type = Option<Time>)]
    updated_at: Option<String>,
    #[schema(value_type = Option<Time>)]
    expires_at: Option<String>,
    /// Accepted and ignored.
    version: Option<u64>,
    /// Accepted and ignored.
    size: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Imported {
    imported: u64,
    revision: u64,
}

// ============================================================== modifiers

/// The three ways a token is sent.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("kvs_ + 43 base64url characters")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "x_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Api-Key"))),
        );
    }
}

/// The errors any route may answer, added to every operation rather than
/// repeated in each annotation: 429, 500 and 503 everywhere (the limits and
/// the connection cap apply to every route); 408 for routes with a body;
/// for routes that take a token, 401 and 403; for those that also take
/// input (a path parameter, a query, a body), 400 and 404.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.head,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                add_common_errors(operation);
            }
        }
    }
}

fn add_common_errors(operation: &mut Operation) {
    // No `security` of its own: the document's, a token required. An empty
    // requirement among its own: the token is optional.
    let takes_token = match &operation.security {
        None => true,
        Some(requirements) => requirements
            .iter()
            .any(|r| r != &SecurityRequirement::default()),
    };
    let takes_input = operation.parameters.as_ref().is_some_and(|p| !p.is_empty())
        || operation.request_body.is_some();
    let mut statuses = vec![
        (429, "Too many requests: retry after `Retry-After` seconds"),
        (500, "The server failed; the message shows no internals"),
        (
            503,
            "The server is stopping, storage is not writable, or max_connections is reached",
        ),
    ];
    if operation.request_body.is_some() {
        statuses.push((408, "The body did not arrive within body_timeout"));
    }
    if takes_token {
        statuses.extend([
            (401, "No valid token (with `WWW-Authenticate: Bearer`)"),
            (403, "The token's role or prefix does not allow this"),
        ]);
    }
    if takes_token && takes_input {
        statuses.extend([
            (400, "Malformed input"),
            (
                404,
                "No such project (or none the token may see), key or token",
            ),
        ]);
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in statuses {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(status, description));
    }
}

/// An error answer: the error body, and `Retry-After` on a 429.
pub fn error_response(status: u16, description: &str) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    );
    if status == 429 {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    RefOr::T(response.build())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::super::endpoint::Endpoint;
    use super::*;

    /// Every path and method of the document, with `{…}` parameters.
    fn documented() -> BTreeMap<String, BTreeSet<String>> {
        let document: Value = serde_json::from_slice(&document()).unwrap();
        let paths = document["paths"].as_object().unwrap();
        paths
            .iter()
            .map(|(path, item)| {
                let methods = item
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| {
                        ["get", "head", "put", "post", "patch", "delete"].contains(&k.as_str())
                    })
                    .map(|k| k.to_uppercase())
                    .collect();
                (path.clone(), methods)
            })
            .collect()
    }

    /// A concrete path for a documented one: a parameter becomes a sample
    /// value (a key with a `/`, as keys may have).
    fn concrete(template: &str) -> String {
        template
            .replace("{project}", "demo")
            .replace("{key}", "dir/a")
            .replace("{id}", "tok_1")
    }

    #[test]
    fn the_document_has_servers_a_summary_everywhere_string_headers_and_binary_bodies() {
        let document: Value = serde_json::from_slice(&document()).unwrap();
        assert_eq!(document["servers"][0]["url"], "/");
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let summary = operation["summary"].as_str().unwrap_or("");
                assert!(
                    !summary.is_empty() && !summary.contains('\n') && summary.len() <= 80,
                    "{method} {path}: summary {summary:?}"
                );
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "header" {
                        assert_eq!(parameter["schema"], json!({"type": "string"}), "{path}");
                    }
                }
                if let Some(media) =
                    operation["requestBody"]["content"].get("application/octet-stream")
                {
                    assert_eq!(media["schema"]["format"], "binary", "{method} {path}");
                }
            }
        }
        let put = &document["paths"]["/v1/projects/{project}/kv/{key}"]["put"];
        assert!(
            put["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "content_type" && p["in"] == "query"),
            "PUT has a content_type query parameter"
        );
    }

    #[test]
    fn every_documented_operation_is_routed_and_allowed() {
        for (template, methods) in documented() {
            let path = concrete(&template);
            let endpoint = Endpoint::parse(&path)
                .unwrap_or_else(|_| panic!("{template} is documented but not routed"));
            assert!(
                !matches!(endpoint, Endpoint::Index | Endpoint::Pykv(_)),
                "{template} is a compat route"
            );
            for method in methods {
                let method = method.parse().unwrap();
                assert!(
                    endpoint.check_method(&method).is_ok(),
                    "{method} {template} is documented but {endpoint:?} does not allow it"
                );
            }
        }
    }

    #[test]
    fn every_v1_endpoint_and_method_is_documented() {
        let documented = documented();
        // One sample path per variant. Adding a variant breaks the match
        // below until it gets a sample here and a template there.
        let samples = [
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/status",
            "/v1/whoami",
            "/v1/openapi.json",
            "/v1/projects",
            "/v1/projects/demo",
            "/v1/projects/demo/tokens",
            "/v1/projects/demo/tokens/tok_1",
            "/v1/tokens",
            "/v1/tokens/tok_1",
            "/v1/projects/demo/kv",
            "/v1/projects/demo/kv/dir/a",
            "/v1/projects/demo/txn",
            "/v1/projects/demo/incr/dir/a",
            "/v1/projects/demo/latest",
            "/v1/projects/demo/watch",
            "/v1/projects/demo/import",
            "/",
            "/api/v1/projects",
            "/ui",
            "/v1/backup",
            "/v1/verify",
        ];
        let mut seen = BTreeSet::new();
        for sample in samples {
            let endpoint = Endpoint::parse(sample).unwrap();
            let template = match &endpoint {
                Endpoint::Healthz => Some("/healthz"),
                Endpoint::Readyz => Some("/readyz"),
                Endpoint::Metrics => Some("/metrics"),
                Endpoint::Status => Some("/v1/status"),
                Endpoint::Whoami => Some("/v1/whoami"),
                Endpoint::OpenApi => Some("/v1/openapi.json"),
                Endpoint::Projects => Some("/v1/projects"),
                Endpoint::Project(_) => Some("/v1/projects/{project}"),
                Endpoint::ProjectTokens(_) => Some("/v1/projects/{project}/tokens"),
                Endpoint::ProjectToken(..) => Some("/v1/projects/{project}/tokens/{id}"),
                Endpoint::AdminTokens => Some("/v1/tokens"),
                Endpoint::AdminToken(_) => Some("/v1/tokens/{id}"),
                Endpoint::KvList(_) => Some("/v1/projects/{project}/kv"),
                Endpoint::Kv(..) => Some("/v1/projects/{project}/kv/{key}"),
                Endpoint::Txn(_) => Some("/v1/projects/{project}/txn"),
                Endpoint::Incr(..) => Some("/v1/projects/{project}/incr/{key}"),
                Endpoint::Latest(_) => Some("/v1/projects/{project}/latest"),
                Endpoint::Watch(_) => Some("/v1/projects/{project}/watch"),
                Endpoint::Import(_) => Some("/v1/projects/{project}/import"),
                Endpoint::Backup => Some("/v1/backup"),
                Endpoint::Verify => Some("/v1/verify"),
                // The compatibility surfaces keep other programs' shapes
                // and are not described (docs/API.md says so); the web
                // view's page and assets are not API.
                Endpoint::Index | Endpoint::Pykv(_) | Endpoint::Ui(_) => None,
            };
            seen.insert(endpoint.name());
            let Some(template) = template else { continue };
            let methods = documented
                .get(template)
                .unwrap_or_else(|| panic!("{template} ({sample}) is not documented"));
            for method in endpoint.allowed() {
                // HEAD is answered wherever GET is; documented where it
                // says something of its own (a key's headers).
                if *method == "HEAD" {
                    continue;
                }
                assert!(
                    methods.contains(*method),
                    "{method} {template} is routed but not documented"
                );
            }
        }
        assert_eq!(seen.len(), samples.len(), "one sample per variant");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_security_schemes() {
        let document: Value = serde_json::from_slice(&document()).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let schemes = &document["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["x_api_key"]["name"], "X-API-Key");
        assert_eq!(schemes["api_key"]["name"], "Api-Key");
        let put = &document["paths"]["/v1/projects/{project}/kv/{key}"]["put"];
        assert!(put["responses"]["429"]["headers"]["Retry-After"].is_object());
    }
}
