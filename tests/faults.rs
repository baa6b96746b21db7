//! Faults on either side of the proxy, over real sockets with hand-written raw TCP
//! peers, so the exact bytes are under the test's control:
//!
//! - a client whose request body is malformed or cut short gets a 4xx, and no
//!   server is charged for it (passive failures, `errors`, latency penalties).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{find, EXCHANGE_LIMIT};
use switchyard::upstream::ServerState;
use switchyard::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Sends `request` as is on a new connection and reads until the proxy closes it;
/// `None` if it closed without a full response head.
async fn exchange(proxy: SocketAddr, request: &[u8]) -> Option<Seen> {
    let fut = async {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        // The proxy may answer (and close) before reading everything.
        let _ = s.write_all(request).await;
        read_until_closed(&mut s).await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("the proxy answered and closed in time")
}

async fn read_until_closed(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
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

fn two_servers(balance: &str) -> String {
    format!(
        "[[route]]\nupstream = \"u\"\n\n[upstream.u]\nbalance = \"{balance}\"\n\
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
    for balance in ["round_robin", "ewma"] {
        let p = common::setup(&["a", "b"], &two_servers(balance)).await;
        for (case, request) in malformed_chunked_bodies() {
            let case = format!("{balance}, {case}");
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
    let p = common::setup(&["a", "b"], &two_servers("round_robin")).await;
    let request =
        b"PUT /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let seen = exchange(p.addr, request).await;
    assert_eq!(seen.as_ref().map(|s| s.status), Some(400), "{seen:?}");
    assert_uncharged(&p, "PUT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_abandons_its_body_charges_no_server() {
    let p = common::setup(&["a", "b"], &two_servers("ewma")).await;
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
        let seen = tokio::time::timeout(EXCHANGE_LIMIT, read_until_closed(&mut s))
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
