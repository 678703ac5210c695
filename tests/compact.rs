//! `kvs compact`, end to end with the real binary. On a stopped server's
//! data directory: the file shrinks, and everything a client can see stays
//! as it was (values, versions, times, expiries, large values, the figures,
//! the watch history); a running server's store is refused; the writes
//! that only the write-ahead log held when the server was killed are still
//! there after a compaction; a compaction cut short leaves the store as it
//! was; a table it does not know is refused. On a running server: the same
//! while reads and writes go on, and the log works on the new file. On a
//! read-only mount, `kvs verify --data-dir` reads the store and `kvs
//! compact` refuses it.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, TableDefinition};
use serde_json::{Value, json};

use common::{Client, Run, ServerProcess, fake_secret, kv, run};

/// `kvs COMMAND` against the server at `url`, as `token`.
fn online(command: &str, url: &str, token: &str) -> Run {
    let mut kvs = Command::new(env!("CARGO_BIN_EXE_kvs"));
    kvs.arg(command).env("KVS_URL", url).env("KVS_TOKEN", token);
    run(kvs, b"")
}

/// `kvs COMMAND --data-dir DIR`.
fn offline(command: &str, dir: &Path) -> Run {
    let mut kvs = Command::new(env!("CARGO_BIN_EXE_kvs"));
    kvs.arg(command).arg("--data-dir").arg(dir);
    run(kvs, b"")
}

fn file_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("kvs.redb")).unwrap().len()
}

/// Key `i` of `n`, visited in a scattered order (7919 is prime, so `i`
/// from 0 to n-1 visits every key once when n is not a multiple of it).
fn scattered(i: usize, n: usize) -> String {
    format!("k/{:06}", (i * 7919) % n)
}

/// Fills project `p` with `n` keys ([`fill_project`]).
fn fill(client: &Client, n: usize) {
    fill_project(client, "p", n);
}

