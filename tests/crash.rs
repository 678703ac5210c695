//! The crash test: many writers, a SIGKILL at a random moment, a restart on
//! the same data, and a check of every key ever written.
//!
//! The contract acknowledges a write to a `disk` project only once it is on
//! stable storage, so after a kill every acknowledged write must be there,
//! byte for byte, and a request that was in flight at the kill may have
//! landed or not, but nothing else may be found. The cycle runs several
//! times on one data directory, so each restart also opens a database that
//! earlier kills left behind; the last cycle stops the server with SIGTERM
//! instead, which must lose nothing either.
//!
//! Each writer thread owns the record of its own keys (the last acknowledged
//! state and version of each, and its one request in flight), so the model
//! needs no locks; values are regenerated from (thread, sequence) when they
//! are checked. The choices (kill delays, operations) come from one seed,
//! printed at the start; `KVS_CRASH_SEED=<n>` repeats them (timing still
//! varies from run to run).
//!
//! Some of a writer's requests are transactions (`POST …/txn`) of 2–5 puts
//! and deletes of its own keys, all at the transaction's one revision. They
//! are checked as units: after a restart each acknowledged transaction must
//! be wholly there (but for what later acknowledged writes of the same
//! thread replaced), and one in flight at the kill must be wholly there or
//! wholly absent — never partly — with all its puts at one version.
//!
//! After each restart, the project's change log, replayed by a watch from
//! revision 0, must end in exactly the state the reads found: the log is
//! written in the same commit as the keys.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Client, ServerProcess, fake_secret, kv};
use serde_json::{Value, json};

/// The project every writer writes in.
const PROJECT: &str = "crash";
/// Concurrent writer threads.
const WRITERS: usize = 16;
/// Cycles that end with SIGKILL; one more ends with SIGTERM.
const KILL_CYCLES: usize = 6;
/// The kill comes this long after the writers start, in milliseconds.
const DELAY_MS: std::ops::RangeInclusive<u64> = 200..=1500;
/// Failures kept per writer, so that a broken server does not flood the report.
const MAX_FAILURES: usize = 40;
/// Percentage of a writer's requests that are transactions.
const TXN_PERCENT: u64 = 20;
/// Writes (puts and deletes, of distinct keys) in one transaction.
const TXN_WRITES: std::ops::RangeInclusive<u64> = 2..=5;
/// The content type a transaction's JSON string value is stored with.
const TEXT: &str = "text/plain; charset=utf-8";

