//! Health end to end: active checks (fall/rise), passive ejection (max_fails within
//! fail_timeout, then one trial), the ejection cap, retries to the next server (and
//! never for a POST that reached an origin), backup servers, slow start, the
//! immediate 503 when nothing is eligible, and the configuration errors of the new
//! keys.
//!
//! The origins are `common::control::Origin`s: the test stops, restarts and steers
//! them while the proxy serves real clients, and reads back what reached each one.
//! Health intervals are 100 ms so that state changes take a fraction of a second;
//! waits for a state change poll with a deadline, and the bounds asserted are the
//! configured ones plus slack for a loaded 2-core machine.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::control::{eventually, refusing_port, Client, Load, Mode, Origin, Sample};
use http::StatusCode;
use switchyard::upstream::ServerState;
use switchyard::{Config, Running};

/// Bound on waiting for something the test caused.
const EVENT: Duration = Duration::from_secs(5);
/// Pause between two requests of one load client: a steady load that leaves the
/// health checker's timers room on a 2-core machine.
const PACE: Duration = Duration::from_millis(3);
/// The health-check interval of these tests, and its default jitter (10 %).
const INTERVAL: Duration = Duration::from_millis(100);
const JITTER: f64 = 0.10;
/// Scheduling slack allowed on top of a configured bound.
const SLACK: Duration = Duration::from_millis(300);

/// A proxy with one "public" listener and `body` (routes and upstreams).
async fn proxy(body: &str) -> (Running, SocketAddr) {
    let toml = format!("{}{body}", common::listeners(&["public"]));
    let running = common::start_proxy(&toml).await;
    let addr = running.addr("public").expect("public listener");
    (running, addr)
}

/// `servers = [...]`: each origin address with extra inline-table keys.
fn servers(list: &[(SocketAddr, &str)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(a, extra)| {
            if extra.is_empty() {
                format!("{{ addr = \"{a}\" }}")
            } else {
                format!("{{ addr = \"{a}\", {extra} }}")
            }
        })
        .collect();
    format!("servers = [{}]\n", items.join(", "))
}

/// A route to upstream `u` with `list` as servers and fast checks (100 ms,
/// fall 1, rise 1).
fn checked(list: &[(SocketAddr, &str)]) -> String {
    format!(
        "[[route]]\nupstream = \"u\"\n\n[upstream.u]\n{}\n\
         [upstream.u.health_check]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfall = 1\nrise = 1\n",
        servers(list)
    )
}

/// Waits until `name` has been absent from ten answers in a row, which equal-weight
/// round-robin over it and one other server cannot do while `name` is in.
async fn until_gone(client: &mut Client, name: &str, what: &str) {
    let mut streak = 0;
    until_answer(client, intervals(1) + SLACK * 3, what, |r| {
        streak = if r.origin() == Some(name) {
            0
        } else {
            streak + 1
        };
        streak >= 10
    })
    .await;
}

/// The long-lived state of the server at `addr` in the current snapshot.
fn state(running: &Running, addr: SocketAddr) -> Arc<ServerState> {
    let snap = running.shared.load();
    snap.upstreams
        .iter()
        .flat_map(|u| u.servers.iter())
        .find(|s| s.state.addr() == addr)
        .map(|s| Arc::clone(&s.state))
        .unwrap_or_else(|| panic!("no server {addr} in the snapshot"))
}

/// The health-check interval scaled by `n` and the upper end of the jitter.
fn intervals(n: u32) -> Duration {
    INTERVAL.mul_f64(f64::from(n) * (1.0 + JITTER))
}

/// The requests that did not get a 200, each with its time since `t0`.
fn failures(samples: &[Sample], t0: Instant) -> Vec<String> {
    samples
        .iter()
        .filter(|s| !s.ok())
        .map(|s| match s.sent.checked_duration_since(t0) {
            Some(after) => format!("{:?} sent at +{after:?}", s.result),
            None => format!("{:?} sent at -{:?}", s.result, t0 - s.sent),
        })
        .collect()
}

/// Sends `GET /` until the answer satisfies `done`, for at most `limit`; returns how
/// long that took.
async fn until_answer(
    client: &mut Client,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&common::control::Reply) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let r = client.get("/").await.expect("proxy answers");
        if done(&r) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Which origin answered each of `n` sequential `GET /`, counted.
