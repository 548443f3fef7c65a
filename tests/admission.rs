//! Admission-time validation of the generated CRD, against the real API server: every bad manifest is
//! refused with a message that names the field, and the shipped samples are accepted.

mod support;

use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("antimatter.io", "v1alpha1", "AzureRootKey"),
        "azurerootkeys",
    )
}

fn good() -> Value {
    json!({
        "apiVersion": "antimatter.io/v1alpha1",
        "kind": "AzureRootKey",
        "metadata": { "name": "sample" },
        "spec": {
            "domainId": "dm-AbCdEfGhJkL",
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "hsm": { "name": "contoso-hsm" },
            "key": { "name": "antimatter-root" },
            "antimatter": { "apiKeySecretRef": { "name": "antimatter-api-key" }, "activate": true }
        }
    })
}

/// `good()` with the value at a JSON pointer replaced (`Some`) or removed (`None`).
fn with(pointer: &str, value: Option<Value>) -> Value {
    let mut doc = good();
    let (parent, last) = pointer.rsplit_once('/').expect("pointer has a parent");
    let parent = doc.pointer_mut(parent).and_then(Value::as_object_mut).expect("parent exists");
    match value {
        Some(v) => parent.insert(last.to_owned(), v),
        None => parent.remove(last),
    };
    doc
}

