//! Leader election on a `coordination.k8s.io` Lease, so two replicas never reconcile at once.
//!
//! Written here because the published kube leader-election crates do not yet build with kube 5.
//! Three rules make two writers impossible while clocks run at the same rate (wall clocks may
//! disagree by any amount: none is read across replicas):
//! - every Lease call gives up after [`CALL_TIMEOUT`], so a stalled call never outlives a deadline;
//! - the leader stops its controllers [`RENEW_DEADLINE`] after it *sent* its last successful
//!   renewal, whatever happens to later ones;
//! - a standby takes the lease only when it has seen no change to it (its resourceVersion) for the
//!   lease's duration, timed on its own monotonic clock from when it first saw the last change; the
//!   holder's `renewTime` is another machine's clock and is not trusted.
//!
//! A renewal is written after it is sent and seen after it is written, so the standby's clock
//! starts after the leader's: the leader stops at least `LEASE_DURATION - RENEW_DEADLINE` before
//! the standby may take over.

use std::{sync::Mutex, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::time::Instant;

use crate::locks::lock;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a standby tries to take an expired lease.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// The longest one Lease call may take: short enough that a leader whose call stalls still has
/// time to try again before its renew deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(4);

// The leader must stop before a standby may take over, and a renewal (a read and a write) must fit
// in the renew deadline with time to try again.
const _: () = assert!(RENEW_DEADLINE.as_secs() < LEASE_DURATION.as_secs());
const _: () = assert!(RENEW_EVERY.as_secs() + 2 * CALL_TIMEOUT.as_secs() <= RENEW_DEADLINE.as_secs());

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("no answer within {CALL_TIMEOUT:?}")]
    TimedOut,
}

/// The Lease as this replica last saw it change: its resourceVersion, and when (on this replica's
/// monotonic clock) it first saw that version.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    version: String,
    at: Instant,
}

impl Observed {
    /// What is known after seeing `version` at `now`: the time moves only when the Lease changed.
    fn after(previous: Option<Observed>, version: &str, now: Instant) -> Observed {
        match previous {
            Some(seen) if seen.version == version => seen,
            _ => Observed { version: version.to_owned(), at: now },
        }
    }

    /// Whether the holder has let the lease lapse: no change seen for `duration`.
    fn lapsed(&self, duration: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.at) >= duration
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    observed: Mutex<Option<Observed>>,
}

fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One Lease call, abandoned after [`CALL_TIMEOUT`].
async fn timed<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, LeaseError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| LeaseError::TimedOut)?.map_err(LeaseError::from)
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            observed: Mutex::new(None),
        }
    }

    fn observe(&self, lease: &Lease, now: Instant) -> Observed {
        let version = lease.metadata.resource_version.as_deref().unwrap_or_default();
        let mut observed = lock(&self.observed);
        let next = Observed::after(observed.take(), version, now);
        *observed = Some(next.clone());
        next
    }

    /// Takes or renews the lease; `Ok(true)` when this replica holds it now.
    pub async fn try_acquire(&self) -> Result<bool, LeaseError> {
        let Some(mut lease) = timed(self.api.get_opt(&self.name)).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(micro_now(), 0)),
            };
            return match timed(self.api.create(&PostParams::default(), &lease)).await {
                Ok(created) => {
                    self.observe(&created, Instant::now());
                    Ok(true)
                }
                Err(LeaseError::Kube(kube::Error::Api(s))) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let observed = self.observe(&lease, Instant::now());
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(LEASE_DURATION, Duration::from_secs);
        let transitions = spec.lease_transitions.unwrap_or(0);
        let now = micro_now();
        let next = if holder == self.identity {
            LeaseSpec { acquire_time: spec.acquire_time.clone(), ..self.spec(now, transitions) }
        } else if holder.is_empty() || observed.lapsed(duration, Instant::now()) {
            self.spec(now, transitions.saturating_add(1))
        } else {
            return Ok(false);
        };
        lease.spec = Some(next);
        // The resourceVersion in `lease` makes this a compare-and-swap: a concurrent taker gets 409.
        match timed(self.api.replace(&self.name, &PostParams::default(), &lease)).await {
            Ok(written) => {
                self.observe(&written, Instant::now());
                Ok(true)
            }
            Err(LeaseError::Kube(kube::Error::Api(s))) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, now: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Waits until this replica leads; returns when the winning call was sent (what
    /// [`Self::hold`]'s deadline counts from).
    pub async fn acquire(&self) -> Instant {
        loop {
            let sent = Instant::now();
            match self.try_acquire().await {
                Ok(true) => return sent,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: could not read or take the lease"),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Renews every [`RENEW_EVERY`]; returns when leadership is lost: another replica holds the
    /// lease, or [`RENEW_DEADLINE`] has passed since the last successful renewal was sent
    /// (`renewed`, at first the time [`Self::acquire`] returned), even while a call hangs.
    pub async fn hold(&self, mut renewed: Instant) {
        loop {
            let deadline = renewed + RENEW_DEADLINE;
            let attempt = async {
                tokio::time::sleep(RENEW_EVERY).await;
                let sent = Instant::now();
                (sent, self.try_acquire().await)
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => {
                    tracing::warn!("leader election: not renewed within the renew deadline");
                    return;
                }
                Ok((sent, Ok(true))) => renewed = sent,
                Ok((_, Ok(false))) => {
                    tracing::warn!("leader election: another replica holds the lease");
                    return;
                }
                Ok((_, Err(e))) => tracing::warn!(error = %e, "leader election: renewal failed"),
            }
        }
    }

    /// Gives the lease up on shutdown so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = timed(self.api.get_opt(&self.name)).await {
            let mine = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
            if mine {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                    spec.renew_time = None;
                }
                let _ = timed(self.api.replace(&self.name, &PostParams::default(), &lease)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_judged_by_when_the_lease_was_seen_to_change() {
        let start = Instant::now();
        let secs = |s| start + Duration::from_secs(s);
        let seen = Observed::after(None, "7", start);
        assert!(!seen.lapsed(LEASE_DURATION, secs(14)));
        let unchanged = Observed::after(Some(seen.clone()), "7", secs(10));
        assert_eq!(unchanged.at, start, "the same version seen again does not restart the clock");
        assert!(unchanged.lapsed(LEASE_DURATION, secs(15)), "unchanged for the lease's duration");
        let renewed = Observed::after(Some(unchanged), "8", secs(14));
        assert!(!renewed.lapsed(LEASE_DURATION, secs(28)), "a change restarts the clock");
        assert!(renewed.lapsed(LEASE_DURATION, secs(29)));
    }

    /// A Lease API that never answers: `hold` must still return by its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_renewal_still_ends_leadership_at_the_deadline() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let stalled = tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some((request, reply)) = handle.next_request().await {
                pending.push((request, reply));
            }
        });
        let elector = LeaderElector::new(Client::new(service, "default"), "ns", "rootkey-operator", "me");
        let renewed = Instant::now();
        elector.hold(renewed).await;
        assert!(renewed.elapsed() <= RENEW_DEADLINE, "held for {:?}", renewed.elapsed());
        stalled.abort();
    }
}
