//! `rootkey-operator check`: whether this installation can work, one line per check — the CRD,
//! the operator's Kubernetes RBAC (SelfSubjectAccessReview), its Azure token and Managed HSM roles,
//! and the Antimatter API allowlist. Read-only; run it as the operator (e.g. `kubectl exec` into its
//! pod) so that the identity, flags and environment are the operator's.

use std::fmt;

use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::{
    api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, CustomResourceDefinitionVersion,
    },
};
use kube::{Api, Client, CustomResourceExt, api::PostParams};

use crate::{
    api::{AzureRootKey, HsmRef},
    azure::{
        Identity,
        rbac::{CRYPTO_USER_ROLE, CRYPTO_USER_ROLE_ID, RoleAssignment},
    },
    remotes::{Remotes, Services},
    run::{LEASE_NAME, RunArgs},
};

/// The built-in role that reads and writes role assignments on the HSM.
pub const POLICY_ADMINISTRATOR_ROLE: &str = "Managed HSM Policy Administrator";
/// Its well-known ID (learn: managed-hsm/built-in-roles), the same on every HSM.
pub const POLICY_ADMINISTRATOR_ROLE_ID: &str = "4bd23610-cdcf-4971-bdee-bdc562cc28e4";

/// A key name no object uses: reading it tells whether the identity may read keys (404) or not (403).
const PROBE_KEY: &str = "rootkey-operator-check";

/// Flags of `check`: exactly those of `run` (same struct, same environment), and what to check against.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A Managed HSM (its name or https URL) on which to check the operator's token and roles.
    #[arg(long)]
    pub hsm: Option<String>,
    /// The tenant of the operator's Azure identity (and of the HSM).
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub tenant_id: Option<String>,
}

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Not checked, with the reason.
    Skip,
}

/// One line of the report.
#[derive(Debug)]
pub struct Finding {
    pub verdict: Verdict,
    pub check: &'static str,
    pub detail: String,
}

impl Finding {
    /// A pass or a fail; the detail on one line (Azure's error messages span several).
    fn new(ok: bool, check: &'static str, detail: impl Into<String>) -> Self {
        let detail = detail.into().split_whitespace().collect::<Vec<_>>().join(" ");
        Self { verdict: if ok { Verdict::Pass } else { Verdict::Fail }, check, detail }
    }
}

/// The API server's own message for a refused request, else the error.
fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        };
        write!(f, "{verdict}  {:<16} {}", self.check, self.detail)
    }
}

/// What the operator does with one kind of Kubernetes object, and where.
pub struct Permission {
    pub group: &'static str,
    /// The resource, with its subresource after a `/`.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: PermissionScope,
}

pub enum PermissionScope {
    /// In every watched namespace (all, when none are listed).
    Watched,
    /// The watched namespace itself (`namespaces`, by name); any namespace when all are watched.
    WatchedNamespaceObject,
    /// The `kube-system` Namespace (its UID identifies the cluster); covered by the above when all are watched.
    ClusterIdentity,
    /// With leader election, in the operator's namespace; `name` limits it to the Lease.
    Lease { name: Option<&'static str> },
}

/// Every permission the operator needs: the one list the chart's Roles and ClusterRoles must
/// grant (`tests/chart_contract.rs` compares them) and `check` asks the API server about.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "antimatter.io",
        resource: "azurerootkeys",
        verbs: &["get", "list", "watch", "patch"],
        scope: PermissionScope::Watched,
    },
    Permission {
        group: "antimatter.io",
        resource: "azurerootkeys/status",
        verbs: &["patch"],
        scope: PermissionScope::Watched,
    },
    Permission {
        group: "antimatter.io",
        resource: "azurerootkeys/finalizers",
        verbs: &["update"],
        scope: PermissionScope::Watched,
    },
    Permission { group: "", resource: "secrets", verbs: &["get"], scope: PermissionScope::Watched },
    Permission { group: "events.k8s.io", resource: "events", verbs: &["create"], scope: PermissionScope::Watched },
    Permission { group: "", resource: "namespaces", verbs: &["get"], scope: PermissionScope::WatchedNamespaceObject },
    Permission { group: "", resource: "namespaces", verbs: &["get"], scope: PermissionScope::ClusterIdentity },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create"],
        scope: PermissionScope::Lease { name: None },
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "update"],
        scope: PermissionScope::Lease { name: Some(LEASE_NAME) },
    },
];

/// One permission at one place: `namespace` `None` is cluster-wide, `name` `None` any object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub namespace: Option<String>,
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub name: Option<String>,
}

