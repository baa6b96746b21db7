//! The listener's connection keys: `keepalive_requests` (the Nth response closes
//! an HTTP/1.1 connection, an HTTP/2 one gets GOAWAY), `keepalive_timeout` (an idle
//! connection is closed, on both protocols; zero: one request per connection) and
//! `max_header_size` (a larger head gets 431, on both protocols). The proxy runs
//! on its own worker threads, so the timeouts are real and short, and each close
//! is awaited, not slept for.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::control::Origin;
use common::{read_response, RawResp, EXCHANGE_LIMIT};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The short `keepalive_timeout` of these tests.
const KEEPALIVE: Duration = Duration::from_millis(300);
/// How late past its timeout the proxy may act (timer granularity, a busy test
/// machine).
const SLACK: Duration = Duration::from_secs(2);

async fn proxy(origin: &Origin, listener_keys: &str) -> (Running, SocketAddr) {
    let toml = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n{listener_keys}\n\
         [[route]]\nupstream = \"app\"\n\n{}",
        common::upstream("app", &[(origin.addr(), 1)]),
    );
    let running = common::start_proxy(&toml).await;
    let addr = running.addr("public").unwrap();
    (running, addr)
}

async fn get(s: &mut TcpStream, extra: &str) -> RawResp {
    let req = format!("GET /x HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    tokio::time::timeout(EXCHANGE_LIMIT, read_response(s))
        .await
        .expect("an answer in time")
}

/// Waits until the proxy closes `s` with nothing more to say; how long that
/// took (`None`: not within `limit`).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(limit, s.read(&mut buf)).await {
        Err(_) => None,
        Ok(Ok(0) | Err(_)) => Some(start.elapsed()),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
    }
}

/// An HTTP/2 prior-knowledge connection, and the task driving it (which ends
/// when the proxy closes the connection).
async fn h2(addr: SocketAddr) -> (http2::SendRequest<Empty<Bytes>>, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, task)
}

async fn h2_get(
    tx: &mut http2::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<u16, hyper::Error> {
    let mut req = http::Request::get(format!("http://{addr}/x"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Empty::new()).unwrap();
    let fut = async {
        tx.ready().await?;
        let res = tx.send_request(req).await?;
        let status = res.status().as_u16();
        res.into_body().collect().await?;
        Ok(status)
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_requests_closes_http1_after_the_nth_response() {
    let origin = Origin::start("app").await;
    let (_p, addr) = proxy(&origin, "keepalive_requests = 3\n").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    for i in 1..=3 {
        let r = get(&mut s, "").await;
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.says_close(), i == 3, "request {i}: {}", r.head);
    }
    assert!(
        closed_within(&mut s, SLACK).await.is_some(),
        "the connection stays open after its last request"
    );
    // The fourth request needs a second connection.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = get(&mut s, "").await;
    assert_eq!(r.status, 200);
    assert!(!r.says_close());
    assert_eq!(origin.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_requests_ends_http2_with_goaway_after_the_nth_stream() {
    let origin = Origin::start("app").await;
    let (_p, addr) = proxy(&origin, "keepalive_requests = 2\n").await;
    let (mut tx, conn) = h2(addr).await;
    assert_eq!(h2_get(&mut tx, addr, &[]).await.unwrap(), 200);
    assert_eq!(h2_get(&mut tx, addr, &[]).await.unwrap(), 200);
    // GOAWAY, then the proxy closes the connection: its task ends cleanly.
    tokio::time::timeout(SLACK, conn)
        .await
        .expect("the HTTP/2 connection stays open after its last stream")
        .unwrap();
    assert!(h2_get(&mut tx, addr, &[]).await.is_err());
    let (mut tx, _conn) = h2(addr).await;
    assert_eq!(h2_get(&mut tx, addr, &[]).await.unwrap(), 200);
    assert_eq!(origin.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timeout_closes_an_idle_http1_connection() {
    let origin = Origin::start("app").await;
    // The head's timeout is long: the idle wait is the keep-alive one.
    let (_p, addr) = proxy(
        &origin,
        "keepalive_timeout = \"300ms\"\nclient_header_timeout = \"30s\"\n",
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Measured from before the request: the idle wait starts after its answer.
    let start = Instant::now();
    let r = get(&mut s, "").await;
    assert_eq!(r.status, 200);
    assert!(!r.says_close());
    closed_within(&mut s, KEEPALIVE + SLACK)
        .await
        .expect("the idle connection stays open");
    let open = start.elapsed();
    assert!(open >= KEEPALIVE, "closed after {open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timeout_closes_an_idle_http2_connection() {
    let origin = Origin::start("app").await;
    let (_p, addr) = proxy(
        &origin,
        "keepalive_timeout = \"300ms\"\nclient_header_timeout = \"30s\"\n",
    )
    .await;
    let (mut tx, conn) = h2(addr).await;
    let start = Instant::now();
    assert_eq!(h2_get(&mut tx, addr, &[]).await.unwrap(), 200);
    tokio::time::timeout(KEEPALIVE + SLACK, conn)
        .await
        .expect("the idle HTTP/2 connection stays open")
        .unwrap();
    let open = start.elapsed();
    assert!(open >= KEEPALIVE, "closed after {open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timeout_zero_serves_one_request_per_connection() {
    let origin = Origin::start("app").await;
    let (_p, addr) = proxy(&origin, "keepalive_timeout = \"0s\"\n").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = get(&mut s, "").await;
    assert_eq!(r.status, 200);
    assert!(r.says_close(), "{}", r.head);
    assert!(closed_within(&mut s, SLACK).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_size_refuses_a_larger_head_with_431_and_closes() {
    let origin = Origin::start("app").await;
    let (_p, addr) = proxy(&origin, "max_header_size = \"16KiB\"\n").await;
    let under = format!("X-Big: {}\r\n", "a".repeat(12 * 1024));
    let over = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get(&mut s, &under).await.status, 200);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = get(&mut s, &over).await;
    assert_eq!(r.status, 431, "{}", r.head);
    assert!(closed_within(&mut s, SLACK).await.is_some());
    // HTTP/2: the same size as SETTINGS_MAX_HEADER_LIST_SIZE.
    let (mut tx, _conn) = h2(addr).await;
    let (under, over) = ("a".repeat(12 * 1024), "a".repeat(20 * 1024));
    assert_eq!(
        h2_get(&mut tx, addr, &[("x-big", &under)]).await.unwrap(),
        200
    );
    let (mut tx, _conn) = h2(addr).await;
    assert_eq!(
        h2_get(&mut tx, addr, &[("x-big", &over)]).await.unwrap(),
        431
    );
    assert_eq!(origin.requests(), 2, "a refused head reached the origin");
}
