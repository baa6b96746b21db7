//! The framing filter (every listener has it): a request whose body length another
//! HTTP implementation could read differently is refused, and its connection
//! closed, before anything else looks at it. That is the ground of request
//! smuggling, where a front and a back end disagree on where a request ends.
//!
//! What hyper's HTTP/1 parser already does, before this filter runs:
//! - `Transfer-Encoding` whose last coding is not `chunked`, or on an HTTP/1.0
//!   request: 400, connection closed;
//! - differing or malformed `Content-Length` values: 400, connection closed;
//! - `Content-Length` together with `Transfer-Encoding`: the `Content-Length` is
//!   dropped (the filter never sees it), the body is read as chunked, and the
//!   connection is closed after the answer (RFC 9112 §6.3 allows this instead of
//!   a 400). The proxy cannot refuse these with 400: hyper gives it no sign that
//!   there was a `Content-Length`. The check below covers the case anyway, should
//!   a parser ever pass both.
//!
//! What it lets through, and this filter refuses: any `Transfer-Encoding` other
//! than one field line reading exactly `chunked` (any case). A coding other than
//! `chunked` anywhere in the list gets 501 (RFC 9112 §6.1: a transfer coding the
//! server does not understand; nginx answers 501 too), everything else 400
//! (`chunked` twice, empty members, two field lines). HTTP/2 has no
//! `Transfer-Encoding` (the h2 crate refuses it as malformed), so the filter
//! passes its requests at the cost of one header lookup.

use http::header::{self, HeaderMap};
use http::Request;
use hyper::body::Incoming;

use super::{Filter, Stop};
use crate::error::ProxyError;
use crate::pipeline::ctx::Ctx;

/// The filter.
#[derive(Debug)]
pub struct Framing;

impl Filter for Framing {
    fn request_head(&self, _ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        check(req.headers()).map_err(Stop::Error)
    }
}

/// Whether `headers` frame a body one way only: no `Transfer-Encoding`, or one
/// field line of exactly `chunked` without `Content-Length`.
pub(crate) fn check(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut lines = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(te) = lines.next() else {
        return Ok(());
    };
    if lines.next().is_some() {
        return Err(ProxyError::Framing("more than one Transfer-Encoding"));
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err(ProxyError::Framing("Content-Length with Transfer-Encoding"));
    }
    // Header values come without surrounding whitespace.
    if te.as_bytes().eq_ignore_ascii_case(b"chunked") {
        return Ok(());
    }
    // Refused either way; only the status differs. A coding named other than
    // `chunked` is one the proxy does not implement (501); the rest is malformed.
    let unknown = te
        .as_bytes()
        .split(|&b| b == b',')
        .map(|member| {
            let name = member.split(|&b| b == b';').next().unwrap_or_default();
            name.trim_ascii()
        })
        .any(|name| !name.is_empty() && !name.eq_ignore_ascii_case(b"chunked"));
    Err(if unknown {
        ProxyError::TransferCoding
    } else {
        ProxyError::Framing("malformed Transfer-Encoding")
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn one_chunked_or_none_passes() {
        assert!(check(&HeaderMap::new()).is_ok());
        assert!(check(&with(&[("content-length", "3")])).is_ok());
        for v in ["chunked", "Chunked", "CHUNKED"] {
            let h = with(&[("transfer-encoding", v)]);
            assert!(check(&h).is_ok(), "{v}");
        }
    }

    #[test]
    fn unknown_codings_are_501_and_the_rest_400() {
        let status = |h: &HeaderMap| check(h).unwrap_err().status().as_u16();
        for v in [
            "identity, chunked",
            "gzip, chunked",
            "x;q=1, chunked",
            "gzip",
        ] {
            assert_eq!(status(&with(&[("transfer-encoding", v)])), 501, "{v}");
        }
        for v in [
            "chunked, chunked",
            ", chunked",
            "chunked,",
            "chunked;x=1",
            "",
        ] {
            assert_eq!(status(&with(&[("transfer-encoding", v)])), 400, "{v:?}");
        }
        let two = with(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(status(&two), 400);
        let both = with(&[("transfer-encoding", "chunked"), ("content-length", "3")]);
        assert_eq!(status(&both), 400);
    }

    #[test]
    fn every_refusal_closes_the_connection() {
        for v in ["identity, chunked", "chunked, chunked"] {
            let e = check(&with(&[("transfer-encoding", v)])).unwrap_err();
            assert!(e.closes_connection(), "{v}");
        }
    }
}
