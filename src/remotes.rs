//! The seam between the reconcile steps and the services they call: narrow traits for one Managed
//! HSM (as one identity), one tenant's directory and one Antimatter domain, handed out by
//! [`Remotes`]. Production implements them with the Azure and Antimatter clients; the tests implement
//! them in memory, so every branch of the steps runs in milliseconds.

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;
use kube::{ResourceExt, runtime::reflector::Store};

use crate::{
    antimatter::{AntimatterClient, DomainTarget, PairingResult, RootKey},
    api::AzureRootKey,
    azure::{
        Azure, Identity,
        graph::{self, Found, Graph},
        keys::{KeyClients, KeyInfo, RotationPolicy},
        rbac::{Rbac, RoleAssignment, RoleAssignmentProperties},
    },
    cloud::HsmEndpoint,
    locks::lock,
    remote::RemoteError,
};

pub type Tags = BTreeMap<String, String>;

/// One Managed HSM's keys and local RBAC, reached as one identity.
#[async_trait]
pub trait ManagedHsm: Send + Sync {
    /// The latest version of a key, or `None` when the HSM has no such key.
    async fn key(&self, name: &str) -> Result<Option<KeyInfo>, RemoteError>;
    /// Creates an `oct-HSM` key allowing wrapKey and unwrapKey, with these tags.
    async fn create_key(&self, name: &str, size: u16, tags: Tags) -> Result<KeyInfo, RemoteError>;
    /// Replaces the tags of one key version (the HSM replaces the whole map: merge first).
    async fn set_key_tags(&self, name: &str, version: &str, tags: Tags) -> Result<KeyInfo, RemoteError>;
    /// The key's rotation policy (without actions when none was set), or `None` when the HSM has
    /// no such key.
    async fn rotation_policy(&self, key: &str) -> Result<Option<RotationPolicy>, RemoteError>;
    /// Replaces the key's rotation policy; returns it as the HSM stored it.
    async fn set_rotation_policy(&self, key: &str, policy: &RotationPolicy) -> Result<RotationPolicy, RemoteError>;
    /// One role assignment by name, or `None` when it does not exist.
    async fn assignment(&self, scope: &str, name: &str) -> Result<Option<RoleAssignment>, RemoteError>;
    /// Creates (or re-puts) a role assignment under `name`.
    async fn put_assignment(
        &self,
        scope: &str,
        name: &str,
        properties: &RoleAssignmentProperties,
    ) -> Result<RoleAssignment, RemoteError>;
    /// Deletes a role assignment; an absent one counts as deleted.
    async fn delete_assignment(&self, scope: &str, name: &str) -> Result<(), RemoteError>;
    /// The role assignments at exactly `scope`.
    async fn assignments_at(&self, scope: &str) -> Result<Vec<RoleAssignment>, RemoteError>;
    /// Fetches the HSM token ahead of the first call: a new key client sends that call without a
    /// token, learns the scope from the 401 challenge, and only then would ask for one.
    async fn warm_up(&self);
}

/// One tenant's directory (Microsoft Graph), reached as one identity.
#[async_trait]
pub trait Directory: Send + Sync {
    /// The object ID of the application's service principal, creating the principal if absent.
    async fn service_principal(&self, app_id: &str) -> Result<(String, Found), RemoteError>;
    /// The application ID of the service principal with this object ID; `None` when the tenant
    /// has no such principal.
    async fn principal_application(&self, object_id: &str) -> Result<Option<String>, RemoteError>;
    /// Fetches the directory token ahead of a lookup, so the lookup does not wait for it.
    async fn warm_up(&self);
}

/// The cluster's AzureRootKeys, as far as key ownership needs them.
#[async_trait]
pub trait Owners: Send + Sync {
    /// Whether the AzureRootKey `namespace/name` exists. A failed lookup counts as existing: a
    /// key is never taken from an owner on doubt.
    async fn exists(&self, namespace: &str, name: &str) -> bool;
    /// The object (`namespace`, `name`) that asks to activate a key in this domain at this API
    /// and came first (oldest, then by name), among the objects this operator watches.
    fn first_activator(&self, domain_id: &str, api_url: &str) -> Option<(String, String)>;
}

