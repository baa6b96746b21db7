//! `max_body_size` (nginx's `client_max_body_size`) against a recording origin that
//! counts every byte reaching its sockets: a declared length over the limit is
//! refused with 413 before a byte reaches the origin (and before `100 Continue`);
//! a chunked or HTTP/2 body that grows past it is cut off, answered 413 with
//! `Connection: close`, counted as `body_size` and charged to no server; a body of
//! exactly the limit passes; a route's value overrides its listener's, per
//! listener.

mod common;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use common::control::eventually;
use common::{read_response, send, RawResp, EXCHANGE_LIMIT};
use http_body_util::BodyExt;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::Running;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The limit most tests set.
const LIMIT: usize = 1000;

/// What reached the origin.
#[derive(Default)]
struct Seen {
    /// Connections accepted.
    conns: AtomicUsize,
    /// Bytes read from all of them.
    bytes: AtomicUsize,
    /// Each request: its path, the body bytes that reached the origin, and
    /// whether the body came whole.
    requests: Mutex<Vec<(String, usize, bool)>>,
}

impl Seen {
    fn requests(&self) -> Vec<(String, usize, bool)> {
        self.requests.lock().unwrap().clone()
    }
}

/// A socket that counts the bytes read from it.
struct Counted {
    inner: TcpStream,
    seen: Arc<Seen>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.seen.bytes.fetch_add(n, Ordering::SeqCst);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTP/1.1 origin that reads each request's body to its end, records it,
/// and answers `got N`.
async fn recording_origin() -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind(common::loopback0()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let all = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            all.conns.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&all);
            let io = TokioIo::new(Counted {
                inner: s,
                seen: Arc::clone(&seen),
            });
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let path = req.uri().path().to_owned();
                            let mut body = req.into_body();
                            let (mut len, mut whole) = (0, true);
                            while let Some(frame) = body.frame().await {
                                match frame {
                                    Ok(f) => len += f.data_ref().map_or(0, Bytes::len),
                                    Err(_) => {
                                        whole = false;
                                        break;
                                    }
                                }
                            }
                            seen.requests.lock().unwrap().push((path, len, whole));
                            let text = format!("got {len}");
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(Bytes::from(text)),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A proxy with an admin listener (for the metrics), a "public" listener with
/// `listener_keys`, and `routes` to the upstream "app" of `origin`.
async fn proxy(origin: SocketAddr, listener_keys: &str, routes: &str) -> Running {
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n{listener_keys}\n\
         [[listener]]\nname = \"internal\"\nlisten = \"127.0.0.1:0\"\n\n\
         {routes}\n{}",
        common::upstream("app", &[(origin, 1)]),
    );
    common::start_proxy(&toml).await
}

/// One catch-all route limited to `LIMIT`.
fn limited_route() -> String {
    format!("[[route]]\nname = \"up\"\nupstream = \"app\"\nmax_body_size = {LIMIT}\n")
}

/// Writes `request` on a fresh connection (ignoring a write the proxy refused
/// by closing) and reads one response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (RawResp, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let r = tokio::time::timeout(EXCHANGE_LIMIT, read_response(&mut s))
        .await
        .expect("an answer in time");
    (r, s)
}

