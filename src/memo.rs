//! Values looked up once per key and then remembered (service principal per tenant and
//! application, Antimatter's application per domain). Concurrent first lookups of the
//! same key wait for one remote call instead of each making their own: at start-up every worker
//! reconciles at once, and duplicate lookups would spend the HSM's RBAC budget or race to create the
//! same service principal. A failed lookup is not remembered; the next caller tries again. Only
//! callers of the same key wait for each other, and at most `capacity` keys are remembered.

use std::{
    hash::Hash,
    sync::{Arc, Mutex},
};

use tokio::sync::OnceCell;

use crate::{bounded::BoundedMap, locks::lock};

pub struct Memo<K, V> {
    cells: Mutex<BoundedMap<K, Arc<OnceCell<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    /// Remembers at most `capacity` keys, dropping the least recently used.
    pub fn new(capacity: usize) -> Self {
        Self { cells: Mutex::new(BoundedMap::new(capacity, None)) }
    }

    /// The remembered value for `key`, if there is one, without looking it up.
    pub fn peek(&self, key: &K) -> Option<V> {
        lock(&self.cells).get(key).and_then(|cell| cell.get().cloned())
    }

    /// The remembered value for `key`, or the result of `lookup` (run by one caller at a time).
    pub async fn get_or_try_init<E, F>(&self, key: K, lookup: F) -> Result<V, E>
    where
        F: AsyncFnOnce() -> Result<V, E>,
    {
        let cell = lock(&self.cells).get_or_insert_with(key, Arc::default).clone();
        cell.get_or_try_init(|| lookup()).await.cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_first_lookups_make_one_call_and_failures_are_retried() {
        let memo: Memo<&str, u32> = Memo::new(2);
        let calls = AtomicUsize::new(0);
        let lookup = async || {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<_, ()>(7)
        };
        let results = futures::future::join_all((0..8).map(|_| memo.get_or_try_init("hsm", lookup))).await;
        assert!(results.iter().all(|r| *r == Ok(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(memo.peek(&"hsm"), Some(7));
        assert_eq!(memo.peek(&"unknown"), None);

        assert_eq!(memo.get_or_try_init("other", async || Err::<u32, _>("down")).await, Err("down"));
        assert_eq!(memo.get_or_try_init("other", async || Ok::<_, &str>(9)).await, Ok(9));

        memo.get_or_try_init("third", async || Ok::<_, ()>(3)).await.expect("looked up");
        assert_eq!(memo.peek(&"hsm"), None, "full: the least recently used key was dropped");
        assert_eq!(memo.peek(&"third"), Some(3));
    }
}
