//! Upstreams: each server's long-lived state (`ServerState`: health, in-flight
//! count, latency estimates, connection pool) in a `Registry` keyed by upstream and
//! address, outside any configuration, and the immutable `Upstream` a snapshot
//! holds: one server set with its balancers. A reload or a membership change builds
//! a new `Upstream` over the same states, so a server that stays keeps everything.

mod budget;
mod health;
mod inflight;
mod pool;
mod queue;
mod response;
pub mod series;
mod server_state;
pub mod transport;
mod wire;

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use budget::RetryBudget;
pub use health::{Active, Admission, Event, HealthView, SLOW_START_FLOOR};
pub use inflight::{InFlight, Measure};
pub use pool::{set_worker_shard, H1Conn, H2Lease, Pool, PooledConn, Sender, DEFAULT_IDLE_TIMEOUT};
pub use queue::{Queue, Ticket};
pub use response::{Blame, UpstreamBody};
pub use server_state::{Registry, ServerKey, ServerState};
pub use wire::Wire;

use crate::balance::{self, Affine, Balancer, Candidate, Latency, PickCtx};
use crate::config::{BalanceKind, HashKey, HealthCheckConfig, ServerConfig, StickyConfig};
use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::observe::series::Series;
use crate::observe::{ClassCounters, Metrics, UpstreamMetrics};
use transport::Transport;

/// Where a server of an upstream comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Listed in the configuration file.
    File,
    /// Added through the admin API (`POST /upstreams/NAME/servers`).
    Admin,
    /// Reported by a discovery source, by its name.
    Discovered(Arc<str>),
}

impl Source {
    pub fn as_str(&self) -> &str {
        match self {
            Source::File => "file",
            Source::Admin => "admin",
            Source::Discovered(name) => name,
        }
    }
}

/// One server of an upstream's live list, with its settings and where it came from.
#[derive(Debug, Clone)]
pub struct Member {
    pub server: ServerConfig,
    pub source: Source,
}

impl Member {
    /// The file's servers of `config`, as members.
    pub fn from_file(config: &UpstreamConfig) -> impl Iterator<Item = Member> + '_ {
        config.servers.iter().map(|s| Member {
            server: s.clone(),
            source: Source::File,
        })
    }
}

/// One upstream as a snapshot sees it.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    /// Its settings from the file.
    pub config: Arc<UpstreamConfig>,
    pub balance: BalanceKind,
    pub metrics: UpstreamMetrics,
    /// Primaries first, then backups.
    pub servers: Vec<UpstreamServer>,
    /// The primaries, then (if any) the backups, each with its own balancer: a tier
    /// is asked only when every tier before it has no eligible server.
    pub tiers: Vec<Tier>,
    pub hash_key: Option<HashKey>,
    pub sticky: Option<StickyConfig>,
    /// What finished requests record for the balancer.
    pub measure: Measure,
    pub health_check: Option<Arc<HealthCheckConfig>>,
    pub max_ejected_percent: u32,
    /// Shared by every snapshot that has this upstream.
    pub budget: Arc<RetryBudget>,
    /// The wire protocol to the servers (each server's pool knows how to connect).
    pub protocol: UpstreamProtocol,
    /// The routes that proxy here, by their slot (`Route::slot`): each server keeps
    /// its request counts per route.
    pub routes: Arc<[Arc<str>]>,
    /// Some server has a `max_conns`: picks pass full servers over, and requests
    /// that find them all full wait in `queue`.
    pub capped: bool,
    /// Where requests wait for a slot; shared by every snapshot that has this
    /// upstream (and by its servers' states, whose freed slots wake it).
    pub queue: Arc<Queue>,
    /// `requests_limited_total{reason="queue"}` by route slot: made here rather
    /// than with the routes, since servers with caps may join through the admin
    /// API or discovery, which rebuild the upstream alone. No-ops while uncapped.
    queue_refusals: Box<[metrics::Counter]>,
    /// The rustls client configuration of the servers, reused by later builds.
    tls_client: Option<Arc<rustls::ClientConfig>>,
    /// The status page's time series of the upstream (`None` without metrics).
    pub series: Option<Arc<Series>>,
}

