//! Memory bounded per request, measured from outside: the real `kvs` binary,
//! its peak resident memory read from `/proc/<pid>/status` (`VmHWM`) before
//! and after a request built to make a careless parser take many times its
//! size, or an answer far larger than what the server may hold of it (a
//! listing with values, a backup). The figures are printed (`--nocapture`);
//! the assertions allow a small multiple of the body or of one page, far
//! below what a tree of the body or the whole answer takes.

use crate::common;

use common::{ServerProcess, fake_secret};
use serde_json::json;

/// The value of `field` (`VmHWM:`, `THP_enabled:`, …) in the process's
/// `/proc/<pid>/status`, trimmed; `None` once the process is gone or
/// without such a line.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|line| line.strip_prefix(field))?;
    Some(value.trim().to_owned())
}

/// A `… kB` field of the process's status, in bytes; `None` as
/// [`status_field`].
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let kib = status_field(pid, field)?;
    let kib: u64 = kib.trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Runs `command` to its end under a small Python that waits for it, and
/// answers its exit status, its stdout, its stderr and its peak resident
/// memory in bytes, as the kernel counted it for that one process
/// (`ru_maxrss`).
///
/// Not from this process: a child of the test process starts with the
/// test's memory counted in its peak (fork or vfork share it until exec,
/// and exec keeps the peak), which was 332 MiB in CI while other tests ran
/// beside it. Samples of `/proc/<pid>/status` while it runs, as before,
/// miss a peak in its last milliseconds.
fn peak_of(command: &mut std::process::Command) -> (std::process::ExitStatus, String, String, u64) {
    const WAIT: &str = "import resource, subprocess, sys\n\
        code = subprocess.run(sys.argv[1:]).returncode\n\
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
        sys.exit(code)\n";
    let output = std::process::Command::new("python3")
        .args(["-c", WAIT])
        .arg(command.get_program())
        .args(command.get_args())
        .output()
        .expect("python3 (CI installs it for the conformance suite)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (complained, peak) = stderr.trim_end().rsplit_once('\n').unwrap_or(("", &stderr));
    let kib: u64 = peak
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no peak in {stderr}"));
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status, said, complained.to_owned(), kib * 1024)
}

/// The process's peak resident memory, in bytes.
fn peak_resident(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:").expect("a VmHWM line")
}

#[test]
fn an_80_mib_import_of_zeros_is_refused_without_taking_gigabytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("p", json!({}));
    // `{"keys":[0,0,…]}`: 2 bytes a number, ~40 million numbers, each of
    // which a `serde_json::Value` tree holds in 32 bytes or more.
    let size = 80usize << 20;
    let mut body = Vec::with_capacity(size + 16);
    body.extend_from_slice(b"{\"keys\":[0");
    while body.len() < size {
        body.extend_from_slice(b",0");
    }
    body.extend_from_slice(b"]}");
    let before = peak_resident(server.pid());
    let answer = admin.send(
        "POST",
        "/v1/projects/p/import",
        Some(&body),
        &[("content-type", "application/json")],
    );
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["failed_key"], 0, "{}", answer.text());
    let after = peak_resident(server.pid());
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "peak resident memory: {:.0} MiB before, {:.0} MiB after an {} MiB import body",
        mib(before),
        mib(after),
        size >> 20
    );
    assert!(
        after.saturating_sub(before) < 4 * size as u64,
        "the import took {:.0} MiB more",
        mib(after - before)
    );
}

#[test]
fn a_simple_pykv_store_listing_is_streamed_not_built_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("p", json!({}));
    let keys = 300_000;
    for chunk in 0..keys / 10_000 {
        let entries: Vec<_> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|n| json!({"key": format!("key/{n:07}"), "value": "v"}))
            .collect();
        let answer = admin.post_json("/v1/projects/p/import", &json!({ "keys": entries }));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let before = peak_resident(server.pid());
    let answer = admin.get("/api/v1/projects/p/store");
    assert_eq!(answer.status, 200);
    let listed = answer.json();
    let data = listed["data"].as_object().expect("data is an object");
    assert_eq!(data.len(), keys);
    assert_eq!(listed["status_code"], 200);
    assert_eq!(data["key/0000007"]["value"], "v", "{}", data["key/0000007"]);
    let after = peak_resident(server.pid());
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "peak resident memory: {:.0} MiB before, {:.0} MiB after a {:.0} MiB listing of {keys} keys",
        mib(before),
        mib(after),
        mib(answer.body.len() as u64)
    );
    assert!(
        after.saturating_sub(before) < 32 << 20,
        "the listing took {:.0} MiB more",
        mib(after - before)
    );
}

