//! `GET /metrics`: the exporter's series (request events, recorded as they happen),
//! then the live state read from the current snapshot at scrape time — servers'
//! health, in-flight counts, the balancer's estimates, check and ejection counts,
//! reloads, the Redis stores of shared rate limits — which costs the request path
//! nothing, and stops being reported for a server (or a store) the moment it
//! leaves.

use std::collections::HashSet;
use std::fmt::Write as _;

use std::sync::Arc;

use crate::limit::RedisStore;
use crate::observe::store::{escape_label, label};
use crate::observe::{Metrics, NONE};
use crate::pipeline::Snapshot;
use crate::state::Shared;

/// The Prometheus text exposition, or `None` when metrics are off (no admin
/// listener is configured to serve them, so none are recorded). Series of a
/// server, route or upstream the current snapshot no longer has, and that nothing
/// holds any more, are forgotten first.
pub(super) fn render(
    metrics: &Metrics,
    shared: &Shared,
    reloads: (u64, u64),
    stores: &[Arc<RedisStore>],
) -> Option<String> {
    let mut series = metrics.series()?;
    // Loaded with the series locked: whatever registered a series before took
    // this snapshot or an older one, so a server a newer snapshot brought is never
    // taken for a removed one.
    let snapshot = shared.load();
    let live = Live::of(&snapshot);
    series.retain(|labels| live.claims(labels));
    let mut out = String::new();
    series.render(&mut out);
    drop(series);
    render_state(&mut out, &snapshot, metrics.generation(), reloads);
    render_stores(&mut out, stores);
    Some(out)
}

/// The routes, upstreams and servers of a snapshot, as their labels read.
struct Live<'a> {
    routes: HashSet<&'a str>,
    upstreams: HashSet<&'a str>,
    servers: HashSet<(&'a str, String)>,
}

impl<'a> Live<'a> {
    fn of(snapshot: &'a Snapshot) -> Live<'a> {
        Live {
            routes: snapshot.routes.iter().map(|r| &*r.name).collect(),
            upstreams: snapshot.upstreams.iter().map(|u| &*u.name).collect(),
            servers: snapshot
                .upstreams
                .iter()
                .flat_map(|u| {
                    u.servers
                        .iter()
                        .map(|s| (&*u.name, s.state.addr().to_string()))
                })
                .collect(),
        }
    }

    /// Whether every route, upstream and server a series names is still here
    /// (`none` always is).
    fn claims(&self, labels: &[(&'static str, Box<str>)]) -> bool {
        let here = |key: &str, set: &HashSet<&str>| {
            label(labels, key).is_none_or(|v| v == NONE || set.contains(v))
        };
        let server = match (label(labels, "upstream"), label(labels, "server")) {
            (Some(u), Some(s)) if s != NONE => self.servers.contains(&(u, s.to_owned())),
            _ => true,
        };
        server && here("route", &self.routes) && here("upstream", &self.upstreams)
    }
}

/// One Redis store's state as the metrics show it.
struct StoreState<'a> {
    address: &'a str,
    fallbacks: u64,
    replicas: usize,
    up: bool,
}

/// The Redis stores' state, by address (without credentials). Two URLs for one
/// address (another password, `unix://` and `redis+unix://`) are one series:
/// their fallbacks add up, the replicas are the most either saw, and the store
/// is up only if both are.
fn render_stores(out: &mut String, stores: &[Arc<RedisStore>]) {
    let mut by_address: Vec<StoreState<'_>> = Vec::new();
    for s in stores {
        let (fallbacks, replicas, up) = (s.fallbacks(), s.replicas_seen(), s.available());
        match by_address.iter_mut().find(|a| a.address == s.address()) {
            Some(a) => {
                a.fallbacks += fallbacks;
                a.replicas = a.replicas.max(replicas);
                a.up &= up;
            }
            None => by_address.push(StoreState {
                address: s.address(),
                fallbacks,
                replicas,
                up,
            }),
        }
    }
    if by_address.is_empty() {
        return;
    }
    by_address.sort_unstable_by(|a, b| a.address.cmp(b.address));
    type Read = fn(&StoreState<'_>) -> f64;
    let families: [(&str, &str, &str, Read); 3] = [
        (
            "switchyard_rate_limit_fallback_total",
            "counter",
            "Rate-limit decisions the Redis store did not answer in time (or at all), decided by this replica's share of the limits instead.",
            |s| s.fallbacks as f64,
        ),
        (
            "switchyard_rate_limit_store_up",
            "gauge",
            "1 when the Redis store's last word was an answer.",
            |s| f64::from(u8::from(s.up)),
        ),
        (
            "switchyard_rate_limit_store_replicas",
            "gauge",
            "Replicas that decided through the store recently, this one included, as Redis last said: the fallback runs at rate / this.",
            |s| s.replicas as f64,
        ),
    ];
    for (name, kind, help, read) in families {
        let mut f = Family::start(out, name, kind, help);
        for s in &by_address {
            f.sample(name, &[("store", s.address)], read(s));
        }
    }
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
    let name = "switchyard_upstream_queue_length";
    let mut f = Family::start(
        out,
        name,
        "gauge",
        "Requests waiting in the upstream's queue for a server below its max_conns.",
    );
    for u in snapshot.upstreams.iter().filter(|u| u.capped) {
        f.sample(name, &[("upstream", &*u.name)], u.queue.len() as f64);
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
