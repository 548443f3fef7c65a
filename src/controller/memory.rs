//! What the controller keeps per object between reconciles, in one map under one lock: the
//! failure count (backoff), a service's `Retry-After` hold, and our own last status write until
//! the watch cache has caught up with it.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::{
    api::{AzureRootKey, AzureRootKeyStatus},
    locks::lock,
};

const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Entry {
    failures: u32,
    /// No trigger (a Secret change, a watch event) calls a service before this instant.
    held_until: Option<Instant>,
    /// The status this operator last wrote, with the resourceVersion the write produced.
    written: Option<(u64, AzureRootKeyStatus)>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.failures == 0 && self.held_until.is_none() && self.written.is_none()
    }
}

fn resource_version(ark: &AzureRootKey) -> Option<u64> {
    ark.metadata.resource_version.as_deref().and_then(|v| v.parse().ok())
}

#[derive(Default)]
pub struct Memory {
    entries: Mutex<HashMap<ObjectRef<AzureRootKey>, Entry>>,
}

impl Memory {
    /// Runs `f` on the object's entry, dropping the entry when it is left empty.
    fn with<R>(&self, ark: &AzureRootKey, f: impl FnOnce(&mut Entry) -> R) -> R {
        let object = ObjectRef::from(ark);
        let mut entries = lock(&self.entries);
        let entry = entries.entry(object.clone()).or_default();
        let result = f(entry);
        if entry.is_empty() {
            entries.remove(&object);
        }
        result
    }

    /// How long a service asked us to wait still, if it did.
    pub fn hold_remaining(&self, ark: &AzureRootKey) -> Option<Duration> {
        let until = self.with(ark, |e| e.held_until)?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    pub fn set_hold(&self, ark: &AzureRootKey, retry_after: Option<Duration>) {
        self.with(ark, |e| e.held_until = retry_after.and_then(|wait| Instant::now().checked_add(wait)));
    }

    /// What the object's status is, as far as this operator knows: the cached object's, unless our
    /// own later write has not reached the cache yet. Once it has, the copy is dropped.
    pub fn known_status(&self, ark: &AzureRootKey) -> Option<AzureRootKeyStatus> {
        let cached = resource_version(ark);
        let newer = self.with(ark, |e| match &e.written {
            Some((rv, status)) if Some(*rv) > cached => Some(status.clone()),
            _ => {
                e.written = None;
                None
            }
        });
        newer.or_else(|| ark.status.clone())
    }

    /// Remembers our write until the watch cache has it, when the object comes back soon (a
    /// backoff). A Ready object comes back after its checkInterval, long after the cache caught up;
    /// remembering every object's status would double the cache's size during a rollout.
    pub fn remember_write(&self, ark: &AzureRootKey, written: &AzureRootKey, back_soon: bool) {
        let remembered = match (resource_version(written), &written.status) {
            (Some(rv), Some(status)) if back_soon => Some((rv, status.clone())),
            _ => None,
        };
        self.with(ark, |e| e.written = remembered);
    }

    /// Exponential per-object backoff from 1 s to 5 min, or longer when the service asked for it.
    pub fn backoff(&self, ark: &AzureRootKey, retry_after: Option<Duration>) -> Duration {
        self.with(ark, |e| {
            let delay = jittered_backoff(e.failures, retry_after);
            e.failures = e.failures.saturating_add(1);
            delay
        })
    }

    pub fn reset_backoff(&self, ark: &AzureRootKey) {
        self.with(ark, |e| e.failures = 0);
    }

    /// Drops what is kept for an object once it is gone.
    pub fn forget(&self, ark: &AzureRootKey) {
        lock(&self.entries).remove(&ObjectRef::from(ark));
    }

    /// Drops what is kept for objects the cache of `namespace` (all namespaces: `None`) no longer
    /// holds — deleted while its watch was down, so no deletion was reported — and remembered
    /// writes the cache has caught up with. Entries outside the cache's namespace are left alone:
    /// another namespace's controller, with its own cache, owns them.
    pub fn forget_stale(&self, cache: &Store<AzureRootKey>, namespace: Option<&str>) {
        lock(&self.entries).retain(|object, entry| {
            if namespace.is_some_and(|ns| object.namespace.as_deref() != Some(ns)) {
                return true;
            }
            let Some(ark) = cache.get(object) else { return false };
            if entry.written.as_ref().is_some_and(|(rv, _)| resource_version(&ark) >= Some(*rv)) {
                entry.written = None;
            }
            !entry.is_empty()
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.entries).len()
    }
}

/// The delay after `failures` consecutive failures: 1 s doubling to 5 min, never sooner than the
/// service's `Retry-After`.
fn backoff_delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    Duration::from_secs(1u64 << failures.min(9)).min(MAX_BACKOFF).max(retry_after.unwrap_or_default())
}

/// The backoff with up to +20 % jitter, so objects that failed together do not retry together.
fn jittered_backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    backoff_delay(failures, retry_after).mul_f64(1.0 + fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let delays: Vec<u64> = (0..12).map(|n| backoff_delay(n, None).as_secs()).collect();
        assert_eq!(&delays[..4], &[1, 2, 4, 8]);
        assert_eq!(delays[11], 300);
        assert_eq!(backoff_delay(0, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(backoff_delay(0, Some(Duration::from_secs(600))), Duration::from_secs(600));
    }

    fn object(namespace: &str, name: &str, resource_version: &str) -> AzureRootKey {
        let mut ark = crate::api::sample(namespace, name);
        ark.metadata.resource_version = Some(resource_version.to_owned());
        ark
    }

    /// A watch gap hides deletions: what is kept per object must go once the cache lost it, but
    /// not what another namespace's controller keeps.
    #[test]
    fn entries_of_objects_the_cache_lost_are_dropped() {
        let (cache, mut writer) = kube::runtime::reflector::store::<AzureRootKey>();
        let kept = object("a", "kept", "7");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(kept.clone()));
        let (gone, elsewhere) = (object("a", "gone", "3"), object("b", "other", "5"));
        let memory = Memory::default();
        for o in [&kept, &gone, &elsewhere] {
            memory.backoff(o, None);
        }

        memory.forget_stale(&cache, Some("a"));
        let mut left: Vec<String> = lock(&memory.entries).keys().map(|o| o.name.clone()).collect();
        left.sort();
        assert_eq!(left, ["kept", "other"]);

        memory.forget_stale(&cache, None);
        assert_eq!(memory.len(), 1, "only the cached object is kept");
    }

    #[test]
    fn a_write_is_remembered_until_the_cache_has_caught_up() {
        let (cache, mut writer) = kube::runtime::reflector::store::<AzureRootKey>();
        let cached = object("a", "o", "7");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(cached.clone()));
        let mut written = object("a", "o", "9");
        written.status = Some(AzureRootKeyStatus { tenant_id: Some("t".into()), ..Default::default() });
        let memory = Memory::default();
        memory.remember_write(&cached, &written, true);
        assert_eq!(memory.known_status(&cached), written.status, "the cache is behind our write");
        memory.forget_stale(&cache, None);
        assert_eq!(memory.known_status(&cached), written.status, "still behind: kept");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(written.clone()));
        memory.forget_stale(&cache, None);
        assert_eq!(memory.len(), 0, "caught up: dropped");
        memory.remember_write(&cached, &written, false);
        assert_eq!(memory.len(), 0, "an object that does not come back soon is not remembered");
    }
}
