//! The routes of one host group, by path: exact paths in a hash map, prefixes in a
//! sorted list (`Prefixes`) where the longest match wins.

use std::collections::{BTreeMap, HashMap, HashSet};

use http::Method;

use super::place::Place;
use super::prefixes::Prefixes;
use super::RouteMatch;
use crate::config::{PathMatch, RouteConfig};

#[derive(Debug, Default)]
pub(super) struct Table {
    exact: HashMap<String, Place>,
    prefixes: Prefixes<Place>,
    /// Slash-terminated prefixes without their slash, where no prefix of that name
    /// exists: the paths answered `AddSlash`, one hash lookup instead of two
    /// searches per request.
    bare: HashSet<String>,
}

/// A table while the router is built: prefixes arrive in any order and are
/// sorted once at the end.
#[derive(Debug, Default)]
pub(super) struct TableBuilder {
    exact: HashMap<String, Place>,
    prefixes: BTreeMap<String, Place>,
}

impl TableBuilder {
    pub(super) fn insert(&mut self, route: &RouteConfig, i: usize) {
        let place = match &route.path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default(),
            PathMatch::Prefix(p) => self.prefixes.entry(p.clone()).or_default(),
        };
        place.add(route, i);
    }

    pub(super) fn build(self) -> Table {
        let bare = (self.prefixes.keys())
            .filter_map(|p| p.strip_suffix('/'))
            .filter(|stem| !self.prefixes.contains_key(*stem))
            .map(str::to_owned)
            .collect();
        Table {
            exact: self.exact,
            prefixes: Prefixes::new(self.prefixes),
            bare,
        }
    }
}

impl Table {
    /// `None`: nothing in this group takes the path; the next group is asked.
    pub(super) fn find(&self, path: &str, method: &Method) -> Option<RouteMatch<'_>> {
        if let Some(place) = self.exact.get(path) {
            return Some(place.choose(method));
        }
        // A path equal to a slash-terminated prefix minus its slash, with no route
        // of its own, is redirected (checked first, as nginx's implicit exact match).
        if !path.ends_with('/') && self.bare.contains(path) {
            return Some(RouteMatch::AddSlash);
        }
        self.prefixes
            .longest(path)
            .map(|place| place.choose(method))
    }
}
