//! The `AzureRootKey` API (`antimatter.io/v1alpha1`): the Rust types from which the CRD is generated.
//!
//! Every rule the API server can enforce at admission is declared here, either as an OpenAPI
//! constraint or as a CEL rule (`x-kubernetes-validations`), so that bad input is refused by
//! `kubectl apply` with a message naming the field, before the operator ever sees it.

use std::{
    borrow::Cow,
    collections::HashSet,
    sync::{LazyLock, Mutex},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Finalizer that lets the operator revoke Antimatter's access when `deletionPolicy: Revoke`.
pub const FINALIZER: &str = "antimatter.io/cleanup";

/// Default Antimatter API base URL.
pub const DEFAULT_API_URL: &str = "https://api.antimatter.io/v2";

const GUID_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Delegates an Azure Managed HSM key to Antimatter as a domain's root encryption key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "antimatter.io",
    version = "v1alpha1",
    kind = "AzureRootKey",
    plural = "azurerootkeys",
    shortname = "ark",
    category = "antimatter",
    namespaced,
    doc = "AzureRootKey hands an Azure Managed HSM key to Antimatter as a domain's root encryption key.",
    status = "AzureRootKeyStatus",
    printcolumn = r#"{"name":"Domain","type":"string","jsonPath":".spec.domainId"}"#,
    printcolumn = r#"{"name":"HSM","type":"string","jsonPath":".status.hsmName"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".spec.key.name"}"#,
    printcolumn = r#"{"name":"Pairing","type":"string","jsonPath":".status.pairing.status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Active","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Active\")].status"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Last check","type":"date","priority":1,"jsonPath":".status.pairing.lastCheckTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.deletionPolicy != 'Revoke' || has(self.antimatter.apiKeySecretRef)").message("deletionPolicy: Revoke needs antimatter.apiKeySecretRef: without the Antimatter API the operator cannot tell whether Antimatter still uses the key, so it would never remove access; use deletionPolicy: Retain"))]
pub struct AzureRootKeySpec {
    /// Antimatter domain whose root encryption key this is, e.g. `dm-AbCdEfGhJkL`. Immutable.
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("domainId is immutable; create a new AzureRootKey for another domain"),
        validation = Rule::new("self.matches('^dm-[1-9A-HJ-NP-Za-km-z]{11}$')").message("domainId must be 'dm-' followed by 11 base58 characters (no 0, O, I or l), e.g. dm-AbCdEfGhJkL")
    )]
    #[schemars(length(max = 14))]
    pub domain_id: String,

    /// Entra ID (Azure AD) tenant that holds the Managed HSM, as a GUID.
    #[x_kube(validation = Rule::new(guid_rule()).message("tenantId must be a GUID like 72f988bf-86f1-41af-91ab-2d7cd011db47"))]
    #[schemars(length(max = 36))]
    pub tenant_id: String,

    /// The Managed HSM that holds the key: its name or its URL, exactly one. Immutable.
    pub hsm: HsmRef,

    /// The key inside the Managed HSM.
    pub key: KeySpec,

    /// Antimatter's side: its application, API endpoint and credentials.
    #[serde(default)]
    pub antimatter: AntimatterSpec,

    /// Secret in this namespace with `clientId` and `clientSecret` (and optionally `tenantId`) of the
    /// Azure identity to act as. When absent the operator's own identity is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_credentials_secret_ref: Option<SecretNameRef>,

    /// What to do in Azure and Antimatter when this object is deleted. `Retain` (default) leaves
    /// everything in place; `Revoke` (needs `antimatter.apiKeySecretRef`) removes what this object
    /// added (see `status.created`): its Antimatter registrations first, then its role assignment
    /// and domain tag, and only once the key is not active and Antimatter's rotation is complete.
    /// Only `Revoke` objects carry the `antimatter.io/cleanup` finalizer. The key itself is never
    /// deleted or disabled.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// How often the pairing check and the drift check run, as a duration between 1m and 24h
    /// (e.g. `30m`, `1h`, `2h30m`).
    #[serde(default = "default_check_interval")]
    #[x_kube(
        validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != ''").message("checkInterval must be a duration such as 30m, 1h or 2h30m (units h, m, s)"),
        validation = Rule::new("!self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') || self == '' || (duration(self) >= duration('1m') && duration(self) <= duration('24h'))").message("checkInterval must be between 1m and 24h")
    )]
    #[schemars(length(max = 16))]
    pub check_interval: String,

    /// Observe and report only: change nothing in Azure or Antimatter, and on deletion release the
    /// object without touching them.
    #[serde(default)]
    pub suspend: bool,
}

