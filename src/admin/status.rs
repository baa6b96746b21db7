//! The status page's model: every listener, route, upstream and server with what
//! an operator asks first — is it taking traffic, and if not, since when and why.
//! Served as JSON (`/status.json`) and as HTML (`/status`, `status_page.rs`).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{LogFormat, LogTarget};
use crate::control::Control;
use crate::upstream::{Active, Event, Measure, Upstream, UpstreamServer};

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub ready: bool,
    pub config: ConfigStatus,
    pub listeners: Vec<ListenerStatus>,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<UpstreamStatus>,
    pub access_log: Option<AccessLogStatus>,
    /// The Redis stores of shared rate limits.
    pub rate_limit_stores: Vec<StoreStatus>,
    /// The `resolve = true` names: servers found, last good answer, last error.
    pub discovery: Vec<crate::discovery::NameView>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ConfigStatus {
    pub file: String,
    /// Configurations applied since start (1: the first).
    pub generation: u64,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ListenerStatus {
    pub name: String,
    pub addr: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct RouteStatus {
    pub name: String,
    pub listener: Option<String>,
    pub host: Option<String>,
    pub path: String,
    /// `path_exact` rather than a prefix.
    pub exact: bool,
    /// `None`: every method.
    pub methods: Option<Vec<String>>,
    /// `upstream`, `redirect` or `respond`.
    pub action: &'static str,
    /// The upstream a proxying route sends to; empty for the others.
    pub upstream: String,
    pub access_log: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct UpstreamStatus {
    pub name: String,
    pub balance: &'static str,
    /// e.g. `GET /health every 2s`; `None` without active checks.
    pub health_check: Option<String>,
    pub servers_up: usize,
    /// Requests waiting for a server below its `max_conns`.
    pub queue_length: usize,
    /// How many may wait.
    pub queue_size: u32,
    pub servers: Vec<ServerStatus>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ServerStatus {
    pub addr: String,
    /// Where it comes from: `file`, `admin`, or a discovery source's name.
    pub source: String,
    /// `up`, `down`, `warming`, `ejected`, `draining`, `slow_start` or `marked_down`.
    pub state: &'static str,
    /// While slow start ramps: the share of its weight it gets now.
    pub slow_start_percent: Option<u32>,
    pub backup: bool,
    pub weight: u32,
    pub inflight: usize,
    /// Its cap on `inflight`; `None`: no limit.
    pub max_conns: Option<usize>,
    pub requests: u64,
    pub errors: u64,
    /// What the balancer compares (see `switchyard_server_load_estimate`).
    pub load_estimate: f64,
    /// The latency estimate of `ewma` / `least_time`, in milliseconds.
    pub latency_ms: Option<f64>,
    pub ejections: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub last_check: Option<EventStatus>,
    pub last_change: Option<EventStatus>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EventStatus {
    /// RFC 3339, UTC.
    pub at: String,
    pub seconds_ago: u64,
    pub what: &'static str,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct StoreStatus {
    /// Without credentials.
    pub address: String,
    /// Whether Redis's last word was an answer (false before the first).
    pub available: bool,
    /// Replicas that decided through it recently, this one included.
    pub replicas_seen: usize,
    /// Decisions made by this replica's fallback instead.
    pub fallbacks: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct AccessLogStatus {
    pub target: String,
    pub format: &'static str,
    pub dropped: u64,
}

impl Status {
    pub(crate) fn collect(control: &Control) -> Status {
        let shared = &control.shared;
        let config = shared.config();
        let snapshot = shared.load();
        let stats = &control.stats;
        let last_error = stats.last_error();
        let now = SystemTime::now();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: shared.started().elapsed().as_secs(),
            ready: shared.ready(),
            config: ConfigStatus {
                file: control.source().display().to_string(),
                generation: shared.metrics.generation(),
                reloads_succeeded: stats.succeeded.load(std::sync::atomic::Ordering::Relaxed),
                reloads_failed: stats.failed.load(std::sync::atomic::Ordering::Relaxed),
                last_error,
            },
            listeners: control
                .addrs()
                .into_iter()
                .map(|(name, addr)| ListenerStatus {
                    name,
                    addr: addr.to_string(),
                })
                .collect(),
            routes: config
                .routes
                .iter()
                .map(|r| RouteStatus {
                    name: r.name.clone(),
                    listener: r.listener.clone(),
                    host: r.host.as_ref().map(ToString::to_string),
                    path: r.path.as_str().to_owned(),
                    exact: matches!(r.path, crate::config::PathMatch::Exact(_)),
                    methods: r
                        .methods
                        .as_ref()
                        .map(|m| m.iter().map(ToString::to_string).collect()),
                    action: r.action.key(),
                    upstream: r.upstream().unwrap_or_default().to_owned(),
                    access_log: r.access_log,
                })
                .collect(),
            upstreams: snapshot
                .upstreams
                .iter()
                .map(|u| upstream(u, now))
                .collect(),
            access_log: snapshot.access_log.as_ref().map(|l| AccessLogStatus {
                target: match &l.config.target {
                    LogTarget::Stdout => "stdout".to_owned(),
                    LogTarget::File(p) => p.display().to_string(),
                },
                format: match l.config.format {
                    LogFormat::Json => "json",
                    LogFormat::Combined => "combined",
                },
                dropped: l.dropped(),
            }),
            discovery: shared.dns_status(),
            rate_limit_stores: shared
                .limits()
                .redis_stores()
                .iter()
                .map(|s| StoreStatus {
                    address: s.address().to_owned(),
                    available: s.available(),
                    replicas_seen: s.replicas_seen(),
                    fallbacks: s.fallbacks(),
                })
                .collect(),
        }
    }
}

fn upstream(u: &Upstream, now: SystemTime) -> UpstreamStatus {
    let servers: Vec<ServerStatus> = (0..u.servers.len()).map(|i| server(u, i, now)).collect();
    UpstreamStatus {
        name: u.name.to_string(),
        balance: u.balance.as_str(),
        health_check: u.health_check.as_ref().map(|h| {
            format!(
                "{} {} every {}",
                h.method,
                h.path,
                humantime::format_duration(h.interval)
            )
        }),
        servers_up: u.servers.iter().filter(|s| s.eligible()).count(),
        queue_length: u.queue.len(),
        queue_size: u.config.queue.size,
        servers,
    }
}

fn server(u: &Upstream, i: usize, now: SystemTime) -> ServerStatus {
    let s: &UpstreamServer = &u.servers[i];
    let h = s.state.health_view();
    let ramp = s.ramp();
    let state = if s.down {
        "marked_down"
    } else if s.state.drained() {
        "draining"
    } else if h.active == Active::Warming {
        "warming"
    } else if h.active == Active::Down {
        "down"
    } else if h.ejected {
        "ejected"
    } else if ramp < 1.0 {
        "slow_start"
    } else {
        "up"
    };
    let latency_ms = match u.measure {
        Measure::Nothing => None,
        Measure::Peak { tau } => {
            Some(s.state.latency.peak_ns(tokio::time::Instant::now(), tau) / 1e6)
        }
        Measure::Average { tau, .. } => Some(
            s.state.latency.average_ns_at(
                crate::clock::stamp(tokio::time::Instant::now()),
                tau.as_secs_f64() * 1e3,
            ) / 1e6,
        ),
    };
    let event = |e: Option<Event>| {
        e.map(|e| EventStatus {
            at: humantime::format_rfc3339_seconds(e.at).to_string(),
            seconds_ago: now.duration_since(e.at).unwrap_or(Duration::ZERO).as_secs(),
            what: e.what,
            detail: e.detail,
        })
    };
    ServerStatus {
        addr: s.state.addr().to_string(),
        source: s.source.as_str().to_owned(),
        state,
        slow_start_percent: (ramp < 1.0).then(|| (ramp * 100.0).round() as u32),
        backup: s.backup,
        weight: s.weight,
        inflight: s.state.inflight(),
        max_conns: Some(s.state.max_conns()).filter(|&m| m != 0),
        requests: s.state.requests(),
        errors: s.state.errors(),
        load_estimate: u.load_estimate(i),
        latency_ms,
        ejections: h.ejections + h.downs,
        checks_passed: h.checks_passed,
        checks_failed: h.checks_failed,
        last_check: event(h.last_check),
        last_change: event(h.last_change),
    }
}
