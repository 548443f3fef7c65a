//! Managed HSM data plane, HTTP translation: routes (keys, crypto, soft delete, local RBAC), the
//! bearer challenge and `api-version` check, one function per route, and the JSON the HSM
//! answers with (key bundles, items, role definitions and assignments).

use crate::context::Context;
use crate::control::LimitClass;
use crate::crypto;
use crate::model::{
    AssignmentError, DeletedKey, Hsm, Key, KeyParams, KeyVersion, ModelError, RECOVERABLE_DAYS, RoleAssignment,
    RotationPolicy, default_key_ops,
};
use crate::roles::{self, ROLE_DEF_PREFIX, action};
use crate::tokens::{Claims, TokenError};
use crate::util;
use crate::wire::admin::KeyPatch;
use crate::wire::hsm::{
    API_VERSIONS, Caller, LATEST_API, bad_parameter, challenge, deleted_key_not_found, error, error_with_inner,
    forbidden, invalid_scope, key_not_found, missing_token_challenge, parse_key_ops, parse_tags, parse_unix_time,
    role_assignment_not_found,
};
use crate::wire::{Req, Resp};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Recovery level reported for keys (soft delete on, purge protection off).
const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const MAX_PAGE: usize = 25;

/// The four crypto operations on a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CryptoOp {
    Wrap,
    Unwrap,
    Encrypt,
    Decrypt,
}

impl CryptoOp {
    /// The key operation name (`key_ops`, error messages).
    fn name(self) -> &'static str {
        match self {
            CryptoOp::Wrap => "wrapKey",
            CryptoOp::Unwrap => "unwrapKey",
            CryptoOp::Encrypt => "encrypt",
            CryptoOp::Decrypt => "decrypt",
        }
    }

    fn data_action(self) -> &'static str {
        match self {
            CryptoOp::Wrap => action::WRAP,
            CryptoOp::Unwrap => action::UNWRAP,
            CryptoOp::Encrypt => action::ENCRYPT,
            CryptoOp::Decrypt => action::DECRYPT,
        }
    }
}

/// An HSM route; key names and versions as in the path (an empty version names the latest).
#[derive(Debug, PartialEq)]
pub(crate) enum Route {
    CreateKey(String),
    ListKeys,
    ListVersions(String),
    GetKey(String, String),
    UpdateKey(String, String),
    DeleteKey(String),
    Crypto(String, String, CryptoOp),
    ListDeleted,
    GetDeleted(String),
    PurgeDeleted(String),
    Recover(String),
    /// A new version of a key made like its latest (`POST /keys/{name}/rotate`).
    Rotate(String),
    GetRotationPolicy(String),
    PutRotationPolicy(String),
    /// Role definitions at a scope.
    ListRoleDefinitions(String),
    GetRoleDefinition(String, String),
    /// Role assignments at a scope.
    ListAssignments(String),
    GetAssignment(String, String),
    PutAssignment(String, String),
    DeleteAssignment(String, String),
    Unknown,
}

pub(crate) fn route(req: &Req) -> Route {
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
            ("roledefinitions", None, "GET", false) => Route::ListRoleDefinitions(scope),
            ("roledefinitions", Some(n), "GET", false) => Route::GetRoleDefinition(scope, n),
            ("roleassignments", None, "GET", false) => Route::ListAssignments(scope),
            ("roleassignments", Some(n), "GET", false) => Route::GetAssignment(scope, n),
            ("roleassignments", Some(n), "PUT", false) => Route::PutAssignment(scope, n),
            ("roleassignments", Some(n), "DELETE", false) => Route::DeleteAssignment(scope, n),
            _ => Route::Unknown,
        };
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (m, s.as_slice()) {
        ("GET", ["keys"] | ["keys", ""]) => Route::ListKeys,
        ("POST", ["keys", n, "create"]) => Route::CreateKey(n.to_string()),
        ("POST", ["keys", n, "rotate"]) => Route::Rotate(n.to_string()),
        ("GET", ["keys", n, "rotationpolicy"]) => Route::GetRotationPolicy(n.to_string()),
        ("PUT", ["keys", n, "rotationpolicy"]) => Route::PutRotationPolicy(n.to_string()),
        ("GET", ["keys", n, "versions"]) => Route::ListVersions(n.to_string()),
        ("GET", ["keys", n]) => Route::GetKey(n.to_string(), String::new()),
        ("DELETE", ["keys", n]) => Route::DeleteKey(n.to_string()),
        ("GET", ["keys", n, v]) => Route::GetKey(n.to_string(), v.to_string()),
        ("PATCH", ["keys", n, v]) => Route::UpdateKey(n.to_string(), v.to_string()),
        ("PATCH", ["keys", n]) => Route::UpdateKey(n.to_string(), String::new()),
        ("POST", ["keys", n, v, op]) => {
            let op = match op.to_ascii_lowercase().as_str() {
                "wrapkey" => CryptoOp::Wrap,
                "unwrapkey" => CryptoOp::Unwrap,
                "encrypt" => CryptoOp::Encrypt,
                "decrypt" => CryptoOp::Decrypt,
                _ => return Route::Unknown,
            };
            Route::Crypto(n.to_string(), v.to_string(), op)
        }
        ("GET", ["deletedkeys"] | ["deletedkeys", ""]) => Route::ListDeleted,
        ("GET", ["deletedkeys", n]) => Route::GetDeleted(n.to_string()),
        ("DELETE", ["deletedkeys", n]) => Route::PurgeDeleted(n.to_string()),
        ("POST", ["deletedkeys", n, "recover"]) => Route::Recover(n.to_string()),
        _ => Route::Unknown,
    }
}