/// After every restart the whole change history is replayed by a watch
/// from 0, so the server keeps more history than the writers can make.
/// The defaults (256 MiB and 100,000 changes a project) were passed on a
/// faster machine: 58,000 changes of values averaging about 4 KiB in six
/// cycles, then the seventh; the server trimmed its history, as it should,
/// and the watch from 0 was `410`.
fn server_args() -> Vec<String> {
    let bytes = (16_u64 << 30).to_string();
    [
        "--watch-history-bytes",
        bytes.as_str(),
        "--watch-history-total-bytes",
        bytes.as_str(),
        "--watch-history-changes",
        "100000000",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn every_acknowledged_write_survives_sigkill_and_nothing_is_corrupted() {
    let seed = seed();
    println!("crash test: seed {seed} (KVS_CRASH_SEED={seed} repeats the choices)");
    let started = Instant::now();
    let mut choices = Rng::new(seed);
    let (dir, data_dir, admin_token, mut server, secret) = start_on_a_new_data_dir("kvs-crash-");
    let mut writers: Vec<Writer> = (0..WRITERS).map(|id| Writer::new(id, seed)).collect();
    // Every version seen so far; a write after a restart must go above it.
    let mut floor = 0;

    for cycle in 1..=KILL_CYCLES + 1 {
        let graceful = cycle > KILL_CYCLES;
        let delay = Duration::from_millis(choices.within(DELAY_MS));
        let mut failures = Vec::new();

        let stop = run_writers(&mut server, &secret, &mut writers, floor, delay, graceful);
        if graceful && stop.exit_code != Some(0) {
            failures.push(format!(
                "SIGTERM: the server exited with {:?}, not 0",
                stop.exit_code
            ));
        }
        let acked: u64 = writers.iter().map(|w| w.acked_puts + w.acked_deletes).sum();
        let deletes: u64 = writers.iter().map(|w| w.acked_deletes).sum();
        let in_flight = writers.iter().filter(|w| w.in_flight.is_some()).count();
        let txns: u64 = writers.iter().map(|w| w.acked_txns.len() as u64).sum();
        let txn_writes: usize = writers
            .iter()
            .flat_map(|w| &w.acked_txns)
            .map(|t| t.writes.len())
            .sum();
        let txns_in_flight = writers
            .iter()
            .filter(|w| w.in_flight.as_ref().is_some_and(|f| f.txn.is_some()))
            .count();
        if acked == 0 {
            failures.push("no write was acknowledged in this cycle".to_owned());
        }
        if txns == 0 {
            failures.push("no transaction was acknowledged in this cycle".to_owned());
        }

        if !graceful && needs_full_repair(&data_dir) {
            failures.push(
                "the database left by the kill needs redb's full repair (a walk of every page) \
                 to open: its last durable commit recorded no allocator state"
                    .to_owned(),
            );
        }
        let restarting = Instant::now();
        server = ServerProcess::start_with(&data_dir, &admin_token, true, &server_args());
        let ready_in = restarting.elapsed();

        let verified = verify_all(&server, &secret, &mut writers);
        let listing = check_listing(&server, &secret, &writers, &verified);
        failures.extend(listing.failures);
        let log = check_change_log(&server, &secret, &verified.present);
        failures.extend(log.failures);
        floor = writers.iter().map(|w| w.last_version).max().unwrap_or(0);
        let project = server.admin().get(&format!("/v1/projects/{PROJECT}"));
        let revision = project.json()["revision"].as_u64().unwrap_or(0);
        if revision < floor {
            failures.push(format!(
                "the project's revision {revision} is below version {floor}, which was seen"
            ));
        }

        println!(
            "cycle {cycle} ({how} after {delay:?}): {acked} writes acknowledged ({deletes} \
             deletes), {txns} txns acknowledged ({txn_writes} writes; {txns_whole} wholly \
             present, {txns_superseded} partly superseded by later writes), {in_flight} in \
             flight at the {event} ({landed} landed; {txns_in_flight} of them txns: \
             {txns_landed} wholly present, {txns_absent} wholly absent); ready again in \
             {ready_in:.0?}; verified {keys} keys ({present} present), listing {listed}, keys \
             figure {figure}, change log {events} events; versions up to {floor}",
            events = log.events,
            how = if graceful { "SIGTERM" } else { "SIGKILL" },
            event = if graceful { "stop" } else { "kill" },
            landed = verified.landed,
            txns_whole = verified.txns_whole,
            txns_superseded = verified.txns_superseded,
            txns_landed = verified.txns_landed,
            txns_absent = verified.txns_absent,
            keys = verified.keys,
            present = verified.present.len(),
            listed = listing.listed,
            figure = listing
                .figure
                .map_or("missing".to_owned(), |n| n.to_string()),
        );

        let mut count = failures.len();
        for writer in &mut writers {
            failures.append(&mut writer.failures);
            count += std::mem::take(&mut writer.failure_count);
            writer.acked_puts = 0;
            writer.acked_deletes = 0;
        }
        if !failures.is_empty() {
            let kept = dir.keep();
            for failure in &failures {
                eprintln!("cycle {cycle}: {failure}");
            }
            panic!(
                "cycle {cycle} (seed {seed}): {count} failures ({} shown above), first: {}; \
                 data and server log kept in {}",
                failures.len(),
                failures[0],
                kept.display()
            );
        }
    }
    println!(
        "crash test passed: {} cycles, {} keys, {} txns sent, in {:.1?}",
        KILL_CYCLES + 1,
        writers.iter().map(|w| w.keys.len()).sum::<usize>(),
        writers.iter().map(|w| w.next_txn).sum::<u64>(),
        started.elapsed()
    );
}

/// Whether opening the disk database a kill left needs redb's full repair,
/// which walks every page (seconds at 10,000,000 keys). The engine's durable
/// commits record redb's allocator state (quick repair) so that it does not.
/// Checked on a copy, whose open is aborted if the repair starts.
fn needs_full_repair(data_dir: &std::path::Path) -> bool {
    let copy = tempfile::tempdir().unwrap();
    let path = copy.path().join("kvs.redb");
    std::fs::copy(data_dir.join("kvs.redb"), &path).unwrap();
    let repaired = std::sync::Arc::new(AtomicBool::new(false));
    let seen = repaired.clone();
    let opened = redb::Database::builder()
        .set_repair_callback(move |session| {
            seen.store(true, Ordering::SeqCst);
            session.abort();
        })
        .open(&path);
    drop(opened);
    repaired.load(Ordering::SeqCst)
}

/// The write-ahead log holds the writes since the last durable commit of the
/// database whose sync is done, in two halves of 16 MiB: once a half holds
/// 4 MiB, the log goes on at the beginning of the other, over its old
/// records, if a durable commit made every 100 ms to 1 s (whose sync is not waited
/// for) has covered them by then; if not, or when writes stop, a waited
/// durable commit starts the log again in its half. A batch that does not
/// fit in an empty half commits durably.
/// Writes of 64 KiB values one after another, then one of 17 MiB (more
/// than the log holds), with a SIGKILL after each round: every
/// acknowledged value must read back byte for byte.
#[test]
fn acknowledged_writes_survive_sigkill_when_the_log_has_started_again() {
    let (_dir, _, _, mut server, secret) = start_on_a_new_data_dir("kvs-crash-wal-");
    let mut written = BTreeMap::new();
    let admin = server.admin();
    let larger = json!({"max_value_bytes": 20_000_000});
    let patched = admin.patch_json(&format!("/v1/projects/{PROJECT}"), &larger);
    assert_eq!(patched.status, 200, "{}", patched.text());
    let huge: Vec<u8> = (0..17 << 20).map(|i: usize| (i % 251) as u8).collect();
    for (round, writes) in [300usize, 420, 90].into_iter().enumerate() {
        let client = Client::new(&server.url, Some(&secret));
        for n in 0..writes {
            put_large(&client, "big", (n * 7 + round) % 500, round, &mut written);
        }
        let answer = client.put(&kv(PROJECT, "huge"), &huge);
        assert!(matches!(answer.status, 200 | 201), "{}", answer.text());
        server.kill_and_restart();
        let client = Client::new(&server.url, Some(&secret));
        assert!(
            client.get(&kv(PROJECT, "huge")).body == huge,
            "huge after kill {}",
            round + 1
        );
        check_large(&client, "big", &written, round + 1);
    }
}

/// Writes of 64 KiB values one after another, killed one write after the
/// log went on into its other half (a half takes 4 MiB: 63 such records,
/// of a little over 64 KiB each, and the 64th goes into the other half;
/// every round begins at a half's beginning, since the quiet server
/// between rounds makes a waited checkpoint): the writes after the last
/// durable commit whose sync was done are then in both halves, and a start
/// must store again those of the half the log left, then those of the one
/// it is in. Every other round writes 128 values: the log goes on into the
/// other half (the 64th), then back into the first (the 127th), which it
/// may do only once a durable commit covering that half is synced (the
/// 64th's: a batch that switches is a deferred checkpoint). The server's
/// log says how many writes each start found in the half the log had left:
/// at least one kill of each kind must have had some. A kill misses when
/// the switching batch's own checkpoint was synced before it (more often on
/// a loaded machine: 1 to 4 of 4 of a kind were seen with 8 rounds, while
/// CI ran beside them), hence 6 rounds of each kind.
#[test]
fn acknowledged_writes_survive_sigkill_when_the_log_spans_both_halves() {
    let (_dir, _, _, mut server, secret) = start_on_a_new_data_dir("kvs-crash-halves-");
    let mut written = BTreeMap::new();
    let mut spanned = [0, 0];
    let starts_that_spanned = |server: &ServerProcess| {
        std::fs::read_to_string(&server.log)
            .unwrap()
            .lines()
            .filter(|line| line.contains("the last stop was not clean"))
            .filter(|line| !line.contains("(0 of them in the half it had left)"))
            .count()
    };
    let mut key = 0;
    for round in 0..12 {
        let client = Client::new(&server.url, Some(&secret));
        let writes = [65, 128][round % 2];
        for _ in 0..writes {
            put_large(&client, "half", key, round, &mut written);
            key += 1;
        }
        let before = starts_that_spanned(&server);
        server.kill_and_restart();
        spanned[round % 2] += starts_that_spanned(&server) - before;
        let client = Client::new(&server.url, Some(&secret));
        check_large(&client, "half", &written, round + 1);
        // Quiet for the waited checkpoint (after 200 ms without writes).
        std::thread::sleep(Duration::from_millis(600));
    }
    eprintln!(
        "starts that stored again writes of the half the log had left: {} of 6 after one \
         switch, {} of 6 after two",
        spanned[0], spanned[1]
    );
    assert!(
        spanned.iter().all(|n| *n >= 1),
        "a kind of kill never found writes in the half the log had left: not tested"
    );
}

/// A 64 KiB value, different for each key and round.
fn large_value(key: usize, round: usize) -> Vec<u8> {
    (0..64 * 1024)
        .map(|i| (i * 31 + key * 7 + round * 13) as u8)
        .collect()
}

/// Each key written by [`put_large`]: the round of its value, its version.
type LargeWritten = BTreeMap<usize, (usize, u64)>;

/// Writes `key`'s value of `round` at `prefix/NNN` in [`PROJECT`], and
/// notes its version.
fn put_large(client: &Client, prefix: &str, key: usize, round: usize, written: &mut LargeWritten) {
    let path = kv(PROJECT, &format!("{prefix}/{key:03}"));
    let answer = client.put(&path, &large_value(key, round));
    assert!(matches!(answer.status, 200 | 201), "{}", answer.text());
    let version = answer.json()["version"].as_u64().unwrap();
    written.insert(key, (round, version));
}

/// Every value [`put_large`] wrote reads back after `kill`, at its
/// version, byte for byte.
fn check_large(client: &Client, prefix: &str, written: &LargeWritten, kill: usize) {
    for (key, (round, version)) in written {
        let answer = client.get(&kv(PROJECT, &format!("{prefix}/{key:03}")));
        assert_eq!(answer.status, 200, "{prefix}/{key:03} after kill {kill}");
        assert_eq!(
            answer.header("kvs-version").and_then(|v| v.parse().ok()),
            Some(*version),
            "{prefix}/{key:03}"
        );
        assert!(
            answer.body == large_value(*key, *round),
            "{prefix}/{key:03}: the value differs after kill {kill}"
        );
    }
}

/// A server on a new data directory with the disk project [`PROJECT`]: the
/// directory (removed on drop), the data directory in it, the admin token,
/// the server, and a manage token of the project.
fn start_on_a_new_data_dir(
    prefix: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    String,
    ServerProcess,
    String,
) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let admin_token = fake_secret();
    let server = ServerProcess::start_with(&data_dir, &admin_token, true, &server_args());
    let secret = server
        .admin()
        .create_project(PROJECT, json!({"storage": "disk"}));
    (dir, data_dir, admin_token, server, secret)
}

struct Stop {
    /// The exit code after SIGTERM (none after SIGKILL).
    exit_code: Option<i32>,
}

/// Runs every writer against `server` until it is killed (or, when
/// `graceful`, stopped with SIGTERM) after `delay`.
fn run_writers(
    server: &mut ServerProcess,
    secret: &str,
    writers: &mut [Writer],
    floor: u64,
    delay: Duration,
    graceful: bool,
) -> Stop {
    let signals = Signals::default();
    let url = server.url.clone();
    thread::scope(|scope| {
        for writer in writers.iter_mut() {
            let client = Client::new(&url, Some(secret));
            let signals = &signals;
            writer.last_version = writer.last_version.max(floor);
            scope.spawn(move || writer.write_until_down(&client, signals));
        }
        // The kill point itself is what is being chosen: nothing to wait for.
        thread::sleep(delay);
        signals.stopping.store(true, Ordering::SeqCst);
        let exit_code = if graceful {
            signals.terminating.store(true, Ordering::SeqCst);
            server.terminate()
        } else {
            server.kill();
            None
        };
        signals.gone.store(true, Ordering::SeqCst);
        Stop { exit_code }
    })
}

/// What the main thread tells the writers about the server's end.
#[derive(Default)]
struct Signals {
    /// Set just before the signal: from now on, transport errors are expected.
    stopping: AtomicBool,
    /// Set just before a SIGTERM: from now on, 503 is an acceptable answer.
    terminating: AtomicBool,
    /// Set once the process has exited: a request begun later cannot reach it.
    gone: AtomicBool,
}

/// What a key holds, as far as a writer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    Absent,
    /// The value of the writer's write with this sequence number.
    Value(u64),
}

