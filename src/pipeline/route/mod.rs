//! Request routing for one listener. The host picks a group of routes: the exact
//! name (one hash lookup; the host is already lower-cased), then wildcards, most
//! specific first, then routes without a host, which serve every host like
//! HAProxy's `default_backend`. Within the first group that has a match, an exact
//! path (`path_exact`, nginx's `location =`) wins over every prefix, and otherwise
//! the longest prefix wins. Methods then choose among the routes at that one place:
//! a request whose best place takes no route for its method is answered 405 with
//! `Allow`, never passed to a shorter prefix or another host group.
//!
//! The index is built once per configuration snapshot, and a lookup costs the same
//! at one route as at ten thousand: hash lookups for the host and its wildcard
//! suffixes (one per dot in the host), a binary search for the prefix (`prefixes`),
//! and no allocation.

mod place;
mod prefixes;
mod table;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use http::Method;

use crate::config::{HostPattern, RouteConfig};
use table::{Table, TableBuilder};

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Table>,
    /// By suffix with its leading dot (`*.example.com` is `.example.com`), as
    /// `HostPattern::Wildcard` keeps it.
    wildcard: HashMap<String, Table>,
    any: Table,
}

/// The outcome of routing.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'r> {
    /// Index of the route in the configuration.
    Route(usize),
    /// nginx answers a request for `/api` with a 301 to `/api/` when only a
    /// `/api/` prefix exists.
    AddSlash,
    /// Routes exist at the best place, but none for this method: these are the
    /// methods they take (the `Allow` header).
    MethodNotAllowed(&'r [Method]),
    None,
}

impl Router {
    /// Builds the router of listener `listener` from every route in the configuration.
    pub fn new(listener: &str, routes: &[RouteConfig]) -> Self {
        let mut exact: HashMap<String, TableBuilder> = HashMap::new();
        let mut wildcard: HashMap<String, TableBuilder> = HashMap::new();
        let mut any = TableBuilder::default();
        for (i, route) in routes.iter().enumerate() {
            if route.listener.as_deref().is_some_and(|l| l != listener) {
                continue;
            }
            let table = match &route.host {
                None => &mut any,
                Some(HostPattern::Exact(h)) => exact.entry(h.clone()).or_default(),
                Some(HostPattern::Wildcard(s)) => wildcard.entry(s.clone()).or_default(),
            };
            table.insert(route, i);
        }
        let build = |m: HashMap<String, TableBuilder>| -> HashMap<String, Table> {
            m.into_iter().map(|(k, t)| (k, t.build())).collect()
        };
        Router {
            exact: build(exact),
            wildcard: build(wildcard),
            any: any.build(),
        }
    }

    /// `host` is the request's host without port, lower-cased (as the host filter
    /// leaves it).
    pub fn find(&self, host: &str, path: &str, method: &Method) -> RouteMatch<'_> {
        if let Some(m) = self.exact.get(host).and_then(|t| t.find(path, method)) {
            return m;
        }
        if !self.wildcard.is_empty() {
            // Every suffix of the host that starts at a dot, longest (most specific)
            // first. Not the one at 0: a wildcard takes only names longer than its
            // suffix (`*.example.com` takes no `.example.com`).
            for (at, b) in host.bytes().enumerate().skip(1) {
                if b != b'.' {
                    continue;
                }
                let found = self.wildcard.get(&host[at..]);
                if let Some(m) = found.and_then(|t| t.find(path, method)) {
                    return m;
                }
            }
        }
        self.any.find(path, method).unwrap_or(RouteMatch::None)
    }
}
