//! Sending one request upstream and waiting for its response head under the route's
//! timeouts.

use std::sync::Arc;

use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{ClientBody, SendPhase, SendProgress, UpstreamBody};
use crate::body::{ReqBody, RespBody};
use crate::config::Timeouts;
use crate::error::ProxyError;
use crate::proxy::headers::strip_hop_by_hop;
use crate::upstream::{InFlight, Pool, PooledConn};

/// nginx's `client_body_timeout`: how long the client may pause while sending a
/// request body before the exchange is abandoned with 408.
pub const CLIENT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

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

pub async fn forward(
    req: Request<Incoming>,
    mut guard: InFlight,
    timeouts: Timeouts,
) -> Result<Response<RespBody>, ProxyError> {
    match exchange(req, &guard.server().pool, timeouts).await {
        Ok((conn, res)) => {
            guard.on_head(res.status());
            let (mut head, incoming) = res.into_parts();
            strip_hop_by_hop(&mut head.headers);
            let body = UpstreamBody::new(incoming, conn.tx, guard, timeouts.read);
            Ok(Response::from_parts(head, RespBody::Upstream(body)))
        }
        Err(e) => {
            guard.fail();
            Err(e)
        }
    }
}

/// Sends the request on a pooled or new connection and returns the response head.
async fn exchange(
    req: Request<Incoming>,
    pool: &Pool,
    timeouts: Timeouts,
) -> Result<(PooledConn, Response<Incoming>), ProxyError> {
    use http_body::Body as _;
    let mut progress = None;
    let mut req = req.map(|body| {
        if body.is_end_stream() {
            ReqBody::Empty
        } else {
            let p = Arc::new(SendProgress::new());
            progress = Some(Arc::clone(&p));
            ReqBody::Stream(ClientBody::new(body, p))
        }
    });

    // A pooled connection may have been closed by the origin since its last use.
    // hyper hands the request back when it could not be written, and a fresh
    // connection gets it. When it was written but the connection then closed with no
    // answer, a bodiless idempotent request is sent again once on a fresh connection
    // (RFC 9112 §9.3.1); anything else is the origin's failure.
    let replayable = matches!(req.body(), ReqBody::Empty) && is_idempotent(req.method());
    let mut fresh = false;
    let (conn, res) = loop {
        let conn = if fresh {
            PooledConn {
                tx: pool.connect(timeouts.connect).await?,
                reused: false,
            }
        } else {
            pool.checkout(timeouts.connect).await?
        };
        let mut conn = conn;
        let replay = (conn.reused && replayable).then(|| copy_head(&req));
        let fut = conn.tx.try_send_request(req);
        match await_head(fut, progress.as_deref(), &timeouts).await {
            Ok(res) => break (conn, res),
            Err(Attempt::NotSent(back)) if conn.reused => req = *back,
            Err(Attempt::NotSent(_)) => {
                return Err(ProxyError::Connect(
                    std::io::ErrorKind::ConnectionReset.into(),
                ))
            }
            Err(Attempt::Failed(ProxyError::Upstream(e))) if replay.is_some() => {
                tracing::debug!(error = %e, "pooled connection failed; sending again on a fresh one");
                req = replay.expect("checked");
                fresh = true;
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
    };
    Ok((conn, res))
}

/// Methods a client may send twice without changing the outcome (RFC 9110 §9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A bodiless copy of the request, to send again.
fn copy_head(req: &Request<ReqBody>) -> Request<ReqBody> {
    let mut copy = Request::new(ReqBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

enum Attempt {
    /// The connection failed before the request left; here it is again.
    NotSent(Box<Request<ReqBody>>),
    Failed(ProxyError),
}

/// Awaits the response head. While the request body is being sent, a stall on the
/// upstream's side is bounded by `send_timeout` and one on the client's side by
/// `CLIENT_BODY_TIMEOUT`; once the request is sent, `read_timeout` bounds the wait.
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
            Some((SendPhase::Client, at)) => (
                at.max(start) + CLIENT_BODY_TIMEOUT,
                ProxyError::ClientBodyTimeout,
            ),
        }
    };
    tokio::pin!(fut);
    let (mut until, _) = deadline();
    loop {
        match tokio::time::timeout_at(until, &mut fut).await {
            Ok(Ok(res)) => return Ok(res),
            Ok(Err(mut e)) => {
                return Err(match e.take_message() {
                    Some(req) => Attempt::NotSent(Box::new(req)),
                    None => Attempt::Failed(ProxyError::Upstream(e.into_error())),
                })
            }
            Err(_) => {
                let now = Instant::now();
                let (next, err) = deadline();
                if next <= now {
                    return Err(Attempt::Failed(err));
                }
                until = next;
            }
        }
    }
}
