//! # rootkey-sandbox
//!
//! A wire-level emulator of every remote service the rootkey operator talks to — Entra ID
//! (token endpoint, OpenID configuration, instance discovery), Microsoft Graph
//! (`servicePrincipals`), Azure Managed HSM (keys, AES key wrap, local RBAC, soft delete,
//! bearer challenge, `api-version`) and the Antimatter API v2 (domains, root encryption keys,
//! pairing check, active key, rotation) — strict enough that official clients (azure-identity,
//! azure-keyvault-keys, azure-keyvault-administration, antimatter-api) work against it.
//!
//! One HTTPS listener on 127.0.0.1 **and** \[::1\] (same port) serves all of them and
//! dispatches on the `Host` header:
//!
//! | host | service |
//! |---|---|
//! | `login.sandbox.localhost` | Entra ID (authority) |
//! | `graph.sandbox.localhost` | Microsoft Graph |
//! | `<hsm>.managedhsm.sandbox.localhost` | that Managed HSM |
//! | `api.sandbox.localhost` | Antimatter (`/v2`) |
//! | `antimatter-<cell>.sandbox.localhost` | Antimatter, for the domains on that cell |
//! | `oidc.sandbox.localhost` | the sandbox's own OpenID issuer (federated assertions for tests) |
//!
//! `*.localhost` resolves to loopback through glibc's `nss-myhostname`. The sandbox generates a
//! CA and a server certificate at start and writes `ca.pem` into its state directory.
//! The HSM DNS suffix includes the port (`managedhsm.sandbox.localhost:PORT`); tokens for an HSM
//! are requested with scope `https://managedhsm.sandbox.localhost:PORT/.default`, which is also
//! the `resource` of the 401 challenge. The Python SDK's challenge-resource check (request
//! netloc must end with `.` + the resource netloc) passes because both netlocs carry the port.
//!
//! A plain-HTTP admin API on a separate loopback port inspects state, counts requests, injects
//! faults and switches rate limits; [`SandboxHandle`] offers the same in-process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rootkey_sandbox::{Sandbox, SandboxConfig, World};
//! let world = World::from_file("deploy/sandbox/world.yaml")?;
//! let sb = Sandbox::start(SandboxConfig { world, ..SandboxConfig::default() }).await?;
//! println!("authority {} ca {}", sb.authority_url(), sb.ca_pem_path().display());
//! sb.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Not emulated: RSA/EC cryptography (RSA-HSM and EC-HSM keys exist with placeholder public
//! parts for negative tests; crypto calls on them answer 400), key import/export/backup/restore,
//! custom role definitions, security domain.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Layers, bottom to top: a module imports only modules listed before it (see README.md).
// Leaves: helpers, JWT, RBAC built-ins, the world file, PKI, AES.
mod crypto;
mod federation;
mod jwt;
pub mod roles;
pub mod tls;
mod util;
pub mod world;
// A test client (uses `tls`).
pub mod client;
// Wire types: requests, responses, JSON and error shapes.
mod wire;
// The model (every change to the state) and, beside it, the control plane.
mod control;
mod model;
mod tokens;
// What a handler is given, then the services (HTTP translation).
mod context;
mod services;
// The server, on top.
mod server;

pub use control::{LimitClass, REQUEST_LOG_CAP};
pub use model::ModelError as AdminError;
pub use model::{DeletedKey, Key, KeyVersion, Registration, RoleAssignment, RotationPolicy, ServicePrincipal};
pub use wire::Service;
pub use wire::admin::{
    CounterRow, DEFAULT_ISSUER, DomainPatch, Endpoints, Fault, FaultAction, FaultSpec, FederatedTokenRequest, KeyPatch,
    RequestRecord, Settings, SettingsPatch,
};
pub use wire::antimatter::{KeyUrl, parse_key_url};
pub use wire::hsm::API_VERSIONS;
pub use world::World;

