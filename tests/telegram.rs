//! Telegram mode end to end (issue 15): updates generated as Telegram writes them,
//! delivered as Telegram delivers them (one request in flight per chat or user
//! queue, retries with backoff, `Retry-After` honoured; `tests/common/telegram.rs`),
//! through the proxy to bot origins that record what they processed.
//!
//! Covered, one test each:
//! 1. every update processed exactly once, each chat on one bot, per-queue order
//!    kept, bodies and the contracted headers unchanged (3 bots, 30 chats, 300
//!    updates of six types);
//! 2. a bot killed mid-run: no update lost, only its chats move;
//! 3. 5 % of updates re-sent after their 2xx: the bots see each once, the re-sends
//!    get the first answer byte for byte, `deduplicated` counts them;
//! 4. a bot slower than `deadline`: 503 with an integer `Retry-After`, then the
//!    re-send gets the original answer; the handler ran once;
//! 5. the secret: wrong or missing → 401 before the body is read and no bot
//!    contacted, either token of a rotation accepted, `forward_secret`
//!    true / false / "value" as the bots see it;
//! 6. the source: outside `allow_from` (explicit list, the default "telegram"
//!    preset, a spoofed `X-Forwarded-For`) → 403, counted; the bots get
//!    `X-Forwarded-For` with exactly the client's address;
//! 7. a poison update: after `max_attempts` answered 200 `{}`, dead-lettered (the
//!    JSON line checked), its chat's next updates delivered;
//! 8. webhook replies (multipart with a boundary, JSON) reach the sender byte for
//!    byte;
//! 9. GET → 405, a body over `max_body` → 413, a body that is not an update goes to
//!    a bot, and is dead-lettered and answered 200 `{}` at once if the bot fails it;
//! 10. no bot up → 503 with the configured `Retry-After`, never a 2xx, and the
//!     backlog is neither lost nor dead-lettered when the bots come back;
//! 11. two telegram routes (paths, secrets, pools, the same update_ids) side by side;
//! 12. two proxy instances sharing a real `redis-server`: a re-send on the other
//!     instance, after the answer or while the first is in flight, is answered from
//!     the store and no bot sees it twice (with memory stores, it would);
//! 13. Redis killed mid-run: every update still delivered at its first try, the
//!     fallback counted;
//! 14. a drained bot gets no new update, finishes the one in flight; only its chats
//!     move.
//!
//!
//! And one of the harness itself: the generated bodies are what Telegram writes,
//! and the affinity keys the assertions use are the table's.
//!
//! Time: Telegram's backoff and `Retry-After` run at 10 ms per second (the
//! sender's `second`); everything awaited is polled with a bound, never slept out.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::control::eventually;
use common::redis_server::RedisServer;
use common::telegram::*;
use common::TempDir;
use serde_json::Value;

const SHOP: &str = "shop";
const PATH: &str = "/tg/shop";
const POOL: &str = "shop_bots";

/// The "shop" route to the "shop_bots" pool of `bots`: the test secret, loopback
/// allowed, plus `keys` in `[route.telegram]` and `server_keys` on each server.
fn shop(bots: &[Bot], keys: &str, server_keys: &str) -> String {
    format!(
        "{}{}",
        tg_route(SHOP, PATH, POOL, &tg_keys(keys)),
        pool(POOL, bots, server_keys)
    )
}

/// Active checks of `pool` every 100 ms, one failure marking a server down: a dead
/// bot is out of the hash within a fraction of a second, whatever the mode feeds
/// to passive health.
fn fast_checks(pool: &str) -> String {
    format!(
        "[upstream.{pool}.health_check]\ninterval = \"100ms\"\ntimeout = \"2s\"\nfall = 1\nrise = 1\n\n"
    )
}

/// Waits until the bots together have received `n` requests.
async fn await_seen_total(bots: &[Bot], n: usize) {
    eventually(LIMIT, || bots.iter().map(Bot::count).sum::<usize>() >= n)
        .await
        .unwrap_or_else(|| panic!("bots did not receive {n} requests"));
}

/// Asserts that an attempt got the mode's 503: an integer `Retry-After` of `secs`
/// and an empty body.
fn assert_unavailable(a: &Attempt, secs: u64) {
    let ans = a.answer();
    assert_eq!(ans.status, 503, "body: {:?}", ans.body);
    assert_eq!(
        ans.retry_after_secs(),
        Some(secs),
        "Retry-After {:?}",
        ans.header("retry-after")
    );
    assert!(ans.body.is_empty(), "503 body: {:?}", ans.body);
}

/// Asserts that `got` is `want` byte for byte: status, `Content-Type`, body.
fn assert_same_answer(got: &Answer, want: &Answered, what: &str) {
    assert_eq!(got.status, want.status, "{what}: status");
    assert_eq!(
        got.content_type(),
        Some(want.content_type.as_str()),
        "{what}: content type"
    );
    assert_eq!(got.body, want.body, "{what}: body");
}

/// The answer a bot recorded for update `id` (it must have handled it once).
fn bot_answer(bots: &[Bot], id: i64) -> Answered {
    let seen = all_seen(bots);
    let s = seen_of(&seen, id);
    assert_eq!(s.len(), 1, "update {id} reached the bots {} times", s.len());
    s[0].answer.clone().expect("the bot answered")
}

// 0 ------------------------------------------------------------------------------

