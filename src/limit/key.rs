//! What a limit counts by, as the request gives it, and its keyed hash.
//!
//! The local tables store a 64-bit hash of the key, never the key: a header or
//! cookie value is hashed where it lies in the request, without a copy, and every
//! entry has the same small size. The hash is SipHash-1-3 (std's `RandomState`)
//! under a key drawn once per process, so a client cannot choose values that
//! collide (to share someone else's budget or pile into one shard). Two distinct
//! keys share a budget only by a chance collision: about n² / 2⁶⁵ for n live
//! keys, one in 36 million at a million keys.

use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;

/// A request's key for one limit, borrowed from the request. A shared store
/// (Redis) builds its own key from it: the local hash is keyed per process, so
/// it would differ from one replica to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// `client_ip`: the client's address (IPv4-mapped IPv6 addresses as IPv4).
    Ip(IpAddr),
    /// `header:NAME`, `cookie:NAME`: the value's bytes as sent.
    Bytes(&'a [u8]),
    /// `route`: one budget for the whole place the limit is declared on.
    Whole,
}

/// The longest text of an IP address (an IPv6 address with an embedded IPv4 one,
/// `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
pub const IP_TEXT_MAX: usize = 45;

impl<'a> KeyRef<'a> {
    /// The key's keyed hash: what a local table stores.
    pub fn hash(self) -> u64 {
        let mut h = hasher().build_hasher();
        match self {
            KeyRef::Ip(ip) => match ip.to_canonical() {
                IpAddr::V4(a) => h.write(&a.octets()),
                IpAddr::V6(a) => h.write(&a.octets()),
            },
            KeyRef::Bytes(b) => h.write(b),
            KeyRef::Whole => {}
        }
        h.finish()
    }

    /// The key as a shared store names it, the same on every replica: an address
    /// as its text (IPv4-mapped IPv6 as IPv4, what an operator looking at Redis
    /// searches for), a header or cookie value as its bytes, `route` as nothing
    /// (the limit's space alone names its one budget). `buf` holds an address's
    /// text.
    pub fn shared<'b>(self, buf: &'b mut [u8; IP_TEXT_MAX]) -> &'b [u8]
    where
        'a: 'b,
    {
        match self {
            KeyRef::Ip(ip) => {
                let mut w = &mut buf[..];
                // The longest address text fits: this cannot fail.
                let _ = write!(w, "{}", ip.to_canonical());
                let len = IP_TEXT_MAX - w.len();
                &buf[..len]
            }
            KeyRef::Bytes(b) => b,
            KeyRef::Whole => &[],
        }
    }
}

/// The process's hash key, drawn on first use.
fn hasher() -> &'static std::hash::RandomState {
    static KEY: OnceLock<std::hash::RandomState> = OnceLock::new();
    KEY.get_or_init(std::hash::RandomState::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_alike_and_the_hash_is_keyed() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(KeyRef::Ip(a).hash(), KeyRef::Ip(a).hash());
        assert_eq!(KeyRef::Ip(a).hash(), KeyRef::Ip(mapped).hash());
        assert_ne!(
            KeyRef::Ip(a).hash(),
            KeyRef::Ip("192.0.2.2".parse().unwrap()).hash()
        );
        assert_ne!(
            KeyRef::Bytes(b"chat-1").hash(),
            KeyRef::Bytes(b"chat-2").hash()
        );
        // Keyed: not the same SipHash-1-3 under the zero key (what a client
        // could compute).
        let mut plain = std::hash::DefaultHasher::new();
        plain.write(b"chat-1");
        assert_ne!(KeyRef::Bytes(b"chat-1").hash(), plain.finish());
    }

    #[test]
    fn a_shared_key_is_the_request_key_itself() {
        let mut buf = [0; IP_TEXT_MAX];
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(KeyRef::Ip(mapped).shared(&mut buf), b"192.0.2.1");
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:fffe:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(
            KeyRef::Ip(longest).shared(&mut buf),
            b"ffff:ffff:ffff:ffff:ffff:fffe:ffff:ffff"
        );
        assert_eq!(KeyRef::Bytes(b"chat-1").shared(&mut buf), b"chat-1");
        assert_eq!(KeyRef::Whole.shared(&mut buf), b"");
    }
}
