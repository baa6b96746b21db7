//! NGINX Plus's `least_time`: the lowest time-decayed average response time ×
//! (in-flight + 1) ÷ (L + 1) ÷ weight, L being the in-flight count the average was
//! measured at (`Latency::load_factor`: why not just in-flight + 1). Ties go to
//! weighted round-robin among the tied servers, as in `least_conn`. What is timed
//! (`header` or `last_byte`) is decided by the request's `InFlight` guard.
//!
//! Exact up to `EXACT_SCAN` servers (every server's cost is computed); above, two
//! choices (`two_choices`): the cycle's next turn against a random server.
//!
//! The average decays toward zero while a server gets no samples (read-only, as
//! `ewma` reads its estimate), so a server avoided for being slow is tried again
//! after a few τ and a recovered one regains traffic; without that it would never be
//! sampled again.

use std::time::Duration;

use tokio::time::Instant;

use super::{two_choices, Balancer, Candidate, PickCtx, RoundRobin, EXACT_SCAN};
use crate::clock::stamp;

#[derive(Debug)]
pub struct LeastTime {
    ties: RoundRobin,
    tau_ms: f64,
}

impl LeastTime {
    pub fn new(weights: &[u32], tau: Duration) -> Self {
        Self::with_ties(RoundRobin::new(weights), tau)
    }

    /// Ties broken by `ties`, the tier's weighted round-robin cycle.
    pub fn with_ties(ties: RoundRobin, tau: Duration) -> Self {
        LeastTime {
            ties,
            tau_ms: tau.as_secs_f64() * 1e3,
        }
    }

    /// Expected time a new request would take on `s`, per unit of weight.
    fn cost<S: Candidate>(&self, s: &S, now: u32) -> f64 {
        let l = s.latency();
        l.average_ns_at(now, self.tau_ms) * l.load_factor(s.inflight()) / s.live_weight() as f64
    }

    /// The exact pick: the cheapest usable server, ties by the weighted cycle.
    fn scan<S: Candidate>(&self, servers: &[S], ctx: &PickCtx<'_>, now: u32) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        let mut tied = 0;
        for (i, s) in servers.iter().enumerate() {
            if !ctx.usable(servers, i) {
                continue;
            }
            let c = self.cost(s, now);
            match best {
                Some((_, bc)) if c >= bc => tied += usize::from(c == bc),
                _ => {
                    best = Some((i, c));
                    tied = 1;
                }
            }
        }
        let (b, bc) = best?;
        if tied > 1 {
            for _ in 0..self.ties.cycle_len() {
                let i = self.ties.next()?;
                if ctx.usable(servers, i)
                    && self.cost(&servers[i], now) == bc
                    && servers[i].ramp_admits()
                {
                    return Some(i);
                }
            }
        }
        Some(b)
    }
}

impl<S: Candidate> Balancer<S> for LeastTime {
    /// The cost in seconds: the average × `load_factor` per unit of weight.
    fn load(&self, s: &S) -> f64 {
        self.cost(s, stamp(Instant::now())) * f64::from(1u32 << super::WEIGHT_SCALE) / 1e9
    }

    fn cycle(&self) -> Option<&RoundRobin> {
        Some(&self.ties)
    }

    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
        let now = stamp(Instant::now());
        let sampled = if servers.len() > EXACT_SCAN {
            two_choices(&self.ties, servers, ctx, |b, a| {
                self.cost(&servers[b], now) < self.cost(&servers[a], now)
            })
        } else {
            None
        };
        let chosen = sampled.or_else(|| self.scan(servers, ctx, now))?;
        let s = &servers[chosen];
        s.latency().note_pick(s.inflight());
        Some(chosen)
    }
}
