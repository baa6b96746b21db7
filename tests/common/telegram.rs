//! The Telegram side of the Telegram-mode tests (issue 15): updates as Telegram
//! writes them, a sender that delivers them as Telegram's webhook actor does, and
//! bot origins that record what they processed.
//!
//! - `World` generates realistic updates: message, edited_message, callback_query
//!   (with its message), channel_post (chat ids `-100…`), inline_query and
//!   my_chat_member, in private chats, groups, supergroups and channels, with
//!   `update_id` increasing by one and bodies in Telegram's own shape
//!   (`{"update_id":N,\n"message":{"message_id":…,"from":…,"chat":…,"date":…,"text":…}}`).
//! - `Sender` delivers like Telegram (reference part 1.3): one request in flight per
//!   queue (the chat for message-like updates, the user for callback and inline
//!   queries), over a few HTTP/1.1 keep-alive connections, `POST` with
//!   `Content-Type: application/json` and the secret header; a non-2xx or a failed
//!   exchange is retried with Telegram's backoff (0, 2, 4, … 64 s, then 60-120 s)
//!   and an integer `Retry-After` replaces it, both scaled from seconds down to
//!   `SenderOptions::second`. It can re-send a share of the updates once more after
//!   their 2xx, as Telegram does when it never saw an answer. It records every
//!   attempt of every update.
//! - `Bot` is a bot instance: an HTTP/1.1 server on 127.0.0.1 that parses each update,
//!   records it (`Seen`: bot, update_id, affinity key, arrival, headers, body, its
//!   answer) and answers 200 `{}`, or a webhook reply (a Bot API method as JSON or as
//!   multipart/form-data); it can be slow, fail chosen update_ids with 500 (poison),
//!   fail bodies that are not updates, and be killed (listener closed, connections
//!   dropped, handlers cut short) and restarted on the same port.
//! - Proxy configuration, metrics and dead-letter helpers.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use serde_json::Value;
use switchyard::Running;
use tokio::sync::{mpsc, oneshot, watch};

use super::control;

/// The secret header Telegram sends when `setWebhook` got a `secret_token`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The token the tests' routes expect unless they say otherwise.
pub const SECRET: &str = "s3cr3t-A";

/// Upper bound on waiting for an event in these tests (a run of a few hundred
/// updates, a proxy noticing a dead bot): generous for a loaded 2-core machine,
/// and only ever the bound of a poll, never a sleep.
pub const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator, so that a failing run can be
/// replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit function of `x`, for choices that
/// must depend on an update alone (which ones are re-sent, a boundary).
pub fn mix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------
// Updates
// ---------------------------------------------------------------------------------

/// The update types the generator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Message,
    EditedMessage,
    CallbackQuery,
    ChannelPost,
    InlineQuery,
    MyChatMember,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Message,
        Kind::EditedMessage,
        Kind::CallbackQuery,
        Kind::ChannelPost,
        Kind::InlineQuery,
        Kind::MyChatMember,
    ];

    /// The update's field name, also the dead-letter line's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::EditedMessage => "edited_message",
            Kind::CallbackQuery => "callback_query",
            Kind::ChannelPost => "channel_post",
            Kind::InlineQuery => "inline_query",
            Kind::MyChatMember => "my_chat_member",
        }
    }

    /// Whether Telegram queues this type per user rather than per chat (reference
    /// 1.3, "Queues in code").
    pub fn queued_by_user(self) -> bool {
        matches!(self, Kind::CallbackQuery | Kind::InlineQuery)
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub first_name: String,
    pub username: String,
    pub language: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatType {
    Private,
    Group,
    Supergroup,
    Channel,
}

#[derive(Debug, Clone)]
pub struct Chat {
    pub id: i64,
    pub kind: ChatType,
    pub title: String,
    /// Indexes into `World::users` of the people who write here (a private chat's
    /// one user; nobody for a channel, whose posts are signed by the channel).
    pub members: Vec<usize>,
}

/// One generated update.
#[derive(Debug, Clone)]
pub struct Update {
    pub id: i64,
    pub kind: Kind,
    /// The chat of the table of reference 1.4 (`message.chat.id`,
    /// `callback_query.message.chat.id`, …); `None` for an inline query.
    pub chat: Option<i64>,
    /// The user who caused it (for a channel post, the channel).
    pub user: i64,
    /// The body, byte for byte as Telegram would send it.
    pub body: Bytes,
}

impl Update {
    /// Telegram's delivery queue (`webhook_queue_id`): one request in flight per
    /// queue, a failing head blocks it.
    pub fn queue(&self) -> i64 {
        if self.kind.queued_by_user() {
            self.user
        } else {
            self.chat.expect("message-like updates have a chat")
        }
    }

    /// The affinity key under `affinity = "chat"`: the table's chat id, or its
    /// fallback, the user (an inline query's `from.id`). A private chat's id is
    /// its user's id, so a user's inline queries share a key with that chat.
    pub fn key(&self) -> i64 {
        self.chat.unwrap_or(self.user)
    }

    /// The body parsed.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("generated updates are JSON")
    }
}

/// Texts with what a body must carry through unchanged: non-ASCII, emoji, escaped
/// quotes and newlines.
const TEXTS: &[&str] = &[
    "/start",
    "hello",
    "Привет! Как дела?",
    "order #42: 2× pizza 🍕",
    "line one\nline \"two\"",
    "ok 👍",
    "what's the status of my ticket?",
    "عربى",
];

const NAMES: &[&str] = &[
    "Ann", "Boris", "Chen", "Dana", "Emre", "Fatima", "Gus", "Hana", "Ivo", "Júlia", "Kofi", "Lena",
];

const LANGUAGES: &[&str] = &["en", "ru", "de", "pt-br", "ar"];

/// A bot's world: users, chats, and the update and message counters, producing
/// updates in `update_id` order.
pub struct World {
    rng: Rng,
    next_update: i64,
    next_message: i64,
    date: i64,
    pub users: Vec<User>,
    pub chats: Vec<Chat>,
    /// The bot itself, author of the messages that carry inline keyboards.
    pub bot: User,
}

