//! Prometheus metrics. Events (requests, retries, reloads, connections) go through
//! `metrics` handles into this proxy's `Store`; route and upstream handles are made
//! when a snapshot is built, a server's `requests_total` handles on their first use
//! (`ClassCounters`), so the request path only bumps atomics and a configuration of
//! many routes and servers exports only the series that saw traffic. The state of
//! servers (up, in-flight, the balancer's estimate, check and ejection counts) is
//! read from the live snapshot at scrape time instead: it costs the request path
//! nothing and a server removed by a reload stops being reported.
//!
//! Each proxy owns its store (no recorder is installed globally), so several
//! proxies in one process — the tests — keep separate counts. Without an admin
//! listener nobody can scrape, and every handle is a no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;

use super::series::{Board, Series};
use super::store::{Locked, Store};
use crate::error::Reason;
use metrics::{Counter, Gauge, Histogram};

/// Upper bounds of the latency histograms, in seconds: from a loopback hop (1 ms)
/// to nginx's default timeouts (60 s), roughly ×2.5 apart, the spacing Prometheus'
/// client libraries use; 14 buckets keep a series per label set small.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// The label value for "no such thing": a request that matched no route, or one
/// that never reached a server.
pub const NONE: &str = "none";

const REQUESTS: &str = "switchyard_requests_total";
const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
const CONNECT_DURATION: &str = "switchyard_upstream_connect_duration_seconds";
const HEADER_DURATION: &str = "switchyard_upstream_header_duration_seconds";
const QUEUE_DURATION: &str = "switchyard_upstream_queue_duration_seconds";
const RETRIES: &str = "switchyard_retries_total";
const CONNECTIONS: &str = "switchyard_client_connections";
const PARKED: &str = "switchyard_client_connections_parked";
const PROXY_HEADER_ERRORS: &str = "switchyard_proxy_protocol_errors_total";
const BYTES_RECEIVED: &str = "switchyard_bytes_received_total";
const BYTES_SENT: &str = "switchyard_bytes_sent_total";
const LIMITED: &str = "switchyard_requests_limited_total";
const DNS_RESOLUTIONS: &str = "switchyard_dns_resolutions_total";
const DNS_SERVERS: &str = "switchyard_dns_servers";
const DNS_LAST_SUCCESS: &str = "switchyard_dns_last_success_seconds";
const TELEGRAM_UPDATES: &str = "switchyard_telegram_updates_total";
const TELEGRAM_FALLBACKS: &str = "switchyard_telegram_dedup_fallback_total";

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
        QUEUE_DURATION,
        "Time requests waited in the upstream's queue for a server below its max_conns (requests that waited only).",
    ),
    (
        RETRIES,
        "Requests sent again to another server after a failure.",
    ),
    (CONNECTIONS, "Open client connections, by listener."),
    (
        PARKED,
        "Idle HTTP/1.1 client connections holding no HTTP state (parked), by listener; counted in switchyard_client_connections too.",
    ),
    (
        PROXY_HEADER_ERRORS,
        "Connections closed for a missing or broken PROXY protocol header, by listener.",
    ),
    (
        BYTES_RECEIVED,
        "Request body bytes received from clients, and a tunnel's (WebSocket) bytes from the client once it closes.",
    ),
    (
        BYTES_SENT,
        "Response body bytes sent to clients, and a tunnel's (WebSocket) bytes to the client once it closes.",
    ),
    (
        LIMITED,
        "Requests refused by a limit or an access rule, by route and reason.",
    ),
    (
        DNS_RESOLUTIONS,
        "Background resolutions of resolve = true servers, by upstream, name and result (ok, error, empty, nxdomain).",
    ),
    (
        DNS_SERVERS,
        "Servers a resolve = true name yields now, by upstream and name.",
    ),
    (
        DNS_LAST_SUCCESS,
        "Unix time of a resolve = true name's last good answer, by upstream and name.",
    ),
    (
        TELEGRAM_UPDATES,
        "Telegram webhook requests by route and result (delivered, deduplicated, coalesced, rejected_secret, rejected_source, dead_lettered, affinity_fallback, failed, too_large).",
    ),
    (
        TELEGRAM_FALLBACKS,
        "Telegram deduplication decisions taken in this process's memory because the shared store did not answer.",
    ),
];

