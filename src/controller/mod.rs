//! The controller: one [`Context`], the finalizer, the status write, events and requeueing. The
//! steps themselves live in [`pipeline`].

pub mod conditions;
pub mod errors;
pub mod events;
pub mod pipeline;
pub mod secrets;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{Event as Finalized, finalizer},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;
use url::Url;

use self::{
    conditions::{Outcome, READY, Step, ready, to_conditions},
    errors::{Area, Error, classify},
    events::{EventType, Note, Publisher},
    pipeline::{Inputs, Run, required_steps, same_rek},
    secrets::SecretValues,
};
use crate::{
    antimatter::{AntimatterClient, ApiKey, DomainTarget},
    api::{AzureRootKey, AzureRootKeyStatus, ConditionStatus, DeletionPolicy, FINALIZER},
    azure::{Azure, ClientSecret, Identity, graph::Graph, keys::KeyClients, rbac::Rbac},
    metrics,
    policy::TenancyPolicy,
};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "rootkey-operator";
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    pub client: Client,
    pub azure: Azure,
    pub keys: KeyClients,
    pub rbac: Rbac,
    pub graph: Graph,
    pub antimatter: AntimatterClient,
    pub policy: TenancyPolicy,
    /// The cluster's identity (the `kube-system` namespace UID), part of role-assignment names.
    pub cluster_id: String,
    pub events: Publisher,
    pub secrets: SecretValues,
    failures: Mutex<HashMap<ObjectRef<AzureRootKey>, u32>>,
    /// The status this operator last wrote per object, with the resourceVersion the write produced:
    /// the watch cache may not have caught up with our own write yet.
    written: Mutex<HashMap<ObjectRef<AzureRootKey>, (u64, AzureRootKeyStatus)>>,
    /// Objects a service asked (`Retry-After`) not to call about before an instant: any trigger
    /// before then (a Secret change, a watch event) waits too.
    held: Mutex<HashMap<ObjectRef<AzureRootKey>, Instant>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        azure: Azure,
        antimatter: AntimatterClient,
        policy: TenancyPolicy,
        cluster_id: String,
        events: Publisher,
    ) -> Self {
        Self {
            secrets: SecretValues::new(client.clone()),
            client,
            azure,
            keys: KeyClients::default(),
            rbac: Rbac,
            graph: Graph::default(),
            antimatter,
            policy,
            cluster_id,
            events,
            failures: Mutex::default(),
            written: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// What the object's status is, as far as this operator knows: the cached object's, unless our
    /// own later write has not reached the cache yet. Once it has, the copy is dropped.
    fn known_status(&self, ark: &AzureRootKey) -> Option<AzureRootKeyStatus> {
        let cached_rv = ark.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
        let object = ObjectRef::from(ark);
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        match (written.get(&object), cached_rv) {
            (Some((rv, status)), Some(cached)) if *rv > cached => return Some(status.clone()),
            (Some(_), _) => {
                written.remove(&object);
            }
            (None, _) => {}
        }
        ark.status.clone()
    }

    /// Remembers our write until the watch cache has it, when the object comes back soon (a
    /// backoff). A Ready object comes back after its checkInterval, long after the cache caught up;
    /// remembering every object's status would double the cache's size during a rollout.
    fn remember_write(&self, ark: &AzureRootKey, written: &AzureRootKey, back_soon: bool) {
        let object = ObjectRef::from(ark);
        let mut remembered = self.written.lock().unwrap_or_else(|p| p.into_inner());
        match (written.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok()), &written.status) {
            (Some(rv), Some(status)) if back_soon => remembered.insert(object, (rv, status.clone())),
            _ => remembered.remove(&object),
        };
    }

    /// Drops what is kept for objects the cache of `namespace` (all namespaces: `None`) no longer
    /// holds — deleted while its watch was down, so no deletion was reported — and remembered
    /// writes the cache has caught up with, so the copies do not outlive the moment they are needed.
    pub fn forget_stale(&self, cache: &Store<AzureRootKey>, namespace: Option<&str>) {
        retain_cached(&mut self.failures.lock().unwrap_or_else(|p| p.into_inner()), cache, namespace, |_, _| true);
        retain_cached(&mut self.held.lock().unwrap_or_else(|p| p.into_inner()), cache, namespace, |_, _| true);
        retain_cached(
            &mut self.written.lock().unwrap_or_else(|p| p.into_inner()),
            cache,
            namespace,
            |ark, (written_rv, _)| {
                ark.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok()) < Some(*written_rv)
            },
        );
    }

    /// Exponential per-object backoff from 1 s to 5 min, or longer when the service asked for it.
    fn backoff(&self, ark: &AzureRootKey, retry_after: Option<Duration>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(ObjectRef::from(ark)).or_insert(0);
        let delay = jittered_backoff(*n, retry_after);
        *n = n.saturating_add(1);
        delay
    }

    /// Drops what is kept per object once it is gone.
    pub fn forget(&self, ark: &AzureRootKey) {
        let object = ObjectRef::from(ark);
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&object);
        self.written.lock().unwrap_or_else(|p| p.into_inner()).remove(&object);
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&object);
    }

    fn reset_backoff(&self, ark: &AzureRootKey) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&ObjectRef::from(ark));
    }

    fn event(&self, ark: &AzureRootKey, type_: EventType, reason: &str, note: String) {
        self.events.publish(ark.object_ref(&()), vec![Note { type_, reason: reason.to_owned(), note }]);
    }
}

