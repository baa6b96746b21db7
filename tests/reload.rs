//! Hot reload end to end (issue 5): configuration swaps under load, invalid files,
//! per-server state carried across reloads, the file watch (editor rename and
//! Kubernetes `..data` symlink swap), streaming across reloads, listeners added and
//! removed, and the admin API (drain, weight, reload, token).
//!
//! Every test writes its configuration to its own temporary directory, starts the
//! proxy from that file and changes it by rewriting the file (then
//! `control.reload()`, the file watch or `POST /config/reload`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::control::{eventually, Client, Load, Mode, Origin};
use serde_json::Value;
use switchyard::{Config, Running};

const PUBLIC: &str = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n";

use common::TempDir as Dir;

/// Replaces `path` as editors do: write a temporary file, rename it over.
fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Writes `text` as the directory's config file and starts the proxy from it.
async fn start_file(dir: &Dir, text: &str) -> Running {
    write_file(&dir.file(), text);
    let config = Config::load(&dir.file())
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{text}"));
    switchyard::start(config, crate::common::WORKERS).expect("proxy starts")
}

/// A catch-all route to `upstream`.
fn route(upstream: &str) -> String {
    format!("[[route]]\npath = \"/\"\nupstream = \"{upstream}\"\n\n")
}

/// `[upstream.NAME]` with `extra` keys and these servers (weight 1).
fn upstream(name: &str, servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[upstream.{name}]\n{extra}servers = [{}]\n\n",
        list.join(", ")
    )
}

/// `PUBLIC`, then `head`, then a catch-all route to upstream `u` of `servers` with
/// `extra` keys.
fn config_u(head: &str, servers: &[SocketAddr], extra: &str) -> String {
    format!(
        "{PUBLIC}{head}{}{}",
        route("u"),
        upstream("u", servers, extra)
    )
}

/// An unrelated upstream and route on `/other/`, to make a reload that does not
/// touch upstream `u`.
fn other(addr: SocketAddr) -> String {
    format!(
        "[[route]]\npath = \"/other/\"\nupstream = \"other\"\n\n{}",
        upstream("other", &[addr], "")
    )
}

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// The state of server `addr` of upstream `name` in the current snapshot.
fn server_state(
    running: &Running,
    name: &str,
    addr: SocketAddr,
) -> Arc<switchyard::upstream::ServerState> {
    let snap = running.shared.load();
    let u = snap
        .upstreams
        .iter()
        .find(|u| &*u.name == name)
        .unwrap_or_else(|| panic!("no upstream {name}"));
    let s = u
        .servers
        .iter()
        .find(|s| s.state.addr() == addr)
        .unwrap_or_else(|| panic!("no server {addr} in {name}"));
    Arc::clone(&s.state)
}

/// The server addresses of upstream `name` in the current snapshot.
fn server_addrs(running: &Running, name: &str) -> Vec<SocketAddr> {
    running
        .shared
        .load()
        .upstreams
        .iter()
        .find(|u| &*u.name == name)
        .map(|u| u.servers.iter().map(|s| s.state.addr()).collect())
        .unwrap_or_default()
}

/// One admin request: status and parsed JSON body.
async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let r = Client::new(addr)
        .send(method, path, &headers, body.map(str::as_bytes))
        .await
        .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
    let v = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
    (r.status.as_u16(), v)
}

/// `n` GETs of `path` over one keep-alive connection; the answering origins, in order.
async fn origins_of(addr: SocketAddr, path: &str, n: usize) -> Vec<String> {
    let mut c = Client::new(addr);
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c.get(path).await.expect("answer");
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        out.push(r.origin().unwrap_or("<none>").to_owned());
    }
    out
}

fn count(list: &[String], name: &str) -> usize {
    list.iter().filter(|o| *o == name).count()
}

// ---------------------------------------------------------------------------------
// 1. Reloads under load
// ---------------------------------------------------------------------------------

