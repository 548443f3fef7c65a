//! End to end: the key's lifecycle after its first activation — rotation to completion, a new key
//! version taking over and the old registration retired, a hand-made change of the active key left
//! alone, and one activating object per domain.

mod support;

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};
use rootkey_operator::api::{AzureRootKey, ConditionStatus, RotationState, VersionState};
use rootkey_sandbox::SettingsPatch;
use serde_json::json;
use support::env::{API_KEY, DOMAIN, Env, HSM, condition};

fn is_ready(o: &AzureRootKey) -> bool {
    condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
}

fn rek_id(o: &AzureRootKey) -> String {
    o.status.as_ref().and_then(|s| s.root_encryption_key_id.clone()).expect("registered")
}

#[tokio::test]
async fn a_domain_with_sixty_rotation_batches_is_ready_only_after_the_last() {
    let env = Env::start("life-rotate").await;
    env.sandbox.patch_settings(SettingsPatch { rotate_batches: Some(60), ..Default::default() });
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("rotated", json!({"antimatter": {"activate": true}}))).await;

    // Watch every status on the way: never Ready while Antimatter still re-wraps.
    let ready = env
        .wait_for("root", Duration::from_secs(60), "Ready after the rotation", |o| {
            let rotation = o.status.as_ref().and_then(|s| s.rotation.clone());
            assert!(
                !is_ready(o) || rotation.as_ref().is_some_and(|r| r.state == RotationState::Complete),
                "Ready before the rotation finished: {rotation:?}"
            );
            is_ready(o)
        })
        .await;
    let batches = env.sandbox.count_status("antimatter", "rotate", 200);
    assert_eq!(batches, 60, "every batch asked for");
    let rotation = ready.status.as_ref().and_then(|s| s.rotation.clone()).expect("rotation");
    assert_eq!((rotation.state, rotation.batches), (RotationState::Complete, 60));
    assert!(rotation.completed_at.is_some_and(|done| done.0 >= rotation.started_at.0));
    assert_eq!(condition(&ready, "Active").map(|c| &*c.reason), Some("KeyActive"));
    // 20 batches per reconcile: the rotation spanned reconciles, and its end was told once (events
    // are written shortly after the status).
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let mut completed = 0;
    for _ in 0..50 {
        let all = events.list(&ListParams::default()).await.expect("events").items;
        completed = all.iter().filter(|e| e.reason.as_deref() == Some("RotationCompleted")).count();
        if completed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(completed, 1);
    assert!(env.warnings("root").await.is_empty());

    // Done is done: no more rotate calls on later checks.
    env.sandbox.reset_counters();
    env.poke("root").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.sandbox.count("antimatter", "rotate"), 0);
}

#[tokio::test]
async fn a_new_key_version_becomes_the_active_registration_and_the_old_one_is_retired() {
    let env = Env::start("life-version").await;
    env.sandbox.patch_settings(SettingsPatch { rotate_batches: Some(3), ..Default::default() });
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("versioned", json!({"antimatter": {"activate": true}}))).await;
    let first = env.wait_ready("root").await;
    let old_rek = rek_id(&first);

    // A new version, as the HSM's rotation policy or `az keyvault key rotate` makes it.
    let version = env.sandbox.add_key_version(HSM, "versioned").expect("new version");
    env.poke("root").await;
    let rotated = env
        .wait_for("root", Duration::from_secs(30), "new version active, old registration retired", |o| {
            let versions = o.status.as_ref().map(|s| s.versions.clone()).unwrap_or_default();
            is_ready(o)
                && versions.first().is_some_and(|v| v.version == version && v.state == VersionState::Current)
                && versions.get(1).is_some_and(|v| v.state == VersionState::Retired)
        })
        .await;
    let new_rek = rek_id(&rotated);
    assert_ne!(new_rek, old_rek);
    assert_eq!(env.sandbox.active_key(DOMAIN).as_deref(), Some(new_rek.as_str()), "the new version is active");
    let registrations: Vec<_> = env.sandbox.registrations(DOMAIN).into_iter().map(|r| r.rek_id).collect();
    assert!(!registrations.contains(&old_rek), "old registration retired: {registrations:?}");
    assert!(registrations.contains(&new_rek));
    let key = env.sandbox.key(HSM, "versioned").expect("key");
    assert_eq!(key.versions.len(), 2, "no HSM key version deleted");
    assert!(key.versions.iter().all(|v| v.enabled), "no HSM key version disabled");
    assert_eq!(key.latest().and_then(|v| v.tags.get(DOMAIN)).map(String::as_str), Some("allow"));
    let status = rotated.status.expect("status");
    assert_eq!(status.rotation.map(|r| (r.root_encryption_key_id, r.state)), Some((new_rek, RotationState::Complete)));
    assert_eq!(status.versions[1].root_encryption_key_id.as_deref(), Some(old_rek.as_str()));
    assert_eq!(env.warnings("root").await, Vec::<(String, String)>::new(), "0 Warning events");
}

