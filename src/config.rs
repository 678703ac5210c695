//! Server settings, layered: command-line flags beat `KVS_*` environment
//! variables, which beat the TOML file given with `--config`, which beats
//! the defaults. The defaults are the safe ones: loopback only, limits on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Whether Simple-PyKV's admin routes (`/status`, creating, listing,
    /// changing and deleting projects, regenerating keys) answer requests
    /// without any credential as an admin's, as a Simple-PyKV server whose
    /// config turns `system.authentication` off does. Never on by default.
    pub simple_pykv_open_admin: bool,
    /// The largest transaction body.
    pub max_txn_bytes: u64,
    /// The disk database's page cache (redb's), in bytes.
    pub cache_bytes: usize,
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
    /// What one client may ask of the server.
    pub limits: Limits,
    /// Browser origins allowed to call the API (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// The origins (`scheme://host[:port]`) under which browsers reach this
    /// server, normalised by [`normalise_origin`]: a form posted to `/` from
    /// a page of any other origin is refused. The server adds the loopback
    /// origins of the address it listens on when it starts.
    pub origins: Vec<String>,
    /// The certificate and key to serve HTTPS with; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The etcd cluster this node keeps its state in; `None`: the embedded
    /// store in `data_dir`.
    pub etcd: Option<EtcdSettings>,
}

/// The least page cache a server is started with.
const MIN_CACHE_BYTES: usize = 1 << 20;

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1536 * 1024;

/// What a build without the `etcd` feature answers to `--etcd-endpoints`.
pub const WITHOUT_ETCD: &str = "this kvs was built without cluster mode: build it with `cargo \
     build --release --features etcd` (which needs protoc: apt-get install protobuf-compiler) \
     to use --etcd-endpoints";

/// How a node reaches its etcd cluster.
#[derive(Clone, Debug)]
pub struct EtcdSettings {
    /// Client URLs of the cluster's members.
    pub endpoints: Vec<String>,
    /// Everything kvs keeps is under this key prefix.
    pub prefix: String,
    /// etcd user and password, when the cluster has authentication on.
    pub user: Option<(String, String)>,
    /// The cluster's `--max-request-bytes`: larger writes are refused with
    /// 413 before they are sent.
    pub max_request_bytes: u64,
    /// TLS to `https://` endpoints.
    pub tls: Option<EtcdTls>,
}

/// The files a node reaches etcd over TLS with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate (PEM) that etcd's server certificates chain to.
    pub ca_cert: PathBuf,
    /// A client certificate and its key (PEM), for an etcd that asks for
    /// one (`--client-cert-auth`).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl EtcdSettings {
    pub fn new(endpoints: Vec<String>) -> EtcdSettings {
        EtcdSettings {
            endpoints,
            prefix: "kvs/".to_owned(),
            user: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            tls: None,
        }
    }
}

/// The limits that keep one client from taking the server from the others.
/// A rate of 0 turns that limit off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests a second one token may make (bursts up to as many).
    pub requests_per_token: u32,
    /// Requests a second one client address may make.
    pub requests_per_ip: u32,
    /// Failed authentications a minute one address may make before its
    /// unknown credentials get 429 instead of being checked.
    pub auth_failures_per_minute: u32,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one address.
    pub max_connections_per_ip: usize,
    /// Open watches (and blocking reads) of one token.
    pub max_watchers_per_token: usize,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, once its
    /// headers are in.
    pub body_timeout: Duration,
    /// How long a write to a client may wait for it to take bytes before
    /// the connection is closed (a watcher that stops reading included).
    pub write_timeout: Duration,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            requests_per_token: 0,
            requests_per_ip: 0,
            auth_failures_per_minute: 60,
            max_connections: 10_000,
            max_connections_per_ip: 4096,
            max_watchers_per_token: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
        }
    }
}

