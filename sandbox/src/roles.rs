//! Managed HSM local RBAC: built-in role definitions, scopes and authorisation. Imports nothing of
//! the crate.

/// A built-in role definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleDef {
    /// Role name, e.g. `Managed HSM Crypto User`.
    pub name: &'static str,
    /// Role definition GUID.
    pub id: &'static str,
    /// Control-plane actions granted (built-in roles list them with an empty description).
    pub actions: &'static [&'static str],
    /// Data actions granted.
    pub data_actions: &'static [&'static str],
}

/// Prefix of role definition IDs as Managed HSM reports them.
pub const ROLE_DEF_PREFIX: &str = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/";

/// Managed HSM Crypto User.
pub const CRYPTO_USER: &str = "21dbd100-6940-42c2-9190-5d6cb909625b";
/// Managed HSM Crypto Officer.
pub const CRYPTO_OFFICER: &str = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778";
/// Managed HSM Policy Administrator.
pub const POLICY_ADMIN: &str = "4bd23610-cdcf-4971-bdee-bdc562cc28e4";
/// Managed HSM Administrator.
pub const ADMINISTRATOR: &str = "a290e904-7015-4bba-90c8-60543313cdb4";

/// Data actions used by the sandbox.
pub mod action {
    /// Read key metadata.
    pub const KEY_READ: &str = "Microsoft.KeyVault/managedHsm/keys/read/action";
    /// Update a key.
    pub const KEY_WRITE: &str = "Microsoft.KeyVault/managedHsm/keys/write/action";
    /// Create a key.
    pub const KEY_CREATE: &str = "Microsoft.KeyVault/managedHsm/keys/create";
    /// Delete a key.
    pub const KEY_DELETE: &str = "Microsoft.KeyVault/managedHsm/keys/delete";
    /// Read deleted keys.
    pub const DELETED_READ: &str = "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action";
    /// Rotate a key (make a new version), and write its rotation policy.
    pub const KEY_ROTATE: &str = "Microsoft.KeyVault/managedHsm/keys/rotate/action";
    /// Recover a deleted key.
    pub const DELETED_RECOVER: &str = "Microsoft.KeyVault/managedHsm/keys/deletedKeys/recover/action";
    /// Purge a deleted key.
    pub const DELETED_PURGE: &str = "Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete";
    /// Encrypt.
    pub const ENCRYPT: &str = "Microsoft.KeyVault/managedHsm/keys/encrypt/action";
    /// Decrypt.
    pub const DECRYPT: &str = "Microsoft.KeyVault/managedHsm/keys/decrypt/action";
    /// Wrap.
    pub const WRAP: &str = "Microsoft.KeyVault/managedHsm/keys/wrap/action";
    /// Unwrap.
    pub const UNWRAP: &str = "Microsoft.KeyVault/managedHsm/keys/unwrap/action";
    /// Read role assignments.
    pub const RA_READ: &str = "Microsoft.KeyVault/managedHsm/roleAssignments/read/action";
    /// Write role assignments.
    pub const RA_WRITE: &str = "Microsoft.KeyVault/managedHsm/roleAssignments/write/action";
    /// Delete role assignments.
    pub const RA_DELETE: &str = "Microsoft.KeyVault/managedHsm/roleAssignments/delete/action";
    /// Read role definitions.
    pub const RD_READ: &str = "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action";
}

/// Find a built-in role by name (case-insensitive), GUID or full role definition ID.
pub fn find(s: &str) -> Option<&'static RoleDef> {
    let guid = s.rsplit('/').next().unwrap_or(s);
    BUILT_IN.iter().find(|r| r.id.eq_ignore_ascii_case(guid) || r.name.eq_ignore_ascii_case(s))
}

/// `/`, `/keys` or `/keys/<name>` (Managed HSM local RBAC scopes).
pub fn valid_scope(scope: &str) -> bool {
    if scope == "/" || scope == "/keys" {
        return true;
    }
    match scope.strip_prefix("/keys/") {
        Some(name) => valid_key_name(name),
        None => false,
    }
}

/// Key names: 1-127 characters `[0-9a-zA-Z-]`.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 127 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Does an assignment at `assignment_scope` cover `resource` (e.g. `/keys/k1`)?
pub fn scope_covers(assignment_scope: &str, resource: &str) -> bool {
    assignment_scope == "/"
        || resource == assignment_scope
        || resource.strip_prefix(assignment_scope).is_some_and(|rest| rest.starts_with('/'))
}

/// Does role `role_id` grant `data_action`?
pub fn grants(role_id: &str, data_action: &str) -> bool {
    find(role_id).is_some_and(|r| r.data_actions.contains(&data_action))
}

