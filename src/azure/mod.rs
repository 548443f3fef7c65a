//! Azure access: Entra ID credentials (from `azure_identity`), the metered HTTP transport the Azure
//! SDK clients share, and the mapping of Azure errors to [`RemoteError`].

pub mod graph;
pub mod keys;
pub mod rbac;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions},
    error::ErrorKind,
    http::{
        AsyncRawResponse, ClientOptions, HttpClient, RawResponse, Request, RetryOptions, StatusCode, Transport,
        headers::{Headers, RETRY_AFTER},
    },
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
    /// Per identity: until when the token endpoint asked it to wait (shared by its scopes).
    token_holds: Mutex<BoundedMap<Identity, TokenHold>>,
    pacers: Pacers,
}

/// (identity, scope) pairs whose credential (and so its token cache) is kept at once.
const KEPT_CREDENTIALS: usize = 1024;

impl Azure {
    pub fn new(cloud: Cloud, mode: IdentityMode, http: reqwest::Client, pacers: Pacers) -> Self {
        let transport = Transport::new(Arc::new(MeteredTransport(http.clone())));
        let credentials = Mutex::new(BoundedMap::new(KEPT_CREDENTIALS, None));
        let token_holds = Mutex::new(BoundedMap::new(KEPT_CREDENTIALS, None));
        Self { cloud, mode, transport, http, credentials, token_holds, pacers }
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
        let inner = self.new_credential(identity).map_err(|e| RemoteError::Credentials { detail: e.to_string() })?;
        let hold = lock(&self.token_holds).get_or_insert_with(identity.clone(), TokenHold::default).clone();
        let credential: Arc<dyn TokenCredential> = Arc::new(HeldCredential { inner, hold });
        cache.insert(key, credential.clone());
        Ok(credential)
    }

    /// Drops the credential (and its cached token) of an identity for a scope: the service refused
    /// the token (401), e.g. one it considers expired although the credential still trusts it, and
    /// the next call must fetch a new one instead of sending the same token until it expires.
    pub fn forget_credential(&self, identity: &Identity, scope: &str) {
        lock(&self.credentials).retain(|(i, s), _| !(i == identity && s == scope));
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
        let response = result.map(capped_retry_after)?;
        if service == Service::Entra && is_outage_or_throttling(response.status()) {
            // azure_identity reads every answer of the token endpoint as Entra's JSON error and
            // loses the status of one that is not (a proxy's HTML 503, an empty 429): fail here,
            // with the status and headers, before it reads the body.
            let raw = response.try_into_raw_response().await?;
            let status = raw.status();
            return Err(azure_core::Error::with_message(
                ErrorKind::HttpResponse { status, error_code: None, raw_response: Some(Box::new(raw)) },
                format!("Entra ID answered {} to the token request", u16::from(status)),
            ));
        }
        Ok(response)
    }
}

/// A token endpoint answer that says nothing about the credential: throttling or an outage.
fn is_outage_or_throttling(status: StatusCode) -> bool {
    let status = u16::from(status);
    status == 429 || status == 408 || status >= 500
}

/// Until when an identity's token requests are answered from memory (see [`HeldCredential`]).
type TokenHold = Arc<Mutex<Option<Instant>>>;

/// One identity's credential for one scope. Once the token endpoint answered 429 with
/// `Retry-After`, every credential of that identity answers the same refusal from memory until
/// the wait is over, so no token request goes out before it (each object backs off on its own,
/// and several objects share one identity).
#[derive(Debug)]
struct HeldCredential {
    inner: Arc<dyn TokenCredential>,
    hold: TokenHold,
}

#[async_trait]
impl TokenCredential for HeldCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let now = Instant::now();
        let held = lock(&self.hold).filter(|until| *until > now);
        if let Some(until) = held {
            return Err(held_refusal(until - now));
        }
        let result = self.inner.get_token(scopes, options).await;
        if let Err(e) = &result
            && let Some(failure @ RemoteError::Status { status: 429, .. }) = token_endpoint_failure(e)
        {
            let wait = failure.retry_after().unwrap_or(Duration::from_secs(1));
            *lock(&self.hold) = Some(Instant::now() + wait);
        }
        result
    }
}

