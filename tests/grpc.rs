//! HTTP/2 to origins (`protocol = "h2c"`): a gRPC-style exchange end to end (body,
//! trailers, `te: trailers`), HTTP/1.1 clients to an HTTP/2 origin, many requests
//! multiplexed on one upstream connection, another connection opened when the
//! origin's stream limit is reached, and a connection the origin shuts down
//! (GOAWAY) replaced by a fresh one.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::upstream::{h2_client, proto_origin, OriginSpec, ProtoOrigin};
use common::{start_proxy, EXCHANGE_LIMIT};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::Running;

/// The proxy with a catch-all route to one h2c upstream at `origin`.
async fn proxy_to_h2c(origin: &ProtoOrigin) -> (Running, std::net::SocketAddr) {
    proxy_to_h2c_workers(origin, common::WORKERS).await
}

/// As `proxy_to_h2c`, with `workers` worker threads.
async fn proxy_to_h2c_workers(
    origin: &ProtoOrigin,
    workers: usize,
) -> (Running, std::net::SocketAddr) {
    let toml = format!(
        "{}[[route]]\nupstream = \"grpc\"\n\n[upstream.grpc]\nprotocol = \"h2c\"\n\
         servers = [{{ addr = \"{}\" }}]\n",
        common::listeners(&["public"]),
        origin.addr
    );
    let running = common::start_proxy_workers(&toml, workers).await;
    let addr = running.addr("public").unwrap();
    (running, addr)
}

/// A gRPC call's shape: POST, `application/grpc`, `te: trailers`, a length-prefixed
/// message; the answer ends with `grpc-status` in trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_keeps_trailers_and_passes_te_trailers() {
    let origin = proto_origin(OriginSpec::h2c()).await;
    let (_running, addr) = proxy_to_h2c(&origin).await;
    let mut tx = h2_client::<Full<Bytes>>(addr).await;
    let message = b"\x00\x00\x00\x00\x05hello";
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/echo.Echo/Say"))
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(message)))
        .unwrap();
    let fut = async {
        tx.ready().await.unwrap();
        let res = tx.send_request(req).await.expect("response head");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/grpc");
        res.into_body().collect().await.expect("body and trailers")
    };
    let collected = tokio::time::timeout(EXCHANGE_LIMIT, fut).await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    let mut want = b"HTTP/2.0 /echo.Echo/Say\n".to_vec();
    want.extend_from_slice(message);
    assert_eq!(collected.to_bytes().as_ref(), want.as_slice());

    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(seen[0].headers["te"], "trailers");
    assert_eq!(seen[0].host.as_deref(), Some(addr.to_string().as_str()));
    // The usual proxy headers are there too.
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
}

/// HTTP/1.1 clients reach an HTTP/2 origin; their `TE` is reduced to `trailers`,
/// which is all HTTP/2 allows, and only when they asked for it.
#[tokio::test]
async fn http11_client_to_h2_origin() {
    let origin = proto_origin(OriginSpec::h2c()).await;
    let (_running, addr) = proxy_to_h2c(&origin).await;
    let r = common::send(
        addr,
        "POST",
        "/a",
        &[("te", "trailers, deflate;q=0.5")],
        Some(b"x"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "HTTP/2.0 /a\nx");
    let r = common::get(addr, "/b").await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = origin.seen();
    assert_eq!(seen[0].headers["te"], "trailers");
    assert!(!seen[1].headers.contains_key("te"));
}

/// Concurrent requests share one upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_share_one_upstream_connection() {
    let origin = proto_origin(OriginSpec::h2c()).await;
    let (_running, addr) = proxy_to_h2c(&origin).await;
    let tx = h2_client::<Full<Bytes>>(addr).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut tx = tx.clone();
        calls.spawn(async move {
            let req = Request::builder()
                .uri(format!("http://{addr}/s{i}"))
                .version(Version::HTTP_2)
                .body(Full::new(Bytes::new()))
                .unwrap();
            tx.ready().await.unwrap();
            let res = tx.send_request(req).await.expect("response");
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        });
    }
    let mut n = 0;
    while let Some(done) = tokio::time::timeout(EXCHANGE_LIMIT, calls.join_next())
        .await
        .expect("calls finish")
    {
        let (status, body) = done.unwrap();
        assert_eq!(status, StatusCode::OK, "{body:?}");
        n += 1;
    }
    assert_eq!(n, 20);
    assert_eq!(origin.seen().len(), 20);
    assert_eq!(
        origin.connections(),
        1,
        "one multiplexed upstream connection"
    );
}