/// The assertions below group updates by `Update::key` and `Update::queue`: check
/// them against the bodies, read the way the reference's table says.
#[test]
fn generated_updates_are_what_telegram_writes() {
    let updates = World::new(0, 30).batch(300);
    for (i, u) in updates.iter().enumerate() {
        assert_eq!(
            u.id,
            FIRST_UPDATE_ID + i as i64,
            "update_id increases by one"
        );
        let head = format!("{{\"update_id\":{},\n\"{}\":{{", u.id, u.kind.as_str());
        assert!(u.body.starts_with(head.as_bytes()), "{:?}", u.body);
        let v = u.json();
        assert_eq!(affinity_key(&v), Some(u.key()), "{v}");
        assert_eq!(update_kind(&v).as_deref(), Some(u.kind.as_str()));
        match u.kind {
            Kind::ChannelPost => assert!(u.key() < -1_000_000_000_000, "a -100… id"),
            Kind::InlineQuery => assert_eq!(u.key(), u.user),
            Kind::CallbackQuery => assert_eq!(u.queue(), u.user, "queued per user"),
            _ => assert_eq!(u.queue(), u.key(), "queued per chat"),
        }
    }
    let keys: HashSet<i64> = updates.iter().map(Update::key).collect();
    assert!(keys.len() >= 30, "{} keys", keys.len());
    assert!(keys.iter().any(|k| *k < 0) && keys.iter().any(|k| *k > 0));
}

// 1 ------------------------------------------------------------------------------

#[tokio::test]
async fn every_update_once_each_chat_on_one_bot_in_order() {
    let bots = start_bots(&["b1", "b2", "b3"]).await;
    for b in &bots {
        // A little work per update, so that the chats really run side by side.
        b.rules(|r| r.delay = Duration::from_millis(3));
    }
    let proxy = start_proxy(&shop(&bots, "", "")).await;
    let mut world = World::new(1, 30);
    let updates = world.batch(300);
    let kinds: HashSet<Kind> = updates.iter().map(|u| u.kind).collect();
    assert_eq!(kinds.len(), Kind::ALL.len(), "the run mixes every type");

    let sender = Sender::start(proxy.addr, SenderOptions::default());
    sender.submit_all(&updates);
    sender.wait_idle(LIMIT).await;

    assert_all_delivered(&sender);
    for d in sender.deliveries() {
        // With every bot up, nothing is refused: the first try is the answer.
        assert_eq!(
            d.attempts.len(),
            1,
            "update {}: {:?}",
            d.update.id,
            d.statuses()
        );
        let a = d.answer().expect("delivered");
        assert_eq!(&a.body[..], b"{}");
        assert_eq!(a.content_type(), Some("application/json"));
    }
    let seen = all_seen(&bots);
    assert_each_once(&updates, &seen);
    let homes = assert_one_bot_per_key(&updates, &seen);
    assert_queue_order(&updates, &seen);
    // ~45 keys over 3 bots by hashing: each bot has its share (a bot with fewer
    // than 3 would be a 1-in-10^4 draw; one with none, a broken hash).
    for b in &bots {
        let n = homes.values().filter(|h| h.as_str() == b.name()).count();
        assert!(n >= 3, "{} holds {n} of {} keys", b.name(), homes.len());
    }
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.path, PATH, "the path is forwarded unchanged");
        assert_eq!(
            s.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(s.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(s.header(SECRET_HEADER).as_deref(), Some(SECRET));
    }
    await_tg_count(proxy.admin, SHOP, "delivered", 300.0).await;
    assert_eq!(tg_count(proxy.admin, SHOP, "deduplicated").await, 0.0);
    assert_eq!(tg_count(proxy.admin, SHOP, "dead_lettered").await, 0.0);
}

// 2 ------------------------------------------------------------------------------

#[tokio::test]
async fn a_killed_bot_loses_no_update_and_only_its_chats_move() {
    let bots = start_bots(&["b1", "b2", "b3"]).await;
    for b in &bots {
        b.rules(|r| r.delay = Duration::from_millis(5));
    }
    // A long rest: the dead bot stays out for the whole run (a trial request after
    // fail_timeout would move its chats back and forth).
    let proxy = start_proxy(&format!(
        "{}{}",
        shop(&bots, "", "fail_timeout = \"60s\""),
        fast_checks(POOL)
    ))
    .await;
    let mut world = World::new(2, 30);
    let first = world.batch(200);
    let second = world.batch(200);
    let sender = Sender::start(proxy.addr, SenderOptions::default());
    sender.submit_all(&first);

    // Kill while the first half flows.
    await_seen_total(&bots, 70).await;
    let victim = &bots[1];
    let killed_at = Instant::now();
    victim.kill().await;
    until("the proxy to take the dead bot out", LIMIT, || async {
        (server_up(proxy.admin, POOL, victim.addr()).await == Some(0.0)).then_some(())
    })
    .await;
    let out_at = Instant::now();
    // The second half is sent with the bot known dead.
    sender.submit_all(&second);
    sender.wait_idle(LIMIT).await;

    assert_all_delivered(&sender);
    let updates: Vec<Update> = first.iter().chain(&second).cloned().collect();
    let seen = all_seen(&bots);
    for u in &updates {
        let s = seen_of(&seen, u.id);
        match s.as_slice() {
            [] => panic!("update {} lost", u.id),
            [_] => {}
            // Twice only when the killed bot was handling it as it died (it never
            // answered, so Telegram re-sent it and another bot got it).
            [a, b] => {
                let (dead, other) = if a.bot == victim.name() {
                    (a, b)
                } else {
                    (b, a)
                };
                assert_eq!(
                    dead.bot,
                    victim.name(),
                    "update {} on {} and {}",
                    u.id,
                    a.bot,
                    b.bot
                );
                assert!(
                    dead.answer.is_none(),
                    "update {} answered by the dead bot, then sent again",
                    u.id
                );
                assert_ne!(other.bot, victim.name());
            }
            many => panic!("update {} processed {} times", u.id, many.len()),
        }
    }
    assert_queue_order(&updates, &seen);

    // Each key's home: where its updates went before the kill.
    let before: Vec<Seen> = seen.iter().filter(|s| s.at < killed_at).cloned().collect();
    let homes = assert_one_bot_per_key(&updates, &before);
    let keys: BTreeMap<i64, i64> = updates.iter().map(|u| (u.id, u.key())).collect();
    let mut moved = 0;
    for s in &seen {
        let key = keys[&s.update_id.expect("an update")];
        match homes.get(&key) {
            // A surviving bot's chats stay where they were, the whole run.
            Some(home) if home != victim.name() => assert_eq!(
                &s.bot, home,
                "key {key} of surviving bot {home} moved to {}",
                s.bot
            ),
            Some(_) if s.at > out_at => moved += 1,
            _ => {}
        }
    }
    assert!(
        moved > 0,
        "no update of the dead bot's chats came after it was out"
    );
    // After the proxy knew, each moved chat went to one surviving bot.
    let after: Vec<Seen> = seen.iter().filter(|s| s.at > out_at).cloned().collect();
    let moved_to = assert_one_bot_per_key(&updates, &after);
    assert!(moved_to.values().all(|b| b != victim.name()));
}

