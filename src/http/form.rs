//! `/`: the original kvs's interface, on the configured default project.
//!
//! - `GET /?k=K` (the original's own form) and `GET /?key=K` answer the
//!   value as text; `GET /?k=a,b,c`, `GET /?keys=a,b,c` (or repeated `key=`)
//!   the value of whichever was written last, as `latest`.
//! - `POST /` with `k1=v1&k2=v2&auth=<token>` (form-encoded) stores every
//!   pair in one transaction, all or none, and answers `OK`.
//! - `GET /` alone is the index page: the web view's page ([`super::ui`]),
//!   which shows a sign-in form and nothing about keys until given a token.
//!
//! The token comes as `auth=` (in the query for reads, unless
//! `form_query_auth = false`; in the body for a POST) or in any of the three
//! headers. Request logs name routes, never URIs, so `auth` is never logged.
//! Every answer carries `Cache-Control: no-store`, `Referrer-Policy:
//! no-referrer` and `X-Content-Type-Options: nosniff` (as every answer about
//! a key does); a POST from another site is refused (403). Errors are the v1
//! error body.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::auth::{Open, presented_secret};
use super::error::ApiError;
use super::imported::{anonymous, authenticate_secret};
use super::kv::latest_answer;
use super::request::{FORM_FIELD, Query, decode_pairs, read_body};
use super::{App, Ctx};
use crate::domain::{Key, Role, TokenSecret};
use crate::store::{KvOp, KvWrite};

/// The content type values posted through the form are stored with, and
/// reads through it answer with.
const TEXT: &str = "text/plain; charset=utf-8";
/// The most pairs one POST may store (as a transaction's ops).
const MAX_PAIRS: usize = 128;

/// Answers `/`.
pub async fn handle(app: &App, request: Request, query: Query, peer: IpAddr) -> Response {
    let answer = match *request.method() {
        Method::POST => post(app, request, peer).await,
        _ if request.uri().query().is_none_or(str::is_empty) => {
            Ok(super::ui::page(request.method() == Method::HEAD))
        }
        _ => read(app, request, &query, peer).await,
    };
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The caller, from `auth` (if given) or the headers; two different
/// credentials are refused like a wrong one.
async fn caller<'a>(
    app: &'a App,
    headers: &HeaderMap,
    auth: Option<&str>,
    peer: IpAddr,
) -> Result<Ctx<'a>, ApiError> {
    let from_headers = presented_secret(headers)?;
    let project = Some(app.settings.default_project.as_str());
    let (caller, catalog) = match (auth.map(TokenSecret::presented), from_headers) {
        (Some(a), Some(h)) if a.digest() != h.digest() => return Err(ApiError::unauthorized()),
        (Some(secret), _) | (None, Some(secret)) => {
            authenticate_secret(app, secret, project, peer).await?
        }
        (None, None) => anonymous(app, project, Open::ProjectKeys, peer)?,
    };
    Ok(Ctx {
        app,
        catalog,
        caller,
    })
}

/// `GET /?k=…`, `GET /?key=…` and `GET /?keys=…`: `latest` on the default
/// project, as text.
async fn read(
    app: &App,
    request: Request,
    query: &Query,
    peer: IpAddr,
) -> Result<Response, ApiError> {
    let auth = if app.settings.form_query_auth {
        query.get("auth")?
    } else {
        None
    };
    let ctx = caller(app, request.headers(), auth, peer).await?;
    let head = request.method() == Method::HEAD;
    let project = app.settings.default_project.as_str();
    let mut response = latest_answer(&ctx, project, query, head, true).await?;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    Ok(response)
}

/// `POST /`: every pair in one transaction.
async fn post(app: &App, request: Request, peer: IpAddr) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    refuse_cross_site(&parts.headers, &app.settings.origins)?;
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "POST / takes application/x-www-form-urlencoded pairs (curl --data 'k=v&auth=…')",
        ));
    }
    let body = read_body(
        &parts.headers,
        body,
        app.settings.max_txn_bytes,
        super::error::RAISE_TXN,
    )
    .await?;
    let pairs = decode_pairs(&body, FORM_FIELD)?;
    let mut auth = None;
    let mut fields = Vec::new();
    for (name, value) in pairs {
        let seen = name == "auth" && auth.is_some()
            || fields.iter().any(|(n, _): &(String, String)| *n == name);
        if seen {
            return Err(ApiError::bad_request(format!(
                "the field {name:?} is given twice"
            )));
        }
        if name == "auth" {
            auth = Some(value);
        } else {
            fields.push((name, value));
        }
    }
    let ctx = caller(app, &parts.headers, auth.as_deref(), peer).await?;
    let project = ctx
        .caller
        .project(&ctx.catalog, app.settings.default_project.as_str())?;
    ctx.caller.require_role(Role::Write)?;
    if fields.is_empty() {
        return Err(ApiError::bad_request("no key=value pair to store"));
    }
    if fields.len() > MAX_PAIRS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_PAIRS} pairs in one POST"
        )));
    }
    let mut ops = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let key = Key::parse(name)?;
        ctx.caller.require_scope(key.as_str())?;
        ops.push(KvOp::Put {
            key,
            value: Bytes::from(value),
            content_type: TEXT.to_owned(),
            ttl: None,
            precondition: None,
        });
    }
    let write = KvWrite::to(&project, ctx.caller.grant(), Vec::new(), ops);
    app.store
        .write_kv(write)
        .await
        .map_err(|error| ApiError::from(error.into_op_error()))?;
    let mut response = Response::new(Body::from("OK\n"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    Ok(response)
}

/// A form posted from another site is refused: a `Sec-Fetch-Site` other
/// than `same-origin` or `none`, or an `Origin` that is not in `own`, the
/// server's own origins (`null` included).
fn refuse_cross_site(headers: &HeaderMap, own: &[String]) -> Result<(), ApiError> {
    let refused = || ApiError::forbidden("a form posted from another site is refused");
    // The browser says where the page came from; `same-site` is another
    // origin (a sibling subdomain) and is refused like any other.
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none")) {
            return Err(refused());
        }
    }
    // Without `Origin` the client is no browser (browsers send it with
    // every POST). With one, it must be one of the server's own origins:
    // not compared with `Host`, which a DNS-rebinding page controls (and
    // for which the browser says `same-origin` too).
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .ok()
        .and_then(crate::config::normalise_origin);
    match origin {
        Some(origin) if own.contains(&origin) => Ok(()),
        _ => Err(ApiError::forbidden(
            "a form posted from a page that is not of this server is refused (the server's \
             own origins are set with kvs serve --origins)",
        )),
    }
}
