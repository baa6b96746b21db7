//! Prometheus metrics. Events (requests, retries, reloads, connections) go through
//! `metrics` handles into `metrics-exporter-prometheus`; each handle is registered
//! once, when a snapshot is built, so the request path only bumps atomics. The
//! state of servers (up, in-flight, the balancer's estimate, check and ejection
//! counts) is read from the live snapshot at scrape time instead: it costs the
//! request path nothing and a server removed by a reload stops being reported.
//!
//! Each proxy owns its recorder (none is installed globally), so several proxies in
//! one process — the tests — keep separate counts. Without an admin listener nobody
//! can scrape, and every handle is a no-op.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::state::Snapshot;

/// Upper bounds of the latency histograms, in seconds: from a loopback hop (1 ms)
/// to nginx's default timeouts (60 s), roughly ×2.5 apart, the spacing Prometheus'
/// client libraries use; 14 buckets keep a series per label set small.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// How often histogram samples are folded into their buckets. The exporter queues
/// samples until then, so this bounds that queue when nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The label value for "no such thing": a request that matched no route, or one
/// that never reached a server.
pub const NONE: &str = "none";

const REQUESTS: &str = "switchyard_requests_total";
const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
const CONNECT_DURATION: &str = "switchyard_upstream_connect_duration_seconds";
const HEADER_DURATION: &str = "switchyard_upstream_header_duration_seconds";
const RETRIES: &str = "switchyard_retries_total";
const CONNECTIONS: &str = "switchyard_client_connections";
const BYTES_RECEIVED: &str = "switchyard_bytes_received_total";
const BYTES_SENT: &str = "switchyard_bytes_sent_total";

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Descriptions for `# HELP`.
const HELP: &[(&str, &str)] = &[
    (
        REQUESTS,
        "Client requests answered, by route, upstream, server and status class.",
    ),
    (
        REQUEST_DURATION,
        "Time from request head to the end of the response body.",
    ),
    (
        CONNECT_DURATION,
        "Time to open a new connection to a server.",
    ),
    (
        HEADER_DURATION,
        "Time from sending a request to a server to its response head.",
    ),
    (
        RETRIES,
        "Requests sent again to another server after a failure.",
    ),
    (CONNECTIONS, "Open client connections, by listener."),
    (BYTES_RECEIVED, "Request body bytes received from clients."),
    (BYTES_SENT, "Response body bytes sent to clients."),
];

