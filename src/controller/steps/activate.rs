//! `Active`: the key is the domain's active root encryption key, and Antimatter has re-wrapped the
//! domain's data keys under it.

use std::time::Duration;

use super::register::same_rek;
use crate::controller::step::Step;
use crate::{
    api::AzureRootKeySpec,
    controller::{
        conditions::Outcome,
        errors::Failure,
        reasons::{ChangeReason, Reason},
    },
    remote::RemoteError,
    remotes::AntimatterDomain,
};

/// Rotate calls per reconcile: keeps one object from holding a worker while a large domain re-wraps.
const ROTATE_CALLS_PER_RECONCILE: usize = 20;
/// How soon to come back while Antimatter is still re-wrapping.
pub(super) const ROTATING_RECHECK: Duration = Duration::from_secs(1);

/// Antimatter re-wraps the domain's data keys under the active root key and asks to be called
/// again while it has more: calls `rotate` while `has_more`, at most [`ROTATE_CALLS_PER_RECONCILE`]
/// times. `true` while it still has more.
pub(super) async fn rotate_while_more(domain: &dyn AntimatterDomain, mut has_more: bool) -> Result<bool, RemoteError> {
    for _ in 0..ROTATE_CALLS_PER_RECONCILE {
        if !has_more {
            break;
        }
        has_more = domain.rotate().await?;
    }
    Ok(has_more)
}

pub async fn ensure(domain: &dyn AntimatterDomain, spec: &AzureRootKeySpec, rek_id: &str) -> Result<Step<()>, Failure> {
    let active = || Outcome::ok(Reason::KeyActive, format!("{rek_id} is the domain's active root encryption key."));
    if domain.active_key().await?.is_some_and(|a| same_rek(&a.rek_id, rek_id)) {
        return Ok(Step::found(active(), ()));
    }
    if spec.suspend {
        return Ok(Step::stopped(Outcome::failed(
            Reason::Suspended,
            "The key is not active; suspended, so not activating it.",
        )));
    }
    let has_more = domain.activate(rek_id, spec.antimatter.rotate_batch).await?;
    let activated = format!("Made {rek_id} the domain's active root encryption key");
    // A failure from here on is reported beside the activation it follows.
    let step = match rotate_while_more(domain, has_more).await {
        Ok(false) => Step::found(active(), ()),
        Ok(true) => Step {
            retry_after: Some(ROTATING_RECHECK),
            ..Step::stopped(Outcome::unknown(
                Reason::Rotating,
                format!("{rek_id} is active; Antimatter is still re-wrapping data keys."),
            ))
        },
        Err(e) => Step::settle(Err(e.into())),
    };
    Ok(step.changed(ChangeReason::Activated, activated))
}