async fn origins_of(client: &mut Client, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = client.get("/").await.expect("proxy answers");
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        *seen
            .entry(r.origin().unwrap_or("<proxy>").to_owned())
            .or_default() += 1;
    }
    seen
}

// ---------------------------------------------------------------------------------
// Active checks
// ---------------------------------------------------------------------------------

/// One of three origins dies under a steady load of 8 concurrent clients and comes
/// back: no client request fails; active checks (interval 100 ms, fall 2, rise 2)
/// mark it down within fall × interval and let traffic back within rise × interval
/// of its restart, after `rise` passing checks. Passive ejection is off
/// (`max_fails = 0`) so that only the active checks take the origin out; requests
/// picked for it meanwhile are refused at connect and go to another server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_origin_under_load_fails_no_request_and_rejoins() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let c = Origin::start("c").await;
    let (running, proxy) = proxy(&format!(
        "[[route]]\nupstream = \"u\"\n\n[upstream.u]\n{}\n\
         [upstream.u.health_check]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfall = 2\nrise = 2\n",
        servers(&[
            (a.addr(), "max_fails = 0"),
            (b.addr(), "max_fails = 0"),
            (c.addr(), "max_fails = 0"),
        ])
    ))
    .await;

    let load = Load::start(proxy, 8, "/", PACE);
    // c takes its share before it dies.
    eventually(EVENT, || c.requests() >= 30)
        .await
        .expect("c serves traffic before the kill");
    assert!(state(&running, c.addr()).is_up());

    let killed = Instant::now();
    c.stop().await;
    eventually(EVENT, || !state(&running, c.addr()).is_up())
        .await
        .expect("c is marked down");
    let down_at = killed.elapsed();
    println!("c marked down {down_at:?} after it died");
    assert!(
        down_at <= intervals(2) + SLACK,
        "c marked down {down_at:?} after it died; fall × interval is {:?}",
        intervals(2)
    );
    // fall = 2: one failed check is not enough, and checks are an interval apart.
    assert!(
        down_at >= INTERVAL.mul_f64(1.0 - JITTER) - Duration::from_millis(15),
        "c marked down {down_at:?} after it died, before a second check could fail"
    );

    // The load goes on against a and b while c is down.
    let (a0, b0) = (a.requests(), b.requests());
    eventually(EVENT, || a.requests() + b.requests() >= a0 + b0 + 100)
        .await
        .expect("a and b serve while c is down");
    assert!(!state(&running, c.addr()).is_up(), "c came back while dead");

    let restarted = Instant::now();
    c.restart().await;
    let first = c
        .wait_hit(EVENT, |h| !h.is_health() && h.at >= restarted)
        .await;
    let back_after = first.at - restarted;
    println!("c took traffic {back_after:?} after its restart");
    assert!(
        back_after <= intervals(2) + SLACK,
        "c took traffic {back_after:?} after its restart; rise × interval is {:?}",
        intervals(2)
    );
    let passed_before = c
        .hits()
        .iter()
        .filter(|h| h.is_health() && h.at >= restarted && h.at <= first.at)
        .count();
    assert!(
        passed_before >= 2,
        "c took traffic after {passed_before} passing check(s); rise is 2"
    );

    // It serves again under the same load.
    let c0 = c.requests();
    eventually(EVENT, || c.requests() >= c0 + 30)
        .await
        .expect("c serves again");
    let samples = load.finish().await;

    let failed = failures(&samples, killed);
    assert!(
        failed.is_empty(),
        "{} of {} client requests failed (times since the kill; restart at +{:?}), e.g. {:?}",
        failed.len(),
        samples.len(),
        restarted - killed,
        &failed[..failed.len().min(5)]
    );
    assert!(samples.len() >= 300, "only {} requests ran", samples.len());
    // Clients saw c again after its restart.
    let from_c_after = samples
        .iter()
        .filter(|s| s.origin() == Some("c") && s.sent >= restarted)
        .count();
    assert!(
        from_c_after >= 30,
        "{from_c_after} answers from c after its restart"
    );
}

// ---------------------------------------------------------------------------------
// Passive ejection
// ---------------------------------------------------------------------------------

