//! `[route.telegram]`: the route is a Telegram bot's webhook (issue 15,
//! reference part 2). It stays a proxying route (`upstream = "NAME"`), with the
//! mode's own checks and defaults:
//! - the path is matched exactly and the route takes POST alone (Telegram only
//!   POSTs, and telegraf and python-telegram-bot check the path exactly);
//! - connects time out after `DEFAULT_TELEGRAM_CONNECT_TIMEOUT` and a bot may work
//!   on one update for up to `DEFAULT_TELEGRAM_READ_TIMEOUT`; only connect
//!   failures move an update to another bot (an update is not idempotent).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::super::limits::RedisUrl;
use super::super::validate::Checker;
use super::super::{ser, Cidr};

/// Telegram's documented webhook source blocks (core.telegram.org/bots/webhooks);
/// "telegram" in `allow_from` stands for them, so a config follows a change of
/// the list with the proxy's next release rather than by hand.
pub const TELEGRAM_NETWORKS: &[&str] = &["149.154.160.0/20", "91.108.4.0/22"];

/// How long a delivered `update_id` is remembered: Telegram re-sends an update
/// it got no 2xx for within minutes (its backoff is 0, 2, 4 … 64 s, then 60-120 s),
/// so an hour catches every re-send but those of a day-long outage.
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(3600);

/// The longest `dedup_ttl`: Telegram drops an update 24 h after it was made.
pub const MAX_DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);

/// Deliveries that reached a bot and failed before an update is acknowledged
/// and dead-lettered: about five minutes of Telegram's backoff, long enough for
/// a bot restart, short enough that a poison update blocks its chat's queue for
/// minutes rather than the 24 h Telegram keeps trying.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// When Telegram gets its answer at the latest: it closes the request and
/// re-sends at 60 s, so an answer later than that is wasted.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(50);

/// Largest update accepted: real updates are a few KiB (a message's text is at
/// most 4096 characters); anything near this is not from Telegram.
pub const DEFAULT_MAX_BODY: u64 = 4 << 20;

/// `Retry-After` of the mode's 503s: it replaces Telegram's own backoff, so a
/// short one brings the update back soon (inline queries expire after 30 s).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The longest `retry_after` accepted: a longer wait risks an update's expiry
/// (callback queries live 150 s) and Telegram caps it at an hour anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);

/// A bot that does not accept a connection within this is down for this update,
/// and it goes to another bot (reference T6).
pub const DEFAULT_TELEGRAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a bot may work on one update before the proxy gives up on it. The
/// answer to Telegram is bounded by `deadline`; past it the request to the bot
/// keeps running so that Telegram's re-send collects its answer instead of
/// running the handler again. Five minutes: a handler still busy then is stuck.
pub const DEFAULT_TELEGRAM_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest secret Telegram accepts in `setWebhook`.
const MAX_SECRET_LEN: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawTelegram {
    /// One token or a list of one or two.
    secret_token: Option<toml::Value>,
    allow_from: Option<Vec<String>>,
    affinity: Option<String>,
    dedup_ttl: Option<String>,
    dedup_store: Option<String>,
    max_attempts: Option<u32>,
    dead_letter: Option<String>,
    deadline: Option<String>,
    max_body: Option<toml::Value>,
    forward_secret: Option<toml::Value>,
    retry_after: Option<String>,
}

/// Which id places an update on a bot (`[route.telegram] affinity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// The update's chat, else its user: a chat's messages, buttons and member
    /// events stay on one bot, with the per-chat state the frameworks keep in memory.
    #[default]
    Chat,
    /// The user (or business connection, or poll) the update comes from, else its chat.
    User,
    /// No key: updates go by load alone.
    None,
}

/// Where delivered `update_id`s are remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupStore {
    /// This process (bounded LRU).
    Memory,
    /// A Redis every replica shares.
    Redis(RedisUrl),
}