#[tokio::test]
async fn switching_the_active_key_by_hand_is_reported_and_left_as_it_is() {
    let env = Env::start("life-switch").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("switched", json!({"antimatter": {"activate": true}}))).await;
    let first = env.wait_ready("root").await;
    let ours = rek_id(&first);

    // An emergency rotation in the dashboard: back to Antimatter's own default key.
    let default =
        env.sandbox.registrations(DOMAIN).into_iter().find(|r| r.source == "antimatter").expect("default key").rek_id;
    assert!(env.sandbox.set_active_key(DOMAIN, &default));
    env.sandbox.reset_counters();
    env.poke("root").await;
    let changed = env.wait_condition("root", "Active", ConditionStatus::False, Some("ActiveKeyChanged")).await;
    let message = condition(&changed, "Active").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains(&default) && message.contains(&ours), "{message}");
    assert_eq!(condition(&changed, "Stalled").map(|c| c.status), Some(ConditionStatus::True), "needs a person");
    env.poke("root").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.sandbox.active_key(DOMAIN).as_deref(), Some(default.as_str()), "left as it is");
    assert_eq!(env.sandbox.count("antimatter", "active.set"), 0, "never taken back");

    // Asked to, it takes the key back.
    env.apply("root", env.spec("switched", json!({"antimatter": {"activate": true, "reclaimActive": true}}))).await;
    env.wait_for("root", Duration::from_secs(30), "reclaimed", |o| {
        is_ready(o) && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
    })
    .await;
    assert_eq!(env.sandbox.active_key(DOMAIN).as_deref(), Some(ours.as_str()));
}

#[tokio::test]
async fn a_second_object_asking_to_activate_in_the_same_domain_is_refused() {
    let env = Env::start("life-second").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("first", env.spec("first-key", json!({"antimatter": {"activate": true}}))).await;
    let first = env.wait_ready("first").await;
    env.apply("second", env.spec("second-key", json!({"antimatter": {"activate": true}}))).await;
    let second = env.wait_condition("second", "Active", ConditionStatus::False, Some("ActivationConflict")).await;
    let message = condition(&second, "Active").map(|c| c.message.clone()).unwrap_or_default();
    assert!(message.contains(&format!("{}/first", env.ns)), "{message}");
    assert_eq!(condition(&second, "Paired").map(|c| c.status), Some(ConditionStatus::True), "the rest is done");
    assert_eq!(env.sandbox.active_key(DOMAIN), Some(rek_id(&first)), "the first keeps the active key");
    assert_eq!(env.sandbox.count("antimatter", "active.set"), 1, "only the first activated");
}

#[tokio::test]
async fn a_rotation_policy_in_the_spec_is_applied_and_the_versions_it_makes_are_followed() {
    let env = Env::start("life-policy").await;
    env.api_key_secret("api-key", API_KEY).await;
    let policy = json!({"key": {"rotationPolicy": {"rotateAfter": "P30D", "expireAfter": "P90D"}}, "antimatter": {"activate": true}});
    env.apply("root", env.spec("by-policy", policy)).await;
    let first = env.wait_ready("root").await;
    let stored = env.sandbox.key(HSM, "by-policy").and_then(|k| k.rotation_policy).expect("policy in the HSM");
    assert_eq!((stored.rotate_after_create.as_deref(), stored.expiry_time.as_deref()), (Some("P30D"), Some("P90D")));
    let shown = first.status.as_ref().and_then(|s| s.rotation_policy.clone()).expect("status.rotationPolicy");
    assert_eq!((shown.rotate_after.as_str(), shown.expire_after.as_deref()), ("P30D", Some("P90D")));
    let old_rek = rek_id(&first);

    // 31 days later the HSM's policy makes a new version; the operator follows it to the end.
    env.sandbox.set_clock_offset(31 * 86_400);
    env.poke("root").await;
    let rotated = env
        .wait_for("root", Duration::from_secs(45), "the policy's version active, the old one retired", |o| {
            let versions = o.status.as_ref().map(|s| s.versions.clone()).unwrap_or_default();
            is_ready(o)
                && versions.first().is_some_and(|v| v.state == VersionState::Current)
                && versions.get(1).is_some_and(|v| v.state == VersionState::Retired)
        })
        .await;
    let key = env.sandbox.key(HSM, "by-policy").expect("key");
    assert_eq!(key.versions.len(), 2, "one version made by the policy");
    let new_rek = rek_id(&rotated);
    assert_ne!(new_rek, old_rek);
    assert_eq!(env.sandbox.active_key(DOMAIN), Some(new_rek));
    assert_eq!(env.sandbox.count("hsm", "key.rotationpolicy.put"), 1, "the policy is written once");
}
