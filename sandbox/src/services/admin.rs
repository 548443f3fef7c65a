//! The admin API (plain HTTP, loopback only), HTTP translation: inspection, counters, the request
//! log, faults, settings and direct changes to keys, role assignments and service principals.
//! The changes that take more than one model call live here too, for the Rust handle to share.

use super::hsm;
use crate::context::Context;
use crate::model::{AssignmentError, Key, KeyVersion, ModelError};
use crate::util;
use crate::wire::admin::{
    DEFAULT_ISSUER, DomainPatch, FaultSpec, FederatedTokenRequest, KeyPatch, SettingsPatch, error,
};
use crate::wire::{Req, Resp, Service};
use crate::world::KeySpec;
use serde_json::{Value, json};

/// Answer one admin request.
pub(crate) fn handle(cx: &Context, req: &Req) -> Resp {
    let segs = req.segments();
    let s: Vec<&str> = segs.iter().map(String::as_str).filter(|x| !x.is_empty()).collect();
    let now = cx.now();
    match (req.method.as_str(), s.as_slice()) {
        ("GET", ["healthz"]) => Resp::text(200, "ok"),
        ("GET", ["endpoints"]) => Resp::json(200, &json!(cx.endpoints)),
        ("GET", ["state"]) => Resp::json(200, &state_json(cx)),
        ("GET", ["counters"]) => counters(cx, req),
        ("DELETE", ["counters"]) | ("POST", ["counters", "reset"]) => {
            cx.control.reset_counters();
            Resp::empty(204)
        }
        ("GET", ["requests"]) => requests(cx, req),
        ("DELETE", ["requests"]) => {
            cx.control.clear_requests();
            Resp::empty(204)
        }
        ("GET", ["faults"]) => Resp::json(200, &json!({"faults": cx.control.faults()})),
        ("POST", ["faults"]) => add_fault(cx, req),
        ("DELETE", ["faults"]) => {
            cx.control.clear_faults();
            Resp::empty(204)
        }
        ("DELETE", ["faults", id]) => {
            if cx.control.remove_fault(id.parse().unwrap_or(0)) {
                Resp::empty(204)
            } else {
                error(404, "no such fault")
            }
        }
        ("GET", ["settings"]) => Resp::json(200, &json!(cx.control.settings())),
        ("POST", ["federated-tokens"]) => match parse::<FederatedTokenRequest>(req) {
            Ok(r) => match federated_token(cx, &r) {
                Some(token) => Resp::json(201, &json!({"token": token})),
                None => error(500, "signing failed"),
            },
            Err(r) => r,
        },
        ("PUT" | "PATCH", ["settings"]) => match parse::<SettingsPatch>(req) {
            Ok(p) => {
                cx.patch_settings(&p);
                Resp::json(200, &json!(cx.control.settings()))
            }
            Err(r) => r,
        },
        ("PATCH", ["hsms", h, "keys", k]) => match parse::<KeyPatch>(req) {
            Ok(p) => answer(cx.model.update_key(h, k, "", &p, now), |key| Resp::json(200, &json!(key))),
            Err(r) => r,
        },
        ("POST", ["hsms", h, "keys"]) => match parse::<KeySpec>(req) {
            Ok(spec) => answer(create_key(cx, h, &spec), |key| Resp::json(201, &json!(key))),
            Err(r) => r,
        },
        ("POST", ["hsms", h, "keys", k, "versions"]) => {
            answer(cx.model.add_version_like_latest(h, k, now), |v| Resp::json(201, &json!({"version": v})))
        }
        ("DELETE", ["hsms", h, "keys", k]) => answer(cx.model.soft_delete_key(h, k, now), |_| Resp::empty(204)),
        ("POST", ["hsms", h, "role-assignments"]) => post_role_assignment(cx, req, h),
        ("DELETE", ["hsms", h, "role-assignments", n]) => {
            removed(delete_role_assignment(cx, h, n), "no such role assignment")
        }
        ("PATCH", ["domains", d]) => match parse::<DomainPatch>(req) {
            Ok(p) => answer(cx.model.patch_domain(d, &p), |()| Resp::empty(204)),
            Err(r) => r,
        },
        ("DELETE", ["tenants", t, "service-principals", a]) => {
            removed(cx.model.remove_service_principal(t, a), "no such service principal")
        }
        _ => error(404, "unknown admin route"),
    }
}

/// A token of the sandbox's issuer key with the requested claims (`None` if signing failed).
pub(crate) fn federated_token(cx: &Context, r: &FederatedTokenRequest) -> Option<String> {
    let now = cx.now();
    let claims = json!({
        "iss": r.issuer.as_deref().unwrap_or(DEFAULT_ISSUER),
        "sub": r.subject,
        "aud": [r.audience.as_deref().unwrap_or("api://AzureADTokenExchange")],
        "iat": now, "nbf": now, "exp": now + r.lifetime_secs.unwrap_or(3600),
    });
    cx.issuer.sign(&claims).ok()
}

/// `ok` rendered, or the error: 404 for unknown things, 400 for invalid input.
fn answer<T>(r: Result<T, ModelError>, ok: impl FnOnce(T) -> Resp) -> Resp {
    match r {
        Ok(v) => ok(v),
        Err(ModelError::NotFound(m)) => error(404, m),
        Err(ModelError::Invalid(m)) => error(400, m),
    }
}

