//! `kvs top` as a user sees it: the real executable runs in a 120×40 tmux
//! pane (on a tmux server of the test's own) against the real server while
//! a thread writes and reads; the test reads the pane as text, and quits
//! with `q`. tmux must be installed (`.ci/run` installs it).

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, ServerProcess, fake_secret, kv};
use serde_json::json;

/// The longest wait for the pane to show what a test waits for.
const WAIT: Duration = Duration::from_secs(30);

/// `kvs top` in a detached tmux session. Its exit code is written to a file
/// when it ends, since the session ends with it.
struct Pane {
    /// The tmux server's socket name, so that the test touches no other
    /// tmux server.
    socket: String,
    exit_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pane {
    fn start(url: &str, token: &str) -> Pane {
        let dir = tempfile::tempdir().unwrap();
        let exit_file = dir.path().join("exit");
        let socket = format!(
            "kvs-top-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let command = format!(
            "'{}' top --url '{url}' --token '{token}' --interval 1s; echo $? > '{}'",
            env!("CARGO_BIN_EXE_kvs"),
            exit_file.display()
        );
        let pane = Pane {
            socket,
            exit_file,
            _dir: dir,
        };
        let started = pane
            .tmux()
            .args(["new-session", "-d", "-s", "top", "-x", "120", "-y", "40"])
            .arg(command)
            .status()
            .expect("cannot run tmux (is it installed?)");
        assert!(started.success(), "tmux new-session failed");
        pane
    }

    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        // A terminal type tmux knows, whatever the test runner has.
        command
            .args(["-L", &self.socket])
            .env("TERM", "xterm-256color");
        command
    }

    /// The pane's text as it is now.
    fn screen(&self) -> String {
        let output = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Captures the pane until `check` finds what it wants in it; panics
    /// with the last screen after [`WAIT`].
    fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if let Some(found) = check(&screen) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "the pane never showed {what}; it shows:\n{screen}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn session_exists(&self) -> bool {
        self.tmux()
            .args(["has-session", "-t", "top"])
            .output()
            .is_ok_and(|output| output.status.success())
    }

    /// Presses `q` and answers the exit code of `kvs top`, once the session
    /// has ended.
    fn quit(&self) -> i32 {
        let sent = self.tmux().args(["send-keys", "-t", "top", "q"]).status();
        assert!(sent.is_ok_and(|status| status.success()));
        let deadline = Instant::now() + WAIT;
        while self.session_exists() {
            assert!(Instant::now() < deadline, "kvs top did not quit on q");
            thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.exit_file)
            .expect("kvs top's exit code was not written")
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

/// The number after `label` on the screen (`requests/s  12.5`).
fn figure(screen: &str, label: &str) -> Option<f64> {
    screen.lines().find_map(|line| {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|word| !word.is_empty())
            .collect();
        words
            .windows(2)
            .find_map(|pair| (pair[0] == label).then(|| pair[1].parse().ok()).flatten())
    })
}

/// Writes and reads in a loop until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<u64>>,
}

impl Load {
    fn start(client: Client, project: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let thread = thread::spawn(move || {
            let mut n = 0u64;
            while !running.load(Ordering::Relaxed) {
                let path = kv(project, &format!("key-{}", n % 500));
                let put = client.put(&path, b"value");
                assert!(matches!(put.status, 200 | 201), "PUT: {}", put.text());
                assert_eq!(client.get(&path).status, 200);
                n += 1;
            }
            n
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Load {
    /// Panics if the load has stopped on its own (a request failed).
    fn assert_running(&self) {
        let finished = self.thread.as_ref().is_none_or(|t| t.is_finished());
        assert!(!finished, "the load stopped");
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !thread::panicking() {
                assert!(result.is_ok(), "the load failed");
            }
        }
    }
}

/// Whether tmux is here. `.ci/run` installs it; on a machine without it
/// (the README's test command on a fresh laptop) these tests say so and pass.
fn tmux_missing() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: tmux is not installed (`.ci/run` installs it)");
    }
    !found
}

fn server() -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    (dir, server)
}

#[test]
fn top_shows_the_figures_move_under_load_and_quits_on_q() {
    if tmux_missing() {
        return;
    }
    let (_dir, server) = server();
    let admin = server.admin();
    admin.create_project("busy", json!({}));
    let pane = Pane::start(&server.url, &server.admin_token);
    // Rates need two polls; until then the figure is `-`.
    pane.wait_for("a request rate", |screen| figure(screen, "requests/s"));

    let load = Load::start(admin.clone(), "busy");
    let mut seen = Vec::new();
    let last = pane.wait_for("the request rate change under load", |screen| {
        load.assert_running();
        let rate = figure(screen, "requests/s")?;
        if seen.last() != Some(&rate) {
            seen.push(rate);
        }
        (seen.len() >= 3 && rate > 50.0).then(|| screen.to_owned())
    });
    let keys = pane.wait_for("the keys written", |screen| {
        figure(screen, "keys").filter(|keys| *keys > 0.0)
    });
    // The writes' checkpoints write to the database file ("checkpoints
    // write 52.0 KiB/s"): the figure is a number, above 0 under writes.
    let checkpoints = pane.wait_for("the checkpoints' writes", |screen| {
        figure(screen, "write").filter(|bytes| *bytes > 0.0)
    });
    let screen = pane.wait_for("the busy project written now", |screen| {
        screen
            .lines()
            .any(|line| line.contains("busy") && line.contains("now"))
            .then(|| screen.to_owned())
    });
    drop(load);
    println!(
        "requests/s seen: {seen:?}; keys {keys}; checkpoints write {checkpoints}\n{last}\n{screen}"
    );
    assert!(seen.iter().all(|rate| *rate >= 0.0));
    assert!(screen.contains("p99"), "{screen}");

    assert_eq!(pane.quit(), 0);
    assert!(!pane.session_exists());
}

#[test]
fn top_shows_a_server_that_went_away_and_polls_until_it_is_back() {
    if tmux_missing() {
        return;
    }
    let (_dir, mut server) = server();
    let pane = Pane::start(&server.url, &server.admin_token);
    pane.wait_for("a request rate", |screen| figure(screen, "requests/s"));

    server.kill();
    let screen = pane.wait_for("that the server cannot be reached", |screen| {
        screen.contains("cannot connect").then(|| screen.to_owned())
    });
    println!("{screen}");
    assert!(
        pane.session_exists(),
        "kvs top exited when the server went away"
    );

    server.restart();
    pane.wait_for("the server back", |screen| {
        (!screen.contains("cannot connect")).then_some(())
    });
    assert_eq!(pane.quit(), 0);
}
