//! Managed HSM data plane: keys, crypto, soft delete, local RBAC, challenge, api-version.

use crate::entra::{self, Claims, TokenError};
use crate::http::{Req, Resp};
use crate::roles::{self, ROLE_DEF_PREFIX, action};
use crate::state::{DeletedKey, Hsm, Key, KeyVersion, LimitClass, RoleAssignment, Shared, lock, new_version};
use crate::util;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// API versions the sandbox accepts (7.4–7.6 and the azure-keyvault-* Python SDK default).
pub const API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", "2025-07-01"];
const LATEST_API: &str = "2025-07-01";
/// Recovery level reported for keys (soft delete on, purge protection off).
pub const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
/// Soft-delete retention.
pub const RECOVERABLE_DAYS: i64 = 90;
const KEY_OPS: &[&str] = &["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export"];
const MAX_PAGE: usize = 25;

#[derive(Debug, PartialEq)]
enum Route {
    Create(String),
    List,
    Versions(String),
    Get(String, String),
    Update(String, String),
    Delete(String),
    Crypto(String, String, &'static str),
    DeletedList,
    DeletedGet(String),
    DeletedPurge(String),
    Recover(String),
    RoleDefs(String),
    RoleDef(String, String),
    Assignments(String),
    Assignment(String, String),
    Unknown,
}

fn route(req: &Req) -> Route {
    let segs = req.segments();
    let m = req.method.as_str();
    if let Some(i) = segs.iter().position(|s| s.eq_ignore_ascii_case("providers"))
        && segs.get(i + 1).is_some_and(|s| s.eq_ignore_ascii_case("Microsoft.Authorization"))
    {
        let scope_parts: Vec<&str> = segs[..i].iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
        let scope = format!("/{}", scope_parts.join("/"));
        let kind = segs.get(i + 2).map(|s| s.to_ascii_lowercase()).unwrap_or_default();
        let name = segs.get(i + 3).cloned().filter(|s| !s.is_empty());
        let extra = segs.len() > i + 4;
        return match (kind.as_str(), name, m, extra) {
            ("roledefinitions", None, "GET", false) => Route::RoleDefs(scope),
            ("roledefinitions", Some(n), "GET", false) => Route::RoleDef(scope, n),
            ("roleassignments", None, "GET", false) => Route::Assignments(scope),
            ("roleassignments", Some(n), "GET" | "PUT" | "DELETE", false) => Route::Assignment(scope, n),
            _ => Route::Unknown,
        };
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (m, s.as_slice()) {
        ("GET", ["keys"] | ["keys", ""]) => Route::List,
        ("POST", ["keys", n, "create"]) => Route::Create(n.to_string()),
        ("GET", ["keys", n, "versions"]) => Route::Versions(n.to_string()),
        ("GET", ["keys", n]) => Route::Get(n.to_string(), String::new()),
        ("DELETE", ["keys", n]) => Route::Delete(n.to_string()),
        ("GET", ["keys", n, v]) => Route::Get(n.to_string(), v.to_string()),
        ("PATCH", ["keys", n, v]) => Route::Update(n.to_string(), v.to_string()),
        ("PATCH", ["keys", n]) => Route::Update(n.to_string(), String::new()),
        ("POST", ["keys", n, v, op]) => {
            let op = match op.to_ascii_lowercase().as_str() {
                "wrapkey" => "wrapKey",
                "unwrapkey" => "unwrapKey",
                "encrypt" => "encrypt",
                "decrypt" => "decrypt",
                _ => return Route::Unknown,
            };
            Route::Crypto(n.to_string(), v.to_string(), op)
        }
        ("GET", ["deletedkeys"] | ["deletedkeys", ""]) => Route::DeletedList,
        ("GET", ["deletedkeys", n]) => Route::DeletedGet(n.to_string()),
        ("DELETE", ["deletedkeys", n]) => Route::DeletedPurge(n.to_string()),
        ("POST", ["deletedkeys", n, "recover"]) => Route::Recover(n.to_string()),
        _ => Route::Unknown,
    }
}

pub(crate) fn classify(req: &Req) -> &'static str {
    match route(req) {
        Route::Create(_) => "key.create",
        Route::List => "key.list",
        Route::Versions(_) => "key.versions",
        Route::Get(..) => "key.get",
        Route::Update(..) => "key.update",
        Route::Delete(_) => "key.delete",
        Route::Crypto(_, _, "wrapKey") => "key.wrap",
        Route::Crypto(_, _, "unwrapKey") => "key.unwrap",
        Route::Crypto(_, _, "encrypt") => "key.encrypt",
        Route::Crypto(..) => "key.decrypt",
        Route::DeletedList => "deletedkey.list",
        Route::DeletedGet(_) => "deletedkey.get",
        Route::DeletedPurge(_) => "deletedkey.purge",
        Route::Recover(_) => "key.recover",
        Route::RoleDefs(_) => "rbac.definition.list",
        Route::RoleDef(..) => "rbac.definition.get",
        Route::Assignments(_) => "rbac.assignment.list",
        Route::Assignment(..) => match req.method.as_str() {
            "PUT" => "rbac.assignment.put",
            "DELETE" => "rbac.assignment.delete",
            _ => "rbac.assignment.get",
        },
        Route::Unknown => "unknown",
    }
}

/// Rate-limit class of an HSM operation.
pub(crate) fn limit_class(op: &str) -> Option<LimitClass> {
    Some(match op {
        "key.create" | "key.delete" | "key.recover" | "deletedkey.purge" => LimitClass::Create,
        "key.wrap" | "key.unwrap" | "key.encrypt" | "key.decrypt" => LimitClass::Crypto,
        o if o.starts_with("rbac.") => LimitClass::Rbac,
        "unknown" => return None,
        _ => LimitClass::Read,
    })
}

pub(crate) fn err(status: u16, code: &str, message: impl Into<String>) -> Resp {
    Resp::json(status, &json!({"error": {"code": code, "message": message.into()}}))
}

fn err_inner(status: u16, code: &str, message: impl Into<String>, inner: &str) -> Resp {
    Resp::json(status, &json!({"error": {"code": code, "message": message.into(), "innererror": {"code": inner}}}))
}

fn bad(message: impl Into<String>) -> Resp {
    err(400, "BadParameter", message)
}

fn key_not_found(name: &str) -> Resp {
    err(
        404,
        "KeyNotFound",
        format!(
            "A key with (name/id) {name} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn challenge(shared: &Shared, tenant: &str, message: &str) -> Resp {
    err(401, "Unauthorized", message).with(
        "www-authenticate",
        format!(
            "Bearer authorization=\"{}/{}\", resource=\"{}\"",
            shared.ep.authority_url, tenant, shared.ep.hsm_resource
        ),
    )
}

/// Key bundle JSON (`KeyBundle`); symmetric material is never included.
pub(crate) fn bundle(base: &str, name: &str, v: &KeyVersion) -> Value {
    let mut key = Map::new();
    key.insert("kid".into(), json!(format!("{base}/keys/{name}/{}", v.version)));
    key.insert("kty".into(), json!(v.kty));
    key.insert("key_ops".into(), json!(v.key_ops));
    for (k, val) in &v.public {
        key.insert(k.clone(), json!(val));
    }
    if let Some(c) = &v.crv {
        key.insert("crv".into(), json!(c));
    }
    let mut out = json!({"key": key, "attributes": attributes(v)});
    if !v.tags.is_empty() {
        out["tags"] = json!(v.tags);
    }
    out
}

fn attributes(v: &KeyVersion) -> Value {
    let mut a = json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
        "exportable": false,
    });
    if let Some(n) = v.nbf {
        a["nbf"] = json!(n);
    }
    if let Some(e) = v.exp {
        a["exp"] = json!(e);
    }
    a
}

fn item(kid: String, v: &KeyVersion) -> Value {
    let mut out = json!({"kid": kid, "attributes": attributes(v)});
    if !v.tags.is_empty() {
        out["tags"] = json!(v.tags);
    }
    out
}

fn deleted_bundle(base: &str, name: &str, d: &DeletedKey) -> Value {
    let mut b = d.key.latest().map(|v| bundle(base, name, v)).unwrap_or_else(|| json!({}));
    b["recoveryId"] = json!(format!("{base}/deletedkeys/{name}"));
    b["deletedDate"] = json!(d.deleted_date);
    b["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
    b
}

fn forbidden(hsm: &Hsm, c: &Claims, act: &str, resource: &str) -> Resp {
    err_inner(
        403,
        "Forbidden",
        format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss=https://sts.windows.net/{}/\r\nAction: '{act}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {};location={}\r\n",
            c.appid, c.oid, c.tid, hsm.name, hsm.location
        ),
        "AccessDenied",
    )
}

/// Does `principal` hold a role granting `act` on `resource` in this HSM?
pub(crate) fn authorized(hsm: &Hsm, principal: &str, act: &str, resource: &str) -> bool {
    hsm.assignments.values().any(|a| {
        a.principal_id.eq_ignore_ascii_case(principal)
            && roles::scope_covers(&a.scope, resource)
            && roles::grants(&a.role_definition, act)
    })
}

fn page<T>(
    req: &Req,
    items: &[T],
    link: impl Fn(usize, usize) -> String,
) -> Result<(usize, usize, Option<String>), Resp> {
    let max = match req.q("maxresults") {
        None => MAX_PAGE,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(bad(format!("Invalid value for maxresults: {m}. It must be between 1 and {MAX_PAGE}."))),
        },
    };
    let start = match req.q("$skiptoken") {
        None => 0,
        Some(t) => t.parse::<usize>().map_err(|_| bad("Invalid $skiptoken"))?,
    };
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| link(end, max));
    Ok((start.min(items.len()), end, next))
}

