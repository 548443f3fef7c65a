//! The tenancy policy: what objects in a namespace may do with the operator's own Azure identity:
//! which HSMs, key names, tenants and domains, whether by the manual route (no API key), whether
//! they may claim existing unmarked keys, and whether a given service principal is used unverified.
//! Objects outside it must bring `azureCredentialsSecretRef`, or are refused before any remote call.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `rules: [{namespaces: [glob…], hsms: [glob…], …}]`; no policy file means every namespace may use
/// the operator's identity for everything (the chart's NOTES warn about that).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TenancyPolicy {
    #[serde(default)]
    rules: Option<Vec<Rule>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    /// Namespace names, with `*` wildcards.
    #[serde(default)]
    namespaces: Vec<String>,
    /// Namespaces by label (every label must match), besides those named.
    #[serde(default)]
    namespace_selector: Option<Selector>,
    /// HSM names or URLs (`https://host`), with `*` wildcards.
    hsms: Vec<String>,
    /// Key names, with `*` wildcards (default: any).
    #[serde(default = "any")]
    keys: Vec<String>,
    /// Tenant IDs (default: any).
    #[serde(default = "any")]
    tenants: Vec<String>,
    /// Antimatter domain IDs, with `*` wildcards (default: any).
    #[serde(default = "any")]
    domains: Vec<String>,
    /// Objects without an API key (the person registers the key in the dashboard) are allowed.
    #[serde(default = "yes")]
    manual_route: bool,
    /// Existing keys no operator has marked may be claimed (the product page's "existing key").
    #[serde(default = "yes")]
    claim_existing_keys: bool,
    /// `spec.antimatter.servicePrincipalObjectId` is used as given, without asking Graph whose
    /// principal it is (for an operator without Graph rights).
    #[serde(default)]
    unverified_principals: bool,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selector {
    match_labels: BTreeMap<String, String>,
}

fn any() -> Vec<String> {
    vec!["*".to_owned()]
}

fn yes() -> bool {
    true
}

/// What an object asks to do with the operator's identity.
pub struct Request<'a> {
    pub namespace: &'a str,
    /// The namespace's labels, when the policy selects by label ([`TenancyPolicy::selects_by_label`]).
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub hsm_name: Option<&'a str>,
    pub hsm_url: &'a str,
    pub key: &'a str,
    pub tenant: &'a str,
    pub domain: &'a str,
    /// No API key: the Antimatter side is left to a person.
    pub manual: bool,
}

/// What an allowed object may do beyond the steps themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub claim_existing_keys: bool,
    pub unverified_principals: bool,
}

/// Without a policy: existing keys may be claimed; a given principal is always verified.
const OPEN: Grant = Grant { claim_existing_keys: true, unverified_principals: false };

impl TenancyPolicy {
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    /// Whether any rule selects namespaces by label (so the namespace must be read first).
    pub fn selects_by_label(&self) -> bool {
        self.rules.iter().flatten().any(|r| r.namespace_selector.is_some())
    }

    /// May the object use the operator's identity for this? `Err` says which dimension refused.
    pub fn decide(&self, request: &Request) -> Result<Grant, String> {
        let Some(rules) = &self.rules else { return Ok(OPEN) };
        let ns = request.namespace;
        let mine: Vec<&Rule> = rules.iter().filter(|r| r.selects(ns, request.labels)).collect();
        if mine.is_empty() {
            return Err(format!("no rule of the tenancy policy covers namespace {ns}"));
        }
        let mut why = String::new();
        let mut grant: Option<Grant> = None;
        for rule in &mine {
            match rule.refusal(request) {
                None => {
                    let g = grant.get_or_insert(Grant { claim_existing_keys: false, unverified_principals: false });
                    g.claim_existing_keys |= rule.claim_existing_keys;
                    g.unverified_principals |= rule.unverified_principals;
                }
                Some(reason) if why.is_empty() => why = reason,
                Some(_) => {}
            }
        }
        grant.ok_or_else(|| format!("the tenancy policy does not let namespace {ns} use {why}"))
    }

