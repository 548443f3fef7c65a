//! The reconcile steps and the order they run in. Each step is a module with one `ensure` (and,
//! where it makes something `Revoke` undoes, the undo beside it); each takes what it needs and
//! returns a [`Step`]: its condition, the value later steps need, the changes it made. Which step
//! needs which is one table, [`Kind::needs`] (in `table`), that the gating here reads.

mod activate;
mod key;
mod pair;
mod principal;
mod register;
mod role;
mod tag;

use std::{collections::BTreeMap, time::Duration};

pub use self::principal::NO_APPLICATION;
pub use super::table::Kind;
use super::{
    conditions::Outcome,
    errors::Failure,
    inputs::Inputs,
    reasons::Reason,
    step::{Change, Step},
    table::Route,
};
use kube::ResourceExt;

use super::ownership::Owner;
use crate::{
    api::{AzureRootKey, AzureRootKeyStatus, PairingStatus},
    azure::keys::KeyInfo,
    remotes::Remotes,
};

/// The conditions, changes and `Retry-After` of one run, apart from the data the steps hand on.
#[derive(Debug, Default)]
pub struct Report {
    outcomes: BTreeMap<Kind, Outcome>,
    pub changes: Vec<Change>,
    pub retry_after: Option<Duration>,
}

impl Report {
    /// Records a step and hands on its value.
    fn take<T>(&mut self, kind: Kind, step: Step<T>) -> Option<T> {
        self.outcomes.insert(kind, step.outcome);
        self.changes.extend(step.changes);
        self.retry_after = self.retry_after.max(step.retry_after);
        step.value
    }

    /// The report of an object refused before any remote call: the first step carries why, and
    /// every other waits for it.
    pub fn refused(outcome: Outcome) -> Self {
        let [first, rest @ ..] = Kind::ALL;
        let mut report = Report::default();
        report.outcomes.insert(first, outcome);
        for kind in rest {
            report.outcomes.insert(kind, Outcome::waiting(first));
        }
        report
    }

    pub fn outcome(&self, kind: Kind) -> Option<&Outcome> {
        self.outcomes.get(&kind)
    }

    pub fn passed(&self, kind: Kind) -> bool {
        self.outcome(kind).is_some_and(Outcome::is_true)
    }

    /// Every recorded condition, in step order.
    pub fn outcomes(&self) -> impl Iterator<Item = (Kind, &Outcome)> {
        self.outcomes.iter().map(|(k, o)| (*k, o))
    }

    /// The first step `kind` needs that has not passed.
    fn unmet(&self, kind: Kind) -> Option<Kind> {
        kind.needs().iter().copied().find(|need| !self.passed(*need))
    }

    /// The inputs of `kind` when every step it needs passed, else the condition it waits with.
    fn gate<T>(&self, kind: Kind, inputs: Option<T>) -> Result<T, Outcome> {
        let first_need = kind.needs().first().copied().unwrap_or(kind);
        match self.unmet(kind) {
            Some(need) => Err(Outcome::waiting(need)),
            None => inputs.ok_or_else(|| Outcome::waiting(first_need)),
        }
    }

    /// The `Ready` summary over the required steps.
    pub fn ready(&self, has_api_key: bool, activate: bool) -> Outcome {
        super::conditions::ready(self.outcomes().filter(|(kind, _)| kind.required(has_api_key, activate)))
    }

    /// Without an API key the Antimatter steps are left to the person: say what to enter, or which
    /// Azure step must pass first.
    fn manual(&mut self, key: Option<&KeyInfo>, tenant_id: &str) {
        let blocker = Kind::ALL.into_iter().find(|k| k.route() == Route::Azure && !self.passed(*k));
        let message = match (key, blocker) {
            (Some(key), None) => format!(
                "No Antimatter API key configured: enter Key URL {} and Tenant ID {tenant_id} in the Antimatter dashboard (Domain Configuration > Encryption Rotation), or set spec.antimatter.apiKeySecretRef.",
                key.kid
            ),
            (_, Some(step)) => {
                format!("Pre-check failed at {}; fix it before registering the key with Antimatter.", step.as_str())
            }
            (None, None) => "The key is not known yet.".to_owned(),
        };
        for kind in Kind::ALL {
            let outcome = match kind.route() {
                Route::Azure => continue,
                Route::Antimatter => Outcome::unknown(Reason::ManualRegistrationRequired, message.clone()),
                Route::Activation => Outcome::unknown(
                    Reason::ManualRegistrationRequired,
                    "Activation needs spec.antimatter.apiKeySecretRef.",
                ),
            };
            self.outcomes.insert(kind, outcome);
        }
    }
}

/// The data the steps found, for `.status`.
#[derive(Debug, Default)]
pub struct Found {
    pub key: Option<KeyInfo>,
    pub principal: Option<String>,
    pub assignment: Option<String>,
    pub rek_id: Option<String>,
    /// Antimatter no longer knows the recorded root key: forget it, so the next run registers again.
    pub registration_gone: bool,
    pub pairing: Option<PairingStatus>,
}

