//! `kvs project …`: creating, listing, showing, changing and deleting
//! projects. Only
//! `create` ever prints a secret: the project's first manage token, which the
//! server shows this once.

use serde_json::{Map, Value, json};
use ureq::http::Method;

use super::api::segment;
use super::{Common, EXIT_CODES, Outcome, output};

/// The fields of a project, as `project show` prints them.
const PROJECT_FIELDS: &[&str] = &[
    "id",
    "storage",
    "keys_discoverable",
    "max_value_bytes",
    "max_keys",
    "public",
    "created_at",
    "revision",
    "keys",
    "bytes",
];

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: ProjectCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Subcommand, Debug)]
enum ProjectCommand {
    /// Create a project (admin). Prints its first manage token, whose secret
    /// is shown only this once.
    #[command(after_long_help = EXIT_CODES)]
    Create(Create),
    /// List the projects the token can see.
    #[command(after_long_help = EXIT_CODES)]
    List,
    /// Show a project's settings and usage.
    #[command(after_long_help = EXIT_CODES)]
    Show {
        /// The project's id.
        id: String,
    },
    /// Change a project's settings: only those given change (admin; a
    /// manage token may lower limits and switch listing).
    #[command(after_long_help = EXIT_CODES)]
    Set(Set),
    /// Delete a project with all its keys and tokens (admin).
    #[command(after_long_help = EXIT_CODES)]
    Delete {
        /// The project's id.
        id: String,
    },
}

#[derive(clap::Args, Debug)]
struct Create {
    /// The new project's id: a letter or digit, then up to 63 letters,
    /// digits, `_`, `.` or `-`.
    id: String,
    /// Where its keys live: `disk` (durable) or `memory` (lost at restart)
    /// [server default: disk].
    #[arg(long, value_enum)]
    storage: Option<Storage>,
    /// The largest value it accepts, in bytes [server default: 1 MiB].
    #[arg(long)]
    max_value_bytes: Option<u64>,
    /// The most keys it may hold [server default: no limit].
    #[arg(long)]
    max_keys: Option<u64>,
    /// Refuse listing its keys to read and write tokens
    /// (`keys_discoverable = false`); manage tokens can still list.
    #[arg(long)]
    no_list_keys: bool,
    /// What requests without any token may do with its keys: `none`,
    /// `read`, or `write` (read and write) [server default: none].
    #[arg(long, value_enum)]
    public: Option<Public>,
    /// Print only the manage token's secret, on one line, for a shell
    /// variable: `TOKEN=$(kvs project create demo --print-secret)`.
    #[arg(long, conflicts_with = "json")]
    print_secret: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["storage", "max_value_bytes", "max_keys", "keys_discoverable", "public"])
))]
struct Set {
    /// The project's id.
    id: String,
    /// Move its keys, live, to `disk` or `memory` (admin).
    #[arg(long, value_enum)]
    storage: Option<Storage>,
    /// The largest value it accepts, in bytes.
    #[arg(long)]
    max_value_bytes: Option<u64>,
    /// The most keys it may hold; `none` for no limit.
    #[arg(long, value_name = "N|none", value_parser = max_keys)]
    max_keys: Option<MaxKeys>,
    /// Whether read and write tokens may list its keys.
    #[arg(long, value_name = "BOOL")]
    keys_discoverable: Option<bool>,
    /// What requests without any token may do with its keys: `none`,
    /// `read`, or `write` (admin; takes effect at once).
    #[arg(long, value_enum)]
    public: Option<Public>,
}

/// A key limit, or none.
#[derive(Clone, Copy, Debug)]
struct MaxKeys(Option<u64>);

fn max_keys(text: &str) -> Result<MaxKeys, String> {
    match text {
        "none" => Ok(MaxKeys(None)),
        number => number
            .parse()
            .map(|n| MaxKeys(Some(n)))
            .map_err(|_| "a number of keys, or `none` for no limit".to_owned()),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Public {
    None,
    Read,
    Write,
}

impl Public {
    fn as_str(self) -> &'static str {
        match self {
            Public::None => "none",
            Public::Read => "read",
            Public::Write => "write",
        }
    }
}

impl Storage {
    fn as_str(self) -> &'static str {
        match self {
            Storage::Disk => "disk",
            Storage::Memory => "memory",
        }
    }
}

