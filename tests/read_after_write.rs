//! What a disk project shows the moment a write is acknowledged, seen from
//! outside over HTTP.
//!
//! The disk engine may commit each group of writes to its database, or keep
//! the database's write transaction open across several groups and serve
//! the writes it holds from memory until it commits them. Either way, an
//! acknowledged write is there at once for every reader: a GET, a listing
//! page by page, a read-only transaction, a watch from any revision (also
//! one far behind the feed's memory, served from the durable change log),
//! a backup. A transaction is never seen in part, a delete hides what it
//! removed (a delete by prefix too), an expiry applies to a key just
//! written, and a stop or a kill right after the last answer loses nothing.
//!
//! Every test runs a couple of seconds of load at most; they take turns, so
//! that each has the machine's cores to itself. The assertions are about
//! what is seen, never about speed; the only sleep is the TTL test's wait
//! for an expiry.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{Answer, Client, Rng, ServerProcess, TestServer, fake_secret, kv};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

/// How long the tests that write and read at once keep going.
const LOAD: Duration = Duration::from_secs(2);
/// The content type of every value written by PUT here.
const TEXT: &str = "text/plain; charset=utf-8";

/// The tests of this binary take turns: each is a load of its own.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

// ======================================================= reads of own writes

/// Eight clients each write their own keys for two seconds and, after each
/// acknowledged PUT, read the key at once by GET and list their whole
/// prefix page by page: the GET answers exactly the value and version just
/// written, and the listing holds exactly the client's keys, each with its
/// last value and version, in byte order and once. Half the writes of a
/// known key are conditional on the version last acknowledged (`If-Match`),
/// and now and then a create-only PUT of the key just written must be
/// refused with its new ETag: the writer judges conditions against the
/// writes it holds, not against an older state.
#[test]
fn every_client_reads_its_own_write_at_once_by_get_and_in_listings() {
    const CLIENTS: usize = 8;
    let _turn = one_at_a_time();
    let (_server, client) = disk_project("own");
    let deadline = Instant::now() + LOAD;
    let rounds: Vec<u64> = thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let client = client.clone();
                scope.spawn(move || write_and_read_own_keys(&client, c, deadline))
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    println!("own writes: rounds of PUT, GET and listing per client: {rounds:?}");
    assert!(rounds.iter().all(|&r| r > 0), "a client made no round");
}

/// One client's rounds until `deadline`; answers how many it made.
fn write_and_read_own_keys(client: &Client, c: usize, deadline: Instant) -> u64 {
    const KEYS: u64 = 50;
    let prefix = format!("c{c}/");
    let mut rng = Rng::new();
    let mut mine: BTreeMap<String, Stored> = BTreeMap::new();
    let mut round = 0;
    while Instant::now() < deadline {
        let key = format!("{prefix}k{:02}", rng.below(KEYS));
        let path = kv("own", &key);
        let value = format!("client {c}, key {key}, round {round}");
        let condition = match mine.get(&key) {
            None => Some(("If-None-Match", "*".to_owned())),
            Some(known) if round % 2 == 0 => Some(("If-Match", etag(known.version))),
            Some(_) => None,
        };
        let headers: Vec<(&str, &str)> = condition.iter().map(|(h, v)| (*h, v.as_str())).collect();
        let version = put_text(client, &path, &value, &headers);
        if let Some(known) = mine.get(&key) {
            assert!(
                version > known.version,
                "{key}: version {version} after {}",
                known.version
            );
        }
        let stored = Stored { value, version };
        assert_get(client, "own", &key, &stored);
        mine.insert(key.clone(), stored);

        if round % 4 == 3 {
            let refused = client.send(
                "PUT",
                &path,
                Some(b"not written"),
                &[("Content-Type", TEXT), ("If-None-Match", "*")],
            );
            assert_eq!(
                refused.status,
                412,
                "a create-only PUT of {key}, just written at {version}: {}",
                refused.text()
            );
            assert_eq!(
                refused.header("etag"),
                Some(etag(version).as_str()),
                "{key}"
            );
        }

        let pages = list_all(client, "own", &prefix, 16);
        for page in &pages {
            assert!(
                page.revision >= version,
                "a listing page at revision {} after a write at {version}",
                page.revision
            );
        }
        assert_listing_is(&pages, &mine, &format!("client {c}, round {round}"));
        round += 1;
    }
    round
}

// ======================================================= whole transactions

/// Pairs of keys.
const PAIRS: usize = 8;

fn pair_key(pair: usize, side: &str) -> String {
    format!("p{pair}/{side}")
}

