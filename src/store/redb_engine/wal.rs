//! The write-ahead log of the disk database (`data_dir/kvs.wal`).
//!
//! A batch of key/value writes to disk projects is made durable here: its
//! writes are appended as one record to a file written full of zeros
//! beforehand, with one `fdatasync` (no file size or block allocation to
//! sync, so it costs about half of a sync that grows a file), and only then
//! committed to redb without a sync of its own. A logged batch commits redb
//! durably every 100 ms to 1 s ([`interval`]: by what the last ones wrote)
//! without waiting for the sync (`deferred_sync`: a deferred checkpoint),
//! and the log goes on.
//!
//! The file has two halves, and records go into one of them at a time. A
//! batch that would take the half past [`RESTART_AT`] goes at the beginning
//! of the other half instead, if a durable commit whose sync is done covers
//! every record that half holds: the durable commit found at start, or a
//! deferred checkpoint ([`Wal::deferred`] is told of each, and asks whether
//! the last one is synced when it needs to know). A replay can then no
//! longer need them. The batch that goes into the other half is a deferred
//! checkpoint itself, so that the way back is covered by the time the new
//! half is full (writes of large values can fill a half in less than
//! [`CHECKPOINT_MIN`]). If the other half is not covered yet, or a batch
//! writes what the log does not carry (the catalog, an expiry, a move), or
//! does not fit in an empty half, the writer commits redb durably and waits
//! for the sync, which persists every commit before it: a waited
//! checkpoint, after which the log starts again at the beginning of its
//! half. Under steady writes the log thus goes from half to half without
//! the writer waiting for a checkpoint's sync.
//!
//! A record whose write, sync or commit failed has its frame zeroed and
//! synced before the next record is written ([`Wal::zero_refused`]), and
//! is not read back meanwhile.
//!
//! At start (or when the database is reopened after a failed commit), redb
//! holds the state of its last durable commit, whose server revision is
//! `durable`; the log's records with revisions above it are the writes to
//! apply again ([`Wal::open`] reads them, the writer replays them before the
//! store answers anything): those of the half the log left (below the first
//! of the other), then those of the half it is in, which is the one whose
//! records above `durable` reach the highest revision (the first half when
//! neither has any). The replay commits without a sync, like the writes it
//! repeats, and the log keeps them until they are covered as above: it
//! needs no room on disk, so a full disk does not stop a start.
//!
//! Layout: a 16-byte header (`kvs-wal\0`, the format version as a little-
//! endian u32, four zero bytes), then two halves of [`HALF`] bytes, each
//! holding records from its beginning: a little-endian u32 length, the
//! CRC-32 of the body, and the body (postcard of [`Body`]). A half's records
//! end at the first whose length is 0, whose CRC does not hold (a write torn
//! by a crash), or whose revision is not above the one before it (what is
//! left from before the log last started that half again).
//!
//! Damage is told apart from a torn write by what follows it. Only the
//! record after the last sync can be torn, and what lies past it is older:
//! a record left from before the log last started the half again, or
//! the half it left last time, was covered by a durable commit whose sync
//! was done before the log wrote over it (above), so its revisions are at
//! or below `durable`. A frame that does not check, followed (anywhere
//! up to the end of its half) by a valid record holding writes above both
//! `durable` and the last good record before it, is damage: acknowledged
//! writes would be lost, and their revisions reused. The log then refuses
//! to open ([`Damage`]), and `kvs verify --data-dir` reports it. Records
//! after a damaged frame are found by trying every later offset
//! ([`beyond`]). Format 1 had
//! one log of 16 MiB after the header: the first half of format 2, which
//! reads it as it is (the file is then made whole, and its header says 2).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::codec::storage_error;
use crate::domain::Timestamp;
use crate::files;
use crate::store::StoreError;

const MAGIC: &[u8; 8] = b"kvs-wal\0";
const VERSION: u32 = 2;
/// The earlier format this release reads: one log, as the first half.
const VERSION_ONE_LOG: u32 = 1;
const HEADER: u64 = 16;
const FRAME: usize = 8;

/// The size of a half: the most one batch logged into an empty half takes
/// (past [`RESTART_AT`], a batch that does not fit goes into the other
/// half, or is committed durably instead).
const HALF: u64 = 16 << 20;

/// The size of the log file.
pub const CAPACITY: u64 = HEADER + 2 * HALF;

/// How much of a half is used before a batch that does not fit in it goes
/// into the other half (or commits durably and waits), unless the half is
/// empty: this bounds what a start replays after a crash (the records of
/// at most two halves above the last durable commit: about 22,000 writes of
/// 100 bytes in each), while the deferred checkpoints do not.
const RESTART_AT: u64 = 4 << 20;

/// How long without a logged batch before the writer makes a waited
/// checkpoint (on the expiry tick), so that a server whose writes have
/// stopped has nothing to replay at its next start.
pub const QUIET: Duration = Duration::from_millis(200);

/// The shortest and the longest time between two deferred checkpoints
/// (durable commits of redb) while writes come. The commits in between are
/// held in memory by redb until the next durable one, which writes them
/// all (on the writer thread; its sync is deferred when the log has its
/// batch). Between the two, [`interval`] sets the time from what the
/// checkpoints wrote.
const CHECKPOINT_MIN: Duration = Duration::from_millis(100);
const CHECKPOINT_MAX: Duration = Duration::from_secs(1);

/// About what one deferred checkpoint should write. The pages a key's
/// writes dirty are written once per checkpoint however often the key
/// changed between two, so where the writes come back to the same pages
/// (PUTs over 10,000 keys) longer intervals write less per write and PUT
/// goes faster. Where each write dirties pages of its own (10,000,000
/// random keys), checkpoints every 100 ms already write more than this
/// (12 MB at the median, 122 MB a second), and longer ones (tens of MB
/// each) made the log's syncs wait behind the device's write-back: PUT's
/// p99 went from about 25 ms to over 100 ms (`bench/README.md`,
/// "Checkpoints paced by what they write").
const CHECKPOINT_BYTES: f64 = (8 << 20) as f64;

/// How much of each new measure of the checkpoints' pace goes into the
/// running one: what one checkpoint writes swings widely on a large store
/// (1 to 18 MB at 100 ms, 3 MB then 30 MB when the interval followed each
/// checkpoint alone, at 10,000,000 keys), and the interval should not
/// swing with it.
const PACE_WEIGHT: f64 = 0.25;

/// The pace a log starts from, and goes back to at a waited checkpoint:
/// the one that gives [`CHECKPOINT_MIN`]. The interval grows from there
/// only as checkpoints show a slower pace, a quarter at a time: the first
/// checkpoint after a pause often covers the start of the writes (0.7 MB
/// after 100 ms at 10,000 keys, against 9-10 MB later), and taken alone it
/// put the next one a second away whatever the store.
const PACE_START: f64 = CHECKPOINT_BYTES / CHECKPOINT_MIN.as_secs_f64();

/// The pace at which the deferred checkpoints write (bytes a second),
/// with the checkpoint that wrote `written` bytes for the writes of
/// `span` (the time since the checkpoint before it) weighed in.
fn paced(pace: f64, written: u64, span: Duration) -> f64 {
    if span.is_zero() {
        return pace;
    }
    pace + PACE_WEIGHT * (written as f64 / span.as_secs_f64() - pace)
}

/// The time from one deferred checkpoint to the next at `pace`: the time
/// to write [`CHECKPOINT_BYTES`], within [`CHECKPOINT_MIN`] and
/// [`CHECKPOINT_MAX`].
fn interval(pace: f64) -> Duration {
    Duration::try_from_secs_f64(CHECKPOINT_BYTES / pace)
        .unwrap_or(CHECKPOINT_MAX)
        .clamp(CHECKPOINT_MIN, CHECKPOINT_MAX)
}

/// One key/value write as the log keeps it: what the write left, not the
/// request. Replaying it stores exactly that, at the same revision and time.
#[derive(Debug, Serialize, Deserialize)]
pub struct Logged {
    pub project: String,
    pub revision: u64,
    pub at: Timestamp,
    /// The project's figures after the write.
    pub keys: u64,
    pub bytes: u64,
    /// Each changed key: its entry as the keys table encodes it, with the
    /// value inline (CRC included), or `None` when the write removed it.
    #[serde(with = "entries")]
    pub changes: Vec<(String, Option<Vec<u8>>)>,
}

/// [`Logged::changes`], each entry as postcard's bytes (its length, then
/// the bytes at once) rather than a sequence of `u8` written one by one:
/// postcard encodes both alike, so the format is the same.
mod entries {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    type Changes = Vec<(String, Option<Vec<u8>>)>;

