//! What `kvs top` computes, apart from how it is fetched or drawn: one poll
//! of the server read into a [`Sample`] (the Prometheus text of `/metrics`
//! parsed by `prometheus-parse`, the JSON of `/v1/status` and
//! `/v1/projects`), and the [`Figures`] between two samples: rates from
//! counter deltas, and latency percentiles estimated from the deltas of
//! histogram buckets, the way Prometheus's `histogram_quantile` does.
//!
//! The server counts requests by route, not by project, so the busiest
//! projects are told by what moves between polls: a project's `revision`
//! (the last server revision that wrote in it) and its key count.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use prometheus_parse::{Sample as PromSample, Scrape, Value as PromValue};
use serde_json::Value;

/// A histogram's buckets: `(upper bound, cumulative count)`, by bound, the
/// last one `+Inf`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(Vec<(f64, f64)>);

impl Buckets {
    pub fn new(mut buckets: Vec<(f64, f64)>) -> Buckets {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets(buckets)
    }

    /// The observations made since `earlier`. A histogram that shrank was
    /// reset (the server restarted), so all it holds is new.
    fn since(&self, earlier: &Buckets) -> Buckets {
        if !self.same_bounds(earlier) {
            return self.clone();
        }
        let counts: Vec<_> = self
            .0
            .iter()
            .zip(&earlier.0)
            .map(|(now, then)| (now.0, now.1 - then.1))
            .collect();
        if counts.iter().any(|(_, count)| *count < 0.0) {
            return self.clone();
        }
        Buckets(counts)
    }

    /// Adds another histogram of the same bounds (every route's latency
    /// histogram has the server's one set of bounds); one of other bounds
    /// cannot be added bucket by bucket and is left out.
    fn add(&mut self, other: &Buckets) {
        if self.0.is_empty() {
            self.0 = other.0.clone();
        } else if self.same_bounds(other) {
            for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
                mine.1 += theirs.1;
            }
        }
    }

    fn same_bounds(&self, other: &Buckets) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| a.0 == b.0)
    }

    /// How many observations there are.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, count)| *count)
    }

    /// The `q` quantile (0 to 1), interpolated linearly inside its bucket
    /// as `histogram_quantile` does; in the `+Inf` bucket, the largest
    /// finite bound. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(bound, count) in &self.0 {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower);
                }
                let inside = count - below;
                if inside <= 0.0 {
                    return Some(bound);
                }
                return Some(lower + (bound - lower) * (rank - below) / inside);
            }
            (lower, below) = (bound, count);
        }
        Some(lower)
    }
}

/// One route's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Route {
    pub requests: f64,
    /// Answers with a 4xx status.
    pub client_errors: f64,
    /// Answers with a 5xx status.
    pub server_errors: f64,
    pub latency: Buckets,
}

/// One project's figures at one poll.
#[derive(Clone, Debug, PartialEq)]
pub struct Project {
    pub id: String,
    pub keys: u64,
    pub bytes: u64,
    /// `None` when `/v1/projects` was refused (a server with
    /// `projects_discoverable = false`).
    pub revision: Option<u64>,
}

/// The server's state at one poll.
#[derive(Clone, Debug)]
pub struct Sample {
    pub taken: Instant,
    /// The server's uptime when it rendered `/metrics`: the clock that
    /// counter deltas are divided by, free of the poll's network delays.
    pub uptime: f64,
    pub version: String,
    pub revision: u64,
    pub keys: u64,
    pub projects_count: u64,
    pub storage_bytes: u64,
    pub memory_bytes: u64,
    pub watchers: u64,
    pub connections: u64,
    pub commits: f64,
    /// The bytes the deferred checkpoints wrote to the database file.
    pub checkpoint_bytes: f64,
    pub fsync: Buckets,
    pub routes: BTreeMap<String, Route>,
    /// By id.
    pub projects: Vec<Project>,
}

