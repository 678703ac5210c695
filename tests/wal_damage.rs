//! The write-ahead log after a crash, damaged or left without its store:
//! acknowledged writes that only `kvs.wal` holds are never dropped without
//! a word.
//!
//! Each test writes a few hundred values to a `disk` project through the
//! real server, SIGKILLs it (so the log holds writes the database lacks),
//! damages the data directory as a disk or an operator might, and starts
//! the server again. A damaged frame with valid frames after it is damage:
//! the server refuses to start, naming the file and the offset, and
//! `kvs verify --data-dir` exits 5. A damaged last frame alone is what a
//! crash leaves (a torn write): the server starts with every other write.
//! A store file that is missing or empty beside a log that holds writes is
//! no first start: the server and the offline tools refuse it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Client, KillOnDrop, ServerProcess, fake_secret, kv};
use serde_json::json;

const PROJECT: &str = "w";
/// The writes of one attempt: a few hundred, each its own record (they are
/// sent one at a time), so that the log holds many frames.
const WRITES: usize = 300;
/// Where the log's first half begins (after its 16-byte header), and its
/// size: the test's writes fit in it.
const HEADER: usize = 16;
const HALF: usize = 16 << 20;
/// A frame: the body's length and CRC, 4 bytes each.
const FRAME: usize = 8;

/// A data directory whose server was SIGKILLed right after its last
/// acknowledged write, and the value and version of each write.
struct Crashed {
    _dir: tempfile::TempDir,
    data: PathBuf,
    admin: String,
    acked: Vec<(String, String, u64)>,
}

fn write_then_kill() -> Crashed {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = fake_secret();
    let mut server = ServerProcess::start(&data, &admin);
    let secret = server
        .admin()
        .create_project(PROJECT, json!({"storage": "disk"}));
    let client = Client::new(&server.url, Some(&secret));
    let mut acked = Vec::new();
    for i in 0..WRITES {
        let key = format!("k{i:03}");
        let value = format!("value {i} of the test");
        let put = client.put(&kv(PROJECT, &key), value.as_bytes());
        assert!(put.status < 300, "{key}: {}", put.text());
        let version = put.json()["version"].as_u64().unwrap();
        acked.push((key, value, version));
    }
    server.kill();
    Crashed {
        _dir: dir,
        data,
        admin,
        acked,
    }
}

/// Where each whole frame of the log's first half begins.
fn frames(data: &Path) -> Vec<usize> {
    let log = std::fs::read(data.join("kvs.wal")).unwrap();
    let mut at = HEADER;
    let mut found = Vec::new();
    while at + FRAME <= (HEADER + HALF).min(log.len()) {
        let word = |i: usize| u32::from_le_bytes(log[i..i + 4].try_into().unwrap());
        let (length, crc) = (word(at) as usize, word(at + 4));
        let end = at + FRAME + length;
        if length == 0 || end > log.len() || crc32fast::hash(&log[at + FRAME..end]) != crc {
            break;
        }
        found.push(at);
        at = end;
    }
    found
}

fn flip(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(file, bytes).unwrap();
}

/// `kvs serve` on `data`: the running server once it answers, or what it
/// printed when it stopped on its own.
fn serve(data: &Path, admin: &str) -> Result<(KillOnDrop, String), String> {
    common::serve_or_refusal(data, admin, "warn")
}

/// The acknowledged writes that the server at `url` lacks or answers with
/// another value or version.
fn lost(url: &str, admin: &str, acked: &[(String, String, u64)]) -> Vec<String> {
    let client = Client::new(url, Some(admin));
    acked
        .iter()
        .filter(|(key, value, version)| {
            let got = client.get(&kv(PROJECT, key));
            got.status != 200
                || got.text() != *value
                || got.header("etag") != Some(format!("\"{version}\"").as_str())
        })
        .map(|(key, _, version)| format!("{key}@{version}"))
        .collect()
}

/// `kvs <command> --data-dir <data>`: its exit code and what it printed.
fn offline(command: &str, data: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args([command, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), said)
}

