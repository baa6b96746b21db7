//! DNS and SRV discovery end to end (issue 16): `resolve = true` servers found
//! through a real DNS server (tests/common/dns.rs, hickory-server on UDP and TCP)
//! whose records each test changes while the proxy runs.
//!
//! - a fleet scaled 3 → 6 → 2 under load fails no request: added servers get
//!   traffic, removed ones get no new request and finish the ones they have;
//! - an added server waits for its first passing health check;
//! - re-resolution follows the TTL clamped into [min_ttl, max_ttl] and capped
//!   at `valid`;
//! - a timeout, SERVFAIL or empty answer keeps the last good set; NXDOMAIN keeps
//!   it until `valid` × 3 has passed since the last good answer;
//! - SRV: lower priorities are backups, weights are weights, ports come from
//!   the records; AAAA records are servers too; `max_servers` caps an answer;
//! - two proxy processes place 1 000 keys identically (`balance = "hash"`);
//! - the discovered servers and their state survive a file reload;
//! - the metrics and `/status.json`'s `discovery` entries;
//! - `switchyard check` warns about a name that does not resolve, through the
//!   file's `[resolver]`.
//!
//! **Addresses.** A DNS answer carries addresses; the port comes from `addr`. So
//! the servers of one name are `Origin`s (tests/common/control.rs, which listen
//! on 127.0.0.1 and a port of their own) each reached through a TCP relay on an
//! address of its own and the one port the name's servers share, the way pods
//! behind a headless Service share a port. Linux routes all of 127/8 to `lo`,
//! and each test takes its own 127.0.N.0/24 (the `NET_*` constants), so tests
//! running at once never meet on an address.
//!
//! **Timing.** Real time: the tests wait for events (a server listed or gone in
//! the admin API, requests arriving, queries reaching the DNS server, a counter
//! moving) with bounded polls, and compare re-resolution intervals with
//! tolerances for a loaded two-core machine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::control::{Client, Load, Mode, Origin, Reply, Sample};
use common::dns::{Answer, DnsServer, RecordType, Srv};
use common::replica::Replica;
use common::{sample, TempDir};
use http::Method;
use serde_json::Value;
use switchyard::{Config, Running};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------
// Each test's loopback network: 127.0.N.0/24.
// ---------------------------------------------------------------------------------

const NET_SCALE: u8 = 1;
const NET_WARM: u8 = 2;
const NET_SERVFAIL: u8 = 4;
const NET_SILENT: u8 = 5;
const NET_EMPTY: u8 = 6;
const NET_NXDOMAIN: u8 = 7;
const NET_SRV_BACKUP: u8 = 8;
const NET_SRV_WEIGHT: u8 = 9;
const NET_MAX: u8 = 10;
const NET_REPLICAS: u8 = 11;
const NET_RELOAD: u8 = 12;
const NET_OBSERVE: u8 = 13;
const NET_AAAA: u8 = 14;
const NET_TTL: u8 = 15;

/// Bound on waiting for a change to show: a re-resolution or two (TTLs of 1 s
/// here), a health check, a few hundred requests.
const EVENT: Duration = Duration::from_secs(15);

/// How often the polls look.
const POLL: Duration = Duration::from_millis(20);

/// `[resolver]` keys for a fleet that follows its records within a second:
/// records of TTL 1 s are re-resolved every second; `valid` is no factor.
const FOLLOW_1S: &str = "min_ttl = \"1s\"\nvalid = \"10s\"\n";

/// Per-query timeout of the proxy's resolver in these tests: short, so that a
/// silent server fails a resolution quickly.
const DNS_TIMEOUT: &str = "300ms";

const PUBLIC: &str = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n";
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// Active checks every 100 ms; one failure takes a server down, one pass brings it
/// up (and a new server needs one pass anyway).
fn health_check(upstream: &str) -> String {
    format!(
        "[upstream.{upstream}.health_check]\npath = \"/health\"\ninterval = \"100ms\"\n\
         timeout = \"1s\"\nfall = 1\nrise = 1\n\n"
    )
}

// ---------------------------------------------------------------------------------
// Servers on addresses of their own
// ---------------------------------------------------------------------------------

