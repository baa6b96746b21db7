//! The dead-letter log: updates the proxy gave up on (the poison guard, bodies
//! that are not an update or are too large), one JSON object per line, appended
//! to the route's `dead_letter` file off the async runtimes. Each line carries
//! the update as received when it is JSON (else its bytes as text), why it was
//! given up on, and how many deliveries failed: enough to replay it by hand.
//! Without a file, dead letters are logged (without their body) and counted only.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

/// Where a route's dead letters go.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    route: Arc<str>,
    file: Option<Arc<PathBuf>>,
}

/// One dead letter, before it is written.
#[derive(Debug)]
pub struct Letter<'a> {
    pub update_id: Option<i64>,
    pub kind: Option<&'static str>,
    pub attempts: u32,
    pub reasons: Vec<String>,
    /// The body as received; `None` when it was not read (too large).
    pub body: Option<&'a [u8]>,
}

#[derive(Serialize)]
struct Head<'a> {
    time: String,
    route: &'a str,
    update_id: Option<i64>,
    #[serde(rename = "type")]
    kind: Option<&'static str>,
    attempts: u32,
    reasons: &'a [String],
}

impl DeadLetters {
    pub fn new(route: &str, file: Option<PathBuf>) -> DeadLetters {
        DeadLetters {
            route: Arc::from(route),
            file: file.map(Arc::new),
        }
    }

    /// The line `letter` is written as (without its newline).
    pub fn line(&self, letter: &Letter<'_>) -> Vec<u8> {
        let head = Head {
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            route: &self.route,
            update_id: letter.update_id,
            kind: letter.kind,
            attempts: letter.attempts,
            reasons: &letter.reasons,
        };
        let mut line = serde_json::to_vec(&head).expect("plain values serialise");
        line.pop(); // the closing brace: the update follows
                    // The update as received when it is JSON, so the line replays it
                    // byte for byte; otherwise its bytes as text.
        match letter.body {
            None => {}
            Some(body) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
                line.extend_from_slice(b",\"update\":");
                // JSON's line breaks are whitespace outside strings (and cannot
                // be inside them): dropped, the line stays one line.
                line.extend(body.iter().filter(|&&b| b != b'\n' && b != b'\r'));
            }
            Some(body) => {
                line.extend_from_slice(b",\"body\":");
                let text = String::from_utf8_lossy(body);
                line.extend(serde_json::to_vec(&text).expect("a string serialises"));
            }
        }
        line.push(b'}');
        line
    }

    /// Writes `letter` (in the background) and logs it.
    pub fn send(&self, letter: Letter<'_>) {
        tracing::warn!(
            route = %self.route,
            update_id = ?letter.update_id,
            kind = letter.kind.unwrap_or("unknown"),
            attempts = letter.attempts,
            reason = letter.reasons.last().map_or("", String::as_str),
            "telegram update dead-lettered"
        );
        let Some(file) = &self.file else { return };
        let mut line = self.line(&letter);
        line.push(b'\n');
        let file = Arc::clone(file);
        let write = move || {
            let written = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&*file)
                // One write of the whole line: appends of whole lines do not
                // interleave.
                .and_then(|mut f| f.write_all(&line));
            if let Err(e) = written {
                tracing::error!(file = %file.display(), error = %e, "cannot write a dead letter");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> serde_json::Value {
        serde_json::from_slice(line).expect("a dead letter is one JSON object")
    }

    #[test]
    fn an_update_is_kept_as_json_and_anything_else_as_text() {
        let d = DeadLetters::new("shop", None);
        let update = b"{\"update_id\":42,\n\"message\":{\"chat\":{\"id\":-100}}}";
        let v = parse(&d.line(&Letter {
            update_id: Some(42),
            kind: Some("message"),
            attempts: 3,
            reasons: vec!["status 500".into()],
            body: Some(update),
        }));
        assert_eq!(v["route"], "shop");
        assert_eq!(v["update_id"], 42);
        assert_eq!(v["type"], "message");
        assert_eq!(v["attempts"], 3);
        assert_eq!(v["reasons"][0], "status 500");
        assert_eq!(v["update"]["message"]["chat"]["id"], -100);
        let v = parse(&d.line(&Letter {
            update_id: None,
            kind: None,
            attempts: 1,
            reasons: vec!["not an update".into()],
            body: Some(b"{\"update_id\": 4"),
        }));
        assert_eq!(v["body"], "{\"update_id\": 4");
        assert!(v["update_id"].is_null() && v.get("update").is_none());
    }
}
