//! The remote services as the real ones behave, end to end: an Antimatter domain that lives on a
//! cell (the API answers `308` and names the cell in `cellAddress`), a `cellAddress` outside the
//! API's domain, and Managed HSM RBAC that takes time to propagate.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use rootkey_operator::api::ConditionStatus;
use rootkey_sandbox::{DomainPatch, RequestRecord, SettingsPatch};
use serde_json::json;
use support::env::{API_KEY, DOMAIN, Env, OperatorOptions, condition};

const API_HOST: &str = "api.sandbox.localhost";

fn cell_host(cell: &str) -> String {
    format!("antimatter-{cell}.sandbox.localhost")
}

/// Antimatter requests that carried a token (every call but authenticate).
fn authed_antimatter(log: &[RequestRecord]) -> Vec<&RequestRecord> {
    log.iter().filter(|r| r.service == "antimatter" && r.authorization && !r.internal).collect()
}

fn warnings(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| format!("{}: {}", e.reason.as_deref().unwrap_or(""), e.note.as_deref().unwrap_or("")))
        .collect()
}

async fn events(env: &Env) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    api.list(&Default::default()).await.expect("events").items
}

#[tokio::test]
async fn a_domain_on_a_cell_reaches_ready_with_every_token_sent_to_its_cell() {
    let mut env = Env::with_world("cons-cell", |w, _| {
        let am = w.antimatter.as_mut().expect("antimatter");
        am.domains.iter_mut().filter(|d| d.id == DOMAIN).for_each(|d| d.cell = Some("eu1".into()));
    })
    .await;
    env.spawn_operator(&OperatorOptions::default());
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("cell-root", json!({"antimatter": {"activate": true}}))).await;
    env.wait_ready("root").await;

    let log = env.sandbox.requests();
    let authed = authed_antimatter(&log);
    assert!(authed.len() >= 4, "providers, keys, test, active-key: {authed:?}");
    let elsewhere: Vec<_> = authed.iter().filter(|r| r.host != cell_host("eu1")).collect();
    assert!(elsewhere.is_empty(), "a JWT went to another host than the cell: {elsewhere:#?}");
    let refused: Vec<_> = log.iter().filter(|r| r.service == "antimatter" && r.status == 401).collect();
    assert!(refused.is_empty(), "Antimatter refused a call: {refused:#?}");
    let redirected = log.iter().any(|r| r.host == API_HOST && r.operation == "authenticate" && r.status == 308);
    assert!(redirected, "authenticate went to the API host first, which sent it to the cell");
    let api_keys: Vec<_> = log.iter().filter(|r| r.credential && r.service == "antimatter").collect();
    assert!(
        api_keys
            .iter()
            .all(|r| r.operation == "authenticate" && [API_HOST.to_owned(), cell_host("eu1")].contains(&r.host)),
        "the API key went only to authenticate at the API and the cell: {api_keys:#?}"
    );

    // The domain moves to another cell: the old cell answers 308, the operator logs in again and
    // follows it at once, without a failure and without sending the JWT where the 308 points.
    env.sandbox.clear_requests();
    env.sandbox
        .patch_domain(DOMAIN, DomainPatch { cell: Some(Some("us2".into())), ..Default::default() })
        .expect("move the domain");
    env.poke("root").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env
        .sandbox
        .requests()
        .iter()
        .any(|r| r.host == cell_host("us2") && r.operation == "rek.test" && r.status == 200)
    {
        assert!(Instant::now() < deadline, "no pairing check on the new cell: {:#?}", env.sandbox.requests());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = env.sandbox.requests();
    let moved = authed_antimatter(&log);
    assert!(moved.iter().any(|r| r.host == cell_host("eu1") && r.status == 308), "{moved:#?}");
    assert!(moved.iter().all(|r| [cell_host("eu1"), cell_host("us2")].contains(&r.host)), "{moved:#?}");
    assert!(moved.iter().filter(|r| r.host == cell_host("eu1")).all(|r| r.status == 308), "{moved:#?}");
    let obj = env.wait_ready("root").await;
    assert_eq!(condition(&obj, "Paired").map(|c| c.reason.as_ref()), Some("PairingHealthy"));
    assert_eq!(warnings(&events(&env).await), Vec::<String>::new(), "no Warning event");
}

#[tokio::test]
async fn a_cell_address_outside_the_api_domain_is_refused_and_gets_no_token() {
    let mut env = Env::without_operator("cons-evil").await;
    let evil = format!("https://evil.example.localhost:{}", env.sandbox.port());
    env.sandbox
        .patch_domain(DOMAIN, DomainPatch { cell_address_override: Some(Some(evil.clone())), ..Default::default() })
        .expect("hostile cellAddress");
    env.spawn_operator(&OperatorOptions::default());
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("evil-root", json!({}))).await;
    let obj = env.wait_condition("root", "Registered", ConditionStatus::False, Some("UntrustedCell")).await;
    let message = &condition(&obj, "Registered").expect("Registered").message;
    assert!(message.contains(&evil) && message.contains("no token is sent there"), "{message}");
    assert_eq!(condition(&obj, "Ready").map(|c| c.reason.as_ref()), Some("UntrustedCell"));

    let log = env.sandbox.requests();
    let to_evil: Vec<_> = log.iter().filter(|r| r.host == "evil.example.localhost").collect();
    assert!(to_evil.is_empty(), "a request went to the hostile cell: {to_evil:#?}");
    let authed = authed_antimatter(&log);
    assert!(authed.is_empty(), "no JWT was sent anywhere: {authed:#?}");
    assert!(log.iter().any(|r| r.operation == "authenticate" && r.status == 200), "it did log in");
}

#[tokio::test]
async fn with_20s_of_rbac_propagation_a_new_object_is_ready_within_30s_without_a_warning() {
    let mut env = Env::without_operator("cons-rbac").await;
    env.sandbox.patch_settings(SettingsPatch { rbac_propagation_secs: Some(20), ..Default::default() });
    env.spawn_operator(&OperatorOptions::default());
    env.api_key_secret("api-key", API_KEY).await;
    let started = Instant::now();
    env.apply("root", env.spec("slow-root", json!({"antimatter": {"activate": true}}))).await;

    let mut saw_pending = false;
    let deadline = started + Duration::from_secs(30);
    loop {
        let obj = env.api.get("root").await.expect("get");
        saw_pending |= condition(&obj, "Paired")
            .is_some_and(|c| c.status == ConditionStatus::Unknown && c.reason == "PropagationPending");
        if condition(&obj, "Ready").is_some_and(|c| c.status == ConditionStatus::True) {
            break;
        }
        assert!(Instant::now() < deadline, "not Ready in 30 s: {:#?}", obj.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    eprintln!("Ready after {took:?} with 20 s of RBAC propagation");
    assert!(took >= Duration::from_secs(20), "the propagation delay was in effect ({took:?})");
    assert!(saw_pending, "Paired showed PropagationPending meanwhile");
    let pairing_checks = env.sandbox.count("antimatter", "rek.test");
    assert!(pairing_checks <= 15, "{pairing_checks} pairing checks: a short, steady recheck");
    assert_eq!(warnings(&events(&env).await), Vec::<String>::new(), "no Warning event");
}
