//! Admin API shapes: the request bodies it accepts (key and settings patches, fault rules) and
//! the records it answers with (settings, faults, counters, the request log, endpoints). They are
//! public: the Rust handle takes and returns the same types.

use super::Resp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// A change to one version of a key: the body of admin `PATCH /hsms/{hsm}/keys/{name}` (applied to
/// the latest version), and what an HSM key update parses into.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// Replace the tag map.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// Set `enabled`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Set `nbf` (`Some(None)` clears; JSON `null`).
    #[serde(default, deserialize_with = "double_option")]
    pub nbf: Option<Option<i64>>,
    /// Set `exp` (`Some(None)` clears; JSON `null`).
    #[serde(default, deserialize_with = "double_option")]
    pub exp: Option<Option<i64>>,
    /// Replace `key_ops`.
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
}

/// A present field (`null` included) is `Some`: `null` clears, absence leaves alone.
fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of admin `PATCH /domains/{domain}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainPatch {
    /// Move the domain to this cell (`null`: back to the API host).
    #[serde(default, deserialize_with = "double_option")]
    pub cell: Option<Option<String>>,
    /// Answer this as `cellAddress` from `authenticate` (`null`: the responding host's URL).
    #[serde(default, deserialize_with = "double_option")]
    pub cell_address_override: Option<Option<String>>,
}

/// Body of `POST /federated-tokens`: a service-account-like token from the sandbox's own issuer
/// (or, to test refusals, claiming another issuer while signed with the sandbox's key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FederatedTokenRequest {
    /// `sub`, e.g. `system:serviceaccount:rootkey-system:rootkey-operator`.
    pub subject: String,
    /// `iss` (default [`DEFAULT_ISSUER`]).
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` (default `api://AzureADTokenExchange`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Lifetime from now in seconds (default 3600; negative makes an expired token).
    #[serde(default)]
    pub lifetime_secs: Option<i64>,
}

/// The sandbox's own OpenID issuer named in the default world's federated credential.
pub const DEFAULT_ISSUER: &str = "https://oidc.sandbox.localhost/rootkey-cluster";

/// Body of `PATCH /settings`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Fixed latency per request, ms.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Rate limits on/off.
    #[serde(default)]
    pub rate_limits: Option<bool>,
    /// Clock offset, seconds (tokens expire earlier when positive).
    #[serde(default)]
    pub clock_offset_secs: Option<i64>,
    /// Entra token lifetime.
    #[serde(default)]
    pub token_lifetime_secs: Option<i64>,
    /// Antimatter JWT lifetime.
    #[serde(default)]
    pub antimatter_token_lifetime_secs: Option<i64>,
    /// Rotation batches.
    #[serde(default)]
    pub rotate_batches: Option<u32>,
    /// Seconds before a new role assignment takes effect.
    #[serde(default)]
    pub rbac_propagation_secs: Option<u64>,
    /// Seconds before a new service principal can get tokens.
    #[serde(default)]
    pub principal_replication_secs: Option<u64>,
    /// Items per page of HSM lists.
    #[serde(default)]
    pub page_size: Option<usize>,
}

/// Mutable knobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Fixed latency per request, ms.
    pub latency_ms: u64,
    /// Per-HSM rate limits on/off.
    pub rate_limits: bool,
    /// Seconds added to the wall clock for token expiry decisions.
    pub clock_offset_secs: i64,
    /// Entra token lifetime.
    pub token_lifetime_secs: i64,
    /// Antimatter JWT default lifetime.
    pub antimatter_token_lifetime_secs: i64,
    /// Rotation batches after an activation.
    pub rotate_batches: u32,
    /// Seconds (sandbox clock) before a new role assignment authorizes anything: real Managed HSM
    /// RBAC is eventually consistent (its 403 says "please observe propagation time").
    pub rbac_propagation_secs: u64,
    /// Seconds (sandbox clock) before a new service principal can get tokens (Entra ID replicates
    /// a new principal; until then its app is "not found in the directory", AADSTS700016).
    pub principal_replication_secs: u64,
    /// Items per page of HSM lists (keys, versions, deleted keys, role definitions and
    /// assignments) when the request names no smaller `maxresults`.
    pub page_size: usize,
}