impl Route {
    /// Operation name for counters and faults.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Route::CreateKey(_) => "key.create",
            Route::ListKeys => "key.list",
            Route::ListVersions(_) => "key.versions",
            Route::GetKey(..) => "key.get",
            Route::UpdateKey(..) => "key.update",
            Route::DeleteKey(_) => "key.delete",
            Route::Crypto(_, _, CryptoOp::Wrap) => "key.wrap",
            Route::Crypto(_, _, CryptoOp::Unwrap) => "key.unwrap",
            Route::Crypto(_, _, CryptoOp::Encrypt) => "key.encrypt",
            Route::Crypto(_, _, CryptoOp::Decrypt) => "key.decrypt",
            Route::ListDeleted => "deletedkey.list",
            Route::GetDeleted(_) => "deletedkey.get",
            Route::PurgeDeleted(_) => "deletedkey.purge",
            Route::Recover(_) => "key.recover",
            Route::Rotate(_) => "key.rotate",
            Route::GetRotationPolicy(_) => "key.rotationpolicy.get",
            Route::PutRotationPolicy(_) => "key.rotationpolicy.put",
            Route::ListRoleDefinitions(_) => "rbac.definition.list",
            Route::GetRoleDefinition(..) => "rbac.definition.get",
            Route::ListAssignments(_) => "rbac.assignment.list",
            Route::GetAssignment(..) => "rbac.assignment.get",
            Route::PutAssignment(..) => "rbac.assignment.put",
            Route::DeleteAssignment(..) => "rbac.assignment.delete",
            Route::Unknown => "unknown",
        }
    }

    /// Which of the HSM's rate limits the route draws on: none for crypto operations ("Managed HSM
    /// does not throttle on cryptographic operation transactions", learn.microsoft.com
    /// azure/key-vault/managed-hsm/scaling-guidance; its numbers are the hardware's capacity, not
    /// a limit that answers 429) and none for unknown routes.
    pub(crate) fn limit_class(&self) -> Option<LimitClass> {
        Some(match self {
            Route::CreateKey(_)
            | Route::Rotate(_)
            | Route::DeleteKey(_)
            | Route::Recover(_)
            | Route::PurgeDeleted(_) => LimitClass::Create,
            Route::Crypto(..) | Route::Unknown => return None,
            Route::ListRoleDefinitions(_)
            | Route::GetRoleDefinition(..)
            | Route::ListAssignments(_)
            | Route::GetAssignment(..)
            | Route::PutAssignment(..)
            | Route::DeleteAssignment(..) => LimitClass::Rbac,
            _ => LimitClass::Read,
        })
    }
}

/// One authenticated request to one HSM.
struct Call<'a> {
    cx: &'a Context,
    req: &'a Req,
    hsm: &'a str,
    /// `https://<hsm>.managedhsm.sandbox.localhost:PORT`.
    base: String,
    now: i64,
    claims: Claims,
}

fn no_such_hsm() -> Resp {
    Resp::text(404, "no such Managed HSM")
}

impl Call<'_> {
    /// Read this HSM under the model's lock.
    fn hsm<R>(&self, f: impl FnOnce(&Hsm) -> Result<R, Resp>) -> Result<R, Resp> {
        self.cx.model.read(|s| s.hsms.get(self.hsm).map_or_else(|| Err(no_such_hsm()), f))
    }

    /// Local RBAC: 403 unless the caller holds a role granting `action` on `resource`.
    fn authorize(&self, action: &str, resource: &str) -> Result<(), Resp> {
        self.hsm(|h| {
            if h.permits(&self.claims.oid, action, resource, self.now) {
                return Ok(());
            }
            let c = &self.claims;
            let caller = Caller { appid: &c.appid, oid: &c.oid, tid: &c.tid };
            Err(forbidden(&caller, action, resource, &h.name, &h.location))
        })
    }

    /// The page of the collection at `path` the query asks for (`maxresults`, `$skiptoken`) as
    /// `{"value", "nextLink"}`; `render` leaves out the items it maps to `None`. Pages hold the
    /// sandbox's `page_size` items unless `maxresults` asks for fewer. The next link is the one a
    /// real HSM writes (azure-sdk-for-js `sdk/keyvault/keyvault-keys/recordings` and the .NET
    /// Key Vault test recordings): the host with its explicit port (`:443` there), the HSM's
    /// newest `api-version` whatever the request named, an opaque `$skiptoken` (base64 of
    /// `{"NextMarker":…}`) and the request's `maxresults`; the request's `$filter` is kept.
    fn page<T>(
        &self,
        items: impl ExactSizeIterator<Item = T>,
        path: &str,
        render: impl FnMut(T) -> Option<Value>,
    ) -> Result<Resp, Resp> {
        let len = items.len();
        let asked = match self.req.query_param("maxresults") {
            None => None,
            Some(m) => match m.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => Some(n),
                _ => {
                    return Err(bad_parameter(format!(
                        "Invalid value for maxresults: {m}. It must be between 1 and {MAX_PAGE}."
                    )));
                }
            },
        };
        let max = asked.unwrap_or(MAX_PAGE).min(self.cx.control.settings().page_size.clamp(1, MAX_PAGE));
        let start = match self.req.query_param("$skiptoken") {
            None => 0,
            Some(t) => skip_offset(t).ok_or_else(|| bad_parameter("The $skiptoken is invalid."))?,
        };
        let end = (start + max).min(len);
        let next = (end < len).then(|| {
            // `$` unescaped in the parameter names, as the real links have them.
            let mut query = format!("api-version={LATEST_API}");
            if let Some(filter) = self.req.query_param("$filter") {
                query.push_str(&format!(
                    "&$filter={}",
                    form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
                ));
            }
            query.push_str(&format!("&$skiptoken={}", skip_token(end)));
            if let Some(n) = asked {
                query.push_str(&format!("&maxresults={n}"));
            }
            format!("{}{path}?{query}", self.base)
        });
        let value: Vec<Value> = items.skip(start).take(end.saturating_sub(start)).filter_map(render).collect();
        Ok(Resp::json(200, &json!({"value": value, "nextLink": next})))
    }
}

