//! Per-server `max_conns` and the upstream's queue (issue 14, HAProxy's server
//! `maxconn` and `timeout queue`), end to end: origins that hold every request
//! until the test lets it go (`Mode::Hold`), so a server is exactly full, and the
//! queue's length read from the live upstream. Every wait is on an event (the
//! origin receiving a request, the queue growing); time is measured only where it
//! is the subject (the queue's timeout, the time waited in the log), with
//! tolerances: the proxy runs on its own runtimes, which a paused test clock does
//! not drive (the queue's own unit tests run on a paused clock).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::control::{eventually, Client, Mode, Origin, Reply};
use common::{sample, TempDir};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use switchyard::{Config, Running};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Long enough for a loaded CI machine; events are awaited, not waited out.
const LIMIT: Duration = Duration::from_secs(10);

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";
const PUBLIC: &str = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n";

async fn start(text: &str) -> Running {
    let config = Config::parse(std::path::Path::new("queue.toml"), text)
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{text}"));
    switchyard::start(config, common::WORKERS).expect("proxy starts")
}

/// A proxy with one route `r` to upstream `u`: `servers` is its list, `extra` more
/// of its keys (`queue = …`), `head` what goes before the listener.
async fn proxy(head: &str, servers: &str, extra: &str) -> Running {
    start(&format!(
        "{head}{PUBLIC}[[route]]\nname = \"r\"\npath = \"/\"\nupstream = \"u\"\n\n\
         [upstream.u]\n{extra}\nservers = {servers}\n"
    ))
    .await
}

/// An origin named `name` that holds every request until the test releases it.
async fn holding(name: &str) -> Origin {
    let o = Origin::start(name).await;
    o.set_requests(Mode::Hold);
    o
}

/// A server list of `o` alone, with `max_conns = max`.
fn capped(o: &Origin, max: u32) -> String {
    format!("[{{ addr = \"{}\", max_conns = {max} }}]", o.addr())
}

/// Requests waiting in upstream `u`'s queue.
fn queued(running: &Running) -> usize {
    let snapshot = running.shared.load();
    let (_, u) = snapshot.upstream("u").expect("upstream u");
    u.queue.len()
}

async fn until_queued(running: &Running, n: usize) {
    eventually(LIMIT, || queued(running) == n)
        .await
        .unwrap_or_else(|| panic!("{} waiting, expected {n}", queued(running)));
}

/// `GET /` with `x-req: id` on a connection of its own, in a task.
fn spawn_get(addr: SocketAddr, id: &str) -> JoinHandle<Result<Reply, String>> {
    spawn_get_path(addr, "/", id)
}

/// `GET path` with `x-req: id` on a connection of its own, in a task.
fn spawn_get_path(addr: SocketAddr, path: &str, id: &str) -> JoinHandle<Result<Reply, String>> {
    let (path, id) = (path.to_owned(), id.to_owned());
    tokio::spawn(async move {
        Client::new(addr)
            .send("GET", &path, &[("x-req", id.as_str())], None)
            .await
    })
}

async fn answer(task: JoinHandle<Result<Reply, String>>) -> Reply {
    task.await
        .expect("client task")
        .unwrap_or_else(|e| panic!("no answer: {e}"))
}

async fn admin_get(running: &Running, path: &str) -> String {
    let r = Client::new(running.admin.expect("admin listener"))
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
    assert_eq!(r.status, 200, "{path}");
    r.body
}

