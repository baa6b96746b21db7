//! A Telegram webhook's request headers on the way to the bots (reference T2,
//! T3): `X-Forwarded-For` is the client's address alone, replacing whatever the
//! request carried — bots that trust its left-most entry (aiogram's IP filter)
//! must not be spoofable through the proxy — and the secret header is passed on,
//! stripped, or replaced by the one token the bots know (`forward_secret`).
//! It runs after `set_headers`' place in the list, so nothing overrides it.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Filter;
use crate::config::{ForwardSecret, TelegramConfig};
use crate::pipeline::guard::SECRET_HEADER;
use crate::pipeline::vars::Vars;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[derive(Debug)]
pub struct TelegramHeaders {
    /// `None`: pass the received header on; `Some(None)`: strip it;
    /// `Some(Some(v))`: send `v`.
    secret: Option<Option<HeaderValue>>,
}

impl TelegramHeaders {
    pub fn new(t: &TelegramConfig) -> TelegramHeaders {
        TelegramHeaders {
            secret: match &t.forward_secret {
                ForwardSecret::Received => None,
                ForwardSecret::Strip => Some(None),
                ForwardSecret::Value(v) => Some(Some(
                    HeaderValue::from_str(v).expect("validated: a token is a header value"),
                )),
            },
        }
    }
}

impl Filter for TelegramHeaders {
    fn upstream_headers(&self) -> usize {
        2
    }

    fn upstream_request(&self, vars: &Vars<'_>, headers: &mut HeaderMap) {
        headers.insert(X_FORWARDED_FOR, vars.client.ip.clone());
        // Telegram offers gzip, but the answer it gets is the bot's body with its
        // `Content-Type` alone (what the dedup store keeps and replays): the bots
        // must answer uncompressed.
        headers.remove(http::header::ACCEPT_ENCODING);
        match &self.secret {
            None => {}
            Some(None) => {
                headers.remove(SECRET_HEADER);
            }
            Some(Some(v)) => {
                headers.insert(HeaderName::from_static(SECRET_HEADER), v.clone());
            }
        }
    }
}