impl Sample {
    /// Reads the answers of one poll: the text of `/metrics`, the JSON of
    /// `/v1/status` and, when it was given, of `/v1/projects`.
    pub fn read(
        metrics: &str,
        status: &Value,
        projects: Option<&Value>,
    ) -> std::io::Result<Sample> {
        let scrape = Scrape::parse(metrics.lines().map(|line| Ok(line.to_owned())))?;
        let number = |name: &str| status[name].as_f64().unwrap_or(0.0) as u64;
        let mut sample = Sample {
            taken: Instant::now(),
            uptime: status["uptime_seconds"].as_f64().unwrap_or(0.0),
            version: status["version"].as_str().unwrap_or("?").to_owned(),
            revision: number("revision"),
            keys: number("keys"),
            projects_count: number("projects"),
            storage_bytes: number("storage_bytes"),
            memory_bytes: number("memory_bytes"),
            watchers: 0,
            connections: 0,
            commits: 0.0,
            checkpoint_bytes: 0.0,
            fsync: Buckets::default(),
            routes: BTreeMap::new(),
            projects: Vec::new(),
        };
        let revisions: HashMap<&str, u64> = projects
            .and_then(|answer| answer["projects"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["id"].as_str()?, p["revision"].as_u64()?)))
            .collect();
        let mut projects: BTreeMap<String, Project> = BTreeMap::new();
        for prom in &scrape.samples {
            let value = scalar(prom);
            let label = |name: &str| prom.labels.get(name).unwrap_or("").to_owned();
            match prom.metric.as_str() {
                "kvs_uptime_seconds" => sample.uptime = value,
                "kvs_watchers" => sample.watchers = value as u64,
                "kvs_connections" => sample.connections = value as u64,
                "kvs_commits_total" => sample.commits = value,
                "kvs_checkpoint_written_bytes_total" => sample.checkpoint_bytes = value,
                "kvs_fsync_seconds" => sample.fsync = buckets(prom),
                "kvs_http_requests_total" => {
                    let route = sample.routes.entry(label("route")).or_default();
                    route.requests += value;
                    match prom.labels.get("status").and_then(|s| s.chars().next()) {
                        Some('4') => route.client_errors += value,
                        Some('5') => route.server_errors += value,
                        _ => {}
                    }
                }
                "kvs_http_request_duration_seconds" => {
                    sample.routes.entry(label("route")).or_default().latency = buckets(prom);
                }
                "kvs_project_keys" | "kvs_project_bytes" => {
                    let id = label("project");
                    let project = projects.entry(id.clone()).or_insert_with(|| Project {
                        revision: revisions.get(id.as_str()).copied(),
                        id,
                        keys: 0,
                        bytes: 0,
                    });
                    if prom.metric == "kvs_project_keys" {
                        project.keys = value as u64;
                    } else {
                        project.bytes = value as u64;
                    }
                }
                _ => {}
            }
        }
        sample.projects = projects.into_values().collect();
        Ok(sample)
    }
}

/// A counter's, gauge's or untyped sample's value; 0 for a histogram.
fn scalar(sample: &PromSample) -> f64 {
    match sample.value {
        PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => v,
        _ => 0.0,
    }
}

fn buckets(sample: &PromSample) -> Buckets {
    match &sample.value {
        PromValue::Histogram(counts) => {
            Buckets::new(counts.iter().map(|c| (c.less_than, c.count)).collect())
        }
        _ => Buckets::default(),
    }
}

/// One route's traffic between two polls.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRate {
    pub route: String,
    pub per_second: f64,
    pub p99: Option<f64>,
}

/// One project between two polls.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectActivity {
    pub project: Project,
    /// The net change of its key count per second (negative: keys went).
    pub keys_per_second: f64,
    /// Its revision moved since the previous poll: it was written.
    pub written: bool,
}

/// What happened between two polls.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    /// The seconds between the two polls, by the server's clock.
    pub seconds: f64,
    pub requests_per_second: f64,
    pub client_errors_per_second: f64,
    pub server_errors_per_second: f64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub commits_per_second: f64,
    /// What the checkpoints wrote to the database file, a second.
    pub checkpoint_bytes_per_second: f64,
    pub fsync_p99: Option<f64>,
    /// Routes that had requests, the busiest first.
    pub routes: Vec<RouteRate>,
    /// Every project, the busiest first: those written since the previous
    /// poll, then by latest write (`revision`), then by keys.
    pub projects: Vec<ProjectActivity>,
}