fn guid_rule() -> String {
    format!("self.matches('{GUID_PATTERN}')")
}

fn default_check_interval() -> String {
    "1h".to_owned()
}

/// Names the Managed HSM by `name` (in the configured cloud) or by full `url`; exactly one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.name) != has(self.url)").message("set exactly one of hsm.name or hsm.url"),
    validation = Rule::new("self == oldSelf").message("hsm is immutable; create a new AzureRootKey for another HSM")
)]
pub struct HsmRef {
    /// Managed HSM name: 3-24 letters, digits and hyphens, starting with a letter, with no
    /// consecutive or trailing hyphen. The URL is `https://<name>.<cloud's Managed HSM suffix>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z](-?[a-zA-Z0-9])*$') && self.size() >= 3 && self.size() <= 24").message("hsm.name must be 3-24 letters, digits and hyphens, start with a letter, and have no consecutive or trailing hyphen"))]
    #[schemars(length(max = 24))]
    pub name: Option<String>,

    /// Managed HSM URL, e.g. `https://contoso.managedhsm.azure.net`: `https://` with a host and
    /// optional port only (no path, query or user info). The host must end in one of the cloud's
    /// Managed HSM DNS suffixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self.startsWith('https://')").message("hsm.url must start with https://"),
        validation = Rule::new("!self.startsWith('https://') || self.matches('^https://[a-zA-Z0-9.-]+(:[0-9]{1,5})?/?$')").message("hsm.url must be https://<host>[:port] with no path, query or user info")
    )]
    #[schemars(length(max = 253))]
    pub url: Option<String>,
}

/// The key in the Managed HSM that becomes the root encryption key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeySpec {
    /// Key name in the HSM: 1-127 letters, digits and hyphens. Immutable.
    #[x_kube(
        validation = Rule::new("self.matches('^[0-9a-zA-Z-]{1,127}$')").message("key.name must be 1-127 letters, digits and hyphens"),
        validation = Rule::new("self == oldSelf").message("key.name is immutable; create a new AzureRootKey for another key")
    )]
    #[schemars(length(max = 127))]
    pub name: String,

    /// `IfMissing` (default) creates an `oct-HSM` key when none exists; `Never` only uses an
    /// existing key.
    #[serde(default)]
    pub create: CreatePolicy,

    /// Key size in bits when the operator creates the key: 128, 192 or 256 (default).
    #[serde(default = "default_key_size")]
    #[x_kube(validation = Rule::new("self == 128 || self == 192 || self == 256").message("key.size must be 128, 192 or 256"))]
    #[schemars(extend("format" = "int32"))]
    pub size: u16,

    /// Take over a key whose owner marker (tag `antimatter-rootkey-owner`) names another cluster's
    /// object. Only for a key that cluster no longer manages: the two would otherwise fight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,

    /// The HSM's own rotation policy for the key, applied through the Managed HSM rotation-policy
    /// API: a new version every `rotateAfter`, each new version expiring after `expireAfter`. The
    /// operator follows each new version (see `status.versions`). Absent: the key's policy is left
    /// as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_policy: Option<KeyRotationPolicySpec>,
}

/// A key rotation policy in whole days (ISO 8601 `P<n>D`, as the HSM stores it).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.expireAfter) || int(self.expireAfter.substring(1, self.expireAfter.size() - 1)) > int(self.rotateAfter.substring(1, self.rotateAfter.size() - 1))").message("key.rotationPolicy.expireAfter must be longer than rotateAfter, or every version expires before the next one exists"))]
pub struct KeyRotationPolicySpec {
    /// Make a new key version this long after the latest was created, 7 to 3650 days (`P90D`).
    #[x_kube(
        validation = Rule::new("self.matches('^P[0-9]{1,4}D$')").message("key.rotationPolicy.rotateAfter must be whole days, e.g. P90D"),
        validation = Rule::new("!self.matches('^P[0-9]{1,4}D$') || (int(self.substring(1, self.size() - 1)) >= 7 && int(self.substring(1, self.size() - 1)) <= 3650)").message("key.rotationPolicy.rotateAfter must be 7 to 3650 days (Key Vault's minimum rotation interval is 7 days)")
    )]
    #[schemars(length(max = 6))]
    pub rotate_after: String,

    /// How long each new version lives, 28 to 3650 days (`P180D`); absent: new versions do not
    /// expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self.matches('^P[0-9]{1,4}D$')").message("key.rotationPolicy.expireAfter must be whole days, e.g. P180D"),
        validation = Rule::new("!self.matches('^P[0-9]{1,4}D$') || (int(self.substring(1, self.size() - 1)) >= 28 && int(self.substring(1, self.size() - 1)) <= 3650)").message("key.rotationPolicy.expireAfter must be 28 to 3650 days (the HSM's minimum expiry is 28 days)")
    )]
    #[schemars(length(max = 6))]
    pub expire_after: Option<String>,
}

