//! The disk database's storage: redb's file backend, except that a durable
//! commit made inside [`deferring_tracked`] returns before its syncs are done.
//!
//! Why: with the write-ahead log, the writer commits redb durably only as
//! a checkpoint, every 100 ms to 1 s under writes, and such a commit
//! waited for a `fdatasync` of every page dirtied since the one before
//! (about 5 ms at 10,000 keys, more on a larger store). The batches queued
//! behind it waited too, and that wait was PUT's p99 (`bench/README.md`,
//! "Where PUT's p99 goes"). A checkpoint's writes are also in the log,
//! which is synced per batch, so the checkpoint need not be durable before
//! the writer goes on: only before the log is started again.
//!
//! How: a sync inside [`deferring_tracked`] is queued for this backend's thread,
//! and so is every write or change of length that redb makes after it,
//! until the thread has done them, in order. The file on disk thus goes
//! through the same states as with redb's own backend, only later: redb's
//! two-phase commit (the pages, a sync, the header that points at them, a
//! sync) keeps its order, and a crash or power loss finds the last commit
//! whose syncs were done, as it would have found an older checkpoint. Reads
//! of what is still queued are answered from the queue.
//!
//! A sync outside [`deferring_tracked`] (every other durable commit: the checkpoint
//! before the log starts again, the catalog, moves, closing) waits until
//! the queue and itself are done, as redb's own backend does, so the log
//! is only started again once everything it held is on disk. A deferred
//! commit whose predecessor's sync is not done yet waits for it first, so
//! at most one is queued, and a write of the writer's that would take the
//! writes in the queue past [`QUEUE_BYTES`] waits for the thread to make
//! room (a disk slower than the checkpoints, or than the writes behind
//! them, slows the writer instead of filling memory; [`bound_this_thread`]).
//! If the thread fails to write or sync, or a deferred commit fails, the
//! queue stops there (nothing after it reaches the file) and every later
//! call fails with the same OS error, so the writer's next commit fails (a
//! full disk as such) and the database is reopened, as after any failed
//! commit; the log still holds every write since the last wait.
//!
//! Before a deferred sync, the thread starts the write-back of what was
//! written before it (since the sync before) in parts of about 256 KiB
//! written, waiting for each (`sync_file_range`, Linux only), and only then
//! syncs. This disk (a virtual one with a write-back cache and no FUA)
//! makes every sync a flush of all that reached it, so one sync of a
//! checkpoint's pages (about 850 at 10,000 keys) held the log's syncs
//! behind it for 7 to 10 ms, every 100 ms: a third of PUT's p99. With the
//! parts, a log sync made between two of them flushes about one part
//! (`bench/README.md`, "Deferred syncs written back in parts"). This
//! changes when the pages reach the disk, not what a crash finds: the sync
//! after them is the same. Any error of a part is the sync's failure: its
//! wait has taken the file's write-back error (of any part of the file),
//! which the sync after it would no longer report. Whether the call works
//! at all is asked once, when the file is opened, without a wait.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

use crate::files;

thread_local! {
    /// The deferred commit under way on this thread (0: none).
    static DEFERRING: Cell<u64> = const { Cell::new(0) };
    /// The queue the deferred commit under way put its syncs in.
    static USED: RefCell<Option<Arc<Inner>>> = const { RefCell::new(None) };
    /// Whether this thread's writes wait for room in the queue
    /// ([`bound_this_thread`]).
    static BOUNDED: Cell<bool> = const { Cell::new(false) };
    /// The bytes the deferred commit under way wrote so far.
    static WRITTEN: Cell<u64> = const { Cell::new(0) };
}

/// Makes this thread's writes wait for room in the queue
/// ([`QUEUE_BYTES`]): the writer's thread, whose commits write what the
/// queue holds. Other threads write only what redb writes out, best effort,
/// from a read that misses a full page cache: at most what its write buffer
/// held (within the page cache's size), queued at once, so that a read
/// never waits for a sync (holding, meanwhile, a lock of redb's cache).
pub fn bound_this_thread() {
    BOUNDED.set(true);
}

/// The number of the last deferred commit (of any thread).
static COMMITS: AtomicU64 = AtomicU64::new(0);

/// Opens (or creates) the database at `path` on this backend, with a page
/// cache of `cache_bytes`.
pub fn create(path: &Path, cache_bytes: usize) -> Result<Database, DatabaseError> {
    Ok(create_with_queue(path, cache_bytes)?.0)
}

/// [`create`], and the backend's queue.
///
/// A new database is made beside `path`, in a file of this process's own,
/// and linked to `path` once redb has written it whole. redb writes its
/// magic number last: a crash before that (a SIGKILL in the server's first
/// milliseconds did it once in 60 tries) left a file at `path` that every
/// later start refused as "not a redb database". The link fails if `path`
/// exists, so of two servers making the same store at once, one makes it
/// and the other opens it (and finds it in use). Files left beside it by
/// creations cut short are removed once the store exists.
fn create_with_queue(
    path: &Path,
    cache_bytes: usize,
) -> Result<(Database, Arc<Inner>), DatabaseError> {
    if !path.try_exists()? {
        if let Some(made) = create_beside(path, cache_bytes)? {
            return Ok(made);
        }
    } else {
        remove_creations_cut_short(path);
    }
    // Opened only once the directory's entries are durable: after a rename
    // into it (a compaction's) that a crash could still take back, nothing
    // is written to the renamed file. (A sync that works after one that
    // failed is trusted: that is as good as the file system's report of
    // its errors.)
    files::sync_dir(files::dir_of(path))?;
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let backend = DeferredSync::on_file(file)?;
    let inner = Arc::clone(&backend.inner);
    let database = Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(backend)?;
    Ok((database, inner))
}

/// `std::fs::hard_link`; tests make it fail as a file system without hard
/// links does.
fn hard_link(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(test)]
    if tests::NO_HARD_LINKS.get() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no hard links (a test's)",
        ));
    }
    std::fs::hard_link(from, to)
}

/// The name of a database being made beside `path` by process `pid`.
fn beside(path: &Path, pid: u32) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".creating.{pid}"));
    name.into()
}

