//! Consistency under contention: many clients at once against one server.
//! Compare-and-set loops (GET + `If-Match` PUT) and `incr` must never lose
//! an update, and transactions that check versions must never create or
//! destroy value, while read-only transactions always see one revision.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{Answer, Client, Rng, TestServer, kv};
use serde_json::{Value, json};

/// What one client thread saw: every status it got, the 5xx answers in
/// full, how often it retried and the values its own writes produced.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    server_errors: Vec<String>,
    retries: u64,
    successes: u64,
    produced: Vec<i64>,
}

impl Tally {
    fn saw(&mut self, what: &str, answer: &Answer) {
        *self.statuses.entry(answer.status).or_default() += 1;
        if answer.status >= 500 {
            self.server_errors
                .push(format!("{what}: {} {}", answer.status, answer.text()));
        }
    }

    fn merge(&mut self, other: Tally) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.server_errors.extend(other.server_errors);
        self.retries += other.retries;
        self.successes += other.successes;
        self.produced.extend(other.produced);
    }

    fn requests(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn assert_no_server_errors(&self, group: &str) {
        assert!(
            self.server_errors.is_empty(),
            "{group}: {} answers were 5xx (statuses {:?}); first ones: {:#?}",
            self.server_errors.len(),
            self.statuses,
            &self.server_errors[..self.server_errors.len().min(5)]
        );
    }
}

/// The integer a txn `get` result holds (a JSON number or decimal text).
fn integer_of(result: &Value) -> i64 {
    match &result["value"] {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("not an integer: {result}")),
        _ => panic!("no integer value in {result}"),
    }
}

fn raw_integer(answer: &Answer) -> i64 {
    answer
        .text()
        .parse()
        .unwrap_or_else(|_| panic!("not an integer: {:?}", answer.text()))
}

/// Gives up on a thread that makes no progress instead of hanging the run.
fn check_deadline(deadline: Instant, what: &str) {
    assert!(
        Instant::now() < deadline,
        "{what}: still retrying after the deadline"
    );
}

#[test]
fn thirty_two_cas_clients_and_thirty_two_incr_clients_count_exactly() {
    const THREADS: usize = 32;
    const PER_THREAD: i64 = 100;
    const TOTAL: i64 = THREADS as i64 * PER_THREAD;

    let server = TestServer::start();
    let admin = server.admin();
    let manage = admin.with_token(&admin.create_project("counters", json!({"storage": "disk"})));
    let (a, b) = (kv("counters", "a"), "/v1/projects/counters/incr/b?by=1");
    assert_eq!(manage.put(&a, b"0").status, 201);

    let deadline = Instant::now() + Duration::from_secs(55);
    let start = Arc::new(Barrier::new(2 * THREADS + 1));
    let mut cas_threads = Vec::new();
    let mut incr_threads = Vec::new();
    for _ in 0..THREADS {
        let (client, start, a) = (Client::clone(&manage), start.clone(), a.clone());
        cas_threads.push(thread::spawn(move || {
            let mut tally = Tally::default();
            start.wait();
            for _ in 0..PER_THREAD {
                loop {
                    check_deadline(deadline, "CAS increment");
                    let current = client.get(&a);
                    tally.saw("GET a", &current);
                    if current.status != 200 {
                        assert!(current.status >= 500, "GET a: {current:?}");
                        continue;
                    }
                    let etag = current.header("etag").expect("ETag on GET").to_owned();
                    let next = raw_integer(&current) + 1;
                    let put = client.send(
                        "PUT",
                        &a,
                        Some(next.to_string().as_bytes()),
                        &[("If-Match", &etag)],
                    );
                    tally.saw("PUT a If-Match", &put);
                    match put.status {
                        200 => {
                            tally.successes += 1;
                            tally.produced.push(next);
                            break;
                        }
                        412 => {
                            assert_eq!(put.code(), "precondition_failed");
                            assert!(
                                put.header("etag").is_some_and(|e| e != etag),
                                "a 412 carries the current, different ETag: {put:?}"
                            );
                            tally.retries += 1;
                        }
                        s if s >= 500 => tally.retries += 1,
                        _ => panic!("PUT a If-Match {etag}: {} {}", put.status, put.text()),
                    }
                }
            }
            tally
        }));
    }
    for _ in 0..THREADS {
        let (client, start) = (Client::clone(&manage), start.clone());
        incr_threads.push(thread::spawn(move || {
            let mut tally = Tally::default();
            start.wait();
            for _ in 0..PER_THREAD {
                check_deadline(deadline, "incr");
                let answer = client.send("POST", b, None, &[]);
                tally.saw("POST incr b", &answer);
                match answer.status {
                    200 => {
                        let body = answer.json();
                        assert_eq!(body["key"], "b", "{body}");
                        tally.successes += 1;
                        tally.produced.push(body["value"].as_i64().unwrap());
                    }
                    // A 5xx may or may not have applied: not retried, so that
                    // the count stays meaningful; it fails the test anyway.
                    s if s >= 500 => {}
                    _ => panic!("POST incr b: {} {}", answer.status, answer.text()),
                }
            }
            tally
        }));
    }
    let began = Instant::now();
    start.wait();
    let mut cas = Tally::default();
    for handle in cas_threads {
        cas.merge(handle.join().unwrap());
    }
    let cas_seconds = began.elapsed().as_secs_f64();
    let mut incr = Tally::default();
    for handle in incr_threads {
        incr.merge(handle.join().unwrap());
    }
    let seconds = began.elapsed().as_secs_f64();

    let final_a = manage.get(&a);
    let final_b = manage.get(&kv("counters", "b"));
    println!(
        "counters: {seconds:.2} s in all; CAS: {} increments, {} requests, {} retries (412), \
         done after {cas_seconds:.2} s, statuses {:?}; incr: {} increments, {} requests, \
         statuses {:?}; a = {}, b = {}",
        cas.successes,
        cas.requests(),
        cas.retries,
        cas.statuses,
        incr.successes,
        incr.requests(),
        incr.statuses,
        final_a.text(),
        final_b.text(),
    );
    cas.assert_no_server_errors("CAS clients");
    incr.assert_no_server_errors("incr clients");
    assert_eq!(final_a.status, 200);
    assert_eq!(final_b.status, 200);
    assert_eq!(raw_integer(&final_a), TOTAL, "lost CAS updates");
    assert_eq!(raw_integer(&final_b), TOTAL, "lost increments");
    // Every successful write produced a distinct value: 1..=TOTAL, each once.
    for (name, mut tally) in [("CAS", cas), ("incr", incr)] {
        tally.produced.sort_unstable();
        let expected: Vec<i64> = (1..=TOTAL).collect();
        assert!(
            tally.produced == expected,
            "{name}: the values acknowledged are not exactly 1..={TOTAL} \
             ({} values, first duplicates: {:?})",
            tally.produced.len(),
            tally
                .produced
                .windows(2)
                .filter(|w| w[0] == w[1])
                .take(5)
                .collect::<Vec<_>>()
        );
    }
}

