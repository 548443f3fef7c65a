//! Prometheus metrics. Every label comes from a bounded set: services, fixed operation names, HTTP
//! status codes, reconcile results and Ready states — never object names or URLs.

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

struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    objects: Family<ReadyLabels, Gauge>,
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
    Metrics { registry, calls, reconciles, duration, objects }
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
