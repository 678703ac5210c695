//! Backup and restore, end to end with the real binary: a backup taken under
//! a concurrent write load restores to exactly the state at its revision
//! (derived from the writes the load saw acknowledged), on disk and memory
//! projects, with versions, times, settings and tokens; damaged backups and
//! occupied directories are refused; `--force` over a killed server's store
//! leaves none of the writes its write-ahead log held; scheduled backups
//! appear and are pruned.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Client, Run, ServerProcess, fake_secret, kv, run};

/// Runs `kvs` with these arguments, talking to `url` as `token`.
fn kvs(url: &str, token: &str, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command
        .args(args)
        .env("KVS_URL", url)
        .env("KVS_TOKEN", token);
    run(command, b"")
}

/// `kvs restore FILE --data-dir DIR`.
fn restore(file: &Path, dir: &Path) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command.arg("restore").arg(file).arg("--data-dir").arg(dir);
    run(command, b"")
}

/// `kvs restore FILE --data-dir DIR --force`: over a stopped store.
fn restore_force(file: &Path, dir: &Path) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .arg("--force");
    run(command, b"")
}

/// A key's state as an acknowledged write left it.
#[derive(Clone, Debug, PartialEq)]
struct Stored {
    value: Vec<u8>,
    content_type: String,
    version: u64,
    created_at: String,
    updated_at: String,
    expires_at: Value,
}

/// Every acknowledged write: (project, key) → [(revision, state after)].
type Log = Arc<Mutex<HashMap<(String, String), Vec<(u64, Option<Stored>)>>>>;

fn record(log: &Log, project: &str, key: &str, revision: u64, state: Option<Stored>) {
    log.lock()
        .unwrap()
        .entry((project.to_owned(), key.to_owned()))
        .or_default()
        .push((revision, state));
}

fn stored(meta: &Value, value: Vec<u8>) -> Stored {
    Stored {
        value,
        content_type: meta["content_type"].as_str().unwrap().to_owned(),
        version: meta["version"].as_u64().unwrap(),
        created_at: meta["created_at"].as_str().unwrap().to_owned(),
        updated_at: meta["updated_at"].as_str().unwrap().to_owned(),
        expires_at: meta["expires_at"].clone(),
    }
}

/// A small deterministic random source per thread.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// One writer of the load: puts (text, binary, large), transactions of two
/// puts and a delete, and incrs, on both projects, until `stop`.
fn load(client: Client, log: Log, seed: u64, stop: Arc<AtomicBool>) {
    let mut random = Lcg(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let project = ["disk1", "mem1"][random.next(2) as usize];
        let key = format!("k{:02}", random.next(16));
        match random.next(4) {
            0 => {
                let (value, content_type) = match random.next(3) {
                    0 => (format!("{seed}-{n}").into_bytes(), "text/plain"),
                    1 => (vec![0xff, 0x00, seed as u8, n as u8], "image/x-test"),
                    _ => (vec![b'L'; 3000 + n as usize % 50], "application/x-large"),
                };
                let answer = client.send(
                    "PUT",
                    &kv(project, &key),
                    Some(&value),
                    &[("Content-Type", content_type)],
                );
                assert!(matches!(answer.status, 200 | 201), "{}", answer.text());
                let meta = answer.json();
                let revision = meta["version"].as_u64().unwrap();
                record(&log, project, &key, revision, Some(stored(&meta, value)));
            }
            1 => {
                let other = format!("k{:02}", random.next(16));
                let gone = format!("k{:02}", random.next(16));
                let body = json!({"ops": [
                    {"op": "put", "key": key, "value": format!("t{seed}-{n}")},
                    {"op": "put", "key": other, "value": format!("u{seed}-{n}")},
                    {"op": "delete", "key": gone},
                ]});
                let answer = client.post_json(&format!("/v1/projects/{project}/txn"), &body);
                assert_eq!(answer.status, 200, "{}", answer.text());
                let answer = answer.json();
                let revision = answer["revision"].as_u64().unwrap();
                // Ops on one key fold: the last op on a key decides its state.
                let mut states: BTreeMap<String, Option<Stored>> = BTreeMap::new();
                for (index, op) in body["ops"].as_array().unwrap().iter().enumerate() {
                    let name = op["key"].as_str().unwrap().to_owned();
                    let state = match op["op"].as_str().unwrap() {
                        "put" => {
                            let value = op["value"].as_str().unwrap().as_bytes().to_vec();
                            Some(stored(&answer["results"][index], value))
                        }
                        _ => None,
                    };
                    states.insert(name, state);
                }
                for (name, state) in states {
                    record(&log, project, &name, revision, state);
                }
            }
            2 => {
                let answer = client.post_json(
                    &format!("/v1/projects/{project}/txn"),
                    &json!({"ops": [{"op": "delete", "key": key}]}),
                );
                assert_eq!(answer.status, 200, "{}", answer.text());
                let answer = answer.json();
                // Deleting a key that is not there writes nothing and takes
                // no revision of the project's (the answer's revision is
                // the server's, perhaps another project's write).
                if answer["results"][0]["deleted"] == json!(true) {
                    let revision = answer["revision"].as_u64().unwrap();
                    record(&log, project, &key, revision, None);
                }
            }
            _ => {
                let counter = format!("n{}", random.next(3));
                let answer = client.send(
                    "POST",
                    &format!("/v1/projects/{project}/incr/{counter}?by=3"),
                    None,
                    &[],
                );
                assert_eq!(answer.status, 200, "{}", answer.text());
                let meta = answer.json();
                let value = meta["value"].as_i64().unwrap().to_string().into_bytes();
                let revision = meta["version"].as_u64().unwrap();
                record(
                    &log,
                    project,
                    &counter,
                    revision,
                    Some(stored(&meta, value)),
                );
            }
        }
    }
}

