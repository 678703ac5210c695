//! A node that reaches etcd over TLS, with a client certificate: etcd
//! started with its own certificates (made here by rcgen) and
//! `--client-cert-auth`.

use super::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvs::store::etcd_engine::EtcdTls;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM files in `dir`: a CA, etcd's server certificate for 127.0.0.1, and
/// a client certificate; returned as (ca, server cert, server key, client
/// cert, client key).
fn certificates(dir: &Path) -> [PathBuf; 5] {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut files = Vec::new();
    let mut write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        files.push(path);
    };
    write("ca.pem", ca.pem());
    for (name, names) in [
        ("server", vec!["127.0.0.1", "localhost"]),
        ("client", vec!["kvs"]),
    ] {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        write(&format!("{name}.pem"), cert.pem());
        write(&format!("{name}.key"), key.serialize_pem());
    }
    files.try_into().unwrap()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_node_reaches_etcd_over_tls_with_a_client_certificate_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(dir.path());
    let port = |()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let endpoint = format!("https://127.0.0.1:{}", port(()));
    let peer = format!("http://127.0.0.1:{}", port(()));
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let initial = format!("tls={peer}");
    let _etcd = Killed(
        super::etcd::command("tls", &dir.path().join("etcd"), &endpoint, &peer, &initial)
            .arg(format!("--cert-file={}", server_cert.display()))
            .arg(format!("--key-file={}", server_key.display()))
            .arg(format!("--trusted-ca-file={}", ca.display()))
            .arg("--client-cert-auth")
            .stderr(log)
            .spawn()
            .expect("etcd runs (apt-get install etcd-server)"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoint, "endpoint", "health"])
        .arg(format!("--cacert={}", ca.display()))
        .arg(format!("--cert={}", client_cert.display()))
        .arg(format!("--key={}", client_key.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "etcd over TLS did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let settings = |client| EtcdSettings {
        tls: Some(EtcdTls {
            ca_cert: ca.clone(),
            client,
        }),
        ..EtcdSettings::new(vec![endpoint.clone()])
    };
    // Without a client certificate, etcd refuses the node.
    let refused = EtcdStore::open_blocking(settings(None));
    assert!(
        refused.is_err(),
        "a node without a client certificate opened"
    );
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::open_blocking(settings(Some((client_cert.clone(), client_key.clone()))))
            .unwrap(),
    );
    writes_and_reads_back(store, "over tls");
}
