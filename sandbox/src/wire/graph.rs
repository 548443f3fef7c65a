//! Microsoft Graph wire shapes: the error body.

use super::Resp;
use crate::util;
use serde_json::json;

/// `{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`.
pub(crate) fn error(status: u16, code: &str, message: &str, client_request_id: Option<&str>, now: i64) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"code": code, "message": message, "innerError": {
            "date": util::rfc3339(now),
            "request-id": util::uuid_v4(),
            "client-request-id": client_request_id.map(str::to_string).unwrap_or_else(util::uuid_v4),
        }}}),
    )
}
