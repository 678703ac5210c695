//! Linearizability of single keys, checked from outside: concurrent clients
//! of the real `kvs` binary record every get, put, put with `If-Match`,
//! `incr` and delete they send to a few keys of a `disk` project, with the
//! times they sent it and got the answer, while the server is SIGKILLed and
//! restarted on the same data and port in the middle. A Wing–Gong checker
//! ([`wgl`]) then looks for an order of each key's operations that respects
//! real time and gives every answer seen, under the model of one key
//! ([`register`]). Linearizability is local, so each key is checked alone.
//!
//! A request whose answer was lost (the connection broke, as at the kill)
//! has an unknown outcome: it may have taken effect or not, and the checker
//! allows both. Acknowledged writes must survive the kill, since a `disk`
//! project acknowledges only what is on stable storage: a read after the
//! restart that misses one is a violation like any stale read.
//!
//! The checker is itself tested: it rejects a recorded history with a stale
//! read put in, and hand-made histories show what it accepts and refuses.
//! The choices come from a seed printed at the start; `KVS_LIN_SEED=<n>`
//! repeats them (timing still varies from run to run).

use crate::common;
mod register;
mod wgl;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Answer, Client, ServerProcess, fake_secret, wait_ready};
use register::{Act, KeyOp, Register, Seen};
use serde_json::json;
use wgl::Operation;

/// The project the clients write in.
const PROJECT: &str = "lin";
/// Keys shared by every client.
const KEYS: usize = 4;
/// Concurrent clients.
const CLIENTS: usize = 8;
/// How long the clients run before the SIGKILL, and after the restart.
const BEFORE_KILL: Duration = Duration::from_millis(2500);
const AFTER_RESTART: Duration = Duration::from_millis(2500);

#[test]
fn concurrent_gets_puts_if_matches_and_incrs_across_a_sigkill_are_linearizable() {
    let seed = seed();
    println!("linearizability: seed {seed} (KVS_LIN_SEED={seed} repeats the choices)");
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let secret = server
        .admin()
        .create_project(PROJECT, json!({"storage": "disk"}));
    let history = record(&mut server, &secret, seed, true);

    let answered = history.ops.iter().filter(|(_, o)| o.answered.is_some());
    let after_restart = answered
        .clone()
        .filter(|(_, o)| o.invoked > history.restarted.unwrap_or(u64::MAX))
        .count();
    let lost = history.ops.len() - answered.clone().count();
    let succeeded =
        |wanted: fn(&KeyOp) -> bool| answered.clone().filter(|(_, o)| wanted(&o.op)).count();
    let if_matched = succeeded(|o| {
        matches!(
            (&o.act, &o.seen),
            (Act::PutIfMatch { .. }, Seen::Written { .. })
        )
    });
    let refused = succeeded(|o| matches!(o.seen, Seen::Refused { .. }));
    let counted = succeeded(|o| matches!(o.seen, Seen::Counted { .. }));
    let conflicts = succeeded(|o| matches!(o.seen, Seen::Conflict));
    let read = succeeded(|o| matches!(o.seen, Seen::Value { .. }));
    println!(
        "{} operations from {CLIENTS} clients on {KEYS} keys: {after_restart} answered after \
         the restart, {lost} of unknown outcome; {read} reads of a value, {if_matched} If-Match \
         puts done and {refused} refused, {counted} incrs done and {conflicts} refused",
        history.ops.len()
    );
    assert!(
        history.odd.is_empty(),
        "{} unexpected answers, first: {}",
        history.odd.len(),
        history.odd[0]
    );
    assert!(after_restart > 100, "too few operations after the restart");
    assert!(read > 0 && if_matched > 0 && refused > 0 && counted > 0 && conflicts > 0);

    check_every_key(&history);
}