impl Serialize for DedupStore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DedupStore::Memory => s.serialize_str("memory"),
            DedupStore::Redis(u) => s.serialize_str(&u.url),
        }
    }
}

/// What the bots get as `X-Telegram-Bot-Api-Secret-Token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardSecret {
    /// The header as Telegram sent it.
    Received,
    /// No header: the proxy checked it.
    Strip,
    /// This value, whichever token Telegram sent: bots that know one token keep
    /// working while Telegram rotates to the other.
    Value(String),
}

impl Serialize for ForwardSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ForwardSecret::Received => s.serialize_bool(true),
            ForwardSecret::Strip => s.serialize_bool(false),
            ForwardSecret::Value(v) => s.serialize_str(v),
        }
    }
}

/// A validated `[route.telegram]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TelegramConfig {
    /// The tokens accepted (one, or two during a rotation); empty: no check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_token: Vec<String>,
    /// As written (presets by name), so `config dump` writes it back alike.
    pub allow_from: Vec<String>,
    /// The blocks `allow_from` stands for; `None`: "any".
    #[serde(skip)]
    pub allow_nets: Option<Vec<Cidr>>,
    pub affinity: Affinity,
    #[serde(serialize_with = "ser::duration")]
    pub dedup_ttl: Duration,
    pub dedup_store: DedupStore,
    pub max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<PathBuf>,
    #[serde(serialize_with = "ser::duration")]
    pub deadline: Duration,
    #[serde(serialize_with = "ser::size")]
    pub max_body: u64,
    pub forward_secret: ForwardSecret,
    #[serde(serialize_with = "ser::duration")]
    pub retry_after: Duration,
}

impl TelegramConfig {
    /// The configuration with its secrets written by `hide` (`config dump`).
    pub(in crate::config) fn hiding(&self, hide: &dyn Fn(&str) -> String) -> TelegramConfig {
        TelegramConfig {
            secret_token: self.secret_token.iter().map(|t| hide(t)).collect(),
            dedup_store: match &self.dedup_store {
                DedupStore::Redis(u) => DedupStore::Redis(u.hiding(hide)),
                DedupStore::Memory => DedupStore::Memory,
            },
            forward_secret: match &self.forward_secret {
                ForwardSecret::Value(v) => ForwardSecret::Value(hide(v)),
                f => f.clone(),
            },
            ..self.clone()
        }
    }
}

