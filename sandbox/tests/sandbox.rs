//! In-process integration tests of the sandbox over real HTTPS.

use rootkey_sandbox::client::Client;
use rootkey_sandbox::{FaultAction, FaultSpec, Sandbox, SandboxConfig, SandboxHandle, World};
use serde_json::{Value, json};

const T: &str = "7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10";
const OP: &str = "3f2b8c1d-9e4a-4b7c-a6d5-1e8f2c3b4a50";
const OP_SECRET: &str = "fake-operator-secret-not-real";
const OP_SP: &str = "5c1a7e3b-2d4f-4a6b-9e8c-7f1d3b5a2c60";
const NR: &str = "6e5d4c3b-2a1f-4e9d-8c7b-5a4f3e2d1c80";
const NR_SECRET: &str = "fake-noroles-secret-not-real";
const NR_SP: &str = "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b90";
const AM: &str = "8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70";
const CRYPTO_USER: &str = "21dbd100-6940-42c2-9190-5d6cb909625b";

async fn start() -> SandboxHandle {
    let text = include_str!("../../deploy/sandbox/world.yaml");
    let world = World::from_yaml(text).expect("world parses");
    Sandbox::start(SandboxConfig { world, ..SandboxConfig::default() }).await.expect("sandbox starts")
}

async fn token(sb: &SandboxHandle, c: &Client, app: &str, secret: &str, resource: &str) -> String {
    let r = c.token(&sb.authority_url(), T, app, secret, &format!("{resource}/.default")).await.expect("token call");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"].as_str().expect("access_token").to_string()
}

async fn hsm(
    sb: &SandboxHandle,
    c: &Client,
    method: &str,
    path: &str,
    tok: Option<&str>,
    body: Option<Value>,
) -> rootkey_sandbox::client::Response {
    let url = format!("{}{}", sb.hsm_url("contoso-hsm"), path);
    let auth = tok.map(|t| format!("Bearer {t}"));
    let mut h = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        h.push(("authorization", a.as_str()));
    }
    c.request(method, &url, &h, body.map(|b| b.to_string().into_bytes())).await.expect("hsm call")
}

#[tokio::test]
async fn challenge_api_version_and_token_errors() {
    let sb = start().await;
    let c = sb.client();
    let r = hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, b"OK", "a real HSM's challenge body");
    let ch = r.header("www-authenticate").expect("challenge");
    assert_eq!(
        ch,
        format!(
            "Bearer authorization=\"{}/{T}\", resource=\"https://managedhsm.sandbox.localhost:{}\"",
            sb.authority_url(),
            sb.port()
        )
    );
    let tok = token(&sb, &c, OP, OP_SECRET, &sb.hsm_resource()).await;
    let r = hsm(&sb, &c, "GET", "/keys/existing-key", Some(&tok), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "BadParameter");
    for v in ["7.4", "7.5", "7.6", "2025-07-01"] {
        let r = hsm(&sb, &c, "GET", &format!("/keys/existing-key?api-version={v}"), Some(&tok), None).await;
        assert_eq!(r.status, 200, "api-version {v}");
        let b = r.json();
        assert_eq!(b["tags"]["owner"], "platform");
        assert!(b["key"].get("k").is_none(), "no symmetric material");
        assert_eq!(b["attributes"]["recoverableDays"], 90);
    }
    // A graph token is not an HSM token.
    let g = token(&sb, &c, OP, OP_SECRET, &sb.graph_url()).await;
    let r = hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", Some(&g), None).await;
    assert_eq!(r.status, 401);
    // Token errors.
    let r = c.token(&sb.authority_url(), T, OP, "nope", &format!("{}/.default", sb.hsm_resource())).await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    let r = c
        .token(
            &sb.authority_url(),
            T,
            "00000000-0000-4000-8000-000000000000",
            "x",
            &format!("{}/.default", sb.hsm_resource()),
        )
        .await
        .unwrap();
    assert_eq!(r.json()["error_codes"][0], 700016);
    let r = c.token(&sb.authority_url(), T, OP, OP_SECRET, "https://elsewhere.example/.default").await.unwrap();
    assert_eq!(r.json()["error_codes"][0], 500011);
    // Expired tokens: move the clock.
    sb.set_clock_offset(4000);
    let r = hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", Some(&tok), None).await;
    assert_eq!(r.status, 401);
    sb.set_clock_offset(0);
    sb.shutdown().await;
}