/// The state at `revision`: each key's last acknowledged write up to it.
fn state_at(log: &Log, revision: u64) -> BTreeMap<(String, String), Stored> {
    let mut state = BTreeMap::new();
    for (key, writes) in log.lock().unwrap().iter() {
        let last = writes
            .iter()
            .filter(|(r, _)| *r <= revision)
            .max_by_key(|(r, _)| *r);
        if let Some((_, Some(value))) = last {
            state.insert(key.clone(), value.clone());
        }
    }
    state
}

/// What a server holds now, read through the API.
fn state_of(client: &Client, projects: &[&str]) -> BTreeMap<(String, String), Stored> {
    let mut state = BTreeMap::new();
    for project in projects {
        let listing = client.get(&format!("/v1/projects/{project}/kv?limit=1000"));
        assert_eq!(listing.status, 200, "{}", listing.text());
        let listing = listing.json();
        assert!(listing["cursor"].is_null());
        for meta in listing["keys"].as_array().unwrap() {
            let key = meta["key"].as_str().unwrap();
            let raw = client.get(&kv(project, key));
            assert_eq!(raw.status, 200);
            let version = meta["version"].as_u64().unwrap();
            assert_eq!(raw.header("etag"), Some(format!("\"{version}\"").as_str()));
            assert_eq!(raw.header("content-type"), meta["content_type"].as_str());
            state.insert(
                (project.to_string(), key.to_owned()),
                stored(meta, raw.body.clone()),
            );
        }
    }
    state
}