/// `N` requests in flight at a server with `max_conns = N`: the next one waits in
/// the queue, reaches the server only when a slot frees, and the server never has
/// more than `N` at once.
#[tokio::test]
async fn max_conns_is_exact_at_the_edge() {
    let o = holding("a").await;
    let running = proxy("", &capped(&o, 3), "").await;
    let addr = running.addr("public").unwrap();
    let first: Vec<_> = (0..3).map(|i| spawn_get(addr, &format!("r{i}"))).collect();
    o.wait_busy(3, LIMIT).await;
    let fourth = spawn_get(addr, "r3");
    until_queued(&running, 1).await;
    // Queued, so not sent: the origin still has exactly the first three.
    assert_eq!(o.requests(), 3);
    assert_eq!(o.busy(), 3);
    // A slot frees: the fourth goes, and the server is at three again.
    o.release(1);
    o.wait_requests(4, LIMIT).await;
    until_queued(&running, 0).await;
    assert_eq!(o.busy(), 3);
    o.release(3);
    for t in first.into_iter().chain([fourth]) {
        assert_eq!(answer(t).await.status, 200);
    }
    assert_eq!(o.max_busy(), 3, "never more than max_conns at once");
    running.shutdown(Duration::from_secs(1)).await;
}

/// Requests that join the queue in a known order reach the server in that order,
/// one per freed slot.
#[tokio::test]
async fn queued_requests_are_served_in_arrival_order() {
    let o = holding("a").await;
    let running = proxy("", &capped(&o, 1), "").await;
    let addr = running.addr("public").unwrap();
    let mut tasks = vec![spawn_get(addr, "r0")];
    o.wait_requests(1, LIMIT).await;
    // Each joins once the one before it is in line: the order is known.
    for i in 1..=6 {
        tasks.push(spawn_get(addr, &format!("r{i}")));
        until_queued(&running, i).await;
    }
    for i in 1..=6 {
        o.release(1);
        o.wait_requests(i + 1, LIMIT).await;
        assert_eq!(o.busy(), 1);
    }
    o.release(1);
    for t in tasks {
        assert_eq!(answer(t).await.status, 200);
    }
    let order: Vec<String> = (0..=6).map(|i| format!("r{i}")).collect();
    assert_eq!(o.req_ids(), order);
    assert_eq!(queued(&running), 0);
    running.shutdown(Duration::from_secs(1)).await;
}

/// A wait past `queue.timeout` is a 503 with Retry-After, counted as a queue
/// refusal, in the queue histogram and the log line, and charged to no server:
/// the server stays up (with `max_fails = 1`, one failure would rest it).
#[tokio::test]
async fn a_wait_past_the_queue_timeout_is_a_503_that_charges_no_server() {
    let o = holding("a").await;
    let dir = TempDir::new("queue-timeout");
    let log = dir.path("access.log");
    let running = proxy(
        &format!("{ADMIN}[access_log]\npath = \"{}\"\n\n", log.display()),
        &format!(
            "[{{ addr = \"{}\", max_conns = 1, max_fails = 1 }}]",
            o.addr()
        ),
        "queue = { timeout = \"300ms\" }",
    )
    .await;
    let addr = running.addr("public").unwrap();
    let held = spawn_get(addr, "held");
    o.wait_requests(1, LIMIT).await;
    let sent = Instant::now();
    let r = Client::new(addr).get("/").await.expect("an answer");
    let took = sent.elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        o.requests(),
        1,
        "the refused request never reached the server"
    );
    assert_eq!(queued(&running), 0);

    let metrics = admin_get(&running, "/metrics").await;
    let limited = sample(
        &metrics,
        "switchyard_requests_limited_total",
        &[("route", "r"), ("reason", "queue")],
    );
    assert_eq!(limited, Some(1.0), "{metrics}");
    let waits = sample(
        &metrics,
        "switchyard_upstream_queue_duration_seconds_count",
        &[("upstream", "u")],
    );
    assert_eq!(waits, Some(1.0), "{metrics}");
    let status: Value = serde_json::from_str(&admin_get(&running, "/status.json").await).unwrap();
    let server = &status["upstreams"][0]["servers"][0];
    assert_eq!(server["state"], "up", "{server}");
    assert_eq!(server["errors"], 0, "{server}");
    assert_eq!(server["inflight"], 1, "{server}");
    assert_eq!(server["max_conns"], 1, "{server}");
    assert_eq!(status["upstreams"][0]["queue_length"], 0);
    assert_eq!(status["upstreams"][0]["queue_size"], 1000);

    o.release(1);
    assert_eq!(answer(held).await.status, 200);
    // Still eligible: the next request is served.
    o.release(1);
    assert_eq!(Client::new(addr).get("/").await.unwrap().status, 200);

    let lines = common_log_lines(&log, 3).await;
    let refused: Value = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["status"] == 503)
        .expect("the 503's line");
    let qt = refused["queue_time"].as_f64().expect("queue_time");
    assert!((0.3..3.0).contains(&qt), "{refused}");
    assert!(refused["server"].is_null(), "{refused}");
    running.shutdown(Duration::from_secs(1)).await;
}