/// The 429 a held identity is answered with: what the token endpoint said, with the wait left.
fn held_refusal(left: Duration) -> azure_core::Error {
    let mut headers = Headers::new();
    // Rounded up: the hold is never shorter than what Entra asked for.
    headers.insert(RETRY_AFTER, left.as_secs_f64().ceil().to_string());
    let raw = RawResponse::from_bytes(StatusCode::TooManyRequests, headers, Vec::new());
    let throttled = azure_core::Error::with_message(
        ErrorKind::HttpResponse {
            status: StatusCode::TooManyRequests,
            error_code: None,
            raw_response: Some(Box::new(raw)),
        },
        "Entra ID throttled this identity's token requests; waiting for its Retry-After",
    );
    azure_core::Error::with_error(ErrorKind::Credential, throttled, "token request held back")
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
        ("GET", ["keys", _, "rotationpolicy"]) => "key.rotationpolicy.get",
        ("PUT", ["keys", _, "rotationpolicy"]) => "key.rotationpolicy.put",
        ("GET", ["keys", ..]) => "key.get",
        ("PATCH", ["keys", ..]) => "key.update",
        _ => "other",
    };
    (Service::Hsm, operation)
}

/// Maps an Azure SDK error to a [`RemoteError`], keeping the service's error code and message. A
/// credential error is `Credentials` only when Entra refused the credential: throttling and
/// outages of the token endpoint keep their status (and `Retry-After`), I/O failures are
/// `Unreachable`.
pub fn from_azure(service: Service, operation: &'static str, e: azure_core::Error) -> RemoteError {
    describe_error(service, operation, &e)
}

fn describe_error(service: Service, operation: &'static str, e: &azure_core::Error) -> RemoteError {
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code, raw_response } => {
            let describe = if service == Service::Entra { describe_entra } else { describe_azure };
            let (code, message) = raw_response.as_ref().map(|r| describe(r.body())).unwrap_or_default();
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
        ErrorKind::Credential => token_endpoint_failure(e)
            .unwrap_or_else(|| RemoteError::Credentials { detail: truncate(&e.to_string(), 512) }),
        ErrorKind::Connection | ErrorKind::Io => {
            RemoteError::Unreachable { service, operation, detail: truncate(&e.to_string(), 512) }
        }
        _ => RemoteError::Malformed { service, operation, detail: truncate(&e.to_string(), 512) },
    }
}

/// What a credential error says about the token endpoint when it is not a refused credential: its
/// cause (azure_identity keeps it as the error's source) is a throttling or outage answer, or a
/// connection failure. `None` for a refusal (Entra's 400/401 with an AADSTS error) and for errors
/// before any request (a missing token file, a bad tenant ID).
fn token_endpoint_failure(e: &azure_core::Error) -> Option<RemoteError> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(inner) = c.downcast_ref::<azure_core::Error>() {
            match inner.kind() {
                ErrorKind::HttpResponse { status, .. } if is_outage_or_throttling(*status) => {
                    return Some(describe_error(Service::Entra, "token", inner));
                }
                ErrorKind::HttpResponse { .. } => return None,
                ErrorKind::Connection | ErrorKind::Io => return Some(describe_error(Service::Entra, "token", inner)),
                _ => {}
            }
        }
        cause = c.source();
    }
    None
}

