//! What the API tests need beyond `tests/common`: assertions phrased in
//! the contract's terms (an error is `{"error": {"code", "message"}}` and
//! nothing else), a project with its tokens ([`Setup`]), a raw HTTP/1.1
//! exchange for requests that a client library would send differently (raw
//! `..` in a path, a chunked body), and polling for what happens on the
//! clock.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use percent_encoding::NON_ALPHANUMERIC;
use serde_json::{Value, json};

use crate::common::{Answer, TestServer, kv};

/// The tests' client. (A refusal that comes before the request body was
/// read closes the connection; the server says so with `Connection: close`,
/// so the shared client never reuses such a connection.)
pub use crate::common::Client as Api;

/// Asserts that `answer` is the contract's error with this status and code:
/// a JSON body holding exactly `{"error": {"code", "message"}}` with a
/// non-empty message. Returns the message.
#[track_caller]
pub fn expect_error(answer: &Answer, status: u16, code: &str) -> String {
    assert_eq!(
        answer.status,
        status,
        "expected {status} {code}; the body was {:?}",
        answer.text()
    );
    let message = expect_error_shape(answer);
    assert_eq!(answer.code(), code, "the code of {:?}", answer.text());
    message
}

/// Asserts that an error answer is JSON in the contract's shape, whatever its
/// status and code; returns the message.
#[track_caller]
pub fn expect_error_shape(answer: &Answer) -> String {
    let content_type = answer.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "an error of status {} came as {content_type:?}, not JSON: {:?}",
        answer.status,
        answer.text()
    );
    let body = answer.json();
    let fields: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(fields, ["error"], "top-level fields of {body}");
    let error = body["error"].as_object().expect("error is an object");
    let mut fields: Vec<&String> = error.keys().collect();
    fields.sort();
    assert_eq!(fields, ["code", "message"], "fields of {body}");
    let message = error["message"].as_str().expect("message is a string");
    assert!(!message.is_empty(), "an empty error message in {body}");
    message.to_owned()
}

/// Asserts a status, showing the body when it is not the expected one.
#[track_caller]
pub fn expect_status(answer: &Answer, status: u16) {
    assert_eq!(
        answer.status,
        status,
        "unexpected status; the body was {:?}",
        answer.text()
    );
}

/// 401 `unauthorized`, with the `WWW-Authenticate: Bearer` challenge.
#[track_caller]
pub fn expect_unauthorized(answer: &Answer) {
    expect_error(answer, 401, "unauthorized");
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
}

/// A server with one project, its first manage token and the admin.
pub struct Setup {
    pub server: TestServer,
    pub admin: Api,
    pub project: String,
    pub manage: Api,
}

impl Setup {
    /// A new server with the project `id`, created with `settings`.
    pub fn new(id: &str, settings: Value) -> Setup {
        let server = TestServer::start();
        let admin = Api::new(&server.url, Some(&server.admin_token));
        let manage = admin.with_token(&admin.create_project(id, settings));
        Setup {
            server,
            admin,
            project: id.to_owned(),
            manage,
        }
    }

    /// A token of the project minted by the admin, as a client and the
    /// NewToken the server answered.
    pub fn token(&self, body: Value) -> (Api, Value) {
        mint(&self.admin, &self.project, body)
    }

    /// A client of a token minted by the admin with this role.
    pub fn client(&self, role: &str) -> Api {
        self.token(json!({ "role": role })).0
    }

    /// Stops the server gracefully and starts it again on the same data;
    /// the clients follow it to its new address.
    pub fn restart(self) -> Setup {
        let manage = self.manage.secret();
        let server = self.server.restart();
        let admin = Api::new(&server.url, Some(&server.admin_token));
        let manage = admin.with_token(&manage);
        Setup {
            server,
            admin,
            project: self.project,
            manage,
        }
    }

    /// The same token as `old`, on this server's current address.
    pub fn again(&self, old: &Api) -> Api {
        self.admin.with_token(&old.secret())
    }

    /// A client without a token.
    pub fn anonymous(&self) -> Api {
        Api::new(&self.server.url, None)
    }

    /// The path of a key of the project.
    pub fn kv(&self, key: &str) -> String {
        kv(&self.project, key)
    }

    /// `/v1/projects/{p}` followed by `tail`.
    pub fn path(&self, tail: &str) -> String {
        format!("/v1/projects/{}{tail}", self.project)
    }
}

