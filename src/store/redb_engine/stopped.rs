//! Opening the disk database of a stopped store, for the commands that work
//! on its files themselves: `kvs verify --data-dir` ([`super::verify_dir`])
//! and `kvs compact` ([`super::compact_dir`]).

use std::path::Path;

use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata,
};

use super::codec::{self, PROJECTS};
use super::contain::{Panicked, contain};

/// Why a stopped store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoppedError {
    #[error("{0} holds no kvs.redb")]
    Missing(String),
    #[error("the store in {dir} is in use by a running server; stop it first, or {online}")]
    InUse {
        dir: String,
        /// The same command on a running server, as it is given.
        online: &'static str,
    },
    #[error(
        "the store in {0} is in the v1 format, from before checksums; \
         `kvs serve` migrates it at start: start it once first"
    )]
    OldFormat(String),
    #[error("{path} cannot be opened: {reason}")]
    Unreadable { path: String, reason: String },
    /// The file cannot be opened for writing (a read-only file system, or
    /// no permission): [`open_stopped_to_read`] opens it read-only.
    #[error("{path} cannot be opened for writing: {error}")]
    NotWritable {
        path: String,
        error: redb::DatabaseError,
    },
    /// `kvs.redb` is missing or empty beside a log that holds writes
    /// ([`super::wal::lost_store`]'s text).
    #[error("{0}")]
    LostStore(String),
    /// redb panicked on a page it read to open the file: it is damaged.
    #[error(
        "{path} is damaged: its structure cannot be read ({reason}); nothing was changed: \
         restore a backup (`kvs restore`)"
    )]
    Damaged { path: String, reason: String },
}

impl StoppedError {
    pub(super) fn unreadable(path: &Path, reason: impl ToString) -> StoppedError {
        StoppedError::Unreadable {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// redb panicked reading the file at `path`: a damaged page.
    fn damaged(path: &Path, panicked: Panicked) -> StoppedError {
        StoppedError::Damaged {
            path: path.display().to_string(),
            reason: panicked.to_string(),
        }
    }
}

/// A stopped store opened to be read ([`open_stopped_to_read`]).
pub(super) enum Stopped {
    Writable(Database),
    /// Its file cannot be written (a snapshot or a backup volume mounted
    /// read-only): opened read-only, and closed without writing anything.
    ReadOnly(ReadOnlyDatabase),
}

impl Stopped {
    pub(super) fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        match self {
            Stopped::Writable(database) => database.begin_read(),
            Stopped::ReadOnly(database) => database.begin_read(),
        }
    }
}

/// As [`open_stopped`], for a command that only reads (`kvs verify`): a
/// store whose file cannot be written is opened read-only instead, if it
/// needs no repair (redb repairs a store whose server was killed at its
/// first writable open, and cannot without writing).
pub(super) fn open_stopped_to_read(
    dir: &Path,
    cache_bytes: usize,
    online: &'static str,
) -> Result<Stopped, StoppedError> {
    let path = dir.join("kvs.redb");
    let error = match open_stopped(dir, cache_bytes, online) {
        Ok(database) => return Ok(Stopped::Writable(database)),
        Err(StoppedError::NotWritable { error, .. }) => error,
        Err(error) => return Err(error),
    };
    let opened = contain(|| {
        Database::builder()
            .set_cache_size(cache_bytes)
            .open_read_only(&path)
    });
    match opened {
        Ok(Ok(database)) => Ok(Stopped::ReadOnly(database)),
        Ok(Err(redb::DatabaseError::RepairAborted)) => Err(StoppedError::unreadable(
            &path,
            format!(
                "{error}; its server was killed, and redb repairs such a store before it \
                 reads it, which writes into the file: verify a writable copy"
            ),
        )),
        Ok(Err(error)) => Err(StoppedError::unreadable(&path, error)),
        Err(panicked) => Err(StoppedError::damaged(&path, panicked)),
    }
}

/// Whether `error` says the file cannot be opened for writing: a
/// read-only file system, or no permission to write.
fn not_writable(error: &redb::DatabaseError) -> bool {
    matches!(
        error,
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            )
    )
}