    pub fn serialize<S: Serializer>(changes: &Changes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            changes
                .iter()
                .map(|(key, entry)| (key, entry.as_deref().map(Bytes::new))),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Changes, D::Error> {
        let changes = Vec::<(String, Option<ByteBuf>)>::deserialize(d)?;
        Ok(changes
            .into_iter()
            .map(|(key, entry)| (key, entry.map(ByteBuf::into_vec)))
            .collect())
    }
}

/// A record's body: versioned like every stored record.
#[derive(Serialize, Deserialize)]
enum Body {
    V1(Vec<Logged>),
}

/// How a batch commits, as [`Wal::append`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Logged: redb commits it without a sync.
    Logged,
    /// Logged, and a checkpoint is due: redb commits it durably, without
    /// waiting for the sync (`deferred_sync`; [`Wal::deferred`] is told of
    /// it); the log goes on.
    Checkpoint,
    /// Not logged (it does not fit in the log's half, and the other half
    /// may still be needed; or there is no log): redb commits it durably
    /// and waits for the sync, and the log starts again
    /// ([`Wal::checkpointed`]).
    Not,
}

/// Where the log is: the half it writes in, and what the other holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// The half records go into (0 or 1).
    half: u64,
    /// Where the next record goes, in the file.
    end: u64,
    /// The revision of the last record written since the last waited
    /// checkpoint (0: none).
    last: u64,
    /// The last revision the other half holds that a replay may need: the
    /// log goes back to that half only once a durable commit whose sync is
    /// done covers it (0: nothing).
    other: u64,
}

impl Cursor {
    /// The beginning of the half, empty, with nothing needed in the other.
    fn start(half: u64) -> Cursor {
        Cursor {
            half,
            end: start_of(half),
            last: 0,
            other: 0,
        }
    }

    /// How much of its half the log has written.
    fn used(&self) -> u64 {
        self.end - start_of(self.half)
    }
}

/// Where `half` begins in the file.
fn start_of(half: u64) -> u64 {
    HEADER + half * HALF
}

/// Whether the sync of a deferred checkpoint is done.
pub type Synced = Box<dyn Fn() -> bool + Send>;

pub struct Wal {
    file: File,
    /// `data_dir/kvs.wal`, for what is said of it.
    path: PathBuf,
    at: Cursor,
    /// Where the log was before the record [`Wal::append`] wrote last, and
    /// where that record is, for [`Wal::retract`]; none when that call
    /// wrote nothing.
    before_last_append: Option<(Cursor, u64)>,
    /// Where a refused record is whose frame is not yet zeroed on disk
    /// ([`Wal::zero_refused`]).
    refused: Option<u64>,
    /// The highest revision that a durable commit whose sync is known to be
    /// done covers (since the log was opened).
    covered: u64,
    /// The last deferred checkpoint, the revision it covers and whether its
    /// sync is done, until it is seen done.
    deferred: Option<(u64, Synced)>,
    /// False when there was no room to make the file: nothing is logged.
    usable: bool,
    /// When the last checkpoint was.
    since: Instant,
    /// The time from the checkpoint before the last to the last.
    span: Duration,
    /// The deferred checkpoints' pace of writing ([`paced`]), which sets
    /// the time from the last checkpoint to the next ([`interval`]).
    pace: f64,
    /// When the last record was written.
    appended: Instant,
}

impl Wal {
    /// Opens the log in `data_dir` (made, full of zeros, if it is missing
    /// or short) and reads the writes it holds above `durable`, in order.
    pub fn open(data_dir: &Path, durable: u64) -> Result<(Wal, Vec<Logged>), StoreError> {
        let path = data_dir.join("kvs.wal");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(storage_error)?;
        let size = file.metadata().map_err(storage_error)?.len();
        let mut header = [0u8; HEADER as usize];
        if size >= HEADER {
            file.read_exact_at(&mut header, 0).map_err(storage_error)?;
        }
        let (fresh, version) = check_header(&header, &path)?;
        let (writes, at, torn) = if fresh {
            (Vec::new(), Cursor::start(0), None)
        } else {
            read(&file, &path, size.min(CAPACITY), durable, None)?
        };
        if let Some((offset, revision)) = torn
            && !writes.is_empty()
        {
            // Nothing valid follows it: a record the crash tore before its
            // sync (never acknowledged), or older records it wrote over.
            tracing::warn!(
                path = %path.display(),
                offset,
                revision,
                "the write-ahead log ends at a frame that does not check, after revision                  {revision}: a write torn by the crash, which was never acknowledged"
            );
        }
        if !writes.is_empty() {
            // Only a stop that was not clean leaves writes to store again.
            let left = writes.iter().filter(|w| w.revision <= at.other).count();
            tracing::warn!(
                durable,
                "the last stop was not clean: storing again the {} writes that only the \
                 write-ahead log holds ({left} of them in the half it had left)",
                writes.len()
            );
        }
        let mut usable = true;
        if fresh || size < CAPACITY || version != VERSION {
            if let Err(error) = prepare(&file, size) {
                // No room for it (a small disk): every commit is durable,
                // as without a log. What was written for it is given back.
                tracing::warn!(
                    %error,
                    path = %path.display(),
                    "no room for the write-ahead log ({} MiB): every write commits the \
                     database durably, which is slower",
                    CAPACITY >> 20
                );
                file.set_len(size).map_err(storage_error)?;
                usable = false;
            }
            files::sync_dir(files::dir_of(&path)).map_err(storage_error)?;
        }
        let wal = Wal {
            file,
            path,
            at,
            before_last_append: None,
            refused: None,
            covered: durable,
            deferred: None,
            usable,
            since: Instant::now(),
            span: Duration::ZERO,
            pace: PACE_START,
            appended: Instant::now(),
        };
        Ok((wal, writes))
    }