/// A fault to inject on matching requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// `entra`, `graph`, `hsm` or `antimatter`.
    pub service: String,
    /// Operation name (see [`crate::OPERATIONS`]); absent = every operation of the service.
    #[serde(default)]
    pub operation: Option<String>,
    /// Only requests to this HSM.
    #[serde(default)]
    pub hsm: Option<String>,
    /// What to do.
    pub action: FaultAction,
    /// Apply to this many matching requests, then expire (absent = unlimited).
    #[serde(default)]
    pub count: Option<u64>,
    /// Apply with this probability (0..1, absent = always).
    #[serde(default)]
    pub probability: Option<f64>,
}

/// Fault actions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Add latency, then handle normally.
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// Answer with this status (429 gets `Retry-After`).
    Status {
        /// HTTP status (429, 500, 503, ...).
        status: u16,
        /// `Retry-After` seconds for 429/503 (default 1).
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Close the connection without answering.
    Drop,
    /// Answer with this status and this raw body (malformed or truncated JSON, wrong types, ...).
    Body {
        /// HTTP status (default 200).
        #[serde(default)]
        status: Option<u16>,
        /// The body, sent as is.
        body: String,
        /// `Content-Type` (default `application/json; charset=utf-8`).
        #[serde(default)]
        content_type: Option<String>,
    },
    /// Answer 200 with a JSON-looking body of this many bytes (an oversized response).
    Huge {
        /// Body size in bytes.
        bytes: u64,
    },
    /// Slow-loris: answer 200 with a `Content-Length` of `bytes`, then send one byte every
    /// `every_ms` milliseconds.
    Trickle {
        /// Announced (and eventually sent) body size.
        bytes: u64,
        /// Milliseconds between bytes.
        every_ms: u64,
    },
    /// Redirect (default 307) to `location`, e.g. a foreign host.
    Redirect {
        /// Absolute URL for the `Location` header; `{path}` is replaced by the request path.
        location: String,
        /// 301, 302, 307 or 308 (default 307).
        #[serde(default)]
        status: Option<u16>,
    },
}

/// One request as the sandbox saw it (admin `GET /requests`, [`crate::SandboxHandle::requests`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestRecord {
    /// Milliseconds since the sandbox started (monotonic clock), when the request arrived.
    pub at_ms: u64,
    /// `entra`, `graph`, `hsm`, `antimatter`, or `unknown` for a host the sandbox does not serve.
    pub service: String,
    /// Operation name (see [`crate::OPERATIONS`]).
    pub operation: String,
    /// The HSM addressed, if any.
    pub hsm: Option<String>,
    /// The `Host` header without port.
    pub host: String,
    /// The request path (as sent).
    pub path: String,
    /// `Retry-After` seconds answered, if any.
    pub retry_after: Option<u64>,
    /// HTTP status answered (0 = connection dropped).
    pub status: u16,
    /// The request carried an `Authorization` header.
    pub authorization: bool,
    /// The request carried a credential the world knows (an app secret or Antimatter API key) in
    /// a header, the query or the body.
    pub credential: bool,
    /// Made by the sandbox itself (Antimatter's pairing check reading the HSM).
    pub internal: bool,
}

/// An installed fault with its remaining count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    /// Fault ID.
    pub id: u64,
    /// The rule.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Remaining applications (None = unlimited).
    pub remaining: Option<u64>,
    /// Times applied so far.
    pub applied: u64,
}

/// One counter row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterRow {
    /// Service.
    pub service: String,
    /// Operation name.
    pub operation: String,
    /// HTTP status (0 = connection dropped by a fault).
    pub status: u16,
    /// Count.
    pub count: u64,
}

/// The public addresses of the services.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoints {
    /// HTTPS port.
    pub port: u16,
    /// `https://login.sandbox.localhost:PORT`.
    pub authority_url: String,
    /// `https://graph.sandbox.localhost:PORT` (also the Graph token audience).
    pub graph_url: String,
    /// `managedhsm.sandbox.localhost:PORT`.
    pub hsm_dns_suffix: String,
    /// `https://managedhsm.sandbox.localhost:PORT` (HSM token audience, challenge resource).
    pub hsm_resource: String,
    /// `https://api.sandbox.localhost:PORT/v2`.
    pub antimatter_url: String,
    /// Admin API base URL.
    pub admin_url: String,
    /// Path of the CA certificate (PEM).
    pub ca_pem_path: String,
    /// `<name>` → `https://<name>.managedhsm.sandbox.localhost:PORT`.
    pub hsms: BTreeMap<String, String>,
}

/// The admin API's error body.
pub(crate) fn error(status: u16, message: impl Into<String>) -> Resp {
    Resp::json(status, &json!({"error": message.into()}))
}
