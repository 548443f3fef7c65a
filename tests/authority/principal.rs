//! The only principal ever granted is Antimatter's application's.

use rootkey_operator::api::ConditionStatus;
use serde_json::json;

use crate::support::env::{Env, HSM, NO_ROLES_CLIENT, OperatorOptions, condition};

/// The `no-roles` app's service principal in the tenant: a real principal, of another application.
const OTHER_PRINCIPAL: &str = "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b90";

fn crypto_users(env: &Env, key: &str) -> Vec<String> {
    let scope = format!("/keys/{key}");
    env.sandbox.role_assignments(HSM).into_iter().filter(|a| a.scope == scope).map(|a| a.principal_id).collect()
}

/// A principal of the author's choosing (`servicePrincipalObjectId`) or another application
/// (`applicationId`) is never granted, with or without an API key.
#[tokio::test]
async fn a_chosen_principal_or_application_is_never_granted() {
    let env = Env::start("auth-principal").await;
    env.api_key_secret("api-key", crate::support::env::API_KEY).await;
    let chosen = json!({"antimatter": {"servicePrincipalObjectId": OTHER_PRINCIPAL, "apiKeySecretRef": null}});
    env.apply("chosen", env.spec("chosen-key", chosen)).await;
    env.apply("app", env.spec("app-key", json!({"antimatter": {"applicationId": NO_ROLES_CLIENT}}))).await;
    let o = env.wait_condition("chosen", "ServicePrincipalReady", ConditionStatus::False, Some("PolicyDenied")).await;
    let message = &condition(&o, "ServicePrincipalReady").expect("condition").message;
    assert!(message.contains(NO_ROLES_CLIENT), "names whose principal it is: {message}");
    let o = env.wait_condition("app", "ServicePrincipalReady", ConditionStatus::False, Some("PolicyDenied")).await;
    assert!(condition(&o, "ServicePrincipalReady").is_some_and(|c| c.message.contains("not Antimatter's")));
    for key in ["chosen-key", "app-key"] {
        assert!(crypto_users(&env, key).is_empty(), "{key}: no role assignment at all");
    }
    let principals = env.sandbox.service_principals(crate::support::env::TENANT);
    assert!(!principals.iter().any(|p| p.app_id == NO_ROLES_CLIENT && p.id != OTHER_PRINCIPAL), "no principal created");
}

/// Without a configured application ID and without an API key nothing trusted names Antimatter's
/// application: refused before any remote call, so not even a Graph read happens.
#[tokio::test]
async fn without_a_trusted_source_for_the_application_nothing_is_called() {
    let env =
        Env::start_with("auth-noapp", OperatorOptions { ask_antimatter_for_application: true, ..Default::default() })
            .await;
    let manual = json!({"antimatter": {"applicationId": crate::support::env::ANTIMATTER_APP, "apiKeySecretRef": null}});
    env.apply("manual", env.spec("manual-key", manual)).await;
    let o = env.wait_condition("manual", "KeyReady", ConditionStatus::False, Some("PolicyDenied")).await;
    assert!(condition(&o, "KeyReady").is_some_and(|c| c.message.contains("antimatter.applicationId")));
    assert_eq!(env.sandbox.counters().iter().map(|c| c.count).sum::<u64>(), 0, "no remote call at all");
}