/// Opens `dir/kvs.redb`, which no server may hold, with a page cache of
/// `cache_bytes`, and refuses a database in the v1 format (the server
/// migrates it at start). `online` says how the command works on a running
/// server instead, for the refusal of a store in use.
///
/// The file is first opened read-only and its first tables read: a damaged
/// page there makes redb panic, and a database opened for writing would
/// then have marked the file for repair (and its close would write into
/// the damaged file). Only a store that passes is opened for writing (as
/// redb needs to repair a store whose server was killed, and to hold the
/// file's lock against a server while `kvs compact` copies it).
pub(super) fn open_stopped(
    dir: &Path,
    cache_bytes: usize,
    online: &'static str,
) -> Result<Database, StoppedError> {
    let path = dir.join("kvs.redb");
    match super::wal::lost_store(dir) {
        Ok(Some(refusal)) => return Err(StoppedError::LostStore(refusal)),
        Ok(None) => {}
        Err(error) => return Err(StoppedError::unreadable(&dir.join("kvs.wal"), error)),
    }
    if !path.exists() {
        return Err(StoppedError::Missing(dir.display().to_string()));
    }
    let in_use = || StoppedError::InUse {
        dir: dir.display().to_string(),
        online,
    };
    let damaged = |panicked: Panicked| StoppedError::damaged(&path, panicked);
    let probed = contain(|| {
        Database::builder()
            .set_cache_size(cache_bytes)
            .open_read_only(&path)
    })
    .map_err(damaged)?;
    match probed {
        Ok(database) => {
            let v1 = contain(|| database.begin_read().map(|txn| is_v1(&txn)));
            // Read-only: closing it writes nothing, whatever its pages.
            let _ = contain(move || drop(database));
            match v1.map_err(damaged)? {
                Ok(true) => return Err(StoppedError::OldFormat(dir.display().to_string())),
                Ok(false) => {}
                Err(error) => return Err(StoppedError::unreadable(&path, error)),
            }
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(in_use()),
        // A store whose server was killed: redb repairs it at a writable
        // open, below.
        Err(redb::DatabaseError::RepairAborted) => {}
        Err(error) => return Err(StoppedError::unreadable(&path, error)),
    }
    let opened = contain(|| Database::builder().set_cache_size(cache_bytes).open(&path));
    let database = match opened {
        Ok(Ok(database)) => database,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => return Err(in_use()),
        Ok(Err(error)) if not_writable(&error) => {
            return Err(StoppedError::NotWritable {
                path: path.display().to_string(),
                error,
            });
        }
        Ok(Err(error)) => return Err(StoppedError::unreadable(&path, error)),
        Err(panicked) => return Err(damaged(panicked)),
    };
    let v1 = contain(|| database.begin_read().map(|txn| is_v1(&txn)));
    match v1 {
        Ok(Ok(false)) => Ok(database),
        Ok(Ok(true)) => Err(StoppedError::OldFormat(dir.display().to_string())),
        Ok(Err(error)) => Err(StoppedError::unreadable(&path, error)),
        Err(panicked) => {
            // It may hold poisoned locks, and its close would write into
            // the damaged file.
            std::mem::forget(database);
            Err(damaged(panicked))
        }
    }
}

/// Closes a database opened by [`open_stopped`], which redb does by writing
/// its allocator state back: an error if that panics (a damaged page of
/// the free-page lists).
pub(super) fn close_stopped(database: Database) -> Result<(), Panicked> {
    contain(move || drop(database))
}

/// Closes a store opened by [`open_stopped_to_read`]; read-only, it writes
/// nothing, and its free-page lists go unread.
pub(super) fn close_stopped_to_read(stopped: Stopped) -> Result<(), Panicked> {
    match stopped {
        Stopped::Writable(database) => close_stopped(database),
        Stopped::ReadOnly(database) => contain(move || drop(database)),
    }
}

/// Whether the database was last written by a release before checksums:
/// no format versions, and a v1 project record.
fn is_v1(txn: &ReadTransaction) -> bool {
    let versioned = matches!(txn.open_table(codec::META), Ok(meta) if meta.len().unwrap_or(0) > 0);
    let old_record = txn.open_table(PROJECTS).is_ok_and(|projects| {
        matches!(projects.first(), Ok(Some((_, record))) if record.value().first() == Some(&codec::v1::TAG))
    });
    !versioned && old_record
}