/// An origin answering 502 (listed in `next_upstream`) with max_fails = 2 and
/// fail_timeout = 1 s, among two good ones, under 4 concurrent clients for 2.6 s:
/// every client gets 200 from a good origin; the bad one sees its first failures
/// (max_fails, plus at most the requests already on their way), then exactly one
/// trial per fail_timeout, each at least fail_timeout after the failure before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_origin_gets_max_fails_then_one_trial_per_fail_timeout() {
    const CLIENTS: usize = 4;
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let bad = Origin::start("bad").await;
    bad.set(Mode::Status(502));
    let extra = "max_fails = 2, fail_timeout = \"1s\"";
    let (_running, proxy) = proxy(&format!(
        "[[route]]\nupstream = \"u\"\nnext_upstream = [\"error\", \"timeout\", \"http_502\"]\n\n\
         [upstream.u]\n{}",
        servers(&[(a.addr(), extra), (b.addr(), extra), (bad.addr(), extra)])
    ))
    .await;

    let load = Load::start(proxy, CLIENTS, "/", Duration::from_millis(1));
    let started = load.started;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let samples = load.finish().await;

    let failed = failures(&samples, started);
    assert!(
        failed.is_empty(),
        "{} of {} client requests failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        samples.iter().all(|s| s.origin() != Some("bad")),
        "a client got the bad origin's answer"
    );
    assert!(samples.len() >= 500, "only {} requests ran", samples.len());

    let times = bad.request_times();
    assert!(times.len() >= 2, "bad origin saw {} requests", times.len());
    // Bursts: requests less than half a fail_timeout apart.
    let mut bursts: Vec<Vec<Instant>> = vec![vec![times[0]]];
    for w in times.windows(2) {
        if w[1] - w[0] < Duration::from_millis(500) {
            bursts.last_mut().unwrap().push(w[1]);
        } else {
            bursts.push(vec![w[1]]);
        }
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("bad origin: {} requests, gaps {gaps:?}", times.len());
    let first = bursts[0].len();
    assert!(
        (2..=2 + CLIENTS - 1).contains(&first),
        "first burst of {first} requests; max_fails is 2 (+ at most {} in flight); gaps {gaps:?}",
        CLIENTS - 1
    );
    let trials = &bursts[1..];
    assert!(
        trials.iter().all(|t| t.len() == 1),
        "more than one trial per period: {:?}",
        trials.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        (1..=2).contains(&trials.len()),
        "{} trials in 2.6 s with fail_timeout = 1s; gaps {gaps:?}",
        trials.len()
    );
    for (before, trial) in bursts.iter().zip(trials) {
        let gap = trial[0] - *before.last().unwrap();
        assert!(
            gap >= Duration::from_millis(950) && gap <= Duration::from_millis(1000) + SLACK * 2,
            "trial {gap:?} after the failure before it; fail_timeout is 1s"
        );
    }
}

/// Envoy's cap: of four primaries, three answer 502 (max_fails = 1, fail_timeout
/// long enough that no trial comes); with max_ejected_percent = 50 only two are
/// ejected, so exactly one of the three failing origins keeps receiving traffic, as
/// does the good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_cap_keeps_half_of_the_primaries() {
    let good = Origin::start("good").await;
    let bad = [
        Origin::start("bad1").await,
        Origin::start("bad2").await,
        Origin::start("bad3").await,
    ];
    for o in &bad {
        o.set(Mode::Status(502));
    }
    let extra = "max_fails = 1, fail_timeout = \"30s\"";
    let (_running, proxy) = proxy(&format!(
        "[[route]]\nupstream = \"u\"\nnext_upstream = [\"error\", \"timeout\", \"http_502\"]\n\n\
         [upstream.u]\nmax_ejected_percent = 50\n{}",
        servers(&[
            (good.addr(), extra),
            (bad[0].addr(), extra),
            (bad[1].addr(), extra),
            (bad[2].addr(), extra),
        ])
    ))
    .await;

    let mut client = Client::new(proxy);
    // Phase 1: every failing origin is picked at least once and fails.
    for _ in 0..40 {
        let r = client.get("/").await.expect("proxy answers");
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::BAD_GATEWAY,
            "{r:?}"
        );
    }
    assert!(
        bad.iter().all(|o| o.requests() >= 1),
        "each failing origin was tried: {:?}",
        bad.iter().map(Origin::requests).collect::<Vec<_>>()
    );
    // Phase 2: who still gets traffic.
    let before: Vec<usize> = bad.iter().map(Origin::requests).collect();
    let good_before = good.requests();
    for _ in 0..60 {
        let r = client.get("/").await.expect("proxy answers");
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::BAD_GATEWAY,
            "{r:?}"
        );
    }
    let after: Vec<usize> = bad.iter().map(Origin::requests).collect();
    let serving: Vec<usize> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    let still_in = serving.iter().filter(|&&n| n > 0).count();
    assert_eq!(
        still_in, 1,
        "failing origins still receiving requests (per origin {serving:?}): \
         max_ejected_percent = 50 of 4 primaries ejects exactly 2"
    );
    assert!(
        serving.iter().any(|&n| n >= 10),
        "the failing origin that cannot be ejected gets its round-robin share: {serving:?}"
    );
    assert!(good.requests() - good_before >= 30);
}

