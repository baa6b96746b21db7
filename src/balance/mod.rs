//! Backend selection. One trait, one file per algorithm. A balancer is built for
//! one tier of servers (primaries, or backups) and never mutated by a reload or a
//! membership change; what it compares (in-flight counts, latency estimates,
//! health) is read through `Candidate` from each server's long-lived state, so the
//! state outlives the balancer. Choosing is separate from measuring: this module
//! knows servers only as `Candidate`s and depends on no other part of the proxy.
//! Picks take no lock: round-robin is one atomic increment, the load-aware
//! algorithms read atomics.

mod affine;
mod hash;
pub mod latency;
mod least_conn;
mod least_time;
mod peak_ewma;
mod random;
mod round_robin;

use std::fmt::Debug;
use std::net::SocketAddr;

pub use affine::Affine;
pub use hash::Ketama;
pub use latency::Latency;
pub use least_conn::LeastConn;
pub use least_time::LeastTime;
pub use peak_ewma::PeakEwma;
pub use random::RandomTwo;
pub use round_robin::RoundRobin;

use crate::config::{BalanceKind, UpstreamConfig};

/// Fixed-point scale of `Candidate::live_weight`: weights are in 1/1024ths, so a
/// ramped weight keeps precision in the integer cross-multiplications of
/// `least_conn`.
pub const WEIGHT_SCALE: u32 = 10;

/// Largest tier that `least_conn` and `least_time` scan whole: up to it a pick is
/// exact (the least loaded, or cheapest, usable server wins; ties by weighted
/// round-robin). A scan reads every server's state, one cache line each: about
/// 3 ns a server, so 32 servers stay near 100 ns, and 1 024 cost 3–20 µs. Above
/// it they sample two servers (`two_choices`): no longer exact, but within
/// O(log log n) of the least loaded (Mitzenmacher) at a constant cost.
pub const EXACT_SCAN: usize = 32;

/// Draws tried for a usable candidate before falling back to a scan. With half
/// the servers unusable, 8 draws all fail with probability 2⁻⁸.
const DRAWS: usize = 8;

/// Share of its weight a slow-starting server begins with (nginx Plus and HAProxy
/// start near zero; 10 % lets the first requests warm caches without a stampede).
pub const SLOW_START_FLOOR: f64 = 0.10;

/// A server as the balancers see it: what they compare, read from its live state.
pub trait Candidate {
    /// May it take a request now: not marked down, not drained, up as far as the
    /// health checks know, not resting after passive ejection.
    fn eligible(&self) -> bool;
    /// The static weight: the configured one (or the operator's), 0 for a server
    /// marked `down`.
    fn weight(&self) -> u32;
    /// The share of its weight slow start allows now (1 when not ramping).
    fn ramp(&self) -> f64;
    /// Requests between pick and the end of their response body.
    fn inflight(&self) -> usize;
    /// The latency estimates `ewma` and `least_time` compare.
    fn latency(&self) -> &Latency;
    /// The server's address: its identity on the `hash` ring, so that a server
    /// keeps its points whatever else joins or leaves.
    fn addr(&self) -> SocketAddr;
    /// At its `max_conns`: passed over like an ineligible server, but only while
    /// `PickCtx::capped` says some server of the upstream has a cap.
    fn full(&self) -> bool {
        false
    }

    /// The weight the balancers use, in 1/1024ths (`WEIGHT_SCALE`): the static
    /// weight, lowered while slow start ramps.
    fn live_weight(&self) -> u64 {
        let full = u64::from(self.weight()) << WEIGHT_SCALE;
        match self.ramp() {
            r if r >= 1.0 => full,
            r => ((full as f64 * r) as u64).max(1),
        }
    }

    /// For algorithms that walk a fixed sequence or draw by static weight: keeps a
    /// turn of a slow-starting server with probability equal to its ramp.
    fn ramp_admits(&self) -> bool {
        match self.ramp() {
            r if r >= 1.0 => true,
            r => crate::rng::unit() < r,
        }
    }
}

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
    /// Some server of the upstream has a `max_conns`: full servers are passed
    /// over. Set by `Upstream::pick`; without caps no pick asks a server whether it
    /// is full.
    pub capped: bool,
    /// Place the key by consistent hashing (`Affine`) whatever the upstream's
    /// algorithm: the Telegram mode's chat affinity.
    pub affine: bool,
}

impl PickCtx<'_> {
    pub fn with_key(key: Option<u64>) -> PickCtx<'static> {
        PickCtx {
            key,
            ..PickCtx::default()
        }
    }

    /// Whether `servers[i]` (of the tier) may take this request: eligible, not at
    /// its `max_conns`, and not already tried by it.
    pub fn usable<S: Candidate>(&self, servers: &[S], i: usize) -> bool {
        servers[i].eligible() && !(self.capped && servers[i].full()) && !self.skipped(i)
    }

    /// Whether this request tried `servers[i]` (of the tier) already.
    pub fn skipped(&self, i: usize) -> bool {
        !self.skip.is_empty() && self.skip.contains(&(self.base + i))
    }
}

