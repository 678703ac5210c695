//! Every input the server refuses, with the status and code the contract
//! gives it, and the proof that a refused request wrote nothing: keys,
//! project ids, JSON bodies and their content types, value sizes, key
//! quotas, durations, listing parameters.

use serde_json::{Value, json};

use crate::common::{Answer, kv};
use crate::support::{
    Api, Setup, chunked, expect_error, expect_status, list_all, put, raw_exchange,
};

/// PUT, GET and DELETE of a raw path (already percent-encoded as wanted)
/// all answer 400 `invalid_key`.
#[track_caller]
fn expect_invalid_key(client: &Api, path: &str) {
    for answer in [
        client.put(path, b"v"),
        client.get(path),
        client.delete(path),
    ] {
        assert_eq!(answer.status, 400, "{path}: {}", answer.text());
        expect_error(&answer, 400, "invalid_key");
    }
}

/// The keys of project `p`, as its manage token lists them.
fn keys(setup: &Setup) -> Vec<String> {
    list_all(&setup.manage, &setup.project, "")
}

#[test]
fn an_empty_key_is_invalid() {
    let setup = Setup::new("p", json!({}));
    expect_invalid_key(&setup.manage, "/v1/projects/p/kv/");
    assert!(keys(&setup).is_empty());
}

#[test]
fn a_key_may_have_1024_bytes_but_not_1025() {
    let setup = Setup::new("p", json!({}));
    // 512 two-byte characters are 1024 bytes.
    for key in ["k".repeat(1024), "é".repeat(512)] {
        put(&setup.manage, &setup.kv(&key), b"v");
        assert_eq!(setup.manage.get(&setup.kv(&key)).body, b"v");
    }
    for key in ["k".repeat(1025), format!("{}x", "é".repeat(512))] {
        expect_invalid_key(&setup.manage, &setup.kv(&key));
    }
    assert_eq!(keys(&setup).len(), 2);
}

#[test]
fn a_key_with_a_control_character_is_invalid() {
    let setup = Setup::new("p", json!({}));
    for key in [
        "a\u{0}b",
        "tab\t",
        "line\nfeed",
        "cr\r",
        "\u{1f}",
        "del\u{7f}",
    ] {
        expect_invalid_key(&setup.manage, &setup.kv(key));
    }
    assert!(keys(&setup).is_empty());
}

#[test]
fn a_key_with_a_dot_segment_is_invalid_raw_or_percent_encoded() {
    let setup = Setup::new("p", json!({}));
    let encoded = [
        "%2E",
        "%2E%2E",
        "%2e%2e",
        "a/%2E%2E/b",
        "a%2F..%2Fb",
        "a/%2E/b",
        "%2E/a",
        "a/%2e%2e",
        "a//%2E%2E",
    ];
    for key in encoded {
        expect_invalid_key(&setup.manage, &format!("/v1/projects/p/kv/{key}"));
    }
    // Sent raw, exactly as written: no client normalisation on the way.
    let token = setup.manage.secret();
    for key in ["..", ".", "a/../b", "a/./b", "./a", "a/..", "a//./b"] {
        for method in ["PUT", "GET", "DELETE"] {
            let head = format!(
                "{method} /v1/projects/p/kv/{key} HTTP/1.1\r\n\
                 Authorization: Bearer {token}\r\nContent-Length: 1"
            );
            let answer = raw_exchange(&setup.server, &head, b"v");
            assert_eq!(
                (answer.status, answer.code()),
                (400, "invalid_key".to_owned()),
                "{method} {key}"
            );
        }
    }
    // Dots that are not a whole segment are ordinary characters.
    for key in ["...", "a/.b", "..a", "a./b", "a/b.."] {
        put(&setup.manage, &setup.kv(key), b"v");
    }
    assert_eq!(keys(&setup), ["...", "..a", "a./b", "a/.b", "a/b.."]);
}

#[test]
fn a_key_that_is_not_utf8_is_invalid() {
    let setup = Setup::new("p", json!({}));
    for key in ["%FF", "a%C3%28", "%ED%A0%80", "%C0%AF"] {
        expect_invalid_key(&setup.manage, &format!("/v1/projects/p/kv/{key}"));
    }
    assert!(keys(&setup).is_empty());
}

