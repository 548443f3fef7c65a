//! Microsoft Graph: find or create the service principal of Antimatter's multi-tenant application in
//! the customer's tenant. Written on reqwest with `azure_identity` tokens (no Rust Graph SDK fits).

use serde::{Deserialize, Serialize};

use super::{Azure, Identity, describe_azure};
use crate::{
    memo::Memo,
    remote::{RemoteError, Service, send_json},
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePrincipal {
    id: String,
    #[serde(default)]
    app_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewServicePrincipal<'a> {
    app_id: &'a str,
}

/// Whether [`Graph::ensure_service_principal`] found or created the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Existing,
    Created,
}

/// Tenants whose principal lookups are remembered at once.
const REMEMBERED_PRINCIPALS: usize = 1024;

/// Service principal object IDs per (tenant, app), looked up once.
pub struct Graph {
    principals: Memo<(String, String), String>,
}

impl Default for Graph {
    fn default() -> Self {
        Self { principals: Memo::new(REMEMBERED_PRINCIPALS) }
    }
}

impl Graph {
    /// The object ID of `app_id`'s service principal in the identity's tenant, creating it if absent.
    /// `Found::Created` is told once, to the caller whose lookup created it.
    pub async fn ensure_service_principal(
        &self,
        azure: &Azure,
        identity: &Identity,
        app_id: &str,
    ) -> Result<(String, Found), RemoteError> {
        let key = (identity.tenant_id.clone(), app_id.to_owned());
        let mut created_here = false;
        let id = self
            .principals
            .get_or_try_init(key, async || {
                let (id, found) = find_or_create(azure, identity, app_id).await?;
                created_here = found == Found::Created;
                Ok::<_, RemoteError>(id)
            })
            .await?;
        Ok((id, if created_here { Found::Created } else { Found::Existing }))
    }
}

impl Graph {
    /// The application whose service principal `object_id` is in the identity's tenant; `None`
    /// when the tenant has no such principal. Not remembered: a principal can be deleted and its
    /// object ID is not reused for another application, but a stale "yes" would grant on a guess.
    pub async fn principal_application(
        &self,
        azure: &Azure,
        identity: &Identity,
        object_id: &str,
    ) -> Result<Option<String>, RemoteError> {
        let graph = azure.cloud.graph_url.as_str().trim_end_matches('/');
        let token = azure.token(identity, &scope(azure)).await?;
        // The object ID is a GUID (validated at admission), so it is safe in the path.
        let get = azure
            .http()
            .get(format!("{graph}/v1.0/servicePrincipals/{object_id}"))
            .query(&[("$select", "id,appId")])
            .bearer_auth(token.secret());
        match send_json::<ServicePrincipal>(Service::Graph, "sp.get", get, describe_azure).await {
            Ok(sp) => Ok(sp.app_id),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Fetches (and caches) the identity's Graph token, so a later lookup does not wait for it.
pub async fn warm_token(azure: &Azure, identity: &Identity) {
    // An error here is met again, and reported, by the lookup itself.
    let _ = azure.token(identity, &scope(azure)).await;
}

fn scope(azure: &Azure) -> String {
    format!("{}/.default", azure.cloud.graph_url.as_str().trim_end_matches('/'))
}

async fn find_or_create(azure: &Azure, identity: &Identity, app_id: &str) -> Result<(String, Found), RemoteError> {
    let graph = azure.cloud.graph_url.as_str().trim_end_matches('/');
    let token = azure.token(identity, &scope(azure)).await?;
    // The app ID is a GUID (validated at admission), so it is safe inside the key literal.
    let get = || {
        azure
            .http()
            .get(format!("{graph}/v1.0/servicePrincipals(appId='{app_id}')"))
            .query(&[("$select", "id,appId")])
            .bearer_auth(token.secret())
    };
    match send_json::<ServicePrincipal>(Service::Graph, "sp.get", get(), describe_azure).await {
        Ok(sp) => return Ok((sp.id, Found::Existing)),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let create = azure
        .http()
        .post(format!("{graph}/v1.0/servicePrincipals"))
        .bearer_auth(token.secret())
        .json(&NewServicePrincipal { app_id });
    match send_json::<ServicePrincipal>(Service::Graph, "sp.create", create, describe_azure).await {
        Ok(sp) => Ok((sp.id, Found::Created)),
        // Someone else (another cluster, an admin) created it between our read and our create.
        Err(e) if e.status() == Some(409) => {
            let sp: ServicePrincipal = send_json(Service::Graph, "sp.get", get(), describe_azure).await?;
            Ok((sp.id, Found::Existing))
        }
        Err(e) => Err(e),
    }
}
