//! Keys brought from another server (Simple-PyKV's API keys, by `kvs import
//! simple-pykv`). Such a token is stored with a random digest that matches
//! no secret, and with the PBKDF2 digest the other server kept of its key.
//! When a request presents a secret that matches no token and names a
//! project with imported tokens still waiting for their key, the secret is
//! checked against those tokens' PBKDF2 digests (on a blocking thread: about
//! 0.1 s each at Simple-PyKV's 200,000 rounds). On a match the token takes
//! the secret's SHA-256 digest and drops the PBKDF2 one, in one commit, and
//! the request goes on as that token: each key costs one PBKDF2, once.
//!
//! A route that names no project checks only imported admin tokens.
//!
//! PBKDF2 is slow on purpose, so verifications are rationed: at most
//! [`PER_SCOPE`] a second per project (or for the admin tokens) and
//! [`GLOBAL`] a second in all; beyond that the request gets 429 with
//! `Retry-After`. A secret that failed is remembered for [`FAILED_FOR`] and
//! refused at once (401) while the project's imported tokens are the same,
//! so a client repeating a wrong key costs nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};

use super::App;
use super::auth::{Caller, Open, presented_secret};
use super::error::ApiError;
use crate::domain::{Digest, ProjectId, Timestamp, TokenId, TokenSecret};
use crate::store::{Authority, Catalog, CatalogWrite};

/// PBKDF2 verifications a second for one project (or the admin tokens).
const PER_SCOPE: u32 = 4;
/// PBKDF2 verifications a second in all.
const GLOBAL: u32 = 8;
/// How long a secret that failed is refused without a verification.
const FAILED_FOR: Duration = Duration::from_secs(60);
/// The most failed secrets remembered (more than the rate allows in
/// [`FAILED_FOR`]).
const MAX_FAILED: usize = 4096;
const WINDOW: Duration = Duration::from_secs(1);

/// A project's imported tokens (`None`: the admin tokens).
type Scope = Option<ProjectId>;

/// The rationing of PBKDF2 verifications. Its lock is held only to count,
/// never during a verification.
#[derive(Default)]
pub struct ImportedKeys {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    global: Window,
    scopes: HashMap<Scope, Window>,
    /// Secrets (by digest) that matched none of these imported tokens.
    failed: HashMap<(Scope, Digest), (Instant, Vec<TokenId>)>,
}

/// Verifications counted in the current one-second window.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            start: Instant::now(),
            count: 0,
        }
    }
}

impl Window {
    /// Counts `n` verifications if they fit in the window's allowance.
    fn fits(&mut self, now: Instant, n: u32, limit: u32) -> bool {
        if now.duration_since(self.start) >= WINDOW {
            *self = Window {
                start: now,
                count: 0,
            };
        }
        // A request with more candidates than the allowance runs alone.
        self.count == 0 || self.count + n <= limit
    }
}

/// What to do with a presented secret.
enum Admission {
    Verify,
    KnownFailure,
}

impl ImportedKeys {
    fn admit(
        &self,
        scope: &Scope,
        digest: Digest,
        candidates: &[TokenId],
    ) -> Result<Admission, ApiError> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, checked)) = state.failed.get(&(scope.clone(), digest))
            && now.duration_since(*at) < FAILED_FOR
            && candidates.iter().all(|id| checked.contains(id))
        {
            return Ok(Admission::KnownFailure);
        }
        let n = u32::try_from(candidates.len()).unwrap_or(u32::MAX);
        let mut global = state.global;
        let mut window = state.scopes.get(scope).copied().unwrap_or_default();
        if !(global.fits(now, n, GLOBAL) && window.fits(now, n, PER_SCOPE)) {
            return Err(too_many_requests());
        }
        global.count += n;
        window.count += n;
        state.global = global;
        state
            .scopes
            .retain(|_, w| now.duration_since(w.start) < WINDOW);
        state.scopes.insert(scope.clone(), window);
        Ok(Admission::Verify)
    }

    fn failed(&self, scope: Scope, digest: Digest, candidates: Vec<TokenId>) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.failed.len() >= MAX_FAILED {
            state
                .failed
                .retain(|_, (at, _)| now.duration_since(*at) < FAILED_FOR);
            if state.failed.len() >= MAX_FAILED {
                state.failed.clear();
            }
        }
        state.failed.insert((scope, digest), (now, candidates));
    }
}

fn too_many_requests() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "too many attempts with keys that are not known yet; try again in a second",
    )
    .with_header(header::RETRY_AFTER, "1")
}