#[tokio::test]
async fn rbac_authorisation_and_assignments() {
    let sb = start().await;
    let c = sb.client();
    let op = token(&sb, &c, OP, OP_SECRET, &sb.hsm_resource()).await;
    let nr = token(&sb, &c, NR, NR_SECRET, &sb.hsm_resource()).await;
    let r = hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", Some(&nr), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "Forbidden");
    let path =
        |n: &str| format!("//keys/existing-key/providers/Microsoft.Authorization/roleAssignments/{n}?api-version=7.5");
    let body = json!({"properties": {"roleDefinitionId": format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_USER}"), "principalId": NR_SP}});
    let n1 = "0b7f2c1e-3a4d-4e5f-8a9b-1c2d3e4f5a6b";
    let r = hsm(&sb, &c, "PUT", &path(n1), Some(&op), Some(body.clone())).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["properties"]["scope"], "/keys/existing-key");
    let r = hsm(&sb, &c, "PUT", &path(n1), Some(&op), Some(body.clone())).await;
    assert_eq!(r.status, 201);
    let r = hsm(&sb, &c, "PUT", &path("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"), Some(&op), Some(body.clone())).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "MatchingRoleAssignmentExists");
    // Now the principal can read that key but not another.
    let r = hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", Some(&nr), None).await;
    assert_eq!(r.status, 200);
    let r = hsm(&sb, &c, "GET", "/keys?api-version=7.5", Some(&nr), None).await;
    assert_eq!(r.status, 403);
    // The no-role principal cannot assign roles.
    let r = hsm(&sb, &c, "PUT", &path("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"), Some(&nr), Some(body)).await;
    assert_eq!(r.status, 403);
    // List filters, over every page.
    let listed = all_pages(
        &sb,
        &c,
        &op,
        "//keys/existing-key/providers/Microsoft.Authorization/roleAssignments?api-version=7.5&$filter=atScope()",
    )
    .await;
    let names: Vec<&str> = listed.iter().filter_map(|a| a["name"].as_str()).collect();
    assert!(names.contains(&n1) && names.len() == 4, "{names:?}");
    let path_filter = format!(
        "//providers/Microsoft.Authorization/roleAssignments?api-version=7.5&$filter=principalId%20eq%20'{OP_SP}'"
    );
    assert_eq!(all_pages(&sb, &c, &op, &path_filter).await.len(), 3);
    // Delete, then it is gone.
    let r = hsm(&sb, &c, "DELETE", &path(n1), Some(&op), None).await;
    assert_eq!(r.status, 200);
    let r = hsm(&sb, &c, "GET", &path(n1), Some(&op), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(sb.role_assignments("contoso-hsm").len(), 3);
    sb.shutdown().await;
}

#[tokio::test]
async fn keys_soft_delete_paging_and_crypto_refusals() {
    let sb = start().await;
    let c = sb.client();
    let op = token(&sb, &c, OP, OP_SECRET, &sb.hsm_resource()).await;
    let create = json!({"kty": "oct-HSM", "key_size": 128});
    let r = hsm(&sb, &c, "POST", "/keys/k2/create?api-version=7.5", Some(&op), Some(create.clone())).await;
    assert_eq!(r.status, 200);
    let kid = r.json()["key"]["kid"].as_str().unwrap().to_string();
    let ver = kid.rsplit('/').next().unwrap().to_string();
    assert_eq!(ver.len(), 32);
    for _ in 0..29 {
        sb.add_key_version("contoso-hsm", "k2").unwrap();
    }
    let mut url = "/keys/k2/versions?api-version=7.5".to_string();
    let mut seen = 0;
    loop {
        let r = hsm(&sb, &c, "GET", &url, Some(&op), None).await;
        assert_eq!(r.status, 200);
        let b = r.json();
        seen += b["value"].as_array().unwrap().len();
        match b["nextLink"].as_str() {
            Some(n) => url = n.trim_start_matches(&sb.hsm_url("contoso-hsm")).to_string(),
            None => break,
        }
    }
    assert_eq!(seen, 30);
    // Wrong algorithm size, disabled, expired.
    let wrap = json!({"alg": "A256KW", "value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
    let r = hsm(&sb, &c, "POST", &format!("/keys/k2/{ver}/wrapkey?api-version=7.5"), Some(&op), Some(wrap)).await;
    assert_eq!(r.status, 400);
    let wrap = json!({"alg": "A128KW", "value": "AAAAAAAAAAAAAAAAAAAAAA"});
    let r =
        hsm(&sb, &c, "POST", &format!("/keys/k2/{ver}/wrapkey?api-version=7.5"), Some(&op), Some(wrap.clone())).await;
    assert_eq!(r.status, 200);
    let r = hsm(
        &sb,
        &c,
        "PATCH",
        &format!("/keys/k2/{ver}?api-version=7.5"),
        Some(&op),
        Some(json!({"attributes": {"enabled": false}})),
    )
    .await;
    assert_eq!(r.status, 200);
    let r =
        hsm(&sb, &c, "POST", &format!("/keys/k2/{ver}/wrapkey?api-version=7.5"), Some(&op), Some(wrap.clone())).await;
    assert_eq!(r.status, 403);
    sb.patch_key("contoso-hsm", "k2", rootkey_sandbox::KeyPatch { exp: Some(Some(1)), ..Default::default() }).unwrap();
    let r = hsm(&sb, &c, "POST", "/keys/k2//wrapkey?api-version=7.5", Some(&op), Some(wrap)).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["innererror"]["code"], "KeyExpired");
    // PATCH with empty version targets the latest.
    let r = hsm(&sb, &c, "PATCH", "/keys/k2/?api-version=7.5", Some(&op), Some(json!({"tags": {"a": "b"}}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(sb.key("contoso-hsm", "k2").unwrap().latest().unwrap().tags["a"], "b");
    // Soft delete: 409 on create, recover.
    let r = hsm(&sb, &c, "DELETE", "/keys/k2?api-version=7.5", Some(&op), None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["recoveryId"].as_str().unwrap().ends_with("/deletedkeys/k2"));
    let r = hsm(&sb, &c, "POST", "/keys/k2/create?api-version=7.5", Some(&op), Some(create)).await;
    assert_eq!(r.status, 409);
    let r = hsm(&sb, &c, "POST", "/deletedkeys/k2/recover?api-version=7.5", Some(&op), None).await;
    assert_eq!(r.status, 200);
    let r = hsm(&sb, &c, "GET", "/keys/k2?api-version=7.5", Some(&op), None).await;
    assert_eq!(r.status, 200);
    sb.shutdown().await;
}

/// Follows `nextLink`s from `first` (a path on the HSM), checking each has the real form; returns
/// every item.
async fn all_pages(sb: &SandboxHandle, c: &Client, tok: &str, first: &str) -> Vec<Value> {
    let base = sb.hsm_url("contoso-hsm");
    let (mut url, mut items) = (first.to_owned(), Vec::new());
    loop {
        let r = hsm(sb, c, "GET", &url, Some(tok), None).await;
        assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
        let b = r.json();
        items.extend(b["value"].as_array().expect("value").iter().cloned());
        let Some(next) = b["nextLink"].as_str() else { return items };
        // The explicit port, the HSM's newest api-version, an opaque skip token.
        assert!(next.starts_with(&format!("{base}/")) && base.ends_with(&format!(":{}", sb.port())), "{next}");
        assert!(next.contains("api-version=2025-07-01"), "{next}");
        let token = next.split("&$skiptoken=").nth(1).expect("skiptoken").split('&').next().unwrap_or_default();
        assert!(token.len() > 8 && token.parse::<u64>().is_err(), "opaque: {next}");
        url = next.trim_start_matches(&base).to_owned();
    }
}

#[tokio::test]
async fn lists_come_in_pages_of_the_configured_size() {
    let sb = start().await;
    sb.patch_settings(rootkey_sandbox::SettingsPatch { page_size: Some(2), ..Default::default() });
    let c = sb.client();
    let op = token(&sb, &c, OP, OP_SECRET, &sb.hsm_resource()).await;
    for k in ["p1", "p2", "p3", "p4"] {
        let r = hsm(
            &sb,
            &c,
            "POST",
            &format!("/keys/{k}/create?api-version=7.5"),
            Some(&op),
            Some(json!({"kty": "oct-HSM", "key_size": 256})),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let keys = all_pages(&sb, &c, &op, "/keys?api-version=7.5").await;
    assert_eq!(keys.len(), sb.keys("contoso-hsm").len());
    let r = hsm(&sb, &c, "GET", "/keys?api-version=7.5", Some(&op), None).await;
    assert_eq!(r.json()["value"].as_array().map(Vec::len), Some(2));
    // The filter survives the pages.
    for i in 0..3 {
        sb.add_role_assignment(
            "contoso-hsm",
            "Managed HSM Crypto User",
            "/keys/p1",
            &format!("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4{i}"),
        )
        .unwrap();
    }
    let at_scope = all_pages(
        &sb,
        &c,
        &op,
        "/keys/p1/providers/Microsoft.Authorization/roleAssignments?api-version=7.5&$filter=atScope()",
    )
    .await;
    let expected = sb
        .role_assignments("contoso-hsm")
        .iter()
        .filter(|a| ["/", "/keys", "/keys/p1"].contains(&a.scope.as_str()))
        .count();
    assert_eq!(at_scope.len(), expected);
    // Role definitions as a real HSM lists them (names and IDs of the SDK recording).
    let defs = all_pages(&sb, &c, &op, "/providers/Microsoft.Authorization/roleDefinitions?api-version=7.5").await;
    let names: Vec<&str> = defs.iter().filter_map(|d| d["properties"]["roleName"].as_str()).collect();
    assert_eq!(
        names,
        [
            "Managed HSM Backup User",
            "Managed HSM Crypto Service Encryption User",
            "Managed HSM Crypto Service Release User",
            "Managed HSM Crypto Auditor",
            "Managed HSM Policy Administrator",
            "Managed HSM ARM User",
            "Managed HSM Crypto User",
            "Managed HSM Crypto Officer",
            "Managed HSM Administrator"
        ]
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn rotation_policy_and_rotate_as_managed_hsm_has_them() {
    let sb = start().await;
    let c = sb.client();
    let op = token(&sb, &c, OP, OP_SECRET, &sb.hsm_resource()).await;
    let r = hsm(
        &sb,
        &c,
        "POST",
        "/keys/rk/create?api-version=7.5",
        Some(&op),
        Some(json!({"kty": "oct-HSM", "key_size": 256})),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = hsm(&sb, &c, "GET", "/keys/rk/rotationpolicy?api-version=7.5", Some(&op), None).await;
    assert_eq!((r.status, r.json()["lifetimeActions"].clone()), (200, json!([])), "no policy yet");
    let notify = json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]});
    let r = hsm(&sb, &c, "PUT", "/keys/rk/rotationpolicy?api-version=7.5", Some(&op), Some(notify)).await;
    assert_eq!(r.status, 400, "Managed HSM has no Notify");
    let short = json!({"attributes": {"expiryTime": "P7D"}});
    assert_eq!(
        hsm(&sb, &c, "PUT", "/keys/rk/rotationpolicy?api-version=7.5", Some(&op), Some(short)).await.status,
        400
    );
    let policy = json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "rotate"}}], "attributes": {"expiryTime": "P90D"}});
    let r = hsm(&sb, &c, "PUT", "/keys/rk/rotationpolicy?api-version=7.5", Some(&op), Some(policy)).await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["id"], format!("{}/keys/rk/rotationpolicy", sb.hsm_url("contoso-hsm")));
    assert_eq!(b["lifetimeActions"][0]["action"]["type"], "Rotate");
    assert_eq!(b["attributes"]["expiryTime"], "P90D");
    // Manual rotation: a new version with the policy's expiry; not for an identity without rotate.
    let r = hsm(&sb, &c, "POST", "/keys/rk/rotate?api-version=7.5", Some(&op), None).await;
    assert_eq!(r.status, 200);
    let exp = r.json()["attributes"]["exp"].as_i64().expect("exp");
    assert_eq!(exp - r.json()["attributes"]["created"].as_i64().expect("created"), 90 * 86_400);
    let nr = token(&sb, &c, NR, NR_SECRET, &sb.hsm_resource()).await;
    assert_eq!(hsm(&sb, &c, "POST", "/keys/rk/rotate?api-version=7.5", Some(&nr), None).await.status, 403);
    assert_eq!(sb.key("contoso-hsm", "rk").unwrap().versions.len(), 2);
    // By policy: due 30 days after the latest version was made, once.
    sb.set_clock_offset(29 * 86_400);
    assert_eq!(sb.key("contoso-hsm", "rk").unwrap().versions.len(), 2);
    sb.set_clock_offset(31 * 86_400);
    assert_eq!(sb.key("contoso-hsm", "rk").unwrap().versions.len(), 3);
    sb.set_clock_offset(32 * 86_400);
    assert_eq!(sb.key("contoso-hsm", "rk").unwrap().versions.len(), 3);
    sb.shutdown().await;
}

#[tokio::test]
async fn federated_assertions_are_checked_against_the_issuers_published_keys() {
    let sb = start().await;
    let c = sb.client();
    let assertion = |issuer: Option<&str>| {
        sb.federated_token(&rootkey_sandbox::FederatedTokenRequest {
            subject: "system:serviceaccount:rootkey-system:rootkey-operator".into(),
            issuer: issuer.map(str::to_owned),
            audience: None,
            lifetime_secs: None,
        })
        .expect("token")
    };
    let exchange = |token: String| {
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", OP)
            .append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            .append_pair("client_assertion", &token)
            .append_pair("scope", &format!("{}/.default", sb.hsm_resource()))
            .finish();
        let url = format!("{}/{T}/oauth2/v2.0/token", sb.authority_url());
        let c = c.clone();
        async move {
            c.request("POST", &url, &[("content-type", "application/x-www-form-urlencoded")], Some(form.into_bytes()))
                .await
                .expect("token call")
        }
    };
    let r = exchange(assertion(None)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The issuer's key ID with a signature that does not verify under it.
    let good = assertion(None);
    let (head, sig) = good.rsplit_once('.').expect("jws");
    let mut bad_sig = sig.as_bytes().to_vec();
    bad_sig[4] = if bad_sig[4] == b'A' { b'B' } else { b'A' };
    let r = exchange(format!("{head}.{}", String::from_utf8_lossy(&bad_sig))).await;
    assert_eq!(
        (r.status, r.json()["error_codes"][0].as_u64()),
        (400, Some(700027)),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // A well-formed assertion without a signature is no assertion.
    let claims = good.split('.').nth(1).expect("claims");
    let unsigned = format!("eyJhbGciOiJub25lIn0.{claims}.");
    let r = exchange(unsigned).await;
    assert_eq!(r.json()["error_codes"][0].as_u64(), Some(50027), "{}", String::from_utf8_lossy(&r.body));
    assert!(sb.count("oidc", "jwks") >= 2, "the keys were fetched from the issuer");
    sb.shutdown().await;
}

#[tokio::test]
async fn graph_and_pairing_in_process() {
    let sb = start().await;
    let c = sb.client();
    let g = token(&sb, &c, OP, OP_SECRET, &sb.graph_url()).await;
    let r = c
        .request(
            "PATCH",
            &format!("{}/v1.0/servicePrincipals(appId='{AM}')", sb.graph_url()),
            &[
                ("authorization", &format!("Bearer {g}")),
                ("prefer", "create-if-missing"),
                ("content-type", "application/json"),
            ],
            Some(b"{}".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let sp = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(sb.service_principals(T).len(), 3);
    sb.add_role_assignment("contoso-hsm", "Managed HSM Crypto User", "/keys/existing-key", &sp).unwrap();
    let kid = format!(
        "{}/keys/existing-key/{}",
        sb.hsm_url("contoso-hsm"),
        sb.key("contoso-hsm", "existing-key").unwrap().latest().unwrap().version
    );
    let auth = c
        .post_json(
            &format!("{}/domains/dm-7fQ2xPz9KdL/authenticate", sb.antimatter_url()),
            None,
            &json!({"token": "fake-antimatter-api-key-not-real"}),
        )
        .await
        .unwrap();
    let jwt = auth.json()["token"].as_str().unwrap().to_string();
    let base = format!("{}/domains/dm-7fQ2xPz9KdL/control/encryption", sb.antimatter_url());
    let r = c
        .post_json(
            &format!("{base}/keys"),
            Some(&jwt),
            &json!({"description": "d", "keyInformation": {"providerName": "azure_am", "tenantID": T, "keyURL": kid}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let rek = r.json()["rekID"].as_str().unwrap().to_string();
    let r = c.post_json(&format!("{base}/keys/{rek}/test"), Some(&jwt), &json!({})).await.unwrap();
    assert_eq!(r.json()["status"], "MISCONFIGURED");
    assert!(r.json()["statusMessage"].as_str().unwrap().contains("dm-7fQ2xPz9KdL=allow"));
    let mut tags = std::collections::BTreeMap::new();
    tags.insert("owner".to_string(), "platform".to_string());
    tags.insert("dm-7fQ2xPz9KdL".to_string(), "allow".to_string());
    sb.set_key_tags("contoso-hsm", "existing-key", tags).unwrap();
    let r = c.post_json(&format!("{base}/keys/{rek}/test"), Some(&jwt), &json!({})).await.unwrap();
    assert_eq!(r.json()["status"], "HEALTHY", "{}", r.json());
    // Drop the connection for the token call: UNREACHABLE.
    sb.add_fault(FaultSpec {
        service: "entra".into(),
        operation: Some("token".into()),
        hsm: None,
        action: FaultAction::Drop,
        count: Some(1),
        probability: None,
    });
    let r = c.post_json(&format!("{base}/keys/{rek}/test"), Some(&jwt), &json!({})).await.unwrap();
    assert_eq!(r.json()["status"], "UNREACHABLE");
    assert_eq!(sb.count_status("entra", "token", 0), 1);
    assert!(sb.faults().is_empty());
    // Activate then refuse delete.
    let r = c.post_json(&format!("{base}/active-key"), Some(&jwt), &json!({"keyID": rek})).await.unwrap();
    assert_eq!(r.status, 200);
    // Rotate takes a JSON body (the published client always sends `{}`); none is refused.
    let bearer = format!("Bearer {jwt}");
    let r = c.request("POST", &format!("{base}/rotate"), &[("authorization", &bearer)], None).await.unwrap();
    assert_eq!(r.status, 400, "rotate without a body");
    let r = c.post_json(&format!("{base}/rotate"), Some(&jwt), &json!({})).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.json()["has_more"].is_boolean());
    let r = c
        .request("DELETE", &format!("{base}/keys/{rek}"), &[("authorization", &format!("Bearer {jwt}"))], None)
        .await
        .unwrap();
    assert_eq!(r.status, 409);
    assert_eq!(sb.registrations("dm-7fQ2xPz9KdL").len(), 2);
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_latency_and_rate_limits() {
    let sb = start().await;
    let c = sb.client();
    let op = token(&sb, &c, OP, OP_SECRET, &sb.hsm_resource()).await;
    sb.add_fault(FaultSpec {
        service: "hsm".into(),
        operation: Some("key.get".into()),
        hsm: Some("contoso-hsm".into()),
        action: FaultAction::Status { status: 429, retry_after: Some(7) },
        count: Some(2),
        probability: None,
    });
    for _ in 0..2 {
        let r = hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", Some(&op), None).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("7"));
    }
    let r = hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", Some(&op), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(sb.count_status("hsm", "key.get", 429), 2);
    // Latency.
    sb.set_latency_ms(50);
    let t = std::time::Instant::now();
    let _ = hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", Some(&op), None).await;
    assert!(t.elapsed().as_millis() >= 50);
    sb.set_latency_ms(0);
    // Rate limit: key create ~1/s per HSM.
    sb.set_rate_limits(true);
    let body = json!({"kty": "oct-HSM", "key_size": 256});
    let r1 = hsm(&sb, &c, "POST", "/keys/rl/create?api-version=7.5", Some(&op), Some(body.clone())).await;
    let r2 = hsm(&sb, &c, "POST", "/keys/rl/create?api-version=7.5", Some(&op), Some(body)).await;
    assert_eq!(r1.status, 200);
    assert_eq!(r2.status, 429);
    assert_eq!(r2.json()["error"]["code"], "Throttled");
    assert!(r2.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    sb.set_rate_limits(false);
    // Admin API over plain HTTP.
    let admin = sb.admin_url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl").args(["-s", &format!("{admin}/counters?service=hsm")]).output()
    })
    .await
    .expect("join");
    if let Ok(o) = out
        && o.status.success()
    {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["total"].as_u64().unwrap() > 0);
    }
    sb.shutdown().await;
}

/// A domain on a cell: the API host answers `308` to the cell (same path and query, explicit port),
/// the cell serves it and names itself in `cellAddress`, and a cell serves only its own domains.
#[tokio::test]
async fn a_domain_on_a_cell_is_served_only_there() {
    const D: &str = "dm-7fQ2xPz9KdL";
    let sb = start().await;
    let c = sb.client();
    let cell =
        |name: Option<&str>| rootkey_sandbox::DomainPatch { cell: Some(name.map(str::to_owned)), ..Default::default() };
    sb.patch_domain(D, cell(Some("eu1"))).expect("move to eu1");
    let eu1 = sb.cell_url("eu1");
    let login = json!({"token": "fake-antimatter-api-key-not-real"});
    let path = format!("/v2/domains/{D}/authenticate?tokenLifetime=600");
    let r = c.post_json(&format!("https://api.sandbox.localhost:{}{path}", sb.port()), None, &login).await.unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some(format!("{eu1}{path}").as_str()));
    let r = c.post_json(&format!("{eu1}{path}"), None, &login).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["cellAddress"], eu1.as_str());
    let jwt = r.json()["token"].as_str().unwrap().to_string();
    let keys = |host: &str| format!("{host}/v2/domains/{D}/control/encryption/keys");
    let bearer = format!("Bearer {jwt}");
    let r = c.request("GET", &keys(&eu1), &[("authorization", &bearer)], None).await.unwrap();
    assert_eq!(r.status, 200);
    let api = sb.antimatter_url().trim_end_matches("/v2").to_string();
    let r = c.request("GET", &keys(&api), &[("authorization", &bearer)], None).await.unwrap();
    assert_eq!((r.status, r.header("location")), (308, Some(keys(&eu1).as_str())));
    // Moved on: the old cell sends it to the new one; back home, the API host serves it again.
    sb.patch_domain(D, cell(Some("us2"))).expect("move to us2");
    let r = c.request("GET", &keys(&eu1), &[("authorization", &bearer)], None).await.unwrap();
    assert_eq!((r.status, r.header("location")), (308, Some(keys(&sb.cell_url("us2")).as_str())));
    sb.patch_domain(D, cell(None)).expect("home");
    let r = c.request("GET", &keys(&api), &[("authorization", &bearer)], None).await.unwrap();
    assert_eq!(r.status, 200);
    // A hostile API may name any cellAddress.
    let evil = format!("https://evil.example.localhost:{}", sb.port());
    let patch = rootkey_sandbox::DomainPatch { cell_address_override: Some(Some(evil.clone())), ..Default::default() };
    sb.patch_domain(D, patch).expect("override");
    let r = c.post_json(&format!("{}/domains/{D}/authenticate", sb.antimatter_url()), None, &login).await.unwrap();
    assert_eq!(r.json()["cellAddress"], evil.as_str());
    assert!(sb.patch_domain(D, cell(Some("Not A Label"))).is_err(), "a cell is a DNS label");
    sb.shutdown().await;
}

/// Eventual consistency on the sandbox clock: a new role assignment authorizes only after
/// `rbac_propagation_secs`; a new service principal can be granted a role at once but gets tokens
/// only after `principal_replication_secs`.
#[tokio::test]
async fn role_assignments_and_principals_take_effect_after_propagation() {
    let sb = start().await;
    let c = sb.client();
    sb.patch_settings(rootkey_sandbox::SettingsPatch {
        rbac_propagation_secs: Some(20),
        principal_replication_secs: Some(40),
        ..Default::default()
    });
    let op = token(&sb, &c, OP, OP_SECRET, &sb.hsm_resource()).await;
    let nr = token(&sb, &c, NR, NR_SECRET, &sb.hsm_resource()).await;
    let path = "//keys/existing-key/providers/Microsoft.Authorization/roleAssignments/0b7f2c1e-3a4d-4e5f-8a9b-1c2d3e4f5a6b?api-version=7.5";
    let role = format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_USER}");
    let r = hsm(
        &sb,
        &c,
        "PUT",
        path,
        Some(&op),
        Some(json!({"properties": {"roleDefinitionId": role, "principalId": NR_SP}})),
    )
    .await;
    assert_eq!(r.status, 201);
    let read = async |tok: &str| hsm(&sb, &c, "GET", "/keys/existing-key?api-version=7.5", Some(tok), None).await;
    let r = read(&nr).await;
    assert_eq!(r.status, 403, "not propagated yet");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("please observe propagation time"));
    sb.set_clock_offset(21);
    assert_eq!(read(&nr).await.status, 200, "propagated");

    // Antimatter's new principal: assignable at once, but its app gets no token until replicated.
    sb.set_clock_offset(0);
    let g = token(&sb, &c, OP, OP_SECRET, &sb.graph_url()).await;
    let r = c
        .post_json(&format!("{}/v1.0/servicePrincipals", sb.graph_url()), Some(&g), &json!({"appId": AM}))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let sp = r.json()["id"].as_str().unwrap().to_string();
    sb.add_role_assignment("contoso-hsm", "Managed HSM Crypto User", "/keys/existing-key", &sp).expect("assignable");
    let scope = format!("{}/.default", sb.hsm_resource());
    let r = c.token(&sb.authority_url(), T, AM, "fake-antimatter-app-secret-not-real", &scope).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json()["error_description"].as_str().unwrap().starts_with("AADSTS700016"), "{}", r.json());
    sb.set_clock_offset(41);
    let am = token(&sb, &c, AM, "fake-antimatter-app-secret-not-real", &sb.hsm_resource()).await;
    assert_eq!(read(&am).await.status, 200, "replicated and propagated");
    sb.shutdown().await;
}
