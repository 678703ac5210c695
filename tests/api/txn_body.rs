//! How a transaction's body is read (issue 16): a well-formed body is read
//! in one pass, any other the careful way, op by op. These are the bodies
//! where the two could differ: `op` after the other fields, a field twice,
//! a field the op does not allow (even as `null`), an op given as an array
//! (which a derived struct would read by position), a put value with
//! escapes, and a read token whose ops are refused for its role before
//! their shape.

use serde_json::{Value, json};

use crate::common::{Answer, Client};
use crate::support::{Setup, expect_error, expect_status};

fn post(client: &Client, setup: &Setup, body: &str) -> Answer {
    client.send(
        "POST",
        &setup.path("/txn"),
        Some(body.as_bytes()),
        &[("Content-Type", "application/json")],
    )
}

/// Posts `{"ops": [ops]}` with the manage token, asserts a 400
/// `bad_request` for op `index` and returns its message.
#[track_caller]
fn failed_op_message(setup: &Setup, ops: &str, index: u64) -> String {
    let answer = post(&setup.manage, setup, &format!(r#"{{"ops": [{ops}]}}"#));
    assert_eq!(answer.status, 400, "{ops}: {}", answer.text());
    let body = answer.json();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert_eq!(body["failed_op"], index, "{body}");
    body["error"]["message"].as_str().unwrap_or("").to_owned()
}

#[test]
fn ops_may_name_their_op_after_the_other_fields() {
    let setup = Setup::new("p", json!({}));
    let answer = post(
        &setup.manage,
        &setup,
        r#"{"ops": [
            {"key": "a", "value": "x", "ttl": "10m", "op": "put"},
            {"key": "n", "by": 5, "op": "incr"},
            {"key": "a", "op": "get"},
            {"key": "b", "op": "delete"}
        ]}"#,
    );
    expect_status(&answer, 200);
    let results = answer.json()["results"].clone();
    let ops: Vec<&Value> = results
        .as_array()
        .expect("results")
        .iter()
        .map(|r| &r["op"])
        .collect();
    assert_eq!(ops, ["put", "incr", "get", "delete"], "{results}");
    assert!(results[0]["expires_at"].is_string(), "{results}");
    assert_eq!(results[1]["value"], 5, "{results}");
    assert_eq!(results[2]["value"], "x", "{results}");
    assert_eq!(results[3]["deleted"], false, "{results}");
    // An answer about keys, and, for a transaction of gets, an answer to a
    // read: the headers of both.
    let read = post(
        &setup.manage,
        &setup,
        r#"{"ops": [{"op": "get", "key": "a"}]}"#,
    );
    expect_status(&read, 200);
    let revision = read.json()["revision"].to_string();
    assert_eq!(read.header("kvs-revision"), Some(revision.as_str()));
    assert_eq!(read.header("cache-control"), Some("private, no-cache"));
    assert_eq!(read.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn a_field_given_twice_is_refused_for_its_op() {
    let setup = Setup::new("p", json!({}));
    let ok = r#"{"op": "put", "key": "ok", "value": 1}"#;
    for (op, expected) in [
        (
            r#"{"op": "put", "key": "a", "value": "x", "key": "b"}"#,
            "duplicate field `key`",
        ),
        (
            r#"{"op": "put", "key": "a", "value": "x", "value": "y"}"#,
            "duplicate field `value`",
        ),
        (
            r#"{"op": "incr", "key": "n", "by": 1, "by": 2}"#,
            "duplicate field `by`",
        ),
        (r#"{"op": "get", "op": "get", "key": "a"}"#, "unknown op"),
    ] {
        let message = failed_op_message(&setup, &format!("{ok}, {op}"), 1);
        assert!(message.contains(expected), "{op}: {message}");
    }
    expect_status(&setup.manage.get(&setup.kv("ok")), 404);
}

#[test]
fn an_op_given_as_an_array_is_refused() {
    let setup = Setup::new("p", json!({}));
    for (op, expected) in [
        (r#"["put", "a", "x"]"#, "unknown op"),
        (r#"["get", "a"]"#, "unknown op"),
        (r#"["delete"]"#, "a delete is a JSON object"),
    ] {
        let message = failed_op_message(&setup, op, 0);
        assert!(message.starts_with(expected), "{op}: {message}");
    }
    expect_status(&setup.manage.get(&setup.kv("a")), 404);
    // A check too, without serde's words for it ("struct TxnCheck").
    let answer = post(
        &setup.manage,
        &setup,
        r#"{"checks": [["a", 1]], "ops": [{"op": "get", "key": "a"}]}"#,
    );
    let message = expect_error(&answer, 400, "bad_request");
    assert_eq!(message, "a check is a JSON object");
}

#[test]
fn a_field_an_op_does_not_allow_is_refused_even_as_null() {
    let setup = Setup::new("p", json!({}));
    for (op, what) in [
        (
            r#"{"op": "put", "key": "a", "value": "x", "by": null}"#,
            "a put",
        ),
        (
            r#"{"op": "put", "key": "a", "value": "x", "extra": 1}"#,
            "a put",
        ),
        (r#"{"op": "delete", "key": "a", "value": null}"#, "a delete"),
        (r#"{"op": "delete", "key": "a", "by": 1}"#, "a delete"),
        (r#"{"op": "get", "key": "a", "ttl": null}"#, "a get"),
        (r#"{"op": "get", "key": "a", "version": 3}"#, "a get"),
        (
            r#"{"op": "incr", "key": "n", "content_type": null}"#,
            "an incr",
        ),
        (
            r#"{"op": "incr", "key": "n", "value_base64": "AA=="}"#,
            "an incr",
        ),
    ] {
        let message = failed_op_message(&setup, op, 0);
        assert!(message.starts_with(what), "{op}: {message}");
        assert!(message.contains("unknown field"), "{op}: {message}");
    }
}

#[test]
fn a_put_value_with_escapes_is_stored_as_the_text_it_spells() {
    let setup = Setup::new("p", json!({}));
    let answer = post(
        &setup.manage,
        &setup,
        r#"{"ops": [{"op": "put", "key": "s", "value": "a\"b\u00e9"},
                    {"op": "put", "key": "j", "value": {"s": "a\"b\u00e9"}},
                    {"op": "put", "key": "n", "value": null}]}"#,
    );
    expect_status(&answer, 200);
    let stored = setup.manage.get(&setup.kv("s"));
    assert_eq!(stored.text(), "a\"b\u{e9}");
    assert_eq!(
        stored.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let stored = setup.manage.get(&setup.kv("j"));
    assert_eq!(stored.text(), r#"{"s": "a\"b\u00e9"}"#);
    assert_eq!(stored.header("content-type"), Some("application/json"));
    let stored = setup.manage.get(&setup.kv("n"));
    assert_eq!(stored.text(), "null");
    assert_eq!(stored.header("content-type"), Some("application/json"));
}

#[test]
fn a_read_token_runs_gets_and_is_refused_a_write_before_its_shape_is_read() {
    let setup = Setup::new("p", json!({}));
    let read = setup.client("read");
    let answer = post(
        &read,
        &setup,
        r#"{"ops": [{"key": "a", "op": "get"}, {"op": "get", "key": "b"}]}"#,
    );
    expect_status(&answer, 200);
    assert_eq!(answer.json()["results"], json!([null, null]));
    for ops in [
        r#"[{"op": "get", "key": "a"}, {"op": "put", "key": "a", "value": "x", "by": 1}]"#,
        r#"[{"op": "get", "key": "a"}, {"key": "a", "op": "put"}]"#,
        r#"[{"op": "get", "key": "a", "ttl": 1}, {"op": "delete", "key": "a"}]"#,
    ] {
        let answer = post(&read, &setup, &format!(r#"{{"ops": {ops}}}"#));
        expect_error(&answer, 403, "forbidden");
    }
}

#[test]
fn more_ops_than_a_transaction_holds_are_refused_whatever_they_are() {
    let setup = Setup::new("p", json!({}));
    let gets = |count: usize| {
        let op = r#"{"op": "get", "key": "a"}"#;
        format!(r#"{{"ops": [{}]}}"#, vec![op; count].join(","))
    };
    expect_status(&post(&setup.manage, &setup, &gets(128)), 200);
    for count in [129, 1000] {
        let answer = post(&setup.manage, &setup, &gets(count));
        let message = expect_error(&answer, 400, "bad_request");
        assert!(message.contains("at most 128"), "{count}: {message}");
    }
    // Counted before any op is read: the 129th op's mistake is not the answer.
    let mut ops: Vec<Value> = vec![json!({"op": "get", "key": "a"}); 128];
    ops.push(json!({"op": "get", "key": "a", "by": 1}));
    let answer = setup
        .manage
        .post_json(&setup.path("/txn"), &json!({ "ops": ops }));
    let message = expect_error(&answer, 400, "bad_request");
    assert!(message.contains("at most 128"), "{message}");
}

/// A transaction's gets read at most about 4 MiB: the get that starts past
/// it fails the transaction with 413 and its index, so a small request
/// cannot make an answer of any size. (128 gets of one 1 MiB key answered
/// 179 MB, from a read token: found by an outside-in hunt.)
#[test]
fn the_values_a_transaction_reads_are_bounded() {
    let setup = Setup::new("p", json!({}));
    let mib = vec![b'x'; 1 << 20];
    expect_status(&setup.manage.put(&setup.kv("big"), &mib), 201);
    let reader = setup.client("read");
    let gets = |count: usize| {
        let ops = vec![r#"{"op": "get", "key": "big"}"#; count].join(", ");
        format!(r#"{{"ops": [{ops}]}}"#)
    };
    let answer = post(&reader, &setup, &gets(4));
    expect_status(&answer, 200);
    assert_eq!(answer.json()["results"].as_array().unwrap().len(), 4);
    for count in [5, 128] {
        let answer = post(&reader, &setup, &gets(count));
        assert_eq!(answer.status, 413, "{}", answer.text());
        let body = answer.json();
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
        assert_eq!(body["failed_op"], 4, "{body}");
        assert!(answer.body.len() < 1024, "{}", answer.text());
    }
}