/// Telegram's `update_id`s are large; these tests start where a real bot's might.
pub const FIRST_UPDATE_ID: i64 = 815_000_000;

impl World {
    /// `chats` chats (at least 10): four in ten private, two group, three
    /// supergroup, one channel; as many users as chats.
    pub fn new(seed: u64, chats: usize) -> World {
        assert!(chats >= 10, "want every chat type");
        let mut rng = Rng::new(seed);
        let users: Vec<User> = (0..chats)
            .map(|i| {
                let first = NAMES[i % NAMES.len()];
                User {
                    id: 100_000_000 + rng.below(6_900_000_000) as i64,
                    first_name: first.to_owned(),
                    username: format!("{}_{i}", first.to_lowercase()),
                    language: LANGUAGES[rng.below(LANGUAGES.len() as u64) as usize],
                }
            })
            .collect();
        let mut chat_list = Vec::new();
        for i in 0..chats {
            let (id, kind) = match i % 10 {
                0..=3 => (users[i].id, ChatType::Private),
                4 | 5 => (
                    -(1_000_000_000 + rng.below(3_000_000_000) as i64),
                    ChatType::Group,
                ),
                6..=8 => (supergroup_id(&mut rng), ChatType::Supergroup),
                _ => (supergroup_id(&mut rng), ChatType::Channel),
            };
            let members = match kind {
                ChatType::Private => vec![i],
                ChatType::Channel => vec![],
                _ => (0..3 + rng.below(3))
                    .map(|_| rng.below(users.len() as u64) as usize)
                    .collect(),
            };
            chat_list.push(Chat {
                id,
                kind,
                title: format!("chat {i}"),
                members,
            });
        }
        World {
            rng,
            next_update: FIRST_UPDATE_ID,
            next_message: 1,
            date: 1_796_000_000,
            users,
            chats: chat_list,
            bot: User {
                id: 7_000_000_001,
                first_name: "Shop".to_owned(),
                username: "shop_bot".to_owned(),
                language: "en",
            },
        }
    }

    /// Starts the `update_id`s at `first` (each bot has its own sequence, so two
    /// routes may well see the same ids).
    pub fn starting_at(mut self, first: i64) -> World {
        self.next_update = first;
        self
    }

    /// `n` random updates of every type.
    pub fn batch(&mut self, n: usize) -> Vec<Update> {
        (0..n).map(|_| self.next()).collect()
    }

    /// A random update: mostly messages, some of every other type.
    pub fn next(&mut self) -> Update {
        let roll = self.rng.below(100);
        let kind = match roll {
            0..=39 => Kind::Message,
            40..=49 => Kind::EditedMessage,
            50..=64 => Kind::CallbackQuery,
            65..=74 => Kind::ChannelPost,
            75..=84 => Kind::InlineQuery,
            _ => Kind::MyChatMember,
        };
        self.of(kind)
    }

    /// A random update of type `kind`.
    pub fn of(&mut self, kind: Kind) -> Update {
        let chat = match kind {
            Kind::ChannelPost => self.random_chat(|c| c.kind == ChatType::Channel),
            Kind::MyChatMember => self.random_chat(|_| true),
            Kind::InlineQuery => {
                let u = self.rng.below(self.users.len() as u64) as usize;
                return self.inline_query(u);
            }
            _ => self.random_chat(|c| c.kind != ChatType::Channel),
        };
        self.in_chat(kind, chat)
    }

    fn random_chat(&mut self, pred: impl Fn(&Chat) -> bool) -> usize {
        let fits: Vec<usize> = (0..self.chats.len())
            .filter(|&i| pred(&self.chats[i]))
            .collect();
        *self.rng.pick(&fits)
    }

    /// A text message in the chat with id `chat_id`.
    pub fn message(&mut self, chat_id: i64) -> Update {
        let i = self.chat_index(chat_id);
        self.in_chat(Kind::Message, i)
    }

    fn chat_index(&self, chat_id: i64) -> usize {
        self.chats
            .iter()
            .position(|c| c.id == chat_id)
            .unwrap_or_else(|| panic!("no chat {chat_id}"))
    }

    /// The ids of the chats that are not channels (where people write).
    pub fn conversation_ids(&self) -> Vec<i64> {
        self.chats
            .iter()
            .filter(|c| c.kind != ChatType::Channel)
            .map(|c| c.id)
            .collect()
    }

    fn take_ids(&mut self) -> (i64, i64, i64) {
        let id = self.next_update;
        self.next_update += 1;
        let message_id = self.next_message;
        self.next_message += 1;
        self.date += 1 + self.rng.below(3) as i64;
        (id, message_id, self.date)
    }

