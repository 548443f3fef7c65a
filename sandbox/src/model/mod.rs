//! The model: the emulated services' state behind one lock, and every change to it — keys and
//! versions, tags and attributes, soft delete, role assignments, service principals, domain
//! registrations, the active key and rotation. The service modules and the admin API read it
//! through [`Model::read`] and change it only through its methods. Imports the record modules
//! below it, [`crate::wire`] (the key patch) and [`crate::world`] (seeding).

mod directory;
mod domains;
mod hsm;
mod keys;
mod seed;
mod state;

pub use directory::ServicePrincipal;
pub(crate) use directory::{App, Tenant};
pub use domains::Registration;
pub(crate) use domains::{Domain, RegistrationError};
pub use hsm::RoleAssignment;
pub(crate) use hsm::{AssignmentError, Hsm};
pub use keys::{DeletedKey, Key, KeyVersion, RotationPolicy};
pub(crate) use keys::{KeyParams, RECOVERABLE_DAYS, default_key_ops};
pub(crate) use state::State;

use crate::util::lock;
use crate::wire::admin::{DomainPatch, KeyPatch};
use crate::world::{World, WorldError};
use std::sync::Mutex;

/// Errors from changes made through the admin API or the Rust handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Unknown HSM, key, tenant, ...
    #[error("not found: {0}")]
    NotFound(String),
    /// Invalid input.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Why a service principal was not created or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrincipalError {
    NoSuchTenant,
    /// The app does not exist, or is single-tenant and registered in another tenant.
    InvalidApp,
    AlreadyExists,
    NotFound,
}

/// What an upsert of a service principal did.
pub(crate) enum Upserted {
    Updated,
    Created(ServicePrincipal),
}

/// The state and the only way to change it.
pub(crate) struct Model {
    state: Mutex<State>,
}

impl Model {
    pub fn from_world(world: &World) -> Result<Model, WorldError> {
        Ok(Model { state: Mutex::new(seed::seed(world)?) })
    }

