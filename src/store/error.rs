//! What can go wrong in the store, in terms the HTTP layer maps to statuses.

/// A store failure. Each variant but `Internal` is a refusal that left
/// everything as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no such project")]
    ProjectNotFound,
    #[error("the project already exists")]
    ProjectExists,
    #[error("no such key")]
    KeyNotFound,
    #[error("no such token")]
    TokenNotFound,
    /// The caller's right is gone (its token revoked, expired or deleted
    /// with its project; its project closed to anonymous callers) by the
    /// time its write would commit: nothing was applied.
    #[error("the caller's credential is no longer valid")]
    Unauthorized,
    /// The caller's right shrank (a project open to anonymous writes now
    /// open only to reads) by the time its write would commit.
    #[error("{0}")]
    Forbidden(String),
    #[error("the last admin token cannot be deleted")]
    LastAdminToken,
    #[error("the precondition does not hold")]
    PreconditionFailed { current: Option<u64> },
    /// The indices of every check of a transaction that did not hold.
    #[error("checks {0:?} do not hold")]
    ChecksFailed(Vec<usize>),
    /// An op of a write failed; nothing was applied.
    #[error("op {index} failed: {error}")]
    FailedOp {
        index: usize,
        error: Box<StoreError>,
    },
    /// The current value does not allow the op (an incr of a non-integer).
    #[error("{0}")]
    Conflict(String),
    #[error("the project holds its maximum of {max_keys} keys")]
    QuotaExceeded { max_keys: u64 },
    #[error("the value is larger than the project's limit of {max} bytes")]
    ValueTooLarge { max: u64 },
    /// The values a transaction's gets read already come to `limit` bytes
    /// or more: its answer would hold them all at once.
    #[error("the values read come to more than {limit} bytes")]
    AnswerTooLarge { limit: u64 },
    /// The changes asked for are older than the change log keeps; a watch
    /// may resume from `compact_revision` or later.
    #[error("changes up to revision {compact_revision} are no longer kept")]
    HistoryCompacted { compact_revision: u64 },
    #[error("the disk is full")]
    StorageFull,
    #[error("the store is closed")]
    Closed,
    #[error("storage is reopening after a failure")]
    Unavailable,
    /// A cluster node sent a write and could not learn whether it was
    /// applied (the connection to the cluster failed with the write in
    /// flight): it may or may not have been.
    #[error("the outcome of the write is unknown")]
    OutcomeUnknown,
    /// The write is larger than the cluster accepts in one request (etcd's
    /// `--max-request-bytes`, `limit` bytes): nothing was applied.
    #[error("the write is larger than the cluster's limit of {limit} bytes")]
    ClusterLimit { limit: u64 },
    #[error("storage failure: {0}")]
    Internal(String),
    /// A cluster node's judge asked for the record of this key, which the
    /// write's first read left to be read later (see
    /// `etcd_engine::fetch`): the engine reads it and judges the write
    /// again. A signal inside the engine, never an answer: the loop that
    /// judges a write takes it, and nothing else makes it.
    #[error("the record of {0} is still to be read")]
    ReadLater(String),
    /// A stored record or value failed its checksum (or cannot be read as
    /// one): nothing of it is used. The text names the table and key, for
    /// logs and `kvs verify`; the HTTP answer does not show it.
    #[error("damaged record: {0}")]
    DataCorrupted(String),
}

impl StoreError {
    pub fn internal(error: impl std::fmt::Display) -> StoreError {
        StoreError::Internal(error.to_string())
    }

    /// The key of a [`StoreError::ReadLater`] signal, bare or as the
    /// error of an op.
    pub fn read_later(&self) -> Option<&str> {
        match self {
            StoreError::ReadLater(key) => Some(key),
            StoreError::FailedOp { error, .. } => error.read_later(),
            _ => None,
        }
    }

    /// The error of the failed op itself, for a write of one op.
    pub fn into_op_error(self) -> StoreError {
        match self {
            StoreError::FailedOp { error, .. } => *error,
            other => other,
        }
    }
}
