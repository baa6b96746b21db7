//! Bodies stream through the proxy in both directions without being buffered: a
//! 1 GiB download and a 1 GiB upload keep the whole process's memory growth small,
//! a chunked response reaches the client chunk by chunk, a request body reaches the
//! origin (and its echo the client) piece by piece, and `Expect: 100-continue` works.
//!
//! Memory is measured for the whole test process (client, proxy and origin all run
//! in it), so the tests of this file take `SERIAL` to keep other tests' work out of
//! a measurement. The memory tests read /proc and run on Linux only.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

// ===== memory measurement =====
//
// The brief for these tests asked for a counting `#[global_allocator]`, but
// Cargo.toml's `[lints.rust] unsafe_code = "forbid"` applies to every target of the
// package, tests included, and `forbid` cannot be lifted with `#![allow]`; an
// allocator needs `unsafe impl GlobalAlloc`. So the process's resident set is
// measured instead: writing 5 to /proc/self/clear_refs resets the kernel's peak
// (VmHWM) to the current size, and VmHWM afterwards is the peak reached. It counts
// more than the heap (stacks, code pages touched), but the transfers touch
// nothing new beyond buffers: measured growth is 1-4 MiB.

/// A field of /proc/self/status, in bytes.
fn proc_status(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: usize = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("a number in {line:?}"));
    kib * 1024
}

/// Starts a measurement: the peak is reset to the current resident size, which is
/// returned as the baseline.
fn reset_peak() -> usize {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS (Linux >= 4.0)");
    proc_status("VmRSS:")
}

fn peak_growth_since(baseline: usize) -> usize {
    proc_status("VmHWM:").saturating_sub(baseline)
}

/// Tests of this file run one at a time so a measurement sees one transfer only.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ===== constants =====

const GIB: u64 = 1 << 30;
const MIB: usize = 1 << 20;
/// Growth of the peak resident set allowed for the whole process (client + proxy +
/// origin) while a gigabyte goes through. hyper's buffers are at most a few hundred
/// KiB per connection; buffering a body would cost about a gigabyte.
const MEMORY_BOUND: usize = 16 * MIB;
/// Upper bound on any single step, so a broken proxy fails instead of hanging.
const STEP: Duration = Duration::from_secs(60);

// ===== helpers =====

async fn start_origin_and_proxy() -> (switchyard::Running, SocketAddr) {
    let (origin, _task) = switchyard::origin::spawn(
        "127.0.0.1:0".parse().expect("valid address"),
        "streaming-origin",
    )
    .await
    .expect("origin starts");
    // Without the default `max_body_size` (nginx's 1 MiB): the uploads here are
    // far larger, and streaming them is what is measured.
    let config = common::one_origin_config(origin).replacen(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nmax_body_size = 0\n",
        1,
    );
    let running = common::start_proxy(&config).await;
    let addr = running.addr("public").expect("listener public exists");
    (running, addr)
}

/// An HTTP/1.1 client connection to `addr` (hyper's low-level client).
async fn connect<B>(addr: SocketAddr) -> SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream.set_nodelay(true).expect("nodelay");
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx
}

/// Sends `method path` with a `Host` and `body` on `tx`; the response head, in time.
async fn send_head<B>(
    tx: &mut SendRequest<B>,
    method: Method,
    path: &str,
    body: B,
) -> Response<Incoming>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "streaming.test")
        .body(body)
        .expect("request");
    timeout(STEP, tx.send_request(req))
        .await
        .expect("response head in time")
        .expect("response head")
}