/// The process's resident memory now, in bytes.
fn resident(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:").expect("a VmRSS line")
}

/// Resets the process's peak resident memory to what it holds now (Linux:
/// `5` written to `clear_refs`), so that the next peak is a request's own.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

const MIB: f64 = (1 << 20) as f64;

/// Fills `value` with bytes that do not compress (a linear congruential
/// generator from `state`).
fn fill_random(value: &mut [u8], state: &mut u64) {
    for chunk in value.chunks_mut(8) {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// Writes `count` values of `size` pseudo-random bytes to `p`'s keys
/// `big/000`, `big/001`, … one after the other.
fn put_random_values(admin: &common::Client, count: usize, size: usize) {
    let mut value = vec![0u8; size];
    let mut state = 1u64;
    for n in 0..count {
        fill_random(&mut value, &mut state);
        let answer = admin.put(&format!("/v1/projects/p/kv/big/{n:03}"), &value);
        assert_eq!(answer.status, 201, "{}", answer.text());
    }
}

/// A server on a fresh directory with project `p` holding `count` values of
/// `size` pseudo-random bytes (binary: listings and backups carry them in
/// base64), restarted and then read once whole, so that the database's page
/// cache holds them all, as it would after any read: the peak that the
/// tests then measure is the request's own memory, not the cache filling.
fn server_with_large_values(dir: &std::path::Path, count: usize, size: usize) -> ServerProcess {
    let mut server = ServerProcess::start(&dir.join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("p", json!({"max_value_bytes": size}));
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let admin = admin.clone();
            scope.spawn(move || {
                let mut state = writer as u64 + 1;
                let mut value = vec![0u8; size];
                for n in (writer..count).step_by(4) {
                    fill_random(&mut value, &mut state);
                    let answer = admin.put(&format!("/v1/projects/p/kv/big/{n:05}"), &value);
                    assert_eq!(answer.status, 201, "{}", answer.text());
                }
            });
        }
    });
    server.restart();
    let admin = server.admin();
    for n in 0..count {
        let answer = admin.get(&format!("/v1/projects/p/kv/big/{n:05}"));
        assert_eq!(answer.body.len(), size);
    }
    server
}

#[test]
fn listing_large_values_holds_about_one_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (count, size) = (256, 1 << 20);
    let server = server_with_large_values(dir.path(), count, size);
    let admin = server.admin();
    reset_peak(server.pid());
    let before = resident(server.pid());
    let (mut listed, mut pages, mut largest) = (0, 0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/projects/p/kv?values=true&limit=1000".to_owned(),
            Some(c) => format!("/v1/projects/p/kv?values=true&limit=1000&cursor={c}"),
        };
        let answer = admin.get(&path);
        assert_eq!(answer.status, 200, "{}", answer.text());
        largest = largest.max(answer.body.len());
        let page = answer.json();
        let keys = page["keys"].as_array().unwrap();
        assert!(
            keys.iter()
                .all(|k| k["encoding"] == "base64" && k["value"].is_string())
        );
        listed += keys.len();
        pages += 1;
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, count);
    // 4 MiB of raw bytes end a page: 4 values of 1 MiB each.
    assert_eq!(pages, count / 4, "pages end at 4 MiB of values");
    let after = peak_resident(server.pid());
    println!(
        "resident memory {:.0} MiB before, peak {:.0} MiB while listing {listed} values of \
         {} KiB ({:.0} MiB) in {pages} pages, the largest answer {:.1} MiB",
        before as f64 / MIB,
        after as f64 / MIB,
        size >> 10,
        (count * size) as f64 / MIB,
        largest as f64 / MIB,
    );
    // 18-19 MiB in our runs: a page's values and its answer, about twice over
    // as the allocator holds freed memory a while. 38-65 MiB when the base64
    // was a second copy and the answer's buffer grew by doubling.
    assert!(
        after.saturating_sub(before) < 40 << 20,
        "the listing took {:.0} MiB more",
        (after - before) as f64 / MIB
    );
}

