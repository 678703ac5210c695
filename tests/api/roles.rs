//! What each kind of token may do, and what it is refused, on every route
//! family: the project itself, its tokens, its keys (one by one, listed and
//! deleted by prefix), and the server-wide routes. Each test checks both
//! sides, and that a refused request changed nothing. The last tests pin the
//! order of refusals, which decides what a caller can learn about projects
//! it has no rights on.

use serde_json::{Value, json};

use crate::common::{Answer, kv};
use crate::support::{
    Api, Setup, expect_error, expect_status, expect_unauthorized, mint, put, raw_exchange,
};

/// The keys a listing answer holds, in order.
fn keys_of(answer: &Answer) -> Vec<String> {
    expect_status(answer, 200);
    answer.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["key"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids in a `{"tokens": [...]}` answer.
fn token_ids(answer: &Answer) -> Vec<String> {
    expect_status(answer, 200);
    answer.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The id of the token a client holds.
fn own_id(client: &Api) -> String {
    let answer = client.get("/v1/whoami");
    expect_status(&answer, 200);
    answer.json()["id"].as_str().unwrap().to_owned()
}

#[test]
fn the_admin_token_reaches_every_route_family() {
    let setup = Setup::new("p", json!({}));
    let admin = &setup.admin;

    expect_status(&admin.get("/v1/status"), 200);
    let me = admin.get("/v1/whoami").json();
    assert_eq!(
        (&me["role"], &me["project"]),
        (&json!("admin"), &Value::Null)
    );

    let listed = admin.get("/v1/projects").json();
    let ids: Vec<&str> = listed["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"p"), "{ids:?}");
    expect_status(&admin.get(&setup.path("")), 200);
    let patched = admin.patch_json(
        &setup.path(""),
        &json!({"max_keys": 50, "max_value_bytes": 4 << 20, "storage": "memory"}),
    );
    expect_status(&patched, 200);
    let patched = patched.json();
    assert_eq!(
        (
            &patched["max_keys"],
            &patched["max_value_bytes"],
            &patched["storage"]
        ),
        (&json!(50), &json!(4 << 20), &json!("memory"))
    );

    expect_status(&admin.put(&setup.kv("k"), b"v"), 201);
    assert_eq!(admin.get(&setup.kv("k")).body, b"v");
    expect_status(&admin.send("HEAD", &setup.kv("k"), None, &[]), 200);
    assert_eq!(keys_of(&admin.get(&setup.path("/kv"))), ["k"]);
    expect_status(&admin.delete(&setup.kv("k")), 204);
    put(admin, &setup.kv("d/1"), b"1");
    put(admin, &setup.kv("d/2"), b"2");
    let deleted = admin.delete(&setup.path("/kv?prefix=d/"));
    expect_status(&deleted, 200);
    assert_eq!(deleted.json()["deleted"], 2);

    let (_, token) = mint(admin, "p", json!({"role": "manage", "prefix": "x/"}));
    let id = token["id"].as_str().unwrap();
    assert!(token_ids(&admin.get(&setup.path("/tokens"))).contains(&id.to_owned()));
    expect_status(&admin.delete(&setup.path(&format!("/tokens/{id}"))), 204);

    let created = admin.post_json("/v1/tokens", &json!({"name": "second"}));
    expect_status(&created, 201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert!(token_ids(&admin.get("/v1/tokens")).contains(&id));
    expect_status(&admin.delete(&format!("/v1/tokens/{id}")), 204);

    expect_status(&admin.delete(&setup.path("")), 204);
    expect_error(&admin.get(&setup.path("")), 404, "project_not_found");
}

#[test]
fn a_manage_token_runs_its_project_but_not_the_server() {
    let setup = Setup::new("p", json!({"max_keys": 100, "max_value_bytes": 4096}));
    let manage = &setup.manage;

    let me = manage.get("/v1/whoami").json();
    assert_eq!(
        (&me["role"], &me["project"], &me["prefix"]),
        (&json!("manage"), &json!("p"), &Value::Null)
    );
    expect_status(&manage.get(&setup.path("")), 200);

    // Switching keys_discoverable and lowering limits are the manage rights.
    for change in [
        json!({"keys_discoverable": false}),
        json!({"max_keys": 10}),
        json!({"max_value_bytes": 1024}),
    ] {
        let answer = manage.patch_json(&setup.path(""), &change);
        expect_status(&answer, 200);
        let (field, value) = change.as_object().unwrap().iter().next().unwrap();
        assert_eq!(&answer.json()[field], value, "after PATCH {change}");
    }
    // Raising a limit (null is unlimited) or moving storage needs the admin.
    for change in [
        json!({"max_keys": 11}),
        json!({"max_keys": null}),
        json!({"max_value_bytes": 1025}),
        json!({"storage": "memory"}),
        json!({"keys_discoverable": true, "max_keys": 20}),
    ] {
        let answer = manage.patch_json(&setup.path(""), &change);
        expect_error(&answer, 403, "forbidden");
    }
    let project = setup.admin.get(&setup.path("")).json();
    assert_eq!(
        (
            &project["max_keys"],
            &project["max_value_bytes"],
            &project["storage"],
            &project["keys_discoverable"]
        ),
        (&json!(10), &json!(1024), &json!("disk"), &json!(false))
    );

    expect_status(&manage.put(&setup.kv("k"), b"v"), 201);
    assert_eq!(manage.get(&setup.kv("k")).body, b"v");
    expect_status(&manage.send("HEAD", &setup.kv("k"), None, &[]), 200);
    // A manage token lists even when the project hides its keys.
    assert_eq!(keys_of(&manage.get(&setup.path("/kv"))), ["k"]);
    expect_status(&manage.delete(&setup.kv("k")), 204);
    put(manage, &setup.kv("d/1"), b"1");
    assert_eq!(
        manage.delete(&setup.path("/kv?prefix=d/")).json()["deleted"],
        1
    );

    let mut minted = Vec::new();
    for role in ["read", "write", "manage"] {
        let (client, token) = mint(manage, "p", json!({ "role": role }));
        expect_status(&client.get(&setup.path("")), 200);
        minted.push(token["id"].as_str().unwrap().to_owned());
    }
    let listed = token_ids(&manage.get(&setup.path("/tokens")));
    assert!(minted.iter().all(|id| listed.contains(id)), "{listed:?}");
    for id in &minted {
        expect_status(&manage.delete(&setup.path(&format!("/tokens/{id}"))), 204);
    }

    expect_error(&manage.delete(&setup.path("")), 403, "forbidden");
    expect_status(&setup.admin.get(&setup.path("")), 200);
}

#[test]
fn a_write_token_writes_keys_but_cannot_manage_the_project() {
    let setup = Setup::new("p", json!({"max_keys": 100}));
    let writer = setup.client("write");
    assert_eq!(writer.get("/v1/whoami").json()["role"], "write");
    expect_status(&writer.get(&setup.path("")), 200);

    expect_status(&writer.put(&setup.kv("k"), b"1"), 201);
    expect_status(&writer.put(&setup.kv("k"), b"2"), 200);
    assert_eq!(writer.get(&setup.kv("k")).body, b"2");
    expect_status(&writer.send("HEAD", &setup.kv("k"), None, &[]), 200);
    assert_eq!(keys_of(&writer.get(&setup.path("/kv"))), ["k"]);
    expect_status(&writer.delete(&setup.kv("k")), 204);
    put(&writer, &setup.kv("d/1"), b"1");
    assert_eq!(
        writer.delete(&setup.path("/kv?prefix=d/")).json()["deleted"],
        1
    );

    for change in [json!({"keys_discoverable": false}), json!({"max_keys": 1})] {
        expect_error(
            &writer.patch_json(&setup.path(""), &change),
            403,
            "forbidden",
        );
    }
    expect_error(
        &writer.post_json(&setup.path("/tokens"), &json!({"role": "read"})),
        403,
        "forbidden",
    );
    expect_error(&writer.get(&setup.path("/tokens")), 403, "forbidden");
    let id = own_id(&writer);
    expect_error(
        &writer.delete(&setup.path(&format!("/tokens/{id}"))),
        403,
        "forbidden",
    );

    let project = setup.admin.get(&setup.path("")).json();
    assert_eq!(
        (&project["keys_discoverable"], &project["max_keys"]),
        (&json!(true), &json!(100))
    );
    assert_eq!(
        token_ids(&setup.admin.get(&setup.path("/tokens"))).len(),
        2,
        "the first manage token and the writer, nothing minted"
    );
}

#[test]
fn a_read_token_reads_but_cannot_write_or_delete() {
    let setup = Setup::new("p", json!({}));
    let version = put(&setup.manage, &setup.kv("k"), b"v");
    let reader = setup.client("read");
    assert_eq!(reader.get("/v1/whoami").json()["role"], "read");
    expect_status(&reader.get(&setup.path("")), 200);

    assert_eq!(reader.get(&setup.kv("k")).body, b"v");
    expect_status(&reader.send("HEAD", &setup.kv("k"), None, &[]), 200);
    assert_eq!(keys_of(&reader.get(&setup.path("/kv"))), ["k"]);
    expect_error(&reader.get(&setup.kv("absent")), 404, "key_not_found");

    expect_error(&reader.put(&setup.kv("k"), b"changed"), 403, "forbidden");
    expect_error(&reader.put(&setup.kv("new"), b"v"), 403, "forbidden");
    expect_error(&reader.delete(&setup.kv("k")), 403, "forbidden");
    expect_error(&reader.delete(&setup.path("/kv?prefix=")), 403, "forbidden");
    expect_error(
        &reader.patch_json(&setup.path(""), &json!({"keys_discoverable": false})),
        403,
        "forbidden",
    );
    expect_error(
        &reader.post_json(&setup.path("/tokens"), &json!({"role": "read"})),
        403,
        "forbidden",
    );
    expect_error(&reader.get(&setup.path("/tokens")), 403, "forbidden");

    let after = setup.manage.get(&setup.kv("k"));
    assert_eq!(after.body, b"v");
    assert_eq!(
        after.header("etag"),
        Some(format!("\"{version}\"").as_str())
    );
    assert_eq!(keys_of(&setup.manage.get(&setup.path("/kv"))), ["k"]);
}

#[test]
fn project_tokens_of_every_role_are_forbidden_on_admin_only_routes() {
    let setup = Setup::new("p", json!({}));
    let scoped = setup.token(json!({"role": "manage", "prefix": "app/"})).0;
    let clients = [
        setup.manage.clone(),
        scoped,
        setup.client("write"),
        setup.client("read"),
    ];
    for client in &clients {
        let id = own_id(client);
        let answers = [
            client.get("/v1/status"),
            client.get("/metrics"),
            client.get("/v1/tokens"),
            client.post_json("/v1/tokens", &json!({})),
            client.delete(&format!("/v1/tokens/{id}")),
            client.post_json("/v1/projects", &json!({"id": "q"})),
            client.delete(&setup.path("")),
            client.send("POST", "/v1/verify", None, &[]),
            client.send("POST", "/v1/compact", None, &[]),
        ];
        for answer in &answers {
            expect_error(answer, 403, "forbidden");
        }
        expect_status(&client.get("/v1/whoami"), 200);
    }
    expect_error(&setup.admin.get("/v1/projects/q"), 404, "project_not_found");
    expect_status(&setup.admin.get(&setup.path("")), 200);
    assert_eq!(token_ids(&setup.admin.get("/v1/tokens")).len(), 1);
}

#[test]
fn a_prefix_token_reaches_only_keys_that_start_with_its_prefix() {
    let setup = Setup::new("p", json!({}));
    for key in ["ap", "app/1", "apple", "other"] {
        put(&setup.manage, &setup.kv(key), key.as_bytes());
    }
    let (writer, token) = setup.token(json!({"role": "write", "prefix": "app"}));
    assert_eq!(token["prefix"], "app");

    // The prefix is a byte prefix: `app` covers `app/1` and `apple`.
    assert_eq!(writer.get(&setup.kv("app/1")).body, b"app/1");
    assert_eq!(writer.get(&setup.kv("apple")).body, b"apple");
    expect_status(&writer.put(&setup.kv("app/2"), b"2"), 201);
    // Outside it, a key is forbidden whether or not it exists.
    for key in ["ap", "other", "absent", "/app"] {
        expect_error(&writer.get(&setup.kv(key)), 403, "forbidden");
        expect_error(&writer.put(&setup.kv(key), b"x"), 403, "forbidden");
        expect_error(&writer.delete(&setup.kv(key)), 403, "forbidden");
        expect_status(&writer.send("HEAD", &setup.kv(key), None, &[]), 403);
    }

    // A listing without a prefix, or with an empty one, is narrowed to it.
    let inside = ["app/1", "app/2", "apple"];
    assert_eq!(keys_of(&writer.get(&setup.path("/kv"))), inside);
    assert_eq!(keys_of(&writer.get(&setup.path("/kv?prefix="))), inside);
    assert_eq!(
        keys_of(&writer.get(&setup.path("/kv?prefix=app/"))),
        ["app/1", "app/2"]
    );
    for prefix in ["ap", "a", "other"] {
        let path = setup.path(&format!("/kv?prefix={prefix}"));
        expect_error(&writer.get(&path), 403, "forbidden");
        expect_error(&writer.delete(&path), 403, "forbidden");
    }
    // A delete by prefix is not narrowed: an empty prefix means everything.
    expect_error(&writer.delete(&setup.path("/kv?prefix=")), 403, "forbidden");
    assert_eq!(
        writer.delete(&setup.path("/kv?prefix=app/")).json()["deleted"],
        2
    );
    assert_eq!(
        keys_of(&setup.manage.get(&setup.path("/kv"))),
        ["ap", "apple", "other"]
    );
}

#[test]
fn a_manage_token_with_a_prefix_cannot_change_the_projects_settings() {
    let setup = Setup::new("p", json!({"max_keys": 100}));
    let scoped = setup.token(json!({"role": "manage", "prefix": "team/"})).0;
    for change in [json!({"keys_discoverable": false}), json!({"max_keys": 5})] {
        expect_error(
            &scoped.patch_json(&setup.path(""), &change),
            403,
            "forbidden",
        );
    }
    let project = scoped.get(&setup.path("")).json();
    assert_eq!(
        (&project["keys_discoverable"], &project["max_keys"]),
        (&json!(true), &json!(100))
    );
}

#[test]
fn a_project_that_hides_its_keys_lists_them_only_to_manage_and_admin() {
    let setup = Setup::new("p", json!({"keys_discoverable": false}));
    put(&setup.manage, &setup.kv("k"), b"v");
    for role in ["read", "write"] {
        let client = setup.client(role);
        expect_error(&client.get(&setup.path("/kv")), 403, "listing_disabled");
        expect_error(
            &client.get(&setup.path("/kv?prefix=k")),
            403,
            "listing_disabled",
        );
        // Reading a key by its name is still allowed.
        assert_eq!(client.get(&setup.kv("k")).body, b"v");
    }
    assert_eq!(keys_of(&setup.manage.get(&setup.path("/kv"))), ["k"]);
    assert_eq!(keys_of(&setup.admin.get(&setup.path("/kv"))), ["k"]);
}

#[test]
fn a_manage_token_cannot_mint_a_token_wider_than_itself() {
    let setup = Setup::new("p", json!({}));
    let narrow = setup
        .token(json!({"role": "manage", "prefix": "app/", "expires_in": "1h"}))
        .0;
    let wider = [
        json!({"role": "manage"}),
        json!({"role": "read"}),
        json!({"role": "read", "expires_in": "10m"}),
        json!({"role": "read", "prefix": "ap", "expires_in": "10m"}),
        json!({"role": "read", "prefix": "other/", "expires_in": "10m"}),
        json!({"role": "read", "prefix": "app/x"}),
        json!({"role": "read", "prefix": "app/x", "expires_in": "2h"}),
        json!({"role": "manage", "prefix": "app/", "expires_in": "61m"}),
    ];
    for body in &wider {
        let answer = narrow.post_json(&setup.path("/tokens"), body);
        assert_eq!(answer.status, 403, "minting {body}: {}", answer.text());
        expect_error(&answer, 403, "forbidden");
    }
    let narrower = [
        json!({"role": "read", "prefix": "app/x/", "expires_in": "10m"}),
        json!({"role": "write", "prefix": "app/", "expires_in": "30m"}),
        json!({"role": "manage", "prefix": "app/sub/", "expires_in": "59m"}),
    ];
    for body in &narrower {
        let (client, token) = mint(&narrow, "p", body.clone());
        assert_eq!(
            (&token["role"], &token["prefix"]),
            (&body["role"], &body["prefix"])
        );
        expect_status(&client.get("/v1/whoami"), 200);
    }
    // The refused ones were not made: the first manage token, `narrow` and
    // the three narrower ones.
    assert_eq!(token_ids(&setup.admin.get(&setup.path("/tokens"))).len(), 5);

    // Without an expiry of its own, a manage token may mint tokens without
    // one; the same prefix is not wider.
    let lasting = setup.token(json!({"role": "manage", "prefix": "app/"})).0;
    mint(&lasting, "p", json!({"role": "read", "prefix": "app/"}));
}

#[test]
fn a_manage_token_lists_and_revokes_only_tokens_no_wider_than_itself() {
    let setup = Setup::new("p", json!({}));
    let (narrow, narrow_token) = setup.token(json!({"role": "manage", "prefix": "app/"}));
    let (inside, inside_token) = setup.token(json!({"role": "read", "prefix": "app/x"}));
    let (outside, outside_token) = setup.token(json!({"role": "read", "prefix": "other/"}));
    let (wide, wide_token) = setup.token(json!({"role": "write"}));
    let first_manage = own_id(&setup.manage);
    let id = |token: &Value| token["id"].as_str().unwrap().to_owned();

    let mut listed = token_ids(&narrow.get(&setup.path("/tokens")));
    listed.sort();
    let mut expected = vec![id(&narrow_token), id(&inside_token)];
    expected.sort();
    assert_eq!(listed, expected);

    for hidden in [
        id(&outside_token),
        id(&wide_token),
        first_manage,
        "tok_0".into(),
    ] {
        let answer = narrow.delete(&setup.path(&format!("/tokens/{hidden}")));
        expect_error(&answer, 404, "token_not_found");
    }
    expect_status(&outside.get("/v1/whoami"), 200);
    expect_status(&wide.get("/v1/whoami"), 200);
    expect_status(&setup.manage.get("/v1/whoami"), 200);

    let path = setup.path(&format!("/tokens/{}", id(&inside_token)));
    expect_status(&narrow.delete(&path), 204);
    expect_unauthorized(&inside.get("/v1/whoami"));
    // The project's first manage token, without prefix or expiry, sees all.
    assert_eq!(
        token_ids(&setup.manage.get(&setup.path("/tokens"))).len(),
        4
    );
}

#[test]
fn whoami_describes_the_callers_own_token() {
    let setup = Setup::new("p", json!({}));
    for body in [
        json!({"role": "read", "prefix": "logs/", "name": "reader", "expires_in": "1h"}),
        json!({"role": "write", "name": "writer"}),
        json!({"role": "manage", "prefix": "a"}),
    ] {
        let (client, mut token) = setup.token(body);
        token.as_object_mut().unwrap().remove("secret");
        assert_eq!(client.get("/v1/whoami").json(), token);
    }
    let admin = setup.admin.get("/v1/whoami").json();
    assert_eq!(
        (&admin["role"], &admin["project"], &admin["prefix"]),
        (&json!("admin"), &Value::Null, &Value::Null)
    );
    assert!(admin.get("secret").is_none(), "{admin}");
    expect_unauthorized(&setup.anonymous().get("/v1/whoami"));
}

#[test]
fn the_project_list_shows_the_admin_every_project_and_a_token_only_its_own() {
    let setup = Setup::new("p", json!({}));
    setup.admin.create_project("q", json!({}));
    let ids = |client: &Api| -> Vec<String> {
        let answer = client.get("/v1/projects");
        expect_status(&answer, 200);
        let mut ids: Vec<String> = answer.json()["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&setup.admin), ["default", "p", "q"]);
    assert_eq!(ids(&setup.manage), ["p"]);
    assert_eq!(ids(&setup.client("read")), ["p"]);
}

#[test]
fn another_projects_token_finds_this_project_missing_on_every_route() {
    let setup = Setup::new("p", json!({}));
    put(&setup.manage, &setup.kv("k"), b"v");
    let (reader, reader_token) = setup.token(json!({"role": "read"}));
    let reader_id = reader_token["id"].as_str().unwrap();
    let foreign = setup
        .admin
        .with_token(&setup.admin.create_project("other", json!({})));

    // Each request on `p`, and the same on a project that does not exist,
    // must get the same answer: nothing tells them apart.
    let requests = |project: &str| -> Vec<Answer> {
        let path = |tail: &str| format!("/v1/projects/{project}{tail}");
        vec![
            foreign.get(&path("")),
            foreign.patch_json(&path(""), &json!({"keys_discoverable": false})),
            foreign.get(&path("/tokens")),
            foreign.post_json(&path("/tokens"), &json!({"role": "read"})),
            foreign.delete(&path(&format!("/tokens/{reader_id}"))),
            foreign.get(&kv(project, "k")),
            foreign.put(&kv(project, "k"), b"overwritten"),
            foreign.delete(&kv(project, "k")),
            foreign.get(&path("/kv")),
            foreign.delete(&path("/kv?prefix=")),
        ]
    };
    let existing = requests("p");
    let missing = requests("ghost");
    for (on_existing, on_missing) in existing.iter().zip(&missing) {
        expect_error(on_existing, 404, "project_not_found");
        assert_eq!(on_existing.json(), on_missing.json());
    }
    let head = foreign.send("HEAD", &kv("p", "k"), None, &[]);
    assert_eq!(head.status, 404);

    assert_eq!(setup.manage.get(&setup.kv("k")).body, b"v");
    expect_status(&reader.get(&setup.kv("k")), 200);
    assert_eq!(
        setup.manage.get(&setup.path("")).json()["keys_discoverable"],
        true
    );
}

#[test]
fn refusals_come_in_order_unauthorized_then_admin_only_then_project_then_scope() {
    let setup = Setup::new("p", json!({}));
    setup.admin.create_project("other", json!({}));
    let (revoked, token) = setup.token(json!({"role": "read"}));
    let id = token["id"].as_str().unwrap();
    expect_status(
        &setup.manage.delete(&setup.path(&format!("/tokens/{id}"))),
        204,
    );
    let scoped = setup.token(json!({"role": "read", "prefix": "app/"})).0;

    // 1. A token that is missing, unknown, malformed or revoked gets 401,
    //    whatever else is wrong with the request.
    let anonymous = setup.anonymous();
    let unknown = anonymous.with_token(&crate::common::fake_secret());
    let malformed = anonymous.with_token("not a token");
    for client in [&revoked, &anonymous, &unknown, &malformed] {
        expect_unauthorized(&client.get("/v1/status"));
        expect_unauthorized(&client.delete("/v1/projects/other"));
        expect_unauthorized(&client.put(&kv("other", "x"), b"v"));
        expect_unauthorized(&client.put(&kv("ghost", "x"), b"v"));
        expect_unauthorized(&client.put(&setup.kv("x"), b"v"));
        expect_unauthorized(&client.get(&setup.path("")));
    }

    // 2. A project token on an admin-only route gets 403 before anything
    //    about the project it names.
    for project in ["p", "other", "ghost"] {
        let answer = scoped.delete(&format!("/v1/projects/{project}"));
        expect_error(&answer, 403, "forbidden");
    }

    // 3. A project it has no rights on is 404, the same as a missing one
    //    (even one whose id is not valid), before its role or scope count.
    let on_other = scoped.put(&kv("other", "x/k"), b"v");
    let on_ghost = scoped.put(&kv("ghost", "x/k"), b"v");
    let on_invalid = scoped.put("/v1/projects/not%20an%20id/kv/x", b"v");
    expect_error(&on_other, 404, "project_not_found");
    assert_eq!(on_other.json(), on_ghost.json());
    assert_eq!(on_other.json(), on_invalid.json());

    // 4. In its own project: 403 for the role, or for the scope, even on a
    //    key that does not exist.
    expect_error(&scoped.put(&setup.kv("app/k"), b"v"), 403, "forbidden");
    expect_error(&scoped.put(&setup.kv("x/k"), b"v"), 403, "forbidden");
    expect_error(&scoped.get(&setup.kv("x/k")), 403, "forbidden");
    expect_error(&scoped.get(&setup.kv("app/k")), 404, "key_not_found");
}

#[test]
fn two_different_credentials_in_one_request_are_refused() {
    let setup = Setup::new("p", json!({}));
    let anonymous = setup.anonymous();
    let manage = setup.manage.secret();
    let admin = setup.server.admin_token.clone();
    let answer = anonymous.send(
        "GET",
        &setup.path(""),
        None,
        &[("X-API-Key", &admin), ("Api-Key", &manage)],
    );
    expect_unauthorized(&answer);
    let answer = setup
        .admin
        .send("GET", "/v1/status", None, &[("Api-Key", &manage)]);
    expect_unauthorized(&answer);
    // The same credential twice is one credential.
    let answer = setup
        .admin
        .send("GET", "/v1/status", None, &[("X-API-Key", &admin)]);
    expect_status(&answer, 200);
    // Each of the three headers carries a token on its own.
    for header in ["X-API-Key", "Api-Key"] {
        let raw = raw_exchange(
            &setup.server,
            &format!("GET /v1/projects/p HTTP/1.1\r\n{header}: {manage}"),
            b"",
        );
        assert_eq!(raw.status, 200, "{header}");
    }
}

#[test]
fn only_the_admin_token_may_take_a_backup() {
    let setup = Setup::new("p", json!({}));
    put(&setup.manage, &setup.kv("k"), b"v");

    let answer = setup.admin.get("/v1/backup");
    expect_status(&answer, 200);
    let revision = answer
        .header("kvs-revision")
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let header: Value = serde_json::from_str(answer.text().lines().next().unwrap()).unwrap();
    assert_eq!(header["kvs_backup"], json!(1));
    assert_eq!(header["revision"], json!(revision));
    // The backup holds digests, never a secret.
    assert!(
        !answer
            .text()
            .contains(setup.admin.token.as_deref().unwrap())
    );
    assert!(
        !answer
            .text()
            .contains(setup.manage.token.as_deref().unwrap())
    );

    let scoped = setup.token(json!({"role": "manage", "prefix": "app/"})).0;
    for client in [
        setup.manage.clone(),
        scoped,
        setup.client("write"),
        setup.client("read"),
    ] {
        expect_error(&client.get("/v1/backup"), 403, "forbidden");
    }
    expect_unauthorized(&setup.anonymous().get("/v1/backup"));
    expect_unauthorized(&setup.anonymous().with_token("kvs_nope").get("/v1/backup"));
    expect_error(
        &setup.admin.send("POST", "/v1/backup", None, &[]),
        405,
        "method_not_allowed",
    );
}

#[test]
fn only_the_admin_token_may_compact_the_store() {
    let setup = Setup::new("p", json!({}));
    put(&setup.manage, &setup.kv("k"), b"v");
    expect_unauthorized(&setup.anonymous().send("POST", "/v1/compact", None, &[]));
    expect_unauthorized(&setup.anonymous().with_token("kvs_nope").send(
        "POST",
        "/v1/compact",
        None,
        &[],
    ));
    expect_error(&setup.admin.get("/v1/compact"), 405, "method_not_allowed");
    let answer = setup.admin.send("POST", "/v1/compact", None, &[]);
    expect_status(&answer, 200);
    let report = answer.json();
    for figure in ["before", "after", "tables", "rows"] {
        assert!(report[figure].is_u64(), "{figure}: {report}");
    }
    assert!(report["rows"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(setup.manage.get(&setup.kv("k")).body, b"v");
}
