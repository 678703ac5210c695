//! HTTPS from outside: the real binary serves a test certificate given with
//! `--tls-cert`/`--tls-key`, a client that trusts only that certificate
//! talks to it, and after the files are replaced (by rename, as certbot and
//! friends do) new connections get the new certificate, without a restart.
//! The `kvs` client against such a server: which certificates `--ca-cert`
//! makes it trust, and how it says that it refused one.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

/// A self-signed certificate for `localhost`, as PEM files in `dir`,
/// replaced atomically; returns the certificate.
fn write_certificate(dir: &Path) -> CertificateDer<'static> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    for (name, pem) in [
        ("cert.pem", generated.cert.pem()),
        ("key.pem", generated.signing_key.serialize_pem()),
    ] {
        let staged = dir.join(format!("{name}.new"));
        std::fs::write(&staged, pem).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
    generated.cert.der().clone()
}

/// `kvs serve` over HTTPS with `cert.pem` and `key.pem` in `dir`, on a
/// port of its own: the server, its port and its admin token, once it
/// listens (a client's handshake then waits in its queue until it serves;
/// `kvs` gives a connection 10 s).
fn serve_https(dir: &Path) -> (common::KillOnDrop, u16, String) {
    let port = common::free_port();
    let token = common::fake_secret();
    let server = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--tls-cert")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("key.pem"))
            .env("KVS_ADMIN_TOKEN", &token)
            .env("KVS_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port, token)
}

/// One HTTPS request from a client that trusts only `trusted`: the status
/// line and the certificate the server showed.
fn https_get(
    port: u16,
    trusted: &[CertificateDer<'static>],
    path: &str,
    token: &str,
) -> std::io::Result<(String, CertificateDer<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in trusted {
        roots.add(certificate.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // The server may close without a TLS close_notify.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(error) => return Err(error),
    }
    let shown = tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let answer = String::from_utf8_lossy(&answer);
    Ok((answer.lines().next().unwrap_or("").to_owned(), shown))
}

#[test]
fn the_server_speaks_https_with_its_certificate_and_takes_a_replaced_one_without_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_certificate(dir.path());
    let (_server, port, token) = serve_https(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match https_get(port, std::slice::from_ref(&first), "/readyz", &token) {
            Ok((status, _)) if status.starts_with("HTTP/1.1 200") => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("the server did not answer over HTTPS: {other:?}"),
        }
    }
    let (status, shown) =
        https_get(port, std::slice::from_ref(&first), "/v1/whoami", &token).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(shown, first);
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = common::Client::new(&format!("http://127.0.0.1:{port}"), Some(&token));
    let answered = plain
        .request("GET", "/healthz", None, &[])
        .is_ok_and(|a| a.status == 200);
    assert!(!answered);

    let second = write_certificate(dir.path());
    assert_ne!(first, second);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, shown) =
            https_get(port, &[first.clone(), second.clone()], "/v1/whoami", &token).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        if shown == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replaced certificate was not taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client that trusts only the new certificate gets through; one that
    // trusts only the old one no longer does.
    let (status, _) = https_get(port, std::slice::from_ref(&second), "/v1/whoami", &token).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(https_get(port, &[first], "/v1/whoami", &token).is_err());
}

#[test]
fn a_certificate_without_its_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write_certificate(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

// ======================================================= the client's --ca-cert

/// A certificate and its private key, as PEM.
struct Pem {
    cert: String,
    key: String,
}

impl Pem {
    /// `kvs serve` over HTTPS with this certificate, in `dir`.
    fn serve_in(&self, dir: &Path) -> (common::KillOnDrop, u16, String) {
        std::fs::write(dir.join("cert.pem"), &self.cert).unwrap();
        std::fs::write(dir.join("key.pem"), &self.key).unwrap();
        serve_https(dir)
    }
}

/// A self-signed certificate for `names` with basicConstraints CA:TRUE, as
/// `openssl req -x509` makes one (OpenSSL 3 adds it by default); expired
/// since 2001 if `expired`.
fn self_signed_ca(names: &[&str], expired: bool) -> Pem {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A private CA's certificate, and a server certificate for `localhost`
/// and 127.0.0.1 that it issued (not a CA).
fn private_ca_and_server() -> (Pem, Pem) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kvs test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = Pem {
        cert: ca_params.self_signed(&ca_key).unwrap().pem(),
        key: ca_key.serialize_pem(),
    };
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kvs test server");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let server = Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    (ca_pem, server)
}

/// `kvs project list` at `url`, trusting the certificates in `ca` (none:
/// the public CAs).
fn project_list(url: &str, ca: Option<&Path>, token: &str) -> common::Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command
        .args(["project", "list", "--url", url])
        .env("KVS_TOKEN", token)
        .env_remove("KVS_URL")
        .env_remove("KVS_CA_CERT");
    if let Some(ca) = ca {
        command.arg("--ca-cert").arg(ca);
    }
    common::run(command, b"")
}

/// Asserts that `run` was refused for the server's certificate, in its own
/// words: not as a server that cannot be reached.
fn assert_certificate_refused(run: &common::Run, why: &str) {
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("kvs: the server's certificate was refused")
            && run.stderr.contains(why)
            && run.stderr.contains("--ca-cert")
            && !run.stderr.contains("kvs serve"),
        "{}",
        run.stderr
    );
}

