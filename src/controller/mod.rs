//! The controller: one [`Context`], [`reconcile`] (the finalizer, the steps, the status write,
//! events, requeueing) and [`error_policy`]. The steps live in [`steps`], per-object memory in
//! [`memory`], the status in [`status`].

/// An enum of names with `ALL` (in declaration order) and `as_str` (the variant's name).
macro_rules! closed_set {
    ($(#[$meta:meta])* $set:ident { $($name:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $set {
            $($name,)*
        }

        impl $set {
            pub const ALL: [$set; [$(stringify!($name)),*].len()] = [$($set::$name,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($set::$name => stringify!($name),)*
                }
            }
        }

        impl std::fmt::Display for $set {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod conditions;
pub mod errors;
pub mod events;
pub mod inputs;
pub mod memory;
pub mod ownership;
pub mod reasons;
pub mod secrets;
pub mod status;
pub mod step;
pub mod steps;
pub mod table;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{Event as Finalized, finalizer},
        reflector::ObjectRef,
    },
};
use serde_json::json;

use self::{
    conditions::Outcome,
    errors::Error,
    events::{EventType, Note, Publisher},
    memory::Memory,
    reasons::{ChangeReason, Reason},
    steps::Report,
};
use crate::{
    api::{AzureRootKey, ConditionStatus, DeletionPolicy, FINALIZER},
    authority::Authority,
    locks::KeyedLocks,
    metrics,
    remotes::Services,
};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "rootkey-operator";

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    pub client: Client,
    pub services: Services,
    /// What the cluster admin decided: endpoints, Antimatter's application, the tenancy policy.
    pub authority: Authority,
    /// The cluster's identity (the `kube-system` namespace UID), part of role-assignment names.
    pub cluster_id: String,
    pub events: Publisher,
    pub secrets: secrets::SecretValues,
    pub memory: Memory,
    /// One reconcile at a time per (HSM, key), so two objects cannot both claim an unmarked key.
    pub keys_in_use: KeyedLocks<(String, String)>,
}

impl Context {
    pub fn new(
        client: Client,
        services: Services,
        authority: Authority,
        cluster_id: String,
        events: Publisher,
    ) -> Self {
        Self {
            secrets: secrets::SecretValues::new(client.clone()),
            client,
            services,
            authority,
            cluster_id,
            events,
            memory: Memory::default(),
            keys_in_use: KeyedLocks::default(),
        }
    }

    fn event(&self, ark: &AzureRootKey, type_: EventType, reason: &str, note: String) {
        self.events.publish(ark.object_ref(&()), vec![Note { type_, reason: reason.to_owned(), note }]);
    }
}