// 3 ------------------------------------------------------------------------------

#[tokio::test]
async fn resent_updates_are_answered_from_the_store_byte_for_byte() {
    let bots = start_bots(&["b1", "b2", "b3"]).await;
    for b in &bots {
        // Answers of their own (bot and update in the body), so that a replay of
        // another update's answer, or a second run of the handler, shows.
        b.rules(|r| r.reply = Reply::Method);
    }
    let proxy = start_proxy(&shop(&bots, "", "")).await;
    let updates = World::new(3, 30).batch(300);
    let sender = Sender::start(
        proxy.addr,
        SenderOptions {
            resend_share: 0.05,
            ..SenderOptions::default()
        },
    );
    sender.submit_all(&updates);
    sender.wait_idle(LIMIT).await;

    assert_all_delivered(&sender);
    let seen = all_seen(&bots);
    assert_each_once(&updates, &seen);
    let resent: Vec<Delivery> = sender
        .deliveries()
        .into_iter()
        .filter(|d| d.resent.is_some())
        .collect();
    assert!(resent.len() >= 5, "only {} re-sends", resent.len());
    for d in &resent {
        let original = bot_answer(&bots, d.update.id);
        let first = d.answer().expect("delivered");
        assert_same_answer(first, &original, "first answer");
        let again = d.resent.as_ref().expect("re-sent").answer();
        assert_same_answer(again, &original, "re-send");
    }
    await_tg_count(proxy.admin, SHOP, "deduplicated", resent.len() as f64).await;
    await_tg_count(proxy.admin, SHOP, "delivered", updates.len() as f64).await;
}

// 4 ------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_bot_past_the_deadline_gets_503_then_the_resend_gets_its_answer() {
    let bots = start_bots(&["slow"]).await;
    let slow = Duration::from_secs(1);
    let deadline = Duration::from_millis(300);
    bots[0].rules(|r| {
        r.delay = slow;
        r.reply = Reply::Method;
    });
    let proxy = start_proxy(&shop(&bots, "deadline = \"300ms\"", "")).await;
    let u = World::new(4, 10).of(Kind::Message);
    let sender = Sender::start(proxy.addr, SenderOptions::default());
    sender.submit(u.clone());
    sender.wait_idle(LIMIT).await;

    let d = sender.delivery(u.id);
    let original = bot_answer(&bots, u.id);
    // The first answer is the deadline's, not the bot's: 503 with the default
    // Retry-After, after the deadline and well before the bot is done.
    let first = &d.attempts[0];
    assert_unavailable(first, 2);
    let took = first.done - first.sent;
    assert!(
        took >= deadline - Duration::from_millis(10) && took < slow,
        "the 503 came after {took:?}"
    );
    assert!(
        first.done < original.at,
        "the 503 came after the bot answered"
    );
    assert!(d.attempts.len() >= 2, "{:?}", d.statuses());
    for a in &d.attempts[..d.attempts.len() - 1] {
        assert_unavailable(a, 2);
    }
    // Telegram's re-send got the answer of the delivery that kept running.
    assert_same_answer(d.answer().expect("delivered"), &original, "final answer");
    // And once it is stored, a later re-send too, without a bot.
    let again = post_update(proxy.addr, PATH, Some(SECRET), &u.body).await;
    assert_same_answer(&again, &original, "re-send after the answer");
    assert_eq!(bots[0].seen_update(u.id).len(), 1, "the handler ran once");
    let coalesced = tg_count(proxy.admin, SHOP, "coalesced").await;
    assert!(coalesced >= 1.0, "coalesced = {coalesced}");
    assert!(tg_count(proxy.admin, SHOP, "deduplicated").await >= 1.0);
}

// 5 ------------------------------------------------------------------------------