pub(crate) fn handle(shared: &Arc<Shared>, name: &str, req: &Req, op: &'static str) -> Resp {
    let now = shared.now();
    let base = format!("https://{name}.{}", shared.ep.hsm_dns_suffix);
    let tenant = {
        let inner = lock(&shared.inner);
        match inner.hsms.get(name) {
            Some(h) => h.tenant.clone(),
            None => return Resp::text(404, "no such Managed HSM (the DNS name does not resolve in Azure)"),
        }
    };
    // Authentication first: the SDKs' challenge flow sends the first request without a token.
    let Some(tok) = req.bearer() else {
        return challenge(shared, &tenant, "AKV10000: Request is missing a Bearer or PoP token.");
    };
    let claims = match entra::validate(shared, tok) {
        Ok(c) => c,
        Err(TokenError::Expired) => return challenge(shared, &tenant, "Token is expired."),
        Err(TokenError::Malformed) => {
            return challenge(shared, &tenant, "AKV10001: Invalid token: signature validation failed.");
        }
    };
    if claims.aud != shared.ep.hsm_resource && claims.aud != format!("{}/", shared.ep.hsm_resource) {
        return challenge(
            shared,
            &tenant,
            &format!("AKV10022: Invalid audience. Expected {}, found: {}.", shared.ep.hsm_resource, claims.aud),
        );
    }
    if claims.tid != tenant {
        return challenge(
            shared,
            &tenant,
            &format!(
                "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, found https://sts.windows.net/{}/.",
                claims.tid
            ),
        );
    }
    match req.q("api-version") {
        None => return bad("The 'api-version' query parameter is missing."),
        Some(v) if !API_VERSIONS.contains(&v) => {
            return bad(format!(
                "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API})."
            ));
        }
        _ => {}
    }
    let api = req.q("api-version").unwrap_or(LATEST_API).to_string();
    let _ = op;
    let mut inner = lock(&shared.inner);
    let Some(hsm) = inner.hsms.get_mut(name) else {
        return Resp::text(404, "no such Managed HSM");
    };
    let oid = claims.oid.clone();
    macro_rules! authz {
        ($act:expr, $res:expr) => {
            let res: &str = &$res;
            if !authorized(hsm, &oid, $act, res) {
                return forbidden(hsm, &claims, $act, res);
            }
        };
    }
    match route(req) {
        Route::Create(n) => {
            if !roles::valid_key_name(&n) {
                return bad(format!("The request URI contains an invalid name: {n}"));
            }
            authz!(action::KEY_CREATE, format!("/keys/{n}"));
            if hsm.deleted.contains_key(&n) {
                return err(
                    409,
                    "Conflict",
                    format!(
                        "Key {n} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."
                    ),
                );
            }
            let body = req.json().unwrap_or(Value::Null);
            match create_version(&body, now) {
                Ok(v) => {
                    let b = bundle(&base, &n, &v);
                    hsm.keys
                        .entry(n.clone())
                        .or_insert_with(|| Key { name: n.clone(), versions: vec![] })
                        .versions
                        .push(v);
                    Resp::json(200, &b)
                }
                Err(r) => r,
            }
        }
        Route::List => {
            authz!(action::KEY_READ, "/keys");
            let all: Vec<(&String, &Key)> = hsm.keys.iter().collect();
            let (s, e, next) = match page(req, &all, |start, max| {
                format!("{base}/keys?api-version={api}&$skiptoken={start}&maxresults={max}")
            }) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let value: Vec<Value> =
                all[s..e].iter().filter_map(|(n, k)| k.latest().map(|v| item(format!("{base}/keys/{n}"), v))).collect();
            Resp::json(200, &json!({"value": value, "nextLink": next}))
        }
        Route::Versions(n) => {
            authz!(action::KEY_READ, format!("/keys/{n}"));
            let Some(key) = hsm.keys.get(&n) else { return key_not_found(&n) };
            let (s, e, next) = match page(req, &key.versions, |start, max| {
                format!("{base}/keys/{n}/versions?api-version={api}&$skiptoken={start}&maxresults={max}")
            }) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let value: Vec<Value> =
                key.versions[s..e].iter().map(|v| item(format!("{base}/keys/{n}/{}", v.version), v)).collect();
            Resp::json(200, &json!({"value": value, "nextLink": next}))
        }
        Route::Get(n, ver) => {
            authz!(action::KEY_READ, format!("/keys/{n}"));
            match find_version(hsm, &n, &ver) {
                Some(v) => Resp::json(200, &bundle(&base, &n, v)),
                None => key_not_found(&n),
            }
        }
        Route::Update(n, ver) => {
            authz!(action::KEY_WRITE, format!("/keys/{n}"));
            let body = req.json().unwrap_or_else(|| json!({}));
            let Some(v) = find_version_mut(hsm, &n, &ver) else { return key_not_found(&n) };
            if let Err(r) = apply_update(v, &body, now) {
                return r;
            }
            Resp::json(200, &bundle(&base, &n, v))
        }
        Route::Delete(n) => {
            authz!(action::KEY_DELETE, format!("/keys/{n}"));
            let Some(key) = hsm.keys.remove(&n) else { return key_not_found(&n) };
            let d = DeletedKey { key, deleted_date: now, scheduled_purge_date: now + RECOVERABLE_DAYS * 86_400 };
            let b = deleted_bundle(&base, &n, &d);
            hsm.deleted.insert(n, d);
            Resp::json(200, &b)
        }
        Route::DeletedList => {
            authz!(action::DELETED_READ, "/keys");
            let all: Vec<(&String, &DeletedKey)> = hsm.deleted.iter().collect();
            let (s, e, next) = match page(req, &all, |start, max| {
                format!("{base}/deletedkeys?api-version={api}&$skiptoken={start}&maxresults={max}")
            }) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let value: Vec<Value> = all[s..e]
                .iter()
                .filter_map(|(n, d)| {
                    d.key.latest().map(|v| {
                        let mut i = item(format!("{base}/keys/{n}"), v);
                        i["recoveryId"] = json!(format!("{base}/deletedkeys/{n}"));
                        i["deletedDate"] = json!(d.deleted_date);
                        i["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
                        i
                    })
                })
                .collect();
            Resp::json(200, &json!({"value": value, "nextLink": next}))
        }
        Route::DeletedGet(n) => {
            authz!(action::DELETED_READ, format!("/keys/{n}"));
            match hsm.deleted.get(&n) {
                Some(d) => Resp::json(200, &deleted_bundle(&base, &n, d)),
                None => err(404, "KeyNotFound", format!("Deleted Key not found: {n}")),
            }
        }
        Route::DeletedPurge(n) => {
            authz!(action::DELETED_PURGE, format!("/keys/{n}"));
            match hsm.deleted.remove(&n) {
                Some(_) => Resp::empty(204),
                None => err(404, "KeyNotFound", format!("Deleted Key not found: {n}")),
            }
        }
        Route::Recover(n) => {
            authz!(action::DELETED_RECOVER, format!("/keys/{n}"));
            if hsm.keys.contains_key(&n) {
                return err(409, "Conflict", format!("Key {n} already exists and is not in a deleted state."));
            }
            match hsm.deleted.remove(&n) {
                Some(d) => {
                    let b = d.key.latest().map(|v| bundle(&base, &n, v)).unwrap_or_else(|| json!({}));
                    hsm.keys.insert(n, d.key);
                    Resp::json(200, &b)
                }
                None => err(404, "KeyNotFound", format!("Deleted Key not found: {n}")),
            }
        }
        Route::Crypto(n, ver, op) => {
            let act = match op {
                "wrapKey" => action::WRAP,
                "unwrapKey" => action::UNWRAP,
                "encrypt" => action::ENCRYPT,
                _ => action::DECRYPT,
            };
            authz!(act, format!("/keys/{n}"));
            let Some(v) = find_version(hsm, &n, &ver) else { return key_not_found(&n) };
            let body = req.json().unwrap_or(Value::Null);
            crypto(&base, &n, v, op, &body, now)
        }
        Route::RoleDefs(scope) => {
            if !roles::valid_scope(&scope) {
                return bad(format!("Invalid scope: {scope}"));
            }
            authz!(action::RD_READ, scope);
            let filter = req
                .q("$filter")
                .and_then(|f| f.trim().strip_prefix("roleName eq ").map(|v| v.trim().trim_matches('\'').to_string()));
            let value: Vec<Value> = roles::BUILT_IN
                .iter()
                .filter(|r| filter.as_deref().is_none_or(|f| r.name.eq_ignore_ascii_case(f)))
                .map(role_def_json)
                .collect();
            Resp::json(200, &json!({"value": value, "nextLink": null}))
        }
        Route::RoleDef(scope, id) => {
            authz!(action::RD_READ, scope);
            match roles::BUILT_IN.iter().find(|r| r.id.eq_ignore_ascii_case(&id)) {
                Some(r) => Resp::json(200, &role_def_json(r)),
                None => err(404, "RoleDefinitionNotFound", "The specified role definition was not found."),
            }
        }
        Route::Assignments(scope) => {
            if !roles::valid_scope(&scope) {
                return bad(format!("Invalid scope: {scope}"));
            }
            authz!(action::RA_READ, scope);
            let filter = req.q("$filter").map(str::trim).unwrap_or_default().to_string();
            let principal =
                filter.strip_prefix("principalId eq ").map(|v| v.trim().trim_matches('\'').to_ascii_lowercase());
            let at_scope = filter == "atScope()";
            if !filter.is_empty() && principal.is_none() && !at_scope {
                return bad(format!("The filter '{filter}' is not supported."));
            }
            let value: Vec<Value> = hsm
                .assignments
                .values()
                .filter(|a| {
                    let above = roles::scope_covers(&a.scope, &scope);
                    let below = roles::scope_covers(&scope, &a.scope);
                    if at_scope {
                        above
                    } else if let Some(p) = &principal {
                        (above || below) && a.principal_id.eq_ignore_ascii_case(p)
                    } else {
                        above || below
                    }
                })
                .map(assignment_json)
                .collect();
            Resp::json(200, &json!({"value": value, "nextLink": null}))
        }
        Route::Assignment(scope, aname) => {
            if !roles::valid_scope(&scope) {
                return bad(format!("Invalid scope: {scope}"));
            }
            match req.method.as_str() {
                "GET" => {
                    authz!(action::RA_READ, scope);
                    match hsm.assignments.get(&aname).filter(|a| a.scope == scope) {
                        Some(a) => Resp::json(200, &assignment_json(a)),
                        None => err(404, "RoleAssignmentNotFound", "Requested role assignment not found."),
                    }
                }
                "DELETE" => {
                    authz!(action::RA_DELETE, scope);
                    match hsm.assignments.get(&aname).filter(|a| a.scope == scope).cloned() {
                        Some(a) => {
                            hsm.assignments.remove(&aname);
                            Resp::json(200, &assignment_json(&a))
                        }
                        None => err(404, "RoleAssignmentNotFound", "Requested role assignment not found."),
                    }
                }
                _ => {
                    authz!(action::RA_WRITE, scope);
                    put_assignment(hsm, &scope, &aname, req.json().as_ref())
                }
            }
        }
        Route::Unknown => {
            err(404, "NotFound", format!("The requested resource {} {} was not found.", req.method, req.path))
        }
    }
}

fn role_def_json(r: &roles::RoleDef) -> Value {
    json!({
        "id": format!("{ROLE_DEF_PREFIX}{}", r.id),
        "name": r.id,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": r.name,
            "description": r.description,
            "type": "AKVBuiltInRole",
            "permissions": [{"actions": [], "notActions": [], "dataActions": r.data_actions, "notDataActions": []}],
            "assignableScopes": ["/"],
        }
    })
}

