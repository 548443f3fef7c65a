//! `Registered`: the versioned key URL is registered with Antimatter; and its undo.

use super::role::object_uid;
use crate::controller::step::Step;
use crate::{
    antimatter::RootKey,
    api::{AzureRootKey, AzureRootKeyStatus},
    azure::keys::KeyInfo,
    controller::{
        conditions::Outcome,
        errors::Failure,
        reasons::{ChangeReason, Reason},
    },
    remotes::AntimatterDomain,
};

/// A registration of the key URL, and whether this object made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub rek_id: String,
    pub created: bool,
}

fn registered(rek_id: String, created: bool) -> Step<Registration> {
    let outcome = Outcome::ok(Reason::Registered, format!("Registered with Antimatter as {rek_id}."));
    Step::found(outcome, Registration { rek_id, created })
}

/// The description this object registers with: it names the object's UID, the proof `Revoke`
/// reads back so that a registration made by hand or by another object is never deleted.
fn description(ark: &AzureRootKey) -> String {
    format!(
        "AzureRootKey {}/{} (uid {})",
        ark.metadata.namespace.as_deref().unwrap_or_default(),
        ark.metadata.name.as_deref().unwrap_or_default(),
        object_uid(ark)
    )
}

/// Whether this object made the registration `key`.
pub fn made_by(key: &RootKey, ark: &AzureRootKey) -> bool {
    key.description.ends_with(&format!("(uid {})", object_uid(ark)))
}

pub async fn ensure(
    domain: &dyn AntimatterDomain,
    ark: &AzureRootKey,
    known: &AzureRootKeyStatus,
    key: &KeyInfo,
) -> Result<Step<Registration>, Failure> {
    // Registered for this exact key URL before: trust the status; the pairing check confirms it.
    if let (Some(id), Some(url)) = (&known.root_encryption_key_id, &known.key_url)
        && *url == key.kid
    {
        let created = known.created.as_ref().and_then(|c| c.root_encryption_key_id.as_ref()) == Some(id);
        return Ok(registered(id.clone(), created));
    }
    if ark.spec.suspend {
        return Ok(match find(domain, &key.kid).await? {
            Some(found) => registered(found.rek_id.clone(), made_by(&found, ark)),
            None => Step::stopped(Outcome::failed(
                Reason::Suspended,
                "The key URL is not registered with Antimatter; suspended, so not registering it.",
            )),
        });
    }
    // Add first; Antimatter refuses a key URL it already has (409), and only then is the (domain-wide)
    // list read to find it, e.g. after a restart between registering and recording (then the
    // description tells whether it was this object).
    match domain.register(&description(ark), &ark.spec.tenant_id, &key.kid).await {
        Ok(id) => {
            let note = format!("Registered key URL {} with Antimatter as {id}", key.kid);
            Ok(registered(id, true).changed(ChangeReason::Registered, note))
        }
        Err(e) if e.status() == Some(409) => {
            let found = find(domain, &key.kid).await?.ok_or(e)?;
            Ok(registered(found.rek_id.clone(), made_by(&found, ark)))
        }
        Err(e) => Err(e.into()),
    }
}

/// The registration Antimatter has for a key URL.
async fn find(domain: &dyn AntimatterDomain, key_url: &str) -> Result<Option<RootKey>, Failure> {
    Ok(domain.root_keys().await?.into_iter().find(|k| k.resource_path == key_url))
}

/// Deletes a registration that is not the active key (the caller checked); an absent one counts
/// as deleted.
pub async fn unregister(domain: &dyn AntimatterDomain, rek_id: &str) -> Result<(), Failure> {
    match domain.unregister(rek_id).await {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Root key IDs may carry a `dm-…::` or `name::` prefix.
pub(super) fn same_rek(a: &str, b: &str) -> bool {
    let bare = |s: &str| s.rsplit("::").next().unwrap_or(s).to_ascii_lowercase();
    bare(a) == bare(b)
}
