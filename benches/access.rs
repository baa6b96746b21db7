//! The client-address checks a request may pay for: an `allow`/`deny` lookup at
//! 10, 1 000 and 10 000 rules (issue 14's target: ≤ 50 ns at 1 000), and the
//! trusted `X-Forwarded-For` walk of a typical three-hop chain.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use switchyard::config::{AccessRules, Cidr};
use switchyard::pipeline::real_ip::RealIp;
use switchyard::pipeline::ClientInfo;

/// A fixed xorshift, so every run measures the same rules and probes.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` rules, nine in ten IPv4 blocks (/16 to /32) and the rest IPv6 /32 to /64,
/// split between `allow` (four in five) and `deny`.
fn rules(n: usize, rng: &mut Xorshift) -> AccessRules {
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    for i in 0..n {
        let r = rng.next();
        let net = if i % 10 == 9 {
            let len = 32 + (r % 33) as u8;
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(u128::from(r) << 64), len)
                    .unwrap()
                    .trunc(),
            )
        } else {
            let len = 16 + (r % 17) as u8;
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from((r >> 32) as u32), len)
                    .unwrap()
                    .trunc(),
            )
        };
        if i % 5 == 4 {
            deny.push(Cidr(net));
        } else {
            allow.push(Cidr(net));
        }
    }
    AccessRules {
        allow: Some(allow),
        deny,
    }
}

fn access_rules(c: &mut Criterion) {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let probes: Vec<IpAddr> = (0..1024)
        .map(|i| {
            let r = rng.next();
            if i % 10 == 9 {
                IpAddr::V6(Ipv6Addr::from(u128::from(r) << 64 | u128::from(r)))
            } else {
                IpAddr::V4(Ipv4Addr::from(r as u32))
            }
        })
        .collect();
    let mut g = c.benchmark_group("access/contains");
    for n in [10, 1_000, 10_000] {
        let refused = rules(n, &mut rng).refused();
        let mut i = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &refused, |b, set| {
            b.iter(|| {
                i = (i + 1) & 1023;
                set.contains(std::hint::black_box(probes[i]))
            })
        });
    }
    g.finish();
}

fn forwarded_for(c: &mut Criterion) {
    let trusted = [
        Cidr("10.0.0.0/8".parse().unwrap()),
        Cidr("192.168.0.0/16".parse().unwrap()),
    ];
    let real_ip = RealIp::new(&trusted).unwrap();
    let conn = ClientInfo::new(SocketAddr::from(([10, 0, 0, 2], 40000)), "http");
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_static("198.51.100.1, 203.0.113.5, 192.168.1.9"),
    );
    c.bench_function("access/x_forwarded_for_three_hops", |b| {
        b.iter(|| real_ip.client(&conn, std::hint::black_box(&headers)))
    });
    let untrusted = ClientInfo::new(SocketAddr::from(([203, 0, 113, 9], 40000)), "http");
    c.bench_function("access/x_forwarded_for_untrusted_peer", |b| {
        b.iter(|| real_ip.client(&untrusted, std::hint::black_box(&headers)))
    });
}

criterion_group!(benches, access_rules, forwarded_for);
criterion_main!(benches);