pub(crate) fn assignment_json(a: &RoleAssignment) -> Value {
    let prefix = if a.scope == "/" { String::new() } else { a.scope.clone() };
    json!({
        "id": format!("{prefix}/providers/Microsoft.Authorization/roleAssignments/{}", a.name),
        "name": a.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "scope": a.scope,
            "roleDefinitionId": format!("{ROLE_DEF_PREFIX}{}", a.role_definition),
            "principalId": a.principal_id,
        }
    })
}

/// Create a role assignment (shared by the HSM API and the admin API).
pub(crate) fn insert_assignment(
    hsm: &mut Hsm,
    scope: &str,
    name: &str,
    role: &str,
    principal: &str,
) -> Result<RoleAssignment, Resp> {
    if !util::is_guid(name) {
        return Err(bad(format!("The role assignment name '{name}' is not valid. It must be a GUID.")));
    }
    if !roles::valid_scope(scope) {
        return Err(bad(format!("Invalid scope: {scope}")));
    }
    let Some(def) = roles::find(role) else {
        return Err(bad(format!("The role definition '{role}' does not exist.")));
    };
    if !util::is_guid(principal) {
        return Err(bad(format!("The principal ID '{principal}' is not a valid GUID.")));
    }
    let principal = principal.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    if let Some(existing) = hsm.assignments.get(&name) {
        if existing.scope == scope && existing.role_definition == def.id && existing.principal_id == principal {
            return Ok(existing.clone());
        }
        return Err(err(
            409,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        ));
    }
    if let Some(dup) = hsm
        .assignments
        .values()
        .find(|a| a.scope == scope && a.role_definition == def.id && a.principal_id == principal)
    {
        return Err(err(
            400,
            "MatchingRoleAssignmentExists",
            format!(
                "A role assignment with the same role definition, principal and scope already exists (name '{}').",
                dup.name
            ),
        ));
    }
    let a = RoleAssignment {
        name: name.clone(),
        scope: scope.to_string(),
        role_definition: def.id.to_string(),
        principal_id: principal,
    };
    hsm.assignments.insert(name, a.clone());
    Ok(a)
}

