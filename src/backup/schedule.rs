//! Scheduled backups: every `backup_interval`, the server writes a backup
//! of itself to `backup_dir` as `kvs-backup-<revision>-<UTC time>.jsonl`
//! (written to a `.tmp` file, fsync'd, then renamed, so that a file with the
//! final name is always whole) and removes the oldest beyond `backup_keep`.
//! The file is what `GET /v1/backup` answers, written by the same
//! [`super::write`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::Summary;
use crate::store::Store;

const PREFIX: &str = "kvs-backup-";
const SUFFIX: &str = ".jsonl";

/// `kvs-backup-<revision>-<YYYYmmddTHHMMSSZ>.jsonl`.
pub fn backup_file_name(revision: u64, at: crate::domain::Timestamp) -> String {
    // 2026-11-21T10:00:00.123Z → 20261121T100000Z: no `:` in file names.
    let text = at.rfc3339();
    let compact: String = text
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{PREFIX}{revision}-{compact}Z{SUFFIX}")
}

/// Takes a snapshot and writes it to a new file in `dir`; answers its path
/// and what it holds.
pub async fn write_file(store: &dyn Store, dir: &Path) -> anyhow::Result<(PathBuf, Summary)> {
    let snapshot = store.snapshot().await.context("cannot take a snapshot")?;
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        crate::files::create_private_dir(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let name = backup_file_name(snapshot.revision(), crate::domain::Timestamp::now());
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        let written = (|| {
            let file = crate::files::overwrite_private(&tmp)?;
            let summary = super::write(snapshot.as_ref(), &file)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()?;
            Ok::<_, std::io::Error>(summary)
        })();
        match written {
            Ok(summary) => Ok((path, summary)),
            Err(error) => {
                let _ = std::fs::remove_file(&tmp);
                Err(anyhow::anyhow!("cannot write {}: {error}", path.display()))
            }
        }
    })
    .await
    .context("the backup task failed")?
}

/// Removes the oldest backups in `dir` (by the time in their name) beyond
/// `keep`; answers how many it removed. Not by revision: after a restore
/// the server's revisions start again from the backup's, and the newest
/// backups would sort first.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<usize> {
    let mut backups: Vec<(String, String)> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
            // `<revision>-<UTC time>`: the time sorts as text.
            let (_, time) = stem.split_once('-')?;
            Some((time.to_owned(), name))
        })
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    for (_, name) in &backups[..excess] {
        std::fs::remove_file(dir.join(name))?;
    }
    Ok(excess)
}

/// Starts the scheduled backups, if `interval` is set: one every interval
/// until `stopping` turns true (a backup under way is finished first).
pub fn schedule(
    store: Arc<dyn Store>,
    interval: Option<Duration>,
    dir: PathBuf,
    keep: usize,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = interval?;
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            match write_file(store.as_ref(), &dir).await {
                Ok((path, summary)) => {
                    tracing::info!(
                        path = %path.display(),
                        revision = summary.revision,
                        keys = summary.keys,
                        bytes = summary.bytes,
                        "wrote a scheduled backup"
                    );
                    if let Err(error) = prune(&dir, keep) {
                        tracing::warn!(%error, "cannot remove old backups");
                    }
                }
                Err(error) => {
                    tracing::error!(error = %format!("{error:#}"), "a scheduled backup failed")
                }
            }
        }
    }))
}