fn default_key_size() -> u16 {
    256
}

/// Whether the operator may create the key.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CreatePolicy {
    /// Create an `oct-HSM` key with wrapKey/unwrapKey when none exists.
    #[default]
    IfMissing,
    /// Use an existing key only; report `KeyNotFound` otherwise.
    Never,
}

/// What deleting the object does outside the cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Leave the role assignment, tag and registration in place.
    #[default]
    Retain,
    /// Remove what this object added: its Antimatter registrations, then its role assignment and
    /// domain tag (never the key, never what it found in place).
    Revoke,
}

/// Antimatter's side of the delegation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.activate || has(self.apiKeySecretRef)").message("antimatter.activate needs antimatter.apiKeySecretRef: the key can only be made active through the Antimatter API"))]
#[x_kube(validation = Rule::new("!has(self.reclaimActive) || !self.reclaimActive || self.activate").message("antimatter.reclaimActive needs antimatter.activate: true"))]
pub struct AntimatterSpec {
    /// Application (client) ID of Antimatter's multi-tenant Azure application. Optional when the
    /// Antimatter API can tell it (an API key is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(guid_rule()).message("antimatter.applicationId must be a GUID"))]
    #[schemars(length(max = 36))]
    pub application_id: Option<String>,

    /// Object ID of Antimatter's service principal in this tenant. When set, the operator uses it
    /// and makes no Microsoft Graph calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(guid_rule()).message("antimatter.servicePrincipalObjectId must be a GUID"))]
    #[schemars(length(max = 36))]
    pub service_principal_object_id: Option<String>,

    /// Antimatter API base URL (https only).
    #[serde(default = "default_api_url")]
    #[x_kube(
        validation = Rule::new("self.startsWith('https://')").message("antimatter.apiUrl must start with https://"),
        validation = Rule::new("!self.startsWith('https://') || self.matches('^https://[a-zA-Z0-9.-]+(:[0-9]{1,5})?(/[a-zA-Z0-9._~/-]*)?$')").message("antimatter.apiUrl must be https://<host>[:port][/path] with no query or user info")
    )]
    #[schemars(length(max = 2048))]
    pub api_url: String,

    /// Secret in this namespace holding the domain's API key. When absent the operator does the
    /// Azure side only and reports the key URL and tenant ID for entry in the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,

    /// Make this key the domain's active root encryption key once it pairs healthy, and each new
    /// version of it once that pairs healthy. At most one object per domain may ask for this.
    #[serde(default)]
    pub activate: bool,

    /// When someone else makes another key the domain's active key (an emergency rotation), make
    /// this one active again. By default the change is reported (`Active` `ActiveKeyChanged`) and
    /// left as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reclaim_active: bool,

    /// When activating, re-wrap the domain's data keys in batches (Antimatter `rotateBatch`).
    #[serde(default)]
    pub rotate_batch: bool,
}

impl Default for AntimatterSpec {
    fn default() -> Self {
        Self {
            application_id: None,
            service_principal_object_id: None,
            api_url: default_api_url(),
            api_key_secret_ref: None,
            activate: false,
            reclaim_active: false,
            rotate_batch: false,
        }
    }
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

/// A Secret in the object's namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretNameRef {
    /// Secret name (in the same namespace).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secret name must be a DNS subdomain name"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One key of a Secret in the object's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretKeyRef {
    /// Secret name (in the same namespace).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secret name must be a DNS subdomain name"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key within the Secret's data (default `apiKey`).
    #[serde(default = "default_api_key_key")]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("secret key must consist of letters, digits, '-', '_' or '.'"))]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_api_key_key() -> String {
    "apiKey".to_owned()
}