fn mib(n: usize) -> f64 {
    n as f64 / MIB as f64
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

static PATTERN: [u8; 64 * 1024] = [b'z'; 64 * 1024];

/// A request body of `left` bytes made of static 64 KiB chunks: nothing is buffered
/// on the client's side, and the exact size makes hyper send `Content-Length`.
struct StaticBody {
    left: u64,
}

impl Body for StaticBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(PATTERN.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PATTERN[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A request body the test feeds piece by piece through a channel; it ends when
/// the sender is dropped. No size is known, so hyper sends it chunked.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|b| Ok(Frame::data(b))))
    }
}

// ===== tests =====

/// The client downloads 1 GiB (`?bytes=N`) through the proxy, dropping each frame;
/// every byte arrives and the process's memory barely grows.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_1_gib_streams_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let (_proxy, addr) = start_origin_and_proxy().await;
    let mut tx = connect::<Empty<Bytes>>(addr).await;

    let baseline = reset_peak();
    let start = Instant::now();
    let res = send_head(
        &mut tx,
        Method::GET,
        &format!("/?bytes={GIB}"),
        Empty::new(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get(header::CONTENT_LENGTH)
            .map(|v| v.as_bytes()),
        Some(GIB.to_string().as_bytes()),
        "the origin's Content-Length is passed on"
    );
    let mut body = res.into_body();
    let mut received: u64 = 0;
    let mut frames: u64 = 0;
    while let Some(frame) = timeout(STEP, body.frame()).await.expect("frame in time") {
        let frame = frame.expect("body frame");
        if let Some(d) = frame.data_ref() {
            received += d.len() as u64;
            frames += 1;
        }
    }
    let elapsed = start.elapsed();
    let growth = peak_growth_since(baseline);
    eprintln!(
        "download: {received} bytes in {frames} frames, {elapsed:.2?} ({:.0} MiB/s), \
         peak RSS growth {:.2} MiB",
        rate(received, elapsed),
        mib(growth)
    );
    assert_eq!(received, GIB, "every byte of the body arrived");
    assert!(
        growth < MEMORY_BOUND,
        "resident memory grew by {:.1} MiB while streaming 1 GiB (bound {:.0} MiB): the body is buffered",
        mib(growth),
        mib(MEMORY_BOUND)
    );
}

/// The client uploads 1 GiB as a POST body of static chunks; the origin counts
/// every byte and the process's memory barely grows. A proxy that read the body
/// faster than the origin takes it would grow by up to the body's size, so this
/// also shows backpressure from the origin reaches the client.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_1_gib_streams_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let (_proxy, addr) = start_origin_and_proxy().await;
    let mut tx = connect::<StaticBody>(addr).await;

    let baseline = reset_peak();
    let start = Instant::now();
    let res = send_head(&mut tx, Method::POST, "/upload", StaticBody { left: GIB }).await;
    let status = res.status();
    let text = timeout(STEP, res.into_body().collect())
        .await
        .expect("response body in time")
        .expect("response body")
        .to_bytes();
    let elapsed = start.elapsed();
    let growth = peak_growth_since(baseline);
    let text = String::from_utf8_lossy(&text);
    eprintln!(
        "upload: {GIB} bytes in {elapsed:.2?} ({:.0} MiB/s), peak RSS growth {:.2} MiB",
        rate(GIB, elapsed),
        mib(growth)
    );
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.contains(&format!("received: {GIB} bytes")),
        "the origin received the whole body: {text:?}"
    );
    assert!(
        growth < MEMORY_BOUND,
        "resident memory grew by {:.1} MiB while uploading 1 GiB (bound {:.0} MiB): the body is buffered",
        mib(growth),
        mib(MEMORY_BOUND)
    );
}