#[test]
fn a_backup_taken_under_load_restores_exactly_the_state_at_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let admin_secret = fake_secret();
    let mut server = ServerProcess::start(&dir.path().join("original"), &admin_secret);
    let admin = server.admin();
    admin.create_project(
        "disk1",
        json!({"keys_discoverable": false, "max_keys": 100000}),
    );
    admin.create_project(
        "mem1",
        json!({"storage": "memory", "max_value_bytes": 8192, "public": "read"}),
    );
    let second_admin = admin.post_json("/v1/tokens", &json!({"name": "second"}));
    let second_admin = second_admin.json()["secret"].as_str().unwrap().to_owned();
    let writer = admin.mint("disk1", json!({"role": "write", "prefix": "k"}));
    let reader = admin.mint("mem1", json!({"role": "read"}));

    let log: Log = Arc::default();
    // A key that expires in an hour, with its expiry to restore.
    let answer = admin.put(&format!("{}?ttl=3600", kv("disk1", "ttl")), b"soon");
    let meta = answer.json();
    record(
        &log,
        "disk1",
        "ttl",
        meta["version"].as_u64().unwrap(),
        Some(stored(&meta, b"soon".to_vec())),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..6)
        .map(|seed| {
            let (client, log, stop) = (admin.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || load(client, log, seed + 1, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let file = dir.path().join("backup.jsonl");
    let started = Instant::now();
    let backup = kvs(
        &server.url,
        &admin_secret,
        &["backup", file.to_str().unwrap()],
    );
    println!("kvs backup under load: {:?}", started.elapsed());
    assert!(backup.ok().starts_with("backed up revision"));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(!dir.path().join("backup.jsonl.tmp").exists());
    let text = std::fs::read_to_string(&file).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let revision = header["revision"].as_u64().unwrap();
    let writes: Vec<u64> = log
        .lock()
        .unwrap()
        .values()
        .flatten()
        .map(|(r, _)| *r)
        .collect();
    println!(
        "{} acknowledged writes, {} up to the backup's revision {revision}",
        writes.len(),
        writes.iter().filter(|r| **r <= revision).count()
    );
    assert!(
        writes.iter().any(|r| *r > revision),
        "no write after the backup"
    );
    assert!(
        writes.iter().filter(|r| **r <= revision).count() > 50,
        "too few writes before the backup"
    );
    assert!(!text.contains(&admin_secret) && !text.contains(&writer));

    let original_projects: Vec<Value> = ["disk1", "mem1"]
        .iter()
        .map(|p| admin.get(&format!("/v1/projects/{p}")).json())
        .collect();
    // A token minted after the backup is not in it.
    let later = admin.mint("disk1", json!({"role": "read"}));
    server.terminate();
    let restored_dir = dir.path().join("restored");
    let restored = restore(&file, &restored_dir);
    // Both data directories are this user's only: the store holds every
    // value and the tokens' digests.
    use std::os::unix::fs::PermissionsExt;
    for made in [dir.path().join("original"), restored_dir.clone()] {
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: {mode:o}", made.display());
    }
    assert!(
        restored
            .ok()
            .starts_with(&format!("restored revision {revision}"))
    );
    let restored = ServerProcess::start(&restored_dir, &admin_secret);
    let admin = restored.admin();

    // The server resumes well past the backup's revision: the original may
    // have handed out revisions after it, and none is handed out twice.
    let resumed = revision + kvs::store::redb_engine::RESTORE_REVISION_BUMP;
    let status = admin.get("/v1/status").json();
    assert_eq!(status["revision"], json!(resumed));
    let expected = state_at(&log, revision);
    assert!(expected.keys().any(|(p, _)| p == "mem1"));
    assert!(expected.keys().any(|(p, _)| p == "disk1"));
    let found = state_of(&admin, &["disk1", "mem1"]);
    assert_eq!(found.len(), expected.len());
    for (key, value) in &expected {
        assert_eq!(found.get(key), Some(value), "{key:?}");
    }
    assert_ne!(
        expected[&("disk1".to_owned(), "ttl".to_owned())].expires_at,
        Value::Null
    );

    // Projects: the same settings, and the figures of that revision.
    for original in &original_projects {
        let id = original["id"].as_str().unwrap();
        let project = admin.get(&format!("/v1/projects/{id}")).json();
        for field in [
            "storage",
            "keys_discoverable",
            "max_value_bytes",
            "max_keys",
            "public",
            "created_at",
        ] {
            assert_eq!(project[field], original[field], "{id} {field}");
        }
        let mine = |(p, _): &&(String, String)| p == id;
        let last_write = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(key, _)| mine(key))
            .flat_map(|(_, writes)| writes.iter().map(|(r, _)| *r))
            .filter(|r| *r <= revision)
            .max()
            .unwrap();
        assert_eq!(project["revision"], json!(last_write), "{id}");
        let keys: Vec<_> = expected.iter().filter(|(k, _)| mine(k)).collect();
        assert_eq!(project["keys"], json!(keys.len()), "{id}");
        let bytes: usize = keys.iter().map(|(_, v)| v.value.len()).sum();
        assert_eq!(project["bytes"], json!(bytes), "{id}");
    }

    // Tokens work with the same secrets; a new write comes after the backup.
    let second = admin.with_token(&second_admin);
    assert_eq!(second.get("/v1/status").status, 200);
    assert_eq!(
        admin.with_token(&later).get(&kv("disk1", "k01")).status,
        401
    );
    let reader = admin.with_token(&reader);
    let n0 = expected.contains_key(&("mem1".to_owned(), "n0".to_owned()));
    let status = reader.get(&kv("mem1", "n0")).status;
    assert_eq!(status, if n0 { 200 } else { 404 });
    assert_eq!(reader.put(&kv("mem1", "x"), b"v").status, 403);
    let writer = admin.with_token(&writer);
    let answer = writer.put(&kv("disk1", "knew"), b"after");
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert!(answer.json()["version"].as_u64().unwrap() > resumed);
    // The change log is not in a backup: a watch from before the restore,
    // even from past the backup's revision, is told so.
    for since in [1, revision, revision + 10] {
        let watch = admin.get(&format!("/v1/projects/disk1/watch?since={since}"));
        assert_eq!(watch.status, 410, "{}", watch.text());
        assert_eq!(watch.json()["compact_revision"], json!(resumed));
    }
}

#[test]
fn restore_refuses_damaged_backups_and_occupied_directories() {
    let dir = tempfile::tempdir().unwrap();
    let secret = fake_secret();
    let server = ServerProcess::start(&dir.path().join("original"), &secret);
    let admin = server.admin();
    for n in 0..50 {
        assert_eq!(
            admin.put(&kv("default", &format!("k{n}")), b"v").status,
            201
        );
    }
    let file = dir.path().join("whole.jsonl");
    kvs(&server.url, &secret, &["backup", file.to_str().unwrap()]).ok();
    let whole = std::fs::read(&file).unwrap();

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", whole[..whole.len() / 2].to_vec(), "truncated"),
        (
            "no-trailer",
            whole[..whole.len()
                - 1
                - whole[..whole.len() - 1]
                    .iter()
                    .rev()
                    .position(|b| *b == b'\n')
                    .unwrap()]
                .to_vec(),
            "truncated",
        ),
        (
            "changed",
            String::from_utf8(whole.clone())
                .unwrap()
                .replacen("\"value\":\"v\"", "\"value\":\"w\"", 1)
                .into_bytes(),
            "checksum",
        ),
        ("empty", Vec::new(), "empty"),
    ];
    for (name, bytes, message) in cases {
        let damaged = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&damaged, bytes).unwrap();
        let target = dir.path().join(name);
        let answer = restore(&damaged, &target);
        assert_eq!(answer.code, 1, "{name}: {}", answer.stderr);
        assert!(answer.stderr.contains(message), "{name}: {}", answer.stderr);
        // Nothing is left that a server would open as a store.
        let left: Vec<_> = std::fs::read_dir(&target)
            .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{name} left {left:?}");
    }

    // A directory that holds anything is refused, the server's own first.
    let answer = restore(&file, &server.data_dir);
    assert_eq!(answer.code, 1);
    assert!(answer.stderr.contains("not empty"), "{}", answer.stderr);
    let target = dir.path().join("once");
    restore(&file, &target).ok();
    let answer = restore(&file, &target);
    assert_eq!(answer.code, 1);
    assert!(answer.stderr.contains("not empty"), "{}", answer.stderr);
    restore_force(&file, &target).ok();
    // --force replaces a stopped store, and the restored one opens.
    let restored = ServerProcess::start(&target, &server.admin_token);
    assert_eq!(restored.admin().get(&kv("default", "k1")).status, 200);
    drop(restored);
    // Not the store of a running server: its later writes would be lost.
    let answer = restore_force(&file, &server.data_dir);
    assert_eq!(answer.code, 1);
    assert!(
        answer.stderr.contains("a server is running"),
        "{}",
        answer.stderr
    );
    assert_eq!(
        server.admin().put(&kv("default", "after"), b"v").status,
        201
    );
}

