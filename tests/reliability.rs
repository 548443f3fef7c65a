//! Reliability and security, fast versions (`make test`): faults on every remote, SIGKILL and
//! SIGTERM, an API server restart, leader failover, hostile URLs/Secrets/responses, leaked secrets,
//! and the Helm chart's RBAC checked with SubjectAccessReviews. The long versions are in `soak.rs`.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{authorization::v1::SubjectAccessReview, coordination::v1::Lease};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use rootkey_operator::api::ConditionStatus;
use rootkey_sandbox::FaultAction;
use serde_json::json;
use support::{
    checks::{self, fault},
    env::{Env, OperatorOptions, SpawnExtra, condition},
};

async fn operator_env(prefix: &str) -> Env {
    let mut env = Env::without_operator(prefix).await;
    env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    env
}

#[tokio::test]
async fn faults_on_every_service_for_20s_then_all_ready_without_duplicates() {
    let env = operator_env("rel-faults").await;
    let objs = checks::populate(&env, 20).await;
    let ids: Vec<u64> = checks::storm(0.3).into_iter().map(|f| env.sandbox.add_fault(f)).collect();
    checks::apply_all(&env, &objs).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    env.sandbox.clear_faults();
    let converge = checks::wait_all_ready(&env, &objs, Duration::from_secs(150)).await;
    let log = env.sandbox.requests();
    let (total, failed) = checks::injected(&log);
    let (checked, violations) = checks::retry_after_violations(&log);
    let inv = checks::invariants(&env, &objs);
    let metrics = env.metrics(0).await.expect("metrics");
    let (calls, retried) = checks::remote_calls(&metrics);
    eprintln!(
        "faults: {} rules, {failed}/{total} requests failed; converged {converge:?}; {calls} calls, {retried} failed; {checked} 429s checked",
        ids.len()
    );
    assert!(converge.is_ok(), "not all Ready: {converge:?}");
    assert!(failed > 0, "faults were injected");
    assert!(violations.is_empty(), "Retry-After not honoured: {violations:#?}");
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);
    assert!(checks::leaked_secrets(&env, &[metrics], &[]).await.is_empty());
}

#[tokio::test]
async fn sigkill_at_random_points_converges_without_duplicates_or_orphans() {
    let mut env = operator_env("rel-kill").await;
    let objs = checks::populate(&env, 8).await;
    checks::apply_all(&env, &objs).await;
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..2500))).await;
        env.kill_operator(env.operator_count() - 1);
        env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
        eprintln!("kill {i} done");
    }
    let converge = checks::wait_all_ready(&env, &objs, Duration::from_secs(60)).await;
    assert!(converge.is_ok(), "not all Ready after restarts: {converge:?}");
    let inv = checks::invariants(&env, &objs);
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);

    // Revoke half of them with a kill in the middle: nothing may be left behind.
    let (gone, kept) = objs.split_at(4);
    for o in gone {
        env.delete(&o.name).await;
    }
    tokio::time::sleep(Duration::from_millis(fastrand::u64(100..800))).await;
    env.kill_operator(env.operator_count() - 1);
    env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    for o in gone {
        env.wait_gone(&o.name, Duration::from_secs(60)).await;
    }
    assert_eq!(checks::orphans(&env, gone), Vec::<String>::new());
    let inv = checks::invariants(&env, kept);
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);
}

