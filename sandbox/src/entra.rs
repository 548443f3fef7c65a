//! Entra ID: token endpoint (client credentials by secret or federated assertion), OpenID
//! configuration, instance discovery, and access-token validation for the other services.

use crate::http::{Req, Resp};
use crate::jwt;
use crate::state::{Shared, lock};
use crate::util;
use serde_json::{Value, json};
use std::sync::Arc;

pub(crate) fn classify(req: &Req) -> &'static str {
    let p = req.path.as_str();
    if p.ends_with("/oauth2/v2.0/token") || p.ends_with("/oauth2/token") {
        "token"
    } else if p.ends_with("/.well-known/openid-configuration") {
        "openid-configuration"
    } else if p.ends_with("/discovery/instance") {
        "instance-discovery"
    } else if p.contains("/discovery/") && p.ends_with("/keys") {
        "jwks"
    } else {
        "unknown"
    }
}

/// Claims of a validated sandbox access token.
#[derive(Debug, Clone)]
pub(crate) struct Claims {
    pub tid: String,
    pub oid: String,
    pub appid: String,
    pub aud: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenError {
    Malformed,
    Expired,
}

/// Verify signature and expiry of a sandbox-issued access token.
pub(crate) fn validate(shared: &Shared, token: &str) -> Result<Claims, TokenError> {
    let c = jwt::verify(&shared.jwt_key, token).map_err(|_| TokenError::Malformed)?;
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let exp = c.get("exp").and_then(Value::as_i64).ok_or(TokenError::Malformed)?;
    let claims = Claims {
        tid: s("tid"),
        oid: s("oid"),
        appid: s("appid"),
        aud: s("aud"),
        roles: c
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
    };
    if exp <= shared.now() {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

struct AadError {
    status: u16,
    error: &'static str,
    code: u32,
    message: String,
}

fn aad(status: u16, error: &'static str, code: u32, message: impl Into<String>) -> AadError {
    AadError { status, error, code, message: message.into() }
}

fn error_resp(shared: &Shared, req: &Req, e: AadError) -> Resp {
    let trace = util::uuid_v4();
    let corr = req.header("client-request-id").map(str::to_string).unwrap_or_else(util::uuid_v4);
    let now = shared.now();
    let ts = util::rfc3339(now).replace('T', " ");
    let desc = format!("AADSTS{}: {} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}", e.code, e.message);
    Resp::json(
        e.status,
        &json!({
            "error": e.error,
            "error_description": desc,
            "error_codes": [e.code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("{}/error?code={}", shared.ep.authority_url, e.code),
        }),
    )
}

fn tenant_id(shared: &Shared, t: &str) -> Option<String> {
    let inner = lock(&shared.inner);
    let tl = t.to_ascii_lowercase();
    if inner.tenants.contains_key(&tl) {
        return Some(tl);
    }
    inner
        .tenants
        .values()
        .find(|x| {
            !x.name.is_empty()
                && (x.name.eq_ignore_ascii_case(&tl) || format!("{}.onmicrosoft.com", x.name).eq_ignore_ascii_case(&tl))
        })
        .map(|x| x.id.clone())
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Req, op: &'static str) -> Resp {
    let segs = req.segments();
    let tenant_seg = segs.first().cloned().unwrap_or_default();
    let base = &shared.ep.authority_url;
    match op {
        "openid-configuration" if req.method == "GET" => {
            let Some(tid) = tenant_id(shared, &tenant_seg) else {
                return error_resp(shared, req, unknown_tenant(&tenant_seg));
            };
            let graph_host = shared.ep.graph_url.trim_start_matches("https://").to_string();
            Resp::json(
                200,
                &json!({
                    "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                    "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": format!("{base}/{tid}/v2.0"),
                    "request_uri_parameter_supported": false,
                    "userinfo_endpoint": format!("{}/oidc/userinfo", shared.ep.graph_url),
                    "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
                    "device_authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/devicecode"),
                    "http_logout_supported": true,
                    "frontchannel_logout_supported": true,
                    "end_session_endpoint": format!("{base}/{tid}/oauth2/v2.0/logout"),
                    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid"],
                    "tenant_region_scope": "NA",
                    "cloud_instance_name": "sandbox.localhost",
                    "cloud_graph_host_name": graph_host,
                    "msgraph_host": graph_host,
                }),
            )
        }
        "instance-discovery" if req.method == "GET" => {
            let host = base.trim_start_matches("https://").to_string();
            let tenant = req
                .q("authorization_endpoint")
                .and_then(|a| a.trim_start_matches("https://").split('/').nth(1).map(str::to_string))
                .unwrap_or_else(|| "common".into());
            Resp::json(
                200,
                &json!({
                    "tenant_discovery_endpoint": format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
                    "api-version": "1.1",
                    "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
                }),
            )
        }
        "jwks" => Resp::json(200, &json!({"keys": []})),
        "token" if req.method == "POST" => match issue(shared, req, &tenant_seg) {
            Ok(v) => Resp::json(200, &v).with("cache-control", "no-store, no-cache").with("pragma", "no-cache"),
            Err(e) => error_resp(shared, req, e),
        },
        _ => error_resp(
            shared,
            req,
            aad(
                404,
                "invalid_request",
                900561,
                "The endpoint only accepts POST, OPTIONS requests. Received a GET request.",
            ),
        ),
    }
}

fn unknown_tenant(t: &str) -> AadError {
    aad(
        400,
        "invalid_request",
        90002,
        format!(
            "Tenant '{t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

fn issue(shared: &Shared, req: &Req, tenant_seg: &str) -> Result<Value, AadError> {
    let ct = req.header("content-type").unwrap_or_default();
    if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return Err(aad(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ));
    }
    let form = util::parse_form(std::str::from_utf8(&req.body).unwrap_or_default());
    let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let missing = |p: &str| {
        aad(400, "invalid_request", 900144, format!("The request body must contain the following parameter: '{p}'."))
    };
    let tid = tenant_id(shared, tenant_seg).ok_or_else(|| unknown_tenant(tenant_seg))?;
    let grant = get("grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant != "client_credentials" {
        return Err(aad(
            400,
            "unsupported_grant_type",
            70003,
            format!(
                "The app requested an unsupported grant type '{grant}'. The sandbox only issues client credential tokens."
            ),
        ));
    }
    let client_id = get("client_id").ok_or_else(|| missing("client_id"))?.to_ascii_lowercase();
    let scope = get("scope").ok_or_else(|| missing("scope"))?;
    let inner = lock(&shared.inner);
    let tenant = inner.tenants.get(&tid).ok_or_else(|| unknown_tenant(tenant_seg))?;
    let not_found = || {
        aad(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                if tenant.name.is_empty() { tid.clone() } else { tenant.name.clone() }
            ),
        )
    };
    let app = inner.apps.get(&client_id).ok_or_else(not_found)?;
    // Credentials belong to the app registration and are checked before the tenant's principal.
    let acr = if let Some(secret) = get("client_secret") {
        if !app.secrets.iter().any(|s| s == secret) {
            return Err(aad(
                401,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            ));
        }
        "1"
    } else if let Some(assertion) = get("client_assertion") {
        if get("client_assertion_type") != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
            return Err(aad(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            ));
        }
        check_assertion(shared.now(), app, assertion)?;
        "2"
    } else {
        return Err(aad(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    let sp = tenant.sps.get(&client_id).ok_or_else(not_found)?;
    if scope.split_whitespace().count() != 1 || !scope.ends_with("/.default") {
        return Err(aad(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    let resource = scope.trim_end_matches("/.default");
    let is_graph = resource == shared.ep.graph_url;
    if !is_graph && resource != shared.ep.hsm_resource {
        return Err(aad(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                if tenant.name.is_empty() { &tid } else { &tenant.name }
            ),
        ));
    }
    let now = shared.now();
    let lifetime = lock(&shared.settings).token_lifetime_secs;
    let mut claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tid}/"),
        "iat": now, "nbf": now, "exp": now + lifetime,
        "aio": util::uuid_v4(),
        "appid": client_id,
        "appidacr": acr,
        "idp": format!("https://sts.windows.net/{tid}/"),
        "idtyp": "app",
        "oid": sp.id,
        "sub": sp.id,
        "tid": tid,
        "uti": util::b64url(&util::random_bytes(16)),
        "ver": "1.0",
        "app_displayname": app.name,
    });
    if is_graph && !sp.graph_roles.is_empty() {
        claims["roles"] = json!(sp.graph_roles);
    }
    let token = jwt::sign(&shared.jwt_key, "sandbox", &claims);
    Ok(json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}))
}

fn check_assertion(now: i64, app: &crate::state::App, assertion: &str) -> Result<(), AadError> {
    let c = jwt::decode_unverified(assertion)
        .ok_or_else(|| aad(400, "invalid_request", 50027, "JWT token is invalid or malformed."))?;
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let (iss, sub) = (s("iss"), s("sub"));
    let auds: Vec<String> = match c.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => vec![],
    };
    let exp = c.get("exp").and_then(Value::as_i64).unwrap_or(0);
    let nbf = c.get("nbf").and_then(Value::as_i64).or_else(|| c.get("iat").and_then(Value::as_i64)).unwrap_or(0);
    if exp <= now || nbf > now + 300 {
        return Err(aad(
            400,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                util::rfc3339_fraction(now),
                util::rfc3339_fraction(nbf),
                util::rfc3339_fraction(exp)
            ),
        ));
    }
    let tail = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation";
    let by_issuer: Vec<_> = app.federated.iter().filter(|f| f.issuer == iss).collect();
    if by_issuer.is_empty() {
        return Err(aad(
            400,
            "invalid_client",
            700211,
            format!("No matching federated identity record found for presented assertion issuer '{iss}'. {tail}"),
        ));
    }
    let by_subject: Vec<_> = by_issuer.into_iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(aad(
            400,
            "invalid_client",
            700213,
            format!("No matching federated identity record found for presented assertion subject '{sub}'. {tail}"),
        ));
    }
    if !by_subject.iter().any(|f| auds.iter().any(|a| f.audiences.contains(a))) {
        return Err(aad(
            400,
            "invalid_client",
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. {tail}",
                auds.join(",")
            ),
        ));
    }
    Ok(())
}
