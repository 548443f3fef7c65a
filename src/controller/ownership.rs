//! Which AzureRootKey owns an (HSM, key). The owner marks the key with the tag
//! [`OWNER_TAG`]` = <cluster-id>/<namespace>/<name>`, which any cluster's operator can read; a
//! second object naming a marked key is refused with `KeyClaimed` and changes nothing. A marker of
//! this cluster whose object no longer exists is stale and may be taken; one of another cluster only
//! with `spec.key.adopt`; an unmarked existing key only where the tenancy policy allows claiming.

use crate::{
    azure::keys::KeyInfo,
    controller::{conditions::Outcome, reasons::Reason},
    policy::Grant,
    remotes::Owners,
};

/// The tag that names a key's owning object.
pub const OWNER_TAG: &str = "antimatter-rootkey-owner";
/// Longest tag value Key Vault and Managed HSM store.
const MAX_TAG_VALUE: usize = 256;

/// One AzureRootKey, as written in the marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
}

impl Owner {
    pub fn marker(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.namespace, self.name)
    }

    /// Namespaces and names hold no `/`, so the cluster ID is everything before the last two.
    fn parse(marker: &str) -> Option<Owner> {
        let mut parts = marker.rsplitn(3, '/');
        let (name, namespace, cluster) = (parts.next()?, parts.next()?, parts.next()?);
        (!name.is_empty() && !namespace.is_empty() && !cluster.is_empty()).then(|| Owner {
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// What lets an object take a key it does not hold the marker of.
#[derive(Clone, Copy, Debug, Default)]
pub struct Takeover {
    /// `spec.key.adopt`: take it from another cluster or an unreadable marker.
    pub adopt: bool,
    /// The object used the key before: a new version that lacks the marker is still its own.
    pub held_before: bool,
}

/// May `me` use `key`? `Ok` when it holds the marker or may take it (the tag step writes it).
pub async fn claim(
    key: &KeyInfo,
    key_name: &str,
    me: &Owner,
    takeover: Takeover,
    grant: &Grant,
    owners: &dyn Owners,
) -> Result<(), Outcome> {
    let adopt = takeover.adopt;
    let mine = me.marker();
    if mine.len() > MAX_TAG_VALUE {
        return Err(Outcome::failed(
            Reason::InvalidSpec,
            format!(
                "The owner marker {OWNER_TAG}={mine} is longer than a tag value may be ({MAX_TAG_VALUE}); use a shorter object name."
            ),
        ));
    }
    let Some(marker) = key.tags.get(OWNER_TAG) else {
        return match grant.claim_existing_keys || takeover.held_before {
            true => Ok(()),
            false => Err(Outcome::failed(
                Reason::PolicyDenied,
                format!(
                    "Key {key_name} exists and no object owns it, but the tenancy policy does not let this namespace claim existing keys (claimExistingKeys: false). Nothing was changed."
                ),
            )),
        };
    };
    if *marker == mine {
        return Ok(());
    }
    match Owner::parse(marker) {
        Some(owner) if owner.cluster == me.cluster => {
            if owners.exists(&owner.namespace, &owner.name).await {
                Err(Outcome::failed(
                    Reason::KeyClaimed,
                    format!(
                        "Key {key_name} belongs to AzureRootKey {}/{}: one object hands a key to Antimatter. Nothing was changed; use another key, or delete that object first.",
                        owner.namespace, owner.name
                    ),
                ))
            } else {
                // Its object was deleted (a Retain deletion leaves the marker): the key is free.
                Ok(())
            }
        }
        _ if adopt => Ok(()),
        Some(owner) => Err(Outcome::failed(
            Reason::KeyClaimed,
            format!(
                "Key {key_name} is managed by AzureRootKey {}/{} of another cluster ({}). Nothing was changed; set spec.key.adopt: true only once that cluster no longer manages it.",
                owner.namespace, owner.name, owner.cluster
            ),
        )),
        None => Err(Outcome::failed(
            Reason::KeyClaimed,
            format!(
                "Key {key_name} carries an owner marker this operator cannot read ({OWNER_TAG}). Nothing was changed; set spec.key.adopt: true to take the key over."
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_the_cluster_may_hold_slashes() {
        let me = Owner { cluster: "a/b".into(), namespace: "team-a".into(), name: "root".into() };
        assert_eq!(Owner::parse(&me.marker()), Some(me));
        assert_eq!(Owner::parse("nothing"), None);
        assert_eq!(Owner::parse("/ns/name"), None);
    }
}