/// Reads the access log until it has `n` lines.
async fn common_log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    eventually(LIMIT, || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.len() >= n
    })
    .await
    .unwrap_or_else(|| panic!("{} log lines, expected {n}", lines.len()));
    lines
}

/// A full queue refuses at once (503, counted), well before its timeout; a queue
/// of size 0 lets nobody wait.
#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let o = holding("a").await;
    let text = format!(
        "{ADMIN}{PUBLIC}\
         [[route]]\nname = \"one\"\npath = \"/\"\nupstream = \"u\"\n\n\
         [[route]]\nname = \"none\"\npath = \"/none/\"\nupstream = \"v\"\n\n\
         [upstream.u]\nqueue = {{ size = 1, timeout = \"30s\" }}\n\
         servers = [{{ addr = \"{0}\", max_conns = 1 }}]\n\n\
         [upstream.v]\nqueue = {{ size = 0 }}\n\
         servers = [{{ addr = \"{0}\", max_conns = 1 }}]\n",
        o.addr()
    );
    let running = start(&text).await;
    let addr = running.addr("public").unwrap();
    let held = spawn_get(addr, "held");
    o.wait_requests(1, LIMIT).await;
    let waiting = spawn_get(addr, "waiting");
    until_queued(&running, 1).await;
    let sent = Instant::now();
    let r = Client::new(addr).get("/").await.expect("an answer");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );

    // `v` shares the origin but not the count (a server's state is per upstream):
    // its one slot, then a refusal with nobody waiting.
    let v_held = spawn_get_path(addr, "/none/x", "v-held");
    o.wait_requests(2, LIMIT).await;
    let sent = Instant::now();
    let r = Client::new(addr).get("/none/x").await.expect("an answer");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );

    let metrics = admin_get(&running, "/metrics").await;
    for route in ["one", "none"] {
        let n = sample(
            &metrics,
            "switchyard_requests_limited_total",
            &[("route", route), ("reason", "queue")],
        );
        assert_eq!(n, Some(1.0), "{route}: {metrics}");
    }
    o.release(3);
    for t in [held, waiting, v_held] {
        assert_eq!(answer(t).await.status, 200);
    }
    assert_eq!(o.requests(), 3);
    running.shutdown(Duration::from_secs(1)).await;
}

/// An HTTP/2 connection to the proxy.
async fn h2(addr: SocketAddr) -> (http2::SendRequest<Full<Bytes>>, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, driver)
}

/// A client that gives up while queued (its HTTP/2 connection closes) leaves the
/// queue: the freed slot goes to the request behind it, the one that left never
/// reaches the server, and the queue is empty again.
#[tokio::test]
async fn a_client_that_leaves_while_queued_leaves_the_queue() {
    let o = holding("a").await;
    let running = proxy("", &capped(&o, 1), "").await;
    let addr = running.addr("public").unwrap();
    let held = spawn_get(addr, "held");
    o.wait_requests(1, LIMIT).await;

    let (mut tx, driver) = h2(addr).await;
    let req = Request::builder()
        .uri(format!("http://{addr}/"))
        .version(Version::HTTP_2)
        .header("x-req", "gone")
        .body(Full::new(Bytes::new()))
        .unwrap();
    tx.ready().await.expect("h2 ready");
    let pending = tx.send_request(req);
    let gone = tokio::spawn(pending);
    until_queued(&running, 1).await;
    let behind = spawn_get(addr, "behind");
    until_queued(&running, 2).await;

    // The client goes away: its connection closes, its request's future is dropped.
    gone.abort();
    driver.abort();
    drop(tx);
    until_queued(&running, 1).await;

    o.release(1);
    o.wait_requests(2, LIMIT).await;
    until_queued(&running, 0).await;
    o.release(1);
    assert_eq!(answer(held).await.status, 200);
    assert_eq!(answer(behind).await.status, 200);
    assert_eq!(o.req_ids(), ["held", "behind"]);
    running.shutdown(Duration::from_secs(1)).await;
}

