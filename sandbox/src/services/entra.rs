//! Entra ID, HTTP translation: the token endpoint (client credentials by secret or federated
//! assertion, its signature checked against the issuer's published keys), the OpenID
//! configuration, instance discovery and the (empty) key set.

use crate::client::Client;
use crate::context::{Context, Loopback};
use crate::federation::{self, SignatureError};
use crate::jwt;
use crate::model::App;
use crate::util;
use crate::wire::entra::AadError;
use crate::wire::{Req, Resp};
use bytes::Bytes;
use serde_json::{Value, json};

/// An Entra route, by path (the method is checked when answering).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Route {
    Token,
    OpenIdConfiguration,
    InstanceDiscovery,
    Jwks,
    Unknown,
}

pub(crate) fn route(req: &Req) -> Route {
    let p = req.path.as_str();
    if p.ends_with("/oauth2/v2.0/token") || p.ends_with("/oauth2/token") {
        Route::Token
    } else if p.ends_with("/.well-known/openid-configuration") {
        Route::OpenIdConfiguration
    } else if p.ends_with("/discovery/instance") {
        Route::InstanceDiscovery
    } else if p.contains("/discovery/") && p.ends_with("/keys") {
        Route::Jwks
    } else {
        Route::Unknown
    }
}

impl Route {
    /// Operation name for counters and faults.
    pub(crate) fn operation(self) -> &'static str {
        match self {
            Route::Token => "token",
            Route::OpenIdConfiguration => "openid-configuration",
            Route::InstanceDiscovery => "instance-discovery",
            Route::Jwks => "jwks",
            Route::Unknown => "unknown",
        }
    }
}

pub(crate) async fn handle(cx: &Context, req: &Req, route: Route, loopback: &dyn Loopback) -> Resp {
    let tenant_seg = req.segments().first().cloned().unwrap_or_default();
    let answer = match (route, req.method.as_str()) {
        (Route::OpenIdConfiguration, "GET") => openid_configuration(cx, &tenant_seg),
        (Route::InstanceDiscovery, "GET") => Ok(instance_discovery(cx, req)),
        (Route::Jwks, _) => Ok(Resp::json(200, &json!({"keys": []}))),
        (Route::Token, "POST") => issue_token(cx, req, &tenant_seg, loopback)
            .await
            .map(|v| Resp::json(200, &v).with("cache-control", "no-store, no-cache").with("pragma", "no-cache")),
        _ => Err(AadError::new(
            404,
            "invalid_request",
            900561,
            "The endpoint only accepts POST, OPTIONS requests. Received a GET request.",
        )),
    };
    answer.unwrap_or_else(|e| e.into_response(&cx.endpoints.authority_url, req.header("client-request-id"), cx.now()))
}

fn openid_configuration(cx: &Context, tenant_seg: &str) -> Result<Resp, AadError> {
    let Some(tid) = cx.model.read(|s| s.tenant_id(tenant_seg)) else {
        return Err(AadError::unknown_tenant(tenant_seg));
    };
    let base = &cx.endpoints.authority_url;
    let graph_host = cx.endpoints.graph_url.trim_start_matches("https://").to_string();
    Ok(Resp::json(
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
            "userinfo_endpoint": format!("{}/oidc/userinfo", cx.endpoints.graph_url),
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
    ))
}

fn instance_discovery(cx: &Context, req: &Req) -> Resp {
    let base = &cx.endpoints.authority_url;
    let host = base.trim_start_matches("https://").to_string();
    let tenant = req
        .query_param("authorization_endpoint")
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

/// Client credentials: check the form, the tenant, the app's secret or federated assertion (its
/// claims, then its signature), its service principal in the tenant and the scope, then sign
/// the access token.
async fn issue_token(cx: &Context, req: &Req, tenant_seg: &str, loopback: &dyn Loopback) -> Result<Value, AadError> {
    let (claims, assertion) = grant(cx, req, tenant_seg)?;
    if let Some(Assertion { issuer, token }) = &assertion {
        check_signature(cx, loopback, issuer, token).await?;
    }
    let lifetime = cx.control.settings().token_lifetime_secs;
    let token = cx.tokens.sign("sandbox", &claims);
    Ok(json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}))
}