impl Figures {
    pub fn between(before: &Sample, now: &Sample) -> Figures {
        let mut seconds = now.uptime - before.uptime;
        if seconds <= 0.0 {
            // A restarted server's uptime starts again: take our own clock.
            seconds = now.taken.duration_since(before.taken).as_secs_f64();
        }
        let seconds = seconds.max(1e-3);
        let rate = |now: f64, then: f64| delta(now, then) / seconds;
        let empty = Route::default();
        let mut latency = Buckets::default();
        let (mut requests, mut client_errors, mut server_errors) = (0.0, 0.0, 0.0);
        let mut routes = Vec::new();
        for (name, route) in &now.routes {
            let then = before.routes.get(name).unwrap_or(&empty);
            let per_second = rate(route.requests, then.requests);
            requests += per_second;
            client_errors += rate(route.client_errors, then.client_errors);
            server_errors += rate(route.server_errors, then.server_errors);
            let observed = route.latency.since(&then.latency);
            latency.add(&observed);
            if per_second > 0.0 {
                routes.push(RouteRate {
                    route: name.clone(),
                    per_second,
                    p99: observed.quantile(0.99),
                });
            }
        }
        routes.sort_by(|a, b| b.per_second.total_cmp(&a.per_second));
        let previous: HashMap<&str, &Project> =
            before.projects.iter().map(|p| (p.id.as_str(), p)).collect();
        let mut projects: Vec<ProjectActivity> = now
            .projects
            .iter()
            .map(|project| {
                let then = previous.get(project.id.as_str());
                ProjectActivity {
                    keys_per_second: then.map_or(0.0, |then| {
                        (project.keys as f64 - then.keys as f64) / seconds
                    }),
                    written: then.is_some_and(|then| {
                        project.revision.is_some() && then.revision != project.revision
                    }),
                    project: project.clone(),
                }
            })
            .collect();
        projects.sort_by(|a, b| {
            (b.written, b.project.revision, b.project.keys).cmp(&(
                a.written,
                a.project.revision,
                a.project.keys,
            ))
        });
        let fsync = now.fsync.since(&before.fsync);
        Figures {
            seconds,
            requests_per_second: requests,
            client_errors_per_second: client_errors,
            server_errors_per_second: server_errors,
            p50: latency.quantile(0.5),
            p99: latency.quantile(0.99),
            commits_per_second: rate(now.commits, before.commits),
            checkpoint_bytes_per_second: rate(now.checkpoint_bytes, before.checkpoint_bytes),
            fsync_p99: fsync.quantile(0.99),
            routes,
            projects,
        }
    }
}

