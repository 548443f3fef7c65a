//! `TagApplied`: the key version carries `<domain-id>=allow` and this object's owner marker, every
//! other tag kept; and its undo.

use super::role::object_uid;
use crate::controller::{step::Step, table::Kind};
use crate::{
    api::AzureRootKey,
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

/// The tag written together with the domain tag, naming the object (UID) that added it: the proof
/// `Revoke` reads back, so a tag someone else added (or that was there before) is never removed.
fn added_by_tag(domain_id: &str) -> String {
    format!("addedBy.{domain_id}")
}

/// The domain tag and its marker, as this object writes them.
pub fn ours(domain_id: &str, object_uid: &str) -> [(String, String); 2] {
    [(domain_id.to_owned(), DOMAIN_TAG_VALUE.to_owned()), (added_by_tag(domain_id), object_uid.to_owned())]
}

/// Whether this object added the domain tag to this key version.
pub fn added_by(key: &KeyInfo, domain_id: &str, object_uid: &str) -> bool {
    carries(key, domain_id) && key.tags.get(&added_by_tag(domain_id)).is_some_and(|v| v == object_uid)
}

/// Other Antimatter domains allowed on this key (`dm-…=allow` tags besides `domain_id`): they reach
/// the key through the same principal, so its role assignment is still needed.
pub fn other_domains<'a>(key: &'a KeyInfo, domain_id: &str) -> Vec<&'a str> {
    key.tags
        .iter()
        .filter(|(name, value)| name.starts_with("dm-") && *name != domain_id && *value == DOMAIN_TAG_VALUE)
        .map(|(name, _)| name.as_str())
        .collect()
}

/// Reports the tag when the key carries it and the owner marker `marker`, whatever `unmet` says;
/// adds them only when every step it needs passed (`unmet` is `None`): an unusable key is never
/// tagged. A domain tag this object adds is written with its `addedBy` marker.
pub async fn ensure(
    hsm: &dyn ManagedHsm,
    key: &KeyInfo,
    ark: &AzureRootKey,
    marker: &str,
    unmet: Option<Kind>,
) -> Result<Step<KeyInfo>, Failure> {
    let spec = &ark.spec;
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
    let adding = !carries(key, domain_id);
    let mut tags = key.tags.clone();
    if adding {
        tags.extend(ours(domain_id, &object_uid(ark)));
    }
    tags.insert(OWNER_TAG.to_owned(), marker.to_owned());
    let name = &spec.key.name;
    let updated = hsm.set_key_tags(name, &key.version, tags).await?;
    let mut step = Step::found(present(), updated);
    if adding {
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

/// Removes the domain tag and its marker from `key` (the current version), keeping every other tag.
/// Only for a tag this object added ([`added_by`]).
pub async fn remove(hsm: &dyn ManagedHsm, key_name: &str, key: &KeyInfo, domain_id: &str) -> Result<(), Failure> {
    let mut tags = key.tags.clone();
    tags.remove(domain_id);
    tags.remove(&added_by_tag(domain_id));
    hsm.set_key_tags(key_name, &key.version, tags).await?;
    Ok(())
}