    /// Read the state under the lock.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.state))
    }

    fn with_hsm<R>(&self, hsm: &str, f: impl FnOnce(&mut Hsm) -> Result<R, ModelError>) -> Result<R, ModelError> {
        let mut state = lock(&self.state);
        let h = state.hsms.get_mut(hsm).ok_or_else(|| ModelError::NotFound(format!("hsm {hsm}")))?;
        f(h)
    }

    fn with_domain<R>(&self, domain: &str, f: impl FnOnce(&mut Domain) -> R) -> Option<R> {
        lock(&self.state).domains.get_mut(domain).map(f)
    }

    // Keys.

    /// Add a version to a key, creating the key if it has none.
    pub fn add_key_version(&self, hsm: &str, name: &str, version: KeyVersion) -> Result<(), ModelError> {
        self.with_hsm(hsm, |h| {
            h.keys.entry(name.to_string()).or_insert_with(|| Key::empty(name)).versions.push(version);
            Ok(())
        })
    }

    /// Create a key, or add versions to it: `versions` makes them once the name is known to be valid.
    pub fn create_key(
        &self,
        hsm: &str,
        name: &str,
        versions: impl FnOnce() -> Result<Vec<KeyVersion>, String>,
    ) -> Result<Key, ModelError> {
        self.with_hsm(hsm, |h| {
            if !crate::roles::valid_key_name(name) {
                return Err(ModelError::Invalid(format!("key name {name}")));
            }
            let k = h.keys.entry(name.to_string()).or_insert_with(|| Key::empty(name));
            k.versions.extend(versions().map_err(ModelError::Invalid)?);
            Ok(k.clone())
        })
    }

    /// Add a version with the latest's parameters and fresh material; returns its ID.
    pub fn add_version_like_latest(&self, hsm: &str, name: &str, now: i64) -> Result<String, ModelError> {
        self.with_hsm(hsm, |h| {
            let k = h.keys.get_mut(name).ok_or_else(|| ModelError::NotFound(format!("key {name}")))?;
            k.rotate(now).ok_or_else(|| ModelError::NotFound(format!("key {name}")))
        })
    }

    /// Replaces a key's rotation policy; returns it as stored.
    pub fn set_rotation_policy(
        &self,
        hsm: &str,
        name: &str,
        mut policy: RotationPolicy,
        now: i64,
    ) -> Result<RotationPolicy, ModelError> {
        self.with_hsm(hsm, |h| {
            let k = h.keys.get_mut(name).ok_or_else(|| ModelError::NotFound(format!("key {name}")))?;
            policy.created = k.rotation_policy.as_ref().map_or(now, |p| p.created);
            policy.updated = now;
            k.rotation_policy = Some(policy.clone());
            Ok(policy)
        })
    }

    /// Rotation by policy, evaluated when asked (every request to an HSM, and when the sandbox
    /// clock moves): each key of `hsm` (every HSM when `None`) whose policy's `Rotate` action is
    /// due at `now` gets one new version.
    pub fn rotate_due_keys(&self, hsm: Option<&str>, now: i64) {
        let mut state = lock(&self.state);
        for (_, h) in state.hsms.iter_mut().filter(|(n, _)| hsm.is_none_or(|want| want == n.as_str())) {
            for key in h.keys.values_mut() {
                key.rotate_if_due(now);
            }
        }
    }

    /// Change one version (the empty ID names the latest); returns the key.
    pub fn update_key(
        &self,
        hsm: &str,
        name: &str,
        version: &str,
        patch: &KeyPatch,
        now: i64,
    ) -> Result<Key, ModelError> {
        self.with_hsm(hsm, |h| {
            let k = h.keys.get_mut(name).ok_or_else(|| ModelError::NotFound(format!("key {name}")))?;
            k.version_mut(version).ok_or_else(|| ModelError::NotFound(format!("key {name}")))?.apply(patch, now);
            Ok(k.clone())
        })
    }

    pub fn soft_delete_key(&self, hsm: &str, name: &str, now: i64) -> Result<DeletedKey, ModelError> {
        self.with_hsm(hsm, |h| {
            let key = h.keys.remove(name).ok_or_else(|| ModelError::NotFound(format!("key {name}")))?;
            let deleted = DeletedKey::new(key, now);
            h.deleted.insert(name.to_string(), deleted.clone());
            Ok(deleted)
        })
    }

    pub fn purge_deleted_key(&self, hsm: &str, name: &str) -> Result<(), ModelError> {
        self.with_hsm(hsm, |h| {
            h.deleted.remove(name).map(drop).ok_or_else(|| ModelError::NotFound(format!("deleted key {name}")))
        })
    }

    /// Bring a soft-deleted key back; `Invalid` when a live key has the name.
    pub fn recover_key(&self, hsm: &str, name: &str) -> Result<Key, ModelError> {
        self.with_hsm(hsm, |h| {
            if h.keys.contains_key(name) {
                return Err(ModelError::Invalid(format!("key {name} exists")));
            }
            let d = h.deleted.remove(name).ok_or_else(|| ModelError::NotFound(format!("deleted key {name}")))?;
            h.keys.insert(name.to_string(), d.key.clone());
            Ok(d.key)
        })
    }

    // Local RBAC.

    pub fn assign_role(
        &self,
        hsm: &str,
        scope: &str,
        name: &str,
        role: &str,
        principal: &str,
        effective_at: i64,
    ) -> Result<RoleAssignment, AssignmentError> {
        let mut state = lock(&self.state);
        let h = state.hsms.get_mut(hsm).ok_or(AssignmentError::NoSuchHsm)?;
        h.assign(scope, name, role, principal, effective_at)
    }

    /// Remove an assignment by name, only if it is at `scope` when one is given.
    pub fn remove_role_assignment(
        &self,
        hsm: &str,
        name: &str,
        scope: Option<&str>,
    ) -> Result<Option<RoleAssignment>, ModelError> {
        self.with_hsm(hsm, |h| {
            if h.assignments.get(name).is_some_and(|a| scope.is_none_or(|s| a.scope == s)) {
                Ok(h.assignments.remove(name))
            } else {
                Ok(None)
            }
        })
    }

    // Directory.

    /// Create the service principal of `app_id` in tenant `tid`, replicated at `replicated_at`.
    pub fn create_service_principal(
        &self,
        tid: &str,
        app_id: &str,
        display_name: Option<&str>,
        replicated_at: i64,
    ) -> Result<ServicePrincipal, PrincipalError> {
        let mut state = lock(&self.state);
        create_principal(&mut state, tid, app_id, display_name, replicated_at)
    }

    /// Rename the service principal of `app_id` in `tid`, or create it when `create_if_missing`.
    pub fn upsert_service_principal(
        &self,
        tid: &str,
        app_id: &str,
        display_name: Option<&str>,
        create_if_missing: bool,
        replicated_at: i64,
    ) -> Result<Upserted, PrincipalError> {
        let mut state = lock(&self.state);
        let tenant = state.tenants.get_mut(tid).ok_or(PrincipalError::NoSuchTenant)?;
        if let Some(sp) = tenant.sps.get_mut(app_id) {
            if let Some(n) = display_name {
                sp.display_name = n.to_string();
            }
            return Ok(Upserted::Updated);
        }
        if !create_if_missing {
            return Err(PrincipalError::NotFound);
        }
        create_principal(&mut state, tid, app_id, display_name, replicated_at).map(Upserted::Created)
    }

    /// Remove an app's service principal from a tenant; `Ok(false)` if it has none.
    pub fn remove_service_principal(&self, tenant: &str, app_id: &str) -> Result<bool, ModelError> {
        let mut state = lock(&self.state);
        let t = state
            .tenants
            .get_mut(&tenant.to_ascii_lowercase())
            .ok_or_else(|| ModelError::NotFound(format!("tenant {tenant}")))?;
        Ok(t.sps.remove(&app_id.to_ascii_lowercase()).is_some())
    }

    // Antimatter domains.

    /// Register a root encryption key; returns its ID.
    pub fn register_key(
        &self,
        domain: &str,
        resource_path: &str,
        description: String,
        tenant_id: String,
    ) -> Result<String, RegistrationError> {
        self.with_domain(domain, |d| d.register(resource_path, description, tenant_id))
            .unwrap_or(Err(RegistrationError::NoSuchDomain))
    }

    /// Delete a registration named as [`Domain::resolve`] accepts.
    pub fn delete_registration(&self, domain: &str, id: &str) -> Result<(), RegistrationError> {
        self.with_domain(domain, |d| d.unregister(id)).unwrap_or(Err(RegistrationError::NoSuchDomain))
    }

    /// Remember the last pairing-check status of a registration.
    pub fn record_pairing_status(&self, domain: &str, rek_id: &str, status: &str) {
        self.with_domain(domain, |d| {
            if let Some(r) = d.keys.iter_mut().find(|k| k.rek_id == rek_id) {
                r.last_status = Some(status.to_string());
            }
        });
    }

    /// Make `rek_id` active (a change starts `batches` rotation batches; `rotate_batch` runs one);
    /// returns whether batches remain, `None` for an unknown domain.
    pub fn activate(&self, domain: &str, rek_id: &str, rotate_batch: bool, batches: u32) -> Option<bool> {
        self.with_domain(domain, |d| {
            d.set_active(rek_id, batches);
            if rotate_batch { d.rotate_batch() } else { d.pending_rotations > 0 }
        })
    }

    /// Run one rotation batch; returns whether batches remain, `None` for an unknown domain.
    pub fn rotate(&self, domain: &str) -> Option<bool> {
        self.with_domain(domain, Domain::rotate_batch)
    }

    /// Move a domain to a cell and/or change what its `authenticate` answers as `cellAddress`.
    pub fn patch_domain(&self, domain: &str, patch: &DomainPatch) -> Result<(), ModelError> {
        if let Some(Some(cell)) = &patch.cell
            && !crate::util::is_cell_name(cell)
        {
            return Err(ModelError::Invalid(format!("cell {cell} is not 1-32 of a-z, 0-9, -")));
        }
        self.with_domain(domain, |d| {
            if let Some(cell) = &patch.cell {
                d.cell.clone_from(cell);
            }
            if let Some(address) = &patch.cell_address_override {
                d.cell_address_override.clone_from(address);
            }
        })
        .ok_or_else(|| ModelError::NotFound(format!("domain {domain}")))
    }

    pub fn set_bypass(&self, domain: &str, enable: bool) {
        self.with_domain(domain, |d| d.enable_bypass = enable);
    }
}

fn create_principal(
    state: &mut State,
    tid: &str,
    app_id: &str,
    display_name: Option<&str>,
    replicated_at: i64,
) -> Result<ServicePrincipal, PrincipalError> {
    let app =
        state.apps.get(app_id).filter(|a| a.multi_tenant || a.home_tenant == tid).ok_or(PrincipalError::InvalidApp)?;
    let name = display_name.unwrap_or(&app.name).to_string();
    let tenant = state.tenants.get_mut(tid).ok_or(PrincipalError::NoSuchTenant)?;
    if tenant.sps.contains_key(app_id) {
        return Err(PrincipalError::AlreadyExists);
    }
    let sp = ServicePrincipal {
        id: crate::util::uuid_v4(),
        app_id: app_id.to_string(),
        display_name: name,
        graph_roles: vec![],
        replicated_at,
    };
    tenant.sps.insert(app_id.to_string(), sp.clone());
    Ok(sp)
}
