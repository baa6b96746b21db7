//! WebSocket through the proxy: echo over HTTP/1.1 Upgrade, the open tunnel counted
//! as in flight, `tunnel_timeout` closing an idle tunnel (and not a busy one), a
//! tunnel surviving reloads, and WebSocket over HTTP/2 (RFC 8441 extended CONNECT)
//! to an HTTP/1.1 origin.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::upstream::{h2_client, start_file, websocket_echo_origin};
use common::TempDir;
use common::EXCHANGE_LIMIT;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode, Version};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use switchyard::Running;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A catch-all route (with the route keys `route_extra`) to upstream `ws` at `origin`.
fn config(origin: SocketAddr, route_extra: &str) -> String {
    format!(
        "{}[[route]]\nupstream = \"ws\"\n{route_extra}\n\n[upstream.ws]\nbalance = \"least_conn\"\n\
         servers = [{{ addr = \"{origin}\" }}]\n",
        common::listeners(&["public"])
    )
}

/// A WebSocket client connection through the proxy at `addr`.
async fn connect(addr: SocketAddr) -> Ws {
    let fut = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"));
    let (ws, res) = tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("handshake in time")
        .expect("WebSocket handshake through the proxy");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// Sends `msg` and expects it back.
async fn echo<S>(ws: &mut WebSocketStream<S>, msg: Message)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(msg.clone()).await.expect("send");
    let back = tokio::time::timeout(EXCHANGE_LIMIT, ws.next())
        .await
        .expect("echo in time")
        .expect("stream open")
        .expect("a message");
    assert_eq!(back, msg);
}

/// Closes as a client does: Close frame, the server's Close read, then the socket.
async fn close<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.close(None).await.expect("close");
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    tokio::time::timeout(EXCHANGE_LIMIT, drain)
        .await
        .expect("close handshake in time");
}

/// The in-flight count of the only server of the only upstream.
fn inflight(running: &Running) -> usize {
    running.shared.load().upstreams[0].servers[0]
        .state
        .inflight()
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + EXCHANGE_LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn websocket_messages_echo_through_the_proxy() {
    let (origin, _) = websocket_echo_origin().await;
    let running = common::start_proxy(&config(origin, "")).await;
    let mut ws = connect(running.addr("public").unwrap()).await;
    echo(&mut ws, Message::text("hello")).await;
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await;
    let big = "x".repeat(200_000);
    echo(&mut ws, Message::text(big)).await;
    // The open tunnel is load for least_conn, until it closes.
    assert_eq!(inflight(&running), 1);
    close(ws).await;
    until("the tunnel to end", || inflight(&running) == 0).await;
}

#[tokio::test]
async fn tunnel_timeout_closes_an_idle_tunnel_but_not_a_busy_one() {
    let (origin, _) = websocket_echo_origin().await;
    let limit = Duration::from_millis(200);
    let running = common::start_proxy(&config(origin, "tunnel_timeout = \"200ms\"")).await;
    let mut ws = connect(running.addr("public").unwrap()).await;
    // Busy for twice the limit: never idle that long, never closed.
    let busy_until = Instant::now() + 2 * limit;
    let mut i = 0;
    let mut quiet_since = Instant::now();
    while Instant::now() < busy_until {
        tokio::time::sleep(limit / 4).await;
        echo(&mut ws, Message::text(format!("ping {i}"))).await;
        quiet_since = Instant::now();
        i += 1;
    }
    // Then quiet: the proxy closes both sides once the limit passes.
    let end = tokio::time::timeout(EXCHANGE_LIMIT, ws.next())
        .await
        .expect("the idle tunnel was closed");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    let waited = quiet_since.elapsed();
    assert!(
        waited >= limit - Duration::from_millis(20),
        "closed after {waited:?}"
    );
    until("the tunnel's in-flight slot to be freed", || {
        inflight(&running) == 0
    })
    .await;
}

/// A WebSocket stays up across reloads, including ones that remove its server.
#[tokio::test]
async fn websocket_survives_reloads() {
    let (origin, _) = websocket_echo_origin().await;
    let (other, _) = websocket_echo_origin().await;
    let dir = TempDir::new("ws-reload");
    let a = config(origin, "");
    let b = config(other, "read_timeout = \"1s\"");
    let running = start_file(&dir.write("config.toml", &a)).await;
    let mut ws = connect(running.addr("public").unwrap()).await;
    echo(&mut ws, Message::text("before")).await;
    for i in 0..4 {
        dir.write("config.toml", if i % 2 == 0 { &b } else { &a });
        let changes = running.control.reload().expect("reload");
        assert!(!changes.is_empty());
        echo(&mut ws, Message::text(format!("after reload {i}"))).await;
    }
}

/// RFC 8441: an HTTP/2 client opens a WebSocket with extended CONNECT; the origin
/// (HTTP/1.1) sees an ordinary Upgrade handshake, and messages flow on the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect() {
    let (origin, accepted) = websocket_echo_origin().await;
    let running = common::start_proxy(&config(origin, "")).await;
    let addr = running.addr("public").unwrap();
    let mut tx = h2_client::<Empty<Bytes>>(addr).await;
    // One plain request first, so the proxy's SETTINGS (which enable extended
    // CONNECT) have arrived before the CONNECT is sent.
    let warm = Request::builder()
        .uri(format!("http://{addr}/"))
        .version(Version::HTTP_2)
        .body(Empty::new())
        .unwrap();
    tx.ready().await.unwrap();
    let warm = tx.send_request(warm).await.expect("plain request");
    let _ = http_body_util::BodyExt::collect(warm.into_body()).await;

    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/chat"))
        .version(Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    tx.ready().await.unwrap();
    let mut res = tokio::time::timeout(EXCHANGE_LIMIT, tx.send_request(req))
        .await
        .expect("answer in time")
        .expect("extended CONNECT answered");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!res.headers().contains_key("sec-websocket-accept"));
    let upgraded = hyper::upgrade::on(&mut res).await.expect("stream tunnel");
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    echo(&mut ws, Message::text("over h2")).await;
    echo(&mut ws, Message::binary(vec![7u8; 70_000])).await;
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(inflight(&running), 1);
    close(ws).await;
    until("the tunnel to end", || inflight(&running) == 0).await;
}