/// Fills a project: `n` keys imported in a scattered order, overwrites,
/// deletes, large values (the values table), expiries (the expiry index).
fn fill_project(client: &Client, project: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let keys: Vec<Value> = chunk
            .iter()
            .map(|&i| json!({"key": scattered(i, n), "value": format!("{i:0>300}")}))
            .collect();
        let answer = client.post_json(
            &format!("/v1/projects/{project}/import"),
            &json!({ "keys": keys }),
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    for i in (0..n).step_by(7) {
        let put = client.put(
            &kv(project, &scattered(i, n)),
            format!("again {i}").as_bytes(),
        );
        assert!(put.status < 300, "{}", put.text());
    }
    for i in (3..n).step_by(11) {
        let delete = client.delete(&kv(project, &scattered(i, n)));
        assert!(delete.status < 300, "{}", delete.text());
    }
    for i in 0..20 {
        let large = vec![b'a' + (i % 26) as u8; 10_000 + i];
        let put = client.put(&kv(project, &format!("large/{i:02}")), &large);
        assert_eq!(put.status, 201, "{}", put.text());
        let put = client.put(
            &format!("{}?ttl=30d", kv(project, &format!("ttl/{i:02}"))),
            b"x",
        );
        assert_eq!(put.status, 201, "{}", put.text());
    }
}

/// A server on a new data directory, with project `p` (disk) filled by
/// [`fill`].
struct Filled {
    /// Removed when dropped.
    _dir: tempfile::TempDir,
    data: PathBuf,
    admin: String,
    server: ServerProcess,
    /// `p`'s manage token, and a client of `p` with it.
    token: String,
    client: Client,
}

fn filled(n: usize) -> Filled {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = fake_secret();
    let server = ServerProcess::start(&data, &admin);
    let token = server
        .admin()
        .create_project("p", json!({"storage": "disk"}));
    let client = Client::new(&server.url, Some(&token));
    fill(&client, n);
    Filled {
        _dir: dir,
        data,
        admin,
        server,
        token,
        client,
    }
}

/// Puts 100 keys under `prefix` in project `p`, one request each: the
/// last of them are in the write-ahead log only for up to a second (redb's
/// durable commit, the checkpoint, comes every 100 ms to 1 s). Answers each
/// key with the version its write was acknowledged at.
fn late_writes(client: &Client, prefix: &str) -> Vec<(String, u64)> {
    (0..100)
        .map(|i| {
            let key = format!("{prefix}{i:03}");
            let put = client.put(&kv("p", &key), format!("late {i}").as_bytes());
            assert_eq!(put.status, 201, "{}", put.text());
            (key, put.json()["version"].as_u64().unwrap())
        })
        .collect()
}

/// Each key of `p` is there at the version its write was acknowledged at.
fn assert_kept(client: &Client, acknowledged: &[(String, u64)]) {
    for (key, version) in acknowledged {
        let got = client.get(&format!("{}?meta=true", kv("p", key)));
        assert_eq!(got.status, 200, "{key}: {}", got.text());
        assert_eq!(got.json()["version"].as_u64(), Some(*version), "{key}");
    }
}

/// The server started again; a client of `p` on it.
fn restarted(server: &mut ServerProcess, token: &str) -> Client {
    server.restart();
    Client::new(&server.url, Some(token))
}

/// Stops the server, compacts its data offline, starts it again: what a
/// client of `p` reads then.
fn compacted_offline(server: &mut ServerProcess, data: &Path, token: &str) -> Vec<Value> {
    assert_eq!(server.terminate(), Some(0));
    offline("compact", data).ok();
    everything(&restarted(server, token))
}

/// Everything a client can read of project `p` ([`everything_in`]).
fn everything(client: &Client) -> Vec<Value> {
    everything_in(client, "p")
}

/// Everything a client can read of a project: its figures, and every key
/// with its value, version, times and expiry, page after page.
fn everything_in(client: &Client, id: &str) -> Vec<Value> {
    let project = client.get(&format!("/v1/projects/{id}"));
    assert_eq!(project.status, 200, "{}", project.text());
    let mut seen = vec![project.json()];
    let mut cursor = String::new();
    loop {
        let page = client.get(&format!(
            "/v1/projects/{id}/kv?values=true&limit=1000{cursor}"
        ));
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let next = page["cursor"].as_str().map(str::to_owned);
        seen.push(page);
        match next {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return seen,
        }
    }
}

/// [`everything_in`] but the listing pages' `revision`, the server's,
/// which writes to another project move.
fn everything_but_revisions(client: &Client, id: &str) -> Vec<Value> {
    let mut seen = everything_in(client, id);
    for page in seen.iter_mut().skip(1) {
        page.as_object_mut().unwrap().remove("revision");
    }
    seen
}

/// The watch history of project `p` ([`history_of`]).
fn history(url: &str, token: &str) -> Vec<String> {
    history_of(url, token, "p")
}

/// The watch history of a project from revision 0: the event lines sent
/// before `event: sync`.
fn history_of(url: &str, token: &str, project: &str) -> Vec<String> {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // HTTP/1.0: the body comes as it is, without chunk sizes between.
    write!(
        stream,
        "GET /v1/projects/{project}/watch?since=0&values=true HTTP/1.0\r\n\
         Host: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 65536];
    while started.elapsed() < Duration::from_secs(20) {
        let text = String::from_utf8_lossy(&received);
        if let Some(end) = text.find("event: sync") {
            assert!(text.starts_with("HTTP/1.0 200"), "{text}");
            return text[..end]
                .lines()
                .filter(|line| line.starts_with("data:") || line.starts_with("id:"))
                .map(str::to_owned)
                .collect();
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    }
    panic!(
        "no sync event within 20 s: {}",
        String::from_utf8_lossy(&received)
    );
}

#[test]
fn a_compacted_store_is_smaller_and_answers_every_read_as_before() {
    let Filled {
        _dir,
        data,
        mut server,
        token,
        client,
        ..
    } = filled(20_000);
    let before = everything(&client);
    let events = history(&server.url, &token);
    assert!(events.len() > 1000, "{}", events.len());

    // A running server's store is refused, and left as it is.
    let refused = offline("compact", &data);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("in use by a running server"),
        "{}",
        refused.stderr
    );
    assert_eq!(everything(&client), before);

    assert_eq!(server.terminate(), Some(0));
    let size = file_size(&data);
    let _ = std::process::Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg("/tmp/compact-dbg")
        .status();
    let done = offline("compact", &data);
    let said = done.ok();
    assert!(said.starts_with("compacted "), "{said}");
    let compacted = file_size(&data);
    eprintln!("kvs.redb: {size} bytes before, {compacted} after: {said}");
    // Random inserts leave the leaves about two thirds full; in key order
    // they come out full.
    assert!(
        compacted * 10 < size * 8,
        "{size} bytes before, {compacted} after"
    );
    let verified = offline("verify", &data);
    assert!(verified.ok().contains("no damage"), "{}", verified.text());

    let client = restarted(&mut server, &token);
    assert_eq!(everything(&client), before);
    assert_eq!(history(&server.url, &token), events);
    // Writes go on from the same revision.
    let revision = before[0]["revision"].as_u64().unwrap();
    let put = client.put(&kv("p", "after"), b"1");
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.json()["version"].as_u64(), Some(revision + 1));
    // Compacting a compacted store changes nothing a client sees either.
    let after = everything(&client);
    assert_eq!(compacted_offline(&mut server, &data, &token), after);
}

#[test]
fn writes_only_the_log_held_at_a_kill_are_still_there_after_a_compaction() {
    let Filled {
        _dir,
        data,
        mut server,
        token,
        client,
        ..
    } = filled(5_000);
    // Acknowledged just before the kill.
    let acknowledged = late_writes(&client, "late/");
    let before = everything(&client);
    server.kill();

    offline("compact", &data).ok();
    let client = restarted(&mut server, &token);
    assert_kept(&client, &acknowledged);
    assert_eq!(everything(&client), before);
}

#[test]
fn a_compaction_cut_short_leaves_the_store_and_what_it_left_is_removed() {
    let Filled {
        _dir,
        data,
        mut server,
        token,
        client,
        ..
    } = filled(2_000);
    let before = everything(&client);
    assert_eq!(server.terminate(), Some(0));

    // What a compaction killed while copying leaves behind: part of its
    // copy. The store is untouched; the server removes the copy at start.
    let partial = data.join("kvs.redb.compacting");
    let garbage = vec![0x5a; 100_000];
    std::fs::write(&partial, &garbage).unwrap();
    assert_eq!(everything(&restarted(&mut server, &token)), before);
    assert!(!partial.exists());

    // So does the next compaction.
    assert_eq!(server.terminate(), Some(0));
    std::fs::write(&partial, &garbage).unwrap();
    let compacted = offline("compact", &data);
    assert!(compacted.ok().starts_with("compacted "));
    assert!(!partial.exists());
    assert_eq!(everything(&restarted(&mut server, &token)), before);
}

#[test]
fn a_table_compact_does_not_know_is_refused_and_the_store_left_as_it_was() {
    let Filled {
        _dir,
        data,
        mut server,
        token,
        client,
        ..
    } = filled(1_000);
    let before = everything(&client);
    assert_eq!(server.terminate(), Some(0));
    // A table of some other release: copying it blindly could change what
    // it means, leaving it out would lose it.
    let other: TableDefinition<&str, &[u8]> = TableDefinition::new("later/things");
    {
        let db = redb::Database::open(data.join("kvs.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(other)
            .unwrap()
            .insert("a", b"b".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let refused = offline("compact", &data);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("later/things"),
        "{}",
        refused.stderr
    );
    assert!(!data.join("kvs.redb.compacting").exists());
    {
        let db = redb::Database::open(data.join("kvs.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(other).unwrap();
        assert_eq!(table.get("a").unwrap().unwrap().value(), b"b");
    }
    assert_eq!(everything(&restarted(&mut server, &token)), before);
}

#[test]
fn compact_refuses_what_is_not_a_stopped_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = offline("compact", &dir.path().join("nothing"));
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("holds no kvs.redb"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_running_server_compacts_while_reads_and_writes_go_on() {
    let Filled {
        _dir,
        data,
        admin,
        mut server,
        token,
        client,
    } = filled(20_000);
    let other = server
        .admin()
        .create_project("w", json!({"storage": "disk"}));
    // A memory project, compacted too (in memory).
    let memory = server
        .admin()
        .create_project("m", json!({"storage": "memory"}));
    let in_memory = Client::new(&server.url, Some(&memory));
    fill_project(&in_memory, "m", 5_000);
    let before = everything_but_revisions(&client, "p");
    let events = history(&server.url, &token);
    let memory_before = everything_but_revisions(&in_memory, "m");
    let memory_events = history_of(&server.url, &memory, "m");

    // Meanwhile a reader of p and a writer of w, each on its own thread:
    // every read answers as before, every write is acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, client) = (stop.clone(), client.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let got = client.get(&kv("p", "large/07"));
                assert_eq!(got.status, 200, "{}", got.text());
                assert_eq!(got.body, vec![b'h'; 10_007]);
                reads += 1;
            }
            reads
        })
    };
    let writer = {
        let (stop, client) = (stop.clone(), Client::new(&server.url, Some(&other)));
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = acknowledged.len();
                let put = client.put(&kv("w", &format!("n/{i:05}")), i.to_string().as_bytes());
                assert!(put.status < 300, "{}", put.text());
                acknowledged.push(i);
            }
            acknowledged.len()
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let said = online("compact", &server.url, &admin).ok();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    let writes = writer.join().unwrap();
    eprintln!("{said}{reads} reads, {writes} writes");
    assert!(reads > 0 && writes > 0, "{reads} reads, {writes} writes");
    // The sizes at the moment of the swap: the writes after it grow the
    // new file again (redb grows a file ahead of what it holds).
    let sizes: Vec<u64> = said
        .strip_prefix(&format!("compacted {}: kvs.redb from ", server.url))
        .and_then(|rest| rest.split_once(" bytes"))
        .map(|(sizes, _)| sizes.split(" to ").map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(sizes[1] * 10 < sizes[0] * 8, "{said}");
    assert!(everything_but_revisions(&client, "p") == before);
    assert_eq!(history(&server.url, &token), events);
    assert!(everything_but_revisions(&in_memory, "m") == memory_before);
    assert_eq!(history_of(&server.url, &memory, "m"), memory_events);
    let put = in_memory.put(&kv("m", "after"), b"1");
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(in_memory.get(&kv("m", "after")).body, b"1");
    let verified = online("verify", &server.url, &admin);
    assert!(verified.ok().contains("no damage"), "{}", verified.text());

    // Writes after it go to the new file, through the log: a kill right
    // after them loses none.
    let w = Client::new(&server.url, Some(&other));
    let acknowledged = late_writes(&client, "after/");
    let written = w.get("/v1/projects/w").json()["keys"].as_u64().unwrap();
    assert_eq!(written, writes as u64);
    server.kill();
    assert_kept(&restarted(&mut server, &token), &acknowledged);
    let w = Client::new(&server.url, Some(&other));
    assert_eq!(
        w.get("/v1/projects/w").json()["keys"].as_u64(),
        Some(written)
    );
    assert_eq!(server.terminate(), Some(0));
    assert!(offline("verify", &data).ok().contains("no damage"));
}

/// `kvs verify --data-dir` checks a stopped store on a read-only mount (a
/// snapshot or a backup volume): its file cannot be opened for writing, so
/// it is opened read-only; `kvs compact` refuses it, saying so. (Found by
/// an outside-in hunt: verify failed, "Read-only file system".) The mount
/// is a read-only bind mount in a mount namespace of its own, since a
/// chmod does not stop root: without `unshare` and the right to mount,
/// the test says so and checks nothing.
#[test]
fn verify_reads_a_stopped_store_on_a_read_only_mount() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = common::ServerProcess::start(&data, &common::fake_secret());
    let put = server.admin().put(&common::kv("default", "a"), b"v");
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(server.terminate(), Some(0));
    let mounted = dir.path().join("read-only");
    std::fs::create_dir(&mounted).unwrap();
    const SCRIPT: &str = r#"
        mount --make-rprivate / && mount --bind "$1" "$2" && mount -o remount,ro,bind "$2" \
            || exit 99
        touch "$2/probe" 2>/dev/null && exit 98
        "$3" verify --data-dir "$2"; echo "verify exit $?"
        "$3" compact --data-dir "$2"; echo "compact exit $?"
    "#;
    let output = Command::new("unshare")
        .args(["-m", "sh", "-c", SCRIPT, "sh"])
        .arg(&data)
        .arg(&mounted)
        .arg(env!("CARGO_BIN_EXE_kvs"))
        .output();
    let output = match output {
        Ok(output) if output.status.code() != Some(99) => output,
        _ => {
            println!("no read-only bind mount here (unshare -m and mount): not checked");
            return;
        }
    };
    let said = String::from_utf8_lossy(&output.stdout);
    let complained = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(98), "the mount took a write");
    assert!(said.contains("verify exit 0"), "{said}{complained}");
    assert!(said.contains("1 keys"), "{said}");
    assert!(said.contains("no damage"), "{said}");
    assert!(said.contains("compact exit 1"), "{said}{complained}");
    assert!(
        complained.contains("cannot be opened for writing"),
        "{complained}"
    );
}
