//! Watch under load, from outside: the real `kvs` binary, many watch
//! streams on raw sockets, and writers over HTTP.
//!
//! - Fan-out: a thousand watchers of one project while writer threads make
//!   ten thousand writes (single puts and multi-key transactions); each
//!   watcher must see exactly the changes the writers were acknowledged,
//!   once each, in revision order and key order within a revision, with
//!   `id:` only on the last event of each revision.
//! - Slow consumer: a watcher that stops reading is cut off with
//!   `event: error` / `slow_consumer` once it falls more than 10,000
//!   changes behind, and its stream ends; a watcher beside it that reads
//!   is not disturbed.
//! - Idle cost: what two thousand idle watchers cost the server in memory.
//!
//! The server's memory (from `/proc/<pid>/status`) and the times are
//! printed (`--nocapture` shows them), never asserted: the assertions are
//! about correctness only, and every wait has a generous deadline so a
//! broken server fails the test instead of hanging it. The watchers run as
//! tasks on a small tokio runtime (`sse` is their client), so a thousand of
//! them need no thousand threads. Projects are `memory` projects: the
//! change feed is the same as on disk, and no fsync paces the writers.

use crate::common;
#[path = "watch/sse.rs"]
mod sse;

use std::borrow::Cow;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;

use common::{Client, ServerProcess, fake_secret, kv};
use sse::{End, Event, Watch};

/// Watchers of the fan-out test.
const FAN_OUT_WATCHERS: usize = 1000;
/// Write requests of the fan-out test, over all writers.
const FAN_OUT_WRITES: usize = 10_000;
/// Writer threads of the fan-out test.
const WRITERS: usize = 4;
/// Percentage of the writes that are transactions.
const TXN_PERCENT: u64 = 25;
/// Keys per transaction.
const TXN_KEYS: std::ops::RangeInclusive<u64> = 2..=4;
/// Distinct keys per writer (each is written many times).
const KEYS_PER_WRITER: u64 = 500;
/// Watchers of the idle-cost test.
const IDLE_WATCHERS: usize = 2000;
/// The server cuts off a watcher this many changes behind (the contract).
const SLOW_CHANGES: usize = 10_000;
/// The key written last, after every other: watchers stop when they see it.
const END_KEY: &str = "zz-end";
/// The longest any phase may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(110);

/// The tests of this binary take turns: each measures the server's memory
/// and needs both cores of a small machine to itself.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_thousand_watchers_each_receive_every_change_once_and_in_order() {
    let _turn = one_at_a_time();
    let started = Instant::now();
    let server = Server::start("fanout");
    let before = memory(server.process.pid());
    let runtime = runtime();

    // Every watcher is open and past its `sync` before the first write, so
    // each must see every write and nothing else.
    let (synced, syncs) = mpsc::channel();
    let watchers: Vec<_> = (0..FAN_OUT_WATCHERS)
        .map(|_| runtime.spawn(server.watch("").record(synced.clone())))
        .collect();
    let mut sync_revisions = Vec::new();
    for _ in 0..FAN_OUT_WATCHERS {
        let revision = syncs
            .recv_timeout(DEADLINE)
            .expect("every watcher reaches its sync event");
        sync_revisions.push(revision);
    }
    let opened = started.elapsed();
    let idle = memory(server.process.pid());

    let writing = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let client = server.client.clone();
            thread::spawn(move || write_mix(&client, writer as u64, FAN_OUT_WRITES / WRITERS))
        })
        .collect();
    let mut expected: Vec<(u64, String, Kind)> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    let wrote = writing.elapsed();
    expected.push(server.put_end());
    let expected = Expected::new(expected);

    let seen: Vec<Seen> = runtime.block_on(async {
        let mut seen = Vec::new();
        for watcher in watchers {
            seen.push(watcher.await.unwrap());
        }
        seen
    });
    let delivered_in = writing.elapsed();
    let after = memory(server.process.pid());
    drop(runtime);

    let first = expected.first_revision();
    for (index, revision) in sync_revisions.iter().enumerate() {
        assert!(
            *revision < first,
            "watcher {index} synced at {revision}, after the first write ({first})"
        );
    }
    let mut wrong = 0;
    for (index, seen) in seen.iter().enumerate() {
        if let Some(problem) = expected.check(seen) {
            wrong += 1;
            if wrong <= 5 {
                eprintln!("watcher {index}: {problem}");
            }
        }
    }
    let events: usize = seen.iter().map(|s| s.events.len()).sum();
    println!(
        "fan-out: {FAN_OUT_WATCHERS} watchers, {} write requests ({} changes) from {WRITERS} \
         threads; watchers open and synced in {:.2?}; writes took {:.2?}; every watcher had \
         every change {:.2?} after the first write; {events} events delivered; total {:.2?}",
        FAN_OUT_WRITES + 1,
        expected.len(),
        opened,
        wrote,
        delivered_in,
        started.elapsed(),
    );
    println!(
        "fan-out: server VmRSS {} before watchers, {} with {FAN_OUT_WATCHERS} idle watchers, \
         {} at the end; VmHWM (peak) {}",
        mib(before.rss),
        mib(idle.rss),
        mib(after.rss),
        mib(after.hwm),
    );
    assert_eq!(
        wrong, 0,
        "{wrong} of {FAN_OUT_WATCHERS} watchers saw something else"
    );
    assert_eq!(events, FAN_OUT_WATCHERS * expected.len());
}

