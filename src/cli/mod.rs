//! The command line: `kvs serve` runs the server; every other command is a
//! client of a running server ([`client`]); `kvs completions` and `kvs man`
//! describe the command line itself ([`generate`]). `main` maps the outcome
//! to an exit code; nothing here holds server logic.

mod client;
mod generate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{ServeArgs, Settings};
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
    /// Write a new data directory from a backup (`kvs backup`), offline: a
    /// server started on it answers as the backed-up one did at the
    /// backup's revision (keys, versions, times, projects and tokens).
    ///
    /// Refuses a directory that is not empty, unless --force (then the store
    /// in it is replaced: stop its server first). The backup is checked
    /// whole (counts and checksum) before anything becomes live; a truncated
    /// or damaged file leaves no store behind. The watch history is not in a
    /// backup: watches resume only from after each project's last write.
    /// Exit codes: 0 restored, 1 refused or failed, 2 usage error.
    Restore(RestoreArgs),
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
        Command::Restore(args) => match restore(&args) {
            Ok(summary) => {
                println!(
                    "restored revision {} ({} projects, {} tokens, {} keys) into {}",
                    summary.revision,
                    summary.projects,
                    summary.tokens,
                    summary.keys,
                    args.data_dir.display()
                );
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
    /// The backup to restore; `-` for stdin.
    file: String,
    /// The data directory to write (new or empty).
    #[arg(long, value_name = "DIR")]
    data_dir: std::path::PathBuf,
    /// Replace the store in a directory that is not empty.
    #[arg(long)]
    force: bool,
}

fn restore(args: &RestoreArgs) -> anyhow::Result<crate::backup::Summary> {
    use anyhow::Context as _;
    if args.file == "-" {
        return crate::backup::restore(std::io::stdin().lock(), &args.data_dir, args.force);
    }
    let file =
        std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file))?;
    crate::backup::restore(file, &args.data_dir, args.force)
        .with_context(|| format!("{} was not restored", args.file))
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

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args)?;
    telemetry::init_logging(settings.log_format, &settings.log_level);
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
