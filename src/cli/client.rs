//! Client commands: every `kvs` command but `serve` talks to a running server
//! through its HTTP API, as curl would, but with keys percent-encoded, listing
//! cursors followed, and every failure turned into one line on stderr and an
//! exit code a script can test. [`api`] owns HTTP and errors; [`keys`],
//! [`projects`] and [`tokens`] own one resource each, [`txn`] transactions,
//! [`transfer`] export and import,
//! [`watch`] the stream of changes, [`top`] the live console view;
//! [`output`] owns how answers look on stdout.

mod api;
mod backup;
mod compact;
mod import;
mod keys;
mod output;
mod projects;
mod tokens;
mod top;
mod transfer;
mod trust;
mod txn;
mod verify;
mod watch;

use std::convert::Infallible;
use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use api::{Api, ClientError, Idle};
use trust::CaCerts;

/// The exit codes of every client command, then those of one command alone
/// (each literal a line).
macro_rules! exit_codes {
    ($($more:literal),*) => {
        concat!(
            "Exit codes:
  0  success
  1  the server refused the request (the message starts with its error code),
     or another failure, such as a file that cannot be read or the server's
     certificate refused
  2  usage error: the arguments are wrong
  3  not found: no such key, project or token (HTTP 404)
  4  cannot connect to the server, or no answer from it for --timeout"
            $(, "\n", $more)*
        )
    };
}

/// Shown at the end of every client command's `--help`: the top-level help
/// belongs to `cli/mod.rs`, and a script author reads the command's help.
const EXIT_CODES: &str = exit_codes!();

