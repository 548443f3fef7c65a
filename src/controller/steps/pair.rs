//! `Paired`: Antimatter's own check that it can wrap and unwrap with the registered key.

use std::time::Duration;

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

pub async fn check(domain: &dyn AntimatterDomain, rek_id: &str) -> Result<Step<PairingStatus>, Failure> {
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
    let (state, reason) = match result.status.as_str() {
        "HEALTHY" => (PairingState::Healthy, Reason::PairingHealthy),
        "MISCONFIGURED" => (PairingState::Misconfigured, Reason::PairingMisconfigured),
        _ => (PairingState::Unreachable, Reason::PairingUnreachable),
    };
    let checked = Some(Time(jiff::Timestamp::now()));
    let pairing = PairingStatus {
        status: state,
        message: Some(truncate(&result.status_message, MAX_MESSAGE_BYTES)).filter(|m| !m.is_empty()),
        latency_ms: result.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0).map(|ms| ms.round() as i64),
        first_seen_time: checked.clone(),
        last_healthy_time: checked.clone().filter(|_| state == PairingState::Healthy),
        last_check_time: checked,
    };
    // The latency stays out of the message (it is in .status.pairing), so the condition stays unchanged.
    let outcome = match state {
        PairingState::Healthy => Outcome::ok(reason, "Antimatter wrapped and unwrapped with the key."),
        _ => {
            Outcome::failed(reason, format!("Antimatter's pairing check: {} {}", result.status, result.status_message))
        }
    };
    Ok(Step::found(outcome, pairing))
}
