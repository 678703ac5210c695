//! Requests that miss the API: unknown routes (404 `not_found`), known
//! routes with a method they do not answer (405 with `Allow`), and resources
//! that already exist (409). Whatever goes wrong, the answer is the
//! contract's JSON error, never plain text.

use serde_json::json;

use crate::support::{Setup, expect_error, expect_error_shape, expect_status};

#[test]
fn an_unknown_route_is_404_not_found_in_json() {
    let setup = Setup::new("p", json!({}));
    let paths = [
        "/nope",
        "/v1",
        "/v1/",
        "/v1/nope",
        "/v2/projects",
        "/v1/projects/",
        "/v1/projects/p/",
        "/v1/projects/p/nope",
        "/v1/projects/p/kvx",
        "/v1/projects/p/tokens/",
        "/v1/projects/p/tokens/a/b",
        "/v1/tokens/",
        "/v1/tokens/a/b",
        "/v1/status/more",
        "/healthz/",
    ];
    for path in paths {
        for method in ["GET", "POST", "DELETE"] {
            let answer = setup.admin.send(method, path, None, &[]);
            assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text());
            expect_error(&answer, 404, "not_found");
        }
    }
}

#[test]
fn a_method_a_route_does_not_answer_is_405_with_allow_and_a_json_body() {
    let setup = Setup::new("p", json!({}));
    let id = setup.admin.get("/v1/whoami").json()["id"].clone();
    let id = id.as_str().unwrap();
    let cases: [(&str, String, &[&str]); 16] = [
        ("POST", "/healthz".into(), &["GET"]),
        ("PUT", "/readyz".into(), &["GET"]),
        ("DELETE", "/v1/status".into(), &["GET"]),
        ("POST", "/v1/whoami".into(), &["GET"]),
        ("PUT", "/v1/projects".into(), &["GET", "POST"]),
        ("DELETE", "/v1/projects".into(), &["GET", "POST"]),
        ("POST", setup.path(""), &["GET", "PATCH", "DELETE"]),
        ("PUT", setup.path(""), &["GET", "PATCH", "DELETE"]),
        ("PUT", setup.path("/tokens"), &["GET", "POST"]),
        ("GET", setup.path(&format!("/tokens/{id}")), &["DELETE"]),
        ("PATCH", "/v1/tokens".into(), &["GET", "POST"]),
        ("GET", format!("/v1/tokens/{id}"), &["DELETE"]),
        ("PATCH", setup.kv("k"), &["GET", "PUT", "DELETE"]),
        ("POST", setup.kv("k"), &["GET", "PUT", "DELETE"]),
        ("PUT", setup.path("/kv"), &["GET", "DELETE"]),
        ("POST", setup.path("/kv"), &["GET", "DELETE"]),
    ];
    for (method, path, allowed) in &cases {
        let answer = setup.admin.send(
            method,
            path,
            Some(b"{}"),
            &[("Content-Type", "application/json")],
        );
        assert_eq!(answer.status, 405, "{method} {path}: {}", answer.text());
        expect_error(&answer, 405, "method_not_allowed");
        let allow: Vec<String> = answer
            .header("allow")
            .unwrap_or_else(|| panic!("no Allow on {method} {path}"))
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        for expected in *allowed {
            assert!(
                allow.iter().any(|m| m == expected),
                "{method} {path}: {allow:?}"
            );
        }
        assert!(
            !allow.iter().any(|m| m == method),
            "{method} {path}: {allow:?}"
        );
    }
    // Nothing was done by the refused requests.
    let project = setup.admin.get(&setup.path("")).json();
    assert_eq!(project["keys"], 0);
    expect_error(&setup.admin.get(&setup.kv("k")), 404, "key_not_found");
}

#[test]
fn a_project_that_exists_already_is_409_conflict() {
    let setup = Setup::new("p", json!({"max_keys": 3}));
    let answer = setup
        .admin
        .post_json("/v1/projects", &json!({"id": "p", "max_keys": 9}));
    expect_error(&answer, 409, "conflict");
    // The default project exists from the start.
    let answer = setup
        .admin
        .post_json("/v1/projects", &json!({"id": "default"}));
    expect_error(&answer, 409, "conflict");
    assert_eq!(setup.admin.get(&setup.path("")).json()["max_keys"], 3);
    expect_status(&setup.manage.get("/v1/whoami"), 200);
}

#[test]
fn every_refusal_is_a_json_error_and_never_plain_text() {
    let setup = Setup::new("p", json!({"max_value_bytes": 8, "max_keys": 1}));
    let manage = &setup.manage;
    let reader = setup.client("read");
    let anonymous = setup.anonymous();
    expect_status(&manage.put(&setup.kv("k"), b"v"), 201);
    let answers = [
        anonymous.get(&setup.path("")),
        anonymous.post_json("/v1/projects", &json!({"id": "q"})),
        reader.put(&setup.kv("k"), b"v"),
        reader.get("/v1/status"),
        reader.get("/v1/projects/ghost"),
        manage.get(&setup.kv("absent")),
        manage.delete(&setup.path("/tokens/tok_absent")),
        setup.admin.get("/no/such/route"),
        setup.admin.send("PATCH", "/healthz", None, &[]),
        setup.admin.post_json("/v1/projects", &json!({"id": "p"})),
        manage.send(
            "PUT",
            &setup.kv("k"),
            Some(b"v"),
            &[("If-Match", "\"999\"")],
        ),
        manage.put(&setup.kv("k"), b"123456789"),
        manage.put(&setup.kv("second"), b"v"),
        setup.admin.send(
            "POST",
            "/v1/tokens",
            Some(b"x"),
            &[("Content-Type", "text/plain")],
        ),
        setup.admin.post_json("/v1/projects", &json!({"id": "-"})),
        manage.put("/v1/projects/p/kv/a/%2E%2E/b", b"v"),
        manage.get(&setup.path("/kv?limit=0")),
        manage.send(
            "GET",
            &setup.kv("absent"),
            None,
            &[("Accept", "text/plain, text/html")],
        ),
    ];
    let mut statuses = Vec::new();
    for answer in &answers {
        expect_error_shape(answer);
        statuses.push(answer.status);
    }
    statuses.sort_unstable();
    statuses.dedup();
    assert_eq!(
        statuses,
        [400, 401, 403, 404, 405, 409, 412, 413, 415],
        "the refusals above cover every kind"
    );
}

