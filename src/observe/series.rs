//! The dashboard's time series: for every server, every upstream and the whole
//! proxy, the last 15 minutes at one-second resolution — requests, errors by
//! class, p50 and p99 latency, in-flight requests and the balancer's load
//! estimate — and, per upstream, what happened to its servers, with reasons.
//!
//! Two halves, so that the request path never locks nor allocates:
//! - `Live`: counters of the current second, two sets used alternately by the
//!   second's parity. A finished request adds to three of them (`fetch_add`).
//! - `Ring`: one `Point` per second for `SPAN` seconds, allocated once. Written
//!   once a second by the background task (`upstream::series::fold`), which takes the last
//!   second's counters (swapping them to zero for the second after next), turns
//!   its latency histogram into percentiles and samples the gauges; read by the
//!   admin listener. Its lock is only ever taken off the request path.
//!
//! An upstream's point is the sum of its servers' seconds plus the requests no
//! server answered (its own `Live`), its percentiles from the summed histograms;
//! the proxy's likewise over the upstreams plus requests no upstream saw. Memory
//! is fixed per series whatever the traffic (`Series::BYTES`).
//!
//! If the background task is late by more than a second, the counts of the
//! seconds it missed are folded into the next one it takes: totals stay right,
//! their second may be off by the delay.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use tokio::time::Instant;

use crate::weak_map::{shared, WeakMap};

/// Seconds of history kept: 15 minutes, what an operator scrolls back over when
/// paged ("what changed before it broke?"), at 32 bytes a second per series.
pub const SPAN: usize = 900;

/// Latency buckets per doubling: 4 keep a percentile within 19 % of the truth
/// (one bucket's width) at 4 bytes a bucket.
const PER_OCTAVE: u32 = 4;
/// The first bucket's upper bound, 2^6 µs = 64 µs: a loopback round trip.
const FIRST_OCTAVE: u32 = 6;
/// Doublings covered above it: to 2^26 µs ≈ 67 s, past nginx's 60 s timeouts.
const OCTAVES: u32 = 20;
/// Buckets of the per-second latency histogram (the first: below 64 µs).
pub const BUCKETS: usize = (OCTAVES * PER_OCTAVE + 1) as usize;

/// Events kept per upstream (its servers' changes and membership): a flapping
/// server fills it with its last changes rather than growing it.
pub const MAX_EVENTS: usize = 64;

/// What a finished request counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// 4xx: the client's request was refused (limits included).
    Client,
    /// A 5xx the server sent.
    Upstream,
    /// A 5xx the proxy made: no server, connect failure, timeout, broken exchange.
    Proxy,
}

impl Outcome {
    /// `status` went to the client; `upstream` is the status the last server sent,
    /// if one did.
    pub fn of(status: StatusCode, upstream: Option<StatusCode>) -> Outcome {
        if status.is_client_error() {
            Outcome::Client
        } else if !status.is_server_error() {
            Outcome::Ok
        } else if upstream == Some(status) {
            Outcome::Upstream
        } else {
            Outcome::Proxy
        }
    }
}

/// The second of `now` on the process clock (`clock::nanos`), so a paused test
/// clock drives the series as it drives everything else.
pub fn second(now: Instant) -> u64 {
    crate::clock::nanos(now) / 1_000_000_000
}

/// The histogram bucket of a latency of `us` microseconds.
#[inline]
fn bucket(us: u64) -> usize {
    if us < 1 << FIRST_OCTAVE {
        return 0;
    }
    let octave = 63 - us.leading_zeros();
    let sub = (us >> (octave - 2)) & 3;
    (((octave - FIRST_OCTAVE) * PER_OCTAVE) as usize + sub as usize + 1).min(BUCKETS - 1)
}

/// The bounds of bucket `i`, in microseconds: `[low, high)`.
fn bounds(i: usize) -> (u64, u64) {
    if i == 0 {
        return (0, 1 << FIRST_OCTAVE);
    }
    let octave = (i as u32 - 1) / PER_OCTAVE + FIRST_OCTAVE;
    let sub = (i as u64 - 1) % u64::from(PER_OCTAVE);
    ((4 + sub) << (octave - 2), (5 + sub) << (octave - 2))
}

/// The `q` quantile (0 < q ≤ 1) of a histogram of `n` samples, in microseconds:
/// inside the bucket that holds it, the centre of its share of the bucket (so the
/// error is at most half a bucket's width for evenly spread samples).
fn quantile(hist: &[u32; BUCKETS], n: u32, q: f64) -> u32 {
    if n == 0 {
        return 0;
    }
    let rank = ((q * f64::from(n)).ceil() as u64).clamp(1, u64::from(n));
    let mut before = 0u64;
    for (i, &c) in hist.iter().enumerate() {
        let c = u64::from(c);
        if c > 0 && before + c >= rank {
            let (low, high) = bounds(i);
            let pos = rank - before;
            let v = low + (high - low) * (2 * pos - 1) / (2 * c);
            return v.min(u64::from(u32::MAX)) as u32;
        }
        before += c;
    }
    0
}