/// One proxy's metrics: its series, and handles for process-wide events.
pub struct Metrics {
    /// `None` while metrics are off (no admin listener to scrape them).
    store: Option<Arc<Store>>,
    /// Configurations applied since start (1 for the first).
    generation: AtomicU64,
    /// The status page's time series; `None` with metrics (no admin listener).
    board: Option<Arc<Board>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(enabled: bool) -> Arc<Metrics> {
        Arc::new(Metrics {
            store: enabled.then(|| Arc::new(Store::new(HELP))),
            generation: AtomicU64::new(1),
            board: enabled.then(Arc::default),
        })
    }

    /// The time series of the status page (`None` while metrics are off).
    pub fn board(&self) -> Option<&Arc<Board>> {
        self.board.as_ref()
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        match &self.store {
            Some(s) => s.counter(name, labels),
            None => Counter::noop(),
        }
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        match &self.store {
            Some(s) => s.histogram(name, labels),
            None => Histogram::noop(),
        }
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        match &self.store {
            Some(s) => s.gauge(name, labels),
            None => Gauge::noop(),
        }
    }

    /// Handles for one route of a new snapshot. `upstream` is the one it proxies
    /// to, or `NONE`; the per-server counts are made with the upstream's servers
    /// (`server_requests`), which change without the route. `limited`: whether
    /// any limit or access rule can refuse its requests (only then are its
    /// `requests_limited_total` series made, so a configuration without limits
    /// shows none).
    pub fn route(&self, route: &str, upstream: &str, limited: bool) -> RouteMetrics {
        self.route_of(route, upstream, limited, false)
    }

    /// As `route`; `telegram`: a webhook route, whose gate's refusals
    /// (`telegram_secret`, `telegram_source`) only it has series for.
    pub fn route_of(
        &self,
        route: &str,
        upstream: &str,
        limited: bool,
        telegram: bool,
    ) -> RouteMetrics {
        let labels = [("route", route), ("upstream", upstream)];
        RouteMetrics {
            limited: std::array::from_fn(|i| {
                let reason = Reason::ALL[i];
                let applies = telegram || !matches!(reason, Reason::Secret | Reason::Source);
                let reason = reason.as_str();
                if limited && applies {
                    self.counter(LIMITED, &[("route", route), ("reason", reason)])
                } else {
                    Counter::noop()
                }
            }),
            name: Arc::from(route),
            upstream: Arc::from(upstream),
            duration: self.histogram(REQUEST_DURATION, &labels),
            bytes_in: self.counter(BYTES_RECEIVED, &labels),
            bytes_out: self.counter(BYTES_SENT, &labels),
            unsent: self.server_requests(route, upstream, NONE),
            series: self.board.as_ref().map(|b| {
                if upstream == NONE {
                    Arc::clone(b.total())
                } else {
                    b.upstream(upstream)
                }
            }),
        }
    }

    /// `requests_total` of one route and server, by status class: a slot per
    /// class, registered on its first use (see `ClassCounters`).
    pub fn server_requests(&self, route: &str, upstream: &str, server: &str) -> ClassCounters {
        ClassCounters {
            slots: Default::default(),
            series: self.store.as_ref().map(|store| {
                Box::new(ServerSeries {
                    store: Arc::clone(store),
                    route: Box::from(route),
                    upstream: Box::from(upstream),
                    server: Box::from(server),
                })
            }),
        }
    }

    /// Handles for requests that matched no route.
    pub fn unrouted(&self, limited: bool) -> RouteMetrics {
        self.route(NONE, NONE, limited)
    }

