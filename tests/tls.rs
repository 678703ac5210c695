//! HTTPS from outside: the real binary serves a test certificate given with
//! `--tls-cert`/`--tls-key`, a client that trusts only that certificate
//! talks to it, and after the files are replaced (by rename, as certbot and
//! friends do) new connections get the new certificate, without a restart.

mod common;

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
    let port = common::free_port();
    let token = common::fake_secret();
    let _server = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kvs"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.path().join("key.pem"))
            .env("KVS_ADMIN_TOKEN", &token)
            .env("KVS_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
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