/// Two writers run transactions that each put one value into both keys of
/// a few pairs, while three readers list the pairs (in one page, and in
/// pages of five), read all of them in one read-only transaction, and GET
/// single keys. Wherever one answer holds both keys of a pair, they carry
/// the same value and version: no reader sees a transaction in part. Each
/// reader also never sees a key go back to an older version.
#[test]
fn a_transaction_is_never_seen_in_part_by_listings_or_read_transactions() {
    const WRITERS: usize = 2;
    const READERS: usize = 3;
    let _turn = one_at_a_time();
    let (_server, client) = disk_project("pairs");
    let all: Vec<usize> = (0..PAIRS).collect();
    write_pairs(&client, &all, "start");

    let deadline = Instant::now() + LOAD;
    let (txns, reads) = thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let client = client.clone();
                scope.spawn(move || {
                    let mut rng = Rng::new();
                    let mut txns = 0u64;
                    while Instant::now() < deadline {
                        let mut pairs: Vec<usize> = Vec::new();
                        let count = 1 + rng.below(3) as usize;
                        while pairs.len() < count {
                            let pair = rng.below(PAIRS as u64) as usize;
                            if !pairs.contains(&pair) {
                                pairs.push(pair);
                            }
                        }
                        write_pairs(&client, &pairs, &format!("writer {w}, txn {txns}"));
                        txns += 1;
                    }
                    txns
                })
            })
            .collect();
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let client = client.clone();
                scope.spawn(move || read_pairs(&client, r, deadline))
            })
            .collect();
        let txns: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        (txns, reads)
    });
    println!("pairs: {txns} transactions written, {reads} reads");
    assert!(txns > 0 && reads > 0);
}

/// One transaction that puts `value` into both keys of each pair; asserts
/// that every put got the transaction's revision.
fn write_pairs(client: &Client, pairs: &[usize], value: &str) {
    let ops: Vec<Value> = pairs
        .iter()
        .flat_map(|&pair| {
            ["a", "b"].map(|side| json!({"op": "put", "key": pair_key(pair, side), "value": value}))
        })
        .collect();
    let answer = client.post_json("/v1/projects/pairs/txn", &json!({ "ops": ops }));
    assert_eq!(answer.status, 200, "txn: {}", answer.text());
    let body = answer.json();
    let revision = body["revision"].as_u64().expect("a revision");
    for result in body["results"].as_array().expect("results") {
        assert_eq!(result["version"].as_u64(), Some(revision), "{body}");
    }
}

/// One reader's reads until `deadline`; answers how many it made.
fn read_pairs(client: &Client, r: usize, deadline: Instant) -> u64 {
    let mut rng = Rng::new();
    // The newest version this reader has seen of each key.
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut saw = |key: &str, version: u64, what: &str| {
        let newest = seen.entry(key.to_owned()).or_default();
        assert!(
            version >= *newest,
            "reader {r}: {what} gives {key} at version {version}, after {newest} was seen"
        );
        *newest = version;
    };
    let mut reads = 0;
    while Instant::now() < deadline {
        match reads % 3 {
            0 | 1 => {
                let limit = if reads % 3 == 0 { 1000 } else { 5 };
                let pages = list_all(client, "pairs", "p", limit);
                let mut listed = 0;
                for page in &pages {
                    let by_key: BTreeMap<&str, &Listed> =
                        page.keys.iter().map(|k| (k.key.as_str(), k)).collect();
                    for pair in 0..PAIRS {
                        let (a, b) = (pair_key(pair, "a"), pair_key(pair, "b"));
                        if let (Some(a), Some(b)) = (by_key.get(a.as_str()), by_key.get(b.as_str()))
                        {
                            assert!(
                                (&a.value, a.version) == (&b.value, b.version),
                                "reader {r}: a listing page (limit {limit}, revision {}) holds \
                                 {:?} at {} but {:?} at {}",
                                page.revision,
                                a.value,
                                a.version,
                                b.value,
                                b.version
                            );
                        }
                    }
                    for listed_key in &page.keys {
                        saw(&listed_key.key, listed_key.version, "a listing");
                    }
                    listed += page.keys.len();
                }
                assert_eq!(listed, 2 * PAIRS, "reader {r}: the listing lost a key");
            }
            _ => {
                let ops: Vec<Value> = (0..PAIRS)
                    .flat_map(|pair| {
                        ["a", "b"].map(|side| json!({"op": "get", "key": pair_key(pair, side)}))
                    })
                    .collect();
                let answer = client.post_json("/v1/projects/pairs/txn", &json!({ "ops": ops }));
                assert_eq!(answer.status, 200, "read-only txn: {}", answer.text());
                let body = answer.json();
                let revision = body["revision"].as_u64().expect("a revision");
                let results = body["results"].as_array().expect("results");
                assert_eq!(results.len(), 2 * PAIRS, "{body}");
                for pair in results.chunks(2) {
                    let read = |result: &Value| {
                        let version = result["version"].as_u64().expect("a version");
                        assert!(version <= revision, "{body}");
                        (
                            result["value"].as_str().expect("a value").to_owned(),
                            version,
                        )
                    };
                    let (a, b) = (read(&pair[0]), read(&pair[1]));
                    assert_eq!(
                        a, b,
                        "reader {r}: a read-only transaction at revision {revision} holds \
                         {} and {} apart",
                        pair[0]["key"], pair[1]["key"]
                    );
                    saw(pair[0]["key"].as_str().unwrap(), a.1, "a read-only txn");
                    saw(pair[1]["key"].as_str().unwrap(), b.1, "a read-only txn");
                }
            }
        }
        let key = pair_key(
            rng.below(PAIRS as u64) as usize,
            ["a", "b"][rng.below(2) as usize],
        );
        let answer = client.get(&kv("pairs", &key));
        assert_eq!(answer.status, 200, "GET {key}: {}", answer.text());
        saw(&key, kvs_version(&answer), "a GET");
        reads += 1;
    }
    reads
}