/// 200 reloads alternating two configurations with different origin sets (A: o1+o2,
/// B: o2+o3) while three keep-alive clients and three new-connection-per-request
/// clients send continuously: no request fails, and both configurations' routing is
/// seen (o1 and o3 both answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_reloads_under_load_fail_no_request() {
    let o = common::start_origins(&["o1", "o2", "o3"]).await;
    let dir = Dir::new("load");
    let a = config_u("", &[o[0], o[1]], "");
    let b = config_u("", &[o[1], o[2]], "");
    let running = start_file(&dir, &a).await;
    let addr = running.addr("public").expect("public bound");

    let keepalive = Load::start(addr, 3, "/", Duration::from_micros(200));
    let stop = Arc::new(AtomicBool::new(false));
    let fresh: Vec<_> = (0..3)
        .map(|_| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut out: Vec<Result<String, String>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // A new client per request: a new connection each time.
                    let r = Client::new(addr).get("/").await.and_then(|r| {
                        if r.status == 200 {
                            Ok(r.origin().unwrap_or("<none>").to_owned())
                        } else {
                            Err(format!("status {}: {}", r.status, r.body))
                        }
                    });
                    out.push(r);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                out
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..200 {
        write_file(&dir.file(), if i % 2 == 0 { &b } else { &a });
        running.control.reload().expect("reload succeeds");
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let samples = keepalive.finish().await;
    let keepalive_total = samples.len();
    for s in samples {
        match &s.result {
            Ok((status, origin)) if *status == 200 => seen.push(origin.clone().unwrap_or_default()),
            other => failures.push(format!("keep-alive: {other:?}")),
        }
    }
    let mut fresh_total = 0;
    for t in fresh {
        for r in t.await.expect("client task") {
            fresh_total += 1;
            match r {
                Ok(o) => seen.push(o),
                Err(e) => failures.push(format!("new connection: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failures.len(),
        keepalive_total + fresh_total,
        &failures[..failures.len().min(5)]
    );
    assert!(
        keepalive_total > 200 && fresh_total > 200,
        "too little load: {keepalive_total} keep-alive, {fresh_total} new-connection requests"
    );
    for name in ["o1", "o2", "o3"] {
        assert!(
            count(&seen, name) > 0,
            "{name} got no request: {} total",
            seen.len()
        );
    }
    assert_eq!(count(&seen, "<none>"), 0);
    eprintln!(
        "{keepalive_total} keep-alive + {fresh_total} new-connection requests; o1 {}, o2 {}, o3 {}",
        count(&seen, "o1"),
        count(&seen, "o2"),
        count(&seen, "o3")
    );
    let stats = &running.control.stats;
    assert_eq!(stats.succeeded.load(Ordering::Relaxed), 200);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------------------
// 2. Invalid file
// ---------------------------------------------------------------------------------

/// An invalid file changes nothing: the old configuration keeps serving,
/// `control.reload()` names the file and the key path, and `POST /config/reload`
/// answers 400 with the same lines; the counters count the failures.
#[tokio::test]
async fn invalid_file_keeps_the_old_configuration() {
    let o = common::start_origins(&["o1", "o2"]).await;
    let dir = Dir::new("invalid");
    let good = config_u(ADMIN, &[o[0]], "");
    let running = start_file(&dir, &good).await;
    let addr = running.addr("public").unwrap();
    let admin_addr = running.admin.expect("admin bound");
    assert_eq!(origins_of(addr, "/", 2).await, ["o1", "o1"]);

    // A bad value (with a new server that must not be applied).
    let bad = config_u(ADMIN, &[o[1]], "balance = \"sideways\"\n");
    write_file(&dir.file(), &bad);
    let err = running
        .control
        .reload()
        .expect_err("invalid file is rejected");
    let lines = err.lines();
    eprintln!("reload errors: {lines:?}");
    let file = dir.file().display().to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&file) && l.contains("upstream.u.balance")),
        "error lines name neither the file nor the key: {lines:?}"
    );
    assert_eq!(server_addrs(&running, "u"), [o[0]]);
    assert_eq!(origins_of(addr, "/", 3).await, ["o1", "o1", "o1"]);

    let (status, body) = admin(admin_addr, "POST", "/config/reload", None, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reloaded"], false, "{body}");
    let errors: Vec<String> = body["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| e.as_str().expect("string").to_owned())
        .collect();
    assert_eq!(errors, lines, "the API reports the same lines");
    assert_eq!(origins_of(addr, "/", 2).await, ["o1", "o1"]);

    // A TOML syntax error, and a route to a missing upstream: rejected too.
    write_file(&dir.file(), &format!("{good}[upstream.u\n"));
    let (status, body) = admin(admin_addr, "POST", "/config/reload", None, None).await;
    assert_eq!(status, 400, "{body}");
    write_file(
        &dir.file(),
        &format!(
            "{PUBLIC}{ADMIN}{}{}",
            route("nope"),
            upstream("u", &[o[1]], "")
        ),
    );
    let err = running
        .control
        .reload()
        .expect_err("missing upstream rejected");
    assert!(
        err.lines()
            .iter()
            .any(|l| l.contains(&file) && l.contains("route")),
        "{:?}",
        err.lines()
    );
    assert_eq!(origins_of(addr, "/", 2).await, ["o1", "o1"]);

    let (status, body) = admin(admin_addr, "GET", "/config/reload", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["failed"], 4, "{body}");
    assert_eq!(body["succeeded"], 0, "{body}");
    assert!(body["last_error"].is_string(), "{body}");

    // Fixing the file applies it.
    write_file(&dir.file(), &config_u(ADMIN, &[o[1]], ""));
    let (status, body) = admin(admin_addr, "POST", "/config/reload", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], true, "{body}");
    assert!(!body["changes"].as_array().unwrap().is_empty(), "{body}");
    assert_eq!(origins_of(addr, "/", 2).await, ["o2", "o2"]);
}

// ---------------------------------------------------------------------------------
// 3. Health survives a reload
// ---------------------------------------------------------------------------------

/// A server that active checks took down stays out right after a reload that does
/// not touch its upstream (Traefik's bug: every server UP again after a reload).
#[tokio::test]
async fn server_down_by_health_checks_stays_out_after_reload() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let spare = common::start_origins(&["spare"]).await;
    a.set_health(Mode::Status(500));
    let dir = Dir::new("health");
    let check = "[upstream.u.health_check]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfall = 1\nrise = 1\n\n";
    let base = config_u("", &[a.addr(), b.addr()], "") + check;
    let running = start_file(&dir, &base).await;
    let addr = running.addr("public").unwrap();
    let state = server_state(&running, "u", a.addr());
    assert!(
        eventually(Duration::from_secs(3), || !state.is_up())
            .await
            .is_some(),
        "a never went down"
    );
    let before = a.requests();

    write_file(&dir.file(), &format!("{base}{}", other(spare[0])));
    running.control.reload().expect("reload");
    // Right away, no probe has had time to run.
    assert!(
        !server_state(&running, "u", a.addr()).is_up(),
        "a is up again after the reload"
    );
    let seen = origins_of(addr, "/", 20).await;
    assert_eq!(count(&seen, "b"), 20, "{seen:?}");
    assert_eq!(a.requests(), before, "a got requests after the reload");
    // The added route works.
    let r = Client::new(addr).get("/other/x").await.unwrap();
    assert_eq!(r.origin(), Some("spare"));
}

/// The same for a server marked down by hand (`set_up(false)`), without checks.
#[tokio::test]
async fn server_marked_down_stays_out_after_reload() {
    let o = common::start_origins(&["o1", "o2", "spare"]).await;
    let dir = Dir::new("down");
    let base = config_u("", &[o[0], o[1]], "");
    let running = start_file(&dir, &base).await;
    let addr = running.addr("public").unwrap();
    server_state(&running, "u", o[0]).set_up(false);
    assert_eq!(count(&origins_of(addr, "/", 6).await, "o2"), 6);

    write_file(&dir.file(), &format!("{base}{}", other(o[2])));
    running.control.reload().expect("reload");
    assert!(!server_state(&running, "u", o[0]).is_up());
    assert_eq!(count(&origins_of(addr, "/", 10).await, "o2"), 10);
}

// ---------------------------------------------------------------------------------
// 4. In-flight and latency state
// ---------------------------------------------------------------------------------

/// The per-server state (in-flight count, EWMA latency) is the same object after
/// reloads, one not touching the upstream and one adding a server to it, while a
/// slow request is in flight; the count goes back to 0 when it ends.
#[tokio::test]
async fn inflight_and_latency_survive_reload() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let spare = common::start_origins(&["spare"]).await;
    let dir = Dir::new("inflight");
    let base = config_u("", &[a.addr()], "balance = \"ewma\"\n");
    let running = start_file(&dir, &base).await;
    let addr = running.addr("public").unwrap();
    // Some latency samples first.
    assert_eq!(count(&origins_of(addr, "/", 5).await, "a"), 5);
    let state = server_state(&running, "u", a.addr());
    let requests = state.requests();
    assert_eq!(requests, 5);

    a.set_requests(Mode::Slow(Duration::from_millis(600)));
    let slow = tokio::spawn(async move { Client::new(addr).get("/slow").await });
    assert!(
        eventually(Duration::from_secs(2), || state.inflight() == 1)
            .await
            .is_some(),
        "slow request never in flight"
    );

    write_file(&dir.file(), &format!("{base}{}", other(spare[0])));
    running.control.reload().expect("reload 1");
    let after = server_state(&running, "u", a.addr());
    assert!(
        Arc::ptr_eq(&state, &after),
        "server state replaced by an unrelated reload"
    );
    assert_eq!(after.inflight(), 1);

    // Now change the upstream itself: a second server.
    let grown = config_u("", &[a.addr(), b.addr()], "balance = \"ewma\"\n");
    write_file(&dir.file(), &grown);
    running.control.reload().expect("reload 2");
    let after = server_state(&running, "u", a.addr());
    assert!(
        Arc::ptr_eq(&state, &after),
        "server state replaced when its upstream changed"
    );
    assert_eq!(after.inflight(), 1);
    assert_eq!(after.requests(), requests + 1);

    let r = slow.await.unwrap().expect("slow request answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.origin(), Some("a"));
    assert!(
        eventually(Duration::from_secs(1), || after.inflight() == 0)
            .await
            .is_some(),
        "in-flight count stuck at {}",
        after.inflight()
    );
}

// ---------------------------------------------------------------------------------
// 5. File watch
// ---------------------------------------------------------------------------------

/// An editor's write-then-rename is seen and applied within 1 s.
#[tokio::test]
async fn watch_applies_write_then_rename() {
    let o = common::start_origins(&["o1", "o2"]).await;
    let dir = Dir::new("watch-rename");
    let running = start_file(&dir, &config_u("", &[o[0]], "")).await;
    let addr = running.addr("public").unwrap();
    let _w = switchyard::watch::watch(
        Arc::clone(&running.control),
        &tokio::runtime::Handle::current(),
    )
    .expect("watch");
    assert_eq!(origins_of(addr, "/", 1).await, ["o1"]);

    write_file(&dir.file(), &config_u("", &[o[1]], ""));
    let took = eventually(Duration::from_secs(1), || {
        server_addrs(&running, "u") == [o[1]]
    })
    .await;
    assert!(took.is_some(), "rename not applied within 1 s");
    assert_eq!(origins_of(addr, "/", 2).await, ["o2", "o2"]);

    // And again (the watch survives the inode going away).
    write_file(&dir.file(), &config_u("", &[o[0]], ""));
    let took = eventually(Duration::from_secs(1), || {
        server_addrs(&running, "u") == [o[0]]
    })
    .await;
    assert!(took.is_some(), "second rename not applied within 1 s");
}

/// A Kubernetes ConfigMap update: config.toml -> ..data/config.toml, ..data ->
/// ..2026_a; the update creates ..2026_b and renames a new ..data_tmp symlink over
/// ..data. Applied within 1 s.
#[cfg(unix)]
#[tokio::test]
async fn watch_applies_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;
    let o = common::start_origins(&["o1", "o2"]).await;
    let dir = Dir::new("watch-configmap");
    let va = dir.0.join("..2026_a");
    let vb = dir.0.join("..2026_b");
    std::fs::create_dir(&va).unwrap();
    std::fs::write(va.join("config.toml"), config_u("", &[o[0]], "")).unwrap();
    symlink("..2026_a", dir.0.join("..data")).unwrap();
    symlink("..data/config.toml", dir.file()).unwrap();
    let config = Config::load(&dir.file()).expect("valid");
    let running = switchyard::start(config, crate::common::WORKERS).expect("start");
    let addr = running.addr("public").unwrap();
    let _w = switchyard::watch::watch(
        Arc::clone(&running.control),
        &tokio::runtime::Handle::current(),
    )
    .expect("watch");
    assert_eq!(origins_of(addr, "/", 1).await, ["o1"]);

    std::fs::create_dir(&vb).unwrap();
    std::fs::write(vb.join("config.toml"), config_u("", &[o[1]], "")).unwrap();
    symlink("..2026_b", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    std::fs::remove_dir_all(&va).unwrap();
    let took = eventually(Duration::from_secs(1), || {
        server_addrs(&running, "u") == [o[1]]
    })
    .await;
    assert!(took.is_some(), "..data swap not applied within 1 s");
    assert_eq!(origins_of(addr, "/", 2).await, ["o2", "o2"]);
}

// ---------------------------------------------------------------------------------
// 6. Streaming across reloads
// ---------------------------------------------------------------------------------

/// A streaming response (20 chunks, 50 ms apart) survives 10 reloads in its middle,
/// including ones that remove its server from the configuration.
#[tokio::test]
async fn streaming_response_survives_ten_reloads() {
    let o = common::start_origins(&["s", "o2"]).await;
    let dir = Dir::new("stream");
    let a = config_u("", &[o[0]], "");
    let b = config_u("", &[o[1]], "");
    let running = start_file(&dir, &a).await;
    let addr = running.addr("public").unwrap();
    let stream =
        tokio::spawn(async move { Client::new(addr).get("/?chunks=20&interval=50ms").await });
    let state = server_state(&running, "u", o[0]);
    assert!(eventually(Duration::from_secs(1), || state.inflight() == 1)
        .await
        .is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..10 {
        write_file(&dir.file(), if i % 2 == 0 { &b } else { &a });
        running.control.reload().expect("reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!stream.is_finished(), "stream ended before the reloads did");
    let r = stream.await.unwrap().expect("stream answered");
    assert_eq!(r.status, 200);
    let expected: String = (0..20).rev().map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(r.body, expected);
}

// ---------------------------------------------------------------------------------
// 7. Drain via the admin API
// ---------------------------------------------------------------------------------

/// A drained server gets no new requests while its in-flight one completes;
/// the drain survives a file reload; undrain brings it back.
#[tokio::test]
async fn drain_via_admin_api() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let spare = common::start_origins(&["spare"]).await;
    let dir = Dir::new("drain");
    let base = config_u(ADMIN, &[a.addr(), b.addr()], "");
    let running = start_file(&dir, &base).await;
    let addr = running.addr("public").unwrap();
    let admin_addr = running.admin.unwrap();
    let state = server_state(&running, "u", a.addr());

    a.set_requests(Mode::Slow(Duration::from_millis(500)));
    // Round robin: of two concurrent requests, one goes to a.
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { Client::new(addr).get("/").await }))
        .collect();
    assert!(eventually(Duration::from_secs(1), || state.inflight() == 1)
        .await
        .is_some());

    let drain = format!("/upstreams/u/servers/{}/drain", a.addr());
    let (status, body) = admin(admin_addr, "POST", &drain, None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["drained"], true, "{body}");
    assert_eq!(body["eligible"], false, "{body}");
    let before = a.requests();
    assert_eq!(count(&origins_of(addr, "/", 10).await, "b"), 10);
    let mut by = Vec::new();
    for t in slow {
        let r = t.await.unwrap().expect("in-flight request completes");
        assert_eq!(r.status, 200);
        by.push(r.origin().unwrap().to_owned());
    }
    by.sort();
    assert_eq!(by, ["a", "b"]);

    // A reload keeps the drain.
    write_file(&dir.file(), &format!("{base}{}", other(spare[0])));
    let (status, body) = admin(admin_addr, "POST", "/config/reload", None, None).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = admin(admin_addr, "GET", "/upstreams/u", None, None).await;
    let servers = body["servers"].as_array().expect("servers");
    let sa = servers
        .iter()
        .find(|s| s["addr"] == a.addr().to_string())
        .expect("a listed");
    assert_eq!(sa["drained"], true, "{body}");
    assert_eq!(count(&origins_of(addr, "/", 10).await, "b"), 10);
    assert_eq!(a.requests(), before, "drained server got new requests");

    a.set_requests(Mode::Normal);
    let undrain = format!("/upstreams/u/servers/{}/undrain", a.addr());
    let (status, body) = admin(admin_addr, "POST", &undrain, None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["drained"], false, "{body}");
    let seen = origins_of(addr, "/", 10).await;
    assert_eq!(count(&seen, "a"), 5, "{seen:?}");
}

// ---------------------------------------------------------------------------------
// 8. Listeners added and removed
// ---------------------------------------------------------------------------------

/// A listener added by a reload is bound and serves; removed, it refuses
/// connections. The unchanged listener keeps its address.
#[tokio::test]
async fn reload_adds_and_removes_listeners() {
    let o = common::start_origins(&["o1"]).await;
    let dir = Dir::new("listeners");
    let base = config_u("", &[o[0]], "");
    let running = start_file(&dir, &base).await;
    let public = running.addr("public").unwrap();
    assert!(running.addr("extra").is_none());

    let extra = "[[listener]]\nname = \"extra\"\nlisten = \"127.0.0.1:0\"\n\n";
    write_file(&dir.file(), &format!("{extra}{base}"));
    running.control.reload().expect("reload adds a listener");
    let extra_addr = running.addr("extra").expect("extra bound");
    assert_eq!(running.addr("public"), Some(public), "public moved");
    assert_eq!(origins_of(extra_addr, "/", 2).await, ["o1", "o1"]);
    assert_eq!(origins_of(public, "/", 1).await, ["o1"]);

    write_file(&dir.file(), &base);
    running.control.reload().expect("reload removes a listener");
    assert!(running.addr("extra").is_none());
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::net::TcpStream::connect(extra_addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "removed listener still accepts: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert_eq!(origins_of(public, "/", 1).await, ["o1"]);
}

// ---------------------------------------------------------------------------------
// 9. Admin token
// ---------------------------------------------------------------------------------

/// With `admin.token`, every endpoint answers 401 without the token or with a
/// wrong one, and works with the right one.
#[tokio::test]
async fn admin_token_is_required() {
    let o = common::start_origins(&["o1"]).await;
    let dir = Dir::new("token");
    let text = config_u(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\n",
        &[o[0]],
        "",
    );
    let running = start_file(&dir, &text).await;
    let admin_addr = running.admin.unwrap();
    let drain = format!("/upstreams/u/servers/{}/drain", o[0]);
    for (method, path) in [
        ("GET", "/upstreams"),
        ("GET", "/upstreams/u"),
        ("POST", drain.as_str()),
        ("POST", "/config/reload"),
        ("GET", "/config/reload"),
        ("GET", "/nowhere"),
    ] {
        for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
            let (status, body) = admin(admin_addr, method, path, token, None).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
        }
    }
    assert!(
        !server_state(&running, "u", o[0]).drained(),
        "a 401 drained the server"
    );
    let (status, body) = admin(admin_addr, "GET", "/upstreams", Some("s3cret"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upstreams"][0]["name"], "u", "{body}");
    let (status, _) = admin(admin_addr, "POST", "/config/reload", Some("s3cret"), None).await;
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------------------------
// 10. Weight override
// ---------------------------------------------------------------------------------

/// Setting a server's weight through the API changes the distribution (round robin,
/// 1:1 → 3:1), survives a file reload, and `null` clears it.
#[tokio::test]
async fn weight_override_changes_distribution_and_survives_reload() {
    let o = common::start_origins(&["o1", "o2", "spare"]).await;
    let dir = Dir::new("weight");
    let base = config_u(ADMIN, &[o[0], o[1]], "");
    let running = start_file(&dir, &base).await;
    let addr = running.addr("public").unwrap();
    let admin_addr = running.admin.unwrap();
    let seen = origins_of(addr, "/", 40).await;
    assert_eq!(count(&seen, "o1"), 20);

    let path = format!("/upstreams/u/servers/{}/weight", o[0]);
    let (status, body) = admin(admin_addr, "PUT", &path, None, Some(r#"{"weight": 3}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weight_override"], 3, "{body}");
    let seen = origins_of(addr, "/", 40).await;
    assert_eq!(count(&seen, "o1"), 30, "{seen:?}");

    write_file(&dir.file(), &format!("{base}{}", other(o[2])));
    let (status, body) = admin(admin_addr, "POST", "/config/reload", None, None).await;
    assert_eq!(status, 200, "{body}");
    let seen = origins_of(addr, "/", 40).await;
    assert_eq!(
        count(&seen, "o1"),
        30,
        "override lost by the reload: {seen:?}"
    );
    let (_, body) = admin(admin_addr, "GET", "/upstreams/u", None, None).await;
    let s1 = body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"] == o[0].to_string())
        .cloned()
        .expect("o1 listed");
    assert_eq!(s1["weight_override"], 3, "{body}");

    // Bad values are refused; null clears.
    let (status, _) = admin(admin_addr, "PUT", &path, None, Some(r#"{"weight": 0}"#)).await;
    assert_eq!(status, 400);
    let (status, body) = admin(admin_addr, "PUT", &path, None, Some(r#"{"weight": null}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weight_override"], Value::Null, "{body}");
    let seen = origins_of(addr, "/", 40).await;
    assert_eq!(count(&seen, "o1"), 20, "{seen:?}");
}

// ---------------------------------------------------------------------------------
// 11. Upgraded connection across reloads
// ---------------------------------------------------------------------------------

/// An origin that answers an `Upgrade: echo` request with 101 and then echoes bytes
/// (and anything else with 400).
async fn upgrade_origin() -> SocketAddr {
    common::upgrade_echo_origin("echo", &["\r\nupgrade: echo\r\n", "connection: upgrade"]).await
}

/// An upgraded connection (101, then raw bytes both ways) keeps working across 10
/// reloads, including ones removing its server.
#[tokio::test]
async fn upgraded_connection_survives_ten_reloads() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upgrade_origin().await;
    let o = common::start_origins(&["o2"]).await;
    let dir = Dir::new("upgrade");
    let a = config_u("", &[up], "");
    let b = config_u("", &[o[0]], "");
    let running = start_file(&dir, &a).await;
    let addr = running.addr("public").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /ws HTTP/1.1\r\nhost: {addr}\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // The head only: after a 101 the connection carries the upgraded protocol.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("101 in time")
            .expect("read head");
        assert_eq!(
            n,
            1,
            "closed inside the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut buf = [0u8; 64];
    for i in 0..11 {
        // The first round trip is before any reload.
        if i > 0 {
            write_file(&dir.file(), if i % 2 == 1 { &b } else { &a });
            running.control.reload().expect("reload");
        }
        let msg = format!("ping {i}\n");
        s.write_all(msg.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
        let n = tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf[..msg.len()]))
            .await
            .unwrap_or_else(|_| panic!("echo {i} in time"))
            .unwrap_or_else(|e| panic!("echo {i} (after {i} reloads): {e}"));
        assert_eq!(&buf[..n], msg.as_bytes());
    }
}
