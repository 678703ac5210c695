//! Upgrades: each data directory in `tests/fixtures/` was written by an
//! earlier release (see `tests/fixtures/make-fixture.sh`: `v1` before
//! versioned records, `v2` before the `public` setting and the history
//! byte count, `v3` before the `sweeps` table of deletes by large prefixes,
//! `v4` before the write-ahead log; `wal1` is a store killed with writes
//! that only its write-ahead log holds, in the log's first format, and
//! key entries before `KeyBody::V2`; `v5` is the last with a change set per
//! entry of the change log; `v6` keeps a batch's sets in one entry, and
//! several of its entries hold several sets; `wal2` is a killed store
//! again, with the log's second format, of two halves), is opened by this
//! build, and everything its `manifest.json` lists is found again:
//! projects, tokens (each old secret still works, with its role and
//! prefix), keys, values, content types, versions and times. A fixture is
//! kept for every change of the storage format.

use crate::common;

use std::path::Path;

use common::{Client, TestServer, kv};
use serde_json::Value;
use sha2::{Digest, Sha256};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const ADMIN: &str = "kvs_fixtureAdminTokenForTheV1StorageFormat00000";

fn manifest(fixture: &Path) -> Value {
    let text = std::fs::read_to_string(fixture.join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A copy of the fixture's data directory (never the fixture itself: the
/// server migrates what it opens).
fn copy_fixture(fixture: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "manifest.json" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The fields of `expected` as `actual` has them.
fn same_fields(expected: &Value, actual: &Value, skip: &[&str], what: &str) {
    for (field, value) in expected.as_object().unwrap() {
        if !skip.contains(&field.as_str()) {
            assert_eq!(&actual[field], value, "{what}: {field}");
        }
    }
}

#[test]
fn the_v1_fixture_opens_with_every_project_token_key_and_value_intact() {
    opens_intact("v1");
}

#[test]
fn the_v2_fixture_opens_with_every_project_token_key_and_value_intact() {
    opens_intact("v2");
}

#[test]
fn the_v3_fixture_opens_with_every_project_token_key_and_value_intact() {
    opens_intact("v3");
}

#[test]
fn the_v4_fixture_opens_with_every_project_token_key_and_value_intact() {
    opens_intact("v4");
}

/// The writes after the last durable commit are only in `kvs.wal`: they
/// are found again only if the log is replayed.
#[test]
fn the_wal1_fixture_opens_with_the_writes_only_its_log_held() {
    opens_intact("wal1");
}

/// The same with the log's second format (two halves).
#[test]
fn the_wal2_fixture_opens_with_the_writes_only_its_log_held() {
    opens_intact("wal2");
}

#[test]
fn the_v5_fixture_opens_with_every_project_token_key_and_value_intact() {
    opens_intact("v5");
}

#[test]
fn the_v6_fixture_opens_with_every_project_token_key_and_value_intact() {
    opens_intact("v6");
}

fn opens_intact(name: &str) {
    let fixture = Path::new(FIXTURES).join(name);
    let manifest = manifest(&fixture);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_fixture(&fixture, &data);
    let server = TestServer::start_on(&data, ADMIN);
    let admin = server.admin();

    // Before anything is written: every change set the old store's logs
    // held reads back (fixtures made before the manifest counted them do
    // not say how many).
    if let Some(sets) = manifest["change_sets"].as_u64() {
        let report = admin.send("POST", "/v1/verify", None, &[]).json();
        assert_eq!(report["change_sets"], sets, "{report}");
        assert_eq!(report["damage"], serde_json::json!([]), "{report}");
    }

    // Projects and their settings; a memory project keeps no key.
    for (id, expected) in manifest["projects"].as_object().unwrap() {
        let answer = admin.get(&format!("/v1/projects/{id}"));
        assert_eq!(answer.status, 200, "{id}: {}", answer.text());
        let project = answer.json();
        if expected["storage"] == "memory" {
            same_fields(expected, &project, &["keys", "bytes", "revision"], id);
            assert_eq!(project["keys"], 0, "{id}");
        } else {
            same_fields(expected, &project, &[], id);
        }
    }

    // Tokens: listed as they were, and each old secret still works.
    let mut listed = admin.get("/v1/tokens").json()["tokens"]
        .as_array()
        .unwrap()
        .clone();
    for id in manifest["projects"].as_object().unwrap().keys() {
        let tokens = admin.get(&format!("/v1/projects/{id}/tokens")).json();
        listed.extend(tokens["tokens"].as_array().unwrap().iter().cloned());
    }
    let tokens = manifest["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), tokens.len(), "{listed:?}");
    for token in tokens {
        let id = token["id"].as_str().unwrap();
        let found = listed
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("token {id} is missing"));
        same_fields(token, found, &["secret", "imported"], id);
        let secret = token["secret"].as_str().unwrap();
        let project = token["project"].as_str();
        // A Simple-PyKV key never presented is still a PBKDF2 digest: it
        // works on Simple-PyKV's routes first (disk-main holds `counter`).
        if let Some("never" | "admin") = token["imported"].as_str() {
            let path = match project {
                Some(project) => format!("/api/v1/projects/{project}/store/counter"),
                None => "/status".to_owned(),
            };
            let answer = Client::new(&server.url, None)
                .request("GET", &path, None, &[("X-API-Key", secret)])
                .unwrap();
            assert_eq!(answer.status, 200, "{id}: {}", answer.text());
        }
        let client = Client::new(&server.url, Some(secret));
        let whoami = client.get("/v1/whoami");
        assert_eq!(whoami.status, 200, "{id}: {}", whoami.text());
        assert_eq!(whoami.json()["id"], id);
        assert_eq!(whoami.json()["role"], token["role"], "{id}");
        assert_eq!(whoami.json()["prefix"], token["prefix"], "{id}");
        // The role and prefix still hold on a disk project's keys.
        if let Some(project) = project.filter(|p| manifest["keys"].get(*p).is_some()) {
            let outside = kv(project, "zz-outside-every-prefix");
            let write = client.put(&outside, b"x");
            match (token["role"].as_str(), token["prefix"].is_null()) {
                (Some("read"), _) => assert_eq!(write.status, 403, "{id}"),
                (_, false) => assert_eq!(write.status, 403, "{id}"),
                _ => {
                    assert!(write.status < 300, "{id}: {}", write.text());
                    assert_eq!(client.delete(&outside).status, 204, "{id}");
                }
            }
        }
    }

    // Keys: metadata as listed and read, values exactly.
    for (project, keys) in manifest["keys"].as_object().unwrap() {
        let page = admin.get(&format!("/v1/projects/{project}/kv?limit=1000"));
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let listed = page["keys"].as_array().unwrap();
        let keys = keys.as_object().unwrap();
        assert_eq!(listed.len(), keys.len(), "{project}: {listed:?}");
        for (key, expected) in keys {
            let meta = listed.iter().find(|m| m["key"] == key.as_str()).unwrap();
            same_fields(expected, meta, &["sha256", "value_base64"], key);
            let answer = admin.get(&kv(project, key));
            assert_eq!(answer.status, 200, "{project}/{key}: {}", answer.text());
            assert_eq!(hex_sha256(&answer.body), expected["sha256"], "{key}");
            assert_eq!(
                answer.header("content-type"),
                expected["content_type"].as_str()
            );
            assert_eq!(
                answer.header("kvs-version"),
                Some(expected["version"].to_string().as_str())
            );
            if let Some(small) = expected["value_base64"].as_str() {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(small)
                    .unwrap();
                assert_eq!(answer.body, bytes, "{key}");
            }
        }
    }

    // The revision goes on past the old one.
    let old = manifest["revision"].as_u64().unwrap();
    let status = admin.get("/v1/status").json();
    assert!(status["revision"].as_u64().unwrap() >= old, "{status}");
    let put = admin.put(&kv("disk-main", "after-upgrade"), b"new");
    assert_eq!(put.status, 201, "{}", put.text());
    assert!(put.json()["version"].as_u64().unwrap() > old);

    // The migrated store verifies clean, online (admin only).
    let report = admin.send("POST", "/v1/verify", None, &[]);
    assert_eq!(report.status, 200, "{}", report.text());
    assert_eq!(report.json()["damage"], serde_json::json!([]));
    assert!(report.json()["keys"].as_u64().unwrap() >= 13);
    let reader = tokens.iter().find(|t| t["role"] == "read").unwrap();
    let refused =
        Client::new(&server.url, reader["secret"].as_str()).send("POST", "/v1/verify", None, &[]);
    assert_eq!(refused.status, 403);

    // Everything is still there after a restart of the upgraded store.
    let server = server.restart();
    let answer = server.admin().get(&kv("disk-main", "text/hello"));
    assert_eq!(answer.body, b"hello, world");
}
