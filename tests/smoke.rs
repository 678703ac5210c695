//! A first end-to-end look: the server starts, stores a value and gives it
//! back byte for byte.

use crate::common;

use common::{TestServer, kv};
use serde_json::json;

#[test]
fn a_value_put_is_read_back_byte_for_byte() {
    let server = TestServer::start();
    let admin = server.admin();
    let manage = admin.with_token(&admin.create_project("smoke", json!({})));
    let value: Vec<u8> = (0..=255u8).collect();
    assert_eq!(manage.put(&kv("smoke", "a/b c"), &value).status, 201);
    let answer = manage.get(&kv("smoke", "a/b c"));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, value);
    assert_eq!(
        answer.header("content-type"),
        Some("application/octet-stream")
    );
}

#[test]
fn values_survive_a_restart() {
    let server = TestServer::start();
    let secret = server.admin().create_project("durable", json!({}));
    let manage = server.admin().with_token(&secret);
    assert_eq!(manage.put(&kv("durable", "k"), b"kept").status, 201);
    let server = server.restart();
    let answer = server.admin().with_token(&secret).get(&kv("durable", "k"));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, b"kept");
}