/// The grants the operator needs when it watches `watched` (all namespaces when empty) and,
/// with leader election, holds its Lease in `lease_namespace`.
pub fn grants(watched: &[String], lease_namespace: Option<&str>) -> Vec<Grant> {
    let namespaces: Vec<Option<String>> =
        if watched.is_empty() { vec![None] } else { watched.iter().cloned().map(Some).collect() };
    let mut out = Vec::new();
    for p in PERMISSIONS {
        // (namespace, name) pairs where this permission is needed.
        let places: Vec<(Option<String>, Option<String>)> = match p.scope {
            PermissionScope::Watched => namespaces.iter().map(|ns| (ns.clone(), None)).collect(),
            PermissionScope::WatchedNamespaceObject => namespaces.iter().map(|ns| (ns.clone(), ns.clone())).collect(),
            PermissionScope::ClusterIdentity if watched.is_empty() => Vec::new(),
            PermissionScope::ClusterIdentity => vec![(None, Some("kube-system".to_owned()))],
            PermissionScope::Lease { name } => match lease_namespace {
                Some(ns) => vec![(Some(ns.to_owned()), name.map(str::to_owned))],
                None => Vec::new(),
            },
        };
        for (namespace, name) in places {
            for verb in p.verbs {
                out.push(Grant {
                    namespace: namespace.clone(),
                    group: p.group.to_owned(),
                    resource: p.resource.to_owned(),
                    verb: (*verb).to_owned(),
                    name: name.clone(),
                });
            }
        }
    }
    out
}

/// Runs every check; the caller prints the lines and fails when any is `Fail`.
pub async fn check(client: Client, args: &CheckArgs) -> Vec<Finding> {
    let mut findings = vec![crd(&client).await];
    findings.extend(rbac(&client, &args.run).await);
    findings.extend(azure(client, args).await);
    findings.extend(antimatter(&args.run).await);
    findings
}

/// The installed CRD serves and stores the versions this binary's CRD declares, with its schema.
async fn crd(client: &Client) -> Finding {
    let ours = AzureRootKey::crd();
    let name = ours.metadata.name.clone().unwrap_or_default();
    let installed = match Api::<CustomResourceDefinition>::all(client.clone()).get_opt(&name).await {
        Ok(Some(crd)) => crd,
        Ok(None) => {
            return Finding::new(false, "crd", format!("{name} is not installed: apply `rootkey-operator crd`"));
        }
        Err(e) => return Finding::new(false, "crd", format!("reading {name}: {}", kube_error(&e))),
    };
    let describe = |v: &CustomResourceDefinitionVersion| {
        format!("{}{}{}", v.name, if v.served { " served" } else { "" }, if v.storage { " stored" } else { "" })
    };
    let mut problems = Vec::new();
    for version in &ours.spec.versions {
        match installed.spec.versions.iter().find(|v| v.name == version.name) {
            None => problems.push(format!("version {} is missing", version.name)),
            Some(v) if (v.served, v.storage) != (version.served, version.storage) => {
                problems.push(format!("{} is installed, this binary's is {}", describe(v), describe(version)))
            }
            Some(v) if v.schema != version.schema => {
                problems.push(format!("the schema of {} is not this binary's (another release's CRD?)", v.name))
            }
            Some(_) => {}
        }
    }
    let versions: Vec<String> = installed.spec.versions.iter().map(describe).collect();
    if problems.is_empty() {
        Finding::new(true, "crd", format!("{name}: {}, as this binary", versions.join(", ")))
    } else {
        Finding::new(
            false,
            "crd",
            format!("{name}: {}: apply this release's CRD (`rootkey-operator crd`)", problems.join("; ")),
        )
    }
}