#[tokio::test]
async fn the_secret_is_checked_before_the_body_and_forwarded_as_configured() {
    let bots = start_bots(&["b"]).await;
    // One bot behind three routes that differ only in forward_secret.
    let rotation = "secret_token = [\"tok-A\", \"tok-B\"]\nallow_from = [\"127.0.0.0/8\"]\n";
    let text = format!(
        "{}{}{}{}",
        tg_route(
            "fwd",
            "/tg/fwd",
            "bots",
            &format!("{rotation}forward_secret = true")
        ),
        tg_route(
            "strip",
            "/tg/strip",
            "bots",
            &format!("{rotation}forward_secret = false")
        ),
        tg_route(
            "fixed",
            "/tg/fixed",
            "bots",
            &format!("{rotation}forward_secret = \"tok-A\"")
        ),
        pool("bots", &bots, "")
    );
    let proxy = start_proxy(&text).await;
    let mut world = World::new(5, 10);

    // Refused: no header, a wrong one, and one that is a prefix of a right one.
    for secret in [None, Some("tok-C"), Some("tok-")] {
        let u = world.next();
        let a = post_update(proxy.addr, "/tg/fwd", secret, &u.body).await;
        assert_eq!(a.status, 401, "secret {secret:?}");
    }
    // Refused before the body is read: the head alone gets the answer.
    let status = status_without_body(proxy.addr, "/tg/fwd", &[(SECRET_HEADER, "wrong")]).await;
    assert_eq!(status, 401);

    // Either token of the rotation is accepted, and forwarded as configured.
    let cases = [
        ("/tg/fwd", "tok-A", Some("tok-A")),
        ("/tg/fwd", "tok-B", Some("tok-B")),
        ("/tg/strip", "tok-B", None),
        ("/tg/fixed", "tok-B", Some("tok-A")),
        ("/tg/fixed", "tok-A", Some("tok-A")),
    ];
    let mut accepted = Vec::new();
    for (path, token, at_bot) in cases {
        let u = world.next();
        let a = post_update(proxy.addr, path, Some(token), &u.body).await;
        assert_eq!(a.status, 200, "{path} with {token}");
        let s = bots[0].seen_update(u.id);
        assert_eq!(s.len(), 1, "{path} with {token}");
        assert_eq!(
            s[0].header(SECRET_HEADER).as_deref(),
            at_bot,
            "{path} with {token}: the bot's secret header"
        );
        accepted.push(u.id);
    }
    // The refused ones never reached the bot.
    let reached: Vec<Option<i64>> = bots[0].seen().iter().map(|s| s.update_id).collect();
    let want: Vec<Option<i64>> = accepted.iter().copied().map(Some).collect();
    assert_eq!(reached, want, "only the accepted updates reach the bot");
    await_tg_count(proxy.admin, "fwd", "rejected_secret", 4.0).await;
    assert_eq!(tg_count(proxy.admin, "strip", "rejected_secret").await, 0.0);
}

// 6 ------------------------------------------------------------------------------

#[tokio::test]
async fn sources_outside_allow_from_get_403_and_bots_get_the_real_client_ip() {
    let bots = start_bots(&["b"]).await;
    let secret = format!("secret_token = [\"{SECRET}\"]\n");
    let text = format!(
        "{}{}{}{}{}",
        // 127.0.0.1 is outside each of the first three.
        tg_route(
            "closed",
            "/tg/closed",
            "bots",
            &format!("{secret}allow_from = [\"10.0.0.0/8\"]")
        ),
        tg_route("preset", "/tg/preset", "bots", &secret),
        tg_route(
            "spoof",
            "/tg/spoof",
            "bots",
            &format!("{secret}allow_from = [\"149.154.160.0/20\"]")
        ),
        tg_route(
            "open",
            "/tg/open",
            "bots",
            &format!("{secret}allow_from = [\"127.0.0.0/8\"]")
        ),
        pool("bots", &bots, "")
    );
    let proxy = start_proxy(&text).await;
    let mut world = World::new(6, 10);
    // A spoofed X-Forwarded-For naming Telegram's subnet, from an untrusted peer.
    let spoofed = [
        ("content-type", "application/json"),
        (SECRET_HEADER, SECRET),
        ("x-forwarded-for", "149.154.167.99, 10.1.2.3"),
        ("x-forwarded-for", "91.108.6.70"),
    ];
    for path in ["/tg/closed", "/tg/preset", "/tg/spoof"] {
        let u = world.next();
        let a = request(proxy.addr, "POST", path, &spoofed, &u.body).await;
        assert_eq!(a.status, 403, "{path}");
    }
    let status = status_without_body(proxy.addr, "/tg/closed", &[(SECRET_HEADER, SECRET)]).await;
    assert_eq!(status, 403, "refused before the body is read");
    assert_eq!(bots[0].count(), 0, "a refused source reached the bot");

    let u = world.next();
    let a = request(proxy.addr, "POST", "/tg/open", &spoofed, &u.body).await;
    assert_eq!(a.status, 200);
    let s = bots[0].seen_update(u.id);
    assert_eq!(s.len(), 1);
    // One value, the TCP peer: the spoofed entries are replaced, not appended to.
    assert_eq!(
        s[0].header_all("x-forwarded-for"),
        vec!["127.0.0.1".to_owned()]
    );
    assert_eq!(bots[0].count(), 1);

    // /tg/closed got two refusals (the full request and the head alone).
    await_tg_count(proxy.admin, "closed", "rejected_source", 2.0).await;
    await_tg_count(proxy.admin, "preset", "rejected_source", 1.0).await;
    await_tg_count(proxy.admin, "spoof", "rejected_source", 1.0).await;
    assert_eq!(tg_count(proxy.admin, "open", "rejected_source").await, 0.0);
}

// 7 ------------------------------------------------------------------------------

