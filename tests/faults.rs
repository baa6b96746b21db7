//! Faults on either side of the proxy, over real sockets with hand-written raw TCP
//! peers, so the exact bytes are under the test's control:
//!
//! - a client whose request body is malformed or cut short gets a 4xx, and no
//!   server is charged for it (passive failures, `errors`, latency penalties);
//! - a request is sent again on a fresh connection only when a reused one closed
//!   before a single response byte arrived (RFC 9112 §9.3.1);
//! - an origin that breaks (garbage, a head over `max_response_header_size`, a
//!   1xx storm, a reset or truncated body, a stall after the head) gives the client
//!   a clean error or a cut stream it can detect, its connection is never reused,
//!   and the server is charged exactly one failure.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{find, EXCHANGE_LIMIT};
use switchyard::upstream::ServerState;
use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

// ===== a raw origin =====

/// What a raw origin does after writing its answer's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Reads the next request on the same connection.
    KeepAlive,
    /// Closes the connection (FIN).
    Close,
    /// Resets the connection (RST: `SO_LINGER` 0, then close).
    Reset,
    /// Resets it once the test says so (`RawOrigin::release`): a reset can discard
    /// data the peer has not read yet, so a test that wants the bytes before the
    /// reset read first waits until they were.
    ResetWhenTold,
    /// Writes nothing more and keeps the connection open until the peer closes it.
    Stall,
}

/// An answer: bytes to write, then what to do.
struct Answer {
    bytes: Vec<u8>,
    then: Then,
}

fn answer(bytes: impl Into<Vec<u8>>, then: Then) -> Answer {
    Answer {
        bytes: bytes.into(),
        then,
    }
}

/// A complete keep-alive 200 with body `ok`.
fn ok() -> Answer {
    answer(
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
        Then::KeepAlive,
    )
}

type Script = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

/// An HTTP/1.1 origin on 127.0.0.1 that reads each request (head, and a body of
/// its `Content-Length`) and answers request `n` (counted over all connections,
/// from 0) with `script(n)`.
struct RawOrigin {
    addr: SocketAddr,
    /// Requests read so far.
    requests: Arc<AtomicUsize>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Stalled connections the peer has closed since.
    stalls_ended: Arc<AtomicUsize>,
    /// Lets a `ResetWhenTold` connection reset.
    release: Arc<Notify>,
}

