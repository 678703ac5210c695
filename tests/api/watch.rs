//! Watches and blocking reads: who may open them, and what ends them. The
//! stream's framing and replay are checked by the conformance suite's
//! `watch` group and `tests/watch.rs`; here, what each token may do, and that
//! a revoked token, a project that stops listing its keys, a deleted project
//! and a stopping server end what is open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{TestServer, kv};
use crate::support::{Api, Setup, expect_error, expect_status};

/// An HTTP/1.1 exchange kept open: the answer's status line and whatever
/// body has arrived so far.
pub(crate) struct Open {
    stream: TcpStream,
    pub(crate) status: u16,
    pub(crate) received: String,
    ended: bool,
}

impl Open {
    /// Sends `GET path` with the client's token and reads the answer's head.
    pub(crate) fn get(api: &Api, path: &str) -> Open {
        Open::get_with(api, path, "")
    }

    /// The same, with more header lines (each ending in `\r\n`).
    fn get_with(api: &Api, path: &str, headers: &str) -> Open {
        let address = api.base.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let authorization = match api.token.as_deref() {
            Some(token) => format!("Authorization: Bearer {token}\r\n"),
            None => String::new(),
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}{headers}\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut open = Open {
            stream,
            status: 0,
            received: String::new(),
            ended: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !open.received.contains("\r\n\r\n") {
            assert!(Instant::now() < deadline, "no answer head for GET {path}");
            open.read_some();
        }
        let (head, body) = open.received.split_once("\r\n\r\n").unwrap();
        open.status = head.split(' ').nth(1).unwrap().parse().unwrap();
        open.received = body.to_owned();
        open
    }

    /// Reads what is available (at most 100 ms of waiting).
    fn read_some(&mut self) {
        let mut buffer = [0u8; 16384];
        match self.stream.read(&mut buffer) {
            Ok(0) => self.ended = true,
            Ok(n) => self
                .received
                .push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => self.ended = true,
        }
    }

    /// Reads until the body holds `text`; false if it does not within
    /// `seconds`.
    pub(crate) fn wait_for(&mut self, text: &str, seconds: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !self.received.contains(text) {
            if self.ended || Instant::now() > deadline {
                return false;
            }
            self.read_some();
        }
        true
    }

    /// Reads until the server ends the answer (the last chunk, or the
    /// connection closed); how long that took, or `None` after `seconds`.
    fn wait_end(&mut self, seconds: u64) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(seconds) {
            if self.ended || self.received.ends_with("\r\n0\r\n\r\n") {
                return Some(started.elapsed());
            }
            self.read_some();
        }
        None
    }
}

fn watch_path(setup: &Setup, query: &str) -> String {
    format!("/v1/projects/{}/watch{query}", setup.project)
}

#[test]
fn every_project_role_may_watch_and_a_prefix_token_only_inside_its_prefix() {
    let setup = Setup::new("p", json!({}));
    for role in ["read", "write", "manage"] {
        let client = setup.client(role);
        let mut open = Open::get(&client, &watch_path(&setup, ""));
        assert_eq!(open.status, 200, "{role}");
        assert!(open.wait_for("event: sync", 5), "{role}: {}", open.received);
    }
    let (scoped, _) = setup.token(json!({"role": "read", "prefix": "app/"}));
    assert_eq!(
        Open::get(&scoped, &watch_path(&setup, "?prefix=other/")).status,
        403
    );
    let mut open = Open::get(&scoped, &watch_path(&setup, ""));
    expect_status(&setup.manage.put(&kv("p", "other/x"), b"v"), 201);
    expect_status(&setup.manage.put(&kv("p", "app/x"), b"v"), 201);
    assert!(open.wait_for("\"key\":\"app/x\"", 5), "{}", open.received);
    assert!(!open.received.contains("other/x"), "{}", open.received);

    // Another project's token: as if the project did not exist.
    let other = setup
        .admin
        .with_token(&setup.admin.create_project("q", json!({})));
    assert_eq!(Open::get(&other, &watch_path(&setup, "")).status, 404);
    let nobody = setup.admin.with_token("kvs_not-a-token");
    assert_eq!(Open::get(&nobody, &watch_path(&setup, "")).status, 401);
}