/// The opaque `$skiptoken` for the page starting at `offset`.
fn skip_token(offset: usize) -> String {
    util::b64url(json!({"NextMarker": format!("2!{offset}"), "TargetLocation": 0}).to_string().as_bytes())
}

/// The offset a `$skiptoken` of [`skip_token`] names.
fn skip_offset(token: &str) -> Option<usize> {
    let marker: Value = serde_json::from_slice(&util::b64url_decode(token)?).ok()?;
    marker.get("NextMarker")?.as_str()?.strip_prefix("2!")?.parse().ok()
}

/// Answer one request to HSM `name`.
pub(crate) fn handle(cx: &Context, name: &str, req: &Req, route: Route) -> Resp {
    let call = match authenticate(cx, name, req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    cx.model.rotate_due_keys(Some(name), call.now);
    let answer = match route {
        Route::CreateKey(n) => create_key(&call, &n),
        Route::ListKeys => list_keys(&call),
        Route::ListVersions(n) => list_versions(&call, &n),
        Route::GetKey(n, v) => get_key(&call, &n, &v),
        Route::UpdateKey(n, v) => update_key(&call, &n, &v),
        Route::DeleteKey(n) => delete_key(&call, &n),
        Route::Crypto(n, v, op) => crypto_op(&call, &n, &v, op),
        Route::ListDeleted => list_deleted(&call),
        Route::GetDeleted(n) => get_deleted(&call, &n),
        Route::PurgeDeleted(n) => purge_deleted(&call, &n),
        Route::Recover(n) => recover(&call, &n),
        Route::Rotate(n) => rotate(&call, &n),
        Route::GetRotationPolicy(n) => get_rotation_policy(&call, &n),
        Route::PutRotationPolicy(n) => put_rotation_policy(&call, &n),
        Route::ListRoleDefinitions(scope) => list_role_definitions(&call, &scope),
        Route::GetRoleDefinition(scope, id) => get_role_definition(&call, &scope, &id),
        Route::ListAssignments(scope) => list_assignments(&call, &scope),
        Route::GetAssignment(scope, n) => get_assignment(&call, &scope, &n),
        Route::PutAssignment(scope, n) => put_assignment(&call, &scope, &n),
        Route::DeleteAssignment(scope, n) => delete_assignment(&call, &scope, &n),
        Route::Unknown => {
            Err(error(404, "NotFound", format!("The requested resource {} {} was not found.", req.method, req.path)))
        }
    };
    answer.unwrap_or_else(|r| r)
}

/// The checks every request passes first, in the HSM's order: the HSM exists, a bearer token
/// (the SDKs' challenge flow sends the first request without one), valid, for this resource and
/// tenant, and a known `api-version`.
fn authenticate<'a>(cx: &'a Context, name: &'a str, req: &'a Req) -> Result<Call<'a>, Resp> {
    let now = cx.now();
    let Some(tenant) = cx.model.read(|s| s.hsms.get(name).map(|h| h.tenant.clone())) else {
        return Err(Resp::text(404, "no such Managed HSM (the DNS name does not resolve in Azure)"));
    };
    let resource = &cx.endpoints.hsm_resource;
    let refuse = |message: &str| challenge(&cx.endpoints.authority_url, &tenant, resource, message);
    let Some(tok) = req.bearer() else {
        return Err(missing_token_challenge(&cx.endpoints.authority_url, &tenant, resource));
    };
    let claims = match cx.tokens.validate_access_token(tok, now) {
        Ok(c) => c,
        Err(TokenError::Expired) => return Err(refuse("Token is expired.")),
        Err(TokenError::Malformed) => return Err(refuse("AKV10001: Invalid token: signature validation failed.")),
    };
    if claims.aud != *resource && claims.aud != format!("{resource}/") {
        return Err(refuse(&format!("AKV10022: Invalid audience. Expected {resource}, found: {}.", claims.aud)));
    }
    if claims.tid != tenant {
        return Err(refuse(&format!(
            "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, found https://sts.windows.net/{}/.",
            claims.tid
        )));
    }
    match req.query_param("api-version") {
        None => return Err(bad_parameter("The 'api-version' query parameter is missing.")),
        Some(v) if !API_VERSIONS.contains(&v) => {
            return Err(bad_parameter(format!(
                "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API})."
            )));
        }
        Some(_) => {}
    }
    Ok(Call { cx, req, hsm: name, base: cx.hsm_url(name), now, claims })
}