fn put_assignment(hsm: &mut Hsm, scope: &str, name: &str, body: Option<&Value>) -> Resp {
    let props = body.and_then(|b| b.get("properties"));
    let role = props.and_then(|p| p.get("roleDefinitionId")).and_then(Value::as_str);
    let principal = props.and_then(|p| p.get("principalId")).and_then(Value::as_str);
    let (Some(role), Some(principal)) = (role, principal) else {
        return bad("The request body must contain properties.roleDefinitionId and properties.principalId.");
    };
    match insert_assignment(hsm, scope, name, role, principal) {
        Ok(a) => Resp::json(201, &assignment_json(&a)),
        Err(r) => r,
    }
}

fn find_version<'a>(hsm: &'a Hsm, name: &str, ver: &str) -> Option<&'a KeyVersion> {
    let k = hsm.keys.get(name)?;
    if ver.is_empty() { k.latest() } else { k.versions.iter().find(|v| v.version.eq_ignore_ascii_case(ver)) }
}

fn find_version_mut<'a>(hsm: &'a mut Hsm, name: &str, ver: &str) -> Option<&'a mut KeyVersion> {
    let k = hsm.keys.get_mut(name)?;
    if ver.is_empty() {
        k.versions.last_mut()
    } else {
        k.versions.iter_mut().find(|v| v.version.eq_ignore_ascii_case(ver))
    }
}