/// One key of a writer.
struct KeyRecord {
    /// The key itself.
    name: String,
    /// Its last acknowledged (or, after a restart, found) state.
    state: Stored,
    /// The version of that state (0 when absent).
    version: u64,
    /// Every write sequence ever sent for it, to name a stale value found.
    history: Vec<u64>,
    /// The transaction (writer, number) that set `state`, if one did.
    txn: Option<TxnId>,
}

/// A transaction: the writer's number and the transaction's number in it.
type TxnId = (usize, u64);

/// A request in flight when the server went down.
struct InFlight {
    /// The keys it writes (by index) and the state it asks for each.
    writes: Vec<(usize, Stored)>,
    /// Its number if it is a transaction.
    txn: Option<u64>,
}

/// A transaction acknowledged in this cycle.
struct AckedTxn {
    /// Its number in the writer.
    number: u64,
    /// The revision it was answered with.
    revision: u64,
    /// The keys it wrote (by index).
    writes: Vec<usize>,
}

/// A writer thread's own keys and its record of what it was told.
struct Writer {
    /// The thread's number, part of its keys and values.
    id: usize,
    /// Its choices of operations.
    rng: Rng,
    /// The sequence number of its next write (values derive from it).
    next_seq: u64,
    /// Its keys, in order of creation.
    keys: Vec<KeyRecord>,
    /// The highest version it was told or found; its next write must exceed it.
    last_version: u64,
    /// The request that got no answer when the server went down.
    in_flight: Option<InFlight>,
    /// The number of its next transaction.
    next_txn: u64,
    /// Transactions acknowledged in this cycle.
    acked_txns: Vec<AckedTxn>,
    /// What went wrong, for the report (the first [`MAX_FAILURES`]).
    failures: Vec<String>,
    /// How many things went wrong.
    failure_count: usize,
    /// PUTs acknowledged in this cycle.
    acked_puts: u64,
    /// DELETEs acknowledged in this cycle.
    acked_deletes: u64,
}

