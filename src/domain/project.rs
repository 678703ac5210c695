//! Project ids and the settings a project carries.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Role, Timestamp};

/// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(text: &str) -> Option<ProjectId> {
        let bytes = text.as_bytes();
        let first_ok = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes[1.min(bytes.len())..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        (first_ok && rest_ok && bytes.len() <= 64).then(|| ProjectId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a project keeps its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    /// On disk, every write fsync'd before it is acknowledged.
    Disk,
    /// In memory only: no key survives a restart.
    Memory,
}

impl StorageMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::Disk => "disk",
            StorageMode::Memory => "memory",
        }
    }
}

/// Who may use a project's keys without any credential: nobody (the
/// default), anyone for reading, or anyone for reading and writing. Only an
/// admin opens a project; a request that presents a credential is judged by
/// it alone, never as anonymous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Public {
    #[default]
    None,
    Read,
    Write,
}

impl Public {
    pub fn as_str(self) -> &'static str {
        match self {
            Public::None => "none",
            Public::Read => "read",
            Public::Write => "write",
        }
    }

    pub fn parse(text: &str) -> Option<Public> {
        match text {
            "none" => Some(Public::None),
            "read" => Some(Public::Read),
            "write" => Some(Public::Write),
            _ => None,
        }
    }

    /// The role a request without credential has on the project, if any.
    pub fn role(self) -> Option<Role> {
        match self {
            Public::None => None,
            Public::Read => Some(Role::Read),
            Public::Write => Some(Role::Write),
        }
    }
}

/// A project's settings (its live figures, keys/bytes/revision, are kept by
/// the store beside them). Not written to disk as it is: the engine's codec
/// has its own versioned record for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectSettings {
    pub id: ProjectId,
    pub storage: StorageMode,
    pub keys_discoverable: bool,
    pub max_value_bytes: u64,
    pub max_keys: Option<u64>,
    /// What requests without a credential may do.
    pub public: Public,
    pub created_at: Timestamp,
    /// The server revision when the project was created.
    pub created_revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_follow_the_contract_pattern() {
        for good in ["a", "0abc", "a_A.b-c", &"y".repeat(64)] {
            assert!(ProjectId::parse(good).is_some(), "{good:?}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            ".a",
            "a/x",
            "a x",
            "aä",
            "a%",
            "a:",
            &"x".repeat(65),
        ] {
            assert!(ProjectId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