/// Reconciles one object. Only `Revoke` has cleanup to do, so only `Revoke` objects carry the
/// finalizer: deleting a `Retain` object never waits for the operator (nor for an extra write).
pub async fn reconcile(ark: Arc<AzureRootKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = ark.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AzureRootKey> = Api::namespaced(ctx.client.clone(), &ns);
    let has_finalizer = ark.finalizers().iter().any(|f| f == FINALIZER);
    let deleting = ark.metadata.deletion_timestamp.is_some();
    let result = if ark.spec.deletion_policy == DeletionPolicy::Revoke || (has_finalizer && deleting) {
        finalizer(&api, FINALIZER, ark, |event| async {
            match event {
                Finalized::Apply(ark) => apply(&api, &ark, &ctx).await,
                Finalized::Cleanup(ark) => cleanup(&api, &ark, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    } else if has_finalizer {
        release_finalizer(&api, &ark).await
    } else if deleting {
        Ok(Action::await_change())
    } else {
        apply(&api, &ark, &ctx).await
    };
    metrics::record_reconcile(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

/// Drops the finalizer from a live object that turned `Retain` (or was made by an older version).
/// The resourceVersion makes the patch fail rather than drop a finalizer another writer just added.
/// The watch event it causes brings the object back for the actual reconcile.
async fn release_finalizer(api: &Api<AzureRootKey>, ark: &AzureRootKey) -> Result<Action, Error> {
    let others: Vec<&String> = ark.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({ "metadata": { "finalizers": others, "resourceVersion": ark.resource_version() } });
    api.patch(&ark.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(Action::await_change())
}

/// Requeues a failed reconcile (a Kubernetes error) with the object's backoff.
pub fn error_policy(ark: Arc<AzureRootKey>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(object = %ObjectRef::from(ark.as_ref()), %error, "reconcile failed");
    Action::requeue(ctx.memory.backoff(&ark, None))
}

async fn apply(api: &Api<AzureRootKey>, ark: &AzureRootKey, ctx: &Context) -> Result<Action, Error> {
    let object = ObjectRef::from(ark);
    if let Some(wait) = ctx.memory.hold_remaining(ark) {
        return Ok(Action::requeue(wait));
    }
    let known = ctx.memory.known_status(ark);
    let prev = known.clone().unwrap_or_default();
    let (report, found, has_api_key, hsm_url) = match inputs::resolve(ctx, ark).await {
        Ok(inputs) => {
            let _key = ctx.keys_in_use.lock((inputs.hsm.url.clone(), ark.spec.key.name.clone())).await;
            let (report, found) = steps::run(&ctx.services, &ctx.cluster_id, ark, &prev, &inputs).await;
            (report, found, inputs.domain.is_some(), Some(inputs.hsm.url.clone()))
        }
        Err(refused) => (
            Report::refused(refused),
            steps::Found::default(),
            ark.spec.antimatter.api_key_secret_ref.is_some(),
            prev.hsm_url.clone(),
        ),
    };
    forget_refused_secrets(ctx, ark, &report);
    let ready = report.ready(has_api_key, ark.spec.antimatter.activate);
    let status = status::build(ark, &prev, &report, &found, &ready, hsm_url);

    ctx.memory.set_hold(ark, report.retry_after);
    for change in &report.changes {
        tracing::info!(%object, reason = change.reason.as_str(), note = change.note, "changed");
    }
    tracing::debug!(%object, ready = ?ready.status, reason = %ready.reason, "reconciled");
    if !known.as_ref().is_some_and(|known| status::unchanged(known, &status)) {
        let written = status::write(api, ark, &status).await?;
        ctx.memory.remember_write(ark, &written, !ready.is_true());
    }
    // One Normal event per reconcile that changed something, naming every change.
    let changes = match report.changes.as_slice() {
        [] => None,
        [one] => Some(Note { type_: EventType::Normal, reason: one.reason.to_string(), note: one.note.clone() }),
        many => Some(Note {
            type_: EventType::Normal,
            reason: reasons::ChangeReason::Changed.to_string(),
            note: many.iter().map(|c| format!("{}: {}", c.reason, c.note)).collect::<Vec<_>>().join("; "),
        }),
    };
    // kstatus' summaries restate Ready; `False` is their good state. `Active=False
    // ActivationNotRequested` is what `activate: false` asks for.
    let failing = |c: &&crate::api::Condition| {
        c.status == ConditionStatus::False
            && c.type_ != conditions::RECONCILING
            && c.type_ != conditions::STALLED
            && c.reason != Reason::ActivationNotRequested.as_str()
    };
    let new_failures = status.conditions.iter().filter(failing).filter(|c| {
        !prev.conditions.iter().any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
    });
    let warnings = new_failures.map(|c| Note {
        type_: EventType::Warning,
        reason: c.reason.to_string(),
        note: format!("{}: {}", c.type_, c.message),
    });
    ctx.events.publish(ark.object_ref(&()), changes.into_iter().chain(warnings).collect());

    if ready.is_true() {
        ctx.memory.reset_backoff(ark);
        Ok(Action::requeue(jittered(check_interval(ark))))
    } else if let (ConditionStatus::Unknown, Some(recheck)) = (ready.status, report.retry_after) {
        // Progress a step asked to check on soon (propagation, rotation): no failure, so the
        // backoff does not grow and the check comes when it was asked for.
        Ok(Action::requeue(recheck))
    } else {
        Ok(Action::requeue(ctx.memory.backoff(ark, report.retry_after)))
    }
}

/// A credential a service refused may have been changed in its Secret since it was remembered (no
/// watch tells the operator): the retry reads the object's Secrets again.
fn forget_refused_secrets(ctx: &Context, ark: &AzureRootKey, report: &Report) {
    let refused = report
        .outcomes()
        .any(|(_, o)| matches!(o.reason, reasons::Reason::InvalidCredentials | reasons::Reason::Forbidden));
    if !refused {
        return;
    }
    let ns = ark.namespace().unwrap_or_default();
    let spec = &ark.spec;
    let names = [
        spec.antimatter.api_key_secret_ref.as_ref().map(|r| &r.name),
        spec.azure_credentials_secret_ref.as_ref().map(|r| &r.name),
    ];
    for name in names.into_iter().flatten() {
        ctx.secrets.forget(&ns, name);
    }
}

fn check_interval(ark: &AzureRootKey) -> Duration {
    humantime::parse_duration(&ark.spec.check_interval)
        .unwrap_or(Duration::from_secs(3600))
        .clamp(Duration::from_secs(60), Duration::from_secs(86_400))
}

/// ±10 % jitter so objects created together do not check together forever.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Deletion: `Retain` and suspended objects are released at once. `Revoke` removes what this
/// object added ([`steps::revoke`]), never the key. When the operator cannot revoke safely — no API
/// key (it cannot tell whether Antimatter uses the key), or the namespace is being deleted (its
/// Secrets go first, and the namespace must not wait) — the object is released as `Retain` with a
/// Warning event listing what was left in place.
async fn cleanup(api: &Api<AzureRootKey>, ark: &AzureRootKey, ctx: &Context) -> Result<Action, Error> {
    if ark.spec.suspend || ark.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.memory.forget(ark);
        return Ok(Action::await_change());
    }
    let untouched = || listing(&steps::left_in_place(ark, &steps::Revoked::default()));
    if ark.spec.antimatter.api_key_secret_ref.is_none() {
        let note = format!(
            "Released as Retain without revoking: without spec.antimatter.apiKeySecretRef the operator cannot tell whether Antimatter still uses the key. Left in place: {}.",
            untouched()
        );
        return Ok(release(ctx, ark, EventType::Warning, Reason::RevokeNeedsApiKey.as_str(), note));
    }
    if namespace_deleting(ctx, ark).await? {
        let note = format!(
            "Released as Retain without revoking: the namespace is being deleted. Left in place: {}.",
            untouched()
        );
        return Ok(release(ctx, ark, EventType::Warning, Reason::NamespaceDeleting.as_str(), note));
    }
    let revoked = match inputs::resolve(ctx, ark).await {
        Ok(inputs) => match &inputs.domain {
            Some(target) => {
                steps::revoke(&ctx.services, &ctx.cluster_id, ark, &inputs, target).await.map_err(|f| f.outcome)
            }
            // `resolve` names the domain whenever apiKeySecretRef is set (checked above).
            None => Err(Outcome::failed(Reason::InvalidSpec, "No Antimatter domain to revoke from.")),
        },
        Err(refused) => Err(refused),
    };
    tracing::info!(object = %ObjectRef::from(ark), blocked = ?revoked.as_ref().err().map(|o| o.reason), "revoke");
    let blocked = match revoked {
        Ok(revoked) => {
            let removed = match revoked.removed.is_empty() {
                true => "Removed nothing: this object added nothing that is still there".to_owned(),
                false => format!("Removed {}", revoked.removed.join(", ")),
            };
            ctx.event(
                ark,
                EventType::Normal,
                ChangeReason::Revoked.as_str(),
                format!("{removed}; the key itself is kept."),
            );
            if !revoked.kept.is_empty() {
                let note = format!(
                    "Left in place (not added by this object, or not provably: made before status.created; or still needed by another domain): {}.",
                    listing(&revoked.kept)
                );
                ctx.event(ark, EventType::Warning, Reason::AccessLeftInPlace.as_str(), note);
            }
            ctx.memory.forget(ark);
            return Ok(Action::await_change());
        }
        Err(blocked) => blocked,
    };
    // The cache's copy has no condition messages, and the apply below writes every condition.
    let prev = api.get(&ark.name_any()).await?.status.unwrap_or_default();
    let message =
        format!("{} Set spec.deletionPolicy: Retain to release the object without revoking.", blocked.message);
    let status = status::with_deleting(ark, &prev, &Outcome { message: message.clone(), ..blocked });
    if status != prev {
        status::write(api, ark, &status).await?;
        ctx.event(ark, EventType::Warning, blocked.reason.as_str(), format!("Revoke blocked: {message}"));
    }
    // An error keeps the finalizer (Ok would release the object); error_policy backs off.
    Err(Error::RevokeBlocked(blocked.reason))
}

/// Releases a deleted object without revoking, telling why in an event and in the log (the event
/// may be refused in a namespace being deleted).
fn release(ctx: &Context, ark: &AzureRootKey, type_: EventType, reason: &str, note: String) -> Action {
    tracing::warn!(object = %ObjectRef::from(ark), reason, note, "released without revoking");
    ctx.event(ark, type_, reason, note);
    ctx.memory.forget(ark);
    Action::await_change()
}

/// Whether the object's namespace is being deleted (or already gone).
async fn namespace_deleting(ctx: &Context, ark: &AzureRootKey) -> Result<bool, kube::Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let ns = namespaces.get_opt(&ark.namespace().unwrap_or_default()).await?;
    Ok(ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()))
}

fn listing(items: &[String]) -> String {
    if items.is_empty() { "nothing".to_owned() } else { items.join(", ") }
}
