//! The shared rate-limit store (`limit::redis`) against a real `redis-server` on a
//! Unix socket: the GCRA arithmetic in the script (exact bursts, several limits
//! at once, delays, expiry), replicas sharing one budget and counting each other,
//! and Redis hung, killed and restarted under it.
//!
//! Tests of the arithmetic use slow rates (per minute, per hour), so that the
//! milliseconds a loaded machine takes between two decisions cannot let one more
//! request through, and a patient timeout: they are about the answers, not their
//! speed. The outage tests use the real timeout.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use switchyard::limit::gcra::Gcra;
use switchyard::limit::redis::{
    Decision, Limit, Options, RedisStore, Space, StoreError, DECISION_TIMEOUT, REPLICAS_KEY,
};

const SEC: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SEC;
const HOUR: u64 = 60 * MINUTE;

/// For the arithmetic tests: answers, not speed, are under test.
fn patient() -> Options {
    Options {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

/// Slack over a timeout for a loaded machine's scheduling (CI shares two cores
/// with parallel builds): a decision that took longer than its timeout plus this
/// was hanging, not late.
const SLACK: Duration = Duration::from_millis(500);

/// Bound on waiting for something that happens within a second or two.
const EVENT: Duration = Duration::from_secs(10);

fn lim<'a>(space: &'a Space, key: &'a [u8], gcra: Gcra) -> Limit<'a> {
    Limit { space, key, gcra }
}

/// `store.check`, failing the test instead of hanging it if the store never
/// answers.
async fn check(store: &Arc<RedisStore>, limits: &[Limit<'_>]) -> Result<Decision, StoreError> {
    tokio::time::timeout(EVENT, store.check(limits))
        .await
        .unwrap_or_else(|_| panic!("the store hung for {EVENT:?}"))
}

async fn decide(store: &Arc<RedisStore>, limits: &[Limit<'_>]) -> Decision {
    check(store, limits)
        .await
        .unwrap_or_else(|e| panic!("the store decides: {e}"))
}

/// How many of `n` single-limit requests pass, in order.
async fn passes(store: &Arc<RedisStore>, limit: Limit<'_>, n: usize) -> usize {
    let mut passed = 0;
    for _ in 0..n {
        if let Decision::Pass { .. } = decide(store, &[limit]).await {
            passed += 1;
        }
    }
    passed
}

/// A plain connection to the server, to look at what the store left there.
fn inspect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("a test connection to redis-server")
}

/// Repeats decisions until one is answered (a fresh link's first decision may
/// fall back on a loaded machine), up to `EVENT`.
async fn until_answered(store: &Arc<RedisStore>, limits: &[Limit<'_>]) -> Decision {
    let start = Instant::now();
    loop {
        match check(store, limits).await {
            Ok(d) => return d,
            Err(e) => assert!(
                start.elapsed() < EVENT,
                "no decision answered within {EVENT:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_burst_of_burst_plus_one_passes_and_the_next_is_refused_with_retry_after() {
    let server = RedisServer::start();
    let store = RedisStore::open_with(&server.url(), patient()).unwrap();
    let space = Space::new("burst");
    for burst in [0u64, 1, 5, 50] {
        let key = format!("client-{burst}");
        let g = Gcra::new(1, MINUTE, burst, None);
        let l = lim(&space, key.as_bytes(), g);
        for i in 0..=burst {
            assert_eq!(
                decide(&store, &[l]).await,
                Decision::Pass {
                    wait: Duration::ZERO
                },
                "request {i} of a burst of {} at burst {burst}",
                burst + 1
            );
        }
        let Decision::Refuse { index, retry_after } = decide(&store, &[l]).await else {
            panic!("request {} at burst {burst} is refused", burst + 2)
        };
        assert_eq!(index, 0);
        // One emission interval after the burst began, less the time it took.
        assert!(
            retry_after <= Duration::from_secs(60) && retry_after > Duration::from_secs(50),
            "retry_after {retry_after:?} at burst {burst}"
        );
        // A refused request is not charged: the wait does not grow.
        let Decision::Refuse {
            retry_after: again, ..
        } = decide(&store, &[l]).await
        else {
            panic!("still refused")
        };
        assert!(again <= retry_after, "{again:?} after {retry_after:?}");
    }
    assert_eq!(store.fallbacks(), 0);
}

#[tokio::test]
async fn a_request_refused_by_one_limit_is_charged_to_none() {
    let server = RedisServer::start();
    let store = RedisStore::open_with(&server.url(), patient()).unwrap();
    let (rps, rpm) = (Space::new("wide"), Space::new("narrow"));
    let wide = lim(&rps, b"k", Gcra::new(1, MINUTE, 5, None));
    let narrow = lim(&rpm, b"k", Gcra::new(1, MINUTE, 0, None));

    assert!(matches!(
        decide(&store, &[wide, narrow]).await,
        Decision::Pass { .. }
    ));
    // The narrow one refuses: it is named, and the wide one is not charged.
    assert!(matches!(
        decide(&store, &[wide, narrow]).await,
        Decision::Refuse { index: 1, .. }
    ));
    assert!(matches!(
        decide(&store, &[wide, narrow]).await,
        Decision::Refuse { index: 1, .. }
    ));
    // Burst 5: six in all, one taken by the request both passed.
    assert_eq!(passes(&store, wide, 10).await, 5);
}

#[tokio::test]
async fn when_several_limits_refuse_the_first_is_named_and_retry_after_is_the_longest() {
    let server = RedisServer::start();
    let store = RedisStore::open_with(&server.url(), patient()).unwrap();
    let (m, h) = (Space::new("per-minute"), Space::new("per-hour"));
    let minute = lim(&m, b"k", Gcra::new(1, MINUTE, 0, None));
    let hour = lim(&h, b"k", Gcra::new(1, HOUR, 0, None));
    assert!(matches!(
        decide(&store, &[minute, hour]).await,
        Decision::Pass { .. }
    ));
    let Decision::Refuse { index, retry_after } = decide(&store, &[minute, hour]).await else {
        panic!("both refuse")
    };
    assert_eq!(index, 0);
    assert!(
        retry_after > Duration::from_secs(3590) && retry_after <= Duration::from_secs(3600),
        "{retry_after:?}: the hour's wait, not the minute's"
    );
}

#[tokio::test]
async fn a_key_listed_twice_is_charged_twice() {
    let server = RedisServer::start();
    let store = RedisStore::open_with(&server.url(), patient()).unwrap();
    let s = Space::new("twice");
    let l = lim(&s, b"k", Gcra::new(1, MINUTE, 2, None));
    // Burst 2: three units; the first request takes two.
    assert!(matches!(
        decide(&store, &[l, l]).await,
        Decision::Pass { .. }
    ));
    assert_eq!(passes(&store, l, 5).await, 1);
}

#[tokio::test]
async fn delay_mode_holds_back_the_requests_past_delay() {
    let server = RedisServer::start();
    let store = RedisStore::open_with(&server.url(), patient()).unwrap();
    let s = Space::new("delay");
    // 1/s, burst 5, delay 2: three go at once, the next three wait about 1, 2 and
    // 3 s (less the time since the first), the seventh is refused.
    let l = lim(&s, b"k", Gcra::new(1, SEC, 5, Some(2)));
    let start = Instant::now();
    let mut waits = Vec::new();
    for _ in 0..7 {
        waits.push(match decide(&store, &[l]).await {
            Decision::Pass { wait } => Some(wait),
            Decision::Refuse { .. } => None,
        });
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(900), "decisions took {took:?}");
    assert_eq!(&waits[..3], [Some(Duration::ZERO); 3], "{waits:?}");
    for (i, w) in waits[3..6].iter().enumerate() {
        let full = Duration::from_secs(i as u64 + 1);
        let w = w.unwrap_or_else(|| panic!("request {} waits, {waits:?}", i + 4));
        assert!(
            w <= full && w + took >= full,
            "request {} waits {w:?}, about {full:?}",
            i + 4
        );
    }
    assert_eq!(waits[6], None, "{waits:?}");

    // Several limits: the longest wait holds. `x` delays every request past the
    // first by a second; `y` lets them through at once.
    let (sx, sy) = (Space::new("delay-x"), Space::new("delay-y"));
    let x = lim(&sx, b"k", Gcra::new(1, SEC, 5, Some(0)));
    let y = lim(&sy, b"k", Gcra::new(1, SEC, 5, None));
    assert_eq!(
        decide(&store, &[x]).await,
        Decision::Pass {
            wait: Duration::ZERO
        }
    );
    let Decision::Pass { wait } = decide(&store, &[y, x]).await else {
        panic!("both pass")
    };
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
        "{wait:?}: x's wait"
    );
}

#[tokio::test]
async fn a_key_holds_its_tat_and_expires_at_it() {
    let server = RedisServer::start();
    let store = RedisStore::open_with(&server.url(), patient()).unwrap();
    let s = Space::new("expiry");
    let mut redis = inspect(&server);

    // 10/s, burst 4: five requests put the TAT 500 ms ahead.
    let l = lim(&s, b"203.0.113.9", Gcra::new(10, SEC, 4, None));
    assert_eq!(passes(&store, l, 5).await, 5);
    let key = s.key(b"203.0.113.9");
    assert_eq!(key, b"switchyard:rl:expiry:203.0.113.9");
    let tat: String = redis::cmd("GET").arg(&key).query(&mut redis).unwrap();
    assert!(
        tat.len() >= 19 && tat.bytes().all(|b| b.is_ascii_digit()),
        "the TAT is nanoseconds as digits: {tat:?}"
    );
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut redis).unwrap();
    let now = secs * SEC + micros * 1000;
    let ahead = tat.parse::<u64>().unwrap().saturating_sub(now);
    assert!(
        ahead <= SEC / 2 && ahead > SEC / 4,
        "TAT {ahead} ns ahead of Redis's clock"
    );
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut redis).unwrap();
    assert!(ttl > 0 && ttl <= 500, "expires with its TAT: PTTL {ttl} ms");

    // Gone after its window, without anyone touching it.
    let start = Instant::now();
    loop {
        let exists: i64 = redis::cmd("EXISTS").arg(&key).query(&mut redis).unwrap();
        if exists == 0 {
            break;
        }
        assert!(start.elapsed() < EVENT, "the key outlived its TAT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("switchyard:rl:*")
        .query(&mut redis)
        .unwrap();
    assert!(keys.is_empty(), "idle keys cost nothing: {keys:?}");
}

#[tokio::test]
async fn two_replicas_share_one_budget() {
    let server = RedisServer::start();
    let a = RedisStore::open_with(&server.url(), patient()).unwrap();
    let b = RedisStore::open_with(&server.url(), patient()).unwrap();
    assert_ne!(a.replica_id(), b.replica_id());
    // Each replica makes the limit's space itself, from the same name.
    let (sa, sb) = (Space::new("site"), Space::new("site"));
    let g = Gcra::new(1, MINUTE, 3, None);
    let mut passed = [0; 2];
    for i in 0..10 {
        let (store, space) = if i % 2 == 0 { (&a, &sa) } else { (&b, &sb) };
        if let Decision::Pass { .. } = decide(store, &[lim(space, b"k", g)]).await {
            passed[i % 2] += 1;
        }
    }
    assert_eq!(passed, [2, 2], "burst 3: four in all, alternating");
}

#[tokio::test]
async fn replicas_seen_counts_those_that_decided_within_the_window() {
    let server = RedisServer::start();
    let window = Duration::from_millis(400);
    let options = Options {
        announce_every: Duration::ZERO,
        replica_window: window,
        ..patient()
    };
    let a = RedisStore::open_with(&server.url(), options).unwrap();
    let b = RedisStore::open_with(&server.url(), options).unwrap();
    let s = Space::new("count");
    let l = lim(&s, b"k", Gcra::new(1000, SEC, 1000, None));
    assert_eq!(a.replicas_seen(), 1, "itself, before Redis says anything");
    decide(&a, &[l]).await;
    assert_eq!(a.replicas_seen(), 1);
    decide(&b, &[l]).await;
    assert_eq!(b.replicas_seen(), 2);
    // Falling back, each runs at half the rate (and half the burst).
    assert_eq!(b.fallback(l.gcra).emission, 2 * l.gcra.emission);
    assert_eq!(b.fallback(l.gcra).tolerance, l.gcra.tolerance);
    decide(&a, &[l]).await;
    assert_eq!(a.replicas_seen(), 2);

    let mut redis = inspect(&server);
    let mut ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(REPLICAS_KEY)
        .arg(0)
        .arg(-1)
        .query(&mut redis)
        .unwrap();
    ids.sort();
    let mut expected = vec![a.replica_id().to_owned(), b.replica_id().to_owned()];
    expected.sort();
    assert_eq!(ids, expected);

    // A stops deciding: B stops counting it once the window has passed.
    let since = Instant::now();
    while b.replicas_seen() != 1 {
        assert!(since.elapsed() < EVENT, "A never aged out");
        tokio::time::sleep(Duration::from_millis(20)).await;
        decide(&b, &[l]).await;
    }
    assert!(
        since.elapsed() >= window - Duration::from_millis(50),
        "A dropped out after {:?}, before the window of {window:?}",
        since.elapsed()
    );
    // And the set itself goes when every replica is idle.
    let start = Instant::now();
    loop {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(REPLICAS_KEY)
            .query(&mut redis)
            .unwrap();
        if exists == 0 {
            break;
        }
        assert!(
            start.elapsed() < EVENT,
            "the replicas set outlived its window"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_replica_announces_itself_at_most_once_per_interval() {
    let server = RedisServer::start();
    let a = RedisStore::open_with(
        &server.url(),
        Options {
            announce_every: Duration::from_secs(3600),
            ..patient()
        },
    )
    .unwrap();
    let b = RedisStore::open_with(&server.url(), patient()).unwrap();
    let s = Space::new("announce");
    let l = lim(&s, b"k", Gcra::new(1000, SEC, 1000, None));
    decide(&a, &[l]).await;
    decide(&b, &[l]).await;
    decide(&a, &[l]).await;
    // A announced on its first decision only: it has not heard of B.
    assert_eq!(a.replicas_seen(), 1);
    assert_eq!(b.replicas_seen(), 2);
}

#[tokio::test]
async fn scripts_flushed_from_redis_are_loaded_again_within_the_decision() {
    let server = RedisServer::start();
    let store = RedisStore::open_with(&server.url(), patient()).unwrap();
    let s = Space::new("flush");
    let l = lim(&s, b"k", Gcra::new(1, MINUTE, 1, None));
    decide(&store, &[l]).await;
    let mut redis = inspect(&server);
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut redis).unwrap();
    assert!(matches!(decide(&store, &[l]).await, Decision::Pass { .. }));
    assert!(matches!(
        decide(&store, &[l]).await,
        Decision::Refuse { .. }
    ));
    assert_eq!(store.fallbacks(), 0);
}

#[tokio::test]
async fn unix_and_tcp_urls_with_a_database_number() {
    let server = RedisServer::start_with_tcp();
    let s = Space::new("db");
    let l = lim(&s, b"k", Gcra::new(1, MINUTE, 0, None));
    let mut redis = inspect(&server);
    for (url, db) in [
        (server.tcp_url(3), 3),
        (format!("unix://{}?db=5", server.socket().display()), 5),
    ] {
        let store = RedisStore::open_with(&url, patient()).unwrap();
        assert!(matches!(decide(&store, &[l]).await, Decision::Pass { .. }));
        let _: () = redis::cmd("SELECT").arg(db).query(&mut redis).unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg(s.key(b"k"))
            .query(&mut redis)
            .unwrap();
        assert_eq!(exists, 1, "{url} keeps its keys in database {db}");
    }
}

#[test]
fn each_worker_thread_uses_its_own_connection() {
    use std::sync::mpsc;
    let server = RedisServer::start();
    let store = RedisStore::open_with(&server.url(), patient()).unwrap();
    let mut redis = inspect(&server);
    let clients = |redis: &mut redis::Connection| -> usize {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(redis).unwrap();
        list.lines().count()
    };
    let before = clients(&mut redis);

    // Two worker-like threads, each with its own single-threaded runtime, each
    // deciding and then holding its runtime until told to end.
    let (ready_tx, ready) = mpsc::channel();
    let mut ends = Vec::new();
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (store, ready_tx) = (Arc::clone(&store), ready_tx.clone());
            let (end_tx, end) = mpsc::channel::<()>();
            ends.push(end_tx);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let s = Space::new("workers");
                let key = format!("w{i}");
                let l = lim(&s, key.as_bytes(), Gcra::new(1, MINUTE, 0, None));
                let d = rt.block_on(until_answered(&store, &[l]));
                ready_tx.send(d).unwrap();
                let _ = end.recv_timeout(EVENT);
            })
        })
        .collect();
    drop(ready_tx);
    for _ in 0..2 {
        // A worker that panicked drops its sender: this fails instead of waiting.
        let d = ready.recv_timeout(EVENT).expect("each worker decides");
        assert!(matches!(d, Decision::Pass { .. }));
    }
    assert_eq!(clients(&mut redis), before + 2, "one connection per worker");
    drop(ends);
    for w in workers {
        w.join().expect("worker thread");
    }
    // The workers' connections closed with their runtimes.
    let start = Instant::now();
    while clients(&mut redis) != before {
        assert!(start.elapsed() < EVENT, "worker connections stayed open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_store_for_an_absent_server_falls_back_at_once() {
    let dir = std::env::temp_dir().join(format!("sy-noredis-{}", std::process::id()));
    let url = format!("redis+unix://{}/none.sock", dir.display());
    // Opening does no I/O: nothing is there, and it opens.
    let store = RedisStore::open(&url).unwrap();
    let s = Space::new("absent");
    let l = lim(&s, b"k", Gcra::new(1, SEC, 0, None));
    for _ in 0..20 {
        let start = Instant::now();
        let err = check(&store, &[l]).await.unwrap_err();
        assert!(
            start.elapsed() < DECISION_TIMEOUT + SLACK,
            "{err} after {:?}",
            start.elapsed()
        );
    }
    assert_eq!(store.fallbacks(), 20);
    assert!(!store.available());
    assert_eq!(store.replicas_seen(), 1);
}

/// Logs of the current thread (the tests' runtimes are single-threaded, so the
/// store's background dials log here too).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<String>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn count(&self, needle: &str) -> usize {
        self.0.lock().unwrap().matches(needle).count()
    }
}

const LOST: &str = "rate-limit store unavailable";
const BACK: &str = "rate-limit store reachable again";

#[tokio::test]
async fn redis_killed_then_restarted_on_the_same_socket() {
    let (logs, _guard) = Logs::capture();
    let mut server = RedisServer::start();
    let store = RedisStore::open(&server.url()).unwrap();
    let s = Space::new("outage");
    let l = lim(&s, b"k", Gcra::new(1, SEC, 1000, None));
    until_answered(&store, &[l]).await;
    assert!(store.available());
    // A loaded machine may have made the first dial fail before it succeeded.
    let (lost, back) = (logs.count(LOST), logs.count(BACK));

    server.kill();
    let before = store.fallbacks();
    for _ in 0..50 {
        let start = Instant::now();
        let err = check(&store, &[l]).await.unwrap_err();
        let took = start.elapsed();
        assert!(
            took < DECISION_TIMEOUT + SLACK,
            "a decision with Redis dead took {took:?} ({err})"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(store.fallbacks(), before + 50, "every fallback counted");
    assert!(!store.available());

    server.restart();
    let answered = until_answered(&store, &[l]).await;
    assert!(matches!(answered, Decision::Pass { .. }));
    assert!(store.available());
    // Once when it went, once when it came back, whatever the number of
    // decisions in between.
    assert_eq!(logs.count(LOST), lost + 1, "{}", logs.0.lock().unwrap());
    assert_eq!(logs.count(BACK), back + 1, "{}", logs.0.lock().unwrap());
}

#[tokio::test]
async fn a_hung_redis_costs_a_decision_its_timeout_then_nothing() {
    let (logs, _guard) = Logs::capture();
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url()).unwrap();
    let s = Space::new("hang");
    let l = lim(&s, b"k", Gcra::new(1, SEC, 1000, None));
    until_answered(&store, &[l]).await;
    let (lost, back) = (logs.count(LOST), logs.count(BACK));

    server.pause();
    let start = Instant::now();
    let err = check(&store, &[l]).await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, StoreError::Timeout), "{err}");
    assert!(
        took >= DECISION_TIMEOUT && took < DECISION_TIMEOUT + SLACK,
        "no answer: the decision gives up after its timeout, took {took:?}"
    );
    // Nothing answers for STALE_AFTER: the connection is dropped, Redis counted
    // down, and decisions fall back without waiting.
    let since = Instant::now();
    while store.available() {
        assert!(
            since.elapsed() < EVENT,
            "a hung Redis was never counted down"
        );
        let _ = check(&store, &[l]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once Redis is down, a decision does not wait: it is told at once.
    for _ in 0..10 {
        let err = check(&store, &[l]).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable), "{err}");
    }
    assert_eq!(logs.count(LOST), lost + 1, "{}", logs.0.lock().unwrap());

    server.resume();
    until_answered(&store, &[l]).await;
    assert!(store.available());
    assert_eq!(logs.count(BACK), back + 1, "{}", logs.0.lock().unwrap());
}
