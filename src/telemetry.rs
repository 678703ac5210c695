//! Logs and metrics, set up in one place. Request logs go through `tracing`
//! (text or JSON); they name the route, status and duration, never a token.
//! Metrics are recorded with the `metrics` crate and rendered in Prometheus
//! text format by its exporter.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::http::App;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up logging to stderr at `level` (a `tracing` filter such as `info`
/// or `kvs=debug`, checked by the settings). `RUST_LOG` is not read: the
/// flag, `KVS_LOG_LEVEL` and the file decide, in that order, and a stray
/// `RUST_LOG=error` silenced a server started with `--log-level info`.
pub fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::new(level);
    // A log that cannot be written (a full disk behind stderr) must not
    // take the server down: by default the subscriber reports such a
    // failure with `eprintln!`, which panics when stderr itself fails.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Bucket bounds of the durations, in seconds: from a cached GET (tens of
/// microseconds) to a slow fsync.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds of the requests folded into one commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Counters and histograms recorded through the `metrics` crate, with their
/// `# HELP` text. Each is registered at start, so that it is present at 0
/// before its first event (alerts and `rate()` see it from the first scrape).
const RECORDED: &[(&str, Kind, &str)] = &[
    (
        "kvs_http_requests_total",
        Kind::Counter,
        "Answered HTTP requests, by route, method and status",
    ),
    (
        "kvs_http_request_duration_seconds",
        Kind::Histogram,
        "Time to answer a request (for a watch: to open it), by route",
    ),
    (
        "kvs_auth_failures_total",
        Kind::Counter,
        "Requests answered 401 (missing, unknown, expired or revoked token)",
    ),
    (
        "kvs_rate_limited_total",
        Kind::Counter,
        "Requests refused by a limit, by limit",
    ),
    (
        "kvs_commits_total",
        Kind::Counter,
        "Group commits of the storage writer",
    ),
    (
        "kvs_commit_failures_total",
        Kind::Counter,
        "Group commits that failed (their requests were answered with an error)",
    ),
    (
        "kvs_data_corrupted_total",
        Kind::Counter,
        "Stored records or values that failed their checksum (never served)",
    ),
    (
        "kvs_commit_batch_size",
        Kind::Histogram,
        "Write requests folded into one commit",
    ),
    (
        "kvs_fsync_seconds",
        Kind::Histogram,
        "Time of each durable commit (the fsync a disk write waits for)",
    ),
    (
        "kvs_expired_keys_total",
        Kind::Counter,
        "Keys removed because their TTL ran out",
    ),
    (
        "kvs_checkpoints_total",
        Kind::Counter,
        "Durable commits of the disk database that the write-ahead log counts on: deferred \
         (the writer does not wait for the sync) or waited (the writer and the writes behind \
         it wait)",
    ),
    (
        "kvs_checkpoint_written_bytes_total",
        Kind::Counter,
        "Bytes the deferred checkpoints wrote to the disk database's file (what they write \
         sets the time to the next)",
    ),
];

/// The values of `kvs_checkpoints_total`'s `kind` label.
const CHECKPOINT_KINDS: &[&str] = &["deferred", "waited"];

/// The values of `kvs_rate_limited_total`'s `limit` label.
const RATE_LIMITS: &[&str] = &[
    "token",
    "ip",
    "auth_failures",
    "watchers",
    "connections",
    "connections_per_ip",
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Histogram,
}

/// Installs the process-wide metrics recorder (once; later calls reuse it).
pub fn init_metrics() {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("kvs_commit_batch_size".to_owned()),
                    BATCH_BUCKETS,
                )
            })
            .ok()?;
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        register_families();
        Some(handle)
    });
}