fn create_key(c: &Call, n: &str) -> Result<Resp, Resp> {
    if !roles::valid_key_name(n) {
        return Err(bad_parameter(format!("The request URI contains an invalid name: {n}")));
    }
    c.authorize(action::KEY_CREATE, &format!("/keys/{n}"))?;
    if c.hsm(|h| Ok(h.deleted.contains_key(n)))? {
        return Err(error(
            409,
            "Conflict",
            format!(
                "Key {n} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."
            ),
        ));
    }
    let params = parse_new_key(&c.req.json().unwrap_or(Value::Null))?;
    let v = KeyVersion::generate(&params, c.now);
    let b = bundle(&c.base, n, &v);
    c.cx.model.add_key_version(c.hsm, n, v).map_err(|_| no_such_hsm())?;
    Ok(Resp::json(200, &b))
}

fn list_keys(c: &Call) -> Result<Resp, Resp> {
    c.authorize(action::KEY_READ, "/keys")?;
    c.hsm(|h| c.page(h.keys.iter(), "/keys", |(n, k)| k.latest().map(|v| item(format!("{}/keys/{n}", c.base), v))))
}

fn list_versions(c: &Call, n: &str) -> Result<Resp, Resp> {
    c.authorize(action::KEY_READ, &format!("/keys/{n}"))?;
    c.hsm(|h| {
        let Some(key) = h.keys.get(n) else { return Err(key_not_found(n)) };
        c.page(key.versions.iter(), &format!("/keys/{n}/versions"), |v| {
            Some(item(format!("{}/keys/{n}/{}", c.base, v.version), v))
        })
    })
}

fn get_key(c: &Call, n: &str, ver: &str) -> Result<Resp, Resp> {
    c.authorize(action::KEY_READ, &format!("/keys/{n}"))?;
    c.hsm(|h| match h.keys.get(n).and_then(|k| k.version(ver)) {
        Some(v) => Ok(Resp::json(200, &bundle(&c.base, n, v))),
        None => Err(key_not_found(n)),
    })
}

fn update_key(c: &Call, n: &str, ver: &str) -> Result<Resp, Resp> {
    c.authorize(action::KEY_WRITE, &format!("/keys/{n}"))?;
    if !c.hsm(|h| Ok(h.keys.get(n).and_then(|k| k.version(ver)).is_some()))? {
        return Err(key_not_found(n));
    }
    let patch = parse_update(&c.req.json().unwrap_or_else(|| json!({})))?;
    let key = c.cx.model.update_key(c.hsm, n, ver, &patch, c.now).map_err(|_| key_not_found(n))?;
    let v = key.version(ver).ok_or_else(|| key_not_found(n))?;
    Ok(Resp::json(200, &bundle(&c.base, n, v)))
}

fn delete_key(c: &Call, n: &str) -> Result<Resp, Resp> {
    c.authorize(action::KEY_DELETE, &format!("/keys/{n}"))?;
    let d = c.cx.model.soft_delete_key(c.hsm, n, c.now).map_err(|_| key_not_found(n))?;
    Ok(Resp::json(200, &deleted_bundle(&c.base, n, &d)))
}

fn list_deleted(c: &Call) -> Result<Resp, Resp> {
    c.authorize(action::DELETED_READ, "/keys")?;
    c.hsm(|h| {
        c.page(h.deleted.iter(), "/deletedkeys", |(n, d)| {
            d.key.latest().map(|v| with_deletion(item(format!("{}/keys/{n}", c.base), v), &c.base, n, d))
        })
    })
}

fn get_deleted(c: &Call, n: &str) -> Result<Resp, Resp> {
    c.authorize(action::DELETED_READ, &format!("/keys/{n}"))?;
    c.hsm(|h| match h.deleted.get(n) {
        Some(d) => Ok(Resp::json(200, &deleted_bundle(&c.base, n, d))),
        None => Err(deleted_key_not_found(n)),
    })
}

fn purge_deleted(c: &Call, n: &str) -> Result<Resp, Resp> {
    c.authorize(action::DELETED_PURGE, &format!("/keys/{n}"))?;
    c.cx.model.purge_deleted_key(c.hsm, n).map_err(|_| deleted_key_not_found(n))?;
    Ok(Resp::empty(204))
}

fn recover(c: &Call, n: &str) -> Result<Resp, Resp> {
    c.authorize(action::DELETED_RECOVER, &format!("/keys/{n}"))?;
    match c.cx.model.recover_key(c.hsm, n) {
        Ok(key) => Ok(Resp::json(200, &key.latest().map(|v| bundle(&c.base, n, v)).unwrap_or_else(|| json!({})))),
        Err(ModelError::Invalid(_)) => {
            Err(error(409, "Conflict", format!("Key {n} already exists and is not in a deleted state.")))
        }
        Err(ModelError::NotFound(_)) => Err(deleted_key_not_found(n)),
    }
}

/// `POST /keys/{name}/rotate`: a new version like the latest (data action `keys/rotate/action`,
/// which Managed HSM Crypto User holds), with the policy's expiry; answers its key bundle.
fn rotate(c: &Call, n: &str) -> Result<Resp, Resp> {
    c.authorize(action::KEY_ROTATE, &format!("/keys/{n}"))?;
    let version = c.cx.model.add_version_like_latest(c.hsm, n, c.now).map_err(|_| key_not_found(n))?;
    c.hsm(|h| match h.keys.get(n).and_then(|k| k.version(&version)) {
        Some(v) => Ok(Resp::json(200, &bundle(&c.base, n, v))),
        None => Err(key_not_found(n)),
    })
}