/// A chunked request of `chunks` chunks of `size` bytes each.
fn chunked(method: &str, path: &str, chunks: usize, size: usize) -> Vec<u8> {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for _ in 0..chunks {
        r.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        r.extend(std::iter::repeat_n(b'x', size));
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// A request with a `Content-Length` of `len`; the body is sent only when
/// `body` (a refused one stays unsent, so no unread bytes are in flight when the
/// proxy closes).
fn with_length(path: &str, len: usize, body: bool) -> Vec<u8> {
    let mut r =
        format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    if body {
        r.extend(std::iter::repeat_n(b'x', len));
    }
    r
}

/// Reads one response head (an interim one has no body).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(EXCHANGE_LIMIT, s.read(&mut byte))
            .await
            .expect("a head in time")
            .expect("read");
        assert!(
            n > 0,
            "closed in the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The connection closes: a read gives end of stream (or a reset) in time.
async fn closes(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(EXCHANGE_LIMIT, read).await.is_ok()
}

/// `switchyard_requests_limited_total` of `route` for `body_size`.
async fn body_size_refusals(running: &Running, route: &str) -> f64 {
    let admin = running.admin.expect("admin listener");
    let r = common::control::Client::new(admin)
        .send("GET", "/metrics", &[], None)
        .await
        .expect("metrics");
    let series =
        format!("switchyard_requests_limited_total{{route=\"{route}\",reason=\"body_size\"}} ");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().expect("a sample value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_content_length_is_413_before_a_byte_reaches_the_origin() {
    let (origin, seen) = recording_origin().await;
    let running = proxy(origin, "", &limited_route()).await;
    let addr = running.addr("public").unwrap();
    let (r, mut s) = exchange(addr, &with_length("/upload", LIMIT + 1, false)).await;
    assert_eq!(r.status, 413, "{}", r.head);
    assert!(r.says_close(), "{}", r.head);
    assert!(
        closes(&mut s).await,
        "the connection stays open after the 413"
    );
    assert_eq!(body_size_refusals(&running, "up").await, 1.0);
    assert_eq!(
        seen.conns.load(Ordering::SeqCst),
        0,
        "the origin was contacted"
    );
    assert_eq!(seen.bytes.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_with_an_oversized_length_is_refused_without_reading_the_body() {
    let (origin, seen) = recording_origin().await;
    let running = proxy(origin, "", &limited_route()).await;
    let addr = running.addr("public").unwrap();
    // The head alone: the client waits for 100 Continue before sending its body.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        10 * LIMIT
    );
    let (r, mut s) = exchange(addr, head.as_bytes()).await;
    assert_eq!(
        r.status, 413,
        "the first answer is not the refusal: {}",
        r.head
    );
    assert!(r.says_close());
    assert!(closes(&mut s).await);
    // Within the limit the client is told to go on, and the body goes through.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {LIMIT}\r\nExpect: 100-continue\r\n\r\n"
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let interim = read_head(&mut s).await;
    assert!(interim.starts_with("HTTP/1.1 100 "), "{interim}");
    s.write_all(&vec![b'x'; LIMIT]).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(seen.requests(), [("/upload".to_owned(), LIMIT, true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_is_cut_off_with_413_and_charges_no_server() {
    let (origin, seen) = recording_origin().await;
    let running = proxy(origin, "", &limited_route()).await;
    let addr = running.addr("public").unwrap();
    // POST streams as it comes: the first chunk reaches the origin, the second
    // would cross the limit.
    let request = chunked("POST", "/stream", 2, 600);
    let second = request.len() - (5 + 3 + 600 + 2);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&request[..second]).await.unwrap();
    let arrived = eventually(EXCHANGE_LIMIT, || seen.bytes.load(Ordering::SeqCst) > 600).await;
    assert!(
        arrived.is_some(),
        "the first chunk did not stream to the origin"
    );
    let _ = s.write_all(&request[second..]).await;
    let r = tokio::time::timeout(EXCHANGE_LIMIT, read_response(&mut s))
        .await
        .expect("an answer in time");
    assert_eq!(r.status, 413, "{}", r.head);
    assert!(r.says_close(), "{}", r.head);
    assert!(closes(&mut s).await);
    // The origin got the head and the first chunk, never a complete body.
    let broke = eventually(EXCHANGE_LIMIT, || !seen.requests().is_empty()).await;
    assert!(broke.is_some(), "the origin never saw the request");
    assert_eq!(seen.requests(), [("/stream".to_owned(), 600, false)]);
    // Not the server's fault: no failure, not ejected, and it serves the next one.
    let server = &running.shared.load().upstreams[0].servers[0].state;
    let settled = eventually(EXCHANGE_LIMIT, || server.inflight() == 0).await;
    assert!(settled.is_some());
    assert_eq!(server.errors(), 0, "the cut body was charged to the server");
    assert!(!server.ejected());
    assert_eq!(
        send(addr, "POST", "/next", &[], Some(b"abc")).await.status,
        200
    );
    assert_eq!(body_size_refusals(&running, "up").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_held_for_retries_past_the_limit_never_reaches_the_origin() {
    let (origin, seen) = recording_origin().await;
    let running = proxy(origin, "", &limited_route()).await;
    let addr = running.addr("public").unwrap();
    // PUT is idempotent: its body is read into memory first, for a retry.
    let (r, mut s) = exchange(addr, &chunked("PUT", "/held", 3, 400)).await;
    assert_eq!(r.status, 413, "{}", r.head);
    assert!(r.says_close());
    assert!(closes(&mut s).await);
    assert_eq!(
        seen.conns.load(Ordering::SeqCst),
        0,
        "the origin was contacted"
    );
    assert_eq!(body_size_refusals(&running, "up").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_exactly_the_limit_passes() {
    let (origin, seen) = recording_origin().await;
    let running = proxy(origin, "", &limited_route()).await;
    let addr = running.addr("public").unwrap();
    let (r, _) = exchange(addr, &with_length("/length", LIMIT, true)).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, format!("got {LIMIT}").as_bytes())
    );
    // Chunked, streamed (POST) and held (PUT): 600 + 400.
    let mut parts = chunked("POST", "/chunked", 1, 600);
    parts.truncate(parts.len() - 5);
    parts.extend_from_slice(b"190\r\n");
    parts.extend(std::iter::repeat_n(b'y', 400));
    parts.extend_from_slice(b"\r\n0\r\n\r\n");
    let (r, _) = exchange(addr, &parts).await;
    assert_eq!(r.status, 200, "{}", r.head);
    parts.splice(..5, b"PUT ".iter().copied());
    let (r, _) = exchange(addr, &parts).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        seen.requests(),
        [
            ("/length".to_owned(), LIMIT, true),
            ("/chunked".to_owned(), LIMIT, true),
            ("/chunked".to_owned(), LIMIT, true),
        ]
    );
    assert_eq!(body_size_refusals(&running, "up").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_s_limit_overrides_its_listener_s() {
    let (origin, _seen) = recording_origin().await;
    let routes = "[[route]]\nname = \"big\"\npath = \"/big/\"\nupstream = \"app\"\nmax_body_size = \"4KiB\"\n\
                  [[route]]\nname = \"free\"\npath = \"/free/\"\nupstream = \"app\"\nmax_body_size = 0\n\
                  [[route]]\nname = \"rest\"\npath = \"/\"\nupstream = \"app\"\n";
    let running = proxy(origin, "max_body_size = \"1KiB\"\n", routes).await;
    let public = running.addr("public").unwrap();
    // "internal" sets no limit: nginx's 1 MiB.
    let internal = running.addr("internal").unwrap();
    // Passing bodies are sent whole; refused ones as a head alone.
    let post = |addr, path: &'static str, n: usize| async move {
        let body = vec![b'x'; n];
        send(addr, "POST", path, &[], Some(&body))
            .await
            .status
            .as_u16()
    };
    let refused = |addr, path: &'static str, n: usize| async move {
        exchange(addr, &with_length(path, n, false)).await.0.status
    };
    assert_eq!(
        refused(public, "/rest", 2000).await,
        413,
        "the listener's 1KiB"
    );
    assert_eq!(post(public, "/rest", 1024).await, 200);
    assert_eq!(post(public, "/big/x", 2000).await, 200, "the route's 4KiB");
    assert_eq!(refused(public, "/big/x", 5000).await, 413);
    assert_eq!(post(public, "/free/x", 200_000).await, 200, "no limit");
    assert_eq!(
        post(internal, "/rest", 200_000).await,
        200,
        "the default 1MiB"
    );
    assert_eq!(refused(internal, "/rest", (1 << 20) + 1).await, 413);
    assert_eq!(
        refused(internal, "/big/x", 5000).await,
        413,
        "the route's, on every listener"
    );
    assert_eq!(body_size_refusals(&running, "rest").await, 2.0);
    assert_eq!(body_size_refusals(&running, "big").await, 2.0);
}

/// A request body of unknown length sent in chunks (HTTP/2: no content-length).
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_past_the_limit_is_413() {
    let (origin, seen) = recording_origin().await;
    let running = proxy(origin, "", &limited_route()).await;
    let addr = running.addr("public").unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut post = |chunks: &[usize]| {
        let body = Chunks(chunks.iter().map(|&n| Bytes::from(vec![b'x'; n])).collect());
        let req = http::Request::post(format!("http://{addr}/h2"))
            .body(body)
            .unwrap();
        let sent = tx.send_request(req);
        async move {
            tokio::time::timeout(EXCHANGE_LIMIT, sent)
                .await
                .expect("in time")
        }
    };
    // Over, then exactly at the limit, on one connection.
    let res = post(&[600, 600]).await.expect("an answer");
    assert_eq!(res.status(), 413);
    let res = post(&[600, 400]).await.expect("an answer");
    assert_eq!(res.status(), 200);
    // The refused body may have been cut before its head left (HTTP/2 can hand
    // both DATA frames over as one chunk): the origin never got it whole, nor
    // more than the limit of it.
    let seen = seen.requests();
    let whole: Vec<_> = seen.iter().filter(|r| r.2).collect();
    assert_eq!(whole, [&("/h2".to_owned(), LIMIT, true)], "{seen:?}");
    assert!(seen.iter().all(|r| r.1 <= LIMIT), "{seen:?}");
    let server = &running.shared.load().upstreams[0].servers[0].state;
    assert_eq!(server.errors(), 0);
    assert_eq!(body_size_refusals(&running, "up").await, 1.0);
}