/// Makes a new database beside `path` and links it there; `None` when
/// another process linked one first.
fn create_beside(
    path: &Path,
    cache_bytes: usize,
) -> Result<Option<(Database, Arc<Inner>)>, DatabaseError> {
    let made_at = beside(path, std::process::id());
    // Left by a process of the same number that was cut short.
    files::remove_if_present(&made_at)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&made_at)?;
    let backend = DeferredSync::on_file(file)?;
    let inner = Arc::clone(&backend.inner);
    let made = Database::builder()
        .set_cache_size(cache_bytes)
        .create_with_backend(backend);
    let linked = made.and_then(|database| {
        match hard_link(&made_at, path) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => {
                // A file system without hard links (FAT, some FUSE): a
                // rename, without the check against a second server.
                tracing::debug!(%error, "no hard link: the new database is renamed instead");
                std::fs::rename(&made_at, path)?;
            }
            linked => linked?,
        }
        Ok(database)
    });
    files::remove_if_present(&made_at)?;
    match linked {
        Ok(database) => {
            files::sync_dir(files::dir_of(path))?;
            Ok(Some((database, inner)))
        }
        Err(DatabaseError::Storage(redb::StorageError::Io(error)))
            if error.kind() == io::ErrorKind::AlreadyExists =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Removes what creations cut short left beside `path` (best effort: a
/// file that stays only takes room).
fn remove_creations_cut_short(path: &Path) {
    let Some(name) = path.file_name() else {
        return;
    };
    let mut prefix = name.to_owned();
    prefix.push(".creating.");
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(files::dir_of(path)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Runs `commit` (a durable commit of a database on this backend, on this
/// thread) without waiting for its syncs. A sync of the deferred commit
/// before it that is not done yet is waited for first, so that at most one
/// is queued. Should the commit fail, what it queued is never written (the
/// file keeps the commit before it, which the write-ahead log continues),
/// and every later call of the backend fails, so the database is reopened.
/// (The writer uses [`deferring_tracked`], which tells when the syncs are
/// done.)
#[cfg(test)]
pub fn deferring<T, E>(commit: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    deferring_tracked(commit).map(|(committed, _)| committed)
}

/// `deferring`, and what tells when the commit's syncs are done (none
/// when it asked for no sync).
pub fn deferring_tracked<T, E>(
    commit: impl FnOnce() -> Result<T, E>,
) -> Result<(T, Option<Deferred>), E> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFERRING.set(0);
            USED.take();
        }
    }
    let this = COMMITS.fetch_add(1, Ordering::Relaxed) + 1;
    DEFERRING.set(this);
    WRITTEN.set(0);
    let _reset = Reset;
    let committed = commit();
    let used = USED.take();
    match committed {
        Ok(committed) => Ok((
            committed,
            used.map(|inner| Deferred {
                inner,
                commit: this,
                written: WRITTEN.get(),
            }),
        )),
        Err(error) => {
            if let Some(queue) = used
                && let Ok(mut state) = queue.lock()
            {
                if state.failed.is_none() {
                    state.failed = Some(Failure::other("a deferred commit failed"));
                }
                queue.changed.notify_all();
            }
            Err(error)
        }
    }
}

/// A deferred commit's syncs, queued: [`Deferred::synced`] says when they
/// are done.
#[derive(Debug)]
pub struct Deferred {
    inner: Arc<Inner>,
    commit: u64,
    written: u64,
}

impl Deferred {
    /// The bytes the commit wrote to the file (queued or not): the pages
    /// dirtied since the durable commit before it, and its header.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether the commit's syncs are done: none of them is left in the
    /// queue (an operation leaves it once done), and the queue has not
    /// failed (then they never will be).
    pub fn synced(&self) -> bool {
        let Ok(state) = self.inner.lock() else {
            return false;
        };
        state.failed.is_none()
            && !state
                .queue
                .iter()
                .any(|op| matches!(op, Op::Sync(commit, _) if *commit == self.commit))
    }
}

#[derive(Debug)]
pub struct DeferredSync {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The file (redb's `FileBackend`; a recording one in a test).
    file: Box<dyn StorageBackend>,
    state: Mutex<State>,
    /// Signalled when an operation is queued, done or failed, and on close.
    changed: Condvar,
    /// Whether the queue holds anything: reads look in it only then.
    queued: AtomicBool,
    /// The file again (a second descriptor of it), to start its write-back
    /// in parts before a deferred sync: none where the system cannot
    /// (`write_back_descriptor`), and in tests of other backends.
    write_back: Option<File>,
    /// Makes every write-back fail, as a disk's error would.
    #[cfg(test)]
    fail_write_back: AtomicBool,
    /// The ranges written back, in order.
    #[cfg(test)]
    written_back: Mutex<Vec<(u64, u64)>>,
    /// Held by a test to hold the thread back.
    #[cfg(test)]
    paused: Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// What redb asked for and the thread has not done yet, in order. An
    /// operation leaves the queue only once it is done.
    queue: VecDeque<Op>,
    /// The first failure of the thread (or of a deferred commit): every
    /// later call fails with it, and nothing queued is written.
    failed: Option<Failure>,
    /// The thread is doing an operation, without the lock. A failure
    /// marked meanwhile (by a deferred commit) does not stop that one.
    busy: bool,
    closing: bool,
    /// The bytes of the writes in `queue`. The writer's thread waits for
    /// this to leave room under [`QUEUE_BYTES`] (or for an empty queue);
    /// other threads' writes, bounded by redb's page cache, may pass it.
    queued_bytes: usize,
    /// What was written since the last sync was asked for, in bytes per
    /// 256 KiB of the file (by its number): the parts the next deferred
    /// sync writes back first. Bounded by the file's largest length since.
    written: BTreeMap<u64, u64>,
}

/// A failure kept to be answered again: its OS error number, so that a
/// full disk is still told apart from other errors (`codec::storage_error`).
#[derive(Debug, Clone)]
struct Failure {
    kind: io::ErrorKind,
    os: Option<i32>,
    message: String,
}

impl Failure {
    fn of(error: &io::Error) -> Failure {
        Failure {
            kind: error.kind(),
            os: error.raw_os_error(),
            message: error.to_string(),
        }
    }

    fn other(message: &str) -> Failure {
        Failure {
            kind: io::ErrorKind::Other,
            os: None,
            message: message.to_owned(),
        }
    }

    fn error(&self) -> io::Error {
        match self.os {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(
                self.kind,
                format!("an earlier deferred write or sync failed: {}", self.message),
            ),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Arc<[u8]>),
    SetLen(u64),
    /// A sync, the deferred commit that asked for it (0: none), and what
    /// was written before it ([`State::written`] when it was queued).
    Sync(u64, Arc<BTreeMap<u64, u64>>),
}

impl DeferredSync {
    /// The backend on `file`, whose deferred syncs write back in parts.
    fn on_file(file: File) -> Result<DeferredSync, DatabaseError> {
        let write_back = write_back_descriptor(&file)?;
        Ok(DeferredSync::with(FileBackend::new(file)?, write_back)?)
    }

    #[cfg(test)]
    fn new(file: impl StorageBackend) -> io::Result<DeferredSync> {
        DeferredSync::with(file, None)
    }

    fn with(file: impl StorageBackend, write_back: Option<File>) -> io::Result<DeferredSync> {
        let inner = Arc::new(Inner {
            file: Box::new(file),
            state: Mutex::default(),
            changed: Condvar::new(),
            queued: AtomicBool::new(false),
            write_back,
            #[cfg(test)]
            fail_write_back: AtomicBool::new(false),
            #[cfg(test)]
            written_back: Mutex::default(),
            #[cfg(test)]
            paused: Mutex::default(),
        });
        let thread = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("kvs-disk-sync".into())
            .spawn(move || thread.run())?;
        Ok(DeferredSync { inner })
    }
}

impl Inner {
    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("the disk database's sync queue is poisoned"))
    }

    /// The thread: does the queued operations in order until closed.
    fn run(&self) {
        let Ok(mut state) = self.lock() else { return };
        loop {
            while (state.queue.is_empty() || state.failed.is_some()) && !state.closing {
                state = match self.changed.wait(state) {
                    Ok(state) => state,
                    Err(_) => return,
                };
            }
            let Some(op) = state.queue.front().cloned() else {
                return;
            };
            if state.failed.is_some() {
                return;
            }
            state.busy = true;
            drop(state);
            #[cfg(test)]
            drop(self.paused.lock());
            let done = match &op {
                Op::Write(offset, data) => self.file.write(*offset, data),
                Op::SetLen(len) => self.file.set_len(*len),
                Op::Sync(_, written) => self
                    .write_back(written)
                    .and_then(|()| self.file.sync_data()),
            };
            state = match self.lock() {
                Ok(state) => state,
                Err(_) => return,
            };
            state.busy = false;
            match done {
                Ok(()) => {
                    if let Some(Op::Write(_, data)) = state.queue.pop_front() {
                        state.queued_bytes -= data.len();
                    }
                    if state.queue.is_empty() {
                        self.queued.store(false, Ordering::Release);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "a deferred write or sync of the disk database failed");
                    // What is queued stays, unwritten, so that reads still
                    // find it; nothing after the failure reaches the file.
                    state.failed = Some(Failure::of(&error));
                }
            }
            self.changed.notify_all();
        }
    }

    /// The thread's failure, as an error of this call.
    fn check(state: &State) -> io::Result<()> {
        match &state.failed {
            Some(failure) => Err(failure.error()),
            None => Ok(()),
        }
    }

    /// Writes back the parts of the file in `written`, a group of them of
    /// about [`WRITE_BACK_PART`] bytes written at a time, waiting for each.
    fn write_back(&self, written: &BTreeMap<u64, u64>) -> io::Result<()> {
        let Some(file) = &self.write_back else {
            return Ok(());
        };
        #[cfg(test)]
        if self.fail_write_back.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(5));
        }
        for (offset, len) in write_back_groups(written) {
            write_back_range(file, offset, len)?;
            #[cfg(test)]
            self.written_back
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .push((offset, len));
        }
        Ok(())
    }

    fn push(&self, state: &mut State, op: Op) {
        if let Op::Write(_, data) = &op {
            state.queued_bytes += data.len();
        }
        state.queue.push_back(op);
        self.queued.store(true, Ordering::Release);
        self.changed.notify_all();
    }

    /// Waits until the queue is done (or failed) and the thread is not in
    /// the middle of an operation: after a failure, the one it was doing
    /// must not reach the file once it is closed and opened again.
    fn drain<'a>(&self, state: MutexGuard<'a, State>) -> io::Result<MutexGuard<'a, State>> {
        self.wait_while(state, |state| {
            (!state.queue.is_empty() && state.failed.is_none()) || state.busy
        })
    }

    /// Waits until a write of `len` bytes has room in the queue (see
    /// [`QUEUE_BYTES`]), or the queue is empty (the write then goes to the
    /// file), or failed.
    fn room_for<'a>(
        &self,
        state: MutexGuard<'a, State>,
        len: usize,
    ) -> io::Result<MutexGuard<'a, State>> {
        self.wait_while(state, |state| {
            !state.queue.is_empty()
                && state.queued_bytes.saturating_add(len) > QUEUE_BYTES
                && state.failed.is_none()
        })
    }

    /// Waits while `waiting` says so of the state, then answers the
    /// thread's failure if any.
    fn wait_while<'a>(
        &self,
        state: MutexGuard<'a, State>,
        waiting: impl FnMut(&mut State) -> bool,
    ) -> io::Result<MutexGuard<'a, State>> {
        let state = self
            .changed
            .wait_while(state, waiting)
            .map_err(|_| io::Error::other("the disk database's sync queue is poisoned"))?;
        Self::check(&state)?;
        Ok(state)
    }

    /// Reads what the file holds at `offset` into `out`, zeros beyond its
    /// end. The thread may be shortening the file meanwhile (a queued
    /// `set_len`): a read cut short is tried again at the new length.
    fn read_file(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let end = offset + out.len() as u64;
        let mut tries = 0;
        loop {
            let in_file = self.file.len()?.clamp(offset, end);
            let (head, tail) = out.split_at_mut((in_file - offset) as usize);
            tail.fill(0);
            match self.file.read(offset, head) {
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof && tries < 3 => {
                    tries += 1;
                }
                read => return read,
            }
        }
    }

    /// The file's length as the queued operations leave it.
    fn len(&self, state: &State) -> io::Result<u64> {
        let queued = state.queue.iter().rev().find_map(|op| match op {
            Op::SetLen(len) => Some(*len),
            _ => None,
        });
        match queued {
            Some(len) => Ok(len),
            None => self.file.len(),
        }
    }
}