/// A counter's increase; a counter that went down was reset (the server
/// restarted), so all it holds is new.
fn delta(now: f64, then: f64) -> f64 {
    if now >= then { now - then } else { now }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A server's metrics text: requests by (route, method, status, count),
    /// latency by (route, [≤ 1 ms, ≤ 10 ms, all]), commits (each with
    /// 4 KiB of checkpoint writes), uptime and project a's (keys, bytes);
    /// project b has 50 keys.
    fn metrics(
        requests: &[(&str, &str, &str, u32)],
        latency: &[(&str, [u32; 3])],
        commits: u32,
        uptime: u32,
        a: (u32, u32),
    ) -> String {
        let mut text = String::from("# TYPE kvs_http_requests_total counter\n");
        for (route, method, status, count) in requests {
            text += &format!(
                "kvs_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}\n"
            );
        }
        text += "# TYPE kvs_http_request_duration_seconds histogram\n";
        for (route, counts) in latency {
            for (bound, count) in ["0.001", "0.01", "+Inf"].iter().zip(counts) {
                text += &format!(
                    "kvs_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}\n"
                );
            }
            text += &format!(
                "kvs_http_request_duration_seconds_count{{route=\"{route}\"}} {}\n",
                counts[2]
            );
        }
        text + &format!(
            "# TYPE kvs_commits_total counter\nkvs_commits_total {commits}\n\
             # TYPE kvs_checkpoint_written_bytes_total counter\n\
             kvs_checkpoint_written_bytes_total {}\n\
             # TYPE kvs_uptime_seconds gauge\nkvs_uptime_seconds {uptime}\n\
             # TYPE kvs_project_keys gauge\nkvs_project_keys{{project=\"a\"}} {}\n\
             kvs_project_keys{{project=\"b\"}} 50\n\
             # TYPE kvs_project_bytes gauge\nkvs_project_bytes{{project=\"a\"}} {}\n",
            commits * 4096,
            a.0,
            a.1
        )
    }

    fn before() -> String {
        metrics(
            &[
                ("kv", "GET", "200", 100),
                ("kv", "GET", "404", 10),
                ("kv", "PUT", "200", 50),
            ],
            &[("kv", [100, 150, 160])],
            40,
            10,
            (5, 500),
        )
    }

    /// Two seconds later: 200 more requests on `kv` (20 of them 404s, 2
    /// answered with 500), 10 on `status`; 100 of the `kv` ones under
    /// 1 ms, 90 between 1 and 10 ms, 10 above.
    fn after() -> String {
        metrics(
            &[
                ("kv", "GET", "200", 180),
                ("kv", "GET", "404", 30),
                ("kv", "PUT", "200", 148),
                ("kv", "PUT", "500", 2),
                ("status", "GET", "200", 10),
            ],
            &[("kv", [200, 340, 360]), ("status", [10, 10, 10])],
            60,
            12,
            (25, 900),
        )
    }

    fn sample(metrics: &str, revisions: (u64, u64)) -> Sample {
        let status = json!({"version": "0.1.0", "uptime_seconds": 1.0, "keys": 75, "revision": 9});
        let projects = json!({"projects": [
            {"id": "a", "revision": revisions.0},
            {"id": "b", "revision": revisions.1},
        ]});
        Sample::read(metrics, &status, Some(&projects)).unwrap()
    }

    #[test]
    fn rates_are_counter_increases_over_the_servers_clock() {
        let figures = Figures::between(&sample(&before(), (3, 8)), &sample(&after(), (9, 8)));
        assert_eq!(figures.seconds, 2.0);
        assert_eq!(figures.requests_per_second, 105.0);
        assert_eq!(figures.client_errors_per_second, 10.0);
        assert_eq!(figures.server_errors_per_second, 1.0);
        assert_eq!(figures.commits_per_second, 10.0);
        assert_eq!(figures.checkpoint_bytes_per_second, 40960.0);
        let routes: Vec<_> = figures
            .routes
            .iter()
            .map(|r| (r.route.as_str(), r.per_second))
            .collect();
        assert_eq!(routes, [("kv", 100.0), ("status", 5.0)]);
    }

    #[test]
    fn percentiles_come_from_the_bucket_increases_of_every_route() {
        let figures = Figures::between(&sample(&before(), (3, 8)), &sample(&after(), (9, 8)));
        // 210 new observations: 110 under 1 ms, 90 in (1 ms, 10 ms], 10 above.
        // The median (rank 105) lies in the first bucket: 105/110 of 1 ms.
        let p50 = figures.p50.unwrap();
        assert!((p50 - 0.001 * 105.0 / 110.0).abs() < 1e-9, "{p50}");
        // Rank 207.9 is in +Inf: the largest finite bound is all we know.
        assert_eq!(figures.p99, Some(0.01));
        assert_eq!(figures.fsync_p99, None);
    }

    #[test]
    fn a_quantile_is_interpolated_inside_its_bucket() {
        // Given out of order; the median of 100 observations in (1, 2] is
        // halfway through that bucket.
        let buckets = Buckets::new(vec![(f64::INFINITY, 100.0), (1.0, 0.0), (2.0, 100.0)]);
        assert_eq!(buckets.quantile(0.5), Some(1.5));
        assert_eq!(Buckets::default().quantile(0.5), None);
    }

    #[test]
    fn a_restarted_server_counts_from_zero() {
        // The later sample has smaller counters and a shorter uptime.
        let restarted = sample(&before(), (3, 8));
        let mut earlier = sample(&after(), (3, 8));
        earlier.uptime = 1000.0;
        let figures = Figures::between(&earlier, &restarted);
        assert!(figures.requests_per_second > 0.0);
        assert!(figures.p50.is_some());
    }

    #[test]
    fn the_projects_written_since_the_last_poll_come_first() {
        let figures = Figures::between(&sample(&before(), (3, 8)), &sample(&after(), (9, 8)));
        let a = &figures.projects[0];
        assert_eq!(
            (a.project.id.as_str(), a.written, a.keys_per_second),
            ("a", true, 10.0)
        );
        assert_eq!(
            (a.project.keys, a.project.bytes, a.project.revision),
            (25, 900, Some(9))
        );
        let b = &figures.projects[1];
        assert_eq!((b.project.id.as_str(), b.written), ("b", false));
    }
}
