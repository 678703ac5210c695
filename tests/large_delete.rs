//! A delete by a prefix of half a million keys, and the delete of a project
//! that holds them, while another project's writer goes on: the other
//! project's writes are answered while the delete runs (a prefix is judged
//! and removed in chunks, beside them; a project's tables are dropped in
//! one commit that frees their pages without reading their keys), not after
//! it.
//! The latencies are printed (`--nocapture`); the assertion counts writes
//! answered during the delete, which a delete in one transaction (the whole
//! writer busy for seconds) leaves at zero or one.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, kv};
use serde_json::json;

const KEYS: usize = 500_000;

/// Milliseconds of the `share` quantile of sorted `latencies`.
fn quantile(latencies: &[Duration], share: f64) -> f64 {
    let index = ((latencies.len() as f64 * share) as usize).min(latencies.len() - 1);
    latencies[index].as_secs_f64() * 1e3
}

/// A server with project `big` of [`KEYS`] keys under `m/` and an empty
/// project `other`.
fn preloaded() -> (TestServer, common::Client) {
    let server = TestServer::start();
    let admin = server.admin();
    admin.create_project("big", json!({}));
    admin.create_project("other", json!({}));
    let started = Instant::now();
    for start in (0..KEYS).step_by(10_000) {
        let keys: Vec<_> = (start..KEYS.min(start + 10_000))
            .map(|i| json!({"key": format!("m/{i:07}"), "value": "twenty bytes of text"}))
            .collect();
        let answer = admin.post_json("/v1/projects/big/import", &json!({ "keys": keys }));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    eprintln!(
        "preloaded {KEYS} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (server, admin)
}

/// Runs `delete` while a writer PUTs to project `other`, prints the
/// writer's latencies before and overlapping it, checks that at least
/// `answered_during` of its writes were answered during the delete, and
/// returns the delete's answer.
fn beside_a_writer(
    admin: &common::Client,
    what: &str,
    answered_during: usize,
    delete: impl FnOnce() -> common::Answer,
) -> common::Answer {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, client) = (stop.clone(), admin.clone());
        std::thread::spawn(move || {
            let mut answered = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let answer = client.put(&kv("other", &format!("k{}", i % 100)), b"v");
                assert!(
                    answer.status == 200 || answer.status == 201,
                    "{}",
                    answer.text()
                );
                answered.push((sent, Instant::now()));
                i += 1;
            }
            answered
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    let answer = delete();
    let done = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let answered = writer.join().unwrap();

    let during: Vec<_> = answered
        .iter()
        .filter(|(s, a)| *s >= sent && *a <= done)
        .collect();
    let mut before: Vec<Duration> = answered
        .iter()
        .filter(|(s, _)| *s < sent)
        .map(|(s, a)| *a - *s)
        .collect();
    let mut overlapping: Vec<Duration> = answered
        .iter()
        .filter(|(s, a)| *a >= sent && *s <= done)
        .map(|(s, a)| *a - *s)
        .collect();
    before.sort();
    overlapping.sort();
    eprintln!(
        "{what}: {:.0} ms; other project's PUTs before it: {} (p50 {:.1} ms, \
         p99 {:.1} ms); overlapping it: {} (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
        (done - sent).as_secs_f64() * 1e3,
        before.len(),
        quantile(&before, 0.5),
        quantile(&before, 0.99),
        overlapping.len(),
        quantile(&overlapping, 0.5),
        quantile(&overlapping, 0.99),
        quantile(&overlapping, 1.0),
    );
    assert!(
        during.len() >= answered_during,
        "only {} writes of another project were answered during the {what}",
        during.len()
    );
    answer
}

#[test]
fn other_projects_writes_are_answered_while_a_prefix_of_500000_keys_is_deleted() {
    let (_server, admin) = preloaded();
    let answer = beside_a_writer(&admin, "delete of m/ (500000 keys)", 10, || {
        admin.delete("/v1/projects/big/kv?prefix=m/")
    });
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["deleted"], KEYS);
    assert_eq!(
        admin.get("/v1/projects/big/kv?prefix=m/").json()["keys"],
        json!([])
    );
    assert_eq!(admin.get(&kv("big", "m/0000000")).status, 404);
}

#[test]
fn other_projects_writes_are_answered_while_a_project_of_500000_keys_is_deleted() {
    let (_server, admin) = preloaded();
    // Dropping the project's tables frees their pages without reading a
    // key (7 ms here for 500,000 keys): too short to count writes inside
    // it, so the figures are printed and only its effects checked.
    let answer = beside_a_writer(&admin, "delete of project big (500000 keys)", 0, || {
        admin.delete("/v1/projects/big")
    });
    assert!(answer.status < 300, "{}", answer.text());
    assert_eq!(admin.get(&kv("big", "m/0000000")).status, 404);
    assert!(admin.get("/v1/projects/other").status < 300);
}