/// Checks `[route.telegram]` at `base` (`route[3].telegram`); relative paths are
/// taken from `dir`.
pub(in crate::config) fn check(
    c: &mut Checker,
    base: &str,
    raw: &RawTelegram,
    dir: &Path,
) -> Option<TelegramConfig> {
    let before = c.problems.len();
    let secret_token = secrets(
        c,
        &format!("{base}.secret_token"),
        raw.secret_token.as_ref(),
    );
    let (allow_from, allow_nets) = allow_from(c, &format!("{base}.allow_from"), &raw.allow_from);
    let affinity = match raw.affinity.as_deref() {
        None | Some("chat") => Affinity::Chat,
        Some("user") => Affinity::User,
        Some("none") => Affinity::None,
        Some(other) => {
            c.err(
                format!("{base}.affinity"),
                format!("expected \"chat\", \"user\" or \"none\", got {other:?}"),
            );
            Affinity::Chat
        }
    };
    let dedup_ttl = c.duration(
        &format!("{base}.dedup_ttl"),
        raw.dedup_ttl.as_deref(),
        DEFAULT_DEDUP_TTL,
    );
    if dedup_ttl > MAX_DEDUP_TTL {
        c.err(
            format!("{base}.dedup_ttl"),
            "at most 24h: Telegram keeps an update for 24 hours at most, so no re-send comes later",
        );
    }
    let dedup_store = match raw.dedup_store.as_deref() {
        None | Some("memory") => DedupStore::Memory,
        Some(url) => match RedisUrl::parse(url) {
            Ok(u) => DedupStore::Redis(u),
            Err(m) => {
                let m = m.replace("expected \"local\"", "expected \"memory\"");
                c.err(format!("{base}.dedup_store"), m);
                DedupStore::Memory
            }
        },
    };
    let max_attempts = match raw.max_attempts {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(0) => {
            c.err(
                format!("{base}.max_attempts"),
                "must be at least 1 (the first failed delivery is attempt 1)",
            );
            DEFAULT_MAX_ATTEMPTS
        }
        Some(n) => n,
    };
    let dead_letter = raw
        .dead_letter
        .as_deref()
        .and_then(|p| dead_letter(c, &format!("{base}.dead_letter"), p, dir));
    let deadline = c.duration(
        &format!("{base}.deadline"),
        raw.deadline.as_deref(),
        DEFAULT_DEADLINE,
    );
    if deadline >= Duration::from_secs(60) {
        c.err(
            format!("{base}.deadline"),
            format!(
                "{}: Telegram gives up on a request at 60 s and sends it again; answer before that (default {:?})",
                humantime::format_duration(deadline),
                DEFAULT_DEADLINE
            ),
        );
    }
    let max_body = match &raw.max_body {
        None => DEFAULT_MAX_BODY,
        Some(v) => match super::super::retry::parse_size(v) {
            Some(n) if n > 0 => n,
            _ => {
                c.err(
                    format!("{base}.max_body"),
                    format!("expected a size above zero such as \"4MiB\", got {v}"),
                );
                DEFAULT_MAX_BODY
            }
        },
    };
    let forward_secret = match &raw.forward_secret {
        None | Some(toml::Value::Boolean(true)) => ForwardSecret::Received,
        Some(toml::Value::Boolean(false)) => ForwardSecret::Strip,
        Some(toml::Value::String(s)) => {
            let path = format!("{base}.forward_secret");
            if let Err(m) = check_token(s) {
                c.err(&path, m);
            } else if !secret_token.is_empty() && !secret_token.contains(s) {
                c.err(
                    &path,
                    "must be one of `secret_token` (the bots check the token Telegram was given)",
                );
            }
            ForwardSecret::Value(s.clone())
        }
        Some(v) => {
            c.err(
                format!("{base}.forward_secret"),
                format!("expected true, false or one of the tokens, got {v}"),
            );
            ForwardSecret::Received
        }
    };
    let retry_after = c.duration(
        &format!("{base}.retry_after"),
        raw.retry_after.as_deref(),
        DEFAULT_RETRY_AFTER,
    );
    if retry_after.subsec_nanos() != 0 || retry_after > MAX_RETRY_AFTER {
        c.err(
            format!("{base}.retry_after"),
            format!(
                "whole seconds from 1 to {} (Telegram reads Retry-After as an integer)",
                MAX_RETRY_AFTER.as_secs()
            ),
        );
    }
    (c.problems.len() == before).then_some(TelegramConfig {
        secret_token,
        allow_from,
        allow_nets,
        affinity,
        dedup_ttl,
        dedup_store,
        max_attempts,
        dead_letter,
        deadline,
        max_body,
        forward_secret,
        retry_after,
    })
}

/// The ports Telegram delivers webhooks to (setWebhook refuses others).
pub const TELEGRAM_PORTS: [u16; 4] = [443, 80, 88, 8443];

/// The shortest client idle timeout that keeps Telegram's connections: it reuses
/// up to `max_connections` of them and opens new ones slowly (reference T4).
pub const MIN_KEEPALIVE_FOR_TELEGRAM: Duration = Duration::from_secs(65);