/// One Antimatter domain at one API endpoint, reached with one API key.
#[async_trait]
pub trait AntimatterDomain: Send + Sync {
    /// Antimatter's Azure application ID if it has been looked up already (no call).
    fn known_application_id(&self) -> Option<String>;
    /// Antimatter's Azure application ID from the `azure_am` provider; `None` when it names none.
    async fn application_id(&self) -> Result<Option<String>, RemoteError>;
    async fn root_keys(&self) -> Result<Vec<RootKey>, RemoteError>;
    /// Registers an Azure key URL; returns its root encryption key ID.
    async fn register(&self, description: &str, tenant_id: &str, key_url: &str) -> Result<String, RemoteError>;
    async fn unregister(&self, rek_id: &str) -> Result<(), RemoteError>;
    async fn pairing_check(&self, rek_id: &str) -> Result<PairingResult, RemoteError>;
    /// The domain's active key, or `None` when it has none.
    async fn active_key(&self) -> Result<Option<RootKey>, RemoteError>;
    /// Makes a key active; `true` while Antimatter has more data keys to re-wrap.
    async fn activate(&self, rek_id: &str, rotate_batch: bool) -> Result<bool, RemoteError>;
    /// Re-wraps one batch of data keys under the active key; `true` while there is more.
    async fn rotate(&self) -> Result<bool, RemoteError>;
}

/// Hands out the sessions the steps use.
pub trait Remotes: Send + Sync {
    fn hsm<'a>(&'a self, endpoint: &'a HsmEndpoint, identity: &'a Identity) -> Box<dyn ManagedHsm + 'a>;
    fn directory<'a>(&'a self, identity: &'a Identity) -> Box<dyn Directory + 'a>;
    fn antimatter<'a>(&'a self, domain: &'a DomainTarget) -> Box<dyn AntimatterDomain + 'a>;
    fn owners(&self) -> &dyn Owners;
}

/// The real services: Azure (keys through the SDK, RBAC and Graph hand-written), Antimatter, and
/// the cluster's AzureRootKeys.
pub struct Services {
    pub azure: Azure,
    pub keys: KeyClients,
    pub rbac: Rbac,
    pub graph: Graph,
    pub antimatter: AntimatterClient,
    pub cluster: ClusterObjects,
}

impl Services {
    pub fn new(azure: Azure, antimatter: AntimatterClient, client: kube::Client) -> Self {
        let cluster = ClusterObjects { client, watched: Mutex::default() };
        Self { azure, keys: KeyClients::default(), rbac: Rbac, graph: Graph::default(), antimatter, cluster }
    }
}

/// AzureRootKeys: read from the API server, or from the caches of the watching controllers.
pub struct ClusterObjects {
    client: kube::Client,
    watched: Mutex<Vec<Store<AzureRootKey>>>,
}

impl ClusterObjects {
    /// Adds the cache of one controller's objects.
    pub fn watch(&self, store: Store<AzureRootKey>) {
        lock(&self.watched).push(store);
    }
}

#[async_trait]
impl Owners for ClusterObjects {
    async fn exists(&self, namespace: &str, name: &str) -> bool {
        let api = kube::Api::<AzureRootKey>::namespaced(self.client.clone(), namespace);
        !matches!(api.get_metadata_opt(name).await, Ok(None))
    }

    fn first_activator(&self, domain_id: &str, api_url: &str) -> Option<(String, String)> {
        let stores = lock(&self.watched).clone();
        let first = stores
            .iter()
            .flat_map(|store| store.state())
            .filter(|ark| {
                let antimatter = &ark.spec.antimatter;
                antimatter.activate
                    && ark.spec.domain_id == domain_id
                    && antimatter.api_url == api_url
                    && ark.metadata.deletion_timestamp.is_none()
            })
            .min_by_key(|ark| {
                (ark.metadata.creation_timestamp.clone().map(|t| t.0), ark.namespace(), ark.name_any())
            })?;
        Some((first.namespace().unwrap_or_default(), first.name_any()))
    }
}

impl Remotes for Services {
    fn hsm<'a>(&'a self, endpoint: &'a HsmEndpoint, identity: &'a Identity) -> Box<dyn ManagedHsm + 'a> {
        Box::new(HsmSession { services: self, endpoint, identity })
    }

    fn directory<'a>(&'a self, identity: &'a Identity) -> Box<dyn Directory + 'a> {
        Box::new(DirectorySession { services: self, identity })
    }

    fn antimatter<'a>(&'a self, domain: &'a DomainTarget) -> Box<dyn AntimatterDomain + 'a> {
        Box::new(DomainSession { client: &self.antimatter, domain })
    }

    fn owners(&self) -> &dyn Owners {
        &self.cluster
    }
}

struct HsmSession<'a> {
    services: &'a Services,
    endpoint: &'a HsmEndpoint,
    identity: &'a Identity,
}

