//! A real cluster for the tests of `tests/cluster.rs`: a 3-member etcd on
//! 127.0.0.1, 127.0.0.2 and 127.0.0.3 (free ports, data in the test's
//! directory) and three `kvs serve` processes over it, the first started
//! with `KVS_ADMIN_TOKEN`; and a watch stream read with a deadline.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::common::{Client, ServerProcess, fake_secret};
use crate::etcd;
use crate::sse::Watch;

/// The addresses of the three members (and nothing else: nodes listen on
/// 127.0.0.1).
const HOSTS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// A port free on `host` now (bound and released at once).
fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member: how to start it again on the same ports and data.
struct Member {
    name: String,
    client: String,
    peer: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A 3-member etcd cluster.
pub struct Etcd {
    members: Vec<Member>,
    initial: String,
}

impl Etcd {
    /// Starts the three members in `dir` and waits until all are healthy.
    pub fn start(dir: &Path) -> Etcd {
        let members: Vec<Member> = HOSTS
            .iter()
            .enumerate()
            .map(|(i, host)| Member {
                name: format!("etcd{i}"),
                client: format!("http://{host}:{}", free_port(host)),
                peer: format!("http://{host}:{}", free_port(host)),
                data: dir.join(format!("etcd{i}")),
                log: dir.join(format!("etcd{i}.log")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd { members, initial };
        for i in 0..3 {
            etcd.spawn(i);
        }
        etcd.wait_healthy();
        etcd
    }

    /// The client URLs, comma-separated, as `--etcd-endpoints` takes them.
    pub fn endpoints(&self) -> String {
        let urls: Vec<&str> = self.members.iter().map(|m| m.client.as_str()).collect();
        urls.join(",")
    }

    fn spawn(&mut self, i: usize) {
        let member = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .unwrap();
        let child = etcd::command(
            &member.name,
            &member.data,
            &member.client,
            &member.peer,
            &self.initial,
        )
        .stderr(log)
        .spawn()
        .expect("etcd runs (apt-get install etcd-server)");
        member.child = Some(child);
    }

    /// SIGKILL to member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data and waits until all three are
    /// healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy();
    }

    /// `etcdctl compact`: etcd's history before `revision` is gone.
    pub fn compact(&self, revision: u64) {
        assert!(
            self.etcdctl(&["compact", &revision.to_string()]).is_some(),
            "etcdctl compact {revision} failed"
        );
    }

    /// `etcdctl put`: a write of another application sharing this etcd.
    pub fn put(&self, name: &str, value: &str) {
        assert!(
            self.etcdctl(&["put", name, value]).is_some(),
            "etcdctl put {name} failed"
        );
    }

    /// `etcdctl` on every endpoint with `args`: its stdout, if it succeeded.
    fn etcdctl(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "--command-timeout=2s"])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.etcdctl(&["endpoint", "health"]).is_none() {
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy in 30 s (see {})",
                self.members[0].log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member that leads now, found with `etcdctl endpoint status`.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(text) = self.etcdctl(&["endpoint", "status", "-w", "json"])
                && let Ok(Value::Array(statuses)) = serde_json::from_str::<Value>(&text)
            {
                for status in &statuses {
                    let endpoint = status["Endpoint"].as_str().unwrap_or("");
                    let status = &status["Status"];
                    if status["leader"].as_u64().is_some()
                        && status["leader"].as_u64() == status["header"]["member_id"].as_u64()
                        && let Some(i) = self.members.iter().position(|m| m.client == endpoint)
                    {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no etcd leader in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Three kvs nodes over a 3-member etcd. Node 0 was started with
/// `KVS_ADMIN_TOKEN`; nodes 1 and 2 accept the token it set.
pub struct Cluster {
    pub nodes: Vec<ServerProcess>,
    pub etcd: Etcd,
    /// The etcd data, the nodes' data and every log; kept while it lives.
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(dir.path());
        let admin_token = fake_secret();
        let args = ["--etcd-endpoints".to_owned(), etcd.endpoints()];
        let nodes = (0..3)
            .map(|i| {
                let data = dir.path().join(format!("node{i}"));
                ServerProcess::start_with(&data, &admin_token, i == 0, &args)
            })
            .collect();
        Cluster {
            nodes,
            etcd,
            _dir: dir,
        }
    }

    /// An admin client of node `i`.
    pub fn admin(&self, i: usize) -> Client {
        self.nodes[i].admin()
    }

    /// A client of every node with `token`.
    pub fn clients(&self, token: &str) -> Vec<Client> {
        self.nodes
            .iter()
            .map(|node| Client::new(&node.url, Some(token)))
            .collect()
    }
}

/// One server-sent event, owned.
#[derive(Clone, Debug)]
pub struct Event {
    pub name: String,
    pub id: Option<u64>,
    pub data: Value,
}

/// An open watch stream, read with deadlines from blocking code.
pub struct Stream {
    runtime: Runtime,
    watch: Watch,
    queued: VecDeque<Event>,
    ended: bool,
}

impl Stream {
    /// Opens `path` on the node at `url` with `token` (and `headers`, each
    /// line ending in CRLF); the answer must be a 200 event stream.
    pub fn open(url: &str, path: &str, token: &str, headers: &str) -> Stream {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let host = url.trim_start_matches("http://").to_owned();
        let watch = runtime.block_on(async {
            let socket = TcpStream::connect(&host).await.unwrap();
            Watch::open_with(socket, &host, path, token, headers).await
        });
        Stream {
            runtime,
            watch,
            queued: VecDeque::new(),
            ended: false,
        }
    }

    /// The next event, waiting at most `limit`; `None` when none came or
    /// the stream ended.
    pub fn next(&mut self, limit: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.queued.is_empty() && !self.ended {
            let (queued, watch) = (&mut self.queued, &mut self.watch);
            let read = self.runtime.block_on(async {
                let mut each = |event: crate::sse::Event<'_>| {
                    queued.push_back(Event {
                        name: event.name.to_owned(),
                        id: event.id.and_then(|id| id.parse().ok()),
                        data: serde_json::from_str(event.data).unwrap_or(Value::Null),
                    })
                };
                tokio::time::timeout_at(deadline, watch.read(&mut each)).await
            });
            match read {
                Err(_) => break,
                Ok(more) => self.ended = !more,
            }
        }
        self.queued.pop_front()
    }

    /// Events until (and with) the first for which `last` holds, waiting
    /// at most `limit` in all; panics if it does not come.
    pub fn until(&mut self, limit: Duration, last: impl Fn(&Event) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + limit;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.next(left) else {
                panic!(
                    "the awaited event did not come in {limit:?} (stream ended: {}); \
                     came: {events:?}",
                    self.ended
                );
            };
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Waits at most `limit` for the stream to end; whether it did.
    /// Events that come meanwhile are dropped.
    pub fn wait_end(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.queued.clear();
            self.next(left);
        }
        true
    }
}