/// `kvs restore --force` over a store whose write-ahead log holds writes
/// that its database's last durable commit does not (its server was killed
/// while writing): the restored store serves the backup's state, and none
/// of those writes comes back on top of it. A restore resumes revisions
/// 1,000,000,000 above the backup's, and a start replays only the records
/// above its database's revision: so the store replaced here is one that
/// was restored from the same backup before (a restore done again), whose
/// writes are above that.
#[test]
fn restore_force_leaves_none_of_the_writes_the_replaced_stores_log_held() {
    let dir = tempfile::tempdir().unwrap();
    let secret = fake_secret();
    let original = ServerProcess::start(&dir.path().join("original"), &secret);
    let admin = original.admin();
    admin.create_project("wal", json!({"storage": "disk"}));
    for n in 0..5 {
        assert_eq!(
            admin.put(&kv("wal", &format!("k{n}")), b"backed up").status,
            201
        );
    }
    let backed_up = state_of(&admin, &["wal"]);
    let file = dir.path().join("backup.jsonl");
    kvs(&original.url, &secret, &["backup", file.to_str().unwrap()]).ok();
    drop(original);

    let store = dir.path().join("store");
    restore(&file, &store).ok();
    let mut server = ServerProcess::start(&store, &secret);
    // Writes, then SIGKILL, until the last acknowledged one is only in the
    // log (a checkpoint, every 100 ms to 1 s while writes come, may have
    // made it durable in the database): a server on a copy of the store
    // without its log does not have it.
    for attempt in 0.. {
        assert!(attempt < 10, "the database held every write at each kill");
        let admin = server.admin();
        let changed = admin.put(&kv("wal", "k0"), b"after the backup");
        assert_eq!(changed.status, 200, "{}", changed.text());
        assert!(matches!(admin.delete(&kv("wal", "k1")).status, 204 | 404));
        let last = format!("late/{attempt}/19");
        for n in 0..20 {
            let key = format!("late/{attempt}/{n}");
            assert_eq!(admin.put(&kv("wal", &key), b"after the backup").status, 201);
        }
        server.kill();
        let without_log = dir.path().join(format!("without-log-{attempt}"));
        std::fs::create_dir(&without_log).unwrap();
        std::fs::copy(store.join("kvs.redb"), without_log.join("kvs.redb")).unwrap();
        let copy = ServerProcess::start(&without_log, &secret);
        if copy.admin().get(&kv("wal", &last)).status == 404 {
            println!("the log held the last write at kill {}", attempt + 1);
            break;
        }
        drop(copy);
        server.kill_and_restart();
    }

    restore_force(&file, &store).ok();
    // Killed already: this starts it on the restored store.
    server.kill_and_restart();
    assert_eq!(state_of(&server.admin(), &["wal"]), backed_up);
    let project = server.admin().get("/v1/projects/wal").json();
    assert_eq!(project["keys"], 5, "{project}");
}

