//! Antimatter API v2 client: the calls that register, check and activate a root encryption key.
//! Wire facts follow the published OpenAPI client `antimatter-api` 2.0.13 (its `api/` and `models/`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;

use crate::{
    bounded::BoundedMap,
    locks::lock,
    memo::Memo,
    remote::{RemoteError, Service, send, send_json, truncate, within_api_domain},
};

/// The body of a call that sends none.
const NO_BODY: Option<&()> = None;

/// Provider name of a key delegated to Antimatter's own Azure application.
pub const AZURE_DELEGATED_PROVIDER: &str = "azure_am";

/// Refresh the domain JWT this long before it expires.
const JWT_REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// Domains (API, domain, API key) whose login is remembered at once, and whose application ID is.
const REMEMBERED_DOMAINS: usize = 1024;

/// The longest a failed login is remembered before the domain is tried again.
const MAX_LOGIN_BACKOFF: Duration = Duration::from_secs(300);

/// A domain API key. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// One Antimatter domain at one API endpoint, reached with one API key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DomainTarget {
    pub api_url: Url,
    pub domain_id: String,
    pub api_key: ApiKey,
}

#[derive(Serialize)]
struct AuthenticateRequest<'a> {
    token: &'a str,
}

#[derive(Deserialize)]
struct AuthenticateResponse {
    token: String,
    expiry: String,
    /// "The public URL of the cell responding to the authentication request": where the domain lives.
    #[serde(rename = "cellAddress", default)]
    cell_address: Option<String>,
}

/// Where a domain's authed calls go: the cell named by `cellAddress` when it is within the API's
/// domain (with the API's path prefix, e.g. `/v2`, when it names no path), else the API itself. A
/// cell outside the API's domain is refused: the JWT is only ever sent to the API or its cells.
fn cell_base(api: &Url, cell_address: Option<&str>) -> Result<Url, String> {
    let Some(address) = cell_address.map(str::trim).filter(|a| !a.is_empty()) else { return Ok(api.clone()) };
    let refused = || {
        format!(
            "cellAddress {} is not within the Antimatter API's domain {api}; no token is sent there",
            truncate(address, 256)
        )
    };
    let mut cell = Url::parse(address).map_err(|_| refused())?;
    if !within_api_domain(api, &cell) || !cell.username().is_empty() || cell.password().is_some() {
        return Err(refused());
    }
    if cell.path() == "/" {
        cell.set_path(api.path());
    }
    cell.set_query(None);
    cell.set_fragment(None);
    Ok(cell)
}

/// A root encryption key provider (`GET /providers`).
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub name: String,
    /// The vendor account a delegated provider delegates to (free text in the published client).
    #[serde(default)]
    pub account_details: Option<String>,
}

impl Provider {
    /// The first GUID in `accountDetails`: for `azure_am`, Antimatter's Azure application ID.
    pub fn application_id(&self) -> Option<String> {
        let details = self.account_details.as_deref()?;
        details
            .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
            .find(|token| uuid::Uuid::try_parse(token).is_ok_and(|_| token.len() == 36))
            .map(str::to_ascii_lowercase)
    }
}

/// `providers`, `keys` and a provider's `type` are optional in the published client's models: a
/// server may leave an empty list out.
#[derive(Deserialize)]
struct ProvidersResponse {
    #[serde(default)]
    providers: Vec<Provider>,
}

/// A registered root encryption key.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RootKey {
    #[serde(rename = "rekID")]
    pub rek_id: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub resource_path: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Deserialize)]
struct KeysResponse {
    #[serde(default)]
    keys: Vec<RootKey>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AddKeyRequest<'a> {
    description: &'a str,
    key_information: AzureKeyInformation<'a>,
}

#[derive(Serialize)]
struct AzureKeyInformation<'a> {
    #[serde(rename = "providerName")]
    provider_name: &'static str,
    #[serde(rename = "tenantID")]
    tenant_id: &'a str,
    #[serde(rename = "keyURL")]
    key_url: &'a str,
}

