//! Client-side pacing per HSM, so the operator stays under Managed HSM's documented limits (about 1
//! key creation and 5 RBAC operations per second per HSM) instead of collecting 429s. A pacer hands
//! out evenly spaced send slots; it is a few lines, so it is written here rather than pulled in.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::cloud::HsmEndpoint;

/// Evenly spaced slots at most `rate` per second.
struct Pacer {
    interval: Duration,
    next: Instant,
}

/// Pacers per HSM for key creation and RBAC writes.
pub struct Pacers {
    key_create_interval: Duration,
    rbac_write_interval: Duration,
    slots: Mutex<HashMap<(&'static str, String), Pacer>>,
}

impl Pacers {
    /// `key_creates_per_sec` and `rbac_writes_per_sec` of 0 turn pacing off.
    pub fn new(key_creates_per_sec: f64, rbac_writes_per_sec: f64) -> Self {
        let interval = |rate: f64| if rate > 0.0 { Duration::from_secs_f64(1.0 / rate) } else { Duration::ZERO };
        Self {
            key_create_interval: interval(key_creates_per_sec),
            rbac_write_interval: interval(rbac_writes_per_sec),
            slots: Mutex::default(),
        }
    }

    async fn wait(&self, class: &'static str, hsm: &HsmEndpoint, interval: Duration) {
        if interval.is_zero() {
            return;
        }
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let pacer = slots.entry((class, hsm.url.clone())).or_insert(Pacer { interval, next: now });
            let slot = pacer.next.max(now);
            pacer.next = slot + pacer.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Waits for this HSM's next key-creation slot.
    pub async fn key_create(&self, hsm: &HsmEndpoint) {
        self.wait("key_create", hsm, self.key_create_interval).await;
    }

    /// Waits for this HSM's next RBAC-write slot.
    pub async fn rbac_write(&self, hsm: &HsmEndpoint) {
        self.wait("rbac_write", hsm, self.rbac_write_interval).await;
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
            pacers.key_create(&a).await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        pacers.key_create(&b).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000), "another HSM has its own budget");
        pacers.rbac_write(&a).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000), "rate 0 means no pacing");
    }
}
