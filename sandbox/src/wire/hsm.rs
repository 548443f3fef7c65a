//! Managed HSM wire shapes: the accepted `api-version`s, error bodies (with the bearer challenge
//! and the RBAC refusal), and parsers for the fields of key requests.

use super::Resp;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// API versions the sandbox accepts (7.4–7.6 and the azure-keyvault-* Python SDK default).
pub const API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", "2025-07-01"];
/// Named in the error for an unknown `api-version`.
pub(crate) const LATEST_API: &str = "2025-07-01";
const KEY_OPS: &[&str] = &["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export"];

pub(crate) use super::code_message_error as error;

/// `{"error": {"code", "message", "innererror": {"code"}}}`.
pub(crate) fn error_with_inner(status: u16, code: &str, message: impl Into<String>, inner: &str) -> Resp {
    Resp::json(status, &json!({"error": {"code": code, "message": message.into(), "innererror": {"code": inner}}}))
}

pub(crate) fn bad_parameter(message: impl Into<String>) -> Resp {
    error(400, "BadParameter", message)
}

pub(crate) fn key_not_found(name: &str) -> Resp {
    error(
        404,
        "KeyNotFound",
        format!(
            "A key with (name/id) {name} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

pub(crate) fn deleted_key_not_found(name: &str) -> Resp {
    error(404, "KeyNotFound", format!("Deleted Key not found: {name}"))
}

pub(crate) fn role_assignment_not_found() -> Resp {
    error(404, "RoleAssignmentNotFound", "Requested role assignment not found.")
}

pub(crate) fn invalid_scope(scope: &str) -> Resp {
    bad_parameter(format!("Invalid scope: {scope}"))
}

/// A 401 with the challenge that tells SDKs where to get a token and for which resource.
pub(crate) fn challenge(authority_url: &str, tenant: &str, resource: &str, message: &str) -> Resp {
    error(401, "Unauthorized", message).with("www-authenticate", challenge_header(authority_url, tenant, resource))
}

/// The 401 to a request without a token, the first of every SDK's challenge flow. A real HSM
/// answers it with the two bytes `OK` (typed as JSON), not an error envelope: the recording
/// azure-sdk-for-python `sdk/keyvault/azure-keyvault-administration/tests/recordings/test_access_control.pyTestAccessControltest_role_definitions[7.3].json`
/// (first entry: 401, `Content-Length: 2`, body `OK`).
pub(crate) fn missing_token_challenge(authority_url: &str, tenant: &str, resource: &str) -> Resp {
    Resp::raw(401, "application/json; charset=utf-8".into(), b"OK".to_vec())
        .with("www-authenticate", challenge_header(authority_url, tenant, resource))
}

fn challenge_header(authority_url: &str, tenant: &str, resource: &str) -> String {
    format!("Bearer authorization=\"{authority_url}/{tenant}\", resource=\"{resource}\"")
}

/// Who was refused, as the 403 names them.
pub(crate) struct Caller<'a> {
    pub appid: &'a str,
    pub oid: &'a str,
    pub tid: &'a str,
}

/// The 403 local RBAC answers when no assignment grants `action` on `resource`.
pub(crate) fn forbidden(caller: &Caller, action: &str, resource: &str, hsm: &str, location: &str) -> Resp {
    error_with_inner(
        403,
        "Forbidden",
        format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss=https://sts.windows.net/{}/\r\nAction: '{action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {hsm};location={location}\r\n",
            caller.appid, caller.oid, caller.tid
        ),
        "AccessDenied",
    )
}

/// `tags`: at most 15, string values, names and values up to 512 characters.
pub(crate) fn parse_tags(v: &Value) -> Result<BTreeMap<String, String>, Resp> {
    let Some(obj) = v.as_object() else { return Err(bad_parameter("Tags must be an object of string values.")) };
    if obj.len() > 15 {
        return Err(bad_parameter("Number of tags exceeds the limit of 15."));
    }
    let mut out = BTreeMap::new();
    for (k, val) in obj {
        let Some(s) = val.as_str() else { return Err(bad_parameter(format!("Tag '{k}' must have a string value."))) };
        if k.len() > 512 || s.len() > 512 {
            return Err(bad_parameter("Tag names and values are limited to 512 characters."));
        }
        out.insert(k.clone(), s.to_string());
    }
    Ok(out)
}

/// `key_ops`: an array of known operation names.
pub(crate) fn parse_key_ops(v: &Value) -> Result<Vec<String>, Resp> {
    let Some(arr) = v.as_array() else { return Err(bad_parameter("key_ops must be an array.")) };
    let mut ops = Vec::new();
    for o in arr {
        match o.as_str() {
            Some(s) if KEY_OPS.contains(&s) => ops.push(s.to_string()),
            _ => return Err(bad_parameter(format!("Invalid key operation: {o}"))),
        }
    }
    Ok(ops)
}

/// `attributes.<k>` as Unix time: absent → `None`, `null` → `Some(None)` (clear), a number → set.
pub(crate) fn parse_unix_time(attributes: &Value, k: &str) -> Result<Option<Option<i64>>, Resp> {
    match attributes.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_i64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| bad_parameter(format!("attributes.{k} must be a number (Unix time)."))),
    }
}
