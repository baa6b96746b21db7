//! Per-server latency estimates, updated without a lock: each is an `f32` of
//! nanoseconds and a `u32` millisecond stamp packed into one `AtomicU64`, replaced by
//! compare-and-swap. The math is in pure functions taking the elapsed time, so it can
//! be checked against a worked trace.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::stamp;

/// What a failed exchange (connect error, 5xx) counts as: linkerd's penalty base
/// (linkerd2-proxy PR #4537). A backend that fails fast must not look fast; the
/// penalty enters as a peak, so it dominates at once and then fades with τ.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(5);

/// Weight of one sample in `Latency::load_ewma`, the in-flight count at which
/// recent samples were taken: about the last 8 samples count, so it follows a
/// server whose load changes within a few round trips. Per sample rather than per
/// unit of time, so it moves only as requests complete: a server that completes
/// nothing (hung, black-holing) keeps its old figure, and its growing in-flight
/// count prices it out as in Finagle's cost.
pub const LOAD_WEIGHT: f64 = 1.0 / 8.0;

/// Weight of the old estimate after `dt`: exp(−dt/τ). Samples arrive unevenly, so
/// the weight depends on elapsed time, not on the number of samples (Finagle).
pub fn decay_weight(dt: Duration, tau: Duration) -> f64 {
    (-dt.as_secs_f64() / tau.as_secs_f64().max(1e-9)).exp()
}

/// Peak-EWMA update (Finagle, tower): a sample above the estimate's projection
/// replaces it at once; a lower one blends in with weight exp(−dt/τ).
pub fn peak_update(stored: f64, dt: Duration, sample: f64, tau: Duration) -> f64 {
    let w = decay_weight(dt, tau);
    if sample > stored * w {
        sample
    } else {
        stored * w + sample * (1.0 - w)
    }
}

/// The peak estimate as seen `dt` after its last update: it decays toward zero while
/// the server gets no samples, so an idle server is tried again (tower's read, but
/// without storing it: reads do not mutate).
pub fn peak_projection(stored: f64, dt: Duration, tau: Duration) -> f64 {
    stored * decay_weight(dt, tau)
}

/// Plain time-decayed average (`least_time`): every sample blends in.
pub fn average_update(stored: f64, dt: Duration, sample: f64, tau: Duration) -> f64 {
    let w = decay_weight(dt, tau);
    stored * w + sample * (1.0 - w)
}

/// Milliseconds from stamp `then` to stamp `now`. A stamp from the "future" is a
/// sample that raced a newer one: no time passed.
fn since(now: u32, then: u32) -> u32 {
    let d = now.wrapping_sub(then);
    if d > u32::MAX / 2 {
        0
    } else {
        d
    }
}

/// Time from a packed word's stamp to stamp `now`.
fn elapsed(now: u32, word: u64) -> Duration {
    Duration::from_millis(u64::from(since(now, word as u32)))
}

/// The two estimates of one server, and the load they were measured at.
#[derive(Debug)]
pub struct Latency {
    peak: AtomicU64,
    average: AtomicU64,
    /// The in-flight count the last pick of this server saw (before its own
    /// request): what the next sample was most likely measured at.
    seen: AtomicU32,
    /// `f32` bits: the time-independent average of `seen` over recent samples
    /// (`LOAD_WEIGHT`).
    load: AtomicU32,
}

impl Latency {
    pub fn new(seed: Duration) -> Self {
        let word = pack(seed.as_nanos() as f64, stamp(Instant::now()));
        Latency {
            peak: AtomicU64::new(word),
            average: AtomicU64::new(word),
            seen: AtomicU32::new(0),
            load: AtomicU32::new(0f32.to_bits()),
        }
    }

    /// The balancer picked this server while it had `inflight` requests.
    pub fn note_pick(&self, inflight: usize) {
        let n = u32::try_from(inflight).unwrap_or(u32::MAX);
        // Skip the store when it would not change anything: a busy server's count
        // rarely moves between picks, and a store dirties the line for every core.
        if self.seen.load(Ordering::Relaxed) != n {
            self.seen.store(n, Ordering::Relaxed);
        }
    }

    /// The in-flight count recent samples were measured at (`LOAD_WEIGHT`).
    pub fn load_ewma(&self) -> f64 {
        f64::from(f32::from_bits(self.load.load(Ordering::Relaxed)))
    }

    /// How much more than its estimate a new request should take on this server
    /// with `inflight` requests already there: (in-flight + 1) ÷ (the load the
    /// estimate was measured at + 1). Finagle's factor is (in-flight + 1), which
    /// prices a server at its usual concurrency as if each request waited for all
    /// the others: a busy fast server that serves requests in parallel then looks
    /// dearer than an idle one ten times slower. An estimate measured at load L
    /// already contains whatever queueing L causes, so only load beyond L adds to
    /// it (and an origin that does queue is still priced right: its estimate grows
    /// with L, so the cost grows with in-flight).
    pub fn load_factor(&self, inflight: usize) -> f64 {
        (inflight as f64 + 1.0) / (self.load_ewma() + 1.0)
    }

    /// A sample arrived: the load it was measured at joins `load`. Load and store,
    /// not a compare-and-swap: two racing samples lose one update, which the next
    /// ones make up for.
    fn learn_load(&self) {
        let seen = f64::from(self.seen.load(Ordering::Relaxed));
        let old = self.load_ewma();
        let next = old + (seen - old) * LOAD_WEIGHT;
        self.load.store((next as f32).to_bits(), Ordering::Relaxed);
    }

