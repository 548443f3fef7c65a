//! `ServicePrincipalReady`: Antimatter's application has a service principal in the tenant.

use crate::controller::step::Step;
use crate::{
    api::AzureRootKeySpec,
    azure::graph::Found,
    controller::{
        conditions::Outcome,
        errors::Failure,
        reasons::{ChangeReason, Reason},
    },
    remotes::{AntimatterDomain, Directory},
};

pub async fn ensure(
    directory: &dyn Directory,
    domain: Option<&dyn AntimatterDomain>,
    spec: &AzureRootKeySpec,
) -> Result<Step<String>, Failure> {
    if let Some(id) = &spec.antimatter.service_principal_object_id {
        return Ok(Step::found(
            Outcome::ok(
                Reason::ServicePrincipalGiven,
                format!("Using service principal {id} from spec.antimatter.servicePrincipalObjectId."),
            ),
            id.clone(),
        ));
    }
    let app_id = match (&spec.antimatter.application_id, domain) {
        (Some(app), _) => app.clone(),
        (None, Some(domain)) => match domain.known_application_id() {
            Some(app) => app,
            // The first time for this domain: the directory token is fetched while Antimatter answers.
            None => tokio::join!(application_from_providers(domain), directory.warm_up()).0?,
        },
        (None, None) => {
            return Ok(Step::stopped(Outcome::failed(
                Reason::InvalidSpec,
                "Set spec.antimatter.applicationId (Antimatter's Azure application ID), spec.antimatter.servicePrincipalObjectId, or an API key so the operator can ask Antimatter.",
            )));
        }
    };
    if spec.suspend {
        return Ok(Step::stopped(Outcome::unknown(
            Reason::Suspended,
            "Suspended: not looking up or creating the service principal.",
        )));
    }
    let (id, found) = directory.service_principal(&app_id).await?;
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

async fn application_from_providers(domain: &dyn AntimatterDomain) -> Result<String, Failure> {
    domain.application_id().await?.ok_or_else(|| {
        Failure::from(Outcome::failed(
            Reason::InvalidSpec,
            "The Antimatter API did not name its Azure application; set spec.antimatter.applicationId.",
        ))
    })
}
