//! Microsoft Graph v1.0 `servicePrincipals`, HTTP translation: get, list by filter, create,
//! upsert; token and permission checks; the service principal JSON.

use crate::context::Context;
use crate::model::{PrincipalError, ServicePrincipal, State, Tenant, Upserted};
use crate::tokens::TokenError;
use crate::util;
use crate::wire::graph::error;
use crate::wire::{Req, Resp};
use serde_json::{Value, json};

const READ_ROLES: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Application.ReadWrite.OwnedBy",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const WRITE_ROLES: &[&str] = &["Application.ReadWrite.All", "Application.ReadWrite.OwnedBy"];

/// A Graph route.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    GetByAppId(String),
    GetById(String),
    List,
    Create,
    /// `PATCH servicePrincipals(appId='…')`.
    Upsert(String),
    Unknown,
}

pub(crate) fn route(req: &Req) -> Route {
    let p = util::pct_decode(&req.path);
    let Some(rest) = p.strip_prefix("/v1.0/servicePrincipals") else { return Route::Unknown };
    let m = req.method.as_str();
    if rest.is_empty() || rest == "/" {
        return match m {
            "GET" => Route::List,
            "POST" => Route::Create,
            _ => Route::Unknown,
        };
    }
    let by_app_id = rest
        .strip_prefix("(appId='")
        .and_then(|r| r.strip_suffix("')"))
        .or_else(|| rest.strip_prefix("(appId=\"").and_then(|r| r.strip_suffix("\")")));
    if let Some(app_id) = by_app_id {
        return match m {
            "GET" => Route::GetByAppId(app_id.to_string()),
            "PATCH" => Route::Upsert(app_id.to_string()),
            _ => Route::Unknown,
        };
    }
    match rest.strip_prefix('/') {
        Some(id) if !id.contains('/') && m == "GET" => Route::GetById(id.to_string()),
        _ => Route::Unknown,
    }
}

impl Route {
    /// Operation name for counters and faults.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Route::GetByAppId(_) | Route::GetById(_) => "sp.get",
            Route::List => "sp.list",
            Route::Create => "sp.create",
            Route::Upsert(_) => "sp.upsert",
            Route::Unknown => "unknown",
        }
    }
}

/// One authenticated, permitted request in the caller's tenant.
struct Call<'a> {
    cx: &'a Context,
    req: &'a Req,
    now: i64,
    tid: String,
}

impl Call<'_> {
    fn error(&self, status: u16, code: &str, message: &str) -> Resp {
        error(status, code, message, self.req.header("client-request-id"), self.now)
    }

    fn not_found(&self, what: &str) -> Resp {
        self.error(
            404,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    /// A principal as Graph shows it (`entity`: with its `@odata.context`).
    fn render(&self, s: &State, sp: &ServicePrincipal, entity: bool) -> Value {
        let app = s.apps.get(&sp.app_id);
        let mut v = json!({
            "id": sp.id,
            "appId": sp.app_id,
            "displayName": sp.display_name,
            "accountEnabled": true,
            "servicePrincipalType": "Application",
            "appOwnerOrganizationId": app.map(|a| a.home_tenant.as_str()).unwrap_or_default(),
            "servicePrincipalNames": [sp.app_id],
            "signInAudience": if app.is_some_and(|a| a.multi_tenant) { "AzureADMultipleOrgs" } else { "AzureADMyOrg" },
            "appRoleAssignmentRequired": false,
            "tags": [],
        });
        if entity {
            v["@odata.context"] =
                json!(format!("{}/v1.0/$metadata#servicePrincipals/$entity", self.cx.endpoints.graph_url));
        }
        v
    }

    /// 201 with the created principal, or Graph's refusal.
    fn created(&self, r: Result<ServicePrincipal, PrincipalError>, app_id: &str) -> Resp {
        match r {
            Ok(sp) => self.cx.model.read(|s| Resp::json(201, &self.render(s, &sp, true))),
            Err(PrincipalError::InvalidApp) => self.error(
                400,
                "Request_BadRequest",
                &format!(
                    "The appId '{app_id}' of the service principal does not reference a valid application object."
                ),
            ),
            Err(PrincipalError::AlreadyExists) => self.error(
                409,
                "Request_MultipleObjectsWithSameKeyValue",
                "Another object with the same value for property servicePrincipalNames already exists.",
            ),
            Err(PrincipalError::NotFound) => self.not_found(app_id),
            Err(PrincipalError::NoSuchTenant) => self.invalid_tenant(),
        }
    }

    fn invalid_tenant(&self) -> Resp {
        self.error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid tenant.")
    }
}

pub(crate) fn handle(cx: &Context, req: &Req, route: Route) -> Resp {
    let call = match authenticate(cx, req, &route) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match route {
        Route::GetByAppId(app_id) => get(&call, &app_id, |t| t.sps.get(&app_id.to_lowercase())),
        Route::GetById(id) => get(&call, &id, |t| t.sps.values().find(|sp| sp.id.eq_ignore_ascii_case(&id))),
        Route::List => list(&call),
        Route::Create => create(&call),
        Route::Upsert(app_id) => upsert(&call, &app_id.to_lowercase()),
        Route::Unknown => call.error(400, "BadRequest", "Resource not found for the segment or method."),
    }
}

/// A valid Graph token, a known route, the permission it needs, and the caller's tenant.
fn authenticate<'a>(cx: &'a Context, req: &'a Req, route: &Route) -> Result<Call<'a>, Resp> {
    let now = cx.now();
    let mut call = Call { cx, req, now, tid: String::new() };
    let Some(tok) = req.bearer() else {
        return Err(call.error(401, "InvalidAuthenticationToken", "Access token is empty."));
    };
    let claims = match cx.tokens.validate_access_token(tok, now) {
        Ok(c) => c,
        Err(TokenError::Expired) => {
            return Err(call.error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            ));
        }
        Err(TokenError::Malformed) => {
            return Err(call.error(401, "InvalidAuthenticationToken", "Access token validation failure."));
        }
    };
    if claims.aud != cx.endpoints.graph_url && claims.aud != "00000003-0000-0000-c000-000000000000" {
        return Err(call.error(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        ));
    }
    if *route == Route::Unknown {
        return Err(call.error(400, "BadRequest", "Resource not found for the segment or method."));
    }
    let needed = if matches!(route, Route::Create | Route::Upsert(_)) { WRITE_ROLES } else { READ_ROLES };
    if !claims.roles.iter().any(|r| needed.contains(&r.as_str())) {
        return Err(call.error(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ));
    }
    call.tid = claims.tid;
    if !cx.model.read(|s| s.tenants.contains_key(&call.tid)) {
        return Err(call.invalid_tenant());
    }
    Ok(call)
}

