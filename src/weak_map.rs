//! Values by key, held weakly: each lives as long as some configuration snapshot
//! holds it, and the next snapshot built while it lives gets the same one. Per-server
//! state, retry budgets, queues and the status page's series are kept this way, so
//! a reload carries them over without the map keeping removed ones alive.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Below this size a map is not worth pruning.
const MIN_PRUNE: usize = 64;

/// The entries of dropped values are pruned once the map has grown by a quarter
/// since the last prune, so that a reload building n values costs O(n), not the
/// O(n²) of a prune per lookup, while the dead entries (each keeps its value's
/// allocation) stay under a quarter of the live ones.
#[derive(Debug)]
pub(crate) struct WeakMap<K, T> {
    map: HashMap<K, Weak<T>>,
    /// The size at which the next insert prunes first.
    prune_at: usize,
}

impl<K, T> Default for WeakMap<K, T> {
    fn default() -> Self {
        WeakMap {
            map: HashMap::new(),
            prune_at: MIN_PRUNE,
        }
    }
}

impl<K: Hash + Eq, T> WeakMap<K, T> {
    /// The live value of `key`, if any snapshot still holds it.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<T>> {
        self.map.get(key).and_then(Weak::upgrade)
    }

    /// Makes `value` the one of `key`.
    pub(crate) fn insert(&mut self, key: K, value: &Arc<T>) {
        if self.map.len() >= self.prune_at {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.map.shrink_to(self.map.len() * 2);
            self.prune_at = self.map.len() + (self.map.len() / 4).max(MIN_PRUNE);
        }
        self.map.insert(key, Arc::downgrade(value));
    }
}

/// The live value of `key` in `map`, or a new default one.
pub(crate) fn shared<K: Hash + Eq, T: Default>(map: &Mutex<WeakMap<K, T>>, key: K) -> Arc<T> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(t) = map.get(&key) {
        return t;
    }
    let t = Arc::new(T::default());
    map.insert(key, &t);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_shared_while_held_and_dead_entries_are_pruned_as_the_map_grows() {
        let map = Mutex::new(WeakMap::<u32, u8>::default());
        let a = shared(&map, 1);
        assert!(Arc::ptr_eq(&a, &shared(&map, 1)));
        drop(a);
        assert_eq!(*shared(&map, 1), 0, "a dropped value is made anew");
        let held: Vec<_> = (0..1000).map(|k| shared(&map, k)).collect();
        drop(held);
        for k in 1000..2000 {
            let _ = shared(&map, k);
        }
        let len = map.lock().unwrap().map.len();
        assert!(len < 2 * MIN_PRUNE, "dead entries pruned: {len} left");
    }
}