/// `kvs verify`'s: damage found is told apart from a check that could not
/// be made (1), so that a script restores a backup only for damage.
const VERIFY_EXIT_CODES: &str =
    exit_codes!("  5  damage found: the check ran, and found what it printed");

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print a key's value: its bytes exactly as stored, with no newline added.
    #[command(after_long_help = EXIT_CODES)]
    Get(keys::Get),
    /// Store a value under a key, given as text, @FILE or on stdin.
    ///
    /// A value given as text is stored as `text/plain; charset=utf-8`, since it
    /// was typed as text; a file or stdin is stored as bytes
    /// (`application/octet-stream`). `--content-type` overrides both.
    #[command(after_long_help = EXIT_CODES)]
    Put(keys::Put),
    /// Delete a key, or every key under a prefix.
    #[command(after_long_help = EXIT_CODES)]
    Delete(keys::Delete),
    /// List keys in key order, one per line; every page is fetched.
    #[command(after_long_help = EXIT_CODES)]
    List(keys::List),
    /// Add to an integer key (a missing key counts from 0) and print the new
    /// value.
    #[command(after_long_help = EXIT_CODES)]
    Incr(keys::Incr),
    /// Print the value of whichever of the keys was written last, like
    /// `kvs get`; the key that won goes to stderr.
    #[command(after_long_help = EXIT_CODES)]
    Latest(keys::Latest),
    /// Apply a transaction, read as JSON from FILE or stdin: every check holds
    /// and every op applies, at one revision, or nothing does.
    ///
    /// `{"checks": [{"key": "a", "version": 12}, {"key": "b", "exists": false}],
    /// "ops": [{"op": "put", "key": "a", "value": "text"}, {"op": "delete",
    /// "key": "b"}, {"op": "get", "key": "c"}, {"op": "incr", "key": "n", "by": 1}]}`.
    /// Prints one line per op; a refusal names the failed checks or op.
    #[command(after_long_help = EXIT_CODES)]
    Txn(txn::Txn),
    /// Print every change to the project's keys as it happens, one line
    /// each, until interrupted.
    ///
    /// A line is `put KEY REVISION`, `delete KEY REVISION`, or `delete KEY
    /// REVISION expired` for a key whose TTL ran out; the changes of one
    /// transaction come together, in key order. With `--values`, a put's
    /// line ends with its value: text as it is, except that line breaks,
    /// other control characters and backslashes are escaped (`\n`, `\\`); a
    /// JSON value (stored as JSON) compact; other bytes as `<N bytes, not
    /// text>`. With `--json`, each line is a JSON object `{"event": "put" or
    /// "delete", "key", "version", "revision"}`, plus `"reason": "expired"`,
    /// and with `--values` the `"value"` and its `"encoding"` (`utf8`,
    /// `json` or `base64`) as the server sent them.
    ///
    /// A broken connection or a restarted server does not end the watch: it
    /// says so once on stderr, reconnects every 2 s for as long as it takes,
    /// and resumes after the last revision it printed, so that no change is
    /// printed twice or missed; only a server that cannot be reached at the
    /// start is an error (exit 4). It ends (exit 1) when the server no
    /// longer keeps the changes it would need (`history_compacted`): read
    /// the current state, then watch again.
    #[command(after_long_help = EXIT_CODES)]
    Watch(watch::Watch),
    /// Write every key of the project (or under --prefix) as JSON Lines, in
    /// key order, for `kvs import`.
    ///
    /// One JSON object per line: `{"key", "value" (the bytes as text, when
    /// they are UTF-8, JSON values included) or "value_base64",
    /// "content_type", "created_at", "updated_at", "expires_at", "version",
    /// "size"}`. The export is not a snapshot: each page of up to 1000 keys
    /// is read at its own revision, and a key written meanwhile may appear
    /// in its newer state.
    #[command(after_long_help = EXIT_CODES)]
    Export(transfer::Export),
    /// Write keys from JSON Lines, as `kvs export` wrote them, with their
    /// values, content types and times exactly (needs a manage token).
    ///
    /// Keys are sent in chunks of at most 1000 keys and about 3 MiB: each
    /// chunk is imported all or nothing, but the whole import is atomic only
    /// when it fits in one chunk. On a refusal or a line that is not a JSON
    /// object, the import stops, names the line, and the chunks sent before
    /// stay imported. Existing keys of the same names are overwritten; other
    /// keys are left alone.
    ///
    /// `kvs import simple-pykv --config PATH` migrates a Simple-PyKV data set
    /// instead (admin): its projects, keys and API keys.
    #[command(after_long_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
    Import(transfer::Import),
    /// Write a backup of the whole server to FILE (admin): every project,
    /// token digest and key, at one revision, taken while writes go on.
    ///
    /// The backup is JSON Lines ending with a trailer that holds counts and
    /// a SHA-256 checksum; it is checked as it downloads, written to
    /// FILE.tmp (readable by its owner only, 0600), fsync'd and renamed, so
    /// FILE is always a whole backup. `-` writes to stdout. Restore it with `kvs restore`.
    #[command(after_long_help = EXIT_CODES)]
    Backup(backup::Backup),
    /// Create, list, show and delete projects (admin).
    #[command(after_long_help = EXIT_CODES)]
    Project(projects::Args),
    /// Create, list and revoke tokens.
    #[command(after_long_help = EXIT_CODES)]
    Token(tokens::Args),
    /// Show the server's live figures in the terminal until `q`, `Esc` or
    /// Ctrl-C (admin): requests/s by route, errors, latency, commits, keys,
    /// storage, memory and the busiest projects.
    ///
    /// Rates are the increase of the server's counters between two polls;
    /// latency percentiles are estimated from its histogram buckets. The
    /// server counts requests by route, not by project, so the busiest
    /// projects are those whose revision moved lately (they were written),
    /// then those with the most keys; `keys/s` is the net change of a
    /// project's key count. A server that cannot be reached is shown as
    /// such, and polled again until it answers.
    #[command(after_long_help = EXIT_CODES)]
    Top(top::Top),
    /// Check every stored record and value: checksums, large values present
    /// and matching, no orphans. Prints one line per damaged item and a
    /// summary; exits 0 when nothing is damaged, 5 when something is, and 1
    /// (or 4) when it could not check.
    ///
    /// With --data-dir it reads a stopped store (a running server holds the
    /// file's lock: then it says so); without, it asks the server at --url
    /// (admin), which checks a read snapshot while it goes on serving.
    #[command(after_long_help = VERIFY_EXIT_CODES)]
    Verify(verify::Verify),
    /// Give the store's free room back, as etcd's defrag: every table of
    /// the disk database is copied in key order (full B-tree pages, no free
    /// ones) into a new file beside kvs.redb, which is synced, checked whole
    /// (row counts and the walk of `kvs verify`) and put in its place.
    /// Nothing a client reads changes: keys, versions, revisions and the
    /// watch history are kept.
    ///
    /// Without --data-dir it asks the server at --url (admin): its writes
    /// wait while the copy is made (about 2.5 s per 1,000,000 small keys
    /// here), its reads go on. With --data-dir it compacts a stopped store
    /// itself (a running server holds the file's lock: then it says so),
    /// keeping the writes its write-ahead log holds. Either way it needs
    /// room for the compacted copy; a failure leaves the store whole (as it
    /// was, unless the copy was already in place: the message says). A
    /// running server compacts its memory projects too (into a new memory
    /// database); a stopped one has none.
    #[command(after_long_help = EXIT_CODES)]
    Compact(compact::Compact),
}