// ======================================================= deletes

/// 200 keys and 20 more under a small prefix are written, then, without a
/// pause: half of the 200 deleted one by one (a second DELETE of one of them
/// is `404`), the small prefix deleted at once, one deleted key and one key
/// of the deleted prefix written again, and a transaction that deletes a
/// present key and puts a deleted one. Right after, a listing (page by page)
/// and a GET of every key agree with exactly that: deleted keys absent
/// (`404`), the others present with their values and versions, and the
/// project's key count matches.
#[test]
fn deleted_keys_are_gone_at_once_from_gets_and_listings() {
    const THREADS: usize = 4;
    let _turn = one_at_a_time();
    let (_server, client) = disk_project("deletes");
    let mut writes: Vec<(String, String)> = (0..200)
        .map(|n| (format!("d/k{n:03}"), format!("value {n}")))
        .collect();
    writes.extend((0..20).map(|n| (format!("d/sub/k{n:02}"), format!("sub value {n}"))));
    let universe: Vec<String> = writes.iter().map(|(key, _)| key.clone()).collect();
    let mut present = put_all(&client, "deletes", writes, THREADS);

    let odd: Vec<String> = (1..200).step_by(2).map(|n| format!("d/k{n:03}")).collect();
    thread::scope(|scope| {
        for share in odd.chunks(odd.len().div_ceil(THREADS)) {
            let client = client.clone();
            scope.spawn(move || {
                for key in share {
                    let answer = client.delete(&kv("deletes", key));
                    assert_eq!(answer.status, 204, "DELETE {key}: {}", answer.text());
                }
            });
        }
    });
    for key in &odd {
        present.remove(key);
    }
    let again = client.delete(&kv("deletes", "d/k001"));
    assert_eq!(
        again.status,
        404,
        "a second DELETE of d/k001: {}",
        again.text()
    );
    let cleared = client.delete("/v1/projects/deletes/kv?prefix=d%2Fsub%2F");
    assert_eq!(cleared.status, 200, "delete by prefix: {}", cleared.text());
    assert_eq!(cleared.json()["deleted"], 20, "{}", cleared.text());
    present.retain(|key, _| !key.starts_with("d/sub/"));

    for key in ["d/k003", "d/sub/k07"] {
        let value = format!("{key} written again");
        let version = put_text(&client, &kv("deletes", key), &value, &[]);
        present.insert(key.to_owned(), Stored { value, version });
    }
    let ops = json!({"ops": [
        {"op": "delete", "key": "d/k004"},
        {"op": "put", "key": "d/k005", "value": "back by a transaction"},
    ]});
    let answer = client.post_json("/v1/projects/deletes/txn", &ops);
    assert_eq!(answer.status, 200, "txn: {}", answer.text());
    let body = answer.json();
    assert_eq!(body["results"][0]["deleted"], true, "{body}");
    present.remove("d/k004");
    let version = body["revision"].as_u64().unwrap();
    present.insert(
        "d/k005".to_owned(),
        Stored {
            value: "back by a transaction".to_owned(),
            version,
        },
    );

    let pages = list_all(&client, "deletes", "d/", 30);
    assert_listing_is(&pages, &present, "after the deletes");
    for key in &universe {
        match present.get(key) {
            Some(stored) => assert_get(&client, "deletes", key, stored),
            None => assert_absent(&client, "deletes", key),
        }
    }
    let project = client.get("/v1/projects/deletes");
    assert_eq!(project.status, 200, "{}", project.text());
    assert_eq!(
        project.json()["keys"].as_u64(),
        Some(present.len() as u64),
        "the project's keys figure: {}",
        project.text()
    );
    println!(
        "deletes: {} of {} keys left, listed in {} pages",
        present.len(),
        universe.len(),
        pages.len()
    );
}

// ======================================================= watches

