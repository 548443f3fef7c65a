//! Invariants and measurements shared by the reliability (`make test`) and soak (`make soak`)
//! suites: duplicates, lost data, Retry-After compliance, per-HSM rates, retries and leaked secrets.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Event;
use kube::{Api, api::ListParams};
use rootkey_sandbox::{FaultAction, FaultSpec, RequestRecord};
use serde_json::{Value, json};

use rootkey_operator::api::ConditionStatus;

use super::env::{DOMAIN, Env, HSM, SECRETS, TENANT, condition};

pub const CRYPTO_USER: &str = "21dbd100-6940-42c2-9190-5d6cb909625b";
pub const FOREIGN_TAGS: [(&str, &str); 2] = [("owner", "platform"), ("cost-center", "4711")];

/// One object under test: its name and the HSM key it points at.
#[derive(Clone, Debug)]
pub struct Obj {
    pub name: String,
    pub key: String,
    /// The key existed before with foreign tags.
    pub preexisting: bool,
}

/// Creates `n` objects (every other one on a pre-existing key carrying foreign tags) and an API-key
/// Secret; returns them.
pub async fn populate(env: &Env, n: usize) -> Vec<Obj> {
    env.api_key_secret("api-key", super::env::API_KEY).await;
    let mut objs = Vec::new();
    for i in 0..n {
        let preexisting = i % 2 == 0;
        let key = format!("rk-{i}");
        if preexisting {
            let spec: rootkey_sandbox::world::KeySpec = serde_json::from_value(json!({
                "name": key, "kty": "oct-HSM", "key_size": 256,
                "tags": FOREIGN_TAGS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            }))
            .expect("key spec");
            env.sandbox.create_key(HSM, spec).expect("pre-create key");
        }
        objs.push(Obj { name: format!("obj-{i}"), key, preexisting });
    }
    objs
}

pub async fn apply_all(env: &Env, objs: &[Obj]) {
    for o in objs {
        env.apply(&o.name, env.spec(&o.key, json!({"deletionPolicy": "Revoke"}))).await;
    }
}

