//! Damage: values written through the API, the server stopped, and bytes
//! flipped at many places of a fresh copy of `kvs.redb` each time (inside
//! values, inside key records, and spread over the whole file, so over
//! index pages too). The server started on the damaged copy answers every
//! key with its exact bytes or an error status, never other bytes with
//! 2xx, or refuses to start with a message; `kvs verify` reports damage
//! whenever a read found some; and `kvs compact` either refuses such a
//! store or, when only index pages were damaged (its copy is made by a walk
//! over the leaves), leaves a whole one that serves every key, without a
//! panic or a partial copy left behind.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Client, ServerProcess, fake_secret, kv};

/// A value unique to its key, of `size` bytes, so that it can be found in
/// the file.
fn value(key: &str, size: usize) -> Vec<u8> {
    let pattern = format!("<{key}:value>");
    pattern.bytes().cycle().take(size).collect()
}

fn keys() -> Vec<(String, Vec<u8>)> {
    let mut keys = Vec::new();
    for i in 0..40 {
        let key = format!("inline/{i:02}");
        let size = 30 + i * 47;
        keys.push((key.clone(), value(&key, size)));
    }
    for i in 0..8 {
        let key = format!("large/{i}");
        let size = 3000 + i * 9000;
        keys.push((key.clone(), value(&key, size)));
    }
    keys
}

/// Where `needle` occurs in `haystack` (each start).
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect()
}

/// A server on a data directory that may refuse to start; `None` then,
/// with what it printed.
struct Started {
    /// Held for its drop, which stops the server.
    _child: common::KillOnDrop,
    url: String,
}

fn start(data: &Path, admin: &str) -> Result<Started, String> {
    common::serve_or_refusal(data, admin, "error")
        .map(|(child, url)| Started { _child: child, url })
}

#[test]
fn flipped_bytes_are_never_served_as_a_value_and_verify_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = fake_secret();
    let mut server = ServerProcess::start(&data, &admin);
    let client = server.admin();
    let keys = keys();
    for (key, bytes) in &keys {
        let put = client.put(&kv("default", key), bytes);
        assert!(put.status < 300, "{key}: {}", put.text());
    }
    // The damage counter is shown from the start, at 0.
    let metrics = client.get("/metrics").text();
    assert!(metrics.contains("kvs_data_corrupted_total 0"), "{metrics}");
    assert_eq!(server.terminate(), Some(0));
    let file = std::fs::read(data.join("kvs.redb")).unwrap();

    // Where to damage: inside each value's bytes and each key's record (at
    // every place the file holds them), and at places spread evenly over
    // the whole file (index pages, free pages, the header).
    let mut offsets = Vec::new();
    for (i, (key, bytes)) in keys.iter().enumerate() {
        // The value's first bytes, where each copy of it starts (a value
        // repeats its pattern: only starts that the pattern's period does
        // not explain).
        let starts = find_all(&file, &bytes[..24]);
        let period = format!("<{key}:value>").len();
        let copies = starts
            .iter()
            .filter(|at| !starts.contains(&at.wrapping_sub(period)));
        offsets.extend(copies.map(|at| at + 12 + i % 7));
        // The key's name wherever it is not the start of a value's
        // pattern: in its record, and as a separator in an index page
        // (where damage sends lookups to the wrong leaf).
        let names = find_all(&file, key.as_bytes());
        let records = names.iter().filter(|at| file[at.saturating_sub(1)] != b'<');
        offsets.extend(records.map(|at| at + 5));
    }
    let spread = 40;
    offsets.extend((0..spread).map(|i| i * (file.len() - 16) / spread + 5));
    offsets.sort_unstable();
    offsets.dedup();
    assert!(offsets.len() < 4000, "{} offsets", offsets.len());

    let (mut refused, mut damaged_reads, mut clean, mut repaired, mut hinted) = (0, 0, 0, 0, 0);
    for (round, at) in offsets.iter().enumerate() {
        let copy = dir.path().join(format!("copy-{round}"));
        std::fs::create_dir_all(&copy).unwrap();
        let mut bytes = file.clone();
        for b in &mut bytes[*at..(*at + 8).min(file.len())] {
            *b ^= 0x5a;
        }
        std::fs::write(copy.join("kvs.redb"), &bytes).unwrap();

        // What the reads answered that was not the value (for the message
        // of a failure below).
        let mut seen = Vec::new();
        let found_damage = match start(&copy, &admin) {
            Err(log) => {
                assert!(
                    !log.trim().is_empty(),
                    "offset {at}: refused without a word"
                );
                refused += 1;
                continue;
            }
            Ok(started) => {
                let client = Client::new(&started.url, Some(&admin));
                let (mut found, mut corrupted) = (false, false);
                for (key, expected) in &keys {
                    let answer = match client.request("GET", &kv("default", key), None, &[]) {
                        Ok(answer) => answer,
                        Err(error) => {
                            seen.push(format!("{key}: {error}"));
                            found = true;
                            continue;
                        }
                    };
                    if answer.status < 300 {
                        assert_eq!(
                            &answer.body, expected,
                            "offset {at}: {key} answered other bytes with {}",
                            answer.status
                        );
                    } else {
                        assert!(
                            answer.status >= 400,
                            "offset {at}: {key}: {}",
                            answer.status
                        );
                        found = true;
                        seen.push(format!("{key}: {} {:.200}", answer.status, answer.text()));
                        corrupted |= answer.status == 500 && answer.code() == "data_corrupted";
                    }
                }
                // A damaged record that a read found is counted.
                if corrupted {
                    let metrics = client.get("/metrics").text();
                    let counted = metrics
                        .lines()
                        .find_map(|l| l.strip_prefix("kvs_data_corrupted_total "))
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    assert!(
                        counted.is_some_and(|n| n >= 1.0),
                        "offset {at}: {counted:?}"
                    );
                }
                found
            }
        };
        if found_damage {
            damaged_reads += 1;
        } else {
            clean += 1;
        }
        let verify = Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(["verify", "--data-dir"])
            .arg(&copy)
            .output()
            .unwrap();
        if found_damage {
            assert_ne!(
                verify.status.code(),
                Some(0),
                "offset {at}: reads found damage ({seen:?}), kvs verify did not: {}",
                String::from_utf8_lossy(&verify.stdout)
            );
        }
        // When verify says only the index is damaged, it names kvs compact
        // as the remedy, which must then work.
        let index_only = String::from_utf8_lossy(&verify.stdout).contains("kvs compact");
        // A compaction refuses to copy damage (its check of the copy is
        // verify's walk), never panics, and leaves no partial copy.
        let compact = Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(["compact", "--data-dir"])
            .arg(&copy)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&compact.stderr);
        assert!(
            matches!(compact.status.code(), Some(0 | 1)),
            "offset {at}: kvs compact ended with {:?}: {said}",
            compact.status
        );
        assert!(
            !index_only || compact.status.success(),
            "offset {at}: kvs verify named kvs compact, which refused: {said}"
        );
        assert!(!copy.join("kvs.redb.compacting").exists(), "offset {at}");
        if found_damage && compact.status.success() {
            // What the compaction copied is all there, and whole.
            let verify = Command::new(env!("CARGO_BIN_EXE_kvs"))
                .args(["verify", "--data-dir"])
                .arg(&copy)
                .output()
                .unwrap();
            assert!(
                verify.status.success(),
                "offset {at}: kvs compact copied damage ({seen:?}): {}",
                String::from_utf8_lossy(&verify.stdout)
            );
            let started = start(&copy, &admin)
                .unwrap_or_else(|log| panic!("offset {at}: the compacted copy: {log}"));
            let client = Client::new(&started.url, Some(&admin));
            for (key, expected) in &keys {
                let answer = client.get(&kv("default", key));
                assert_eq!(
                    (answer.status, &answer.body),
                    (200, expected),
                    "offset {at}: {key} after kvs compact ({seen:?})"
                );
            }
            repaired += 1;
            hinted += usize::from(index_only);
        }
        std::fs::remove_dir_all(&copy).unwrap();
    }
    eprintln!(
        "{} offsets: {refused} refused to start, {damaged_reads} with damaged reads \
         ({repaired} of them made whole by kvs compact, {hinted} of those named by kvs verify), \
         {clean} read clean",
        offsets.len()
    );
    // The damage reached the data often enough for the test to mean
    // something.
    assert!(damaged_reads >= keys.len() / 2, "{damaged_reads}");
}

