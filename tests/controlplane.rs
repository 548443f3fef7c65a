//! The test control plane is a real one: RBAC authorization and the TokenRequest API work.

mod support;

use k8s_openapi::api::{
    authentication::v1::TokenRequest, authorization::v1::SubjectAccessReview, core::v1::ServiceAccount,
};
use kube::{Api, api::PostParams};
use serde_json::json;

#[tokio::test]
async fn service_account_tokens_can_be_requested() {
    let client = support::client().await;
    let ns = support::namespace(&client, "tokens").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "probe"}})).expect("sa");
    accounts.create(&PostParams::default(), &sa).await.expect("create service account");
    let request: TokenRequest = serde_json::from_value(
        json!({"spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 600}}),
    )
    .expect("token request");
    let issued = accounts.create_token_request("probe", &PostParams::default(), &request).await.expect("token");
    let token = issued.status.expect("status").token.unwrap_or_default();
    assert_eq!(token.split('.').count(), 3, "a signed JWT");
}

#[tokio::test]
async fn rbac_authorization_is_on() {
    let client = support::client().await;
    let reviews: Api<SubjectAccessReview> = Api::all(client);
    let ask = |user: &str| -> SubjectAccessReview {
        serde_json::from_value(json!({"spec": {
            "user": user,
            "resourceAttributes": {"verb": "list", "resource": "secrets", "namespace": "default"}
        }}))
        .expect("review")
    };
    let unbound =
        reviews.create(&PostParams::default(), &ask("system:serviceaccount:default:nobody")).await.expect("review");
    assert!(!unbound.status.expect("status").allowed, "an unbound service account may not list secrets");
}
