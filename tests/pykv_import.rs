//! Migrating from Simple-PyKV: a data set written in Simple-PyKV's on-disk
//! format (config.json with PBKDF2 digests of the API keys, one store file
//! per on-disk project) is imported with `kvs import simple-pykv` into the
//! real binary, and then read through Simple-PyKV's routes with the original
//! keys, as its clients would.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Client, ServerProcess, fake_secret};
use serde_json::{Value, json};

/// Simple-PyKV's `hash_api_key`: PBKDF2-HMAC-SHA256, 200,000 rounds, a
/// random salt, salt and hash base64url without padding.
fn hash_api_key(key: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).unwrap();
    let mut hash = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(key.as_bytes(), &salt, 200_000, &mut hash);
    format!(
        "pbkdf2_sha256$200000${}${}",
        URL_SAFE_NO_PAD.encode(salt),
        URL_SAFE_NO_PAD.encode(hash)
    )
}

/// An API key as Simple-PyKV makes them (`secrets.token_urlsafe(32)`).
fn api_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a value, and so its size: strings as they are, other
/// JSON compact.
fn stored(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn authentication(hash: &str) -> Value {
    json!({"enabled": true, "save_api_key_to_config": false, "api_key": null, "api_key_hash": hash})
}

/// The values of the on-disk project, with their times (epoch seconds, one
/// of them a float).
fn values() -> Vec<(&'static str, Value, Value, Value)> {
    vec![
        (
            "user:1",
            json!({"name": "Ada", "roles": ["admin", "dev"], "age": 36}),
            json!(1_600_000_000),
            json!(1_600_000_100),
        ),
        (
            "count",
            json!(42),
            json!(1_600_000_001),
            json!(1_600_000_001),
        ),
        (
            "ratio",
            json!(0.25),
            json!(1_600_000_002),
            json!(1_600_000_200),
        ),
        (
            "list",
            json!([1, "two", null, {"three": 3}]),
            json!(1_600_000_003),
            json!(1_600_000_003),
        ),
        (
            "flag",
            json!(false),
            json!(1_600_000_004),
            json!(1_600_000_004),
        ),
        (
            "greeting",
            json!("hello, world"),
            json!(1_600_000_005.75),
            json!(1_600_000_123.456),
        ),
        (
            "json-looking text",
            json!("[1, 2]"),
            json!(1_600_000_006),
            json!(1_600_000_006),
        ),
        (
            "nothing",
            json!(null),
            json!(1_600_000_008),
            json!(1_600_000_008),
        ),
    ]
}

/// A value with numbers that no f64 or 64-bit integer holds, as Simple-PyKV
/// (Python's `json`) keeps and serves them, with the text the import must
/// store for it.
const BIG: (&str, &str, &str) = (
    "big",
    "{\"n\": 123456789012345678901234567890, \"u\": [18446744073709551616, 1.50]}",
    "{\"n\":123456789012345678901234567890,\"u\":[18446744073709551616,1.50]}",
);

struct DataSet {
    config: std::path::PathBuf,
    project_key: String,
    memory_key: String,
    system_key: String,
}

/// Writes a Simple-PyKV data set in `dir`, exactly as Simple-PyKV keeps it.
fn write_data_set(dir: &Path) -> DataSet {
    let (project_key, memory_key, system_key) = (api_key(), api_key(), api_key());
    let config = json!({
        "version": 1,
        "server_port": 23849,
        "system": {
            "storage": {"persistent_file_path": "storage_data"},
            "authentication": authentication(&hash_api_key(&system_key)),
            "security": {"project_discoverable": true},
        },
        "projects": [
            {
                "id": "first_project",
                "storage": {"on_disk": true, "cache_in_memory": true},
                "authentication": authentication(&hash_api_key(&project_key)),
                "security": {"keys_and_values_discoverable": true, "project_discoverable": true},
            },
            {
                "id": "scratch",
                "storage": {"on_disk": false, "cache_in_memory": true},
                "authentication": authentication(&hash_api_key(&memory_key)),
                "security": {"project_discoverable": true},
            },
        ],
    });
    let mut store = serde_json::Map::new();
    for (key, value, created, updated) in values() {
        store.insert(
            key.to_owned(),
            json!({
                "created_at": created,
                "updated_at": updated,
                "size_bytes": stored(&value).len(),
                "value": value,
            }),
        );
    }
    store.insert(
        BIG.0.to_owned(),
        json!({"created_at": 1_600_000_007, "updated_at": 1_600_000_007, "size_bytes": 0, "value": "@@BIG@@"}),
    );
    std::fs::create_dir_all(dir.join("storage_data")).unwrap();
    let text = serde_json::to_string_pretty(&Value::Object(store)).unwrap();
    std::fs::write(
        dir.join("storage_data/first_project_store.json"),
        text.replace("\"@@BIG@@\"", BIG.1),
    )
    .unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    DataSet {
        config: path,
        project_key,
        memory_key,
        system_key,
    }
}

/// Runs `kvs import simple-pykv` against the server; answers exit code,
/// stdout and stderr.
fn import(server: &ServerProcess, config: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(["import", "simple-pykv", "--config"])
        .arg(config)
        .args(["--url", &server.url])
        .env("KVS_TOKEN", &server.admin_token)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A client that sends its key as Simple-PyKV's clients do.
fn pykv_get(server: &ServerProcess, key: &str, path: &str) -> common::Answer {
    Client::new(&server.url, None)
        .request("GET", path, None, &[("X-API-Key", key)])
        .unwrap()
}

#[test]
fn a_simple_pykv_data_set_keeps_its_values_times_and_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data_set(&dir.path().join("pykv"));
    let mut server = ServerProcess::start(&dir.path().join("kvs"), &fake_secret());

    let (code, stdout, stderr) = import(&server, &data.config);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("imported 2 projects, 9 keys, 3 tokens"),
        "{stdout}"
    );
    // Importing again would merge: it is refused, and nothing changes.
    let (code, _, stderr) = import(&server, &data.config);
    assert_eq!(code, 1);
    assert!(stderr.contains("already exists"), "{stderr}");

    // The imported project's only token is the imported key, not yet used.
    let admin = server.admin();
    let tokens = admin.get("/v1/projects/first_project/tokens").json()["tokens"].clone();
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
    assert_eq!(tokens[0]["source"], "import");
    assert_eq!(tokens[0]["role"], "manage");
    let token_id = tokens[0]["id"].as_str().unwrap().to_owned();
    let project = admin.get("/v1/projects/first_project").json();
    assert_eq!(project["storage"], "disk");
    assert_eq!(project["keys_discoverable"], true);
    let scratch = admin.get("/v1/projects/scratch").json();
    assert_eq!(scratch["storage"], "memory");
    assert_eq!(scratch["keys_discoverable"], false);

    // Until the key is first presented on its project's routes, it is known
    // by no other route.
    let whoami = Client::new(&server.url, Some(&data.project_key)).get("/v1/whoami");
    assert_eq!(whoami.status, 401);

    // A wrong key is refused, in Simple-PyKV's envelope, and shows nothing.
    let wrong = pykv_get(
        &server,
        &api_key(),
        "/api/v1/projects/first_project/store/count",
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["data"], Value::Null);
    assert_eq!(wrong.json()["status_code"], 401);

    // Every value answers as Simple-PyKV answered it, with its times.
    for (key, value, created, updated) in values() {
        let path = format!(
            "/api/v1/projects/first_project/store/{}",
            key.replace(' ', "%20").replace(':', "%3A")
        );
        let answer = pykv_get(&server, &data.project_key, &path);
        assert_eq!(answer.status, 200, "{key}: {}", answer.text());
        let entry = &answer.json()["data"];
        assert_eq!(entry["value"], value, "{key}");
        assert_eq!(entry["size_bytes"], stored(&value).len(), "{key}");
        let seconds = |v: &Value| v.as_f64().unwrap().floor() as i64;
        assert_eq!(entry["created_at"], seconds(&created), "{key}");
        assert_eq!(entry["updated_at"], seconds(&updated), "{key}");
    }
    let listing = pykv_get(
        &server,
        &data.project_key,
        "/api/v1/projects/first_project/store",
    );
    assert_eq!(listing.status, 200, "{}", listing.text());
    let listed = listing.json()["data"].clone();
    assert_eq!(listed.as_object().unwrap().len(), values().len() + 1);
    // Every digit of the large numbers is kept.
    let big = admin.get(&format!("/v1/projects/first_project/kv/{}", BIG.0));
    assert_eq!(big.status, 200);
    assert_eq!(String::from_utf8_lossy(&big.body), BIG.2);
    assert_eq!(big.header("content-type"), Some("application/json"));
    for (key, value, _, _) in values() {
        assert_eq!(listed[key]["value"], value, "{key}");
    }
    // The key works for this project only.
    let elsewhere = pykv_get(
        &server,
        &data.project_key,
        "/api/v1/projects/scratch/store/x",
    );
    assert_eq!(elsewhere.status, 401);

    // Its first use gave the token the key's ordinary digest: it is the same
    // token, it now works on every route (no PBKDF2 there), and it keeps
    // working after a restart.
    let whoami = Client::new(&server.url, Some(&data.project_key)).get("/v1/whoami");
    assert_eq!(whoami.status, 200, "{}", whoami.text());
    assert_eq!(whoami.json()["id"], token_id.as_str());
    server.restart();
    let after = pykv_get(
        &server,
        &data.project_key,
        "/api/v1/projects/first_project/store/count",
    );
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["data"]["value"], 42);
    let tokens = server
        .admin()
        .get("/v1/projects/first_project/tokens")
        .json()["tokens"]
        .clone();
    assert_eq!(tokens[0]["id"], token_id.as_str());

    // The system key is an admin token: Simple-PyKV's project listing.
    let projects = pykv_get(&server, &data.system_key, "/api/v1/projects");
    assert_eq!(projects.status, 200, "{}", projects.text());

    // A flood of wrong keys on a project with an unused imported key is
    // rationed: 429 with Retry-After, on both surfaces' routes.
    let url = server.url.clone();
    let floods: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = Client::new(&url, None);
                let path = if i % 2 == 0 {
                    "/api/v1/projects/scratch/store/x"
                } else {
                    "/v1/projects/scratch/kv/x"
                };
                client
                    .request("GET", path, None, &[("X-API-Key", &api_key())])
                    .unwrap()
            })
        })
        .collect();
    let answers: Vec<_> = floods.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(answers.iter().all(|a| a.status == 401 || a.status == 429));
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(!limited.is_empty(), "no request was rationed");
    for answer in &limited {
        assert_eq!(answer.header("retry-after"), Some("1"));
        let body = answer.json();
        let code = body["error"]["code"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body["status_code"].to_string());
        assert!(code == "too_many_requests" || code == "429", "{body}");
    }
    // The right key still gets in once the second has passed.
    std::thread::sleep(Duration::from_millis(1100));
    let right = pykv_get(
        &server,
        &data.memory_key,
        "/api/v1/projects/scratch/store/x",
    );
    assert_eq!(right.status, 404, "{}", right.text());
}