#[test]
fn a_project_id_must_match_the_contract_pattern() {
    let setup = Setup::new("p", json!({}));
    let invalid = [
        "".to_owned(),
        "-a".to_owned(),
        "_a".to_owned(),
        ".a".to_owned(),
        "a/b".to_owned(),
        "a b".to_owned(),
        "ä".to_owned(),
        "a:b".to_owned(),
        "a%b".to_owned(),
        "x".repeat(65),
    ];
    for id in &invalid {
        let answer = setup.admin.post_json("/v1/projects", &json!({ "id": id }));
        expect_error(&answer, 400, "invalid_project_id");
    }
    let valid = ["0", "Z", "a_B.c-9", "a..b", &"y".repeat(64)];
    for id in valid {
        setup.admin.create_project(id, json!({}));
        expect_status(&setup.admin.get(&format!("/v1/projects/{id}")), 200);
    }
    let listed = setup.admin.get("/v1/projects").json();
    assert_eq!(
        listed["projects"].as_array().unwrap().len(),
        2 + valid.len()
    );
}

#[test]
fn a_json_body_with_an_unknown_field_is_refused() {
    let setup = Setup::new("p", json!({}));
    let requests = [
        (
            "POST",
            "/v1/projects".to_owned(),
            json!({"id": "q", "colour": "blue"}),
        ),
        (
            "PATCH",
            setup.path(""),
            json!({"max_keys": 5, "colour": "blue"}),
        ),
        (
            "POST",
            setup.path("/tokens"),
            json!({"role": "read", "scope": "x"}),
        ),
        (
            "POST",
            "/v1/tokens".to_owned(),
            json!({"name": "n", "role": "admin"}),
        ),
    ];
    for (method, path, body) in &requests {
        let bytes = serde_json::to_vec(body).unwrap();
        let headers = [("Content-Type", "application/json")];
        let answer = setup.admin.send(method, path, Some(&bytes), &headers);
        expect_error(&answer, 400, "bad_request");
    }
    expect_nothing_was_created(&setup);
}

#[test]
fn a_malformed_json_body_is_400_bad_request() {
    let setup = Setup::new("p", json!({}));
    let bodies: [&[u8]; 7] = [
        b"{\"id\": ",
        b"{'id': 'q'}",
        b"[]",
        b"\"q\"",
        b"{\"id\": 5}",
        b"\xff\xfe",
        b"{\"id\": \"q\"} trailing",
    ];
    let routes = [
        ("POST", "/v1/projects".to_owned()),
        ("PATCH", setup.path("")),
        ("POST", setup.path("/tokens")),
        ("POST", "/v1/tokens".to_owned()),
    ];
    for (method, path) in &routes {
        for body in bodies {
            let headers = [("Content-Type", "application/json")];
            let answer = setup.admin.send(method, path, Some(body), &headers);
            assert_eq!(answer.status, 400, "{method} {path} {body:?}");
            expect_error(&answer, 400, "bad_request");
        }
    }
    // Fields of the wrong type are malformed too.
    for body in [
        json!({"max_keys": "5"}),
        json!({"keys_discoverable": "yes"}),
        json!({"storage": "tape"}),
        json!({"max_value_bytes": -1}),
    ] {
        let answer = setup.admin.patch_json(&setup.path(""), &body);
        expect_error(&answer, 400, "bad_request");
    }
    for body in [
        json!({"role": "owner"}),
        json!({"role": "read", "prefix": 5}),
    ] {
        let answer = setup.admin.post_json(&setup.path("/tokens"), &body);
        expect_error(&answer, 400, "bad_request");
    }
    expect_nothing_was_created(&setup);
}

#[test]
fn a_project_id_cannot_be_changed() {
    let setup = Setup::new("p", json!({}));
    let answer = setup
        .admin
        .patch_json(&setup.path(""), &json!({"id": "renamed"}));
    expect_error(&answer, 400, "bad_request");
    expect_status(&setup.admin.get(&setup.path("")), 200);
    expect_error(
        &setup.admin.get("/v1/projects/renamed"),
        404,
        "project_not_found",
    );
}