#[test]
fn a_watch_ends_when_its_token_is_revoked_or_its_project_stops_listing_keys_or_is_deleted() {
    let setup = Setup::new("p", json!({}));
    let (reader, minted) = setup.token(json!({"role": "read"}));
    let mut revoked = Open::get(&reader, &watch_path(&setup, ""));
    assert!(revoked.wait_for("event: sync", 5));
    let writer = setup.client("write");
    let mut hidden = Open::get(&writer, &watch_path(&setup, ""));
    assert!(hidden.wait_for("event: sync", 5));
    let mut deleted = Open::get(&setup.manage, &watch_path(&setup, ""));
    assert!(deleted.wait_for("event: sync", 5));

    let token = minted["id"].as_str().unwrap();
    let path = format!("/v1/projects/p/tokens/{token}");
    expect_status(&setup.manage.delete(&path), 204);
    let took = revoked
        .wait_end(5)
        .expect("the revoked token's watch is still open");
    assert!(took < Duration::from_millis(1500), "ended after {took:?}");
    assert!(
        !hidden.received.ends_with("0\r\n\r\n"),
        "another watch ended too"
    );

    let patched = setup
        .manage
        .patch_json("/v1/projects/p", &json!({"keys_discoverable": false}));
    expect_status(&patched, 200);
    assert!(
        hidden.wait_end(5).is_some(),
        "a write token still watches a hidden project"
    );
    assert!(
        deleted.wait_for("event: sync", 0),
        "a manage token may watch a hidden project"
    );
    assert_eq!(deleted.wait_end(0), None, "the manage token's watch ended");

    expect_status(&setup.admin.delete("/v1/projects/p"), 204);
    assert!(
        deleted.wait_end(5).is_some(),
        "the watch of a deleted project is still open"
    );
}

/// The contract clamps `wait` above 5 minutes, however long; only a zero or
/// malformed one is refused.
#[test]
fn a_blocking_read_clamps_a_long_wait_and_refuses_a_malformed_one() {
    let setup = Setup::new("p", json!({}));
    setup.manage.put(&kv("p", "k"), b"v");
    // Written above revision 0 already: answered at once.
    for wait in ["3651d", "99999999999999999999999d", "10m"] {
        let answer = setup
            .manage
            .get(&format!("{}?wait={wait}&after=0", kv("p", "k")));
        expect_status(&answer, 200);
        assert_eq!(answer.body, b"v");
    }
    for wait in ["0", "-1", "5x", ""] {
        let answer = setup
            .manage
            .get(&format!("{}?wait={wait}&after=0", kv("p", "k")));
        expect_error(&answer, 400, "bad_request");
    }
}

#[test]
fn a_blocking_read_of_a_revoked_token_ends_with_401() {
    let setup = Setup::new("p", json!({}));
    let version = setup.manage.put(&kv("p", "k"), b"v").json()["version"].clone();
    let (reader, minted) = setup.token(json!({"role": "read"}));
    let path = format!("{}?wait=60s&after={version}", kv("p", "k"));
    let mut waiting = Open::get_later(&reader, &path);
    std::thread::sleep(Duration::from_millis(300));
    let token = minted["id"].as_str().unwrap();
    expect_status(
        &setup
            .manage
            .delete(&format!("/v1/projects/p/tokens/{token}")),
        204,
    );
    let started = Instant::now();
    let status = waiting
        .status(5)
        .expect("the blocking read is still waiting");
    assert_eq!(status, 401);
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn a_blocking_read_of_a_project_deleted_meanwhile_ends_with_404() {
    let setup = Setup::new("p", json!({}));
    let version = setup.manage.put(&kv("p", "k"), b"v").json()["version"].clone();
    let path = format!("{}?wait=60s&after={version}", kv("p", "k"));
    let mut waiting = Open::get_later(&setup.admin, &path);
    std::thread::sleep(Duration::from_millis(300));
    expect_status(&setup.admin.delete("/v1/projects/p"), 204);
    assert_eq!(waiting.status(2), Some(404));
}

#[test]
fn a_since_older_than_the_history_is_410_with_the_compact_revision() {
    let setup = Setup::new("m", json!({"storage": "memory"}));
    let version = setup.manage.put(&kv("m", "k"), b"v").json()["version"]
        .as_u64()
        .unwrap();
    // A memory project's history starts again at each restart.
    let setup = setup.restart();
    let path = format!("/v1/projects/m/watch?since={version}");
    let answer = setup.manage.get(&path);
    expect_status(&answer, 410);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "history_compacted", "{body}");
    let compacted = body["compact_revision"].as_u64().unwrap();
    assert!(compacted >= version, "{compacted} < {version}");
    let mut resumed = Open::get(
        &setup.manage,
        &format!("/v1/projects/m/watch?since={compacted}"),
    );
    assert_eq!(resumed.status, 200);
    assert!(resumed.wait_for("event: sync", 5));
    for bad in ["x", "-1", "1.5"] {
        let answer = setup
            .manage
            .get(&format!("/v1/projects/m/watch?since={bad}"));
        expect_error(&answer, 400, "bad_request");
    }
}