fn get(c: &Call, what: &str, find: impl Fn(&Tenant) -> Option<&ServicePrincipal>) -> Resp {
    c.cx.model.read(|s| match s.tenants.get(&c.tid).and_then(find) {
        Some(sp) => Resp::json(200, &c.render(s, sp, true)),
        None => c.not_found(what),
    })
}

fn list(c: &Call) -> Resp {
    let filter = c.req.query_param("$filter").map(str::trim);
    let parsed = filter.map(|f| f.split_once(" eq ").map(|(k, v)| (k.trim(), v.trim().trim_matches('\'').to_string())));
    let keep: Box<dyn Fn(&ServicePrincipal) -> bool> = match parsed {
        None => Box::new(|_| true),
        Some(Some(("appId", v))) => {
            let v = v.to_lowercase();
            Box::new(move |sp| sp.app_id == v)
        }
        Some(Some(("displayName", v))) => Box::new(move |sp| sp.display_name == v),
        Some(Some(("id", v))) => Box::new(move |sp| sp.id.eq_ignore_ascii_case(&v)),
        Some(_) => {
            return c.error(
                400,
                "Request_UnsupportedQuery",
                "Unsupported or invalid query filter clause specified for property of resource 'ServicePrincipal'.",
            );
        }
    };
    c.cx.model.read(|s| {
        let items: Vec<Value> = s
            .tenants
            .get(&c.tid)
            .map(|t| t.sps.values().filter(|sp| keep(sp)).map(|sp| c.render(s, sp, false)).collect())
            .unwrap_or_default();
        Resp::json(
            200,
            &json!({"@odata.context": format!("{}/v1.0/$metadata#servicePrincipals", c.cx.endpoints.graph_url), "value": items}),
        )
    })
}

fn create(c: &Call) -> Resp {
    let body = c.req.json().unwrap_or(Value::Null);
    let Some(app_id) = body.get("appId").and_then(Value::as_str).map(str::to_lowercase) else {
        return c.error(
            400,
            "Request_BadRequest",
            "A value is required for property 'appId' of resource 'ServicePrincipal'.",
        );
    };
    let name = body.get("displayName").and_then(Value::as_str);
    let replicated_at = c.cx.control.after(c.cx.control.settings().principal_replication_secs);
    c.created(c.cx.model.create_service_principal(&c.tid, &app_id, name, replicated_at), &app_id)
}

fn upsert(c: &Call, app_id: &str) -> Resp {
    let body = c.req.json().unwrap_or_else(|| json!({}));
    let name = body.get("displayName").and_then(Value::as_str);
    let prefer = c.req.header("prefer").unwrap_or_default().to_ascii_lowercase();
    let create_if_missing = prefer.split(',').any(|p| p.trim() == "create-if-missing");
    let replicated_at = c.cx.control.after(c.cx.control.settings().principal_replication_secs);
    match c.cx.model.upsert_service_principal(&c.tid, app_id, name, create_if_missing, replicated_at) {
        Ok(Upserted::Updated) => Resp::empty(204),
        Ok(Upserted::Created(sp)) => c.created(Ok(sp), app_id),
        Err(e) => c.created(Err(e), app_id),
    }
}
