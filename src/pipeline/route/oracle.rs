//! The router as it was before the index: linear scans over wildcard hosts and
//! prefixes. Kept, for tests only, as the oracle the index is checked against
//! (`props`): whatever it answers is the semantics the index must keep.

use std::collections::HashMap;

use http::Method;

use crate::config::{HostPattern, PathMatch, RouteConfig};

#[derive(Debug, Default)]
pub(super) struct LinearRouter {
    exact: HashMap<String, Table>,
    /// Sorted by suffix length, longest (most specific) first.
    wildcard: Vec<(String, Table)>,
    any: Table,
}

/// The outcome of routing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OldMatch {
    /// Index of the route in the configuration.
    Route(usize),
    /// nginx answers a request for `/api` with a 301 to `/api/` when only a
    /// `/api/` prefix exists.
    AddSlash,
    /// Routes exist at the best place, but none for this method: these are the
    /// methods they take (the `Allow` header).
    MethodNotAllowed(Vec<Method>),
    None,
}

/// The routes at one place (host group and path), by method.
#[derive(Debug, Default)]
struct Place {
    /// Routes that list methods: (method, route index).
    by_method: Vec<(Method, usize)>,
    /// The route for every other method, if any.
    any: Option<usize>,
}

impl Place {
    fn add(&mut self, route: &RouteConfig, i: usize) {
        match &route.methods {
            None => self.any = Some(i),
            Some(list) => self.by_method.extend(list.iter().map(|m| (m.clone(), i))),
        }
    }

    fn choose(&self, method: &Method) -> OldMatch {
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
            Some(i) => OldMatch::Route(i),
            None => {
                let mut allow: Vec<Method> = Vec::new();
                for (m, _) in &self.by_method {
                    if !allow.contains(m) {
                        allow.push(m.clone());
                    }
                }
                if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
                    allow.push(Method::HEAD);
                }
                OldMatch::MethodNotAllowed(allow)
            }
        }
    }
}

/// The routes of one host group.
#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Place>,
    /// (prefix, routes), longest prefix first.
    prefixes: Vec<(String, Place)>,
}

impl Table {
    fn insert(&mut self, route: &RouteConfig, i: usize) {
        match &route.path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().add(route, i),
            PathMatch::Prefix(p) => {
                let at = match self.prefixes.iter().position(|(x, _)| x == p) {
                    Some(at) => at,
                    None => {
                        self.prefixes.push((p.clone(), Place::default()));
                        self.prefixes
                            .sort_by_key(|(x, _)| std::cmp::Reverse(x.len()));
                        self.prefixes
                            .iter()
                            .position(|(x, _)| x == p)
                            .expect("inserted")
                    }
                };
                self.prefixes[at].1.add(route, i);
            }
        }
    }

    fn find(&self, path: &str, method: &Method) -> Option<OldMatch> {
        if let Some(place) = self.exact.get(path) {
            return Some(place.choose(method));
        }
        // A path equal to a slash-terminated prefix minus its slash, with no route
        // of its own, is redirected (checked first, as nginx's implicit exact match).
        if !path.ends_with('/') {
            let slash_form = self
                .prefixes
                .iter()
                .any(|(p, _)| p.len() == path.len() + 1 && p.ends_with('/') && p.starts_with(path));
            if slash_form && !self.prefixes.iter().any(|(p, _)| p == path) {
                return Some(OldMatch::AddSlash);
            }
        }
        self.prefixes
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, place)| place.choose(method))
    }
}

impl LinearRouter {
    /// Builds the router of listener `listener` from every route in the configuration.
    pub(super) fn new(listener: &str, routes: &[RouteConfig]) -> Self {
        let mut r = LinearRouter::default();
        for (i, route) in routes.iter().enumerate() {
            if route.listener.as_deref().is_some_and(|l| l != listener) {
                continue;
            }
            let table = match &route.host {
                None => &mut r.any,
                Some(HostPattern::Exact(h)) => r.exact.entry(h.clone()).or_default(),
                Some(HostPattern::Wildcard(s)) => {
                    let at = match r.wildcard.iter().position(|(k, _)| k == s) {
                        Some(at) => at,
                        None => {
                            r.wildcard.push((s.clone(), Table::default()));
                            r.wildcard.len() - 1
                        }
                    };
                    &mut r.wildcard[at].1
                }
            };
            table.insert(route, i);
        }
        r.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        r
    }

    /// `host` is the request's host without port, lower-cased (as the host filter
    /// leaves it).
    pub(super) fn find(&self, host: &str, path: &str, method: &Method) -> OldMatch {
        let exact = self.exact.get(host);
        let wild = self
            .wildcard
            .iter()
            .filter(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
            .map(|(_, t)| t);
        exact
            .into_iter()
            .chain(wild)
            .chain(std::iter::once(&self.any))
            .find_map(|t| t.find(path, method))
            .unwrap_or(OldMatch::None)
    }
}
