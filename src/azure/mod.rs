//! Azure access: Entra ID credentials (from `azure_identity`), the metered HTTP transport the Azure
//! SDK clients share, and the mapping of Azure errors to [`RemoteError`].

pub mod graph;
pub mod keys;
pub mod rbac;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::{Secret, TokenCredential},
    error::ErrorKind,
    http::{AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, Transport},
};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use serde::Deserialize;

use crate::{
    bounded::BoundedMap,
    cloud::{Cloud, HsmEndpoint},
    locks::lock,
    metrics::record_call,
    pacing::{Class, Pacers},
    remote::{RemoteError, Service, parse_retry_after, parse_retry_after_millis, truncate},
};

/// How the operator authenticates as itself (objects may bring their own client secret instead).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdentityMode {
    /// Workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set, else a client secret when
    /// `AZURE_CLIENT_SECRET` is set, else managed identity.
    #[default]
    Auto,
    Workload,
    Managed,
    Secret,
}

/// A client secret taken from an object's `azureCredentialsSecretRef`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientSecret {
    pub client_id: String,
    pub secret: String,
    pub tenant_id: Option<String>,
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecret").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// Which identity to act as, in which tenant. Credentials (and so their token caches) are shared
/// per identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub tenant_id: String,
    pub secret: Option<ClientSecret>,
}

/// Everything Azure-facing the reconciler needs, shared by all reconciles.
pub struct Azure {
    pub cloud: Cloud,
    mode: IdentityMode,
    transport: Transport,
    http: reqwest::Client,
    credentials: Mutex<BoundedMap<(Identity, String), Arc<dyn TokenCredential>>>,
    pacers: Pacers,
}

/// (identity, scope) pairs whose credential (and so its token cache) is kept at once.
const KEPT_CREDENTIALS: usize = 1024;

impl Azure {
    pub fn new(cloud: Cloud, mode: IdentityMode, http: reqwest::Client, pacers: Pacers) -> Self {
        let transport = Transport::new(Arc::new(MeteredTransport(http.clone())));
        let credentials = Mutex::new(BoundedMap::new(KEPT_CREDENTIALS, None));
        Self { cloud, mode, transport, http, credentials, pacers }
    }

    /// Runs one paced HSM call: waits for the HSM's slot of `class`, and a 429 holds back the next
    /// slot by its `Retry-After`.
    pub(crate) async fn paced<T, F>(&self, class: Class, hsm: &HsmEndpoint, call: F) -> Result<T, RemoteError>
    where
        F: Future<Output = Result<T, RemoteError>>,
    {
        self.pacers.wait(class, hsm).await;
        let result = call.await;
        if let Err(e) = &result
            && e.status() == Some(429)
        {
            self.pacers.pause(class, hsm, e.retry_after().unwrap_or(Duration::from_secs(1)));
        }
        result
    }

