//! A small sample origin for `switchyard demo`, the tests and the benchmarks. It
//! answers every request with its own name and what it received, and has knobs in
//! the query string so a test can make it slow, failing or streaming:
//!
//! | query            | effect                                                        |
//! |------------------|---------------------------------------------------------------|
//! | `status=503`     | answer with that status                                      |
//! | `delay=250ms`    | wait before sending the response head                        |
//! | `bytes=N`        | stream a body of N bytes (64 KiB chunks, no buffering)        |
//! | `chunks=N&interval=100ms` | send N chunked lines, pausing between them          |
//! | `echo`           | stream the request body back                                  |
//!
//! A request with a body (and no `echo`) is drained and answered with its length.
//! `/ping` answers `pong NAME`, a fixed short body for benchmarks; `/health` answers `ok`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Sleep;

/// Size of the chunks a `bytes=N` body is sent in.
const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [b'x'; CHUNK];

/// Binds `addr` and serves as origin `name` until the task is aborted.
pub async fn spawn(addr: SocketAddr, name: &str) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(serve(listener, name.to_owned()))))
}

/// Serves connections from `listener` forever.
pub async fn serve(listener: TcpListener, name: String) {
    let name: &'static str = Box::leak(name.into_boxed_str());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(name, req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

struct Knobs {
    status: StatusCode,
    delay: Option<Duration>,
    bytes: Option<u64>,
    chunks: Option<u32>,
    interval: Duration,
    echo: bool,
}

fn knobs(query: Option<&str>) -> Knobs {
    let mut k = Knobs {
        status: StatusCode::OK,
        delay: None,
        bytes: None,
        chunks: None,
        interval: Duration::from_millis(100),
        echo: false,
    };
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "status" => {
                k.status = value
                    .parse::<u16>()
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(k.status)
            }
            "delay" => k.delay = humantime::parse_duration(value).ok(),
            "bytes" => k.bytes = value.parse().ok(),
            "chunks" => k.chunks = value.parse().ok(),
            "interval" => k.interval = humantime::parse_duration(value).unwrap_or(k.interval),
            "echo" => k.echo = true,
            _ => {}
        }
    }
    k
}

async fn handle(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let path = req.uri().path();
    if path == "/health" {
        return Ok(reply(
            name,
            StatusCode::OK,
            OriginBody::Full(Some(Bytes::from_static(b"ok\n"))),
        ));
    }
    if path.ends_with("/ping") {
        return Ok(reply(
            name,
            StatusCode::OK,
            OriginBody::Full(Some(Bytes::from(format!("pong {name}\n")))),
        ));
    }
    let k = knobs(req.uri().query());
    if let Some(d) = k.delay {
        tokio::time::sleep(d).await;
    }
    let has_body = !req.body().is_end_stream();
    let body = if k.echo {
        OriginBody::Echo(req.into_body())
    } else if let Some(n) = k.bytes {
        OriginBody::Bytes(n)
    } else if let Some(n) = k.chunks {
        OriginBody::Chunks {
            left: n,
            interval: k.interval,
            sleep: None,
        }
    } else if has_body {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        OriginBody::Full(Some(Bytes::from(format!(
            "origin: {name}\nreceived: {n} bytes\n"
        ))))
    } else {
        OriginBody::Full(Some(Bytes::from(describe(name, &req))))
    };
    let mut res = reply(name, k.status, body);
    if let Some(n) = k.bytes {
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(res)
}

fn reply(name: &'static str, status: StatusCode, body: OriginBody) -> Response<OriginBody> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert("x-origin", HeaderValue::from_static(name));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The origin's name, the request line and the headers it received.
fn describe(name: &str, req: &Request<Incoming>) -> String {
    let mut s = format!(
        "origin: {name}\nrequest: {} {} {:?}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        s.push_str(k.as_str());
        s.push_str(": ");
        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
        s.push('\n');
    }
    s
}

enum OriginBody {
    Full(Option<Bytes>),
    Bytes(u64),
    Chunks {
        left: u32,
        interval: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    },
    Echo(Incoming),
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            OriginBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            OriginBody::Bytes(left) => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(CHUNK as u64) as usize;
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
            }
            OriginBody::Chunks {
                left,
                interval,
                sleep,
            } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                if let Some(s) = sleep {
                    if s.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                *left -= 1;
                *sleep = Some(Box::pin(tokio::time::sleep(*interval)));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!(
                    "chunk {left}\n"
                ))))))
            }
            OriginBody::Echo(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OriginBody::Full(b) => b.is_none(),
            OriginBody::Bytes(n) => *n == 0,
            OriginBody::Chunks { left, .. } => *left == 0,
            OriginBody::Echo(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            OriginBody::Bytes(n) => SizeHint::with_exact(*n),
            OriginBody::Chunks { .. } => SizeHint::default(),
            OriginBody::Echo(b) => b.size_hint(),
        }
    }
}