    fn in_chat(&mut self, kind: Kind, chat_index: usize) -> Update {
        let (id, message_id, date) = self.take_ids();
        let chat = self.chats[chat_index].clone();
        let text = *self.rng.pick(TEXTS);
        // Who acts: a member, or the chat itself for a channel.
        let user = match chat.members.as_slice() {
            [] => None,
            m => Some(self.users[*self.rng.pick(m)].clone()),
        };
        let chat_json = chat_json(&chat, &self.users);
        let from = |u: &Option<User>| u.as_ref().map(user_json).unwrap_or_default();
        let object = match kind {
            Kind::Message => format!(
                "{{\"message_id\":{message_id},\"from\":{},\"chat\":{chat_json},\"date\":{date},\"text\":{}}}",
                from(&user),
                js(text)
            ),
            Kind::EditedMessage => format!(
                "{{\"message_id\":{},\"from\":{},\"chat\":{chat_json},\"date\":{},\"edit_date\":{date},\"text\":{}}}",
                message_id.saturating_sub(1).max(1),
                from(&user),
                date - 60,
                js(&format!("{text} (edited)"))
            ),
            Kind::ChannelPost => format!(
                "{{\"message_id\":{message_id},\"sender_chat\":{chat_json},\"chat\":{chat_json},\"date\":{date},\"text\":{}}}",
                js(text)
            ),
            Kind::CallbackQuery => {
                let data = *self.rng.pick(&["buy:1", "page:2", "lang:en", "cancel"]);
                format!(
                    "{{\"id\":\"{}\",\"from\":{},\"message\":{{\"message_id\":{message_id},\"from\":{},\"chat\":{chat_json},\"date\":{},\"text\":\"Pick one\",\"reply_markup\":{{\"inline_keyboard\":[[{{\"text\":\"Buy\",\"callback_data\":\"buy:1\"}},{{\"text\":\"Next\",\"callback_data\":\"page:2\"}}]]}}}},\"chat_instance\":\"{}\",\"data\":\"{data}\"}}",
                    self.rng.next_u64(),
                    from(&user),
                    user_json(&self.bot),
                    date - 30,
                    -(self.rng.below(1 << 62) as i64)
                )
            }
            Kind::MyChatMember => {
                let (old, new) = if self.rng.chance(0.5) {
                    ("left", "member")
                } else {
                    ("member", "kicked")
                };
                // In a channel the change is made by an administrator.
                let actor = user.clone().unwrap_or_else(|| self.users[0].clone());
                format!(
                    "{{\"chat\":{chat_json},\"from\":{},\"date\":{date},\"old_chat_member\":{{\"user\":{},\"status\":\"{old}\"}},\"new_chat_member\":{{\"user\":{},\"status\":\"{new}\"}}}}",
                    user_json(&actor),
                    user_json(&self.bot),
                    user_json(&self.bot)
                )
            }
            Kind::InlineQuery => unreachable!("inline queries have no chat"),
        };
        let acting = match (kind, &user) {
            (Kind::MyChatMember, None) => self.users[0].id,
            (_, Some(u)) => u.id,
            (_, None) => chat.id,
        };
        Update {
            id,
            kind,
            chat: Some(chat.id),
            user: acting,
            body: update_body(id, kind, &object),
        }
    }

    fn inline_query(&mut self, user_index: usize) -> Update {
        let (id, _, _) = self.take_ids();
        let user = self.users[user_index].clone();
        let query = *self.rng.pick(&["pizza", "", "cat gif", "погода"]);
        let object = format!(
            "{{\"id\":\"{}\",\"from\":{},\"chat_type\":\"sender\",\"query\":{},\"offset\":\"\"}}",
            self.rng.next_u64(),
            user_json(&user),
            js(query)
        );
        Update {
            id,
            kind: Kind::InlineQuery,
            chat: None,
            user: user.id,
            body: update_body(id, Kind::InlineQuery, &object),
        }
    }
}

fn supergroup_id(rng: &mut Rng) -> i64 {
    // "-100" followed by ten digits, as supergroups and channels are written.
    -(1_000_000_000_000 + 1_000_000_000 + rng.below(8_999_999_999) as i64)
}

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn user_json(u: &User) -> String {
    format!(
        "{{\"id\":{},\"is_bot\":{},\"first_name\":{},\"username\":{},\"language_code\":\"{}\"}}",
        u.id,
        u.id == 7_000_000_001,
        js(&u.first_name),
        js(&u.username),
        u.language
    )
}

fn chat_json(c: &Chat, users: &[User]) -> String {
    match c.kind {
        ChatType::Private => {
            let u = &users[c.members[0]];
            format!(
                "{{\"id\":{},\"first_name\":{},\"username\":{},\"type\":\"private\"}}",
                c.id,
                js(&u.first_name),
                js(&u.username)
            )
        }
        ChatType::Group => format!(
            "{{\"id\":{},\"title\":{},\"type\":\"group\",\"all_members_are_administrators\":true}}",
            c.id,
            js(&c.title)
        ),
        ChatType::Supergroup => format!(
            "{{\"id\":{},\"title\":{},\"type\":\"supergroup\"}}",
            c.id,
            js(&c.title)
        ),
        ChatType::Channel => format!(
            "{{\"id\":{},\"title\":{},\"type\":\"channel\"}}",
            c.id,
            js(&c.title)
        ),
    }
}

/// `{"update_id":N,\n"<type>":{...}}`: Telegram's server writes the id first, then
/// a newline (reference 1.2).
fn update_body(id: i64, kind: Kind, object: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"update_id\":{id},\n\"{}\":{object}}}",
        kind.as_str()
    ))
}

/// The affinity key of a parsed update by the table of reference 1.4 (the types
/// the generator writes, and a few more): the chat, else the fallback user.
pub fn affinity_key(v: &Value) -> Option<i64> {
    let chat_of = |field: &str| v.get(field)?.get("chat")?.get("id")?.as_i64();
    for field in [
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
    ] {
        if let Some(id) = chat_of(field) {
            return Some(id);
        }
    }
    if let Some(cb) = v.get("callback_query") {
        return cb
            .get("message")
            .and_then(|m| m.get("chat")?.get("id")?.as_i64())
            .or_else(|| cb.get("from")?.get("id")?.as_i64());
    }
    [
        "inline_query",
        "chosen_inline_result",
        "shipping_query",
        "pre_checkout_query",
    ]
    .iter()
    .find_map(|f| v.get(*f)?.get("from")?.get("id")?.as_i64())
}

/// The update's type: its one field besides `update_id`.
pub fn update_kind(v: &Value) -> Option<String> {
    v.as_object()?
        .keys()
        .find(|k| k.as_str() != "update_id")
        .cloned()
}

// ---------------------------------------------------------------------------------
// Bots
// ---------------------------------------------------------------------------------

/// What a bot answers to an update it handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 200 `application/json` `{}`: aiogram's answer.
    Empty,
    /// 200 with a Bot API call as JSON (`sendMessage` naming the bot and the
    /// update), so that each answer is its own: a replayed answer can be told from
    /// another.
    Method,
    /// 200 `multipart/form-data` with a `webhookBoundary…` boundary, as aiogram
    /// answers a handler that returns a method, with a binary part (bytes that are
    /// not UTF-8) so that nothing lossy survives unnoticed.
    Multipart,
}

