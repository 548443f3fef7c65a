//! The reconcile pipeline: small idempotent steps (key, tag, principal, role, register, pair,
//! activate), each returning its condition. A step that fails stops the steps that need it.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use uuid::Uuid;

use super::{
    Context,
    conditions::{Outcome, Step},
    errors::{Area, Failure, classify},
};
use crate::{
    antimatter::DomainTarget,
    api::{AzureRootKey, AzureRootKeyStatus, ConditionStatus, CreatePolicy, PairingState, PairingStatus},
    azure::{
        Identity,
        graph::{self, Found},
        keys::KeyInfo,
        rbac::{CRYPTO_USER_ROLE, CRYPTO_USER_ROLE_DEFINITION, RoleAssignmentProperties, is_crypto_user},
    },
    cloud::HsmEndpoint,
};

/// Namespace of the deterministic role-assignment names (UUIDv5).
const ASSIGNMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c7e_2a94_4d1b_9e08_5f7a_c3d2_e1b0);

/// What a reconcile needs, resolved from the spec and Secrets before any remote call.
pub struct Inputs {
    pub hsm: HsmEndpoint,
    pub identity: Identity,
    pub domain: Option<DomainTarget>,
}

/// What the pipeline found and did; becomes `.status`, events and the requeue decision.
#[derive(Default)]
pub struct Run {
    pub outcomes: BTreeMap<&'static str, Outcome>,
    pub key: Option<KeyInfo>,
    pub principal: Option<String>,
    pub assignment: Option<String>,
    pub rek_id: Option<String>,
    pub pairing: Option<PairingStatus>,
    /// Changes made outside the cluster: (event reason, note).
    pub changes: Vec<(&'static str, String)>,
    pub retry_after: Option<Duration>,
    pub failed: bool,
}

impl Run {
    fn set(&mut self, step: Step, outcome: Outcome) {
        if outcome.status == ConditionStatus::False {
            self.failed = true;
        }
        self.outcomes.insert(step.as_str(), outcome);
    }

    fn fail(&mut self, step: Step, f: Failure) {
        self.retry_after = self.retry_after.max(f.retry_after);
        self.set(step, f.outcome);
    }

    fn ok(&self, step: Step) -> bool {
        self.outcomes.get(step.as_str()).is_some_and(Outcome::is_true)
    }

    /// Takes in what a concurrently run part of the pipeline found and did.
    fn absorb(&mut self, other: Run) {
        self.outcomes.extend(other.outcomes);
        self.key = self.key.take().or(other.key);
        self.principal = self.principal.take().or(other.principal);
        self.assignment = self.assignment.take().or(other.assignment);
        self.rek_id = self.rek_id.take().or(other.rek_id);
        self.changes.extend(other.changes);
        self.retry_after = self.retry_after.max(other.retry_after);
        self.failed |= other.failed;
    }