/// Chooses a server of a tier for one request.
pub trait Balancer<S: Candidate>: Send + Sync + Debug {
    /// Index into `servers` of the chosen server, or `None` when none is usable
    /// (`PickCtx::usable`). `servers` is the slice the balancer was built for.
    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize>;

    /// What this algorithm compares for `s`, for metrics and the status page (lower
    /// is preferred). By default in-flight requests per unit of weight.
    fn load(&self, s: &S) -> f64 {
        s.inflight() as f64 / weight_units(s)
    }

    /// The weighted round-robin cycle the balancer walks, if it walks one (for
    /// itself or to break ties), so that a rebuilt balancer can carry on from the
    /// same place.
    fn cycle(&self) -> Option<&RoundRobin> {
        None
    }
}

/// A server's live weight in units of its configured weight (slow start lowers it).
pub fn weight_units<S: Candidate>(s: &S) -> f64 {
    s.live_weight() as f64 / f64::from(1u32 << WEIGHT_SCALE)
}

/// The static weights of a tier, in order.
fn weights<S: Candidate>(servers: &[S]) -> Vec<u32> {
    servers.iter().map(Candidate::weight).collect()
}

/// Builds the balancer `config` asks for over one tier of its servers. The cycle
/// it walks (`Balancer::cycle`) starts at the beginning; a rebuild moves it with
/// `RoundRobin::resume_after`.
pub fn build<S: Candidate + 'static>(
    config: &UpstreamConfig,
    servers: &[S],
) -> Box<dyn Balancer<S>> {
    let weights = weights(servers);
    let cycle = || RoundRobin::new(&weights);
    match config.balance {
        BalanceKind::RoundRobin => Box::new(cycle()),
        BalanceKind::LeastConn => Box::new(LeastConn::with_ties(cycle())),
        BalanceKind::LeastTime => Box::new(LeastTime::with_ties(cycle(), config.ewma_decay)),
        BalanceKind::Ewma => Box::new(PeakEwma::new(config.ewma_decay)),
        BalanceKind::Hash => Box::new(Ketama::with_fallback(
            servers,
            &weights,
            config.hash_balance_factor,
            cycle(),
        )),
        BalanceKind::Random => Box::new(RandomTwo::new(&weights)),
    }
}

/// Whether `a`'s in-flight count per unit of weight is below `b`'s, compared by
/// cross-multiplication (no division, exact).
fn less_loaded<S: Candidate>(a: &S, b: &S) -> bool {
    (a.inflight() as u64) * b.live_weight() < (b.inflight() as u64) * a.live_weight()
}

