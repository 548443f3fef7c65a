//! Prometheus metrics. Every label comes from a bounded set: services, fixed operation names, HTTP
//! status codes, reconcile results, condition types and statuses, and — for the per-object series —
//! the namespace and name of objects the operator watches, whose series go when the object goes.
//! Never URLs, key names or messages.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, LazyLock, Mutex},
};

use kube::runtime::reflector::Store;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{MetricType, counter::Counter, family::Family, gauge::ConstGauge, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    api::{AzureRootKey, AzureRootKeyStatus, ConditionStatus, PairingState},
    controller::conditions::READY,
    locks::lock,
};

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
struct VersionLabels {
    version: &'static str,
}

struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("rootkey_operator");
    let calls = Family::<CallLabels, Counter>::default();
    let reconciles = Family::<ResultLabels, Counter>::default();
    let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
    registry.register(
        "remote_calls",
        "Remote calls by service, operation and HTTP status (0: no response)",
        calls.clone(),
    );
    registry.register("reconciles", "Reconciles by result (ok, error)", reconciles.clone());
    registry.register("reconcile_duration_seconds", "Time spent in one reconcile", duration.clone());
    registry.register_collector(Box::new(WATCHED.clone()));
    let leader = Gauge::default();
    registry.register("leader", "1 while this replica leads (or runs without leader election)", leader.clone());
    let build = Family::<VersionLabels, Gauge>::default();
    build.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
    registry.register("build_info", "1, labelled with the operator's version", build);
    Metrics { registry, calls, reconciles, duration, leader }
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

/// The per-object series and the `objects` gauge, read from each watched namespace's cache at
/// scrape time: nothing per object is kept between scrapes. (Kept as gauge families, they cost about
/// 3 KiB per object: eight condition series with owned labels, the families' maps and a copy of the
/// last pass to remove deleted objects' series by.)
#[derive(Debug, Default)]
struct ObjectsCollector {
    caches: Mutex<HashMap<Option<String>, Store<AzureRootKey>>>,
}

/// The caches the scrape reads: one per controller (`None`: all namespaces).
static WATCHED: LazyLock<Arc<ObjectsCollector>> = LazyLock::new(Arc::default);

/// The scrape reads `cache` for the objects of `scope` (one controller's namespace, `None`: all).
pub fn watch_objects(scope: Option<&str>, cache: Store<AzureRootKey>) {
    WATCHED.watch(scope, cache);
}

/// The controller of `scope` stopped (it lost the lead, or the operator stops): its objects' series go.
pub fn unwatch_objects(scope: Option<&str>) {
    WATCHED.unwatch(scope);
}

impl ObjectsCollector {
    fn watch(&self, scope: Option<&str>, cache: Store<AzureRootKey>) {
        lock(&self.caches).insert(scope.map(str::to_owned), cache);
    }

    fn unwatch(&self, scope: Option<&str>) {
        lock(&self.caches).remove(&scope.map(str::to_owned));
    }
}

fn names(ark: &AzureRootKey) -> (&str, &str) {
    (ark.metadata.namespace.as_deref().unwrap_or_default(), ark.metadata.name.as_deref().unwrap_or_default())
}

fn status_name(s: ConditionStatus) -> &'static str {
    match s {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        ConditionStatus::Unknown => "Unknown",
    }
}

/// One per-object gauge family: its name, help, and the object's value if it has one.
type ObjectGauge = (&'static str, &'static str, fn(&AzureRootKeyStatus) -> Option<i64>);

const OBJECT_GAUGES: [ObjectGauge; 3] = [
    (
        "object_pairing_healthy",
        "1 when the AzureRootKey's last pairing check was Healthy, 0 otherwise (absent before the first check)",
        |s| s.pairing.as_ref().map(|p| i64::from(p.status == PairingState::Healthy)),
    ),
    (
        "object_last_pairing_success_timestamp_seconds",
        "When the AzureRootKey's pairing check last reported Healthy, in Unix seconds (absent before the first healthy check)",
        |s| s.pairing.as_ref().and_then(|p| p.last_healthy_time.as_ref()).map(|t| t.0.as_second()),
    ),
    (
        "object_key_expiry_timestamp_seconds",
        "When the AzureRootKey's key version expires (its exp attribute), in Unix seconds (absent when the key has no exp)",
        |s| s.key_expiry_time.as_ref().map(|t| t.0.as_second()),
    ),
];

