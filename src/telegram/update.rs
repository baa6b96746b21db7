//! The lazy scan of a Telegram update: its `update_id`, its type and the hash of its
//! affinity key, read from the body's bytes without building the update.
//!
//! Telegram writes `update_id` first and, inside a message, `chat` right after
//! `message_id`, `from` and `sender_chat`, so the scan usually stops within the first
//! few hundred bytes; what follows (a long text, its entities, a replied-to message)
//! is never read. Values passed over on the way are skipped, not built, and nothing is
//! allocated per field: keys and ids are borrowed from the body.
//!
//! Where the key is: `SPECS` is the table of the reference's §1.4
//! (`shared/reference/telegram-webhook.md`), one row per update type with its "chat
//! key" and "fallback key" columns. `Affinity::Chat` takes the first id found in the
//! chat column, else in the fallback column; `Affinity::User` the other way round.
//!
//! The tokenizer is jiter's (the pull parser under pydantic): it validates what it
//! reads and skips nested values iteratively under a depth limit, so no body can
//! overflow the stack. The scan's own descent follows only the key paths, so it is at
//! most `MAX_PATH` objects deep whatever the body holds.
//!
//! Decisions worth knowing:
//! - Keys are compared after jiter unescapes them: `"ch\u0061t"` is `chat`. Telegram
//!   never escapes keys; an escaped one costs one buffer, reused for the scan.
//! - An id is hashed as its exact text: a number as written (sign and digits), a string
//!   as its raw content between the quotes (escapes not decoded; Telegram's string ids
//!   are plain ASCII). So a private chat's `chat.id` and its user's `from.id` give the
//!   same key, and `-100…` supergroup ids keep their sign.
//! - A repeated key: the first usable value counts (a scan that stops early cannot see
//!   later ones). A second type field is ignored; an unknown one is `Kind::Other`
//!   unless a known type follows.

use jiter::{Jiter, JiterError, Peek};

use crate::balance::hash_bytes;

pub use crate::config::telegram::Affinity;

/// An update's type: the one field beside `update_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Message,
    EditedMessage,
    ChannelPost,
    EditedChannelPost,
    BusinessConnection,
    BusinessMessage,
    EditedBusinessMessage,
    DeletedBusinessMessages,
    MessageReaction,
    MessageReactionCount,
    InlineQuery,
    ChosenInlineResult,
    CallbackQuery,
    ShippingQuery,
    PreCheckoutQuery,
    PurchasedPaidMedia,
    Poll,
    PollAnswer,
    MyChatMember,
    ChatMember,
    ChatJoinRequest,
    ChatBoost,
    RemovedChatBoost,
    ManagedBot,
    GuestMessage,
    /// A field this version does not know (a newer Bot API's type): no key.
    Other,
}

impl Kind {
    /// The update's field name (`"message"`, `"callback_query"`…), `"other"` for
    /// [`Kind::Other`]: for logs, metrics and dead-letter lines.
    pub fn as_str(&self) -> &'static str {
        self.spec().map_or("other", |s| s.field)
    }

    /// The type whose field is `name`.
    fn of_field(name: &str) -> Kind {
        SPECS
            .iter()
            .find(|s| s.field == name)
            .map_or(Kind::Other, |s| s.kind)
    }

    /// Its row of the key table; `None` for [`Kind::Other`].
    fn spec(self) -> Option<&'static Spec> {
        SPECS.get(self as usize)
    }
}

/// What [`scan`] found. Each field holds what was found before the scan stopped,
/// also when it stopped at malformed input: callers that need a whole update check
/// `object` too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// `update_id` when it is an integer that fits an i64.
    pub update_id: Option<i64>,
    /// The update's type, `None` when no field but `update_id` was read.
    pub kind: Option<Kind>,
    /// The hash (`balance::hash_bytes`) of the affinity key's text; `None` when the
    /// update has none, its type is unknown, or the mode is `none`.
    pub key: Option<u64>,
    /// The body starts (after whitespace) with a JSON object, and what the scan read of
    /// it is well formed. The scan stops as soon as it knows the rest, so bytes after
    /// the key are not checked.
    pub object: bool,
}

/// Reads the update in `body` as far as needed for its `update_id`, its type and,
/// unless `mode` is `None`, its affinity key. Never fails and never panics: what it
/// cannot read is `None`.
pub fn scan(body: &[u8], mode: Affinity) -> Scan {
    let mut found = Scan::default();
    let mut json = Jiter::new(body);
    found.object =
        matches!(json.peek(), Ok(Peek::Object)) && read_update(&mut json, mode, &mut found).is_ok();
    found
}

/// The body stopped making sense: malformed JSON, or it ended inside the object.
struct Malformed;

impl From<JiterError> for Malformed {
    fn from(_: JiterError) -> Self {
        Malformed
    }
}

/// Whether the scan has read enough and may stop in the middle of the body.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// A top-level key.
enum Field {
    UpdateId,
    Type(Kind),
}

impl Field {
    fn of(key: &str) -> Field {
        if key == "update_id" {
            Field::UpdateId
        } else {
            Field::Type(Kind::of_field(key))
        }
    }
}

/// Walks the update object (its `{` peeked) until `update_id`, the type and its key
/// are known, or to its end.
fn read_update(json: &mut Jiter<'_>, mode: Affinity, found: &mut Scan) -> Result<(), Malformed> {
    let mut field = json.known_object()?.map(Field::of);
    while let Some(f) = field {
        let known_type = found.kind.is_some_and(|k| k != Kind::Other);
        match f {
            Field::UpdateId if found.update_id.is_none() => {
                found.update_id = read_update_id(json)?;
            }
            Field::Type(kind) if kind != Kind::Other && !known_type => {
                found.kind = Some(kind);
                // With `update_id` known, finding the best key ends the scan.
                let may_stop = found.update_id.is_some();
                let (key, flow) = read_type(json, kind, mode, may_stop)?;
                found.key = key;
                if flow == Flow::Stop {
                    return Ok(());
                }
            }
            Field::Type(Kind::Other) if found.kind.is_none() => {
                found.kind = Some(Kind::Other);
                json.next_skip()?;
            }
            _ => json.next_skip()?,
        }
        if found.update_id.is_some() && found.kind.is_some_and(|k| k != Kind::Other) {
            return Ok(());
        }
        field = json.next_key()?.map(Field::of);
    }
    Ok(())
}

