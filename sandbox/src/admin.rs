//! The plain-HTTP admin API (loopback only) and the state mutations it shares with the Rust handle.

use crate::hsm;
use crate::http::{Req, Resp};
use crate::state::{FaultSpec, Key, Shared, lock, new_version};
use crate::util;
use crate::world::KeySpec;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A direct change to the latest version of a key (admin API `PATCH /hsms/{hsm}/keys/{name}`).
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
    #[serde(default, with = "double_option")]
    pub nbf: Option<Option<i64>>,
    /// Set `exp` (`Some(None)` clears; JSON `null`).
    #[serde(default, with = "double_option")]
    pub exp: Option<Option<i64>>,
    /// Replace `key_ops`.
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Option<i64>>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
        Option::<i64>::deserialize(d).map(Some)
    }
}

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
}

/// Errors from state mutations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Unknown HSM, key, tenant, ...
    #[error("not found: {0}")]
    NotFound(String),
    /// Invalid input.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl Shared {
    pub(crate) fn state_json(&self) -> Value {
        let inner = lock(&self.inner);
        let tenants: Vec<Value> = inner
            .tenants
            .values()
            .map(|t| json!({"id": t.id, "name": t.name, "servicePrincipals": t.sps.values().collect::<Vec<_>>()}))
            .collect();
        let apps: Vec<Value> = inner
            .apps
            .values()
            .map(|a| {
                json!({"appId": a.app_id, "name": a.name, "homeTenant": a.home_tenant, "multiTenant": a.multi_tenant,
                             "secrets": a.secrets.len(), "federatedCredentials": a.federated.len()})
            })
            .collect();
        let hsms: Vec<Value> = inner
            .hsms
            .values()
            .map(|h| {
                let base = format!("https://{}.{}", h.name, self.ep.hsm_dns_suffix);
                json!({
                    "name": h.name, "tenant": h.tenant, "url": base,
                    "keys": h.keys.values().map(|k| json!({"name": k.name, "versions": k.versions.iter().map(|v| hsm::bundle(&base, &k.name, v)).collect::<Vec<_>>()})).collect::<Vec<_>>(),
                    "deletedKeys": h.deleted.keys().collect::<Vec<_>>(),
                    "roleAssignments": h.assignments.values().map(hsm::assignment_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let domains: Vec<Value> = inner
            .domains
            .values()
            .map(|d| json!({"id": d.id, "name": d.name, "activeKey": d.active, "pendingRotations": d.pending_rotations, "keys": d.keys}))
            .collect();
        json!({"tenants": tenants, "applications": apps, "hsms": hsms, "domains": domains,
               "antimatterAppId": inner.antimatter_app, "settings": *lock(&self.settings)})
    }

    pub(crate) fn patch_settings(&self, p: &SettingsPatch) {
        let mut s = lock(&self.settings);
        if let Some(v) = p.latency_ms {
            s.latency_ms = v;
        }
        if let Some(v) = p.rate_limits {
            s.rate_limits = v;
        }
        if let Some(v) = p.clock_offset_secs {
            s.clock_offset_secs = v;
        }
        if let Some(v) = p.token_lifetime_secs {
            s.token_lifetime_secs = v;
        }
        if let Some(v) = p.antimatter_token_lifetime_secs {
            s.antimatter_token_lifetime_secs = v;
        }
        if let Some(v) = p.rotate_batches {
            s.rotate_batches = v;
        }
        drop(s);
        self.reset_buckets();
    }

    pub(crate) fn patch_key(&self, hsm: &str, name: &str, p: &KeyPatch) -> Result<Key, AdminError> {
        let now = self.now();
        let mut inner = lock(&self.inner);
        let h = inner.hsms.get_mut(hsm).ok_or_else(|| AdminError::NotFound(format!("hsm {hsm}")))?;
        let k = h.keys.get_mut(name).ok_or_else(|| AdminError::NotFound(format!("key {name}")))?;
        let v = k.versions.last_mut().ok_or_else(|| AdminError::NotFound(format!("key {name}")))?;
        if let Some(t) = &p.tags {
            v.tags = t.clone();
        }
        if let Some(e) = p.enabled {
            v.enabled = e;
        }
        if let Some(n) = p.nbf {
            v.nbf = n;
        }
        if let Some(e) = p.exp {
            v.exp = e;
        }
        if let Some(o) = &p.key_ops {
            v.key_ops = o.clone();
        }
        v.updated = now;
        Ok(k.clone())
    }

    pub(crate) fn add_key_version(&self, hsm: &str, name: &str) -> Result<String, AdminError> {
        let now = self.now();
        let mut inner = lock(&self.inner);
        let h = inner.hsms.get_mut(hsm).ok_or_else(|| AdminError::NotFound(format!("hsm {hsm}")))?;
        let k = h.keys.get_mut(name).ok_or_else(|| AdminError::NotFound(format!("key {name}")))?;
        let l = k.latest().ok_or_else(|| AdminError::NotFound(format!("key {name}")))?.clone();
        let v = new_version(
            &l.kty,
            l.key_size,
            l.crv.clone(),
            l.key_ops.clone(),
            l.tags.clone(),
            l.enabled,
            l.nbf,
            l.exp,
            now,
        );
        let ver = v.version.clone();
        k.versions.push(v);
        Ok(ver)
    }

    pub(crate) fn create_key(&self, hsm: &str, spec: &KeySpec) -> Result<Key, AdminError> {
        let now = self.now();
        let mut body = json!({"kty": spec.kty, "tags": spec.tags, "attributes": {"enabled": spec.enabled, "nbf": spec.nbf, "exp": spec.exp}});
        if spec.kty == "oct-HSM" {
            body["key_size"] = json!(spec.key_size.unwrap_or(256));
        } else if let Some(s) = spec.key_size {
            body["key_size"] = json!(s);
        }
        if let Some(c) = &spec.crv {
            body["crv"] = json!(c);
        }
        if let Some(o) = &spec.key_ops {
            body["key_ops"] = json!(o);
        }
        let mut inner = lock(&self.inner);
        let h = inner.hsms.get_mut(hsm).ok_or_else(|| AdminError::NotFound(format!("hsm {hsm}")))?;
        if !crate::roles::valid_key_name(&spec.name) {
            return Err(AdminError::Invalid(format!("key name {}", spec.name)));
        }
        let k = h.keys.entry(spec.name.clone()).or_insert_with(|| Key { name: spec.name.clone(), versions: vec![] });
        for _ in 0..spec.versions.max(1) {
            let v = hsm::create_version(&body, now)
                .map_err(|r| AdminError::Invalid(String::from_utf8_lossy(&r.body).into_owned()))?;
            k.versions.push(v);
        }
        Ok(k.clone())
    }

    pub(crate) fn soft_delete_key(&self, hsm: &str, name: &str) -> Result<(), AdminError> {
        let now = self.now();
        let mut inner = lock(&self.inner);
        let h = inner.hsms.get_mut(hsm).ok_or_else(|| AdminError::NotFound(format!("hsm {hsm}")))?;
        let key = h.keys.remove(name).ok_or_else(|| AdminError::NotFound(format!("key {name}")))?;
        h.deleted.insert(
            name.to_string(),
            crate::state::DeletedKey {
                key,
                deleted_date: now,
                scheduled_purge_date: now + hsm::RECOVERABLE_DAYS * 86_400,
            },
        );
        Ok(())
    }

    pub(crate) fn delete_assignment(&self, hsm: &str, name: &str) -> Result<bool, AdminError> {
        let mut inner = lock(&self.inner);
        let h = inner.hsms.get_mut(hsm).ok_or_else(|| AdminError::NotFound(format!("hsm {hsm}")))?;
        Ok(h.assignments.remove(&name.to_ascii_lowercase()).is_some())
    }

    pub(crate) fn add_assignment(
        &self,
        hsm: &str,
        role: &str,
        scope: &str,
        principal: &str,
    ) -> Result<String, AdminError> {
        let mut inner = lock(&self.inner);
        let h = inner.hsms.get_mut(hsm).ok_or_else(|| AdminError::NotFound(format!("hsm {hsm}")))?;
        hsm::insert_assignment(h, scope, &util::uuid_v4(), role, principal)
            .map(|a| a.name)
            .map_err(|r| AdminError::Invalid(String::from_utf8_lossy(&r.body).into_owned()))
    }

    pub(crate) fn remove_sp(&self, tenant: &str, app_id: &str) -> Result<bool, AdminError> {
        let mut inner = lock(&self.inner);
        let t = inner
            .tenants
            .get_mut(&tenant.to_ascii_lowercase())
            .ok_or_else(|| AdminError::NotFound(format!("tenant {tenant}")))?;
        Ok(t.sps.remove(&app_id.to_ascii_lowercase()).is_some())
    }
}

fn admin_err(e: AdminError) -> Resp {
    match e {
        AdminError::NotFound(m) => Resp::json(404, &json!({"error": m})),
        AdminError::Invalid(m) => Resp::json(400, &json!({"error": m})),
    }
}

fn parse<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, Resp> {
    let body = if req.body.is_empty() { &b"{}"[..] } else { &req.body[..] };
    serde_json::from_slice(body).map_err(|e| Resp::json(400, &json!({"error": format!("bad JSON body: {e}")})))
}

/// Handle one admin request.
pub(crate) fn handle(shared: &Shared, req: &Req) -> Resp {
    let segs = req.segments();
    let s: Vec<&str> = segs.iter().map(String::as_str).filter(|x| !x.is_empty()).collect();
    match (req.method.as_str(), s.as_slice()) {
        ("GET", ["healthz"]) => Resp::text(200, "ok"),
        ("GET", ["endpoints"]) => Resp::json(200, &json!(shared.ep)),
        ("GET", ["state"]) => Resp::json(200, &shared.state_json()),
        ("GET", ["counters"]) => {
            let rows: Vec<_> = shared
                .counter_rows()
                .into_iter()
                .filter(|r| req.q("service").is_none_or(|s| s == r.service))
                .filter(|r| req.q("operation").is_none_or(|o| o == r.operation))
                .collect();
            let total: u64 = rows.iter().map(|r| r.count).sum();
            Resp::json(200, &json!({"counters": rows, "total": total}))
        }
        ("DELETE", ["counters"]) | ("POST", ["counters", "reset"]) => {
            lock(&shared.counters).clear();
            Resp::empty(204)
        }
        ("GET", ["requests"]) => {
            let log = lock(&shared.requests);
            let since = req.q("since_ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let rows: Vec<_> = log.iter().filter(|r| r.at_ms >= since).collect();
            Resp::json(200, &json!({"requests": rows, "total": rows.len()}))
        }
        ("DELETE", ["requests"]) => {
            lock(&shared.requests).clear();
            Resp::empty(204)
        }
        ("GET", ["faults"]) => Resp::json(200, &json!({"faults": *lock(&shared.faults)})),
        ("POST", ["faults"]) => match parse::<FaultSpec>(req) {
            Ok(spec) => {
                if crate::state::Service::parse(&spec.service).is_none() {
                    return Resp::json(400, &json!({"error": "service must be entra|graph|hsm|antimatter"}));
                }
                Resp::json(201, &json!({"id": shared.add_fault(spec)}))
            }
            Err(r) => r,
        },
        ("DELETE", ["faults"]) => {
            lock(&shared.faults).clear();
            Resp::empty(204)
        }
        ("DELETE", ["faults", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let mut f = lock(&shared.faults);
            let before = f.len();
            f.retain(|x| x.id != id);
            if f.len() < before { Resp::empty(204) } else { Resp::json(404, &json!({"error": "no such fault"})) }
        }
        ("GET", ["settings"]) => Resp::json(200, &json!(*lock(&shared.settings))),
        ("PUT" | "PATCH", ["settings"]) => match parse::<SettingsPatch>(req) {
            Ok(p) => {
                shared.patch_settings(&p);
                Resp::json(200, &json!(*lock(&shared.settings)))
            }
            Err(r) => r,
        },
        ("PATCH", ["hsms", h, "keys", k]) => match parse::<KeyPatch>(req) {
            Ok(p) => shared.patch_key(h, k, &p).map_or_else(admin_err, |key| Resp::json(200, &json!(key))),
            Err(r) => r,
        },
        ("POST", ["hsms", h, "keys"]) => match parse::<KeySpec>(req) {
            Ok(spec) => shared.create_key(h, &spec).map_or_else(admin_err, |key| Resp::json(201, &json!(key))),
            Err(r) => r,
        },
        ("POST", ["hsms", h, "keys", k, "versions"]) => {
            shared.add_key_version(h, k).map_or_else(admin_err, |v| Resp::json(201, &json!({"version": v})))
        }
        ("DELETE", ["hsms", h, "keys", k]) => shared.soft_delete_key(h, k).map_or_else(admin_err, |_| Resp::empty(204)),
        ("POST", ["hsms", h, "role-assignments"]) => {
            let b: Value = match parse(req) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let g = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let scope = if g("scope").is_empty() { "/".to_string() } else { g("scope") };
            shared
                .add_assignment(h, &g("role"), &scope, &g("principal_id"))
                .map_or_else(admin_err, |n| Resp::json(201, &json!({"name": n})))
        }
        ("DELETE", ["hsms", h, "role-assignments", n]) => match shared.delete_assignment(h, n) {
            Ok(true) => Resp::empty(204),
            Ok(false) => Resp::json(404, &json!({"error": "no such role assignment"})),
            Err(e) => admin_err(e),
        },
        ("DELETE", ["tenants", t, "service-principals", a]) => match shared.remove_sp(t, a) {
            Ok(true) => Resp::empty(204),
            Ok(false) => Resp::json(404, &json!({"error": "no such service principal"})),
            Err(e) => admin_err(e),
        },
        _ => Resp::json(404, &json!({"error": "unknown admin route"})),
    }
}
