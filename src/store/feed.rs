//! Change feeds: every change to a project's keys, in revision order, for
//! watches and blocking reads.
//!
//! The store writes each write's changes to a durable per-project change log
//! in the same commit as the keys (see the engine). On top of that log, each
//! project has one [`Feed`] in memory: the most recent change sets, shared
//! (`Arc`) by every reader, and a notifier that carries the newest revision.
//! A watcher wakes on the notifier and reads what is new at its own cursor;
//! nothing is copied per watcher and no task runs per change. A cursor older
//! than the feed's memory is served from the durable log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::domain::{Key, Timestamp};

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Put,
    Delete,
    /// A delete by the expiry sweep.
    Expired,
}

/// One key's change.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: ChangeKind,
    pub key: Key,
    /// Empty for deletes.
    pub content_type: String,
    pub value: Bytes,
}

/// Every change of one revision in one project, in key order.
#[derive(Debug)]
pub struct ChangeSet {
    pub revision: u64,
    /// When the write was made.
    pub at: Timestamp,
    pub changes: Vec<Change>,
    /// How many changes the feed had published up to and including this
    /// set (0 for sets read back from the durable log): how far a watcher
    /// that has delivered this set is behind is `feed.published() - serial`.
    pub serial: u64,
    /// The set as the HTTP layer renders it for watchers that take all of
    /// it (without values, with values): made once by the first watcher
    /// that needs it, then shared by the others.
    pub rendered: [OnceLock<Bytes>; 2],
}

impl ChangeSet {
    pub fn new(revision: u64, at: Timestamp, changes: Vec<Change>) -> ChangeSet {
        ChangeSet {
            revision,
            at,
            changes,
            serial: 0,
            rendered: Default::default(),
        }
    }

    /// What the set takes in memory, about: every change's key, content
    /// type and value, and a fixed [`CHANGE_OVERHEAD`] for the rest (a set
    /// of many changes with long keys and empty values is not free).
    pub fn weight(&self) -> usize {
        self.changes
            .iter()
            .map(|c| c.key.as_str().len() + c.content_type.len() + c.value.len() + CHANGE_OVERHEAD)
            .sum()
    }
}

/// What one change costs in memory beside its key, content type and value
/// (the `Change` itself, its share of the set): counted so that the
/// feed's byte bound holds for changes of empty values too.
const CHANGE_OVERHEAD: usize = 64;

/// How much of the recent history a feed keeps in memory, per project.
/// Older changes come from the durable log.
const TAIL_SETS: usize = 4096;
const TAIL_BYTES: usize = 8 << 20;

/// A project's recent changes and its notifier.
#[derive(Debug)]
pub struct Feed {
    tail: RwLock<Tail>,
    /// The revision of the newest published change set.
    newest: watch::Sender<u64>,
    /// The newest revision whose changes are no longer kept: a watch may
    /// resume from this revision or a later one.
    compacted: AtomicU64,
    /// Changes published since start.
    published: AtomicU64,
}

#[derive(Debug)]
struct Tail {
    sets: VecDeque<Arc<ChangeSet>>,
    /// The tail holds every change set with a revision above this one.
    start: u64,
    bytes: usize,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed::new(0, 0)
    }
}

impl Feed {
    /// A feed whose durable log holds everything up to `start` and nothing
    /// at or below `compacted`.
    pub fn new(start: u64, compacted: u64) -> Feed {
        Feed {
            tail: RwLock::new(Tail {
                sets: VecDeque::new(),
                start,
                bytes: 0,
            }),
            newest: watch::Sender::new(start),
            compacted: AtomicU64::new(compacted),
            published: AtomicU64::new(0),
        }
    }

    /// A receiver that is told each time a change set is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    pub fn compacted(&self) -> u64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Changes published since start.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Raised by the store *before* it commits a compaction, so that a
    /// reader that finds the log without those changes also finds this.
    pub fn raise_compacted(&self, revision: u64) {
        self.compacted.fetch_max(revision, Ordering::AcqRel);
    }

