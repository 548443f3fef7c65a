//! The tenancy guard: which namespaces may use the operator's own Azure identity, and for which HSMs.
//! Objects outside it must bring `azureCredentialsSecretRef`, or are refused before any remote call.

use serde::Deserialize;

/// `rules: [{namespaces: [glob…], hsms: [glob…]}]`; no policy file means every namespace, every HSM.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TenancyPolicy {
    #[serde(default)]
    rules: Option<Vec<Rule>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Rule {
    namespaces: Vec<String>,
    /// HSM names or URLs (`https://host`), with `*` wildcards.
    hsms: Vec<String>,
}

impl TenancyPolicy {
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    /// May an object in `namespace` use the operator's identity for the HSM at `hsm_url`?
    pub fn allows(&self, namespace: &str, hsm_name: Option<&str>, hsm_url: &str) -> bool {
        let Some(rules) = &self.rules else { return true };
        rules.iter().any(|rule| {
            rule.namespaces.iter().any(|p| wildcard(p, namespace))
                && rule.hsms.iter().any(|p| hsm_name.is_some_and(|n| wildcard(p, n)) || wildcard(p, hsm_url))
        })
    }
}

/// `*` matches any run of characters; everything else matches itself (ASCII case-insensitive).
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let mut parts = p.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = t.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("team-*", "team-a"));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("https://*.managedhsm.azure.net", "https://contoso.managedhsm.azure.net"));
        assert!(!wildcard("team-*", "other"));
        assert!(!wildcard("prod", "prod-2"));
        assert!(wildcard("a*b*c", "aXbYc"));
        assert!(!wildcard("a*b*c", "aXbY"));
    }

    #[test]
    fn policy_rules() {
        let p = TenancyPolicy::from_yaml("rules:\n- namespaces: [team-a]\n  hsms: [contoso-*]\n").expect("policy");
        assert!(p.allows("team-a", Some("contoso-hsm"), "https://contoso-hsm.managedhsm.azure.net"));
        assert!(!p.allows("team-b", Some("contoso-hsm"), "https://contoso-hsm.managedhsm.azure.net"));
        assert!(!p.allows("team-a", Some("fabrikam"), "https://fabrikam.managedhsm.azure.net"));
        assert!(TenancyPolicy::default().allows("any", None, "https://x"));
        assert!(!TenancyPolicy::from_yaml("rules: []\n").expect("empty").allows("a", None, "x"));
    }
}