#[tokio::test]
async fn api_server_restart_operator_reconnects_without_restart() {
    let mut cp = controlplane::ControlPlane::start(&controlplane::default_bin_dir()).await.expect("own control plane");
    let mut env = Env::on_control_plane(cp.kubeconfig_path(), "rel-apiserver").await;
    env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    let objs = checks::populate(&env, 4).await;
    let (before, after) = objs.split_at(2);
    checks::apply_all(&env, before).await;
    checks::wait_all_ready(&env, before, Duration::from_secs(60)).await.expect("Ready before the outage");

    cp.stop_apiserver();
    cp.stop_etcd();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cp.start_etcd().expect("etcd");
    cp.start_apiserver().expect("apiserver");
    cp.wait_ready(Duration::from_secs(90)).await.expect("control plane back");
    let outage_end = Instant::now();

    checks::apply_all(&env, after).await;
    let converge = checks::wait_all_ready(&env, &objs, Duration::from_secs(90)).await;
    let converged = outage_end.elapsed();
    assert!(converge.is_ok(), "no convergence after the API server came back: {converge:?}");
    assert!(env.operator_exited(0).is_none(), "the operator exited instead of reconnecting");
    eprintln!("converged {converged:?} after the control plane returned");
    // The watch retries within 1 s (`run::watch_backoff`); kube's default backoff, stacked on it,
    // slept up to 30 s after a long outage.
    assert!(converged < Duration::from_secs(5), "objects created after the outage Ready only after {converged:?}");
    let inv = checks::invariants(&env, &objs);
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);
}

/// `changed` lines of one operator log, with their timestamps.
fn changed_times(log: &str) -> Vec<jiff::Timestamp> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "changed" || v["fields"]["message"] == "changed")
        .filter_map(|v| v["timestamp"].as_str().and_then(|t| t.parse().ok()))
        .collect()
}

