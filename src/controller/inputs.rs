//! What a reconcile needs, resolved from the spec and Secrets before any remote call, and the
//! refusals that must come before one: HSMs outside the cloud, objects outside the tenancy
//! policy, missing Secrets.

use kube::ResourceExt;
use url::Url;

use super::{Context, conditions::Outcome, reasons::Reason};
use crate::{
    antimatter::{ApiKey, DomainTarget},
    api::AzureRootKey,
    azure::{ClientSecret, Identity},
    cloud::HsmEndpoint,
};

pub struct Inputs {
    pub hsm: HsmEndpoint,
    pub identity: Identity,
    /// The Antimatter domain, when the object names an API key.
    pub domain: Option<DomainTarget>,
}

pub async fn resolve(ctx: &Context, ark: &AzureRootKey) -> Result<Inputs, Outcome> {
    let spec = &ark.spec;
    let ns = ark.namespace().unwrap_or_default();
    let hsm = ctx
        .services
        .azure
        .cloud
        .hsm_endpoint(&spec.hsm)
        .map_err(|e| Outcome::failed(Reason::InvalidSpec, e.to_string()))?;
    let secret = match &spec.azure_credentials_secret_ref {
        Some(r) => Some(ClientSecret {
            client_id: ctx.secrets.value(&ns, &r.name, "clientId").await?,
            secret: ctx.secrets.value(&ns, &r.name, "clientSecret").await?,
            tenant_id: ctx.secrets.value(&ns, &r.name, "tenantId").await.ok(),
        }),
        None if !ctx.policy.allows(&ns, spec.hsm.name.as_deref(), &hsm.url) => {
            return Err(Outcome::failed(
                Reason::PolicyDenied,
                format!(
                    "The tenancy policy does not let namespace {ns} use the operator's Azure identity for {}; set spec.azureCredentialsSecretRef or ask the cluster admin.",
                    hsm.url
                ),
            ));
        }
        None => None,
    };
    let domain = match &spec.antimatter.api_key_secret_ref {
        Some(r) => Some(DomainTarget {
            api_url: Url::parse(&spec.antimatter.api_url)
                .ok()
                .filter(|u| u.scheme() == "https")
                .ok_or_else(|| Outcome::failed(Reason::InvalidSpec, "spec.antimatter.apiUrl must be an https URL."))?,
            domain_id: spec.domain_id.clone(),
            api_key: ApiKey::new(ctx.secrets.value(&ns, &r.name, &r.key).await?),
        }),
        None => None,
    };
    Ok(Inputs { hsm, identity: Identity { tenant_id: spec.tenant_id.clone(), secret }, domain })
}