/// The caller of a request and the catalog it was found in: every route
/// authenticates here (see [`authenticate_secret`]). A request without
/// credential is let in only as [`Caller::anonymous`] allows on a route
/// that is `open`.
pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    project: Option<&str>,
    open: Open,
    peer: IpAddr,
) -> Result<(Caller, Arc<Catalog>), ApiError> {
    match presented_secret(headers)? {
        Some(secret) => authenticate_secret(app, secret, project, peer).await,
        None => anonymous(app, project, open, peer),
    }
}

/// The anonymous caller of a request from `peer` on a route that is
/// `open`, or 401; within the address's request rate.
pub fn anonymous(
    app: &App,
    project: Option<&str>,
    open: Open,
    peer: IpAddr,
) -> Result<(Caller, Arc<Catalog>), ApiError> {
    let catalog = app.store.catalog()?;
    let caller = Caller::anonymous(
        open,
        project,
        &catalog,
        app.settings.simple_pykv_open_admin,
        peer,
    )?;
    app.limiter.admit_token(caller.id())?;
    Ok((caller, catalog))
}

/// The caller presenting `secret`. A secret that matches no token counts
/// against its address's allowance of failures (429 once spent), then is
/// checked against the imported tokens of the project the route names
/// (`project`; `None` for a route that names none: the imported admin
/// tokens). The caller's token must also be within its request rate.
pub async fn authenticate_secret(
    app: &App,
    secret: TokenSecret,
    project: Option<&str>,
    peer: IpAddr,
) -> Result<(Caller, Arc<Catalog>), ApiError> {
    let catalog = app.store.catalog()?;
    let refusal = match Caller::with_secret(&secret, &catalog) {
        Ok(caller) => {
            app.limiter.admit_token(caller.id())?;
            return Ok((caller, catalog));
        }
        Err(refusal) => refusal,
    };
    app.limiter.unknown_credential(peer)?;
    // A token made through another cluster node a moment ago: known once
    // this node has caught up (a single server's catalog always has).
    if app.store.catch_up().await.is_ok() {
        let catalog = app.store.catalog()?;
        if let Ok(caller) = Caller::with_secret(&secret, &catalog) {
            app.limiter.admit_token(caller.id())?;
            return Ok((caller, catalog));
        }
    }
    let scope: Scope = match project {
        Some(raw) => match ProjectId::parse(raw) {
            Some(id) => Some(id),
            None => return Err(refusal),
        },
        None => None,
    };
    let now = Timestamp::now();
    let candidates = catalog.imported(scope.as_ref(), now);
    if candidates.is_empty() {
        return Err(refusal);
    }
    let digest = secret.digest();
    let ids: Vec<TokenId> = candidates.iter().map(|(t, _)| t.id.clone()).collect();
    if let Admission::KnownFailure = app.imported.admit(&scope, digest, &ids)? {
        return Err(refusal);
    }
    let found = tokio::task::spawn_blocking(move || {
        candidates
            .into_iter()
            .find(|(_, imported)| imported.verify(secret.expose()))
            .map(|(token, _)| token.id.clone())
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "a key verification failed to run");
        ApiError::internal()
    })?;
    let Some(id) = found else {
        app.imported.failed(scope, digest, ids);
        return Err(refusal);
    };
    app.store
        .write_catalog(
            CatalogWrite::VerifyImportedToken {
                id: id.clone(),
                digest,
            },
            // The server's own write: the key was just verified.
            Authority::server(),
        )
        .await?;
    tracing::info!(token = id.as_str(), "an imported token's key was verified");
    let catalog = app.store.catalog()?;
    let token = catalog.token(&digest, now).cloned().ok_or(refusal)?;
    app.limiter.admit_token(&token.id)?;
    Ok((Caller::Token(token), catalog))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifications_are_rationed_and_failures_remembered() {
        let keys = ImportedKeys::default();
        let project = ProjectId::parse("p");
        let ids = vec![TokenId::from_path("tok_1")];
        let digest = |n: u8| Digest([n; 32]);
        for n in 0..PER_SCOPE as u8 {
            assert!(matches!(
                keys.admit(&project, digest(n), &ids),
                Ok(Admission::Verify)
            ));
        }
        let refused = keys.admit(&project, digest(99), &ids).err().unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        // Another project has its own allowance, within the global one.
        let other = ProjectId::parse("q");
        for n in 0..(GLOBAL - PER_SCOPE) as u8 {
            assert!(keys.admit(&other, digest(n), &ids).is_ok());
        }
        assert!(keys.admit(&ProjectId::parse("r"), digest(1), &ids).is_err());
        keys.failed(project.clone(), digest(7), ids.clone());
        assert!(matches!(
            keys.admit(&project, digest(7), &ids),
            Ok(Admission::KnownFailure)
        ));
        // A new imported token makes the secret worth checking again.
        let more = vec![ids[0].clone(), TokenId::from_path("tok_2")];
        assert!(keys.admit(&project, digest(7), &more).is_err());
    }
}
