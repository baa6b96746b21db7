//! Who the client is and whether it may come in: `allow` and `deny` (on a route
//! and on a listener), and a listener's `proxy_protocol`, `trusted_proxies` and
//! `max_connections`. Address blocks are CIDR (`10.0.0.0/8`, `2001:db8::/32`) or
//! bare addresses (a /32 or /128); each is checked at its key path
//! (`route[2].deny[0]`), so `check` names the entry that is wrong.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::tree::bare;
use super::validate::Checker;
use crate::cidr::CidrSet;

/// One address block as the file gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl fmt::Display for Cidr {
    /// A single address without its length (`192.0.2.7`), as the file may write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bare(self, s)
    }
}

/// The addresses of `blocks`, ready for a lookup.
pub fn cidr_set(blocks: &[Cidr]) -> CidrSet {
    CidrSet::new(blocks.iter().map(|c| &c.0))
}

/// `allow` and `deny`: nginx's rules, except that their order does not matter —
/// `deny` always wins (see `refused`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessRules {
    /// `Some`: only these addresses may come in (less those denied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Cidr>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Cidr>,
}

impl AccessRules {
    /// No rule: everyone comes in.
    pub fn is_empty(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    /// Every address these rules refuse (those in `deny`, and with `allow` those in
    /// none of it), as one set: a request costs one lookup.
    pub fn refused(&self) -> CidrSet {
        let denied = cidr_set(&self.deny);
        match &self.allow {
            None => denied,
            Some(allow) => denied.union(&cidr_set(allow).complement()),
        }
    }

    /// Writes `allow` and `deny` into a hand-written table (a listener's).
    pub(super) fn write<S: SerializeStruct>(&self, m: &mut S) -> Result<(), S::Error> {
        if let Some(allow) = &self.allow {
            m.serialize_field("allow", allow)?;
        }
        if !self.deny.is_empty() {
            m.serialize_field("deny", &self.deny)?;
        }
        Ok(())
    }
}

/// Checks `allow` and `deny` of the table at `base` (`route[1]`, `listener[0]`).
pub(super) fn check_rules(
    c: &mut Checker,
    base: &str,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
) -> AccessRules {
    let allow = allow.map(|list| {
        if list.is_empty() {
            c.err(
                format!("{base}.allow"),
                "an empty list would refuse every address; to close the table to everyone write deny = [\"0.0.0.0/0\", \"::/0\"], or leave allow out to let everyone in",
            );
        }
        blocks(c, &format!("{base}.allow"), list)
    });
    let deny = blocks(c, &format!("{base}.deny"), deny.unwrap_or_default());
    AccessRules { allow, deny }
}

/// The blocks of the list at `path`, each checked at `path[i]`.
pub(super) fn blocks(c: &mut Checker, path: &str, list: Vec<String>) -> Vec<Cidr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| match parse_block(s) {
            Ok(b) => Some(b),
            Err(m) => {
                c.err(format!("{path}[{i}]"), m);
                None
            }
        })
        .collect()
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address. A block with bits set past its
/// length (`10.1.2.3/8`) is refused rather than widened to `10.0.0.0/8` as nginx
/// does with a warning: a mistyped length would open far more than meant.
fn parse_block(s: &str) -> Result<Cidr, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(Cidr(IpNet::from(ip)));
    }
    let net: IpNet = t.parse().map_err(|_| {
        format!(
            "invalid address block {s:?} (expected a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\", or one address)"
        )
    })?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has bits set past its /{} prefix: the block is {}; write that, or the address alone for just it",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(Cidr(net))
}

