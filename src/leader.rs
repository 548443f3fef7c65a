//! Leader election on a `coordination.k8s.io` Lease, so two replicas never reconcile at once.
//!
//! Written here because the published kube leader-election crates do not yet build with kube 5. The
//! leader renews every [`RENEW_EVERY`]; if it cannot renew within [`RENEW_DEADLINE`] it stops at
//! once, which is before [`LEASE_DURATION`] lets another replica take over.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a standby tries to take an expired lease.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.to_owned(), identity: identity.to_owned() }
    }

    /// Takes or renews the lease; `Ok(true)` when this replica holds it now.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = micro_now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let duration = spec.lease_duration_seconds.unwrap_or(LEASE_DURATION.as_secs() as i32);
            t.0 + jiff::SignedDuration::from_secs(i64::from(duration)) < now.0
        });
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == self.identity {
            Some(LeaseSpec { acquire_time: spec.acquire_time.clone(), ..self.spec(now, transitions) })
        } else if expired || holder.is_empty() {
            Some(self.spec(now, transitions + 1))
        } else {
            None
        };
        let Some(next) = next else { return Ok(false) };
        lease.spec = Some(next);
        // The resourceVersion in `lease` makes this a compare-and-swap: a concurrent taker gets 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
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

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: could not read or take the lease"),
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Renews until a renewal fails for [`RENEW_DEADLINE`] or another replica holds the lease;
    /// returns when leadership is lost.
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_acquire().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "leader election: renewal failed"),
            }
            if last_renewed.elapsed() >= RENEW_DEADLINE {
                return;
            }
        }
    }

    /// Gives the lease up on shutdown so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let mine = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str());
            if mine {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                    spec.renew_time = None;
                }
                let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
            }
        }
    }
}