#[test]
fn last_event_id_wins_over_since_as_an_event_source_reconnecting_sends_both() {
    let setup = Setup::new("p", json!({}));
    let versions: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|k| {
            setup.manage.put(&kv("p", k), b"v").json()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let header = format!("Last-Event-ID: {}\r\n", versions[1]);
    let mut open = Open::get_with(&setup.manage, &watch_path(&setup, "?since=0"), &header);
    assert!(open.wait_for("event: sync", 5), "{}", open.received);
    assert!(open.received.contains("\"key\":\"c\""), "{}", open.received);
    assert!(
        !open.received.contains("\"key\":\"b\""),
        "{}",
        open.received
    );
    assert!(
        !open.received.contains("\"key\":\"a\""),
        "{}",
        open.received
    );
}

#[test]
fn stopping_the_server_ends_open_watches_and_blocking_reads_at_once() {
    let setup = Setup::new("p", json!({}));
    setup.manage.put(&kv("p", "k"), b"v");
    let mut open = Open::get(&setup.manage, &watch_path(&setup, ""));
    assert!(open.wait_for("event: sync", 5));
    let mut waiting = Open::get_later(&setup.manage, &format!("{}?wait=5m", kv("p", "k")));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let setup = setup.restart();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the restart waited {:?} for open streams",
        started.elapsed()
    );
    assert!(open.wait_end(1).is_some());
    assert_eq!(
        waiting.status(1),
        Some(200),
        "the blocking read answers the current state"
    );
    drop(setup);
}

/// A request whose answer is read later (a blocking read).
struct Later(std::thread::JoinHandle<u16>);

impl Open {
    fn get_later(api: &Api, path: &str) -> Later {
        let (api, path) = (api.clone(), path.to_owned());
        Later(std::thread::spawn(move || api.get(&path).status))
    }
}

impl Later {
    /// The status, if it came within `seconds`.
    fn status(&mut self, seconds: u64) -> Option<u16> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !self.0.is_finished() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let handle = std::mem::replace(&mut self.0, std::thread::spawn(|| 0));
        handle.join().ok()
    }
}

/// The blocks of a chunked event stream received so far (the chunk framing
/// taken off), each block's lines without their trailing blank line.
fn blocks(received: &str) -> Vec<Vec<String>> {
    let mut body = String::new();
    let mut rest = received;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size + 2 {
            break;
        }
        body.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    body.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| block.lines().map(str::to_owned).collect())
        .collect()
}