#[test]
fn a_project_with_authentication_disabled_is_imported_public_and_a_disabled_system_key_is_only_reported()
 {
    let dir = tempfile::tempdir().unwrap();
    let pykv = dir.path().join("pykv");
    std::fs::create_dir_all(pykv.join("storage_data")).unwrap();
    let config = json!({
        "system": {
            "storage": {"persistent_file_path": "storage_data"},
            "authentication": {"enabled": false, "save_api_key_to_config": false},
        },
        "projects": [
            {
                "id": "open_project",
                "storage": {"on_disk": true},
                "authentication": {"enabled": false, "save_api_key_to_config": false},
                "security": {"keys_and_values_discoverable": true},
            },
        ],
    });
    let store = json!({"greeting": {"created_at": 1_600_000_000, "updated_at": 1_600_000_000,
        "size_bytes": 5, "value": "hello"}});
    std::fs::write(
        pykv.join("storage_data/open_project_store.json"),
        serde_json::to_vec(&store).unwrap(),
    )
    .unwrap();
    let path = pykv.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let server = ServerProcess::start(&dir.path().join("kvs"), &fake_secret());

    let (code, stdout, stderr) = import(&server, &path);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("public \"write\""), "{stdout}");
    assert!(stdout.contains("--simple-pykv-open-admin"), "{stdout}");
    let project = server.admin().get("/v1/projects/open_project").json();
    assert_eq!(project["public"], "write", "{project}");

    // Its clients go on without a key, on both surfaces.
    let anonymous = Client::new(&server.url, None);
    let read = anonymous.get("/api/v1/projects/open_project/store/greeting");
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["data"]["value"], "hello");
    let write = anonymous.put("/v1/projects/open_project/kv/new", b"x");
    assert_eq!(write.status, 201, "{}", write.text());
    // The server's own routes still need the admin's token: the import
    // only says how to open them.
    assert_eq!(anonymous.get("/status").status, 401);
}

