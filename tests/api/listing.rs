//! Paged listings of keys and deletes by prefix, at their boundaries: an
//! empty project, a page that is exactly full, one key more, a cursor after
//! the last key, keys that come and go between pages, the limit clamp, and
//! the 4 MiB rule of pages with values.

use std::thread;

use serde_json::{Value, json};

use crate::support::{Api, Setup, expect_error, expect_status, kvs_revision, list_all, put};

/// One listing page: its keys, its cursor, and the whole body.
fn page(client: &Api, path: &str) -> (Vec<String>, Option<String>, Value) {
    let answer = client.get(path);
    expect_status(&answer, 200);
    let body = answer.json();
    assert_eq!(kvs_revision(&answer), body["revision"].as_u64().unwrap());
    let keys = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["key"].as_str().unwrap().to_owned())
        .collect();
    let cursor = body["cursor"].as_str().map(str::to_owned);
    assert!(
        cursor.is_some() || body["cursor"].is_null(),
        "cursor is neither a string nor null: {body}"
    );
    (keys, cursor, body)
}

/// Stores `count` keys named `{prefix}{n:05}` with `threads` clients at once.
fn put_many(client: &Api, project: &str, prefix: &str, count: usize, threads: usize) {
    thread::scope(|scope| {
        for t in 0..threads {
            let client = client.clone();
            scope.spawn(move || {
                for n in (t..count).step_by(threads) {
                    let path = format!("/v1/projects/{project}/kv/{prefix}{n:05}");
                    expect_status(&client.put(&path, b"v"), 201);
                }
            });
        }
    });
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n:05}")).collect()
}

#[test]
fn an_empty_project_or_a_prefix_that_matches_nothing_lists_no_keys() {
    let setup = Setup::new("p", json!({}));
    let (keys, cursor, body) = page(&setup.manage, &setup.path("/kv"));
    assert!(keys.is_empty() && cursor.is_none(), "{body}");
    put(&setup.manage, &setup.kv("a/1"), b"v");
    for prefix in ["b", "a/2", "a/1/", "A"] {
        let path = setup.path(&format!("/kv?prefix={prefix}"));
        let (keys, cursor, body) = page(&setup.manage, &path);
        assert!(
            keys.is_empty() && cursor.is_none(),
            "prefix {prefix}: {body}"
        );
    }
}

#[test]
fn a_listing_of_exactly_limit_keys_is_one_page_without_a_cursor() {
    let setup = Setup::new("p", json!({}));
    put_many(&setup.manage, "p", "k", 5, 1);
    let (keys, cursor, _) = page(&setup.manage, &setup.path("/kv?limit=5"));
    assert_eq!(keys, names("k", 0..5));
    assert_eq!(cursor, None, "no key remains, so no further page is needed");
}

#[test]
fn one_key_more_than_the_limit_takes_a_second_page() {
    let setup = Setup::new("p", json!({}));
    put_many(&setup.manage, "p", "k", 6, 1);
    let (first, cursor, _) = page(&setup.manage, &setup.path("/kv?limit=5"));
    assert_eq!(first, names("k", 0..5));
    let cursor = cursor.expect("a cursor after a full page with more to come");
    let path = setup.path(&format!("/kv?limit=5&cursor={cursor}"));
    let (second, cursor, _) = page(&setup.manage, &path);
    assert_eq!(second, names("k", 5..6));
    assert_eq!(cursor, None);
}

#[test]
fn a_cursor_after_the_last_key_gives_an_empty_last_page() {
    let setup = Setup::new("p", json!({}));
    put_many(&setup.manage, "p", "k", 3, 1);
    let (_, cursor, _) = page(&setup.manage, &setup.path("/kv?limit=2"));
    let cursor = cursor.unwrap();
    // The only key after the cursor goes; the cursor now points past the end.
    expect_status(&setup.manage.delete(&setup.kv("k00002")), 204);
    let (keys, next, body) = page(
        &setup.manage,
        &setup.path(&format!("/kv?limit=2&cursor={cursor}")),
    );
    assert!(keys.is_empty() && next.is_none(), "{body}");
}