/// After refused requests on `setup`: no new project, token or setting.
fn expect_nothing_was_created(setup: &Setup) {
    expect_error(&setup.admin.get("/v1/projects/q"), 404, "project_not_found");
    let project = setup.admin.get(&setup.path("")).json();
    assert_eq!(project["max_keys"], Value::Null);
    assert_eq!(project["keys_discoverable"], true);
    let tokens = setup.admin.get(&setup.path("/tokens")).json();
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 1);
    let admins = setup.admin.get("/v1/tokens").json();
    assert_eq!(admins["tokens"].as_array().unwrap().len(), 1);
}

#[test]
fn a_json_route_refuses_another_content_type_with_415_and_suggests_curl_json() {
    let setup = Setup::new("p", json!({}));
    let requests = [
        ("POST", "/v1/projects".to_owned(), json!({"id": "q"})),
        ("PATCH", setup.path(""), json!({"max_keys": 5})),
        ("POST", setup.path("/tokens"), json!({"role": "read"})),
        ("POST", "/v1/tokens".to_owned(), json!({"name": "n"})),
    ];
    let refused = [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
    ];
    for (method, path, body) in &requests {
        let bytes = serde_json::to_vec(body).unwrap();
        for content_type in refused {
            let headers = [("Content-Type", content_type)];
            let answer = setup.admin.send(method, path, Some(&bytes), &headers);
            let message = expect_error(&answer, 415, "unsupported_media_type");
            assert!(message.contains("--json"), "{message:?}");
        }
    }
    expect_nothing_was_created(&setup);

    // A JSON type with parameters, any +json type, or none at all, is JSON.
    let accepted = [
        Some("application/json; charset=utf-8"),
        Some("application/merge-patch+json"),
        Some("Application/JSON"),
        None,
    ];
    for (n, content_type) in accepted.into_iter().enumerate() {
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| ("Content-Type", t))
            .into_iter()
            .collect();
        let body = serde_json::to_vec(&json!({"max_keys": 10 - n})).unwrap();
        let answer = setup
            .admin
            .send("PATCH", &setup.path(""), Some(&body), &headers);
        expect_status(&answer, 200);
        assert_eq!(answer.json()["max_keys"], 10 - n, "{content_type:?}");
    }
}

#[test]
fn a_value_over_the_projects_limit_is_413_and_writes_nothing() {
    let setup = Setup::new("p", json!({"max_value_bytes": 1024}));
    put(&setup.manage, &setup.kv("exact"), &[b'x'; 1024]);
    put(&setup.manage, &setup.kv("kept"), b"old");
    for key in ["new", "kept"] {
        let answer = setup.manage.put(&setup.kv(key), &[b'x'; 1025]);
        expect_error(&answer, 413, "payload_too_large");
    }
    assert_eq!(setup.manage.get(&setup.kv("kept")).body, b"old");
    assert_eq!(keys(&setup), ["exact", "kept"]);

    // The limit follows the project's setting.
    let answer = setup
        .admin
        .patch_json(&setup.path(""), &json!({"max_value_bytes": 2048}));
    expect_status(&answer, 200);
    put(&setup.manage, &setup.kv("new"), &[b'x'; 2048]);
    let answer = setup.manage.put(&setup.kv("new"), &[b'x'; 2049]);
    expect_error(&answer, 413, "payload_too_large");
}

/// A server whose ceiling is under the 1 MiB default gives a project made
/// without `max_value_bytes` the ceiling (it refused the creation with 400
/// about a field the request never sent); the `default` project made at the
/// first start has it too. A limit asked above the ceiling is still 400.
#[test]
fn a_ceiling_under_the_default_limit_is_the_limit_of_new_projects() {
    let server = crate::common::TestServer::start_with(|settings| settings.max_value_bytes = 1000);
    let admin = Api::new(&server.url, Some(&server.admin_token));
    let created = admin.post_json("/v1/projects", &json!({"id": "small"}));
    expect_status(&created, 201);
    for project in ["small", "default"] {
        let shown = admin.get(&format!("/v1/projects/{project}")).json();
        assert_eq!(shown["max_value_bytes"], 1000, "{shown}");
    }
    let over = admin.post_json(
        "/v1/projects",
        &json!({"id": "big", "max_value_bytes": 1001}),
    );
    expect_error(&over, 400, "bad_request");
}

