//! Managed HSM keys through the Azure SDK's `KeyClient`: read, create, tag, and read or write
//! the rotation policy.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use azure_security_keyvault_keys::{
    KeyClient, KeyClientOptions,
    models::{
        CreateKeyParameters, Key, KeyAttributes, KeyClientGetKeyOptions, KeyClientUpdateKeyPropertiesOptions,
        KeyOperation, KeyRotationPolicy, KeyRotationPolicyAction, KeyRotationPolicyAttributes, KeyType, LifetimeAction,
        LifetimeActionTrigger, LifetimeActionType, UpdateKeyPropertiesParameters,
    },
};

use super::{Azure, Identity, from_azure};
use crate::{
    bounded::BoundedMap,
    cloud::HsmEndpoint,
    locks::lock,
    pacing::Class,
    remote::{RemoteError, Service},
};

/// Managed HSM data-plane API version the operator speaks.
pub const API_VERSION: &str = "7.5";

/// What the reconciler needs to know about a key's current version.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyInfo {
    /// Versioned key URL exactly as the HSM returned it.
    pub kid: String,
    pub version: String,
    pub kty: String,
    pub ops: Vec<String>,
    pub enabled: bool,
    pub not_before: Option<jiff::Timestamp>,
    pub expires: Option<jiff::Timestamp>,
    pub tags: BTreeMap<String, String>,
}

/// A key's rotation policy as Managed HSM keeps it: one `Rotate` action (Managed HSM has no
/// `Notify`) and the expiry of the versions it makes, as ISO 8601 durations (`P90D`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Make a new version this long after the latest one was created (`timeAfterCreate`).
    pub rotate_after_create: Option<String>,
    /// Make a new version this long before the latest one expires (`timeBeforeExpiry`).
    pub rotate_before_expiry: Option<String>,
    /// How long each new version lives (`attributes.expiryTime`).
    pub expiry_time: Option<String>,
}

impl RotationPolicy {
    fn from_model(policy: KeyRotationPolicy) -> Self {
        let rotate = policy.lifetime_actions.unwrap_or_default().into_iter().find(|a| {
            a.action
                .as_ref()
                .and_then(|t| t.type_prop.as_ref())
                .is_some_and(|t| matches!(t, KeyRotationPolicyAction::Rotate))
        });
        let trigger = rotate.and_then(|a| a.trigger).unwrap_or_default();
        Self {
            rotate_after_create: trigger.time_after_create,
            rotate_before_expiry: trigger.time_before_expiry,
            expiry_time: policy.attributes.and_then(|a| a.expiry_time),
        }
    }

    fn to_model(&self) -> KeyRotationPolicy {
        let rotate =
            (self.rotate_after_create.is_some() || self.rotate_before_expiry.is_some()).then(|| LifetimeAction {
                action: Some(LifetimeActionType { type_prop: Some(KeyRotationPolicyAction::Rotate) }),
                trigger: Some(LifetimeActionTrigger {
                    time_after_create: self.rotate_after_create.clone(),
                    time_before_expiry: self.rotate_before_expiry.clone(),
                }),
            });
        KeyRotationPolicy {
            attributes: Some(KeyRotationPolicyAttributes {
                expiry_time: self.expiry_time.clone(),
                ..Default::default()
            }),
            lifetime_actions: Some(rotate.into_iter().collect()),
            ..Default::default()
        }
    }
}

/// (HSM, identity) pairs whose `KeyClient` is kept at once.
const KEPT_KEY_CLIENTS: usize = 1024;

/// `KeyClient`s per (HSM, identity), so each discovers its challenge scope once and reuses its
/// connection pool and token.
pub struct KeyClients {
    clients: Mutex<BoundedMap<(HsmEndpoint, Identity), Arc<KeyClient>>>,
}

impl Default for KeyClients {
    fn default() -> Self {
        Self { clients: Mutex::new(BoundedMap::new(KEPT_KEY_CLIENTS, None)) }
    }
}

impl KeyClients {
    /// Drops the client of an HSM and identity (it holds the credential whose token was refused).
    pub fn forget(&self, hsm: &HsmEndpoint, identity: &Identity) {
        lock(&self.clients).retain(|(h, i), _| !(h == hsm && i == identity));
    }

