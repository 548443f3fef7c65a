//! Microsoft Graph v1.0 `servicePrincipals`: get, list by filter, create, upsert.

use crate::entra::{self, TokenError};
use crate::http::{Req, Resp};
use crate::state::{ServicePrincipal, Shared, lock};
use crate::util;
use serde_json::{Value, json};
use std::sync::Arc;

const READ_ROLES: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Application.ReadWrite.OwnedBy",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const WRITE_ROLES: &[&str] = &["Application.ReadWrite.All", "Application.ReadWrite.OwnedBy"];

enum Path {
    Collection,
    ByAppId(String),
    ById(String),
    Other,
}

fn parse(req: &Req) -> Path {
    let p = util::pct_decode(&req.path);
    let Some(rest) = p.strip_prefix("/v1.0/servicePrincipals") else { return Path::Other };
    if rest.is_empty() || rest == "/" {
        return Path::Collection;
    }
    if let Some(inner) = rest.strip_prefix("(appId='").and_then(|r| r.strip_suffix("')")) {
        return Path::ByAppId(inner.to_string());
    }
    if let Some(inner) = rest.strip_prefix("(appId=\"").and_then(|r| r.strip_suffix("\")")) {
        return Path::ByAppId(inner.to_string());
    }
    if let Some(id) = rest.strip_prefix('/')
        && !id.contains('/')
    {
        return Path::ById(id.to_string());
    }
    Path::Other
}

pub(crate) fn classify(req: &Req) -> &'static str {
    match (parse(req), req.method.as_str()) {
        (Path::Collection, "GET") => "sp.list",
        (Path::Collection, "POST") => "sp.create",
        (Path::ByAppId(_), "PATCH") => "sp.upsert",
        (Path::ByAppId(_) | Path::ById(_), "GET") => "sp.get",
        _ => "unknown",
    }
}

fn gerr(status: u16, code: &str, message: &str, req: &Req, now: i64) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"code": code, "message": message, "innerError": {
            "date": util::rfc3339(now),
            "request-id": util::uuid_v4(),
            "client-request-id": req.header("client-request-id").map(str::to_string).unwrap_or_else(util::uuid_v4),
        }}}),
    )
}

