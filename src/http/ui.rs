//! The web view: a page and its assets under `/ui`, embedded in the binary at
//! build time from `ui/` (nothing is read from disk or fetched from elsewhere
//! at run time). The page is also `/` without a query. It is a client of the
//! public v1 API like any other: the server gives it no data of its own, so
//! without a token it shows only the sign-in form. Every answer carries a
//! Content-Security-Policy that allows scripts and styles from this server
//! only (none inline), `nosniff` and `no-referrer`.

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// What the page may load: its own script, style and icon, and the API of
/// the server that served it. No inline script or style, no frames, no form
/// posts (the sign-in form is handled by the script; should the script not
/// run, the token must not end up in a URL).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// The page itself, `/ui` (and `/` without a query).
const PAGE: &str = include_str!("../../ui/index.html");

/// An embedded file: its path under `/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../ui/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../ui/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../ui/icon.svg"),
    },
];

/// Each asset's strong ETag, from its bytes, so that a browser revalidates
/// cheaply and never keeps an asset of an older binary.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            format!("\"{}\"", hex::encode(&digest[..12]))
        })
        .collect()
});

/// Answers `/ui` (with `asset` empty) and `/ui/<asset>`: the page, an asset,
/// or 404 `not_found`.
pub fn handle(asset: &str, method: &Method, headers: &HeaderMap) -> Response {
    let head = method == Method::HEAD;
    if asset.is_empty() {
        return page(head);
    }
    let Some((index, found)) = ASSETS.iter().enumerate().find(|(_, a)| a.name == asset) else {
        let mut response = ApiError::not_found().into_response();
        secure(response.headers_mut());
        return response;
    };
    let etag = &ETAGS[index];
    // Compared weakly, over every line of the header (RFC 9110 13.1.2).
    let fresh = super::kv::list_header(headers, &header::IF_NONE_MATCH)
        .and_then(Result::ok)
        .is_some_and(|mut tags| {
            tags.any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
        });
    let mut response = if fresh {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        answer(found.body, found.content_type, head)
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, value);
    }
    secure(h);
    response
}

/// The page: never stored, since what it shows depends on a token.
pub fn page(head: bool) -> Response {
    let mut response = answer(PAGE.as_bytes(), "text/html; charset=utf-8", head);
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    response
}

/// A 200 with these bytes (none for HEAD, with the length they would have).
fn answer(body: &'static [u8], content_type: &'static str, head: bool) -> Response {
    let mut response = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(body))
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

/// The headers every answer under `/ui` carries.
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_embedded_assets() {
        for asset in ["/ui/app.js", "/ui/app.css", "/ui/icon.svg"] {
            assert!(PAGE.contains(asset), "the page does not load {asset}");
        }
        assert!(!PAGE.contains("<script>"), "an inline script in the page");
        assert!(!PAGE.contains("style="), "an inline style in the page");
        for attribute in ["src=\"", "href=\""] {
            for (at, _) in PAGE.match_indices(attribute) {
                let target = &PAGE[at + attribute.len()..];
                assert!(target.starts_with("/ui/"), "{attribute}{target:.40}");
            }
        }
    }
}
