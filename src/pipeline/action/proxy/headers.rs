//! Header rewriting as nginx does it with the usual `proxy_set_header` lines: the
//! client's `Host` is kept, `X-Forwarded-For` is appended to, `X-Real-IP`,
//! `X-Forwarded-Proto` and `X-Forwarded-Host` are set, hop-by-hop headers
//! (RFC 9110 §7.6.1) are removed in both directions.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::pipeline::vars::Vars;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop and never cross the proxy, besides those named in
/// `Connection`.
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers, including every header `Connection` names. Most
/// messages have none, so one scan over the names (cheap enum comparisons for the
/// standard ones) replaces a hash lookup per hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_fixed_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            // `Connection: Host` is nonsense; an HTTP/1.1 request must keep its Host.
            if name != header::HOST {
                headers.remove(name);
            }
        }
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Whether a `TE` header lists `trailers` (RFC 9110 §10.1.4).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let name = t.split(';').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("trailers")
        })
}

/// Applies the proxy headers to a request going upstream: hop-by-hop headers go,
/// `X-Forwarded-For` is appended to (with the peer the request came from, as
/// HAProxy's `forwardfor`: a trusted proxy's address when the client's came from
/// its `X-Forwarded-For`), `X-Real-IP` (the client's address), `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the request's host without port, nginx's `$host`) are set.
/// `extra` is room for the headers the route's filters add next.
pub fn forward(headers: &mut HeaderMap, vars: &Vars<'_>, extra: usize) {
    strip_hop_by_hop(headers);
    // Room for the four proxy headers at once rather than growing twice.
    headers.reserve(4 + extra);
    let mut has_xff = false;
    let mut has_expect = false;
    for name in headers.keys() {
        has_xff |= name == X_FORWARDED_FOR;
        has_expect |= name == header::EXPECT;
    }
    if has_expect {
        // The proxy answers `Expect: 100-continue` itself as it starts reading the body.
        headers.remove(header::EXPECT);
    }
    let xff = if has_xff {
        let mut joined = String::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(s) = v.to_str() {
                joined.push_str(s);
                joined.push_str(", ");
            }
        }
        joined.push_str(vars.client.hop().to_str().unwrap_or_default());
        HeaderValue::from_str(&joined).unwrap_or_else(|_| vars.client.hop().clone())
    } else {
        vars.client.hop().clone()
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_REAL_IP.clone(), vars.client.ip.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(vars.client.scheme),
    );
    headers.insert(X_FORWARDED_HOST.clone(), vars.host.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert!(h.get("x-kept").is_some());
    }
}