    /// Appends one batch's writes and syncs them; says how the batch
    /// commits.
    pub fn append(&mut self, writes: &[Logged]) -> Result<Appended, StoreError> {
        self.before_last_append = None;
        let Some(last) = writes.last().map(|w| w.revision) else {
            return Ok(Appended::Logged);
        };
        if !self.usable || last <= self.at.last {
            return Ok(Appended::Not);
        }
        self.zero_refused()?;
        let body = postcard::to_stdvec(&BodyRef::V1(writes.iter().collect()))
            .map_err(StoreError::internal)?;
        let length = (FRAME + body.len()) as u64;
        let mut at = self.at;
        let room = if at.used() > 0 { RESTART_AT } else { HALF };
        if at.used() + length > room {
            // The other half, empty, once a replay cannot need what it holds.
            if at.used() == 0 || length > HALF || !self.covers(at.other) {
                return Ok(Appended::Not);
            }
            at = Cursor {
                other: at.last,
                ..Cursor::start(1 - at.half)
            };
        }
        let mut record = Vec::with_capacity(length as usize);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        record.extend_from_slice(&body);
        let written = self
            .file
            .write_all_at(&record, at.end)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            // The record may be in the file whole although the sync failed:
            // its frame is zeroed, so that the replay after this failed batch
            // does not apply a write that was answered with an error.
            self.refused = Some(at.end);
            let _ = self.zero_refused();
            return Err(storage_error(error));
        }
        self.before_last_append = Some((self.at, at.end));
        self.appended = Instant::now();
        // A batch that went into the other half is a deferred checkpoint
        // too: the log can go back to the half it left once its sync is
        // done, which writes of large values may otherwise not give it time
        // for (a half of them can take less than [`CHECKPOINT_MIN`]).
        let switched = at.half != self.at.half;
        self.at = Cursor {
            end: at.end + length,
            last,
            ..at
        };
        let elapsed = self.since.elapsed();
        if !switched && elapsed < interval(self.pace) {
            return Ok(Appended::Logged);
        }
        self.span = elapsed;
        self.since = Instant::now();
        Ok(Appended::Checkpoint)
    }

    /// Takes back the record [`Wal::append`] just wrote, when the commit it
    /// made durable failed: a replay must not apply what was refused. The
    /// next record goes where it was, and may reuse its revisions (the
    /// writer takes them again for the next batch).
    pub fn retract(&mut self) -> Result<(), StoreError> {
        let Some((before, written)) = self.before_last_append.take() else {
            return Ok(());
        };
        self.at = before;
        self.refused = Some(written);
        self.zero_refused()
    }

    /// Zeroes the frame of the record that was refused (its write, its
    /// sync, or its batch's commit failed), and syncs it. Until that is
    /// done, no record is written: the refused one could otherwise be read
    /// after a crash, beside records that reuse its revisions (in the other
    /// half, as the newest).
    fn zero_refused(&mut self) -> Result<(), StoreError> {
        if let Some(at) = self.refused {
            self.file
                .write_all_at(&[0u8; FRAME], at)
                .and_then(|()| self.file.sync_data())
                .map_err(storage_error)?;
            self.refused = None;
        }
        Ok(())
    }

    /// A deferred checkpoint (a durable commit whose sync is not waited
    /// for) has committed every write logged so far: once `synced` says its
    /// sync is done, a replay needs none of them. It wrote `written` bytes
    /// to the database's file, which sets the time to the next
    /// ([`interval`]).
    pub fn deferred(&mut self, synced: Synced, written: u64) {
        metrics::counter!("kvs_checkpoints_total", "kind" => "deferred").increment(1);
        metrics::counter!("kvs_checkpoint_written_bytes_total").increment(written);
        self.pace = paced(self.pace, written, self.span);
        tracing::debug!(
            written,
            span_ms = self.span.as_millis() as u64,
            next_ms = interval(self.pace).as_millis() as u64,
            "deferred checkpoint"
        );
        // A deferred checkpoint waits for the sync of the one before it.
        if let Some((revision, earlier)) = self.deferred.take()
            && earlier()
        {
            self.covered = self.covered.max(revision);
        }
        self.deferred = Some((self.at.last, synced));
    }

    /// After the database was reopened on a new backend: the deferred
    /// checkpoint not yet seen synced belonged to the old one. Its handle
    /// (which keeps the old backend, its file and what it queued) goes now
    /// rather than at the next deferred checkpoint. Most often the old queue
    /// failed, and it would never have said synced; after another failure
    /// of a commit its sync may be done, and then forgetting it only means
    /// that what it covered waits for a checkpoint of the new database.
    pub fn reopened(&mut self) {
        self.deferred = None;
    }

    /// Whether a durable commit whose sync is done covers `revision`.
    fn covers(&mut self, revision: u64) -> bool {
        if revision > self.covered
            && let Some((deferred, synced)) = &self.deferred
            && synced()
        {
            self.covered = self.covered.max(*deferred);
            self.deferred = None;
        }
        revision <= self.covered
    }

    /// The writes above `durable` that the log holds. (A log that could not
    /// be made whole, as on a full disk, is never written, but may still
    /// hold the writes a start found in it.)
    pub fn read_since(&self, durable: u64) -> Result<Vec<Logged>, StoreError> {
        let size = self.file.metadata().map_err(storage_error)?.len();
        let read = read(
            &self.file,
            &self.path,
            size.min(CAPACITY),
            durable,
            self.refused,
        )?;
        Ok(read.0)
    }

    /// Whether the log holds writes and none came for [`QUIET`].
    pub fn quiet(&self) -> bool {
        self.holds_writes() && self.appended.elapsed() >= QUIET
    }

    /// Whether the log holds writes since it last started again (deferred
    /// checkpoints may cover them too, but they are not waited for).
    pub fn holds_writes(&self) -> bool {
        self.at.used() > 0 || self.at.other > 0
    }

    /// After a durable commit of redb whose sync was waited for: the log
    /// starts again at the beginning of its half. What is left of it is at
    /// or below that commit's revision, and is never replayed.
    /// The pace starts again too: writes that come after a pause (a
    /// waited checkpoint comes when writes stop) may dirty pages much
    /// faster than those before it, and redb holds what they dirty in
    /// memory until the next checkpoint.
    pub fn checkpointed(&mut self) {
        metrics::counter!("kvs_checkpoints_total", "kind" => "waited").increment(1);
        self.at = Cursor::start(self.at.half);
        self.before_last_append = None;
        self.deferred = None;
        self.since = Instant::now();
        self.pace = PACE_START;
    }
}

/// [`Body`] as it is written: the same encoding, from references.
#[derive(Serialize)]
enum BodyRef<'a> {
    V1(Vec<&'a Logged>),
}

/// Writes zeros up to [`CAPACITY`] (past `size`) and syncs the file, size
/// and blocks included; then the header, synced. The header comes last, so
/// that a log of format 1 that cannot be made whole keeps saying so.
fn prepare(file: &File, size: u64) -> Result<(), StoreError> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = size.max(HEADER);
    while at < CAPACITY {
        let n = (CAPACITY - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(storage_error)?;
        at += n as u64;
    }
    file.sync_all().map_err(storage_error)?;
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    file.write_all_at(&header, 0)
        .and_then(|()| file.sync_data())
        .map_err(storage_error)
}

/// Whether a log's header is that of a fresh file (all zeros), and its
/// format version; an error for a file that is no log of a known format.
fn check_header(header: &[u8; HEADER as usize], path: &Path) -> Result<(bool, u32), StoreError> {
    let fresh = header.iter().all(|b| *b == 0);
    if !fresh && &header[..8] != MAGIC {
        return Err(StoreError::DataCorrupted(format!(
            "{} is not a kvs write-ahead log",
            path.display()
        )));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if !fresh && version != VERSION && version != VERSION_ONE_LOG {
        return Err(StoreError::DataCorrupted(format!(
            "{} is a write-ahead log of a format this release does not know",
            path.display()
        )));
    }
    Ok((fresh, version))
}

/// Reads `data_dir/kvs.wal` (if there is one) as a start over a database
/// whose durable revision is `durable` would, without making or changing
/// it, for the commands that work on a stopped store's files (`kvs verify
/// --data-dir`, `kvs compact --data-dir`): a damaged log is
/// `StoreError::DataCorrupted`, as at a start. Answers the highest revision
/// of a valid record in it (0: none).
pub fn inspect(data_dir: &Path, durable: u64) -> Result<u64, StoreError> {
    let Some((file, path, size)) = open_to_read(data_dir)? else {
        return Ok(0);
    };
    // Only the damage and the highest revision are wanted, not the writes
    // (up to 32 MiB of values).
    let halves = read_halves(&file, size, durable, Keep::None, None)?;
    refuse_damage(&halves, &path, durable)?;
    Ok(halves.iter().map(Half::highest).max().unwrap_or(0))
}

/// The highest revision of any valid record in `data_dir/kvs.wal`, damaged
/// or not (0: none, or no log). A log that holds one was written by a
/// server whose store existed: no first start makes one.
pub fn highest_logged(data_dir: &Path) -> Result<u64, StoreError> {
    let Some((file, _, size)) = open_to_read(data_dir)? else {
        return Ok(0);
    };
    let halves = read_halves(&file, size, 0, Keep::None, None)?;
    Ok(halves.iter().map(Half::highest).max().unwrap_or(0))
}

/// Why `data_dir` must not be opened as a new store, if it must not: its
/// `kvs.redb` is missing or empty while `kvs.wal` beside it holds records.
/// A first start makes the store file whole before the log is written
/// (`kvs.redb.creating.<pid>`, then linked), so such a log was written by
/// a server whose store is gone: a new one would drop every write the log
/// holds (their projects no longer exist) and reuse their versions.
pub fn lost_store(data_dir: &Path) -> Result<Option<String>, StoreError> {
    let store = data_dir.join("kvs.redb");
    let state = match std::fs::metadata(&store) {
        Ok(meta) if meta.len() > 0 => return Ok(None),
        Ok(_) => "empty",
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => "missing",
        Err(error) => return Err(storage_error(error)),
    };
    let highest = highest_logged(data_dir)?;
    Ok((highest > 0).then(|| {
        format!(
            "{store} is {state}, yet {log} beside it holds writes up to revision {highest}: \
             this is not a first start, the store file is gone. A new store would lose every \
             write and reuse their versions, so none is made. Put the store file back, or \
             restore a backup (`kvs restore --force`); to start a new, empty store here \
             knowingly, move {log} aside first",
            store = store.display(),
            log = data_dir.join("kvs.wal").display(),
        )
    }))
}

/// `data_dir/kvs.wal` opened to read, its path and the size to read; none
/// when it is missing or fresh (zeros only, or shorter than its header).
fn open_to_read(data_dir: &Path) -> Result<Option<(File, PathBuf, u64)>, StoreError> {
    let path = data_dir.join("kvs.wal");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(storage_error(error)),
    };
    let size = file.metadata().map_err(storage_error)?.len();
    if size < HEADER {
        return Ok(None);
    }
    let mut header = [0u8; HEADER as usize];
    file.read_exact_at(&mut header, 0).map_err(storage_error)?;
    let (fresh, _) = check_header(&header, &path)?;
    Ok((!fresh).then_some((file, path, size.min(CAPACITY))))
}

/// A frame that does not check with valid records after it: writes that
/// a start would otherwise drop without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the frame that does not check begins, in the file.
    pub at: u64,
    /// The revision of the last good record before it in its half (0: none).
    pub after: u64,
    /// The valid records found after it with writes above both `after` and
    /// the durable revision; the first begins at `first`.
    pub records: u64,
    pub first: u64,
    /// Those writes, and the highest revision among them.
    pub writes: u64,
    pub highest: u64,
}