/// 6,000 single PUTs from four clients (more than the 4,096 change sets a
/// project's feed keeps in memory), then four clients go on writing 1,000
/// more, and once they are under way a watch from revision 0 is opened: it
/// delivers every acknowledged write once, in revision order, with its key,
/// and nothing else, so no revision of the project is missing (the old ones
/// come from the durable change log, the newer from the feed, the last live).
#[test]
fn a_watch_from_revision_zero_gets_every_write_once_and_in_order_past_the_feeds_memory() {
    const WRITERS: usize = 4;
    let _turn = one_at_a_time();
    let (server, client) = disk_project("history");
    let first = (0..6000).map(|n| (format!("first/{n:05}"), format!("first {n}")));
    let mut acked = put_all(&client, "history", first.collect(), WRITERS);

    let progress = Progress::default();
    let (more, mut watch, before_sync, sync) = thread::scope(|scope| {
        let writing = {
            let (client, progress) = (client.clone(), &progress);
            let more = (0..1000).map(|n| (format!("more/{n:05}"), format!("more {n}")));
            scope.spawn(move || put_all_with(&client, "history", more.collect(), WRITERS, progress))
        };
        progress.wait_for(100);
        let mut watch = Watch::open(&server.url, &client.secret(), "history", "since=0");
        let (before_sync, sync) = watch.until_sync();
        (writing.join().unwrap(), watch, before_sync, sync)
    });
    acked.extend(more);
    let expected = changes_of(&acked);
    let last = expected.last().unwrap().revision;
    let mut seen = before_sync;
    if sync < last {
        seen.extend(watch.until(last));
    }
    println!(
        "history: {} writes acknowledged, up to revision {last}; the watch from 0 synced at \
         {sync} and delivered {} changes",
        expected.len(),
        seen.len()
    );
    assert_same_changes(&seen, &expected, "the watch from revision 0");
}

/// Four clients write values of about 1 MB for two seconds, so that the
/// feed's memory (8 MiB per project) holds only the last few writes, while
/// two watchers, again and again, open a watch from a dozen revisions
/// behind the newest acknowledged write and read up to its `sync`: each gets
/// exactly the acknowledged writes after its `since` up to its sync
/// revision, though the older of them are no longer in the feed's memory
/// and the newest may not be in the database's committed state yet.
#[test]
fn a_watch_just_behind_the_feeds_memory_gets_every_write_up_to_its_sync() {
    const WRITERS: usize = 4;
    const WATCHERS: usize = 2;
    /// How far behind the newest acknowledged write a watch starts.
    const BEHIND: u64 = 12;
    let _turn = one_at_a_time();
    let (server, client) = disk_project("large");
    let big = "v".repeat(1_000_000);
    let progress = Progress::default();
    let deadline = Instant::now() + LOAD;
    let (acked, watches) = thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, progress, big) = (client.clone(), &progress, &big);
                scope.spawn(move || {
                    let mut acked = Vec::new();
                    while Instant::now() < deadline {
                        let key = format!("w{w}/{:02}", acked.len() % 16);
                        let value = format!("{} {big}", acked.len());
                        let version = put_text(&client, &kv("large", &key), &value, &[]);
                        progress.acked(version);
                        acked.push(Change {
                            revision: version,
                            key,
                            kind: "put".to_owned(),
                        });
                    }
                    acked
                })
            })
            .collect();
        let watchers: Vec<_> = (0..WATCHERS)
            .map(|_| {
                let (url, token, progress) = (&server.url, client.secret(), &progress);
                scope.spawn(move || {
                    progress.wait_for(BEHIND);
                    let mut watches = Vec::new();
                    while Instant::now() < deadline {
                        let since = progress.newest() - BEHIND;
                        let query = format!("since={since}");
                        let (seen, sync) = Watch::open(url, &token, "large", &query).until_sync();
                        watches.push((since, seen, sync));
                    }
                    watches
                })
            })
            .collect();
        let acked: Vec<Change> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let watches: Vec<_> = watchers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (acked, watches)
    });
    let mut acked = acked;
    acked.sort();
    for (since, seen, sync) in &watches {
        let expected: Vec<Change> = acked
            .iter()
            .filter(|c| c.revision > *since && c.revision <= *sync)
            .cloned()
            .collect();
        assert_same_changes(
            seen,
            &expected,
            &format!("the watch since {since} (sync {sync})"),
        );
    }
    println!(
        "large values: {} writes of 1 MB acknowledged; {} watches checked",
        acked.len(),
        watches.len()
    );
    assert!(!watches.is_empty(), "no watch was opened");
}

/// A watch opened with `since` at the revision of the last write just
/// acknowledged is accepted at once (the revision is not "in the future"),
/// and so is a watch from now, which syncs at that revision or later; then
/// a burst of 2,000 PUTs from four clients: both watches deliver every one
/// of them once, in order, and nothing else.
#[test]
fn a_watch_from_the_latest_revision_gets_every_write_of_the_burst_that_follows() {
    const WRITERS: usize = 4;
    let _turn = one_at_a_time();
    let (server, client) = disk_project("burst");
    let before = (0..200).map(|n| (format!("before/{n:03}"), format!("before {n}")));
    let before = put_all(&client, "burst", before.collect(), WRITERS);
    let latest = before.values().map(|s| s.version).max().unwrap();

    let mut since_latest = Watch::open(
        &server.url,
        &client.secret(),
        "burst",
        &format!("since={latest}"),
    );
    let (early, sync) = since_latest.until_sync();
    assert!(early.is_empty(), "changes after {latest}: {early:?}");
    assert!(sync >= latest, "synced at {sync}, before {latest}");
    let mut from_now = Watch::open(&server.url, &client.secret(), "burst", "");
    let (early, sync) = from_now.until_sync();
    assert!(early.is_empty(), "changes before the sync: {early:?}");
    assert!(
        sync >= latest,
        "a watch from now synced at {sync}, before {latest}, a write already acknowledged"
    );

    let burst = (0..2000).map(|n| (format!("burst/{n:04}"), format!("burst {n}")));
    let expected = changes_of(&put_all(&client, "burst", burst.collect(), WRITERS));
    let last = expected.last().unwrap().revision;
    assert_same_changes(
        &since_latest.until(last),
        &expected,
        &format!("the watch since {latest}"),
    );
    assert_same_changes(&from_now.until(last), &expected, "the watch from now");
}

