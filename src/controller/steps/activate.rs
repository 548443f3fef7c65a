//! `Active`: the key is the domain's active root encryption key, and Antimatter has re-wrapped the
//! domain's data keys under it. The operator activates when the object first gets here and when
//! the key gets a new version; a later change of the active key by someone else is reported, not
//! fought (unless `reclaimActive`).

use std::time::Duration;

use super::register::same_rek;
use crate::controller::step::Step;
use crate::{
    api::{AzureRootKeySpec, RotationState, RotationStatus},
    controller::{
        conditions::{Outcome, now},
        errors::Failure,
        reasons::{ChangeReason, Reason},
    },
    remote::RemoteError,
    remotes::AntimatterDomain,
};

/// Rotate calls per reconcile: keeps one object from holding a worker while a large domain re-wraps.
const ROTATE_CALLS_PER_RECONCILE: u32 = 20;
/// How soon to come back while Antimatter is still re-wrapping.
pub(super) const ROTATING_RECHECK: Duration = Duration::from_secs(1);

/// Antimatter re-wraps the domain's data keys under the active root key and asks to be called
/// again while it has more: calls `rotate` while `has_more`, at most [`ROTATE_CALLS_PER_RECONCILE`]
/// times. Whether it still has more, and how many calls were made.
pub(super) async fn rotate_while_more(
    domain: &dyn AntimatterDomain,
    mut has_more: bool,
) -> Result<(bool, u32), RemoteError> {
    let mut calls = 0;
    while has_more && calls < ROTATE_CALLS_PER_RECONCILE {
        has_more = domain.rotate().await?;
        calls += 1;
    }
    Ok((has_more, calls))
}

/// What activation needs besides the domain and the spec.
pub struct Activation<'a> {
    /// The registration of the key version in use.
    pub rek_id: &'a str,
    /// The last activation this object made or found (`status.rotation`).
    pub known: Option<&'a RotationStatus>,
    /// The object (`namespace/name`) that asks to activate in this domain before this one, if any.
    pub rival: Option<String>,
}

pub async fn ensure(
    domain: &dyn AntimatterDomain,
    spec: &AzureRootKeySpec,
    activation: Activation<'_>,
) -> Result<Step<RotationStatus>, Failure> {
    let Activation { rek_id, known, rival } = activation;
    if let Some(rival) = rival {
        return Ok(Step::stopped(Outcome::failed(
            Reason::ActivationConflict,
            format!(
                "AzureRootKey {rival} asks to activate a key in domain {} and is older; only one object per domain may set antimatter.activate: true. Nothing was changed.",
                spec.domain_id
            ),
        )));
    }
    let active = domain.active_key().await?;
    let record_of = |rek: &str| known.filter(|r| same_rek(&r.root_encryption_key_id, rek)).cloned();
    if let Some(active) = active.as_ref().filter(|a| same_rek(&a.rek_id, rek_id)) {
        let record = record_of(&active.rek_id).unwrap_or_else(|| RotationStatus {
            root_encryption_key_id: rek_id.to_owned(),
            state: RotationState::InProgress,
            batches: 0,
            started_at: now(),
            completed_at: None,
        });
        if record.state == RotationState::Complete || spec.suspend {
            return Ok(Step::found(rotation_outcome(&record, spec.suspend), record));
        }
        let continued = known.is_some_and(|r| r.state == RotationState::InProgress);
        return Ok(rotate(domain, record, true, continued).await);
    }
    // Someone else changed the active key after this object held it: report, don't take it back.
    if let (Some(held), Some(active)) = (known, &active)
        && !same_rek(&held.root_encryption_key_id, &active.rek_id)
        && !spec.antimatter.reclaim_active
    {
        return Ok(Step::found(
            Outcome::failed(
                Reason::ActiveKeyChanged,
                format!(
                    "The domain's active key is {} ({}), not {rek_id}, after this object made {} active; left as it is. Set antimatter.reclaimActive: true to take it back.",
                    active.rek_id,
                    if active.resource_path.is_empty() { "no key URL" } else { &active.resource_path },
                    held.root_encryption_key_id
                ),
            ),
            held.clone(),
        ));
    }
    if spec.suspend {
        return Ok(Step::stopped(Outcome::failed(
            Reason::Suspended,
            "The key is not active; suspended, so not activating it.",
        )));
    }
    let has_more = domain.activate(rek_id, spec.antimatter.rotate_batch).await?;
    let record = RotationStatus {
        root_encryption_key_id: rek_id.to_owned(),
        state: RotationState::InProgress,
        batches: u32::from(spec.antimatter.rotate_batch),
        started_at: now(),
        completed_at: None,
    };
    let note = match known {
        Some(before) => {
            format!("Made {rek_id} the domain's active root encryption key (was {})", before.root_encryption_key_id)
        }
        None => format!("Made {rek_id} the domain's active root encryption key"),
    };
    Ok(rotate(domain, record, has_more, false).await.changed(ChangeReason::Activated, note))
}

/// Re-wraps for at most one reconcile's worth of batches and records the progress. `continued`: the
/// rotation was already in progress before this reconcile, so its end is a change worth telling.
async fn rotate(
    domain: &dyn AntimatterDomain,
    mut record: RotationStatus,
    has_more: bool,
    continued: bool,
) -> Step<RotationStatus> {
    let (more, calls) = match rotate_while_more(domain, has_more).await {
        Ok(done) => done,
        // A failure from here on is reported beside the activation it may follow; the progress so
        // far is kept.
        Err(e) => {
            let failure = Failure::from(e);
            return Step { value: Some(record), ..Step::settle(Err(failure)) };
        }
    };
    record.batches = record.batches.saturating_add(calls);
    if more {
        let step =
            Step { retry_after: Some(ROTATING_RECHECK), ..Step::found(rotation_outcome(&record, false), record) };
        return step;
    }
    record.state = RotationState::Complete;
    record.completed_at = Some(now());
    let note = format!(
        "Antimatter re-wrapped the domain's data keys under {} ({} batches)",
        record.root_encryption_key_id, record.batches
    );
    let step = Step::found(rotation_outcome(&record, false), record);
    if continued { step.changed(ChangeReason::RotationCompleted, note) } else { step }
}

fn rotation_outcome(record: &RotationStatus, suspended: bool) -> Outcome {
    let rek_id = &record.root_encryption_key_id;
    match record.state {
        RotationState::Complete => {
            Outcome::ok(Reason::KeyActive, format!("{rek_id} is the domain's active root encryption key."))
        }
        RotationState::InProgress if suspended => Outcome::unknown(
            Reason::Suspended,
            format!(
                "{rek_id} is active; Antimatter may still be re-wrapping data keys; suspended, so not asking it to."
            ),
        ),
        RotationState::InProgress => Outcome::unknown(
            Reason::RotationInProgress,
            format!(
                "{rek_id} is active; Antimatter is still re-wrapping the domain's data keys ({} batches so far).",
                record.batches
            ),
        ),
    }
}