/// Keeps the entries whose object `cache` holds and `keep` accepts. Entries outside the cache's
/// namespace are left alone: another namespace's controller, with its own cache, owns them.
fn retain_cached<V>(
    entries: &mut HashMap<ObjectRef<AzureRootKey>, V>,
    cache: &Store<AzureRootKey>,
    namespace: Option<&str>,
    keep: impl Fn(&AzureRootKey, &V) -> bool,
) {
    entries.retain(|object, value| {
        namespace.is_some_and(|ns| object.namespace.as_deref() != Some(ns))
            || cache.get(object).is_some_and(|ark| keep(&ark, value))
    });
}

/// The delay after `failures` consecutive failures: 1 s doubling to 5 min, never sooner than the
/// service's `Retry-After`.
fn backoff_delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    Duration::from_secs(1u64 << failures.min(9)).min(MAX_BACKOFF).max(retry_after.unwrap_or_default())
}

/// The backoff with up to +20 % jitter, so objects that failed together do not retry together.
fn jittered_backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    backoff_delay(failures, retry_after).mul_f64(1.0 + fastrand::f64() * 0.2)
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
    Action::requeue(ctx.backoff(&ark, None))
}

/// Resolves the spec into endpoints, identity and API key, refusing what must be refused before any
/// remote call: HSMs outside the cloud, objects outside the tenancy policy, missing Secrets.
async fn resolve(ctx: &Context, ark: &AzureRootKey) -> Result<Inputs, Outcome> {
    let spec = &ark.spec;
    let ns = ark.namespace().unwrap_or_default();
    let hsm = ctx.azure.cloud.hsm_endpoint(&spec.hsm).map_err(|e| Outcome::failed("InvalidSpec", e.to_string()))?;
    let secret = match &spec.azure_credentials_secret_ref {
        Some(r) => Some(ClientSecret {
            client_id: ctx.secrets.value(&ns, &r.name, "clientId").await?,
            secret: ctx.secrets.value(&ns, &r.name, "clientSecret").await?,
            tenant_id: ctx.secrets.value(&ns, &r.name, "tenantId").await.ok(),
        }),
        None if !ctx.policy.allows(&ns, spec.hsm.name.as_deref(), &hsm.url) => {
            return Err(Outcome::failed(
                "PolicyDenied",
                format!(
                    "The tenancy policy does not let namespace {ns} use the operator's Azure identity for {}; set spec.azureCredentialsSecretRef or ask the cluster admin.",
                    hsm.url
                ),
            ));
        }
        None => None,
    };
    let domain = match &spec.antimatter.api_key_secret_ref {
        Some(r) => Some(DomainTarget {
            api_url: Url::parse(&spec.antimatter.api_url)
                .ok()
                .filter(|u| u.scheme() == "https")
                .ok_or_else(|| Outcome::failed("InvalidSpec", "spec.antimatter.apiUrl must be an https URL."))?,
            domain_id: spec.domain_id.clone(),
            api_key: ApiKey::new(ctx.secrets.value(&ns, &r.name, &r.key).await?),
        }),
        None => None,
    };
    Ok(Inputs { hsm, identity: Identity { tenant_id: spec.tenant_id.clone(), secret }, domain })
}