// ---------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------

/// POSTs to four origins: one answers 502, one hangs up after reading the request,
/// one never answers (past read_timeout), one is fine. With `next_upstream` listing
/// http_502 and timeout but not non_idempotent, each POST reaches exactly one
/// origin, and its client gets that origin's outcome. GETs in the same setup are
/// retried (some reach several origins), so the count would see a resent POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_that_reached_an_origin_is_never_sent_again() {
    let o = [
        Origin::start("fails").await,
        Origin::start("resets").await,
        Origin::start("stalls").await,
        Origin::start("fine").await,
    ];
    o[0].set(Mode::Status(502));
    o[1].set(Mode::Reset);
    o[2].set(Mode::Stall);
    let (_running, proxy) = proxy(&format!(
        "[[route]]\nupstream = \"u\"\nread_timeout = \"300ms\"\n\
         next_upstream = [\"error\", \"timeout\", \"http_502\"]\nnext_upstream_tries = 4\n\n\
         [upstream.u]\n{}",
        servers(&[
            (o[0].addr(), "max_fails = 0"),
            (o[1].addr(), "max_fails = 0"),
            (o[2].addr(), "max_fails = 0"),
            (o[3].addr(), "max_fails = 0"),
        ])
    ))
    .await;

    const CLIENTS: usize = 8;
    const EACH: usize = 4;
    let body = vec![b'p'; 1000];
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut client = Client::new(proxy);
                let mut out = Vec::new();
                for i in 0..EACH {
                    let id = format!("post-{c}-{i}");
                    let r = client
                        .send("POST", "/submit", &[("x-req", &id)], Some(&body))
                        .await;
                    out.push((id, r));
                }
                out
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }

    let seen_at = |id: &str| -> Vec<&str> {
        o.iter()
            .flat_map(|origin| {
                origin
                    .req_ids()
                    .into_iter()
                    .filter(|r| r == id)
                    .map(move |_| origin.name())
            })
            .collect()
    };
    for (id, r) in &results {
        let at = seen_at(id);
        assert_eq!(at.len(), 1, "{id} reached {at:?}");
        let r = r.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"));
        let expected = match at[0] {
            "fails" | "resets" => StatusCode::BAD_GATEWAY,
            "stalls" => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::OK,
        };
        assert_eq!(r.status, expected, "{id} reached {} and got {r:?}", at[0]);
        if expected == StatusCode::OK {
            assert_eq!(r.body, "fine received 1000 bytes\n");
        }
    }
    for origin in &o {
        assert!(
            origin.count(&http::Method::POST, "/submit") >= 1,
            "no POST reached {}: the test did not exercise it",
            origin.name()
        );
    }

    // The same failures retry a GET (so the count above would catch a resent POST).
    let gets: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                let id = format!("get-{i}");
                let _ = Client::new(proxy)
                    .send("GET", "/read", &[("x-req", &id)], None)
                    .await;
                id
            })
        })
        .collect();
    let mut resent = 0;
    for g in gets {
        let id = g.await.unwrap();
        if seen_at(&id).len() > 1 {
            resent += 1;
        }
    }
    assert!(
        resent >= 1,
        "no GET was retried: retries are not working here"
    );
}