/// A TCP relay from `addr` to a target: every connection accepted is joined to a
/// new connection to the target, both ways, half-closes passed on. A connection
/// the target refuses is closed at once.
struct Relay {
    addr: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on `at` (port 0: one of the kernel's choosing).
    fn start(at: SocketAddr, target: SocketAddr) -> Relay {
        let socket = if at.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .expect("relay socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(at)
            .unwrap_or_else(|e| panic!("bind a relay on {at}: {e}"));
        let listener = socket.listen(1024).expect("relay listens");
        let addr = listener.local_addr().expect("relay address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = down.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
            }
        });
        Relay {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One server of a discovered fleet: an `Origin` (its name is the `x-origin` of
/// its answers) reached at `addr`.
struct Member {
    addr: SocketAddr,
    origin: Origin,
    _relay: Relay,
}

impl Member {
    async fn start(name: &str, at: SocketAddr) -> Member {
        let origin = Origin::start(name).await;
        let relay = Relay::start(at, origin.addr());
        Member {
            addr: relay.addr,
            origin,
            _relay: relay,
        }
    }

    fn v4(&self) -> Ipv4Addr {
        match self.addr.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => panic!("{ip} is not IPv4"),
        }
    }

    fn name(&self) -> &str {
        self.origin.name()
    }

    fn requests(&self) -> usize {
        self.origin.requests()
    }
}

/// The servers of one name: member `i` (from 1) is origin `s{i}` at
/// 127.0.`net`.`i`, all on one port.
struct Fleet {
    net: u8,
    port: u16,
    members: Vec<Member>,
}

impl Fleet {
    async fn start(net: u8, n: usize) -> Fleet {
        let mut fleet = Fleet {
            net,
            port: 0,
            members: Vec::new(),
        };
        fleet.grow(n).await;
        fleet
    }

    /// Starts members up to `n` in all (the first one picks the port).
    async fn grow(&mut self, n: usize) {
        while self.members.len() < n {
            let i = self.members.len() + 1;
            let host = u8::try_from(i).expect("at most 254 members");
            let at = SocketAddr::from(([127, 0, self.net, host], self.port));
            let m = Member::start(&format!("s{i}"), at).await;
            self.port = m.addr.port();
            self.members.push(m);
        }
    }

    /// Member `i`, counting from 1.
    fn get(&self, i: usize) -> &Member {
        &self.members[i - 1]
    }

    fn v4(&self, which: &[usize]) -> Vec<Ipv4Addr> {
        which.iter().map(|&i| self.get(i).v4()).collect()
    }

    fn addrs(&self, which: &[usize]) -> BTreeSet<SocketAddr> {
        which.iter().map(|&i| self.get(i).addr).collect()
    }

    /// Waits until each of `which` has answered at least `n` requests.
    async fn wait_traffic(&self, which: &[usize], n: usize) {
        for &i in which {
            self.get(i).origin.wait_requests(n, EVENT).await;
        }
    }

    /// The member whose origin is named `name`.
    fn by_name(&self, name: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.name() == name)
            .map(|p| p + 1)
    }

    /// `host:PORT`, the `addr` of a resolve entry for this fleet.
    fn addr_of(&self, host: &str) -> String {
        format!("{host}:{}", self.port)
    }
}

/// `{ addr = "HOST:PORT", resolve = true[, KEYS] }`.
fn resolve_entry(addr: &str, keys: &str) -> String {
    if keys.is_empty() {
        format!("{{ addr = \"{addr}\", resolve = true }}")
    } else {
        format!("{{ addr = \"{addr}\", resolve = true, {keys} }}")
    }
}

/// `{ service = "NAME", resolve = true }`.
fn srv_entry(service: &str) -> String {
    format!("{{ service = \"{service}\", resolve = true }}")
}

// ---------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------

/// `[resolver]` naming `dns`, with `keys`.
fn resolver(dns: &DnsServer, keys: &str) -> String {
    format!(
        "[resolver]\nservers = [\"{}\"]\ntimeout = \"{DNS_TIMEOUT}\"\n{keys}\n",
        dns.addr()
    )
}

/// The admin listener, a public one, `[resolver]` with `resolver_keys`, one
/// catch-all route to upstream `u` without retries (a failed exchange is a failed
/// request the client sees, never one a retry hid), and upstream `u` with
/// `upstream_keys` and the server entries `servers`; then `tables` (e.g. a health
/// check).
fn config(
    dns: &DnsServer,
    resolver_keys: &str,
    servers: &[String],
    upstream_keys: &str,
    tables: &str,
) -> String {
    format!(
        "{ADMIN}{PUBLIC}{}[[route]]\npath = \"/\"\nupstream = \"u\"\nnext_upstream_tries = 1\n\n\
         [upstream.u]\n{upstream_keys}servers = [{}]\n\n{tables}",
        resolver(dns, resolver_keys),
        servers.join(", ")
    )
}

struct Proxy {
    running: Running,
    addr: SocketAddr,
    admin: SocketAddr,
}

fn proxy_of(running: Running) -> Proxy {
    let addr = running.addr("public").expect("listener public");
    let admin = running.admin.expect("admin listener bound");
    Proxy {
        running,
        addr,
        admin,
    }
}

async fn start(text: &str) -> Proxy {
    proxy_of(common::start_proxy(text).await)
}

/// Writes `text` as the directory's configuration file and starts the proxy from
/// it, as the binary does (so that a reload reads the file again).
fn start_file(dir: &TempDir, text: &str) -> Proxy {
    dir.write("config.toml", text);
    let config = Config::load(&dir.file())
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{text}"));
    proxy_of(switchyard::start(config, common::WORKERS).expect("proxy starts"))
}

/// One admin GET: status and body (JSON, or a string).
async fn admin_get(admin: SocketAddr, path: &str) -> (u16, Value) {
    let r = Client::new(admin)
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
    let v = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
    (r.status.as_u16(), v)
}

/// `GET /upstreams/NAME`, which must answer 200.
async fn upstream_json(admin: SocketAddr, name: &str) -> Value {
    let (status, v) = admin_get(admin, &format!("/upstreams/{name}")).await;
    assert_eq!(status, 200, "GET /upstreams/{name}: {v}");
    v
}

/// The servers of upstream `name` the admin API lists with `"source": "dns"`.
async fn dns_servers(admin: SocketAddr, name: &str) -> BTreeSet<SocketAddr> {
    let v = upstream_json(admin, name).await;
    v["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no server list in {v}"))
        .iter()
        .filter(|s| s["source"] == "dns")
        .map(|s| {
            s["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("bad addr in {s}"))
        })
        .collect()
}

/// The admin API's entry for server `addr` of upstream `name`.
async fn server_entry(admin: SocketAddr, name: &str, addr: SocketAddr) -> Value {
    let v = upstream_json(admin, name).await;
    v["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no server list in {v}"))
        .iter()
        .find(|s| s["addr"] == addr.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{addr} not listed in {v}"))
}

/// Polls `check` every `POLL` until it gives a value; panics after `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "no {what} within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the admin API lists exactly `want` as upstream `name`'s DNS
/// servers; returns how long that took.
async fn wait_dns_servers(admin: SocketAddr, name: &str, want: &BTreeSet<SocketAddr>) -> Duration {
    let start = Instant::now();
    loop {
        let now = dns_servers(admin, name).await;
        if &now == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < EVENT,
            "upstream {name}: DNS servers {now:?} after {EVENT:?}, expected {want:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the admin API says server `addr` of upstream `name` is (or is not)
/// eligible for traffic.
async fn wait_eligible(admin: SocketAddr, name: &str, addr: SocketAddr, eligible: bool) {
    until(&format!("{addr} eligible: {eligible}"), EVENT, || async {
        (server_entry(admin, name, addr).await["eligible"] == eligible).then_some(())
    })
    .await
}

async fn metrics(admin: SocketAddr) -> String {
    let (status, v) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    v.as_str().expect("metrics are text").to_owned()
}

/// `switchyard_dns_resolutions_total{upstream, name, result}` (0 when absent).
async fn resolutions(admin: SocketAddr, upstream: &str, name: &str, result: &str) -> f64 {
    let m = metrics(admin).await;
    sample(
        &m,
        "switchyard_dns_resolutions_total",
        &[("upstream", upstream), ("name", name), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Waits until `resolutions(...)` reaches `n`.
async fn wait_resolutions(admin: SocketAddr, upstream: &str, name: &str, result: &str, n: f64) {
    until(
        &format!("{n} resolutions of {name} with result {result}"),
        EVENT,
        || async { (resolutions(admin, upstream, name, result).await >= n).then_some(()) },
    )
    .await
}

/// The `/status.json` `discovery` entry of (`upstream`, `name`).
async fn discovery_entry(admin: SocketAddr, upstream: &str, name: &str) -> Value {
    let (status, v) = admin_get(admin, "/status.json").await;
    assert_eq!(status, 200, "{v}");
    v["discovery"]
        .as_array()
        .unwrap_or_else(|| panic!("no discovery array in /status.json: {v}"))
        .iter()
        .find(|d| d["upstream"] == upstream && d["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no discovery entry for {upstream}/{name} in {v}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// `n` GETs of `path` over one keep-alive connection; the answering origins in
/// order. Every answer must be a 200 from an origin.
async fn origins_of(addr: SocketAddr, path: &str, n: usize) -> Vec<String> {
    let mut c = Client::new(addr);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = c.get(path).await.expect("an answer");
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        out.push(r.origin().expect("answered by an origin").to_owned());
    }
    out
}

/// How many times each origin answered.
fn tally(seen: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in seen {
        *m.entry(s.clone()).or_default() += 1;
    }
    m
}

/// Every sample of a load run that is not a 200 from an origin, described.
fn failures(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| !s.ok() || s.origin().is_none())
        .map(|s| format!("{:?}", s.result))
        .collect()
}

/// Asserts a load run saw answers, all of them 200s from an origin.
fn assert_no_failure(samples: &[Sample]) {
    let failed = failures(samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(samples.len() > 50, "only {} requests ran", samples.len());
}

// ---------------------------------------------------------------------------------
// 1. Scaling under load
// ---------------------------------------------------------------------------------

/// The acceptance test: a fleet scaled 3 → 6 → 2 by its A records under
/// continuous load fails no request; the added servers get traffic; the removed
/// ones get no new request after they are gone, and a slow request each was
/// serving when its address left the answer completes with 200.
#[tokio::test]
async fn scaling_3_to_6_to_2_under_load_fails_no_request() {
    let dns = DnsServer::start();
    let mut fleet = Fleet::start(NET_SCALE, 3).await;
    let name = "scale.fleet.test";
    dns.set_a(name, 1, &fleet.v4(&[1, 2, 3]));
    let entry = resolve_entry(&fleet.addr_of(name), "");
    let p = start(&config(&dns, FOLLOW_1S, &[entry], "", "")).await;
    wait_dns_servers(p.admin, "u", &fleet.addrs(&[1, 2, 3])).await;

    let load = Load::start(p.addr, 4, "/", Duration::from_millis(2));
    fleet.wait_traffic(&[1, 2, 3], 5).await;

    // 3 → 6: the new servers listen before their addresses are published.
    fleet.grow(6).await;
    let all = [1, 2, 3, 4, 5, 6];
    dns.set_a(name, 1, &fleet.v4(&all));
    wait_dns_servers(p.admin, "u", &fleet.addrs(&all)).await;
    fleet.wait_traffic(&[4, 5, 6], 5).await;

    // Slow requests spread over the six (round robin), each on its own connection;
    // 8 s leaves ample time for the removal to show while they are in flight.
    let slow: Vec<JoinHandle<(Result<Reply, String>, Instant)>> = (0..12)
        .map(|_| {
            let addr = p.addr;
            tokio::spawn(async move {
                let r = Client::new(addr).get("/slow?delay=8s").await;
                (r, Instant::now())
            })
        })
        .collect();
    let removed = [1, 3, 4, 6];
    let kept = [2, 5];
    let slow_on = |which: &[usize]| -> usize {
        which
            .iter()
            .map(|&i| fleet.get(i).origin.count(&Method::GET, "/slow"))
            .sum()
    };
    until("the 12 slow requests to arrive", EVENT, || async {
        (slow_on(&all) == 12).then_some(())
    })
    .await;
    assert!(
        slow_on(&removed) >= 1,
        "no slow request is on a server about to be removed"
    );

    // 6 → 2.
    dns.set_a(name, 1, &fleet.v4(&kept));
    wait_dns_servers(p.admin, "u", &fleet.addrs(&kept)).await;
    let gone_at = Instant::now();
    // Requests that picked a removed server just before the change have arrived
    // once the kept ones have served 50 more each; from then on nothing new.
    for &i in &kept {
        let m = fleet.get(i);
        m.origin.wait_requests(m.requests() + 50, EVENT).await;
    }
    let before: Vec<usize> = removed.iter().map(|&i| fleet.get(i).requests()).collect();
    for &i in &kept {
        let m = fleet.get(i);
        m.origin.wait_requests(m.requests() + 100, EVENT).await;
    }
    let after: Vec<usize> = removed.iter().map(|&i| fleet.get(i).requests()).collect();
    assert_eq!(
        before, after,
        "removed servers {removed:?} got new requests after leaving the answer"
    );

    // The slow requests all complete; those on removed servers were still in
    // flight when their servers were gone from the admin API.
    let mut finished_on_removed = 0;
    for h in slow {
        let (r, done) = h.await.expect("slow request task");
        let r = r.unwrap_or_else(|e| panic!("slow request failed: {e}"));
        assert_eq!(r.status, 200, "{r:?}");
        let origin = r.origin().expect("answered by an origin");
        let i = fleet.by_name(origin).expect("a member");
        if removed.contains(&i) {
            assert!(
                done > gone_at,
                "the slow request on {origin} ended before its server was removed"
            );
            finished_on_removed += 1;
        }
    }
    assert!(finished_on_removed >= 1);

    let samples = load.finish().await;
    assert_no_failure(&samples);
    p.running.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------
// 2. Warming
// ---------------------------------------------------------------------------------

/// With a health check, an added address takes no request before its first
/// passing probe: its health endpoint fails first (it is probed and listed, and
/// gets nothing), then passes, and only then does traffic come.
#[tokio::test]
async fn an_added_server_gets_no_request_before_its_first_passing_check() {
    let dns = DnsServer::start();
    let fleet = Fleet::start(NET_WARM, 3).await;
    let name = "warm.fleet.test";
    dns.set_a(name, 1, &fleet.v4(&[1, 2]));
    let entry = resolve_entry(&fleet.addr_of(name), "");
    let p = start(&config(&dns, FOLLOW_1S, &[entry], "", &health_check("u"))).await;
    wait_dns_servers(p.admin, "u", &fleet.addrs(&[1, 2])).await;
    // The first two warm too: the load starts once they take traffic.
    for i in [1, 2] {
        wait_eligible(p.admin, "u", fleet.get(i).addr, true).await;
    }
    let load = Load::start(p.addr, 2, "/", Duration::from_millis(5));
    fleet.wait_traffic(&[1, 2], 5).await;

    let new = fleet.get(3);
    new.origin.set_health(Mode::Status(503));
    dns.set_a(name, 1, &fleet.v4(&[1, 2, 3]));
    wait_dns_servers(p.admin, "u", &fleet.addrs(&[1, 2, 3])).await;
    until("three failed probes of the new server", EVENT, || async {
        (new.origin.health_checks() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        new.requests(),
        0,
        "the new server got requests before any probe passed"
    );
    let entry = server_entry(p.admin, "u", new.addr).await;
    assert_eq!(entry["eligible"], false, "{entry}");
    assert_eq!(entry["source"], "dns", "{entry}");

    let passing_from = Instant::now();
    new.origin.set_health(Mode::Normal);
    new.origin.wait_requests(1, EVENT).await;
    let first = new
        .origin
        .hits()
        .into_iter()
        .find(|h| !h.is_health())
        .expect("a request");
    assert!(
        first.at > passing_from,
        "a request reached the new server before its health endpoint passed"
    );
    wait_eligible(p.admin, "u", new.addr, true).await;

    let samples = load.finish().await;
    assert_no_failure(&samples);
    p.running.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------
// 3. TTLs
// ---------------------------------------------------------------------------------

/// The resolutions of a name: its A queries, those less than 300 ms after the
/// previous one counted with it (a retry, or UDP then TCP, is one resolution).
fn resolutions_at(dns: &DnsServer, name: &str) -> Vec<Instant> {
    let mut out: Vec<Instant> = Vec::new();
    for t in dns.query_times(name, RecordType::A) {
        if out
            .last()
            .is_none_or(|&l| t.duration_since(l) >= Duration::from_millis(300))
        {
            out.push(t);
        }
    }
    out
}

/// Waits for `n` resolutions of `name`, then returns the intervals between them,
/// the first one left out (a start-up may resolve twice).
async fn intervals(dns: &DnsServer, name: &str, n: usize, limit: Duration) -> Vec<Duration> {
    let times = until(&format!("{n} resolutions of {name}"), limit, || async {
        let t = resolutions_at(dns, name);
        (t.len() >= n).then_some(t)
    })
    .await;
    times.windows(2).skip(1).map(|w| w[1] - w[0]).collect()
}

/// Asserts every interval lies in [lo, hi] and their mean in [mean_lo, mean_hi].
fn assert_intervals(name: &str, iv: &[Duration], lo: f64, hi: f64, mean_lo: f64, mean_hi: f64) {
    let secs: Vec<f64> = iv.iter().map(Duration::as_secs_f64).collect();
    let mean = secs.iter().sum::<f64>() / secs.len() as f64;
    for s in &secs {
        assert!(
            (lo..=hi).contains(s),
            "{name}: re-resolved after {s:.2}s, expected {lo}-{hi}s (all: {secs:.2?})"
        );
    }
    assert!(
        (mean_lo..=mean_hi).contains(&mean),
        "{name}: mean interval {mean:.2}s, expected {mean_lo}-{mean_hi}s (all: {secs:.2?})"
    );
}

/// A record TTL of 1 s under `min_ttl = "2s"` is re-resolved about every 2 s, not
/// every second; a TTL of 600 s under `valid = "3s"` about every 3 s. (Both names
/// in one proxy: the clamp is the same for both.)
#[tokio::test]
async fn re_resolution_follows_the_ttl_clamped_by_min_ttl_and_capped_by_valid() {
    let dns = DnsServer::start();
    let short = "short.ttl.test";
    let long = "long.ttl.test";
    dns.set_a(short, 1, &[Ipv4Addr::new(127, 0, NET_TTL, 1)]);
    dns.set_a(long, 600, &[Ipv4Addr::new(127, 0, NET_TTL, 2)]);
    // AAAA records of the same TTL: a resolver that asks for both sees one TTL
    // per name (not NODATA's negative TTL of 1 s for AAAA).
    dns.set_aaaa(short, 1, &[Ipv6Addr::LOCALHOST]);
    dns.set_aaaa(long, 600, &[Ipv6Addr::LOCALHOST]);
    let text = format!(
        "{ADMIN}{PUBLIC}{}\
         [[route]]\npath = \"/short/\"\nupstream = \"short\"\n\n\
         [[route]]\npath = \"/long/\"\nupstream = \"long\"\n\n\
         [upstream.short]\nservers = [{}]\n\n[upstream.long]\nservers = [{}]\n\n",
        resolver(&dns, "min_ttl = \"2s\"\nvalid = \"3s\"\nmax_ttl = \"5m\"\n"),
        resolve_entry(&format!("{short}:8000"), ""),
        resolve_entry(&format!("{long}:8000"), ""),
    );
    let p = start(&text).await;
    let limit = Duration::from_secs(40);
    let (iv_short, iv_long) = tokio::join!(
        intervals(&dns, short, 6, limit),
        intervals(&dns, long, 5, limit)
    );
    assert_intervals(short, &iv_short, 1.6, 3.0, 1.8, 2.5);
    assert_intervals(long, &iv_long, 2.5, 4.2, 2.7, 3.6);
    p.running.shutdown(Duration::from_secs(1)).await;
}

/// A TTL of 600 s under `max_ttl = "2s"` (and a long `valid`) is re-resolved
/// about every 2 s.
#[tokio::test]
async fn max_ttl_caps_a_long_ttl() {
    let dns = DnsServer::start();
    let name = "capped.ttl.test";
    dns.set_a(name, 600, &[Ipv4Addr::new(127, 0, NET_TTL, 3)]);
    dns.set_aaaa(name, 600, &[Ipv6Addr::LOCALHOST]);
    let entry = resolve_entry(&format!("{name}:8000"), "");
    let keys = "min_ttl = \"1s\"\nmax_ttl = \"2s\"\nvalid = \"30s\"\n";
    let p = start(&config(&dns, keys, &[entry], "", "")).await;
    let iv = intervals(&dns, name, 6, Duration::from_secs(40)).await;
    assert_intervals(name, &iv, 1.6, 3.0, 1.8, 2.5);
    p.running.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------
// 4. Failed answers
// ---------------------------------------------------------------------------------

/// `valid` in the failure tests: short, so that waiting past `valid` × 3 is quick.
const VALID_FAIL: Duration = Duration::from_secs(1);

/// A fleet of three under `answer` (a failure, or an empty answer) for longer
/// than `valid` × 3 and several re-resolutions: the last good set stays (listed
/// with source dns, taking traffic, `switchyard_dns_servers` 3), the failure is
/// counted under `result`, and `/status.json` keeps the time of the last good
/// answer (and, for a failure, says what went wrong). Answers again: the name
/// is followed again.
async fn a_failed_answer_keeps_the_last_good_set(net: u8, answer: Answer, result: &str) {
    let dns = DnsServer::start();
    let fleet = Fleet::start(net, 3).await;
    let name = format!("{result}.fail.test");
    dns.set_a(&name, 1, &fleet.v4(&[1, 2, 3]));
    let entry = resolve_entry(&fleet.addr_of(&name), "");
    let keys = format!("min_ttl = \"1s\"\nvalid = \"{}s\"\n", VALID_FAIL.as_secs());
    let p = start(&config(&dns, &keys, &[entry], "", "")).await;
    let three = fleet.addrs(&[1, 2, 3]);
    wait_dns_servers(p.admin, "u", &three).await;
    wait_resolutions(p.admin, "u", &fleet.addr_of(&name), "ok", 1.0).await;
    let seen = tally(&origins_of(p.addr, "/", 30).await);
    assert_eq!(seen.len(), 3, "{seen:?}");

    let t0 = Instant::now();
    let t0_unix = unix_now();
    dns.set_answer(&name, answer);
    until(
        "several failed resolutions over valid × 3",
        Duration::from_secs(30),
        || async {
            let enough = dns.queries_since(&name, t0) >= 3
                && t0.elapsed() >= VALID_FAIL * 3 + Duration::from_secs(1)
                && resolutions(p.admin, "u", &fleet.addr_of(&name), result).await >= 2.0;
            enough.then_some(())
        },
    )
    .await;

    assert_eq!(
        dns_servers(p.admin, "u").await,
        three,
        "the last good set was not kept through {answer:?}"
    );
    let seen = tally(&origins_of(p.addr, "/", 30).await);
    assert_eq!(seen.len(), 3, "traffic did not reach all three: {seen:?}");
    let m = metrics(p.admin).await;
    assert_eq!(
        sample(
            &m,
            "switchyard_dns_servers",
            &[("upstream", "u"), ("name", fleet.addr_of(&name).as_str())]
        ),
        Some(3.0),
        "{m}"
    );
    let d = discovery_entry(p.admin, "u", &fleet.addr_of(&name)).await;
    assert_eq!(d["servers"], 3, "{d}");
    let last_good = d["last_good"].as_f64().unwrap_or_else(|| panic!("{d}"));
    assert!(
        last_good <= t0_unix + 1.0,
        "last_good moved on without a good answer: {d}"
    );
    if result == "error" {
        assert!(
            d["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "no last_error: {d}"
        );
    }

    dns.set_a(&name, 1, &fleet.v4(&[1, 2]));
    dns.set_answer(&name, Answer::Records);
    wait_dns_servers(p.admin, "u", &fleet.addrs(&[1, 2])).await;
    p.running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn servfail_keeps_the_last_good_set() {
    a_failed_answer_keeps_the_last_good_set(NET_SERVFAIL, Answer::ServFail, "error").await;
}

/// The DNS server drops the queries: every resolution times out.
#[tokio::test]
async fn a_silent_dns_server_keeps_the_last_good_set() {
    a_failed_answer_keeps_the_last_good_set(NET_SILENT, Answer::Silent, "error").await;
}

#[tokio::test]
async fn an_empty_answer_keeps_the_last_good_set() {
    a_failed_answer_keeps_the_last_good_set(NET_EMPTY, Answer::Empty, "empty").await;
}

/// NXDOMAIN after a success keeps the set (and traffic) until `valid` × 3 has
/// passed since the last good answer; then the name's servers go (503: the
/// upstream has no other), and come back with the name.
#[tokio::test]
async fn nxdomain_keeps_the_set_for_three_times_valid_then_drops_it() {
    let dns = DnsServer::start();
    let fleet = Fleet::start(NET_NXDOMAIN, 3).await;
    let name = "gone.fleet.test";
    dns.set_a(name, 1, &fleet.v4(&[1, 2, 3]));
    let entry = resolve_entry(&fleet.addr_of(name), "");
    // Re-resolved every second (TTL 1 s); kept for 6 s after the last success.
    let keys = "min_ttl = \"1s\"\nvalid = \"2s\"\n";
    let p = start(&config(&dns, keys, &[entry], "", "")).await;
    let three = fleet.addrs(&[1, 2, 3]);
    wait_dns_servers(p.admin, "u", &three).await;
    wait_resolutions(p.admin, "u", &fleet.addr_of(name), "ok", 2.0).await;

    let t0 = Instant::now();
    dns.set_answer(name, Answer::NxDomain);
    wait_resolutions(p.admin, "u", &fleet.addr_of(name), "nxdomain", 1.0).await;
    // The last success was a re-resolution (1 s, and some scheduling slack)
    // before t0 at most, so the set stays until t0 + 4 s at least (dropping it at
    // the first NXDOMAIN would be within a second); it must go by t0 + 6 s and
    // the next re-resolution or two.
    let mut client = Client::new(p.addr);
    let gone = loop {
        let now = dns_servers(p.admin, "u").await;
        if now.is_empty() {
            break t0.elapsed();
        }
        assert_eq!(now, three, "the name's servers must stay or go together");
        let r = client.get("/").await.expect("an answer");
        assert_eq!(r.status, 200, "while the set is kept: {r:?}");
        assert!(t0.elapsed() < Duration::from_secs(12), "never dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        gone >= Duration::from_secs(4),
        "dropped {gone:?} after the first NXDOMAIN answers; valid × 3 is 6 s"
    );
    let r = Client::new(p.addr).get("/").await.expect("an answer");
    assert_eq!(r.status, 503, "no server left: {r:?}");
    let m = metrics(p.admin).await;
    assert_eq!(
        sample(
            &m,
            "switchyard_dns_servers",
            &[("upstream", "u"), ("name", fleet.addr_of(name).as_str())]
        ),
        Some(0.0),
        "{m}"
    );

    dns.set_answer(name, Answer::Records);
    wait_dns_servers(p.admin, "u", &three).await;
    let seen = tally(&origins_of(p.addr, "/", 30).await);
    assert_eq!(seen.len(), 3, "{seen:?}");
    p.running.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------
// 5. SRV, AAAA, max_servers
// ---------------------------------------------------------------------------------

/// Two SRV records of priority 10 and one of priority 20: the 20 is a backup
/// (listed as such) and gets traffic only while both 10s are down.
#[tokio::test]
async fn srv_records_of_a_lower_priority_are_backups() {
    let dns = DnsServer::start();
    let fleet = Fleet::start(NET_SRV_BACKUP, 3).await;
    let service = "_http._tcp.backup.srv.test";
    let port = fleet.port;
    dns.set_srv(
        service,
        1,
        &[
            Srv::new(10, 1, port, "p1.backup.srv.test"),
            Srv::new(10, 1, port, "p2.backup.srv.test"),
            Srv::new(20, 1, port, "b.backup.srv.test"),
        ],
    );
    dns.set_a("p1.backup.srv.test", 1, &fleet.v4(&[1]));
    dns.set_a("p2.backup.srv.test", 1, &fleet.v4(&[2]));
    dns.set_a("b.backup.srv.test", 1, &fleet.v4(&[3]));
    let p = start(&config(
        &dns,
        FOLLOW_1S,
        &[srv_entry(service)],
        "",
        &health_check("u"),
    ))
    .await;
    wait_dns_servers(p.admin, "u", &fleet.addrs(&[1, 2, 3])).await;
    for (i, backup) in [(1, false), (2, false), (3, true)] {
        let e = server_entry(p.admin, "u", fleet.get(i).addr).await;
        assert_eq!(e["backup"], backup, "{e}");
        wait_eligible(p.admin, "u", fleet.get(i).addr, true).await;
    }
    let (p1, p2, b) = (fleet.get(1), fleet.get(2), fleet.get(3));

    let seen = tally(&origins_of(p.addr, "/", 40).await);
    assert_eq!(seen.get(b.name()), None, "the backup got traffic: {seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");

    p1.origin.set_health(Mode::Status(503));
    p2.origin.set_health(Mode::Status(503));
    wait_eligible(p.admin, "u", p1.addr, false).await;
    wait_eligible(p.admin, "u", p2.addr, false).await;
    let seen = tally(&origins_of(p.addr, "/", 20).await);
    assert_eq!(
        seen.get(b.name()),
        Some(&20),
        "the backup must take everything while the primaries are down: {seen:?}"
    );

    p1.origin.set_health(Mode::Normal);
    p2.origin.set_health(Mode::Normal);
    wait_eligible(p.admin, "u", p1.addr, true).await;
    wait_eligible(p.admin, "u", p2.addr, true).await;
    let before = b.requests();
    let seen = tally(&origins_of(p.addr, "/", 40).await);
    assert_eq!(
        b.requests(),
        before,
        "the backup got traffic again: {seen:?}"
    );
    p.running.shutdown(Duration::from_secs(1)).await;
}

/// SRV weights 3, 1 and 0 become server weights 3, 1 and 1 (the admin API's
/// `weight`, and round-robin shares), and each server's port is its record's.
#[tokio::test]
async fn srv_weights_become_weights_and_ports_come_from_the_records() {
    let dns = DnsServer::start();
    // Three servers on three ports.
    let mut members = Vec::new();
    for (i, name) in ["w3", "w1", "w0"].iter().enumerate() {
        let host = u8::try_from(i + 1).expect("small");
        let at = SocketAddr::from(([127, 0, NET_SRV_WEIGHT, host], 0));
        members.push(Member::start(name, at).await);
    }
    let service = "_http._tcp.weights.srv.test";
    let records: Vec<Srv> = members
        .iter()
        .zip([3, 1, 0])
        .map(|(m, w)| {
            Srv::new(
                10,
                w,
                m.addr.port(),
                &format!("{}.weights.srv.test", m.name()),
            )
        })
        .collect();
    dns.set_srv(service, 1, &records);
    for m in &members {
        dns.set_a(&format!("{}.weights.srv.test", m.name()), 1, &[m.v4()]);
    }
    let p = start(&config(&dns, FOLLOW_1S, &[srv_entry(service)], "", "")).await;
    let want: BTreeSet<SocketAddr> = members.iter().map(|m| m.addr).collect();
    wait_dns_servers(p.admin, "u", &want).await;
    for (m, w) in members.iter().zip([3, 1, 1]) {
        let e = server_entry(p.admin, "u", m.addr).await;
        assert_eq!(e["weight"], w, "{e}");
        assert_eq!(e["backup"], false, "{e}");
    }
    let seen = tally(&origins_of(p.addr, "/", 50).await);
    for (name, want) in [("w3", 30i64), ("w1", 10), ("w0", 10)] {
        let got = seen.get(name).copied().unwrap_or(0) as i64;
        assert!(
            (got - want).abs() <= 2,
            "{name}: {got} of 50, expected {want} (weights 3:1:1): {seen:?}"
        );
    }
    p.running.shutdown(Duration::from_secs(1)).await;
}

/// A name with an A and an AAAA record is two servers, both taking traffic.
#[tokio::test]
async fn aaaa_records_are_servers_too() {
    let dns = DnsServer::start();
    let v6 = Member::start("v6", SocketAddr::from((Ipv6Addr::LOCALHOST, 0))).await;
    let port = v6.addr.port();
    let v4 = Member::start("v4", SocketAddr::from(([127, 0, NET_AAAA, 1], port))).await;
    let name = "dual.stack.test";
    dns.set_a(name, 1, &[v4.v4()]);
    dns.set_aaaa(name, 1, &[Ipv6Addr::LOCALHOST]);
    let entry = resolve_entry(&format!("{name}:{port}"), "");
    let p = start(&config(&dns, FOLLOW_1S, &[entry], "", "")).await;
    wait_dns_servers(p.admin, "u", &BTreeSet::from([v4.addr, v6.addr])).await;
    let seen = tally(&origins_of(p.addr, "/", 20).await);
    for origin in ["v4", "v6"] {
        assert!(
            seen.get(origin).is_some_and(|&n| n >= 5),
            "{origin} should take about half: {seen:?}"
        );
    }
    p.running.shutdown(Duration::from_secs(1)).await;
}

/// An answer of 200 addresses (over TCP: too large for UDP) under
/// `max_servers = 5` gives 5 servers, and the addresses beyond the cap get no
/// connection. The 5 stay the same across re-resolutions although the DNS server
/// rotates its answers (a choice by position would churn the servers every TTL).
#[tokio::test]
async fn max_servers_caps_a_runaway_answer() {
    let dns = DnsServer::start();
    let origin = Origin::start("any").await;
    let mut relays: Vec<Relay> = Vec::new();
    let mut port = 0;
    for host in 1..=200u8 {
        let r = Relay::start(
            SocketAddr::from(([127, 0, NET_MAX, host], port)),
            origin.addr(),
        );
        port = r.addr.port();
        relays.push(r);
    }
    let name = "runaway.fleet.test";
    let ips: Vec<Ipv4Addr> = (1..=200u8)
        .map(|h| Ipv4Addr::new(127, 0, NET_MAX, h))
        .collect();
    dns.set_a(name, 1, &ips);
    let entry = resolve_entry(&format!("{name}:{port}"), "");
    let p = start(&config(&dns, FOLLOW_1S, &[entry], "max_servers = 5\n", "")).await;
    let chosen = until("servers discovered", EVENT, || async {
        let s = dns_servers(p.admin, "u").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(chosen.len(), 5, "max_servers = 5, got {chosen:?}");
    let all: BTreeSet<SocketAddr> = relays.iter().map(|r| r.addr).collect();
    assert!(chosen.is_subset(&all), "{chosen:?}");
    assert!(
        dns.log().iter().any(|q| q.name == name && q.tcp),
        "the 200-address answer should have come over TCP"
    );
    let m = metrics(p.admin).await;
    assert_eq!(
        sample(
            &m,
            "switchyard_dns_servers",
            &[
                ("upstream", "u"),
                ("name", format!("{name}:{port}").as_str())
            ]
        ),
        Some(5.0),
        "{m}"
    );

    let seen = origins_of(p.addr, "/", 50).await;
    assert_eq!(seen.len(), 50);
    for r in &relays {
        if !chosen.contains(&r.addr) {
            assert_eq!(r.accepted(), 0, "{} is beyond the cap", r.addr);
        }
    }

    // Three more resolutions: the same five.
    let since = Instant::now();
    until("three more resolutions", EVENT, || async {
        (dns.queries_since(name, since) >= 3).then_some(())
    })
    .await;
    assert_eq!(dns_servers(p.admin, "u").await, chosen);
    p.running.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------
// 6. Two replicas
// ---------------------------------------------------------------------------------

/// Starts a replica off the test's runtime (the start blocks).
async fn replica(file: PathBuf) -> Replica {
    tokio::task::spawn_blocking(move || Replica::start(&file, 1))
        .await
        .expect("replica start")
}

/// The origin that answers each of `keys` through the proxy at `addr`.
async fn placement(addr: SocketAddr, keys: &[String]) -> Vec<String> {
    let mut c = Client::new(addr);
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let r = c
            .send("GET", "/", &[("x-key", k.as_str())], None)
            .await
            .unwrap_or_else(|e| panic!("key {k}: {e}"));
        assert_eq!(r.status, 200, "key {k}: {r:?}");
        out.push(r.origin().expect("an origin").to_owned());
    }
    out
}

/// Two proxy processes with `balance = "hash"` on the same DNS server place
/// 1 000 keys identically, although they learnt the set differently: the first
/// saw four addresses, then one go and two come; the second started with the
/// final five (in a rotated order).
#[tokio::test]
async fn two_replicas_place_a_thousand_keys_identically() {
    let dns = DnsServer::start();
    let fleet = Fleet::start(NET_REPLICAS, 6).await;
    let name = "hash.fleet.test";
    dns.set_a(name, 1, &fleet.v4(&[1, 2, 3, 4]));
    let entry = resolve_entry(&fleet.addr_of(name), "");
    let text = config(
        &dns,
        FOLLOW_1S,
        &[entry],
        "balance = \"hash\"\nhash_key = \"header:X-Key\"\n",
        "",
    );
    let dir = TempDir::new("discovery-replicas");
    let file = dir.write("switchyard.toml", &text);

    let a = replica(file.clone()).await;
    wait_dns_servers(a.admin, "u", &fleet.addrs(&[1, 2, 3, 4])).await;
    let last = [2, 3, 4, 5, 6];
    dns.set_a(name, 1, &fleet.v4(&last));
    wait_dns_servers(a.admin, "u", &fleet.addrs(&last)).await;
    let b = replica(file).await;
    wait_dns_servers(b.admin, "u", &fleet.addrs(&last)).await;

    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
    let (via_a, via_b) = tokio::join!(placement(a.addr, &keys), placement(b.addr, &keys));
    let differ: Vec<(&String, &String, &String)> = keys
        .iter()
        .zip(via_a.iter().zip(via_b.iter()))
        .filter(|(_, (x, y))| x != y)
        .map(|(k, (x, y))| (k, x, y))
        .collect();
    assert!(
        differ.is_empty(),
        "{} of 1000 keys placed differently, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
    let used = tally(&via_a);
    assert!(
        !used.contains_key("s1"),
        "a removed server got keys: {used:?}"
    );
    assert!(
        used.len() >= 4,
        "keys spread over too few servers: {used:?}"
    );
}

// ---------------------------------------------------------------------------------
// 7. Reloads
// ---------------------------------------------------------------------------------

/// The discovered servers of one snapshot: address → long-lived state.
fn states(running: &Running) -> BTreeMap<SocketAddr, Arc<switchyard::upstream::ServerState>> {
    let snap = running.shared.load();
    let u = snap
        .upstreams
        .iter()
        .find(|u| &*u.name == "u")
        .expect("upstream u");
    u.servers
        .iter()
        .map(|s| (s.state.addr(), Arc::clone(&s.state)))
        .collect()
}

/// A file reload under load keeps the discovered servers, with their state (the
/// same `ServerState`, request counts, the health verdicts: one down stays down,
/// the others take traffic at once, no warming again), fails no request, and the
/// name is still followed afterwards.
#[tokio::test]
async fn discovered_servers_and_their_state_survive_a_file_reload() {
    let dns = DnsServer::start();
    let fleet = Fleet::start(NET_RELOAD, 4).await;
    let name = "reload.fleet.test";
    dns.set_a(name, 1, &fleet.v4(&[1, 2, 3]));
    let entry = resolve_entry(&fleet.addr_of(name), "");
    let text = config(&dns, FOLLOW_1S, &[entry], "", &health_check("u"));
    let dir = TempDir::new("discovery-reload");
    let p = start_file(&dir, &text);
    let three = fleet.addrs(&[1, 2, 3]);
    wait_dns_servers(p.admin, "u", &three).await;
    for &a in &three {
        wait_eligible(p.admin, "u", a, true).await;
    }
    let down = fleet.get(3);
    down.origin.set_health(Mode::Status(503));
    wait_eligible(p.admin, "u", down.addr, false).await;

    let load = Load::start(p.addr, 2, "/", Duration::from_millis(5));
    fleet.wait_traffic(&[1, 2], 5).await;
    let before = states(&p.running);
    assert_eq!(before.keys().copied().collect::<BTreeSet<_>>(), three);
    let mut requests_before = BTreeMap::new();
    for &a in &three {
        let e = server_entry(p.admin, "u", a).await;
        requests_before.insert(a, e["requests"].as_u64().expect("requests"));
    }

    let reloaded =
        format!("{text}[[route]]\npath_exact = \"/extra\"\nrespond = {{ body = \"extra\\n\" }}\n");
    dir.write("config.toml", &reloaded);
    p.running.control.reload().expect("reload succeeds");

    // At once: the same servers, with the same state.
    let after = states(&p.running);
    assert_eq!(after.keys().copied().collect::<BTreeSet<_>>(), three);
    for (a, s) in &after {
        assert!(
            Arc::ptr_eq(s, &before[a]),
            "{a} has a new state after the reload"
        );
    }
    assert_eq!(dns_servers(p.admin, "u").await, three);
    for &i in &[1, 2] {
        let e = server_entry(p.admin, "u", fleet.get(i).addr).await;
        assert_eq!(e["eligible"], true, "warming again after a reload: {e}");
    }
    let e = server_entry(p.admin, "u", down.addr).await;
    assert_eq!(
        e["eligible"], false,
        "the down server came up by a reload: {e}"
    );
    for &a in &three {
        let e = server_entry(p.admin, "u", a).await;
        let n = e["requests"].as_u64().expect("requests");
        assert!(n >= requests_before[&a], "{a}: requests went back: {e}");
    }
    let r = Client::new(p.addr).get("/extra").await.expect("an answer");
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "extra\n"));
    for &i in &[1, 2] {
        let m = fleet.get(i);
        m.origin.wait_requests(m.requests() + 5, EVENT).await;
    }

    // Still followed.
    dns.set_a(name, 1, &fleet.v4(&[1, 2, 3, 4]));
    wait_dns_servers(p.admin, "u", &fleet.addrs(&[1, 2, 3, 4])).await;
    fleet.wait_traffic(&[4], 1).await;

    let samples = load.finish().await;
    assert_no_failure(&samples);
    p.running.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------
// 8. Metrics and status
// ---------------------------------------------------------------------------------

/// The metrics and `/status.json` of discovery: per name, resolutions by
/// result, addresses in use and the time of the last good answer; the
/// `discovery` entries (kind, servers, last_good, last_error) for an A name and
/// an SRV name; the HTML page names both; a resolve entry's `weight` applies to
/// every address it yields.
#[tokio::test]
async fn metrics_and_status_report_each_discovered_name() {
    let dns = DnsServer::start();
    let fleet = Fleet::start(NET_OBSERVE, 5).await;
    let name = "web.observe.test";
    let service = "_http._tcp.srv.observe.test";
    dns.set_a(name, 1, &fleet.v4(&[1, 2, 3]));
    dns.set_srv(
        service,
        1,
        &[
            Srv::new(10, 1, fleet.port, "t1.observe.test"),
            Srv::new(10, 1, fleet.port, "t2.observe.test"),
        ],
    );
    dns.set_a("t1.observe.test", 1, &fleet.v4(&[4]));
    dns.set_a("t2.observe.test", 1, &fleet.v4(&[5]));
    let text = format!(
        "{ADMIN}{PUBLIC}{}\
         [[route]]\npath = \"/srv/\"\nupstream = \"srv\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"web\"\n\n\
         [upstream.web]\nservers = [{}]\n\n[upstream.srv]\nservers = [{}]\n\n",
        // `valid` 3 s: a name whose answer failed is asked again within 3 s.
        resolver(&dns, "min_ttl = \"1s\"\nvalid = \"3s\"\n"),
        resolve_entry(&fleet.addr_of(name), "weight = 2"),
        srv_entry(service),
    );
    let started = unix_now();
    let p = start(&text).await;
    wait_dns_servers(p.admin, "web", &fleet.addrs(&[1, 2, 3])).await;
    wait_dns_servers(p.admin, "srv", &fleet.addrs(&[4, 5])).await;
    for &i in &[1, 2, 3] {
        let e = server_entry(p.admin, "web", fleet.get(i).addr).await;
        assert_eq!(
            e["weight"], 2,
            "the entry's weight applies to every address: {e}"
        );
    }
    wait_resolutions(p.admin, "web", &fleet.addr_of(name), "ok", 1.0).await;
    wait_resolutions(p.admin, "srv", service, "ok", 1.0).await;

    let m = metrics(p.admin).await;
    let web_name = fleet.addr_of(name);
    let web = [("upstream", "web"), ("name", web_name.as_str())];
    let srv = [("upstream", "srv"), ("name", service)];
    assert_eq!(sample(&m, "switchyard_dns_servers", &web), Some(3.0), "{m}");
    assert_eq!(sample(&m, "switchyard_dns_servers", &srv), Some(2.0), "{m}");
    for labels in [&web, &srv] {
        let t = sample(&m, "switchyard_dns_last_success_seconds", labels)
            .unwrap_or_else(|| panic!("no last success for {labels:?}:\n{m}"));
        assert!(
            (started - 1.0..=unix_now() + 1.0).contains(&t),
            "last success {t} is not Unix time since the start ({started})"
        );
    }

    let d = discovery_entry(p.admin, "web", &fleet.addr_of(name)).await;
    assert_eq!(d["kind"], "a", "{d}");
    assert_eq!(d["servers"], 3, "{d}");
    assert!(d["last_error"].is_null(), "{d}");
    let good = d["last_good"].as_f64().unwrap_or_else(|| panic!("{d}"));
    assert!((started - 1.0..=unix_now() + 1.0).contains(&good), "{d}");
    let d = discovery_entry(p.admin, "srv", service).await;
    assert_eq!(d["kind"], "srv", "{d}");
    assert_eq!(d["servers"], 2, "{d}");
    assert!(d["last_good"].is_number(), "{d}");

    let (status, page) = admin_get(p.admin, "/status").await;
    assert_eq!(status, 200);
    let page = page.as_str().expect("an HTML page");
    assert!(page.contains(name) && page.contains(service), "{page}");

    // Each kind of failed answer is counted under its result, and shown.
    let t_fail = unix_now();
    dns.set_answer(name, Answer::ServFail);
    wait_resolutions(p.admin, "web", &web_name, "error", 1.0).await;
    let d = discovery_entry(p.admin, "web", &fleet.addr_of(name)).await;
    assert!(
        d["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{d}"
    );
    assert!(
        d["last_good"].as_f64().is_some_and(|g| g <= t_fail + 1.0),
        "{d}"
    );
    assert_eq!(d["servers"], 3, "{d}");
    let m = metrics(p.admin).await;
    let last = sample(&m, "switchyard_dns_last_success_seconds", &web).expect("last success");
    assert!(
        last <= t_fail + 1.0,
        "last success moved on a SERVFAIL: {last}"
    );
    dns.set_answer(name, Answer::Empty);
    wait_resolutions(p.admin, "web", &web_name, "empty", 1.0).await;
    dns.set_answer(name, Answer::NxDomain);
    wait_resolutions(p.admin, "web", &web_name, "nxdomain", 1.0).await;
    let m = metrics(p.admin).await;
    assert_eq!(sample(&m, "switchyard_dns_servers", &web), Some(3.0), "{m}");
    p.running.shutdown(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------
// 9. switchyard check
// ---------------------------------------------------------------------------------

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Checked {
    /// The stderr lines that are warnings naming `what`.
    fn warnings_about(&self, what: &str) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.contains("warning") && l.contains(what))
            .collect()
    }
}

/// `switchyard check -c FILE`, off the test's runtime.
async fn check(file: PathBuf) -> Checked {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check")
            .arg("-c")
            .arg(&file)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .output()
            .expect("run switchyard check");
        Checked {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: start.elapsed(),
        }
    })
    .await
    .expect("check task")
}

/// `check` resolves `resolve = true` names through the file's `[resolver]` (the
/// machine's resolver knows none of these names) and reports one that does not
/// resolve (NXDOMAIN, an SRV name without records, a server that never answers)
/// as a warning: the file is valid, exit 0. A name that resolves gets no warning.
#[tokio::test]
async fn check_warns_about_a_name_that_does_not_resolve_through_the_files_resolver() {
    let dns = DnsServer::start();
    dns.set_a("ok.check.test", 60, &[Ipv4Addr::LOCALHOST]);
    dns.set_answer("hang.check.test", Answer::Silent);
    let dir = TempDir::new("discovery-check");

    let text = config(
        &dns,
        "",
        &[
            resolve_entry("ok.check.test:8000", ""),
            resolve_entry("missing.check.test:8000", ""),
            srv_entry("_http._tcp.missing.check.test"),
        ],
        "",
        "",
    );
    let out = check(dir.write("names.toml", &text)).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("configuration is valid"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.lines().any(|l| l.contains("warning")
            && l.replace("_http._tcp.missing.check.test", "")
                .contains("missing.check.test")),
        "no warning about missing.check.test:\n{}",
        out.stderr
    );
    assert!(
        !out.warnings_about("_http._tcp.missing.check.test")
            .is_empty(),
        "no warning about the SRV name:\n{}",
        out.stderr
    );
    assert!(
        out.warnings_about("ok.check.test").is_empty(),
        "a name that resolves was warned about:\n{}",
        out.stderr
    );
    assert!(
        dns.queries("ok.check.test") >= 1,
        "check did not ask the file's resolver"
    );
    assert!(dns.queries("missing.check.test") >= 1);
    assert!(dns.queries("_http._tcp.missing.check.test") >= 1);

    let text = config(
        &dns,
        "",
        &[resolve_entry("hang.check.test:8000", "")],
        "",
        "",
    );
    let out = check(dir.write("hang.toml", &text)).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        !out.warnings_about("hang.check.test").is_empty(),
        "no warning about a name whose server never answers:\n{}",
        out.stderr
    );
    assert!(dns.queries("hang.check.test") >= 1);
    assert!(
        out.took < Duration::from_secs(10),
        "check took {:?} on a silent DNS server (timeout {DNS_TIMEOUT})",
        out.took
    );
}