#[tokio::test]
async fn leader_failover_within_lease_time_and_never_two_writers() {
    let mut env = Env::without_operator("rel-leader").await;
    let opts = OperatorOptions { leader_elect: true, ..Default::default() };
    env.spawn_operator_ext(&opts, &SpawnExtra::default());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.spawn_operator_ext(&opts, &SpawnExtra::default());
    let objs = checks::populate(&env, 6).await;
    let (first, second) = objs.split_at(3);
    checks::apply_all(&env, first).await;
    checks::wait_all_ready(&env, first, Duration::from_secs(60)).await.expect("Ready under the first leader");
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let leader = holder(leases.get("rootkey-operator").await.expect("lease"));
    let leader_index: usize = leader.trim_start_matches("operator-").parse().expect("holder is operator-N");
    let other = 1 - leader_index;

    let killed_at = Instant::now();
    let killed_wall = jiff::Timestamp::now();
    env.kill_operator(leader_index);
    let took_over = loop {
        let h = holder(leases.get("rootkey-operator").await.expect("lease"));
        if h == format!("operator-{other}") {
            break killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < Duration::from_secs(25), "no takeover after {:?}", killed_at.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    checks::apply_all(&env, second).await;
    checks::wait_all_ready(&env, &objs, Duration::from_secs(60)).await.expect("Ready under the new leader");
    eprintln!("takeover after {took_over:?}");
    assert!(took_over <= Duration::from_secs(17), "takeover took {took_over:?} (lease 15 s)");

    let old = changed_times(&std::fs::read_to_string(env.log_path(leader_index)).unwrap_or_default());
    let new = changed_times(&std::fs::read_to_string(env.log_path(other)).unwrap_or_default());
    assert!(!old.is_empty() && !new.is_empty(), "both leaders wrote: old {} new {}", old.len(), new.len());
    assert!(old.iter().all(|t| *t <= killed_wall), "the killed leader wrote after its death?");
    assert!(new.iter().all(|t| *t >= killed_wall), "the standby wrote while the leader was alive: {new:?}");
    let inv = checks::invariants(&env, &objs);
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);
}

/// SIGTERM with reconciles in flight: the operator gives them `run::SHUTDOWN_DRAIN` (1 s), drops the
/// rest and exits; a new operator finishes every object with nothing duplicated or lost. (It used to
/// wait for all of them: with 2 s per HSM call, well past 5 s.)
#[tokio::test]
async fn sigterm_stops_soon_with_reconciles_in_flight_and_the_next_operator_finishes_them() {
    let mut env = operator_env("rel-sigterm").await;
    let objs = checks::populate(&env, 6).await;
    // Slow remotes so that reconciles are in flight when SIGTERM arrives.
    env.sandbox.add_fault(fault("hsm", None, FaultAction::Latency { ms: 2000 }, None));
    checks::apply_all(&env, &objs).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    env.terminate_operator(0);
    let status = loop {
        if let Some(s) = env.operator_exited(0) {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM (reconciles in flight get 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("exited {status:?} after {:?}", start.elapsed());
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");

    env.sandbox.clear_faults();
    env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    checks::wait_all_ready(&env, &objs, Duration::from_secs(60)).await.expect("Ready under the next operator");
    let inv = checks::invariants(&env, &objs);
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);
}

#[tokio::test]
async fn hostile_urls_secrets_and_objects_get_clear_conditions_and_no_credential_leaves() {
    let mut env = operator_env("rel-hostile").await;
    env.api_key_secret("api-key", support::env::API_KEY).await;
    let port = env.sandbox.port();
    let garbage_value = format!("garbage-{}", "x".repeat(64));
    // HSM URLs elsewhere: another host, an IP literal (the sandbox cert covers 127.0.0.1), http.
    let hostile_hsm = [
        ("hsm-foreign", format!("https://evil.sandbox.localhost:{port}"), "InvalidSpec"),
        ("hsm-ip", format!("https://127.0.0.1:{port}"), "InvalidSpec"),
    ];
    for (name, url, _) in &hostile_hsm {
        env.apply(name, env.spec("k-hostile", json!({"hsm": {"name": null, "url": url}}))).await;
    }
    // http is refused at admission already.
    let doc = json!({"apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey", "metadata": {"name": "hsm-http"},
        "spec": env.spec("k", json!({"hsm": {"name": null, "url": format!("http://contoso-hsm.managedhsm.sandbox.localhost:{port}")}}))});
    let http = env.api.patch("hsm-http", &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&doc)).await;
    // Either admission refuses it or the operator does; record which.
    // Secrets: missing Secret, missing key, binary garbage, huge value.
    env.apply("no-secret", env.spec("k-nosecret", json!({"antimatter": {"apiKeySecretRef": {"name": "missing"}}})))
        .await;
    env.secret("wrong-key", json!({"other": "x"})).await;
    env.apply("no-key", env.spec("k-nokey", json!({"antimatter": {"apiKeySecretRef": {"name": "wrong-key"}}}))).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let huge = format!("{garbage_value}{}", "y".repeat(900_000));
    for (name, data) in [
        ("binary", binary),
        ("huge", huge.clone().into_bytes()),
        ("multiline", format!("{garbage_value}\nline2").into_bytes()),
    ] {
        let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "data": {"apiKey": k8s_openapi::ByteString(data)}
        }))
        .expect("secret");
        secrets.create(&PostParams::default(), &s).await.expect("create secret");
        env.apply(
            &format!("secret-{name}"),
            env.spec(&format!("k-{name}"), json!({"antimatter": {"apiKeySecretRef": {"name": name}}})),
        )
        .await;
    }
    // A huge object: 200 KB of annotations.
    let big = json!({"apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey",
        "metadata": {"name": "huge-object", "annotations": {"rootkey-tests/blob": "z".repeat(200_000)}},
        "spec": env.spec("k-huge", json!({}))});
    env.api
        .patch("huge-object", &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&big))
        .await
        .expect("huge object");

    for (name, _, reason) in &hostile_hsm {
        let o = env.wait_condition(name, "Ready", ConditionStatus::False, None).await;
        let c = condition(&o, "Ready").expect("Ready");
        let all: Vec<_> = o
            .status
            .as_ref()
            .map(|s| s.conditions.iter().map(|c| (c.reason.clone(), c.message.clone())).collect())
            .unwrap_or_default();
        assert!(all.iter().any(|(r, _)| r == reason), "{name}: {all:?} (Ready {})", c.message);
    }
    match http {
        Err(e) => eprintln!("http HSM URL refused at admission: {e}"),
        Ok(_) => {
            let o = env.wait_condition("hsm-http", "Ready", ConditionStatus::False, None).await;
            eprintln!("http HSM URL: {:?}", condition(&o, "Ready").map(|c| &c.message));
        }
    }
    for name in ["no-secret", "no-key"] {
        env.wait_for(name, Duration::from_secs(30), "SecretNotFound", |o| {
            o.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "SecretNotFound"))
        })
        .await;
    }
    for name in ["secret-binary", "secret-huge", "secret-multiline"] {
        let o = env
            .wait_for(name, Duration::from_secs(30), "InvalidSpec for a garbage Secret", |o| {
                o.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "InvalidSpec"))
            })
            .await;
        eprintln!("{name}: {:?}", condition(&o, "Ready").map(|c| &c.message));
    }
    env.wait_ready("huge-object").await;
    assert!(env.operator_exited(0).is_none(), "the operator is still running");

    // Redirects to a foreign host on every service: followed or not, no credential may go there.
    let evil = format!("https://evil.sandbox.localhost:{port}{{path}}");
    for (svc, op, loc) in [
        ("entra", "token", &evil),
        ("graph", "sp.get", &evil),
        ("hsm", "key.get", &evil),
        ("antimatter", "authenticate", &evil),
        ("antimatter", "rek.list", &evil),
    ] {
        env.sandbox.add_fault(fault(
            svc,
            Some(op),
            FaultAction::Redirect { location: loc.clone(), status: None },
            Some(3),
        ));
    }
    env.apply("redirected", env.spec("k-redirect", json!({}))).await;
    env.wait_for("redirected", Duration::from_secs(90), "Ready after redirects", |o| {
        condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    let log = env.sandbox.requests();
    let bad = checks::foreign_credential_requests(
        &log,
        &["evil.sandbox.localhost", "127.0.0.1", "other-hsm.managedhsm.sandbox.localhost"],
    );
    assert!(bad.is_empty(), "credentials sent to a foreign host: {bad:#?}");
    let to_ip: Vec<_> = log.iter().filter(|r| r.host == "127.0.0.1").collect();
    assert!(to_ip.is_empty(), "a request went to the IP-literal HSM URL: {to_ip:?}");

    let metrics = env.metrics(0).await.expect("metrics");
    let leaks = checks::leaked_secrets(&env, &[metrics], &[&garbage_value]).await;
    assert!(leaks.is_empty(), "secret values in logs/events/status/metrics: {leaks:?}");
}

#[tokio::test]
async fn malformed_and_oversized_responses_get_a_clear_condition_then_recover() {
    let env = operator_env("rel-malformed").await;
    env.api_key_secret("api-key", support::env::API_KEY).await;
    let cases: Vec<(&str, &str, FaultAction)> = vec![
        ("hsm", "key.get", FaultAction::Body { status: None, body: "{\"key\": {\"kid\": ".into(), content_type: None }),
        (
            "hsm",
            "rbac.assignment.get",
            FaultAction::Body {
                status: None,
                body: "{\"id\": 42, \"name\": [], \"properties\": \"x\"}".into(),
                content_type: None,
            },
        ),
        ("graph", "sp.list", FaultAction::Huge { bytes: 10 << 20 }),
        (
            "antimatter",
            "rek.list",
            FaultAction::Body { status: None, body: "[{\"rekID\": 7}".into(), content_type: None },
        ),
        ("antimatter", "rek.test", FaultAction::Huge { bytes: 10 << 20 }),
        (
            "entra",
            "token",
            FaultAction::Body {
                status: None,
                body: "{\"access_token\": 12, \"expires_in\": \"soon\"}".into(),
                content_type: None,
            },
        ),
    ];
    for (i, (svc, op, action)) in cases.into_iter().enumerate() {
        let name = format!("m{i}");
        env.sandbox.add_fault(fault(svc, Some(op), action.clone(), None));
        env.apply(&name, env.spec(&format!("k-m{i}"), json!({}))).await;
        let start = Instant::now();
        let o = env
            .wait_for(&name, Duration::from_secs(45), &format!("{svc} {op}: a failure condition"), |o| {
                condition(o, "Ready").is_some_and(|c| {
                    c.status == ConditionStatus::False && !c.reason.starts_with("Waiting") && c.reason != "Progressing"
                }) || condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
                    // A pairing check failing right after the operator's grant is checked again while
                    // access propagates; its condition says what the check answered.
                    || condition(o, "Paired").is_some_and(|c| c.reason == "PropagationPending")
            })
            .await;
        let c = condition(&o, "Ready").expect("Ready").clone();
        eprintln!(
            "{svc} {op} {action:?}: Ready={:?} {} {:?} after {:?}",
            c.status,
            c.reason,
            c.message,
            start.elapsed()
        );
        env.sandbox.clear_faults();
        env.wait_for(&name, Duration::from_secs(60), "Ready after the fault", |o| {
            condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
        })
        .await;
    }
    let pid = env.operator_pid(0);
    let hwm_kb = checks::peak_rss_kib(pid);
    eprintln!("operator peak RSS {} MiB", hwm_kb / 1024);
    assert!(hwm_kb < 256 * 1024, "peak RSS {hwm_kb} kB after 10 MB bodies");
}

/// One SubjectAccessReview question: (verb, group, resource, subresource, namespace, name).
type Access<'a> = (&'a str, &'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// The chart's RBAC rendered with `values` for a release in `ns`, applied to the control plane.
struct ChartRbac {
    client: kube::Client,
    ns: String,
    sa: String,
    applied: Vec<String>,
}

impl ChartRbac {
    async fn apply(ns: &str, values: &[String]) -> Self {
        let client = support::client().await;
        let release = format!("rk{}", fastrand::u32(..));
        let out = std::process::Command::new("bin/helm")
            .args(["template", &release, "charts/rootkey-operator", "--namespace", ns])
            .args(values)
            .output()
            .expect("helm template");
        assert!(out.status.success(), "helm: {}", String::from_utf8_lossy(&out.stderr));
        let rendered = String::from_utf8(out.stdout).expect("utf8");
        let mut sa = None;
        let mut applied = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&rendered) {
            let Ok(v) = <serde_json::Value as serde::Deserialize>::deserialize(doc) else { continue };
            if v.is_null() {
                continue;
            }
            let kind = v["kind"].as_str().unwrap_or_default().to_owned();
            if !["ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"].contains(&kind.as_str())
            {
                continue;
            }
            if kind == "ServiceAccount" {
                sa = v["metadata"]["name"].as_str().map(str::to_owned);
            }
            let obj: DynamicObject = serde_json::from_value(v.clone()).expect("object");
            let (ar, caps) = kube::discovery::pinned_kind(
                &client,
                &kube::core::GroupVersionKind::try_from(obj.types.as_ref().expect("types")).expect("gvk"),
            )
            .await
            .expect("discover");
            let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Cluster {
                Api::all_with(client.clone(), &ar)
            } else {
                Api::namespaced_with(client.clone(), v["metadata"]["namespace"].as_str().unwrap_or(ns), &ar)
            };
            let name = obj.metadata.name.clone().expect("name");
            api.patch(&name, &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&obj))
                .await
                .expect("apply rbac");
            applied.push(format!("{kind}/{name}"));
        }
        let sa = sa.expect("the chart renders a ServiceAccount");
        Self { client, ns: ns.to_owned(), sa, applied }
    }

    async fn can(&self, (verb, group, resource, sub, namespace, name): Access<'_>) -> bool {
        let ns = &self.ns;
        let review: SubjectAccessReview = serde_json::from_value(json!({"spec": {
            "user": format!("system:serviceaccount:{ns}:{}", self.sa),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "subresource": sub,
                "namespace": namespace, "name": name}}}))
        .expect("review");
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        reviews.create(&PostParams::default(), &review).await.expect("review").status.is_some_and(|s| s.allowed)
    }

    /// What the ServiceAccount cannot do of `must`, and can do of `must_not`.
    async fn wrong(&self, must: &[Access<'_>], must_not: &[Access<'_>]) -> Vec<String> {
        let mut wrong = Vec::new();
        for &access in must {
            if !self.can(access).await {
                wrong.push(format!("cannot {access:?}"));
            }
        }
        for &access in must_not {
            if self.can(access).await {
                wrong.push(format!("CAN {access:?}"));
            }
        }
        eprintln!("applied {:?}", self.applied);
        wrong
    }

    /// Removes the cluster-scoped objects (the namespace takes the rest with it).
    async fn remove_cluster_objects(&self) {
        for a in self.applied.iter().filter(|a| a.starts_with("Cluster")) {
            let (kind, name) = a.split_once('/').expect("kind/name");
            let gvk = kube::core::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind);
            let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk).await.expect("discover");
            let _ = Api::<DynamicObject>::all_with(self.client.clone(), &ar).delete(name, &Default::default()).await;
        }
    }
}