    fn client(&self, azure: &Azure, hsm: &HsmEndpoint, identity: &Identity) -> Result<Arc<KeyClient>, RemoteError> {
        let mut clients = lock(&self.clients);
        let key = (hsm.clone(), identity.clone());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let options = KeyClientOptions {
            api_version: API_VERSION.to_owned(),
            client_options: azure.client_options(),
            verify_challenge_resource: Some(true),
        };
        let client = KeyClient::new(&hsm.url, azure.credential(identity, &hsm.scope)?, Some(options))
            .map_err(|e| from_azure(Service::Hsm, "key.client", e))?;
        let client = Arc::new(client);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The latest version of a key, or `None` when the HSM has no such key.
    pub async fn get(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        name: &str,
    ) -> Result<Option<KeyInfo>, RemoteError> {
        let client = self.client(azure, hsm, identity)?;
        match client.get_key(name, None::<KeyClientGetKeyOptions>).await {
            Ok(rsp) => key_info(rsp.into_model().map_err(|e| from_azure(Service::Hsm, "key.get", e))?).map(Some),
            Err(e) => {
                let e = from_azure(Service::Hsm, "key.get", e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Creates an `oct-HSM` key with wrapKey/unwrapKey and the given tags.
    pub async fn create(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        name: &str,
        size: u16,
        tags: BTreeMap<String, String>,
    ) -> Result<KeyInfo, RemoteError> {
        let client = self.client(azure, hsm, identity)?;
        let params = CreateKeyParameters {
            kty: Some(KeyType::OctHsm),
            key_size: Some(i32::from(size)),
            key_ops: Some(vec![KeyOperation::WrapKey, KeyOperation::UnwrapKey]),
            key_attributes: Some(KeyAttributes { enabled: Some(true), ..Default::default() }),
            tags: Some(tags.into_iter().collect()),
            ..Default::default()
        };
        let body = params.try_into().map_err(|e| from_azure(Service::Hsm, "key.create", e))?;
        let rsp = azure
            .paced(Class::KeyCreate, hsm, async {
                client.create_key(name, body, None).await.map_err(|e| from_azure(Service::Hsm, "key.create", e))
            })
            .await?;
        key_info(rsp.into_model().map_err(|e| from_azure(Service::Hsm, "key.create", e))?)
    }

    /// The key's rotation policy (one without actions when none was set), or `None` when the HSM
    /// has no such key.
    pub async fn rotation_policy(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        name: &str,
    ) -> Result<Option<RotationPolicy>, RemoteError> {
        let operation = "key.rotationpolicy.get";
        let client = self.client(azure, hsm, identity)?;
        match client.get_key_rotation_policy(name, None).await {
            Ok(rsp) => Ok(Some(RotationPolicy::from_model(
                rsp.into_model().map_err(|e| from_azure(Service::Hsm, operation, e))?,
            ))),
            Err(e) => {
                let e = from_azure(Service::Hsm, operation, e);
                if e.is_not_found() { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Replaces the key's rotation policy; returns it as the HSM stored it.
    pub async fn set_rotation_policy(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        name: &str,
        policy: &RotationPolicy,
    ) -> Result<RotationPolicy, RemoteError> {
        let operation = "key.rotationpolicy.put";
        let client = self.client(azure, hsm, identity)?;
        let body = policy.to_model().try_into().map_err(|e| from_azure(Service::Hsm, operation, e))?;
        let rsp = client
            .update_key_rotation_policy(name, body, None)
            .await
            .map_err(|e| from_azure(Service::Hsm, operation, e))?;
        Ok(RotationPolicy::from_model(rsp.into_model().map_err(|e| from_azure(Service::Hsm, operation, e))?))
    }

    /// Replaces the tags of one key version (callers merge first: the HSM replaces the whole map).
    pub async fn set_tags(
        &self,
        azure: &Azure,
        hsm: &HsmEndpoint,
        identity: &Identity,
        name: &str,
        version: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<KeyInfo, RemoteError> {
        let client = self.client(azure, hsm, identity)?;
        let params = UpdateKeyPropertiesParameters { tags: Some(tags.into_iter().collect()), ..Default::default() };
        let body = params.try_into().map_err(|e| from_azure(Service::Hsm, "key.update", e))?;
        let options =
            KeyClientUpdateKeyPropertiesOptions { key_version: Some(version.to_owned()), ..Default::default() };
        let rsp = client
            .update_key_properties(name, body, Some(options))
            .await
            .map_err(|e| from_azure(Service::Hsm, "key.update", e))?;
        key_info(rsp.into_model().map_err(|e| from_azure(Service::Hsm, "key.update", e))?)
    }
}

/// Reads a key bundle as the HSM returned it; anything it cannot use is `Malformed`.
pub fn key_info(key: Key) -> Result<KeyInfo, RemoteError> {
    let malformed = |detail: &str| RemoteError::Malformed {
        service: Service::Hsm,
        operation: "key.get",
        detail: detail.to_owned(),
    };
    let jwk = key.key.ok_or_else(|| malformed("key bundle without `key`"))?;
    let kid = jwk.kid.ok_or_else(|| malformed("key without `kid`"))?;
    let version = parse_kid(&kid).ok_or_else(|| malformed("`kid` is not a versioned key URL"))?.1;
    let attributes = key.attributes.unwrap_or_default();
    let ts = |t: Option<azure_core::time::OffsetDateTime>| {
        t.and_then(|t| jiff::Timestamp::from_second(t.unix_timestamp()).ok())
    };
    Ok(KeyInfo {
        kty: jwk.kty.map(|k| k.to_string()).unwrap_or_default(),
        ops: jwk.key_ops.unwrap_or_default(),
        enabled: attributes.enabled.unwrap_or(true),
        not_before: ts(attributes.not_before),
        expires: ts(attributes.expires),
        tags: key.tags.unwrap_or_default().into_iter().collect(),
        version,
        kid,
    })
}

/// Splits a versioned key URL `https://<host>/keys/<name>/<version>` into name and version.
pub fn parse_kid(kid: &str) -> Option<(String, String)> {
    let url = url::Url::parse(kid).ok()?;
    let mut segments = url.path_segments()?;
    match (segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some("keys"), Some(name), Some(version), None) if !name.is_empty() && !version.is_empty() => {
            Some((name.to_owned(), version.to_owned()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_kid;

    #[test]
    fn kid_parsing() {
        assert_eq!(
            parse_kid("https://h.managedhsm.azure.net/keys/k1/0123abcd"),
            Some(("k1".into(), "0123abcd".into()))
        );
        for bad in [
            "https://h/keys/k1",
            "https://h/keys/k1/",
            "https://h/secrets/k/v",
            "not a url",
            "https://h/keys/k/v/extra",
        ] {
            assert_eq!(parse_kid(bad), None, "{bad}");
        }
    }
}
