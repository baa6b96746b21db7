//! Errors of the request path, each saying whose fault it is, with the status
//! that answers it. They become HTTP responses in one place,
//! `pipeline::reply::error`, with a short fixed text: no addresses, no upstream
//! messages.

use std::time::Duration;

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request's framing (`Transfer-Encoding`, `Content-Length`) is one that
    /// another HTTP implementation could read differently: where its body ends is
    /// in doubt, so the connection is closed after the answer (RFC 9112 §6.1).
    #[error("ambiguous request framing: {0}")]
    Framing(&'static str),
    /// A transfer coding other than `chunked`: not one the proxy decodes
    /// (RFC 9112 §6.1 asks for 501); the connection closes, as for `Framing`.
    #[error("unsupported transfer coding")]
    TransferCoding,
    /// A method longer than `filter::method::MAX_METHOD_LEN`.
    #[error("method too long")]
    MethodTooLong,
    /// Nothing eligible; the client may retry after this long.
    #[error("no server of the upstream is available")]
    NoServer(std::time::Duration),
    /// A Telegram update no bot answered in time (none could take it, or the
    /// route's `deadline` passed): 503 with `Retry-After` and no body, which
    /// Telegram answers by sending it again after that long.
    #[error("the update was not delivered in time")]
    Undelivered(std::time::Duration),
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
    /// The client's request body failed while it was being sent upstream (bad
    /// chunked framing, a chunk extension over the limit, the client gone): the
    /// exchange with the server broke because of it, which says nothing about the
    /// server. The error is the one the upstream connection reported.
    #[error("the client's request body was malformed or cut short: {0}")]
    ClientBody(#[source] hyper::Error),
    /// The request body grew past `max_body_size` (or past what a filter that
    /// needs it in memory allows): 413, and the connection closes, the rest of
    /// the body unread.
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    /// A request the proxy cannot carry to this upstream.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// A limit or an access rule refused the request before its action.
    #[error("refused ({})", .0.reason.as_str())]
    Refused(Refusal),
}

/// A request refused by a limit or an access rule: why, with which status, and
/// when the client may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub status: StatusCode,
    /// `Retry-After`, rounded up to whole seconds.
    pub retry_after: Option<Duration>,
}

/// Why a request was refused: the `reason` label of
/// `switchyard_requests_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `rate_limit`: over its rate and burst.
    RateLimit,
    /// `limit_conn`: too many requests of its key at once.
    LimitConn,
    /// `allow` / `deny`: the client's address is not let in.
    Denied,
    /// `max_body_size`: the body is larger than allowed.
    BodySize,
    /// An upstream's `queue`: every server at its `max_conns`, and the queue full
    /// or its wait over.
    Queue,
    /// A Telegram webhook's `X-Telegram-Bot-Api-Secret-Token` is missing or wrong.
    Secret,
    /// A Telegram webhook's client is outside its `allow_from`.
    Source,
}

impl Reason {
    /// Every reason, each at its own discriminant (`Reason as usize` indexes
    /// arrays built from this list).
    pub const ALL: [Reason; 7] = [
        Reason::RateLimit,
        Reason::LimitConn,
        Reason::Denied,
        Reason::BodySize,
        Reason::Queue,
        Reason::Secret,
        Reason::Source,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimit => "rate_limit",
            Reason::LimitConn => "limit_conn",
            Reason::Denied => "denied",
            Reason::BodySize => "body_size",
            Reason::Queue => "queue",
            Reason::Secret => "telegram_secret",
            Reason::Source => "telegram_source",
        }
    }
}

/// Whose fault an error is. Only `Upstream` errors may count against a server
/// (passive health, latency penalties, retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was malformed, too large, or the client stalled.
    Client,
    /// The server was unreachable, broken or slow.
    Upstream,
    /// Nothing to send to, or a request this proxy cannot carry.
    Proxy,
}

impl ProxyError {
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoRoute
            | ProxyError::BadRequest(_)
            | ProxyError::Framing(_)
            | ProxyError::TransferCoding
            | ProxyError::MethodTooLong
            | ProxyError::ClientBodyTimeout
            | ProxyError::ClientBody(_)
            | ProxyError::BodyTooLarge(_) => Fault::Client,
            ProxyError::Connect(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Tls(_)
            | ProxyError::Upstream(_)
            | ProxyError::SendTimeout
            | ProxyError::ReadTimeout => Fault::Upstream,
            ProxyError::NoServer(_) | ProxyError::Undelivered(_) | ProxyError::Unsupported(_) => {
                Fault::Proxy
            }
            // A full server queue is the fleet's capacity, not this client's doing.
            ProxyError::Refused(r) if r.reason == Reason::Queue => Fault::Proxy,
            ProxyError::Refused(_) => Fault::Client,
        }
    }

    /// Whether the client connection must close after the answer: the request's
    /// body boundary is in doubt, so whatever follows it on the connection cannot
    /// be trusted to be the next request; or the body is too large to read to its
    /// end (nginx closes after its 413 too).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::Framing(_)
                | ProxyError::TransferCoding
                | ProxyError::BodyTooLarge(_)
                | ProxyError::Refused(Refusal {
                    reason: Reason::BodySize,
                    ..
                })
        )
    }

    /// Why the request counts in `switchyard_requests_limited_total`, if it does.
    pub fn limited(&self) -> Option<Reason> {
        match self {
            ProxyError::Refused(r) => Some(r.reason),
            ProxyError::BodyTooLarge(_) => Some(Reason::BodySize),
            _ => None,
        }
    }

    /// nginx's choices: refused, broken or untrusted (TLS) upstream connections are
    /// 502, timeouts (connect and TLS handshake included) are 504, nothing to send
    /// to is 503; a request body that is malformed or cut short is 400 (a client
    /// that went away never reads it).
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) | ProxyError::Framing(_) | ProxyError::ClientBody(_) => {
                StatusCode::BAD_REQUEST
            }
            // RFC 9112 §6.1 (a transfer coding the server does not understand) and
            // RFC 9110 §9.1 (a method it does not implement) both name 501.
            ProxyError::TransferCoding | ProxyError::MethodTooLong => StatusCode::NOT_IMPLEMENTED,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Refused(r) => r.status,
            ProxyError::NoServer(_) | ProxyError::Undelivered(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Tls(_) | ProxyError::Upstream(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::ConnectTimeout | ProxyError::SendTimeout | ProxyError::ReadTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }
}

#[cfg(test)]
mod reason_tests {
    use super::Reason;

    #[test]
    fn each_reason_sits_at_its_discriminant() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }
}
