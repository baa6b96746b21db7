//! One shared rate-limit decision's round trip (`limit::redis`), on loopback
//! against a real `redis-server`, over a Unix socket and over TCP: p50, p99 and
//! p99.9 of sequential decisions (one in flight, as with a quiet worker), then the
//! same with 64 decisions in flight on one worker's runtime (pipelined on its one
//! connection). A `PING` over the same kind of connection is the floor: what the
//! script and the store add is the difference. A plain program (criterion reports
//! means, the issue asks for percentiles):
//!
//! ```text
//! cargo bench --bench redis_store
//! ```

// The tests' helper, shared as a file: its items are `pub` for the test crates.
#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use switchyard::limit::gcra::Gcra;
use switchyard::limit::redis::{Decision, Limit, Options, RedisStore, Space};

/// Decisions measured per case, after `WARMUP`.
const SAMPLES: usize = 20_000;
const WARMUP: usize = 2_000;
/// Decisions in flight in the concurrent case: a worker busy with many clients.
const IN_FLIGHT: usize = 64;
/// Distinct keys the decisions cycle through (client addresses).
const KEYS: usize = 10_000;

fn main() {
    let server = RedisServer::start_with_tcp();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<38} {:>9} {:>9} {:>9} {:>12}",
        "case", "p50 µs", "p99 µs", "p99.9 µs", "decisions/s"
    );
    for (transport, url) in [("unix", server.url()), ("tcp", server.tcp_url(0))] {
        rt.block_on(async {
            ping(transport, &url).await;
            for limits in [1, 2] {
                decisions(transport, &url, limits, 1).await;
                decisions(transport, &url, limits, IN_FLIGHT).await;
            }
        });
    }
    // Redis's own time per decision: what bounds one Redis's decisions per second.
    let mut redis = redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis)
        .unwrap();
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_evalsha:")) {
        println!("redis-server, all decisions: {line}");
    }
}

/// `PING` round trips on a multiplexed connection: the floor under a decision.
async fn ping(transport: &str, url: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut times = Vec::with_capacity(SAMPLES);
    let started = Instant::now();
    for i in 0..WARMUP + SAMPLES {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        if i >= WARMUP {
            times.push(t.elapsed());
        }
    }
    report(&format!("{transport}: PING"), times, started.elapsed());
}

/// Decisions of `limits` limits each, `in_flight` at a time.
async fn decisions(transport: &str, url: &str, limits: usize, in_flight: usize) {
    // The answers, not a deadline, are measured: a generous timeout, so that a
    // slow sample is recorded rather than turned into a fallback.
    let store = RedisStore::open_with(
        url,
        Options {
            timeout: Duration::from_secs(5),
            ..Options::default()
        },
    )
    .unwrap();
    let spaces: Arc<Vec<Space>> = Arc::new(
        (0..limits)
            .map(|i| Space::new(&format!("bench-{transport}-{in_flight}-{i}")))
            .collect(),
    );
    // Never refuses: a decision is as expensive either way, and refusals would
    // not be charged, which would make the keys cheaper.
    let gcra = Gcra::new(1_000_000, 1_000_000_000, 1_000_000, None);
    let keys: Arc<Vec<String>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
            .collect(),
    );
    let per_task = (WARMUP + SAMPLES) / in_flight;
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let (store, spaces, keys) =
                (Arc::clone(&store), Arc::clone(&spaces), Arc::clone(&keys));
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let key = keys[(t * per_task + i) % KEYS].as_bytes();
                    let ls: Vec<Limit<'_>> = spaces
                        .iter()
                        .map(|space| Limit { space, key, gcra })
                        .collect();
                    let at = Instant::now();
                    let d = store.check(&ls).await.expect("the store answers");
                    times.push((i * in_flight + t, at.elapsed()));
                    assert!(matches!(d, Decision::Pass { .. }));
                }
                times
            })
        })
        .collect();
    let mut times = Vec::with_capacity(WARMUP + SAMPLES);
    for t in tasks {
        times.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    // Drop the warm-up: the first decisions of the run, whichever task made them.
    times.sort_by_key(|(order, _)| *order);
    let measured: Vec<Duration> = times.into_iter().skip(WARMUP).map(|(_, d)| d).collect();
    report(
        &format!("{transport}: {limits} limit(s), {in_flight} in flight"),
        measured,
        elapsed,
    );
    assert_eq!(store.fallbacks(), 0);
}

/// Percentiles of `times`; the rate is of every round trip made (warm-up
/// included) over `elapsed`.
fn report(case: &str, mut times: Vec<Duration>, elapsed: Duration) {
    let n = times.len();
    times.sort();
    let at = |q: f64| times[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e6;
    let rate = (WARMUP + SAMPLES) as f64 / elapsed.as_secs_f64();
    println!(
        "{case:<38} {:>9.1} {:>9.1} {:>9.1} {:>12.0}",
        at(0.50),
        at(0.99),
        at(0.999),
        rate
    );
}
