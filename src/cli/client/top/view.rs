//! How `kvs top` looks: a header, the last poll's failure if any, the
//! request figures beside the server's, then the busiest projects and the
//! routes (side by side on a wide terminal, one above the other on 80
//! columns). It only draws a [`Screen`]; nothing here fetches or computes
//! a rate. A figure that needs two polls shows `-` until there are two.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Padding, Paragraph, Row, Table};

use super::Screen;
use super::figures::Figures;

pub fn draw(frame: &mut Frame<'_>, screen: &Screen) {
    let [header, problem, boxes, tables, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(7),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(screen)).bold(), header);
    let note = match (&screen.problem, &screen.latest) {
        (Some(problem), _) => Line::from(format!(
            "retrying every {} s: {problem}",
            screen.interval.as_secs()
        ))
        .style(Style::new().fg(Color::Red)),
        (None, None) => Line::from("waiting for the first answer…"),
        (None, Some(_)) => Line::default(),
    };
    frame.render_widget(Paragraph::new(note), problem);
    let [requests, server] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(boxes);
    frame.render_widget(requests_box(screen), requests);
    frame.render_widget(server_box(screen), server);
    // Side by side where there is room; on a narrower terminal the project
    // table needs the whole width for its id column.
    let [projects, routes] = if tables.width >= 100 {
        Layout::horizontal([Constraint::Percentage(65), Constraint::Percentage(35)]).areas(tables)
    } else {
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(tables)
    };
    draw_routes(frame, screen, routes);
    draw_projects(frame, screen, projects);
    frame.render_widget(
        Paragraph::new("q, Esc or Ctrl-C quits · rates count kvs top's own 3 requests a poll")
            .dim(),
        footer,
    );
}

fn header_line(screen: &Screen) -> String {
    let mut line = format!("kvs top · {}", screen.url);
    if let Some(sample) = &screen.latest {
        line.push_str(&format!(
            " · kvs {} · up {} · every {} s",
            sample.version,
            uptime(sample.uptime),
            screen.interval.as_secs()
        ));
        let age = sample.taken.elapsed();
        if age > 2 * screen.interval {
            line.push_str(&format!(" · figures from {} s ago", age.as_secs()));
        }
    }
    line
}

fn requests_box(screen: &Screen) -> Paragraph<'static> {
    let figures = screen.figures.as_ref();
    let rate = |pick: fn(&Figures) -> f64| figures.map_or("-".to_owned(), |f| per_second(pick(f)));
    let latency =
        |pick: fn(&Figures) -> Option<f64>| figures.map_or("-".to_owned(), |f| duration(pick(f)));
    boxed(
        " Requests ",
        vec![
            format!("requests/s {}", rate(|f| f.requests_per_second)),
            pair(
                format!("4xx/s {}", rate(|f| f.client_errors_per_second)),
                format!("5xx/s {}", rate(|f| f.server_errors_per_second)),
            ),
            pair(
                format!("p50 {}", latency(|f| f.p50)),
                format!("p99 {}", latency(|f| f.p99)),
            ),
            pair(
                format!("commits/s {}", rate(|f| f.commits_per_second)),
                format!("fsync p99 {}", latency(|f| f.fsync_p99)),
            ),
            format!(
                "checkpoints write {}/s",
                figures.map_or("-".to_owned(), |f| bytes(
                    f.checkpoint_bytes_per_second as u64
                ))
            ),
        ],
    )
}

fn server_box(screen: &Screen) -> Paragraph<'static> {
    let lines = match &screen.latest {
        Some(s) => vec![
            pair(
                format!("keys {}", s.keys),
                format!("projects {}", s.projects_count),
            ),
            pair(
                format!("storage {}", bytes(s.storage_bytes)),
                format!("memory {}", bytes(s.memory_bytes)),
            ),
            pair(
                format!("connections {}", s.connections),
                format!("watchers {}", s.watchers),
            ),
            format!("revision {}", s.revision),
        ],
        None => Vec::new(),
    };
    boxed(" Server ", lines)
}

/// Two figures on a line, the second in a column of its own: 19 + 17
/// characters fit the box of an 80-column terminal.
fn pair(first: String, second: String) -> String {
    format!("{first:<19}{second}")
}

fn boxed(title: &'static str, lines: Vec<String>) -> Paragraph<'static> {
    Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).block(
        Block::bordered()
            .title(title)
            .padding(Padding::horizontal(1)),
    )
}

fn draw_routes(frame: &mut Frame<'_>, screen: &Screen, area: Rect) {
    let rows = screen.figures.iter().flat_map(|f| &f.routes).map(|route| {
        Row::new([
            route.route.clone(),
            per_second(route.per_second),
            duration(route.p99),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(9),
            Constraint::Length(9),
        ],
    )
    .header(Row::new(["route", "req/s", "p99"]).bold())
    .block(
        Block::bordered()
            .title(" Routes ")
            .padding(Padding::horizontal(1)),
    );
    frame.render_widget(table, area);
}

fn draw_projects(frame: &mut Frame<'_>, screen: &Screen, area: Rect) {
    let now = Instant::now();
    let rows = screen
        .figures
        .iter()
        .flat_map(|f| &f.projects)
        .map(|activity| {
            let project = &activity.project;
            let written = if activity.written {
                "now".to_owned()
            } else {
                screen
                    .written
                    .get(&project.id)
                    .map_or("-".to_owned(), |at| {
                        format!("{} s ago", now.duration_since(*at).as_secs())
                    })
            };
            Row::new([
                project.id.clone(),
                project.keys.to_string(),
                format!("{:+.1}", activity.keys_per_second),
                bytes(project.bytes),
                project.revision.map_or("-".to_owned(), |r| r.to_string()),
                written,
            ])
        });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(["project", "keys", "keys/s", "bytes", "revision", "written"]).bold())
    .block(
        Block::bordered()
            .title(" Busiest projects (written lately, then most keys) ")
            .padding(Padding::horizontal(1)),
    );
    frame.render_widget(table, area);
}

fn per_second(rate: f64) -> String {
    format!("{rate:.1}")
}

/// Seconds as a person reads them: µs, ms or s.
fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 0.001 => format!("{:.0} µs", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.2} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
    }
}

/// Bytes in binary units.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn uptime(seconds: f64) -> String {
    let total = seconds as u64;
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h {minutes:02}m")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m {secs:02}s")
    } else {
        format!("{minutes}m {secs:02}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_a_person_reads_them() {
        assert_eq!(duration(Some(0.000_042)), "42 µs");
        assert_eq!(duration(Some(0.0021)), "2.10 ms");
        assert_eq!(duration(Some(2.5)), "2.50 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(uptime(3725.0), "1h 02m 05s");
        assert_eq!(uptime(59.0), "0m 59s");
    }
}
