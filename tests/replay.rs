//! The two servers kvs replaces, replayed from their own documentation
//! against the real binary: every request example of Simple-PyKV's
//! `routes.md` (majdiJ/simple-pykv, in the document's order: status, list,
//! create, details, update, store put/get/value/list/delete, clear,
//! regenerate, delete) and the original kvs README's forms (git.dlma.com
//! kvs: `?k=KEY`, `?k=K1,K2`, `curl --data "key=value&auth=…"`). Each
//! example is kept as data, with where it came from; the check compares the
//! status, the envelope, the content type and the body with what the
//! document shows.
//!
//! `<SYSTEM_API_KEY>` is the server's admin token; `<PROJECT_API_KEY>` the
//! `new_api_key` that creating `first_project` answered.

use crate::common;

use serde_json::{Value, json};

use common::{Answer, Client, ServerProcess, fake_secret};

/// What a documented example shows of its answer.
#[derive(Debug)]
enum Shows {
    /// The envelope, with `data` null.
    Null,
    /// The envelope, with `data` an object holding at least these members
    /// (a member shown as `"<string>"` or `"<number>"` is any of that kind).
    Data(Value),
    /// The raw value, as this JSON, with a JSON content type.
    RawJson(Value),
    /// `/status`: the `System` block with its five figures, `data` null.
    System,
}

/// One documented request.
struct Example {
    /// Where the document shows it.
    source: &'static str,
    method: &'static str,
    path: &'static str,
    /// Headers as the example sends them (`<…>` placeholders filled in).
    headers: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    status: u16,
    shows: Shows,
}

/// `curl --data`/`-d` without a content type sends this one.
const CURL_FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const SYSTEM_BEARER: (&str, &str) = ("Authorization", "Bearer <SYSTEM_API_KEY>");
const SYSTEM_X_API_KEY: (&str, &str) = ("X-API-Key", "<SYSTEM_API_KEY>");
const PROJECT_BEARER: (&str, &str) = ("Authorization", "Bearer <PROJECT_API_KEY>");
const PROJECT_X_API_KEY: (&str, &str) = ("X-API-Key", "<PROJECT_API_KEY>");
const PROJECT_API_KEY: (&str, &str) = ("Api-Key", "<PROJECT_API_KEY>");

/// The JSON value of routes.md's `example_key6`.
const EXAMPLE_KEY6: &str =
    r#"{"example":{"data":"Hellow world!","wow":"Wow! signal NASA"},"super_cool":true}"#;

