//! Revoke removes only what the object added, and only when nothing depends on it: a shadow object
//! leaves the owner's access; a key Antimatter may use (no API key to ask, rotation not finished)
//! keeps its access; a namespace being deleted never waits for a revoke.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{core::v1::Namespace, core::v1::Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, CustomResourceExt, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{conditions, wait::await_condition},
};
use rootkey_operator::{
    api::{AzureRootKey, ConditionStatus},
    azure::rbac::CRYPTO_USER_ROLE_ID as CRYPTO_USER,
};
use serde_json::{Value, json};

use crate::support::env::{ANTIMATTER_APP, API_KEY, DOMAIN, Env, HSM, OperatorOptions, SpawnExtra, TENANT, condition};

/// Everything an object's access consists of: the Crypto User assignments at the key, the key's
/// tags, the domain's registrations of the key, and the active key.
#[derive(Debug, PartialEq)]
struct Access {
    assignments: Vec<String>,
    tags: BTreeMap<String, String>,
    registrations: Vec<String>,
    active: Option<String>,
}

fn access(env: &Env, key: &str) -> Access {
    let scope = format!("/keys/{key}");
    let versions = format!("{}/keys/{key}/", env.hsm_url());
    Access {
        assignments: env
            .sandbox
            .role_assignments(HSM)
            .into_iter()
            .filter(|a| a.scope == scope && a.role_definition.ends_with(CRYPTO_USER))
            .map(|a| a.name)
            .collect(),
        tags: env.sandbox.key(HSM, key).and_then(|k| k.latest().map(|v| v.tags.clone())).unwrap_or_default(),
        registrations: env
            .sandbox
            .registrations(DOMAIN)
            .into_iter()
            .filter(|r| r.resource_path.starts_with(&versions))
            .map(|r| r.rek_id)
            .collect(),
        active: env.sandbox.active_key(DOMAIN),
    }
}

fn has_finalizer(o: &AzureRootKey) -> bool {
    o.finalizers().iter().any(|f| f == "antimatter.io/cleanup")
}

/// Calls the sandbox's Antimatter API as a person would from the dashboard: with the domain's API
/// key, `path` under the domain's encryption control.
async fn antimatter_by_hand(env: &Env, path: &str, body: Value) -> Value {
    let client = env.sandbox.client();
    let base = format!("{}/domains/{DOMAIN}", env.api_url());
    let auth = client.post_json(&format!("{base}/authenticate"), None, &json!({"token": API_KEY})).await.expect("auth");
    assert_eq!(auth.status, 200, "authenticate: {:?}", auth.json());
    let jwt = auth.json()["token"].as_str().expect("token").to_owned();
    let r = client.post_json(&format!("{base}/control/encryption/{path}"), Some(&jwt), &body).await.expect(path);
    assert_eq!(r.status, 200, "{path}: {:?}", r.json());
    r.json()
}

/// A second object on the owner's key and domain, with `Revoke` (refused with `KeyClaimed`, or,
/// where it may use the key, finding the tag, the assignment and the registration in place): it
/// added nothing, so deleting it removes nothing, and the owner stays paired.
#[tokio::test]
async fn revoke_of_a_shadow_object_leaves_the_owners_tag_assignment_and_pairing() {
    let env = Env::start("auth-shadow").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("owner", env.spec("shared-key", json!({}))).await;
    env.wait_ready("owner").await;
    let before = access(&env, "shared-key");
    assert_eq!((before.assignments.len(), before.registrations.len()), (1, 1), "{before:?}");

    env.apply("shadow", env.spec("shared-key", json!({"deletionPolicy": "Revoke"}))).await;
    let shadow = env
        .wait_for("shadow", Duration::from_secs(30), "shadow reconciled", |o| {
            has_finalizer(o) && condition(o, "KeyReady").is_some()
        })
        .await;
    let created = shadow.status.and_then(|s| s.created);
    assert_eq!(created, Some(Default::default()), "the shadow records nothing as its own");
    env.delete("shadow").await;
    env.wait_gone("shadow", Duration::from_secs(30)).await;

    assert_eq!(access(&env, "shared-key"), before, "the owner's access is untouched");
    env.poke("owner").await;
    env.wait_for("owner", Duration::from_secs(30), "owner still paired after a fresh check", |o| {
        condition(o, "Paired").is_some_and(|c| c.status == ConditionStatus::True)
            && condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert_eq!(access(&env, "shared-key"), before);
}

/// Without an API key the operator cannot tell whether Antimatter uses the key. `Revoke` is
/// refused at admission; an object made before that rule (here: under a CRD without it, on a
/// control plane this test owns) whose key was then registered by hand and made active is
/// released as `Retain` when deleted, with a Warning event, and the key keeps all its access.
#[tokio::test]
async fn revoke_without_an_api_key_is_refused_at_admission_and_released_as_retain_at_run_time() {
    let mut cp = controlplane::ControlPlane::start(&controlplane::default_bin_dir()).await.expect("own control plane");
    let mut env = Env::on_control_plane(cp.kubeconfig_path(), "auth-manual").await;
    let manual = env.spec(
        "manual-key",
        json!({"deletionPolicy": "Revoke", "antimatter": {"apiKeySecretRef": null, "applicationId": ANTIMATTER_APP}}),
    );
    let doc = json!({"apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey", "metadata": {"name": "manual"}, "spec": manual});
    let refused = env.api.patch("manual", &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&doc)).await;
    let message = refused.expect_err("Revoke without an API key is refused").to_string();
    assert!(message.contains("deletionPolicy: Revoke needs antimatter.apiKeySecretRef"), "{message}");

    // The CRD of an operator version without the rule: the object is accepted.
    apply_crd_without_the_revoke_rule(&env).await;
    env.apply("manual", manual.clone()).await;
    env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    let ark = env
        .wait_for("manual", Duration::from_secs(60), "Azure side done", |o| {
            has_finalizer(o) && condition(o, "RoleAssigned").is_some_and(|c| c.status == ConditionStatus::True)
        })
        .await;
    // A person registers the key URL the status reports and makes it active.
    let key_url = ark.status.and_then(|s| s.key_url).expect("key URL");
    let rek = antimatter_by_hand(
        &env,
        "keys",
        json!({"description": "by hand", "keyInformation": {"providerName": "azure_am", "tenantID": TENANT, "keyURL": key_url}}),
    )
    .await["rekID"]
        .as_str()
        .expect("rekID")
        .to_owned();
    antimatter_by_hand(&env, "active-key", json!({"keyID": rek})).await;
    let before = access(&env, "manual-key");
    assert_eq!(before.active.as_deref(), Some(rek.as_str()));
    assert_eq!(before.assignments.len(), 1, "{before:?}");
    assert!(before.tags.contains_key(DOMAIN), "{before:?}");

    // The operator is upgraded: the rule is back; the old object is still there.
    crate::support::apply_crd(&env.client).await;
    env.delete("manual").await;
    env.wait_gone("manual", Duration::from_secs(30)).await;
    assert_eq!(access(&env, "manual-key"), before, "Antimatter's access to its active key is untouched");
    let warned = env.warnings("manual").await;
    assert!(
        warned.iter().any(|(reason, note)| reason == "RevokeNeedsApiKey" && note.contains("Left in place")),
        "{warned:?}"
    );
    env.kill_operator(0);
    cp.stop_apiserver();
}

async fn apply_crd_without_the_revoke_rule(env: &Env) {
    let mut crd = serde_json::to_value(AzureRootKey::crd()).expect("crd");
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    if let Some(rules) = spec["x-kubernetes-validations"].as_array_mut() {
        rules.retain(|r| !r["rule"].as_str().is_some_and(|r| r.contains("Revoke")));
    }
    let crd: CustomResourceDefinition = serde_json::from_value(crd).expect("crd");
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let name = AzureRootKey::crd_name();
    crds.patch(name, &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&crd)).await.expect("apply CRD");
    tokio::time::timeout(Duration::from_secs(30), await_condition(crds, name, conditions::is_crd_established()))
        .await
        .expect("established")
        .expect("watch");
}

