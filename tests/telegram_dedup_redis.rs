//! The Telegram mode's shared dedup store (`telegram::dedup::redis`) against a
//! real `redis-server` on a Unix socket: claim, peek, done, failed and release;
//! a claim held until its lease ends and not freed by a replica whose lease
//! ended; two replicas agreeing on one Redis; replies stored byte for byte; and
//! Redis killed, hung and restarted under it.
//!
//! The semantic tests open their store with a patient timeout (a dedup call may
//! take the store's timeout when it is longer than `DEDUP_TIMEOUT`): they are
//! about the answers, not their speed. The outage tests use the real timeout.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::redis_server::RedisServer;
use http::{HeaderValue, StatusCode};
use switchyard::limit::redis::{Options, RedisStore, StoreError};
use switchyard::telegram::dedup::redis::{RedisDedup, DEDUP_TIMEOUT};
use switchyard::telegram::dedup::{Reply, Shared, MAX_STORED_BODY};

/// Long enough that no test sees a claim expire unless it waits for it.
const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);

/// Slack over a timeout for a loaded machine's scheduling (two cores shared
/// with parallel builds): a call that took longer than its timeout plus this
/// was hanging, not late.
const SLACK: Duration = Duration::from_millis(500);

/// Bound on waiting for something that happens within a second or two.
const EVENT: Duration = Duration::from_secs(10);

fn patient() -> Options {
    Options {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

/// A replica's dedup for the route `space`, on a store of its own.
fn replica(server: &RedisServer, space: &str) -> RedisDedup {
    RedisDedup::new(
        RedisStore::open_with(&server.url(), patient()).unwrap(),
        space,
    )
}

fn reply(status: u16, content_type: Option<&str>, body: &[u8]) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        content_type: content_type.map(|c| HeaderValue::from_str(c).unwrap()),
        body: Bytes::copy_from_slice(body),
    }
}

fn done_with(r: &Reply) -> Shared {
    Shared::Done(Arc::new(r.clone()))
}

/// Fails the test instead of hanging it if the store never answers.
async fn bounded<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(EVENT, call)
        .await
        .unwrap_or_else(|_| panic!("the store hung for {EVENT:?}"))
}

async fn claim(d: &RedisDedup, id: i64) -> Shared {
    bounded(d.claim(id, LEASE))
        .await
        .unwrap_or_else(|e| panic!("claim {id}: {e}"))
}

async fn peek(d: &RedisDedup, id: i64) -> Shared {
    bounded(d.peek(id))
        .await
        .unwrap_or_else(|e| panic!("peek {id}: {e}"))
}

/// A plain connection to the server, to look at what the store left there.
fn inspect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("a test connection to redis-server")
}

fn pttl(redis: &mut redis::Connection, key: &[u8]) -> i64 {
    redis::cmd("PTTL").arg(key).query(redis).unwrap()
}