// ===== the request path's half =====

#[derive(Debug)]
struct Second {
    requests: AtomicU32,
    /// `Outcome::Client`, `Upstream`, `Proxy`.
    errors: [AtomicU32; 3],
    latency: [AtomicU32; BUCKETS],
}

impl Default for Second {
    fn default() -> Self {
        Second {
            requests: AtomicU32::new(0),
            errors: Default::default(),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// The current second's counts, two sets used by the second's parity: while one
/// fills, the background task empties the other.
#[derive(Debug, Default)]
struct Live {
    seconds: [Second; 2],
}

/// One second's counts, taken out of `Live`.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub requests: u32,
    pub errors: [u32; 3],
    pub latency: [u32; BUCKETS],
}

impl Taken {
    pub(crate) fn add(&mut self, o: &Taken) {
        self.requests = self.requests.saturating_add(o.requests);
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a = a.saturating_add(b);
        }
        for (a, b) in self.latency.iter_mut().zip(o.latency) {
            *a = a.saturating_add(b);
        }
    }

    pub(crate) fn point(&self, gauges: Gauges) -> Point {
        let n: u32 = self.latency.iter().fold(0u32, |a, &b| a.saturating_add(b));
        Point {
            requests: self.requests,
            client_errors: self.errors[0],
            upstream_errors: self.errors[1],
            proxy_errors: self.errors[2],
            p50_us: quantile(&self.latency, n, 0.50),
            p99_us: quantile(&self.latency, n, 0.99),
            inflight: gauges.inflight,
            load: gauges.load,
        }
    }
}

/// What is sampled, not counted, at the end of a second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauges {
    pub inflight: u32,
    pub load: f32,
}

// ===== the ring =====

/// One second of one series.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Point {
    pub requests: u32,
    pub client_errors: u32,
    pub upstream_errors: u32,
    pub proxy_errors: u32,
    pub p50_us: u32,
    pub p99_us: u32,
    /// In flight when the second ended.
    pub inflight: u32,
    /// The balancer's load estimate when the second ended.
    pub load: f32,
}

#[derive(Debug)]
struct Ring {
    points: Box<[Point]>,
    /// The second of the newest point; 0: none yet.
    newest: u64,
}

impl Ring {
    fn push(&mut self, at: u64, p: Point) {
        if self.newest != 0 && at <= self.newest {
            return;
        }
        if self.newest != 0 {
            // Seconds nobody folded (the process was stopped, say) read as empty.
            let gap = (at - self.newest - 1).min(SPAN as u64);
            for s in at - gap..at {
                self.points[(s % SPAN as u64) as usize] = Point::default();
            }
        }
        self.points[(at % SPAN as u64) as usize] = p;
        self.newest = at;
    }

    /// The points of the seconds after `since` up to `until` (at most `SPAN`),
    /// oldest first; seconds not recorded are empty.
    fn read(&self, since: u64, until: u64) -> Vec<Point> {
        let from = since.max(until.saturating_sub(SPAN as u64)) + 1;
        (from..=until)
            .map(|s| {
                let fresh = self.newest != 0 && s <= self.newest && self.newest - s < SPAN as u64;
                if fresh {
                    self.points[(s % SPAN as u64) as usize]
                } else {
                    Point::default()
                }
            })
            .collect()
    }
}

/// The time series of one server, upstream or the whole proxy.
#[derive(Debug)]
pub struct Series {
    live: Live,
    ring: Mutex<Ring>,
    /// State changes (upstreams only; see `MAX_EVENTS`).
    events: Timeline,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            live: Live::default(),
            ring: Mutex::new(Ring {
                points: vec![Point::default(); SPAN].into_boxed_slice(),
                newest: 0,
            }),
            events: Timeline::new(MAX_EVENTS),
        }
    }
}

impl Series {
    /// Bytes a series holds, whatever its traffic: itself and its ring (events
    /// are bounded apart, by `MAX_EVENTS`).
    pub const BYTES: usize = std::mem::size_of::<Series>() + SPAN * std::mem::size_of::<Point>();

