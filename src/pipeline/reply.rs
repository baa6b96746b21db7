//! What the proxy answers: the response body type (an upstream's stream, or a short
//! text the proxy wrote), and the one place where errors become responses.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;
use crate::error::ProxyError;
use crate::upstream::UpstreamBody;

/// The answer to `e`: its status with the status line as a short text, and for a
/// 503 when nothing is eligible and a refusal that knows when, `Retry-After`. No addresses, no upstream
/// messages. `Connection: close` when the error says the connection cannot go on
/// (hyper then closes it once the answer is written; on HTTP/2 it drops the
/// header, and the stream ends alone).
pub fn error(e: &ProxyError) -> Response<RespBody> {
    let mut res = match e {
        // Telegram reads a webhook answer's body only on a 2xx; nothing else
        // should come back from its 503.
        ProxyError::Undelivered(_) => {
            let mut res = Response::new(RespBody::empty());
            *res.status_mut() = e.status();
            res
        }
        _ => status(e.status()),
    };
    if e.closes_connection() {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let retry_after = match e {
        ProxyError::NoServer(after) | ProxyError::Undelivered(after) => Some(*after),
        ProxyError::Refused(r) => r.retry_after,
        _ => None,
    };
    if let Some(after) = retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res
}

/// A response with the status line repeated as a short plain-text body.
pub fn status(status: StatusCode) -> Response<RespBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let mut res = Response::new(RespBody::full(format!("{} {reason}\n", status.as_u16())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A response body sent to the client: an upstream's stream, or a short message
/// the proxy wrote itself (errors, redirects, the sample origins).
#[derive(Debug)]
pub enum RespBody {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

impl RespBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        RespBody::Full(Some(b.into()))
    }

    pub fn empty() -> Self {
        RespBody::Full(None)
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RespBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            RespBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Upstream(b) => b.is_end_stream(),
            RespBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Upstream(b) => b.size_hint(),
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
