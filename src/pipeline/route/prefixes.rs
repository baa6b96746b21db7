//! Longest-prefix match over a sorted list: a binary search and a short walk up
//! the nested prefixes, so the cost grows with log n and the nesting depth of the
//! configuration's prefixes (a handful), not with how many there are.
//!
//! Why it is right: let `q` be the longest prefix of the path in the set and `e`
//! the greatest entry not above the path. Every string between `q` and the path in
//! byte order starts with `q`, so `q` is a prefix of `e`, hence on the chain of
//! `e`'s parents (each entry's parent is the longest other entry that is a prefix of
//! it). Walking that chain down from `e`, the first entry that is a prefix of the
//! path is `q`. Prefixes are bytes, not path segments, as they always were: `/api`
//! takes `/apix`.

use std::collections::BTreeMap;

#[derive(Debug)]
pub(super) struct Prefixes<T> {
    /// Sorted by prefix, byte order.
    entries: Vec<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    prefix: String,
    /// The index of the longest other entry that is a prefix of this one.
    parent: Option<usize>,
    value: T,
}

impl<T> Default for Prefixes<T> {
    fn default() -> Self {
        Prefixes {
            entries: Vec::new(),
        }
    }
}

impl<T> Prefixes<T> {
    pub(super) fn new(sorted: BTreeMap<String, T>) -> Self {
        let mut entries: Vec<Entry<T>> = Vec::with_capacity(sorted.len());
        // The chain of the previous entry's prefixes: an entry's prefixes all sit
        // between it and its nearest prefix in sorted order, so the chain is
        // popped until its top is a prefix of the new entry.
        let mut chain: Vec<usize> = Vec::new();
        for (prefix, value) in sorted {
            while chain
                .last()
                .is_some_and(|&p| !prefix.starts_with(entries[p].prefix.as_str()))
            {
                chain.pop();
            }
            entries.push(Entry {
                parent: chain.last().copied(),
                prefix,
                value,
            });
            chain.push(entries.len() - 1);
        }
        Prefixes { entries }
    }

    /// The value of the longest entry that `path` starts with.
    pub(super) fn longest(&self, path: &str) -> Option<&T> {
        let above = self.entries.partition_point(|e| e.prefix.as_str() <= path);
        let mut at = above.checked_sub(1)?;
        loop {
            let e = &self.entries[at];
            if path.starts_with(e.prefix.as_str()) {
                return Some(&e.value);
            }
            at = e.parent?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str]) -> Prefixes<String> {
        Prefixes::new(
            list.iter()
                .map(|p| (p.to_string(), p.to_string()))
                .collect(),
        )
    }

    #[test]
    fn longest_wins_across_siblings_that_sort_between() {
        let s = set(&["/", "/a", "/a-b", "/a/", "/a/b/c", "/ab"]);
        let get = |p: &str| s.longest(p).map(String::as_str);
        assert_eq!(get("/a/b/x"), Some("/a/"));
        assert_eq!(get("/a/b/c/d"), Some("/a/b/c"));
        assert_eq!(get("/ac"), Some("/a"));
        assert_eq!(get("/a-c"), Some("/a"));
        assert_eq!(get("/b"), Some("/"));
        assert_eq!(get(""), None);
    }
}
