//! The index against the linear scan it replaced (`oracle`), on random
//! configurations and requests. Names and paths come from tiny alphabets so that
//! hosts share suffixes, prefixes nest and sort between one another, and places
//! collide: the cases where an index and a scan could disagree.

use http::Method;
use proptest::prelude::*;

use super::oracle::{LinearRouter, OldMatch};
use super::{RouteMatch, Router};
use crate::config::{HostPattern, PathMatch, RouteConfig};

const METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
];

fn name() -> impl Strategy<Value = String> {
    "(a|b|ab)(\\.(a|b|ab)){0,2}"
}

fn host() -> impl Strategy<Value = Option<HostPattern>> {
    prop_oneof![
        Just(None),
        name().prop_map(|n| Some(HostPattern::Exact(n))),
        name().prop_map(|n| Some(HostPattern::Wildcard(format!(".{n}")))),
    ]
}

fn path() -> impl Strategy<Value = PathMatch> {
    prop_oneof![
        3 => "/[ab/.-]{0,4}".prop_map(PathMatch::Prefix),
        1 => "/[ab/.-]{0,4}".prop_map(PathMatch::Exact),
    ]
}

fn methods() -> impl Strategy<Value = Option<Vec<Method>>> {
    prop_oneof![
        Just(None),
        prop::sample::subsequence(METHODS[..4].to_vec(), 1..=2).prop_map(Some),
    ]
}

fn route() -> impl Strategy<Value = RouteConfig> {
    let listener = prop::sample::select(vec![None, Some("public"), Some("admin")]);
    (listener, host(), path(), methods()).prop_map(|(listener, host, path, methods)| {
        let mut r = template();
        r.listener = listener.map(str::to_owned);
        r.host = host;
        r.path = path;
        r.methods = methods;
        r
    })
}

fn template() -> RouteConfig {
    super::tests::routes("[[route]]\nupstream = \"u\"\n").remove(0)
}

/// (host, path, method) as the host filter leaves them: lower case, no port, and
/// now and then with a leading or trailing dot, which it lets through.
fn request() -> impl Strategy<Value = (String, String, Method)> {
    (
        "\\.?(a|b|ab|c)(\\.(a|b|ab|c)){0,3}\\.?",
        "/?[ab/.-]{0,6}",
        prop::sample::select(METHODS.to_vec()),
    )
}

fn same(new: RouteMatch<'_>, old: OldMatch) -> bool {
    match (new, old) {
        (RouteMatch::Route(a), OldMatch::Route(b)) => a == b,
        (RouteMatch::AddSlash, OldMatch::AddSlash) | (RouteMatch::None, OldMatch::None) => true,
        (RouteMatch::MethodNotAllowed(a), OldMatch::MethodNotAllowed(b)) => a == b.as_slice(),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn index_answers_as_the_linear_scan(
        routes in prop::collection::vec(route(), 0..24),
        requests in prop::collection::vec(request(), 1..32),
    ) {
        let index = Router::new("public", &routes);
        let scan = LinearRouter::new("public", &routes);
        for (host, path, method) in &requests {
            let new = index.find(host, path, method);
            let old = scan.find(host, path, method);
            let shown = format!("{new:?} vs {old:?} for {host} {path} {method}");
            prop_assert!(same(new, old), "{}", shown);
        }
    }
}
