//! The configuration as requests see it: one immutable `Snapshot` behind one
//! `ArcSwap` (`Current`), built off the request path. A request loads it once and
//! walks it. Listeners, routes and upstreams are behind their own `Arc`s, so a
//! membership change makes a new snapshot that shares everything but the one
//! upstream it rebuilt.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::action::{Action, Redirect};
use super::filter::{self, ConnFilter, Filter, Step};
use super::guard::{self, Guard};
use super::real_ip::RealIp;
use super::route::Router;
use super::session::ConnSettings;
use crate::config::{Config, ListenerConfig};
use crate::limit::Tables;
use crate::observe::{AccessLog, Metrics, RouteMetrics, NONE};
use crate::telegram::dedup::Dedups;
use crate::upstream::Upstream;

/// A listener's identity across reloads (its name), as a dense index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub usize);

/// A listener as connections and requests see it.
#[derive(Debug)]
pub struct Listener {
    pub router: Router,
    /// `Some`: a TLS listener; each new connection handshakes with the
    /// configuration current when it was accepted.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Its filters, before and after every route's.
    pub(super) filters: Box<[Step]>,
    /// Its guards, before every route's (and before a 404 or 405).
    pub(super) guards: Box<[Guard]>,
    /// `redirect_https`: every request is redirected, no route is consulted —
    /// but Telegram webhooks, which follow no redirect (`webhooks`).
    pub(super) redirect: Option<Redirect>,
    /// Some telegram route is served here: with `redirect`, requests are routed
    /// first, so that a webhook is answered where it is asked.
    pub(super) webhooks: bool,
    /// The connection phase.
    conn_filters: Box<[ConnFilter]>,
    /// Open client connections.
    pub connections: metrics::Gauge,
    /// Of those, the idle ones parked without HTTP state (`server::park`).
    pub parked: metrics::Gauge,
    /// nginx's `client_body_timeout` (each request's).
    pub client_body_timeout: std::time::Duration,
    /// What its connections are served with: `client_header_timeout` and the
    /// keep-alive and head limits.
    pub conn: ConnSettings,
    /// `max_body_size` for the routes that set none; `None`: no limit.
    pub(super) max_body_size: Option<u64>,
    /// `Some`: each connection starts with a PROXY protocol header naming its
    /// client; the counter counts those closed for want of a valid one.
    pub proxy_protocol: Option<metrics::Counter>,
    /// `trusted_proxies`: whose `X-Forwarded-For` names the client.
    pub(super) real_ip: Option<RealIp>,
}

impl Listener {
    /// Whether a connection from `remote` may proceed (the connection phase).
    pub fn admit(&self, remote: std::net::SocketAddr) -> bool {
        self.conn_filters.iter().all(|f| f.admit(remote))
    }
}

/// A route, ready for the request path.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub metrics: Arc<RouteMetrics>,
    pub(super) filters: Box<[Step]>,
    pub(super) guards: Box<[Guard]>,
    pub(super) action: Action,
    /// Bytes of body its filters must see in memory before the action (`None`:
    /// they do not look at the body).
    pub(super) body_limit: Option<u64>,
}

#[derive(Debug)]
pub struct Snapshot {
    /// Indexed by `ListenerId`; `None` for a listener this configuration lacks.
    listeners: Arc<[Option<Listener>]>,
    pub routes: Arc<[Route]>,
    /// In the configuration's order (by name).
    pub upstreams: Vec<Arc<Upstream>>,
    /// Metrics of requests that match no route.
    pub unrouted: Arc<RouteMetrics>,
    pub access_log: Option<Arc<AccessLog>>,
    /// nginx's `/api` → `/api/`.
    pub(super) add_slash: Arc<Redirect>,
}

/// What building a snapshot needs from the long-lived state.
pub struct Parts<'a> {
    /// The dense id of a listener name, stable across reloads.
    pub listener_id: &'a mut dyn FnMut(&str) -> ListenerId,
    /// The rustls configuration of a TLS listener (its session state is kept per
    /// listener name).
    pub tls: &'a mut dyn FnMut(&ListenerConfig) -> Option<Arc<rustls::ServerConfig>>,
    pub metrics: &'a Metrics,
    pub access_log: Option<Arc<AccessLog>>,
    /// The limiters' tables, kept across snapshots.
    pub limits: &'a Tables,
    /// The Telegram routes' deduplication state, kept across snapshots.
    pub dedups: &'a Dedups,
}

/// For each upstream, the names of the routes that proxy to it, in the file's
/// order: a route's position in its upstream's list is its slot.
pub fn route_slots(config: &Config) -> HashMap<&str, Vec<Arc<str>>> {
    let mut slots: HashMap<&str, Vec<Arc<str>>> = HashMap::new();
    for r in &config.routes {
        if let Some(u) = r.upstream() {
            slots.entry(u).or_default().push(Arc::from(r.name.as_str()));
        }
    }
    slots
}