/// A POST whose connection was refused was never sent, so it goes to the next
/// server: every POST succeeds with its whole body delivered, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_refused_at_connect_is_retried() {
    let (refused, _held) = refusing_port();
    let fine = Origin::start("fine").await;
    let (running, proxy) = proxy(&format!(
        "[[route]]\nupstream = \"u\"\n\n[upstream.u]\n{}",
        servers(&[(refused, "max_fails = 0"), (fine.addr(), "max_fails = 0")])
    ))
    .await;

    let body = vec![b'q'; 20_000];
    let mut client = Client::new(proxy);
    for i in 0..10 {
        let id = format!("post-{i}");
        let r = client
            .send("POST", "/submit", &[("x-req", &id)], Some(&body))
            .await
            .expect("proxy answers");
        assert_eq!(r.status, StatusCode::OK, "{id}: {r:?}");
        assert_eq!(r.body, "fine received 20000 bytes\n", "{id}");
    }
    let ids = fine.req_ids();
    for i in 0..10 {
        let id = format!("post-{i}");
        assert_eq!(ids.iter().filter(|r| **r == id).count(), 1, "{id}: {ids:?}");
    }
    // Round-robin picked the refusing server first for some of them.
    assert!(
        state(&running, refused).requests() >= 3,
        "the refusing server was tried {} times",
        state(&running, refused).requests()
    );
}

// ---------------------------------------------------------------------------------
// Backup, slow start, nothing eligible
// ---------------------------------------------------------------------------------

/// Primaries a and b, backup c, all health-checked (fall 1, rise 1). c gets nothing
/// while either primary passes its checks, takes everything once both fail, and
/// steps back as soon as one primary passes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_while_every_primary_is_down() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let c = Origin::start("c").await;
    let (_running, proxy) = proxy(&checked(&[
        (a.addr(), ""),
        (b.addr(), ""),
        (c.addr(), "backup = true"),
    ]))
    .await;
    let mut client = Client::new(proxy);

    let seen = origins_of(&mut client, 30).await;
    assert_eq!(
        seen.get("c"),
        None,
        "backup used while all primaries are up: {seen:?}"
    );
    assert!(seen.contains_key("a") && seen.contains_key("b"), "{seen:?}");

    // a fails its checks: b carries everything, the backup still nothing. Round-robin
    // over a and b alternates, so ten answers in a row without a means a is out.
    a.set_health(Mode::Status(503));
    until_gone(&mut client, "a", "a leaves").await;
    let seen = origins_of(&mut client, 30).await;
    assert_eq!(
        seen.get("b"),
        Some(&30),
        "with a down, b alone serves: {seen:?}"
    );
    assert_eq!(c.requests(), 0, "backup used while b is up");

    // b fails too: the backup takes over.
    b.set_health(Mode::Status(503));
    until_answer(
        &mut client,
        intervals(1) + SLACK * 3,
        "backup takes over",
        |r| r.origin() == Some("c"),
    )
    .await;
    let seen = origins_of(&mut client, 30).await;
    assert_eq!(
        seen.get("c"),
        Some(&30),
        "every primary down: the backup serves: {seen:?}"
    );

    // b passes again: the backup steps back.
    b.set_health(Mode::Normal);
    until_answer(&mut client, intervals(1) + SLACK * 3, "b returns", |r| {
        r.origin() == Some("b")
    })
    .await;
    let c_before = c.requests();
    let seen = origins_of(&mut client, 30).await;
    assert_eq!(seen.get("b"), Some(&30), "b back, a still down: {seen:?}");
    assert_eq!(c.requests(), c_before, "backup still used after b returned");
}

/// One of two servers fails its checks; under 8 concurrent clients every request
/// still goes to the other: a 503 is for when nothing is eligible, not for a pick
/// that happened to land on the down server's turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_down_is_never_a_503_under_concurrency() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let (_running, proxy) = proxy(&checked(&[(a.addr(), ""), (b.addr(), "")])).await;
    let mut client = Client::new(proxy);
    b.set_health(Mode::Status(503));
    until_gone(&mut client, "b", "b leaves").await;

    let load = Load::start(proxy, 8, "/", Duration::from_millis(1));
    let started = load.started;
    let a0 = a.requests();
    eventually(EVENT, || a.requests() >= a0 + 1500)
        .await
        .expect("load runs");
    let samples = load.finish().await;
    let failed = failures(&samples, started);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed with a up, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(samples.iter().all(|s| s.origin() == Some("a")));
}