/// The usual self-signed certificate (CA:TRUE, as `openssl req -x509`
/// makes it) given with `--ca-cert` is trusted when it is the server's own,
/// as curl trusts it, by address and by name.
#[test]
fn the_servers_own_self_signed_ca_certificate_given_with_ca_cert_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let pem = self_signed_ca(&["localhost", "127.0.0.1"], false);
    let (_server, port, token) = pem.serve_in(dir.path());
    let trusted = dir.path().join("trusted.pem");
    std::fs::write(&trusted, &pem.cert).unwrap();
    for url in [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
    ] {
        let listed = project_list(&url, Some(&trusted), &token).ok();
        assert!(listed.contains("default"), "{url}: {listed}");
    }
}

/// A certificate other than the one given, or any with no `--ca-cert`, is
/// refused, and the message says so and names `--ca-cert`.
#[test]
fn a_server_certificate_that_is_not_trusted_is_refused_in_its_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let pem = self_signed_ca(&["localhost", "127.0.0.1"], false);
    let (_server, port, token) = pem.serve_in(dir.path());
    let url = format!("https://127.0.0.1:{port}");
    let other = dir.path().join("other.pem");
    std::fs::write(
        &other,
        self_signed_ca(&["localhost", "127.0.0.1"], false).cert,
    )
    .unwrap();
    let refused = project_list(&url, Some(&other), &token);
    assert_certificate_refused(&refused, "nor issued by one");
    assert!(refused.stderr.contains("other.pem"), "{}", refused.stderr);
    let refused = project_list(&url, None, &token);
    assert_certificate_refused(&refused, "nor issued by one");
    assert!(refused.stderr.contains("public CAs"), "{}", refused.stderr);
}

/// The certificate given is still checked for the server's name and for
/// its dates.
#[test]
fn the_given_certificate_must_still_name_the_server_and_be_in_date() {
    let dir = tempfile::tempdir().unwrap();
    let only_localhost = self_signed_ca(&["localhost"], false);
    let (_server, port, token) = only_localhost.serve_in(dir.path());
    let trusted = dir.path().join("trusted.pem");
    std::fs::write(&trusted, &only_localhost.cert).unwrap();
    let by_address = format!("https://127.0.0.1:{port}");
    assert_certificate_refused(
        &project_list(&by_address, Some(&trusted), &token),
        "not valid for name",
    );
    let by_name = format!("https://localhost:{port}");
    project_list(&by_name, Some(&trusted), &token).ok();

    let dir = tempfile::tempdir().unwrap();
    let expired = self_signed_ca(&["localhost", "127.0.0.1"], true);
    let (_server, port, token) = expired.serve_in(dir.path());
    let trusted = dir.path().join("trusted.pem");
    std::fs::write(&trusted, &expired.cert).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    assert_certificate_refused(&project_list(&url, Some(&trusted), &token), "expired");
}

/// A server certificate issued by a private CA is trusted with that CA's
/// certificate given, as before.
#[test]
fn a_certificate_issued_by_a_private_ca_is_trusted_with_that_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, server) = private_ca_and_server();
    let (_server, port, token) = server.serve_in(dir.path());
    let trusted = dir.path().join("ca.pem");
    std::fs::write(&trusted, &ca.cert).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let listed = project_list(&url, Some(&trusted), &token).ok();
    assert!(listed.contains("default"), "{listed}");
}
