//! Faults under load: writers spread PUTs and 5-key transactions over the
//! three nodes while the etcd leader is killed and started again, then a
//! kvs node, a few rounds. Afterwards every acknowledged write reads back
//! exactly from every node, and every transaction is all or nothing. Only
//! a 2xx answer counts as acknowledged: `503 outcome_unknown`, any other
//! error and a cut connection leave a write that may or may not be there.
//! The longest stretch of failed answers after each kill is printed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Client, kv, wait_ready};
use crate::support::Cluster;

/// Writer threads; writer `w` sends its n-th request to node `(w + n) % 3`.
const WRITERS: usize = 6;
/// Rounds of (kill the etcd leader, start it again, kill a kvs node, start
/// it again).
const ROUNDS: usize = 3;
/// Every third request of a writer is a transaction over its five keys.
const TXN_EVERY: usize = 3;
/// How long a request may take before the writer gives up on it.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// One request's fate.
struct Outcome {
    node: usize,
    sent: Instant,
    done: Instant,
    /// `2xx`, or the error code, status or transport error.
    answer: String,
}

impl Outcome {
    fn acknowledged(&self) -> bool {
        self.answer == "2xx"
    }
}

/// What one writer sent and what came of it.
#[derive(Default)]
struct Log {
    /// Each PUT (of a key of its own): key, value, the version if acknowledged.
    puts: Vec<(String, String, Option<u64>)>,
    /// Each transaction over `g<w>/0..4`: the value it wrote, the revision
    /// if acknowledged.
    txns: Vec<(u64, Option<u64>)>,
    outcomes: Vec<Outcome>,
}

/// A request's answer as a word: `2xx`, the contract's error code, or what
/// the transport said.
fn classify(answer: &Result<crate::common::Answer, ureq::Error>) -> String {
    match answer {
        Ok(a) if (200..300).contains(&a.status) => "2xx".to_owned(),
        Ok(a) => format!("{} {}", a.status, a.code()),
        Err(_) => "no answer".to_owned(),
    }
}

fn writer(w: usize, clients: Vec<Client>, stop: Arc<AtomicBool>) -> Log {
    let mut log = Log::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let node = (w + n) % clients.len();
        let client = &clients[node];
        let sent = Instant::now();
        if n % TXN_EVERY == TXN_EVERY - 1 {
            let value = n as u64;
            let ops: Vec<Value> = (0..5)
                .map(|i| json!({"op": "put", "key": format!("g{w}/{i}"), "value": value.to_string()}))
                .collect();
            let body = serde_json::to_vec(&json!({"ops": ops})).unwrap();
            let answer = client.request(
                "POST",
                "/v1/projects/load/txn",
                Some(&body),
                &[("Content-Type", "application/json")],
            );
            let word = classify(&answer);
            let revision = answer
                .ok()
                .filter(|_| word == "2xx")
                .and_then(|a| a.json()["revision"].as_u64());
            log.txns.push((value, revision));
            log.outcomes.push(Outcome {
                node,
                sent,
                done: Instant::now(),
                answer: word,
            });
        } else {
            let key = format!("w{w}/{n:06}");
            let value = format!("{w}-{n}");
            let answer = client.request("PUT", &kv("load", &key), Some(value.as_bytes()), &[]);
            let word = classify(&answer);
            let version = answer
                .ok()
                .filter(|_| word == "2xx")
                .and_then(|a| a.json()["version"].as_u64());
            log.puts.push((key, value, version));
            log.outcomes.push(Outcome {
                node,
                sent,
                done: Instant::now(),
                answer: word,
            });
        }
        n += 1;
    }
    log
}

