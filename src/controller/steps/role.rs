//! `RoleAssigned`: the principal holds "Managed HSM Crypto User" at `/keys/<key-name>` exactly
//! once; and its undo.

use uuid::Uuid;

use crate::controller::step::Step;
use crate::{
    api::AzureRootKey,
    azure::rbac::{
        CRYPTO_USER_ROLE, CRYPTO_USER_ROLE_DEFINITION, RoleAssignment, RoleAssignmentProperties, is_crypto_user,
    },
    cloud::HsmEndpoint,
    controller::{
        conditions::Outcome,
        errors::Failure,
        reasons::{ChangeReason, Reason},
    },
    remotes::ManagedHsm,
};

/// Namespace of the deterministic role-assignment names (UUIDv5).
const ASSIGNMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c7e_2a94_4d1b_9e08_5f7a_c3d2_e1b0);

/// The RBAC scope of one key.
pub(super) fn key_scope(key_name: &str) -> String {
    format!("/keys/{key_name}")
}

/// The deterministic assignment name: the same for retries and replicas of this cluster, different
/// for other clusters and other objects. Derived from the object's UID, so an assignment under this
/// name can only have been made by this object: that is how `Revoke` tells its own from one it
/// adopted, even after a restart between the PUT and the status write.
fn assignment_name(cluster_id: &str, hsm: &HsmEndpoint, scope: &str, principal: &str, object_uid: &str) -> String {
    let seed = format!("{cluster_id}|{}|{scope}|{CRYPTO_USER_ROLE_DEFINITION}|{principal}|{object_uid}", hsm.url);
    Uuid::new_v5(&ASSIGNMENT_NAMESPACE, seed.as_bytes()).to_string()
}

/// A role assignment the principal holds, and whether this object created it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub name: String,
    pub created: bool,
}

pub async fn ensure(
    hsm: &dyn ManagedHsm,
    cluster_id: &str,
    endpoint: &HsmEndpoint,
    ark: &AzureRootKey,
    principal: &str,
    recorded: Option<&str>,
) -> Result<Step<Held>, Failure> {
    let spec = &ark.spec;
    let scope = key_scope(&spec.key.name);
    let ours = assignment_name(cluster_id, endpoint, &scope, principal, &object_uid(ark));
    let held = |name: String| Held { created: name == ours, name };
    // `atScope()` lists the assignments above the key too (at `/`): only one at the key's own scope
    // is the key's. GUIDs compare in any case.
    let matches = |p: &RoleAssignmentProperties| {
        p.principal_id.eq_ignore_ascii_case(principal)
            && is_crypto_user(&p.role_definition_id)
            && p.scope.as_deref().is_none_or(|s| s.trim_end_matches('/').eq_ignore_ascii_case(&scope))
    };
    let holds = || Outcome::ok(Reason::RoleAssigned, format!("{principal} holds {CRYPTO_USER_ROLE} at {scope}."));

    // The assignment recorded in status (ours or one made by hand) is checked with one read. With none
    // recorded, the PUT below is the check: under our deterministic name it is idempotent.
    let name = recorded.unwrap_or(&ours);
    let read = if recorded.is_some() || spec.suspend { hsm.assignment(&scope, name).await? } else { None };
    if let Some(a) = read.filter(|a| matches(&a.properties)) {
        return Ok(Step::found(holds(), held(a.name)));
    }
    if spec.suspend {
        return Ok(Step::stopped(Outcome::failed(
            Reason::Suspended,
            format!("{principal} does not hold {CRYPTO_USER_ROLE} at {scope}; suspended, so not assigning it."),
        )));
    }
    let properties = RoleAssignmentProperties {
        scope: None,
        role_definition_id: CRYPTO_USER_ROLE_DEFINITION.to_owned(),
        principal_id: principal.to_owned(),
    };
    match hsm.put_assignment(&scope, &ours, &properties).await {
        Ok(a) => {
            let note = format!("Assigned {CRYPTO_USER_ROLE} at {scope} to {principal} ({})", a.name);
            Ok(Step::found(holds(), held(a.name)).changed(ChangeReason::RoleAssigned, note))
        }
        // Someone already assigned the same role at the same scope under another name: adopt it.
        Err(e) if e.code() == Some("MatchingRoleAssignmentExists") || e.status() == Some(409) => {
            let existing = hsm.assignments_at(&scope).await?;
            let found = existing.into_iter().find(|a| matches(&a.properties)).ok_or(e)?;
            Ok(Step::found(holds(), held(found.name)))
        }
        Err(e) => Err(e.into()),
    }
}

/// The role assignments at the key's scope that this object created (whatever the principal).
pub async fn created_by(
    hsm: &dyn ManagedHsm,
    cluster_id: &str,
    endpoint: &HsmEndpoint,
    ark: &AzureRootKey,
) -> Result<Vec<RoleAssignment>, Failure> {
    let scope = key_scope(&ark.spec.key.name);
    let uid = object_uid(ark);
    let mut ours = hsm.assignments_at(&scope).await?;
    ours.retain(|a| a.name == assignment_name(cluster_id, endpoint, &scope, &a.properties.principal_id, &uid));
    Ok(ours)
}

/// Deletes the assignment `name` at the key's scope.
pub async fn unassign(hsm: &dyn ManagedHsm, key_name: &str, name: &str) -> Result<(), Failure> {
    Ok(hsm.delete_assignment(&key_scope(key_name), name).await?)
}

/// The object's UID (always set by the API server).
pub(super) fn object_uid(ark: &AzureRootKey) -> String {
    ark.metadata.uid.clone().unwrap_or_default()
}
