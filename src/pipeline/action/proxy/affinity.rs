//! The key `hash` balances on, taken from the request's head.

use std::net::IpAddr;

use http::Request;

use crate::balance::hash_bytes;
use crate::config::HashKey;
use crate::pipeline::filter::sticky::cookie;

/// The hash of the request's key, or `None` when the request has no such key.
pub(super) fn key_hash<B>(key: &HashKey, req: &Request<B>, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(match client {
            IpAddr::V4(a) => hash_bytes(&a.octets()),
            IpAddr::V6(a) => hash_bytes(&a.octets()),
        }),
        HashKey::Header(name) => req.headers().get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => cookie(req.headers(), name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Query(name) => {
            query_param(req.uri().query()?, name).map(|v| hash_bytes(v.as_bytes()))
        }
        HashKey::Path => Some(hash_bytes(req.uri().path().as_bytes())),
        HashKey::Uri => Some(hash_bytes(
            req.uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .as_bytes(),
        )),
    }
}

/// The raw (undecoded) value of query parameter `name`.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_query_params() {
        assert_eq!(query_param("x=1&chat=42&y", "chat"), Some("42"));
        assert_eq!(query_param("x=1&y", "y"), Some(""));
        assert_eq!(query_param("x=1", "chat"), None);
    }
}
