//! One AzureRootKey per (HSM, key): a second object naming a claimed key changes nothing, in the
//! same namespace, in another, or from another cluster, until the owner is deleted.

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use rootkey_operator::{
    api::{AzureRootKey, ConditionStatus},
    controller::ownership::OWNER_TAG,
};
use serde_json::{Value, json};

use crate::support::{
    self,
    env::{Env, HSM, OperatorOptions, SpawnExtra, condition},
};

const KEY: &str = "shared-key";

async fn apply_in(env: &Env, ns: &str, name: &str, spec: Value) {
    let api: Api<AzureRootKey> = Api::namespaced(env.client.clone(), ns);
    let doc = json!({"apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey", "metadata": {"name": name}, "spec": spec});
    api.patch(name, &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&doc)).await.expect("apply");
}

async fn wait_claimed(env: &Env, ns: &str, name: &str) -> String {
    let api: Api<AzureRootKey> = Api::namespaced(env.client.clone(), ns);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = api.get(name).await.expect("get");
        if let Some(c) = condition(&o, "KeyReady").filter(|c| c.reason == "KeyClaimed") {
            assert_eq!(c.status, ConditionStatus::False);
            return c.message.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{ns}/{name} not refused with KeyClaimed: {:?}", o.status);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// What the owner's delegation consists of in Azure and Antimatter.
fn delegation(env: &Env) -> (Value, Vec<String>, usize) {
    let key = env.sandbox.key(HSM, KEY).expect("key");
    let tags = json!(key.latest().expect("a version").tags);
    let scope = format!("/keys/{KEY}");
    let mut assignments: Vec<String> =
        env.sandbox.role_assignments(HSM).into_iter().filter(|a| a.scope == scope).map(|a| a.name).collect();
    assignments.sort();
    (tags, assignments, env.sandbox.registrations(crate::support::env::DOMAIN).len())
}

#[tokio::test]
async fn a_second_object_on_a_claimed_key_changes_nothing_until_the_owner_is_deleted() {
    let mut env = Env::without_operator("auth-owner").await;
    let other_ns = support::namespace(&env.client, "auth-owner-b").await;
    let extra = SpawnExtra { args: vec!["--watch-namespaces".into(), other_ns.clone()], ..Default::default() };
    env.spawn_operator_ext(&OperatorOptions::default(), &extra);
    env.api_key_secret("api-key", crate::support::env::API_KEY).await;
    env.apply("owner", env.spec(KEY, json!({}))).await;
    let owner = env.wait_ready("owner").await;
    let before = delegation(&env);
    assert_eq!(before.0[OWNER_TAG], format!("test-cluster/{}/owner", env.ns), "the key is marked");

    // Existing key, no API key of its own: the product page's "existing key" path, by another team.
    let shadow = env.spec(KEY, json!({"key": {"create": "Never"}, "antimatter": {"apiKeySecretRef": null}}));
    env.apply("same-ns", shadow.clone()).await;
    // Another team, another domain: it would add its own domain tag to the owner's key.
    let mut other_domain = shadow.clone();
    other_domain["domainId"] = json!("dm-AbCdEfGhJkL");
    apply_in(&env, &other_ns, "other-ns", other_domain).await;
    for (ns, name) in [(env.ns.clone(), "same-ns"), (other_ns.clone(), "other-ns")] {
        let message = wait_claimed(&env, &ns, name).await;
        assert!(message.contains(&format!("{}/owner", env.ns)), "names the owner: {message}");
    }
    // Another cluster's operator (another cluster ID) sees the marker too.
    let third_ns = support::namespace(&env.client, "auth-owner-c").await;
    let extra = SpawnExtra { args: vec!["--watch-namespaces".into(), third_ns.clone()], ..Default::default() };
    env.spawn_operator_ext(&OperatorOptions { cluster_id: Some("other-cluster"), ..Default::default() }, &extra);
    apply_in(&env, &third_ns, "other-cluster", shadow.clone()).await;
    let message = wait_claimed(&env, &third_ns, "other-cluster").await;
    assert!(message.contains("another cluster (test-cluster)") && message.contains("adopt"), "{message}");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(delegation(&env), before, "tags, role assignments and registrations are the owner's, unchanged");
    let pairing = owner.status.as_ref().and_then(|s| s.pairing.as_ref()).map(|p| p.status);
    assert!(pairing.is_some(), "the owner paired");

    // Deleted (Retain): its marker is stale, and the next object may take the key.
    env.delete("owner").await;
    env.wait_gone("owner", std::time::Duration::from_secs(30)).await;
    env.poke("same-ns").await;
    let o = env.wait_ready("same-ns").await;
    assert!(condition(&o, "KeyReady").is_some_and(|c| c.status == ConditionStatus::True));
    let tags = delegation(&env).0;
    assert_eq!(tags[OWNER_TAG], format!("test-cluster/{}/same-ns", env.ns), "marked for the new owner");
}
