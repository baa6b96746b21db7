//! Connection reuse on both sides: upstream keep-alive pools (reuse, the `keepalive`
//! bound, origins that close idle connections) and client HTTP/1.1 pipelining.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::get;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Barrier;

/// These tests count one pool's connections, and pools are per worker (as nginx's
/// `keepalive` is): with one worker every request uses the same pool.
/// `tests/workers.rs` covers the pools of several workers.
async fn start_proxy(toml: &str) -> switchyard::Running {
    common::start_proxy_workers(toml, 1).await
}

fn config(origin: SocketAddr, keepalive: usize) -> String {
    format!(
        "{}[[route]]\nupstream = \"u\"\n\n[upstream.u]\nkeepalive = {keepalive}\nservers = [{{ addr = \"{origin}\" }}]\n",
        common::listeners(&["public"])
    )
}

/// Waits (bounded) until the proxy's pool for its only server holds `n` idle
/// connections: a connection goes back to the pool as its response ends, which the
/// client may see a moment before the proxy has filed it.
async fn wait_idle(running: &switchyard::Running, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let idle = running.shared.load().upstreams[0].servers[0]
            .state
            .pool
            .idle_count();
        if idle == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pool holds {idle} idle connections, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let (origin, accepted) = common::counting_origin(None).await;
    let running = start_proxy(&config(origin, 32)).await;
    let proxy = running.addr("public").unwrap();
    for _ in 0..20 {
        // A fresh client connection each time: reuse is the proxy's, not the client's.
        assert_eq!(get(proxy, "/").await.status, StatusCode::OK);
        wait_idle(&running, 1).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_zero_opens_a_connection_per_request() {
    let (origin, accepted) = common::counting_origin(None).await;
    let running = start_proxy(&config(origin, 0)).await;
    let proxy = running.addr("public").unwrap();
    for _ in 0..5 {
        assert_eq!(get(proxy, "/").await.status, StatusCode::OK);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_keeps_at_most_keepalive_idle_connections() {
    const WAVE: usize = 6;
    let barrier = Arc::new(Barrier::new(WAVE));
    let (origin, accepted) = common::counting_origin(Some(barrier)).await;
    let running = start_proxy(&config(origin, 2)).await;
    let proxy = running.addr("public").unwrap();
    let wave = || async {
        let reqs: Vec<_> = (0..WAVE).map(|_| tokio::spawn(get(proxy, "/"))).collect();
        for r in reqs {
            assert_eq!(r.await.unwrap().status, StatusCode::OK);
        }
    };
    // Six requests held at the origin together need six connections...
    wave().await;
    assert_eq!(accepted.load(Ordering::SeqCst), WAVE);
    // ...of which the pool keeps two; the next wave reuses those and opens four.
    wait_idle(&running, 2).await;
    wave().await;
    assert_eq!(accepted.load(Ordering::SeqCst), WAVE + WAVE - 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_closing_connections_after_each_response_loses_no_request() {
    // Answers as if the connection stayed open, then closes it: the pooled
    // connection is dead by the time the next request wants it.
    let l = TcpListener::bind(common::loopback0()).await.unwrap();
    let origin = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while common::find(&got, b"\r\n\r\n").is_none() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let running = start_proxy(&config(origin, 32)).await;
    let proxy = running.addr("public").unwrap();
    let mut conn = common::Conn::open(proxy).await;
    for i in 0..200 {
        let r = conn.send("GET", "/", &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.body, "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let p = common::setup(
        &["a"],
        "[[route]]\nupstream = \"u\"\n\n[upstream.u]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    // Three requests in one write; the second is slow at the origin, which must not
    // let the third overtake it.
    s.write_all(
        b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /second?delay=200ms HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /third HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .unwrap();
    // Responses may arrive together in one read, so parse them from one buffer.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    for path in ["/first", "/second?delay=200ms", "/third"] {
        let (status, body) = loop {
            if let Some(r) = split_response(&mut buf) {
                break r;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
                .await
                .expect("response in time")
                .unwrap();
            assert!(n > 0, "connection closed before the response to {path}");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(status, 200);
        assert!(
            body.contains(&format!("request: GET {path} HTTP/1.1")),
            "{body}"
        );
    }
}

/// Removes one complete response (with `Content-Length`) from the front of `buf`.
fn split_response(buf: &mut Vec<u8>) -> Option<(u16, String)> {
    let head_end = common::find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("sample origin responses have a length");
    if buf.len() < head_end + len {
        return None;
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    buf.drain(..head_end + len);
    Some((head[9..12].parse().unwrap(), body))
}