impl Reply {
    /// The content type and body `bot` answers for update `id` with key `key`.
    pub fn render(self, bot: &str, id: i64, key: Option<i64>) -> (String, Bytes) {
        let key = key.unwrap_or(0);
        match self {
            Reply::Empty => ("application/json".to_owned(), Bytes::from_static(b"{}")),
            Reply::Method => (
                "application/json".to_owned(),
                Bytes::from(format!(
                    "{{\"method\":\"sendMessage\",\"chat_id\":{key},\"text\":\"{bot} handled {id} ✓\"}}"
                )),
            ),
            Reply::Multipart => {
                let boundary = format!("webhookBoundary{:016x}", mix(id as u64));
                let mut body = Vec::new();
                let mut field = |name: &str, value: &[u8], extra: &str| {
                    body.extend_from_slice(
                        format!(
                            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{extra}\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    body.extend_from_slice(value);
                    body.extend_from_slice(b"\r\n");
                };
                field("method", b"sendDocument", "");
                field("chat_id", key.to_string().as_bytes(), "");
                field(
                    "caption",
                    format!("{bot} handled {id} — ✓\r\nsecond line").as_bytes(),
                    "",
                );
                let blob: Vec<u8> = (0..=255u8).rev().collect();
                field(
                    "document",
                    &blob,
                    "; filename=\"blob.bin\"\r\nContent-Type: application/octet-stream",
                );
                body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                (
                    format!("multipart/form-data; boundary={boundary}"),
                    Bytes::from(body),
                )
            }
        }
    }
}

/// How a bot behaves; changed while it runs.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Time each update takes to handle.
    pub delay: Duration,
    /// Per update_id handling times, instead of `delay`.
    pub slow: HashMap<i64, Duration>,
    /// Update ids whose handler fails: 500 with `Connection: close`, as aiogram.
    pub poison: HashSet<i64>,
    /// The status for a body that is not an update (aiogram: 500).
    pub invalid_status: u16,
    pub reply: Reply,
    /// Per update_id answers, instead of `reply`.
    pub replies: HashMap<i64, Reply>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            delay: Duration::ZERO,
            slow: HashMap::new(),
            poison: HashSet::new(),
            invalid_status: 200,
            reply: Reply::Empty,
            replies: HashMap::new(),
        }
    }
}

/// What a bot answered.
#[derive(Debug, Clone)]
pub struct Answered {
    pub at: Instant,
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// One request a bot received (`/health` checks aside).
#[derive(Debug, Clone)]
pub struct Seen {
    pub bot: String,
    /// When its whole body had arrived.
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Parsed from the body; `None` when it is not a JSON object with one.
    pub update_id: Option<i64>,
    pub kind: Option<String>,
    pub key: Option<i64>,
    /// `None` while it is being handled, or if the bot was killed meanwhile.
    pub answer: Option<Answered>,
}

impl Seen {
    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The single value of header `name`; panics if it came more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        assert!(
            all.len() <= 1,
            "{} got {name} {} times: {all:?}",
            self.bot,
            all.len()
        );
        all.into_iter().next()
    }
}

struct BotInner {
    name: String,
    rules: Mutex<Rules>,
    seen: Mutex<Vec<Seen>>,
    /// Bumped on every change of `seen`, to await arrivals and answers.
    changes: watch::Sender<u64>,
}

impl BotInner {
    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// A bot instance behind the proxy, on a port it keeps while killed (as
/// `control::Origin` does).
pub struct Bot {
    port: control::Port,
    inner: Arc<BotInner>,
}

impl Bot {
    /// Starts bot `name` on 127.0.0.1 and a port of the kernel's choosing.
    pub async fn start(name: &str) -> Bot {
        let (changes, _) = watch::channel(0);
        let inner = Arc::new(BotInner {
            name: name.to_owned(),
            rules: Mutex::new(Rules::default()),
            seen: Mutex::new(Vec::new()),
            changes,
        });
        let handler = Arc::clone(&inner);
        let port = control::Port::open(move |req| bot_handle(Arc::clone(&handler), req));
        Bot { port, inner }
    }

    pub fn addr(&self) -> SocketAddr {
        self.port.addr()
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Changes the bot's rules.
    pub fn rules(&self, f: impl FnOnce(&mut Rules)) {
        f(&mut self.inner.rules.lock().unwrap());
    }

    /// Every request received so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// The requests that carried update `id`.
    pub fn seen_update(&self, id: i64) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.update_id == Some(id))
            .cloned()
            .collect()
    }

    pub fn count(&self) -> usize {
        self.inner.seen.lock().unwrap().len()
    }

