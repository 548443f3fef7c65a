//! Managed HSM local RBAC (`Microsoft.Authorization` on the HSM data plane), written on reqwest with
//! `azure_identity` tokens: there is no Rust SDK crate for the Key Vault administration API. Every
//! call is paced per HSM (Managed HSM allows about 5 RBAC operations per second, reads included).

use serde::{Deserialize, Serialize};

use super::{Azure, Identity, describe_azure};
use crate::{
    cloud::HsmEndpoint,
    pacing::Class,
    remote::{RemoteError, Service, send, send_json},
};

/// The built-in role Antimatter's application needs on the key.
pub const CRYPTO_USER_ROLE: &str = "Managed HSM Crypto User";
/// Its well-known ID (learn: managed-hsm/built-in-roles), the same on every HSM.
pub const CRYPTO_USER_ROLE_ID: &str = "21dbd100-6940-42c2-9190-5d6cb909625b";
/// Its role definition ID as role assignments carry it. Built-in roles are fixed, so no lookup (one
/// RBAC call per HSM saved, and one fewer round trip before the first assignment).
pub const CRYPTO_USER_ROLE_DEFINITION: &str =
    "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/21dbd100-6940-42c2-9190-5d6cb909625b";

/// Whether a role definition ID (in whichever form the HSM returns it) is "Managed HSM Crypto User".
pub fn is_crypto_user(role_definition_id: &str) -> bool {
    role_definition_id.rsplit('/').next().is_some_and(|id| id.eq_ignore_ascii_case(CRYPTO_USER_ROLE_ID))
}

/// A role assignment as the HSM returns it.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct RoleAssignment {
    pub name: String,
    pub properties: RoleAssignmentProperties,
}

#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub role_definition_id: String,
    pub principal_id: String,
}

#[derive(Serialize)]
struct PutAssignment<'a> {
    properties: &'a RoleAssignmentProperties,
}

#[derive(Deserialize)]
struct List<T> {
    value: Vec<T>,
    #[serde(rename = "nextLink", default)]
    next_link: Option<String>,
}

/// Whether `link` is on the same scheme, host and port as `base`, an explicit default port (real
/// nextLinks carry `:443`) counting as the port it names.
fn same_origin(link: &str, base: &str) -> bool {
    match (url::Url::parse(link), url::Url::parse(base)) {
        (Ok(l), Ok(b)) => {
            l.scheme() == b.scheme()
                && l.host_str() == b.host_str()
                && l.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

/// Role assignments on an HSM's local RBAC.
#[derive(Default)]
pub struct Rbac;

fn path(hsm: &HsmEndpoint, scope: &str, rest: &str) -> String {
    let scope = scope.trim_end_matches('/');
    format!("{}{scope}/providers/Microsoft.Authorization/{rest}", hsm.url)
}

impl Rbac {
    async fn request(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, RemoteError> {
        let token = azure.token(identity, &hsm.scope).await?;
        Ok(azure
            .http()
            .request(method, url)
            .query(&[("api-version", super::keys::API_VERSION)])
            .bearer_auth(token.secret()))
    }

    /// A request for the assignment `name` at `scope`.
    async fn assignment(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        method: reqwest::Method,
        scope: &str,
        name: &str,
    ) -> Result<reqwest::RequestBuilder, RemoteError> {
        self.request(azure, hsm, identity, method, &path(hsm, scope, &format!("roleAssignments/{name}"))).await
    }

    /// One assignment by name, or `None` when it does not exist.
    pub async fn get(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        scope: &str,
        name: &str,
    ) -> Result<Option<RoleAssignment>, RemoteError> {
        let rq = self.assignment(azure, hsm, identity, reqwest::Method::GET, scope, name).await?;
        match azure.paced(Class::Rbac, hsm, send_json(Service::Hsm, "rbac.assignment.get", rq, describe_azure)).await {
            Ok(a) => Ok(Some(a)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates (or re-puts) an assignment under `name`.
    pub async fn put(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        scope: &str,
        name: &str,
        properties: &RoleAssignmentProperties,
    ) -> Result<RoleAssignment, RemoteError> {
        let rq = self.assignment(azure, hsm, identity, reqwest::Method::PUT, scope, name).await?;
        let rq = rq.json(&PutAssignment { properties });
        azure.paced(Class::Rbac, hsm, send_json(Service::Hsm, "rbac.assignment.put", rq, describe_azure)).await
    }

    /// Deletes an assignment; an absent one counts as deleted.
    pub async fn delete(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        scope: &str,
        name: &str,
    ) -> Result<(), RemoteError> {
        let rq = self.assignment(azure, hsm, identity, reqwest::Method::DELETE, scope, name).await?;
        match azure.paced(Class::Rbac, hsm, send(Service::Hsm, "rbac.assignment.delete", rq, describe_azure)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Assignments at exactly `scope` (`$filter=atScope()`), following `nextLink` within the HSM.
    pub async fn list_at_scope(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        scope: &str,
    ) -> Result<Vec<RoleAssignment>, RemoteError> {
        let mut out = Vec::new();
        let mut rq = self
            .request(azure, hsm, identity, reqwest::Method::GET, &path(hsm, scope, "roleAssignments"))
            .await?
            .query(&[("$filter", "atScope()")]);
        loop {
            let page: List<RoleAssignment> = azure
                .paced(Class::Rbac, hsm, send_json(Service::Hsm, "rbac.assignment.list", rq, describe_azure))
                .await?;
            out.extend(page.value);
            let Some(next) = page.next_link else { return Ok(out) };
            // Only links that stay on this HSM are followed, so the token goes nowhere else; a list
            // cut short would look complete, so any other link is an error.
            if !same_origin(&next, &hsm.url) {
                return Err(RemoteError::Malformed {
                    service: Service::Hsm,
                    operation: "rbac.assignment.list",
                    detail: "the role-assignment list's nextLink leaves the HSM".to_owned(),
                });
            }
            let token = azure.token(identity, &hsm.scope).await?;
            rq = azure.http().get(next).bearer_auth(token.secret());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_followed_on_the_same_hsm_only() {
        let hsm = "https://contoso.managedhsm.azure.net";
        let next = "https://contoso.managedhsm.azure.net:443/providers/Microsoft.Authorization/roleAssignments?api-version=7.6&$skiptoken=abc";
        assert!(same_origin(next, hsm), "an explicit :443 is the same HSM");
        assert!(same_origin("https://CONTOSO.managedhsm.azure.net/x", hsm));
        for elsewhere in [
            "https://contoso.managedhsm.azure.net:8443/x",
            "http://contoso.managedhsm.azure.net/x",
            "https://contoso.managedhsm.azure.net.evil.example/x",
            "https://fabrikam.managedhsm.azure.net/x",
            "/relative",
        ] {
            assert!(!same_origin(elsewhere, hsm), "{elsewhere}");
        }
    }
}
