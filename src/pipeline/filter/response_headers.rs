//! `response_headers` on a route: headers set on every response the route gives,
//! whatever gives it (the upstream, a redirect, a fixed answer, an error), as
//! nginx's `add_header … always` and HAProxy's `http-response set-header`. A value
//! replaces any the server sent; an empty value removes the header (`"Server" =
//! ""`). Values are fixed text, made into header values once per configuration.

use http::{HeaderName, HeaderValue, Response};

use super::Filter;
use crate::config::HeaderTemplate;
use crate::pipeline::ctx::Ctx;
use crate::pipeline::reply::RespBody;

/// The filter: each header with its value (`None`: removed).
#[derive(Debug)]
pub struct ResponseHeaders(Vec<(HeaderName, Option<HeaderValue>)>);

impl ResponseHeaders {
    pub fn new(list: &[(HeaderName, HeaderTemplate)]) -> Self {
        ResponseHeaders(
            list.iter()
                .map(|(n, t)| {
                    // Validation refuses variables here: nothing to look up.
                    let mut text = String::new();
                    t.render(&mut text, |_, _| {});
                    let value = (!text.is_empty())
                        .then(|| HeaderValue::from_str(&text).expect("validated at load"));
                    (n.clone(), value)
                })
                .collect(),
        )
    }
}

impl Filter for ResponseHeaders {
    fn response_head(&self, _ctx: &Ctx<'_>, res: &mut Response<RespBody>) {
        let headers = res.headers_mut();
        for (name, value) in &self.0 {
            match value {
                Some(v) => {
                    headers.insert(name.clone(), v.clone());
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }
}
