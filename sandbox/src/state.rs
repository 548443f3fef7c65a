//! The sandbox's mutable state: directory, HSMs, Antimatter domains, and the control plane
//! (counters, faults, rate limits, latency, clock).

use crate::roles;
use crate::util::{self, unix_now};
use crate::world::{KeySpec, World, WorldError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// The four emulated services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// Entra ID (login).
    Entra,
    /// Microsoft Graph.
    Graph,
    /// Managed HSM data plane.
    Hsm,
    /// Antimatter API.
    Antimatter,
}

impl Service {
    /// Lower-case name used in counters and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Entra => "entra",
            Service::Graph => "graph",
            Service::Hsm => "hsm",
            Service::Antimatter => "antimatter",
        }
    }
    /// Parse a lower-case name.
    pub fn parse(s: &str) -> Option<Service> {
        match s {
            "entra" => Some(Service::Entra),
            "graph" => Some(Service::Graph),
            "hsm" => Some(Service::Hsm),
            "antimatter" => Some(Service::Antimatter),
            _ => None,
        }
    }
}

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
}

#[derive(Debug, Clone)]
pub(crate) struct Federated {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub app_id: String,
    pub name: String,
    pub home_tenant: String,
    pub multi_tenant: bool,
    pub secrets: Vec<String>,
    pub federated: Vec<Federated>,
}

#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub id: String,
    pub name: String,
    /// Keyed by appId.
    pub sps: BTreeMap<String, ServicePrincipal>,
}

