//! The backup format, and the one writer and one reader of it.
//!
//! A backup is JSON Lines: a header line `{"kvs_backup": 1, "revision",
//! "created_at", "server_version"}`; then one line per project
//! (`{"project": {…}}`), per token (`{"token": {…}}`, SHA-256 digests only,
//! never a secret) and per key (`{"key": {…}}`, the keys of each project in
//! key order after all projects and tokens); and last a trailer
//! `{"end": {"projects", "tokens", "keys", "sha256"}}` whose `sha256` is the
//! hex SHA-256 of every byte before the trailer line. A file without its
//! trailer, or whose counts or checksum do not match, is refused whole, so
//! a truncated or damaged backup is never restored in part.
//!
//! Everything in it is one revision of the whole server ([`StoreSnapshot`]).
//! The change log (watch history) is not included: a restored server
//! answers a watch from before a project's last write with 410
//! `history_compacted`.
//!
//! [`write`] serves `GET /v1/backup` and the scheduled backups alike;
//! [`Reader`] serves `kvs backup` (which checks what it downloads) and
//! [`restore`] (`kvs restore`).

pub mod schedule;

pub use schedule::{backup_file_name, schedule, write_file};

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::domain::{
    DEFAULT_CONTENT_TYPE, Digest, ImportedDigest, Key, MAX_CONTENT_TYPE_BYTES, ProjectId,
    ProjectSettings, Public, Role, StorageMode, Timestamp, TokenId, TokenRecord, TokenSource,
};
use crate::store::redb_engine::RESTORE_REVISION_BUMP;
use crate::store::{Entry, KeyMeta, ProjectDump, Restore, StoreError, StoreSnapshot, TokenDump};

/// The format's version, the header's `kvs_backup`.
pub const FORMAT: u64 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    kvs_backup: u64,
    revision: u64,
    created_at: String,
    server_version: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectLine {
    id: ProjectId,
    storage: StorageMode,
    keys_discoverable: bool,
    max_value_bytes: u64,
    max_keys: Option<u64>,
    /// Written only when not `none`, so that a backup of a server without
    /// public projects reads as it did before the setting existed.
    #[serde(default, skip_serializing_if = "is_private")]
    public: Public,
    created_at: String,
    created_revision: u64,
    /// The last revision that wrote in the project.
    revision: u64,
    keys: u64,
    bytes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLine {
    id: String,
    /// Hex SHA-256 of the secret.
    sha256: String,
    role: Role,
    project: Option<ProjectId>,
    prefix: Option<String>,
    name: Option<String>,
    created_at: String,
    expires_at: Option<String>,
    source: TokenSource,
    /// An imported token's PBKDF2 digest, until its key is first presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imported_digest: Option<String>,
}

/// A key: its value as text when the bytes are UTF-8, else base64 (as
/// `kvs export` writes it). Written from the stored entry without copying
/// its key, content type or value; read back owned.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyLine<'a> {
    project: ProjectId,
    key: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<Base64Value<'a>>,
    content_type: Cow<'a, str>,
    version: u64,
    created_at: String,
    updated_at: String,
    expires_at: Option<String>,
}

/// A binary value in base64: the stored bytes, encoded as they are written
/// (no second copy of a large value), or the text read back.
enum Base64Value<'a> {
    Bytes(&'a [u8]),
    Text(String),
}

impl Serialize for Base64Value<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Base64Value::Bytes(bytes) => {
                serializer.collect_str(&base64::display::Base64Display::new(bytes, &BASE64))
            }
            Base64Value::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for Base64Value<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Base64Value::Text)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    projects: u64,
    tokens: u64,
    keys: u64,
    sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Line<'a> {
    Project(ProjectLine),
    Token(TokenLine),
    Key(KeyLine<'a>),
    End(Trailer),
}

/// What a backup holds, as the trailer counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub revision: u64,
    pub projects: u64,
    pub tokens: u64,
    pub keys: u64,
    /// Bytes of the whole file, trailer included.
    pub bytes: u64,
}

/// Hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
    /// The line being written, reused from line to line.
    line: Vec<u8>,
}

impl<W: Write> Hashing<W> {
    fn line(&mut self, line: &impl Serialize) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, line)?;
        self.line.push(b'\n');
        self.hash.update(&self.line);
        self.bytes += self.line.len() as u64;
        self.inner.write_all(&self.line)
    }
}

/// Writes the whole snapshot to `out` in the backup format, streaming key by
/// key (blocking: run it off the async runtime).
pub fn write(snapshot: &dyn StoreSnapshot, out: impl Write) -> io::Result<Summary> {
    let mut out = Hashing {
        inner: io::BufWriter::with_capacity(64 << 10, out),
        hash: Sha256::new(),
        bytes: 0,
        line: Vec::new(),
    };
    let mut summary = Summary {
        revision: snapshot.revision(),
        ..Summary::default()
    };
    out.line(&Header {
        kvs_backup: FORMAT,
        revision: summary.revision,
        created_at: Timestamp::now().rfc3339(),
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
    })?;
    let projects = snapshot.projects();
    for project in &projects {
        out.line(&Line::Project(project_line(project)))?;
        summary.projects += 1;
    }
    for token in snapshot.tokens() {
        out.line(&Line::Token(token_line(&token)))?;
        summary.tokens += 1;
    }
    for project in &projects {
        let id = &project.settings.id;
        let mut failed = None;
        let result = snapshot.keys(id, &mut |entry| {
            out.line(&Line::Key(key_line(id, &entry)))
                .map_err(|error| {
                    let store = StoreError::internal(&error);
                    failed = Some(error);
                    store
                })?;
            summary.keys += 1;
            Ok(())
        });
        if let Some(error) = failed {
            return Err(error);
        }
        result.map_err(io::Error::other)?;
    }
    let sha256 = hex::encode(out.hash.clone().finalize());
    let trailer = Line::End(Trailer {
        projects: summary.projects,
        tokens: summary.tokens,
        keys: summary.keys,
        sha256,
    });
    out.line(&trailer)?;
    out.inner.flush()?;
    summary.bytes = out.bytes;
    Ok(summary)
}

fn is_private(public: &Public) -> bool {
    *public == Public::None
}

fn project_line(project: &ProjectDump) -> ProjectLine {
    let settings = &project.settings;
    ProjectLine {
        id: settings.id.clone(),
        storage: settings.storage,
        keys_discoverable: settings.keys_discoverable,
        max_value_bytes: settings.max_value_bytes,
        max_keys: settings.max_keys,
        public: settings.public,
        created_at: settings.created_at.rfc3339(),
        created_revision: settings.created_revision,
        revision: project.revision,
        keys: project.keys,
        bytes: project.bytes,
    }
}

fn token_line(token: &TokenDump) -> TokenLine {
    let record = &token.record;
    TokenLine {
        id: record.id.as_str().to_owned(),
        sha256: hex::encode(record.digest.0),
        role: record.role,
        project: record.project.clone(),
        prefix: record.prefix.clone(),
        name: record.name.clone(),
        created_at: record.created_at.rfc3339(),
        expires_at: record.expires_at.map(Timestamp::rfc3339),
        source: record.source,
        imported_digest: token.imported.as_ref().map(|d| d.as_str().to_owned()),
    }
}

/// A key's content type as a backup keeps it: as stored, unless it is longer
/// than any write takes now ([`MAX_CONTENT_TYPE_BYTES`]; releases before that
/// bound took any length from an import or a transaction). Such a one is
/// backed up as [`DEFAULT_CONTENT_TYPE`], so that the key's line stays within
/// what [`Reader::longest_line`] reads and the backup restores.
fn backed_up_content_type(stored: &str) -> &str {
    if stored.len() <= MAX_CONTENT_TYPE_BYTES {
        stored
    } else {
        DEFAULT_CONTENT_TYPE
    }
}