#[test]
fn the_checker_rejects_a_recorded_history_with_a_stale_read_put_in() {
    let seed = seed() ^ 0x5EED;
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let secret = server
        .admin()
        .create_project(PROJECT, json!({"storage": "disk"}));
    let mut history = record(&mut server, &secret, seed, false);
    assert!(history.odd.is_empty(), "{:?}", history.odd.first());
    check_every_key(&history);

    // A put W1 answered before a put W2 of the same key was sent: W1 comes
    // first in every order, and its value (unique) can never be current
    // again once W2 is answered. A get sent after that which answers W1's
    // value is stale.
    let written = |(key, o): &&(usize, Operation<KeyOp>)| match (&o.op.act, &o.op.seen) {
        (Act::Put { value }, Seen::Written { version }) => {
            Some((*key, o.invoked, o.answered?, value.clone(), *version))
        }
        _ => None,
    };
    let puts: Vec<_> = history.ops.iter().filter_map(|o| written(&o)).collect();
    let (key, answered, value, version) = puts
        .iter()
        .find_map(|first| {
            let second = puts
                .iter()
                .find(|second| second.0 == first.0 && second.1 > first.2)?;
            Some((first.0, second.2, first.3.clone(), first.4))
        })
        .expect("two puts of one key, one after the other");
    history.ops.push((
        key,
        Operation {
            invoked: answered + 1,
            answered: Some(answered + 2),
            op: KeyOp {
                act: Act::Get,
                seen: Seen::Value { value, version },
            },
        },
    ));
    let ops = key_history(&history, key);
    assert!(
        wgl::check(Register::default(), &ops).is_err(),
        "a get of an overwritten value was accepted"
    );
}

/// A history written by hand: `(invoked, answered, act, seen)`.
fn by_hand(ops: &[(u64, Option<u64>, Act, Seen)]) -> Vec<Operation<KeyOp>> {
    ops.iter()
        .map(|(invoked, answered, act, seen)| Operation {
            invoked: *invoked,
            answered: *answered,
            op: KeyOp {
                act: act.clone(),
                seen: seen.clone(),
            },
        })
        .collect()
}

fn put(value: &str) -> Act {
    Act::Put {
        value: value.to_owned(),
    }
}

fn value(value: &str, version: u64) -> Seen {
    Seen::Value {
        value: value.to_owned(),
        version,
    }
}

#[test]
fn the_checker_accepts_a_linearizable_history_that_needs_reordering_and_lost_answers() {
    let ops = by_hand(&[
        // A put overlapping three reads: one takes effect before it, two after.
        (0, Some(50), put("a"), Seen::Written { version: 3 }),
        (10, Some(20), Act::Get, value("a", 3)),
        (5, Some(15), Act::Get, Seen::Absent),
        (30, Some(40), Act::Get, value("a", 3)),
        // A put whose answer was lost, which a later read shows landed (its
        // version learnt from that read), and one that never took effect.
        (61, None, put("lost"), Seen::Unknown),
        (63, None, put("never"), Seen::Unknown),
        (70, Some(80), Act::Get, value("lost", 6)),
        (90, Some(100), Act::Incr { by: 1 }, Seen::Conflict),
        // An incr whose answer was lost, sent before the value it counts
        // on was written, seen by a read later.
        (62, None, Act::Incr { by: 2 }, Seen::Unknown),
        (110, Some(120), put("5"), Seen::Written { version: 9 }),
        (
            130,
            Some(140),
            Act::PutIfMatch {
                expected: 7,
                value: "x".to_owned(),
            },
            Seen::Refused { current: Some(9) },
        ),
        (142, Some(148), Act::Get, value("7", 11)),
        (
            150,
            Some(160),
            Act::Incr { by: 2 },
            Seen::Counted {
                value: 9,
                version: 12,
            },
        ),
        (170, Some(180), Act::Delete, Seen::Deleted),
        (190, Some(200), Act::Get, Seen::Absent),
    ]);
    if let Err(violation) = wgl::check(Register::default(), &ops) {
        panic!("a linearizable history was rejected: {violation:?}");
    }
}

#[test]
fn the_checker_rejects_a_lost_acknowledged_write_and_a_double_incr() {
    // Acknowledged, then not found by a read sent after the answer.
    let lost = by_hand(&[
        (0, Some(10), put("a"), Seen::Written { version: 4 }),
        (20, Some(30), Act::Get, Seen::Absent),
    ]);
    assert!(wgl::check(Register::default(), &lost).is_err());
    // Two incrs by 1 from absent, both answered 1.
    let doubled = by_hand(&[
        (
            0,
            Some(10),
            Act::Incr { by: 1 },
            Seen::Counted {
                value: 1,
                version: 2,
            },
        ),
        (
            5,
            Some(15),
            Act::Incr { by: 1 },
            Seen::Counted {
                value: 1,
                version: 3,
            },
        ),
    ]);
    assert!(wgl::check(Register::default(), &doubled).is_err());
    // A read of a version other than the one its value was written with.
    let misversioned = by_hand(&[
        (0, Some(10), put("a"), Seen::Written { version: 4 }),
        (20, Some(30), Act::Get, value("a", 5)),
    ]);
    assert!(wgl::check(Register::default(), &misversioned).is_err());
    // The same three, reordered so that they are linearizable, pass.
    let fine = by_hand(&[
        (0, Some(10), put("a"), Seen::Written { version: 4 }),
        (5, Some(30), Act::Get, Seen::Absent),
        (20, Some(40), Act::Get, value("a", 4)),
    ]);
    assert!(wgl::check(Register::default(), &fine).is_ok());
}

