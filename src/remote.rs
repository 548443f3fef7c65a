//! What every remote client shares: the HTTP client (TLS roots, timeouts, redirect rules), bounded
//! response bodies, `Retry-After`, and one error type that the reconciler classifies into reasons.

use std::time::Duration;

use reqwest::{Response, StatusCode, header::RETRY_AFTER, redirect};
use serde::de::DeserializeOwned;
use url::{Host, Url};

/// Largest response body any client reads; anything bigger is refused as malformed.
pub const MAX_BODY_BYTES: usize = 1 << 20;

pub use crate::metrics::Service;

/// A failed remote call. Messages never contain secrets: remote bodies are summarised to their
/// error code and message, and request bodies are never echoed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{service} answered {status} to {operation}: {code}: {message}")]
    Status {
        service: Service,
        operation: &'static str,
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{service} could not be reached for {operation}: {detail}")]
    Unreachable { service: Service, operation: &'static str, detail: String },
    #[error("{service} sent an unreadable response to {operation}: {detail}")]
    Malformed { service: Service, operation: &'static str, detail: String },
    #[error("Entra ID refused the credentials: {detail}")]
    Credentials { detail: String },
    /// The service named a host outside its domain to send a credential to (Antimatter's `cellAddress`).
    #[error("{service} answered {operation} with a host that is refused: {detail}")]
    UntrustedCell { service: Service, operation: &'static str, detail: String },
}

impl RemoteError {
    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            RemoteError::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RemoteError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn service(&self) -> Service {
        match self {
            RemoteError::Status { service, .. }
            | RemoteError::Unreachable { service, .. }
            | RemoteError::Malformed { service, .. }
            | RemoteError::UntrustedCell { service, .. } => *service,
            RemoteError::Credentials { .. } => Service::Entra,
        }
    }
}

/// Which redirects a client follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirects {
    /// None: Entra ID, Graph and Managed HSM never redirect, and a redirect must not carry a token
    /// (Antimatter's authed calls too: a `308` there makes the client log in again).
    Never,
    /// Only within the API's domain ([`within_api_domain`]): Antimatter's authenticate, redirected
    /// with `308` to the domain's cell.
    SameParentDomain,
}

/// Builds an HTTP client: rustls with the system roots plus the optional extra CA bundle, bounded
/// timeouts, and the given redirect rule.
pub fn http_client(extra_ca_pem: Option<&[u8]>, redirects: Redirects) -> anyhow::Result<reqwest::Client> {
    let policy = match redirects {
        Redirects::Never => redirect::Policy::none(),
        Redirects::SameParentDomain => redirect::Policy::custom(same_parent_domain_https),
    };
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        // A burst of reconciles opens many connections to a host; keep only a few of them idle, as
        // each TLS connection holds its buffers.
        .pool_max_idle_per_host(4)
        .redirect(policy)
        .user_agent(concat!("rootkey-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)?;
        anyhow::ensure!(!certs.is_empty(), "the CA bundle holds no PEM certificates");
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder.build()?)
}

fn same_parent_domain_https(attempt: redirect::Attempt<'_>) -> redirect::Action {
    let allowed = attempt.previous().len() < 5
        && attempt.previous().first().is_some_and(|origin| within_api_domain(origin, attempt.url()));
    if allowed { attempt.follow() } else { attempt.stop() }
}

/// Whether `target` belongs to the Antimatter API at `api`, so that the API key (authenticate's
/// redirects) or a domain JWT (the domain's cell) may be sent there: https on the API's port, and a
/// host that is the API's or ends with `.` + the API host's parent domain (`api.antimatter.io` →
/// `*.antimatter.io`). The parent must itself have two labels, so `api.io` trusts only itself; an IP
/// address trusts only itself.
pub fn within_api_domain(api: &Url, target: &Url) -> bool {
    let same_host = match (api.host(), target.host()) {
        (Some(Host::Domain(a)), Some(Host::Domain(t))) => {
            let (a, t) = (a.to_ascii_lowercase(), t.to_ascii_lowercase());
            let parent = a.split_once('.').map(|(_, rest)| rest).filter(|rest| rest.contains('.'));
            a == t || parent.is_some_and(|p| t.strip_suffix(p).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')))
        }
        (Some(a), Some(t)) => a == t,
        _ => false,
    };
    target.scheme() == "https" && same_host && api.port_or_known_default() == target.port_or_known_default()
}

/// The longest wait any service can ask for; a larger `Retry-After` is cut to it, so no answer can
/// park an object for days or overflow a deadline.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses a `Retry-After` value given in seconds (the form Azure and Antimatter use), capped at
/// [`MAX_RETRY_AFTER`]. Every client reads it through here.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// Parses a wait given in milliseconds (Azure's `retry-after-ms`), capped like [`parse_retry_after`].
pub fn parse_retry_after_millis(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(|ms| Duration::from_millis(ms).min(MAX_RETRY_AFTER))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

/// Reads a body of at most [`MAX_BODY_BYTES`].
pub async fn bounded_body(
    service: Service,
    operation: &'static str,
    mut response: Response,
) -> Result<Vec<u8>, RemoteError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| RemoteError::Unreachable {
        service,
        operation,
        detail: e.without_url().to_string(),
    })? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(RemoteError::Malformed {
                service,
                operation,
                detail: format!("body larger than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Sends a request and decodes a JSON success body, or turns the failure into a [`RemoteError`]
/// using `describe` to read the service's error envelope.
pub async fn send_json<T: DeserializeOwned>(
    service: Service,
    operation: &'static str,
    request: reqwest::RequestBuilder,
    describe: fn(&[u8]) -> (String, String),
) -> Result<T, RemoteError> {
    let body = send(service, operation, request, describe).await?;
    serde_json::from_slice(&body).map_err(|e| RemoteError::Malformed { service, operation, detail: e.to_string() })
}

/// Sends a request and returns the success body, or the failure as a [`RemoteError`].
pub async fn send(
    service: Service,
    operation: &'static str,
    request: reqwest::RequestBuilder,
    describe: fn(&[u8]) -> (String, String),
) -> Result<Vec<u8>, RemoteError> {
    let sent = std::time::Instant::now();
    let response = request.send().await.map_err(|e| RemoteError::Unreachable {
        service,
        operation,
        detail: e.without_url().to_string(),
    })?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    crate::metrics::record_call(service, operation, status.as_u16(), sent);
    let body = bounded_body(service, operation, response).await?;
    if status.is_success() {
        return Ok(body);
    }
    let (code, message) = describe(&body);
    Err(RemoteError::Status {
        service,
        operation,
        status: status.as_u16(),
        code: if code.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            truncate(&code, 256)
        },
        message: truncate(&message, 512),
        retry_after: retry_after.or((status == StatusCode::TOO_MANY_REQUESTS).then_some(Duration::from_secs(1))),
    })
}

/// `text` cut to at most `max` bytes on a character boundary, marked with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_capped_and_odd_values_are_ignored() {
        assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(&(1u64 << 63).to_string()), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after(&u64::MAX.to_string()), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after_millis("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after_millis(&u64::MAX.to_string()), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn only_the_api_host_and_its_parent_domain_on_its_port_are_within_its_domain() {
        let url = |s: &str| Url::parse(s).expect("url");
        let within = |api: &str, target: &str| within_api_domain(&url(api), &url(target));
        let api = "https://api.antimatter.io/v2";
        assert!(within(api, "https://api.antimatter.io/v2/domains"));
        assert!(within(api, "https://eu1.antimatter.io"));
        assert!(within(api, "https://cell.eu1.antimatter.io:443/"));
        assert!(within(api, "https://EU1.Antimatter.IO"), "hosts compare case-insensitively");
        assert!(within("https://api.sandbox.localhost:8443/v2", "https://antimatter-eu1.sandbox.localhost:8443"));
        for outside in [
            "http://eu1.antimatter.io",           // not https
            "https://eu1.antimatter.io:8443",     // another port
            "https://antimatter.io",              // the parent itself is not a cell
            "https://evilantimatter.io",          // a suffix, not a subdomain
            "https://antimatter.io.evil.example", // the parent inside another domain
            "https://evil.example.localhost",     // another domain
            "https://127.0.0.1",                  // an address
        ] {
            assert!(!within(api, outside), "{outside}");
        }
        assert!(within("https://api.io", "https://api.io/v2"));
        assert!(!within("https://api.io", "https://evil.io"), "a one-label parent trusts only the API host");
        assert!(within("https://127.0.0.1:8443/v2", "https://127.0.0.1:8443"));
        assert!(!within("https://127.0.0.1:8443/v2", "https://0.0.1:8443"), "an address has no parent domain");
    }

    #[test]
    fn truncation_stays_within_the_bound_on_a_character_boundary() {
        assert_eq!(truncate("short", 1024), "short");
        let cut = truncate(&"é".repeat(600), 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
    }
}
