//! Prometheus metrics. Every label comes from a bounded set: services, fixed operation names, HTTP
//! status codes, reconcile results, condition types and statuses, and — for the per-object series —
//! the namespace and name of objects the operator watches, whose series go when the object goes.
//! Never URLs, key names or messages.

use std::{
    collections::HashMap,
    fmt,
    sync::{LazyLock, Mutex},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::locks::lock;

/// The remote services the operator talks to (a bounded set: used as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Entra,
    Graph,
    Hsm,
    Antimatter,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Entra => "entra",
            Service::Graph => "graph",
            Service::Hsm => "hsm",
            Service::Antimatter => "antimatter",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Entra => "Entra ID",
            Service::Graph => "Microsoft Graph",
            Service::Hsm => "Managed HSM",
            Service::Antimatter => "Antimatter API",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: &'static str,
    operation: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub name: String,
    /// The condition type (`Ready`, `KeyReady`, …).
    pub condition: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    objects: Family<ReadyLabels, Gauge>,
    conditions: Family<ConditionLabels, Gauge>,
    pairing_healthy: Family<ObjectLabels, Gauge>,
    last_pairing_success: Family<ObjectLabels, Gauge>,
    key_expiry: Family<ObjectLabels, Gauge>,
    leader: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("rootkey_operator");
    let calls = Family::<CallLabels, Counter>::default();
    let reconciles = Family::<ResultLabels, Counter>::default();
    let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
    let objects = Family::<ReadyLabels, Gauge>::default();
    registry.register(
        "remote_calls",
        "Remote calls by service, operation and HTTP status (0: no response)",
        calls.clone(),
    );
    registry.register("reconciles", "Reconciles by result (ok, error)", reconciles.clone());
    registry.register("reconcile_duration_seconds", "Time spent in one reconcile", duration.clone());
    registry.register("objects", "AzureRootKey objects by Ready condition status", objects.clone());
    let conditions = Family::<ConditionLabels, Gauge>::default();
    registry.register(
        "object_condition",
        "1 for each condition of each AzureRootKey, with its current status (True, False, Unknown)",
        conditions.clone(),
    );
    let pairing_healthy = Family::<ObjectLabels, Gauge>::default();
    registry.register(
        "object_pairing_healthy",
        "1 when the AzureRootKey's last pairing check was Healthy, 0 otherwise (absent before the first check)",
        pairing_healthy.clone(),
    );
    let last_pairing_success = Family::<ObjectLabels, Gauge>::default();
    registry.register(
        "object_last_pairing_success_timestamp_seconds",
        "When the AzureRootKey's pairing check last reported Healthy, in Unix seconds (absent before the first healthy check)",
        last_pairing_success.clone(),
    );
    let key_expiry = Family::<ObjectLabels, Gauge>::default();
    registry.register(
        "object_key_expiry_timestamp_seconds",
        "When the AzureRootKey's key version expires (its exp attribute), in Unix seconds (absent when the key has no exp)",
        key_expiry.clone(),
    );
    let leader = Gauge::default();
    registry.register("leader", "1 while this replica leads (or runs without leader election)", leader.clone());
    let build = Family::<VersionLabels, Gauge>::default();
    build.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
    registry.register("build_info", "1, labelled with the operator's version", build);
    Metrics {
        registry,
        calls,
        reconciles,
        duration,
        objects,
        conditions,
        pairing_healthy,
        last_pairing_success,
        key_expiry,
        leader,
    }
});

/// Counts one remote call sent at `sent` (and traces it, for profiling a reconcile). `code` 0 means
/// no HTTP response arrived.
pub fn record_call(service: Service, operation: &'static str, code: u16, sent: std::time::Instant) {
    let service = service.as_str();
    tracing::debug!(service, operation, code, ms = sent.elapsed().as_secs_f64() * 1e3, "remote call");
    METRICS.calls.get_or_create(&CallLabels { service, operation, code }).inc();
}

/// Counts one reconcile and its duration.
pub fn record_reconcile(ok: bool, seconds: f64) {
    METRICS.reconciles.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" } }).inc();
    METRICS.duration.observe(seconds);
}

/// Objects per Ready state (`True`, `False`, `Unknown`) as counted by each watched namespace's
/// controller (`None`: all namespaces); the gauge shows their sum.
static OBJECTS_BY_SCOPE: LazyLock<Mutex<HashMap<Option<String>, [i64; 3]>>> = LazyLock::new(Mutex::default);

/// Records how many objects one controller's cache holds in each Ready state.
pub fn set_objects(scope: Option<&str>, counts: [i64; 3]) {
    let mut by_scope = lock(&OBJECTS_BY_SCOPE);
    by_scope.insert(scope.map(str::to_owned), counts);
    let total = by_scope.values().fold([0; 3], |[t, f, u], [t2, f2, u2]| [t + t2, f + f2, u + u2]);
    for (ready, n) in ["True", "False", "Unknown"].into_iter().zip(total) {
        METRICS.objects.get_or_create(&ReadyLabels { ready }).set(n);
    }
}