#[test]
fn retry_travels_in_the_first_events_block_and_never_in_a_block_of_its_own() {
    let setup = Setup::new("p", json!({}));
    // A fresh watch: the first block is its `sync`.
    let mut fresh = Open::get(&setup.manage, &watch_path(&setup, ""));
    assert!(fresh.wait_for("event: sync", 5), "{}", fresh.received);
    let first = &blocks(&fresh.received)[0];
    assert_eq!(first[0], "retry: 2000", "{first:?}");
    assert!(first.contains(&"event: sync".to_owned()), "{first:?}");

    // A replay: the first block is the first replayed change.
    expect_status(&setup.manage.put(&kv("p", "a"), b"v"), 201);
    expect_status(&setup.manage.put(&kv("p", "b"), b"v"), 201);
    let mut replay = Open::get(&setup.manage, &watch_path(&setup, "?since=0"));
    assert!(replay.wait_for("event: sync", 5), "{}", replay.received);
    let all = blocks(&replay.received);
    assert_eq!(all[0][0], "retry: 2000", "{all:?}");
    assert!(all[0].contains(&"event: put".to_owned()), "{all:?}");
    for block in &all {
        // Every block is an event with data (none that an SSE library
        // would hand over as an empty message).
        assert!(
            block.iter().any(|line| line.starts_with("data: {")),
            "a block without data: {block:?}"
        );
        let retries = block.iter().filter(|l| l.starts_with("retry:")).count();
        assert!(retries <= 1, "{block:?}");
    }
    let retries = all
        .iter()
        .flatten()
        .filter(|l| l.starts_with("retry:"))
        .count();
    assert_eq!(retries, 1, "{all:?}");
}

#[test]
fn a_since_last_event_id_or_after_beyond_the_current_revision_is_400_revision_in_future() {
    let setup = Setup::new("p", json!({}));
    let version = setup.manage.put(&kv("p", "k"), b"v").json()["version"]
        .as_u64()
        .unwrap();
    let ahead = version + 1000;
    let answer = setup
        .manage
        .get(&watch_path(&setup, &format!("?since={ahead}")));
    let message = expect_error(&answer, 400, "revision_in_future");
    assert!(message.contains("since"), "{message}");
    assert!(
        message.contains(&format!("revision {version}")),
        "{message}"
    );

    let header = format!("Last-Event-ID: {ahead}\r\n");
    let mut open = Open::get_with(&setup.manage, &watch_path(&setup, "?since=0"), &header);
    assert_eq!(open.status, 400, "{}", open.received);
    assert!(open.wait_for("revision_in_future", 5), "{}", open.received);

    let answer = setup
        .manage
        .get(&format!("{}?wait=30s&after={ahead}", kv("p", "k")));
    let message = expect_error(&answer, 400, "revision_in_future");
    assert!(message.contains("after"), "{message}");

    // The current revision itself is fine: a watch resumes from it, and a
    // blocking read waits past it.
    let mut current = Open::get(
        &setup.manage,
        &watch_path(&setup, &format!("?since={version}")),
    );
    assert_eq!(current.status, 200);
    assert!(current.wait_for("event: sync", 5), "{}", current.received);
    let answer = setup
        .manage
        .get(&format!("{}?wait=1s&after={version}", kv("p", "k")));
    expect_status(&answer, 200);
}

#[test]
fn an_anonymous_watch_of_a_public_project_ends_when_an_admin_closes_the_project() {
    let setup = Setup::new("p", json!({"public": "read"}));
    let anonymous = setup.anonymous();
    let mut watch = Open::get(&anonymous, &watch_path(&setup, ""));
    assert_eq!(watch.status, 200, "{}", watch.received);
    assert!(watch.wait_for("event: sync", 5), "{}", watch.received);
    let version = crate::support::put(&setup.manage, &kv("p", "later"), b"v");
    let blocking_path = format!("{}?wait=30s&after={version}", kv("p", "later"));
    let mut blocking = Open::get_later(&anonymous, &blocking_path);
    expect_status(&setup.manage.put(&kv("p", "a"), b"v"), 201);
    assert!(watch.wait_for("\"key\":\"a\"", 5), "{}", watch.received);

    let closed = setup
        .admin
        .patch_json(&setup.path(""), &json!({"public": "none"}));
    expect_status(&closed, 200);
    let took = watch
        .wait_end(5)
        .expect("the anonymous watch is still open");
    assert!(took < Duration::from_millis(1500), "ended after {took:?}");
    assert_eq!(
        blocking.status(5),
        Some(401),
        "the anonymous blocking read ends as a revoked token's"
    );
    assert_eq!(Open::get(&anonymous, &watch_path(&setup, "")).status, 401);
}