use context::Context;
use control::Control;
use model::Model;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokens::Tokens;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Operation names used by counters and fault injection, per service.
pub const OPERATIONS: &[(&str, &[&str])] = &[
    ("entra", &["token", "openid-configuration", "instance-discovery", "jwks", "unknown"]),
    ("graph", &["sp.get", "sp.list", "sp.create", "sp.upsert", "unknown"]),
    ("oidc", &["openid-configuration", "jwks", "unknown"]),
    (
        "hsm",
        &[
            "key.create",
            "key.get",
            "key.list",
            "key.versions",
            "key.update",
            "key.delete",
            "key.recover",
            "key.rotate",
            "key.rotationpolicy.get",
            "key.rotationpolicy.put",
            "key.wrap",
            "key.unwrap",
            "key.encrypt",
            "key.decrypt",
            "deletedkey.get",
            "deletedkey.list",
            "deletedkey.purge",
            "rbac.definition.list",
            "rbac.definition.get",
            "rbac.assignment.put",
            "rbac.assignment.get",
            "rbac.assignment.list",
            "rbac.assignment.delete",
            "unknown",
        ],
    ),
    (
        "antimatter",
        &[
            "authenticate",
            "providers.list",
            "rek.add",
            "rek.list",
            "rek.get",
            "rek.delete",
            "rek.test",
            "active.get",
            "active.set",
            "rotate",
            "settings.get",
            "settings.put",
            "unknown",
        ],
    ),
];

/// How to start a sandbox.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// The world to seed.
    pub world: World,
    /// HTTPS port (0 = random).
    pub port: u16,
    /// Admin port (0 = random).
    pub admin_port: u16,
    /// Where `ca.pem` and `endpoints.json` go (None = a fresh temporary directory).
    pub state_dir: Option<PathBuf>,
    /// Override the world's latency setting.
    pub latency_ms: Option<u64>,
    /// Override the world's rate-limit setting.
    pub rate_limits: Option<bool>,
    /// CA certificates (PEM) trusted, beside the sandbox's own, when Entra fetches a federated
    /// issuer's OpenID configuration and keys over HTTPS (e.g. a test kube-apiserver's CA).
    pub issuer_ca_pem: Option<Vec<u8>>,
}

/// Errors starting a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid world.
    #[error(transparent)]
    World(#[from] world::WorldError),
    /// Binding or writing files.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Certificate generation.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// TLS configuration.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The issuer CA bundle or the test issuer's key.
    #[error("federated issuers: {0}")]
    IssuerCa(String),
}

/// Entry point.
pub struct Sandbox;

/// A running sandbox. Dropping it without [`SandboxHandle::shutdown`] leaves the tasks running
/// until the Tokio runtime ends.
pub struct SandboxHandle {
    cx: Arc<Context>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ca_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    state_dir: PathBuf,
    admin_port: u16,
}

