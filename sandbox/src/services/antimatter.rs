//! Antimatter API v2, HTTP translation: authenticate, providers, root encryption keys, the pairing
//! check, the active key, rotation and domain settings. The pairing check reads and uses the key
//! through the sandbox itself, as Antimatter does over the internet ([`Loopback`]).

use crate::context::{Context, Loopback};
use crate::model::{Domain, Registration, RegistrationError};
use crate::util;
use crate::wire::antimatter::{AZURE_AM, cell_host, field_error, message, parse_key_url, resource_error};
use crate::wire::{INTERNAL_HEADER, Req, Resp};
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::time::Instant;

/// What a request with a domain token asks of its domain; key IDs as in the path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    ListProviders,
    AddKey,
    ListKeys,
    GetKey(String),
    DeleteKey(String),
    TestKey(String),
    GetActive,
    SetActive,
    Rotate,
    GetSettings,
    PutSettings,
}

/// An Antimatter route: a domain's `authenticate` (API key for token), an action on a domain, or
/// none the API knows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Authenticate(String),
    Domain(String, Action),
    Unknown,
}

pub(crate) fn route(req: &Req) -> Route {
    let segs = req.segments();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let ["v2", "domains", domain, tail @ ..] = s.as_slice() else { return Route::Unknown };
    let action = match (req.method.as_str(), tail) {
        ("POST", ["authenticate"]) => return Route::Authenticate(domain.to_string()),
        ("GET", ["control", "encryption", "providers"]) => Action::ListProviders,
        ("POST", ["control", "encryption", "keys"]) => Action::AddKey,
        ("GET", ["control", "encryption", "keys"]) => Action::ListKeys,
        ("GET", ["control", "encryption", "keys", id]) => Action::GetKey(id.to_string()),
        ("DELETE", ["control", "encryption", "keys", id]) => Action::DeleteKey(id.to_string()),
        ("POST", ["control", "encryption", "keys", id, "test"]) => Action::TestKey(id.to_string()),
        ("GET", ["control", "encryption", "active-key"]) => Action::GetActive,
        ("POST", ["control", "encryption", "active-key"]) => Action::SetActive,
        ("POST", ["control", "encryption", "rotate"]) => Action::Rotate,
        ("GET", ["control", "encryption", "settings"]) => Action::GetSettings,
        ("PUT", ["control", "encryption", "settings"]) => Action::PutSettings,
        _ => return Route::Unknown,
    };
    Route::Domain(domain.to_string(), action)
}

impl Route {
    /// Operation name for counters and faults.
    pub(crate) fn operation(&self) -> &'static str {
        let action = match self {
            Route::Authenticate(_) => return "authenticate",
            Route::Domain(_, action) => action,
            Route::Unknown => return "unknown",
        };
        match action {
            Action::ListProviders => "providers.list",
            Action::AddKey => "rek.add",
            Action::ListKeys => "rek.list",
            Action::GetKey(_) => "rek.get",
            Action::DeleteKey(_) => "rek.delete",
            Action::TestKey(_) => "rek.test",
            Action::GetActive => "active.get",
            Action::SetActive => "active.set",
            Action::Rotate => "rotate",
            Action::GetSettings => "settings.get",
            Action::PutSettings => "settings.put",
        }
    }
}

/// A request to one existing domain.
struct Call<'a> {
    cx: &'a Context,
    req: &'a Req,
    domain: &'a str,
}

impl Call<'_> {
    fn no_domain(&self) -> Resp {
        resource_error(404, "domain", self.domain, "not found")
    }

    /// Read the domain under the model's lock.
    fn read(&self, f: impl FnOnce(&Domain) -> Resp) -> Resp {
        self.cx.model.read(|s| s.domains.get(self.domain).map(f)).unwrap_or_else(|| self.no_domain())
    }

    /// A copy of a registration, named as [`Domain::resolve`] accepts.
    fn registration(&self, id: &str) -> Result<Registration, Resp> {
        let found = self.cx.model.read(|s| s.domains.get(self.domain).and_then(|d| d.resolve(id).cloned()));
        found.ok_or_else(|| key_not_found(id))
    }
}

