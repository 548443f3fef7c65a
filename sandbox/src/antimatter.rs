//! Antimatter API v2: authenticate, providers, root encryption keys, pairing check, active key, rotate.

use crate::http::{Outcome, Req, Resp, dispatch};
use crate::jwt;
use crate::state::{Registration, Shared, lock};
use crate::util;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Name of the Azure provider delegated to Antimatter's application.
pub const AZURE_AM: &str = "azure_am";

fn segs(req: &Req) -> Option<Vec<String>> {
    let s = req.segments();
    if s.first().map(String::as_str) != Some("v2") || s.get(1).map(String::as_str) != Some("domains") {
        return None;
    }
    Some(s[2..].to_vec())
}

pub(crate) fn classify(req: &Req) -> &'static str {
    let Some(s) = segs(req) else { return "unknown" };
    let s: Vec<&str> = s.iter().map(String::as_str).collect();
    match (req.method.as_str(), s.as_slice()) {
        ("POST", [_, "authenticate"]) => "authenticate",
        ("GET", [_, "control", "encryption", "providers"]) => "providers.list",
        ("POST", [_, "control", "encryption", "keys"]) => "rek.add",
        ("GET", [_, "control", "encryption", "keys"]) => "rek.list",
        ("GET", [_, "control", "encryption", "keys", _]) => "rek.get",
        ("DELETE", [_, "control", "encryption", "keys", _]) => "rek.delete",
        ("POST", [_, "control", "encryption", "keys", _, "test"]) => "rek.test",
        ("GET", [_, "control", "encryption", "active-key"]) => "active.get",
        ("POST", [_, "control", "encryption", "active-key"]) => "active.set",
        ("POST", [_, "control", "encryption", "rotate"]) => "rotate",
        ("GET", [_, "control", "encryption", "settings"]) => "settings.get",
        ("PUT", [_, "control", "encryption", "settings"]) => "settings.put",
        _ => "unknown",
    }
}

fn msg(status: u16, m: impl Into<String>) -> Resp {
    Resp::json(status, &json!({"message": m.into()}))
}
fn res_err(status: u16, rtype: &str, id: &str, m: impl Into<String>) -> Resp {
    Resp::json(status, &json!({"resourceType": rtype, "identifier": id, "message": m.into()}))
}
fn field_err(field: &str, m: impl Into<String>) -> Resp {
    Resp::json(400, &json!({"field": field, "message": m.into()}))
}

fn rek_item(domain: &str, r: &Registration) -> Value {
    let _ = domain;
    json!({
        "source": r.source,
        "resourcePath": r.resource_path,
        "rekID": r.rek_id,
        "description": r.description,
        "imported": false,
    })
}

/// Parsed parts of a Managed HSM key URL.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyUrl {
    /// HSM name (first DNS label).
    pub hsm: String,
    /// DNS suffix after the HSM name (with port if any).
    pub suffix: String,
    /// Key name.
    pub key: String,
    /// 32-hex version.
    pub version: String,
}

/// Parse a versioned Managed HSM key URL: `https://<hsm>.<suffix>/keys/<name>/<32-hex version>`.
pub fn parse_key_url(url: &str, sandbox_suffix: &str) -> Result<KeyUrl, String> {
    let rest = url.strip_prefix("https://").ok_or("keyURL must be an absolute https URL")?;
    let (host, path) = rest.split_once('/').ok_or("keyURL has no path")?;
    let (hsm, suffix) = host.split_once('.').ok_or("keyURL host is not a Managed HSM host")?;
    let known = [sandbox_suffix, "managedhsm.azure.net", "managedhsm.usgovcloudapi.net", "managedhsm.azure.cn"];
    if !known.iter().any(|k| suffix.eq_ignore_ascii_case(k)) {
        return Err(format!("keyURL host '{host}' is not a Managed HSM host (expected <hsm-name>.{sandbox_suffix})"));
    }
    if hsm.is_empty() || !hsm.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err("keyURL has an invalid HSM name".into());
    }
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["keys", name, version]
            if crate::roles::valid_key_name(name)
                && version.len() == 32
                && version.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(KeyUrl {
                hsm: hsm.to_ascii_lowercase(),
                suffix: suffix.to_ascii_lowercase(),
                key: name.to_string(),
                version: version.to_ascii_lowercase(),
            })
        }
        ["keys", _] | ["keys", _, ""] => Err("keyURL must include the key version".into()),
        _ => Err("keyURL must be https://<hsm-name>.<suffix>/keys/<key-name>/<version>".into()),
    }
}