impl Writer {
    fn new(id: usize, seed: u64) -> Writer {
        Writer {
            id,
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            next_seq: 0,
            keys: Vec::new(),
            last_version: 0,
            in_flight: None,
            next_txn: 0,
            acked_txns: Vec::new(),
            failures: Vec::new(),
            failure_count: 0,
            acked_puts: 0,
            acked_deletes: 0,
        }
    }

    fn fail(&mut self, failure: String) {
        self.failure_count += 1;
        if self.failures.len() < MAX_FAILURES {
            self.failures.push(format!("writer {}: {failure}", self.id));
        }
    }

    /// A key of this writer in the given state, if a few tries find one.
    fn pick(&mut self, present: bool) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        (0..8)
            .map(|_| self.rng.below(self.keys.len() as u64) as usize)
            .find(|&i| (self.keys[i].state != Stored::Absent) == present)
    }

    /// A new key; a few carry spaces, a plus and non-ASCII letters.
    fn new_key(&mut self) -> usize {
        let n = self.keys.len();
        let name = if n % 7 == 3 {
            format!("w{:02}/{n:06} ä+ß", self.id)
        } else {
            format!("w{:02}/{n:06}", self.id)
        };
        self.keys.push(KeyRecord {
            name,
            state: Stored::Absent,
            version: 0,
            history: Vec::new(),
            txn: None,
        });
        n
    }

    /// The writes of a transaction: distinct keys, mostly new ones, some
    /// overwrites, deletes of present keys and re-creations of absent ones.
    fn plan_txn(&mut self) -> Vec<(usize, Stored)> {
        let count = self.rng.within(TXN_WRITES) as usize;
        let mut writes: Vec<(usize, Stored)> = Vec::with_capacity(count);
        while writes.len() < count {
            let roll = self.rng.below(100);
            let picked = match roll {
                0..25 => self.pick(true).map(|i| (i, true)),
                25..40 => self.pick(true).map(|i| (i, false)),
                40..50 => self.pick(false).map(|i| (i, true)),
                _ => None,
            }
            .filter(|&(i, _)| writes.iter().all(|&(j, _)| i != j));
            let (index, put) = picked.unwrap_or_else(|| (self.new_key(), true));
            let wanted = if put {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.keys[index].history.push(seq);
                Stored::Value(seq)
            } else {
                Stored::Absent
            };
            writes.push((index, wanted));
        }
        writes
    }

    /// The body of a transaction: text values go as JSON strings, the rest
    /// as base64 with their content type.
    fn txn_body(&self, writes: &[(usize, Stored)]) -> Vec<u8> {
        let ops: Vec<Value> = writes
            .iter()
            .map(|&(index, wanted)| {
                let key = &self.keys[index].name;
                match wanted {
                    Stored::Absent => json!({"op": "delete", "key": key}),
                    Stored::Value(seq) => {
                        let value = value_of(self.id, seq);
                        match value.content_type.as_deref() {
                            Some(TEXT) => json!({
                                "op": "put",
                                "key": key,
                                "value": String::from_utf8(value.bytes).unwrap(),
                            }),
                            Some(content_type) => json!({
                                "op": "put",
                                "key": key,
                                "value_base64": BASE64.encode(&value.bytes),
                                "content_type": content_type,
                            }),
                            None => json!({
                                "op": "put",
                                "key": key,
                                "value_base64": BASE64.encode(&value.bytes),
                            }),
                        }
                    }
                }
            })
            .collect();
        serde_json::to_vec(&json!({"ops": ops})).unwrap()
    }

    /// Writes until the server goes down: mostly new keys, some overwrites,
    /// some deletes and some re-creations of deleted keys.
    fn write_until_down(&mut self, client: &Client, signals: &Signals) {
        loop {
            if self.rng.below(100) < TXN_PERCENT {
                if self.txn_until_down(client, signals) {
                    continue;
                }
                return;
            }
            let roll = self.rng.below(100);
            let (index, wanted) = match roll {
                0..12 => match self.pick(true) {
                    Some(i) => (i, Stored::Value(self.next_seq)),
                    None => (self.new_key(), Stored::Value(self.next_seq)),
                },
                12..20 => match self.pick(true) {
                    Some(i) => (i, Stored::Absent),
                    None => (self.new_key(), Stored::Value(self.next_seq)),
                },
                20..23 => match self.pick(false) {
                    Some(i) => (i, Stored::Value(self.next_seq)),
                    None => (self.new_key(), Stored::Value(self.next_seq)),
                },
                _ => (self.new_key(), Stored::Value(self.next_seq)),
            };
            // A request begun after the server is gone cannot have reached it.
            let after_the_end = signals.gone.load(Ordering::SeqCst);
            let path = kv(PROJECT, &self.keys[index].name);
            let sent = match wanted {
                Stored::Value(seq) => {
                    self.next_seq += 1;
                    self.keys[index].history.push(seq);
                    let value = value_of(self.id, seq);
                    let headers: Vec<(&str, &str)> = match &value.content_type {
                        Some(content_type) => vec![("Content-Type", content_type.as_str())],
                        None => vec![],
                    };
                    client.request("PUT", &path, Some(&value.bytes), &headers)
                }
                Stored::Absent => client.request("DELETE", &path, None, &[]),
            };
            let answer = match sent {
                Ok(answer) => answer,
                Err(error) => {
                    if !signals.stopping.load(Ordering::SeqCst) {
                        self.fail(format!(
                            "{path}: transport error while the server was up: {error}"
                        ));
                    }
                    if !after_the_end {
                        self.in_flight = Some(InFlight {
                            writes: vec![(index, wanted)],
                            txn: None,
                        });
                    }
                    return;
                }
            };
            if answer.status == 503 && signals.terminating.load(Ordering::SeqCst) {
                // Refused during shutdown: counted as in flight, either way is fine.
                self.in_flight = Some(InFlight {
                    writes: vec![(index, wanted)],
                    txn: None,
                });
                return;
            }
            self.take_answer(index, wanted, &path, &answer);
        }
    }

    /// Sends one transaction; false once the server is down.
    fn txn_until_down(&mut self, client: &Client, signals: &Signals) -> bool {
        let writes = self.plan_txn();
        let number = self.next_txn;
        self.next_txn += 1;
        let after_the_end = signals.gone.load(Ordering::SeqCst);
        let path = format!("/v1/projects/{PROJECT}/txn");
        let body = self.txn_body(&writes);
        let sent = client.request(
            "POST",
            &path,
            Some(&body),
            &[("Content-Type", "application/json")],
        );
        let answer = match sent {
            Ok(answer) => answer,
            Err(error) => {
                if !signals.stopping.load(Ordering::SeqCst) {
                    self.fail(format!(
                        "txn {number}: transport error while the server was up: {error}"
                    ));
                }
                if !after_the_end {
                    self.in_flight = Some(InFlight {
                        writes,
                        txn: Some(number),
                    });
                }
                return false;
            }
        };
        if answer.status == 503 && signals.terminating.load(Ordering::SeqCst) {
            self.in_flight = Some(InFlight {
                writes,
                txn: Some(number),
            });
            return false;
        }
        self.take_txn_answer(number, &writes, &answer);
        true
    }

    /// Records the answer to a transaction: 200, one revision above every
    /// version seen, each put at that revision, each delete of a present key.
    fn take_txn_answer(
        &mut self,
        number: u64,
        writes: &[(usize, Stored)],
        answer: &common::Answer,
    ) {
        if answer.status != 200 {
            self.fail(format!(
                "txn {number} answered {} instead of 200: {}",
                answer.status,
                answer.text().chars().take(300).collect::<String>()
            ));
            return;
        }
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let revision = body["revision"].as_u64().unwrap_or(0);
        if revision <= self.last_version {
            self.fail(format!(
                "txn {number}: revision {revision} is not above {}, already seen",
                self.last_version
            ));
        }
        self.last_version = self.last_version.max(revision);
        let results = body["results"].as_array().cloned().unwrap_or_default();
        if results.len() != writes.len() {
            self.fail(format!(
                "txn {number}: {} results for {} ops",
                results.len(),
                writes.len()
            ));
        }
        for (&(index, wanted), result) in writes.iter().zip(&results) {
            let name = &self.keys[index].name;
            let problem = match wanted {
                Stored::Absent => (result["deleted"] != json!(true))
                    .then(|| format!("delete of present {name:?} answered {result}")),
                Stored::Value(_) => (result["version"].as_u64() != Some(revision))
                    .then(|| format!("put of {name:?} answered {result}, not version {revision}")),
            };
            if let Some(problem) = problem {
                self.fail(format!("txn {number}: {problem}"));
            }
        }
        for &(index, wanted) in writes {
            let key = &mut self.keys[index];
            key.state = wanted;
            key.version = if wanted == Stored::Absent {
                0
            } else {
                revision
            };
            key.txn = Some((self.id, number));
        }
        self.acked_txns.push(AckedTxn {
            number,
            revision,
            writes: writes.iter().map(|&(index, _)| index).collect(),
        });
    }

    /// Records an answer to a write, checking its status and version.
    fn take_answer(&mut self, index: usize, wanted: Stored, path: &str, answer: &common::Answer) {
        let was = self.keys[index].state;
        let expected = match (wanted, was) {
            (Stored::Absent, _) => 204,
            (Stored::Value(_), Stored::Absent) => 201,
            (Stored::Value(_), Stored::Value(_)) => 200,
        };
        if answer.status != expected {
            let method = if wanted == Stored::Absent {
                "DELETE"
            } else {
                "PUT"
            };
            self.fail(format!(
                "{method} {path} (key {was:?}) answered {} instead of {expected}: {}",
                answer.status,
                answer.text()
            ));
            if !matches!(answer.status, 200 | 201 | 204) {
                return;
            }
        }
        let version = match wanted {
            Stored::Absent => {
                self.acked_deletes += 1;
                0
            }
            Stored::Value(_) => {
                self.acked_puts += 1;
                let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
                let version = body["version"].as_u64().unwrap_or(0);
                if answer.header("etag") != Some(&format!("\"{version}\"")) {
                    self.fail(format!(
                        "PUT {path}: ETag {:?} does not match version {version}",
                        answer.header("etag")
                    ));
                }
                if version <= self.last_version {
                    self.fail(format!(
                        "PUT {path}: version {version} is not above {}, already seen",
                        self.last_version
                    ));
                }
                self.last_version = self.last_version.max(version);
                version
            }
        };
        let key = &mut self.keys[index];
        key.state = wanted;
        key.version = version;
        key.txn = None;
    }

    /// Reads back every key after a restart, checks it against the record
    /// (the in-flight request may or may not have landed) and takes what
    /// was found as the new record.
    fn verify(&mut self, client: &Client) -> Verified {
        let mut verified = Verified::default();
        let in_flight = self.in_flight.take();
        // An in-flight write was sent after every acknowledged one.
        let acked_up_to = self.last_version;
        // Which transaction set each key's acknowledged state, before the
        // read-back replaces the record.
        let owners: Vec<Option<TxnId>> = self.keys.iter().map(|k| k.txn).collect();
        // Keys whose read-back did not match the record.
        let mut broken = BTreeSet::new();
        // For each key of the in-flight request: Some(version) if it landed,
        // None if it kept its acknowledged state.
        let mut outcomes: Vec<(usize, Option<u64>)> = Vec::new();
        for index in 0..self.keys.len() {
            let flying = in_flight.as_ref().and_then(|f| {
                f.writes
                    .iter()
                    .find(|&&(i, _)| i == index)
                    .map(|&(_, wanted)| wanted)
            });
            let path = kv(PROJECT, &self.keys[index].name);
            let answer = match client.request("GET", &path, None, &[]) {
                Ok(answer) => answer,
                Err(error) => {
                    self.fail(format!("GET {path}: {error}"));
                    broken.insert(index);
                    continue;
                }
            };
            verified.keys += 1;
            let (id, key) = (self.id, &self.keys[index]);
            let found = match answer.status {
                404 => Found::Absent,
                200 => Found::Value {
                    content_type: answer.header("content-type").unwrap_or("").to_owned(),
                    version: answer
                        .header("kvs-version")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    bytes: answer.body,
                },
                status => {
                    let failure = format!("GET {path} answered {status}: {}", answer.text());
                    self.fail(failure);
                    broken.insert(index);
                    continue;
                }
            };
            let matches = |state: Stored, version: Option<u64>| match (&found, state) {
                (Found::Absent, Stored::Absent) => true,
                (Found::Value { version: v, .. }, Stored::Value(seq)) => {
                    found.holds(&value_of(id, seq))
                        && version.map_or(*v > acked_up_to, |expected| *v == expected)
                }
                _ => false,
            };
            let in_flight_txn = in_flight.as_ref().and_then(|f| f.txn).map(|n| (id, n));
            let (resolved, txn, failure) = if matches(key.state, Some(key.version)) {
                if flying.is_some() {
                    outcomes.push((index, None));
                }
                ((key.state, key.version), key.txn, None)
            } else if let Some(wanted) = flying.filter(|&w| matches(w, None)) {
                outcomes.push((index, Some(found.version())));
                ((wanted, found.version()), in_flight_txn, None)
            } else {
                let failure = format!(
                    "{path}: expected {} (acknowledged{}){}, found {}",
                    describe(id, key.state, key.version),
                    match key.txn {
                        Some((_, number)) => format!(", by txn {number}"),
                        None => String::new(),
                    },
                    match (flying, in_flight_txn) {
                        (Some(wanted), Some((_, number))) => format!(
                            " or {} (in flight, in txn {number})",
                            describe(id, wanted, 0)
                        ),
                        (Some(wanted), None) => {
                            format!(" or {} (in flight)", describe(id, wanted, 0))
                        }
                        (None, _) => String::new(),
                    },
                    found.describe(id, &key.history),
                );
                broken.insert(index);
                (
                    (found.stored(id, &key.history), found.version()),
                    None,
                    Some(failure),
                )
            };
            if let Some(failure) = failure {
                self.fail(failure);
            }
            let key = &mut self.keys[index];
            (key.state, key.version) = resolved;
            key.txn = txn;
            self.last_version = self.last_version.max(key.version);
            if key.state != Stored::Absent {
                verified.present.insert(key.name.clone(), key.version);
                if let Some(txn) = txn {
                    verified.txn_keys.insert(key.name.clone(), txn);
                }
            }
        }

        // The request in flight: a single write landed or not; a
        // transaction wholly, at one version, or not at all.
        if let Some(flight) = &in_flight {
            let landed: Vec<usize> = outcomes.iter().filter_map(|&(i, v)| v.map(|_| i)).collect();
            let kept: Vec<usize> = outcomes
                .iter()
                .filter_map(|&(i, v)| v.is_none().then_some(i))
                .collect();
            let whole = flight.writes.len();
            match flight.txn {
                None => verified.landed += landed.len(),
                Some(number) => {
                    let names = |indices: &[usize]| {
                        indices
                            .iter()
                            .map(|&i| self.keys[i].name.clone())
                            .collect::<Vec<_>>()
                    };
                    if !landed.is_empty() && !kept.is_empty() {
                        let failure = format!(
                            "txn {number} (in flight) is partly present: {:?} landed, {:?} did \
                             not",
                            names(&landed),
                            names(&kept)
                        );
                        self.fail(failure);
                    }
                    let versions: BTreeSet<u64> = outcomes
                        .iter()
                        .filter_map(|&(i, v)| v.filter(|_| self.keys[i].state != Stored::Absent))
                        .collect();
                    if versions.len() > 1 {
                        let failure = format!(
                            "txn {number} (in flight) landed at several versions: {versions:?}"
                        );
                        self.fail(failure);
                    }
                    if landed.len() == whole {
                        verified.landed += 1;
                        verified.txns_landed += 1;
                    } else if kept.len() == whole {
                        verified.txns_absent += 1;
                    }
                }
            }
        }

        // Each transaction acknowledged in this cycle: every write that no
        // later write of this thread replaced must have been found as sent.
        for txn in std::mem::take(&mut self.acked_txns) {
            let id = (self.id, txn.number);
            let current: Vec<usize> = txn
                .writes
                .iter()
                .copied()
                .filter(|&i| owners[i] == Some(id))
                .collect();
            let missing: Vec<&str> = current
                .iter()
                .filter(|i| broken.contains(i))
                .map(|&i| self.keys[i].name.as_str())
                .collect();
            if !missing.is_empty() {
                let failure = format!(
                    "txn {} (acknowledged, revision {}, {} writes, {} not since replaced) is not \
                     wholly present: {missing:?} are not as written",
                    txn.number,
                    txn.revision,
                    txn.writes.len(),
                    current.len()
                );
                self.fail(failure);
            } else if current.len() == txn.writes.len() {
                verified.txns_whole += 1;
            } else {
                verified.txns_superseded += 1;
            }
        }
        verified
    }
}

