//! `max_body_size` (nginx's `client_max_body_size`): a request whose declared
//! length (`Content-Length`, on HTTP/2 too) is over the limit is refused with 413
//! before a byte of its body is read or anything is sent upstream, and without
//! the `100 Continue` an `Expect: 100-continue` client waits for (hyper sends it
//! only when the body is first read). A body of unknown length (chunked, HTTP/2
//! without `content-length`) is held to the same limit as it streams
//! (`body::ClientBody`, `pipeline::payload`), which this guard hands on through
//! `Ctx::max_body_size`.
//!
//! The route's value overrides the listener's, so the check runs as a route guard:
//! a route that sets none reads its listener's, which `ProxyService` put in the
//! context (a route may serve several listeners, each with its own).

use http::{Method, Request, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::error::{ProxyError, Reason, Refusal};
use crate::pipeline::ctx::Ctx;
use crate::pipeline::filter::Stop;

/// A route's body limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// The route's own `max_body_size`; `None`: no limit (written 0).
    Route(Option<u64>),
    /// The route sets none: its listener's applies.
    Listener,
}

impl BodySize {
    /// The guard of a route whose `max_body_size` is `own`.
    pub fn new(own: Option<u64>) -> Self {
        match own {
            Some(n) => BodySize::Route(Some(n).filter(|&n| n > 0)),
            None => BodySize::Listener,
        }
    }

    pub fn admit(&self, ctx: &mut Ctx<'_>, req: &Request<Incoming>) -> Result<(), Stop> {
        if let BodySize::Route(own) = *self {
            ctx.max_body_size = own;
        }
        // An HTTP/2 CONNECT stream (WebSocket over HTTP/2) carries a tunnel's
        // bytes, not a request body: no more bounded than an HTTP/1.1 WebSocket.
        if req.method() == Method::CONNECT {
            ctx.max_body_size = None;
        }
        let Some(max) = ctx.max_body_size else {
            return Ok(());
        };
        // hyper's size hint is the declared length when there is one, else 0.
        if req.body().size_hint().lower() > max {
            return Err(Stop::Error(ProxyError::Refused(Refusal {
                reason: Reason::BodySize,
                status: StatusCode::PAYLOAD_TOO_LARGE,
                retry_after: None,
            })));
        }
        Ok(())
    }
}
