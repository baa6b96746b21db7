//! The shared dedup store: one route's update states in Redis, so that several
//! proxy replicas behind one address deliver each update once (the issue's
//! "shared across replicas"; T9).
//!
//! Two keys per update, under `switchyard:tg:{route}:` (`KEY_PREFIX`, the route
//! escaped as `limit::redis::Space` does, so that two routes never share keys):
//! - `…:{update_id}`, the state. Absent: free. `C` + token: a replica is
//!   delivering it; the key expires with the claim's lease, so a crashed
//!   replica's claim frees itself. `D` + reply: a bot answered it with a 2xx;
//!   kept for the dedup TTL.
//! - `…:{update_id}:failures`, the deliveries that reached a bot and failed, as
//!   digits, kept for the dedup TTL after the last one (an id is digits and an
//!   optional `-`, so no update's state key is another's failure key).
//!
//! A reply is stored binary-safe as `D`, the status's three digits, then `-`
//! (no `Content-Type`) or `+` + the content type + `\n` (a header value never
//! holds a line feed), then the body's bytes to the end: a multipart body and an
//! empty or absent content type come back as they went in, and the body is
//! sliced out of Redis's answer without a copy.
//!
//! Every call is one round trip: an `EVALSHA` of `dedup.lua`, each operation
//! atomic, through the store's machinery (`RedisStore::run`: the worker's
//! multiplexed connection, redials in the background, `NOSCRIPT` answered by
//! loading and running in one more round trip, Redis's reachability logged once
//! per change). A connection's first dedup call pays that extra round trip once:
//! connections load only the rate-limit script when they are made.
//!
//! Claims carry a token, one per `RedisDedup`: `done`, `failed` and `release`
//! drop an in-flight mark only when it is theirs, so a replica whose lease ran
//! out while its bot was still busy, and whose update another replica then
//! claimed, does not free the other's claim. One token per store rather than per
//! claim is enough because a replica delivers an update once at a time (the
//! front's local in-flight coalescing), and the API carries no claim handle that
//! would tell two of its own claims apart. A `done` is stored over anyone's
//! claim: the update was delivered, and a re-send must get that reply rather
//! than wait for (or repeat) another delivery; the first reply stored stays.

use std::sync::Arc;
use std::time::Duration;

use ::redis::{RedisWrite, ToRedisArgs, Value};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::{Reply, Shared, MAX_STORED_BODY};
use crate::limit::redis::{Script, Space, StoreError};
use crate::limit::RedisStore;

/// How long one dedup call may take, connect wait included, before the caller
/// falls back to local memory; the store's own decision timeout when that is
/// longer. Ten times the rate limiter's `DECISION_TIMEOUT`: a dedup call comes
/// a few times per update (claim, reply, a waiter's polls), at the rate Telegram
/// delivers (at most `max_connections` requests in flight per bot), not once per
/// request at a proxy's full rate, and a fallback costs far more than the wait:
/// a re-send that reaches another replica meanwhile runs the bot's handler
/// twice. 50 ms still covers a busy Redis or a LAN hop many times over, and is
/// nothing next to the update's deadline (50 s) or Telegram's 60 s timeout; a
/// Redis that hangs costs calls this much each only until the connection is
/// dropped as stale (`limit::redis::STALE_AFTER`).
pub const DEDUP_TIMEOUT: Duration = Duration::from_millis(50);

/// Start of every dedup key: `switchyard:tg:{route}:{update_id}`, beside the rate
/// limiter's `switchyard:rl:`.
pub const KEY_PREFIX: &str = "switchyard:tg:";

/// The longest lease or TTL sent to Redis, in milliseconds (about 100 years):
/// Redis refuses an expiry that overflows its clock, and no configuration means
/// more than this.
const MAX_MILLIS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// The script, its operations in one.
static SCRIPT: Script = Script::new(include_str!("dedup.lua"));

/// One route's dedup state in a shared store (see the module doc).
#[derive(Debug)]
pub struct RedisDedup {
    store: Arc<RedisStore>,
    space: Space,
    /// This store's claim token (see the module doc).
    token: String,
    timeout: Duration,
}

/// The script's operations.
#[derive(Debug, Clone, Copy)]
enum Op {
    Claim,
    Peek,
    Done,
    Failed,
    Release,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Claim => "claim",
            Op::Peek => "peek",
            Op::Done => "done",
            Op::Failed => "failed",
            Op::Release => "release",
        }
    }
}

impl RedisDedup {
    /// The dedup state of the route named by `space` in `store` (see the module
    /// doc for the keys). Does no I/O.
    pub fn new(store: Arc<RedisStore>, space: &str) -> RedisDedup {
        store.used_for_dedup();
        let token = format!("{}.{:016x}", store.replica_id(), crate::rng::next_u64());
        let timeout = DEDUP_TIMEOUT.max(store.options().timeout);
        RedisDedup {
            store,
            space: Space::within(KEY_PREFIX, space),
            token,
            timeout,
        }
    }

