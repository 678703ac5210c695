//! Values one key at a time: what a PUT answers, the bytes and headers a GET
//! gives back, HEAD, conditional reads (`If-None-Match`, 304) and
//! conditional writes (`If-Match`, `If-None-Match: *`, 412 with the current
//! ETag), and the `Kvs-Revision` that every read carries.

use serde_json::{Value, json};

use crate::common::Answer;
use crate::support::{Setup, expect_error, expect_status, kvs_revision, put, raw_exchange};

/// Deterministic bytes that are not UTF-8 and cover every byte value.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// PUT with extra headers.
fn put_with(setup: &Setup, key: &str, value: &[u8], headers: &[(&str, &str)]) -> Answer {
    setup
        .manage
        .send("PUT", &setup.kv(key), Some(value), headers)
}

#[test]
fn a_put_answers_201_when_it_creates_and_200_when_it_replaces() {
    let setup = Setup::new("p", json!({}));
    let path = setup.kv("dir/a key");
    let created = setup.manage.put(&path, b"one");
    expect_status(&created, 201);
    assert_eq!(created.header("location"), Some(path.as_str()));
    let first = created.json();
    let mut fields: Vec<&String> = first.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "content_type",
            "created_at",
            "expires_at",
            "key",
            "size",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(
        (
            &first["key"],
            &first["size"],
            &first["content_type"],
            &first["expires_at"]
        ),
        (
            &json!("dir/a key"),
            &json!(3),
            &json!("application/octet-stream"),
            &Value::Null
        )
    );
    let version = first["version"].as_u64().unwrap();
    assert_eq!(created.header("etag"), Some(etag(version).as_str()));

    let replaced = setup.manage.send(
        "PUT",
        &path,
        Some(b"second"),
        &[("Content-Type", "text/plain")],
    );
    expect_status(&replaced, 200);
    assert_eq!(replaced.header("location"), None);
    let second = replaced.json();
    let newer = second["version"].as_u64().unwrap();
    assert!(newer > version, "{newer} after {version}");
    assert_eq!(replaced.header("etag"), Some(etag(newer).as_str()));
    assert_eq!(second["created_at"], first["created_at"]);
    assert!(second["updated_at"].as_str() >= first["updated_at"].as_str());
    assert_eq!(
        (&second["size"], &second["content_type"]),
        (&json!(6), &json!("text/plain"))
    );
}

#[test]
fn a_value_comes_back_byte_for_byte_with_its_content_type() {
    let setup = Setup::new("p", json!({}));
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let cases: [(&str, Vec<u8>, Option<&str>); 6] = [
        ("all-bytes", all_bytes, None),
        ("noise", noise(300_000), Some("image/png")),
        ("empty", Vec::new(), Some("text/plain; charset=utf-8")),
        ("crlf", b"a\r\n\r\nb\0c".to_vec(), Some("text/plain")),
        (
            "not-utf8",
            vec![0xc3, 0x28, 0xff, 0xfe],
            Some("application/json"),
        ),
        (
            "json",
            br#"{"a": [1, 2.5, null]}"#.to_vec(),
            Some("application/vnd.kvs+json"),
        ),
    ];
    for (key, value, content_type) in &cases {
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| ("Content-Type", t))
            .into_iter()
            .collect();
        let answer = put_with(&setup, key, value, &headers);
        expect_status(&answer, 201);
        assert_eq!(answer.json()["size"], value.len());
    }
    for (key, value, content_type) in &cases {
        let answer = setup.manage.send(
            "GET",
            &setup.kv(key),
            None,
            &[("Accept-Encoding", "gzip, deflate, br, zstd")],
        );
        expect_status(&answer, 200);
        assert!(answer.body == *value, "{key}: the bytes differ");
        let expected_type = content_type.unwrap_or("application/octet-stream");
        assert_eq!(answer.header("content-type"), Some(expected_type), "{key}");
        let length = value.len().to_string();
        assert_eq!(
            answer.header("content-length"),
            Some(length.as_str()),
            "{key}"
        );
        assert_eq!(answer.header("content-encoding"), None, "{key}");
        assert_eq!(answer.header("content-security-policy"), Some("sandbox"));
    }
}