#[test]
fn keys_are_listed_in_byte_order_and_a_prefix_is_a_byte_prefix() {
    let setup = Setup::new("p", json!({}));
    let keys = ["b", "a", "a/b", "a0", "é", "~", "Z", "a b", "A", "/x", "ab"];
    for key in keys {
        put(&setup.manage, &setup.kv(key), b"v");
    }
    let mut expected: Vec<&str> = keys.to_vec();
    expected.sort_by_key(|key| key.as_bytes());
    assert_eq!(list_all(&setup.manage, "p", "limit=2"), expected);
    assert_eq!(
        list_all(&setup.manage, "p", "prefix=a&limit=1"),
        ["a", "a b", "a/b", "a0", "ab"]
    );
}

#[test]
fn a_key_present_throughout_a_paged_listing_appears_exactly_once() {
    let setup = Setup::new("p", json!({}));
    put_many(&setup.manage, "p", "k", 10, 1);
    let (mut seen, cursor, _) = page(&setup.manage, &setup.path("/kv?limit=3"));
    assert_eq!(seen, names("k", 0..3));
    let mut cursor = cursor;

    // Between pages: a listed key and an unlisted one go, and keys come
    // before the cursor, right after it, and at the end.
    for key in ["k00001", "k00004"] {
        expect_status(&setup.manage.delete(&setup.kv(key)), 204);
    }
    for key in ["k00001a", "k00002a", "k00005a", "k99999"] {
        put(&setup.manage, &setup.kv(key), b"v");
    }
    while let Some(next) = cursor {
        let (keys, after, _) = page(
            &setup.manage,
            &setup.path(&format!("/kv?limit=3&cursor={next}")),
        );
        // After a cursor, a key sorts after every key listed before.
        if let (Some(first), Some(last)) = (keys.first(), seen.last()) {
            assert!(first > last, "{keys:?} after {seen:?}");
        }
        seen.extend(keys);
        cursor = after;
    }
    let throughout = [
        "k00000", "k00002", "k00003", "k00005", "k00006", "k00007", "k00008", "k00009",
    ];
    for key in throughout {
        let count = seen.iter().filter(|k| *k == key).count();
        assert_eq!(count, 1, "{key} in {seen:?}");
    }
    assert!(!seen.contains(&"k00004".to_owned()), "{seen:?}");
    // Keys written before the cursor cannot appear; those after it do.
    assert!(!seen.contains(&"k00001a".to_owned()), "{seen:?}");
    for key in ["k00005a", "k99999"] {
        assert!(seen.contains(&key.to_owned()), "{key} in {seen:?}");
    }
}

#[test]
fn the_limit_defaults_to_100_and_is_clamped_to_1000() {
    // A memory project: 1001 writes without 1001 fsyncs.
    let setup = Setup::new("p", json!({"storage": "memory"}));
    put_many(&setup.manage, "p", "k", 1001, 4);

    let (keys, cursor, _) = page(&setup.manage, &setup.path("/kv"));
    assert_eq!(keys, names("k", 0..100));
    assert!(cursor.is_some());
    for limit in ["1000", "1001", "5000"] {
        let (keys, cursor, _) = page(&setup.manage, &setup.path(&format!("/kv?limit={limit}")));
        assert_eq!(keys, names("k", 0..1000), "limit={limit}");
        let cursor = cursor.expect("one key remains");
        let path = setup.path(&format!("/kv?limit={limit}&cursor={cursor}"));
        let (rest, cursor, _) = page(&setup.manage, &path);
        assert_eq!((rest, cursor), (names("k", 1000..1001), None));
    }
    assert_eq!(list_all(&setup.manage, "p", "limit=999").len(), 1001);
    // Any number above 1000 is clamped, even one too large for an integer
    // type of the server.
    let (keys, _, _) = page(
        &setup.manage,
        &setup.path("/kv?limit=100000000000000000000"),
    );
    assert_eq!(keys.len(), 1000);
}