/// The log line of a request that waited has the time it waited; one that did not
/// wait has none.
#[tokio::test]
async fn queue_time_is_in_the_access_log() {
    let o = holding("a").await;
    let dir = TempDir::new("queue-log");
    let log = dir.path("access.log");
    let running = proxy(
        &format!("[access_log]\npath = \"{}\"\n\n", log.display()),
        &capped(&o, 1),
        "",
    )
    .await;
    let addr = running.addr("public").unwrap();
    let first = spawn_get(addr, "first");
    o.wait_requests(1, LIMIT).await;
    let second = spawn_get(addr, "second");
    until_queued(&running, 1).await;
    // What is measured: the second waits at least this long for the first's slot.
    let hold = Duration::from_millis(200);
    tokio::time::sleep(hold).await;
    o.release(2);
    assert_eq!(answer(first).await.status, 200);
    assert_eq!(answer(second).await.status, 200);
    let lines: Vec<Value> = common_log_lines(&log, 2)
        .await
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The second's line is the later one: it ended after the first.
    let waited = lines
        .iter()
        .filter_map(|v| v["queue_time"].as_f64())
        .collect::<Vec<_>>();
    assert_eq!(waited.len(), 1, "{lines:?}");
    assert!(waited[0] >= hold.as_secs_f64(), "{lines:?}");
    let with = lines.iter().find(|v| v["queue_time"].is_f64()).unwrap();
    assert!(with["duration"].as_f64().unwrap() >= waited[0], "{with}");
    assert_eq!(with["status"], 200);
    running.shutdown(Duration::from_secs(1)).await;
}

/// Servers with different `max_conns` fill to their own caps, whatever the
/// algorithm: a freed slot on one takes the next waiting request to it.
#[tokio::test]
async fn servers_fill_to_their_own_max_conns() {
    for balance in ["round_robin", "least_conn", "random", "ewma"] {
        let a = holding("a").await;
        let b = holding("b").await;
        let running = proxy(
            "",
            &format!(
                "[{{ addr = \"{}\", max_conns = 1 }}, {{ addr = \"{}\", max_conns = 3 }}]",
                a.addr(),
                b.addr()
            ),
            &format!("balance = \"{balance}\""),
        )
        .await;
        let addr = running.addr("public").unwrap();
        let mut tasks: Vec<_> = (0..5).map(|i| spawn_get(addr, &format!("r{i}"))).collect();
        until_queued(&running, 1).await;
        a.wait_busy(1, LIMIT).await;
        b.wait_busy(3, LIMIT).await;
        // a's slot frees: the waiting request goes to a, the only server with room.
        a.release(1);
        a.wait_requests(2, LIMIT).await;
        until_queued(&running, 0).await;
        assert_eq!((a.busy(), b.busy()), (1, 3), "{balance}");
        a.release(1);
        b.release(3);
        for t in tasks.drain(..) {
            assert_eq!(answer(t).await.status, 200, "{balance}");
        }
        assert_eq!((a.max_busy(), b.max_busy()), (1, 3), "{balance}");
        running.shutdown(Duration::from_secs(1)).await;
    }
}

