//! Routing: the raw request path becomes an [`Endpoint`] before any handler
//! runs. Paths are split by hand rather than by a router because a key is
//! everything after `/kv/`, percent-decoded exactly once, with `/`, `//`,
//! dot segments and `+` left as they came, and because every miss must
//! answer in the contract's shape (404 `not_found`, 405 with `Allow`).

use axum::http::Method;
use percent_encoding::percent_decode_str;

use super::auth::Open;
use super::error::ApiError;

/// A route of the v1 API, with its path parameters still raw (decoded but
/// not validated: validation happens after authentication, in the order the
/// contract gives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    Status,
    /// `/v1/backup`: the whole server at one revision.
    Backup,
    /// `/v1/verify`: check every stored record and value.
    Verify,
    /// `/v1/compact`: give the store's free room back.
    Compact,
    Whoami,
    /// `/v1/openapi.json`: the document that describes this API.
    OpenApi,
    Projects,
    Project(String),
    ProjectTokens(String),
    ProjectToken(String, String),
    AdminTokens,
    AdminToken(String),
    KvList(String),
    /// The key as decoded bytes (possibly not UTF-8, possibly empty).
    Kv(String, Vec<u8>),
    Txn(String),
    Incr(String, Vec<u8>),
    Latest(String),
    Watch(String),
    Import(String),
    /// `/`: the original kvs's form interface and index page.
    Index,
    /// `/ui` (the web view's page, with an empty name) and `/ui/<asset>`.
    Ui(String),
    /// `/status` and `/api/v1/projects…`: Simple-PyKV's routes, which answer
    /// in its envelope (methods included).
    Pykv(PykvRoute),
}

/// A route of the Simple-PyKV surface, with the project id decoded and the
/// key as decoded bytes. Simple-PyKV's keys are one path segment each (a
/// `/` inside one comes encoded, as `%2F`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PykvRoute {
    Status,
    Projects,
    Project(String),
    RegenerateKey(String),
    Store(String),
    StoreKey(String, Vec<u8>),
    StoreValue(String, Vec<u8>),
    /// Any other path under `/api/v1/`: 404 in the envelope.
    Unknown,
}

impl PykvRoute {
    /// The project the route names, if any.
    pub fn project(&self) -> Option<&str> {
        match self {
            PykvRoute::Status | PykvRoute::Projects | PykvRoute::Unknown => None,
            PykvRoute::Project(id)
            | PykvRoute::RegenerateKey(id)
            | PykvRoute::Store(id)
            | PykvRoute::StoreKey(id, _)
            | PykvRoute::StoreValue(id, _) => Some(id),
        }
    }

    /// Which requests without credential the route may let in: its store
    /// routes as v1's key routes; the others are admin routes, open only
    /// on a server started with `simple_pykv_open_admin`.
    pub fn open(&self) -> Open {
        match self {
            PykvRoute::Store(_) | PykvRoute::StoreKey(..) | PykvRoute::StoreValue(..) => {
                Open::ProjectKeys
            }
            PykvRoute::Status
            | PykvRoute::Projects
            | PykvRoute::Project(_)
            | PykvRoute::RegenerateKey(_) => Open::PykvAdmin,
            PykvRoute::Unknown => Open::Never,
        }
    }

    /// The route for a path under `/api/v1/projects`, or `None` for none.
    fn parse(rest: &str) -> Option<PykvRoute> {
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let raw = |s: &str| percent_decode_str(s).collect::<Vec<u8>>();
        if rest.is_empty() {
            return Some(PykvRoute::Projects);
        }
        let rest = rest.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let route = match parts.as_slice() {
            [id] if !id.is_empty() => PykvRoute::Project(decode(id)),
            [id, "config", "regenerate-api-key"] => PykvRoute::RegenerateKey(decode(id)),
            [id, "store"] => PykvRoute::Store(decode(id)),
            [id, "store", key] if !key.is_empty() => PykvRoute::StoreKey(decode(id), raw(key)),
            [id, "store", key, "value"] if !key.is_empty() => {
                PykvRoute::StoreValue(decode(id), raw(key))
            }
            _ => return None,
        };
        Some(route)
    }

