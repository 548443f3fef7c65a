//! The tenancy policy's dimensions: each refuses before any remote call, and the principal step
//! never runs (no Graph call in any tenant) for a refused object.

use rootkey_operator::api::ConditionStatus;
use serde_json::json;

use crate::support::env::{API_KEY, Env, OperatorOptions, TENANT, condition};

const POLICY: &str = "rules:
- namespaces: ['auth-policy-*']
  hsms: [contoso-hsm]
  keys: ['team-*']
  tenants: ['7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10']
  domains: [dm-7fQ2xPz9KdL]
  manualRoute: false
";

#[tokio::test]
async fn each_dimension_of_the_policy_refuses_before_any_remote_call() {
    let env = Env::start_with("auth-policy", OperatorOptions { policy: Some(POLICY), ..Default::default() }).await;
    env.api_key_secret("api-key", API_KEY).await;
    let other_tenant = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
    let cases = [
        ("key", env.spec("other-key", json!({})), "key name other-key"),
        ("tenant", env.spec("team-t", json!({"tenantId": other_tenant})), "tenant"),
        ("domain", env.spec("team-d", json!({"domainId": "dm-AbCdEfGhJkL"})), "domain dm-AbCdEfGhJkL"),
        ("manual", env.spec("team-m", json!({"antimatter": {"apiKeySecretRef": null}})), "manual route"),
    ];
    for (name, spec, _) in &cases {
        env.apply(name, spec.clone()).await;
    }
    for (name, _, why) in &cases {
        let o = env.wait_condition(name, "KeyReady", ConditionStatus::False, Some("PolicyDenied")).await;
        let message = &condition(&o, "KeyReady").expect("KeyReady").message;
        assert!(message.contains(why), "{name}: {message}");
        assert_eq!(condition(&o, "ServicePrincipalReady").map(|c| c.status), Some(ConditionStatus::Unknown));
    }
    assert_eq!(env.sandbox.counters().iter().map(|c| c.count).sum::<u64>(), 0, "no remote call at all");
    assert!(env.sandbox.service_principals(TENANT).iter().all(|p| p.app_id != crate::support::env::ANTIMATTER_APP));
    // Inside every dimension: delegated.
    env.apply("allowed", env.spec("team-a-root", json!({}))).await;
    env.wait_ready("allowed").await;
}
