//! Turning failures into condition reasons and messages for the person reading `kubectl describe`.

use std::time::Duration;

use super::conditions::Outcome;
use crate::remote::{RemoteError, Service};

/// Errors that end a reconcile early (the Kubernetes side); remote failures become conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("object has no namespace")]
    NoNamespace,
    /// Revoking was refused or failed; the finalizer stays until it succeeds or the policy is Retain.
    #[error("revoke blocked: {0}")]
    RevokeBlocked(String),
}

/// What the reconciler needs from a failure: a condition, and how soon to try again.
pub struct Failure {
    pub outcome: Outcome,
    pub retry_after: Option<Duration>,
}

/// Where a failure happened, to name the missing permission.
#[derive(Clone, Copy)]
pub enum Area {
    Keys,
    Rbac,
    Graph,
    Antimatter,
}

fn permission_hint(area: Area) -> &'static str {
    match area {
        Area::Keys => {
            "the Azure identity needs \"Managed HSM Crypto User\" (or a custom role with keys read, create and write) at scope /keys on the HSM"
        }
        Area::Rbac => {
            "the Azure identity needs \"Managed HSM Policy Administrator\" (role assignments read and write) on the HSM"
        }
        Area::Graph => {
            "the Azure identity needs the Microsoft Graph application permission Application.ReadWrite.OwnedBy or Application.ReadWrite.All; or set spec.antimatter.servicePrincipalObjectId to skip Graph"
        }
        Area::Antimatter => "the domain API key is not allowed to manage root encryption keys",
    }
}

/// Classifies a remote failure into one of the documented reasons.
pub fn classify(area: Area, e: &RemoteError) -> Failure {
    let unreachable = if e.service() == Service::Antimatter { "AntimatterUnreachable" } else { "AzureUnreachable" };
    let outcome = match e {
        RemoteError::Credentials { detail } => Outcome::failed(
            "InvalidCredentials",
            format!(
                "Entra ID refused the credentials: {detail}. Check the client ID and secret (spec.azureCredentialsSecretRef or the operator's identity)."
            ),
        ),
        RemoteError::Status { status: 401, service: Service::Antimatter, message, .. } => Outcome::failed(
            "InvalidCredentials",
            format!(
                "Antimatter refused the domain API key: {message}. Check the Secret named by spec.antimatter.apiKeySecretRef."
            ),
        ),
        RemoteError::Status { status: 401, .. } => {
            Outcome::failed("InvalidCredentials", format!("{e}. The token was not accepted; check the Azure identity."))
        }
        RemoteError::Status { status: 403, .. } => {
            Outcome::failed("Forbidden", format!("{e}. Fix: {}.", permission_hint(area)))
        }
        RemoteError::Status { status: 429, .. } => Outcome::failed(
            "Throttled",
            format!("{e}. Retrying after {}s.", e.retry_after().unwrap_or_default().as_secs()),
        ),
        RemoteError::Status { status, .. } if *status >= 500 || *status == 408 => {
            Outcome::failed(unreachable, format!("{e}. Retrying with backoff."))
        }
        RemoteError::Status { .. } => Outcome::failed(
            if e.service() == Service::Antimatter { "AntimatterRequestRejected" } else { "AzureRequestRejected" },
            e.to_string(),
        ),
        RemoteError::Unreachable { .. } | RemoteError::Malformed { .. } => {
            Outcome::failed(unreachable, format!("{e}. Retrying with backoff."))
        }
    };
    Failure { outcome, retry_after: e.retry_after() }
}
