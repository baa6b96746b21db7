//! The decision script (`gcra.lua`): its key names, the command that runs it and
//! the reading of its reply. One `EVALSHA` per decision; the script's text is sent
//! only when Redis does not have it (`Script::load_and_run`). `Script` serves the
//! other users of a store too (the Telegram mode's dedup script).

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use ::redis::{Cmd, RedisWrite, ToRedisArgs, Value};

use super::{Decision, Limit, StoreError};
use crate::limit::gcra::Gcra;

/// A Lua script run by `EVALSHA`: its text, and its SHA-1 (the name `EVALSHA`
/// runs it by), computed on first use.
#[derive(Debug)]
pub(crate) struct Script {
    source: &'static str,
    hash: OnceLock<String>,
}

impl Script {
    pub(crate) const fn new(source: &'static str) -> Script {
        Script {
            source,
            hash: OnceLock::new(),
        }
    }

    /// The script's SHA-1, in hex.
    pub(crate) fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| ::redis::Script::new(self.source).get_hash().to_owned())
    }

    /// `EVALSHA` of the script with `keys` keys to follow: the caller adds the
    /// keys, then the arguments.
    pub(crate) fn evalsha(&self, keys: usize) -> Cmd {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(self.hash()).arg(keys);
        cmd
    }

    /// `SCRIPT LOAD` of the script.
    pub(crate) fn load(&self) -> Cmd {
        let mut cmd = ::redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.source);
        cmd
    }

    /// `SCRIPT LOAD` then `run` (an `EVALSHA` of this script), pipelined: one
    /// round trip after Redis lost its script cache (a restart, `SCRIPT FLUSH`),
    /// and the script is cached again for every later `EVALSHA`.
    pub(crate) fn load_and_run(&self, run: Cmd) -> ::redis::Pipeline {
        let mut pipe = ::redis::pipe();
        pipe.add_command(self.load()).ignore().add_command(run);
        pipe
    }
}

/// The decision script.
pub(crate) static GCRA: Script = Script::new(include_str!("gcra.lua"));

/// Start of every limit key: `switchyard:rl:{limit}:{key}`. One namespace for the
/// proxy's keys, so that `SCAN … MATCH switchyard:rl:*` finds them all and they
/// stay clear of whatever else the database holds.
pub const KEY_PREFIX: &str = "switchyard:rl:";

/// The sorted set of replicas that announced themselves (member: replica id,
/// score: Redis time in milliseconds). Outside `KEY_PREFIX`, so that no limit's
/// key can be named like it.
pub const REPLICAS_KEY: &str = "switchyard:replicas";

/// The longest span, in nanoseconds, of an emission interval or a tolerance. The
/// script does its arithmetic in Lua numbers (doubles, exact below 2⁵³) and adds
/// spans to the nanoseconds of the current second; 2⁵² ns (52 days) keeps every
/// sum exact. A burst × interval longer than that is cut to it.
pub const MAX_SPAN_NANOS: u64 = 1 << 52;

/// One limit's key space in Redis: `switchyard:rl:` + the limit's name + `:`.
/// Built once per limit (when its configuration is), not per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Space {
    prefix: Box<[u8]>,
}

impl Space {
    /// The key space of the limit named `limit`. Every replica must give a limit
    /// the same name, and two limits that must not share budgets different names
    /// (e.g. `route/NAME/0` for a route's first `rate_limit`). `%` and `:` in the
    /// name are percent-encoded, so that the `:` after it ends it: two names never
    /// make the same key, whatever bytes the keys hold.
    pub fn new(limit: &str) -> Space {
        Space::within(KEY_PREFIX, limit)
    }

    /// The key space `namespace` + `name` (escaped as in `new`) + `:`, for the
    /// other users of a store (the Telegram mode's dedup keys are
    /// `switchyard:tg:{route}:…`).
    pub fn within(namespace: &str, name: &str) -> Space {
        let mut prefix = Vec::with_capacity(namespace.len() + name.len() + 1);
        prefix.extend_from_slice(namespace.as_bytes());
        for b in name.bytes() {
            match b {
                b'%' => prefix.extend_from_slice(b"%25"),
                b':' => prefix.extend_from_slice(b"%3A"),
                _ => prefix.push(b),
            }
        }
        prefix.push(b':');
        Space {
            prefix: prefix.into(),
        }
    }

    /// The Redis key that holds `key`'s state in this space.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        [&self.prefix[..], key].concat()
    }
}

/// A limit's key written straight into the command, without building it first.
struct KeyArg<'a>(&'a Space, &'a [u8]);

impl ToRedisArgs for KeyArg<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let mut w = out.writer_for_next_arg();
        // Writing into the command's own buffer cannot fail.
        let _ = w.write_all(&self.0.prefix);
        let _ = w.write_all(self.1);
    }
}

