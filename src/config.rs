//! Server settings, layered: command-line flags beat `KVS_*` environment
//! variables, which beat the TOML file given with `--config`, which beats
//! the defaults. The defaults are the safe ones: loopback only, limits on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::domain::{ProjectId, parse_duration};
use crate::store::HistoryLimits;
use crate::telemetry::LogFormat;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:23849";
pub const DEFAULT_DATA_DIR: &str = "./kvs-data";

/// The settings a running server uses.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database and the first-start admin token live.
    pub data_dir: PathBuf,
    /// The ceiling of any project's `max_value_bytes`.
    pub max_value_bytes: u64,
    /// Whether admin tokens may list all projects.
    pub projects_discoverable: bool,
    /// Whether `/metrics` answers without a token.
    pub metrics_public: bool,
    /// The project that the original kvs form interface uses.
    pub default_project: ProjectId,
    /// Whether the form interface takes `auth=` in the query string.
    pub form_query_auth: bool,
    /// The largest transaction body.
    pub max_txn_bytes: u64,
    /// How much change history each project keeps for watches to resume.
    pub watch_history: HistoryLimits,
    pub log_format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `warn,kvs=debug`.
    pub log_level: String,
    /// How often the server writes a backup of itself; `None`: never.
    pub backup_interval: Option<std::time::Duration>,
    /// How many scheduled backups to keep (the oldest go first).
    pub backup_keep: usize,
    /// Where scheduled backups go.
    pub backup_dir: PathBuf,
}

/// `kvs serve`'s flags; each also reads its `KVS_*` variable.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case names).
    #[arg(long, value_name = "FILE", env = "KVS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:23849].
    #[arg(long, value_name = "ADDR", env = "KVS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./kvs-data].
    #[arg(long, value_name = "DIR", env = "KVS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ceiling of any project's value limit, in bytes [default: 64 MiB].
    #[arg(long, value_name = "BYTES", env = "KVS_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<u64>,
    /// Let admin tokens list every project [default: true].
    #[arg(long, value_name = "BOOL", env = "KVS_PROJECTS_DISCOVERABLE")]
    pub projects_discoverable: Option<bool>,
    /// Serve /metrics without a token [default: false].
    #[arg(long, value_name = "BOOL", env = "KVS_METRICS_PUBLIC")]
    pub metrics_public: Option<bool>,
    /// Project of the original kvs form interface [default: default].
    #[arg(long, value_name = "ID", env = "KVS_DEFAULT_PROJECT")]
    pub default_project: Option<String>,
    /// Accept auth= in the form interface's query string [default: true].
    #[arg(long, value_name = "BOOL", env = "KVS_FORM_QUERY_AUTH")]
    pub form_query_auth: Option<bool>,
    /// Largest transaction body, in bytes [default: 4 MiB].
    #[arg(long, value_name = "BYTES", env = "KVS_MAX_TXN_BYTES")]
    pub max_txn_bytes: Option<u64>,
    /// Keep each project's changes of this long for watches to resume
    /// (`90s`, `10m`, `1h`, `2d`) [default: 1h].
    #[arg(long, value_name = "DURATION", env = "KVS_WATCH_HISTORY")]
    pub watch_history: Option<String>,
    /// Keep at most this many changes per project for watches to resume
    /// [default: 100000].
    #[arg(long, value_name = "N", env = "KVS_WATCH_HISTORY_CHANGES")]
    pub watch_history_changes: Option<u64>,
    /// Log format [default: text].
    #[arg(long, value_enum, env = "KVS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level or tracing filter [default: info].
    #[arg(long, value_name = "FILTER", env = "KVS_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Write a backup of the whole server this often (`30m`, `6h`, `1d`)
    /// [default: off].
    #[arg(long, value_name = "DURATION", env = "KVS_BACKUP_INTERVAL")]
    pub backup_interval: Option<String>,
    /// Keep this many scheduled backups [default: 7].
    #[arg(long, value_name = "N", env = "KVS_BACKUP_KEEP")]
    pub backup_keep: Option<usize>,
    /// Directory of scheduled backups [default: <data_dir>/backups].
    #[arg(long, value_name = "DIR", env = "KVS_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
}

