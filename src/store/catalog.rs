//! The catalog: every project's settings and every token, held in memory as
//! an immutable snapshot that the store replaces after each committed change.
//! Requests read it without a lock (an `ArcSwap` load) to authenticate and to
//! find a project, so no request touches disk or takes a lock before it is
//! known to be allowed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CatalogDelta, Feed};
use crate::domain::{
    Digest, ImportedDigest, ProjectId, ProjectSettings, Role, Timestamp, TokenId, TokenRecord,
};

/// A project's live figures, shared by every snapshot that holds the project
/// and updated by the store's writer after each commit.
#[derive(Debug, Default)]
pub struct ProjectStats {
    pub keys: AtomicU64,
    pub bytes: AtomicU64,
    /// The last revision that wrote in the project.
    pub revision: AtomicU64,
    /// The project's recent changes, for watches and blocking reads.
    pub feed: Arc<Feed>,
}

impl ProjectStats {
    /// Figures of a project whose change log holds everything up to
    /// `revision`.
    pub fn new(keys: u64, bytes: u64, revision: u64) -> ProjectStats {
        ProjectStats {
            keys: AtomicU64::new(keys),
            bytes: AtomicU64::new(bytes),
            revision: AtomicU64::new(revision),
            feed: Arc::new(Feed::new(revision, 0)),
        }
    }

    pub fn keys(&self) -> u64 {
        self.keys.load(Ordering::Acquire)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }
}

/// A project as the catalog holds it.
#[derive(Debug, Clone)]
pub struct Project {
    pub settings: ProjectSettings,
    pub stats: Arc<ProjectStats>,
    /// Which life of the project id this is: a project deleted and created
    /// again under the same id is another incarnation, so a watch of the
    /// old one ends. Unique among the projects an engine has served: the
    /// embedded engine numbers them as it loads or creates them.
    pub incarnation: u64,
}

/// One snapshot of projects and tokens.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    projects: BTreeMap<ProjectId, Arc<Project>>,
    /// By digest, hashed with foldhash: the digests are SHA-256 outputs of
    /// secrets that the server made, so no client can choose ones that
    /// collide (SipHash of a digest cost about 270 of the 31,000 instructions
    /// of a GET: `bench/instructions.sh`).
    tokens: HashMap<Digest, Arc<TokenRecord>, foldhash::fast::RandomState>,
    /// Imported tokens whose key has not been presented yet: their digest
    /// from the other server (their record's digest is random until then).
    imported: HashMap<TokenId, Arc<ImportedDigest>>,
}

impl Catalog {
    pub fn project(&self, id: &ProjectId) -> Option<&Arc<Project>> {
        self.projects.get(id)
    }

    pub fn projects(&self) -> impl Iterator<Item = &Arc<Project>> {
        self.projects.values()
    }

    /// The token whose digest is `digest`, if it exists and has not expired.
    /// The map lookup finds the candidate; the final comparison is constant
    /// time.
    pub fn token(&self, digest: &Digest, now: Timestamp) -> Option<&Arc<TokenRecord>> {
        self.tokens
            .get(digest)
            .filter(|token| token.digest.matches(digest) && !token.is_expired(now))
    }

    pub fn token_by_id(&self, id: &TokenId) -> Option<&Arc<TokenRecord>> {
        self.tokens.values().find(|token| &token.id == id)
    }

    /// Every token, sorted by creation time then id, for stable listings.
    pub fn tokens(&self) -> Vec<&Arc<TokenRecord>> {
        let mut tokens: Vec<_> = self.tokens.values().collect();
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        tokens
    }

    /// Admin tokens that still work.
    pub fn live_admin_tokens(&self, now: Timestamp) -> usize {
        self.tokens
            .values()
            .filter(|t| t.role == Role::Admin && !t.is_expired(now))
            .count()
    }

    /// Admin tokens that work and will not lapse: no expiry, and not an
    /// imported one whose key has never been presented (nobody may hold it).
    pub fn lasting_admin_tokens(&self) -> usize {
        self.tokens
            .values()
            .filter(|t| t.role == Role::Admin && t.expires_at.is_none())
            .filter(|t| !self.imported.contains_key(&t.id))
            .count()
    }