const ACCOUNTS: usize = 10;
const TOTAL_MONEY: i64 = 1000;

fn account(i: usize) -> String {
    format!("account/{i}")
}

/// A read-only transaction of `get`s: (revision, [(value, version)]).
fn read_accounts(
    client: &Client,
    keys: &[usize],
    tally: &mut Tally,
) -> Option<(u64, Vec<(i64, u64)>)> {
    let ops: Vec<Value> = keys
        .iter()
        .map(|&i| json!({"op": "get", "key": account(i)}))
        .collect();
    let answer = client.post_json("/v1/projects/bank/txn", &json!({"ops": ops}));
    tally.saw("read-only txn", &answer);
    if answer.status >= 500 {
        return None;
    }
    assert_eq!(answer.status, 200, "read-only txn: {}", answer.text());
    let body = answer.json();
    let revision = body["revision"].as_u64().expect("a revision");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), keys.len(), "{body}");
    let accounts = results
        .iter()
        .zip(keys)
        .map(|(result, &i)| {
            assert_eq!(result["key"], account(i).as_str(), "{body}");
            let version = result["version"].as_u64().expect("a version");
            assert!(
                version <= revision,
                "a key at version {version} read at revision {revision}: {body}"
            );
            (integer_of(result), version)
        })
        .collect();
    Some((revision, accounts))
}

