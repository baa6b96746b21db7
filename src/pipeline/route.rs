//! Request routing for one listener. The host picks a group of routes: the exact
//! name (one hash lookup; the host is already lower-cased), then wildcards, most
//! specific first, then routes without a host, which serve every host like
//! HAProxy's `default_backend`. Within the first group that has a match, an exact
//! path (`path_exact`, nginx's `location =`) wins over every prefix, and otherwise
//! the longest prefix wins. Methods then choose among the routes at that one place:
//! a request whose best place takes no route for its method is answered 405 with
//! `Allow`, never passed to a shorter prefix or another host group.

use std::collections::HashMap;

use http::Method;

use crate::config::{HostPattern, PathMatch, RouteConfig};

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Table>,
    /// Sorted by suffix length, longest (most specific) first.
    wildcard: Vec<(String, Table)>,
    any: Table,
}

/// The outcome of routing.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch {
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

    fn choose(&self, method: &Method) -> RouteMatch {
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
                RouteMatch::MethodNotAllowed(allow)
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

    fn find(&self, path: &str, method: &Method) -> Option<RouteMatch> {
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
                return Some(RouteMatch::AddSlash);
            }
        }
        self.prefixes
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, place)| place.choose(method))
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
    pub fn find(&self, host: &str, path: &str, method: &Method) -> RouteMatch {
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
            .unwrap_or(RouteMatch::None)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn routes(text: &str) -> Vec<RouteConfig> {
        let toml = format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"admin\"\nlisten = \"127.0.0.1:0\"\n{text}\n\
             [upstream.u]\nservers = [{{ addr = \"127.0.0.1:1\" }}]\n"
        );
        Config::parse(Path::new("t.toml"), &toml).unwrap().routes
    }

    #[test]
    fn exact_then_wildcard_then_any_longest_prefix() {
        let r = Router::new(
            "public",
            &routes(
                r#"
[[route]]
upstream = "u"
[[route]]
path = "/api/"
upstream = "u"
[[route]]
host = "api.example.com"
upstream = "u"
[[route]]
host = "*.example.com"
upstream = "u"
[[route]]
host = "*.b.example.com"
upstream = "u"
[[route]]
listener = "admin"
path = "/only-admin/"
upstream = "u"
"#,
            ),
        );
        let get = |h: &str, p: &str| r.find(h, p, &Method::GET);
        assert_eq!(get("api.example.com", "/x"), RouteMatch::Route(2));
        assert_eq!(get("www.example.com", "/x"), RouteMatch::Route(3));
        assert_eq!(get("a.b.example.com", "/x"), RouteMatch::Route(4));
        assert_eq!(get("example.com", "/api/v1"), RouteMatch::Route(1));
        assert_eq!(get("other", "/zzz"), RouteMatch::Route(0));
        assert_eq!(get("other", "/only-admin/x"), RouteMatch::Route(0));
        assert_eq!(get("other", "/api"), RouteMatch::AddSlash);
    }

    #[test]
    fn no_match_without_fallback() {
        let r = Router::new(
            "public",
            &routes("[[route]]\npath = \"/api/\"\nupstream = \"u\"\n"),
        );
        assert_eq!(r.find("h", "/other", &Method::GET), RouteMatch::None);
    }

    #[test]
    fn exact_paths_win_over_every_prefix() {
        let r = Router::new(
            "public",
            &routes(
                "[[route]]\npath = \"/health/\"\nupstream = \"u\"\n\
                 [[route]]\npath_exact = \"/health\"\nrespond = {}\n\
                 [[route]]\npath_exact = \"/health/deep\"\nupstream = \"u\"\n\
                 [[route]]\nupstream = \"u\"\n",
            ),
        );
        let get = |p: &str| r.find("h", p, &Method::GET);
        assert_eq!(
            get("/health"),
            RouteMatch::Route(1),
            "no slash redirect: exact wins"
        );
        assert_eq!(get("/health/deep"), RouteMatch::Route(2));
        assert_eq!(get("/health/deeper"), RouteMatch::Route(0));
        assert_eq!(get("/health/"), RouteMatch::Route(0));
        assert_eq!(
            get("/healthz"),
            RouteMatch::Route(3),
            "exact is exact, not a prefix"
        );
    }

    #[test]
    fn methods_choose_at_one_place_and_refuse_with_allow() {
        let r = Router::new(
            "public",
            &routes(
                "[[route]]\npath = \"/hook\"\nmethods = [\"POST\"]\nupstream = \"u\"\n\
                 [[route]]\npath = \"/hook\"\nmethods = [\"GET\", \"PUT\"]\nupstream = \"u\"\n\
                 [[route]]\npath = \"/\"\nupstream = \"u\"\n\
                 [[route]]\npath = \"/mixed\"\nmethods = [\"DELETE\"]\nupstream = \"u\"\n\
                 [[route]]\npath = \"/mixed\"\nupstream = \"u\"\n",
            ),
        );
        assert_eq!(r.find("h", "/hook", &Method::POST), RouteMatch::Route(0));
        assert_eq!(r.find("h", "/hook/x", &Method::PUT), RouteMatch::Route(1));
        assert_eq!(
            r.find("h", "/hook", &Method::HEAD),
            RouteMatch::Route(1),
            "GET takes HEAD"
        );
        // Never down to the shorter "/" prefix.
        assert_eq!(
            r.find("h", "/hook", &Method::DELETE),
            RouteMatch::MethodNotAllowed(vec![
                Method::POST,
                Method::GET,
                Method::PUT,
                Method::HEAD
            ])
        );
        assert_eq!(r.find("h", "/mixed", &Method::DELETE), RouteMatch::Route(3));
        assert_eq!(r.find("h", "/mixed", &Method::POST), RouteMatch::Route(4));
    }
}
