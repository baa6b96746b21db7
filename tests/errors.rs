//! Error responses: upstream failures and timeouts as 502/504, and malformed client
//! requests (missing Host, oversized head, garbage) as 400/431, the latter over raw
//! TCP so the exact bytes are under the test's control.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{get, raw_exchange, send, setup, start_proxy};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the proxy from `toml`; the address of its "public" listener. The proxy runs
/// until the test's runtime ends.
async fn start_public(toml: &str) -> SocketAddr {
    let running = start_proxy(toml).await;
    let addr = running.addr("public").unwrap();
    std::mem::forget(running);
    addr
}

/// A proxy with one catch-all route to an upstream of the single server `server`;
/// `route_extra` adds keys to the route.
async fn proxy_to(server: SocketAddr, route_extra: &str) -> SocketAddr {
    let toml = format!(
        "{}[[route]]\nupstream = \"u\"\n{route_extra}\n\n{}",
        common::listeners(&["public"]),
        common::upstream("u", &[(server, 1)])
    );
    start_public(&toml).await
}

/// A proxy with one catch-all route to upstream `u`, whose `servers` list holds
/// `servers` (TOML).
async fn proxy_to_servers(servers: &str) -> SocketAddr {
    let toml = format!(
        "{}[[route]]\nupstream = \"u\"\n\n[upstream.u]\nservers = [{servers}]\n",
        common::listeners(&["public"]),
    );
    start_public(&toml).await
}

/// An origin on 127.0.0.1 that hands each connection it accepts to `serve`, one
/// after another.
async fn raw_origin<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let l = TcpListener::bind(common::loopback0()).await.unwrap();
    let server = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            serve(s).await;
        }
    });
    server
}

fn assert_short_and_anonymous(body: &str, server: SocketAddr) {
    assert!(body.len() < 64, "long error body: {body:?}");
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&server.port().to_string()),
        "error body leaks the upstream address: {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_502_without_details() {
    let dead = common::closed_port().await;
    let proxy = proxy_to(dead, "").await;
    let r = get(proxy, "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.body, "502 Bad Gateway\n");
    assert_short_and_anonymous(&r.body, dead);
    assert!(r.headers.get("x-origin").is_none());

    // HEAD gets the status without a body.
    let r = send(proxy, "HEAD", "/", &[], None).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.body, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_closing_without_answer_is_502() {
    let server = raw_origin(|mut s| async move {
        // Read the request head, then hang up without a word.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while common::find(&buf, b"\r\n\r\n").is_none() {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        drop(s);
    })
    .await;
    let proxy = proxy_to(server, "").await;
    let r = get(proxy, "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_short_and_anonymous(&r.body, server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_answering_garbage_is_502() {
    let server = raw_origin(|mut s| async move {
        let mut chunk = [0u8; 1024];
        let _ = s.read(&mut chunk).await;
        let _ = s.write_all(b"this is not http\r\n\r\n").await;
        let _ = s.shutdown().await;
    })
    .await;
    let proxy = proxy_to(server, "").await;
    let r = get(proxy, "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_short_and_anonymous(&r.body, server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_is_504() {
    let p = setup(
        &["a"],
        "[[route]]\nupstream = \"a\"\nread_timeout = \"200ms\"\n\n\
         [upstream.a]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    // A prompt answer passes.
    assert_eq!(get(p.addr, "/?delay=50ms").await.status, StatusCode::OK);

    let start = Instant::now();
    let r = get(p.addr, "/?delay=2s").await;
    let took = start.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.body, "504 Gateway Timeout\n");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "504 after {took:?}, expected about 200ms"
    );
}

/// A listener whose accept queue is full and never drained: Linux drops further
/// SYNs, so connecting to it hangs, which is a connect timeout on loopback. Returns
/// `None` when the queue cannot be seen to fill.
#[cfg(target_os = "linux")]
async fn unaccepting_listener() -> Option<(SocketAddr, TcpListener, Vec<TcpStream>)> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(common::loopback0()).ok()?;
    let addr = sock.local_addr().ok()?;
    let listener = sock.listen(0).ok()?;
    let mut held = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(_)) => return None,
            // This connect hangs: the queue is full.
            Err(_) => return Some((addr, listener, held)),
        }
    }
    None
}

