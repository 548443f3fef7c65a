//! End to end: the operator process against the real API server and the sandbox.

mod support;

use std::{collections::BTreeMap, time::Duration};

use kube::ResourceExt;
use rootkey_operator::{
    api::{AzureRootKey, ConditionStatus, PairingState},
    azure::rbac::CRYPTO_USER_ROLE_ID as CRYPTO_USER,
};
use rootkey_sandbox::KeyPatch;
use serde_json::json;
use support::env::{
    ANTIMATTER_APP, API_KEY, DOMAIN, Env, HSM, NO_ROLES_CLIENT, NO_ROLES_SECRET, OperatorOptions, SECRETS, TENANT,
    condition,
};

/// Role assignments of "Managed HSM Crypto User" at the key's scope.
fn crypto_user_assignments(env: &Env, key: &str) -> Vec<rootkey_sandbox::RoleAssignment> {
    env.sandbox
        .role_assignments(HSM)
        .into_iter()
        .filter(|a| a.scope == format!("/keys/{key}") && a.role_definition.ends_with(CRYPTO_USER))
        .collect()
}

fn latest_tags(env: &Env, key: &str) -> BTreeMap<String, String> {
    env.sandbox.key(HSM, key).and_then(|k| k.latest().map(|v| v.tags.clone())).unwrap_or_default()
}

/// Keys registered through the delegated Azure provider (the domain also has Antimatter's default key).
fn registrations(env: &Env) -> Vec<rootkey_sandbox::Registration> {
    env.sandbox.registrations(DOMAIN).into_iter().filter(|r| r.source == "azure_am").collect()
}

/// Counts remote calls that change something.
fn writes(env: &Env) -> u64 {
    [
        ("hsm", "key.create"),
        ("hsm", "key.update"),
        ("hsm", "rbac.assignment.put"),
        ("hsm", "rbac.assignment.delete"),
        ("graph", "sp.create"),
        ("antimatter", "rek.add"),
        ("antimatter", "rek.delete"),
        ("antimatter", "active.set"),
    ]
    .iter()
    .map(|(s, o)| env.sandbox.count(s, o))
    .sum()
}