#[test]
fn a_watcher_that_stops_reading_is_cut_off_and_the_one_beside_it_is_not() {
    let _turn = one_at_a_time();
    let started = Instant::now();
    let server = Server::start("slow");
    let runtime = runtime();
    let (synced, syncs) = mpsc::channel();
    let reader = runtime.spawn(server.watch("values=true").record(synced));
    let (mut stalled, stalled_sync) = runtime.block_on(server.open_stalled("values=true"));
    syncs
        .recv_timeout(DEADLINE)
        .expect("the reading watcher reaches its sync event");

    // Transactions of 100 puts of 4 KiB: the stalled watcher's socket and
    // queue hold a few thousand changes at most, so well over 10,000
    // changes leave it far more than 10,000 behind.
    const TXNS: u64 = 150;
    const PUTS: u64 = 100;
    const VALUE_BYTES: usize = 4096;
    let mut expected = Vec::new();
    for txn in 0..TXNS {
        let ops: Vec<Value> = (0..PUTS)
            .map(|put| {
                let value = char::from(b'a' + (txn % 26) as u8)
                    .to_string()
                    .repeat(VALUE_BYTES);
                json!({"op": "put", "key": key(0, (txn * PUTS + put) % 1000), "value": value})
            })
            .collect();
        let answer = server
            .client
            .post_json(&server.txn(), &json!({ "ops": ops }));
        assert_eq!(answer.status, 200, "{}", answer.text());
        let revision = answer.json()["revision"].as_u64().unwrap();
        for op in &ops {
            expected.push((revision, op["key"].as_str().unwrap().to_owned(), Kind::Put));
        }
    }
    let wrote = started.elapsed();
    assert!(expected.len() > SLOW_CHANGES + 4000);

    // The server notices within a moment (or, at worst, after 30 s).
    let deadline = Instant::now() + Duration::from_secs(45);
    while server.open_watchers() > 1.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled watcher was not cut off: {} watchers still open",
            server.open_watchers()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let cut_after = started.elapsed();
    expected.push(server.put_end());
    let expected = Expected::new(expected);

    // Everything the stalled watcher was sent, then how it ended.
    let (stalled_events, end) = runtime.block_on(async {
        let mut events = Vec::new();
        let read_all = async {
            while stalled
                .read(&mut |event| events.push((event.name.to_owned(), event.data.to_owned())))
                .await
            {}
        };
        tokio::time::timeout(Duration::from_secs(30), read_all)
            .await
            .expect("the stalled stream ends once read");
        (events, stalled.end())
    });
    let seen = runtime.block_on(async { tokio::time::timeout(DEADLINE, reader).await });
    let seen = seen
        .expect("the reading watcher sees the last write")
        .unwrap();

    let (last_name, last_data) = stalled_events.last().expect("the stalled watcher's events");
    assert_eq!(
        last_name, "error",
        "the stalled stream's last event: {last_data}"
    );
    let error: Value = serde_json::from_str(last_data).unwrap();
    assert_eq!(error["code"], "slow_consumer", "{error}");
    assert!(
        matches!(end, Some(End::LastChunk | End::Eof)),
        "the stalled stream ends after its error event"
    );
    // What it got before the error is the start of the history, in order.
    let mut before_error = Seen::new(stalled_sync);
    for (name, data) in &stalled_events[..stalled_events.len() - 1] {
        assert_eq!(name, "put", "{data}");
        let change: ChangeData = serde_json::from_str(data).unwrap();
        before_error
            .events
            .push(code(change.revision, &change.key, Kind::Put));
    }
    let got = before_error.events.len();
    assert!(got > 0, "the stalled watcher had nothing before its error");
    assert_eq!(
        before_error.events[..],
        expected.codes[..got],
        "the stalled watcher's events before its error are not the start of the history"
    );
    if let Some(problem) = expected.check(&seen) {
        panic!("the reading watcher: {problem}");
    }
    println!(
        "slow consumer: {} changes of {VALUE_BYTES} B in {TXNS} transactions written in \
         {wrote:.2?}; stalled watcher cut off ({}) by {cut_after:.2?}, after {got} events; \
         stream ended with {:?}; the reading watcher had all {} events; total {:.2?}",
        expected.len() - 1,
        error["code"].as_str().unwrap_or(""),
        end.unwrap(),
        seen.events.len(),
        started.elapsed(),
    );
}

