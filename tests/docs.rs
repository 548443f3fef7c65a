//! Keeps docs/reference.md in step with the code: every CRD field, every condition reason the
//! operator can set, and every metric.

use std::collections::BTreeSet;

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

/// Capitalised one-word string literals in the controller (outside tests): condition types, reasons, event
/// reasons and the Azure codes it reacts to. Each must be explained in the reference.
fn reasons_in_code() -> BTreeSet<String> {
    let mut reasons = BTreeSet::new();
    for file in [
        "src/controller/pipeline.rs",
        "src/controller/mod.rs",
        "src/controller/errors.rs",
        "src/controller/conditions.rs",
        "src/controller/secrets.rs",
    ] {
        let text = std::fs::read_to_string(file).expect("source");
        let body = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (i, literal) in body.split('"').enumerate() {
            let pascal = literal.len() > 3
                && literal.chars().all(|c| c.is_ascii_alphanumeric())
                && literal.starts_with(|c: char| c.is_ascii_uppercase())
                && literal.chars().any(|c| c.is_ascii_lowercase())
                && !["True", "False", "Unknown"].contains(&literal);
            if i % 2 == 1 && pascal {
                reasons.insert(literal.to_owned());
            }
        }
    }
    reasons
}

#[test]
fn every_condition_reason_has_a_fix_in_the_troubleshooting_table() {
    let doc = reference();
    let reasons = reasons_in_code();
    for expected in
        ["KeyNotFound", "Forbidden", "InvalidCredentials", "Throttled", "PolicyDenied", "KeyIsActive", "PairingHealthy"]
    {
        assert!(reasons.contains(expected), "the scan finds {expected}: {reasons:?}");
    }
    let missing: Vec<_> =
        reasons.iter().filter(|r| !r.starts_with("Waiting") && !doc.contains(&format!("`{r}`"))).collect();
    assert!(missing.is_empty(), "reasons without a row in docs/reference.md: {missing:?}");
}

#[test]
fn every_metric_is_documented() {
    let doc = reference();
    let text = std::fs::read_to_string("src/metrics.rs").expect("metrics.rs");
    let mut found = 0;
    for piece in text.split("registry.register(").skip(1) {
        let name: String = piece.trim_start().trim_start_matches('"').chars().take_while(|c| *c != '"').collect();
        found += 1;
        assert!(doc.contains(&format!("rootkey_operator_{name}")), "metric {name} is not documented");
    }
    assert_eq!(found, 4);
}