fn parse_tags(v: &Value) -> Result<BTreeMap<String, String>, Resp> {
    let Some(obj) = v.as_object() else { return Err(bad("Tags must be an object of string values.")) };
    if obj.len() > 15 {
        return Err(bad("Number of tags exceeds the limit of 15."));
    }
    let mut out = BTreeMap::new();
    for (k, val) in obj {
        let Some(s) = val.as_str() else { return Err(bad(format!("Tag '{k}' must have a string value."))) };
        if k.len() > 512 || s.len() > 512 {
            return Err(bad("Tag names and values are limited to 512 characters."));
        }
        out.insert(k.clone(), s.to_string());
    }
    Ok(out)
}

fn parse_ops(v: &Value) -> Result<Vec<String>, Resp> {
    let Some(arr) = v.as_array() else { return Err(bad("key_ops must be an array.")) };
    let mut ops = Vec::new();
    for o in arr {
        match o.as_str() {
            Some(s) if KEY_OPS.contains(&s) => ops.push(s.to_string()),
            _ => return Err(bad(format!("Invalid key operation: {o}"))),
        }
    }
    Ok(ops)
}

fn opt_i64(a: &Value, k: &str) -> Result<Option<Option<i64>>, Resp> {
    match a.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_i64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| bad(format!("attributes.{k} must be a number (Unix time)."))),
    }
}

