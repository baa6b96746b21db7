//! A Telegram webhook's gate (reference T2, T3), before the body is read and
//! before any bot is contacted: the source address against `allow_from` (403),
//! then `X-Telegram-Bot-Api-Secret-Token` against the route's tokens (401).
//!
//! The secret is compared in constant time: SHA-256 of the received value
//! against the digests of the tokens, with `subtle`, so neither the comparison
//! nor the digest's length leaks how much of a guess was right. Each configured
//! token is compared whichever matches, so the time does not say which of two
//! (a rotation) was sent either. The value is never logged.

use aws_lc_rs::digest;
use subtle::{Choice, ConstantTimeEq};

use crate::cidr::CidrSet;
use crate::config::{cidr_set, TelegramConfig};
use crate::error::{ProxyError, Reason, Refusal};
use crate::pipeline::ctx::Ctx;
use crate::pipeline::filter::Stop;

/// The header Telegram sends the webhook's `secret_token` in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

const BAD_SECRET: Refusal = Refusal {
    reason: Reason::Secret,
    status: http::StatusCode::UNAUTHORIZED,
    retry_after: None,
};

const BAD_SOURCE: Refusal = Refusal {
    reason: Reason::Source,
    status: http::StatusCode::FORBIDDEN,
    retry_after: None,
};

#[derive(Debug)]
pub struct TelegramGate {
    /// SHA-256 of each accepted token; empty: no check.
    secrets: Box<[[u8; 32]]>,
    /// Addresses let in; `None`: any.
    allow: Option<CidrSet>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl TelegramGate {
    pub fn new(t: &TelegramConfig) -> TelegramGate {
        TelegramGate {
            secrets: t
                .secret_token
                .iter()
                .map(|s| sha256(s.as_bytes()))
                .collect(),
            allow: t.allow_nets.as_deref().map(cidr_set),
        }
    }

    /// Whether `given` is one of the tokens.
    pub fn secret_matches(&self, given: &[u8]) -> bool {
        let d = sha256(given);
        let hit = self
            .secrets
            .iter()
            .fold(Choice::from(0), |acc, s| acc | s.ct_eq(&d));
        bool::from(hit)
    }

    pub fn admit<B>(&self, ctx: &Ctx<'_>, req: &http::Request<B>) -> Result<(), Stop> {
        if let Some(allow) = &self.allow {
            if !allow.contains(ctx.client.remote.ip()) {
                return Err(Stop::Error(ProxyError::Refused(BAD_SOURCE)));
            }
        }
        if !self.secrets.is_empty() {
            let given = req
                .headers()
                .get(SECRET_HEADER)
                .map_or(&[][..], |v| v.as_bytes());
            if !self.secret_matches(given) {
                return Err(Stop::Error(ProxyError::Refused(BAD_SECRET)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_token_of_a_rotation_passes_and_nothing_else() {
        let gate = TelegramGate {
            secrets: [sha256(b"s3cr3t-A"), sha256(b"s3cr3t-B")].into(),
            allow: None,
        };
        assert!(gate.secret_matches(b"s3cr3t-A"));
        assert!(gate.secret_matches(b"s3cr3t-B"));
        for wrong in [&b""[..], b"s3cr3t-", b"s3cr3t-AB", b"S3CR3T-A"] {
            assert!(!gate.secret_matches(wrong), "{wrong:?}");
        }
    }
}
