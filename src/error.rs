//! Errors of the request path, and the one place where they become HTTP responses.
//! Responses carry a short fixed text: no addresses, no upstream messages.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::RespBody;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Nothing eligible; the client may retry after this long.
    #[error("no server of the upstream is available")]
    NoServer(std::time::Duration),
    #[error("connecting to the upstream failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    /// The TLS handshake with the upstream failed (certificate, protocol, ALPN).
    #[error("TLS with the upstream failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("the upstream connection failed: {0}")]
    Upstream(#[source] hyper::Error),
    #[error("the upstream did not read the request body in time")]
    SendTimeout,
    #[error("the upstream did not answer in time")]
    ReadTimeout,
    #[error("the client stopped sending its request body")]
    ClientBodyTimeout,
    /// A request the proxy cannot carry to this upstream.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
}

impl ProxyError {
    /// nginx's choices: refused, broken or untrusted (TLS) upstream connections are
    /// 502, timeouts (connect and TLS handshake included) are 504, nothing to send
    /// to is 503.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::NoServer(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Tls(_) | ProxyError::Upstream(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::ConnectTimeout | ProxyError::SendTimeout | ProxyError::ReadTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    pub fn to_response(&self) -> Response<RespBody> {
        let mut res = status_response(self.status());
        if let ProxyError::NoServer(after) = self {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        res
    }
}

/// A response with the status line repeated as a short plain-text body.
pub fn status_response(status: StatusCode) -> Response<RespBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let mut res = Response::new(RespBody::full(format!("{} {reason}\n", status.as_u16())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
