//! Live server membership end to end: servers added and removed through the admin
//! API (`POST /upstreams/NAME/servers`, `DELETE /upstreams/NAME/servers/ADDR`) and
//! reported by discovery sources, under load, across file reloads.
//!
//! The acceptance test is the first one: 1 000 changes through the admin API under
//! continuous load with zero failed requests, round-robin proportions exact across
//! the changes, per-server state (health verdicts, in-flight and request counts)
//! kept, and the changes still there after a file reload. The others pin down the
//! pieces one at a time: the API's answers and errors, warming, a request whose
//! server is removed, the token, weights, discovery, the round-robin sequence
//! across a change, and the reload rules of `src/membership/mod.rs`.
//!
//! Every proxy here starts from a file in its own temporary directory, as the
//! binary does, so that a reload (`POST /config/reload`) reads a rewritten file.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::control::{eventually, Client, Load, Mode, Origin, Sample};
use common::TempDir;
use serde_json::{json, Value};
use switchyard::config::ServerConfig;
use switchyard::membership::discover::{Discover, Report};
use switchyard::upstream::{Active, ServerState};
use switchyard::{Config, Running};

const PUBLIC: &str = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n";
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// Active checks every 100 ms; one failure takes a server down, one pass brings it
/// up (and a warming server needs one pass anyway).
const CHECK_100MS: &str =
    "[upstream.u.health_check]\ninterval = \"100ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n\n";

/// The proxy's file: `head` (e.g. `ADMIN`), one catch-all route to upstream `u`
/// without retries (so that a failed exchange is a failed request the client sees,
/// never one a retry hid) plus `route_extra` keys, and upstream `u`: round robin
/// over `servers` (weight 1) with `check` (a health-check table, or nothing).
fn config(head: &str, servers: &[SocketAddr], route_extra: &str, check: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "{PUBLIC}{head}[[route]]\npath = \"/\"\nupstream = \"u\"\nnext_upstream_tries = 1\n{route_extra}\n\
         [upstream.u]\nbalance = \"round_robin\"\nservers = [{}]\n\n{check}",
        list.join(", ")
    )
}

/// Writes `text` as the directory's configuration file and starts the proxy from
/// it, with `common::WORKERS` workers, as the binary does.
fn start_file(dir: &TempDir, text: &str) -> Running {
    dir.write("config.toml", text);
    let config = Config::load(&dir.file())
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{text}"));
    switchyard::start(config, common::WORKERS).expect("proxy starts")
}

/// The admin API over one keep-alive connection.
struct Api {
    client: Client,
    token: Option<String>,
}

impl Api {
    fn new(running: &Running) -> Api {
        Api {
            client: Client::new(running.admin.expect("admin listener bound")),
            token: None,
        }
    }

    /// One request: status and JSON body (a non-JSON body comes back as a string).
    async fn call(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let r = self
            .client
            .send(method, path, &headers, body.map(str::as_bytes))
            .await
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
        let v = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
        (r.status.as_u16(), v)
    }

    /// `POST /upstreams/NAME/servers` with `entry`.
    async fn add(&mut self, upstream: &str, entry: &Value) -> (u16, Value) {
        let path = format!("/upstreams/{upstream}/servers");
        self.call("POST", &path, Some(&entry.to_string())).await
    }

    /// `DELETE /upstreams/NAME/servers/ADDR`.
    async fn remove(&mut self, upstream: &str, addr: &str) -> (u16, Value) {
        self.call(
            "DELETE",
            &format!("/upstreams/{upstream}/servers/{addr}"),
            None,
        )
        .await
    }

    /// `GET /upstreams/NAME`, which must answer 200.
    async fn upstream(&mut self, name: &str) -> Value {
        let (status, body) = self.call("GET", &format!("/upstreams/{name}"), None).await;
        assert_eq!(status, 200, "GET /upstreams/{name}: {body}");
        body
    }
}

/// `{"addr": ADDR}`: the smallest server entry.
fn entry(addr: SocketAddr) -> Value {
    json!({ "addr": addr.to_string() })
}

/// The servers of an upstream as the API lists them: (address, source), in order.
fn listed(body: &Value) -> Vec<(String, String)> {
    body["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no server list in {body}"))
        .iter()
        .map(|s| {
            (
                s["addr"].as_str().expect("addr").to_owned(),
                s["source"].as_str().expect("source").to_owned(),
            )
        })
        .collect()
}

/// The entry of server `addr` in an upstream's answer.
fn server(body: &Value, addr: SocketAddr) -> &Value {
    body["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no server list in {body}"))
        .iter()
        .find(|s| s["addr"] == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} not listed in {body}"))
}

/// (address, source) pairs, for comparing with `listed`.
fn expect(list: &[(SocketAddr, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, s)| (a.to_string(), (*s).to_owned()))
        .collect()
}

/// The long-lived state of server `addr` of upstream `u` in the current snapshot.
fn state(running: &Running, addr: SocketAddr) -> Arc<ServerState> {
    let snap = running.shared.load();
    let (_, u) = snap.upstream("u").expect("upstream u");
    let s = u
        .servers
        .iter()
        .find(|s| s.state.addr() == addr)
        .unwrap_or_else(|| panic!("no server {addr} in u"));
    Arc::clone(&s.state)
}