#[derive(Deserialize)]
struct AddKeyResponse {
    #[serde(rename = "rekID")]
    rek_id: String,
}

/// Outcome of Antimatter's pairing check (`POST /keys/{id}/test`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairingResult {
    pub status: String,
    #[serde(default)]
    pub status_message: String,
    /// Milliseconds; the published client allows an integer or a fraction.
    #[serde(rename = "latencyMS", default)]
    pub latency_ms: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SetActiveRequest<'a> {
    #[serde(rename = "keyID")]
    key_id: &'a str,
    rotate_batch: bool,
}

/// When to re-authenticate, from the JWT's `expiry` (RFC 3339): shortly before it.
pub fn refresh_time(expiry: &str) -> Result<SystemTime, String> {
    let expiry = expiry.parse::<jiff::Timestamp>().map(SystemTime::from).map_err(|e| format!("expiry: {e}"))?;
    Ok(expiry.checked_sub(JWT_REFRESH_MARGIN).unwrap_or(expiry))
}

#[derive(Deserialize)]
struct HasMore {
    #[serde(default)]
    has_more: bool,
}

/// A domain's JWT and where to send it (the domain's cell, or the API).
#[derive(Clone)]
struct Session {
    jwt: String,
    base: Url,
}

/// What is known of one domain's login: its session, or its last failure and when to try again.
#[derive(Default)]
enum Login {
    #[default]
    None,
    Token {
        session: Session,
        refresh_at: SystemTime,
    },
    Failed {
        error: RemoteError,
        failures: u32,
        retry_at: Instant,
    },
}

/// How long a domain whose login failed `failures` times in a row is left alone: 1 s doubling to 5
/// min, never sooner than the service's `Retry-After` (capped where it is read).
fn login_backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(MAX_LOGIN_BACKOFF);
    doubled.max(retry_after.unwrap_or_default())
}

/// Antimatter API client with a per-domain login cache. Each domain has its own lock, held only by
/// callers of that domain while it logs in: a domain whose endpoint hangs stalls no other one.
#[derive(Clone)]
pub struct AntimatterClient {
    /// Follows no redirect: a JWT is never re-sent blindly (and reqwest would drop it across hosts).
    http: reqwest::Client,
    /// For `authenticate`, which may follow redirects within the API's domain to the domain's cell.
    login_http: reqwest::Client,
    logins: Arc<Mutex<BoundedMap<DomainTarget, Arc<tokio::sync::Mutex<Login>>>>>,
    app_ids: Arc<Memo<(Url, String), String>>,
}

/// Reads Antimatter's error bodies: `{"message": …}` with `field` or `resourceType` alongside.
fn describe(body: &[u8]) -> (String, String) {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        #[serde(default)]
        message: String,
        #[serde(default)]
        field: Option<String>,
        #[serde(default)]
        resource_type: Option<String>,
    }
    let e: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = e.field.or(e.resource_type).unwrap_or_default();
    (code, e.message)
}

impl AntimatterClient {
    /// `http` must follow no redirects; `login_http` may follow them within the API's domain
    /// ([`crate::remote::Redirects`]).
    pub fn new(http: reqwest::Client, login_http: reqwest::Client) -> Self {
        Self {
            http,
            login_http,
            logins: Arc::new(Mutex::new(BoundedMap::new(REMEMBERED_DOMAINS, None))),
            app_ids: Arc::new(Memo::new(REMEMBERED_DOMAINS)),
        }
    }

    fn url(base: &Url, domain_id: &str, path: &str) -> String {
        format!("{}/domains/{domain_id}{path}", base.as_str().trim_end_matches('/'))
    }

    fn login_slot(&self, target: &DomainTarget) -> Arc<tokio::sync::Mutex<Login>> {
        lock(&self.logins).get_or_insert_with(target.clone(), Arc::default).clone()
    }