/// Whether an upstream has room for a request (`Upstream::room`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// A server that may take it is below its `max_conns`.
    Free,
    /// Servers may take it, but each is at its `max_conns`: wait in the queue.
    Full,
    /// No server may take it (none eligible, or all tried).
    Nothing,
}

#[derive(Debug)]
pub struct Tier {
    pub range: Range<usize>,
    pub balancer: Box<dyn Balancer<UpstreamServer>>,
    /// The keyed placement of the Telegram mode, built on its first use (an
    /// upstream no telegram route uses never builds it).
    affine: OnceLock<Affine>,
}

/// A server of an upstream: its settings, where it came from, and its long-lived
/// state.
#[derive(Debug)]
pub struct UpstreamServer {
    pub weight: u32,
    /// Marked `down` in the configuration: never eligible.
    pub down: bool,
    pub backup: bool,
    pub passive: Passive,
    pub source: Source,
    pub state: Arc<ServerState>,
    /// `requests_total` by route slot and status class.
    pub requests: Box<[ClassCounters]>,
    /// The status page's time series of the server (`None` without metrics).
    pub series: Option<Arc<Series>>,
}

/// A server's passive-health settings (nginx's `max_fails`, `fail_timeout`, and
/// `slow_start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passive {
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub slow_start: Duration,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            max_fails: crate::config::DEFAULT_MAX_FAILS,
            fail_timeout: crate::config::DEFAULT_FAIL_TIMEOUT,
            slow_start: Duration::ZERO,
        }
    }
}

impl UpstreamServer {
    /// The one eligibility view every algorithm consults: not marked down in the
    /// file nor drained by the operator, up as far as active checks know, and not
    /// resting after passive ejection.
    pub fn eligible(&self) -> bool {
        !self.down && !self.state.drained() && self.state.available()
    }

    /// The share of its weight slow start allows now (1 when not ramping).
    pub fn ramp(&self) -> f64 {
        if self.passive.slow_start.is_zero() {
            1.0
        } else {
            self.state.ramp(self.passive.slow_start)
        }
    }

    /// The weight the balancers use, in 1/1024ths.
    pub fn live_weight(&self) -> u64 {
        Candidate::live_weight(self)
    }
}

impl Candidate for UpstreamServer {
    fn eligible(&self) -> bool {
        UpstreamServer::eligible(self)
    }

    fn weight(&self) -> u32 {
        if self.down {
            0
        } else {
            self.weight
        }
    }

    fn ramp(&self) -> f64 {
        UpstreamServer::ramp(self)
    }

    fn inflight(&self) -> usize {
        self.state.inflight()
    }

    fn latency(&self) -> &Latency {
        &self.state.latency
    }

    fn addr(&self) -> SocketAddr {
        self.state.addr()
    }

    fn full(&self) -> bool {
        self.state.full()
    }
}

/// What building an upstream needs besides its servers.
#[derive(Debug)]
pub struct Build<'a> {
    pub registry: &'a Registry,
    pub metrics: &'a Metrics,
    /// The routes that proxy to it, in slot order.
    pub routes: Arc<[Arc<str>]>,
    /// The first configuration: its servers are trusted at once (the first round of
    /// checks runs right away). Servers that join later warm up first: with health
    /// checks they wait for one passing check, and slow start ramps them.
    pub initial: bool,
}