/// One line per permission and place, from SelfSubjectAccessReviews of the caller.
async fn rbac(client: &Client, run: &RunArgs) -> Vec<Finding> {
    let lease = run.leader_elect.then_some(run.lease_namespace.as_str());
    let reviews = Api::<SelfSubjectAccessReview>::all(client.clone());
    let mut findings: Vec<Finding> = Vec::new();
    let mut grants = grants(&run.watch_namespaces, lease);
    grants.sort_by(|a, b| (&a.namespace, &a.resource, &a.name).cmp(&(&b.namespace, &b.resource, &b.name)));
    // One line per (namespace, resource, name), listing the verbs allowed and refused.
    for chunk in grants.chunk_by(|a, b| (&a.namespace, &a.resource, &a.name) == (&b.namespace, &b.resource, &b.name)) {
        let mut refused = Vec::new();
        let mut error = None;
        for grant in chunk {
            match allowed(&reviews, grant).await {
                Ok(true) => {}
                Ok(false) => refused.push(grant.verb.as_str()),
                Err(e) => error = Some(e),
            }
        }
        let first = &chunk[0];
        let verbs: Vec<&str> = chunk.iter().map(|g| g.verb.as_str()).collect();
        let what = format!(
            "{} {}{}{} {}",
            verbs.join(","),
            first.resource,
            if first.group.is_empty() { String::new() } else { format!(".{}", first.group) },
            first.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default(),
            first.namespace.as_deref().map_or("in all namespaces".to_owned(), |ns| format!("in {ns}"))
        );
        findings.push(match (error, refused.is_empty()) {
            (Some(e), _) => {
                Finding::new(false, "rbac", format!("{what}: SelfSubjectAccessReview failed: {}", kube_error(&e)))
            }
            (None, true) => Finding::new(true, "rbac", what),
            (None, false) => Finding::new(false, "rbac", format!("{what}: {} refused", refused.join(","))),
        });
    }
    findings
}