/// Repeats `peek` until it answers (a fresh link's first call may time out on a
/// loaded machine, and after a restart the link redials in the background).
async fn until_answered(d: &RedisDedup, id: i64) -> Shared {
    let start = Instant::now();
    loop {
        match bounded(d.peek(id)).await {
            Ok(s) => return s,
            Err(e) => assert!(
                start.elapsed() < EVENT,
                "no call answered within {EVENT:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_claim_is_held_until_done_and_then_the_reply_is_replayed() {
    let server = RedisServer::start();
    let d = replica(&server, "shop");
    let mut redis = inspect(&server);

    assert_eq!(peek(&d, 42).await, Shared::Free { failures: 0 });
    assert_eq!(
        peek(&d, 42).await,
        Shared::Free { failures: 0 },
        "peek takes nothing"
    );
    assert_eq!(claim(&d, 42).await, Shared::Free { failures: 0 });
    // Held: by this replica too (one delivery at a time).
    assert_eq!(claim(&d, 42).await, Shared::Busy);
    assert_eq!(peek(&d, 42).await, Shared::Busy);
    // Other updates are untouched.
    assert_eq!(peek(&d, 43).await, Shared::Free { failures: 0 });

    assert_eq!(d.key(42), b"switchyard:tg:shop:42");
    let mark: Vec<u8> = redis::cmd("GET").arg(d.key(42)).query(&mut redis).unwrap();
    assert_eq!(mark[0], b'C', "an in-flight mark: {mark:?}");
    let ttl = pttl(&mut redis, &d.key(42));
    assert!(
        ttl > 0 && ttl <= LEASE.as_millis() as i64,
        "expires with the lease: {ttl}"
    );

    let r = reply(
        200,
        Some("application/json"),
        br#"{"method":"sendMessage","chat_id":-100123,"text":"hi"}"#,
    );
    bounded(d.done(42, &r, TTL)).await.unwrap();
    assert_eq!(peek(&d, 42).await, done_with(&r));
    assert_eq!(
        claim(&d, 42).await,
        done_with(&r),
        "a re-send gets the reply"
    );
    let ttl = pttl(&mut redis, &d.key(42));
    assert!(
        ttl > (TTL - Duration::from_secs(60)).as_millis() as i64 && ttl <= TTL.as_millis() as i64,
        "kept for the TTL: {ttl}"
    );

    // The first reply stays: a later one (another delivery's) does not replace it.
    let later = reply(200, Some("text/plain"), b"later");
    bounded(d.done(42, &later, TTL)).await.unwrap();
    assert_eq!(peek(&d, 42).await, done_with(&r));
    // And a failure reported after it counts nothing.
    assert_eq!(bounded(d.failed(42, TTL)).await.unwrap(), 0);
    assert_eq!(peek(&d, 42).await, done_with(&r));
    bounded(d.release(42)).await.unwrap();
    assert_eq!(peek(&d, 42).await, done_with(&r));
}

#[tokio::test]
async fn failures_are_counted_and_free_the_update_and_a_release_counts_nothing() {
    let server = RedisServer::start();
    let d = replica(&server, "shop");
    let mut redis = inspect(&server);

    assert_eq!(claim(&d, 7).await, Shared::Free { failures: 0 });
    assert_eq!(bounded(d.failed(7, TTL)).await.unwrap(), 1);
    assert_eq!(
        peek(&d, 7).await,
        Shared::Free { failures: 1 },
        "free again"
    );
    assert_eq!(claim(&d, 7).await, Shared::Free { failures: 1 });
    assert_eq!(bounded(d.failed(7, TTL)).await.unwrap(), 2);
    let ttl = pttl(&mut redis, &d.failures_key(7));
    assert!(
        ttl > 0 && ttl <= TTL.as_millis() as i64,
        "kept for the TTL: {ttl}"
    );

    // No bot reached: the claim goes, the count stays.
    assert_eq!(claim(&d, 7).await, Shared::Free { failures: 2 });
    bounded(d.release(7)).await.unwrap();
    assert_eq!(peek(&d, 7).await, Shared::Free { failures: 2 });
    assert_eq!(claim(&d, 7).await, Shared::Free { failures: 2 });

    // Delivered at last: the count goes with the claim.
    let r = reply(200, None, b"");
    bounded(d.done(7, &r, TTL)).await.unwrap();
    assert_eq!(claim(&d, 7).await, done_with(&r));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(d.failures_key(7))
        .query(&mut redis)
        .unwrap();
    assert_eq!(exists, 0, "a delivered update's failures are dropped");

    // The count expires with its TTL.
    assert_eq!(claim(&d, 8).await, Shared::Free { failures: 0 });
    assert_eq!(
        bounded(d.failed(8, Duration::from_millis(200)))
            .await
            .unwrap(),
        1
    );
    let start = Instant::now();
    while peek(&d, 8).await != (Shared::Free { failures: 0 }) {
        assert!(
            start.elapsed() < EVENT,
            "the failure count outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_claim_expires_with_its_lease_and_the_late_replica_does_not_free_the_new_claim() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server, "shop"), replica(&server, "shop"));
    let lease = Duration::from_millis(300);

    let claimed = Instant::now();
    assert_eq!(
        bounded(a.claim(1, lease)).await.unwrap(),
        Shared::Free { failures: 0 }
    );
    // Not stolen while held.
    assert_eq!(bounded(b.claim(1, lease)).await.unwrap(), Shared::Busy);
    // A crashed replica's claim frees itself once its lease ends.
    loop {
        match bounded(b.claim(1, LEASE)).await.unwrap() {
            Shared::Busy => {
                assert!(claimed.elapsed() < EVENT, "the claim outlived its lease");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Shared::Free { failures: 0 } => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        claimed.elapsed() >= lease - Duration::from_millis(20),
        "taken over after {:?}, before the lease of {lease:?} ended",
        claimed.elapsed()
    );

    // A's delivery comes back late: its release and failure do not free B's
    // claim (the failure still counts: it reached a bot).
    bounded(a.release(1)).await.unwrap();
    assert_eq!(peek(&a, 1).await, Shared::Busy);
    assert_eq!(bounded(a.failed(1, TTL)).await.unwrap(), 1);
    assert_eq!(peek(&a, 1).await, Shared::Busy);
    assert_eq!(claim(&a, 1).await, Shared::Busy);
    // B's own failure does free it.
    assert_eq!(bounded(b.failed(1, TTL)).await.unwrap(), 2);
    assert_eq!(peek(&a, 1).await, Shared::Free { failures: 2 });

    // A late 2xx is stored over another's claim: the update was delivered, and
    // a re-send gets that answer instead of waiting for the other delivery.
    assert_eq!(claim(&b, 2).await, Shared::Free { failures: 0 });
    let r = reply(200, Some("application/json"), b"{}");
    bounded(a.done(2, &r, TTL)).await.unwrap();
    assert_eq!(peek(&b, 2).await, done_with(&r));
}

#[tokio::test]
async fn two_replicas_on_one_redis_agree_and_routes_do_not_share_keys() {
    let server = RedisServer::start();
    let (a, b) = (
        replica(&server, "route/shop"),
        replica(&server, "route/shop"),
    );

    assert_eq!(claim(&a, 100).await, Shared::Free { failures: 0 });
    assert_eq!(
        claim(&b, 100).await,
        Shared::Busy,
        "a re-send at the other replica"
    );
    assert_eq!(peek(&b, 100).await, Shared::Busy);
    // B's waiter sees A's reply once it is there.
    let r = reply(
        200,
        Some("application/json"),
        br#"{"method":"answerCallbackQuery"}"#,
    );
    bounded(a.done(100, &r, TTL)).await.unwrap();
    assert_eq!(peek(&b, 100).await, done_with(&r));
    assert_eq!(claim(&b, 100).await, done_with(&r));

    // Failures counted at one replica are seen at the other.
    assert_eq!(claim(&b, 101).await, Shared::Free { failures: 0 });
    assert_eq!(bounded(b.failed(101, TTL)).await.unwrap(), 1);
    assert_eq!(claim(&a, 101).await, Shared::Free { failures: 1 });
    assert_eq!(bounded(a.failed(101, TTL)).await.unwrap(), 2);
    assert_eq!(peek(&b, 101).await, Shared::Free { failures: 2 });

    // Another route (another bot) has update ids of its own, even when its name
    // would run into this one's keys unescaped.
    for other in ["route/other", "route", "route/shop:100", "route/shop%"] {
        let c = replica(&server, other);
        assert_eq!(peek(&c, 100).await, Shared::Free { failures: 0 }, "{other}");
        assert_eq!(
            claim(&c, 101).await,
            Shared::Free { failures: 0 },
            "{other}"
        );
    }
}

#[tokio::test]
async fn binary_bodies_and_absent_content_types_round_trip() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server, "shop"), replica(&server, "shop"));
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(MAX_STORED_BODY).collect();
    let multipart =
        b"--b0undary\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n\
        Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0\0\0\nD200-\n\r\n--b0undary--\r\n";
    let replies = [
        reply(
            200,
            Some("multipart/form-data; boundary=b0undary"),
            multipart,
        ),
        reply(200, None, &every_byte),
        reply(201, None, b""),
        reply(204, Some(""), b""),
        reply(299, Some("application/json; charset=utf-8"), b"{\n}\n"),
    ];
    for (id, r) in (1..).zip(&replies) {
        assert_eq!(claim(&a, id).await, Shared::Free { failures: 0 });
        bounded(a.done(id, r, TTL)).await.unwrap();
    }
    for (id, r) in (1..).zip(&replies) {
        let Shared::Done(got) = claim(&b, id).await else {
            panic!("update {id} is done")
        };
        assert_eq!(got.status, r.status, "update {id}");
        assert_eq!(got.content_type, r.content_type, "update {id}");
        assert!(got.body == r.body, "update {id}: the body byte for byte");
    }
}

#[tokio::test]
async fn scripts_flushed_from_redis_are_loaded_again_within_the_call() {
    let server = RedisServer::start();
    let d = replica(&server, "shop");
    assert_eq!(claim(&d, 5).await, Shared::Free { failures: 0 });
    let mut redis = inspect(&server);
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut redis).unwrap();
    assert_eq!(claim(&d, 5).await, Shared::Busy);
    assert_eq!(bounded(d.failed(5, TTL)).await.unwrap(), 1);
    assert_eq!(claim(&d, 5).await, Shared::Free { failures: 1 });
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

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

const LOST: &str = "Telegram dedup store unavailable";
const BACK: &str = "Telegram dedup store reachable again";

#[tokio::test]
async fn redis_killed_then_restarted_errors_fast_logs_once_and_works_again() {
    let (logs, _guard) = Logs::capture();
    let mut server = RedisServer::start();
    let store = RedisStore::open(&server.url()).unwrap();
    let d = RedisDedup::new(Arc::clone(&store), "shop");
    assert_eq!(d.timeout(), DEDUP_TIMEOUT);
    until_answered(&d, 1).await;
    assert_eq!(claim(&d, 1).await, Shared::Free { failures: 0 });
    // A loaded machine may have made the first dial fail before it succeeded.
    let (lost, back) = (logs.count(LOST), logs.count(BACK));

    server.kill();
    for i in 0..50 {
        let start = Instant::now();
        let err = match i % 5 {
            0 => bounded(d.claim(2, LEASE)).await.unwrap_err(),
            1 => bounded(d.peek(1)).await.unwrap_err(),
            2 => bounded(d.done(1, &reply(200, None, b"{}"), TTL))
                .await
                .unwrap_err(),
            3 => bounded(d.failed(1, TTL)).await.unwrap_err(),
            _ => bounded(d.release(1)).await.unwrap_err(),
        };
        let took = start.elapsed();
        assert!(
            took < DEDUP_TIMEOUT + SLACK,
            "a call with Redis dead took {took:?} ({err})"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(!store.available());
    assert_eq!(
        store.fallbacks(),
        0,
        "dedup calls are not rate-limit fallbacks"
    );

    // Back, empty (no persistence) and without the script: it works again.
    server.restart();
    assert_eq!(until_answered(&d, 1).await, Shared::Free { failures: 0 });
    assert_eq!(claim(&d, 1).await, Shared::Free { failures: 0 });
    assert_eq!(claim(&d, 1).await, Shared::Busy);
    assert!(store.available());
    // Once when it went, once when it came back, whatever the calls between;
    // in the words of what the store serves.
    assert_eq!(logs.count(LOST), lost + 1, "{}", logs.text());
    assert_eq!(logs.count(BACK), back + 1, "{}", logs.text());
    assert_eq!(logs.count("rate-limit store"), 0, "{}", logs.text());
}

#[tokio::test]
async fn a_hung_redis_costs_a_call_its_timeout_then_nothing() {
    let (logs, _guard) = Logs::capture();
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url()).unwrap();
    let d = RedisDedup::new(Arc::clone(&store), "shop");
    until_answered(&d, 1).await;
    let lost = logs.count(LOST);

    server.pause();
    let start = Instant::now();
    let err = bounded(d.claim(1, LEASE)).await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, StoreError::Timeout), "{err}");
    assert!(
        took >= DEDUP_TIMEOUT && took < DEDUP_TIMEOUT + SLACK,
        "no answer: the call gives up after its timeout, took {took:?}"
    );
    // Silent for STALE_AFTER: the connection is dropped, and calls fail at once.
    let since = Instant::now();
    while store.available() {
        assert!(
            since.elapsed() < EVENT,
            "a hung Redis was never counted down"
        );
        let _ = bounded(d.peek(1)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        let err = bounded(d.peek(1)).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable), "{err}");
    }
    assert_eq!(logs.count(LOST), lost + 1, "{}", logs.text());

    server.resume();
    // The claim made before the pause was never answered, but Redis may have
    // run it: the update is free or held, never lost in between.
    let s = until_answered(&d, 1).await;
    assert!(matches!(s, Shared::Free { .. } | Shared::Busy), "{s:?}");
}

#[tokio::test]
async fn a_store_shared_with_rate_limits_says_both_in_its_log() {
    use switchyard::limit::gcra::Gcra;
    use switchyard::limit::redis::{Limit, Space};
    let (logs, _guard) = Logs::capture();
    let mut server = RedisServer::start();
    let store = RedisStore::open(&server.url()).unwrap();
    let d = RedisDedup::new(Arc::clone(&store), "shop");
    until_answered(&d, 1).await;
    let space = Space::new("api");
    let limit = Limit {
        space: &space,
        key: b"k",
        gcra: Gcra::new(1000, 1_000_000_000, 1000, None),
    };
    let start = Instant::now();
    while bounded(store.check(&[limit])).await.is_err() {
        assert!(start.elapsed() < EVENT, "no decision answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = logs.count("rate-limit store unavailable");
    server.kill();
    let _ = bounded(d.peek(1)).await;
    let _ = bounded(store.check(&[limit])).await;
    let _ = bounded(d.peek(1)).await;
    assert_eq!(
        logs.count("rate-limit store unavailable"),
        lost + 1,
        "{}",
        logs.text()
    );
    assert!(
        logs.text()
            .contains("and Telegram dedup to this replica's memory"),
        "{}",
        logs.text()
    );
}