impl Upstream {
    /// The upstream `config` describes, over `members` (the file's servers and
    /// those discovery and the admin API added). `previous` is the upstream this
    /// one replaces, if any: its TLS client configuration is reused when the
    /// settings are the same, and its round-robin cycles carry on where they were.
    pub fn build(
        config: Arc<UpstreamConfig>,
        members: &[Member],
        b: &Build<'_>,
        previous: Option<&Upstream>,
    ) -> Upstream {
        let u = &*config;
        let name: Arc<str> = Arc::from(u.name.as_str());
        let tls_client = match previous {
            Some(p) if p.config.tls == u.tls && p.protocol == u.protocol => p.tls_client.clone(),
            _ => u
                .tls
                .as_ref()
                .map(|t| transport::client_config(t, u.protocol)),
        };
        // Primaries first, backups after, each keeping the members' order.
        let mut servers: Vec<UpstreamServer> = members
            .iter()
            .map(|m| server(u, &name, m, b, tls_client.as_ref()))
            .collect();
        servers.sort_by_key(|s| s.backup);
        let primaries = servers.iter().take_while(|s| !s.backup).count();
        let tiers = [0..primaries, primaries..servers.len()]
            .into_iter()
            .filter(|r| !r.is_empty())
            .map(|range| Tier {
                balancer: balance::build(u, &servers[range.clone()]),
                affine: OnceLock::new(),
                range,
            })
            .collect();
        let capped = servers.iter().any(|s| s.state.max_conns() != 0);
        let queue_refusals = b
            .routes
            .iter()
            .map(|r| {
                if capped {
                    b.metrics.queue_refusals(r)
                } else {
                    metrics::Counter::noop()
                }
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
        let upstream = Upstream {
            balance: u.balance,
            metrics: b.metrics.upstream(&name, capped),
            servers,
            tiers,
            hash_key: u.hash_key.clone(),
            sticky: u.sticky.clone(),
            measure,
            health_check: u.health_check.clone().map(Arc::new),
            max_ejected_percent: u.max_ejected_percent,
            budget: b.registry.budget(&name),
            protocol: u.protocol,
            routes: Arc::clone(&b.routes),
            capped,
            queue: b.registry.queue(&name),
            queue_refusals,
            tls_client,
            series: b.metrics.board().map(|board| board.upstream(&name)),
            name,
            config,
        };
        if let Some(p) = previous {
            upstream.carry_on_from(p);
        }
        upstream
    }

    /// Moves the round-robin cycles of this upstream, not yet in service, to carry
    /// on after the server each tier of `previous` picked last. `build` does it;
    /// calling it again just before the swap also counts the picks made while this
    /// one was being built.
    pub fn carry_on_from(&self, previous: &Upstream) {
        for t in &self.tiers {
            let backups = self.servers[t.range.start].backup;
            let Some(old) = previous
                .tiers
                .iter()
                .find(|o| previous.servers[o.range.start].backup == backups)
            else {
                continue;
            };
            let (Some(new_cycle), Some(old_cycle)) = (t.balancer.cycle(), old.balancer.cycle())
            else {
                continue;
            };
            let addrs = |u: &Upstream, r: &Range<usize>| -> Vec<SocketAddr> {
                u.servers[r.clone()]
                    .iter()
                    .map(|s| s.state.addr())
                    .collect()
            };
            new_cycle.resume_after(
                old_cycle,
                &addrs(previous, &old.range),
                &addrs(self, &t.range),
            );
        }
    }

    /// Chooses a server for a request, or `None` when no server is usable. Returns
    /// the index into `servers` with the server.
    ///
    /// As in HAProxy, backups stand in for primaries that are down, not for
    /// primaries that are busy: while a primary that may take the request is at
    /// its `max_conns`, the answer is `None` (the request waits for it) rather than
    /// a backup.
    pub fn pick(&self, ctx: &PickCtx<'_>) -> Option<(usize, &UpstreamServer)> {
        for t in &self.tiers {
            let servers = &self.servers[t.range.clone()];
            let ctx = PickCtx {
                base: t.range.start,
                capped: self.capped,
                ..*ctx
            };
            let balancer: &dyn Balancer<UpstreamServer> = if ctx.affine {
                t.affine.get_or_init(|| Affine::new(servers))
            } else {
                &*t.balancer
            };
            if let Some(i) = balancer.pick(servers, &ctx) {
                return Some((t.range.start + i, &servers[i]));
            }
            if self.capped && (0..servers.len()).any(|i| servers[i].eligible() && !ctx.skipped(i)) {
                return None;
            }
        }
        None
    }

    /// Whether a request that tried the servers in `skip` has room now: the first
    /// tier with a server that may take it decides, as in `pick`. A scan of the
    /// servers, for requests that found no slot.
    pub fn room(&self, skip: &[usize]) -> Room {
        for t in &self.tiers {
            let mut any = false;
            for i in t.range.clone() {
                let s = &self.servers[i];
                if s.eligible() && !skip.contains(&i) {
                    if !s.state.full() {
                        return Room::Free;
                    }
                    any = true;
                }
            }
            if any {
                return Room::Full;
            }
        }
        Room::Nothing
    }

    /// Counts a request of the route in `slot` refused by the queue (full, or its
    /// wait over).
    pub fn queue_refused(&self, slot: usize) {
        if let Some(c) = self.queue_refusals.get(slot) {
            c.increment(1);
        }
    }

    /// The server a sticky cookie names, while it is eligible, and, for a backup,
    /// only while no primary is (clients pinned to a backup come back).
    pub fn sticky_server(&self, id: &str) -> Option<(usize, &UpstreamServer)> {
        let (i, s) = self
            .servers
            .iter()
            .enumerate()
            .find(|(_, s)| s.state.sticky_id == id)?;
        let primary_up = || self.servers.iter().any(|p| !p.backup && p.eligible());
        // A full server's clients go where the balancer sends them, as when it is
        // down (HAProxy would queue them for that server alone).
        let full = self.capped && s.state.full();
        (s.eligible() && !full && !(s.backup && primary_up())).then_some((i, s))
    }

    /// The index of the server at `addr`.
    pub fn position(&self, addr: SocketAddr) -> Option<usize> {
        self.servers.iter().position(|s| s.state.addr() == addr)
    }

    /// Whether passive ejection may take `servers[i]` out: backups always may; a
    /// primary only while fewer than `max_ejected_percent` of the primaries (at least
    /// one, unless the cap is 0) are out, and never the only primary (as nginx
    /// ignores `max_fails` for a lone server: resting it would only turn its errors
    /// into 503s).
    pub fn may_eject(&self, i: usize) -> bool {
        if self.servers[i].backup {
            return true;
        }
        let primaries = self.servers.iter().filter(|s| !s.backup);
        let (mut total, mut ejected) = (0usize, 0usize);
        for s in primaries {
            total += 1;
            ejected += usize::from(s.state.ejected());
        }
        let cap = match self.max_ejected_percent {
            _ if total <= 1 => 0,
            0 => 0,
            p => (total * p as usize / 100).max(1),
        };
        ejected < cap
    }

    /// Charges `servers[i]` one failure towards passive ejection for the attempt
    /// `guard` counts, at most once however many ways it fails (a listed status in
    /// the head, then a broken body).
    pub fn record_failure(&self, i: usize, guard: &mut InFlight, reason: &str) {
        if !guard.claim_charge() {
            return;
        }
        let s = &self.servers[i];
        s.state.record_failure(
            guard.take_admission(),
            s.passive.max_fails,
            s.passive.fail_timeout,
            || self.may_eject(i),
            reason,
        );
    }

    /// What the balancer compares for `servers[i]` (see `Balancer::load`).
    pub fn load_estimate(&self, i: usize) -> f64 {
        self.tiers
            .iter()
            .find(|t| t.range.contains(&i))
            .map_or(0.0, |t| {
                t.balancer
                    .load(&self.servers[t.range.clone()][i - t.range.start])
            })
    }

    /// Requests sent to the upstream's servers so far (attempts, retries included).
    pub fn requests(&self) -> u64 {
        self.servers.iter().map(|s| s.state.requests()).sum()
    }

    /// A `Retry-After` for a 503 when nothing is eligible: when the first resting
    /// server's trial comes, or the next health check; at least one second.
    pub fn retry_after(&self) -> Duration {
        let rest = self
            .servers
            .iter()
            .filter_map(|s| s.state.rest_left())
            .min();
        let check = self.health_check.as_ref().map(|h| h.interval);
        let wait = match (rest, check) {
            (Some(r), Some(c)) => r.min(c),
            (r, c) => r.or(c).unwrap_or(Duration::from_secs(1)),
        };
        wait.max(Duration::from_secs(1))
    }
}

/// One member as a server of the upstream: its long-lived state from the
/// registry (new, warming, when it joins after the first configuration), the
/// operator's weight if set, and its request counters per route.
fn server(
    u: &UpstreamConfig,
    name: &Arc<str>,
    m: &Member,
    b: &Build<'_>,
    tls_client: Option<&Arc<rustls::ClientConfig>>,
) -> UpstreamServer {
    let s = &m.server;
    let key = ServerKey {
        upstream: Arc::clone(name),
        addr: s.addr,
    };
    let transport = Transport::new(u.protocol, u.tls.as_ref(), tls_client, s);
    let state = b.registry.server_or_new(
        key,
        u.keepalive,
        u.max_response_header_size,
        u.ewma_seed,
        transport,
        |fresh| {
            if b.initial {
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
        },
    );
    state.set_max_conns(s.max_conns as usize);
    let addr = s.addr.to_string();
    let requests = b
        .routes
        .iter()
        .map(|r| b.metrics.server_requests(r, name, &addr))
        .collect();
    UpstreamServer {
        weight: state.weight_override().unwrap_or(s.weight),
        down: s.down,
        backup: s.backup,
        passive: Passive {
            max_fails: s.max_fails,
            fail_timeout: s.fail_timeout,
            slow_start: s.slow_start,
        },
        source: m.source.clone(),
        series: b.metrics.board().map(|board| board.server(name, s.addr)),
        state,
        requests,
    }
}

/// Servers with the given weights and fresh state, for unit tests.
#[cfg(test)]
pub(crate) fn test_servers(weights: &[u32]) -> Vec<UpstreamServer> {
    let registry = Registry::default();
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| UpstreamServer {
            weight,
            down: false,
            backup: false,
            passive: Passive::default(),
            source: Source::File,
            state: registry.server(
                ServerKey {
                    upstream: Arc::from("test"),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 10000 + i as u16)),
                },
                1,
                std::time::Duration::from_millis(30),
            ),
            requests: Box::new([]),
            series: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(weights: &[u32], percent: u32) -> Upstream {
        let mut config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nupstream = \"test\"\n\
             [upstream.test]\nservers = [{ addr = \"127.0.0.1:1\" }]\n",
        )
        .unwrap()
        .upstreams
        .remove(0);
        config.max_ejected_percent = percent;
        config.servers.clear();
        let registry = Registry::default();
        let metrics = Metrics::new(false);
        let b = Build {
            registry: &registry,
            metrics: &metrics,
            routes: Arc::new([]),
            initial: true,
        };
        let mut u = Upstream::build(Arc::new(config), &[], &b, None);
        u.servers = test_servers(weights);
        u
    }

    fn eject(u: &Upstream, i: usize) -> bool {
        let before = u.servers[i].state.ejected();
        u.servers[i].state.record_failure(
            Admission::Normal,
            1,
            Duration::from_secs(10),
            || u.may_eject(i),
            "test",
        );
        !before && u.servers[i].state.ejected()
    }

    #[tokio::test]
    async fn ejection_cap_counts_primaries() {
        let u = upstream(&[1, 1, 1, 1], 50);
        assert!(eject(&u, 0) && eject(&u, 1));
        assert!(!eject(&u, 2), "half of four primaries are out already");
        let u = upstream(&[1, 1, 1], 10);
        assert!(eject(&u, 0), "at least one of several");
        assert!(!eject(&u, 1));
        let u = upstream(&[1, 1, 1], 0);
        assert!(!eject(&u, 0), "0 % turns ejection off");
        let u = upstream(&[1], 100);
        assert!(!eject(&u, 0), "a lone server is never rested");
        let mut u = upstream(&[1, 1], 50);
        u.servers[1].backup = true;
        assert!(eject(&u, 1), "backups are not capped");
    }

    #[tokio::test]
    async fn retry_after_is_the_nearest_trial_or_check() {
        let u = upstream(&[1, 1, 1], 100);
        assert_eq!(u.retry_after(), Duration::from_secs(1));
        assert!(eject(&u, 0));
        let after = u.retry_after();
        assert!(after > Duration::from_secs(9) && after <= Duration::from_secs(10));
    }

    /// An upstream of the servers in `servers` (the file's `servers = [...]`),
    /// built as a snapshot builds it.
    fn built(servers: &str, registry: &Registry) -> Upstream {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            &format!(
                "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                 [[route]]\nupstream = \"test\"\n\
                 [upstream.test]\nservers = {servers}\n"
            ),
        )
        .unwrap()
        .upstreams
        .remove(0);
        let members: Vec<Member> = Member::from_file(&config).collect();
        let metrics = Metrics::new(false);
        let b = Build {
            registry,
            metrics: &metrics,
            routes: Arc::new([]),
            initial: true,
        };
        Upstream::build(Arc::new(config), &members, &b, None)
    }