#[test]
fn idle_watchers_cost_the_server_little_memory() {
    let _turn = one_at_a_time();
    let server = Server::start("idle");
    let runtime = runtime();
    let before = memory(server.process.pid());
    let (close, closed) = tokio::sync::watch::channel(false);
    let (synced, syncs) = mpsc::channel();
    let opening = Instant::now();
    let watchers: Vec<_> = (0..IDLE_WATCHERS)
        .map(|_| {
            let open = server.watch("");
            let (synced, mut closed) = (synced.clone(), closed.clone());
            runtime.spawn(async move {
                let (watch, revision) = open.until_sync().await;
                synced.send(revision).unwrap();
                let _ = closed.wait_for(|close| *close).await;
                drop(watch);
            })
        })
        .collect();
    for _ in 0..IDLE_WATCHERS {
        syncs
            .recv_timeout(DEADLINE)
            .expect("every idle watcher reaches its sync event");
    }
    let opened = opening.elapsed();
    let idle = memory(server.process.pid());
    close.send(true).unwrap();
    runtime.block_on(async {
        for watcher in watchers {
            watcher.await.unwrap();
        }
    });
    let per_watcher = idle.rss.saturating_sub(before.rss) as f64 / IDLE_WATCHERS as f64;
    println!(
        "idle: server VmRSS {} before, {} with {IDLE_WATCHERS} idle watchers (opened in \
         {opened:.2?}): {per_watcher:.1} KiB per watcher; VmHWM {}",
        mib(before.rss),
        mib(idle.rss),
        mib(idle.hwm),
    );
    assert!(per_watcher < 200.0, "{per_watcher:.1} KiB per idle watcher");
}

// ======================================================= the server

/// A `kvs` process with one memory project and that project's manage token.
struct Server {
    process: ServerProcess,
    /// Kept so that the data directory lives as long as the server.
    _dir: tempfile::TempDir,
    project: String,
    /// A client with the project's manage token.
    client: Client,
    token: String,
}

impl Server {
    fn start(project: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let process = ServerProcess::start(&dir.path().join("data"), &fake_secret());
        let token = process
            .admin()
            .create_project(project, json!({"storage": "memory"}));
        let client = process.admin().with_token(&token);
        Server {
            process,
            _dir: dir,
            project: project.to_owned(),
            client,
            token,
        }
    }

    fn host(&self) -> String {
        self.process.url.trim_start_matches("http://").to_owned()
    }

    fn txn(&self) -> String {
        format!("/v1/projects/{}/txn", self.project)
    }

    /// A watch of the whole project, ready to be opened.
    fn watch(&self, query: &str) -> Opening {
        Opening {
            host: self.host(),
            path: format!("/v1/projects/{}/watch?{query}", self.project),
            token: self.token.clone(),
        }
    }

    /// A watch on a socket with a small receive buffer, read up to its
    /// `sync` event and then left unread.
    async fn open_stalled(&self, query: &str) -> (Watch, u64) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.host().parse().unwrap()).await.unwrap();
        self.watch(query).until_sync_on(stream).await
    }

    /// Writes the last key, after every other write; returns its change.
    fn put_end(&self) -> (u64, String, Kind) {
        let answer = self.client.put(&kv(&self.project, END_KEY), b"end");
        assert!(matches!(answer.status, 200 | 201), "{}", answer.text());
        let version = answer.json()["version"].as_u64().unwrap();
        (version, END_KEY.to_owned(), Kind::Put)
    }

    /// Watch streams open on the server (its `kvs_watchers` gauge).
    fn open_watchers(&self) -> f64 {
        let answer = self.process.admin().get("/metrics");
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer
            .text()
            .lines()
            .find_map(|line| line.strip_prefix("kvs_watchers "))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }
}

/// What the server's `/proc/<pid>/status` says of its memory, in KiB.
#[derive(Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
    }
}