fn key_line<'a>(project: &ProjectId, entry: &'a Entry) -> KeyLine<'a> {
    let meta = &entry.meta;
    let (value, value_base64) = match std::str::from_utf8(&entry.value) {
        Ok(text) => (Some(Cow::Borrowed(text)), None),
        Err(_) => (None, Some(Base64Value::Bytes(&entry.value))),
    };
    KeyLine {
        project: project.clone(),
        key: Cow::Borrowed(meta.key.as_str()),
        value,
        value_base64,
        content_type: Cow::Borrowed(backed_up_content_type(&meta.content_type)),
        version: meta.version,
        created_at: meta.created_at.rfc3339(),
        updated_at: meta.updated_at.rfc3339(),
        expires_at: meta.expires_at.map(Timestamp::rfc3339),
    }
}

/// One record of a backup, as read back.
pub enum Record {
    Project(ProjectDump),
    Token(TokenDump),
    Key(ProjectId, Entry),
    /// The trailer, checked: the backup is whole.
    End(Summary),
}

/// Reads a backup line by line and checks it as it goes: the header first,
/// then every line parsed and hashed, and the trailer's counts and checksum
/// last. Only an `End` record says the backup is whole.
#[derive(Default)]
pub struct Reader {
    hash: Sha256,
    summary: Summary,
    started: bool,
    ended: bool,
    /// Number of the line read last, for messages.
    line: u64,
    /// What the lines so far hold, to refuse a backup that names a project
    /// or a token twice, a key twice or out of order, or a token of a
    /// project it does not hold: an edited file whose checksum was made
    /// again, which would restore a store that `kvs verify` calls damaged.
    seen: Seen,
}

/// The projects and tokens a backup's lines named so far, and where its
/// keys are.
#[derive(Default)]
struct Seen {
    projects: HashSet<ProjectId>,
    tokens: HashSet<String>,
    /// The project whose keys the last key line was of, and that key.
    last_key: Option<(ProjectId, String)>,
    /// The projects whose keys came before `last_key`'s.
    keys_done: HashSet<ProjectId>,
    /// The largest value a key of the projects so far can hold: the larger
    /// of a project's `max_value_bytes` and its `bytes` (a value stored
    /// before the limit was lowered stays, and is counted in `bytes`).
    largest_value: u64,
}

impl Seen {
    fn project(&mut self, line: &ProjectLine) -> anyhow::Result<()> {
        let id = &line.id;
        if !self.projects.insert(id.clone()) {
            bail!("project {id} appears twice");
        }
        let largest = line.max_value_bytes.max(line.bytes);
        self.largest_value = self.largest_value.max(largest);
        Ok(())
    }

    fn token(&mut self, line: &TokenLine) -> anyhow::Result<()> {
        if !self.tokens.insert(line.id.clone()) {
            bail!("token {} appears twice", line.id);
        }
        if let Some(project) = &line.project
            && !self.projects.contains(project)
        {
            bail!(
                "token {} is of project {project}, which no line before it holds",
                line.id
            );
        }
        Ok(())
    }

    /// A backup holds each project's keys together, each key once, in key
    /// order (as [`write`] writes them).
    fn key(&mut self, project: &ProjectId, key: &str) -> anyhow::Result<()> {
        if !self.projects.contains(project) {
            bail!("key {key:?} is of project {project}, which no line before it holds");
        }
        match &mut self.last_key {
            Some((last_project, last)) if last_project == project => {
                if key <= last.as_str() {
                    bail!(
                        "key {key:?} of project {project} comes after {last:?}: a backup holds \
                         each key once, in key order"
                    );
                }
                key.clone_into(last);
            }
            last_key => {
                if self.keys_done.contains(project) {
                    bail!("the keys of project {project} come again after another project's");
                }
                if let Some((done, _)) = last_key.replace((project.clone(), key.to_owned())) {
                    self.keys_done.insert(done);
                }
            }
        }
        Ok(())
    }
}

