//! HTTP/2 prior-knowledge clients through the proxy to HTTP/1.1 origins.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use common::{setup, Resp, EXCHANGE_LIMIT};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

const THREE: &str = "[[route]]\nupstream = \"pool\"\n\n\
    [upstream.pool]\nservers = [{ addr = \"@0\" }, { addr = \"@1\" }, { addr = \"@2\" }]\n";

/// An HTTP/2 prior-knowledge connection to `addr`.
async fn h2(addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    tx
}

/// Sends one request with `:authority` = the proxy's address and reads it whole.
async fn h2_send(
    tx: &mut http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &[u8],
) -> (Version, Resp) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .version(Version::HTTP_2)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let fut = async {
        tx.ready().await.expect("h2 ready");
        let res = tx.send_request(req).await.expect("h2 response");
        (res.version(), Resp::read(res).await)
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("h2 exchange finished in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_reaches_http11_origin_with_host_from_authority() {
    let p = setup(&["a", "b", "c"], THREE).await;
    let mut tx = h2(p.addr).await;
    let (version, r) = h2_send(&mut tx, p.addr, Method::GET, "/x?y=1", b"").await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(r.status, StatusCode::OK);
    assert!(["a", "b", "c"].contains(&r.origin()), "{:?}", r.headers);
    // The origin got an origin-form HTTP/1.1 request and a Host equal to :authority.
    assert_eq!(r.origin_request_line(), "GET /x?y=1 HTTP/1.1");
    assert_eq!(r.seen("host"), [p.addr.to_string().as_str()]);
    // The proxy headers are there too.
    assert_eq!(r.seen("x-forwarded-host"), ["127.0.0.1"]);
    assert_eq!(r.seen("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_is_used_for_host_routing() {
    let body = "[[route]]\nhost = \"api.example.com\"\nupstream = \"a\"\n\n\
                [[route]]\nupstream = \"b\"\n\n\
                [upstream.a]\nservers = [{ addr = \"@0\" }]\n\n\
                [upstream.b]\nservers = [{ addr = \"@1\" }]\n";
    let p = setup(&["a", "b"], body).await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (authority, want) in [("API.example.com:443", "a"), ("other.org", "b")] {
        let req = Request::builder()
            .uri(format!("http://{authority}/"))
            .version(Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap();
        tx.ready().await.unwrap();
        let res = tokio::time::timeout(EXCHANGE_LIMIT, tx.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-origin"], want, "{authority}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.lines().any(|l| l == format!("host: {authority}")),
            "origin did not get Host {authority}:\n{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_concurrent_streams_on_one_connection() {
    let p = setup(&["a", "b", "c"], THREE).await;
    let tx = h2(p.addr).await;
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut tx = tx.clone();
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            // A short delay keeps the streams open at the same time.
            let path = format!("/s{i}?delay=100ms");
            let (_, r) = h2_send(&mut tx, addr, Method::GET, &path, b"").await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.origin_request_line(), format!("GET {path} HTTP/1.1"));
            r.origin().to_owned()
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        *counts.entry(t.await.expect("stream task")).or_default() += 1;
    }
    // Served side by side, not one after the other (that would take 2 s).
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1500),
        "took {took:?}"
    );
    // 20 round-robin picks over three equal servers: 7, 7 and 6, whatever the order.
    let mut n: Vec<usize> = counts.values().copied().collect();
    n.sort_unstable();
    assert_eq!(n, [6, 7, 7], "{counts:?}");
    assert!(tx.is_ready(), "the h2 connection is still usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_post_body_reaches_origin() {
    let p = setup(&["a", "b", "c"], THREE).await;
    let mut tx = h2(p.addr).await;
    let body = vec![b'z'; 100_000];
    let (_, r) = h2_send(&mut tx, p.addr, Method::POST, "/upload", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("received: 100000 bytes"),
        "origin reply: {}",
        r.body
    );

    // And echoed back intact over the same connection.
    let body: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (_, r) = h2_send(&mut tx, p.addr, Method::POST, "/e?echo", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_bytes(), &body[..]);
}