/// KiB as MiB, for the report.
fn mib(value: u64) -> String {
    format!("{:.1} MiB", value as f64 / 1024.0)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ======================================================= writers

/// A writer's key: `w<writer>/<n>`, zero-padded, so that key order and
/// the numeric code of [`code`] agree for one writer.
fn key(writer: u64, n: u64) -> String {
    format!("w{writer}/{n:04}")
}

/// What a change did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Put,
    Delete,
}

/// `writes` requests by one writer, on keys of its own: single PUTs and
/// transactions of a few puts and, now and then, a delete of a key it
/// knows to exist. Returns the changes the server acknowledged.
fn write_mix(client: &Client, writer: u64, writes: usize) -> Vec<(u64, String, Kind)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (writer + 1).wrapping_mul(0xa076_1d64_78bd_642f));
    let mut present = vec![false; KEYS_PER_WRITER as usize];
    let mut changes = Vec::new();
    let project = "fanout";
    for _ in 0..writes {
        if rng.below(100) >= TXN_PERCENT {
            let n = rng.below(KEYS_PER_WRITER);
            let answer = client.put(&kv(project, &key(writer, n)), b"value");
            assert!(matches!(answer.status, 200 | 201), "{}", answer.text());
            let version = answer.json()["version"].as_u64().unwrap();
            present[n as usize] = true;
            changes.push((version, key(writer, n), Kind::Put));
            continue;
        }
        let count = TXN_KEYS.start() + rng.below(TXN_KEYS.end() - TXN_KEYS.start() + 1);
        let mut keys = Vec::new();
        while (keys.len() as u64) < count {
            let n = rng.below(KEYS_PER_WRITER);
            if !keys.contains(&n) {
                keys.push(n);
            }
        }
        let ops: Vec<Value> = keys
            .iter()
            .map(|&n| {
                if present[n as usize] && rng.below(4) == 0 {
                    json!({"op": "delete", "key": key(writer, n)})
                } else {
                    json!({"op": "put", "key": key(writer, n), "value": "x"})
                }
            })
            .collect();
        let answer = client.post_json(
            &format!("/v1/projects/{project}/txn"),
            &json!({ "ops": ops }),
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        let answer = answer.json();
        let revision = answer["revision"].as_u64().unwrap();
        for ((op, result), &n) in ops
            .iter()
            .zip(answer["results"].as_array().unwrap())
            .zip(&keys)
        {
            if op["op"] == "put" {
                present[n as usize] = true;
                changes.push((revision, key(writer, n), Kind::Put));
            } else if result["deleted"] == true {
                present[n as usize] = false;
                changes.push((revision, key(writer, n), Kind::Delete));
            }
        }
    }
    changes
}

/// xorshift64*: the writers' choices, the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

// ======================================================= watchers

/// A change as 64 bits: its revision, then its key and kind as a number,
/// so that a thousand watchers can keep everything they saw.
fn code(revision: u64, key: &str, kind: Kind) -> u64 {
    const DELETE: u64 = 1 << 31;
    let key = if key == END_KEY {
        DELETE - 1
    } else {
        key.strip_prefix('w')
            .and_then(|rest| rest.split_once('/'))
            .filter(|(_, n)| n.len() == 4)
            .and_then(|(writer, n)| {
                Some(writer.parse::<u64>().ok()? * 10_000 + n.parse::<u64>().ok()?)
            })
            .unwrap_or(DELETE - 2) // no key of this test
    };
    let kind = if kind == Kind::Delete { DELETE } else { 0 };
    assert!(revision < 1 << 32);
    revision << 32 | kind | key
}

/// The data of a `put` or `delete` event.
#[derive(Deserialize)]
struct ChangeData<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    version: u64,
    revision: u64,
    #[serde(borrow, default)]
    value: Option<Cow<'a, str>>,
}

/// A watch to open.
struct Opening {
    host: String,
    path: String,
    token: String,
}

impl Opening {
    async fn until_sync(self) -> (Watch, u64) {
        let stream = TcpStream::connect(&self.host).await.unwrap();
        self.until_sync_on(stream).await
    }

