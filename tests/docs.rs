//! Keeps docs/reference.md in step with the code: every CRD field, every condition type and reason
//! the operator can set, every event reason, and every metric.

use std::{collections::BTreeSet, time::Instant};

use rootkey_operator::controller::{
    conditions::{READY, RECONCILING, STALLED},
    reasons::{ChangeReason, Reason},
    status::DELETING,
    steps::Kind,
};
use serde_json::Value;

fn reference() -> String {
    std::fs::read_to_string("docs/reference.md").expect("docs/reference.md")
}

fn field_paths(schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let path = format!("{prefix}.{name}");
            if name != "conditions" {
                field_paths(sub, &path, out);
            }
            out.insert(path);
        }
    }
}

#[test]
fn every_crd_field_is_documented() {
    let crd: Value = serde_yaml::from_str(&rootkey_operator::crd::crd_yaml().expect("crd")).expect("yaml");
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut paths = BTreeSet::new();
    field_paths(&root["spec"], "spec", &mut paths);
    field_paths(&root["status"], "status", &mut paths);
    assert!(paths.len() > 30, "walked the schema: {paths:?}");
    let doc = reference();
    let missing: Vec<_> = paths.iter().filter(|p| !doc.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "docs/reference.md lacks {missing:?}");
}

#[test]
fn every_condition_reason_has_a_fix_in_the_troubleshooting_table() {
    let doc = reference();
    let missing: Vec<&str> =
        Reason::ALL.iter().map(|r| r.as_str()).filter(|r| !doc.contains(&format!("| `{r}` |"))).collect();
    assert!(missing.is_empty(), "reasons without a row in docs/reference.md (run `make generate`): {missing:?}");
}

#[test]
fn every_condition_type_and_event_reason_is_documented() {
    let doc = reference();
    let types = Kind::ALL.iter().map(|k| k.as_str()).chain([READY, DELETING, RECONCILING, STALLED]);
    let missing: Vec<&str> = types
        .chain(ChangeReason::ALL.iter().map(|r| r.as_str()))
        .filter(|t| !doc.contains(&format!("`{t}`")))
        .collect();
    assert!(missing.is_empty(), "docs/reference.md lacks {missing:?}");
}

#[test]
fn every_metric_is_documented() {
    let doc = reference();
    // A scrape describes every family that has a series, and every per-object one (read from the
    // caches at scrape time) even with none: one call and one reconcile give the rest a series.
    rootkey_operator::metrics::record_call(rootkey_operator::metrics::Service::Hsm, "key.get", 200, Instant::now());
    rootkey_operator::metrics::record_reconcile(true, 0.01);
    let text = rootkey_operator::metrics::render();
    let mut found = 0;
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split(' ').next().unwrap_or_default();
        found += 1;
        assert!(doc.contains(name), "metric {name} is not documented");
    }
    assert_eq!(found, 10, "every registered metric was found in:\n{text}");
}

/// The Argo CD health check's `Degraded` set is the operator's terminal set (`Stalled`), in both
/// copies of the script.
#[test]
fn argo_health_degrades_on_exactly_the_terminal_reasons() {
    let mut terminal: Vec<&str> = Reason::ALL.iter().filter(|r| r.is_terminal()).map(|r| r.as_str()).collect();
    terminal.sort_unstable();
    for path in ["deploy/argocd/health.lua", "deploy/argocd/argocd-cm.yaml"] {
        let script = std::fs::read_to_string(path).expect("health script");
        let table =
            script.split("local terminal = {").nth(1).and_then(|t| t.split('}').next()).expect("terminal table");
        let mut listed: Vec<&str> = table.lines().filter_map(|l| l.trim().strip_suffix(" = true,")).collect();
        listed.sort_unstable();
        assert_eq!(listed, terminal, "{path}");
    }
}
