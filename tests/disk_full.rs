//! A full disk: writes that do not fit are refused with 507 and leave
//! nothing behind, reads keep working, the server recovers without a
//! restart once there is room, and the store opens cleanly afterwards.
//!
//! The data directory is a 6 MiB tmpfs, so this test needs root (as CI has);
//! elsewhere it says so and stops.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{ServerProcess, fake_secret, kv};
use serde_json::json;

/// A tmpfs of `size` mounted at `path`, unmounted on drop.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(path: &'a Path, size: &str) -> Option<Tmpfs<'a>> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then_some(Tmpfs(path))
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// On 6 MiB there is no room for the 32 MiB write-ahead log: every write
/// commits the database durably.
#[test]
fn a_full_disk_refuses_writes_with_507_and_loses_nothing() {
    fill_and_recover("6m", 1, 12);
}

/// On 112 MiB the write-ahead log fits: writes are durable in it, and a
/// commit of the database (a checkpoint, which writes what the log holds)
/// finds no room. That batch and the ones after it are refused until the
/// 72 MiB filler is removed; nothing logged is lost meanwhile. (The room
/// that frees holds the stored values twice, in their keys and in the
/// change history.)
#[test]
fn a_full_disk_with_a_write_ahead_log_refuses_writes_with_507_and_loses_nothing() {
    fill_and_recover("112m", 72, 40);
}

/// While a full disk refuses writes, reads go on. As long as the room
/// stays as it was when a commit failed, writes to disk projects are refused
/// without a try (a memory project's are accepted while the revisions
/// reserved for them last, and its delete by a large prefix runs), and reads
/// of an acknowledged key answer its value. Each time some room is freed,
/// the next write tries again; when that fails, the server reopens its
/// database and stores again the writes that only the log holds, and a
/// read meanwhile answers the value or 503, never a state from before an
/// acknowledged write.
#[test]
fn reads_go_on_while_a_full_disk_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(dir.path(), "112m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (this test needs root)");
        return;
    };
    let data = dir.path().join("data");
    // 72 MiB in pieces of 1 MiB, freed one at a time later on.
    let pieces: Vec<_> = (0..72)
        .map(|i| dir.path().join(format!("filler{i}")))
        .collect();
    for piece in &pieces {
        std::fs::write(piece, vec![1u8; 1 << 20]).unwrap();
    }
    let secret = fake_secret();
    let server = ServerProcess::start(&data, &secret);
    let admin = server.admin();
    let manage = admin.with_token(&admin.create_project("full", json!({})));
    let memory = admin.with_token(&admin.create_project("mem", json!({"storage": "memory"})));
    assert_eq!(memory.put(&kv("mem", "before"), b"x").status, 201);
    // More keys than one commit deletes by prefix: such a delete runs in
    // chunks (a sweep).
    let keys: Vec<_> = (0..4400)
        .map(|i| json!({"key": format!("m/{i:05}"), "value": "x"}))
        .collect();
    let imported = admin.post_json("/v1/projects/mem/import", &json!({ "keys": keys }));
    assert_eq!(imported.status, 200, "{}", imported.text());
    let big = vec![7u8; 700_000];
    let (stored, _) = put_until_full(&manage, 40, &big);
    let last = kv("full", &stored[stored.len() - 1]);

    // Refused writes with no room freed: no reopen, so every read answers.
    let answers = reading(&manage, &last, &big, || {
        for i in 0..30 {
            let status = manage.put(&kv("full", &format!("more/{i}")), b"x").status;
            assert_eq!(status, 507, "more/{i}");
            // A memory project's writes do not need the disk.
            let status = memory.put(&kv("mem", &format!("k{i}")), b"x").status;
            assert_eq!(status, 201, "mem/k{i}");
        }
        // A delete by prefix in a memory project runs its chunks, and a
        // check of the whole store (which waits for it) answers; a move
        // to disk is refused.
        let deleted = memory.delete("/v1/projects/mem/kv?prefix=m/");
        assert_eq!(deleted.status, 200, "{}", deleted.text());
        assert_eq!(deleted.json()["deleted"], json!(4400));
        let report = admin.send("POST", "/v1/verify", None, &[]);
        assert_eq!(report.status, 200, "{}", report.text());
        let moved = admin.patch_json("/v1/projects/mem", &json!({"storage": "disk"}));
        assert_eq!(moved.status, 507, "{}", moved.text());
        // Until the revisions reserved for memory projects (1,000 at a
        // time, in a disk commit) run out.
        let statuses: Vec<u16> = (0..1100)
            .map(|i| memory.put(&kv("mem", &format!("r{i}")), b"x").status)
            .collect();
        let accepted = statuses.iter().take_while(|&&status| status == 201).count();
        assert!(
            accepted < 1100 && statuses[accepted..].iter().all(|&status| status == 507),
            "{accepted} accepted, then {:?}",
            &statuses[accepted..accepted + 5]
        );
    });
    assert_eq!(answers.keys().collect::<Vec<_>>(), [&200], "{answers:?}");

    // A MiB freed before each write: each tries, and may fail and reopen.
    let answers = reading(&manage, &last, &big, || {
        for (i, piece) in pieces.iter().take(12).enumerate() {
            std::fs::remove_file(piece).unwrap();
            let status = manage.put(&kv("full", &format!("again/{i}")), &big).status;
            assert!([201, 507].contains(&status), "again/{i}: {status}");
        }
    });
    assert!(
        answers.keys().all(|status| [200, 503].contains(status)),
        "{answers:?}"
    );
}

