//! `kvs watch`: a project's changes, printed as they happen, for as long as
//! the command runs. The server sends them as server-sent events
//! (`text/event-stream`); this module reads that stream line by line
//! ([`Events`]), prints each revision's changes once it has them all
//! ([`Watcher`]), and keeps the watch going across broken connections and
//! server restarts by resuming after the last revision it has printed
//! (`Last-Event-ID`), so that no change is printed twice or missed.
//!
//! The watch's client ([`Source`]) has no timeout on the whole answer (a
//! stream may last for days) but one on each read, so that a connection that
//! died without a word is noticed.

use std::io::{self, BufRead, BufReader, Write};
use std::thread;
use std::time::Duration;

use anyhow::anyhow;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use ureq::http::header::{ACCEPT, CONTENT_TYPE};
use ureq::http::{HeaderName, Method, Response, StatusCode};

use super::api::{Api, ClientError, query, segment};
use super::{Common, Outcome, ProjectArg, output};

/// A stream that brings nothing for this long, not even the keep-alive
/// comment that the server sends every 10 s (the contract: at least every
/// 15 s), is taken for dead and replaced by a new connection.
const IDLE: Duration = Duration::from_secs(35);

/// The pause before reconnecting, until the server's `retry:` says otherwise.
const DEFAULT_RETRY: Duration = Duration::from_millis(2000);

#[derive(clap::Args, Debug)]
pub struct Watch {
    /// Only keys that start with this prefix [default: every key the token
    /// may read].
    prefix: Option<String>,
    /// First print the changes after this revision, as far as the server
    /// still keeps them (`--since 0`: all it keeps), then follow. Without
    /// it, only changes from now on are printed.
    #[arg(long, value_name = "REVISION")]
    since: Option<u64>,
    /// Print each put's value too (`--help` says how).
    #[arg(long)]
    values: bool,
    #[command(flatten)]
    project: ProjectArg,
    #[command(flatten)]
    common: Common,
}

pub fn watch(args: Watch) -> Outcome {
    let source = Source::new(&args);
    let mut watcher = Watcher {
        resume: None,
        retry: DEFAULT_RETRY,
        pending: Vec::new(),
        json: args.common.json,
    };
    // Until a stream has been opened, every failure is the command's answer
    // (exit 4 for no server); after that, a server that goes away is waited
    // for, however long it takes, and said so once.
    let mut connected = false;
    let mut told_unreachable = false;
    loop {
        let response = match source.open(watcher.resume) {
            Ok(response) => response,
            Err(error) if connected && passing(&error) => {
                if !told_unreachable {
                    let every = seconds(watcher.retry);
                    match &error {
                        ClientError::Unreachable { url, reason } => {
                            eprintln!(
                                "kvs: cannot connect to {url} ({reason}); retrying every {every}"
                            )
                        }
                        _ => eprintln!("kvs: {error}; retrying every {every}"),
                    }
                    told_unreachable = true;
                }
                thread::sleep(watcher.retry);
                continue;
            }
            Err(error) => return Err(error),
        };
        if connected {
            match watcher.resume {
                Some(revision) => eprintln!("kvs: reconnected; resuming after revision {revision}"),
                None => eprintln!("kvs: reconnected"),
            }
        }
        connected = true;
        told_unreachable = false;
        match watcher.follow(response)? {
            End::Cut(reason) => {
                eprintln!(
                    "kvs: the watch was cut off ({reason}); reconnecting in {}",
                    seconds(watcher.retry)
                );
                thread::sleep(watcher.retry);
            }
            // Closed for falling behind: catching up cannot wait.
            End::Behind => eprintln!("kvs: the server closed the watch for falling behind"),
        }
    }
}