#[test]
fn a_damaged_frame_with_acknowledged_writes_after_it_stops_the_start() {
    // A checkpoint may have made every write durable just before the kill
    // (then nothing is lost and the server rightly starts): a few tries.
    for attempt in 1..=3 {
        let crashed = write_then_kill();
        let data = &crashed.data;
        let at = frames(data);
        assert!(at.len() > 100, "the log holds {} frames", at.len());
        // One byte of the first frame's CRC.
        flip(&data.join("kvs.wal"), at[0] + 4);
        match serve(data, &crashed.admin) {
            Ok((_server, url)) => {
                let lost = lost(&url, &crashed.admin, &crashed.acked);
                assert!(
                    lost.is_empty(),
                    "the server started on a damaged log and lost {} acknowledged \
                     writes without refusing: {:?}…",
                    lost.len(),
                    &lost[..lost.len().min(5)]
                );
                println!("attempt {attempt}: every write was durable in kvs.redb");
            }
            Err(printed) => {
                for said in ["kvs.wal", &format!("offset {}", at[0]), "restore"] {
                    assert!(printed.contains(said), "no {said:?} in: {printed}");
                }
                let (code, said) = offline("verify", data);
                assert_eq!(code, Some(5), "kvs verify --data-dir: {said}");
                assert!(said.contains("kvs.wal"), "{said}");
                let (code, said) = offline("compact", data);
                assert_eq!(code, Some(1), "kvs compact --data-dir: {said}");
                assert!(said.contains("kvs.wal"), "{said}");
                // The documented way out, losing those writes knowingly.
                std::fs::rename(data.join("kvs.wal"), data.join("kvs.wal.damaged")).unwrap();
                let started = serve(data, &crashed.admin);
                assert!(started.is_ok(), "{:?}", started.err());
                return;
            }
        }
    }
    panic!("no attempt left a write that only the log held");
}

#[test]
fn a_damaged_last_frame_alone_is_a_torn_tail_and_the_server_starts() {
    let crashed = write_then_kill();
    let data = &crashed.data;
    let at = frames(data);
    let last = *at.last().unwrap();
    // The last byte of the last frame: torn by the crash, as it may be.
    let end = last + FRAME + {
        let log = std::fs::read(data.join("kvs.wal")).unwrap();
        u32::from_le_bytes(log[last..last + 4].try_into().unwrap()) as usize
    };
    flip(&data.join("kvs.wal"), end - 1);
    let (server, url) = serve(data, &crashed.admin).unwrap_or_else(|log| panic!("{log}"));
    // Only the last write (the torn frame's) may be gone.
    let (all_but_last, _) = crashed.acked.split_at(crashed.acked.len() - 1);
    assert_eq!(
        lost(&url, &crashed.admin, all_but_last),
        Vec::<String>::new()
    );
    drop(server);
    let (code, said) = offline("verify", data);
    assert_eq!(code, Some(0), "kvs verify --data-dir: {said}");
}

#[test]
fn a_missing_or_empty_store_file_beside_a_log_with_writes_stops_the_start() {
    let crashed = write_then_kill();
    for (case, damage) in [
        (
            "empty",
            (|file: &Path| std::fs::File::create(file).map(drop)) as fn(&Path) -> _,
        ),
        ("missing", |file: &Path| std::fs::remove_file(file)),
    ] {
        let data = crashed.data.with_extension(case);
        copy_dir(&crashed.data, &data);
        damage(&data.join("kvs.redb")).unwrap();
        let size = |data: &Path| {
            std::fs::metadata(data.join("kvs.redb"))
                .map(|m| m.len())
                .ok()
        };
        let before = size(&data);
        let printed = match serve(&data, &crashed.admin) {
            Ok((_server, url)) => {
                let lost = lost(&url, &crashed.admin, &crashed.acked);
                panic!(
                    "{case} kvs.redb: the server started on a new store and lost {} of \
                     {} acknowledged writes",
                    lost.len(),
                    crashed.acked.len()
                );
            }
            Err(printed) => printed,
        };
        for said in ["kvs.redb", "kvs.wal", "not a first start"] {
            assert!(printed.contains(said), "{case}: no {said:?} in: {printed}");
        }
        assert_eq!(size(&data), before, "{case}: kvs.redb was left as it was");
        for command in ["verify", "compact"] {
            let (code, said) = offline(command, &data);
            assert_eq!(code, Some(1), "{case}: kvs {command} --data-dir: {said}");
            assert!(said.contains("kvs.wal"), "{case}: kvs {command}: {said}");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