/// Describes every recorded family and registers those without labels (and
/// each `limit` of `kvs_rate_limited_total`) at 0.
fn register_families() {
    for &(name, kind, help) in RECORDED {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for name in [
        "kvs_auth_failures_total",
        "kvs_commits_total",
        "kvs_commit_failures_total",
        "kvs_expired_keys_total",
        "kvs_data_corrupted_total",
        "kvs_checkpoint_written_bytes_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for &limit in RATE_LIMITS {
        metrics::counter!("kvs_rate_limited_total", "limit" => limit).increment(0);
    }
    for &kind in CHECKPOINT_KINDS {
        metrics::counter!("kvs_checkpoints_total", "kind" => kind).increment(0);
    }
    // A histogram is shown, with empty buckets, once it has a handle.
    drop(metrics::histogram!("kvs_commit_batch_size"));
    drop(metrics::histogram!("kvs_fsync_seconds"));
}

/// Open watches, counted here and set as a gauge at each render (a gauge
/// moved only up and down could be dropped while idle).
static WATCHERS: AtomicI64 = AtomicI64::new(0);

/// The metric handles of one kind of request: its counter and the duration
/// histogram of its route.
type RequestMetrics = (Counter, Histogram);
/// A kind of request: route, method and status labels.
type RequestKind = (&'static str, &'static str, &'static str);

thread_local! {
    /// Handles by (route, method, status), kept per thread so that finding
    /// one takes no lock. With label values that are not literals, the
    /// `counter!` and `histogram!` macros allocate a `Vec` of labels, hash
    /// the key and take the registry's lock on every call; a kept handle
    /// skips all of that. There are at most a few thousand combinations,
    /// all the server's own literals: foldhash, not SipHash, hashes them.
    static REQUEST_METRICS: RefCell<HashMap<RequestKind, RequestMetrics, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

pub fn record_request(method: &Method, route: &'static str, status: StatusCode, elapsed: Duration) {
    if status == StatusCode::UNAUTHORIZED {
        metrics::counter!("kvs_auth_failures_total").increment(1);
    }
    let (method, status) = (method_label(method), status_label(status));
    let seconds = elapsed.as_secs_f64();
    let record = |(requests, duration): &RequestMetrics| {
        requests.increment(1);
        duration.record(seconds);
    };
    // Keep handles only from our own recorder: a handle taken before it is
    // installed would be a no-op for as long as the thread lives.
    if let Some(Some(_)) = METRICS.get() {
        REQUEST_METRICS.with_borrow_mut(|handles| {
            record(
                handles
                    .entry((route, method, status))
                    .or_insert_with(|| request_metrics(route, method, status)),
            )
        });
    } else {
        record(&request_metrics(route, method, status));
    }
    tracing::info!(
        target: "kvs::access",
        method,
        route,
        status,
        micros = elapsed.as_micros() as u64,
    );
}

fn request_metrics(
    route: &'static str,
    method: &'static str,
    status: &'static str,
) -> RequestMetrics {
    (
        metrics::counter!("kvs_http_requests_total", "route" => route, "method" => method, "status" => status),
        metrics::histogram!("kvs_http_request_duration_seconds", "route" => route),
    )
}

/// Static label values, so that recording a request allocates nothing.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        410 => "410",
        412 => "412",
        413 => "413",
        415 => "415",
        431 => "431",
        429 => "429",
        500 => "500",
        503 => "503",
        507 => "507",
        _ => "other",
    }
}

/// A watch stream opened.
pub fn watcher_opened() {
    WATCHERS.fetch_add(1, Ordering::Relaxed);
}

/// A watch stream ended.
pub fn watcher_closed() {
    WATCHERS.fetch_sub(1, Ordering::Relaxed);
}

/// The Prometheus text of every metric: the recorded counters and
/// histograms, then the figures of the moment as gauges, read at each
/// scrape (so a deleted project's series are gone at the next one).
pub fn render_metrics(app: &App, with_projects: bool) -> String {
    let mut out = match METRICS.get() {
        Some(Some(handle)) => handle.render(),
        _ => String::new(),
    };
    // A store that cannot vouch for its catalog shows no projects.
    let catalog = app.store.catalog().unwrap_or_default();
    // Nor does an answer to whom the projects' ids are not shown.
    let named = || catalog.projects().filter(|_| with_projects);
    let mut gauge =
        |name: &str, help: &str, samples: &mut dyn Iterator<Item = (Option<&str>, f64)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (project, value) in samples {
                match project {
                    Some(id) => out.push_str(&format!(
                        "{name}{{project=\"{}\"}} {value}\n",
                        label_value(id)
                    )),
                    None => out.push_str(&format!("{name} {value}\n")),
                }
            }
            out.push('\n');
        };
    let one = |value: f64| [(None, value)].into_iter();
    gauge(
        "kvs_revision",
        "The server's revision: the last acknowledged write",
        &mut one(app.store.revision() as f64),
    );
    gauge(
        "kvs_storage_bytes",
        "Size of the database file",
        &mut one(app.store.storage_bytes() as f64),
    );
    gauge(
        "kvs_projects",
        "Projects on the server",
        &mut one(catalog.projects().count() as f64),
    );
    gauge(
        "kvs_uptime_seconds",
        "Time since the server started",
        &mut one(app.started.elapsed().as_secs_f64()),
    );
    gauge(
        "kvs_watchers",
        "Open watch streams",
        &mut one(WATCHERS.load(Ordering::Relaxed) as f64),
    );
    gauge(
        "kvs_connections",
        "Open client connections",
        &mut one(app.limiter.open_connections() as f64),
    );
    gauge(
        "kvs_memory_bytes",
        "Resident memory of the server process",
        &mut one(resident_memory_bytes() as f64),
    );
    gauge(
        "kvs_project_keys",
        "Keys stored in a project",
        &mut named().map(|p| (Some(p.settings.id.as_str()), p.stats.keys() as f64)),
    );
    gauge(
        "kvs_project_bytes",
        "Value bytes stored in a project",
        &mut named().map(|p| (Some(p.settings.id.as_str()), p.stats.bytes() as f64)),
    );
    out
}

/// A label value as the text format writes it (project ids have no quote,
/// backslash or newline, but nothing here relies on that).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The process's resident memory, from `/proc/self/statm` (0 elsewhere).
pub fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