/// Waits until every object is Ready=True; returns the time it took, or the names still not Ready.
pub async fn wait_all_ready(env: &Env, objs: &[Obj], timeout: Duration) -> Result<Duration, Vec<String>> {
    let start = Instant::now();
    loop {
        let list = env.api.list(&ListParams::default()).await.expect("list");
        let ready: std::collections::HashSet<String> = list
            .items
            .iter()
            .filter(|o| condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True))
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        let missing: Vec<String> = objs.iter().filter(|o| !ready.contains(&o.name)).map(|o| o.name.clone()).collect();
        if missing.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            let details: Vec<String> = list
                .items
                .iter()
                .filter(|o| o.metadata.name.as_ref().is_some_and(|n| missing.contains(n)))
                .take(5)
                .map(|o| {
                    let c = condition(o, "Ready");
                    format!(
                        "{}: {:?} {:?}",
                        o.metadata.name.as_deref().unwrap_or(""),
                        c.map(|c| &c.reason),
                        c.map(|c| &c.message)
                    )
                })
                .collect();
            eprintln!("not Ready after {timeout:?}: {details:#?}");
            return Err(missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the invariants found.
#[derive(Debug, Default, Clone)]
pub struct Invariants {
    /// Duplicate role assignments, registrations or service principals.
    pub duplicates: usize,
    /// Foreign tags or our own tag missing, missing assignment or registration for a Ready object.
    pub lost: usize,
    pub details: Vec<String>,
}

/// Checks every live object: exactly one Crypto User assignment at its key scope, exactly one
/// registration of its key URL, our tag and every foreign tag on the registered version, one
/// Antimatter service principal.
pub fn invariants(env: &Env, objs: &[Obj]) -> Invariants {
    let mut inv = Invariants::default();
    let assignments = env.sandbox.role_assignments(HSM);
    let regs: Vec<_> = env.sandbox.registrations(DOMAIN).into_iter().filter(|r| r.source == "azure_am").collect();
    for o in objs {
        let scope = format!("/keys/{}", o.key);
        let n = assignments.iter().filter(|a| a.scope == scope && a.role_definition.ends_with(CRYPTO_USER)).count();
        if n > 1 {
            inv.duplicates += n - 1;
            inv.details.push(format!("{}: {n} role assignments", o.key));
        } else if n == 0 {
            inv.lost += 1;
            inv.details.push(format!("{}: no role assignment", o.key));
        }
        let Some(key) = env.sandbox.key(HSM, &o.key) else {
            inv.lost += 1;
            inv.details.push(format!("{}: key missing", o.key));
            continue;
        };
        let prefix = format!("{}/keys/{}/", env.hsm_url(), o.key);
        let mine: Vec<_> = regs.iter().filter(|r| r.resource_path.starts_with(&prefix)).collect();
        if mine.len() > 1 {
            inv.duplicates += mine.len() - 1;
            inv.details.push(format!("{}: {} registrations", o.key, mine.len()));
        } else if mine.is_empty() {
            inv.lost += 1;
            inv.details.push(format!("{}: not registered", o.key));
        }
        let tags = key.latest().map(|v| v.tags.clone()).unwrap_or_default();
        if tags.get(DOMAIN).map(String::as_str) != Some("allow") {
            inv.lost += 1;
            inv.details.push(format!("{}: domain tag missing: {tags:?}", o.key));
        }
        if o.preexisting {
            for (k, v) in FOREIGN_TAGS {
                if tags.get(k).map(String::as_str) != Some(v) {
                    inv.lost += 1;
                    inv.details.push(format!("{}: foreign tag {k} lost: {tags:?}", o.key));
                }
            }
        }
    }
    let sps =
        env.sandbox.service_principals(TENANT).into_iter().filter(|s| s.app_id == super::env::ANTIMATTER_APP).count();
    if sps > 1 {
        inv.duplicates += sps - 1;
        inv.details.push(format!("{sps} Antimatter service principals"));
    }
    inv
}

/// Checks deleted (Revoke) objects left nothing behind: no assignment at their scope, no domain tag,
/// no registration. Returns the orphans found.
pub fn orphans(env: &Env, gone: &[Obj]) -> Vec<String> {
    let assignments = env.sandbox.role_assignments(HSM);
    let regs = env.sandbox.registrations(DOMAIN);
    let mut out = Vec::new();
    for o in gone {
        let scope = format!("/keys/{}", o.key);
        if assignments.iter().any(|a| a.scope == scope && a.role_definition.ends_with(CRYPTO_USER)) {
            out.push(format!("{}: role assignment left", o.key));
        }
        let prefix = format!("{}/keys/{}/", env.hsm_url(), o.key);
        if regs.iter().any(|r| r.resource_path.starts_with(&prefix)) {
            out.push(format!("{}: registration left", o.key));
        }
        if let Some(k) = env.sandbox.key(HSM, &o.key) {
            let tags = k.latest().map(|v| v.tags.clone()).unwrap_or_default();
            if tags.contains_key(DOMAIN) {
                out.push(format!("{}: domain tag left", o.key));
            }
            if o.preexisting && FOREIGN_TAGS.iter().any(|(k, v)| tags.get(*k).map(String::as_str) != Some(*v)) {
                out.push(format!("{}: foreign tag lost on revoke: {tags:?}", o.key));
            }
        } else {
            out.push(format!("{}: key deleted (the operator must never delete keys)", o.key));
        }
    }
    out
}

/// A route that belongs to one object, so that a 429 on it must hold back that object's next call.
fn object_route(r: &RequestRecord) -> Option<String> {
    if r.internal {
        return None;
    }
    let per_object = match r.service.as_str() {
        "hsm" => r.operation.starts_with("key.") || r.operation.starts_with("rbac.assignment."),
        "antimatter" => matches!(r.operation.as_str(), "rek.test" | "rek.get" | "rek.delete"),
        _ => false,
    };
    if !per_object {
        return None;
    }
    if r.operation.starts_with("rbac.assignment.") && r.operation != "rbac.assignment.list" {
        return Some(format!("{} {}", r.service, r.path));
    }
    if r.service == "hsm" && r.operation.starts_with("key.") {
        // /keys/<name>[/<version>[/op]]: the object is the key name.
        let mut seg = r.path.trim_start_matches('/').split('/');
        if seg.next() == Some("keys") {
            return seg.next().map(|name| format!("hsm key {name}"));
        }
        return None;
    }
    Some(format!("{} {}", r.service, r.path))
}

/// Requests on an object's route that came sooner after a 429 than its Retry-After allowed
/// (100 ms tolerance). Returns (429s with Retry-After checked, violations).
pub fn retry_after_violations(log: &[RequestRecord]) -> (usize, Vec<String>) {
    let mut hold: HashMap<String, (u64, u64)> = HashMap::new(); // route -> (429 at, allowed from)
    let mut checked = 0;
    let mut violations = Vec::new();
    for r in log {
        let Some(route) = object_route(r) else { continue };
        if let Some((at, from)) = hold.get(&route)
            && r.at_ms + 100 < *from
        {
            violations.push(format!(
                "{route} ({}) {} ms after a 429 that asked for {} ms",
                r.operation,
                r.at_ms - at,
                from - at
            ));
        }
        if r.status == 429
            && let Some(ra) = r.retry_after
        {
            checked += 1;
            hold.insert(route, (r.at_ms, r.at_ms + ra * 1000));
        } else if let Some((_, from)) = hold.get(&route)
            && r.at_ms >= *from
        {
            hold.remove(&route);
        }
    }
    (checked, violations)
}

/// Highest number of operator requests in any 1-second window per HSM rate class
/// (`create`, `rbac`, `read`), over the given log.
pub fn peak_rates(log: &[RequestRecord]) -> BTreeMap<&'static str, usize> {
    let class = |op: &str| match op {
        "key.create" | "key.delete" | "key.recover" | "deletedkey.purge" => "create",
        o if o.starts_with("rbac.") => "rbac",
        "key.wrap" | "key.unwrap" | "key.encrypt" | "key.decrypt" => "crypto",
        _ => "read",
    };
    let mut by: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for r in log.iter().filter(|r| r.service == "hsm" && !r.internal) {
        by.entry(class(&r.operation)).or_default().push(r.at_ms);
    }
    by.into_iter()
        .map(|(c, ts)| {
            let mut peak = 0;
            let mut lo = 0;
            for hi in 0..ts.len() {
                while ts[hi] - ts[lo] >= 1000 {
                    lo += 1;
                }
                peak = peak.max(hi - lo + 1);
            }
            (c, peak)
        })
        .collect()
}

/// Sums `rootkey_operator_remote_calls` from a metrics text: (all calls, calls without a 2xx/404).
pub fn remote_calls(metrics: &str) -> (u64, u64) {
    let mut total = 0;
    let mut failed = 0;
    for line in metrics.lines().filter(|l| l.starts_with("rootkey_operator_remote_calls")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let v: f64 = value.parse().unwrap_or(0.0);
        let code = labels.split("code=\"").nth(1).and_then(|c| c.split('"').next()).unwrap_or("0");
        total += v as u64;
        if !(code.starts_with('2') || code == "404") {
            failed += v as u64;
        }
    }
    (total, failed)
}

/// Everything the operator emitted that a user or scraper could see: its logs, Events in the
/// namespace, the objects (statuses), and the given metrics texts.
pub async fn emitted(env: &Env, metrics: &[String]) -> String {
    let mut all = env.logs();
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    for e in events.list(&ListParams::default()).await.expect("events").items {
        all.push_str(&serde_json::to_string(&e).unwrap_or_default());
    }
    all.push_str(
        &serde_json::to_string(&env.api.list(&ListParams::default()).await.expect("list").items).unwrap_or_default(),
    );
    for m in metrics {
        all.push_str(m);
    }
    all
}

/// Secret values (the standard ones plus `extra`) found in what the operator emitted.
pub async fn leaked_secrets(env: &Env, metrics: &[String], extra: &[&str]) -> Vec<String> {
    let text = emitted(env, metrics).await;
    SECRETS.iter().chain(extra).filter(|s| !s.is_empty() && text.contains(*s)).map(|s| s.to_string()).collect()
}

/// Requests to hosts the sandbox does not serve, or carrying credentials where they do not belong.
pub fn foreign_credential_requests(log: &[RequestRecord], foreign_hosts: &[&str]) -> Vec<String> {
    log.iter()
        .filter(|r| foreign_hosts.contains(&r.host.as_str()) || r.service == "unknown")
        .filter(|r| r.authorization || r.credential)
        .map(|r| format!("{} {} auth={} cred={}", r.host, r.path, r.authorization, r.credential))
        .collect()
}

/// A fault on `service` (and `operation`, if given) for `count` requests (all, if not given).
pub fn fault(service: &str, operation: Option<&str>, action: FaultAction, count: Option<u64>) -> FaultSpec {
    FaultSpec {
        service: service.into(),
        operation: operation.map(Into::into),
        hsm: None,
        action,
        count,
        probability: None,
    }
}

/// A fault on every service with the given probability.
pub fn storm(probability: f64) -> Vec<FaultSpec> {
    let actions = [
        ("hsm", FaultAction::Status { status: 429, retry_after: Some(2) }),
        ("hsm", FaultAction::Status { status: 503, retry_after: Some(1) }),
        ("hsm", FaultAction::Drop),
        ("hsm", FaultAction::Latency { ms: 300 }),
        ("entra", FaultAction::Status { status: 429, retry_after: Some(2) }),
        ("entra", FaultAction::Status { status: 500, retry_after: None }),
        ("graph", FaultAction::Status { status: 429, retry_after: Some(2) }),
        ("graph", FaultAction::Status { status: 503, retry_after: Some(1) }),
        ("antimatter", FaultAction::Status { status: 429, retry_after: Some(2) }),
        ("antimatter", FaultAction::Status { status: 502, retry_after: None }),
        ("antimatter", FaultAction::Drop),
        ("antimatter", FaultAction::Latency { ms: 300 }),
    ];
    // Split the probability among the faults of each service so that ~`probability` of its calls fail.
    let mut per_service: HashMap<&str, usize> = HashMap::new();
    for (s, _) in &actions {
        *per_service.entry(s).or_default() += 1;
    }
    let mut out = Vec::new();
    let mut used: HashMap<&str, usize> = HashMap::new();
    for (s, action) in actions {
        let n = per_service[s];
        let i = used.entry(s).or_default();
        // Sequential first-match: fault k sees what faults before it let through.
        let p = probability / n as f64 / (1.0 - probability * (*i as f64) / n as f64);
        *i += 1;
        out.push(FaultSpec {
            service: s.into(),
            operation: None,
            hsm: None,
            action,
            count: None,
            probability: Some(p),
        });
    }
    out
}

/// Statistics over the request log for a report.
pub fn injected(log: &[RequestRecord]) -> (usize, usize) {
    let total = log.iter().filter(|r| !r.internal).count();
    let failed = log.iter().filter(|r| !r.internal && (r.status == 0 || r.status == 429 || r.status >= 500)).count();
    (total, failed)
}

/// One line of the soak report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub scenario: String,
    pub objects: usize,
    pub faults: String,
    pub converge: String,
    pub retries: String,
    pub duplicates: usize,
    pub lost: usize,
    pub leaked: usize,
    pub notes: String,
}

pub fn rows_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("soak-rows")
}

pub fn record_row(row: &Row) {
    let dir = rows_dir();
    std::fs::create_dir_all(&dir).expect("rows dir");
    let file = dir.join(format!("{}.json", row.scenario.replace(' ', "_")));
    std::fs::write(file, serde_json::to_string(row).expect("row")).expect("write row");
    eprintln!("SOAK {row:?}");
}

pub fn value_str(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// The peak resident memory (`VmHWM`) of a process, in KiB (0 when it cannot be read).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