    /// Requests being handled now.
    pub fn busy(&self) -> usize {
        self.inner
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.answer.is_none())
            .count()
    }

    /// Waits until a received request satisfies `pred`; returns it.
    pub async fn wait_seen(&self, limit: Duration, pred: impl Fn(&Seen) -> bool) -> Seen {
        let mut rx = self.inner.changes.subscribe();
        let fut = async {
            loop {
                if let Some(s) = self.inner.seen.lock().unwrap().iter().find(|s| pred(s)) {
                    return s.clone();
                }
                rx.changed().await.expect("bot alive");
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or_else(|_| panic!("bot {}: awaited request within {limit:?}", self.name()))
    }

    /// Closes the listener and drops every connection, cutting running handlers
    /// short (their `Seen` stays without an answer); the port then refuses
    /// connections and stays reserved for `restart`.
    pub async fn kill(&self) {
        assert!(
            self.port.close().await,
            "bot {} is already killed",
            self.name()
        );
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        assert!(
            self.port.reopen().await,
            "bot {} is not killed",
            self.name()
        );
    }
}

/// Starts one bot per name.
pub async fn start_bots(names: &[&str]) -> Vec<Bot> {
    let mut bots = Vec::new();
    for n in names {
        bots.push(Bot::start(n).await);
    }
    bots
}

/// Everything every bot received, by arrival time.
pub fn all_seen(bots: &[Bot]) -> Vec<Seen> {
    let mut all: Vec<Seen> = bots.iter().flat_map(Bot::seen).collect();
    all.sort_by_key(|s| s.at);
    all
}

async fn bot_handle(
    inner: Arc<BotInner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if req.uri().path() == control::HEALTH_PATH {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let parsed: Option<Value> = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|v| v.get("update_id").and_then(Value::as_i64).is_some());
    let update_id = parsed.as_ref().and_then(|v| v["update_id"].as_i64());
    let seen = Seen {
        bot: inner.name.clone(),
        at: Instant::now(),
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
        update_id,
        kind: parsed.as_ref().and_then(update_kind),
        key: parsed.as_ref().and_then(affinity_key),
        answer: None,
    };
    let key = seen.key;
    let index = {
        let mut log = inner.seen.lock().unwrap();
        log.push(seen);
        log.len() - 1
    };
    inner.changed();
    let rules = inner.rules.lock().unwrap().clone();
    let delay = update_id
        .and_then(|id| rules.slow.get(&id).copied())
        .unwrap_or(rules.delay);
    if !delay.is_zero() {
        // Killing the bot cuts this short: the update then has no answer.
        tokio::time::sleep(delay).await;
    }
    let (status, content_type, body, close) = match update_id {
        None => (
            rules.invalid_status,
            "application/json".to_owned(),
            Bytes::from_static(b"{}"),
            rules.invalid_status >= 500,
        ),
        Some(id) if rules.poison.contains(&id) => (
            500,
            "text/plain; charset=utf-8".to_owned(),
            Bytes::from_static(b"500: Internal Server Error"),
            true,
        ),
        Some(id) => {
            let reply = rules.replies.get(&id).copied().unwrap_or(rules.reply);
            let (ct, b) = reply.render(&inner.name, id, key);
            (200, ct, b, false)
        }
    };
    inner.seen.lock().unwrap()[index].answer = Some(Answered {
        at: Instant::now(),
        status,
        content_type: content_type.clone(),
        body: body.clone(),
    });
    inner.changed();
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(&content_type).expect("ascii content type"),
    );
    if close {
        // aiogram's failures close the connection: every retry of a poison update
        // costs the proxy a new connection.
        res.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(res)
}

// ---------------------------------------------------------------------------------
// The sender
// ---------------------------------------------------------------------------------

/// An answer as the sender got it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    pub fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `Retry-After` value as Telegram reads it: an integer of seconds, or
    /// `None` (absent, or an HTTP date, which Telegram ignores).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.header("retry-after")?.trim().parse().ok()
    }
}

/// One exchange of an update.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub sent: Instant,
    pub done: Instant,
    /// The answer, or what went wrong (connect, reset, timeout).
    pub result: Result<Answer, String>,
}

impl Attempt {
    pub fn status(&self) -> Option<u16> {
        self.result.as_ref().ok().map(|a| a.status)
    }

    pub fn answer(&self) -> &Answer {
        self.result
            .as_ref()
            .unwrap_or_else(|e| panic!("attempt failed: {e}"))
    }
}

/// Everything the sender did with one update.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub update: Update,
    /// The tries up to and including the first 2xx.
    pub attempts: Vec<Attempt>,
    /// The extra send after the 2xx, for updates chosen to be re-sent.
    pub resent: Option<Attempt>,
    /// The sender stopped trying (`max_tries`) without a 2xx.
    pub gave_up: bool,
}

impl Delivery {
    /// The 2xx answer, if it came.
    pub fn answer(&self) -> Option<&Answer> {
        self.attempts
            .last()
            .and_then(|a| a.result.as_ref().ok())
            .filter(|a| a.success())
    }

    pub fn statuses(&self) -> Vec<Option<u16>> {
        self.attempts.iter().map(Attempt::status).collect()
    }

    /// Finished: delivered, or given up.
    pub fn done(&self) -> bool {
        self.gave_up || self.answer().is_some()
    }
}

#[derive(Debug, Clone)]
pub struct SenderOptions {
    pub path: String,
    /// The `X-Telegram-Bot-Api-Secret-Token` value, if any.
    pub secret: Option<String>,
    /// Keep-alive connections (Telegram's `max_connections`, 40 by default; a few
    /// are enough for a test and still deliver many chats at once).
    pub connections: usize,
    /// What one of Telegram's seconds becomes: its backoff (0, 2, 4, … s) and an
    /// integer `Retry-After` are scaled by it, so a test sees Telegram's rhythm
    /// in milliseconds.
    pub second: Duration,
    /// How long an exchange may take before it counts as failed (Telegram's 60 s
    /// read timeout). Not scaled: a loaded machine must not turn a slow exchange
    /// into a re-send that a test would then count.
    pub timeout: Duration,
    /// The share of updates sent once more after their 2xx (as when Telegram
    /// never saw the answer), chosen by update_id.
    pub resend_share: f64,
    /// Tries per update before giving up (Telegram keeps trying for a day).
    pub max_tries: usize,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

impl Default for SenderOptions {
    fn default() -> SenderOptions {
        SenderOptions {
            path: "/tg/shop".to_owned(),
            secret: Some(SECRET.to_owned()),
            connections: 8,
            second: Duration::from_millis(10),
            timeout: Duration::from_secs(10),
            resend_share: 0.0,
            max_tries: 500,
            headers: Vec::new(),
        }
    }
}

impl SenderOptions {
    /// Whether update `id` is re-sent after its 2xx.
    pub fn resends(&self, id: i64) -> bool {
        ((mix(id as u64 ^ 0x5EED) % 1_000_000) as f64) < self.resend_share * 1_000_000.0
    }

