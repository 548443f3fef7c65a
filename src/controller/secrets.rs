//! Values read from Secrets, remembered per Secret until the metadata watch reports another
//! resourceVersion of it, so reconciles do not GET the same Secret for every object and every check.
//! Only the keys asked for are kept, and only values that passed the checks.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, Client};

use super::{conditions::Outcome, reasons::Reason};
use crate::locks::lock;

type SecretRef = (String, String);
/// (namespace, name, key)
type ValueRef = (String, String, String);

/// A checked value and the Secret version it was read from.
struct Remembered {
    version: String,
    value: String,
}

pub struct SecretValues {
    client: Client,
    values: Mutex<HashMap<ValueRef, Remembered>>,
    /// The newest resourceVersion the watch has reported per Secret in the watched namespaces.
    seen: Mutex<HashMap<SecretRef, String>>,
}

impl SecretValues {
    pub fn new(client: Client) -> Self {
        Self { client, values: Mutex::default(), seen: Mutex::default() }
    }

    /// Records what the Secret watch reported; a remembered value of an older version is read again.
    pub fn observe(&self, ns: &str, name: &str, resource_version: &str) {
        lock(&self.seen).insert((ns.to_owned(), name.to_owned()), resource_version.to_owned());
    }

    /// One key of a Secret in the object's namespace: a single line of text.
    pub async fn value(&self, ns: &str, name: &str, key: &str) -> Result<String, Outcome> {
        let id = (ns.to_owned(), name.to_owned(), key.to_owned());
        let seen = lock(&self.seen).get(&(id.0.clone(), id.1.clone())).cloned();
        if let Some(remembered) = lock(&self.values).get(&id)
            && seen.as_ref() == Some(&remembered.version)
        {
            return Ok(remembered.value.clone());
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns).get_opt(name).await.map_err(|e| {
            Outcome::failed(Reason::SecretUnreadable, format!("Could not read Secret {ns}/{name}: {}", kube_reason(&e)))
        })?;
        let secret = secret
            .ok_or_else(|| Outcome::failed(Reason::SecretNotFound, format!("Secret {ns}/{name} does not exist.")))?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let value = secret.data.and_then(|mut d| d.remove(key)).ok_or_else(|| {
            Outcome::failed(Reason::SecretNotFound, format!("Secret {ns}/{name} has no key {key:?}."))
        })?;
        let text = checked(ns, name, key, value)?;
        lock(&self.values).insert(id, Remembered { version, value: text.clone() });
        Ok(text)
    }
}

fn checked(ns: &str, name: &str, key: &str, value: ByteString) -> Result<String, Outcome> {
    let ByteString(bytes) = value;
    let text = String::from_utf8(bytes).map_err(|_| {
        Outcome::failed(Reason::InvalidSpec, format!("Secret {ns}/{name} key {key:?} is not UTF-8 text."))
    })?;
    let text = text.trim().to_owned();
    if text.is_empty() || text.len() > 8192 || text.chars().any(char::is_control) {
        return Err(Outcome::failed(
            Reason::InvalidSpec,
            format!("Secret {ns}/{name} key {key:?} is empty, too long or not a single line."),
        ));
    }
    Ok(text)
}

/// A Kubernetes error without anything the API server echoed back from a request.
pub(super) fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        _ => "the API server could not be reached".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Secret edge cases against a mocked API server (the ones a real cluster rarely shows), and
    /// remembering a value until the watch reports a newer version.
    #[tokio::test]
    async fn secret_values_are_read_carefully() {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let secret = |data: serde_json::Value| {
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "resourceVersion": "7"}, "data": data}))
            .expect("json")
        };
        let server = tokio::spawn(async move {
            let replies: Vec<(u16, Vec<u8>)> = vec![
                (
                    403,
                    serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "echoed-request-detail", "reason": "Forbidden", "code": 403}))
                    .expect("json"),
                ),
                (
                    404,
                    serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "not found", "reason": "NotFound", "code": 404}))
                    .expect("json"),
                ),
                (200, secret(json!({"apiKey": "//79"}))),
                (200, secret(json!({"apiKey": "bGluZTEKbGluZTI="}))),
                (200, secret(json!({"other": "eA=="}))),
                (200, secret(json!({"apiKey": "ICBzM2NyZXQgCg=="}))),
                (200, secret(json!({"apiKey": "bmV3"}))),
            ];
            for (status, body) in replies {
                let (request, send) = handle.next_request().await.expect("a request");
                assert_eq!(request.uri().path(), "/api/v1/namespaces/ns/secrets/s");
                send.send_response(Response::builder().status(status).body(Body::from(body)).expect("response"));
            }
        });
        let values = SecretValues::new(client);
        let read = || values.value("ns", "s", "apiKey");
        let forbidden = read().await.expect_err("403");
        assert_eq!(forbidden.reason, Reason::SecretUnreadable);
        assert!(!forbidden.message.contains("echoed-request-detail"), "{}", forbidden.message);
        assert_eq!(read().await.expect_err("404").reason, Reason::SecretNotFound);
        assert_eq!(read().await.expect_err("binary").reason, Reason::InvalidSpec);
        assert_eq!(read().await.expect_err("two lines").reason, Reason::InvalidSpec);
        assert_eq!(read().await.expect_err("no such key").reason, Reason::SecretNotFound);
        assert_eq!(read().await.expect("trimmed"), "s3cret");
        values.observe("ns", "s", "7");
        assert_eq!(read().await.expect("remembered: no request"), "s3cret");
        values.observe("ns", "s", "8");
        assert_eq!(read().await.expect("a newer version is read again"), "new");
        server.await.expect("server");
    }
}
