//! `KeyReady`: the key exists (created `oct-HSM` when allowed) and can serve as a root key.

use std::collections::BTreeMap;

use super::{role::object_uid, tag};
use crate::controller::step::{Change, Step};
use crate::{
    api::{AzureRootKey, CreatePolicy, KeyRotationPolicySpec},
    azure::keys::{KeyInfo, RotationPolicy},
    cloud::HsmEndpoint,
    controller::{
        conditions::Outcome,
        errors::Failure,
        ownership::{self, OWNER_TAG, Owner},
        reasons::{ChangeReason, Reason},
    },
    policy::Grant,
    remotes::{ManagedHsm, Owners},
};

/// Who is asking, for the ownership check: the object and what the policy lets it claim.
pub struct Claimant<'a> {
    pub me: &'a Owner,
    pub grant: &'a Grant,
    pub owners: &'a dyn Owners,
    /// This object used the key before (its status names a version of it): a new version without
    /// the owner marker is still this object's.
    pub held_before: bool,
}

/// Whether `url` names a version of key `name` of this HSM.
pub fn is_version_of(url: &str, endpoint: &HsmEndpoint, name: &str) -> bool {
    let prefix = format!("{}/keys/{name}/", endpoint.url.trim_end_matches('/'));
    url.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(&prefix))
}

pub async fn ensure(
    hsm: &dyn ManagedHsm,
    endpoint: &HsmEndpoint,
    ark: &AzureRootKey,
    claimant: &Claimant<'_>,
) -> Result<Step<KeyInfo>, Failure> {
    let spec = &ark.spec;
    let name = &spec.key.name;
    let (key, created) = match hsm.key(name).await? {
        Some(key) => {
            let Claimant { me, grant, owners, held_before } = claimant;
            let may_take = ownership::Takeover { adopt: spec.key.adopt, held_before: *held_before };
            if let Err(refused) = ownership::claim(&key, name, me, may_take, grant, *owners).await {
                return Ok(Step::stopped(refused));
            }
            (key, None)
        }
        None if spec.key.create == CreatePolicy::Never => {
            return Ok(Step::stopped(Outcome::failed(
                Reason::KeyNotFound,
                format!(
                    "The HSM {} has no key named {name}, and spec.key.create is Never. Create the key or set create: IfMissing.",
                    endpoint.url
                ),
            )));
        }
        None if spec.suspend => {
            return Ok(Step::stopped(Outcome::failed(
                Reason::KeyNotFound,
                format!("The HSM {} has no key named {name}; suspended, so not creating it.", endpoint.url),
            )));
        }
        None => {
            // Created with the domain tag (and its addedBy marker) and the owner marker, so the tag
            // step has nothing to do.
            let mut tags = BTreeMap::from(tag::ours(&spec.domain_id, &object_uid(ark)));
            tags.insert(OWNER_TAG.to_owned(), claimant.me.marker());
            let key = hsm.create_key(name, spec.key.size, tags).await?;
            let note = format!("Created oct-HSM key {name} ({} bits) in {}", spec.key.size, endpoint.url);
            (key, Some(note))
        }
    };
    // Conditions describe the state, the same after the change as before it (no status churn);
    // what the operator changed is told by events.
    let outcome = usable(&key).unwrap_or_else(|| {
        Outcome::ok(Reason::KeyUsable, format!("Key {name} is enabled, oct-HSM, and allows wrapKey and unwrapKey."))
    });
    let step = Step::found(outcome, key);
    Ok(match created {
        Some(note) => step.changed(ChangeReason::KeyCreated, note),
        None => step,
    })
}

/// Makes the HSM's rotation policy for the key the one `wanted` describes; returns it as the HSM
/// stored it. Only called when the spec asks for a policy: a policy set by someone else is
/// otherwise left alone.
pub async fn ensure_rotation_policy(
    hsm: &dyn ManagedHsm,
    name: &str,
    wanted: &KeyRotationPolicySpec,
) -> Result<(KeyRotationPolicySpec, Option<Change>), Failure> {
    let policy = RotationPolicy {
        rotate_after_create: Some(wanted.rotate_after.clone()),
        rotate_before_expiry: None,
        expiry_time: wanted.expire_after.clone(),
    };
    if hsm.rotation_policy(name).await?.as_ref() == Some(&policy) {
        return Ok((wanted.clone(), None));
    }
    let stored = hsm.set_rotation_policy(name, &policy).await?;
    let stored = KeyRotationPolicySpec {
        rotate_after: stored.rotate_after_create.unwrap_or_default(),
        expire_after: stored.expiry_time,
    };
    let note = format!(
        "Set the rotation policy of key {name}: a new version every {}{}",
        stored.rotate_after,
        stored.expire_after.as_deref().map(|e| format!(", each expiring after {e}")).unwrap_or_default()
    );
    Ok((stored, Some(Change { reason: ChangeReason::RotationPolicySet, note })))
}

/// Why a key cannot serve as a root key, if it cannot. Reported, never "fixed" by replacing it.
fn usable(key: &KeyInfo) -> Option<Outcome> {
    if !key.kty.eq_ignore_ascii_case("oct-HSM") {
        return Some(Outcome::failed(
            Reason::UnsupportedKeyType,
            format!(
                "The key is of type {}; Antimatter needs a symmetric oct-HSM key. Use another key name (the operator never replaces keys).",
                key.kty
            ),
        ));
    }
    if !key.enabled {
        return Some(Outcome::failed(
            Reason::KeyDisabled,
            "The key is disabled. Enable it in the HSM (az keyvault key set-attributes --enabled true); the operator never changes it.",
        ));
    }
    let now = jiff::Timestamp::now();
    if key.expires.is_some_and(|t| t <= now) {
        return Some(Outcome::failed(Reason::KeyNotUsable, "The key has expired (attributes.exp is in the past)."));
    }
    if key.not_before.is_some_and(|t| t > now) {
        return Some(Outcome::failed(
            Reason::KeyNotUsable,
            "The key is not yet valid (attributes.nbf is in the future).",
        ));
    }
    let missing: Vec<&str> =
        ["wrapKey", "unwrapKey"].into_iter().filter(|op| !key.ops.iter().any(|o| o == op)).collect();
    if !missing.is_empty() {
        return Some(Outcome::failed(
            Reason::MissingKeyOperations,
            format!("The key does not allow {}; Antimatter wraps and unwraps with it.", missing.join(" and ")),
        ));
    }
    None
}