/// What the clients did.
struct History {
    /// Each operation with the index of its key.
    ops: Vec<(usize, Operation<KeyOp>)>,
    /// Answers outside the contract (a 5xx, a missing header): failures.
    odd: Vec<String>,
    /// When the restarted server was ready, if it was killed.
    restarted: Option<u64>,
}

/// Runs the clients for a while, killing and restarting the server in the
/// middle when `kill`, then reads every key once more.
fn record(server: &mut ServerProcess, secret: &str, seed: u64, kill: bool) -> History {
    let epoch = Instant::now();
    let ticks = move || epoch.elapsed().as_nanos() as u64;
    let stop = AtomicBool::new(false);
    let url = server.url.clone();
    let mut restarted = None;
    let mut per_client = thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (url, stop) = (&url, &stop);
                scope.spawn(move || run_client(id, url, secret, seed, ticks, stop))
            })
            .collect();
        thread::sleep(BEFORE_KILL);
        if kill {
            server.kill_and_restart();
            restarted = Some(ticks());
            thread::sleep(AFTER_RESTART);
        }
        stop.store(true, Ordering::Relaxed);
        clients
            .into_iter()
            .map(|client| client.join().unwrap())
            .collect::<Vec<_>>()
    });
    // A last read of every key, after every client has stopped.
    let client = Client::new(&url, Some(secret));
    let mut last = Recorder::default();
    for key in 0..KEYS {
        last.send(&client, key, Act::Get, ticks);
    }
    per_client.push(last);
    History {
        ops: per_client
            .iter_mut()
            .flat_map(|c| c.ops.drain(..))
            .collect(),
        odd: per_client
            .iter_mut()
            .flat_map(|c| c.odd.drain(..))
            .collect(),
        restarted,
    }
}

/// One client's record.
#[derive(Default)]
struct Recorder {
    ops: Vec<(usize, Operation<KeyOp>)>,
    odd: Vec<String>,
}

impl Recorder {
    /// Sends `act` on `key`, records it and answers what was seen.
    fn send(&mut self, client: &Client, key: usize, act: Act, ticks: impl Fn() -> u64) -> Seen {
        let path = common::kv(PROJECT, &key_name(key));
        let invoked = ticks();
        let answer = match &act {
            Act::Get => client.request("GET", &path, None, &[]),
            Act::Put { value } => client.request("PUT", &path, Some(value.as_bytes()), &[]),
            Act::PutIfMatch { expected, value } => client.request(
                "PUT",
                &path,
                Some(value.as_bytes()),
                &[("If-Match", &format!("\"{expected}\""))],
            ),
            Act::Incr { by } => client.request(
                "POST",
                &format!("/v1/projects/{PROJECT}/incr/{}?by={by}", key_name(key)),
                None,
                &[],
            ),
            Act::Delete => client.request("DELETE", &path, None, &[]),
        };
        let answered = ticks();
        let (seen, answered) = match answer.map(|answer| interpret(&act, &answer)) {
            Ok(Ok(seen)) => (seen, Some(answered)),
            Ok(Err(odd)) => {
                self.odd.push(format!("{act:?} on key {key}: {odd}"));
                (Seen::Unknown, None)
            }
            Err(_) => (Seen::Unknown, None),
        };
        // A read of unknown outcome tells nothing.
        if !(matches!(act, Act::Get) && answered.is_none()) {
            self.ops.push((
                key,
                Operation {
                    invoked,
                    answered,
                    op: KeyOp {
                        act,
                        seen: seen.clone(),
                    },
                },
            ));
        }
        seen
    }
}