/// Parse a create-key body into a fresh version.
pub(crate) fn create_version(body: &Value, now: i64) -> Result<KeyVersion, Resp> {
    let Some(kty) = body.get("kty").and_then(Value::as_str) else {
        return Err(bad("The parameter kty is required."));
    };
    let size = body.get("key_size").and_then(Value::as_u64).map(|s| s as u32);
    let crv = body.get("crv").and_then(Value::as_str).map(str::to_string);
    let size = match kty {
        "oct-HSM" => match size {
            Some(s @ (128 | 192 | 256)) => Some(s),
            Some(s) => {
                return Err(bad(format!("Invalid key size {s} for key type oct-HSM. Supported sizes: 128, 192, 256.")));
            }
            None => return Err(bad("The parameter key_size is required for key type oct-HSM.")),
        },
        "RSA-HSM" => match size.unwrap_or(2048) {
            s @ (2048 | 3072 | 4096) => Some(s),
            s => return Err(bad(format!("Invalid key size {s} for key type RSA-HSM."))),
        },
        "EC-HSM" => {
            if let Some(c) = &crv
                && !["P-256", "P-384", "P-521", "P-256K"].contains(&c.as_str())
            {
                return Err(bad(format!("Invalid curve {c}.")));
            }
            None
        }
        "RSA" | "EC" | "oct" => {
            return Err(bad(format!("Key type {kty} is not supported by Managed HSM; use {kty}-HSM.")));
        }
        other => return Err(bad(format!("Invalid key type: {other}"))),
    };
    let ops = match body.get("key_ops") {
        Some(v) if !v.is_null() => parse_ops(v)?,
        _ => crate::state::default_key_ops(kty),
    };
    let tags = match body.get("tags") {
        Some(v) if !v.is_null() => parse_tags(v)?,
        _ => BTreeMap::new(),
    };
    let attrs = body.get("attributes").cloned().unwrap_or_else(|| json!({}));
    if attrs.get("exportable").and_then(Value::as_bool) == Some(true) && body.get("release_policy").is_none() {
        return Err(bad("Exportable keys must have a release policy."));
    }
    let enabled = attrs.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    let nbf = opt_i64(&attrs, "nbf")?.flatten();
    let exp = opt_i64(&attrs, "exp")?.flatten();
    Ok(new_version(kty, size, crv, ops, tags, enabled, nbf, exp, now))
}