/// b recovers with slow_start = 2s next to a (equal weights, round-robin): its share
/// of a steady load starts near 10 % of its weight and reaches its full half once
/// the ramp is over. With its weight ramping as r(t) = 0.1 + 0.9·t/2s, its share is
/// r/(1+r) if a keeps its full weight, or r/2 if b's round-robin turns are skipped
/// with probability 1−r: 10–17 % over the first 0.5 s, 27–35 % around 1 s, 50 %
/// after 2 s. The bounds below hold for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_recovered_server() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let (_running, proxy) = proxy(&checked(&[
        (a.addr(), ""),
        (b.addr(), "slow_start = \"2s\""),
    ]))
    .await;
    let mut client = Client::new(proxy);
    b.set_health(Mode::Status(503));
    until_gone(&mut client, "b", "b leaves").await;

    let load = Load::start(proxy, 4, "/", Duration::from_millis(2));
    let a0 = a.requests();
    eventually(EVENT, || a.requests() >= a0 + 100)
        .await
        .expect("load runs");
    let recovered = Instant::now();
    b.set_health(Mode::Normal);
    let first = b
        .wait_hit(EVENT, |h| !h.is_health() && h.at >= recovered)
        .await
        .at;
    // Measuring a ramp takes its duration: let the load run through it.
    tokio::time::sleep(Duration::from_millis(3050).saturating_sub(first.elapsed())).await;
    let samples = load.finish().await;
    let failed = failures(&samples, recovered);
    assert!(
        failed.is_empty(),
        "{} requests failed (times since b passes its checks again; its first request \
         at +{:?}), e.g. {:?}",
        failed.len(),
        first - recovered,
        &failed[..failed.len().min(5)]
    );

    let share = |from_ms: u64, to_ms: u64| {
        let (from, to) = (
            first + Duration::from_millis(from_ms),
            first + Duration::from_millis(to_ms),
        );
        let window: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.sent >= from && s.sent < to)
            .collect();
        let n = window.len();
        assert!(
            n >= 60,
            "only {n} requests between {from_ms} and {to_ms} ms"
        );
        window.iter().filter(|s| s.origin() == Some("b")).count() as f64 / n as f64
    };
    let early = share(0, 500);
    let middle = share(800, 1200);
    let late = share(2300, 3000);
    let report = format!("b's share: early {early:.3}, middle {middle:.3}, late {late:.3}");
    println!("{report}");
    assert!(early > 0.02 && early < 0.30, "{report} (expected ~0.17)");
    assert!(
        middle > early && middle < 0.46,
        "{report} (expected ~0.35 in the middle)"
    );
    assert!(
        (0.40..=0.60).contains(&late),
        "{report} (expected ~0.5 after the ramp)"
    );
}

/// Every server fails its active checks: the proxy answers 503 with a Retry-After
/// (whole seconds) well under 100 ms, without trying any origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_is_503_with_retry_after_at_once() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let (_running, proxy) = proxy(&checked(&[(a.addr(), ""), (b.addr(), "")])).await;
    let mut client = Client::new(proxy);
    assert_eq!(client.get("/").await.unwrap().status, StatusCode::OK);

    a.set_health(Mode::Status(500));
    b.set_health(Mode::Status(500));
    until_answer(&mut client, intervals(1) + SLACK * 3, "all down", |r| {
        r.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;

    let sent_before = a.requests() + b.requests();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let start = Instant::now();
        let r = client.get("/").await.expect("proxy answers");
        slowest = slowest.max(start.elapsed());
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
        assert_eq!(r.origin(), None);
        let retry_after = r.header("retry-after").expect("a Retry-After header");
        let secs: u64 = retry_after
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After {retry_after:?} is not whole seconds"));
        assert!(secs <= 60, "Retry-After {secs}s");
    }
    // A fresh connection gets the same at once.
    let start = Instant::now();
    let r = Client::new(proxy).get("/").await.expect("proxy answers");
    slowest = slowest.max(start.elapsed());
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.header("retry-after").is_some());

    assert!(
        slowest < Duration::from_millis(100),
        "503 took up to {slowest:?}"
    );
    assert_eq!(
        a.requests() + b.requests(),
        sent_before,
        "an origin was tried while every server was down"
    );
}