/// The longest line beside the value it may carry: the header, a project,
/// a token (its name is at most a 1 MiB request body, six bytes a
/// character once escaped), or a key line's key (1024 bytes), content type
/// (at most [`MAX_CONTENT_TYPE_BYTES`] as [`key_line`] writes it; a backup of
/// an earlier release may hold a longer one, taken while it fits here) and
/// times.
const LINE_BESIDE_VALUE: u64 = 8 << 20;

/// The bytes a line may take for each byte of a value: JSON writes a
/// control character as six (`\u0001`), base64 four for three.
const VALUE_ESCAPED: u64 = 6;

impl Reader {
    /// The longest the next line may be: [`LINE_BESIDE_VALUE`], and room
    /// for the largest value the projects read so far can hold (none
    /// before the project lines). [`next_line`] reads no further, and
    /// [`Reader::line`] refuses a line longer than this, so a damaged or
    /// edited backup's line of any length costs at most this much memory.
    pub fn longest_line(&self) -> u64 {
        let value = self.seen.largest_value.saturating_mul(VALUE_ESCAPED);
        LINE_BESIDE_VALUE.saturating_add(value)
    }

    /// The header's revision, once it has been read.
    pub fn revision(&self) -> Option<u64> {
        self.started.then_some(self.summary.revision)
    }

    /// Takes the next line (with or without its `\n`); `None` for the
    /// header.
    pub fn line(&mut self, bytes: &[u8]) -> anyhow::Result<Option<Record>> {
        self.line += 1;
        let number = self.line;
        let result = self.parse(bytes);
        self.summary.bytes += bytes.len() as u64;
        result.with_context(|| format!("line {number}"))
    }

    fn parse(&mut self, bytes: &[u8]) -> anyhow::Result<Option<Record>> {
        let longest = self.longest_line();
        if bytes.len() as u64 > longest {
            bail!(
                "the line is longer than {longest} bytes, the most a line of this backup can \
                 take (its projects' largest value, escaped, and its key): the backup is damaged"
            );
        }
        if self.ended {
            bail!("data after the trailer");
        }
        if !bytes.ends_with(b"\n") {
            bail!("the backup is truncated (its last line is incomplete)");
        }
        if !self.started {
            let header: Header = serde_json::from_slice(bytes)
                .map_err(|_| anyhow!("not a kvs backup (no kvs_backup header)"))?;
            if header.kvs_backup != FORMAT {
                bail!(
                    "a kvs backup of format {}, which this kvs does not read (it reads {FORMAT})",
                    header.kvs_backup
                );
            }
            self.hash.update(bytes);
            self.started = true;
            self.summary.revision = header.revision;
            return Ok(None);
        }
        let line: Line = serde_json::from_slice(bytes).context("not a backup record")?;
        let record = match line {
            Line::End(trailer) => {
                let sha256 = hex::encode(self.hash.clone().finalize());
                let counted = (
                    self.summary.projects,
                    self.summary.tokens,
                    self.summary.keys,
                );
                if (trailer.projects, trailer.tokens, trailer.keys) != counted {
                    bail!("the trailer's counts do not match the records: the backup is damaged");
                }
                if trailer.sha256 != sha256 {
                    bail!("the checksum does not match: the backup is damaged");
                }
                self.ended = true;
                let mut summary = self.summary;
                summary.bytes += bytes.len() as u64;
                return Ok(Some(Record::End(summary)));
            }
            Line::Project(line) => {
                self.summary.projects += 1;
                self.no_later_than(line.revision)?;
                self.seen.project(&line)?;
                Record::Project(project_dump(line)?)
            }
            Line::Token(line) => {
                self.summary.tokens += 1;
                self.seen.token(&line)?;
                Record::Token(token_dump(line)?)
            }
            Line::Key(line) => {
                self.summary.keys += 1;
                self.no_later_than(line.version)?;
                self.seen.key(&line.project, &line.key)?;
                let (project, entry) = entry(line)?;
                Record::Key(project, entry)
            }
        };
        self.hash.update(bytes);
        Ok(Some(record))
    }