/// Built-in roles as a real Managed HSM lists them (`GET /providers/Microsoft.Authorization/roleDefinitions`),
/// in its order, with its names, IDs, empty descriptions and permissions: the SDK test recording
/// azure-sdk-for-python `sdk/keyvault/azure-keyvault-administration/tests/recordings/test_access_control.pyTestAccessControltest_role_definitions[7.3].json`.
/// The recording's sanitizer rewrote the word "backup" as "blob_container_name"; it is restored here.
pub const BUILT_IN: &[RoleDef] = &[
    RoleDef {
        name: "Managed HSM Backup User",
        id: "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8",
        actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/backup/start/action",
            "Microsoft.KeyVault/managedHsm/backup/status/action",
            "Microsoft.KeyVault/managedHsm/keys/backup/action",
        ],
    },
    RoleDef {
        name: "Managed HSM Crypto Service Encryption User",
        id: "33413926-3206-4cdd-b39a-83574fe37a17",
        actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/keys/read/action",
            "Microsoft.KeyVault/managedHsm/keys/wrap/action",
            "Microsoft.KeyVault/managedHsm/keys/unwrap/action",
        ],
    },
    RoleDef {
        name: "Managed HSM Crypto Service Release User",
        id: "21dbd100-6940-42c2-9190-5d6cb909625c",
        actions: &[],
        data_actions: &["Microsoft.KeyVault/managedHsm/keys/release/action"],
    },
    RoleDef {
        name: "Managed HSM Crypto Auditor",
        id: "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3",
        actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/roleAssignments/read/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action",
            "Microsoft.KeyVault/managedHsm/keys/read/action",
            "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action",
        ],
    },
    RoleDef {
        name: "Managed HSM Policy Administrator",
        id: "4bd23610-cdcf-4971-bdee-bdc562cc28e4",
        actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/write/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/delete/action",
            "Microsoft.KeyVault/managedHsm/roleAssignments/read/action",
            "Microsoft.KeyVault/managedHsm/roleAssignments/write/action",
            "Microsoft.KeyVault/managedHsm/roleAssignments/delete/action",
        ],
    },
    RoleDef {
        name: "Managed HSM ARM User",
        id: "770fd66c-6266-4643-9d4e-b616870898d5",
        // Control-plane actions only (ARM creating keys for services): no data action.
        actions: &[
            "Microsoft.KeyVault/managedHsm/keys/createIfNotExists",
            "Microsoft.KeyVault/managedHsm/keys/read/action",
        ],
        data_actions: &[],
    },
    RoleDef {
        name: "Managed HSM Crypto User",
        id: "21dbd100-6940-42c2-9190-5d6cb909625b",
        actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action",
            "Microsoft.KeyVault/managedHsm/roleAssignments/read/action",
            "Microsoft.KeyVault/managedHsm/keys/read/action",
            "Microsoft.KeyVault/managedHsm/keys/write/action",
            "Microsoft.KeyVault/managedHsm/keys/delete",
            "Microsoft.KeyVault/managedHsm/keys/create",
            "Microsoft.KeyVault/managedHsm/keys/rotate/action",
            "Microsoft.KeyVault/managedHsm/keys/import/action",
            "Microsoft.KeyVault/managedHsm/keys/release/action",
            "Microsoft.KeyVault/managedHsm/keys/backup/action",
            "Microsoft.KeyVault/managedHsm/keys/restore/action",
            "Microsoft.KeyVault/managedHsm/keys/encrypt/action",
            "Microsoft.KeyVault/managedHsm/keys/decrypt/action",
            "Microsoft.KeyVault/managedHsm/keys/wrap/action",
            "Microsoft.KeyVault/managedHsm/keys/unwrap/action",
            "Microsoft.KeyVault/managedHsm/keys/sign/action",
            "Microsoft.KeyVault/managedHsm/keys/verify/action",
            "Microsoft.KeyVault/managedHsm/keys/derive/action",
            "Microsoft.KeyVault/managedHsm/rng/action",
        ],
    },
    RoleDef {
        name: "Managed HSM Crypto Officer",
        id: "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
        actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/roleAssignments/delete/action",
            "Microsoft.KeyVault/managedHsm/roleAssignments/read/action",
            "Microsoft.KeyVault/managedHsm/roleAssignments/write/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/write/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/delete/action",
            "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action",
            "Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete",
            "Microsoft.KeyVault/managedHsm/keys/deletedKeys/recover/action",
            "Microsoft.KeyVault/managedHsm/keys/export/action",
        ],
    },
    RoleDef {
        name: "Managed HSM Administrator",
        id: "a290e904-7015-4bba-90c8-60543313cdb4",
        actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/managedHsm/roleAssignments/delete/action",
            "Microsoft.KeyVault/managedHsm/roleAssignments/read/action",
            "Microsoft.KeyVault/managedHsm/roleAssignments/write/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/write/action",
            "Microsoft.KeyVault/managedHsm/roleDefinitions/delete/action",
            "Microsoft.KeyVault/managedHsm/securitydomain/download/action",
            "Microsoft.KeyVault/managedHsm/securitydomain/download/read",
            "Microsoft.KeyVault/managedHsm/securitydomain/upload/action",
            "Microsoft.KeyVault/managedHsm/securitydomain/upload/read",
            "Microsoft.KeyVault/managedHsm/securitydomain/transferkey/read",
            "Microsoft.KeyVault/managedHsm/backup/start/action",
            "Microsoft.KeyVault/managedHsm/restore/start/action",
            "Microsoft.KeyVault/managedHsm/backup/status/action",
            "Microsoft.KeyVault/managedHsm/restore/status/action",
        ],
    },
];