// ======================================================= backup

/// Three rounds of 500 PUTs from eight clients, each followed at once by a
/// backup: every backup holds all 500 keys with the values and versions of
/// the round just acknowledged, at a revision no older than its last write.
#[test]
fn a_backup_taken_right_after_writes_holds_every_one_of_them() {
    let _turn = one_at_a_time();
    let (server, client) = disk_project("saved");
    let admin = server.admin();
    for round in 0..3 {
        let writes = (0..500).map(|n| (format!("k{n:03}"), format!("round {round}, key {n}")));
        let acked = put_all(&client, "saved", writes.collect(), 8);
        let newest = acked.values().map(|s| s.version).max().unwrap();

        let answer = admin.get("/v1/backup");
        assert_eq!(answer.status, 200, "backup: {}", answer.text());
        let text = answer.text();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        let revision = lines[0]["revision"]
            .as_u64()
            .expect("the header's revision");
        assert!(
            revision >= newest,
            "round {round}: a backup at revision {revision}, after a write at {newest}"
        );
        assert!(
            lines.last().unwrap().get("end").is_some(),
            "round {round}: no trailer"
        );
        let saved: BTreeMap<String, Stored> = lines
            .iter()
            .filter_map(|line| line.get("key"))
            .filter(|key| key["project"] == "saved")
            .map(|key| {
                let stored = Stored {
                    value: key["value"].as_str().expect("a text value").to_owned(),
                    version: key["version"].as_u64().expect("a version"),
                };
                (key["key"].as_str().unwrap().to_owned(), stored)
            })
            .collect();
        assert_same_keys(&saved, &acked, &format!("round {round}: the backup"));
    }
}

// ======================================================= expiry

/// Keys given a TTL of one second, by PUT and by a transaction, and a
/// long-lived key rewritten with that TTL, are there at once (GET and
/// listing); a key written with the TTL and rewritten at once without one
/// loses its expiry. A second and a half later the first three are gone
/// (`404`, not listed) and the last is still there.
#[test]
fn a_key_written_with_a_one_second_ttl_is_there_at_once_and_gone_after_it() {
    let _turn = one_at_a_time();
    let (_server, client) = disk_project("ttl");
    let mut short = BTreeMap::new();
    let version = put_text(
        &client,
        &format!("{}?ttl=1", kv("ttl", "put")),
        "by PUT",
        &[],
    );
    short.insert("put".to_owned(), stored("by PUT", version));
    let ops = json!({"ops": [{"op": "put", "key": "txn", "value": "by txn", "ttl": 1}]});
    let answer = client.post_json("/v1/projects/ttl/txn", &ops);
    assert_eq!(answer.status, 200, "txn: {}", answer.text());
    let version = answer.json()["revision"].as_u64().unwrap();
    short.insert("txn".to_owned(), stored("by txn", version));
    put_text(&client, &kv("ttl", "shortened"), "long-lived", &[]);
    let path = format!("{}?ttl=1", kv("ttl", "shortened"));
    let version = put_text(&client, &path, "now short", &[]);
    short.insert("shortened".to_owned(), stored("now short", version));
    put_text(
        &client,
        &format!("{}?ttl=1", kv("ttl", "kept")),
        "short",
        &[],
    );
    let version = put_text(&client, &kv("ttl", "kept"), "kept", &[]);
    let kept = stored("kept", version);

    let mut all = short.clone();
    all.insert("kept".to_owned(), kept.clone());
    for (key, stored) in &all {
        assert_get(&client, "ttl", key, stored);
    }
    assert_listing_is(&list_all(&client, "ttl", "", 100), &all, "at once");

    // The expiry is what is waited for: no answer says when it happened.
    thread::sleep(Duration::from_millis(1500));
    for key in short.keys() {
        assert_absent(&client, "ttl", key);
    }
    assert_get(&client, "ttl", "kept", &kept);
    let left = BTreeMap::from([("kept".to_owned(), kept)]);
    assert_listing_is(&list_all(&client, "ttl", "", 100), &left, "after 1.5 s");
}

// ======================================================= restarts

/// 1,000 PUTs from sixteen clients, then the server in this process stopped
/// gracefully right after the last answer and started again on its data, in
/// two rounds: every key reads back with its value and version, in GETs,
/// the listing and the change log, and the next write takes a version above
/// all of them.
#[test]
fn a_thousand_writes_survive_a_graceful_stop_right_after_the_last_answer() {
    let _turn = one_at_a_time();
    let (mut server, client) = disk_project("kept");
    let token = client.secret();
    let mut acked = BTreeMap::new();
    for round in 0..2 {
        let client = Client::new(&server.url, Some(&token));
        acked = put_all(&client, "kept", thousand(round), 16);
        server = server.restart();
        let client = Client::new(&server.url, Some(&token));
        assert_kept(&server.url, &client, &acked, &format!("round {round}"));
    }
    println!("graceful stop: {} keys kept", acked.len());
}

