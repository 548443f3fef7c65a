//! The directory: tenants, app registrations (secrets, federated credentials) and the service
//! principals apps have in tenants.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A service principal (enterprise application) in a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// Object ID (the `oid` in tokens, the `principalId` in role assignments).
    pub id: String,
    /// Application (client) ID.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
    /// Graph application permissions granted in this tenant.
    pub graph_roles: Vec<String>,
    /// When (Unix seconds, sandbox clock) Entra ID has replicated it: its app gets tokens in the
    /// tenant only from then on.
    #[serde(default)]
    pub replicated_at: i64,
}

/// A federated identity credential: which assertions an app accepts instead of a secret.
#[derive(Debug, Clone)]
pub(crate) struct Federated {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
}

/// An app registration.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub app_id: String,
    pub name: String,
    pub home_tenant: String,
    pub multi_tenant: bool,
    pub secrets: Vec<String>,
    pub federated: Vec<Federated>,
}

/// An Entra ID directory and the service principals in it.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub id: String,
    pub name: String,
    /// Keyed by appId.
    pub sps: BTreeMap<String, ServicePrincipal>,
}
