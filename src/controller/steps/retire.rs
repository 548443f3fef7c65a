//! The key's versions as this object used them (`status.versions`), and the retirement of an older
//! version's Antimatter registration once a newer version took over. Retirement deletes only a
//! registration this object made (its description names the object's UID), only once it is not
//! the domain's active key and Antimatter has nothing left wrapped under other keys; the HSM key
//! version is never touched.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{activate, register};
use crate::{
    api::{AzureRootKey, AzureRootKeyStatus, KeyVersionStatus, VersionState},
    azure::keys::KeyInfo,
    controller::{errors::Failure, reasons::ChangeReason, step::Change},
    remotes::AntimatterDomain,
};

/// Versions kept in the status; the oldest retired ones go first.
const KEPT_VERSIONS: usize = 16;

/// What this run learnt of the current version's registration.
#[derive(Clone, Copy)]
pub enum Registration<'a> {
    /// Registered as this root key.
    Is(&'a str),
    /// Antimatter no longer knows it.
    Gone,
    /// Not looked at.
    Unknown,
}

/// The versions after this run saw `key` (the version in use) and its `registration`: a new
/// version becomes `Current` and the one before it `Retiring` (or `Retired` if it was never
/// registered). Newest first.
pub fn track(
    known: &AzureRootKeyStatus,
    key: Option<&KeyInfo>,
    registration: Registration<'_>,
    now: &Time,
) -> Vec<KeyVersionStatus> {
    let rek_id = match registration {
        Registration::Is(rek_id) => Some(rek_id),
        _ => None,
    };
    let mut versions = known.versions.clone();
    // A status from before versions were listed: its one version is the current one.
    if versions.is_empty()
        && let (Some(version), Some(key_url)) = (&known.key_version, &known.key_url)
    {
        versions.push(KeyVersionStatus {
            version: version.clone(),
            key_url: key_url.clone(),
            root_encryption_key_id: known.root_encryption_key_id.clone(),
            state: VersionState::Current,
            since: now.clone(),
        });
    }
    let Some(key) = key else { return versions };
    match versions.iter_mut().find(|v| v.state == VersionState::Current) {
        Some(current) if current.version.eq_ignore_ascii_case(&key.version) => {
            match registration {
                Registration::Is(rek_id) => current.root_encryption_key_id = Some(rek_id.to_owned()),
                Registration::Gone => current.root_encryption_key_id = None,
                Registration::Unknown => {}
            }
            return versions;
        }
        Some(current) => {
            current.state =
                if current.root_encryption_key_id.is_some() { VersionState::Retiring } else { VersionState::Retired };
            current.since = now.clone();
        }
        None => {}
    }
    versions.insert(
        0,
        KeyVersionStatus {
            version: key.version.clone(),
            key_url: key.kid.clone(),
            root_encryption_key_id: rek_id.map(str::to_owned),
            state: VersionState::Current,
            since: now.clone(),
        },
    );
    while versions.len() > KEPT_VERSIONS {
        match versions.iter().rposition(|v| matches!(v.state, VersionState::Retired | VersionState::Kept)) {
            Some(oldest) => versions.remove(oldest),
            None => break,
        };
    }
    versions
}

/// Whether any older version still has a registration to retire.
pub fn pending(versions: &[KeyVersionStatus]) -> bool {
    versions.iter().any(|v| v.state == VersionState::Retiring)
}

/// What a retirement pass did.
pub struct Retired {
    pub versions: Vec<KeyVersionStatus>,
    pub changes: Vec<Change>,
    /// Set while Antimatter is still re-wrapping: come back soon.
    pub retry_after: Option<Duration>,
}

/// Retires the `Retiring` versions' registrations that may go; the caller checked that the current
/// version pairs (and, with `activate`, is active).
pub async fn ensure(
    domain: &dyn AntimatterDomain,
    ark: &AzureRootKey,
    mut versions: Vec<KeyVersionStatus>,
    now: &Time,
) -> Result<Retired, Failure> {
    let mut changes = Vec::new();
    // Data keys still wrapped under a non-active key may be under one of these.
    if activate::rotate_while_more(domain, true).await?.0 {
        return Ok(Retired { versions, changes, retry_after: Some(activate::ROTATING_RECHECK) });
    }
    let registered = domain.root_keys().await?;
    let active = domain.active_key().await?;
    let current = versions.iter().find(|v| v.state == VersionState::Current).map(|v| v.version.clone());
    for version in versions.iter_mut().filter(|v| v.state == VersionState::Retiring) {
        let Some(rek_id) = version.root_encryption_key_id.clone() else { continue };
        let is_active = active.as_ref().is_some_and(|a| register::same_rek(&a.rek_id, &rek_id));
        let state = match registered.iter().find(|k| register::same_rek(&k.rek_id, &rek_id)) {
            None => VersionState::Retired,
            Some(_) if is_active => continue,
            Some(found) if !register::made_by(found, ark) => VersionState::Kept,
            Some(_) => {
                register::unregister(domain, &rek_id).await?;
                changes.push(Change {
                    reason: ChangeReason::Retired,
                    note: format!(
                        "Deleted registration {rek_id} of key version {} (superseded by {})",
                        version.version,
                        current.as_deref().unwrap_or("a newer version")
                    ),
                });
                VersionState::Retired
            }
        };
        version.state = state;
        version.since = now.clone();
    }
    Ok(Retired { versions, changes, retry_after: None })
}
