//! Day-2 operations, end to end against the real API server and the sandbox: what kstatus (the
//! library Flux and `kapply` wait with) computes for the operator's objects, the per-object metrics
//! and the chart's alerts and dashboard naming only what the operator exports, and
//! `rootkey-operator check`.

mod support;

use std::{collections::BTreeSet, io::Write as _, process::Stdio, time::Duration};

use rootkey_operator::api::ConditionStatus;
use rootkey_sandbox::KeyPatch;
use serde_json::{Value, json};
use support::env::{API_KEY, Env, HSM, NO_ROLES_CLIENT, NO_ROLES_SECRET, OperatorOptions, TENANT};

/// A tool `make tools` links into bin/.
fn tool(name: &str) -> String {
    let path = format!("bin/{name}");
    assert!(std::path::Path::new(&path).exists(), "{path} is missing: run `make tools`");
    path
}

/// Runs `program` with `input` on stdin; its stdout, or a panic with its stderr.
fn pipe(program: &str, args: &[&str], input: &[u8]) -> String {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{program} {args:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn run(program: &str, args: &[&str]) -> String {
    pipe(program, args, b"")
}

/// kstatus agrees with the conditions: Ready is `Current`, a terminal reason `Failed` (Flux and
/// `helm --wait` stop at once), a transient one `InProgress`.
#[tokio::test]
async fn kstatus_reads_ready_terminal_and_transient_objects_as_their_conditions_say() {
    let env = Env::start("ops-kstatus").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("ready", env.spec("kstatus-ready", json!({}))).await;
    // An HSM outside the configured cloud: refused before any token is sent (InvalidSpec, terminal).
    let mut foreign = env.spec("kstatus-foreign", json!({}));
    foreign["hsm"] = json!({"url": "https://contoso.vault.example.com"});
    env.apply("foreign-hsm", foreign).await;
    // The API key's Secret does not exist yet: retried with backoff (transient).
    env.apply(
        "waiting",
        env.spec("kstatus-waiting", json!({"antimatter": {"apiKeySecretRef": {"name": "not-yet-created"}}})),
    )
    .await;
    env.wait_ready("ready").await;
    env.wait_condition("foreign-hsm", "Stalled", ConditionStatus::True, Some("InvalidSpec")).await;
    env.wait_condition("waiting", "Reconciling", ConditionStatus::True, Some("SecretNotFound")).await;

    let objects = run("bin/kubectl", &["get", "ark", "-n", &env.ns, "-o", "json"]);
    let computed: Vec<Value> = pipe(&tool("kstatus"), &[], objects.as_bytes())
        .lines()
        .map(|l| serde_json::from_str(l).expect("kstatus JSON line"))
        .collect();
    eprintln!("kstatus: {computed:#?}");
    let status_of = |name: &str| {
        computed
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["status"].as_str())
            .unwrap_or_else(|| panic!("{name} in {computed:?}"))
            .to_owned()
    };
    assert_eq!(status_of("ready"), "Current");
    assert_eq!(status_of("foreign-hsm"), "Failed");
    assert_eq!(status_of("waiting"), "InProgress");
}

/// The names of the series an operator's `/metrics` exports (histogram buckets included).
fn exported_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every PromQL query of the chart: the PrometheusRule's expressions and the dashboard's panel
/// and variable queries, as rendered by `helm template`.
fn chart_queries() -> Vec<String> {
    let rendered = run(
        &tool("helm"),
        &[
            "template",
            "rootkey-operator",
            "charts/rootkey-operator",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
    );
    let mut queries = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&rendered) {
        let doc: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        match doc["kind"].as_str() {
            Some("PrometheusRule") => {
                for group in doc["spec"]["groups"].as_array().expect("groups") {
                    for rule in group["rules"].as_array().expect("rules") {
                        queries.push(rule["expr"].as_str().expect("expr").to_owned());
                    }
                }
            }
            Some("ConfigMap") if doc["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-dashboard")) => {
                let dashboard: Value =
                    serde_json::from_str(doc["data"]["rootkey-operator.json"].as_str().expect("dashboard"))
                        .expect("JSON");
                for panel in dashboard["panels"].as_array().expect("panels") {
                    for target in panel["targets"].as_array().expect("targets") {
                        queries.push(target["expr"].as_str().expect("expr").to_owned());
                    }
                }
                for variable in dashboard["templating"]["list"].as_array().expect("variables") {
                    // Grafana's label_values(SELECTOR, LABEL): the selector is PromQL.
                    if let Some(q) = variable["query"]["query"].as_str() {
                        let selector = q
                            .strip_prefix("label_values(")
                            .and_then(|rest| rest.rsplit_once(','))
                            .map(|(selector, _)| selector.to_owned())
                            .unwrap_or_else(|| panic!("a variable query other than label_values: {q}"));
                        queries.push(selector);
                    }
                }
            }
            _ => {}
        }
    }
    queries
}

