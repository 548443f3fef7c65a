//! `TagApplied`: the key version carries `<domain-id>=allow` and this object's owner marker, every
//! other tag kept; and its undo.

use crate::controller::{step::Step, table::Kind};
use crate::{
    api::AzureRootKeySpec,
    azure::keys::KeyInfo,
    controller::{
        conditions::Outcome,
        errors::Failure,
        ownership::OWNER_TAG,
        reasons::{ChangeReason, Reason},
    },
    remotes::ManagedHsm,
};

/// The tag value that lets Antimatter use the key for the domain named by the tag's name.
pub const DOMAIN_TAG_VALUE: &str = "allow";

fn carries(key: &KeyInfo, domain_id: &str) -> bool {
    key.tags.get(domain_id).is_some_and(|v| v == DOMAIN_TAG_VALUE)
}

/// Reports the tag when the key carries it and the marker `marker`, whatever `unmet` says; adds
/// them only when every step it needs passed (`unmet` is `None`): an unusable key is never tagged.
pub async fn ensure(
    hsm: &dyn ManagedHsm,
    key: &KeyInfo,
    spec: &AzureRootKeySpec,
    marker: &str,
    unmet: Option<Kind>,
) -> Result<Step<KeyInfo>, Failure> {
    let domain_id = &spec.domain_id;
    let present = || Outcome::ok(Reason::TagPresent, format!("The key carries {domain_id}={DOMAIN_TAG_VALUE}."));
    let marked = key.tags.get(OWNER_TAG).is_some_and(|m| m == marker);
    if carries(key, domain_id) && marked {
        return Ok(Step::found(present(), key.clone()));
    }
    if let Some(need) = unmet {
        return Ok(Step::stopped(Outcome::waiting(need)));
    }
    if spec.suspend {
        return Ok(Step::stopped(Outcome::failed(
            Reason::Suspended,
            format!(
                "The tag {domain_id}={DOMAIN_TAG_VALUE} or the owner marker {OWNER_TAG} is missing; suspended, so not adding it."
            ),
        )));
    }
    // Every other tag is sent back unchanged: the update replaces the whole set.
    let mut tags = key.tags.clone();
    tags.insert(domain_id.clone(), DOMAIN_TAG_VALUE.to_owned());
    tags.insert(OWNER_TAG.to_owned(), marker.to_owned());
    let name = &spec.key.name;
    let updated = hsm.set_key_tags(name, &key.version, tags).await?;
    let mut step = Step::found(present(), updated);
    if !carries(key, domain_id) {
        let note = format!("Tagged key {name} version {} with {domain_id}={DOMAIN_TAG_VALUE}", key.version);
        step = step.changed(ChangeReason::TagAdded, note);
    }
    if !marked {
        let note =
            format!("Marked key {name} version {} as managed by this object ({OWNER_TAG}={marker})", key.version);
        step = step.changed(ChangeReason::OwnerMarked, note);
    }
    Ok(step)
}

/// Removes the domain's tag from the key's current version, keeping every other tag.
pub async fn remove(hsm: &dyn ManagedHsm, key_name: &str, domain_id: &str) -> Result<(), Failure> {
    if let Some(key) = hsm.key(key_name).await?.filter(|k| k.tags.contains_key(domain_id)) {
        let mut tags = key.tags;
        tags.remove(domain_id);
        hsm.set_key_tags(key_name, &key.version, tags).await?;
    }
    Ok(())
}