    /// Telegram's wait before the next try after the `failures`-th failure
    /// (`on_update_error`): the first retry is immediate, then 2, 4, 8, 16, 32,
    /// 64 s, then 60-120 s; an integer `Retry-After` replaces it (clamped to
    /// 0..3600 s).
    pub fn backoff(&self, failures: usize, retry_after: Option<u64>, rng: &mut Rng) -> Duration {
        let secs = match retry_after {
            Some(s) => s.min(3600) as f64,
            None => match failures {
                0 | 1 => 0.0,
                2..=7 => f64::from(1u32 << (failures - 1)),
                _ => 60.0 + rng.below(61) as f64,
            },
        };
        self.second.mul_f64(secs)
    }
}

struct Job {
    body: Bytes,
    reply: oneshot::Sender<Attempt>,
}

struct SenderState {
    opts: SenderOptions,
    addr: SocketAddr,
    queues: Mutex<HashMap<i64, mpsc::UnboundedSender<Update>>>,
    log: Mutex<BTreeMap<i64, Delivery>>,
    /// Updates submitted and not finished.
    pending: watch::Sender<usize>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Telegram's webhook actor in miniature.
pub struct Sender {
    state: Arc<SenderState>,
}

impl Sender {
    /// A sender to the proxy at `addr`; its connections open on first use.
    pub fn start(addr: SocketAddr, opts: SenderOptions) -> Sender {
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..opts.connections.max(1) {
            let rx = Arc::clone(&rx);
            let path = opts.path.clone();
            let headers = request_headers(&opts);
            let timeout = opts.timeout;
            tokio::spawn(async move {
                let mut conn: Option<http1::SendRequest<Full<Bytes>>> = None;
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some(job) = job else { return };
                    let sent = Instant::now();
                    let result = tokio::time::timeout(
                        timeout,
                        exchange_on(&mut conn, addr, &path, &headers, job.body),
                    )
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                    if result.is_err() {
                        conn = None;
                    }
                    let _ = job.reply.send(Attempt {
                        sent,
                        done: Instant::now(),
                        result,
                    });
                }
            });
        }
        let (pending, _) = watch::channel(0);
        Sender {
            state: Arc::new(SenderState {
                opts,
                addr,
                queues: Mutex::new(HashMap::new()),
                log: Mutex::new(BTreeMap::new()),
                pending,
                jobs,
            }),
        }
    }

    /// Queues `u` behind the earlier updates of its queue.
    pub fn submit(&self, u: Update) {
        self.state.pending.send_modify(|n| *n += 1);
        let mut queues = self.state.queues.lock().unwrap();
        let tx = queues.entry(u.queue()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let state = Arc::clone(&self.state);
            let seed = u.queue() as u64;
            tokio::spawn(run_queue(state, rx, Rng::new(seed)));
            tx
        });
        tx.send(u).expect("queue task alive");
    }

    pub fn submit_all(&self, updates: &[Update]) {
        for u in updates {
            self.submit(u.clone());
        }
    }

    /// Updates submitted and not finished yet.
    pub fn pending(&self) -> usize {
        *self.state.pending.borrow()
    }

    /// Waits until every submitted update is delivered or given up.
    pub async fn wait_idle(&self, limit: Duration) {
        let mut rx = self.state.pending.subscribe();
        let fut = async {
            while *rx.borrow_and_update() > 0 {
                rx.changed().await.expect("sender alive");
            }
        };
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            panic!(
                "sender: {} updates still pending after {limit:?}",
                self.pending()
            )
        })
    }

    /// Every update's record, by update_id.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.log.lock().unwrap().values().cloned().collect()
    }

    pub fn delivery(&self, id: i64) -> Delivery {
        self.state
            .log
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| panic!("update {id} was never submitted"))
    }

    pub fn options(&self) -> &SenderOptions {
        &self.state.opts
    }

    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }
}

fn request_headers(opts: &SenderOptions) -> Vec<(String, String)> {
    // What Telegram's server sends (reference 1.2); hyper adds Content-Length.
    let mut h = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("accept-encoding".to_owned(), "gzip, deflate".to_owned()),
        ("connection".to_owned(), "keep-alive".to_owned()),
    ];
    if let Some(s) = &opts.secret {
        h.push((SECRET_HEADER.to_owned(), s.clone()));
    }
    h.extend(opts.headers.iter().cloned());
    h
}

async fn run_queue(state: Arc<SenderState>, mut rx: mpsc::UnboundedReceiver<Update>, mut rng: Rng) {
    while let Some(u) = rx.recv().await {
        deliver(&state, u, &mut rng).await;
        state.pending.send_modify(|n| *n -= 1);
    }
}

/// Sends `u` until a 2xx (or `max_tries`), waiting Telegram's backoff between
/// tries; then, if chosen, once more.
async fn deliver(state: &SenderState, u: Update, rng: &mut Rng) {
    let id = u.id;
    state.log.lock().unwrap().insert(
        id,
        Delivery {
            update: u.clone(),
            attempts: Vec::new(),
            resent: None,
            gave_up: false,
        },
    );
    let mut failures = 0;
    loop {
        let attempt = send_once(state, u.body.clone()).await;
        let ok = attempt.result.as_ref().is_ok_and(Answer::success);
        let retry_after = attempt
            .result
            .as_ref()
            .ok()
            .and_then(Answer::retry_after_secs);
        let tries = {
            let mut log = state.log.lock().unwrap();
            let d = log.get_mut(&id).expect("recorded");
            d.attempts.push(attempt);
            d.attempts.len()
        };
        if ok {
            break;
        }
        failures += 1;
        if tries >= state.opts.max_tries {
            state
                .log
                .lock()
                .unwrap()
                .get_mut(&id)
                .expect("recorded")
                .gave_up = true;
            return;
        }
        tokio::time::sleep(state.opts.backoff(failures, retry_after, rng)).await;
    }
    if state.opts.resends(id) {
        let again = send_once(state, u.body.clone()).await;
        state
            .log
            .lock()
            .unwrap()
            .get_mut(&id)
            .expect("recorded")
            .resent = Some(again);
    }
}

