//! Request bodies: what goes upstream (the client's stream, a copy of a body held
//! in memory, or nothing). An enum rather than a boxed trait object, so the request
//! path allocates nothing for it. The response side is `pipeline::reply::RespBody`,
//! which carries `upstream::UpstreamBody`.

mod client;

pub use client::{BodyLimits, ClientBody, OverLimit, SendPhase, SendProgress};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Error type carried by proxied bodies; hyper only needs it to abort the stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body sent upstream: the client's stream, a copy of a body held for
/// retries, or nothing.
#[derive(Debug)]
pub enum ReqBody {
    Stream(ClientBody),
    Full {
        data: Option<Bytes>,
        trailers: Option<http::HeaderMap>,
    },
    Empty,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Stream(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Full { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Stream(b) => b.is_end_stream(),
            ReqBody::Full { data, trailers } => data.is_none() && trailers.is_none(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Stream(b) => b.size_hint(),
            ReqBody::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}
