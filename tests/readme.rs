//! The README's walkthrough, run as written: its `sh` blocks are taken from
//! README.md (so this test fails when the README drifts from what works)
//! and run with bash in an empty directory laid out as a clone with the
//! release binary in `target/release/`. The first block is the server's
//! terminal: its command runs in the background (`cargo` lines are left
//! out: the binary is built already). The others are the second terminal,
//! run as one script with `set -euo pipefail`. The server listens on a free
//! port instead of 23849 (`KVS_LISTEN`, `KVS_URL`, and the port in the
//! curl lines), as tests beside each other cannot share one; a command the
//! README says to stop with Ctrl-C runs for 3 seconds.

use crate::common;

use std::process::{Command, Stdio};

use common::{free_port, wait_ready};

/// The `sh` blocks of the walkthrough section of README.md.
fn walkthrough() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## From nothing to a stored value")
        .nth(1)
        .and_then(|rest| rest.split("<!-- end of the walkthrough -->").next())
        .expect("README.md has the walkthrough section");
    section
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let blocks = walkthrough();
    assert!(
        blocks.len() >= 3,
        "the walkthrough has too few blocks: {blocks:?}"
    );
    let clone = tempfile::tempdir().unwrap();
    let bin = clone.path().join("target/release");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kvs"), bin.join("kvs")).unwrap();
    let port = free_port().to_string();
    let url = format!("http://127.0.0.1:{port}");

    let serve: Vec<&str> = blocks[0]
        .lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with("cargo ") && !line.is_empty())
        .collect();
    assert_eq!(
        serve.len(),
        1,
        "the first block starts the server: {serve:?}"
    );
    let _server = common::KillOnDrop(
        Command::new("bash")
            .args(["-c", &format!("exec {}", serve[0])])
            .current_dir(clone.path())
            .env("KVS_LISTEN", format!("127.0.0.1:{port}"))
            .env("KVS_LOG_LEVEL", "warn")
            .env_remove("KVS_ADMIN_TOKEN")
            .env_remove("KVS_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&url);

    let mut script = String::from("set -euo pipefail\n");
    for block in &blocks[1..] {
        for line in block.lines() {
            let line = line.replace("23849", &port);
            if line.contains("Ctrl-C") {
                let code = line
                    .split_once("  #")
                    .map_or(line.as_str(), |(code, _)| code);
                script.push_str(&format!("timeout 3 {} || test $? = 124\n", code.trim_end()));
            } else {
                script.push_str(&line);
                script.push('\n');
            }
        }
    }
    let output = Command::new("bash")
        .args(["-c", &script])
        .current_dir(clone.path())
        .env("KVS_URL", &url)
        .env_remove("KVS_TOKEN")
        .env_remove("KVS_PROJECT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the walkthrough failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for expected in [
        "hello, world\n",
        "hello again",
        "config/app",
        "exported 5 keys from demo to demo.jsonl",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} is not in the walkthrough's output:\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    assert!(
        clone.path().join("demo.jsonl").exists(),
        "kvs export wrote nothing"
    );
}
