//! In-memory Managed HSM, directory and Antimatter domain behind the operator's `Remotes` seam:
//! the steps run against them in milliseconds. They keep the services' rules that the steps rely
//! on (one assignment per principal, role and scope; a key URL registered once; tags replaced
//! whole) and record every call.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Duration,
};

use async_trait::async_trait;
use rootkey_operator::{
    antimatter::{DomainTarget, PairingResult, RootKey},
    azure::{
        Identity,
        graph::Found,
        keys::{KeyInfo, RotationPolicy},
        rbac::{RoleAssignment, RoleAssignmentProperties},
    },
    cloud::HsmEndpoint,
    remote::{RemoteError, Service},
    remotes::{AntimatterDomain, Directory, ManagedHsm, Owners, Remotes, Tags},
};

pub const HSM_URL: &str = "https://contoso.managedhsm.azure.net";

/// How a call fails.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// An HTTP status with the service's error code and an optional `Retry-After` (seconds).
    Status(u16, &'static str, Option<u64>),
    Unreachable,
    Credentials,
}

/// The world the fakes serve; tests set it up and read it back.
pub struct World {
    pub keys: BTreeMap<String, KeyInfo>,
    /// key name → its rotation policy, once one was written
    pub rotation_policies: BTreeMap<String, RotationPolicy>,
    /// (scope, name) → assignment
    pub assignments: BTreeMap<(String, String), RoleAssignment>,
    /// application ID → service principal object ID
    pub principals: BTreeMap<String, String>,
    /// What Antimatter's providers call names as its Azure application.
    pub application_id: Option<String>,
    /// root key ID → key URL
    pub registrations: BTreeMap<String, String>,
    /// root key ID → description given at registration
    pub descriptions: BTreeMap<String, String>,
    pub active: Option<String>,
    /// Rotate calls still answering `has_more: true` after an activation.
    pub rotation_batches: u32,
    pub pairing: &'static str,
    /// Calls that fail, by operation name, until removed.
    pub faults: HashMap<&'static str, Fault>,
    /// Every call made, by operation name, in order.
    pub calls: Vec<&'static str>,
    /// AzureRootKeys that exist in the cluster, as (namespace, name).
    pub objects: std::collections::BTreeSet<(String, String)>,
    /// AzureRootKeys asking to activate, oldest first, as (domain ID, namespace, name).
    pub activators: Vec<(String, String, String)>,
    next_id: u32,
}

pub const APP_ID: &str = "8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70";

impl Default for World {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            rotation_policies: BTreeMap::new(),
            assignments: BTreeMap::new(),
            principals: BTreeMap::new(),
            application_id: Some(APP_ID.to_owned()),
            registrations: BTreeMap::new(),
            descriptions: BTreeMap::new(),
            active: None,
            rotation_batches: 0,
            pairing: "HEALTHY",
            faults: HashMap::new(),
            calls: Vec::new(),
            objects: Default::default(),
            activators: Vec::new(),
            next_id: 1,
        }
    }
}

impl World {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:04}", self.next_id)
    }

    /// A usable `oct-HSM` key at version `v1` with these tags.
    pub fn key(name: &str, tags: &[(&str, &str)]) -> KeyInfo {
        KeyInfo {
            kid: format!("{HSM_URL}/keys/{name}/v1"),
            version: "v1".to_owned(),
            kty: "oct-HSM".to_owned(),
            ops: vec!["wrapKey".to_owned(), "unwrapKey".to_owned()],
            enabled: true,
            not_before: None,
            expires: None,
            tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    pub fn count(&self, operation: &str) -> usize {
        self.calls.iter().filter(|c| **c == operation).count()
    }
}

fn service_of(operation: &str) -> Service {
    match operation.split('.').next() {
        Some("graph") => Service::Graph,
        Some("am") => Service::Antimatter,
        _ => Service::Hsm,
    }
}

fn fail(operation: &'static str, fault: Fault) -> RemoteError {
    let service = service_of(operation);
    // The operator names RBAC calls `rbac.*`; the permission hint is chosen by that name.
    match fault {
        Fault::Status(status, code, retry_after) => RemoteError::Status {
            service,
            operation,
            status,
            code: code.to_owned(),
            message: format!("fake {status}"),
            retry_after: retry_after.map(Duration::from_secs),
        },
        Fault::Unreachable => RemoteError::Unreachable { service, operation, detail: "connection refused".into() },
        Fault::Credentials => RemoteError::Credentials { detail: "AADSTS7000215: Invalid client secret".into() },
    }
}

fn not_found(operation: &'static str) -> RemoteError {
    fail(operation, Fault::Status(404, "NotFound", None))
}

#[derive(Default)]
pub struct Fake {
    pub world: Mutex<World>,
}

impl Fake {
    pub fn new(world: World) -> Self {
        Self { world: Mutex::new(world) }
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a call and answers with its fault, if one is set.
    fn call(&self, operation: &'static str) -> Result<std::sync::MutexGuard<'_, World>, RemoteError> {
        let mut world = self.world();
        world.calls.push(operation);
        match world.faults.get(operation) {
            Some(fault) => Err(fail(operation, *fault)),
            None => Ok(world),
        }
    }
}

struct Session<'a>(&'a Fake);

impl Remotes for Fake {
    fn hsm<'a>(&'a self, _: &'a HsmEndpoint, _: &'a Identity) -> Box<dyn ManagedHsm + 'a> {
        Box::new(Session(self))
    }

    fn directory<'a>(&'a self, _: &'a Identity) -> Box<dyn Directory + 'a> {
        Box::new(Session(self))
    }

    fn antimatter<'a>(&'a self, _: &'a DomainTarget) -> Box<dyn AntimatterDomain + 'a> {
        Box::new(Session(self))
    }

    fn owners(&self) -> &dyn Owners {
        self
    }
}