#[tokio::test]
async fn new_key_reaches_ready_with_every_status_field_and_a_steady_check_writes_only_its_time() {
    let env = Env::start("e2e-happy").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("new-root", json!({"antimatter": {"activate": true}}))).await;
    let obj = env.wait_ready("root").await;
    let status = obj.status.clone().expect("status");
    // Activation re-wraps the domain's data keys: every rotate call carried the body the API requires.
    assert_eq!(env.sandbox.count_status("antimatter", "rotate", 400), 0, "rotate refused");
    assert_eq!(env.sandbox.count_status("antimatter", "rotate", 200), 2, "both rotation batches");

    // Status tells the truth, and matches the sandbox.
    let key = env.sandbox.key(HSM, "new-root").expect("key created");
    let version = key.latest().expect("version");
    assert_eq!(version.kty, "oct-HSM");
    assert_eq!(version.key_size, Some(256));
    assert_eq!(version.key_ops, vec!["wrapKey", "unwrapKey"]);
    assert_eq!(version.tags.get(DOMAIN).map(String::as_str), Some("allow"));
    let kid = format!("{}/keys/new-root/{}", env.hsm_url(), version.version);
    assert_eq!(status.key_url.as_deref(), Some(kid.as_str()));
    assert_eq!(status.key_version.as_deref(), Some(version.version.as_str()));
    assert_eq!(status.tenant_id.as_deref(), Some(TENANT));
    assert_eq!(status.observed_generation, obj.metadata.generation);
    let sp = env
        .sandbox
        .service_principals(TENANT)
        .into_iter()
        .find(|sp| sp.app_id == ANTIMATTER_APP)
        .expect("principal created");
    assert_eq!(status.service_principal_object_id.as_deref(), Some(sp.id.as_str()));
    let assignments = crypto_user_assignments(&env, "new-root");
    assert_eq!(assignments.len(), 1, "exactly one role assignment");
    assert_eq!(assignments[0].principal_id, sp.id);
    assert_eq!(status.role_assignment_name.as_deref(), Some(assignments[0].name.as_str()));
    let registrations = registrations(&env);
    assert_eq!(registrations.len(), 1, "one registration: {registrations:?}");
    assert_eq!(registrations[0].resource_path, kid);
    assert_eq!(registrations[0].tenant_id, TENANT);
    assert_eq!(status.root_encryption_key_id.as_deref(), Some(registrations[0].rek_id.as_str()));
    assert_eq!(env.sandbox.active_key(DOMAIN).as_deref(), Some(registrations[0].rek_id.as_str()));
    let pairing = status.pairing.clone().expect("pairing");
    assert_eq!(pairing.status, PairingState::Healthy);
    assert!(pairing.latency_ms.is_some() && pairing.last_check_time.is_some() && pairing.first_seen_time.is_some());
    assert_eq!(pairing.last_healthy_time, pairing.last_check_time, "this check was healthy");
    for kind in
        ["KeyReady", "TagApplied", "ServicePrincipalReady", "RoleAssigned", "Registered", "Paired", "Active", "Ready"]
    {
        let c = condition(&obj, kind).unwrap_or_else(|| panic!("{kind} condition"));
        assert_eq!(c.status, ConditionStatus::True, "{kind}: {}", c.message);
        assert_eq!(c.observed_generation, obj.metadata.generation);
    }

    // One Normal event for the first reconcile, naming every change it made (events follow the status).
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let mut normal = Vec::new();
    for _ in 0..50 {
        normal = events.list(&Default::default()).await.expect("events").items;
        normal.retain(|e| e.type_.as_deref() == Some("Normal"));
        if !normal.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(normal.len(), 1, "{normal:?}");
    assert_eq!(normal[0].reason.as_deref(), Some("Changed"));
    let note = normal[0].note.clone().unwrap_or_default();
    for change in ["KeyCreated", "ServicePrincipalCreated", "RoleAssigned", "Registered", "Activated"] {
        assert!(note.contains(&format!("{change}: ")), "{change} in {note}");
    }

    // Steady state: a reconcile with nothing changed writes nothing anywhere but the time of its
    // check into the status (one status write).
    // A check within the same second as the last one would leave lastCheckTime as it was.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let settled = env.api.get("root").await.expect("get");
    let before = settled.metadata.resource_version.clone();
    env.sandbox.reset_counters();
    let tokens_before = env.logs().matches("oauth2/v2.0/token' with").count();
    assert!(tokens_before >= 2, "token requests are visible in the debug log");
    env.poke("root").await;
    let poked = env.api.get("root").await.expect("get").metadata.resource_version;
    let mut reads = 0;
    for _ in 0..50 {
        reads = env.sandbox.count("antimatter", "rek.test");
        if reads > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reads, 1, "one pairing check per check");
    assert_eq!(writes(&env), 0, "no remote writes in steady state: {:?}", env.sandbox.counters());
    assert_eq!(env.sandbox.count("graph", "sp.get") + env.sandbox.count("graph", "sp.create"), 0, "no Graph calls");
    // Antimatter's pairing check reads the key itself (one key.get per check); the rest are ours.
    let hsm_reads = env.sandbox.count("hsm", "key.get") + env.sandbox.count("hsm", "rbac.assignment.get") - reads;
    assert!(hsm_reads <= 2, "at most 2 HSM reads by the operator, saw {hsm_reads}");
    // Antimatter's pairing check gets its own token in the sandbox; the operator's come from its log.
    let token_requests = |logs: String| logs.matches("oauth2/v2.0/token' with").count();
    assert_eq!(token_requests(env.logs()), tokens_before, "the operator's tokens are cached");
    assert_ne!(before, poked);
    let checked = env
        .wait_for("root", Duration::from_secs(10), "lastCheckTime advanced", |o| o.metadata.resource_version != poked)
        .await;
    let pairing_of = |o: &rootkey_operator::api::AzureRootKey| o.status.as_ref().and_then(|s| s.pairing.clone());
    let (old, new) = (pairing_of(&settled).expect("pairing"), pairing_of(&checked).expect("pairing"));
    assert!(new.last_check_time > old.last_check_time, "lastCheckTime is the latest check: {old:?} → {new:?}");
    assert_eq!(new.last_healthy_time, new.last_check_time);
    assert_eq!(new.first_seen_time, old.first_seen_time, "the same result keeps its first-seen time");
    // Nothing else in the status changed: the one write is the check's time.
    let without_check_times = |o: &rootkey_operator::api::AzureRootKey| {
        let mut status = o.status.clone().expect("status");
        if let Some(p) = status.pairing.as_mut() {
            (p.last_check_time, p.last_healthy_time, p.latency_ms) = (None, None, None);
        }
        status
    };
    assert_eq!(without_check_times(&settled), without_check_times(&checked));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = env.api.get("root").await.expect("get").metadata.resource_version;
    assert_eq!(checked.metadata.resource_version, after, "one status write per check, no more");
}