#[test]
fn a_backup_of_a_large_store_is_streamed_not_built_in_memory() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (count, size) = (256, 1 << 20);
    let server = server_with_large_values(dir.path(), count, size);
    reset_peak(server.pid());
    let before = resident(server.pid());
    let started = std::time::Instant::now();
    // Read as a stream, line by line: the backup is larger than the test
    // client takes whole.
    let response = ureq::get(format!("{}/v1/backup", server.url))
        .header("Authorization", format!("Bearer {}", server.admin_token))
        .call()
        .unwrap();
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut last = String::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("{\"kvs_backup\""), "{line:.200}");
    let (mut bytes, mut lines) = (line.len(), 1);
    line.clear();
    // A slow reader: a server that wrote on without waiting for the client
    // (no backpressure) would gather the whole backup meanwhile; one that
    // waits holds its few queued chunks and the socket's buffers.
    std::thread::sleep(std::time::Duration::from_secs(2));
    while reader.read_line(&mut line).unwrap() > 0 {
        bytes += line.len();
        lines += 1;
        std::mem::swap(&mut last, &mut line);
        line.clear();
    }
    let took = started.elapsed();
    let after = peak_resident(server.pid());
    assert!(last.contains("\"keys\""), "no trailer: {last:.200}");
    assert!(lines > count, "{lines} lines");
    println!(
        "resident memory {:.0} MiB before, peak {:.0} MiB during a {:.0} MiB backup of {:.0} \
         MiB of values (read in {took:.1?})",
        before as f64 / MIB,
        after as f64 / MIB,
        bytes as f64 / MIB,
        (count * size) as f64 / MIB,
    );
    assert!(
        after.saturating_sub(before) < (count * size / 4) as u64,
        "the backup took {:.0} MiB more",
        (after - before) as f64 / MIB
    );
}

/// A memory project's database replaced by its compacted copy gives the old
/// one's memory back to the system at once, without waiting for more
/// requests: each of its chunks is a memory map of its own, unmapped when
/// the database is dropped. (With chunks from the allocator, a second
/// compaction with no request after it left the server 180 MB larger at
/// 1,000,000 keys: the allocator kept the freed memory.)
#[test]
fn a_compacted_memory_project_gives_the_old_database_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("m", json!({"storage": "memory"}));
    let (count, chunk) = (400_000, 2_000);
    for start in (0..count).step_by(chunk) {
        let keys: Vec<_> = (start..start + chunk)
            .map(|n| json!({"key": format!("k{n:08}"), "value": format!("{n:0100}")}))
            .collect();
        let answer = admin.post_json("/v1/projects/m/import", &json!({"keys": keys}));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let compact = || {
        let answer = admin.post_json("/v1/compact", &json!({}));
        assert_eq!(answer.status, 200, "{}", answer.text());
        std::thread::sleep(std::time::Duration::from_millis(300));
        resident(server.pid())
    };
    let imported = resident(server.pid());
    let first = compact();
    let second = compact();
    println!(
        "resident memory {:.0} MiB after importing {count} keys of 100 bytes into a memory \
         project, {:.0} MiB after a compaction, {:.0} MiB after a second",
        imported as f64 / MIB,
        first as f64 / MIB,
        second as f64 / MIB,
    );
    // The live keys and values are about 42 MiB. Measured: with the chunks
    // as allocations the first compaction left the server 76-86 MiB larger
    // (3 runs); as memory maps, from 11 MiB smaller to 4 MiB larger (4 runs
    // of the whole file), as what the import's requests left in the
    // allocator is given back or not by then. The bound lies between. (With
    // 200,000 keys the two were 39-53 and -30 to +11: too near each other.)
    let bound = 32 << 20;
    assert!(
        first < imported + bound,
        "a compaction left the server {:.0} MiB larger",
        (first - imported) as f64 / MIB
    );
    assert!(
        second < first + bound,
        "a second compaction left the server {:.0} MiB larger",
        (second - first) as f64 / MIB
    );
    let answer = admin.get("/v1/projects/m/kv/k00000007");
    assert_eq!(answer.text(), format!("{:0100}", 7));
}

/// `--cache-bytes` bounds what the disk database's page cache holds: after
/// 96 MiB of values written (kept twice, in the keys and in the change
/// history), a server with a 16 MiB cache has grown by less than the values
/// (51-59 MiB measured with this file's other tests beside it; 66-71 MiB,
/// and 97 once in CI, before the disk database's queue held at most 4 MiB
/// of writes behind a deferred sync). With the default of 1 GiB the same
/// test measured 478 MiB: redb's cache keeps what is written until it is
/// full.
#[test]
fn the_page_cache_setting_bounds_the_servers_memory() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--cache-bytes".to_owned(), (16u64 << 20).to_string()];
    let server = ServerProcess::start_with(&dir.path().join("data"), &fake_secret(), true, &args);
    let admin = server.admin();
    let (count, size) = (96, 1 << 20);
    admin.create_project("p", json!({"max_value_bytes": size}));
    let before = resident(server.pid());
    put_random_values(&admin, count, size);
    let after = resident(server.pid());
    println!(
        "resident memory {:.0} MiB before and {:.0} MiB after {count} MiB of values, with a \
         16 MiB page cache",
        before as f64 / MIB,
        after as f64 / MIB,
    );
    assert!(
        after.saturating_sub(before) < (count * size) as u64,
        "the server grew by {:.0} MiB",
        (after - before) as f64 / MIB
    );
    let answer = admin.get("/v1/projects/p/kv/big/007");
    assert_eq!(answer.body.len(), size);
}