/// Telegram routes served where Telegram cannot reach them as they are: a port it
/// does not deliver to, plain HTTP, a short idle timeout. Warnings rather than
/// errors: a load balancer in front may terminate TLS or map the port.
pub(in crate::config) fn warnings(c: &super::super::Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in c.routes.iter().enumerate() {
        if r.telegram().is_none() {
            continue;
        }
        let served = c
            .listeners
            .iter()
            .filter(|l| r.listener.as_ref().is_none_or(|n| *n == l.name));
        for l in served {
            let at = format!("route[{i}] ({:?}) on listener {:?}", r.name, l.name);
            let port = l.listen.port();
            if !TELEGRAM_PORTS.contains(&port) {
                out.push(format!(
                    "{at}: Telegram delivers webhooks only to ports 443, 80, 88 and 8443, and this listener is on {port} (fine behind a balancer that forwards one of those)"
                ));
            }
            if l.tls.is_none() {
                out.push(format!(
                    "{at}: Telegram delivers webhooks only over HTTPS, and this listener is plain HTTP (fine behind a balancer that terminates TLS)"
                ));
            }
            if l.limits.keepalive_timeout < MIN_KEEPALIVE_FOR_TELEGRAM {
                out.push(format!(
                    "{at}: keepalive_timeout is {}; Telegram reuses its connections and opens new ones slowly: keep it at least {}",
                    humantime::format_duration(l.limits.keepalive_timeout),
                    humantime::format_duration(MIN_KEEPALIVE_FOR_TELEGRAM)
                ));
            }
        }
    }
    out
}

/// Telegram's rule for `secret_token` (setWebhook answers 400 otherwise).
fn check_token(t: &str) -> Result<(), String> {
    let ok_chars = t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if t.is_empty() || t.len() > MAX_SECRET_LEN || !ok_chars {
        // The value itself is never repeated: it is a secret.
        return Err(format!(
            "a secret token is 1-{MAX_SECRET_LEN} characters of A-Z, a-z, 0-9, _ and - (Telegram refuses others); this one has {} characters{}",
            t.len(),
            if ok_chars { "" } else { ", some not allowed" }
        ));
    }
    Ok(())
}

fn secrets(c: &mut Checker, path: &str, v: Option<&toml::Value>) -> Vec<String> {
    let list: Vec<(String, String)> = match v {
        None => return Vec::new(),
        Some(toml::Value::String(s)) => vec![(path.to_owned(), s.clone())],
        Some(toml::Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                toml::Value::String(s) => Some((format!("{path}[{i}]"), s.clone())),
                _ => {
                    c.err(format!("{path}[{i}]"), "expected a string");
                    None
                }
            })
            .collect(),
        Some(_) => {
            c.err(path, "expected a token or a list of one or two tokens");
            return Vec::new();
        }
    };
    if list.is_empty() || list.len() > 2 {
        c.err(
            path,
            format!(
                "expected one token, or two while rotating from one to the other; got {}",
                list.len()
            ),
        );
    }
    for (p, t) in &list {
        if let Err(m) = check_token(t) {
            c.err(p, m);
        }
    }
    list.into_iter().map(|(_, t)| t).collect()
}

/// `allow_from`: CIDR blocks, addresses and the presets `telegram` and `any`.
fn allow_from(
    c: &mut Checker,
    path: &str,
    raw: &Option<Vec<String>>,
) -> (Vec<String>, Option<Vec<Cidr>>) {
    let written = raw.clone().unwrap_or_else(|| vec!["telegram".to_owned()]);
    if written.is_empty() {
        c.err(
            path,
            "an empty list would refuse Telegram too; write [\"telegram\"] (the default) or [\"any\"]",
        );
    }
    let mut nets = Vec::new();
    let mut any = false;
    for (i, entry) in written.iter().enumerate() {
        match entry.as_str() {
            "any" => any = true,
            "telegram" => {
                let preset: Vec<String> = TELEGRAM_NETWORKS.iter().map(|s| s.to_string()).collect();
                nets.extend(super::super::access::blocks(c, path, preset));
            }
            _ => nets.extend(super::super::access::blocks(
                c,
                &format!("{path}[{i}]"),
                vec![entry.clone()],
            )),
        }
    }
    // `blocks` names a list's entries `path[0]`: of the one-entry list it was given.
    for p in c.problems.iter_mut() {
        if let Some(rest) = p.path.strip_prefix(path) {
            if let Some(inner) = rest.strip_suffix("[0]") {
                if inner.starts_with('[') {
                    p.path = format!("{path}{inner}");
                }
            }
        }
    }
    (written, (!any).then_some(nets))
}

