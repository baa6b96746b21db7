//! The dashboard's time series (`observe::series`): what a finished request pays
//! to be counted (`Series::record`: three relaxed additions), alone and with two
//! threads counting into the same server, and what the once-a-second fold costs
//! per server. Prints the bytes a series holds (`Series::BYTES`).

use std::hint::black_box;
use std::time::{Duration, Instant as StdInstant};

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::observe::series::{second, Gauges, Outcome, Series};
use tokio::time::Instant;

fn record(c: &mut Criterion) {
    println!(
        "series: {} bytes per server (ring of {} one-second points)",
        Series::BYTES,
        switchyard::observe::series::SPAN
    );
    let s = Series::default();
    let elapsed = Duration::from_micros(1_800);
    let mut g = c.benchmark_group("series");
    g.bench_function("record", |b| {
        let now = Instant::now();
        b.iter(|| s.record(black_box(now), Outcome::Ok, black_box(elapsed)))
    });
    g.bench_function("record, clock read included", |b| {
        b.iter(|| s.record(Instant::now(), Outcome::Ok, black_box(elapsed)))
    });
    g.bench_function("record, an error", |b| {
        let now = Instant::now();
        b.iter(|| s.record(black_box(now), Outcome::Upstream, black_box(elapsed)))
    });
    // Two threads counting into the same server: the cache line of the second's
    // counters moves between cores, the worst case of a hot server.
    g.bench_function("record, 2 threads on one server", |b| {
        b.iter_custom(|iters| {
            let start = StdInstant::now();
            std::thread::scope(|t| {
                for _ in 0..2 {
                    t.spawn(|| {
                        let now = Instant::now();
                        for _ in 0..iters {
                            s.record(black_box(now), Outcome::Ok, black_box(elapsed));
                        }
                    });
                }
            });
            // Per record, of the 2 × iters made.
            start.elapsed() / 2
        })
    });
    g.bench_function("fold one server's second", |b| {
        let mut at = second(Instant::now()) + 2;
        b.iter(|| {
            at += 1;
            s.fold(
                at,
                Gauges {
                    inflight: 3,
                    load: 1.0,
                },
            )
        })
    });
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
