//! Deduplication and coalescing by `update_id` (T9): per route, an update is
//! `InFlight` while a bot has it and `Done` once a bot answered it with a 2xx.
//! (Module body written by the lead; `redis.rs` is the shared store.)

pub mod redis;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// Largest reply body kept for replaying to a re-send (the 64 KiB):
/// webhook replies are `{}` or one Bot API call, a few hundred bytes; a larger
/// 2xx is remembered as delivered and replayed as `200 {}`.
pub const MAX_STORED_BODY: usize = 64 * 1024;

/// A bot's answer as a re-send gets it again: status, `Content-Type` (with its
/// multipart boundary) and body, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// What a shared store knows of one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// Nobody holds it: the caller now does (`claim`), or it is free (`peek`).
    /// `failures`: deliveries that reached a bot and failed so far.
    Free { failures: u32 },
    /// Some replica is delivering it now.
    Busy,
    /// A bot answered it with a 2xx.
    Done(Arc<Reply>),
}