/// A line that says what anyone may do with a public project's keys, or
/// nothing for a project that is not public.
fn public_warning(project: &Value) -> Option<String> {
    let id = output::text(&project["id"]);
    match project["public"].as_str() {
        Some("read") => Some(format!(
            "PUBLIC: anyone who reaches this server may read the keys of {id} without a token"
        )),
        Some("write") => Some(format!(
            "PUBLIC: anyone who reaches this server may read and write the keys of {id} \
             without a token"
        )),
        _ => None,
    }
}

/// A project's fields, and the public warning after them.
fn show(project: &Value) -> Outcome {
    output::fields(project, PROJECT_FIELDS)?;
    output::lines(public_warning(project))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Storage {
    Disk,
    Memory,
}

pub fn run(args: Args) -> Outcome {
    // A change of storage is answered once the project's keys are moved,
    // which may take minutes: no limit unless --timeout sets one.
    let api = match &args.command {
        ProjectCommand::Set(set) if set.storage.is_some() => args.common.api_for_long_work(),
        _ => args.common.api(),
    };
    let json = args.common.json;
    match args.command {
        ProjectCommand::Create(create) => {
            // Only the settings given are sent: the server owns the defaults.
            let mut body = Map::new();
            body.insert("id".into(), json!(create.id));
            if let Some(storage) = create.storage {
                body.insert("storage".into(), json!(storage.as_str()));
            }
            if let Some(public) = create.public {
                body.insert("public".into(), json!(public.as_str()));
            }
            if let Some(bytes) = create.max_value_bytes {
                body.insert("max_value_bytes".into(), json!(bytes));
            }
            if let Some(keys) = create.max_keys {
                body.insert("max_keys".into(), json!(keys));
            }
            if create.no_list_keys {
                body.insert("keys_discoverable".into(), json!(false));
            }
            let answer = api.json(Method::POST, "/v1/projects", Some(&Value::Object(body)))?;
            if json {
                return output::json(&answer);
            }
            let (project, token) = (&answer["project"], &answer["token"]);
            if create.print_secret {
                return output::lines([output::text(&token["secret"])]);
            }
            let lines = [
                format!(
                    "created project {} ({} storage)",
                    output::text(&project["id"]),
                    output::text(&project["storage"])
                ),
                format!(
                    "manage token {}: {}",
                    output::text(&token["id"]),
                    output::text(&token["secret"])
                ),
                "(the secret is shown only this once: keep it somewhere safe)".to_owned(),
            ];
            output::lines(lines.into_iter().chain(public_warning(project)))
        }
        ProjectCommand::List => {
            let answer = api.json(Method::GET, "/v1/projects", None)?;
            if json {
                return output::json(&answer);
            }
            let projects = answer["projects"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = projects
                .iter()
                .map(|p| {
                    ["id", "storage", "public", "keys", "bytes", "created_at"]
                        .iter()
                        .map(|field| output::text(&p[*field]))
                        .collect()
                })
                .collect();
            output::table(
                &["ID", "STORAGE", "PUBLIC", "KEYS", "BYTES", "CREATED"],
                &rows,
            )
        }
        ProjectCommand::Show { id } => {
            let answer = api.json(Method::GET, &format!("/v1/projects/{}", segment(&id)), None)?;
            if json {
                output::json(&answer)
            } else {
                show(&answer)
            }
        }
        ProjectCommand::Set(set) => {
            let mut body = Map::new();
            if let Some(storage) = set.storage {
                body.insert("storage".into(), json!(storage.as_str()));
            }
            if let Some(bytes) = set.max_value_bytes {
                body.insert("max_value_bytes".into(), json!(bytes));
            }
            if let Some(MaxKeys(keys)) = set.max_keys {
                body.insert("max_keys".into(), json!(keys));
            }
            if let Some(discoverable) = set.keys_discoverable {
                body.insert("keys_discoverable".into(), json!(discoverable));
            }
            if let Some(public) = set.public {
                body.insert("public".into(), json!(public.as_str()));
            }
            let path = format!("/v1/projects/{}", segment(&set.id));
            let answer = api.json(Method::PATCH, &path, Some(&Value::Object(body)))?;
            if json {
                output::json(&answer)
            } else {
                show(&answer)
            }
        }
        ProjectCommand::Delete { id } => {
            api.json(
                Method::DELETE,
                &format!("/v1/projects/{}", segment(&id)),
                None,
            )?;
            if json {
                Ok(())
            } else {
                output::lines([format!("deleted project {id}")])
            }
        }
    }
}
