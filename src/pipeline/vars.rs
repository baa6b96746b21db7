//! The values of the nginx-style `$variables` for one request, as `set_headers`
//! and `redirect` templates use them.

use http::{HeaderValue, Uri};

use super::client::ClientInfo;
use crate::config::{HeaderTemplate, Segment, Variable};

/// Values of the template variables for one request.
pub struct Vars<'a> {
    pub client: &'a ClientInfo,
    /// The request's host, lower-cased, without port (nginx's `$host`).
    pub host: &'a HeaderValue,
    /// The chosen server (proxying only).
    pub upstream_addr: Option<&'a HeaderValue>,
    pub request_id: &'a HeaderValue,
    /// The request target as the client sent it.
    pub uri: &'a Uri,
}

impl Vars<'_> {
    /// One variable's value as text, appended to `out`.
    fn push(&self, v: Variable, out: &mut String) {
        let text = |h: &HeaderValue| h.to_str().unwrap_or_default().to_owned();
        match v {
            Variable::RemoteAddr => out.push_str(&text(&self.client.ip)),
            Variable::UpstreamAddr => {
                if let Some(a) = self.upstream_addr {
                    out.push_str(&text(a));
                }
            }
            Variable::Host => out.push_str(&text(self.host)),
            Variable::Scheme => out.push_str(self.client.scheme),
            Variable::RequestId => out.push_str(&text(self.request_id)),
            Variable::RequestUri => out.push_str(request_uri(self.uri)),
            Variable::Uri => out.push_str(self.uri.path()),
            Variable::Args => out.push_str(self.uri.query().unwrap_or_default()),
            Variable::IsArgs => {
                if self.uri.query().is_some() {
                    out.push('?');
                }
            }
        }
    }

    /// One variable's value as a header value, without copying where it already is
    /// one.
    pub fn value(&self, v: Variable) -> HeaderValue {
        match v {
            Variable::RemoteAddr => self.client.ip.clone(),
            Variable::Host => self.host.clone(),
            Variable::Scheme => HeaderValue::from_static(self.client.scheme),
            Variable::RequestId => self.request_id.clone(),
            Variable::UpstreamAddr => match self.upstream_addr {
                Some(a) => a.clone(),
                None => HeaderValue::from_static(""),
            },
            _ => {
                let mut s = String::new();
                self.push(v, &mut s);
                HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
            }
        }
    }

    /// The template filled in; `None` when the result is not a valid header value.
    pub fn render(&self, t: &HeaderTemplate) -> Option<HeaderValue> {
        if let [Segment::Var(v)] = t.segments.as_slice() {
            return Some(self.value(*v));
        }
        let mut s = String::new();
        t.render(&mut s, |v, out| self.push(v, out));
        HeaderValue::from_str(&s).ok()
    }
}

/// Path (normalised by the path filter) and query: what follows the authority in
/// an absolute-form target.
pub fn request_uri(uri: &Uri) -> &str {
    uri.path_and_query()
        .map(|pq| pq.as_str())
        .filter(|t| t.starts_with('/'))
        .unwrap_or("/")
}