/// A replica announcing itself with this decision: its id, and how long the
/// announcement counts.
pub(crate) struct Announce<'a> {
    pub(crate) replica: &'a str,
    pub(crate) window: Duration,
}

/// `EVALSHA` of the script for one request's limits.
pub(crate) fn command(limits: &[Limit<'_>], announce: Option<Announce<'_>>) -> Cmd {
    let mut cmd = GCRA.evalsha(1 + limits.len());
    cmd.arg(REPLICAS_KEY);
    for l in limits {
        cmd.arg(KeyArg(l.space, l.key));
    }
    match announce {
        Some(a) => cmd.arg(a.replica).arg(a.window.as_millis().max(1) as u64),
        None => cmd.arg("").arg(0),
    };
    for l in limits {
        let Gcra {
            emission,
            tolerance,
            free,
        } = l.gcra;
        cmd.arg(emission.clamp(1, MAX_SPAN_NANOS))
            .arg(tolerance.min(MAX_SPAN_NANOS))
            .arg(free.min(MAX_SPAN_NANOS));
    }
    cmd
}

/// What the script answered: the decision, and the replicas seen when this
/// decision announced the replica.
pub(crate) fn read(reply: Value, limits: usize) -> Result<(Decision, Option<usize>), StoreError> {
    let bad = |what: &str| StoreError::Reply(format!("{what} in {reply:?}"));
    let ints: Vec<i64> = match &reply {
        Value::Array(items) if items.len() == 4 => items
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                _ => Err(bad("a non-integer")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("not four integers")),
    };
    let nanos = |n: i64| Duration::from_nanos(n.max(0) as u64);
    let decision = match ints[0] {
        0 => Decision::Pass {
            wait: nanos(ints[2]),
        },
        1 => match usize::try_from(ints[1]) {
            Ok(index) if index < limits => Decision::Refuse {
                index,
                retry_after: nanos(ints[2]),
            },
            _ => return Err(bad("a limit index out of range")),
        },
        _ => return Err(bad("an unknown verdict")),
    };
    let replicas = usize::try_from(ints[3]).ok();
    Ok((decision, replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_names_cannot_collide_through_their_separator() {
        assert_eq!(
            Space::new("api").key(b"1.2.3.4"),
            b"switchyard:rl:api:1.2.3.4"
        );
        // "a:b" + "c" and "a" + "b:c" would both be "a:b:c" unescaped.
        assert_ne!(Space::new("a:b").key(b"c"), Space::new("a").key(b"b:c"));
        assert_eq!(Space::new("a:b%").key(b"c"), b"switchyard:rl:a%3Ab%25:c");
        // No limit key is the replicas key.
        assert!(!REPLICAS_KEY.starts_with(KEY_PREFIX));
    }

    #[test]
    fn the_command_carries_keys_then_announcement_then_three_spans_per_limit() {
        let a = Space::new("a");
        let g = Gcra::new(10, 1_000_000_000, 2, Some(1));
        let huge = Gcra::new(1, u64::MAX, u64::MAX, None);
        let limits = [
            Limit {
                space: &a,
                key: b"k1",
                gcra: g,
            },
            Limit {
                space: &a,
                key: b"k2",
                gcra: huge,
            },
        ];
        let cmd = command(
            &limits,
            Some(Announce {
                replica: "r1",
                window: Duration::from_secs(10),
            }),
        );
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                ::redis::Arg::Simple(b) => b.to_vec(),
                _ => panic!("only plain arguments"),
            })
            .collect();
        let text: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let max = MAX_SPAN_NANOS.to_string();
        assert_eq!(
            text,
            [
                "EVALSHA",
                GCRA.hash(),
                "3",
                REPLICAS_KEY,
                "switchyard:rl:a:k1",
                "switchyard:rl:a:k2",
                "r1",
                "10000",
                "100000000",
                "200000000",
                "100000000",
                &max,
                &max,
                &max,
            ]
        );
    }

    #[test]
    fn replies_are_read_strictly() {
        let reply = |v: [i64; 4]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
        assert_eq!(
            read(reply([0, 0, 5, -1]), 1).unwrap(),
            (
                Decision::Pass {
                    wait: Duration::from_nanos(5)
                },
                None
            )
        );
        assert_eq!(
            read(reply([1, 1, 7, 3]), 2).unwrap(),
            (
                Decision::Refuse {
                    index: 1,
                    retry_after: Duration::from_nanos(7)
                },
                Some(3)
            )
        );
        assert!(read(reply([1, 2, 7, 3]), 2).is_err());
        assert!(read(reply([2, 0, 0, 0]), 1).is_err());
        assert!(read(Value::Nil, 1).is_err());
    }
}