/// Runs every step for one object; nothing here writes to Kubernetes. Steps that do not need each
/// other run at once: the key and its tag beside the read-only lookup of Antimatter's application
/// (and the directory token); the service principal once the key is this object's to use; then the
/// role assignment beside the registration.
pub async fn run(
    remotes: &dyn Remotes,
    cluster_id: &str,
    ark: &AzureRootKey,
    known: &AzureRootKeyStatus,
    inputs: &Inputs,
) -> (Report, Found) {
    let spec = &ark.spec;
    let hsm = remotes.hsm(&inputs.hsm, &inputs.identity);
    let directory = remotes.directory(&inputs.identity);
    let domain = inputs.domain.as_ref().map(|d| remotes.antimatter(d));
    let mut report = Report::default();
    let mut found = Found::default();
    let me =
        Owner { cluster: cluster_id.to_owned(), namespace: ark.namespace().unwrap_or_default(), name: ark.name_any() };
    let claimant = key::Claimant { me: &me, grant: &inputs.grant, owners: remotes.owners() };

    let key_chain = async {
        let key = report.take(Kind::KeyReady, Step::settle(key::ensure(&*hsm, &inputs.hsm, spec, &claimant).await));
        let tagged = match &key {
            Some(key) => {
                Step::settle(tag::ensure(&*hsm, key, spec, &me.marker(), report.unmet(Kind::TagApplied)).await)
            }
            None => Step::stopped(Outcome::waiting(Kind::KeyReady)),
        };
        report.take(Kind::TagApplied, tagged).or(key)
    };
    let application =
        async { tokio::join!(principal::application(&inputs.application, domain.as_deref()), directory.warm_up()).0 };
    let (key, application) = tokio::join!(key_chain, application);
    found.key = key;
    // No Graph call, not even a read, for a key this object may not use.
    let principal = match (report.gate(Kind::ServicePrincipalReady, Some(())), application) {
        // A service that asked to be left alone is still left alone.
        (Err(waiting), Err(failure)) => Step { retry_after: failure.retry_after, ..Step::stopped(waiting) },
        (Err(waiting), Ok(_)) => Step::stopped(waiting),
        (Ok(()), Err(failure)) => Step::settle(Err(failure)),
        (Ok(()), Ok(app_id)) => {
            let unverified = inputs.grant.unverified_principals;
            Step::settle(principal::ensure(&*directory, spec, app_id.as_deref(), unverified).await)
        }
    };
    found.principal = report.take(Kind::ServicePrincipalReady, principal);

    let role_inputs = report.gate(Kind::RoleAssigned, found.principal.as_deref());
    let register_inputs = domain.as_deref().map(|d| report.gate(Kind::Registered, found.key.as_ref()).map(|k| (d, k)));
    let (role, registered) = tokio::join!(
        async {
            match role_inputs {
                Ok(principal) => Step::settle(
                    role::ensure(
                        &*hsm,
                        cluster_id,
                        &inputs.hsm,
                        spec,
                        principal,
                        known.role_assignment_name.as_deref(),
                    )
                    .await,
                ),
                Err(waiting) => Step::stopped(waiting),
            }
        },
        async {
            match register_inputs {
                Some(Ok((domain, key))) => Some(Step::settle(register::ensure(domain, ark, known, key).await)),
                Some(Err(waiting)) => Some(Step::stopped(waiting)),
                None => None,
            }
        }
    );
    found.assignment = report.take(Kind::RoleAssigned, role);

    let (Some(domain), Some(registered)) = (domain, registered) else {
        report.manual(found.key.as_ref(), &spec.tenant_id);
        return (report, found);
    };
    found.rek_id = report.take(Kind::Registered, registered);

    let paired = match report.gate(Kind::Paired, found.rek_id.as_deref()) {
        Ok(rek_id) => Step::settle(pair::check(&*domain, rek_id).await),
        Err(waiting) => Step::stopped(waiting),
    };
    found.registration_gone = paired.outcome.reason == Reason::RegistrationMissing;
    found.pairing = report.take(Kind::Paired, paired);

    let active = if !spec.antimatter.activate {
        Step::stopped(Outcome::failed(
            Reason::ActivationNotRequested,
            "spec.antimatter.activate is false; the key is registered but not made active.",
        ))
    } else {
        match report.gate(Kind::Active, found.rek_id.as_deref()) {
            Ok(rek_id) => Step::settle(activate::ensure(&*domain, spec, rek_id).await),
            Err(waiting) => Step::stopped(waiting),
        }
    };
    report.take(Kind::Active, active);
    (report, found)
}

/// Undoes what `Revoke` removes, each beside the step that made it: the Antimatter registration
/// first (refused while it is the active key), then the role assignment, then the tag. The key
/// itself is never touched. Absent things count as removed.
pub async fn revoke(remotes: &dyn Remotes, ark: &AzureRootKey, inputs: &Inputs) -> Result<(), Failure> {
    let status = ark.status.clone().unwrap_or_default();
    let hsm = remotes.hsm(&inputs.hsm, &inputs.identity);
    if let (Some(domain), Some(rek_id)) = (&inputs.domain, &status.root_encryption_key_id) {
        register::unregister(&*remotes.antimatter(domain), rek_id).await?;
    }
    if let Some(name) = &status.role_assignment_name {
        role::unassign(&*hsm, &ark.spec.key.name, name).await?;
    }
    tag::remove(&*hsm, &ark.spec.key.name, &ark.spec.domain_id).await
}
