//! `/metrics` from outside: the real binary's Prometheus text parses with a
//! Prometheus text-format parser, and its figures move as requests are made:
//! requests by route and status, latency histograms, commits, fsync
//! latency, group-commit batch sizes, keys and bytes per project, watchers,
//! expirations and authentication failures. Also who may read it.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{ServerProcess, fake_secret, kv};
use prometheus_parse::{Scrape, Value};
use serde_json::json;

/// The server's metrics, parsed.
fn scrape(server: &ServerProcess) -> Scrape {
    let answer = server.admin().get("/metrics");
    assert_eq!(answer.status, 200);
    let content_type = answer.header("content-type").unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let lines = answer
        .text()
        .lines()
        .map(|l| Ok(l.to_owned()))
        .collect::<Vec<_>>();
    Scrape::parse(lines.into_iter()).expect("Prometheus text format")
}

/// The value of the sample `name` whose labels include `labels` (0 when
/// there is none): a counter's or gauge's value, a histogram's count.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("{name} is a summary, not a histogram"),
        })
        .sum()
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_with_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("p", json!({}));
    let before = scrape(&server);

    for n in 0..10 {
        assert_eq!(
            admin.put(&kv("p", &format!("k{n}")), b"0123456789").status,
            201
        );
    }
    for n in 0..7 {
        assert_eq!(admin.get(&kv("p", &format!("k{n}"))).status, 200);
    }
    assert_eq!(admin.get(&kv("p", "missing")).status, 404);
    let stranger = server.admin().with_token(&fake_secret());
    for _ in 0..3 {
        assert_eq!(stranger.get(&kv("p", "k0")).status, 401);
    }
    let ttl = admin.send(
        "PUT",
        &format!("{}?ttl=1", kv("p", "brief")),
        Some(b"x"),
        &[],
    );
    assert_eq!(ttl.status, 201);
    // An open watch, held while the figures are read.
    let mut watch = TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    let request = format!(
        "GET /v1/projects/p/watch HTTP/1.1\r\nHost: kvs\r\nAuthorization: Bearer {}\r\n\r\n",
        server.admin_token
    );
    watch.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 256];
    assert!(watch.read(&mut head).unwrap() > 0);
    // The brief key is swept once its second is over (the sweep runs every
    // 250 ms; a read treats it as gone even before).
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = scrape(&server);
        if value(&after, "kvs_expired_keys_total", &[]) > 0.0 {
            break after;
        }
        assert!(Instant::now() < deadline, "the key was not swept");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(admin.get(&kv("p", "brief")).status, 404);

    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let kv_200 = [("route", "kv"), ("method", "GET"), ("status", "200")];
    assert!(moved("kvs_http_requests_total", &kv_200) >= 7.0);
    let kv_201 = [("route", "kv"), ("method", "PUT"), ("status", "201")];
    assert_eq!(moved("kvs_http_requests_total", &kv_201), 11.0);
    assert_eq!(
        moved(
            "kvs_http_requests_total",
            &[("route", "kv"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(moved("kvs_auth_failures_total", &[]), 3.0);
    // Latency is a histogram (buckets), by route.
    let latency = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "kvs_http_request_duration_seconds" && s.labels.get("route") == Some("kv")
        })
        .expect("a latency histogram for the kv route");
    assert!(matches!(&latency.value, Value::Histogram(b) if b.len() > 5));
    assert!(moved("kvs_http_request_duration_seconds", &[("route", "kv")]) >= 18.0);
    // Each durable write was committed and fsync'd, in batches.
    assert!(moved("kvs_commits_total", &[]) >= 11.0);
    assert!(moved("kvs_fsync_seconds", &[]) >= 11.0);
    assert!(moved("kvs_commit_batch_size", &[]) >= 11.0);
    assert_eq!(moved("kvs_expired_keys_total", &[]), 1.0);
    // The expiry sweep is a waited checkpoint of the disk database.
    assert!(moved("kvs_checkpoints_total", &[("kind", "waited")]) >= 1.0);
    assert_eq!(value(&after, "kvs_project_keys", &[("project", "p")]), 10.0);
    assert_eq!(
        value(&after, "kvs_project_bytes", &[("project", "p")]),
        100.0
    );
    assert_eq!(value(&after, "kvs_watchers", &[]), 1.0);
    assert!(value(&after, "kvs_connections", &[]) >= 2.0);
    assert!(value(&after, "kvs_revision", &[]) >= 12.0);
    drop(watch);
}

#[test]
fn metrics_are_for_admins_unless_made_public() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    let project_token = admin.create_project("p", json!({}));
    let anonymous = common::Client::new(&server.url, None);
    assert_eq!(anonymous.get("/metrics").status, 401);
    let manage = anonymous.with_token(&project_token);
    assert_eq!(manage.get("/metrics").status, 403);
    assert_eq!(admin.get("/metrics").status, 200);
}

/// The metric families the metrics table of docs/API.md documents.
fn documented_families() -> Vec<String> {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap();
    let table = docs
        .split("### Metrics")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a Metrics section with a table");
    let mut families: Vec<String> = table
        .lines()
        .filter(|line| line.starts_with("| `kvs_"))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| cell.split('`'))
        .filter(|word| word.starts_with("kvs_"))
        .map(|word| word.split('{').next().unwrap_or(word).to_owned())
        .collect();
    families.sort();
    families.dedup();
    families
}