/// A listener's keys about its clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerClients {
    /// Each connection starts with a PROXY protocol (v1 or v2) header, whose
    /// source address is the client's.
    pub proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` is believed (nginx's `set_real_ip_from`).
    pub trusted_proxies: Vec<Cidr>,
    /// Client connections open at once (HAProxy's frontend `maxconn`); `None`:
    /// no limit but the process's.
    pub max_connections: Option<u32>,
    pub access: AccessRules,
}

/// The raw keys `ListenerClients` is checked from.
pub(super) struct RawListenerClients {
    pub proxy_protocol: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_connections: Option<u32>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// Whether a listener expects PROXY protocol headers when the file does not say:
/// no, since a client that sends none would be refused.
pub const DEFAULT_PROXY_PROTOCOL: bool = false;

pub(super) fn check_listener(
    c: &mut Checker,
    base: &str,
    raw: RawListenerClients,
) -> ListenerClients {
    if raw.max_connections == Some(0) {
        c.err(
            format!("{base}.max_connections"),
            "must be at least 1 (leave it out for no limit)",
        );
    }
    ListenerClients {
        proxy_protocol: raw.proxy_protocol.unwrap_or(DEFAULT_PROXY_PROTOCOL),
        trusted_proxies: blocks(
            c,
            &format!("{base}.trusted_proxies"),
            raw.trusted_proxies.unwrap_or_default(),
        ),
        max_connections: raw.max_connections.filter(|&n| n > 0),
        access: check_rules(c, base, raw.allow, raw.deny),
    }
}

impl ListenerClients {
    /// Writes the keys into the listener's table.
    pub(super) fn write<S: SerializeStruct>(&self, m: &mut S) -> Result<(), S::Error> {
        m.serialize_field("proxy_protocol", &self.proxy_protocol)?;
        if !self.trusted_proxies.is_empty() {
            m.serialize_field("trusted_proxies", &self.trusted_proxies)?;
        }
        if let Some(n) = self.max_connections {
            m.serialize_field("max_connections", &n)?;
        }
        self.access.write(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_bare_addresses_as_single_ones() {
        let b = |s: &str| parse_block(s).map(|c| c.to_string());
        assert_eq!(b("10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(b("192.0.2.7").unwrap(), "192.0.2.7");
        assert_eq!(parse_block("192.0.2.7").unwrap().0.prefix_len(), 32);
        assert_eq!(b("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(parse_block("::1").unwrap().0.prefix_len(), 128);
        assert_eq!(b("192.0.2.7/32").unwrap(), "192.0.2.7");
    }

    #[test]
    fn bad_blocks_say_why() {
        let e = parse_block("10.1.2.3/8").unwrap_err();
        assert!(e.contains("10.0.0.0/8"), "{e}");
        for bad in [
            "10.0.0.300/8",
            "10.0.0.0/33",
            "2001:db8::/129",
            "x",
            "",
            "10.0.0.0/",
        ] {
            let e = parse_block(bad).unwrap_err();
            assert!(e.contains("invalid address block"), "{bad}: {e}");
        }
    }

    const BASE: &str = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\nLISTENER\n\n\
        [[route]]\nupstream = \"api\"\nROUTE\n\n\
        [upstream.api]\nservers = [{ addr = \"127.0.0.1:9001\" }]\n";

    fn text(listener: &str, route: &str) -> String {
        BASE.replace("LISTENER", listener).replace("ROUTE", route)
    }

    fn load(
        listener: &str,
        route: &str,
    ) -> Result<super::super::Config, super::super::ConfigError> {
        super::super::Config::parse(std::path::Path::new("t.toml"), &text(listener, route))
    }

    #[test]
    fn each_bad_entry_is_reported_at_its_key_with_the_file() {
        let e = load(
            "allow = [\"10.0.0.0/8\", \"10.0.0.300\"]\ntrusted_proxies = [\"fd00::1/8\"]\nmax_connections = 0",
            "deny = [\"nonsense\"]\nallow = []",
        )
        .unwrap_err();
        let shown = e.to_string();
        for (path, what) in [
            (
                "t.toml: listener[0].allow[1]: ",
                "invalid address block \"10.0.0.300\"",
            ),
            (
                "t.toml: listener[0].trusted_proxies[0]: ",
                "the block is fd00::/8",
            ),
            ("t.toml: listener[0].max_connections: ", "at least 1"),
            (
                "t.toml: route[0].deny[0]: ",
                "invalid address block \"nonsense\"",
            ),
            ("t.toml: route[0].allow: ", "empty list"),
        ] {
            let line = shown.lines().find(|l| l.starts_with(path));
            assert!(
                line.is_some_and(|l| l.contains(what)),
                "{path}{what} not in\n{shown}"
            );
        }
        assert_eq!(e.problems.len(), 5, "{shown}");
        let e = load("proxy_protocol = \"yes\"", "").unwrap_err();
        assert_eq!(e.problems[0].path, "listener[0].proxy_protocol", "{e}");
    }

    #[test]
    fn defaults_and_the_reload_diff() {
        let c = load("", "").unwrap();
        assert_eq!(c.listeners[0].clients, ListenerClients::default());
        assert!(c.routes[0].access.is_empty());
        let d = load(
            "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]\nmax_connections = 100",
            "deny = [\"192.0.2.7\"]",
        )
        .unwrap();
        let changes: Vec<String> = super::super::diff(&c, &d)
            .iter()
            .map(ToString::to_string)
            .collect();
        let all = changes.join("\n");
        for want in [
            "proxy_protocol false → true",
            "max_connections no limit → 100",
            "trusted_proxies none → [10.0.0.0/8]",
            "deny none → [192.0.2.7]",
        ] {
            assert!(all.contains(want), "{want} not in\n{all}");
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules = AccessRules {
            allow: Some(vec![parse_block("10.0.0.0/8").unwrap()]),
            deny: vec![parse_block("10.1.2.0/24").unwrap()],
        };
        let refused = rules.refused();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!refused.contains(ip("10.9.9.9")));
        assert!(refused.contains(ip("10.1.2.3")));
        assert!(refused.contains(ip("192.0.2.1")));
        assert!(refused.contains(ip("2001:db8::1")));
        assert!(!refused.contains(ip("::ffff:10.9.9.9")));
    }
}
