//! Antimatter domains: API keys, registered root encryption keys, the active key and rotation.

use crate::util;
use crate::wire::antimatter::AZURE_AM;
use serde::{Deserialize, Serialize};

/// `source` of the Antimatter-held default key every domain starts with.
pub(crate) const DEFAULT_KEY_SOURCE: &str = "antimatter";

/// A root encryption key registered with an Antimatter domain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// `rekID`.
    pub rek_id: String,
    /// Provider (`azure_am`, or `antimatter` for the built-in default key).
    pub source: String,
    /// The key URL.
    pub resource_path: String,
    /// Description.
    pub description: String,
    /// Tenant ID given at registration.
    pub tenant_id: String,
    /// Last pairing-check status, if any.
    pub last_status: Option<String>,
}

/// An Antimatter domain: its API keys, registered root encryption keys and which one is active.
#[derive(Debug, Clone)]
pub(crate) struct Domain {
    pub id: String,
    pub name: String,
    pub api_keys: Vec<String>,
    pub keys: Vec<Registration>,
    pub active: String,
    pub pending_rotations: u32,
    /// Keys that were active before and may still wrap data keys until the rotation finishes.
    pub still_wrapping: Vec<String>,
    pub enable_bypass: bool,
    /// The cell serving the domain (`None`: the API host).
    pub cell: Option<String>,
    /// What `authenticate` answers as `cellAddress` instead of the responding host's URL.
    pub cell_address_override: Option<String>,
}

impl Registration {
    /// The Antimatter-held default key a domain starts with.
    pub(crate) fn default_key() -> Registration {
        Registration {
            rek_id: util::uuid_v4(),
            source: DEFAULT_KEY_SOURCE.into(),
            resource_path: String::new(),
            description: "Antimatter-held default root encryption key".into(),
            tenant_id: String::new(),
            last_status: None,
        }
    }

    /// Whether this is the Antimatter-held default key.
    pub(crate) fn is_default(&self) -> bool {
        self.source == DEFAULT_KEY_SOURCE
    }
}

/// Why a registration was not added or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RegistrationError {
    NoSuchDomain,
    NotFound,
    /// The key URL is already registered, under this ID.
    AlreadyRegistered(String),
    /// The registration (this ID) is the active key.
    Active(String),
    /// Data keys may still be wrapped under the registration (this ID): a rotation is unfinished.
    InUse(String),
    /// The registration (this ID) is the default key.
    Default(String),
}

impl Domain {
    /// Register a delegated Azure key by its URL; returns the new ID.
    pub(crate) fn register(
        &mut self,
        resource_path: &str,
        description: String,
        tenant_id: String,
    ) -> Result<String, RegistrationError> {
        if let Some(existing) = self.keys.iter().find(|k| k.resource_path == resource_path) {
            return Err(RegistrationError::AlreadyRegistered(existing.rek_id.clone()));
        }
        let rek = Registration {
            rek_id: util::uuid_v4(),
            source: AZURE_AM.into(),
            resource_path: resource_path.to_string(),
            description,
            tenant_id,
            last_status: None,
        };
        let id = rek.rek_id.clone();
        self.keys.push(rek);
        Ok(id)
    }

    /// Remove a registration that is neither active nor the default key.
    pub(crate) fn unregister(&mut self, id: &str) -> Result<(), RegistrationError> {
        let r = self.resolve(id).ok_or(RegistrationError::NotFound)?;
        if r.rek_id == self.active {
            return Err(RegistrationError::Active(r.rek_id.clone()));
        }
        if r.is_default() {
            return Err(RegistrationError::Default(r.rek_id.clone()));
        }
        if self.still_wrapping.contains(&r.rek_id) {
            return Err(RegistrationError::InUse(r.rek_id.clone()));
        }
        let rek_id = r.rek_id.clone();
        self.keys.retain(|k| k.rek_id != rek_id);
        Ok(())
    }

    /// Make `rek_id` active: data keys wrapped under the key active before need `batches`
    /// rotation batches to be re-wrapped.
    pub(crate) fn set_active(&mut self, rek_id: &str, batches: u32) {
        if self.active != rek_id {
            let before = std::mem::replace(&mut self.active, rek_id.to_string());
            self.still_wrapping.retain(|k| k != rek_id);
            self.still_wrapping.push(before);
            self.pending_rotations = batches;
            if batches == 0 {
                self.still_wrapping.clear();
            }
        }
    }

    /// One rotation batch, if any remain; returns whether more remain. The last one leaves nothing
    /// wrapped under the keys active before.
    pub(crate) fn rotate_batch(&mut self) -> bool {
        if self.pending_rotations > 0 {
            self.pending_rotations -= 1;
        }
        if self.pending_rotations == 0 {
            self.still_wrapping.clear();
        }
        self.pending_rotations > 0
    }

    /// A registration by ID, `active`, `default`, or `<domain>::<ID>`.
    pub(crate) fn resolve(&self, id: &str) -> Option<&Registration> {
        let id = match id.split_once("::") {
            Some((prefix, rest)) if prefix == self.id => rest,
            Some(_) => return None,
            None => id,
        };
        match id {
            "active" => self.keys.iter().find(|k| k.rek_id == self.active),
            "default" => self.keys.iter().find(|k| k.is_default()),
            _ => self.keys.iter().find(|k| k.rek_id.eq_ignore_ascii_case(id)),
        }
    }
}
