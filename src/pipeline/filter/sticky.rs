//! Cookie persistence (`sticky = { cookie, ttl }` on the upstream a route proxies
//! to): a client that brings the cookie goes back to the server it names while
//! that server is eligible; a response from another server (a new client, or a
//! retry that moved it) sets the cookie to that server. The cookie holds an opaque
//! id of the server, never its address.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use super::{Filter, Stop};
use crate::config::StickyConfig;
use crate::pipeline::ctx::Ctx;
use crate::pipeline::reply::RespBody;

/// The filter, with the upstream's cookie settings.
#[derive(Debug)]
pub struct Sticky(pub StickyConfig);

impl Filter for Sticky {
    fn request_head(&self, ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        ctx.sticky = cookie(req.headers(), &self.0.cookie).map(str::to_owned);
        Ok(())
    }

    fn response_head(&self, ctx: &Ctx<'_>, res: &mut Response<RespBody>) {
        let Some(server) = ctx.server else { return };
        let id = server.state.sticky_id.as_str();
        if ctx.sticky.as_deref() != Some(id) {
            let c = sticky_cookie(&self.0.cookie, id, self.0.ttl);
            res.headers_mut().append(header::SET_COOKIE, c);
        }
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
    fn finds_cookies() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; SWY=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("b=\"2\""));
        assert_eq!(cookie(&h, "SWY"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