#[tokio::test]
async fn a_poison_update_is_dead_lettered_after_max_attempts_and_its_chat_moves_on() {
    let dir = TempDir::new("tg-poison");
    let letters = dir.path("dead-letters.jsonl");
    let bots = start_bots(&["b1", "b2"]).await;
    let proxy = start_proxy(&shop(
        &bots,
        &format!("max_attempts = 3\ndead_letter = \"{}\"", letters.display()),
        "",
    ))
    .await;
    let mut world = World::new(7, 20);
    let chat = world.conversation_ids()[0];
    let mut updates = world.batch(20);
    let (before, poison) = (world.message(chat), world.message(chat));
    let after = vec![world.message(chat), world.message(chat)];
    updates.push(before.clone());
    updates.push(poison.clone());
    updates.extend(after.iter().cloned());
    updates.extend(world.batch(20));
    for b in &bots {
        b.rules(|r| {
            r.poison.insert(poison.id);
        });
    }
    let sender = Sender::start(proxy.addr, SenderOptions::default());
    sender.submit_all(&updates);
    sender.wait_idle(LIMIT).await;

    // Telegram saw the bot's 500 twice (passed through as is), then 200 {}.
    let d = sender.delivery(poison.id);
    assert_eq!(d.statuses(), vec![Some(500), Some(500), Some(200)]);
    for a in &d.attempts[..2] {
        assert_eq!(&a.answer().body[..], b"500: Internal Server Error");
    }
    let last = d.answer().expect("answered");
    assert_eq!(&last.body[..], b"{}");
    assert_eq!(last.content_type(), Some("application/json"));
    // Every attempt reached the chat's bot.
    let seen = all_seen(&bots);
    let tries = seen_of(&seen, poison.id);
    assert_eq!(tries.len(), 3);
    assert!(
        tries.iter().all(|s| s.bot == tries[0].bot),
        "the poison update changed bots"
    );

    // The rest, the chat's later updates included, once each.
    assert_all_delivered(&sender);
    let others: Vec<Update> = updates
        .iter()
        .filter(|u| u.id != poison.id)
        .cloned()
        .collect();
    let rest: Vec<Seen> = seen
        .iter()
        .filter(|s| s.update_id != Some(poison.id))
        .cloned()
        .collect();
    assert_each_once(&others, &rest);
    for u in &after {
        let s = seen_of(&seen, u.id);
        assert!(
            s[0].at > tries[2].at,
            "update {} overtook the poison update",
            u.id
        );
    }

    let lines = await_dead_letters(&letters, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["route"], SHOP);
    assert_eq!(line["update_id"], poison.id);
    assert_eq!(line["type"], "message");
    assert_eq!(line["attempts"], 3);
    assert_eq!(line["update"], poison.json(), "the update as received");
    let time = line["time"].as_str().expect("time is a string");
    assert!(
        time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "time {time}"
    );
    let reasons = line["reasons"].as_array().expect("reasons is a list");
    assert!(!reasons.is_empty());
    for r in reasons {
        assert!(r.as_str().is_some_and(|r| r.contains("500")), "reason {r}");
    }
    await_tg_count(proxy.admin, SHOP, "dead_lettered", 1.0).await;

    // A later re-send gets 200 {} too, and no bot.
    let again = post_update(proxy.addr, PATH, Some(SECRET), &poison.body).await;
    assert_eq!((again.status, &again.body[..]), (200, &b"{}"[..]));
    assert_eq!(seen_of(&all_seen(&bots), poison.id).len(), 3);
    assert_eq!(dead_letters(&letters).len(), 1, "dead-lettered once");
}

// 8 ------------------------------------------------------------------------------

#[tokio::test]
async fn webhook_replies_pass_through_byte_for_byte() {
    let bots = start_bots(&["b"]).await;
    let proxy = start_proxy(&shop(&bots, "", "")).await;
    let mut world = World::new(8, 10);
    let multipart: Vec<Update> = (0..5).map(|_| world.next()).collect();
    let json: Vec<Update> = (0..5).map(|_| world.next()).collect();
    bots[0].rules(|r| {
        for u in &multipart {
            r.replies.insert(u.id, Reply::Multipart);
        }
        for u in &json {
            r.replies.insert(u.id, Reply::Method);
        }
    });
    let sender = Sender::start(proxy.addr, SenderOptions::default());
    sender.submit_all(&multipart);
    sender.submit_all(&json);
    sender.wait_idle(LIMIT).await;

    for u in multipart.iter().chain(&json) {
        let d = sender.delivery(u.id);
        let got = d.answer().expect("delivered");
        let want = bot_answer(&bots, u.id);
        assert_same_answer(got, &want, "webhook reply");
        // No hop-by-hop additions that would cost Telegram its connection.
        assert!(got
            .header("connection")
            .is_none_or(|c| !c.eq_ignore_ascii_case("close")));
    }
    let (ct, _) = Reply::Multipart.render("b", multipart[0].id, multipart[0].chat);
    assert!(ct.starts_with("multipart/form-data; boundary=webhookBoundary"));
}

// 9 ------------------------------------------------------------------------------

