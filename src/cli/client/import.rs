//! `kvs import simple-pykv --config PATH` (a subcommand of `kvs import`,
//! whose JSON Lines side is [`super::transfer`]) migrates a Simple-PyKV data set: its projects (with their
//! settings), their keys (values and times as they were), and their API
//! keys, which keep working: each becomes an imported token that the server
//! checks against Simple-PyKV's PBKDF2 digest the first time it is
//! presented (admin token needed).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ureq::http::{Method, StatusCode};

use super::api::{Api, ClientError, segment};
use super::transfer::Sender;
use super::{EXIT_CODES, Outcome, output};
use crate::domain::Timestamp;
use crate::http::DEFAULT_MAX_VALUE_BYTES;

/// PBKDF2 rounds for a key that Simple-PyKV kept in clear (as it does).
const ROUNDS: u32 = 200_000;

/// The data sets `kvs import` can migrate from other stores.
#[derive(clap::Subcommand, Debug)]
pub enum Source {
    /// Migrate a Simple-PyKV data set (admin), API keys included.
    ///
    /// Every project of its config.json with its settings, the keys of its
    /// store files with their values and times, and its API keys, which keep
    /// working as they are (the system key as an admin token). Stops,
    /// creating nothing, if a project of the same id exists.
    ///
    /// A JSON string value is stored as `text/plain; charset=utf-8`, any
    /// other JSON value as `application/json`, so that Simple-PyKV's routes
    /// answer it as before.
    #[command(name = "simple-pykv", after_long_help = EXIT_CODES)]
    SimplePykv(SimplePykv),
}

#[derive(clap::Args, Debug)]
pub struct SimplePykv {
    /// Simple-PyKV's config.json; its store files are found from there.
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
}

pub fn run(api: &Api, from: Source) -> Outcome {
    match from {
        Source::SimplePykv(simple) => simple_pykv(api, &simple.config),
    }
}

/// A Simple-PyKV project as read from its config and store file.
struct PykvProject {
    id: String,
    on_disk: bool,
    discoverable: bool,
    /// `authentication.enabled: false`: its keys need no key, so the
    /// project is made `public: "write"`.
    open: bool,
    key_digest: Option<String>,
    /// Import entries (`POST /v1/projects/{p}/import`), in key order.
    keys: Vec<Value>,
    largest_value: u64,
}

