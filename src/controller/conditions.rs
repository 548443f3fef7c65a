//! Conditions: one per step plus the summary `Ready`, in the standard shape, following the
//! kstatus conventions so `kubectl wait`, Flux and Argo CD read them.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{reasons::Reason, table::Kind};
use crate::{
    api::{Condition, ConditionStatus},
    remote::truncate,
};

pub const READY: &str = "Ready";
/// kstatus' "abnormal-true" conditions: `Reconciling` while the object is progressing, `Stalled` when
/// it stopped on a reason that only a change (to the object, a Secret or permissions) fixes, so
/// Flux and `helm --wait` fail at once instead of timing out.
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// The longest condition message written to status: remote services' messages end up in them, and
/// a hostile endpoint must not fill the object (etcd's object limit, every watcher's cache).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// A step's outcome before it becomes a [`Condition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

impl Outcome {
    pub fn ok(reason: Reason, message: impl Into<String>) -> Self {
        Self { status: ConditionStatus::True, reason, message: message.into() }
    }

    pub fn failed(reason: Reason, message: impl Into<String>) -> Self {
        Self { status: ConditionStatus::False, reason, message: message.into() }
    }

    pub fn unknown(reason: Reason, message: impl Into<String>) -> Self {
        Self { status: ConditionStatus::Unknown, reason, message: message.into() }
    }

    /// A step that has not run because `on`, which it needs, has not succeeded.
    pub fn waiting(on: Kind) -> Self {
        Self::unknown(Reason::waiting(on), format!("waiting for {}", on.as_str()))
    }

    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }

    /// The same outcome, its message saying what it was about.
    pub fn prefixed(self, what: &str) -> Self {
        Self { message: format!("{what}{}", self.message), ..self }
    }
}

/// The current time at the API server's precision (seconds), so statuses compare equal.
pub fn now() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default())
}

/// Builds the condition list, keeping `lastTransitionTime` from `previous` when a condition's status
/// did not change (so an unchanged object produces an identical status and no write).
pub fn to_conditions(
    outcomes: &[(&'static str, &Outcome)],
    previous: &[Condition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    outcomes
        .iter()
        .map(|(kind, o)| {
            let old = previous.iter().find(|c| c.type_ == *kind);
            let last_transition_time = match old {
                Some(old) if old.status == o.status => old.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: Cow::Borrowed(kind),
                status: o.status,
                reason: Cow::Borrowed(o.reason.as_str()),
                message: truncate(&o.message, MAX_MESSAGE_BYTES),
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

/// The summary: `True` when every required step is `True`; otherwise the first required step that
/// is not, with its reason (`False`) or `Progressing` (`Unknown`).
pub fn ready<'a>(required: impl IntoIterator<Item = (Kind, &'a Outcome)>) -> Outcome {
    match required.into_iter().find(|(_, o)| !o.is_true()) {
        None => Outcome::ok(Reason::Ready, "The key is delegated to Antimatter and every check passed."),
        Some((step, o)) if o.status == ConditionStatus::False => {
            Outcome::failed(o.reason, format!("{}: {}", step.as_str(), o.message))
        }
        Some((step, o)) => Outcome::unknown(Reason::Progressing, format!("{}: {}", step.as_str(), o.message)),
    }
}

/// `Reconciling` and `Stalled` from `Ready`: at most one of them `True`, both `False` when Ready.
pub fn kstatus(ready: &Outcome) -> [(&'static str, Outcome); 2] {
    let stalled = ready.status == ConditionStatus::False && ready.reason.is_terminal();
    let reconciling = ready.status != ConditionStatus::True && !stalled;
    let with =
        |on: bool| Outcome { status: if on { ConditionStatus::True } else { ConditionStatus::False }, ..ready.clone() };
    [(RECONCILING, with(reconciling)), (STALLED, with(stalled))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_only_on_terminal_reasons() {
        let status = |o: &Outcome| kstatus(o).map(|(_, c)| c.status);
        use ConditionStatus::{False, True};
        assert_eq!(status(&Outcome::ok(Reason::Ready, "ok")), [False, False]);
        assert_eq!(status(&Outcome::failed(Reason::KeyNotFound, "no key")), [False, True]);
        assert_eq!(status(&Outcome::failed(Reason::Throttled, "429")), [True, False]);
        assert_eq!(status(&Outcome::unknown(Reason::Progressing, "waiting")), [True, False]);
    }

    #[test]
    fn ready_needs_every_required_step() {
        let ok = Outcome::ok(Reason::KeyUsable, "a");
        let bad = Outcome::failed(Reason::KeyDisabled, "disabled");
        let wait = Outcome::waiting(Kind::KeyReady);
        assert!(ready([(Kind::KeyReady, &ok), (Kind::TagApplied, &ok)]).is_true());
        let r = ready([(Kind::KeyReady, &bad), (Kind::TagApplied, &wait)]);
        assert_eq!((r.status, r.reason), (ConditionStatus::False, Reason::KeyDisabled));
        let r = ready([(Kind::KeyReady, &ok), (Kind::TagApplied, &wait)]);
        assert_eq!((r.status, r.reason), (ConditionStatus::Unknown, Reason::Progressing));
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let t0 = Time(jiff::Timestamp::from_second(1_000).expect("ts"));
        let t1 = Time(jiff::Timestamp::from_second(2_000).expect("ts"));
        let ok = Outcome::ok(Reason::KeyUsable, "a");
        let first = to_conditions(&[("KeyReady", &ok)], &[], Some(1), &t0);
        let again = to_conditions(&[("KeyReady", &ok)], &first, Some(1), &t1);
        assert_eq!(first, again);
        let bad = Outcome::failed(Reason::KeyDisabled, "b");
        let changed = to_conditions(&[("KeyReady", &bad)], &first, Some(1), &t1);
        assert_eq!(changed[0].last_transition_time, t1);
    }

    #[test]
    fn a_remote_message_is_cut_to_the_status_bound() {
        let t = Time(jiff::Timestamp::from_second(1_000).expect("ts"));
        let flood = Outcome::failed(Reason::AntimatterRequestRejected, "x".repeat(1 << 20));
        let written = to_conditions(&[("Registered", &flood)], &[], Some(1), &t);
        assert!(written[0].message.len() <= MAX_MESSAGE_BYTES, "{} bytes", written[0].message.len());
        assert!(written[0].message.ends_with('…'));
    }
}
