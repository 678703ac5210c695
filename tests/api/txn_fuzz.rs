//! Property test of the transaction body: any JSON (and any bytes) posted
//! to `POST …/txn` is answered 200 or a 4xx in the contract's error shape,
//! never a 5xx, and the server answers the next request as before.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::common::TestServer;
use crate::support::Api;

/// JSON values of every kind, nested a little, with the field names a txn
/// body uses among the object keys.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z/ %é]{0,8}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(field(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("op".to_owned()),
        Just("key".to_owned()),
        Just("value".to_owned()),
        Just("value_base64".to_owned()),
        Just("content_type".to_owned()),
        Just("ttl".to_owned()),
        Just("by".to_owned()),
        Just("version".to_owned()),
        Just("exists".to_owned()),
        "[a-z_]{1,6}",
    ]
}

/// An op that is mostly well formed: a known op name (or not), a key, and
/// any other fields with any values.
fn op() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("put"),
            Just("get"),
            Just("delete"),
            Just("incr"),
            Just("swap"),
        ],
        prop_oneof!["[a-c]{1,2}".prop_map(Value::from), any_json()],
        prop::collection::btree_map(field(), any_json(), 0..3),
    )
        .prop_map(|(name, key, extra)| {
            let mut op: Map<String, Value> = extra.into_iter().collect();
            op.insert("op".into(), json!(name));
            op.insert("key".into(), key);
            Value::Object(op)
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            prop::collection::vec(any_json(), 0..3),
            prop::collection::vec(op(), 0..6)
        )
            .prop_map(|(checks, ops)| json!({"checks": checks, "ops": ops})
                .to_string()
                .into_bytes()),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        any::<Vec<u8>>(),
    ]
}

#[test]
fn any_transaction_body_is_answered_200_or_a_4xx_error_never_a_5xx() {
    let server = TestServer::start();
    let admin = Api::new(&server.url, Some(&server.admin_token));
    admin.create_project("p", json!({}));
    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(body in body())| {
        let answer = admin.send(
            "POST",
            "/v1/projects/p/txn",
            Some(&body),
            &[("content-type", "application/json")],
        );
        let text = String::from_utf8_lossy(&body).into_owned();
        prop_assert!(answer.status < 500, "{text}: {} {}", answer.status, answer.text());
        if answer.status != 200 {
            prop_assert!(answer.status >= 400, "{text}: {}", answer.status);
            // The contract's error body (a txn's may add `failed_op` or
            // `failed_checks`).
            let error = answer.json();
            prop_assert!(error["error"]["code"].is_string(), "{text}: {error}");
            prop_assert!(error["error"]["message"].is_string(), "{text}: {error}");
        }
    });
    assert_eq!(admin.get("/healthz").status, 200);
}