#[tokio::test]
async fn other_methods_oversize_and_invalid_bodies() {
    let dir = TempDir::new("tg-bodies");
    let letters = dir.path("dead-letters.jsonl");
    let bots = start_bots(&["b1", "b2"]).await;
    let proxy = start_proxy(&shop(
        &bots,
        &format!(
            "max_body = \"2KiB\"\ndead_letter = \"{}\"",
            letters.display()
        ),
        "",
    ))
    .await;
    let mut world = World::new(9, 10);

    let get = request(proxy.addr, "GET", PATH, &[(SECRET_HEADER, SECRET)], b"").await;
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
    // An exact path: a trailing slash is another path, never a redirect.
    let slash = post_update(proxy.addr, "/tg/shop/", Some(SECRET), &world.next().body).await;
    assert_eq!(slash.status, 404);

    // Over max_body: 413, no bot, counted, dead-lettered.
    let big = format!(
        "{{\"update_id\":{},\n\"message\":{{\"message_id\":1,\"chat\":{{\"id\":5,\"type\":\"private\"}},\"date\":1,\"text\":\"{}\"}}}}",
        FIRST_UPDATE_ID - 1,
        "x".repeat(3000)
    );
    let a = post_update(proxy.addr, PATH, Some(SECRET), big.as_bytes()).await;
    assert_eq!(a.status, 413);
    await_tg_count(proxy.admin, SHOP, "too_large", 1.0).await;
    let lines = await_dead_letters(&letters, 1).await;
    assert_eq!(lines[0]["route"], SHOP);
    assert_eq!(all_seen(&bots).len(), 0, "the oversize body reached a bot");

    // Not an update: still delivered, bytes and Content-Type as sent; the bot's
    // 2xx is the answer.
    for body in [&b"this is not json"[..], b"[1,2,3]"] {
        let a = post_update(proxy.addr, PATH, Some(SECRET), body).await;
        assert_eq!((a.status, &a.body[..]), (200, &b"{}"[..]));
        let seen = all_seen(&bots);
        let s: Vec<&Seen> = seen.iter().filter(|s| s.body == body).collect();
        assert_eq!(s.len(), 1, "{:?} reached the bots {} times", body, s.len());
        assert_eq!(
            s[0].header("content-type").as_deref(),
            Some("application/json")
        );
    }
    assert_eq!(dead_letters(&letters).len(), 1);

    // Not an update and the bot fails it: 200 {} and dead-lettered at once (one
    // try, whatever max_attempts says).
    for b in &bots {
        b.rules(|r| r.invalid_status = 500);
    }
    let broken = b"{\"update_id\": oops \xff}";
    let a = post_update(proxy.addr, PATH, Some(SECRET), broken).await;
    assert_eq!((a.status, &a.body[..]), (200, &b"{}"[..]));
    assert_eq!(a.content_type(), Some("application/json"));
    let seen = all_seen(&bots);
    assert_eq!(seen.iter().filter(|s| &s.body[..] == broken).count(), 1);
    let lines = await_dead_letters(&letters, 2).await;
    let line = lines
        .iter()
        .find(|l| l.get("body").is_some())
        .unwrap_or_else(|| panic!("no line with the body: {lines:?}"));
    assert_eq!(line["body"], String::from_utf8_lossy(broken).into_owned());
    assert_eq!(line["update_id"], Value::Null);
    assert_eq!(line["type"], Value::Null);
    assert!(line.get("update").is_none(), "{line}");
    await_tg_count(proxy.admin, SHOP, "dead_lettered", 2.0).await;
}

// 10 -----------------------------------------------------------------------------

#[tokio::test]
async fn with_no_bot_up_updates_get_503_and_none_is_lost_or_dead_lettered() {
    let dir = TempDir::new("tg-down");
    let letters = dir.path("dead-letters.jsonl");
    let bots = start_bots(&["b1", "b2"]).await;
    let proxy = start_proxy(&shop(
        &bots,
        &format!(
            "retry_after = \"3s\"\nmax_attempts = 3\ndead_letter = \"{}\"",
            letters.display()
        ),
        "",
    ))
    .await;
    for b in &bots {
        b.kill().await;
    }
    let mut world = World::new(10, 10);
    let updates: Vec<Update> = world
        .conversation_ids()
        .into_iter()
        .map(|c| world.message(c))
        .collect();
    let sender = Sender::start(proxy.addr, SenderOptions::default());
    sender.submit_all(&updates);
    // More refusals per update than max_attempts: had they counted, every update
    // would now be dead-lettered.
    eventually(LIMIT, || {
        let d = sender.deliveries();
        d.len() == updates.len() && d.iter().all(|d| d.attempts.len() > 4)
    })
    .await
    .expect("the sender kept retrying");
    let back = Instant::now();
    for b in &bots {
        b.restart().await;
    }
    sender.wait_idle(LIMIT).await;

    assert_all_delivered(&sender);
    for d in sender.deliveries() {
        for a in d.attempts.iter().filter(|a| a.done < back) {
            assert_unavailable(a, 3);
        }
    }
    assert_each_once(&updates, &all_seen(&bots));
    assert!(
        dead_letters(&letters).is_empty(),
        "{:?}",
        dead_letters(&letters)
    );
    assert_eq!(tg_count(proxy.admin, SHOP, "dead_lettered").await, 0.0);
}

// 11 -----------------------------------------------------------------------------

#[tokio::test]
async fn two_telegram_routes_work_side_by_side() {
    let shop_bots = start_bots(&["shop1", "shop2"]).await;
    let news_bots = start_bots(&["news1", "news2"]).await;
    let text = format!(
        "{}{}{}{}",
        tg_route(
            "shop",
            "/tg/shop",
            "shop_bots",
            "secret_token = [\"shop-token\"]\nallow_from = [\"127.0.0.0/8\"]"
        ),
        tg_route(
            "news",
            "/tg/news",
            "news_bots",
            "secret_token = [\"news-token\"]\nallow_from = [\"127.0.0.0/8\"]"
        ),
        pool("shop_bots", &shop_bots, ""),
        pool("news_bots", &news_bots, "")
    );
    let proxy = start_proxy(&text).await;
    // Each bot has its own update_id sequence: both start at the same id, and
    // one route's update 815000000 is no duplicate of the other's.
    let shop_updates = World::new(11, 20).batch(150);
    let news_updates = World::new(12, 20).batch(150);
    assert_eq!(shop_updates[0].id, news_updates[0].id);
    let sender = |path: &str, secret: &str| {
        Sender::start(
            proxy.addr,
            SenderOptions {
                path: path.to_owned(),
                secret: Some(secret.to_owned()),
                ..SenderOptions::default()
            },
        )
    };
    let shop = sender("/tg/shop", "shop-token");
    let news = sender("/tg/news", "news-token");
    shop.submit_all(&shop_updates);
    news.submit_all(&news_updates);
    shop.wait_idle(LIMIT).await;
    news.wait_idle(LIMIT).await;

    for (sender, updates, bots, path) in [
        (&shop, &shop_updates, &shop_bots, "/tg/shop"),
        (&news, &news_updates, &news_bots, "/tg/news"),
    ] {
        assert_all_delivered(sender);
        let seen = all_seen(bots);
        assert_each_once(updates, &seen);
        assert_one_bot_per_key(updates, &seen);
        assert!(seen.iter().all(|s| s.path == path));
    }
    await_tg_count(proxy.admin, "shop", "delivered", 150.0).await;
    await_tg_count(proxy.admin, "news", "delivered", 150.0).await;
    assert_eq!(tg_count(proxy.admin, "shop", "deduplicated").await, 0.0);
    assert_eq!(tg_count(proxy.admin, "news", "deduplicated").await, 0.0);
    // One route's secret is no good on the other.
    let u = World::new(13, 10).next();
    let a = post_update(proxy.addr, "/tg/news", Some("shop-token"), &u.body).await;
    assert_eq!(a.status, 401);
    await_tg_count(proxy.admin, "news", "rejected_secret", 1.0).await;
    assert_eq!(tg_count(proxy.admin, "shop", "rejected_secret").await, 0.0);
}