    #[tokio::test]
    async fn full_primaries_make_requests_wait_rather_than_go_to_backups() {
        let registry = Registry::default();
        let u = built(
            "[{ addr = \"127.0.0.1:1\", max_conns = 1 }, { addr = \"127.0.0.1:2\", max_conns = 2 }, \
             { addr = \"127.0.0.1:3\", backup = true }]",
            &registry,
        );
        assert!(u.capped);
        let ctx = PickCtx::default();
        let mut held = Vec::new();
        // Three slots among the primaries, then none: no backup.
        for _ in 0..3 {
            let (i, s) = u.pick(&ctx).expect("a primary with room");
            assert!(!s.backup);
            held.push(InFlight::claim(&s.state, u.measure).expect("a slot"));
            assert!(i < 2);
        }
        assert_eq!(u.servers[0].state.inflight(), 1);
        assert_eq!(u.servers[1].state.inflight(), 2);
        assert!(u.pick(&ctx).is_none());
        assert_eq!(u.room(&[]), Room::Full);
        assert!(InFlight::claim(&u.servers[0].state, u.measure).is_none());
        // A retry that tried both primaries has the backup's room, as when they are down.
        assert_eq!(u.room(&[0, 1]), Room::Free);
        // A slot frees: room again.
        held.pop();
        assert_eq!(u.room(&[]), Room::Free);
        assert_eq!(u.pick(&ctx).map(|(i, _)| i), Some(1));
        // Primaries down: the backup takes the requests, full or not.
        u.servers[0].state.set_up(false);
        u.servers[1].state.set_up(false);
        assert_eq!(u.pick(&ctx).map(|(i, _)| i), Some(2));
        assert!(u.sticky_server(&u.servers[2].state.sticky_id).is_some());
    }

