//! Anonymous access: requests that carry no credential at all. A project is
//! closed to them until an admin sets `public` to `read` or `write`; then
//! they may do what a read (or write) token without prefix does with that
//! project's keys, through v1, the form interface and Simple-PyKV's store
//! routes, and nothing else. A request that presents any credential is
//! judged by it alone: a wrong or revoked one is 401, never anonymous.

use serde_json::{Value, json};

use crate::common::{Answer, TestServer, kv};
use crate::support::{Api, Setup, expect_error, expect_status, expect_unauthorized, put};

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// Every key route of project `p`, as (method, path, body, headers): the
/// reads first, then the writes.
fn reads(p: &str) -> Vec<(&'static str, String, Option<Vec<u8>>)> {
    vec![
        ("GET", kv(p, "k"), None),
        ("HEAD", kv(p, "k"), None),
        ("GET", format!("/v1/projects/{p}/kv"), None),
        ("GET", format!("/v1/projects/{p}/kv?values=true"), None),
        ("GET", format!("/v1/projects/{p}/latest?keys=k"), None),
        (
            "POST",
            format!("/v1/projects/{p}/txn"),
            Some(br#"{"ops":[{"op":"get","key":"k"}]}"#.to_vec()),
        ),
        ("GET", format!("/api/v1/projects/{p}/store/k"), None),
        ("GET", format!("/api/v1/projects/{p}/store/k/value"), None),
        ("GET", format!("/api/v1/projects/{p}/store"), None),
    ]
}

fn writes(p: &str) -> Vec<(&'static str, String, Option<Vec<u8>>)> {
    vec![
        ("PUT", kv(p, "k"), Some(b"changed".to_vec())),
        ("PUT", kv(p, "new"), Some(b"new".to_vec())),
        ("DELETE", kv(p, "k"), None),
        ("DELETE", format!("/v1/projects/{p}/kv?prefix=k"), None),
        ("POST", format!("/v1/projects/{p}/incr/n"), None),
        (
            "POST",
            format!("/v1/projects/{p}/txn"),
            Some(br#"{"ops":[{"op":"put","key":"k","value":"changed"}]}"#.to_vec()),
        ),
        (
            "PUT",
            format!("/api/v1/projects/{p}/store/k"),
            Some(b"changed".to_vec()),
        ),
        ("DELETE", format!("/api/v1/projects/{p}/store/k"), None),
        ("DELETE", format!("/api/v1/projects/{p}/store"), None),
    ]
}

fn send(client: &Api, (method, path, body): &(&'static str, String, Option<Vec<u8>>)) -> Answer {
    let json = ("content-type", "application/json");
    let headers: &[(&str, &str)] = if path.ends_with("/txn") { &[json] } else { &[] };
    client.send(method, path, body.as_deref(), headers)
}

/// The status of a refused request, and for a Simple-PyKV route its
/// envelope's `status_code` too.
#[track_caller]
fn expect_refused(answer: &Answer, status: u16, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.text());
    if answer.status != 200 && !answer.body.is_empty() {
        let body = answer.json();
        let code = body["status_code"].as_u64().map(|c| c as u16);
        assert!(
            body["error"]["code"].is_string() || code == Some(status),
            "{what}: {body}"
        );
    }
}

fn set_public(setup: &Setup, access: &str) -> Value {
    let answer = setup
        .admin
        .patch_json(&setup.path(""), &json!({ "public": access }));
    expect_status(&answer, 200);
    answer.json()
}

#[test]
fn a_project_is_closed_to_requests_without_credential_until_an_admin_opens_it() {
    let setup = Setup::new("p", json!({}));
    put(&setup.admin, &setup.kv("k"), b"v");
    assert_eq!(setup.admin.get(&setup.path("")).json()["public"], "none");
    let anonymous = setup.anonymous();
    for request in reads("p").iter().chain(&writes("p")) {
        let answer = send(&anonymous, request);
        expect_refused(&answer, 401, &format!("{} {}", request.0, request.1));
    }
    expect_unauthorized(&anonymous.get(&setup.path("/kv")));
    // The form interface's project is closed the same way.
    expect_unauthorized(&anonymous.get("/?k=k"));
    let posted = anonymous.send("POST", "/", Some(b"k=v"), &[FORM]);
    expect_unauthorized(&posted);
    assert_eq!(setup.admin.get(&setup.kv("k")).body, b"v");
}

#[test]
fn a_public_read_project_answers_reads_without_credential_and_refuses_every_write() {
    let setup = Setup::new("p", json!({}));
    put(&setup.admin, &setup.kv("k"), b"v");
    assert_eq!(set_public(&setup, "read")["public"], "read");
    let anonymous = setup.anonymous();
    for request in reads("p") {
        let answer = send(&anonymous, &request);
        assert_eq!(
            answer.status,
            200,
            "{} {}: {}",
            request.0,
            request.1,
            answer.text()
        );
    }
    assert_eq!(anonymous.get(&setup.kv("k")).body, b"v");
    for request in writes("p") {
        let answer = send(&anonymous, &request);
        expect_refused(&answer, 403, &format!("{} {}", request.0, request.1));
    }
    // Nothing was changed by the refused writes.
    assert_eq!(anonymous.get(&setup.kv("k")).body, b"v");
    expect_error(&anonymous.get(&setup.kv("new")), 404, "key_not_found");
    expect_error(&anonymous.get(&setup.kv("n")), 404, "key_not_found");

    // The setting survives a restart (it is stored with the project).
    let setup = setup.restart();
    assert_eq!(setup.anonymous().get(&setup.kv("k")).body, b"v");
}

#[test]
fn a_public_write_project_lets_anyone_use_its_keys_and_nothing_else() {
    let setup = Setup::new("p", json!({}));
    setup.admin.create_project("closed", json!({}));
    put(&setup.admin, &kv("closed", "k"), b"secret");
    set_public(&setup, "write");
    let anonymous = setup.anonymous();
    for request in writes("p") {
        put(&setup.admin, &setup.kv("k"), b"v");
        let answer = send(&anonymous, &request);
        assert!(
            answer.status < 300,
            "{} {}: {} {}",
            request.0,
            request.1,
            answer.status,
            answer.text()
        );
    }
    expect_status(&anonymous.put(&setup.kv("mine"), b"anyone's"), 201);
    assert_eq!(setup.admin.get(&setup.kv("mine")).body, b"anyone's");

    // Never the project's settings, tokens, or any server route; never
    // another project.
    let refused: &[(&str, &str, Option<Value>)] = &[
        ("GET", "/v1/projects/p", None),
        ("PATCH", "/v1/projects/p", Some(json!({"public": "none"}))),
        ("DELETE", "/v1/projects/p", None),
        ("GET", "/v1/projects/p/tokens", None),
        (
            "POST",
            "/v1/projects/p/tokens",
            Some(json!({"role": "read"})),
        ),
        ("POST", "/v1/projects/p/import", Some(json!({"keys": []}))),
        ("GET", "/v1/projects", None),
        ("POST", "/v1/projects", Some(json!({"id": "mine"}))),
        ("GET", "/v1/tokens", None),
        ("POST", "/v1/tokens", Some(json!({}))),
        ("GET", "/v1/status", None),
        ("GET", "/v1/whoami", None),
        ("GET", "/v1/backup", None),
        ("POST", "/v1/verify", None),
        ("POST", "/v1/compact", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/projects/closed/kv/k", None),
        ("PUT", "/v1/projects/closed/kv/k", Some(json!("x"))),
        ("GET", "/api/v1/projects/closed/store/k", None),
        ("GET", "/api/v1/projects/p", None),
        (
            "PUT",
            "/api/v1/projects/p",
            Some(json!({"storage": {"on_disk": false}})),
        ),
        ("POST", "/api/v1/projects/p/config/regenerate-api-key", None),
        ("GET", "/api/v1/projects", None),
        ("GET", "/status", None),
    ];
    for (method, path, body) in refused {
        let bytes = body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
        let answer = anonymous.send(
            method,
            path,
            bytes.as_deref(),
            &[("content-type", "application/json")],
        );
        expect_refused(&answer, 401, &format!("{method} {path}"));
    }
    assert_eq!(setup.admin.get(&kv("closed", "k")).body, b"secret");
    let project = setup.admin.get(&setup.path("")).json();
    assert_eq!(project["public"], "write");
    assert_eq!(project["storage"], "disk");
}

#[test]
fn a_credential_on_a_public_project_is_judged_alone_and_a_wrong_one_is_401() {
    let setup = Setup::new("p", json!({}));
    put(&setup.admin, &setup.kv("k"), b"v");
    set_public(&setup, "write");
    let wrong = setup.admin.with_token("kvs_not-a-token-of-this-server");
    expect_unauthorized(&wrong.get(&setup.kv("k")));
    expect_unauthorized(&wrong.put(&setup.kv("k"), b"x"));
    let answer = wrong.get("/api/v1/projects/p/store/k");
    expect_refused(&answer, 401, "Simple-PyKV read with a wrong key");
    expect_unauthorized(&setup.anonymous().get("/?k=k&auth=kvs_wrong"));

    let (reader, minted) = setup.token(json!({"role": "read"}));
    expect_status(&reader.get(&setup.kv("k")), 200);
    // A read token is a read token, though anyone may write without one.
    expect_error(&reader.put(&setup.kv("k"), b"x"), 403, "forbidden");
    let id = minted["id"].as_str().unwrap();
    expect_status(
        &setup.admin.delete(&setup.path(&format!("/tokens/{id}"))),
        204,
    );
    expect_unauthorized(&reader.get(&setup.kv("k")));

    // A token of another project is as refused as on a closed project.
    let other = setup
        .admin
        .with_token(&setup.admin.create_project("q", json!({})));
    expect_error(&other.get(&setup.kv("k")), 404, "project_not_found");
    // An empty credential is a credential: refused, not anonymous.
    let empty = setup
        .anonymous()
        .send("GET", &setup.kv("k"), None, &[("x-api-key", "")]);
    expect_unauthorized(&empty);
    assert_eq!(setup.admin.get(&setup.kv("k")).body, b"v");
}

/// A reverse proxy with a sign-in of its own (nginx's `auth_basic`) passes
/// its `Authorization: Basic` on: that is not a kvs credential, so it is
/// ignored, as Simple-PyKV ignored it, and the request is judged by its
/// other credential, or as one without any.
#[test]
fn an_authorization_header_of_another_scheme_is_no_credential() {
    let setup = Setup::new("p", json!({}));
    put(&setup.admin, &setup.kv("k"), b"v");
    let basic = ("authorization", "Basic dXNlcjpwYXNz");
    let secret = setup.manage.secret();
    let anonymous = setup.anonymous();
    let with_key = anonymous.send(
        "GET",
        &setup.kv("k"),
        None,
        &[basic, ("x-api-key", &secret)],
    );
    expect_status(&with_key, 200);
    assert_eq!(with_key.body, b"v");
    let pykv = anonymous.send(
        "GET",
        "/api/v1/projects/p/store/k",
        None,
        &[basic, ("x-api-key", &secret)],
    );
    expect_status(&pykv, 200);
    // Alone, on a closed project: no credential, so 401.
    expect_unauthorized(&anonymous.send("GET", &setup.kv("k"), None, &[basic]));
    // On a public one: anonymous.
    set_public(&setup, "read");
    let open = anonymous.send("GET", &setup.kv("k"), None, &[basic]);
    expect_status(&open, 200);
    // Any other value is a credential, and never a valid one: 401, not
    // anonymous, on the public project too.
    for other in ["kvs_not-a-token", "Token kvs_not-a-token", "Bearer"] {
        let refused = anonymous.send("GET", &setup.kv("k"), None, &[("authorization", other)]);
        expect_unauthorized(&refused);
    }
    // A Bearer credential is still one, and two different ones are 401.
    let two = anonymous.send(
        "GET",
        &setup.kv("k"),
        None,
        &[
            ("authorization", "Bearer kvs_wrong"),
            ("x-api-key", &secret),
        ],
    );
    expect_unauthorized(&two);
}

#[test]
fn only_an_admin_opens_or_closes_a_project_and_closing_takes_effect_at_once() {
    let setup = Setup::new("p", json!({"public": "read"}));
    put(&setup.admin, &setup.kv("k"), b"v");
    assert_eq!(setup.admin.get(&setup.path("")).json()["public"], "read");
    let anonymous = setup.anonymous();
    expect_status(&anonymous.get(&setup.kv("k")), 200);

    let refused = setup
        .manage
        .patch_json(&setup.path(""), &json!({"public": "write"}));
    expect_error(&refused, 403, "forbidden");
    let pykv_open = setup.manage.send(
        "PUT",
        "/api/v1/projects/p",
        Some(br#"{"authentication": {"enabled": false}}"#),
        &[],
    );
    assert_eq!(pykv_open.status, 400, "{}", pykv_open.text());
    for bad in [json!("everyone"), json!(true), json!(1)] {
        let answer = setup
            .admin
            .patch_json(&setup.path(""), &json!({ "public": bad }));
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text());
    }
    let created = setup
        .admin
        .post_json("/v1/projects", &json!({"id": "x", "public": "all"}));
    expect_error(&created, 400, "bad_request");
    assert_eq!(setup.admin.get(&setup.path("")).json()["public"], "read");

    set_public(&setup, "none");
    expect_unauthorized(&anonymous.get(&setup.kv("k")));
}

#[test]
fn status_and_listings_say_plainly_which_projects_are_public() {
    let setup = Setup::new("p", json!({"public": "write"}));
    setup
        .admin
        .create_project("r", json!({"public": "read", "storage": "memory"}));
    setup.admin.create_project("closed", json!({}));
    let status = setup.admin.get("/v1/status").json();
    assert_eq!(
        status["public_projects"],
        json!({"p": "write", "r": "read"})
    );
    assert_eq!(status["simple_pykv_open_admin"], false);
    let listed = setup.admin.get("/v1/projects").json();
    for project in listed["projects"].as_array().unwrap() {
        let expected = match project["id"].as_str().unwrap() {
            "p" => "write",
            "r" => "read",
            _ => "none",
        };
        assert_eq!(project["public"], expected, "{project}");
    }
    // Simple-PyKV's project object: authentication is disabled exactly when
    // anyone may read and write.
    let pykv = setup.admin.get("/api/v1/projects").json();
    assert_eq!(pykv["data"]["p"]["authentication"]["enabled"], false);
    assert_eq!(pykv["data"]["r"]["authentication"]["enabled"], true);
    assert_eq!(pykv["data"]["closed"]["authentication"]["enabled"], true);
}

#[test]
fn simple_pykv_admin_routes_need_a_key_unless_the_server_is_started_open() {
    let closed = TestServer::start();
    let anonymous = closed.anonymous();
    expect_refused(&anonymous.get("/status"), 401, "/status");
    expect_refused(&anonymous.get("/api/v1/projects"), 401, "listing");

    let open = TestServer::start_with(|settings| settings.simple_pykv_open_admin = true);
    let anonymous = open.anonymous();
    assert_eq!(anonymous.get("/status").status, 200);
    let created = anonymous.send(
        "POST",
        "/api/v1/projects",
        Some(br#"{"id":"made_without_key"}"#),
        &[],
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(anonymous.get("/api/v1/projects").status, 200);
    // Only Simple-PyKV's admin routes: v1 still needs a credential, and
    // the new project's keys need its key.
    expect_unauthorized(&anonymous.get("/v1/projects"));
    expect_unauthorized(&anonymous.get("/v1/status"));
    let read = anonymous.get("/api/v1/projects/made_without_key/store");
    expect_refused(&read, 401, "a project's store");
    let status = open.admin().get("/v1/status").json();
    assert_eq!(status["simple_pykv_open_admin"], true);
    // A wrong key is still refused there.
    let wrong = anonymous.send("GET", "/status", None, &[("x-api-key", "wrong")]);
    expect_refused(&wrong, 401, "/status with a wrong key");
}

#[test]
fn the_form_interface_serves_a_public_default_project_without_a_passcode() {
    let setup = Setup::new("p", json!({}));
    put(&setup.admin, &kv("default", "greeting"), b"hello");
    let anonymous = setup.anonymous();
    let open = |access: &str| {
        let answer = setup
            .admin
            .patch_json("/v1/projects/default", &json!({ "public": access }));
        expect_status(&answer, 200);
    };

    open("read");
    let read = anonymous.get("/?k=greeting");
    expect_status(&read, 200);
    assert_eq!(read.body, b"hello");
    let posted = anonymous.send("POST", "/", Some(b"greeting=changed"), &[FORM]);
    expect_error(&posted, 403, "forbidden");
    // A wrong passcode is refused, public or not.
    expect_unauthorized(&anonymous.get("/?k=greeting&auth=kvs_wrong"));

    open("write");
    let posted = anonymous.send("POST", "/", Some(b"greeting=changed"), &[FORM]);
    expect_status(&posted, 200);
    assert_eq!(anonymous.get("/?k=greeting").body, b"changed");
    // A post from another site is still refused.
    let cross = anonymous.send(
        "POST",
        "/",
        Some(b"greeting=evil"),
        &[FORM, ("sec-fetch-site", "cross-site")],
    );
    expect_error(&cross, 403, "forbidden");
    assert_eq!(setup.admin.get(&kv("default", "greeting")).body, b"changed");
}

/// Public metrics are open to requests without a credential; one that
/// presents a wrong credential is judged by it, as everywhere: 401.
#[test]
fn public_metrics_refuse_a_wrong_credential() {
    let server = TestServer::start_with(|settings| settings.metrics_public = true);
    let anonymous = Api::new(&server.url, None);
    expect_status(&anonymous.get("/metrics"), 200);
    let wrong = Api::new(&server.url, Some(&crate::common::fake_secret()));
    expect_unauthorized(&wrong.get("/metrics"));
    let empty = anonymous.send("GET", "/metrics", None, &[("x-api-key", "")]);
    expect_unauthorized(&empty);
    let admin = Api::new(&server.url, Some(&server.admin_token));
    expect_status(&admin.get("/metrics"), 200);
}