impl StorageBackend for DeferredSync {
    fn len(&self) -> Result<u64, io::Error> {
        let state = self.inner.lock()?;
        self.inner.len(&state)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        if !self.inner.queued.load(Ordering::Acquire) {
            return self.inner.file.read(offset, out);
        }
        // The file, then what is queued over it, in order. The thread may
        // be doing the first queued operation meanwhile: doing it again
        // over the file gives the same bytes.
        let state = self.inner.lock()?;
        let end = offset
            .checked_add(out.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read beyond u64"))?;
        if end > self.inner.len(&state)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read beyond the disk database's end",
            ));
        }
        self.inner.read_file(offset, out)?;
        for op in &state.queue {
            match op {
                Op::Write(at, data) => {
                    let from = offset.max(*at);
                    let to = end.min(at + data.len() as u64);
                    if from < to {
                        out[(from - offset) as usize..(to - offset) as usize]
                            .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
                    }
                }
                // What is cut off reads as zeros if the file grows again.
                Op::SetLen(len) if *len < end => {
                    out[((*len).max(offset) - offset) as usize..].fill(0)
                }
                Op::SetLen(_) | Op::Sync(..) => {}
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.inner.lock()?;
        Inner::check(&state)?;
        if state.queue.is_empty() {
            return self.inner.file.set_len(len);
        }
        self.inner.push(&mut state, Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.inner.lock()?;
        Inner::check(&state)?;
        let commit = DEFERRING.get();
        if commit == 0 {
            // Nothing is queued once it is drained: only this thread (the
            // writer's) queues anything.
            let mut state = self.inner.drain(state)?;
            state.written.clear();
            drop(state);
            return self.inner.file.sync_data();
        }
        let earlier = |op: &Op| matches!(op, Op::Sync(other, _) if *other != commit);
        if state.queue.iter().any(earlier) {
            state = self.inner.drain(state)?;
        }
        // What a write queued after this sync writes is the next one's.
        let written = Arc::new(std::mem::take(&mut state.written));
        self.inner.push(&mut state, Op::Sync(commit, written));
        USED.set(Some(Arc::clone(&self.inner)));
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.inner.lock()?;
        Inner::check(&state)?;
        if BOUNDED.get() {
            state = self.inner.room_for(state, data.len())?;
        }
        if self.inner.write_back.is_some() {
            note_written(&mut state.written, offset, data.len() as u64);
        }
        if DEFERRING.get() != 0 {
            WRITTEN.set(WRITTEN.get() + data.len() as u64);
        }
        if state.queue.is_empty() {
            return self.inner.file.write(offset, data);
        }
        self.inner.push(&mut state, Op::Write(offset, data.into()));
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        let mut state = self.inner.lock()?;
        state.closing = true;
        self.inner.changed.notify_all();
        let drained = self.inner.drain(state).map(drop);
        self.inner.file.close()?;
        drained
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.file.query_lock_range(start, end)
    }
}

impl Drop for DeferredSync {
    /// The thread ends once the queue is done (redb closes the backend
    /// before it drops it, so it is then empty or failed).
    fn drop(&mut self) {
        if let Ok(mut state) = self.inner.lock() {
            state.closing = true;
            self.inner.changed.notify_all();
        }
    }
}

/// The most bytes of writes the queue holds behind a deferred sync. Writes
/// of small values never came near it (under 64 KiB, measured at 64
/// connections); 1 MiB values, written one after another while the thread
/// synced a checkpoint, queued 16 MiB, and the server's memory grew by as
/// much (`tests/memory.rs`).
const QUEUE_BYTES: usize = 4 << 20;

/// The bytes a deferred sync's write-back starts at a time (about).
const WRITE_BACK_PART: u64 = 256 << 10;

/// Counts `len` bytes written at `offset` in the parts of
/// [`WRITE_BACK_PART`] bytes they fall in.
fn note_written(written: &mut BTreeMap<u64, u64>, offset: u64, len: u64) {
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let part = at / WRITE_BACK_PART;
        let part_end = (part + 1).saturating_mul(WRITE_BACK_PART).min(end);
        *written.entry(part).or_default() += part_end - at;
        at = part_end;
    }
}

