//! The configuration as the request path sees it: one immutable `Snapshot` behind
//! one `ArcSwap`, built from a `Config` off the request path. Long-lived per-server
//! state comes from the `Registry`, so a new snapshot shares it with the old one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};

use crate::balance;
use crate::config::{BalanceKind, Config, RetryPolicy, Timeouts, UpstreamConfig};
use crate::health::Supervisor;
use crate::observe::{AccessLog, Metrics, RouteMetrics};
use crate::proxy::headers::HeaderAction;
use crate::proxy::route::Router;
use crate::tls;
use crate::upstream::transport::{self, Transport};
use crate::upstream::{
    Active, Measure, Passive, Registry, ServerKey, Tier, Upstream, UpstreamServer,
};

/// A listener's identity across reloads (its name), as a dense index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub usize);

/// A route, ready for the request path.
#[derive(Debug)]
pub struct Route {
    /// Index into `Snapshot::upstreams`.
    pub upstream: usize,
    pub timeouts: Timeouts,
    pub set_headers: Vec<(HeaderName, HeaderAction)>,
    pub retry: RetryPolicy,
    /// Whether its requests go to the access log.
    pub access_log: bool,
    pub metrics: Arc<RouteMetrics>,
}

/// A listener as connections and requests see it.
#[derive(Debug)]
pub struct Listener {
    pub router: Router,
    /// `Some`: a TLS listener; each new connection handshakes with the
    /// configuration current when it was accepted.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `Some(port)`: every request is redirected to `https://` on that port.
    pub redirect_https: Option<u16>,
    /// `Strict-Transport-Security` for every response (TLS listeners only).
    pub hsts: Option<HeaderValue>,
    /// Open client connections.
    pub connections: metrics::Gauge,
}

#[derive(Debug)]
pub struct Snapshot {
    /// Indexed by `ListenerId`; `None` for a listener this configuration lacks.
    listeners: Vec<Option<Listener>>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<Upstream>,
    /// Metrics of requests that match no route.
    pub unrouted: Arc<RouteMetrics>,
    pub access_log: Option<Arc<AccessLog>>,
}

impl Snapshot {
    pub fn listener(&self, id: ListenerId) -> Option<&Listener> {
        self.listeners.get(id.0).and_then(Option::as_ref)
    }

    pub fn router(&self, id: ListenerId) -> Option<&Router> {
        self.listener(id).map(|l| &l.router)
    }

    /// The open-connections gauge of listener `id`.
    pub fn connections(&self, id: ListenerId) -> metrics::Gauge {
        self.listener(id)
            .map_or_else(metrics::Gauge::noop, |l| l.connections.clone())
    }
}

/// What every connection shares: the current snapshot and the long-lived state.
#[derive(Debug)]
pub struct Shared {
    state: ArcSwap<Snapshot>,
    registry: Registry,
    listener_ids: Mutex<HashMap<String, ListenerId>>,
    /// TLS session resumption state per listener name, kept across reloads.
    tls_sessions: Sessions,
    health: Mutex<Supervisor>,
    /// The configuration the current snapshot was built from; its lock also keeps
    /// two rebuilds from interleaving.
    config: Mutex<Arc<Config>>,
    /// Metrics are recorded only when an admin listener can serve them.
    pub metrics: Arc<Metrics>,
    started: std::time::Instant,
    /// Listeners bound and accepting (`/readyz`); false again once draining.
    ready: AtomicBool,
}

impl Shared {
    /// The shared state of a proxy running `workers` worker threads. Panics when
    /// the access log cannot be opened; `try_new` reports that instead.
    pub fn new(config: Config, workers: usize) -> Arc<Self> {
        Shared::try_new(config, workers).expect("the access log opens")
    }

    /// As `new`; fails when the access log cannot be opened.
    pub fn try_new(config: Config, workers: usize) -> std::io::Result<Arc<Self>> {
        let registry = Registry::new(workers);
        let listener_ids = Mutex::new(HashMap::new());
        let metrics = Metrics::new(config.admin.is_some());
        let log = open_log(None, &config)?;
        let tls_sessions = Sessions::default();
        let snapshot = build(
            &config,
            &registry,
            &listener_ids,
            &tls_sessions,
            &metrics,
            log,
            true,
        );
        Ok(Arc::new(Shared {
            state: ArcSwap::from_pointee(snapshot),
            registry,
            listener_ids,
            tls_sessions,
            health: Mutex::new(Supervisor::default()),
            config: Mutex::new(Arc::new(config)),
            metrics,
            started: std::time::Instant::now(),
            ready: AtomicBool::new(false),
        }))
    }

