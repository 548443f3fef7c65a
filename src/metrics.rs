//! Prometheus metrics. Every label comes from a bounded set: services, fixed operation names, HTTP
//! status codes, reconcile results and Ready states — never object names or URLs.

use std::sync::LazyLock;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::remote::Service;

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

/// Sets how many objects are in each Ready state (`True`, `False`, `Unknown`).
pub fn set_objects(ready_true: i64, ready_false: i64, unknown: i64) {
    METRICS.objects.get_or_create(&ReadyLabels { ready: "True" }).set(ready_true);
    METRICS.objects.get_or_create(&ReadyLabels { ready: "False" }).set(ready_false);
    METRICS.objects.get_or_create(&ReadyLabels { ready: "Unknown" }).set(unknown);
}

/// The metrics in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &METRICS.registry);
    out
}
