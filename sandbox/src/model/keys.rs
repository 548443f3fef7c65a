//! Keys: versions with their attributes and material, soft-deleted keys, and how a version is
//! made and changed.

use crate::util;
use crate::wire::admin::KeyPatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Soft-delete retention.
pub(crate) const RECOVERABLE_DAYS: i64 = 90;

/// One version of a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyVersion {
    /// 32-hex version.
    pub version: String,
    /// `oct-HSM`, `RSA-HSM`, `EC-HSM`.
    pub kty: String,
    /// Size in bits (oct/RSA).
    pub key_size: Option<u32>,
    /// Curve (EC).
    pub crv: Option<String>,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.nbf`.
    pub nbf: Option<i64>,
    /// `attributes.exp`.
    pub exp: Option<i64>,
    /// `attributes.created`.
    pub created: i64,
    /// `attributes.updated`.
    pub updated: i64,
    /// Secret material (never serialised).
    #[serde(skip)]
    pub material: Vec<u8>,
    /// Public parts for RSA (n, e) or EC (x, y), base64url.
    #[serde(skip)]
    pub public: Vec<(String, String)>,
}

/// A key with its versions (oldest first; the last is the latest).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Key {
    /// Name.
    pub name: String,
    /// Versions, oldest first.
    pub versions: Vec<KeyVersion>,
    /// The rotation policy, once one was written.
    #[serde(default)]
    pub rotation_policy: Option<RotationPolicy>,
}

/// A key's rotation policy (`KeyRotationPolicy` in the data-plane spec `keys.json`): at most one
/// `Rotate` action (Managed HSM has no `Notify`), durations kept as the ISO 8601 text given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RotationPolicy {
    /// `trigger.timeAfterCreate` of the `Rotate` action: after the latest version's creation.
    pub rotate_after_create: Option<String>,
    /// `trigger.timeBeforeExpiry` of the `Rotate` action: before the latest version's expiry.
    pub rotate_before_expiry: Option<String>,
    /// `attributes.expiryTime`: the expiry every new version gets, from its creation.
    pub expiry_time: Option<String>,
    /// `attributes.created`.
    pub created: i64,
    /// `attributes.updated`.
    pub updated: i64,
}

impl RotationPolicy {
    /// Whether the policy's `Rotate` action is due for a key whose latest version is `latest`.
    fn due(&self, latest: &KeyVersion, now: i64) -> bool {
        let secs = |d: &Option<String>| d.as_deref().and_then(util::iso8601_duration_secs);
        let after_create = secs(&self.rotate_after_create).is_some_and(|s| latest.created + s <= now);
        let before_expiry = secs(&self.rotate_before_expiry).zip(latest.exp).is_some_and(|(s, exp)| exp - s <= now);
        after_create || before_expiry
    }
}

impl Key {
    /// A key without versions yet.
    pub(crate) fn empty(name: &str) -> Key {
        Key { name: name.to_string(), versions: vec![], rotation_policy: None }
    }

    /// Adds a version made like the latest (as `POST /keys/{name}/rotate` does), created `now`
    /// and expiring after the policy's `expiryTime` when it has one; returns its ID.
    pub(crate) fn rotate(&mut self, now: i64) -> Option<String> {
        let mut params = KeyParams::of(self.latest()?);
        if let Some(expiry) =
            self.rotation_policy.as_ref().and_then(|p| p.expiry_time.as_deref()).and_then(util::iso8601_duration_secs)
        {
            params.exp = Some(now + expiry);
        }
        let v = KeyVersion::generate(&params, now);
        let id = v.version.clone();
        self.versions.push(v);
        Some(id)
    }

    /// Rotates the key if its policy's `Rotate` action is due at `now`; returns the new version.
    pub(crate) fn rotate_if_due(&mut self, now: i64) -> Option<String> {
        let due = self.rotation_policy.as_ref().zip(self.latest()).is_some_and(|(p, latest)| p.due(latest, now));
        if due { self.rotate(now) } else { None }
    }

    /// The latest version.
    pub fn latest(&self) -> Option<&KeyVersion> {
        self.versions.last()
    }

    /// A version by ID (any case); the empty ID names the latest.
    pub(crate) fn version(&self, version: &str) -> Option<&KeyVersion> {
        if version.is_empty() {
            self.latest()
        } else {
            self.versions.iter().find(|v| v.version.eq_ignore_ascii_case(version))
        }
    }

    pub(crate) fn version_mut(&mut self, version: &str) -> Option<&mut KeyVersion> {
        if version.is_empty() {
            self.versions.last_mut()
        } else {
            self.versions.iter_mut().find(|v| v.version.eq_ignore_ascii_case(version))
        }
    }
}

/// A soft-deleted key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeletedKey {
    /// The key as it was.
    pub key: Key,
    /// Deletion time.
    pub deleted_date: i64,
    /// Scheduled purge time.
    pub scheduled_purge_date: i64,
}

impl DeletedKey {
    /// `key`, deleted at `now`, purged after the retention period.
    pub(crate) fn new(key: Key, now: i64) -> DeletedKey {
        DeletedKey { key, deleted_date: now, scheduled_purge_date: now + RECOVERABLE_DAYS * 86_400 }
    }
}

/// What a new version is made of: everything but its ID, times and material.
#[derive(Debug, Clone)]
pub(crate) struct KeyParams {
    pub kty: String,
    pub key_size: Option<u32>,
    pub crv: Option<String>,
    pub key_ops: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

impl KeyParams {
    /// The parameters of an existing version (a new version copies the latest's).
    pub fn of(v: &KeyVersion) -> KeyParams {
        KeyParams {
            kty: v.kty.clone(),
            key_size: v.key_size,
            crv: v.crv.clone(),
            key_ops: v.key_ops.clone(),
            tags: v.tags.clone(),
            enabled: v.enabled,
            nbf: v.nbf,
            exp: v.exp,
        }
    }
}

/// Default key operations for a key type.
pub fn default_key_ops(kty: &str) -> Vec<String> {
    let ops: &[&str] = match kty {
        "oct-HSM" | "oct" => &["wrapKey", "unwrapKey", "encrypt", "decrypt"],
        "RSA-HSM" | "RSA" => &["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
        _ => &["sign", "verify"],
    };
    ops.iter().map(|s| s.to_string()).collect()
}

impl KeyVersion {
    /// A version with a fresh ID and fresh material.
    pub(crate) fn generate(p: &KeyParams, now: i64) -> KeyVersion {
        let (kty, key_size, crv) = (p.kty.as_str(), p.key_size, p.crv.clone());
        let (material, public) = match kty {
            "oct-HSM" => (util::random_bytes((key_size.unwrap_or(256) / 8) as usize), vec![]),
            "RSA-HSM" => {
                // A placeholder modulus: RSA/EC crypto is not emulated (see crate docs).
                let mut n = util::random_bytes((key_size.unwrap_or(2048) / 8) as usize);
                if let Some(f) = n.first_mut() {
                    *f |= 0x80;
                }
                if let Some(l) = n.last_mut() {
                    *l |= 1;
                }
                (vec![], vec![("n".to_string(), util::b64url(&n)), ("e".to_string(), "AQAB".to_string())])
            }
            _ => {
                let len = match crv.as_deref() {
                    Some("P-384") => 48,
                    Some("P-521") => 66,
                    _ => 32,
                };
                (
                    vec![],
                    vec![
                        ("x".to_string(), util::b64url(&util::random_bytes(len))),
                        ("y".to_string(), util::b64url(&util::random_bytes(len))),
                    ],
                )
            }
        };
        KeyVersion {
            version: util::key_version(),
            kty: kty.to_string(),
            key_size: if kty == "EC-HSM" { None } else { key_size },
            crv: if kty == "EC-HSM" { Some(crv.unwrap_or_else(|| "P-256".to_string())) } else { None },
            key_ops: p.key_ops.clone(),
            tags: p.tags.clone(),
            enabled: p.enabled,
            nbf: p.nbf,
            exp: p.exp,
            created: now,
            updated: now,
            material,
            public,
        }
    }

    /// Apply a patch; `updated` becomes `now`.
    pub(crate) fn apply(&mut self, patch: &KeyPatch, now: i64) {
        if let Some(t) = &patch.tags {
            self.tags = t.clone();
        }
        if let Some(e) = patch.enabled {
            self.enabled = e;
        }
        if let Some(n) = patch.nbf {
            self.nbf = n;
        }
        if let Some(e) = patch.exp {
            self.exp = e;
        }
        if let Some(o) = &patch.key_ops {
            self.key_ops = o.clone();
        }
        self.updated = now;
    }
}