/// `?chunks=3&interval=1s`: the first chunk reaches the client at once, not when
/// the origin finishes two seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_chunk_of_a_chunked_response_arrives_before_the_origin_finishes() {
    let _serial = SERIAL.lock().await;
    let (_proxy, addr) = start_origin_and_proxy().await;
    let mut tx = connect::<Empty<Bytes>>(addr).await;

    let start = Instant::now();
    let res = send_head(&mut tx, Method::GET, "/?chunks=3&interval=1s", Empty::new()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers().get(header::CONTENT_LENGTH).is_none(),
        "a chunked response must not get a Content-Length (that would mean buffering)"
    );
    let mut body = res.into_body();
    let first = loop {
        let frame = timeout(STEP, body.frame())
            .await
            .expect("frame in time")
            .expect("a first frame")
            .expect("body frame");
        if let Ok(d) = frame.into_data() {
            if !d.is_empty() {
                break d;
            }
        }
    };
    let first_at = start.elapsed();
    let mut rest = Vec::new();
    while let Some(frame) = timeout(STEP, body.frame()).await.expect("frame in time") {
        if let Ok(d) = frame.expect("body frame").into_data() {
            rest.extend_from_slice(&d);
        }
    }
    let all_at = start.elapsed();
    eprintln!("chunks: first frame after {first_at:.2?}, whole body after {all_at:.2?}");
    assert_eq!(
        &first[..],
        b"chunk 2\n",
        "the first frame is the first chunk alone"
    );
    assert_eq!(rest, b"chunk 1\nchunk 0\n");
    assert!(
        first_at < Duration::from_millis(500),
        "the first chunk took {first_at:?}: the proxy held the response back"
    );
    assert!(
        all_at >= Duration::from_secs(2),
        "the whole body took only {all_at:?}; the origin pauses 2 s in total"
    );
}

/// A request body sent piece by piece to `?echo`: each piece comes back through the
/// proxy before the client sends the next one, so neither the request body nor
/// the response body waits for the other end to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_body_is_forwarded_piece_by_piece() {
    let _serial = SERIAL.lock().await;
    let (_proxy, addr) = start_origin_and_proxy().await;
    let mut tx = connect::<ChannelBody>(addr).await;

    // Each step is quick unless something waits for the end of a body, which never
    // comes while `pieces` is open.
    let quick = Duration::from_secs(5);
    let parts: [&'static [u8]; 3] = [b"first piece;", b"second piece;", b"third piece"];
    let (pieces, rx) = mpsc::channel::<Bytes>(1);
    let req = Request::post("/?echo")
        .header(header::HOST, "streaming.test")
        .body(ChannelBody { rx })
        .expect("request");
    let response = tokio::spawn(async move { tx.send_request(req).await });
    pieces
        .send(Bytes::from_static(parts[0]))
        .await
        .expect("body is being read");
    let res = timeout(quick, response)
        .await
        .expect("response head while the request body is still open")
        .expect("task")
        .expect("response head");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();

    for (i, piece) in parts.into_iter().enumerate() {
        if i > 0 {
            pieces
                .send(Bytes::from_static(piece))
                .await
                .expect("body is being read");
        }
        let mut got = Vec::new();
        while got.len() < piece.len() {
            let frame = timeout(quick, body.frame())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{:?} was not echoed while the request body is open",
                        String::from_utf8_lossy(piece)
                    )
                })
                .expect("the echo continues")
                .expect("body frame");
            if let Ok(d) = frame.into_data() {
                got.extend_from_slice(&d);
            }
        }
        assert_eq!(got, piece);
    }
    drop(pieces);
    let end = timeout(STEP, body.frame())
        .await
        .expect("the echo ends once the request body ends");
    assert!(end.is_none(), "nothing after the last piece: {end:?}");
}

/// `Expect: 100-continue` over a raw socket: the proxy answers `100 Continue`
/// before any body byte is sent, then forwards the body and the origin's 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_continue_then_the_final_response() {
    let _serial = SERIAL.lock().await;
    let (_proxy, addr) = start_origin_and_proxy().await;
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    let body = b"hello world";
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: streaming.test\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("send head");

    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("100 Continue before the body is sent")
            .expect("read");
        assert!(
            n > 0,
            "connection closed: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let interim = String::from_utf8_lossy(&got).into_owned();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "expected 100 Continue, got {interim:?}"
    );
    assert!(
        interim.ends_with("\r\n\r\n") && interim.matches("HTTP/1.1").count() == 1,
        "only the interim response before the body: {interim:?}"
    );

    s.write_all(body).await.expect("send body");
    let mut rest = Vec::new();
    timeout(STEP, s.read_to_end(&mut rest))
        .await
        .expect("final response in time")
        .expect("read final response");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n"),
        "final response: {text:?}"
    );
    assert!(
        text.ends_with(&format!("received: {} bytes\n", body.len())),
        "the origin received the body: {text:?}"
    );
}
