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
use metrics_util::MetricKindMask;

use crate::http::App;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up logging to stderr at `level` (a `tracing` filter such as `info`
/// or `kvs=debug`); `RUST_LOG` wins when set.
pub fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // A log that cannot be written (a full disk behind stderr) must not
    // take the server down: by default the subscriber reports such a
    // failure with `eprintln!`, which panics when stderr itself fails.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
/// A gauge that nobody sets for this long is dropped: the figures of a
/// deleted project go away with it. Every gauge is set at each render.
const GAUGE_IDLE: Duration = Duration::from_secs(300);

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
            .ok()?
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE));
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        // Shown from the start, so that an alert on any rise needs no
        // earlier sample.
        metrics::counter!("kvs_data_corrupted_total").absolute(0);
        Some(handle)
    });
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
    /// skips all of that. There are at most a few thousand combinations.
    static REQUEST_METRICS: RefCell<HashMap<RequestKind, RequestMetrics>> =
        RefCell::new(HashMap::new());
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

/// The Prometheus text of every metric, with the store's figures as gauges.
pub fn render_metrics(app: &App) -> String {
    // A store that cannot vouch for its catalog shows no projects.
    let catalog = app.store.catalog().unwrap_or_default();
    metrics::gauge!("kvs_revision").set(app.store.revision() as f64);
    metrics::gauge!("kvs_storage_bytes").set(app.store.storage_bytes() as f64);
    metrics::gauge!("kvs_projects").set(catalog.projects().count() as f64);
    metrics::gauge!("kvs_uptime_seconds").set(app.started.elapsed().as_secs_f64());
    metrics::gauge!("kvs_watchers").set(WATCHERS.load(Ordering::Relaxed) as f64);
    metrics::gauge!("kvs_connections").set(app.limiter.open_connections() as f64);
    metrics::gauge!("kvs_memory_bytes").set(resident_memory_bytes() as f64);
    for project in catalog.projects() {
        let id = project.settings.id.as_str().to_owned();
        metrics::gauge!("kvs_project_keys", "project" => id.clone())
            .set(project.stats.keys() as f64);
        metrics::gauge!("kvs_project_bytes", "project" => id).set(project.stats.bytes() as f64);
    }
    match METRICS.get() {
        Some(Some(handle)) => handle.render(),
        _ => String::from("# metrics recorder not installed\nkvs_up 1\n"),
    }
}

/// The process's resident memory, from `/proc/self/statm` (0 elsewhere).
pub fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