/// Mints a token of `project` as `by` and returns its client and NewToken.
#[track_caller]
pub fn mint(by: &Api, project: &str, body: Value) -> (Api, Value) {
    let answer = by.post_json(&format!("/v1/projects/{project}/tokens"), &body);
    assert_eq!(answer.status, 201, "minting {body}: {}", answer.text());
    let token = answer.json();
    (by.with_token(token["secret"].as_str().unwrap()), token)
}

/// Stores a value and returns its version.
#[track_caller]
pub fn put(client: &Api, path: &str, value: &[u8]) -> u64 {
    let answer = client.put(path, value);
    assert!(
        answer.status == 200 || answer.status == 201,
        "PUT {path}: {} {}",
        answer.status,
        answer.text()
    );
    answer.json()["version"].as_u64().unwrap()
}

/// The `Kvs-Revision` header of an answer, as a number.
#[track_caller]
pub fn kvs_revision(answer: &Answer) -> u64 {
    answer
        .header("kvs-revision")
        .unwrap_or_else(|| panic!("no Kvs-Revision in a {} answer", answer.status))
        .parse()
        .expect("Kvs-Revision is a number")
}

/// Checks `done` every 20 ms until it holds; panics after `within`.
#[track_caller]
pub fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An answer read off a raw connection.
pub struct RawAnswer {
    pub status: u16,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body bytes as they came on the wire, after the header block.
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, de-chunked if it came chunked.
    pub fn json(&self) -> Value {
        let body = if self.header("transfer-encoding") == Some("chunked") {
            dechunk(&self.body)
        } else {
            self.body.clone()
        };
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&body)))
    }

    /// The error code of a contract error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// Sends one request, exactly as written, on a new connection and reads the
/// answer until the server closes it. `head` is the request line and
/// headers without the final blank line; `Host` and `Connection: close` are
/// added.
pub fn raw_exchange(server: &TestServer, head: &str, body: &[u8]) -> RawAnswer {
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request =
        format!("{head}\r\nHost: {address}\r\nConnection: close\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).unwrap();
    read_answer(&mut stream)
}

/// Reads an answer until the server closes the connection.
fn read_answer(stream: &mut TcpStream) -> RawAnswer {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer with a header block");
    let text = String::from_utf8(bytes[..end].to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawAnswer {
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    }
}

/// A request let in, whose handler now waits for the rest of its body: the
/// slow client of a body that takes seconds to arrive, without a sleep.
pub struct HeldRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

/// Sends `head` with `Expect: 100-continue`, waits for the server's
/// `100 Continue` (sent when the handler, past authentication, first reads
/// the body), then sends the first half of `body` and holds the rest back.
pub fn hold_body(server: &TestServer, head: &str, body: &[u8]) -> HeldRequest {
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "{head}\r\nHost: {address}\r\nConnection: close\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed before 100");
        seen.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&seen);
    assert!(
        line.starts_with("HTTP/1.1 100"),
        "the request was answered before its body: {line}"
    );
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first).unwrap();
    HeldRequest {
        stream,
        rest: rest.to_vec(),
    }
}

impl HeldRequest {
    /// Sends the rest of the body and reads the answer.
    pub fn finish(mut self) -> RawAnswer {
        self.stream.write_all(&self.rest).unwrap();
        read_answer(&mut self.stream)
    }
}

/// A body in the chunked transfer coding, `size` bytes of `x` in chunks of
/// at most 700 bytes.
pub fn chunked(size: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(700);
        body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'x', n));
        body.extend_from_slice(b"\r\n");
        left -= n;
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&bytes[..line]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&bytes[line + 2..line + 2 + size]);
        bytes = &bytes[line + 2 + size + 2..];
    }
}

/// Every key of a listing, following cursors from the start.
pub fn list_all(client: &Api, project: &str, query: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("/v1/projects/{project}/kv?{query}");
        if let Some(cursor) = &cursor {
            let cursor = percent_encoding::utf8_percent_encode(cursor, NON_ALPHANUMERIC);
            path.push_str(&format!("&cursor={cursor}"));
        }
        let answer = client.get(&path);
        expect_status(&answer, 200);
        let page = answer.json();
        for entry in page["keys"].as_array().unwrap() {
            keys.push(entry["key"].as_str().unwrap().to_owned());
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return keys,
        }
    }
    panic!("the listing did not end");
}
