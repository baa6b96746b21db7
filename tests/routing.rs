//! Routing through a running proxy: path prefixes, host groups, listeners, the
//! trailing-slash redirect and round-robin order, observed via the `x-origin` header.

mod common;

use std::collections::HashMap;

use common::{get, get_host, setup, setup_listeners, upstream, Conn};
use http::StatusCode;

fn route(path: &str, upstream: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\nupstream = \"{upstream}\"\n\n")
}

fn host_route(host: &str, path: &str, upstream: &str) -> String {
    format!("[[route]]\nhost = \"{host}\"\npath = \"{path}\"\nupstream = \"{upstream}\"\n\n")
}

/// Three upstreams `a`, `b`, `c`, one origin each (origins named the same).
fn abc() -> String {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| format!("[upstream.{n}]\nservers = [{{ addr = \"@{i}\" }}]\n\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_wins() {
    let body = format!(
        "{}{}{}{}",
        route("/", "a"),
        route("/api/v2/", "c"),
        route("/api/", "b"),
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    for (path, want) in [
        ("/", "a"),
        ("/other", "a"),
        ("/apiary", "a"),
        ("/api/", "b"),
        ("/api/users", "b"),
        ("/api/v2x", "b"),
        ("/api/v2/", "c"),
        ("/api/v2/users?x=1", "c"),
    ] {
        let r = get(p.addr, path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.origin(), want, "{path}");
    }
    // "/api/v2" itself is the bare form of "/api/v2/": redirected, not sent to b.
    let r = get(p.addr, "/api/v2").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), Some("/api/v2/"));
    // The path goes upstream unchanged (no prefix stripping).
    let r = get(p.addr, "/api/v2/users?x=1").await;
    assert_eq!(r.origin_request_line(), "GET /api/v2/users?x=1 HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_beats_wildcard_beats_hostless() {
    let body = format!(
        "{}{}{}{}",
        route("/", "c"),
        host_route("*.example.com", "/", "b"),
        host_route("api.example.com", "/", "a"),
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    for (host, want) in [
        ("api.example.com", "a"),
        ("www.example.com", "b"),
        ("deep.api.example.com", "b"),
        ("other.org", "c"),
    ] {
        let r = get_host(p.addr, host, "/x").await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
        assert_eq!(r.origin(), want, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_group_without_matching_path_falls_back_to_next_group() {
    // api.example.com only has /admin/; other paths fall to the wildcard, then hostless.
    let body = format!(
        "{}{}{}{}",
        host_route("api.example.com", "/admin/", "a"),
        host_route("*.example.com", "/hook/", "b"),
        route("/", "c"),
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    assert_eq!(
        get_host(p.addr, "api.example.com", "/admin/x")
            .await
            .origin(),
        "a"
    );
    assert_eq!(
        get_host(p.addr, "api.example.com", "/hook/x")
            .await
            .origin(),
        "b"
    );
    assert_eq!(
        get_host(p.addr, "api.example.com", "/x").await.origin(),
        "c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_matches_subdomain_not_bare_domain() {
    let body = format!(
        "{}{}{}",
        host_route("*.example.com", "/", "a"),
        route("/", "b"),
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    assert_eq!(get_host(p.addr, "a.example.com", "/").await.origin(), "a");
    assert_eq!(get_host(p.addr, "example.com", "/").await.origin(), "b");
    assert_eq!(get_host(p.addr, "notexample.com", "/").await.origin(), "b");
    assert_eq!(
        get_host(p.addr, "example.com.evil", "/").await.origin(),
        "b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_without_fallback_gives_404_for_bare_domain() {
    let body = format!("{}{}", host_route("*.example.com", "/", "a"), abc());
    let p = setup(&["a", "b", "c"], &body).await;
    assert_eq!(
        get_host(p.addr, "a.example.com", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_host(p.addr, "example.com", "/").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_match_ignores_case_and_port() {
    let body = format!(
        "{}{}{}{}",
        host_route("API.Example.com", "/", "a"),
        host_route("*.example.com", "/", "b"),
        route("/", "c"),
        abc()
    );
    let p = setup(&["a", "b", "c"], &body).await;
    for host in [
        "api.example.com",
        "API.EXAMPLE.COM",
        "Api.Example.Com:8080",
        "api.example.com:80",
    ] {
        assert_eq!(get_host(p.addr, host, "/").await.origin(), "a", "{host}");
    }
    for host in ["WWW.EXAMPLE.COM", "www.Example.com:443"] {
        assert_eq!(get_host(p.addr, host, "/").await.origin(), "b", "{host}");
    }
    // The client's Host goes upstream as sent, port and case included.
    let r = get_host(p.addr, "Api.Example.Com:8080", "/").await;
    assert_eq!(r.seen_one("host"), Some("Api.Example.Com:8080"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_bound_to_another_listener_is_not_served() {
    let body = format!(
        "[[route]]\nlistener = \"other\"\npath = \"/\"\nupstream = \"a\"\n\n\
         [[route]]\nlistener = \"public\"\npath = \"/pub/\"\nupstream = \"b\"\n\n{}",
        abc()
    );
    let p = setup_listeners(&["a", "b", "c"], &["public", "other"], &body).await;
    let other = p.listener("other");
    assert_ne!(other, p.addr);

    // "other" serves its catch-all, but not public's route.
    let r = get(other, "/x").await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "a"));
    let r = get(other, "/pub/x").await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "a"));

    // "public" never reaches the route bound to "other".
    let r = get(p.addr, "/x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.origin(), "<none>");
    let r = get(p.addr, "/pub/x").await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404() {
    let body = format!("{}{}", route("/api/", "a"), abc());
    let p = setup(&["a", "b", "c"], &body).await;
    let r = get(p.addr, "/other").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.headers.get("x-origin").is_none());
    assert_eq!(r.body, "404 Not Found\n");
    // And a matching one is served, so the 404 is about the path.
    assert_eq!(get(p.addr, "/api/x").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_prefix_redirects_to_slash_keeping_query() {
    let body = format!("{}{}", route("/api/", "a"), abc());
    let p = setup(&["a", "b", "c"], &body).await;
    let r = get(p.addr, "/api?q=1").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), Some("/api/?q=1"));
    assert!(r.headers.get("x-origin").is_none(), "not proxied");

    let r = get(p.addr, "/api").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), Some("/api/"));

    // A longer path is not redirected: "/apix" does not match "/api/".
    assert_eq!(get(p.addr, "/apix").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_path_with_own_route_is_not_redirected() {
    let body = format!("{}{}{}", route("/api/", "a"), route("/api", "b"), abc());
    let p = setup(&["a", "b", "c"], &body).await;
    let r = get(p.addr, "/api").await;
    assert_eq!((r.status, r.origin()), (StatusCode::OK, "b"));
    assert_eq!(get(p.addr, "/api/").await.origin(), "a");
}

/// `[upstream.pool]` over the three origins with the given weights, and a catch-all.
fn weighted(weights: [u32; 3]) -> String {
    format!(
        "{}[upstream.pool]\nservers = [{{ addr = \"@0\", weight = {} }}, \
         {{ addr = \"@1\", weight = {} }}, {{ addr = \"@2\", weight = {} }}]\n",
        route("/", "pool"),
        weights[0],
        weights[1],
        weights[2]
    )
}

async fn sequence(conn: &mut Conn, n: usize) -> String {
    let mut s = String::new();
    for _ in 0..n {
        let r = conn.send("GET", "/", &[], None).await;
        assert_eq!(r.status, StatusCode::OK);
        s.push_str(r.origin());
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_equal_weights_exact_sequence() {
    let p = setup(&["a", "b", "c"], &weighted([1, 1, 1])).await;
    let mut conn = Conn::open(p.addr).await;
    assert_eq!(sequence(&mut conn, 9).await, "abcabcabc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_weights_5_1_1_smooth_sequence_and_proportions() {
    let p = setup(&["a", "b", "c"], &weighted([5, 1, 1])).await;
    let mut conn = Conn::open(p.addr).await;
    assert_eq!(sequence(&mut conn, 7).await, "aabacaa");
    // The next cycle repeats it.
    assert_eq!(sequence(&mut conn, 7).await, "aabacaa");

    // 700 more, over several concurrent connections: picks are one atomic step each,
    // so the totals are exact whatever the interleaving.
    let mut tasks = Vec::new();
    for _ in 0..7 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            sequence(&mut conn, 100).await
        }));
    }
    let mut counts: HashMap<char, usize> = HashMap::new();
    for t in tasks {
        for c in t.await.expect("task").chars() {
            *counts.entry(c).or_default() += 1;
        }
    }
    assert_eq!(counts.get(&'a'), Some(&500), "{counts:?}");
    assert_eq!(counts.get(&'b'), Some(&100), "{counts:?}");
    assert_eq!(counts.get(&'c'), Some(&100), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_helper_builds_weighted_pool() {
    // Same check through the common `upstream` helper, weights 2,1 → a b a.
    let origins = common::start_origins(&["a", "b"]).await;
    let toml = format!(
        "{}{}{}",
        common::listeners(&["public"]),
        route("/", "two"),
        upstream("two", &[(origins[0], 2), (origins[1], 1)])
    );
    let running = common::start_proxy(&toml).await;
    let mut conn = Conn::open(running.addr("public").unwrap()).await;
    assert_eq!(sequence(&mut conn, 6).await, "abaaba");
}
