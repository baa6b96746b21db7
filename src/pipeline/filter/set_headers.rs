//! `set_headers` on a proxying route: request headers set (or, with an empty
//! value, removed) on the way to the server, after the proxy's own headers, so
//! they can override those too. Values are templates with nginx-style variables;
//! the common shapes (a fixed value, one variable) are resolved when the
//! configuration is built, so most requests only clone a header value.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Filter;
use crate::config::{HeaderTemplate, Segment, Variable};
use crate::pipeline::vars::Vars;

/// The filter: the route's headers, in the file's order.
#[derive(Debug)]
pub struct SetHeaders(pub Vec<(HeaderName, HeaderAction)>);

/// One header's value, with the common shapes resolved at load time.
#[derive(Debug, Clone)]
pub enum HeaderAction {
    Remove,
    Static(HeaderValue),
    /// The whole value is one variable.
    Var(Variable),
    Template(HeaderTemplate),
}

impl HeaderAction {
    pub fn new(t: &HeaderTemplate) -> Self {
        match t.segments.as_slice() {
            [] => HeaderAction::Remove,
            [Segment::Literal(l)] => {
                HeaderAction::Static(HeaderValue::from_str(l).expect("validated at load"))
            }
            [Segment::Var(v)] => HeaderAction::Var(*v),
            _ => HeaderAction::Template(t.clone()),
        }
    }
}

impl SetHeaders {
    pub fn new(list: &[(HeaderName, HeaderTemplate)]) -> Self {
        SetHeaders(
            list.iter()
                .map(|(n, t)| (n.clone(), HeaderAction::new(t)))
                .collect(),
        )
    }
}

impl Filter for SetHeaders {
    fn upstream_headers(&self) -> usize {
        self.0.len()
    }

    fn upstream_request(&self, vars: &Vars<'_>, headers: &mut HeaderMap) {
        apply(&self.0, vars, headers);
    }
}

/// Sets each header of `set` on `headers`.
pub fn apply(set: &[(HeaderName, HeaderAction)], vars: &Vars<'_>, headers: &mut HeaderMap) {
    for (name, action) in set {
        match action {
            HeaderAction::Remove => {
                headers.remove(name);
            }
            HeaderAction::Static(v) => {
                headers.insert(name.clone(), v.clone());
            }
            HeaderAction::Var(v) => {
                headers.insert(name.clone(), vars.value(*v));
            }
            HeaderAction::Template(t) => {
                if let Some(v) = vars.render(t) {
                    headers.insert(name.clone(), v);
                }
            }
        }
    }
}
