//! The command line: `kvs serve` runs the server; every other command is a
//! client of a running server ([`client`]); `kvs completions` and `kvs man`
//! describe the command line itself ([`generate`]). `main` maps the outcome
//! to an exit code; nothing here holds server logic.

mod client;
mod generate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{EtcdArgs, ServeArgs, Settings};
use crate::server::{self, ENV_ADMIN_TOKEN};
use crate::telemetry;

/// A small, secure, fast key/value server with an HTTP API.
#[derive(Parser, Debug)]
#[command(name = "kvs", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Write a backup (`kvs backup`) into a new data directory, or into an
    /// etcd cluster for cluster nodes, offline: a server started on it
    /// answers as the backed-up one did at the backup's revision (keys,
    /// times, projects and tokens).
    ///
    /// With --data-dir: refuses a directory that is not empty, unless
    /// --force (then the store in it is replaced: stop its server first).
    /// Versions are kept. The backup is checked whole (counts and checksum)
    /// before anything becomes live; a truncated or damaged file leaves no
    /// store behind.
    ///
    /// With --etcd-endpoints (and the other --etcd-* flags of `kvs serve`,
    /// or their KVS_ETCD_* variables): writes everything under the prefix,
    /// for nodes started afterwards. Stop every node of that prefix first.
    /// Refuses a prefix that holds anything (a node started on it has made
    /// a default project and an admin token) unless --force, which deletes
    /// everything under it. The backup (a file, not stdin: it is read
    /// twice) is checked whole, and every key against the cluster's
    /// request limit, before anything is written; a restore that fails
    /// while writing deletes what it wrote. Versions cannot be kept (they
    /// are etcd's revisions): every key gets a new one, so ETags and
    /// Last-Event-IDs from before do not carry over. Keys whose expiry has
    /// passed are skipped.
    ///
    /// The watch history is not in a backup: watches resume only from
    /// after each project's last write. Exit codes: 0 restored, 1 refused
    /// or failed, 2 usage error.
    Restore(Box<RestoreArgs>),
    /// Print a shell completion script (bash, elvish, fish, powershell, zsh).
    Completions(generate::Completions),
    /// Print the manual page (roff), or write one page per command into
    /// a directory.
    Man(generate::Man),
    #[command(flatten)]
    Client(Box<client::Command>),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("kvs serve: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Restore(args) => match restore(*args) {
            Ok(done) => {
                let summary = done.summary;
                println!(
                    "restored revision {} ({} projects, {} tokens, {} keys) into {}",
                    summary.revision, summary.projects, summary.tokens, done.keys, done.into
                );
                for note in done.notes {
                    println!("{note}");
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("kvs restore: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Completions(args) => generated(generate::completions(args)),
        Command::Man(args) => generated(generate::man(args)),
        Command::Client(command) => client::run(*command),
    }
}

#[derive(clap::Args, Debug)]
struct RestoreArgs {
    /// The backup to restore; `-` for stdin (not into etcd).
    file: String,
    /// The data directory to write (new or empty).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "etcd_endpoints",
        conflicts_with = "etcd_endpoints"
    )]
    data_dir: Option<std::path::PathBuf>,
    /// Replace the store in a directory that is not empty, or everything
    /// under the etcd prefix (stop its server or nodes first).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// What `kvs restore` did, for its output.
struct Restored {
    summary: crate::backup::Summary,
    /// Keys written.
    keys: u64,
    /// Where to.
    into: String,
    /// Lines printed after the summary.
    notes: Vec<String>,
}

fn restore(args: RestoreArgs) -> anyhow::Result<Restored> {
    use anyhow::Context as _;
    let file = args.file;
    let open = || -> anyhow::Result<std::fs::File> {
        std::fs::File::open(&file).with_context(|| format!("cannot open {file}"))
    };
    if let Some(etcd) = args.etcd.settings(EtcdArgs::default())? {
        anyhow::ensure!(
            file != "-",
            "a restore into etcd reads the backup twice (checked whole first, then written): \
             give a file, not -"
        );
        return restore_cluster(open, &etcd, args.force)
            .with_context(|| format!("{file} was not restored"));
    }
    let Some(dir) = args.data_dir else {
        anyhow::bail!("give --data-dir DIR or --etcd-endpoints URLS");
    };
    let summary = if file == "-" {
        crate::backup::restore(std::io::stdin().lock(), &dir, args.force)?
    } else {
        crate::backup::restore(open()?, &dir, args.force)
            .with_context(|| format!("{file} was not restored"))?
    };
    Ok(Restored {
        summary,
        keys: summary.keys,
        into: dir.display().to_string(),
        notes: Vec::new(),
    })
}

#[cfg(feature = "etcd")]
fn restore_cluster(
    open: impl Fn() -> anyhow::Result<std::fs::File>,
    etcd: &crate::config::EtcdSettings,
    force: bool,
) -> anyhow::Result<Restored> {
    let done = crate::backup::restore_cluster(open, etcd, force)?;
    let summary = done.summary;
    let mut notes = vec![
        "versions are new (etcd revisions): ETags and Last-Event-IDs from before the restore \
         do not carry over"
            .to_owned(),
    ];
    if done.expired > 0 {
        notes.push(format!(
            "{} keys whose expiry had passed were not restored",
            done.expired
        ));
    }
    Ok(Restored {
        summary,
        keys: summary.keys - done.expired,
        into: format!(
            "etcd at {} under the prefix {}",
            etcd.endpoints.join(","),
            etcd.prefix
        ),
        notes,
    })
}

/// A build without the `etcd` feature cannot write into a cluster.
#[cfg(not(feature = "etcd"))]
fn restore_cluster(
    _: impl Fn() -> anyhow::Result<std::fs::File>,
    _: &crate::config::EtcdSettings,
    _: bool,
) -> anyhow::Result<Restored> {
    anyhow::bail!(crate::config::WITHOUT_ETCD)
}

/// The exit code of `kvs completions` or `kvs man`; `| head` is no failure.
fn generated(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kvs: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for the server's process, as Redis's
/// start-up warning advises. mimalloc asks for them on its arenas; a fault in such an
/// arena then zeroes (and may first compact memory for) 2 MiB at once, on
/// whichever thread touched it: the writer or a request's worker. With them
/// on, PUT's and GET's p99 had outliers of 15–45 ms (`bench/README.md`).
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "could not turn transparent huge pages off");
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args)?;
    telemetry::init_logging(settings.log_format, &settings.log_level);
    without_transparent_huge_pages();
    telemetry::init_metrics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", settings.listen))?;
        let admin_secret = std::env::var(ENV_ADMIN_TOKEN)
            .ok()
            .filter(|s| !s.is_empty());
        server::run(listener, settings, admin_secret, server::shutdown_signal()).await
    })
}