/// `GET /keys/{name}/rotationpolicy` (data action `keys/read/action`). A key without a policy
/// has one with no action.
fn get_rotation_policy(c: &Call, n: &str) -> Result<Resp, Resp> {
    c.authorize(action::KEY_READ, &format!("/keys/{n}"))?;
    c.hsm(|h| match h.keys.get(n) {
        Some(k) => Ok(Resp::json(200, &rotation_policy_json(&c.base, n, k.rotation_policy.as_ref()))),
        None => Err(key_not_found(n)),
    })
}

/// `PUT /keys/{name}/rotationpolicy` (data action `keys/write/action`).
fn put_rotation_policy(c: &Call, n: &str) -> Result<Resp, Resp> {
    c.authorize(action::KEY_WRITE, &format!("/keys/{n}"))?;
    let policy = parse_rotation_policy(&c.req.json().unwrap_or(Value::Null))?;
    let stored = c.cx.model.set_rotation_policy(c.hsm, n, policy, c.now).map_err(|_| key_not_found(n))?;
    Ok(Resp::json(200, &rotation_policy_json(&c.base, n, Some(&stored))))
}

/// A `KeyRotationPolicy` body (data-plane spec `keys.json`): `lifetimeActions` with at most one
/// action, `Rotate` (compared case-insensitively) on exactly one of `timeAfterCreate` and
/// `timeBeforeExpiry`; `Notify` is Key Vault only (the SDKs' `KeyRotationPolicyAction` docs);
/// `attributes.expiryTime` of at least 28 days.
fn parse_rotation_policy(body: &Value) -> Result<RotationPolicy, Resp> {
    if !body.is_object() {
        return Err(bad_parameter("The request body must be a key rotation policy."));
    }
    let duration = |v: Option<&Value>, field: &str| -> Result<Option<String>, Resp> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if util::iso8601_duration_secs(s).is_some() => Ok(Some(s.clone())),
            Some(other) => Err(bad_parameter(format!("{field} must be an ISO 8601 duration, got {other}."))),
        }
    };
    let mut policy = RotationPolicy::default();
    let actions = match body.get("lifetimeActions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(bad_parameter("lifetimeActions must be an array.")),
    };
    if actions.len() > 1 {
        return Err(bad_parameter("A Managed HSM key rotation policy has at most one lifetime action (Rotate)."));
    }
    for a in &actions {
        let kind = a.pointer("/action/type").and_then(Value::as_str).unwrap_or_default();
        if !kind.eq_ignore_ascii_case("rotate") {
            return Err(bad_parameter(format!("Lifetime action type '{kind}' is not supported by Managed HSM.")));
        }
        let trigger = a.get("trigger");
        policy.rotate_after_create = duration(trigger.and_then(|t| t.get("timeAfterCreate")), "timeAfterCreate")?;
        policy.rotate_before_expiry = duration(trigger.and_then(|t| t.get("timeBeforeExpiry")), "timeBeforeExpiry")?;
        if policy.rotate_after_create.is_some() == policy.rotate_before_expiry.is_some() {
            return Err(bad_parameter(
                "A lifetime action's trigger sets exactly one of timeAfterCreate and timeBeforeExpiry.",
            ));
        }
    }
    policy.expiry_time = duration(body.pointer("/attributes/expiryTime"), "attributes.expiryTime")?;
    if policy.expiry_time.as_deref().and_then(util::iso8601_duration_secs).is_some_and(|s| s < 28 * 86_400) {
        return Err(bad_parameter("attributes.expiryTime must be at least 28 days."));
    }
    Ok(policy)
}

fn rotation_policy_json(base: &str, name: &str, policy: Option<&RotationPolicy>) -> Value {
    let mut out = json!({"id": format!("{base}/keys/{name}/rotationpolicy"), "lifetimeActions": [], "attributes": {}});
    let Some(p) = policy else { return out };
    let trigger = match (&p.rotate_after_create, &p.rotate_before_expiry) {
        (Some(after), _) => Some(json!({"timeAfterCreate": after})),
        (None, Some(before)) => Some(json!({"timeBeforeExpiry": before})),
        (None, None) => None,
    };
    if let Some(trigger) = trigger {
        out["lifetimeActions"] = json!([{"trigger": trigger, "action": {"type": "Rotate"}}]);
    }
    out["attributes"] = json!({"created": p.created, "updated": p.updated});
    if let Some(e) = &p.expiry_time {
        out["attributes"]["expiryTime"] = json!(e);
    }
    out
}

fn crypto_op(c: &Call, n: &str, ver: &str, op: CryptoOp) -> Result<Resp, Resp> {
    c.authorize(op.data_action(), &format!("/keys/{n}"))?;
    c.hsm(|h| {
        let Some(v) = h.keys.get(n).and_then(|k| k.version(ver)) else { return Err(key_not_found(n)) };
        check_usable(v, op.name(), c.now)?;
        run_crypto(&c.base, n, v, op, &c.req.json().unwrap_or(Value::Null))
    })
}

