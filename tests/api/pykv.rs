//! The Simple-PyKV surface (`/status`, `/api/v1/projects…`): every answer,
//! errors included, in its envelope `{"System", "data", "message",
//! "status_code"}`; who may do what (401 for any token not valid for the
//! project, with nothing changed); `new_api_key` and its regeneration, which
//! revokes only the keys this surface issued; JSON bodies kept as JSON and
//! the rest as text; and the storage it shares with v1.

use serde_json::{Value, json};

use crate::common::{Answer, TestServer, fake_secret};
use crate::support::{Api, expect_error, expect_status, mint};

/// Asserts the envelope with this status and returns its `data`.
#[track_caller]
fn envelope(answer: &Answer, status: u16) -> Value {
    assert_eq!(
        answer.status,
        status,
        "unexpected status; the body was {:?}",
        answer.text()
    );
    let content_type = answer.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let mut body = answer.json();
    let mut fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["System", "data", "message", "status_code"],
        "{body}"
    );
    assert_eq!(body["status_code"], json!(status));
    assert!(body["message"].is_string(), "{body}");
    body["data"].take()
}

fn project(id: &str, tail: &str) -> String {
    format!("/api/v1/projects/{id}{tail}")
}

fn store(id: &str, key: &str) -> String {
    project(id, &format!("/store/{key}"))
}

/// A server and a project `p` made through this surface: the admin and the
/// project's `new_api_key`.
fn start() -> (TestServer, Api, Api) {
    let server = TestServer::start();
    let admin = server.admin();
    let key = create(&admin, json!({"id": "p"}));
    (server, admin, key)
}

/// Creates a project as `admin` and returns a client of its new key.
#[track_caller]
fn create(admin: &Api, body: Value) -> Api {
    let data = envelope(&admin.post_json("/api/v1/projects", &body), 201);
    assert_eq!(data["id"], body["id"]);
    admin.with_token(data["new_api_key"].as_str().expect("new_api_key"))
}

#[track_caller]
fn put_text(client: &Api, path: &str, body: &[u8], content_type: &str) -> Value {
    let answer = client.send("PUT", path, Some(body), &[("Content-Type", content_type)]);
    envelope(&answer, 200)
}

