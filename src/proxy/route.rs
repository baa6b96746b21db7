//! Request routing for one listener: the host picks a group of routes (exact names,
//! then wildcards, most specific first, then routes without a host); within the
//! first group that has a match, the longest path prefix wins. Hostless routes act
//! as the fallback for every host, like HAProxy's `default_backend`.

use crate::config::{HostPattern, RouteConfig};

#[derive(Debug, Default)]
pub struct Router {
    exact: Vec<(String, PrefixTable)>,
    /// Sorted by suffix length, longest (most specific) first.
    wildcard: Vec<(String, PrefixTable)>,
    any: PrefixTable,
}

/// The outcome of routing.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch {
    /// Index of the route in the configuration.
    Route(usize),
    /// nginx answers a request for `/api` with a 301 to `/api/` when only a
    /// `/api/` prefix exists; this carries the path to redirect to.
    AddSlash,
    None,
}

#[derive(Debug, Default)]
struct PrefixTable {
    /// (prefix, route index), longest prefix first.
    prefixes: Vec<(String, usize)>,
}

impl PrefixTable {
    fn insert(&mut self, prefix: &str, route: usize) {
        self.prefixes.push((prefix.to_owned(), route));
        self.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    }

    fn find(&self, path: &str) -> Option<RouteMatch> {
        // A path equal to a slash-terminated prefix minus its slash, with no route
        // of its own, is redirected (checked first, as nginx's implicit exact match).
        if !path.ends_with('/') {
            let slash_form = self
                .prefixes
                .iter()
                .any(|(p, _)| p.len() == path.len() + 1 && p.ends_with('/') && p.starts_with(path));
            if slash_form && !self.prefixes.iter().any(|(p, _)| p == path) {
                return Some(RouteMatch::AddSlash);
            }
        }
        self.prefixes
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|&(_, i)| RouteMatch::Route(i))
    }
}

impl Router {
    /// Builds the router of listener `listener` from every route in the configuration.
    pub fn new(listener: &str, routes: &[RouteConfig]) -> Self {
        let mut r = Router::default();
        for (i, route) in routes.iter().enumerate() {
            if route.listener.as_deref().is_some_and(|l| l != listener) {
                continue;
            }
            let table = match &route.host {
                None => &mut r.any,
                Some(HostPattern::Exact(h)) => group(&mut r.exact, h),
                Some(HostPattern::Wildcard(s)) => group(&mut r.wildcard, s),
            };
            table.insert(route.path.as_str(), i);
        }
        r.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        r
    }

    /// `host` is the request's host without port, in any case.
    pub fn find(&self, host: &str, path: &str) -> RouteMatch {
        let exact = self
            .exact
            .iter()
            .filter(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, t)| t);
        let wild = self
            .wildcard
            .iter()
            .filter(|(s, _)| ends_with_ignore_case(host, s) && host.len() > s.len())
            .map(|(_, t)| t);
        exact
            .chain(wild)
            .chain(std::iter::once(&self.any))
            .find_map(|t| t.find(path))
            .unwrap_or(RouteMatch::None)
    }
}

fn group<'a>(groups: &'a mut Vec<(String, PrefixTable)>, key: &str) -> &'a mut PrefixTable {
    let i = match groups.iter().position(|(k, _)| k == key) {
        Some(i) => i,
        None => {
            groups.push((key.to_owned(), PrefixTable::default()));
            groups.len() - 1
        }
    };
    &mut groups[i].1
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;

    fn route(host: Option<HostPattern>, path: &str, listener: Option<&str>) -> RouteConfig {
        RouteConfig {
            name: path.into(),
            access_log: true,
            listener: listener.map(Into::into),
            host,
            path: crate::config::PathMatch::Prefix(path.into()),
            methods: None,
            action: crate::config::RouteAction::Proxy(crate::config::ProxyConfig {
                upstream: "u".into(),
                timeouts: Timeouts::default(),
                retry: Default::default(),
            }),
            set_headers: vec![],
        }
    }

    #[test]
    fn exact_then_wildcard_then_any_longest_prefix() {
        let routes = vec![
            route(None, "/", None),     // 0
            route(None, "/api/", None), // 1
            route(
                Some(HostPattern::Exact("api.example.com".into())),
                "/",
                None,
            ), // 2
            route(
                Some(HostPattern::Wildcard(".example.com".into())),
                "/",
                None,
            ), // 3
            route(
                Some(HostPattern::Wildcard(".b.example.com".into())),
                "/",
                None,
            ), // 4
            route(None, "/only-admin/", Some("admin")), // 5
        ];
        let r = Router::new("public", &routes);
        assert_eq!(r.find("API.example.com", "/x"), RouteMatch::Route(2));
        assert_eq!(r.find("www.example.com", "/x"), RouteMatch::Route(3));
        assert_eq!(r.find("a.b.example.com", "/x"), RouteMatch::Route(4));
        assert_eq!(r.find("example.com", "/api/v1"), RouteMatch::Route(1));
        assert_eq!(r.find("other", "/zzz"), RouteMatch::Route(0));
        assert_eq!(r.find("other", "/only-admin/x"), RouteMatch::Route(0));
        assert_eq!(r.find("other", "/api"), RouteMatch::AddSlash);
    }

    #[test]
    fn no_match_without_fallback() {
        let routes = vec![route(None, "/api/", None)];
        let r = Router::new("public", &routes);
        assert_eq!(r.find("h", "/other"), RouteMatch::None);
    }
}
