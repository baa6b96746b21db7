//! Protocol switches (WebSocket and the like): the request's `Upgrade` goes to the
//! server, and when it answers 101 the two connections are spliced byte for byte
//! until either side closes or nothing crosses for the route's `tunnel_timeout`.
//! The tunnel holds the request's in-flight guard, so a server's open tunnels count
//! as load, and it runs as its own task, apart from the configuration snapshot:
//! reloads do not touch it. It counts the bytes it carries and hands them to the
//! request's record when it closes (`TunnelClose`): the access-log line and the
//! byte counters of a switch are written then, not at the 101.
//!
//! HTTP/2 clients ask with an extended CONNECT (RFC 8441, `:protocol = websocket`);
//! the server gets the HTTP/1.1 form of the same request (GET with `Upgrade`, and
//! the `Sec-WebSocket-Key` HTTP/2 does without), and its 101 becomes the client's
//! 200. The server side of a switch is always HTTP/1.1.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::headers::strip_hop_by_hop;
use crate::pipeline::log::{TunnelEnd, Tunnelled};
use crate::pipeline::reply::RespBody;
use crate::upstream::InFlight;

/// What a switching request needs kept: its `Upgrade` value and the client side
/// of the upgrade.
#[derive(Debug)]
pub(super) struct Upgrade {
    protocol: HeaderValue,
    client: OnUpgrade,
    /// Asked by HTTP/2 extended CONNECT: answered 200, without `Upgrade`.
    extended: bool,
}

/// Takes the upgrade out of a request that asks for one: HTTP/1.1 with
/// `Connection: upgrade` and an `Upgrade` header, or HTTP/2 extended CONNECT, which
/// is turned into the equivalent HTTP/1.1 request here.
pub(super) fn requested<B>(req: &mut Request<B>) -> Option<Upgrade> {
    match req.version() {
        Version::HTTP_11 => {
            let asks = req
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            let protocol = req.headers().get(header::UPGRADE)?.clone();
            asks.then(|| Upgrade {
                protocol,
                client: hyper::upgrade::on(req),
                extended: false,
            })
        }
        Version::HTTP_2 if req.method() == Method::CONNECT => {
            let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
            let protocol = HeaderValue::from_str(protocol.as_str()).ok()?;
            *req.method_mut() = Method::GET;
            if protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
                // RFC 6455 §4.1 requires it of an HTTP/1.1 handshake; RFC 8441 drops
                // it, as the stream itself proves the peer speaks WebSocket.
                req.headers_mut()
                    .insert(SEC_WEBSOCKET_KEY.clone(), websocket_key());
            }
            Some(Upgrade {
                protocol,
                client: hyper::upgrade::on(req),
                extended: true,
            })
        }
        _ => None,
    }
}

static SEC_WEBSOCKET_KEY: header::HeaderName = header::HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: header::HeaderName =
    header::HeaderName::from_static("sec-websocket-accept");

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1). A nonce
/// against caches, not a secret, so the balancer's fast generator serves.
fn websocket_key() -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = [0u8; 18];
    raw[..8].copy_from_slice(&crate::rng::next_u64().to_le_bytes());
    raw[8..16].copy_from_slice(&crate::rng::next_u64().to_le_bytes());
    let mut out = Vec::with_capacity(24);
    for chunk in raw.chunks(3) {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(B64[(n >> shift) as usize & 63]);
        }
    }
    // 16 bytes are 22 digits and two pad characters.
    out.truncate(22);
    out.extend_from_slice(b"==");
    HeaderValue::from_bytes(&out).expect("base64 is a valid header value")
}

impl Upgrade {
    /// Puts `Connection: upgrade` and the `Upgrade` value back on the outgoing head.
    pub(super) fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    /// Whether an HTTP/2 client asked (extended CONNECT).
    pub(super) fn extended(&self) -> bool {
        self.extended
    }
}

/// Answers the client's switch with the server's 101 (200 for an HTTP/2 client)
/// and splices the connections until either closes or `idle` passes without a byte.
pub(super) fn relay(
    mut res: Response<Incoming>,
    upgrade: Upgrade,
    guard: InFlight,
    idle: Duration,
) -> Response<RespBody> {
    let server = hyper::upgrade::on(&mut res);
    let (mut head, _) = res.into_parts();
    let protocol = head.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut head.headers);
    if upgrade.extended {
        // RFC 8441 §5: a 2xx opens the tunnel; the accept token has no use.
        head.status = StatusCode::OK;
        head.version = Version::HTTP_2;
        head.headers.remove(&SEC_WEBSOCKET_ACCEPT);
    } else {
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(p) = protocol {
            head.headers.insert(header::UPGRADE, p);
        }
    }
    let (end, close) = TunnelEnd::pair();
    head.extensions.insert(end);
    tokio::spawn(async move {
        let _guard = guard;
        let (client, server) = tokio::join!(upgrade.client, server);
        let (Ok(client), Ok(server)) = (client, server) else {
            tracing::debug!("protocol switch failed on one side");
            return;
        };
        let activity = Activity::new();
        let mut c = Watched::new(TokioIo::new(client), &activity);
        let mut s = Watched::new(TokioIo::new(server), &activity);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut s) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnel ended with an error");
                }
            }
            () = activity.idle_for(idle) => {
                tracing::debug!(?idle, "tunnel idle past tunnel_timeout; closing both sides");
            }
        }
        // Bytes read from each side: what was passed on, but for the last read
        // of a side that failed mid-write.
        close.done(Tunnelled {
            from_client: c.read,
            to_client: s.read,
        });
    });
    Response::from_parts(head, RespBody::empty())
}

// ===== idle tracking =====

/// When a byte last crossed the tunnel, either way. Both directions are copied by
/// one task; the atomic only makes the shared reference `Send`.
struct Activity {
    start: Instant,
    /// Nanoseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let nanos = self.start.elapsed().as_nanos() as u64;
        self.last.store(nanos, Ordering::Relaxed);
    }

    /// Resolves once `limit` has passed since the last byte. Sleeps to the deadline
    /// the last activity implies and re-checks, so traffic costs no timer resets.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed));
            let deadline = last + limit;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One side of the tunnel; every read that brings bytes counts as activity, and
/// in `read`.
struct Watched<'a, T> {
    io: T,
    activity: &'a Activity,
    /// Bytes read from this side.
    read: u64,
}

impl<'a, T> Watched<'a, T> {
    fn new(io: T, activity: &'a Activity) -> Self {
        Watched {
            io,
            activity,
            read: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        if got > 0 {
            this.activity.touch();
            this.read += got as u64;
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_are_base64_of_sixteen_bytes() {
        let a = websocket_key();
        let b = websocket_key();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 24);
        assert!(s.ends_with("=="));
        assert!(s[..22]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_only_after_a_quiet_limit() {
        let a = Activity::new();
        let limit = Duration::from_secs(10);
        let idle = a.idle_for(limit);
        tokio::pin!(idle);
        tokio::time::advance(Duration::from_secs(6)).await;
        a.touch();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            futures_poll(&mut idle).is_pending(),
            "activity at 6 s moves the deadline to 16 s"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(futures_poll(&mut idle).is_ready());
    }

    fn futures_poll<F: std::future::Future>(f: &mut Pin<&mut F>) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        f.as_mut().poll(&mut Context::from_waker(waker))
    }
}