/// Whether a failure to reconnect may pass: the server is away or busy.
fn passing(error: &ClientError) -> bool {
    match error {
        ClientError::Unreachable { .. } | ClientError::Silent { .. } => true,
        ClientError::Refused { status, .. } => {
            status.is_server_error()
                || *status == StatusCode::TOO_MANY_REQUESTS
                || *status == StatusCode::REQUEST_TIMEOUT
        }
        _ => false,
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

// ======================================================= the connection

/// The HTTP side of one watch: where it points and as whom.
struct Source {
    api: Api,
    /// `/v1/projects/{p}/watch`.
    path: String,
    prefix: Option<String>,
    values: bool,
    since: Option<u64>,
}

impl Source {
    fn new(args: &Watch) -> Source {
        Source {
            api: args.common.api_with_idle_timeout(IDLE),
            path: format!("/v1/projects/{}/watch", segment(&args.project.project)),
            prefix: args.prefix.clone(),
            values: args.values,
            since: args.since,
        }
    }

    /// Opens the stream: after `resume` (`Last-Event-ID`) when the watch has
    /// been current up to a revision, else from `--since` or from now.
    fn open(&self, resume: Option<u64>) -> Result<Response<ureq::Body>, ClientError> {
        let since = self.since.map(|since| since.to_string());
        let mut pairs = Vec::new();
        if let Some(prefix) = &self.prefix {
            pairs.push(("prefix", prefix.as_str()));
        }
        if self.values {
            pairs.push(("values", "true"));
        }
        // Once resuming, `Last-Event-ID` says where from; `since` goes only
        // on the first request.
        if let (None, Some(since)) = (resume, &since) {
            pairs.push(("since", since.as_str()));
        }
        let path = format!("{}{}", self.path, query(&pairs));
        let mut headers = vec![(ACCEPT, "text/event-stream".to_owned())];
        if let Some(revision) = resume {
            headers.push((
                HeaderName::from_static("last-event-id"),
                revision.to_string(),
            ));
        }
        let response = self.api.send_with(Method::GET, &path, None, &headers)?;
        let streams = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if !streams {
            return Err(
                anyhow!("the answer is not an event stream; is the URL a kvs server?").into(),
            );
        }
        Ok(response)
    }
}

// ======================================================= following a stream

/// Why a stream ended, when the watch goes on.
enum End {
    /// The server closed it, or the connection broke or went quiet: resume
    /// after the server's `retry` pause.
    Cut(String),
    /// The server closed it for falling behind: resume at once.
    Behind,
}

/// What a watch knows between connections.
struct Watcher {
    /// The revision up to which every change has been printed, and after
    /// which none has: where to resume. `None` until the first `id:`.
    resume: Option<u64>,
    /// The pause before reconnecting, as the server's `retry:` sets it.
    retry: Duration,
    /// Changes of a revision still coming in. Only the last event of a
    /// revision carries its `id:`, so a revision is printed when that one
    /// arrives: whole, or (when the connection breaks first) not at all,
    /// since resuming sends it again.
    pending: Vec<Change>,
    /// One JSON object per line instead of text.
    json: bool,
}

impl Watcher {
    /// Prints a stream's changes until it ends. A refusal to go on (the
    /// history the watch needs is gone) is an error.
    fn follow(&mut self, response: Response<ureq::Body>) -> Result<End, ClientError> {
        self.pending.clear();
        let mut events = Events {
            reader: BufReader::new(response.into_body().into_reader()),
        };
        loop {
            let event = match events.next() {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(End::Cut("the server closed it".to_owned())),
                Err(error) => return Ok(End::Cut(broken(&error))),
            };
            if let Some(retry) = event.retry {
                self.retry = retry;
            }
            match event.name.as_deref() {
                Some(name @ ("put" | "delete")) => {
                    let mut change: Change =
                        serde_json::from_str(&event.data).map_err(|error| {
                            anyhow!(
                                "the server sent a change that makes no sense ({error}): {}",
                                event.data
                            )
                        })?;
                    name.clone_into(&mut change.event);
                    self.pending.push(change);
                }
                Some("error") => return stopped(&event.data),
                // `sync` (its id is all that matters) and events this
                // client does not know.
                _ => {}
            }
            if let Some(id) = event.id {
                let revision = id.trim().parse::<u64>().map_err(|_| {
                    anyhow!("the server sent an event id that is not a revision: {id:?}")
                })?;
                self.print()?;
                self.resume = Some(revision);
            }
        }
    }

    /// Prints the pending changes and flushes them: a watch's reader wants
    /// each change as it comes, not when a buffer fills.
    fn print(&mut self) -> Outcome {
        let mut out = io::stdout().lock();
        for change in self.pending.drain(..) {
            if self.json {
                serde_json::to_writer(&mut out, &change).map_err(io::Error::from)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", change.line())?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

/// A read that failed, as a person would say it.
fn broken(error: &io::Error) -> String {
    let timed_out = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)));
    if timed_out || error.kind() == io::ErrorKind::TimedOut {
        format!("nothing came from the server for {}", seconds(IDLE))
    } else {
        format!("the connection broke: {error}")
    }
}

/// The server's last word on a stream, `event: error`: falling behind is
/// resumed; history that is gone ends the command (exit 1).
fn stopped(data: &str) -> Result<End, ClientError> {
    let body: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let code = body["code"].as_str().unwrap_or("error");
    let message = body["message"]
        .as_str()
        .unwrap_or("the server ended the watch");
    match code {
        "slow_consumer" => Ok(End::Behind),
        "history_compacted" => Err(ClientError::Refused {
            status: StatusCode::GONE,
            summary: format!("{code}: {message}"),
            body: Some(body.clone()),
        }),
        _ => Ok(End::Cut(format!("{code}: {message}"))),
    }
}

// ======================================================= changes

/// One change: the data of a `put` or `delete` event, as `--json` prints it
/// with the event's name in front.
#[derive(Debug, Deserialize, Serialize)]
struct Change {
    /// `put` or `delete`: the event's name, which is not in its data.
    #[serde(skip_deserializing)]
    event: String,
    key: String,
    version: u64,
    revision: u64,
    /// `expired` for a key whose TTL ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// A put's value, with `--values`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    /// Kept as the server's text, so that `--json` prints a JSON value
    /// exactly as it was sent (no `f64` rounding, no sorting of keys).
    value: Option<Box<RawValue>>,
    /// `utf8`, `json` or `base64`: how `value` holds the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<String>,
}

/// A field that is there, even as `null` (a JSON value `null`), which serde
/// would otherwise read as absent.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

impl Change {
    /// `put KEY REVISION [VALUE]`, `delete KEY REVISION [expired]`.
    fn line(&self) -> String {
        let mut line = format!("{} {} {}", self.event, self.key, self.revision);
        if let Some(reason) = &self.reason {
            line.push(' ');
            line.push_str(reason);
        }
        if let Some(value) = &self.value {
            line.push(' ');
            line.push_str(&shown(value, self.encoding.as_deref()));
        }
        line
    }
}

/// A value on one line: text as it is, but with control characters and
/// backslashes escaped (`\n`, `\\`); JSON compact (its tokens as sent);
/// other bytes as a note.
fn shown(value: &RawValue, encoding: Option<&str>) -> String {
    let parsed = match encoding {
        Some("utf8" | "base64") => serde_json::from_str(value.get()).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    match (encoding, &parsed) {
        (Some("utf8"), Value::String(text)) => text
            .chars()
            .map(|c| {
                if c == '\\' || c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
        (Some("base64"), Value::String(encoded)) => match BASE64.decode(encoded) {
            Ok(bytes) => format!("<{} bytes, not text>", bytes.len()),
            Err(_) => "<bytes, not text>".to_owned(),
        },
        _ => output::reformat(value.get(), false),
    }
}

// ======================================================= server-sent events

/// One block of a `text/event-stream`: the fields before a blank line.
#[derive(Debug, Default, PartialEq)]
struct Event {
    name: Option<String>,
    /// The `data:` lines, joined by `\n`.
    data: String,
    id: Option<String>,
    retry: Option<Duration>,
}

/// Reads a `text/event-stream` (the WHATWG format) block by block. Lines end
/// with `\n` or `\r\n`; comments (`: keep-alive`) are skipped.
struct Events<R> {
    reader: R,
}

impl<R: BufRead> Events<R> {
    /// The next block that has a field; `None` at the end of the stream. A
    /// block that the end cuts off is dropped, as the format says.
    fn next(&mut self) -> io::Result<Option<Event>> {
        let mut event = Event::default();
        let mut fields = 0;
        let mut has_data = false;
        let mut line = Vec::new();
        loop {
            line.clear();
            self.reader.read_until(b'\n', &mut line)?;
            if line.pop() != Some(b'\n') {
                return Ok(None);
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if fields > 0 {
                    return Ok(Some(event));
                }
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            match field {
                "event" => event.name = Some(value.to_owned()),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                "id" => event.id = Some(value.to_owned()),
                "retry" => match value.parse::<u64>() {
                    Ok(millis) => event.retry = Some(Duration::from_millis(millis)),
                    Err(_) => continue,
                },
                _ => continue,
            }
            fields += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn events(stream: &str) -> Vec<Event> {
        let mut events = Events {
            reader: stream.as_bytes(),
        };
        std::iter::from_fn(|| events.next().unwrap()).collect()
    }

    #[test]
    fn a_stream_reads_as_blocks_without_its_comments() {
        let stream = "retry: 2000\n\n: keep-alive\n\nevent: put\ndata: {\"a\":1}\n\n\
                      event: put\r\nid: 7\r\ndata: x\r\ndata:y\r\n\r\nevent: put\ndata: cut";
        let expected = [
            Event {
                retry: Some(Duration::from_millis(2000)),
                ..Event::default()
            },
            Event {
                name: Some("put".into()),
                data: "{\"a\":1}".into(),
                ..Event::default()
            },
            Event {
                name: Some("put".into()),
                data: "x\ny".into(),
                id: Some("7".into()),
                ..Event::default()
            },
        ];
        assert_eq!(events(stream), expected);
    }

    #[test]
    fn a_line_shows_a_value_on_one_line() {
        let change = |value: Value, encoding: &str| Change {
            event: "put".into(),
            key: "a b".into(),
            version: 3,
            revision: 3,
            reason: None,
            value: serde_json::value::to_raw_value(&value).ok(),
            encoding: Some(encoding.into()),
        };
        assert_eq!(change(json!("x\ny\\"), "utf8").line(), r"put a b 3 x\ny\\");
        assert_eq!(
            change(json!({"k": [1]}), "json").line(),
            r#"put a b 3 {"k":[1]}"#
        );
        assert_eq!(
            change(json!("AAEC"), "base64").line(),
            "put a b 3 <3 bytes, not text>"
        );
        // A JSON value keeps its tokens and key order, made compact.
        let sent: Change = serde_json::from_str(
            r#"{"key":"j","version":4,"revision":4,"value":{"n" : 123456789012345678901234567890,
                "b":1,"a":2},"encoding":"json"}"#,
        )
        .unwrap();
        assert_eq!(
            Change {
                event: "put".into(),
                ..sent
            }
            .line(),
            r#"put j 4 {"n":123456789012345678901234567890,"b":1,"a":2}"#
        );
        let mut expired: Change =
            serde_json::from_str(r#"{"key":"t","version":9,"revision":9,"reason":"expired"}"#)
                .unwrap();
        "delete".clone_into(&mut expired.event);
        assert_eq!(expired.line(), "delete t 9 expired");
    }

    #[test]
    fn a_json_null_value_is_kept() {
        let mut change: Change = serde_json::from_str(
            r#"{"key":"n","version":1,"revision":1,"value":null,"encoding":"json"}"#,
        )
        .unwrap();
        "put".clone_into(&mut change.event);
        assert_eq!(
            serde_json::to_string(&change).unwrap(),
            r#"{"event":"put","key":"n","version":1,"revision":1,"value":null,"encoding":"json"}"#
        );
    }
}
