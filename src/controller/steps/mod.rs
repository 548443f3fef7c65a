//! The reconcile steps and the order they run in. Each step is a module with one `ensure` (and,
//! where it makes something `Revoke` undoes, the undo beside it); each takes what it needs and
//! returns a [`Step`]: its condition, the value later steps need, the changes it made. Which step
//! needs which is one table, [`Kind::needs`] (in `table`), that the gating here reads.

mod activate;
mod key;
mod pair;
mod principal;
mod register;
mod retire;
mod role;
mod tag;

use std::{collections::BTreeMap, time::Duration};

pub use self::principal::NO_APPLICATION;
pub use super::table::Kind;
use super::{
    conditions::{Outcome, now},
    errors::Failure,
    inputs::Inputs,
    reasons::{ChangeReason, Reason},
    step::{Change, Step},
    table::Route,
};
use futures::channel::oneshot;
use kube::ResourceExt;

use super::ownership::Owner;
use crate::{
    antimatter::{DomainTarget, RootKey},
    api::{
        AzureRootKey, AzureRootKeyStatus, ConditionStatus, CreatedRecord, KeyRotationPolicySpec, KeyVersionStatus,
        PairingStatus, RotationStatus,
    },
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
    /// The key's rotation policy as the HSM stored it, when the spec asks for one and it was applied.
    pub rotation_policy: Option<KeyRotationPolicySpec>,
    /// The last activation and its rotation, when the `Active` step looked.
    pub rotation: Option<RotationStatus>,
    /// The key's versions as this object used them, newest first.
    pub versions: Vec<KeyVersionStatus>,
    /// What of the above this object added itself.
    pub created: CreatedRecord,
}

