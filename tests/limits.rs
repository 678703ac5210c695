//! The abuse limits, from outside: request rates per token and per
//! address, failed authentications, slow clients (headers and bodies),
//! connection and watcher caps, header size, and CORS. Each test starts a
//! server with small limits so that a handful of requests reach them.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Answer, TestServer, kv};
use serde_json::json;

/// The address of a test server, for raw connections.
fn address(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// A raw connection with a read timeout, for requests a client library
/// would not send (partial ones).
fn connect(server: &TestServer) -> TcpStream {
    let stream = TcpStream::connect(address(server)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Everything the server sends until it closes the connection (or the read
/// timeout passes, which fails the test).
fn read_to_close(mut stream: TcpStream) -> String {
    let mut text = Vec::new();
    match stream.read_to_end(&mut text) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(error) => panic!("the server did not close the connection: {error}"),
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn assert_too_many(answer: &Answer) {
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(answer.code(), "too_many_requests");
    let wait: u64 = answer
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
}

#[test]
fn a_burst_beyond_a_tokens_rate_gets_429_with_retry_after_and_other_tokens_go_on() {
    let server = TestServer::start_with(|s| s.limits.requests_per_token = 5);
    let admin = server.admin();
    let limits = &admin.get("/v1/status").json()["limits"];
    assert_eq!(limits["rate_limit_per_token"], 5);
    assert_eq!(limits["rate_limit_per_ip"], 0);
    let token = admin.create_project("p", json!({}));
    let busy = server.anonymous().with_token(&token);
    let answers: Vec<Answer> = (0..20).map(|_| busy.get("/v1/whoami")).collect();
    // The burst is the token's 5; after it, cells come back one per 200 ms,
    // far slower than these requests (20 of them do not take 3 s).
    assert!(answers[..5].iter().all(|a| a.status == 200));
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(!refused.is_empty(), "none of 20 refused");
    assert_too_many(refused[0]);
    // The limit is the token's: another token is not held up.
    assert_eq!(admin.get("/v1/whoami").status, 200);
    // Once the wait is over, the token is admitted again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(busy.get("/v1/whoami").status, 200);
}

#[test]
fn a_burst_from_one_address_gets_429_on_every_route() {
    let server = TestServer::start_with(|s| s.limits.requests_per_ip = 1);
    let anonymous = server.anonymous();
    // The readiness check took this second's cell; wait for the next one.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while anonymous.get("/healthz").status != 200 {
        assert!(std::time::Instant::now() < deadline, "never admitted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next cell comes back in a second: these come sooner.
    assert_too_many(&anonymous.get("/healthz"));
    // Tokens do not lift the address's limit, and unknown paths count too.
    assert_too_many(&server.admin().get("/v1/whoami"));
    assert_too_many(&anonymous.get("/no/such/route"));
}

#[test]
fn repeated_failed_authentication_from_one_address_is_slowed_and_valid_tokens_still_work() {
    let server = TestServer::start_with(|s| s.limits.auth_failures_per_minute = 3);
    let guesser = server.anonymous().with_token(&common::fake_secret());
    for _ in 0..3 {
        assert_eq!(guesser.get("/v1/whoami").status, 401);
    }
    let slowed = guesser.get("/v1/projects/default/kv/a");
    assert_too_many(&slowed);
    // Not a wrong credential: no credential at all is a plain 401.
    assert_eq!(server.anonymous().get("/v1/whoami").status, 401);
    // The owner of a valid token, from the same address, is not locked out.
    assert_eq!(server.admin().get("/v1/whoami").status, 200);
    // The form interface counts too.
    let form = server
        .anonymous()
        .get(&format!("/?key=a&auth={}", common::fake_secret()));
    assert_eq!(form.status, 429);
}

#[test]
fn a_client_that_sends_half_its_headers_is_cut_off_at_the_timeout_without_holding_up_others() {
    let server = TestServer::start_with(|s| s.limits.header_timeout = Duration::from_secs(1));
    let admin = server.admin();
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: kvs\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();
    // While they hang, everyone else is answered.
    for n in 0..50 {
        let path = kv("default", &format!("k{n}"));
        assert_eq!(admin.put(&path, b"v").status, 201);
        assert_eq!(admin.get(&path).status, 200);
    }
    // And each slow connection is closed, with nothing stored for it.
    for stream in slow {
        let answer = read_to_close(stream);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_408_and_is_not_stored() {
    let server = TestServer::start_with(|s| s.limits.body_timeout = Duration::from_secs(1));
    let mut stream = connect(&server);
    let head = format!(
        "PUT /v1/projects/default/kv/slow HTTP/1.1\r\nHost: kvs\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 100\r\n\r\n0123456789",
        server.admin_token
    );
    stream.write_all(head.as_bytes()).unwrap();
    let answer = read_to_close(stream);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    let admin = server.admin();
    assert_eq!(admin.get(&kv("default", "slow")).status, 404);
}

#[test]
fn connections_beyond_the_per_address_cap_are_answered_429_and_closed() {
    let server = TestServer::start_with(|s| s.limits.max_connections_per_ip = 3);
    let request = b"GET /healthz HTTP/1.1\r\nHost: kvs\r\n\r\n";
    // Three connections that each got their 200. The connection that
    // `TestServer` waited for readiness on is closed, but the server may
    // not have seen it close yet and then still counts it (CI saw the
    // third connection refused once): the three are opened again until
    // none is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut open: Vec<TcpStream> = Vec::new();
    while open.len() < 3 {
        let mut stream = connect(&server);
        stream.write_all(request).unwrap();
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).unwrap();
        let answer = String::from_utf8_lossy(&buffer[..read]).into_owned();
        if answer.starts_with("HTTP/1.1 200") {
            open.push(stream);
            continue;
        }
        assert!(
            answer.starts_with("HTTP/1.1 429") && std::time::Instant::now() < deadline,
            "{read} bytes: {answer}"
        );
        open.clear();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut extra = connect(&server);
    extra.write_all(request).unwrap();
    let answer = read_to_close(extra);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"));
    assert!(answer.contains("too_many_requests"));
    // A connection that closes gives its place back.
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect(&server);
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: kvs\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = read_to_close(again);
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watches_beyond_a_tokens_cap_get_429_and_other_tokens_may_still_watch() {
    let server = TestServer::start_with(|s| s.limits.max_watchers_per_token = 2);
    let admin = server.admin();
    let token = admin.create_project("p", json!({}));
    let watch = |secret: &str| {
        let mut stream = connect(&server);
        let request = format!(
            "GET /v1/projects/p/watch HTTP/1.1\r\nHost: kvs\r\nAuthorization: Bearer {secret}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut buffer = [0u8; 1024];
        let read = stream.read(&mut buffer).unwrap();
        (
            String::from_utf8_lossy(&buffer[..read]).into_owned(),
            stream,
        )
    };
    let (first, _a) = watch(&token);
    let (second, _b) = watch(&token);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    let (third, _c) = watch(&token);
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    assert!(third.contains("too_many_requests"));
    // A blocking read is a long request too.
    let client = server.anonymous().with_token(&token);
    let blocked = client.get(&format!("{}?wait=5s", kv("p", "k")));
    assert_too_many(&blocked);
    let (other, _d) = watch(&server.admin_token);
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
}

#[test]
fn headers_beyond_the_limit_are_refused_with_431() {
    let server = TestServer::start_with(|s| s.limits.max_header_bytes = 8192);
    let mut stream = connect(&server);
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: kvs\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    stream.write_all(request.as_bytes()).unwrap();
    let answer = read_to_close(stream);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Headers within the limit are fine.
    let big = "b".repeat(4000);
    let answer = server
        .anonymous()
        .send("GET", "/healthz", None, &[("x-big", &big)]);
    assert_eq!(answer.status, 200);
}

#[test]
fn cors_is_off_by_default() {
    let server = TestServer::start();
    let answer = server.admin().send(
        "GET",
        "/v1/whoami",
        None,
        &[("origin", "https://app.example")],
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    let preflight = server.anonymous().send(
        "OPTIONS",
        "/v1/whoami",
        None,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
        ],
    );
    assert_eq!(preflight.header("access-control-allow-origin"), None);
}

#[test]
fn cors_lets_the_configured_origins_call_the_api_and_no_others() {
    let server =
        TestServer::start_with(|s| s.cors_origins = vec!["https://app.example".to_owned()]);
    let preflight = server.anonymous().send(
        "OPTIONS",
        "/v1/projects/default/kv/a",
        None,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "authorization, if-match"),
        ],
    );
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = preflight.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("PUT"), "{methods}");
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("if-match"));
    let answer = server.admin().send(
        "PUT",
        "/v1/projects/default/kv/a",
        Some(b"v"),
        &[("origin", "https://app.example")],
    );
    assert_eq!(answer.status, 201);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let exposed = answer
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("etag") && exposed.contains("kvs-revision"));
    let foreign = server.admin().send(
        "GET",
        "/v1/whoami",
        None,
        &[("origin", "https://evil.example")],
    );
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

/// The server's `kvs_connections` gauge, as the admin reads it.
fn open_connections(admin: &common::Client) -> u64 {
    let text = admin.get("/metrics").text();
    text.lines()
        .find_map(|line| line.strip_prefix("kvs_connections "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .expect("a kvs_connections line") as u64
}

#[test]
fn a_watcher_that_stops_reading_is_disconnected_at_the_write_timeout_and_frees_its_slots() {
    let server = TestServer::start_with(|s| {
        s.limits.write_timeout = Duration::from_secs(2);
        s.limits.max_watchers_per_token = 1;
    });
    let admin = server.admin();
    let token = admin.create_project("p", json!({"storage": "memory"}));
    // One pooled connection: the admin's own, for writes and metrics.
    let before = open_connections(&admin);
    let mut watch = connect(&server);
    let request = format!(
        "GET /v1/projects/p/watch?values=true HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        address(&server)
    );
    watch.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 512];
    let read = watch.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..read])
    );
    assert_eq!(open_connections(&admin), before + 1);
    // The watcher reads nothing more while far more than the socket
    // buffers and the watch's queue hold is written.
    let value = vec![b'v'; 900_000];
    for n in 0..60 {
        let answer = admin.put(&kv("p", &format!("k{n}")), &value);
        assert!(answer.status < 300, "{}", answer.text());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open_connections(&admin) > before {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled watch still holds its connection"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its watcher slot is free too: the token may watch again.
    let request = format!(
        "GET /v1/projects/p/watch HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        address(&server)
    );
    let mut second = connect(&server);
    second.write_all(request.as_bytes()).unwrap();
    let read = second.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..read])
    );
    drop(watch);
}
