//! Backend selection. One trait, one file per algorithm. A balancer is built from a
//! configuration snapshot for one tier of servers (primaries, or backups) and never
//! mutated by a reload; what it compares (in-flight counts, latency estimates,
//! health) lives in each server's long-lived `ServerState`, so reloads keep it.
//! Picks take no lock: round-robin is one atomic increment, the load-aware
//! algorithms read atomics.

mod hash;
mod least_conn;
mod least_time;
mod peak_ewma;
mod random;
pub mod rng;
mod round_robin;

use std::fmt::Debug;

pub use hash::Ketama;
pub use least_conn::LeastConn;
pub use least_time::LeastTime;
pub use peak_ewma::PeakEwma;
pub use random::RandomTwo;
pub use round_robin::RoundRobin;

use crate::config::{BalanceKind, UpstreamConfig};
use crate::upstream::UpstreamServer;

/// What a pick may depend on besides the servers' state.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickCtx<'a> {
    /// Hash of the request's key, for `hash`; `None` when the key is missing.
    pub key: Option<u64>,
    /// Servers this request already tried (indices into the upstream's `servers`):
    /// a retry goes elsewhere.
    pub skip: &'a [usize],
    /// Index in the upstream's `servers` of the tier's first server; set by
    /// `Upstream::pick` for each tier.
    pub base: usize,
}

impl PickCtx<'_> {
    pub fn with_key(key: Option<u64>) -> PickCtx<'static> {
        PickCtx {
            key,
            ..PickCtx::default()
        }
    }

    /// Whether `servers[i]` (of the tier) may take this request: eligible, and not
    /// already tried by it.
    pub fn usable(&self, servers: &[UpstreamServer], i: usize) -> bool {
        servers[i].eligible() && (self.skip.is_empty() || !self.skip.contains(&(self.base + i)))
    }
}

/// Chooses a server of a tier for one request.
pub trait Balancer: Send + Sync + Debug {
    /// Index into `servers` of the chosen server, or `None` when none is usable
    /// (`PickCtx::usable`). `servers` is the slice the balancer was built for.
    /// Weights are `UpstreamServer::live_weight`, which slow start lowers.
    fn pick(&self, servers: &[UpstreamServer], ctx: &PickCtx<'_>) -> Option<usize>;

    /// What this algorithm compares for `s`, for metrics and the status page (lower
    /// is preferred). By default in-flight requests per unit of weight.
    fn load(&self, s: &UpstreamServer) -> f64 {
        s.state.inflight() as f64 / weight_units(s)
    }
}

/// A server's live weight in units of its configured weight (slow start lowers it).
pub(crate) fn weight_units(s: &UpstreamServer) -> f64 {
    s.live_weight() as f64 / f64::from(1u32 << crate::upstream::WEIGHT_SCALE)
}

/// Static weights with servers marked `down` at zero, so they never enter a cycle.
fn effective_weights(servers: &[UpstreamServer]) -> Vec<u32> {
    servers
        .iter()
        .map(|s| if s.down { 0 } else { s.weight })
        .collect()
}

/// Builds the balancer `config` asks for, over one tier of its servers.
pub fn build(config: &UpstreamConfig, servers: &[UpstreamServer]) -> Box<dyn Balancer> {
    let weights = effective_weights(servers);
    match config.balance {
        BalanceKind::RoundRobin => Box::new(RoundRobin::new(&weights)),
        BalanceKind::LeastConn => Box::new(LeastConn::new(&weights)),
        BalanceKind::LeastTime => Box::new(LeastTime::new(&weights, config.ewma_decay)),
        BalanceKind::Ewma => Box::new(PeakEwma::new(config.ewma_decay)),
        BalanceKind::Hash => Box::new(Ketama::new(servers, &weights, config.hash_balance_factor)),
        BalanceKind::Random => Box::new(RandomTwo::new(&weights)),
    }
}

/// Whether `a`'s in-flight count per unit of weight is below `b`'s, compared by
/// cross-multiplication (no division, exact).
fn less_loaded(a: &UpstreamServer, b: &UpstreamServer) -> bool {
    (a.state.inflight() as u64) * b.live_weight() < (b.state.inflight() as u64) * a.live_weight()
}

/// FNV-1a over `bytes`, then a SplitMix64 finaliser so nearby inputs spread over
/// the whole ring. Stable across versions and platforms, unlike `std`'s hasher, so
/// hash placement survives upgrades.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::test_servers;

    /// Share of picks that go to server 1 of two equal servers while server 1 ramps.
    fn ramped_share(b: &dyn Balancer, servers: &[UpstreamServer]) -> f64 {
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| b.pick(servers, &PickCtx::default()) == Some(1))
            .count();
        hits as f64 / n as f64
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_the_share_of_a_recovered_server() {
        let ramp = Duration::from_secs(10);
        let mut servers = test_servers(&[1, 1]);
        servers[1].passive.slow_start = ramp;
        servers[1].state.start_ramp(ramp);
        let idle: [(&str, Box<dyn Balancer>); 3] = [
            ("round_robin", Box::new(RoundRobin::new(&[1, 1]))),
            ("least_conn", Box::new(LeastConn::new(&[1, 1]))),
            ("random", Box::new(RandomTwo::new(&[1, 1]))),
        ];
        // Live weight 0.1 against 1 at first: about 1/11 of the picks.
        for (name, b) in &idle {
            let share = ramped_share(b.as_ref(), &servers);
            assert!((share - 0.1 / 1.1).abs() < 0.02, "{name}: {share}");
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for (name, b) in &idle {
            let share = ramped_share(b.as_ref(), &servers);
            assert!((share - 0.55 / 1.55).abs() < 0.03, "{name}: {share}");
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for (name, b) in &idle {
            let share = ramped_share(b.as_ref(), &servers);
            assert!((share - 0.5).abs() < 0.03, "{name}: {share}");
        }
    }

    #[test]
    fn skipped_servers_are_not_picked() {
        let servers = test_servers(&[1, 1, 1]);
        let algos: [Box<dyn Balancer>; 4] = [
            Box::new(RoundRobin::new(&[1, 1, 1])),
            Box::new(LeastConn::new(&[1, 1, 1])),
            Box::new(RandomTwo::new(&[1, 1, 1])),
            Box::new(PeakEwma::new(Duration::from_secs(10))),
        ];
        for b in &algos {
            for _ in 0..100 {
                let ctx = PickCtx {
                    skip: &[0, 2],
                    ..PickCtx::default()
                };
                assert_eq!(b.pick(&servers, &ctx), Some(1), "{b:?}");
            }
            let ctx = PickCtx {
                skip: &[0, 1, 2],
                ..PickCtx::default()
            };
            assert_eq!(b.pick(&servers, &ctx), None, "{b:?}");
        }
    }
}