impl Sandbox {
    /// Start a sandbox on the current Tokio runtime.
    pub async fn start(cfg: SandboxConfig) -> Result<SandboxHandle, StartError> {
        let pki = tls::generate()?;
        let server_cfg = tls::server_config(&pki)?;
        let (listeners, port) = server::bind_dual(cfg.port).await?;
        let admin = tokio::net::TcpListener::bind(("127.0.0.1", cfg.admin_port)).await?;
        let admin_port = admin.local_addr()?.port();
        let state_dir = match cfg.state_dir {
            Some(d) => d,
            None => std::env::temp_dir().join(format!("rootkey-sandbox-{}-{port}", std::process::id())),
        };
        std::fs::create_dir_all(&state_dir)?;
        let ca_path = state_dir.join("ca.pem");
        std::fs::write(&ca_path, &pki.ca_pem)?;
        let suffix = format!("managedhsm.sandbox.localhost:{port}");
        let ep = Endpoints {
            port,
            authority_url: format!("https://login.sandbox.localhost:{port}"),
            graph_url: format!("https://graph.sandbox.localhost:{port}"),
            hsm_resource: format!("https://{suffix}"),
            hsms: cfg.world.hsms.iter().map(|h| (h.name.clone(), format!("https://{}.{suffix}", h.name))).collect(),
            hsm_dns_suffix: suffix,
            antimatter_url: format!("https://api.sandbox.localhost:{port}/v2"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            ca_pem_path: ca_path.display().to_string(),
        };
        let mut world = cfg.world;
        if let Some(l) = cfg.latency_ms {
            world.settings.latency_ms = l;
        }
        if let Some(r) = cfg.rate_limits {
            world.settings.rate_limits = r;
        }
        let mut issuer_cas = vec![pki.ca_der.clone()];
        if let Some(pem) = &cfg.issuer_ca_pem {
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                issuer_cas.push(cert.map_err(|e| StartError::IssuerCa(e.to_string()))?);
            }
        }
        let cx = Arc::new(Context {
            model: Model::from_world(&world)?,
            control: Control::new(&world.settings),
            tokens: Tokens::new(),
            issuer: federation::TestIssuer::generate().map_err(|_| StartError::IssuerCa("no P-256 key".into()))?,
            issuer_tls: tls::client_config_trusting(&issuer_cas)?,
            endpoints: ep.clone(),
        });
        std::fs::write(state_dir.join("endpoints.json"), serde_json::to_string_pretty(&ep).unwrap_or_default())?;
        let (stop, rx) = watch::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(server::serve_tls(l, acceptor.clone(), cx.clone(), rx.clone())));
        }
        tasks.push(tokio::spawn(server::serve_admin(admin, cx.clone(), rx)));
        Ok(SandboxHandle { cx, stop, tasks, ca_pem: pki.ca_pem, ca_der: pki.ca_der, state_dir, admin_port })
    }
}

