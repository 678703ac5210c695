//! Health, readiness, status, metrics and whoami.

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Open;
use super::error::{ApiError, ErrorBody};
use super::views::{Health, Limits, ServerStatus, TokenView};
use super::{App, Ctx, json};
use crate::domain::Public;

#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Liveness",
    tag = "system",
    security(()),
    responses((status = 200, description = "The server answers", body = Health)),
)]
pub fn healthz() -> Response {
    json(StatusCode::OK, Health { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/readyz",
    summary = "Readiness",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "Storage is open and writable", body = Health),
        (status = 503, description = "Storage is not writable", body = ErrorBody),
    ),
)]
pub fn readyz(app: &App) -> Response {
    if app.store.is_writable() {
        json(StatusCode::OK, Health { status: "ready" })
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "storage is not writable",
        )
        .into_response()
    }
}

/// `/metrics`: admin only unless the server has `metrics_public = true`.
#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics",
    tag = "system",
    description = "Admin, or no token with `metrics_public = true`",
    security((), ("bearer" = []), ("x_api_key" = []), ("api_key" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)),
)]
pub async fn metrics(app: &App, headers: &HeaderMap, peer: IpAddr) -> Result<Response, ApiError> {
    let authenticated = || super::imported::authenticate(app, headers, None, Open::Never, peer);
    // The per-project series name every project. A server that does not
    // list its projects (`projects_discoverable = false`) shows them to an
    // admin only, public metrics or not.
    let with_projects = if app.settings.metrics_public {
        // Open to requests without credential; one that presents a
        // credential is judged by it, as everywhere: a wrong one is 401,
        // never the anonymous answer.
        if super::auth::presented_secret(headers)?.is_some() {
            let (caller, _) = authenticated().await?;
            app.settings.projects_discoverable || caller.is_admin()
        } else {
            app.settings.projects_discoverable
        }
    } else {
        authenticated().await?.0.require_admin()?;
        true
    };
    let text = crate::telemetry::render_metrics(app, with_projects);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/status",
    summary = "Server status",
    tag = "system",
    description = "Admin",
    responses((status = 200, description = "The server's figures", body = ServerStatus)),
)]
pub fn status(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let projects: Vec<_> = ctx.catalog.projects().collect();
    let keys: u64 = projects.iter().map(|p| p.stats.keys()).sum();
    // Open to requests without credential: said plainly, beside the figures.
    let public_projects = projects
        .iter()
        .filter(|p| p.settings.public != Public::None)
        .map(|p| (p.settings.id.as_str(), p.settings.public.as_str()))
        .collect();
    let settings = &ctx.app.settings;
    let limits = &settings.limits;
    let status = ServerStatus {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: ctx.app.started.elapsed().as_secs_f64(),
        revision: ctx.app.store.revision(),
        projects: projects.len() as u64,
        keys,
        storage_bytes: ctx.app.store.storage_bytes(),
        memory_bytes: crate::telemetry::resident_memory_bytes(),
        public_projects,
        simple_pykv_open_admin: settings.simple_pykv_open_admin,
        limits: Limits {
            max_value_bytes: settings.max_value_bytes,
            max_txn_bytes: settings.max_txn_bytes,
            max_json_body_bytes: super::request::MAX_JSON_BODY as u64,
            max_key_bytes: 1024,
            max_list_limit: super::kv::MAX_LIST_LIMIT as u64,
            rate_limit_per_token: limits.requests_per_token.into(),
            rate_limit_per_ip: limits.requests_per_ip.into(),
            auth_failures_per_minute: limits.auth_failures_per_minute.into(),
            max_connections: limits.max_connections as u64,
            max_connections_per_ip: limits.max_connections_per_ip as u64,
            max_watchers_per_token: limits.max_watchers_per_token as u64,
            header_timeout_seconds: limits.header_timeout.as_secs(),
            body_timeout_seconds: limits.body_timeout.as_secs(),
            write_timeout_seconds: limits.write_timeout.as_secs(),
            max_header_bytes: limits.max_header_bytes as u64,
        },
    };
    Ok(json(StatusCode::OK, status))
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    summary = "The calling token",
    tag = "system",
    description = "Any token",
    responses((status = 200, description = "The caller's token (no secret)", body = TokenView)),
)]
pub fn whoami(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let token = ctx.caller.token().ok_or_else(ApiError::unauthorized)?;
    Ok(json(StatusCode::OK, super::views::token(token)))
}