/// A client: random operations on random keys until `stop`; after a broken
/// connection, a new connection once the server is ready again.
fn run_client(
    id: usize,
    url: &str,
    secret: &str,
    seed: u64,
    ticks: impl Fn() -> u64 + Copy,
    stop: &AtomicBool,
) -> Recorder {
    let mut rng = Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut client = Client::new(url, Some(secret));
    let mut recorder = Recorder::default();
    // The last version this client saw of each key, for its If-Matches.
    let mut versions = [1u64; KEYS];
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sequence += 1;
        let key = rng.below(KEYS as u64) as usize;
        // Unique values: numbers far apart (that incrs then count on) or
        // text (that makes an incr refuse).
        let value = if rng.below(3) == 0 {
            format!("c{id}-{sequence}")
        } else {
            ((id as u64 + 1) * 1_000_000_000_000 + sequence * 1_000_000).to_string()
        };
        let act = match rng.below(100) {
            0..35 => Act::Get,
            35..60 => Act::Put { value },
            60..75 => Act::PutIfMatch {
                expected: versions[key],
                value,
            },
            75..95 => Act::Incr {
                by: rng.within(1..=3) as i64,
            },
            _ => Act::Delete,
        };
        match recorder.send(&client, key, act, ticks) {
            Seen::Unknown => {
                wait_ready(url);
                client = Client::new(url, Some(secret));
            }
            Seen::Value { version, .. }
            | Seen::Written { version }
            | Seen::Counted { version, .. }
            | Seen::Refused {
                current: Some(version),
            } => versions[key] = version,
            _ => {}
        }
    }
    recorder
}

/// What an answer means for `act`, or why it is outside the contract.
fn interpret(act: &Act, answer: &Answer) -> Result<Seen, String> {
    let number = |field: &str| answer.json()[field].as_u64();
    let header = |name: &str| {
        answer
            .header(name)
            .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
    };
    let seen = match (act, answer.status) {
        (Act::Get, 200) => header("kvs-version").map(|version| Seen::Value {
            value: answer.text(),
            version,
        }),
        (Act::Get | Act::Delete, 404) => Some(Seen::Absent),
        (Act::Put { .. }, 200 | 201) | (Act::PutIfMatch { .. }, 200) => {
            number("version").map(|version| Seen::Written { version })
        }
        (Act::PutIfMatch { .. }, 412) => Some(Seen::Refused {
            current: header("etag"),
        }),
        (Act::Incr { .. }, 200) => answer.json()["value"]
            .as_i64()
            .zip(number("version"))
            .map(|(value, version)| Seen::Counted { value, version }),
        (Act::Incr { .. }, 409) => Some(Seen::Conflict),
        (Act::Delete, 204) => Some(Seen::Deleted),
        _ => None,
    };
    seen.ok_or_else(|| format!("{} {}", answer.status, answer.text()))
}

/// Checks each key's history, printing the figures.
fn check_every_key(history: &History) {
    for key in 0..KEYS {
        let ops = key_history(history, key);
        let started = Instant::now();
        let result = wgl::check(Register::default(), &ops);
        let took = started.elapsed();
        match result {
            Ok(searched) => println!(
                "key {key}: {} operations linearizable, checked in {took:.1?} \
                 ({} configurations, {} backtracks)",
                ops.len(),
                searched.configurations,
                searched.backtracks
            ),
            Err(violation) => {
                let stuck = &ops[violation.stuck_at];
                let near: Vec<_> = ops
                    .iter()
                    .filter(|o| {
                        o.invoked.abs_diff(stuck.invoked) < 20_000_000 || o.answered.is_none()
                    })
                    .collect();
                panic!(
                    "key {key} is not linearizable: after {} operations, no order places \
                     {stuck:?}; operations around it: {near:#?}",
                    violation.linearized
                );
            }
        }
    }
}

/// One key's operations.
fn key_history(history: &History, key: usize) -> Vec<Operation<KeyOp>> {
    history
        .ops
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, o)| o.clone())
        .collect()
}

fn key_name(key: usize) -> String {
    format!("k{key}")
}

/// The seed of this run: `KVS_LIN_SEED`, or a fresh one.
fn seed() -> u64 {
    std::env::var("KVS_LIN_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).unwrap();
            u64::from_le_bytes(bytes)
        })
}

/// A small generator (xorshift64*), enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn within(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.below(range.end() - range.start() + 1)
    }
}
