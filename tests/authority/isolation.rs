//! No tenant can slow or crash the others: objects whose Antimatter endpoint never answers do not
//! hold up another namespace, and a `Retry-After` of 2^63 seconds (on the HSM path and on the
//! Antimatter path) neither crashes the operator nor parks it.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use rootkey_operator::{
    api::{AzureRootKey, ConditionStatus},
    remote::MAX_RETRY_AFTER,
};
use rootkey_sandbox::FaultAction;
use serde_json::json;
use tokio::net::TcpListener;

use super::support::{
    checks::fault,
    env::{API_KEY, Env, OperatorOptions, SpawnExtra, condition},
};

/// A TCP endpoint on loopback that accepts connections and never answers (not even the TLS
/// handshake); returns its address and how many connections it has accepted so far.
async fn black_hole() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            open.push(conn);
        }
    });
    (addr, accepted)
}

fn antimatter_requests(env: &Env) -> usize {
    env.sandbox.requests().iter().filter(|r| r.service == "antimatter" && !r.internal).count()
}

#[tokio::test]
async fn an_unreachable_antimatter_url_on_30_objects_does_not_delay_another_namespace() {
    let mut env = Env::without_operator("auth-iso").await;
    let other = super::support::namespace(&env.client, "auth-iso-other").await;
    // An Antimatter endpoint on loopback that accepts and never answers, allowlisted as an
    // administrator's endpoint that went dark would be.
    let (hole, accepted) = black_hole().await;
    env.spawn_operator_ext(
        &OperatorOptions::default(),
        &SpawnExtra {
            args: vec![
                "--watch-namespaces".into(),
                format!("{},{other}", env.ns),
                "--antimatter-api-urls".into(),
                format!("{},https://{hole}", env.api_url()),
            ],
            ..Default::default()
        },
    );

    // The other tenant: one object on the sandbox's Antimatter, Ready before the trouble starts.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &other);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-key"},
        "stringData": {"apiKey": API_KEY}});
    secrets
        .patch("api-key", &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&secret))
        .await
        .expect("secret");
    let others: Api<AzureRootKey> = Api::namespaced(env.client.clone(), &other);
    let doc = json!({"apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey", "metadata": {"name": "steady"},
        "spec": env.spec("k-steady", json!({}))});
    others.patch("steady", &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&doc)).await.expect("apply");
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let o = others.get("steady").await.expect("get");
        if condition(&o, "Ready").is_some_and(|c| c.status == ConditionStatus::True) {
            break;
        }
        assert!(Instant::now() < ready_by, "steady not Ready: {:?}", o.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // This tenant: 30 objects on the endpoint that never answers.
    env.api_key_secret("api-key", API_KEY).await;
    for i in 0..30 {
        env.apply(
            &format!("stuck-{i}"),
            env.spec(&format!("k-stuck-{i}"), json!({"antimatter": {"apiUrl": format!("https://{hole}")}})),
        )
        .await;
    }
    let stuck_by = Instant::now() + Duration::from_secs(60);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < stuck_by, "no object reached the black hole");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A poke of the other tenant's object: its reconcile reaches Antimatter (its steady check)
    // at once, not after the stuck logins.
    let before = antimatter_requests(&env);
    let poked = Instant::now();
    let patch = json!({"metadata": {"annotations": {"rootkey-tests/poke": "1"}}});
    others.patch("steady", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("poke");
    let delay = loop {
        if antimatter_requests(&env) > before {
            break poked.elapsed();
        }
        assert!(poked.elapsed() < Duration::from_secs(60), "the poke never reached Antimatter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("poke reached Antimatter after {delay:?}; black hole accepted {accepted:?} connections");
    assert!(delay <= Duration::from_secs(2), "the other namespace's poke waited {delay:?} for the stuck tenant");
    assert!(env.operator_exited(0).is_none(), "the operator is still running");
}

/// Waits until some condition of `name` has reason `Throttled`; returns its message.
async fn throttled_message(env: &Env, name: &str) -> String {
    let o = env
        .wait_for(name, Duration::from_secs(60), "a Throttled condition", |o| {
            o.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "Throttled"))
        })
        .await;
    let status = o.status.unwrap_or_default();
    status.conditions.iter().find(|c| c.reason == "Throttled").map(|c| c.message.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_retry_after_of_2_63_seconds_keeps_the_process_up() {
    let mut env = Env::without_operator("auth-retry").await;
    env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    env.api_key_secret("api-key", API_KEY).await;
    let forever = FaultAction::Status { status: 429, retry_after: Some(1 << 63) };
    let capped = format!("Retrying after {}s", MAX_RETRY_AFTER.as_secs());

    // The HSM path (the Azure SDK's key client).
    env.sandbox.add_fault(fault("hsm", Some("key.get"), forever.clone(), Some(1)));
    env.apply("hsm-throttled", env.spec("k-hsm-throttled", json!({}))).await;
    let message = throttled_message(&env, "hsm-throttled").await;
    assert!(message.contains(&capped), "{message}");
    env.apply("steady", env.spec("k-steady", json!({}))).await;
    env.wait_ready("steady").await;

    // The Antimatter path (hand-written), on the registration a new object makes.
    env.sandbox.add_fault(fault("antimatter", Some("rek.add"), forever, Some(1)));
    env.apply("antimatter-throttled", env.spec("k-antimatter-throttled", json!({}))).await;
    let message = throttled_message(&env, "antimatter-throttled").await;
    assert!(message.contains(&capped), "{message}");

    // Still up, and still reconciling: a poke of the Ready object is checked again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.operator_exited(0).is_none(), "the operator exited: {}", env.logs());
    let before = env.sandbox.requests().len();
    env.poke("steady").await;
    let poked = Instant::now();
    while env.sandbox.requests().len() == before {
        assert!(poked.elapsed() < Duration::from_secs(30), "the operator no longer reconciles");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.operator_exited(0).is_none(), "the operator exited: {}", env.logs());
}
