//! `kvs get`, `put`, `delete`, `list`, `incr` and `latest`: keys and values
//! of one project. Values travel as raw bytes both ways (never through a
//! `String`), so that a binary value comes back exactly as it went in.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use ureq::http::header::{CONTENT_TYPE, IF_MATCH};
use ureq::http::{HeaderName, Method, Response, StatusCode};

use super::api::{ClientError, Payload, header_key, key_path, kv_path, query, read_json, segment};
use super::{Common, Outcome, ProjectArg, output};

/// The metadata fields of a key, as `get --meta` shows them.
const META_FIELDS: &[&str] = &[
    "key",
    "version",
    "size",
    "content_type",
    "created_at",
    "updated_at",
    "expires_at",
];

#[derive(clap::Args, Debug)]
pub struct Get {
    /// The key.
    key: String,
    /// Print the key's metadata (version, size, content type, times) instead
    /// of its value. With --json: the metadata and the value, as JSON.
    #[arg(long)]
    meta: bool,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
pub struct Put {
    /// The key.
    key: String,
    /// The value: the text itself, `@FILE` for a file's bytes, or `-` (or
    /// nothing) for stdin. `@@TEXT` is the text `@TEXT` (or pass it on stdin).
    value: Option<String>,
    /// The content type to store [default: text/plain; charset=utf-8 for a
    /// value given as text, application/octet-stream for @FILE or stdin].
    #[arg(long)]
    content_type: Option<String>,
    /// Expire the key after this long: `90`, `90s`, `10m`, `1h`, `30d`.
    /// Without it, a put removes any earlier expiry.
    #[arg(long)]
    ttl: Option<String>,
    /// Write only if the key's current version is this one (`If-Match`);
    /// otherwise exit 1 naming the current version.
    #[arg(long, value_name = "VERSION")]
    if_version: Option<u64>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
pub struct Delete {
    /// The key.
    #[arg(required_unless_present_any = ["prefix", "all"])]
    key: Option<String>,
    /// Delete every key that starts with this prefix, atomically.
    #[arg(long, conflicts_with = "key", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    prefix: Option<String>,
    /// Delete every key of the project, atomically. (An empty --prefix is
    /// refused, so that an unset shell variable cannot clear a project.)
    #[arg(long, conflicts_with_all = ["key", "prefix"])]
    all: bool,
    /// Delete only if the key's current version is this one (`If-Match`);
    /// otherwise exit 1 naming the current version.
    #[arg(long, value_name = "VERSION", requires = "key", conflicts_with_all = ["prefix", "all"])]
    if_version: Option<u64>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
pub struct Incr {
    /// The key: a missing key counts from 0.
    key: String,
    /// What to add; may be negative (`--by -3`).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    by: i64,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
pub struct Latest {
    /// The keys to choose from (commas and all: each is sent as its own
    /// `key=`).
    #[arg(required = true)]
    keys: Vec<String>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
pub struct List {
    /// Only keys that start with this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Keys to ask for per request (the server's page size: 100 unless given,
    /// at most 1000). Every page is fetched, so every key is printed.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// Show each key's version, size, last update and content type too.
    #[arg(long, short)]
    long: bool,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

pub fn get(args: Get) -> Outcome {
    let api = args.common.api();
    let path = kv_path(&args.project.project, &args.key);
    if args.meta || args.common.json {
        let meta = api.json(Method::GET, &format!("{path}?meta=true"), None)?;
        return if args.common.json {
            output::json(&meta)
        } else {
            output::fields(&meta, META_FIELDS)
        };
    }
    let mut response = api.send(Method::GET, &path, None)?;
    write_value(&mut response)
}

/// Copies a raw value to stdout. Streamed, so that a large value is never
/// held twice; read errors and write errors are told apart because only the
/// latter may be a closed pipe. On a terminal, a value that does not end
/// with a newline gets one, so that the prompt does not run on after it; in
/// a pipe or a file, the bytes are exactly the value's.
fn write_value(response: &mut Response<ureq::Body>) -> Outcome {
    let mut reader = response.body_mut().as_reader();
    let terminal = io::stdout().is_terminal();
    let mut out = io::stdout().lock();
    let mut buffer = vec![0; 64 * 1024];
    let mut last = b'\n';
    loop {
        let read = reader
            .read(&mut buffer)
            .map_err(|error| anyhow!("the value was cut off: {error}"))?;
        if read == 0 {
            break;
        }
        out.write_all(&buffer[..read])?;
        last = buffer[read - 1];
    }
    if terminal && last != b'\n' {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub fn put(args: Put) -> Outcome {
    let (value, default_type) = match args.value.as_deref() {
        None | Some("-") => {
            if io::stdin().is_terminal() {
                eprintln!("kvs: reading the value from stdin (end it with Ctrl-D)");
            }
            let mut bytes = Vec::new();
            io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the value from stdin")?;
            (bytes, "application/octet-stream")
        }
        Some(text) => match text.strip_prefix('@') {
            // `@@text` is the literal `@text`.
            Some(literal) if literal.starts_with('@') => {
                (literal.as_bytes().to_vec(), "text/plain; charset=utf-8")
            }
            Some(file) => {
                let bytes = fs::read(file).with_context(|| {
                    format!(
                        "cannot read {file} (a value that starts with @ names a file to \
                         read; for the text {text:?} itself, write @{text} or pass it on stdin)"
                    )
                })?;
                (bytes, "application/octet-stream")
            }
            None => (text.as_bytes().to_vec(), "text/plain; charset=utf-8"),
        },
    };
    let content_type = args.content_type.as_deref().unwrap_or(default_type);
    let ttl: Vec<(&str, &str)> = args.ttl.iter().map(|ttl| ("ttl", ttl.as_str())).collect();
    let path = format!(
        "{}{}",
        kv_path(&args.project.project, &args.key),
        query(&ttl)
    );
    let payload = Payload {
        bytes: &value,
        content_type,
    };
    let mut response = args
        .common
        .api()
        .send_with(
            Method::PUT,
            &path,
            Some(payload),
            &if_match(args.if_version),
        )
        .map_err(|error| absent_on_412(error, args.if_version))?;
    let created = response.status() == StatusCode::CREATED;
    let meta = read_json(&mut response)?;
    if args.common.json {
        return output::json(&meta);
    }
    let verb = if created { "created" } else { "replaced" };
    output::lines([format!(
        "{verb} {} (version {}, {} bytes)",
        args.key,
        output::text(&meta["version"]),
        output::text(&meta["size"])
    )])
}

pub fn delete(args: Delete) -> Outcome {
    let api = args.common.api();
    let project = &args.project.project;
    if let Some(key) = &args.key {
        api.send_with(
            Method::DELETE,
            &kv_path(project, key),
            None,
            &if_match(args.if_version),
        )?;
        return if args.common.json {
            Ok(())
        } else {
            output::lines([format!("deleted {key}")])
        };
    }
    let prefix = args.prefix.as_deref().unwrap_or("");
    let path = format!(
        "/v1/projects/{}/kv{}",
        segment(project),
        query(&[("prefix", prefix)])
    );
    let answer = api.json(Method::DELETE, &path, None)?;
    if args.common.json {
        return output::json(&answer);
    }
    let deleted = answer["deleted"].as_u64().unwrap_or(0);
    let noun = if deleted == 1 { "key" } else { "keys" };
    output::lines([format!("deleted {deleted} {noun}")])
}

pub fn list(args: List) -> Outcome {
    let api = args.common.api();
    let base = format!("/v1/projects/{}/kv", segment(&args.project.project));
    let limit = args.limit.map(|limit| limit.to_string());
    // Text is printed page by page, so that `kvs list | head` answers at
    // once; --json (one array) and --long (aligned columns) need every entry.
    let (mut entries, mut raw_entries) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut pairs = Vec::new();
        if let Some(prefix) = &args.prefix {
            pairs.push(("prefix", prefix.as_str()));
        }
        if let Some(limit) = &limit {
            pairs.push(("limit", limit.as_str()));
        }
        if let Some(cursor) = &cursor {
            pairs.push(("cursor", cursor.as_str()));
        }
        let page = api.json(Method::GET, &format!("{base}{}", query(&pairs)), None)?;
        let no_keys = || anyhow!("the listing has no `keys`; is the URL a kvs server?");
        let keys = page["keys"].as_array().ok_or_else(no_keys)?;
        if args.common.json {
            // Each entry as the server wrote it.
            let listed: Listed = serde_json::from_str(page.text().get()).map_err(|_| no_keys())?;
            raw_entries.extend(listed.keys);
        } else if args.long {
            entries.extend(keys.iter().cloned());
        } else {
            output::lines(keys.iter().map(|entry| output::text(&entry["key"])))?;
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if args.common.json {
        return output::json(&raw_entries);
    }
    if args.long {
        // The key goes last: it may hold spaces.
        let fields = ["version", "size", "updated_at", "content_type", "key"];
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|entry| fields.iter().map(|f| output::text(&entry[*f])).collect())
            .collect();
        return output::table(
            &["VERSION", "SIZE", "UPDATED", "CONTENT-TYPE", "KEY"],
            &rows,
        );
    }
    Ok(())
}

/// The entries of a listing page, each as its JSON text.
#[derive(Deserialize)]
struct Listed {
    keys: Vec<Box<RawValue>>,
}

/// `If-Match: "<version>"` for `--if-version`, or no header.
fn if_match(version: Option<u64>) -> Vec<(HeaderName, String)> {
    version
        .map(|version| (IF_MATCH, format!("\"{version}\"")))
        .into_iter()
        .collect()
}

/// A 412 without a current version: the key `--if-version` named is absent.
fn absent_on_412(error: ClientError, version: Option<u64>) -> ClientError {
    match (error, version) {
        (
            ClientError::Refused {
                status,
                summary,
                body,
            },
            Some(version),
        ) if status == StatusCode::PRECONDITION_FAILED
            && !summary.contains("; the current version is ") =>
        {
            ClientError::Refused {
                status,
                summary: format!("{summary}; the key does not exist (expected version {version})"),
                body,
            }
        }
        (error, _) => error,
    }
}

pub fn incr(args: Incr) -> Outcome {
    let path = format!(
        "{}{}",
        key_path(&args.project.project, "incr", &args.key),
        query(&[("by", &args.by.to_string())])
    );
    let answer = args.common.api().json(Method::POST, &path, None)?;
    if args.common.json {
        return output::json(&answer);
    }
    match &answer["value"] {
        Value::Number(value) => output::lines([value.to_string()]),
        _ => Err(anyhow!("the answer has no integer `value`; is the URL a kvs server?").into()),
    }
}

pub fn latest(args: Latest) -> Outcome {
    let pairs: Vec<(&str, &str)> = args.keys.iter().map(|key| ("key", key.as_str())).collect();
    let path = format!(
        "/v1/projects/{}/latest{}",
        segment(&args.project.project),
        query(&pairs)
    );
    let mut response = args.common.api().send(Method::GET, &path, None)?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let key = header("kvs-key")
        .map(|key| header_key(&key))
        .ok_or_else(|| anyhow!("the answer has no Kvs-Key; is the URL a kvs server?"))?;
    let version = header("kvs-version");
    let content_type = header(CONTENT_TYPE.as_str());
    if !args.common.json {
        eprintln!("kvs: latest is {key}");
        return write_value(&mut response);
    }
    let bytes = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|error| anyhow!("the value was cut off: {error}"))?;
    let (value, encoding) = encode(&bytes, content_type.as_deref().unwrap_or(""));
    output::json(&LatestView {
        key: &key,
        version: version.and_then(|version| version.parse::<u64>().ok()),
        content_type: content_type.as_deref(),
        value,
        encoding,
    })
}

/// What `latest --json` prints: the key that won, with its value as the
/// server's JSON answers carry values.
#[derive(Serialize)]
struct LatestView<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    content_type: Option<&'a str>,
    value: Encoded<'a>,
    encoding: &'static str,
}

/// A value in JSON: its own text for JSON, a string, or base64.
#[derive(Serialize)]
#[serde(untagged)]
enum Encoded<'a> {
    Json(&'a RawValue),
    Text(&'a str),
    Base64(String),
}

/// A value as the server's JSON answers carry it: inline JSON (its bytes as
/// they are) for a JSON content type that parses, a string for UTF-8,
/// base64 otherwise.
fn encode<'a>(bytes: &'a [u8], content_type: &str) -> (Encoded<'a>, &'static str) {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if (essence == "application/json" || essence.ends_with("+json"))
        && let Ok(value) = serde_json::from_slice::<&RawValue>(bytes)
    {
        return (Encoded::Json(value), "json");
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => (Encoded::Text(text), "utf8"),
        Err(_) => (Encoded::Base64(BASE64.encode(bytes)), "base64"),
    }
}
