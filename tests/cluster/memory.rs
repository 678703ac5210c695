//! A cluster node's memory per request, measured from outside: the real
//! `kvs serve` over a 3-member etcd, its peak resident memory read from
//! `/proc/<pid>/status` (`VmHWM`, reset through `clear_refs`) around one
//! request over many large values. The figures are printed
//! (`--nocapture`); the assertions allow a few pages of reads, far below
//! the values the request names.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{Client, ServerProcess, fake_secret};
use crate::one_at_a_time;
use crate::support::Etcd;

/// How many values, and their size: 128 MiB in all, each a little under
/// etcd's default request limit (1.5 MiB) with its record.
const COUNT: usize = 128;
const SIZE: usize = 1 << 20;
/// What one request may add to the node's peak: a few pages of 8 MiB read
/// from etcd, as received and as decoded.
const BOUND: u64 = 48 << 20;

const MIB: f64 = (1 << 20) as f64;

/// A `… kB` field of the process's status, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap();
    kib.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Runs `request` against `node` and answers it with how far the node's
/// resident memory rose above what it held before, at its peak.
fn peak_growth<T>(node: &ServerProcess, request: impl FnOnce() -> T) -> (T, u64) {
    let pid = node.pid();
    // `5` to `clear_refs` sets the peak to what the process holds now.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = status_bytes(pid, "VmRSS:");
    let answer = request();
    let peak = status_bytes(pid, "VmHWM:");
    (answer, peak.saturating_sub(before))
}

/// Writes `COUNT` values of `SIZE` bytes that do not compress to `p`'s
/// keys `big/000`, `big/001`, …
fn put_large_values(admin: &Client) {
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let admin = admin.clone();
            scope.spawn(move || {
                let mut state = writer as u64 + 1;
                let mut value = vec![0u8; SIZE];
                for n in (writer..COUNT).step_by(4) {
                    for chunk in value.chunks_mut(8) {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
                    }
                    let answer = admin.put(&format!("/v1/projects/p/kv/big/{n:03}"), &value);
                    assert_eq!(answer.status, 201, "{}", answer.text());
                }
            });
        }
    });
}

/// One node over a 3-member etcd in `dir`, with project `p` holding the
/// large values.
fn node_with_large_values(dir: &Path) -> (Etcd, ServerProcess) {
    let etcd = Etcd::start(dir);
    let args = ["--etcd-endpoints".to_owned(), etcd.endpoints()];
    let node = ServerProcess::start_with(&dir.join("node"), &fake_secret(), true, &args);
    let admin = node.admin();
    admin.create_project("p", json!({"max_value_bytes": SIZE}));
    put_large_values(&admin);
    (etcd, node)
}

#[test]
fn a_txn_of_gets_over_large_values_holds_a_few_pages_not_the_values() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, node) = node_with_large_values(dir.path());
    let admin = node.admin();
    let data = (COUNT * SIZE) as f64 / MIB;

    // 128 gets: refused once they read 4 MiB, as the embedded engine does.
    let gets: Vec<Value> = (0..COUNT)
        .map(|n| json!({"op": "get", "key": format!("big/{n:03}")}))
        .collect();
    let (answer, txn_growth) = peak_growth(&node, || {
        admin.post_json("/v1/projects/p/txn", &json!({"ops": gets}))
    });
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.code(), "payload_too_large", "{}", answer.text());
    println!(
        "a txn of {COUNT} gets over {data:.0} MiB of values: the node's peak rose {:.0} MiB",
        txn_growth as f64 / MIB
    );

    // A delete by prefix reads its keys' records in pages and keeps their
    // metadata only; the figure is printed, not asserted: every node's
    // watch then takes the deleted keys' previous values (for the
    // project's byte figures), 128 MiB here, whichever node deleted them.
    let (answer, delete_growth) =
        peak_growth(&node, || admin.delete("/v1/projects/p/kv?prefix=big/"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["deleted"], COUNT, "{}", answer.text());
    println!(
        "a delete by prefix of {COUNT} keys over {data:.0} MiB of values: the node's peak rose \
         {:.0} MiB",
        delete_growth as f64 / MIB
    );

    assert!(
        txn_growth < BOUND,
        "the txn of gets took {:.0} MiB more",
        txn_growth as f64 / MIB
    );
}

/// Transactions naming more keys than the first read takes whole (5 at the
/// default request limit): the keys after those are read later, a page at
/// a time, at the same revision; every get answers its own key's value and
/// every put its key's new version, as on the embedded store.
#[test]
fn a_txn_of_many_keys_reads_the_later_ones_at_the_same_revision() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let args = ["--etcd-endpoints".to_owned(), etcd.endpoints()];
    let node = ServerProcess::start_with(&dir.path().join("node"), &fake_secret(), true, &args);
    let admin = node.admin();
    admin.create_project("p", json!({}));
    let txn = |ops: Vec<Value>| {
        let answer = admin.post_json("/v1/projects/p/txn", &json!({"ops": ops}));
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()["results"].as_array().unwrap().clone()
    };
    let puts = |round: usize| -> Vec<Value> {
        (0..COUNT)
            .map(|k| json!({"op": "put", "key": format!("k{k:03}"), "value": format!("{k}.{round}")}))
            .collect()
    };
    let created = txn(puts(0));
    assert!(created.iter().all(|result| result["version"].is_u64()));
    let replaced = txn(puts(1));
    for (created, replaced) in created.iter().zip(&replaced) {
        assert!(
            replaced["version"].as_u64() > created["version"].as_u64(),
            "{created} then {replaced}"
        );
    }
    // 127 keys and one absent: a transaction holds at most 128 ops.
    let mut gets: Vec<Value> = (0..COUNT - 1)
        .map(|k| json!({"op": "get", "key": format!("k{k:03}")}))
        .collect();
    gets.insert(64, json!({"op": "get", "key": "absent"}));
    let read = txn(gets);
    assert_eq!(read.len(), COUNT);
    assert_eq!(read[64], Value::Null);
    let found = read[..64].iter().chain(&read[65..]);
    for (k, result) in found.enumerate() {
        assert_eq!(result["value"], format!("{k}.1"), "{result}");
        assert_eq!(result["version"], replaced[k]["version"], "{result}");
    }
}
