//! Memory bounded per request, measured from outside: the real `kvs` binary,
//! its peak resident memory read from `/proc/<pid>/status` (`VmHWM`) before
//! and after a request built to make a careless parser take many times its
//! size. The figures are printed (`--nocapture`); the assertions allow a
//! small multiple of the body, far below what a tree of the body takes.

mod common;

use common::{ServerProcess, fake_secret};
use serde_json::json;

/// The process's peak resident memory, in bytes.
fn peak_resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("a VmHWM line")
        * 1024
}

#[test]
fn an_80_mib_import_of_zeros_is_refused_without_taking_gigabytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("p", json!({}));
    // `{"keys":[0,0,…]}`: 2 bytes a number, ~40 million numbers, each of
    // which a `serde_json::Value` tree holds in 32 bytes or more.
    let size = 80usize << 20;
    let mut body = Vec::with_capacity(size + 16);
    body.extend_from_slice(b"{\"keys\":[0");
    while body.len() < size {
        body.extend_from_slice(b",0");
    }
    body.extend_from_slice(b"]}");
    let before = peak_resident(server.pid());
    let answer = admin.send(
        "POST",
        "/v1/projects/p/import",
        Some(&body),
        &[("content-type", "application/json")],
    );
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["failed_key"], 0, "{}", answer.text());
    let after = peak_resident(server.pid());
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "peak resident memory: {:.0} MiB before, {:.0} MiB after an {} MiB import body",
        mib(before),
        mib(after),
        size >> 20
    );
    assert!(
        after.saturating_sub(before) < 4 * size as u64,
        "the import took {:.0} MiB more",
        mib(after - before)
    );
}

#[test]
fn a_simple_pykv_store_listing_is_streamed_not_built_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("p", json!({}));
    let keys = 300_000;
    for chunk in 0..keys / 50_000 {
        let entries: Vec<_> = (chunk * 50_000..(chunk + 1) * 50_000)
            .map(|n| json!({"key": format!("key/{n:07}"), "value": "v"}))
            .collect();
        let answer = admin.post_json("/v1/projects/p/import", &json!({ "keys": entries }));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let before = peak_resident(server.pid());
    let answer = admin.get("/api/v1/projects/p/store");
    assert_eq!(answer.status, 200);
    let listed = answer.json();
    let data = listed["data"].as_object().expect("data is an object");
    assert_eq!(data.len(), keys);
    assert_eq!(listed["status_code"], 200);
    assert_eq!(data["key/0000007"]["value"], "v", "{}", data["key/0000007"]);
    let after = peak_resident(server.pid());
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "peak resident memory: {:.0} MiB before, {:.0} MiB after a {:.0} MiB listing of {keys} keys",
        mib(before),
        mib(after),
        mib(answer.body.len() as u64)
    );
    assert!(
        after.saturating_sub(before) < 32 << 20,
        "the listing took {:.0} MiB more",
        mib(after - before)
    );
}