impl RawOrigin {
    async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> RawOrigin {
        let script: Script = Arc::new(script);
        let l = TcpListener::bind(common::loopback0()).await.unwrap();
        let o = RawOrigin {
            addr: l.local_addr().unwrap(),
            requests: Arc::default(),
            accepted: Arc::default(),
            stalls_ended: Arc::default(),
            release: Arc::default(),
        };
        let (requests, accepted, stalls_ended, release) = (
            Arc::clone(&o.requests),
            Arc::clone(&o.accepted),
            Arc::clone(&o.stalls_ended),
            Arc::clone(&o.release),
        );
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_raw(
                    s,
                    Arc::clone(&script),
                    Arc::clone(&requests),
                    Arc::clone(&stalls_ended),
                    Arc::clone(&release),
                ));
            }
        });
        o
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve_raw(
    mut s: TcpStream,
    script: Script,
    requests: Arc<AtomicUsize>,
    stalls_ended: Arc<AtomicUsize>,
    release: Arc<Notify>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // One request: its head, then its Content-Length body.
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let a = script(n);
        if s.write_all(&a.bytes).await.is_err() {
            return;
        }
        match a.then {
            Then::KeepAlive => {}
            Then::Close => return,
            Then::Reset => {
                let _ = s.set_zero_linger();
                return;
            }
            Then::ResetWhenTold => {
                release.notified().await;
                let _ = s.set_zero_linger();
                return;
            }
            Then::Stall => {
                // Until the peer closes (or resets) the connection.
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                stalls_ended.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

// ===== what the client sees =====

/// A response read off a raw socket until the proxy closed the connection.
#[derive(Debug)]
struct Seen {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// Whether the body is whole by its framing: `Content-Length` bytes, or a
    /// chunked body through its last chunk.
    complete: bool,
}

impl Seen {
    fn is_chunked(&self) -> bool {
        self.head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
    }
}

/// Sends `request` as is on a new connection and reads until the proxy closes it;
/// `None` if it closed without a full response head.
async fn exchange(proxy: SocketAddr, request: &[u8]) -> Option<Seen> {
    exchange_telling(proxy, request, None).await
}

/// As `exchange`; once the response head has arrived, `on_head` is notified.
async fn exchange_telling(
    proxy: SocketAddr,
    request: &[u8],
    on_head: Option<&Notify>,
) -> Option<Seen> {
    let fut = async {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        // The proxy may answer (and close) before reading everything.
        let _ = s.write_all(request).await;
        read_until_closed(&mut s, on_head).await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("the proxy answered and closed in time")
}

/// `GET path` with `Connection: close`: the proxy closes once the response ends.
async fn get(proxy: SocketAddr, path: &str) -> Seen {
    get_telling(proxy, path, None).await
}

/// As `get`, notifying `on_head` once the response head has arrived.
async fn get_telling(proxy: SocketAddr, path: &str, on_head: Option<&Notify>) -> Seen {
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    exchange_telling(proxy, req.as_bytes(), on_head)
        .await
        .expect("a response head")
}

async fn read_until_closed(s: &mut TcpStream, on_head: Option<&Notify>) -> Option<Seen> {
    read_rest(s, Vec::new(), on_head).await
}

/// Reads from `s` until a response head has arrived; the bytes read.
async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while find(&buf, b"\r\n\r\n").is_none() {
        let n = s.read(&mut chunk).await.expect("read a response head");
        assert!(n > 0, "closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

/// As `read_until_closed`, with `buf` read already.
async fn read_rest(
    s: &mut TcpStream,
    mut buf: Vec<u8>,
    mut on_head: Option<&Notify>,
) -> Option<Seen> {
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if find(&buf, b"\r\n\r\n").is_some() {
            if let Some(n) = on_head.take() {
                n.notify_one();
            }
        }
    }
    let head_end = find(&buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = buf[head_end..].to_vec();
    let lower = head.to_ascii_lowercase();
    let length = lower.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap())
    });
    let complete = if lower.contains("transfer-encoding: chunked") {
        chunked_complete(&body)
    } else {
        let length = length.unwrap_or_else(|| panic!("no framing in {head:?}"));
        body.len() >= length
    };
    Some(Seen {
        status,
        head,
        body,
        complete,
    })
}

/// Whether `body` is a chunked body through its last (zero-size) chunk.
fn chunked_complete(mut body: &[u8]) -> bool {
    loop {
        let Some(eol) = find(body, b"\r\n") else {
            return false;
        };
        let line = String::from_utf8_lossy(&body[..eol]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return false;
        };
        body = &body[eol + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            return body.ends_with(b"\r\n");
        }
        if body.len() < size + 2 {
            return false;
        }
        body = &body[size + 2..];
    }
}

// ===== the proxy =====

/// One worker, so a pooled connection would be the next request's: a test can
/// tell a reused connection from a new one by the origin's accept count.
async fn start_proxy(toml: &str) -> (Running, SocketAddr) {
    let running = common::start_proxy_workers(toml, 1).await;
    let addr = running.addr("public").unwrap();
    (running, addr)
}

fn state(running: &Running, upstream: usize, server: usize) -> Arc<ServerState> {
    Arc::clone(&running.shared.load().upstreams[upstream].servers[server].state)
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        common::control::eventually(Duration::from_secs(5), cond)
            .await
            .is_some(),
        "timed out waiting until {what}"
    );
}

// ===== 1. the client's body is the client's fault =====

/// The five ways the probe broke a chunked request body, each sent as a POST.
fn malformed_chunked_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let post = |body: &[u8]| {
        let mut r = b"POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                      transfer-encoding: chunked\r\n\r\n"
            .to_vec();
        r.extend_from_slice(body);
        r
    };
    let mut extension = b"5;".to_vec();
    extension.extend(std::iter::repeat_n(b'x', 100 * 1024));
    extension.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    vec![
        (
            "size overflow",
            post(b"10000000000000000000\r\nhello\r\n0\r\n\r\n"),
        ),
        ("junk size", post(b"zz\r\nhello\r\n0\r\n\r\n")),
        ("negative size", post(b"-5\r\nhello\r\n0\r\n\r\n")),
        ("no CRLF after the data", post(b"5\r\nhello0\r\n\r\n")),
        (
            "data longer than its size",
            post(b"3\r\nhello\r\n0\r\n\r\n"),
        ),
        ("100 KB chunk extension", post(&extension)),
    ]
}

/// An upstream of the two sample origins with `settings` (TOML lines).
fn two_servers(settings: &str) -> String {
    format!(
        "[[route]]\nupstream = \"u\"\n\n[upstream.u]\n{settings}\n\
         servers = [{{ addr = \"@0\" }}, {{ addr = \"@1\" }}]\n"
    )
}

/// Neither server of upstream 0 was charged anything: no error, no ejection, no
/// latency penalty (a failure enters `ewma` as a 5 s sample); and they still serve
/// (with round-robin, both in turn).
async fn assert_uncharged(p: &common::Proxy, case: &str) {
    let snapshot = p.running.shared.load();
    let u = &snapshot.upstreams[0];
    for (i, s) in u.servers.iter().enumerate() {
        assert_eq!(
            s.state.errors(),
            0,
            "{case}: server {i} was charged an error"
        );
        assert!(!s.state.ejected(), "{case}: server {i} was ejected");
        let estimate = u.load_estimate(i);
        assert!(
            estimate < 1.0,
            "{case}: server {i} carries a latency penalty ({estimate} s)"
        );
    }
    let round_robin = snapshot.upstreams[0].balance == switchyard::config::BalanceKind::RoundRobin;
    drop(snapshot);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = common::get(p.addr, "/").await;
        assert_eq!(r.status, 200, "{case}: a good request after it");
        seen.insert(r.origin().to_owned());
    }
    if round_robin {
        assert_eq!(seen.len(), 2, "{case}: both servers still serve: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_request_bodies_are_400_and_charge_no_server() {
    // Over HTTP/2 the body goes on a stream, which is reset instead of the
    // connection being closed.
    for settings in [
        "balance = \"round_robin\"",
        "balance = \"ewma\"",
        "protocol = \"h2c\"",
    ] {
        let p = common::setup(&["a", "b"], &two_servers(settings)).await;
        for (case, request) in malformed_chunked_bodies() {
            let case = format!("{settings}, {case}");
            let seen = exchange(p.addr, &request).await;
            let status = seen.as_ref().map(|s| s.status);
            assert_eq!(status, Some(400), "{case}: {seen:?}");
            let seen = seen.unwrap();
            assert!(seen.complete, "{case}: the proxy's answer is whole");
            assert_eq!(seen.body, b"400 Bad Request\n", "{case}");
            assert_uncharged(&p, &case).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_held_for_retries_is_400_too() {
    // PUT is idempotent: its body is read into memory first (it may be resent).
    let p = common::setup(&["a", "b"], &two_servers("")).await;
    let request =
        b"PUT /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let seen = exchange(p.addr, request).await;
    assert_eq!(seen.as_ref().map(|s| s.status), Some(400), "{seen:?}");
    assert_uncharged(&p, "PUT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_abandons_its_body_charges_no_server() {
    let p = common::setup(&["a", "b"], &two_servers("balance = \"ewma\"")).await;
    for framing in [
        "content-length: 100000\r\n\r\n0123456789",
        "transfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
    ] {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let req = format!("POST /upload HTTP/1.1\r\nhost: x\r\n{framing}");
        s.write_all(req.as_bytes()).await.unwrap();
        // Once the proxy is sending it to a server, leave halfway through it.
        let servers = [state(&p.running, 0, 0), state(&p.running, 0, 1)];
        until("the request is on its way", || {
            servers.iter().any(|s| s.inflight() > 0)
        })
        .await;
        s.shutdown().await.unwrap();
        let seen = tokio::time::timeout(EXCHANGE_LIMIT, read_until_closed(&mut s, None))
            .await
            .expect("the proxy closed the connection");
        // The client is gone: an answer is optional, but if any, a 4xx.
        if let Some(seen) = &seen {
            assert!(
                (400..500).contains(&seen.status),
                "{framing:?}: {}",
                seen.head
            );
        }
        assert_uncharged(&p, framing).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_after_the_answer_began_charges_no_server() {
    // The origin answers at once and streams, reading the request body as it comes.
    let origin = RawOrigin::start(|_| {
        answer(
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"[..],
            Then::Stall,
        )
    })
    .await;
    let (running, proxy) = fault_rig(&origin, "").await;
    let server = state(&running, 0, 0);
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
          transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    // The answer has begun; now the body breaks.
    let head = read_head(&mut s).await;
    s.write_all(b"zz\r\n").await.unwrap();
    let seen = tokio::time::timeout(EXCHANGE_LIMIT, read_rest(&mut s, head, None))
        .await
        .expect("the proxy closed the connection")
        .expect("a response head");
    assert_eq!(seen.status, 200, "{}", seen.head);
    assert!(!seen.complete, "the response was cut: {seen:?}");
    until("the attempt is over", || server.inflight() == 0).await;
    assert_eq!(server.errors(), 0, "the server was charged an error");
    assert!(!server.ejected());
}

// ===== 2. a request reaches the origin twice only if it never answered =====

/// The first request is answered and its connection pooled; the second, on that
/// reused connection, gets `second`; every later one is answered. Returns the
/// second request's status, the requests the origin read and the errors charged.
async fn second_request_on_a_reused_connection(second: fn() -> Answer) -> (u16, usize, u64) {
    let origin = RawOrigin::start(move |n| if n == 1 { second() } else { ok() }).await;
    let (running, proxy) = start_proxy(&common::one_origin_config(origin.addr)).await;
    assert_eq!(get(proxy, "/").await.status, 200);
    let server = state(&running, 0, 0);
    until("the connection is pooled", || server.pool.idle_count() == 1).await;
    let status = get(proxy, "/").await.status;
    until("the attempt is over", || server.inflight() == 0).await;
    let requests = origin.requests();
    // The first connection carried two requests; a replay, one more on another.
    assert_eq!(
        origin.accepted(),
        requests - 1,
        "one new connection per replay"
    );
    (status, requests, server.errors())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_connection_closed_before_any_byte_is_replayed_once() {
    for (case, second) in [
        (
            "closed",
            (|| answer(Vec::new(), Then::Close)) as fn() -> Answer,
        ),
        ("reset", || answer(Vec::new(), Then::Reset)),
    ] {
        let (status, requests, errors) = second_request_on_a_reused_connection(second).await;
        assert_eq!(status, 200, "{case}: replayed on a fresh connection");
        assert_eq!(requests, 3, "{case}: the origin read it twice");
        assert_eq!(
            errors, 0,
            "{case}: a stale connection is not the server's failure"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_answered_anything_is_not_sent_the_request_again() {
    for (case, second) in [
        (
            "invalid status line",
            (|| answer(&b"this is not http\r\n\r\n"[..], Then::Close)) as fn() -> Answer,
        ),
        ("invalid status code", || {
            answer(
                &b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n"[..],
                Then::Close,
            )
        }),
        ("half a head, then closed", || {
            answer(&b"HTTP/1.1 200 OK\r\ncontent-le"[..], Then::Close)
        }),
        ("an interim response, then closed", || {
            answer(&b"HTTP/1.1 100 Continue\r\n\r\n"[..], Then::Close)
        }),
    ] {
        let (status, requests, errors) = second_request_on_a_reused_connection(second).await;
        assert_eq!(status, 502, "{case}");
        assert_eq!(requests, 2, "{case}: the origin read the request once");
        assert_eq!(errors, 1, "{case}: one failure for the attempt");
    }
}

// ===== 3 and 4. upstream faults =====

/// A response head of about `size` bytes: a 200 with filler headers and body `ok`.
fn head_of(size: usize) -> Vec<u8> {
    let mut h = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    let mut i = 0;
    while h.len() + 4 < size {
        let room = size - h.len() - 4;
        let v = "v".repeat(room.saturating_sub(16).clamp(1, 4000));
        h.extend_from_slice(format!("x-fill-{i}: {v}\r\n").as_bytes());
        i += 1;
    }
    h.extend_from_slice(b"\r\nok");
    h
}

/// An upstream whose first server is the raw origin under test, with
/// `max_fails = 2`, next to a sample origin that is drained (so every request
/// goes to the first, which may still be ejected: the cap counts two primaries).
/// One try per request, so each request is one attempt on the first server.
async fn fault_rig(origin: &RawOrigin, upstream_extra: &str) -> (Running, SocketAddr) {
    let spare = common::start_origins(&["spare"]).await[0];
    let toml = format!(
        "{}[[route]]\nupstream = \"u\"\nread_timeout = \"500ms\"\nnext_upstream_tries = 1\n\n\
         [upstream.u]\n{upstream_extra}\n\
         servers = [{{ addr = \"{}\", max_fails = 2 }}, {{ addr = \"{spare}\" }}]\n",
        common::listeners(&["public"]),
        origin.addr,
    );
    let (running, proxy) = start_proxy(&toml).await;
    state(&running, 0, 1).set_drained(true);
    (running, proxy)
}

/// Runs a fault twice against `fault_rig`: each time the client sees what
/// `check` accepts, the broken connection is not reused (the second fault comes
/// on a new connection), and the server is charged exactly one failure (one
/// `error`; not ejected after the first with `max_fails = 2`, ejected after the
/// second).
async fn charged_once_per_fault(
    case: &str,
    upstream_extra: &str,
    fault: fn(usize) -> Answer,
    check: fn(&Seen),
) {
    let origin = RawOrigin::start(fault).await;
    let (running, proxy) = fault_rig(&origin, upstream_extra).await;
    let server = state(&running, 0, 0);

    let seen = get_telling(proxy, "/", Some(&origin.release)).await;
    check(&seen);
    until("the attempt is over", || server.inflight() == 0).await;
    assert_eq!(server.errors(), 1, "{case}: one error for the first fault");
    assert!(!server.ejected(), "{case}: charged more than one failure");
    assert_eq!(
        server.pool.idle_count(),
        0,
        "{case}: broken connection pooled"
    );

    let seen = get_telling(proxy, "/", Some(&origin.release)).await;
    check(&seen);
    until("the attempt is over", || server.inflight() == 0).await;
    assert_eq!(
        origin.accepted(),
        2,
        "{case}: the broken connection was reused"
    );
    assert_eq!(origin.requests(), 2, "{case}: each fault was one attempt");
    assert_eq!(server.errors(), 2, "{case}: one error for the second fault");
    assert!(
        server.ejected(),
        "{case}: two faults, two failures: ejected"
    );
}

fn bad_gateway(seen: &Seen) {
    assert_eq!(
        seen.status,
        502,
        "{}",
        seen.head.lines().next().unwrap_or_default()
    );
    assert!(seen.complete, "the proxy's own answer is whole");
    assert!(!seen.head.contains("x-fill"), "{}", seen.head);
}

/// The head went out, then the stream was cut short where the client can tell:
/// a chunked body without its last chunk, or fewer bytes than its length.
fn cut_short(seen: &Seen) {
    assert_eq!(seen.status, 200, "{}", seen.head);
    assert!(!seen.complete, "a broken body looks complete: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_status_line_is_502_and_one_failure() {
    charged_once_per_fault(
        "invalid status line",
        "",
        |_| {
            answer(
                &b"HTTP/1.1 OK 200\r\ncontent-length: 0\r\n\r\n"[..],
                Then::KeepAlive,
            )
        },
        bad_gateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_over_the_limit_is_502_and_one_failure() {
    // The probe's 110 KB head, against the default limit.
    charged_once_per_fault(
        "110 KB head",
        "",
        |_| answer(head_of(110 * 1024), Then::KeepAlive),
        bad_gateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_response_header_size_sets_the_limit() {
    // The default takes a head of 24 KiB…
    let origin = RawOrigin::start(|_| answer(head_of(24 * 1024), Then::KeepAlive)).await;
    let (_running, proxy) = start_proxy(&common::one_origin_config(origin.addr)).await;
    let seen = get(proxy, "/").await;
    assert_eq!(
        (seen.status, &seen.body[..]),
        (200, &b"ok"[..]),
        "{}",
        seen.head
    );
    // …but not one of 40 KiB.
    let origin = RawOrigin::start(|_| answer(head_of(40 * 1024), Then::KeepAlive)).await;
    let (_running, proxy) = start_proxy(&common::one_origin_config(origin.addr)).await;
    assert_eq!(get(proxy, "/").await.status, 502);

    // A limit of 8 KiB takes 6 KiB and refuses 10 KiB.
    let origin = RawOrigin::start(|n| {
        let size = if n == 0 { 6 } else { 10 };
        answer(head_of(size * 1024), Then::KeepAlive)
    })
    .await;
    let toml = common::one_origin_config(origin.addr).replace(
        "[upstream.origin]\n",
        "[upstream.origin]\nmax_response_header_size = \"8KiB\"\n",
    );
    let (_running, proxy) = start_proxy(&toml).await;
    assert_eq!(get(proxy, "/").await.status, 200);
    assert_eq!(get(proxy, "/").await.status, 502);
}

/// `n` interim responses (alternately 100 and 103), then a complete 200.
fn interim_then_ok(n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        if i % 2 == 0 {
            b.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        } else {
            b.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n");
        }
    }
    b.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_interim_responses_is_502_and_one_failure() {
    charged_once_per_fault(
        "300 interim responses",
        "",
        |_| answer(interim_then_ok(300), Then::KeepAlive),
        bad_gateway,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_interim_responses_pass() {
    let origin = RawOrigin::start(|_| answer(interim_then_ok(3), Then::KeepAlive)).await;
    let (running, proxy) = start_proxy(&common::one_origin_config(origin.addr)).await;
    for _ in 0..2 {
        let seen = get(proxy, "/").await;
        assert_eq!(
            (seen.status, &seen.body[..]),
            (200, &b"ok"[..]),
            "{}",
            seen.head
        );
    }
    assert_eq!(state(&running, 0, 0).errors(), 0);
    assert_eq!(origin.accepted(), 1, "the connection is reused");
}

/// A 200 promising 100 bytes of body that sends 50, then `then`.
fn half_of_a_100_byte_body(then: Then) -> Answer {
    let mut b = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec();
    b.extend_from_slice(&[b'x'; 50]);
    answer(b, then)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_in_the_body_is_a_cut_stream_and_one_failure() {
    charged_once_per_fault(
        "reset after half the body",
        "",
        |_| half_of_a_100_byte_body(Then::ResetWhenTold),
        cut_short,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_body_closed_short_is_a_cut_stream_and_one_failure() {
    charged_once_per_fault(
        "closed after half the body",
        "",
        |_| half_of_a_100_byte_body(Then::Close),
        cut_short,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_chunked_body_is_a_cut_stream_and_one_failure() {
    charged_once_per_fault(
        "chunked without its last chunk",
        "",
        |_| {
            answer(
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nwor"[..],
                Then::Close,
            )
        },
        |seen| {
            cut_short(seen);
            assert!(seen.is_chunked(), "{}", seen.head);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_after_the_head_is_a_cut_stream_and_one_failure() {
    let origin = RawOrigin::start(|_| {
        let mut b = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec();
        b.extend_from_slice(&[b'x'; 10]);
        answer(b, Then::Stall)
    })
    .await;
    let (running, proxy) = fault_rig(&origin, "").await;
    let server = state(&running, 0, 0);
    for round in 1..=2 {
        let start = std::time::Instant::now();
        let seen = get(proxy, "/").await;
        cut_short(&seen);
        assert_eq!(seen.body, vec![b'x'; 10]);
        assert!(
            start.elapsed() >= Duration::from_millis(500),
            "cut before read_timeout: {:?}",
            start.elapsed()
        );
        until("the attempt is over", || server.inflight() == 0).await;
        assert_eq!(server.errors(), round, "one error per stall");
        assert_eq!(server.ejected(), round == 2, "one failure per stall");
        // The proxy let go of the stalled connection.
        until("the origin sees its connection closed", || {
            origin.stalls_ended.load(Ordering::SeqCst) == round as usize
        })
        .await;
    }
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_before_the_head_is_504_and_one_failure() {
    charged_once_per_fault(
        "no answer",
        "",
        |_| answer(Vec::new(), Then::Stall),
        |seen| {
            assert_eq!(seen.status, 504, "{}", seen.head);
            assert!(seen.complete);
        },
    )
    .await;
}
