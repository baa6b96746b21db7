//! The client address of a request that came through trusted proxies: a listener's
//! `trusted_proxies`, nginx's `set_real_ip_from` + `real_ip_header
//! X-Forwarded-For` + `real_ip_recursive on`.
//!
//! Only when the connection's client (after the PROXY protocol) is trusted is
//! `X-Forwarded-For` read at all: anyone else's header is data, and their address
//! stays theirs. The header is walked from the right (the entry the trusted peer
//! appended) past every trusted address; the first address that is not trusted is
//! the client. When every entry is trusted, the left-most one is.
//!
//! An entry that is not an address (`unknown`, an obfuscated RFC 7239 name,
//! garbage) stops the walk, as it does in nginx: the client is then the last
//! address read before it, a trusted hop, or the peer itself when the right-most
//! entry is already unreadable. Nothing written left of an unreadable entry can be
//! vouched for; taking a trusted proxy as the client is the safe failure (a limit
//! keyed on it is shared, never dodged). The walk also stops after
//! `MAX_FORWARDED_HOPS` entries, the same way.

use std::net::{IpAddr, SocketAddr};

use http::header::HeaderMap;

use super::client::ClientInfo;
use crate::cidr::CidrSet;
use crate::config::{cidr_set, Cidr};

/// Entries of `X-Forwarded-For` read at most: real chains have a handful of hops;
/// this bounds what a crafted header of trusted addresses can cost.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// A listener's trusted proxies.
#[derive(Debug)]
pub struct RealIp {
    trusted: CidrSet,
}

impl RealIp {
    /// `None` when no proxy is trusted (the header is never read).
    pub fn new(trusted: &[Cidr]) -> Option<RealIp> {
        let trusted = cidr_set(trusted);
        (!trusted.is_empty()).then_some(RealIp { trusted })
    }

    /// The request's client when `conn` is a trusted proxy whose
    /// `X-Forwarded-For` names one; `None`: the connection's client is the
    /// request's.
    pub fn client(&self, conn: &ClientInfo, headers: &HeaderMap) -> Option<ClientInfo> {
        if !self.trusted.contains(conn.remote.ip()) {
            return None;
        }
        let real = self.walk(headers)?;
        Some(ClientInfo::forwarded(conn, real))
    }