/// What the operator observed and did, for `kubectl`, Argo CD and Flux.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureRootKeyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// One condition per step (`KeyReady`, `TagApplied`, `ServicePrincipalReady`, `RoleAssigned`,
    /// `Registered`, `Paired`, `Active`) and the summary `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The Managed HSM's URL, as resolved from `spec.hsm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm_url: Option<String>,

    /// The Managed HSM's name (the first label of its host), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm_name: Option<String>,

    /// Versioned key URL exactly as the HSM reports it (`kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_url: Option<String>,

    /// Current key version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<String>,

    /// Tenant that holds the HSM (to register with Antimatter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,

    /// Object ID of Antimatter's service principal in the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal_object_id: Option<String>,

    /// Name (GUID) of the Managed HSM role assignment granting "Managed HSM Crypto User".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_assignment_name: Option<String>,

    /// Antimatter's ID for the registered root encryption key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_encryption_key_id: Option<String>,

    /// When the key's current version expires (its `exp` attribute); absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_expiry_time: Option<Time>,

    /// Result of the last pairing check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<PairingStatus>,

    /// The last activation this object made or found, and Antimatter's re-wrapping of the
    /// domain's data keys under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,

    /// The key's rotation policy as the HSM stored it, when `spec.key.rotationPolicy` asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_policy: Option<KeyRotationPolicySpec>,

    /// The key versions this object has used, newest first: the current one and older ones whose
    /// registration is being retired or was retired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub versions: Vec<KeyVersionStatus>,

    /// What this object itself added outside the cluster, as last seen; what it found in place
    /// (or another object added) is not listed. `Revoke` removes only these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<CreatedRecord>,

    /// Never on the wire: set in the watch cache, which keeps a digest of the condition messages
    /// in place of the messages (`controller::status::trim_for_cache`). (Not `#[serde(skip)]`: the
    /// schema derive's copy of this struct would then never read it, which the compiler flags.)
    #[serde(skip_deserializing, skip_serializing_if = "never_on_the_wire")]
    #[schemars(skip)]
    pub messages_digest: Option<u64>,
}

fn never_on_the_wire(_: &Option<u64>) -> bool {
    true
}

/// What one object added, each proven by a mark the operator reads back from the service (so
/// the record survives a restart between the change and the status write): the role assignment's
/// name is derived from the object's UID, the domain tag is written together with
/// `addedBy.<domainId>=<object UID>`, and the registration's description names the object's UID.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreatedRecord {
    /// The "Managed HSM Crypto User" role assignment this object created (absent when it adopted
    /// one that was there before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_assignment_name: Option<String>,

    /// This object added `<domainId>=allow` to the key's current version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub domain_tag: bool,

    /// The Antimatter registration (`rekID`) of the current key version that this object made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_encryption_key_id: Option<String>,
}

/// An activation and the re-wrapping of the domain's data keys that follows it (`POST /rotate`
/// until `has_more` is false).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// The root encryption key made active.
    pub root_encryption_key_id: String,
    /// `InProgress` while Antimatter still has data keys wrapped under other root keys.
    pub state: RotationState,
    /// Rotation batches asked for so far.
    pub batches: u32,
    /// When the activation was made or first seen.
    pub started_at: Time,
    /// When Antimatter answered that nothing is left to re-wrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// Where a rotation stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationState {
    InProgress,
    Complete,
}

/// One version of the key, as this object used it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersionStatus {
    /// The key version (32 hex digits).
    pub version: String,
    /// Its versioned key URL.
    pub key_url: String,
    /// Antimatter's registration of this version, once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_encryption_key_id: Option<String>,
    /// `Current`, `Retiring`, `Retired` or `Kept`.
    pub state: VersionState,
    /// When the version entered this state.
    pub since: Time,
}

/// What became of a key version's registration.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionState {
    /// The version this object registers, pairs and (with `activate`) makes active.
    Current,
    /// A newer version took over; this registration is deleted once it is not active and
    /// Antimatter has nothing left wrapped under it.
    Retiring,
    /// This object deleted the registration; the HSM key version itself is never touched.
    Retired,
    /// A newer version took over, and the registration was not made by this object: left in
    /// Antimatter.
    Kept,
}

