//! How answers look on stdout: JSON as the server sent it (for `--json`),
//! `field  value` lines for one resource, and aligned columns for many. Every
//! write goes through `writeln!` rather than `println!`, so that a closed pipe
//! is an error the caller can ignore instead of a panic.

use std::io::{self, Write};

use serde_json::Value;

use super::Outcome;

/// The JSON answer, pretty-printed.
pub fn json(value: &Value) -> Outcome {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Lines of text.
pub fn lines<I: IntoIterator<Item = String>>(lines: I) -> Outcome {
    let mut out = io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// One resource as `name  value` lines, in the order given.
pub fn fields(value: &Value, names: &[&str]) -> Outcome {
    let width = names.iter().map(|name| name.len()).max().unwrap_or(0);
    lines(
        names
            .iter()
            .map(|name| format!("{name:width$}  {}", text(&value[*name]))),
    )
}

/// Rows under a header, each column as wide as its widest cell; the last
/// column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Outcome {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut widths = vec![0; header.len()];
    for row in std::iter::once(&header).chain(rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    lines(std::iter::once(&header).chain(rows).map(|row| {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                line.push_str(&format!("{cell}{}  ", " ".repeat(pad)));
            }
        }
        line
    }))
}

/// A JSON field as a person reads it: strings bare, absent or null as `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
