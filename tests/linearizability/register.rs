//! The sequential model of one key, as the contract describes it: absent, or
//! a value (bytes, here always text) with the version of the write that
//! stored it. Gets, puts, puts with `If-Match`, `incr` and deletes, each with
//! the outcome a client saw.
//!
//! Versions come from the server's one revision counter, so a key's model
//! cannot know them in advance: a write's version is the one its answer
//! gave, and the version a write of unknown outcome left is unknown until a
//! read or a refused `If-Match` shows it (the model then pins it). Each
//! known version must be above the key's previous one.

use super::wgl::Model;

/// What a client asked of the key.
#[derive(Clone, Debug)]
pub enum Act {
    Get,
    Put {
        value: String,
    },
    /// A put with `If-Match: "<expected>"`.
    PutIfMatch {
        expected: u64,
        value: String,
    },
    Incr {
        by: i64,
    },
    Delete,
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// 200 to a get: the bytes and `Kvs-Version`.
    Value { value: String, version: u64 },
    /// 404 to a get or a delete.
    Absent,
    /// 200 or 201 to a put: the version written.
    Written { version: u64 },
    /// 200 to an incr: the count and the version written.
    Counted { value: i64, version: u64 },
    /// 412 to a put with `If-Match`, with the current version from its
    /// `ETag` (none when the key is absent).
    Refused { current: Option<u64> },
    /// 409 to an incr: the value is not a 64-bit integer.
    Conflict,
    /// 204 to a delete.
    Deleted,
    /// No answer (the connection broke): it may or may not have happened.
    Unknown,
}

/// An operation on the key with its outcome.
#[derive(Clone, Debug)]
pub struct KeyOp {
    pub act: Act,
    pub seen: Seen,
}

/// The key's state: absent, or a value and its version (`None`: written by
/// an operation whose answer was lost, and not seen since).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Register(Option<(String, Option<u64>)>);

impl Register {
    fn holding(value: String, version: Option<u64>) -> Option<Register> {
        Some(Register(Some((value, version))))
    }

    /// Whether a write may have made `version`: versions only grow.
    fn newer(&self, version: u64) -> bool {
        match &self.0 {
            Some((_, Some(current))) => version > *current,
            _ => true,
        }
    }

    /// The current value with its version pinned to `version`, if the two
    /// can be the same.
    fn pinned(&self, version: u64) -> Option<Register> {
        match &self.0 {
            Some((value, known)) if known.is_none_or(|known| known == version) => {
                Register::holding(value.clone(), Some(version))
            }
            _ => None,
        }
    }

    /// What an incr by `by` counts to: from 0 when absent, `None` when the
    /// value is not a 64-bit integer in decimal (the server's 409).
    fn counted(&self, by: i64) -> Option<i64> {
        match &self.0 {
            None => Some(by),
            Some((value, _)) => value.parse::<i64>().ok()?.checked_add(by),
        }
    }
}

impl Model for Register {
    type Op = KeyOp;

    fn step(&self, op: &KeyOp) -> Option<Register> {
        let absent = self.0.is_none();
        match (&op.act, &op.seen) {
            // What a lost answer would have done, had it taken effect.
            (Act::Get, Seen::Unknown) => None,
            (Act::Put { value }, Seen::Unknown) => Register::holding(value.clone(), None),
            (Act::PutIfMatch { expected, value }, Seen::Unknown) => {
                self.pinned(*expected)?;
                Register::holding(value.clone(), None)
            }
            (Act::Incr { by }, Seen::Unknown) => {
                Register::holding(self.counted(*by)?.to_string(), None)
            }
            (Act::Delete, Seen::Unknown) => (!absent).then(Register::default),

            (Act::Get, Seen::Value { value, version }) => {
                let pinned = self.pinned(*version)?;
                (pinned.0.as_ref().map(|(v, _)| v) == Some(value)).then_some(pinned)
            }
            (Act::Get | Act::Delete, Seen::Absent) => absent.then(|| self.clone()),
            (Act::Put { value }, Seen::Written { version }) => {
                self.newer(*version).then_some(())?;
                Register::holding(value.clone(), Some(*version))
            }
            (Act::PutIfMatch { expected, value }, Seen::Written { version }) => {
                self.pinned(*expected)?;
                self.newer(*version).then_some(())?;
                Register::holding(value.clone(), Some(*version))
            }
            (Act::PutIfMatch { .. }, Seen::Refused { current: None }) => {
                absent.then(|| self.clone())
            }
            (
                Act::PutIfMatch { expected, .. },
                Seen::Refused {
                    current: Some(current),
                },
            ) => {
                (current != expected).then_some(())?;
                self.pinned(*current)
            }
            (Act::Incr { by }, Seen::Counted { value, version }) => {
                (self.counted(*by)? == *value && self.newer(*version)).then_some(())?;
                Register::holding(value.to_string(), Some(*version))
            }
            (Act::Incr { by }, Seen::Conflict) => {
                (!absent && self.counted(*by).is_none()).then(|| self.clone())
            }
            (Act::Delete, Seen::Deleted) => (!absent).then(Register::default),
            _ => None,
        }
    }
}