    /// The state key of `update_id`, as Redis sees it (for tests and tools).
    pub fn key(&self, update_id: i64) -> Vec<u8> {
        self.space.key(update_id.to_string().as_bytes())
    }

    /// Its failure count's key.
    pub fn failures_key(&self, update_id: i64) -> Vec<u8> {
        self.space.key(format!("{update_id}:failures").as_bytes())
    }

    /// How long a call may take (`DEDUP_TIMEOUT`, or the store's timeout when
    /// longer).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Atomically: done -> `Shared::Done(reply)`; held by anyone (this store
    /// too) -> `Shared::Busy`; otherwise it is the caller's now, until `lease`
    /// ends, and `Shared::Free` says how many deliveries failed so far.
    pub async fn claim(&self, update_id: i64, lease: Duration) -> Result<Shared, StoreError> {
        self.call(Op::Claim, update_id, lease, None, read_shared)
            .await
    }

    /// What the store knows now (`claim`'s answers), taking nothing.
    pub async fn peek(&self, update_id: i64) -> Result<Shared, StoreError> {
        self.call(Op::Peek, update_id, Duration::ZERO, None, read_shared)
            .await
    }

    /// A bot answered 2xx: `reply` is kept for `ttl`, over the in-flight mark
    /// (anyone's), and the failure count goes. When a reply is there already,
    /// it stays. Bodies are at most `MAX_STORED_BODY` (the caller's rule).
    pub async fn done(
        &self,
        update_id: i64,
        reply: &Reply,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        debug_assert!(reply.body.len() <= MAX_STORED_BODY);
        self.call(Op::Done, update_id, ttl, Some(Encoded(reply)), read_int)
            .await
            .map(drop)
    }

    /// A delivery reached a bot and failed: the in-flight mark goes (when it is
    /// this store's), the failure count grows by one and is kept for `ttl`.
    /// Returns the new count; 0 when the update is done meanwhile (another
    /// delivery got a 2xx: nothing to count against it).
    pub async fn failed(&self, update_id: i64, ttl: Duration) -> Result<u32, StoreError> {
        let n = self
            .call(Op::Failed, update_id, ttl, None, read_int)
            .await?;
        Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
    }

    /// The delivery never reached a bot: the in-flight mark goes (when it is this
    /// store's), nothing is counted.
    pub async fn release(&self, update_id: i64) -> Result<(), StoreError> {
        self.call(Op::Release, update_id, Duration::ZERO, None, read_int)
            .await
            .map(drop)
    }

    /// One round trip of the script, by this store's deadline.
    async fn call<T>(
        &self,
        op: Op,
        update_id: i64,
        span: Duration,
        reply: Option<Encoded<'_>>,
        read: fn(Value) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let command = || {
            let mut cmd = SCRIPT.evalsha(2);
            cmd.arg(self.key(update_id))
                .arg(self.failures_key(update_id))
                .arg(op.as_str())
                .arg(&self.token)
                .arg(millis(span));
            if let Some(reply) = reply {
                cmd.arg(reply);
            }
            cmd
        };
        self.store.run(&SCRIPT, command, deadline, read).await
    }
}

/// A span in whole milliseconds, rounded up, within what Redis takes for `PX`.
fn millis(span: Duration) -> u64 {
    let ms = span.as_nanos().div_ceil(1_000_000);
    ms.clamp(1, u128::from(MAX_MILLIS)) as u64
}

/// A reply written into the command as its stored state (see the module doc),
/// without building it first.
#[derive(Clone, Copy)]
struct Encoded<'a>(&'a Reply);

impl ToRedisArgs for Encoded<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        use std::io::Write as _;
        let reply = self.0;
        let mut w = out.writer_for_next_arg();
        // Writing into the command's own buffer cannot fail.
        let _ = w.write_all(b"D");
        let _ = w.write_all(reply.status.as_str().as_bytes());
        match &reply.content_type {
            None => {
                let _ = w.write_all(b"-");
            }
            Some(ct) => {
                let _ = w.write_all(b"+");
                let _ = w.write_all(ct.as_bytes());
                let _ = w.write_all(b"\n");
            }
        }
        let _ = w.write_all(&reply.body);
    }
}