#[tokio::test]
async fn existing_key_keeps_foreign_tags_and_a_new_version_is_registered() {
    let env = Env::start("e2e-existing").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("existing-key", json!({"key": {"create": "Never"}}))).await;
    let first = env.wait_ready("root").await;
    assert_eq!(condition(&first, "KeyReady").map(|c| &*c.reason), Some("KeyUsable"));
    let tags = latest_tags(&env, "existing-key");
    assert_eq!(tags.get("owner").map(String::as_str), Some("platform"), "foreign tag kept");
    assert_eq!(tags.get(DOMAIN).map(String::as_str), Some("allow"));
    assert_eq!(env.sandbox.count("hsm", "key.create"), 0, "existing key not recreated");
    assert_eq!(condition(&first, "Active").map(|c| &*c.reason), Some("ActivationNotRequested"));
    let ours = first.status.as_ref().and_then(|s| s.root_encryption_key_id.clone()).expect("registered");
    assert_ne!(env.sandbox.active_key(DOMAIN), Some(ours), "not activated");

    // A new key version (rotation in Azure) is tagged and registered under its new URL.
    let version = env.sandbox.add_key_version(HSM, "existing-key").expect("new version");
    env.poke("root").await;
    let rotated = env
        .wait_for("root", Duration::from_secs(30), "new version registered", |o| {
            o.status.as_ref().and_then(|s| s.key_version.as_deref()) == Some(version.as_str())
                && condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
        })
        .await;
    let kid = rotated.status.and_then(|s| s.key_url).expect("key url");
    assert!(registrations(&env).iter().any(|r| r.resource_path == kid));
    assert_eq!(latest_tags(&env, "existing-key").get("owner").map(String::as_str), Some("platform"));
    // `Active=False ActivationNotRequested` is what `activate: false` asks for, not a failure: no
    // Warning for it (the first reconcile's events were written seconds ago).
    assert_eq!(env.warnings("root").await, Vec::<(String, String)>::new());
}

#[tokio::test]
async fn unusable_keys_are_reported_and_never_replaced() {
    let env = Env::start("e2e-unusable").await;
    env.api_key_secret("api-key", API_KEY).await;
    // Missing with create: Never.
    env.apply("missing", env.spec("no-such-key", json!({"key": {"create": "Never"}}))).await;
    let o = env.wait_condition("missing", "KeyReady", ConditionStatus::False, Some("KeyNotFound")).await;
    assert_eq!(condition(&o, "Ready").map(|c| &*c.reason), Some("KeyNotFound"));
    assert_eq!(condition(&o, "TagApplied").map(|c| &*c.reason), Some("WaitingKeyReady"));
    // RSA.
    env.sandbox
        .create_key(
            HSM,
            serde_json::from_value(json!({"name": "rsa-key", "kty": "RSA-HSM", "key_size": 2048})).expect("spec"),
        )
        .expect("rsa key");
    env.apply("rsa", env.spec("rsa-key", json!({}))).await;
    let o = env.wait_condition("rsa", "KeyReady", ConditionStatus::False, Some("UnsupportedKeyType")).await;
    assert!(condition(&o, "KeyReady").is_some_and(|c| c.message.contains("RSA-HSM")));
    // Disabled.
    env.sandbox
        .create_key(
            HSM,
            serde_json::from_value(json!({"name": "off-key", "kty": "oct-HSM", "key_size": 256, "enabled": false}))
                .expect("spec"),
        )
        .expect("disabled key");
    env.apply("off", env.spec("off-key", json!({}))).await;
    env.wait_condition("off", "KeyReady", ConditionStatus::False, Some("KeyDisabled")).await;
    // Expired.
    env.sandbox
        .create_key(
            HSM,
            serde_json::from_value(
                json!({"name": "old-key", "kty": "oct-HSM", "key_size": 256, "enabled": true, "exp": 1_000}),
            )
            .expect("spec"),
        )
        .expect("expired key");
    env.apply("old", env.spec("old-key", json!({}))).await;
    env.wait_condition("old", "KeyReady", ConditionStatus::False, Some("KeyNotUsable")).await;
    // Wrong operations.
    env.sandbox
        .create_key(HSM, serde_json::from_value(json!({"name": "enc-key", "kty": "oct-HSM", "key_size": 256, "enabled": true, "key_ops": ["encrypt", "decrypt"]})).expect("spec"))
        .expect("enc key");
    env.apply("enc", env.spec("enc-key", json!({}))).await;
    env.wait_condition("enc", "KeyReady", ConditionStatus::False, Some("MissingKeyOperations")).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(env.sandbox.key(HSM, "no-such-key").is_none(), "create: Never creates nothing");
    for key in ["rsa-key", "off-key", "old-key", "enc-key"] {
        let k = env.sandbox.key(HSM, key).expect("still there");
        assert_eq!(k.versions.len(), 1, "{key} not replaced");
        assert!(!k.latest().is_some_and(|v| v.tags.contains_key(DOMAIN)), "{key} not tagged");
        assert!(crypto_user_assignments(&env, key).is_empty(), "{key}: no role assigned");
    }
    assert!(registrations(&env).is_empty());
}