#[test]
fn scheduled_backups_appear_and_only_the_newest_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let backups = dir.path().join("backups");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let secret = fake_secret();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data_dir)
        .args([
            "--backup-interval",
            "1s",
            "--backup-keep",
            "2",
            "--backup-dir",
        ])
        .arg(&backups)
        .env("KVS_ADMIN_TOKEN", &secret)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    common::wait_ready(&url);
    let admin = Client::new(&url, Some(&secret));
    let names = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&backups)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    // A write between backups, so that each has its own revision.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 && Instant::now() < deadline {
        admin.put(&kv("default", "tick"), b"x");
        seen.extend(names().into_iter().filter(|n| n.ends_with(".jsonl")));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen.len() >= 4, "backups seen: {seen:?}");
    let kept = names();
    let kept: Vec<_> = kept.iter().filter(|n| n.ends_with(".jsonl")).collect();
    assert!(kept.len() <= 3, "kept {kept:?}");
    // SIGTERM: a backup under way is finished (and pruned) before exit.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let kept: Vec<_> = names()
        .into_iter()
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    assert_eq!(kept.len(), 2, "kept {kept:?}");
    // The newest are kept, and each is a whole backup.
    let revision = |name: &String| -> u64 {
        name.trim_start_matches("kvs-backup-")
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut all: Vec<u64> = seen.iter().map(revision).collect();
    all.sort();
    let mut kept_revisions: Vec<u64> = kept.iter().map(revision).collect();
    kept_revisions.sort();
    assert_eq!(kept_revisions, all[all.len() - 2..].to_vec());
    for name in &kept {
        assert!(name.starts_with("kvs-backup-"), "{name}");
        let text = std::fs::read(backups.join(name)).unwrap();
        let mut reader = kvs::backup::Reader::default();
        for line in text.split_inclusive(|b| *b == b'\n') {
            reader.line(line).unwrap();
        }
        reader.finish().unwrap();
    }
}

/// A backup holds every value and token digest: like a watch, its download
/// stops when its token is revoked, even while the client is still reading
/// (it went on to the end before). What the client got has no trailer, so
/// no restore takes it.
#[test]
fn a_backup_download_stops_when_its_token_is_revoked() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("big", json!({}));
    // More than the sockets and the server's queue hold: a backup of about
    // 64 MiB.
    let value = vec![b'x'; 1 << 20];
    for i in 0..64 {
        assert_eq!(admin.put(&kv("big", &format!("k{i}")), &value).status, 201);
    }
    let minted = admin
        .post_json("/v1/tokens", &json!({"name": "leaving"}))
        .json();
    let (secret, id) = (
        minted["secret"].as_str().unwrap(),
        minted["id"].as_str().unwrap(),
    );

    let address = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /v1/backup HTTP/1.1\r\nHost: kvs\r\nAuthorization: Bearer {secret}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 64];
    stream.read_exact(&mut head).unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The client reads nothing more for a while: the server's side fills up.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(admin.delete(&format!("/v1/tokens/{id}")).status, 204);

    let mut received = Vec::new();
    let started = Instant::now();
    let _ = stream.read_to_end(&mut received);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the download did not stop"
    );
    let full = admin.get("/v1/backup");
    assert_eq!(full.status, 200);
    assert!(full.body.len() > 60 << 20, "{}", full.body.len());
    assert!(
        received.len() < full.body.len() / 2,
        "{} of {} bytes were sent after the token was revoked",
        received.len(),
        full.body.len()
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains("{\"end\":"),
        "the stream ended with its trailer"
    );
}