fn routes_md() -> Vec<Example> {
    vec![
        Example {
            source: "routes.md, GET /status, example request and successful response",
            method: "GET",
            path: "/status",
            headers: &[SYSTEM_BEARER],
            body: None,
            status: 200,
            shows: Shows::System,
        },
        Example {
            source: "routes.md, GET /status, example unauthorized (401)",
            method: "GET",
            path: "/status",
            headers: &[],
            body: None,
            status: 401,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, POST /api/v1/projects, example request",
            method: "POST",
            path: "/api/v1/projects",
            headers: &[JSON, SYSTEM_BEARER],
            body: Some(r#"{"id":"New_project3"}"#),
            status: 201,
            shows: Shows::Data(json!({"new_api_key": "<string>"})),
        },
        Example {
            source: "routes.md, POST /api/v1/projects, notes: the payload with its sections",
            method: "POST",
            path: "/api/v1/projects",
            headers: &[JSON, SYSTEM_BEARER],
            body: Some(
                r#"{"id":"first_project","storage":{"on_disk":true},"authentication":{"enabled":true,"save_api_key_to_config":false},"security":{"keys_and_values_discoverable":true}}"#,
            ),
            status: 201,
            shows: Shows::Data(json!({"new_api_key": "<string>"})),
        },
        Example {
            source: "routes.md, POST /api/v1/projects, errors: duplicate id",
            method: "POST",
            path: "/api/v1/projects",
            headers: &[JSON, SYSTEM_BEARER],
            body: Some(r#"{"id":"New_project3"}"#),
            status: 400,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, POST /api/v1/projects, example successful response (201) — no \
                     key returned (authentication for this project disabled)",
            method: "POST",
            path: "/api/v1/projects",
            headers: &[JSON, SYSTEM_BEARER],
            body: Some(
                r#"{"id":"open_project","authentication":{"enabled":false,"save_api_key_to_config":false}}"#,
            ),
            status: 201,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, PUT /api/v1/projects/<project_id>/store/<key>: requires the \
                     project API key when project authentication is enabled (here it is not)",
            method: "PUT",
            path: "/api/v1/projects/open_project/store/example_key3",
            headers: &[],
            body: Some("test"),
            status: 200,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, GET /api/v1/projects/<project_id>/store/<key>, without a key on \
                     a project whose authentication is disabled",
            method: "GET",
            path: "/api/v1/projects/open_project/store/example_key3",
            headers: &[],
            body: None,
            status: 200,
            shows: Shows::Data(json!({"value": "test", "size_bytes": 4})),
        },
        Example {
            source: "routes.md, GET /api/v1/projects, example request and response",
            method: "GET",
            path: "/api/v1/projects",
            headers: &[SYSTEM_X_API_KEY],
            body: None,
            status: 200,
            shows: Shows::Data(json!({
                "New_project3": {
                    "authentication": {"enabled": true, "save_api_key_to_config": false},
                    "security": {"keys_and_values_discoverable": true},
                    "storage": {"on_disk": true}
                },
                "first_project": {"storage": {"on_disk": true}}
            })),
        },
        Example {
            source: "routes.md, GET /api/v1/projects/<project_id>, example request and response",
            method: "GET",
            path: "/api/v1/projects/first_project",
            headers: &[PROJECT_BEARER],
            body: None,
            status: 200,
            shows: Shows::Data(json!({
                "authentication": {"enabled": true},
                "id": "first_project",
                "security": {"keys_and_values_discoverable": true},
                "storage": {"on_disk": true}
            })),
        },
        Example {
            source: "routes.md, PUT /api/v1/projects/<project_id>, example request",
            method: "PUT",
            path: "/api/v1/projects/first_project",
            headers: &[JSON, PROJECT_BEARER],
            body: Some(r#"{"storage": {"on_disk": true}}"#),
            status: 200,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, PUT /api/v1/projects/<project_id>, errors: `id` provided",
            method: "PUT",
            path: "/api/v1/projects/first_project",
            headers: &[JSON, PROJECT_BEARER],
            body: Some(r#"{"id": "other"}"#),
            status: 400,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, PUT /api/v1/projects/<project_id>, errors: `authentication` provided",
            method: "PUT",
            path: "/api/v1/projects/first_project",
            headers: &[JSON, PROJECT_BEARER],
            body: Some(r#"{"authentication": {"enabled": false}}"#),
            status: 400,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, PUT /api/v1/projects/<project_id>/store/<key>, example request (JSON value)",
            method: "PUT",
            path: "/api/v1/projects/first_project/store/example_key6",
            headers: &[JSON, PROJECT_BEARER],
            body: Some(EXAMPLE_KEY6),
            status: 200,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, PUT /api/v1/projects/<project_id>/store/<key>, example request (plain-text value)",
            method: "PUT",
            path: "/api/v1/projects/first_project/store/example_key3",
            headers: &[CURL_FORM, PROJECT_BEARER],
            body: Some("test"),
            status: 200,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, PUT /api/v1/projects/<project_id>/store/<key>, errors: body missing",
            method: "PUT",
            path: "/api/v1/projects/first_project/store/example_key4",
            headers: &[PROJECT_BEARER],
            body: Some(""),
            status: 400,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, GET /api/v1/projects/<project_id>/store/<key>, example request and response",
            method: "GET",
            path: "/api/v1/projects/first_project/store/example_key6",
            headers: &[PROJECT_API_KEY],
            body: None,
            status: 200,
            shows: Shows::Data(json!({
                "created_at": "<number>",
                "size_bytes": EXAMPLE_KEY6.len(),
                "updated_at": "<number>",
                "value": {
                    "example": {"data": "Hellow world!", "wow": "Wow! signal NASA"},
                    "super_cool": true
                }
            })),
        },
        Example {
            source: "routes.md, GET /api/v1/projects/<project_id>/store/<key>/value, example request and response",
            method: "GET",
            path: "/api/v1/projects/first_project/store/example_key6/value",
            headers: &[PROJECT_API_KEY],
            body: None,
            status: 200,
            shows: Shows::RawJson(json!({
                "example": {"data": "Hellow world!", "wow": "Wow! signal NASA"},
                "super_cool": true
            })),
        },
        Example {
            source: "routes.md, GET /api/v1/projects/<project_id>/store, example request and response",
            method: "GET",
            path: "/api/v1/projects/first_project/store",
            headers: &[PROJECT_X_API_KEY],
            body: None,
            status: 200,
            shows: Shows::Data(json!({
                "example_key3": {"created_at": "<number>", "size_bytes": 4, "updated_at": "<number>", "value": "test"},
                "example_key6": {"size_bytes": EXAMPLE_KEY6.len(), "value": {"super_cool": true}}
            })),
        },
        Example {
            source: "routes.md, DELETE /api/v1/projects/<project_id>/store/<key>, example request",
            method: "DELETE",
            path: "/api/v1/projects/first_project/store/example_key3",
            headers: &[PROJECT_X_API_KEY],
            body: None,
            status: 200,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, GET /api/v1/projects/<project_id>/store/<key>, errors: key not found",
            method: "GET",
            path: "/api/v1/projects/first_project/store/example_key3",
            headers: &[PROJECT_API_KEY],
            body: None,
            status: 404,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, DELETE /api/v1/projects/<project_id>/store, example request",
            method: "DELETE",
            path: "/api/v1/projects/first_project/store",
            headers: &[PROJECT_BEARER],
            body: None,
            status: 200,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, POST /api/v1/projects/<project_id>/config/regenerate-api-key, example request",
            method: "POST",
            path: "/api/v1/projects/first_project/config/regenerate-api-key",
            headers: &[SYSTEM_BEARER],
            body: None,
            status: 200,
            shows: Shows::Data(json!({"new_api_key": "<string>"})),
        },
        Example {
            source: "routes.md, GET /api/v1/projects/<project_id>, errors: missing/invalid project API key (the key regenerated away)",
            method: "GET",
            path: "/api/v1/projects/first_project",
            headers: &[PROJECT_BEARER],
            body: None,
            status: 401,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, DELETE /api/v1/projects/<project_id>, example request",
            method: "DELETE",
            path: "/api/v1/projects/New_project3",
            headers: &[SYSTEM_X_API_KEY],
            body: None,
            status: 200,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, DELETE /api/v1/projects/<project_id>, errors: project not found",
            method: "DELETE",
            path: "/api/v1/projects/New_project3",
            headers: &[SYSTEM_X_API_KEY],
            body: None,
            status: 404,
            shows: Shows::Null,
        },
        Example {
            source: "routes.md, global notes: every answer under /api/v1 in the envelope (a route that does not exist)",
            method: "GET",
            path: "/api/v1/projects/first_project/store/a/b/c",
            headers: &[SYSTEM_BEARER],
            body: None,
            status: 404,
            shows: Shows::Null,
        },
    ]
}

/// Whether `actual` holds everything `shown` shows.
fn holds(shown: &Value, actual: &Value) -> bool {
    match (shown, actual) {
        (Value::String(s), Value::String(_)) if s == "<string>" => true,
        (Value::String(s), Value::Number(_)) if s == "<number>" => true,
        (Value::Object(shown), Value::Object(actual)) => shown
            .iter()
            .all(|(k, v)| actual.get(k).is_some_and(|a| holds(v, a))),
        _ => shown == actual,
    }
}

fn replay(client: &Client, example: &Example, system: &str, project: &str) -> Answer {
    let fill = |text: &str| {
        text.replace("<SYSTEM_API_KEY>", system)
            .replace("<PROJECT_API_KEY>", project)
    };
    let headers: Vec<(String, String)> = example
        .headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), fill(value)))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let answer = client.send(
        example.method,
        example.path,
        example.body.map(str::as_bytes),
        &headers,
    );
    let context = format!(
        "{}: {} {} answered {} {}",
        example.source,
        example.method,
        example.path,
        answer.status,
        answer.text()
    );
    assert_eq!(answer.status, example.status, "{context}");
    let content_type = answer.header("content-type").unwrap_or("");
    assert!(content_type.starts_with("application/json"), "{context}");
    let body = answer.json();
    match &example.shows {
        Shows::RawJson(value) => assert_eq!(&body, value, "{context}"),
        shows => {
            let mut fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
            fields.sort();
            assert_eq!(
                fields,
                ["System", "data", "message", "status_code"],
                "{context}"
            );
            assert_eq!(body["status_code"], json!(example.status), "{context}");
            assert!(body["message"].is_string(), "{context}");
            assert!(
                body["System"].is_null() || body["System"].is_object(),
                "{context}"
            );
            match shows {
                Shows::Null => assert!(body["data"].is_null(), "{context}"),
                Shows::Data(shown) => assert!(holds(shown, &body["data"]), "{context}"),
                Shows::System => {
                    assert!(body["data"].is_null(), "{context}");
                    for figure in [
                        "memory_usage_bytes",
                        "number_of_projects",
                        "storage_usage_bytes",
                        "uptime",
                    ] {
                        assert!(body["System"][figure].is_u64(), "{figure}: {context}");
                    }
                    assert!(body["System"]["version"].is_string(), "{context}");
                }
                Shows::RawJson(_) => unreachable!(),
            }
        }
    }
    answer
}

#[test]
fn every_request_example_of_simple_pykv_routes_md_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let admin = fake_secret();
    let server = ServerProcess::start(&dir.path().join("data"), &admin);
    let client = Client::new(&server.url, None);
    let mut project_key = String::new();
    for example in routes_md() {
        let answer = replay(&client, &example, &admin, &project_key);
        // The project's key is the one creating `first_project` answered.
        if example.path == "/api/v1/projects"
            && example.method == "POST"
            && example.status == 201
            && example.body.is_some_and(|b| b.contains("first_project"))
        {
            project_key = answer.json()["data"]["new_api_key"]
                .as_str()
                .expect("a new_api_key")
                .to_owned();
        }
    }
}

/// One of the original kvs's documented requests.
struct Original {
    source: &'static str,
    method: &'static str,
    /// `<PASSCODE>` is a token of the default project.
    path: &'static str,
    body: Option<&'static str>,
    status: u16,
    /// The answer, as text/plain.
    text: &'static str,
}

fn original_readme() -> Vec<Original> {
    vec![
        Original {
            source: "README, the recipe for a curl command that saves a pair",
            method: "POST",
            path: "/",
            body: Some("1GM35N000010=first&auth=<PASSCODE>"),
            status: 200,
            text: "OK",
        },
        Original {
            source: "README, the same recipe, for another key, later",
            method: "POST",
            path: "/",
            body: Some("1GU44N010910=second&auth=<PASSCODE>"),
            status: 200,
            text: "OK",
        },
        Original {
            source: "README, send a key to get a value: /?k=1GM35N000010",
            method: "GET",
            path: "/?k=1GM35N000010",
            body: None,
            status: 200,
            text: "first",
        },
        Original {
            source: "README, the value of the most recently updated key of a list: /?k=K1,K2",
            method: "GET",
            path: "/?k=1GM35N000010,1GU44N010910",
            body: None,
            status: 200,
            text: "second",
        },
    ]
}

#[test]
fn the_original_kvs_readme_forms_answer_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let admin = fake_secret();
    let server = ServerProcess::start(&dir.path().join("data"), &admin);
    // The operator's one step: the form interface's project is made
    // readable without a credential, as the original's reads were; writes
    // still need the passcode (a write token).
    let opened = server
        .admin()
        .patch_json("/v1/projects/default", &json!({"public": "read"}));
    assert_eq!(opened.status, 200, "{}", opened.text());
    let passcode = server.admin().mint("default", json!({"role": "write"}));
    let client = Client::new(&server.url, None);
    for example in original_readme() {
        let path = example.path.replace("<PASSCODE>", &passcode);
        let body = example.body.map(|b| b.replace("<PASSCODE>", &passcode));
        let answer = client.send(
            example.method,
            &path,
            body.as_deref().map(str::as_bytes),
            &[CURL_FORM],
        );
        let context = format!(
            "{}: answered {} {}",
            example.source,
            answer.status,
            answer.text()
        );
        assert_eq!(answer.status, example.status, "{context}");
        assert!(
            answer
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{context}"
        );
        assert_eq!(answer.text().trim_end(), example.text, "{context}");
    }
}