/// The same settings in the TOML file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    max_value_bytes: Option<u64>,
    projects_discoverable: Option<bool>,
    metrics_public: Option<bool>,
    default_project: Option<String>,
    form_query_auth: Option<bool>,
    max_txn_bytes: Option<u64>,
    watch_history: Option<String>,
    watch_history_changes: Option<u64>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    backup_interval: Option<String>,
    backup_keep: Option<usize>,
    backup_dir: Option<PathBuf>,
}

impl Settings {
    /// Resolves flags and environment (already merged by clap) over the file
    /// over the defaults.
    pub fn load(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let default_project = args
            .default_project
            .or(file.default_project)
            .unwrap_or_else(|| "default".to_owned());
        let defaults = HistoryLimits::default();
        let watch_history = HistoryLimits {
            max_age_seconds: match args.watch_history.or(file.watch_history) {
                Some(text) => parse_duration(&text)
                    .map_err(|error| anyhow::anyhow!("watch_history {text:?}: {error}"))?,
                None => defaults.max_age_seconds,
            },
            max_changes: args
                .watch_history_changes
                .or(file.watch_history_changes)
                .unwrap_or(defaults.max_changes)
                .max(1),
        };
        let backup_interval = match args.backup_interval.or(file.backup_interval) {
            Some(text) if text == "off" || text.is_empty() => None,
            Some(text) => Some(std::time::Duration::from_secs(
                parse_duration(&text)
                    .map_err(|error| anyhow::anyhow!("backup_interval {text:?}: {error}"))?,
            )),
            None => None,
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let settings = Settings {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default address parses")),
            backup_dir: args
                .backup_dir
                .or(file.backup_dir)
                .unwrap_or_else(|| data_dir.join("backups")),
            backup_keep: args.backup_keep.or(file.backup_keep).unwrap_or(7).max(1),
            backup_interval,
            data_dir,
            max_value_bytes: args
                .max_value_bytes
                .or(file.max_value_bytes)
                .unwrap_or(64 << 20),
            projects_discoverable: args
                .projects_discoverable
                .or(file.projects_discoverable)
                .unwrap_or(true),
            metrics_public: args.metrics_public.or(file.metrics_public).unwrap_or(false),
            default_project: ProjectId::parse(&default_project).with_context(|| {
                format!("default_project {default_project:?} is not a project id")
            })?,
            form_query_auth: args
                .form_query_auth
                .or(file.form_query_auth)
                .unwrap_or(true),
            max_txn_bytes: args.max_txn_bytes.or(file.max_txn_bytes).unwrap_or(4 << 20),
            watch_history,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            log_level: args
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_owned()),
        };
        Ok(settings)
    }

    /// The defaults, with a data directory: what tests start from.
    pub fn with_data_dir(data_dir: &Path) -> Settings {
        let args = ServeArgs {
            data_dir: Some(data_dir.to_owned()),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..ServeArgs::default()
        };
        Settings::load(args).expect("the defaults are valid")
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("the config file {} is not valid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvs.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\nmetrics_public = true\n\
             watch_history = \"10m\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:2222".parse().unwrap()),
            ..ServeArgs::default()
        };
        let settings = Settings::load(args).unwrap();
        assert_eq!(settings.listen.port(), 2222);
        assert_eq!(settings.data_dir, PathBuf::from("/from/file"));
        assert!(settings.metrics_public);
        assert!(settings.projects_discoverable);
        assert_eq!(settings.max_value_bytes, 64 << 20);
        assert_eq!(settings.watch_history.max_age_seconds, 600);
        assert_eq!(settings.watch_history.max_changes, 100_000);
        assert_eq!(settings.backup_interval, None);
        assert_eq!(settings.backup_keep, 7);
        assert_eq!(settings.backup_dir, PathBuf::from("/from/file/backups"));
    }

    #[test]
    fn unknown_settings_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvs.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert!(Settings::load(args).is_err());
    }
}