/// Whether `addr` is among upstream `u`'s servers in the current snapshot.
fn has(running: &Running, addr: SocketAddr) -> bool {
    let snap = running.shared.load();
    snap.upstream("u")
        .is_some_and(|(_, u)| u.servers.iter().any(|s| s.state.addr() == addr))
}

/// `n` GETs of `/` over one keep-alive connection; the answering origins in order.
async fn origins_of(client: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = client.get("/").await.expect("answer");
        assert_eq!(r.status, 200, "{r:?}");
        out.push(r.origin().unwrap_or("<none>").to_owned());
    }
    out
}

/// How many times each origin answered.
fn tally(seen: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in seen {
        *m.entry(s.clone()).or_default() += 1;
    }
    m
}

/// Every sample of a load run that is not a 200 from an origin, described.
fn failures(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| !s.ok() || s.origin().is_none())
        .map(|s| format!("{:?} after {:?}", s.result, s.done - s.sent))
        .collect()
}

/// Waits (bounded) until `cond` holds; panics naming `what` otherwise.
async fn until(limit: Duration, what: &str, cond: impl FnMut() -> bool) -> Duration {
    eventually(limit, cond)
        .await
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

// ---------------------------------------------------------------------------------
// 1. The acceptance test
// ---------------------------------------------------------------------------------

/// Changes through the admin API in the acceptance test.
const CHANGES: usize = 1000;

/// How long the acceptance test's slow requests take at their origin.
const SLOW: Duration = Duration::from_millis(1500);

/// 1 000 admin changes (add e1, add e2, remove e1, remove e2, over and over) to a
/// round-robin upstream of three file servers — a and b healthy, d failing its
/// checks — while four keep-alive clients send continuously; then one admin-added
/// server kept, one file server removed, and a file reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_admin_changes_under_load() {
    let started = Instant::now();
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let d = Origin::start("d").await;
    d.set_health(Mode::Status(500));
    let e1 = Origin::start("e1").await;
    let e2 = Origin::start("e2").await;
    let dir = TempDir::new("membership-load");
    let file = [a.addr(), b.addr(), d.addr()];
    let running = start_file(&dir, &config(ADMIN, &file, "", CHECK_100MS));
    let proxy = running.addr("public").expect("public bound");
    let mut api = Api::new(&running);

    // d's first check fails: it is down before any load starts, so it must never
    // see a request.
    let d_state = state(&running, d.addr());
    until(Duration::from_secs(3), "d marked down", || {
        d_state.active() == Active::Down
    })
    .await;
    let body = api.upstream("u").await;
    let d_view = server(&body, d.addr()).clone();
    assert_eq!(d_view["active"], "down", "{body}");
    let d_transitions = d_view["transitions"].clone();
    let d_requests = d.requests();
    let a_state = state(&running, a.addr());
    let b_state = state(&running, b.addr());

    let load = Load::start(proxy, 4, "/", Duration::ZERO);
    until(Duration::from_secs(5), "load under way", || {
        a.requests() > 100
    })
    .await;

    let mut extras: Vec<SocketAddr> = Vec::new();
    // The `requests` counter the proxy keeps for a and b, as each answer shows it.
    let mut counted = [0u64; 2];
    let mut slow: Vec<(tokio::task::JoinHandle<Result<_, String>>, String)> = Vec::new();
    // The servers the slow requests landed on, with how many each, and the earliest
    // moment one of them can end: when its origin answers, `SLOW` after the
    // request arrived there.
    let mut slow_on: Vec<(SocketAddr, usize)> = Vec::new();
    let mut slow_until = Instant::now();
    let mut changes_during_slow = 0;
    let changes_started = Instant::now();
    for i in 0..CHANGES {
        // The slow requests start while the extras are out, so that they land on a
        // or b, the servers that stay: their in-flight counts must hold through
        // the changes that follow.
        if i == 300 {
            for k in 0..2 {
                let id = format!("slow-{k}");
                let header = id.clone();
                let path = format!("/?delay={}ms", SLOW.as_millis());
                let task = tokio::spawn(async move {
                    Client::new(proxy)
                        .send("GET", &path, &[("x-req", &header)], None)
                        .await
                });
                slow.push((task, id));
            }
            let arrived = |o: &Origin, id: &str| {
                o.hits()
                    .iter()
                    .find(|h| h.req.as_deref() == Some(id))
                    .map(|h| h.at)
            };
            let mut first = None;
            for (_, id) in &slow {
                until(Duration::from_secs(5), "slow request at an origin", || {
                    arrived(&a, id).is_some() || arrived(&b, id).is_some()
                })
                .await;
                let at = arrived(&a, id).or_else(|| arrived(&b, id)).unwrap();
                first = Some(first.map_or(at, |f: Instant| f.min(at)));
            }
            slow_until = first.unwrap() + SLOW;
            for o in [&a, &b] {
                let n = slow
                    .iter()
                    .filter(|(_, id)| arrived(o, id).is_some())
                    .count();
                if n > 0 {
                    slow_on.push((o.addr(), n));
                }
            }
        }
        let extra = if i % 2 == 0 { e1.addr() } else { e2.addr() };
        let (status, body) = if i % 4 < 2 {
            extras.push(extra);
            api.add("u", &entry(extra)).await
        } else {
            extras.retain(|e| *e != extra);
            api.remove("u", &extra.to_string()).await
        };
        assert_eq!(status, 200, "change {i}: {body}");
        let mut want: Vec<(SocketAddr, &str)> = file.iter().map(|f| (*f, "file")).collect();
        want.extend(extras.iter().map(|e| (*e, "admin")));
        assert_eq!(listed(&body), expect(&want), "change {i}: {body}");

        // Health kept: d stays down, with no state change since it went down.
        let dv = server(&body, d.addr());
        assert_eq!(dv["active"], "down", "change {i}: {body}");
        assert_eq!(dv["transitions"], d_transitions, "change {i}: {body}");
        // State kept: a and b stay up, and their request counters only grow.
        for (k, f) in [a.addr(), b.addr()].into_iter().enumerate() {
            let view = server(&body, f);
            assert_eq!(view["active"], "up", "change {i}: {body}");
            let n = view["requests"].as_u64().expect("requests");
            assert!(
                n >= counted[k],
                "change {i}: {f} requests {} → {n}",
                counted[k]
            );
            counted[k] = n;
        }
        // In flight kept: each slow request counts on its server until it ends,
        // which is not before its origin answers (an answer received before then
        // was made before then).
        if Instant::now() < slow_until {
            changes_during_slow += 1;
            for (addr, n) in &slow_on {
                let inflight = server(&body, *addr)["inflight"].as_u64().expect("inflight");
                assert!(
                    inflight >= *n as u64,
                    "change {i}: {addr} shows {inflight} in flight, {n} slow request(s) there"
                );
            }
        }
        // Now and then, let the extra just added pass its check and serve, so that
        // the removals that follow hit servers that have requests in flight.
        if i % 100 == 0 {
            let o = if extra == e1.addr() { &e1 } else { &e2 };
            let before = o.requests();
            until(Duration::from_secs(3), "added server serves", || {
                o.requests() > before
            })
            .await;
        }
    }
    let changes_took = changes_started.elapsed();
    assert!(extras.is_empty());
    for (task, id) in slow {
        let r = task
            .await
            .expect("slow client")
            .expect("slow request answered");
        assert_eq!(r.status, 200, "{id}: {r:?}");
    }
    assert!(
        changes_during_slow >= 20,
        "only {changes_during_slow} changes while the slow requests were in flight"
    );
    let samples = load.finish().await;
    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );

    // Round robin: a and b alternate exactly whatever joins or leaves around them
    // (the new cycle resumes after the last server picked; d's and warming
    // servers' turns pass to the next server). Only picks racing a swap — a
    // request that loaded the old snapshot picking from the old cycle after the
    // new one was positioned — can give one of them a turn twice, a step of a
    // random walk either way. Measured over 40 runs: gaps of 0 to 17 requests (of
    // 7 000 to 13 000 each); with 4 000 changes, up to 40. A cycle that restarted
    // at each change instead would favour a by about 380 here. The bound, fixed,
    // is three times the largest gap seen.
    let (a_n, b_n) = (a.requests(), b.requests());
    let gap = a_n.abs_diff(b_n);
    let bound = 50;
    eprintln!(
        "{} requests in {:?} during {CHANGES} changes in {changes_took:?} \
         ({changes_during_slow} of them while the slow requests ran): \
         a {a_n}, b {b_n}, gap {gap}; e1 {}, e2 {}",
        samples.len(),
        samples
            .last()
            .map(|s| s.done - samples[0].sent)
            .unwrap_or_default(),
        e1.requests(),
        e2.requests(),
    );
    assert!(gap <= bound, "a {a_n}, b {b_n}: gap {gap} > {bound}");
    assert!(e1.requests() > 0 && e2.requests() > 0);
    assert_eq!(d.requests(), d_requests, "the down server got requests");
    // The same state objects as before the changes, idle again.
    assert!(Arc::ptr_eq(&a_state, &state(&running, a.addr())));
    assert!(Arc::ptr_eq(&b_state, &state(&running, b.addr())));
    until(Duration::from_secs(2), "a and b idle", || {
        a_state.inflight() == 0 && b_state.inflight() == 0
    })
    .await;

    // 2. One admin-added server stays, one file server goes, and the file is
    // reloaded (a harmless change: a route timeout), under load again.
    let load = Load::start(proxy, 4, "/", Duration::ZERO);
    let (status, body) = api.add("u", &entry(e1.addr())).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.remove("u", &b.addr().to_string()).await;
    assert_eq!(status, 200, "{body}");
    let want = [(a.addr(), "file"), (d.addr(), "file"), (e1.addr(), "admin")];
    assert_eq!(listed(&body), expect(&want), "{body}");
    let e1_state = state(&running, e1.addr());
    until(Duration::from_secs(3), "e1 up", || e1_state.is_up()).await;
    // b's last requests (picked before its removal) end; it gets no more.
    until(Duration::from_secs(3), "b idle", || b_state.inflight() == 0).await;
    let b_final = b.requests();

    dir.write(
        "config.toml",
        &config(ADMIN, &file, "read_timeout = \"30s\"\n", CHECK_100MS),
    );
    let (status, body) = api.call("POST", "/config/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], true, "{body}");
    let body = api.upstream("u").await;
    assert_eq!(listed(&body), expect(&want), "after the reload: {body}");
    assert_eq!(server(&body, d.addr())["active"], "down", "{body}");
    assert_eq!(
        server(&body, d.addr())["transitions"],
        d_transitions,
        "{body}"
    );
    assert!(Arc::ptr_eq(&a_state, &state(&running, a.addr())));
    assert!(Arc::ptr_eq(&e1_state, &state(&running, e1.addr())));
    let (a_then, e1_then) = (a.requests(), e1.requests());
    until(
        Duration::from_secs(3),
        "a and e1 serve after the reload",
        || a.requests() > a_then + 100 && e1.requests() > e1_then + 100,
    )
    .await;
    let samples = load.finish().await;
    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        b.requests(),
        b_final,
        "the removed file server got requests"
    );
    assert_eq!(d.requests(), d_requests, "the down server got requests");
    eprintln!("whole test: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------
// 2. The API's answers
// ---------------------------------------------------------------------------------

/// Adding and removing through the API: the answers list the upstream's servers
/// with their source and state; an unknown upstream or server is a 404, a second
/// add of an address a 409, a bad body or entry a 400 naming the key, and none of
/// the refusals changes anything.
#[tokio::test]
async fn the_api_adds_removes_and_refuses() {
    let o = common::start_origins(&["a", "e", "f"]).await;
    let (a, e, f) = (o[0], o[1], o[2]);
    let dir = TempDir::new("membership-api");
    let running = start_file(&dir, &config(ADMIN, &[a], "", ""));
    let proxy = running.addr("public").unwrap();
    let mut api = Api::new(&running);

    let (status, body) = api
        .add("u", &json!({ "addr": e.to_string(), "weight": 2 }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "u", "{body}");
    assert_eq!(
        listed(&body),
        expect(&[(a, "file"), (e, "admin")]),
        "{body}"
    );
    let ev = server(&body, e);
    assert_eq!(ev["weight"], 2, "{body}");
    // Without health checks and slow start there is nothing to wait for.
    assert_eq!(ev["active"], "up", "{body}");
    assert_eq!(ev["eligible"], true, "{body}");
    assert_eq!(ev["inflight"], 0, "{body}");
    assert_eq!(ev["requests"], 0, "{body}");
    assert_eq!(api.upstream("u").await, body, "GET agrees with the answer");
    let seen = origins_of(&mut Client::new(proxy), 30).await;
    let t = tally(&seen);
    assert_eq!((t["a"], t["e"]), (10, 20), "{seen:?}");

    // Other keys of a file entry work too.
    let (status, body) = api
        .add(
            "u",
            &json!({ "addr": f.to_string(), "weight": 1, "backup": true, "max_fails": 0,
                     "fail_timeout": "5s", "slow_start": "0s" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server(&body, f)["backup"], true, "{body}");
    let before = api.upstream("u").await;

    let refusals: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/upstreams/nope/servers".into(),
            Some(entry(e).to_string()),
            404,
            "no such upstream",
        ),
        (
            "DELETE",
            format!("/upstreams/nope/servers/{e}"),
            None,
            404,
            "no upstream named",
        ),
        (
            "DELETE",
            "/upstreams/u/servers/127.0.0.1:1".into(),
            None,
            404,
            "not a server",
        ),
        (
            "DELETE",
            "/upstreams/u/servers/bogus".into(),
            None,
            400,
            "not an ip:port",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some(entry(e).to_string()),
            409,
            "already a server",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some(entry(a).to_string()),
            409,
            "already a server",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some("{\"addr\": ".into()),
            400,
            "",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some("[1, 2]".into()),
            400,
            "",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some(json!({ "addr": "127.0.0.1:9", "weight": 0 }).to_string()),
            400,
            "weight: must be between 1 and 1000",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some(json!({ "addr": "127.0.0.1:9", "weight": 5000 }).to_string()),
            400,
            "weight: must be between 1 and 1000",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some(json!({ "addr": "127.0.0.1:9", "slow_start": "soon" }).to_string()),
            400,
            "slow_start",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some(json!({ "addr": "not an address" }).to_string()),
            400,
            "addr: invalid socket address",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some(json!({ "addr": "127.0.0.1:9", "colour": "red" }).to_string()),
            400,
            "colour",
        ),
        (
            "POST",
            "/upstreams/u/servers".into(),
            Some(json!({ "weight": 2 }).to_string()),
            400,
            "addr",
        ),
    ];
    for (method, path, body, want, says) in refusals {
        let (status, answer) = api.call(method, &path, body.as_deref()).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {answer}");
        assert!(
            answer.to_string().contains(says),
            "{method} {path} {body:?}: {answer} does not say {says:?}"
        );
    }
    assert_eq!(
        api.upstream("u").await,
        before,
        "a refusal changed the list"
    );

    // Removing: the new list; a second removal is a 404.
    let (status, body) = api.remove("u", &e.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        listed(&body),
        expect(&[(a, "file"), (f, "admin")]),
        "{body}"
    );
    let (status, body) = api.remove("u", &e.to_string()).await;
    assert_eq!(status, 404, "{body}");
    // A file server can be removed, and added back: with the file's settings.
    let (status, body) = api.remove("u", &a.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(listed(&body), expect(&[(f, "admin")]), "{body}");
    // The backup serves alone.
    let seen = origins_of(&mut Client::new(proxy), 3).await;
    assert_eq!(seen, ["f", "f", "f"]);
    let (status, body) = api
        .add("u", &json!({ "addr": a.to_string(), "weight": 9 }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        listed(&body),
        expect(&[(a, "file"), (f, "admin")]),
        "{body}"
    );
    assert_eq!(server(&body, a)["weight"], 1, "{body}");
    // An upstream left without servers answers 503 and recovers when one comes.
    for gone in [a, f] {
        let (status, body) = api.remove("u", &gone.to_string()).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(listed(&api.upstream("u").await), expect(&[]));
    let r = Client::new(proxy).get("/").await.expect("answer");
    assert_eq!(r.status, 503, "{r:?}");
    let (status, body) = api.add("u", &entry(e)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origins_of(&mut Client::new(proxy), 2).await, ["e", "e"]);
}

// ---------------------------------------------------------------------------------
// 3. Warming
// ---------------------------------------------------------------------------------

/// A server added to a health-checked upstream waits, warming, for one passing
/// check, and the checker probes it at once rather than at the next round (10 s
/// away here). Its check takes 300 ms: requests sent meanwhile all go to a, and
/// its first request arrives after its check was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_server_warms_up_until_its_first_check_passes() {
    let a = Origin::start("a").await;
    let n = Origin::start("n").await;
    let slow_check = Duration::from_millis(300);
    n.set_health(Mode::Slow(slow_check));
    let check = "[upstream.u.health_check]\ninterval = \"10s\"\ntimeout = \"2s\"\n\n";
    let dir = TempDir::new("membership-warming");
    let running = start_file(&dir, &config(ADMIN, &[a.addr()], "", check));
    let proxy = running.addr("public").unwrap();
    let mut api = Api::new(&running);
    let mut client = Client::new(proxy);
    assert_eq!(origins_of(&mut client, 2).await, ["a", "a"]);

    let added = Instant::now();
    let (status, body) = api.add("u", &entry(n.addr())).await;
    assert_eq!(status, 200, "{body}");
    let nv = server(&body, n.addr());
    assert_eq!(nv["active"], "warming", "{body}");
    assert_eq!(nv["eligible"], false, "{body}");
    // Requests until n answers one.
    let mut sent = 0;
    loop {
        let r = client.get("/").await.expect("answer");
        assert_eq!(r.status, 200, "{r:?}");
        sent += 1;
        if r.origin() == Some("n") {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(3),
            "n never served ({sent} requests)"
        );
    }
    let joined = added.elapsed();
    let hits = n.hits();
    let check_at = hits
        .iter()
        .find(|h| h.is_health())
        .expect("n was checked")
        .at;
    let first = hits.iter().find(|h| !h.is_health()).expect("n served").at;
    assert!(
        first >= check_at + slow_check,
        "n served {:?} after its check arrived, before the check's answer",
        first - check_at
    );
    let while_warming = a
        .request_times()
        .iter()
        .filter(|t| **t > added && **t < check_at + slow_check)
        .count();
    assert!(
        while_warming > 5,
        "only {while_warming} requests while n warmed"
    );
    assert!(joined < Duration::from_secs(2), "n joined after {joined:?}");
    assert_eq!(api.upstream("u").await["servers"][1]["active"], "up");
    let t = tally(&origins_of(&mut client, 20).await);
    assert_eq!((t["a"], t["n"]), (10, 10));
    eprintln!("n joined after {joined:?}; {while_warming} requests went to a meanwhile");
}

// ---------------------------------------------------------------------------------
// 4. A request whose server is removed
// ---------------------------------------------------------------------------------

/// A request in flight on a server that is removed finishes (200, from that
/// server), counted on the server's state until it ends; no new request goes
/// there. Once for an admin-added server, once for a file server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_server_lets_its_request_finish() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let c = Origin::start("c").await;
    let dir = TempDir::new("membership-inflight");
    let running = start_file(&dir, &config(ADMIN, &[a.addr(), b.addr()], "", ""));
    let proxy = running.addr("public").unwrap();
    let mut api = Api::new(&running);
    let (status, body) = api.add("u", &entry(c.addr())).await;
    assert_eq!(status, 200, "{body}");
    let mut client = Client::new(proxy);
    // Nothing was picked yet: the cycle a b c starts at a, so the third is c's.
    assert_eq!(origins_of(&mut client, 2).await, ["a", "b"]);

    let origins = [&a, &b, &c];
    for (k, expected) in [(0, Some("c")), (1, None)] {
        let id = format!("slow-{k}");
        let header = id.clone();
        let slow = tokio::spawn(async move {
            Client::new(proxy)
                .send("GET", "/?delay=600ms", &[("x-req", &header)], None)
                .await
        });
        let mut on = None;
        until(Duration::from_secs(3), "slow request at an origin", || {
            on = origins
                .iter()
                .find(|o| o.req_ids().contains(&id))
                .map(|o| (o.addr(), o.name().to_owned()));
            on.is_some()
        })
        .await;
        let (addr, name) = on.unwrap();
        if let Some(e) = expected {
            assert_eq!(name, e);
        }
        let st = state(&running, addr);
        assert_eq!(st.inflight(), 1);
        let (status, body) = api.remove("u", &addr.to_string()).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            listed(&body).iter().all(|(s, _)| *s != addr.to_string()),
            "{body}"
        );
        assert!(!has(&running, addr));
        assert_eq!(st.inflight(), 1, "the request no longer counts on {name}");
        let seen = origins_of(&mut client, 10).await;
        assert!(!seen.contains(&name), "{name} got requests: {seen:?}");
        assert!(!slow.is_finished(), "the slow request ended too soon");
        let r = slow.await.unwrap().expect("the slow request is answered");
        assert_eq!((r.status.as_u16(), r.origin()), (200, Some(name.as_str())));
        until(Duration::from_secs(2), "in-flight count back to 0", || {
            st.inflight() == 0
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------
// 5. The token
// ---------------------------------------------------------------------------------

/// With `admin.token`, adding and removing need it: 401 without it or with a wrong
/// one, and nothing changes; with it, both work.
#[tokio::test]
async fn the_membership_endpoints_need_the_token() {
    let o = common::start_origins(&["a", "e"]).await;
    let (a, e) = (o[0], o[1]);
    let dir = TempDir::new("membership-token");
    let head = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\n";
    let running = start_file(&dir, &config(head, &[a], "", ""));
    let mut api = Api::new(&running);
    for token in [None, Some("wrong"), Some("s3cre")] {
        api.token = token.map(str::to_owned);
        let (status, body) = api.add("u", &entry(e)).await;
        assert_eq!(status, 401, "add with {token:?}: {body}");
        let (status, body) = api.remove("u", &a.to_string()).await;
        assert_eq!(status, 401, "remove with {token:?}: {body}");
    }
    assert!(
        has(&running, a) && !has(&running, e),
        "a 401 changed the list"
    );
    api.token = Some("s3cret".into());
    let (status, body) = api.add("u", &entry(e)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.remove("u", &a.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(listed(&body), expect(&[(e, "admin")]), "{body}");
}

// ---------------------------------------------------------------------------------
// 6. Weights
// ---------------------------------------------------------------------------------

/// An added server's weight counts as a file server's does: with a (weight 1, from
/// the file), e1 (1) and e3 (3), round robin gives exactly 1:1:3 over whole cycles.
#[tokio::test]
async fn an_added_servers_weight_sets_its_share() {
    let o = common::start_origins(&["a", "e1", "e3"]).await;
    let dir = TempDir::new("membership-weight");
    let running = start_file(&dir, &config(ADMIN, &[o[0]], "", ""));
    let proxy = running.addr("public").unwrap();
    let mut api = Api::new(&running);
    let mut client = Client::new(proxy);
    assert_eq!(origins_of(&mut client, 3).await, ["a", "a", "a"]);
    for (addr, weight) in [(o[2], 3), (o[1], 1)] {
        let (status, body) = api
            .add("u", &json!({ "addr": addr.to_string(), "weight": weight }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(server(&body, addr)["weight"], weight, "{body}");
    }
    // 20 cycles of 5 picks, from wherever the cycle resumed.
    let seen = origins_of(&mut client, 100).await;
    let t = tally(&seen);
    assert_eq!((t["a"], t["e1"], t["e3"]), (20, 20, 60), "{seen:?}");
}

// ---------------------------------------------------------------------------------
// 7. The round-robin sequence across a change
// ---------------------------------------------------------------------------------

/// On one connection, with file servers a and b: after a request to a, adding c
/// makes the next request go to b (the cycle carries on), then c; removing the
/// server picked last carries on after the one before it; adding one back carries
/// on after the last one picked.
#[tokio::test]
async fn round_robin_carries_on_across_changes() {
    let o = common::start_origins(&["a", "b", "c"]).await;
    let (a, b, c) = (o[0], o[1], o[2]);
    let dir = TempDir::new("membership-sequence");
    let running = start_file(&dir, &config(ADMIN, &[a, b], "", ""));
    let proxy = running.addr("public").unwrap();
    let mut api = Api::new(&running);
    let mut client = Client::new(proxy);
    assert_eq!(origins_of(&mut client, 1).await, ["a"]);

    let (status, body) = api.add("u", &entry(c)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origins_of(&mut client, 4).await, ["b", "c", "a", "b"]);
    // b, just picked, leaves: the cycle a c carries on after a, the one before.
    let (status, body) = api.remove("u", &b.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(origins_of(&mut client, 4).await, ["c", "a", "c", "a"]);
    // b is back (the file lists it: it returns in the file's place, a b c).
    let (status, body) = api.add("u", &entry(b)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        listed(&body),
        expect(&[(a, "file"), (b, "file"), (c, "admin")])
    );
    assert_eq!(origins_of(&mut client, 4).await, ["b", "c", "a", "b"]);
}

// ---------------------------------------------------------------------------------
// 8. Discovery
// ---------------------------------------------------------------------------------

/// A discovery source driven by the test: each message is the complete list of an
/// upstream's servers it knows now.
struct Channel {
    name: &'static str,
    rx: tokio::sync::mpsc::UnboundedReceiver<(&'static str, Vec<SocketAddr>)>,
}

impl Discover for Channel {
    fn name(&self) -> &str {
        self.name
    }

    fn run(self: Box<Self>, report: Report) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut rx = self.rx;
            while let Some((upstream, addrs)) = rx.recv().await {
                let servers: Vec<ServerConfig> = addrs
                    .into_iter()
                    .flat_map(|a| Config::server_entry(entry(a)).expect("a valid entry"))
                    .collect();
                report.servers(upstream, servers);
            }
        })
    }
}

/// Servers a discovery source reports join with the source's name as their source
/// and serve; an empty report withdraws them; they survive a file reload, and a
/// report for an upstream the file does not have yet applies once it does.
#[tokio::test]
async fn discovered_servers_join_leave_and_survive_a_reload() {
    let o = common::start_origins(&["a", "x", "y", "w", "z"]).await;
    let (a, x, y, w, z) = (o[0], o[1], o[2], o[3], o[4]);
    let dir = TempDir::new("membership-discovery");
    let running = start_file(&dir, &config(ADMIN, &[a], "", ""));
    let proxy = running.addr("public").unwrap();
    let mut api = Api::new(&running);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    running.discover(Box::new(Channel {
        name: "registry",
        rx,
    }));
    let mut client = Client::new(proxy);

    tx.send(("u", vec![x, y])).unwrap();
    until(Duration::from_secs(2), "x and y join", || {
        has(&running, x) && has(&running, y)
    })
    .await;
    let body = api.upstream("u").await;
    assert_eq!(
        listed(&body),
        expect(&[(a, "file"), (x, "registry"), (y, "registry")]),
        "{body}"
    );
    let t = tally(&origins_of(&mut client, 30).await);
    assert_eq!((t["a"], t["x"], t["y"]), (10, 10, 10));

    tx.send(("u", vec![])).unwrap();
    until(Duration::from_secs(2), "x and y leave", || {
        !has(&running, x) && !has(&running, y)
    })
    .await;
    assert_eq!(listed(&api.upstream("u").await), expect(&[(a, "file")]));
    assert_eq!(origins_of(&mut client, 3).await, ["a", "a", "a"]);

    // A list for an upstream the file lacks is kept for later; the next report
    // (handled after it, in order) tells when it has been taken in.
    tx.send(("later", vec![z])).unwrap();
    tx.send(("u", vec![x])).unwrap();
    until(Duration::from_secs(2), "x joins", || has(&running, x)).await;
    let with_later = format!(
        "{}[[route]]\npath = \"/later/\"\nupstream = \"later\"\n\n\
         [upstream.later]\nservers = [{{ addr = \"{w}\" }}]\n\n",
        config(ADMIN, &[a], "read_timeout = \"30s\"\n", "")
    );
    dir.write("config.toml", &with_later);
    let (status, body) = api.call("POST", "/config/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        listed(&api.upstream("u").await),
        expect(&[(a, "file"), (x, "registry")])
    );
    assert_eq!(
        listed(&api.upstream("later").await),
        expect(&[(w, "file"), (z, "registry")])
    );
    let t = tally(&origins_of(&mut client, 4).await);
    assert_eq!((t["a"], t["x"]), (2, 2));
    let mut later = Vec::new();
    for _ in 0..4 {
        let r = client.get("/later/").await.expect("answer");
        later.push(r.origin().unwrap_or("<none>").to_owned());
    }
    let t = tally(&later);
    assert_eq!((t["w"], t["z"]), (2, 2), "{later:?}");
}

/// The admin API can remove a discovered server: it stays out while the source
/// keeps listing it, and, as for a file server, the removal lapses once the
/// source stops listing it, so that the server joins again when it comes back.
#[tokio::test]
async fn an_admin_removal_of_a_discovered_server_lasts_while_it_is_listed() {
    let o = common::start_origins(&["a", "x", "y"]).await;
    let (a, x, y) = (o[0], o[1], o[2]);
    let dir = TempDir::new("membership-discovery-removal");
    let running = start_file(&dir, &config(ADMIN, &[a], "", ""));
    let mut api = Api::new(&running);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    running.discover(Box::new(Channel { name: "dns", rx }));

    tx.send(("u", vec![x])).unwrap();
    until(Duration::from_secs(2), "x joins", || has(&running, x)).await;
    let (status, body) = api.remove("u", &x.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(listed(&body), expect(&[(a, "file")]));
    // Still listed (with y now): x stays out.
    tx.send(("u", vec![x, y])).unwrap();
    until(Duration::from_secs(2), "y joins", || has(&running, y)).await;
    assert!(!has(&running, x), "x is back while removed");
    // No longer listed, then listed again: x joins.
    tx.send(("u", vec![y])).unwrap();
    tx.send(("u", vec![x, y])).unwrap();
    until(Duration::from_secs(2), "x joins again", || has(&running, x)).await;
    assert_eq!(
        listed(&api.upstream("u").await),
        expect(&[(a, "file"), (x, "dns"), (y, "dns")])
    );
}

// ---------------------------------------------------------------------------------
// 9. Reload rules
// ---------------------------------------------------------------------------------

/// What a file reload does to the admin's changes (`src/membership/mod.rs`): a
/// removed file server stays removed while the file lists it and the removal
/// lapses once it does not; an admin-added server the file starts listing is the
/// file's from then on; the admin's changes to an upstream the file drops are
/// forgotten.
#[tokio::test]
async fn reloads_keep_the_admins_changes_by_the_rules() {
    let o = common::start_origins(&["a", "b", "c", "v1", "v2"]).await;
    let (a, b, c, v1, v2) = (o[0], o[1], o[2], o[3], o[4]);
    let dir = TempDir::new("membership-rules");
    let with_v = |servers: &[SocketAddr]| {
        format!(
            "{}[[route]]\npath = \"/v/\"\nupstream = \"v\"\n\n\
             [upstream.v]\nservers = [{{ addr = \"{v1}\" }}]\n\n",
            config(ADMIN, servers, "", "")
        )
    };
    let running = start_file(&dir, &with_v(&[a, b]));
    let mut api = Api::new(&running);
    let reload = |text: String| {
        dir.write("config.toml", &text);
        running.control.reload().expect("reload");
    };

    assert_eq!(api.remove("u", &b.to_string()).await.0, 200);
    assert_eq!(api.add("u", &entry(c)).await.0, 200);
    assert_eq!(api.add("v", &entry(v2)).await.0, 200);
    reload(with_v(&[a, b]));
    assert_eq!(
        listed(&api.upstream("u").await),
        expect(&[(a, "file"), (c, "admin")]),
        "the same file keeps both changes"
    );
    // The file lists c too: it is the file's now (b stays removed).
    reload(with_v(&[a, b, c]));
    assert_eq!(
        listed(&api.upstream("u").await),
        expect(&[(a, "file"), (c, "file")])
    );
    // The file drops b, then lists it again: the removal has lapsed.
    reload(with_v(&[a, c]));
    reload(with_v(&[a, b, c]));
    assert_eq!(
        listed(&api.upstream("u").await),
        expect(&[(a, "file"), (b, "file"), (c, "file")])
    );
    // The file drops c: gone, not an admin server again.
    reload(with_v(&[a, b]));
    assert_eq!(
        listed(&api.upstream("u").await),
        expect(&[(a, "file"), (b, "file")])
    );
    assert_eq!(
        listed(&api.upstream("v").await),
        expect(&[(v1, "file"), (v2, "admin")])
    );
    // Upstream v leaves the file and comes back: without the admin's server.
    reload(config(ADMIN, &[a, b], "", ""));
    let (status, _) = api.call("GET", "/upstreams/v", None).await;
    assert_eq!(status, 404);
    reload(with_v(&[a, b]));
    assert_eq!(listed(&api.upstream("v").await), expect(&[(v1, "file")]));
}

/// A server that leaves and comes back before the checker has seen it go (a
/// discovery source flapping: two reports back to back) is a new server: warming,
/// and probed at once like any other that joins, not at the next round (10 s
/// away).
#[tokio::test]
async fn a_server_back_at_once_is_probed_at_once() {
    let o = common::start_origins(&["a", "n"]).await;
    let (a, n) = (o[0], o[1]);
    let check = "[upstream.u.health_check]\ninterval = \"10s\"\ntimeout = \"2s\"\n\n";
    let dir = TempDir::new("membership-flap");
    let running = start_file(&dir, &config(ADMIN, &[a], "", check));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    running.discover(Box::new(Channel { name: "dns", rx }));
    tx.send(("u", vec![n])).unwrap();
    until(Duration::from_secs(2), "n joins", || has(&running, n)).await;
    // Only weak references here: a strong one would keep the state alive, and the
    // server would come back with it (as it does while requests hold it).
    let mut last = Arc::downgrade(&state(&running, n));
    until(Duration::from_secs(2), "n up", || {
        state(&running, n).is_up()
    })
    .await;

    for round in 0..5 {
        // Both reports reach the source's task together: the checker runs after.
        tx.send(("u", vec![])).unwrap();
        tx.send(("u", vec![n])).unwrap();
        until(Duration::from_secs(2), "n replaced", || {
            has(&running, n) && !std::ptr::eq(last.as_ptr(), Arc::as_ptr(&state(&running, n)))
        })
        .await;
        last = Arc::downgrade(&state(&running, n));
        let took = eventually(Duration::from_secs(3), || state(&running, n).is_up()).await;
        assert!(
            took.is_some(),
            "round {round}: n back but still {} after 3 s",
            state(&running, n).active().as_str()
        );
    }
}

/// A change keeps the connection pools of the servers that stay: 100 changes, with
/// requests to a between them, and a still serves over the connection it opened
/// first (one per worker at most).
#[tokio::test]
async fn changes_keep_the_connection_pools() {
    let (a, accepted) = common::counting_origin(None).await;
    let e = common::start_origins(&["e"]).await[0];
    let dir = TempDir::new("membership-pools");
    let running = start_file(&dir, &config(ADMIN, &[a], "", ""));
    let proxy = running.addr("public").unwrap();
    let mut api = Api::new(&running);
    let mut client = Client::new(proxy);
    let mut to_a = 0;
    for i in 0..100 {
        let (status, body) = if i % 2 == 0 {
            api.add("u", &entry(e)).await
        } else {
            api.remove("u", &e.to_string()).await
        };
        assert_eq!(status, 200, "change {i}: {body}");
        for _ in 0..2 {
            let r = client.get("/").await.expect("answer");
            assert_eq!(r.status, 200, "{r:?}");
            to_a += usize::from(r.origin().is_none());
        }
    }
    assert!(to_a >= 100, "a answered only {to_a} requests");
    let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        opened <= common::WORKERS,
        "{opened} connections to a for {to_a} requests"
    );
}