async fn send_once(state: &SenderState, body: Bytes) -> Attempt {
    let (tx, rx) = oneshot::channel();
    state
        .jobs
        .send(Job { body, reply: tx })
        .expect("sender connections alive");
    rx.await.expect("a connection answers every job")
}

/// One `POST` on `conn` (opened, or reopened after a failure or a
/// `Connection: close`, as Telegram's connections are).
async fn exchange_on(
    conn: &mut Option<http1::SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> Result<Answer, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(control::connect(addr).await?);
    }
    let tx = conn.as_mut().expect("connected");
    let mut b = Request::post(path).header("host", addr.to_string());
    for (n, v) in headers {
        b = b.header(n.as_str(), v.as_str());
    }
    let req = b.body(Full::new(body)).expect("request");
    let answer = send_request(tx, req).await;
    match &answer {
        Ok(a) if !control::says_close(&a.headers) => {}
        _ => *conn = None,
    }
    answer
}

async fn send_request(
    tx: &mut http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Answer, String> {
    tx.ready().await.map_err(|e| format!("ready: {e}"))?;
    let res = tx
        .send_request(req)
        .await
        .map_err(|e| format!("response head: {e}"))?;
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// One request on a fresh connection: `method path` with `headers` (a `Host` is
/// added) and `body`. Panics if no answer comes.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let fut = async {
        let mut tx = control::connect(addr).await?;
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path)
            .header("host", addr.to_string());
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let req = b
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        send_request(&mut tx, req).await
    };
    tokio::time::timeout(control::EXCHANGE_LIMIT, fut)
        .await
        .unwrap_or_else(|_| Err("no answer in time".to_owned()))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Writes a request head announcing a body of `Content-Length` bytes, sends no
/// body, and reads the status of the answer: what a check that must answer before
/// the body is read (secret, source) gives. A proxy that waited for the body would
/// never answer and the call panics after `EXCHANGE_LIMIT`.
pub async fn status_without_body(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("write head");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while super::find(&buf, b"\r\n\r\n").is_none() {
            let n = s.read(&mut chunk).await.expect("read answer");
            assert!(
                n > 0,
                "closed without an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {text:?}"))
    };
    tokio::time::timeout(control::EXCHANGE_LIMIT, fut)
        .await
        .expect("answered without the body")
}

/// `POST path` as Telegram sends an update: JSON, with `secret` when given.
pub async fn post_update(
    addr: SocketAddr,
    path: &str,
    secret: Option<&str>,
    body: &[u8],
) -> Answer {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(s) = secret {
        headers.push((SECRET_HEADER, s));
    }
    request(addr, "POST", path, &headers, body).await
}

// ---------------------------------------------------------------------------------
// What the bots saw, against what was sent
// ---------------------------------------------------------------------------------

/// The bots' records of update `id`.
pub fn seen_of(seen: &[Seen], id: i64) -> Vec<&Seen> {
    seen.iter().filter(|s| s.update_id == Some(id)).collect()
}

/// Asserts that every update of `updates` reached a bot exactly once, its body
/// byte for byte, and that the bots saw nothing else.
pub fn assert_each_once(updates: &[Update], seen: &[Seen]) {
    let mut by_id: HashMap<i64, Vec<&Seen>> = HashMap::new();
    for s in seen {
        let id = s
            .update_id
            .unwrap_or_else(|| panic!("{} got a body that is not an update: {:?}", s.bot, s.body));
        by_id.entry(id).or_default().push(s);
    }
    let mut missing = Vec::new();
    for u in updates {
        match by_id.remove(&u.id).as_deref() {
            None | Some([]) => missing.push(u.id),
            Some([one]) => assert_eq!(
                one.body, u.body,
                "update {} reached {} altered",
                u.id, one.bot
            ),
            Some(many) => panic!(
                "update {} ({}) processed {} times, by {:?}",
                u.id,
                u.kind.as_str(),
                many.len(),
                many.iter().map(|s| &s.bot).collect::<Vec<_>>()
            ),
        }
    }
    assert!(missing.is_empty(), "updates no bot processed: {missing:?}");
    let extra: Vec<_> = by_id.keys().collect();
    assert!(
        extra.is_empty(),
        "bots processed updates never sent: {extra:?}"
    );
}

/// The bots each affinity key's updates went to, among those of `updates` seen
/// (first arrival of each).
pub fn placement(updates: &[Update], seen: &[Seen]) -> BTreeMap<i64, BTreeSet<String>> {
    let keys: HashMap<i64, i64> = updates.iter().map(|u| (u.id, u.key())).collect();
    let mut map: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for s in seen {
        if let Some(key) = s.update_id.and_then(|id| keys.get(&id)) {
            map.entry(*key).or_default().insert(s.bot.clone());
        }
    }
    map
}

/// Asserts that each affinity key's updates all went to one bot; returns that bot
/// per key.
pub fn assert_one_bot_per_key(updates: &[Update], seen: &[Seen]) -> BTreeMap<i64, String> {
    placement(updates, seen)
        .into_iter()
        .map(|(key, bots)| {
            assert_eq!(bots.len(), 1, "key {key} was split over bots {bots:?}");
            (key, bots.into_iter().next().expect("one bot"))
        })
        .collect()
}

/// Asserts that within each of Telegram's queues the bots got the updates in
/// `update_id` order (first arrivals, across bots, by arrival time; `seen` must be
/// sorted by arrival, as `all_seen` returns it).
pub fn assert_queue_order(updates: &[Update], seen: &[Seen]) {
    let queues: HashMap<i64, i64> = updates.iter().map(|u| (u.id, u.queue())).collect();
    let mut first: HashSet<i64> = HashSet::new();
    let mut last: HashMap<i64, i64> = HashMap::new();
    for s in seen {
        let Some(id) = s.update_id else { continue };
        let Some(q) = queues.get(&id) else { continue };
        if !first.insert(id) {
            continue;
        }
        if let Some(prev) = last.insert(*q, id) {
            assert!(
                prev < id,
                "queue {q}: update {id} arrived (at {}) after {prev}",
                s.bot
            );
        }
    }
}