/// A federated assertion whose claims matched one of the app's federated credentials.
struct Assertion {
    issuer: String,
    token: String,
}

/// Everything of a token request but the assertion's signature: the access token's claims, and
/// the assertion left to check.
fn grant(cx: &Context, req: &Req, tenant_seg: &str) -> Result<(Value, Option<Assertion>), AadError> {
    let ct = req.header("content-type").unwrap_or_default();
    if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return Err(AadError::missing_parameter("grant_type"));
    }
    let form = util::parse_form(std::str::from_utf8(&req.body).unwrap_or_default());
    let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let now = cx.now();
    let lifetime = cx.control.settings().token_lifetime_secs;
    cx.model.read(|state| {
        let tid = state.tenant_id(tenant_seg).ok_or_else(|| AadError::unknown_tenant(tenant_seg))?;
        let grant = get("grant_type").ok_or_else(|| AadError::missing_parameter("grant_type"))?;
        if grant != "client_credentials" {
            return Err(AadError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!(
                    "The app requested an unsupported grant type '{grant}'. The sandbox only issues client credential tokens."
                ),
            ));
        }
        let client_id = get("client_id").ok_or_else(|| AadError::missing_parameter("client_id"))?.to_ascii_lowercase();
        let scope = get("scope").ok_or_else(|| AadError::missing_parameter("scope"))?;
        let tenant = state.tenants.get(&tid).ok_or_else(|| AadError::unknown_tenant(tenant_seg))?;
        let directory = if tenant.name.is_empty() { tid.as_str() } else { tenant.name.as_str() };
        let not_found = || {
            AadError::new(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{directory}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            )
        };
        let app = state.apps.get(&client_id).ok_or_else(not_found)?;
        // Credentials belong to the app registration and are checked before the tenant's principal.
        let assertion = authenticate_client(app, &client_id, &get, now)?;
        let acr = if assertion.is_some() { "2" } else { "1" };
        // A principal Entra ID has not replicated yet is not found (settings.principal_replication_secs).
        let sp = tenant.sps.get(&client_id).filter(|sp| sp.replicated_at <= now).ok_or_else(not_found)?;
        let resource = token_resource(cx, scope, directory)?;
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
        if resource == cx.endpoints.graph_url && !sp.graph_roles.is_empty() {
            claims["roles"] = json!(sp.graph_roles);
        }
        Ok((claims, assertion))
    })
}

/// The app's credential in the form: a secret (`appidacr` 1), or a federated assertion (2) whose
/// signature is left to check.
fn authenticate_client<'a>(
    app: &App,
    client_id: &str,
    get: &impl Fn(&str) -> Option<&'a str>,
    now: i64,
) -> Result<Option<Assertion>, AadError> {
    if let Some(secret) = get("client_secret") {
        if !app.secrets.iter().any(|s| s == secret) {
            return Err(AadError::new(
                401,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            ));
        }
        return Ok(None);
    }
    if let Some(assertion) = get("client_assertion") {
        if get("client_assertion_type") != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
            return Err(AadError::missing_parameter("client_assertion_type"));
        }
        let issuer = check_assertion(now, app, assertion)?;
        return Ok(Some(Assertion { issuer, token: assertion.to_owned() }));
    }
    Err(AadError::new(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ))
}

/// The resource of a `<resource>/.default` scope: Graph or the HSMs (`directory` names the tenant).
fn token_resource<'a>(cx: &Context, scope: &'a str, directory: &str) -> Result<&'a str, AadError> {
    if scope.split_whitespace().count() != 1 || !scope.ends_with("/.default") {
        return Err(AadError::new(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    let resource = scope.trim_end_matches("/.default");
    if resource != cx.endpoints.graph_url && resource != cx.endpoints.hsm_resource {
        return Err(AadError::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {directory}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        ));
    }
    Ok(resource)
}

/// A federated assertion: in its time range, and an issuer, subject and audience the app trusts;
/// returns its issuer.
fn check_assertion(now: i64, app: &App, assertion: &str) -> Result<String, AadError> {
    let c = jwt::decode_unverified(assertion)
        .ok_or_else(|| AadError::new(400, "invalid_request", 50027, "JWT token is invalid or malformed."))?;
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
        return Err(AadError::new(
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
        return Err(AadError::new(
            400,
            "invalid_client",
            700211,
            format!("No matching federated identity record found for presented assertion issuer '{iss}'. {tail}"),
        ));
    }
    let by_subject: Vec<_> = by_issuer.into_iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(AadError::new(
            400,
            "invalid_client",
            700213,
            format!("No matching federated identity record found for presented assertion subject '{sub}'. {tail}"),
        ));
    }
    if !by_subject.iter().any(|f| auds.iter().any(|a| f.audiences.contains(a))) {
        return Err(AadError::new(
            400,
            "invalid_client",
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. {tail}",
                auds.join(",")
            ),
        ));
    }
    Ok(iss)
}

