//! The redirect action: `redirect = { status, location }` on a route (nginx's
//! `return 301 URL;`), and two redirects the proxy makes itself in the same way: a
//! `redirect_https` listener's (`https://$host$request_uri`, nginx's usual port-80
//! server) and nginx's `/api` → `/api/` for a prefix route that ends in a slash.

use http::{header, Method, Response, StatusCode};

use crate::config::{HeaderTemplate, RedirectConfig, DEFAULT_HTTPS_PORT};
use crate::pipeline::reply::{self, RespBody};
use crate::pipeline::vars::Vars;

/// A redirect, ready to answer.
#[derive(Debug)]
pub struct Redirect {
    status: StatusCode,
    /// For methods other than GET and HEAD, when it differs.
    other_methods: Option<StatusCode>,
    location: HeaderTemplate,
}

impl Redirect {
    pub fn new(c: &RedirectConfig) -> Self {
        Redirect {
            status: c.status,
            other_methods: c.other_methods,
            location: c.location.clone(),
        }
    }

    /// `redirect_https`: every request to `https://HOST[:port]/path?query`, 301 for
    /// GET and HEAD (the redirect browsers and caches know best) and 308 for every
    /// other method, which must keep its method and body (a 301 lets clients turn a
    /// POST into a GET). The default port is left out of the URL.
    pub fn to_https(port: u16) -> Self {
        let location = if port == DEFAULT_HTTPS_PORT {
            "https://$host$request_uri".to_owned()
        } else {
            format!("https://$host:{port}$request_uri")
        };
        Redirect {
            status: StatusCode::MOVED_PERMANENTLY,
            other_methods: Some(StatusCode::PERMANENT_REDIRECT),
            location: HeaderTemplate::parse(&location).expect("a valid template"),
        }
    }

    /// nginx's answer for `/api` when only `/api/` is routed: 301 to the same path
    /// with a slash, the query kept.
    pub fn add_slash() -> Self {
        Redirect {
            status: StatusCode::MOVED_PERMANENTLY,
            other_methods: None,
            location: HeaderTemplate::parse("$uri/$is_args$args").expect("a valid template"),
        }
    }

    pub fn run(&self, method: &Method, vars: &Vars<'_>) -> Response<RespBody> {
        let status = match self.other_methods {
            Some(s) if method != Method::GET && method != Method::HEAD => s,
            _ => self.status,
        };
        let mut res = reply::status(status);
        if let Some(v) = vars.render(&self.location) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Uri};

    use super::*;
    use crate::pipeline::client::ClientInfo;

    fn location(r: &Redirect, method: Method, target: &str, host: &str) -> (u16, String) {
        let client = ClientInfo::new("10.0.0.1:5000".parse().unwrap(), "http");
        let host = HeaderValue::from_str(host).unwrap();
        let id = HeaderValue::from_static("id");
        let uri: Uri = target.parse().unwrap();
        let vars = Vars {
            client: &client,
            host: &host,
            upstream_addr: None,
            request_id: &id,
            uri: &uri,
        };
        let res = r.run(&method, &vars);
        let loc = res.headers()[header::LOCATION].to_str().unwrap().to_owned();
        (res.status().as_u16(), loc)
    }

    #[test]
    fn https_keeps_path_and_query_and_drops_the_default_port() {
        let r = Redirect::to_https(443);
        assert_eq!(
            location(&r, Method::GET, "/a/b?x=1&y", "example.com"),
            (301, "https://example.com/a/b?x=1&y".into())
        );
        let abs = location(&r, Method::GET, "http://example.com:80/p", "example.com");
        assert_eq!(abs.1, "https://example.com/p");
        assert_eq!(location(&r, Method::GET, "*", "h").1, "https://h/");
        let other = Redirect::to_https(8443);
        assert_eq!(
            location(&other, Method::HEAD, "/a?b", "[::1]"),
            (301, "https://[::1]:8443/a?b".into())
        );
    }

    #[test]
    fn https_method_picks_the_status() {
        let r = Redirect::to_https(443);
        for (m, s) in [
            (Method::GET, 301),
            (Method::HEAD, 301),
            (Method::POST, 308),
            (Method::DELETE, 308),
        ] {
            assert_eq!(location(&r, m, "/", "h").0, s);
        }
    }

    #[test]
    fn add_slash_keeps_the_query_and_adds_no_question_mark_without_one() {
        let r = Redirect::add_slash();
        assert_eq!(
            location(&r, Method::POST, "/api?x=1", "h"),
            (301, "/api/?x=1".into())
        );
        assert_eq!(location(&r, Method::GET, "/api", "h").1, "/api/");
    }
}
