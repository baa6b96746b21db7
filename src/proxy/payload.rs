//! The request as the attempts see it: the client's head, made ready once, copied
//! for each attempt that may be followed by another, and the body, held in memory
//! (up to `retry_body_limit`) when a retry could need to send it again.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{ClientBody, SendProgress};
use super::forward::CLIENT_BODY_TIMEOUT;
use crate::body::ReqBody;
use crate::error::ProxyError;

/// The client's request head, after the changes that do not depend on the server.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

impl Head {
    pub fn copy(&self) -> Head {
        Head {
            method: self.method.clone(),
            uri: self.uri.clone(),
            version: self.version,
            headers: self.headers.clone(),
        }
    }

    /// The HTTP/2 form: the target in absolute form, whose authority (the Host
    /// header's value, else `fallback`) hyper sends as `:authority` (RFC 9113
    /// §8.3.1); the Host header itself goes.
    pub fn make_h2(&mut self, scheme: http::uri::Scheme, fallback: &HeaderValue) {
        self.version = Version::HTTP_2;
        let host = self.headers.remove(http::header::HOST);
        let authority = host
            .iter()
            .chain(std::iter::once(fallback))
            .find_map(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = authority;
        parts.path_and_query = self
            .uri
            .path_and_query()
            .cloned()
            .or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
        if let Ok(u) = Uri::from_parts(parts) {
            self.uri = u;
        }
    }

    pub fn into_request(self, body: ReqBody) -> Request<ReqBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

#[derive(Debug)]
pub enum Payload {
    Empty,
    /// The whole body, held so that it can be sent again.
    Held {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Streamed as it arrives, so it can be sent once; `prefix` was read ahead
    /// before the body turned out larger than the limit.
    Stream(Option<(Bytes, Incoming)>),
}

impl Payload {
    /// Reads the body into memory when `hold` and it fits in `limit`; otherwise it
    /// will stream.
    pub async fn read(body: Incoming, hold: bool, limit: u64) -> Result<Payload, ProxyError> {
        if body.is_end_stream() {
            return Ok(Payload::Empty);
        }
        if !hold || body.size_hint().lower() > limit {
            return Ok(Payload::Stream(Some((Bytes::new(), body))));
        }
        let mut body = body;
        let mut buf = BytesMut::new();
        let mut trailers = None;
        loop {
            let frame = tokio::time::timeout(CLIENT_BODY_TIMEOUT, body.frame())
                .await
                .map_err(|_| ProxyError::ClientBodyTimeout)?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|_| ProxyError::BadRequest("incomplete request body"))?;
            match frame.into_data() {
                Ok(data) => {
                    if (buf.len() + data.len()) as u64 > limit {
                        buf.extend_from_slice(&data);
                        return Ok(Payload::Stream(Some((buf.freeze(), body))));
                    }
                    buf.extend_from_slice(&data);
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok(Payload::Held {
            data: buf.freeze(),
            trailers,
        })
    }

    /// The size of a body held in memory.
    pub fn held_len(&self) -> Option<u64> {
        match self {
            Payload::Empty => Some(0),
            Payload::Held { data, .. } => Some(data.len() as u64),
            Payload::Stream(_) => None,
        }
    }

    /// Whether the body can be sent more than once.
    pub fn resendable(&self) -> bool {
        !matches!(self, Payload::Stream(_))
    }

    /// Another copy of a body held in memory; `None` for a stream.
    pub fn copy(&self) -> Option<ReqBody> {
        match self {
            Payload::Empty => Some(ReqBody::Empty),
            Payload::Held { data, trailers } => Some(ReqBody::Full {
                data: Some(data.clone()).filter(|d| !d.is_empty()),
                trailers: trailers.clone(),
            }),
            Payload::Stream(_) => None,
        }
    }

    /// The body for one attempt, with the progress tracker of a streamed body; `None`
    /// once a stream has been sent.
    pub fn take(&mut self) -> Option<(ReqBody, Option<Arc<SendProgress>>)> {
        let Payload::Stream(s) = self else {
            return self.copy().map(|b| (b, None));
        };
        let (prefix, inner) = s.take()?;
        let p = Arc::new(SendProgress::new());
        Some((
            ReqBody::Stream(ClientBody::with_prefix(prefix, inner, Arc::clone(&p))),
            Some(p),
        ))
    }
}
