//! Power loss at any moment of a run of redb commits on the deferred
//! backend: not durable, deferred and waited, in random order, while the
//! sync thread is held back now and then. The file under the queue records
//! every write, length change and sync in the order they reach it. A power
//! loss keeps what a sync made durable and, of what reached the file after
//! the last sync, none, all, or any part, whole writes or any of their
//! 512-byte sectors (a torn write); each such image must open at a
//! durable commit, no older than the last commit whose sync was waited for,
//! with that commit's contents and redb's integrity check passing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{
    BackendError, Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
};

use super::{DeferredSync, deferring};

const VALUES: TableDefinition<u64, &[u8]> = TableDefinition::new("values");
const COMMIT: TableDefinition<&str, u64> = TableDefinition::new("commit");

/// What reached the file, and when a commit returned.
#[derive(Debug, Clone)]
enum Event {
    Write(u64, Arc<[u8]>),
    SetLen(u64),
    Sync,
    /// The database was created (before this, it was being made: redb
    /// writes its magic number last, and refuses a file without it).
    Created,
    Returned {
        commit: u64,
        waited: bool,
    },
    /// The database is dropped next, which makes the last commit durable.
    Closing,
}

/// redb's file backend, recording what reaches the file in the order it
/// does (the lock is held across each operation).
#[derive(Debug)]
struct Recording {
    file: FileBackend,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recording {
    fn done(
        &self,
        op: impl FnOnce(&FileBackend) -> io::Result<()>,
        event: Event,
    ) -> io::Result<()> {
        let mut events = self.events.lock().unwrap();
        op(&self.file)?;
        events.push(event);
        Ok(())
    }
}

impl StorageBackend for Recording {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.done(|file| file.set_len(len), Event::SetLen(len))
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.done(|file| file.sync_data(), Event::Sync)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.done(
            |file| file.write(offset, data),
            Event::Write(offset, data.into()),
        )
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// xorshift64: the same run from the same seed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    NotDurable,
    Deferred,
    Waited,
}

/// Each key's value: the commit that wrote it, and its length.
type Contents = BTreeMap<u64, (u64, usize)>;

fn value(commit: u64, len: usize) -> Vec<u8> {
    vec![(commit % 251) as u8; len]
}

/// Runs `commits` random commits; answers what reached the file, and the
/// contents and kind of each commit (commit 0: the empty database).
fn record(seed: u64, commits: u64, path: &std::path::Path) -> (Vec<Event>, Vec<(Contents, Kind)>) {
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    let recording = Recording {
        file: FileBackend::new(file).unwrap(),
        events: Arc::clone(&events),
    };
    let backend = DeferredSync::new(recording).unwrap();
    let queue = Arc::clone(&backend.inner);
    let database = Database::builder()
        .set_cache_size(256 << 10)
        .create_with_backend(backend)
        .unwrap();
    events.lock().unwrap().push(Event::Created);
    let stop = Arc::new(AtomicBool::new(false));
    let holder = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut random = Random(seed ^ 0xdead_beef);
            while !stop.load(Ordering::Relaxed) {
                let held = queue.paused.lock().unwrap();
                std::thread::sleep(Duration::from_micros(random.below(3000)));
                drop(held);
                std::thread::sleep(Duration::from_micros(random.below(1500)));
            }
        })
    };
    let mut random = Random(seed);
    let mut contents = Contents::new();
    let mut commits_made = vec![(Contents::new(), Kind::Waited)];
    for commit in 1..=commits {
        let kind = match random.below(10) {
            0..=5 => Kind::NotDurable,
            6..=8 => Kind::Deferred,
            _ => Kind::Waited,
        };
        let mut txn = database.begin_write().unwrap();
        if kind == Kind::NotDurable {
            txn.set_durability(redb::Durability::None).unwrap();
        } else {
            txn.set_quick_repair(true);
        }
        {
            let mut values = txn.open_table(VALUES).unwrap();
            for _ in 0..1 + random.below(12) {
                let key = random.below(200);
                if random.below(4) == 0 {
                    values.remove(key).unwrap();
                    contents.remove(&key);
                } else {
                    // Now and then a value of several pages.
                    let len = if random.below(5) == 0 {
                        4000 + random.below(30_000) as usize
                    } else {
                        10 + random.below(900) as usize
                    };
                    values.insert(key, value(commit, len).as_slice()).unwrap();
                    contents.insert(key, (commit, len));
                }
            }
            txn.open_table(COMMIT)
                .unwrap()
                .insert("last", commit)
                .unwrap();
        }
        match kind {
            Kind::Deferred => deferring(|| txn.commit()).unwrap(),
            _ => txn.commit().unwrap(),
        }
        let waited = kind == Kind::Waited;
        events
            .lock()
            .unwrap()
            .push(Event::Returned { commit, waited });
        commits_made.push((contents.clone(), kind));
    }
    stop.store(true, Ordering::Relaxed);
    holder.join().unwrap();
    events.lock().unwrap().push(Event::Closing);
    drop(database);
    let events = events.lock().unwrap().clone();
    (events, commits_made)
}

