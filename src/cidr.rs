//! Sets of IP addresses given as CIDR blocks (`allow`, `deny`, `trusted_proxies`),
//! matched in a few nanoseconds whatever their number.
//!
//! Every address is a point on one 128-bit line: IPv6 addresses as they are,
//! IPv4 addresses at their IPv4-mapped place (`::ffff:a.b.c.d`). So an IPv4 rule
//! matches a client that a dual-stack socket reports as `::ffff:10.1.2.3`, and
//! one search serves both families. A set is kept as sorted, disjoint, non-adjacent
//! ranges (blocks that overlap or touch are merged when it is built): a lookup is a
//! binary search over the range starts, about ten comparisons at 1 000 rules, with
//! nothing allocated and no lock.

use std::net::IpAddr;

use ipnet::IpNet;

/// An address's place on the line both families share.
pub fn point(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The first and last point of a block.
fn range(net: &IpNet) -> (u128, u128) {
    let (first, last) = (net.network(), net.broadcast());
    (point(first), point(last))
}

/// A set of addresses: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrSet {
    /// The first point of each range, ascending.
    starts: Box<[u128]>,
    /// The last point of each range, at the same index.
    ends: Box<[u128]>,
}

impl CidrSet {
    /// The addresses of `nets`.
    pub fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> CidrSet {
        CidrSet::from_ranges(nets.into_iter().map(range).collect())
    }

    /// Sorts and merges `ranges` (each `start <= end`).
    fn from_ranges(mut ranges: Vec<(u128, u128)>) -> CidrSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                // Overlapping or adjacent (`start` right after `last`'s end).
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let (starts, ends): (Vec<u128>, Vec<u128>) = merged.into_iter().unzip();
        CidrSet {
            starts: starts.into(),
            ends: ends.into(),
        }
    }

    /// Every address not in this set.
    pub fn complement(&self) -> CidrSet {
        let mut out = Vec::with_capacity(self.starts.len() + 1);
        let mut next = 0u128; // the first point not yet covered
        let mut done = false; // the line's last point is covered
        for (&start, &end) in self.starts.iter().zip(self.ends.iter()) {
            if start > next {
                out.push((next, start - 1));
            }
            match end.checked_add(1) {
                Some(n) => next = n,
                None => done = true,
            }
        }
        if !done {
            out.push((next, u128::MAX));
        }
        CidrSet::from_ranges(out)
    }

    /// The addresses in either set.
    pub fn union(&self, other: &CidrSet) -> CidrSet {
        let pairs = |s: &CidrSet| {
            s.starts
                .iter()
                .copied()
                .zip(s.ends.iter().copied())
                .collect::<Vec<_>>()
        };
        let mut all = pairs(self);
        all.extend(pairs(other));
        CidrSet::from_ranges(all)
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The number of disjoint ranges (what a lookup searches).
    pub fn ranges(&self) -> usize {
        self.starts.len()
    }

    /// Whether `ip` is in the set.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let p = point(ip);
        // The ranges starting at or before `p`; the last of them is the only one
        // that can hold it.
        let i = self.starts.partition_point(|&s| s <= p);
        i > 0 && p <= self.ends[i - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> CidrSet {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        CidrSet::new(&nets)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_blocks_match_their_addresses_only() {
        let s = set(&["10.0.0.0/8", "192.168.1.0/24", "203.0.113.7/32"]);
        for yes in ["10.0.0.0", "10.255.255.255", "192.168.1.77", "203.0.113.7"] {
            assert!(s.contains(ip(yes)), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "11.0.0.0",
            "192.168.2.1",
            "203.0.113.8",
            "::1",
        ] {
            assert!(!s.contains(ip(no)), "{no}");
        }
    }

    #[test]
    fn ipv6_blocks_and_ipv4_mapped_addresses() {
        let s = set(&["2001:db8::/32", "10.0.0.0/8"]);
        assert!(s.contains(ip("2001:db8:1::5")));
        assert!(!s.contains(ip("2001:db9::")));
        // A dual-stack socket's view of an IPv4 client matches the IPv4 rule.
        assert!(s.contains(ip("::ffff:10.1.2.3")));
        assert!(!s.contains(ip("::ffff:11.1.2.3")));
        // IPv4-compatible (deprecated) addresses are ordinary IPv6 ones.
        assert!(!s.contains(ip("::10.1.2.3")));
    }

    #[test]
    fn overlapping_and_adjacent_blocks_merge() {
        let s = set(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "10.0.3.0/24"]);
        assert_eq!(s.ranges(), 2);
        assert!(s.contains(ip("10.0.1.255")));
        assert!(!s.contains(ip("10.0.2.0")));
        assert!(s.contains(ip("10.0.3.0")));
    }

    #[test]
    fn complement_and_union() {
        let s = set(&["10.0.0.0/8"]);
        let c = s.complement();
        assert!(!c.contains(ip("10.9.9.9")));
        assert!(c.contains(ip("11.0.0.0")));
        assert!(c.contains(ip("::")));
        assert!(c.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert_eq!(c.complement(), s);
        let everything = set(&["::/0"]);
        assert!(everything.complement().is_empty());
        assert_eq!(CidrSet::default().complement(), everything);
        let u = s.union(&set(&["::1/128"]));
        assert!(u.contains(ip("::1")) && u.contains(ip("10.1.1.1")));
        assert!(!u.contains(ip("::2")));
    }

    proptest::proptest! {
        /// The binary search agrees with checking every block.
        #[test]
        fn lookup_agrees_with_a_linear_scan(
            blocks in proptest::collection::vec((proptest::num::u32::ANY, 8u8..=32), 0..40),
            probes in proptest::collection::vec(proptest::num::u32::ANY, 50),
        ) {
            let v4: Vec<ipnet::Ipv4Net> = blocks
                .iter()
                .map(|&(a, len)| ipnet::Ipv4Net::new(a.into(), len).unwrap().trunc())
                .collect();
            let nets: Vec<IpNet> = v4.iter().copied().map(IpNet::V4).collect();
            let s = CidrSet::new(&nets);
            // Probes at and around the blocks' edges as well as anywhere.
            let edges: Vec<u32> = v4
                .iter()
                .flat_map(|n| {
                    let (a, b) = (u32::from(n.network()), u32::from(n.broadcast()));
                    [a.wrapping_sub(1), a, b, b.wrapping_add(1)]
                })
                .collect();
            for p in probes.into_iter().chain(edges) {
                let a = IpAddr::V4(p.into());
                let linear = nets.iter().any(|n| n.contains(&a));
                proptest::prop_assert_eq!(s.contains(a), linear, "{}", a);
                proptest::prop_assert_eq!(s.complement().contains(a), !linear, "{}", a);
            }
        }
    }
}