#[test]
fn a_chunked_value_without_content_length_is_held_to_the_same_limit() {
    let setup = Setup::new("p", json!({"max_value_bytes": 1024}));
    let token = setup.manage.secret();
    let head = |key: &str| {
        format!(
            "PUT /v1/projects/p/kv/{key} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: chunked"
        )
    };
    let answer = raw_exchange(&setup.server, &head("fits"), &chunked(1024));
    assert_eq!(answer.status, 201);
    assert_eq!(setup.manage.get(&setup.kv("fits")).body, [b'x'; 1024]);

    let answer = raw_exchange(&setup.server, &head("big"), &chunked(1500));
    assert_eq!(answer.status, 413);
    let error = answer.json();
    assert_eq!(error["error"]["code"], "payload_too_large", "{error}");
    assert!(error["error"]["message"].is_string());
    assert_eq!(keys(&setup), ["fits"]);
}

#[test]
fn a_new_key_past_max_keys_is_403_quota_exceeded() {
    let setup = Setup::new("p", json!({"max_keys": 2}));
    put(&setup.manage, &setup.kv("a"), b"1");
    put(&setup.manage, &setup.kv("b"), b"1");
    expect_error(
        &setup.manage.put(&setup.kv("c"), b"1"),
        403,
        "quota_exceeded",
    );
    // Replacing a key does not add one.
    expect_status(&setup.manage.put(&setup.kv("a"), b"2"), 200);
    assert_eq!(keys(&setup), ["a", "b"]);
    // A delete frees a place.
    expect_status(&setup.manage.delete(&setup.kv("a")), 204);
    expect_status(&setup.manage.put(&setup.kv("c"), b"1"), 201);
    expect_error(
        &setup.manage.put(&setup.kv("d"), b"1"),
        403,
        "quota_exceeded",
    );
    assert_eq!(setup.admin.get(&setup.path("")).json()["keys"], 2);
}

/// Asserts a transaction's refusal: this status and code, and `failed_op`.
#[track_caller]
fn expect_failed_op(answer: &Answer, status: u16, code: &str, index: u64) {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], code, "{}", answer.text());
    assert_eq!(answer.json()["failed_op"], index, "{}", answer.text());
}

/// A transaction's ops on one key fold into one write, and `max_keys` is
/// judged on what they leave: at the limit, a key put and then deleted
/// takes no slot (it was 403 with `failed_op` 0). One that does leave a
/// key too many names the op from which the project stays past the limit.
#[test]
fn a_transaction_at_max_keys_may_put_and_delete_a_new_key() {
    let setup = Setup::new("p", json!({"max_keys": 1}));
    put(&setup.manage, &setup.kv("only"), b"x");
    let txn = setup.path("/txn");
    let body = json!({"ops": [
        {"op": "put", "key": "tmp", "value": 1},
        {"op": "delete", "key": "tmp"},
    ]});
    let answer = setup.manage.post_json(&txn, &body);
    expect_status(&answer, 200);
    assert_eq!(answer.json()["results"][1]["deleted"], true);
    let body = json!({"ops": [
        {"op": "put", "key": "a", "value": 1},
        {"op": "delete", "key": "a"},
        {"op": "put", "key": "b", "value": 1},
    ]});
    let answer = setup.manage.post_json(&txn, &body);
    expect_failed_op(&answer, 403, "quota_exceeded", 2);
    assert_eq!(keys(&setup), ["only"]);
    assert_eq!(setup.admin.get(&setup.path("")).json()["keys"], 1);
}