impl Snapshot {
    /// The snapshot of `config` over `upstreams` (built from the same configuration,
    /// in its order).
    pub fn build(config: &Config, upstreams: Vec<Arc<Upstream>>, p: Parts<'_>) -> Snapshot {
        let mut next_slot: HashMap<&str, usize> = HashMap::new();
        // The tables this configuration asks for are kept, the others let go.
        p.limits.begin();
        p.dedups.begin();
        let listener_guards: Vec<Box<[Guard]>> = config
            .listeners
            .iter()
            .map(|l| guard::for_listener(l, p.limits))
            .collect();
        // Whether a listener's guards may refuse requests of every route, and of
        // none (their refusals are counted per route).
        let any_listener_guard = listener_guards.iter().any(|g| !g.is_empty());
        let routes: Vec<Route> = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let target = r.upstream().map(|name| {
                    // The configuration's upstreams are sorted by name.
                    let index = config
                        .upstreams
                        .binary_search_by(|u| u.name.as_str().cmp(name))
                        .expect("validated: every route names an existing upstream");
                    let slot = next_slot.entry(name).or_insert(0);
                    *slot += 1;
                    (index, *slot - 1)
                });
                let filters = filter::for_route(r, target.map(|(i, _)| &config.upstreams[i]));
                let body_limit = filters.iter().filter_map(Filter::body_limit).max();
                let guards = guard::for_route(r, p.limits);
                let limited = any_listener_guard || !guards.is_empty();
                Route {
                    name: Arc::from(r.name.as_str()),
                    metrics: Arc::new(p.metrics.route_of(
                        &r.name,
                        r.upstream().unwrap_or(NONE),
                        limited,
                        r.telegram().is_some(),
                    )),
                    filters,
                    guards,
                    action: Action::new(r, index, target, &p),
                    body_limit,
                }
            })
            .collect();
        let mut listeners: Vec<Option<Listener>> = Vec::new();
        for (l, guards) in config.listeners.iter().zip(listener_guards) {
            let id = (p.listener_id)(&l.name);
            if listeners.len() <= id.0 {
                listeners.resize_with(id.0 + 1, || None);
            }
            listeners[id.0] = Some(Listener {
                router: Router::new(&l.name, &config.routes),
                tls: (p.tls)(l),
                filters: filter::for_listener(l),
                guards,
                redirect: l.redirect_https.map(Redirect::to_https),
                webhooks: config.routes.iter().any(|r| {
                    r.telegram().is_some() && r.listener.as_ref().is_none_or(|n| *n == l.name)
                }),
                conn_filters: Box::new([]),
                connections: p.metrics.connections(&l.name),
                parked: p.metrics.parked(&l.name),
                client_body_timeout: l.client_body_timeout,
                conn: ConnSettings::of(l),
                max_body_size: Some(l.limits.max_body_size).filter(|&m| m > 0),
                proxy_protocol: l
                    .clients
                    .proxy_protocol
                    .then(|| p.metrics.proxy_header_errors(&l.name)),
                real_ip: RealIp::new(&l.clients.trusted_proxies),
            });
        }
        p.limits.finish();
        p.dedups.finish();
        Snapshot {
            listeners: listeners.into(),
            routes: routes.into(),
            upstreams,
            unrouted: Arc::new(p.metrics.unrouted(any_listener_guard)),
            access_log: p.access_log,
            add_slash: Arc::new(Redirect::add_slash()),
        }
    }

    /// This snapshot with upstream `i` replaced, everything else shared.
    pub fn with_upstream(&self, i: usize, upstream: Arc<Upstream>) -> Snapshot {
        let mut upstreams = self.upstreams.clone();
        upstreams[i] = upstream;
        Snapshot {
            listeners: Arc::clone(&self.listeners),
            routes: Arc::clone(&self.routes),
            upstreams,
            unrouted: Arc::clone(&self.unrouted),
            access_log: self.access_log.clone(),
            add_slash: Arc::clone(&self.add_slash),
        }
    }

    pub fn listener(&self, id: ListenerId) -> Option<&Listener> {
        self.listeners.get(id.0).and_then(Option::as_ref)
    }

    /// The upstream named `name`, with its index: a binary search, as the
    /// upstreams are in the configuration's order, by name (a rebuild looks up
    /// every upstream of the one before).
    pub fn upstream(&self, name: &str) -> Option<(usize, &Arc<Upstream>)> {
        let i = self
            .upstreams
            .binary_search_by(|u| (*u.name).cmp(name))
            .ok()?;
        Some((i, &self.upstreams[i]))
    }

    /// The open-connections gauge of listener `id`.
    pub fn connections(&self, id: ListenerId) -> metrics::Gauge {
        self.listener(id)
            .map_or_else(metrics::Gauge::noop, |l| l.connections.clone())
    }
}

/// The current snapshot, swapped whole.
#[derive(Debug)]
pub struct Current(ArcSwap<Snapshot>);

impl Current {
    pub fn new(snapshot: Snapshot) -> Self {
        Current(ArcSwap::from_pointee(snapshot))
    }

    /// The current snapshot; a request keeps the one it started with.
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// A short look without taking a reference count (one atomic load).
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    pub fn store(&self, snapshot: Arc<Snapshot>) {
        self.0.store(snapshot);
    }
}