/// One proxy's metrics: the recorder, and handles for process-wide events.
pub struct Metrics {
    exporter: Option<(PrometheusRecorder, PrometheusHandle)>,
    /// Configurations applied since start (1 for the first).
    generation: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.exporter.is_some())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(enabled: bool) -> Arc<Metrics> {
        let exporter = enabled.then(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    DURATION_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            for (name, help) in HELP {
                let key = KeyName::from_const_str(name);
                let help = SharedString::const_str(help);
                if name.ends_with("_total") {
                    recorder.describe_counter(key, None, help);
                } else if name.ends_with("_seconds") {
                    recorder.describe_histogram(key, Some(metrics::Unit::Seconds), help);
                } else {
                    recorder.describe_gauge(key, None, help);
                }
            }
            let handle = recorder.handle();
            (recorder, handle)
        });
        Arc::new(Metrics {
            exporter,
            generation: AtomicU64::new(1),
        })
    }

    pub fn enabled(&self) -> bool {
        self.exporter.is_some()
    }

    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect();
        Key::from_parts(name, labels)
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        match &self.exporter {
            Some((r, _)) => r.register_counter(&Self::key(name, labels), &META),
            None => Counter::noop(),
        }
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        match &self.exporter {
            Some((r, _)) => r.register_histogram(&Self::key(name, labels), &META),
            None => Histogram::noop(),
        }
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        match &self.exporter {
            Some((r, _)) => r.register_gauge(&Self::key(name, labels), &META),
            None => Gauge::noop(),
        }
    }

    /// Handles for one route of a new snapshot, over the servers of its upstream.
    pub fn route(&self, route: &str, upstream: &str, servers: &[String]) -> RouteMetrics {
        let labels = [("route", route), ("upstream", upstream)];
        let by_class = |server: &str| -> [Counter; 5] {
            std::array::from_fn(|c| {
                self.counter(
                    REQUESTS,
                    &[
                        ("route", route),
                        ("upstream", upstream),
                        ("server", server),
                        ("code_class", CLASSES[c]),
                    ],
                )
            })
        };
        let mut requests: Vec<[Counter; 5]> = servers.iter().map(|s| by_class(s)).collect();
        requests.push(by_class(NONE));
        RouteMetrics {
            name: Arc::from(route),
            upstream: Arc::from(upstream),
            duration: self.histogram(REQUEST_DURATION, &labels),
            bytes_in: self.counter(BYTES_RECEIVED, &labels),
            bytes_out: self.counter(BYTES_SENT, &labels),
            requests: requests.into(),
        }
    }

    /// Handles for requests that matched no route.
    pub fn unrouted(&self) -> RouteMetrics {
        self.route(NONE, NONE, &[])
    }

    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        let labels = [("upstream", name)];
        UpstreamMetrics {
            connect: self.histogram(CONNECT_DURATION, &labels),
            header: self.histogram(HEADER_DURATION, &labels),
            retries: self.counter(RETRIES, &labels),
        }
    }

    pub fn connections(&self, listener: &str) -> Gauge {
        self.gauge(CONNECTIONS, &[("listener", listener)])
    }

    /// A new configuration was applied.
    pub fn applied(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Folds queued histogram samples into their buckets.
    pub fn upkeep(&self) {
        if let Some((_, h)) = &self.exporter {
            h.run_upkeep();
        }
    }

    /// The Prometheus text exposition: the exporter's series, then the servers'
    /// state read from `snapshot` and the reload counts `(succeeded, failed)` the
    /// control keeps anyway.
    pub fn render(&self, snapshot: &Snapshot, reloads: (u64, u64)) -> String {
        let Some((_, handle)) = &self.exporter else {
            return String::new();
        };
        let mut out = handle.render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        render_state(&mut out, snapshot, self.generation(), reloads);
        out
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index of a status's class in `CLASSES`.
fn class(status: StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// One route's request metrics.
#[derive(Debug)]
pub struct RouteMetrics {
    pub name: Arc<str>,
    pub upstream: Arc<str>,
    duration: Histogram,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// `requests_total` by server index (the last entry: no server) and class.
    requests: Box<[[Counter; 5]]>,
}

impl RouteMetrics {
    /// Counts one answered request.
    pub fn record(&self, server: Option<usize>, status: StatusCode, elapsed: Duration) {
        let last = self.requests.len() - 1;
        let row = server.map_or(last, |i| i.min(last));
        self.requests[row][class(status)].increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// One upstream's metrics for the attempts made to it.
#[derive(Debug)]
pub struct UpstreamMetrics {
    pub connect: Histogram,
    pub header: Histogram,
    pub retries: Counter,
}

/// A family of scrape-time series: its `# HELP`/`# TYPE` lines, then samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn start<'o>(out: &'o mut String, name: &str, kind: &str, help: &str) -> Family<'o> {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_label(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and newline (the text format's rule).
fn escape_label(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Series read from the servers' live state.
fn render_state(out: &mut String, snapshot: &Snapshot, generation: u64, reloads: (u64, u64)) {
    Family::start(
        out,
        "switchyard_config_generation",
        "gauge",
        "Configurations applied since start (1: the first).",
    )
    .sample("switchyard_config_generation", &[], generation as f64);
    let name = "switchyard_config_reloads_total";
    let mut f = Family::start(out, name, "counter", "Configuration reloads, by result.");
    f.sample(name, &[("result", "ok")], reloads.0 as f64);
    f.sample(name, &[("result", "failed")], reloads.1 as f64);
    if let Some(log) = &snapshot.access_log {
        let name = "switchyard_access_log_dropped_total";
        Family::start(
            out,
            name,
            "counter",
            "Access log lines dropped because the writer fell behind.",
        )
        .sample(name, &[], log.dropped() as f64);
    }

    type Read = fn(&crate::upstream::Upstream, usize, &crate::upstream::HealthView) -> f64;
    let gauges: [(&str, &str, &str, Read); 4] = [
        (
            "switchyard_server_up",
            "gauge",
            "1 when the server may take requests (up, not ejected, drained or marked down).",
            |u, i, _| f64::from(u8::from(u.servers[i].eligible())),
        ),
        (
            "switchyard_inflight_requests",
            "gauge",
            "Requests between pick and the end of their response body.",
            |u, i, _| u.servers[i].state.inflight() as f64,
        ),
        (
            "switchyard_server_load_estimate",
            "gauge",
            "What the balancer compares: in-flight per unit of weight, or for ewma and least_time the cost in seconds.",
            |u, i, _| u.load_estimate(i),
        ),
        (
            "switchyard_server_weight",
            "gauge",
            "The weight the balancer uses now (slow start lowers it).",
            |u, i, _| crate::balance::weight_units(&u.servers[i]),
        ),
    ];
    let views: Vec<Vec<_>> = snapshot
        .upstreams
        .iter()
        .map(|u| u.servers.iter().map(|s| s.state.health_view()).collect())
        .collect();
    let servers = || {
        snapshot.upstreams.iter().zip(&views).flat_map(|(u, v)| {
            v.iter().enumerate().map(move |(i, h)| {
                let addr = u.servers[i].state.addr().to_string();
                (u, i, h, addr)
            })
        })
    };
    for (name, kind, help, read) in gauges {
        let mut f = Family::start(out, name, kind, help);
        for (u, i, h, addr) in servers() {
            f.sample(
                name,
                &[("upstream", &*u.name), ("server", &addr)],
                read(u, i, h),
            );
        }
    }
    let name = "switchyard_server_ejections_total";
    let mut f = Family::start(
        out,
        name,
        "counter",
        "Times a server was taken out: by its own failures (max_fails) or by its health checks.",
    );
    for (u, _, h, addr) in servers() {
        for (reason, n) in [("max_fails", h.ejections), ("health_check", h.downs)] {
            f.sample(
                name,
                &[
                    ("upstream", &*u.name),
                    ("server", &addr),
                    ("reason", reason),
                ],
                n as f64,
            );
        }
    }
    let name = "switchyard_health_checks_total";
    let mut f = Family::start(out, name, "counter", "Active health checks, by result.");
    for (u, _, h, addr) in servers() {
        if u.health_check.is_none() {
            continue;
        }
        for (result, n) in [("passed", h.checks_passed), ("failed", h.checks_failed)] {
            f.sample(
                name,
                &[
                    ("upstream", &*u.name),
                    ("server", &addr),
                    ("result", result),
                ],
                n as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn classes() {
        assert_eq!(CLASSES[class(StatusCode::OK)], "2xx");
        assert_eq!(CLASSES[class(StatusCode::SWITCHING_PROTOCOLS)], "1xx");
        assert_eq!(CLASSES[class(StatusCode::BAD_GATEWAY)], "5xx");
        assert_eq!(CLASSES[class(StatusCode::NOT_FOUND)], "4xx");
    }

    #[test]
    fn disabled_metrics_render_nothing_and_cost_nothing() {
        let m = Metrics::new(false);
        let r = m.route("r", "u", &["s".into()]);
        r.record(Some(0), StatusCode::OK, Duration::from_millis(1));
        assert!(!m.enabled());
    }
}
