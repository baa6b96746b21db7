//! What ties a request to a server: the key `hash` balances on, and the sticky
//! cookie.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::Request;

use crate::balance::hash_bytes;
use crate::config::HashKey;

/// The hash of the request's key, or `None` when the request has no such key.
pub fn key_hash<B>(key: &HashKey, req: &Request<B>, client: IpAddr) -> Option<u64> {
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

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// The raw (undecoded) value of query parameter `name`.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// `Set-Cookie` pinning the client to the server with sticky id `id`.
pub fn sticky_cookie(name: &str, id: &str, ttl: Duration) -> HeaderValue {
    let v = format!(
        "{name}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
        ttl.as_secs()
    );
    HeaderValue::from_str(&v).expect("validated cookie name and hex id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_and_query_params() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; SWY=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("b=\"2\""));
        assert_eq!(cookie(&h, "SWY"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(query_param("x=1&chat=42&y", "chat"), Some("42"));
        assert_eq!(query_param("x=1&y", "y"), Some(""));
        assert_eq!(query_param("x=1", "chat"), None);
    }
}
