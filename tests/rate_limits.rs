//! Rate limits and `limit_conn` end to end (issue 14): exact counts for a burst,
//! a steady rate over time, delay-mode spacing, keys kept apart (headers and
//! client addresses, from 127.0.0.2 and 127.0.0.3), several limits together
//! with a refused request charged to none, listener against route limits, the
//! concurrency limit at its edge, the state across reloads and the refusals
//! counted in the metrics.
//!
//! The proxy runs on its own worker threads with real clocks, so timing here is
//! real time with generous tolerances; the arithmetic under a paused clock is
//! tested in `limit::local` and `limit::gcra`. Rates of a few per minute make the
//! exact counts immune to a slow machine: nothing refills within a test.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{get, read_response, sample, send, setup, Conn, RawResp, EXCHANGE_LIMIT};
use switchyard::{Config, Running};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// `GET path` on a fresh connection from the loopback address `from`
/// (127.0.0.2, …: every 127/8 address is the loopback interface's).
async fn get_from(from: &str, addr: SocketAddr, path: &str, headers: &str) -> RawResp {
    let fut = async {
        let socket = TcpSocket::new_v4().expect("socket");
        let ip: IpAddr = from.parse().expect("an address");
        socket.bind(SocketAddr::new(ip, 0)).expect("bind client");
        let mut s = socket.connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write request");
        read_response(&mut s).await
    };
    tokio::time::timeout(EXCHANGE_LIMIT, fut)
        .await
        .expect("exchange finished in time")
}

/// The value of header `name` in a raw response head.
fn raw_header<'a>(r: &'a RawResp, name: &str) -> Option<&'a str> {
    r.head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Statuses of `n` requests for `path` sent one after another on one connection
/// with `headers`.
async fn statuses(addr: SocketAddr, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut c = Conn::open(addr).await;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.send("GET", path, headers, None).await.status.as_u16());
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn scrape(running: &Running) -> String {
    let r = common::control::Client::new(running.admin.expect("admin listener"))
        .send("GET", "/metrics", &[], None)
        .await
        .expect("scrape");
    assert_eq!(r.status, 200);
    r.body
}