/// The assertion's signature under its issuer's published keys, found as Entra finds them: the
/// issuer's OpenID configuration (`{issuer}/.well-known/openid-configuration`), then its
/// `jwks_uri`. The refusals are Entra's: a key ID the issuer does not publish (or metadata that
/// cannot be read) is AADSTS7000272 (as Entra answered in Azure/azure-workload-identity issue
/// #1232), a signature that does not verify under the published key is AADSTS700027 (its message
/// as in AzureAD/passport-azure-ad issue #453 and microsoftgraph/msgraph-sdk-php issue #1585).
async fn check_signature(cx: &Context, loopback: &dyn Loopback, issuer: &str, token: &str) -> Result<(), AadError> {
    let key_not_found = |kid: &str| {
        AadError::new(
            400,
            "invalid_client",
            7000272,
            format!(
                "The certificate with identifier {kid} used to sign the federated credential could not be found in the metadata of identity provider {issuer}. Please validate that your Identity Provider's metadata exposes the key used to sign the incoming token."
            ),
        )
    };
    let kid = jwt::decode_unverified_header(token)
        .and_then(|h| h.get("kid").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let configuration =
        fetch_json(cx, loopback, &format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))).await;
    let jwks_uri = configuration.as_ref().and_then(|c| c.get("jwks_uri")).and_then(Value::as_str);
    let Some(jwks) = (match jwks_uri {
        Some(uri) => fetch_json(cx, loopback, uri).await,
        None => None,
    }) else {
        return Err(key_not_found(&kid));
    };
    federation::verify(token, &jwks).map_err(|e| match e {
        SignatureError::UnknownKey(kid) => key_not_found(&kid),
        SignatureError::BadSignature(kid) => AadError::new(
            400,
            "invalid_client",
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{kid}']"
            ),
        ),
        SignatureError::Malformed | SignatureError::UnsupportedAlgorithm(_) => {
            AadError::new(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        }
    })
}

/// A JSON document by `GET` over https: the sandbox's own hosts through the loopback, other
/// loopback hosts over TLS trusting the sandbox CA and the configured issuer CAs. Nothing is
/// fetched from outside loopback. `None` when it cannot be read.
async fn fetch_json(cx: &Context, loopback: &dyn Loopback, url: &str) -> Option<Value> {
    let parsed = url::Url::parse(url).ok().filter(|u| u.scheme() == "https")?;
    let host = parsed.host_str()?.to_ascii_lowercase();
    let target = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    if host.ends_with(".sandbox.localhost") {
        let req = Req {
            method: "GET".into(),
            host,
            path: parsed.path().to_owned(),
            query: parsed.query_pairs().map(|(a, b)| (a.into_owned(), b.into_owned())).collect(),
            headers: Default::default(),
            body: Bytes::new(),
        };
        let answer = loopback.send(req).await?;
        return (answer.status == 200).then(|| answer.body_json()).filter(|v| !v.is_null());
    }
    let loopback_host = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback_host {
        return None;
    }
    let client = Client::with_tls(cx.issuer_tls.clone(), parsed.port_or_known_default()?);
    let url = format!("https://{host}{target}");
    // Kubernetes serves its key set only as `application/jwk-set+json`.
    let answer = client.request("GET", &url, &[("accept", "application/json, application/jwk-set+json")], None);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), answer).await.ok()?.ok()?;
    (answer.status == 200).then(|| answer.json()).filter(|v| !v.is_null())
}