/// PEM files of a certificate chain and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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
    /// Serve Simple-PyKV's admin routes (/status, /api/v1/projects…) to
    /// requests without any key, as admin, like a Simple-PyKV server with
    /// system.authentication disabled: anyone who reaches the server may
    /// then create, change and delete projects there, and read and write
    /// every project's keys with a key they regenerate [default: false].
    #[arg(long, value_name = "BOOL", env = "KVS_SIMPLE_PYKV_OPEN_ADMIN")]
    pub simple_pykv_open_admin: Option<bool>,
    /// Largest transaction body, in bytes [default: 4 MiB].
    #[arg(long, value_name = "BYTES", env = "KVS_MAX_TXN_BYTES")]
    pub max_txn_bytes: Option<u64>,
    /// Memory for the disk database's page cache, in bytes: less bounds the
    /// server's memory, more keeps reads of a large store fast [default:
    /// 1 GiB; at least 1 MiB].
    #[arg(long, value_name = "BYTES", env = "KVS_CACHE_BYTES")]
    pub cache_bytes: Option<usize>,
    /// Keep each project's changes of this long for watches to resume
    /// (`90s`, `10m`, `1h`, `2d`) [default: 1h].
    #[arg(long, value_name = "DURATION", env = "KVS_WATCH_HISTORY")]
    pub watch_history: Option<String>,
    /// Keep at most this many changes per project for watches to resume
    /// (at least 1) [default: 100000].
    #[arg(long, value_name = "N", env = "KVS_WATCH_HISTORY_CHANGES")]
    pub watch_history_changes: Option<u64>,
    /// Keep at most this many bytes of changes (keys and values) per
    /// project for watches to resume [default: 256 MiB].
    #[arg(long, value_name = "BYTES", env = "KVS_WATCH_HISTORY_BYTES")]
    pub watch_history_bytes: Option<u64>,
    /// Keep at most this many bytes of changes for all projects together;
    /// the largest histories lose their oldest changes first [default: 1 GiB].
    #[arg(long, value_name = "BYTES", env = "KVS_WATCH_HISTORY_TOTAL_BYTES")]
    pub watch_history_total_bytes: Option<u64>,
    /// Log format [default: text].
    #[arg(long, value_enum, env = "KVS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level (error, warn, info, debug, trace, off) or a tracing
    /// filter such as warn,kvs=debug [default: info].
    #[arg(long, value_name = "FILTER", env = "KVS_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Requests a second per token, 0 for no limit [default: 0].
    #[arg(long, value_name = "N", env = "KVS_RATE_LIMIT_PER_TOKEN")]
    pub rate_limit_per_token: Option<u32>,
    /// Requests a second per client address, 0 for no limit [default: 0].
    #[arg(long, value_name = "N", env = "KVS_RATE_LIMIT_PER_IP")]
    pub rate_limit_per_ip: Option<u32>,
    /// Failed authentications a minute per client address before its
    /// unknown tokens get 429, 0 for no limit [default: 60].
    #[arg(long, value_name = "N", env = "KVS_AUTH_FAILURES_PER_MINUTE")]
    pub auth_failures_per_minute: Option<u32>,
    /// Open connections in all, at least 1 [default: 10000].
    #[arg(long, value_name = "N", env = "KVS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections per client address, at least 1 [default: 4096].
    #[arg(long, value_name = "N", env = "KVS_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Open watches and blocking reads per token, at least 1 [default:
    /// 4096].
    #[arg(long, value_name = "N", env = "KVS_MAX_WATCHERS_PER_TOKEN")]
    pub max_watchers_per_token: Option<usize>,
    /// Time a client has to send a request's headers [default: 10s].
    #[arg(long, value_name = "DURATION", env = "KVS_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// Time a client has to send a request's body [default: 60s].
    #[arg(long, value_name = "DURATION", env = "KVS_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// Time a client may take nothing of an answer (a watch included)
    /// before its connection is closed [default: 30s].
    #[arg(long, value_name = "DURATION", env = "KVS_WRITE_TIMEOUT")]
    pub write_timeout: Option<String>,
    /// Largest request line and headers, in bytes, at least 8192 [default:
    /// 65536].
    #[arg(long, value_name = "BYTES", env = "KVS_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Browser origins allowed to call the API, comma-separated, or `*`
    /// [default: none].
    #[arg(
        long,
        value_name = "ORIGINS",
        env = "KVS_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Option<Vec<String>>,
    /// The origins browsers reach this server under, comma-separated
    /// (`https://kvs.example`); form posts from other pages are refused
    /// [default: the listen address's loopback origins].
    #[arg(
        long,
        value_name = "ORIGINS",
        env = "KVS_ORIGINS",
        value_delimiter = ','
    )]
    pub origins: Option<Vec<String>>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); the
    /// files are read again when they change.
    #[arg(long, value_name = "FILE", env = "KVS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "KVS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Write a backup of the whole server this often (`30m`, `6h`, `1d`)
    /// [default: off].
    #[arg(long, value_name = "DURATION", env = "KVS_BACKUP_INTERVAL")]
    pub backup_interval: Option<String>,
    /// Keep this many scheduled backups, at least 1 [default: 7].
    #[arg(long, value_name = "N", env = "KVS_BACKUP_KEEP")]
    pub backup_keep: Option<usize>,
    /// Directory of scheduled backups [default: <data_dir>/backups].
    #[arg(long, value_name = "DIR", env = "KVS_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    // The etcd cluster to run as a node of.
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// The etcd flags of `kvs serve` (and of `kvs restore` into a cluster);
/// each also reads its `KVS_ETCD_*` variable, and the TOML file has the same
/// names in snake_case.
#[derive(clap::Args, Debug, Default)]
pub struct EtcdArgs {
    /// The etcd cluster's client URLs, comma-separated
    /// (`http://10.0.0.1:2379,http://10.0.0.2:2379`): `kvs serve` runs as a
    /// cluster node over it [default: none, the embedded store].
    #[arg(
        long,
        value_name = "URLS",
        env = "KVS_ETCD_ENDPOINTS",
        value_delimiter = ','
    )]
    pub etcd_endpoints: Option<Vec<String>>,
    /// The key prefix everything lives under in etcd; nodes with the same
    /// endpoints and prefix serve the same data [default: kvs/].
    #[arg(long, value_name = "PREFIX", env = "KVS_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// etcd user, when the cluster has authentication on (with
    /// KVS_ETCD_PASSWORD).
    #[arg(long, value_name = "NAME", env = "KVS_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// The etcd user's password (better in the environment than on the
    /// command line).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "KVS_ETCD_PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
    /// The etcd cluster's --max-request-bytes: larger writes are refused
    /// with 413 [default: 1572864, etcd's default].
    #[arg(long, value_name = "BYTES", env = "KVS_ETCD_MAX_REQUEST_BYTES")]
    pub etcd_max_request_bytes: Option<u64>,
    /// CA certificate (PEM) of the etcd cluster's server certificates, for
    /// https:// endpoints.
    #[arg(long, value_name = "FILE", env = "KVS_ETCD_CA_CERT")]
    pub etcd_ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for an etcd that asks for one (with
    /// --etcd-key).
    #[arg(long, value_name = "FILE", env = "KVS_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "KVS_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    /// These flags over `file`'s: the etcd settings, or `None` without
    /// endpoints (the embedded store).
    pub fn settings(self, file: EtcdArgs) -> anyhow::Result<Option<EtcdSettings>> {
        Ok(match self.etcd_endpoints.or(file.etcd_endpoints) {
            None => None,
            Some(endpoints) => {
                let endpoints: Vec<String> = endpoints
                    .iter()
                    .map(|e| e.trim().to_owned())
                    .filter(|e| !e.is_empty())
                    .collect();
                if endpoints.is_empty() {
                    anyhow::bail!("etcd_endpoints is empty: give one client URL or more");
                }
                let mut etcd = EtcdSettings::new(endpoints);
                if let Some(prefix) = self.etcd_prefix.or(file.etcd_prefix) {
                    if prefix.is_empty() {
                        anyhow::bail!("etcd_prefix is empty: give a prefix such as kvs/");
                    }
                    etcd.prefix = prefix;
                }
                etcd.user = match (
                    self.etcd_user.or(file.etcd_user),
                    self.etcd_password.or(file.etcd_password),
                ) {
                    (Some(user), Some(password)) => Some((user, password)),
                    (None, None) => None,
                    _ => anyhow::bail!(
                        "etcd_user and etcd_password go together: give both or neither"
                    ),
                };
                etcd.max_request_bytes = self
                    .etcd_max_request_bytes
                    .or(file.etcd_max_request_bytes)
                    .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
                let client = match (
                    self.etcd_cert.or(file.etcd_cert),
                    self.etcd_key.or(file.etcd_key),
                ) {
                    (Some(cert), Some(key)) => Some((cert, key)),
                    (None, None) => None,
                    _ => anyhow::bail!("etcd_cert and etcd_key go together: give both or neither"),
                };
                let https = etcd
                    .endpoints
                    .iter()
                    .filter(|e| e.starts_with("https://"))
                    .count();
                etcd.tls = match self.etcd_ca_cert.or(file.etcd_ca_cert) {
                    Some(ca_cert) if https == etcd.endpoints.len() => {
                        Some(EtcdTls { ca_cert, client })
                    }
                    Some(_) => anyhow::bail!(
                        "etcd_ca_cert is given, so every etcd endpoint must be an https:// URL"
                    ),
                    None if https > 0 || client.is_some() => anyhow::bail!(
                        "TLS to etcd needs etcd_ca_cert (--etcd-ca-cert, KVS_ETCD_CA_CERT): \
                         the CA certificate that etcd's server certificates chain to"
                    ),
                    None => None,
                };
                Some(etcd)
            }
        })
    }
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
    simple_pykv_open_admin: Option<bool>,
    max_txn_bytes: Option<u64>,
    cache_bytes: Option<usize>,
    watch_history: Option<String>,
    watch_history_changes: Option<u64>,
    watch_history_bytes: Option<u64>,
    watch_history_total_bytes: Option<u64>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    rate_limit_per_token: Option<u32>,
    rate_limit_per_ip: Option<u32>,
    auth_failures_per_minute: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_watchers_per_token: Option<usize>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    write_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    cors_origins: Option<Vec<String>>,
    origins: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    backup_interval: Option<String>,
    backup_keep: Option<usize>,
    backup_dir: Option<PathBuf>,
    etcd_endpoints: Option<Vec<String>>,
    etcd_prefix: Option<String>,
    etcd_user: Option<String>,
    etcd_password: Option<String>,
    etcd_max_request_bytes: Option<u64>,
    etcd_ca_cert: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
}