    /// A short, fixed name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            PykvRoute::Status => "pykv_status",
            PykvRoute::Projects => "pykv_projects",
            PykvRoute::Project(_) => "pykv_project",
            PykvRoute::RegenerateKey(_) => "pykv_regenerate_key",
            PykvRoute::Store(_) => "pykv_store",
            PykvRoute::StoreKey(..) => "pykv_store_key",
            PykvRoute::StoreValue(..) => "pykv_store_value",
            PykvRoute::Unknown => "pykv_unknown",
        }
    }
}

/// A key's bytes from its path segments, percent-decoded once. Most keys
/// have nothing to decode: they are copied whole rather than byte by byte.
fn decode_key(raw: &str) -> Vec<u8> {
    if raw.contains('%') {
        percent_decode_str(raw).collect()
    } else {
        raw.as_bytes().to_vec()
    }
}

impl Endpoint {
    /// The project the route names, if any.
    pub fn project(&self) -> Option<&str> {
        match self {
            Endpoint::Project(id)
            | Endpoint::ProjectTokens(id)
            | Endpoint::ProjectToken(id, _)
            | Endpoint::KvList(id)
            | Endpoint::Kv(id, _)
            | Endpoint::Txn(id)
            | Endpoint::Incr(id, _)
            | Endpoint::Latest(id)
            | Endpoint::Watch(id)
            | Endpoint::Import(id) => Some(id),
            Endpoint::Pykv(route) => route.project(),
            _ => None,
        }
    }

    /// Which requests without credential the route may let in: only those
    /// that read or write a project's keys (a `public` project's).
    pub fn open(&self) -> Open {
        match self {
            Endpoint::KvList(_)
            | Endpoint::Kv(..)
            | Endpoint::Txn(_)
            | Endpoint::Incr(..)
            | Endpoint::Latest(_)
            | Endpoint::Watch(_) => Open::ProjectKeys,
            Endpoint::Pykv(route) => route.open(),
            _ => Open::Never,
        }
    }