async fn apply(api: &Api<DynamicObject>, doc: &Value, dry_run: bool) -> Result<(), String> {
    let name = doc["metadata"]["name"].as_str().expect("name");
    let mut params = PatchParams::apply("rootkey-tests").force().validation_strict();
    params.dry_run = dry_run;
    api.patch(name, &params, &Patch::Apply(doc)).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn bad_manifests_are_refused_with_a_message_naming_the_field() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = support::namespace(&client, "admission").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource());

    let long_name = "a".repeat(25);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("domainId missing", with("/spec/domainId", None), "spec.domainId: Required value"),
        (
            "domainId too short",
            with("/spec/domainId", Some(json!("dm-abc"))),
            "domainId must be 'dm-' followed by 11 base58",
        ),
        (
            "domainId with 0 (not base58)",
            with("/spec/domainId", Some(json!("dm-0bCdEfGhJkL"))),
            "domainId must be 'dm-' followed by 11 base58",
        ),
        ("domainId wrong type", with("/spec/domainId", Some(json!(42))), ".spec.domainId: expected string"),
        ("tenantId missing", with("/spec/tenantId", None), "spec.tenantId: Required value"),
        (
            "tenantId not a GUID",
            with("/spec/tenantId", Some(json!("contoso.onmicrosoft.com"))),
            "tenantId must be a GUID",
        ),
        ("hsm missing", with("/spec/hsm", None), "spec.hsm: Required value"),
        ("hsm neither name nor url", with("/spec/hsm", Some(json!({}))), "set exactly one of hsm.name or hsm.url"),
        (
            "hsm both name and url",
            with("/spec/hsm", Some(json!({"name": "contoso-hsm", "url": "https://contoso-hsm.managedhsm.azure.net"}))),
            "set exactly one of hsm.name or hsm.url",
        ),
        ("hsm.name too short", with("/spec/hsm", Some(json!({"name": "ab"}))), "hsm.name must be 3-24 letters"),
        ("hsm.name too long", with("/spec/hsm", Some(json!({"name": long_name}))), "spec.hsm.name: Too long"),
        (
            "hsm.name starts with a digit",
            with("/spec/hsm", Some(json!({"name": "1contoso"}))),
            "hsm.name must be 3-24 letters",
        ),
        (
            "hsm.name consecutive hyphens",
            with("/spec/hsm", Some(json!({"name": "contoso--hsm"}))),
            "no consecutive or trailing hyphen",
        ),
        (
            "hsm.name trailing hyphen",
            with("/spec/hsm", Some(json!({"name": "contoso-"}))),
            "no consecutive or trailing hyphen",
        ),
        (
            "hsm.url http",
            with("/spec/hsm", Some(json!({"url": "http://contoso.managedhsm.azure.net"}))),
            "hsm.url must start with https://",
        ),
        (
            "hsm.url with a path",
            with("/spec/hsm", Some(json!({"url": "https://contoso.managedhsm.azure.net/keys/x"}))),
            "no path, query or user info",
        ),
        (
            "hsm.url with a query",
            with("/spec/hsm", Some(json!({"url": "https://contoso.managedhsm.azure.net/?a=b"}))),
            "no path, query or user info",
        ),
        (
            "hsm.url with user info",
            with("/spec/hsm", Some(json!({"url": "https://evil@contoso.managedhsm.azure.net"}))),
            "no path, query or user info",
        ),
        ("key missing", with("/spec/key", None), "spec.key: Required value"),
        ("key.name missing", with("/spec/key", Some(json!({"create": "Never"}))), "spec.key.name: Required value"),
        (
            "key.name with underscore",
            with("/spec/key", Some(json!({"name": "root_key"}))),
            "key.name must be 1-127 letters, digits and hyphens",
        ),
        (
            "key.create unknown",
            with("/spec/key", Some(json!({"name": "k", "create": "Always"}))),
            "spec.key.create: Unsupported value: \"Always\"",
        ),
        (
            "key.size not allowed",
            with("/spec/key", Some(json!({"name": "k", "size": 512}))),
            "key.size must be 128, 192 or 256",
        ),
        (
            "key.size wrong type",
            with("/spec/key", Some(json!({"name": "k", "size": "256"}))),
            ".spec.key.size: expected numeric",
        ),
        (
            "applicationId not a GUID",
            with("/spec/antimatter", Some(json!({"applicationId": "antimatter"}))),
            "antimatter.applicationId must be a GUID",
        ),
        (
            "servicePrincipalObjectId not a GUID",
            with("/spec/antimatter", Some(json!({"servicePrincipalObjectId": "sp-1"}))),
            "antimatter.servicePrincipalObjectId must be a GUID",
        ),
        (
            "apiUrl http",
            with("/spec/antimatter", Some(json!({"apiUrl": "http://api.antimatter.io/v2"}))),
            "antimatter.apiUrl must start with https://",
        ),
        (
            "apiUrl with user info",
            with("/spec/antimatter", Some(json!({"apiUrl": "https://user:pw@api.antimatter.io/v2"}))),
            "no query or user info",
        ),
        (
            "apiUrl with a query",
            with("/spec/antimatter", Some(json!({"apiUrl": "https://api.antimatter.io/v2?x=1"}))),
            "no query or user info",
        ),
        (
            "activate without an API key",
            with("/spec/antimatter", Some(json!({"activate": true}))),
            "antimatter.activate needs antimatter.apiKeySecretRef",
        ),
        (
            "rotation policy in months",
            with("/spec/key", Some(json!({"name": "k", "rotationPolicy": {"rotateAfter": "P3M"}}))),
            "key.rotationPolicy.rotateAfter must be whole days",
        ),
        (
            "rotation every day",
            with("/spec/key", Some(json!({"name": "k", "rotationPolicy": {"rotateAfter": "P1D"}}))),
            "must be 7 to 3650 days",
        ),
        (
            "versions that expire before the next one",
            with(
                "/spec/key",
                Some(json!({"name": "k", "rotationPolicy": {"rotateAfter": "P90D", "expireAfter": "P60D"}})),
            ),
            "expireAfter must be longer than rotateAfter",
        ),
        (
            "reclaimActive without activate",
            with("/spec/antimatter", Some(json!({"apiKeySecretRef": {"name": "am"}, "reclaimActive": true}))),
            "antimatter.reclaimActive needs antimatter.activate: true",
        ),
        (
            "Revoke without an API key",
            {
                let mut doc = with("/spec/antimatter", Some(json!({})));
                doc["spec"]["deletionPolicy"] = json!("Revoke");
                doc
            },
            "deletionPolicy: Revoke needs antimatter.apiKeySecretRef",
        ),
        (
            "apiKeySecretRef without a name",
            with("/spec/antimatter", Some(json!({"apiKeySecretRef": {"key": "k"}}))),
            "spec.antimatter.apiKeySecretRef.name: Required value",
        ),
        (
            "apiKeySecretRef bad key",
            with("/spec/antimatter", Some(json!({"apiKeySecretRef": {"name": "s", "key": "a/b"}}))),
            "secret key must consist of letters, digits",
        ),
        (
            "azureCredentialsSecretRef bad name",
            with("/spec/azureCredentialsSecretRef", Some(json!({"name": "Bad_Name"}))),
            "secret name must be a DNS subdomain name",
        ),
        (
            "deletionPolicy unknown",
            with("/spec/deletionPolicy", Some(json!("Delete"))),
            "spec.deletionPolicy: Unsupported value: \"Delete\"",
        ),
        (
            "checkInterval too short",
            with("/spec/checkInterval", Some(json!("30s"))),
            "checkInterval must be between 1m and 24h",
        ),
        (
            "checkInterval too long",
            with("/spec/checkInterval", Some(json!("25h"))),
            "checkInterval must be between 1m and 24h",
        ),
        (
            "checkInterval not a duration",
            with("/spec/checkInterval", Some(json!("hourly"))),
            "checkInterval must be a duration such as 30m",
        ),
        ("suspend wrong type", with("/spec/suspend", Some(json!("yes"))), ".spec.suspend: expected boolean"),
        (
            "unknown spec field",
            with("/spec/hsmName", Some(json!("contoso-hsm"))),
            ".spec.hsmName: field not declared in schema",
        ),
        (
            "unknown nested field",
            with("/spec/key/kty", Some(json!("RSA"))),
            ".spec.key.kty: field not declared in schema",
        ),
    ];
    assert!(cases.len() >= 25);

    let mut failures = Vec::new();
    for (name, doc, expected) in &cases {
        match apply(&api, doc, true).await {
            Ok(()) => failures.push(format!("{name}: accepted")),
            Err(msg) if !msg.contains(expected) => failures.push(format!("{name}: expected {expected:?} in {msg}")),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = support::namespace(&client, "immutable").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource());
    apply(&api, &good(), false).await.expect("good manifest accepted");

    let cases = [
        ("domainId", with("/spec/domainId", Some(json!("dm-ZyXwVuTsRqP"))), "domainId is immutable"),
        ("hsm.name", with("/spec/hsm", Some(json!({"name": "other-hsm"}))), "hsm is immutable"),
        (
            "hsm name to url",
            with("/spec/hsm", Some(json!({"url": "https://contoso-hsm.managedhsm.azure.net"}))),
            "hsm is immutable",
        ),
        ("key.name", with("/spec/key", Some(json!({"name": "other-key"}))), "key.name is immutable"),
    ];
    for (name, doc, expected) in cases {
        let err = apply(&api, &doc, false).await.expect_err(name);
        assert!(err.contains(expected), "{name}: expected {expected:?} in {err}");
    }
    // Mutable fields still change.
    apply(&api, &with("/spec/checkInterval", Some(json!("2h30m"))), false).await.expect("checkInterval is mutable");
    apply(&api, &with("/spec/deletionPolicy", Some(json!("Revoke"))), false).await.expect("deletionPolicy is mutable");
}