#[test]
fn the_openapi_document_answers_without_a_token_and_names_every_v1_route() {
    let setup = Setup::new("p", json!({}));
    let answer = setup.anonymous().get("/v1/openapi.json");
    expect_status(&answer, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let document = answer.json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/projects/{project}/kv/{key}"));
    assert!(!paths.keys().any(|p| p.starts_with("/api/")));
    let allowed = setup
        .anonymous()
        .send("POST", "/v1/openapi.json", None, &[]);
    expect_error(&allowed, 405, "method_not_allowed");
}

/// A body the server refuses may carry a secret where a name or a value
/// should be (a pasted token as a field name, a role, a mode). The 400 says
/// what is wrong and where, and never sends the secret back.
#[test]
fn a_refused_json_body_is_described_without_repeating_its_text() {
    let setup = Setup::new("p", json!({}));
    let secret = "kvs_Wq3rT9secretSECRETsecret0123456789abcdefgh";
    let cases: Vec<(&str, String, serde_json::Value)> = vec![
        (
            "POST",
            "/v1/projects".into(),
            json!({ "id": "q", secret: 1 }),
        ),
        (
            "POST",
            "/v1/projects".into(),
            json!({ "id": "q", "mode": secret }),
        ),
        (
            "POST",
            "/v1/projects".into(),
            json!({ "id": "q", "storage": secret }),
        ),
        (
            "POST",
            "/v1/projects".into(),
            json!({ "id": "q", "max_keys": secret }),
        ),
        ("PATCH", setup.path(""), json!({ secret: true })),
        ("POST", setup.path("/tokens"), json!({ "role": secret })),
        (
            "POST",
            setup.path("/tokens"),
            json!({ "role": "read", "expires_in": [secret] }),
        ),
        (
            "POST",
            setup.path("/txn"),
            json!({ "ops": [{ "op": secret, "key": "a" }] }),
        ),
        (
            "POST",
            setup.path("/txn"),
            json!({ "ops": [{ "op": "put", "key": "a", "value": 1, secret: 1 }] }),
        ),
        (
            "POST",
            setup.path("/txn"),
            json!({ "ops": [{ "op": "put", "key": "a", "value": 1, "ttl": [secret] }] }),
        ),
        (
            "POST",
            setup.path("/txn"),
            json!({ "checks": [{ "key": "a", secret: 1 }], "ops": [] }),
        ),
        ("POST", setup.path("/import"), json!({ secret: [] })),
        (
            "POST",
            setup.path("/import"),
            json!({ "keys": [{ "key": "a", "value": "1", secret: 1 }] }),
        ),
        (
            "POST",
            setup.path("/import"),
            json!({ "keys": [{ "key": "a", "value": [secret] }] }),
        ),
        (
            "POST",
            setup.path("/import"),
            json!({ "keys": [{ "key": "a", "value": "1", "created_at": secret }] }),
        ),
        (
            "POST",
            "/v1/projects".into(),
            json!({ "id": "q", "max_keys": -4111111111111111_i64 }),
        ),
        (
            "POST",
            "/api/v1/projects".into(),
            json!({ "name": "n", secret: 1 }),
        ),
        (
            "POST",
            "/api/v1/projects".into(),
            json!({ "name": "n", "storage": secret }),
        ),
    ];
    // Each request is refused (400), and what came back is kept if it
    // holds the secret.
    let mut repeated = Vec::new();
    let mut refused = |method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]| {
        let answer = setup.admin.send(method, path, body, headers);
        let text = answer.text();
        assert_eq!(answer.status, 400, "{method} {path}: {text}");
        if text.contains("Wq3rT9secret") || text.contains("4111111111111111") {
            repeated.push(format!("{method} {path}: {text}"));
        }
    };
    for (method, path, body) in cases {
        let body = serde_json::to_vec(&body).unwrap();
        refused(
            method,
            &path,
            Some(&body),
            &[("content-type", "application/json")],
        );
    }
    // The same text in a query parameter or a header that takes a number,
    // a flag, a duration or a tag.
    setup.admin.put(&setup.kv("a"), b"1");
    let if_match = [("if-match", secret)];
    let kv = setup.kv("a");
    let query = [
        ("GET", format!("{kv}?meta={secret}"), &[][..]),
        ("PUT", format!("{kv}?ttl={secret}"), &[]),
        (
            "POST",
            format!("{}?by={secret}", setup.path("/incr/n")),
            &[],
        ),
        ("GET", format!("{kv}?wait=1s&after={secret}"), &[]),
        ("PUT", kv.clone(), &if_match),
        ("GET", format!("{kv}?wait={secret}&after=1"), &[]),
        ("GET", format!("/healthz?{secret}=%FF"), &[]),
    ];
    for (method, path, headers) in query {
        let body = (method != "GET").then_some(&b"1"[..]);
        refused(method, &path, body, headers);
    }
    assert!(
        repeated.is_empty(),
        "the secret came back:\n{}",
        repeated.join("\n")
    );
}