/// Asserts that the sender got a 2xx for every update it was given.
pub fn assert_all_delivered(sender: &Sender) {
    let undelivered: Vec<_> = sender
        .deliveries()
        .into_iter()
        .filter(|d| d.answer().is_none())
        .map(|d| (d.update.id, d.statuses()))
        .collect();
    assert!(
        undelivered.is_empty(),
        "updates never answered 2xx (id, statuses): {undelivered:?}"
    );
}

// ---------------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------------

/// A proxy with a "public" listener and an admin listener.
pub struct Proxy {
    pub running: Running,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Proxy {
    /// Shuts it down (in-flight requests get a second), for a test that starts
    /// several one after another.
    pub async fn stop(self) {
        self.running.shutdown(Duration::from_secs(1)).await;
    }
}

/// Starts a proxy with an admin listener, a "public" listener and `body` (routes
/// and upstreams).
pub async fn start_proxy(body: &str) -> Proxy {
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}{body}",
        super::listeners(&["public"])
    );
    let running = super::start_proxy(&text).await;
    let addr = running.addr("public").expect("listener public");
    let admin = running.admin.expect("admin listener");
    Proxy {
        running,
        addr,
        admin,
    }
}

/// A telegram route `name` at `path` to `upstream`, with `keys` in its
/// `[route.telegram]` table.
pub fn tg_route(name: &str, path: &str, upstream: &str, keys: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\npath = \"{path}\"\nupstream = \"{upstream}\"\n\n[route.telegram]\n{keys}\n\n"
    )
}

/// The keys most tests start from: the one secret, loopback allowed.
pub fn tg_keys(extra: &str) -> String {
    format!("secret_token = [\"{SECRET}\"]\nallow_from = [\"127.0.0.0/8\"]\n{extra}")
}

/// `[upstream.NAME]` over `bots`, each server entry with `server_keys` (e.g.
/// `fail_timeout = "30s"`).
pub fn pool(name: &str, bots: &[Bot], server_keys: &str) -> String {
    let sep = if server_keys.is_empty() { "" } else { ", " };
    let list: Vec<String> = bots
        .iter()
        .map(|b| format!("{{ addr = \"{}\"{sep}{server_keys} }}", b.addr()))
        .collect();
    format!("[upstream.{name}]\nservers = [{}]\n\n", list.join(", "))
}

/// `GET path` on the admin listener: status and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let r = control::Client::new(admin)
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
    (r.status.as_u16(), r.body)
}

/// The Prometheus text of the admin listener.
pub async fn scrape(admin: SocketAddr) -> String {
    let (status, body) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200, "metrics: {body}");
    body
}

/// `switchyard_telegram_updates_total{route, result}`, `None` when not reported.
pub async fn tg_updates(admin: SocketAddr, route: &str, result: &str) -> Option<f64> {
    super::sample(
        &scrape(admin).await,
        "switchyard_telegram_updates_total",
        &[("route", route), ("result", result)],
    )
}

/// As `tg_updates`, with a missing series read as 0 (for counts that must stay 0;
/// a series the mode never reports fails the tests that expect a count).
pub async fn tg_count(admin: SocketAddr, route: &str, result: &str) -> f64 {
    tg_updates(admin, route, result).await.unwrap_or(0.0)
}

/// Waits until `tg_updates(route, result)` is `want`, and fails with the last value
/// otherwise: counters may be bumped just after the answer went out.
pub async fn await_tg_count(admin: SocketAddr, route: &str, result: &str, want: f64) {
    let start = Instant::now();
    loop {
        let got = tg_updates(admin, route, result).await;
        if got == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "switchyard_telegram_updates_total{{route=\"{route}\",result=\"{result}\"}} is {got:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `switchyard_inflight_requests{upstream, server}`.
pub async fn inflight(admin: SocketAddr, upstream: &str, server: SocketAddr) -> Option<f64> {
    super::sample(
        &scrape(admin).await,
        "switchyard_inflight_requests",
        &[("upstream", upstream), ("server", &server.to_string())],
    )
}

/// `switchyard_server_up{upstream, server}`: 1 while the balancer may pick it.
pub async fn server_up(admin: SocketAddr, upstream: &str, server: SocketAddr) -> Option<f64> {
    super::sample(
        &scrape(admin).await,
        "switchyard_server_up",
        &[("upstream", upstream), ("server", &server.to_string())],
    )
}

/// `POST /upstreams/UPSTREAM/servers/ADDR/drain` on the admin API.
pub async fn drain(admin: SocketAddr, upstream: &str, server: SocketAddr) {
    let path = format!("/upstreams/{upstream}/servers/{server}/drain");
    let r = control::Client::new(admin)
        .send("POST", &path, &[], None)
        .await
        .unwrap_or_else(|e| panic!("admin POST {path}: {e}"));
    assert_eq!(r.status, 200, "drain: {}", r.body);
}

/// Polls the async `check` every 20 ms until it returns `Some`; fails after `limit`.
pub async fn until<T, F>(what: &str, limit: Duration, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------------

/// The dead-letter file's lines, parsed (none while it does not exist).
pub fn dead_letters(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("dead letter is not JSON ({e}): {l}"))
        })
        .collect()
}

/// Waits until the dead-letter file has at least `n` lines (a writer thread
/// appends them after the answer went out); returns them.
pub async fn await_dead_letters(path: &Path, n: usize) -> Vec<Value> {
    let path = path.to_owned();
    until(
        &format!("{n} dead letters in {}", path.display()),
        LIMIT,
        || {
            let lines = dead_letters(&path);
            std::future::ready((lines.len() >= n).then_some(lines))
        },
    )
    .await
}
