//! `kvs backup FILE`: downloads `GET /v1/backup` and checks it as it comes
//! (every line parsed, the trailer's counts and checksum), so that a file it
//! leaves is a whole backup. A file is written as `FILE.tmp`, fsync'd and
//! renamed; `-` writes to stdout (a broken stream is then reported, but what
//! was written stays written).

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use ureq::http::Method;

use super::{Common, Outcome, output};
use crate::backup::{Reader, next_line};

#[derive(clap::Args, Debug)]
pub struct Backup {
    /// Where to write the backup; `-` for stdout.
    file: String,
    #[command(flatten)]
    common: Common,
}

pub fn backup(args: Backup) -> Outcome {
    // A cluster node reads the whole store before its first byte: no limit
    // unless --timeout sets one.
    let api = args.common.api_for_long_work();
    let response = api.send(Method::GET, "/v1/backup", None)?;
    let body = response.into_body().into_reader();
    if args.file == "-" {
        let mut out = io::stdout().lock();
        copy_checked(body, &mut out)?;
        out.flush()?;
        return Ok(());
    }
    let path = PathBuf::from(&args.file);
    let tmp = PathBuf::from(format!("{}.tmp", args.file));
    let written = (|| {
        let file = crate::files::overwrite_private(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = io::BufWriter::with_capacity(256 << 10, &file);
        let summary = copy_checked(body, &mut out)?;
        out.flush()?;
        drop(out);
        file.sync_all()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        sync_parent(&path)?;
        Ok::<_, super::ClientError>(summary)
    })();
    let summary = match written {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
    };
    output::lines([format!(
        "backed up revision {} ({} projects, {} tokens, {} keys, {} bytes) to {}",
        summary.revision, summary.projects, summary.tokens, summary.keys, summary.bytes, args.file
    )])?;
    Ok(())
}

/// Copies the backup to `out` line by line, checking each.
fn copy_checked(
    body: impl io::Read,
    out: &mut impl Write,
) -> Result<crate::backup::Summary, super::ClientError> {
    let mut input = BufReader::with_capacity(256 << 10, body);
    let mut reader = Reader::default();
    let mut line = Vec::new();
    while next_line(&mut input, &mut line, reader.longest_line())
        .map_err(|error| anyhow!("the backup broke off: {error}"))?
    {
        reader
            .line(&line)
            .map_err(|error| anyhow!("the server's backup is not valid: {error:#}"))?;
        out.write_all(&line)?;
    }
    Ok(reader
        .finish()
        .map_err(|error| anyhow!("the server's backup is not valid: {error:#}"))?)
}

fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync {}", parent.display()))
}
