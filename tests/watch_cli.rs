//! `kvs watch` as a user runs it: the real executable follows a server while
//! the test writes (and restarts the server), and the test reads what the
//! watch printed, line by line as it comes, against the revisions that the
//! writes were answered with.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Client, ServerProcess, TestServer, fake_secret, free_port, kv};
use serde_json::{Value, json};

/// The longest wait for one line from a watch.
const LINE_WAIT: Duration = Duration::from_secs(15);

/// A running `kvs watch`. Its stdout lines come through a channel, so that
/// a test can wait for each with a deadline; its stderr is gathered, for
/// its messages and for failures.
struct Watching {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Reads stderr until the process closes it.
    stderr_reader: Option<JoinHandle<()>>,
}

impl Watching {
    /// `kvs watch ARGS…` with the URL, token and project in the
    /// environment, as a user's shell would set them.
    fn start(url: &str, token: &str, project: &str, args: &[&str]) -> Watching {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvs"))
            .arg("watch")
            .args(args)
            .env("KVS_URL", url)
            .env("KVS_TOKEN", token)
            .env("KVS_PROJECT", project)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run the kvs binary");
        let (send, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let gathered = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        let stderr_reader = thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(read @ 1..) = pipe.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..read]);
                gathered.lock().unwrap().push_str(&text);
            }
        });
        Watching {
            child,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The next line; panics, showing stderr, if none comes in time.
    fn next(&self) -> String {
        self.lines.recv_timeout(LINE_WAIT).unwrap_or_else(|_| {
            panic!(
                "the watch printed nothing for {LINE_WAIT:?}; its stderr: {}",
                self.stderr()
            )
        })
    }

    fn next_json(&self) -> Value {
        let line = self.next();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// JSON lines up to and with the first for `key`.
    fn until_key(&self, key: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let change = self.next_json();
            let last = change["key"] == key;
            seen.push(change);
            if last {
                return seen;
            }
        }
    }

    /// Text lines up to and with the first that starts with `start`.
    fn until_line(&self, start: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self.next();
            let last = line.starts_with(start);
            seen.push(line);
            if last {
                return seen;
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the watch to end by itself; answers its exit code and
    /// all it wrote on stderr.
    fn exit(mut self) -> (i32, String) {
        let deadline = Instant::now() + LINE_WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.stderr_reader.take() {
                    reader.join().unwrap();
                }
                return (status.code().unwrap_or(-1), self.stderr());
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("the watch is still running; its stderr: {}", self.stderr());
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a project; answers its manage token and its revision at
/// creation, after which `--since` sees every change to it.
fn project(admin: &Client, id: &str) -> (String, String) {
    let answer = admin.post_json("/v1/projects", &json!({"id": id}));
    assert_eq!(answer.status, 201, "creating {id}: {}", answer.text());
    let body = answer.json();
    let secret = body["token"]["secret"].as_str().unwrap().to_owned();
    (secret, body["project"]["revision"].to_string())
}

/// Puts a value; answers the revision it was written at.
fn put(client: &Client, project: &str, key: &str) -> u64 {
    let answer = client.put(&kv(project, key), b"v");
    assert!(
        answer.status == 200 || answer.status == 201,
        "{}",
        answer.text()
    );
    answer.json()["version"].as_u64().unwrap()
}

/// A change as `kvs watch --json` prints it.
fn change(event: &str, key: &str, revision: u64) -> Value {
    json!({"event": event, "key": key, "version": revision, "revision": revision})
}

fn revision(change: &Value) -> u64 {
    change["revision"].as_u64().unwrap()
}

#[test]
fn a_watch_prints_puts_transactions_and_deletes_once_each_in_order() {
    let server = TestServer::start();
    let (token, since) = project(&server.admin(), "w");
    let client = server.admin().with_token(&token);
    let all = Watching::start(&server.url, &token, "w", &["--json", "--since", &since]);
    let under_a = Watching::start(
        &server.url,
        &token,
        "w",
        &["a/", "--json", "--since", &since],
    );

    let mut expected = Vec::new();
    for key in ["a/1", "b/1"] {
        expected.push(change("put", key, put(&client, "w", key)));
    }
    // Three keys in one transaction: one revision, printed in key order.
    let txn = client.post_json(
        "/v1/projects/w/txn",
        &json!({"ops": [
            {"op": "put", "key": "b/2", "value": "x"},
            {"op": "put", "key": "a/3", "value": "y"},
            {"op": "put", "key": "a/2", "value": "z"},
        ]}),
    );
    assert_eq!(txn.status, 200, "{}", txn.text());
    let at = txn.json()["revision"].as_u64().unwrap();
    for key in ["a/2", "a/3", "b/2"] {
        expected.push(change("put", key, at));
    }
    assert_eq!(client.delete(&kv("w", "a/1")).status, 204);
    // Nothing else writes to this server: a read's revision is the delete's.
    let gone = client.get(&kv("w", "a/1"));
    assert_eq!(gone.status, 404);
    let at: u64 = gone.header("kvs-revision").unwrap().parse().unwrap();
    expected.push(change("delete", "a/1", at));
    let cleared = client.delete("/v1/projects/w/kv?prefix=b/");
    assert_eq!(cleared.json()["deleted"], 2, "{}", cleared.text());
    let at = cleared.json()["revision"].as_u64().unwrap();
    for key in ["b/1", "b/2"] {
        expected.push(change("delete", key, at));
    }
    expected.push(change("put", "a/end", put(&client, "w", "a/end")));

    assert_eq!(all.until_key("a/end"), expected);
    let only_a: Vec<Value> = expected
        .into_iter()
        .filter(|change| change["key"].as_str().unwrap().starts_with("a/"))
        .collect();
    assert_eq!(under_a.until_key("a/end"), only_a);
}

#[test]
fn a_watch_outlives_a_server_restart_and_prints_every_change_once_with_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let (token, since) = project(&server.admin(), "r");
    let client = server.admin().with_token(&token);
    let mut watch = Watching::start(&server.url, &token, "r", &["--json", "--since", &since]);

    let mut before = Vec::new();
    for key in ["k1", "k2"] {
        before.push(change("put", key, put(&client, "r", key)));
    }
    let short = client.put(&format!("{}?ttl=2", kv("r", "ttl")), b"short-lived");
    assert_eq!(short.status, 201, "{}", short.text());
    let put_at = Instant::now();
    let ttl_revision = short.json()["version"].as_u64().unwrap();
    before.push(change("put", "ttl", ttl_revision));
    // The watch is current when the server goes away.
    assert_eq!(watch.until_key("ttl"), before);

    assert_eq!(server.terminate(), Some(0), "the server's SIGTERM exit");
    // The key falls due while the server is down: its expiry is published
    // after the restart.
    thread::sleep((put_at + Duration::from_secs(3)).saturating_duration_since(Instant::now()));
    server.restart();
    // Written at once, most likely before the watch is back (it waits the
    // server's 2 s retry): resuming must replay it.
    let k3 = change("put", "k3", put(&client, "r", "k3"));

    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(after.contains(&k3) && after.iter().any(|c| c["key"] == "ttl")) {
        assert!(Instant::now() < deadline, "got only {after:?}");
        after.push(watch.next_json());
    }
    let k4 = change("put", "k4", put(&client, "r", "k4"));
    after.extend(watch.until_key("k4"));

    let expiries: Vec<&Value> = after.iter().filter(|c| c["key"] == "ttl").collect();
    assert_eq!(expiries.len(), 1, "one expiry: {after:?}");
    let expired_at = revision(expiries[0]);
    assert!(expired_at > ttl_revision, "{after:?}");
    let mut expiry = change("delete", "ttl", expired_at);
    expiry["reason"] = json!("expired");
    let mut expected = vec![expiry, k3, k4];
    expected.sort_by_key(revision);
    assert_eq!(after, expected, "every change once, in revision order");
    assert_eq!(client.get(&kv("r", "ttl")).status, 404);

    // The same process carried on, and said what happened.
    assert!(watch.is_running(), "stderr: {}", watch.stderr());
    let stderr = watch.stderr();
    assert!(stderr.contains("the watch was cut off"), "{stderr}");
    assert!(
        stderr.contains(&format!("resuming after revision {ttl_revision}")),
        "{stderr}"
    );
}

#[test]
fn text_lines_show_each_value_on_its_line() {
    let server = TestServer::start();
    let (token, since) = project(&server.admin(), "t");
    let client = server.admin().with_token(&token);
    let watch = Watching::start(&server.url, &token, "t", &["--values", "--since", &since]);

    let mut expected = Vec::new();
    let mut write = |key: &str, value: &[u8], content_type: &str, shown: &str| {
        let answer = client.send(
            "PUT",
            &kv("t", key),
            Some(value),
            &[("Content-Type", content_type)],
        );
        assert_eq!(answer.status, 201, "{}", answer.text());
        let revision = answer.json()["version"].as_u64().unwrap();
        expected.push(format!("put {key} {revision} {shown}"));
        revision
    };
    write(
        "greeting",
        "héllo wörld".as_bytes(),
        "text/plain",
        "héllo wörld",
    );
    write("two lines", b"a\nb\\c", "text/plain", r"a\nb\\c");
    write(
        "doc",
        br#"{ "a": [1, 2] }"#,
        "application/json",
        r#"{"a":[1,2]}"#,
    );
    let last = write(
        "bin",
        &[0, 159, 146, 150],
        "image/png",
        "<4 bytes, not text>",
    );
    assert_eq!(client.delete(&kv("t", "greeting")).status, 204);
    expected.push(format!("delete greeting {}", last + 1));

    assert_eq!(watch.until_line("delete greeting"), expected);
}

#[test]
fn a_watch_with_a_token_of_another_project_exits_3() {
    let server = TestServer::start();
    project(&server.admin(), "mine");
    let (theirs, _) = project(&server.admin(), "theirs");
    let watch = Watching::start(&server.url, &theirs, "mine", &[]);
    let (code, stderr) = watch.exit();
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.starts_with("kvs: project_not_found"), "{stderr}");
}

#[test]
fn a_watch_with_an_unknown_token_exits_1_with_unauthorized() {
    let server = TestServer::start();
    let watch = Watching::start(&server.url, &fake_secret(), "default", &[]);
    let (code, stderr) = watch.exit();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("kvs: unauthorized"), "{stderr}");
}

#[test]
fn a_watch_with_no_server_listening_exits_4_naming_the_url() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let watch = Watching::start(&url, &fake_secret(), "default", &[]);
    let (code, stderr) = watch.exit();
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
}

/// `--timeout` (for commands that wait for one answer) does not cut a
/// watch that sits quiet between changes: the stream has its own limit,
/// past the server's keep-alives.
#[test]
fn a_quiet_watch_is_not_cut_by_the_timeout() {
    let server = TestServer::start();
    let (token, since) = project(&server.admin(), "q");
    let client = server.admin().with_token(&token);
    let watch = Watching::start(
        &server.url,
        &token,
        "q",
        &["--json", "--since", &since, "--timeout", "1s"],
    );
    let first = put(&client, "q", "first");
    assert_eq!(watch.next_json(), change("put", "first", first));
    // Quiet for three times the timeout.
    thread::sleep(Duration::from_secs(3));
    let second = put(&client, "q", "second");
    assert_eq!(watch.next_json(), change("put", "second", second));
    assert_eq!(watch.stderr(), "");
}
