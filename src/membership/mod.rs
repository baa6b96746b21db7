//! Each upstream's live server list: the servers its file entry lists, then those
//! discovery sources report (`discover`), then those added through the admin API,
//! each address once (the first wins), less those the admin API removed. The
//! discovered and admin entries live here, outside any configuration, so a file
//! reload keeps them: it rebuilds each upstream from its new file entry and the
//! same entries here. A change to one upstream's list rebuilds that upstream only
//! (see `state`).

pub mod discover;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::{ServerConfig, UpstreamConfig};
use crate::upstream::{Member, Source};

/// Why a change to a server list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemberError {
    #[error("no upstream named {0:?}")]
    NoUpstream(String),
    #[error("{0} is already a server of this upstream")]
    Exists(SocketAddr),
    #[error("{0} is not a server of this upstream")]
    NoServer(SocketAddr),
}

/// The entries of every upstream that are not in the file, by upstream name.
#[derive(Debug, Default)]
pub struct Membership {
    upstreams: Mutex<HashMap<String, Entries>>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Added through the admin API, in the order they were added.
    added: Vec<ServerConfig>,
    /// Removed through the admin API, among those the file or discovery list.
    removed: BTreeSet<SocketAddr>,
    /// The last list each discovery source reported.
    discovered: BTreeMap<Arc<str>, Vec<ServerConfig>>,
}

impl Entries {
    /// The file's and the discovery sources' servers (what an admin removal acts
    /// on), each address once.
    fn listed<'a>(&'a self, config: &'a UpstreamConfig) -> impl Iterator<Item = Member> + 'a {
        let file = Member::from_file(config);
        let discovered = self.discovered.iter().flat_map(|(source, list)| {
            list.iter().map(move |s| Member {
                server: s.clone(),
                source: Source::Discovered(Arc::clone(source)),
            })
        });
        file.chain(discovered)
    }

    /// Forgets the admin's removals of servers that neither the file nor a
    /// discovery source lists any more: a removal lasts as long as the listing it
    /// overrides, so a server listed again later joins again.
    fn lapse_removals(&mut self, config: &UpstreamConfig) {
        let listed: BTreeSet<SocketAddr> = self.listed(config).map(|m| m.server.addr).collect();
        self.removed.retain(|a| listed.contains(a));
    }
}

impl Membership {
    /// The live server list of the upstream `config` describes.
    pub fn members(&self, config: &UpstreamConfig) -> Vec<Member> {
        let map = self.lock();
        let Some(e) = map.get(&config.name) else {
            return Member::from_file(config).collect();
        };
        let admin = e.added.iter().map(|s| Member {
            server: s.clone(),
            source: Source::Admin,
        });
        let mut seen = BTreeSet::new();
        e.listed(config)
            .filter(|m| !e.removed.contains(&m.server.addr))
            .chain(admin)
            .filter(|m| seen.insert(m.server.addr))
            .collect()
    }

    /// Adds `server` to upstream `config`'s list. A server the file or discovery
    /// lists and the API removed comes back, with the settings they give it.
    pub fn add(&self, config: &UpstreamConfig, server: ServerConfig) -> Result<(), MemberError> {
        let addr = server.addr;
        if self.members(config).iter().any(|m| m.server.addr == addr) {
            return Err(MemberError::Exists(addr));
        }
        let mut map = self.lock();
        let e = map.entry(config.name.clone()).or_default();
        if !e.removed.remove(&addr) {
            e.added.push(server);
        }
        Ok(())
    }

    /// Takes the server at `addr` out of upstream `config`'s list; one the file or
    /// discovery lists stays out for as long as they list it.
    pub fn remove(&self, config: &UpstreamConfig, addr: SocketAddr) -> Result<(), MemberError> {
        if !self.members(config).iter().any(|m| m.server.addr == addr) {
            return Err(MemberError::NoServer(addr));
        }
        let mut map = self.lock();
        let e = map.entry(config.name.clone()).or_default();
        e.added.retain(|s| s.addr != addr);
        if e.listed(config).any(|m| m.server.addr == addr) {
            e.removed.insert(addr);
        }
        Ok(())
    }

    /// Records the complete list `source` reports for `upstream`; whether it
    /// differs from the last one.
    pub fn discovered(
        &self,
        upstream: &str,
        source: &Arc<str>,
        servers: Vec<ServerConfig>,
    ) -> bool {
        let mut map = self.lock();
        let e = map.entry(upstream.to_owned()).or_default();
        let same = e.discovered.get(source).is_some_and(|old| {
            old.len() == servers.len()
                && old
                    .iter()
                    .zip(&servers)
                    .all(|(a, b)| a.addr == b.addr && a.weight == b.weight && a.backup == b.backup)
        });
        if !same {
            e.discovered.insert(Arc::clone(source), servers);
        }
        !same
    }

    /// After a discovery source reported a new list for upstream `config`: the
    /// admin's removals of servers nobody lists any more lapse, as a reload lets
    /// those of servers the file dropped lapse.
    pub fn relisted(&self, config: &UpstreamConfig) {
        if let Some(e) = self.lock().get_mut(&config.name) {
            e.lapse_removals(config);
        }
    }