/// `kvs verify --data-dir` reads a store of 96 MiB of values through its own
/// 16 MiB page cache: its peak resident memory stays far below the values:
/// 36-38 MiB measured, 460 MiB with redb's 1 GiB default
/// (the walk kept every page it read, the change history's copies too).
#[test]
fn an_offline_verify_holds_a_small_cache_not_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &fake_secret());
    let admin = server.admin();
    let (count, size) = (96, 1 << 20);
    admin.create_project("p", json!({"max_value_bytes": size}));
    put_random_values(&admin, count, size);
    assert_eq!(server.terminate(), Some(0));

    let (status, said, _, peak) = peak_of(
        std::process::Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(["verify", "--data-dir"])
            .arg(&data),
    );
    assert!(status.success(), "{status}: {said}");
    assert!(said.contains("96 large values"), "{said}");
    println!(
        "kvs verify --data-dir over {count} MiB of values: peak {:.0} MiB",
        peak as f64 / MIB
    );
    assert!(peak > 0, "the kernel counted no memory");
    assert!(
        peak < 48 << 20,
        "kvs verify held {:.0} MiB",
        peak as f64 / MIB
    );
}

/// `kvs restore` refuses a backup line longer than any its projects can
/// hold (the default project's values are at most 1 MiB: 14 MiB with
/// escapes and room beside) as soon as it has read that much, naming the
/// line, and leaves no store: a line of 160 MiB is never held whole. Peak
/// 49 MiB measured (14 MiB of it is any restore's, the rest the line's
/// buffer as it grew to 14 MiB), whatever the line's length; 680 MiB
/// before, for a line of 200 MiB (found by an outside-in hunt).
#[test]
fn a_restore_refuses_an_overlong_line_without_reading_it_whole() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    assert_eq!(admin.put(&common::kv("default", "a"), b"v").status, 201);
    let backup = admin.get("/v1/backup");
    assert_eq!(backup.status, 200, "{}", backup.text());
    let text = backup.text();
    let lines: Vec<&str> = text.lines().collect();
    let key = lines
        .iter()
        .position(|line| line.starts_with(r#"{"key":"#))
        .unwrap_or_else(|| panic!("no key line in {text}"));
    let (before, after) = lines[key]
        .split_once(r#""value":"v""#)
        .unwrap_or_else(|| panic!("no value in {}", lines[key]));

    // The key's value made 160 MiB long, written a piece at a time.
    let file = dir.path().join("long.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for line in &lines[..key] {
        writeln!(out, "{line}").unwrap();
    }
    write!(out, r#"{before}"value":""#).unwrap();
    let piece = vec![b'x'; 1 << 20];
    for _ in 0..160 {
        out.write_all(&piece).unwrap();
    }
    writeln!(out, r#""{after}"#).unwrap();
    for line in &lines[key + 1..] {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
    drop(out);

    let target = dir.path().join("restored");
    let (status, _, complained, peak) = peak_of(
        std::process::Command::new(env!("CARGO_BIN_EXE_kvs"))
            .arg("restore")
            .arg(&file)
            .arg("--data-dir")
            .arg(&target),
    );
    assert_eq!(status.code(), Some(1), "{status}: {complained}");
    let number = format!("line {}", key + 1);
    assert!(complained.contains(&number), "not {number}: {complained}");
    assert!(complained.contains("longer than"), "{complained}");
    assert!(!target.join("kvs.redb").exists(), "a store was left");
    println!(
        "kvs restore refusing a line of 160 MiB: peak {:.0} MiB",
        peak as f64 / MIB
    );
    assert!(peak > 0, "the kernel counted no memory");
    assert!(
        peak < 64 << 20,
        "kvs restore held {:.0} MiB",
        peak as f64 / MIB
    );
}

/// The server runs without transparent huge pages (`kvs serve` turns them off
/// for its process): with them, mimalloc's arenas fault in 2 MiB at a time,
/// and PUT's and GET's p99 had outliers of 15–45 ms (`bench/README.md`).
/// Linux says so in `/proc/<pid>/status` (`THP_enabled`); a kernel that does
/// not report it is not checked.
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let Some(enabled) = status_field(server.pid(), "THP_enabled:") else {
        println!("no THP_enabled line in /proc/<pid>/status: not checked");
        return;
    };
    assert_eq!(enabled, "0", "THP_enabled of the server's process");
}
