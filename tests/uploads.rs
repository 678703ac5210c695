//! Uploads over a project's limit, from real clients: 5 MB over the
//! default 1 MiB value limit, 20 times each with the `kvs` CLI, curl,
//! Python `requests` and Node's `fetch`. Each must see the server's 413
//! every time: the server answers as soon as it knows, then keeps reading
//! (and discarding) the body before it closes, so no client has its
//! connection reset while it is still sending. A client that is not
//! installed is SKIPPED (CI installs them); `KVS_TEST_PYTHON` names a
//! Python that has `requests`, if `python3` has not.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{ServerProcess, fake_secret, kv};
use serde_json::{Value, json};

/// Tries per client.
const TIMES: usize = 20;
/// The body: 5 MB, over the project's 1 MiB.
const BODY_BYTES: usize = 5_000_000;

struct Upload {
    server: ServerProcess,
    url: String,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Upload {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    server.admin().create_project("big", json!({}));
    let file = dir.path().join("5mb.txt");
    let line = "0123456789abcdef".repeat(6) + "\n";
    let body: String = line.repeat(BODY_BYTES / line.len() + 1);
    std::fs::write(&file, &body.as_bytes()[..BODY_BYTES]).unwrap();
    let url = format!("{}{}", server.url, kv("big", "k"));
    Upload {
        server,
        url,
        file,
        _dir: dir,
    }
}

/// Whether `program --version` runs.
fn installed(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A client script's JSON list of outcomes: each must be 413.
fn all_413(client: &str, output: std::process::Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{client}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcomes: Vec<Value> = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(outcomes.len(), TIMES, "{client}: {outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o == &json!(413)),
        "{client} did not see 413 each time: {outcomes:?}"
    );
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/uploads")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn the_kvs_cli_reports_the_413_of_an_upload_over_the_limit_every_time() {
    let upload = setup();
    for n in 0..TIMES {
        let output = Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(["put", "k"])
            .arg(format!("@{}", upload.file.display()))
            .env("KVS_URL", &upload.server.url)
            .env("KVS_TOKEN", &upload.server.admin_token)
            .env("KVS_PROJECT", "big")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "try {n}: {stderr}");
        assert!(
            stderr.contains("payload_too_large")
                && stderr.contains("1048576 bytes (1 MiB)")
                && stderr.contains("max_value_bytes"),
            "try {n}: the message names the limit and how to raise it: {stderr}"
        );
    }
}

#[test]
fn curl_sees_the_413_of_an_upload_over_the_limit_every_time() {
    if !installed("curl", &["--version"]) {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let upload = setup();
    let auth = format!("Authorization: Bearer {}", upload.server.admin_token);
    // With and without `Expect: 100-continue` (curl sends it for large
    // bodies; the server refuses before the body is sent).
    for expect in ["Expect:", "Expect: 100-continue"] {
        for n in 0..TIMES {
            let output = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                .args(["-H", &auth, "-H", "Content-Type: text/plain", "-H", expect])
                .arg("--data-binary")
                .arg(format!("@{}", upload.file.display()))
                .arg(&upload.url)
                .output()
                .unwrap();
            let status = String::from_utf8_lossy(&output.stdout);
            assert_eq!(
                status,
                "413",
                "{expect} try {n}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[test]
fn python_requests_sees_the_413_of_an_upload_over_the_limit_every_time() {
    let python = std::env::var("KVS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    if !installed(&python, &["-c", "import requests"]) {
        eprintln!("SKIPPED: {python} has no requests module");
        return;
    }
    let upload = setup();
    let output = Command::new(&python)
        .arg(script("put.py"))
        .args([&upload.url, &upload.server.admin_token])
        .arg(&upload.file)
        .arg(TIMES.to_string())
        .output()
        .unwrap();
    all_413("requests", output);
}

#[test]
fn node_fetch_sees_the_413_of_an_upload_over_the_limit_every_time() {
    if !installed("node", &["--version"]) {
        eprintln!("SKIPPED: node is not installed");
        return;
    }
    let upload = setup();
    let output = Command::new("node")
        .arg(script("put.mjs"))
        .args([&upload.url, &upload.server.admin_token])
        .arg(&upload.file)
        .arg(TIMES.to_string())
        .output()
        .unwrap();
    all_413("fetch", output);
}

#[test]
fn after_a_refused_upload_the_connection_does_not_read_forever() {
    // A body far beyond what the server drains: the server closes the
    // connection after its bound, so the client's send fails instead of
    // going on. Raw socket, to see the 413 arrive before the send fails.
    use std::io::{Read, Write};
    let upload = setup();
    let address = upload.server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: kvs\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 1000000000\r\n\r\n",
        kv("big", "k"),
        upload.server.admin_token
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 1 << 16];
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while stream.write_all(&chunk).is_ok() {
        sent += chunk.len() as u64;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the server still reads after {sent} bytes"
        );
    }
    assert!(sent < 200 << 20, "the server read {sent} bytes");
    // The 413 came long before; a reset may take it from the socket's
    // buffer, so it is checked only when it is still there.
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 413"),
        "{answer}"
    );
}
