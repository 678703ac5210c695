//! Writes held in the disk database's open write transaction.
//!
//! A batch whose writes the write-ahead log made durable need not commit
//! redb's transaction: the writer keeps it open for the batches after it
//! and commits it at the log's next checkpoint (or before anything that
//! needs the database committed). One redb commit then serves many batches,
//! and a key written again in the meantime is changed in place. Readers
//! cannot see into an open transaction, so the writer also puts each held
//! batch's keys here, after the log's sync and before it publishes the
//! batch, and readers look here before their snapshot.
//!
//! The order that keeps reads right:
//! - the writer adds a batch's keys before it publishes or answers it, all
//!   of a batch's keys at once (under the write lock);
//! - when it commits the held transaction, it bumps [`Held::epoch`] first,
//!   then commits, then invalidates the read snapshot, and only then
//!   empties this;
//! - a read of one key looks here first and takes its snapshot after: a
//!   key missing here was either never held or committed before, and then
//!   the snapshot has it;
//! - a listing copies the keys of its range here, takes its snapshot, then
//!   checks that the epoch has not moved; if it has, the snapshot may hold
//!   writes newer than the copy (a transaction would show half old, half
//!   new), and it reads again.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::store::Entry;

/// A project's held keys: the entry each key has now (`None`: deleted).
pub type HeldKeys = BTreeMap<String, Option<Entry>>;

#[derive(Default)]
pub struct Held {
    /// Bumped before each commit of the held transaction.
    epoch: AtomicU64,
    /// How many keys are held: readers skip the lock while there are none.
    count: AtomicUsize,
    projects: RwLock<HashMap<String, HeldKeys>>,
}

impl Held {
    /// The key's entry if it is held: `Some(None)` for a held delete.
    pub fn get(&self, project: &str, key: &str) -> Option<Option<Entry>> {
        if self.count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let projects = self.projects.read().ok()?;
        projects.get(project)?.get(key).cloned()
    }

    /// The held keys of a project from `start` on that begin with `prefix`,
    /// and the epoch they were taken at.
    pub fn range(&self, project: &str, start: &str, prefix: &str) -> (u64, HeldKeys) {
        let epoch = self.epoch();
        if self.count.load(Ordering::SeqCst) == 0 {
            return (epoch, HeldKeys::new());
        }
        let Ok(projects) = self.projects.read() else {
            return (epoch, HeldKeys::new());
        };
        let Some(keys) = projects.get(project) else {
            return (epoch, HeldKeys::new());
        };
        let range = keys
            .range::<str, _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect();
        (epoch, range)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }

    /// Adds a held batch's keys (project, key, entry), all at once.
    pub fn add(&self, entries: Vec<(String, String, Option<Entry>)>) {
        if entries.is_empty() {
            return;
        }
        let mut projects = match self.projects.write() {
            Ok(projects) => projects,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut added = 0;
        for (project, key, entry) in entries {
            let keys = projects.entry(project).or_default();
            added += usize::from(keys.insert(key, entry).is_none());
        }
        // Under the write lock: no other change of the count meanwhile.
        self.count.fetch_add(added, Ordering::SeqCst);
    }

    /// Called before the held transaction is committed.
    pub fn committing(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Called once the commit is done and the read snapshot invalidated.
    pub fn clear(&self) {
        let mut projects = match self.projects.write() {
            Ok(projects) => projects,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.count.store(0, Ordering::SeqCst);
        projects.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count is of distinct held keys: a key held again is not counted
    /// twice, and a clear empties it.
    #[test]
    fn held_keys_are_counted_once_each_and_cleared() {
        let held = Held::default();
        assert!(held.is_empty());
        let batch = |keys: &[(&str, &str)]| {
            keys.iter()
                .map(|(project, key)| ((*project).to_owned(), (*key).to_owned(), None))
                .collect()
        };
        held.add(batch(&[("p", "a"), ("p", "b"), ("q", "a")]));
        held.add(batch(&[("p", "a"), ("q", "c")]));
        assert_eq!(held.count.load(Ordering::SeqCst), 4);
        assert!(matches!(held.get("p", "a"), Some(None)), "a held delete");
        assert!(held.get("q", "b").is_none());
        held.clear();
        assert!(held.is_empty());
        assert!(held.get("p", "a").is_none());
    }
}