/// 700 kB of bytes that do not compress and are not UTF-8.
fn big_value() -> Vec<u8> {
    (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// PUTs `values` keys `big/{i}` of project `full` holding `big`: each is
/// stored (201) or refused for lack of room (507), and some of each.
/// Answers the keys stored and the keys refused.
fn put_until_full(
    manage: &common::Client,
    values: usize,
    big: &[u8],
) -> (Vec<String>, Vec<String>) {
    let mut stored = Vec::new();
    let mut refused = Vec::new();
    for i in 0..values {
        let key = format!("big/{i}");
        let answer = manage.put(&kv("full", &key), big);
        match answer.status {
            201 => stored.push(key),
            507 => {
                assert_eq!(answer.code(), "storage_full");
                refused.push(key);
            }
            other => panic!("PUT {key} answered {other}: {}", answer.text()),
        }
    }
    assert!(!stored.is_empty(), "nothing fitted");
    assert!(!refused.is_empty(), "{values} values fitted");
    (stored, refused)
}

/// Reads `key` over and over while `writes` runs; answers how many times
/// each status came (0 for a 200 with another value than `value`).
fn reading(
    client: &common::Client,
    key: &str,
    value: &[u8],
    writes: impl FnOnce(),
) -> std::collections::BTreeMap<u16, u32> {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut answers = std::collections::BTreeMap::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = client.get(key);
                let status = match answer.status {
                    200 if answer.body != value => 0,
                    status => status,
                };
                *answers.entry(status).or_default() += 1;
            }
            answers
        });
        // The reader stops also when a write's check fails.
        let wrote = std::panic::catch_unwind(std::panic::AssertUnwindSafe(writes));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let answers = reader.join().unwrap();
        if let Err(panic) = wrote {
            std::panic::resume_unwind(panic);
        }
        answers
    })
}