    /// Counts a request that finished at `now` after `elapsed`: three relaxed
    /// `fetch_add`s, no lock, no allocation.
    #[inline]
    pub fn record(&self, now: Instant, outcome: Outcome, elapsed: Duration) {
        let s = &self.live.seconds[(second(now) & 1) as usize];
        s.requests.fetch_add(1, Ordering::Relaxed);
        let class = match outcome {
            Outcome::Ok => None,
            Outcome::Client => Some(0),
            Outcome::Upstream => Some(1),
            Outcome::Proxy => Some(2),
        };
        if let Some(c) = class {
            s.errors[c].fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        s.latency[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts of second `at` out of the live half, leaving its set
    /// empty for second `at + 2`.
    pub(crate) fn take(&self, at: u64) -> Taken {
        let s = &self.live.seconds[(at & 1) as usize];
        let take = |a: &AtomicU32| a.swap(0, Ordering::Relaxed);
        Taken {
            requests: take(&s.requests),
            errors: std::array::from_fn(|i| take(&s.errors[i])),
            latency: std::array::from_fn(|i| take(&s.latency[i])),
        }
    }

    /// Stores second `at`'s point; later seconds only.
    pub(crate) fn push(&self, at: u64, p: Point) {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(at, p);
    }

    /// Takes second `at` and stores its point with `gauges`: what
    /// `upstream::series::fold` does for each server (which also keeps the counts
    /// taken, to sum them into the upstream's point).
    pub fn fold(&self, at: u64, gauges: Gauges) -> Point {
        let p = self.take(at).point(gauges);
        self.push(at, p);
        p
    }

    /// The points after second `since` up to second `until`, oldest first.
    pub fn points(&self, since: u64, until: u64) -> Vec<Point> {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(since, until)
    }

    /// Notes a change (a server added, removed); the oldest goes past `MAX_EVENTS`.
    pub fn note(&self, e: Event) {
        self.events.push(e);
    }

    /// The changes noted, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.to_vec()
    }
}

// ===== state changes =====

/// Something that happened to a server, with when and why: a health check's
/// result or a state change (kept by `upstream::health`), or a server added or
/// removed (noted in its upstream's series). Defined here, with the series that
/// keep them, because the upstream layer sits above this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: SystemTime,
    /// For a check: `passed` or `failed`; for a change: the new state.
    pub what: &'static str,
    pub detail: String,
}

/// The last events of something, oldest first, at most `cap` of them: bounded
/// whatever happens (a flapping server, a discovery source that churns).
#[derive(Debug)]
pub struct Timeline {
    cap: usize,
    events: Mutex<VecDeque<Event>>,
}

impl Timeline {
    pub const fn new(cap: usize) -> Timeline {
        Timeline {
            cap,
            events: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds `e`; the oldest goes past `cap`.
    pub fn push(&self, e: Event) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() == self.cap {
            events.pop_front();
        }
        events.push_back(e);
    }

    /// The events, oldest first.
    pub fn to_vec(&self) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.iter().cloned().collect()
    }
}

// ===== every series of a proxy =====

/// A server's key among the series: its upstream and address.
type ServerId = (Arc<str>, SocketAddr);

/// The series of one proxy: the whole proxy's, and one per upstream and per
/// server, handed out (like server state) for as long as a snapshot holds them.
#[derive(Debug, Default)]
pub struct Board {
    /// The whole proxy; its own counts are the requests no upstream saw.
    total: Arc<Series>,
    upstreams: Mutex<WeakMap<Arc<str>, Series>>,
    servers: Mutex<WeakMap<ServerId, Series>>,
    /// The newest second folded; 0: none yet.
    newest: AtomicU64,
}

impl Board {
    /// The whole proxy's series.
    pub fn total(&self) -> &Arc<Series> {
        &self.total
    }

    /// The newest second folded (0 before the first tick).
    pub fn newest(&self) -> u64 {
        self.newest.load(Ordering::Relaxed)
    }

    /// Upstream `name`'s series, shared while a snapshot holds it.
    pub fn upstream(&self, name: &str) -> Arc<Series> {
        shared(&self.upstreams, Arc::from(name))
    }

    /// The series of the server at `addr` in upstream `upstream`.
    pub fn server(&self, upstream: &Arc<str>, addr: SocketAddr) -> Arc<Series> {
        shared(&self.servers, (Arc::clone(upstream), addr))
    }