    /// The client's address per the rule above; `None` when no entry is readable.
    fn walk(&self, headers: &HeaderMap) -> Option<SocketAddr> {
        let mut last = None;
        let mut hops = 0;
        // Several header lines are one list, in order (RFC 9110 §5.3).
        for line in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(line) = line.to_str() else {
                return last;
            };
            for entry in line.rsplit(',').map(str::trim) {
                // An empty list element (`a,,b`, a trailing comma) is no hop.
                if entry.is_empty() {
                    continue;
                }
                hops += 1;
                if hops > MAX_FORWARDED_HOPS {
                    return last;
                }
                let Some(addr) = parse_entry(entry) else {
                    return last;
                };
                last = Some(addr);
                if !self.trusted.contains(addr.ip()) {
                    return last;
                }
            }
        }
        last
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`1.2.3.4`,
/// `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`); the port
/// is 0 when none is given.
fn parse_entry(entry: &str) -> Option<SocketAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 0));
    }
    if let Ok(a) = entry.parse::<SocketAddr>() {
        return Some(a);
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| SocketAddr::new(IpAddr::V6(ip), 0))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn real_ip(trusted: &[&str]) -> RealIp {
        let blocks: Vec<Cidr> = trusted.iter().map(|t| Cidr(t.parse().unwrap())).collect();
        RealIp::new(&blocks).unwrap()
    }

    /// The request's client address given the peer and its `X-Forwarded-For` lines.
    fn client(r: &RealIp, peer: &str, xff: &[&str]) -> String {
        let conn = ClientInfo::new(SocketAddr::new(peer.parse().unwrap(), 4000), "http");
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        match r.client(&conn, &h) {
            Some(c) => {
                assert_eq!(c.via.as_ref(), Some(&conn.ip), "the hop is the peer");
                c.remote.ip().to_string()
            }
            None => conn.remote.ip().to_string(),
        }
    }

    #[test]
    fn an_untrusted_peer_keeps_its_address_whatever_it_sends() {
        let r = real_ip(&["10.0.0.0/8"]);
        assert_eq!(client(&r, "192.0.2.1", &["203.0.113.5"]), "192.0.2.1");
        assert_eq!(client(&r, "192.0.2.1", &["10.0.0.1"]), "192.0.2.1");
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let r = real_ip(&["10.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(client(&r, "10.0.0.2", &["203.0.113.5"]), "203.0.113.5");
        // A spoofed entry left of the real client is ignored.
        assert_eq!(
            client(&r, "10.0.0.2", &["1.1.1.1, 203.0.113.5, 10.0.0.9"]),
            "203.0.113.5"
        );
        // Several lines are one list.
        assert_eq!(
            client(
                &r,
                "10.0.0.2",
                &["1.1.1.1", "203.0.113.5, 10.0.0.9", "10.0.0.8"]
            ),
            "203.0.113.5"
        );
        assert_eq!(
            client(&r, "10.0.0.2", &["2001:db9::7, 2001:db8::1"]),
            "2001:db9::7"
        );
    }

    #[test]
    fn when_every_entry_is_trusted_the_left_most_is_the_client() {
        let r = real_ip(&["10.0.0.0/8"]);
        assert_eq!(client(&r, "10.0.0.2", &["10.0.0.7, 10.0.0.9"]), "10.0.0.7");
        // No header, or nothing in it: the peer.
        assert_eq!(client(&r, "10.0.0.2", &[]), "10.0.0.2");
        assert_eq!(client(&r, "10.0.0.2", &[" , "]), "10.0.0.2");
    }

    #[test]
    fn an_unreadable_entry_stops_the_walk_at_the_last_trusted_hop() {
        let r = real_ip(&["10.0.0.0/8"]);
        assert_eq!(
            client(&r, "10.0.0.2", &["203.0.113.5, unknown, 10.0.0.9"]),
            "10.0.0.9"
        );
        assert_eq!(
            client(&r, "10.0.0.2", &["203.0.113.5, garbage"]),
            "10.0.0.2"
        );
    }

    #[test]
    fn entries_with_ports_and_brackets() {
        let r = real_ip(&["10.0.0.0/8"]);
        assert_eq!(client(&r, "10.0.0.2", &["203.0.113.5:4711"]), "203.0.113.5");
        assert_eq!(
            client(&r, "10.0.0.2", &["[2001:db8::5]:443"]),
            "2001:db8::5"
        );
        assert_eq!(client(&r, "10.0.0.2", &["[2001:db8::6]"]), "2001:db8::6");
        assert_eq!(parse_entry("203.0.113.5:4711").unwrap().port(), 4711);
        assert_eq!(parse_entry("203.0.113.5").unwrap().port(), 0);
    }

    #[test]
    fn the_walk_is_bounded() {
        let r = real_ip(&["10.0.0.0/8"]);
        let mut entries = vec!["203.0.113.5".to_owned()];
        entries.extend((0..MAX_FORWARDED_HOPS).map(|i| format!("10.0.0.{}", i + 1)));
        let xff = entries.join(", ");
        // The client is past the bound: the walk stops at the last trusted hop read.
        assert_eq!(client(&r, "10.0.0.200", &[&xff]), "10.0.0.1");
        entries.pop();
        assert_eq!(
            client(&r, "10.0.0.200", &[&entries.join(", ")]),
            "203.0.113.5"
        );
    }

    #[test]
    fn an_ipv4_mapped_peer_is_trusted_by_an_ipv4_block() {
        let r = real_ip(&["10.0.0.0/8"]);
        assert_eq!(
            client(&r, "::ffff:10.0.0.2", &["203.0.113.5"]),
            "203.0.113.5"
        );
    }
}