    /// After a reload to `upstreams`: forgets the admin's changes to upstreams the
    /// file no longer has (discovered lists stay for when the upstream returns),
    /// admin removals of servers nobody lists any more, and admin additions the
    /// file now lists itself (the file's entry takes over).
    pub fn reloaded(&self, upstreams: &[UpstreamConfig]) {
        let mut map = self.lock();
        map.retain(|name, e| {
            let Some(config) = upstreams.iter().find(|u| u.name == *name) else {
                e.added.clear();
                e.removed.clear();
                return !e.discovered.is_empty();
            };
            e.lapse_removals(config);
            e.added
                .retain(|s| !config.servers.iter().any(|f| f.addr == s.addr));
            true
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entries>> {
        self.upstreams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn config(servers: &[&str]) -> UpstreamConfig {
        let list: Vec<String> = servers
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        crate::config::Config::parse(
            Path::new("t.toml"),
            &format!(
                "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n\
                 [upstream.u]\nservers = [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap()
        .upstreams
        .remove(0)
    }

    fn server(addr: &str, weight: u32) -> ServerConfig {
        ServerConfig {
            name: addr.to_owned(),
            addr: addr.parse().unwrap(),
            weight,
            down: false,
            backup: false,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            slow_start: Duration::ZERO,
            max_conns: 0,
        }
    }

    fn addrs(m: &[Member]) -> Vec<String> {
        m.iter()
            .map(|m| format!("{} {}", m.server.addr, m.source.as_str()))
            .collect()
    }

    #[test]
    fn file_then_discovered_then_admin_less_removed() {
        let ms = Membership::default();
        let c = config(&["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(
            addrs(&ms.members(&c)),
            ["127.0.0.1:1 file", "127.0.0.1:2 file"]
        );
        let dns: Arc<str> = Arc::from("dns");
        assert!(ms.discovered(
            "u",
            &dns,
            vec![server("127.0.0.1:2", 1), server("127.0.0.1:3", 1)]
        ));
        assert!(!ms.discovered(
            "u",
            &dns,
            vec![server("127.0.0.1:2", 1), server("127.0.0.1:3", 1)]
        ));
        ms.add(&c, server("127.0.0.1:4", 2)).unwrap();
        assert_eq!(
            ms.add(&c, server("127.0.0.1:3", 1)),
            Err(MemberError::Exists("127.0.0.1:3".parse().unwrap()))
        );
        ms.remove(&c, "127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(
            addrs(&ms.members(&c)),
            ["127.0.0.1:2 file", "127.0.0.1:3 dns", "127.0.0.1:4 admin"]
        );
        // A removed file server comes back with the file's settings.
        ms.add(&c, server("127.0.0.1:1", 9)).unwrap();
        let m = ms.members(&c);
        assert_eq!((m[0].server.addr.port(), m[0].server.weight), (1, 1));
        ms.remove(&c, "127.0.0.1:4".parse().unwrap()).unwrap();
        assert_eq!(
            ms.remove(&c, "127.0.0.1:4".parse().unwrap()),
            Err(MemberError::NoServer("127.0.0.1:4".parse().unwrap()))
        );
        assert_eq!(ms.members(&c).len(), 3);
    }

    #[test]
    fn a_removal_lasts_while_a_source_lists_the_server() {
        let ms = Membership::default();
        let c = config(&["127.0.0.1:1"]);
        let dns: Arc<str> = Arc::from("dns");
        ms.discovered("u", &dns, vec![server("127.0.0.1:2", 1)]);
        ms.remove(&c, "127.0.0.1:2".parse().unwrap()).unwrap();
        ms.discovered(
            "u",
            &dns,
            vec![server("127.0.0.1:2", 1), server("127.0.0.1:3", 1)],
        );
        ms.relisted(&c);
        assert_eq!(
            addrs(&ms.members(&c)),
            ["127.0.0.1:1 file", "127.0.0.1:3 dns"]
        );
        // No longer listed: the removal lapses, and the server joins when listed
        // again.
        ms.discovered("u", &dns, vec![server("127.0.0.1:3", 1)]);
        ms.relisted(&c);
        ms.discovered(
            "u",
            &dns,
            vec![server("127.0.0.1:2", 1), server("127.0.0.1:3", 1)],
        );
        ms.relisted(&c);
        assert_eq!(
            addrs(&ms.members(&c)),
            ["127.0.0.1:1 file", "127.0.0.1:2 dns", "127.0.0.1:3 dns"]
        );
    }

    #[test]
    fn a_reload_keeps_the_entries_and_lets_the_file_take_over() {
        let ms = Membership::default();
        let c = config(&["127.0.0.1:1", "127.0.0.1:2"]);
        ms.add(&c, server("127.0.0.1:3", 1)).unwrap();
        ms.remove(&c, "127.0.0.1:2".parse().unwrap()).unwrap();
        // The same file: nothing changes.
        ms.reloaded(std::slice::from_ref(&c));
        assert_eq!(
            addrs(&ms.members(&c)),
            ["127.0.0.1:1 file", "127.0.0.1:3 admin"]
        );
        // The file now lists :3 and no longer :2.
        let c2 = config(&["127.0.0.1:1", "127.0.0.1:3"]);
        ms.reloaded(std::slice::from_ref(&c2));
        assert_eq!(
            addrs(&ms.members(&c2)),
            ["127.0.0.1:1 file", "127.0.0.1:3 file"]
        );
        // :2 returns to the file: the old removal no longer applies.
        let c3 = config(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        ms.reloaded(std::slice::from_ref(&c3));
        assert_eq!(ms.members(&c3).len(), 3);
        // An upstream gone from the file is forgotten.
        ms.reloaded(&[]);
        assert_eq!(ms.members(&c).len(), 2);
    }
}