    /// Publishes a committed change set: called by the store in revision
    /// order, after the commit and before the revision is acknowledged.
    pub fn publish(&self, mut set: ChangeSet) {
        let count = set.changes.len() as u64;
        set.serial = self.published.fetch_add(count, Ordering::AcqRel) + count;
        let revision = set.revision;
        let size = set.weight();
        if let Ok(mut tail) = self.tail.write() {
            tail.sets.push_back(Arc::new(set));
            tail.bytes += size;
            while tail.sets.len() > TAIL_SETS || (tail.bytes > TAIL_BYTES && tail.sets.len() > 1) {
                if let Some(old) = tail.sets.pop_front() {
                    tail.start = old.revision;
                    tail.bytes -= old.weight();
                }
            }
        }
        self.newest.send_replace(revision);
    }

    /// The change sets after `cursor`, oldest first, whole sets up to about
    /// `max_changes` changes (at least one set); `None` when the memory tail
    /// no longer reaches back to `cursor` (read the durable log instead).
    pub fn after(&self, cursor: u64, max_changes: usize) -> Option<Vec<Arc<ChangeSet>>> {
        let tail = self.tail.read().ok()?;
        if cursor < tail.start {
            return None;
        }
        let first = tail.sets.partition_point(|set| set.revision <= cursor);
        let mut taken = 0;
        let mut sets = Vec::new();
        for set in tail.sets.range(first..) {
            if taken >= max_changes && !sets.is_empty() {
                break;
            }
            taken += set.changes.len();
            sets.push(set.clone());
        }
        Some(sets)
    }
}

/// The change sets after a cursor, as [`crate::store::Store::changes`]
/// answers them.
pub type ChangeSets = Vec<Arc<ChangeSet>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn set(revision: u64, keys: &[&str]) -> ChangeSet {
        let changes = keys
            .iter()
            .map(|k| Change {
                kind: ChangeKind::Put,
                key: Key::parse(*k).unwrap(),
                content_type: String::new(),
                value: Bytes::from_static(b"v"),
            })
            .collect();
        ChangeSet::new(revision, Timestamp::now(), changes)
    }

    #[test]
    fn readers_get_whole_sets_after_their_cursor_and_old_cursors_go_to_the_log() {
        let feed = Feed::new(10, 0);
        let mut notified = feed.subscribe();
        feed.publish(set(12, &["a", "b"]));
        feed.publish(set(15, &["c"]));
        assert!(notified.has_changed().unwrap());
        assert_eq!(*notified.borrow_and_update(), 15);
        let revisions =
            |sets: Vec<Arc<ChangeSet>>| sets.iter().map(|s| s.revision).collect::<Vec<_>>();
        assert_eq!(revisions(feed.after(10, 100).unwrap()), [12, 15]);
        assert_eq!(revisions(feed.after(12, 100).unwrap()), [15]);
        assert_eq!(revisions(feed.after(11, 1).unwrap()), [12]);
        assert!(feed.after(15, 100).unwrap().is_empty());
        assert!(feed.after(9, 100).is_none());
        assert_eq!(feed.published(), 3);
        assert_eq!(feed.after(12, 100).unwrap()[0].serial, 3);
        for revision in 16..16 + TAIL_SETS as u64 {
            feed.publish(set(revision, &["k"]));
        }
        assert!(feed.after(12, 100).is_none());
        assert_eq!(feed.after(16, 1).unwrap()[0].revision, 17);
    }

    #[test]
    fn the_memory_tail_counts_keys_so_empty_values_do_not_escape_its_bound() {
        let feed = Feed::new(0, 0);
        let long = "k".repeat(1000);
        let keys: Vec<String> = (0..128).map(|i| format!("{long}{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        for revision in 1..=200 {
            let mut set = set(revision, &keys);
            for change in &mut set.changes {
                change.value = Bytes::new();
            }
            feed.publish(set);
        }
        let tail = feed.tail.read().unwrap();
        let held: usize = tail.sets.iter().map(|s| s.weight()).sum();
        assert_eq!(held, tail.bytes);
        assert!(held <= TAIL_BYTES, "{held} bytes held");
        assert!(tail.sets.len() < 200, "every set was kept");
    }
}