/// A stored state `D…` back as a reply.
fn decode(state: Vec<u8>) -> Result<Reply, StoreError> {
    let bad = |what: &str| StoreError::Reply(format!("a stored reply with {what}"));
    let state = Bytes::from(state);
    if state.len() < 5 || state[0] != b'D' {
        return Err(bad("no header"));
    }
    let status = StatusCode::from_bytes(&state[1..4]).map_err(|_| bad("a bad status"))?;
    let (content_type, body) = match state[4] {
        b'-' => (None, 5),
        b'+' => {
            let end = state[5..]
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| bad("an unended content type"))?
                + 5;
            let ct = HeaderValue::from_maybe_shared(state.slice(5..end))
                .map_err(|_| bad("a bad content type"))?;
            (Some(ct), end + 1)
        }
        _ => return Err(bad("a bad content type mark")),
    };
    Ok(Reply {
        status,
        content_type,
        body: state.slice(body..),
    })
}

/// `claim`'s and `peek`'s answer.
fn read_shared(value: Value) -> Result<Shared, StoreError> {
    let bad = |v: &Value| StoreError::Reply(format!("{v:?} from the dedup script"));
    let Value::Array(items) = value else {
        return Err(bad(&value));
    };
    match <[Value; 2]>::try_from(items) {
        Ok([Value::Int(0), Value::Int(n)]) => Ok(Shared::Free {
            failures: u32::try_from(n.max(0)).unwrap_or(u32::MAX),
        }),
        Ok([Value::Int(1), _]) => Ok(Shared::Busy),
        Ok([Value::Int(2), Value::BulkString(state)]) => {
            decode(state).map(|r| Shared::Done(Arc::new(r)))
        }
        Ok(items) => Err(bad(&Value::Array(items.into()))),
        Err(items) => Err(bad(&Value::Array(items))),
    }
}

/// The other operations' answer.
fn read_int(value: Value) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(n),
        v => Err(StoreError::Reply(format!("{v:?} from the dedup script"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(reply: &Reply) -> Vec<u8> {
        let mut cmd = ::redis::Cmd::new();
        cmd.arg(Encoded(reply));
        let arg = match cmd.args_iter().next() {
            Some(::redis::Arg::Simple(b)) => b.to_vec(),
            _ => panic!("one plain argument"),
        };
        arg
    }

    #[test]
    fn replies_round_trip_byte_for_byte() {
        let multipart = Reply {
            status: StatusCode::OK,
            // Header values may carry obs-text bytes: kept as they are.
            content_type: Some(
                HeaderValue::from_bytes(b"multipart/form-data; boundary=--\xe2\x80\x94x").unwrap(),
            ),
            body: Bytes::from_static(b"------x\r\n\0\xff\n\nD200-\r\n------x--\r\n"),
        };
        let none = Reply {
            status: StatusCode::from_u16(204).unwrap(),
            content_type: None,
            body: Bytes::new(),
        };
        let empty = Reply {
            status: StatusCode::from_u16(299).unwrap(),
            content_type: Some(HeaderValue::from_static("")),
            body: Bytes::from_static(b"\n"),
        };
        for reply in [multipart, none, empty] {
            let state = encode(&reply);
            assert_eq!(decode(state).unwrap(), reply);
        }
        assert_eq!(
            encode(&Reply {
                status: StatusCode::OK,
                content_type: Some(HeaderValue::from_static("application/json")),
                body: Bytes::from_static(b"{}"),
            }),
            b"D200+application/json\n{}"
        );
    }

    #[test]
    fn malformed_states_are_errors() {
        for state in [
            &b""[..],
            b"D200",
            b"C200-",
            b"Dxyz-",
            b"D200+text",
            b"D200*",
        ] {
            assert!(decode(state.to_vec()).is_err(), "{state:?}");
        }
    }

    #[test]
    fn calls_can_run_in_spawned_tasks() {
        fn send<T: Send>(_: &T) {}
        let store = RedisStore::open("redis+unix:///nonexistent.sock").unwrap();
        let d = RedisDedup::new(store, "shop");
        let r = Reply {
            status: StatusCode::OK,
            content_type: None,
            body: Bytes::new(),
        };
        send(&d.claim(1, Duration::ZERO));
        send(&d.peek(1));
        send(&d.done(1, &r, Duration::ZERO));
        send(&d.failed(1, Duration::ZERO));
        send(&d.release(1));
    }

    #[test]
    fn keys_are_escaped_per_route_and_spans_are_whole_milliseconds() {
        let store = RedisStore::open("redis+unix:///nonexistent.sock").unwrap();
        let d = RedisDedup::new(Arc::clone(&store), "route/a:b%");
        assert_eq!(d.key(42), b"switchyard:tg:route/a%3Ab%25:42");
        assert_eq!(
            d.failures_key(-7),
            b"switchyard:tg:route/a%3Ab%25:-7:failures"
        );
        assert_ne!(
            RedisDedup::new(Arc::clone(&store), "a:1").key(2),
            RedisDedup::new(store, "a").key(1),
        );
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_secs(3600)), 3_600_000);
        assert_eq!(millis(Duration::MAX), MAX_MILLIS);
    }
}
