//! Balancing end to end: real origins and the proxy on loopback, requests counted by
//! the origin that answered them (`x-origin`). The origins here are the test's own,
//! so a test can hold requests inside one of them, make one slower, and see how
//! many requests each is serving at any moment.

mod common;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Conn, Resp};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use switchyard::config::BalanceKind;
use switchyard::upstream::ServerState;
use switchyard::{Config, Running};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Sleep;

/// Bound on waiting for an event the test caused (a request reaching an origin).
const EVENT_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------
// Test origins
// ---------------------------------------------------------------------------------

/// Origins `a`, `b`, `c`, … whose behaviour the test steers: each can hold every
/// request until released, or answer after an extra delay (before the head or
/// before the body), and all publish how many requests each is handling right now.
struct Origins {
    addrs: Vec<SocketAddr>,
    /// Requests inside each origin's handler at this moment.
    active: watch::Sender<Vec<usize>>,
    /// While `true`, requests to that origin wait.
    hold: Vec<watch::Sender<bool>>,
    /// Extra delay of each origin before its response head.
    delay_ms: Vec<AtomicU64>,
    /// Extra delay of each origin between its response head and its body.
    body_delay_ms: Vec<AtomicU64>,
}

/// A one-chunk body sent after an optional pause.
struct LateBody {
    pause: Option<Pin<Box<Sleep>>>,
    data: Option<Bytes>,
}

impl Body for LateBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(p) = self.pause.as_mut() {
            if p.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }
}

/// Decrements an origin's active count however its handler ends.
struct Active<'a>(&'a Origins, usize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.send_modify(|v| v[self.1] -= 1);
    }
}

fn name(i: usize) -> String {
    char::from(b'a' + i as u8).to_string()
}

fn index(name: &str) -> usize {
    assert_eq!(name.len(), 1, "unexpected origin {name:?}");
    usize::from(name.as_bytes()[0] - b'a')
}