    /// Marks `at` as the newest second folded (by `upstream::series::fold`).
    pub(crate) fn folded(&self, at: u64) {
        self.newest.store(at, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Advances the paused clock to the start of the next whole second.
    async fn next_second() {
        let into = crate::clock::nanos(Instant::now()) % 1_000_000_000;
        tokio::time::advance(Duration::from_nanos(1_000_000_000 - into)).await;
    }

    #[test]
    fn buckets_and_their_bounds_agree() {
        for us in [
            0, 1, 63, 64, 65, 79, 80, 100, 1_000, 12_345, 999_999, 60_000_000,
        ] {
            let (low, high) = bounds(bucket(us));
            assert!(low <= us && us < high, "{us} in [{low}, {high})");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        // Four buckets a doubling: each at most 25 % wider than its start.
        for i in 1..BUCKETS {
            let (low, high) = bounds(i);
            assert_eq!(bounds(i - 1).1, low, "contiguous at {i}");
            assert!((high - low) * 4 <= low, "{i}: [{low}, {high})");
        }
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let mut h = [0u32; BUCKETS];
        // 98 fast requests (1 ms), 2 slow ones (200 ms).
        h[bucket(1_000)] = 98;
        h[bucket(200_000)] = 2;
        let p50 = quantile(&h, 100, 0.5);
        let (low, high) = bounds(bucket(1_000));
        assert!(low <= u64::from(p50) && u64::from(p50) < high, "{p50}");
        let p99 = quantile(&h, 100, 0.99);
        let (low, high) = bounds(bucket(200_000));
        assert!(low <= u64::from(p99) && u64::from(p99) < high, "{p99}");
        assert_eq!(quantile(&h, 0, 0.5), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn known_traffic_gives_exact_points_second_by_second() {
        let s = Series::default();
        next_second().await;
        let first = second(Instant::now());
        // Second 1: 10 requests of 2 ms, two 4xx, one upstream 5xx.
        for i in 0..10 {
            let outcome = match i {
                0 | 1 => Outcome::Client,
                2 => Outcome::Upstream,
                _ => Outcome::Ok,
            };
            s.record(Instant::now(), outcome, 2 * MS);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let p = s.fold(
            first,
            Gauges {
                inflight: 3,
                load: 1.5,
            },
        );
        let two_ms = bounds(bucket(2_000));
        assert_eq!(p.requests, 10);
        assert_eq!(
            (p.client_errors, p.upstream_errors, p.proxy_errors),
            (2, 1, 0)
        );
        assert!(two_ms.0 <= u64::from(p.p50_us) && u64::from(p.p99_us) < two_ms.1);
        assert_eq!((p.inflight, p.load), (3, 1.5));
        // Second 2: 4 requests, one a 1 s proxy timeout; second 3: nothing.
        for _ in 0..3 {
            s.record(Instant::now(), Outcome::Ok, 2 * MS);
        }
        s.record(Instant::now(), Outcome::Proxy, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        let q = s.fold(first + 1, Gauges::default());
        assert_eq!((q.requests, q.proxy_errors), (4, 1));
        assert!(q.p99_us >= 840_000, "the slow one is the p99: {}", q.p99_us);
        tokio::time::advance(Duration::from_secs(1)).await;
        s.fold(first + 2, Gauges::default());
        let points = s.points(first - 1, first + 2);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0], p);
        assert_eq!(points[1], q);
        assert_eq!(points[2], Point::default());
        // The taken second's counters were emptied for their next use.
        assert_eq!(s.fold(first + 4, Gauges::default()), Point::default());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_fixed_whatever_the_traffic_and_time() {
        let s = Series::default();
        next_second().await;
        let start = second(Instant::now());
        // Twenty minutes of traffic, more than the ring holds.
        for i in 0..1_200u64 {
            for _ in 0..50 {
                s.record(Instant::now(), Outcome::Ok, MS);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
            s.fold(start + i, Gauges::default());
        }
        let newest = start + 1_199;
        let ring = s.ring.lock().unwrap();
        assert_eq!(ring.points.len(), SPAN, "the ring never grows");
        drop(ring);
        let all = s.points(0, newest);
        assert_eq!(all.len(), SPAN, "only the last 15 minutes are kept");
        assert!(all.iter().all(|p| p.requests == 50));
        for i in 0..(MAX_EVENTS * 3) {
            s.note(Event {
                at: SystemTime::now(),
                what: "down",
                detail: format!("{i}"),
            });
        }
        let events = s.events();
        assert_eq!(events.len(), MAX_EVENTS, "events are bounded");
        assert_eq!(events[0].detail, format!("{}", MAX_EVENTS * 2));
        assert_eq!(
            Series::BYTES,
            std::mem::size_of::<Series>() + SPAN * std::mem::size_of::<Point>()
        );
        const { assert!(Series::BYTES < 32 * 1024) };
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_reads_as_empty_seconds_and_old_points_age_out() {
        let s = Series::default();
        next_second().await;
        let t = second(Instant::now());
        s.record(Instant::now(), Outcome::Ok, MS);
        s.fold(t, Gauges::default());
        // Ten seconds without a fold (a stopped process), then one more point.
        s.record(Instant::now(), Outcome::Ok, MS);
        s.fold(t + 10, Gauges::default());
        let points = s.points(t - 1, t + 10);
        assert_eq!(points.len(), 11);
        assert_eq!(points[0].requests, 1);
        assert!(points[1..10].iter().all(|p| p.requests == 0));
        assert_eq!(points[10].requests, 1);
        // Past the span, the first point is gone.
        let later = t + 10 + SPAN as u64;
        s.fold(later, Gauges::default());
        assert!(s.points(0, later).iter().all(|p| p.requests == 0));
    }
}