fn key_not_found(id: &str) -> Resp {
    resource_error(404, "rootEncryptionKey", id, "root encryption key not found")
}

/// Answer one request to the host serving `cell` (`None`: the API host).
pub(crate) async fn handle(cx: &Context, req: &Req, cell: Option<&str>, route: Route, loopback: &dyn Loopback) -> Resp {
    let (domain, action) = match route {
        Route::Authenticate(domain) => (domain, None),
        Route::Domain(domain, action) => (domain, Some(action)),
        Route::Unknown => return resource_error(404, "route", &req.path, "not found"),
    };
    let Some(home) = cx.model.read(|s| s.domains.get(&domain).map(|d| d.cell.clone())) else {
        return resource_error(404, "domain", &domain, format!("domain {domain} not found"));
    };
    // A host serves only its own domains; the others are sent to their cell, before any token is
    // looked at (the antimatter-api 2.0.13 docs: 308 "redirect to the domain's cell").
    if home.as_deref() != cell {
        return to_cell(cx, req, home.as_deref());
    }
    let c = Call { cx, req, domain: &domain };
    let Some(action) = action else { return authenticate(&c, cell) };
    if let Err(r) = check_domain_token(&c) {
        return r;
    }
    match action {
        Action::ListProviders => list_providers(&c),
        Action::AddKey => add_key(&c),
        Action::ListKeys => {
            c.read(|d| Resp::json(200, &json!({"keys": d.keys.iter().map(rek_item).collect::<Vec<_>>()})))
        }
        Action::GetKey(id) => c.registration(&id).map_or_else(|r| r, |r| Resp::json(200, &rek_item(&r))),
        Action::DeleteKey(id) => delete_key(&c, &id),
        Action::TestKey(id) => test_key(&c, &id, loopback).await,
        Action::GetActive => c.read(|d| match d.resolve("active") {
            Some(r) => Resp::json(200, &rek_item(r)),
            None => resource_error(404, "rootEncryptionKey", "active", "no active key"),
        }),
        Action::SetActive => set_active(&c, loopback).await,
        Action::Rotate => rotate(&c),
        Action::GetSettings => c.read(|d| Resp::json(200, &json!({"enableBypass": d.enable_bypass}))),
        Action::PutSettings => put_settings(&c),
    }
}

/// Every route but `authenticate` needs a domain identity token for this domain.
fn check_domain_token(c: &Call) -> Result<(), Resp> {
    let Some(tok) = c.req.bearer() else { return Err(message(401, "missing bearer token")) };
    let Ok(claims) = c.cx.tokens.verify(tok) else { return Err(message(401, "invalid token")) };
    if claims.get("typ").and_then(Value::as_str) != Some("domain_identity") {
        return Err(message(401, "invalid token"));
    }
    if claims.get("exp").and_then(Value::as_i64).unwrap_or(0) <= c.cx.now() {
        return Err(message(401, "token expired"));
    }
    if claims.get("domain").and_then(Value::as_str) != Some(c.domain) {
        return Err(message(403, "token does not grant access to this domain"));
    }
    Ok(())
}

fn rek_item(r: &Registration) -> Value {
    json!({
        "source": r.source,
        "resourcePath": r.resource_path,
        "rekID": r.rek_id,
        "description": r.description,
        "imported": false,
    })
}

/// `308` to the same path and query on the host serving `cell`, with an explicit port.
fn to_cell(cx: &Context, req: &Req, cell: Option<&str>) -> Resp {
    let mut location = format!("https://{}:{}{}", cell_host(cell), cx.endpoints.port, req.path);
    if !req.query.is_empty() {
        location.push('?');
        location.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(&req.query).finish());
    }
    message(308, "the domain lives on another cell").with("location", location)
}

