//! Cost of one route lookup (`Router::find`, as the request path calls it once per
//! request) at 1, 1 000 and 10 000 routes: an exact-host hit, a wildcard-host hit, a
//! path-prefix hit and a miss. Each size has its own configuration of one kind of
//! route (`h{i}.example.com`, `*.w{i}.example.com`, hostless `/p{i}/`), the request
//! names the middle one; the miss runs on a configuration with a third of each kind
//! and asks for a host and path none of them takes. A lookup that does not grow with
//! the fleet shows the same figure in every column.
//!
//! Run: `cargo bench --bench route` (about a minute, after the build).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use switchyard::pipeline::route::Router;
use switchyard::Config;

const SIZES: &[usize] = &[1, 1_000, 10_000];

/// A router over `routes` (TOML `[[route]]` tables) on the one listener `l`.
fn router(routes: &str) -> Router {
    let text = format!(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n{routes}\n\
         [upstream.u]\nservers = [{{ addr = \"127.0.0.1:1\" }}]\n"
    );
    let config = Config::parse(Path::new("bench"), &text).expect("valid bench configuration");
    Router::new("l", &config.routes)
}

fn exact_hosts(n: usize) -> String {
    (0..n)
        .map(|i| format!("[[route]]\nhost = \"h{i}.example.com\"\nupstream = \"u\"\n"))
        .collect()
}

fn wildcard_hosts(n: usize) -> String {
    (0..n)
        .map(|i| format!("[[route]]\nhost = \"*.w{i}.example.com\"\nupstream = \"u\"\n"))
        .collect()
}

fn prefixes(n: usize) -> String {
    (0..n)
        .map(|i| format!("[[route]]\npath = \"/p{i}/\"\nupstream = \"u\"\n"))
        .collect()
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &n in SIZES {
        let mid = n / 2;
        let cases: [(&str, Router, String, String); 4] = [
            (
                "exact_host_hit",
                router(&exact_hosts(n)),
                format!("h{mid}.example.com"),
                "/x".to_owned(),
            ),
            (
                "wildcard_hit",
                router(&wildcard_hosts(n)),
                format!("a.w{mid}.example.com"),
                "/x".to_owned(),
            ),
            (
                "prefix_hit",
                router(&prefixes(n)),
                "h".to_owned(),
                format!("/p{mid}/some/path"),
            ),
            (
                "miss",
                router(&format!(
                    "{}{}{}",
                    exact_hosts(n.div_ceil(3)),
                    wildcard_hosts(n.div_ceil(3)),
                    prefixes(n.div_ceil(3))
                )),
                "nothere.example.org".to_owned(),
                "/zzz/y".to_owned(),
            ),
        ];
        for (name, r, host, path) in &cases {
            g.bench_with_input(BenchmarkId::new(*name, n), &n, |b, _| {
                b.iter(|| black_box(r.find(black_box(host), black_box(path), &Method::GET)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
