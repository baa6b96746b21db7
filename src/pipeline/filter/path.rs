//! The path filter (every listener has it): the request is routed, and forwarded,
//! on its normalised path (`crate::uri_path` says what that is), so that a path
//! the origin would resolve to `/admin/x` cannot be routed by `/public/` (or `/`)
//! instead, past a route that guards `/admin/`. The query is left as sent; the
//! access log keeps the path as sent. A path that cannot be normalised safely is
//! refused with 400.
//!
//! An encoded slash (`%2F`) stays encoded on the way to the origin: APIs put
//! names with slashes in one segment that way (`/projects/group%2Fname`). But
//! origins that decode it would serve `/admin%2Fx` as `/admin/x`, so routing reads
//! it as a slash, as nginx does: such a request meets the routes of `/admin/`.

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
    fn request_head(&self, ctx: &mut Ctx<'_>, req: &mut Request<Incoming>) -> Result<(), Stop> {
        let path = req.uri().path();
        // `*` and the authority form are the method filter's.
        if !path.starts_with('/') {
            return Ok(());
        }
        match normalise(path) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(p)) => rewrite(req.uri_mut(), p)?,
            Err(e) => return Err(ProxyError::BadRequest(e.reason()).into()),
        }
        ctx.route_path = slashes_decoded(req.uri().path())?;
        Ok(())
    }
}

/// The path with each `%2F` read as a slash and normalised again (runs of
/// slashes merged), to route by; `None` when it has no encoded slash.
fn slashes_decoded(path: &str) -> Result<Option<String>, Stop> {
    let encoded = |w: &[u8]| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f');
    if !path.contains('%') || !path.as_bytes().windows(3).any(encoded) {
        return Ok(None);
    }
    let decoded = path.replace("%2F", "/").replace("%2f", "/");
    match normalise(&decoded) {
        Ok(p) => Ok(Some(p.into_owned())),
        Err(e) => Err(ProxyError::BadRequest(e.reason()).into()),
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
    fn encoded_slashes_count_as_slashes_for_routing_only() {
        let route = |p: &str| slashes_decoded(p).map_err(|_| "refused").unwrap();
        assert_eq!(route("/a/b"), None);
        assert_eq!(route("/admin%2Fx").as_deref(), Some("/admin/x"));
        assert_eq!(
            route("/api/projects/group%2fname/x").as_deref(),
            Some("/api/projects/group/name/x")
        );
        assert_eq!(route("/a%2F%2F/b").as_deref(), Some("/a/b"));
        assert_eq!(route("/%2F").as_deref(), Some("/"));
    }

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