// Relies on Linux dropping SYNs to a listener whose accept queue is full.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_504() {
    let (server, _listener, _held) = unaccepting_listener()
        .await
        .expect("a full accept queue makes loopback connects hang");
    let proxy = proxy_to(server, "connect_timeout = \"300ms\"").await;
    let start = Instant::now();
    let r = get(proxy, "/").await;
    let took = start.elapsed();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_short_and_anonymous(&r.body, server);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "504 after {took:?}, expected about 300ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_host_on_http11_is_400() {
    let p = setup(&["a"], ONE_ROUTE).await;
    let r = raw_exchange(p.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 400, "{}", r.head);
    assert!(
        !r.head.to_ascii_lowercase().contains("x-origin"),
        "{}",
        r.head
    );

    // An empty Host is as bad as none.
    let r = raw_exchange(p.addr, b"GET / HTTP/1.1\r\nHost:\r\n\r\n").await;
    assert_eq!(r.status, 400, "{}", r.head);

    // HTTP/1.0 may omit it and is served.
    let r = raw_exchange(p.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.head);

    // With a Host, the same request line is served.
    let r = raw_exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
}

fn request_with_header_bytes(total: usize, per_header: usize) -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    let mut i = 0;
    let mut added = 0;
    while added < total {
        let v = "v".repeat(per_header.min(total - added));
        let line = format!("X-Fill-{i}: {v}\r\n");
        added += line.len();
        req.extend_from_slice(line.as_bytes());
        i += 1;
    }
    req.extend_from_slice(b"\r\n");
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_over_64k_is_431() {
    let p = setup(&["a"], ONE_ROUTE).await;
    // 40 KiB of headers pass (so the limit is not something much smaller)…
    let r = raw_exchange(p.addr, &request_with_header_bytes(40 * 1024, 8 * 1024)).await;
    assert_eq!(r.status, 200, "{}", r.head);

    // …70 KiB do not.
    let r = raw_exchange(p.addr, &request_with_header_bytes(70 * 1024, 8 * 1024)).await;
    assert_eq!(r.status, 431, "{}", r.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_request_line_is_400() {
    let p = setup(&["a"], ONE_ROUTE).await;
    for garbage in [
        &b"HELLO\r\n\r\n"[..],
        b"GET / HTTP/9.9 trailing junk\r\nHost: x\r\n\r\n",
        b"\x01\x02\x03\x04 / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let r = raw_exchange(p.addr, garbage).await;
        assert_eq!(
            r.status,
            400,
            "{:?} → {}",
            String::from_utf8_lossy(garbage),
            r.head
        );
    }
}

const ONE_ROUTE: &str =
    "[[route]]\nupstream = \"a\"\n\n[upstream.a]\nservers = [{ addr = \"@0\" }]\n";

/// Sends `request` as is to a proxy with one route: answered 400 by the proxy
/// itself, not forwarded.
async fn assert_400_not_forwarded(request: &[u8]) {
    let p = setup(&["a"], ONE_ROUTE).await;
    let r = raw_exchange(p.addr, request).await;
    assert_eq!(
        r.status,
        400,
        "{}{}",
        r.head,
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        !r.head.contains("x-origin"),
        "forwarded upstream: {}",
        r.head
    );
}

// RFC 9112 §3.2: a server MUST answer 400 to a request with more than one Host line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_host_is_400() {
    assert_400_not_forwarded(
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
}

// RFC 9112 §3.2: … or a Host with an invalid value (here a space and a slash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_host_value_is_400() {
    assert_400_not_forwarded(b"GET / HTTP/1.1\r\nHost: a b/c\r\nConnection: close\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_usable_server_is_503_at_once() {
    // Every server of the upstream is marked `down` (nginx's flag): nothing to pick.
    let o = common::start_origins(&["a"]).await;
    let proxy = proxy_to_servers(&format!("{{ addr = \"{}\", down = true }}", o[0])).await;
    let started = Instant::now();
    let r = get(proxy, "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body, "503 Service Unavailable\n");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(r.headers.get("x-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_server_is_skipped_by_round_robin() {
    let o = common::start_origins(&["a", "b"]).await;
    let proxy = proxy_to_servers(&format!(
        "{{ addr = \"{}\", down = true }}, {{ addr = \"{}\" }}",
        o[0], o[1]
    ))
    .await;
    for _ in 0..4 {
        let r = get(proxy, "/").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers.get("x-origin").unwrap(), "b");
    }
}
