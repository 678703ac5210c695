//! Logs and metrics, set up in one place. Request logs go through `tracing`
//! (text or JSON); they name the route, status and duration, never a token.
//! Metrics are recorded with the `metrics` crate and rendered in Prometheus
//! text format by its exporter.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

/// Installs the process-wide metrics recorder (once; later calls reuse it).
pub fn init_metrics() {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok().map(|()| handle)
    });
}

pub fn record_request(method: &Method, route: &'static str, status: StatusCode, elapsed: Duration) {
    let labels = [
        ("route", route.to_owned()),
        ("method", method.as_str().to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("kvs_http_requests_total", &labels).increment(1);
    metrics::histogram!("kvs_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    tracing::info!(
        target: "kvs::access",
        method = %method,
        route,
        status = status.as_u16(),
        micros = elapsed.as_micros() as u64,
    );
}

/// The Prometheus text of every metric, with the store's figures as gauges.
pub fn render_metrics(app: &App) -> String {
    let catalog = app.store.catalog();
    metrics::gauge!("kvs_revision").set(app.store.revision() as f64);
    metrics::gauge!("kvs_storage_bytes").set(app.store.storage_bytes() as f64);
    metrics::gauge!("kvs_projects").set(catalog.projects().count() as f64);
    metrics::gauge!("kvs_uptime_seconds").set(app.started.elapsed().as_secs_f64());
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