fn ids_of_source(admin: &Api, source: &str) -> Vec<String> {
    let answer = admin.get("/v1/projects/p/tokens");
    expect_status(&answer, 200);
    answer.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["source"] == source)
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn projects_are_created_read_changed_listed_and_deleted_in_the_envelope() {
    let server = TestServer::start();
    let admin = server.admin();
    let key = create(
        &admin,
        json!({"id": "p", "on_disk": false, "keys_and_values_discoverable": false,
               "project_discoverable": true}),
    );
    let me = key.get("/v1/whoami").json();
    assert_eq!(
        (&me["role"], &me["project"], &me["source"]),
        (&json!("manage"), &json!("p"), &json!("simple-pykv"))
    );

    let data = envelope(&key.get(&project("p", "")), 200);
    assert_eq!(data["id"], "p");
    assert_eq!(data["on_disk"], false);
    assert_eq!(data["keys_and_values_discoverable"], false);
    assert!(data["created_at"].is_i64(), "{data}");
    assert_eq!(admin.get("/v1/projects/p").json()["storage"], "memory");

    let changed = key.send(
        "PUT",
        &project("p", ""),
        Some(br#"{"keys_and_values_discoverable": true, "on_disk": false}"#),
        &[("Content-Type", "application/json")],
    );
    // routes.md answers an update with `data: null`.
    assert_eq!(envelope(&changed, 200), Value::Null);
    let data = envelope(&key.get(&project("p", "")), 200);
    assert_eq!(data["keys_and_values_discoverable"], true);
    assert_eq!(data["security"]["keys_and_values_discoverable"], true);
    // The project's own key may move its storage here (routes.md's update
    // example), nested as routes.md shows it; a key with a prefix may not.
    let moving = json!({"storage": {"on_disk": true}});
    let (narrow, _) = mint(&admin, "p", json!({"role": "manage", "prefix": "a/"}));
    let refused = narrow.send(
        "PUT",
        &project("p", ""),
        Some(moving.to_string().as_bytes()),
        &[],
    );
    envelope(&refused, 403);
    let moved = key.send(
        "PUT",
        &project("p", ""),
        Some(moving.to_string().as_bytes()),
        &[],
    );
    envelope(&moved, 200);
    let data = envelope(&key.get(&project("p", "")), 200);
    assert_eq!(
        (&data["on_disk"], &data["storage"]["on_disk"]),
        (&json!(true), &json!(true))
    );
    let back = json!({"on_disk": false});
    envelope(
        &admin.send(
            "PUT",
            &project("p", ""),
            Some(back.to_string().as_bytes()),
            &[],
        ),
        200,
    );
    envelope(
        &admin.send(
            "PUT",
            &project("p", ""),
            Some(moving.to_string().as_bytes()),
            &[],
        ),
        200,
    );
    let v1 = admin.get("/v1/projects/p").json();
    assert_eq!(
        (&v1["storage"], &v1["keys_discoverable"]),
        (&json!("disk"), &json!(true))
    );

    let listed = envelope(&admin.get("/api/v1/projects"), 200);
    assert_eq!(listed["p"]["id"], "p", "{listed}");
    envelope(&key.get("/api/v1/projects"), 401);
    envelope(&key.post_json("/api/v1/projects", &json!({"id": "q"})), 401);
    envelope(
        &admin.post_json("/api/v1/projects", &json!({"id": "p"})),
        400,
    );
    envelope(
        &admin.post_json("/api/v1/projects", &json!({"id": "-bad"})),
        400,
    );
    envelope(
        &admin.post_json("/api/v1/projects", &json!({"id": "q", "x": 1})),
        400,
    );
    envelope(&admin.get("/status"), 200);
    envelope(&key.get("/status"), 401);

    envelope(&key.delete(&project("p", "")), 401);
    expect_status(&admin.get("/v1/projects/p"), 200);
    envelope(&admin.delete(&project("p", "")), 200);
    expect_error(&admin.get("/v1/projects/p"), 404, "project_not_found");
    envelope(&admin.get(&project("p", "")), 404);
    envelope(&key.get(&project("p", "")), 401);
}

#[test]
fn a_token_not_valid_for_the_project_gets_401_on_every_route_and_changes_nothing() {
    let (server, admin, key) = start();
    put_text(&key, &store("p", "k"), b"v", "text/plain");
    let other_pykv = create(&admin, json!({"id": "q"}));
    let other_v1 = admin.with_token(&admin.create_project("r", json!({})));
    let strangers = [
        server.anonymous(),
        admin.with_token(&fake_secret()),
        other_pykv,
        other_v1,
    ];
    let routes = [
        ("GET", project("p", "")),
        ("PUT", project("p", "")),
        ("DELETE", project("p", "")),
        ("POST", project("p", "/config/regenerate-api-key")),
        ("GET", project("p", "/store")),
        ("DELETE", project("p", "/store")),
        ("PUT", store("p", "k")),
        ("PUT", store("p", "new")),
        ("GET", store("p", "k")),
        ("GET", store("p", "k/value")),
        ("DELETE", store("p", "k")),
    ];
    let tokens_before = ids_of_source(&admin, "simple-pykv");
    for (method, path) in &routes {
        // Every stranger gets the same answer as one with no token: a token
        // valid elsewhere is not told apart from a made-up one.
        let mut answers = strangers.iter().map(|stranger| {
            let body = br#"{"on_disk": false}"#;
            let answer = stranger.send(method, path, Some(body), &[]);
            envelope(&answer, 401);
            (
                answer.json(),
                answer.header("www-authenticate").map(str::to_owned),
            )
        });
        let first = answers.next().expect("strangers");
        for answer in answers {
            assert_eq!(answer, first, "{method} {path}");
        }
    }
    // The same on the admin-only routes, for a project's own key.
    for (method, path) in [("GET", "/status"), ("GET", "/api/v1/projects")] {
        let unknown = admin
            .with_token(&fake_secret())
            .send(method, path, None, &[]);
        let project_key = key.send(method, path, None, &[]);
        envelope(&project_key, 401);
        assert_eq!(project_key.json(), unknown.json(), "{method} {path}");
    }
    assert_eq!(key.get(&store("p", "k/value")).body, b"v");
    envelope(&key.get(&store("p", "new")), 404);
    assert_eq!(envelope(&key.get(&project("p", "")), 200)["on_disk"], true);
    assert_eq!(ids_of_source(&admin, "simple-pykv"), tokens_before);
}

#[test]
fn regenerating_the_key_revokes_only_the_keys_this_surface_issued() {
    let (_server, admin, first) = start();
    let (reader, _) = mint(&admin, "p", json!({"role": "read"}));
    envelope(
        &first.post_json(&project("p", "/config/regenerate-api-key"), &json!({})),
        401,
    );

    let data = envelope(
        &admin.send(
            "POST",
            &project("p", "/config/regenerate-api-key"),
            None,
            &[],
        ),
        200,
    );
    let second = admin.with_token(data["new_api_key"].as_str().unwrap());
    assert_ne!(second.secret(), first.secret());
    envelope(&first.get(&project("p", "")), 401);
    envelope(&second.get(&project("p", "")), 200);
    assert_eq!(
        ids_of_source(&admin, "simple-pykv"),
        [data["api_key_id"].as_str().unwrap()]
    );
    assert_eq!(ids_of_source(&admin, "v1").len(), 1, "the reader stays");
    envelope(&reader.get(&project("p", "")), 200);
    envelope(
        &admin.send(
            "POST",
            &project("nope", "/config/regenerate-api-key"),
            None,
            &[],
        ),
        404,
    );
}

#[test]
fn a_body_that_parses_as_json_is_kept_as_json_and_anything_else_as_text() {
    let (_server, _admin, key) = start();
    let created = put_text(
        &key,
        &store("p", "doc"),
        br#"{"a": [1, true]}"#,
        "text/plain",
    );
    assert_eq!(created, Value::Null);
    let replaced = put_text(
        &key,
        &store("p", "doc"),
        br#" {"a": [1, 2]} "#,
        "text/plain",
    );
    assert_eq!(replaced, Value::Null);
    put_text(
        &key,
        &store("p", "note"),
        b"hello world",
        "application/json",
    );
    put_text(
        &key,
        &store("p", "bin"),
        b"\xff\x00",
        "application/octet-stream",
    );

    let doc = envelope(&key.get(&store("p", "doc")), 200);
    assert_eq!(doc["value"], json!({"a": [1, 2]}));
    assert_eq!(doc["content_type"], "application/json");
    assert!(
        doc["created_at"].is_i64() && doc["updated_at"].is_i64(),
        "{doc}"
    );
    let note = envelope(&key.get(&store("p", "note")), 200);
    assert_eq!(
        (&note["value"], &note["size_bytes"]),
        (&json!("hello world"), &json!(11))
    );
    assert_eq!(note["content_type"], "text/plain; charset=utf-8");
    let bin = envelope(&key.get(&store("p", "bin")), 200);
    assert_eq!(
        (&bin["value"], &bin["encoding"]),
        (&json!("/wA="), &json!("base64"))
    );

    let raw = key.get(&store("p", "doc/value"));
    expect_status(&raw, 200);
    assert_eq!(raw.header("content-type"), Some("application/json"));
    assert_eq!(raw.body, br#" {"a": [1, 2]} "#);
    assert_eq!(key.get(&store("p", "note/value")).body, b"hello world");
    assert_eq!(key.get(&store("p", "a%2Fb")).status, 404);
    put_text(&key, &store("p", "a%2Fb"), b"slash", "text/plain");
    assert_eq!(key.get(&store("p", "a%2Fb/value")).body, b"slash");
}

#[test]
fn v1_and_simple_pykv_read_and_write_the_same_keys() {
    let (_server, admin, key) = start();
    put_text(&key, &store("p", "from-pykv"), b"[1, 2]", "text/plain");
    let v1 = admin.get("/v1/projects/p/kv/from-pykv");
    assert_eq!(v1.header("content-type"), Some("application/json"));
    assert_eq!(v1.body, b"[1, 2]");
    expect_status(
        &admin.send(
            "PUT",
            "/v1/projects/p/kv/from-v1",
            Some(b"{}"),
            &[("Content-Type", "application/json")],
        ),
        201,
    );
    expect_status(&admin.put("/v1/projects/p/kv/plain", b"{}"), 201);
    assert_eq!(
        envelope(&key.get(&store("p", "from-v1")), 200)["value"],
        json!({})
    );
    assert_eq!(
        envelope(&key.get(&store("p", "plain")), 200)["value"],
        json!("{}")
    );

    let listed = envelope(&key.get(&project("p", "/store")), 200);
    let mut keys: Vec<&String> = listed.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["from-pykv", "from-v1", "plain"]);
    assert_eq!(listed["from-pykv"]["value"], json!([1, 2]));

    envelope(&key.delete(&store("p", "from-v1")), 200);
    expect_error(
        &admin.get("/v1/projects/p/kv/from-v1"),
        404,
        "key_not_found",
    );
    envelope(&key.delete(&store("p", "from-v1")), 404);
    assert_eq!(
        envelope(&key.delete(&project("p", "/store")), 200),
        Value::Null
    );
    assert_eq!(envelope(&key.get(&project("p", "/store")), 200), json!({}));
    expect_error(&admin.get("/v1/projects/p/kv/plain"), 404, "key_not_found");
}

#[test]
fn errors_come_in_the_envelope_with_their_status() {
    let (_server, admin, key) = start();
    let wrong = key.send("PATCH", &store("p", "k"), None, &[]);
    envelope(&wrong, 405);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    // A method no route of kvs answers is the route's own 405 too, in the
    // envelope, with the methods the route answers.
    for method in ["OPTIONS", "TRACE"] {
        let wrong = key.send(method, &store("p", "k"), None, &[]);
        envelope(&wrong, 405);
        assert_eq!(wrong.header("allow"), Some("GET, HEAD, PUT, DELETE"));
        envelope(&key.send(method, "/status", None, &[]), 405);
    }
    envelope(&key.send("POST", &project("p", "/store"), None, &[]), 405);
    envelope(&key.get(&store("p", "missing")), 404);
    envelope(&key.get(&store("p", "missing/value")), 404);
    // Under /status too: Simple-PyKV (Flask) has no /status/, and its
    // clients read its 404 in the envelope.
    envelope(&key.get("/status/"), 404);
    envelope(&admin.get("/status/more"), 404);
    envelope(
        &key.send("PUT", &store("p", "bad%01key"), Some(b"v"), &[]),
        400,
    );
    // Bodies are read as JSON whatever their content type says (as
    // Simple-PyKV does): a body that is not JSON is a 400.
    let text = admin.send(
        "POST",
        "/api/v1/projects",
        Some(b"id=q"),
        &[("Content-Type", "text/plain")],
    );
    envelope(&text, 400);
    // An empty body is not JSON either (routes.md: "Body must be valid
    // JSON"), on an update too, where it used to read as `{}`.
    for empty in [&b""[..], b" \n"] {
        envelope(&key.send("PUT", &project("p", ""), Some(empty), &[]), 400);
        envelope(
            &admin.send("POST", "/api/v1/projects", Some(empty), &[]),
            400,
        );
    }
    let bare = admin.send("POST", "/api/v1/projects", Some(br#"{"id":"q"}"#), &[]);
    envelope(&bare, 201);

    expect_status(
        &admin.patch_json(
            "/v1/projects/p",
            &json!({"max_value_bytes": 4, "max_keys": 1}),
        ),
        200,
    );
    envelope(&key.put(&store("p", "big"), b"12345"), 413);
    put_text(&key, &store("p", "one"), b"1234", "text/plain");
    envelope(&key.put(&store("p", "two"), b"2"), 403);

    let (reader, _) = mint(&admin, "p", json!({"role": "read"}));
    envelope(&reader.get(&store("p", "one")), 200);
    envelope(&reader.put(&store("p", "one"), b"x"), 403);
    envelope(&reader.delete(&project("p", "/store")), 403);
    envelope(
        &reader.send("PUT", &project("p", ""), Some(b"{}"), &[]),
        403,
    );

    expect_status(
        &admin.patch_json("/v1/projects/p", &json!({"keys_discoverable": false})),
        200,
    );
    envelope(&key.get(&project("p", "/store")), 403);
    envelope(&reader.get(&project("p", "/store")), 403);
    assert!(envelope(&admin.get(&project("p", "/store")), 200)["one"].is_object());
}

#[test]
fn a_stored_json_value_is_answered_as_its_stored_text_by_the_key_and_the_listing() {
    let (_server, _admin, key) = start();
    let stored = r#"{"n":123456789012345678901234567890,"b":1,"a":2,"z":-0,"e":1E2}"#;
    put_text(
        &key,
        &store("p", "exact"),
        stored.as_bytes(),
        "application/json",
    );
    for path in [store("p", "exact"), project("p", "/store")] {
        let text = key.get(&path).text();
        assert!(text.contains(stored), "{path}: {text}");
    }
    assert_eq!(key.get(&store("p", "exact/value")).text(), stored);
}

/// The store listing is streamed page by page: like a backup download, it
/// stops when its token is revoked, even while the client is still reading
/// (it went on to the end before).
#[test]
fn a_store_listing_stops_when_its_token_is_revoked() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let (server, admin, _) = start();
    admin.create_project("big", json!({}));
    // More than the sockets and the server's queue hold: about 64 MiB.
    let value = vec![b'x'; 1 << 20];
    for i in 0..64 {
        let path = crate::common::kv("big", &format!("k{i:02}"));
        assert_eq!(admin.put(&path, &value).status, 201);
    }
    let (reader, minted) = mint(&admin, "big", json!({"role": "read"}));
    let address = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/projects/big/store HTTP/1.1\r\nHost: kvs\r\nX-API-Key: {}\r\n\
         Connection: close\r\n\r\n",
        reader.secret()
    )
    .unwrap();
    let mut head = [0u8; 64];
    stream.read_exact(&mut head).unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let id = minted["id"].as_str().unwrap();
    expect_status(&admin.delete(&format!("/v1/projects/big/tokens/{id}")), 204);

    let mut received = Vec::new();
    let started = Instant::now();
    let _ = stream.read_to_end(&mut received);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the listing did not stop"
    );
    assert!(
        received.len() < 32 << 20,
        "{} bytes were sent after the token was revoked",
        received.len()
    );
}