/// Reads Entra ID's OAuth error `{"error","error_description"}`.
fn describe_entra(body: &[u8]) -> (String, String) {
    #[derive(Deserialize, Default)]
    struct OAuthError {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
    }
    let e: OAuthError = serde_json::from_slice(body).unwrap_or_default();
    (e.error, e.error_description)
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

    const TENANT: &str = "7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10";
    const CLIENT: &str = "3f2b8c1d-9e4a-4b7c-a6d5-1e8f2c3b4a50";

    async fn sandbox() -> (rootkey_sandbox::SandboxHandle, Azure) {
        use rootkey_sandbox::{Sandbox, SandboxConfig, world::World};
        let world = World::from_file("deploy/sandbox/world.yaml").expect("world");
        let sandbox = Sandbox::start(SandboxConfig { world, ..Default::default() }).await.expect("sandbox");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = crate::remote::http_client(Some(sandbox.ca_pem().as_bytes()), crate::remote::Redirects::Never)
            .expect("http client");
        let cloud = Cloud {
            authority_host: sandbox.authority_url().parse().expect("authority"),
            graph_url: sandbox.graph_url().parse().expect("graph"),
            hsm_dns_suffixes: vec![sandbox.hsm_dns_suffix()],
        };
        let azure = Azure::new(cloud, IdentityMode::Secret, http, Pacers::new(0.0, 0.0));
        (sandbox, azure)
    }

    fn identity(secret: &str) -> Identity {
        let secret = ClientSecret { client_id: CLIENT.to_owned(), secret: secret.to_owned(), tenant_id: None };
        Identity { tenant_id: TENANT.to_owned(), secret: Some(secret) }
    }

    fn token_fault(status: u16, retry_after: Option<u64>) -> rootkey_sandbox::FaultSpec {
        rootkey_sandbox::FaultSpec {
            service: "entra".into(),
            operation: Some("token".into()),
            hsm: None,
            action: rootkey_sandbox::FaultAction::Status { status, retry_after },
            count: None,
            probability: None,
        }
    }

    #[tokio::test]
    async fn a_throttled_token_endpoint_is_throttling_held_for_its_retry_after() {
        let (sandbox, azure) = sandbox().await;
        let scope = format!("{}/.default", sandbox.hsm_resource());
        let me = identity("fake-operator-secret-not-real");
        sandbox.add_fault(token_fault(429, Some(2)));
        let e = azure.token(&me, &scope).await.expect_err("throttled");
        assert_eq!(
            (e.service(), e.status(), e.retry_after()),
            (Service::Entra, Some(429), Some(Duration::from_secs(2)))
        );
        // Every scope of the identity waits: no token request before the Retry-After is over.
        let graph_scope = format!("{}/.default", sandbox.graph_url());
        let held = azure.token(&me, &graph_scope).await.expect_err("held");
        assert_eq!(held.status(), Some(429), "{held}");
        assert!(held.retry_after().is_some_and(|w| w >= Duration::from_secs(1)), "{held:?}");
        assert_eq!(sandbox.count("entra", "token"), 1, "the held request never left");
        sandbox.clear_faults();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        azure.token(&me, &scope).await.expect("a token after the wait");
    }

    #[tokio::test]
    async fn token_endpoint_outages_are_unreachable_and_only_a_refused_secret_is_invalid_credentials() {
        let (sandbox, azure) = sandbox().await;
        let scope = format!("{}/.default", sandbox.hsm_resource());
        sandbox.add_fault(token_fault(503, None));
        let e = azure.token(&identity("fake-operator-secret-not-real"), &scope).await.expect_err("outage");
        assert!(matches!(e, RemoteError::Status { status: 503, service: Service::Entra, .. }), "{e:?}");
        sandbox.clear_faults();
        sandbox.add_fault(rootkey_sandbox::FaultSpec {
            action: rootkey_sandbox::FaultAction::Drop,
            ..token_fault(0, None)
        });
        let e = azure.token(&identity("fake-operator-secret-not-real"), &scope).await.expect_err("dropped");
        assert!(matches!(e, RemoteError::Unreachable { service: Service::Entra, .. }), "{e:?}");
        sandbox.clear_faults();
        let e = azure.token(&identity("a-wrong-secret"), &scope).await.expect_err("refused");
        assert!(matches!(&e, RemoteError::Credentials { detail } if detail.contains("AADSTS7000215")), "{e:?}");
    }

    #[tokio::test]
    async fn a_rotation_policy_written_through_the_key_client_makes_versions_when_due() {
        use keys::{KeyClients, RotationPolicy};
        let (sandbox, azure) = sandbox().await;
        let hsm =
            HsmEndpoint { url: sandbox.hsm_url("contoso-hsm"), scope: format!("{}/.default", sandbox.hsm_resource()) };
        let me = identity("fake-operator-secret-not-real");
        let keys = KeyClients::default();
        let first = keys.create(&azure, &hsm, &me, "rotating", 256, Default::default()).await.expect("key");
        assert_eq!(
            keys.rotation_policy(&azure, &hsm, &me, "rotating").await.expect("policy"),
            Some(RotationPolicy::default())
        );
        assert_eq!(keys.rotation_policy(&azure, &hsm, &me, "absent").await.expect("no key"), None);
        let policy = RotationPolicy {
            rotate_after_create: Some("P30D".to_owned()),
            rotate_before_expiry: None,
            expiry_time: Some("P90D".to_owned()),
        };
        assert_eq!(keys.set_rotation_policy(&azure, &hsm, &me, "rotating", &policy).await.expect("set"), policy);
        assert_eq!(keys.rotation_policy(&azure, &hsm, &me, "rotating").await.expect("read back"), Some(policy));
        assert_eq!(keys.get(&azure, &hsm, &me, "rotating").await.expect("get").map(|k| k.kid), Some(first.kid.clone()));

        // 31 days later the policy's Rotate action is due: a new version, expiring 90 days after it
        // was made. (The sandbox is read directly: its tokens issued before the clock moved have
        // expired for it, and the SDK's token cache cannot know.)
        sandbox.set_clock_offset(31 * 86_400);
        let key = sandbox.key("contoso-hsm", "rotating").expect("key");
        let latest = key.versions.last().expect("a version");
        assert!(!first.kid.ends_with(&latest.version), "a new version by policy");
        assert_eq!(latest.exp, Some(latest.created + 90 * 86_400));
        assert_eq!(sandbox.key("contoso-hsm", "rotating").expect("key").versions.len(), 2, "once per due time");
    }
}