impl Collector for ObjectsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let objects: Vec<_> = lock(&self.caches).values().flat_map(Store::state).collect();
        let ready_counts = objects.iter().fold([0_i64; 3], |mut counts, ark| {
            let ready = ark.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
            counts[match ready.map(|c| c.status) {
                Some(ConditionStatus::True) => 0,
                Some(ConditionStatus::False) => 1,
                _ => 2,
            }] += 1;
            counts
        });
        let mut family = encoder.encode_descriptor(
            "objects",
            "AzureRootKey objects by Ready condition status",
            None,
            MetricType::Gauge,
        )?;
        for (ready, n) in ["True", "False", "Unknown"].into_iter().zip(ready_counts) {
            ConstGauge::new(n).encode(family.encode_family(&[("ready", ready)])?)?;
        }
        let with_status = || objects.iter().filter_map(|ark| Some((ark, ark.status.as_ref()?)));
        let mut family = encoder.encode_descriptor(
            "object_condition",
            "1 for each condition of each AzureRootKey, with its current status (True, False, Unknown)",
            None,
            MetricType::Gauge,
        )?;
        for (ark, status) in with_status() {
            let (namespace, name) = names(ark);
            for c in &status.conditions {
                let labels = [
                    ("namespace", namespace),
                    ("name", name),
                    ("condition", &c.type_),
                    ("status", status_name(c.status)),
                ];
                ConstGauge::new(1_i64).encode(family.encode_family(&labels)?)?;
            }
        }
        for (metric, help, value) in OBJECT_GAUGES {
            let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for (ark, status) in with_status() {
                if let Some(v) = value(status) {
                    let (namespace, name) = names(ark);
                    ConstGauge::new(v).encode(family.encode_family(&[("namespace", namespace), ("name", name)])?)?;
                }
            }
        }
        Ok(())
    }
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
    use kube::runtime::{reflector, watcher::Event};
    use serde_json::json;

    use super::*;

    /// What a scrape of only `collector` prints (the process-wide one is shared by every test).
    fn scrape(collector: &Arc<ObjectsCollector>) -> String {
        let mut registry = Registry::with_prefix("rootkey_operator");
        registry.register_collector(Box::new(collector.clone()));
        let mut out = String::new();
        encode(&mut out, &registry).expect("encode");
        out
    }

    fn object(namespace: &str, name: &str, ready: &str, expiry: Option<&str>) -> AzureRootKey {
        let healthy = ready == "True";
        let mut ark = crate::api::sample(namespace, name);
        ark.status = Some(
            serde_json::from_value(json!({
                "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": "2026-11-01T00:00:00Z",
                                "reason": "R", "message": ""}],
                "pairing": {"status": if healthy { "Healthy" } else { "Misconfigured" },
                            "lastHealthyTime": if healthy { Some("2026-11-18T08:26:40Z") } else { None }},
                "keyExpiryTime": expiry,
            }))
            .expect("status"),
        );
        ark
    }

    /// The series are the caches' objects at the scrape: a deleted object's series go with it, a
    /// changed status replaces its series, and a stopped controller's objects leave the scrape.
    #[test]
    fn per_object_series_follow_the_cache() {
        let (cache, mut writer) = reflector::store();
        let (a, b) =
            (object("team-x", "a", "True", Some("2027-01-15T08:00:00Z")), object("team-x", "b", "False", None));
        for o in [&a, &b] {
            writer.apply_watcher_event(&Event::Apply(o.clone()));
        }
        let collector = Arc::new(ObjectsCollector::default());
        collector.watch(Some("team-x"), cache);
        let text = scrape(&collector);
        for line in [
            r#"rootkey_operator_object_condition{namespace="team-x",name="b",condition="Ready",status="False"} 1"#,
            r#"rootkey_operator_object_pairing_healthy{namespace="team-x",name="a"} 1"#,
            r#"rootkey_operator_object_pairing_healthy{namespace="team-x",name="b"} 0"#,
            r#"rootkey_operator_object_last_pairing_success_timestamp_seconds{namespace="team-x",name="a"} 1794990400"#,
            r#"rootkey_operator_object_key_expiry_timestamp_seconds{namespace="team-x",name="a"} 1800000000"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !text.contains(r#"key_expiry_timestamp_seconds{namespace="team-x",name="b"}"#),
            "b has no exp:\n{text}"
        );

        writer.apply_watcher_event(&Event::Delete(a));
        writer.apply_watcher_event(&Event::Apply(object("team-x", "b", "True", None)));
        let text = scrape(&collector);
        assert!(!text.contains(r#"name="a""#), "a was deleted, every one of its series with it:\n{text}");
        assert!(!text.contains(r#"name="b",condition="Ready",status="False""#), "b's old status is gone:\n{text}");
        assert!(text.contains(r#"name="b",condition="Ready",status="True"} 1"#), "{text}");

        collector.unwatch(Some("team-x"));
        assert!(
            !scrape(&collector).contains(r#"namespace="team-x""#),
            "the stopped controller's objects are not reported"
        );
    }

    /// With several watched namespaces, each controller's cache counts: the gauge is their sum.
    #[test]
    fn objects_from_every_watched_namespace_add_up() {
        let collector = Arc::new(ObjectsCollector::default());
        for (ns, objects) in [
            ("team-a", vec![("a1", "True"), ("a2", "True")]),
            ("team-b", vec![("b1", "False"), ("b2", "Unknown"), ("b3", "True")]),
        ] {
            let (cache, mut writer) = reflector::store();
            for (name, ready) in objects {
                writer.apply_watcher_event(&Event::Apply(object(ns, name, ready, None)));
            }
            collector.watch(Some(ns), cache);
        }
        let text = scrape(&collector);
        for line in [
            "rootkey_operator_objects{ready=\"True\"} 3",
            "rootkey_operator_objects{ready=\"False\"} 1",
            "rootkey_operator_objects{ready=\"Unknown\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