/// Requests waiting when a reload raises `max_conns` are let through by it at once:
/// they pick again from the new configuration, not the one they started on.
#[tokio::test]
async fn a_reload_that_raises_max_conns_lets_waiting_requests_through() {
    let o = holding("a").await;
    let dir = TempDir::new("queue-reload");
    let file = |max: u32| {
        format!(
            "{PUBLIC}[[route]]\npath = \"/\"\nupstream = \"u\"\n\n\
             [upstream.u]\nservers = [{{ addr = \"{}\", max_conns = {max} }}]\n",
            o.addr()
        )
    };
    let path = dir.write("switchyard.toml", &file(1));
    let config = Config::load(&path).expect("valid");
    let running = switchyard::start(config, common::WORKERS).expect("proxy starts");
    let addr = running.addr("public").unwrap();
    let tasks: Vec<_> = (0..3).map(|i| spawn_get(addr, &format!("r{i}"))).collect();
    o.wait_requests(1, LIMIT).await;
    until_queued(&running, 2).await;
    dir.write("switchyard.toml", &file(3));
    running.control.reload().expect("reload");
    // Nothing freed a slot: the new cap alone lets the two through.
    o.wait_requests(3, LIMIT).await;
    until_queued(&running, 0).await;
    assert_eq!(o.busy(), 3);
    o.release(3);
    for t in tasks {
        assert_eq!(answer(t).await.status, 200);
    }
    running.shutdown(Duration::from_secs(1)).await;
}

/// A server added through the admin API (or discovery) while requests wait takes
/// them, up to its own `max_conns`.
#[tokio::test]
async fn a_server_added_while_requests_wait_takes_them() {
    let a = holding("a").await;
    let b = holding("b").await;
    let running = proxy("", &capped(&a, 1), "").await;
    let addr = running.addr("public").unwrap();
    let tasks: Vec<_> = (0..4).map(|i| spawn_get(addr, &format!("r{i}"))).collect();
    a.wait_requests(1, LIMIT).await;
    until_queued(&running, 3).await;
    let entry = serde_json::json!({ "addr": b.addr().to_string(), "max_conns": 2 });
    let servers = Config::server_entry(entry).expect("a valid entry");
    for s in servers {
        running.shared.add_server("u", s).expect("added");
    }
    b.wait_requests(2, LIMIT).await;
    until_queued(&running, 1).await;
    assert_eq!((a.busy(), b.busy()), (1, 2));
    a.release(2);
    b.release(2);
    for t in tasks {
        assert_eq!(answer(t).await.status, 200);
    }
    assert_eq!(b.max_busy(), 2);
    running.shutdown(Duration::from_secs(1)).await;
}

/// A retry (`next_upstream`) respects `max_conns` too: after a failed connect to
/// one server, a request whose other server is full waits for it in the queue
/// rather than going past its cap.
#[tokio::test]
async fn a_retry_waits_for_a_full_server() {
    let b = holding("b").await;
    let (refusing, _parked) = common::control::refusing_port();
    let running = proxy(
        "",
        &format!(
            "[{{ addr = \"{refusing}\", max_conns = 5, max_fails = 0 }}, \
             {{ addr = \"{}\", max_conns = 1 }}]",
            b.addr()
        ),
        "",
    )
    .await;
    let addr = running.addr("public").unwrap();
    let first = spawn_get(addr, "first");
    b.wait_requests(1, LIMIT).await;
    // Whichever server it is given first, the second ends up trying the refusing
    // one and then waiting for b.
    let second = spawn_get(addr, "second");
    until_queued(&running, 1).await;
    assert_eq!(b.requests(), 1);
    b.release(1);
    b.wait_requests(2, LIMIT).await;
    b.release(1);
    assert_eq!(answer(first).await.status, 200);
    let r = answer(second).await;
    assert_eq!((r.status.as_u16(), r.origin()), (200, Some("b")));
    assert_eq!(b.max_busy(), 1);
    running.shutdown(Duration::from_secs(1)).await;
}