    pub fn started(&self) -> std::time::Instant {
        self.started
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Reopens the access log's file (SIGUSR1, after logrotate moved it).
    pub fn reopen_log(&self) {
        if let Some(l) = &self.load().access_log {
            l.reopen();
        }
    }

    /// Starts the active health checkers on `runtime`; later snapshots update them.
    pub fn start_health(&self, runtime: tokio::runtime::Handle) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.start(runtime);
        h.sync(&self.load());
    }

    /// Stops every health checker (at shutdown).
    pub fn stop_health(&self) {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).stop();
    }

    /// The current snapshot; requests keep the one they started with.
    pub fn load(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Builds a snapshot of `config` and makes it current; fails, changing nothing,
    /// when a new access log cannot be opened.
    pub fn apply(&self, config: Config) -> std::io::Result<()> {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let log = open_log(self.load().access_log.as_ref(), &config)?;
        let snapshot = self.snapshot_of(&config, log);
        self.state.store(Arc::clone(&snapshot));
        self.metrics.applied();
        *current = Arc::new(config);
        drop(current);
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync(&snapshot);
        Ok(())
    }

    /// The configuration currently applied.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Builds the snapshot again from the current configuration, for runtime
    /// overrides (weights) that balancers precompute.
    pub fn rebuild(&self) {
        // Under the lock, so a reload cannot slip in between and be undone.
        let current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let log = self.load().access_log.clone();
        self.state.store(self.snapshot_of(&current, log));
    }

    /// A snapshot of `config` over this proxy's long-lived state (servers, TLS
    /// sessions, metrics), for a configuration after the first.
    fn snapshot_of(&self, config: &Config, log: Option<Arc<AccessLog>>) -> Arc<Snapshot> {
        Arc::new(build(
            config,
            &self.registry,
            &self.listener_ids,
            &self.tls_sessions,
            &self.metrics,
            log,
            false,
        ))
    }

    pub fn listener_id(&self, name: &str) -> ListenerId {
        listener_id(&self.listener_ids, name)
    }

    /// The TLS configuration a connection accepted now on listener `id` uses, or
    /// `None` for plain HTTP. One atomic load, no reference count on the snapshot.
    pub fn tls(&self, id: ListenerId) -> Option<Arc<rustls::ServerConfig>> {
        self.state.load().listener(id)?.tls.clone()
    }
}

/// Each TLS listener's session tickets and cache, by listener name: a reload that
/// keeps the name keeps them, so clients resume across reloads.
type Sessions = Mutex<HashMap<String, Arc<tls::Sessions>>>;

fn sessions_of(all: &Sessions, name: &str) -> Arc<tls::Sessions> {
    let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(all.entry(name.to_owned()).or_default())
}

/// The access log `config` asks for: the running one when unchanged (its queue and
/// file carry on), else a new one.
fn open_log(
    current: Option<&Arc<AccessLog>>,
    config: &Config,
) -> std::io::Result<Option<Arc<AccessLog>>> {
    let Some(want) = &config.access_log else {
        return Ok(None);
    };
    match current {
        Some(l) if l.config == *want => Ok(Some(Arc::clone(l))),
        _ => AccessLog::open(want).map(|l| Some(Arc::new(l))),
    }
}

fn listener_id(ids: &Mutex<HashMap<String, ListenerId>>, name: &str) -> ListenerId {
    let mut ids = ids.lock().unwrap_or_else(|e| e.into_inner());
    let next = ListenerId(ids.len());
    *ids.entry(name.to_owned()).or_insert(next)
}