    /// A revision in a record after the header's would let a restored server
    /// issue it again.
    fn no_later_than(&self, revision: u64) -> anyhow::Result<()> {
        if revision > self.summary.revision {
            bail!(
                "revision {revision} is after the backup's revision {}",
                self.summary.revision
            );
        }
        Ok(())
    }

    /// Called at the end of the input: an error unless the trailer came.
    pub fn finish(&self) -> anyhow::Result<Summary> {
        if !self.started {
            bail!("the file is empty: not a kvs backup");
        }
        if !self.ended {
            bail!("the backup is truncated: it ends without its trailer");
        }
        Ok(self.summary)
    }
}

fn time(text: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse_rfc3339(text).ok_or_else(|| anyhow!("{text:?} is not an RFC 3339 time"))
}

fn project_dump(line: ProjectLine) -> anyhow::Result<ProjectDump> {
    Ok(ProjectDump {
        settings: ProjectSettings {
            id: line.id,
            storage: line.storage,
            keys_discoverable: line.keys_discoverable,
            max_value_bytes: line.max_value_bytes,
            max_keys: line.max_keys,
            public: line.public,
            created_at: time(&line.created_at)?,
            created_revision: line.created_revision,
        },
        revision: line.revision,
        keys: line.keys,
        bytes: line.bytes,
    })
}

fn token_dump(line: TokenLine) -> anyhow::Result<TokenDump> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&line.sha256, &mut digest)
        .map_err(|_| anyhow!("a token's sha256 is not 64 hex digits"))?;
    let imported = line
        .imported_digest
        .map(|text| ImportedDigest::parse(&text))
        .transpose()
        .map_err(|error| anyhow!("a token's imported digest: {error}"))?;
    Ok(TokenDump {
        record: TokenRecord {
            id: TokenId::from_path(&line.id),
            digest: Digest(digest),
            role: line.role,
            project: line.project,
            prefix: line.prefix,
            name: line.name,
            created_at: time(&line.created_at)?,
            expires_at: line.expires_at.as_deref().map(time).transpose()?,
            source: line.source,
        },
        imported,
    })
}

fn entry(line: KeyLine<'_>) -> anyhow::Result<(ProjectId, Entry)> {
    let value = match (line.value, line.value_base64) {
        (Some(text), None) => Bytes::from(text.into_owned()),
        (None, Some(Base64Value::Text(encoded))) => Bytes::from(
            BASE64
                .decode(encoded)
                .map_err(|_| anyhow!("value_base64 is not base64"))?,
        ),
        (None, Some(Base64Value::Bytes(bytes))) => Bytes::copy_from_slice(bytes),
        _ => bail!("a key has either value or value_base64"),
    };
    let key = Key::parse(line.key.into_owned()).map_err(|error| anyhow!("{error}"))?;
    let meta = KeyMeta {
        key,
        version: line.version,
        created_at: time(&line.created_at)?,
        updated_at: time(&line.updated_at)?,
        expires_at: line.expires_at.as_deref().map(time).transpose()?,
        size: value.len() as u64,
        content_type: line.content_type.into_owned(),
    };
    Ok((line.project, Entry { meta, value }))
}

/// Reads a line, with its `\n` if it had one, or its first `longest + 1`
/// bytes when it is longer (which [`Reader::line`] refuses: a line is never
/// read whole before it is found too long); `false` at the end.
pub fn next_line(input: &mut impl BufRead, line: &mut Vec<u8>, longest: u64) -> io::Result<bool> {
    line.clear();
    let mut bounded = input.take(longest.saturating_add(1));
    Ok(bounded.read_until(b'\n', line)? > 0)
}

