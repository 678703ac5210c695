//! Opening the disk database of a stopped store, for the commands that work
//! on its files themselves: `kvs verify --data-dir` ([`super::verify_dir`])
//! and `kvs compact` ([`super::compact_dir`]).

use std::panic::catch_unwind;
use std::path::Path;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::codec::{self, PROJECTS};

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
    /// `kvs.redb` is missing or empty beside a log that holds writes
    /// ([`super::wal::lost_store`]'s text).
    #[error("{0}")]
    LostStore(String),
}

impl StoppedError {
    pub(super) fn unreadable(path: &Path, reason: impl ToString) -> StoppedError {
        StoppedError::Unreadable {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Opens `dir/kvs.redb`, which no server may hold, with a page cache of
/// `cache_bytes`, and refuses a database in the v1 format (the server
/// migrates it at start). `online` says how the command works on a running
/// server instead, for the refusal of a store in use.
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
    let opened = catch_unwind(|| Database::builder().set_cache_size(cache_bytes).open(&path));
    let database = match opened {
        Ok(Ok(database)) => database,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(StoppedError::InUse {
                dir: dir.display().to_string(),
                online,
            });
        }
        Ok(Err(error)) => return Err(StoppedError::unreadable(&path, error)),
        Err(_) => {
            return Err(StoppedError::unreadable(
                &path,
                "the file is damaged (its structure cannot be read)",
            ));
        }
    };
    let txn = database
        .begin_read()
        .map_err(|error| StoppedError::unreadable(&path, error))?;
    if is_v1(&txn) {
        return Err(StoppedError::OldFormat(dir.display().to_string()));
    }
    drop(txn);
    Ok(database)
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