    #[tokio::test]
    async fn without_caps_nothing_is_full_and_nothing_wakes_the_queue() {
        let registry = Registry::default();
        let u = built("[{ addr = \"127.0.0.1:1\" }]", &registry);
        assert!(!u.capped);
        let guards: Vec<InFlight> = (0..100)
            .map(|_| InFlight::claim(&u.servers[0].state, u.measure).expect("no limit"))
            .collect();
        assert_eq!(u.room(&[]), Room::Free);
        let ticket = u.queue.join(10).expect("a place");
        drop(guards);
        assert_eq!(u.queue.queued(), 1, "uncapped slots do not wake the queue");
        drop(ticket);
    }

    #[tokio::test]
    async fn a_rebuild_keeps_the_queue_and_applies_a_new_cap_to_the_same_state() {
        let registry = Registry::default();
        let a = built("[{ addr = \"127.0.0.1:1\", max_conns = 1 }]", &registry);
        let g = InFlight::claim(&a.servers[0].state, a.measure).unwrap();
        let b = built("[{ addr = \"127.0.0.1:1\", max_conns = 2 }]", &registry);
        assert!(Arc::ptr_eq(&a.queue, &b.queue));
        assert!(Arc::ptr_eq(&a.servers[0].state, &b.servers[0].state));
        assert_eq!(
            b.servers[0].state.inflight(),
            1,
            "in-flight counts carry over"
        );
        let g2 = InFlight::claim(&b.servers[0].state, b.measure).expect("the new cap");
        assert!(InFlight::claim(&b.servers[0].state, b.measure).is_none());
        drop((g, g2));
    }
}