    /// Opens the watch on `stream` and reads up to its `sync` event, which
    /// must come first; returns the sync revision.
    async fn until_sync_on(self, stream: TcpStream) -> (Watch, u64) {
        let mut watch = Watch::open(stream, &self.host, &self.path, &self.token).await;
        let mut sync = None;
        while sync.is_none() {
            let open = watch
                .read(&mut |event: Event<'_>| {
                    assert_eq!(event.name, "sync", "before sync: {}", event.data);
                    let data: Value = serde_json::from_str(event.data).unwrap();
                    let revision = data["revision"].as_u64().unwrap();
                    assert_eq!(event.id, Some(revision.to_string().as_str()));
                    sync = Some(revision);
                })
                .await;
            assert!(
                open || sync.is_some(),
                "the watch ended before its sync event"
            );
        }
        assert_eq!(
            watch.retry(),
            Some(2000),
            "the stream opens with `retry: 2000`"
        );
        (watch, sync.unwrap())
    }

    /// Opens the watch, says when it is synced, and records every change
    /// up to the one of [`END_KEY`].
    async fn record(self, synced: mpsc::Sender<u64>) -> Seen {
        let (mut watch, sync) = self.until_sync().await;
        let _ = synced.send(sync);
        let mut seen = Seen::new(sync);
        let read =
            async { while !seen.done && watch.read(&mut |event| seen.event(event)).await {} };
        if tokio::time::timeout(DEADLINE, read).await.is_err() {
            seen.problem(format!("no {END_KEY} within {DEADLINE:?}"));
        }
        if !seen.done {
            seen.problem(format!(
                "the stream ended ({:?}) before {END_KEY}",
                watch.end()
            ));
        }
        seen
    }
}

/// What one watcher saw after its `sync`.
struct Seen {
    sync: u64,
    /// Every change, as [`code`]s.
    events: Vec<u64>,
    /// The revision of the last event and whether that event had an id.
    last: Option<(u64, bool)>,
    /// The first few things that break the contract beyond the sequence.
    problems: Vec<String>,
    done: bool,
}

impl Seen {
    fn new(sync: u64) -> Seen {
        Seen {
            sync,
            events: Vec::new(),
            last: None,
            problems: Vec::new(),
            done: false,
        }
    }

    fn problem(&mut self, problem: String) {
        if self.problems.len() < 5 {
            self.problems.push(problem);
        }
    }

    fn event(&mut self, event: Event<'_>) {
        let kind = match event.name {
            "put" => Kind::Put,
            "delete" => Kind::Delete,
            _ => {
                self.problem(format!("event {}: {}", event.name, event.data));
                self.done = true;
                return;
            }
        };
        let change: ChangeData = match serde_json::from_str(event.data) {
            Ok(change) => change,
            Err(error) => return self.problem(format!("{error}: {}", event.data)),
        };
        if change.version != change.revision {
            self.problem(format!("version is not the revision: {}", event.data));
        }
        if change.key != END_KEY && change.value.as_ref().is_some_and(|v| v.len() != 4096) {
            self.problem(format!("a value of {} bytes", change.value.unwrap().len()));
        }
        let revision = change.revision;
        if let Some((last, had_id)) = self.last {
            if last == revision && had_id {
                self.problem(format!(
                    "an id before the last event of revision {revision}"
                ));
            }
            if last != revision && !had_id {
                self.problem(format!("revision {last} ended without an id"));
            }
        }
        match event.id {
            Some(id) if id != revision.to_string() => {
                self.problem(format!("id {id} on an event of revision {revision}"));
            }
            _ => {}
        }
        self.last = Some((revision, event.id.is_some()));
        self.events.push(code(revision, &change.key, kind));
        if change.key == END_KEY && event.id.is_some() {
            self.done = true;
        }
    }
}

/// The changes every watcher must see: the writers' acknowledged changes
/// in revision order, and key order within a revision.
struct Expected {
    codes: Vec<u64>,
}

impl Expected {
    fn new(mut changes: Vec<(u64, String, Kind)>) -> Expected {
        changes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Expected {
            codes: changes
                .iter()
                .map(|(revision, key, kind)| code(*revision, key, *kind))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.codes.len()
    }

    fn first_revision(&self) -> u64 {
        self.codes[0] >> 32
    }

    /// What is wrong with what a watcher saw, if anything.
    fn check(&self, seen: &Seen) -> Option<String> {
        if !seen.problems.is_empty() {
            return Some(seen.problems.join("; "));
        }
        if seen.events == self.codes {
            return None;
        }
        let at = seen
            .events
            .iter()
            .zip(&self.codes)
            .position(|(a, b)| a != b)
            .unwrap_or(seen.events.len().min(self.codes.len()));
        let show = |codes: &[u64]| {
            codes
                .iter()
                .map(|c| format!("r{}:{:x}", c >> 32, c & 0xffff_ffff))
                .collect::<Vec<_>>()
                .join(" ")
        };
        Some(format!(
            "{} events, {} expected; first difference at {at} (sync {}): saw [{}], expected [{}]",
            seen.events.len(),
            self.codes.len(),
            seen.sync,
            show(&seen.events[at.min(seen.events.len())..(at + 5).min(seen.events.len())]),
            show(&self.codes[at.min(self.codes.len())..(at + 5).min(self.codes.len())]),
        ))
    }
}
