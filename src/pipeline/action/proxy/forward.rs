//! Sending one request upstream and waiting for its response head under the route's
//! timeouts.

use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::headers::strip_hop_by_hop;
use crate::body::{ReqBody, SendPhase, SendProgress};
use crate::config::Timeouts;
use crate::error::ProxyError;
use crate::pipeline::reply::RespBody;
use crate::upstream::{Blame, InFlight, Pool, PooledConn, Sender, UpstreamBody};

/// Reduces the request target to origin-form (`/path?query`), which is what an
/// HTTP/1.1 origin expects from a proxy (RFC 9112 §3.2.1).
pub fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let pq = uri.path_and_query().cloned();
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
    if let Ok(u) = Uri::from_parts(parts) {
        *uri = u;
    }
}

/// Turns an upstream response head into the client's response: hop-by-hop headers
/// stripped, the body streamed with the in-flight guard and the connection, which
/// goes back to the pool when the body ends, and with whom to blame if it breaks.
pub(super) fn respond(
    conn: PooledConn,
    res: Response<Incoming>,
    guard: InFlight,
    timeouts: Timeouts,
    blame: Blame,
) -> Response<RespBody> {
    let (mut head, incoming) = res.into_parts();
    strip_hop_by_hop(&mut head.headers);
    if head.version == Version::HTTP_2 {
        // The client's connection decides its own version; HTTP/1.1 clients get
        // hyper's fast status line this way.
        head.version = Version::HTTP_11;
    }
    let body = UpstreamBody::new(incoming, conn.tx, guard, timeouts.read, blame);
    Response::from_parts(head, RespBody::Upstream(body))
}