#[test]
fn a_value_is_read_with_its_metadata_headers() {
    let setup = Setup::new("p", json!({}));
    let created = setup.manage.put(&setup.kv("k"), b"v").json();
    let answer = setup.manage.get(&setup.kv("k"));
    expect_status(&answer, 200);
    let version = created["version"].as_u64().unwrap();
    let version_text = version.to_string();
    assert_eq!(answer.header("etag"), Some(etag(version).as_str()));
    assert_eq!(answer.header("kvs-version"), Some(version_text.as_str()));
    assert_eq!(
        answer.header("kvs-created-at"),
        created["created_at"].as_str()
    );
    assert_eq!(answer.header("kvs-expires-at"), None);
    let modified = answer.header("last-modified").expect("Last-Modified");
    assert!(httpdate::parse_http_date(modified).is_ok(), "{modified}");
    assert_eq!(answer.header("cache-control"), Some("private, no-cache"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert!(kvs_revision(&answer) >= version);
}

#[test]
fn a_head_has_the_headers_of_a_get_and_no_body() {
    let setup = Setup::new("p", json!({}));
    let value = noise(5000);
    let answer = put_with(&setup, "k", &value, &[("Content-Type", "image/png")]);
    expect_status(&answer, 201);
    let token = setup.manage.secret();
    let exchange = |method: &str, key: &str| {
        let head =
            format!("{method} /v1/projects/p/kv/{key} HTTP/1.1\r\nAuthorization: Bearer {token}");
        raw_exchange(&setup.server, &head, b"")
    };
    let without_date = |headers: &[(String, String)]| {
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(name, _)| name != "date")
            .cloned()
            .collect();
        headers.sort();
        headers
    };

    let get = exchange("GET", "k");
    let head = exchange("HEAD", "k");
    assert_eq!((get.status, head.status), (200, 200));
    assert_eq!(get.body, value);
    assert!(
        head.body.is_empty(),
        "HEAD sent {} body bytes",
        head.body.len()
    );
    assert_eq!(without_date(&head.headers), without_date(&get.headers));
    assert_eq!(head.header("content-length"), Some("5000"));

    let get = exchange("GET", "absent");
    let head = exchange("HEAD", "absent");
    assert_eq!((get.status, head.status), (404, 404));
    assert!(
        head.body.is_empty(),
        "HEAD sent {} body bytes",
        head.body.len()
    );
    assert!(head.header("kvs-revision").is_some());
    assert_eq!(head.header("cache-control"), Some("private, no-cache"));
    assert_eq!(get.code(), "key_not_found");
}

#[test]
fn a_get_with_a_matching_if_none_match_is_304_without_a_body() {
    let setup = Setup::new("p", json!({}));
    let old = put(&setup.manage, &setup.kv("k"), b"old");
    let version = put(&setup.manage, &setup.kv("k"), b"value");
    let current = etag(version);
    let matching = [
        current.clone(),
        format!("W/{current}"),
        format!("{}, {current}", etag(old)),
        "*".to_owned(),
    ];
    for condition in &matching {
        for method in ["GET", "HEAD"] {
            let headers = [("If-None-Match", condition.as_str())];
            let answer = setup.manage.send(method, &setup.kv("k"), None, &headers);
            assert_eq!(answer.status, 304, "{method} If-None-Match: {condition}");
            assert!(answer.body.is_empty());
            assert_eq!(answer.header("etag"), Some(current.as_str()));
            assert_eq!(
                answer.header("kvs-version"),
                Some(version.to_string().as_str())
            );
            assert!(kvs_revision(&answer) >= version);
        }
    }
    // An older ETag no longer matches: the current value comes back. And
    // If-Modified-Since is ignored.
    for headers in [
        [("If-None-Match", etag(old))],
        [(
            "If-Modified-Since",
            "Sun, 06 Nov 2050 08:49:37 GMT".to_owned(),
        )],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = setup.manage.send("GET", &setup.kv("k"), None, &headers);
        expect_status(&answer, 200);
        assert_eq!(answer.body, b"value");
    }
}

#[test]
fn if_none_match_star_writes_only_a_key_that_is_absent() {
    let setup = Setup::new("p", json!({}));
    let answer = put_with(&setup, "k", b"first", &[("If-None-Match", "*")]);
    expect_status(&answer, 201);
    let version = answer.json()["version"].as_u64().unwrap();

    let answer = put_with(&setup, "k", b"second", &[("If-None-Match", "*")]);
    expect_error(&answer, 412, "precondition_failed");
    assert_eq!(answer.header("etag"), Some(etag(version).as_str()));
    let stored = setup.manage.get(&setup.kv("k"));
    assert_eq!(stored.body, b"first");
    assert_eq!(stored.header("etag"), Some(etag(version).as_str()));
}

#[test]
fn if_match_writes_only_over_one_of_the_listed_versions() {
    let setup = Setup::new("p", json!({}));
    let v1 = put(&setup.manage, &setup.kv("k"), b"1");

    let answer = put_with(&setup, "k", b"2", &[("If-Match", &etag(v1))]);
    expect_status(&answer, 200);
    let v2 = answer.json()["version"].as_u64().unwrap();

    // A stale version fails, with the current ETag, and changes nothing.
    for stale in [etag(v1), format!("W/{}", etag(v2)), "\"999999\"".to_owned()] {
        let answer = put_with(&setup, "k", b"lost", &[("If-Match", &stale)]);
        assert_eq!(answer.status, 412, "If-Match: {stale}");
        expect_error(&answer, 412, "precondition_failed");
        assert_eq!(answer.header("etag"), Some(etag(v2).as_str()));
    }
    assert_eq!(setup.manage.get(&setup.kv("k")).body, b"2");

    let list = format!("{}, {}", etag(v1), etag(v2));
    let answer = put_with(&setup, "k", b"3", &[("If-Match", &list)]);
    expect_status(&answer, 200);
    let answer = put_with(&setup, "k", b"4", &[("If-Match", "*")]);
    expect_status(&answer, 200);
    assert_eq!(setup.manage.get(&setup.kv("k")).body, b"4");

    // On an absent key every If-Match fails, with no ETag to give.
    for condition in ["*".to_owned(), etag(v1)] {
        let answer = put_with(&setup, "absent", b"v", &[("If-Match", &condition)]);
        expect_error(&answer, 412, "precondition_failed");
        assert_eq!(answer.header("etag"), None);
    }
    expect_error(&setup.manage.get(&setup.kv("absent")), 404, "key_not_found");
}

#[test]
fn if_match_on_a_delete_needs_the_current_version() {
    let setup = Setup::new("p", json!({}));
    let v1 = put(&setup.manage, &setup.kv("k"), b"1");
    let v2 = put(&setup.manage, &setup.kv("k"), b"2");
    let delete = |key: &str, condition: &str| {
        setup
            .manage
            .send("DELETE", &setup.kv(key), None, &[("If-Match", condition)])
    };
    let answer = delete("k", &etag(v1));
    expect_error(&answer, 412, "precondition_failed");
    assert_eq!(answer.header("etag"), Some(etag(v2).as_str()));
    assert_eq!(setup.manage.get(&setup.kv("k")).body, b"2");

    expect_status(&delete("k", &etag(v2)), 204);
    expect_error(&setup.manage.get(&setup.kv("k")), 404, "key_not_found");
    // A missing key is 404, whatever the preconditions.
    for condition in [etag(v2), "*".to_owned()] {
        expect_error(&delete("k", &condition), 404, "key_not_found");
    }
    expect_error(&setup.manage.delete(&setup.kv("k")), 404, "key_not_found");
}

#[test]
fn every_read_answer_carries_the_server_revision() {
    let setup = Setup::new("p", json!({}));
    let version = put(&setup.manage, &setup.kv("k"), b"v");
    let status_revision = || {
        let status = setup.admin.get("/v1/status").json();
        status["revision"].as_u64().unwrap()
    };
    assert_eq!(status_revision(), version);
    let tag = etag(version);
    let reads = [
        setup.manage.get(&setup.kv("k")),
        setup.manage.send("HEAD", &setup.kv("k"), None, &[]),
        setup.manage.get(&format!("{}?meta=true", setup.kv("k"))),
        setup
            .manage
            .send("GET", &setup.kv("k"), None, &[("If-None-Match", &tag)]),
        setup.manage.get(&setup.kv("absent")),
        setup.manage.send("HEAD", &setup.kv("absent"), None, &[]),
        setup.manage.get(&setup.path("/kv")),
        setup.manage.get(&setup.path("/kv?prefix=none")),
    ];
    for answer in &reads {
        assert_eq!(kvs_revision(answer), version, "a {} answer", answer.status);
    }
    // A write elsewhere moves the server revision, and reads follow it.
    let other = setup
        .admin
        .with_token(&setup.admin.create_project("q", json!({})));
    let later = put(&other, "/v1/projects/q/kv/x", b"v");
    assert!(later > version);
    assert_eq!(kvs_revision(&setup.manage.get(&setup.kv("k"))), later);
    assert_eq!(kvs_revision(&setup.manage.get(&setup.kv("absent"))), later);
    let listing = setup.manage.get(&setup.path("/kv"));
    assert_eq!(kvs_revision(&listing), later);
    assert_eq!(listing.json()["revision"], later);
}

#[test]
fn the_meta_view_gives_keymeta_with_the_value_encoded() {
    let setup = Setup::new("p", json!({}));
    let cases: [(&str, &[u8], &str, Value, &str); 7] = [
        (
            "json",
            br#"{"a":[1,true]}"#,
            "application/json",
            json!({"a": [1, true]}),
            "json",
        ),
        (
            "plus-json",
            b"[1]",
            "application/ld+json; x=y",
            json!([1]),
            "json",
        ),
        ("nan", b"[NaN]", "application/json", json!("[NaN]"), "utf8"),
        // JSON that a double cannot hold, or that is no Unicode text: kvs's
        // own client (and most parsers) could not read it inline.
        ("huge", b"1e400", "application/json", json!("1e400"), "utf8"),
        (
            "lone",
            br#""\ud800""#,
            "application/json",
            json!(r#""\ud800""#),
            "utf8",
        ),
        (
            "text",
            b"{\"a\":1}",
            "text/plain",
            json!("{\"a\":1}"),
            "utf8",
        ),
        (
            "binary",
            &[0xff, 0x00, 0x01],
            "application/json",
            json!("/wAB"),
            "base64",
        ),
    ];
    for (key, value, content_type, expected, encoding) in cases {
        put_with(&setup, key, value, &[("Content-Type", content_type)]);
        let answer = setup.manage.get(&format!("{}?meta=true", setup.kv(key)));
        expect_status(&answer, 200);
        let meta = answer.json();
        assert_eq!(
            (&meta["value"], meta["encoding"].as_str()),
            (&expected, Some(encoding)),
            "{key}"
        );
        assert_eq!(
            (&meta["key"], &meta["size"]),
            (&json!(key), &json!(value.len()))
        );
        assert_eq!(meta["content_type"], content_type);
        let version = meta["version"].as_u64().unwrap();
        assert_eq!(answer.header("etag"), Some(etag(version).as_str()));
    }
}

#[test]
fn a_key_is_taken_literally_from_the_path_decoded_once() {
    let setup = Setup::new("p", json!({}));
    // Each raw path names the key beside it.
    let cases = [
        ("a+b", "a+b"),
        ("a%2Bc", "a+c"),
        ("x%2520y", "x%20y"),
        ("dir%2Fkey", "dir/key"),
        ("/lead", "/lead"),
        ("double//slash", "double//slash"),
        ("trail/", "trail/"),
        ("sp%20ace", "sp ace"),
        ("%E2%9C%93", "\u{2713}"),
    ];
    for (raw, key) in cases {
        let path = format!("/v1/projects/p/kv/{raw}");
        expect_status(&setup.manage.put(&path, key.as_bytes()), 201);
        assert_eq!(
            setup.manage.get(&setup.kv(key)).body,
            key.as_bytes(),
            "{raw}"
        );
    }
    let mut expected: Vec<&str> = cases.iter().map(|(_, key)| *key).collect();
    expected.sort();
    assert_eq!(crate::support::list_all(&setup.manage, "p", ""), expected);
}

#[test]
fn a_content_type_query_parameter_chooses_the_stored_type_over_the_header() {
    let setup = Setup::new("p", json!({}));
    let path = format!("{}?content_type=application%2Fjson", setup.kv("j"));
    let answer = setup.manage.send(
        "PUT",
        &path,
        Some(br#"{"a":1}"#),
        &[("Content-Type", "application/octet-stream")],
    );
    expect_status(&answer, 201);
    assert_eq!(answer.json()["content_type"], "application/json");
    let read = setup.manage.get(&setup.kv("j"));
    assert_eq!(read.header("content-type"), Some("application/json"));
    let bad = format!("{}?content_type=", setup.kv("j"));
    let answer = setup.manage.send("PUT", &bad, Some(b"x"), &[]);
    expect_error(&answer, 400, "bad_request");
}

/// A transaction's `content_type` is judged as a PUT's: a type that a read
/// could not send back as its `Content-Type` is refused, and nothing of the
/// transaction is stored.
#[test]
fn a_transaction_refuses_the_content_types_a_put_refuses() {
    let setup = Setup::new("p", json!({}));
    // Longer than any media type with its parameters needs: a key line of a
    // backup must stay within what a restore reads.
    let too_long = format!("text/plain; x={}", "a".repeat(1024));
    for bad in ["bad\nct", "", "text/é", "a\r\nSet-Cookie: x=1", &too_long] {
        let query = format!("{}?content_type={}", setup.kv("c"), urlencode(bad));
        expect_error(
            &setup.manage.send("PUT", &query, Some(b"x"), &[]),
            400,
            "bad_request",
        );
        let txn = json!({"ops": [
            {"op": "put", "key": "ok", "value": "x"},
            {"op": "put", "key": "c", "value": "x", "content_type": bad},
        ]});
        let answer = setup.manage.post_json(&setup.path("/txn"), &txn);
        assert_eq!(answer.status, 400, "{}", answer.text());
        assert_eq!(answer.json()["error"]["code"], "bad_request");
        assert_eq!(answer.json()["failed_op"], 1, "{}", answer.text());
    }
    expect_error(&setup.manage.get(&setup.kv("ok")), 404, "key_not_found");
    expect_error(&setup.manage.get(&setup.kv("c")), 404, "key_not_found");
    // An empty Content-Type header is refused too, not stored as "".
    let empty = setup
        .manage
        .send("PUT", &setup.kv("c"), Some(b"x"), &[("Content-Type", "")]);
    expect_error(&empty, 400, "bad_request");
    let fine = json!({"ops": [{"op": "put", "key": "c", "value": "x", "content_type": "text/x-c; charset=utf-8"}]});
    expect_status(&setup.manage.post_json(&setup.path("/txn"), &fine), 200);
    let read = setup.manage.get(&setup.kv("c"));
    assert_eq!(read.header("content-type"), Some("text/x-c; charset=utf-8"));
    // The longest taken, by a header as by a transaction.
    let longest = format!("text/plain; x={}", "a".repeat(1024 - 14));
    assert_eq!(longest.len(), 1024);
    let put = setup.manage.send(
        "PUT",
        &setup.kv("l"),
        Some(b"x"),
        &[("Content-Type", &longest)],
    );
    expect_status(&put, 201);
    let read = setup.manage.get(&setup.kv("l"));
    assert_eq!(read.header("content-type"), Some(longest.as_str()));
    let over = setup.manage.send(
        "PUT",
        &setup.kv("l"),
        Some(b"x"),
        &[("Content-Type", &format!("{longest}a"))],
    );
    expect_error(&over, 400, "bad_request");
}

/// A body in a content coding (gzip) would be stored compressed and served
/// without its coding: it is refused; `identity` is no coding.
#[test]
fn a_value_in_a_content_coding_is_refused() {
    let setup = Setup::new("p", json!({}));
    for coding in ["gzip", "identity, gzip", "br"] {
        let answer = setup.manage.send(
            "PUT",
            &setup.kv("z"),
            Some(b"\x1f\x8b\x08\x00"),
            &[("Content-Encoding", coding)],
        );
        expect_error(&answer, 415, "unsupported_media_type");
    }
    expect_error(&setup.manage.get(&setup.kv("z")), 404, "key_not_found");
    let plain = setup.manage.send(
        "PUT",
        &setup.kv("z"),
        Some(b"v"),
        &[("Content-Encoding", "identity")],
    );
    expect_status(&plain, 201);
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