fn sp_json(base: &str, sp: &ServicePrincipal, owner_tenant: &str, multi: bool, entity: bool) -> Value {
    let mut v = json!({
        "id": sp.id,
        "appId": sp.app_id,
        "displayName": sp.display_name,
        "accountEnabled": true,
        "servicePrincipalType": "Application",
        "appOwnerOrganizationId": owner_tenant,
        "servicePrincipalNames": [sp.app_id],
        "signInAudience": if multi { "AzureADMultipleOrgs" } else { "AzureADMyOrg" },
        "appRoleAssignmentRequired": false,
        "tags": [],
    });
    if entity {
        v["@odata.context"] = json!(format!("{base}/v1.0/$metadata#servicePrincipals/$entity"));
    }
    v
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Req, op: &'static str) -> Resp {
    let now = shared.now();
    let base = shared.ep.graph_url.clone();
    let Some(tok) = req.bearer() else {
        return gerr(401, "InvalidAuthenticationToken", "Access token is empty.", req, now);
    };
    let claims = match entra::validate(shared, tok) {
        Ok(c) => c,
        Err(TokenError::Expired) => {
            return gerr(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
                req,
                now,
            );
        }
        Err(TokenError::Malformed) => {
            return gerr(401, "InvalidAuthenticationToken", "Access token validation failure.", req, now);
        }
    };
    if claims.aud != base && claims.aud != "00000003-0000-0000-c000-000000000000" {
        return gerr(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.", req, now);
    }
    let has = |set: &[&str]| claims.roles.iter().any(|r| set.contains(&r.as_str()));
    let write = matches!(op, "sp.create" | "sp.upsert");
    if op == "unknown" {
        return gerr(400, "BadRequest", "Resource not found for the segment or method.", req, now);
    }
    if !has(if write { WRITE_ROLES } else { READ_ROLES }) {
        return gerr(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            req,
            now,
        );
    }
    let mut inner = lock(&shared.inner);
    let tid = claims.tid.clone();
    let apps = inner.apps.clone();
    let Some(tenant) = inner.tenants.get_mut(&tid) else {
        return gerr(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid tenant.", req, now);
    };
    let render = |sp: &ServicePrincipal, entity: bool| {
        let app = apps.get(&sp.app_id);
        sp_json(
            &base,
            sp,
            app.map(|a| a.home_tenant.as_str()).unwrap_or_default(),
            app.is_some_and(|a| a.multi_tenant),
            entity,
        )
    };
    let not_found = |what: &str| {
        gerr(
            404,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
            ),
            req,
            now,
        )
    };
    match (parse(req), op) {
        (Path::ByAppId(app_id), "sp.get") => match tenant.sps.get(&app_id.to_lowercase()) {
            Some(sp) => Resp::json(200, &render(sp, true)),
            None => not_found(&app_id),
        },
        (Path::ById(id), "sp.get") => match tenant.sps.values().find(|s| s.id.eq_ignore_ascii_case(&id)) {
            Some(sp) => Resp::json(200, &render(sp, true)),
            None => not_found(&id),
        },
        (Path::Collection, "sp.list") => {
            let filter = req.q("$filter").map(str::trim);
            let items: Vec<Value> = match filter {
                None => tenant.sps.values().map(|s| render(s, false)).collect(),
                Some(f) => {
                    let parsed = f.split_once(" eq ").map(|(k, v)| (k.trim(), v.trim().trim_matches('\'').to_string()));
                    match parsed {
                        Some(("appId", v)) => {
                            tenant.sps.get(&v.to_lowercase()).map(|s| render(s, false)).into_iter().collect()
                        }
                        Some(("displayName", v)) => {
                            tenant.sps.values().filter(|s| s.display_name == v).map(|s| render(s, false)).collect()
                        }
                        Some(("id", v)) => tenant
                            .sps
                            .values()
                            .filter(|s| s.id.eq_ignore_ascii_case(&v))
                            .map(|s| render(s, false))
                            .collect(),
                        _ => {
                            return gerr(
                                400,
                                "Request_UnsupportedQuery",
                                "Unsupported or invalid query filter clause specified for property of resource 'ServicePrincipal'.",
                                req,
                                now,
                            );
                        }
                    }
                }
            };
            Resp::json(
                200,
                &json!({"@odata.context": format!("{base}/v1.0/$metadata#servicePrincipals"), "value": items}),
            )
        }
        (Path::Collection, "sp.create") => {
            let body = req.json().unwrap_or(Value::Null);
            let Some(app_id) = body.get("appId").and_then(Value::as_str).map(str::to_lowercase) else {
                return gerr(
                    400,
                    "Request_BadRequest",
                    "A value is required for property 'appId' of resource 'ServicePrincipal'.",
                    req,
                    now,
                );
            };
            create(tenant, &apps, &tid, &app_id, &body, req, now)
                .map_or_else(|e| e, |sp| Resp::json(201, &render(&sp, true)))
        }
        (Path::ByAppId(app_id), "sp.upsert") => {
            let app_id = app_id.to_lowercase();
            let body = req.json().unwrap_or_else(|| json!({}));
            if let Some(sp) = tenant.sps.get_mut(&app_id) {
                if let Some(n) = body.get("displayName").and_then(Value::as_str) {
                    sp.display_name = n.to_string();
                }
                return Resp::empty(204);
            }
            let prefer = req.header("prefer").unwrap_or_default().to_ascii_lowercase();
            if !prefer.split(',').any(|p| p.trim() == "create-if-missing") {
                return not_found(&app_id);
            }
            create(tenant, &apps, &tid, &app_id, &body, req, now)
                .map_or_else(|e| e, |sp| Resp::json(201, &render(&sp, true)))
        }
        _ => gerr(400, "BadRequest", "Resource not found for the segment or method.", req, now),
    }
}

fn create(
    tenant: &mut crate::state::Tenant,
    apps: &std::collections::BTreeMap<String, crate::state::App>,
    tid: &str,
    app_id: &str,
    body: &Value,
    req: &Req,
    now: i64,
) -> Result<ServicePrincipal, Resp> {
    let Some(app) = apps.get(app_id).filter(|a| a.multi_tenant || a.home_tenant == tid) else {
        return Err(gerr(
            400,
            "Request_BadRequest",
            &format!("The appId '{app_id}' of the service principal does not reference a valid application object."),
            req,
            now,
        ));
    };
    if tenant.sps.contains_key(app_id) {
        return Err(gerr(
            409,
            "Request_MultipleObjectsWithSameKeyValue",
            "Another object with the same value for property servicePrincipalNames already exists.",
            req,
            now,
        ));
    }
    let sp = ServicePrincipal {
        id: util::uuid_v4(),
        app_id: app_id.to_string(),
        display_name: body.get("displayName").and_then(Value::as_str).unwrap_or(&app.name).to_string(),
        graph_roles: vec![],
    };
    tenant.sps.insert(app_id.to_string(), sp.clone());
    Ok(sp)
}
