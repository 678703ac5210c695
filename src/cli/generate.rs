//! `kvs completions` and `kvs man`: shell completion scripts and manual
//! pages generated from the clap command tree at run time, so that they
//! always describe the binary that prints them and a package can make them
//! at install time (`kvs completions bash > /usr/share/bash-completion/…`).

use std::io::{self, Write};
use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Completions {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(clap::Args, Debug)]
pub struct Man {
    /// Write a page for `kvs` and one for each of its commands
    /// (`kvs.1`, `kvs-serve.1`, …) into this directory instead of printing
    /// the page of `kvs` alone.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script for a shell.
pub fn completions(args: Completions) -> io::Result<()> {
    // Generated into memory first: clap_complete panics on a failed write,
    // and a closed stdout must be an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "kvs", &mut script);
    write_stdout(&script)
}

/// Prints the manual page of `kvs` in roff, or writes every command's page
/// into a directory.
pub fn man(args: Man) -> io::Result<()> {
    let command = Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(command, &dir)
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            write_stdout(&page)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}
