//! Cost of finding a Telegram update's affinity key (`telegram::update::scan`, mode
//! `chat`) against a full `serde_json::Value` parse of the same body, for:
//! - `1k`: a supergroup message of 1 KiB, fields in the order Telegram writes them
//!   (`update_id`, then `message_id`, `from`, `chat`, `date`, `text`, `entities`);
//! - `64k_text`: the same with a 64 KiB text, which comes after the key;
//! - `64k_key_last`: a 64 KiB message whose `chat` comes last, after a long
//!   `reply_to_message` and `entities`, so the scan must skip nearly all of it.
//!
//! Run: `cargo bench --bench telegram` (about a minute; `-- --quick` for a glance).
//! Target from the issue: key extraction ≤ 2 µs for a 1 KiB update.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;
use switchyard::telegram::update::{scan, Affinity, Kind};

const KIB: usize = 1024;

const FROM: &str = r#"{"id":222333444,"is_bot":false,"first_name":"Ben","last_name":"Miller","username":"ben_m","language_code":"de","is_premium":true}"#;
const CHAT: &str = r#"{"id":-1001234567890,"title":"Team chat","username":"team_chat","type":"supergroup","is_forum":true}"#;

/// Words of a text, with a non-ASCII one and a quote to escape, as chats have.
const WORDS: &[&str] = &[
    "hello",
    "team,",
    "the",
    "build",
    "is",
    "grün",
    "\\\"done\\\"",
    "at",
    "5pm",
    "\\n",
];

/// A text of about `len` bytes of JSON string content.
fn text(len: usize) -> String {
    let mut out = String::with_capacity(len + 16);
    for w in WORDS.iter().cycle() {
        if out.len() >= len {
            break;
        }
        out.push_str(w);
        out.push(' ');
    }
    out
}

/// `count` text entities (mentions, links, bold…).
fn entities(count: usize) -> String {
    let items: Vec<String> = (0..count)
        .map(|i| match i % 3 {
            0 => format!(r#"{{"offset":{},"length":5,"type":"mention"}}"#, i * 7),
            1 => format!(
                r#"{{"offset":{},"length":20,"type":"text_link","url":"https://example.org/p/{i}"}}"#,
                i * 7
            ),
            _ => format!(r#"{{"offset":{},"length":4,"type":"bold"}}"#, i * 7),
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// A message in Telegram's field order, its text padded so the body is `size` bytes.
fn message_in_order(size: usize) -> Vec<u8> {
    let build = |t: &str| {
        format!(
            r#"{{"update_id":804221377,"message":{{"message_id":90211,"from":{FROM},"chat":{CHAT},"date":1767225600,"text":"{t}","entities":{}}}}}"#,
            entities(4)
        )
    };
    pad(size, build)
}

/// A message whose `chat` comes after a replied-to message and many entities.
fn message_key_last(size: usize) -> Vec<u8> {
    let build = |t: &str| {
        let reply = format!(
            r#"{{"message_id":90100,"from":{FROM},"chat":{CHAT},"date":1767220000,"text":"{t}","entities":{}}}"#,
            entities(200)
        );
        format!(
            r#"{{"update_id":804221378,"message":{{"message_id":90212,"from":{FROM},"date":1767225601,"reply_to_message":{reply},"text":"see above","entities":{},"chat":{CHAT}}}}}"#,
            entities(100)
        )
    };
    pad(size, build)
}

/// `build`'s body with the text grown until the body is `size` bytes (± a word).
fn pad(size: usize, build: impl Fn(&str) -> String) -> Vec<u8> {
    let bare = build("").len();
    let body = build(&text(size.saturating_sub(bare)));
    assert!(body.len().abs_diff(size) < 32, "{} bytes", body.len());
    body.into_bytes()
}

fn key_extraction(c: &mut Criterion) {
    let bodies = [
        ("1k", message_in_order(KIB)),
        ("64k_text", message_in_order(64 * KIB)),
        ("64k_key_last", message_key_last(64 * KIB)),
    ];
    let mut g = c.benchmark_group("telegram_key");
    for (name, body) in &bodies {
        // What is measured must be what the proxy relies on.
        let found = scan(body, Affinity::Chat);
        assert!(found.object && found.update_id.is_some() && found.key.is_some());
        assert_eq!(found.kind, Some(Kind::Message));
        serde_json::from_slice::<Value>(body).expect("the bench's bodies are JSON");

        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("scan_{name}"), |b| {
            b.iter(|| scan(black_box(body), Affinity::Chat))
        });
        g.bench_function(format!("serde_value_{name}"), |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(body)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, key_extraction);
criterion_main!(benches);