/// What a disk writes whole: a power loss may keep any of a write's
/// sectors and lose the others ("torn" images).
const SECTOR: usize = 512;

fn apply(image: &mut Vec<u8>, event: &Event) {
    match event {
        Event::Write(offset, data) => {
            let (start, end) = (*offset as usize, *offset as usize + data.len());
            if image.len() < end {
                image.resize(end, 0);
            }
            image[start..end].copy_from_slice(data);
        }
        Event::SetLen(len) => image.resize(*len as usize, 0),
        Event::Sync | Event::Created | Event::Returned { .. } | Event::Closing => {}
    }
}

/// Opens a crash image; answers the commit it holds, or what is wrong.
/// `closing`: the crash came while the database was being dropped.
fn check_image(
    path: &std::path::Path,
    commits: &[(Contents, Kind)],
    last_waited: u64,
    closing: bool,
) -> Result<u64, String> {
    let database = Database::open(path).map_err(|e| format!("open: {e}"))?;
    let read = database.begin_read().map_err(|e| e.to_string())?;
    let commit = match read.open_table(COMMIT) {
        Ok(table) => table
            .get("last")
            .map_err(|e| e.to_string())?
            .map_or(0, |c| c.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(error) => return Err(error.to_string()),
    };
    let (expected, kind) = &commits[commit as usize];
    let made_durable_by_the_close = closing && commit as usize == commits.len() - 1;
    if *kind == Kind::NotDurable && !made_durable_by_the_close {
        return Err(format!(
            "it opened at commit {commit}, which was not durable"
        ));
    }
    if commit < last_waited {
        return Err(format!(
            "it opened at commit {commit}, before {last_waited}, whose sync was waited for"
        ));
    }
    let mut found = BTreeMap::new();
    if let Ok(values) = read.open_table(VALUES) {
        for row in values.iter().map_err(|e| e.to_string())? {
            let (key, value) = row.map_err(|e| e.to_string())?;
            found.insert(key.value(), value.value().to_vec());
        }
    }
    let expected: BTreeMap<u64, Vec<u8>> = expected
        .iter()
        .map(|(key, (written, len))| (*key, value(*written, *len)))
        .collect();
    if found != expected {
        return Err(format!("commit {commit}'s contents differ"));
    }
    drop(read);
    let mut database = database;
    match database.check_integrity() {
        Ok(true) => Ok(commit),
        other => Err(format!("commit {commit}: integrity check: {other:?}")),
    }
}

fn run(seed: u64, commits: u64, crashes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (events, made) = record(seed, commits, &dir.path().join("db.redb"));
    let mut random = Random(seed ^ 0x5eed);
    let created = events
        .iter()
        .position(|e| matches!(e, Event::Created))
        .unwrap();
    // A crash at `point` keeps what reached the file before `events[point]`.
    let after_creation = (events.len() - created) as u64;
    let mut at: Vec<usize> = (0..crashes)
        .map(|_| created + 1 + random.below(after_creation) as usize)
        .collect();
    at.sort_unstable();
    // The file as the last sync left it, what reached it after, and the
    // last commit that returned after a waited sync.
    let (mut durable, mut after, mut last_waited) = (Vec::new(), Vec::new(), 0);
    let mut closing = false;
    let mut next = 0;
    let mut failures = Vec::new();
    for (crash, point) in at.iter().enumerate() {
        for event in &events[next..*point] {
            match event {
                Event::Sync => after.drain(..).for_each(|e| apply(&mut durable, &e)),
                Event::Returned { commit, waited } => {
                    if *waited {
                        last_waited = *commit;
                    }
                }
                Event::Created => {}
                Event::Closing => closing = true,
                written => after.push(written.clone()),
            }
        }
        next = *point;
        for variant in ["none", "all", "some", "torn"] {
            let mut image = durable.clone();
            for event in &after {
                let kept = match variant {
                    "none" => false,
                    "all" => true,
                    _ => random.below(2) == 0,
                };
                match event {
                    Event::Write(offset, data) if kept && variant == "torn" => {
                        for (n, sector) in data.chunks(SECTOR).enumerate() {
                            if random.below(2) == 0 {
                                let at = offset + (n * SECTOR) as u64;
                                apply(&mut image, &Event::Write(at, sector.into()));
                            }
                        }
                    }
                    _ if kept => apply(&mut image, event),
                    _ => {}
                }
            }
            let path = dir.path().join(format!("crash-{crash}-{variant}.redb"));
            std::fs::write(&path, &image).unwrap();
            let opened =
                std::panic::catch_unwind(|| check_image(&path, &made, last_waited, closing));
            match opened {
                Ok(Ok(_)) => {}
                Ok(Err(problem)) => failures.push(format!("event {point}, {variant}: {problem}")),
                Err(_) => failures.push(format!("event {point}, {variant}: redb panicked")),
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}, {} events: {failures:#?}",
        events.len()
    );
}

#[test]
fn a_power_loss_at_any_moment_finds_a_durable_commit_no_older_than_the_last_waited_one() {
    for seed in 1..=3 {
        run(0x1234_5678 + seed * 7919, 250, 300);
    }
}