impl SandboxHandle {
    /// HTTPS port.
    pub fn port(&self) -> u16 {
        self.cx.endpoints.port
    }
    /// Admin port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }
    /// `http://127.0.0.1:ADMIN_PORT`.
    pub fn admin_url(&self) -> String {
        self.cx.endpoints.admin_url.clone()
    }
    /// Path of the CA certificate (PEM) to point clients at.
    pub fn ca_pem_path(&self) -> PathBuf {
        PathBuf::from(&self.cx.endpoints.ca_pem_path)
    }
    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &rustls::pki_types::CertificateDer<'static> {
        &self.ca_der
    }
    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
    /// All endpoints.
    pub fn endpoints(&self) -> Endpoints {
        self.cx.endpoints.clone()
    }
    /// `https://login.sandbox.localhost:PORT`.
    pub fn authority_url(&self) -> String {
        self.cx.endpoints.authority_url.clone()
    }
    /// `https://graph.sandbox.localhost:PORT` (also the Graph token audience; scope + `/.default`).
    pub fn graph_url(&self) -> String {
        self.cx.endpoints.graph_url.clone()
    }
    /// `managedhsm.sandbox.localhost:PORT`.
    pub fn hsm_dns_suffix(&self) -> String {
        self.cx.endpoints.hsm_dns_suffix.clone()
    }
    /// `https://managedhsm.sandbox.localhost:PORT` (HSM token audience and challenge resource).
    pub fn hsm_resource(&self) -> String {
        self.cx.endpoints.hsm_resource.clone()
    }
    /// `https://<name>.managedhsm.sandbox.localhost:PORT`.
    pub fn hsm_url(&self, name: &str) -> String {
        self.cx.hsm_url(name)
    }
    /// `https://api.sandbox.localhost:PORT/v2`.
    pub fn antimatter_url(&self) -> String {
        self.cx.endpoints.antimatter_url.clone()
    }
    /// A test client trusting this sandbox's CA.
    pub fn client(&self) -> client::Client {
        match client::Client::new(&self.ca_der, self.port()) {
            Ok(c) => c,
            Err(e) => panic!("client config: {e}"),
        }
    }

    /// Keys of an HSM (live, not deleted).
    pub fn keys(&self, hsm: &str) -> Vec<Key> {
        self.cx.model.read(|s| s.hsms.get(hsm).map(|h| h.keys.values().cloned().collect()).unwrap_or_default())
    }
    /// One key.
    pub fn key(&self, hsm: &str, name: &str) -> Option<Key> {
        self.cx.model.read(|s| s.hsms.get(hsm).and_then(|h| h.keys.get(name).cloned()))
    }
    /// Soft-deleted keys of an HSM.
    pub fn deleted_keys(&self, hsm: &str) -> Vec<DeletedKey> {
        self.cx.model.read(|s| s.hsms.get(hsm).map(|h| h.deleted.values().cloned().collect()).unwrap_or_default())
    }
    /// Role assignments of an HSM.
    pub fn role_assignments(&self, hsm: &str) -> Vec<RoleAssignment> {
        self.cx.model.read(|s| s.hsms.get(hsm).map(|h| h.assignments.values().cloned().collect()).unwrap_or_default())
    }
    /// Root encryption keys registered with a domain (including the built-in default key).
    pub fn registrations(&self, domain: &str) -> Vec<Registration> {
        self.cx.model.read(|s| s.domains.get(domain).map(|d| d.keys.clone()).unwrap_or_default())
    }
    /// The active root encryption key ID of a domain.
    pub fn active_key(&self, domain: &str) -> Option<String> {
        self.cx.model.read(|s| s.domains.get(domain).map(|d| d.active.clone()))
    }
    /// Make a root encryption key active as a person would in the dashboard (an emergency
    /// rotation); `false` for an unknown domain.
    pub fn set_active_key(&self, domain: &str, rek_id: &str) -> bool {
        let batches = self.cx.control.settings().rotate_batches;
        self.cx.model.activate(domain, rek_id, false, batches).is_some()
    }
    /// Service principals in a tenant.
    pub fn service_principals(&self, tenant: &str) -> Vec<ServicePrincipal> {
        self.cx.model.read(|s| {
            s.tenants.get(&tenant.to_ascii_lowercase()).map(|t| t.sps.values().cloned().collect()).unwrap_or_default()
        })
    }
    /// The full state as JSON (same as admin `GET /state`).
    pub fn state_json(&self) -> serde_json::Value {
        services::admin::state_json(&self.cx)
    }
    /// Request counters.
    pub fn counters(&self) -> Vec<CounterRow> {
        self.cx.control.counter_rows()
    }
    /// Sum of counters for a service and operation (all statuses).
    pub fn count(&self, service: &str, operation: &str) -> u64 {
        self.counters().iter().filter(|r| r.service == service && r.operation == operation).map(|r| r.count).sum()
    }
    /// Counter for a service, operation and status.
    pub fn count_status(&self, service: &str, operation: &str, status: u16) -> u64 {
        self.counters()
            .iter()
            .filter(|r| r.service == service && r.operation == operation && r.status == status)
            .map(|r| r.count)
            .sum()
    }
    /// The request log: every request in arrival order, with time, route, status and whether it
    /// carried credentials (bounded by [`REQUEST_LOG_CAP`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.cx.control.with_requests(<[RequestRecord]>::to_vec)
    }
    /// Empty the request log.
    pub fn clear_requests(&self) {
        self.cx.control.clear_requests();
    }
    /// Reset counters.
    pub fn reset_counters(&self) {
        self.cx.control.reset_counters();
    }
    /// Install a fault; returns its ID.
    pub fn add_fault(&self, spec: FaultSpec) -> u64 {
        self.cx.control.add_fault(spec)
    }
    /// Installed faults.
    pub fn faults(&self) -> Vec<Fault> {
        self.cx.control.faults()
    }
    /// Remove all faults.
    pub fn clear_faults(&self) {
        self.cx.control.clear_faults();
    }
    /// Current settings.
    pub fn settings(&self) -> Settings {
        self.cx.control.settings()
    }
    /// A federated assertion from the sandbox's own OpenID issuer (see [`FederatedTokenRequest`]).
    pub fn federated_token(&self, request: &FederatedTokenRequest) -> Option<String> {
        services::admin::federated_token(&self.cx, request)
    }
    /// Change settings (latency, rate limits, clock offset, lifetimes).
    pub fn patch_settings(&self, p: SettingsPatch) {
        self.cx.patch_settings(&p);
    }
    /// Fixed latency per request.
    pub fn set_latency_ms(&self, ms: u64) {
        self.patch_settings(SettingsPatch { latency_ms: Some(ms), ..Default::default() });
    }
    /// Per-HSM rate limits on/off.
    pub fn set_rate_limits(&self, on: bool) {
        self.patch_settings(SettingsPatch { rate_limits: Some(on), ..Default::default() });
    }
    /// Shift the sandbox clock (token expiry, key nbf/exp checks) by `secs`.
    pub fn set_clock_offset(&self, secs: i64) {
        self.patch_settings(SettingsPatch { clock_offset_secs: Some(secs), ..Default::default() });
    }
    /// Change the latest version of a key directly (tags, enabled, nbf, exp, key_ops).
    pub fn patch_key(&self, hsm: &str, name: &str, patch: KeyPatch) -> Result<Key, AdminError> {
        self.cx.model.update_key(hsm, name, "", &patch, self.cx.now())
    }
    /// Replace a key's tags (latest version).
    pub fn set_key_tags(
        &self,
        hsm: &str,
        name: &str,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<Key, AdminError> {
        self.patch_key(hsm, name, KeyPatch { tags: Some(tags), ..Default::default() })
    }
    /// Add a version to a key (copies the latest's attributes and tags); returns the version.
    pub fn add_key_version(&self, hsm: &str, name: &str) -> Result<String, AdminError> {
        self.cx.model.add_version_like_latest(hsm, name, self.cx.now())
    }
    /// Create a key (or new versions of it) directly.
    pub fn create_key(&self, hsm: &str, spec: world::KeySpec) -> Result<Key, AdminError> {
        services::admin::create_key(&self.cx, hsm, &spec)
    }
    /// Soft-delete a key directly.
    pub fn soft_delete_key(&self, hsm: &str, name: &str) -> Result<(), AdminError> {
        self.cx.model.soft_delete_key(hsm, name, self.cx.now()).map(drop)
    }
    /// Add a role assignment directly; returns its name.
    pub fn add_role_assignment(
        &self,
        hsm: &str,
        role: &str,
        scope: &str,
        principal_id: &str,
    ) -> Result<String, AdminError> {
        services::admin::add_role_assignment(&self.cx, hsm, role, scope, principal_id)
    }
    /// Delete a role assignment by name; `Ok(false)` if absent.
    pub fn delete_role_assignment(&self, hsm: &str, name: &str) -> Result<bool, AdminError> {
        services::admin::delete_role_assignment(&self.cx, hsm, name)
    }
    /// Move a domain to a cell, or make its `authenticate` answer another `cellAddress`.
    pub fn patch_domain(&self, domain: &str, patch: DomainPatch) -> Result<(), AdminError> {
        self.cx.model.patch_domain(domain, &patch)
    }
    /// `https://antimatter-<cell>.sandbox.localhost:PORT`, the host serving a domain on `cell`.
    pub fn cell_url(&self, cell: &str) -> String {
        format!("https://{}:{}", wire::antimatter::cell_host(Some(cell)), self.port())
    }
    /// Remove an app's service principal from a tenant.
    pub fn remove_service_principal(&self, tenant: &str, app_id: &str) -> Result<bool, AdminError> {
        self.cx.model.remove_service_principal(tenant, app_id)
    }
    /// Stop listening and close connections.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