/// What no mode may grant on Secrets in `ns`: listing or watching them, there or cluster-wide
/// (the operator only `get`s the Secrets objects name).
fn no_secret_listing(ns: &str) -> Vec<Access<'_>> {
    let mut denied = Vec::new();
    for verb in ["list", "watch"] {
        for namespace in [Some(ns), Some("kube-system"), None] {
            denied.push((verb, "", "secrets", "", namespace, None));
        }
    }
    denied
}

#[tokio::test]
async fn helm_chart_service_account_can_do_exactly_what_the_operator_needs() {
    let client = support::client().await;
    let ns = support::namespace(&client, "rel-rbac").await;
    let unserved = support::namespace(&client, "rel-rbac-unserved").await;
    let rbac = ChartRbac::apply(&ns, &["--set".into(), format!("watchNamespaces={{{ns}}}")]).await;
    let sa = rbac.sa.clone();
    let n = Some(ns.as_str());
    let g = "antimatter.io";
    let must = [
        ("get", g, "azurerootkeys", "", n, None),
        ("list", g, "azurerootkeys", "", n, None),
        ("watch", g, "azurerootkeys", "", n, None),
        ("patch", g, "azurerootkeys", "", n, None),
        ("patch", g, "azurerootkeys", "status", n, None),
        ("update", g, "azurerootkeys", "finalizers", n, None),
        ("get", "", "secrets", "", n, None),
        ("create", "events.k8s.io", "events", "", n, None),
        ("get", "coordination.k8s.io", "leases", "", n, Some("rootkey-operator")),
        ("update", "coordination.k8s.io", "leases", "", n, Some("rootkey-operator")),
        ("create", "coordination.k8s.io", "leases", "", n, None),
        ("get", "", "namespaces", "", None, Some("kube-system")),
    ];
    let mut must_not = vec![
        ("create", "", "secrets", "", n, None),
        ("delete", "", "secrets", "", n, None),
        ("update", "", "secrets", "", n, None),
        // No Secret read in namespaces the operator does not serve.
        ("get", "", "secrets", "", Some("kube-system"), None),
        ("get", "", "secrets", "", Some("default"), None),
        ("get", "", "secrets", "", Some(unserved.as_str()), None),
        ("get", "", "secrets", "", None, None),
        ("delete", g, "azurerootkeys", "", n, None),
        ("create", g, "azurerootkeys", "", n, None),
        ("list", "", "pods", "", n, None),
        ("list", g, "azurerootkeys", "", Some("default"), None),
        ("update", "coordination.k8s.io", "leases", "", Some("kube-system"), Some("rootkey-operator")),
        ("update", "coordination.k8s.io", "leases", "", n, Some("someone-else")),
        ("get", "", "namespaces", "", None, Some("default")),
        ("list", "", "namespaces", "", None, None),
        ("create", "rbac.authorization.k8s.io", "roles", "", n, None),
        ("patch", "events.k8s.io", "events", "", n, None),
        ("impersonate", "", "serviceaccounts", "", n, None),
        ("create", "", "serviceaccounts", "token", n, Some(sa.as_str())),
    ];
    must_not.extend(no_secret_listing(&ns));
    let wrong = rbac.wrong(&must, &must_not).await;
    rbac.remove_cluster_objects().await;
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn helm_chart_in_cluster_mode_reads_secrets_but_never_lists_or_watches_them() {
    let client = support::client().await;
    let ns = support::namespace(&client, "rel-rbac-cluster").await;
    let other = support::namespace(&client, "rel-rbac-other").await;
    let rbac = ChartRbac::apply(&ns, &[]).await;
    let g = "antimatter.io";
    let must = [
        ("list", g, "azurerootkeys", "", None, None),
        ("watch", g, "azurerootkeys", "", None, None),
        ("get", "", "secrets", "", Some(other.as_str()), None),
        ("get", "coordination.k8s.io", "leases", "", Some(ns.as_str()), Some("rootkey-operator")),
    ];
    let mut must_not = vec![
        ("create", "", "secrets", "", Some(other.as_str()), None),
        ("update", "", "secrets", "", Some(other.as_str()), None),
    ];
    must_not.extend(no_secret_listing(&other));
    must_not.extend(no_secret_listing(&ns));
    let wrong = rbac.wrong(&must, &must_not).await;
    rbac.remove_cluster_objects().await;
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn redirect_from_the_hsm_to_another_host_carries_no_token() {
    let env = operator_env("rel-redirect").await;
    env.api_key_secret("api-key", support::env::API_KEY).await;
    let port = env.sandbox.port();
    let other = format!("https://other-hsm.managedhsm.sandbox.localhost:{port}{{path}}");
    for op in ["rbac.assignment.get", "key.get"] {
        env.sandbox.add_fault(fault(
            "hsm",
            Some(op),
            FaultAction::Redirect { location: other.clone(), status: None },
            Some(3),
        ));
    }
    env.apply("redirected", env.spec("k-redirect", json!({}))).await;
    env.wait_ready("redirected").await;
    let log = env.sandbox.requests();
    let bad = checks::foreign_credential_requests(&log, &["other-hsm.managedhsm.sandbox.localhost"]);
    assert!(bad.is_empty(), "token sent to a host the object does not name: {bad:#?}");
}

/// Entra throttling and outages are what they are, not a refused credential: a 429 storm on the
/// token endpoint shows `Throttled` and no token request goes out before its `Retry-After`; a 503
/// shows `AzureUnreachable`; both recover when the endpoint does.
#[tokio::test]
async fn a_throttled_or_failing_token_endpoint_is_throttling_or_an_outage_not_invalid_credentials() {
    use ConditionStatus::False as F;
    let env = operator_env("rel-entra").await;
    env.api_key_secret("api-key", support::env::API_KEY).await;
    let wait = 5;
    env.sandbox.add_fault(fault(
        "entra",
        Some("token"),
        FaultAction::Status { status: 429, retry_after: Some(wait) },
        None,
    ));
    env.apply("throttled", env.spec("k-throttled", json!({}))).await;
    let o = env.wait_condition("throttled", "KeyReady", F, Some("Throttled")).await;
    let message = &condition(&o, "KeyReady").expect("KeyReady").message;
    assert!(message.contains("429") && message.contains(&format!("after {wait}s")), "{message}");
    tokio::time::sleep(Duration::from_secs(2 * wait + 1)).await;
    let tokens: Vec<u64> = env.sandbox.requests().iter().filter(|r| r.operation == "token").map(|r| r.at_ms).collect();
    let first = *tokens.first().expect("a token request");
    // Requests sent together before the first 429 came back are fine; none until it elapses.
    let early: Vec<u64> = tokens.iter().map(|t| t - first).filter(|d| (200..wait * 1000 - 100).contains(d)).collect();
    assert!(early.is_empty(), "token requests {early:?} ms after a 429 asking for {wait} s: {tokens:?}");
    assert!(tokens.len() >= 2, "asked again after the wait: {tokens:?}");
    env.sandbox.clear_faults();
    env.wait_ready("throttled").await;

    env.sandbox.add_fault(fault("entra", Some("token"), FaultAction::Status { status: 503, retry_after: None }, None));
    // A new identity (its own Secret), so no cached token hides the outage.
    env.secret(
        "own",
        json!({"clientId": support::env::OPERATOR_CLIENT, "clientSecret": support::env::OPERATOR_SECRET}),
    )
    .await;
    env.apply("outage", env.spec("k-outage", json!({"azureCredentialsSecretRef": {"name": "own"}}))).await;
    env.wait_condition("outage", "KeyReady", F, Some("AzureUnreachable")).await;
    env.sandbox.clear_faults();
    env.wait_for("outage", Duration::from_secs(60), "Ready after the outage", |o| {
        condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
}