/// One aspect of the object's state, in the shape of the standard `metav1.Condition`.
// Not k8s-openapi's `Condition`: the watch cache holds one per step for every object, so the status
// is an enum and the type and reason (a small vocabulary) are shared: three allocations fewer per
// condition. With jemalloc's size classes the resident size did not change measurably.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase.
    #[serde(rename = "type", deserialize_with = "shared")]
    pub type_: Cow<'static, str>,
    /// Status of the condition, one of True, False, Unknown.
    pub status: ConditionStatus,
    /// The `.metadata.generation` that the condition was set based upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last time the condition transitioned from one status to another.
    pub last_transition_time: Time,
    /// A programmatic identifier, in CamelCase, for the reason of the condition's last transition.
    #[serde(deserialize_with = "shared")]
    pub reason: Cow<'static, str>,
    /// A human-readable message with details about the transition; may be empty.
    pub message: String,
}

/// The status of a [`Condition`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Distinct condition types and reasons kept for the life of the process. The operator uses a few
/// dozen; the bound only matters if someone else writes odd ones into the status.
const VOCABULARY_BOUND: usize = 1024;
static VOCABULARY: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);

/// The one shared copy of a word of the conditions' vocabulary (or an owned one past the bound).
pub fn vocabulary(word: &str) -> Cow<'static, str> {
    let mut words = crate::locks::lock(&VOCABULARY);
    if let Some(shared) = words.get(word) {
        return Cow::Borrowed(shared);
    }
    if words.len() >= VOCABULARY_BOUND {
        return Cow::Owned(word.to_owned());
    }
    let shared: &'static str = Box::leak(word.into());
    words.insert(shared);
    Cow::Borrowed(shared)
}

fn shared<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'static, str>, D::Error> {
    struct Word;
    impl serde::de::Visitor<'_> for Word {
        type Value = Cow<'static, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Self::Value, E> {
            Ok(vocabulary(word))
        }
    }
    deserializer.deserialize_str(Word)
}

/// Result of Antimatter's pairing check (it encrypts and decrypts with the key).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairingStatus {
    /// `Healthy`, `Unreachable` or `Misconfigured`.
    pub status: PairingState,
    /// Antimatter's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long the latest check took in Antimatter, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// When this result (status and message) was first seen; later checks with the same result keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_time: Option<Time>,
    /// When the latest check that got an answer from Antimatter ran (one status write per object
    /// per check); a check that could not reach Antimatter leaves it and says so in `Paired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// When a check last found the pairing `Healthy`; kept while later checks fail, so an alert can
    /// tell how long the pairing has been failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_healthy_time: Option<Time>,
}

/// Outcome of a pairing check.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairingState {
    /// Antimatter wrapped and unwrapped with the key.
    Healthy,
    /// Antimatter could not reach the key.
    Unreachable,
    /// The key is reachable but not usable (tag, role, type or state).
    Misconfigured,
}

/// An object with a valid spec and no status, for unit tests.
#[cfg(test)]
pub(crate) fn sample(namespace: &str, name: &str) -> AzureRootKey {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"domainId": "dm-AbCdEfGhJkL", "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                 "hsm": {"name": "contoso"}, "key": {"name": "k"}}
    }))
    .expect("sample object")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_the_standard_shape_and_share_their_vocabulary() {
        let wire = serde_json::json!({
            "type": "KeyReady", "status": "False", "observedGeneration": 3,
            "lastTransitionTime": "2026-11-30T12:00:00Z", "reason": "KeyDisabled", "message": "Key k is disabled."
        });
        let first: Condition = serde_json::from_value(wire.clone()).expect("condition");
        let second: Condition = serde_json::from_value(wire.clone()).expect("condition");
        assert_eq!(serde_json::to_value(&first).expect("json"), wire);
        assert_eq!(first.status, ConditionStatus::False);
        for (a, b) in [(&first.type_, &second.type_), (&first.reason, &second.reason)] {
            assert!(matches!((a, b), (Cow::Borrowed(x), Cow::Borrowed(y)) if std::ptr::eq(*x, *y)), "{a} is shared");
        }
        let odd = serde_json::json!({"type": "KeyReady", "status": "Maybe", "lastTransitionTime": "2026-11-30T12:00:00Z", "reason": "R", "message": ""});
        assert!(serde_json::from_value::<Condition>(odd).is_err(), "status is one of True, False, Unknown");
    }
}
