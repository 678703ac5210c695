//! `kvs restore --etcd-endpoints`: a single server's backup written into a
//! one-member etcd under a prefix, then served by a real node started on
//! it: every key byte for byte with its content type and times, every token
//! with its role (an imported one too), a TTL that expires on time; a
//! prefix that holds anything refused unless `--force`, a truncated backup
//! and a value over the cluster's limit refused with nothing written, and
//! the node's own backup restored again under another prefix.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::common::{Client, Run, ServerProcess, TestServer, kv, run};
use super::{etcd, millis, one_at_a_time, time_until};

/// `kvs restore FILE --etcd-endpoints ENDPOINT --etcd-prefix PREFIX` and
/// `extra` flags.
fn restore(file: &Path, endpoint: &str, prefix: &str, extra: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command
        .arg("restore")
        .arg(file)
        .args(["--etcd-endpoints", endpoint, "--etcd-prefix", prefix])
        .args(extra);
    let started = Instant::now();
    let done = run(command, b"");
    println!(
        "kvs restore {} {extra:?}: exit {} in {}",
        prefix,
        done.code,
        millis(started.elapsed())
    );
    done
}

/// How many etcd keys `prefix` holds.
fn count(endpoint: &str, prefix: &str) -> usize {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "get",
            "--prefix",
            prefix,
            "--keys-only",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "etcdctl get failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .count()
}

/// A node on `endpoint` under `prefix`, with its data directory in `dir`.
fn node(dir: &Path, name: &str, admin: &str, endpoint: &str, prefix: &str) -> ServerProcess {
    let args = [
        "--etcd-endpoints".to_owned(),
        endpoint.to_owned(),
        "--etcd-prefix".to_owned(),
        prefix.to_owned(),
    ];
    ServerProcess::start_with(&dir.join(name), admin, false, &args)
}

/// Every key of `project` with its value, as the listing shows them, without
/// the versions (a restore into etcd gives new ones).
fn keys(client: &Client, project: &str) -> Vec<Value> {
    let answer = client.get(&format!("/v1/projects/{project}/kv?values=true&limit=1000"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let mut keys = answer.json()["keys"].as_array().unwrap().clone();
    for key in &mut keys {
        key.as_object_mut().unwrap().remove("version");
    }
    keys
}

/// Projects as listed, without their revisions.
fn projects(client: &Client) -> Vec<Value> {
    let mut projects = client.get("/v1/projects").json()["projects"]
        .as_array()
        .unwrap()
        .clone();
    for project in &mut projects {
        project.as_object_mut().unwrap().remove("revision");
    }
    projects
}

/// A Simple-PyKV API key and its PBKDF2 digest, as an imported token keeps it.
fn pykv_key() -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    let key = URL_SAFE_NO_PAD.encode(bytes);
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).unwrap();
    let mut hash = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(key.as_bytes(), &salt, 200_000, &mut hash);
    let digest = format!(
        "pbkdf2_sha256$200000${}${}",
        URL_SAFE_NO_PAD.encode(salt),
        URL_SAFE_NO_PAD.encode(hash)
    );
    (key, digest)
}

/// The backup with `token` added before its keys, and its trailer made
/// again (counts and checksum).
fn with_token(backup: &[u8], token: Value) -> Vec<u8> {
    let text = std::str::from_utf8(backup).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let trailer: Value = serde_json::from_str(&lines.pop().unwrap()).unwrap();
    let at = lines
        .iter()
        .position(|line| line.starts_with("{\"key\""))
        .unwrap_or(lines.len());
    lines.insert(at, json!({ "token": token }).to_string());
    let mut out = Vec::new();
    for line in &lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    let end = &trailer["end"];
    let trailer = json!({"end": {
        "projects": end["projects"],
        "tokens": end["tokens"].as_u64().unwrap() + 1,
        "keys": end["keys"],
        "sha256": hex::encode(Sha256::digest(&out)),
    }});
    out.extend_from_slice(trailer.to_string().as_bytes());
    out.push(b'\n');
    out
}