/// Another key became active and Antimatter is still re-wrapping the domain's data keys (some
/// perhaps still under this key): Revoke waits (`Deleting` says why) and removes nothing.
#[tokio::test]
async fn rotation_incomplete_blocks_revoke() {
    let env = Env::start("auth-rotation").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("rotating", env.spec("rot-key", json!({"deletionPolicy": "Revoke"}))).await;
    let ready = env.wait_ready("rotating").await;
    let rek = ready.status.and_then(|s| s.root_encryption_key_id).expect("registered");
    env.sandbox.patch_settings(serde_json::from_value(json!({"rotate_batches": 100_000})).expect("settings"));
    // A person makes the key active, then Antimatter's default key again: a long rotation away
    // from this key starts.
    antimatter_by_hand(&env, "active-key", json!({"keyID": rek})).await;
    antimatter_by_hand(&env, "active-key", json!({"keyID": "default"})).await;
    let before = access(&env, "rot-key");

    env.delete("rotating").await;
    let blocked =
        env.wait_condition("rotating", "Deleting", ConditionStatus::Unknown, Some("RotationIncomplete")).await;
    assert!(has_finalizer(&blocked));
    assert!(env.sandbox.count("antimatter", "rotate") > 0, "the operator drives the rotation");
    assert_eq!(access(&env, "rot-key").assignments, before.assignments, "the assignment stays");
    assert_eq!(access(&env, "rot-key").registrations, before.registrations, "the registration stays");
    assert!(access(&env, "rot-key").tags.contains_key(DOMAIN), "the tag stays");

    // Retain releases it at once, leaving everything.
    env.apply("rotating", env.spec("rot-key", json!({"deletionPolicy": "Retain"}))).await;
    env.wait_gone("rotating", Duration::from_secs(30)).await;
    assert_eq!(access(&env, "rot-key").assignments, before.assignments);
}

/// The namespace of a Revoke object is deleted (the test plays the namespace controller: the
/// control plane has none): its Secrets go, then the object. The object is released without
/// revoking, even for the active key that would block a revoke, so the namespace never waits.
#[tokio::test]
async fn namespace_deletion_releases_a_revoke_object_without_revoking() {
    let env = Env::start("auth-nsdel").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("doomed", env.spec("ns-key", json!({"deletionPolicy": "Revoke", "antimatter": {"activate": true}})))
        .await;
    env.wait_ready("doomed").await;
    env.wait_for("doomed", Duration::from_secs(30), "finalizer", has_finalizer).await;
    let before = access(&env, "ns-key");

    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces.delete(&env.ns, &DeleteParams::default()).await.expect("delete namespace");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    secrets.delete("api-key", &DeleteParams::default()).await.expect("delete Secret");
    env.delete("doomed").await;
    env.wait_gone("doomed", Duration::from_secs(30)).await;

    assert_eq!(access(&env, "ns-key"), before, "nothing revoked");
    let logs = env.logs();
    assert!(logs.contains("released without revoking") && logs.contains("NamespaceDeleting"), "operator log");
}
