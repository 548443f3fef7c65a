//! Turning failures into condition reasons and messages for the person reading `kubectl describe`.

use std::time::Duration;

use super::{conditions::Outcome, reasons::Reason};
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
    RevokeBlocked(Reason),
}

/// What a step makes of a failure: its condition, and how soon to try again. Remote errors become
/// one with `?`.
#[derive(Debug)]
pub struct Failure {
    pub outcome: Outcome,
    pub retry_after: Option<Duration>,
}

impl From<Outcome> for Failure {
    fn from(outcome: Outcome) -> Self {
        Self { outcome, retry_after: None }
    }
}

impl From<RemoteError> for Failure {
    fn from(e: RemoteError) -> Self {
        classify(&e)
    }
}

/// The permission a refused call needs, named after the API it called.
fn permission_hint(e: &RemoteError) -> &'static str {
    match e {
        RemoteError::Status { service: Service::Hsm, operation, .. } if operation.starts_with("rbac.") => {
            "the Azure identity needs \"Managed HSM Policy Administrator\" (role assignments read and write) on the HSM"
        }
        RemoteError::Status { service: Service::Graph, .. } => {
            "the Azure identity needs the Microsoft Graph application permission Application.ReadWrite.OwnedBy or Application.ReadWrite.All; or set spec.antimatter.servicePrincipalObjectId to skip Graph"
        }
        RemoteError::Status { service: Service::Antimatter, .. } => {
            "the domain API key is not allowed to manage root encryption keys"
        }
        _ => {
            "the Azure identity needs \"Managed HSM Crypto User\" (or a custom role with keys read, create and write) at scope /keys on the HSM"
        }
    }
}

/// Classifies a remote failure into one of the documented reasons.
fn classify(e: &RemoteError) -> Failure {
    let unreachable =
        if e.service() == Service::Antimatter { Reason::AntimatterUnreachable } else { Reason::AzureUnreachable };
    let outcome = match e {
        RemoteError::Credentials { detail } => Outcome::failed(
            Reason::InvalidCredentials,
            format!(
                "Entra ID refused the credentials: {detail}. Check the client ID and secret (spec.azureCredentialsSecretRef or the operator's identity)."
            ),
        ),
        RemoteError::Status { status: 401, service: Service::Antimatter, message, .. } => Outcome::failed(
            Reason::InvalidCredentials,
            format!(
                "Antimatter refused the domain API key: {message}. Check the Secret named by spec.antimatter.apiKeySecretRef."
            ),
        ),
        RemoteError::Status { status: 401, .. } => Outcome::failed(
            Reason::InvalidCredentials,
            format!("{e}. The token was not accepted; check the Azure identity."),
        ),
        RemoteError::Status { status: 403, .. } => {
            Outcome::failed(Reason::Forbidden, format!("{e}. Fix: {}.", permission_hint(e)))
        }
        RemoteError::Status { status: 429, .. } => Outcome::failed(
            Reason::Throttled,
            format!("{e}. Retrying after {}s.", e.retry_after().unwrap_or_default().as_secs()),
        ),
        RemoteError::UntrustedCell { .. } => Outcome::failed(
            Reason::UntrustedCell,
            format!("{e}. Antimatter's cells must be within the allowlisted API's domain (--antimatter-api-urls)."),
        ),
        RemoteError::Status { status: 308, service: Service::Antimatter, .. } => Outcome::failed(
            Reason::AntimatterUnreachable,
            format!("{e}. The domain moved to another cell twice in a row; logging in again to learn it."),
        ),
        RemoteError::Status { status, .. } if *status >= 500 || *status == 408 => {
            Outcome::failed(unreachable, format!("{e}. Retrying with backoff."))
        }
        RemoteError::Status { .. } => Outcome::failed(
            if e.service() == Service::Antimatter {
                Reason::AntimatterRequestRejected
            } else {
                Reason::AzureRequestRejected
            },
            e.to_string(),
        ),
        RemoteError::Unreachable { .. } | RemoteError::Malformed { .. } => {
            Outcome::failed(unreachable, format!("{e}. Retrying with backoff."))
        }
    };
    Failure { outcome, retry_after: e.retry_after() }
}
