//! `redirect_https`: a plain-HTTP listener that sends every request to the same
//! URL over HTTPS, nginx's `return 301 https://$host$request_uri;`.

use http::{header, HeaderValue, Method, Response, StatusCode, Uri};

use crate::body::RespBody;
use crate::config::DEFAULT_HTTPS_PORT;

/// 301 for GET and HEAD (the redirect browsers and caches know best); 308 for
/// every other method, which must keep its method and body (a 301 lets clients
/// turn a POST into a GET).
pub fn to_https(method: &Method, uri: &Uri, host: &str, port: u16) -> Response<RespBody> {
    let status = if method == Method::GET || method == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut res = crate::error::status_response(status);
    if method == Method::HEAD {
        *res.body_mut() = RespBody::empty();
    }
    if let Ok(v) = HeaderValue::from_str(&location(uri, host, port)) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// `https://host[:port]/path?query`; `host` is the request's, without its port.
fn location(uri: &Uri, host: &str, port: u16) -> String {
    let target = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|t| t.starts_with('/'))
        .unwrap_or("/");
    if port == DEFAULT_HTTPS_PORT {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keeps_path_and_query_and_drops_the_default_port() {
        let u: Uri = "/a/b?x=1&y".parse().unwrap();
        assert_eq!(
            location(&u, "example.com", 443),
            "https://example.com/a/b?x=1&y"
        );
        assert_eq!(location(&u, "[::1]", 8443), "https://[::1]:8443/a/b?x=1&y");
        let abs: Uri = "http://example.com:80/p".parse().unwrap();
        assert_eq!(location(&abs, "example.com", 443), "https://example.com/p");
        let star: Uri = "*".parse().unwrap();
        assert_eq!(location(&star, "h", 443), "https://h/");
    }

    #[test]
    fn method_picks_the_status() {
        let u: Uri = "/".parse().unwrap();
        assert_eq!(to_https(&Method::GET, &u, "h", 443).status(), 301);
        assert_eq!(to_https(&Method::HEAD, &u, "h", 443).status(), 301);
        assert_eq!(to_https(&Method::POST, &u, "h", 443).status(), 308);
        assert_eq!(to_https(&Method::DELETE, &u, "h", 443).status(), 308);
    }
}
