//! Placeholder until the scanner lands (branch tgkey).
pub use crate::config::telegram::Affinity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Other,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub update_id: Option<i64>,
    pub kind: Option<Kind>,
    pub key: Option<u64>,
    pub object: bool,
}

pub fn scan(body: &[u8], _mode: Affinity) -> Scan {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let update_id = v
        .as_ref()
        .and_then(|v| v.get("update_id"))
        .and_then(|v| v.as_i64());
    let key = v
        .as_ref()
        .and_then(|v| v.pointer("/message/chat/id"))
        .map(|id| crate::balance::hash_bytes(id.to_string().as_bytes()));
    Scan {
        update_id,
        kind: v
            .as_ref()
            .and_then(|v| v.get("message"))
            .map(|_| Kind::Message),
        key,
        object: v.as_ref().is_some_and(|v| v.is_object()),
    }
}
