//! Who is calling, and what they may do. A request's token is looked up by
//! its SHA-256 digest in the catalog held in memory (no disk, no slow KDF);
//! the refusals then come in the contract's order: 401, 403 for an admin-only
//! route, 404 for a project the token has no rights on (exactly as for a
//! missing one), 403 for role or scope.
//!
//! A request without any credential is anonymous: let in only where the
//! route allows it ([`Open`]) and an admin opened the project (`public`),
//! with the rights of a token of that role, without prefix, on that one
//! project. A request that presents a credential is judged by it alone.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, header};

use super::error::ApiError;
use crate::domain::{Prefix, ProjectId, Role, Timestamp, TokenId, TokenRecord, TokenSecret};
use crate::store::{Authority, Catalog, Grant, Project};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A request that presented this token.
    Token(Arc<TokenRecord>),
    /// A request without credential: on the keys of a `public` project
    /// (`project` set, `role` read or write), or on Simple-PyKV's admin
    /// routes of a server started with `simple_pykv_open_admin` (`project`
    /// none, `role` admin). `id` names it for rate limits and watch caps:
    /// one per address.
    Anonymous {
        project: Option<ProjectId>,
        role: Role,
        id: TokenId,
    },
}

/// Which requests without credential a route may let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// None: tokens, settings, listings and admin routes.
    Never,
    /// The keys of the project the route names, if it is `public`.
    ProjectKeys,
    /// Simple-PyKV's admin routes, if the server was started with
    /// `simple_pykv_open_admin` (as a Simple-PyKV server whose config turns
    /// `system.authentication` off).
    PykvAdmin,
}

/// The credential a request presents, from any of the three headers. Two
/// different credentials in one request are refused like a wrong one.
pub fn presented_secret(headers: &HeaderMap) -> Result<Option<TokenSecret>, ApiError> {
    static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    static API_KEY: HeaderName = HeaderName::from_static("api-key");
    let mut found: Option<&str> = None;
    // The schemes of a proxy's own sign-in (`Basic` from nginx's
    // `auth_basic`, …) are not kvs credentials: such a header is ignored,
    // as Simple-PyKV ignored it, so that `X-API-Key` or `auth=` beside it,
    // or a public project, work. Any other value is a credential, and one
    // that is not `Bearer <token>` never a valid one (401).
    const PROXY_SCHEMES: [&str; 4] = ["basic", "digest", "negotiate", "ntlm"];
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|value| {
            let text = value.to_str().unwrap_or("");
            match text.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(token.trim())
                }
                Some((scheme, _))
                    if PROXY_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s)) =>
                {
                    None
                }
                _ => Some(""),
            }
        });
    let keys = [&X_API_KEY, &API_KEY].into_iter().flat_map(|name| {
        headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap_or("").trim())
    });
    for credential in bearer.chain(keys) {
        match found {
            Some(seen) if seen != credential => return Err(ApiError::unauthorized()),
            _ => found = Some(credential),
        }
    }
    Ok(found.map(TokenSecret::presented))
}