    /// The route for a raw path (without the query), or 404 `not_found`.
    pub fn parse(path: &str) -> Result<Endpoint, ApiError> {
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let endpoint = match path {
            "/healthz" => Endpoint::Healthz,
            "/readyz" => Endpoint::Readyz,
            "/metrics" => Endpoint::Metrics,
            "/v1/status" => Endpoint::Status,
            "/v1/backup" => Endpoint::Backup,
            "/v1/verify" => Endpoint::Verify,
            "/v1/compact" => Endpoint::Compact,
            "/v1/whoami" => Endpoint::Whoami,
            "/v1/openapi.json" => Endpoint::OpenApi,
            "/v1/projects" => Endpoint::Projects,
            "/v1/tokens" => Endpoint::AdminTokens,
            "/" => Endpoint::Index,
            "/ui" | "/ui/" => Endpoint::Ui(String::new()),
            "/status" => Endpoint::Pykv(PykvRoute::Status),
            _ => {
                if let Some(rest) = path.strip_prefix("/api/v1/projects") {
                    let route = PykvRoute::parse(rest).unwrap_or(PykvRoute::Unknown);
                    return Ok(Endpoint::Pykv(route));
                }
                // Simple-PyKV's clients read every answer under its prefix
                // (and under /status) in its envelope, a missing route's too.
                if path == "/api/v1" || path.starts_with("/api/v1/") || path.starts_with("/status/")
                {
                    return Ok(Endpoint::Pykv(PykvRoute::Unknown));
                }
                if let Some(asset) = path.strip_prefix("/ui/") {
                    return Ok(Endpoint::Ui(asset.to_owned()));
                }
                if let Some(id) = path.strip_prefix("/v1/tokens/") {
                    if id.is_empty() || id.contains('/') {
                        return Err(ApiError::not_found());
                    }
                    return Ok(Endpoint::AdminToken(decode(id)));
                }
                let rest = path
                    .strip_prefix("/v1/projects/")
                    .ok_or_else(ApiError::not_found)?;
                let (project, tail) = match rest.split_once('/') {
                    Some((project, tail)) => (project, Some(tail)),
                    None => (rest, None),
                };
                if project.is_empty() {
                    return Err(ApiError::not_found());
                }
                let project = decode(project);
                match tail {
                    None => Endpoint::Project(project),
                    Some("tokens") => Endpoint::ProjectTokens(project),
                    Some("kv") => Endpoint::KvList(project),
                    Some("txn") => Endpoint::Txn(project),
                    Some("latest") => Endpoint::Latest(project),
                    Some("watch") => Endpoint::Watch(project),
                    Some("import") => Endpoint::Import(project),
                    Some(tail) => {
                        if let Some(key) = tail.strip_prefix("kv/") {
                            Endpoint::Kv(project, decode_key(key))
                        } else if let Some(key) = tail.strip_prefix("incr/") {
                            Endpoint::Incr(project, decode_key(key))
                        } else if let Some(id) = tail.strip_prefix("tokens/") {
                            if id.is_empty() || id.contains('/') {
                                return Err(ApiError::not_found());
                            }
                            Endpoint::ProjectToken(project, decode(id))
                        } else {
                            return Err(ApiError::not_found());
                        }
                    }
                }
            }
        };
        Ok(endpoint)
    }

