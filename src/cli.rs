//! The companion commands for people on call: `status NS/NAME` (conditions, what to do about each
//! failing one, the delegation's facts and recent events) and `recheck NS/NAME` (a check now).

use std::fmt::Write as _;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};

use crate::{
    api::{AzureRootKey, ConditionStatus},
    controller::{
        conditions::{RECONCILING, STALLED},
        reasons::Reason,
    },
};

/// The annotation `recheck` sets: any change to it makes the operator reconcile the object at once
/// (pairing check and drift check included), whatever its `checkInterval`.
pub const RECHECK_ANNOTATION: &str = "antimatter.io/recheck";

/// `NS/NAME`, as `kubectl` prints it.
pub fn parse_object(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

/// The status report of one object.
pub async fn status(client: Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let ark = Api::<AzureRootKey>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("reading AzureRootKey {ns}/{name}"))?;
    let events = Api::<Event>::namespaced(client, ns)
        .list(&ListParams::default().fields(&format!("involvedObject.kind=AzureRootKey,involvedObject.name={name}")))
        .await
        .context("listing the object's events")?;
    Ok(render(&ark, events.items))
}

fn render(ark: &AzureRootKey, mut events: Vec<Event>) -> String {
    let mut out = String::new();
    let status = ark.status.clone().unwrap_or_default();
    let generation = ark.metadata.generation.unwrap_or_default();
    let observed = status.observed_generation.map_or("never".to_owned(), |g| g.to_string());
    let ns = ark.metadata.namespace.as_deref().unwrap_or_default();
    let name = ark.metadata.name.as_deref().unwrap_or_default();
    let _ = writeln!(out, "AzureRootKey {ns}/{name}  (generation {generation}, observed {observed})");
    let _ = writeln!(
        out,
        "key {} in {}, domain {}",
        ark.spec.key.name,
        status.hsm_url.as_deref().unwrap_or("?"),
        ark.spec.domain_id
    );
    let _ = writeln!(out, "\n{:<22} {:<8} {:<30} MESSAGE", "CONDITION", "STATUS", "REASON");
    for c in &status.conditions {
        let _ = writeln!(out, "{:<22} {:<8} {:<30} {}", c.type_, format!("{:?}", c.status), c.reason, c.message);
    }
    let fixes: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| c.status == ConditionStatus::False && c.type_ != RECONCILING && c.type_ != STALLED)
        .filter_map(|c| Reason::ALL.into_iter().find(|r| r.as_str() == c.reason).map(|r| (c, r)))
        .map(|(c, r)| format!("  {} ({}): {}", c.type_, r.as_str(), r.doc().2))
        .collect();
    if !fixes.is_empty() {
        let _ = writeln!(out, "\nWhat to do:");
        for fix in fixes.into_iter().collect::<std::collections::BTreeSet<_>>() {
            let _ = writeln!(out, "{fix}");
        }
    }
    let facts = [
        ("key URL", status.key_url.clone()),
        ("tenant", status.tenant_id.clone()),
        ("service principal", status.service_principal_object_id.clone()),
        ("role assignment", status.role_assignment_name.clone()),
        ("root encryption key", status.root_encryption_key_id.clone()),
        (
            "pairing",
            status
                .pairing
                .as_ref()
                .map(|p| format!("{:?}{}", p.status, p.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())),
        ),
        ("last check", status.pairing.as_ref().and_then(|p| p.last_check_time.as_ref()).map(|t| t.0.to_string())),
        ("last healthy", status.pairing.as_ref().and_then(|p| p.last_healthy_time.as_ref()).map(|t| t.0.to_string())),
        ("key expires", status.key_expiry_time.as_ref().map(|t| t.0.to_string())),
    ];
    let _ = writeln!(out);
    for (label, value) in facts {
        let _ = writeln!(out, "{label:<20} {}", value.as_deref().unwrap_or("-"));
    }
    events.sort_by_key(when);
    let _ = writeln!(out, "\nRecent events:");
    if events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in events.iter().rev().take(10).rev() {
        let (kind, reason) = (e.type_.as_deref().unwrap_or_default(), e.reason.as_deref().unwrap_or_default());
        let _ = writeln!(out, "  {}  {kind:<8} {reason:<24} {}", when(e), e.message.as_deref().unwrap_or_default());
    }
    out
}

/// When an event happened, as RFC 3339 (which sorts as text): `events.k8s.io` events carry
/// `eventTime`, older ones `lastTimestamp`.
fn when(e: &Event) -> String {
    match (&e.event_time, &e.last_timestamp) {
        (Some(t), _) => t.0.to_string(),
        (None, Some(t)) => t.0.to_string(),
        (None, None) => String::new(),
    }
}

/// Sets [`RECHECK_ANNOTATION`] to now, so the operator checks the object at once.
pub async fn recheck(client: Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let now = jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {RECHECK_ANNOTATION: now}}});
    Api::<AzureRootKey>::namespaced(client, ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating AzureRootKey {ns}/{name}"))?;
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_namespace_slash_name() {
        assert_eq!(parse_object("team-a/root"), Ok(("team-a".to_owned(), "root".to_owned())));
        for bad in ["root", "/root", "team-a/", "a/b/c"] {
            assert!(parse_object(bad).is_err(), "{bad}");
        }
    }
}
