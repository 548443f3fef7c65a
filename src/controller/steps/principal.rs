//! `ServicePrincipalReady`: Antimatter's application has a service principal in the tenant. The
//! application is the administrator's (configured) or Antimatter's own answer, never the object's:
//! a spec `applicationId` must match it, and a spec `servicePrincipalObjectId` is used only once
//! Graph confirms it is that application's principal (or the policy lets it go unverified).

use crate::controller::step::Step;
use crate::{
    api::AzureRootKeySpec,
    azure::graph::Found,
    controller::{
        conditions::Outcome,
        errors::Failure,
        inputs::Application,
        reasons::{ChangeReason, Reason},
    },
    remotes::{AntimatterDomain, Directory},
};

/// Why an object is refused when nothing trusted names Antimatter's application.
pub const NO_APPLICATION: &str = "The operator has no Antimatter application ID configured (Helm value antimatter.applicationId) and this object has no API key to ask Antimatter for it; the operator never grants access to an application named only by the object.";

/// Antimatter's application ID, read-only (no change anywhere): run beside the key step.
/// `None` when [`Application::NotNeeded`].
pub async fn application(
    source: &Application,
    domain: Option<&dyn AntimatterDomain>,
) -> Result<Option<String>, Failure> {
    match (source, domain) {
        (Application::Configured(app), _) => Ok(Some(app.clone())),
        (Application::NotNeeded, _) => Ok(None),
        (Application::FromAntimatter, Some(domain)) => match domain.known_application_id() {
            Some(app) => Ok(Some(app)),
            None => domain.application_id().await?.map(Some).ok_or_else(|| {
                Failure::from(Outcome::failed(
                    Reason::InvalidSpec,
                    "The Antimatter API did not name its Azure application; the cluster admin can set the Helm value antimatter.applicationId.",
                ))
            }),
        },
        (Application::FromAntimatter, None) => Err(Failure::from(Outcome::failed(
            Reason::PolicyDenied,
            "No API key to ask Antimatter for its application ID.",
        ))),
    }
}

/// `unverified`: the tenancy policy lets a given principal be used without asking Graph whose it is.
pub async fn ensure(
    directory: &dyn Directory,
    spec: &AzureRootKeySpec,
    app_id: Option<&str>,
    unverified: bool,
) -> Result<Step<String>, Failure> {
    if let Some(id) = spec.antimatter.service_principal_object_id.as_ref().filter(|_| unverified) {
        return Ok(Step::found(
            Outcome::ok(
                Reason::ServicePrincipalGiven,
                format!(
                    "Using service principal {id} from spec.antimatter.servicePrincipalObjectId unverified, as the tenancy policy allows for this namespace."
                ),
            ),
            id.clone(),
        ));
    }
    let Some(app_id) = app_id else {
        return Ok(Step::stopped(Outcome::failed(Reason::PolicyDenied, NO_APPLICATION)));
    };
    if let Some(asked) = &spec.antimatter.application_id
        && !asked.eq_ignore_ascii_case(app_id)
    {
        return Ok(Step::stopped(Outcome::failed(
            Reason::PolicyDenied,
            format!(
                "spec.antimatter.applicationId {asked} is not Antimatter's application ({app_id}); the operator grants access to Antimatter's application only. Remove the field or correct it."
            ),
        )));
    }
    if let Some(id) = &spec.antimatter.service_principal_object_id {
        return Ok(match directory.principal_application(id).await {
            Ok(Some(owner)) if owner.eq_ignore_ascii_case(app_id) => Step::found(
                Outcome::ok(
                    Reason::ServicePrincipalGiven,
                    format!(
                        "Service principal {id} from spec.antimatter.servicePrincipalObjectId is Antimatter's application {app_id} (confirmed by Graph)."
                    ),
                ),
                id.clone(),
            ),
            Ok(Some(owner)) => Step::stopped(Outcome::failed(
                Reason::PolicyDenied,
                format!(
                    "Service principal {id} belongs to application {owner}, not to Antimatter's ({app_id}); the operator grants access to Antimatter's principal only."
                ),
            )),
            Ok(None) => Step::stopped(Outcome::failed(
                Reason::PolicyDenied,
                format!(
                    "The tenant has no service principal {id}; remove spec.antimatter.servicePrincipalObjectId to let the operator find Antimatter's."
                ),
            )),
            Err(e) if e.status() == Some(403) => Step::stopped(Outcome::failed(
                Reason::PolicyDenied,
                format!(
                    "Graph refused to tell whose principal {id} is, so it is not used: give the identity Application.Read.All, remove spec.antimatter.servicePrincipalObjectId, or ask the cluster admin to allow unverified principals for this namespace (tenancy policy unverifiedPrincipals)."
                ),
            )),
            Err(e) => return Err(e.into()),
        });
    }
    if spec.suspend {
        return Ok(Step::stopped(Outcome::unknown(
            Reason::Suspended,
            "Suspended: not looking up or creating the service principal.",
        )));
    }
    let (id, found) = directory.service_principal(app_id).await?;
    let outcome = Outcome::ok(
        Reason::ServicePrincipalFound,
        format!("Antimatter's application {app_id} has service principal {id} in the tenant."),
    );
    let step = Step::found(outcome, id.clone());
    Ok(match found {
        Found::Created => step.changed(
            ChangeReason::ServicePrincipalCreated,
            format!("Created service principal {id} for application {app_id}"),
        ),
        Found::Existing => step,
    })
}
