//! Peak-EWMA with power of two choices, as Finagle and linkerd do it: two distinct
//! random eligible servers, the one with the lower cost = estimate × (pending + 1)
//! wins. The estimate jumps to a slower sample at once and blends faster ones in
//! with weight exp(−Δt/τ) (`upstream::latency`); failures enter as a penalty.
//!
//! Our extension: the cost is divided by the server's weight, so a server of weight
//! 2 is preferred until it is twice as loaded (or twice as slow) as a weight-1 one.
//! With equal weights this is exactly Finagle's rule.

use std::time::Duration;

use tokio::time::Instant;

use super::{Balancer, Candidate, PickCtx};
use crate::rng;

/// Random draws tried before falling back to a scan for eligible servers. With
/// half the servers ineligible, 8 draws all fail with probability 2⁻⁸.
const DRAWS: usize = 8;

#[derive(Debug)]
pub struct PeakEwma {
    tau: Duration,
}

impl PeakEwma {
    pub fn new(tau: Duration) -> Self {
        PeakEwma { tau }
    }

    fn cost<S: Candidate>(&self, s: &S, now: Instant) -> f64 {
        s.latency().peak_ns(now, self.tau) * (s.inflight() as f64 + 1.0) / s.live_weight() as f64
    }
}

/// Two distinct eligible servers drawn uniformly, or the only eligible one.
pub(super) fn eligible_pair<S: Candidate>(
    servers: &[S],
    ctx: &PickCtx<'_>,
) -> Option<(usize, Option<usize>)> {
    let n = servers.len();
    if n >= 2 {
        for _ in 0..DRAWS {
            let (a, b) = rng::distinct_pair(n);
            if ctx.usable(servers, a) && ctx.usable(servers, b) {
                return Some((a, Some(b)));
            }
        }
    }
    // Few eligible servers: take them from a random starting point.
    let start = rng::below(n.max(1));
    let mut found = (0..n)
        .map(|k| (start + k) % n)
        .filter(|&i| ctx.usable(servers, i));
    let a = found.next()?;
    Some((a, found.next()))
}

impl<S: Candidate> Balancer<S> for PeakEwma {
    /// The cost in seconds: the estimate × (in-flight + 1) per unit of weight.
    fn load(&self, s: &S) -> f64 {
        self.cost(s, Instant::now()) * f64::from(1u32 << super::WEIGHT_SCALE) / 1e9
    }

    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
        let (a, b) = eligible_pair(servers, ctx)?;
        let Some(b) = b else { return Some(a) };
        let now = Instant::now();
        // A tie goes to the first drawn, as in tower and linkerd.
        Some(
            if self.cost(&servers[a], now) <= self.cost(&servers[b], now) {
                a
            } else {
                b
            },
        )
    }
}
