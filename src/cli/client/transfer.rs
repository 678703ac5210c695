//! `kvs export` and `kvs import`: a project's keys as JSON Lines, one key per
//! line with its value and metadata, in a form a person can read (text stays
//! text) and that restores every value byte for byte, with its content type
//! and times. Export streams the listing page by page; import streams its
//! input in chunks, each one `POST /v1/projects/{p}/import` (which is all or
//! nothing), so that neither holds a whole project in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::{Map, Value};
use ureq::http::{Method, StatusCode};

use super::api::{Api, ClientError, Payload, kv_path, query, read_json, segment};
use super::{Common, Outcome, ProjectArg, output};

/// Keys asked for per listing page (the server's most).
const PAGE: &str = "1000";

/// The most keys sent in one import request.
const CHUNK_KEYS: usize = 1000;

/// The most bytes of JSON body per import request: under the server's
/// default `max_txn_bytes` (4 MiB), with room for the envelope.
const CHUNK_BYTES: usize = 3 << 20;

/// How many times a key that changes between its listing and the read of
/// its raw bytes is read again before the export gives up.
const RETRIES: usize = 5;

#[derive(clap::Args, Debug)]
pub struct Export {
    /// Only keys that start with this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Write to this file instead of stdout, readable by its owner only
    /// (0600: it holds the values; an existing file is emptied and
    /// narrowed to 0600).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<String>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
pub struct Import {
    /// The JSON Lines to import, as `kvs export` writes them: a file, or `-`
    /// (or nothing) for stdin.
    file: Option<String>,
    /// Another store's data set to migrate, instead of JSON Lines.
    #[command(subcommand)]
    from: Option<super::import::Source>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

/// One exported key: a line of the export. The field order is the order a
/// reader wants: the key, its value, then what describes it.
#[derive(Serialize)]
struct Line {
    key: String,
    /// The value when its bytes are UTF-8 (JSON values too, as their exact
    /// text); otherwise `value_base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    content_type: Value,
    created_at: Value,
    updated_at: Value,
    expires_at: Value,
    version: Value,
    size: Value,
}

pub fn export(args: Export) -> Outcome {
    let api = args.common.api();
    let project = &args.project.project;
    let out: Box<dyn Write> = match &args.output {
        // The export holds the project's values: for its owner's eyes only.
        Some(file) => Box::new(
            crate::files::overwrite_private(Path::new(file))
                .with_context(|| format!("cannot create {file}"))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let base = format!("/v1/projects/{}/kv", segment(project));
    let mut exported = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let mut pairs = vec![("limit", PAGE), ("values", "true")];
        if let Some(prefix) = &args.prefix {
            pairs.push(("prefix", prefix.as_str()));
        }
        if let Some(cursor) = &cursor {
            pairs.push(("cursor", cursor.as_str()));
        }
        let mut page = api
            .json(Method::GET, &format!("{base}{}", query(&pairs)), None)?
            .into_value();
        let Value::Array(keys) = page["keys"].take() else {
            return Err(anyhow!("the listing has no `keys`; is the URL a kvs server?").into());
        };
        for entry in keys {
            if let Some(line) = line(&api, project, entry)? {
                serde_json::to_writer(&mut out, &line).map_err(io::Error::from)?;
                out.write_all(b"\n")?;
                exported += 1;
            }
        }
        // Page by page, so that a reader of the stream sees progress.
        out.flush()?;
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    drop(out);
    if let Some(file) = &args.output {
        output::lines([format!(
            "exported {exported} {} from {project} to {file}",
            noun(exported)
        )])?;
    }
    Ok(())
}

/// A listed key as an export line, or `None` for a key deleted since its
/// page was listed.
///
/// The listing's `utf8` and `base64` values are the stored bytes, but a
/// `json` one has been parsed and written again (spacing and key order may
/// differ), so for those the raw bytes are read. If the key changed in
/// between, its metadata is read again, so that a line always describes the
/// value it holds.
fn line(api: &Api, project: &str, mut entry: Value) -> Result<Option<Line>, ClientError> {
    let (mut value, mut value_base64) = (None, None);
    let encoding = output::text(&entry["encoding"]);
    match (encoding.as_str(), entry["value"].take()) {
        ("utf8", Value::String(text)) => value = Some(text),
        ("base64", Value::String(encoded)) => value_base64 = Some(encoded),
        ("json", _) => {
            let Some((meta, bytes)) = raw(api, project, entry)? else {
                return Ok(None);
            };
            entry = meta;
            match String::from_utf8(bytes) {
                Ok(text) => value = Some(text),
                Err(error) => value_base64 = Some(BASE64.encode(error.into_bytes())),
            }
        }
        _ => {
            return Err(anyhow!(
                "the listing of {} has no value; is the URL a kvs server?",
                entry["key"]
            )
            .into());
        }
    }
    let mut field = |name: &str| entry[name].take();
    Ok(Some(Line {
        key: output::text(&field("key")),
        value,
        value_base64,
        content_type: field("content_type"),
        created_at: field("created_at"),
        updated_at: field("updated_at"),
        expires_at: field("expires_at"),
        version: field("version"),
        size: field("size"),
    }))
}

/// The raw bytes of a listed key with the metadata of that very version, or
/// `None` once the key is gone.
fn raw(api: &Api, project: &str, mut meta: Value) -> Result<Option<(Value, Vec<u8>)>, ClientError> {
    let key = output::text(&meta["key"]);
    let path = kv_path(project, &key);
    for _ in 0..RETRIES {
        let mut response = match api.send(Method::GET, &path, None) {
            Ok(response) => response,
            Err(ClientError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let version = response
            .headers()
            .get("kvs-version")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let bytes = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|error| anyhow!("the value of {key} was cut off: {error}"))?;
        if version.is_some() && version == meta["version"].as_u64() {
            return Ok(Some((meta, bytes)));
        }
        meta = match api.json(Method::GET, &format!("{path}?meta=true"), None) {
            Ok(meta) => meta.into_value(),
            Err(ClientError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
    }
    Err(anyhow!("{key} changed {RETRIES} times while it was being exported").into())
}

pub fn import(args: Import) -> Outcome {
    let api = args.common.api();
    if let Some(from) = args.from {
        return super::import::run(&api, from);
    }
    let project = &args.project.project;
    let input: Box<dyn BufRead> = match args.file.as_deref() {
        None | Some("-") => {
            if io::stdin().is_terminal() {
                eprintln!("kvs: reading the keys from stdin (end them with Ctrl-D)");
            }
            Box::new(io::stdin().lock())
        }
        Some(file) => Box::new(BufReader::new(
            File::open(file).with_context(|| format!("cannot read {file}"))?,
        )),
    };
    let mut sender = Sender::new(&api, project, "line");
    for (index, line) in input.split(b'\n').enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("cannot read line {number}"))?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let entry = match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(entry)) => entry,
            Ok(_) => return Err(sender.bad_line(number, "not a JSON object")),
            Err(error) => return Err(sender.bad_line(number, &format!("not JSON ({error})"))),
        };
        sender.add(number, entry)?;
    }
    sender.flush()?;
    if args.common.json {
        return output::json(&serde_json::json!({
            "imported": sender.imported,
            "revision": sender.revision,
        }));
    }
    let at = match sender.revision {
        Some(revision) => format!(" at revision {revision}"),
        None => String::new(),
    };
    output::lines([format!(
        "imported {} {} into {project}{at}",
        sender.imported,
        noun(sender.imported)
    )])
}

/// The keys read but not yet sent, as the JSON they will be sent as.
#[derive(Default)]
struct Chunk {
    /// `{"keys":[…` so far, without the closing `]}`.
    body: Vec<u8>,
    /// The input line of each key, to name it if the server refuses it.
    lines: Vec<usize>,
    /// Each key's name, for the same.
    keys: Vec<String>,
}

/// Sends an import's keys chunk by chunk and keeps count.
pub(super) struct Sender<'a> {
    api: &'a Api,
    path: String,
    /// What the numbers given with the keys count, to name them ("line").
    unit: &'static str,
    chunk: Chunk,
    pub imported: u64,
    pub revision: Option<u64>,
}

impl<'a> Sender<'a> {
    pub fn new(api: &'a Api, project: &str, unit: &'static str) -> Sender<'a> {
        Sender {
            api,
            path: format!("/v1/projects/{}/import", segment(project)),
            unit,
            chunk: Chunk::default(),
            imported: 0,
            revision: None,
        }
    }

