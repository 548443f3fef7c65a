//! The Helm chart and the binary agree: every environment variable the chart's Deployment sets is a
//! flag of `rootkey-operator run`, the chart's tenancy policy parses as the operator reads it, and the
//! install notes name the roles the operator needs.

use clap::{Args, Command};
use rootkey_operator::{
    policy::{Request, TenancyPolicy},
    run::{DEFAULT_LOG_FILTER, RunArgs},
};
use serde::Deserialize as _;

fn run_env_names() -> Vec<String> {
    RunArgs::augment_args(Command::new("run"))
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect()
}

#[test]
fn every_env_var_the_chart_sets_is_read_by_the_operator() {
    let template =
        std::fs::read_to_string("charts/rootkey-operator/templates/deployment.yaml").expect("deployment template");
    let flags = run_env_names();
    assert!(flags.len() >= 15, "{flags:?}");
    // Read by azure_identity itself, not by a flag.
    let sdk = ["AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "RUST_LOG"];
    let mut checked = 0;
    for line in template.lines() {
        if let Some(name) =
            line.trim().strip_prefix("- name: ").filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        {
            checked += 1;
            assert!(
                flags.iter().any(|f| f == name) || sdk.contains(&name),
                "the chart sets {name}, which the operator ignores"
            );
        }
    }
    assert!(checked >= 10, "found the env entries in the template");
}

#[test]
fn the_charts_tenancy_policy_parses() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string("charts/rootkey-operator/ci/all-on-values.yaml").expect("values"),
    )
    .expect("yaml");
    let policy = serde_yaml::to_string(&values["tenancyPolicy"]).expect("policy");
    let policy = TenancyPolicy::from_yaml(&policy).expect("the operator reads the chart's policy");
    let request = |namespace, key| Request {
        namespace,
        labels: None,
        hsm_name: Some("contoso-hsm"),
        hsm_url: "https://contoso-hsm.managedhsm.azure.net",
        key,
        tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47",
        domain: "dm-AbCdEfGhJkL",
        manual: false,
    };
    assert!(policy.decide(&request("team-a", "team-a-root")).is_ok());
    assert!(policy.decide(&request("team-a", "other-root")).is_err(), "key names are limited");
    assert!(policy.decide(&request("team-c", "team-a-root")).is_err());
}

/// NOTES.txt names the roles the operator needs, the same ones its Forbidden messages name:
/// Crypto Officer cannot read or tag keys, so following it would fail every key.
#[test]
fn install_notes_name_the_roles_the_operator_needs() {
    let notes = std::fs::read_to_string("charts/rootkey-operator/templates/NOTES.txt").expect("NOTES.txt");
    let notes = notes.split_whitespace().collect::<Vec<_>>().join(" ");
    for role in ["Managed HSM Crypto User at /keys", "Managed HSM Policy Administrator"] {
        assert!(notes.contains(role), "NOTES.txt does not name {role}");
    }
    assert!(!notes.contains("Crypto Officer +"), "NOTES.txt asks for Crypto Officer");
}

/// The chart's and the plain manifests' default log filter is the binary's: an install logs what a
/// plain run logs.
#[test]
fn the_default_log_filter_is_the_binarys_everywhere() {
    let yaml = |path: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(path).expect(path)).expect("YAML parses")
    };
    assert_eq!(yaml("charts/rootkey-operator/values.yaml")["logLevel"].as_str(), Some(DEFAULT_LOG_FILTER));
    let deployment = yaml("deploy/base/deployment.yaml");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_sequence().expect("env");
    let rust_log = env.iter().find(|e| e["name"] == "RUST_LOG").and_then(|e| e["value"].as_str());
    assert_eq!(rust_log, Some(DEFAULT_LOG_FILTER), "deploy/base/deployment.yaml");
}

/// The chart's Roles and ClusterRoles grant exactly what `check::PERMISSIONS` lists (the list
/// `rootkey-operator check` asks the API server about), watching all namespaces or some, with and
/// without leader election.
#[test]
fn the_charts_rbac_grants_exactly_the_permissions_check_asks_for() {
    use rootkey_operator::check::{Grant, grants};
    let helm = std::env::var("HELM").unwrap_or_else(|_| "bin/helm".to_owned());
    let cases: [(&[&str], &[String], Option<&str>); 3] = [
        (&["--set", "leaderElection.enabled=false"], &[], None),
        (&[], &[], Some("rootkey-system")),
        (
            &["--set", "watchNamespaces={team-a,team-b}", "--set", "replicaCount=2"],
            &["team-a".to_owned(), "team-b".to_owned()],
            Some("rootkey-system"),
        ),
    ];
    for (args, watched, lease) in cases {
        let out = std::process::Command::new(&helm)
            .args(["template", "rootkey-operator", "charts/rootkey-operator", "--namespace", "rootkey-system"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{helm}: {e} (run `make tools`, or set HELM)"));
        assert!(out.status.success(), "helm template {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let mut granted = Vec::new();
        for doc in serde_yaml::Deserializer::from_slice(&out.stdout) {
            let doc = serde_yaml::Value::deserialize(doc).expect("YAML");
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "Role" && kind != "ClusterRole" {
                continue;
            }
            let namespace =
                (kind == "Role").then(|| doc["metadata"]["namespace"].as_str().unwrap_or_default().to_owned());
            let strings = |v: &serde_yaml::Value| -> Vec<String> {
                v.as_sequence()
                    .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            };
            for rule in doc["rules"].as_sequence().into_iter().flatten() {
                let names = strings(&rule["resourceNames"]);
                let names: Vec<Option<String>> =
                    if names.is_empty() { vec![None] } else { names.into_iter().map(Some).collect() };
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        for verb in strings(&rule["verbs"]) {
                            for name in &names {
                                granted.push(Grant {
                                    namespace: namespace.clone(),
                                    group: group.clone(),
                                    resource: resource.clone(),
                                    verb: verb.clone(),
                                    name: name.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
        let mut needed = grants(watched, lease);
        needed.sort();
        granted.sort();
        assert_eq!(granted, needed, "helm template {args:?}");
    }
}