fn list_role_definitions(c: &Call, scope: &str) -> Result<Resp, Resp> {
    if !roles::valid_scope(scope) {
        return Err(invalid_scope(scope));
    }
    c.authorize(action::RD_READ, scope)?;
    let filter = c
        .req
        .query_param("$filter")
        .and_then(|f| f.trim().strip_prefix("roleName eq ").map(|v| v.trim().trim_matches('\'').to_string()));
    let listed: Vec<&roles::RoleDef> =
        roles::BUILT_IN.iter().filter(|r| filter.as_deref().is_none_or(|f| r.name.eq_ignore_ascii_case(f))).collect();
    let path = format!("{}/providers/Microsoft.Authorization/roleDefinitions", scope.trim_end_matches('/'));
    c.page(listed.into_iter(), &path, |r| Some(role_definition_json(r)))
}

fn get_role_definition(c: &Call, scope: &str, id: &str) -> Result<Resp, Resp> {
    c.authorize(action::RD_READ, scope)?;
    match roles::BUILT_IN.iter().find(|r| r.id.eq_ignore_ascii_case(id)) {
        Some(r) => Ok(Resp::json(200, &role_definition_json(r))),
        None => Err(error(404, "RoleDefinitionNotFound", "The specified role definition was not found.")),
    }
}

fn list_assignments(c: &Call, scope: &str) -> Result<Resp, Resp> {
    if !roles::valid_scope(scope) {
        return Err(invalid_scope(scope));
    }
    c.authorize(action::RA_READ, scope)?;
    let filter = c.req.query_param("$filter").map(str::trim).unwrap_or_default().to_string();
    let principal = filter.strip_prefix("principalId eq ").map(|v| v.trim().trim_matches('\'').to_ascii_lowercase());
    let at_scope = filter == "atScope()";
    if !filter.is_empty() && principal.is_none() && !at_scope {
        return Err(bad_parameter(format!("The filter '{filter}' is not supported.")));
    }
    // atScope(): assignments that apply at the scope; otherwise also those below it.
    let listed = |a: &RoleAssignment| {
        let above = roles::scope_covers(&a.scope, scope);
        let below = roles::scope_covers(scope, &a.scope);
        match &principal {
            _ if at_scope => above,
            Some(p) => (above || below) && a.principal_id.eq_ignore_ascii_case(p),
            None => above || below,
        }
    };
    let path = format!("{}/providers/Microsoft.Authorization/roleAssignments", scope.trim_end_matches('/'));
    c.hsm(|h| {
        let listed: Vec<&RoleAssignment> = h.assignments.values().filter(|a| listed(a)).collect();
        c.page(listed.into_iter(), &path, |a| Some(assignment_json(a)))
    })
}

fn get_assignment(c: &Call, scope: &str, name: &str) -> Result<Resp, Resp> {
    if !roles::valid_scope(scope) {
        return Err(invalid_scope(scope));
    }
    c.authorize(action::RA_READ, scope)?;
    c.hsm(|h| match h.assignments.get(name).filter(|a| a.scope == scope) {
        Some(a) => Ok(Resp::json(200, &assignment_json(a))),
        None => Err(role_assignment_not_found()),
    })
}

fn put_assignment(c: &Call, scope: &str, name: &str) -> Result<Resp, Resp> {
    if !roles::valid_scope(scope) {
        return Err(invalid_scope(scope));
    }
    c.authorize(action::RA_WRITE, scope)?;
    let body = c.req.json();
    let props = body.as_ref().and_then(|b| b.get("properties"));
    let role = props.and_then(|p| p.get("roleDefinitionId")).and_then(Value::as_str);
    let principal = props.and_then(|p| p.get("principalId")).and_then(Value::as_str);
    let (Some(role), Some(principal)) = (role, principal) else {
        return Err(bad_parameter(
            "The request body must contain properties.roleDefinitionId and properties.principalId.",
        ));
    };
    let effective_at = c.cx.control.after(c.cx.control.settings().rbac_propagation_secs);
    match c.cx.model.assign_role(c.hsm, scope, name, role, principal, effective_at) {
        Ok(a) => Ok(Resp::json(201, &assignment_json(&a))),
        Err(e) => Err(assignment_refusal(&e)),
    }
}

fn delete_assignment(c: &Call, scope: &str, name: &str) -> Result<Resp, Resp> {
    if !roles::valid_scope(scope) {
        return Err(invalid_scope(scope));
    }
    c.authorize(action::RA_DELETE, scope)?;
    match c.cx.model.remove_role_assignment(c.hsm, name, Some(scope)) {
        Ok(Some(a)) => Ok(Resp::json(200, &assignment_json(&a))),
        Ok(None) => Err(role_assignment_not_found()),
        Err(_) => Err(no_such_hsm()),
    }
}

/// The HSM's answer to a refused role assignment.
pub(crate) fn assignment_refusal(e: &AssignmentError) -> Resp {
    match e {
        AssignmentError::NoSuchHsm => no_such_hsm(),
        AssignmentError::InvalidName(name) => {
            bad_parameter(format!("The role assignment name '{name}' is not valid. It must be a GUID."))
        }
        AssignmentError::InvalidScope(scope) => invalid_scope(scope),
        AssignmentError::UnknownRole(role) => bad_parameter(format!("The role definition '{role}' does not exist.")),
        AssignmentError::InvalidPrincipal(p) => bad_parameter(format!("The principal ID '{p}' is not a valid GUID.")),
        AssignmentError::UpdateNotPermitted => error(
            409,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        ),
        AssignmentError::Duplicate(existing) => error(
            400,
            "MatchingRoleAssignmentExists",
            format!(
                "A role assignment with the same role definition, principal and scope already exists (name '{existing}')."
            ),
        ),
    }
}

