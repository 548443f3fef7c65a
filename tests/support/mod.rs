//! Shared helpers for the integration tests: a client for the control plane that `make test` starts,
//! the CRD installed once, and a namespace per test.
#![allow(dead_code)] // each test binary uses its own subset

pub mod env;

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{conditions, wait::await_condition},
};
use rootkey_operator::api::AzureRootKey;
use tokio::sync::OnceCell;

static CRD_INSTALLED: OnceCell<()> = OnceCell::const_new();

/// An admin client for the test control plane.
pub async fn client() -> Client {
    let kubeconfig = controlplane::kubeconfig_from_env().expect("test control plane");
    controlplane::client_for(&kubeconfig).await.expect("client for the test control plane")
}

/// The service-account token issuer of the control plane behind `kubeconfig` (the API server
/// itself: its URL) and the CA its certificate is signed by.
pub fn service_account_issuer(kubeconfig: &std::path::Path) -> (String, Vec<u8>) {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cluster = kc.clusters.into_iter().find_map(|c| c.cluster).expect("a cluster");
    let ca = std::fs::read(cluster.certificate_authority.expect("a CA file")).expect("the CA");
    (cluster.server.expect("a server"), ca)
}

/// [`service_account_issuer`] of the test control plane.
pub fn test_issuer() -> (String, Vec<u8>) {
    service_account_issuer(&controlplane::kubeconfig_from_env().expect("test control plane"))
}

/// Applies the checked-in CRD (server-side) once per test binary and waits until it is established.
pub async fn install_crd(client: &Client) {
    CRD_INSTALLED.get_or_init(|| apply_crd(client)).await;
}

/// Applies the checked-in CRD (server-side) on the control plane behind `client` and waits until it
/// is established, every time it is called (for a control plane other than the shared one, use this;
/// for the shared one, [`install_crd`]).
pub async fn apply_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let yaml = std::fs::read_to_string(rootkey_operator::crd::CRD_PATH).expect("read crds/");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parse CRD");
    let name = AzureRootKey::crd_name();
    crds.patch(name, &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&crd)).await.expect("apply CRD");
    tokio::time::timeout(Duration::from_secs(30), await_condition(crds, name, conditions::is_crd_established()))
        .await
        .expect("CRD established in time")
        .expect("watch CRD");
}

/// Creates a fresh namespace named `<prefix>-<random>` and returns its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "generateName": format!("{prefix}-") }
    }))
    .expect("namespace manifest");
    let created = namespaces.create(&PostParams::default(), &ns).await.expect("create namespace");
    created.metadata.name.expect("generated namespace name")
}
pub mod checks;
