//! Client-side pacing per HSM, so the operator stays under Managed HSM's documented limits (about 1
//! key creation and 5 RBAC operations — reads included — per second per HSM) instead of collecting
//! 429s. A pacer hands out evenly spaced send slots, and a 429 pushes the HSM's next slot past its
//! `Retry-After`; it is a few lines, so it is written here rather than pulled in.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::{bounded::BoundedMap, cloud::HsmEndpoint, locks::lock};

/// HSMs (per class) whose pacer is kept at once; the least recently used one goes first, and a
/// pacer that is gone only means that HSM's next call is not held back.
const KEPT_PACERS: usize = 1024;

/// Evenly spaced slots at most `rate` per second.
struct Pacer {
    interval: Duration,
    next: Instant,
}

/// What is paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    KeyCreate,
    Rbac,
}

/// Pacers per HSM for key creation and RBAC calls.
pub struct Pacers {
    key_create_interval: Duration,
    rbac_interval: Duration,
    slots: Mutex<BoundedMap<(Class, String), Pacer>>,
}

impl Pacers {
    /// `key_creates_per_sec` and `rbac_per_sec` of 0 turn pacing off.
    pub fn new(key_creates_per_sec: f64, rbac_per_sec: f64) -> Self {
        let interval = |rate: f64| if rate > 0.0 { Duration::from_secs_f64(1.0 / rate) } else { Duration::ZERO };
        Self {
            key_create_interval: interval(key_creates_per_sec),
            rbac_interval: interval(rbac_per_sec),
            slots: Mutex::new(BoundedMap::new(KEPT_PACERS, None)),
        }
    }

    fn interval(&self, class: Class) -> Duration {
        match class {
            Class::KeyCreate => self.key_create_interval,
            Class::Rbac => self.rbac_interval,
        }
    }

    /// Waits for this HSM's next slot of `class`.
    pub async fn wait(&self, class: Class, hsm: &HsmEndpoint) {
        let interval = self.interval(class);
        if interval.is_zero() {
            return;
        }
        let slot = {
            let mut slots = lock(&self.slots);
            let now = Instant::now();
            let pacer = slots.get_or_insert_with((class, hsm.url.clone()), || Pacer { interval, next: now });
            let slot = pacer.next.max(now);
            pacer.next = slot + pacer.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// After a 429, no slot of `class` on this HSM is handed out before `retry_after` has passed.
    pub fn pause(&self, class: Class, hsm: &HsmEndpoint, retry_after: Duration) {
        let interval = self.interval(class);
        let mut slots = lock(&self.slots);
        let resume = Instant::now() + retry_after;
        let pacer = slots.get_or_insert_with((class, hsm.url.clone()), || Pacer { interval, next: resume });
        pacer.next = pacer.next.max(resume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_per_hsm() {
        let pacers = Pacers::new(2.0, 0.0);
        let a = HsmEndpoint { url: "https://a".into(), scope: String::new() };
        let b = HsmEndpoint { url: "https://b".into(), scope: String::new() };
        let start = Instant::now();
        for _ in 0..3 {
            pacers.wait(Class::KeyCreate, &a).await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        pacers.wait(Class::KeyCreate, &b).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000), "another HSM has its own budget");
        pacers.wait(Class::Rbac, &a).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000), "rate 0 means no pacing");
        pacers.pause(Class::KeyCreate, &a, Duration::from_secs(5));
        pacers.wait(Class::KeyCreate, &a).await;
        assert_eq!(start.elapsed(), Duration::from_millis(6000), "a 429's Retry-After holds the HSM's next slot");
    }
}
