//! A throwaway one-member etcd for the engine suite: started on free
//! loopback ports with its data in the test's directory, stopped when
//! dropped. Started again on the same directory, it comes back on the same
//! ports with the same data (a store reopened finds what it wrote).

use std::path::Path;

use crate::port::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd member.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `etcd` as member `name` of the cluster `initial` (`name=peer,…`), with
/// its data in `data` and its log on stderr, set up as the tests want it.
/// On a data directory that already holds a member, etcd ignores the
/// `--initial-*` flags and rejoins as that member.
pub fn command(name: &str, data: &Path, client: &str, peer: &str, initial: &str) -> Command {
    let mut command = Command::new("etcd");
    command
        .arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster={initial}"))
        .arg("--initial-cluster-state=new")
        // A transaction of 128 ops with their expiry index entries, and a
        // delete by prefix over many keys, take more than the default 128.
        .arg("--max-txn-ops=100000")
        .arg("--logger=zap")
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// Starts etcd on `dir` (its data in `dir/etcd`) and waits until it serves.
pub fn start(dir: &Path) -> Etcd {
    let ports = dir.join("etcd.ports");
    let (client, peer) = match std::fs::read_to_string(&ports) {
        Ok(text) => {
            let (a, b) = text.trim().split_once(' ').unwrap();
            (a.parse::<u16>().unwrap(), b.parse::<u16>().unwrap())
        }
        Err(_) => {
            let pair = (free_port(), free_port());
            std::fs::write(&ports, format!("{} {}", pair.0, pair.1)).unwrap();
            pair
        }
    };
    let client = format!("http://127.0.0.1:{client}");
    let peer = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = command(
        "kvs-test",
        &dir.join("etcd"),
        &client,
        &peer,
        &format!("kvs-test={peer}"),
    )
    .stderr(log)
    .spawn()
    .expect("etcd runs (apt-get install etcd-server)");
    let etcd = Etcd {
        child,
        endpoint: client,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &etcd.endpoint, "endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if health.is_ok_and(|s| s.success()) {
            return etcd;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not become healthy in 30 s (see {}/etcd.log)",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