/// Exchange an API key for a domain identity token. `cellAddress` is "the public URL of the cell
/// responding to the authentication request" (antimatter-api 2.0.13,
/// `models/domain_authenticate_response.py`): this host's, unless the domain overrides it.
fn authenticate(c: &Call, cell: Option<&str>) -> Resp {
    let Some(key) = c.req.json().and_then(|b| b.get("token").and_then(Value::as_str).map(str::to_string)) else {
        return field_error("token", "token is required");
    };
    let known = c.cx.model.read(|s| s.domains.get(c.domain).is_some_and(|d| d.api_keys.contains(&key)));
    if !known {
        return message(401, "invalid API key");
    }
    let default = c.cx.control.settings().antimatter_token_lifetime_secs;
    let lifetime = match c.req.query_param("tokenLifetime") {
        None => default,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=86_400).contains(&n) => n,
            _ => return field_error("tokenLifetime", "tokenLifetime must be between 1 and 86400 seconds"),
        },
    };
    let now = c.cx.now();
    let exp = now + lifetime;
    let url = &c.cx.endpoints.antimatter_url;
    let claims = json!({"iss": url, "sub": "apikey", "typ": "domain_identity", "domain": c.domain,
                        "iat": now, "exp": exp, "jti": util::uuid_v4()});
    let token = c.cx.tokens.sign("antimatter", &claims);
    let cell_address =
        c.cx.model
            .read(|s| s.domains.get(c.domain).and_then(|d| d.cell_address_override.clone()))
            .unwrap_or_else(|| format!("https://{}:{}", cell_host(cell), c.cx.endpoints.port));
    Resp::json(200, &json!({"token": token, "expiry": util::rfc3339(exp), "cellAddress": cell_address}))
}

