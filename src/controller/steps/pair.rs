//! `Paired`: Antimatter's own check that it can wrap and unwrap with the registered key.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{PairingState, PairingStatus},
    controller::{
        conditions::{MAX_MESSAGE_BYTES, Outcome},
        errors::Failure,
        reasons::Reason,
        step::Step,
    },
    remote::truncate,
    remotes::AntimatterDomain,
};

/// How soon to register again after Antimatter lost the registration.
const REREGISTER_AFTER: Duration = Duration::from_secs(1);

/// How long after its own grant a MISCONFIGURED check is taken for propagation still under way.
/// Managed HSM local RBAC and a new service principal usually take effect within seconds to a few
/// minutes ("please observe propagation time"); Azure documents up to 10 minutes for role
/// assignment changes to apply. Longer, and the check's answer is the truth.
pub const PROPAGATION_GRACE: Duration = Duration::from_secs(600);

/// How soon to check again while access propagates.
pub const PROPAGATION_RECHECK: Duration = Duration::from_secs(3);

/// Runs the pairing check. `granted_at`: when this object last granted Antimatter access itself
/// (made its role assignment or service principal), if it did.
pub async fn check(
    domain: &dyn AntimatterDomain,
    rek_id: &str,
    granted_at: Option<Timestamp>,
) -> Result<Step<PairingStatus>, Failure> {
    let result = match domain.pairing_check(rek_id).await {
        Ok(r) => r,
        // The registration vanished (deleted in Antimatter): register again on the next pass.
        Err(e) if e.is_not_found() => {
            return Err(Failure {
                outcome: Outcome::failed(
                    Reason::RegistrationMissing,
                    format!("Antimatter no longer knows root key {rek_id}; registering again."),
                ),
                retry_after: Some(REREGISTER_AFTER),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let now = Timestamp::now();
    let (state, reason) = match result.status.as_str() {
        "HEALTHY" => (PairingState::Healthy, Reason::PairingHealthy),
        "MISCONFIGURED" => (PairingState::Misconfigured, Reason::PairingMisconfigured),
        _ => (PairingState::Unreachable, Reason::PairingUnreachable),
    };
    let checked = Some(Time(now));
    let pairing = PairingStatus {
        status: state,
        message: Some(truncate(&result.status_message, MAX_MESSAGE_BYTES)).filter(|m| !m.is_empty()),
        latency_ms: result.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0).map(|ms| ms.round() as i64),
        first_seen_time: checked.clone(),
        last_healthy_time: checked.clone().filter(|_| state == PairingState::Healthy),
        last_check_time: checked,
    };
    let answer =
        format!("Antimatter's pairing check: {} {}", result.status, result.status_message.trim_end_matches('.'));
    // The latency stays out of the message (it is in .status.pairing), so the condition stays unchanged.
    let step = match (state, granted_at.filter(|at| within_grace(*at, now))) {
        (PairingState::Healthy, _) => {
            Step::found(Outcome::ok(reason, "Antimatter wrapped and unwrapped with the key."), pairing)
        }
        (PairingState::Misconfigured, Some(granted_at)) => Step {
            retry_after: Some(PROPAGATION_RECHECK),
            ..Step::found(
                Outcome::unknown(
                    Reason::PropagationPending,
                    format!(
                        "{answer}. The operator granted access at {granted_at}; Managed HSM and Entra ID take time to propagate it, so it checks again (for up to {} minutes).",
                        PROPAGATION_GRACE.as_secs() / 60
                    ),
                ),
                pairing,
            )
        },
        _ => Step::found(Outcome::failed(reason, answer), pairing),
    };
    Ok(step)
}

/// Whether a grant at `granted_at` is recent enough to be propagating still (one in the future, by
/// a skewed clock, is).
fn within_grace(granted_at: Timestamp, now: Timestamp) -> bool {
    Duration::try_from(now.duration_since(granted_at)).map_or(true, |elapsed| elapsed < PROPAGATION_GRACE)
}
