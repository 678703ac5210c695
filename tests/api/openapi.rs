//! The OpenAPI document (`GET /v1/openapi.json`) against what the server
//! sends: every field of an answer is a property of its documented schema,
//! and the unions a generated client decodes carry a discriminator.

use serde_json::{Value, json};

use crate::support::{Setup, expect_status};

/// The component schema `name`, with the properties of any `allOf` parts
/// (flattened structs) merged in.
fn properties(document: &Value, name: &str) -> Vec<String> {
    let schema = &document["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    let mut names: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        if let Some(reference) = part["$ref"].as_str() {
            let inner = reference.trim_start_matches("#/components/schemas/");
            names.extend(properties(document, inner));
        }
        if let Some(own) = part["properties"].as_object() {
            names.extend(own.keys().cloned());
        }
    }
    names
}

#[track_caller]
fn documents_every_field(document: &Value, schema: &str, answer: &Value) {
    let documented = properties(document, schema);
    for field in answer.as_object().expect("an object").keys() {
        assert!(
            documented.contains(field),
            "{schema} does not document {field:?} ({documented:?})"
        );
    }
}

#[test]
fn the_status_and_txn_schemas_document_every_field_the_server_sends() {
    let setup = Setup::new("p", json!({}));
    let document = setup.anonymous().get("/v1/openapi.json").json();
    let status = setup.admin.get("/v1/status");
    expect_status(&status, 200);
    let status = status.json();
    documents_every_field(&document, "ServerStatus", &status);
    documents_every_field(&document, "Limits", &status["limits"]);

    let answer = setup.manage.post_json(
        &setup.path("/txn"),
        &json!({"ops": [
            {"op": "put", "key": "a", "value": {"x": 1}},
            {"op": "get", "key": "a"},
            {"op": "incr", "key": "n"},
            {"op": "delete", "key": "a"},
            {"op": "get", "key": "a"},
        ]}),
    );
    expect_status(&answer, 200);
    let answer = answer.json();
    documents_every_field(&document, "TxnAnswer", &answer);
    let union = &document["components"]["schemas"]["TxnResult"];
    assert_eq!(union["discriminator"]["propertyName"], "op");
    let mapping = union["discriminator"]["mapping"].as_object().unwrap();
    let results = answer["results"].as_array().unwrap();
    for (result, op) in results.iter().zip(["put", "get", "incr", "delete"]) {
        assert_eq!(result["op"], op, "{result}");
        let schema = mapping[op].as_str().unwrap();
        let schema = schema.trim_start_matches("#/components/schemas/");
        documents_every_field(&document, schema, result);
    }
    assert_eq!(results[4], Value::Null, "a get of an absent key");
}

#[test]
fn the_txn_ops_are_a_union_told_apart_by_op() {
    let setup = Setup::new("p", json!({}));
    let document = setup.anonymous().get("/v1/openapi.json").json();
    let schemas = &document["components"]["schemas"];
    let ops = &schemas["TxnOp"];
    assert_eq!(ops["discriminator"]["propertyName"], "op");
    for (op, reference) in ops["discriminator"]["mapping"].as_object().unwrap() {
        let name = reference
            .as_str()
            .unwrap()
            .trim_start_matches("#/components/schemas/");
        let tag = &schemas[name]["properties"]["op"]["$ref"];
        let tag = tag
            .as_str()
            .unwrap()
            .trim_start_matches("#/components/schemas/");
        assert_eq!(schemas[tag]["enum"], json!([op]), "{name}.op");
    }
    assert_eq!(
        document["components"]["schemas"]["TxnRequest"]["properties"]["ops"]["items"]["$ref"],
        "#/components/schemas/TxnOp"
    );
}
