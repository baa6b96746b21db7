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
//!
//! A lookup does not search the whole ring: a table indexed by a key's top bits
//! gives the run of points that share them (a few), searched alone, so a pick at
//! 1 024 servers (300 000 points) touches two cache lines instead of ~19.
//! Bounded load compares a server with the mean load per weight: exact (every
//! server read) up to `EXACT_SCAN` servers; above, estimated from `EXACT_SCAN`
//! servers spread over the tier, so a server may pass the bound by that
//! estimate's error.

use super::{Balancer, Candidate, PickCtx, RoundRobin, EXACT_SCAN};

/// Ring points per unit of weight: nginx's 160. Enough that each server's share of
/// the key space is within a few percent of its weight's.
const POINTS_PER_WEIGHT: u64 = 160;
/// Cap on ring points, so huge pools with large weights keep a ring of a few MiB;
/// points per weight shrink to fit.
const MAX_POINTS: u64 = 1 << 20;
/// Ring points per bucket of the lookup table, on average: the table has the
/// power of two nearest ring points ÷ 4 entries (4 bytes each, a quarter of the
/// ring's size), and a lookup searches about 4 points.
const POINTS_PER_BUCKET: usize = 4;

#[derive(Debug)]
pub struct Ketama {
    /// (point, server index), sorted by point.
    ring: Box<[(u32, u32)]>,
    /// `buckets[b]`: the first ring position whose point's top `bits` bits are
    /// ≥ b; one more entry than buckets, holding the ring's length.
    buckets: Box<[u32]>,
    /// Key bits that index `buckets`.
    bits: u32,
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
        let bits = (ring.len() / POINTS_PER_BUCKET)
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .min(24);
        let buckets = (0..=1u64 << bits)
            .map(|b| {
                let first = (b << (32 - bits)).min(1 << 32);
                ring.partition_point(|&(p, _)| u64::from(p) < first) as u32
            })
            .collect();
        Ketama {
            ring: ring.into(),
            buckets,
            bits,
            factor,
            fallback,
        }
    }

    /// The ring position of the first point at or after `point` (the ring's
    /// length when there is none).
    fn first_at(&self, point: u32) -> usize {
        let b = (u64::from(point) >> (32 - self.bits)) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        lo + self.ring[lo..hi].partition_point(|&(p, _)| p < point)
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
/// Above `EXACT_SCAN` servers, estimated from `EXACT_SCAN` of them evenly spaced
/// from a random start, so that a pick costs the same at any size.
fn load_per_weight<S: Candidate>(servers: &[S], ctx: &PickCtx<'_>) -> f64 {
    let (mut load, mut weight) = (0usize, 0u64);
    let mut add = |i: usize| {
        if ctx.usable(servers, i) {
            load += servers[i].inflight();
            weight += servers[i].live_weight();
        }
    };
    let n = servers.len();
    if n <= EXACT_SCAN {
        (0..n).for_each(&mut add);
        return (load + 1) as f64 / weight.max(1) as f64;
    }
    let start = crate::rng::below(n);
    (0..EXACT_SCAN).for_each(|k| add((start + k * n / EXACT_SCAN) % n));
    // Scaled to the whole tier: the sample's share is EXACT_SCAN of n servers.
    let scale = n as f64 / EXACT_SCAN as f64;
    (load as f64 * scale + 1.0) / (weight as f64 * scale).max(1.0)
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
        let start = self.first_at(point);
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

#[cfg(test)]
mod tests {
    use super::super::{fake, hash_bytes};
    use super::*;

    /// The bucket table finds the same ring position as a search of the whole
    /// ring, for small and large rings, at the ends of the key space too.
    #[test]
    fn bucket_lookup_matches_a_full_search() {
        for n in [1, 3, 40, 700] {
            let weights: Vec<u32> = (0..n).map(|i| 1 + i % 3).collect();
            let servers = fake::servers(&weights);
            let k = Ketama::new(&servers, &weights, None);
            let mut points: Vec<u32> = vec![0, 1, u32::MAX - 1, u32::MAX];
            points.extend((0..5000u64).map(|i| (hash_bytes(&i.to_le_bytes()) >> 32) as u32));
            points.extend(k.ring.iter().take(100).map(|&(p, _)| p));
            for p in points {
                let want = k.ring.partition_point(|&(q, _)| q < p);
                assert_eq!(k.first_at(p), want, "{n} servers, point {p}");
            }
        }
    }
}