#[test]
fn a_backup_restored_into_etcd_is_served_by_a_node_started_on_it() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();

    // A single server with two projects (one memory), settings, tokens of
    // every role, text, binary, large and expiring keys.
    let source = TestServer::start();
    let admin = source.admin();
    let manage = admin.create_project("shop", json!({"max_keys": 50, "public": "read"}));
    admin.create_project(
        "cache",
        json!({"storage": "memory", "keys_discoverable": false}),
    );
    let reader = admin.mint("shop", json!({"role": "read", "name": "reader"}));
    let writer = admin.mint("shop", json!({"role": "write", "prefix": "orders/"}));
    let cache_writer = admin.mint("cache", json!({"role": "write"}));
    let other_admin = admin
        .post_json("/v1/tokens", &json!({"name": "second"}))
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |client: &Client, project: &str, key: &str, body: &[u8], content_type: &str| {
        let answer = client.send(
            "PUT",
            &kv(project, key),
            Some(body),
            &[("content-type", content_type)],
        );
        assert!(
            answer.status == 201 || answer.status == 200,
            "{}",
            answer.text()
        );
    };
    put(
        &admin,
        "shop",
        "greeting",
        "héllo wörld".as_bytes(),
        "text/plain; charset=utf-8",
    );
    put(
        &admin,
        "shop",
        "orders/1",
        br#"{"n":1}"#,
        "application/json",
    );
    let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    put(&admin, "shop", "bin", &binary, "application/octet-stream");
    let large: Vec<u8> = (0..200 << 10).map(|i| (i * 7 % 251) as u8).collect();
    put(&admin, "shop", "large", &large, "image/x-test");
    put(&admin, "cache", "session", b"abc", "text/plain");
    let ttl = source.admin().send(
        "PUT",
        &format!("{}?ttl=8s", kv("shop", "expiring")),
        Some(b"soon"),
        &[("content-type", "text/plain")],
    );
    assert_eq!(ttl.status, 201, "{}", ttl.text());
    let expires_at = ttl.json()["expires_at"].as_str().unwrap().to_owned();
    let expires = kvs::domain::Timestamp::parse_rfc3339(&expires_at).unwrap();
    let source_keys = (keys(&admin, "shop"), keys(&admin, "cache"));
    let source_projects = projects(&admin);
    let backup = admin.get("/v1/backup");
    assert_eq!(backup.status, 200);
    // An imported Simple-PyKV key of `shop`, not yet presented.
    let (pykv, digest) = pykv_key();
    let backup = with_token(
        &backup.body,
        json!({
            "id": "tok_imported0001", "sha256": hex::encode([7u8; 32]), "role": "read",
            "project": "shop", "prefix": null, "name": "pykv", "created_at": "2026-01-01T00:00:00Z",
            "expires_at": null, "source": "simple-pykv", "imported_digest": digest,
        }),
    );
    let file = dir.path().join("backup.jsonl");
    std::fs::write(&file, &backup).unwrap();

    let etcd = etcd::start(dir.path());
    let endpoint = etcd.endpoint.clone();
    let restored = restore(&file, &endpoint, "r1/", &[]);
    let out = restored.ok();
    assert!(out.starts_with("restored revision "), "{out}");
    assert!(
        out.contains("(3 projects, 8 tokens, 6 keys) into etcd"),
        "{out}"
    );
    assert!(out.contains("versions are new"), "{out}");
    // The TTL key is there with its expiry index entry.
    let stored = "r1/k/shop/expiring";
    assert_eq!(count(&endpoint, stored), 1, "not expired yet when restored");
    assert_eq!(count(&endpoint, "r1/x/"), 1, "its expiry index entry");

    // A node on it serves the same projects, keys, values, types and times.
    let cluster = node(dir.path(), "n1", &source.admin_token, &endpoint, "r1/");
    let started = Instant::now();
    let admin1 = cluster.admin();
    assert_eq!(projects(&admin1), source_projects);
    assert_eq!((keys(&admin1, "shop"), keys(&admin1, "cache")), source_keys);
    for (project, key, body) in [("shop", "large", &large), ("shop", "bin", &binary)] {
        let answer = admin1.get(&kv(project, key));
        assert_eq!(&answer.body, body, "{key} reads back byte for byte");
    }
    let greeting = admin1.get(&kv("shop", "greeting"));
    let before = admin.get(&kv("shop", "greeting"));
    for header in ["content-type", "kvs-created-at", "last-modified"] {
        assert_eq!(greeting.header(header), before.header(header), "{header}");
    }
    assert_ne!(greeting.header("etag"), None);

    // Every token, with its role and scope.
    let as_token = |secret: &str| Client::new(&cluster.url, Some(secret));
    assert_eq!(as_token(&other_admin).get("/v1/projects").status, 200);
    assert_eq!(as_token(&reader).get(&kv("shop", "greeting")).status, 200);
    let refused = as_token(&reader).send("PUT", &kv("shop", "x"), Some(b"1"), &[]);
    assert_eq!(refused.status, 403, "a read token cannot write");
    assert_eq!(
        as_token(&writer)
            .send("PUT", &kv("shop", "orders/2"), Some(b"2"), &[])
            .status,
        201
    );
    assert_eq!(
        as_token(&writer)
            .send("PUT", &kv("shop", "other"), Some(b"2"), &[])
            .status,
        403,
        "outside the write token's prefix"
    );
    let minted = as_token(&manage).post_json("/v1/projects/shop/tokens", &json!({"role": "read"}));
    assert_eq!(minted.status, 201, "the manage token mints");
    assert_eq!(
        as_token(&cache_writer).get(&kv("cache", "session")).body,
        b"abc"
    );
    assert_eq!(
        Client::new(&cluster.url, None)
            .get(&kv("shop", "greeting"))
            .status,
        200,
        "shop is public for reads"
    );
    let imported = as_token(&pykv).get(&kv("shop", "greeting"));
    assert_eq!(
        imported.status,
        200,
        "the imported key: {}",
        imported.text()
    );
    // The quota is kept: 50 keys at most (6 there now).
    let filled = (0..60).position(|i| {
        let answer = admin1.send("PUT", &kv("shop", &format!("fill/{i}")), Some(b"x"), &[]);
        answer.status == 403 && answer.code() == "quota_exceeded"
    });
    assert!(
        filled.is_some_and(|n| n <= 45),
        "max_keys is kept: {filled:?}"
    );
    println!(
        "checks on the restored node took {}",
        millis(started.elapsed())
    );

    // The TTL key expires on time: the sweep removes it from etcd.
    let gone = time_until(Duration::from_secs(20), || count(&endpoint, stored) == 0);
    assert!(gone.is_some(), "the expiring key was never swept");
    let late = kvs::domain::Timestamp::now().millis() - expires.millis();
    println!("the expiring key was swept {late} ms after its expiry");
    assert_eq!(admin1.get(&kv("shop", "expiring")).status, 404);

    // A prefix that holds anything is refused; --force replaces it.
    let refused = restore(&file, &endpoint, "r1/", &[]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("stop every kvs node"),
        "{}",
        refused.stderr
    );
    drop(cluster);
    restore(&file, &endpoint, "r1/", &["--force"]).ok();
    let cluster = node(dir.path(), "n1", &source.admin_token, &endpoint, "r1/");
    let admin1 = cluster.admin();
    let shop = keys(&admin1, "shop");
    assert!(
        shop.iter()
            .all(|k| k["key"] != "orders/2" && k["key"] != "fill/0")
    );
    assert_eq!(shop.len(), 4, "the backup's keys but the expired one");

    // A truncated backup, and one with a value over the cluster's limit,
    // write nothing.
    let truncated = dir.path().join("truncated.jsonl");
    std::fs::write(&truncated, &backup[..backup.len() - 20]).unwrap();
    let failed = restore(&truncated, &endpoint, "r2/", &[]);
    assert_eq!(failed.code, 1);
    assert!(failed.stderr.contains("truncated"), "{}", failed.stderr);
    assert_eq!(count(&endpoint, "r2/"), 0);
    let failed = restore(
        &file,
        &endpoint,
        "r2/",
        &["--etcd-max-request-bytes", "150000"],
    );
    assert_eq!(failed.code, 1);
    assert!(
        failed.stderr.contains("\"large\""),
        "names the key: {}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("150000"),
        "names the limit: {}",
        failed.stderr
    );
    assert_eq!(count(&endpoint, "r2/"), 0);

    // The node's own backup (a cluster's) restores under another prefix.
    let again = dir.path().join("again.jsonl");
    let backup = admin1.get("/v1/backup");
    assert_eq!(backup.status, 200);
    std::fs::write(&again, &backup.body).unwrap();
    restore(&again, &endpoint, "r3/", &[]).ok();
    let copy = node(dir.path(), "n3", &source.admin_token, &endpoint, "r3/");
    let admin3 = copy.admin();
    assert_eq!(projects(&admin3), projects(&admin1));
    assert_eq!(keys(&admin3, "shop"), keys(&admin1, "shop"));
    assert_eq!(keys(&admin3, "cache"), keys(&admin1, "cache"));
}
