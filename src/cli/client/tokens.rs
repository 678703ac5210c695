//! `kvs token …`: minting, listing and revoking tokens, of the project given
//! by `--project` or, with `--admin`, server-wide admin tokens. `create`
//! prints the new secret alone on stdout, so that
//! `KVS_TOKEN=$(kvs token create --role read)` works; what it describes goes
//! to stderr. Listings never hold secrets: the server does not keep them.

use serde_json::{Map, Value, json};
use ureq::http::Method;

use super::api::segment;
use super::{Common, EXIT_CODES, Outcome, ProjectArg, output};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Create a token. Prints its secret alone on stdout (shown only this
    /// once) and what it is on stderr.
    #[command(after_long_help = EXIT_CODES)]
    Create(Create),
    /// List tokens, without their secrets.
    #[command(after_long_help = EXIT_CODES)]
    List {
        /// Admin tokens instead of the project's.
        #[arg(long)]
        admin: bool,
    },
    /// Revoke a token: it stops working from the next request on.
    #[command(after_long_help = EXIT_CODES)]
    Revoke {
        /// The token's id (from `kvs token list`), not its secret.
        id: String,
        /// An admin token instead of one of the project's.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(clap::Args, Debug)]
struct Create {
    /// What it may do in the project: `read` (get, list), `write` (read, put,
    /// delete) or `manage` (write, and the project's tokens).
    #[arg(long, value_enum, required_unless_present = "admin")]
    role: Option<Role>,
    /// Only keys that start with this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// A name to recognise it by in `kvs token list`.
    #[arg(long)]
    name: Option<String>,
    /// Expire it after this long: `90`, `90s`, `10m`, `1h`, `30d`.
    #[arg(long)]
    expires_in: Option<String>,
    /// A server-wide admin token instead of a project token.
    #[arg(long, conflicts_with_all = ["role", "prefix"])]
    admin: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Role {
    Read,
    Write,
    Manage,
}

pub fn run(args: Args) -> Outcome {
    let api = args.common.api();
    let json = args.common.json;
    let project_path = format!("/v1/projects/{}/tokens", segment(&args.project.project));
    let path = |admin: bool| {
        if admin {
            "/v1/tokens".to_owned()
        } else {
            project_path.clone()
        }
    };
    match args.command {
        TokenCommand::Create(create) => {
            let mut body = Map::new();
            if let Some(role) = create.role {
                let role = match role {
                    Role::Read => "read",
                    Role::Write => "write",
                    Role::Manage => "manage",
                };
                body.insert("role".into(), json!(role));
            }
            if let Some(prefix) = create.prefix {
                body.insert("prefix".into(), json!(prefix));
            }
            if let Some(name) = create.name {
                body.insert("name".into(), json!(name));
            }
            if let Some(expires_in) = create.expires_in {
                body.insert("expires_in".into(), json!(expires_in));
            }
            let token = api.json(
                Method::POST,
                &path(create.admin),
                Some(&Value::Object(body)),
            )?;
            if json {
                return output::json(&token);
            }
            output::lines([output::text(&token["secret"])])?;
            eprintln!("kvs: {}", describe(&token));
            Ok(())
        }
        TokenCommand::List { admin } => {
            let answer = api.json(Method::GET, &path(admin), None)?;
            if json {
                return output::json(&answer);
            }
            let tokens = answer["tokens"].as_array().cloned().unwrap_or_default();
            let fields = [
                "id",
                "role",
                "project",
                "prefix",
                "name",
                "expires_at",
                "source",
            ];
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| fields.iter().map(|f| output::text(&t[*f])).collect())
                .collect();
            output::table(
                &[
                    "ID", "ROLE", "PROJECT", "PREFIX", "NAME", "EXPIRES", "SOURCE",
                ],
                &rows,
            )
        }
        TokenCommand::Revoke { id, admin } => {
            let path = format!("{}/{}", path(admin), segment(&id));
            api.json(Method::DELETE, &path, None)?;
            if json {
                Ok(())
            } else {
                output::lines([format!("revoked token {id}")])
            }
        }
    }
}

/// What a new token is, in one line for stderr (never its secret).
fn describe(token: &Value) -> String {
    let mut text = format!(
        "created {} token {}",
        output::text(&token["role"]),
        output::text(&token["id"])
    );
    if let Some(project) = token["project"].as_str() {
        text.push_str(&format!(" of project {project}"));
    }
    if let Some(prefix) = token["prefix"].as_str() {
        text.push_str(&format!(", for keys under {prefix:?}"));
    }
    if let Some(expires) = token["expires_at"].as_str() {
        text.push_str(&format!(", expiring at {expires}"));
    }
    text + "; its secret, above, is shown only this once"
}
