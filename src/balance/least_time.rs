//! NGINX Plus's `least_time`: the lowest time-decayed average response time ×
//! (in-flight + 1) ÷ weight. Ties go round-robin. What is timed (`header` or
//! `last_byte`) is decided by the request's `InFlight` guard.
//!
//! The average decays toward zero while a server gets no samples (read-only, as
//! `ewma` reads its estimate), so a server avoided for being slow is tried again
//! after a few τ and a recovered one regains traffic; without that it would never be
//! sampled again. A server sampled within the last τ/64 is read as stored, so a scan
//! over busy servers costs no exponentials.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Balancer, PickCtx};
use crate::upstream::UpstreamServer;

#[derive(Debug)]
pub struct LeastTime {
    cursor: AtomicUsize,
    tau: Duration,
}

impl LeastTime {
    pub fn new(tau: Duration) -> Self {
        LeastTime {
            cursor: AtomicUsize::new(0),
            tau,
        }
    }

    /// Expected time a new request would take on `s`, per unit of weight.
    fn cost(&self, s: &UpstreamServer, now: Instant) -> f64 {
        s.state.latency.average_ns_at(now, self.tau) * (s.state.inflight() as f64 + 1.0)
            / f64::from(s.weight.max(1))
    }
}

impl Balancer for LeastTime {
    fn pick(&self, servers: &[UpstreamServer], _: &PickCtx) -> Option<usize> {
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let now = Instant::now();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !servers[i].eligible() {
                continue;
            }
            let c = self.cost(&servers[i], now);
            if best.is_none_or(|(_, bc)| c < bc) {
                best = Some((i, c));
            }
        }
        best.map(|(i, _)| i)
    }
}