#[tokio::test]
async fn a_burst_of_burst_plus_one_passes_and_the_next_gets_429_with_retry_after() {
    let p = setup(
        &["a"],
        "[[route]]\nupstream = \"o\"\nrate_limit = { rate = \"1/m\", burst = 4 }\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let got = statuses(p.addr, "/", &[], 5).await;
    assert_eq!(got, [200; 5], "burst + 1 pass");
    let refused = get(p.addr, "/").await;
    assert_eq!(refused.status, 429);
    // The next one passes a whole emission interval (60 s) after the burst
    // began, less the little time the burst took: rounded up, 60.
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((59..=60).contains(&retry), "Retry-After {retry}");
}

/// A burst from many connections at once, on both workers, is decided exactly:
/// a decision is atomic across threads.
#[tokio::test]
async fn a_concurrent_burst_is_counted_exactly() {
    let p = setup(
        &["a"],
        "[[route]]\nupstream = \"o\"\nrate_limit = { rate = \"1/m\", burst = 19 }\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let addr = p.addr;
            tokio::spawn(async move { get(addr, "/").await.status.as_u16() })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    assert_eq!((count(&got, 200), count(&got, 429)), (20, 30), "{got:?}");
}

#[tokio::test]
async fn a_steady_rate_over_time() {
    // 20/s, no burst: one request every 50 ms passes. Requests every 5 ms for
    // about 2 s: 1 + 20 × elapsed pass at most (GCRA is exact from above), and
    // nearly that many (each interval's first request passes).
    let p = setup(
        &["a"],
        "[[route]]\nupstream = \"o\"\nrate_limit = { rate = \"20/s\", status = 503 }\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let mut c = Conn::open(p.addr).await;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let start = Instant::now();
    let (mut passed, mut refused) = (0u32, 0u32);
    while start.elapsed() < Duration::from_secs(2) {
        tick.tick().await;
        match c.send("GET", "/", &[], None).await.status.as_u16() {
            200 => passed += 1,
            503 => refused += 1,
            s => panic!("status {s}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let most = 1.0 + 20.0 * elapsed;
    assert!(
        f64::from(passed) <= most + 0.5,
        "{passed} passed in {elapsed:.3} s"
    );
    assert!(
        f64::from(passed) >= 0.85 * 20.0 * elapsed,
        "{passed} passed in {elapsed:.3} s"
    );
    assert!(refused > passed, "{refused} refused");
}

/// Sends `n` requests at once from fresh connections; returns each one's status
/// and time to its response, sorted by time.
async fn at_once(addr: SocketAddr, n: usize) -> Vec<(u16, Duration)> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let status = get(addr, "/").await.status.as_u16();
                (status, start.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort_by_key(|(_, t)| *t);
    out
}

#[tokio::test]
async fn delay_mode_spaces_the_excess() {
    // 10/s, burst 5, delay 2: of 7 at once, 3 go at once, 3 wait 100, 200 and
    // 300 ms (nginx's delay=2), the 7th is refused at once.
    let p = setup(
        &["a"],
        "[[route]]\nupstream = \"o\"\nrate_limit = { rate = \"10/s\", burst = 5, delay = 2 }\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let got = at_once(p.addr, 7).await;
    let ok: Vec<Duration> = got
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(ok.len(), 6, "{got:?}");
    let (refused_at, _) = got
        .iter()
        .find(|(s, _)| *s == 429)
        .map(|(_, t)| (t, ()))
        .expect("one refused");
    let ms = Duration::from_millis;
    assert!(*refused_at < ms(90), "the refusal does not wait: {got:?}");
    // The spacing: the 4th, 5th and 6th wait their turns, the others do not.
    // Requests are decided in the order they arrive, within a few ms of each
    // other, so each wait is at least its turn less that spread.
    let spread = ms(40);
    for (i, t) in ok.iter().enumerate() {
        let turn = ms(100) * (i.saturating_sub(2) as u32);
        assert!(*t + spread >= turn, "request {i} at {t:?}: {got:?}");
        assert!(*t < turn + ms(400), "request {i} at {t:?}: {got:?}");
    }
    assert!(ok[2] < ms(90), "the first three go at once: {got:?}");
    assert!(ok[5] >= ms(260), "the last waits three turns: {got:?}");
}

#[tokio::test]
async fn delay_all_makes_every_excess_request_wait() {
    // 10/s, burst 3, delay "all" (nginx without nodelay): 4 at once pass, at 0,
    // 100, 200 and 300 ms; a 5th is refused.
    let p = setup(
        &["a"],
        "[[route]]\nupstream = \"o\"\nrate_limit = { rate = \"10/s\", burst = 3, delay = \"all\" }\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let got = at_once(p.addr, 5).await;
    let ok: Vec<Duration> = got
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(ok.len(), 4, "{got:?}");
    let ms = Duration::from_millis;
    assert!(ok[0] < ms(90), "{got:?}");
    assert!(
        ok[1] >= ms(60) && ok[2] >= ms(160) && ok[3] >= ms(260),
        "{got:?}"
    );
    assert!(ok[3] < ms(700), "{got:?}");
}

#[tokio::test]
async fn keys_are_kept_apart() {
    let p = setup(
        &["a"],
        "[[route]]\npath = \"/chat/\"\nupstream = \"o\"\n\
         rate_limit = { rate = \"1/m\", key = \"header:X-Chat-Id\" }\n\
         [[route]]\npath = \"/ip/\"\nupstream = \"o\"\nrate_limit = { rate = \"1/m\", burst = 1 }\n\
         [[route]]\npath = \"/shared/\"\nupstream = \"o\"\nrate_limit = { rate = \"1/m\", burst = 1, key = \"route\" }\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let addr = p.addr;
    let chat = |id: &'static str| async move {
        send(addr, "GET", "/chat/", &[("x-chat-id", id)], None)
            .await
            .status
            .as_u16()
    };
    assert_eq!(chat("a").await, 200);
    assert_eq!(chat("a").await, 429);
    assert_eq!(chat("b").await, 200, "another chat has its own budget");
    assert_eq!(chat("b").await, 429);
    // Without the header the limit does not count the request.
    assert_eq!(statuses(p.addr, "/chat/", &[], 5).await, [200; 5]);

    // client_ip: 127.0.0.2 spends its burst, 127.0.0.3 still has its own.
    for _ in 0..2 {
        assert_eq!(get_from("127.0.0.2", p.addr, "/ip/", "").await.status, 200);
    }
    let refused = get_from("127.0.0.2", p.addr, "/ip/", "").await;
    assert_eq!(refused.status, 429);
    assert!(
        raw_header(&refused, "retry-after").is_some(),
        "{}",
        refused.head
    );
    assert_eq!(get_from("127.0.0.3", p.addr, "/ip/", "").await.status, 200);

    // key = "route": one budget for every client.
    assert_eq!(
        get_from("127.0.0.2", p.addr, "/shared/", "").await.status,
        200
    );
    assert_eq!(
        get_from("127.0.0.3", p.addr, "/shared/", "").await.status,
        200
    );
    assert_eq!(
        get_from("127.0.0.4", p.addr, "/shared/", "").await.status,
        429
    );
}

/// Two limits on a route, per client and per user (the shape of ingress-nginx's
/// limit-rps with limit-rpm): both must pass, and a request refused by one is
/// charged to neither.
#[tokio::test]
async fn several_limits_together_and_a_refused_request_is_charged_to_none() {
    let p = setup(
        &["a"],
        "[[route]]\nupstream = \"o\"\nrate_limit = [\n\
           { rate = \"1/m\", burst = 5 },\n\
           { rate = \"1/m\", burst = 1, key = \"header:X-User\", status = 503 },\n\
         ]\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let start = Instant::now();
    let addr = p.addr;
    let user = |u: &'static str| async move { statuses(addr, "/", &[("x-user", u)], 4).await };
    // Each user gets 2 (the per-user limit refuses the rest with its 503); the
    // per-client limit (6) is charged only for those, so three users fit.
    assert_eq!(user("a").await, [200, 200, 503, 503]);
    assert_eq!(user("b").await, [200, 200, 503, 503]);
    assert_eq!(user("c").await, [200, 200, 429, 429]);
    // Had the refused requests been charged, "b" would have spent the client's
    // last two and "c" got none. Now the client's budget is spent:
    assert_eq!(user("d").await, [429; 4]);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "no refill at 1/m"
    );
}

#[tokio::test]
async fn listener_limits_count_every_request_and_route_limits_their_route() {
    let origins = common::start_origins(&["a"]).await;
    let running = common::start_proxy(&format!(
        "{ADMIN}[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\
         rate_limit = {{ rate = \"1/m\", burst = 3 }}\n\n\
         [[route]]\npath = \"/a/\"\nupstream = \"o\"\nrate_limit = {{ rate = \"1/m\" }}\n\
         [[route]]\npath = \"/b/\"\nupstream = \"o\"\n\
         [upstream.o]\nservers = [{{ addr = \"{}\" }}]\n",
        origins[0]
    ))
    .await;
    let addr = running.addr("public").unwrap();
    let s = |path: &'static str| async move { get(addr, path).await.status.as_u16() };
    assert_eq!(s("/a/").await, 200, "listener 1 of 4, route 1 of 1");
    assert_eq!(
        s("/a/").await,
        429,
        "the route's limit; the listener counted it"
    );
    assert_eq!(s("/b/").await, 200, "listener 3 of 4");
    assert_eq!(
        s("/none").await,
        404,
        "listener 4 of 4: an unrouted request counts"
    );
    assert_eq!(
        s("/b/").await,
        429,
        "the listener's limit, on a route without one"
    );
    assert_eq!(s("/none").await, 429, "and before a 404");
    let text = scrape(&running).await;
    let limited = |route: &str| {
        sample(
            &text,
            "switchyard_requests_limited_total",
            &[("route", route), ("reason", "rate_limit")],
        )
    };
    assert_eq!(limited("/a/"), Some(1.0), "{text}");
    assert_eq!(limited("/b/"), Some(1.0), "{text}");
    assert_eq!(limited("none"), Some(1.0), "{text}");
}

/// An origin that holds every request until the test lets it go: each arrival
/// is reported with the handle that releases it.
async fn gated_origin() -> (SocketAddr, mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (arrived, arrivals) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let arrived = arrived.clone();
                    async move {
                        let (release, released) = oneshot::channel();
                        let _ = arrived.send(release);
                        let _ = released.await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, arrivals)
}

/// The release handle of the next request to reach the gated origin.
async fn arrival(
    arrivals: &mut mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) -> oneshot::Sender<()> {
    tokio::time::timeout(EXCHANGE_LIMIT, arrivals.recv())
        .await
        .expect("a request reached the origin in time")
        .expect("origin running")
}

#[tokio::test]
async fn limit_conn_at_the_edge() {
    let (origin, mut arrivals) = gated_origin().await;
    let text = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[route]]\nupstream = \"o\"\nlimit_conn = {{ max = 2, status = 503 }}\n\
         [upstream.o]\nservers = [{{ addr = \"{origin}\" }}]\n"
    );
    let running = common::start_proxy(&text).await;
    let addr = running.addr("public").unwrap();
    let in_flight =
        |from: &'static str| tokio::spawn(async move { get_from(from, addr, "/", "").await });
    // Two in flight: both reach the origin and wait there.
    let (mut a, mut b) = (in_flight("127.0.0.1"), in_flight("127.0.0.1"));
    let release_1 = arrival(&mut arrivals).await;
    let release_2 = arrival(&mut arrivals).await;
    // The third is refused at once, with the limit's status and no Retry-After,
    // and never reaches the origin.
    let third = get_from("127.0.0.1", addr, "/", "").await;
    assert_eq!(third.status, 503);
    assert!(
        raw_header(&third, "retry-after").is_none(),
        "{}",
        third.head
    );
    // Another client address has its own count.
    let other = in_flight("127.0.0.2");
    let release_other = arrival(&mut arrivals).await;
    // One response ends: its slot frees, and the next request goes through.
    release_1.send(()).unwrap();
    let (done, rest) = tokio::time::timeout(EXCHANGE_LIMIT, async {
        tokio::select! {
            r = &mut a => (r, b),
            r = &mut b => (r, a),
        }
    })
    .await
    .expect("a response");
    assert_eq!(done.unwrap().status, 200);
    let fourth = in_flight("127.0.0.1");
    let release_4 = arrival(&mut arrivals).await;
    for r in [release_2, release_other, release_4] {
        r.send(()).unwrap();
    }
    assert_eq!(fourth.await.unwrap().status, 200);
    assert_eq!(other.await.unwrap().status, 200);
    assert_eq!(rest.await.unwrap().status, 200);
    assert!(
        arrivals.try_recv().is_err(),
        "the refused request reached the origin"
    );
}

#[tokio::test]
async fn the_state_survives_a_reload_that_keeps_the_limit() {
    let p = setup(
        &["a"],
        "[[route]]\npath = \"/\"\nupstream = \"o\"\nrate_limit = { rate = \"1/m\", burst = 1 }\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    let origin = p.origins[0];
    let reload = |route_limit: &str, extra: &str| {
        let text = format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[route]]\npath = \"/\"\nupstream = \"o\"\nrate_limit = {route_limit}\n{extra}\
             [upstream.o]\nservers = [{{ addr = \"{origin}\" }}]\n"
        );
        let config = Config::parse(std::path::Path::new("<test>"), &text).unwrap();
        p.running.control.apply(config).expect("reload");
    };
    assert_eq!(statuses(p.addr, "/", &[], 3).await, [200, 200, 429]);
    // An unrelated change: the budget is still spent.
    reload(
        "{ rate = \"1/m\", burst = 1 }",
        "[[route]]\npath = \"/other/\"\nupstream = \"o\"\n",
    );
    assert_eq!(get(p.addr, "/").await.status, 429);
    // A new status changes the answer, not the state.
    reload("{ rate = \"1/m\", burst = 1, status = 503 }", "");
    assert_eq!(get(p.addr, "/").await.status, 503);
    // A new burst is a new limit: a fresh budget.
    reload("{ rate = \"1/m\", burst = 2 }", "");
    assert_eq!(statuses(p.addr, "/", &[], 4).await, [200, 200, 200, 429]);
}

/// Keys with no traffic cost nothing once their window has passed: the proxy's
/// sweep drops them.
#[tokio::test]
async fn idle_keys_are_swept_after_their_window() {
    let p = setup(
        &["a"],
        "[[route]]\nupstream = \"o\"\nrate_limit = { rate = \"1/s\", burst = 1 }\n\
         [upstream.o]\nservers = [{ addr = \"@0\" }]\n",
    )
    .await;
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert_eq!(get_from(from, p.addr, "/", "").await.status, 200);
    }
    let limits = p.running.shared.limits();
    // Their windows end a second after their requests; a sweep runs every second.
    assert_eq!(limits.rate_keys(), 3, "one entry per client");
    let swept =
        common::control::eventually(Duration::from_secs(5), || limits.rate_keys() == 0).await;
    assert!(swept.is_some(), "{} keys left", limits.rate_keys());
}
