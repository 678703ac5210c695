//! `kvs txn`: one transaction, read as JSON from a file or stdin and sent as
//! it is (the server owns its validation), then told back one line per op. A
//! refusal names what failed: the checks that did not hold, or the op that
//! could not apply, as the server's error body gives them.

use std::fs;
use std::io::{self, IsTerminal, Read};

use anyhow::{Context, anyhow};
use serde_json::Value;
use ureq::http::Method;

use super::api::{ClientError, segment};
use super::{Common, Outcome, ProjectArg, output};

#[derive(clap::Args, Debug)]
pub struct Txn {
    /// The transaction's JSON, `{"checks": […], "ops": […]}`: a file, or `-`
    /// (or nothing) for stdin.
    file: Option<String>,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

pub fn txn(args: Txn) -> Outcome {
    let text = match args.file.as_deref() {
        None | Some("-") => {
            if io::stdin().is_terminal() {
                eprintln!("kvs: reading the transaction from stdin (end it with Ctrl-D)");
            }
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the transaction from stdin")?;
            text
        }
        Some(file) => fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?,
    };
    let body: Value = serde_json::from_str(&text)
        .map_err(|error| anyhow!("the transaction is not JSON ({error})"))?;
    let path = format!("/v1/projects/{}/txn", segment(&args.project.project));
    let answer = args
        .common
        .api()
        .json_text(Method::POST, &path, Some(text.as_bytes()))
        .map_err(|error| explain(error, &body))?;
    if args.common.json {
        return output::json(&answer);
    }
    let ops = body["ops"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let results = answer["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    output::lines(
        ops.iter()
            .zip(results)
            .map(|(op, result)| describe(op, result)),
    )
}

/// One op's result as a line: `put k (version 12)`, `deleted k`,
/// `k was absent`, `get k: value`, `incr n = 5`.
fn describe(op: &Value, result: &Value) -> String {
    let key = output::text(&op["key"]);
    match op["op"].as_str().unwrap_or("") {
        "put" => format!("put {key} (version {})", output::text(&result["version"])),
        "delete" if result["deleted"] == Value::Bool(true) => format!("deleted {key}"),
        "delete" => format!("{key} was absent"),
        "get" => format!("get {key}: {}", shown(result)),
        "incr" => format!("incr {key} = {}", output::text(&result["value"])),
        other => format!("{other} {key}: {result}"),
    }
}

/// A `get` result's value as text: a string as it is, JSON compact, bytes
/// that are not UTF-8 as a note.
fn shown(result: &Value) -> String {
    if result.is_null() || (result["value"].is_null() && result["encoding"].is_null()) {
        return "absent".to_owned();
    }
    match (result["encoding"].as_str(), &result["value"]) {
        (Some("utf8"), Value::String(text)) => text.clone(),
        (Some("base64"), _) => format!(
            "({} bytes of {}, not text; `kvs get {}` prints them)",
            output::text(&result["size"]),
            output::text(&result["content_type"]),
            output::text(&result["key"])
        ),
        (_, value) => value.to_string(),
    }
}

/// A refusal that names failed checks or a failed op gets them spelled out,
/// each with what the request asked of it.
fn explain(error: ClientError, request: &Value) -> ClientError {
    let ClientError::Refused {
        status,
        mut summary,
        body: Some(body),
    } = error
    else {
        return error;
    };
    if let Some(failed) = body["failed_checks"].as_array() {
        let checks: Vec<String> = failed
            .iter()
            .map(|index| {
                let check = index.as_u64().map_or(&Value::Null, |i| {
                    usize::try_from(i).map_or(&Value::Null, |i| &request["checks"][i])
                });
                format!("#{} ({})", output::text(index), describe_check(check))
            })
            .collect();
        let noun = if checks.len() == 1 { "check" } else { "checks" };
        summary.push_str(&format!("; failed {noun} {}", checks.join(", ")));
    }
    if let Some(index) = body["failed_op"].as_u64() {
        let op = usize::try_from(index).map_or(&Value::Null, |i| &request["ops"][i]);
        summary.push_str(&format!(
            "; failed op #{index} ({} {})",
            output::text(&op["op"]),
            output::text(&op["key"])
        ));
    }
    ClientError::Refused {
        status,
        summary,
        body: Some(body),
    }
}

/// A check as asked: `a at version 12`, `b exists: false`.
fn describe_check(check: &Value) -> String {
    let key = output::text(&check["key"]);
    if !check["version"].is_null() {
        format!("{key} at version {}", output::text(&check["version"]))
    } else if !check["exists"].is_null() {
        format!("{key} exists: {}", output::text(&check["exists"]))
    } else {
        key
    }
}