/// One version of a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyVersion {
    /// 32-hex version.
    pub version: String,
    /// `oct-HSM`, `RSA-HSM`, `EC-HSM`.
    pub kty: String,
    /// Size in bits (oct/RSA).
    pub key_size: Option<u32>,
    /// Curve (EC).
    pub crv: Option<String>,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.nbf`.
    pub nbf: Option<i64>,
    /// `attributes.exp`.
    pub exp: Option<i64>,
    /// `attributes.created`.
    pub created: i64,
    /// `attributes.updated`.
    pub updated: i64,
    /// Secret material (never serialised).
    #[serde(skip)]
    pub material: Vec<u8>,
    /// Public parts for RSA (n, e) or EC (x, y), base64url.
    #[serde(skip)]
    pub public: Vec<(String, String)>,
}

/// A key with its versions (oldest first; the last is the latest).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Key {
    /// Name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<KeyVersion>,
}

impl Key {
    /// The latest version.
    pub fn latest(&self) -> Option<&KeyVersion> {
        self.versions.last()
    }
}

/// A soft-deleted key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeletedKey {
    /// The key as it was.
    pub key: Key,
    /// Deletion time.
    pub deleted_date: i64,
    /// Scheduled purge time.
    pub scheduled_purge_date: i64,
}

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
}

#[derive(Debug, Clone)]
pub(crate) struct Hsm {
    pub name: String,
    pub tenant: String,
    pub location: String,
    pub keys: BTreeMap<String, Key>,
    pub deleted: BTreeMap<String, DeletedKey>,
    pub assignments: BTreeMap<String, RoleAssignment>,
}

/// A root encryption key registered with an Antimatter domain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// `rekID`.
    pub rek_id: String,
    /// Provider (`azure_am`, or `antimatter` for the built-in default key).
    pub source: String,
    /// The key URL.
    pub resource_path: String,
    /// Description.
    pub description: String,
    /// Tenant ID given at registration.
    pub tenant_id: String,
    /// Last pairing-check status, if any.
    pub last_status: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Domain {
    pub id: String,
    pub name: String,
    pub api_keys: Vec<String>,
    pub keys: Vec<Registration>,
    pub active: String,
    pub pending_rotations: u32,
    pub enable_bypass: bool,
}

pub(crate) struct Inner {
    pub tenants: BTreeMap<String, Tenant>,
    pub apps: BTreeMap<String, App>,
    pub hsms: BTreeMap<String, Hsm>,
    pub domains: BTreeMap<String, Domain>,
    pub antimatter_app: Option<String>,
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

/// The request log keeps at most this many records (later ones are counted, not kept).
pub const REQUEST_LOG_CAP: usize = 500_000;

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

/// Rate-limit classes (per HSM token buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitClass {
    /// Key creation (~1/s).
    Create,
    /// Key reads (~1100/s).
    Read,
    /// Crypto operations (~2000/s).
    Crypto,
    /// Role management (~5/s).
    Rbac,
}

impl LimitClass {
    /// Tokens per second.
    pub fn rate(self) -> f64 {
        match self {
            LimitClass::Create => 1.0,
            LimitClass::Read => 1100.0,
            LimitClass::Crypto => 2000.0,
            LimitClass::Rbac => 5.0,
        }
    }
    /// Name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitClass::Create => "create",
            LimitClass::Read => "read",
            LimitClass::Crypto => "crypto",
            LimitClass::Rbac => "rbac",
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
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
}

/// Shared state of one sandbox instance.
pub struct Shared {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) counters: Mutex<HashMap<(Service, &'static str, u16), u64>>,
    pub(crate) faults: Mutex<Vec<Fault>>,
    pub(crate) next_fault: Mutex<u64>,
    pub(crate) settings: Mutex<Settings>,
    pub(crate) requests: Mutex<Vec<RequestRecord>>,
    pub(crate) started: Instant,
    buckets: Mutex<HashMap<(String, LimitClass), Bucket>>,
    pub(crate) jwt_key: Vec<u8>,
    pub(crate) ep: Endpoints,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Default key operations for a key type.
pub fn default_key_ops(kty: &str) -> Vec<String> {
    let ops: &[&str] = match kty {
        "oct-HSM" | "oct" => &["wrapKey", "unwrapKey", "encrypt", "decrypt"],
        "RSA-HSM" | "RSA" => &["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
        _ => &["sign", "verify"],
    };
    ops.iter().map(|s| s.to_string()).collect()
}

/// Build a key version with fresh material.
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_version(
    kty: &str,
    key_size: Option<u32>,
    crv: Option<String>,
    key_ops: Vec<String>,
    tags: BTreeMap<String, String>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    now: i64,
) -> KeyVersion {
    let (material, public) = match kty {
        "oct-HSM" => (util::random_bytes((key_size.unwrap_or(256) / 8) as usize), vec![]),
        "RSA-HSM" => {
            // A placeholder modulus: RSA/EC crypto is not emulated (see crate docs).
            let mut n = util::random_bytes((key_size.unwrap_or(2048) / 8) as usize);
            if let Some(f) = n.first_mut() {
                *f |= 0x80;
            }
            if let Some(l) = n.last_mut() {
                *l |= 1;
            }
            (vec![], vec![("n".to_string(), util::b64url(&n)), ("e".to_string(), "AQAB".to_string())])
        }
        _ => {
            let len = match crv.as_deref() {
                Some("P-384") => 48,
                Some("P-521") => 66,
                _ => 32,
            };
            (
                vec![],
                vec![
                    ("x".to_string(), util::b64url(&util::random_bytes(len))),
                    ("y".to_string(), util::b64url(&util::random_bytes(len))),
                ],
            )
        }
    };
    KeyVersion {
        version: util::key_version(),
        kty: kty.to_string(),
        key_size: if kty == "EC-HSM" { None } else { key_size },
        crv: if kty == "EC-HSM" { Some(crv.unwrap_or_else(|| "P-256".to_string())) } else { None },
        key_ops,
        tags,
        enabled,
        nbf,
        exp,
        created: now,
        updated: now,
        material,
        public,
    }
}

fn seed_key(spec: &KeySpec, now: i64) -> Result<Key, WorldError> {
    let kty = spec.kty.as_str();
    let size = match kty {
        "oct-HSM" => {
            let s = spec.key_size.unwrap_or(256);
            if ![128, 192, 256].contains(&s) {
                return Err(WorldError::Invalid(format!("key {}: oct-HSM size {s}", spec.name)));
            }
            Some(s)
        }
        "RSA-HSM" => Some(spec.key_size.unwrap_or(2048)),
        "EC-HSM" => None,
        other => return Err(WorldError::Invalid(format!("key {}: unsupported kty {other}", spec.name))),
    };
    let mut versions = Vec::new();
    for _ in 0..spec.versions.max(1) {
        let mut v = new_version(
            kty,
            size,
            spec.crv.clone(),
            spec.key_ops.clone().unwrap_or_else(|| default_key_ops(kty)),
            spec.tags.clone(),
            spec.enabled,
            spec.nbf,
            spec.exp,
            now,
        );
        if let (Some(h), "oct-HSM") = (&spec.material_hex, kty) {
            let bytes: Option<Vec<u8>> =
                (0..h.len()).step_by(2).map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect();
            match bytes {
                Some(b) if b.len() * 8 == size.unwrap_or(256) as usize => v.material = b,
                _ => return Err(WorldError::Invalid(format!("key {}: material_hex", spec.name))),
            }
        }
        versions.push(v);
    }
    Ok(Key { name: spec.name.clone(), versions })
}

impl Inner {
    pub(crate) fn from_world(world: &World) -> Result<Inner, WorldError> {
        let now = unix_now();
        let mut tenants = BTreeMap::new();
        for t in &world.tenants {
            if !util::is_guid(&t.id) {
                return Err(WorldError::Invalid(format!("tenant id {} is not a GUID", t.id)));
            }
            tenants.insert(
                t.id.to_lowercase(),
                Tenant { id: t.id.to_lowercase(), name: t.name.clone(), sps: BTreeMap::new() },
            );
        }
        let mut apps = BTreeMap::new();
        for a in &world.applications {
            let home = a.home_tenant.to_lowercase();
            if !util::is_guid(&a.app_id) {
                return Err(WorldError::Invalid(format!("app id {} is not a GUID", a.app_id)));
            }
            let tenant = tenants
                .get_mut(&home)
                .ok_or_else(|| WorldError::Invalid(format!("app {}: unknown home tenant {home}", a.app_id)))?;
            let app_id = a.app_id.to_lowercase();
            tenant.sps.insert(
                app_id.clone(),
                ServicePrincipal {
                    id: a.service_principal_id.clone().unwrap_or_else(util::uuid_v4).to_lowercase(),
                    app_id: app_id.clone(),
                    display_name: a.name.clone(),
                    graph_roles: a.graph_roles.clone(),
                },
            );
            apps.insert(
                app_id.clone(),
                App {
                    app_id,
                    name: a.name.clone(),
                    home_tenant: home,
                    multi_tenant: a.multi_tenant,
                    secrets: a.secrets.clone(),
                    federated: a
                        .federated_credentials
                        .iter()
                        .map(|f| Federated {
                            issuer: f.issuer.clone(),
                            subject: f.subject.clone(),
                            audiences: f.audiences.clone(),
                        })
                        .collect(),
                },
            );
        }
        for sp in &world.service_principals {
            let app_id = sp.app_id.to_lowercase();
            let app = apps
                .get(&app_id)
                .ok_or_else(|| WorldError::Invalid(format!("service principal: unknown app {app_id}")))?;
            let tenant = tenants
                .get_mut(&sp.tenant.to_lowercase())
                .ok_or_else(|| WorldError::Invalid(format!("service principal: unknown tenant {}", sp.tenant)))?;
            tenant.sps.insert(
                app_id.clone(),
                ServicePrincipal {
                    id: sp.id.clone().unwrap_or_else(util::uuid_v4).to_lowercase(),
                    app_id,
                    display_name: app.name.clone(),
                    graph_roles: sp.graph_roles.clone(),
                },
            );
        }
        let mut hsms = BTreeMap::new();
        for h in &world.hsms {
            let tenant_id = h.tenant.to_lowercase();
            let tenant = tenants
                .get(&tenant_id)
                .ok_or_else(|| WorldError::Invalid(format!("hsm {}: unknown tenant {}", h.name, h.tenant)))?;
            if h.name.is_empty()
                || !h.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                || h.name != h.name.to_lowercase()
            {
                return Err(WorldError::Invalid(format!("hsm name {:?}: lower-case letters, digits, '-'", h.name)));
            }
            let mut assignments = BTreeMap::new();
            for ra in &h.role_assignments {
                let role = roles::find(&ra.role)
                    .ok_or_else(|| WorldError::Invalid(format!("hsm {}: unknown role {}", h.name, ra.role)))?;
                let principal = match (&ra.principal_id, &ra.app_id) {
                    (Some(p), _) => p.to_lowercase(),
                    (None, Some(app)) => {
                        tenant.sps.get(&app.to_lowercase()).map(|sp| sp.id.clone()).ok_or_else(|| {
                            WorldError::Invalid(format!(
                                "hsm {}: app {app} has no service principal in tenant {tenant_id}",
                                h.name
                            ))
                        })?
                    }
                    (None, None) => {
                        return Err(WorldError::Invalid(format!("hsm {}: assignment without principal", h.name)));
                    }
                };
                if !roles::valid_scope(&ra.scope) {
                    return Err(WorldError::Invalid(format!("hsm {}: bad scope {}", h.name, ra.scope)));
                }
                let name = ra.name.clone().unwrap_or_else(util::uuid_v4);
                assignments.insert(
                    name.clone(),
                    RoleAssignment {
                        name,
                        scope: ra.scope.clone(),
                        role_definition: role.id.to_string(),
                        principal_id: principal,
                    },
                );
            }
            let mut keys = BTreeMap::new();
            let mut deleted = BTreeMap::new();
            for k in &h.keys {
                let key = seed_key(k, now)?;
                if k.deleted {
                    deleted.insert(
                        k.name.clone(),
                        DeletedKey { key, deleted_date: now, scheduled_purge_date: now + 90 * 86_400 },
                    );
                } else {
                    keys.insert(k.name.clone(), key);
                }
            }
            hsms.insert(
                h.name.clone(),
                Hsm {
                    name: h.name.clone(),
                    tenant: tenant_id,
                    location: h.location.clone(),
                    keys,
                    deleted,
                    assignments,
                },
            );
        }
        let mut domains = BTreeMap::new();
        let mut antimatter_app = None;
        if let Some(am) = &world.antimatter {
            let app_id = am.app_id.to_lowercase();
            let app = apps
                .get(&app_id)
                .ok_or_else(|| WorldError::Invalid(format!("antimatter app {app_id} is not in applications")))?;
            if !app.multi_tenant {
                return Err(WorldError::Invalid("antimatter app must be multi_tenant".into()));
            }
            if app.secrets.is_empty() {
                return Err(WorldError::Invalid("antimatter app needs a secret".into()));
            }
            antimatter_app = Some(app_id);
            for d in &am.domains {
                if !util::is_domain_id(&d.id) {
                    return Err(WorldError::Invalid(format!("domain id {} is not dm- + 11 base58", d.id)));
                }
                let default = Registration {
                    rek_id: util::uuid_v4(),
                    source: "antimatter".into(),
                    resource_path: String::new(),
                    description: "Antimatter-held default root encryption key".into(),
                    tenant_id: String::new(),
                    last_status: None,
                };
                domains.insert(
                    d.id.clone(),
                    Domain {
                        id: d.id.clone(),
                        name: d.name.clone(),
                        api_keys: d.api_keys.clone(),
                        active: default.rek_id.clone(),
                        keys: vec![default],
                        pending_rotations: 0,
                        enable_bypass: false,
                    },
                );
            }
        }
        Ok(Inner { tenants, apps, hsms, domains, antimatter_app })
    }
}

impl Shared {
    pub(crate) fn new(world: &World, ep: Endpoints) -> Result<Shared, WorldError> {
        let inner = Inner::from_world(world)?;
        let s = &world.settings;
        Ok(Shared {
            inner: Mutex::new(inner),
            counters: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            next_fault: Mutex::new(1),
            requests: Mutex::new(Vec::new()),
            started: Instant::now(),
            settings: Mutex::new(Settings {
                latency_ms: s.latency_ms,
                rate_limits: s.rate_limits,
                clock_offset_secs: 0,
                token_lifetime_secs: s.token_lifetime_secs,
                antimatter_token_lifetime_secs: s.antimatter_token_lifetime_secs,
                rotate_batches: s.rotate_batches,
            }),
            buckets: Mutex::new(HashMap::new()),
            jwt_key: util::random_bytes(32),
            ep,
        })
    }

    /// Current time as the sandbox sees it (wall clock + offset).
    pub(crate) fn now(&self) -> i64 {
        unix_now() + lock(&self.settings).clock_offset_secs
    }

    pub(crate) fn count(&self, svc: Service, op: &'static str, status: u16) {
        *lock(&self.counters).entry((svc, op, status)).or_insert(0) += 1;
    }

    /// Appends one record to the request log (bounded by [`REQUEST_LOG_CAP`]).
    pub(crate) fn log_request(&self, mut record: RequestRecord, arrived: Instant) {
        record.at_ms = arrived.duration_since(self.started).as_millis() as u64;
        let mut log = lock(&self.requests);
        if log.len() < REQUEST_LOG_CAP {
            log.push(record);
        }
    }

    /// Whether `haystack` contains a credential the world knows (app secrets, Antimatter API keys).
    pub(crate) fn contains_credential(&self, haystack: &[u8]) -> bool {
        let inner = lock(&self.inner);
        let secrets = inner.apps.values().flat_map(|a| a.secrets.iter());
        let keys = inner.domains.values().flat_map(|d| d.api_keys.iter());
        secrets.chain(keys).filter(|s| !s.is_empty()).any(|s| {
            let needle = s.as_bytes();
            haystack.windows(needle.len()).any(|w| w == needle)
        })
    }

    pub(crate) fn counter_rows(&self) -> Vec<CounterRow> {
        let mut rows: Vec<CounterRow> = lock(&self.counters)
            .iter()
            .map(|((s, o, st), c)| CounterRow {
                service: s.as_str().into(),
                operation: (*o).into(),
                status: *st,
                count: *c,
            })
            .collect();
        rows.sort_by(|a, b| (&a.service, &a.operation, a.status).cmp(&(&b.service, &b.operation, b.status)));
        rows
    }

    pub(crate) fn add_fault(&self, spec: FaultSpec) -> u64 {
        let mut n = lock(&self.next_fault);
        let id = *n;
        *n += 1;
        lock(&self.faults).push(Fault { id, remaining: spec.count, spec, applied: 0 });
        id
    }

    /// Find the first matching fault, consume one use, and return its action.
    pub(crate) fn take_fault(&self, svc: Service, op: &str, hsm: Option<&str>) -> Option<FaultAction> {
        let mut faults = lock(&self.faults);
        let mut hit = None;
        for (i, f) in faults.iter_mut().enumerate() {
            if f.spec.service != svc.as_str() {
                continue;
            }
            if let Some(o) = &f.spec.operation
                && o != op
            {
                continue;
            }
            if let Some(h) = &f.spec.hsm
                && Some(h.as_str()) != hsm
            {
                continue;
            }
            if f.remaining == Some(0) {
                continue;
            }
            if let Some(p) = f.spec.probability
                && util::random_unit() >= p
            {
                continue;
            }
            if let Some(r) = f.remaining.as_mut() {
                *r -= 1;
            }
            f.applied += 1;
            hit = Some((i, f.spec.action.clone()));
            break;
        }
        let (i, action) = hit?;
        if faults[i].remaining == Some(0) {
            faults.remove(i);
        }
        Some(action)
    }

    /// Take one token from the HSM's bucket for `class`. `Err(retry_after_secs)` when throttled;
    /// a throttled request still consumes budget (down to minus one second's worth).
    pub(crate) fn rate_limit(&self, hsm: &str, class: LimitClass) -> Result<(), u64> {
        if !lock(&self.settings).rate_limits {
            return Ok(());
        }
        let rate = class.rate();
        let cap = rate.max(1.0);
        let now = Instant::now();
        let mut b = lock(&self.buckets);
        let bucket = b.entry((hsm.to_string(), class)).or_insert(Bucket { tokens: cap, last: now });
        let dt = now.duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + dt * rate).min(cap);
        let ok = bucket.tokens >= 1.0;
        bucket.tokens = (bucket.tokens - 1.0).max(-cap);
        if ok {
            Ok(())
        } else {
            let deficit = 1.0 - bucket.tokens;
            Err(((deficit / rate).ceil() as u64).max(1))
        }
    }

    pub(crate) fn hsm_exists(&self, name: &str) -> bool {
        lock(&self.inner).hsms.contains_key(name)
    }

    pub(crate) fn reset_buckets(&self) {
        lock(&self.buckets).clear();
    }
}