/// Sends the request on `conn` (a connection to one server) and returns the
/// response head.
///
/// A pooled connection may have been closed by the origin since its last use.
/// hyper hands the request back when it could not be written, and another
/// connection gets it. When it was written but the connection then closed or was
/// reset before a single response byte arrived (the `Wire` says), `again` may
/// supply a copy (bodiless or buffered idempotent requests), sent once on a fresh
/// connection to the same server (RFC 9112 §9.3.1): a stale keep-alive connection
/// is not the server's failure. Anything else is, and is not sent again: an
/// answer of any kind, even an invalid one, proves the origin read the request. On
/// a shared HTTP/2 connection the same holds for failures of the whole connection
/// (GOAWAY, I/O) and for streams the server refused unprocessed (RFC 9113 §8.7);
/// such a connection takes no new requests.
pub(super) async fn exchange(
    mut conn: PooledConn,
    mut req: Request<ReqBody>,
    progress: Option<&SendProgress>,
    pool: &Pool,
    timeouts: Timeouts,
    again: impl Fn() -> Option<Request<ReqBody>>,
) -> Result<(PooledConn, Response<Incoming>), ProxyError> {
    let mut replayed = false;
    loop {
        let reused = conn.reused;
        let sent = match &mut conn.tx {
            Sender::H1(c) => {
                c.wire.start();
                await_head(c.tx.try_send_request(req), progress, &timeouts).await
            }
            Sender::H2(lease) => {
                await_head(lease.tx.try_send_request(req), progress, &timeouts).await
            }
        };
        match sent {
            Ok(res) => return Ok((conn, res)),
            Err(Attempt::NotSent(back)) if reused => {
                req = *back;
                conn = pool.checkout(timeouts.connect).await?;
            }
            Err(Attempt::NotSent(_)) => {
                return Err(ProxyError::Connect(
                    std::io::ErrorKind::ConnectionReset.into(),
                ))
            }
            Err(Attempt::Failed(ProxyError::Upstream(e))) => {
                let stale = match &conn.tx {
                    Sender::H1(c) => connection_lost(&e) && !c.wire.received(),
                    Sender::H2(lease) => {
                        let whole = h2_connection_failed(&e);
                        if whole {
                            lease.condemn();
                        }
                        whole || h2_refused(&e)
                    }
                };
                let copy = (stale && reused && !replayed).then(&again).flatten();
                let Some(copy) = copy else {
                    return Err(ProxyError::Upstream(e));
                };
                tracing::debug!(error = %e, "pooled connection failed; sending again on a fresh one");
                req = copy;
                replayed = true;
                conn = PooledConn {
                    // Boxed: see `ProxyService::call`.
                    tx: Box::pin(pool.connect(timeouts.connect)).await?,
                    reused: false,
                };
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
}

/// Whose fault a failed exchange is. While a request body streams from the
/// client, a failure of its stream (malformed framing, the client gone) makes
/// hyper abort the exchange, and what the upstream connection then reports is a
/// consequence: `SendProgress` saw the client's stream fail first (see
/// `SendProgress::client_failed`); a body cut off at `max_body_size` is answered
/// 413. Anything else is the server's.
pub(super) fn blame(e: hyper::Error, progress: Option<&SendProgress>) -> ProxyError {
    match progress {
        Some(p) if p.client_failed() => match p.over_limit() {
            Some(max) => ProxyError::BodyTooLarge(max),
            None => ProxyError::ClientBody(e),
        },
        _ => ProxyError::Upstream(e),
    }
}

/// The connection ended under the exchange: closed before the response was
/// complete (hyper's incomplete message), or reset or broken while reading or
/// writing. Not a parse error, a timeout or a body of ours that failed.
fn connection_lost(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

/// The HTTP/2 error behind a hyper error, if any.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return Some(h);
        }
        source = s.source();
    }
    None
}

/// The whole HTTP/2 connection failed or is going away, not just this stream.
fn h2_connection_failed(e: &hyper::Error) -> bool {
    e.is_closed() || e.is_canceled() || h2_error(e).is_some_and(|h| h.is_go_away() || h.is_io())
}

/// The server reset the stream with REFUSED_STREAM: it did not process it.
fn h2_refused(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(|h| h.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// Methods a client may send twice without changing the outcome (RFC 9110 §9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

enum Attempt {
    /// The connection failed before the request left; here it is again.
    NotSent(Box<Request<ReqBody>>),
    Failed(ProxyError),
}

/// Awaits the response head. While the request body is being sent, a stall on the
/// upstream's side is bounded by `send_timeout` and one on the client's side by
/// the listener's `client_body_timeout`; once the request is sent, `read_timeout`
/// bounds the wait.
async fn await_head<F>(
    fut: F,
    progress: Option<&SendProgress>,
    t: &Timeouts,
) -> Result<Response<Incoming>, Attempt>
where
    F: std::future::Future<
        Output = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<ReqBody>>>,
    >,
{
    let start = Instant::now();
    let deadline = || -> (Instant, ProxyError) {
        match progress.map(SendProgress::get) {
            None => (start + t.read, ProxyError::ReadTimeout),
            Some((SendPhase::Done, at)) => (at + t.read, ProxyError::ReadTimeout),
            Some((SendPhase::Upstream, at)) => (at.max(start) + t.send, ProxyError::SendTimeout),
            // A failed body fails the exchange at once (hyper has its error).
            Some((SendPhase::Client | SendPhase::Failed, at)) => (
                at.max(start)
                    + progress.map_or(std::time::Duration::ZERO, SendProgress::client_timeout),
                ProxyError::ClientBodyTimeout,
            ),
        }
    };
    // While the body goes, the phase changes under us without a wake-up (the
    // client's side and the upstream's take turns): wake at the earliest either
    // could expire, so whichever applies then is checked in time.
    let wake = |until: Instant| match progress.map(SendProgress::get) {
        Some((SendPhase::Upstream | SendPhase::Client, at)) => {
            let shorter = t
                .send
                .min(progress.map_or(t.send, SendProgress::client_timeout));
            until.min(at.max(start) + shorter)
        }
        _ => until,
    };
    tokio::pin!(fut);
    // While the body is still going, its end can bring the deadline forward.
    let mut body_going = progress.filter(|p| p.get().0 != SendPhase::Done);
    loop {
        let (until, err) = deadline();
        if until <= Instant::now() {
            return Err(Attempt::Failed(err));
        }
        let until = wake(until);
        let body_done = async {
            match body_going {
                Some(p) => p.done().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = &mut fut => {
                return match r {
                    Ok(res) => Ok(res),
                    Err(mut e) => Err(match e.take_message() {
                        Some(req) => Attempt::NotSent(Box::new(req)),
                        None => Attempt::Failed(blame(e.into_error(), progress)),
                    }),
                }
            }
            () = tokio::time::sleep_until(until) => {}
            () = body_done => body_going = None,
        }
    }
}
