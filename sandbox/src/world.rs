//! The world file: the identities, HSMs, keys and Antimatter domains the sandbox starts with.
//!
//! Every type is a plain serde struct, so a world can be written in YAML
//! ([`World::from_yaml`]) or built in Rust code. Imports nothing of the crate.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything the sandbox is seeded with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// Global settings (token lifetimes, rate limits, latency).
    #[serde(default)]
    pub settings: WorldSettings,
    /// Entra ID directories.
    #[serde(default)]
    pub tenants: Vec<TenantSpec>,
    /// App registrations (each gets a service principal in its home tenant).
    #[serde(default)]
    pub applications: Vec<ApplicationSpec>,
    /// Additional service principals (e.g. a multi-tenant app consented in another tenant).
    #[serde(default)]
    pub service_principals: Vec<ServicePrincipalSpec>,
    /// Managed HSMs.
    #[serde(default)]
    pub hsms: Vec<HsmSpec>,
    /// The Antimatter side: its own Azure application and the domains.
    #[serde(default)]
    pub antimatter: Option<AntimatterSpec>,
}

/// Global settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorldSettings {
    /// Lifetime of Entra access tokens (`expires_in`), seconds. Azure: 3599 (60–90 min in practice).
    pub token_lifetime_secs: i64,
    /// Default lifetime of Antimatter domain JWTs, seconds.
    pub antimatter_token_lifetime_secs: i64,
    /// Per-HSM token-bucket rate limits mirroring Azure's documented limits. Off by default.
    pub rate_limits: bool,
    /// Fixed latency added to every request, milliseconds.
    pub latency_ms: u64,
    /// How many `rotate` calls answer `has_more: true` after the active key changes.
    pub rotate_batches: u32,
    /// Seconds (sandbox clock) before a new role assignment authorizes anything.
    pub rbac_propagation_secs: u64,
    /// Seconds (sandbox clock) before a new service principal can get tokens.
    pub principal_replication_secs: u64,
    /// Items per page of HSM lists (Managed HSM: 25, the most `maxresults` allows; tests set a
    /// small one so clients must follow `nextLink`).
    pub page_size: usize,
}

impl Default for WorldSettings {
    fn default() -> Self {
        WorldSettings {
            token_lifetime_secs: 3599,
            antimatter_token_lifetime_secs: 3600,
            rate_limits: false,
            latency_ms: 0,
            rotate_batches: 2,
            rbac_propagation_secs: 0,
            principal_replication_secs: 0,
            page_size: 25,
        }
    }
}

/// An Entra ID directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Directory (tenant) ID, a GUID.
    pub id: String,
    /// Display name (informational); also accepted as `<name>.onmicrosoft.com` in token URLs.
    #[serde(default)]
    pub name: String,
}

/// An app registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSpec {
    /// Application (client) ID, a GUID.
    pub app_id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The tenant the app is registered in.
    pub home_tenant: String,
    /// `AzureADMultipleOrgs`: may get a service principal in other tenants.
    #[serde(default)]
    pub multi_tenant: bool,
    /// Client secrets (values, not IDs).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Microsoft Graph application permissions granted in the home tenant
    /// (e.g. `Application.ReadWrite.All`); they appear in Graph tokens' `roles`.
    #[serde(default)]
    pub graph_roles: Vec<String>,
    /// Object ID of the home-tenant service principal (random when absent).
    #[serde(default)]
    pub service_principal_id: Option<String>,
    /// Federated identity credentials (workload identity).
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredentialSpec>,
}

/// A federated identity credential on an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredentialSpec {
    /// Credential name (informational).
    #[serde(default)]
    pub name: String,
    /// Expected `iss` of the assertion (the cluster's OIDC issuer URL).
    pub issuer: String,
    /// Expected `sub` (`system:serviceaccount:<ns>:<sa>`).
    pub subject: String,
    /// Accepted audiences; default `["api://AzureADTokenExchange"]`.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

fn default_audiences() -> Vec<String> {
    vec!["api://AzureADTokenExchange".to_string()]
}