impl Damage {
    /// What the operator reads: the file, where, what would be lost, and
    /// the ways out.
    fn describe(&self, path: &Path, durable: u64) -> String {
        format!(
            "{path} is damaged: the record at offset {at} does not check (its CRC or its \
             decoding fails; the last good revision before it is {after}, the store's durable \
             revision {durable}), yet {records} valid records after it (the first at offset \
             {first}) hold {writes} acknowledged writes up to revision {highest} that the \
             store lacks. Starting would lose them and reuse their versions, so nothing is \
             started. Restore a backup (`kvs restore --force`), or, to start without those \
             writes knowingly, move {path} aside (see \"When a data directory is damaged\" in \
             the README)",
            path = path.display(),
            at = self.at,
            after = self.after,
            records = self.records,
            first = self.first,
            writes = self.writes,
            highest = self.highest,
        )
    }
}

/// Where the log's records end at a frame that does not check with
/// nothing valid after it, and the revision of the last record before it.
type Torn = (u64, u64);

/// The writes above `durable` that the two halves hold, in order (the
/// half the log left, then the one it is in), where the log goes on, and
/// where the half it is in ends at a frame that does not check with
/// nothing valid after it (a torn write: its offset and the revision
/// before it). A half's records end at `refused` (a refused record whose
/// frame could not be zeroed yet). A damaged frame is an error.
fn read(
    file: &File,
    path: &Path,
    size: u64,
    durable: u64,
    refused: Option<u64>,
) -> Result<(Vec<Logged>, Cursor, Option<Torn>), StoreError> {
    let halves = read_halves(file, size, durable, Keep::AboveDurable, refused)?;
    refuse_damage(&halves, path, durable)?;
    // The log is in the half whose records reach the highest revision.
    let newest = |h: &Half| h.writes.last().map_or(0, |w| w.revision);
    let current = u64::from(newest(&halves[1]) > newest(&halves[0]));
    let [first, second] = halves;
    let (left, mut now) = if current == 0 {
        (second, first)
    } else {
        (first, second)
    };
    if now.writes.is_empty() {
        return Ok((Vec::new(), Cursor::start(current), None));
    }
    let torn = now.torn.then_some((now.end, now.last));
    let begins = now.writes[0].revision;
    let mut writes: Vec<Logged> = left
        .writes
        .into_iter()
        .filter(|w| w.revision < begins)
        .collect();
    let other = writes.last().map_or(0, |w| w.revision);
    writes.append(&mut now.writes);
    let cursor = Cursor {
        half: current,
        end: now.end,
        last: now.last,
        other,
    };
    Ok((writes, cursor, torn))
}

/// Both halves, read.
fn read_halves(
    file: &File,
    size: u64,
    durable: u64,
    keep: Keep,
    refused: Option<u64>,
) -> Result<[Half; 2], StoreError> {
    Ok([
        read_half(file, 0, size, durable, keep, refused)?,
        read_half(file, 1, size, durable, keep, refused)?,
    ])
}

/// A start, `kvs verify` and `kvs compact` alike refuse a log with a
/// damaged half: `DataCorrupted`, saying what would be lost.
fn refuse_damage(halves: &[Half; 2], path: &Path, durable: u64) -> Result<(), StoreError> {
    match halves.iter().find_map(|h| h.damage.as_ref()) {
        Some(damage) => Err(StoreError::DataCorrupted(damage.describe(path, durable))),
        None => Ok(()),
    }
}

/// A frame's header: the length of the body after it and the CRC it claims.
fn frame_header(frame: &[u8; FRAME]) -> (usize, u32) {
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *frame;
    (
        u32::from_le_bytes([l0, l1, l2, l3]) as usize,
        u32::from_le_bytes([c0, c1, c2, c3]),
    )
}

/// Which writes reading a half keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Those above the durable revision: a start replays them.
    AboveDurable,
    /// None: the offline tools and the check for a lost store want only
    /// the damage and the highest revision.
    None,
}

/// What one half holds.
struct Half {
    /// Its writes above `durable`, in order (if kept).
    writes: Vec<Logged>,
    /// Where its records end.
    end: u64,
    /// The revision of its last record.
    last: u64,
    /// Whether they end at a frame that does not check.
    torn: bool,
    /// Valid records past that frame that make it damage.
    damage: Option<Damage>,
    /// The highest revision of a valid record found past their end.
    beyond: u64,
}

impl Half {
    /// The highest revision of any valid record found in the half.
    fn highest(&self) -> u64 {
        self.last.max(self.beyond)
    }
}

/// The writes above `durable` from the records of `half` in order up to
/// their end; where they end, the last revision they hold, and whether
/// valid records past a frame that does not check prove it damaged.
fn read_half(
    file: &File,
    half: u64,
    size: u64,
    durable: u64,
    keep: Keep,
    refused: Option<u64>,
) -> Result<Half, StoreError> {
    let mut writes = Vec::new();
    let mut at = start_of(half);
    let limit = size.min(start_of(half) + HALF);
    let mut previous = 0;
    let mut frame = [0u8; FRAME];
    // Whether the records end at a frame that does not check (rather than
    // at the end of the half, at a refused record, or at a valid record
    // left from before); `torn` when its length is not 0 either.
    let mut unchecked = false;
    let mut torn = false;
    while at + FRAME as u64 <= limit && Some(at) != refused {
        file.read_exact_at(&mut frame, at).map_err(storage_error)?;
        let (length, crc) = frame_header(&frame);
        let length = length as u64;
        if length == 0 || at + FRAME as u64 + length > limit {
            unchecked = true;
            torn = length != 0;
            break;
        }
        let mut body = vec![0u8; length as usize];
        file.read_exact_at(&mut body, at + FRAME as u64)
            .map_err(storage_error)?;
        if crc32fast::hash(&body) != crc {
            (unchecked, torn) = (true, true);
            break;
        }
        let Ok(Body::V1(batch)) = postcard::from_bytes::<Body>(&body) else {
            (unchecked, torn) = (true, true);
            break;
        };
        let Some(last) = batch.last().map(|w| w.revision) else {
            (unchecked, torn) = (true, true);
            break;
        };
        if last <= previous {
            break;
        }
        previous = last;
        if keep == Keep::AboveDurable {
            writes.extend(batch.into_iter().filter(|w| w.revision > durable));
        }
        at += FRAME as u64 + length;
    }
    let mut damage = None;
    let mut beyond_last = 0;
    if unchecked {
        let found = beyond(file, at, limit, durable.max(previous), refused)?;
        beyond_last = found.highest_any;
        if found.records > 0 {
            damage = Some(Damage {
                at,
                after: previous,
                records: found.records,
                first: found.first,
                writes: found.writes,
                highest: found.highest,
            });
        }
    }
    Ok(Half {
        writes,
        end: at,
        last: previous,
        torn,
        damage,
        beyond: beyond_last,
    })
}

/// The valid records that [`beyond`] found.
#[derive(Debug, Default)]
struct Found {
    /// Those with writes above the revision asked for; the first begins at
    /// `first`.
    records: u64,
    first: u64,
    /// Their writes above it, and the highest revision among them.
    writes: u64,
    highest: u64,
    /// The highest revision of any valid record found.
    highest_any: u64,
}

/// The valid records between `from` and `limit` (the end of a half) that
/// hold writes above `above`, found by trying every offset, since the
/// length of the frame at `from` cannot be trusted. A frame is valid when
/// its length fits, its body's CRC holds and the body decodes; a valid one
/// is skipped whole, so that bytes inside its values are never taken for a
/// frame. The CRC of each candidate's body is derived from two CRCs of the
/// region's prefixes (CRC-32 is linear), so trying every offset costs one
/// pass over the region, whatever the lengths the candidates claim.
///
/// The region (up to a half, 16 MiB) is read in pieces of [`PIECE`], never
/// whole: it is read at every start and by `kvs verify --data-dir`, and a
/// buffer of the whole region is the likely (not reproduced) cause of the
/// 50 MiB that CI measured for that verify, against 36 here.
fn beyond(
    file: &File,
    from: u64,
    limit: u64,
    above: u64,
    refused: Option<u64>,
) -> Result<Found, StoreError> {
    let mut found = Found::default();
    if from + FRAME as u64 > limit {
        return Ok(found);
    }
    let size = (limit - from) as usize;
    let candidates = candidates(file, from, size, refused)?;
    let crcs = body_crcs(file, from, &candidates)?;
    let mut next = 0;
    for (&(i, length, stored), crc) in candidates.iter().zip(crcs) {
        if i < next || crc != stored {
            continue;
        }
        let mut body = vec![0u8; length];
        file.read_exact_at(&mut body, from + (i + FRAME) as u64)
            .map_err(storage_error)?;
        let Ok(Body::V1(batch)) = postcard::from_bytes::<Body>(&body) else {
            continue;
        };
        next = i + FRAME + length;
        let highest = batch.iter().map(|w| w.revision).max().unwrap_or(0);
        found.highest_any = found.highest_any.max(highest);
        let writes = batch.iter().filter(|w| w.revision > above).count() as u64;
        if writes > 0 {
            if found.records == 0 {
                found.first = from + i as u64;
            }
            found.records += 1;
            found.writes += writes;
            found.highest = found.highest.max(highest);
        }
    }
    Ok(found)
}

