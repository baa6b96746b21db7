//! The path filter (every listener has it): the request is routed, and forwarded,
//! on its normalised path (`crate::uri_path` says what that is), so that a path
//! the origin would resolve to `/admin/x` cannot be routed by `/public/` (or `/`)
//! instead, past a route that guards `/admin/`. The query is left as sent; the
//! access log keeps the path as sent. A path that cannot be normalised safely is
//! refused with 400.

use std::borrow::Cow;

use http::uri::{PathAndQuery, Uri};
use http::Request;
use hyper::body::Incoming;

use super::{Filter, Stop};
use crate::error::ProxyError;
use crate::pipeline::ctx::Ctx;
pub use crate::uri_path::{normalise, PathError};

/// The filter.
#[derive(Debug)]
pub struct NormalisePath;

impl Filter for NormalisePath {
    fn request_head(&self, _ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        let path = req.uri().path();
        // `*` and the authority form are the method filter's.
        if !path.starts_with('/') {
            return Ok(());
        }
        match normalise(path) {
            Ok(Cow::Borrowed(_)) => Ok(()),
            Ok(Cow::Owned(p)) => rewrite(req.uri_mut(), p),
            Err(e) => Err(ProxyError::BadRequest(e.reason()).into()),
        }
    }
}

/// Puts `path` in place of the request's path, keeping the query and (HTTP/2,
/// absolute form) the scheme and authority.
fn rewrite(uri: &mut Uri, mut path: String) -> Result<(), Stop> {
    if let Some(q) = uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let invalid = || Stop::Error(ProxyError::BadRequest("invalid path"));
    // Only characters the original had, and decoded unreserved ones: valid.
    let pq = PathAndQuery::try_from(path).map_err(|_| invalid())?;
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(pq);
    *uri = Uri::from_parts(parts).map_err(|_| invalid())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_keeps_the_query_scheme_and_authority() {
        let mut u: Uri = "/a/./b?x=/../y".parse().unwrap();
        rewrite(&mut u, "/a/b".to_owned()).unwrap();
        assert_eq!(u, "/a/b?x=/../y");
        let mut u: Uri = "http://h:8080/a/../b".parse().unwrap();
        rewrite(&mut u, "/b".to_owned()).unwrap();
        assert_eq!(u, "http://h:8080/b");
    }
}