// 12 -----------------------------------------------------------------------------

#[tokio::test]
async fn two_instances_sharing_redis_answer_a_resend_once() {
    let bots = start_bots(&["b1", "b2"]).await;
    for b in &bots {
        b.rules(|r| r.reply = Reply::Method);
    }
    let mut world = World::new(12, 20);

    // The control: with memory stores, instances know nothing of each other, and
    // a re-send on the other one runs the handler again. (So what follows shows
    // the Redis store at work, not something shared in this test process.)
    {
        let memory = shop(&bots, "dedup_store = \"memory\"", "");
        let (a, b) = (start_proxy(&memory).await, start_proxy(&memory).await);
        let u = world.next();
        assert_eq!(
            post_update(a.addr, PATH, Some(SECRET), &u.body)
                .await
                .status,
            200
        );
        assert_eq!(
            post_update(b.addr, PATH, Some(SECRET), &u.body)
                .await
                .status,
            200
        );
        assert_eq!(seen_of(&all_seen(&bots), u.id).len(), 2);
        a.stop().await;
        b.stop().await;
    }

    let redis = RedisServer::start();
    let shared = shop(&bots, &format!("dedup_store = \"{}\"", redis.url()), "");
    let a = start_proxy(&shared).await;
    let b = start_proxy(&shared).await;

    // Delivered through A, re-sent to B: B answers from the store.
    let updates = world.batch(40);
    let sender = Sender::start(a.addr, SenderOptions::default());
    sender.submit_all(&updates);
    sender.wait_idle(LIMIT).await;
    assert_all_delivered(&sender);
    for u in &updates {
        let original = bot_answer(&bots, u.id);
        let again = post_update(b.addr, PATH, Some(SECRET), &u.body).await;
        assert_same_answer(&again, &original, "re-send on the other instance");
    }
    let seen = all_seen(&bots);
    let ids: HashSet<i64> = updates.iter().map(|u| u.id).collect();
    let relevant: Vec<Seen> = seen
        .iter()
        .filter(|s| s.update_id.is_some_and(|id| ids.contains(&id)))
        .cloned()
        .collect();
    assert_each_once(&updates, &relevant);
    await_tg_count(b.admin, SHOP, "deduplicated", updates.len() as f64).await;

    // Re-sent to B while A's delivery is still running: B waits for its result.
    let u = world.next();
    for bot in &bots {
        bot.rules(|r| {
            r.slow.insert(u.id, Duration::from_millis(800));
        });
    }
    let first = {
        let (addr, body) = (a.addr, u.body.clone());
        tokio::spawn(async move { post_update(addr, PATH, Some(SECRET), &body).await })
    };
    let id = u.id;
    let handling = eventually(LIMIT, || seen_of(&all_seen(&bots), id).len() == 1).await;
    assert!(handling.is_some(), "update {id} never reached a bot");
    let second = post_update(b.addr, PATH, Some(SECRET), &u.body).await;
    let first = first.await.expect("first delivery");
    let original = bot_answer(&bots, u.id);
    assert_same_answer(&first, &original, "first delivery");
    assert_same_answer(
        &second,
        &original,
        "re-send while in flight, other instance",
    );
    await_tg_count(b.admin, SHOP, "coalesced", 1.0).await;
    drop(redis);
}

// 13 -----------------------------------------------------------------------------

#[tokio::test]
async fn redis_killed_mid_run_still_delivers_every_update() {
    let mut redis = RedisServer::start();
    let bots = start_bots(&["b1", "b2", "b3"]).await;
    for b in &bots {
        b.rules(|r| r.delay = Duration::from_millis(5));
    }
    let proxy = start_proxy(&shop(
        &bots,
        &format!("dedup_store = \"{}\"", redis.url()),
        "",
    ))
    .await;
    let mut world = World::new(13, 30);
    let first = world.batch(150);
    let second = world.batch(150);
    let sender = Sender::start(proxy.addr, SenderOptions::default());
    sender.submit_all(&first);
    await_seen_total(&bots, 50).await;
    let killed_at = Instant::now();
    redis.kill();
    sender.submit_all(&second);
    sender.wait_idle(LIMIT).await;

    assert_all_delivered(&sender);
    for d in sender.deliveries() {
        // Redis down never fails an update.
        assert_eq!(
            d.attempts.len(),
            1,
            "update {}: {:?}",
            d.update.id,
            d.statuses()
        );
    }
    let updates: Vec<Update> = first.iter().chain(&second).cloned().collect();
    let seen = all_seen(&bots);
    assert_each_once(&updates, &seen);
    let after = seen.iter().filter(|s| s.at > killed_at).count();
    assert!(after >= 150, "only {after} updates after Redis died");
    let fallback = until("dedup fallbacks to be counted", LIMIT, || async {
        let text = scrape(proxy.admin).await;
        common::sample(
            &text,
            "switchyard_telegram_dedup_fallback_total",
            &[("route", SHOP)],
        )
        .filter(|v| *v > 0.0)
    })
    .await;
    assert!(fallback > 0.0);
}

