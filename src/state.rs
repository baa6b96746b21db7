//! What every connection and the control plane share: the current snapshot
//! (`pipeline::Current`) and the long-lived state the snapshots are built over —
//! per-server state (`Registry`), server lists beyond the file (`Membership`), TLS
//! session state per listener, metrics, health checkers. Two kinds of change swap
//! the snapshot: a new configuration (`apply`: everything is rebuilt, per-server
//! state carried over), and a change to one upstream's servers or weights
//! (`change_members`, `reweigh`: that upstream alone is rebuilt, the rest shared).
//! Both build off the request path under one lock, so they never interleave.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::checks::Supervisor;
use crate::config::{Config, ServerConfig, UpstreamConfig};
use crate::limit::Tables;
use crate::membership::discover::{Discover, Report};
use crate::membership::{MemberError, Membership};
use crate::observe::{AccessLog, Metrics};
use crate::pipeline::{route_slots, Current, ListenerId, Parts, Snapshot};
use crate::tls;
use crate::upstream::{Build, Registry, Upstream};

/// The shared state of one running proxy.
#[derive(Debug)]
pub struct Shared {
    current: Arc<Current>,
    registry: Registry,
    membership: Membership,
    listener_ids: Mutex<HashMap<String, ListenerId>>,
    /// TLS session resumption state per listener name, kept across reloads.
    tls_sessions: Mutex<HashMap<String, Arc<tls::Sessions>>>,
    /// The rate and concurrency limiters' tables, kept across reloads.
    limits: Tables,
    /// The Telegram routes' deduplication state, kept across reloads.
    dedups: crate::telegram::dedup::Dedups,
    /// The `resolve = true` names and their background lookups.
    dns: crate::discovery::Dns,
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
    /// The shared state of a proxy running `workers` worker threads; fails when the
    /// access log cannot be opened.
    pub fn new(config: Config, workers: usize) -> std::io::Result<Arc<Self>> {
        let metrics = Metrics::new(config.admin.is_some());
        let log = open_log(None, &config)?;
        let shared = Shared {
            current: Arc::new(Current::new(empty(&metrics))),
            registry: Registry::new(workers),
            membership: Membership::default(),
            listener_ids: Mutex::default(),
            tls_sessions: Mutex::default(),
            limits: Tables::default(),
            dedups: Default::default(),
            dns: Default::default(),
            health: Mutex::new(Supervisor::default()),
            config: Mutex::new(Arc::new(config)),
            metrics,
            started: std::time::Instant::now(),
            ready: AtomicBool::new(false),
        };
        let config = shared.config();
        let snapshot = shared.build(&config, log, true, None);
        shared.go_live(Arc::new(snapshot), None);
        Ok(Arc::new(shared))
    }

    /// What the request path reads: the current snapshot.
    pub fn current(&self) -> &Arc<Current> {
        &self.current
    }

    /// The current snapshot; requests keep the one they started with.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load()
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

    /// The limiters' tables (swept of expired keys by the background runtime).
    pub fn limits(&self) -> &Tables {
        &self.limits
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
        h.sync(&self.load().upstreams);
    }

