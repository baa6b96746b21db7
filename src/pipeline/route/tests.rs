//! Routing semantics, one behaviour per test.

use std::path::Path;

use super::*;
use crate::config::Config;

pub(super) fn routes(text: &str) -> Vec<RouteConfig> {
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
        RouteMatch::MethodNotAllowed(&[Method::POST, Method::GET, Method::PUT, Method::HEAD])
    );
    assert_eq!(r.find("h", "/mixed", &Method::DELETE), RouteMatch::Route(3));
    assert_eq!(r.find("h", "/mixed", &Method::POST), RouteMatch::Route(4));
}