/// Issue 19: a switch's bytes are the tunnel's. The request is counted when its
/// 101 goes out; its bytes (in `bytes_sent_total` / `bytes_received_total`) and its
/// access-log line, whose `bytes_out`, `bytes_in` and `duration` take in the whole
/// tunnel as nginx's `$bytes_sent` and `$request_time` do, when the tunnel closes.
#[tokio::test]
async fn tunnel_bytes_are_counted_and_logged_when_it_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = common::upgrade_echo_origin("echo", &[]).await;
    let dir = TempDir::new("ws-log");
    let log = dir.path("access.log");
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[access_log]\npath = \"{}\"\n\n{}",
        log.display(),
        config(origin, "name = \"t\"")
    );
    let running = common::start_proxy(&text).await;
    let admin = running.admin.expect("admin listener");
    let metrics = || async move {
        common::control::Client::new(admin)
            .get("/metrics")
            .await
            .expect("metrics")
            .body
    };

    let mut s = TcpStream::connect(running.addr("public").unwrap())
        .await
        .unwrap();
    s.write_all(
        b"GET /t HTTP/1.1\r\nhost: ws.test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    // The head only, a byte at a time: the tunnel's bytes follow it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.expect("the switch's head"));
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let (up, down) = (vec![b'u'; 3000], 3000);
    for chunk in up.chunks(1000) {
        s.write_all(chunk).await.unwrap();
        let mut back = vec![0u8; chunk.len()];
        tokio::time::timeout(EXCHANGE_LIMIT, s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(back, chunk);
    }
    // Open: the request counts (1xx), its bytes not yet.
    let deadline = Instant::now() + EXCHANGE_LIMIT;
    loop {
        let m = metrics().await;
        let counted = common::sample(
            &m,
            "switchyard_requests_total",
            &[("route", "t"), ("code_class", "1xx")],
        );
        if counted == Some(1.0) {
            assert_eq!(
                common::sample(&m, "switchyard_bytes_sent_total", &[("route", "t")]),
                None,
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the 101 never counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        std::fs::read_to_string(&log).unwrap_or_default().is_empty(),
        "no line while the tunnel is open"
    );

    // The client closes; the origin sees the end and closes its side.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(EXCHANGE_LIMIT, s.read_to_end(&mut rest))
        .await
        .expect("the tunnel closes")
        .unwrap();
    assert!(rest.is_empty());

    let deadline = Instant::now() + EXCHANGE_LIMIT;
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line after the close"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["status"], 101, "{line}");
    assert_eq!(v["bytes_in"], up.len(), "{line}");
    assert_eq!(v["bytes_out"], down, "{line}");
    let m = metrics().await;
    let bytes = |name| common::sample(&m, name, &[("route", "t")]);
    assert_eq!(
        bytes("switchyard_bytes_sent_total"),
        Some(down as f64),
        "{m}"
    );
    assert_eq!(
        bytes("switchyard_bytes_received_total"),
        Some(up.len() as f64),
        "{m}"
    );
    running.shutdown(Duration::from_secs(1)).await;
}
