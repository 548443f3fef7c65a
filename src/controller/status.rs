//! `.status`: built from what the steps found, and written by the one server-side-apply writer.

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{
    FIELD_MANAGER,
    conditions::{self, Outcome, READY, now, to_conditions},
    steps::{Found, Report},
};
use crate::api::{AzureRootKey, AzureRootKeyStatus, CreatedRecord, PairingStatus};

/// The condition type shown while a `Revoke` deletion is blocked.
pub const DELETING: &str = "Deleting";

/// `contoso` of `https://contoso.managedhsm.azure.net`.
fn hsm_name(url: &str) -> Option<String> {
    let host = url::Url::parse(url).ok()?.host_str()?.to_owned();
    host.split('.').next().map(str::to_owned)
}

/// The status after one run: the steps' conditions and `Ready`, and what they found, keeping
/// what they did not look at this time from the status before.
pub fn build(
    ark: &AzureRootKey,
    prev: &AzureRootKeyStatus,
    report: &Report,
    found: &Found,
    ready: &Outcome,
    hsm_url: Option<String>,
) -> AzureRootKeyStatus {
    let generation = ark.metadata.generation;
    let mut outcomes: Vec<(&'static str, &Outcome)> = report.outcomes().map(|(k, o)| (k.as_str(), o)).collect();
    outcomes.push((READY, ready));
    let [reconciling, stalled] = conditions::kstatus(ready);
    outcomes.extend([(reconciling.0, &reconciling.1), (stalled.0, &stalled.1)]);
    // Every check records its time; the first-seen time and the last healthy time outlive checks
    // with another result.
    let pairing = match (&found.pairing, &prev.pairing) {
        (Some(new), Some(old)) => {
            let same_result = new.status == old.status && new.message == old.message;
            Some(PairingStatus {
                first_seen_time: if same_result { old.first_seen_time.clone() } else { new.first_seen_time.clone() },
                last_healthy_time: new.last_healthy_time.clone().or_else(|| old.last_healthy_time.clone()),
                ..new.clone()
            })
        }
        (Some(new), None) => Some(new.clone()),
        (None, old) => old.clone(),
    };
    let rek_id = if found.registration_gone {
        None
    } else {
        found.rek_id.clone().or_else(|| prev.root_encryption_key_id.clone())
    };
    let hsm_url = hsm_url.or_else(|| prev.hsm_url.clone());
    let hsm_name = hsm_url.as_deref().and_then(hsm_name);
    AzureRootKeyStatus {
        observed_generation: generation,
        conditions: to_conditions(&outcomes, &prev.conditions, generation, &now()),
        hsm_url,
        hsm_name,
        key_url: found.key.as_ref().map(|k| k.kid.clone()).or_else(|| prev.key_url.clone()),
        key_version: found.key.as_ref().map(|k| k.version.clone()).or_else(|| prev.key_version.clone()),
        key_expiry_time: match &found.key {
            Some(key) => key.expires.map(Time),
            None => prev.key_expiry_time.clone(),
        },
        tenant_id: Some(ark.spec.tenant_id.clone()),
        service_principal_object_id: found.principal.clone().or_else(|| prev.service_principal_object_id.clone()),
        role_assignment_name: found.assignment.clone().or_else(|| prev.role_assignment_name.clone()),
        root_encryption_key_id: rek_id,
        pairing,
        rotation_policy: match &ark.spec.key.rotation_policy {
            Some(_) => found.rotation_policy.clone().or_else(|| prev.rotation_policy.clone()),
            None => None,
        },
        rotation: found.rotation.clone().or_else(|| prev.rotation.clone()),
        versions: if found.versions.is_empty() { prev.versions.clone() } else { found.versions.clone() },
        created: Some(created(prev.created.clone().unwrap_or_default(), found)),
        messages_digest: None,
    }
}

/// What this object added: what the steps proved this time, and for what they did not look at,
/// the record before.
fn created(prev: CreatedRecord, found: &Found) -> CreatedRecord {
    let now = &found.created;
    CreatedRecord {
        role_assignment_name: match &found.assignment {
            Some(_) => now.role_assignment_name.clone(),
            None => prev.role_assignment_name,
        },
        domain_tag: if found.key.is_some() { now.domain_tag } else { prev.domain_tag },
        root_encryption_key_id: match &found.rek_id {
            _ if found.registration_gone => None,
            Some(_) => now.root_encryption_key_id.clone(),
            None => prev.root_encryption_key_id,
        },
    }
}

/// The status with the `Deleting` condition set to `blocked`, every other field as it was.
pub fn with_deleting(ark: &AzureRootKey, prev: &AzureRootKeyStatus, blocked: &Outcome) -> AzureRootKeyStatus {
    let mut conditions = prev.conditions.clone();
    conditions.retain(|c| c.type_ != DELETING);
    conditions.extend(to_conditions(&[(DELETING, blocked)], &prev.conditions, ark.metadata.generation, &now()));
    AzureRootKeyStatus { conditions, ..prev.clone() }
}

/// The status as the watch cache keeps it: the condition messages (text every run recomputes,
/// about 1 KiB an object) replaced by one digest of them, so a run still tells whether its status
/// differs from the stored one. The few readers of another step's message read the object itself.
pub fn trim_for_cache(status: &mut AzureRootKeyStatus) {
    if status.messages_digest.is_none() {
        let mut digest = DefaultHasher::new();
        for c in &status.conditions {
            (&c.type_, &c.message).hash(&mut digest);
        }
        status.messages_digest = Some(digest.finish());
    }
    for c in &mut status.conditions {
        c.message = String::new();
    }
}

/// Whether writing `new` would change nothing: `known` is our own last write (in full) or the
/// watch cache's copy (trimmed).
pub fn unchanged(known: &AzureRootKeyStatus, new: &AzureRootKeyStatus) -> bool {
    let trimmed = |s: &AzureRootKeyStatus| {
        let mut s = s.clone();
        trim_for_cache(&mut s);
        s
    };
    trimmed(known) == trimmed(new)
}

/// Writes the whole status by server-side apply (fields left out would be dropped).
pub async fn write(
    api: &Api<AzureRootKey>,
    ark: &AzureRootKey,
    status: &AzureRootKeyStatus,
) -> Result<AzureRootKey, kube::Error> {
    let patch = json!({
        "apiVersion": AzureRootKey::api_version(&()),
        "kind": AzureRootKey::kind(&()),
        "status": status,
    });
    api.patch_status(&ark.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{reasons::Reason, steps::Report, table::Kind};

    fn object(generation: i64) -> AzureRootKey {
        let mut ark = crate::api::sample("n", "a");
        ark.metadata.generation = Some(generation);
        ark
    }

    #[test]
    fn status_does_not_change_when_nothing_did() {
        let ark = object(2);
        let report = Report::refused(Outcome::failed(Reason::PolicyDenied, "no"));
        let ready = Outcome::ok(Reason::Ready, "ready");
        let found = Found::default();
        let first = build(&ark, &AzureRootKeyStatus::default(), &report, &found, &ready, Some("https://h".into()));
        let second = build(&ark, &first, &report, &found, &ready, Some("https://h".into()));
        assert_eq!(first, second);
        assert_eq!(first.observed_generation, Some(2));
        assert!(first.conditions.iter().all(|c| c.observed_generation == Some(2)));
        assert_eq!(first.conditions.len(), Kind::ALL.len() + 3, "one per step, Ready, Reconciling and Stalled");
    }

    /// The cache's copy has no messages, yet a run that recomputes the same status writes nothing,
    /// and one whose only change is a message writes it.
    #[test]
    fn the_cached_status_without_messages_still_tells_a_change() {
        let ark = object(1);
        let ready = Outcome::ok(Reason::Ready, "ready");
        let found = Found::default();
        let run = |why: &str| {
            let report = Report::refused(Outcome::failed(Reason::PolicyDenied, why));
            build(&ark, &AzureRootKeyStatus::default(), &report, &found, &ready, None)
        };
        let written = run("namespace team-x may not use HSM contoso");
        let mut cached = written.clone();
        trim_for_cache(&mut cached);
        assert!(cached.conditions.iter().all(|c| c.message.is_empty()), "{cached:?}");
        assert!(cached.conditions.iter().any(|c| c.reason == "PolicyDenied"), "everything else is kept");
        let round_trip: AzureRootKeyStatus =
            serde_json::from_value(serde_json::to_value(&cached).expect("json")).expect("status");
        assert_eq!(round_trip.messages_digest, None, "the digest is never serialized");

        assert!(unchanged(&cached, &run("namespace team-x may not use HSM contoso")));
        assert!(unchanged(&written, &run("namespace team-x may not use HSM contoso")));
        assert!(!unchanged(&cached, &run("namespace team-x may not use HSM fabrikam")), "a new message is written");
    }
}