impl Caller {
    /// The caller presenting `secret`, or 401.
    pub fn with_secret(secret: &TokenSecret, catalog: &Catalog) -> Result<Caller, ApiError> {
        let token = catalog
            .token(&secret.digest(), Timestamp::now())
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller::Token(token.clone()))
    }

    /// The caller of a request from `peer` without credential on a route
    /// that is `open` and names `project`, or 401.
    pub fn anonymous(
        open: Open,
        project: Option<&str>,
        catalog: &Catalog,
        open_pykv_admin: bool,
        peer: IpAddr,
    ) -> Result<Caller, ApiError> {
        let (project, role) = match open {
            Open::ProjectKeys => {
                let id = project.and_then(ProjectId::parse);
                let role = id
                    .as_ref()
                    .and_then(|id| catalog.project(id))
                    .and_then(|project| project.settings.public.role());
                match (id, role) {
                    (Some(id), Some(role)) => (Some(id), role),
                    _ => return Err(ApiError::unauthorized()),
                }
            }
            Open::PykvAdmin if open_pykv_admin => (None, Role::Admin),
            Open::PykvAdmin | Open::Never => return Err(ApiError::unauthorized()),
        };
        Ok(Caller::Anonymous {
            project,
            role,
            id: TokenId::from_path(&format!("anonymous@{peer}")),
        })
    }

    /// Whether the caller's token is still in `catalog`, unexpired (a
    /// request without credential has none to lose): what a long request
    /// (a watch, a blocking read, a backup) looks at as it goes on.
    pub fn still_held(&self, catalog: &Catalog) -> bool {
        match self {
            Caller::Token(token) => catalog
                .token(&token.digest, Timestamp::now())
                .is_some_and(|held| held.id == token.id),
            Caller::Anonymous { .. } => true,
        }
    }

    /// The right the caller's writes are made under: the engine judges it
    /// again at the commit, so a right lost while the request was under way
    /// (its body still arriving) writes nothing.
    pub fn grant(&self) -> Grant {
        self.grant_for(Role::Write)
    }

    /// [`Caller::grant`] for a request that needs only `needed` (a
    /// read-only transaction: `read`). A token is judged whole; an
    /// anonymous caller by what the request needs, not by all the project
    /// opened to anyone when it came: narrowed from `write` to `read`
    /// meanwhile, the project still lets it read.
    pub fn grant_for(&self, needed: Role) -> Grant {
        match self {
            Caller::Token(token) => Grant::Token(token.clone()),
            Caller::Anonymous {
                project: Some(_),
                role,
                ..
            } => Grant::Public(needed.min(*role)),
            // Simple-PyKV's admin routes opened by the server's settings:
            // nothing in the catalog gave this right, nothing there takes it.
            Caller::Anonymous { project: None, .. } => Grant::Server,
        }
    }

    /// Who asks for a catalog write about `project` (as the request found
    /// it; `None`: about no project).
    pub fn authority(&self, project: Option<&Project>) -> Authority {
        Authority {
            grant: self.grant(),
            incarnation: project.map(|project| project.incarnation),
        }
    }

    /// The token the caller presented; `None` for an anonymous caller.
    pub fn token(&self) -> Option<&Arc<TokenRecord>> {
        match self {
            Caller::Token(token) => Some(token),
            Caller::Anonymous { .. } => None,
        }
    }

    /// What rate limits and watch caps count the caller's requests by.
    pub fn id(&self) -> &TokenId {
        match self {
            Caller::Token(token) => &token.id,
            Caller::Anonymous { id, .. } => id,
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Caller::Token(token) => token.role,
            Caller::Anonymous { role, .. } => *role,
        }
    }

    /// Whether the caller may see and revoke `token`, or mint one like it:
    /// an admin any; a token one no wider than itself; anonymous none.
    pub fn reaches(&self, token: &TokenRecord) -> bool {
        match self {
            _ if self.is_admin() => true,
            Caller::Token(own) => !token.is_wider_than(own),
            Caller::Anonymous { .. } => false,
        }
    }

    /// The project of the caller's token (or of its anonymous access).
    pub fn own_project(&self) -> Option<&ProjectId> {
        match self {
            Caller::Token(token) => token.project.as_ref(),
            Caller::Anonymous { project, .. } => project.as_ref(),
        }
    }

    fn prefix_text(&self) -> Option<&str> {
        match self {
            Caller::Token(token) => token.prefix.as_deref(),
            Caller::Anonymous { .. } => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role() == Role::Admin
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this route needs an admin token"))
        }
    }

    /// The project named in the path if the caller has rights on it; else
    /// 404, whether or not it exists.
    pub fn project(&self, catalog: &Catalog, raw_id: &str) -> Result<Arc<Project>, ApiError> {
        let id = ProjectId::parse(raw_id).ok_or_else(ApiError::project_not_found)?;
        let own = self.is_admin() || self.own_project() == Some(&id);
        match catalog.project(&id) {
            Some(project) if own => Ok(project.clone()),
            _ => Err(ApiError::project_not_found()),
        }
    }

    /// 403 unless the caller's role is at least `role`.
    pub fn require_role(&self, role: Role) -> Result<(), ApiError> {
        match self {
            _ if self.role() >= role => Ok(()),
            Caller::Token(token) => Err(ApiError::forbidden(format!(
                "this needs a {} token; this one is {}",
                role.as_str(),
                token.role.as_str()
            ))),
            Caller::Anonymous { role: open, .. } => Err(ApiError::forbidden(format!(
                "this needs a {} token; without one, this project's keys may only be {}",
                role.as_str(),
                if *open == Role::Read {
                    "read"
                } else {
                    "read and written"
                }
            ))),
        }
    }

    /// The caller's key prefix (empty for none).
    pub fn prefix(&self) -> Prefix {
        match self {
            Caller::Token(token) => token.prefix(),
            Caller::Anonymous { .. } => Prefix::default(),
        }
    }

    /// Whether the caller's keys are limited to a prefix.
    pub fn has_prefix(&self) -> bool {
        self.prefix_text().is_some()
    }

    /// 403 unless the key or prefix lies inside the caller's prefix.
    pub fn require_scope(&self, key_or_prefix: &str) -> Result<(), ApiError> {
        let inside = match self.prefix_text() {
            None => true,
            Some(prefix) => key_or_prefix.as_bytes().starts_with(prefix.as_bytes()),
        };
        if inside {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token only reaches keys that start with {:?}",
                self.prefix().as_str()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn all_three_headers_carry_a_token_and_two_different_ones_are_refused() {
        let digest = |pairs| presented_secret(&headers(pairs)).unwrap().unwrap().digest();
        let expected = TokenSecret::presented("kvs_a").digest();
        assert_eq!(digest(&[("authorization", "Bearer kvs_a")]), expected);
        assert_eq!(digest(&[("x-api-key", "kvs_a")]), expected);
        assert_eq!(digest(&[("api-key", "kvs_a")]), expected);
        assert_eq!(
            digest(&[("authorization", "Bearer kvs_a"), ("api-key", "kvs_a")]),
            expected
        );
        assert!(
            presented_secret(&headers(&[
                ("authorization", "Bearer kvs_a"),
                ("x-api-key", "kvs_b")
            ]))
            .is_err()
        );
        assert!(presented_secret(&headers(&[])).unwrap().is_none());
    }
}