fn simple_pykv(api: &Api, config_path: &Path) -> Outcome {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let storage_dir = base.join(
        config
            .pointer("/system/storage/persistent_file_path")
            .and_then(Value::as_str)
            .unwrap_or("storage_data"),
    );
    let system_digest = key_digest(config.pointer("/system/authentication"))?;
    let system_open = config.pointer("/system/authentication/enabled") == Some(&Value::Bool(false));
    let mut projects = Vec::new();
    let mut seen = BTreeSet::new();
    for project in config["projects"].as_array().into_iter().flatten() {
        let project = read_project(project, &storage_dir)?;
        if !seen.insert(project.id.clone()) {
            return Err(anyhow!("project {:?} appears twice in the config", project.id).into());
        }
        projects.push(project);
    }
    // Nothing is created while any project could collide.
    for project in &projects {
        match api.json(
            Method::GET,
            &format!("/v1/projects/{}", segment(&project.id)),
            None,
        ) {
            Ok(_) => {
                return Err(anyhow!(
                    "project {:?} already exists on the server; nothing was imported \
                     (delete it first, or remove it from the config)",
                    project.id
                )
                .into());
            }
            Err(ClientError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => {}
            Err(error) => return Err(error),
        }
    }
    let mut lines = Vec::new();
    let (mut keys, mut tokens) = (0, 0);
    for project in &projects {
        let (count, token) = import_project(api, project)?;
        keys += count;
        tokens += usize::from(token.is_some());
        lines.push(format!(
            "project {}: {} storage, {count} keys, {}{}",
            project.id,
            if project.on_disk { "disk" } else { "memory" },
            match &token {
                Some(id) => format!("API key kept as token {id}"),
                None => "no API key (the project had none)".to_owned(),
            },
            if project.open {
                "; authentication disabled: public \"write\", anyone may read and write its \
                 keys without a key"
            } else {
                ""
            }
        ));
    }
    match system_digest {
        Some(digest) => {
            let name = system_key_name(&digest);
            // A second token for the same key would be a second way in:
            // once the first was revoked, the key would still open the
            // server.
            if let Some(earlier) = imported_admin(api, &name)? {
                lines.push(format!(
                    "system API key already kept as admin token {earlier} (imported \
                     earlier); not imported again"
                ));
            } else {
                let answer = api.json(
                    Method::POST,
                    "/v1/tokens",
                    Some(&json!({"name": name, "imported_digest": digest})),
                )?;
                tokens += 1;
                lines.push(format!(
                    "system API key kept as admin token {}",
                    output::text(&answer["id"])
                ));
            }
        }
        None => lines.push("no system API key in the config".to_owned()),
    }
    if system_open {
        lines.push(
            "the config turns the system key off (system.authentication.enabled = false): \
             kvs still asks for an admin token on /status and /api/v1/projects; to answer \
             them without one, as Simple-PyKV did, start `kvs serve --simple-pykv-open-admin \
             true` (anyone who reaches the server may then create and delete projects)"
                .to_owned(),
        );
    }
    lines.push(format!(
        "imported {} projects, {keys} keys, {tokens} tokens",
        projects.len()
    ));
    output::lines(lines)
}

/// The name of the admin token that keeps a Simple-PyKV system key: it
/// ends with a fingerprint of the key's digest (the first 12 hex digits of
/// its SHA-256, which tell nothing of the key), so that a later import
/// knows the same key, and only the same key, again.
fn system_key_name(digest: &str) -> String {
    let fingerprint = Sha256::digest(digest.as_bytes());
    format!("simple-pykv admin key {}", hex::encode(&fingerprint[..6]))
}

/// The id of the admin token named `name` that an earlier import made, if
/// it is still there.
fn imported_admin(api: &Api, name: &str) -> Result<Option<String>, ClientError> {
    let listed = api.json(Method::GET, "/v1/tokens", None)?;
    Ok(listed["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|token| token["source"] == "import" && token["name"] == name)
        .map(|token| output::text(&token["id"])))
}

/// Creates one project, keeps its API key, imports its keys; answers how
/// many keys and the token's id.
fn import_project(
    api: &Api,
    project: &PykvProject,
) -> Result<(usize, Option<String>), ClientError> {
    let mut body = json!({
        "id": project.id,
        "storage": if project.on_disk { "disk" } else { "memory" },
        "keys_discoverable": project.discoverable,
    });
    if project.open {
        body["public"] = json!("write");
    }
    if project.largest_value > DEFAULT_MAX_VALUE_BYTES {
        body["max_value_bytes"] = json!(project.largest_value);
    }
    let created = api.json(Method::POST, "/v1/projects", Some(&body))?;
    let path = format!("/v1/projects/{}", segment(&project.id));
    // The project's first token was shown to nobody: the project's key is
    // the one it had.
    if let Some(first) = created["token"]["id"].as_str() {
        api.json(
            Method::DELETE,
            &format!("{path}/tokens/{}", segment(first)),
            None,
        )?;
    }
    let token = match &project.key_digest {
        Some(digest) => {
            let answer = api.json(
                Method::POST,
                &format!("{path}/tokens"),
                Some(&json!({
                    "role": "manage",
                    "name": "simple-pykv api key",
                    "imported_digest": digest,
                })),
            )?;
            Some(output::text(&answer["id"]))
        }
        None => None,
    };
    let mut sender = Sender::new(api, &project.id, "entry");
    for (index, entry) in project.keys.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(anyhow!("an imported entry is not a JSON object").into());
        };
        sender.add(index + 1, entry.clone())?;
    }
    sender.flush()?;
    Ok((project.keys.len(), token))
}

