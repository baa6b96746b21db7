//! A local rate-limit decision (`limit::check_local`: hash the client address,
//! lock its shard, read and store its TAT) at 100 000 distinct keys, alone and
//! with a second thread deciding other keys of the same table; two limits at
//! once (rps and rpm); and a `limit_conn` slot taken and given back. The issue's
//! target: a decision in at most 100 ns at 100 k keys.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::limit::{check_local, ConnTable, Gcra, KeyRef, Limiter, RateTable, Store};

const KEYS: usize = 100_000;
const SEC: u64 = 1_000_000_000;

/// 100 000 distinct IPv4 client addresses.
fn clients() -> Vec<IpAddr> {
    (0..KEYS as u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7)))
        .collect()
}

/// A limit of `per` a second with a burst that none of the benchmark's keys
/// exhausts, so every decision passes and stores (the path a limit that does not
/// trigger takes on every request).
fn limiter(per: u64, per_nanos: u64) -> Limiter {
    Limiter {
        gcra: Gcra::new(per, per_nanos, 10_000_000, None),
        store: Store::Local(Arc::new(RateTable::default())),
    }
}

/// Decides for the next client in `ips`, the clock moving 10 ns a decision.
fn decide(limits: &[Limiter], ips: &[IpAddr], i: &mut usize, now: &mut u64) {
    let key = Some(KeyRef::Ip(ips[*i % ips.len()]));
    let keys = [key; 2];
    *i += 1;
    *now += 10;
    std::hint::black_box(check_local(limits, &keys[..limits.len()], *now));
}

fn rate_limit(c: &mut Criterion) {
    let ips = clients();
    let mut g = c.benchmark_group("rate_limit");

    let one = [limiter(1000, SEC)];
    let (mut i, mut now) = (0, 3600 * SEC);
    // Every key present before measuring.
    for _ in 0..KEYS {
        decide(&one, &ips, &mut i, &mut now);
    }
    g.bench_function("decision_100k_keys", |b| {
        b.iter(|| decide(&one, &ips, &mut i, &mut now))
    });

    let two = [limiter(1000, SEC), limiter(60_000, 60 * SEC)];
    for _ in 0..KEYS {
        decide(&two, &ips, &mut i, &mut now);
    }
    g.bench_function("decision_rps_and_rpm_100k_keys", |b| {
        b.iter(|| decide(&two, &ips, &mut i, &mut now))
    });

    // A second thread deciding for the other half of the keys, on the same
    // table, the whole time: the cost of sharing the shards' locks.
    let stop = AtomicBool::new(false);
    g.bench_function("decision_100k_keys_two_threads", |b| {
        std::thread::scope(|scope| {
            let (ips, one, stop) = (&ips, &one, &stop);
            scope.spawn(move || {
                let (mut j, mut t) = (KEYS / 2, 3600 * SEC);
                while !stop.load(Ordering::Relaxed) {
                    decide(one, ips, &mut j, &mut t);
                }
            });
            b.iter(|| decide(one, ips, &mut i, &mut now));
            stop.store(true, Ordering::Relaxed);
        });
    });
    g.finish();

    let conns = Arc::new(ConnTable::default());
    let hashes: Vec<u64> = ips.iter().map(|ip| KeyRef::Ip(*ip).hash()).collect();
    let mut k = 0;
    c.bench_function("limit_conn/slot_100k_keys", |b| {
        b.iter(|| {
            k += 1;
            let slot = conns.acquire(hashes[k % KEYS], 100);
            std::hint::black_box(slot)
        })
    });
}

criterion_group!(benches, rate_limit);
criterion_main!(benches);