/// With the origin's `SETTINGS_MAX_CONCURRENT_STREAMS` at 2, six requests held open
/// at once need three connections: the proxy opens another when one is full
/// rather than queueing behind the limit. Requests go one by one, each once the
/// previous has reached the origin, so each new connection has read the origin's
/// SETTINGS before it could be judged full (until then a connection is assumed to
/// take 100 streams, RFC 9113's recommended minimum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_makes_the_proxy_open_another() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = proto_origin(OriginSpec {
        max_streams: Some(2),
        gate: Some(Arc::clone(&gate)),
        ..OriginSpec::h2c()
    })
    .await;
    // Upstream connections belong to a worker, and each request here comes on a
    // new client connection, which either worker may take: with one worker, all of
    // them share one pool, whose connections the test counts.
    let (_running, addr) = proxy_to_h2c_workers(&origin, 1).await;
    // One exchange first, so that the origin's SETTINGS have been read.
    gate.add_permits(1);
    assert_eq!(common::get(addr, "/warm").await.status, StatusCode::OK);
    gate.acquire().await.unwrap().forget();

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6 {
        calls.spawn(async move { common::get(addr, &format!("/held{i}")).await });
        // It reaches the origin while none can finish: not queued behind the limit.
        let deadline = tokio::time::Instant::now() + EXCHANGE_LIMIT;
        while origin.seen().len() < i + 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "held request {i} did not reach the origin ({} connections)",
                origin.connections()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(origin.connections(), 3, "two streams on each connection");
    gate.add_permits(6);
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.unwrap().status, StatusCode::OK);
    }
}

/// An origin that gracefully closes each connection (GOAWAY) after its first
/// request: every following request must land on a fresh connection, never fail.
#[tokio::test]
async fn a_goaway_connection_is_replaced() {
    let l = tokio::net::TcpListener::bind(common::loopback0())
        .await
        .unwrap();
    let origin = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let done_tx = std::sync::Mutex::new(Some(done_tx));
                let svc = hyper::service::service_fn(move |_req| {
                    if let Some(tx) = done_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok")))) }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = done_rx => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    let toml = format!(
        "{}[[route]]\nupstream = \"u\"\n\n[upstream.u]\nprotocol = \"h2c\"\n\
         servers = [{{ addr = \"{origin}\" }}]\n",
        common::listeners(&["public"])
    );
    let running = start_proxy(&toml).await;
    let addr = running.addr("public").unwrap();
    let mut conn = common::Conn::open(addr).await;
    for i in 0..5 {
        let r = conn.send("GET", &format!("/{i}"), &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.body);
        assert_eq!(r.body, "ok");
    }
    // A connection may take a request or two more while its GOAWAY is in flight
    // (hyper's graceful GOAWAY announces the last stream after a PING round trip),
    // but never all five.
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        n >= 2,
        "the GOAWAY'd connection was replaced: {n} connections"
    );
}

/// The server side of a protocol switch is HTTP/1.1's `Upgrade`: to an HTTP/2
/// upstream an HTTP/2 client's extended CONNECT is refused with 501, and an
/// HTTP/1.1 client's `Upgrade` offer is ignored (the request goes on as a plain one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_switches_to_an_h2_upstream() {
    let origin = proto_origin(OriginSpec::h2c()).await;
    let (_running, addr) = proxy_to_h2c(&origin).await;

    let r = common::send(
        addr,
        "GET",
        "/ws",
        &[("connection", "upgrade"), ("upgrade", "websocket")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "HTTP/2.0 /ws\n");
    assert!(!origin.seen()[0].headers.contains_key("upgrade"));

    let mut tx = h2_client::<Full<Bytes>>(addr).await;
    // A first exchange, so the proxy's SETTINGS (extended CONNECT on) are known.
    let warm = Request::builder()
        .uri(format!("http://{addr}/"))
        .version(Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    tx.ready().await.unwrap();
    let _ = tx
        .send_request(warm)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await;
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .version(Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let res = tokio::time::timeout(EXCHANGE_LIMIT, tx.send_request(req))
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(res.status(), StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        origin.seen().len(),
        2,
        "the CONNECT never reached the origin"
    );
}