/// Runs every step for one object; nothing here writes to Kubernetes. Steps that do not need each
/// other run at once: the key and its tag (and the HSM token) beside the read-only lookup of
/// Antimatter's application (and the directory token); the service principal once the key is this
/// object's to use; then the role assignment beside the registration.
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
    let held_before = known.key_url.as_deref().is_some_and(|url| key::is_version_of(url, &inputs.hsm, &spec.key.name));
    let claimant = key::Claimant { me: &me, grant: &inputs.grant, owners: remotes.owners(), held_before };
    let now = now();

    let mut rotation_policy = None;
    // The principal needs the key read, not its tag: its gate is known once the key step is
    // recorded, and its Graph calls go on beside the tag write.
    let (principal_gate_tx, principal_gate_rx) = oneshot::channel();
    let key_chain = async {
        let key_read = tokio::join!(key::ensure(&*hsm, &inputs.hsm, ark, &claimant), hsm.warm_up()).0;
        let mut key_step = Step::settle(key_read);
        // The key's own rotation policy, when the spec asks for one: a key that cannot get it is not
        // ready as specified.
        if let (Some(wanted), true, false) = (&spec.key.rotation_policy, key_step.outcome.is_true(), spec.suspend) {
            match key::ensure_rotation_policy(&*hsm, &spec.key.name, wanted).await {
                Ok((policy, change)) => {
                    key_step.changes.extend(change);
                    rotation_policy = Some(policy);
                }
                Err(failure) => {
                    key_step.outcome = failure.outcome.prefixed("Applying spec.key.rotationPolicy: ");
                    key_step.retry_after = key_step.retry_after.max(failure.retry_after);
                }
            }
        }
        let key = report.take(Kind::KeyReady, key_step);
        let _ = principal_gate_tx.send(report.gate(Kind::ServicePrincipalReady, Some(())));
        let tagged = match &key {
            Some(key) => Step::settle(tag::ensure(&*hsm, key, ark, &me.marker(), report.unmet(Kind::TagApplied)).await),
            None => Step::stopped(Outcome::waiting(Kind::KeyReady)),
        };
        report.take(Kind::TagApplied, tagged).or(key)
    };
    let principal_chain = async {
        let application =
            tokio::join!(principal::application(&inputs.application, domain.as_deref()), directory.warm_up()).0;
        // No Graph call, not even a read, for a key this object may not use.
        let gate = principal_gate_rx.await.unwrap_or_else(|_| Err(Outcome::waiting(Kind::KeyReady)));
        match (gate, application) {
            // A service that asked to be left alone is still left alone.
            (Err(waiting), Err(failure)) => Step { retry_after: failure.retry_after, ..Step::stopped(waiting) },
            (Err(waiting), Ok(_)) => Step::stopped(waiting),
            (Ok(()), Err(failure)) => Step::settle(Err(failure)),
            (Ok(()), Ok(app_id)) => {
                let unverified = inputs.grant.unverified_principals;
                Step::settle(principal::ensure(&*directory, spec, app_id.as_deref(), unverified).await)
            }
        }
    };
    let (key, principal) = tokio::join!(key_chain, principal_chain);
    found.key = key;
    found.rotation_policy = rotation_policy;
    found.principal = report.take(Kind::ServicePrincipalReady, principal);

    let role_inputs = report.gate(Kind::RoleAssigned, found.principal.as_deref());
    let register_inputs = domain.as_deref().map(|d| report.gate(Kind::Registered, found.key.as_ref()).map(|k| (d, k)));
    let (role, registered) = tokio::join!(
        async {
            match role_inputs {
                Ok(principal) => Step::settle(
                    role::ensure(&*hsm, cluster_id, &inputs.hsm, ark, principal, known.role_assignment_name.as_deref())
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
    let held = report.take(Kind::RoleAssigned, role);
    found.created.role_assignment_name = held.as_ref().filter(|h| h.created).map(|h| h.name.clone());
    found.assignment = held.map(|h| h.name);
    found.created.domain_tag =
        found.key.as_ref().is_some_and(|k| tag::added_by(k, &spec.domain_id, &role::object_uid(ark)));

    let (Some(domain), Some(registered)) = (domain, registered) else {
        report.manual(found.key.as_ref(), &spec.tenant_id);
        found.versions = retire::track(known, found.key.as_ref(), retire::Registration::Unknown, &now);
        return (report, found);
    };
    let registration = report.take(Kind::Registered, registered);
    found.created.root_encryption_key_id = registration.as_ref().filter(|r| r.created).map(|r| r.rek_id.clone());
    found.rek_id = registration.map(|r| r.rek_id);

    let paired = match report.gate(Kind::Paired, found.rek_id.as_deref()) {
        Ok(rek_id) => Step::settle(pair::check(&*domain, rek_id, granted_at(known, &found, &report.changes)).await),
        Err(waiting) => Step::stopped(waiting),
    };
    found.registration_gone = paired.outcome.reason == Reason::RegistrationMissing;
    found.pairing = report.take(Kind::Paired, paired);
    let registration = match (&found.rek_id, found.registration_gone) {
        (_, true) => retire::Registration::Gone,
        (Some(rek_id), false) => retire::Registration::Is(rek_id),
        (None, false) => retire::Registration::Unknown,
    };
    found.versions = retire::track(known, found.key.as_ref(), registration, &now);

    let active = if !spec.antimatter.activate {
        Step::stopped(Outcome::failed(
            Reason::ActivationNotRequested,
            "spec.antimatter.activate is false; the key is registered but not made active.",
        ))
    } else {
        match report.gate(Kind::Active, found.rek_id.as_deref()) {
            Ok(rek_id) => {
                let rival = remotes
                    .owners()
                    .first_activator(&spec.domain_id, &spec.antimatter.api_url)
                    .filter(|(namespace, name)| *namespace != me.namespace || *name != me.name)
                    .map(|(namespace, name)| format!("{namespace}/{name}"));
                let activation = activate::Activation { rek_id, known: known.rotation.as_ref(), rival };
                Step::settle(activate::ensure(&*domain, spec, activation).await)
            }
            Err(waiting) => Step::stopped(waiting),
        }
    };
    found.rotation = report.take(Kind::Active, active);

    // An older version's registration goes once the current one does all it is asked to.
    let current_serves = report.passed(Kind::Paired) && (!spec.antimatter.activate || report.passed(Kind::Active));
    if current_serves && !spec.suspend && retire::pending(&found.versions) {
        match retire::ensure(&*domain, ark, found.versions.clone(), &now).await {
            Ok(retired) => {
                found.versions = retired.versions;
                report.changes.extend(retired.changes);
                report.retry_after = report.retry_after.max(retired.retry_after);
            }
            // Nothing is lost: the versions stay Retiring and the next run tries again.
            Err(failure) => {
                tracing::warn!(error = %failure.outcome.message, "retiring an older key version's registration failed");
                report.retry_after = report.retry_after.max(Some(failure.retry_after.unwrap_or(RETIRE_RETRY)));
            }
        }
    }
    (report, found)
}

/// How soon to try again when retiring an older version's registration failed.
const RETIRE_RETRY: Duration = Duration::from_secs(30);

/// When this object last granted Antimatter access itself: now, when this run created the service
/// principal or the role assignment; else when its `RoleAssigned` turned `True`, if `status.created`
/// proves the assignment in use is its own (a principal it created is always assigned by it after).
fn granted_at(known: &AzureRootKeyStatus, found: &Found, changes: &[Change]) -> Option<jiff::Timestamp> {
    let granted_now =
        changes.iter().any(|c| matches!(c.reason, ChangeReason::RoleAssigned | ChangeReason::ServicePrincipalCreated));
    if granted_now {
        return Some(jiff::Timestamp::now());
    }
    let own = known
        .created
        .as_ref()
        .and_then(|c| c.role_assignment_name.as_ref())
        .is_some_and(|name| found.assignment.as_ref() == Some(name));
    let assigned = known
        .conditions
        .iter()
        .find(|c| c.type_ == Kind::RoleAssigned.as_str() && c.status == ConditionStatus::True)?;
    own.then_some(assigned.last_transition_time.0)
}

/// What a `Revoke` removed, and what it left in place and why.
#[derive(Debug, Default)]
pub struct Revoked {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

/// Removes what this object added, each proven by its mark (see [`CreatedRecord`]), in the order
/// that never cuts off a key in use: an object that added nothing removes nothing and checks
/// nothing; otherwise, while the key (any version) is the domain's active key or Antimatter is
/// still re-wrapping data keys, nothing is touched; then this object's registrations of the key
/// are deleted; then, only when no other registration of the key is left in the domain, its role
/// assignment (kept while another domain's tag allows that domain on the key) and its domain tag.
/// What it did not add is never removed, nor the key. `Err` says why it stopped, after what.
pub async fn revoke(
    remotes: &dyn Remotes,
    cluster_id: &str,
    ark: &AzureRootKey,
    inputs: &Inputs,
    target: &DomainTarget,
) -> Result<Revoked, Failure> {
    let mut done = Revoked::default();
    match revoke_into(&mut done, remotes, cluster_id, ark, inputs, target).await {
        Ok(()) => {
            let unproven = left_in_place(ark, &done);
            done.kept.extend(unproven);
            Ok(done)
        }
        Err(mut failure) if !done.removed.is_empty() => {
            failure.outcome.message = format!("Removed {}. {}", done.removed.join(", "), failure.outcome.message);
            Err(failure)
        }
        Err(failure) => Err(failure),
    }
}

async fn revoke_into(
    done: &mut Revoked,
    remotes: &dyn Remotes,
    cluster_id: &str,
    ark: &AzureRootKey,
    inputs: &Inputs,
    target: &DomainTarget,
) -> Result<(), Failure> {
    let spec = &ark.spec;
    let hsm = remotes.hsm(&inputs.hsm, &inputs.identity);
    let domain = remotes.antimatter(target);
    let of_this_key = |k: &RootKey| key::is_version_of(&k.resource_path, &inputs.hsm, &spec.key.name);

    let registered: Vec<RootKey> = domain.root_keys().await?.into_iter().filter(of_this_key).collect();
    let (our_registrations, others): (Vec<RootKey>, Vec<RootKey>) =
        registered.iter().cloned().partition(|k| register::made_by(k, ark));
    let key = hsm.key(&spec.key.name).await?;
    let our_assignments = role::created_by(&*hsm, cluster_id, &inputs.hsm, ark).await?;
    let our_tag = key.as_ref().filter(|k| tag::added_by(k, &spec.domain_id, &role::object_uid(ark)));
    if our_registrations.is_empty() && our_assignments.is_empty() && our_tag.is_none() {
        return Ok(());
    }

    if let Some(active) = domain.active_key().await?
        && (of_this_key(&active) || registered.iter().any(|k| register::same_rek(&k.rek_id, &active.rek_id)))
    {
        return Err(Outcome::failed(
            Reason::KeyIsActive,
            format!(
                "Root key {} (key {}) is the domain's active key; make another key active in Antimatter first.",
                active.rek_id, spec.key.name
            ),
        )
        .into());
    }
    // Data keys still wrapped under this key (a rotation away from it not finished) need it.
    if activate::rotate_while_more(&*domain, true).await?.0 {
        return Err(Failure {
            outcome: Outcome::unknown(
                Reason::RotationIncomplete,
                "Antimatter is still re-wrapping the domain's data keys (rotate answers has_more); the operator keeps calling rotate and removes access once it is done.",
            ),
            retry_after: Some(activate::ROTATING_RECHECK),
        });
    }
    for registration in our_registrations {
        register::unregister(&*domain, &registration.rek_id).await?;
        done.removed.push(format!("registration {}", registration.rek_id));
    }
    if !others.is_empty() && (!our_assignments.is_empty() || our_tag.is_some()) {
        let ids: Vec<&str> = others.iter().map(|k| k.rek_id.as_str()).collect();
        return Err(Outcome::failed(
            Reason::KeyStillRegistered,
            format!(
                "Antimatter still has this key registered as {}, not by this object; its access stays until that registration is deleted in Antimatter.",
                ids.join(", ")
            ),
        )
        .into());
    }

    let other_domains = key.as_ref().map(|k| tag::other_domains(k, &spec.domain_id)).unwrap_or_default();
    for assignment in our_assignments {
        if other_domains.is_empty() {
            role::unassign(&*hsm, &spec.key.name, &assignment.name).await?;
            done.removed.push(format!("role assignment {}", assignment.name));
        } else {
            done.kept.push(format!(
                "role assignment {} (still needed: the key also allows {})",
                assignment.name,
                other_domains.join(", ")
            ));
        }
    }
    if let Some(key) = our_tag {
        tag::remove(&*hsm, &spec.key.name, key, &spec.domain_id).await?;
        done.removed.push(format!("tag {}=allow", spec.domain_id));
    }
    Ok(())
}

/// What the status shows in use that `done` neither removed nor kept already: found in place,
/// added by another object, or by an operator version that kept no record (no proof, so it stays).
pub fn left_in_place(ark: &AzureRootKey, done: &Revoked) -> Vec<String> {
    let Some(status) = &ark.status else { return Vec::new() };
    let tagged =
        status.conditions.iter().any(|c| c.type_ == Kind::TagApplied.as_str() && c.status == ConditionStatus::True);
    let shown = [
        status.role_assignment_name.as_ref().map(|n| format!("role assignment {n}")),
        status.root_encryption_key_id.as_ref().map(|r| format!("registration {r}")),
        tagged.then(|| format!("tag {}=allow", ark.spec.domain_id)),
    ];
    let told = |s: &String| done.removed.iter().chain(&done.kept).any(|d| d.starts_with(s.as_str()));
    shown.into_iter().flatten().filter(|s| !told(s)).collect()
}
