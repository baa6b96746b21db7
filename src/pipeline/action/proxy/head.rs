//! The request head as the attempts see it: the client's, with the changes that do
//! not depend on the server made once, and copied for each attempt that may be
//! followed by another.

use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};

use crate::body::ReqBody;

/// The client's request head, after the changes that do not depend on the server.
#[derive(Debug)]
pub(super) struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

impl Head {
    pub(super) fn copy(&self) -> Head {
        Head {
            method: self.method.clone(),
            uri: self.uri.clone(),
            version: self.version,
            headers: self.headers.clone(),
        }
    }

    /// The HTTP/2 form: the target in absolute form, whose authority (the Host
    /// header's value, else `fallback`) hyper sends as `:authority` (RFC 9113
    /// §8.3.1); the Host header itself goes.
    pub(super) fn make_h2(&mut self, scheme: http::uri::Scheme, fallback: &HeaderValue) {
        self.version = Version::HTTP_2;
        let host = self.headers.remove(http::header::HOST);
        let authority = host
            .iter()
            .chain(std::iter::once(fallback))
            .find_map(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = authority;
        parts.path_and_query = self
            .uri
            .path_and_query()
            .cloned()
            .or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
        if let Ok(u) = Uri::from_parts(parts) {
            self.uri = u;
        }
    }

    pub(super) fn into_request(self, body: ReqBody) -> Request<ReqBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}