    fn update(&self, cell: &AtomicU64, now: Instant, f: impl Fn(f64, Duration) -> f64) {
        let now = stamp(now);
        let mut cur = cell.load(Ordering::Relaxed);
        loop {
            let next = pack(f(value(cur), elapsed(now, cur)), now);
            match cell.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Records a sample in the peak estimate.
    pub fn observe_peak(&self, now: Instant, sample: Duration, tau: Duration) {
        let s = sample.as_nanos() as f64;
        self.update(&self.peak, now, |v, dt| peak_update(v, dt, s, tau));
        self.learn_load();
    }

    /// Records a sample in the average.
    pub fn observe_average(&self, now: Instant, sample: Duration, tau: Duration) {
        let s = sample.as_nanos() as f64;
        self.update(&self.average, now, |v, dt| average_update(v, dt, s, tau));
        self.learn_load();
    }

    /// The peak estimate at `now`, in nanoseconds (decayed, not stored).
    pub fn peak_ns(&self, now: Instant, tau: Duration) -> f64 {
        let w = self.peak.load(Ordering::Relaxed);
        peak_projection(value(w), elapsed(stamp(now), w), tau)
    }

    /// The time-decayed average as stored, in nanoseconds.
    pub fn average_ns(&self) -> f64 {
        value(self.average.load(Ordering::Relaxed))
    }

    /// The average at stamp `now` (see `stamp`), τ in milliseconds: decayed toward
    /// zero by the time since its last sample (not stored). Within τ/64 of a sample
    /// the decay is under 2 % and skipped, so busy servers cost no exponential.
    pub fn average_ns_at(&self, now: u32, tau_ms: f64) -> f64 {
        let w = self.average.load(Ordering::Relaxed);
        let dt = f64::from(since(now, w as u32));
        if dt * 64.0 < tau_ms {
            value(w)
        } else {
            value(w) * (-dt / tau_ms).exp()
        }
    }
}

fn pack(ns: f64, stamp: u32) -> u64 {
    (u64::from((ns as f32).to_bits()) << 32) | u64::from(stamp)
}

fn value(word: u64) -> f64 {
    f64::from(f32::from_bits((word >> 32) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);
    const MS: f64 = 1e6;

    /// A worked trace with the paused clock: seed 30 ms; a 100 ms sample is a peak;
    /// 10 s later (w = e^-1 ≈ 0.3679) the projection is 36.79 ms and a 20 ms sample
    /// blends to 100·0.3679 + 20·0.6321 = 49.43 ms; the pending term multiplies.
    #[tokio::test(start_paused = true)]
    async fn worked_trace() {
        let l = Latency::new(Duration::from_millis(30));
        let now = Instant::now();
        assert!((l.peak_ns(now, TAU) - 30.0 * MS).abs() < 1.0);

        l.observe_peak(now, Duration::from_millis(100), TAU);
        assert!(
            (l.peak_ns(now, TAU) - 100.0 * MS).abs() < 10.0,
            "a slower sample replaces at once"
        );

        tokio::time::advance(TAU).await;
        let now = Instant::now();
        let projected = l.peak_ns(now, TAU);
        assert!(
            (projected - 36.788 * MS).abs() < 0.01 * MS,
            "{projected}: reads decay toward zero"
        );
        assert!(
            (l.peak_ns(now, TAU) - projected).abs() < 1.0,
            "reads do not mutate"
        );

        l.observe_peak(now, Duration::from_millis(20), TAU);
        let blended = l.peak_ns(now, TAU);
        assert!(
            (blended - 49.430 * MS).abs() < 0.01 * MS,
            "{blended}: a faster sample blends in"
        );

        // Cost with 3 requests pending: estimate × (pending + 1).
        let cost = blended * (3.0 + 1.0);
        assert!((cost - 197.72 * MS).abs() < 0.05 * MS);

        // A failure enters as the penalty, a peak.
        l.observe_peak(now, FAILURE_PENALTY, TAU);
        assert!((l.peak_ns(now, TAU) - 5000.0 * MS).abs() < 1.0 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn average_blends_every_sample() {
        let l = Latency::new(Duration::from_millis(30));
        tokio::time::advance(TAU).await;
        l.observe_average(Instant::now(), Duration::from_millis(100), TAU);
        // 30·e^-1 + 100·(1 − e^-1) = 74.25 ms: no peak rule.
        assert!(
            (l.average_ns() - 74.248 * MS).abs() < 0.01 * MS,
            "{}",
            l.average_ns()
        );
    }

    #[test]
    fn packing_keeps_the_value() {
        let w = pack(123_456_789.0, 42);
        assert!((value(w) - 123_456_789.0).abs() < 10.0);
        assert_eq!(w as u32, 42);
    }

    /// The load factor divides by the in-flight count samples were taken at, which
    /// follows samples (not picks): a pick alone changes nothing, a hung server's
    /// load stays where its last samples left it.
    #[tokio::test(start_paused = true)]
    async fn load_factor_follows_the_load_samples_were_taken_at() {
        let l = Latency::new(Duration::from_millis(30));
        assert_eq!(l.load_factor(0), 1.0);
        assert_eq!(l.load_factor(3), 4.0, "no samples: Finagle's factor");
        l.note_pick(12);
        assert_eq!(l.load_factor(3), 4.0, "a pick alone teaches nothing");
        for _ in 0..60 {
            l.observe_peak(Instant::now(), Duration::from_millis(7), TAU);
        }
        // 12 × (1 − (7/8)^60) ≈ 11.996.
        assert!((l.load_ewma() - 12.0).abs() < 0.05, "{}", l.load_ewma());
        assert!((l.load_factor(12) - 1.0).abs() < 0.01);
        assert!(l.load_factor(0) < 0.1, "an idle moment is cheap");
        l.note_pick(0);
        l.observe_average(Instant::now(), Duration::from_millis(7), TAU);
        assert!((l.load_ewma() - 12.0 * 7.0 / 8.0).abs() < 0.05);
    }
}
