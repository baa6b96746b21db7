//! What is known about a client connection, computed once per connection.

use http::HeaderValue;

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
