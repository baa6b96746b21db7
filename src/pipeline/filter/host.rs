//! The host filter (every listener has it): the request's host, from the target's
//! authority (HTTP/2, absolute-form) or the one `Host` header, becomes nginx's
//! `$host` (lower case, no port), and a request without a valid one is refused
//! with 400 before anything else looks at it (RFC 9112 §3.2).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use hyper::body::Incoming;

use super::{Filter, Stop};
use crate::error::ProxyError;
use crate::pipeline::ctx::Ctx;

/// The filter.
#[derive(Debug)]
pub struct Host {
    /// HTTP/1.0 may omit Host; such a request is routed as an unnamed host, except
    /// where an answer needs the host (a `redirect_https` listener).
    pub http10_without_host: bool,
}

impl Filter for Host {
    fn request_head(&self, ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        ctx.host = match request_host(req.uri(), req.headers()) {
            Ok(Some(h)) => h,
            Ok(None) if req.version() <= Version::HTTP_10 && self.http10_without_host => {
                HeaderValue::from_static("")
            }
            Ok(None) => return Err(ProxyError::BadRequest("missing Host").into()),
            Err(why) => return Err(ProxyError::BadRequest(why).into()),
        };
        Ok(())
    }
}

/// The request's host without port, lower-cased (nginx's `$host`): from the request
/// target's authority (HTTP/2, absolute-form), else from the one `Host` header.
/// `Ok(None)` when there is neither; `Err` for two `Host` headers or a value that is
/// not `host[:port]` (RFC 9112 §3.2 asks for 400 in both cases).
pub fn request_host(
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, &'static str> {
    let (raw, header_value) = match uri.authority() {
        Some(a) => (a.as_str(), None),
        None => {
            let mut hosts = headers.get_all(header::HOST).iter();
            let Some(v) = hosts.next() else {
                return Ok(None);
            };
            if hosts.next().is_some() {
                return Err("more than one Host header");
            }
            (v.to_str().map_err(|_| "invalid Host")?, Some(v))
        }
    };
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or("invalid Host")?;
        match &raw[end + 1..] {
            "" => (&raw[..=end], None),
            rest => (
                &raw[..=end],
                Some(rest.strip_prefix(':').ok_or("invalid Host")?),
            ),
        }
    } else {
        match raw.split_once(':') {
            None => (raw, None),
            Some((h, p)) => (h, Some(p)),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.len() > 1
            && inner[..inner.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if !host_ok || !port_ok {
        return Err("invalid Host");
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Ok(HeaderValue::from_str(&host.to_ascii_lowercase()).ok());
    }
    // Reuse the client's value when it already is the bare host.
    match header_value {
        Some(v) if v.len() == host.len() => Ok(Some(v.clone())),
        _ => Ok(HeaderValue::from_str(host).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_without_port() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("Example.com:8080"));
        let u: http::Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&u, &h).unwrap().unwrap(), "example.com");
        h.insert(header::HOST, HeaderValue::from_static("[::1]:80"));
        assert_eq!(request_host(&u, &h).unwrap().unwrap(), "[::1]");
        let abs: http::Uri = "http://a.b:1/x".parse().unwrap();
        assert_eq!(request_host(&abs, &h).unwrap().unwrap(), "a.b");
        for bad in ["a b", "a/b", "a:x", "[::1", "", "a:"] {
            h.insert(header::HOST, HeaderValue::from_str(bad).unwrap());
            assert!(request_host(&u, &h).is_err(), "{bad:?}");
        }
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.append(header::HOST, HeaderValue::from_static("b"));
        assert!(request_host(&u, &h).is_err());
    }
}