    /// Client options every Azure SDK client gets: our transport (CA bundle, metrics), the cloud's
    /// authority, and no SDK-level retries: the controller retries with per-object backoff that
    /// honours `Retry-After` and the per-HSM pacing (an SDK retry would bypass both).
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(self.transport.clone()),
            retry: RetryOptions::none(),
            cloud: Some(Arc::new(CloudConfiguration::Custom(self.custom_cloud()))),
            ..Default::default()
        }
    }

    fn custom_cloud(&self) -> CustomConfiguration {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = self.cloud.authority_host.as_str().trim_end_matches('/').to_owned();
        custom
    }

    /// The credential for an identity and the scope it is used for, created once and reused so its
    /// token cache is shared. One per scope: a credential's cache holds one lock for all its scopes
    /// while it fetches a token, which would make the HSM and Graph tokens wait for each other.
    pub fn credential(&self, identity: &Identity, scope: &str) -> Result<Arc<dyn TokenCredential>, RemoteError> {
        let mut cache = lock(&self.credentials);
        let key = (identity.clone(), scope.to_owned());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let credential =
            self.new_credential(identity).map_err(|e| RemoteError::Credentials { detail: e.to_string() })?;
        cache.insert(key, credential.clone());
        Ok(credential)
    }

    fn new_credential(&self, identity: &Identity) -> azure_core::Result<Arc<dyn TokenCredential>> {
        let client_options = self.client_options();
        if let Some(s) = &identity.secret {
            let tenant = s.tenant_id.as_deref().unwrap_or(&identity.tenant_id);
            let options = ClientSecretCredentialOptions { client_options };
            return Ok(ClientSecretCredential::new(
                tenant,
                s.client_id.clone(),
                Secret::new(s.secret.clone()),
                Some(options),
            )?);
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mode = match self.mode {
            IdentityMode::Auto if env("AZURE_FEDERATED_TOKEN_FILE").is_some() => IdentityMode::Workload,
            IdentityMode::Auto if env("AZURE_CLIENT_SECRET").is_some() => IdentityMode::Secret,
            IdentityMode::Auto => IdentityMode::Managed,
            m => m,
        };
        Ok(match mode {
            IdentityMode::Workload => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                tenant_id: Some(identity.tenant_id.clone()),
                ..Default::default()
            }))?,
            IdentityMode::Secret => {
                let missing = |k: &str| {
                    azure_core::Error::with_message(
                        ErrorKind::Credential,
                        format!("{k} is not set for the operator's client-secret identity"),
                    )
                };
                let client_id = env("AZURE_CLIENT_ID").ok_or_else(|| missing("AZURE_CLIENT_ID"))?;
                let secret = env("AZURE_CLIENT_SECRET").ok_or_else(|| missing("AZURE_CLIENT_SECRET"))?;
                ClientSecretCredential::new(
                    &identity.tenant_id,
                    client_id,
                    Secret::new(secret),
                    Some(ClientSecretCredentialOptions { client_options }),
                )?
            }
            IdentityMode::Managed | IdentityMode::Auto => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    client_options,
                    ..Default::default()
                }))?
            }
        })
    }

    /// A bearer token for `scope`; the credential caches it until shortly before expiry.
    pub async fn token(&self, identity: &Identity, scope: &str) -> Result<Secret, RemoteError> {
        let credential = self.credential(identity, scope)?;
        credential.get_token(&[scope], None).await.map(|t| t.token).map_err(|e| from_azure(Service::Entra, "token", e))
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// The reqwest client as the Azure SDK's transport, counting every call by service and operation.
#[derive(Debug)]
struct MeteredTransport(reqwest::Client);

#[async_trait]
impl HttpClient for MeteredTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let (service, operation) = classify(request);
        let sent = std::time::Instant::now();
        let result = self.0.execute_request(request).await;
        record_call(service, operation, result.as_ref().map(|r| u16::from(r.status())).unwrap_or(0), sent);
        result.map(capped_retry_after)
    }
}

