//! Seeding: the state a world file describes, checked as it is built.

use super::directory::{App, Federated, ServicePrincipal, Tenant};
use super::domains::{Domain, Registration};
use super::hsm::{Hsm, RoleAssignment};
use super::keys::{DeletedKey, Key, KeyParams, KeyVersion, default_key_ops};
use super::state::State;
use crate::roles;
use crate::util::{self, unix_now};
use crate::world::{AntimatterSpec, HsmSpec, KeySpec, RoleAssignmentSpec, World, WorldError};
use std::collections::BTreeMap;

type Tenants = BTreeMap<String, Tenant>;
type Apps = BTreeMap<String, App>;

/// The state a world describes, after checking it (IDs, references, names, roles, scopes).
pub(crate) fn seed(world: &World) -> Result<State, WorldError> {
    let now = unix_now();
    let (tenants, apps) = seed_directory(world)?;
    let mut hsms = BTreeMap::new();
    for h in &world.hsms {
        hsms.insert(h.name.clone(), seed_hsm(h, &tenants, now)?);
    }
    let (antimatter_app, domains) = match &world.antimatter {
        Some(am) => seed_antimatter(am, &apps)?,
        None => (None, BTreeMap::new()),
    };
    Ok(State { tenants, apps, hsms, domains, antimatter_app })
}

/// Tenants, app registrations with their home-tenant service principals, and further principals.
fn seed_directory(world: &World) -> Result<(Tenants, Apps), WorldError> {
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
                replicated_at: 0,
            },
        );
        let federated = a
            .federated_credentials
            .iter()
            .map(|f| Federated { issuer: f.issuer.clone(), subject: f.subject.clone(), audiences: f.audiences.clone() })
            .collect();
        let app = App {
            app_id: app_id.clone(),
            name: a.name.clone(),
            home_tenant: home,
            multi_tenant: a.multi_tenant,
            secrets: a.secrets.clone(),
            federated,
        };
        apps.insert(app_id, app);
    }
    for sp in &world.service_principals {
        let app_id = sp.app_id.to_lowercase();
        let app =
            apps.get(&app_id).ok_or_else(|| WorldError::Invalid(format!("service principal: unknown app {app_id}")))?;
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
                replicated_at: 0,
            },
        );
    }
    Ok((tenants, apps))
}

fn seed_hsm(h: &HsmSpec, tenants: &Tenants, now: i64) -> Result<Hsm, WorldError> {
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
        let a = seed_assignment(h, ra, tenant)?;
        assignments.insert(a.name.clone(), a);
    }
    let mut keys = BTreeMap::new();
    let mut deleted = BTreeMap::new();
    for k in &h.keys {
        let key = seed_key(k, now)?;
        if k.deleted {
            deleted.insert(k.name.clone(), DeletedKey::new(key, now));
        } else {
            keys.insert(k.name.clone(), key);
        }
    }
    Ok(Hsm { name: h.name.clone(), tenant: tenant_id, location: h.location.clone(), keys, deleted, assignments })
}

/// A role assignment of HSM `h`; an `app_id` names that app's principal in the HSM's tenant.
fn seed_assignment(h: &HsmSpec, ra: &RoleAssignmentSpec, tenant: &Tenant) -> Result<RoleAssignment, WorldError> {
    let role = roles::find(&ra.role)
        .ok_or_else(|| WorldError::Invalid(format!("hsm {}: unknown role {}", h.name, ra.role)))?;
    let principal = match (&ra.principal_id, &ra.app_id) {
        (Some(p), _) => p.to_lowercase(),
        (None, Some(app)) => tenant.sps.get(&app.to_lowercase()).map(|sp| sp.id.clone()).ok_or_else(|| {
            WorldError::Invalid(format!("hsm {}: app {app} has no service principal in tenant {}", h.name, tenant.id))
        })?,
        (None, None) => {
            return Err(WorldError::Invalid(format!("hsm {}: assignment without principal", h.name)));
        }
    };
    if !roles::valid_scope(&ra.scope) {
        return Err(WorldError::Invalid(format!("hsm {}: bad scope {}", h.name, ra.scope)));
    }
    Ok(RoleAssignment {
        name: ra.name.clone().unwrap_or_else(util::uuid_v4),
        scope: ra.scope.clone(),
        role_definition: role.id.to_string(),
        principal_id: principal,
        effective_at: 0,
    })
}

/// Antimatter's application (multi-tenant, with a secret) and the domains, each with its default key.
fn seed_antimatter(am: &AntimatterSpec, apps: &Apps) -> Result<(Option<String>, BTreeMap<String, Domain>), WorldError> {
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
    let mut domains = BTreeMap::new();
    for d in &am.domains {
        if !util::is_domain_id(&d.id) {
            return Err(WorldError::Invalid(format!("domain id {} is not dm- + 11 base58", d.id)));
        }
        if let Some(cell) = &d.cell
            && !util::is_cell_name(cell)
        {
            return Err(WorldError::Invalid(format!("domain {}: cell {cell} is not 1-32 of a-z, 0-9, -", d.id)));
        }
        let default = Registration::default_key();
        domains.insert(
            d.id.clone(),
            Domain {
                id: d.id.clone(),
                name: d.name.clone(),
                api_keys: d.api_keys.clone(),
                active: default.rek_id.clone(),
                keys: vec![default],
                pending_rotations: 0,
                still_wrapping: Vec::new(),
                enable_bypass: false,
                cell: d.cell.clone(),
                cell_address_override: d.cell_address_override.clone(),
            },
        );
    }
    Ok((Some(app_id), domains))
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
    let params = KeyParams {
        kty: kty.to_string(),
        key_size: size,
        crv: spec.crv.clone(),
        key_ops: spec.key_ops.clone().unwrap_or_else(|| default_key_ops(kty)),
        tags: spec.tags.clone(),
        enabled: spec.enabled,
        nbf: spec.nbf,
        exp: spec.exp,
    };
    let mut versions = Vec::new();
    for _ in 0..spec.versions.max(1) {
        let mut v = KeyVersion::generate(&params, now);
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
    Ok(Key { name: spec.name.clone(), versions, rotation_policy: None })
}
