//! The configuration as the request path sees it: one immutable `Snapshot` behind
//! one `ArcSwap`, built from a `Config` off the request path. Long-lived per-server
//! state comes from the `Registry`, so a new snapshot shares it with the old one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderName;

use crate::balance;
use crate::config::{BalanceKind, Config, Timeouts, UpstreamConfig};
use crate::proxy::headers::HeaderAction;
use crate::proxy::route::Router;
use crate::upstream::{Measure, Registry, ServerKey, Tier, Upstream, UpstreamServer};

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
}

impl Shared {
    /// The shared state of a proxy running `workers` worker threads.
    pub fn new(config: Config, workers: usize) -> Arc<Self> {
        let registry = Registry::new(workers);
        let listener_ids = Mutex::new(HashMap::new());
        let snapshot = build(&config, &registry, &listener_ids);
        Arc::new(Shared {
            state: ArcSwap::from_pointee(snapshot),
            registry,
            listener_ids,
        })
    }

    /// The current snapshot; requests keep the one they started with.
    pub fn load(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Builds a snapshot of `config` and makes it current.
    pub fn apply(&self, config: Config) {
        let snapshot = build(&config, &self.registry, &self.listener_ids);
        self.state.store(Arc::new(snapshot));
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

fn build_upstream(u: &UpstreamConfig, registry: &Registry) -> Upstream {
    let name: Arc<str> = Arc::from(u.name.as_str());
    // Primaries first, backups after, each keeping the file's order.
    let mut servers: Vec<UpstreamServer> = u
        .servers
        .iter()
        .map(|s| UpstreamServer {
            weight: s.weight,
            down: s.down,
            backup: s.backup,
            state: registry.server(
                ServerKey {
                    upstream: Arc::clone(&name),
                    addr: s.addr,
                },
                u.keepalive,
                u.ewma_seed,
            ),
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
        name,
        servers,
        tiers,
        hash_key: u.hash_key.clone(),
        sticky: u.sticky.clone(),
        measure,
    }
}

fn build(
    config: &Config,
    registry: &Registry,
    ids: &Mutex<HashMap<String, ListenerId>>,
) -> Snapshot {
    let upstreams: Vec<Upstream> = config
        .upstreams
        .iter()
        .map(|u| build_upstream(u, registry))
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
