//! The routes at one place (host group and path), chosen by method.

use http::Method;

use super::RouteMatch;
use crate::config::RouteConfig;

#[derive(Debug, Default)]
pub(super) struct Place {
    /// Routes that list methods: (method, route index).
    by_method: Vec<(Method, usize)>,
    /// The route for every other method, if any.
    any: Option<usize>,
    /// The `Allow` list of a refusal, built with the place so that answering 405
    /// allocates nothing per request: the listed methods in order, and HEAD when
    /// GET is listed (GET takes HEAD).
    allow: Vec<Method>,
}

impl Place {
    pub(super) fn add(&mut self, route: &RouteConfig, i: usize) {
        match &route.methods {
            None => self.any = Some(i),
            Some(list) => self.by_method.extend(list.iter().map(|m| (m.clone(), i))),
        }
        self.allow.clear();
        for (m, _) in &self.by_method {
            if !self.allow.contains(m) {
                self.allow.push(m.clone());
            }
        }
        if self.allow.contains(&Method::GET) && !self.allow.contains(&Method::HEAD) {
            self.allow.push(Method::HEAD);
        }
    }

    pub(super) fn choose(&self, method: &Method) -> RouteMatch<'_> {
        let listed = |m: &Method| self.by_method.iter().find(|(x, _)| x == m).map(|&(_, i)| i);
        // A route for GET takes HEAD too, unless another one lists HEAD itself.
        let found = listed(method)
            .or_else(|| {
                (*method == Method::HEAD)
                    .then(|| listed(&Method::GET))
                    .flatten()
            })
            .or(self.any);
        match found {
            Some(i) => RouteMatch::Route(i),
            None => RouteMatch::MethodNotAllowed(&self.allow),
        }
    }
}
