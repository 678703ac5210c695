//! Client commands: talk to a running server over HTTP.

use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {}

pub fn run(command: Command) -> ExitCode {
    match command {}
}
