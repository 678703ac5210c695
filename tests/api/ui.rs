//! The web view's page and assets under `/ui` (and the page at `/`): the
//! headers that keep a browser from running anything but the embedded
//! script, the page carrying no data of the server's, and misses and wrong
//! methods answered in the contract's shape.

use serde_json::json;

use crate::support::{Setup, expect_error, expect_status, put};

#[test]
fn the_page_and_its_assets_carry_a_strict_content_security_policy() {
    let setup = Setup::new("p", json!({}));
    let anon = setup.anonymous();
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let answer = anon.get(path);
        expect_status(&answer, 200);
        assert_eq!(answer.header("content-type"), Some(content_type), "{path}");
        let csp = answer.header("content-security-policy").unwrap_or("");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} not in {csp:?}"
            );
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
        assert!(answer.header("cache-control").is_some(), "{path}");
    }
}

#[test]
fn the_page_shows_no_project_or_key_whoever_asks() {
    let setup = Setup::new("secret-project", json!({}));
    put(&setup.manage, &setup.kv("hidden-key"), b"hidden-value");
    for client in [setup.anonymous(), setup.admin.clone()] {
        for path in ["/", "/ui", "/ui/"] {
            let page = client.get(path);
            expect_status(&page, 200);
            let text = page.text();
            assert!(text.contains("<form"), "{path} has no sign-in form");
            assert!(!text.contains("<script>"), "{path} has an inline script");
            for hidden in ["secret-project", "hidden-key", "hidden-value"] {
                assert!(!text.contains(hidden), "{path} shows {hidden}");
            }
        }
    }
}

#[test]
fn an_asset_is_revalidated_by_its_etag() {
    let setup = Setup::new("p", json!({}));
    let anon = setup.anonymous();
    let first = anon.get("/ui/app.js");
    expect_status(&first, 200);
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let etag = first.header("etag").expect("an ETag").to_owned();
    let again = anon.send("GET", "/ui/app.js", None, &[("if-none-match", &etag)]);
    expect_status(&again, 304);
    // A list on several lines is one list.
    let lines = anon.send(
        "GET",
        "/ui/app.js",
        None,
        &[("if-none-match", "\"other\""), ("if-none-match", &etag)],
    );
    expect_status(&lines, 304);
    // `*` matches any current version (RFC 9110 13.1.2).
    let star = anon.send("GET", "/ui/app.js", None, &[("if-none-match", "*")]);
    expect_status(&star, 304);
    let other = anon.send("GET", "/ui/app.js", None, &[("if-none-match", "\"other\"")]);
    expect_status(&other, 200);
    assert!(again.body.is_empty());
    assert_eq!(
        setup.anonymous().get("/ui").header("cache-control"),
        Some("no-store")
    );
}

#[test]
fn unknown_assets_and_wrong_methods_answer_in_the_contracts_shape() {
    let setup = Setup::new("p", json!({}));
    let anon = setup.anonymous();
    for path in ["/ui/nope.js", "/ui/app.js/x", "/ui/index.html"] {
        let answer = anon.get(path);
        expect_error(&answer, 404, "not_found");
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    expect_error(&anon.get("/uix"), 404, "not_found");
    for method in ["POST", "PUT", "DELETE"] {
        let answer = anon.send(method, "/ui/app.js", Some(b"x"), &[]);
        expect_error(&answer, 405, "method_not_allowed");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    }
    let head = anon.send("HEAD", "/ui", None, &[]);
    expect_status(&head, 200);
    assert!(head.body.is_empty());
}