// 14 -----------------------------------------------------------------------------

#[tokio::test]
async fn a_drained_bot_gets_no_new_update_and_finishes_its_in_flight_one() {
    let bots = start_bots(&["b1", "b2", "b3"]).await;
    for b in &bots {
        b.rules(|r| r.reply = Reply::Method);
    }
    let proxy = start_proxy(&shop(&bots, "", "")).await;
    let mut world = World::new(14, 30);
    let first = world.batch(150);
    let sender = Sender::start(proxy.addr, SenderOptions::default());
    sender.submit_all(&first);
    sender.wait_idle(LIMIT).await;
    let homes = assert_one_bot_per_key(&first, &all_seen(&bots));

    // A chat of the bot to drain, with an update that takes a while.
    let drained = &bots[1];
    let chat = world
        .conversation_ids()
        .into_iter()
        .find(|c| homes.get(c).is_some_and(|h| h == drained.name()))
        .expect("the bot holds a chat");
    let slow = world.message(chat);
    drained.rules(|r| {
        r.slow.insert(slow.id, Duration::from_millis(1500));
    });
    sender.submit(slow.clone());
    drained
        .wait_seen(LIMIT, |s| s.update_id == Some(slow.id))
        .await;
    until("the in-flight update to show", LIMIT, || async {
        (inflight(proxy.admin, POOL, drained.addr()).await == Some(1.0)).then_some(())
    })
    .await;
    drain(proxy.admin, POOL, drained.addr()).await;
    let drained_at = Instant::now();

    let second = world.batch(150);
    sender.submit_all(&second);
    sender.wait_idle(LIMIT).await;
    assert_all_delivered(&sender);

    // The update in flight finished where it was, and its answer reached Telegram.
    let d = sender.delivery(slow.id);
    assert_eq!(d.attempts.len(), 1, "{:?}", d.statuses());
    let original = bot_answer(&bots, slow.id);
    assert_eq!(seen_of(&drained.seen(), slow.id).len(), 1);
    assert_same_answer(
        d.answer().expect("delivered"),
        &original,
        "in-flight update",
    );
    assert!(original.at > drained_at);
    // Nothing new reached the drained bot.
    let late: Vec<i64> = drained
        .seen()
        .iter()
        .filter(|s| s.at > drained_at)
        .filter_map(|s| s.update_id)
        .collect();
    assert!(late.is_empty(), "the drained bot got {late:?}");

    let mut updates = first.clone();
    updates.push(slow.clone());
    updates.extend(second.iter().cloned());
    let seen = all_seen(&bots);
    assert_each_once(&updates, &seen);
    assert_queue_order(&updates, &seen);
    // The other bots' chats stayed; the drained bot's moved, each to one bot.
    let keys: BTreeMap<i64, i64> = updates.iter().map(|u| (u.id, u.key())).collect();
    let mut moved = 0;
    for s in seen.iter().filter(|s| s.at > drained_at) {
        let key = keys[&s.update_id.expect("an update")];
        match homes.get(&key) {
            Some(home) if home != drained.name() => {
                assert_eq!(&s.bot, home, "key {key} left {home} for {}", s.bot)
            }
            Some(_) => moved += 1,
            None => {}
        }
    }
    assert!(
        moved > 0,
        "no update of the drained bot's chats came after the drain"
    );
    let after: Vec<Seen> = seen.iter().filter(|s| s.at > drained_at).cloned().collect();
    assert_one_bot_per_key(&updates, &after);
    until(
        "the drained bot's in-flight count to fall",
        LIMIT,
        || async { (inflight(proxy.admin, POOL, drained.addr()).await == Some(0.0)).then_some(()) },
    )
    .await;
}

// 15 -----------------------------------------------------------------------------

/// A listener that redirects every request to HTTPS still serves its webhooks
/// where Telegram asks for them (Telegram follows no redirect), and redirects the
/// rest.
#[tokio::test]
async fn a_redirect_https_listener_serves_its_webhooks_in_place() {
    let bots = start_bots(&["b1"]).await;
    let text = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\nredirect_https = true\nhttps_port = 8443\n\n\
         [[route]]\npath = \"/\"\nupstream = \"{POOL}\"\n\n{}",
        shop(&bots, "", "")
    );
    let running = common::start_proxy(&text).await;
    let addr = running.addr("public").expect("listener public");
    let mut world = World::new(15, 10);
    let u = world.next();
    let a = post_update(addr, PATH, Some(SECRET), &u.body).await;
    assert_eq!(a.status, 200, "the webhook is served, not redirected");
    assert_eq!(bots[0].seen_update(u.id).len(), 1);
    let other = request(addr, "GET", "/elsewhere", &[], b"").await;
    assert!(
        (300..400).contains(&other.status),
        "the rest is redirected: {}",
        other.status
    );
    assert!(
        other
            .header("location")
            .is_some_and(|l| l.starts_with("https://")),
        "{:?}",
        other.header("location")
    );
    // A webhook path with another method is not the webhook: redirected too.
    let get = request(addr, "GET", PATH, &[], b"").await;
    assert!((300..400).contains(&get.status), "{}", get.status);
}