/// 204 when something was removed, else 404 with `absent`.
fn removed(r: Result<bool, ModelError>, absent: &str) -> Resp {
    answer(r, |found| if found { Resp::empty(204) } else { error(404, absent) })
}

/// A JSON body (an empty one is `{}`).
fn parse<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, Resp> {
    let body = if req.body.is_empty() { &b"{}"[..] } else { &req.body[..] };
    serde_json::from_slice(body).map_err(|e| error(400, format!("bad JSON body: {e}")))
}

fn counters(cx: &Context, req: &Req) -> Resp {
    let rows: Vec<_> = cx
        .control
        .counter_rows()
        .into_iter()
        .filter(|r| req.query_param("service").is_none_or(|s| s == r.service))
        .filter(|r| req.query_param("operation").is_none_or(|o| o == r.operation))
        .collect();
    let total: u64 = rows.iter().map(|r| r.count).sum();
    Resp::json(200, &json!({"counters": rows, "total": total}))
}

fn requests(cx: &Context, req: &Req) -> Resp {
    let since = req.query_param("since_ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    cx.control.with_requests(|log| {
        let rows: Vec<_> = log.iter().filter(|r| r.at_ms >= since).collect();
        Resp::json(200, &json!({"requests": rows, "total": rows.len()}))
    })
}

fn add_fault(cx: &Context, req: &Req) -> Resp {
    match parse::<FaultSpec>(req) {
        Ok(spec) if Service::parse(&spec.service).is_none() => {
            error(400, "service must be entra|graph|hsm|antimatter|oidc")
        }
        Ok(spec) => Resp::json(201, &json!({"id": cx.control.add_fault(spec)})),
        Err(r) => r,
    }
}

/// `{"role", "scope" (default `/`), "principal_id"}` → `{"name"}`.
fn post_role_assignment(cx: &Context, req: &Req, hsm: &str) -> Resp {
    let b: Value = match parse(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let field = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default();
    let scope = if field("scope").is_empty() { "/" } else { field("scope") };
    answer(add_role_assignment(cx, hsm, field("role"), scope, field("principal_id")), |n| {
        Resp::json(201, &json!({"name": n}))
    })
}

/// The full state as JSON (admin `GET /state`).
pub(crate) fn state_json(cx: &Context) -> Value {
    let settings = cx.control.settings();
    cx.model.read(|s| {
        let tenants: Vec<Value> = s
            .tenants
            .values()
            .map(|t| json!({"id": t.id, "name": t.name, "servicePrincipals": t.sps.values().collect::<Vec<_>>()}))
            .collect();
        let apps: Vec<Value> = s
            .apps
            .values()
            .map(|a| {
                json!({"appId": a.app_id, "name": a.name, "homeTenant": a.home_tenant, "multiTenant": a.multi_tenant,
                       "secrets": a.secrets.len(), "federatedCredentials": a.federated.len()})
            })
            .collect();
        let hsms: Vec<Value> = s
            .hsms
            .values()
            .map(|h| {
                let base = cx.hsm_url(&h.name);
                json!({
                    "name": h.name, "tenant": h.tenant, "url": base,
                    "keys": h.keys.values().map(|k| hsm::key_json(&base, k)).collect::<Vec<_>>(),
                    "deletedKeys": h.deleted.keys().collect::<Vec<_>>(),
                    "roleAssignments": h.assignments.values().map(hsm::assignment_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let domains: Vec<Value> = s
            .domains
            .values()
            .map(|d| json!({"id": d.id, "name": d.name, "activeKey": d.active, "pendingRotations": d.pending_rotations, "keys": d.keys,
                          "cell": d.cell, "cellAddressOverride": d.cell_address_override}))
            .collect();
        json!({"tenants": tenants, "applications": apps, "hsms": hsms, "domains": domains,
               "antimatterAppId": s.antimatter_app, "settings": settings})
    })
}

/// Create a key (or new versions of it) from a world key spec, validated as the HSM's create.
pub(crate) fn create_key(cx: &Context, hsm: &str, spec: &KeySpec) -> Result<Key, ModelError> {
    let now = cx.now();
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
    cx.model.create_key(hsm, &spec.name, || {
        let params = hsm::parse_new_key(&body).map_err(|r| r.body_text())?;
        Ok((0..spec.versions.max(1)).map(|_| KeyVersion::generate(&params, now)).collect())
    })
}

/// Assign a role under a fresh name; returns the name. A refusal carries the HSM's error body.
pub(crate) fn add_role_assignment(
    cx: &Context,
    hsm: &str,
    role: &str,
    scope: &str,
    principal_id: &str,
) -> Result<String, ModelError> {
    let effective_at = cx.control.after(cx.control.settings().rbac_propagation_secs);
    match cx.model.assign_role(hsm, scope, &util::uuid_v4(), role, principal_id, effective_at) {
        Ok(a) => Ok(a.name),
        Err(AssignmentError::NoSuchHsm) => Err(ModelError::NotFound(format!("hsm {hsm}"))),
        Err(e) => Err(ModelError::Invalid(hsm::assignment_refusal(&e).body_text())),
    }
}

/// Delete a role assignment by name (any case); `Ok(false)` if absent.
pub(crate) fn delete_role_assignment(cx: &Context, hsm: &str, name: &str) -> Result<bool, ModelError> {
    cx.model.remove_role_assignment(hsm, &name.to_ascii_lowercase(), None).map(|a| a.is_some())
}