/// Fills a tmpfs of `size` holding a filler of `filler_mib` with `values`
/// values of 700 kB, then frees the filler.
fn fill_and_recover(size: &str, filler_mib: usize, values: usize) {
    let dir = tempfile::tempdir().unwrap();
    // The server's log is on the same full disk: a log that cannot be
    // written must not stop the server either.
    let Some(_tmpfs) = Tmpfs::mount(dir.path(), size) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (this test needs root)");
        return;
    };
    let data = dir.path().join("data");
    // Room that the operator frees later on.
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; filler_mib << 20]).unwrap();
    let secret = fake_secret();
    let mut server = ServerProcess::start(&data, &secret);
    let admin = server.admin();
    let manage = admin.with_token(&admin.create_project("full", json!({})));

    let big = big_value();
    let (stored, refused) = put_until_full(&manage, values, &big);

    // Reads keep working, refused writes left nothing; the server is not
    // ready, as the contract says of storage that is not writable (hunt
    // fault 6: it said ready while every write got 507).
    for key in &stored {
        assert_eq!(manage.get(&kv("full", key)).body, big, "{key}");
    }
    for key in &refused {
        assert_eq!(
            manage.get(&kv("full", key)).status,
            404,
            "{key} was half-written"
        );
    }
    let ready = common::Client::new(&server.url, None).get("/readyz");
    assert_eq!(
        (ready.status, ready.code()),
        (503, "unavailable".to_owned())
    );

    // Once there is room again, writes are accepted without a restart, and
    // the server is ready before any write has tried. (A delete alone does
    // not make room at once: the change history keeps the deleted value
    // until it is compacted.)
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        common::Client::new(&server.url, None).get("/readyz").status,
        200
    );
    assert_eq!(manage.delete(&kv("full", &stored[0])).status, 204);
    assert_eq!(manage.put(&kv("full", "small"), b"fits").status, 201);

    // After a restart the store opens cleanly with exactly what was acknowledged.
    assert_eq!(server.terminate(), Some(0));
    let server = ServerProcess::start(&data, &secret);
    let manage = server.admin().with_token(manage.token.as_deref().unwrap());
    assert_eq!(manage.get(&kv("full", &stored[0])).status, 404);
    for key in &stored[1..] {
        assert_eq!(
            manage.get(&kv("full", key)).body,
            big,
            "{key} after restart"
        );
    }
    assert_eq!(manage.get(&kv("full", "small")).body, b"fits");
    let project = manage.get("/v1/projects/full").json();
    assert_eq!(project["keys"], json!(stored.len()), "{project}");
    // The figures match what the tables hold: the keys, and the changes
    // of the history (which the writes the log held, stored again when the
    // database was reopened, must not count twice).
    let report = server.admin().send("POST", "/v1/verify", None, &[]).json();
    assert_eq!(report["damage"], json!([]), "{report}");
}

/// A backup that its client reads slowly does not hold up the recovery
/// from a failed commit: the writer takes the disk database out of service
/// to reopen it, and the backup, which holds it open, breaks off (without
/// its trailer) and lets go of it, so that writes are accepted again as soon
/// as there is room, not once the client has read the whole backup.
#[test]
fn a_slow_backup_breaks_off_when_a_failed_commit_reopens_the_database() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(dir.path(), "192m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (this test needs root)");
        return;
    };
    let data = dir.path().join("data");
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; 90 << 20]).unwrap();
    let server = ServerProcess::start(&data, &fake_secret());
    let admin = server.admin();
    let manage = admin.with_token(&admin.create_project("full", json!({})));
    let big = big_value();
    // About 28 MB of backup (the values in base64): more than the server's
    // queue and the sockets' buffers hold, so the backup waits for its reader.
    for i in 0..30 {
        let answer = manage.put(&kv("full", &format!("early/{i}")), &big);
        assert_eq!(answer.status, 201, "{}", answer.text());
    }
    let response = ureq::get(format!("{}/v1/backup", server.url))
        .header("Authorization", format!("Bearer {}", server.admin_token))
        .call()
        .unwrap();
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    assert!(header.starts_with("{\"kvs_backup\""), "{header:.200}");
    std::thread::sleep(std::time::Duration::from_millis(500));

    // A commit fails for lack of room while the backup waits: the writer
    // takes the database out of service to reopen it, and the writes after
    // that answer 507 or 503 until there is room again.
    let mut stored = Vec::new();
    for i in 0..60 {
        let key = format!("big/{i}");
        let answer = manage.put(&kv("full", &key), &big);
        match answer.status {
            201 => stored.push(key),
            507 | 503 => break,
            other => panic!("PUT {key} answered {other}: {}", answer.text()),
        }
    }
    assert!(stored.len() < 60, "{} values fitted", stored.len());
    // Room again: the database is reopened and takes writes (a 503 while
    // that is under way is tried again, for up to 5 s).
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(put_retrying(&manage, "small", b"fits"), 201);

    // The backup broke off: what is left of it has no trailer.
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("{\"end\":"), "the backup was whole");
    for i in 0..30 {
        assert_eq!(manage.get(&kv("full", &format!("early/{i}"))).body, big);
    }
    for key in &stored {
        assert_eq!(manage.get(&kv("full", key)).body, big, "{key}");
    }
    let report = admin.send("POST", "/v1/verify", None, &[]).json();
    assert_eq!(report["damage"], json!([]), "{report}");
}