/// The ranges (offset, length) to write back for `written`: neighbouring
/// parts in the file's order, joined until they hold
/// [`WRITE_BACK_PART`] bytes written, so that a store whose writes are
/// spread thin over a large file makes few calls, and one written densely
/// makes one per part.
fn write_back_groups(written: &BTreeMap<u64, u64>) -> Vec<(u64, u64)> {
    // Parts are numbered from offsets, so `first * WRITE_BACK_PART` holds;
    // the length of a range reaching 2^64 saturates.
    let range = |first: u64, last: u64| {
        (
            first * WRITE_BACK_PART,
            (last - first + 1).saturating_mul(WRITE_BACK_PART),
        )
    };
    let mut groups = Vec::new();
    let mut group: Option<(u64, u64, u64)> = None; // first part, last part, bytes
    for (&part, &bytes) in written {
        let (first, _, held) = group.unwrap_or((part, part, 0));
        group = Some((first, part, held + bytes));
        if held + bytes >= WRITE_BACK_PART {
            groups.push(range(first, part));
            group = None;
        }
    }
    if let Some((first, last, _)) = group {
        groups.push(range(first, last));
    }
    groups
}

/// A second descriptor of `file` to write it back in parts, if this system
/// can: asked with no flags, `sync_file_range` waits for nothing and leaves
/// the file's error state alone, so it only says whether the call works
/// here (not on a pipe, nor under a sandbox that forbids it).
#[cfg(target_os = "linux")]
fn write_back_descriptor(file: &File) -> io::Result<Option<File>> {
    let copy = file.try_clone()?;
    match sync_file_range(&copy, 0, 0, 0) {
        Ok(()) => Ok(Some(copy)),
        Err(error) => {
            tracing::debug!(%error, "no sync_file_range: deferred syncs are not written back in parts");
            Ok(None)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn write_back_descriptor(_file: &File) -> io::Result<Option<File>> {
    Ok(None)
}

/// Starts the write-back of the file's dirty pages in `offset..offset +
/// len` and waits for it (not a sync: the disk may still hold them in its
/// cache). Every error fails: the wait has taken the file's write-back
/// error, which the sync after it would not report.
#[cfg(target_os = "linux")]
fn write_back_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    sync_file_range(file, offset, len, flags)
}

#[cfg(not(target_os = "linux"))]
fn write_back_range(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

/// `sync_file_range(2)`; a length of 0 is to the file's end.
#[cfg(target_os = "linux")]
fn sync_file_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let len = i64::try_from(len).unwrap_or(0);
    // SAFETY: a plain system call on a descriptor that `file` owns and keeps
    // open for the call; it reads and writes no memory of this process.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod power_loss;

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// The backend as the server makes it, writing back in parts.
    fn backend(file: File) -> DeferredSync {
        DeferredSync::on_file(file).unwrap()
    }

    fn read(backend: &DeferredSync, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        backend.read(offset, &mut out).unwrap();
        out
    }

    fn on_disk(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    /// Runs `call` on another thread while the sync thread is held by
    /// `paused`: it must still be waiting after 200 ms (`what`), and answer
    /// true once the thread is let go.
    fn waits_for_the_thread(
        paused: std::sync::MutexGuard<'_, ()>,
        what: &str,
        call: impl FnOnce() -> bool + Send + 'static,
    ) {
        let (done, answered) = mpsc::channel();
        std::thread::spawn(move || done.send(call()).unwrap());
        assert!(
            answered.recv_timeout(Duration::from_millis(200)).is_err(),
            "{what}"
        );
        drop(paused);
        assert!(answered.recv_timeout(Duration::from_secs(10)).unwrap());
    }

    /// Writes after a deferred sync wait in the queue, in order, while reads
    /// find them; the file gets them once the thread goes on, and a sync
    /// outside `deferring` waits for that.
    #[test]
    fn what_follows_a_deferred_sync_is_read_from_the_queue_and_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let backend = Arc::new(backend(File::create_new(&path).unwrap()));
        backend.set_len(8).unwrap();
        backend.write(0, b"abcdefgh").unwrap();

        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| {
            backend.sync_data()?;
            backend.write(2, b"XY")?;
            backend.set_len(4)?;
            backend.set_len(12)?;
            backend.write(9, b"Z")?;
            backend.write(3, b"W")?;
            backend.sync_data()
        })
        .unwrap();

        // Nothing after the sync is in the file yet; reads see all of it.
        assert_eq!(on_disk(&path), b"abcdefgh");
        assert_eq!(backend.len().unwrap(), 12);
        assert_eq!(read(&backend, 0, 12), b"abXW\0\0\0\0\0Z\0\0");
        assert_eq!(read(&backend, 8, 4), b"\0Z\0\0");
        assert!(backend.read(10, &mut [0; 4]).is_err(), "beyond the end");

        let waiting = Arc::clone(&backend);
        waits_for_the_thread(
            paused,
            "a sync outside `deferring` waits for the queue",
            move || waiting.sync_data().is_ok(),
        );
        assert_eq!(on_disk(&path), b"abXW\0\0\0\0\0Z\0\0");
        assert_eq!(read(&backend, 0, 12), b"abXW\0\0\0\0\0Z\0\0");
        assert!(!backend.inner.queued.load(Ordering::Acquire));
    }

    /// When the thread fails, nothing queued after the failure reaches the
    /// file, reads still find it, and every later call fails.
    #[test]
    fn a_failed_deferred_write_stops_the_queue_and_fails_every_later_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"abcd").unwrap();
        // Read-only: every write fails, the sync does not.
        let backend = backend(File::open(&path).unwrap());

        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| backend.sync_data()).unwrap();
        backend.write(0, b"X").unwrap();
        backend.write(1, b"Y").unwrap();
        drop(paused);
        let failed = within_10_s(|| backend.sync_data().is_err());
        assert!(failed, "the sync fails once the queued write did");
        let error = backend.write(2, b"Z").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(9), "EBADF, as the thread had it");
        assert!(backend.set_len(2).is_err());
        assert!(deferring(|| backend.sync_data()).is_err());
        assert_eq!(read(&backend, 0, 4), b"XYcd");
        assert_eq!(on_disk(&path), b"abcd");
        assert!(backend.close().is_err(), "close reports the failure");
    }

    /// Reads while many writes of different sizes, and changes of length,
    /// are queued give what doing them in order gives (a model), and so
    /// does the file once they are done.
    #[test]
    fn reads_of_many_queued_writes_agree_with_doing_them_in_order() {
        let (_dir, path, backend) = on_a_new_file();
        let mut model = vec![5u8; 64 << 10];
        backend.set_len(model.len() as u64).unwrap();
        backend.write(0, &model).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| -> io::Result<()> {
            for round in 0..400u64 {
                if round % 50 == 49 {
                    let len = (48 << 10) + next(32 << 10);
                    backend.set_len(len)?;
                    model.resize(len as usize, 0);
                    continue;
                }
                let size = 1usize << next(14);
                let at = next(model.len() as u64 - size as u64);
                let data = vec![round as u8; size];
                backend.write(at, &data)?;
                model[at as usize..at as usize + size].copy_from_slice(&data);
                if round % 100 == 0 {
                    backend.sync_data()?;
                }
                let len = 1 + next(9000) as usize;
                let from = next(model.len() as u64 - len as u64) as usize;
                assert_eq!(read(&backend, from as u64, len), model[from..from + len]);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(read(&backend, 0, model.len()), model);
        drop(paused);
        backend.sync_data().unwrap();
        assert_eq!(on_disk(&path), model);
    }

    /// A deferred commit waits for the sync of the one before it when that
    /// is not done yet: at most one is queued.
    #[test]
    fn a_deferred_commit_waits_for_the_one_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(backend(File::create_new(dir.path().join("db")).unwrap()));
        backend.set_len(4).unwrap();
        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| backend.sync_data()).unwrap();
        let next = Arc::clone(&backend);
        waits_for_the_thread(
            paused,
            "the second deferred sync waits for the first",
            move || deferring(|| next.sync_data()).is_ok(),
        );
    }

    /// The writes queued behind a deferred sync hold at most
    /// [`QUEUE_BYTES`] of a bounded thread's: the write that would pass it
    /// waits for the thread to make room, and one larger than the bound
    /// waits until the queue is empty and goes to the file; another
    /// thread's write does not wait. Every write reaches the file, in order.
    #[test]
    fn writes_behind_a_deferred_sync_wait_for_room_past_the_bound() {
        bound_this_thread();
        let (_dir, path, backend) = on_a_new_file();
        let backend = Arc::new(backend);
        let quarter = QUEUE_BYTES / 4;
        backend.set_len(2 * QUEUE_BYTES as u64 + 2).unwrap();
        let mut model = vec![0u8; 2 * QUEUE_BYTES + 2];
        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| backend.sync_data()).unwrap();
        for n in 0..4 {
            let at = n * quarter;
            model[at..at + quarter].fill(n as u8 + 1);
            backend.write(at as u64, &model[at..at + quarter]).unwrap();
        }
        assert_eq!(backend.inner.lock().unwrap().queued_bytes, QUEUE_BYTES);
        let next = Arc::clone(&backend);
        waits_for_the_thread(paused, "the write past the bound waits", move || {
            bound_this_thread();
            next.write(QUEUE_BYTES as u64, b"Z").is_ok()
        });
        model[QUEUE_BYTES] = b'Z';
        assert!(backend.inner.lock().unwrap().queued_bytes <= QUEUE_BYTES);

        // Larger than the bound: it waits for the queue to be done, then
        // the file has it at once.
        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| backend.sync_data()).unwrap();
        backend.write(0, b"first").unwrap();
        model[..5].copy_from_slice(b"first");
        let large = vec![7u8; QUEUE_BYTES + 1];
        model[QUEUE_BYTES + 1..].copy_from_slice(&large);
        let next = Arc::clone(&backend);
        waits_for_the_thread(paused, "a write larger than the bound waits", move || {
            bound_this_thread();
            next.write(QUEUE_BYTES as u64 + 1, &large).is_ok()
        });
        assert!(!backend.inner.queued.load(Ordering::Acquire));
        assert_eq!(on_disk(&path), model);
        assert_eq!(read(&backend, 0, model.len()), model);

        // Another thread's write (redb writing pages out from a read) is
        // queued at once past the bound: a read never waits for a sync.
        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| backend.sync_data()).unwrap();
        backend.write(0, &model[..QUEUE_BYTES]).unwrap();
        let reader = Arc::clone(&backend);
        let written = std::thread::spawn(move || reader.write(1, b"R").is_ok());
        assert!(written.join().unwrap(), "queued without waiting");
        assert_eq!(backend.inner.lock().unwrap().queued_bytes, QUEUE_BYTES + 1);
        model[1] = b'R';
        drop(paused);
        backend.sync_data().unwrap();
        assert_eq!(on_disk(&path), model);
    }

    /// A deferred commit's handle says its syncs are done only once the
    /// thread has done them (not while a write queued after them waits),
    /// and never once the queue failed.
    #[test]
    fn a_deferred_commit_is_synced_once_the_thread_did_its_syncs() {
        let (dir, path, backend) = on_a_new_file();
        backend.set_len(4).unwrap();
        let paused = backend.inner.paused.lock().unwrap();
        let ((), syncs) = deferring_tracked(|| {
            backend.write(0, b"ab")?;
            backend.sync_data()?;
            backend.write(2, b"c")?;
            backend.sync_data()
        })
        .unwrap();
        let syncs = syncs.expect("the commit asked for a sync");
        assert_eq!(syncs.written(), 3, "the bytes it wrote, queued or not");
        std::thread::sleep(Duration::from_millis(50));
        assert!(!syncs.synced(), "the thread is held back");
        drop(paused);
        let synced = within_10_s(|| syncs.synced());
        assert!(synced, "the syncs were done");
        assert_eq!(on_disk(&path), b"abc\0");

        // A commit whose queue fails is never synced.
        let read_only = backend_on_read_only(dir.path());
        let paused = read_only.inner.paused.lock().unwrap();
        let ((), syncs) = deferring_tracked(|| {
            read_only.sync_data()?;
            read_only.write(0, b"X")?;
            read_only.sync_data()
        })
        .unwrap();
        drop(paused);
        let failed = within_10_s(|| read_only.sync_data().is_err());
        assert!(failed, "the queued write failed");
        assert!(!syncs.expect("a sync was asked for").synced());
    }

    /// A deferred commit counts the bytes it wrote, and none written by
    /// this thread outside it, before or after (the writer's checkpoints
    /// are paced by it: `wal::Wal::deferred`).
    #[test]
    fn a_deferred_commit_counts_only_its_own_writes() {
        let (_dir, _path, backend) = on_a_new_file();
        backend.set_len(64).unwrap();
        backend.write(0, &[1; 32]).unwrap();
        let ((), first) = deferring_tracked(|| {
            backend.write(0, &[2; 8])?;
            backend.write(16, &[3; 4])?;
            backend.sync_data()
        })
        .unwrap();
        backend.write(0, &[4; 16]).unwrap();
        let ((), second) = deferring_tracked(|| backend.sync_data()).unwrap();
        assert_eq!(first.expect("a sync was asked for").written(), 12);
        assert_eq!(second.expect("a sync was asked for").written(), 0);
    }

    /// A backend on a read-only file (`dir/ro`, four bytes): its writes
    /// fail, its syncs do not.
    fn backend_on_read_only(dir: &Path) -> DeferredSync {
        let path = dir.join("ro");
        std::fs::write(&path, b"abcd").unwrap();
        backend(File::open(&path).unwrap())
    }

    /// What is written is counted in the parts it falls in, and the parts
    /// are written back in groups of about `WRITE_BACK_PART` bytes written:
    /// one per part where every part is full, several parts at once where
    /// they hold little.
    #[test]
    fn written_parts_are_written_back_in_groups_of_a_part_s_bytes() {
        const P: u64 = WRITE_BACK_PART;
        let mut written = BTreeMap::new();
        note_written(&mut written, P - 100, 300);
        assert_eq!(written, BTreeMap::from([(0, 100), (1, 200)]));
        note_written(&mut written, 5 * P, 3 * P);
        note_written(&mut written, 9 * P, 10);
        assert_eq!(
            written,
            BTreeMap::from([(0, 100), (1, 200), (5, P), (6, P), (7, P), (9, 10)])
        );
        // Parts 0 to 5 reach a part's bytes together; 6 and 7 alone; 9 is
        // what is left.
        assert_eq!(
            write_back_groups(&written),
            [(0, 6 * P), (6 * P, P), (7 * P, P), (9 * P, P)]
        );
        let mut sparse = BTreeMap::new();
        for page in 0..1000 {
            note_written(&mut sparse, page * 7 * P, 4096);
        }
        let groups = write_back_groups(&sparse);
        assert_eq!(groups.len(), 1000 / 64 + 1, "64 pages of 4 KiB a call");
        assert!(groups.windows(2).all(|two| two[0].0 + two[0].1 <= two[1].0));
        assert!(write_back_groups(&BTreeMap::new()).is_empty());
        // From the first offset to the last: no overflow, the length
        // saturates.
        let mut ends = BTreeMap::new();
        note_written(&mut ends, 0, 1);
        note_written(&mut ends, u64::MAX - 10, 10);
        assert_eq!(write_back_groups(&ends), [(0, u64::MAX)]);
    }

    /// Whether `done` says so within 10 s (asked every 10 ms).
    fn within_10_s(mut done: impl FnMut() -> bool) -> bool {
        (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            done()
        })
    }

    /// The backend on a new file, `db` in a new directory.
    fn on_a_new_file() -> (tempfile::TempDir, std::path::PathBuf, DeferredSync) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let backend = backend(File::create_new(&path).unwrap());
        (dir, path, backend)
    }

    /// Waits until the thread has done everything queued (without a sync
    /// of its own, which would clear what is counted).
    fn settled(backend: &DeferredSync) {
        for _ in 0..1000 {
            if !backend.inner.queued.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the queue was not done in 10 s");
    }

    /// A deferred sync writes back what was written before it, a part at a
    /// time, then syncs: the file holds it, and nothing is left counted.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_deferred_sync_writes_back_what_was_written_in_parts_and_syncs() {
        const P: u64 = WRITE_BACK_PART;
        let (_dir, path, backend) = on_a_new_file();
        assert!(backend.inner.write_back.is_some(), "Linux writes back");
        let data: Vec<u8> = (0..3 * P).map(|i| (i % 251) as u8).collect();
        backend.set_len(data.len() as u64).unwrap();
        backend.write(0, &data).unwrap();
        assert_eq!(backend.inner.lock().unwrap().written.len(), 3);
        deferring(|| backend.sync_data()).unwrap();
        assert!(backend.inner.lock().unwrap().written.is_empty());
        settled(&backend);
        assert_eq!(
            *backend.inner.written_back.lock().unwrap(),
            [(0, P), (P, P), (2 * P, P)]
        );
        assert_eq!(on_disk(&path), data);
    }

    /// What a write queued behind a deferred sync writes is not that
    /// sync's to write back (it is not in the file yet) but the next one's.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_write_queued_after_a_deferred_sync_is_written_back_by_the_next() {
        const P: u64 = WRITE_BACK_PART;
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(File::create_new(dir.path().join("db")).unwrap());
        backend.set_len(6 * P).unwrap();
        backend.write(0, b"early").unwrap();
        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| {
            backend.sync_data()?;
            backend.write(5 * P, b"late")
        })
        .unwrap();
        drop(paused);
        settled(&backend);
        assert_eq!(*backend.inner.written_back.lock().unwrap(), [(0, P)]);
        assert_eq!(
            backend.inner.lock().unwrap().written,
            BTreeMap::from([(5, 4)])
        );
        deferring(|| backend.sync_data()).unwrap();
        settled(&backend);
        assert_eq!(
            *backend.inner.written_back.lock().unwrap(),
            [(0, P), (5 * P, P)]
        );
    }

    /// A write-back that fails is the sync's failure (it took the file's
    /// error, which the sync after it would not report): nothing queued
    /// after it is written, and every later call fails.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_back_fails_the_deferred_sync_and_every_later_call() {
        let (_dir, path, backend) = on_a_new_file();
        backend.set_len(4).unwrap();
        backend.write(0, b"abcd").unwrap();
        backend.sync_data().unwrap();
        backend.write(0, b"e").unwrap();
        backend.inner.fail_write_back.store(true, Ordering::Relaxed);
        let paused = backend.inner.paused.lock().unwrap();
        deferring(|| {
            backend.sync_data()?;
            backend.write(1, b"X")
        })
        .unwrap();
        drop(paused);
        let failed = within_10_s(|| backend.sync_data().is_err());
        assert!(failed, "the sync fails once its write-back did");
        let error = backend.write(2, b"Z").unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(5),
            "EIO, as the write-back had it"
        );
        assert_eq!(read(&backend, 0, 4), b"eXcd", "reads still find the queue");
        assert_eq!(
            on_disk(&path),
            b"ebcd",
            "the write queued after it is not written"
        );
    }

    /// A deferred commit that fails after it queued its header leaves the
    /// file as it was: nothing it queued is written, and every later call
    /// fails (the database is then reopened).
    #[test]
    fn a_failed_deferred_commit_writes_nothing_it_queued() {
        let (_dir, path, backend) = on_a_new_file();
        backend.set_len(4).unwrap();
        backend.write(0, b"abcd").unwrap();
        let paused = backend.inner.paused.lock().unwrap();
        let failed: io::Result<()> = deferring(|| {
            backend.sync_data()?;
            backend.write(0, b"XY")?;
            backend.sync_data()?;
            Err(io::Error::other("the commit's last step failed"))
        });
        assert!(failed.is_err());
        drop(paused);
        assert!(backend.sync_data().is_err());
        assert!(backend.write(0, b"Z").is_err());
        assert_eq!(on_disk(&path), b"abcd");
    }

    /// Closing after a failed deferred commit waits for the operation the
    /// thread was in the middle of: the database is opened again on the
    /// file next, and a write landing after that would damage it.
    #[test]
    fn a_close_after_a_failed_deferred_commit_waits_for_the_operation_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(backend(File::create_new(dir.path().join("db")).unwrap()));
        backend.set_len(4).unwrap();
        let paused = backend.inner.paused.lock().unwrap();
        let failed: io::Result<()> = deferring(|| {
            backend.sync_data()?;
            // The thread takes the sync, and waits for `paused`.
            while !backend.inner.lock().unwrap().busy {
                std::thread::sleep(Duration::from_millis(1));
            }
            backend.write(0, b"XY")?;
            Err(io::Error::other("the commit's last step failed"))
        });
        assert!(failed.is_err());
        let closing = Arc::clone(&backend);
        waits_for_the_thread(
            paused,
            "the close waits for the sync in progress",
            move || closing.close().is_err(),
        );
    }

    /// A crash while a deferred commit's header is still queued (its pages
    /// are in the file) finds the commit before it, without redb's full
    /// repair; once the queue is done, it finds the deferred commit.
    #[test]
    fn a_crash_before_the_queue_is_done_finds_the_commit_before_it() {
        use redb::{ReadableDatabase, TableDefinition};
        const TABLE: TableDefinition<&str, u64> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let (db, queue) =
            create_with_queue(&path, crate::store::redb_engine::DEFAULT_CACHE_BYTES).unwrap();
        let put = |value: u64, defer: bool| {
            let mut txn = db.begin_write().unwrap();
            txn.set_quick_repair(true);
            txn.open_table(TABLE).unwrap().insert("k", value).unwrap();
            if defer {
                deferring(|| txn.commit()).unwrap();
            } else {
                txn.commit().unwrap();
            }
        };
        // The value a copy of the file holds, and whether opening it needed
        // the full repair.
        let crash_copy = |name: &str| {
            let copy = dir.path().join(name);
            std::fs::copy(&path, &copy).unwrap();
            let repaired = Arc::new(AtomicBool::new(false));
            let seen = Arc::clone(&repaired);
            let db = Database::builder()
                .set_repair_callback(move |_| seen.store(true, Ordering::SeqCst))
                .open(&copy)
                .unwrap();
            let read = db.begin_read().unwrap();
            let value = read.open_table(TABLE).unwrap().get("k").unwrap().unwrap();
            (value.value(), repaired.load(Ordering::SeqCst))
        };
        put(1, false);
        let paused = queue.paused.lock().unwrap();
        put(2, true);
        assert!(queue.queued.load(Ordering::Acquire), "the header waits");
        assert_eq!(crash_copy("queued.redb"), (1, false));
        drop(paused);
        while queue.queued.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(crash_copy("done.redb"), (2, false));
    }

    /// A new database is made beside its path and appears there whole: what
    /// a crash during an earlier creation left beside it (zeros where redb's
    /// magic number goes) is made again, and nothing is left beside it.
    #[test]
    fn a_new_database_appears_at_its_path_only_once_made() {
        appears_whole();
    }

    /// The same on a file system without hard links, where the new database
    /// is renamed into place instead.
    #[test]
    fn without_hard_links_a_new_database_is_renamed_into_place() {
        NO_HARD_LINKS.set(true);
        appears_whole();
        NO_HARD_LINKS.set(false);
    }

    thread_local! {
        /// Whether [`super::hard_link`] fails on this thread.
        pub(super) static NO_HARD_LINKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn appears_whole() {
        use redb::{ReadableDatabase, TableDefinition};
        const TABLE: TableDefinition<&str, u64> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvs.redb");
        let ours = super::beside(&path, std::process::id());
        let other = super::beside(&path, 1);
        for cut_short in [&ours, &other] {
            std::fs::write(cut_short, vec![0u8; 1 << 20]).unwrap();
        }
        let database = create(&path, 1 << 20).unwrap();
        assert!(path.exists() && !ours.exists());
        let txn = database.begin_write().unwrap();
        txn.open_table(TABLE).unwrap().insert("k", 7).unwrap();
        txn.commit().unwrap();
        drop(database);
        let database = create(&path, 1 << 20).unwrap();
        let read = database.begin_read().unwrap();
        let table = read.open_table(TABLE).unwrap();
        assert_eq!(table.get("k").unwrap().unwrap().value(), 7);
        assert!(!other.exists(), "removed once the store exists");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A database on this backend whose checkpoints are deferred holds, once
    /// closed and opened again, what its last commit held.
    #[test]
    fn a_database_with_deferred_commits_opens_again_with_every_commit() {
        use redb::{ReadableDatabase, ReadableTable, TableDefinition};
        const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = create(&path, crate::store::redb_engine::DEFAULT_CACHE_BYTES).unwrap();
        for round in 0..200u64 {
            let mut txn = db.begin_write().unwrap();
            match round % 3 {
                0 => txn.set_durability(redb::Durability::None).unwrap(),
                _ => txn.set_quick_repair(true),
            }
            {
                let mut table = txn.open_table(TABLE).unwrap();
                for key in 0..50 {
                    table
                        .insert((round * 7 + key) % 500, vec![round as u8; 300].as_slice())
                        .unwrap();
                }
            }
            if round % 3 == 1 {
                deferring(|| txn.commit()).unwrap();
            } else {
                txn.commit().unwrap();
            }
            let read = db.begin_read().unwrap();
            let table = read.open_table(TABLE).unwrap();
            let key = (round * 7) % 500;
            assert_eq!(table.get(key).unwrap().unwrap().value()[0], round as u8);
        }
        let expected: Vec<(u64, Vec<u8>)> = {
            let read = db.begin_read().unwrap();
            let table = read.open_table(TABLE).unwrap();
            table
                .iter()
                .unwrap()
                .map(|row| {
                    let (key, value) = row.unwrap();
                    (key.value(), value.value().to_vec())
                })
                .collect()
        };
        drop(db);
        let db = create(&path, crate::store::redb_engine::DEFAULT_CACHE_BYTES).unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(TABLE).unwrap();
        let found: Vec<(u64, Vec<u8>)> = table
            .iter()
            .unwrap()
            .map(|row| {
                let (key, value) = row.unwrap();
                (key.value(), value.value().to_vec())
            })
            .collect();
        assert_eq!(found, expected);
    }
}