/// What a read-back found.
enum Found {
    Absent,
    Value {
        /// The bytes answered.
        bytes: Vec<u8>,
        /// The `Content-Type` answered.
        content_type: String,
        /// The `Kvs-Version` answered.
        version: u64,
    },
}

impl Found {
    fn holds(&self, value: &Written) -> bool {
        match self {
            Found::Absent => false,
            Found::Value {
                bytes,
                content_type,
                ..
            } => *bytes == value.bytes && *content_type == value.expected_content_type(),
        }
    }

    fn version(&self) -> u64 {
        match self {
            Found::Absent => 0,
            Found::Value { version, .. } => *version,
        }
    }

    /// The write of `history` whose value this is, if any.
    fn stored(&self, writer: usize, history: &[u64]) -> Stored {
        match self {
            Found::Absent => Stored::Absent,
            Found::Value { .. } => history
                .iter()
                .rev()
                .find(|&&seq| self.holds(&value_of(writer, seq)))
                .map_or(Stored::Value(u64::MAX), |&seq| Stored::Value(seq)),
        }
    }

    fn describe(&self, writer: usize, history: &[u64]) -> String {
        match (self, self.stored(writer, history)) {
            (Found::Absent, _) => "404 (absent)".to_owned(),
            (Found::Value { version, .. }, Stored::Value(seq)) if seq != u64::MAX => {
                format!("the value of write {seq}, at version {version}")
            }
            (
                Found::Value {
                    bytes,
                    content_type,
                    version,
                },
                _,
            ) => format!(
                "a value never written: {} bytes starting {:02x?}, {content_type:?}, version \
                 {version}",
                bytes.len(),
                &bytes[..bytes.len().min(16)]
            ),
        }
    }
}

