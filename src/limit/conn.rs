//! `limit_conn`'s state: how many requests of each key are in flight, in a table
//! shared by every worker thread (sharded like the rate tables, key hashes as
//! keys). A request takes a `Slot`, which gives its unit back when dropped: the
//! pipeline keeps it in the request's record, which lives until the response
//! body ends (or the client goes). A key with nothing in flight has no entry, so
//! the table holds one 12-byte entry (plus hashbrown's overhead) per key with a
//! request in flight, and needs no sweep and no cap beyond the connections'.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, MutexGuard};

use super::table::{self, Prehashed, SHARDS};

/// One `limit_conn`'s counts.
#[derive(Debug)]
pub struct ConnTable {
    shards: Box<[Mutex<Counts>]>,
}

type Counts = HashMap<u64, u32, BuildHasherDefault<Prehashed>>;

impl Default for ConnTable {
    fn default() -> Self {
        ConnTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ConnTable {
    fn lock(&self, key: u64) -> MutexGuard<'_, Counts> {
        table::lock(&self.shards[table::shard_index(key)])
    }

    /// A slot for a request of `key` if fewer than `max` are in flight.
    pub fn acquire(self: &Arc<Self>, key: u64, max: u32) -> Option<Slot> {
        let mut counts = self.lock(key);
        let n = counts.entry(key).or_insert(0);
        if *n >= max {
            if *n == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            table: Arc::clone(self),
            key,
        })
    }

    /// Requests of `key` in flight.
    pub fn in_flight(&self, key: u64) -> u32 {
        self.lock(key).get(&key).copied().unwrap_or(0)
    }

    /// Keys with a request in flight.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| table::lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One request's unit of a `limit_conn`, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    table: Arc<ConnTable>,
    key: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.table.lock(self.key);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The slots a request holds: one without allocating (the usual case), more in
/// a vector.
#[derive(Debug, Default)]
pub struct Held {
    first: Option<Slot>,
    more: Vec<Slot>,
}

impl Held {
    pub fn push(&mut self, slot: Slot) {
        match self.first {
            None => self.first = Some(slot),
            Some(_) => self.more.push(slot),
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_up_to_max_and_dropping_one_frees_it() {
        let t = Arc::new(ConnTable::default());
        let a = super::super::KeyRef::Bytes(b"a").hash();
        let b = super::super::KeyRef::Bytes(b"b").hash();
        let s1 = t.acquire(a, 2).expect("first");
        let s2 = t.acquire(a, 2).expect("second");
        assert!(t.acquire(a, 2).is_none(), "a third at max 2");
        assert!(t.acquire(b, 2).is_some(), "another key has its own count");
        assert_eq!(t.in_flight(a), 2);
        drop(s1);
        assert_eq!(t.in_flight(a), 1);
        let s3 = t.acquire(a, 2).expect("a slot freed");
        drop((s2, s3));
        assert!(t.is_empty(), "a key with nothing in flight has no entry");
        assert!(t.acquire(a, 0).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn held_slots_are_given_back_together() {
        let t = Arc::new(ConnTable::default());
        let mut held = Held::default();
        for k in 0..3u64 {
            held.push(t.acquire(k << 32, 1).expect("slot"));
        }
        assert_eq!(held.len(), 3);
        assert_eq!(t.len(), 3);
        drop(held);
        assert!(t.is_empty());
    }
}