/// The same with the `kvs` binary, stopped by SIGTERM right after the last
/// answer; it exits with 0.
#[test]
fn a_thousand_writes_survive_sigterm_right_after_the_last_answer() {
    survive_a_stop("sigterm", |server| {
        assert_eq!(server.terminate(), Some(0), "the exit code after SIGTERM");
    });
}

/// The same with the `kvs` binary killed (SIGKILL) right after the last
/// answer: what its write-ahead log held is applied again at the start.
#[test]
fn a_thousand_writes_survive_sigkill_right_after_the_last_answer() {
    survive_a_stop("sigkill", ServerProcess::kill);
}

/// Two rounds of 1,000 PUTs against the binary, each ended by `stop` and
/// checked on a new server on the same data.
fn survive_a_stop(project: &str, stop: impl Fn(&mut ServerProcess)) {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let admin_token = fake_secret();
    let mut server = ServerProcess::start(&data_dir, &admin_token);
    let token = server
        .admin()
        .create_project(project, json!({"storage": "disk"}));
    let mut acked = BTreeMap::new();
    for round in 0..2 {
        let client = Client::new(&server.url, Some(&token));
        acked = put_all(&client, project, thousand(round), 16);
        stop(&mut server);
        server = ServerProcess::start(&data_dir, &admin_token);
        let client = Client::new(&server.url, Some(&token));
        assert_kept(
            &server.url,
            &client,
            &acked,
            &format!("{project}, round {round}"),
        );
    }
    println!("{project}: {} keys kept", acked.len());
}

/// The keys of a restart round: the same 1,000 keys each round, with new
/// values.
fn thousand(round: usize) -> Vec<(String, String)> {
    (0..1000)
        .map(|n| (format!("k{n:04}"), format!("round {round}, key {n}")))
        .collect()
}

/// Asserts that the client's project holds exactly `acked`, by GET and
/// listing; that its change log, replayed from revision 0, ends with each
/// key's acknowledged write; and that a new write takes a version above
/// every acknowledged one.
fn assert_kept(url: &str, client: &Client, acked: &BTreeMap<String, Stored>, what: &str) {
    let project = project_of(client);
    for (key, stored) in acked {
        assert_get(client, &project, key, stored);
    }
    assert_listing_is(&list_all(client, &project, "k", 1000), acked, what);
    let mut watch = Watch::open(url, &client.secret(), &project, "since=0");
    let (log, _) = watch.until_sync();
    let mut last: BTreeMap<String, &Change> = BTreeMap::new();
    for change in &log {
        last.insert(change.key.clone(), change);
    }
    for (key, stored) in acked {
        let logged = last.get(key).map(|c| (c.kind.as_str(), c.revision));
        assert_eq!(
            logged,
            Some(("put", stored.version)),
            "{what}: the change log's last change of {key}"
        );
    }
    let newest = acked.values().map(|s| s.version).max().unwrap();
    let version = put_text(client, &kv(&project, "after"), "after the restart", &[]);
    assert!(
        version > newest,
        "{what}: a write after the restart got version {version}, not above {newest}"
    );
}

/// The project a client's token belongs to.
fn project_of(client: &Client) -> String {
    let answer = client.get("/v1/whoami");
    assert_eq!(answer.status, 200, "whoami: {}", answer.text());
    answer.json()["project"]
        .as_str()
        .expect("a project token")
        .to_owned()
}

// ======================================================= helpers

/// A server in this process with one disk project, and a client with the
/// project's manage token.
fn disk_project(project: &str) -> (TestServer, Client) {
    let server = TestServer::start();
    let admin = server.admin();
    let token = admin.create_project(project, json!({"storage": "disk"}));
    let client = admin.with_token(&token);
    (server, client)
}

/// An acknowledged write: the value and the version it got.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    value: String,
    version: u64,
}

fn stored(value: &str, version: u64) -> Stored {
    Stored {
        value: value.to_owned(),
        version,
    }
}

fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// PUTs `value` as text with `headers`; asserts `200` or `201` and an ETag
/// of the version, and answers the version.
fn put_text(client: &Client, path: &str, value: &str, headers: &[(&str, &str)]) -> u64 {
    let mut all = vec![("Content-Type", TEXT)];
    all.extend_from_slice(headers);
    let answer = client.send("PUT", path, Some(value.as_bytes()), &all);
    assert!(
        matches!(answer.status, 200 | 201),
        "PUT {path} {headers:?}: {} {}",
        answer.status,
        answer.text()
    );
    let version = answer.json()["version"].as_u64().expect("a version");
    assert_eq!(
        answer.header("etag"),
        Some(etag(version).as_str()),
        "PUT {path}"
    );
    version
}

