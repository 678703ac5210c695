//! Test support shared by the test binaries: a server in this process on a
//! port of its own (`TestServer`), the real `kvs` binary as a child process
//! (`ServerProcess`, for restarts, kills and the command line), and a small
//! blocking HTTP client that never turns a status into an error.
#![allow(dead_code)] // each test binary uses part of this

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod port;
pub use port::free_port;

/// A well-formed admin secret for a test server.
pub fn fake_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    use base64::Engine;
    format!(
        "kvs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of a contract error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking client of one server, optionally with a token.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: Option<&str>) -> Client {
        Client::with_timeout(base, token, Duration::from_secs(60))
    }

    /// A client whose every request gives up after `timeout`.
    pub fn with_timeout(base: &str, token: Option<&str>, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // Tests share a client between many threads: keep their
            // connections, rather than leave thousands in TIME_WAIT (which
            // can keep a later server from binding a free port).
            .max_idle_connections(256)
            .max_idle_connections_per_host(256)
            .build()
            .into();
        Client {
            base: base.to_owned(),
            token: token.map(str::to_owned),
            agent,
        }
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client::new(&self.base, Some(token))
    }

    /// The secret this client sends.
    pub fn secret(&self) -> String {
        self.token.clone().expect("a client with a token")
    }

    /// Any request; `body` is sent as is with `content_type` if given.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ureq::Error> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body.map(<[u8]>::to_vec).unwrap_or_default())
            .unwrap();
        let mut response = self.agent.run(request)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The same, panicking on a transport error.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.request(method, path, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[])
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None, &[])
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Answer {
        self.send("PUT", path, Some(body), &[])
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send(
            "POST",
            path,
            Some(&bytes),
            &[("Content-Type", "application/json")],
        )
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send(
            "PATCH",
            path,
            Some(&bytes),
            &[("Content-Type", "application/json")],
        )
    }

    /// Creates a project (as this client, an admin) and returns its manage
    /// token's secret.
    pub fn create_project(&self, id: &str, settings: Value) -> String {
        let mut body = settings;
        body["id"] = Value::String(id.to_owned());
        let answer = self.post_json("/v1/projects", &body);
        assert_eq!(answer.status, 201, "creating {id}: {}", answer.text());
        answer.json()["token"]["secret"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Mints a token of a project and returns its secret.
    pub fn mint(&self, project: &str, body: Value) -> String {
        let answer = self.post_json(&format!("/v1/projects/{project}/tokens"), &body);
        assert_eq!(answer.status, 201, "minting {body}: {}", answer.text());
        answer.json()["secret"].as_str().unwrap().to_owned()
    }
}

/// `/v1/projects/{p}/kv/{key}` with the key percent-encoded (slashes kept).
pub fn kv(project: &str, key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "/v1/projects/{project}/kv/{}",
        percent_encoding::utf8_percent_encode(key, SET)
    )
}

