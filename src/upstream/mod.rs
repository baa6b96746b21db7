//! Upstream pools. The per-server state (`ServerState`: in-flight count, counters,
//! idle connections) lives outside the swapped configuration, in a `Registry` keyed
//! by server identity, so a reload that keeps a server keeps its state.

mod budget;
mod health;
mod inflight;
mod latency;
mod pool;
mod server;
pub mod transport;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

pub use budget::RetryBudget;
pub use health::{Active, Admission, Event, HealthView, SLOW_START_FLOOR};
pub use inflight::{InFlight, Measure};
pub use latency::{
    average_update, decay_weight, peak_projection, peak_update, stamp, Latency, FAILURE_PENALTY,
};
pub use pool::{set_worker_shard, H2Lease, Pool, PooledConn, Sender, DEFAULT_IDLE_TIMEOUT};
pub use server::{Registry, ServerKey, ServerState};

use crate::balance::{Balancer, PickCtx};
use crate::config::{HashKey, HealthCheckConfig, StickyConfig, UpstreamProtocol};

/// One upstream as the current configuration sees it.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub balance: crate::config::BalanceKind,
    pub metrics: crate::observe::UpstreamMetrics,
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
}

#[derive(Debug)]
pub struct Tier {
    pub range: Range<usize>,
    pub balancer: Box<dyn Balancer>,
}

/// A server of an upstream: its configured weight and its long-lived state.
#[derive(Debug, Clone)]
pub struct UpstreamServer {
    pub weight: u32,
    /// Marked `down` in the configuration: never eligible.
    pub down: bool,
    pub backup: bool,
    pub passive: Passive,
    pub state: Arc<ServerState>,
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

/// Fixed-point scale of `live_weight`, so that a ramped weight keeps precision in
/// the integer cross-multiplications of `least_conn`.
pub(crate) const WEIGHT_SCALE: u32 = 10;

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

    /// The weight the balancers use, in 1/1024ths: the configured weight, lowered
    /// while slow start ramps.
    pub fn live_weight(&self) -> u64 {
        let full = u64::from(self.weight) << WEIGHT_SCALE;
        match self.ramp() {
            r if r >= 1.0 => full,
            r => ((full as f64 * r) as u64).max(1),
        }
    }

    /// For algorithms that walk a fixed sequence or draw by static weight: keeps a
    /// turn of a slow-starting server with probability equal to its ramp.
    pub fn ramp_admits(&self) -> bool {
        match self.ramp() {
            r if r >= 1.0 => true,
            r => crate::balance::rng::unit() < r,
        }
    }
}

impl Upstream {
    /// Chooses a server for a request, or `None` when no server is usable. Returns
    /// the index into `servers` with the server.
    pub fn pick(&self, ctx: &PickCtx<'_>) -> Option<(usize, &UpstreamServer)> {
        self.tiers.iter().find_map(|t| {
            let servers = &self.servers[t.range.clone()];
            let ctx = PickCtx {
                base: t.range.start,
                ..*ctx
            };
            t.balancer
                .pick(servers, &ctx)
                .map(|i| (t.range.start + i, &servers[i]))
        })
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
        (s.eligible() && !(s.backup && primary_up())).then_some((i, s))
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

    /// Requests sent to the upstream's servers so far (attempts, retries included).
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

/// Servers with the given weights and fresh state, for balancer unit tests.
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
            state: registry.server(
                ServerKey {
                    upstream: Arc::from("test"),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 10000 + i as u16)),
                },
                1,
                std::time::Duration::from_millis(30),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(weights: &[u32], percent: u32) -> Upstream {
        let servers = test_servers(weights);
        Upstream {
            name: Arc::from("test"),
            balance: crate::config::BalanceKind::RoundRobin,
            metrics: crate::observe::Metrics::new(false).upstream("test"),
            tiers: Vec::new(),
            servers,
            hash_key: None,
            sticky: None,
            measure: Measure::Nothing,
            health_check: None,
            max_ejected_percent: percent,
            budget: Arc::default(),
            protocol: UpstreamProtocol::Http1,
        }
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
}