#[async_trait]
impl ManagedHsm for HsmSession<'_> {
    async fn key(&self, name: &str) -> Result<Option<KeyInfo>, RemoteError> {
        let s = self.services;
        self.refused(s.keys.get(&s.azure, self.endpoint, self.identity, name).await)
    }

    async fn create_key(&self, name: &str, size: u16, tags: Tags) -> Result<KeyInfo, RemoteError> {
        let s = self.services;
        self.refused(s.keys.create(&s.azure, self.endpoint, self.identity, name, size, tags).await)
    }

    async fn set_key_tags(&self, name: &str, version: &str, tags: Tags) -> Result<KeyInfo, RemoteError> {
        let s = self.services;
        self.refused(s.keys.set_tags(&s.azure, self.endpoint, self.identity, name, version, tags).await)
    }

    async fn rotation_policy(&self, key: &str) -> Result<Option<RotationPolicy>, RemoteError> {
        let s = self.services;
        self.refused(s.keys.rotation_policy(&s.azure, self.endpoint, self.identity, key).await)
    }

    async fn set_rotation_policy(&self, key: &str, policy: &RotationPolicy) -> Result<RotationPolicy, RemoteError> {
        let s = self.services;
        self.refused(s.keys.set_rotation_policy(&s.azure, self.endpoint, self.identity, key, policy).await)
    }

    async fn assignment(&self, scope: &str, name: &str) -> Result<Option<RoleAssignment>, RemoteError> {
        let s = self.services;
        self.refused(s.rbac.get(&s.azure, self.endpoint, self.identity, scope, name).await)
    }

    async fn put_assignment(
        &self,
        scope: &str,
        name: &str,
        properties: &RoleAssignmentProperties,
    ) -> Result<RoleAssignment, RemoteError> {
        let s = self.services;
        self.refused(s.rbac.put(&s.azure, self.endpoint, self.identity, scope, name, properties).await)
    }

    async fn delete_assignment(&self, scope: &str, name: &str) -> Result<(), RemoteError> {
        let s = self.services;
        self.refused(s.rbac.delete(&s.azure, self.endpoint, self.identity, scope, name).await)
    }

    async fn assignments_at(&self, scope: &str) -> Result<Vec<RoleAssignment>, RemoteError> {
        let s = self.services;
        self.refused(s.rbac.list_at_scope(&s.azure, self.endpoint, self.identity, scope).await)
    }

    async fn warm_up(&self) {
        // An error here is met again, and reported, by the call itself.
        let _ = self.services.azure.token(self.identity, &self.endpoint.scope).await;
    }
}

impl HsmSession<'_> {
    /// A token the HSM refused (401) is dropped with its client, so the retry fetches a new one.
    fn refused<T>(&self, result: Result<T, RemoteError>) -> Result<T, RemoteError> {
        if let Err(e) = &result
            && e.status() == Some(401)
        {
            let s = self.services;
            s.keys.forget(self.endpoint, self.identity);
            s.azure.forget_credential(self.identity, &self.endpoint.scope);
        }
        result
    }
}

struct DirectorySession<'a> {
    services: &'a Services,
    identity: &'a Identity,
}

#[async_trait]
impl Directory for DirectorySession<'_> {
    async fn service_principal(&self, app_id: &str) -> Result<(String, Found), RemoteError> {
        self.services.graph.ensure_service_principal(&self.services.azure, self.identity, app_id).await
    }

    async fn principal_application(&self, object_id: &str) -> Result<Option<String>, RemoteError> {
        self.services.graph.principal_application(&self.services.azure, self.identity, object_id).await
    }

    async fn warm_up(&self) {
        graph::warm_token(&self.services.azure, self.identity).await;
    }
}

struct DomainSession<'a> {
    client: &'a AntimatterClient,
    domain: &'a DomainTarget,
}

#[async_trait]
impl AntimatterDomain for DomainSession<'_> {
    fn known_application_id(&self) -> Option<String> {
        self.client.known_application_id(self.domain)
    }

    async fn application_id(&self) -> Result<Option<String>, RemoteError> {
        self.client.application_id(self.domain).await
    }

    async fn root_keys(&self) -> Result<Vec<RootKey>, RemoteError> {
        self.client.list_keys(self.domain).await
    }

    async fn register(&self, description: &str, tenant_id: &str, key_url: &str) -> Result<String, RemoteError> {
        self.client.add_key(self.domain, description, tenant_id, key_url).await
    }

    async fn unregister(&self, rek_id: &str) -> Result<(), RemoteError> {
        self.client.delete_key(self.domain, rek_id).await
    }

    async fn pairing_check(&self, rek_id: &str) -> Result<PairingResult, RemoteError> {
        self.client.test_key(self.domain, rek_id).await
    }

    async fn active_key(&self) -> Result<Option<RootKey>, RemoteError> {
        self.client.active_key(self.domain).await
    }

    async fn activate(&self, rek_id: &str, rotate_batch: bool) -> Result<bool, RemoteError> {
        self.client.set_active(self.domain, rek_id, rotate_batch).await
    }

    async fn rotate(&self) -> Result<bool, RemoteError> {
        self.client.rotate(self.domain).await
    }
}