/// The current time at the API server's precision (seconds), so statuses compare equal.
fn now() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default())
}

async fn apply(api: &Api<AzureRootKey>, ark: &AzureRootKey, ctx: &Context) -> Result<Action, Error> {
    let object = ObjectRef::from(ark);
    let held = ctx.held.lock().unwrap_or_else(|p| p.into_inner()).get(&object).copied();
    if let Some(until) = held.filter(|until| *until > Instant::now()) {
        return Ok(Action::requeue(until - Instant::now()));
    }
    let known = ctx.known_status(ark);
    let prev = known.clone().unwrap_or_default();
    let (run, has_api_key, hsm_url) = match resolve(ctx, ark).await {
        Ok(inputs) => (pipeline::run(ctx, ark, &inputs).await, inputs.domain.is_some(), Some(inputs.hsm.url.clone())),
        Err(outcome) => {
            let mut run = Run { failed: true, ..Run::default() };
            run.outcomes.insert(Step::KeyReady.as_str(), outcome);
            for step in &Step::ALL[1..] {
                run.outcomes.insert(step.as_str(), Outcome::unknown("WaitingKeyReady", "waiting for KeyReady"));
            }
            (run, ark.spec.antimatter.api_key_secret_ref.is_some(), prev.hsm_url.clone())
        }
    };

    let required = required_steps(ark, has_api_key);
    let required: Vec<(Step, &Outcome)> =
        required.iter().filter_map(|s| run.outcomes.get(s.as_str()).map(|o| (*s, o))).collect();
    let summary = ready(&required);
    let status = build_status(ark, &prev, &run, &summary, hsm_url);

    {
        let mut held = ctx.held.lock().unwrap_or_else(|p| p.into_inner());
        match run.retry_after {
            Some(wait) => held.insert(object.clone(), Instant::now() + wait),
            None => held.remove(&object),
        };
    }
    for (reason, note) in &run.changes {
        tracing::info!(%object, reason, note, "changed");
    }
    tracing::debug!(%object, ready = ?summary.status, reason = %summary.reason, "reconciled");
    if known.as_ref() != Some(&status) {
        let patch = json!({ "apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey", "status": status });
        let written = api
            .patch_status(&ark.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        ctx.remember_write(ark, &written, !summary.is_true());
    }
    let changes = run.changes.iter().map(|(reason, note)| Note {
        type_: EventType::Normal,
        reason: (*reason).to_owned(),
        note: note.clone(),
    });
    let new_failures = status.conditions.iter().filter(|c| c.status == ConditionStatus::False).filter(|c| {
        !prev.conditions.iter().any(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason)
    });
    let warnings = new_failures.map(|c| Note {
        type_: EventType::Warning,
        reason: c.reason.to_string(),
        note: format!("{}: {}", c.type_, c.message),
    });
    ctx.events.publish(ark.object_ref(&()), changes.chain(warnings).collect());

    if summary.is_true() {
        ctx.reset_backoff(ark);
        Ok(Action::requeue(jittered(check_interval(ark))))
    } else {
        Ok(Action::requeue(ctx.backoff(ark, run.retry_after)))
    }
}

fn build_status(
    ark: &AzureRootKey,
    prev: &AzureRootKeyStatus,
    run: &Run,
    summary: &Outcome,
    hsm_url: Option<String>,
) -> AzureRootKeyStatus {
    let generation = ark.metadata.generation;
    let mut outcomes: Vec<(&'static str, &Outcome)> =
        Step::ALL.iter().filter_map(|s| run.outcomes.get(s.as_str()).map(|o| (s.as_str(), o))).collect();
    outcomes.push((READY, summary));
    // A new pairing result is recorded only when it differs, so steady checks write nothing.
    let pairing = match (&run.pairing, &prev.pairing) {
        (Some(new), Some(old)) if new.status == old.status && new.message == old.message => Some(old.clone()),
        (Some(new), _) => Some(new.clone()),
        (None, old) => old.clone(),
    };
    AzureRootKeyStatus {
        observed_generation: generation,
        conditions: to_conditions(&outcomes, &prev.conditions, generation, &now()),
        hsm_url: hsm_url.or_else(|| prev.hsm_url.clone()),
        key_url: run.key.as_ref().map(|k| k.kid.clone()).or_else(|| prev.key_url.clone()),
        key_version: run.key.as_ref().map(|k| k.version.clone()).or_else(|| prev.key_version.clone()),
        tenant_id: Some(ark.spec.tenant_id.clone()),
        service_principal_object_id: run.principal.clone().or_else(|| prev.service_principal_object_id.clone()),
        role_assignment_name: run.assignment.clone().or_else(|| prev.role_assignment_name.clone()),
        root_encryption_key_id: run.rek_id.clone().or_else(|| prev.root_encryption_key_id.clone()),
        pairing,
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

/// Deletion: `Retain` and suspended objects are released at once; `Revoke` removes what the
/// operator granted (role assignment, tag, registration), never the key, treating "not found" as done.
async fn cleanup(api: &Api<AzureRootKey>, ark: &AzureRootKey, ctx: &Context) -> Result<Action, Error> {
    if ark.spec.suspend || ark.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.forget(ark);
        return Ok(Action::await_change());
    }
    let blocked = match resolve(ctx, ark).await {
        Ok(inputs) => revoke(ark, &inputs, ctx).await.err(),
        Err(outcome) => Some(outcome),
    };
    tracing::info!(object = %ObjectRef::from(ark), blocked = ?blocked.as_ref().map(|o| &o.reason), "revoke");
    match blocked {
        None => {
            ctx.event(
                ark,
                EventType::Normal,
                "Revoked",
                "Removed Antimatter's access to the key; the key itself is kept.".to_owned(),
            );
            ctx.forget(ark);
            Ok(Action::await_change())
        }
        Some(outcome) => {
            let prev = ark.status.clone().unwrap_or_default();
            let mut conditions = prev.conditions.clone();
            conditions.retain(|c| c.type_ != "Deleting");
            let message =
                format!("{} Set spec.deletionPolicy: Retain to release the object without revoking.", outcome.message);
            let blocked = Outcome::failed(&outcome.reason, message.clone());
            conditions.extend(to_conditions(
                &[("Deleting", &blocked)],
                &prev.conditions,
                ark.metadata.generation,
                &now(),
            ));
            if conditions != prev.conditions {
                // Server-side apply owns the whole status: send all of it, or the fields left out are dropped.
                let status = AzureRootKeyStatus { conditions, ..prev };
                let patch = json!({ "apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey", "status": status });
                api.patch_status(&ark.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
                    .await?;
                ctx.event(ark, EventType::Warning, &outcome.reason, format!("Revoke blocked: {message}"));
            }
            // An error keeps the finalizer (Ok would release the object); error_policy backs off.
            Err(Error::RevokeBlocked(outcome.reason))
        }
    }
}

async fn revoke(ark: &AzureRootKey, inputs: &Inputs, ctx: &Context) -> Result<(), Outcome> {
    let status = ark.status.clone().unwrap_or_default();
    let spec = &ark.spec;
    // Antimatter first: the active key must not lose its access under Antimatter's feet.
    if let (Some(domain), Some(id)) = (&inputs.domain, &status.root_encryption_key_id) {
        let active = ctx.antimatter.active_key(domain).await.map_err(|e| classify(Area::Antimatter, &e).outcome)?;
        if active.is_some_and(|a| same_rek(&a.rek_id, id)) {
            return Err(Outcome::failed(
                "KeyIsActive",
                format!("Root key {id} is the domain's active key; make another key active in Antimatter first."),
            ));
        }
        match ctx.antimatter.delete_key(domain, id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(classify(Area::Antimatter, &e).outcome),
        }
    }
    if let Some(name) = &status.role_assignment_name {
        let scope = format!("/keys/{}", spec.key.name);
        ctx.rbac
            .delete(&ctx.azure, &inputs.hsm, &inputs.identity, &scope, name)
            .await
            .map_err(|e| classify(Area::Rbac, &e).outcome)?;
    }
    let key = ctx
        .keys
        .get(&ctx.azure, &inputs.hsm, &inputs.identity, &spec.key.name)
        .await
        .map_err(|e| classify(Area::Keys, &e).outcome)?;
    if let Some(key) = key.filter(|k| k.tags.contains_key(&spec.domain_id)) {
        let mut tags = key.tags.clone();
        tags.remove(&spec.domain_id);
        ctx.keys
            .set_tags(&ctx.azure, &inputs.hsm, &inputs.identity, &spec.key.name, &key.version, tags)
            .await
            .map_err(|e| classify(Area::Keys, &e).outcome)?;
    }
    Ok(())
}

/// Counts objects by Ready status for the `objects` gauge.
pub fn count_ready<'a>(objects: impl Iterator<Item = &'a AzureRootKey>) -> (i64, i64, i64) {
    objects.fold((0, 0, 0), |(t, f, u), ark| {
        let ready = ark.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
        match ready.map(|c| c.status) {
            Some(ConditionStatus::True) => (t + 1, f, u),
            Some(ConditionStatus::False) => (t, f + 1, u),
            _ => (t, f, u + 1),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_does_not_change_when_nothing_did() {
        let ark: AzureRootKey = serde_json::from_value(json!({
            "apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey",
            "metadata": {"name": "a", "namespace": "n", "generation": 2},
            "spec": {"domainId": "dm-AbCdEfGhJkL", "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                     "hsm": {"name": "contoso"}, "key": {"name": "k"}}
        }))
        .expect("object");
        let mut run = Run::default();
        for s in Step::ALL {
            run.outcomes.insert(s.as_str(), Outcome::ok("Ok", "fine"));
        }
        let summary = Outcome::ok("Ready", "ready");
        let first = build_status(&ark, &AzureRootKeyStatus::default(), &run, &summary, Some("https://h".into()));
        let second = build_status(&ark, &first, &run, &summary, Some("https://h".into()));
        assert_eq!(first, second);
        assert_eq!(first.observed_generation, Some(2));
        assert!(first.conditions.iter().all(|c| c.observed_generation == Some(2)));
        assert_eq!(first.conditions.len(), Step::ALL.len() + 1);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let delays: Vec<u64> = (0..12).map(|n| backoff_delay(n, None).as_secs()).collect();
        assert_eq!(&delays[..4], &[1, 2, 4, 8]);
        assert_eq!(delays[11], 300);
        assert_eq!(backoff_delay(0, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(backoff_delay(0, Some(Duration::from_secs(600))), Duration::from_secs(600));
    }

    fn object(namespace: &str, name: &str, resource_version: &str) -> AzureRootKey {
        serde_json::from_value(json!({
            "apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
            "spec": {"domainId": "dm-AbCdEfGhJkL", "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                     "hsm": {"name": "contoso"}, "key": {"name": "k"}}
        }))
        .expect("object")
    }

    /// A watch gap hides deletions: what is kept per object must go once the cache lost it, but
    /// not what another namespace's controller keeps.
    #[test]
    fn entries_of_objects_the_cache_lost_are_dropped() {
        let (cache, mut writer) = kube::runtime::reflector::store::<AzureRootKey>();
        let kept = object("a", "kept", "7");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(kept.clone()));
        let (gone, elsewhere) = (object("a", "gone", "3"), object("b", "other", "5"));
        let mut entries: HashMap<_, u32> =
            [&kept, &gone, &elsewhere].into_iter().map(|o| (ObjectRef::from(o), 1)).collect();

        retain_cached(&mut entries, &cache, Some("a"), |_, _| true);
        let mut left: Vec<String> = entries.keys().map(|o| o.name.clone()).collect();
        left.sort();
        assert_eq!(left, ["kept", "other"]);

        retain_cached(&mut entries, &cache, None, |ark, _| ark.resource_version().as_deref() != Some("7"));
        assert!(entries.is_empty(), "{entries:?}");
    }
}
