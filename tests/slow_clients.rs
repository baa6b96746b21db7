//! Slow clients against the listener's timeouts (nginx's `client_header_timeout`
//! and `client_body_timeout`, here set to a second so the tests are quick): a
//! slowloris head is cut off with 408, a stalled body gets 408 and charges no
//! server, a slow but steady body goes through (the body timeout bounds each
//! pause, not the whole upload), and other clients are served meanwhile. The wait
//! for the next request on a kept-alive connection is `keepalive_timeout`'s, not
//! the head's: a head is timed from its first byte.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::control::{eventually, Origin};
use common::{get, read_response};
use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The timeouts the listener gets.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How late past its timeout the proxy may act (timer granularity, a busy test
/// machine).
const SLACK: Duration = Duration::from_secs(2);

async fn proxy(origin: &Origin) -> (Running, SocketAddr) {
    proxy_with(
        origin,
        "client_header_timeout = \"1s\"\nclient_body_timeout = \"1s\"\n",
    )
    .await
}

/// A proxy whose listener has `listener_keys`, in front of `origin`.
async fn proxy_with(origin: &Origin, listener_keys: &str) -> (Running, SocketAddr) {
    let toml = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n{listener_keys}\n\
         [[route]]\nupstream = \"app\"\n\n{}",
        common::upstream("app", &[(origin.addr(), 1)]),
    );
    let running = common::start_proxy(&toml).await;
    let addr = running.addr("public").unwrap();
    (running, addr)
}

/// Waits until the peer closes `s` (a read of 0 or an error); how long that took,
/// and what was read meanwhile.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((start.elapsed(), got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_off_while_others_are_served() {
    let origin = Origin::start("app").await;
    let (_p, addr) = proxy(&origin).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    // A header byte every 300 ms: each byte comes well within the timeout, the
    // head never completes; the timeout bounds the whole head.
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        slow
    });
    // Meanwhile another client is served.
    assert_eq!(get(addr, "/").await.status, 200);
    let mut slow = trickle.await.unwrap();
    let took = closed_within(&mut slow, TIMEOUT + SLACK).await;
    let (_, answer) = took.expect("the slowloris connection is still open");
    // Its head had begun: it is told why (HAProxy's 408; nginx closes silently).
    assert!(
        answer.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        origin.requests(),
        1,
        "only the other client's request got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_charges_no_server() {
    let origin = Origin::start("app").await;
    let (running, addr) = proxy(&origin).await;
    // POST: streamed to the server as it comes; PUT: held for a retry first.
    for method in ["POST", "PUT"] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[b'x'; 10]).await.unwrap();
        let start = Instant::now();
        let res = tokio::time::timeout(TIMEOUT + SLACK, read_response(&mut s))
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer to a stalled body"));
        assert_eq!(res.status, 408, "{method}: {}", res.head);
        assert!(start.elapsed() >= TIMEOUT - Duration::from_millis(100));
    }
    let server = &running.shared.load().upstreams[0].servers[0].state;
    // Settled: the attempts are over.
    let settled = eventually(SLACK, || server.inflight() == 0).await;
    assert!(settled.is_some(), "the stalled attempts never ended");
    assert_eq!(server.errors(), 0, "a stalled client charged the server");
    assert!(!server.ejected());
    assert_eq!(get(addr, "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_steady_body_goes_through() {
    let origin = Origin::start("app").await;
    let (_p, addr) = proxy(&origin).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n")
        .await
        .unwrap();
    // 8 bytes over 2.4 s: longer than the timeout in all, never a pause as long.
    for b in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let res = tokio::time::timeout(TIMEOUT + SLACK, read_response(&mut s))
        .await
        .expect("an answer");
    assert_eq!(res.status, 200, "{}", res.head);
    assert_eq!(origin.count(&http::Method::POST, "/upload"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_wait_and_a_head_are_timed_apart() {
    let origin = Origin::start("app").await;
    // A long keep-alive wait, a short head.
    let (_p, addr) = proxy_with(
        &origin,
        "client_header_timeout = \"500ms\"\nkeepalive_timeout = \"5s\"\n",
    )
    .await;
    let head_timeout = Duration::from_millis(500);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    s.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    // The client stays idle twice as long as a head may take: the connection
    // waits for it (hyper alone would time the wait as a head and close it).
    tokio::time::sleep(2 * head_timeout).await;
    s.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    // A head that starts and stalls is cut off a head's time after its first byte.
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let start = Instant::now();
    let r = tokio::time::timeout(head_timeout + SLACK, read_response(&mut s))
        .await
        .expect("no answer to a stalled head");
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(r.head.to_ascii_lowercase().contains("connection: close"));
    assert!(start.elapsed() >= head_timeout - Duration::from_millis(50));
    assert!(closed_within(&mut s, SLACK).await.is_some());
    assert_eq!(origin.requests(), 2);
}