/// Every key of project `load` through `client`: key to (value, version).
fn read_all(client: &Client) -> BTreeMap<String, (String, u64)> {
    let mut all = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/projects/load/kv?values=true&limit=1000".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let answer = client.get(&path);
        assert_eq!(
            answer.status,
            200,
            "listing on {}: {}",
            client.base,
            answer.text()
        );
        let page = answer.json();
        for meta in page["keys"].as_array().unwrap() {
            let key = meta["key"].as_str().unwrap().to_owned();
            let value = meta["value"].as_str().unwrap_or("").to_owned();
            all.insert(key, (value, meta["version"].as_u64().unwrap()));
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

/// The longest stretch of failed answers from each node among `outcomes`
/// sent in `[from, to)`: from the first failed request's sending to the
/// next acknowledged answer (or `to`).
fn longest_windows(outcomes: &[&Outcome], from: Instant, to: Instant) -> [Duration; 3] {
    let mut longest = [Duration::ZERO; 3];
    for (node, longest) in longest.iter_mut().enumerate() {
        let mut mine: Vec<&&Outcome> = outcomes
            .iter()
            .filter(|o| o.node == node && o.sent >= from && o.sent < to)
            .collect();
        mine.sort_by_key(|o| o.sent);
        let mut failing_since: Option<Instant> = None;
        for outcome in mine {
            match (outcome.acknowledged(), failing_since) {
                (false, None) => failing_since = Some(outcome.sent),
                (true, Some(since)) => {
                    *longest = (*longest).max(outcome.done - since);
                    failing_since = None;
                }
                _ => {}
            }
        }
        if let Some(since) = failing_since {
            *longest = (*longest).max(to - since);
        }
    }
    longest
}

#[test]
fn acknowledged_writes_survive_kills_of_the_etcd_leader_and_of_nodes_and_txns_stay_whole() {
    let _turn = crate::one_at_a_time();
    let started = Instant::now();
    let mut cluster = Cluster::start();
    let token = cluster.admin(0).create_project("load", json!({}));
    let stop = Arc::new(AtomicBool::new(false));
    let load = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let clients: Vec<Client> = cluster
                .nodes
                .iter()
                .map(|node| Client::with_timeout(&node.url, Some(&token), REQUEST_LIMIT))
                .collect();
            let stop = stop.clone();
            thread::spawn(move || writer(w, clients, stop))
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    // (what was killed, when)
    let mut kills: Vec<(String, Instant)> = Vec::new();
    for round in 0..ROUNDS {
        let leader = cluster.etcd.leader();
        kills.push((format!("the etcd leader (etcd{leader})"), Instant::now()));
        cluster.etcd.kill(leader);
        thread::sleep(Duration::from_secs(3));
        cluster.etcd.restart(leader);
        thread::sleep(Duration::from_secs(1));
        let node = round % 3;
        kills.push((format!("kvs node {node}"), Instant::now()));
        cluster.nodes[node].kill_and_restart();
        thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    let ended = Instant::now();
    let logs: Vec<Log> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    // What the writers were told.
    let outcomes: Vec<&Outcome> = logs.iter().flat_map(|l| &l.outcomes).collect();
    let mut answers: BTreeMap<&str, usize> = BTreeMap::new();
    for outcome in &outcomes {
        *answers.entry(outcome.answer.as_str()).or_default() += 1;
    }
    println!(
        "{} requests in {:.1} s over {ROUNDS} rounds: {answers:?}",
        outcomes.len(),
        (ended - load).as_secs_f64()
    );
    for (i, (what, at)) in kills.iter().enumerate() {
        let to = kills.get(i + 1).map_or(ended, |(_, next)| *next);
        let windows = longest_windows(&outcomes, *at, to).map(crate::millis);
        println!(
            "after killing {what}: the longest run of failed answers lasted {} on node 0, \
             {} on node 1, {} on node 2",
            windows[0], windows[1], windows[2]
        );
    }

    // Every node serves every acknowledged write exactly.
    for node in &cluster.nodes {
        wait_ready(&node.url);
    }
    let clients = cluster.clients(&token);
    let seen: Vec<_> = clients.iter().map(read_all).collect();
    for (i, other) in seen.iter().enumerate().skip(1) {
        assert!(*other == seen[0], "node {i} lists other keys than node 0");
    }
    let seen = &seen[0];
    let mut attempted: HashMap<&str, &str> = HashMap::new();
    let (mut acknowledged, mut unknown_present) = (0, 0);
    for (w, log) in logs.iter().enumerate() {
        for (key, value, version) in &log.puts {
            attempted.insert(key, value);
            match (version, seen.get(key)) {
                (Some(version), found) => {
                    acknowledged += 1;
                    assert_eq!(
                        found,
                        Some(&(value.clone(), *version)),
                        "acknowledged {key} at {version}"
                    );
                }
                (None, Some((found, _))) => {
                    unknown_present += 1;
                    assert_eq!(found, value, "{key} holds what was never sent");
                }
                (None, None) => {}
            }
        }
        // The group: all five keys or none, at one version, with the value
        // of the last acknowledged transaction or of one sent after it.
        let group: Vec<Option<&(String, u64)>> =
            (0..5).map(|i| seen.get(&format!("g{w}/{i}"))).collect();
        assert!(
            group.iter().all(|g| g == &group[0]),
            "writer {w}'s transaction applied in part: {group:?}"
        );
        let last_acked = log.txns.iter().rposition(|(_, r)| r.is_some());
        match (group[0], last_acked) {
            (None, None) => {}
            (None, Some(i)) => panic!("writer {w}'s transaction {i} was acknowledged, then lost"),
            (Some((value, version)), last) => {
                let value: u64 = value.parse().unwrap();
                let sent = log.txns.iter().position(|(v, _)| *v == value);
                let sent = sent.unwrap_or_else(|| panic!("writer {w}'s group holds {value}"));
                match last {
                    Some(i) if sent == i => assert_eq!(Some(*version), log.txns[i].1),
                    Some(i) => assert!(
                        sent > i && log.txns[sent].1.is_none(),
                        "writer {w}'s group holds transaction {sent}, not {i}"
                    ),
                    None => assert!(log.txns[sent].1.is_none()),
                }
            }
        }
    }
    for key in seen.keys().filter(|k| k.starts_with('w')) {
        assert!(attempted.contains_key(key.as_str()), "{key} was never sent");
    }
    println!(
        "{acknowledged} acknowledged PUTs read back exactly from all three nodes; \
         {unknown_present} unacknowledged PUTs were applied; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
