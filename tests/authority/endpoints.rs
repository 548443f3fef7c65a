//! Endpoints are the administrator's choice: an API key goes only to an allowlisted Antimatter API.

use std::time::Duration;

use rootkey_operator::api::ConditionStatus;
use serde_json::json;

use crate::support::env::{API_KEY, Env, HSM, condition};

/// A user who may write AzureRootKeys but not read Secrets names the attacker's host and any
/// Secret of the namespace: refused before the Secret is read, and nothing reaches that host.
#[tokio::test]
async fn an_api_key_never_reaches_a_host_outside_the_allowlist() {
    let env = Env::start("auth-endpoints").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.secret("db-password", json!({"apiKey": "not-an-api-key-but-a-database-password"})).await;
    let evil = format!("https://evil.sandbox.localhost:{}/v2", env.sandbox.port());
    // The allowlisted host with another path or port is another endpoint, too.
    let elsewhere = format!("https://api.sandbox.localhost:{}/v3", env.sandbox.port());
    for (name, url, secret) in
        [("evil", &evil, "api-key"), ("steal", &evil, "db-password"), ("path", &elsewhere, "api-key")]
    {
        let spec = env
            .spec(&format!("{name}-key"), json!({"antimatter": {"apiUrl": url, "apiKeySecretRef": {"name": secret}}}));
        env.apply(name, spec).await;
    }
    for name in ["evil", "steal", "path"] {
        let o = env.wait_condition(name, "KeyReady", ConditionStatus::False, Some("PolicyDenied")).await;
        let message = &condition(&o, "KeyReady").expect("KeyReady").message;
        assert!(message.contains("antimatter.apiUrls") && message.contains(&env.api_url()), "{message}");
    }
    // Give a wrongly allowed request every chance to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = env.sandbox.requests();
    let strays: Vec<_> = requests.iter().filter(|r| r.host == "evil.sandbox.localhost").collect();
    assert!(strays.is_empty(), "requests to the attacker's host: {strays:?}");
    assert!(!requests.iter().any(|r| r.path.contains("/v3")), "nothing to another path of the allowed host");
    for name in ["evil", "steal", "path"] {
        let key = format!("{name}-key");
        assert!(env.sandbox.key(HSM, &key).is_none(), "refused before any Azure call: {key} not created");
    }
    assert!(!env.logs().contains("not-an-api-key-but-a-database-password"), "the Secret's value is never logged");
}