/// `initial`: the first configuration, whose servers are trusted at once (the first
/// round of checks runs right away); servers a later reload adds warm up first: with
/// health checks they wait for one passing check, and slow start ramps them.
fn build_upstream(
    u: &UpstreamConfig,
    registry: &Registry,
    metrics: &Metrics,
    initial: bool,
) -> Upstream {
    let name: Arc<str> = Arc::from(u.name.as_str());
    let tls_config = u
        .tls
        .as_ref()
        .map(|t| transport::client_config(t, u.protocol));
    // Primaries first, backups after, each keeping the file's order.
    let mut servers: Vec<UpstreamServer> = u
        .servers
        .iter()
        .map(|s| {
            let passive = Passive {
                max_fails: s.max_fails,
                fail_timeout: s.fail_timeout,
                slow_start: s.slow_start,
            };
            let key = ServerKey {
                upstream: Arc::clone(&name),
                addr: s.addr,
            };
            let transport = Transport::new(u.protocol, u.tls.as_ref(), tls_config.as_ref(), s);
            let state = registry.server_or_new(key, u.keepalive, u.ewma_seed, transport, |fresh| {
                if initial {
                    return;
                }
                if u.health_check.is_some() {
                    fresh.set_active(
                        Active::Warming,
                        "added; waiting for a passing check",
                        s.slow_start,
                    );
                } else {
                    fresh.start_ramp(s.slow_start);
                }
            });
            UpstreamServer {
                weight: state.weight_override().unwrap_or(s.weight),
                down: s.down,
                backup: s.backup,
                passive,
                state,
            }
        })
        .collect();
    servers.sort_by_key(|s| s.backup);
    let primaries = servers.iter().take_while(|s| !s.backup).count();
    let tiers = [0..primaries, primaries..servers.len()]
        .into_iter()
        .filter(|r| !r.is_empty())
        .map(|range| Tier {
            balancer: balance::build(u, &servers[range.clone()]),
            range,
        })
        .collect();
    let measure = match u.balance {
        BalanceKind::Ewma => Measure::Peak { tau: u.ewma_decay },
        BalanceKind::LeastTime => Measure::Average {
            mode: u.least_time,
            tau: u.ewma_decay,
        },
        _ => Measure::Nothing,
    };
    Upstream {
        balance: u.balance,
        metrics: metrics.upstream(&name),
        servers,
        tiers,
        hash_key: u.hash_key.clone(),
        sticky: u.sticky.clone(),
        measure,
        health_check: u.health_check.clone().map(Arc::new),
        max_ejected_percent: u.max_ejected_percent,
        budget: registry.budget(&name),
        protocol: u.protocol,
        name,
    }
}

fn build(
    config: &Config,
    registry: &Registry,
    ids: &Mutex<HashMap<String, ListenerId>>,
    sessions: &Sessions,
    metrics: &Metrics,
    access_log: Option<Arc<AccessLog>>,
    initial: bool,
) -> Snapshot {
    let upstreams: Vec<Upstream> = config
        .upstreams
        .iter()
        .map(|u| build_upstream(u, registry, metrics, initial))
        .collect();
    let routes = config
        .routes
        .iter()
        .filter_map(|r| match &r.action {
            crate::config::RouteAction::Proxy(p) => Some((r, p)),
            _ => None,
        })
        .map(|(r, p)| {
            let upstream = config
                .upstreams
                .iter()
                .position(|u| u.name == p.upstream)
                .expect("validated: every route names an existing upstream");
            let servers: Vec<String> = upstreams[upstream]
                .servers
                .iter()
                .map(|s| s.state.addr().to_string())
                .collect();
            (
                r,
                p,
                upstream,
                metrics.route(&r.name, &p.upstream, &servers),
            )
        })
        .map(|(r, p, upstream, route_metrics)| Route {
            upstream,
            access_log: r.access_log,
            metrics: Arc::new(route_metrics),
            timeouts: p.timeouts,
            set_headers: r
                .set_headers
                .iter()
                .map(|(n, t)| (n.clone(), HeaderAction::new(t)))
                .collect(),
            retry: p.retry,
        })
        .collect();
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let id = listener_id(ids, &l.name);
        if listeners.len() <= id.0 {
            listeners.resize_with(id.0 + 1, || None);
        }
        let tls = l
            .tls
            .as_ref()
            .map(|t| tls::server_config(t, &sessions_of(sessions, &l.name)));
        listeners[id.0] = Some(Listener {
            router: Router::new(&l.name, &config.routes),
            tls,
            redirect_https: l.redirect_https,
            hsts: l.hsts.clone(),
            connections: metrics.connections(&l.name),
        });
    }
    Snapshot {
        listeners,
        routes,
        upstreams,
        unrouted: Arc::new(metrics.unrouted()),
        access_log,
    }
}