#[test]
fn an_expires_in_of_zero_negative_malformed_or_over_3650_days_is_400() {
    let setup = Setup::new("p", json!({}));
    let refused = [
        json!(0),
        json!("0"),
        json!("0s"),
        json!("0d"),
        json!(-1),
        json!("-1"),
        json!("-5m"),
        json!("3651d"),
        json!(3650 * 86_400 + 1),
        json!("315360001"),
        json!("87601h"),
        json!("5256001m"),
        json!("1.5h"),
        json!(1.5),
        json!("1 fortnight"),
        json!("10y"),
        json!(""),
        json!("h"),
        json!("ten"),
        json!(true),
        json!([60]),
        json!({"seconds": 60}),
    ];
    for expires_in in &refused {
        let answer = setup.admin.post_json(
            &setup.path("/tokens"),
            &json!({"role": "read", "expires_in": expires_in}),
        );
        assert_eq!(
            answer.status,
            400,
            "expires_in {expires_in}: {}",
            answer.text()
        );
        expect_error(&answer, 400, "bad_request");
        let answer = setup
            .admin
            .post_json("/v1/tokens", &json!({ "expires_in": expires_in }));
        expect_error(&answer, 400, "bad_request");
    }
    expect_nothing_was_created(&setup);
}

#[test]
fn a_listing_limit_must_be_a_positive_integer() {
    let setup = Setup::new("p", json!({}));
    put(&setup.manage, &setup.kv("k"), b"v");
    for limit in ["0", "-1", "abc", "1.5", "", "1e3", "0x10"] {
        let answer = setup.manage.get(&setup.path(&format!("/kv?limit={limit}")));
        assert_eq!(answer.status, 400, "limit={limit}: {}", answer.text());
        expect_error(&answer, 400, "bad_request");
    }
    expect_status(&setup.manage.get(&setup.path("/kv?limit=1")), 200);
}

#[test]
fn a_cursor_that_this_listing_did_not_give_is_400() {
    let setup = Setup::new("p", json!({}));
    let other = setup
        .admin
        .with_token(&setup.admin.create_project("other", json!({})));
    for key in ["a/1", "a/2", "b/1", "b/2"] {
        put(&setup.manage, &setup.kv(key), b"v");
        put(&other, &kv("other", key), b"v");
    }
    let cursor_of = |client: &Api, project: &str, prefix: &str| -> String {
        let path = format!("/v1/projects/{project}/kv?limit=1&prefix={prefix}");
        let page = client.get(&path).json();
        page["cursor"].as_str().expect("a cursor").to_owned()
    };
    let foreign = cursor_of(&other, "other", "a/");
    let other_prefix = cursor_of(&setup.manage, "p", "b/");
    let own = cursor_of(&setup.manage, "p", "a/");
    let bad = [
        "not-a-cursor!".to_owned(),
        "AAAA".to_owned(),
        "eyJ4IjoxfQ".to_owned(), // base64url of {"x":1}
        format!("{own}x"),
        foreign,
        other_prefix,
    ];
    for cursor in &bad {
        let cursor =
            percent_encoding::utf8_percent_encode(cursor, percent_encoding::NON_ALPHANUMERIC);
        let answer = setup
            .manage
            .get(&setup.path(&format!("/kv?prefix=a/&limit=1&cursor={cursor}")));
        assert_eq!(answer.status, 400, "cursor {cursor}: {}", answer.text());
        expect_error(&answer, 400, "bad_request");
    }
    let answer = setup
        .manage
        .get(&setup.path(&format!("/kv?prefix=a/&limit=1&cursor={own}")));
    expect_status(&answer, 200);
    assert_eq!(answer.json()["keys"][0]["key"], "a/2");
}

#[test]
fn a_delete_by_prefix_needs_the_prefix_parameter() {
    let setup = Setup::new("p", json!({}));
    put(&setup.manage, &setup.kv("a"), b"v");
    put(&setup.manage, &setup.kv("b"), b"v");
    for path in [
        setup.path("/kv"),
        setup.path("/kv?limit=5"),
        setup.path("/kv?prefixes=a"),
    ] {
        expect_error(&setup.manage.delete(&path), 400, "bad_request");
    }
    assert_eq!(keys(&setup), ["a", "b"]);
    // `prefix=` is given, and empty: it clears the project.
    let answer = setup.manage.delete(&setup.path("/kv?prefix="));
    expect_status(&answer, 200);
    assert_eq!(answer.json()["deleted"], 2);
    assert!(keys(&setup).is_empty());
}

