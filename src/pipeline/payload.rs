//! The request body as the pipeline's body phase leaves it: held in memory (up to
//! a limit) when a filter must see it or a retry could need to send it again,
//! otherwise streamed as it arrives.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{BodyLimits, ClientBody, ReqBody, SendProgress};
use crate::error::ProxyError;

#[derive(Debug)]
pub enum Payload {
    Empty,
    /// The whole body, held so that it can be sent again.
    Held {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Streamed as it arrives, so it can be sent once; `prefix` was read ahead
    /// before the body turned out larger than the limit. The client may pause for
    /// `client_body_timeout` between two reads, and send up to `max_body_size`.
    Stream(Option<(Bytes, Incoming)>, BodyLimits),
}

impl Payload {
    /// The body, to stream as it arrives under `limits`.
    pub fn stream(body: Incoming, limits: BodyLimits) -> Payload {
        if body.is_end_stream() {
            Payload::Empty
        } else {
            Payload::Stream(Some((Bytes::new(), body)), limits)
        }
    }

    /// Reads the body into memory when it fits in `hold`; otherwise it will
    /// stream, with what was read so far sent first. The client may pause for
    /// `limits.timeout` between two reads (else 408); a body past
    /// `limits.max_size` is refused (413) with nothing sent upstream.
    pub async fn read(
        body: Incoming,
        hold: u64,
        limits: BodyLimits,
    ) -> Result<Payload, ProxyError> {
        if body.is_end_stream() {
            return Ok(Payload::Empty);
        }
        if let Some(max) = over(limits, body.size_hint().lower()) {
            return Err(ProxyError::BodyTooLarge(max));
        }
        if body.size_hint().lower() > hold {
            return Ok(Payload::Stream(Some((Bytes::new(), body)), limits));
        }
        // Boxed: the read loop's state would otherwise grow every request's
        // future (see `ProxyService::call`), though most bodies are empty.
        Box::pin(Self::read_all(body, hold, limits)).await
    }

    /// `read` past its checks: frames until the end, or until `hold` is passed.
    async fn read_all(
        mut body: Incoming,
        hold: u64,
        limits: BodyLimits,
    ) -> Result<Payload, ProxyError> {
        let mut buf = BytesMut::new();
        let mut trailers = None;
        loop {
            let frame = tokio::time::timeout(limits.timeout, body.frame())
                .await
                .map_err(|_| ProxyError::ClientBodyTimeout)?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|_| ProxyError::BadRequest("incomplete request body"))?;
            match frame.into_data() {
                Ok(data) => {
                    let total = (buf.len() + data.len()) as u64;
                    if let Some(max) = over(limits, total) {
                        return Err(ProxyError::BodyTooLarge(max));
                    }
                    buf.extend_from_slice(&data);
                    if total > hold {
                        return Ok(Payload::Stream(Some((buf.freeze(), body)), limits));
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok(Payload::Held {
            data: buf.freeze(),
            trailers,
        })
    }

    /// The body held in memory, if it is.
    pub fn held(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::new();
        match self {
            Payload::Empty => Some(&EMPTY),
            Payload::Held { data, .. } => Some(data),
            Payload::Stream(..) => None,
        }
    }

    /// The size of a body held in memory.
    pub fn held_len(&self) -> Option<u64> {
        match self {
            Payload::Empty => Some(0),
            Payload::Held { data, .. } => Some(data.len() as u64),
            Payload::Stream(..) => None,
        }
    }

    /// Whether the body can be sent more than once.
    pub fn resendable(&self) -> bool {
        !matches!(self, Payload::Stream(..))
    }

    /// Another copy of a body held in memory; `None` for a stream.
    pub fn copy(&self) -> Option<ReqBody> {
        match self {
            Payload::Empty => Some(ReqBody::Empty),
            Payload::Held { data, trailers } => Some(ReqBody::Full {
                data: Some(data.clone()).filter(|d| !d.is_empty()),
                trailers: trailers.clone(),
            }),
            Payload::Stream(..) => None,
        }
    }

    /// The body for one attempt, with the progress tracker of a streamed body; `None`
    /// once a stream has been sent.
    pub fn take(&mut self) -> Option<(ReqBody, Option<Arc<SendProgress>>)> {
        let Payload::Stream(s, limits) = self else {
            return self.copy().map(|b| (b, None));
        };
        let (prefix, inner) = s.take()?;
        let p = Arc::new(SendProgress::new(*limits));
        Some((
            ReqBody::Stream(ClientBody::with_prefix(prefix, inner, Arc::clone(&p))),
            Some(p),
        ))
    }
}

/// `limits.max_size` when `n` bytes are past it.
fn over(limits: BodyLimits, n: u64) -> Option<u64> {
    limits.max_size.filter(|&max| n > max)
}
