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
pub struct PickCtx {
    /// Hash of the request's key, for `hash`; `None` when the key is missing.
    pub key: Option<u64>,
}

/// Chooses a server of a tier for one request.
pub trait Balancer: Send + Sync + Debug {
    /// Index into `servers` of the chosen server, or `None` when none is eligible.
    /// `servers` is the slice the balancer was built for.
    fn pick(&self, servers: &[UpstreamServer], ctx: &PickCtx) -> Option<usize>;
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
    (a.state.inflight() as u64) * u64::from(b.weight)
        < (b.state.inflight() as u64) * u64::from(a.weight)
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