    /// The methods this route answers (HEAD is answered wherever GET is).
    pub fn allowed(&self) -> &'static [&'static str] {
        match self {
            Endpoint::Healthz
            | Endpoint::Readyz
            | Endpoint::Metrics
            | Endpoint::Status
            | Endpoint::Backup
            | Endpoint::Whoami
            | Endpoint::OpenApi => &["GET", "HEAD"],
            Endpoint::Ui(_) => &["GET", "HEAD"],
            Endpoint::Projects | Endpoint::ProjectTokens(_) | Endpoint::AdminTokens => {
                &["GET", "HEAD", "POST"]
            }
            Endpoint::Project(_) => &["GET", "HEAD", "PATCH", "DELETE"],
            Endpoint::ProjectToken(..) | Endpoint::AdminToken(_) => &["DELETE"],
            Endpoint::KvList(_) => &["GET", "HEAD", "DELETE"],
            Endpoint::Kv(..) => &["GET", "HEAD", "PUT", "DELETE"],
            Endpoint::Txn(_)
            | Endpoint::Incr(..)
            | Endpoint::Import(_)
            | Endpoint::Verify
            | Endpoint::Compact => &["POST"],
            Endpoint::Latest(_) | Endpoint::Watch(_) => &["GET", "HEAD"],
            Endpoint::Index => &["GET", "HEAD", "POST"],
            // Simple-PyKV's routes check their methods themselves, so that a
            // wrong one is answered in its envelope.
            Endpoint::Pykv(_) => &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        }
    }

    /// 405 with `Allow` unless the route answers `method`.
    pub fn check_method(&self, method: &Method) -> Result<(), ApiError> {
        let allowed = self.allowed();
        if allowed.contains(&method.as_str()) {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(allowed))
        }
    }

    /// A short, fixed name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Metrics => "metrics",
            Endpoint::Status => "status",
            Endpoint::Backup => "backup",
            Endpoint::Verify => "verify",
            Endpoint::Compact => "compact",
            Endpoint::Whoami => "whoami",
            Endpoint::OpenApi => "openapi",
            Endpoint::Projects => "projects",
            Endpoint::Project(_) => "project",
            Endpoint::ProjectTokens(_) => "project_tokens",
            Endpoint::ProjectToken(..) => "project_token",
            Endpoint::AdminTokens => "admin_tokens",
            Endpoint::AdminToken(_) => "admin_token",
            Endpoint::KvList(_) => "kv_list",
            Endpoint::Kv(..) => "kv",
            Endpoint::Txn(_) => "txn",
            Endpoint::Incr(..) => "incr",
            Endpoint::Latest(_) => "latest",
            Endpoint::Watch(_) => "watch",
            Endpoint::Import(_) => "import",
            Endpoint::Index => "index",
            Endpoint::Ui(_) => "ui",
            Endpoint::Pykv(route) => route.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(path: &str) -> Vec<u8> {
        match Endpoint::parse(path).unwrap() {
            Endpoint::Kv(_, key) => key,
            other => panic!("{path} is {other:?}"),
        }
    }

    #[test]
    fn simple_pykv_routes_take_one_segment_per_key() {
        let pykv = |path: &str| match Endpoint::parse(path) {
            Ok(Endpoint::Pykv(route)) => Some(route),
            _ => None,
        };
        assert_eq!(pykv("/api/v1/projects"), Some(PykvRoute::Projects));
        assert_eq!(
            pykv("/api/v1/projects/p/store/a%2Fb/value"),
            Some(PykvRoute::StoreValue("p".into(), b"a/b".to_vec()))
        );
        assert_eq!(
            pykv("/api/v1/projects/p/store/value"),
            Some(PykvRoute::StoreKey("p".into(), b"value".to_vec()))
        );
        // Anything else under /api/v1 is a route of this surface that does
        // not exist: 404 in its envelope.
        let unknown = Some(PykvRoute::Unknown);
        assert_eq!(pykv("/api/v1/projects/p/store/a/b"), unknown);
        assert_eq!(pykv("/api/v1/projectsx"), unknown);
        assert_eq!(pykv("/api/v1/nothing"), unknown);
        assert_eq!(pykv("/api/v2/projects"), None);
        assert_eq!(pykv("/status"), Some(PykvRoute::Status));
        assert_eq!(pykv("/status/"), unknown);
        assert_eq!(pykv("/statusx"), None);
    }

    #[test]
    fn keys_are_everything_after_kv_decoded_once() {
        assert_eq!(kv("/v1/projects/p/kv/a/b"), b"a/b");
        assert_eq!(kv("/v1/projects/p/kv//leading"), b"/leading");
        assert_eq!(kv("/v1/projects/p/kv/dir/"), b"dir/");
        assert_eq!(kv("/v1/projects/p/kv/x%2520y"), b"x%20y");
        assert_eq!(kv("/v1/projects/p/kv/a+b"), b"a+b");
        assert_eq!(kv("/v1/projects/p/kv/a%2F..%2Fb"), b"a/../b");
        assert_eq!(kv("/v1/projects/p/kv/"), b"");
        assert_eq!(kv("/v1/projects/p/kv/%FF"), vec![0xff]);
    }

    #[test]
    fn other_routes_and_misses() {
        assert_eq!(
            Endpoint::parse("/v1/projects/p").unwrap(),
            Endpoint::Project("p".into())
        );
        assert_eq!(
            Endpoint::parse("/v1/projects/p/kv").unwrap(),
            Endpoint::KvList("p".into())
        );
        assert_eq!(
            Endpoint::parse("/v1/projects/p/tokens/t1").unwrap(),
            Endpoint::ProjectToken("p".into(), "t1".into())
        );
        assert_eq!(Endpoint::parse("/").unwrap(), Endpoint::Index);
        for missing in [
            "",
            "/index.html",
            "/v1/nope",
            "/v1/projects/p/nope",
            "/v1/projects/",
            "/no/such",
        ] {
            assert_eq!(
                Endpoint::parse(missing).unwrap_err().code(),
                "not_found",
                "{missing}"
            );
        }
    }
}