/// `kvs restore`: reads a backup and writes a new data directory that a
/// server started on it answers as the backed-up server did at the backup's
/// revision. Refuses a directory that holds anything unless `force` (then
/// the store in it is replaced). Nothing is live unless the whole backup
/// was read and verified.
pub fn restore(input: impl io::Read, dir: &Path, force: bool) -> anyhow::Result<Summary> {
    let occupied = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        Err(error) => return Err(anyhow!("cannot read {}: {error}", dir.display())),
    };
    if occupied && !force {
        bail!(
            "{} is not empty; restore into a new directory (or pass --force to replace the store \
             in it, with its server stopped)",
            dir.display()
        );
    }
    let mut restorer = crate::store::restore_into(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let summary = read_into(input, restorer.as_mut(), Some(LARGEST_RESTORED_REVISION))?;
    restorer.finish(summary.revision)?;
    Ok(summary)
}

/// The largest backup revision `kvs restore` takes into a data directory:
/// the restored server resumes [`RESTORE_REVISION_BUMP`] past it, and goes
/// no further than 2^53 - 1, the largest integer that a JavaScript client
/// reads exactly (a version is a JSON number); a larger one would leave no
/// room for the bump, and at u64::MAX the revision would wrap to 0 and
/// hand out versions again.
pub const LARGEST_RESTORED_REVISION: u64 = (1 << 53) - 1 - RESTORE_REVISION_BUMP;

/// Reads a whole backup into `restorer`, record by record; the summary
/// once the trailer has checked out (the caller then finishes it). A
/// header revision above `largest` is refused before anything is written.
fn read_into(
    input: impl io::Read,
    restorer: &mut dyn Restore,
    largest: Option<u64>,
) -> anyhow::Result<Summary> {
    let mut reader = Reader::default();
    let mut input = io::BufReader::with_capacity(256 << 10, input);
    let mut line = Vec::new();
    let mut summary = None;
    while next_line(&mut input, &mut line, reader.longest_line())
        .context("cannot read the backup")?
    {
        let record = reader.line(&line)?;
        match record {
            None => {
                let revision = reader.revision().unwrap_or(0);
                if let Some(largest) = largest.filter(|largest| revision > *largest) {
                    bail!(
                        "line 1: the backup's revision {revision} is above {largest}, the \
                         largest a restore takes (a restored server resumes \
                         {RESTORE_REVISION_BUMP} revisions later, and revisions stay at most \
                         2^53 - 1): the header was edited, or is damaged"
                    );
                }
            }
            Some(Record::Project(project)) => restorer.project(&project)?,
            Some(Record::Token(token)) => restorer.token(&token.record, token.imported.as_ref())?,
            Some(Record::Key(project, entry)) => {
                restorer.key(&project, &entry).with_context(|| {
                    format!(
                        "key {:?} of project {project} ({} bytes)",
                        entry.meta.key.as_str(),
                        entry.value.len()
                    )
                })?
            }
            Some(Record::End(whole)) => summary = Some(whole),
        }
    }
    let summary = match summary {
        Some(summary) => summary,
        None => reader.finish()?,
    };
    reader.finish()?;
    Ok(summary)
}

/// What a restore into a cluster did.
#[cfg(feature = "etcd")]
pub struct ClusterRestore {
    pub summary: Summary,
    /// Keys skipped because their expiry had passed.
    pub expired: u64,
}