fn resolve_rek<'a>(d: &'a crate::state::Domain, id: &str) -> Option<&'a Registration> {
    let id = match id.split_once("::") {
        Some((prefix, rest)) if prefix == d.id => rest,
        Some(_) => return None,
        None => id,
    };
    match id {
        "active" => d.keys.iter().find(|k| k.rek_id == d.active),
        "default" => d.keys.iter().find(|k| k.source == "antimatter"),
        _ => d.keys.iter().find(|k| k.rek_id.eq_ignore_ascii_case(id)),
    }
}

pub(crate) async fn handle(shared: &Arc<Shared>, req: &Req, op: &'static str) -> Resp {
    let Some(s) = segs(req) else { return res_err(404, "route", &req.path, "not found") };
    let Some(domain_id) = s.first().cloned() else { return res_err(404, "route", &req.path, "not found") };
    if op == "unknown" {
        return res_err(404, "route", &req.path, "not found");
    }
    if !lock(&shared.inner).domains.contains_key(&domain_id) {
        return res_err(404, "domain", &domain_id, format!("domain {domain_id} not found"));
    }
    if op == "authenticate" {
        return authenticate(shared, req, &domain_id);
    }
    // Domain identity token.
    let Some(tok) = req.bearer() else { return msg(401, "missing bearer token") };
    let Ok(claims) = jwt::verify(&shared.jwt_key, tok) else { return msg(401, "invalid token") };
    if claims.get("typ").and_then(Value::as_str) != Some("domain_identity") {
        return msg(401, "invalid token");
    }
    if claims.get("exp").and_then(Value::as_i64).unwrap_or(0) <= shared.now() {
        return msg(401, "token expired");
    }
    if claims.get("domain").and_then(Value::as_str) != Some(domain_id.as_str()) {
        return msg(403, "token does not grant access to this domain");
    }
    let rek_arg = s.get(4).cloned().unwrap_or_default();
    match op {
        "providers.list" => {
            let app = lock(&shared.inner).antimatter_app.clone().unwrap_or_default();
            Resp::json(
                200,
                &json!({"providers": [
                    {"type": "DelegatedRootEncryptionKeyProvider", "name": AZURE_AM, "shortName": "Azure Managed HSM (delegated)",
                     "description": "A key held in an Azure Managed HSM and delegated to Antimatter's Azure application", "accountDetails": app},
                    {"type": "ServiceAccountRootEncryptionKeyProvider", "name": "azure_sa", "shortName": "Azure Managed HSM (service account)",
                     "description": "A key held in an Azure Managed HSM accessed with a customer service account"},
                ]}),
            )
        }
        "rek.add" => add(shared, req, &domain_id),
        "rek.list" => {
            let inner = lock(&shared.inner);
            let d = &inner.domains[&domain_id];
            Resp::json(200, &json!({"keys": d.keys.iter().map(|k| rek_item(&domain_id, k)).collect::<Vec<_>>()}))
        }
        "rek.get" => {
            let inner = lock(&shared.inner);
            match resolve_rek(&inner.domains[&domain_id], &rek_arg) {
                Some(r) => Resp::json(200, &rek_item(&domain_id, r)),
                None => res_err(404, "rootEncryptionKey", &rek_arg, "root encryption key not found"),
            }
        }
        "rek.delete" => {
            let mut inner = lock(&shared.inner);
            let Some(d) = inner.domains.get_mut(&domain_id) else {
                return res_err(404, "domain", &domain_id, "not found");
            };
            let Some(r) = resolve_rek(d, &rek_arg).cloned() else {
                return res_err(404, "rootEncryptionKey", &rek_arg, "root encryption key not found");
            };
            if r.rek_id == d.active {
                return res_err(
                    409,
                    "rootEncryptionKey",
                    &r.rek_id,
                    "the root encryption key is in use as the active key and cannot be deleted",
                );
            }
            if r.source == "antimatter" {
                return res_err(
                    409,
                    "rootEncryptionKey",
                    &r.rek_id,
                    "the default root encryption key cannot be deleted",
                );
            }
            d.keys.retain(|k| k.rek_id != r.rek_id);
            Resp::empty(200)
        }
        "rek.test" => {
            let r = {
                let inner = lock(&shared.inner);
                resolve_rek(&inner.domains[&domain_id], &rek_arg).cloned()
            };
            let Some(r) = r else {
                return res_err(404, "rootEncryptionKey", &rek_arg, "root encryption key not found");
            };
            let (status, message, ms) = pairing_check(shared, &domain_id, &r).await;
            record_status(shared, &domain_id, &r.rek_id, status);
            Resp::json(
                200,
                &json!({"id": r.rek_id, "source": r.source, "resourcePath": r.resource_path, "description": r.description,
                        "status": status, "statusMessage": message, "latencyMS": ms}),
            )
        }
        "active.get" => {
            let inner = lock(&shared.inner);
            let d = &inner.domains[&domain_id];
            match resolve_rek(d, "active") {
                Some(r) => Resp::json(200, &rek_item(&domain_id, r)),
                None => res_err(404, "rootEncryptionKey", "active", "no active key"),
            }
        }
        "active.set" => {
            let body = req.json().unwrap_or(Value::Null);
            let Some(key_id) = body.get("keyID").and_then(Value::as_str).map(str::to_string) else {
                return field_err("keyID", "keyID is required");
            };
            let rotate_batch = body.get("rotateBatch").and_then(Value::as_bool).unwrap_or(false);
            let r = {
                let inner = lock(&shared.inner);
                resolve_rek(&inner.domains[&domain_id], &key_id).cloned()
            };
            let Some(r) = r else { return res_err(404, "rootEncryptionKey", &key_id, "root encryption key not found") };
            if r.source != "antimatter" {
                let (status, message, _) = pairing_check(shared, &domain_id, &r).await;
                record_status(shared, &domain_id, &r.rek_id, status);
                if status != "HEALTHY" {
                    return res_err(
                        412,
                        "rootEncryptionKey",
                        &r.rek_id,
                        format!("the key failed its pairing check ({status}): {message}"),
                    );
                }
            }
            let batches = lock(&shared.settings).rotate_batches;
            let mut inner = lock(&shared.inner);
            let Some(d) = inner.domains.get_mut(&domain_id) else {
                return res_err(404, "domain", &domain_id, "not found");
            };
            if d.active != r.rek_id {
                d.active = r.rek_id.clone();
                d.pending_rotations = batches;
            }
            if rotate_batch && d.pending_rotations > 0 {
                d.pending_rotations -= 1;
            }
            Resp::json(200, &json!({"has_more": d.pending_rotations > 0}))
        }
        "rotate" => {
            let mut inner = lock(&shared.inner);
            let Some(d) = inner.domains.get_mut(&domain_id) else {
                return res_err(404, "domain", &domain_id, "not found");
            };
            if d.pending_rotations > 0 {
                d.pending_rotations -= 1;
            }
            Resp::json(200, &json!({"has_more": d.pending_rotations > 0}))
        }
        "settings.get" => {
            let inner = lock(&shared.inner);
            Resp::json(200, &json!({"enableBypass": inner.domains[&domain_id].enable_bypass}))
        }
        "settings.put" => {
            let Some(b) = req.json().and_then(|b| b.get("enableBypass").and_then(Value::as_bool)) else {
                return field_err("enableBypass", "enableBypass (boolean) is required");
            };
            let mut inner = lock(&shared.inner);
            if let Some(d) = inner.domains.get_mut(&domain_id) {
                d.enable_bypass = b;
            }
            Resp::json(200, &json!({"enableBypass": b}))
        }
        _ => res_err(404, "route", &req.path, "not found"),
    }
}

