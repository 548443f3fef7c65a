//! Values read from Secrets the objects name. The operator may only `get` Secrets (no list, no
//! watch: it never sees a Secret no object names), so it cannot be told when one changes. Instead a
//! value is remembered for at most [`REMEMBER_FOR`], so that the objects sharing a Secret and the
//! retries of a failing object do not each GET it, and is read again after that: a changed Secret
//! is used from the object's next reconcile after at most that long (its periodic check, its next
//! retry, or any change to the object). A remote refusal of a remembered credential drops it
//! ([`SecretValues::forget`]), so the retry reads the Secret again. Only the keys asked for are
//! kept, and only values that passed the checks.

use std::{sync::Mutex, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, Client};

use super::{conditions::Outcome, reasons::Reason};
use crate::{bounded::BoundedMap, locks::lock};

/// (namespace, name, key)
type ValueRef = (String, String, String);

/// The longest a value is used without reading its Secret again.
pub const REMEMBER_FOR: Duration = Duration::from_secs(300);
/// Values remembered at once (least recently used dropped first).
const REMEMBERED_VALUES: usize = 4096;

pub struct SecretValues {
    client: Client,
    values: Mutex<BoundedMap<ValueRef, String>>,
}

impl SecretValues {
    pub fn new(client: Client) -> Self {
        Self { client, values: Mutex::new(BoundedMap::new(REMEMBERED_VALUES, Some(REMEMBER_FOR))) }
    }

    /// Drops what is remembered of one Secret: its next use reads it again.
    pub fn forget(&self, ns: &str, name: &str) {
        lock(&self.values).retain(|(n, s, _), _| !(n == ns && s == name));
    }

    /// One key of a Secret in the object's namespace: a single line of text.
    pub async fn value(&self, ns: &str, name: &str, key: &str) -> Result<String, Outcome> {
        let id = (ns.to_owned(), name.to_owned(), key.to_owned());
        if let Some(remembered) = lock(&self.values).get(&id) {
            return Ok(remembered.clone());
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns).get_opt(name).await.map_err(|e| {
            Outcome::failed(Reason::SecretUnreadable, format!("Could not read Secret {ns}/{name}: {}", kube_reason(&e)))
        })?;
        let secret = secret
            .ok_or_else(|| Outcome::failed(Reason::SecretNotFound, format!("Secret {ns}/{name} does not exist.")))?;
        let value = secret.data.and_then(|mut d| d.remove(key)).ok_or_else(|| {
            Outcome::failed(Reason::SecretNotFound, format!("Secret {ns}/{name} has no key {key:?}."))
        })?;
        let text = checked(ns, name, key, value)?;
        lock(&self.values).insert(id, text.clone());
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
    /// remembering a value until it is forgotten.
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
        assert_eq!(read().await.expect("remembered: no request"), "s3cret");
        values.forget("ns", "s");
        assert_eq!(read().await.expect("forgotten: read again"), "new");
        server.await.expect("server");
    }
}
