//! What a reconcile needs, resolved from the spec, the administrator's [`Authority`] and Secrets
//! before any remote call, and the refusals that must come before one: HSMs outside the cloud,
//! Antimatter endpoints outside the allowlist, objects outside the tenancy policy, no trusted source
//! for Antimatter's application, missing Secrets. Secrets are read last, so a refused object never
//! makes the operator read one.
//!
//! [`Authority`]: crate::authority::Authority

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, ResourceExt};

use super::{Context, conditions::Outcome, reasons::Reason};
use crate::{
    antimatter::{ApiKey, DomainTarget},
    api::AzureRootKey,
    azure::{ClientSecret, Identity},
    cloud::HsmEndpoint,
    policy::{Grant, Request},
};

pub struct Inputs {
    pub hsm: HsmEndpoint,
    pub identity: Identity,
    /// The Antimatter domain, when the object names an API key.
    pub domain: Option<DomainTarget>,
    /// What the tenancy policy lets the object do beyond the steps themselves.
    pub grant: Grant,
    /// Where Antimatter's application ID comes from.
    pub application: Application,
}

/// The source of Antimatter's Azure application ID: never the object's author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Application {
    /// The operator's configuration (`--antimatter-application-id`).
    Configured(String),
    /// The allowlisted Antimatter API (the `azure_am` provider), through the object's API key.
    FromAntimatter,
    /// Not needed: the policy lets the given service principal be used unverified.
    NotNeeded,
}

pub async fn resolve(ctx: &Context, ark: &AzureRootKey) -> Result<Inputs, Outcome> {
    let spec = &ark.spec;
    let ns = ark.namespace().unwrap_or_default();
    let authority = &ctx.authority;
    let hsm = ctx
        .services
        .azure
        .cloud
        .hsm_endpoint(&spec.hsm)
        .map_err(|e| Outcome::failed(Reason::InvalidSpec, e.to_string()))?;
    let api_url = match &spec.antimatter.api_key_secret_ref {
        Some(_) => Some(authority.antimatter_url(&spec.antimatter.api_url).ok_or_else(|| {
            Outcome::failed(
                Reason::PolicyDenied,
                format!(
                    "spec.antimatter.apiUrl {} is not an Antimatter API this operator sends API keys to ({}); the cluster admin allows endpoints with the Helm value antimatter.apiUrls.",
                    spec.antimatter.api_url,
                    authority.antimatter_urls()
                ),
            )
        })?),
        None => None,
    };
    let labels = match authority.policy.selects_by_label() {
        true => Some(namespace_labels(ctx, &ns).await?),
        false => None,
    };
    let grant = match &spec.azure_credentials_secret_ref {
        Some(_) => authority.policy.own_identity_grant(&ns, labels.as_ref()),
        None => authority
            .policy
            .decide(&Request {
                namespace: &ns,
                labels: labels.as_ref(),
                hsm_name: spec.hsm.name.as_deref(),
                hsm_url: &hsm.url,
                key: &spec.key.name,
                tenant: &spec.tenant_id,
                domain: &spec.domain_id,
                manual: api_url.is_none(),
            })
            .map_err(|why| {
                Outcome::failed(
                    Reason::PolicyDenied,
                    format!("{why}; set spec.azureCredentialsSecretRef or ask the cluster admin."),
                )
            })?,
    };
    let application = match (&authority.application_id, &api_url) {
        (Some(app), _) => Application::Configured(app.clone()),
        (None, Some(_)) => Application::FromAntimatter,
        (None, None) if grant.unverified_principals && spec.antimatter.service_principal_object_id.is_some() => {
            Application::NotNeeded
        }
        (None, None) => {
            return Err(Outcome::failed(Reason::PolicyDenied, super::steps::NO_APPLICATION));
        }
    };
    let secret = match &spec.azure_credentials_secret_ref {
        Some(r) => Some(ClientSecret {
            client_id: ctx.secrets.value(&ns, &r.name, "clientId").await?,
            secret: ctx.secrets.value(&ns, &r.name, "clientSecret").await?,
            tenant_id: ctx.secrets.value(&ns, &r.name, "tenantId").await.ok(),
        }),
        None => None,
    };
    let domain = match (&spec.antimatter.api_key_secret_ref, api_url) {
        (Some(r), Some(api_url)) => Some(DomainTarget {
            api_url,
            domain_id: spec.domain_id.clone(),
            api_key: ApiKey::new(ctx.secrets.value(&ns, &r.name, &r.key).await?),
        }),
        _ => None,
    };
    Ok(Inputs { hsm, identity: Identity { tenant_id: spec.tenant_id.clone(), secret }, domain, grant, application })
}

async fn namespace_labels(ctx: &Context, ns: &str) -> Result<BTreeMap<String, String>, Outcome> {
    let namespace = Api::<Namespace>::all(ctx.client.clone()).get(ns).await.map_err(|e| {
        Outcome::failed(
            Reason::PolicyDenied,
            format!(
                "Could not read namespace {ns}'s labels, which the tenancy policy selects by: {}",
                super::secrets::kube_reason(&e)
            ),
        )
    })?;
    Ok(namespace.labels().clone())
}
