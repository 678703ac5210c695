//! Simple-PyKV's routes (`/status`, `/api/v1/projects…`), answered in its
//! envelope `{"System", "data", "message", "status_code"}` on kvs's own
//! storage, projects and tokens.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::endpoint::PykvRoute;
use super::{App, json};

/// Answers one request of the Simple-PyKV surface.
pub async fn handle(_app: &App, _route: PykvRoute, _request: Request) -> Response {
    envelope(StatusCode::NOT_FOUND, Value::Null, "not served yet")
}

/// Simple-PyKV's envelope.
pub fn envelope(status: StatusCode, data: Value, message: &str) -> Response {
    json(
        status,
        json!({"System": null, "data": data, "message": message, "status_code": status.as_u16()}),
    )
}