/// Parse a create-key body (`kty`, `key_size`, `crv`, `key_ops`, `tags`, `attributes`).
pub(crate) fn parse_new_key(body: &Value) -> Result<KeyParams, Resp> {
    let Some(kty) = body.get("kty").and_then(Value::as_str) else {
        return Err(bad_parameter("The parameter kty is required."));
    };
    let size = body.get("key_size").and_then(Value::as_u64).map(|s| s as u32);
    let crv = body.get("crv").and_then(Value::as_str).map(str::to_string);
    let key_size = match kty {
        "oct-HSM" => match size {
            Some(s @ (128 | 192 | 256)) => Some(s),
            Some(s) => {
                return Err(bad_parameter(format!(
                    "Invalid key size {s} for key type oct-HSM. Supported sizes: 128, 192, 256."
                )));
            }
            None => return Err(bad_parameter("The parameter key_size is required for key type oct-HSM.")),
        },
        "RSA-HSM" => match size.unwrap_or(2048) {
            s @ (2048 | 3072 | 4096) => Some(s),
            s => return Err(bad_parameter(format!("Invalid key size {s} for key type RSA-HSM."))),
        },
        "EC-HSM" => {
            if let Some(c) = &crv
                && !["P-256", "P-384", "P-521", "P-256K"].contains(&c.as_str())
            {
                return Err(bad_parameter(format!("Invalid curve {c}.")));
            }
            None
        }
        "RSA" | "EC" | "oct" => {
            return Err(bad_parameter(format!("Key type {kty} is not supported by Managed HSM; use {kty}-HSM.")));
        }
        other => return Err(bad_parameter(format!("Invalid key type: {other}"))),
    };
    let key_ops = match body.get("key_ops") {
        Some(v) if !v.is_null() => parse_key_ops(v)?,
        _ => default_key_ops(kty),
    };
    let tags = match body.get("tags") {
        Some(v) if !v.is_null() => parse_tags(v)?,
        _ => BTreeMap::new(),
    };
    let attrs = body.get("attributes").cloned().unwrap_or_else(|| json!({}));
    if attrs.get("exportable").and_then(Value::as_bool) == Some(true) && body.get("release_policy").is_none() {
        return Err(bad_parameter("Exportable keys must have a release policy."));
    }
    let enabled = attrs.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    let nbf = parse_unix_time(&attrs, "nbf")?.flatten();
    let exp = parse_unix_time(&attrs, "exp")?.flatten();
    Ok(KeyParams { kty: kty.to_string(), key_size, crv, key_ops, tags, enabled, nbf, exp })
}

/// Parse an update-key body (`tags`, `key_ops`, `attributes`).
fn parse_update(body: &Value) -> Result<KeyPatch, Resp> {
    if !body.is_object() {
        return Err(bad_parameter("The request body must be a JSON object."));
    }
    let tags = match body.get("tags") {
        Some(t) if !t.is_null() => Some(parse_tags(t)?),
        _ => None,
    };
    let key_ops = match body.get("key_ops") {
        Some(o) if !o.is_null() => Some(parse_key_ops(o)?),
        _ => None,
    };
    let mut patch = KeyPatch { tags, key_ops, ..KeyPatch::default() };
    if let Some(a) = body.get("attributes").filter(|a| !a.is_null()) {
        patch.enabled = a.get("enabled").and_then(Value::as_bool);
        patch.nbf = parse_unix_time(a, "nbf")?;
        patch.exp = parse_unix_time(a, "exp")?;
    }
    Ok(patch)
}

/// 403 unless the version is enabled, within `nbf`..`exp` and permits `op`.
fn check_usable(v: &KeyVersion, op: &str, now: i64) -> Result<(), Resp> {
    let refuse = |message: String, inner: &str| Err(error_with_inner(403, "Forbidden", message, inner));
    if !v.enabled {
        return refuse(format!("Operation {op} is not allowed on a disabled key."), "KeyDisabled");
    }
    if v.exp.is_some_and(|e| e <= now) {
        return refuse(format!("Operation {op} is not allowed on an expired key."), "KeyExpired");
    }
    if v.nbf.is_some_and(|n| n > now) {
        return refuse(format!("Operation {op} is not allowed on a key that is not yet valid."), "KeyNotYetValid");
    }
    if !v.key_ops.iter().any(|o| o == op) {
        return refuse(format!("Operation {op} is not permitted on this key."), "KeyOperationForbidden");
    }
    Ok(())
}