#[tokio::test]
async fn a_given_principal_is_confirmed_by_graph_and_a_hand_made_assignment_is_adopted() {
    let env = Env::start("e2e-principal").await;
    // Antimatter's principal exists already and holds the role by hand, under a name we did not choose.
    let principal = env.create_antimatter_principal().await;
    let by_hand = env
        .sandbox
        .add_role_assignment(HSM, "Managed HSM Crypto User", "/keys/hand-key", &principal)
        .expect("assignment");
    // Lists come one assignment per page: the adoption must follow the HSM's nextLinks.
    env.sandbox.patch_settings(rootkey_sandbox::SettingsPatch { page_size: Some(1), ..Default::default() });
    env.sandbox.reset_counters();
    env.sandbox
        .create_key(
            HSM,
            serde_json::from_value(json!({"name": "hand-key", "kty": "oct-HSM", "key_size": 256, "enabled": true}))
                .expect("spec"),
        )
        .expect("key");
    env.apply(
        "root",
        env.spec("hand-key", json!({"antimatter": {"servicePrincipalObjectId": principal, "apiKeySecretRef": null}})),
    )
    .await;
    let o = env.wait_ready("root").await;
    assert_eq!(condition(&o, "ServicePrincipalReady").map(|c| &*c.reason), Some("ServicePrincipalGiven"));
    // One read to confirm whose principal it is; nothing looked up by application or created.
    assert_eq!(env.sandbox.count("graph", "sp.get"), 1, "one Graph read");
    assert_eq!(env.sandbox.count("graph", "sp.create"), 0, "no Graph create");
    let assignments = crypto_user_assignments(&env, "hand-key");
    assert_eq!(assignments.len(), 1, "no second assignment: {assignments:?}");
    assert_eq!(o.status.as_ref().and_then(|s| s.role_assignment_name.as_deref()), Some(by_hand.as_str()));
    assert!(env.sandbox.count("hsm", "rbac.assignment.list") >= 2, "the list was read page by page");
    // Without an API key: the Azure side is Ready and the dashboard values are in the message.
    let paired = condition(&o, "Paired").expect("Paired");
    assert_eq!((paired.status, &*paired.reason), (ConditionStatus::Unknown, "ManualRegistrationRequired"));
    let kid = o.status.as_ref().and_then(|s| s.key_url.clone()).expect("key url");
    assert!(paired.message.contains(&kid) && paired.message.contains(TENANT), "{}", paired.message);
    assert!(registrations(&env).is_empty());
}

/// Someone else (another cluster, an admin) creates Antimatter's principal between the operator's
/// read and its create: Graph answers 409 and the operator adopts that principal.
#[tokio::test]
async fn a_principal_created_by_someone_else_meanwhile_is_read_back() {
    let env = Env::start("e2e-sp-race").await;
    env.api_key_secret("api-key", API_KEY).await;
    // The operator's create is held 3 s in the sandbox; the principal is created meanwhile.
    env.sandbox.add_fault(support::checks::fault(
        "graph",
        Some("sp.create"),
        rootkey_sandbox::FaultAction::Latency { ms: 3000 },
        Some(1),
    ));
    env.apply("root", env.spec("race-key", json!({}))).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !env.sandbox.faults().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the operator never tried to create the principal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let theirs = env.create_antimatter_principal().await;

    let o = env.wait_ready("root").await;
    assert_eq!(env.sandbox.count_status("graph", "sp.create", 409), 1, "the operator's create met the conflict");
    // Read back at once: no failed reconcile (each new failure is a Warning event) before Ready.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let warnings: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() != Some("ActivationNotRequested"))
        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(o.status.as_ref().and_then(|s| s.service_principal_object_id.as_deref()), Some(theirs.as_str()));
    let principals = env.sandbox.service_principals(TENANT);
    assert_eq!(principals.iter().filter(|p| p.app_id == ANTIMATTER_APP).count(), 1, "{principals:?}");
    let assignments = crypto_user_assignments(&env, "race-key");
    assert_eq!(assignments.len(), 1, "{assignments:?}");
    assert_eq!(assignments[0].principal_id, theirs);
}

#[tokio::test]
async fn missing_rights_wrong_credentials_and_policy_are_clear_conditions() {
    let env = Env::start_with(
        "e2e-denied",
        OperatorOptions { policy: Some("rules:\n- namespaces: [nowhere]\n  hsms: ['*']\n"), ..Default::default() },
    )
    .await;
    env.api_key_secret("api-key", API_KEY).await;
    // Outside the tenancy policy, with no credentials of its own: refused before any remote call.
    env.apply("policy", env.spec("p-key", json!({}))).await;
    let o = env.wait_condition("policy", "KeyReady", ConditionStatus::False, Some("PolicyDenied")).await;
    assert!(condition(&o, "KeyReady").is_some_and(|c| c.message.contains("azureCredentialsSecretRef")));
    assert_eq!(env.sandbox.counters().iter().map(|c| c.count).sum::<u64>(), 0, "no remote call at all");

    // Its own identity without HSM roles: Forbidden, naming the permission.
    env.secret("weak", json!({"clientId": NO_ROLES_CLIENT, "clientSecret": NO_ROLES_SECRET})).await;
    env.apply("weak", env.spec("w-key", json!({"azureCredentialsSecretRef": {"name": "weak"}}))).await;
    let o = env.wait_condition("weak", "KeyReady", ConditionStatus::False, Some("Forbidden")).await;
    assert!(condition(&o, "KeyReady").is_some_and(|c| c.message.contains("Managed HSM Crypto User")), "{o:?}");

    // A wrong client secret.
    env.secret("wrong", json!({"clientId": NO_ROLES_CLIENT, "clientSecret": "not-the-secret"})).await;
    env.apply("wrong", env.spec("x-key", json!({"azureCredentialsSecretRef": {"name": "wrong"}}))).await;
    env.wait_condition("wrong", "KeyReady", ConditionStatus::False, Some("InvalidCredentials")).await;

    // A missing Secret.
    env.apply("nosecret", env.spec("y-key", json!({"azureCredentialsSecretRef": {"name": "absent"}}))).await;
    env.wait_condition("nosecret", "KeyReady", ConditionStatus::False, Some("SecretNotFound")).await;
    assert!(env.sandbox.key(HSM, "w-key").is_none() && env.sandbox.key(HSM, "p-key").is_none());
}