/// The per-object series follow the object (pairing success, the key's exp), and every query of
/// the chart's alerts and dashboard parses as PromQL (Prometheus's own parser) and names only
/// series this operator exports.
#[tokio::test]
async fn alerts_and_dashboard_name_only_series_the_operator_exports() {
    let env = Env::start("ops-metrics").await;
    env.api_key_secret("api-key", API_KEY).await;
    env.apply("root", env.spec("metrics-key", json!({}))).await;
    let obj = env.wait_ready("root").await;
    let exp = jiff::Timestamp::now().as_second() + 20 * 86_400;
    env.sandbox.patch_key(HSM, "metrics-key", KeyPatch { exp: Some(Some(exp)), ..Default::default() }).expect("exp");
    env.poke("root").await;
    let healthy_at = obj.status.as_ref().and_then(|s| s.pairing.as_ref()).and_then(|p| p.last_healthy_time.clone());
    assert!(healthy_at.is_some(), "status.pairing.lastHealthyTime: {:?}", obj.status);
    // The housekeeping pass sets the per-object series every 10 s.
    let expiry =
        format!(r#"rootkey_operator_object_key_expiry_timestamp_seconds{{namespace="{}",name="root"}} {exp}"#, env.ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = env.metrics(0).await.unwrap_or_default();
        if metrics.contains(&expiry) {
            break metrics;
        }
        assert!(std::time::Instant::now() < deadline, "no {expiry} in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let success = format!(
        r#"rootkey_operator_object_last_pairing_success_timestamp_seconds{{namespace="{}",name="root"}} "#,
        env.ns
    );
    let line =
        metrics.lines().find(|l| l.starts_with(&success)).unwrap_or_else(|| panic!("no {success} in\n{metrics}"));
    let value: i64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    assert!(value >= healthy_at.map(|t| t.0.as_second()).unwrap_or_default(), "{line}");

    let exported = exported_names(&metrics);
    let queries = chart_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    let parsed = pipe(&tool("promql-selectors"), &[], queries.join("\n").as_bytes());
    let mut named = BTreeSet::new();
    for line in parsed.lines() {
        let result: Value = serde_json::from_str(line).expect("JSON line");
        for name in result["metrics"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            assert!(!name.is_empty(), "a selector without a metric name: {}", result["query"]);
            named.insert(name.to_owned());
        }
    }
    let unknown: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the chart queries series the operator does not export: {unknown:?}\nexported: {exported:?}"
    );
    assert!(named.len() >= 9, "{named:?}");

    // The series go with the object.
    env.delete("root").await;
    env.wait_gone("root", Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.metrics(0).await.unwrap_or_default().contains(&format!(r#"namespace="{}",name="root""#, env.ns)) {
        assert!(std::time::Instant::now() < deadline, "the deleted object's series stay");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `rootkey-operator check` as the operator: every line passes with the operator's rights; an
/// identity without HSM roles, and a Kubernetes user without RBAC, each fail with the permission
/// named and a non-zero exit.
#[tokio::test]
async fn check_passes_as_the_operator_and_names_what_a_bare_identity_lacks() {
    let env = Env::without_operator("ops-check").await;
    let check = async |options: &OperatorOptions, extra_env: &[(&str, &str)]| {
        let mut cmd = env.operator_command("check", options);
        cmd.args(["--hsm", HSM, "--tenant-id", TENANT]);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        // Awaited, not waited for: the sandbox answers on this test's runtime.
        let out = tokio::process::Command::from(cmd).output().await.expect("check");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("check:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.success(), stdout)
    };
    let leader = OperatorOptions { leader_elect: true, ..Default::default() };
    let (ok, out) = check(&leader, &[]).await;
    assert!(ok, "{out}");
    for expected in [
        "PASS  crd ",
        "PASS  rbac             get,list,watch,patch azurerootkeys.antimatter.io in ",
        "PASS  rbac             patch azurerootkeys/status.antimatter.io in ",
        "PASS  rbac             get namespaces kube-system in all namespaces",
        "PASS  rbac             get,update leases.coordination.k8s.io rootkey-operator in ",
        "PASS  azure token ",
        "PASS  hsm keys ",
        "holds Managed HSM Crypto User at /",
        "holds Managed HSM Policy Administrator at /",
        &format!("PASS  antimatter       {} answers", env.api_url()),
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");

    // An Azure identity without any HSM role.
    let bare_identity = [("AZURE_CLIENT_ID", NO_ROLES_CLIENT), ("AZURE_CLIENT_SECRET", NO_ROLES_SECRET)];
    let (ok, out) = check(&OperatorOptions::default(), &bare_identity).await;
    assert!(!ok, "a failed check exits non-zero");
    assert!(out.contains("PASS  azure token "), "{out}");
    assert!(out.contains("FAIL  hsm keys ") && out.contains("Managed HSM Crypto User at /keys"), "{out}");
    assert!(out.contains("FAIL  hsm roles ") && out.contains("Managed HSM Policy Administrator"), "{out}");

    // A service account with no role at all, through a kubeconfig of its own token.
    let kubeconfig = bare_service_account_kubeconfig(&env).await;
    let (ok, out) = check(&OperatorOptions::default(), &[("KUBECONFIG", kubeconfig.as_str())]).await;
    assert!(!ok);
    assert!(out.contains("FAIL  rbac             get,list,watch,patch azurerootkeys.antimatter.io in "), "{out}");
    assert!(out.contains("get,list,watch,patch refused"), "{out}");
    assert!(out.contains("FAIL  crd "), "a bare account cannot even read the CRD:\n{out}");
}

/// A kubeconfig for a new service account of `env`'s namespace, with no role bound.
async fn bare_service_account_kubeconfig(env: &Env) -> String {
    run("bin/kubectl", &["create", "serviceaccount", "bare", "-n", &env.ns]);
    let token = run("bin/kubectl", &["create", "token", "bare", "-n", &env.ns]);
    let view = run("bin/kubectl", &["config", "view", "--raw", "--minify", "-o", "json"]);
    let mut config: Value = serde_json::from_str(&view).expect("kubeconfig JSON");
    config["users"] = json!([{"name": "bare", "user": {"token": token.trim()}}]);
    config["contexts"][0]["context"]["user"] = json!("bare");
    let path = env.log_dir.join(format!("{}-bare.kubeconfig", env.ns));
    std::fs::write(&path, config.to_string()).expect("write kubeconfig");
    path.to_string_lossy().into_owned()
}
