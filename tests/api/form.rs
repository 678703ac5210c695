//! The original kvs's form interface on the default project: `POST /` with
//! form-encoded pairs (all or none), `GET /?key=` and `GET /?keys=`, and the
//! index page, which shows nothing about keys.

use serde_json::json;

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::common::{Answer, TestServer, kv};
use crate::support::{Api, Setup, expect_error, expect_status, mint};

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A write token of the default project, as a client without a token (the
/// form carries it as `auth`), and the secret.
fn writer(setup: &Setup) -> (Api, String) {
    let (_, minted) = mint(&setup.admin, "default", json!({"role": "write"}));
    let secret = minted["secret"].as_str().unwrap().to_owned();
    (Api::new(&setup.server.url, None), secret)
}

fn post(client: &Api, body: &str, extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![FORM];
    headers.extend_from_slice(extra);
    client.send("POST", "/", Some(body.as_bytes()), &headers)
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[test]
fn posted_pairs_are_stored_in_one_write_and_read_back_as_text() {
    let setup = Setup::new("p", json!({}));
    let (anon, secret) = writer(&setup);
    let body = format!("a=1&b=two+words&c={}&auth={secret}", encode("ünï & = +"));
    let answer = post(&anon, &body, &[]);
    expect_status(&answer, 200);
    assert_eq!(answer.text().trim_end(), "OK");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    let versions: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|k| setup.admin.get(&kv("default", k)).json_or_meta_version())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");
    let read = anon.get(&format!("/?key=c&auth={secret}"));
    expect_status(&read, 200);
    assert_eq!(read.body, "ünï & = +".as_bytes());
    // As every answer about a key: a browser does not sniff it into HTML.
    assert_eq!(read.header("x-content-type-options"), Some("nosniff"));
    let missing = anon.get(&format!("/?key=nothing&auth={secret}"));
    assert_eq!(missing.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        read.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(read.header("cache-control"), Some("no-store"));
    assert_eq!(
        setup.admin.get(&kv("default", "auth")).status,
        404,
        "the auth field became a key"
    );
}

#[test]
fn a_post_with_one_invalid_pair_stores_nothing() {
    let setup = Setup::new("p", json!({}));
    let (anon, secret) = writer(&setup);
    let long = "k".repeat(2000);
    for bad in [long.as_str(), "bad\u{1}key", "a/../b"] {
        let body = format!("good=1&{}=v&other=2&auth={secret}", encode(bad));
        expect_error(&post(&anon, &body, &[]), 400, "invalid_key");
        for key in ["good", "other"] {
            expect_error(&setup.admin.get(&kv("default", key)), 404, "key_not_found");
        }
    }
    // A value over the project's limit fails the whole post too.
    let patched = setup
        .admin
        .patch_json("/v1/projects/default", &json!({"max_value_bytes": 4}));
    expect_status(&patched, 200);
    let body = format!("good=1&big=12345&auth={secret}");
    expect_error(&post(&anon, &body, &[]), 413, "payload_too_large");
    expect_error(
        &setup.admin.get(&kv("default", "good")),
        404,
        "key_not_found",
    );
    expect_error(
        &post(&anon, &format!("x=1&y=2&x=3&auth={secret}"), &[]),
        400,
        "bad_request",
    );
    expect_error(&setup.admin.get(&kv("default", "y")), 404, "key_not_found");
}

#[test]
fn reads_answer_the_most_recently_written_of_several_keys() {
    let setup = Setup::new("p", json!({}));
    let (anon, secret) = writer(&setup);
    expect_status(&post(&anon, &format!("a=first&auth={secret}"), &[]), 200);
    expect_status(&post(&anon, &format!("b=second&auth={secret}"), &[]), 200);
    let reader = anon.with_token(&secret);
    assert_eq!(reader.get("/?keys=a,b").body, b"second");
    assert_eq!(reader.get("/?key=b&key=a").body, b"second");
    expect_status(&post(&anon, &format!("a=third&auth={secret}"), &[]), 200);
    assert_eq!(reader.get("/?keys=a,b").body, b"third");
    expect_error(&reader.get("/?key=nothing"), 404, "key_not_found");
}

#[test]
fn tokens_are_checked_and_cross_site_posts_refused() {
    let setup = Setup::new("p", json!({}));
    let (anon, secret) = writer(&setup);
    expect_error(&anon.get("/?key=a"), 401, "unauthorized");
    expect_error(&post(&anon, "a=1", &[]), 401, "unauthorized");
    expect_error(&post(&anon, "a=1&auth=kvs_wrong", &[]), 401, "unauthorized");
    // A read token may read but not post; another project's token reaches
    // nothing of the default project.
    let (reader, _) = mint(&setup.admin, "default", json!({"role": "read"}));
    let reader_secret = reader.secret();
    expect_error(
        &post(&anon, &format!("a=1&auth={reader_secret}"), &[]),
        403,
        "forbidden",
    );
    expect_error(
        &post(&anon, &format!("a=1&auth={}", setup.manage.secret()), &[]),
        404,
        "project_not_found",
    );
    // A header token and a different auth field: refused like a wrong one.
    let both = anon.with_token(&reader_secret);
    expect_error(
        &post(&both, &format!("a=1&auth={secret}"), &[]),
        401,
        "unauthorized",
    );
    let body = format!("a=forged&auth={secret}");
    for header in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ] {
        expect_error(&post(&anon, &body, &[header]), 403, "forbidden");
    }
    expect_error(&setup.admin.get(&kv("default", "a")), 404, "key_not_found");
    let own = setup.server.url.clone();
    expect_status(&post(&anon, &body, &[("origin", own.as_str())]), 200);
    expect_error(
        &anon.send("POST", "/", Some(b"a=1"), &[("content-type", "text/plain")]),
        415,
        "unsupported_media_type",
    );
}

#[test]
fn the_index_page_is_a_sign_in_form_that_shows_no_key() {
    let setup = Setup::new("p", json!({}));
    let (anon, secret) = writer(&setup);
    expect_status(
        &post(
            &anon,
            &format!("secret-key=secret-value&auth={secret}"),
            &[],
        ),
        200,
    );
    let page = anon.get("/");
    expect_status(&page, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.header("content-security-policy").is_some());
    let text = page.text();
    assert!(text.contains("<form"), "{text}");
    for hidden in ["secret-key", "secret-value", "\"p\""] {
        assert!(!text.contains(hidden), "the index page shows {hidden}");
    }
}

/// The version of a key read through v1.
trait Version {
    fn json_or_meta_version(&self) -> String;
}

impl Version for Answer {
    fn json_or_meta_version(&self) -> String {
        expect_status(self, 200);
        self.header("kvs-version").unwrap().to_owned()
    }
}

#[test]
fn form_pairs_and_queries_that_do_not_decode_to_utf8_are_refused() {
    let setup = Setup::new("p", json!({}));
    let (anon, secret) = writer(&setup);
    for body in [
        format!("%FF%FE=v1&auth={secret}"),
        format!("good=1&k%80x=v2&auth={secret}"),
        format!("good=%C3&auth={secret}"),
    ] {
        expect_error(&post(&anon, &body, &[]), 400, "bad_request");
    }
    let stored = setup.admin.get("/v1/projects/default/kv?prefix=");
    expect_status(&stored, 200);
    assert_eq!(
        stored.json()["keys"],
        json!([]),
        "a refused post stored keys"
    );
    expect_error(
        &anon.get(&format!("/?key=%FF&auth={secret}")),
        400,
        "bad_request",
    );
    // A secret whose encoding is broken is not repeated in the answer,
    // nor is any other value.
    for refused in [
        post(&anon, &format!("a=1&auth={secret}%FF"), &[]),
        anon.get(&format!("/?k=a&auth={secret}%FF")),
        post(&anon, &format!("a=private%FF&auth={secret}"), &[]),
    ] {
        expect_error(&refused, 400, "bad_request");
        let text = refused.text();
        assert!(!text.contains(&secret[4..]), "the secret came back: {text}");
        assert!(!text.contains("private"), "a value came back: {text}");
    }
    // A valid encoding of the same shape still reads.
    let ok = post(&anon, &format!("%C3%BC=v&auth={secret}"), &[]);
    expect_status(&ok, 200);
    expect_status(&anon.get(&format!("/?key=%C3%BC&auth={secret}")), 200);
}

/// The status of a form `POST /` sent as written, with this `Host` and
/// these extra header lines: a DNS-rebinding page names its own host.
fn raw_post(server: &TestServer, host: &str, extra: &str, body: &str) -> u16 {
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn cross_site_posts_are_decided_by_sec_fetch_site_and_the_servers_own_origins() {
    let setup = Setup::new("p", json!({}));
    let (anon, secret) = writer(&setup);
    let body = format!("a=1&auth={secret}");
    let port = setup.server.url.rsplit(':').next().unwrap().to_owned();
    let own = setup.server.url.clone();
    let localhost = format!("http://localhost:{port}");
    for (headers, status) in [
        (vec![("sec-fetch-site", "cross-site")], 403),
        (vec![("sec-fetch-site", "same-site")], 403),
        (
            vec![("sec-fetch-site", "same-site"), ("origin", own.as_str())],
            403,
        ),
        (
            vec![("sec-fetch-site", "same-origin"), ("origin", own.as_str())],
            200,
        ),
        (
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", localhost.as_str()),
            ],
            200,
        ),
        (vec![("sec-fetch-site", "none")], 200),
        (vec![("origin", "http://evil.example")], 403),
        (vec![("origin", "null")], 403),
        // No browser: curl and scripts send neither header.
        (vec![], 200),
    ] {
        let answer = post(&anon, &body, &headers);
        assert_eq!(answer.status, status, "{headers:?}: {}", answer.text());
    }
    // A DNS-rebinding page is same-origin with itself, and the browser
    // sends its own host as Host: the origin must be the server's.
    let rebound = format!("evil.example:{port}");
    let extra = format!("Sec-Fetch-Site: same-origin\r\nOrigin: http://{rebound}\r\n");
    assert_eq!(raw_post(&setup.server, &rebound, &extra, &body), 403);
    let extra = format!("Origin: http://{rebound}\r\n");
    assert_eq!(raw_post(&setup.server, &rebound, &extra, &body), 403);
}

#[test]
fn origins_named_in_the_settings_may_post_forms() {
    let server = TestServer::start_with(|settings| {
        settings.origins = vec!["https://kvs.example".to_owned()];
    });
    let admin = Api::new(&server.url, Some(&server.admin_token));
    let (_, minted) = mint(&admin, "default", json!({"role": "write"}));
    let secret = minted["secret"].as_str().unwrap().to_owned();
    let anon = Api::new(&server.url, None);
    let body = format!("a=1&auth={secret}");
    let named = [
        ("sec-fetch-site", "same-origin"),
        ("origin", "https://KVS.example:443"),
    ];
    expect_status(&post(&anon, &body, &named), 200);
    let other = [
        ("sec-fetch-site", "same-origin"),
        ("origin", "https://kvs.example:8443"),
    ];
    expect_error(&post(&anon, &body, &other), 403, "forbidden");
    // The loopback origins of the listen address stay the server's own.
    let own = server.url.clone();
    expect_status(&post(&anon, &body, &[("origin", own.as_str())]), 200);
}
