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
    remotes::AntimatterDomain,
};

/// Rotate calls per reconcile: keeps one object from holding a worker while a large domain re-wraps.
const ROTATE_CALLS_PER_RECONCILE: usize = 20;
/// How soon to come back while Antimatter is still re-wrapping.
const ROTATING_RECHECK: Duration = Duration::from_secs(1);

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
    let mut has_more = Ok(domain.activate(rek_id, spec.antimatter.rotate_batch).await?);
    let activated = format!("Made {rek_id} the domain's active root encryption key");
    // Antimatter re-wraps the domain's data keys under the new root key and asks to be called again
    // while it has more. A failure from here on is reported beside the activation it follows.
    for _ in 0..ROTATE_CALLS_PER_RECONCILE {
        match has_more {
            Ok(true) => has_more = domain.rotate().await,
            _ => break,
        }
    }
    let step = match has_more {
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