/// PUTs every (key, value) of `writes` from `threads` clients at once;
/// answers what each key got.
fn put_all(
    client: &Client,
    project: &str,
    writes: Vec<(String, String)>,
    threads: usize,
) -> BTreeMap<String, Stored> {
    put_all_with(client, project, writes, threads, &Progress::default())
}

/// The same, telling `progress` of each acknowledgement.
fn put_all_with(
    client: &Client,
    project: &str,
    writes: Vec<(String, String)>,
    threads: usize,
    progress: &Progress,
) -> BTreeMap<String, Stored> {
    thread::scope(|scope| {
        let shares: Vec<_> = writes
            .chunks(writes.len().div_ceil(threads))
            .map(|share| {
                let client = client.clone();
                scope.spawn(move || {
                    share
                        .iter()
                        .map(|(key, value)| {
                            let version = put_text(&client, &kv(project, key), value, &[]);
                            progress.acked(version);
                            (key.clone(), stored(value, version))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        shares
            .into_iter()
            .flat_map(|share| share.join().unwrap())
            .collect()
    })
}

/// How far concurrent writers have come: what a reader waits for before
/// it starts.
#[derive(Default)]
struct Progress {
    /// Writes acknowledged.
    count: AtomicU64,
    /// The newest version acknowledged.
    newest: AtomicU64,
}

impl Progress {
    fn acked(&self, version: u64) {
        self.newest.fetch_max(version, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn newest(&self) -> u64 {
        self.newest.load(Ordering::SeqCst)
    }

    /// Waits until `count` writes were acknowledged (at most 30 s).
    fn wait_for(&self, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count.load(Ordering::SeqCst) < count {
            assert!(
                Instant::now() < deadline,
                "{count} writes were not acknowledged within 30 s"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The `Kvs-Version` of a read.
fn kvs_version(answer: &Answer) -> u64 {
    answer
        .header("kvs-version")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Kvs-Version: {answer:?}"))
}

/// Asserts that a GET answers exactly `stored`: its bytes and its version.
fn assert_get(client: &Client, project: &str, key: &str, stored: &Stored) {
    let answer = client.get(&kv(project, key));
    assert_eq!(
        answer.status,
        200,
        "GET {key}, written at {}: {}",
        stored.version,
        answer.text()
    );
    assert_eq!(
        (answer.text(), kvs_version(&answer)),
        (stored.value.clone(), stored.version),
        "GET {key}: value and version"
    );
    let revision: u64 = answer
        .header("kvs-revision")
        .and_then(|v| v.parse().ok())
        .expect("Kvs-Revision");
    assert!(
        revision >= stored.version,
        "GET {key}: Kvs-Revision {revision} below its version {}",
        stored.version
    );
}

fn assert_absent(client: &Client, project: &str, key: &str) {
    let answer = client.get(&kv(project, key));
    assert_eq!(
        (answer.status, answer.code()),
        (404, "key_not_found".to_owned()),
        "GET {key}, deleted: {}",
        answer.text()
    );
}

/// One key of a listing page.
#[derive(Debug)]
struct Listed {
    key: String,
    value: String,
    version: u64,
}

/// One page of a listing.
struct Page {
    keys: Vec<Listed>,
    revision: u64,
}

/// Every key under `prefix`, with its value, page by page of `limit` keys.
/// Asserts that every page answers `200` with text values, and that keys
/// come in strictly ascending byte order over all pages, so each once.
fn list_all(client: &Client, project: &str, prefix: &str, limit: usize) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    let mut previous: Option<String> = None;
    loop {
        let mut path = format!(
            "/v1/projects/{project}/kv?values=true&limit={limit}&prefix={}",
            utf8_percent_encode(prefix, NON_ALPHANUMERIC)
        );
        if let Some(cursor) = &cursor {
            path.push_str(&format!(
                "&cursor={}",
                utf8_percent_encode(cursor, NON_ALPHANUMERIC)
            ));
        }
        let answer = client.get(&path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        let body = answer.json();
        let mut keys = Vec::new();
        for entry in body["keys"].as_array().expect("keys") {
            assert_eq!(entry["encoding"], "utf8", "{entry}");
            let key = entry["key"].as_str().unwrap().to_owned();
            if let Some(previous) = &previous {
                assert!(
                    key > *previous,
                    "the listing of {prefix:?} gives {key:?} after {previous:?}"
                );
            }
            previous = Some(key.clone());
            keys.push(Listed {
                key,
                value: entry["value"].as_str().expect("a value").to_owned(),
                version: entry["version"].as_u64().expect("a version"),
            });
        }
        pages.push(Page {
            keys,
            revision: body["revision"].as_u64().expect("a revision"),
        });
        match body["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return pages,
        }
    }
}

/// Asserts that the pages hold exactly `expected`, values and versions.
fn assert_listing_is(pages: &[Page], expected: &BTreeMap<String, Stored>, what: &str) {
    let listed: BTreeMap<String, Stored> = pages
        .iter()
        .flat_map(|page| &page.keys)
        .map(|k| (k.key.clone(), stored(&k.value, k.version)))
        .collect();
    assert_same_keys(&listed, expected, &format!("{what}: the listing"));
}

/// Asserts that `found` is `expected`, naming the first few differences.
fn assert_same_keys(
    found: &BTreeMap<String, Stored>,
    expected: &BTreeMap<String, Stored>,
    what: &str,
) {
    if found == expected {
        return;
    }
    let mut differences = Vec::new();
    for (key, stored) in expected {
        match found.get(key) {
            Some(got) if got == stored => {}
            got => differences.push(format!("{key}: {got:?}, expected {stored:?}")),
        }
    }
    for (key, got) in found {
        if !expected.contains_key(key) {
            differences.push(format!("{key}: {got:?}, expected absent"));
        }
    }
    panic!(
        "{what}: {} keys differ of {} expected; first ones: {:#?}",
        differences.len(),
        expected.len(),
        &differences[..differences.len().min(5)]
    );
}

/// The changes that acknowledged single PUTs make, in revision order.
fn changes_of(acked: &BTreeMap<String, Stored>) -> Vec<Change> {
    let mut changes: Vec<Change> = acked
        .iter()
        .map(|(key, stored)| Change {
            revision: stored.version,
            key: key.clone(),
            kind: "put".to_owned(),
        })
        .collect();
    changes.sort();
    changes
}

/// Asserts that a watch delivered exactly `expected`, in that order.
fn assert_same_changes(seen: &[Change], expected: &[Change], what: &str) {
    if seen == expected {
        return;
    }
    let at = seen
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(seen.len().min(expected.len()));
    panic!(
        "{what}: {} changes, {} expected; first difference at {at}: saw {:?}, expected {:?}",
        seen.len(),
        expected.len(),
        &seen[at.min(seen.len())..(at + 3).min(seen.len())],
        &expected[at.min(expected.len())..(at + 3).min(expected.len())],
    );
}

/// One change a watch delivered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    revision: u64,
    key: String,
    /// `put` or `delete`.
    kind: String,
}

/// A watch stream on a plain socket. The request is HTTP/1.0, so the body
/// is the event stream itself, without chunks.
struct Watch {
    reader: BufReader<TcpStream>,
    /// What the stream is, for messages.
    path: String,
}

/// One server-sent event.
struct Event {
    name: String,
    id: Option<String>,
    data: String,
}

impl Watch {
    /// Opens `/v1/projects/{project}/watch?{query}` and reads the answer's
    /// head, which must be a `200`.
    fn open(url: &str, token: &str, project: &str, query: &str) -> Watch {
        let address = url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).unwrap();
        // A generous bound, so that a stream that stops fails the test.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let path = format!("/v1/projects/{project}/watch?{query}");
        let request = format!("GET {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut watch = Watch { reader, path };
        if !status.contains(" 200 ") {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut watch.reader, &mut rest);
            panic!("GET {}: {status}{rest}", watch.path);
        }
        while !watch.line().is_empty() {}
        watch
    }

    /// The next line, without its line break; panics at the end of the
    /// stream or after 30 s without one.
    fn line(&mut self) -> String {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.path));
        assert!(read > 0, "{} ended", self.path);
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    /// The next event (comments and `retry:` skipped).
    fn event(&mut self) -> Event {
        let mut event = Event {
            name: "message".to_owned(),
            id: None,
            data: String::new(),
        };
        let (mut lines, mut data_lines) = (0, 0);
        loop {
            let line = self.line();
            if line.is_empty() {
                if lines > 0 {
                    return event;
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.name = value.to_owned(),
                "id" => event.id = Some(value.to_owned()),
                "data" => {
                    if data_lines > 0 {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    data_lines += 1;
                }
                _ => continue,
            }
            lines += 1;
        }
    }

    /// The change of a `put` or `delete` event, and whether it carried an id
    /// (the last event of its revision does); panics on any other event.
    fn change(&self, event: &Event) -> (Change, bool) {
        assert!(
            matches!(event.name.as_str(), "put" | "delete"),
            "{}: event {} {}",
            self.path,
            event.name,
            event.data
        );
        let data: Value = serde_json::from_str(&event.data).unwrap();
        let revision = data["revision"].as_u64().expect("a revision");
        if let Some(id) = &event.id {
            assert_eq!(*id, revision.to_string(), "{}: {}", self.path, event.data);
        }
        let change = Change {
            revision,
            key: data["key"].as_str().expect("a key").to_owned(),
            kind: event.name.clone(),
        };
        (change, event.id.is_some())
    }

    /// The changes up to the `sync` event, and its revision.
    fn until_sync(&mut self) -> (Vec<Change>, u64) {
        let mut changes = Vec::new();
        loop {
            let event = self.event();
            if event.name == "sync" {
                let data: Value = serde_json::from_str(&event.data).unwrap();
                return (changes, data["revision"].as_u64().expect("a revision"));
            }
            changes.push(self.change(&event).0);
        }
    }

    /// The changes up to the last one of `revision` (or of a later one).
    fn until(&mut self, revision: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        loop {
            let event = self.event();
            let (change, last_of_its_revision) = self.change(&event);
            let done = change.revision >= revision && last_of_its_revision;
            changes.push(change);
            if done {
                return changes;
            }
        }
    }
}
