//! A map with a fixed capacity and an optional lifetime per entry, for every cache the operator
//! keeps of what objects name (Secrets, credentials, key clients, logins, lookups, pacers): any
//! number of objects, or one object naming ever new values, can only push old entries out, never
//! grow the process. Full, it drops the least recently used entry. Hand-written (a scan on insert
//! into a full map) because no bounded cache is among the dependencies, and the caches hold at most
//! a few thousand entries.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

struct Slot<V> {
    value: V,
    inserted: Instant,
    /// Ticks of the last use, for eviction.
    used: u64,
}

pub struct BoundedMap<K, V> {
    capacity: usize,
    lifetime: Option<Duration>,
    slots: HashMap<K, Slot<V>>,
    tick: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    /// At most `capacity` entries (at least 1), each kept at most `lifetime` when given.
    pub fn new(capacity: usize, lifetime: Option<Duration>) -> Self {
        Self { capacity: capacity.max(1), lifetime, slots: HashMap::new(), tick: 0 }
    }

    fn expired(&self, slot: &Slot<V>, now: Instant) -> bool {
        self.lifetime.is_some_and(|l| now.saturating_duration_since(slot.inserted) >= l)
    }

    /// The live entry for `key`, marked as used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.get_at(key, Instant::now())
    }

    fn get_at<Q>(&mut self, key: &Q, now: Instant) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if self.slots.get(key).is_some_and(|slot| self.expired(slot, now)) {
            self.slots.remove(key);
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        self.slots.get_mut(key).map(|slot| {
            slot.used = tick;
            &mut slot.value
        })
    }

    /// The live entry for `key`, inserting `make()` when there is none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let now = Instant::now();
        if self.get_at(&key, now).is_none() {
            self.insert_at(key.clone(), make(), now);
        }
        self.get_at(&key, now).expect("present: just inserted")
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.insert_at(key, value, Instant::now());
    }

    fn insert_at(&mut self, key: K, value: V, now: Instant) {
        if !self.slots.contains_key(&key) && self.slots.len() >= self.capacity {
            self.evict(now);
        }
        self.tick += 1;
        self.slots.insert(key, Slot { value, inserted: now, used: self.tick });
    }

    /// Drops every expired entry, or else the least recently used one.
    fn evict(&mut self, now: Instant) {
        let before = self.slots.len();
        if let Some(lifetime) = self.lifetime {
            self.slots.retain(|_, slot| now.saturating_duration_since(slot.inserted) < lifetime);
        }
        if self.slots.len() < before {
            return;
        }
        let oldest = self.slots.iter().min_by_key(|(_, slot)| slot.used).map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            self.slots.remove(&oldest);
        }
    }

    /// Keeps only the entries for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.slots.retain(|k, slot| keep(k, &mut slot.value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_drops_the_least_recently_used_entry() {
        let mut map = BoundedMap::new(3, None);
        for k in ["a", "b", "c"] {
            map.insert(k, k.len());
        }
        assert!(map.get("a").is_some(), "a is used: b is now the oldest");
        map.insert("d", 1);
        assert_eq!(map.len(), 3);
        assert!(map.get("b").is_none(), "the least recently used entry went");
        assert!(map.get("a").is_some() && map.get("c").is_some() && map.get("d").is_some());
        map.insert("a", 9);
        assert_eq!((map.len(), map.get("a").copied()), (3, Some(9)), "replacing evicts nothing");
        for i in 0..1000 {
            map.insert(if i % 2 == 0 { "x" } else { "y" }, i);
        }
        assert_eq!(map.len(), 3, "never more than its capacity");
    }

    #[test]
    fn entries_expire_after_their_lifetime() {
        let lifetime = Duration::from_secs(60);
        let mut map = BoundedMap::new(2, Some(lifetime));
        let start = Instant::now();
        map.insert_at("old", 1, start);
        map.insert_at("new", 2, start + Duration::from_secs(30));
        assert_eq!(map.get_at("old", start + Duration::from_secs(59)).copied(), Some(1));
        assert_eq!(map.get_at("old", start + lifetime), None, "expired: gone, used or not");
        assert_eq!(map.len(), 1);
        map.insert_at("a", 3, start + Duration::from_secs(40));
        map.insert_at("b", 4, start + Duration::from_secs(95));
        assert_eq!(map.len(), 2, "an expired entry made room before a live one was evicted");
        assert_eq!(map.get_at("a", start + Duration::from_secs(95)).copied(), Some(3));
    }
}