/// `kvs restore --etcd-endpoints`: writes a backup into the etcd cluster
/// under the settings' prefix, for nodes started on it afterwards (they are
/// stopped meanwhile). `open` opens the backup: it is read twice, once to
/// check it whole (trailer, counts, checksum, every key within the
/// cluster's request limit) before anything is written, then to write it.
/// Refuses a prefix that holds anything unless `force` (then everything
/// under it is deleted, after the check). A restore that fails while
/// writing removes what it wrote, and says so.
#[cfg(feature = "etcd")]
pub fn restore_cluster<R: io::Read>(
    open: impl Fn() -> anyhow::Result<R>,
    settings: &crate::config::EtcdSettings,
    force: bool,
) -> anyhow::Result<ClusterRestore> {
    use crate::store::etcd_engine::EtcdRestorer;
    let endpoints = settings.endpoints.join(",");
    let prefix = &settings.prefix;
    let mut restorer = EtcdRestorer::connect(settings)
        .with_context(|| format!("cannot reach etcd at {endpoints}"))?;
    let held = restorer
        .occupied()
        .with_context(|| format!("cannot read etcd at {endpoints}"))?;
    if held > 0 && !force {
        bail!(
            "the prefix {prefix:?} in etcd at {endpoints} holds {held} keys (a node started on \
             it writes a default project and an admin token); restore under a new prefix \
             (--etcd-prefix), or stop every kvs node of it and pass --force to replace \
             everything under it"
        );
    }
    let mut check = restorer.size_check();
    read_into(open()?, &mut check, None).map_err(|error| {
        let too_large = matches!(
            error.downcast_ref::<StoreError>(),
            Some(StoreError::ClusterLimit { .. })
        );
        if too_large {
            error.context(
                "nothing was written; every key must fit in one etcd request: raise the \
                 members' --max-request-bytes and give kvs restore the same \
                 --etcd-max-request-bytes",
            )
        } else {
            error.context("nothing was written")
        }
    })?;
    if held > 0 {
        restorer
            .clear()
            .with_context(|| format!("cannot delete what the prefix {prefix:?} holds"))?;
    }
    let written = open().and_then(|input| {
        let summary = read_into(input, &mut restorer, None)?;
        restorer.complete()?;
        Ok(summary)
    });
    let summary = match written {
        Ok(summary) => summary,
        Err(error) => {
            let left = match restorer.abandon() {
                Ok(true) => format!(
                    "what it had written was deleted again: the prefix {prefix:?} is empty; \
                     run kvs restore again"
                ),
                Ok(false) => "nothing was written".to_owned(),
                Err(cleanup) => format!(
                    "the prefix {prefix:?} holds part of the backup and could not be emptied \
                     ({cleanup}): start no node on it, and run kvs restore again with --force"
                ),
            };
            return Err(error.context(left));
        }
    };
    let expired = restorer.expired();
    Ok(ClusterRestore { summary, expired })
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::Reader;

    proptest! {
        /// Any lines, JSON-like or not: every one is read or refused with
        /// an error, and a backup never ends without its trailer.
        #[test]
        fn the_backup_reader_refuses_arbitrary_lines_without_panicking(
            lines in prop::collection::vec(
                prop_oneof![
                    any::<Vec<u8>>(),
                    "\\{\"[a-z_]{0,12}\":[0-9a-z\"{}:,\\[\\]]{0,40}\\}".prop_map(String::into_bytes),
                ],
                0..8,
            )
        ) {
            let mut reader = Reader::default();
            for line in &lines {
                if reader.line(line).is_err() {
                    break;
                }
            }
            let _ = reader.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content_type: String) -> Entry {
        let now = Timestamp::now();
        Entry {
            meta: KeyMeta {
                key: Key::parse("k").unwrap(),
                version: 1,
                created_at: now,
                updated_at: now,
                expires_at: None,
                size: 1,
                content_type,
            },
            value: bytes::Bytes::from_static(b"v"),
        }
    }

    /// A key that an earlier release stored with a content type longer than
    /// any write takes now (an import's could be megabytes) is backed up
    /// with the default one, so that its line stays within what a restore
    /// reads; one within the bound is kept as stored, to the byte.
    #[test]
    fn a_content_type_longer_than_writes_take_is_backed_up_as_the_default() {
        let project = ProjectId::parse("p").unwrap();
        let long = entry(format!("text/plain; x={}", "a".repeat(20 << 20)));
        let line = key_line(&project, &long);
        assert_eq!(line.content_type, DEFAULT_CONTENT_TYPE);
        let longest = "a".repeat(MAX_CONTENT_TYPE_BYTES);
        let kept = entry(longest.clone());
        assert_eq!(key_line(&project, &kept).content_type, longest);
        let odd = entry("a\r\nb".to_owned());
        assert_eq!(key_line(&project, &odd).content_type, "a\r\nb");
    }
}