fn record_status(shared: &Shared, domain: &str, rek: &str, status: &str) {
    let mut inner = lock(&shared.inner);
    if let Some(r) = inner.domains.get_mut(domain).and_then(|d| d.keys.iter_mut().find(|k| k.rek_id == rek)) {
        r.last_status = Some(status.to_string());
    }
}

fn authenticate(shared: &Shared, req: &Req, domain_id: &str) -> Resp {
    let Some(key) = req.json().and_then(|b| b.get("token").and_then(Value::as_str).map(str::to_string)) else {
        return field_err("token", "token is required");
    };
    let ok = lock(&shared.inner).domains.get(domain_id).is_some_and(|d| d.api_keys.contains(&key));
    if !ok {
        return msg(401, "invalid API key");
    }
    let default = lock(&shared.settings).antimatter_token_lifetime_secs;
    let lifetime = match req.q("tokenLifetime") {
        None => default,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=86_400).contains(&n) => n,
            _ => return field_err("tokenLifetime", "tokenLifetime must be between 1 and 86400 seconds"),
        },
    };
    let now = shared.now();
    let exp = now + lifetime;
    let claims = json!({"iss": shared.ep.antimatter_url, "sub": "apikey", "typ": "domain_identity", "domain": domain_id,
                        "iat": now, "exp": exp, "jti": util::uuid_v4()});
    let token = jwt::sign(&shared.jwt_key, "antimatter", &claims);
    Resp::json(
        200,
        &json!({"token": token, "expiry": util::rfc3339(exp), "cellAddress": shared.ep.antimatter_url.trim_end_matches("/v2")}),
    )
}