/// Apply a PATCH body (`tags`, `attributes`, `key_ops`) to a version.
pub(crate) fn apply_update(v: &mut KeyVersion, body: &Value, now: i64) -> Result<(), Resp> {
    if !body.is_object() {
        return Err(bad("The request body must be a JSON object."));
    }
    let tags = match body.get("tags") {
        Some(t) if !t.is_null() => Some(parse_tags(t)?),
        _ => None,
    };
    let ops = match body.get("key_ops") {
        Some(o) if !o.is_null() => Some(parse_ops(o)?),
        _ => None,
    };
    let mut enabled = None;
    let (mut nbf, mut exp) = (None, None);
    if let Some(a) = body.get("attributes").filter(|a| !a.is_null()) {
        enabled = a.get("enabled").and_then(Value::as_bool);
        nbf = opt_i64(a, "nbf")?;
        exp = opt_i64(a, "exp")?;
    }
    if let Some(t) = tags {
        v.tags = t;
    }
    if let Some(o) = ops {
        v.key_ops = o;
    }
    if let Some(e) = enabled {
        v.enabled = e;
    }
    if let Some(n) = nbf {
        v.nbf = n;
    }
    if let Some(e) = exp {
        v.exp = e;
    }
    v.updated = now;
    Ok(())
}

fn crypto(base: &str, name: &str, v: &KeyVersion, op: &str, body: &Value, now: i64) -> Resp {
    if !v.enabled {
        return err_inner(403, "Forbidden", format!("Operation {op} is not allowed on a disabled key."), "KeyDisabled");
    }
    if v.exp.is_some_and(|e| e <= now) {
        return err_inner(403, "Forbidden", format!("Operation {op} is not allowed on an expired key."), "KeyExpired");
    }
    if v.nbf.is_some_and(|n| n > now) {
        return err_inner(
            403,
            "Forbidden",
            format!("Operation {op} is not allowed on a key that is not yet valid."),
            "KeyNotYetValid",
        );
    }
    if !v.key_ops.iter().any(|o| o == op) {
        return err_inner(
            403,
            "Forbidden",
            format!("Operation {op} is not permitted on this key."),
            "KeyOperationForbidden",
        );
    }
    let Some(alg) = body.get("alg").and_then(Value::as_str) else {
        return bad("The parameter alg is required.");
    };
    let Some(value) = body.get("value").and_then(Value::as_str).and_then(util::b64url_decode) else {
        return bad("The parameter value is required and must be base64url encoded.");
    };
    if v.kty != "oct-HSM" {
        return bad(format!(
            "Algorithm {alg} with key type {}: asymmetric cryptography is not emulated by the sandbox.",
            v.kty
        ));
    }
    let kid = format!("{base}/keys/{name}/{}", v.version);
    let bits = v.material.len() * 8;
    let k = &v.material;
    match (op, alg) {
        ("wrapKey" | "unwrapKey", "A128KW" | "A192KW" | "A256KW") => {
            let want: usize = alg[1..4].parse().unwrap_or(0);
            if want != bits {
                return bad(format!("Algorithm {alg} is not supported by a {bits}-bit key."));
            }
            match kw(k, &value, op == "wrapKey", false) {
                Ok(out) => Resp::json(200, &json!({"kid": kid, "value": util::b64url(&out)})),
                Err(m) => bad(m),
            }
        }
        ("wrapKey" | "unwrapKey", "CKM_AES_KEY_WRAP" | "CKM_AES_KEY_WRAP_PAD") => {
            match kw(k, &value, op == "wrapKey", alg.ends_with("PAD")) {
                Ok(out) => Resp::json(200, &json!({"kid": kid, "value": util::b64url(&out)})),
                Err(m) => bad(m),
            }
        }
        ("encrypt" | "decrypt", "A128GCM" | "A192GCM" | "A256GCM") => {
            let want: usize = alg[1..4].parse().unwrap_or(0);
            if want != bits {
                return bad(format!("Algorithm {alg} is not supported by a {bits}-bit key."));
            }
            let aad = body.get("aad").and_then(Value::as_str).and_then(util::b64url_decode).unwrap_or_default();
            if op == "encrypt" {
                let iv = util::random_bytes(12);
                match gcm(k, &iv, &aad, &value, None) {
                    Ok((ct, tag)) => {
                        let mut out = json!({"kid": kid, "value": util::b64url(&ct), "iv": util::b64url(&iv), "tag": util::b64url(&tag)});
                        if !aad.is_empty() {
                            out["aad"] = json!(util::b64url(&aad));
                        }
                        Resp::json(200, &out)
                    }
                    Err(m) => bad(m),
                }
            } else {
                let iv = body.get("iv").and_then(Value::as_str).and_then(util::b64url_decode);
                let tag = body.get("tag").and_then(Value::as_str).and_then(util::b64url_decode);
                let (Some(iv), Some(tag)) = (iv, tag) else {
                    return bad("The parameters iv and tag are required for AES-GCM decryption.");
                };
                if iv.len() != 12 || tag.len() != 16 {
                    return bad("Invalid iv or tag length.");
                }
                match gcm(k, &iv, &aad, &value, Some(&tag)) {
                    Ok((pt, _)) => Resp::json(200, &json!({"kid": kid, "value": util::b64url(&pt)})),
                    Err(m) => bad(m),
                }
            }
        }
        _ => bad(format!("Algorithm {alg} is not supported for operation {op} on key type oct-HSM.")),
    }
}

