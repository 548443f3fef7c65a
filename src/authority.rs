//! What the cluster administrator decided, as opposed to what an object's author may choose: the
//! Antimatter API endpoints an API key may be sent to, Antimatter's Azure application (the only one
//! ever granted access to a key), and the tenancy policy.

use url::Url;

use crate::policy::TenancyPolicy;

pub struct Authority {
    pub policy: TenancyPolicy,
    /// Antimatter API base URLs objects may name; an API key goes nowhere else.
    antimatter_urls: Vec<Url>,
    /// Antimatter's Azure application ID, when configured; otherwise asked from the (allowlisted)
    /// Antimatter API.
    pub application_id: Option<String>,
}

impl Authority {
    pub fn new(policy: TenancyPolicy, antimatter_urls: &[Url], application_id: Option<String>) -> Self {
        let antimatter_urls = antimatter_urls.iter().map(normalized).collect();
        Self { policy, antimatter_urls, application_id: application_id.map(|a| a.to_ascii_lowercase()) }
    }

    /// The allowlisted Antimatter API URL `spec_url` names, if it names one (scheme, host, port and
    /// path compared; a trailing `/` ignored).
    pub fn antimatter_url(&self, spec_url: &str) -> Option<Url> {
        let url = normalized(&Url::parse(spec_url).ok()?);
        self.antimatter_urls.contains(&url).then_some(url)
    }

    /// The allowlist, for messages.
    pub fn antimatter_urls(&self) -> String {
        self.antimatter_urls.iter().map(|u| u.as_str().trim_end_matches('/')).collect::<Vec<_>>().join(", ")
    }
}

fn normalized(url: &Url) -> Url {
    let mut url = url.clone();
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_endpoints_are_allowed() {
        let allowed = [Url::parse("https://api.antimatter.io/v2").expect("url")];
        let a = Authority::new(TenancyPolicy::default(), &allowed, None);
        for same in
            ["https://api.antimatter.io/v2", "https://API.antimatter.io/v2/", "https://api.antimatter.io:443/v2"]
        {
            assert!(a.antimatter_url(same).is_some(), "{same}");
        }
        for other in [
            "https://evil.example/v2",
            "https://api.antimatter.io.evil.example/v2",
            "https://api.antimatter.io/v3",
            "https://api.antimatter.io:8443/v2",
            "http://api.antimatter.io/v2",
            "not a url",
        ] {
            assert!(a.antimatter_url(other).is_none(), "{other}");
        }
    }
}
