//! The state the model guards: directory, HSMs and Antimatter domains, with the queries that
//! read across them.

use super::directory::{App, Tenant};
use super::domains::Domain;
use super::hsm::Hsm;
use std::collections::BTreeMap;

/// Everything the emulated services hold.
pub(crate) struct State {
    /// Keyed by lower-case tenant ID.
    pub tenants: BTreeMap<String, Tenant>,
    /// Keyed by lower-case appId.
    pub apps: BTreeMap<String, App>,
    pub hsms: BTreeMap<String, Hsm>,
    pub domains: BTreeMap<String, Domain>,
    /// Antimatter's own Azure application (the pairing check gets its tokens as this app).
    pub antimatter_app: Option<String>,
}

impl State {
    /// The lower-case ID of a tenant named by ID or by name (`<name>`, `<name>.onmicrosoft.com`).
    pub fn tenant_id(&self, t: &str) -> Option<String> {
        let tl = t.to_ascii_lowercase();
        if self.tenants.contains_key(&tl) {
            return Some(tl);
        }
        self.tenants
            .values()
            .find(|x| {
                !x.name.is_empty()
                    && (x.name.eq_ignore_ascii_case(&tl)
                        || format!("{}.onmicrosoft.com", x.name).eq_ignore_ascii_case(&tl))
            })
            .map(|x| x.id.clone())
    }

    /// Whether `haystack` contains a credential the world knows (app secrets, Antimatter API keys).
    pub fn contains_credential(&self, haystack: &[u8]) -> bool {
        let secrets = self.apps.values().flat_map(|a| a.secrets.iter());
        let keys = self.domains.values().flat_map(|d| d.api_keys.iter());
        secrets.chain(keys).filter(|s| !s.is_empty()).any(|s| {
            let needle = s.as_bytes();
            haystack.windows(needle.len()).any(|w| w == needle)
        })
    }
}