fn kw(key: &[u8], data: &[u8], wrap: bool, pad: bool) -> Result<Vec<u8>, String> {
    use aes_kw::{KekAes128, KekAes192, KekAes256};
    macro_rules! run {
        ($t:ty, $n:expr) => {{
            let mut a = [0u8; $n];
            a.copy_from_slice(key);
            let kek = <$t>::from(a);
            match (wrap, pad) {
                (true, false) => kek.wrap_vec(data),
                (false, false) => kek.unwrap_vec(data),
                (true, true) => kek.wrap_with_padding_vec(data),
                (false, true) => kek.unwrap_with_padding_vec(data),
            }
        }};
    }
    if !pad && (!data.len().is_multiple_of(8) || data.len() < if wrap { 16 } else { 24 }) {
        return Err(format!("Invalid value length {} for AES key wrap.", data.len()));
    }
    let r = match key.len() {
        16 => run!(KekAes128, 16),
        24 => run!(KekAes192, 24),
        32 => run!(KekAes256, 32),
        _ => return Err("Invalid key length.".into()),
    };
    r.map_err(|_| if wrap { "Wrap failed.".to_string() } else { "Unwrap failed: integrity check failed.".to_string() })
}

fn gcm(key: &[u8], iv: &[u8], aad: &[u8], data: &[u8], tag: Option<&[u8]>) -> Result<(Vec<u8>, Vec<u8>), String> {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce, Tag};
    type Aes192Gcm = AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;
    let nonce = Nonce::from_slice(iv);
    let mut buf = data.to_vec();
    macro_rules! run {
        ($t:ty) => {{
            let c = <$t>::new_from_slice(key).map_err(|_| "Invalid key length.".to_string())?;
            match tag {
                None => {
                    let t = c
                        .encrypt_in_place_detached(nonce, aad, &mut buf)
                        .map_err(|_| "Encryption failed.".to_string())?;
                    Ok((buf, t.to_vec()))
                }
                Some(t) => {
                    c.decrypt_in_place_detached(nonce, aad, &mut buf, Tag::from_slice(t))
                        .map_err(|_| "Decryption failed: authentication tag mismatch.".to_string())?;
                    Ok((buf, vec![]))
                }
            }
        }};
    }
    match key.len() {
        16 => run!(Aes128Gcm),
        24 => run!(Aes192Gcm),
        32 => run!(Aes256Gcm),
        _ => Err("Invalid key length.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3394_vector() {
        // RFC 3394 section 4.6: 256-bit KEK wrapping 256 bits of key data.
        let kek: Vec<u8> = (0u8..32).collect();
        let data = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x00, 0x01,
            0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
        ];
        let wrapped = kw(&kek, &data, true, false).unwrap();
        assert_eq!(
            util::hex(&wrapped),
            "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21"
        );
        assert_eq!(kw(&kek, &wrapped, false, false).unwrap(), data);
    }

    #[test]
    fn gcm_round_trip() {
        let k = util::random_bytes(32);
        let iv = util::random_bytes(12);
        let (ct, tag) = gcm(&k, &iv, b"a", b"hello", None).unwrap();
        assert_eq!(gcm(&k, &iv, b"a", &ct, Some(&tag)).unwrap().0, b"hello");
        assert!(gcm(&k, &iv, b"b", &ct, Some(&tag)).is_err());
    }
}
