//! The one way this crate takes a `std` mutex, and async locks per key.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
};

/// Locks `mutex`, recovering from poisoning: every value guarded in this crate is a cache or a
/// counter that stays valid even if a holder panicked mid-update.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One async lock per key. The map holds only keys someone holds or waits for, so it is bounded
/// by the reconciles in flight.
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self { locks: Mutex::default() }
    }
}

/// Holds one key's lock; dropping it lets the next waiter in.
pub struct KeyedGuard<'a, K: Eq + Hash> {
    locks: &'a KeyedLocks<K>,
    key: K,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    pub async fn lock(&self, key: K) -> KeyedGuard<'_, K> {
        let mutex = lock(&self.locks).entry(key.clone()).or_default().clone();
        let guard = Some(mutex.lock_owned().await);
        KeyedGuard { locks: self, key, guard }
    }

    pub fn len(&self) -> usize {
        lock(&self.locks).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        self.guard = None;
        let mut locks = lock(&self.locks.locks);
        // Waiters hold a clone of the Arc, taken under this same map lock.
        if locks.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_nothing_kept_after() {
        let locks = KeyedLocks::default();
        let first = locks.lock("k").await;
        let other = locks.lock("other").await;
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("k")).await;
        assert!(second.is_err(), "the same key waits");
        drop((first, other));
        let again = locks.lock("k").await;
        drop(again);
        assert!(locks.is_empty());
    }
}
