//! Antimatter wire shapes: error bodies, the delegated provider's name, and the key URL a
//! registration carries.

use super::Resp;
use serde_json::json;

/// Name of the Azure provider delegated to Antimatter's application.
pub const AZURE_AM: &str = "azure_am";

/// The API host; a domain on a cell is served by [`cell_host`] instead.
pub(crate) const API_HOST: &str = "api.sandbox.localhost";

/// The host serving a domain: its cell's, or the API host (`None`).
pub(crate) fn cell_host(cell: Option<&str>) -> String {
    cell.map_or_else(|| API_HOST.to_string(), |c| format!("antimatter-{c}.sandbox.localhost"))
}

/// The cell a host serves (`Some(None)`: the API host), or `None` when it is no Antimatter host.
pub(crate) fn host_cell(host: &str) -> Option<Option<String>> {
    if host == API_HOST {
        return Some(None);
    }
    let cell = host.strip_prefix("antimatter-")?.strip_suffix(".sandbox.localhost")?;
    crate::util::is_cell_name(cell).then(|| Some(cell.to_string()))
}

/// `{"message"}`.
pub(crate) fn message(status: u16, m: impl Into<String>) -> Resp {
    Resp::json(status, &json!({"message": m.into()}))
}

/// `{"resourceType", "identifier", "message"}`.
pub(crate) fn resource_error(status: u16, resource_type: &str, id: &str, m: impl Into<String>) -> Resp {
    Resp::json(status, &json!({"resourceType": resource_type, "identifier": id, "message": m.into()}))
}

/// A 400 `{"field", "message"}`.
pub(crate) fn field_error(field: &str, m: impl Into<String>) -> Resp {
    Resp::json(400, &json!({"field": field, "message": m.into()}))
}

/// Parsed parts of a Managed HSM key URL.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyUrl {
    /// HSM name (first DNS label).
    pub hsm: String,
    /// DNS suffix after the HSM name (with port if any).
    pub suffix: String,
    /// Key name.
    pub key: String,
    /// 32-hex version.
    pub version: String,
}

/// Parse a versioned Managed HSM key URL: `https://<hsm>.<suffix>/keys/<name>/<32-hex version>`.
pub fn parse_key_url(url: &str, sandbox_suffix: &str) -> Result<KeyUrl, String> {
    let rest = url.strip_prefix("https://").ok_or("keyURL must be an absolute https URL")?;
    let (host, path) = rest.split_once('/').ok_or("keyURL has no path")?;
    let (hsm, suffix) = host.split_once('.').ok_or("keyURL host is not a Managed HSM host")?;
    let known = [sandbox_suffix, "managedhsm.azure.net", "managedhsm.usgovcloudapi.net", "managedhsm.azure.cn"];
    if !known.iter().any(|k| suffix.eq_ignore_ascii_case(k)) {
        return Err(format!("keyURL host '{host}' is not a Managed HSM host (expected <hsm-name>.{sandbox_suffix})"));
    }
    if hsm.is_empty() || !hsm.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err("keyURL has an invalid HSM name".into());
    }
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["keys", name, version]
            if crate::roles::valid_key_name(name)
                && version.len() == 32
                && version.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(KeyUrl {
                hsm: hsm.to_ascii_lowercase(),
                suffix: suffix.to_ascii_lowercase(),
                key: name.to_string(),
                version: version.to_ascii_lowercase(),
            })
        }
        ["keys", _] | ["keys", _, ""] => Err("keyURL must include the key version".into()),
        _ => Err("keyURL must be https://<hsm-name>.<suffix>/keys/<key-name>/<version>".into()),
    }
}
