//! Header rewriting as nginx does it with the usual `proxy_set_header` lines: the
//! client's `Host` is kept, `X-Forwarded-For` is appended to, `X-Real-IP`,
//! `X-Forwarded-Proto` and `X-Forwarded-Host` are set, hop-by-hop headers
//! (RFC 9110 §7.6.1) are removed in both directions.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{HeaderTemplate, Segment, Variable};

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

/// What is known about the client connection, computed once per connection.
#[derive(Debug)]
pub struct ClientInfo {
    pub remote: std::net::SocketAddr,
    /// The client's IP, as a header value (`X-Real-IP`, `$remote_addr`).
    pub ip: HeaderValue,
    /// `http` or `https`.
    pub scheme: &'static str,
}

impl ClientInfo {
    pub fn new(remote: std::net::SocketAddr, scheme: &'static str) -> Self {
        ClientInfo {
            remote,
            ip: HeaderValue::from_str(&remote.ip().to_string())
                .expect("an IP is a valid header value"),
            scheme,
        }
    }
}

/// A `set_headers` entry, with the common shapes resolved at load time.
#[derive(Debug, Clone)]
pub enum HeaderAction {
    Remove,
    Static(HeaderValue),
    /// The whole value is one variable.
    Var(Variable),
    Template(HeaderTemplate),
}

impl HeaderAction {
    pub fn new(t: &HeaderTemplate) -> Self {
        match t.segments.as_slice() {
            [] => HeaderAction::Remove,
            [Segment::Literal(l)] => {
                HeaderAction::Static(HeaderValue::from_str(l).expect("validated at load"))
            }
            [Segment::Var(v)] => HeaderAction::Var(*v),
            _ => HeaderAction::Template(t.clone()),
        }
    }
}

/// Values of the template variables for one request.
pub struct Vars<'a> {
    pub client: &'a ClientInfo,
    pub host: &'a HeaderValue,
    pub upstream_addr: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
}

impl Vars<'_> {
    fn value(&self, v: Variable) -> HeaderValue {
        match v {
            Variable::RemoteAddr => self.client.ip.clone(),
            Variable::UpstreamAddr => self.upstream_addr.clone(),
            Variable::Host => self.host.clone(),
            Variable::Scheme => HeaderValue::from_static(self.client.scheme),
            Variable::RequestId => self.request_id.clone(),
            Variable::RequestUri | Variable::Uri | Variable::Args => HeaderValue::from_static(""),
        }
    }
}

/// Applies the proxy headers and the route's `set_headers` to a request going
/// upstream. `host` is the request's host without port (nginx's `$host`).
pub fn rewrite_request(
    headers: &mut HeaderMap,
    vars: &Vars<'_>,
    set: &[(HeaderName, HeaderAction)],
) {
    strip_hop_by_hop(headers);
    // Room for the four proxy headers at once rather than growing twice.
    headers.reserve(4 + set.len());
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
        joined.push_str(vars.client.ip.to_str().unwrap_or_default());
        HeaderValue::from_str(&joined).unwrap_or_else(|_| vars.client.ip.clone())
    } else {
        vars.client.ip.clone()
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_REAL_IP.clone(), vars.client.ip.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(vars.client.scheme),
    );
    headers.insert(X_FORWARDED_HOST.clone(), vars.host.clone());

    for (name, action) in set {
        match action {
            HeaderAction::Remove => {
                headers.remove(name);
            }
            HeaderAction::Static(v) => {
                headers.insert(name.clone(), v.clone());
            }
            HeaderAction::Var(v) => {
                headers.insert(name.clone(), vars.value(*v));
            }
            HeaderAction::Template(t) => {
                let mut s = String::new();
                t.render(&mut s, |v, out| {
                    out.push_str(vars.value(v).to_str().unwrap_or_default())
                });
                if let Ok(v) = HeaderValue::from_str(&s) {
                    headers.insert(name.clone(), v);
                }
            }
        }
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