#[test]
fn refused_key_requests_answer_json_errors() {
    // The error bodies of the key routes, which carry extra headers, are the
    // contract's shape too.
    let setup = Setup::new("p", json!({"max_value_bytes": 4}));
    let answers: Vec<Answer> = vec![
        setup.manage.put(&setup.kv("k"), b"12345"),
        setup.manage.get(&setup.kv("missing")),
        setup.manage.put("/v1/projects/p/kv/", b"v"),
    ];
    for answer in &answers {
        crate::support::expect_error_shape(answer);
        assert_eq!(answer.header("cache-control"), Some("private, no-cache"));
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
}

#[test]
fn query_parameters_that_do_not_decode_to_utf8_are_refused_on_every_route() {
    let setup = Setup::new("p", json!({}));
    // U+FFFD, the character a lossy decoding makes of %FF.
    let replacement = setup.kv("\u{FFFD}");
    expect_status(&setup.manage.put(&replacement, b"v"), 201);
    let refused = [
        ("DELETE", setup.path("/kv?prefix=%FF")),
        ("GET", setup.path("/kv?prefix=%FF")),
        ("GET", setup.path("/kv?prefix=a&cursor=%C3")),
        ("GET", setup.path("/watch?prefix=%FF")),
        ("GET", setup.path("/latest?keys=%FF")),
        ("GET", format!("{replacement}?meta=%FF")),
        ("PUT", format!("{replacement}?ttl=%80")),
        ("POST", setup.path("/incr/n?by=%FF")),
        ("POST", setup.path("/txn?x=%FF")),
        ("GET", "/v1/projects?%FF=1".to_owned()),
    ];
    for (method, path) in &refused {
        let answer = setup.manage.send(method, path, Some(b"{}"), &[]);
        expect_error(&answer, 400, "bad_request");
    }
    let kept = setup.manage.get(&replacement);
    expect_status(&kept, 200);
    assert_eq!(
        kept.body, b"v",
        "a refused delete by prefix deleted the key"
    );
    // Simple-PyKV's routes refuse it too, in their envelope.
    let pykv = setup.manage.get("/api/v1/projects/p/store?x=%FF");
    assert_eq!(pykv.status, 400, "{}", pykv.text());
    assert_eq!(pykv.json()["status_code"], 400, "{}", pykv.text());
    // Valid percent-encoded UTF-8 is read as before.
    let listed = setup.manage.get(&setup.path("/kv?prefix=%EF%BF%BD"));
    expect_status(&listed, 200);
    assert_eq!(
        listed.json()["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text()
    );
}

/// A parameter that takes one value, given twice with different values,
/// is refused: the server does not guess which one was meant, least of all
/// on a delete by prefix. The same value twice is that value.
#[test]
fn a_single_valued_parameter_given_twice_differently_is_400() {
    let setup = Setup::new("p", json!({}));
    let writer = setup.client("write");
    for key in ["l/k0", "l/k1", "zz"] {
        put(&writer, &setup.kv(key), b"v");
    }
    let kv = setup.kv("a");
    let refused = [
        (
            "DELETE",
            format!("{}?prefix=l/k0&prefix=zz", setup.path("/kv")),
        ),
        ("GET", format!("{}?prefix=l&prefix=zz", setup.path("/kv"))),
        ("GET", format!("{}?limit=1&limit=2", setup.path("/kv"))),
        ("POST", format!("{}?by=1&by=2", setup.path("/incr/n"))),
        ("PUT", format!("{kv}?ttl=60&ttl=1")),
        (
            "PUT",
            format!("{kv}?content_type=text/plain&content_type=image/png"),
        ),
        ("GET", format!("{kv}?meta=true&meta=false")),
        ("GET", format!("{kv}?wait=1&wait=2")),
    ];
    for (method, path) in refused {
        let body = (method == "PUT").then_some(&b"v"[..]);
        let answer = writer.send(method, &path, body, &[]);
        let message = expect_error(&answer, 400, "bad_request");
        assert!(
            message.contains("more than once"),
            "{method} {path}: {message}"
        );
    }
    // Nothing was deleted, written or counted.
    assert_eq!(keys(&setup), ["l/k0", "l/k1", "zz"]);

    let same = writer.send(
        "DELETE",
        &format!("{}?prefix=zz&prefix=zz", setup.path("/kv")),
        None,
        &[],
    );
    expect_status(&same, 200);
    assert_eq!(same.json()["deleted"], 1);
}

/// An incr with `If-Match`, `If-None-Match` or `?ttl=` is refused (400),
/// and counts nothing: it applied unconditionally, and the ttl was dropped,
/// so a counter meant to expire lasted for good (found by an outside-in
/// hunt). A transaction's check and incr op make a conditional increment.
#[test]
fn an_incr_with_a_precondition_or_a_ttl_is_refused() {
    let setup = Setup::new("p", json!({}));
    let writer = setup.client("write");
    put(&writer, &setup.kv("n"), b"10");
    let incr = setup.path("/incr/n");
    let refused = [
        (incr.clone(), Some(("If-Match", "\"1\""))),
        (incr.clone(), Some(("If-None-Match", "*"))),
        (format!("{incr}?ttl=60"), None),
    ];
    for (path, header) in refused {
        let headers: Vec<(&str, &str)> = header.into_iter().collect();
        let answer = writer.send("POST", &path, None, &headers);
        let message = expect_error(&answer, 400, "bad_request");
        assert!(
            message.contains("incr takes no"),
            "{path} {headers:?}: {message}"
        );
    }
    assert_eq!(writer.get(&setup.kv("n")).body, b"10");
    let answer = writer.send("POST", &incr, None, &[]);
    expect_status(&answer, 200);
    assert_eq!(answer.json()["value"], 11);
}

/// `incr` takes a 64-bit integer only in its one decimal spelling (an
/// optional `-`, no `+`, no leading zero, not `-0`), as Redis's INCR does
/// and as a transaction's JSON `by` is read: a stored `+5`, `007`, `0001`
/// or `-0` is no counter (409), and `?by=` in another spelling is 400. They
/// were read as integers, and `?by=-0` or `?by=%2B1` accepted.
#[test]
fn incr_takes_integers_only_in_their_canonical_decimal_form() {
    let setup = Setup::new("p", json!({}));
    let writer = setup.client("write");
    let incr = |key: &str, by: &str| {
        let path = setup.path(&format!("/incr/{key}"));
        let path = if by.is_empty() {
            path
        } else {
            format!("{path}?by={by}")
        };
        writer.send("POST", &path, None, &[])
    };
    for (n, stored) in [
        "+5",
        "007",
        "00000000000000000001",
        "-0",
        "0x1",
        " 5",
        "5 ",
        "1e3",
        "",
    ]
    .iter()
    .enumerate()
    {
        let key = format!("odd{n}");
        put(&writer, &setup.kv(&key), stored.as_bytes());
        expect_error(&incr(&key, ""), 409, "conflict");
        let txn = json!({"ops": [{"op": "incr", "key": key, "by": 1}]});
        let answer = writer.post_json(&setup.path("/txn"), &txn);
        expect_failed_op(&answer, 409, "conflict", 0);
        assert_eq!(
            writer.get(&setup.kv(&key)).body,
            stored.as_bytes(),
            "{stored:?}"
        );
    }
    for (stored, by, counted) in [
        ("0", "1", 1),
        ("-7", "-1", -8),
        ("10", "0", 10),
        ("-9223372036854775807", "-1", i64::MIN),
        ("9223372036854775806", "", i64::MAX),
    ] {
        put(&writer, &setup.kv("n"), stored.as_bytes());
        let answer = incr("n", by);
        expect_status(&answer, 200);
        assert_eq!(answer.json()["value"], counted, "{stored} + {by}");
    }
    put(&writer, &setup.kv("n"), b"1");
    for by in [
        "-0",
        "%2B1",
        "+1",
        "01",
        "-01",
        "00",
        "1.0",
        "%201",
        "9223372036854775808",
    ] {
        let message = expect_error(&incr("n", by), 400, "bad_request");
        assert!(message.contains("by"), "{by}: {message}");
    }
    assert_eq!(writer.get(&setup.kv("n")).body, b"1");
    // A transaction's `by` is JSON, whose grammar has neither `+` nor
    // leading zeros; `-0` is refused as it is on the query.
    let txn = br#"{"ops": [{"op": "incr", "key": "n", "by": -0}]}"#;
    let json = [("Content-Type", "application/json")];
    let answer = writer.send("POST", &setup.path("/txn"), Some(txn), &json);
    expect_failed_op(&answer, 400, "bad_request", 0);
}