/// Importing the same data set again, once its projects are deleted, makes
/// no second admin token for the system key: a second one would keep the
/// key working after the first was revoked.
#[test]
fn a_second_import_keeps_one_admin_token_for_the_system_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_data_set(&dir.path().join("pykv"));
    let server = ServerProcess::start(&dir.path().join("kvs"), &fake_secret());
    let (code, stdout, stderr) = import(&server, &data.config);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    // The key is used once: its token now holds the key's ordinary digest.
    let listing = pykv_get(&server, &data.system_key, "/api/v1/projects");
    assert_eq!(listing.status, 200, "{}", listing.text());

    let admin = server.admin();
    for project in ["first_project", "scratch"] {
        assert_eq!(admin.delete(&format!("/v1/projects/{project}")).status, 204);
    }
    let (code, stdout, stderr) = import(&server, &data.config);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("not imported again"), "{stdout}");
    assert!(
        stdout.contains("imported 2 projects, 9 keys, 2 tokens"),
        "{stdout}"
    );
    let imported_admins = || -> Vec<String> {
        admin.get("/v1/tokens").json()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|token| token["source"] == "import")
            .map(|token| token["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = imported_admins();
    assert_eq!(first.len(), 1, "{first:?}");

    // Another Simple-PyKV's system key is another key: it is kept.
    for project in ["first_project", "scratch"] {
        assert_eq!(admin.delete(&format!("/v1/projects/{project}")).status, 204);
    }
    let other = write_data_set(&dir.path().join("other"));
    let (code, stdout, stderr) = import(&server, &other.config);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("system API key kept as admin token"),
        "{stdout}"
    );
    assert_eq!(imported_admins().len(), 2);

    // The first revoked, its key opens nothing; the other key still works.
    assert_eq!(
        admin.delete(&format!("/v1/tokens/{}", first[0])).status,
        204
    );
    let refused = pykv_get(&server, &data.system_key, "/api/v1/projects");
    assert_eq!(refused.status, 401, "{}", refused.text());
    let listing = pykv_get(&server, &other.system_key, "/api/v1/projects");
    assert_eq!(listing.status, 200, "{}", listing.text());
}