fn add(shared: &Shared, req: &Req, domain_id: &str) -> Resp {
    let Some(body) = req.json() else { return field_err("body", "a JSON body is required") };
    let description = body.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(info) = body.get("keyInformation").filter(|v| v.is_object()) else {
        return field_err("keyInformation", "keyInformation is required");
    };
    let provider = info.get("providerName").and_then(Value::as_str).unwrap_or_default();
    if provider != AZURE_AM {
        return field_err(
            "keyInformation.providerName",
            format!("provider '{provider}' is not supported here; use '{AZURE_AM}'"),
        );
    }
    let tenant = info.get("tenantID").and_then(Value::as_str).unwrap_or_default();
    if !util::is_guid(tenant) {
        return field_err("keyInformation.tenantID", "tenantID must be a directory (tenant) ID GUID");
    }
    let Some(url) = info.get("keyURL").and_then(Value::as_str) else {
        return field_err("keyInformation.keyURL", "keyURL is required");
    };
    if let Err(e) = parse_key_url(url, &shared.ep.hsm_dns_suffix) {
        return field_err("keyInformation.keyURL", e);
    }
    let mut inner = lock(&shared.inner);
    let Some(d) = inner.domains.get_mut(domain_id) else { return res_err(404, "domain", domain_id, "not found") };
    if let Some(existing) = d.keys.iter().find(|k| k.resource_path == url) {
        return res_err(
            409,
            "rootEncryptionKey",
            &existing.rek_id,
            "a root encryption key with this keyURL is already registered",
        );
    }
    let rek = Registration {
        rek_id: util::uuid_v4(),
        source: AZURE_AM.into(),
        resource_path: url.to_string(),
        description,
        tenant_id: tenant.to_ascii_lowercase(),
        last_status: None,
    };
    let id = rek.rek_id.clone();
    d.keys.push(rek);
    Resp::json(200, &json!({"rekID": id}))
}

/// One internal HTTPS-equivalent call through the normal dispatch (faults, limits, counters apply).
async fn call(
    shared: &Arc<Shared>,
    method: &str,
    host: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Option<Resp> {
    let mut hm = HeaderMap::new();
    hm.insert(crate::http::INTERNAL_HEADER, HeaderValue::from_static("1"));
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            hm.insert(*k, v);
        }
    }
    let req = Req {
        method: method.into(),
        host: host.into(),
        path: path.into(),
        query: query.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        headers: hm,
        body: Bytes::from(body),
    };
    match dispatch_boxed(shared.clone(), req).await {
        Outcome::Resp(r) => Some(r),
        Outcome::Drop | Outcome::Trickle { .. } => None,
    }
}

