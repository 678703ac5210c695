//! `kvs verify`: checks every stored record and value. With `--data-dir`
//! it reads a stopped store's files itself; without, it asks the running
//! server (`POST /v1/verify`, admin), which walks a read snapshot while it
//! goes on serving.

use std::path::PathBuf;

use anyhow::anyhow;
use ureq::http::Method;

use super::api::ClientError;
use super::{Common, Outcome, output};
use crate::store::Report;

#[derive(clap::Args, Debug)]
pub struct Verify {
    /// Check the stopped store in this data directory instead of asking a
    /// server.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

pub fn verify(args: Verify) -> Outcome {
    let report = match &args.data_dir {
        Some(dir) => crate::store::redb_engine::verify_dir(dir).map_err(|e| anyhow!("{e}"))?,
        None => {
            let answer = args
                .common
                .api_for_long_work()
                .json(Method::POST, "/v1/verify", None)?;
            serde_json::from_value::<Report>(answer.into_value())
                .map_err(|e| anyhow!("the server's report cannot be read: {e}"))?
        }
    };
    // Damage is told by its exit code even when the report could not all
    // be printed (`kvs verify | head`).
    let printed = output::lines(report.lines());
    match report.damage.len() {
        0 => printed,
        items => Err(ClientError::Damaged { items }),
    }
}