    /// A domain session, authenticating only when none is cached or it is about to expire. A failed
    /// login is answered from memory until its backoff has passed, so objects of a domain that
    /// cannot log in do not each wait for the endpoint.
    async fn session(&self, target: &DomainTarget) -> Result<Session, RemoteError> {
        let slot = self.login_slot(target);
        let mut login = slot.lock().await;
        let failures = match &*login {
            Login::Token { session, refresh_at } if *refresh_at > SystemTime::now() => return Ok(session.clone()),
            Login::Failed { error, retry_at, .. } if *retry_at > Instant::now() => return Err(error.clone()),
            Login::Failed { failures, .. } => *failures,
            _ => 0,
        };
        match self.authenticate(target).await {
            Ok((session, refresh_at)) => {
                *login = Login::Token { session: session.clone(), refresh_at };
                Ok(session)
            }
            Err(error) => {
                let failures = failures.saturating_add(1);
                let retry_at = Instant::now() + login_backoff(failures, error.retry_after());
                *login = Login::Failed { error: error.clone(), failures, retry_at };
                Err(error)
            }
        }
    }

    async fn authenticate(&self, target: &DomainTarget) -> Result<(Session, SystemTime), RemoteError> {
        let request = self
            .login_http
            .post(Self::url(&target.api_url, &target.domain_id, "/authenticate"))
            .json(&AuthenticateRequest { token: &target.api_key.0 });
        let auth: AuthenticateResponse = send_json(Service::Antimatter, "authenticate", request, describe).await?;
        let malformed =
            |detail| RemoteError::Malformed { service: Service::Antimatter, operation: "authenticate", detail };
        let refresh_at = refresh_time(&auth.expiry).map_err(malformed)?;
        let base = cell_base(&target.api_url, auth.cell_address.as_deref()).map_err(|detail| {
            RemoteError::UntrustedCell { service: Service::Antimatter, operation: "authenticate", detail }
        })?;
        Ok((Session { jwt: auth.token, base }, refresh_at))
    }

    /// One authed call to the domain's cell. A `308` means the domain moved, a `401` that the JWT was
    /// refused (expired by Antimatter's clock, or revoked) although it is not due for refresh by
    /// ours: either way the login (JWT and cell) is dropped and the call is made once more after
    /// authenticating again, which learns the cell and gets a new JWT (the request was not
    /// processed, so sending it again is safe). The JWT is never sent where the `308` points; only
    /// a refused `authenticate` means the API key itself is refused.
    async fn call<B: Serialize + ?Sized>(
        &self,
        target: &DomainTarget,
        operation: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut retried = false;
        loop {
            let session = self.session(target).await?;
            let url = Self::url(&session.base, &target.domain_id, &format!("/control/encryption{path}"));
            let mut request = self.http.request(method.clone(), url).bearer_auth(&session.jwt);
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = send(Service::Antimatter, operation, request, describe).await;
            if !answer.as_ref().is_err_and(|e| matches!(e.status(), Some(308 | 401))) {
                return answer;
            }
            let slot = self.login_slot(target);
            let mut login = slot.lock().await;
            // Only this session: a concurrent caller may have logged in again already.
            if matches!(&*login, Login::Token { session: current, .. } if current.jwt == session.jwt) {
                *login = Login::None;
            }
            if retried {
                return answer;
            }
            retried = true;
        }
    }

    /// [`Self::call`], decoding a JSON answer.
    async fn call_json<T: serde::de::DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        target: &DomainTarget,
        operation: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, RemoteError> {
        let body = self.call(target, operation, method, path, body).await?;
        serde_json::from_slice(&body).map_err(|e| RemoteError::Malformed {
            service: Service::Antimatter,
            operation,
            detail: e.to_string(),
        })
    }

    /// Antimatter's Azure application ID if it has been looked up already.
    pub fn known_application_id(&self, target: &DomainTarget) -> Option<String> {
        self.app_ids.peek(&(target.api_url.clone(), target.domain_id.clone()))
    }