#[test]
fn concurrent_transfers_never_change_the_total() {
    const TRANSFERRERS: usize = 16;
    const TRANSFERS_PER_THREAD: u64 = 100;

    let server = TestServer::start();
    let admin = server.admin();
    let manage = admin.create_project("bank", json!({"storage": "disk"}));
    let writer = admin.with_token(
        &admin
            .with_token(&manage)
            .mint("bank", json!({"role": "write"})),
    );
    let reader = admin.with_token(
        &admin
            .with_token(&manage)
            .mint("bank", json!({"role": "read"})),
    );

    let opening: Vec<Value> = (0..ACCOUNTS)
        .map(|i| json!({"op": "put", "key": account(i), "value": TOTAL_MONEY / ACCOUNTS as i64}))
        .collect();
    let answer = writer.post_json("/v1/projects/bank/txn", &json!({"ops": opening}));
    assert_eq!(
        answer.status,
        200,
        "opening the accounts: {}",
        answer.text()
    );

    let opened_at = answer.json()["revision"].as_u64().expect("a revision");
    let deadline = Instant::now() + Duration::from_secs(55);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(TRANSFERRERS + 2));
    let all: Vec<usize> = (0..ACCOUNTS).collect();

    let watcher = {
        let (client, stop, start, all) = (reader.clone(), stop.clone(), start.clone(), all.clone());
        thread::spawn(move || {
            let mut tally = Tally::default();
            let mut wrong_sums = Vec::new();
            let mut last_revision = 0;
            start.wait();
            loop {
                // One more read after the transfers have stopped.
                let last_round = stop.load(Ordering::SeqCst);
                if let Some((revision, accounts)) = read_accounts(&client, &all, &mut tally) {
                    let sum: i64 = accounts.iter().map(|(value, _)| value).sum();
                    if sum != TOTAL_MONEY {
                        wrong_sums.push(format!("revision {revision}: {accounts:?} sum {sum}"));
                    }
                    assert!(
                        revision >= last_revision,
                        "reads went back in time: revision {revision} after {last_revision}"
                    );
                    last_revision = revision;
                    tally.successes += 1;
                }
                if last_round {
                    break;
                }
            }
            (tally, wrong_sums)
        })
    };

    let mut transferrers = Vec::new();
    for _ in 0..TRANSFERRERS {
        let (client, start) = (writer.clone(), start.clone());
        transferrers.push(thread::spawn(move || {
            let mut rng = Rng::new();
            let mut tally = Tally::default();
            start.wait();
            while tally.successes < TRANSFERS_PER_THREAD {
                check_deadline(deadline, "transfer");
                let from = rng.below(ACCOUNTS as u64) as usize;
                let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                let Some((_, seen)) = read_accounts(&client, &[from, to], &mut tally) else {
                    continue;
                };
                let [(from_value, from_version), (to_value, to_version)] = seen[..] else {
                    unreachable!()
                };
                if from_value <= 0 {
                    continue;
                }
                let amount = 1 + rng.below(from_value.min(50) as u64) as i64;
                let body = json!({
                    "checks": [
                        {"key": account(from), "version": from_version},
                        {"key": account(to), "version": to_version},
                    ],
                    "ops": [
                        {"op": "put", "key": account(from), "value": from_value - amount},
                        {"op": "put", "key": account(to), "value": to_value + amount},
                    ],
                });
                let answer = client.post_json("/v1/projects/bank/txn", &body);
                tally.saw("transfer txn", &answer);
                match answer.status {
                    200 => {
                        let body = answer.json();
                        let revision = body["revision"].as_u64().expect("a revision");
                        for result in body["results"].as_array().expect("results") {
                            assert_eq!(result["version"], revision, "{body}");
                        }
                        assert!(revision > from_version.max(to_version), "{body}");
                        tally.successes += 1;
                    }
                    412 => {
                        let body = answer.json();
                        assert_eq!(body["error"]["code"], "precondition_failed", "{body}");
                        let failed = body["failed_checks"].as_array().expect("failed_checks");
                        assert!(
                            !failed.is_empty() && failed.iter().all(|i| i == 0 || i == 1),
                            "{body}"
                        );
                        tally.retries += 1;
                    }
                    // Not known whether it applied; the sums will tell.
                    s if s >= 500 => {}
                    _ => panic!("transfer: {} {}", answer.status, answer.text()),
                }
            }
            tally
        }));
    }

    let began = Instant::now();
    start.wait();
    let mut transfers = Tally::default();
    let mut panicked = None;
    for handle in transferrers {
        match handle.join() {
            Ok(tally) => transfers.merge(tally),
            Err(e) => panicked = Some(e),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, wrong_sums) = watcher.join().unwrap();
    if let Some(e) = panicked {
        std::panic::resume_unwind(e);
    }
    let seconds = began.elapsed().as_secs_f64();

    let mut last = Tally::default();
    let (revision, accounts) =
        read_accounts(&reader, &all, &mut last).expect("a final read of all accounts");
    let balances: Vec<i64> = accounts.iter().map(|(value, _)| *value).collect();
    let sum: i64 = balances.iter().sum();
    println!(
        "transfers: {seconds:.2} s; {} transfers done, {} retries (412), {} requests, \
         statuses {:?}; reader: {} consistent reads of all {ACCOUNTS} accounts, {} wrong sums, \
         statuses {:?}; final balances {balances:?} (sum {sum}) at revision {revision}",
        transfers.successes,
        transfers.retries,
        transfers.requests(),
        transfers.statuses,
        reads.successes,
        wrong_sums.len(),
        reads.statuses,
    );
    transfers.assert_no_server_errors("transferrers");
    reads.assert_no_server_errors("reader");
    assert!(
        wrong_sums.is_empty(),
        "{} reads saw a total other than {TOTAL_MONEY}; first ones: {:#?}",
        wrong_sums.len(),
        &wrong_sums[..wrong_sums.len().min(5)]
    );
    assert_eq!(sum, TOTAL_MONEY, "final balances {balances:?}");
    assert!(transfers.successes > 0, "no transfer succeeded");
    // Only the transfers wrote: refused (412) and read-only transactions
    // take no revision.
    assert_eq!(
        revision,
        opened_at + transfers.successes,
        "revisions taken besides the {} transfers",
        transfers.successes
    );
    assert!(reads.successes > 0, "the reader never read");
}