/// Options that every client command takes after its name (`kvs get --url …`;
/// for `project` and `token`, before or after the subcommand).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Server options")]
pub struct Common {
    /// The server's base URL (a path prefix may follow the port; a query
    /// or fragment may not).
    #[arg(
        long,
        env = "KVS_URL",
        default_value = "http://127.0.0.1:23849",
        value_parser = parse_url,
        global = true
    )]
    url: String,
    /// The token, sent as `Authorization: Bearer`. A server's first admin
    /// token is in `<data_dir>/admin-token`. Better in KVS_TOKEN than here:
    /// a command line is readable by every local user (`ps`), for as long as
    /// the command runs.
    #[arg(long, env = "KVS_TOKEN", hide_env_values = true, global = true)]
    token: Option<Secret>,
    /// Trust an `https://` server whose certificate is one in this PEM file
    /// (the server's self-signed certificate, with basicConstraints CA:TRUE
    /// as `openssl req -x509` makes it, or without) or chains to one (a
    /// private CA), instead of the public CAs; its name and dates are
    /// checked either way. A certificate refused ends the command (exit 1),
    /// saying why.
    #[arg(long, value_name = "FILE", env = "KVS_CA_CERT", value_parser = CaCerts::read, global = true)]
    ca_cert: Option<CaCerts>,
    /// Give up on a server that sends nothing for this long: exit 4 when it
    /// does not answer, 1 when its answer stops coming (cut off). Whole
    /// seconds, or a number with `s`, `m` or `h`; `0` for no limit. A connection also gets at most
    /// this (and never more than 10 s) to open. [default: 30s; no limit for
    /// `kvs compact` and `kvs verify`, which wait for the server's work; 5s
    /// for each poll of `kvs top`; `kvs watch` keeps its own limit: a
    /// stream silent for 35 s, keep-alives included, is reconnected]
    #[arg(long, value_name = "DURATION", env = "KVS_TIMEOUT", value_parser = parse_timeout, global = true)]
    timeout: Option<Duration>,
    /// Print the server's JSON answer instead of text, for scripts (nothing
    /// for answers without a body, such as a delete): indented, but with its
    /// numbers, strings and key order exactly as the server sent them.
    #[arg(long, global = true)]
    json: bool,
}