    /// Handles for the attempts made to upstream `name`; `queued`: some server of
    /// it has a `max_conns`, so requests may wait in its queue (only then is its
    /// queue histogram made).
    pub fn upstream(&self, name: &str, queued: bool) -> UpstreamMetrics {
        let labels = [("upstream", name)];
        UpstreamMetrics {
            connect: self.histogram(CONNECT_DURATION, &labels),
            header: self.histogram(HEADER_DURATION, &labels),
            queue: if queued {
                self.histogram(QUEUE_DURATION, &labels)
            } else {
                Histogram::noop()
            },
            retries: self.counter(RETRIES, &labels),
        }
    }

    /// `requests_limited_total{reason="queue"}` of `route`: the same series as the
    /// route's own handle for that reason, made by the upstream the route sends to
    /// (see `Upstream`'s `queue_refusals`).
    pub fn queue_refusals(&self, route: &str) -> Counter {
        self.counter(
            LIMITED,
            &[("route", route), ("reason", Reason::Queue.as_str())],
        )
    }

    /// One discovered name's resolutions with `result`.
    pub fn dns_resolutions(&self, upstream: &str, name: &str, result: &str) -> Counter {
        self.counter(
            DNS_RESOLUTIONS,
            &[("upstream", upstream), ("name", name), ("result", result)],
        )
    }

    /// The servers one discovered name yields now.
    pub fn dns_servers(&self, upstream: &str, name: &str) -> Gauge {
        self.gauge(DNS_SERVERS, &[("upstream", upstream), ("name", name)])
    }

    /// When one discovered name last had a good answer (Unix seconds).
    pub fn dns_last_success(&self, upstream: &str, name: &str) -> Gauge {
        self.gauge(DNS_LAST_SUCCESS, &[("upstream", upstream), ("name", name)])
    }

    /// A Telegram route's requests with `result`.
    pub fn telegram_updates(&self, route: &str, result: &str) -> Counter {
        self.counter(TELEGRAM_UPDATES, &[("route", route), ("result", result)])
    }

    /// A Telegram route's deduplication decisions that fell back to memory.
    pub fn telegram_dedup_fallbacks(&self, route: &str) -> Counter {
        self.counter(TELEGRAM_FALLBACKS, &[("route", route)])
    }

    pub fn connections(&self, listener: &str) -> Gauge {
        self.gauge(CONNECTIONS, &[("listener", listener)])
    }

    /// Idle connections parked (see `server::park`): what nginx's stub_status
    /// calls waiting, for the connections that cost only their socket.
    pub fn parked(&self, listener: &str) -> Gauge {
        self.gauge(PARKED, &[("listener", listener)])
    }

    /// Connections of a `proxy_protocol` listener closed for want of a valid
    /// header: a balancer in front not sending it shows here, not only in debug
    /// logs.
    pub fn proxy_header_errors(&self, listener: &str) -> Counter {
        self.counter(PROXY_HEADER_ERRORS, &[("listener", listener)])
    }

    /// A new configuration was applied.
    pub fn applied(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Series registered so far (0 while metrics are off).
    pub fn registered(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.lock().len())
    }

    /// The series, locked for a scrape (`Locked::retain`, then `Locked::render`);
    /// `None` when metrics are off. The scrape adds the live state (`admin`).
    pub fn series(&self) -> Option<Locked<'_>> {
        self.store.as_deref().map(Store::lock)
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `requests_total` counters of one route and server, by status class. A route's
/// upstream of 50 servers would make 250 series per route up front, nearly all
/// empty; instead each class's handle is registered when a request first needs
/// it, and kept in its slot: after that, a lookup is one atomic load. Indexing
/// (`requests[class]`) fills the slot.
#[derive(Debug)]
pub struct ClassCounters {
    slots: [OnceLock<Counter>; 5],
    /// What the handles are registered as; `None` while metrics are off.
    series: Option<Box<ServerSeries>>,
}

#[derive(Debug)]
struct ServerSeries {
    store: Arc<Store>,
    route: Box<str>,
    upstream: Box<str>,
    server: Box<str>,
}

impl std::ops::Index<usize> for ClassCounters {
    type Output = Counter;

