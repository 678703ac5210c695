//! A node on an etcd that has authentication on: it works with
//! `--etcd-user`/`--etcd-password`, and is refused without them or with a
//! wrong password.

use super::*;
use std::process::Command;

/// `etcdctl` against `endpoint`, which must succeed.
fn etcdctl(endpoint: &str, args: &[&str]) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .expect("etcdctl runs (apt-get install etcd-client)");
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_node_reaches_an_etcd_with_authentication_only_with_its_user_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = super::etcd::start(dir.path());
    let endpoint = etcd.endpoint.clone();
    etcdctl(&endpoint, &["user", "add", "root:root-password"]);
    etcdctl(&endpoint, &["role", "add", "root"]);
    etcdctl(&endpoint, &["user", "grant-role", "root", "root"]);
    etcdctl(&endpoint, &["user", "add", "kvs:kvs-password"]);
    etcdctl(&endpoint, &["role", "add", "kvs"]);
    etcdctl(
        &endpoint,
        &[
            "role",
            "grant-permission",
            "kvs",
            "readwrite",
            "--prefix=true",
            "kvs/",
        ],
    );
    etcdctl(&endpoint, &["user", "grant-role", "kvs", "kvs"]);
    etcdctl(&endpoint, &["auth", "enable"]);

    let settings = |user: Option<(&str, &str)>| EtcdSettings {
        user: user.map(|(name, password)| (name.to_owned(), password.to_owned())),
        ..EtcdSettings::new(vec![endpoint.clone()])
    };
    assert!(
        EtcdStore::open_blocking(settings(None)).is_err(),
        "a node without a user opened"
    );
    assert!(
        EtcdStore::open_blocking(settings(Some(("kvs", "wrong")))).is_err(),
        "a node with a wrong password opened"
    );
    // A user whose role covers only the prefix is enough.
    let store: Arc<dyn Store> =
        Arc::new(EtcdStore::open_blocking(settings(Some(("kvs", "kvs-password")))).unwrap());
    writes_and_reads_back(store, "with a password");
}
