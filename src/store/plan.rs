//! The catalog's rules, apart from any engine: a [`CatalogWrite`] judged
//! against the catalog as it stands becomes a [`CatalogDelta`], the plain
//! list of records to put and remove. An engine persists the delta and
//! hands it back to [`Catalog::apply`]; it decides nothing itself.
//!
//! The rules: a write is made only while who asks for it still may (its
//! token held, the project the one it found); a project id is taken once;
//! a token belongs to a project that exists; a revocation reaches only the
//! tokens in its scope; the last admin token that does not expire stays;
//! the first admin token is made once; named tokens follow their source; an
//! imported token keeps the other server's digest until its key is first
//! presented.

use super::{Authority, Catalog, CatalogWrite, ProjectChange, StoreError, TokenScope};
use crate::domain::{
    Digest, ImportedDigest, ProjectId, ProjectSettings, Timestamp, TokenId, TokenRecord,
};

/// What a catalog write changes, record by record.
#[derive(Clone, Debug, Default)]
pub struct CatalogDelta {
    /// A project created by this write (its settings are in `projects`).
    pub created: Option<ProjectId>,
    /// A project removed with its keys and tokens.
    pub removed: Option<ProjectId>,
    /// Project settings to store (new or changed).
    pub projects: Vec<ProjectSettings>,
    /// Token records to store (new or changed).
    pub tokens: Vec<TokenRecord>,
    /// Tokens to remove (with their imported digest, if any).
    pub revoked: Vec<TokenId>,
    /// Imported digests to keep beside their token.
    pub imported: Vec<(TokenId, ImportedDigest)>,
    /// Imported tokens whose key was presented: their imported digest goes.
    pub verified: Vec<(TokenId, Digest)>,
}

impl CatalogDelta {
    /// Whether the write changes nothing (a replacement by the same token,
    /// a verification already made).
    pub fn is_empty(&self) -> bool {
        self.created.is_none()
            && self.removed.is_none()
            && self.projects.is_empty()
            && self.tokens.is_empty()
            && self.revoked.is_empty()
            && self.imported.is_empty()
            && self.verified.is_empty()
    }
}

/// Whether `by` may still make `write` in `catalog` at `now`: its grant
/// holds (a token not revoked, not expired, not gone with its project),
/// then the project the write names is the incarnation the request found
/// (else `ProjectNotFound`, as for a key write). The request was let in
/// when its headers arrived; this is the check at the commit itself, where
/// no revocation can come in between.
pub fn authorize(
    catalog: &Catalog,
    write: &CatalogWrite,
    by: &Authority,
    now: Timestamp,
) -> Result<(), StoreError> {
    let project = write.project().and_then(|id| catalog.project(id));
    by.grant.holds(catalog, project.map(|p| &**p), now)?;
    match (by.incarnation, project) {
        (None, _) => Ok(()),
        (Some(incarnation), Some(project)) if project.incarnation == incarnation => Ok(()),
        _ => Err(StoreError::ProjectNotFound),
    }
}

/// The most expired tokens one [`CatalogWrite::RemoveExpiredTokens`]
/// removes: on etcd each is two deletes (the token and its imported
/// digest) beside the generation's put, within etcd's default
/// `--max-txn-ops` of 128.
pub const EXPIRED_PER_WRITE: usize = 32;

impl CatalogWrite {
    /// The existing project the write is about, if any.
    pub fn project(&self) -> Option<&ProjectId> {
        match self {
            CatalogWrite::UpdateProject { id, .. } | CatalogWrite::DeleteProject { id } => Some(id),
            CatalogWrite::CreateToken(token)
            | CatalogWrite::ImportToken { token, .. }
            | CatalogWrite::AddTokenOnce(token) => token.project.as_ref(),
            CatalogWrite::DeleteToken {
                scope: TokenScope::Project(project),
                ..
            }
            | CatalogWrite::ReplaceProjectTokens { project, .. } => Some(project),
            CatalogWrite::CreateProject { .. }
            | CatalogWrite::CreateFirstAdmin(_)
            | CatalogWrite::VerifyImportedToken { .. }
            | CatalogWrite::DeleteToken { .. }
            | CatalogWrite::RemoveExpiredTokens
            | CatalogWrite::ReplaceNamedTokens { .. } => None,
        }
    }
}