/// How much of a region [`beyond`] reads at a time.
const PIECE: usize = 1 << 20;

/// The blocks [`candidates`] looks for zeros in.
const ZEROS: usize = 4096;

/// How many bytes of a body [`plausible`] looks at: the variant, a varint
/// of up to 10 bytes, a length byte and up to 64 bytes of project id.
const LOOK: usize = 1 + 10 + 1 + 64;

/// The offsets in the `size` bytes at `from` (all but `refused`) where a
/// frame could begin, with their lengths and the CRCs they claim: the body
/// fits in the region and begins as a record's does.
fn candidates(
    file: &File,
    from: u64,
    size: usize,
    refused: Option<u64>,
) -> Result<Vec<(usize, usize, u32)>, StoreError> {
    let mut candidates = Vec::new();
    // A piece, and what a frame beginning in its last byte needs after it.
    let mut window = vec![0u8; PIECE + FRAME + LOOK];
    let mut start = 0;
    while start < size - FRAME {
        let have = (size - start).min(window.len());
        file.read_exact_at(&mut window[..have], from + start as u64)
            .map_err(storage_error)?;
        let window = &window[..have];
        let stop = (start + PIECE).min(size - FRAME);
        let mut i = start;
        while i < stop {
            let at = i - start;
            // A block of zeros (the preallocated rest of a half) holds no
            // frame: a length of 0 is none. Skipped at a glance, it costs a
            // start or a `kvs verify` 4 ms, not 70, per fresh half.
            if at % ZEROS == 0
                && window
                    .get(at..at + ZEROS)
                    .is_some_and(|block| block.iter().fold(0, |any, b| any | b) == 0)
            {
                i += ZEROS - 3;
                continue;
            }
            let offset = i;
            i += 1;
            if Some(from + offset as u64) == refused {
                continue;
            }
            let Some(frame) = window.get(at..at + FRAME).and_then(|f| f.try_into().ok()) else {
                continue;
            };
            let (length, crc) = frame_header(frame);
            if offset + FRAME + length > size {
                continue;
            }
            // `plausible` reads no further than LOOK bytes, which the
            // window holds for every frame beginning in this piece.
            let look = window.get(at + FRAME..at + FRAME + length.min(LOOK));
            if look.is_some_and(plausible) {
                candidates.push((offset, length, crc));
            }
        }
        start += PIECE;
    }
    Ok(candidates)
}

/// Whether `body` begins as a record's body does: [`Body::V1`] (postcard's
/// variant 0) of at least one write, whose project id is 1 to 64 bytes of
/// the characters a project id takes. Random bytes rarely pass, so few
/// offsets cost a CRC.
fn plausible(body: &[u8]) -> bool {
    let Some((&0, rest)) = body.split_first() else {
        return false;
    };
    // The number of writes: a varint, 7 bits a byte, the high bit set on
    // every byte but its last.
    let Some(end) = rest.iter().take(10).position(|b| b & 0x80 == 0) else {
        return false;
    };
    let (count, rest) = rest.split_at(end + 1);
    if count == [0] {
        return false;
    }
    let Some((&length, rest)) = rest.split_first() else {
        return false;
    };
    let length = length as usize;
    (1..=64).contains(&length)
        && rest.get(..length).is_some_and(|id| {
            id.iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        })
}

