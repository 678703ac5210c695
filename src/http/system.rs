//! Health, readiness, status, metrics and whoami.

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::openapi::{Health, ServerStatus};
use super::views::TokenView;
use super::{App, Ctx, json};

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    security(()),
    responses((status = 200, description = "The server answers", body = Health)),
)]
pub fn healthz() -> Response {
    json(StatusCode::OK, json!({"status": "ok"}))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "Storage is open and writable", body = Health),
        (status = 503, description = "Storage is not writable", body = super::openapi::ErrorBody),
    ),
)]
pub fn readyz(app: &App) -> Response {
    if app.store.is_writable() {
        json(StatusCode::OK, json!({"status": "ready"}))
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
    tag = "system",
    description = "Admin, or no token with `metrics_public = true`",
    security((), ("bearer" = []), ("x_api_key" = []), ("api_key" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)),
)]
pub async fn metrics(app: &App, headers: &HeaderMap, peer: IpAddr) -> Result<Response, ApiError> {
    if !app.settings.metrics_public {
        let (caller, _) = super::imported::authenticate(app, headers, None, peer).await?;
        caller.require_admin()?;
    }
    let text = crate::telemetry::render_metrics(app);
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
    tag = "system",
    description = "Admin",
    responses((status = 200, description = "The server's figures", body = ServerStatus)),
)]
pub fn status(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    ctx.caller.require_admin()?;
    let projects: Vec<_> = ctx.catalog.projects().collect();
    let keys: u64 = projects.iter().map(|p| p.stats.keys()).sum();
    let settings = &ctx.app.settings;
    let limits = &settings.limits;
    Ok(json(
        StatusCode::OK,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": ctx.app.started.elapsed().as_secs_f64(),
            "revision": ctx.app.store.revision(),
            "projects": projects.len(),
            "keys": keys,
            "storage_bytes": ctx.app.store.storage_bytes(),
            "memory_bytes": crate::telemetry::resident_memory_bytes(),
            "limits": {
                "max_value_bytes": settings.max_value_bytes,
                "max_txn_bytes": settings.max_txn_bytes,
                "max_json_body_bytes": super::request::MAX_JSON_BODY,
                "max_key_bytes": 1024,
                "max_list_limit": super::kv::MAX_LIST_LIMIT,
                "rate_limit_per_token": limits.requests_per_token,
                "rate_limit_per_ip": limits.requests_per_ip,
                "auth_failures_per_minute": limits.auth_failures_per_minute,
                "max_connections": limits.max_connections,
                "max_connections_per_ip": limits.max_connections_per_ip,
                "max_watchers_per_token": limits.max_watchers_per_token,
                "header_timeout_seconds": limits.header_timeout.as_secs(),
                "body_timeout_seconds": limits.body_timeout.as_secs(),
                "write_timeout_seconds": limits.write_timeout.as_secs(),
                "max_header_bytes": limits.max_header_bytes,
            },
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "system",
    description = "Any token",
    responses((status = 200, description = "The caller's token (no secret)", body = TokenView)),
)]
pub fn whoami(ctx: &Ctx<'_>) -> Response {
    json(StatusCode::OK, super::views::token(&ctx.caller.token))
}
