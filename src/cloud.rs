//! Azure clouds: the Entra ID authority, Microsoft Graph and Managed HSM DNS suffixes, and the guard
//! that keeps Azure tokens inside the configured cloud's HSM domains.

use url::Url;

use crate::api::HsmRef;

/// A named Azure cloud, or `Custom` endpoints (the sandbox, sovereign clouds not listed here).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CloudName {
    #[default]
    #[value(name = "AzurePublic")]
    AzurePublic,
    #[value(name = "AzureUSGovernment")]
    AzureUsGovernment,
    #[value(name = "AzureChina")]
    AzureChina,
    #[value(name = "Custom")]
    Custom,
}

/// Endpoints of one Azure cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cloud {
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: Url,
    /// Microsoft Graph, e.g. `https://graph.microsoft.com`.
    pub graph_url: Url,
    /// Managed HSM DNS suffixes, e.g. `managedhsm.azure.net`; an entry may carry a `:port`.
    pub hsm_dns_suffixes: Vec<String>,
}

/// A Managed HSM endpoint that passed the cloud's domain check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HsmEndpoint {
    /// `https://<host>[:port]`, without a trailing slash.
    pub url: String,
    /// The Entra ID scope of the HSM data plane, e.g. `https://managedhsm.azure.net/.default`.
    pub scope: String,
}

/// Why an HSM reference was refused before any token was sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HsmRefError {
    #[error("hsm.url {0:?} is not a valid URL")]
    NotAUrl(String),
    #[error("hsm.url must use https, got {0:?}")]
    NotHttps(String),
    #[error("hsm.url must be https://<host>[:port] with no path, query or user info, got {0:?}")]
    NotBare(String),
    #[error(
        "hsm.url host {host:?} is not a Managed HSM host of the configured cloud (allowed suffixes: {allowed}); no token is sent there"
    )]
    ForeignHost { host: String, allowed: String },
    #[error("set exactly one of hsm.name or hsm.url")]
    Ambiguous,
}

impl Cloud {
    /// Endpoints of a named cloud (Azure's published authority, Graph and Managed HSM DNS suffixes).
    pub fn named(name: CloudName) -> Option<Self> {
        let (authority, graph, suffix) = match name {
            CloudName::AzurePublic => {
                ("https://login.microsoftonline.com", "https://graph.microsoft.com", "managedhsm.azure.net")
            }
            CloudName::AzureUsGovernment => {
                ("https://login.microsoftonline.us", "https://graph.microsoft.us", "managedhsm.usgovcloudapi.net")
            }
            CloudName::AzureChina => {
                ("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn", "managedhsm.azure.cn")
            }
            CloudName::Custom => return None,
        };
        Some(Self {
            authority_host: Url::parse(authority).ok()?,
            graph_url: Url::parse(graph).ok()?,
            hsm_dns_suffixes: vec![suffix.to_owned()],
        })
    }

    /// Resolves `spec.hsm` to an endpoint inside this cloud, refusing anything else.
    pub fn hsm_endpoint(&self, hsm: &HsmRef) -> Result<HsmEndpoint, HsmRefError> {
        match (&hsm.name, &hsm.url) {
            (Some(name), None) => {
                let suffix = self
                    .hsm_dns_suffixes
                    .first()
                    .ok_or_else(|| HsmRefError::ForeignHost { host: name.clone(), allowed: String::new() })?;
                self.check_url(&format!("https://{name}.{suffix}"))
            }
            (None, Some(url)) => self.check_url(url),
            _ => Err(HsmRefError::Ambiguous),
        }
    }

    fn check_url(&self, raw: &str) -> Result<HsmEndpoint, HsmRefError> {
        let url = Url::parse(raw).map_err(|_| HsmRefError::NotAUrl(raw.to_owned()))?;
        if url.scheme() != "https" {
            return Err(HsmRefError::NotHttps(raw.to_owned()));
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || url.path() != "/"
        {
            return Err(HsmRefError::NotBare(raw.to_owned()));
        }
        // IP literals never match a DNS suffix, so they fall through to ForeignHost below.
        let host = url.host_str().ok_or_else(|| HsmRefError::NotAUrl(raw.to_owned()))?.to_ascii_lowercase();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let suffix = self
            .hsm_dns_suffixes
            .iter()
            .find(|suffix| {
                let suffix = suffix.to_ascii_lowercase();
                authority.strip_suffix(&suffix).is_some_and(|label| {
                    label.ends_with('.') && label.len() > 1 && !label[..label.len() - 1].contains('.')
                })
            })
            .ok_or_else(|| HsmRefError::ForeignHost {
                host: authority.clone(),
                allowed: self.hsm_dns_suffixes.join(", "),
            })?;
        Ok(HsmEndpoint {
            url: format!("https://{authority}"),
            scope: format!("https://{}/.default", suffix.to_ascii_lowercase()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> Cloud {
        Cloud::named(CloudName::AzurePublic).expect("public cloud")
    }

    fn by_url(url: &str) -> HsmRef {
        HsmRef { name: None, url: Some(url.to_owned()) }
    }

    #[test]
    fn name_resolves_in_the_cloud() {
        let ep = public().hsm_endpoint(&HsmRef { name: Some("contoso".into()), url: None }).expect("ok");
        assert_eq!(ep.url, "https://contoso.managedhsm.azure.net");
        assert_eq!(ep.scope, "https://managedhsm.azure.net/.default");
    }

    #[test]
    fn url_inside_the_cloud_is_accepted() {
        let ep = public().hsm_endpoint(&by_url("https://Contoso.managedhsm.azure.net/")).expect("ok");
        assert_eq!(ep.url, "https://contoso.managedhsm.azure.net");
    }

    #[test]
    fn suffix_with_port_matches_only_that_port() {
        let cloud = Cloud { hsm_dns_suffixes: vec!["managedhsm.sandbox.localhost:8443".into()], ..public() };
        let ep = cloud.hsm_endpoint(&by_url("https://a.managedhsm.sandbox.localhost:8443")).expect("ok");
        assert_eq!(ep.scope, "https://managedhsm.sandbox.localhost:8443/.default");
        assert!(cloud.hsm_endpoint(&by_url("https://a.managedhsm.sandbox.localhost:9443")).is_err());
    }

    #[test]
    fn foreign_hosts_are_refused_before_any_token_is_sent() {
        for url in [
            "https://contoso.managedhsm.azure.net.evil.example",
            "https://evilmanagedhsm.azure.net",
            "https://managedhsm.azure.net",
            "https://a.b.managedhsm.azure.net",
            "https://127.0.0.1",
            "https://[::1]:443",
            "https://contoso.vault.azure.net",
        ] {
            assert!(matches!(public().hsm_endpoint(&by_url(url)), Err(HsmRefError::ForeignHost { .. })), "{url}");
        }
    }

    #[test]
    fn non_bare_or_plain_http_urls_are_refused() {
        assert!(matches!(
            public().hsm_endpoint(&by_url("http://contoso.managedhsm.azure.net")),
            Err(HsmRefError::NotHttps(_))
        ));
        for url in [
            "https://contoso.managedhsm.azure.net/keys",
            "https://u@contoso.managedhsm.azure.net",
            "https://contoso.managedhsm.azure.net/?x=1",
        ] {
            assert!(matches!(public().hsm_endpoint(&by_url(url)), Err(HsmRefError::NotBare(_))), "{url}");
        }
    }
}