#[async_trait]
impl Owners for Fake {
    async fn exists(&self, namespace: &str, name: &str) -> bool {
        self.world().objects.contains(&(namespace.to_owned(), name.to_owned()))
    }

    fn first_activator(&self, domain_id: &str, _api_url: &str) -> Option<(String, String)> {
        let world = self.world();
        let (_, namespace, name) = world.activators.iter().find(|(domain, ..)| domain == domain_id)?;
        Some((namespace.clone(), name.clone()))
    }
}

#[async_trait]
impl ManagedHsm for Session<'_> {
    async fn key(&self, name: &str) -> Result<Option<KeyInfo>, RemoteError> {
        Ok(self.0.call("key.get")?.keys.get(name).cloned())
    }

    async fn create_key(&self, name: &str, size: u16, tags: Tags) -> Result<KeyInfo, RemoteError> {
        let mut world = self.0.call("key.create")?;
        assert!([128, 192, 256].contains(&size), "key size {size}");
        let key = KeyInfo { tags, ..World::key(name, &[]) };
        world.keys.insert(name.to_owned(), key.clone());
        Ok(key)
    }

    async fn set_key_tags(&self, name: &str, version: &str, tags: Tags) -> Result<KeyInfo, RemoteError> {
        let mut world = self.0.call("key.tags")?;
        let key = world.keys.get_mut(name).filter(|k| k.version == version).ok_or_else(|| not_found("key.tags"))?;
        key.tags = tags;
        Ok(key.clone())
    }

    async fn rotation_policy(&self, key: &str) -> Result<Option<RotationPolicy>, RemoteError> {
        let world = self.0.call("key.rotationpolicy.get")?;
        // As the HSM answers: a key without a policy has one without actions.
        Ok(world.keys.contains_key(key).then(|| world.rotation_policies.get(key).cloned().unwrap_or_default()))
    }

    async fn set_rotation_policy(&self, key: &str, policy: &RotationPolicy) -> Result<RotationPolicy, RemoteError> {
        let mut world = self.0.call("key.rotationpolicy.put")?;
        if !world.keys.contains_key(key) {
            return Err(not_found("key.rotationpolicy.put"));
        }
        world.rotation_policies.insert(key.to_owned(), policy.clone());
        Ok(policy.clone())
    }

    async fn assignment(&self, scope: &str, name: &str) -> Result<Option<RoleAssignment>, RemoteError> {
        Ok(self.0.call("rbac.get")?.assignments.get(&(scope.to_owned(), name.to_owned())).cloned())
    }

    async fn put_assignment(
        &self,
        scope: &str,
        name: &str,
        properties: &RoleAssignmentProperties,
    ) -> Result<RoleAssignment, RemoteError> {
        let mut world = self.0.call("rbac.put")?;
        let same = |a: &RoleAssignment| {
            a.properties.principal_id == properties.principal_id
                && a.properties.role_definition_id == properties.role_definition_id
        };
        // Managed HSM refuses a second assignment of one role to one principal at one scope.
        if world.assignments.iter().any(|((s, n), a)| s == scope && n != name && same(a)) {
            return Err(fail("rbac.put", Fault::Status(409, "MatchingRoleAssignmentExists", None)));
        }
        let assignment = RoleAssignment {
            name: name.to_owned(),
            properties: RoleAssignmentProperties { scope: Some(scope.to_owned()), ..properties.clone() },
        };
        world.assignments.insert((scope.to_owned(), name.to_owned()), assignment.clone());
        Ok(assignment)
    }

    async fn delete_assignment(&self, scope: &str, name: &str) -> Result<(), RemoteError> {
        self.0.call("rbac.delete")?.assignments.remove(&(scope.to_owned(), name.to_owned()));
        Ok(())
    }

    async fn assignments_at(&self, scope: &str) -> Result<Vec<RoleAssignment>, RemoteError> {
        let world = self.0.call("rbac.list")?;
        // As `$filter=atScope()` answers: the assignments at the scope and above it.
        let covers = |s: &str| s == "/" || s == scope || scope.starts_with(&format!("{s}/"));
        Ok(world.assignments.iter().filter(|((s, _), _)| covers(s)).map(|(_, a)| a.clone()).collect())
    }

    async fn warm_up(&self) {
        self.0.world().calls.push("hsm.token");
    }
}