/// A state for a failure report.
fn describe(writer: usize, state: Stored, version: u64) -> String {
    match state {
        Stored::Absent => "absent".to_owned(),
        Stored::Value(seq) => {
            let value = value_of(writer, seq);
            format!(
                "write {seq} ({} bytes, {:?}{})",
                value.bytes.len(),
                value.expected_content_type(),
                if version > 0 {
                    format!(", version {version}")
                } else {
                    String::new()
                }
            )
        }
    }
}

/// What the read-back of the writers found.
#[derive(Default)]
struct Verified {
    /// Keys read back.
    keys: usize,
    /// In-flight requests that turned out to have landed.
    landed: usize,
    /// The keys present, with their versions.
    present: BTreeMap<String, u64>,
    /// The keys present whose value a transaction wrote, with it.
    txn_keys: BTreeMap<String, TxnId>,
    /// Acknowledged transactions of this cycle found wholly as written.
    txns_whole: usize,
    /// Acknowledged transactions found as written but for keys that later
    /// writes replaced.
    txns_superseded: usize,
    /// In-flight transactions found wholly present.
    txns_landed: usize,
    /// In-flight transactions found wholly absent.
    txns_absent: usize,
}

/// Reads every key back, each writer's keys in a thread of their own.
fn verify_all(server: &ServerProcess, secret: &str, writers: &mut [Writer]) -> Verified {
    let parts: Vec<Verified> = thread::scope(|scope| {
        let handles: Vec<_> = writers
            .iter_mut()
            .map(|writer| {
                let client = Client::new(&server.url, Some(secret));
                scope.spawn(move || writer.verify(&client))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = Verified::default();
    for part in parts {
        all.keys += part.keys;
        all.landed += part.landed;
        all.present.extend(part.present);
        all.txn_keys.extend(part.txn_keys);
        all.txns_whole += part.txns_whole;
        all.txns_superseded += part.txns_superseded;
        all.txns_landed += part.txns_landed;
        all.txns_absent += part.txns_absent;
    }
    all
}

/// What the listing check saw.
struct Listing {
    /// Keys in the full listing.
    listed: usize,
    /// The project's `keys` figure.
    figure: Option<u64>,
    /// What was wrong.
    failures: Vec<String>,
}

/// The full listing (following cursors) must name exactly the keys found
/// present, at their versions, and the project's `keys` figure must count
/// them. Each request takes its own revision, so two keys may share a
/// version only when one transaction wrote both.
fn check_listing(
    server: &ServerProcess,
    secret: &str,
    writers: &[Writer],
    verified: &Verified,
) -> Listing {
    let client = Client::new(&server.url, Some(secret));
    let mut failures = Vec::new();
    let mut listed = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/projects/{PROJECT}/kv?limit=1000");
        if let Some(cursor) = &cursor {
            let encoded =
                percent_encoding::utf8_percent_encode(cursor, percent_encoding::NON_ALPHANUMERIC);
            path.push_str(&format!("&cursor={encoded}"));
        }
        let answer = client.get(&path);
        assert_eq!(answer.status, 200, "listing: {}", answer.text());
        let page = answer.json();
        for meta in page["keys"].as_array().unwrap() {
            let name = meta["key"].as_str().unwrap().to_owned();
            if listed
                .insert(name.clone(), meta["version"].as_u64().unwrap_or(0))
                .is_some()
            {
                failures.push(format!("the listing names {name:?} twice"));
            }
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let written: BTreeSet<&str> = writers
        .iter()
        .flat_map(|w| w.keys.iter().map(|k| k.name.as_str()))
        .collect();
    for (name, version) in &listed {
        match verified.present.get(name) {
            Some(found) if found == version => {}
            Some(found) => failures.push(format!(
                "the listing gives {name:?} version {version}, a read gave {found}"
            )),
            None if written.contains(name.as_str()) => failures.push(format!(
                "the listing names {name:?} (version {version}), which reads as absent"
            )),
            None => failures.push(format!(
                "the listing names {name:?}, which was never written"
            )),
        }
    }
    for name in verified.present.keys() {
        if !listed.contains_key(name) {
            failures.push(format!(
                "the listing lacks {name:?}, which reads as present"
            ));
        }
    }
    let mut holders = BTreeMap::new();
    for (name, version) in &verified.present {
        let txn = verified.txn_keys.get(name);
        if let Some((other, other_txn)) = holders.insert(version, (name, txn))
            && (txn.is_none() || txn != other_txn)
        {
            failures.push(format!(
                "{other:?} and {name:?} both have version {version}, written by two requests"
            ));
        }
    }
    let project = server.admin().get(&format!("/v1/projects/{PROJECT}"));
    let figure = project.json()["keys"].as_u64();
    if figure != Some(listed.len() as u64) {
        failures.push(format!(
            "the project's keys figure is {figure:?}, the listing has {} keys",
            listed.len()
        ));
    }
    Listing {
        listed: listed.len(),
        figure,
        failures,
    }
}

/// What the change-log check saw.
struct ChangeLog {
    /// Events replayed.
    events: usize,
    failures: Vec<String>,
}

/// The project's whole change history, replayed by a watch from revision 0,
/// must end in exactly the state the reads found: each present key's last
/// event a put at its version, every other key's last event (if any) a
/// delete, and revisions in order. The log is written in the same commit as
/// the keys, so a kill can leave neither without the other.
fn check_change_log(
    server: &ServerProcess,
    secret: &str,
    present: &BTreeMap<String, u64>,
) -> ChangeLog {
    use std::io::{BufRead, BufReader, Write};
    let mut failures = Vec::new();
    let address = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // HTTP/1.0: the body is the event stream itself, without chunks.
    let request = format!(
        "GET /v1/projects/{PROJECT}/watch?since=0 HTTP/1.0\r\nAuthorization: Bearer {secret}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains(" 200 "), "the watch from 0 answered {line:?}");
    let mut last: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let (mut kind, mut data) = (String::new(), String::new());
    let (mut events, mut newest) = (0, 0);
    let mut in_body = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            failures.push("the watch ended before its sync event".to_owned());
            break;
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if !in_body {
            in_body = text.is_empty();
            continue;
        }
        if let Some(value) = text.strip_prefix("event: ") {
            kind = value.to_owned();
        } else if let Some(value) = text.strip_prefix("data: ") {
            data = value.to_owned();
        } else if text.is_empty() && !data.is_empty() {
            if kind == "sync" {
                break;
            }
            let event: Value = serde_json::from_str(&data).unwrap();
            let (key, revision) = (event["key"].as_str().unwrap(), event["revision"].as_u64());
            let revision = revision.unwrap_or(0);
            if revision < newest {
                failures.push(format!("event at revision {revision} after {newest}"));
            }
            newest = revision;
            let state = (kind == "put").then_some(revision);
            last.insert(key.to_owned(), state);
            events += 1;
            data.clear();
        }
    }
    for (key, version) in present {
        match last.get(key) {
            Some(Some(logged)) if logged == version => {}
            other => failures.push(format!(
                "{key:?} is present at version {version}; its last logged change is {other:?}"
            )),
        }
    }
    for (key, state) in &last {
        if let (Some(logged), false) = (state, present.contains_key(key)) {
            failures.push(format!(
                "the log's last change of {key:?} is a put at {logged}, but it is absent"
            ));
        }
    }
    ChangeLog { events, failures }
}

/// A value to write, regenerated from (writer, sequence) when checked.
struct Written {
    /// The body.
    bytes: Vec<u8>,
    /// The `Content-Type` sent, if any.
    content_type: Option<String>,
}

impl Written {
    fn expected_content_type(&self) -> &str {
        self.content_type
            .as_deref()
            .unwrap_or("application/octet-stream")
    }
}

/// The value of a writer's write: sizes from empty to 64 KiB (mostly
/// small), binary bytes or text, and a few content types.
fn value_of(writer: usize, seq: u64) -> Written {
    let mut rng = Rng::new(((writer as u64) << 48) ^ seq ^ 0x00C0_FFEE);
    let len = match rng.below(100) {
        0 => 0,
        1..55 => rng.within(1..=64),
        55..90 => rng.within(65..=4096),
        _ => rng.within(4097..=65536),
    } as usize;
    let kind = rng.below(5);
    let content_type = match kind {
        0 => None,
        1 => Some("text/plain; charset=utf-8".to_owned()),
        2 => Some("image/png".to_owned()),
        3 => Some(format!("application/x-crash; w={writer}; s={seq}")),
        _ => Some("application/octet-stream".to_owned()),
    };
    let bytes = if kind == 1 {
        (0..len).map(|_| b' ' + rng.below(95) as u8).collect()
    } else {
        (0..len).map(|_| rng.next() as u8).collect()
    };
    Written {
        bytes,
        content_type,
    }
}

/// The seed: `KVS_CRASH_SEED` if set, else a random one.
fn seed() -> u64 {
    match std::env::var("KVS_CRASH_SEED") {
        Ok(text) => text.parse().expect("KVS_CRASH_SEED must be a u64"),
        Err(_) => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).unwrap();
            u64::from_le_bytes(bytes)
        }
    }
}

/// SplitMix64: a reproducible stream from a seed. A test needs nothing more,
/// and no random-number crate is among the dependencies.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn within(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.below(range.end() - range.start() + 1)
    }
}