    fn index(&self, class: usize) -> &Counter {
        self.slots[class].get_or_init(|| match &self.series {
            Some(s) => s.store.counter(
                REQUESTS,
                &[
                    ("route", &s.route),
                    ("upstream", &s.upstream),
                    ("server", &s.server),
                    ("code_class", CLASSES[class]),
                ],
            ),
            None => Counter::noop(),
        })
    }
}

/// Index of a status's class in `ClassCounters`.
pub fn class(status: StatusCode) -> usize {
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
    /// `requests_total` of requests no server answered (`server="none"`).
    pub unsent: ClassCounters,
    /// `requests_limited_total`, indexed by `Reason as usize` (`Reason::ALL`'s
    /// order).
    limited: [Counter; Reason::ALL.len()],
    /// The time series requests no server answered count in: the upstream's, or
    /// the whole proxy's for routes without one.
    pub series: Option<Arc<Series>>,
}

impl RouteMetrics {
    /// Counts one answered request: its duration here, its status in `requests`
    /// (the counters of the server that answered, or `unsent`).
    pub fn record(&self, requests: &ClassCounters, status: StatusCode, elapsed: Duration) {
        requests[class(status)].increment(1);
        self.record_duration(elapsed);
    }

    /// A request was refused for `reason`.
    pub fn limited(&self, reason: Reason) {
        self.limited[reason as usize].increment(1);
    }

    /// The request took `elapsed`, head in to last byte out.
    pub fn record_duration(&self, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// One upstream's metrics for the attempts made to it.
#[derive(Debug)]
pub struct UpstreamMetrics {
    pub connect: Histogram,
    pub header: Histogram,
    /// Time waited in the queue, per request that waited.
    pub queue: Histogram,
    pub retries: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(CLASSES[class(StatusCode::OK)], "2xx");
        assert_eq!(CLASSES[class(StatusCode::SWITCHING_PROTOCOLS)], "1xx");
        assert_eq!(CLASSES[class(StatusCode::BAD_GATEWAY)], "5xx");
        assert_eq!(CLASSES[class(StatusCode::NOT_FOUND)], "4xx");
    }

    fn render(m: &Metrics) -> Option<String> {
        let mut out = String::new();
        m.series()?.render(&mut out);
        Some(out)
    }

    #[test]
    fn disabled_metrics_render_nothing_and_cost_nothing() {
        // Enabled, the same calls register handles and show in the text.
        let on = Metrics::new(true);
        let r = on.route("r", "u", false);
        r.record(
            &on.server_requests("r", "u", "s"),
            StatusCode::OK,
            Duration::from_millis(1),
        );
        assert!(on.registered() > 0);
        let text = render(&on).expect("enabled metrics render");
        assert!(text.contains("switchyard_requests_total{route=\"r\",upstream=\"u\",server=\"s\",code_class=\"2xx\"} 1"), "{text}");
        // Disabled: nothing registered (every handle is a no-op that records
        // nothing and keeps nothing), and nothing to render.
        let off = Metrics::new(false);
        let r = off.route("r", "u", true);
        r.record(
            &off.server_requests("r", "u", "s"),
            StatusCode::OK,
            Duration::from_millis(1),
        );
        r.bytes_in.increment(10);
        off.connections("public").increment(1.0);
        assert!(!off.enabled());
        assert_eq!(off.registered(), 0);
        assert_eq!(render(&off), None);
    }

    #[test]
    fn server_slots_register_on_first_use_only() {
        let m = Metrics::new(true);
        let servers: Vec<ClassCounters> = (0..50)
            .map(|i| m.server_requests("r", "u", &format!("10.0.0.{i}:80")))
            .collect();
        assert_eq!(m.registered(), 0, "no series before a request");
        servers[7][class(StatusCode::OK)].increment(1);
        servers[7][class(StatusCode::OK)].increment(1);
        assert_eq!(m.registered(), 1);
        let text = render(&m).unwrap();
        assert_eq!(
            text.matches("switchyard_requests_total{").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("server=\"10.0.0.7:80\",code_class=\"2xx\"} 2"),
            "{text}"
        );
    }
}
