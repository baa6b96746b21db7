//! The configuration as the request path sees it: one immutable `Snapshot` behind
//! one `ArcSwap`, built from a `Config` off the request path. Long-lived per-server
//! state comes from the `Registry`, so a new snapshot shares it with the old one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderName;

use crate::balance;
use crate::config::{BalanceKind, Config, RetryPolicy, Timeouts, UpstreamConfig};
use crate::health::Supervisor;
use crate::proxy::headers::HeaderAction;
use crate::proxy::route::Router;
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
}

#[derive(Debug)]
pub struct Snapshot {
    /// Indexed by `ListenerId`; `None` for a listener this configuration lacks.
    routers: Vec<Option<Router>>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<Upstream>,
}

impl Snapshot {
    pub fn router(&self, id: ListenerId) -> Option<&Router> {
        self.routers.get(id.0).and_then(Option::as_ref)
    }
}

/// What every connection shares: the current snapshot and the long-lived state.
#[derive(Debug)]
pub struct Shared {
    state: ArcSwap<Snapshot>,
    registry: Registry,
    listener_ids: Mutex<HashMap<String, ListenerId>>,
    health: Mutex<Supervisor>,
    /// The configuration the current snapshot was built from; its lock also keeps
    /// two rebuilds from interleaving.
    config: Mutex<Arc<Config>>,
}

impl Shared {
    /// The shared state of a proxy running `workers` worker threads.
    pub fn new(config: Config, workers: usize) -> Arc<Self> {
        let registry = Registry::new(workers);
        let listener_ids = Mutex::new(HashMap::new());
        let snapshot = build(&config, &registry, &listener_ids, true);
        Arc::new(Shared {
            state: ArcSwap::from_pointee(snapshot),
            registry,
            listener_ids,
            health: Mutex::new(Supervisor::default()),
            config: Mutex::new(Arc::new(config)),
        })
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

    /// Builds a snapshot of `config` and makes it current.
    pub fn apply(&self, config: Config) {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = Arc::new(build(&config, &self.registry, &self.listener_ids, false));
        self.state.store(Arc::clone(&snapshot));
        *current = Arc::new(config);
        drop(current);
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync(&snapshot);
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
        let snapshot = Arc::new(build(&current, &self.registry, &self.listener_ids, false));
        self.state.store(snapshot);
    }

    pub fn listener_id(&self, name: &str) -> ListenerId {
        listener_id(&self.listener_ids, name)
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
fn build_upstream(u: &UpstreamConfig, registry: &Registry, initial: bool) -> Upstream {
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
    initial: bool,
) -> Snapshot {
    let upstreams: Vec<Upstream> = config
        .upstreams
        .iter()
        .map(|u| build_upstream(u, registry, initial))
        .collect();
    let routes = config
        .routes
        .iter()
        .map(|r| Route {
            upstream: config
                .upstreams
                .iter()
                .position(|u| u.name == r.upstream)
                .expect("validated: every route names an existing upstream"),
            timeouts: r.timeouts,
            set_headers: r
                .set_headers
                .iter()
                .map(|(n, t)| (n.clone(), HeaderAction::new(t)))
                .collect(),
            retry: r.retry,
        })
        .collect();
    let mut routers = Vec::new();
    for l in &config.listeners {
        let id = listener_id(ids, &l.name);
        if routers.len() <= id.0 {
            routers.resize_with(id.0 + 1, || None);
        }
        routers[id.0] = Some(Router::new(&l.name, &config.routes));
    }
    Snapshot {
        routers,
        routes,
        upstreams,
    }
}