    /// The imported tokens of a project (`None`: the imported admin tokens)
    /// whose key has not been presented yet, with their digests.
    pub fn imported(
        &self,
        project: Option<&ProjectId>,
        now: Timestamp,
    ) -> Vec<(Arc<TokenRecord>, Arc<ImportedDigest>)> {
        if self.imported.is_empty() {
            return Vec::new();
        }
        self.tokens
            .values()
            .filter(|t| t.project.as_ref() == project && !t.is_expired(now))
            .filter(|t| project.is_some() || t.role == Role::Admin)
            .filter_map(|t| Some((t.clone(), self.imported.get(&t.id)?.clone())))
            .collect()
    }

    /// The digest another server kept of an imported token's key, while the
    /// key has not been presented.
    pub fn imported_digest(&self, id: &TokenId) -> Option<&ImportedDigest> {
        self.imported.get(id).map(|digest| digest.as_ref())
    }

    /// Whether the token is imported and still waits for its key.
    pub fn is_imported(&self, id: &TokenId) -> bool {
        self.imported.contains_key(id)
    }

    pub fn insert_imported(&mut self, id: TokenId, digest: ImportedDigest) {
        self.imported.insert(id, Arc::new(digest));
    }

    /// Gives an imported token the digest of its key, presented at last.
    pub fn verify_imported(&mut self, id: &TokenId, digest: Digest) -> Option<()> {
        self.imported.remove(id)?;
        let mut token = (*self.remove_token(id)?).clone();
        token.digest = digest;
        self.insert_token(token);
        Some(())
    }

    /// Applies a judged catalog write (see [`super::plan`]): a created
    /// project takes `incarnation` and empty figures; a changed one keeps
    /// its figures and incarnation.
    pub fn apply(&mut self, delta: &CatalogDelta, incarnation: u64) {
        if let Some(id) = &delta.removed {
            self.remove_project(id);
        }
        for settings in &delta.projects {
            let (stats, incarnation) = match self.projects.get(&settings.id) {
                Some(old) if delta.created.as_ref() != Some(&settings.id) => {
                    (old.stats.clone(), old.incarnation)
                }
                _ => (
                    Arc::new(ProjectStats::new(0, 0, settings.created_revision)),
                    incarnation,
                ),
            };
            self.insert_project(Project {
                settings: settings.clone(),
                stats,
                incarnation,
            });
        }
        for id in &delta.revoked {
            self.remove_token(id);
        }
        for (id, digest) in &delta.verified {
            self.verify_imported(id, *digest);
        }
        for token in &delta.tokens {
            if delta.verified.iter().all(|(id, _)| id != &token.id) {
                self.insert_token(token.clone());
            }
        }
        for (id, digest) in &delta.imported {
            self.insert_imported(id.clone(), digest.clone());
        }
    }

    /// Whether `id` names the project of this incarnation.
    pub fn is_current(&self, id: &ProjectId, incarnation: u64) -> bool {
        self.projects
            .get(id)
            .is_some_and(|p| p.incarnation == incarnation)
    }

    pub fn insert_project(&mut self, project: Project) {
        self.projects
            .insert(project.settings.id.clone(), Arc::new(project));
    }

    pub fn remove_project(&mut self, id: &ProjectId) -> Option<Arc<Project>> {
        let imported = &mut self.imported;
        self.tokens.retain(|_, token| {
            let keep = token.project.as_ref() != Some(id);
            if !keep {
                imported.remove(&token.id);
            }
            keep
        });
        self.projects.remove(id)
    }

    pub fn insert_token(&mut self, token: TokenRecord) {
        self.tokens.insert(token.digest, Arc::new(token));
    }

    pub fn remove_token(&mut self, id: &TokenId) -> Option<Arc<TokenRecord>> {
        let digest = self.token_by_id(id)?.digest;
        self.imported.remove(id);
        self.tokens.remove(&digest)
    }
}