#[tokio::test]
async fn samples_and_edge_values_are_accepted_with_defaults_filled() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = support::namespace(&client, "samples").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource());

    for entry in std::fs::read_dir("deploy/samples").expect("deploy/samples") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            for doc in serde_yaml::Deserializer::from_str(&std::fs::read_to_string(&path).expect("read sample")) {
                let value: Value = serde::Deserialize::deserialize(doc).expect("sample is YAML");
                if value["kind"] == "AzureRootKey" {
                    apply(&api, &value, true).await.unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
                }
            }
        }
    }

    let edges = [
        with("/spec/key", Some(json!({"name": "k", "size": 128}))),
        with("/spec/checkInterval", Some(json!("1m"))),
        with("/spec/checkInterval", Some(json!("24h"))),
        with("/spec/hsm", Some(json!({"url": "https://contoso.managedhsm.azure.net:8443"}))),
        with("/spec/hsm", Some(json!({"name": "abc"}))),
        with("/spec/antimatter", Some(json!({"servicePrincipalObjectId": "2f3c1a9e-8d1b-4c7e-9a3f-0b6d5e4c3a21"}))),
    ];
    for doc in &edges {
        apply(&api, doc, true).await.unwrap_or_else(|e| panic!("{doc} refused: {e}"));
    }

    // Defaults are filled in by the API server.
    let minimal = with("/spec/antimatter", None);
    apply(&api, &minimal, false).await.expect("minimal accepted");
    let stored = api.get("sample").await.expect("get");
    let spec = &stored.data["spec"];
    assert_eq!(spec["key"]["create"], "IfMissing");
    assert_eq!(spec["key"]["size"], 256);
    assert_eq!(spec["deletionPolicy"], "Retain");
    assert_eq!(spec["checkInterval"], "1h");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["antimatter"]["apiUrl"], "https://api.antimatter.io/v2");
}