/// The dead-letter file: its directory must exist and the file be writable
/// (opened for appending here, as the writer will).
fn dead_letter(c: &mut Checker, path: &str, p: &str, dir: &Path) -> Option<PathBuf> {
    let file = dir.join(p);
    let parent = file.parent().unwrap_or(Path::new("."));
    if !parent.is_dir() {
        c.err(
            path,
            format!("the directory {} does not exist", parent.display()),
        );
        return None;
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
    {
        c.err(path, format!("cannot append to {}: {e}", file.display()));
        return None;
    }
    Some(file)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::validate::validate;
    use super::super::{PathMatch, RouteConfig};
    use super::*;

    fn config(telegram: &str) -> String {
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8443\"\n\n\
             [[route]]\nname = \"shop\"\npath = \"/tg/shop\"\nupstream = \"bots\"\n\
             [route.telegram]\n{telegram}\n\
             [upstream.bots]\nservers = [{{ addr = \"127.0.0.1:9001\" }}]\n"
        )
    }

    fn route(telegram: &str) -> RouteConfig {
        let mut c = validate(&config(telegram), Path::new("/tmp/t.toml")).expect("valid");
        c.routes.remove(0)
    }

    fn problems(telegram: &str) -> Vec<(String, String)> {
        validate(&config(telegram), Path::new("/tmp/t.toml"))
            .expect_err("expected problems")
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    #[test]
    fn defaults_are_the_references() {
        let r = route("");
        let t = r.telegram().expect("a telegram route");
        assert!(t.secret_token.is_empty());
        assert_eq!(t.allow_from, ["telegram"]);
        let nets: Vec<String> = t
            .allow_nets
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(nets, TELEGRAM_NETWORKS);
        assert_eq!(t.affinity, Affinity::Chat);
        assert_eq!(t.dedup_ttl, DEFAULT_DEDUP_TTL);
        assert_eq!(t.dedup_store, DedupStore::Memory);
        assert_eq!(t.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(t.deadline, DEFAULT_DEADLINE);
        assert_eq!(t.max_body, DEFAULT_MAX_BODY);
        assert_eq!(t.forward_secret, ForwardSecret::Received);
        assert_eq!(t.retry_after, DEFAULT_RETRY_AFTER);
        // The route itself: exact path, POST alone, the mode's timeouts.
        assert_eq!(r.path, PathMatch::Exact("/tg/shop".into()));
        assert_eq!(r.methods, Some(vec![http::Method::POST]));
        let super::super::RouteAction::Proxy(p) = &r.action else {
            panic!()
        };
        assert_eq!(p.timeouts.connect, DEFAULT_TELEGRAM_CONNECT_TIMEOUT);
        assert_eq!(p.timeouts.read, DEFAULT_TELEGRAM_READ_TIMEOUT);
        assert_eq!(p.retry.tries, 0, "a failed connect may try every bot");
    }

    #[test]
    fn every_key_is_checked_at_its_path_and_secrets_are_never_repeated() {
        let p = problems(
            "secret_token = [\"ok-1\", \"bad token!\", \"x\"]\n\
             allow_from = [\"telegram\", \"10.1.2.3/8\", \"nonsense\"]\n\
             affinity = \"chats\"\n\
             dedup_ttl = \"soon\"\n\
             dedup_store = \"memcached://x\"\n\
             max_attempts = 0\n\
             dead_letter = \"/nonexistent-dir/dead.jsonl\"\n\
             deadline = \"60s\"\n\
             max_body = \"lots\"\n\
             forward_secret = \"other\"\n\
             retry_after = \"1500ms\"\n",
        );
        let has = |key: &str, part: &str| {
            assert!(
                p.iter().any(|(k, m)| k == key && m.contains(part)),
                "no {key}: …{part}… in {p:#?}"
            )
        };
        let base = "route[0].telegram";
        has(&format!("{base}.secret_token"), "one token, or two");
        has(&format!("{base}.secret_token[1]"), "some not allowed");
        has(&format!("{base}.allow_from[1]"), "bits set past its /8");
        has(&format!("{base}.allow_from[2]"), "invalid address block");
        has(
            &format!("{base}.affinity"),
            "\"chat\", \"user\" or \"none\"",
        );
        has(&format!("{base}.dedup_ttl"), "invalid duration");
        has(&format!("{base}.dedup_store"), "expected \"memory\"");
        has(&format!("{base}.max_attempts"), "at least 1");
        has(&format!("{base}.dead_letter"), "does not exist");
        has(
            &format!("{base}.deadline"),
            "Telegram gives up on a request at 60 s",
        );
        has(&format!("{base}.max_body"), "expected a size");
        has(
            &format!("{base}.forward_secret"),
            "must be one of `secret_token`",
        );
        has(&format!("{base}.retry_after"), "whole seconds");
        for (_, m) in &p {
            assert!(!m.contains("bad token!") && !m.contains("ok-1"), "{m}");
        }
    }

    #[test]
    fn the_mode_fixes_what_a_webhook_cannot_change() {
        let text = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8443\"\n\n\
             [[route]]\npath = \"/tg/a\"\nmethods = [\"GET\"]\nupstream = \"bots\"\n\
             next_upstream = [\"error\"]\nmax_body_size = \"1MiB\"\n\
             [route.telegram]\n\
             [[route]]\npath = \"/tg/b\"\nrespond = {}\n\
             [route.telegram]\n\
             [upstream.bots]\nservers = [{ addr = \"127.0.0.1:9001\" }]\n";
        let p: Vec<(String, String)> = validate(text, Path::new("/tmp/t.toml"))
            .expect_err("expected problems")
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect();
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"route[0].methods"), "{p:#?}");
        assert!(keys.contains(&"route[0].next_upstream"), "{p:#?}");
        assert!(keys.contains(&"route[0].max_body_size"), "{p:#?}");
        assert!(keys.contains(&"route[1].telegram"), "{p:#?}");
    }

    #[test]
    fn a_webhook_telegram_cannot_reach_is_warned_about() {
        let c = validate(&config(""), Path::new("/tmp/t.toml")).unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("only over HTTPS"), "{w:#?}");
        let on_9000 = config("").replace("8443", "9000").replace(
            "listen = \"127.0.0.1:9000\"",
            "listen = \"127.0.0.1:9000\"\nkeepalive_timeout = \"10s\"",
        );
        let c = validate(&on_9000, Path::new("/tmp/t.toml")).unwrap();
        let w = c.warnings().join("\n");
        assert!(w.contains("listener is on 9000"), "{w}");
        assert!(w.contains("keepalive_timeout is 10s"), "{w}");
        assert!(
            w.starts_with("route[0] (\"shop\") on listener \"public\""),
            "{w}"
        );
    }

    #[test]
    fn a_dump_hides_the_tokens_and_reads_back() {
        let text = config(
            "secret_token = [\"s3cr3t-A\", \"s3cr3t-B\"]\nforward_secret = \"s3cr3t-A\"\n\
             allow_from = [\"any\"]\naffinity = \"user\"\ndeadline = \"20s\"\n",
        );
        let c = validate(&text, Path::new("/tmp/t.toml")).unwrap();
        let dump = c.dump(crate::config::Secrets::Redacted).unwrap();
        assert!(!dump.contains("s3cr3t"), "{dump}");
        let shown = c.dump(crate::config::Secrets::Shown).unwrap();
        let again = validate(&shown, Path::new("/tmp/t.toml")).expect("the dump reads back");
        assert_eq!(again.routes[0].telegram(), c.routes[0].telegram());
        assert_eq!(c.routes[0].telegram().unwrap().allow_nets, None);
    }
}