    /// Adds a key, first sending the chunk if the key would take it past
    /// either limit. A key bigger than a chunk goes alone (and the server
    /// says whether it takes it).
    pub fn add(&mut self, line: usize, entry: Map<String, Value>) -> Outcome {
        let key = output::text(entry.get("key").unwrap_or(&Value::Null));
        let json = serde_json::to_vec(&entry).map_err(anyhow::Error::from)?;
        if self.chunk.lines.len() == CHUNK_KEYS
            || (!self.chunk.lines.is_empty()
                && self.chunk.body.len() + json.len() + 2 > CHUNK_BYTES)
        {
            self.flush()?;
        }
        let chunk = &mut self.chunk;
        chunk.body.extend_from_slice(if chunk.lines.is_empty() {
            b"{\"keys\":["
        } else {
            b","
        });
        chunk.body.extend_from_slice(&json);
        chunk.lines.push(line);
        chunk.keys.push(key);
        Ok(())
    }

    /// Sends the keys read so far, if any, as one all-or-nothing request.
    pub fn flush(&mut self) -> Outcome {
        let mut chunk = std::mem::take(&mut self.chunk);
        if chunk.lines.is_empty() {
            return Ok(());
        }
        chunk.body.extend_from_slice(b"]}");
        let payload = Payload {
            bytes: &chunk.body,
            content_type: "application/json",
        };
        let mut response = self
            .api
            .send(Method::POST, &self.path, Some(payload))
            .map_err(|error| self.explain(error, &chunk))?;
        let answer = read_json(&mut response)?;
        let (Some(imported), Some(revision)) =
            (answer["imported"].as_u64(), answer["revision"].as_u64())
        else {
            return Err(anyhow!("the answer has no `imported`; is the URL a kvs server?").into());
        };
        self.imported += imported;
        self.revision = Some(revision);
        Ok(())
    }