#[tokio::test]
async fn wrong_api_key_and_foreign_urls_are_refused() {
    let env = Env::start("e2e-refused").await;
    env.api_key_secret("api-key", "not-the-api-key").await;
    env.apply("badkey", env.spec("b-key", json!({}))).await;
    // Without spec.antimatter.applicationId the operator asks Antimatter for it: refused first there.
    let o = env.wait_condition("badkey", "Ready", ConditionStatus::False, Some("InvalidCredentials")).await;
    assert!(condition(&o, "Ready").is_some_and(|c| c.message.contains("apiKeySecretRef")));
    // The fixed API key is picked up on the retry: a refused key is read again from its Secret
    // (Secrets are not watched).
    env.api_key_secret("api-key", API_KEY).await;
    env.wait_ready("badkey").await;

    // An HSM outside the configured cloud's domains: no request (so no token) ever goes there.
    env.apply(
        "foreign",
        env.spec("f-key", json!({"hsm": {"name": null, "url": "https://contoso-hsm.managedhsm.azure.net"}})),
    )
    .await;
    let o = env.wait_condition("foreign", "KeyReady", ConditionStatus::False, Some("InvalidSpec")).await;
    assert!(condition(&o, "KeyReady").is_some_and(|c| c.message.contains("no token is sent")));
    env.apply("ip", env.spec("i-key", json!({"hsm": {"name": null, "url": "https://127.0.0.1"}}))).await;
    env.wait_condition("ip", "KeyReady", ConditionStatus::False, Some("InvalidSpec")).await;
    let logs = env.logs();
    assert!(logs.contains("performing request"), "requests are logged at debug level");
    assert!(
        !logs.contains("managedhsm.azure.net/") && !logs.contains("https://127.0.0.1/"),
        "a request went to a foreign host"
    );
}

#[tokio::test]
async fn drift_is_repaired() {
    let env = Env::start("e2e-drift").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("drift-key", json!({}))).await;
    let o = env.wait_ready("root").await;
    let assignment = o.status.and_then(|s| s.role_assignment_name).expect("assignment");

    // Someone removes our tag (keeping theirs) and deletes the role assignment.
    env.sandbox
        .set_key_tags(HSM, "drift-key", BTreeMap::from([("team".to_owned(), "payments".to_owned())]))
        .expect("tags");
    assert!(env.sandbox.delete_role_assignment(HSM, &assignment).expect("delete"));
    env.poke("root").await;
    env.wait_for("root", Duration::from_secs(30), "repaired", |_| {
        latest_tags(&env, "drift-key").get(DOMAIN).is_some_and(|v| v == "allow")
            && crypto_user_assignments(&env, "drift-key").len() == 1
    })
    .await;
    assert_eq!(latest_tags(&env, "drift-key").get("team").map(String::as_str), Some("payments"));
    env.wait_ready("root").await;

    // Someone disables the key: reported, not "fixed".
    env.sandbox.patch_key(HSM, "drift-key", KeyPatch { enabled: Some(false), ..Default::default() }).expect("disable");
    env.poke("root").await;
    env.wait_condition("root", "Ready", ConditionStatus::False, Some("KeyDisabled")).await;
    assert!(!env.sandbox.key(HSM, "drift-key").and_then(|k| k.latest().map(|v| v.enabled)).unwrap_or(true));
}

fn has_cleanup_finalizer(o: &AzureRootKey) -> bool {
    o.finalizers().iter().any(|f| f == "antimatter.io/cleanup")
}

