//! Wire types, the bottom layer: the sandbox's HTTP request and response, the service names, and
//! per service the request shapes, JSON bodies and error bodies it speaks. Imports nothing of the
//! crate but [`crate::util`].

pub mod admin;
pub(crate) mod antimatter;
pub(crate) mod entra;
pub(crate) mod graph;
pub(crate) mod hsm;

use bytes::Bytes;
use hyper::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Marks the sandbox's own calls (Antimatter's pairing check) in the request log.
pub(crate) const INTERNAL_HEADER: &str = "x-sandbox-internal";

/// Maximum request body size.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The four emulated services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// Entra ID (login).
    Entra,
    /// Microsoft Graph.
    Graph,
    /// Managed HSM data plane.
    Hsm,
    /// Antimatter API.
    Antimatter,
    /// The sandbox's own OpenID issuer (federated assertions for tests without Kubernetes).
    Oidc,
}

impl Service {
    /// Lower-case name used in counters and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Entra => "entra",
            Service::Graph => "graph",
            Service::Hsm => "hsm",
            Service::Antimatter => "antimatter",
            Service::Oidc => "oidc",
        }
    }
    /// Parse a lower-case name.
    pub fn parse(s: &str) -> Option<Service> {
        match s {
            "entra" => Some(Service::Entra),
            "graph" => Some(Service::Graph),
            "hsm" => Some(Service::Hsm),
            "antimatter" => Some(Service::Antimatter),
            "oidc" => Some(Service::Oidc),
            _ => None,
        }
    }
}

/// `{"error": {"code", "message"}}`: the HSM's error body, and Graph's without `innerError`.
pub(crate) fn code_message_error(status: u16, code: &str, message: impl Into<String>) -> Resp {
    Resp::json(status, &serde_json::json!({"error": {"code": code, "message": message.into()}}))
}

/// A parsed request.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: String,
    /// Host without port, lower-case.
    pub host: String,
    /// Raw path (percent-encoded as sent).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// The last value of a query parameter.
    pub fn query_param(&self, k: &str) -> Option<&str> {
        self.query.iter().rev().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }
    pub fn bearer(&self) -> Option<&str> {
        let h = self.header("authorization")?;
        let (scheme, tok) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim()).filter(|t| !t.is_empty())
    }
    /// The body as JSON; `None` when empty or not JSON.
    pub fn json(&self) -> Option<Value> {
        if self.body.is_empty() {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
    /// Path segments after the leading slashes, percent-decoded (empty segments inside are kept).
    pub fn segments(&self) -> Vec<String> {
        self.path.trim_start_matches('/').split('/').map(crate::util::pct_decode).collect()
    }
}

/// A response.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(status: u16, v: &Value) -> Resp {
        Resp::raw(status, "application/json; charset=utf-8".into(), v.to_string().into_bytes())
    }
    /// A body sent as is, with its content type.
    pub fn raw(status: u16, content_type: String, body: Vec<u8>) -> Resp {
        Resp { status, headers: vec![("content-type", content_type)], body }
    }
    pub fn empty(status: u16) -> Resp {
        Resp { status, headers: vec![], body: vec![] }
    }
    pub fn text(status: u16, t: &str) -> Resp {
        Resp::raw(status, "text/plain; charset=utf-8".into(), t.as_bytes().to_vec())
    }
    pub fn with(mut self, k: &'static str, v: impl Into<String>) -> Resp {
        self.headers.push((k, v.into()));
        self
    }
    /// The body as JSON (`Null` when it is not).
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The body as text, for error messages that carry a refused response.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