    /// A refusal, with the input line of the key it names (`failed_key`)
    /// and what was imported before it.
    fn explain(&self, error: ClientError, chunk: &Chunk) -> ClientError {
        let ClientError::Refused {
            status,
            mut summary,
            body,
        } = error
        else {
            return error;
        };
        let failed = body
            .as_ref()
            .and_then(|body| body["failed_key"].as_u64())
            .and_then(|index| usize::try_from(index).ok())
            .filter(|index| *index < chunk.lines.len());
        if let Some(index) = failed {
            summary.push_str(&format!(
                "; at {} {} (key {})",
                self.unit, chunk.lines[index], chunk.keys[index]
            ));
        }
        summary.push_str(&format!(
            "; none of {}s {} to {} was imported",
            self.unit,
            chunk.lines[0],
            chunk.lines[chunk.lines.len() - 1]
        ));
        summary.push_str(&self.so_far());
        ClientError::Refused {
            status,
            summary,
            body,
        }
    }

    /// An input line that cannot be imported: nothing more is sent.
    fn bad_line(&self, number: usize, what: &str) -> ClientError {
        anyhow!(
            "line {number} is {what}; the import stopped there{}",
            self.so_far()
        )
        .into()
    }

    /// What earlier chunks already imported, which stays.
    fn so_far(&self) -> String {
        match self.revision {
            Some(revision) => format!(
                "; {} earlier {} stay imported (revision {revision})",
                self.imported,
                noun(self.imported)
            ),
            None => "; no key was imported".to_owned(),
        }
    }
}

fn noun(count: u64) -> &'static str {
    if count == 1 { "key" } else { "keys" }
}
