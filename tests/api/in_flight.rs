//! Requests under way when their right goes: a body that is still arriving
//! when its token is revoked, its project deleted (and created again under
//! the same id), or its project closed to anonymous callers. The contract:
//! "Revocation … holds from the next request on", and `public` "takes
//! effect at once both ways". A request whose right is gone by the time its
//! write would commit writes nothing and is answered as a new request with
//! the same credential would be (401). Each test holds a request's body back
//! ([`hold_body`]) until the right is gone, then sends the rest.

use serde_json::{Value, json};

use crate::support::{HeldRequest, RawAnswer, Setup, expect_status, hold_body, mint, put};

/// A held JSON request of `method` to `path` with `token`.
fn held_json(setup: &Setup, method: &str, path: &str, token: &str, body: &Value) -> HeldRequest {
    hold_body(
        &setup.server,
        &format!(
            "{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json"
        ),
        body.to_string().as_bytes(),
    )
}

#[track_caller]
fn expect_raw_unauthorized(answer: &RawAnswer) {
    assert_eq!(
        answer.status,
        401,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.code(), "unauthorized");
}

/// The names of a project's tokens, as the admin lists them.
fn token_names(setup: &Setup, project: &str) -> Vec<String> {
    let answer = setup.admin.get(&format!("/v1/projects/{project}/tokens"));
    expect_status(&answer, 200);
    answer.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_token_of_a_deleted_project_mints_nothing_in_the_new_project_of_its_id() {
    let setup = Setup::new("c", json!({}));
    let old = setup.manage.secret();
    let minting = held_json(
        &setup,
        "POST",
        "/v1/projects/c/tokens",
        &old,
        &json!({"role": "manage", "name": "survivor"}),
    );
    expect_status(&setup.admin.delete("/v1/projects/c"), 204);
    setup.admin.create_project("c", json!({}));
    put(&setup.admin, &setup.kv("private"), b"new-c-data");

    expect_raw_unauthorized(&minting.finish());
    assert!(!token_names(&setup, "c").contains(&"survivor".to_owned()));
}

#[test]
fn a_revoked_manage_token_mints_nothing() {
    let setup = Setup::new("c", json!({}));
    let (manage, token) = setup.token(json!({"role": "manage"}));
    let minting = held_json(
        &setup,
        "POST",
        "/v1/projects/c/tokens",
        &manage.secret(),
        &json!({"role": "manage", "name": "survivor"}),
    );
    let id = token["id"].as_str().unwrap();
    expect_status(
        &setup.admin.delete(&format!("/v1/projects/c/tokens/{id}")),
        204,
    );

    expect_raw_unauthorized(&minting.finish());
    assert!(!token_names(&setup, "c").contains(&"survivor".to_owned()));
}

#[test]
fn a_revoked_admin_token_neither_mints_an_admin_token_nor_opens_a_project() {
    let setup = Setup::new("b", json!({}));
    let second = setup
        .admin
        .post_json("/v1/tokens", &json!({"name": "second"}));
    expect_status(&second, 201);
    let (secret, id) = (
        second.json()["secret"].as_str().unwrap().to_owned(),
        second.json()["id"].as_str().unwrap().to_owned(),
    );
    let minting = held_json(
        &setup,
        "POST",
        "/v1/tokens",
        &secret,
        &json!({"name": "admin-survivor"}),
    );
    let opening = held_json(
        &setup,
        "PATCH",
        "/v1/projects/b",
        &secret,
        &json!({"public": "write"}),
    );
    expect_status(&setup.admin.delete(&format!("/v1/tokens/{id}")), 204);

    expect_raw_unauthorized(&minting.finish());
    expect_raw_unauthorized(&opening.finish());
    let admins = setup.admin.get("/v1/tokens").text();
    assert!(!admins.contains("admin-survivor"), "{admins}");
    assert_eq!(
        setup.admin.get("/v1/projects/b").json()["public"],
        json!("none")
    );
}

#[test]
fn a_revoked_write_token_stores_nothing() {
    let setup = Setup::new("c", json!({}));
    let (write, token) = setup.token(json!({"role": "write"}));
    let auth = format!("Authorization: Bearer {}", write.secret());
    let putting = hold_body(
        &setup.server,
        &format!("PUT /v1/projects/c/kv/planted HTTP/1.1\r\n{auth}"),
        b"planted-value",
    );
    let transacting = held_json(
        &setup,
        "POST",
        "/v1/projects/c/txn",
        &write.secret(),
        &json!({"ops": [{"op": "put", "key": "planted-txn", "value": "v"}]}),
    );
    let id = token["id"].as_str().unwrap();
    expect_status(
        &setup.admin.delete(&format!("/v1/projects/c/tokens/{id}")),
        204,
    );

    expect_raw_unauthorized(&putting.finish());
    expect_raw_unauthorized(&transacting.finish());
    for key in ["planted", "planted-txn"] {
        expect_status(&setup.admin.get(&setup.kv(key)), 404);
    }
}

#[test]
fn an_anonymous_write_stores_nothing_once_the_project_is_closed() {
    let setup = Setup::new("pub", json!({"public": "write"}));
    let putting = hold_body(
        &setup.server,
        "PUT /v1/projects/pub/kv/anonymous HTTP/1.1",
        b"planted-anonymously",
    );
    let closed = setup
        .admin
        .patch_json("/v1/projects/pub", &json!({"public": "none"}));
    expect_status(&closed, 200);

    let answer = putting.finish();
    // What a new anonymous PUT gets now.
    let fresh = setup.anonymous().put(&setup.kv("anonymous"), b"again");
    assert_eq!(answer.status, fresh.status);
    expect_raw_unauthorized(&answer);
    expect_status(&setup.admin.get(&setup.kv("anonymous")), 404);
}

#[test]
fn an_anonymous_write_is_forbidden_once_the_project_is_open_only_to_reads() {
    let setup = Setup::new("pub", json!({"public": "write"}));
    let putting = hold_body(
        &setup.server,
        "PUT /v1/projects/pub/kv/anonymous HTTP/1.1",
        b"planted-anonymously",
    );
    let narrowed = setup
        .admin
        .patch_json("/v1/projects/pub", &json!({"public": "read"}));
    expect_status(&narrowed, 200);

    let answer = putting.finish();
    let fresh = setup.anonymous().put(&setup.kv("anonymous"), b"again");
    assert_eq!(answer.status, 403);
    assert_eq!(answer.status, fresh.status);
    assert_eq!(answer.code(), fresh.code());
    expect_status(&setup.admin.get(&setup.kv("anonymous")), 404);
}

/// A read-only transaction needs only `read`: an anonymous one sent while
/// the project was open to writes still reads once it is narrowed to reads
/// (as a new one would), and is refused once it is closed.
#[test]
fn an_anonymous_read_only_transaction_reads_while_the_project_stays_open_to_reads() {
    let setup = Setup::new("pub", json!({"public": "write"}));
    expect_status(&setup.admin.put(&setup.kv("k"), b"v"), 201);
    let body = json!({"ops": [{"op": "get", "key": "k"}]}).to_string();
    let hold = |setup: &Setup| {
        hold_body(
            &setup.server,
            "POST /v1/projects/pub/txn HTTP/1.1\r\nContent-Type: application/json",
            body.as_bytes(),
        )
    };
    let reading = hold(&setup);
    let narrowed = setup
        .admin
        .patch_json("/v1/projects/pub", &json!({"public": "read"}));
    expect_status(&narrowed, 200);
    let answer = reading.finish();
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );

    let reading = hold(&setup);
    let closed = setup
        .admin
        .patch_json("/v1/projects/pub", &json!({"public": "none"}));
    expect_status(&closed, 200);
    expect_raw_unauthorized(&reading.finish());
}

#[test]
fn a_write_token_still_held_writes_as_before() {
    let setup = Setup::new("c", json!({}));
    let write = setup.client("write");
    let other = mint(&setup.admin, "c", json!({"role": "read"})).1;
    let auth = format!("Authorization: Bearer {}", write.secret());
    let putting = hold_body(
        &setup.server,
        &format!("PUT /v1/projects/c/kv/kept HTTP/1.1\r\n{auth}"),
        b"kept-value",
    );
    // Another token's revocation changes nothing for this one.
    let id = other["id"].as_str().unwrap();
    expect_status(
        &setup.admin.delete(&format!("/v1/projects/c/tokens/{id}")),
        204,
    );
    assert_eq!(putting.finish().status, 201);
    assert_eq!(setup.admin.get(&setup.kv("kept")).text(), "kept-value");
}