    /// Antimatter's Azure application ID, from the `azure_am` provider (looked up once per API and
    /// domain; `None` when Antimatter names none, which is not remembered).
    pub async fn application_id(&self, target: &DomainTarget) -> Result<Option<String>, RemoteError> {
        let key = (target.api_url.clone(), target.domain_id.clone());
        let lookup = async || {
            let r: ProvidersResponse = self
                .call_json(target, "providers.list", reqwest::Method::GET, "/providers", NO_BODY)
                .await
                .map_err(Some)?;
            r.providers
                .iter()
                .find(|p| p.name == AZURE_DELEGATED_PROVIDER)
                .and_then(Provider::application_id)
                .ok_or(None)
        };
        match self.app_ids.get_or_try_init(key, lookup).await {
            Ok(id) => Ok(Some(id)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    pub async fn list_keys(&self, target: &DomainTarget) -> Result<Vec<RootKey>, RemoteError> {
        let r: KeysResponse = self.call_json(target, "keys.list", reqwest::Method::GET, "/keys", NO_BODY).await?;
        Ok(r.keys)
    }

    pub async fn add_key(
        &self,
        target: &DomainTarget,
        description: &str,
        tenant_id: &str,
        key_url: &str,
    ) -> Result<String, RemoteError> {
        let body = AddKeyRequest {
            description,
            key_information: AzureKeyInformation { provider_name: AZURE_DELEGATED_PROVIDER, tenant_id, key_url },
        };
        let r: AddKeyResponse = self.call_json(target, "keys.add", reqwest::Method::POST, "/keys", Some(&body)).await?;
        Ok(r.rek_id)
    }

    pub async fn delete_key(&self, target: &DomainTarget, rek_id: &str) -> Result<(), RemoteError> {
        self.call(target, "keys.delete", reqwest::Method::DELETE, &format!("/keys/{rek_id}"), NO_BODY).await.map(drop)
    }

    pub async fn test_key(&self, target: &DomainTarget, rek_id: &str) -> Result<PairingResult, RemoteError> {
        let path = format!("/keys/{rek_id}/test");
        self.call_json(target, "keys.test", reqwest::Method::POST, &path, Some(&serde_json::Map::new())).await
    }

    /// The domain's active key, or `None` when it has none.
    pub async fn active_key(&self, target: &DomainTarget) -> Result<Option<RootKey>, RemoteError> {
        match self.call_json(target, "active.get", reqwest::Method::GET, "/active-key", NO_BODY).await {
            Ok(key) => Ok(Some(key)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes a key active; `true` while Antimatter has more data keys to re-wrap (call [`Self::rotate`]).
    pub async fn set_active(
        &self,
        target: &DomainTarget,
        rek_id: &str,
        rotate_batch: bool,
    ) -> Result<bool, RemoteError> {
        let body = SetActiveRequest { key_id: rek_id, rotate_batch };
        let r: HasMore =
            self.call_json(target, "active.set", reqwest::Method::POST, "/active-key", Some(&body)).await?;
        Ok(r.has_more)
    }

    /// Re-wraps one batch of data keys under the active key; `true` while there is more.
    pub async fn rotate(&self, target: &DomainTarget) -> Result<bool, RemoteError> {
        // The body is required by the API (the published client always sends `{}`).
        let r: HasMore =
            self.call_json(target, "rotate", reqwest::Method::POST, "/rotate", Some(&serde_json::Map::new())).await?;
        Ok(r.has_more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_id_is_read_from_account_details() {
        let provider = |details: Option<&str>| Provider {
            kind: "DelegatedRootEncryptionKeyProvider".into(),
            name: AZURE_DELEGATED_PROVIDER.into(),
            account_details: details.map(str::to_owned),
        };
        let app = "8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70";
        assert_eq!(provider(Some(app)).application_id().as_deref(), Some(app));
        assert_eq!(
            provider(Some(&format!("Azure application {app} (Antimatter)"))).application_id().as_deref(),
            Some(app)
        );
        assert_eq!(provider(Some("no id here")).application_id(), None);
        assert_eq!(provider(None).application_id(), None);
    }

    #[test]
    fn failed_logins_back_off_per_domain_within_bounds() {
        let secs = |failures, retry_after: Option<u64>| {
            login_backoff(failures, retry_after.map(Duration::from_secs)).as_secs()
        };
        assert_eq!([secs(1, None), secs(2, None), secs(3, None), secs(20, None)], [1, 2, 4, 300]);
        assert_eq!(secs(1, Some(30)), 30, "Retry-After is honoured");
    }

    #[test]
    fn calls_go_to_a_cell_within_the_api_domain_with_the_api_path() {
        let api = Url::parse("https://api.antimatter.io/v2").expect("url");
        let base = |cell: Option<&str>| cell_base(&api, cell).map(|u| u.to_string());
        assert_eq!(base(None).as_deref(), Ok("https://api.antimatter.io/v2"));
        assert_eq!(base(Some("")).as_deref(), Ok("https://api.antimatter.io/v2"));
        assert_eq!(base(Some("https://eu1.antimatter.io")).as_deref(), Ok("https://eu1.antimatter.io/v2"));
        assert_eq!(base(Some("https://eu1.antimatter.io:443/")).as_deref(), Ok("https://eu1.antimatter.io/v2"));
        assert_eq!(
            base(Some("https://eu1.antimatter.io/api/v2?x=1")).as_deref(),
            Ok("https://eu1.antimatter.io/api/v2")
        );
        for refused in [
            "https://evil.example.localhost:8443",
            "http://eu1.antimatter.io",
            "https://u:p@eu1.antimatter.io",
            "not a url",
        ] {
            let error = base(Some(refused)).expect_err(refused);
            assert!(error.contains(refused) && error.contains("no token is sent there"), "{error}");
        }
    }

    /// One domain whose endpoint never answers must not hold up another domain's login.
    #[tokio::test]
    async fn a_hanging_domain_does_not_hold_up_another() {
        let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let hanging_url = format!("http://{}/", hanging.local_addr().expect("addr"));
        let answering_url = format!("http://{}/", answering.local_addr().expect("addr"));
        let _hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = hanging.accept().await {
                open.push(conn);
            }
        });
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = answering.accept().await {
                let mut buf = vec![0; 4096];
                let _ = conn.read(&mut buf).await;
                let body = r#"{"token":"jwt","expiry":"2999-01-01T00:00:00Z"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = AntimatterClient::new(reqwest::Client::new(), reqwest::Client::new());
        let target = |url: &str| DomainTarget {
            api_url: Url::parse(url).expect("url"),
            domain_id: "dm-1".into(),
            api_key: ApiKey::new("k".into()),
        };
        let stuck = {
            let (client, target) = (client.clone(), target(&hanging_url));
            tokio::spawn(async move { client.session(&target).await.map(|s| s.jwt) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let other = tokio::time::timeout(Duration::from_secs(5), client.session(&target(&answering_url))).await;
        assert_eq!(other.expect("not held up").expect("logged in").jwt, "jwt");
        assert!(!stuck.is_finished(), "the hanging domain is still waiting");
        stuck.abort();
    }

    #[test]
    fn lists_the_server_leaves_out_are_empty() {
        let providers: ProvidersResponse = serde_json::from_str("{}").expect("providers optional");
        assert!(providers.providers.is_empty());
        let keys: KeysResponse = serde_json::from_str("{}").expect("keys optional");
        assert!(keys.keys.is_empty());
        let provider: Provider = serde_json::from_str(r#"{"name": "azure_am"}"#).expect("type optional");
        assert_eq!((provider.name.as_str(), provider.kind.as_str()), ("azure_am", ""));
    }
}