async fn allowed(reviews: &Api<SelfSubjectAccessReview>, grant: &Grant) -> Result<bool, kube::Error> {
    let (resource, subresource) = match grant.resource.split_once('/') {
        Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
        None => (grant.resource.clone(), None),
    };
    // A Namespace is authorised as if it lived in itself (RBAC's rule for `namespaces` by name).
    let namespace = match (&grant.namespace, resource.as_str()) {
        (None, "namespaces") => grant.name.clone(),
        (ns, _) => ns.clone(),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(grant.group.clone()),
                resource: Some(resource),
                subresource,
                verb: Some(grant.verb.clone()),
                namespace,
                name: grant.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The operator's token for the HSM, its reading keys, and the roles it holds there.
async fn azure(client: Client, args: &CheckArgs) -> Vec<Finding> {
    let Some(hsm) = &args.hsm else {
        return vec![Finding {
            verdict: Verdict::Skip,
            check: "azure",
            detail: "no --hsm given: the token and the HSM roles were not checked".to_owned(),
        }];
    };
    let Some(tenant_id) = args.tenant_id.clone() else {
        return vec![Finding::new(false, "azure", "no tenant: set --tenant-id or AZURE_TENANT_ID")];
    };
    let setup = || -> anyhow::Result<_> {
        let azure = args.run.azure()?;
        let reference = if hsm.starts_with("https://") {
            HsmRef { name: None, url: Some(hsm.clone()) }
        } else {
            HsmRef { name: Some(hsm.clone()), url: None }
        };
        let endpoint = azure.cloud.hsm_endpoint(&reference)?;
        let antimatter = args.run.antimatter()?;
        Ok((endpoint, Services::new(azure, antimatter, client)))
    };
    let (endpoint, services) = match setup() {
        Ok(s) => s,
        Err(e) => return vec![Finding::new(false, "azure", format!("{e:#}"))],
    };
    let identity = Identity { tenant_id, secret: None };
    let token = match services.azure.token(&identity, &endpoint.scope).await {
        Ok(t) => t,
        Err(e) => return vec![Finding::new(false, "azure token", format!("for {}: {e}", endpoint.scope))],
    };
    let principal = principal_id(token.secret());
    let mut findings = vec![Finding::new(
        true,
        "azure token",
        format!("for {} (principal {})", endpoint.scope, principal.as_deref().unwrap_or("unknown")),
    )];
    let session = services.hsm(&endpoint, &identity);
    findings.push(match session.key(PROBE_KEY).await {
        Ok(_) => Finding::new(true, "hsm keys", format!("{} lets the identity read keys", endpoint.url)),
        Err(e) => Finding::new(false, "hsm keys", format!("reading a key: {e} (needs {CRYPTO_USER_ROLE} at /keys)")),
    });
    // atScope() at /keys lists the assignments that apply there: those at /keys and those at /.
    let held: Vec<RoleAssignment> = match session.assignments_at("/keys").await {
        Ok(list) => list,
        Err(e) => {
            findings.push(Finding::new(
                false,
                "hsm roles",
                format!("listing role assignments at /keys: {e} (needs {POLICY_ADMINISTRATOR_ROLE})"),
            ));
            return findings;
        }
    };
    let Some(principal) = principal else {
        findings.push(Finding::new(false, "hsm roles", "the token names no principal (oid)"));
        return findings;
    };
    for (role, role_id) in
        [(CRYPTO_USER_ROLE, CRYPTO_USER_ROLE_ID), (POLICY_ADMINISTRATOR_ROLE, POLICY_ADMINISTRATOR_ROLE_ID)]
    {
        let at: Vec<&str> = held
            .iter()
            .filter(|a| a.properties.principal_id.eq_ignore_ascii_case(&principal))
            .filter(|a| {
                a.properties.role_definition_id.rsplit('/').next().is_some_and(|id| id.eq_ignore_ascii_case(role_id))
            })
            .map(|a| a.properties.scope.as_deref().unwrap_or("an unnamed scope"))
            .collect();
        findings.push(if at.is_empty() {
            Finding::new(
                false,
                "hsm roles",
                format!("{principal} does not hold {role} at / or /keys of {}", endpoint.url),
            )
        } else {
            Finding::new(true, "hsm roles", format!("{principal} holds {role} at {}", at.join(" and ")))
        });
    }
    findings
}

/// The object ID (`oid`) of the principal an Entra ID access token was issued to. The token came
/// from Entra ID over TLS just now; its signature is the HSM's business, not ours.
fn principal_id(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Claims {
        oid: String,
    }
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Claims>(&json).ok().map(|c| c.oid)
}

/// Every allowlisted Antimatter API URL answers over TLS, and where Antimatter's application ID
/// comes from.
async fn antimatter(run: &RunArgs) -> Vec<Finding> {
    let (urls, http) = match (run.antimatter_api_urls(), run.antimatter_http()) {
        (Ok(urls), Ok(http)) => (urls, http),
        (Err(e), _) | (_, Err(e)) => return vec![Finding::new(false, "antimatter", format!("{e:#}"))],
    };
    let mut findings = Vec::new();
    for url in urls {
        findings.push(match http.get(url.clone()).timeout(std::time::Duration::from_secs(10)).send().await {
            Ok(answer) => {
                Finding::new(true, "antimatter", format!("{url} answers (HTTP {})", answer.status().as_u16()))
            }
            Err(e) => Finding::new(false, "antimatter", format!("{url} cannot be reached: {}", e.without_url())),
        });
    }
    findings.push(match &run.antimatter_application_id {
        Some(id) => Finding::new(
            true,
            "antimatter app",
            format!("Antimatter's application is {id} (--antimatter-application-id)"),
        ),
        None => Finding {
            verdict: Verdict::Skip,
            check: "antimatter app",
            detail:
                "not configured: read from each domain's providers response, so objects without an API key are refused"
                    .to_owned(),
        },
    });
    findings
}

/// Prints the findings; an error when any failed.
pub fn report(findings: &[Finding]) -> anyhow::Result<()> {
    for f in findings {
        println!("{f}");
    }
    let failed = findings.iter().filter(|f| f.verdict == Verdict::Fail).count();
    anyhow::ensure!(failed == 0, "{failed} of {} checks failed", findings.len());
    Ok(())
}

/// Connects with `KUBECONFIG` (or the pod's service account) and runs [`check`].
pub async fn run(args: &CheckArgs) -> anyhow::Result<Vec<Finding>> {
    let client = crate::apiserver::client().await.context("connecting to the Kubernetes API")?;
    Ok(check(client, args).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_principal_comes_from_the_tokens_oid() {
        let encode = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.sig",
            encode(serde_json::json!({"alg": "RS256"})),
            encode(serde_json::json!({"oid": "5c1a7e3b", "tid": "t"}))
        );
        assert_eq!(principal_id(&token).as_deref(), Some("5c1a7e3b"));
        assert_eq!(principal_id("not-a-jwt"), None);
        assert_eq!(principal_id(&format!("a.{}.c", encode(serde_json::json!({"tid": "t"})))), None);
    }

    #[test]
    fn watched_namespaces_need_their_own_grants_and_the_cluster_identity() {
        let grants = grants(&["team-a".to_owned()], Some("ops"));
        let has = |ns: Option<&str>, resource: &str, verb: &str, name: Option<&str>| {
            grants.iter().any(|g| {
                g.namespace.as_deref() == ns && g.resource == resource && g.verb == verb && g.name.as_deref() == name
            })
        };
        assert!(has(Some("team-a"), "azurerootkeys", "watch", None));
        assert!(has(Some("team-a"), "namespaces", "get", Some("team-a")));
        assert!(has(None, "namespaces", "get", Some("kube-system")));
        assert!(has(Some("ops"), "leases", "update", Some(LEASE_NAME)));
        assert!(!has(None, "azurerootkeys", "watch", None), "nothing cluster-wide but the cluster identity");
        let everywhere = super::grants(&[], None);
        assert!(everywhere.iter().all(|g| g.namespace.is_none() && g.resource != "leases"));
    }
}
