//! `kvs get`, `put`, `delete` and `list`: keys and values of one project.
//! Values travel as raw bytes both ways (never through a `String`), so that a
//! binary value comes back exactly as it went in.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};

use anyhow::{Context, anyhow};
use serde_json::Value;
use ureq::http::{Method, StatusCode};

use super::api::{Payload, kv_path, query, read_json, segment};
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
    /// nothing) for stdin. A value that starts with `@` can come on stdin.
    value: Option<String>,
    /// The content type to store [default: text/plain; charset=utf-8 for a
    /// value given as text, application/octet-stream for @FILE or stdin].
    #[arg(long)]
    content_type: Option<String>,
    /// Expire the key after this long: `90`, `90s`, `10m`, `1h`, `30d`.
    /// Without it, a put removes any earlier expiry.
    #[arg(long)]
    ttl: Option<String>,
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
    // Streamed, so that a large value is never held twice; read errors and
    // write errors are told apart because only the latter may be a closed pipe.
    let mut reader = response.body_mut().as_reader();
    let mut out = io::stdout().lock();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = reader
            .read(&mut buffer)
            .map_err(|error| anyhow!("the value was cut off: {error}"))?;
        if read == 0 {
            break;
        }
        out.write_all(&buffer[..read])?;
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
            Some(file) => {
                let bytes = fs::read(file).with_context(|| format!("cannot read {file}"))?;
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
    let mut response = args.common.api().send(Method::PUT, &path, Some(payload))?;
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
        api.send(Method::DELETE, &kv_path(project, key), None)?;
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
    let mut entries = Vec::new();
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
        let mut page = api.json(Method::GET, &format!("{base}{}", query(&pairs)), None)?;
        let Value::Array(keys) = page["keys"].take() else {
            return Err(anyhow!("the listing has no `keys`; is the URL a kvs server?").into());
        };
        if args.common.json || args.long {
            entries.extend(keys);
        } else {
            output::lines(keys.iter().map(|entry| output::text(&entry["key"])))?;
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    if args.common.json {
        return output::json(&Value::Array(entries));
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
