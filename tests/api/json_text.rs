//! JSON values kept as sent (issue 15, item 1). A transaction's put stores
//! the exact JSON text of its `value`, and every answer that inlines a
//! stored JSON value (`?meta=true`, a listing with values, a transaction's
//! `get`, a watch with values) writes the stored text as it is: big numbers
//! keep their digits, objects their key order, `-0` and `1E2` their spelling.
//! The answers are checked as bytes: parsing them would hide exactly what is
//! checked.

use crate::support::{Setup, expect_status};
use crate::watch::Open;

/// JSON texts that a round trip through `f64` or a sorted map changes.
const TEXTS: [&str; 5] = [
    r#"{"n":123456789012345678901234567890}"#,
    r#"{"b":1,"a":2}"#,
    "-0",
    "1E2",
    r#"[0.10, {"z": null, "y": 1.0e-7}]"#,
];

/// How an answer inlines `text` as a JSON value.
fn inlined(text: &str) -> String {
    format!(r#""value":{text},"encoding":"json""#)
}

fn post_txn(setup: &Setup, body: &str) -> String {
    let answer = setup.manage.send(
        "POST",
        &setup.path("/txn"),
        Some(body.as_bytes()),
        &[("Content-Type", "application/json")],
    );
    expect_status(&answer, 200);
    answer.text()
}

/// The project with each text stored twice: `txn/<i>` by a transaction's
/// put, `put/<i>` by a PUT with `application/json`.
fn stored() -> Setup {
    let setup = Setup::new("p", serde_json::json!({}));
    for (index, text) in TEXTS.iter().enumerate() {
        post_txn(
            &setup,
            &format!(r#"{{"ops": [{{"op": "put", "key": "txn/{index}", "value": {text}}}]}}"#),
        );
        let answer = setup.manage.send(
            "PUT",
            &setup.kv(&format!("put/{index}")),
            Some(text.as_bytes()),
            &[("Content-Type", "application/json")],
        );
        expect_status(&answer, 201);
    }
    setup
}

fn keys() -> impl Iterator<Item = (String, &'static str)> {
    TEXTS.iter().enumerate().flat_map(|(index, text)| {
        [
            (format!("txn/{index}"), *text),
            (format!("put/{index}"), *text),
        ]
    })
}

#[test]
fn a_transaction_stores_the_json_text_of_a_value_as_sent() {
    let setup = stored();
    for (key, text) in keys() {
        let answer = setup.manage.get(&setup.kv(&key));
        expect_status(&answer, 200);
        assert_eq!(answer.text(), text, "the stored bytes of {key}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
    }
}

#[test]
fn meta_answers_listings_and_txn_gets_write_the_stored_json_text() {
    let setup = stored();
    let listing = setup.manage.get(&setup.path("/kv?values=true")).text();
    for (key, text) in keys() {
        let meta = setup.manage.get(&format!("{}?meta=true", setup.kv(&key)));
        expect_status(&meta, 200);
        assert!(
            meta.text().contains(&inlined(text)),
            "meta of {key}: {}",
            meta.text()
        );
        assert!(
            listing.contains(&inlined(text)),
            "listing, {key}: {listing}"
        );
        let got = post_txn(
            &setup,
            &format!(r#"{{"ops": [{{"op": "get", "key": "{key}"}}]}}"#),
        );
        assert!(got.contains(&inlined(text)), "txn get of {key}: {got}");
    }
}

#[test]
fn a_watch_with_values_writes_the_stored_json_text() {
    let setup = stored();
    let mut watch = Open::get(&setup.manage, &setup.path("/watch?since=0&values=true"));
    assert_eq!(watch.status, 200);
    for (key, text) in keys() {
        assert!(
            watch.wait_for(&inlined(text), 10),
            "the watch's event for {key}: {}",
            watch.received
        );
    }
}

#[test]
fn stored_json_with_line_breaks_is_one_event_of_several_data_lines() {
    let setup = Setup::new("p", serde_json::json!({}));
    let text = "{\n  \"b\": 1,\r\n  \"a\": 2\n}";
    let answer = setup.manage.send(
        "PUT",
        &setup.kv("pretty"),
        Some(text.as_bytes()),
        &[("Content-Type", "application/json")],
    );
    expect_status(&answer, 201);
    let mut watch = Open::get(&setup.manage, &setup.path("/watch?since=0&values=true"));
    let expected = "data: {\"key\":\"pretty\"";
    assert!(watch.wait_for("event: sync", 10), "{}", watch.received);
    let event = &watch.received[watch.received.find(expected).expect("the put event")..];
    let event = &event[..event.find("\n\n").expect("the event's end")];
    let data: Vec<&str> = event
        .lines()
        .map(|line| line.strip_prefix("data: ").expect("only data lines"))
        .collect();
    assert_eq!(data.len(), 4, "{event:?}");
    let joined = data.join("\n");
    assert!(
        joined.contains("\"value\":{\n  \"b\": 1,\n  \"a\": 2\n},\"encoding\":\"json\""),
        "{joined:?}"
    );
}