/// `# HELP` and `# TYPE` lines of a scrape, by family.
fn described(text: &str, kind: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix(&format!("# {kind} ")))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_family_has_help_documented_counters_are_0_from_start_and_a_deleted_projects_series_go_at_once()
 {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    // The first scrape, before anything happened: the counters of rare
    // events are there, at 0.
    let first = scrape(&server);
    let labelled = |name: &str, label: &str, value: &str| {
        first
            .samples
            .iter()
            .any(|s| s.metric == name && s.labels.get(label) == Some(value))
    };
    for name in [
        "kvs_auth_failures_total",
        "kvs_commit_failures_total",
        "kvs_expired_keys_total",
        "kvs_checkpoint_written_bytes_total",
    ] {
        assert!(
            first.samples.iter().any(|s| s.metric == name),
            "{name} is missing before its first event"
        );
        assert_eq!(value(&first, name, &[]), 0.0, "{name}");
    }
    for limit in [
        "token",
        "ip",
        "auth_failures",
        "watchers",
        "connections",
        "connections_per_ip",
    ] {
        let labels = [("limit", limit)];
        assert!(
            labelled("kvs_rate_limited_total", "limit", limit),
            "kvs_rate_limited_total{{limit={limit:?}}} is missing before its first event"
        );
        assert_eq!(value(&first, "kvs_rate_limited_total", &labels), 0.0);
    }
    for kind in ["deferred", "waited"] {
        assert!(
            labelled("kvs_checkpoints_total", "kind", kind),
            "kvs_checkpoints_total{{kind={kind:?}}} is missing"
        );
    }

    admin.create_project("gone", json!({}));
    assert_eq!(admin.put(&kv("gone", "k"), b"12345").status, 201);
    let text = admin.get("/metrics").text();
    // Every family has its help and type, and every documented one is
    // there (after a request, for the per-route families).
    let helped = described(&text, "HELP");
    let typed = described(&text, "TYPE");
    assert_eq!(helped, typed, "families with help vs with a type");
    for family in documented_families() {
        assert!(helped.contains(&family), "{family} has no # HELP:\n{text}");
    }
    for sample in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = sample.split(['{', ' ']).next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| helped.iter().any(|h| h == base))
            })
            .unwrap_or(name);
        assert!(helped.iter().any(|h| h == family), "{family} has no # HELP");
    }
    let during = scrape(&server);
    assert_eq!(
        value(&during, "kvs_project_keys", &[("project", "gone")]),
        1.0
    );

    assert_eq!(admin.delete("/v1/projects/gone").status, 204);
    let text = admin.get("/metrics").text();
    assert!(
        !text.contains("project=\"gone\""),
        "the deleted project's series are still there:\n{text}"
    );
}

/// Under a steady run of writes the log makes deferred checkpoints, and
/// `kvs_checkpoint_written_bytes_total` counts what each wrote to the
/// database's file: the figure the log paces them by, so this also shows
/// that figure reaches the log (a checkpoint writes at least one page).
#[test]
fn deferred_checkpoints_count_the_bytes_they_wrote() {
    const PAGE: f64 = 4096.0;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &fake_secret());
    let admin = server.admin();
    admin.create_project("p", json!({}));
    let deferred = [("kind", "deferred")];
    let value_bytes = vec![b'v'; 2000];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut writes = 0;
    // Writes one after another (each its own batch, with its own sync),
    // 300 ms at a time, until a deferred checkpoint has come (each is due
    // 100 ms after the one before, at the first write after that).
    loop {
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            let key = kv("p", &format!("k{}", writes % 200));
            assert_eq!(admin.put(&key, &value_bytes).status / 100, 2);
            writes += 1;
        }
        if value(&scrape(&server), "kvs_checkpoints_total", &deferred) >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no deferred checkpoint after {writes} writes"
        );
    }
    // With the writes stopped, no checkpoint is counted but not yet added.
    std::thread::sleep(Duration::from_millis(200));
    let after = scrape(&server);
    let checkpoints = value(&after, "kvs_checkpoints_total", &deferred);
    let written = value(&after, "kvs_checkpoint_written_bytes_total", &[]);
    assert!(
        written >= checkpoints * PAGE,
        "{checkpoints} deferred checkpoints wrote {written} bytes"
    );
}

/// Public metrics do not name the projects of a server that does not list
/// them (`projects_discoverable = false`): an anonymous scrape has the
/// figures but no per-project series; an admin's has them; a wrong
/// credential has none (401).
#[test]
fn public_metrics_name_no_project_that_the_server_does_not_list() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--metrics-public",
        "true",
        "--projects-discoverable",
        "false",
    ]
    .map(String::from);
    let server = ServerProcess::start_with(&dir.path().join("data"), &fake_secret(), true, &args);
    let admin = server.admin();
    admin.create_project("hidden-one", json!({}));
    let anonymous = common::Client::new(&server.url, None).get("/metrics");
    assert_eq!(anonymous.status, 200);
    let text = anonymous.text();
    assert!(!text.contains("hidden-one"), "{text}");
    assert!(text.contains("kvs_projects "), "{text}");
    // A wrong credential is judged, not taken for none: 401.
    let wrong = common::Client::new(&server.url, Some(&fake_secret())).get("/metrics");
    assert_eq!(wrong.status, 401);
    assert!(!wrong.text().contains("hidden-one"));
    let full = admin.get("/metrics").text();
    assert!(
        full.contains("kvs_project_keys{project=\"hidden-one\"}"),
        "{full}"
    );

    // A server that lists its projects shows them in public metrics too.
    let dir = tempfile::tempdir().unwrap();
    let args = ["--metrics-public", "true"].map(String::from);
    let server = ServerProcess::start_with(&dir.path().join("data"), &fake_secret(), true, &args);
    server.admin().create_project("listed-one", json!({}));
    let text = common::Client::new(&server.url, None)
        .get("/metrics")
        .text();
    assert!(
        text.contains("kvs_project_keys{project=\"listed-one\"}"),
        "{text}"
    );
}
