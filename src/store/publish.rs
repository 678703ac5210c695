//! Publication: the one step by which committed changes become visible, the
//! same for every engine.
//!
//! A [`View`] holds what requests read without touching storage: the
//! catalog, each project's figures and change feed (inside the catalog's
//! projects), and the server revision. After an engine has made a write
//! durable, it hands [`View::publish`] a [`Publication`], which makes it
//! visible in this order:
//!
//! 1. the catalog (so a reader that sees a new revision finds its projects
//!    and tokens);
//! 2. the figures of every project written in (keys, bytes, revision);
//! 3. the change sets, to each project's feed in revision order (watchers
//!    learn of a change before its writer is answered: a client that writes
//!    and then watches from the revision it was given finds the change);
//! 4. the server revision;
//! 5. and last, a tick to everything that watches the catalog (open watches
//!    and blocking reads check their token again).
//!
//! Figures and change sets of a project that is gone, or that is another
//! incarnation by now, are dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{Catalog, ChangeSet, Figures};
use crate::domain::ProjectId;

/// What requests read without touching storage.
pub struct View {
    catalog: ArcSwap<Catalog>,
    /// The newest revision whose write has been committed and published.
    revision: AtomicU64,
    /// Bumped after each change to the catalog.
    generation: watch::Sender<u64>,
}

/// A project's figures after a commit.
#[derive(Clone, Copy, Debug)]
pub struct ProjectFigures {
    pub figures: Figures,
    /// The last revision that wrote in the project.
    pub revision: u64,
}

/// Everything one commit makes visible.
#[derive(Default)]
pub struct Publication {
    /// The catalog after the commit, when the commit changed it.
    pub catalog: Option<Catalog>,
    /// Figures of the projects written in, with the incarnation written.
    pub figures: Vec<(ProjectId, u64, ProjectFigures)>,
    /// Change sets in revision order, with the incarnation written.
    pub sets: Vec<(ProjectId, u64, ChangeSet)>,
    /// The server revision after the commit.
    pub revision: u64,
}

impl View {
    pub fn new(catalog: Catalog, revision: u64) -> View {
        View {
            catalog: ArcSwap::from_pointee(catalog),
            revision: AtomicU64::new(revision),
            generation: watch::Sender::new(0),
        }
    }

    /// The catalog as last published.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The newest published revision.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// A receiver told of every change to the catalog.
    pub fn catalog_changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Makes a commit visible, in the order the module describes.
    pub fn publish(&self, publication: Publication) {
        let Publication {
            catalog,
            figures,
            sets,
            revision,
        } = publication;
        let catalog_changed = catalog.is_some();
        if let Some(catalog) = catalog {
            self.catalog.store(Arc::new(catalog));
        }
        let catalog = self.catalog.load();
        for (id, incarnation, figures) in figures {
            if let Some(project) = catalog
                .project(&id)
                .filter(|p| p.incarnation == incarnation)
            {
                let stats = &project.stats;
                stats.keys.store(figures.figures.keys, Ordering::Release);
                stats.bytes.store(figures.figures.bytes, Ordering::Release);
                stats.revision.store(figures.revision, Ordering::Release);
            }
        }
        for (id, incarnation, set) in sets {
            if let Some(project) = catalog
                .project(&id)
                .filter(|p| p.incarnation == incarnation)
            {
                project.stats.feed.publish(set);
            }
        }
        self.revision.fetch_max(revision, Ordering::AcqRel);
        if catalog_changed {
            self.generation.send_modify(|generation| *generation += 1);
        }
    }
}
