//! Consistent hashing on a ketama ring, with HAProxy's bounded load.
//!
//! Why ketama rather than Maglev or rendezvous: a lookup is a binary search
//! (O(log points), no per-server work, unlike rendezvous' O(n)); removing a server
//! moves exactly its own keys (Maglev moves a few others too); weight is simply the
//! number of points; and bounded load is a walk clockwise to the next server with
//! room, which is how HAProxy's `hash-balance-factor` works. nginx's `hash …
//! consistent` is ketama as well, so operators know its behaviour.
//!
//! A request without a key (no such header, cookie…) falls back to round-robin.

use super::{Balancer, Candidate, PickCtx, RoundRobin};

/// Ring points per unit of weight: nginx's 160. Enough that each server's share of
/// the key space is within a few percent of its weight's.
const POINTS_PER_WEIGHT: u64 = 160;
/// Cap on ring points, so huge pools with large weights keep a ring of a few MiB;
/// points per weight shrink to fit.
const MAX_POINTS: u64 = 1 << 20;

#[derive(Debug)]
pub struct Ketama {
    /// (point, server index), sorted by point.
    ring: Box<[(u32, u32)]>,
    /// `hash_balance_factor`.
    factor: Option<f64>,
    fallback: RoundRobin,
}

impl Ketama {
    pub fn new<S: Candidate>(servers: &[S], weights: &[u32], factor: Option<f64>) -> Self {
        Self::with_fallback(servers, weights, factor, RoundRobin::new(weights))
    }

    /// As `new`, with `fallback` (the tier's weighted round-robin cycle) for
    /// requests without a key.
    pub fn with_fallback<S: Candidate>(
        servers: &[S],
        weights: &[u32],
        factor: Option<f64>,
        fallback: RoundRobin,
    ) -> Self {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let per_weight = POINTS_PER_WEIGHT.min(MAX_POINTS / total.max(1)).max(1);
        let mut ring = Vec::with_capacity((total * per_weight) as usize);
        for (i, (s, &w)) in servers.iter().zip(weights).enumerate() {
            // Points derive from the server's identity, not its position, so adding
            // or removing another server leaves them where they were.
            let id = s.addr().to_string();
            for p in 0..u64::from(w) * per_weight {
                let h = super::hash_bytes(format!("{id}-{p}").as_bytes());
                ring.push(((h >> 32) as u32, i as u32));
            }
        }
        ring.sort_unstable();
        Ketama {
            ring: ring.into(),
            factor,
            fallback,
        }
    }
}

/// Bound applied to a slow-starting server when the upstream sets no
/// `hash_balance_factor`: its keys stay where they are, and it takes up to its
/// ramped share of HAProxy's usual 1.25 × the mean load, the rest spilling to the
/// next servers on the ring.
const RAMP_BALANCE_FACTOR: f64 = 1.25;

/// In-flight requests of the usable servers, with this one counted, per unit of
/// live weight: server `s` may hold at most ⌈factor × this × weight(s)⌉ before the
/// walk passes it (Mirrokni et al.'s bound, HAProxy's `hash-balance-factor`).
fn load_per_weight<S: Candidate>(servers: &[S], ctx: &PickCtx<'_>) -> f64 {
    let (mut load, mut weight) = (0usize, 0u64);
    for (i, x) in servers.iter().enumerate() {
        if ctx.usable(servers, i) {
            load += x.inflight();
            weight += x.live_weight();
        }
    }
    (load + 1) as f64 / weight.max(1) as f64
}

impl<S: Candidate> Balancer<S> for Ketama {
    fn cycle(&self) -> Option<&RoundRobin> {
        Some(&self.fallback)
    }

    fn pick(&self, servers: &[S], ctx: &PickCtx<'_>) -> Option<usize> {
        let Some(key) = ctx.key else {
            return self.fallback.pick(servers, ctx);
        };
        if self.ring.is_empty() {
            return None;
        }
        let point = (key >> 32) as u32;
        let start = self.ring.partition_point(|&(p, _)| p < point);
        let mut per_weight = None;
        let mut first_usable = None;
        for k in 0..self.ring.len() {
            let i = self.ring[(start + k) % self.ring.len()].1 as usize;
            if !ctx.usable(servers, i) {
                continue;
            }
            let s = &servers[i];
            // Slow start keeps key placement and bounds the load instead.
            let factor = match self.factor {
                Some(f) => f,
                None if s.ramp() < 1.0 => RAMP_BALANCE_FACTOR,
                None => return Some(i),
            };
            let pw = *per_weight.get_or_insert_with(|| load_per_weight(servers, ctx));
            let capacity = (factor * pw * s.live_weight() as f64).ceil() as usize;
            if s.inflight() < capacity {
                return Some(i);
            }
            first_usable.get_or_insert(i);
        }
        // Every usable server is at capacity (possible only transiently, as
        // in-flight counts move under the walk): keep the key's own server.
        first_usable
    }
}
