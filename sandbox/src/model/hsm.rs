//! A Managed HSM: its keys, soft-deleted keys and local RBAC role assignments, and the RBAC
//! rules (who may do what, which assignments are accepted).

use super::keys::{DeletedKey, Key};
use crate::{roles, util};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A local RBAC role assignment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// Assignment name (GUID).
    pub name: String,
    /// `/`, `/keys` or `/keys/<name>`.
    pub scope: String,
    /// Role definition GUID.
    pub role_definition: String,
    /// Principal object ID.
    pub principal_id: String,
    /// When (Unix seconds, sandbox clock) it starts to authorize: RBAC changes propagate.
    #[serde(default)]
    pub effective_at: i64,
}

/// A Managed HSM.
#[derive(Debug, Clone)]
pub(crate) struct Hsm {
    pub name: String,
    pub tenant: String,
    pub location: String,
    pub keys: BTreeMap<String, Key>,
    pub deleted: BTreeMap<String, DeletedKey>,
    pub assignments: BTreeMap<String, RoleAssignment>,
}

/// Why a role assignment was not made.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AssignmentError {
    /// The HSM does not exist.
    NoSuchHsm,
    /// The assignment name is not a GUID.
    InvalidName(String),
    /// Not `/`, `/keys` or `/keys/<name>`.
    InvalidScope(String),
    /// Not a built-in role.
    UnknownRole(String),
    /// The principal ID is not a GUID.
    InvalidPrincipal(String),
    /// The name is taken by a different assignment (assignments are immutable).
    UpdateNotPermitted,
    /// The same role, principal and scope are already assigned under this name.
    Duplicate(String),
}

impl Hsm {
    /// Does `principal` hold a role granting `action` on `resource` that has taken effect by `now`?
    pub(crate) fn permits(&self, principal: &str, action: &str, resource: &str, now: i64) -> bool {
        self.assignments.values().any(|a| {
            a.effective_at <= now
                && a.principal_id.eq_ignore_ascii_case(principal)
                && roles::scope_covers(&a.scope, resource)
                && roles::grants(&a.role_definition, action)
        })
    }

    /// Make a role assignment that authorizes from `effective_at` on; making the same one again
    /// under the same name is a no-op. The principal is not looked up: the data-plane API takes any
    /// GUID (`principalId` is a plain string in the 7.5 spec, rbac.json, with no "principal not
    /// found" error, unlike ARM's role assignments), so a principal not replicated yet is accepted.
    pub(crate) fn assign(
        &mut self,
        scope: &str,
        name: &str,
        role: &str,
        principal: &str,
        effective_at: i64,
    ) -> Result<RoleAssignment, AssignmentError> {
        if !util::is_guid(name) {
            return Err(AssignmentError::InvalidName(name.to_string()));
        }
        if !roles::valid_scope(scope) {
            return Err(AssignmentError::InvalidScope(scope.to_string()));
        }
        let Some(def) = roles::find(role) else {
            return Err(AssignmentError::UnknownRole(role.to_string()));
        };
        if !util::is_guid(principal) {
            return Err(AssignmentError::InvalidPrincipal(principal.to_string()));
        }
        let principal = principal.to_ascii_lowercase();
        let name = name.to_ascii_lowercase();
        if let Some(existing) = self.assignments.get(&name) {
            if existing.scope == scope && existing.role_definition == def.id && existing.principal_id == principal {
                return Ok(existing.clone());
            }
            return Err(AssignmentError::UpdateNotPermitted);
        }
        if let Some(dup) = self
            .assignments
            .values()
            .find(|a| a.scope == scope && a.role_definition == def.id && a.principal_id == principal)
        {
            return Err(AssignmentError::Duplicate(dup.name.clone()));
        }
        let a = RoleAssignment {
            name: name.clone(),
            scope: scope.to_string(),
            role_definition: def.id.to_string(),
            principal_id: principal,
            effective_at,
        };
        self.assignments.insert(name, a.clone());
        Ok(a)
    }
}