#[test]
fn a_page_with_values_ends_at_the_key_that_brings_it_to_4_mib() {
    const MIB: usize = 1 << 20;
    let setup = Setup::new(
        "p",
        json!({"storage": "memory", "max_value_bytes": 6 * MIB}),
    );
    let sizes = [
        ("a", 3 * MIB),
        ("b", MIB), // a + b = exactly 4 MiB: the page ends here
        ("c", 1),
        ("d", 5 * MIB), // c + d pass 4 MiB: the page ends here
        ("e", 10),
        ("f", 5 * MIB), // one key alone over 4 MiB still makes a page
        ("g", 2),
    ];
    for (key, size) in sizes {
        put(
            &setup.manage,
            &setup.kv(key),
            &vec![key.as_bytes()[0]; size],
        );
    }
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = setup.path("/kv?values=true");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (keys, next, body) = page(&setup.manage, &path);
        for entry in body["keys"].as_array().unwrap() {
            let key = entry["key"].as_str().unwrap();
            let size = sizes.iter().find(|(k, _)| *k == key).unwrap().1;
            assert_eq!(entry["encoding"], "utf8", "{key}");
            assert_eq!(entry["value"].as_str().map(str::len), Some(size), "{key}");
            assert!(
                entry["value"]
                    .as_str()
                    .unwrap()
                    .bytes()
                    .all(|b| b == key.as_bytes()[0])
            );
        }
        pages.push(keys);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [vec!["a", "b"], vec!["c", "d"], vec!["e", "f"], vec!["g"]]
    );

    // Without values the same keys fit one page.
    let (keys, cursor, _) = page(&setup.manage, &setup.path("/kv"));
    assert_eq!((keys.len(), cursor), (sizes.len(), None));
    let (keys, _, _) = page(&setup.manage, &setup.path("/kv?values=true&prefix=f"));
    assert_eq!(keys, ["f"]);
}

#[test]
fn a_listing_with_values_encodes_each_value() {
    let setup = Setup::new("p", json!({}));
    for (key, value, content_type) in [
        ("a-json", &b"{\"n\":1}"[..], "application/json"),
        ("b-text", b"plain", "text/plain"),
        ("c-binary", &[0xff, 0xfe], "application/octet-stream"),
    ] {
        let headers = [("Content-Type", content_type)];
        setup
            .manage
            .send("PUT", &setup.kv(key), Some(value), &headers);
    }
    let (_, _, body) = page(&setup.manage, &setup.path("/kv?values=true"));
    let entries: Vec<(&Value, &Value)> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (&entry["value"], &entry["encoding"]))
        .collect();
    assert_eq!(
        entries,
        [
            (&json!({"n": 1}), &json!("json")),
            (&json!("plain"), &json!("utf8")),
            (&json!("//4="), &json!("base64")),
        ]
    );
    // Without values=true a listing holds KeyMeta only.
    let (_, _, body) = page(&setup.manage, &setup.path("/kv"));
    assert!(body["keys"][0].get("value").is_none(), "{body}");
    assert_eq!(body["keys"][0]["size"], 7);
}

#[test]
fn a_delete_by_prefix_removes_exactly_the_matching_keys_at_one_revision() {
    let setup = Setup::new("p", json!({}));
    for key in ["app/1", "app/2", "apple", "ap", "other"] {
        put(&setup.manage, &setup.kv(key), b"v");
    }
    let answer = setup.manage.delete(&setup.path("/kv?prefix=app"));
    expect_status(&answer, 200);
    let body = answer.json();
    assert_eq!(body["deleted"], 3);
    let revision = body["revision"].as_u64().unwrap();
    assert_eq!(list_all(&setup.manage, "p", ""), ["ap", "other"]);
    for key in ["app/1", "apple"] {
        expect_error(&setup.manage.get(&setup.kv(key)), 404, "key_not_found");
    }
    let project = setup.manage.get(&setup.path("")).json();
    assert_eq!(
        (&project["revision"], &project["keys"]),
        (&json!(revision), &json!(2))
    );

    // A delete that matches nothing takes no revision.
    let answer = setup.manage.delete(&setup.path("/kv?prefix=nothing"));
    expect_status(&answer, 200);
    assert_eq!(answer.json()["deleted"], 0);
    let next = put(&setup.manage, &setup.kv("new"), b"v");
    assert_eq!(next, revision + 1);
}