/// A service principal of an app in some tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServicePrincipalSpec {
    /// Tenant that holds the service principal.
    pub tenant: String,
    /// The application it instantiates.
    pub app_id: String,
    /// Object ID (random when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Graph application permissions granted to it in that tenant.
    #[serde(default)]
    pub graph_roles: Vec<String>,
}

/// A Managed HSM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HsmSpec {
    /// HSM name: the first DNS label of its URL.
    pub name: String,
    /// The tenant the HSM trusts (tokens must come from it).
    pub tenant: String,
    /// Local RBAC role assignments present at start (e.g. the admins at `/`).
    #[serde(default)]
    pub role_assignments: Vec<RoleAssignmentSpec>,
    /// Keys present at start.
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    /// Location reported in error messages.
    #[serde(default = "default_location")]
    pub location: String,
}

fn default_location() -> String {
    "sandbox".to_string()
}

/// A role assignment to seed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignmentSpec {
    /// Role name (`Managed HSM Crypto User`) or role definition GUID.
    pub role: String,
    /// Scope: `/`, `/keys` or `/keys/<name>`. Default `/`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Principal object ID. Either this or `app_id`.
    #[serde(default)]
    pub principal_id: Option<String>,
    /// Resolve the principal as this app's service principal in the HSM's tenant.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Assignment name (a GUID; random when absent).
    #[serde(default)]
    pub name: Option<String>,
}

fn default_scope() -> String {
    "/".to_string()
}

/// A key to seed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Key name.
    pub name: String,
    /// `oct-HSM` (default), `RSA-HSM` or `EC-HSM`.
    #[serde(default = "default_kty")]
    pub kty: String,
    /// Size in bits for oct-HSM (128/192/256, default 256) and RSA-HSM (default 2048).
    #[serde(default)]
    pub key_size: Option<u32>,
    /// Curve for EC-HSM (default P-256).
    #[serde(default)]
    pub crv: Option<String>,
    /// Allowed operations; default per key type.
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `attributes.enabled`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `attributes.nbf`, Unix seconds.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// `attributes.exp`, Unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Number of versions to create (default 1); the last one is the latest.
    #[serde(default = "default_one")]
    pub versions: u32,
    /// Start soft-deleted.
    #[serde(default)]
    pub deleted: bool,
    /// Symmetric key material, hex (for reproducible tests); random when absent.
    #[serde(default)]
    pub material_hex: Option<String>,
}

fn default_kty() -> String {
    "oct-HSM".to_string()
}
fn default_true() -> bool {
    true
}
fn default_one() -> u32 {
    1
}

/// The Antimatter side of the world.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AntimatterSpec {
    /// Antimatter's own multi-tenant Azure application (must be listed in `applications`);
    /// the pairing check gets its tokens as this app.
    pub app_id: String,
    /// Domains.
    #[serde(default)]
    pub domains: Vec<DomainSpec>,
}

/// An Antimatter domain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// `dm-` + 11 base58 characters.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// API keys accepted by `authenticate`.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// The cell the domain lives on (e.g. `eu1`): served at `antimatter-<cell>.sandbox.localhost`,
    /// and the API host answers `308` to it. Absent: the API host serves it.
    #[serde(default)]
    pub cell: Option<String>,
    /// Answered as `cellAddress` by `authenticate` instead of the responding host's URL: a hostile
    /// API, for clients that must refuse a cell outside the API's domain.
    #[serde(default)]
    pub cell_address_override: Option<String>,
}

/// Errors loading a world.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// YAML syntax or shape.
    #[error("world file: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Reading the file.
    #[error("world file {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A semantic error (unknown tenant, bad ID, ...).
    #[error("world: {0}")]
    Invalid(String),
}

impl World {
    /// Parse a world from YAML text.
    pub fn from_yaml(text: &str) -> Result<World, WorldError> {
        Ok(serde_yaml::from_str(text)?)
    }

    /// Read and parse a world file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<World, WorldError> {
        let p = path.as_ref();
        let text =
            std::fs::read_to_string(p).map_err(|source| WorldError::Io { path: p.display().to_string(), source })?;
        World::from_yaml(&text)
    }

    /// Serialise to YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }
}