    fn wait(&mut self, step: Step, on: Step) {
        self.set(step, Outcome::unknown(&format!("Waiting{}", on.as_str()), format!("waiting for {}", on.as_str())));
    }
}

fn tag_present(key: &KeyInfo, domain_id: &str) -> bool {
    key.tags.get(domain_id).is_some_and(|v| v == "allow")
}

/// Runs every step for one object. Nothing here writes to Kubernetes.
pub async fn run(ctx: &Context, ark: &AzureRootKey, inputs: &Inputs) -> Run {
    let spec = &ark.spec;
    let prev = ark.status.clone().unwrap_or_default();

    // 1-3. The key chain (read or create, then tag) and the principal chain (Antimatter's
    // application, then Graph) do not depend on each other: both start at once, so a first
    // reconcile waits for the longer one, not for their sum.
    let (mut run, principal) = tokio::join!(key_and_tag(ctx, ark, inputs), principal(ctx, ark, inputs));
    run.absorb(principal);

    // 4-5. The role needs the key and the principal; registration only needs the key and its tag.
    let (role, registered) = tokio::join!(role(ctx, ark, inputs, &prev, &run), register(ctx, ark, inputs, &prev, &run));
    run.absorb(role);
    run.absorb(registered);

    let Some(domain) = &inputs.domain else {
        // 5-7 without an API key: our own pre-check stands in for Antimatter's pairing check.
        let blocker = [Step::KeyReady, Step::TagApplied, Step::RoleAssigned].into_iter().find(|s| !run.ok(*s));
        let manual = Outcome::unknown(
            "ManualRegistrationRequired",
            match (&run.key, blocker) {
                (Some(key), None) => format!(
                    "No Antimatter API key configured: enter Key URL {} and Tenant ID {} in the Antimatter dashboard (Domain Configuration > Encryption Rotation), or set spec.antimatter.apiKeySecretRef.",
                    key.kid, spec.tenant_id
                ),
                (_, Some(step)) => {
                    format!("Pre-check failed at {}; fix it before registering the key with Antimatter.", step.as_str())
                }
                (None, None) => "The key is not known yet.".to_owned(),
            },
        );
        run.set(Step::Registered, manual.clone());
        run.set(Step::Paired, manual);
        run.set(
            Step::Active,
            Outcome::unknown("ManualRegistrationRequired", "Activation needs spec.antimatter.apiKeySecretRef."),
        );
        return run;
    };

    // 6. Paired: Antimatter's check needs the registration, the role and the tag in place.
    match [Step::Registered, Step::RoleAssigned, Step::TagApplied].into_iter().find(|s| !run.ok(*s)) {
        Some(step) => run.wait(Step::Paired, step),
        None => match pair(ctx, domain, &mut run).await {
            Ok(outcome) => run.set(Step::Paired, outcome),
            Err(f) => run.fail(Step::Paired, f),
        },
    }
    // 7. Active
    if !spec.antimatter.activate {
        run.set(
            Step::Active,
            Outcome::failed(
                "ActivationNotRequested",
                "spec.antimatter.activate is false; the key is registered but not made active.",
            ),
        );
    } else if run.ok(Step::Paired) {
        match ensure_active(ctx, ark, domain, &mut run).await {
            Ok(outcome) => run.set(Step::Active, outcome),
            Err(f) => run.fail(Step::Active, f),
        }
    } else {
        run.wait(Step::Active, Step::Paired);
    }
    run
}

/// Steps 1 and 2: the key, then its tag.
async fn key_and_tag(ctx: &Context, ark: &AzureRootKey, inputs: &Inputs) -> Run {
    let mut run = Run::default();
    match ensure_key(ctx, ark, inputs, &mut run).await {
        Ok(outcome) => run.set(Step::KeyReady, outcome),
        Err(f) => run.fail(Step::KeyReady, f),
    }
    match run.key.clone() {
        Some(key) if run.ok(Step::KeyReady) || tag_present(&key, &ark.spec.domain_id) => {
            match ensure_tag(ctx, ark, inputs, key, &mut run).await {
                Ok(outcome) => run.set(Step::TagApplied, outcome),
                Err(f) => run.fail(Step::TagApplied, f),
            }
        }
        _ => run.wait(Step::TagApplied, Step::KeyReady),
    }
    run
}

/// Step 3: the service principal.
async fn principal(ctx: &Context, ark: &AzureRootKey, inputs: &Inputs) -> Run {
    let mut run = Run::default();
    match ensure_principal(ctx, ark, inputs, &mut run).await {
        Ok(outcome) => run.set(Step::ServicePrincipalReady, outcome),
        Err(f) => run.fail(Step::ServicePrincipalReady, f),
    }
    run
}

/// Step 4: the role assignment, once the key and the principal are known.
async fn role(ctx: &Context, ark: &AzureRootKey, inputs: &Inputs, prev: &AzureRootKeyStatus, done: &Run) -> Run {
    let mut run = Run { principal: done.principal.clone(), ..Run::default() };
    match [Step::KeyReady, Step::ServicePrincipalReady].into_iter().find(|s| !done.ok(*s)) {
        Some(step) => run.wait(Step::RoleAssigned, step),
        None => match ensure_role(ctx, ark, inputs, prev.role_assignment_name.as_deref(), &mut run).await {
            Ok(outcome) => run.set(Step::RoleAssigned, outcome),
            Err(f) => run.fail(Step::RoleAssigned, f),
        },
    }
    run
}

/// Step 5: registration with Antimatter, once the key is usable and tagged (with an API key only).
async fn register(ctx: &Context, ark: &AzureRootKey, inputs: &Inputs, prev: &AzureRootKeyStatus, done: &Run) -> Run {
    let mut run = Run { key: done.key.clone(), ..Run::default() };
    let Some(domain) = &inputs.domain else {
        return run;
    };
    match [Step::KeyReady, Step::TagApplied].into_iter().find(|s| !done.ok(*s)) {
        Some(step) => run.wait(Step::Registered, step),
        None => match ensure_registered(ctx, ark, domain, prev, &mut run).await {
            Ok(outcome) => run.set(Step::Registered, outcome),
            Err(f) => run.fail(Step::Registered, f),
        },
    }
    run
}

/// Which steps must be `True` for `Ready`.
pub fn required_steps(ark: &AzureRootKey, has_api_key: bool) -> Vec<Step> {
    let mut steps = vec![Step::KeyReady, Step::TagApplied, Step::ServicePrincipalReady, Step::RoleAssigned];
    if has_api_key {
        steps.extend([Step::Registered, Step::Paired]);
        if ark.spec.antimatter.activate {
            steps.push(Step::Active);
        }
    }
    steps
}

async fn ensure_key(ctx: &Context, ark: &AzureRootKey, inputs: &Inputs, run: &mut Run) -> Result<Outcome, Failure> {
    let spec = &ark.spec;
    let name = &spec.key.name;
    let found =
        ctx.keys.get(&ctx.azure, &inputs.hsm, &inputs.identity, name).await.map_err(|e| classify(Area::Keys, &e))?;
    let key = match found {
        Some(key) => key,
        None if spec.key.create == CreatePolicy::Never => {
            return Ok(Outcome::failed(
                "KeyNotFound",
                format!(
                    "The HSM {} has no key named {name}, and spec.key.create is Never. Create the key or set create: IfMissing.",
                    inputs.hsm.url
                ),
            ));
        }
        None if spec.suspend => {
            return Ok(Outcome::failed(
                "KeyNotFound",
                format!("The HSM {} has no key named {name}; suspended, so not creating it.", inputs.hsm.url),
            ));
        }
        None => {
            let tags = BTreeMap::from([(spec.domain_id.clone(), "allow".to_owned())]);
            let key = ctx
                .keys
                .create(&ctx.azure, &inputs.hsm, &inputs.identity, name, spec.key.size, tags)
                .await
                .map_err(|e| classify(Area::Keys, &e))?;
            run.changes.push((
                "KeyCreated",
                format!("Created oct-HSM key {name} ({} bits) in {}", spec.key.size, inputs.hsm.url),
            ));
            key
        }
    };
    let verdict = usable(&key);
    run.key = Some(key);
    // Conditions describe the state, the same after the change as before it (no status churn);
    // what the operator changed is told by events.
    Ok(verdict.unwrap_or_else(|| {
        Outcome::ok("KeyUsable", format!("Key {name} is enabled, oct-HSM, and allows wrapKey and unwrapKey."))
    }))
}

async fn ensure_tag(
    ctx: &Context,
    ark: &AzureRootKey,
    inputs: &Inputs,
    key: KeyInfo,
    run: &mut Run,
) -> Result<Outcome, Failure> {
    let domain_id = &ark.spec.domain_id;
    let present = Outcome::ok("TagPresent", format!("The key carries {domain_id}=allow."));
    if tag_present(&key, domain_id) {
        return Ok(present);
    }
    if ark.spec.suspend {
        return Ok(Outcome::failed(
            "Suspended",
            format!("The tag {domain_id}=allow is missing; suspended, so not adding it."),
        ));
    }
    // Every other tag is sent back unchanged: the update replaces the whole set.
    let mut tags = key.tags.clone();
    tags.insert(domain_id.clone(), "allow".to_owned());
    let name = &ark.spec.key.name;
    let updated = ctx
        .keys
        .set_tags(&ctx.azure, &inputs.hsm, &inputs.identity, name, &key.version, tags)
        .await
        .map_err(|e| classify(Area::Keys, &e))?;
    run.changes.push(("TagAdded", format!("Tagged key {name} version {} with {domain_id}=allow", key.version)));
    run.key = Some(updated);
    Ok(present)
}

/// Why a key cannot serve as a root key, if it cannot. Reported, never "fixed" by replacing it.
fn usable(key: &KeyInfo) -> Option<Outcome> {
    if !key.kty.eq_ignore_ascii_case("oct-HSM") {
        return Some(Outcome::failed(
            "UnsupportedKeyType",
            format!(
                "The key is of type {}; Antimatter needs a symmetric oct-HSM key. Use another key name (the operator never replaces keys).",
                key.kty
            ),
        ));
    }
    if !key.enabled {
        return Some(Outcome::failed(
            "KeyDisabled",
            "The key is disabled. Enable it in the HSM (az keyvault key set-attributes --enabled true); the operator never changes it.",
        ));
    }
    let now = jiff::Timestamp::now();
    if key.expires.is_some_and(|t| t <= now) {
        return Some(Outcome::failed("KeyNotUsable", "The key has expired (attributes.exp is in the past)."));
    }
    if key.not_before.is_some_and(|t| t > now) {
        return Some(Outcome::failed("KeyNotUsable", "The key is not yet valid (attributes.nbf is in the future)."));
    }
    let missing: Vec<&str> =
        ["wrapKey", "unwrapKey"].into_iter().filter(|op| !key.ops.iter().any(|o| o == op)).collect();
    if !missing.is_empty() {
        return Some(Outcome::failed(
            "MissingKeyOperations",
            format!("The key does not allow {}; Antimatter wraps and unwraps with it.", missing.join(" and ")),
        ));
    }
    None
}

async fn ensure_principal(
    ctx: &Context,
    ark: &AzureRootKey,
    inputs: &Inputs,
    run: &mut Run,
) -> Result<Outcome, Failure> {
    let spec = &ark.spec.antimatter;
    if let Some(id) = &spec.service_principal_object_id {
        run.principal = Some(id.clone());
        return Ok(Outcome::ok(
            "ServicePrincipalGiven",
            format!("Using service principal {id} from spec.antimatter.servicePrincipalObjectId."),
        ));
    }
    let app_id = match (&spec.application_id, &inputs.domain) {
        (Some(app), _) => app.clone(),
        (None, Some(domain)) => match ctx.antimatter.known_application_id(domain) {
            Some(app) => app,
            // The first time for this domain: the Graph token is fetched while Antimatter answers.
            None => {
                tokio::join!(application_from_providers(ctx, domain), graph::warm_token(&ctx.azure, &inputs.identity))
                    .0?
            }
        },
        (None, None) => {
            return Ok(Outcome::failed(
                "InvalidSpec",
                "Set spec.antimatter.applicationId (Antimatter's Azure application ID), spec.antimatter.servicePrincipalObjectId, or an API key so the operator can ask Antimatter.",
            ));
        }
    };
    if ark.spec.suspend {
        return Ok(Outcome::unknown("Suspended", "Suspended: not looking up or creating the service principal."));
    }
    let (id, found) = ctx
        .graph
        .ensure_service_principal(&ctx.azure, &inputs.identity, &app_id)
        .await
        .map_err(|e| classify(Area::Graph, &e))?;
    run.principal = Some(id.clone());
    if found == Found::Created {
        run.changes
            .push(("ServicePrincipalCreated", format!("Created service principal {id} for application {app_id}")));
    }
    Ok(Outcome::ok(
        "ServicePrincipalFound",
        format!("Antimatter's application {app_id} has service principal {id} in the tenant."),
    ))
}

async fn application_from_providers(ctx: &Context, domain: &DomainTarget) -> Result<String, Failure> {
    ctx.antimatter.application_id(domain).await.map_err(|e| classify(Area::Antimatter, &e))?.ok_or_else(|| Failure {
        outcome: Outcome::failed(
            "InvalidSpec",
            "The Antimatter API did not name its Azure application; set spec.antimatter.applicationId.",
        ),
        retry_after: None,
    })
}

/// The deterministic assignment name: the same for retries and replicas of this cluster, different
/// for other clusters.
pub fn assignment_name(cluster_id: &str, hsm: &HsmEndpoint, scope: &str, role_id: &str, principal: &str) -> String {
    Uuid::new_v5(&ASSIGNMENT_NAMESPACE, format!("{cluster_id}|{}|{scope}|{role_id}|{principal}", hsm.url).as_bytes())
        .to_string()
}

async fn ensure_role(
    ctx: &Context,
    ark: &AzureRootKey,
    inputs: &Inputs,
    recorded: Option<&str>,
    run: &mut Run,
) -> Result<Outcome, Failure> {
    let principal = run.principal.clone().unwrap_or_default();
    let scope = format!("/keys/{}", ark.spec.key.name);
    let (azure, hsm, id) = (&ctx.azure, &inputs.hsm, &inputs.identity);
    let ours = assignment_name(&ctx.cluster_id, hsm, &scope, CRYPTO_USER_ROLE_DEFINITION, &principal);
    let matches = |p: &RoleAssignmentProperties| p.principal_id == principal && is_crypto_user(&p.role_definition_id);

    // The assignment recorded in status (ours or one made by hand) is checked with one read. With none
    // recorded, the PUT below is the check: under our deterministic name it is idempotent.
    let name = recorded.unwrap_or(&ours).to_owned();
    let read = if recorded.is_some() || ark.spec.suspend {
        ctx.rbac.get(azure, hsm, id, &scope, &name).await.map_err(|e| classify(Area::Rbac, &e))?
    } else {
        None
    };
    if let Some(a) = read
        && matches(&a.properties)
    {
        run.assignment = Some(a.name);
        return Ok(Outcome::ok("RoleAssigned", format!("{principal} holds {CRYPTO_USER_ROLE} at {scope}.")));
    }
    if ark.spec.suspend {
        return Ok(Outcome::failed(
            "Suspended",
            format!("{principal} does not hold {CRYPTO_USER_ROLE} at {scope}; suspended, so not assigning it."),
        ));
    }
    let properties = RoleAssignmentProperties {
        scope: None,
        role_definition_id: CRYPTO_USER_ROLE_DEFINITION.to_owned(),
        principal_id: principal.clone(),
    };
    match ctx.rbac.put(azure, hsm, id, &scope, &ours, &properties).await {
        Ok(a) => {
            run.changes
                .push(("RoleAssigned", format!("Assigned {CRYPTO_USER_ROLE} at {scope} to {principal} ({})", a.name)));
            run.assignment = Some(a.name);
            Ok(Outcome::ok("RoleAssigned", format!("{principal} holds {CRYPTO_USER_ROLE} at {scope}.")))
        }
        // Someone already assigned the same role at the same scope under another name: find it.
        Err(e) if e.code() == Some("MatchingRoleAssignmentExists") || e.status() == Some(409) => {
            let existing =
                ctx.rbac.list_at_scope(azure, hsm, id, &scope).await.map_err(|e| classify(Area::Rbac, &e))?;
            let found =
                existing.into_iter().find(|a| matches(&a.properties)).ok_or_else(|| classify(Area::Rbac, &e))?;
            run.assignment = Some(found.name.clone());
            Ok(Outcome::ok("RoleAssigned", format!("{principal} holds {CRYPTO_USER_ROLE} at {scope}.")))
        }
        Err(e) => Err(classify(Area::Rbac, &e)),
    }
}

async fn ensure_registered(
    ctx: &Context,
    ark: &AzureRootKey,
    domain: &DomainTarget,
    prev: &AzureRootKeyStatus,
    run: &mut Run,
) -> Result<Outcome, Failure> {
    let Some(key) = run.key.clone() else {
        return Ok(Outcome::unknown("WaitingKeyReady", "waiting for KeyReady"));
    };
    // Registered for this exact key URL before: trust the status; the pairing check confirms it.
    if let (Some(id), Some(url)) = (&prev.root_encryption_key_id, &prev.key_url)
        && *url == key.kid
    {
        run.rek_id = Some(id.clone());
        return Ok(Outcome::ok("Registered", format!("Registered with Antimatter as {id}.")));
    }
    if ark.spec.suspend {
        let keys = ctx.antimatter.list_keys(domain).await.map_err(|e| classify(Area::Antimatter, &e))?;
        return Ok(match keys.iter().find(|k| k.resource_path == key.kid) {
            Some(existing) => {
                run.rek_id = Some(existing.rek_id.clone());
                Outcome::ok("Registered", format!("Registered with Antimatter as {}.", existing.rek_id))
            }
            None => Outcome::failed(
                "Suspended",
                "The key URL is not registered with Antimatter; suspended, so not registering it.",
            ),
        });
    }
    let description = format!(
        "AzureRootKey {}/{}",
        ark.metadata.namespace.as_deref().unwrap_or_default(),
        ark.metadata.name.as_deref().unwrap_or_default()
    );
    // Add first; Antimatter refuses a key URL it already has (409), and only then is the (domain-wide)
    // list read to find it, e.g. after a restart between registering and recording.
    let id = match ctx.antimatter.add_key(domain, &description, &ark.spec.tenant_id, &key.kid).await {
        Ok(id) => id,
        Err(e) if e.status() == Some(409) => {
            let keys = ctx.antimatter.list_keys(domain).await.map_err(|e| classify(Area::Antimatter, &e))?;
            let existing =
                keys.iter().find(|k| k.resource_path == key.kid).ok_or_else(|| classify(Area::Antimatter, &e))?;
            run.rek_id = Some(existing.rek_id.clone());
            return Ok(Outcome::ok("Registered", format!("Registered with Antimatter as {}.", existing.rek_id)));
        }
        Err(e) => return Err(classify(Area::Antimatter, &e)),
    };
    run.changes.push(("Registered", format!("Registered key URL {} with Antimatter as {id}", key.kid)));
    run.rek_id = Some(id.clone());
    Ok(Outcome::ok("Registered", format!("Registered with Antimatter as {id}.")))
}

async fn pair(ctx: &Context, domain: &DomainTarget, run: &mut Run) -> Result<Outcome, Failure> {
    let id = run.rek_id.clone().unwrap_or_default();
    let result = match ctx.antimatter.test_key(domain, &id).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            // The registration vanished (deleted in Antimatter): register again on the next pass.
            run.rek_id = None;
            run.retry_after = Some(Duration::from_secs(1));
            return Err(Failure {
                outcome: Outcome::failed(
                    "RegistrationMissing",
                    format!("Antimatter no longer knows root key {id}; registering again."),
                ),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        Err(e) => return Err(classify(Area::Antimatter, &e)),
    };
    let (state, reason) = match result.status.as_str() {
        "HEALTHY" => (PairingState::Healthy, "PairingHealthy"),
        "MISCONFIGURED" => (PairingState::Misconfigured, "PairingMisconfigured"),
        _ => (PairingState::Unreachable, "PairingUnreachable"),
    };
    run.pairing = Some(PairingStatus {
        status: state,
        message: Some(result.status_message.clone()).filter(|m| !m.is_empty()),
        latency_ms: result.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0).map(|ms| ms.round() as i64),
        last_check_time: Some(Time(jiff::Timestamp::now())),
    });
    // The latency stays out of the message (it is in .status.pairing), so a steady check writes nothing.
    Ok(match state {
        PairingState::Healthy => Outcome::ok(reason, "Antimatter wrapped and unwrapped with the key."),
        _ => {
            Outcome::failed(reason, format!("Antimatter's pairing check: {} {}", result.status, result.status_message))
        }
    })
}

async fn ensure_active(
    ctx: &Context,
    ark: &AzureRootKey,
    domain: &DomainTarget,
    run: &mut Run,
) -> Result<Outcome, Failure> {
    let id = run.rek_id.clone().unwrap_or_default();
    let active = ctx.antimatter.active_key(domain).await.map_err(|e| classify(Area::Antimatter, &e))?;
    if active.as_ref().is_some_and(|a| same_rek(&a.rek_id, &id)) {
        return Ok(Outcome::ok("KeyActive", format!("{id} is the domain's active root encryption key.")));
    }
    if ark.spec.suspend {
        return Ok(Outcome::failed("Suspended", "The key is not active; suspended, so not activating it."));
    }
    let mut has_more = ctx
        .antimatter
        .set_active(domain, &id, ark.spec.antimatter.rotate_batch)
        .await
        .map_err(|e| classify(Area::Antimatter, &e))?;
    run.changes.push(("Activated", format!("Made {id} the domain's active root encryption key")));
    // Antimatter re-wraps the domain's data keys under the new root key and asks to be called again
    // while it has more; a bounded number of calls per reconcile keeps one object from hogging a worker.
    for _ in 0..ROTATE_CALLS_PER_RECONCILE {
        if !has_more {
            break;
        }
        has_more = ctx.antimatter.rotate(domain).await.map_err(|e| classify(Area::Antimatter, &e))?;
    }
    if has_more {
        run.retry_after = Some(Duration::from_secs(1));
        return Ok(Outcome::unknown("Rotating", format!("{id} is active; Antimatter is still re-wrapping data keys.")));
    }
    Ok(Outcome::ok("KeyActive", format!("{id} is the domain's active root encryption key.")))
}

const ROTATE_CALLS_PER_RECONCILE: usize = 20;

/// Root key IDs may carry a `dm-…::` or `name::` prefix.
pub fn same_rek(a: &str, b: &str) -> bool {
    let bare = |s: &str| s.rsplit("::").next().unwrap_or(s).to_ascii_lowercase();
    bare(a) == bare(b)
}