/// Judges `write`, asked for `by`, against `catalog` at server revision
/// `revision` (a new project's `created_revision`) and `now`.
pub fn plan(
    catalog: &Catalog,
    write: CatalogWrite,
    by: &Authority,
    revision: u64,
    now: Timestamp,
) -> Result<CatalogDelta, StoreError> {
    authorize(catalog, &write, by, now)?;
    let mut delta = CatalogDelta::default();
    match write {
        CatalogWrite::CreateProject {
            mut settings,
            token,
        } => {
            if catalog.project(&settings.id).is_some() {
                return Err(StoreError::ProjectExists);
            }
            settings.created_revision = revision;
            delta.created = Some(settings.id.clone());
            delta.tokens.extend(token);
            delta.projects.push(settings);
        }
        CatalogWrite::UpdateProject { id, change } => {
            let project = catalog.project(&id).ok_or(StoreError::ProjectNotFound)?;
            delta.projects.push(change.apply_to(&project.settings));
        }
        CatalogWrite::DeleteProject { id } => {
            catalog.project(&id).ok_or(StoreError::ProjectNotFound)?;
            delta.revoked = catalog
                .tokens()
                .into_iter()
                .filter(|t| t.project.as_ref() == Some(&id))
                .map(|t| t.id.clone())
                .collect();
            delta.removed = Some(id);
        }
        CatalogWrite::CreateToken(token) => {
            require_project(catalog, &token)?;
            delta.tokens.push(token);
        }
        CatalogWrite::CreateFirstAdmin(token) => {
            if catalog.live_admin_tokens(now) > 0 {
                return Err(StoreError::Conflict(
                    "an admin token exists already".to_owned(),
                ));
            }
            delta.tokens.push(token);
        }
        CatalogWrite::AddTokenOnce(token) => {
            require_project(catalog, &token)?;
            if !catalog.tokens().iter().any(|t| t.digest == token.digest) {
                delta.tokens.push(token);
            }
        }
        CatalogWrite::ImportToken { token, digest } => {
            require_project(catalog, &token)?;
            delta.imported.push((token.id.clone(), digest));
            delta.tokens.push(token);
        }
        CatalogWrite::VerifyImportedToken { id, digest } => {
            let token = catalog.token_by_id(&id).ok_or(StoreError::TokenNotFound)?;
            if !catalog.is_imported(&id) {
                // Verified meanwhile by another request with the same key.
                return if token.digest == digest {
                    Ok(delta)
                } else {
                    Err(StoreError::TokenNotFound)
                };
            }
            delta.tokens.push(TokenRecord {
                digest,
                ..(**token).clone()
            });
            delta.verified.push((id, digest));
        }
        CatalogWrite::DeleteToken { id, scope } => {
            let token = catalog.token_by_id(&id).ok_or(StoreError::TokenNotFound)?;
            let in_scope = match &scope {
                TokenScope::Admin => token.project.is_none(),
                TokenScope::Project(project) => token.project.as_ref() == Some(project),
            };
            if !in_scope {
                return Err(StoreError::TokenNotFound);
            }
            if token.project.is_none()
                && !token.is_expired(now)
                && is_last_admin(catalog, token, now)
            {
                return Err(StoreError::LastAdminToken);
            }
            delta.revoked.push(id);
        }
        CatalogWrite::RemoveExpiredTokens => {
            let expired = catalog.tokens().into_iter().filter(|t| t.is_expired(now));
            let first = expired.take(EXPIRED_PER_WRITE);
            delta.revoked.extend(first.map(|t| t.id.clone()));
        }
        CatalogWrite::ReplaceNamedTokens {
            source,
            name,
            token,
        } => {
            let old: Vec<_> = catalog
                .tokens()
                .into_iter()
                .filter(|t| t.source == source && t.name.as_deref() == Some(name.as_str()))
                .collect();
            let keep = token
                .as_ref()
                .is_some_and(|new| old.iter().any(|o| o.digest == new.digest));
            if keep {
                return Ok(delta);
            }
            delta.revoked = old.into_iter().map(|t| t.id.clone()).collect();
            delta.tokens.extend(token);
        }
        CatalogWrite::ReplaceProjectTokens {
            project,
            source,
            token,
        } => {
            if catalog.project(&project).is_none() {
                return Err(StoreError::ProjectNotFound);
            }
            if token.project.as_ref() != Some(&project) {
                return Err(StoreError::internal(
                    "a replacement token of another project",
                ));
            }
            delta.revoked = catalog
                .tokens()
                .into_iter()
                .filter(|t| t.source == source && t.project.as_ref() == Some(&project))
                .map(|t| t.id.clone())
                .collect();
            delta.tokens.push(token);
        }
    }
    Ok(delta)
}