/// The bytes of every file under `dir`.
fn size_of_dir(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                size_of_dir(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn overwriting_large_values_keeps_the_data_directory_within_the_history_byte_limits() {
    const VALUE: usize = 100_000;
    const KEYS: usize = 10;
    let (per_project, total) = (2u64 << 20, 3u64 << 20);
    let server = TestServer::start_with(|settings| {
        settings.watch_history.max_bytes = per_project;
        settings.watch_history.max_total_bytes = total;
    });
    let admin = Api::new(&server.url, Some(&server.admin_token));
    for project in ["a", "b"] {
        admin.create_project(project, json!({}));
    }
    let value = vec![b'v'; VALUE];
    let empty = size_of_dir(&server.data_dir);
    let mut first = None;
    for round in 0..40 {
        for project in ["a", "b"] {
            for key in 0..KEYS {
                let answer = admin.put(&kv(project, &format!("k{key}")), &value);
                assert!(answer.status < 300, "{}", answer.text());
                first.get_or_insert(answer.json()["version"].as_u64().unwrap());
            }
        }
        if round == 0 {
            println!("after one round: {} bytes", size_of_dir(&server.data_dir));
        }
    }
    let live = 2 * (KEYS * VALUE) as u64;
    let size = size_of_dir(&server.data_dir);
    // 40 MB written per project, 80 MB in all; the empty store's own size
    // and 4 MiB for the pages a commit frees only for the next one (and
    // redb's growth steps) are the slack.
    let bound = empty + live + total + (4 << 20);
    println!("data directory: {size} bytes (empty {empty}, live {live}, bound {bound})");
    assert!(size <= bound, "{size} bytes on disk for {live} live bytes");
    // A watch from before the trimmed history is told so.
    let first = first.unwrap();
    let answer = admin.get(&format!("/v1/projects/a/watch?since={first}"));
    expect_status(&answer, 410);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "history_compacted", "{body}");
    let compacted = body["compact_revision"].as_u64().unwrap();
    assert!(compacted > first, "{compacted} <= {first}");
    let mut resumed = Open::get(&admin, &format!("/v1/projects/a/watch?since={compacted}"));
    assert_eq!(resumed.status, 200);
    assert!(resumed.wait_for("event: sync", 5));
}

/// A watcher of a project that was deleted and created again may resume
/// from a revision of the old project: the new project's history does not
/// hold the old keys' end, so it is 410 with the revision to resume from,
/// never a stream that leaves the old keys in the watcher's view. That
/// holds whether or not anything was written in between.
#[test]
fn resuming_a_watch_of_a_project_deleted_and_created_again_is_410() {
    for storage in ["disk", "memory"] {
        let setup = Setup::new("re", json!({ "storage": storage }));
        let admin = &setup.admin;
        let old = admin.put(&kv("re", "old"), b"1").json()["version"]
            .as_u64()
            .unwrap();
        expect_status(&admin.delete("/v1/projects/re"), 204);
        admin.create_project("re", json!({ "storage": storage }));
        let new = admin.put(&kv("re", "new"), b"2").json()["version"]
            .as_u64()
            .unwrap();

        let answer = admin.get(&format!("/v1/projects/re/watch?since={old}"));
        expect_status(&answer, 410);
        let body = answer.json();
        assert_eq!(body["error"]["code"], "history_compacted", "{body}");
        let from = body["compact_revision"].as_u64().unwrap();
        assert!(
            old < from && from < new,
            "{storage}: {old} < {from} < {new}"
        );
        // From there, the new project's changes.
        let mut resumed = Open::get(admin, &format!("/v1/projects/re/watch?since={from}"));
        assert_eq!(resumed.status, 200);
        assert!(resumed.wait_for("event: sync", 5), "{}", resumed.received);
        assert!(
            resumed.received.contains("\"key\":\"new\""),
            "{}",
            resumed.received
        );
        assert!(!resumed.received.contains("\"key\":\"old\""));
    }
}