    /// For an object acting with its own Azure identity: only whether a given principal may go
    /// unverified (it still must be Antimatter's application's).
    pub fn own_identity_grant(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> Grant {
        let Some(rules) = &self.rules else { return OPEN };
        let unverified = rules.iter().any(|r| r.selects(namespace, labels) && r.unverified_principals);
        Grant { claim_existing_keys: true, unverified_principals: unverified }
    }
}

impl Rule {
    fn selects(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.namespaces.iter().any(|p| wildcard(p, namespace))
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| labels.is_some_and(|l| s.match_labels.iter().all(|(k, v)| l.get(k) == Some(v))))
    }

    /// The first dimension this rule refuses, as the end of "may not use …".
    fn refusal(&self, r: &Request) -> Option<String> {
        let hsm = self.hsms.iter().any(|p| r.hsm_name.is_some_and(|n| wildcard(p, n)) || wildcard(p, r.hsm_url));
        if !hsm {
            return Some(format!("the operator's Azure identity for the HSM {}", r.hsm_url));
        }
        if !self.keys.iter().any(|p| wildcard(p, r.key)) {
            return Some(format!("the key name {}", r.key));
        }
        if !self.tenants.iter().any(|p| wildcard(p, r.tenant)) {
            return Some(format!("the tenant {}", r.tenant));
        }
        if !self.domains.iter().any(|p| wildcard(p, r.domain)) {
            return Some(format!("the Antimatter domain {}", r.domain));
        }
        if r.manual && !self.manual_route {
            return Some("the manual route (an object without spec.antimatter.apiKeySecretRef)".to_owned());
        }
        None
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

    fn request<'a>(ns: &'a str, hsm: &'a str, key: &'a str) -> Request<'a> {
        Request {
            namespace: ns,
            labels: None,
            hsm_name: Some(hsm),
            hsm_url: "https://h.managedhsm.azure.net",
            key,
            tenant: "t1",
            domain: "dm-AbCdEfGhJkL",
            manual: false,
        }
    }

    #[test]
    fn every_dimension_refuses_with_its_name() {
        let p = TenancyPolicy::from_yaml(
            "rules:\n- namespaces: [team-a]\n  hsms: [contoso-*]\n  keys: [team-a-*]\n  tenants: [t1]\n  domains: ['dm-Ab*']\n  manualRoute: false\n",
        )
        .expect("policy");
        let ok = request("team-a", "contoso-hsm", "team-a-root");
        assert_eq!(p.decide(&ok), Ok(Grant { claim_existing_keys: true, unverified_principals: false }));
        let refused = |r: Request| p.decide(&r).expect_err("refused");
        assert!(refused(request("team-b", "contoso-hsm", "team-a-root")).contains("no rule"));
        assert!(refused(request("team-a", "fabrikam", "team-a-root")).contains("HSM"));
        assert!(refused(request("team-a", "contoso-hsm", "team-b-root")).contains("key name team-b-root"));
        assert!(
            refused(Request { tenant: "t2", ..request("team-a", "contoso-hsm", "team-a-x") }).contains("tenant t2")
        );
        assert!(
            refused(Request { domain: "dm-Zz", ..request("team-a", "contoso-hsm", "team-a-x") }).contains("domain")
        );
        assert!(refused(Request { manual: true, ..request("team-a", "contoso-hsm", "team-a-x") }).contains("manual"));
    }

    #[test]
    fn no_policy_is_open_and_an_empty_one_is_closed() {
        assert_eq!(TenancyPolicy::default().decide(&request("any", "h", "k")), Ok(OPEN));
        assert!(TenancyPolicy::from_yaml("rules: []\n").expect("empty").decide(&request("a", "h", "k")).is_err());
    }

    #[test]
    fn label_selectors_and_grants() {
        let p = TenancyPolicy::from_yaml(
            "rules:\n- namespaceSelector: {matchLabels: {tier: shared}}\n  hsms: ['*']\n  claimExistingKeys: false\n  unverifiedPrincipals: true\n",
        )
        .expect("policy");
        assert!(p.selects_by_label());
        let labels = BTreeMap::from([("tier".to_owned(), "shared".to_owned())]);
        let grant = p.decide(&Request { labels: Some(&labels), ..request("x", "h", "k") }).expect("allowed");
        assert_eq!(grant, Grant { claim_existing_keys: false, unverified_principals: true });
        assert!(p.decide(&request("x", "h", "k")).is_err(), "no labels, no match");
        assert!(p.own_identity_grant("x", Some(&labels)).unverified_principals);
        assert!(!p.own_identity_grant("y", None).unverified_principals);
    }
}