/// Whether revoking the live admin token `token` would leave the server
/// without an admin for good: it is the last admin token that does not
/// expire (the expiring ones beside it would lapse and leave none), or,
/// when no admin token lasts, the last live one.
fn is_last_admin(catalog: &Catalog, token: &TokenRecord, now: Timestamp) -> bool {
    let lasting = catalog.lasting_admin_tokens();
    let lasts = token.expires_at.is_none() && !catalog.is_imported(&token.id);
    if lasts {
        lasting <= 1
    } else {
        lasting == 0 && catalog.live_admin_tokens(now) <= 1
    }
}

fn require_project(catalog: &Catalog, token: &TokenRecord) -> Result<(), StoreError> {
    match &token.project {
        Some(project) if catalog.project(project).is_none() => Err(StoreError::ProjectNotFound),
        _ => Ok(()),
    }
}

impl ProjectChange {
    /// The settings after this change.
    pub fn apply_to(&self, settings: &ProjectSettings) -> ProjectSettings {
        let mut next = settings.clone();
        if let Some(storage) = self.storage {
            next.storage = storage;
        }
        if let Some(discoverable) = self.keys_discoverable {
            next.keys_discoverable = discoverable;
        }
        if let Some(max) = self.max_value_bytes {
            next.max_value_bytes = max;
        }
        if let Some(max) = self.max_keys {
            next.max_keys = max;
        }
        if let Some(public) = self.public {
            next.public = public;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, StorageMode, TokenSecret, TokenSource};

    const SERVER: Authority = Authority {
        grant: crate::store::Grant::Server,
        incarnation: None,
    };

    fn admin(name: &str) -> TokenRecord {
        TokenRecord {
            id: TokenId::generate().unwrap(),
            digest: TokenSecret::generate().unwrap().digest(),
            role: Role::Admin,
            project: None,
            prefix: None,
            name: Some(name.to_owned()),
            created_at: Timestamp::now(),
            expires_at: None,
            source: TokenSource::V1,
        }
    }

    #[test]
    fn the_last_live_admin_token_cannot_be_revoked_and_scopes_hold() {
        let mut catalog = Catalog::default();
        let only = admin("a");
        catalog.insert_token(only.clone());
        let now = Timestamp::now();
        let revoke = |id: &TokenId, scope| CatalogWrite::DeleteToken {
            id: id.clone(),
            scope,
        };
        assert_eq!(
            plan(
                &catalog,
                revoke(&only.id, TokenScope::Admin),
                &SERVER,
                0,
                now
            )
            .unwrap_err(),
            StoreError::LastAdminToken
        );
        let project = ProjectId::parse("p").unwrap();
        assert_eq!(
            plan(
                &catalog,
                revoke(&only.id, TokenScope::Project(project)),
                &SERVER,
                0,
                now
            )
            .unwrap_err(),
            StoreError::TokenNotFound
        );
        let second = admin("b");
        catalog.insert_token(second);
        let delta = plan(
            &catalog,
            revoke(&only.id, TokenScope::Admin),
            &SERVER,
            0,
            now,
        )
        .unwrap();
        assert_eq!(delta.revoked, vec![only.id]);
    }

    #[test]
    fn the_last_admin_token_without_expiry_stays_beside_expiring_ones() {
        let mut catalog = Catalog::default();
        let lasting = admin("lasting");
        let expiring = TokenRecord {
            expires_at: Some(Timestamp::from_millis(Timestamp::now().millis() + 3_000)),
            ..admin("expiring")
        };
        catalog.insert_token(lasting.clone());
        catalog.insert_token(expiring.clone());
        let now = Timestamp::now();
        let revoke = |id: &TokenId| CatalogWrite::DeleteToken {
            id: id.clone(),
            scope: TokenScope::Admin,
        };
        assert_eq!(
            plan(&catalog, revoke(&lasting.id), &SERVER, 0, now).unwrap_err(),
            StoreError::LastAdminToken
        );
        plan(&catalog, revoke(&expiring.id), &SERVER, 0, now).unwrap();
        // Without a lasting one, the last live one stays.
        catalog.remove_token(&lasting.id);
        assert_eq!(
            plan(&catalog, revoke(&expiring.id), &SERVER, 0, now).unwrap_err(),
            StoreError::LastAdminToken
        );
    }

    /// The sweep's write removes only tokens past their expiry, the last
    /// lasting admin token's rule aside (an expired one works no more), and
    /// at most `EXPIRED_PER_WRITE` at a time; with none left it is empty.
    #[test]
    fn removing_expired_tokens_takes_only_those_and_a_bounded_number_a_write() {
        let mut catalog = Catalog::default();
        let now = Timestamp::now();
        let lasting = admin("lasting");
        catalog.insert_token(lasting.clone());
        let at = |offset: i64| Some(Timestamp::from_millis(now.millis() + offset));
        let live = TokenRecord {
            expires_at: at(60_000),
            ..admin("live")
        };
        catalog.insert_token(live.clone());
        for n in 0..EXPIRED_PER_WRITE + 5 {
            let expired = TokenRecord {
                expires_at: at(-1_000),
                ..admin(&format!("expired {n}"))
            };
            catalog.insert_token(expired);
        }
        let mut removed = 0;
        for _ in 0..3 {
            let delta = plan(&catalog, CatalogWrite::RemoveExpiredTokens, &SERVER, 0, now).unwrap();
            assert!(delta.revoked.len() <= EXPIRED_PER_WRITE, "{delta:?}");
            for id in &delta.revoked {
                assert!(catalog.token_by_id(id).is_some_and(|t| t.is_expired(now)));
                catalog.remove_token(id);
                removed += 1;
            }
        }
        assert_eq!(removed, EXPIRED_PER_WRITE + 5);
        assert!(catalog.token_by_id(&lasting.id).is_some());
        assert!(catalog.token_by_id(&live.id).is_some());
        let delta = plan(&catalog, CatalogWrite::RemoveExpiredTokens, &SERVER, 0, now).unwrap();
        assert!(delta.is_empty(), "{delta:?}");
    }

    #[test]
    fn a_new_project_takes_the_revision_of_its_moment_and_an_id_once() {
        let settings = ProjectSettings {
            id: ProjectId::parse("p").unwrap(),
            storage: StorageMode::Memory,
            keys_discoverable: true,
            max_value_bytes: 1,
            max_keys: None,
            public: crate::domain::Public::None,
            created_at: Timestamp::now(),
            created_revision: 0,
        };
        let create = || CatalogWrite::CreateProject {
            settings: settings.clone(),
            token: None,
        };
        let mut catalog = Catalog::default();
        let delta = plan(&catalog, create(), &SERVER, 42, Timestamp::now()).unwrap();
        assert_eq!(delta.projects[0].created_revision, 42);
        catalog.apply(&delta, 1);
        assert_eq!(
            plan(&catalog, create(), &SERVER, 43, Timestamp::now()).unwrap_err(),
            StoreError::ProjectExists
        );
    }

    #[test]
    fn the_first_admin_token_is_made_once_and_a_node_token_is_added_once() {
        let now = Timestamp::now();
        let mut catalog = Catalog::default();
        let first = admin("bootstrap");
        let delta = plan(
            &catalog,
            CatalogWrite::CreateFirstAdmin(first.clone()),
            &SERVER,
            0,
            now,
        )
        .unwrap();
        assert_eq!(delta.tokens, vec![first.clone()]);
        catalog.apply(&delta, 1);
        // A second node's first admin token, judged after the first: refused.
        let again = plan(
            &catalog,
            CatalogWrite::CreateFirstAdmin(admin("b")),
            &SERVER,
            0,
            now,
        );
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

        // A node's own token is added beside the others and removes none;
        // the same secret again (another id, the same digest) changes nothing.
        let node = admin("KVS_ADMIN_TOKEN");
        let delta = plan(
            &catalog,
            CatalogWrite::AddTokenOnce(node.clone()),
            &SERVER,
            0,
            now,
        )
        .unwrap();
        assert_eq!(delta.tokens, vec![node.clone()]);
        assert!(delta.revoked.is_empty());
        catalog.apply(&delta, 2);
        let same = TokenRecord {
            id: TokenId::generate().unwrap(),
            ..node.clone()
        };
        let delta = plan(&catalog, CatalogWrite::AddTokenOnce(same), &SERVER, 0, now).unwrap();
        assert!(delta.is_empty(), "{delta:?}");
        let other = admin("KVS_ADMIN_TOKEN");
        let delta = plan(
            &catalog,
            CatalogWrite::AddTokenOnce(other.clone()),
            &SERVER,
            0,
            now,
        )
        .unwrap();
        assert_eq!(delta.tokens, vec![other]);
        assert!(delta.revoked.is_empty());
    }
}