// ---------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------

const ADDR: &str = "127.0.0.1:9001";

fn config_with(upstream_extra: &str, server_extra: &str, route_extra: &str, check: &str) -> String {
    let server_extra = if server_extra.is_empty() {
        String::new()
    } else {
        format!(", {server_extra}")
    };
    let check = if check.is_empty() {
        String::new()
    } else {
        format!("\n[upstream.api.health_check]\n{check}\n")
    };
    format!(
        "{}[[route]]\nupstream = \"api\"\n{route_extra}\n\n\
         [upstream.api]\n{upstream_extra}\nservers = [{{ addr = \"{ADDR}\"{server_extra} }}]\n{check}",
        common::listeners(&["public"])
    )
}

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("x.toml"), text).map_err(|e| e.to_string())
}

#[test]
fn every_health_key_is_accepted() {
    let text = config_with(
        "balance = \"least_conn\"\nmax_ejected_percent = 30",
        "weight = 2, max_fails = 3, fail_timeout = \"30s\", backup = false, slow_start = \"20s\"",
        "next_upstream = [\"error\", \"timeout\", \"http_500\", \"http_502\", \"http_503\", \
         \"http_504\", \"http_429\", \"non_idempotent\"]\nnext_upstream_tries = 2\n\
         next_upstream_timeout = \"10s\"\nretry_body_limit = \"1MiB\"",
        "path = \"/healthz\"\nmethod = \"HEAD\"\nhost = \"api.internal\"\nport = 9100\n\
         interval = \"2s\"\ntimeout = \"1s\"\njitter = \"20%\"\nrise = 3\nfall = 2\n\
         expect_status = \"200,204,300-399\"\nexpect_body = \"ok\"",
    );
    parse(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    // Empty next_upstream (only connect failures retry) and max_fails = 0 are valid.
    let text = config_with("", "max_fails = 0", "next_upstream = []", "");
    parse(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
}

#[test]
fn bad_health_keys_are_reported_with_their_path() {
    // (upstream extra, server extra, route extra, health_check body, path, word in message)
    let cases: &[(&str, &str, &str, &str, &str, &str)] = &[
        ("", "", "", "rise = 0", "upstream.api.health_check.rise", ""),
        ("", "", "", "fall = 0", "upstream.api.health_check.fall", ""),
        (
            "",
            "",
            "",
            "expect_status = \"abc\"",
            "upstream.api.health_check.expect_status",
            "abc",
        ),
        (
            "",
            "",
            "",
            "expect_status = \"200-99x\"",
            "upstream.api.health_check.expect_status",
            "",
        ),
        (
            "",
            "",
            "",
            "jitter = \"150%\"",
            "upstream.api.health_check.jitter",
            "150%",
        ),
        (
            "",
            "",
            "",
            "interval = \"soon\"",
            "upstream.api.health_check.interval",
            "soon",
        ),
        (
            "",
            "",
            "",
            "timeout = \"never\"",
            "upstream.api.health_check.timeout",
            "never",
        ),
        (
            "",
            "",
            "",
            "healthy_threshold = 2",
            "upstream.api.health_check",
            "healthy_threshold",
        ),
        (
            "",
            "",
            "next_upstream = [\"error\", \"http_418\"]",
            "",
            "route[0].next_upstream",
            "http_418",
        ),
        (
            "",
            "",
            "next_upstream_tries = -1",
            "",
            "route[0].next_upstream_tries",
            "",
        ),
        (
            "",
            "",
            "next_upstream_timeout = \"later\"",
            "",
            "route[0].next_upstream_timeout",
            "later",
        ),
        (
            "",
            "",
            "retry_body_limit = \"lots\"",
            "",
            "route[0].retry_body_limit",
            "lots",
        ),
        (
            "",
            "fail_timeout = \"long\"",
            "",
            "",
            "upstream.api.servers[0].fail_timeout",
            "long",
        ),
        (
            "",
            "slow_start = \"fast\"",
            "",
            "",
            "upstream.api.servers[0].slow_start",
            "fast",
        ),
        (
            "",
            "max_fails = -1",
            "",
            "",
            "upstream.api.servers[0].max_fails",
            "",
        ),
        (
            "max_ejected_percent = 101",
            "",
            "",
            "",
            "upstream.api.max_ejected_percent",
            "",
        ),
    ];
    for (up, server, route, check, path, word) in cases {
        let text = config_with(up, server, route, check);
        let err = match parse(&text) {
            Ok(_) => panic!("accepted a bad value for {path}:\n{text}"),
            Err(e) => e,
        };
        assert!(
            err.contains(&format!("x.toml: {path}")),
            "error does not name {path}:\n{err}\n---\n{text}"
        );
        assert!(err.contains(word), "error does not quote {word:?}:\n{err}");
    }

    // Several problems are all reported at once.
    let text = config_with(
        "",
        "slow_start = \"fast\"",
        "next_upstream = [\"http_418\"]",
        "rise = 0\njitter = \"150%\"\nexpect_status = \"abc\"",
    );
    let err = parse(&text).expect_err("bad configuration");
    for path in [
        "upstream.api.health_check.rise",
        "upstream.api.health_check.jitter",
        "upstream.api.health_check.expect_status",
        "upstream.api.servers[0].slow_start",
        "route[0].next_upstream",
    ] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
}

/// A server added by a reload to a health-checked upstream takes no traffic until
/// its first check passes (Envoy's warming); servers that were there keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_added_by_a_reload_warms_up_before_traffic() {
    let a = Origin::start("a").await;
    let n = Origin::start("n").await;
    // Its first check hangs until the 500 ms check timeout: a server that took
    // traffic before passing a check would get some of the requests sent meanwhile.
    n.set_health(Mode::Stall);
    let (running, proxy) = proxy(&checked(&[(a.addr(), "")])).await;
    let mut client = Client::new(proxy);
    assert_eq!(origins_of(&mut client, 10).await.get("a"), Some(&10));

    let text = format!(
        "{}{}",
        common::listeners(&["public"]),
        checked(&[(a.addr(), ""), (n.addr(), "")])
    );
    let added = Config::parse(Path::new("<reload>"), &text).expect("valid");
    running.shared.apply(added).unwrap();
    assert_eq!(
        state(&running, n.addr()).active(),
        switchyard::upstream::Active::Warming
    );
    let seen = origins_of(&mut client, 40).await;
    assert_eq!(
        seen.get("a"),
        Some(&40),
        "a warming server got traffic: {seen:?}"
    );
    assert_eq!(n.requests(), 0);

    // Its check passes: it joins.
    n.set_health(Mode::Normal);
    until_answer(&mut client, intervals(2) + SLACK * 3, "n joins", |r| {
        r.origin() == Some("n")
    })
    .await;
    assert!(state(&running, n.addr()).is_up());
}

/// Passive ejection rests a server for `fail_timeout` (30 s here), but when active
/// checks pass `rise` times during the rest, the next request is its trial: a
/// briefly restarted origin serves again within about `rise` intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_checks_cut_a_passive_rest_short() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let (running, proxy) = proxy(&format!(
        "[[route]]\nupstream = \"u\"\n\n[upstream.u]\n{}\n\
         [upstream.u.health_check]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nfall = 50\nrise = 2\n",
        servers(&[(a.addr(), ""), (b.addr(), "max_fails = 1, fail_timeout = \"30s\"")])
    ))
    .await;
    let mut client = Client::new(proxy);
    b.stop().await;
    // A request that meets the refused port is retried on a; b is ejected.
    let b_state = state(&running, b.addr());
    until_answer(&mut client, Duration::from_secs(5), "b ejected", |_| {
        b_state.ejected()
    })
    .await;
    assert!(
        b_state.is_up(),
        "fall = 50: the checks alone never mark b down"
    );
    b.restart().await;
    let back = until_answer(
        &mut client,
        intervals(2) + SLACK * 3,
        "b serves again",
        |r| r.origin() == Some("b"),
    )
    .await;
    assert!(!b_state.ejected(), "its trial succeeded");
    assert!(back < Duration::from_secs(30));
}