/// The server in this process, on its own port and data directory.
pub struct TestServer {
    pub url: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    /// Kept so that the directory lives as long as the server.
    _dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// A new server on a fresh data directory.
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut server = TestServer::start_on(&data_dir, &fake_secret());
        server._dir = Some(dir);
        server
    }

    /// A new server with settings changed by `configure`.
    pub fn start_with(configure: impl FnOnce(&mut kvs::config::Settings)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = kvs::config::Settings::with_data_dir(&dir.path().join("data"));
        configure(&mut settings);
        let mut server = TestServer::start_with_settings(settings, &fake_secret());
        server._dir = Some(dir);
        server
    }

    /// A server on an existing data directory (for restarts).
    pub fn start_on(data_dir: &Path, admin_token: &str) -> TestServer {
        TestServer::start_with_settings(kvs::config::Settings::with_data_dir(data_dir), admin_token)
    }

    fn start_with_settings(settings: kvs::config::Settings, admin_token: &str) -> TestServer {
        let data_dir = settings.data_dir.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        let secret = admin_token.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready.send(listener.local_addr().unwrap()).unwrap();
                kvs::server::run(listener, settings, Some(secret), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let address = address.recv().unwrap();
        let server = TestServer {
            url: format!("http://{address}"),
            admin_token: admin_token.to_owned(),
            data_dir,
            _dir: None,
            stop: Some(stop),
            thread: Some(thread),
        };
        wait_ready(&server.url);
        server
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.url, Some(&self.admin_token))
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, None)
    }

    /// Stops the server gracefully and starts it again on the same data.
    pub fn restart(mut self) -> TestServer {
        let dir = self._dir.take();
        let (data_dir, token) = (self.data_dir.clone(), self.admin_token.clone());
        self.stop_now();
        let mut server = TestServer::start_on(&data_dir, &token);
        server._dir = dir;
        server
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Waits until `GET /readyz` answers 200 (at most 30 s).
pub fn wait_ready(url: &str) {
    let client = Client::new(url, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(answer) = client.request("GET", "/readyz", None, &[])
            && answer.status == 200
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{url} did not become ready within 30 s");
}

/// The real `kvs` binary, serving a data directory on a free port.
pub struct ServerProcess {
    pub url: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Given to `kvs serve` after the listen address and data directory.
    args: Vec<String>,
    /// Whether `admin_token` is given as `KVS_ADMIN_TOKEN` (a cluster node
    /// without it accepts the token that another node set).
    env_token: bool,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts `kvs serve` on `data_dir` (created if missing) and waits until
    /// it is ready. Its output goes to `<data_dir>.log`.
    pub fn start(data_dir: &Path, admin_token: &str) -> ServerProcess {
        ServerProcess::start_with(data_dir, admin_token, true, &[])
    }

    /// The same with `args` added to `kvs serve` (a cluster node's
    /// `--etcd-endpoints`), and `KVS_ADMIN_TOKEN` set only with `env_token`.
    pub fn start_with(
        data_dir: &Path,
        admin_token: &str,
        env_token: bool,
        args: &[String],
    ) -> ServerProcess {
        let mut server = ServerProcess {
            url: format!("http://127.0.0.1:{}", free_port()),
            admin_token: admin_token.to_owned(),
            data_dir: data_dir.to_owned(),
            log: data_dir.with_extension("log"),
            args: args.to_vec(),
            env_token,
            child: None,
        };
        server.spawn();
        server
    }

    /// Starts the server again on the same port and data directory (after
    /// a SIGTERM if it still runs), as a service manager would, so that
    /// its clients can find it where it was.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// SIGKILL, then the server again on the same port and data directory,
    /// as a service manager restarts a service that crashed.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `kvs serve` on this server's address and waits until it is ready.
    fn spawn(&mut self) {
        let listen = self.url.trim_start_matches("http://").to_owned();
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
        command
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.args);
        if self.env_token {
            command.env("KVS_ADMIN_TOKEN", &self.admin_token);
        }
        let child = command
            .env("KVS_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("cannot run the kvs binary");
        self.child = Some(child);
        wait_ready(&self.url);
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.url, Some(&self.admin_token))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().ok().and_then(|status| status.code())
    }
}

/// A child process killed (and reaped) when this is dropped: a server a
/// test started by hand.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kvs serve` on `data`, which may refuse to start (a damaged store): the
/// running server and its URL once it answers, or what it printed (at
/// `log_level`) when it stopped on its own.
pub fn serve_or_refusal(
    data: &Path,
    admin: &str,
    log_level: &str,
) -> Result<(KillOnDrop, String), String> {
    let url = format!("http://127.0.0.1:{}", free_port());
    let log = data.with_extension("log");
    let output = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(["serve", "--listen", url.trim_start_matches("http://")])
        .arg("--data-dir")
        .arg(data)
        .env("KVS_ADMIN_TOKEN", admin)
        .env("KVS_LOG_LEVEL", log_level)
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let probe = Client::new(&url, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.0.try_wait() {
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        }
        if let Ok(answer) = probe.request("GET", "/healthz", None, &[])
            && answer.status == 200
        {
            return Ok((child, url));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the server on {} neither started nor stopped",
        data.display()
    );
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one run of the `kvs` binary as a client left behind.
pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    /// Asserts success; answers stdout as text.
    pub fn ok(&self) -> String {
        assert_eq!(self.code, 0, "failed: {}", self.stderr);
        self.text()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }
}

/// Runs a command with `stdin` fed from a thread, so that a large input
/// cannot deadlock against a full stdout pipe.
pub fn run(mut command: Command, stdin: &[u8]) -> Run {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the kvs binary");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A command that does not read its stdin closes it: not a failure here.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A small xorshift generator, seeded from the OS, one per thread.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).unwrap();
        Rng(u64::from_le_bytes(bytes) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
