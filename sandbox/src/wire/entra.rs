//! Entra ID wire shapes: the AADSTS error and its body.

use super::Resp;
use crate::util;
use serde_json::json;

/// An Entra ID refusal: HTTP status, OAuth `error`, AADSTS code and message.
pub(crate) struct AadError {
    pub status: u16,
    pub error: &'static str,
    pub code: u32,
    pub message: String,
}

impl AadError {
    pub fn new(status: u16, error: &'static str, code: u32, message: impl Into<String>) -> AadError {
        AadError { status, error, code, message: message.into() }
    }

    /// `invalid_request` 900144: a form parameter is missing.
    pub fn missing_parameter(p: &str) -> AadError {
        AadError::new(
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{p}'."),
        )
    }

    /// 90002: the tenant in the URL is neither a known ID nor a known name.
    pub fn unknown_tenant(t: &str) -> AadError {
        AadError::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    /// The body Entra sends, with fresh trace ID, the client's correlation ID and a timestamp.
    pub fn into_response(self, authority_url: &str, client_request_id: Option<&str>, now: i64) -> Resp {
        let trace = util::uuid_v4();
        let corr = client_request_id.map(str::to_string).unwrap_or_else(util::uuid_v4);
        let ts = util::rfc3339(now).replace('T', " ");
        let desc =
            format!("AADSTS{}: {} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}", self.code, self.message);
        Resp::json(
            self.status,
            &json!({
                "error": self.error,
                "error_description": desc,
                "error_codes": [self.code],
                "timestamp": ts,
                "trace_id": trace,
                "correlation_id": corr,
                "error_uri": format!("{authority_url}/error?code={}", self.code),
            }),
        )
    }
}
