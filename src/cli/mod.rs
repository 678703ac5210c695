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
    /// Print a shell completion script (bash, elvish, fish, powershell, zsh).
    Completions(generate::Completions),
    /// Print the manual page (roff), or write one page per command into
    /// a directory.
    Man(generate::Man),
    #[command(flatten)]
    Client(client::Command),
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
        Command::Completions(args) => generated(generate::completions(args)),
        Command::Man(args) => generated(generate::man(args)),
        Command::Client(command) => client::run(command),
    }
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
