//! Microsoft Graph: find or create the service principal of Antimatter's multi-tenant application in
//! the customer's tenant. Written on reqwest with `azure_identity` tokens (no Rust Graph SDK fits).

use std::{collections::HashMap, sync::Mutex};

use serde::{Deserialize, Serialize};

use super::{Azure, Identity, describe_azure};
use crate::remote::{RemoteError, Service, send_json};

#[derive(Deserialize)]
struct ServicePrincipal {
    id: String,
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

/// Service principal object IDs cached per (tenant, app).
#[derive(Default)]
pub struct Graph {
    cache: Mutex<HashMap<(String, String), String>>,
}

impl Graph {
    /// The object ID of `app_id`'s service principal in the identity's tenant, creating it if absent.
    pub async fn ensure_service_principal(
        &self,
        azure: &Azure,
        identity: &Identity,
        app_id: &str,
    ) -> Result<(String, Found), RemoteError> {
        let key = (identity.tenant_id.clone(), app_id.to_owned());
        if let Some(id) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok((id.clone(), Found::Existing));
        }
        let graph = azure.cloud.graph_url.as_str().trim_end_matches('/');
        let token = azure.token(identity, &format!("{graph}/.default")).await?;
        // The app ID is a GUID (validated at admission), so it is safe inside the key literal.
        let get = azure
            .http()
            .get(format!("{graph}/v1.0/servicePrincipals(appId='{app_id}')"))
            .query(&[("$select", "id,appId")])
            .bearer_auth(token.secret());
        let (id, found) = match send_json::<ServicePrincipal>(Service::Graph, "sp.get", get, describe_azure).await {
            Ok(sp) => (sp.id, Found::Existing),
            Err(e) if e.is_not_found() => {
                let create = azure
                    .http()
                    .post(format!("{graph}/v1.0/servicePrincipals"))
                    .bearer_auth(token.secret())
                    .json(&NewServicePrincipal { app_id });
                let sp: ServicePrincipal = send_json(Service::Graph, "sp.create", create, describe_azure).await?;
                (sp.id, Found::Created)
            }
            Err(e) => return Err(e),
        };
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, id.clone());
        Ok((id, found))
    }
}
