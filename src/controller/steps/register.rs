//! `Registered`: the versioned key URL is registered with Antimatter; and its undo.

use crate::controller::step::Step;
use crate::{
    api::{AzureRootKey, AzureRootKeyStatus},
    azure::keys::KeyInfo,
    controller::{
        conditions::Outcome,
        errors::Failure,
        reasons::{ChangeReason, Reason},
    },
    remotes::AntimatterDomain,
};

fn registered(rek_id: String) -> Step<String> {
    Step::found(Outcome::ok(Reason::Registered, format!("Registered with Antimatter as {rek_id}.")), rek_id)
}

pub async fn ensure(
    domain: &dyn AntimatterDomain,
    ark: &AzureRootKey,
    known: &AzureRootKeyStatus,
    key: &KeyInfo,
) -> Result<Step<String>, Failure> {
    // Registered for this exact key URL before: trust the status; the pairing check confirms it.
    if let (Some(id), Some(url)) = (&known.root_encryption_key_id, &known.key_url)
        && *url == key.kid
    {
        return Ok(registered(id.clone()));
    }
    if ark.spec.suspend {
        return Ok(match find(domain, &key.kid).await? {
            Some(id) => registered(id),
            None => Step::stopped(Outcome::failed(
                Reason::Suspended,
                "The key URL is not registered with Antimatter; suspended, so not registering it.",
            )),
        });
    }
    let description = format!(
        "AzureRootKey {}/{}",
        ark.metadata.namespace.as_deref().unwrap_or_default(),
        ark.metadata.name.as_deref().unwrap_or_default()
    );
    // Add first; Antimatter refuses a key URL it already has (409), and only then is the (domain-wide)
    // list read to find it, e.g. after a restart between registering and recording.
    match domain.register(&description, &ark.spec.tenant_id, &key.kid).await {
        Ok(id) => {
            let note = format!("Registered key URL {} with Antimatter as {id}", key.kid);
            Ok(registered(id).changed(ChangeReason::Registered, note))
        }
        Err(e) if e.status() == Some(409) => Ok(registered(find(domain, &key.kid).await?.ok_or(e)?)),
        Err(e) => Err(e.into()),
    }
}

/// The root key ID Antimatter has for a key URL.
async fn find(domain: &dyn AntimatterDomain, key_url: &str) -> Result<Option<String>, Failure> {
    Ok(domain.root_keys().await?.into_iter().find(|k| k.resource_path == key_url).map(|k| k.rek_id))
}

/// Deletes the registration, refusing while it is the domain's active key: the active key must
/// not lose its access under Antimatter's feet.
pub async fn unregister(domain: &dyn AntimatterDomain, rek_id: &str) -> Result<(), Failure> {
    if domain.active_key().await?.is_some_and(|a| same_rek(&a.rek_id, rek_id)) {
        return Err(Outcome::failed(
            Reason::KeyIsActive,
            format!("Root key {rek_id} is the domain's active key; make another key active in Antimatter first."),
        )
        .into());
    }
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
