//! Sending one request upstream and waiting for its response head under the route's
//! timeouts.

use std::sync::Arc;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{ClientBody, SendPhase, SendProgress, UpstreamBody};
use crate::body::{ReqBody, RespBody};
use crate::config::Timeouts;
use crate::error::ProxyError;
use crate::proxy::headers::strip_hop_by_hop;
use crate::upstream::InFlight;

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
    guard: InFlight,
    timeouts: Timeouts,
) -> Result<Response<RespBody>, ProxyError> {
    use http_body::Body as _;
    let server = Arc::clone(guard.server());
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

    // A pooled connection may have been closed by the origin since its last use;
    // hyper hands the request back when it was not sent, and a fresh connection
    // gets it. A fresh connection that fails is a real error.
    let (conn, res) = loop {
        let mut conn = server.pool.checkout(timeouts.connect).await?;
        let fut = conn.tx.try_send_request(req);
        match await_head(fut, progress.as_deref(), &timeouts).await {
            Err(Attempt::NotSent(back)) if conn.reused => {
                req = *back;
                continue;
            }
            Err(Attempt::NotSent(_)) => {
                return Err(ProxyError::Connect(
                    std::io::ErrorKind::ConnectionReset.into(),
                ))
            }
            Err(Attempt::Failed(e)) => return Err(e),
            Ok(res) => break (conn, res),
        }
    };
    let (mut head, incoming) = res.into_parts();
    strip_hop_by_hop(&mut head.headers);
    let body = UpstreamBody::new(incoming, conn.tx, guard, timeouts.read);
    Ok(Response::from_parts(head, RespBody::Upstream(body)))
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
