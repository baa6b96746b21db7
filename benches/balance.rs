//! Cost of one backend selection for every algorithm: "pick + release" (the pick as
//! the proxy makes it, `Upstream::pick`, then the request's `InFlight` guard taken
//! and dropped, which records a latency sample for `ewma` and `least_time`) at 3, 32
//! and 1024 servers (weights 1, 2, 3, 1, 2, 3, …), from one thread and from two
//! threads picking from the same upstream (the second one continuously, in the
//! background, while the first is measured). `hash` picks use a different key each
//! time: a counter hashed with `balance::hash_bytes`, as the proxy hashes a request
//! property. `pick_only` is the pick alone (no guard), for comparison: for `ewma` and
//! `least_time` the release path reads the clock and updates the estimate.
//!
//! Run: `cargo bench --bench balance` (about three minutes). Target from the issue:
//! ≤ 100 ns per pick at 32 servers, ≤ 250 ns for `hash` with bounded load; issue
//! #18: ≤ 200 ns per pick at 1 024 servers for every algorithm (`least_conn` and
//! `least_time` sample two servers above `balance::EXACT_SCAN`). Only the 1 024
//! figures: `cargo bench --bench balance -- '(1thread|pick_only)/1024'`.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::balance::{hash_bytes, PickCtx};
use switchyard::state::Shared;
use switchyard::upstream::{InFlight, Upstream};
use switchyard::Config;

/// (benchmark name, `balance`, extra upstream keys).
const ALGOS: &[(&str, &str, &str)] = &[
    ("round_robin", "round_robin", ""),
    ("least_conn", "least_conn", ""),
    ("least_time", "least_time", ""),
    ("ewma", "ewma", ""),
    ("hash", "hash", ""),
    ("hash_bounded_1.25", "hash", "hash_balance_factor = 1.25"),
    ("random", "random", ""),
    // Every server with a `max_conns` it never reaches: what the cap costs a pick
    // and a release (the same algorithms above run without one).
    ("round_robin_max_conns", "round_robin", ""),
    ("least_conn_max_conns", "least_conn", ""),
];

/// The servers' `max_conns` in the `_max_conns` variants: never reached.
const BENCH_MAX_CONNS: u32 = 1 << 30;

const SIZES: &[usize] = &[3, 32, 1024];

/// The proxy's shared state for one upstream `u` of `n` servers, each with
/// `max_conns` (0: none).
fn shared(balance: &str, extra: &str, n: usize, max_conns: u32) -> Arc<Shared> {
    let servers: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{ addr = \"127.0.0.1:{}\", weight = {}, max_conns = {max_conns} }}",
                10000 + i,
                1 + i % 3
            )
        })
        .collect();
    let text = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"u\"\n\n\
         [upstream.u]\nbalance = \"{balance}\"\n{extra}\nservers = [{}]\n",
        servers.join(", ")
    );
    let config = Config::parse(Path::new("bench"), &text).expect("valid bench configuration");
    Shared::new(config, 1).expect("the state builds")
}

/// One request's balancing work: a key for `hash`, the pick, the in-flight guard
/// taken and released (recording a sample when the algorithm measures latency).
#[inline]
fn pick_release(u: &Upstream, hashed: bool, counter: &mut u64) {
    let key = if hashed {
        *counter = counter.wrapping_add(1);
        Some(hash_bytes(&counter.to_le_bytes()))
    } else {
        None
    };
    let (_, server) = u.pick(&PickCtx::with_key(key)).expect("an eligible server");
    // As the proxy takes a server: a slot (within `max_conns`), then its guard.
    assert!(server.state.take_slot(), "a slot");
    drop(black_box(InFlight::taken(
        Arc::clone(&server.state),
        u.measure,
    )));
}

#[inline]
fn pick_only(u: &Upstream, hashed: bool, counter: &mut u64) {
    let key = if hashed {
        *counter = counter.wrapping_add(1);
        Some(hash_bytes(&counter.to_le_bytes()))
    } else {
        None
    };
    black_box(u.pick(&PickCtx::with_key(key)).expect("an eligible server"));
}

fn balance(c: &mut Criterion) {
    for &(name, balance, extra) in ALGOS {
        let mut g = c.benchmark_group(format!("balance_pick/{name}"));
        g.throughput(Throughput::Elements(1))
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500))
            .sample_size(20);
        let hashed = balance == "hash";
        for &n in SIZES {
            let max_conns = if name.ends_with("_max_conns") {
                BENCH_MAX_CONNS
            } else {
                0
            };
            let shared = shared(balance, extra, n, max_conns);
            let snapshot = shared.load();
            let u = &snapshot.upstreams[0];
            g.bench_with_input(BenchmarkId::new("1thread", n), &n, |b, _| {
                let mut counter = 0u64;
                b.iter(|| pick_release(u, hashed, &mut counter));
            });
            // The pick alone, no guard: what the algorithm costs without the
            // clock reads and estimate update of the release path.
            g.bench_with_input(BenchmarkId::new("pick_only", n), &n, |b, _| {
                let mut counter = 0u64;
                b.iter(|| pick_only(u, hashed, &mut counter));
            });
            g.bench_with_input(BenchmarkId::new("2threads", n), &n, |b, _| {
                let stop = AtomicBool::new(false);
                std::thread::scope(|scope| {
                    scope.spawn(|| {
                        // Different keys from the measured thread's.
                        let mut counter = 1u64 << 63;
                        while !stop.load(Ordering::Relaxed) {
                            pick_release(u, hashed, &mut counter);
                        }
                    });
                    let mut counter = 0u64;
                    b.iter(|| pick_release(u, hashed, &mut counter));
                    stop.store(true, Ordering::Relaxed);
                });
            });
        }
        g.finish();
    }
}

criterion_group!(benches, balance);
criterion_main!(benches);