/// How long a command waits for a server that sends nothing, unless
/// `--timeout` says otherwise: curl users' habit for scripts, and far more
/// than any answer of a server at work takes to begin.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Common {
    /// A client for commands that wait for an answer the server gives at
    /// once: given up after `--timeout` of silence.
    fn api(&self) -> Api {
        self.api_given_up_after(Some(DEFAULT_TIMEOUT))
    }

    /// A client for a request whose answer comes once the server has done
    /// work that may take minutes (`POST /v1/compact`, `/v1/verify`): no
    /// limit unless `--timeout` sets one.
    fn api_for_long_work(&self) -> Api {
        self.api_given_up_after(None)
    }

    /// A client whose connections are given up after `--timeout` of
    /// silence, or `default` without it.
    fn api_given_up_after(&self, default: Option<Duration>) -> Api {
        let idle = match self.timeout {
            Some(limit) if limit.is_zero() => None,
            Some(limit) => Some(limit),
            None => default,
        };
        Api::new(
            &self.url,
            self.token.clone(),
            Idle::settable(idle),
            self.ca_cert.as_ref(),
        )
    }

    /// A client whose connections are given up after `idle` of silence,
    /// whatever `--timeout` says (`kvs watch`: a stream is quiet between
    /// changes).
    fn api_with_idle_timeout(&self, idle: Duration) -> Api {
        Api::new(
            &self.url,
            self.token.clone(),
            Idle::fixed(idle),
            self.ca_cert.as_ref(),
        )
    }
}

/// `--timeout`: a duration as `kvs top --interval` takes it, or `0` for
/// no limit (then [`Duration::ZERO`]).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.trim() {
        "0" | "0s" => Ok(Duration::ZERO),
        text => crate::domain::parse_duration(text).map(Duration::from_secs),
    }
}

/// The project that key and token commands work in.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Server options")]
pub struct ProjectArg {
    /// The project to work in (a server creates `default` at its first start).
    #[arg(
        long,
        short = 'p',
        env = "KVS_PROJECT",
        default_value = "default",
        global = true
    )]
    project: String,
}

/// A token secret from `--token` or `KVS_TOKEN`. Its `Debug` hides it, so that
/// printing the parsed command line can never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    /// Trimmed, because `--token "$(cat admin-token)"` may carry a newline.
    fn from_str(text: &str) -> Result<Secret, Infallible> {
        Ok(Secret(text.trim().to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// An `http://` or `https://` URL with a host, without a trailing `/` (paths
/// are appended to it, so a server behind a path prefix works too). A query
/// or a fragment is refused: the paths appended would land in it, and `get`
/// printed whatever page the base URL answered as the value.
fn parse_url(text: &str) -> Result<String, String> {
    if text.contains(['?', '#']) {
        return Err("a server URL takes no query (`?…`) or fragment (`#…`): \
             expected http://HOST:PORT, with a path prefix if the server is behind one"
            .to_owned());
    }
    let url = text.trim().trim_end_matches('/');
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|error| format!("not a URL ({error})"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(url.to_owned()),
        _ => Err("expected http://HOST:PORT".to_owned()),
    }
}

pub fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Get(args) => keys::get(args),
        Command::Put(args) => keys::put(args),
        Command::Delete(args) => keys::delete(args),
        Command::List(args) => keys::list(args),
        Command::Incr(args) => keys::incr(args),
        Command::Latest(args) => keys::latest(args),
        Command::Txn(args) => txn::txn(args),
        Command::Watch(args) => watch::watch(args),
        Command::Export(args) => transfer::export(args),
        Command::Import(args) => transfer::import(args),
        Command::Backup(args) => backup::backup(args),
        Command::Project(args) => projects::run(args),
        Command::Token(args) => tokens::run(args),
        Command::Top(args) => top::top(args),
        Command::Verify(args) => verify::verify(args),
        Command::Compact(args) => compact::compact(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `kvs list | head`: the reader has all it wanted; not a failure.
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kvs: {error:#}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// The result of a client command.
type Outcome = Result<(), ClientError>;
