//! Per-request functions of the proxy path: path normalisation (a typical path,
//! which takes the fast path, and a dirty one), routing, header rewriting, a
//! round-robin pick (+ in-flight guard) at 3, 32 and 1024 servers from one and two
//! threads, and what observability adds per request (request id, metrics, log line).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use switchyard::balance::{Balancer, PickCtx, RoundRobin};
use switchyard::config::Config;
use switchyard::pipeline::action::proxy::headers;
use switchyard::pipeline::filter::path::normalise;
use switchyard::pipeline::filter::set_headers::{self, HeaderAction};
use switchyard::pipeline::route::Router;
use switchyard::pipeline::vars::Vars;
use switchyard::pipeline::ClientInfo;
use switchyard::upstream::{InFlight, Measure, Registry, ServerKey, Source, UpstreamServer};

const CONFIG: &str = r#"
[[listener]]
name = "public"
listen = "127.0.0.1:0"
[[route]]
path = "/"
upstream = "u"
[[route]]
path = "/api/"
upstream = "u"
[[route]]
path = "/api/v2/"
upstream = "u"
[[route]]
host = "bots.example.com"
path = "/webhook/"
upstream = "u"
[[route]]
host = "*.example.com"
path = "/"
upstream = "u"
[upstream.u]
servers = [{ addr = "127.0.0.1:9001" }]
"#;

fn routing(c: &mut Criterion) {
    let config = Config::parse(Path::new("bench"), CONFIG).unwrap();
    let router = Router::new("public", &config.routes);
    c.bench_function("route/longest_prefix", |b| {
        b.iter(|| {
            router.find(
                std::hint::black_box("api.example.com"),
                std::hint::black_box("/api/v2/users/42"),
                &http::Method::GET,
            )
        })
    });
}

fn path_normalise(c: &mut Criterion) {
    // No `%`, `//` or `/.`: one pass over the bytes, nothing allocated.
    c.bench_function("path/normalise_typical", |b| {
        b.iter(|| normalise(std::hint::black_box("/api/v2/users/42/messages")).map(|p| p.len()))
    });
    // Escapes to decode, a slash to merge, dot segments to resolve.
    c.bench_function("path/normalise_dirty", |b| {
        b.iter(|| {
            normalise(std::hint::black_box(
                "/api/v2/./users//%7Ebob/../42/%6Dessages",
            ))
            .map(|p| p.len())
        })
    });
}

fn header_rewrite(c: &mut Criterion) {
    let client = ClientInfo::new("10.1.2.3:40000".parse().unwrap(), "http");
    let host = HeaderValue::from_static("api.example.com");
    let upstream = HeaderValue::from_static("127.0.0.1:9001");
    let set = vec![(
        http::HeaderName::from_static("x-instance-id"),
        HeaderAction::Var(switchyard::config::Variable::UpstreamAddr),
    )];
    let request_id = switchyard::pipeline::filter::request_id::generate();
    let uri: http::Uri = "/api/v2/users/42".parse().unwrap();
    let mut base = HeaderMap::new();
    base.insert("host", HeaderValue::from_static("api.example.com"));
    base.insert("user-agent", HeaderValue::from_static("wrk"));
    base.insert("accept", HeaderValue::from_static("*/*"));
    c.bench_function("headers/forward_and_set_headers", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| {
                let vars = Vars {
                    client: &client,
                    host: &host,
                    upstream_addr: Some(&upstream),
                    request_id: &request_id,
                    uri: &uri,
                };
                headers::forward(h, &vars, set.len());
                set_headers::apply(&set, &vars, h);
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn servers(n: usize) -> Vec<UpstreamServer> {
    let registry = Registry::default();
    (0..n)
        .map(|i| UpstreamServer {
            weight: 1 + (i % 3) as u32,
            down: false,
            backup: false,
            passive: Default::default(),
            source: Source::File,
            requests: Box::new([]),
            series: None,
            state: registry.server(
                ServerKey {
                    upstream: Arc::from("bench"),
                    addr: SocketAddr::from(([127, 0, 0, 1], 10000 + i as u16)),
                },
                1,
                std::time::Duration::from_millis(30),
            ),
        })
        .collect()
}

fn round_robin(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance/round_robin");
    g.throughput(Throughput::Elements(1));
    for n in [3, 32, 1024] {
        let s = servers(n);
        let weights: Vec<u32> = s.iter().map(|s| s.weight).collect();
        let rr = RoundRobin::new(&weights);
        g.bench_with_input(BenchmarkId::new("pick+release/1thread", n), &n, |b, _| {
            b.iter(|| {
                let i = rr.pick(&s, &PickCtx::default()).unwrap();
                drop(InFlight::new(Arc::clone(&s[i].state), Measure::Nothing));
            })
        });
        // The same with a second thread picking continuously from the same upstream,
        // to show the cost of the shared cursor under contention.
        g.bench_with_input(BenchmarkId::new("pick+release/2threads", n), &n, |b, _| {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            std::thread::scope(|scope| {
                let stop2 = Arc::clone(&stop);
                let (rr2, s2) = (&rr, &s);
                scope.spawn(move || {
                    while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                        let i = rr2.pick(s2, &PickCtx::default()).unwrap();
                        drop(InFlight::new(Arc::clone(&s2[i].state), Measure::Nothing));
                    }
                });
                b.iter(|| {
                    let i = rr.pick(&s, &PickCtx::default()).unwrap();
                    drop(InFlight::new(Arc::clone(&s[i].state), Measure::Nothing));
                });
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        });
    }
    g.finish();
}

fn observe(c: &mut Criterion) {
    use switchyard::config::LogFormat;
    use switchyard::observe::access_log::Entry;
    use switchyard::pipeline::filter::request_id;
    c.bench_function("observe/request_id", |b| b.iter(request_id::generate));
    let metrics = switchyard::observe::Metrics::new(true);
    let route = metrics.route("api", "u", false);
    let servers: Vec<_> = (0..3)
        .map(|i| metrics.server_requests("api", "u", &format!("127.0.0.1:900{i}")))
        .collect();
    let mut i = 0;
    c.bench_function("observe/route_metrics_record", |b| {
        b.iter(|| {
            i = (i + 1) % 3;
            route.record(
                &servers[i],
                http::StatusCode::OK,
                std::time::Duration::from_micros(700),
            );
        })
    });
    let entry = Entry {
        time: std::time::SystemTime::now(),
        client: "10.1.2.3:5555".parse().unwrap(),
        method: "GET",
        path: "/api/v1/updates?offset=12345",
        protocol: "HTTP/1.1",
        status: 200,
        bytes_in: 0,
        bytes_out: 512,
        duration: std::time::Duration::from_micros(850),
        route: "api",
        upstream: "u",
        server: Some("127.0.0.1:9001".parse().unwrap()),
        upstream_status: Some(200),
        upstream_time: Some(std::time::Duration::from_micros(700)),
        queue_time: None,
        tries: 1,
        request_id: "0123456789abcdef0123456789abcdef",
        user_agent: "python-requests/2.31",
        referer: "",
        update: None,
    };
    for (name, format) in [("json", LogFormat::Json), ("combined", LogFormat::Combined)] {
        c.bench_function(&format!("observe/log_line_{name}"), |b| {
            b.iter(|| entry.line(format))
        });
    }
}

criterion_group!(
    benches,
    path_normalise,
    routing,
    header_rewrite,
    round_robin,
    observe
);
criterion_main!(benches);