fn list_providers(c: &Call) -> Resp {
    let app = c.cx.model.read(|s| s.antimatter_app.clone()).unwrap_or_default();
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

/// Re-wrap one batch of data keys under the active key. The body is required (the published client
/// `antimatter-api` 2.0.13 declares `domain_rotate_root_encryption_keys(domain_id, body)` with a
/// required `body` and always sends `{}`).
fn rotate(c: &Call) -> Resp {
    if c.req.json().is_none_or(|b| !b.is_object()) {
        return field_error("body", "a JSON object body is required");
    }
    match c.cx.model.rotate(c.domain) {
        Some(has_more) => Resp::json(200, &json!({"has_more": has_more})),
        None => c.no_domain(),
    }
}

/// Register a delegated Azure key (`description`, `keyInformation.{providerName,tenantID,keyURL}`).
fn add_key(c: &Call) -> Resp {
    let Some(body) = c.req.json() else { return field_error("body", "a JSON body is required") };
    let description = body.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(info) = body.get("keyInformation").filter(|v| v.is_object()) else {
        return field_error("keyInformation", "keyInformation is required");
    };
    let provider = info.get("providerName").and_then(Value::as_str).unwrap_or_default();
    if provider != AZURE_AM {
        return field_error(
            "keyInformation.providerName",
            format!("provider '{provider}' is not supported here; use '{AZURE_AM}'"),
        );
    }
    let tenant = info.get("tenantID").and_then(Value::as_str).unwrap_or_default();
    if !util::is_guid(tenant) {
        return field_error("keyInformation.tenantID", "tenantID must be a directory (tenant) ID GUID");
    }
    let Some(url) = info.get("keyURL").and_then(Value::as_str) else {
        return field_error("keyInformation.keyURL", "keyURL is required");
    };
    if let Err(e) = parse_key_url(url, &c.cx.endpoints.hsm_dns_suffix) {
        return field_error("keyInformation.keyURL", e);
    }
    match c.cx.model.register_key(c.domain, url, description, tenant.to_ascii_lowercase()) {
        Ok(id) => Resp::json(200, &json!({"rekID": id})),
        Err(e) => registration_refusal(c, &e, url),
    }
}

fn delete_key(c: &Call, id: &str) -> Resp {
    match c.cx.model.delete_registration(c.domain, id) {
        Ok(()) => Resp::empty(200),
        Err(e) => registration_refusal(c, &e, id),
    }
}

/// The API's answer to a refused registration change (`id`: the key ID or URL asked for).
fn registration_refusal(c: &Call, e: &RegistrationError, id: &str) -> Resp {
    let conflict = |rek: &str, m: &str| resource_error(409, "rootEncryptionKey", rek, m);
    match e {
        RegistrationError::NoSuchDomain => c.no_domain(),
        RegistrationError::NotFound => key_not_found(id),
        RegistrationError::AlreadyRegistered(rek) => {
            conflict(rek, "a root encryption key with this keyURL is already registered")
        }
        RegistrationError::Active(rek) => {
            conflict(rek, "the root encryption key is in use as the active key and cannot be deleted")
        }
        RegistrationError::Default(rek) => conflict(rek, "the default root encryption key cannot be deleted"),
        RegistrationError::InUse(rek) => conflict(
            rek,
            "data keys are still encrypted with this root encryption key; rotate until has_more is false first",
        ),
    }
}

async fn test_key(c: &Call<'_>, id: &str, loopback: &dyn Loopback) -> Resp {
    let r = match c.registration(id) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let start = Instant::now();
    let (status, message) = pairing_check(c, &r, loopback).await;
    let ms = (start.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    Resp::json(
        200,
        &json!({"id": r.rek_id, "source": r.source, "resourcePath": r.resource_path, "description": r.description,
                "status": status, "statusMessage": message, "latencyMS": ms}),
    )
}

/// Make a key active (`keyID`, `rotateBatch`); a delegated key must pass its pairing check first.
async fn set_active(c: &Call<'_>, loopback: &dyn Loopback) -> Resp {
    let body = c.req.json().unwrap_or(Value::Null);
    let Some(key_id) = body.get("keyID").and_then(Value::as_str).map(str::to_string) else {
        return field_error("keyID", "keyID is required");
    };
    let rotate_batch = body.get("rotateBatch").and_then(Value::as_bool).unwrap_or(false);
    let r = match c.registration(&key_id) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !r.is_default() {
        let (status, message) = pairing_check(c, &r, loopback).await;
        if status != HEALTHY {
            return resource_error(
                412,
                "rootEncryptionKey",
                &r.rek_id,
                format!("the key failed its pairing check ({status}): {message}"),
            );
        }
    }
    let batches = c.cx.control.settings().rotate_batches;
    match c.cx.model.activate(c.domain, &r.rek_id, rotate_batch, batches) {
        Some(has_more) => Resp::json(200, &json!({"has_more": has_more})),
        None => c.no_domain(),
    }
}

fn put_settings(c: &Call) -> Resp {
    let Some(b) = c.req.json().and_then(|b| b.get("enableBypass").and_then(Value::as_bool)) else {
        return field_error("enableBypass", "enableBypass (boolean) is required");
    };
    c.cx.model.set_bypass(c.domain, b);
    Resp::json(200, &json!({"enableBypass": b}))
}

const HEALTHY: &str = "HEALTHY";
const MISCONFIGURED: &str = "MISCONFIGURED";
const UNREACHABLE: &str = "UNREACHABLE";

/// Why a pairing check failed: its status and message.
type Failure = (&'static str, String);

/// What Antimatter does when it tests a delegated key, recorded on the registration: token as its
/// own app in the customer tenant, read the key, check type/state/tag, wrap and unwrap a fresh
/// 32-byte key. Returns the status and its message.
async fn pairing_check(c: &Call<'_>, r: &Registration, loopback: &dyn Loopback) -> (&'static str, String) {
    let (status, message) = if r.is_default() {
        (HEALTHY, "Antimatter-held default key".to_string())
    } else {
        match pair_delegated(c, r, loopback).await {
            Ok(alg) => (HEALTHY, format!("wrapped and unwrapped a 256-bit key with {alg}")),
            Err(failure) => failure,
        }
    };
    c.cx.model.record_pairing_status(c.domain, &r.rek_id, status);
    (status, message)
}

/// The HSM as the pairing check reaches it: the key's host and path, and the bearer header.
struct HsmAccess {
    host: String,
    key_path: String,
    headers: Vec<(&'static str, String)>,
}

impl HsmAccess {
    async fn call(&self, loopback: &dyn Loopback, method: &str, path: &str, body: Vec<u8>) -> Option<Resp> {
        send(loopback, method, &self.host, path, &[("api-version", "7.5")], &self.headers, body).await
    }
}

async fn pair_delegated(c: &Call<'_>, r: &Registration, loopback: &dyn Loopback) -> Result<&'static str, Failure> {
    let ep = &c.cx.endpoints;
    let url = parse_key_url(&r.resource_path, &ep.hsm_dns_suffix).map_err(|e| (MISCONFIGURED, e))?;
    if url.suffix != ep.hsm_dns_suffix || !c.cx.model.read(|s| s.hsms.contains_key(&url.hsm)) {
        return Err((UNREACHABLE, format!("could not connect to {}.{}: host not found", url.hsm, url.suffix)));
    }
    let access = pairing_token(c, r, loopback).await?;
    let hsm = HsmAccess {
        host: format!("{}.managedhsm.sandbox.localhost", url.hsm),
        key_path: format!("/keys/{}/{}", url.key, url.version),
        headers: vec![("authorization", format!("Bearer {access}")), ("content-type", "application/json".to_string())],
    };
    let got = answered(
        hsm.call(loopback, "GET", &hsm.key_path, vec![]).await,
        "the Managed HSM did not answer the key read",
    )?;
    match got.status {
        200 => {}
        403 => {
            return Err((
                MISCONFIGURED,
                format!(
                    "Antimatter's service principal is not allowed to read key {}: assign the role 'Managed HSM Crypto User' at scope /keys/{} ({})",
                    url.key,
                    url.key,
                    error_message(&got)
                ),
            ));
        }
        404 => {
            return Err((
                MISCONFIGURED,
                format!("key {} version {} not found in HSM {}", url.key, url.version, url.hsm),
            ));
        }
        _ => return Err((MISCONFIGURED, format!("reading the key failed: {}", error_message(&got)))),
    }
    check_key_bundle(&got.body_json(), &url.key, c.domain, c.cx.now())?;
    wrap_round_trip(&hsm, &url.key, loopback).await
}

/// A token for Antimatter's own application in the registration's tenant.
async fn pairing_token(c: &Call<'_>, r: &Registration, loopback: &dyn Loopback) -> Result<String, Failure> {
    let app = c.cx.model.read(|s| {
        let app = s.antimatter_app.as_ref().and_then(|a| s.apps.get(a))?;
        Some((app.app_id.clone(), app.secrets.first().cloned().unwrap_or_default()))
    });
    let Some((app_id, secret)) = app else {
        return Err((UNREACHABLE, "Antimatter's Azure application is not configured in this sandbox".into()));
    };
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", &app_id)
        .append_pair("client_secret", &secret)
        .append_pair("scope", &format!("{}/.default", c.cx.endpoints.hsm_resource))
        .finish();
    let tok = send(
        loopback,
        "POST",
        "login.sandbox.localhost",
        &format!("/{}/oauth2/v2.0/token", r.tenant_id),
        &[],
        &[("content-type", "application/x-www-form-urlencoded".into())],
        form.into_bytes(),
    )
    .await;
    let tok = answered(tok, "Entra ID did not answer the token request")?;
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
        return Err((MISCONFIGURED, format!("{hint}: {}", desc.split(" Trace ID").next().unwrap_or(desc))));
    }
    Ok(tok.body_json().get("access_token").and_then(Value::as_str).unwrap_or_default().to_string())
}

/// The key must be an enabled, currently valid oct-HSM key tagged `<domain>=allow` that permits
/// wrapKey and unwrapKey.
fn check_key_bundle(kb: &Value, key: &str, domain: &str, now: i64) -> Result<(), Failure> {
    let fail = |m: String| Err((MISCONFIGURED, m));
    let kty = kb.pointer("/key/kty").and_then(Value::as_str).unwrap_or_default();
    if kty != "oct-HSM" {
        return fail(format!("key type {kty} cannot wrap keys with AES key wrap; an oct-HSM key is required"));
    }
    let attrs = kb.get("attributes").cloned().unwrap_or(Value::Null);
    if attrs.get("enabled").and_then(Value::as_bool) != Some(true) {
        return fail(format!("key {key} is disabled"));
    }
    if attrs.get("exp").and_then(Value::as_i64).is_some_and(|e| e <= now) {
        return fail(format!("key {key} has expired"));
    }
    if attrs.get("nbf").and_then(Value::as_i64).is_some_and(|n| n > now) {
        return fail(format!("key {key} is not yet valid (nbf)"));
    }
    if kb.pointer(&format!("/tags/{domain}")).and_then(Value::as_str) != Some("allow") {
        return fail(format!("key {key} is missing the tag {domain}=allow"));
    }
    let ops: Vec<&str> = kb
        .pointer("/key/key_ops")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !ops.contains(&"wrapKey") || !ops.contains(&"unwrapKey") {
        return fail(format!("key {key} does not permit the operations wrapKey and unwrapKey"));
    }
    Ok(())
}

/// Wrap a fresh 32-byte key and unwrap it again; returns the algorithm that worked.
async fn wrap_round_trip(hsm: &HsmAccess, key: &str, loopback: &dyn Loopback) -> Result<&'static str, Failure> {
    // Try the algorithms in size order; the HSM refuses a mismatched size.
    let fresh = util::random_bytes(32);
    let mut wrapped = None;
    let mut last = None;
    for alg in ["A256KW", "A192KW", "A128KW"] {
        let body = json!({"alg": alg, "value": util::b64url(&fresh)}).to_string().into_bytes();
        let w = answered(
            hsm.call(loopback, "POST", &format!("{}/wrapkey", hsm.key_path), body).await,
            "the Managed HSM did not answer the wrap request",
        )?;
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
            return Err((
                MISCONFIGURED,
                format!(
                    "Antimatter's service principal is not allowed to wrap with key {key}: assign 'Managed HSM Crypto User' at /keys/{key} ({m})"
                ),
            ));
        }
        return Err((MISCONFIGURED, format!("wrapping with key {key} failed: {m}")));
    };
    let body = json!({"alg": alg, "value": wv}).to_string().into_bytes();
    let u = answered(
        hsm.call(loopback, "POST", &format!("{}/unwrapkey", hsm.key_path), body).await,
        "the Managed HSM did not answer the unwrap request",
    )?;
    if u.status != 200 {
        return Err((MISCONFIGURED, format!("unwrapping with key {key} failed: {}", error_message(&u))));
    }
    let back = u.body_json().get("value").and_then(Value::as_str).and_then(util::b64url_decode).unwrap_or_default();
    if back != fresh {
        return Err((MISCONFIGURED, "unwrapped key does not match the wrapped key".into()));
    }
    Ok(alg)
}

/// The response, unless it is transient: no answer, 429 and 5xx make the key `UNREACHABLE`.
fn answered(r: Option<Resp>, unanswered: &str) -> Result<Resp, Failure> {
    match r {
        Some(r) if r.status != 429 && r.status < 500 => Ok(r),
        _ => Err((UNREACHABLE, unanswered.to_string())),
    }
}

/// The first line of an HSM or Entra error message.
fn error_message(r: &Resp) -> String {
    let v = r.body_json();
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .or_else(|| v.get("error_description").and_then(Value::as_str))
        .map(|s| s.lines().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("HTTP {}", r.status))
}

/// One call through the sandbox's dispatch, marked internal in the request log.
async fn send(
    loopback: &dyn Loopback,
    method: &str,
    host: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Option<Resp> {
    let mut hm = HeaderMap::new();
    hm.insert(INTERNAL_HEADER, HeaderValue::from_static("1"));
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
    loopback.send(req).await
}