/// Power of two choices for tiers above `EXACT_SCAN`: the first candidate is the
/// next usable turn of the weighted cycle `cycle` (so an idle pool is served in
/// weighted round-robin order, as the exact scan's ties are, and a slow-starting
/// server keeps a turn with probability equal to its ramp), the second a uniformly
/// drawn usable server; the second wins only if `better(second, first)`. `None`
/// when the draws found no usable first candidate: the caller scans.
fn two_choices<S: Candidate>(
    cycle: &RoundRobin,
    servers: &[S],
    ctx: &PickCtx<'_>,
    better: impl Fn(usize, usize) -> bool,
) -> Option<usize> {
    let usable = |i: usize| i < servers.len() && ctx.usable(servers, i);
    let a = (0..DRAWS)
        .filter_map(|_| cycle.next())
        .find(|&i| usable(i) && servers[i].ramp_admits())?;
    let b = (0..DRAWS)
        .map(|_| crate::rng::below(servers.len()))
        .find(|&i| i != a && usable(i));
    Some(match b {
        Some(b) if better(b, a) => b,
        _ => a,
    })
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

/// Servers for the balancers' unit tests: plain values standing in for live state.
#[cfg(test)]
pub(crate) mod fake {
    use std::cell::Cell;
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Candidate, Latency};

    #[derive(Debug)]
    pub(crate) struct Server {
        pub(crate) weight: u32,
        pub(crate) eligible: bool,
        pub(crate) inflight: Cell<usize>,
        pub(crate) latency: Latency,
        pub(crate) addr: SocketAddr,
        /// Slow start: its length, and when it began.
        pub(crate) ramp: Option<(Duration, Instant)>,
        /// At its `max_conns`.
        pub(crate) full: bool,
    }

    impl Candidate for Server {
        fn eligible(&self) -> bool {
            self.eligible
        }
        fn weight(&self) -> u32 {
            self.weight
        }
        fn ramp(&self) -> f64 {
            match self.ramp {
                None => 1.0,
                Some((len, start)) => {
                    let r = start.elapsed().as_secs_f64() / len.as_secs_f64();
                    let floor = super::SLOW_START_FLOOR;
                    if r >= 1.0 {
                        1.0
                    } else {
                        floor + (1.0 - floor) * r
                    }
                }
            }
        }
        fn inflight(&self) -> usize {
            self.inflight.get()
        }
        fn latency(&self) -> &Latency {
            &self.latency
        }
        fn addr(&self) -> SocketAddr {
            self.addr
        }
        fn full(&self) -> bool {
            self.full
        }
    }

    /// Eligible servers with the given weights, addresses 127.0.0.1:10000 onwards.
    pub(crate) fn servers(weights: &[u32]) -> Vec<Server> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Server {
                weight,
                eligible: true,
                inflight: Cell::new(0),
                latency: Latency::new(Duration::from_millis(30)),
                addr: SocketAddr::from(([127, 0, 0, 1], 10000 + i as u16)),
                ramp: None,
                full: false,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::fake::{self, Server};
    use super::*;

    /// Share of picks that go to server 1 of two equal servers while server 1 ramps.
    fn ramped_share(b: &dyn Balancer<Server>, servers: &[Server]) -> f64 {
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| b.pick(servers, &PickCtx::default()) == Some(1))
            .count();
        hits as f64 / n as f64
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_the_share_of_a_recovered_server() {
        let ramp = Duration::from_secs(10);
        let mut servers = fake::servers(&[1, 1]);
        servers[1].ramp = Some((ramp, tokio::time::Instant::now()));
        let idle: [(&str, Box<dyn Balancer<Server>>); 3] = [
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
        let servers = fake::servers(&[1, 1, 1]);
        let algos: [Box<dyn Balancer<Server>>; 4] = [
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

    #[test]
    fn full_servers_are_passed_over_when_the_upstream_has_caps() {
        let weights = [1, 1, 1];
        let mut servers = fake::servers(&weights);
        servers[0].full = true;
        servers[2].full = true;
        let algos: [Box<dyn Balancer<Server>>; 6] = [
            Box::new(RoundRobin::new(&weights)),
            Box::new(LeastConn::new(&weights)),
            Box::new(LeastTime::new(&weights, Duration::from_secs(10))),
            Box::new(RandomTwo::new(&weights)),
            Box::new(PeakEwma::new(Duration::from_secs(10))),
            Box::new(Ketama::new(&servers, &weights, None)),
        ];
        let capped = |key| PickCtx {
            key,
            capped: true,
            ..PickCtx::default()
        };
        for b in &algos {
            for k in 0..100u64 {
                let key = Some(hash_bytes(&k.to_le_bytes()));
                assert_eq!(b.pick(&servers, &capped(key)), Some(1), "{b:?}");
            }
            // Without caps in the upstream, nobody asks.
            let picked: std::collections::HashSet<_> = (0..100u64)
                .filter_map(|k| {
                    b.pick(
                        &servers,
                        &PickCtx::with_key(Some(hash_bytes(&k.to_le_bytes()))),
                    )
                })
                .collect();
            assert!(picked.len() > 1, "{b:?}: {picked:?}");
        }
        servers[1].full = true;
        for b in &algos {
            assert_eq!(b.pick(&servers, &capped(Some(7))), None, "{b:?}");
        }
    }

    /// Above `EXACT_SCAN` servers `least_conn` and `least_time` sample two: an idle
    /// pool still follows the weighted cycle, and a loaded server wins only when
    /// both candidates are loaded (about a quarter of the picks with every other
    /// server loaded, where the exact scan would give it none).
    #[test]
    fn above_the_exact_scan_two_choices_replace_the_scan() {
        let n = EXACT_SCAN * 4;
        let weights = vec![1; n];
        let servers = fake::servers(&weights);
        let algos: [Box<dyn Balancer<Server>>; 2] = [
            Box::new(LeastConn::new(&weights)),
            Box::new(LeastTime::new(&weights, Duration::from_secs(10))),
        ];
        for b in &algos {
            for i in 0..n {
                assert_eq!(b.pick(&servers, &PickCtx::default()), Some(i), "{b:?}");
            }
        }
        for s in servers.iter().step_by(2) {
            s.inflight.set(5);
        }
        for b in &algos {
            let picks = 20_000;
            let loaded = (0..picks)
                .filter(|_| b.pick(&servers, &PickCtx::default()).unwrap() % 2 == 0)
                .count();
            let share = loaded as f64 / picks as f64;
            assert!((0.2..0.3).contains(&share), "{b:?}: {share}");
        }
        // Below it, exact: the loaded servers get nothing.
        let few = fake::servers(&[1; EXACT_SCAN]);
        for s in few.iter().step_by(2) {
            s.inflight.set(5);
        }
        let exact = LeastConn::new(&[1; EXACT_SCAN]);
        for _ in 0..1000 {
            assert_eq!(exact.pick(&few, &PickCtx::default()).unwrap() % 2, 1);
        }
    }
}