#[async_trait]
impl Directory for Session<'_> {
    async fn service_principal(&self, app_id: &str) -> Result<(String, Found), RemoteError> {
        let mut world = self.0.call("graph.sp")?;
        if let Some(id) = world.principals.get(app_id) {
            return Ok((id.clone(), Found::Existing));
        }
        let id = world.id("sp-");
        world.principals.insert(app_id.to_owned(), id.clone());
        Ok((id, Found::Created))
    }

    async fn principal_application(&self, object_id: &str) -> Result<Option<String>, RemoteError> {
        let world = self.0.call("graph.sp.get")?;
        Ok(world.principals.iter().find(|(_, id)| *id == object_id).map(|(app, _)| app.clone()))
    }

    async fn warm_up(&self) {
        self.0.world().calls.push("graph.token");
    }
}

#[async_trait]
impl AntimatterDomain for Session<'_> {
    fn known_application_id(&self) -> Option<String> {
        None
    }

    async fn application_id(&self) -> Result<Option<String>, RemoteError> {
        Ok(self.0.call("am.providers")?.application_id.clone())
    }

    async fn root_keys(&self) -> Result<Vec<RootKey>, RemoteError> {
        let world = self.0.call("am.list")?;
        Ok(world
            .registrations
            .iter()
            .map(|(rek, url)| RootKey {
                rek_id: rek.clone(),
                source: "azure_am".into(),
                resource_path: url.clone(),
                description: world.descriptions.get(rek).cloned().unwrap_or_default(),
            })
            .collect())
    }

    async fn register(&self, description: &str, _: &str, key_url: &str) -> Result<String, RemoteError> {
        let mut world = self.0.call("am.add")?;
        if world.registrations.values().any(|u| u == key_url) {
            return Err(fail("am.add", Fault::Status(409, "keyURL", None)));
        }
        let id = world.id("rek-");
        world.registrations.insert(id.clone(), key_url.to_owned());
        world.descriptions.insert(id.clone(), description.to_owned());
        Ok(id)
    }

    async fn unregister(&self, rek_id: &str) -> Result<(), RemoteError> {
        let mut world = self.0.call("am.delete")?;
        // Antimatter refuses to delete a key in use.
        if world.active.as_deref() == Some(rek_id) {
            return Err(fail("am.delete", Fault::Status(409, "rootEncryptionKey", None)));
        }
        world.registrations.remove(rek_id).map(drop).ok_or_else(|| not_found("am.delete"))
    }

    async fn pairing_check(&self, rek_id: &str) -> Result<PairingResult, RemoteError> {
        let world = self.0.call("am.test")?;
        if !world.registrations.contains_key(rek_id) {
            return Err(not_found("am.test"));
        }
        Ok(PairingResult { status: world.pairing.to_owned(), status_message: String::new(), latency_ms: Some(12.0) })
    }

    async fn active_key(&self) -> Result<Option<RootKey>, RemoteError> {
        let world = self.0.call("am.active")?;
        Ok(world.active.clone().map(|rek_id| RootKey {
            resource_path: world.registrations.get(&rek_id).cloned().unwrap_or_default(),
            rek_id,
            source: String::new(),
            description: String::new(),
        }))
    }

    async fn activate(&self, rek_id: &str, _: bool) -> Result<bool, RemoteError> {
        let mut world = self.0.call("am.activate")?;
        world.active = Some(rek_id.to_owned());
        Ok(world.rotation_batches > 0)
    }

    async fn rotate(&self) -> Result<bool, RemoteError> {
        let mut world = self.0.call("am.rotate")?;
        world.rotation_batches = world.rotation_batches.saturating_sub(1);
        Ok(world.rotation_batches > 0)
    }
}