/// The files a server, a compaction and a restore make in a data directory
/// hold every value and the tokens' digests: each is this user's only
/// (0600) whatever the umask, also in a directory made beforehand 0755 (one
/// that exists keeps its mode).
#[test]
fn the_files_in_a_data_directory_are_readable_by_this_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let private = |data: &Path| {
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(data).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}: {mode:o}", path.display());
                seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        seen.sort();
        seen
    };
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = fake_secret();
    let mut server = ServerProcess::start(&data, &secret);
    let admin = server.admin();
    admin.create_project("m", json!({"storage": "memory"}));
    for project in ["default", "m"] {
        assert_eq!(admin.put(&kv(project, "k"), b"v").status, 201);
    }
    assert_eq!(private(&data), ["kvs.redb", "kvs.wal"]);
    // Online compaction puts a new kvs.redb in place.
    kvs(&server.url, &secret, &["compact"]).ok();
    assert_eq!(private(&data), ["kvs.redb", "kvs.wal"]);
    let file = dir.path().join("whole.jsonl");
    kvs(&server.url, &secret, &["backup", file.to_str().unwrap()]).ok();
    assert_eq!(server.terminate(), Some(0));
    let mut compact = Command::new(env!("CARGO_BIN_EXE_kvs"));
    compact.arg("compact").arg("--data-dir").arg(&data);
    run(compact, b"").ok();
    private(&data);

    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::set_permissions(&restored, std::fs::Permissions::from_mode(0o755)).unwrap();
    restore(&file, &restored).ok();
    let made = private(&restored);
    assert!(made.contains(&"kvs.redb".to_owned()), "{made:?}");
    assert!(made.len() > 1, "{made:?}");
    let mut server = ServerProcess::start(&restored, &secret);
    assert_eq!(server.admin().get(&kv("m", "k")).body, b"v");
    private(&restored);
    server.terminate();

    // Files an older release made 0644 are narrowed at the next start.
    for name in ["kvs.redb", "kvs.wal"] {
        std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut server = ServerProcess::start(&data, &secret);
    assert_eq!(private(&data), ["kvs.redb", "kvs.wal"]);
    server.terminate();
}

/// `backup` with its header's revision set to `revision` and its trailer
/// recomputed (the checksum of every byte before it), as an edit by hand
/// would leave it.
fn with_revision(backup: &str, revision: u64) -> String {
    edited(backup, |lines| {
        let mut header: Value = serde_json::from_str(&lines[0]).unwrap();
        header["revision"] = json!(revision);
        lines[0] = header.to_string();
    })
}

/// `backup`'s lines before its trailer changed by `edit`, and a trailer
/// made again for them (their counts and checksum), as an edit by hand
/// that knows the format would leave it.
fn edited(backup: &str, edit: impl FnOnce(&mut Vec<String>)) -> String {
    let mut lines: Vec<String> = backup.lines().map(str::to_owned).collect();
    let trailer: Value = serde_json::from_str(&lines.pop().unwrap()).unwrap();
    edit(&mut lines);
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let count = |kind: &str| {
        let prefix = format!("{{\"{kind}\":");
        lines.iter().filter(|l| l.starts_with(&prefix)).count()
    };
    use sha2::Digest as _;
    let mut trailer = trailer;
    trailer["end"]["projects"] = json!(count("project"));
    trailer["end"]["tokens"] = json!(count("token"));
    trailer["end"]["keys"] = json!(count("key"));
    trailer["end"]["sha256"] = json!(hex::encode(sha2::Sha256::digest(body.as_bytes())));
    format!("{body}{trailer}\n")
}