/// PUTs `body` at `key` of project `full`; a 503 (the database being
/// reopened) is tried again for up to 5 s. Answers the last status.
fn put_retrying(manage: &common::Client, key: &str, body: &[u8]) -> u16 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = manage.put(&kv("full", key), body);
        if answer.status != 503 || std::time::Instant::now() > deadline {
            return answer.status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A compaction needs room for its copy. Without it, `POST /v1/compact` is
/// refused with 507 and leaves the store as it was (no partial copy, every
/// key readable, writes accepted once there is room); with room again, it
/// compacts.
#[test]
fn a_compaction_without_room_for_its_copy_is_refused_with_507_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(dir.path(), "128m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (this test needs root)");
        return;
    };
    let data = dir.path().join("data");
    let secret = fake_secret();
    let server = ServerProcess::start(&data, &secret);
    let admin = server.admin();
    let manage = admin.with_token(&admin.create_project("p", json!({})));
    let value = vec![3u8; 1500];
    let keys: Vec<_> = (0..6000)
        .map(|i| json!({"key": format!("k/{:05}", (i * 7919) % 6000), "value": "x".repeat(1500)}))
        .collect();
    for chunk in keys.chunks(1000) {
        let imported = admin.post_json("/v1/projects/p/import", &json!({ "keys": chunk }));
        assert_eq!(imported.status, 200, "{}", imported.text());
    }
    assert_eq!(manage.put(&kv("p", "raw"), &value).status, 201);
    // All the room but 1 MiB taken, in pieces of 1 MiB.
    let mut pieces = Vec::new();
    loop {
        let piece = dir.path().join(format!("filler{}", pieces.len()));
        if std::fs::write(&piece, vec![1u8; 1 << 20]).is_err() {
            let _ = std::fs::remove_file(&piece);
            break;
        }
        pieces.push(piece);
    }
    std::fs::remove_file(pieces.pop().unwrap()).unwrap();

    let refused = admin.send("POST", "/v1/compact", None, &[]);
    assert_eq!(refused.status, 507, "{}", refused.text());
    assert_eq!(refused.code(), "storage_full");
    assert!(!data.join("kvs.redb.compacting").exists());
    assert_eq!(manage.get(&kv("p", "raw")).body, value);
    for i in (0..6000).step_by(97) {
        let got = manage.get(&kv("p", &format!("k/{i:05}")));
        assert_eq!(got.status, 200, "k/{i:05}: {}", got.text());
        assert_eq!(got.body.len(), 1500);
    }

    for piece in &pieces {
        std::fs::remove_file(piece).unwrap();
    }
    let after = manage.put(&kv("p", "after"), b"x");
    assert_eq!(after.status, 201, "{}", after.text());
    let compacted = admin.send("POST", "/v1/compact", None, &[]);
    assert_eq!(compacted.status, 200, "{}", compacted.text());
    assert!(compacted.json()["rows"].as_u64().unwrap() > 6000);
    assert_eq!(manage.get(&kv("p", "raw")).body, value);
    assert_eq!(manage.get(&kv("p", "after")).body, b"x");
}
