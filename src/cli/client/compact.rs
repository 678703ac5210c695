//! `kvs compact`: gives the store's free room back. With `--data-dir` it
//! rewrites a stopped store's files itself; without, it asks the running
//! server (`POST /v1/compact`, admin), whose writes wait while it runs.

use std::path::PathBuf;

use anyhow::anyhow;
use ureq::http::Method;

use super::{Common, Outcome, output};

#[derive(clap::Args, Debug)]
pub struct Compact {
    /// Compact the stopped store in this data directory instead of asking
    /// a server.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

pub fn compact(args: Compact) -> Outcome {
    let (place, before, after, tables, rows) = match &args.data_dir {
        Some(dir) => {
            let done = crate::store::redb_engine::compact_dir(dir).map_err(|e| anyhow!("{e}"))?;
            let place = dir.display().to_string();
            (
                place,
                done.before,
                done.after,
                done.tables as u64,
                done.rows,
            )
        }
        None => {
            let answer = args
                .common
                .api_for_long_work()
                .json(Method::POST, "/v1/compact", None)?;
            let answer = answer.into_value();
            let figure = |name: &str| {
                answer[name]
                    .as_u64()
                    .ok_or_else(|| anyhow!("the server's answer has no {name}: {answer}"))
            };
            let place = args.common.url.clone();
            (
                place,
                figure("before")?,
                figure("after")?,
                figure("tables")?,
                figure("rows")?,
            )
        }
    };
    output::lines([format!(
        "compacted {place}: kvs.redb from {before} to {after} bytes \
         ({tables} tables, {rows} rows copied in key order)"
    )])
}