#[tokio::test]
async fn suspend_changes_nothing_and_deletion_never_hangs() {
    let env = Env::start("e2e-suspend").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("sleepy", env.spec("s-key", json!({"suspend": true}))).await;
    env.wait_condition("sleepy", "KeyReady", ConditionStatus::False, Some("KeyNotFound")).await;
    assert!(env.sandbox.key(HSM, "s-key").is_none(), "suspended: nothing created");
    assert_eq!(writes(&env), 0);
    env.delete("sleepy").await;
    env.wait_gone("sleepy", Duration::from_secs(20)).await;

    // Only Revoke needs the finalizer; turning Retain drops it from the live object.
    env.apply("kept", env.spec("kept-key", json!({"deletionPolicy": "Revoke"}))).await;
    env.wait_for("kept", Duration::from_secs(30), "finalizer added", has_cleanup_finalizer).await;
    env.apply("kept", env.spec("kept-key", json!({}))).await;
    env.wait_for("kept", Duration::from_secs(30), "finalizer dropped", |o| !has_cleanup_finalizer(o)).await;
    env.wait_ready("kept").await;
    // Retain: deleting leaves Azure and Antimatter as they are.
    env.delete("kept").await;
    env.wait_gone("kept", Duration::from_secs(20)).await;
    assert_eq!(crypto_user_assignments(&env, "kept-key").len(), 1);
    assert!(latest_tags(&env, "kept-key").contains_key(DOMAIN));
    assert_eq!(registrations(&env).len(), 1);
}

#[tokio::test]
async fn revoke_removes_access_but_never_the_key_and_is_refused_for_the_active_key() {
    let env = Env::start("e2e-revoke").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.sandbox
        .create_key(HSM, serde_json::from_value(json!({"name": "rv-key", "kty": "oct-HSM", "key_size": 256, "enabled": true, "tags": {"owner": "platform"}})).expect("spec"))
        .expect("key");
    env.apply("gone", env.spec("rv-key", json!({"deletionPolicy": "Revoke"}))).await;
    env.wait_ready("gone").await;
    env.delete("gone").await;
    env.wait_gone("gone", Duration::from_secs(30)).await;
    assert!(crypto_user_assignments(&env, "rv-key").is_empty(), "assignment removed");
    let tags = latest_tags(&env, "rv-key");
    assert!(!tags.contains_key(DOMAIN), "our tag removed");
    assert_eq!(tags.get("owner").map(String::as_str), Some("platform"), "foreign tag kept");
    assert!(registrations(&env).is_empty(), "registration removed");
    assert!(env.sandbox.key(HSM, "rv-key").is_some_and(|k| k.latest().is_some_and(|v| v.enabled)), "key kept, enabled");

    // The active key cannot be revoked; switching to Retain releases the object at once.
    env.apply("active", env.spec("act-key", json!({"deletionPolicy": "Revoke", "antimatter": {"activate": true}})))
        .await;
    env.wait_ready("active").await;
    env.delete("active").await;
    env.wait_condition("active", "Deleting", ConditionStatus::False, Some("KeyIsActive")).await;
    assert_eq!(crypto_user_assignments(&env, "act-key").len(), 1, "nothing revoked while active");
    env.apply("active", env.spec("act-key", json!({"deletionPolicy": "Retain", "antimatter": {"activate": true}})))
        .await;
    env.wait_gone("active", Duration::from_secs(20)).await;
    assert_eq!(crypto_user_assignments(&env, "act-key").len(), 1);
}

#[tokio::test]
async fn two_replicas_with_leader_election_make_no_duplicates() {
    let mut env = Env::without_operator("e2e-leader").await;
    env.spawn_operator(&OperatorOptions { leader_elect: true, ..Default::default() });
    env.spawn_operator(&OperatorOptions { leader_elect: true, ..Default::default() });
    env.api_key_secret("api-key", API_KEY).await;
    for i in 0..5 {
        env.apply(&format!("k{i}"), env.spec(&format!("le-key-{i}"), json!({}))).await;
    }
    for i in 0..5 {
        env.wait_ready(&format!("k{i}")).await;
    }
    for i in 0..5 {
        assert_eq!(crypto_user_assignments(&env, &format!("le-key-{i}")).len(), 1);
    }
    assert_eq!(env.sandbox.count("hsm", "key.create"), 5, "each key created once");
    assert_eq!(registrations(&env).len(), 5);
    let logs = env.logs();
    assert_eq!(logs.matches("\"leading\"").count(), 1, "exactly one replica leads");

    // Kill the leader: the other takes over within the lease time and keeps reconciling.
    let leader = (0..2)
        .find(|i| {
            std::fs::read_to_string(env.log_dir.join(format!("{}-{i}.log", env.ns)))
                .unwrap_or_default()
                .contains("\"leading\"")
        })
        .expect("a leader");
    env.kill_operator(leader);
    env.apply("after", env.spec("le-after", json!({}))).await;
    env.wait_for("after", Duration::from_secs(40), "standby took over", |o| {
        condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert_eq!(env.logs().matches("\"leading\"").count(), 2);
}

#[tokio::test]
async fn no_secret_reaches_logs_events_or_status() {
    let env = Env::start("e2e-secrets").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.secret("creds", json!({"clientId": NO_ROLES_CLIENT, "clientSecret": NO_ROLES_SECRET})).await;
    env.apply("ok", env.spec("sec-key", json!({"antimatter": {"activate": true}}))).await;
    env.apply("weak", env.spec("sec-key-2", json!({"azureCredentialsSecretRef": {"name": "creds"}}))).await;
    env.wait_ready("ok").await;
    env.wait_condition("weak", "KeyReady", ConditionStatus::False, Some("Forbidden")).await;

    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let events = serde_json::to_string(&events.list(&Default::default()).await.expect("events")).expect("json");
    let objects = serde_json::to_string(&env.api.list(&Default::default()).await.expect("list")).expect("json");
    let logs = env.logs();
    assert!(logs.len() > 1000, "the operator logged at debug level");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "a secret value is in the operator's log");
        assert!(!events.contains(secret), "a secret value is in an event");
        assert!(!objects.contains(secret), "a secret value is in a status");
    }
    // Tokens are secrets too: no bearer token or JWT in the log.
    assert!(!logs.contains("Bearer ey") && !logs.contains("\"access_token\""), "a token is in the log");
}