fn read_project(project: &Value, storage_dir: &Path) -> anyhow::Result<PykvProject> {
    let id = project["id"]
        .as_str()
        .ok_or_else(|| anyhow!("a project of the config has no id"))?
        .to_owned();
    let on_disk = project
        .pointer("/storage/on_disk")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let discoverable = project
        .pointer("/security/keys_and_values_discoverable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let key_digest =
        key_digest(project.get("authentication")).with_context(|| format!("project {id:?}"))?;
    let open = project.pointer("/authentication/enabled") == Some(&Value::Bool(false));
    let mut keys = Vec::new();
    let mut largest_value = 0;
    let file = storage_dir.join(format!("{id}_store.json"));
    if on_disk && file.exists() {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        // Each value as its text in the file: a number that no f64 or
        // 64-bit integer holds keeps every digit, as Simple-PyKV kept it.
        let store: std::collections::BTreeMap<String, Entry> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object of entries", file.display()))?;
        for (key, entry) in store {
            let entry = import_entry(&key, &entry)
                .with_context(|| format!("key {key:?} of {}", file.display()))?;
            largest_value = largest_value.max(entry.1);
            keys.push(entry.0);
        }
    }
    Ok(PykvProject {
        id,
        on_disk,
        discoverable,
        open,
        key_digest,
        keys,
        largest_value,
    })
}

/// One entry of a Simple-PyKV store file (`size_bytes` is worked out
/// again).
#[derive(serde::Deserialize)]
struct Entry {
    /// (Not an `Option`: serde reads a `null` value as `None`.)
    value: Box<serde_json::value::RawValue>,
    #[serde(default)]
    created_at: Value,
    #[serde(default)]
    updated_at: Value,
}

/// A Simple-PyKV entry as an import entry, and its value's size.
fn import_entry(key: &str, entry: &Entry) -> anyhow::Result<(Value, u64)> {
    let raw = &entry.value;
    let (value, content_type) = match serde_json::from_str::<Value>(raw.get())? {
        Value::String(text) => (text, "text/plain; charset=utf-8"),
        _ => (compact(raw.get()), "application/json"),
    };
    let time = |field: &Value, name: &str| -> anyhow::Result<String> {
        let seconds = field
            .as_f64()
            .ok_or_else(|| anyhow!("{name} is not a number of seconds"))?;
        Ok(Timestamp::from_millis((seconds * 1000.0).round() as i64).rfc3339())
    };
    let size = value.len() as u64;
    Ok((
        json!({
            "key": key,
            "value": value,
            "content_type": content_type,
            "created_at": time(&entry.created_at, "created_at")?,
            "updated_at": time(&entry.updated_at, "updated_at")?,
            "expires_at": null,
        }),
        size,
    ))
}

/// JSON text without the whitespace between its tokens (Simple-PyKV's
/// files are indented); the text of strings and numbers is kept as it is.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

/// The digest of an `authentication` section's key: its `api_key_hash`, or
/// one made here from an `api_key` kept in clear. `None` when it has
/// neither.
fn key_digest(authentication: Option<&Value>) -> anyhow::Result<Option<String>> {
    let Some(authentication) = authentication else {
        return Ok(None);
    };
    if let Some(hash) = authentication["api_key_hash"].as_str() {
        return Ok(Some(hash.to_owned()));
    }
    let Some(key) = authentication["api_key"].as_str() else {
        return Ok(None);
    };
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow!("no random bytes: {e}"))?;
    let mut hash = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(key.as_bytes(), &salt, ROUNDS, &mut hash);
    Ok(Some(format!(
        "pbkdf2_sha256${ROUNDS}${}${}",
        URL_SAFE_NO_PAD.encode(salt),
        URL_SAFE_NO_PAD.encode(hash)
    )))
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn compact_json_keeps_strings_and_numbers_as_they_are() {
        let indented = "{\n  \"a b\": [1, 2.50, 123456789012345678901234567890],\n  \"q\": \"say \\\" x \\\\\"\n}";
        assert_eq!(
            compact(indented),
            "{\"a b\":[1,2.50,123456789012345678901234567890],\"q\":\"say \\\" x \\\\\"}"
        );
    }
}