/// A page of the store's own structure damaged (bytes 4096..4100 of a
/// small store just restored, and so cleanly closed: a table's root page,
/// which redb reads with `unreachable!`): the tools that open the file
/// report it rather than panic. `kvs verify` says it is damaged (5), `kvs
/// compact` refuses (1) and leaves the file as it was, and `kvs serve`
/// refuses to start with a message, never a panic.
#[test]
fn a_damaged_structure_page_is_reported_by_verify_compact_and_serve_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let admin = fake_secret();
    let mut server = ServerProcess::start(&dir.path().join("source"), &admin);
    let client = server.admin();
    for (key, bytes) in keys() {
        let put = client.put(&kv("default", &key), &bytes);
        assert!(put.status < 300, "{key}: {}", put.text());
    }
    let backup = client.get("/v1/backup");
    assert_eq!(backup.status, 200, "{}", backup.text());
    assert_eq!(server.terminate(), Some(0));
    let data = dir.path().join("data");
    let restore = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(["restore", "-", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&backup.body)?;
            child.wait()
        })
        .unwrap();
    assert!(restore.success());
    let file = data.join("kvs.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[4096..4100] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let kvs = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(args)
            .arg(&data)
            .env("KVS_ADMIN_TOKEN", &admin)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let said = |output: &std::process::Output| {
        format!(
            "{:?}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    let verify = kvs(&["verify", "--data-dir"]);
    let text = said(&verify);
    assert_eq!(verify.status.code(), Some(5), "{text}");
    assert!(
        text.contains("damaged") && !text.contains("panicked"),
        "{text}"
    );

    let compact = kvs(&["compact", "--data-dir"]);
    let text = said(&compact);
    assert_eq!(compact.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "kvs compact changed the file"
    );
    assert!(!data.join("kvs.redb.compacting").exists());

    // Refused with a message (what `start` returns when the server ends).
    let log = match start(&data, &admin) {
        Ok(_) => panic!("the server started on a damaged store"),
        Err(log) => log,
    };
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("kvs.redb") && log.contains("kvs verify"),
        "{log}"
    );
}