#[tokio::test]
async fn an_identity_that_cannot_assign_roles_gets_a_clear_forbidden() {
    // This identity cannot read Graph either: the policy lets its given principal go unverified.
    let policy = "rules:\n- namespaces: ['*']\n  hsms: ['*']\n  unverifiedPrincipals: true\n";
    let env = Env::start_with("e2e-norbac", OperatorOptions { policy: Some(policy), ..Default::default() }).await;
    // This identity may manage keys (Crypto User at /) but not role assignments.
    let no_roles_principal = "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b90";
    env.sandbox.add_role_assignment(HSM, "Managed HSM Crypto User", "/", no_roles_principal).expect("assignment");
    env.secret("keys-only", json!({"clientId": NO_ROLES_CLIENT, "clientSecret": NO_ROLES_SECRET})).await;
    let spec = env.spec(
        "nr-key",
        json!({
            "azureCredentialsSecretRef": {"name": "keys-only"},
            "antimatter": {"apiKeySecretRef": null, "servicePrincipalObjectId": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}
        }),
    );
    env.apply("nr", spec).await;
    let o = env.wait_condition("nr", "RoleAssigned", ConditionStatus::False, Some("Forbidden")).await;
    let message = &condition(&o, "RoleAssigned").expect("RoleAssigned").message;
    assert!(message.contains("Managed HSM Policy Administrator"), "{message}");
    assert_eq!(condition(&o, "KeyReady").map(|c| c.status), Some(ConditionStatus::True), "keys were fine");
    assert!(crypto_user_assignments(&env, "nr-key").is_empty());
}

