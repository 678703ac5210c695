//! `kvs top`: a live console view of a server, drawn with ratatui until the
//! user presses `q`, `Esc` or Ctrl-C. A thread polls `/metrics`,
//! `/v1/status` and `/v1/projects` with the admin token every interval and
//! hands each result over a channel, so that a slow or vanished server never
//! keeps a key press from being seen; the main thread keeps the [`Screen`]
//! (the last sample and the [`figures::Figures`] between it and the one
//! before) and draws it ([`view`]). A failed poll is shown and the polls go
//! on: `kvs top` never exits because the server went away.
//!
//! The terminal is restored on every way out: by a guard on return or error,
//! and by ratatui's panic hook on a panic.

mod figures;
mod view;

use std::collections::HashMap;
use std::io::{self, IsTerminal};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ureq::http::Method;

use super::api::{Api, ClientError};
use super::{Common, Outcome};
use figures::{Figures, Sample};

/// How often key presses and new samples are looked for.
const TICK: Duration = Duration::from_millis(100);

/// A poll's request that has no answer for this long (unless `--timeout`
/// says otherwise) is given up, and the view says so; the next poll tries
/// again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest `/metrics` text read: a server with thousands of projects
/// renders a few MiB.
const MAX_METRICS: u64 = 64 << 20;

#[derive(clap::Args, Debug)]
pub struct Top {
    /// How often to poll the server: whole seconds, or a number with `s`,
    /// `m` or `h`.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    #[command(flatten)]
    common: Common,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    crate::domain::parse_duration(text).map(Duration::from_secs)
}

pub fn top(args: Top) -> Outcome {
    if !io::stdout().is_terminal() {
        return Err(anyhow!("kvs top draws on a terminal, and its output is not one").into());
    }
    let api = args.common.api_given_up_after(Some(REQUEST_TIMEOUT));
    let polls = start_polling(api, args.interval);
    let mut screen = Screen::new(&args.common.url, args.interval);
    // Declared before the terminal is set up, so that it also restores a
    // terminal whose set-up failed half-way.
    let _restore = RestoreTerminal;
    let mut terminal = ratatui::try_init()?;
    loop {
        while let Ok(result) = polls.try_recv() {
            screen.observe(result);
        }
        terminal.draw(|frame| view::draw(frame, &screen))?;
        if event::poll(TICK)? && quits(&event::read()?) {
            return Ok(());
        }
    }
}

/// Polls the server every `interval` on a thread of its own, until the
/// receiver is dropped.
fn start_polling(api: Api, interval: Duration) -> Receiver<Result<Sample, ClientError>> {
    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        loop {
            let started = Instant::now();
            if send.send(poll(&api)).is_err() {
                return;
            }
            thread::sleep(interval.saturating_sub(started.elapsed()));
        }
    });
    receive
}

/// One poll: the metrics, the status and, where the server lists them, the
/// projects with their revisions.
fn poll(api: &Api) -> Result<Sample, ClientError> {
    let mut response = api.send(Method::GET, "/metrics", None)?;
    let metrics = response
        .body_mut()
        .with_config()
        .limit(MAX_METRICS)
        .read_to_string()
        .map_err(|error| anyhow!("cannot read /metrics: {error}"))?;
    let status = api.json(Method::GET, "/v1/status", None)?;
    let projects = match api.json(Method::GET, "/v1/projects", None) {
        Ok(projects) => Some(projects),
        // `projects_discoverable = false`: the table does without revisions.
        Err(ClientError::Refused { .. }) => None,
        Err(error) => return Err(error),
    };
    Sample::read(&metrics, &status, projects.as_deref())
        .map_err(|error| anyhow!("cannot read /metrics: {error}").into())
}

/// `q`, `Esc` or Ctrl-C (which a terminal in raw mode hands over as a key).
fn quits(event: &Event) -> bool {
    let Event::Key(key) = event else {
        return false;
    };
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// Leaves raw mode and the alternate screen when dropped.
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What the view shows: the last sample, the figures since the one before,
/// and the last poll's failure, if it failed.
pub struct Screen {
    url: String,
    interval: Duration,
    latest: Option<Sample>,
    figures: Option<Figures>,
    problem: Option<String>,
    /// When each project's revision was last seen to move.
    written: HashMap<String, Instant>,
}

impl Screen {
    fn new(url: &str, interval: Duration) -> Screen {
        Screen {
            url: url.to_owned(),
            interval,
            latest: None,
            figures: None,
            problem: None,
            written: HashMap::new(),
        }
    }

    fn observe(&mut self, result: Result<Sample, ClientError>) {
        let sample = match result {
            Ok(sample) => sample,
            Err(error) => {
                self.problem = Some(error.to_string());
                return;
            }
        };
        if let Some(before) = &self.latest {
            let figures = Figures::between(before, &sample);
            for activity in figures.projects.iter().filter(|a| a.written) {
                self.written
                    .insert(activity.project.id.clone(), sample.taken);
            }
            self.figures = Some(figures);
        }
        self.latest = Some(sample);
        self.problem = None;
    }
}
