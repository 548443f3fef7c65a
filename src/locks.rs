//! The one way this crate takes a `std` mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering from poisoning: every value guarded in this crate is a cache or a
/// counter that stays valid even if a holder panicked mid-update.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
