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