/// One watched object's per-object series, as the housekeeping pass read them from the cache.
pub struct ObjectSeries {
    pub object: ObjectLabels,
    pub conditions: Vec<(String, &'static str)>,
    pub pairing_healthy: Option<bool>,
    /// Unix seconds of the last healthy pairing check.
    pub last_pairing_success: Option<i64>,
    /// Unix seconds at which the key version expires.
    pub key_expiry: Option<i64>,
}

/// The per-object series last set for each controller's scope, so that a deleted object's go.
static SERIES_BY_SCOPE: LazyLock<Mutex<HashMap<Option<String>, Vec<ObjectSeries>>>> = LazyLock::new(Mutex::default);

/// Replaces one controller's per-object series with `objects`.
pub fn set_object_series(scope: Option<&str>, objects: Vec<ObjectSeries>) {
    let mut by_scope = lock(&SERIES_BY_SCOPE);
    for old in by_scope.remove(&scope.map(str::to_owned)).unwrap_or_default() {
        for (type_, status) in old.conditions {
            let labels = ConditionLabels {
                namespace: old.object.namespace.clone(),
                name: old.object.name.clone(),
                condition: type_,
                status,
            };
            METRICS.conditions.remove(&labels);
        }
        for family in [&METRICS.pairing_healthy, &METRICS.last_pairing_success, &METRICS.key_expiry] {
            family.remove(&old.object);
        }
    }
    for series in &objects {
        let o = &series.object;
        for (type_, status) in &series.conditions {
            let labels = ConditionLabels {
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                condition: type_.clone(),
                status,
            };
            METRICS.conditions.get_or_create(&labels).set(1);
        }
        let values = [
            (&METRICS.pairing_healthy, series.pairing_healthy.map(i64::from)),
            (&METRICS.last_pairing_success, series.last_pairing_success),
            (&METRICS.key_expiry, series.key_expiry),
        ];
        for (family, value) in values {
            if let Some(value) = value {
                family.get_or_create(o).set(value);
            }
        }
    }
    by_scope.insert(scope.map(str::to_owned), objects);
}

/// Whether this replica reconciles now.
pub fn set_leader(leading: bool) {
    METRICS.leader.set(i64::from(leading));
}

/// The metrics in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &METRICS.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deleted object's series go at the next pass; a changed status replaces its series.
    #[test]
    fn per_object_series_follow_the_objects() {
        let object = |name: &str, ready: &'static str| ObjectSeries {
            object: ObjectLabels { namespace: "team-x".into(), name: name.into() },
            conditions: vec![("Ready".into(), ready)],
            pairing_healthy: Some(ready == "True"),
            last_pairing_success: (ready == "True").then_some(1_795_000_000),
            key_expiry: (name == "a").then_some(1_800_000_000),
        };
        set_object_series(Some("team-x"), vec![object("a", "True"), object("b", "False")]);
        let text = render();
        assert!(
            text.contains(
                r#"rootkey_operator_object_condition{namespace="team-x",name="b",condition="Ready",status="False"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"rootkey_operator_object_pairing_healthy{namespace="team-x",name="a"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"rootkey_operator_object_last_pairing_success_timestamp_seconds{namespace="team-x",name="a"} 1795000000"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rootkey_operator_object_key_expiry_timestamp_seconds{namespace="team-x",name="a"} 1800000000"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"key_expiry_timestamp_seconds{namespace="team-x",name="b"}"#),
            "b has no exp:\n{text}"
        );
        set_object_series(Some("team-x"), vec![object("b", "True")]);
        let text = render();
        assert!(!text.contains(r#"name="a""#), "a was deleted, every one of its series with it:\n{text}");
        assert!(!text.contains(r#"name="b",condition="Ready",status="False""#), "b's old status is gone:\n{text}");
        assert!(text.contains(r#"name="b",condition="Ready",status="True"} 1"#));
        assert!(text.contains(r#"rootkey_operator_build_info{version=""#));
    }

    /// With several watched namespaces, each controller reports its own cache: the gauge is their
    /// sum, not whichever reported last.
    #[test]
    fn objects_from_every_watched_namespace_add_up() {
        set_objects(Some("team-a"), [2, 1, 0]);
        set_objects(Some("team-b"), [3, 0, 1]);
        set_objects(Some("team-a"), [2, 0, 0]);
        let text = render();
        for line in [
            "rootkey_operator_objects{ready=\"True\"} 5",
            "rootkey_operator_objects{ready=\"False\"} 0",
            "rootkey_operator_objects{ready=\"Unknown\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