/// The CRC-32 of the body of each candidate frame `(offset, length)` in the
/// region at `from`, from the CRCs of the region's prefixes at the body's
/// two ends: crc(b) = crc(p ‖ b) ⊕ shift(crc(p), |b|), where the shift is
/// crc32fast's combine with the CRC of nothing. The region is read once, in
/// order, a piece at a time.
fn body_crcs(
    file: &File,
    from: u64,
    candidates: &[(usize, usize, u32)],
) -> Result<Vec<u32>, StoreError> {
    let mut ends: Vec<usize> = candidates
        .iter()
        .flat_map(|&(i, length, _)| [i + FRAME, i + FRAME + length])
        .collect();
    ends.sort_unstable();
    ends.dedup();
    let mut prefix = std::collections::HashMap::with_capacity(ends.len());
    let mut hasher = crc32fast::Hasher::new();
    let mut piece = vec![0u8; PIECE];
    let mut done = 0;
    for end in ends {
        while done < end {
            let take = (end - done).min(PIECE);
            file.read_exact_at(&mut piece[..take], from + done as u64)
                .map_err(storage_error)?;
            hasher.update(&piece[..take]);
            done += take;
        }
        prefix.insert(end, hasher.clone().finalize());
    }
    Ok(candidates
        .iter()
        .map(|&(i, length, _)| {
            let (start, end) = (i + FRAME, i + FRAME + length);
            let mut shifted = crc32fast::Hasher::new_with_initial_len(prefix[&start], start as u64);
            shifted.combine(&crc32fast::Hasher::new_with_initial_len(0, length as u64));
            prefix[&end] ^ shifted.finalize()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A write of `revision` to `key`. The log does not look inside an
    /// entry, so any bytes stand for one; every record of a one-write batch
    /// with a one-byte revision and key has the same size.
    fn write(revision: u64, key: &str) -> Logged {
        Logged {
            project: "p".to_owned(),
            revision,
            at: Timestamp::from_millis(1_700_000_000_000),
            keys: 1,
            bytes: 5,
            changes: vec![(key.to_owned(), Some(b"entry".to_vec()))],
        }
    }
    /// Entries written as bytes are the bytes the derived sequence of `u8`
    /// wrote (the log of an earlier release reads the same), and read back.
    #[test]
    fn entries_are_encoded_as_before() {
        #[derive(Serialize)]
        struct Before {
            project: String,
            revision: u64,
            at: Timestamp,
            keys: u64,
            bytes: u64,
            changes: Vec<(String, Option<Vec<u8>>)>,
        }
        let changes = vec![
            ("a".to_owned(), Some((0..=255).collect::<Vec<u8>>())),
            ("b".to_owned(), None),
            ("c".to_owned(), Some(Vec::new())),
        ];
        let now = write(7, "a");
        let logged = Logged {
            changes: changes.clone(),
            ..now
        };
        let before = Before {
            project: logged.project.clone(),
            revision: logged.revision,
            at: logged.at,
            keys: logged.keys,
            bytes: logged.bytes,
            changes,
        };
        let bytes = postcard::to_stdvec(&logged).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&before).unwrap());
        let read: Logged = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(read.changes, before.changes);
    }

    /// Appends each write as a record of its own; answers where each began.
    fn append_each(wal: &mut Wal, writes: impl IntoIterator<Item = Logged>) -> Vec<u64> {
        writes
            .into_iter()
            .map(|write| {
                let at = wal.at.end;
                assert_ne!(
                    wal.append(&[write]).unwrap(),
                    Appended::Not,
                    "the record fits"
                );
                at
            })
            .collect()
    }

    /// The revision of each write read back.
    fn revisions(writes: &[Logged]) -> Vec<u64> {
        writes.iter().map(|w| w.revision).collect()
    }

    /// The revision and key of each write read back.
    fn read_back(writes: &[Logged]) -> Vec<(u64, &str)> {
        writes
            .iter()
            .map(|w| (w.revision, w.changes[0].0.as_str()))
            .collect()
    }

    fn overwrite(dir: &Path, at: u64, bytes: &[u8]) {
        let file = OpenOptions::new()
            .write(true)
            .open(dir.join("kvs.wal"))
            .unwrap();
        file.write_all_at(bytes, at).unwrap();
    }

    /// A write with an entry of `bytes` bytes.
    fn large(revision: u64, bytes: usize) -> Logged {
        Logged {
            changes: vec![("k".to_owned(), Some(vec![7; bytes]))],
            ..write(revision, "k")
        }
    }

    /// Whether a deferred checkpoint's sync is done, as a test says.
    fn switch() -> (Arc<AtomicBool>, Synced) {
        let done = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&done);
        (done, Box::new(move || seen.load(Ordering::SeqCst)))
    }

    /// Once a half holds 4 MiB, a batch that would go past it goes to the
    /// beginning of the other half if nothing there can be needed (at
    /// first, or once a deferred checkpoint made since the log left it is
    /// synced); otherwise it is not logged (it commits and waits, and the
    /// log starts again in its half). Into an empty half, a batch of up to
    /// 16 MiB is logged. A batch that goes into the other half is a
    /// deferred checkpoint. A start reads the half the log left, then the
    /// one it is in.
    #[test]
    fn a_full_half_goes_on_in_the_other_once_nothing_there_can_be_needed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        assert_ne!(wal.append(&[large(1, 3 << 20)]).unwrap(), Appended::Not);
        assert_ne!(wal.append(&[large(2, 512 << 10)]).unwrap(), Appended::Not);
        // The second half has never held anything. Going there is a
        // deferred checkpoint.
        assert_eq!(
            wal.append(&[large(3, 600 << 10)]).unwrap(),
            Appended::Checkpoint
        );
        assert_eq!(wal.at.half, 1);
        assert_eq!(wal.at.other, 2, "the first half holds 1 and 2");
        assert_ne!(wal.append(&[large(4, 3 << 20)]).unwrap(), Appended::Not);

        // The first half holds writes that no synced commit covers.
        assert_eq!(wal.append(&[large(5, 600 << 10)]).unwrap(), Appended::Not);
        let (done, synced) = switch();
        wal.deferred(synced, 0);
        assert_eq!(wal.append(&[large(5, 600 << 10)]).unwrap(), Appended::Not);
        done.store(true, Ordering::SeqCst);
        assert_ne!(wal.append(&[large(5, 600 << 10)]).unwrap(), Appended::Not);
        assert_eq!((wal.at.half, wal.at.other), (0, 4));
        assert_eq!(
            wal.at.end,
            HEADER + FRAME as u64 + encoded(&large(5, 600 << 10))
        );
        drop(wal);
        let (wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(revisions(&writes), [3, 4, 5]);
        assert_eq!((wal.at.half, wal.at.last, wal.at.other), (0, 5, 4));
        assert_eq!(revisions(&wal.read_since(3).unwrap()), [4, 5]);
        assert_eq!(revisions(&wal.read_since(4).unwrap()), [5]);
        drop(wal);
        let (mut wal, writes) = Wal::open(dir.path(), 5).unwrap();
        assert!(writes.is_empty());
        assert_eq!(wal.at, Cursor::start(0));
        assert!(!wal.holds_writes());

        // A waited checkpoint: the log starts again in its half, and a
        // batch of up to 16 MiB fits there when it is empty; the other
        // half holds nothing needed.
        assert_ne!(wal.append(&[large(6, 1 << 20)]).unwrap(), Appended::Not);
        wal.checkpointed();
        assert!(!wal.holds_writes());
        assert_eq!(wal.append(&[large(7, 16 << 20)]).unwrap(), Appended::Not);
        assert_ne!(wal.append(&[large(7, 12 << 20)]).unwrap(), Appended::Not);
        assert_ne!(wal.append(&[large(8, 10)]).unwrap(), Appended::Not);
        assert_eq!((wal.at.half, wal.at.other), (1, 7));
        assert_eq!(wal.append(&[large(9, 5 << 20)]).unwrap(), Appended::Not);
    }

    /// The deferred checkpoints come 100 ms to 1 s apart, by the pace at
    /// which they write: at first every 100 ms; after checkpoints that
    /// wrote little, later; after ones that wrote much, every 100 ms again;
    /// and from a waited checkpoint, every 100 ms again.
    #[test]
    fn deferred_checkpoints_are_paced_by_what_they_write() {
        let ms = Duration::from_millis;
        // The pace weighs each checkpoint in by a quarter, from the one
        // that gives 100 ms.
        assert_eq!(interval(PACE_START), CHECKPOINT_MIN);
        assert_eq!(paced(PACE_START, 1 << 20, Duration::ZERO), PACE_START);
        let pace = (40 << 20) as f64;
        assert_eq!(paced(pace, 4 << 20, ms(100)), pace, "40 MiB a second");
        assert_eq!(interval(pace), ms(200), "8 MiB at 40 MiB a second");
        assert_eq!(paced(pace, 0, ms(100)), pace * 0.75);
        assert_eq!(interval(0.0), CHECKPOINT_MAX);
        assert_eq!(interval(1.0), CHECKPOINT_MAX);
        assert_eq!(interval(f64::MAX), CHECKPOINT_MIN);

        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let since = |wal: &mut Wal, ago: Duration| {
            wal.since = Instant::now().checked_sub(ago).unwrap();
        };
        since(&mut wal, ms(50));
        assert_eq!(wal.append(&[large(1, 10)]).unwrap(), Appended::Logged);
        since(&mut wal, ms(150));
        assert_eq!(wal.append(&[large(2, 10)]).unwrap(), Appended::Checkpoint);
        // One that wrote nothing moves the next by a quarter; after ten,
        // it is due in a second.
        wal.deferred(switch().1, 0);
        assert_eq!(wal.pace, PACE_START * 0.75);
        assert_eq!(interval(wal.pace).as_millis(), 133, "8 MiB at 60 MiB/s");
        for _ in 0..9 {
            wal.deferred(switch().1, 0);
        }
        assert_eq!(interval(wal.pace), CHECKPOINT_MAX);
        since(&mut wal, ms(600));
        assert_eq!(wal.append(&[large(3, 10)]).unwrap(), Appended::Logged);
        since(&mut wal, ms(1_100));
        assert_eq!(wal.append(&[large(4, 10)]).unwrap(), Appended::Checkpoint);
        // Checkpoints of 128 MiB a second bring it back to 100 ms.
        for revision in 5..20 {
            wal.deferred(switch().1, 128 << 20);
            since(&mut wal, ms(1_000));
            let appended = wal.append(&[large(revision, 10)]).unwrap();
            assert_eq!(appended, Appended::Checkpoint);
        }
        wal.deferred(switch().1, 128 << 20);
        assert_eq!(interval(wal.pace), CHECKPOINT_MIN);
        since(&mut wal, ms(150));
        assert_eq!(wal.append(&[large(20, 10)]).unwrap(), Appended::Checkpoint);

        // Slow again, then a waited checkpoint: 100 ms, from which the
        // interval grows again only as checkpoints show a slower pace.
        for _ in 0..10 {
            wal.deferred(switch().1, 0);
        }
        assert_eq!(interval(wal.pace), CHECKPOINT_MAX);
        wal.checkpointed();
        assert_eq!((wal.pace, interval(wal.pace)), (PACE_START, CHECKPOINT_MIN));
        since(&mut wal, ms(150));
        assert_eq!(wal.append(&[large(21, 10)]).unwrap(), Appended::Checkpoint);
    }

    /// A reopen drops the deferred checkpoint not yet seen synced, and with
    /// it the old backend it holds.
    #[test]
    fn a_reopen_drops_the_deferred_checkpoint_of_the_old_database() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        assert_ne!(wal.append(&[large(1, 10)]).unwrap(), Appended::Not);
        let old_backend = Arc::new(AtomicBool::new(false));
        let held = Arc::clone(&old_backend);
        wal.deferred(Box::new(move || held.load(Ordering::SeqCst)), 0);
        assert_eq!(Arc::strong_count(&old_backend), 2);
        wal.reopened();
        assert_eq!(Arc::strong_count(&old_backend), 1, "the handle is gone");
        assert!(!wal.covers(1), "nothing covers revision 1 yet");
        assert!(wal.holds_writes());
    }

    /// The log goes back to a half only once what covers its last record is
    /// synced: a synced checkpoint of an older revision is not enough, and
    /// a checkpoint made after another takes over once the earlier is seen
    /// synced.
    #[test]
    fn the_log_goes_back_to_a_half_only_once_its_last_record_is_covered() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        assert_ne!(wal.append(&[large(1, 3 << 20)]).unwrap(), Appended::Not);
        // A synced checkpoint of revision 1.
        let (first, synced) = switch();
        first.store(true, Ordering::SeqCst);
        wal.deferred(synced, 0);
        assert_ne!(wal.append(&[large(2, 512 << 10)]).unwrap(), Appended::Not);
        assert_ne!(wal.append(&[large(3, 600 << 10)]).unwrap(), Appended::Not);
        assert_eq!((wal.at.half, wal.at.other), (1, 2));
        assert_ne!(wal.append(&[large(4, 3 << 20)]).unwrap(), Appended::Not);
        assert_eq!(
            wal.append(&[large(5, 600 << 10)]).unwrap(),
            Appended::Not,
            "revision 1 is covered, 2 is not"
        );
        // A checkpoint of revision 4 that is not synced yet: the earlier one
        // is taken as done when it comes.
        let (second, synced) = switch();
        wal.deferred(synced, 0);
        assert_eq!(wal.covered, 1);
        assert_eq!(wal.append(&[large(5, 600 << 10)]).unwrap(), Appended::Not);
        second.store(true, Ordering::SeqCst);
        assert_ne!(wal.append(&[large(5, 600 << 10)]).unwrap(), Appended::Not);
        assert_eq!((wal.at.half, wal.at.other, wal.covered), (0, 4, 4));

        // Torn by a crash, the first record of the half the log went back
        // to (over older records, left from before): the log reads on
        // from the other half's end.
        let end_of_second = start_of(1)
            + 2 * FRAME as u64
            + encoded(&large(3, 600 << 10))
            + encoded(&large(4, 3 << 20));
        drop(wal);
        overwrite(dir.path(), HEADER + FRAME as u64 + 10, b"?");
        let (wal, writes) = Wal::open(dir.path(), 2).unwrap();
        assert_eq!(revisions(&writes), [3, 4]);
        assert_eq!(
            (wal.at.half, wal.at.end, wal.at.last),
            (1, end_of_second, 4)
        );
    }

    /// A refused record whose frame could not be zeroed is not read back
    /// while it stays (a replay after the failed commit must not apply it),
    /// and is zeroed before the next record is written.
    #[test]
    fn a_refused_record_not_yet_zeroed_is_not_read_and_is_zeroed_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = into_the_second_half(dir.path(), &[large(2, 10), large(3, 10)]);
        // As a retract whose zeroing failed leaves it.
        let (before, written) = wal.before_last_append.take().unwrap();
        wal.at = before;
        wal.refused = Some(written);
        // The next batch reuses revision 2 (and is smaller): it goes to the
        // second half again, after the refused frame is zeroed.
        goes_on_after_the_first_record(&mut wal, dir.path());
        assert_eq!(wal.refused, None);
    }

    /// A log that could not be made whole (no room: nothing is logged) is
    /// still read after a failed commit: a start may have found writes in it.
    #[test]
    fn a_log_that_takes_no_records_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        append_each(&mut wal, [write(1, "a"), write(2, "b")]);
        wal.usable = false;
        assert_eq!(wal.append(&[write(3, "c")]).unwrap(), Appended::Not);
        assert_eq!(read_back(&wal.read_since(1).unwrap()), [(2, "b")]);
    }

    /// A record taken back that was the first in the other half: the log is
    /// where it was before, in the half it had not left.
    #[test]
    fn a_record_taken_back_in_the_other_half_leaves_the_log_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, before) = into_the_second_half(dir.path(), &[large(2, 10)]);
        wal.retract().unwrap();
        assert_eq!(wal.at, before);
        goes_on_after_the_first_record(&mut wal, dir.path());
    }

    /// A log whose first half holds one record of 4 MiB (revision 1), and
    /// `batch` after it, in the second half; where the log was before it.
    fn into_the_second_half(dir: &Path, batch: &[Logged]) -> (Wal, Cursor) {
        let (mut wal, _) = Wal::open(dir, 0).unwrap();
        assert_ne!(wal.append(&[large(1, 4 << 20)]).unwrap(), Appended::Not);
        let before = wal.at;
        assert_ne!(wal.append(batch).unwrap(), Appended::Not);
        assert_eq!(wal.at.half, 1);
        (wal, before)
    }

    /// After [`into_the_second_half`]'s batch was refused: only revision 1
    /// reads back, and a write of revision 2 goes at the second half's
    /// beginning, read back after it when the log is opened again.
    fn goes_on_after_the_first_record(wal: &mut Wal, dir: &Path) {
        assert_eq!(revisions(&wal.read_since(0).unwrap()), [1]);
        assert_ne!(wal.append(&[large(2, 20)]).unwrap(), Appended::Not);
        assert_eq!(
            wal.at.end,
            start_of(1) + FRAME as u64 + encoded(&large(2, 20))
        );
        let (_, writes) = Wal::open(dir, 0).unwrap();
        assert_eq!(revisions(&writes), [1, 2]);
    }

    /// A log of format 1 (one log of 16 MiB after the header) is read as
    /// the first half of format 2, and made whole.
    #[test]
    fn a_log_of_format_1_is_read_as_the_first_half() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        append_each(&mut wal, [write(1, "a"), write(2, "b")]);
        drop(wal);
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("kvs.wal"))
            .unwrap();
        file.set_len(16 << 20).unwrap();
        overwrite(dir.path(), 8, &VERSION_ONE_LOG.to_le_bytes());
        let (_wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_back(&writes), [(1, "a"), (2, "b")]);
        assert_eq!(file.metadata().unwrap().len(), CAPACITY);
        let mut version = [0u8; 4];
        File::open(dir.path().join("kvs.wal"))
            .unwrap()
            .read_exact_at(&mut version, 8)
            .unwrap();
        assert_eq!(u32::from_le_bytes(version), VERSION);
    }

    /// The length of a one-write record's body.
    fn encoded(write: &Logged) -> u64 {
        postcard::to_stdvec(&BodyRef::V1(vec![write]))
            .unwrap()
            .len() as u64
    }

    #[test]
    fn a_retracted_record_is_not_read_back_and_the_next_one_takes_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert!(writes.is_empty());
        append_each(&mut wal, [write(1, "a")]);
        assert_ne!(
            wal.append(&[write(2, "b"), write(3, "c")]).unwrap(),
            Appended::Not
        );
        assert_ne!(
            wal.append(&[write(4, "x"), write(5, "y")]).unwrap(),
            Appended::Not
        );
        wal.retract().unwrap();
        let expected = [(1, "a"), (2, "b"), (3, "c")];
        assert_eq!(read_back(&wal.read_since(0).unwrap()), expected);

        // The writer takes the refused batch's revisions again.
        assert_ne!(wal.append(&[write(4, "d")]).unwrap(), Appended::Not);
        append_each(&mut wal, [write(5, "e")]);
        drop(wal);
        let (_wal, writes) = Wal::open(dir.path(), 0).unwrap();
        let expected = [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")];
        assert_eq!(read_back(&writes), expected);
    }

    #[test]
    fn a_record_whose_crc_does_not_hold_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        append_each(&mut wal, [write(1, "a"), write(2, "b"), write(3, "c")]);
        let end = wal.at.end;
        drop(wal);
        // Torn by a crash while it was written: the last byte of the last
        // record's body (in its entry, so that the body still decodes) is
        // not what was written.
        overwrite(dir.path(), end - 1, b"?");
        let (mut wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_back(&writes), [(1, "a"), (2, "b")]);
        // The next record goes over the torn one.
        append_each(&mut wal, [write(3, "d")]);
        drop(wal);
        let (_wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_back(&writes), [(1, "a"), (2, "b"), (3, "d")]);
    }

    #[test]
    fn a_record_of_length_zero_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let at = append_each(&mut wal, [write(1, "a"), write(2, "b"), write(3, "c")]);
        drop(wal);
        // Only the length is zero: the CRC and the body are still there.
        overwrite(dir.path(), at[2], &0u32.to_le_bytes());
        let (_wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_back(&writes), [(1, "a"), (2, "b")]);
        // Record 3 after a zeroed length: damage, not an end.
        overwrite(dir.path(), at[1], &0u32.to_le_bytes());
        overwrite(
            dir.path(),
            at[2],
            &encoded(&write(3, "c")).to_le_bytes()[..4],
        );
        damaged(dir.path(), 0, at[1], "1 valid records after it");
    }

    /// Opening the log in `dir` over `durable` fails as damage, naming the
    /// file, the offset and `said`.
    fn damaged(dir: &Path, durable: u64, at: u64, said: &str) {
        let Err(StoreError::DataCorrupted(text)) = Wal::open(dir, durable).map(|_| ()) else {
            panic!("the damaged log opened");
        };
        for said in ["kvs.wal is damaged", &format!("offset {at} "), said] {
            assert!(text.contains(said), "no {said:?} in {text}");
        }
        // The offline tools read it alike, and write nothing.
        let before = std::fs::read(dir.join("kvs.wal")).unwrap();
        assert!(matches!(
            inspect(dir, durable),
            Err(StoreError::DataCorrupted(_))
        ));
        assert_eq!(std::fs::read(dir.join("kvs.wal")).unwrap(), before);
    }

    /// A damaged frame with records after it that hold writes above the
    /// durable revision and the last good record is damage; one whose later
    /// records are all durable already loses nothing, and opens.
    #[test]
    fn a_damaged_record_with_newer_records_after_it_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let at = append_each(&mut wal, (1..=6).map(|revision| write(revision, "a")));
        drop(wal);
        // One byte of the first record's CRC.
        overwrite(dir.path(), at[0] + 4, b"?");
        damaged(dir.path(), 0, at[0], "5 valid records after it");
        damaged(
            dir.path(),
            0,
            at[0],
            "5 acknowledged writes up to revision 6",
        );
        damaged(dir.path(), 4, at[0], "2 valid records after it");
        let (_wal, writes) = Wal::open(dir.path(), 6).unwrap();
        assert!(writes.is_empty());
        // In the middle: the last good revision is named.
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let at = append_each(&mut wal, (1..=6).map(|revision| write(revision, "a")));
        drop(wal);
        overwrite(dir.path(), at[3] + FRAME as u64 + 2, b"?");
        damaged(
            dir.path(),
            0,
            at[3],
            "the last good revision before it is 3",
        );
        // Its length damaged too: the records after it are still found.
        overwrite(dir.path(), at[3], &u32::MAX.to_le_bytes());
        damaged(dir.path(), 0, at[3], "2 valid records after it");
    }

    /// Each half is searched: the first record of the half the log is in
    /// damaged (the log then looks as if it were in the other), or a record
    /// of the half it left with newer records of that half after it.
    #[test]
    fn a_valid_record_in_either_half_proves_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = into_the_second_half(dir.path(), &[large(2, 10)]);
        append_each(&mut wal, [large(3, 10), large(4, 10)]);
        drop(wal);
        overwrite(dir.path(), start_of(1) + 4, b"?");
        damaged(dir.path(), 0, start_of(1), "2 valid records after it");

        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let at = append_each(&mut wal, [large(1, 10), large(2, 10), large(3, 3 << 20)]);
        assert_ne!(wal.append(&[large(4, 2 << 20)]).unwrap(), Appended::Not);
        assert_eq!(wal.at.half, 1);
        drop(wal);
        overwrite(dir.path(), at[1] + 4, b"?");
        damaged(dir.path(), 0, at[1], "1 valid records after it");
        // Once revision 3 is durable, nothing past the damage is lost.
        let (_wal, writes) = Wal::open(dir.path(), 3).unwrap();
        assert_eq!(revisions(&writes), [4]);
    }

    /// Records left from before the log started a half again are older
    /// than anything a start needs: a frame that does not check before them
    /// is the end of the log, not damage (and logged as a torn tail).
    #[test]
    fn older_records_past_the_end_are_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        append_each(&mut wal, (1..=5).map(|revision| large(revision, 100)));
        wal.checkpointed();
        // Shorter than the record it writes over: its end is inside it.
        append_each(&mut wal, [large(6, 10)]);
        drop(wal);
        let (_wal, writes) = Wal::open(dir.path(), 5).unwrap();
        assert_eq!(revisions(&writes), [6]);
        let (_wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(revisions(&writes), [6]);
        assert_eq!(inspect(dir.path(), 5).unwrap(), 6);
    }

    /// The CRCs of candidate bodies derived from the prefixes' CRCs are
    /// those of the bodies themselves, across the pieces the region is read
    /// in, and a batch of more than 127 writes (a count of two bytes) is
    /// taken for a frame.
    #[test]
    fn every_offset_is_tried_at_the_cost_of_one_pass() {
        let region: Vec<u8> = (0..2 * PIECE as u32 + 5000)
            .map(|i| (i * 7919 % 251) as u8)
            .collect();
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(&region, 40).unwrap();
        let candidates = [
            (0, 0, 0),
            (0, 100, 0),
            (17, 3000, 0),
            (999, 1, 0),
            (4000, 992, 0),
            (PIECE - 3, 10, 0),
            (PIECE - 100, PIECE + 200, 0),
        ];
        let crcs = body_crcs(&file, 40, &candidates).unwrap();
        for (&(i, length, _), crc) in candidates.iter().zip(crcs) {
            let body = &region[i + FRAME..i + FRAME + length];
            assert_eq!(crc, crc32fast::hash(body), "{i}+{length}");
        }
        let batch: Vec<Logged> = (1..=300).map(|revision| write(revision, "k")).collect();
        let body = postcard::to_stdvec(&BodyRef::V1(batch.iter().collect())).unwrap();
        assert!(plausible(&body));
        assert!(!plausible(&[0, 0, 1, b'p']));
        assert!(!plausible(&[0, 1, 1, b'/']));
        assert!(!plausible(&[1, 1, 1, b'p']));
    }

    /// A valid frame whose header and body straddle the pieces a region is
    /// read in, or the blocks of zeros skipped at a glance, is found where
    /// it begins, as in a region read whole.
    #[test]
    fn a_frame_across_two_pieces_is_found() {
        let batch = [write(7, "k"), write(8, "l")];
        let body = postcard::to_stdvec(&BodyRef::V1(batch.iter().collect())).unwrap();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend(crc32fast::hash(&body).to_le_bytes());
        frame.extend(&body);
        let blocks = [ZEROS - 3, ZEROS - 1, ZEROS, ZEROS + 1, 3 * ZEROS - 2];
        for at in [0, PIECE - 3, PIECE - FRAME - 2, 2 * PIECE - 1]
            .into_iter()
            .chain(blocks)
        {
            let file = tempfile::tempfile().unwrap();
            let size = (2 * PIECE + 4096) as u64;
            file.set_len(size).unwrap();
            file.write_all_at(&frame, at as u64).unwrap();
            let found = beyond(&file, 0, size, 7, None).unwrap();
            assert_eq!((found.records, found.first), (1, at as u64), "at {at}");
            assert_eq!((found.writes, found.highest), (1, 8), "at {at}");
            let refused = beyond(&file, 0, size, 7, Some(at as u64)).unwrap();
            assert_eq!(refused.records, 0, "at {at}, refused");
        }
    }

    /// A missing or empty store file beside a log that holds records is no
    /// first start; beside a fresh log, or none, it is.
    #[test]
    fn a_log_with_records_and_no_store_file_is_a_lost_store() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lost_store(dir.path()).unwrap(), None);
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(lost_store(dir.path()).unwrap(), None, "a fresh log");
        append_each(&mut wal, [write(1, "a"), write(2, "b")]);
        let refusal = lost_store(dir.path()).unwrap().unwrap();
        assert!(refusal.contains("kvs.redb is missing"), "{refusal}");
        assert!(refusal.contains("up to revision 2"), "{refusal}");
        std::fs::write(dir.path().join("kvs.redb"), b"").unwrap();
        let refusal = lost_store(dir.path()).unwrap().unwrap();
        assert!(refusal.contains("kvs.redb is empty"), "{refusal}");
        std::fs::write(dir.path().join("kvs.redb"), b"x").unwrap();
        assert_eq!(lost_store(dir.path()).unwrap(), None);
        // Even with its first record damaged.
        std::fs::remove_file(dir.path().join("kvs.redb")).unwrap();
        overwrite(dir.path(), HEADER + 4, b"?");
        assert!(lost_store(dir.path()).unwrap().is_some());
    }

    #[test]
    fn a_record_cut_by_the_end_of_the_file_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let at = append_each(&mut wal, [write(1, "a"), write(2, "b")]);
        drop(wal);
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("kvs.wal"))
            .unwrap();
        file.set_len(at[1] + FRAME as u64 + 3).unwrap();
        let (_wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_back(&writes), [(1, "a")]);
        // Made whole again, zeros after what it kept.
        assert_eq!(file.metadata().unwrap().len(), CAPACITY);
    }

    /// After a checkpoint the log starts again over its old records; a
    /// record as long as the first old one is followed by the second old
    /// one, whose revision is below it. Opened with a durable revision below
    /// every record (so that this rule alone stops it), the log must not
    /// read on into writes older than the ones it just gave.
    #[test]
    fn a_record_left_from_before_the_last_checkpoint_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        append_each(&mut wal, (1..=5).map(|revision| write(revision, "a")));
        wal.checkpointed();
        let at = append_each(&mut wal, [write(6, "b")]);
        assert_eq!(at, [HEADER]);
        drop(wal);
        let (mut wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_back(&writes), [(6, "b")]);
        // The next record follows the newest one, over the old ones.
        append_each(&mut wal, [write(7, "c")]);
        drop(wal);
        let (_wal, writes) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_back(&writes), [(6, "b"), (7, "c")]);
        // With the checkpoint's revision as the durable one, as at a start.
        let (_wal, writes) = Wal::open(dir.path(), 5).unwrap();
        assert_eq!(read_back(&writes), [(6, "b"), (7, "c")]);
    }
}
