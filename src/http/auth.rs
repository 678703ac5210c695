//! Who is calling, and what they may do. A request's token is looked up by
//! its SHA-256 digest in the catalog held in memory (no disk, no slow KDF);
//! the refusals then come in the contract's order: 401, 403 for an admin-only
//! route, 404 for a project the token has no rights on (exactly as for a
//! missing one), 403 for role or scope.

use std::sync::Arc;

use axum::http::HeaderMap;

use super::error::ApiError;
use crate::domain::{Prefix, ProjectId, Role, Timestamp, TokenRecord, TokenSecret};
use crate::store::{Catalog, Project};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: Arc<TokenRecord>,
}

/// The credential a request presents, from any of the three headers. Two
/// different credentials in one request are refused like a wrong one.
pub fn presented_secret(headers: &HeaderMap) -> Result<Option<TokenSecret>, ApiError> {
    let mut found: Option<&str> = None;
    let bearer = headers.get_all("authorization").iter().map(|value| {
        let text = value.to_str().unwrap_or("");
        match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => "", // another scheme: never a valid credential
        }
    });
    let keys = ["x-api-key", "api-key"].into_iter().flat_map(|name| {
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
        Ok(Caller {
            token: token.clone(),
        })
    }

    pub fn is_admin(&self) -> bool {
        self.token.role == Role::Admin
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
        let own = self.is_admin() || self.token.project.as_ref() == Some(&id);
        match catalog.project(&id) {
            Some(project) if own => Ok(project.clone()),
            _ => Err(ApiError::project_not_found()),
        }
    }

    /// 403 unless the caller's role is at least `role`.
    pub fn require_role(&self, role: Role) -> Result<(), ApiError> {
        if self.token.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs a {} token; this one is {}",
                role.as_str(),
                self.token.role.as_str()
            )))
        }
    }

    /// The caller's key prefix (empty for none).
    pub fn prefix(&self) -> Prefix {
        self.token.prefix()
    }

    /// 403 unless the key or prefix lies inside the caller's prefix.
    pub fn require_scope(&self, key_or_prefix: &str) -> Result<(), ApiError> {
        let inside = match &self.token.prefix {
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