/// Reads the value of a known type's field: the type's key when `mode` asks for one.
/// `may_stop`: the rest of the body is not needed once the best key is found, so the
/// scan may stop inside the value.
fn read_type(
    json: &mut Jiter<'_>,
    kind: Kind,
    mode: Affinity,
    may_stop: bool,
) -> Result<(Option<u64>, Flow), Malformed> {
    let candidates = kind.spec().map(|s| Candidates::new(s, mode));
    let Some(candidates) = candidates.filter(|c| c.len > 0) else {
        if may_stop {
            return Ok((None, Flow::Stop));
        }
        json.next_skip()?;
        return Ok((None, Flow::Continue));
    };
    let peek = json.peek()?;
    if peek != Peek::Object {
        json.known_skip(peek)?;
        return Ok((None, Flow::Continue));
    }
    let mut best: Option<Found> = None;
    let flow = walk(json, 0, candidates.all(), &candidates, &mut best, may_stop)?;
    Ok((best.map(|b| b.hash), flow))
}

/// The longest key path below a type's object (`callback_query` →
/// `message.chat.id`): the scan's own recursion is bounded by it, not by the body.
const MAX_PATH: usize = 3;

/// The most key paths of one type, both columns together (`poll_answer`,
/// `chat_join_request` and `message_reaction` have 3), so candidates fit a fixed
/// array and a bit mask instead of an allocation.
const MAX_CANDIDATES: usize = 4;

/// A path from a type's object to an id, one key per level.
type Path = &'static [&'static str];

/// The key paths to look for in one update, best first (its rank is its index).
struct Candidates {
    paths: [Path; MAX_CANDIDATES],
    len: usize,
}

impl Candidates {
    fn new(spec: &Spec, mode: Affinity) -> Candidates {
        let (first, then): (&[Path], &[Path]) = match mode {
            Affinity::Chat => (spec.chat, spec.fallback),
            Affinity::User => (spec.fallback, spec.chat),
            Affinity::None => (&[], &[]),
        };
        let mut c = Candidates {
            paths: [&[]; MAX_CANDIDATES],
            len: 0,
        };
        // `zip` bounds the copy by the array; a test checks no row is longer.
        for (slot, path) in c.paths.iter_mut().zip(first.iter().chain(then)) {
            *slot = path;
            c.len += 1;
        }
        c
    }

    /// The mask of every candidate.
    fn all(&self) -> u8 {
        ((1u16 << self.len) - 1) as u8
    }

    /// Of the candidates in `wanted` whose path has `key` at `depth`: those whose
    /// path ends there (the value is the id) and those that go on below it.
    fn split(&self, key: &str, depth: usize, wanted: u8) -> (u8, u8) {
        let (mut leaf, mut inner) = (0, 0);
        for (rank, path) in self.paths[..self.len].iter().enumerate() {
            let bit = 1 << rank;
            if wanted & bit != 0 && path.get(depth) == Some(&key) {
                if path.len() == depth + 1 {
                    leaf |= bit;
                } else {
                    inner |= bit;
                }
            }
        }
        (leaf, inner)
    }
}

/// The best key found so far.
#[derive(Clone, Copy)]
struct Found {
    rank: u32,
    hash: u64,
}

/// Walks an object `depth` levels below the type's (its `{` peeked), following the
/// `wanted` candidates' paths and keeping the best id in `best`. Once an id is found,
/// only better-ranked candidates are followed; the best of all ends the walk when
/// `may_stop`, else the rest is skipped.
fn walk(
    json: &mut Jiter<'_>,
    depth: usize,
    mut wanted: u8,
    candidates: &Candidates,
    best: &mut Option<Found>,
    may_stop: bool,
) -> Result<Flow, Malformed> {
    let mut key = json
        .known_object()?
        .map(|k| candidates.split(k, depth, wanted));
    while let Some((leaf, inner)) = key {
        let peek = json.peek()?;
        if peek == Peek::Object && inner != 0 && depth + 1 < MAX_PATH {
            if walk(json, depth + 1, inner, candidates, best, may_stop)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        } else if leaf != 0 && (peek == Peek::String || peek.is_num()) {
            let rank = leaf.trailing_zeros();
            if let Some(hash) = read_id(json)? {
                if best.is_none_or(|b| rank < b.rank) {
                    *best = Some(Found { rank, hash });
                }
            }
        } else {
            json.known_skip(peek)?;
        }
        if let Some(b) = *best {
            if b.rank == 0 && may_stop {
                return Ok(Flow::Stop);
            }
            wanted &= ((1u16 << b.rank) - 1) as u8;
        }
        key = json.next_key()?.map(|k| candidates.split(k, depth, wanted));
    }
    Ok(Flow::Continue)
}

/// Reads the next value as an id and hashes its text: a number as written, or a
/// non-empty string's raw content; `None` (value skipped) for anything else.
fn read_id(json: &mut Jiter<'_>) -> Result<Option<u64>, Malformed> {
    let peek = json.peek()?;
    if peek == Peek::String {
        let text = json.known_bytes()?;
        Ok((!text.is_empty()).then(|| hash_bytes(text)))
    } else if peek.is_num() {
        read_number(json, peek, hash_bytes).map(Some)
    } else {
        json.known_skip(peek)?;
        Ok(None)
    }
}

/// Reads `update_id`: a number that is an integer fitting an i64, else `None`.
fn read_update_id(json: &mut Jiter<'_>) -> Result<Option<i64>, Malformed> {
    let peek = json.peek()?;
    if !peek.is_num() {
        json.known_skip(peek)?;
        return Ok(None);
    }
    // jiter has checked the number's grammar, so the text is ASCII.
    read_number(json, peek, |text| {
        std::str::from_utf8(text).ok()?.parse().ok()
    })
}

/// Reads a number (`peek` is its first byte) and gives its text as written to `use_text`.
fn read_number<T>(
    json: &mut Jiter<'_>,
    peek: Peek,
    use_text: impl FnOnce(&[u8]) -> T,
) -> Result<T, Malformed> {
    let value = use_text(json.known_number_bytes(peek)?);
    // A number that ends the body may have been cut (`-10012` of `-1001234…`); inside
    // an object something must follow it. `finish` only eats whitespace and says
    // whether that was all.
    if json.finish().is_ok() {
        return Err(Malformed);
    }
    Ok(value)
}

/// One row of the key table.
struct Spec {
    kind: Kind,
    /// The update's field for this type.
    field: &'static str,
    /// The "chat key" column: the first found, in this order, wins.
    chat: &'static [Path],
    /// The "fallback key" column, in its order.
    fallback: &'static [Path],
}