/// The answer with its `Retry-After` headers capped (see [`parse_retry_after`]), or dropped when
/// unreadable (an HTTP date is not used by Azure here). The SDK's own retry policies read them from
/// here (the managed-identity credential retries with its own): no answer can make one wait longer
/// than the cap, or overflow a deadline.
fn capped_retry_after(response: AsyncRawResponse) -> AsyncRawResponse {
    use azure_core::http::headers::{RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
    let in_millis = [RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS];
    if ![&RETRY_AFTER, &in_millis[0], &in_millis[1]].iter().any(|h| response.headers().get_optional_str(h).is_some()) {
        return response;
    }
    let (status, mut headers, body) = response.deconstruct();
    if let Some(value) = headers.get_optional_str(&RETRY_AFTER) {
        match parse_retry_after(value) {
            Some(wait) => headers.insert(RETRY_AFTER, wait.as_secs().to_string()),
            None => drop(headers.remove(RETRY_AFTER)),
        }
    }
    for name in in_millis {
        if let Some(value) = headers.get_optional_str(&name) {
            match parse_retry_after_millis(value) {
                Some(wait) => headers.insert(name, wait.as_millis().to_string()),
                None => drop(headers.remove(name)),
            }
        }
    }
    AsyncRawResponse::new(status, headers, Box::pin(body))
}

/// Names an SDK request for metrics from its method and path (a fixed set of names).
fn classify(request: &Request) -> (Service, &'static str) {
    let path = request.url().path();
    if path.ends_with("/oauth2/v2.0/token") {
        return (Service::Entra, "token");
    }
    let method = request.method();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let operation = match (method.as_ref(), segments.as_slice()) {
        ("POST", ["keys", _, "create"]) => "key.create",
        ("GET", ["keys", _, "versions"]) => "key.versions",
        ("GET", ["keys", ..]) => "key.get",
        ("PATCH", ["keys", ..]) => "key.update",
        _ => "other",
    };
    (Service::Hsm, operation)
}

/// Maps an Azure SDK error to a [`RemoteError`], keeping the service's error code and message.
pub fn from_azure(service: Service, operation: &'static str, e: azure_core::Error) -> RemoteError {
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code, raw_response } => {
            let (code, message) = raw_response.as_ref().map(|r| describe_azure(r.body())).unwrap_or_default();
            let retry_after = raw_response
                .as_ref()
                .and_then(|r| r.headers().get_optional_str(&azure_core::http::headers::RETRY_AFTER))
                .and_then(parse_retry_after);
            RemoteError::Status {
                service,
                operation,
                status: u16::from(*status),
                code: truncate(&if code.is_empty() { error_code.clone().unwrap_or_default() } else { code }, 256),
                message: truncate(&if message.is_empty() { e.to_string() } else { message }, 512),
                retry_after,
            }
        }
        ErrorKind::Credential => RemoteError::Credentials { detail: truncate(&e.to_string(), 512) },
        ErrorKind::Connection | ErrorKind::Io => {
            RemoteError::Unreachable { service, operation, detail: truncate(&e.to_string(), 512) }
        }
        _ => RemoteError::Malformed { service, operation, detail: truncate(&e.to_string(), 512) },
    }
}

/// Reads the Azure error envelope `{"error":{"code","message"}}` (Managed HSM, RBAC and Graph).
pub fn describe_azure(body: &[u8]) -> (String, String) {
    #[derive(Deserialize, Default)]
    struct Envelope {
        #[serde(default)]
        error: Inner,
    }
    #[derive(Deserialize, Default)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let e: Envelope = serde_json::from_slice(body).unwrap_or_default();
    (e.error.code, e.error.message)
}

#[cfg(test)]
mod tests {
    use azure_core::http::{
        StatusCode,
        headers::{Headers, RETRY_AFTER, RETRY_AFTER_MS},
    };

    use super::*;

    #[test]
    fn the_sdk_sees_retry_after_capped() {
        let mut headers = Headers::new();
        headers.insert(RETRY_AFTER, (1u64 << 63).to_string());
        headers.insert(RETRY_AFTER_MS, u64::MAX.to_string());
        let capped = capped_retry_after(AsyncRawResponse::from_bytes(StatusCode::TooManyRequests, headers, "{}"));
        assert_eq!(capped.headers().get_optional_str(&RETRY_AFTER), Some("3600"));
        assert_eq!(capped.headers().get_optional_str(&RETRY_AFTER_MS), Some("3600000"));

        let mut headers = Headers::new();
        headers.insert(RETRY_AFTER, "Fri, 31 Dec 9999 23:59:59 GMT");
        let dated = capped_retry_after(AsyncRawResponse::from_bytes(StatusCode::TooManyRequests, headers, "{}"));
        assert_eq!(dated.headers().get_optional_str(&RETRY_AFTER), None, "an HTTP date is dropped");
    }
}
