//! How answers look on stdout: JSON as the server sent it (for `--json`),
//! `field  value` lines for one resource, and aligned columns for many. Every
//! write goes through `writeln!` rather than `println!`, so that a closed pipe
//! is an error the caller can ignore instead of a panic.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

use super::Outcome;

/// JSON, pretty-printed. An answer read as [`super::api::Json`] (or a
/// `RawValue` inside a value) prints the server's text token for token.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Outcome {
    let text = serde_json::to_string(value).map_err(io::Error::from)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", reformat(&text, true))?;
    Ok(())
}

/// JSON text indented by two spaces (`pretty`, the layout of serde_json's
/// pretty printer) or with no whitespace at all, changed in nothing else:
/// strings, numbers and the order of keys stay as they are in `text`, which
/// must be one valid JSON value. (Going through a `serde_json::Value` to lay
/// it out would round numbers beyond 64 bits and sort keys.)
pub fn reformat(text: &str, pretty: bool) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
    let is_space = |c: &char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                let mut escaped = false;
                for c in chars.by_ref() {
                    out.push(c);
                    match c {
                        '"' if !escaped => break,
                        '\\' => escaped = !escaped,
                        _ => escaped = false,
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(is_space).is_some() {}
                if let Some(close) = chars.next_if(|c| matches!(c, '}' | ']')) {
                    out.push(close);
                } else {
                    depth += 1;
                    if pretty {
                        newline(&mut out, depth);
                    }
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if pretty {
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                if pretty {
                    newline(&mut out, depth);
                }
            }
            ':' => out.push_str(if pretty { ": " } else { ":" }),
            c if is_space(&c) => {}
            c => out.push(c),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::reformat;

    #[test]
    fn reformatting_keeps_numbers_key_order_and_strings_as_they_are() {
        let text = r#" {"n" : 123456789012345678901234567890,"b":1,"a":[ ],"e":{},
            "s":"x, \"y\": [z]\\","l":[1E2,-0, true,null]}"#;
        assert_eq!(
            reformat(text, false),
            r#"{"n":123456789012345678901234567890,"b":1,"a":[],"e":{},"s":"x, \"y\": [z]\\","l":[1E2,-0,true,null]}"#
        );
        assert_eq!(
            reformat(text, true),
            "{\n  \"n\": 123456789012345678901234567890,\n  \"b\": 1,\n  \"a\": [],\n  \
             \"e\": {},\n  \"s\": \"x, \\\"y\\\": [z]\\\\\",\n  \"l\": [\n    1E2,\n    -0,\n    \
             true,\n    null\n  ]\n}"
        );
    }

    #[test]
    fn pretty_reformatting_lays_out_as_serde_json_does() {
        let value = serde_json::json!({"a": [1, {"b": [], "c": {}}, "d"], "e": {"f": null}});
        let compact = serde_json::to_string(&value).unwrap();
        assert_eq!(
            reformat(&compact, true),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }
}