const CHAT_ID: Path = &["chat", "id"];
const FROM_ID: Path = &["from", "id"];
const USER_ID: Path = &["user", "id"];
const BUSINESS_CONNECTION_ID: Path = &["business_connection_id"];

/// The reference's §1.4 table, in [`Kind`]'s order (a test checks it).
static SPECS: [Spec; Kind::Other as usize] = [
    spec(Kind::Message, "message", &[CHAT_ID], &[FROM_ID]),
    spec(
        Kind::EditedMessage,
        "edited_message",
        &[CHAT_ID],
        &[FROM_ID],
    ),
    spec(
        Kind::ChannelPost,
        "channel_post",
        &[CHAT_ID],
        &[&["sender_chat", "id"]],
    ),
    spec(
        Kind::EditedChannelPost,
        "edited_channel_post",
        &[CHAT_ID],
        &[&["sender_chat", "id"]],
    ),
    spec(
        Kind::BusinessConnection,
        "business_connection",
        &[&["user_chat_id"]],
        &[USER_ID],
    ),
    spec(
        Kind::BusinessMessage,
        "business_message",
        &[CHAT_ID],
        &[BUSINESS_CONNECTION_ID],
    ),
    spec(
        Kind::EditedBusinessMessage,
        "edited_business_message",
        &[CHAT_ID],
        &[BUSINESS_CONNECTION_ID],
    ),
    spec(
        Kind::DeletedBusinessMessages,
        "deleted_business_messages",
        &[CHAT_ID],
        &[BUSINESS_CONNECTION_ID],
    ),
    spec(
        Kind::MessageReaction,
        "message_reaction",
        &[CHAT_ID],
        // `actor_chat` when the reaction is anonymous (no `user`).
        &[USER_ID, &["actor_chat", "id"]],
    ),
    spec(
        Kind::MessageReactionCount,
        "message_reaction_count",
        &[CHAT_ID],
        &[],
    ),
    spec(Kind::InlineQuery, "inline_query", &[], &[FROM_ID]),
    spec(
        Kind::ChosenInlineResult,
        "chosen_inline_result",
        &[],
        &[FROM_ID],
    ),
    spec(
        Kind::CallbackQuery,
        "callback_query",
        // No `message` for a button under an inline-mode message.
        &[&["message", "chat", "id"]],
        &[FROM_ID],
    ),
    spec(Kind::ShippingQuery, "shipping_query", &[], &[FROM_ID]),
    spec(
        Kind::PreCheckoutQuery,
        "pre_checkout_query",
        &[],
        &[FROM_ID],
    ),
    spec(
        Kind::PurchasedPaidMedia,
        "purchased_paid_media",
        &[],
        &[FROM_ID],
    ),
    spec(Kind::Poll, "poll", &[], &[&["id"]]),
    spec(
        Kind::PollAnswer,
        "poll_answer",
        // `voter_chat` when the vote is a chat's (anonymous), `user` otherwise.
        &[&["voter_chat", "id"]],
        &[USER_ID, &["poll_id"]],
    ),
    spec(Kind::MyChatMember, "my_chat_member", &[CHAT_ID], &[FROM_ID]),
    spec(
        Kind::ChatMember,
        "chat_member",
        &[CHAT_ID],
        // The member whose status changed, not `from` (the admin who changed it).
        &[&["new_chat_member", "user", "id"]],
    ),
    spec(
        Kind::ChatJoinRequest,
        "chat_join_request",
        &[CHAT_ID],
        &[&["user_chat_id"], FROM_ID],
    ),
    spec(Kind::ChatBoost, "chat_boost", &[CHAT_ID], &[]),
    spec(
        Kind::RemovedChatBoost,
        "removed_chat_boost",
        &[CHAT_ID],
        &[],
    ),
    spec(Kind::ManagedBot, "managed_bot", &[], &[USER_ID]),
    spec(Kind::GuestMessage, "guest_message", &[CHAT_ID], &[FROM_ID]),
];