/// An operator on workload identity whose token file holds `token` (for the ServiceAccount
/// `rootkey-operator` of the environment's namespace, which Entra trusts from the test control
/// plane's issuer, as `az identity federated-credential create` sets up for a cluster).
async fn workload_identity_env(prefix: &str, token: impl FnOnce(&Env, String) -> String) -> Env {
    use k8s_openapi::api::{authentication::v1::TokenRequest, core::v1::ServiceAccount};
    use kube::api::PostParams;
    use support::env::{OPERATOR_CLIENT, SpawnExtra};
    let (issuer, _) = support::test_issuer();
    let mut env = Env::with_world(prefix, |world, ns| {
        let app = world.applications.iter_mut().find(|a| a.app_id == OPERATOR_CLIENT).expect("operator app");
        let mut federated = app.federated_credentials[0].clone();
        federated.issuer = issuer;
        federated.subject = format!("system:serviceaccount:{ns}:rootkey-operator");
        app.federated_credentials = vec![federated];
    })
    .await;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(env.client.clone(), &env.ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "rootkey-operator"}})).expect("sa");
    accounts.create(&PostParams::default(), &sa).await.expect("service account");
    // The token a projected volume would hold: from the TokenRequest API, for Entra's audience.
    let request: TokenRequest = serde_json::from_value(
        json!({"spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600}}),
    )
    .expect("token request");
    let issued = accounts
        .create_token_request("rootkey-operator", &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .and_then(|s| s.token)
        .expect("token value");
    let token_file = env.log_dir.join(format!("{}-sa-token", env.ns));
    std::fs::write(&token_file, token(&env, issued)).expect("token file");
    env.spawn_operator_ext(
        &OperatorOptions::default(),
        &SpawnExtra {
            args: vec!["--azure-identity".into(), "workload".into()],
            env: vec![
                ("AZURE_FEDERATED_TOKEN_FILE".into(), token_file.display().to_string()),
                ("AZURE_TENANT_ID".into(), TENANT.into()),
                ("AZURE_CLIENT_SECRET".into(), String::new()),
            ],
        },
    );
    env.api_key_secret("api-key", API_KEY).await;
    env
}

#[tokio::test]
async fn workload_identity_with_a_service_account_token_from_the_cluster() {
    let env = workload_identity_env("e2e-wi", |_, issued| issued).await;
    env.apply("wi", env.spec("wi-key", json!({}))).await;
    env.wait_ready("wi").await;
    assert!(env.sandbox.key(HSM, "wi-key").is_some(), "the key was created with the federated identity");
}

#[tokio::test]
async fn a_service_account_token_signed_by_another_key_is_refused_as_entra_does() {
    // The cluster's claims (issuer, subject, audience) under a key the cluster does not publish.
    let env = workload_identity_env("e2e-wi-forged", |env, _| {
        let (issuer, _) = support::test_issuer();
        env.sandbox
            .federated_token(&rootkey_sandbox::FederatedTokenRequest {
                subject: format!("system:serviceaccount:{}:rootkey-operator", env.ns),
                issuer: Some(issuer),
                audience: None,
                lifetime_secs: None,
            })
            .expect("forged token")
    })
    .await;
    env.apply("forged", env.spec("forged-key", json!({}))).await;
    let o = env.wait_condition("forged", "KeyReady", ConditionStatus::False, Some("InvalidCredentials")).await;
    let message = &condition(&o, "KeyReady").expect("KeyReady").message;
    assert!(message.contains("AADSTS7000272"), "{message}");
    assert!(env.sandbox.key(HSM, "forged-key").is_none());
}

/// `rootkey-operator status` tells what is wrong and what to do; `recheck` makes the operator check
/// a Ready object at once, long before its interval.
#[tokio::test]
async fn the_cli_shows_status_with_fixes_and_recheck_checks_now() {
    let env = Env::start("e2e-cli").await;
    env.api_key_secret("api-key", API_KEY).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rootkey-operator")).args(args).output().expect("cli");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    env.apply("missing", env.spec("absent-key", json!({"key": {"create": "Never"}}))).await;
    let o = env.wait_condition("missing", "KeyReady", ConditionStatus::False, Some("KeyNotFound")).await;
    // kstatus: a terminal reason is Stalled (Flux and `helm --wait` fail at once), not Reconciling.
    let kstatus = |o: &rootkey_operator::api::AzureRootKey| {
        ["Reconciling", "Stalled"].map(|t| condition(o, t).map(|c| (c.status, c.reason.to_string())))
    };
    let stalled = Some((ConditionStatus::True, "KeyNotFound".to_owned()));
    assert_eq!(kstatus(&o), [Some((ConditionStatus::False, "KeyNotFound".to_owned())), stalled]);
    // The Warning event is written shortly after the status.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let shown = loop {
        let shown = cli(&["status", &format!("{}/missing", env.ns)]);
        if shown.contains("Warning") || std::time::Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(shown.contains("KeyReady") && shown.contains("KeyNotFound"), "{shown}");
    assert!(shown.contains("What to do:") && shown.contains("set `create: IfMissing`"), "{shown}");
    assert!(shown.contains("Warning") && shown.contains("Recent events:"), "{shown}");

    env.apply("root", env.spec("cli-key", json!({}))).await;
    let o = env.wait_ready("root").await;
    assert!(
        kstatus(&o).iter().all(|c| c.as_ref().is_some_and(|(s, _)| *s == ConditionStatus::False)),
        "{:?}",
        kstatus(&o)
    );
    // Settled: nothing would check it again within its hour.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let checks = env.sandbox.count("antimatter", "rek.test");
    cli(&["recheck", &format!("{}/root", env.ns)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.sandbox.count("antimatter", "rek.test") == checks {
        assert!(std::time::Instant::now() < deadline, "recheck ran no pairing check");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = cli(&["status", &format!("{}/root", env.ns)]);
    assert!(shown.contains("Healthy"), "{shown}");
    let last_check = shown.lines().find(|l| l.starts_with("last check ")).unwrap_or_default();
    assert!(last_check.trim_start_matches("last check").trim().parse::<jiff::Timestamp>().is_ok(), "{shown}");

    // `kubectl get -o wide`: the HSM by name, Ready's reason, and at wide Active, the message and
    // the last check's time.
    let out = std::process::Command::new("bin/kubectl")
        .args(["get", "ark", "-o", "wide", "-n", &env.ns])
        .output()
        .expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("kubectl get ark -o wide:\n{table}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["DOMAIN", "HSM", "KEY", "PAIRING", "READY", "REASON", "ACTIVE", "MESSAGE", "LAST CHECK"] {
        assert!(header.contains(column), "{column} in {table}");
    }
    let row = table.lines().find(|l| l.starts_with("root ")).unwrap_or_default();
    assert!(row.contains(&format!(" {HSM} ")) && !row.contains("https://"), "the HSM's name, not its URL: {table}");
    assert!(row.contains("KeyNotFound") || row.contains(" Ready "), "Ready's reason: {table}");
    // The row ends with LAST CHECK and AGE, both ages such as 3s.
    let last_check = row.split_whitespace().rev().nth(1).unwrap_or_default();
    assert!(
        last_check.trim_end_matches(char::is_alphabetic).parse::<u32>().is_ok(),
        "the last check's age stands before the object's: {table}"
    );
}