    /// Stops every health checker (at shutdown).
    pub fn stop_health(&self) {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).stop();
    }

    /// The configuration currently applied.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Builds a snapshot of `config` and makes it current; fails, changing nothing,
    /// when a new access log cannot be opened.
    pub fn apply(&self, config: Config) -> std::io::Result<()> {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.load();
        let log = open_log(old.access_log.as_ref(), &config)?;
        self.membership.reloaded(&config.upstreams);
        let snapshot = Arc::new(self.build(&config, log, false, Some(&old)));
        self.go_live(Arc::clone(&snapshot), Some("configuration reload"));
        self.metrics.applied();
        let config = Arc::new(config);
        *current = Arc::clone(&config);
        drop(current);
        self.sync_health(&snapshot);
        self.dns.configure(&config);
        Ok(())
    }

    /// Adds `server` to upstream `name`'s servers (the admin API); returns the
    /// rebuilt upstream.
    pub fn add_server(
        &self,
        name: &str,
        server: ServerConfig,
    ) -> Result<Arc<Upstream>, MemberError> {
        self.change_members(name, "admin API", |ms, c| ms.add(c, server))
    }

    /// Removes the server at `addr` from upstream `name`'s servers.
    pub fn remove_server(
        &self,
        name: &str,
        addr: SocketAddr,
    ) -> Result<Arc<Upstream>, MemberError> {
        self.change_members(name, "admin API", |ms, c| ms.remove(c, addr))
    }

    /// Rebuilds upstream `name` with its servers as they are, for an operator's
    /// weight, which balancers precompute.
    pub fn reweigh(&self, name: &str) -> Result<Arc<Upstream>, MemberError> {
        self.change_members(name, "admin API", |_, _| Ok(()))
    }

    /// Records what discovery source `source` reports for upstream `name` and
    /// rebuilds it if that changes its servers. The admin's removals of servers no
    /// longer listed lapse.
    pub fn discovered(&self, name: &str, source: &Arc<str>, servers: Vec<ServerConfig>) {
        if self.membership.discovered(name, source, servers) {
            let lapse = |ms: &Membership, c: &UpstreamConfig| {
                ms.relisted(c);
                Ok(())
            };
            if let Err(e) = self.change_members(name, "discovery", lapse) {
                tracing::debug!(upstream = name, error = %e, "discovered servers kept for later");
            }
        }
    }

    /// Starts looking up the configuration's `resolve = true` names on `runtime`;
    /// every applied configuration updates them.
    pub fn start_dns(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let report = self.report(crate::discovery::SOURCE);
        let config = self.config();
        self.dns
            .start(runtime.clone(), report, Arc::clone(&self.metrics), &config);
    }

    /// The discovered names' state (status page).
    pub fn dns_status(&self) -> Vec<crate::discovery::NameView> {
        self.dns.status()
    }

    /// A report that applies what source `name` finds to this proxy.
    fn report(self: &Arc<Self>, name: &str) -> Report {
        let weak = Arc::downgrade(self);
        Report::new(
            name,
            Arc::new(move |upstream: &str, source: &Arc<str>, servers| {
                if let Some(shared) = weak.upgrade() {
                    shared.discovered(upstream, source, servers);
                }
            }),
        )
    }

    /// Runs discovery source `d` on `runtime`, reporting into this proxy.
    pub fn start_discovery(
        self: &Arc<Self>,
        d: Box<dyn Discover>,
        runtime: &tokio::runtime::Handle,
    ) {
        let report = self.report(d.name());
        runtime.spawn(d.run(report));
    }

    /// Applies `change` to upstream `name`'s entries and, if it succeeds, swaps in
    /// a snapshot where that upstream alone is rebuilt: its servers' states, the
    /// other upstreams, routes and listeners are shared with the current one, and
    /// its round-robin cycles carry on where they were.
    fn change_members(
        &self,
        name: &str,
        why: &str,
        change: impl FnOnce(&Membership, &UpstreamConfig) -> Result<(), MemberError>,
    ) -> Result<Arc<Upstream>, MemberError> {
        let config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.load();
        let (i, prev) = old
            .upstream(name)
            .ok_or_else(|| MemberError::NoUpstream(name.to_owned()))?;
        change(&self.membership, &prev.config)?;
        let slots = route_slots(&config);
        let b = Build {
            registry: &self.registry,
            metrics: &self.metrics,
            routes: slots.get(name).cloned().unwrap_or_default().into(),
            initial: false,
        };
        let members = self.membership.members(&prev.config);
        let rebuilt = Arc::new(Upstream::build(
            Arc::clone(&prev.config),
            &members,
            &b,
            Some(prev),
        ));
        let snapshot = Arc::new(old.with_upstream(i, Arc::clone(&rebuilt)));
        self.go_live(Arc::clone(&snapshot), Some(why));
        drop(config);
        self.sync_health(&snapshot);
        Ok(rebuilt)
    }

    /// Makes `snapshot` the one new requests take, and its upstreams the ones
    /// requests waiting in their queues pick from when woken (each queue is woken
    /// once: the new server set may have room). The queues learn first, so that
    /// no request that started on the new snapshot is ever sent back to an older
    /// server set. `why`: what changed the server sets, for the status page's
    /// time line (`None`: the first configuration, which changes nothing).
    fn go_live(&self, snapshot: Arc<Snapshot>, why: Option<&str>) {
        // Upstreams without series (no admin listener, so no dashboard) are skipped.
        if let Some(why) = why {
            crate::upstream::series::note_membership(
                &self.load().upstreams,
                &snapshot.upstreams,
                why,
            );
        }
        for u in &snapshot.upstreams {
            u.queue.publish(u);
        }
        self.current.store(snapshot);
    }

    fn sync_health(&self, snapshot: &Snapshot) {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync(&snapshot.upstreams);
    }

    /// A snapshot of `config` over this proxy's long-lived state. `previous`: the
    /// snapshot it replaces, whose upstreams' round-robin cycles carry on.
    fn build(
        &self,
        config: &Config,
        access_log: Option<Arc<AccessLog>>,
        initial: bool,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let slots = route_slots(config);
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let b = Build {
                    registry: &self.registry,
                    metrics: &self.metrics,
                    routes: slots
                        .get(u.name.as_str())
                        .cloned()
                        .unwrap_or_default()
                        .into(),
                    initial,
                };
                let prev = previous
                    .and_then(|p| p.upstream(&u.name))
                    .map(|(_, u)| &**u);
                let members = self.membership.members(u);
                Arc::new(Upstream::build(Arc::new(u.clone()), &members, &b, prev))
            })
            .collect();
        Snapshot::build(
            config,
            upstreams,
            Parts {
                listener_id: &mut |name| self.listener_id(name),
                tls: &mut |l| {
                    l.tls
                        .as_ref()
                        .map(|t| tls::server_config(t, &self.sessions(&l.name)))
                },
                metrics: &self.metrics,
                access_log,
                limits: &self.limits,
                dedups: &self.dedups,
            },
        )
    }

    pub fn listener_id(&self, name: &str) -> ListenerId {
        let mut ids = self.listener_ids.lock().unwrap_or_else(|e| e.into_inner());
        let next = ListenerId(ids.len());
        *ids.entry(name.to_owned()).or_insert(next)
    }

    /// Each TLS listener's session tickets and cache, by listener name: a reload
    /// that keeps the name keeps them, so clients resume across reloads.
    fn sessions(&self, name: &str) -> Arc<tls::Sessions> {
        let mut all = self.tls_sessions.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(all.entry(name.to_owned()).or_default())
    }
}

/// A snapshot of nothing, in place until the first one is built.
fn empty(metrics: &Metrics) -> Snapshot {
    let config = Config {
        source: Default::default(),
        admin: None,
        access_log: None,
        listeners: Vec::new(),
        routes: Vec::new(),
        upstreams: Vec::new(),
        resolver: Default::default(),
    };
    Snapshot::build(
        &config,
        Vec::new(),
        Parts {
            listener_id: &mut |_| ListenerId(0),
            tls: &mut |_| None,
            metrics,
            access_log: None,
            limits: &Tables::default(),
            dedups: &Default::default(),
        },
    )
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