impl Origins {
    async fn start(n: usize) -> Arc<Origins> {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind(common::loopback0()).await.unwrap());
        }
        let origins = Arc::new(Origins {
            addrs: listeners.iter().map(|l| l.local_addr().unwrap()).collect(),
            active: watch::channel(vec![0; n]).0,
            hold: (0..n).map(|_| watch::channel(false).0).collect(),
            delay_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            body_delay_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
        });
        for (i, l) in listeners.into_iter().enumerate() {
            let origins = Arc::clone(&origins);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = l.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let origins = Arc::clone(&origins);
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |_req| {
                            let origins = Arc::clone(&origins);
                            async move { origins.handle(i).await }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        origins
    }

    async fn handle(&self, i: usize) -> Result<Response<LateBody>, Infallible> {
        self.active.send_modify(|v| v[i] += 1);
        let _active = Active(self, i);
        let mut held = self.hold[i].subscribe();
        let _ = held.wait_for(|h| !h).await;
        let delay = self.delay_ms[i].load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let body_delay = self.body_delay_ms[i].load(Ordering::SeqCst);
        let mut res = Response::new(LateBody {
            pause: (body_delay > 0)
                .then(|| Box::pin(tokio::time::sleep(Duration::from_millis(body_delay)))),
            data: Some(Bytes::from(format!("origin {}\n", name(i)))),
        });
        res.headers_mut()
            .insert("x-origin", name(i).parse().expect("a letter"));
        Ok(res)
    }

    fn hold(&self, i: usize, on: bool) {
        self.hold[i].send_replace(on);
    }

    fn hold_all(&self, on: bool) {
        for i in 0..self.addrs.len() {
            self.hold(i, on);
        }
    }

    fn set_delay(&self, i: usize, delay: Duration) {
        self.delay_ms[i].store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn set_body_delay(&self, i: usize, delay: Duration) {
        self.body_delay_ms[i].store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn active(&self) -> Vec<usize> {
        self.active.borrow().clone()
    }

    /// Waits (bounded) until the active counts satisfy `cond`, and returns them.
    async fn wait_active(&self, what: &str, cond: impl FnMut(&Vec<usize>) -> bool) -> Vec<usize> {
        let mut rx = self.active.subscribe();
        let seen = match tokio::time::timeout(EVENT_LIMIT, rx.wait_for(cond)).await {
            Ok(v) => v.expect("the sender lives in self").clone(),
            Err(_) => panic!("timed out waiting for {what}; active = {:?}", self.active()),
        };
        seen
    }
}

// ---------------------------------------------------------------------------------
// Proxy and clients
// ---------------------------------------------------------------------------------

/// A "public" listener, one route to upstream `u`, and `upstream` (the `[upstream.u]`
/// table), with `@0`, `@1`, … replaced by the origins' addresses.
fn config_text(addrs: &[SocketAddr], upstream: &str) -> String {
    let mut text = upstream.to_owned();
    for (i, a) in addrs.iter().enumerate().rev() {
        text = text.replace(&format!("@{i}"), &a.to_string());
    }
    format!(
        "{}[[route]]\npath = \"/\"\nupstream = \"u\"\n\n{text}",
        common::listeners(&["public"])
    )
}

fn config(addrs: &[SocketAddr], upstream: &str) -> Config {
    let text = config_text(addrs, upstream);
    Config::parse(Path::new("<test>"), &text)
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{text}"))
}

struct Proxy {
    running: Running,
    addr: SocketAddr,
}

impl Proxy {
    async fn start(addrs: &[SocketAddr], upstream: &str) -> Proxy {
        let running = common::start_proxy(&config_text(addrs, upstream)).await;
        let addr = running.addr("public").expect("listener bound");
        Proxy { running, addr }
    }

    /// The long-lived state of the server at `addr` in the current configuration.
    fn state(&self, addr: SocketAddr) -> Arc<ServerState> {
        let snapshot = self.running.shared.load();
        let s = snapshot.upstreams[0]
            .servers
            .iter()
            .find(|s| s.state.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not in the configuration"));
        Arc::clone(&s.state)
    }

    /// In-flight counts the proxy keeps for the given servers.
    fn inflight(&self, addrs: &[SocketAddr]) -> Vec<usize> {
        addrs.iter().map(|&a| self.state(a).inflight()).collect()
    }

    /// Waits (bounded) until the proxy's in-flight counts for `addrs` are `want`: a
    /// request leaves them when the proxy has finished its response, which the client
    /// may see a moment earlier. The proxy has no event for this, hence the polling.
    async fn wait_inflight(&self, addrs: &[SocketAddr], want: &[usize]) {
        let deadline = Instant::now() + EVENT_LIMIT;
        loop {
            let now = self.inflight(addrs);
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy in-flight {now:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `GET /` on a fresh connection with `headers`; must succeed.
    async fn get(&self, headers: &[(&str, &str)]) -> Resp {
        let r = common::send(self.addr, "GET", "/", headers, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r
    }

    /// `n` `GET /`s one after another; the answering origins, in order.
    async fn origins(&self, n: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..n {
            seen.push(self.get(&[]).await.origin().to_owned());
        }
        seen
    }

    /// `GET /` with `headers`, in a task, answered whenever the origin lets it.
    fn spawn_get(&self, headers: &[(&str, &str)]) -> JoinHandle<Resp> {
        let addr = self.addr;
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        tokio::spawn(async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            common::send(addr, "GET", "/", &h, None).await
        })
    }

    /// `clients` keep-alive connections sending `per_client` requests each, at once;
    /// the answering origins, in no particular order.
    async fn load(&self, clients: usize, per_client: usize) -> Vec<String> {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let addr = self.addr;
                tokio::spawn(async move {
                    let mut conn = Conn::open(addr).await;
                    let mut seen = Vec::new();
                    for _ in 0..per_client {
                        let r = conn.send("GET", "/", &[], None).await;
                        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                        seen.push(r.origin().to_owned());
                    }
                    seen
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        all
    }

    /// As `load`, for `clients` connections sending until `time` has passed.
    async fn load_for(&self, clients: usize, time: Duration) {
        let deadline = Instant::now() + time;
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let addr = self.addr;
                tokio::spawn(async move {
                    let mut conn = Conn::open(addr).await;
                    while Instant::now() < deadline {
                        let r = conn.send("GET", "/", &[], None).await;
                        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("client task");
        }
    }
}

/// `GET /` from a client socket bound to `ip` (any 127.0.0.0/8 address works on
/// loopback), so the proxy sees that client address.
async fn get_from(ip: Ipv4Addr, proxy: SocketAddr) -> Resp {
    let fut = async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((ip, 0))).expect("bind client");
        let stream = socket.connect(proxy).await.expect("connect to proxy");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        let req = Request::get("/")
            .header("host", proxy.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        Resp::read(tx.send_request(req).await.expect("response")).await
    };
    tokio::time::timeout(common::EXCHANGE_LIMIT, fut)
        .await
        .expect("exchange finished in time")
}

fn counts(names: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

fn share(names: &[String], origin: &str) -> f64 {
    names.iter().filter(|n| *n == origin).count() as f64 / names.len().max(1) as f64
}

/// Sends held requests one at a time, each after the previous one has reached an
/// origin, so every pick sees the in-flight counts the earlier ones left. Returns,
/// per origin, the requests it holds.
async fn send_held_one_by_one(
    p: &Proxy,
    origins: &Origins,
    n: usize,
    headers: &[(&str, &str)],
    mut after_each: impl FnMut(usize, &[usize]),
) -> Vec<Vec<JoinHandle<Resp>>> {
    let mut held: Vec<Vec<JoinHandle<Resp>>> = (0..origins.addrs.len()).map(|_| vec![]).collect();
    for _ in 0..n {
        let before = origins.active();
        let total = before.iter().sum::<usize>() + 1;
        let task = p.spawn_get(headers);
        let now = origins
            .wait_active("a held request to arrive", |v| {
                v.iter().sum::<usize>() == total
            })
            .await;
        let to = (0..now.len())
            .find(|&i| now[i] > before[i])
            .expect("one origin gained a request");
        held[to].push(task);
        after_each(total, &now);
    }
    held
}

async fn finish(tasks: Vec<JoinHandle<Resp>>) -> Vec<String> {
    let mut names = Vec::new();
    for t in tasks {
        let r = t.await.expect("request task");
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        names.push(r.origin().to_owned());
    }
    names
}

// ---------------------------------------------------------------------------------
// least_conn
// ---------------------------------------------------------------------------------

/// Three origins, every one holding its requests, behind a `least_conn` upstream.
async fn least_conn_all_held() -> (Arc<Origins>, Proxy) {
    let o = Origins::start(3).await;
    let p = Proxy::start(
        &o.addrs,
        "[upstream.u]\nbalance = \"least_conn\"\nservers = [{ addr = \"@0\" }, { addr = \"@1\" }, { addr = \"@2\" }]\n",
    )
    .await;
    o.hold_all(true);
    (o, p)
}

/// Lets `b` and `c` answer the requests they hold; the origins that answered them.
async fn release_b_and_c(
    o: &Origins,
    held: &mut [Vec<JoinHandle<Resp>>],
) -> (Vec<String>, Vec<String>) {
    o.hold(1, false);
    o.hold(2, false);
    let done_b = finish(std::mem::take(&mut held[1])).await;
    let done_c = finish(std::mem::take(&mut held[2])).await;
    (done_b, done_c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_steers_new_requests_away_from_an_origin_holding_long_ones() {
    let (o, p) = least_conn_all_held().await;
    // Long requests spread one per origin, then two, then three per origin.
    let mut held = send_held_one_by_one(&p, &o, 9, &[], |total, now| {
        let (min, max) = (now.iter().min().unwrap(), now.iter().max().unwrap());
        assert!(
            max - min <= 1,
            "after {total} long requests the origins hold {now:?}: not the least loaded"
        );
    })
    .await;
    assert_eq!(o.active(), [3, 3, 3]);
    assert_eq!(p.inflight(&o.addrs), [3, 3, 3]);

    // B and C finish theirs; A still holds three.
    let (done_b, done_c) = release_b_and_c(&o, &mut held).await;
    assert!(done_b.iter().all(|n| n == "b") && done_c.iter().all(|n| n == "c"));
    o.wait_active("b and c to go idle", |v| v[..] == [3, 0, 0])
        .await;

    // Quick requests from two clients at a time: none goes to A.
    let quick = p.load(2, 10).await;
    let c = counts(&quick);
    assert_eq!(
        c.get("a"),
        None,
        "quick requests went to the busy origin: {c:?}"
    );
    assert!(c.contains_key("b") && c.contains_key("c"), "{c:?}");
    assert_eq!(o.active(), [3, 0, 0], "A still holds its long requests");

    // Once A is released it gets its share again.
    o.hold(0, false);
    let done_a = finish(std::mem::take(&mut held[0])).await;
    assert_eq!(done_a, ["a", "a", "a"]);
    let c = counts(&p.origins(12).await);
    assert!(
        c.get("a").copied().unwrap_or(0) >= 3,
        "A gets no traffic after release: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_splits_ties_evenly_while_one_origin_is_busy() {
    let (o, p) = least_conn_all_held().await;
    let mut held = send_held_one_by_one(&p, &o, 3, &[], |_, _| {}).await;
    release_b_and_c(&o, &mut held).await;
    p.wait_inflight(&o.addrs, &[1, 0, 0]).await;

    // A holds one request; B and C are idle, so every pick is a tie between them.
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(p.get(&[]).await.origin().to_owned());
        p.wait_inflight(&o.addrs, &[1, 0, 0]).await;
    }
    let c = counts(&seen);
    eprintln!("least_conn ties while a is busy: {c:?}");
    o.hold(0, false);
    finish(std::mem::take(&mut held[0])).await;
    assert_eq!(c.get("a"), None, "{c:?}");
    let (b, cc) = (
        c.get("b").copied().unwrap_or(0),
        c.get("c").copied().unwrap_or(0),
    );
    assert!(
        (12..=18).contains(&b) && (12..=18).contains(&cc),
        "ties between two idle origins split {b}:{cc} over 30 picks"
    );
}

// ---------------------------------------------------------------------------------
// ewma and least_time against a slow origin
// ---------------------------------------------------------------------------------

/// τ of the latency estimates in these tests.
const TAU: Duration = Duration::from_millis(500);
/// How much slower origin `c` answers.
const SLOW: Duration = Duration::from_millis(100);

/// Starts three origins with `c` 100 ms slower, warms the estimates up with 2τ of
/// traffic, then returns the proxy and `c`'s share of 300 requests from 15 clients.
async fn slow_origin_share(upstream_keys: &str) -> (Arc<Origins>, Proxy, f64) {
    let o = Origins::start(3).await;
    o.set_delay(2, SLOW);
    let p = Proxy::start(
        &o.addrs,
        &format!(
            "[upstream.u]\n{upstream_keys}\newma_decay = \"{}ms\"\nservers = [{{ addr = \"@0\" }}, {{ addr = \"@1\" }}, {{ addr = \"@2\" }}]\n",
            TAU.as_millis()
        ),
    )
    .await;
    p.load_for(15, 2 * TAU).await;
    let measured = p.load(15, 20).await;
    assert_eq!(measured.len(), 300);
    let s = share(&measured, "c");
    eprintln!(
        "{upstream_keys}: slow origin got {:.1} % of 300 ({:?})",
        s * 100.0,
        counts(&measured)
    );
    (o, p, s)
}

/// Makes `c` fast again and sends light traffic (3 clients, 15 requests every
/// 25 ms) until `c`'s share of a batch reaches 15 %; returns how long that took.
async fn recovery_time(o: &Origins, p: &Proxy, limit: Duration) -> Duration {
    o.set_delay(2, Duration::ZERO);
    let start = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(25));
    let (mut batches, mut requests, mut to_c) = (0, 0, 0);
    loop {
        pace.tick().await;
        let batch = p.load(3, 5).await;
        let s = share(&batch, "c");
        batches += 1;
        requests += batch.len();
        to_c += batch.iter().filter(|n| *n == "c").count();
        if s >= 0.15 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "the recovered origin did not regain traffic within {limit:?}: \
             it got {to_c} of {requests} requests in {batches} batches since it became fast"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_avoids_a_slow_origin_and_trusts_it_again_once_fast() {
    let (o, p, s) = slow_origin_share("balance = \"ewma\"").await;
    assert!(s <= 0.10, "ewma sent {:.1} % to the slow origin", s * 100.0);
    // The peak estimate decays on read: from ~100 ms to a fast origin's ~1 ms takes
    // about ln(100) ≈ 4.6 τ.
    let t = recovery_time(&o, &p, 8 * TAU).await;
    eprintln!("ewma: the recovered origin regained ≥ 15 % after {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_time_header_avoids_a_slow_origin() {
    let (_o, _p, s) = slow_origin_share("balance = \"least_time\"\nleast_time = \"header\"").await;
    assert!(
        s <= 0.15,
        "least_time header sent {:.1} % to the slow origin",
        s * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_time_last_byte_avoids_a_slow_origin() {
    let (_o, _p, s) =
        slow_origin_share("balance = \"least_time\"\nleast_time = \"last_byte\"").await;
    assert!(
        s <= 0.15,
        "least_time last_byte sent {:.1} % to the slow origin",
        s * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_time_trusts_a_recovered_origin_again() {
    let (o, p, _) = slow_origin_share("balance = \"least_time\"").await;
    let t = recovery_time(&o, &p, 12 * TAU).await;
    eprintln!("least_time: the recovered origin regained ≥ 15 % after {t:?}");
}

/// `least_time = "header"` times the response head, `"last_byte"` the whole
/// response: an origin that sends its head at once and its body 100 ms later looks
/// fast to the first and slow to the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_time_modes_time_the_head_or_the_last_byte() {
    let o = Origins::start(1).await;
    o.set_body_delay(0, SLOW);
    let mut proxies = Vec::new();
    for mode in ["header", "last_byte"] {
        let p = Proxy::start(
            &o.addrs,
            &format!(
                "[upstream.u]\nbalance = \"least_time\"\nleast_time = \"{mode}\"\newma_decay = \"200ms\"\newma_seed = \"1ms\"\nservers = [{{ addr = \"@0\" }}]\n"
            ),
        )
        .await;
        proxies.push(p);
    }
    // 5 × τ of traffic: the averages are within 1 % of the samples' level.
    tokio::join!(
        proxies[0].load_for(4, Duration::from_secs(1)),
        proxies[1].load_for(4, Duration::from_secs(1)),
    );
    let ms = |p: &Proxy| p.state(o.addrs[0]).latency.average_ns() / 1e6;
    let (header, last_byte) = (ms(&proxies[0]), ms(&proxies[1]));
    eprintln!(
        "least_time averages for a 100 ms body: header {header:.1} ms, last_byte {last_byte:.1} ms"
    );
    assert!(header < 20.0, "header mode timed {header:.1} ms");
    assert!(
        (90.0..200.0).contains(&last_byte),
        "last_byte mode timed {last_byte:.1} ms"
    );
}

// ---------------------------------------------------------------------------------
// hash
// ---------------------------------------------------------------------------------

const THREE: &str = "servers = [{ addr = \"@0\" }, { addr = \"@1\" }, { addr = \"@2\" }]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_keeps_each_key_on_one_origin_and_a_removal_moves_only_its_keys() {
    let o = Origins::start(3).await;
    let upstream = "[upstream.u]\nbalance = \"hash\"\nhash_key = \"header:X-Chat-Id\"\n";
    let p = Proxy::start(&o.addrs, &format!("{upstream}{THREE}")).await;

    let keys: Vec<String> = (0..50).map(|k| format!("chat-{k}")).collect();
    let mut home: HashMap<&str, String> = HashMap::new();
    for _round in 0..4 {
        for k in &keys {
            let r = p.get(&[("x-chat-id", k)]).await;
            let at = home.entry(k).or_insert_with(|| r.origin().to_owned());
            assert_eq!(r.origin(), at, "key {k} moved");
        }
    }
    let spread = counts(&home.values().cloned().collect::<Vec<_>>());
    eprintln!("hash: 50 keys over origins {spread:?}");
    for n in ["a", "b", "c"] {
        assert!(
            spread.get(n).copied().unwrap_or(0) >= 5,
            "keys are not spread over all origins: {spread:?}"
        );
    }

    // A request without the key goes round-robin.
    let keyless: HashSet<String> = p.origins(3).await.into_iter().collect();
    assert_eq!(keyless.len(), 3, "keyless requests: {keyless:?}");

    // A reload without c: only c's keys move.
    p.running
        .shared
        .apply(config(
            &o.addrs,
            &format!("{upstream}servers = [{{ addr = \"@0\" }}, {{ addr = \"@1\" }}]\n"),
        ))
        .unwrap();
    let mut moved = 0;
    for k in &keys {
        let r = p.get(&[("x-chat-id", k)]).await;
        let was = &home[k.as_str()];
        if was == "c" {
            assert_ne!(r.origin(), "c", "key {k} still went to the removed origin");
            moved += 1;
        } else {
            assert_eq!(
                r.origin(),
                was,
                "key {k} was on {was}, which stayed, but moved"
            );
        }
        // And the new placement is stable too.
        assert_eq!(
            p.get(&[("x-chat-id", k)]).await.origin(),
            r.origin(),
            "key {k}"
        );
    }
    assert_eq!(moved, spread["c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_client_ip_keeps_a_client_on_one_origin() {
    let o = Origins::start(3).await;
    let p = Proxy::start(
        &o.addrs,
        &format!("[upstream.u]\nbalance = \"hash\"\nhash_key = \"client_ip\"\n{THREE}"),
    )
    .await;
    let seen: HashSet<String> = p.origins(20).await.into_iter().collect();
    assert_eq!(seen.len(), 1, "127.0.0.1 was sent to {seen:?}");

    // Other client addresses are placed by their own hash, each one stable.
    let mut placed = HashSet::new();
    for host in 2..32u8 {
        let ip = Ipv4Addr::new(127, 0, 0, host);
        let first = get_from(ip, p.addr).await;
        assert_eq!(first.status, StatusCode::OK);
        for _ in 0..2 {
            assert_eq!(get_from(ip, p.addr).await.origin(), first.origin(), "{ip}");
        }
        placed.insert(first.origin().to_owned());
    }
    assert!(
        placed.len() >= 2,
        "30 client addresses all went to {placed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_balance_factor_bounds_the_load_of_a_hot_key() {
    const FACTOR: f64 = 1.25;
    const N: usize = 12;
    let o = Origins::start(3).await;
    let p = Proxy::start(
        &o.addrs,
        &format!(
            "[upstream.u]\nbalance = \"hash\"\nhash_key = \"header:X-Chat-Id\"\nhash_balance_factor = {FACTOR}\n{THREE}"
        ),
    )
    .await;
    let key = [("x-chat-id", "hot")];
    let home = index(p.get(&key).await.origin());

    o.hold_all(true);
    let bound = |total: usize| (FACTOR * total as f64 / 3.0).ceil() as usize;
    let mut proxy_counts = Vec::new();
    let held = send_held_one_by_one(&p, &o, N, &key, |total, now| {
        let max = *now.iter().max().unwrap();
        assert!(
            max <= bound(total),
            "with {total} in flight an origin holds {max} > ⌈{FACTOR} × {total} / 3⌉: {now:?}"
        );
        proxy_counts.push(p.inflight(&o.addrs));
    })
    .await;
    let at = o.active();
    eprintln!(
        "hash_balance_factor: {N} requests for one key held as {at:?} (home {})",
        name(home)
    );
    assert!(at.iter().filter(|&&n| n > 0).count() >= 2, "{at:?}");
    assert_eq!(
        at[home],
        *at.iter().max().unwrap(),
        "the key's own origin is not the fullest: {at:?}"
    );
    assert_eq!(
        at[home],
        bound(N),
        "the key's own origin is not filled to the bound: {at:?}"
    );
    // The proxy's own counts agree with what the origins see.
    assert_eq!(p.inflight(&o.addrs), at);
    for (k, c) in proxy_counts.iter().enumerate() {
        assert!(
            *c.iter().max().unwrap() <= bound(k + 1),
            "proxy in-flight {c:?}"
        );
    }

    o.hold_all(false);
    for tasks in held {
        finish(tasks).await;
    }
    // Idle again, the key is back on its own origin.
    o.wait_active("every origin to go idle", |v| v.iter().all(|&n| n == 0))
        .await;
    assert_eq!(index(p.get(&key).await.origin()), home);
}

// ---------------------------------------------------------------------------------
// sticky cookies
// ---------------------------------------------------------------------------------

/// The sticky id in a `Set-Cookie: SWY=…` header, after checking its attributes.
fn sticky_id(r: &Resp, origins: &[SocketAddr]) -> String {
    let all: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(all.len(), 1, "Set-Cookie headers: {all:?}");
    let c = all[0];
    let id = c
        .strip_prefix("SWY=")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not a SWY cookie: {c}"));
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "sticky id is not 16 hex digits: {c}"
    );
    let attrs: Vec<&str> = c.split(';').skip(1).map(str::trim).collect();
    for want in ["Path=/", "Max-Age=3600", "HttpOnly"] {
        assert!(attrs.contains(&want), "{c} lacks {want}");
    }
    for a in origins {
        assert!(
            !c.contains(&a.ip().to_string()) && !c.contains(&a.port().to_string()),
            "{c} reveals {a}"
        );
    }
    id.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_pins_a_client_and_repins_when_its_server_goes() {
    let o = Origins::start(3).await;
    let upstream =
        "[upstream.u]\nbalance = \"round_robin\"\nsticky = { cookie = \"SWY\", ttl = \"1h\" }\n";
    let p = Proxy::start(&o.addrs, &format!("{upstream}{THREE}")).await;

    let first = p.get(&[]).await;
    let id = sticky_id(&first, &o.addrs);
    let pinned = first.origin().to_owned();
    let cookie = format!("other=1; SWY={id}");
    for _ in 0..10 {
        let r = p.get(&[("cookie", &cookie)]).await;
        assert_eq!(r.origin(), pinned, "the cookie did not pin");
        assert!(
            r.header("set-cookie").is_none(),
            "a valid cookie was set again"
        );
    }

    // Its server goes down: elsewhere, with a new cookie that pins there.
    let pinned_addr = o.addrs[index(&pinned)];
    p.state(pinned_addr).set_up(false);
    let r = p.get(&[("cookie", &cookie)]).await;
    assert_ne!(r.origin(), pinned, "sent to a server that is down");
    let id2 = sticky_id(&r, &o.addrs);
    assert_ne!(id2, id);
    let second = r.origin().to_owned();
    for _ in 0..3 {
        let r = p.get(&[("cookie", &format!("SWY={id2}"))]).await;
        assert_eq!(r.origin(), second);
    }
    p.state(pinned_addr).set_up(true);
    assert_eq!(
        p.get(&[("cookie", &cookie)]).await.origin(),
        pinned,
        "up again, pinned again"
    );

    // Garbage and unknown ids get a fresh, valid cookie.
    for bad in ["SWY=garbage", "SWY=0123456789abcdef", "SWY="] {
        let r = p.get(&[("cookie", bad)]).await;
        let fresh = sticky_id(&r, &o.addrs);
        assert_eq!(
            p.get(&[("cookie", &format!("SWY={fresh}"))]).await.origin(),
            r.origin(),
            "the fresh cookie for {bad:?} does not pin where it was served"
        );
    }

    // A reload that removes the pinned server.
    let rest: Vec<String> = (0..3)
        .filter(|&i| name(i) != pinned)
        .map(|i| format!("{{ addr = \"@{i}\" }}"))
        .collect();
    p.running
        .shared
        .apply(config(
            &o.addrs,
            &format!("{upstream}servers = [{}]\n", rest.join(", ")),
        ))
        .unwrap();
    let r = p.get(&[("cookie", &cookie)]).await;
    assert_ne!(r.origin(), pinned, "sent to a removed server");
    let id3 = sticky_id(&r, &o.addrs);
    assert_ne!(id3, id);
}

// ---------------------------------------------------------------------------------
// backup tier
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_for_a_backup_lets_go_once_a_primary_is_back() {
    let o = Origins::start(3).await;
    let upstream = "[upstream.u]\nsticky = { cookie = \"SWY\" }\n\
        servers = [{ addr = \"@0\" }, { addr = \"@1\" }, { addr = \"@2\", backup = true }]\n";
    let p = Proxy::start(&o.addrs, upstream).await;
    p.state(o.addrs[0]).set_up(false);
    p.state(o.addrs[1]).set_up(false);
    let r = p.get(&[]).await;
    assert_eq!(r.origin(), name(2), "only the backup is left");
    let cookie = format!("SWY={}", sticky_id(&r, &o.addrs));
    assert_eq!(p.get(&[("cookie", &cookie)]).await.origin(), name(2));

    // A primary is back: the backup's cookie no longer pins, the client is re-pinned.
    p.state(o.addrs[0]).set_up(true);
    let r = p.get(&[("cookie", &cookie)]).await;
    assert_eq!(r.origin(), name(0));
    assert_ne!(format!("SWY={}", sticky_id(&r, &o.addrs)), cookie);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_while_no_primary_is_up() {
    let o = Origins::start(3).await;
    let p = Proxy::start(
        &o.addrs,
        "[upstream.u]\nservers = [{ addr = \"@0\" }, { addr = \"@1\" }, { addr = \"@2\", backup = true }]\n",
    )
    .await;
    let c = counts(&p.origins(30).await);
    assert_eq!(
        (c.get("a"), c.get("b"), c.get("c")),
        (Some(&15), Some(&15), None),
        "{c:?}"
    );

    p.state(o.addrs[0]).set_up(false);
    p.state(o.addrs[1]).set_up(false);
    for _ in 0..6 {
        assert_eq!(p.get(&[]).await.origin(), "c", "both primaries are down");
    }

    p.state(o.addrs[0]).set_up(true);
    for _ in 0..10 {
        assert_eq!(p.get(&[]).await.origin(), "a", "a primary is up again");
    }
}

// ---------------------------------------------------------------------------------
// random
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_follows_weights() {
    let o = Origins::start(2).await;
    let p = Proxy::start(
        &o.addrs,
        "[upstream.u]\nbalance = \"random\"\nservers = [{ addr = \"@0\", weight = 1 }, { addr = \"@1\", weight = 3 }]\n",
    )
    .await;
    let mut conn = Conn::open(p.addr).await;
    let mut seen = Vec::new();
    for _ in 0..400 {
        let r = conn.send("GET", "/", &[], None).await;
        assert_eq!(r.status, StatusCode::OK);
        seen.push(r.origin().to_owned());
    }
    let s = share(&seen, "b");
    eprintln!("random: the weight-3 origin got {:.1} % of 400", s * 100.0);
    assert!(
        (0.65..=0.85).contains(&s),
        "weight 3 of 4 got {:.1} %",
        s * 100.0
    );
}

// ---------------------------------------------------------------------------------
// down = true
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_marked_down_gets_nothing_under_any_algorithm() {
    let o = Origins::start(3).await;
    for &algorithm in BalanceKind::NAMES {
        let extra = match algorithm {
            "hash" => "hash_key = \"header:X-Key\"\n",
            "ewma" | "least_time" => "ewma_decay = \"500ms\"\n",
            _ => "",
        };
        let p = Proxy::start(
            &o.addrs,
            &format!(
                "[upstream.u]\nbalance = \"{algorithm}\"\n{extra}servers = [{{ addr = \"@0\" }}, {{ addr = \"@1\" }}, {{ addr = \"@2\", down = true }}]\n"
            ),
        )
        .await;
        // Sequential requests, with and without a hash key, then concurrent ones
        // (in-flight counts make the idle down server look the least loaded).
        let mut seen = Vec::new();
        for k in 0..30 {
            let key = format!("k{k}");
            let headers: &[(&str, &str)] = if k % 5 == 0 { &[] } else { &[("x-key", &key)] };
            seen.push(p.get(headers).await.origin().to_owned());
        }
        seen.extend(p.load(6, 10).await);
        let c = counts(&seen);
        assert_eq!(
            c.get("c"),
            None,
            "{algorithm}: the down server got traffic: {c:?}"
        );
        assert_eq!(c.values().sum::<usize>(), 90);
        // The latency-aware algorithms may legitimately favour one of the two.
        if !matches!(algorithm, "ewma" | "least_time") {
            assert!(
                c.contains_key("a") && c.contains_key("b"),
                "{algorithm}: {c:?}"
            );
        }
    }
}
