//! Observability end to end (issue 6): exact Prometheus counts after known traffic,
//! the status page in JSON and HTML, access-log lines (JSON and combined, per-route
//! off switch, reopen after rotation), request ids, and the probes.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::control::{Client, Mode, Origin};
use common::{sample, TempDir};
use serde_json::Value;
use switchyard::{Config, Running};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";
const PUBLIC: &str = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n";
/// Long enough for a loaded CI machine; conditions are polled, not waited out.
const LIMIT: Duration = Duration::from_secs(10);

async fn start(text: &str) -> Running {
    let config = Config::parse(std::path::Path::new("observe.toml"), text)
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{text}"));
    switchyard::start(config, crate::common::WORKERS).expect("proxy starts")
}

fn servers(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!("servers = [{}]\n\n", list.join(", "))
}

/// One admin request: status, content type and body.
async fn admin(running: &Running, path: &str, token: Option<&str>) -> (u16, String, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let r = Client::new(running.admin.expect("admin listener"))
        .send("GET", path, &headers, None)
        .await
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
    let ct = r.header("content-type").unwrap_or_default().to_owned();
    (r.status.as_u16(), ct, r.body)
}

async fn scrape(running: &Running) -> String {
    let (status, ct, body) = admin(running, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    body
}

async fn status_json(running: &Running) -> Value {
    let (status, _, body) = admin(running, "/status.json", None).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("status.json is JSON")
}

/// Polls the async `check` until it returns `Some`, or fails after `LIMIT`.
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly() {
    let o = common::start_origins(&["a", "b"]).await;
    let dead = common::closed_port().await;
    let text = format!(
        "{ADMIN}{PUBLIC}\
         [[route]]\nname = \"api\"\nhost = \"api.test\"\npath = \"/\"\nupstream = \"u\"\n\n\
         [[route]]\nhost = \"dead.test\"\npath = \"/\"\nupstream = \"dead\"\n\n\
         [upstream.u]\n{}\
         [upstream.u.health_check]\npath = \"/health\"\ninterval = \"50ms\"\n\n\
         [upstream.dead]\n{}",
        servers(&o),
        servers(&[dead]),
    );
    let running = start(&text).await;
    let addr = running.addr("public").unwrap();

    let mut conn = common::Conn::open(addr).await;
    for _ in 0..6 {
        let r = conn.send("GET", "/x", &[("host", "api.test")], None).await;
        assert_eq!(r.status, 200);
    }
    let r = conn
        .send("POST", "/x", &[("host", "api.test")], Some(b"12345"))
        .await;
    assert_eq!(r.status, 200);
    let r = conn
        .send("GET", "/x?status=503", &[("host", "api.test")], None)
        .await;
    assert_eq!(r.status, 503);
    for _ in 0..2 {
        let r = conn.send("GET", "/", &[("host", "dead.test")], None).await;
        assert_eq!(r.status, 502);
    }
    let r = conn
        .send("GET", "/", &[("host", "nowhere.test")], None)
        .await;
    assert_eq!(r.status, 404);

    // Let a few health checks run: they must not count as requests.
    let m = until("health checks", || async {
        let m = scrape(&running).await;
        let passed = sample(
            &m,
            "switchyard_health_checks_total",
            &[("server", &o[0].to_string()), ("result", "passed")],
        )?;
        (passed >= 3.0).then_some(m)
    })
    .await;

    let req = |route: &str, up: &str, server: &str, class: &str| {
        sample(
            &m,
            "switchyard_requests_total",
            &[
                ("route", route),
                ("upstream", up),
                ("server", server),
                ("code_class", class),
            ],
        )
        .unwrap_or(0.0)
    };
    let (a, b) = (o[0].to_string(), o[1].to_string());
    // Round-robin: 8 requests alternate, the 503 being the 8th (server b).
    assert_eq!(
        req("api", "u", &a, "2xx") + req("api", "u", &b, "2xx"),
        7.0,
        "{m}"
    );
    assert_eq!(req("api", "u", &a, "2xx"), 4.0, "{m}");
    assert_eq!(req("api", "u", &b, "5xx"), 1.0, "{m}");
    assert_eq!(
        req("dead.test/", "dead", &dead.to_string(), "5xx"),
        2.0,
        "{m}"
    );
    assert_eq!(req("none", "none", "none", "4xx"), 1.0, "{m}");

    let dur = |suffix: &str, route: &str| {
        sample(
            &m,
            &format!("switchyard_request_duration_seconds_{suffix}"),
            &[("route", route)],
        )
    };
    assert_eq!(dur("count", "api"), Some(8.0), "{m}");
    assert!(
        m.contains("switchyard_request_duration_seconds_bucket{"),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "switchyard_request_duration_seconds_bucket",
            &[("route", "api"), ("le", "+Inf")]
        ) == Some(8.0),
        "{m}"
    );
    assert!(dur("sum", "api").unwrap() > 0.0);
    assert_eq!(
        sample(
            &m,
            "switchyard_upstream_header_duration_seconds_count",
            &[("upstream", "u")]
        ),
        Some(8.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "switchyard_upstream_connect_duration_seconds_count",
            &[("upstream", "u")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(&m, "switchyard_bytes_received_total", &[("route", "api")]),
        Some(5.0),
        "{m}"
    );
    assert!(sample(&m, "switchyard_bytes_sent_total", &[("route", "api")]).unwrap() > 0.0);
    assert_eq!(
        sample(
            &m,
            "switchyard_client_connections",
            &[("listener", "public")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "switchyard_config_generation", &[]), Some(1.0));
    for s in [&a, &b] {
        let l = [("upstream", "u"), ("server", s.as_str())];
        assert_eq!(sample(&m, "switchyard_server_up", &l), Some(1.0), "{m}");
        assert_eq!(sample(&m, "switchyard_inflight_requests", &l), Some(0.0));
        assert_eq!(sample(&m, "switchyard_server_load_estimate", &l), Some(0.0));
        assert_eq!(sample(&m, "switchyard_server_weight", &l), Some(1.0));
    }
    // Passive checks: a refused connect is a failure, but a lone server is never ejected.
    assert_eq!(
        sample(
            &m,
            "switchyard_server_ejections_total",
            &[("upstream", "dead"), ("reason", "max_fails")]
        ),
        Some(0.0),
        "{m}"
    );
    // Bounded labels: no client address or request path anywhere.
    assert!(
        !m.contains("/x"),
        "a request path leaked into a label:\n{m}"
    );

    drop(conn);
    until("the connection gauge to drop", || async {
        let m = scrape(&running).await;
        (sample(
            &m,
            "switchyard_client_connections",
            &[("listener", "public")],
        ) == Some(0.0))
        .then_some(())
    })
    .await;
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn retries_and_reloads_are_counted() {
    let good = common::start_origins(&["good"]).await;
    let dead = common::closed_port().await;
    let dir = TempDir::new("reloads");
    let file = dir.path("config.toml");
    let text = format!(
        "{ADMIN}{PUBLIC}[[route]]\npath = \"/\"\nupstream = \"u\"\n\n[upstream.u]\n{}",
        servers(&[dead, good[0]])
    );
    std::fs::write(&file, &text).unwrap();
    let running = switchyard::start(Config::load(&file).unwrap(), crate::common::WORKERS).unwrap();
    let addr = running.addr("public").unwrap();
    let mut conn = common::Conn::open(addr).await;
    for _ in 0..4 {
        assert_eq!(conn.send("GET", "/", &[], None).await.status, 200);
    }
    std::fs::write(&file, "this is not toml [").unwrap();
    assert!(running.control.reload().is_err());
    std::fs::write(&file, &text).unwrap();
    running.control.reload().expect("valid reload");

    let m = scrape(&running).await;
    // The first request to pick the dead server is retried on the good one; that
    // failure ejects the dead server (max_fails = 1), so no later request retries.
    assert_eq!(
        sample(&m, "switchyard_retries_total", &[("upstream", "u")]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_server_ejections_total",
            &[("server", &dead.to_string()), ("reason", "max_fails")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_config_reloads_total",
            &[("result", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "switchyard_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(sample(&m, "switchyard_config_generation", &[]), Some(2.0));
    // Counters carry across the reload: the route's handles are registered again.
    assert_eq!(
        sample(
            &m,
            "switchyard_requests_total",
            &[("server", &good[0].to_string()), ("code_class", "2xx")]
        ),
        Some(4.0),
        "{m}"
    );
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn status_json_shows_a_server_going_down_after_its_check_fails() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let text = format!(
        "{ADMIN}{PUBLIC}[[route]]\npath = \"/\"\nupstream = \"u\"\n\n[upstream.u]\nbalance = \"ewma\"\n{}\
         [upstream.u.health_check]\npath = \"/health\"\ninterval = \"50ms\"\nfall = 2\nrise = 2\n",
        servers(&[a.addr(), b.addr()])
    );
    let running = start(&text).await;
    let server = |v: &Value, addr: SocketAddr| -> Value {
        v["upstreams"][0]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["addr"] == addr.to_string())
            .cloned()
            .unwrap()
    };
    let v = until("a passing check", || async {
        let v = status_json(&running).await;
        (server(&v, b.addr())["last_check"]["what"] == "passed").then_some(v)
    })
    .await;
    assert_eq!(v["ready"], true);
    assert_eq!(v["upstreams"][0]["name"], "u");
    assert_eq!(v["upstreams"][0]["balance"], "ewma");
    assert_eq!(v["upstreams"][0]["servers_up"], 2);
    assert_eq!(server(&v, b.addr())["state"], "up");
    assert!(server(&v, b.addr())["latency_ms"].is_number());
    assert_eq!(v["routes"][0]["path"], "/");
    assert_eq!(v["listeners"][0]["name"], "public");

    b.set_health(Mode::Status(500));
    let v = until("the server to go down", || async {
        let v = status_json(&running).await;
        (server(&v, b.addr())["state"] == "down").then_some(v)
    })
    .await;
    let s = server(&v, b.addr());
    assert_eq!(s["last_check"]["what"], "failed");
    assert_eq!(s["last_check"]["detail"], "status 500");
    assert_eq!(s["last_change"]["what"], "down");
    assert!(
        s["last_change"]["detail"]
            .as_str()
            .unwrap()
            .contains("status 500"),
        "{s}"
    );
    assert!(s["checks_failed"].as_u64().unwrap() >= 2);
    assert_eq!(s["ejections"], 1);
    assert_eq!(v["upstreams"][0]["servers_up"], 1);
    assert_eq!(server(&v, a.addr())["state"], "up");
    let m = scrape(&running).await;
    let b_addr = b.addr().to_string();
    assert_eq!(
        sample(&m, "switchyard_server_up", &[("server", &b_addr)]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_server_ejections_total",
            &[("server", &b_addr), ("reason", "health_check")]
        ),
        Some(1.0)
    );
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn status_page_is_html_listing_the_servers() {
    let o = common::start_origins(&["a", "b"]).await;
    let text = format!(
        "{ADMIN}{PUBLIC}[[route]]\npath = \"/\"\nupstream = \"bots\"\n\n[upstream.bots]\n{}",
        servers(&o)
    );
    let running = start(&text).await;
    let (status, ct, page) = admin(&running, "/status", None).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("http-equiv=\"refresh\""), "refreshes itself");
    assert!(page.contains("upstream bots"));
    for a in &o {
        assert!(
            page.contains(&format!("<td>{a}</td>")),
            "lists {a}:\n{page}"
        );
    }
    assert!(page.contains("<tr class=\"up\">"));
    assert!(
        !page.contains("<script src") && !page.contains(" src="),
        "no external assets"
    );
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn readyz_is_503_until_the_listeners_are_up() {
    let o = common::start_origins(&["a"]).await;
    let text = format!(
        "{ADMIN}{PUBLIC}[[route]]\npath = \"/\"\nupstream = \"u\"\n\n[upstream.u]\n{}",
        servers(&o)
    );
    let config = Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
    let running = switchyard::prepare(config, crate::common::WORKERS).unwrap();
    assert!(running.addr("public").is_none(), "not listening yet");
    assert_eq!(admin(&running, "/readyz", None).await.0, 503);
    assert_eq!(admin(&running, "/healthz", None).await.0, 200);
    running.listen().unwrap();
    assert_eq!(admin(&running, "/readyz", None).await.0, 200);
    let addr = running.addr("public").unwrap();
    assert_eq!(common::get(addr, "/").await.status, 200);
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_token_guards_metrics_and_status_but_not_the_probes() {
    let o = common::start_origins(&["a"]).await;
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t0k\"\n\n{PUBLIC}[[route]]\npath = \"/\"\nupstream = \"u\"\n\n[upstream.u]\n{}",
        servers(&o)
    );
    let running = start(&text).await;
    for p in ["/metrics", "/status", "/status.json"] {
        assert_eq!(admin(&running, p, None).await.0, 401, "{p}");
        assert_eq!(admin(&running, p, Some("t0k")).await.0, 200, "{p}");
    }
    for p in ["/healthz", "/readyz"] {
        assert_eq!(admin(&running, p, None).await.0, 200, "{p}");
    }
    running.shutdown(Duration::from_secs(1)).await;
}

/// Lines of the log file once it has at least `n`.
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    until(&format!("{n} log line(s)"), || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

#[tokio::test]
async fn access_log_lines_are_json_with_every_field_and_routes_can_opt_out() {
    let o = common::start_origins(&["a"]).await;
    let dir = TempDir::new("json");
    let log = dir.path("access.log");
    let text = format!(
        "{PUBLIC}[access_log]\npath = \"{}\"\n\n\
         [[route]]\npath = \"/health\"\nupstream = \"u\"\naccess_log = false\n\n\
         [[route]]\nname = \"main\"\npath = \"/\"\nupstream = \"u\"\n\n[upstream.u]\n{}",
        log.display(),
        servers(&o)
    );
    let running = start(&text).await;
    let addr = running.addr("public").unwrap();
    let mut conn = common::Conn::open(addr).await;
    let r = conn
        .send(
            "GET",
            "/a?b=1",
            &[("x-request-id", "given-1"), ("user-agent", "t/1")],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let sent = r.body.len() as u64;
    conn.send("GET", "/health", &[], None).await;
    conn.send("POST", "/p", &[], Some(&[b'x'; 1000])).await;
    let lines = log_lines(&log, 2).await;
    // The /health request came between the two; it wrote nothing.
    conn.send("GET", "/last", &[], None).await;
    let lines_after = log_lines(&log, 3).await;
    assert_eq!(lines_after.len(), 3, "{lines_after:?}");

    let v: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    for field in [
        "time",
        "client",
        "method",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration",
        "route",
        "upstream",
        "server",
        "upstream_status",
        "upstream_time",
        "tries",
        "request_id",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/a?b=1");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_out"], sent);
    assert_eq!(v["route"], "main");
    assert_eq!(v["upstream"], "u");
    assert_eq!(v["server"], o[0].to_string());
    assert_eq!(v["upstream_status"], 200);
    assert_eq!(v["tries"], 1);
    assert_eq!(v["request_id"], "given-1");
    assert_eq!(v["user_agent"], "t/1");
    assert!(v["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(v["duration"].as_f64().unwrap() >= v["upstream_time"].as_f64().unwrap());
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
    let post: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(post["method"], "POST");
    assert_eq!(post["bytes_in"], 1000);
    assert_eq!(post["request_id"].as_str().unwrap().len(), 32);
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn combined_format_and_reopen_after_rotation() {
    let o = common::start_origins(&["a"]).await;
    let dir = TempDir::new("combined");
    let log = dir.path("access.log");
    let text = format!(
        "{PUBLIC}[access_log]\npath = \"{}\"\nformat = \"combined\"\n\n\
         [[route]]\npath = \"/\"\nupstream = \"u\"\n\n[upstream.u]\n{}",
        log.display(),
        servers(&o)
    );
    let running = start(&text).await;
    let addr = running.addr("public").unwrap();
    common::send(
        addr,
        "GET",
        "/one?x=1",
        &[("referer", "http://r/"), ("user-agent", "ua")],
        None,
    )
    .await;
    let line = log_lines(&log, 1).await.remove(0);
    // 127.0.0.1 - - [23/Nov/2026:10:00:00 +0000] "GET /one?x=1 HTTP/1.1" 200 N "http://r/" "ua" ...
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(" +0000] \"GET /one?x=1 HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(line.contains(" \"http://r/\" \"ua\" "), "{line}");

    // logrotate: move the file, then signal (here: call what SIGUSR1 calls).
    let rotated = dir.path("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    running.shared.reopen_log();
    common::get(addr, "/two").await;
    let fresh = log_lines(&log, 1).await;
    assert!(fresh[0].contains("GET /two "), "{fresh:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(
        old.lines().count(),
        1,
        "nothing more went to the rotated file"
    );
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn request_ids_are_kept_generated_and_propagated() {
    let p = common::setup(
        &["a"],
        "[[route]]\npath = \"/\"\nupstream = \"u\"\nset_headers = { \"x-trace\" = \"sy-$request_id\" }\n\n\
         [upstream.u]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let r = common::send(p.addr, "GET", "/", &[("x-request-id", "abc-123")], None).await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert_eq!(r.seen_one("x-request-id"), Some("abc-123"));
    assert_eq!(r.seen_one("x-trace"), Some("sy-abc-123"));

    let r = common::get(p.addr, "/").await;
    let id = r
        .header("x-request-id")
        .expect("an id is generated")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.seen_one("x-request-id"), Some(id.as_str()));
    let other = common::get(p.addr, "/").await;
    assert_ne!(
        other.header("x-request-id"),
        Some(id.as_str()),
        "ids differ"
    );

    // A malformed id is replaced, not passed on.
    let r = common::send(p.addr, "GET", "/", &[("x-request-id", "a\"b")], None).await;
    assert_eq!(r.header("x-request-id").unwrap().len(), 32);
    // Errors the proxy makes itself carry the id too.
    let r = common::send(p.addr, "GET", "/", &[("host", "a b")], None).await;
    assert_eq!(r.status, 400);
    assert!(r.header("x-request-id").is_some());
    p.running.shutdown(Duration::from_secs(1)).await;
}

/// The lines of `text` that are samples of `name` (with labels).
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}{{");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// Issue 19: 10 routes over one upstream of 50 servers used to export
/// 10 × 50 × 5 `requests_total` series (plus 50 for `server="none"`) at start, all
/// zero. Now a series appears with its first request, and a server a reload removes
/// takes its series with it.
#[tokio::test]
async fn only_series_with_traffic_are_exported_and_removed_servers_take_theirs_away() {
    let names: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let o = common::start_origins(&names).await;
    let routes: String = (0..10)
        .map(|i| format!("[[route]]\nname = \"r{i}\"\npath = \"/r{i}/\"\nupstream = \"u\"\n\n"))
        .collect();
    let config = |servers_of: &[SocketAddr]| {
        format!(
            "{ADMIN}{PUBLIC}{routes}[upstream.u]\n{}",
            servers(servers_of)
        )
    };
    let dir = TempDir::new("series");
    let file = dir.path("config.toml");
    std::fs::write(&file, config(&o)).unwrap();
    let running = switchyard::start(Config::load(&file).unwrap(), crate::common::WORKERS).unwrap();
    let addr = running.addr("public").unwrap();

    let m = scrape(&running).await;
    assert!(
        series(&m, "switchyard_requests_total").is_empty(),
        "no traffic, no request series:\n{m}"
    );
    assert!(series(&m, "switchyard_request_duration_seconds_count").is_empty());

    // Round-robin over the upstream: r0's three requests go to three servers,
    // r1's two to two more.
    for (route, n) in [("r0", 3), ("r1", 2)] {
        for _ in 0..n {
            let mut conn = common::Conn::open(addr).await;
            let r = conn.send("GET", &format!("/{route}/x"), &[], None).await;
            assert_eq!(r.status, 200);
        }
    }
    let m = until("five request series", || async {
        let m = scrape(&running).await;
        (series(&m, "switchyard_requests_total").len() == 5).then_some(m)
    })
    .await;
    let requests = series(&m, "switchyard_requests_total");
    assert!(
        requests
            .iter()
            .all(|l| l.ends_with("code_class=\"2xx\"} 1")),
        "{m}"
    );
    let histograms = series(&m, "switchyard_request_duration_seconds_count");
    assert_eq!(histograms.len(), 2, "r0 and r1 only:\n{m}");
    // What is left per server is its live state (up, in flight, weight...).
    println!(
        "10 routes x 50 servers, 5 requests: {} requests_total series, {} series in all",
        requests.len(),
        m.lines().filter(|l| !l.starts_with('#')).count()
    );

    // The server r0's first request went to (one with traffic) leaves.
    let served: Vec<SocketAddr> = o
        .iter()
        .copied()
        .filter(|a| {
            requests
                .iter()
                .any(|l| l.contains(&format!("server=\"{a}\"")))
        })
        .collect();
    assert_eq!(served.len(), 5, "{m}");
    let gone = served[0];
    let kept: Vec<SocketAddr> = o.iter().copied().filter(|a| *a != gone).collect();
    std::fs::write(&file, config(&kept)).unwrap();
    running.control.reload().expect("valid reload");
    // Gone from the live state at once; its counts once nothing holds them.
    let m = until("the removed server's series to go", || async {
        let m = scrape(&running).await;
        (!m.contains(&format!("server=\"{gone}\""))).then_some(m)
    })
    .await;
    // The others' counts carried across the reload.
    let requests = series(&m, "switchyard_requests_total");
    assert_eq!(requests.len(), 4, "{m}");
    for a in &served[1..] {
        assert_eq!(
            sample(
                &m,
                "switchyard_requests_total",
                &[("server", &a.to_string()), ("code_class", "2xx")]
            ),
            Some(1.0),
            "{m}"
        );
    }
    running.shutdown(Duration::from_secs(1)).await;
}

/// Resident memory of this process, from `/proc/self/statm` (Linux; 4 KiB pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's resident field");
    pages * 4096
}

/// Issue 19: histogram samples used to wait in the exporter's queue until a scrape
/// or the 5 s upkeep, at 8 bytes each at least, so memory grew with the request
/// rate between the two. Now a sample lands in its bucket at once: twenty million
/// of them, which the queue would have held in 160 MB or more, leave the resident
/// size where it was (within a tolerance for the other tests of this binary), and
/// the scrape shows them all.
#[test]
fn recording_samples_holds_no_memory() {
    use switchyard::observe::Metrics;
    const SAMPLES: u64 = 20_000_000;
    /// Far below the 160 MB a queue of the samples needs, far above what the
    /// concurrently running tests of this binary allocate.
    const TOLERANCE: u64 = 48 << 20;
    let metrics = Metrics::new(true);
    let route = metrics.route("r", "u", false);
    let upstream = metrics.upstream("u", true);
    let server = metrics.server_requests("r", "u", "127.0.0.1:9000");
    route.record(&server, http::StatusCode::OK, Duration::from_millis(1));
    let before = resident_bytes();
    for i in 1..SAMPLES {
        upstream.header.record((i % 5000) as f64 * 1e-6);
    }
    let grew = resident_bytes().saturating_sub(before);
    println!(
        "{SAMPLES} histogram samples: resident size grew {} KiB",
        grew >> 10
    );
    assert!(grew < TOLERANCE, "grew {grew} bytes");
    let mut text = String::new();
    metrics.series().expect("enabled").render(&mut text);
    assert_eq!(
        sample(
            &text,
            "switchyard_upstream_header_duration_seconds_count",
            &[("upstream", "u")]
        ),
        Some((SAMPLES - 1) as f64),
        "{text}"
    );
    assert_eq!(
        sample(&text, "switchyard_requests_total", &[("code_class", "2xx")]),
        Some(1.0)
    );
}