type BoxedOutcome = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// A plain fn with a declared (non-opaque) future type breaks the async recursion
/// dispatch → antimatter → pairing check → dispatch.
fn dispatch_boxed(shared: Arc<Shared>, req: Req) -> BoxedOutcome {
    Box::pin(async move { dispatch(&shared, req).await })
}

fn transient(r: &Option<Resp>) -> bool {
    match r {
        None => true,
        Some(r) => r.status == 429 || r.status >= 500,
    }
}

fn error_message(r: &Resp) -> String {
    let v = r.body_json();
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .or_else(|| v.get("error_description").and_then(Value::as_str))
        .map(|s| s.lines().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("HTTP {}", r.status))
}

/// What Antimatter does when it tests a delegated key: token as its own app in the customer tenant,
/// read the key, check type/state/tag, wrap and unwrap a fresh 32-byte key.
pub(crate) async fn pairing_check(shared: &Arc<Shared>, domain: &str, r: &Registration) -> (&'static str, String, f64) {
    let start = Instant::now();
    let (status, message) = pairing_inner(shared, domain, r).await;
    (status, message, (start.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0)
}

async fn pairing_inner(shared: &Arc<Shared>, domain: &str, r: &Registration) -> (&'static str, String) {
    const MIS: &str = "MISCONFIGURED";
    const UNR: &str = "UNREACHABLE";
    if r.source == "antimatter" {
        return ("HEALTHY", "Antimatter-held default key".into());
    }
    let url = match parse_key_url(&r.resource_path, &shared.ep.hsm_dns_suffix) {
        Ok(u) => u,
        Err(e) => return (MIS, e),
    };
    if url.suffix != shared.ep.hsm_dns_suffix || !shared.hsm_exists(&url.hsm) {
        return (UNR, format!("could not connect to {}.{}: host not found", url.hsm, url.suffix));
    }
    let (app_id, secret) = {
        let inner = lock(&shared.inner);
        let Some(app) = inner.antimatter_app.as_ref().and_then(|a| inner.apps.get(a)) else {
            return (UNR, "Antimatter's Azure application is not configured in this sandbox".into());
        };
        (app.app_id.clone(), app.secrets.first().cloned().unwrap_or_default())
    };
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", &app_id)
        .append_pair("client_secret", &secret)
        .append_pair("scope", &format!("{}/.default", shared.ep.hsm_resource))
        .finish();
    let tok = call(
        shared,
        "POST",
        "login.sandbox.localhost",
        &format!("/{}/oauth2/v2.0/token", r.tenant_id),
        &[],
        &[("content-type", "application/x-www-form-urlencoded".into())],
        form.into_bytes(),
    )
    .await;
    if transient(&tok) {
        return (UNR, "Entra ID did not answer the token request".into());
    }
    let tok = tok.unwrap_or_else(|| Resp::empty(0));
    if tok.status != 200 {
        let v = tok.body_json();
        let desc = v.get("error_description").and_then(Value::as_str).unwrap_or_default();
        let code = desc.split(':').next().unwrap_or_default();
        let hint = if code == "AADSTS700016" {
            format!(
                "Antimatter's application ({app_id}) has no service principal in tenant {}; create one (az ad sp create --id {app_id})",
                r.tenant_id
            )
        } else {
            format!("Antimatter's application ({app_id}) could not get a token in tenant {}", r.tenant_id)
        };
        return (MIS, format!("{hint}: {}", desc.split(" Trace ID").next().unwrap_or(desc)));
    }
    let access = tok.body_json().get("access_token").and_then(Value::as_str).unwrap_or_default().to_string();
    let host = format!("{}.managedhsm.sandbox.localhost", url.hsm);
    let auth = vec![("authorization", format!("Bearer {access}")), ("content-type", "application/json".to_string())];
    let q = [("api-version", "7.5")];
    let key_path = format!("/keys/{}/{}", url.key, url.version);
    let got = call(shared, "GET", &host, &key_path, &q, &auth, vec![]).await;
    if transient(&got) {
        return (UNR, "the Managed HSM did not answer the key read".into());
    }
    let got = got.unwrap_or_else(|| Resp::empty(0));
    match got.status {
        200 => {}
        403 => {
            return (
                MIS,
                format!(
                    "Antimatter's service principal is not allowed to read key {}: assign the role 'Managed HSM Crypto User' at scope /keys/{} ({})",
                    url.key,
                    url.key,
                    error_message(&got)
                ),
            );
        }
        404 => return (MIS, format!("key {} version {} not found in HSM {}", url.key, url.version, url.hsm)),
        _ => return (MIS, format!("reading the key failed: {}", error_message(&got))),
    }
    let kb = got.body_json();
    let kty = kb.pointer("/key/kty").and_then(Value::as_str).unwrap_or_default().to_string();
    if kty != "oct-HSM" {
        return (MIS, format!("key type {kty} cannot wrap keys with AES key wrap; an oct-HSM key is required"));
    }
    let now = shared.now();
    let attrs = kb.get("attributes").cloned().unwrap_or(Value::Null);
    if attrs.get("enabled").and_then(Value::as_bool) != Some(true) {
        return (MIS, format!("key {} is disabled", url.key));
    }
    if attrs.get("exp").and_then(Value::as_i64).is_some_and(|e| e <= now) {
        return (MIS, format!("key {} has expired", url.key));
    }
    if attrs.get("nbf").and_then(Value::as_i64).is_some_and(|n| n > now) {
        return (MIS, format!("key {} is not yet valid (nbf)", url.key));
    }
    if kb.pointer(&format!("/tags/{domain}")).and_then(Value::as_str) != Some("allow") {
        return (MIS, format!("key {} is missing the tag {domain}=allow", url.key));
    }
    let ops: Vec<&str> = kb
        .pointer("/key/key_ops")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !ops.contains(&"wrapKey") || !ops.contains(&"unwrapKey") {
        return (MIS, format!("key {} does not permit the operations wrapKey and unwrapKey", url.key));
    }
    // Try the algorithms in size order; the HSM refuses a mismatched size.
    let fresh = util::random_bytes(32);
    let mut wrapped = None;
    let mut last = None;
    for alg in ["A256KW", "A192KW", "A128KW"] {
        let body = json!({"alg": alg, "value": util::b64url(&fresh)}).to_string().into_bytes();
        let w = call(shared, "POST", &host, &format!("{key_path}/wrapkey"), &q, &auth, body).await;
        if transient(&w) {
            return (UNR, "the Managed HSM did not answer the wrap request".into());
        }
        let w = w.unwrap_or_else(|| Resp::empty(0));
        if w.status == 200 {
            wrapped = Some((alg, w.body_json().get("value").and_then(Value::as_str).unwrap_or_default().to_string()));
            break;
        }
        let forbidden = w.status == 403;
        last = Some(w);
        if forbidden {
            break;
        }
    }
    let Some((alg, wv)) = wrapped else {
        let m = last.as_ref().map(error_message).unwrap_or_default();
        if last.as_ref().is_some_and(|l| l.status == 403 && m.starts_with("Caller is not authorized")) {
            return (
                MIS,
                format!(
                    "Antimatter's service principal is not allowed to wrap with key {}: assign 'Managed HSM Crypto User' at /keys/{} ({m})",
                    url.key, url.key
                ),
            );
        }
        return (MIS, format!("wrapping with key {} failed: {m}", url.key));
    };
    let body = json!({"alg": alg, "value": wv}).to_string().into_bytes();
    let u = call(shared, "POST", &host, &format!("{key_path}/unwrapkey"), &q, &auth, body).await;
    if transient(&u) {
        return (UNR, "the Managed HSM did not answer the unwrap request".into());
    }
    let u = u.unwrap_or_else(|| Resp::empty(0));
    if u.status != 200 {
        return (MIS, format!("unwrapping with key {} failed: {}", url.key, error_message(&u)));
    }
    let back = u.body_json().get("value").and_then(Value::as_str).and_then(util::b64url_decode).unwrap_or_default();
    if back != fresh {
        return (MIS, "unwrapped key does not match the wrapped key".into());
    }
    ("HEALTHY", format!("wrapped and unwrapped a 256-bit key with {alg}"))
}
