//! What is known about a client: computed once per connection (its address, after
//! the PROXY protocol when the listener speaks it), and replaced for a request
//! whose trusted `X-Forwarded-For` names another client (`real_ip`).

use std::net::SocketAddr;

use http::HeaderValue;

#[derive(Debug)]
pub struct ClientInfo {
    /// The client's address: what access rules, limits, `$remote_addr`,
    /// `X-Real-IP`, the access log and hashing by client see. Its port is 0 when
    /// the address came from an `X-Forwarded-For` entry without one.
    pub remote: SocketAddr,
    /// The client's IP, as a header value (`X-Real-IP`, `$remote_addr`).
    pub ip: HeaderValue,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The connection's own client, when `remote` came from a trusted proxy's
    /// `X-Forwarded-For`: the hop this proxy appends to `X-Forwarded-For`.
    pub via: Option<HeaderValue>,
}

impl ClientInfo {
    pub fn new(remote: SocketAddr, scheme: &'static str) -> Self {
        ClientInfo {
            remote,
            ip: ip_value(remote),
            scheme,
            via: None,
        }
    }

    /// The client `remote` that `conn`, a trusted proxy, forwarded a request for.
    pub fn forwarded(conn: &ClientInfo, remote: SocketAddr) -> Self {
        ClientInfo {
            remote,
            ip: ip_value(remote),
            scheme: conn.scheme,
            via: Some(conn.ip.clone()),
        }
    }

    /// The address `X-Forwarded-For` appends: the peer this proxy heard the
    /// request from.
    pub fn hop(&self) -> &HeaderValue {
        self.via.as_ref().unwrap_or(&self.ip)
    }
}

/// The address's text as a header value, taking the string's buffer as it is
/// (`from_str` would copy it).
fn ip_value(remote: SocketAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(remote.ip().to_string()))
        .expect("an IP is a valid header value")
}