/// Run a crypto request (`alg`, `value`, and for AES-GCM `aad`, `iv`, `tag`) with an oct-HSM key.
fn run_crypto(base: &str, name: &str, v: &KeyVersion, op: CryptoOp, body: &Value) -> Result<Resp, Resp> {
    let op_name = op.name();
    let Some(alg) = body.get("alg").and_then(Value::as_str) else {
        return Err(bad_parameter("The parameter alg is required."));
    };
    let b64 = |k: &str| body.get(k).and_then(Value::as_str).and_then(util::b64url_decode);
    let Some(value) = b64("value") else {
        return Err(bad_parameter("The parameter value is required and must be base64url encoded."));
    };
    if v.kty != "oct-HSM" {
        return Err(bad_parameter(format!(
            "Algorithm {alg} with key type {}: asymmetric cryptography is not emulated by the sandbox.",
            v.kty
        )));
    }
    let kid = format!("{base}/keys/{name}/{}", v.version);
    let bits = v.material.len() * 8;
    let k = &v.material;
    // A128KW, A192KW, A256KW, A128GCM, ...: the size is in the name and must be the key's.
    let sized = || {
        let want: usize = alg[1..4].parse().unwrap_or(0);
        if want == bits {
            Ok(())
        } else {
            Err(bad_parameter(format!("Algorithm {alg} is not supported by a {bits}-bit key.")))
        }
    };
    let wrapped = |out: Result<Vec<u8>, String>| match out {
        Ok(out) => Ok(Resp::json(200, &json!({"kid": kid, "value": util::b64url(&out)}))),
        Err(m) => Err(bad_parameter(m)),
    };
    match (op, alg) {
        (CryptoOp::Wrap | CryptoOp::Unwrap, "A128KW" | "A192KW" | "A256KW") => {
            sized()?;
            wrapped(crypto::key_wrap(k, &value, op == CryptoOp::Wrap, false))
        }
        (CryptoOp::Wrap | CryptoOp::Unwrap, "CKM_AES_KEY_WRAP" | "CKM_AES_KEY_WRAP_PAD") => {
            wrapped(crypto::key_wrap(k, &value, op == CryptoOp::Wrap, alg.ends_with("PAD")))
        }
        (CryptoOp::Encrypt, "A128GCM" | "A192GCM" | "A256GCM") => {
            sized()?;
            let aad = b64("aad").unwrap_or_default();
            let iv = util::random_bytes(12);
            let (ct, tag) = crypto::gcm(k, &iv, &aad, &value, None).map_err(bad_parameter)?;
            let mut out =
                json!({"kid": kid, "value": util::b64url(&ct), "iv": util::b64url(&iv), "tag": util::b64url(&tag)});
            if !aad.is_empty() {
                out["aad"] = json!(util::b64url(&aad));
            }
            Ok(Resp::json(200, &out))
        }
        (CryptoOp::Decrypt, "A128GCM" | "A192GCM" | "A256GCM") => {
            sized()?;
            let aad = b64("aad").unwrap_or_default();
            let (Some(iv), Some(tag)) = (b64("iv"), b64("tag")) else {
                return Err(bad_parameter("The parameters iv and tag are required for AES-GCM decryption."));
            };
            if iv.len() != 12 || tag.len() != 16 {
                return Err(bad_parameter("Invalid iv or tag length."));
            }
            wrapped(crypto::gcm(k, &iv, &aad, &value, Some(&tag)).map(|(pt, _)| pt))
        }
        _ => {
            Err(bad_parameter(format!("Algorithm {alg} is not supported for operation {op_name} on key type oct-HSM.")))
        }
    }
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

/// A list item (`KeyItem`).
fn item(kid: String, v: &KeyVersion) -> Value {
    let mut out = json!({"kid": kid, "attributes": attributes(v)});
    if !v.tags.is_empty() {
        out["tags"] = json!(v.tags);
    }
    out
}

/// Add what a deleted key carries: `recoveryId` and the deletion and purge dates.
fn with_deletion(mut v: Value, base: &str, name: &str, d: &DeletedKey) -> Value {
    v["recoveryId"] = json!(format!("{base}/deletedkeys/{name}"));
    v["deletedDate"] = json!(d.deleted_date);
    v["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
    v
}

fn deleted_bundle(base: &str, name: &str, d: &DeletedKey) -> Value {
    let b = d.key.latest().map(|v| bundle(base, name, v)).unwrap_or_else(|| json!({}));
    with_deletion(b, base, name, d)
}

/// The versions of a key as bundles (the admin API's state).
pub(crate) fn key_json(base: &str, k: &Key) -> Value {
    json!({"name": k.name, "versions": k.versions.iter().map(|v| bundle(base, &k.name, v)).collect::<Vec<_>>()})
}

fn role_definition_json(r: &roles::RoleDef) -> Value {
    json!({
        "id": format!("{ROLE_DEF_PREFIX}{}", r.id),
        "name": r.id,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": r.name,
            "description": "",
            "type": "AKVBuiltInRole",
            "permissions": [{"actions": r.actions, "notActions": [], "dataActions": r.data_actions, "notDataActions": []}],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str) -> Req {
        Req {
            method: method.into(),
            host: "contoso-hsm.managedhsm.sandbox.localhost".into(),
            path: path.into(),
            query: vec![],
            headers: Default::default(),
            body: Default::default(),
        }
    }

    #[test]
    fn crypto_operations_draw_on_no_rate_limit() {
        for op in ["wrapkey", "unwrapkey", "encrypt", "decrypt"] {
            let r = route(&request("POST", &format!("/keys/k/0123/{op}")));
            assert!(matches!(r, Route::Crypto(..)), "{op}");
            assert_eq!(r.limit_class(), None, "{op}");
        }
        assert_eq!(route(&request("POST", "/keys/k/create")).limit_class(), Some(LimitClass::Create));
        assert_eq!(route(&request("POST", "/keys/k/rotate")).limit_class(), Some(LimitClass::Create));
        assert_eq!(route(&request("GET", "/keys/k/rotationpolicy")), Route::GetRotationPolicy("k".into()));
    }
}
