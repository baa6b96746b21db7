//! Peak-EWMA with power of two choices, as Finagle and linkerd do it: two distinct
//! random eligible servers, the one with the lower cost wins. The estimate jumps to
//! a slower sample at once and blends faster ones in with weight exp(−Δt/τ)
//! (`balance::latency`); failures enter as a penalty.
//!
//! Our extensions:
//! - the cost is estimate × (pending + 1) ÷ (L + 1), L being the in-flight count
//!   the estimate was measured at (`Latency::load_factor`), where Finagle's is
//!   estimate × (pending + 1). Finagle's makes a fast server that serves requests
//!   in parallel look dearer, at its usual concurrency, than an idle server ten
//!   times slower, which then gets a steady share of the traffic. With L = 0 (no
//!   samples yet, or a server that answers one request at a time) the two agree.
//! - the cost is divided by the server's weight, so a server of weight 2 is
//!   preferred until it is twice as loaded (or twice as slow) as a weight-1 one.

use std::time::Duration;

use tokio::time::Instant;

use super::{Balancer, Candidate, PickCtx, DRAWS};
use crate::rng;

#[derive(Debug)]
pub struct PeakEwma {
    tau: Duration,
}

impl PeakEwma {
    pub fn new(tau: Duration) -> Self {
        PeakEwma { tau }
    }

    fn cost<S: Candidate>(&self, s: &S, now: Instant) -> f64 {
        let l = s.latency();
        l.peak_ns(now, self.tau) * l.load_factor(s.inflight()) / s.live_weight() as f64
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
    /// The cost in seconds: the estimate × `load_factor` per unit of weight.
    fn load(&self, s: &S) -> f64 {
        self.cost(s, Instant::now()) * f64::from(1u32 << super::WEIGHT_SCALE) / 1e9
    }

    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
        let (a, b) = eligible_pair(servers, ctx)?;
        let chosen = match b {
            None => a,
            Some(b) => {
                let now = Instant::now();
                // A tie goes to the first drawn, as in tower and linkerd.
                if self.cost(&servers[a], now) <= self.cost(&servers[b], now) {
                    a
                } else {
                    b
                }
            }
        };
        let s = &servers[chosen];
        s.latency().note_pick(s.inflight());
        Some(chosen)
    }
}
