//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the v1 API, generated
//! by utoipa from the handlers' `#[utoipa::path]` annotations and the views'
//! `ToSchema` derives, built once and served as it is. The test at the end
//! holds the document and [`Endpoint`](super::endpoint::Endpoint) to each
//! other in both directions, so a route cannot be added to one alone. The
//! compatibility surfaces (Simple-PyKV's `/api/v1/…` and `/status`, the
//! form interface at `/`) are left out: they keep other programs' shapes.
//!
//! Every schema is derived on the type a handler sends (`views.rs`, the
//! error body in `error.rs`) or parses (the request types beside their
//! handlers), and every summary is in its handler's annotation: this module
//! keeps only the document, its modifiers and its tests.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::views::{Duration, Encoding, Public, Role, Storage, Time, TokenSource};
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
        backup::compact,
    ),
    components(schemas(ErrorBody, Storage, Public, Role, TokenSource, Encoding, Time, Duration)),
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
/// server itself), header parameters typed as strings (HTTP headers are
/// text; an optional one is otherwise `string | null`), and raw bodies and
/// answers as `string`/`binary` rather than arrays of bytes.
fn finish(document: &mut Value) {
    if document.get("servers").is_none() {
        document["servers"] = json!([{"url": "/", "description": "This server"}]);
    }
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
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
            binary(operation.get_mut("requestBody"));
            for response in operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
                .into_iter()
                .flat_map(|responses| responses.values_mut())
            {
                binary(Some(response));
            }
        }
    }
}

/// A body's raw content (`application/octet-stream`, `*/*`, a backup's
/// `application/jsonl`) as `string`/`binary`.
fn binary(body: Option<&mut Value>) {
    let Some(content) = body
        .and_then(|body| body.get_mut("content"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (media_type, media) in content.iter_mut() {
        if ["application/octet-stream", "*/*", "application/jsonl"].contains(&media_type.as_str()) {
            media["schema"] = json!({"type": "string", "format": "binary"});
        }
    }
}

/// Serves the document. It describes the API, not data, so it needs no token.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    summary = "This OpenAPI document",
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
    fn every_success_declares_a_media_type_that_generators_read() {
        let document: Value = serde_json::from_slice(&document()).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let Some(content) = response["content"].as_object() else {
                        continue;
                    };
                    if !status.starts_with('2') {
                        continue;
                    }
                    // Metrics and watches are read as text and as events.
                    let read = content.contains_key("application/json")
                        || content.contains_key("application/octet-stream")
                        || content.contains_key("text/event-stream")
                        || path == "/metrics";
                    assert!(read, "{method} {path} {status}: {content:?}");
                    if let Some(media) = content.get("application/octet-stream") {
                        assert_eq!(
                            media["schema"],
                            json!({"type": "string", "format": "binary"}),
                            "{method} {path}"
                        );
                    }
                }
            }
        }
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
            "/v1/compact",
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
                Endpoint::Compact => Some("/v1/compact"),
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