const fn spec(
    kind: Kind,
    field: &'static str,
    chat: &'static [Path],
    fallback: &'static [Path],
) -> Spec {
    Spec {
        kind,
        field,
        chat,
        fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::Value;

    const MODES: [Affinity; 3] = [Affinity::Chat, Affinity::User, Affinity::None];

    fn h(id: &str) -> Option<u64> {
        Some(hash_bytes(id.as_bytes()))
    }

    /// `{"update_id":<id>,"<field>":<value>}` as Telegram writes it.
    fn update(id: i64, field: &str, value: &str) -> String {
        format!(r#"{{"update_id":{id},"{field}":{value}}}"#)
    }

    /// Asserts one update's scan in every mode: its id and type always, `chat` and
    /// `user` the keys of those modes, none in mode `none`.
    #[track_caller]
    fn assert_scans(body: &str, id: i64, kind: Kind, chat: Option<u64>, user: Option<u64>) {
        for (mode, key) in [
            (Affinity::Chat, chat),
            (Affinity::User, user),
            (Affinity::None, None),
        ] {
            let expected = Scan {
                update_id: Some(id),
                kind: Some(kind),
                key,
                object: true,
            };
            assert_eq!(scan(body.as_bytes(), mode), expected, "{mode:?}: {body}");
        }
    }

    const ANN: &str = r#"{"id":111111111,"is_bot":false,"first_name":"Ann","username":"annlee","language_code":"en"}"#;
    const ANN_CHAT: &str =
        r#"{"id":111111111,"first_name":"Ann","username":"annlee","type":"private"}"#;
    const BEN: &str = r#"{"id":222,"is_bot":false,"first_name":"Ben","language_code":"de"}"#;
    const TEAM: &str = r#"{"id":-1001234567890,"title":"Team","username":"team_chat","type":"supergroup","is_forum":true}"#;
    const NEWS: &str = r#"{"id":-1009876543210,"title":"News","type":"channel"}"#;
    const BOT: &str =
        r#"{"id":7000000001,"is_bot":true,"first_name":"ShopBot","username":"shop_bot"}"#;

    #[test]
    fn message_in_a_private_chat_keys_by_the_chat_which_is_the_user() {
        let body = update(
            100000001,
            "message",
            &format!(
                r#"{{"message_id":52,"from":{ANN},"chat":{ANN_CHAT},"date":1767225600,"text":"/start","entities":[{{"offset":0,"length":6,"type":"bot_command"}}]}}"#
            ),
        );
        let key = h("111111111");
        assert_scans(&body, 100000001, Kind::Message, key, key);
    }

    #[test]
    fn message_in_a_supergroup_keys_by_the_negative_chat_id_or_the_sender() {
        let body = update(
            100000002,
            "message",
            &format!(
                r#"{{"message_id":9001,"from":{BEN},"chat":{TEAM},"date":1767225601,"message_thread_id":4,"is_topic_message":true,"text":"hello all"}}"#
            ),
        );
        assert_scans(
            &body,
            100000002,
            Kind::Message,
            h("-1001234567890"),
            h("222"),
        );
    }

    #[test]
    fn message_without_a_sender_falls_back_to_its_chat_in_user_mode() {
        // A discussion group's copy of a channel post: no `from` at all.
        let body = update(
            100000003,
            "message",
            &format!(
                r#"{{"message_id":9002,"sender_chat":{NEWS},"chat":{TEAM},"date":1767225602,"is_automatic_forward":true,"text":"news"}}"#
            ),
        );
        let chat = h("-1001234567890");
        assert_scans(&body, 100000003, Kind::Message, chat, chat);
    }

    #[test]
    fn edited_message_and_guest_message_key_like_a_message() {
        let value = format!(
            r#"{{"message_id":9001,"from":{BEN},"chat":{TEAM},"date":1767225601,"edit_date":1767225700,"text":"hello, all"}}"#
        );
        for (field, kind) in [
            ("edited_message", Kind::EditedMessage),
            ("guest_message", Kind::GuestMessage),
        ] {
            let body = update(7, field, &value);
            assert_scans(&body, 7, kind, h("-1001234567890"), h("222"));
        }
    }

    #[test]
    fn channel_posts_key_by_the_channel_negative_id() {
        let value = format!(
            r#"{{"message_id":77,"sender_chat":{NEWS},"chat":{NEWS},"date":1767225603,"text":"breaking"}}"#
        );
        let channel = h("-1009876543210");
        assert_scans(
            &update(8, "channel_post", &value),
            8,
            Kind::ChannelPost,
            channel,
            channel,
        );
        assert_scans(
            &update(9, "edited_channel_post", &value),
            9,
            Kind::EditedChannelPost,
            channel,
            channel,
        );
    }

    #[test]
    fn business_updates_fall_back_to_the_connection_id_string() {
        let chat = r#"{"id":333,"first_name":"Cy","type":"private"}"#;
        let message = format!(
            r#"{{"business_connection_id":"AbCdEfGhIj-_12","message_id":3,"from":{{"id":333,"is_bot":false,"first_name":"Cy"}},"chat":{chat},"date":1767225604,"text":"hi"}}"#
        );
        for (field, kind) in [
            ("business_message", Kind::BusinessMessage),
            ("edited_business_message", Kind::EditedBusinessMessage),
        ] {
            let body = update(10, field, &message);
            assert_scans(&body, 10, kind, h("333"), h("AbCdEfGhIj-_12"));
        }
        let deleted = update(
            11,
            "deleted_business_messages",
            &format!(
                r#"{{"business_connection_id":"AbCdEfGhIj-_12","chat":{chat},"message_ids":[3,4]}}"#
            ),
        );
        assert_scans(
            &deleted,
            11,
            Kind::DeletedBusinessMessages,
            h("333"),
            h("AbCdEfGhIj-_12"),
        );
    }

    #[test]
    fn business_connection_keys_by_the_user_chat() {
        let body = update(
            12,
            "business_connection",
            r#"{"id":"AbCdEfGhIj-_12","user":{"id":444,"is_bot":false,"first_name":"Di"},"user_chat_id":444,"date":1767225605,"rights":{"can_reply":true},"is_enabled":true}"#,
        );
        assert_scans(&body, 12, Kind::BusinessConnection, h("444"), h("444"));
    }

    #[test]
    fn callback_query_keys_by_its_message_chat_not_by_the_bot_that_wrote_it() {
        let body = update(
            13,
            "callback_query",
            &format!(
                r#"{{"id":"4382bfdwdsb323b2d9","from":{BEN},"message":{{"message_id":77,"from":{BOT},"chat":{TEAM},"date":1767225606,"text":"Pick one","reply_markup":{{"inline_keyboard":[[{{"text":"Buy","callback_data":"buy"}}]]}}}},"chat_instance":"-6431235524561843210","data":"buy"}}"#
            ),
        );
        assert_scans(
            &body,
            13,
            Kind::CallbackQuery,
            h("-1001234567890"),
            h("222"),
        );
    }

    #[test]
    fn callback_query_of_an_inline_message_keys_by_its_user() {
        let body = update(
            14,
            "callback_query",
            &format!(
                r#"{{"id":"4382bfdwdsb323b2da","from":{BEN},"inline_message_id":"AgAAAN4BAABkdWxsZXIxMjM","chat_instance":"-6431235524561843210","data":"like"}}"#
            ),
        );
        assert_scans(&body, 14, Kind::CallbackQuery, h("222"), h("222"));
    }

    #[test]
    fn queries_without_a_chat_key_by_their_user() {
        let rows = [
            (
                "inline_query",
                Kind::InlineQuery,
                format!(
                    r#"{{"id":"1234567890123456789","from":{ANN},"chat_type":"sender","query":"cats","offset":""}}"#
                ),
            ),
            (
                "chosen_inline_result",
                Kind::ChosenInlineResult,
                format!(
                    r#"{{"result_id":"r1","from":{ANN},"query":"cats","inline_message_id":"AgAAAN4B"}}"#
                ),
            ),
            (
                "shipping_query",
                Kind::ShippingQuery,
                format!(
                    r#"{{"id":"sq1","from":{ANN},"invoice_payload":"order-9","shipping_address":{{"country_code":"DE","state":"","city":"Berlin","street_line1":"Main 1","street_line2":"","post_code":"10115"}}}}"#
                ),
            ),
            (
                "pre_checkout_query",
                Kind::PreCheckoutQuery,
                format!(
                    r#"{{"id":"pq1","from":{ANN},"currency":"XTR","total_amount":100,"invoice_payload":"order-9"}}"#
                ),
            ),
            (
                "purchased_paid_media",
                Kind::PurchasedPaidMedia,
                format!(r#"{{"from":{ANN},"paid_media_payload":"p-1"}}"#),
            ),
            (
                "managed_bot",
                Kind::ManagedBot,
                format!(r#"{{"user":{ANN},"bot":{BOT}}}"#),
            ),
        ];
        for (field, kind, value) in rows {
            let user = h("111111111");
            assert_scans(&update(15, field, &value), 15, kind, user, user);
        }
    }

    #[test]
    fn poll_keys_by_its_string_id() {
        let body = update(
            16,
            "poll",
            r#"{"id":"5368392710118211585","question":"Tea or coffee?","options":[{"text":"Tea","voter_count":3},{"text":"Coffee","voter_count":5}],"total_voter_count":8,"is_closed":false,"is_anonymous":true,"type":"regular","allows_multiple_answers":false}"#,
        );
        let poll = h("5368392710118211585");
        assert_scans(&body, 16, Kind::Poll, poll, poll);
    }

    #[test]
    fn poll_answer_keys_by_the_voter_chat_or_the_user_then_the_poll() {
        let by_user = update(
            17,
            "poll_answer",
            &format!(r#"{{"poll_id":"5368392710118211585","user":{BEN},"option_ids":[1]}}"#),
        );
        assert_scans(&by_user, 17, Kind::PollAnswer, h("222"), h("222"));
        let by_chat = update(
            18,
            "poll_answer",
            &format!(r#"{{"poll_id":"5368392710118211585","voter_chat":{TEAM},"option_ids":[0]}}"#),
        );
        assert_scans(
            &by_chat,
            18,
            Kind::PollAnswer,
            h("-1001234567890"),
            h("5368392710118211585"),
        );
    }

    #[test]
    fn member_updates_key_by_the_chat_or_the_member() {
        let members = format!(
            r#""old_chat_member":{{"user":{BOT},"status":"left"}},"new_chat_member":{{"user":{BOT},"status":"member"}}"#
        );
        let mine = update(
            19,
            "my_chat_member",
            &format!(r#"{{"chat":{TEAM},"from":{BEN},"date":1767225607,{members}}}"#),
        );
        assert_scans(&mine, 19, Kind::MyChatMember, h("-1001234567890"), h("222"));
        // `chat_member`: the fallback is the member (Ann), not `from` (Ben, the admin).
        let theirs = update(
            20,
            "chat_member",
            &format!(
                r#"{{"chat":{TEAM},"from":{BEN},"date":1767225608,"old_chat_member":{{"user":{ANN},"status":"left"}},"new_chat_member":{{"user":{ANN},"status":"member"}}}}"#
            ),
        );
        assert_scans(
            &theirs,
            20,
            Kind::ChatMember,
            h("-1001234567890"),
            h("111111111"),
        );
    }

    #[test]
    fn chat_join_request_falls_back_to_the_user_chat_then_the_sender() {
        let with_chat = update(
            21,
            "chat_join_request",
            &format!(
                r#"{{"chat":{TEAM},"from":{ANN},"user_chat_id":111111111,"date":1767225609,"bio":"hi"}}"#
            ),
        );
        assert_scans(
            &with_chat,
            21,
            Kind::ChatJoinRequest,
            h("-1001234567890"),
            h("111111111"),
        );
        let without = update(
            22,
            "chat_join_request",
            &format!(r#"{{"chat":{TEAM},"from":{BEN},"date":1767225609}}"#),
        );
        assert_scans(
            &without,
            22,
            Kind::ChatJoinRequest,
            h("-1001234567890"),
            h("222"),
        );
    }

    #[test]
    fn reactions_key_by_the_chat_or_the_reacting_user_or_chat() {
        let by_user = update(
            23,
            "message_reaction",
            &format!(
                r#"{{"chat":{TEAM},"message_id":5,"user":{BEN},"date":1767225610,"old_reaction":[],"new_reaction":[{{"type":"emoji","emoji":"\ud83d\udc4d"}}]}}"#
            ),
        );
        assert_scans(
            &by_user,
            23,
            Kind::MessageReaction,
            h("-1001234567890"),
            h("222"),
        );
        let anonymous = update(
            24,
            "message_reaction",
            &format!(
                r#"{{"chat":{TEAM},"message_id":5,"actor_chat":{NEWS},"date":1767225610,"old_reaction":[],"new_reaction":[]}}"#
            ),
        );
        assert_scans(
            &anonymous,
            24,
            Kind::MessageReaction,
            h("-1001234567890"),
            h("-1009876543210"),
        );
        // Counts have no fallback: user mode takes the chat.
        let counts = update(
            25,
            "message_reaction_count",
            &format!(
                r#"{{"chat":{TEAM},"message_id":5,"date":1767225611,"reactions":[{{"type":{{"type":"emoji","emoji":"👍"}},"total_count":3}}]}}"#
            ),
        );
        let chat = h("-1001234567890");
        assert_scans(&counts, 25, Kind::MessageReactionCount, chat, chat);
    }

    #[test]
    fn boosts_key_by_the_chat_only() {
        let boost = update(
            26,
            "chat_boost",
            &format!(
                r#"{{"chat":{NEWS},"boost":{{"boost_id":"b1","add_date":1767225612,"expiration_date":1769817612,"source":{{"source":"premium","user":{BEN}}}}}}}"#
            ),
        );
        let channel = h("-1009876543210");
        assert_scans(&boost, 26, Kind::ChatBoost, channel, channel);
        let removed = update(
            27,
            "removed_chat_boost",
            &format!(
                r#"{{"chat":{NEWS},"boost_id":"b1","remove_date":1767225613,"source":{{"source":"premium","user":{BEN}}}}}"#
            ),
        );
        assert_scans(&removed, 27, Kind::RemovedChatBoost, channel, channel);
    }

    #[test]
    fn the_table_is_in_kind_order_and_within_the_limits() {
        for (i, spec) in SPECS.iter().enumerate() {
            assert_eq!(spec.kind as usize, i, "{}", spec.field);
            assert_eq!(Kind::of_field(spec.field), spec.kind);
            assert_eq!(spec.kind.as_str(), spec.field);
            assert!(spec.chat.len() + spec.fallback.len() <= MAX_CANDIDATES);
            for path in spec.chat.iter().chain(spec.fallback) {
                assert!((1..=MAX_PATH).contains(&path.len()), "{path:?}");
            }
        }
        assert_eq!(Kind::Other.as_str(), "other");
        assert_eq!(Kind::of_field("update_id"), Kind::Other);
    }

    #[test]
    fn affinity_reads_as_the_config_spells_it() {
        #[derive(Deserialize)]
        struct Holder {
            affinity: Affinity,
        }
        for (text, mode) in [
            ("chat", Affinity::Chat),
            ("user", Affinity::User),
            ("none", Affinity::None),
        ] {
            let h: Holder = toml::from_str(&format!("affinity = \"{text}\"")).unwrap();
            assert_eq!(h.affinity, mode);
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{text}\""));
        }
        assert!(toml::from_str::<Holder>("affinity = \"Chat\"").is_err());
        assert_eq!(Affinity::default(), Affinity::Chat);
    }

    /// Every row, with a distinct id at each of its paths: the chat mode takes the
    /// columns in order chat then fallback, the user mode fallback then chat; taking
    /// away the winner hands the key to the next.
    #[test]
    fn each_mode_takes_the_columns_in_its_order() {
        for spec in &SPECS {
            for mode in [Affinity::Chat, Affinity::User] {
                let order = Candidates::new(spec, mode);
                let paths = &order.paths[..order.len];
                for skip in 0..=paths.len() {
                    let mut tree = Node::obj();
                    // Written in reverse order, so the best is not simply the first seen.
                    for (i, path) in paths.iter().enumerate().skip(skip).rev() {
                        tree.insert(path, Node::Raw(format!("{}", 1000 + i)));
                    }
                    let body = format!(r#"{{"update_id":1,"{}":{}}}"#, spec.field, tree.text(""));
                    let want = (skip < paths.len())
                        .then(|| hash_bytes(format!("{}", 1000 + skip).as_bytes()));
                    let got = scan(body.as_bytes(), mode);
                    assert_eq!(got.key, want, "{mode:?} {body}");
                    assert!(got.object);
                }
            }
        }
    }

    #[test]
    fn update_id_may_come_after_the_type() {
        let value = format!(r#"{{"message_id":1,"from":{BEN},"chat":{TEAM},"text":"x"}}"#);
        let body = format!(r#"{{"message":{value},"update_id":31}}"#);
        assert_scans(&body, 31, Kind::Message, h("-1001234567890"), h("222"));
        // Between an unknown field and the type, too.
        let body = format!(r#"{{"x_new":[1,{{"a":2}}],"update_id":32,"message":{value}}}"#);
        assert_scans(&body, 32, Kind::Message, h("-1001234567890"), h("222"));
    }

    #[test]
    fn the_scan_stops_at_the_key() {
        // Everything after the chat id is garbage: never read.
        let body =
            r#"{"update_id":33,"message":{"message_id":1,"chat":{"id":5,"type":"private"},"text":"#;
        let s = scan(format!("{body}\u{1}not json").as_bytes(), Affinity::Chat);
        assert_eq!(
            s,
            Scan {
                update_id: Some(33),
                kind: Some(Kind::Message),
                key: h("5"),
                object: true
            }
        );
        // Mode none stops at the type's name, before its value.
        let s = scan(br#"{"update_id":34,"message":{"#, Affinity::None);
        assert_eq!(
            (s.update_id, s.kind, s.key, s.object),
            (Some(34), Some(Kind::Message), None, true)
        );
    }

    #[test]
    fn whitespace_anywhere_is_fine() {
        let body = "\r\n\t {\n  \"update_id\" :\t35 ,\r\n  \"message\" : {\n    \"from\" : { \"id\" : 222 } ,\n    \"chat\" :\n{\"id\"\n:\n-1001234567890\n}\n  }\n}\n";
        assert_scans(body, 35, Kind::Message, h("-1001234567890"), h("222"));
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<Value>(&update(
                36,
                "message",
                &format!(r#"{{"from":{BEN},"chat":{TEAM}}}"#),
            ))
            .unwrap(),
        )
        .unwrap();
        assert_scans(&pretty, 36, Kind::Message, h("-1001234567890"), h("222"));
    }

    #[test]
    fn escapes_in_keys_unescape_and_strings_hide_nothing() {
        // An escaped key is its unescaped self.
        let body = r#"{"upd\u0061te_id":37,"m\u0065ssage":{"ch\u0061t":{"\u0069d":5}}}"#;
        assert_scans(body, 37, Kind::Message, h("5"), h("5"));
        // Quotes, backslashes and JSON-looking text inside a string are text.
        let body = r#"{"update_id":38,"message":{"text":"a \"chat\":{\"id\":1} \\\"","caption":"\\","from":{"id":2},"chat":{"id":3}}}"#;
        assert_scans(body, 38, Kind::Message, h("3"), h("2"));
        // A string id is hashed as written, escapes and all (Telegram's never have any).
        let body = r#"{"update_id":39,"poll":{"id":"P\u0031"}}"#;
        assert_scans(body, 39, Kind::Poll, h(r"P\u0031"), h(r"P\u0031"));
    }

    #[test]
    fn odd_ids_and_update_ids() {
        let key = |body: &str| scan(body.as_bytes(), Affinity::Chat);
        // update_id: an integer in i64 only; the key still counts.
        for bad in [
            "123456789012345678901234567890",
            "1.5",
            "1e3",
            "\"40\"",
            "null",
            "[40]",
        ] {
            let s = key(&format!(
                r#"{{"update_id":{bad},"message":{{"chat":{{"id":5}}}}}}"#
            ));
            assert_eq!(
                (s.update_id, s.key, s.object),
                (None, h("5"), true),
                "{bad}"
            );
        }
        let s = key(r#"{"update_id":-9223372036854775808,"message":{}}"#);
        assert_eq!(s.update_id, Some(i64::MIN));
        // A huge id is hashed as its text; ids that are not numbers or strings, or
        // empty strings, are no key.
        let s = key(r#"{"update_id":1,"message":{"chat":{"id":123456789012345678901234567890}}}"#);
        assert_eq!(s.key, h("123456789012345678901234567890"));
        for no_id in ["null", "true", "{}", "[1]", "\"\""] {
            let s = key(&format!(
                r#"{{"update_id":1,"message":{{"chat":{{"id":{no_id}}},"from":{{"id":7}}}}}}"#
            ));
            assert_eq!((s.key, s.object), (h("7"), true), "{no_id}");
        }
        // A type whose value is not an object has no key.
        let s = key(r#"{"update_id":1,"message":"hi"}"#);
        assert_eq!((s.kind, s.key, s.object), (Some(Kind::Message), None, true));
    }

    #[test]
    fn unknown_and_repeated_types() {
        let s = scan(
            br#"{"update_id":41,"future_update":{"chat":{"id":5}}}"#,
            Affinity::Chat,
        );
        assert_eq!((s.kind, s.key, s.object), (Some(Kind::Other), None, true));
        // An unknown field before the type does not hide it.
        let s = scan(
            br#"{"update_id":42,"extra":1,"poll":{"id":"p"}}"#,
            Affinity::Chat,
        );
        assert_eq!((s.kind, s.key), (Some(Kind::Poll), h("p")));
        // A second type field is ignored.
        let s = scan(
            br#"{"message":{"chat":{"id":1}},"poll":{"id":"p"},"update_id":43}"#,
            Affinity::Chat,
        );
        assert_eq!(
            (s.update_id, s.kind, s.key),
            (Some(43), Some(Kind::Message), h("1"))
        );
    }

    #[test]
    fn non_objects_are_not_objects() {
        for body in [
            &b""[..],
            b"   \n",
            b"[]",
            br#"[{"update_id":1}]"#,
            b"null",
            b"42",
            br#""update_id""#,
            b"{",
            b"{\"update_id\"",
            b"{\"update_id\":",
            b"{\"update_id\":1",
            b"{\"update_id\":1 ",
            b"{update_id:1}",
            b"{\"update_id\":01}",
            b"\xef\xbb\xbf{\"update_id\":1}",
            b"\xff\xfe{",
        ] {
            for mode in MODES {
                let s = scan(body, mode);
                assert_eq!(s, Scan::default(), "{:?}", String::from_utf8_lossy(body));
            }
        }
        // Broken after a complete `update_id`: not an object, but the id was read.
        for body in [
            &b"{\"update_id\":1,}"[..],
            b"{\"update_id\":1 \"message\":{}}",
            b"{\"update_id\":1,\"message\":{\"chat\":{\"id\":[}}}",
        ] {
            let s = scan(body, Affinity::Chat);
            assert_eq!((s.update_id, s.key, s.object), (Some(1), None, false));
        }
        let empty = scan(b" {} ", Affinity::Chat);
        assert_eq!(
            empty,
            Scan {
                object: true,
                ..Scan::default()
            }
        );
        let only_id = scan(br#"{"update_id":44}"#, Affinity::Chat);
        assert_eq!(
            only_id,
            Scan {
                update_id: Some(44),
                object: true,
                ..Scan::default()
            }
        );
    }

    /// Every prefix of a realistic update: no panic, and a prefix that reads as an
    /// object says what the whole does; a cut inside a number is never taken as the
    /// number.
    #[test]
    fn truncated_bodies_never_give_a_wrong_answer() {
        let bodies = [
            update(
                100000002,
                "message",
                &format!(
                    r#"{{"message_id":9001,"from":{BEN},"chat":{TEAM},"date":1767225601,"text":"hello"}}"#
                ),
            ),
            format!(
                r#"{{"callback_query":{{"id":"x","from":{BEN},"message":{{"chat":{TEAM}}}}},"update_id":100000003}}"#
            ),
            update(
                100000004,
                "poll",
                r#"{"id":"5368392710118211585","question":"?"}"#,
            ),
        ];
        for body in &bodies {
            for mode in MODES {
                let whole = scan(body.as_bytes(), mode);
                assert!(whole.object);
                for cut in 0..body.len() {
                    let part = scan(&body.as_bytes()[..cut], mode);
                    if part.object {
                        assert_eq!(part, whole, "{mode:?} {}", &body[..cut]);
                    }
                    assert!(part.update_id.is_none() || part.update_id == whole.update_id);
                }
            }
        }
        // Cut in the middle of the chat id.
        let s = scan(
            br#"{"update_id":1,"message":{"chat":{"id":-10012"#,
            Affinity::Chat,
        );
        assert_eq!((s.key, s.object), (None, false));
    }

    #[test]
    fn deep_nesting_neither_recurses_nor_overflows() {
        const DEPTH: usize = 200_000;
        let arrays = format!(
            r#"{{"update_id":1,"message":{{"text":{}"#,
            "[".repeat(DEPTH)
        );
        let objects = format!(r#"{{"update_id":1,"x":{}"#, r#"{"a":"#.repeat(DEPTH));
        // Nesting along a key path: `message` inside `callback_query`'s `message`.
        let along = format!(
            r#"{{"update_id":1,"callback_query":{}"#,
            r#"{"message":"#.repeat(DEPTH)
        );
        // Without `update_id` first, mode none skips the type's value too.
        let first = format!(r#"{{"message":{}"#, "[".repeat(DEPTH));
        for body in [arrays, objects, along, first] {
            for mode in MODES {
                let s = scan(body.as_bytes(), mode);
                // Mode none stops at a known type once it has the update_id.
                let stopped_before = mode == Affinity::None
                    && s.kind.is_some_and(|k| k != Kind::Other)
                    && s.update_id.is_some();
                assert_eq!(s.object, stopped_before, "{mode:?} {}", &body[..40]);
            }
        }
        // Within jiter's depth limit, nesting is just a value to skip.
        let fine = format!(
            r#"{{"update_id":1,"message":{{"text":{}{},"chat":{{"id":5}}}}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(scan(fine.as_bytes(), Affinity::Chat).key, h("5"));
    }

    // ---------------------------------------------------------------------------
    // Generated updates, checked against serde_json.

    /// A JSON value being generated: an object (keys in writing order) or raw text.
    enum Node {
        Obj(Vec<(String, Node)>),
        Raw(String),
    }

    impl Node {
        fn obj() -> Node {
            Node::Obj(Vec::new())
        }

        /// Puts `value` at `path`, making the objects on the way.
        fn insert(&mut self, path: &[&str], value: Node) {
            let Node::Obj(fields) = self else {
                unreachable!("paths of one type do not cross")
            };
            let (first, rest) = path.split_first().expect("a path has a key");
            if rest.is_empty() {
                fields.push((first.to_string(), value));
                return;
            }
            let i = match fields.iter().position(|(k, _)| k == first) {
                Some(i) => i,
                None => {
                    fields.push((first.to_string(), Node::obj()));
                    fields.len() - 1
                }
            };
            fields[i].1.insert(rest, value);
        }

        fn has(&self, key: &str) -> bool {
            matches!(self, Node::Obj(f) if f.iter().any(|(k, _)| k == key))
        }

        /// The JSON text, with `ws` around every token.
        fn text(&self, ws: &str) -> String {
            let mut out = String::new();
            self.write(ws, &mut out);
            out
        }

        fn write(&self, ws: &str, out: &mut String) {
            match self {
                Node::Raw(raw) => out.push_str(raw),
                Node::Obj(fields) => {
                    out.push('{');
                    for (i, (k, v)) in fields.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&format!("{ws}\"{k}\"{ws}:{ws}"));
                        v.write(ws, out);
                        out.push_str(ws);
                    }
                    out.push('}');
                }
            }
        }
    }

    /// A deterministic stream of choices (SplitMix64) from one proptest seed, so a
    /// failing case replays from its seed.
    struct Dice(u64);

    impl Dice {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.below(i + 1));
            }
        }

        /// An id as Telegram writes them: an i64, often negative, or a plain string.
        fn id(&mut self) -> String {
            match self.below(4) {
                0 => format!("\"{}\"", self.word()),
                1 => format!("-100{}", self.next() % 10_000_000_000),
                _ => format!("{}", self.next() as i64),
            }
        }

        fn word(&mut self) -> String {
            const CHARS: &[u8] = b"abcXYZ019-_";
            (0..self.below(12))
                .map(|_| *self.pick(CHARS) as char)
                .collect()
        }

        /// A value to skip. Numbers are integers or halves (their text survives a
        /// trip through f64); escapes only under `text`, never where an id could be.
        fn noise(&mut self, depth: usize, escapes: bool) -> Node {
            match self.below(if depth == 0 { 5 } else { 7 }) {
                0 => Node::Raw(format!("{}", self.next() as i32)),
                1 => Node::Raw(format!("{}.5", self.next() as i16)),
                2 if escapes => Node::Raw(r#""a \"b\" \\ {\"chat\":{\"id\":1}} \u00e9 é""#.into()),
                2 => Node::Raw(format!("\"{}\"", self.word())),
                3 => Node::Raw((*self.pick(&["true", "false", "null", "[]", "{}"])).into()),
                4 => Node::Raw(format!("[1,\"x\",{{\"id\":{}}},[null]]", self.id())),
                _ => {
                    let mut obj = Node::obj();
                    self.add_noise(&mut obj, depth - 1);
                    obj
                }
            }
        }

        /// Adds decoy fields (`id`, `chat`, `from`… at places no path goes, or with
        /// values that are not ids) without repeating a key.
        fn add_noise(&mut self, obj: &mut Node, depth: usize) {
            const KEYS: [&str; 12] = [
                "id",
                "chat",
                "from",
                "user",
                "text",
                "date",
                "message",
                "title",
                "entities",
                "reply_to_message",
                "poll_id",
                "sender_chat",
            ];
            for _ in 0..self.below(5) {
                let key = *self.pick(&KEYS);
                if !obj.has(key) {
                    let value = self.noise(depth, key == "text");
                    obj.insert(&[key], value);
                }
            }
            if let Node::Obj(fields) = obj {
                self.shuffle(fields);
            }
        }
    }

    /// A generated update: the type object with some of its paths present, decoys,
    /// shuffled keys, maybe no or an odd `update_id`, maybe an unknown field.
    fn generate(seed: u64) -> String {
        let mut dice = Dice(seed);
        let spec = dice.pick(&SPECS);
        let mut value = Node::obj();
        for path in spec.chat.iter().chain(spec.fallback) {
            if dice.chance(60) {
                let id = dice.id();
                value.insert(path, Node::Raw(id));
            }
        }
        add_noise_deep(&mut dice, &mut value, 2);
        let mut top = Node::obj();
        match dice.below(8) {
            0 => {}
            1 => top.insert(
                &["update_id"],
                Node::Raw((*dice.pick(&["1.5", "\"9\"", "99999999999999999999"])).into()),
            ),
            _ => top.insert(&["update_id"], Node::Raw(format!("{}", dice.next() as u32))),
        }
        let value = if dice.chance(5) {
            dice.noise(0, false)
        } else {
            value
        };
        top.insert(&[spec.field], value);
        if dice.chance(20) {
            let extra = dice.noise(2, true);
            top.insert(&["x_future"], extra);
        }
        if let Node::Obj(fields) = &mut top {
            dice.shuffle(fields);
        }
        let ws = *dice.pick(&["", "", " ", "\n  ", "\t"]);
        top.text(ws)
    }

    /// Noise at every level of an object tree.
    fn add_noise_deep(dice: &mut Dice, obj: &mut Node, depth: usize) {
        if let Node::Obj(fields) = obj {
            for (_, child) in fields.iter_mut() {
                add_noise_deep(dice, child, depth);
            }
        }
        if matches!(obj, Node::Obj(_)) {
            dice.add_noise(obj, depth);
        }
    }

    /// What the scan should find, by serde_json's full parse and the table.
    fn reference(body: &str, mode: Affinity) -> Scan {
        let v: Value = serde_json::from_str(body).expect("generated JSON parses");
        let spec = SPECS.iter().find(|s| v.get(s.field).is_some());
        let (chat, fallback) = spec.map_or((&[][..], &[][..]), |s| (s.chat, s.fallback));
        let order: Vec<Path> = match mode {
            Affinity::Chat => chat.iter().chain(fallback).copied().collect(),
            Affinity::User => fallback.iter().chain(chat).copied().collect(),
            Affinity::None => Vec::new(),
        };
        let key = spec.and_then(|s| {
            order.iter().find_map(|path| {
                let pointer: String = path.iter().map(|k| format!("/{k}")).collect();
                match v[s.field].pointer(&pointer)? {
                    Value::Number(n) => Some(hash_bytes(n.to_string().as_bytes())),
                    Value::String(s) if !s.is_empty() => Some(hash_bytes(s.as_bytes())),
                    _ => None,
                }
            })
        });
        Scan {
            update_id: v["update_id"].as_i64(),
            kind: Some(spec.map_or(Kind::Other, |s| s.kind)),
            key,
            object: true,
        }
    }

    proptest::proptest! {
        /// The scan finds what a full parse finds, in every mode; every prefix of the
        /// body either says the same or is not an object.
        #[test]
        fn agrees_with_serde_json(seed in proptest::num::u64::ANY, cut in proptest::num::usize::ANY) {
            let body = generate(seed);
            for mode in MODES {
                let got = scan(body.as_bytes(), mode);
                proptest::prop_assert_eq!(got, reference(&body, mode), "{:?} {}", mode, body);
                let part = scan(&body.as_bytes()[..cut % (body.len() + 1)], mode);
                proptest::prop_assert!(!part.object || part == got, "{:?} {}", mode, body);
            }
        }

        /// Any bytes: a `Scan`, never a panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            for mode in MODES {
                let _ = scan(&bytes, mode);
            }
        }

        /// Generated updates with one byte changed: still never a panic.
        #[test]
        fn never_panics_on_near_updates(seed in proptest::num::u64::ANY, at in proptest::num::usize::ANY, byte in proptest::num::u8::ANY) {
            let mut body = generate(seed).into_bytes();
            let i = at % body.len();
            body[i] = byte;
            for mode in MODES {
                let _ = scan(&body, mode);
            }
        }
    }
}