impl Settings {
    /// Resolves flags and environment (already merged by clap) over the file
    /// over the defaults.
    pub fn load(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let limits = Limits::load(&args, &file)?;
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
            max_changes: at_least(
                "watch_history_changes",
                args.watch_history_changes.or(file.watch_history_changes),
                defaults.max_changes,
                1,
            )?,
            max_bytes: args
                .watch_history_bytes
                .or(file.watch_history_bytes)
                .unwrap_or(defaults.max_bytes),
            max_total_bytes: args
                .watch_history_total_bytes
                .or(file.watch_history_total_bytes)
                .unwrap_or(defaults.max_total_bytes),
        };
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("tls_cert and tls_key go together: give both or neither"),
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
        let origins = args
            .origins
            .or(file.origins)
            .unwrap_or_default()
            .iter()
            .map(|origin| {
                normalise_origin(origin)
                    .ok_or_else(|| anyhow::anyhow!("origins: {origin:?} is not an origin"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let etcd = args.etcd.settings(EtcdArgs {
            etcd_endpoints: file.etcd_endpoints,
            etcd_prefix: file.etcd_prefix,
            etcd_user: file.etcd_user,
            etcd_password: file.etcd_password,
            etcd_max_request_bytes: file.etcd_max_request_bytes,
            etcd_ca_cert: file.etcd_ca_cert,
            etcd_cert: file.etcd_cert,
            etcd_key: file.etcd_key,
        })?;
        let settings = Settings {
            etcd,
            limits,
            origins,
            tls,
            cors_origins: args.cors_origins.or(file.cors_origins).unwrap_or_default(),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default address parses")),
            backup_dir: args
                .backup_dir
                .or(file.backup_dir)
                .unwrap_or_else(|| data_dir.join("backups")),
            backup_keep: at_least("backup_keep", args.backup_keep.or(file.backup_keep), 7, 1)?,
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
            simple_pykv_open_admin: args
                .simple_pykv_open_admin
                .or(file.simple_pykv_open_admin)
                .unwrap_or(false),
            max_txn_bytes: args.max_txn_bytes.or(file.max_txn_bytes).unwrap_or(4 << 20),
            cache_bytes: match args.cache_bytes.or(file.cache_bytes) {
                Some(bytes) if bytes < MIN_CACHE_BYTES => {
                    anyhow::bail!(
                        "cache_bytes is {bytes}: it must be at least {MIN_CACHE_BYTES} (1 MiB)"
                    )
                }
                Some(bytes) => bytes,
                None => crate::store::redb_engine::DEFAULT_CACHE_BYTES,
            },
            watch_history,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            log_level: check_log_level(
                args.log_level
                    .or(file.log_level)
                    .unwrap_or_else(|| "info".to_owned()),
            )?,
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

impl Limits {
    fn load(args: &ServeArgs, file: &FileSettings) -> anyhow::Result<Limits> {
        let defaults = Limits::default();
        let duration =
            |name: &str, flag: &Option<String>, file: &Option<String>, default| match flag
                .as_ref()
                .or(file.as_ref())
            {
                Some(text) => parse_duration(text)
                    .map(Duration::from_secs)
                    .map_err(|error| anyhow::anyhow!("{name} {text:?}: {error}")),
                None => Ok(default),
            };
        Ok(Limits {
            requests_per_token: args
                .rate_limit_per_token
                .or(file.rate_limit_per_token)
                .unwrap_or(defaults.requests_per_token),
            requests_per_ip: args
                .rate_limit_per_ip
                .or(file.rate_limit_per_ip)
                .unwrap_or(defaults.requests_per_ip),
            auth_failures_per_minute: args
                .auth_failures_per_minute
                .or(file.auth_failures_per_minute)
                .unwrap_or(defaults.auth_failures_per_minute),
            max_connections: at_least(
                "max_connections",
                args.max_connections.or(file.max_connections),
                defaults.max_connections,
                1,
            )?,
            max_connections_per_ip: at_least(
                "max_connections_per_ip",
                args.max_connections_per_ip.or(file.max_connections_per_ip),
                defaults.max_connections_per_ip,
                1,
            )?,
            max_watchers_per_token: at_least(
                "max_watchers_per_token",
                args.max_watchers_per_token.or(file.max_watchers_per_token),
                defaults.max_watchers_per_token,
                1,
            )?,
            header_timeout: duration(
                "header_timeout",
                &args.header_timeout,
                &file.header_timeout,
                defaults.header_timeout,
            )?,
            body_timeout: duration(
                "body_timeout",
                &args.body_timeout,
                &file.body_timeout,
                defaults.body_timeout,
            )?,
            write_timeout: duration(
                "write_timeout",
                &args.write_timeout,
                &file.write_timeout,
                defaults.write_timeout,
            )?,
            // hyper refuses a read buffer under 8 KiB.
            max_header_bytes: at_least(
                "max_header_bytes",
                args.max_header_bytes.or(file.max_header_bytes),
                defaults.max_header_bytes,
                8192,
            )?,
        })
    }
}

/// An origin as browsers send it in `Origin`, in one spelling:
/// `http://` or `https://`, the host lower-cased, the scheme's default port
/// left out, no path. `None` for anything else (`null`, a path, no scheme).
pub fn normalise_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || "-.:[]_".contains(c);
    if authority.is_empty() || !authority.chars().all(valid) {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// The origins of a server listening on `address`, with TLS or not, as a
/// browser on the same machine names them: the loopback names when it
/// listens on a loopback or every address, and the address itself.
pub fn listen_origins(address: SocketAddr, tls: bool) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    let port = address.port();
    let ip = address.ip();
    let mut hosts = Vec::new();
    if ip.is_loopback() || ip.is_unspecified() {
        hosts.extend([
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "[::1]".to_owned(),
        ]);
    }
    match ip {
        _ if ip.is_unspecified() => {}
        std::net::IpAddr::V4(ip) => hosts.push(ip.to_string()),
        std::net::IpAddr::V6(ip) => hosts.push(format!("[{ip}]")),
    }
    hosts
        .iter()
        .filter_map(|host| normalise_origin(&format!("{scheme}://{host}:{port}")))
        .collect()
}

/// The setting `name` as given, or `default`; one below `least` is refused
/// (not raised to it without a word: `max_connections = 0` read as "no
/// limit" gave a server of one connection).
fn at_least<T>(name: &str, given: Option<T>, default: T, least: T) -> anyhow::Result<T>
where
    T: PartialOrd + std::fmt::Display,
{
    match given {
        Some(value) if value < least => {
            anyhow::bail!("{name} is {value}: it must be at least {least}")
        }
        Some(value) => Ok(value),
        None => Ok(default),
    }
}

/// A `log_level` whose every directive ends in a level: `info`, or
/// `warn,kvs=debug`. `tracing` reads a bare word that is not a level
/// (`warning`, `verbose`) as a target's name, and a server started with it
/// logged nothing at all, its errors included.
fn check_log_level(filter: String) -> anyhow::Result<String> {
    use tracing_subscriber::filter::LevelFilter;
    let refuse = |why: String| {
        anyhow::anyhow!(
            "log_level {filter:?}: {why}; give a level (error, warn, info, debug, trace or off) \
             or a tracing filter such as warn,kvs=debug"
        )
    };
    if filter.trim().is_empty() {
        return Err(refuse("it is empty".to_owned()));
    }
    for directive in filter.split(',').map(str::trim) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !directive.is_empty() && (level.is_empty() || level.parse::<LevelFilter>().is_err()) {
            return Err(refuse(format!("{directive:?} does not end in a level")));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(&filter)
        .map_err(|error| refuse(error.to_string()))?;
    Ok(filter)
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "the config file {} is not valid: {}",
            path.display(),
            parse_error(&text, &error)
        )
    })
}

/// Where and why a config file does not parse, without the text of its line
/// (toml's own message quotes it): the line may hold `etcd_password`, and
/// the message goes to stderr, often a journal. On that line even toml's
/// reason is left out, as a type error quotes the value.
fn parse_error(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return error.message().to_owned();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    // Whatever the line's form (a quoted name, an inline table), a line
    // that names the password shows nothing of itself.
    if line_text.contains("etcd_password") {
        return format!(
            "line {line}: etcd_password must be a quoted string (its value is not shown)"
        );
    }
    // The setting the line sets, if it is a plain `name = value`.
    let name = line_text
        .split_once('=')
        .map(|(name, _)| name.trim())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    match name {
        Some(name) => format!(
            "line {line}, column {column}, {name}: {}",
            error.message().trim_end()
        ),
        None => format!(
            "line {line}, column {column}: {}",
            error.message().trim_end()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings a config file of `text` gives, with no flag.
    fn load_file(text: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvs.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
    }

    /// A config file that does not parse is refused naming the line, but
    /// without the line's text: it may hold a secret (the password typed
    /// without quotes was printed to stderr, and so to the journal).
    #[test]
    fn a_config_file_that_does_not_parse_is_refused_without_echoing_its_text() {
        for (text, line) in [
            (
                "listen = \"127.0.0.1:1\"\netcd_password = hunter2secret\n",
                2,
            ),
            ("etcd_password = 4815162342\n", 1),
            ("etcd_password = \"hunter2secret\n", 1),
            ("[x\netcd_password = \"hunter2secret\"\n", 1),
            ("\"etcd_password\" = 4815162342\n", 1),
            ("'etcd_password' = 4815162342\n", 1),
        ] {
            let error = format!("{:#}", load_file(text).unwrap_err());
            assert!(!error.contains("hunter2secret"), "{error}");
            assert!(!error.contains("4815162342"), "{error}");
            assert!(error.contains("kvs.toml"), "{error}");
            assert!(error.contains(&format!("line {line}")), "{error}");
        }
        // A mistake elsewhere still says what is wrong.
        let error = format!("{:#}", load_file("cache_bytes = \"big\"\n").unwrap_err());
        assert!(
            error.contains("line 1") && error.contains("cache_bytes"),
            "{error}"
        );
    }

    /// `cache_bytes` from the file, a flag beating it, the default, and a
    /// cache too small to be of use refused.
    #[test]
    fn the_page_cache_size_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvs.toml");
        std::fs::write(&path, "cache_bytes = 67108864\n").unwrap();
        let load = |cache_bytes| {
            Settings::load(ServeArgs {
                config: Some(path.clone()),
                cache_bytes,
                ..ServeArgs::default()
            })
        };
        assert_eq!(load(None).unwrap().cache_bytes, 64 << 20);
        assert_eq!(load(Some(2 << 20)).unwrap().cache_bytes, 2 << 20);
        let error = load(Some(4096)).unwrap_err().to_string();
        assert!(error.contains("cache_bytes is 4096"), "{error}");
        let defaults = Settings::with_data_dir(dir.path());
        assert_eq!(defaults.cache_bytes, 1 << 30);
    }

    /// A `log_level` that names no level is refused: `tracing` reads a
    /// bare `warning` as a target, and the server would log nothing.
    #[test]
    fn a_log_level_that_names_no_level_is_refused() {
        let load = |log_level: &str| {
            Settings::load(ServeArgs {
                log_level: Some(log_level.to_owned()),
                ..ServeArgs::default()
            })
        };
        for good in [
            "info",
            "WARN",
            "off",
            "warn,kvs=debug",
            "kvs::access=off,info",
        ] {
            assert_eq!(load(good).unwrap().log_level, good);
        }
        for bad in [
            "warning",
            "verbose",
            "",
            " ",
            "kvs",
            "kvs=loud",
            "notalevel!![",
        ] {
            let error = load(bad).unwrap_err().to_string();
            assert!(
                error.starts_with("log_level ") && error.contains("warn") && !error.contains('\n'),
                "{bad:?}: {error}"
            );
        }
        let error = load_file("log_level = \"\"\n").unwrap_err().to_string();
        assert!(error.contains("log_level"), "{error}");
    }

    /// A limit below its least is refused, naming the setting and the
    /// least, not raised to it without a word (`max_connections = 0` was a
    /// server of one connection).
    #[test]
    fn limits_below_their_least_are_refused() {
        type Set = fn(&mut ServeArgs);
        let cases: [(&str, Set, &str); 6] = [
            ("max_connections", |a| a.max_connections = Some(0), "1"),
            (
                "max_connections_per_ip",
                |a| a.max_connections_per_ip = Some(0),
                "1",
            ),
            (
                "max_watchers_per_token",
                |a| a.max_watchers_per_token = Some(0),
                "1",
            ),
            (
                "watch_history_changes",
                |a| a.watch_history_changes = Some(0),
                "1",
            ),
            ("backup_keep", |a| a.backup_keep = Some(0), "1"),
            (
                "max_header_bytes",
                |a| a.max_header_bytes = Some(10),
                "8192",
            ),
        ];
        for (name, set, least) in cases {
            let mut args = ServeArgs::default();
            set(&mut args);
            let error = Settings::load(args).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("{name} is "))
                    && error.contains(&format!("at least {least}")),
                "{name}: {error}"
            );
        }
        let error = load_file("max_connections = 0\n").unwrap_err().to_string();
        assert!(error.contains("max_connections"), "{error}");
        let least = Settings::load(ServeArgs {
            max_connections: Some(1),
            max_header_bytes: Some(8192),
            backup_keep: Some(1),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(least.limits.max_connections, 1);
        assert_eq!(least.limits.max_header_bytes, 8192);
        assert_eq!(least.backup_keep, 1);
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvs.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\nmetrics_public = true\n\
             watch_history = \"10m\"\nwatch_history_bytes = 1000\n",
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
        assert_eq!(settings.watch_history.max_bytes, 1000);
        assert_eq!(settings.watch_history.max_total_bytes, 1 << 30);
        assert_eq!(settings.backup_interval, None);
        assert_eq!(settings.backup_keep, 7);
        assert_eq!(settings.backup_dir, PathBuf::from("/from/file/backups"));
    }

    #[test]
    fn tls_to_etcd_needs_https_endpoints_and_a_ca_certificate() {
        let load = |endpoint: &str, ca: bool, client: bool| {
            Settings::load(ServeArgs {
                etcd: EtcdArgs {
                    etcd_endpoints: Some(vec![endpoint.to_owned()]),
                    etcd_ca_cert: ca.then(|| PathBuf::from("/ca.pem")),
                    etcd_cert: client.then(|| PathBuf::from("/c.pem")),
                    etcd_key: client.then(|| PathBuf::from("/c.key")),
                    ..EtcdArgs::default()
                },
                ..ServeArgs::default()
            })
            .map(|settings| settings.etcd.and_then(|etcd| etcd.tls))
            .map_err(|error| error.to_string())
        };
        let tls = load("https://10.0.0.1:2379", true, true).unwrap().unwrap();
        assert_eq!(tls.ca_cert, PathBuf::from("/ca.pem"));
        assert_eq!(
            tls.client,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/c.key")))
        );
        assert!(
            load("http://10.0.0.1:2379", false, false)
                .unwrap()
                .is_none()
        );
        let error = load("https://10.0.0.1:2379", false, false).unwrap_err();
        assert!(error.contains("etcd_ca_cert"), "{error}");
        let error = load("http://10.0.0.1:2379", true, false).unwrap_err();
        assert!(error.contains("https://"), "{error}");
    }

    #[test]
    fn etcd_settings_come_from_the_file_or_flags_and_are_off_by_default() {
        assert!(Settings::with_data_dir(Path::new("/d")).etcd.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvs.toml");
        std::fs::write(
            &path,
            "etcd_endpoints = [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]\n\
             etcd_prefix = \"team/\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let etcd = Settings::load(args).unwrap().etcd.unwrap();
        assert_eq!(etcd.endpoints.len(), 2);
        assert_eq!(etcd.prefix, "team/");
        assert_eq!(etcd.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert!(etcd.user.is_none());
        let args = ServeArgs {
            config: Some(path),
            etcd: EtcdArgs {
                etcd_endpoints: Some(vec!["http://10.0.0.1:2379".to_owned()]),
                etcd_user: Some("kvs".to_owned()),
                ..EtcdArgs::default()
            },
            ..ServeArgs::default()
        };
        let error = Settings::load(args).unwrap_err().to_string();
        assert!(error.contains("etcd_password"), "{error}");
    }

    #[test]
    fn origins_are_compared_in_one_spelling() {
        assert_eq!(
            normalise_origin("HTTPS://KVS.example:443/").as_deref(),
            Some("https://kvs.example")
        );
        assert_eq!(
            normalise_origin("http://kvs.example:8080").as_deref(),
            Some("http://kvs.example:8080")
        );
        for bad in [
            "null",
            "kvs.example",
            "ftp://kvs.example",
            "http://a/b",
            "http://",
        ] {
            assert_eq!(normalise_origin(bad), None, "{bad}");
        }
        let loopback = listen_origins("127.0.0.1:23849".parse().unwrap(), false);
        assert!(loopback.contains(&"http://localhost:23849".to_owned()));
        assert!(loopback.contains(&"http://127.0.0.1:23849".to_owned()));
        let v6 = listen_origins("[::1]:443".parse().unwrap(), true);
        assert!(v6.contains(&"https://[::1]".to_owned()), "{v6:?}");
        let own = listen_origins("10.0.0.5:80".parse().unwrap(), false);
        assert_eq!(own, ["http://10.0.0.5"]);
    }

    #[test]
    fn unknown_settings_in_the_file_are_refused() {
        assert!(load_file("lisen = \"127.0.0.1:1\"\n").is_err());
    }
}