/// A backup edited by hand, its trailer made again, that would restore a
/// store `kvs verify` calls damaged (two records for one name, keys out of
/// order, a token of no project) is refused whole, naming its line, and
/// leaves no store; the same backup unedited, with its trailer made the
/// same way, restores.
#[test]
fn restore_refuses_an_edited_backup_that_would_make_a_damaged_store() {
    let dir = tempfile::tempdir().unwrap();
    let secret = fake_secret();
    let server = ServerProcess::start(&dir.path().join("original"), &secret);
    let admin = server.admin();
    admin.create_project("p", json!({}));
    for project in ["default", "p"] {
        for key in ["a", "b", "c"] {
            assert_eq!(admin.put(&kv(project, key), b"v").status, 201);
        }
    }
    let file = dir.path().join("whole.jsonl");
    kvs(&server.url, &secret, &["backup", file.to_str().unwrap()]).ok();
    let whole = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = whole.lines().collect();
    let find = |what: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no line {what}: {whole}"))
    };
    let (project, token) = (find(r#"{"project":"#), find(r#"{"token":"#));
    let (first_key, p_key) = (find(r#"{"key":"#), find(r#"{"key":{"project":"p""#));
    let project_token = lines
        .iter()
        .position(|l| l.starts_with(r#"{"token":"#) && l.contains(r#""project":"p""#))
        .unwrap();

    type Edit = Box<dyn Fn(&mut Vec<String>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "a project twice",
            Box::new(move |l| l.insert(project + 1, l[project].clone())),
            "appears twice",
        ),
        (
            "a token twice",
            Box::new(move |l| l.insert(token + 1, l[token].clone())),
            "appears twice",
        ),
        (
            "a token of no project",
            Box::new(move |l| {
                l[project_token] = l[project_token].replace(r#""project":"p""#, r#""project":"q""#)
            }),
            "which no line before it holds",
        ),
        (
            "a key twice",
            Box::new(move |l| l.insert(first_key + 1, l[first_key].clone())),
            "key order",
        ),
        (
            "two keys swapped",
            Box::new(move |l| l.swap(first_key, first_key + 1)),
            "key order",
        ),
        (
            "a project's keys in two runs",
            Box::new(move |l| {
                let moved = l.remove(first_key);
                l.push(moved);
            }),
            "come again",
        ),
    ];
    for (name, edit, says) in cases {
        let changed = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&changed, edited(&whole, edit)).unwrap();
        let target = dir.path().join(name);
        let answer = restore(&changed, &target);
        assert_eq!(answer.code, 1, "{name}: {}", answer.text());
        assert!(answer.stderr.contains("line "), "{name}: {}", answer.stderr);
        assert!(answer.stderr.contains(says), "{name}: {}", answer.stderr);
        assert!(!target.join("kvs.redb").exists(), "{name}");
    }

    // Unedited, with its trailer made the same way, it restores; so does a
    // content type that PUT refuses, which releases before that rule took
    // from a transaction or an import: kept as it was, and a read leaves
    // out the header it cannot send.
    let same = dir.path().join("same.jsonl");
    std::fs::write(&same, edited(&whole, |_| {})).unwrap();
    let odd = dir.path().join("odd.jsonl");
    std::fs::write(
        &odd,
        edited(&whole, |l| {
            l[p_key] = l[p_key].replace(
                r#""content_type":"application/octet-stream""#,
                r#""content_type":"text/plain\r\nX-Evil: 1""#,
            );
            assert!(l[p_key].contains("X-Evil"), "{}", l[p_key]);
        }),
    )
    .unwrap();
    for (name, backup) in [("same", &same), ("odd", &odd)] {
        let target = dir.path().join(name);
        restore(backup, &target).ok();
        let verify = Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(["verify", "--data-dir"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{name}: {verify:?}");
    }
    let (_server, url) = common::serve_or_refusal(&dir.path().join("odd"), &secret, "warn")
        .unwrap_or_else(|log| panic!("{log}"));
    let read = Client::new(&url, Some(&secret)).get(&kv("p", "a"));
    assert_eq!((read.status, read.body.as_slice()), (200, &b"v"[..]));
    assert_eq!(read.header("content-type"), None);
}

/// A restored server resumes 1,000,000,000 revisions past the backup's: a
/// backup whose revision leaves that past 2^53 - 1 (the largest integer a
/// JavaScript client reads exactly), up to u64::MAX where the revision
/// would wrap to 0 and versions be handed out again, is refused; one that
/// leaves it at 2^53 - 1 exactly is restored.
#[test]
fn restore_refuses_a_revision_that_leaves_no_room_for_its_bump() {
    let dir = tempfile::tempdir().unwrap();
    let secret = fake_secret();
    let server = ServerProcess::start(&dir.path().join("original"), &secret);
    assert_eq!(server.admin().put(&kv("default", "k"), b"v").status, 201);
    let file = dir.path().join("whole.jsonl");
    kvs(&server.url, &secret, &["backup", file.to_str().unwrap()]).ok();
    let whole = std::fs::read_to_string(&file).unwrap();
    let largest = (1u64 << 53) - 1 - 1_000_000_000;
    for revision in [u64::MAX, 1 << 63, largest + 1] {
        let edited = dir.path().join(format!("r{revision}.jsonl"));
        std::fs::write(&edited, with_revision(&whole, revision)).unwrap();
        let target = dir.path().join(format!("r{revision}"));
        let answer = restore(&edited, &target);
        assert_eq!(answer.code, 1, "{revision}: {}", answer.text());
        assert!(answer.stderr.contains("revision"), "{}", answer.stderr);
        assert!(!target.join("kvs.redb").exists(), "{revision}");
    }
    let edited = dir.path().join("largest.jsonl");
    std::fs::write(&edited, with_revision(&whole, largest)).unwrap();
    let target = dir.path().join("largest");
    restore(&edited, &target).ok();
    let restored = ServerProcess::start(&target, &secret);
    let status = restored.admin().get("/v1/status").json();
    assert_eq!(status["revision"], json!((1u64 << 53) - 1), "{status}");
}

/// `kvs restore - --data-dir DIR [--force]` given the first `lines` lines
/// of `backup` and then killed while it waits for the rest, as a restore
/// stopped by a crash or an operator is: what it wrote stays.
/// Runs `kvs restore - --data-dir dir` on the first `lines` of `backup`,
/// calls `while_running` once its partial file exists (the restore waits
/// for the rest of stdin), then kills it.
fn kill_a_restore_midway(
    backup: &str,
    lines: usize,
    dir: &Path,
    force: bool,
    while_running: impl FnOnce(),
) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command.args(["restore", "-", "--data-dir"]).arg(dir);
    if force {
        command.arg("--force");
    }
    let mut restore = common::KillOnDrop(
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let head: String = backup
        .lines()
        .take(lines)
        .map(|l| format!("{l}\n"))
        .collect();
    let mut stdin = restore.0.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, head.as_bytes()).unwrap();
    let partial = dir.join("kvs.redb.restoring");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !partial.exists() {
        assert!(Instant::now() < deadline, "no {}", partial.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    while_running();
    assert!(
        restore.0.try_wait().unwrap().is_none(),
        "the restore ended before it was killed"
    );
    restore.0.kill().unwrap();
    restore.0.wait().unwrap();
    drop(stdin);
    assert!(partial.exists(), "the killed restore left nothing");
}

/// A restore killed before its end (hunt fault 7) left `kvs.redb.restoring`
/// behind, and a server started on the directory made a new, empty store
/// beside it without a word, which read as a restore that worked. Into a
/// new directory, the start is now refused, naming the file and the way
/// out; a restore run again then works. Over a stopped store (`--force`),
/// that store is still the live one: the server starts on it as it was,
/// removes the partial file and says so.
#[test]
fn a_restore_killed_before_its_end_leaves_no_store_a_server_takes_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = fake_secret();
    let original = dir.path().join("original");
    let mut server = ServerProcess::start(&original, &secret);
    let admin = server.admin();
    for n in 0..20 {
        assert_eq!(
            admin.put(&kv("default", &format!("k{n}")), b"v").status,
            201
        );
    }
    let file = dir.path().join("whole.jsonl");
    kvs(&server.url, &secret, &["backup", file.to_str().unwrap()]).ok();
    assert_eq!(admin.put(&kv("default", "after"), b"kept").status, 201);
    assert_eq!(server.terminate(), Some(0));
    let whole = std::fs::read_to_string(&file).unwrap();
    let half = whole.lines().count() / 2;

    let target = dir.path().join("new");
    // A server started while the restore runs is refused, and takes
    // nothing of it.
    let refused_while_running = || {
        let refusal = common::serve_or_refusal(&target, &secret, "warn")
            .err()
            .expect("a server started while a restore was writing its store");
        assert!(refusal.contains("is writing"), "{refusal}");
        assert!(!target.join("kvs.redb").exists(), "a store was made");
    };
    kill_a_restore_midway(&whole, half, &target, false, refused_while_running);
    let refusal = common::serve_or_refusal(&target, &secret, "warn")
        .err()
        .expect("a server started beside a restore that did not finish");
    assert!(refusal.contains("did not finish"), "{refusal}");
    assert!(refusal.contains("kvs.redb.restoring"), "{refusal}");
    assert!(!target.join("kvs.redb").exists(), "a store was made");
    restore_force(&file, &target).ok();
    let (_server, url) = common::serve_or_refusal(&target, &secret, "warn").unwrap();
    let restored = Client::new(&url, Some(&secret));
    assert_eq!(restored.get(&kv("default", "k19")).status, 200);

    kill_a_restore_midway(&whole, half, &original, true, || {
        let refusal = common::serve_or_refusal(&original, &secret, "warn")
            .err()
            .expect("a server started while a restore was replacing its store");
        assert!(refusal.contains("is writing"), "{refusal}");
        assert!(original.join("kvs.redb.restoring").exists());
    });
    let (_server, url) = common::serve_or_refusal(&original, &secret, "warn").unwrap();
    let kept = Client::new(&url, Some(&secret)).get(&kv("default", "after"));
    assert_eq!((kept.status, kept.body.as_slice()), (200, &b"kept"[..]));
    assert!(!original.join("kvs.redb.restoring").exists());
    let log = std::fs::read_to_string(original.with_extension("log")).unwrap();
    assert!(log.contains("did not finish"), "{log}");
}
